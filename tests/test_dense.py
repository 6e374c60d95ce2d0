"""The dense graph (csrc/dense.c, microgpt/dense.py): each document length's recorded step compiled
into dense kernels, checked against the graph once, then run without nodes. It must give the bits
of the graph (replay) and of the python backend, refuse what it cannot run as the graph would
(and then stay on replay with the same bits), and refuse a misused backward."""
import os
import random
import signal

import pytest

from conftest import require
from microgpt.training import step_loss, train_step


@pytest.fixture(autouse=True)
def c_backend():
    require("c")


def docs_for(vocab_size, block_size, count, rng):
    """Documents shorter than, as long as and longer than the block, BOS at both ends."""
    bos = vocab_size - 1
    lengths = [1, 2, block_size - 1, block_size, block_size + 1, block_size + 3] + \
              [rng.randint(1, block_size + 2) for _ in range(count)]
    return [[bos] + [rng.randrange(bos) for _ in range(max(n, 1))] + [bos] for n in lengths]


def history(backend, mode, config, docs, steps=None, model_class=None):
    """(losses, parameters) after training on docs in order (seeded init), and the model."""
    from microgpt.model import GPT, Config
    from microgpt.modes import new_graph
    random.seed(11)
    model = (model_class or GPT)(Config(**config), new_graph(backend, mode))
    schedule = docs if steps is None else [docs[i % len(docs)] for i in range(steps)]
    losses = [train_step(model, tokens, step, len(schedule)) for step, tokens in enumerate(schedule)]
    return (losses, model.graph.param_data()), model


def test_dense_is_bit_identical_to_replay_and_python():
    config = dict(vocab_size=7, n_embd=8, n_head=2, block_size=6, n_layer=2)
    docs = docs_for(7, 6, 6, random.Random(1)) * 2   # every length twice: recorded, then dense
    dense, model = history("c", "dense", config, docs)
    replay, _ = history("c", "replay", config, docs)
    python, _ = history("python", "fused", config, docs)
    assert dense == replay == python
    status = model.graph.dense.status()
    assert status and set(status.values()) == {"dense"}, status


def test_the_linear_kernels_block_and_chunk_edges_give_python_bits():
    """Widths where the vector kernels' blocks of 32, 16 and 4 and their one-by-one tail all run
    (36 = 32 + 4, 144 = 4 * 32 + 16, 9 = 4 + 4 + 1), linear groups of more rows than a chunk of
    32 (108, 144), and positions both under and over the forward's first four."""
    for n_embd, n_head in ((36, 3), (9, 3)):
        config = dict(vocab_size=7, n_embd=n_embd, n_head=n_head, block_size=9, n_layer=1)
        docs = docs_for(7, 9, 2, random.Random(n_embd)) * 2
        dense, model = history("c", "dense", config, docs)
        assert dense == history("python", "fused", config, docs)[0], config
        assert set(model.graph.dense.status().values()) == {"dense"}, config


@pytest.mark.parametrize("seed", range(6))
def test_random_small_configs_agree_on_dense_replay_and_python(seed):
    rng = random.Random(seed)
    n_head = rng.choice([1, 2, 3])
    config = dict(vocab_size=rng.randint(3, 9), n_layer=rng.randint(1, 3), n_head=n_head,
                  n_embd=n_head * rng.randint(1, 4), block_size=rng.randint(1, 12))
    docs = docs_for(config["vocab_size"], config["block_size"], 4, rng)
    docs = docs + [list(reversed(d)) for d in docs]  # same lengths, other tokens and targets
    dense, model = history("c", "dense", config, docs)
    assert dense == history("c", "replay", config, docs)[0] == history("python", "fused", config, docs)[0], config
    assert set(model.graph.dense.status().values()) == {"dense"}, (config, model.graph.dense.status())


@pytest.mark.parametrize("size", ["d64", "d128"])
def test_larger_sizes_agree_with_python_over_three_steps(size, shared):
    from microgpt.data import load_docs
    from microgpt.tokenizer import Tokenizer
    dims = {"d64": dict(n_embd=64, n_layer=2, n_head=4, block_size=16),
            "d128": dict(n_embd=128, n_layer=4, n_head=8, block_size=32)}[size]
    docs = load_docs(shared / "data" / "names.txt")
    random.Random(42).shuffle(docs)
    tok = Tokenizer.from_docs(docs)
    # two documents of one length: the second step runs dense; then another length
    by_length = {}
    for d in docs:
        by_length.setdefault(len(d), []).append(tok.document(d))
    chosen = by_length[6][:2] + by_length[7][:1]
    config = dict(vocab_size=tok.vocab_size, **dims)
    dense, model = history("c", "dense", config, chosen)
    assert model.graph.dense.plans, "no step ran dense"
    assert dense == history("python", "fused", config, chosen)[0]


class ResidualLinear:
    """x + linear(x) before the head: x is a run of nodes (an embedding) read by fused rows and by
    an add, so the order check cannot list the rows' terms as one per run, and refuses."""

    def __new__(cls, config, graph):
        from microgpt.model import GPT

        class Model(GPT):
            def forward(self, token_id, pos_id, keys, values):
                g, sd = self.graph.layers, self.state_dict
                x = g.embed(sd['wte'], sd['wpe'], token_id, pos_id)
                x = g.add(x, g.linear(x, sd['layer0.attn_wo']))
                return g.linear(x, sd['lm_head'])
        return Model(config, graph)


def attention_of(model, token_id, pos_id, keys, values):
    """Layer 0's attention over rmsnorm(embedding), as the GPT makes it: (its output, v)."""
    g, sd = model.graph.layers, model.state_dict
    x = g.rmsnorm(g.embed(sd['wte'], sd['wpe'], token_id, pos_id))
    q, k, v = (g.linear(x, sd[f'layer0.attn_w{w}']) for w in "qkv")
    keys[0].append(k)
    values[0].append(v)
    return g.attention(q, keys[0], values[0], model.config.n_head), v


class AttentionPlusItsProjection:
    """att + linear(att, wo): att (attention's output, one run of nodes) is read by wo's rows as a
    run and by the add node by node, so its later nodes get terms of their own, which the run's one
    term to its first node does not list. The order check must refuse."""

    def __new__(cls, config, graph):
        from microgpt.model import GPT

        class Model(GPT):
            def forward(self, token_id, pos_id, keys, values):
                g, sd = self.graph.layers, self.state_dict
                att, _ = attention_of(self, token_id, pos_id, keys, values)
                return g.linear(g.add(att, g.linear(att, sd['layer0.attn_wo'])), sd['lm_head'])
        return Model(config, graph)


class ValuesAlsoAdded:
    """att + relu(v): each node of v (attention's values) gets a term from every later position's
    output sums, and one from the ReLU; the graph's search reaches them in an order the plan, which
    runs the attention's terms and the ReLU's apart, does not follow. The order check must find
    that."""

    def __new__(cls, config, graph):
        from microgpt.model import GPT

        class Model(GPT):
            def forward(self, token_id, pos_id, keys, values):
                g, sd = self.graph.layers, self.state_dict
                att, v = attention_of(self, token_id, pos_id, keys, values)
                return g.linear(g.add(att, g.relu(v)), sd['lm_head'])
        return Model(config, graph)


class AddOfAStepRunsLaterNodes:
    """y + h[1 .. n], where h (fc1's output) is a run of nodes that fc2's rows read as one: h's
    nodes past its first get terms of their own, which the run's one term to its first node
    does not list. The order check must refuse (its first node gets no other term)."""

    def __new__(cls, config, graph):
        from microgpt.model import GPT

        class Model(GPT):
            def forward(self, token_id, pos_id, keys, values):
                g, sd, n = self.graph.layers, self.state_dict, self.config.n_embd
                x = g.embed(sd['wte'], sd['wpe'], token_id, pos_id)
                h = g.linear(x, sd['layer0.mlp_fc1'])
                x = g.add(g.linear(h, sd['layer0.mlp_fc2']), (h[0] + 1, n))   # h's vec from entry 1
                return g.linear(x, sd['lm_head'])
        return Model(config, graph)


class RowsOverTheNextMatrix:
    """The logits' rows read from lm_head's second node on, so that the last row's run ends on
    attn_wq's first node, which wq's first row's run gets a term to: a parameter past a run's
    first node with a term of its own. The order check must refuse."""

    def __new__(cls, config, graph):
        from microgpt.model import GPT

        class Model(GPT):
            def forward(self, token_id, pos_id, keys, values):
                g, sd = self.graph.layers, self.state_dict
                x = g.rmsnorm(g.embed(sd['wte'], sd['wpe'], token_id, pos_id))
                head, rows, cols = sd['lm_head']
                return g.linear(g.linear(x, sd['layer0.attn_wq']), (head + 1, rows, cols))
        return Model(config, graph)


class FirstNodeOfARunAlsoAdded:
    """2 * x[0] beside wk's rows, which read x (an embedding) as one run: x's first node gets the
    run's term and one of its own, and no other node of x does. The order check must refuse."""

    def __new__(cls, config, graph):
        from microgpt.model import GPT

        class Model(GPT):
            def forward(self, token_id, pos_id, keys, values):
                g, sd, n = self.graph.layers, self.state_dict, self.config.n_embd
                x = g.embed(sd['wte'], sd['wpe'], token_id, pos_id)
                first = g.scale((x[0], 1), 2.0)
                x = g.add(g.linear(x, sd['layer0.attn_wk']), g.linear(first, (sd['layer0.attn_wq'][0], n, 1)))
                return g.linear(x, sd['lm_head'])
        return Model(config, graph)


@pytest.mark.parametrize("model_class,why", [(ValuesAlsoAdded, "in another order than the graph"),
                                             (AttentionPlusItsProjection, "also get gradient terms from elsewhere"),
                                             (ResidualLinear, "also get gradient terms from elsewhere"),
                                             (AddOfAStepRunsLaterNodes, "also get gradient terms from elsewhere"),
                                             (RowsOverTheNextMatrix, "also get gradient terms from elsewhere"),
                                             (FirstNodeOfARunAlsoAdded, "also get gradient terms from elsewhere")])
def test_a_program_the_plan_cannot_follow_stays_on_replay(model_class, why):
    config = dict(vocab_size=5, n_embd=4, n_head=2, block_size=4, n_layer=1)
    docs = docs_for(5, 4, 3, random.Random(3)) * 2
    dense, model = history("c", "dense", config, docs, model_class=model_class)
    replay, _ = history("c", "replay", config, docs, model_class=model_class)
    assert dense == replay
    status = model.graph.dense.status()
    assert status and not model.graph.dense.plans
    assert all(why in reason for reason in status.values()), status


class AttentionOnly:
    """A block with attention and no MLP: the MLP's parameters get no gradient terms at all."""

    def __new__(cls, config, graph):
        from microgpt.model import GPT

        class Model(GPT):
            def forward(self, token_id, pos_id, keys, values):
                g, sd = self.graph.layers, self.state_dict
                x = g.rmsnorm(g.embed(sd['wte'], sd['wpe'], token_id, pos_id))
                q, k, v = (g.linear(g.rmsnorm(x), sd[f'layer0.attn_w{w}']) for w in "qkv")
                keys[0].append(k)
                values[0].append(v)
                att = g.linear(g.attention(q, keys[0], values[0], self.config.n_head), sd['layer0.attn_wo'])
                return g.linear(g.add(att, x), sd['lm_head'])
        return Model(config, graph)


class FirstPositionScaled:
    """An instruction at position 0 only: the positions' instructions differ, so the plan runs in
    the recorded order, not layer by layer, and the check compares all parameter gradients at once."""

    def __new__(cls, config, graph):
        from microgpt.model import GPT

        class Model(GPT):
            def forward(self, token_id, pos_id, keys, values):
                g, sd = self.graph.layers, self.state_dict
                x = g.embed(sd['wte'], sd['wpe'], token_id, pos_id)
                if pos_id == 0:
                    x = g.scale(x, 0.5)
                q, k, v = (g.linear(g.rmsnorm(x), sd[f'layer0.attn_w{w}']) for w in "qkv")
                keys[0].append(k)
                values[0].append(v)
                return g.linear(g.attention(q, keys[0], values[0], self.config.n_head), sd['lm_head'])
        return Model(config, graph)


class ParametersAsInputs:
    """Parameter rows read where a step's vectors usually are: an add's second input, a linear
    layer's input. The check's windows must hold the gradient terms those instructions give them."""

    def __new__(cls, config, graph):
        from microgpt.model import GPT

        class Model(GPT):
            def forward(self, token_id, pos_id, keys, values):
                g, sd, n = self.graph.layers, self.state_dict, self.config.n_embd
                x = g.rmsnorm(g.embed(sd['wte'], sd['wpe'], token_id, pos_id))
                x = g.add(x, (sd['layer0.attn_wo'][0], n))
                h = g.relu(g.linear((sd['layer0.attn_wv'][0], n), sd['layer0.attn_wq']))
                return g.linear(g.add(x, g.scale(h, 0.5)), sd['lm_head'])
        return Model(config, graph)


SMALL = dict(vocab_size=5, n_embd=4, n_head=2, block_size=4, n_layer=1)


@pytest.mark.parametrize("model_class", [AttentionOnly, FirstPositionScaled, ParametersAsInputs])
def test_programs_checked_by_window_or_whole_run_dense_with_replays_bits(model_class):
    docs = docs_for(5, 4, 3, random.Random(3)) * 2
    dense, model = history("c", "dense", SMALL, docs, model_class=model_class)
    assert dense == history("c", "replay", SMALL, docs, model_class=model_class)[0]
    assert model.graph.dense.plans and not model.graph.dense.refused, model.graph.dense.status()


def param_node(model, name, k):
    """The node of entry k of parameter matrix `name`: parameters are the arena's first nodes, in
    the state dict's order."""
    first = 0
    for key, (_, rows, cols) in model.state_dict.items():
        if key == name:
            return first + k
        first += rows * cols
    raise KeyError(name)


@pytest.mark.parametrize("model_class,name,k", [(None, "layer0.attn_wk", 5), (None, "wpe", 0),
                                                (None, "lm_head", -1), (None, "layer0.mlp_fc2", 17),
                                                (AttentionOnly, "layer0.mlp_fc1", 3),
                                                (FirstPositionScaled, "layer0.attn_wv", 2),
                                                (FirstPositionScaled, "layer0.mlp_fc1", 0),
                                                (ParametersAsInputs, "layer0.attn_wo", 2),
                                                (ParametersAsInputs, "layer0.attn_wv", 1)],
                         ids=["window-wk", "window-wpe", "window-lm_head", "window-fc2", "unread-fc1",
                              "whole-wv", "whole-unread-fc1", "window-add-input", "window-linear-input"])
def test_the_check_refuses_a_parameter_gradient_the_graph_did_not_give(monkeypatch, model_class, name, k):
    """The graph's gradient of one parameter, changed between its backward and the compile: the
    plan's gradients, checked a class's window at a time (or all at once), must differ there."""
    from microgpt.dense import Dense
    from microgpt.native import ffi, lib
    compile_plan, nodes = Dense._compile, []

    def compile_against_a_changed_gradient(self, n, program):
        node = nodes[0]
        err = ffi.new("int *")
        grad = lib.mg_get_grad(self.arena.ptr, node, err)
        assert err[0] == 0 and lib.mg_set_grad(self.arena.ptr, node, grad + 0.25) == 0
        compile_plan(self, n, program)
        assert lib.mg_set_grad(self.arena.ptr, node, grad) == 0

    monkeypatch.setattr(Dense, "_compile", compile_against_a_changed_gradient)

    class Victim:
        def __new__(cls, config, graph):
            from microgpt.model import GPT
            model = (model_class or GPT)(config, graph)
            rows, cols = model.state_dict[name][1:]
            nodes.append(param_node(model, name, k % (rows * cols)))
            return model

    docs = docs_for(5, 4, 3, random.Random(3))
    _, model = history("c", "dense", SMALL, docs, model_class=Victim)
    status = model.graph.dense.status()
    assert status and not model.graph.dense.plans, status
    assert all("a parameter's gradient differs from the graph's" in why for why in status.values()), status


def test_a_length_with_a_plan_frees_its_recording(monkeypatch):
    from microgpt.native import lib
    from microgpt.replay import Tape
    dropped, drop = {}, Tape.drop                 # length -> the id of the program it dropped
    monkeypatch.setattr(Tape, "drop", lambda tape, n: (dropped.update({n: tape.programs[n]}), drop(tape, n)))
    config = dict(vocab_size=5, n_embd=4, n_head=2, block_size=4, n_layer=1)
    docs = docs_for(5, 4, 3, random.Random(3))
    _, model = history("c", "dense", config, docs)
    _, replayed = history("c", "replay", config, docs)
    dense, tape = model.graph.dense, model.graph.tape
    assert set(dropped) == set(dense.plans) and set(tape.programs) == set(dense.refused), dense.status()
    assert tape.nbytes < replayed.graph.tape.nbytes
    # a dropped program's id is refused, by a replay (with tokens of its length) and by a second drop
    model.graph.arena.reset()
    for n, program in dropped.items():
        tokens = [4] + [0] * (n - 1) + [4]
        assert lib.mg_tape_replay(tape.ptr, model.graph.arena.ptr, program, tokens, n + 1) == lib.MG_ERR_ARG
        assert lib.mg_tape_drop(tape.ptr, program) == lib.MG_ERR_ARG
    assert lib.mg_tape_drop(tape.ptr, len(dense.plans) + len(dense.refused)) == lib.MG_ERR_ARG  # never given


def test_dense_refuses_a_misused_backward():
    from microgpt.model import GPT, Config
    from microgpt.modes import new_graph
    random.seed(2)
    model = GPT(Config(vocab_size=5, n_embd=4, n_head=2, block_size=4, n_layer=1), new_graph("c", "dense"))
    g, doc = model.graph, [4, 1, 2, 4]
    train_step(model, doc, 0, 10)                # recorded and compiled
    assert g.dense.plans
    loss = step_loss(model, doc)
    g.backward(loss)
    with pytest.raises(ValueError, match="differentiated already"):
        g.backward(loss)                         # a second backward of one forward
    loss = step_loss(model, doc)
    g.set_param_data(g.param_data())            # the parameters the forward read may have moved
    with pytest.raises(ValueError, match="changed"):
        g.backward(loss)
    g.adam_step(1, 10)                           # the gradients of the refused backward: none
    loss = step_loss(model, doc)
    g.backward(loss)
    assert g.item(loss) == loss.value


def test_bad_tokens_for_a_plan_are_refused():
    from microgpt.model import GPT, Config
    from microgpt.modes import new_graph
    from microgpt.native import check, lib
    random.seed(2)
    model = GPT(Config(vocab_size=5, n_embd=4, n_head=2, block_size=4, n_layer=1), new_graph("c", "dense"))
    train_step(model, [4, 1, 2, 4], 0, 10)
    dense = model.graph.dense
    plan = dense.plans[3]
    out = dense._loss
    for tokens in ([4, 1, 9, 4], [4, 1, 2, -1], [4, 1, 2]):
        with pytest.raises(ValueError):
            check(lib.mg_dense_forward(dense.ptr, model.graph.arena.ptr, plan, tokens, len(tokens), out))


@pytest.mark.parametrize("threads", [2, 3])
def test_threads_give_the_same_bits(threads):
    """The linear layers' rows and positions split over threads (every part worth a thread here,
    min_work=1), and Adam's parameters (tests/test_adam.py): the same bits as one thread."""
    config = dict(vocab_size=7, n_embd=8, n_head=2, block_size=6, n_layer=2)
    docs = docs_for(7, 6, 6, random.Random(4)) * 2
    one, _ = history("c", "dense", config, docs)

    class Threaded:
        def __new__(cls, config, graph):
            from microgpt.model import GPT
            assert graph.dense.set_threads(threads, min_work=1) == threads
            return GPT(config, graph)
    many, model = history("c", "dense", config, docs, model_class=Threaded)
    assert many == one
    assert set(model.graph.dense.status().values()) == {"dense"}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() here")
def test_a_forked_child_trains_without_the_parents_workers():
    """A fork has the pool's memory but none of its worker threads: the child must run every part
    itself and get the parent's bits, and freeing the pool must not wait for workers it lacks."""
    from microgpt.model import GPT, Config
    from microgpt.modes import new_graph
    config = dict(vocab_size=7, n_embd=8, n_head=2, block_size=6, n_layer=2)
    docs = docs_for(7, 6, 6, random.Random(4)) * 2
    random.seed(11)
    model = GPT(Config(**config), new_graph("c", "dense"))
    assert model.graph.dense.set_threads(3, min_work=1) == 3
    for step, tokens in enumerate(docs[:len(docs) // 2]):  # every length compiled, workers used
        train_step(model, tokens, step, len(docs))
    rest = list(enumerate(docs))[len(docs) // 2:]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                                 # the child: a hang ends it by SIGALRM, an error by 1
        status = 1
        try:
            signal.alarm(30)
            losses = [train_step(model, tokens, step, len(docs)) for step, tokens in rest]
            result = repr((losses, model.graph.param_data())).encode()
            model.graph.dense = None             # frees the executor and its pool here
            os.write(write, result)
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read) as f:
        child = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    losses = [train_step(model, tokens, step, len(docs)) for step, tokens in rest]
    assert child == repr((losses, model.graph.param_data()))


@pytest.mark.parametrize("lr", [0.01, 1e6], ids=["trains", "fails"])
def test_steps_in_one_call_give_the_graphs_run_and_failure(lr, monkeypatch):
    """Training runs the steps whose length has a plan many to a C call (training.Batches): the
    same losses as replay, and a failing step (lr 1e6 makes one, inside a batch: every document
    has one length) stops both at the same step with the same state from before it."""
    import microgpt
    from microgpt.dense import Dense
    calls = []
    original = Dense.train_steps

    def counted(self, *args):
        losses, failure = original(self, *args)
        calls.append((len(losses), failure is not None))
        return losses, failure
    monkeypatch.setattr(Dense, "train_steps", counted)
    docs = ["emma", "lily", "anna", "ella", "nora", "cora", "ruby", "rose"] * 4
    runs = {}
    for graph in ("replay", "dense"):
        model = microgpt.Model.new(docs, steps=60, seed=3, n_embd=8, n_head=2, block_size=8, lr=lr, graph=graph)
        failed = None
        try:
            model.train()
        except microgpt.TrainingFailed as e:
            failed = (e.step, e.what)
        runs[graph] = (model.losses, failed, model.params_sha256())
    assert runs["dense"] == runs["replay"]
    if lr > 1:
        assert runs["dense"][1] is not None and calls[-1][1], calls   # the failure came from a C call
    else:
        assert runs["dense"][1] is None and len(runs["dense"][0]) == 60
        assert any(n > 1 for n, _ in calls), calls                   # steps did run many to a call
