"""The `microgpt` command: train, sample, profile.

`microgpt train` prints the seed's lines (num docs, vocab size, num params, one line a step, the
samples) so its output diffs against the seed's."""
import argparse
import json
import os
import random
import signal
import sys
import time

from . import checkpoint
from .backend import CHOICES, BackendError, resolve
from .checkpoint import CheckpointError
from .data import DataError, default_docs, docs_sha256, load_docs
from .model import GPT, Config, ConfigError
from .modes import MODE_NAMES, mode_help, new_graph
from .optim import LEARNING_RATE, learning_rate
from .tokenizer import Tokenizer, VocabularyError
from .train import params_sha256, sample, train

USER_ERRORS = (DataError, ConfigError, CheckpointError, VocabularyError, BackendError, ValueError)


def add_backend_flags(p):
    p.add_argument("--backend", choices=CHOICES, default=None,
                   help="python, c, or auto (default: $MICROGPT_BACKEND, else auto)")
    p.add_argument("--graph", choices=("auto",) + MODE_NAMES, default="auto", help=mode_help())


def build_parser():
    parser = argparse.ArgumentParser(prog="microgpt", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train on a names file, then sample")
    t.add_argument("--data", help="UTF-8 text, one document a line (default: the embedded names list)")
    t.add_argument("--steps", type=int, default=None, help="steps in the schedule (default 1000; 0: sample only)")
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--n-layer", type=int, default=1)
    t.add_argument("--n-embd", type=int, default=16)
    t.add_argument("--n-head", type=int, default=4)
    t.add_argument("--block-size", type=int, default=16)
    t.add_argument("--lr", type=float, default=LEARNING_RATE)
    t.add_argument("--temperature", type=float, default=0.5)
    t.add_argument("--samples", type=int, default=20)
    t.add_argument("--prefix", default="", help="start every sample with these letters")
    add_backend_flags(t)
    t.add_argument("--save", metavar="CKPT", help="write a checkpoint at the end (or on Ctrl-C)")
    t.add_argument("--resume", metavar="CKPT", help="continue the run a checkpoint holds")
    t.add_argument("--stop-after", type=int, metavar="N",
                   help="train at most N steps in this run (the schedule still spans --steps)")
    t.add_argument("--metrics", metavar="FILE", help="write JSON Lines: step, loss, lr; then params_sha256, samples")

    s = sub.add_parser("sample", help="sample names from a checkpoint")
    s.add_argument("checkpoint")
    s.add_argument("--samples", type=int, default=20)
    s.add_argument("--temperature", type=float, default=0.5)
    s.add_argument("--prefix", default="")
    s.add_argument("--seed", type=int, default=None,
                   help="seed for sampling (default: continue the checkpoint's random state)")
    add_backend_flags(s)

    p = sub.add_parser("profile", help="time every rung, from the seed's algorithm to native kernels")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--data", help="data file (default: the embedded names list)")
    p.add_argument("--json", metavar="FILE", help="write the numbers as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="draw a bar chart (needs matplotlib)")
    p.add_argument("--rungs", help="comma-separated subset of rungs to run")
    p.add_argument("--seed-script", metavar="PATH",
                   help="the seed's microgpt.py to time as the first rung (default: ../shared/reference/"
                        "seed_microgpt.py when present)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return cmd_train(args)
        if args.command == "sample":
            return cmd_sample(args)
        from .profile import cmd_profile
        return cmd_profile(args)
    except USER_ERRORS as e:
        print(f"microgpt: error: {e}", file=sys.stderr)
        return 2
    except MemoryError as e:
        print(f"microgpt: error: out of memory: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"microgpt: error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 1


def _positive(name, value):
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def check_sampling_args(args, tokenizer, config):
    """Refuse bad sampling flags before training, not after it."""
    if not args.temperature > 0:
        raise ValueError(f"--temperature must be > 0, got {args.temperature}")
    if len(tokenizer.encode(args.prefix)) >= config.block_size:
        raise ValueError(f"--prefix {args.prefix!r} leaves no room: block_size is {config.block_size}")


def check_writable(path, flag):
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise ValueError(f"{flag} {path}: cannot write in {folder}")


def cmd_train(args):
    for name in ("samples", "stop_after"):
        if getattr(args, name) is not None:
            _positive("--" + name.replace("_", "-"), getattr(args, name))
    backend = resolve(args.backend)
    ck = checkpoint.load(args.resume) if args.resume else None
    if ck:
        seed, config, lr, start = ck["seed"], ck["config"], ck["lr"], ck["step"]
        num_steps = ck["num_steps"] if args.steps is None else args.steps
        data_source = args.data or ck["data"]["source"]
    else:
        seed, lr, start = args.seed, args.lr, 0
        num_steps = 1000 if args.steps is None else args.steps
        data_source = args.data
    _positive("--steps", num_steps)
    for path, flag in ((args.save, "--save"), (args.metrics, "--metrics")):
        if path:
            check_writable(path, flag)

    random.seed(seed)
    docs = load_docs(data_source) if data_source else default_docs()
    data_id = {"source": data_source, "sha256": docs_sha256(docs)}
    random.shuffle(docs)
    print(f"num docs: {len(docs)}")
    tokenizer = Tokenizer.from_docs(docs)
    print(f"vocab size: {tokenizer.vocab_size}")
    if ck:
        if ck["data"]["sha256"] != data_id["sha256"] or ck["chars"] != tokenizer.chars:
            raise CheckpointError(f"checkpoint {args.resume} was trained on other data than {data_source or 'the default'}")
        if start > num_steps:
            raise CheckpointError(f"checkpoint is at step {start}, past --steps {num_steps}")
    else:
        config = Config(vocab_size=tokenizer.vocab_size, n_layer=args.n_layer, n_embd=args.n_embd,
                        n_head=args.n_head, block_size=args.block_size)
    check_sampling_args(args, tokenizer, config)
    model = GPT(config, new_graph(backend, args.graph))
    print(f"num params: {model.num_params}")
    if ck:
        model.graph.set_param_data(ck["params"])
        model.graph.set_adam_state(ck["adam_m"], ck["adam_v"])
        random.setstate(ck["random_state"])

    metrics = open(args.metrics, "w") if args.metrics else None
    tty = sys.stdout.isatty()
    stop = num_steps if args.stop_after is None else min(num_steps, start + args.stop_after)
    state = {"step": start, "shown": 0.0}

    def on_step(step, loss):
        if metrics:
            metrics.write(json.dumps({"step": step + 1, "loss": loss, "lr": learning_rate(lr, step, num_steps)}) + "\n")
        state["step"] = step + 1
        line = f"step {step+1:4d} / {num_steps:4d} | loss {loss:.4f}"
        if not tty:
            print(line)  # every step, as the seed prints them, so that runs diff
        elif time.monotonic() - state["shown"] >= 0.1 or step + 1 == stop:
            # a terminal gets one progress line, redrawn at most ten times a second: the c
            # backend makes thousands of steps a second, and redrawing each costs more than it
            print(f"\r{line}", end="", flush=True)
            state["shown"] = time.monotonic()

    def save():
        if args.save:
            m, v = model.graph.adam_state()
            checkpoint.save(args.save, config=config, chars=tokenizer.chars, step=state["step"],
                            num_steps=num_steps, seed=seed, lr=lr, data=data_id,
                            params=model.graph.param_data(), adam_m=m, adam_v=v,
                            random_state=random.getstate())

    with finish_step_on_ctrl_c() as interrupted:
        train(model, tokenizer, docs, num_steps, lr, start=start, stop=stop,
              on_step=on_step, should_stop=lambda: interrupted)
    if interrupted:
        if tty:
            print()
        save()
        print(f"interrupted after step {state['step']}" + (f"; saved {args.save}" if args.save else ""),
              file=sys.stderr)
        return 130
    if tty and stop > start:
        print()
    save()
    sha = params_sha256(model.graph.param_data())
    samples = sample_lines(model, tokenizer, args.samples, args.temperature, args.prefix)
    if metrics:
        metrics.write(json.dumps({"params_sha256": sha, "samples": samples}) + "\n")
        metrics.close()
    return 0


class finish_step_on_ctrl_c:
    """Ctrl-C during training ends the run after the current step, so a checkpoint saved then
    holds a whole step, never a half-applied Adam update. It is truthy once Ctrl-C was pressed."""

    def __init__(self):
        self.pressed = False

    def __bool__(self):
        return self.pressed

    def _handler(self, signum, frame):
        self.pressed = True

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self._previous = None
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def sample_lines(model, tokenizer, count, temperature, prefix):
    print("--- inference (new, hallucinated names) ---")
    names = []
    for i in range(count):
        names.append(sample(model, tokenizer, temperature, prefix))
        print(f"sample {i+1:2d}: {names[-1]}")
    return names


def cmd_sample(args):
    _positive("--samples", args.samples)
    ck = checkpoint.load(args.checkpoint)
    tokenizer = Tokenizer(ck["chars"])
    check_sampling_args(args, tokenizer, ck["config"])
    model = GPT(ck["config"], new_graph(resolve(args.backend), args.graph))  # draws are overwritten below
    model.graph.set_param_data(ck["params"])
    if args.seed is None:
        random.setstate(ck["random_state"])
    else:
        random.seed(args.seed)
    sample_lines(model, tokenizer, args.samples, args.temperature, args.prefix)
    return 0
