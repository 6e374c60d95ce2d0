"""Training and sampling loops, as the seed runs them."""
import gc
import math
import sys
import time
from array import array
from contextlib import contextmanager, nullcontext

from .digest import sha256
from .guard import MATH_ERRORS, TrainingFailed, describe, last_good_for, likely_cause
from .optim import LEARNING_RATE


@contextmanager
def gc_paused():
    """Pause the cyclic garbage collector while a step builds its graph.

    The graph holds no reference cycles, so reference counting frees all of it when the step
    ends; the collector only re-scans the growing graph, which was most of the seed's run time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def step_loss(model, tokens):
    """A new step's graph for one document: its loss node, not yet differentiated. The previous
    step's graph is dropped."""
    with model.graph.lock:
        model.graph.begin_step()
        return model.graph.training_loss(model, tokens)


def train_step(model, tokens, step, num_steps, lr=LEARNING_RATE, pause_gc=True, timer=None, finite_only=False):
    """One step on one document: forward, backward, Adam (step of a num_steps schedule). Returns
    the loss. timer, if given, is called with 'forward', 'backward' and 'adam' as each phase
    ends (the profile times them); pause_gc=False runs it with the cyclic GC as the seed does;
    finite_only: no Adam after a loss that is not finite (the seed applies it)."""
    graph = model.graph
    with graph.lock, gc_paused() if pause_gc else nullcontext():
        loss = step_loss(model, tokens)
        if timer:
            timer("forward")
        graph.backward(loss)
        if timer:
            timer("backward")
        value = graph.item(loss)
        if finite_only and not math.isfinite(value):
            return value
        graph.adam_step(step, num_steps, lr)
        if timer:
            timer("adam")
        del loss
    return value


def train(model, tokenizer, docs, num_steps, lr, start=0, stop=None, on_step=None, should_stop=None, on_done=None):
    """Steps start..stop-1 of a num_steps schedule; one document a step, in order, wrapping.
    on_done(step, loss) as soon as a step's update is in the parameters (a run of steps done by
    one C call: each of them, before any on_step), so that the caller's count of steps never
    falls behind the parameters, even if on_step raises.

    A step whose loss is not finite, or whose graph raises a math error, raises TrainingFailed
    with the model put back in its state from before that step (guard.py), so that what is
    saved then is the last good state."""
    def run_step(step):
        return train_step(model, tokenizer.document(docs[step % len(docs)]), step, num_steps, lr)

    last_good = last_good_for(model.graph, start)
    finite_only = model.graph.adam_is_atomic  # then a failed step leaves nothing to undo (guard.py)
    batches = Batches(model, tokenizer, docs, num_steps, lr)
    step, end = start, num_steps if stop is None else stop
    while step < end:
        if should_stop and should_stop():
            break
        last_good.before(step)
        losses, failure = batches.run(step, end)
        first, step = step, step + len(losses)
        for callback in (on_done, on_step):   # every step counted before any callback of the user's
            if callback:
                for i, loss in enumerate(losses):
                    callback(first + i, loss)
        if failure:
            what = f"the loss is {failure[1]}" if failure[0] == "nonfinite" else describe(failure[1])
            raise TrainingFailed(step, what, likely_cause(step, lr))  # the state is the one before it
        if losses:
            continue
        tokens = tokenizer.document(docs[step % len(docs)])
        try:
            loss = train_step(model, tokens, step, num_steps, lr, finite_only=finite_only)
            what = None if math.isfinite(loss) else f"the loss is {loss}"
        except MATH_ERRORS as e:
            what = describe(e)
        if what is not None:
            last_good.rebuild(step, run_step)
            raise TrainingFailed(step, what, likely_cause(step, lr))
        if on_done:
            on_done(step, loss)
        if on_step:
            on_step(step, loss)
        step += 1


class Batches:
    """Runs of training steps done by one C call each where the graph can (the dense graph's
    plans, dense.py: Python then costs nothing per step), sized to take about BATCH_SECONDS so
    that a signal or should_stop() still lands within a fraction of a second."""
    BATCH_SECONDS, MAX_STEPS = 0.02, 256

    def __init__(self, model, tokenizer, docs, num_steps, lr):
        self.model, self.tokenizer, self.docs = model, tokenizer, docs
        self.num_steps, self.lr = num_steps, lr
        self.dense = getattr(model.graph, "dense", None)
        self.size = 1  # steps in the next batch: grows once a step's time is known

    def run(self, step, end):
        """(losses of the steps done from `step`, failure or None); no steps where the first
        document's length has no plan yet (the caller then runs it on the graph)."""
        if self.dense is None:
            return [], None
        docs = [self.tokenizer.document(self.docs[s % len(self.docs)])
                for s in range(step, min(end, step + self.size))]
        t0 = time.perf_counter()
        with self.model.graph.lock, gc_paused():
            losses, failure = self.dense.train_steps(self.model.config.block_size, docs, step, self.num_steps,
                                                     self.lr)
        if losses:
            per_step = (time.perf_counter() - t0) / len(losses)
            self.size = max(1, min(self.MAX_STEPS, int(self.BATCH_SECONDS / per_step)))
        return losses, failure


def params_sha256(chunks):
    """sha256 of every parameter as a little-endian double, state_dict order, row by row: chunks
    are the parameters in that order, in pieces (arrays of doubles, or sequences of floats)."""
    digest = sha256()
    for values in chunks:
        doubles = values if isinstance(values, array) and values.typecode == 'd' else array('d', values)
        if sys.byteorder != "little":
            doubles = array('d', doubles)
            doubles.byteswap()
        digest.update(doubles)  # the array's own bytes: no copy of them
    return digest.hexdigest()
