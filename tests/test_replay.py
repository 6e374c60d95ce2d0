"""The replay graph (csrc/tape.c, microgpt/replay.py): a step recorded once per document length,
then replayed in C for other documents of that length, with the cached backward order rewritten
for their targets. It must give the bits of building every step afresh, and refuse what it
cannot replay."""
import random

import pytest

from conftest import require
from microgpt.training import step_loss

CONFIG = dict(vocab_size=7, n_embd=8, n_head=2, block_size=6, n_layer=2)
# lengths repeat with other tokens, so later steps are replays whose embeddings and targets differ
DOCS = [[6, 1, 2, 3, 6], [6, 4, 0, 5, 6], [6, 2, 2, 2, 6], [6, 5, 6], [6, 0, 6],
        [6, 4, 0, 5, 2, 1, 3, 6], [6, 3, 1, 0, 4, 5, 2, 6], [6, 1, 2, 3, 6], [6, 6]]


@pytest.fixture(autouse=True)
def c_backend():
    require("c")


def train(graph, docs=DOCS, steps=3):
    """Losses and parameters after each step, over `steps` passes through docs."""
    from microgpt.model import Config, GPT
    from microgpt.training import train_step
    random.seed(5)
    model = GPT(Config(**CONFIG), graph)
    history = []
    schedule = docs * steps
    for step, tokens in enumerate(schedule):
        value = train_step(model, tokens, step, len(schedule))
        history.append((value, model.graph.param_data()))
    return history, model


def test_replay_is_bit_identical_to_building_each_step():
    from microgpt.modes import new_graph
    fused, _ = train(new_graph("c", "fused"))
    replayed, model = train(new_graph("c", "replay"))
    for step, (a, b) in enumerate(zip(fused, replayed)):
        assert a == b, f"step {step} differs"
    # and it did replay: one program per document length (cut to block_size), nothing else
    assert sorted(model.graph.tape.programs) == sorted({min(len(d) - 1, CONFIG["block_size"]) for d in DOCS})


def test_a_replayed_step_is_a_handful_of_c_calls():
    from microgpt.modes import new_graph
    from microgpt.training import train_step
    _, model = train(new_graph("c", "replay"), steps=1)
    g = model.graph
    before = g.c_calls()
    train_step(model, DOCS[1], 0, 1)  # its length was recorded at DOCS[0]
    assert g.c_calls() - before == 5  # reset, replay, backward, read the loss, adam


def test_replay_without_a_cached_order_still_matches_the_seed():
    """Unfused, the backward order is not one tape.c can rewrite: every backward searches."""
    from microgpt.cgraph import CGraph
    from microgpt.modes import new_graph
    seed, _ = train(new_graph("python", "seed"))
    graph = CGraph("replay")
    graph.layers.fused = 0  # record the seed's graph node for node
    replayed, model = train(graph)
    assert replayed == seed
    assert model.graph.tape.programs  # replayed, but with the search each time


def test_replay_loss_goes_stale_after_reset():
    from microgpt.modes import new_graph
    _, model = train(new_graph("c", "replay"), steps=1)
    g = model.graph
    loss = step_loss(model, DOCS[1])
    g.begin_step()
    with pytest.raises(ValueError, match="stale"):
        g.layers.item(loss)


class Recorder:
    """A replay graph's model and arena, to call the tape API directly."""

    def __init__(self):
        from microgpt.model import Config, GPT
        from microgpt.modes import new_graph
        from microgpt.native import check, lib
        random.seed(1)
        self.model = GPT(Config(**CONFIG), new_graph("c", "replay"))
        self.lib, self.check = lib, check
        self.ptr = self.model.graph.arena.ptr
        self.tape = self.model.graph.tape.ptr

    def loss_on_tape(self, tokens):
        """The model's loss, its kernel calls given the tape (recorded if it is recording)."""
        from microgpt.native import ffi
        layers = self.model.graph.layers
        layers.tape = self.tape
        try:
            return self.model.loss(tokens)
        finally:
            layers.tape = ffi.NULL

    def record(self, tokens, spoil=False):
        lib = self.lib
        self.model.graph.begin_step()
        self.check(lib.mg_tape_begin(self.tape, self.ptr))
        loss = self.loss_on_tape(tokens)
        if spoil:
            lib.mg_leaf(self.ptr, 1.0)
        return lib.mg_tape_end(self.tape, self.ptr, tokens, len(tokens), loss)


def test_a_spoiled_recording_is_not_kept():
    r = Recorder()
    assert r.record([6, 1, 2, 6], spoil=True) == r.lib.MG_ERR_ARG
    assert r.record([6, 1, 2, 6]) == 0


def test_recording_must_start_right_after_a_reset():
    r = Recorder()
    r.model.graph.begin_step()
    r.lib.mg_leaf(r.ptr, 1.0)
    assert r.lib.mg_tape_begin(r.tape, r.ptr) == r.lib.MG_ERR_ARG


def test_recording_that_is_not_a_function_of_the_tokens_is_refused():
    r = Recorder()
    r.model.graph.begin_step()
    r.check(r.lib.mg_tape_begin(r.tape, r.ptr))
    loss = r.loss_on_tape([6, 1, 2, 6])
    assert r.lib.mg_tape_end(r.tape, r.ptr, [6, 1, 3, 6], 4, loss) == r.lib.MG_ERR_ARG  # not the targets used


@pytest.mark.parametrize("tokens,why", [([6, 1, 6], "other length"), ([6, 1, 7, 6], "token past the vocabulary"),
                                        ([6, -1, 2, 6], "negative token")])
def test_bad_replay_is_refused_and_drops_nothing_kept(tokens, why):
    r = Recorder()
    program = r.record([6, 1, 2, 6])
    kept = r.lib.mg_arena_kept(r.ptr)
    r.model.graph.begin_step()
    with pytest.raises(ValueError):
        r.check(r.lib.mg_tape_replay(r.tape, r.ptr, program, tokens, len(tokens)))
    assert r.lib.mg_arena_nodes(r.ptr) == kept, why
    r.model.graph.begin_step()
    assert r.lib.mg_tape_replay(r.tape, r.ptr, program, [6, 3, 0, 6], 4) >= 0  # the program still works


def test_replay_refuses_a_changed_arena():
    r = Recorder()
    program = r.record([6, 1, 2, 6])
    r.model.graph.begin_step()
    r.lib.mg_leaf(r.ptr, 1.0)  # not right after a reset
    assert r.lib.mg_tape_replay(r.tape, r.ptr, program, [6, 1, 2, 6], 4) == r.lib.MG_ERR_ARG
    # more persistent nodes than the program was recorded on cannot happen: keep() is refused
    # after the first reset (an old step's handles could otherwise name the kept nodes)
    assert r.lib.mg_arena_keep(r.ptr) == r.lib.MG_ERR_ARG
    assert r.lib.mg_tape_replay(r.tape, r.ptr, 99, [6, 1, 2, 6], 4) == r.lib.MG_ERR_ARG  # no such program
