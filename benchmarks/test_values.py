"""The Value API side by side on both backends: single forward ops, the issue's small loop (persistent weights, fresh
leaves, forward, backward, update) and a micrograd-style MLP (2-16-16-1 ReLU on 100 points, full
batch: forward, backward, SGD). Both backends run the very same code and end with the same bits.

Run with: pytest benchmarks/test_values.py --benchmark-only --benchmark-columns=mean,median,rounds
(ratios within one run are what to read: the machine's speed drifts between runs)."""
import random

import pytest

from microgpt.backend import c_status, value_class


def small_loop(Value, iterations):
    w = [Value(0.1 * i) for i in range(10)]
    for _ in range(iterations):
        x = [Value(float(j)) for j in range(10)]
        loss = (sum(wi * xi for wi, xi in zip(w, x)) - 1.0) ** 2
        for p in w:
            p.grad = 0
        loss.backward()
        for p in w:
            p.data -= 1e-4 * p.grad
    return [p.data for p in w]


class MLP:
    """2-16-16-1, ReLU between layers, as micrograd's demo; weights from a fixed seed."""

    def __init__(self, Value, seed=0):
        rng = random.Random(seed)
        self.Value = Value
        self.layers = [[[Value(rng.uniform(-1, 1)) for _ in range(nin)] + [Value(0.0)] for _ in range(nout)]
                       for nin, nout in ((2, 16), (16, 16), (16, 1))]
        self.params = [p for layer in self.layers for neuron in layer for p in neuron]
        self.points = [(rng.uniform(-2, 2), rng.uniform(-2, 2)) for _ in range(100)]
        self.labels = [1.0 if a * b > 0 else -1.0 for a, b in self.points]

    def forward(self, x):
        for k, layer in enumerate(self.layers):
            x = [sum((w * xi for w, xi in zip(neuron[:-1], x)), neuron[-1]) for neuron in layer]
            if k < len(self.layers) - 1:
                x = [v.relu() for v in x]
        return x[0]

    def step(self, lr=0.05):
        V = self.Value
        losses = [(self.forward([V(a), V(b)]) - y) ** 2 for (a, b), y in zip(self.points, self.labels)]
        loss = sum(losses, V(0.0)) * (1.0 / len(losses))
        for p in self.params:
            p.grad = 0.0
        loss.backward()
        for p in self.params:
            p.data -= lr * p.grad
        return loss.data


def value_of(backend):
    if backend == "c" and not c_status()[0]:
        pytest.skip(f"c backend not built: {c_status()[1]}")
    return value_class(backend)


@pytest.mark.benchmark(group="values: the issue's small loop, 500 iterations")
@pytest.mark.parametrize("backend", ["python", "c"])
def test_small_loop(benchmark, backend):
    Value = value_of(backend)
    result = benchmark.pedantic(small_loop, args=(Value, 500), rounds=10, iterations=1, warmup_rounds=1)
    assert result == small_loop(value_of("python"), 500)  # the same bits on both backends


@pytest.mark.benchmark(group="values: MLP 2-16-16-1 on 100 points, one training step")
@pytest.mark.parametrize("backend", ["python", "c"])
def test_mlp_step(benchmark, backend):
    mlp = MLP(value_of(backend))
    steps = []
    benchmark.pedantic(lambda: steps.append(mlp.step()), rounds=8, iterations=1, warmup_rounds=1)
    reference = MLP(value_of("python"))
    for _ in steps:  # the steps the benchmark ran, warm-up included
        reference.step()
    assert [p.data for p in mlp.params] == [p.data for p in reference.params]


def forward_ops(Value, n):
    """n times `a * b + 1.0` and a leaf: the forward cost op by op (no backward)."""
    a, b = Value(2.0), Value(3.0)
    for _ in range(n):
        a * b + 1.0
        Value(1.0)


@pytest.mark.benchmark(group="values: 10,000 x (a * b + 1.0, Value(1.0)), forward only")
@pytest.mark.parametrize("backend", ["python", "c"])
def test_forward_ops(benchmark, backend):
    benchmark.pedantic(forward_ops, args=(value_of(backend), 10_000), rounds=10, iterations=1, warmup_rounds=1)
