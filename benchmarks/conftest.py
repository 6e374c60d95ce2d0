"""Benchmark fixtures: a model on the names data, one per rung (backend + graph mode + GC)."""
import gc
import pathlib
import random

import pytest

from microgpt.backend import c_status
from microgpt.data import default_docs, load_docs
from microgpt.graphs import new_graph
from microgpt.model import GPT, Config
from microgpt.tokenizer import Tokenizer

NAMES = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "names.txt"
# rung: (backend, graph mode, cyclic GC paused during the step)
RUNGS = {
    "seed-gc": ("python", "seed", False),
    "python-seed": ("python", "seed", True),
    "python": ("python", "fused", True),
    "c-ops": ("c", "seed", True),
    "c-kernels": ("c", "kernels", True),
    "c-fused": ("c", "fused", True),
    "c-replay": ("c", "replay", True),
}


class Trainer:
    """The seed's setup, then steps on successive documents, as `microgpt train` runs them."""

    def __init__(self, rung):
        self.rung = rung
        backend, mode, self.gc_paused = RUNGS[rung]
        if backend == "c" and not c_status()[0]:
            pytest.skip(f"c backend not built: {c_status()[1]}")
        random.seed(42)
        self.docs = load_docs(NAMES) if NAMES.exists() else default_docs()
        random.shuffle(self.docs)
        self.tokenizer = Tokenizer.from_docs(self.docs)
        self.model = GPT(Config(vocab_size=self.tokenizer.vocab_size), new_graph(backend, mode))
        self.graph = self.model.graph
        self.step_index = 0

    def tokens(self):
        return self.tokenizer.document(self.docs[self.step_index % len(self.docs)])

    def forward(self):
        self.graph.begin_step()
        return self.graph.training_loss(self.model, self.tokens())

    def step(self):
        if self.gc_paused:
            gc.disable()
        try:
            loss = self.forward()
            self.graph.backward(loss)
            self.graph.adam_step(self.step_index, 1000)
            self.step_index += 1
        finally:
            gc.enable()


@pytest.fixture(params=list(RUNGS))
def trainer(request):
    return Trainer(request.param)
