"""Speed, side by side in one run: a training step per rung, backward alone, Adam alone, sampling.

Run with: pytest benchmarks --benchmark-only  (ratios within one run are what to read)."""
import gc

import pytest

from conftest import Trainer
from microgpt.modes import RUNG_NAMES
from microgpt.sampling import sample


@pytest.mark.benchmark(group="train step")
def test_train_step(benchmark, trainer):
    trainer.step()  # warm up
    # every rung steps through the same documents, so their times compare
    benchmark.pedantic(trainer.step, rounds=12, iterations=1)


@pytest.mark.benchmark(group="backward")
@pytest.mark.parametrize("rung", [name for name in RUNG_NAMES if name != "seed"])
def test_backward(benchmark, rung):
    t = Trainer(rung)

    def setup():
        return (t.forward(),), {}

    gc.disable()
    try:
        benchmark.pedantic(t.graph.backward, setup=setup, rounds=10, iterations=1)
    finally:
        gc.enable()


@pytest.mark.benchmark(group="adam")
@pytest.mark.parametrize("rung", ["python", "c-replay"])
def test_adam(benchmark, rung):
    t = Trainer(rung)
    counter = iter(range(10**9))
    benchmark(lambda: t.graph.adam_step(next(counter) % 1000, 1000))


@pytest.mark.benchmark(group="sample")
@pytest.mark.parametrize("rung", ["python", "c-ops", "c-fused", "c-replay", "c-dense"])
def test_sample(benchmark, rung):
    """One name, after 100 steps (c-dense samples on the plan of the longest document seen)."""
    t = Trainer(rung)
    for _ in range(100):
        t.step()
    benchmark.pedantic(lambda: sample(t.model, t.tokenizer, 0.5), rounds=40, iterations=1)
