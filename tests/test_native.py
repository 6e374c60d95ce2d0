"""What only the c backend has: the arena's handles, its memory limit, its size across steps."""
import random

import pytest

from conftest import require
from microgpt.training import step_loss


@pytest.fixture(autouse=True)
def c_backend():
    require("c")


def test_stale_handle_after_reset_is_refused():
    from microgpt.native import Arena, CValue
    arena = Arena()
    kept = CValue(1.5, arena)
    arena.keep()
    step_value = kept * 2.0
    assert step_value.data == 3.0
    arena.reset()
    fresh = kept + 1.0  # reuses the index step_value had
    assert fresh.data == 2.5
    with pytest.raises(ValueError, match="stale"):
        step_value.data
    with pytest.raises(ValueError, match="stale"):
        step_value + 1.0
    with pytest.raises(ValueError, match="stale"):
        step_value.backward()
    assert kept.data == 1.5  # persistent nodes stay valid


def test_values_of_two_arenas_do_not_mix():
    from microgpt.native import Arena, CValue
    for op in (lambda a, b: a + b, lambda a, b: a * b, lambda a, b: a - b, lambda a, b: a / b):
        with pytest.raises(TypeError, match="different graph arenas"):
            op(CValue(1.0, Arena()), CValue(2.0, Arena()))


def test_out_of_memory_is_memory_error_and_the_arena_survives():
    from microgpt.native import Arena, CValue
    arena = Arena()
    x = CValue(1.0, arena)
    arena.keep()
    arena.set_limit(arena.nbytes + 4096)
    y = x
    with pytest.raises(MemoryError):
        for _ in range(100_000):
            y = y + 1.0
    arena.set_limit(0)
    arena.reset()
    z = x * 3.0
    z.backward()
    assert (z.data, x.grad) == (3.0, 3.0)


def test_kernel_out_of_memory_mid_training_loses_nothing():
    from microgpt.modes import new_graph
    from microgpt.model import GPT, Config
    random.seed(0)
    model = GPT(Config(vocab_size=5, n_embd=8, n_head=2, block_size=4), new_graph("c", "fused"))
    g = model.graph
    before = g.param_data()
    g.arena.set_limit(g.arena.nbytes + 1024)
    with pytest.raises(MemoryError):
        step_loss(model, [4, 0, 1, 2, 4])
    assert g.param_data() == before
    g.arena.set_limit(0)
    loss = step_loss(model, [4, 0, 1, 2, 4])
    g.backward(loss)
    assert g.item(loss) > 0


@pytest.mark.parametrize("mode", ["fused", "replay", "dense"])
def test_arena_size_is_flat_across_steps(shared, mode):
    from microgpt.data import load_docs
    from microgpt.modes import new_graph
    from microgpt.model import GPT, Config
    from microgpt.tokenizer import Tokenizer
    from microgpt.training import train_step
    random.seed(42)
    docs = load_docs(shared / "data" / "names.txt")
    random.shuffle(docs)
    tok = Tokenizer.from_docs(docs)
    model = GPT(Config(vocab_size=tok.vocab_size), new_graph("c", mode))
    # warm up on one document of every length, the longest first: the largest graph, and (replay)
    # every program a later step can need
    by_length = {len(d): d for d in docs}
    for step, length in enumerate(sorted(by_length, reverse=True)):
        train_step(model, tok.document(by_length[length]), step, 200, 0.01)
    size = model.graph.arena.nbytes
    for step in range(200):
        train_step(model, tok.document(docs[step]), step, 200, 0.01)
        assert model.graph.arena.nbytes == size
    model.graph.begin_step()
    assert model.graph.arena.nodes == model.num_params


def test_c_value_children_and_repr():
    from microgpt.native import CValue
    a, b = CValue(2.0), CValue(3.0)
    c = a * b
    assert [v.data for v in c._children] == [2.0, 3.0]
    assert repr(c) == "Value(data=6.0, grad=0.0)"


def fused_step(mode="fused"):
    """A model on a fused graph, with one step's graph built and not yet differentiated."""
    from microgpt.modes import new_graph
    from microgpt.model import GPT, Config
    random.seed(2)
    model = GPT(Config(vocab_size=5, n_embd=8, n_head=2, block_size=4), new_graph("c", mode))
    return model, step_loss(model, [4, 0, 1, 2, 4])


@pytest.mark.parametrize("mode", ["fused", "replay", "dense"])
def test_changing_a_value_under_fused_nodes_refuses_backward(mode):
    """Fused nodes read their local gradients from their children's values at backward time:
    a change in between would give other bits than the seed, so backward refuses instead."""
    model, loss = fused_step(mode)
    g = model.graph
    g.set_param_data(g.param_data())  # the same numbers, but written
    with pytest.raises(ValueError, match="changed after they were made"):
        g.backward(loss)
    loss = step_loss(model, [4, 0, 1, 2, 4])  # a new step is fine again
    g.backward(loss)
    g.adam_step(0, 2)
    with pytest.raises(ValueError, match="changed after they were made"):
        g.backward(loss)  # Adam changed the parameters this graph was built from


def test_fused_nodes_are_never_kept():
    model, _ = fused_step()
    with pytest.raises(ValueError):
        model.graph.arena.keep()


def test_seed_graph_keeps_local_gradients_from_when_nodes_were_made():
    """Unfused graphs store local gradients at creation, as the seed: a parameter changed
    between forward and backward does not change them, on either backend."""
    from microgpt.modes import new_graph
    from microgpt.model import GPT, Config
    grads = {}
    for backend in ("python", "c"):
        random.seed(2)
        model = GPT(Config(vocab_size=5, n_embd=8, n_head=2, block_size=4), new_graph(backend, "seed"))
        g = model.graph
        loss = step_loss(model, [4, 0, 1, 2, 4])
        g.set_param_data([x * 2 for x in g.param_data()])
        g.backward(loss)
        grads[backend] = [p.grad for p in g.params] if backend == "python" else g.arena.read_grad(0, g.nparams)
    assert grads["python"] == grads["c"]


def test_keep_after_a_reset_is_refused_so_old_handles_stay_stale():
    """An old step's handle must never name a node kept later (found by review: it did)."""
    from microgpt.native import Arena, CValue
    arena = Arena()
    arena.reset()
    old = CValue(111.0, arena)
    arena.reset()
    new = CValue(222.0, arena)  # the index old had
    with pytest.raises(ValueError):
        arena.keep()
    with pytest.raises(ValueError, match="stale"):
        old.data
    assert new.data == 222.0


def test_stale_vec_handle_is_refused():
    from microgpt.native import Arena, check, ffi, lib
    arena = Arena()
    leaf = check(lib.mg_leaf(arena.ptr, 1.0))
    arena.keep()
    arena.reset()
    old = check(lib.mg_vec_of(arena.ptr, [leaf, leaf], 2))
    arena.reset()
    check(lib.mg_vec_of(arena.ptr, [leaf, leaf], 2))  # the same entries again
    out = ffi.new("double[]", 2)
    assert lib.mg_vec_data(arena.ptr, old, 2, out) == lib.MG_ERR_STALE


def test_vec_range_from_a_parameter_into_the_step():
    from microgpt.native import Arena, check, ffi, lib
    arena = Arena()
    p = check(lib.mg_leaf(arena.ptr, 1.5))
    arena.keep()
    arena.reset()
    check(lib.mg_mul_const(arena.ptr, p, 2.0))
    vec = check(lib.mg_vec_range(arena.ptr, p, 2))
    out = ffi.new("double[]", 2)
    check(lib.mg_vec_data(arena.ptr, vec, 2, out))
    assert list(out) == [1.5, 3.0]


def test_leaves_made_together_have_no_children_and_the_next_node_links_right():
    # mg_leaves writes no per-leaf link entry (edge_begin) for its leaves: each must still report no
    # children, and a node made after them must get exactly its own children
    from microgpt.native import Arena, check, ffi, lib
    arena = Arena()
    kept = check(lib.mg_leaf(arena.ptr, 1.5))
    arena.keep()
    arena.reset()
    for _ in range(6):  # a step whose link entries the leaves' places keep after the reset
        kept = check(lib.mg_mul(arena.ptr, kept, kept))
    arena.reset()
    first = check(lib.mg_leaves(arena.ptr, [1.0, 2.0, 3.0, 4.0, 5.0], 5))
    out = ffi.new("int64_t[]", 4)
    assert [lib.mg_children(arena.ptr, first + k, out, 4) for k in range(5)] == [0] * 5
    product = check(lib.mg_mul(arena.ptr, first + 1, first + 3))
    assert lib.mg_children(arena.ptr, product, out, 4) == 2 and list(out)[:2] == [first + 1, first + 3]
    more = check(lib.mg_leaves(arena.ptr, [6.0, 7.0], 2))
    total = check(lib.mg_add(arena.ptr, product, more + 1))
    assert lib.mg_children(arena.ptr, total, out, 4) == 2 and list(out)[:2] == [product, more + 1]
    check(lib.mg_backward(arena.ptr, total))
    err = ffi.new("int *")
    grads = [lib.mg_get_grad(arena.ptr, h, err) for h in [first + k for k in range(5)] + [more, more + 1]]
    assert grads == [0.0, 4.0, 0.0, 2.0, 0.0, 0.0, 1.0] and err[0] == 0


def _linear_over_kept_entries(first_entry):
    """One fused linear row over two kept vec entries of a weight vec whose nodes jump, and its
    backward: (value, the weights' gradients, the inputs' gradients)."""
    from microgpt.native import Arena, check, ffi, lib
    arena = Arena()
    w = check(lib.mg_leaves(arena.ptr, [0.5, -1.25, 2.0, 0.75, -0.5, 1.5], 6))
    x = check(lib.mg_leaves(arena.ptr, [3.0, -2.0], 2))
    # entries name nodes 0 1 3 2 4 5: runs of consecutive nodes begin at entries 0, 2, 3 and 4
    wvec = check(lib.mg_vec_of(arena.ptr, [w, w + 1, w + 3, w + 2, w + 4, w + 5], 6))
    xvec = check(lib.mg_vec_range(arena.ptr, x, 2))
    check(lib.mg_arena_keep(arena.ptr))
    generation = check(lib.mg_arena_reset(arena.ptr))
    out = ffi.new("double[]", 1)
    check(lib.mg_vec_data(arena.ptr, check(lib.mg_k_linear(arena.ptr, ffi.NULL, xvec, 2, wvec + first_entry, 1, 1)),
                          1, out))
    check(lib.mg_backward(arena.ptr, generation << 32 | (lib.mg_arena_nodes(arena.ptr) - 1)))
    grads = ffi.new("double[]", 8)
    check(lib.mg_read_grad(arena.ptr, 0, 8, grads))
    return out[0], list(grads)[:6], list(grads)[6:]


@pytest.mark.parametrize("first_entry, nodes", [(0, (0, 1)), (1, (1, 3)), (2, (3, 2)), (4, (4, 5))])
def test_linear_over_kept_entries_that_are_one_run_or_not(first_entry, nodes):
    # entries 0-1 and 4-5 name consecutive nodes (read as arrays), 1-2 cross from one run into
    # the next and 2-3 go down: each must read the nodes its entries name
    weights = [0.5, -1.25, 2.0, 0.75, -0.5, 1.5]
    value, wgrad, xgrad = _linear_over_kept_entries(first_entry)
    assert value == 0.0 + weights[nodes[0]] * 3.0 + weights[nodes[1]] * -2.0
    assert wgrad == [{nodes[0]: 3.0, nodes[1]: -2.0}.get(i, 0.0) for i in range(6)]
    assert xgrad == [weights[nodes[0]], weights[nodes[1]]]


def test_adam_with_no_parameters():
    from microgpt.native import Arena, check, lib
    arena = Arena()
    check(lib.mg_adam_init(arena.ptr, 0))
    assert lib.mg_adam_step(arena.ptr, 0.01, 0.85, 0.99, 1e-8, 0) == 0


def test_second_backward_is_the_seeds_or_refused():
    """The seed's graph keeps every intermediate gradient, so a second backward adds to them: the
    seed-mode graphs of both backends do exactly that. Fused graphs cannot, and refuse."""
    from microgpt.modes import new_graph
    from microgpt.model import GPT, Config
    grads = {}
    for backend, mode in (("python", "seed"), ("c", "seed"), ("python", "fused"), ("c", "fused"), ("c", "replay"),
                          ("c", "dense")):
        random.seed(4)
        model = GPT(Config(vocab_size=5, n_embd=8, n_head=2, block_size=4), new_graph(backend, mode))
        g = model.graph
        loss = step_loss(model, [4, 0, 1, 4])
        g.backward(loss)
        if mode == "seed":
            g.backward(loss)
            grads[backend] = [p.grad for p in g.params] if backend == "python" else g.arena.read_grad(0, g.nparams)
        else:
            with pytest.raises(ValueError, match="differentiated already"):
                g.backward(loss)
    assert grads["python"] == grads["c"]


def test_backward_that_ran_out_of_memory_can_be_retried():
    model, loss = fused_step()
    g = model.graph
    g.arena.set_limit(g.arena.nbytes)  # no room for the search's scratch
    with pytest.raises(MemoryError):
        g.backward(loss)
    g.arena.set_limit(0)
    g.backward(loss)  # not a second backward: the first one did nothing
    assert any(x != 0.0 for x in g.arena.read_grad(0, g.nparams))


def reciprocals_near_midpoints(rng, n):
    """x whose exact 1/x lies 0.45 to 0.5 ULP from the rounded quotient 1/x."""
    from fractions import Fraction
    import math
    out = []
    while len(out) < n:
        x = rng.uniform(0.5, 2.0) * 2.0 ** rng.randint(-70, 70)
        q = 1 / x
        if abs(float((1 / Fraction(x) - Fraction(q)) / Fraction(math.ulp(q)))) >= 0.45:
            out.append(x)
    return out


def test_reciprocal_gives_pythons_bits():
    """x**-1 (the seed divides by it) takes 1/x where pymath.h proves that is pow()'s answer and
    calls pow() elsewhere: CPython's ** decides every bit, on quotients near a rounding midpoint
    (where 1/x and pow() part), of both signs, at powers of two, and outside the range the
    shortcut decides ([2^-64, 2^64))."""
    import math
    from microgpt.native import Arena, check, ffi, lib
    rng = random.Random(13)
    near = reciprocals_near_midpoints(rng, 3000)
    xs = near + [-x for x in near[:500]]
    xs += [rng.uniform(0.5, 2.0) * 2.0 ** rng.randint(-70, 70) for _ in range(3000)]
    xs += [2.0 ** k for k in range(-80, 81, 7)] + [math.nextafter(2.0 ** k, 0) for k in range(-80, 81, 7)]
    xs += [rng.uniform(1, 2) * 2.0 ** rng.choice((-400, -65, 64, 65, 400)) for _ in range(300)]   # (x**-2, the
    # gradient each node keeps, must not overflow)
    xs += [1.0, -1.0, math.inf, -math.inf]
    assert sum(x ** -1 != 1 / x for x in xs) > 20     # the inputs do reach where they part
    arena = Arena()
    first = arena.leaves(xs)
    err = ffi.new("int *")
    got = []
    for i in range(len(xs)):
        got.append(lib.mg_get_data(arena.ptr, check(lib.mg_pow(arena.ptr, first + i, -1.0)), err))
        assert err[0] == 0
    differ = [x for x, c in zip(xs, got) if repr(c) != repr(x ** -1)]
    assert not differ, f"{len(differ)} of {len(xs)} differ from CPython's x**-1, first {differ[:3]}"


def _kernels_over(kept, fused):
    """Every kernel, its inputs vecs whose entries jump between runs of nodes (and go down), kept
    vecs (whose entries the arena does not store: it reads them from its runs) or the same entries
    made as a step's vecs: (the loss, every output's values, every leaf's gradient)."""
    from microgpt.native import Arena, check, ffi, lib
    arena = Arena()
    rng = random.Random(5)
    first = check(lib.mg_leaves(arena.ptr, [rng.uniform(-2, 2) for _ in range(40)], 40))
    order = [0, 1, 2, 7, 6, 5, 3, 4, 8, 9, 10, 11, 13, 12, 14, 15] + list(range(39, 19, -1))
    lists = {"wte": order[0:8], "wpe": order[8:16], "x": order[16:20], "w": order[20:32], "v": order[32:36]}

    def vecs():
        return {k: check(lib.mg_vec_of(arena.ptr, [first + i for i in ids], len(ids))) for k, ids in lists.items()}
    made = vecs() if kept else None
    check(lib.mg_arena_keep(arena.ptr))
    check(lib.mg_arena_reset(arena.ptr))
    v = made or vecs()
    outs = [check(lib.mg_k_embed(arena.ptr, ffi.NULL, v["wte"], 2, v["wpe"], 2, 4, 1, 1))]
    outs.append(check(lib.mg_k_add(arena.ptr, ffi.NULL, outs[0], v["x"], 4)))
    outs.append(check(lib.mg_k_add(arena.ptr, ffi.NULL, v["v"], v["x"], 4)))
    outs.append(check(lib.mg_k_scale(arena.ptr, ffi.NULL, v["x"], 4, 0.5)))
    outs.append(check(lib.mg_k_relu(arena.ptr, ffi.NULL, v["v"], 4)))
    outs.append(check(lib.mg_k_rmsnorm(arena.ptr, ffi.NULL, v["x"], 4, fused)))
    outs.append(check(lib.mg_k_softmax(arena.ptr, ffi.NULL, v["v"], 4)))
    lin = check(lib.mg_k_linear(arena.ptr, ffi.NULL, v["x"], 4, v["w"], 3, fused))
    outs.append(check(lib.mg_k_linear(arena.ptr, ffi.NULL, outs[1], 4, v["w"], 3, fused)))
    keys, values = ffi.new("int64_t[]", [v["x"], outs[1]]), ffi.new("int64_t[]", [v["v"], v["x"]])
    outs.append(check(lib.mg_k_attention(arena.ptr, ffi.NULL, v["x"], keys, values, 2, 2, 2, fused)))
    losses = [check(lib.mg_k_cross_entropy(arena.ptr, ffi.NULL, out, 4, 2, fused)) for out in outs[:7] + outs[8:]]
    losses += [check(lib.mg_k_cross_entropy(arena.ptr, ffi.NULL, v[k], 4, 1, fused)) for k in ("x", "v")]
    losses += [check(lib.mg_k_cross_entropy(arena.ptr, ffi.NULL, lin, 3, 0, fused))]
    loss = check(lib.mg_k_mean(arena.ptr, ffi.NULL, losses, len(losses)))
    check(lib.mg_backward(arena.ptr, loss))
    values_out = []
    for out, n in [(o, 4) for o in outs] + [(lin, 3)]:
        buf = ffi.new("double[]", n)
        check(lib.mg_vec_data(arena.ptr, out, n, buf))
        values_out += list(buf)
    grads = ffi.new("double[]", 40)
    check(lib.mg_read_grad(arena.ptr, first, 40, grads))
    err = ffi.new("int *")
    return lib.mg_get_data(arena.ptr, loss, err), values_out, list(grads)


@pytest.mark.parametrize("fused", [0, 1])
def test_kernels_read_kept_vecs_as_they_read_a_steps(fused):
    kept, step = _kernels_over(True, fused), _kernels_over(False, fused)
    assert kept == step
    # every leaf a kernel reads gets a gradient: all but the embeddings' row 0 and the four no vec names
    unread = {0, 1, 2, 7, 8, 9, 10, 11, 16, 17, 18, 19}
    assert [i for i, g in enumerate(kept[2]) if g == 0.0] == sorted(unread)


def test_kept_vec_entries_take_no_memory():
    # the model's weight vecs name its parameters in order: once kept, an entry costs nothing
    from microgpt.native import Arena, check, lib
    arena = Arena()
    n = 1 << 18
    first = check(lib.mg_leaves(arena.ptr, [0.5] * n, n))
    check(lib.mg_vec_range(arena.ptr, first, n))
    before = lib.mg_arena_bytes(arena.ptr)
    check(lib.mg_arena_keep(arena.ptr))
    assert before - lib.mg_arena_bytes(arena.ptr) >= 4 * n - 4096
