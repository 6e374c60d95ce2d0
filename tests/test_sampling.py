"""Sampling (microgpt/sampling.py): on the dense graph, names come from a compiled plan's forward
one position at a time (csrc/dense.c, mg_dense_sample), going on on the graph past the plan's
positions. The names and the random draws must be those of the graph (replay) and of the python
backend, and a misused sampler must be refused."""
import random

import pytest

from conftest import require
from microgpt.sampling import sample
from microgpt.training import step_loss, train_step


@pytest.fixture(autouse=True)
def c_backend():
    require("c")


def trained(backend, mode, config, docs):
    """A model trained on docs in order (seeded init)."""
    from microgpt.model import GPT, Config
    from microgpt.modes import new_graph
    random.seed(5)
    model = GPT(Config(**config), new_graph(backend, mode))
    for step, tokens in enumerate(docs):
        train_step(model, tokens, step, len(docs))
    return model


def names(model, tokenizer, count, temperature, prefix=""):
    """count samples after random.seed(9), and the next random number (the draws used up)."""
    random.seed(9)
    return [sample(model, tokenizer, temperature, prefix) for _ in range(count)], random.random()


def short_and_long_docs(vocab_size, block_size, rng, longest):
    bos = vocab_size - 1
    return [[bos] + [rng.randrange(bos) for _ in range(rng.randint(1, longest))] + [bos] for _ in range(12)]


@pytest.mark.parametrize("seed", range(4))
def test_dense_samples_are_the_graphs_and_pythons(seed):
    """Plans shorter than the block (documents of at most `longest` letters), so that long names go
    on on the graph; hot and cold temperatures; with and without a prefix."""
    from microgpt.tokenizer import Tokenizer
    rng = random.Random(seed)
    n_head = rng.choice([1, 2])
    block_size = rng.randint(4, 10)
    tokenizer = Tokenizer("abcdefg"[:rng.randint(3, 7)])
    config = dict(vocab_size=tokenizer.vocab_size, n_layer=rng.randint(1, 2), n_head=n_head,
                  n_embd=n_head * rng.randint(2, 4), block_size=block_size)
    docs = short_and_long_docs(tokenizer.vocab_size, block_size, rng, longest=block_size // 2)
    dense = trained("c", "dense", config, docs)
    plan, positions = dense.graph.dense.sampling_plan()
    assert positions < block_size, "the plans must stop short of the block for this test"
    others = [trained("c", "replay", config, docs), trained("python", "fused", config, docs)]
    for temperature, prefix in ((0.5, ""), (2.5, ""), (1.0, tokenizer.chars[0])):
        got = names(dense, tokenizer, 8, temperature, prefix)
        for other in others:
            assert got == names(other, tokenizer, 8, temperature, prefix), (config, temperature, prefix)
    longest = max(len(n) for n in names(dense, tokenizer, 8, 2.5)[0])
    assert longest >= positions, "a hot sample should run past the plan's positions"


@pytest.mark.parametrize("scale", [1.0, 2.0, 0.37])
def test_dense_distributions_are_the_graphs_bit_for_bit(scale):
    """Every probability at every position, the plan's and then the graph's past it, against the
    model's forward on its graph (the draws alone would hide a small difference)."""
    from microgpt.sampling import DenseProbs, GraphProbs
    rng = random.Random(6)
    config = dict(vocab_size=6, n_embd=6, n_head=3, block_size=8, n_layer=2)
    model = trained("c", "dense", config, short_and_long_docs(6, 8, rng, longest=4))
    plan, positions = model.graph.dense.sampling_plan()
    assert positions < 8
    tokens = [5] + [rng.randrange(5) for _ in range(7)]
    dense_probs = DenseProbs(model, scale, plan, positions)
    on_plan = [dense_probs(t, pos) for pos, t in enumerate(tokens)]
    on_graph = GraphProbs(model, scale)
    assert [list(map(repr, p)) for p in on_plan] == \
           [list(map(repr, on_graph(t, pos))) for pos, t in enumerate(tokens)]


def test_the_seed_config_samples_on_a_plan_as_on_replay():
    from microgpt.tokenizer import Tokenizer
    rng = random.Random(3)
    tokenizer = Tokenizer("abcdefghijklmnopqrstuvwxyz")
    docs = [tokenizer.document("".join(rng.choice("aeiklmnorst") for _ in range(rng.randint(2, 9))))
            for _ in range(30)]
    config = dict(vocab_size=tokenizer.vocab_size)
    dense, replay = trained("c", "dense", config, docs), trained("c", "replay", config, docs)
    assert dense.graph.dense.sampling_plan() is not None
    assert names(dense, tokenizer, 20, 0.5) == names(replay, tokenizer, 20, 0.5)


def test_sampling_between_steps_leaves_training_as_it_was():
    """A sample uses the plan's buffers: the steps after it must still be the graph's."""
    from microgpt.tokenizer import Tokenizer
    tokenizer = Tokenizer("abcd")
    docs = short_and_long_docs(tokenizer.vocab_size, 6, random.Random(4), longest=5)
    config = dict(vocab_size=tokenizer.vocab_size, n_embd=4, n_head=2, block_size=6)
    runs = []
    for mode in ("dense", "replay"):
        model = trained("c", mode, config, docs)
        random.seed(1)
        got = [sample(model, tokenizer, 1.0) for _ in range(3)]
        losses = [train_step(model, tokens, step, 2 * len(docs)) for step, tokens in enumerate(docs, len(docs))]
        runs.append((got, losses, model.graph.param_data()))
    assert runs[0] == runs[1]


def test_a_misused_sampler_is_refused():
    from microgpt.model import GPT, Config
    from microgpt.modes import new_graph
    from microgpt.native import check, ffi, lib
    random.seed(2)
    model = GPT(Config(vocab_size=5, n_embd=4, n_head=2, block_size=4, n_layer=1), new_graph("c", "dense"))
    g, doc = model.graph, [4, 1, 2, 4]
    train_step(model, doc, 0, 10)
    dense, arena = g.dense, g.arena.ptr
    plan = dense.plans[3]
    assert lib.mg_dense_positions(dense.ptr, plan) == 3
    probs = ffi.new("double[]", 5)

    def at(pos, token, nprobs=5):
        return lib.mg_dense_sample(dense.ptr, arena, plan, pos, token, 2.0, probs, nprobs)

    assert at(0, 4) == 0 and sum(probs) == pytest.approx(1.0)
    assert at(2, 1) == lib.MG_ERR_ARG            # position 1 has not run
    assert at(1, 5) == lib.MG_ERR_ARG            # no such token
    assert at(1, -1) == lib.MG_ERR_ARG
    assert at(1, 1, nprobs=4) == lib.MG_ERR_ARG  # not the logits' size
    assert at(1, 1) == 0
    assert at(2, 2, nprobs=0) == 0               # the forward only
    assert at(3, 2) == lib.MG_ERR_ARG            # past the plan's positions
    with pytest.raises(ValueError):              # a sampler's forward leaves nothing to differentiate
        check(lib.mg_dense_backward(dense.ptr, arena))
    assert at(0, 4) == 0
    g.set_param_data(g.param_data())            # the parameters the earlier positions read may have moved
    assert at(1, 1) == lib.MG_ERR_CHANGED
    assert at(0, 4) == 0
    loss = step_loss(model, doc)                 # a training forward ends the sampler's sequence
    assert at(1, 1) == lib.MG_ERR_ARG
    g.backward(loss)                             # and its own backward is untouched by it
    assert g.item(loss) == loss.value
