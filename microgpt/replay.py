"""The replay graph: a training step's kernel calls recorded once per document length, then
replayed in C (csrc/tape.c) for every later document of that length: one C call builds the
whole forward graph, and the backward reuses the cached topological order. Same bits.

The graph of a training step depends on the document only through its length n: the tokens
choose embedding rows and targets, which a replay takes as arguments. C checks that a recording
is such a function of the tokens (mg_tape_end) and refuses to keep it otherwise; then this graph
just builds that step with the kernels, as CKernelGraph does. Sampling and everything else but
training_loss is CKernelGraph's.
"""
from .graphs import CKernelGraph


class CReplayGraph(CKernelGraph):
    """CKernelGraph with fused dot nodes whose training steps are recorded and replayed in C."""

    def __init__(self):
        super().__init__(fused=True)
        self.mode = "replay"
        self._programs = {}  # document length n -> program id in the arena

    def training_loss(self, model, tokens):
        """The loss of one document; call right after begin_step (the arena must be reset)."""
        lib, ptr, check = self._k
        n = min(model.config.block_size, len(tokens) - 1)
        if n < 1:
            return model.loss(tokens)  # raises the model's error for a too-short document
        used = tokens[:n + 1]
        program = self._programs.get(n)
        if program is not None:
            return check(lib.mg_tape_replay(ptr, program, used, n + 1))
        check(lib.mg_tape_begin(ptr))
        loss = model.loss(tokens)
        program = lib.mg_tape_end(ptr, used, n + 1, loss)
        if program >= 0:
            self._programs[n] = program
        return loss
