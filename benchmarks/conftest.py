"""Benchmark fixtures: a model on the names data, one per rung of the profile (modes.RUNGS)."""
import pathlib
import random

import pytest

from microgpt.backend import c_status
from microgpt.data import default_docs, load_docs
from microgpt.model import GPT, Config
from microgpt.modes import RUNG_NAMES, RUNGS, new_graph
from microgpt.tokenizer import Tokenizer
from microgpt.training import step_loss, train_step

NAMES = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "names.txt"


class Trainer:
    """The seed's setup, then steps on successive documents, as `microgpt train` runs them."""

    def __init__(self, rung):
        self.rung = next(r for r in RUNGS if r.name == rung)
        backend, mode = self.rung.backend, self.rung.mode
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
        """Only the forward of the next step (the backward benchmark times the rest)."""
        return step_loss(self.model, self.tokens())

    def step(self):
        train_step(self.model, self.tokens(), self.step_index, 1000, pause_gc=self.rung.gc_paused)
        self.step_index += 1


@pytest.fixture(params=RUNG_NAMES)
def trainer(request):
    return Trainer(request.param)
