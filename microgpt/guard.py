"""A training run's last good state, kept cheaply, and the error a failed step raises.

A step fails when its loss is not finite (the seed's step has then already applied Adam with nan
or inf gradients) or when the graph raises a math error (a log of 0, an exp that overflows,
Adam's g**2 overflowing: the python backend's Adam may then have updated some parameters and not
others). Either way the state to keep is the one from before the failed step.

A graph whose Adam step changes nothing when it fails (adam_is_atomic: the c backend's) needs no
copy: its trainer skips Adam after a loss that is not finite, so a failed step has changed only
gradients (NothingToUndo).

The python backend's Adam is the seed's, parameter by parameter, so its trainer keeps a copy
(LastGood). Copying every parameter and both Adam moments before each step would cost more than
the step (measured on the c backend, when it still kept copies: 0.70 against 0.22 ms a step).
Training is deterministic (the documents come in order; nothing draws random numbers), so the
state is copied only now and then (a copy's own time at most 1/200 of the training time since
the last one), and on a failure the state from before the failed step is rebuilt by restoring
the copy and running the steps since it again.
"""
import time

# time between copies, as a multiple of what the last copy took. At 50 the c backend (which kept
# copies then) measured ~5% slower (the copies' cost is more than their own timing shows); at 200
# no slower than no copies
SNAPSHOT_EVERY = 200


class TrainingFailed(Exception):
    """Training stopped at `step` (0-based) with the model back in its state before that step."""

    def __init__(self, step, what, cause):
        super().__init__(f"training stopped at step {step + 1}: {what}; {cause}")
        self.step, self.what, self.cause = step, what, cause


def likely_cause(step, lr):
    if step == 0:
        return ("it failed on the first step, before any update: the model's initial values overflow "
                "(try a smaller --n-embd or --n-layer)")
    return f"the learning rate {lr!r} is likely too high (try a smaller --lr)"


class LastGood:
    """Copies of (parameters, Adam moments) taken at the start of some step, and the means to
    bring the graph back to the start of any later step."""

    def __init__(self, graph, step):
        self.graph = graph
        self.state = None
        self._take(step)

    def _take(self, step):
        t0 = time.perf_counter()
        self.step = step
        # arrays of doubles, refilled in place: a list of floats would be 32 bytes a number, and
        # a new copy beside the old one twice that (at d128: 150 MB against 19)
        self.state = self.graph.state_arrays(self.state)
        self.cost = time.perf_counter() - t0
        self.taken_at = time.perf_counter()

    def before(self, step):
        """Called at the start of each step: copy the state if enough time has passed."""
        if step > self.step and time.perf_counter() - self.taken_at >= SNAPSHOT_EVERY * self.cost:
            self._take(step)

    def rebuild(self, step, run_step):
        """Put the graph back into its state at the start of `step`: restore the copy, then run
        the steps since it again (run_step(s) runs step s; they succeeded before and are
        deterministic, so they give the same bits)."""
        graph = self.graph
        params, m, v = self.state
        graph.set_param_data(params)
        graph.set_adam_state(m, v)
        zero_param_grads(graph)
        for s in range(self.step, step):
            run_step(s)


class NothingToUndo:
    """LastGood for a graph whose failed steps change no parameter or moment (see the top)."""

    def __init__(self, graph, step):
        self.graph = graph

    def before(self, step):
        pass

    def rebuild(self, step, run_step):
        zero_param_grads(self.graph)


def last_good_for(graph, step):
    return NothingToUndo(graph, step) if graph.adam_is_atomic else LastGood(graph, step)


def zero_param_grads(graph):
    """A step that failed inside Adam leaves gradients that the next step would add to."""
    if graph.backend == "python":
        for p in graph.params:
            p.grad = 0
        return
    from .native import check, lib
    ptr = graph.arena.ptr
    for i in range(graph.nparams):  # the parameters are the arena's first nodes, made before any reset
        check(lib.mg_set_grad(ptr, i, 0.0))


MATH_ERRORS = (ArithmeticError, ValueError, MemoryError)


def describe(error):
    if isinstance(error, MemoryError):
        return f"out of memory ({error})"
    return f"math error ({error})"
