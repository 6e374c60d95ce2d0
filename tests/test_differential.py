"""Random expression graphs give bit-identical values and gradients on both backends."""
import math
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import require
from microgpt.engine import Value as PyValue

OPS = ["add", "mul", "sub", "div", "add_c", "mul_c", "rsub_c", "rdiv_c", "neg", "pow", "log", "exp", "relu"]
finite = st.floats(min_value=-4, max_value=4, allow_nan=False).filter(lambda x: abs(x) > 1e-3)
step = st.tuples(st.sampled_from(OPS), st.integers(0, 10**6), st.integers(0, 10**6), finite,
                 st.sampled_from([2, 3, -1, -2, 0.5, -0.5, 1.5]))
program = st.tuples(st.lists(finite, min_size=1, max_size=4), st.lists(step, min_size=1, max_size=40))


def run(Value, leaves, steps):
    """Build the graph the program describes; errors are part of the outcome."""
    nodes = [Value(x) for x in leaves]
    for op, i, j, c, k in steps:
        a, b = nodes[i % len(nodes)], nodes[j % len(nodes)]
        try:
            out = {"add": lambda: a + b, "mul": lambda: a * b, "sub": lambda: a - b, "div": lambda: a / b,
                   "add_c": lambda: a + c, "mul_c": lambda: a * c, "rsub_c": lambda: c - a,
                   "rdiv_c": lambda: c / a, "neg": lambda: -a, "pow": lambda: a ** k,
                   "log": lambda: a.log(), "exp": lambda: a.exp(), "relu": lambda: a.relu()}[op]()
        except (ValueError, OverflowError, ZeroDivisionError) as e:
            return ("error", type(e).__name__, op)
        nodes.append(out)
    root = nodes[-1]
    for n in nodes[len(leaves):-1]:  # one output depending on many: sum with the seed's order
        root = root + n
    root.backward()
    bits = lambda x: struct.pack("<d", float(x))  # noqa: E731 (compare bits: -0.0 and nan included)
    return [bits(n.data) for n in nodes] + [bits(n.grad) for n in nodes[:len(leaves)]]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program)
def test_random_graphs_bit_identical_across_backends(prog):
    require("c")
    from microgpt.native import CValue
    leaves, steps = prog
    assert run(PyValue, leaves, steps) == run(CValue, leaves, steps)


def test_differential_harness_can_fail():
    """The comparison above sees a one-ulp difference."""
    a = run(PyValue, [0.1], [("add_c", 0, 0, 0.2, 2)])
    b = run(PyValue, [math.nextafter(0.1, 1)], [("add_c", 0, 0, 0.2, 2)])
    assert a != b


@pytest.mark.parametrize("seed", range(3))
def test_model_step_graph_identical_across_backends(seed):
    """One training step's loss and every parameter after Adam, every way of building the graph."""
    import random

    from microgpt.modes import new_graph
    from microgpt.model import GPT, Config
    from microgpt.training import train_step
    from conftest import GRAPHS, C_OK
    results = {}
    for backend, mode in GRAPHS:
        if backend == "c" and not C_OK:
            require("c")
        random.seed(seed)
        model = GPT(Config(vocab_size=7, n_embd=8, n_head=2, block_size=6, n_layer=2), new_graph(backend, mode))
        losses = [train_step(model, tokens, step, 3)
                  for step, tokens in enumerate([[6, 1, 2, 3, 6], [6, 4, 0, 5, 2, 1, 3, 6], [6, 5, 6]])]
        results[(backend, mode)] = (losses, model.graph.param_data())
    first = next(iter(results.values()))
    for key, value in results.items():
        assert value == first, key


def test_fused_graph_makes_the_same_nodes_on_both_backends():
    """'fused' means one thing everywhere: dot rows, attention sums and rmsnorm sums of squares,
    and a cross-entropy with only the target's probability. Counted per step on the python backend (Values made) and in the
    c arena."""
    import random

    from microgpt.model import GPT, Config
    from microgpt.modes import new_graph
    from microgpt.profile import count_python_nodes
    from microgpt.training import step_loss
    require("c")
    config = Config(vocab_size=7, n_embd=8, n_head=2, block_size=6, n_layer=2)
    for tokens in ([6, 1, 2, 3, 6], [6, 4, 0, 5, 2, 1, 3, 6]):
        random.seed(0)
        python = GPT(config, new_graph("python", "fused"))
        counts = [count_python_nodes(python, tokens)]
        for mode in ("fused", "replay", "replay"):  # replay: recorded, then replayed
            random.seed(0)
            c = GPT(config, new_graph("c", mode))
            step_loss(c, tokens)
            step_loss(c, tokens)
            counts.append(c.graph.node_count() - c.num_params)
        assert len(set(counts)) == 1, counts
        random.seed(0)
        seed_graph = count_python_nodes(GPT(config, new_graph("python", "seed")), tokens)
        assert counts[0] < seed_graph / 3  # and fused is what it says: far fewer nodes than the seed's
