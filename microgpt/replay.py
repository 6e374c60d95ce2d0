"""Replay: a training step's kernel calls recorded once per document length, then replayed in C
(csrc/tape.c) for every later document of that length: one C call builds the whole forward
graph, and the backward reuses the program's cached topological order. Same bits.

The graph of a training step depends on the document only through its length n: the tokens
choose embedding rows and targets, which a replay takes as arguments. C checks that a recording
is such a function of the tokens (mg_tape_end) and refuses to keep it otherwise; the step is
then simply built by the kernels, as on the fused graph.
"""
from .native import check, ffi, lib, owned


class Tape:
    """A C tape used with one arena; layers (cgraph.KernelLayers) pass it to each kernel call
    while a step is being recorded."""

    def __init__(self, arena, layers):
        self.ptr = owned(lib.mg_tape_new(), lib.mg_tape_free, "a tape")
        self.arena, self.layers = arena, layers
        self.programs = {}  # document length n -> program id
        self.last = (None, None)  # (n, program id or None) of the step built most recently

    def training_loss(self, model, tokens):
        """The loss of one document; call right after a reset of the arena."""
        n = min(model.config.block_size, len(tokens) - 1)
        if n < 1:
            return model.loss(tokens)  # raises the model's error for a too-short document
        used = tokens[:n + 1]
        program = self.programs.get(n)
        self.last = (n, program)
        if program is not None:
            return check(lib.mg_tape_replay(self.ptr, self.arena.ptr, program, used, n + 1))
        check(lib.mg_tape_begin(self.ptr, self.arena.ptr))
        self.layers.tape = self.ptr
        try:
            loss = model.loss(tokens)
        finally:
            self.layers.tape = ffi.NULL
        program = lib.mg_tape_end(self.ptr, self.arena.ptr, used, n + 1, loss)
        if program >= 0:
            self.programs[n] = program
            self.last = (n, program)
        return loss

    def backward(self, loss):
        check(lib.mg_tape_backward(self.ptr, self.arena.ptr, loss))

    def drop(self, n):
        """Free length n's program (a dense plan runs its steps now): a later step of that length
        records again."""
        check(lib.mg_tape_drop(self.ptr, self.programs.pop(n)))
        if self.last[0] == n:
            self.last = (n, None)

    @property
    def nbytes(self):
        return lib.mg_tape_bytes(self.ptr)
