"""The memory estimate (limits.py) against what the backends really build, and its refusals.

The node and link counts are derived from the model's structure; here they are compared, exactly,
with the nodes and links both backends make in one training step, so that a change to a kernel or
a layer that makes a different graph fails this test instead of silently skewing the estimate.
The byte figures are compared with the C arena's own accounting and with tracemalloc's peak for
the python backend."""
import random
import time
import tracemalloc

import pytest

from conftest import require, run_microgpt
from test_cli import assert_clean_error

from microgpt import limits
from microgpt.model import GPT, Config, parameter_shapes
from microgpt.modes import new_graph
from microgpt.training import step_loss, train_step

CONFIGS = [Config(vocab_size=27), Config(vocab_size=11, n_layer=2, n_embd=12, n_head=3, block_size=7)]
FUSED = {"seed": False, "kernels": False, "fused": True, "replay": True, "dense": True}


def tokens_of(config, positions, seed=1):
    rng = random.Random(seed)
    return [rng.randrange(config.vocab_size - 1) for _ in range(positions + 1)]


def python_counts(model, tokens):
    """Values and child links one forward makes on the python backend."""
    from microgpt.engine import Value
    counts = [0, 0]
    original = Value.__init__

    def counting_init(self, data, children=(), local_grads=()):
        counts[0] += 1
        counts[1] += len(children)
        original(self, data, children, local_grads)
    Value.__init__ = counting_init
    try:
        step_loss(model, tokens)
    finally:
        Value.__init__ = original
    return tuple(counts)


@pytest.mark.parametrize("config", CONFIGS, ids=["default", "2-layers"])
@pytest.mark.parametrize("backend,mode", [("python", "seed"), ("python", "fused"), ("c", "seed"),
                                          ("c", "kernels"), ("c", "fused"), ("c", "replay")])
def test_step_graph_counts_are_exact(config, backend, mode):
    require(backend)
    model = GPT(config, new_graph(backend, mode))
    for positions in (1, 3, config.block_size):
        tokens = tokens_of(config, positions)
        expected = limits.step_graph(config, positions, fused_dots=FUSED[mode],
                                     fused_loss=FUSED[mode], compact_dots=backend == "c")
        if backend == "python":
            assert python_counts(model, tokens) == expected
        else:
            graph = model.graph
            step_loss(model, tokens)
            assert (graph.arena.nodes - model.num_params, graph.arena.edges) == expected


def test_num_params_matches_the_parameter_shapes():
    for config in CONFIGS + [Config(vocab_size=5, n_layer=3, n_embd=8, n_head=2, block_size=3)]:
        assert limits.num_params(config) == sum(r * c for r, c in parameter_shapes(config).values())


@pytest.mark.parametrize("config", CONFIGS, ids=["default", "2-layers"])
@pytest.mark.parametrize("mode", ["seed", "kernels", "fused", "replay", "dense"])
def test_c_arena_bytes_are_bounded_by_the_estimate(config, mode):
    """After training on documents of every length up to block_size (the replay graph records
    one program per length), the arena holds no more than the estimate, and not much less."""
    require("c")
    model = GPT(config, new_graph("c", mode))
    for step, positions in enumerate(range(1, config.block_size + 1)):
        train_step(model, tokens_of(config, positions, seed=step), step, config.block_size, 0.01)
    tape = getattr(model.graph, "tape", None)  # the replay graph's recordings are held apart
    dense = getattr(model.graph, "dense", None)  # and the dense graph's plans (at their peak: a compile)
    actual = (model.graph.arena.nbytes + (tape.nbytes if tape is not None else 0) +
              (dense.peak_bytes if dense is not None else 0))
    estimate = limits._c_arena_bytes(config, mode, config.block_size)
    print(f"c {mode}: arena {actual:,} bytes, estimate {estimate:,} ({estimate / actual:.2f}x)")
    assert actual <= estimate <= 1.6 * actual, (actual, estimate)


WIDER = Config(vocab_size=27, n_embd=32, block_size=8)


@pytest.mark.parametrize("config,mode", [(CONFIGS[0], "seed"), (CONFIGS[0], "fused"), (CONFIGS[1], "seed"),
                                         (CONFIGS[1], "fused"), (WIDER, "fused")],
                         ids=["default-seed", "default-fused", "2-layers-seed", "2-layers-fused", "wider-fused"])
def test_python_step_bytes_are_bounded_by_the_estimate(config, mode):
    random.seed(1)
    model = GPT(config, new_graph("python", mode))
    tokens = tokens_of(config, config.block_size)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        train_step(model, tokens, 0, 10, 0.01)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    nodes, links = limits.step_graph(config, config.block_size, mode == "fused", mode == "fused")
    estimate = nodes * limits.PY_NODE_BYTES + links * limits.PY_LINK_BYTES
    print(f"python {mode}: tracemalloc peak {peak:,} bytes, estimate {estimate:,} ({estimate / peak:.2f}x)")
    assert peak <= estimate <= 1.6 * peak, (peak, estimate)


@pytest.mark.parametrize("flags", [["--n-embd", "131072", "--n-head", "1"], ["--n-layer", "1000000000"],
                                   ["--n-embd", "8192"], ["--block-size", "100000000"]])
def test_huge_models_are_refused_at_once_with_the_estimate(flags):
    t0 = time.monotonic()
    result = run_microgpt("train", *flags, timeout=60)
    assert time.monotonic() - t0 < 5
    assert_clean_error(result, "needs an estimated", "available memory")


def test_max_memory_flag(small_data):
    assert_clean_error(run_microgpt("train", "--data", small_data, "--max-memory", "1M"),
                       "needs an estimated", "(--max-memory, max_memory) is 1.0 MiB")
    ok = run_microgpt("train", "--data", small_data, "--steps", "1", "--samples", "0", "--max-memory", "1G")
    assert ok.returncode == 0, ok.stderr
    for bad in ("lots", "-1G", "0", "nan"):
        assert_clean_error(run_microgpt("train", "--data", small_data, "--max-memory", bad), "--max-memory")


def test_sample_checks_memory_too(tmp_path, small_data):
    run_microgpt("train", "--data", small_data, "--steps", "1", "--samples", "0", "--save", tmp_path / "ck",
                 check=True)
    assert_clean_error(run_microgpt("sample", tmp_path / "ck", "--max-memory", "100K"), "needs an estimated")


def test_parse_size():
    assert limits.parse_size("512M") == 512 * 2 ** 20
    assert limits.parse_size("1.5G") == 3 * 2 ** 29
    assert limits.parse_size("2GiB") == 2 ** 31
    assert limits.parse_size("100000") == 100000
    with pytest.raises(ValueError):
        limits.parse_size("G")
