"""The `microgpt` command: train, sample, profile, plot.

`microgpt train` prints the seed's lines (num docs, vocab size, num params, one line a step, the
samples) so its output diffs against the seed's. On a terminal the step line is one progress
line redrawn in place, with the rate, elapsed time and ETA.

Nothing is lost to a signal or a failure: SIGINT and SIGTERM end training after the current step
(a second one exits at once), a step that fails puts the model back to its state before that step,
and --save then writes that state; --save and --metrics are checked before training and written
atomically. Bad input is one line on stderr and exit code 2."""
import argparse
import json
import os
import signal
import sys
import time

from . import __version__, atomic, checkpoint, limits
from .api import DEFAULTS as TRAIN_DEFAULTS
from .api import Model, check_count, check_lr, check_prefix, check_temperature, check_threads
from .atomic import AtomicFile, OutputPathError, check_outputs
from .backend import CHOICES, BackendError
from .checkpoint import CheckpointError
from .data import DataError
from .guard import TrainingFailed
from .model import ConfigError
from .modes import MODE_NAMES, mode_help
from .optim import learning_rate
from .plot import PlotError
from .tokenizer import VocabularyError

USER_ERRORS = (DataError, ConfigError, CheckpointError, VocabularyError, BackendError, OutputPathError,
               PlotError, ValueError)

# train's defaults live in api.DEFAULTS: a flag left at None was not given (see resume_settings)
# flags a checkpoint fixes: on --resume, giving one with another value is an error
RUN_FLAGS = {"seed": "seed", "lr": "lr", "steps": "num_steps"}
CONFIG_FLAGS = ("n_layer", "n_embd", "n_head", "block_size")

EXIT_USAGE, EXIT_PIPE = 2, 128 + 13
STDOUT_CLOSED = "stdout closed"


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (usage is in --help)."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"microgpt: error: {message} (see {self.prog} --help)\n")


def note(message):
    print(f"microgpt: note: {message}", file=sys.stderr)


def add_backend_flags(p):
    p.add_argument("--backend", choices=CHOICES, default=None,
                   help="python, c, or auto (default: $MICROGPT_BACKEND, else auto)")
    p.add_argument("--graph", choices=("auto",) + MODE_NAMES, default="auto", help=mode_help())


def build_parser():
    from .modes import RUNG_NAMES, SEED_SCRIPT_RUNG   # (profile.py imports what only profiling needs)
    D = TRAIN_DEFAULTS
    parser = Parser(prog="microgpt", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    t = sub.add_parser("train", help="train on a names file, then sample")
    t.add_argument("--data", type=path_arg, help="UTF-8 text, one document a line (default: the embedded names list)")
    t.add_argument("--steps", type=int, help=f"steps in the schedule; 0: sample only (default: {D['steps']})")
    t.add_argument("--seed", type=int, help=f"seeds the shuffle, the parameters, the sampling (default: {D['seed']})")
    t.add_argument("--n-layer", type=int, help=f"transformer layers (default: {D['n_layer']})")
    t.add_argument("--n-embd", type=int, help=f"embedding width (default: {D['n_embd']})")
    t.add_argument("--n-head", type=int, help=f"attention heads, must divide --n-embd (default: {D['n_head']})")
    t.add_argument("--block-size", type=int, help=f"longest context in tokens (default: {D['block_size']})")
    t.add_argument("--lr", type=float, help=f"Adam's learning rate, decayed linearly to 0 (default: {D['lr']})")
    t.add_argument("--threads", type=int, help="threads a large model's step is split over (its layers' rows, "
                                               "positions, Adam's parameters); the same "
                                               "bits for any number (default: the CPUs available)")
    add_sampling_flags(t)
    add_backend_flags(t)
    t.add_argument("--save", metavar="CKPT", type=path_arg,
                   help="write a checkpoint at the end, or after the current step on Ctrl-C, SIGTERM or a failed step")
    t.add_argument("--resume", metavar="CKPT", type=path_arg,
                   help="continue the run a checkpoint holds (its config, data, seed, lr and schedule)")
    t.add_argument("--stop-after", type=int, metavar="N",
                   help="train at most N steps in this run (the schedule still spans --steps)")
    t.add_argument("--metrics", metavar="FILE", type=path_arg,
                   help="write JSON Lines: step, loss, lr, elapsed per step; then params_sha256, samples")
    add_memory_flag(t)

    s = sub.add_parser("sample", help="sample names from a checkpoint")
    s.add_argument("checkpoint", type=path_arg)
    add_sampling_flags(s)
    s.add_argument("--seed", type=int, default=None,
                   help="seed for sampling (default: continue the checkpoint's random state)")
    add_backend_flags(s)
    add_memory_flag(s)

    names = (SEED_SCRIPT_RUNG,) + RUNG_NAMES
    p = sub.add_parser("profile", help="time every rung, from the seed's algorithm to native kernels")
    p.add_argument("--steps", type=int, default=5, help="training steps per rung (default: 5)")
    p.add_argument("--rounds", type=int, default=5,
                   help="timed rounds per rung after the warm-up; the table shows their median and spread (default: 5)")
    p.add_argument("--data", type=path_arg, help="data file (default: the embedded names list)")
    p.add_argument("--json", metavar="FILE", type=path_arg, help="write the numbers as JSON")
    p.add_argument("--plot", metavar="FILE.png", type=path_arg, help="draw a bar chart (needs matplotlib)")
    p.add_argument("--rungs", help=f"comma-separated subset of the rungs {', '.join(names)} (default: all)")
    p.add_argument("--seed-script", metavar="PATH", type=path_arg,
                   help="the seed's microgpt.py (Karpathy's, as published) to time as the first rung")

    pl = sub.add_parser("plot", help="draw the loss curve of a --metrics file (needs matplotlib)")
    pl.add_argument("metrics", metavar="METRICS.jsonl", type=path_arg)
    pl.add_argument("out", metavar="OUT.png", type=path_arg)
    return parser


def add_sampling_flags(p):
    D = TRAIN_DEFAULTS
    p.add_argument("--temperature", type=float, help=f"sampling temperature, > 0 (default: {D['temperature']})")
    p.add_argument("--samples", type=int, help=f"names to sample (default: {D['samples']})")
    p.add_argument("--prefix", default="", help="start every sample with these letters (default: none)")


def path_arg(text):
    """A file's path: an empty one is an error, not the default (a checkpoint left out of
    `--resume "$CKPT"` must not start a new run over it)."""
    if not text:
        raise argparse.ArgumentTypeError("the path is empty")
    return text


def add_memory_flag(p):
    p.add_argument("--max-memory", metavar="SIZE", type=memory_size,
                   help="refuse a model whose estimated memory exceeds SIZE, e.g. 2G (default: the "
                        "available memory, MemAvailable)")


def memory_size(text):
    try:
        return limits.parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class Terminated(BaseException):
    """SIGTERM or SIGHUP outside training: the command ends as on Ctrl-C, its files cleaned up
    (a scratch folder removed, a child process stopped, what --metrics holds so far written)."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


# the signals that end a command (SIGINT is Python's KeyboardInterrupt already)
TERMINATING = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def _terminated(signum, frame):
    raise Terminated(signum)


def main(argv=None):
    previous = {}
    try:
        for sig in TERMINATING:
            if signal.getsignal(sig) is not signal.SIG_IGN:   # ignored (nohup): it stays ignored
                previous[sig] = signal.signal(sig, _terminated)
    except ValueError:  # not the main thread: leave the signals alone
        pass
    try:
        return run_command(argv)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_command(argv):
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return cmd_train(args)
        if args.command == "sample":
            return cmd_sample(args)
        if args.command == "plot":
            return cmd_plot(args)
        from .profile import cmd_profile
        return cmd_profile(args)
    except KeyboardInterrupt:  # Ctrl-C outside training (loading, sampling): nothing to save
        print("\nmicrogpt: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except Terminated as t:
        print(f"\nmicrogpt: interrupted ({signal.Signals(t.signum).name})", file=sys.stderr)
        return 128 + t.signum
    except BrokenPipeError:  # the reader went away (| head): leave quietly
        silence_stdout()
        return EXIT_PIPE
    except (*USER_ERRORS, MemoryError, OSError) as e:
        print(f"microgpt: error: {error_text(e)}", file=sys.stderr)
        return EXIT_USAGE


def error_text(e):
    """One line for a user's error (USER_ERRORS, MemoryError, OSError), else None (a bug)."""
    if isinstance(e, MemoryError):
        text = f"out of memory{': ' + str(e) if str(e) else ''}"
    elif isinstance(e, OSError) and not isinstance(e, USER_ERRORS):
        what = e.strerror or str(e) or type(e).__name__
        text = f"{e.filename}: {what}" if e.filename else what
    elif isinstance(e, USER_ERRORS):
        text = str(e)
    else:
        return None
    return one_line(text)


def one_line(text):
    """A message as one line: a path may hold a line break (shown as \\n)."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def silence_stdout():
    """Point stdout at /dev/null, so that the interpreter's last flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


# --- checking flags (the rules are the API's: api.check_*)

def check_sampling_args(args, tokenizer, config):
    """Refuse bad sampling flags before training, not after it."""
    check_temperature(args.temperature, "--temperature")
    check_prefix(args.prefix, tokenizer, config, "--prefix")


def resume_settings(args, ck):
    """seed, lr, num_steps, config of a resumed run: the checkpoint's. A flag given with another
    value is an error naming it: the checkpoint's run would silently become another run."""
    for flag, key in RUN_FLAGS.items():
        given = getattr(args, flag)
        if given is not None and given != ck[key]:
            hint = ("a longer or shorter schedule changes every step's learning rate; --stop-after N "
                    "trains fewer steps in this run" if flag == "steps" else
                    "start a new run (without --resume) to change it")
            raise ValueError(f"--{flag} {given} conflicts with the checkpoint's {key} {ck[key]}: {hint}")
    for flag in CONFIG_FLAGS:
        given = getattr(args, flag)
        if given is not None and given != getattr(ck["config"], flag):
            raise ValueError(f"--{flag.replace('_', '-')} {given} conflicts with the checkpoint's "
                             f"{flag} {getattr(ck['config'], flag)}: a model cannot change shape mid-run")
    return ck["seed"], ck["lr"], ck["num_steps"]


def fill_defaults(args, names):
    for name in names:
        if getattr(args, name) is None:
            setattr(args, name, TRAIN_DEFAULTS[name])


# --- train

def cmd_train(args):
    for name in ("steps", "stop_after", "samples"):
        if getattr(args, name) is not None:
            check_count("--" + name.replace("_", "-"), getattr(args, name))
    for name in CONFIG_FLAGS:  # positivity is Config's to check
        value = getattr(args, name)
        if value is not None and value > limits.MAX_DIMENSION:
            raise ValueError(f"--{name.replace('_', '-')} {value} is too large: at most {limits.MAX_DIMENSION}")
    if args.lr is not None:
        check_lr(args.lr, "--lr")
    fill_defaults(args, ("temperature", "samples"))
    check_temperature(args.temperature, "--temperature")
    check_outputs({"--save": args.save, "--metrics": args.metrics}, {"--data": args.data, "--resume": args.resume},
                  may_share={("--save", "--resume")})   # a run going on where it left off
    build = dict(backend=args.backend, graph=args.graph, max_memory=args.max_memory, saving=bool(args.save),
                 threads=check_threads(args.threads, "--threads"))
    if args.resume:
        ck = checkpoint.load(args.resume)
        resume_settings(args, ck)
        if args.data is None:   # the run reads the data file the checkpoint names
            check_outputs({"--save": args.save, "--metrics": args.metrics},
                          {"the checkpoint's data file": ck["data"]["source"]})
        model = Model.from_checkpoint(ck, **build)
        try:
            model.load_data(args.data, note)
        except CheckpointError:
            raise CheckpointError(f"checkpoint {args.resume} was trained on other data than "
                                  f"{args.data or ck['data']['source'] or 'the default'}") from None
        del ck  # its numbers are the arena's now: not held through the run (19 MB at d128)
    else:
        fill_defaults(args, ("steps", "seed", "lr") + CONFIG_FLAGS)
        model = Model.new(args.data, steps=args.steps, seed=args.seed, n_layer=args.n_layer, n_embd=args.n_embd,
                          n_head=args.n_head, block_size=args.block_size, lr=args.lr, note=note, **build)
    print(f"num docs: {len(model.docs)}")
    print(f"vocab size: {model.tokenizer.vocab_size}")
    check_sampling_args(args, model.tokenizer, model.config)
    print(f"num params: {model.num_params}")

    start, num_steps = model.step, model.num_steps
    stop = num_steps if args.stop_after is None else min(num_steps, start + args.stop_after)
    metrics = AtomicFile(args.metrics) if args.metrics else None
    progress = Progress(num_steps, start, stop)

    def on_step(step, loss):
        if metrics:
            metrics.write(json.dumps({"step": step + 1, "loss": loss, "lr": learning_rate(model.lr, step, num_steps),
                                      "elapsed": round(progress.elapsed(), 6)}) + "\n")
        if stops.reason != STDOUT_CLOSED:  # after a signal too: the step ran, its line is printed
            try:
                progress.show(step + 1, loss)
            except BrokenPipeError:  # nobody reads any more: stop as on a signal, save, leave quietly
                silence_stdout()
                stops.reason = STDOUT_CLOSED

    def save():
        if args.save:
            model.save(args.save)
            return f"; saved {args.save} (step {model.step})"
        return "; nothing saved (no --save)"

    try:
        with StopAfterStep() as stops:
            try:
                model.train(stop - start, on_step=on_step, should_stop=lambda: stops.reason)
            except TrainingFailed as failed:
                progress.end()
                print(one_line(f"microgpt: error: {failed}{save()}"), file=sys.stderr)
                return EXIT_USAGE
            except Exception as e:  # --metrics could not be written, say: the steps done are kept
                progress.end()
                try:
                    saved = save()
                except Exception as failed_save:
                    saved = f"; nothing saved: {error_text(failed_save) or failed_save}"
                if error_text(e) is None:
                    raise
                print(one_line(f"microgpt: error: {error_text(e)}{saved}"), file=sys.stderr)
                return EXIT_USAGE
            if stops.reason == STDOUT_CLOSED:
                saved = save()
                if args.save:
                    note(f"stdout was closed after step {model.step}{saved}")
                return EXIT_PIPE
            progress.end()
            if stops.reason:
                print(one_line(f"microgpt: {stops.reason} after step {model.step}{save()}"), file=sys.stderr)
                return 128 + stops.signum
            saved = save()
            if stops.reason:  # a signal while the checkpoint was written: it is whole, and the run ends
                print(one_line(f"microgpt: {stops.reason} after step {model.step}{saved}"), file=sys.stderr)
                return 128 + stops.signum
        sha = model.params_sha256()
        samples = sample_lines(model, args.samples, args.temperature, args.prefix)
        if metrics:
            metrics.write(json.dumps({"params_sha256": sha, "samples": samples}) + "\n")
        return 0
    finally:
        if metrics:
            metrics.commit()  # whatever steps ran: a run that stopped early still has its record


class Progress:
    """The step lines: in a pipe every one, exactly as the seed prints them (runs diff against
    the seed's output); on a terminal one line redrawn at most ten times a second, with the
    rate, elapsed time and ETA (the c backend makes thousands of steps a second)."""

    def __init__(self, num_steps, start, stop):
        self.num_steps, self.start, self.stop = num_steps, start, stop
        self.tty = sys.stdout.isatty()
        self.t0 = time.monotonic()
        self.shown = 0.0
        self.drawn = False

    def elapsed(self):
        return time.monotonic() - self.t0

    def show(self, step, loss):
        line = f"step {step:4d} / {self.num_steps:4d} | loss {loss:.4f}"
        if not self.tty:
            sys.stdout.write(line + "\n")   # print's bytes; 0.5 us a step instead of 1.2
            return
        now = time.monotonic()
        if now - self.shown < 0.1 and step != self.stop:
            return
        elapsed = now - self.t0
        rate = (step - self.start) / elapsed if elapsed > 0 else 0.0
        eta = (self.stop - step) / rate if rate > 0 else 0.0
        print(f"\r{line} | {rate:,.1f} steps/s | elapsed {clock(elapsed)} | ETA {clock(eta)}\033[K",
              end="", flush=True)
        self.shown, self.drawn = now, True

    def end(self):
        """End the redrawn line, so what follows starts on a line of its own."""
        if self.drawn:
            print()
            self.drawn = False


def clock(seconds):
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


class StopAfterStep:
    """SIGINT (Ctrl-C), SIGTERM (kill, docker stop, schedulers) and SIGHUP (a closed terminal)
    during training end the run after the current step, so a checkpoint saved then holds whole
    steps, never half an Adam update. A second signal exits at once, saving nothing. `reason`
    says why training stopped."""

    SIGNALS = (signal.SIGINT,) + TERMINATING

    def __init__(self):
        self.reason, self.signum = None, None
        self._previous = {}

    def _handler(self, signum, frame):
        if self.signum is not None:
            os.write(2, f"\nmicrogpt: {signal.Signals(signum).name} again: exiting at once, nothing saved\n".encode())
            atomic.discard_pending()
            os._exit(128 + signum)
        self.signum = signum
        self.reason = f"interrupted ({signal.Signals(signum).name})"

    def __enter__(self):
        try:
            for sig in self.SIGNALS:
                if signal.getsignal(sig) is not signal.SIG_IGN:   # ignored (nohup): it stays ignored
                    self._previous[sig] = signal.signal(sig, self._handler)
        except ValueError:  # not the main thread: leave the signals alone
            pass
        return self

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


def sample_lines(model, count, temperature, prefix):
    print("--- inference (new, hallucinated names) ---")
    return model.sample(count, temperature, prefix, on_sample=lambda i, name: print(f"sample {i+1:2d}: {name}"))


# --- sample, plot

def cmd_sample(args):
    if args.samples is not None:
        check_count("--samples", args.samples)
    fill_defaults(args, ("temperature", "samples"))
    check_temperature(args.temperature, "--temperature")
    model = Model.from_checkpoint(checkpoint.load(args.checkpoint), backend=args.backend, graph=args.graph,
                                  max_memory=args.max_memory)
    check_sampling_args(args, model.tokenizer, model.config)
    if args.seed is not None:
        model.reseed(args.seed)
    sample_lines(model, args.samples, args.temperature, args.prefix)
    return 0


def cmd_plot(args):
    from .plot import plot_losses, require_matplotlib
    require_matplotlib("microgpt plot")
    check_outputs({"OUT.png": args.out}, {"METRICS.jsonl": args.metrics})
    n = plot_losses(args.metrics, args.out)
    print(f"loss curve of {n} steps written to {args.out}")
    return 0
