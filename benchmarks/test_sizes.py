"""A training step at the sizes the speed issue names, on the fastest graph of each backend that
runs them in reasonable time: the seed's config, d64 and d128 (names data, one document a step).

Run with: pytest benchmarks/test_sizes.py --benchmark-only --benchmark-columns=median,mean,rounds
Every round is a replayed step (each length's step is recorded in the warm-up first)."""
import random

import pytest

from conftest import NAMES
from microgpt.backend import c_status
from microgpt.data import default_docs, load_docs
from microgpt.model import GPT, Config
from microgpt.modes import new_graph
from microgpt.tokenizer import Tokenizer
from microgpt.training import train_step

SIZES = {
    "seed": dict(),
    "d64": dict(n_embd=64, n_layer=2, n_head=4, block_size=16),
    "d128": dict(n_embd=128, n_layer=4, n_head=8, block_size=32),
}
ROUNDS = {"seed": 400, "d64": 60, "d128": 15}


@pytest.mark.benchmark(group="training step by model size")
@pytest.mark.parametrize("size", list(SIZES))
def test_replayed_step(benchmark, size):
    if not c_status()[0]:
        pytest.skip(f"c backend not built: {c_status()[1]}")
    random.seed(42)
    docs = load_docs(NAMES) if NAMES.exists() else default_docs()
    random.shuffle(docs)
    tokenizer = Tokenizer.from_docs(docs)
    model = GPT(Config(vocab_size=tokenizer.vocab_size, **SIZES[size]), new_graph("c", "replay"))
    documents = [tokenizer.document(docs[i]) for i in range(ROUNDS[size])]
    for step, tokens in enumerate(documents):  # warm-up: every length recorded
        train_step(model, tokens, step, 10**6)
    steps = iter(enumerate(documents))

    def one_step():
        step, tokens = next(steps)
        train_step(model, tokens, step, 10**6)

    benchmark.pedantic(one_step, rounds=ROUNDS[size], iterations=1)
