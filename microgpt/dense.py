"""Dense: each recorded step (replay.py) compiled, once per document length, into a plan of dense
kernels over flat arrays (csrc/dense.c), which then runs the step's forward and backward without
making a single node. Same bits.

A plan is compiled right after the backward of the first step of its length, while that step's
graph is alive, and kept only if it adds every gradient's terms in the order the graph's chain
rule adds them and reproduces every value and gradient of that step bit for bit (C checks both).
A length whose plan is refused stays on replay; `refused` says why.
"""
from .native import check, ffi, lib, owned, raise_error
from .optim import BETA1, BETA2, EPS, learning_rate


# multiply-adds a part of a layer must have to go to another thread: handing one over costs a few
# microseconds. Measured on 2 threads: d64's backward is 14% faster than with 65536, and the seed's
# layers stay whole (the largest, 64 rows by 16 inputs by 16 positions, is 16,384: a split needs
# twice this).
MIN_WORK = 16384
# parameters a part of Adam's step must have to go to another thread. The seed's 4,192 take ~19 us
# on one; in two parts (2,048 a part) Adam alone was faster, but `microgpt train` took 72 us a step
# against 62 in two of three alternated runs (benchmarks/test_versus_seed.py -k c-all)
ADAM_MIN_SHARE = 32768


class DenseLoss:
    """The loss of a step a plan ran: its value (the plan's backward needs nothing else)."""
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


class Dense:
    """Plans for one arena's steps, compiled from the programs of its tape (replay.Tape)."""

    def __init__(self, arena, tape):
        self.ptr = owned(lib.mg_dense_new(), lib.mg_dense_free, "a dense executor")
        self.arena, self.tape = arena, tape
        self.plans = {}    # document length n -> plan id
        self.refused = {}  # document length n -> why its steps stay on replay
        self._loss = ffi.new("double *")

    def training_loss(self, model, tokens):
        """The loss of one document: a plan's forward, or the tape's graph until its length has one."""
        n = min(model.config.block_size, len(tokens) - 1)
        plan = self.plans.get(n)
        if plan is None:
            return self.tape.training_loss(model, tokens)
        check(lib.mg_dense_forward(self.ptr, self.arena.ptr, plan, tokens[:n + 1], n + 1, self._loss))
        return DenseLoss(self._loss[0])

    def backward(self, loss):
        if isinstance(loss, DenseLoss):
            check(lib.mg_dense_backward(self.ptr, self.arena.ptr))
            return
        self.tape.backward(loss)
        n, program = self.tape.last
        if program is not None and n not in self.plans and n not in self.refused:
            self._compile(n, program)

    def _compile(self, n, program):
        plan = lib.mg_dense_compile(self.ptr, self.tape.ptr, self.arena.ptr, program)
        if plan >= 0:
            self.plans[n] = plan
            self.tape.drop(n)  # its order alone is 8 bytes a node of the step: 1.5 MB at d128's longest
        elif plan == lib.MG_ERR_PLAN:
            self.refused[n] = ffi.string(lib.mg_dense_why(self.ptr)).decode()
        elif plan == lib.MG_ERR_NOMEM:  # the step itself is done: keep training on replay
            self.refused[n] = "out of memory while compiling its plan"
        # MG_ERR_ARG: the arena no longer holds that program's step (nothing to compile from)

    def set_threads(self, threads, min_work=MIN_WORK, adam_min_share=ADAM_MIN_SHARE):
        """Split the linear layers' rows and positions over up to `threads` threads (same bits), each
        part of at least min_work multiply-adds, and Adam's parameters, adam_min_share a part at least."""
        return check(lib.mg_dense_set_threads(self.ptr, threads, min_work, adam_min_share))

    def adam_step(self, lr_t, step):
        """The arena's Adam step (mg_adam_step) over this executor's threads."""
        check(lib.mg_dense_adam_step(self.ptr, self.arena.ptr, lr_t, BETA1, BETA2, EPS, step))

    def train_steps(self, block_size, documents, first_step, num_steps, lr):
        """Steps first_step, first_step + 1, ... on documents (token lists) in one C call, as many
        as have a plan in a row from the first: forward, backward and Adam each. Returns (losses of
        the steps done, None) or, when step first_step + len(losses) failed (the arena is then in
        its state from before it), (losses, ('nonfinite', its loss) or ('error', the exception))."""
        plans, offsets, tokens = [], [0], []
        for doc in documents:
            n = min(block_size, len(doc) - 1)
            plan = self.plans.get(n)
            if plan is None:
                break
            plans.append(plan)
            tokens += doc[:n + 1]
            offsets.append(len(tokens))
        k = len(plans)
        if k == 0:
            return [], None
        lrs = [learning_rate(lr, first_step + i, num_steps) for i in range(k)]
        losses, status = ffi.new("double[]", k), ffi.new("int *")
        done = check(lib.mg_dense_steps(self.ptr, self.arena.ptr, k, plans, offsets, tokens, lrs, BETA1, BETA2, EPS,
                                        first_step, losses, status))
        if done == k:
            return list(losses), None
        if status[0] == lib.MG_STEP_NONFINITE:
            return list(losses)[:done], ("nonfinite", losses[done])
        try:
            raise_error(status[0])
        except Exception as e:  # the exception the step would have raised outside a batch
            return list(losses)[:done], ("error", e)

    def sampling_plan(self):
        """(plan, positions) of the plan a sampler can run furthest on, or None (sampling.py)."""
        best = None
        for plan in self.plans.values():
            positions = lib.mg_dense_positions(self.ptr, plan)
            if positions > 0 and (best is None or positions > best[1]):
                best = (plan, positions)
        return best

    def sample_probs(self, plan, pos, token, scale, vocab_size):
        """softmax(logits * scale) after token at pos, on plan's forward: the positions before pos
        must have been run on the same plan just before (pos 0 starts over). vocab_size 0: the
        forward only (None)."""
        probs = ffi.new("double[]", vocab_size) if vocab_size else ffi.NULL
        check(lib.mg_dense_sample(self.ptr, self.arena.ptr, plan, pos, token, scale, probs, vocab_size))
        return list(probs) if vocab_size else None

    def status(self):
        """{document length: 'dense' or why it runs on replay} for every length seen so far."""
        return {**{n: "dense" for n in self.plans}, **self.refused}

    @property
    def nbytes(self):
        return lib.mg_dense_bytes(self.ptr)

    @property
    def peak_bytes(self):
        """The most it held at once, counting a compile's scratch (which lives while it runs)."""
        return lib.mg_dense_peak_bytes(self.ptr)
