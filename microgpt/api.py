"""The Python API: train a model, sample from it, save it, load it and train it further.

    import microgpt
    model = microgpt.train("names.txt", steps=1000)      # or a list of strings, or None: the embedded names
    model.losses[-1], model.sample(20)
    model.save("run.ckpt")
    model = microgpt.load("run.ckpt")                    # ready to sample, or to train the rest of its schedule

The CLI is a thin layer over this module, so the two cannot drift: the same seed and data give
the CLI's losses and, for the first sample(20) after training, its 20 names.

A Model keeps its own random state (the seed's shuffle, parameter draws and sampling take their
numbers in the seed's order from a random.Random of its own, which gives what Python's `random`
functions give after random.seed): other uses of `random` in the program, in any thread, change
nothing, and it changes nothing for them.
"""
import math
import os
import random
import signal
import threading
from collections.abc import MutableMapping

from . import checkpoint, limits
from .checkpoint import CheckpointError
from .data import Documents, default_docs, docs_sha256, load_documents
from .guard import TrainingFailed
from .model import GPT, Config, parameter_shapes
from .modes import new_graph
from .optim import LEARNING_RATE
from .tokenizer import Tokenizer
from .sampling import sample
from .training import params_sha256, train as train_steps

DEFAULTS = {"steps": 1000, "seed": 42, "n_layer": 1, "n_embd": 16, "n_head": 4, "block_size": 16,
            "lr": LEARNING_RATE, "temperature": 0.5, "samples": 20}


# --- checks shared with the CLI (`name` is how the caller calls the setting: lr, or --lr)

def check_threads(threads, flag="threads"):
    """threads as given (1 .. limits.MAX_THREADS), or the machine's default for None."""
    if threads is None:
        return limits.default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= limits.MAX_THREADS:
        raise ValueError(f"{flag} must be a whole number from 1 to {limits.MAX_THREADS}, got {threads!r}")
    return threads


def check_count(name, value, maximum=limits.MAX_STEPS):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} {value} is too large: at most {maximum}")


def check_lr(lr, name="lr"):
    if isinstance(lr, bool) or not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {lr}")


def check_temperature(temperature, name="temperature"):
    # sampling divides the logits by it as temperature ** -1, which must be a finite number
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {temperature}")
    try:
        inverse = temperature ** -1
    except OverflowError:
        inverse = math.inf
    if not math.isfinite(inverse):
        raise ValueError(f"{name} {temperature} is too small: 1/temperature overflows")


def check_prefix(prefix, tokenizer, config, name="prefix"):
    if len(tokenizer.encode(prefix)) >= config.block_size:
        raise ValueError(f"{name} {prefix!r} leaves no room: block_size is {config.block_size}")


def check_seed(seed, name="seed"):
    """A whole number a checkpoint can hold (JSON readers refuse integers of thousands of digits)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"{name} must be a whole number, got {seed!r}")
    if abs(seed) >= 2 ** 64:
        raise ValueError(f"{name} must be less than 2**64 in size, got one of {seed.bit_length()} bits")


def check_max_memory(max_memory):
    """None (the available memory) or a number of bytes >= 1."""
    if max_memory is not None and (isinstance(max_memory, bool) or not isinstance(max_memory, int)
                                   or max_memory < 1):
        raise ValueError(f"max_memory must be None or a whole number of bytes >= 1, got {max_memory!r}")


def check_path(path, name):
    """A file's path as a str: a str or an os.PathLike. Anything else is refused: an int would be
    taken for a file descriptor (read, then closed under its owner), bytes would be recorded as
    their repr."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(path).__name__}")
    if not path:
        raise ValueError(f"{name}: the path is empty")
    return path


def read_data(data, note=None):
    """Documents (data.Documents) and how to name their source: a path, a list of strings, or
    None (embedded names)."""
    if data is None:
        return Documents.of(default_docs()), None
    if isinstance(data, (list, tuple)):
        if not all(isinstance(d, str) for d in data):
            raise ValueError("data must be a path, a list of strings, or None")
        docs = [d.strip() for d in data if d.strip()]
        if not docs:
            raise ValueError("data has no documents (every string is empty or blank)")
        return Documents.of(docs), None
    path = check_path(data, "data")
    return load_documents(path, note), path


class Model:
    """A GPT with everything its run needs: the tokenizer, the documents in the seed's shuffled
    order, the schedule (steps, learning rate) and where it is in it, and its random state."""

    def __init__(self, gpt, tokenizer, *, seed, lr, num_steps, step, data_id, random_state, docs=None):
        self.gpt, self.tokenizer = gpt, tokenizer
        self.seed, self.lr, self.num_steps, self.step = seed, lr, num_steps, step
        self.data_id, self.random_state, self.docs = data_id, random_state, docs
        self.losses = []  # one float per step this object trained
        self._training = False  # in train(), which its callbacks may not call again

    # --- making one
    @classmethod
    def new(cls, data=None, *, steps=1000, seed=42, n_layer=1, n_embd=16, n_head=4, block_size=16,
            lr=LEARNING_RATE, backend=None, graph="auto", max_memory=None, saving=False, note=None, threads=None):
        """A fresh run, as the seed starts one: random.seed(seed), the documents shuffled, the
        parameters drawn. Nothing is trained yet."""
        check_count("steps", steps)
        check_lr(lr)
        lr = float(lr)   # what a checkpoint holds
        check_seed(seed)
        check_max_memory(max_memory)
        docs, source = read_data(data, note)
        data_id = {"source": source, "sha256": docs_sha256(docs)}   # of the documents in file order
        rng = random.Random(seed)   # what random.seed(seed) makes, without touching the caller's
        docs.shuffle(rng)
        tokenizer = Tokenizer.from_docs(docs)
        config = Config(vocab_size=tokenizer.vocab_size, n_layer=n_layer, n_embd=n_embd, n_head=n_head,
                        block_size=block_size)
        g = new_graph(backend, graph)
        limits.check_memory(config, g.backend, g.mode, max_memory, saving=saving)
        g.set_threads(check_threads(threads))
        gpt = GPT(config, g, rng=rng)
        return cls(gpt, tokenizer, seed=seed, lr=lr, num_steps=steps, step=0, docs=docs, data_id=data_id,
                   random_state=rng.getstate())

    @classmethod
    def from_checkpoint(cls, ck, *, backend=None, graph="auto", max_memory=None, saving=False, threads=None):
        """The run a checkpoint (checkpoint.load) holds, without its documents (load_data)."""
        config = ck["config"]
        check_max_memory(max_memory)
        g = new_graph(backend, graph)
        limits.check_memory(config, g.backend, g.mode, max_memory, saving=saving)
        g.set_threads(check_threads(threads))
        gpt = GPT(config, g, rng=random.Random(ck["seed"]))  # its draws are overwritten below
        g.set_param_data(ck["params"])
        g.set_adam_state(ck["adam_m"], ck["adam_v"])
        return cls(gpt, Tokenizer(ck["chars"]), seed=ck["seed"], lr=ck["lr"], num_steps=ck["num_steps"],
                   step=ck["step"], data_id=ck["data"], random_state=ck["random_state"])

    def load_data(self, data=None, note=None):
        """The documents this run trains on: `data` (a path or a list of strings), else the source
        the run was started with. They must be the documents the run was trained on."""
        source = self.data_id["source"] if data is None else data
        docs, _ = read_data(source, note)
        if docs_sha256(docs) != self.data_id["sha256"]:
            if data is None and source is None:   # no file recorded: a list, or the embedded names
                raise CheckpointError("this run was trained on documents given as a list (or on the embedded names "
                                      "of another version): give them with model.load_data(documents)")
            where = source if isinstance(source, str) else "the embedded names" if source is None else "data"
            raise CheckpointError(f"this run was trained on other documents than {where}")
        docs.shuffle(random.Random(self.seed))
        if Tokenizer.from_docs(docs).chars != self.tokenizer.chars:
            raise CheckpointError("this run's vocabulary is not its documents'")
        self.docs = docs
        return docs

    # --- what it holds
    @property
    def config(self):
        return self.gpt.config

    @property
    def num_params(self):
        return self.gpt.num_params

    @property
    def params(self):
        """The parameters by name (wte, wpe, lm_head, layer0.attn_wq, ...) as rows of floats,
        readable and writable on every backend and graph mode."""
        return Params(self)

    def params_sha256(self):
        with self.gpt.graph.lock:
            return params_sha256(self.gpt.graph.param_chunks())

    # --- using it
    def train(self, steps=None, *, on_step=None, should_stop=None):
        """Train the next `steps` steps of the schedule (default: all that are left). on_step(step,
        loss) after each (step counts from 0); should_stop() before each, True to stop. A step that
        fails raises guard.TrainingFailed with the model in its state from before that step.
        Ctrl-C (in the main thread, where Python's own handler is in place) ends the call after
        the current step with KeyboardInterrupt, so the model holds whole steps; a second one
        interrupts at once, and the model may then hold half a step (load a checkpoint)."""
        if steps is not None:
            check_count("steps", steps)
        with self.gpt.graph.lock:  # threads sharing the model take turns, a whole call each
            if self._training:
                raise RuntimeError("train() called from inside train() (an on_step or should_stop callback): "
                                   "its steps would be applied in the middle of another's")
            self._training = True
            try:
                return self._train(steps, on_step, should_stop)
            finally:
                self._training = False

    def _train(self, steps, on_step, should_stop):
        stop = self.num_steps if steps is None else min(self.num_steps, self.step + steps)
        if stop <= self.step:
            return self  # nothing to train: the documents are not read
        if self.docs is None:
            self.load_data()

        def done(step, loss):
            self.losses.append(loss)
            self.step = step + 1

        try:
            with InterruptsBetweenSteps() as interrupted:   # the data is read by now: Ctrl-C there is at once
                train_steps(self.gpt, self.tokenizer, self.docs, self.num_steps, self.lr, start=self.step, stop=stop,
                            on_step=on_step, should_stop=lambda: interrupted() or bool(should_stop and should_stop()),
                            on_done=done)
        except TrainingFailed as failed:  # the model is back in its state before that step
            self.step = failed.step
            raise
        return self

    def sample(self, n=20, temperature=0.5, prefix="", on_sample=None):
        """n names, each from BOS (then the prefix's letters) until BOS or block_size tokens, as
        the seed samples them; on_sample(i, name) as each is made."""
        check_count("n", n)
        check_temperature(temperature)
        check_prefix(prefix, self.tokenizer, self.config)
        names = []
        rng = random.Random()
        with self.gpt.graph.lock:
            rng.setstate(self.random_state)
            try:
                for i in range(n):
                    names.append(sample(self.gpt, self.tokenizer, temperature, prefix, rng))
                    if on_sample:
                        on_sample(i, names[-1])
            finally:  # before the lock goes (the next call starts here), the names drawn counted
                self.random_state = rng.getstate()
        return names

    def reseed(self, seed):
        """Sample from now on with the numbers random.seed(seed) gives."""
        state = random.Random(seed).getstate()
        with self.gpt.graph.lock:  # not in the middle of a sample() that would write its own after
            self.random_state = state

    def save(self, path):
        """A checkpoint (written atomically) that load() reads back into the same run."""
        path = check_path(path, "path")
        with self.gpt.graph.lock:  # one moment's parameters, step and random state
            params, m, v = self.gpt.graph.state_arrays()  # 8 bytes a number, not a float object
            step, random_state = self.step, self.random_state
        checkpoint.save(path, config=self.config, chars=self.tokenizer.chars, step=step,
                        num_steps=self.num_steps, seed=self.seed, lr=self.lr, data=self.data_id,
                        params=params, adam_m=m, adam_v=v, random_state=random_state)

    def __repr__(self):
        c = self.config
        return (f"<microgpt.Model {self.num_params:,} params (n_layer={c.n_layer}, n_embd={c.n_embd}, "
                f"n_head={c.n_head}, block_size={c.block_size}), step {self.step}/{self.num_steps}, "
                f"{self.gpt.graph.backend} backend, {self.gpt.graph.mode} graph>")


class InterruptsBetweenSteps:
    """Ctrl-C during train() held until the current step is done (a step cut in two would leave
    its gradients summed, or its update applied but not counted): the `with` block's value says
    whether one came, and the block ends with KeyboardInterrupt. A second Ctrl-C raises at once.
    Only in the main thread, and only over Python's own handler: a program (such as the CLI)
    that handles SIGINT itself keeps its handler."""

    def __init__(self):
        self.came, self.previous = False, None

    def _handler(self, signum, frame):
        if self.came:
            raise KeyboardInterrupt
        self.came = True

    def __enter__(self):
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return lambda: self.came

    def __exit__(self, exc_type, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        if self.came and exc_type is None:
            raise KeyboardInterrupt


class Params(MutableMapping):
    """A model's parameters by name, as rows of floats (a copy: write a name back to change it)."""

    def __init__(self, model):
        self._graph = model.gpt.graph
        self._shapes, offset = {}, 0
        for name, (rows, cols) in parameter_shapes(model.config).items():
            self._shapes[name] = (offset, rows, cols)
            offset += rows * cols

    def __getitem__(self, name):
        offset, rows, cols = self._shapes[name]
        with self._graph.lock:
            flat = self._graph.param_data()[offset:offset + rows * cols]
        return [flat[r * cols:(r + 1) * cols] for r in range(rows)]

    def __setitem__(self, name, values):
        offset, rows, cols = self._shapes[name]
        if len(values) != rows or any(len(row) != cols for row in values):
            raise ValueError(f"{name} is {rows} rows of {cols} numbers")
        with self._graph.lock:
            flat = self._graph.param_data()
            flat[offset:offset + rows * cols] = [float(x) for row in values for x in row]
            self._graph.set_param_data(flat)

    def __delitem__(self, name):
        raise TypeError("a model's parameters cannot be deleted")

    def __iter__(self):
        return iter(self._shapes)

    def __len__(self):
        return len(self._shapes)


def train(data=None, steps=1000, seed=42, n_layer=1, n_embd=16, n_head=4, block_size=16, lr=LEARNING_RATE,
          backend=None, graph="auto", *, on_step=None, should_stop=None, max_memory=None, threads=None):
    """A model trained for `steps` steps on `data` (a path, a list of strings, or None: the
    embedded names), exactly as `microgpt train` trains it. See Model.train for the callbacks.
    threads: how many threads a large model's step is split over (default: the CPUs this
    process may use); every number gives the same bits."""
    return Model.new(data, steps=steps, seed=seed, n_layer=n_layer, n_embd=n_embd, n_head=n_head,
                     block_size=block_size, lr=lr, backend=backend, graph=graph,
                     max_memory=max_memory, threads=threads).train(on_step=on_step, should_stop=should_stop)


def load(path, backend=None, graph="auto", max_memory=None, threads=None):
    """The run a checkpoint holds (`microgpt train --save`, or Model.save): ready to sample, and
    to train the rest of its schedule (its documents are read when it first trains)."""
    return Model.from_checkpoint(checkpoint.load(check_path(path, "path")), backend=backend, graph=graph,
                                 max_memory=max_memory, threads=threads)
