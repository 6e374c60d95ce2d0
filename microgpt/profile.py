"""`microgpt profile`: the same training steps on every rung, from the seed's algorithm to native
kernels, with where each rung's time goes and a check that every rung computes the same bits.

A rung is a way of building and differentiating the graph. Each one runs the seed's setup
(random.seed, shuffle, parameter draws) and the same N steps, timed in three phases: forward
(building the graph), backward, Adam. Time in the cyclic garbage collector is measured with
gc.callbacks; nodes per step are the scalar nodes the forward creates.
"""
import gc
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

from .backend import c_status
from .data import default_docs, load_docs
from .model import GPT, Config
from .modes import RUNGS, new_graph
from .optim import LEARNING_RATE
from .parity import PRINTED_DECIMALS, parse_seed_output, printed_loss
from .tokenizer import Tokenizer
from .train import params_sha256, step_loss, train, train_step


SEED_SCRIPT_RUNG = "seed-script"


class SeedScriptError(ValueError):
    """The seed's script, run as the first rung, did not finish."""


@dataclass
class Result:
    rung: str
    what: str
    steps: int
    ms_step: float = 0.0
    speedup: float = 1.0
    ms_forward: float = 0.0
    ms_backward: float = 0.0
    ms_adam: float = 0.0
    nodes_step: float = 0.0
    ns_node: float = 0.0
    calls_step: float | None = None
    gc_share: float = 0.0
    gc_paused: bool = False
    losses: list = field(default_factory=list)
    params_sha256: str = ""


class GCTimer:
    """Seconds spent inside cyclic garbage collections while installed."""

    def __init__(self):
        self.seconds, self._start = 0.0, None

    def __call__(self, phase, info):
        if phase == "start":
            self._start = time.perf_counter()
        elif self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self._start = None

    def __enter__(self):
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc):
        gc.callbacks.remove(self)


def count_python_nodes(model, tokens):
    """Values one forward creates (counted by wrapping Value.__init__ for one untimed pass)."""
    from .engine import Value
    created = [0]
    original = Value.__init__

    def counting_init(self, *args):
        created[0] += 1
        original(self, *args)

    Value.__init__ = counting_init
    try:
        step_loss(model, tokens)
    finally:
        Value.__init__ = original
    return created[0]


class PhaseTimer:
    """train_step's timer: seconds per phase, summed over steps."""

    def __init__(self):
        self.seconds = {"forward": 0.0, "backward": 0.0, "adam": 0.0}
        self.last = None

    def start(self):
        self.last = time.perf_counter()

    def __call__(self, phase):
        now = time.perf_counter()
        self.seconds[phase] += now - self.last
        self.last = now


def run_steps(model, token_lists, rung, result=None):
    """The training steps, each timed by phase into result (None: untimed). Returns the phase
    timer and the nodes the steps made (c graphs; python counts them separately)."""
    graph, timer, nodes = model.graph, PhaseTimer(), 0
    for step, tokens in enumerate(token_lists):
        timer.start()
        loss = train_step(model, tokens, step, len(token_lists), pause_gc=rung.gc_paused, timer=timer)
        if graph.node_count() is not None:
            nodes += graph.node_count() - model.num_params
        if result is not None:
            result.losses.append(loss)
    return timer, nodes


def run_rung(rung, docs, steps):
    """The seed's setup and `steps` training steps, run once untimed (a warm-up: caches, the
    allocator, and the programs a replay graph records), then again from the same parameters
    and Adam moments, timed. A training run has the warm state for all but its first steps."""
    random.seed(42)
    docs = list(docs)
    random.shuffle(docs)
    tokenizer = Tokenizer.from_docs(docs)
    model = GPT(Config(vocab_size=tokenizer.vocab_size), new_graph(rung.backend, rung.mode))
    graph = model.graph
    token_lists = [tokenizer.document(docs[step % len(docs)]) for step in range(steps)]
    initial_params, initial_moments = graph.param_data(), graph.adam_state()
    run_steps(model, token_lists, rung)
    graph.set_param_data(initial_params)
    graph.set_adam_state(*initial_moments)

    result = Result(rung.name, rung.what, steps, gc_paused=rung.gc_paused)
    calls_start = graph.c_calls()
    gc.collect()
    with GCTimer() as gc_timer:
        timer, nodes = run_steps(model, token_lists, rung, result)
    forward, backward, adam = (timer.seconds[phase] for phase in ("forward", "backward", "adam"))
    if calls_start is not None:
        result.calls_step = (graph.c_calls() - calls_start) / steps
    if graph.node_count() is None:
        for tokens in token_lists:  # an untimed pass to count nodes
            nodes += count_python_nodes(model, tokens)
    total = forward + backward + adam
    result.ms_step = total / steps * 1e3
    result.ms_forward, result.ms_backward, result.ms_adam = (x / steps * 1e3 for x in (forward, backward, adam))
    result.nodes_step = nodes / steps
    result.ns_node = total / nodes * 1e9 if nodes else 0.0
    result.gc_share = gc_timer.seconds / total if total else 0.0
    result.params_sha256 = params_sha256(graph.param_data())
    return result


def find_seed_script(path=None):
    """The seed's own script: --seed-script (Karpathy's microgpt.py as published, or the
    development reference), else ../shared/reference/seed_microgpt.py beside the current
    directory or the source tree, where a development checkout of this project has it."""
    if path:
        return path
    here = os.path.dirname(os.path.abspath(__file__))
    for base in (os.getcwd(), os.path.dirname(here)):
        candidate = os.path.join(base, "..", "shared", "reference", "seed_microgpt.py")
        if os.path.exists(candidate):
            return os.path.normpath(candidate)
    return None


@dataclass
class SeedScriptRun:
    """The seed's script as a rung: its timing, and what it printed to compare with."""
    result: Result
    schedule: int  # the steps its learning-rate schedule spans (the published script: always 1000)
    printed: list  # its losses as printed, 4 decimals
    full_precision: bool  # the reference's --full: each loss's repr and the parameters' sha256 too


def run_seed_script(script, data_path, steps):
    """Time the seed's script (GC on, as published) over its first `steps` training steps.

    It runs in a scratch folder with the data copied to input.txt, where the script as published
    reads it (it downloads names.txt only when input.txt is absent), and is also given the
    development reference's arguments (data, steps, --full), which the published script ignores:
    it always runs its own 1000-step schedule and prints each loss with 4 decimals, ending the
    line with a carriage return. Output is read unbuffered and each step line stamped as it
    arrives; a step's time is the gap between consecutive lines (no start-up, no sampling). The
    script is stopped after `steps` lines when its schedule is longer."""
    script = os.path.abspath(script)
    with tempfile.TemporaryDirectory() as scratch:
        shutil.copyfile(data_path, os.path.join(scratch, "input.txt"))
        proc = subprocess.Popen([sys.executable, "-u", script, "input.txt", str(steps), "--full"], cwd=scratch,
                                stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        stamps, lines, pending, stopped, schedule = [], [], b"", False, None
        try:
            while chunk := os.read(proc.stdout.fileno(), 65536):
                *complete, pending = re.split(rb"[\r\n]", pending + chunk)
                for line in complete:
                    lines.append(line.decode("utf-8", "replace"))
                    if line.startswith(b"step"):
                        stamps.append(time.perf_counter())
                        schedule = schedule or parse_seed_output(lines[-1]).total_steps.get(1)
                if len(stamps) >= steps and schedule != steps:
                    stopped = True  # its schedule is longer than the steps asked for: enough read
                    break
        except BaseException:
            proc.kill()
            raise
        finally:
            if stopped:
                proc.kill()
            code = proc.wait()
            proc.stdout.close()
    if code != 0 and not stopped:
        raise SeedScriptError(f"the seed's script {script} failed (exit code {code})")
    lines.append(pending.decode("utf-8", "replace"))
    out = parse_seed_output("\n".join(lines))
    printed = [out.printed.get(k) for k in range(1, steps + 1)]
    if None in printed:
        raise SeedScriptError(f"{script} did not print what the seed's script prints: {len(out.printed)} of the "
                              f"{steps} step lines (`step N / M | loss X`) asked for (as published it runs 1000 steps)")
    schedule = out.total_steps[1]
    full = schedule == steps and out.full_precision and out.params_sha256 is not None
    result = Result(SEED_SCRIPT_RUNG, f"the seed's own script, as published ({os.path.basename(script)}, cyclic GC on)",
                    steps)
    if len(stamps) > 1:
        result.ms_step = (stamps[steps - 1] - stamps[0]) / (steps - 1) * 1e3
    if full:
        result.losses = [out.full[k] for k in range(1, steps + 1)]
        result.params_sha256 = out.params_sha256
    else:
        result.losses = [float(x) for x in printed]
    return SeedScriptRun(result, schedule, printed, full)


def seed_schedule_losses(docs, steps, schedule):
    """This package's losses for steps 1..steps of a `schedule`-step run (the seed's setup, the
    fastest backend), to compare with a seed script whose schedule differs from the rungs'."""
    random.seed(42)
    docs = list(docs)
    random.shuffle(docs)
    tokenizer = Tokenizer.from_docs(docs)
    model = GPT(Config(vocab_size=tokenizer.vocab_size), new_graph("c" if c_status()[0] else "python"))
    losses = []
    train(model, tokenizer, docs, schedule, LEARNING_RATE, stop=steps, on_step=lambda step, loss: losses.append(loss))
    return losses


def check_seed_script(seed, docs, steps, rung_results):
    """(agrees, the line that says so) for a seed script whose losses are compared at the 4
    decimals it prints; the reference's --full output is compared bit for bit with the rungs."""
    if seed.schedule == steps and rung_results:
        ours = rung_results[0].losses
    else:
        ours = seed_schedule_losses(docs, steps, seed.schedule)
    ours = [printed_loss(x) for x in ours]
    where = f"steps 1-{steps} of its {seed.schedule}-step schedule"
    if ours == seed.printed:
        return True, (f"seed-script: its {steps} losses equal this package's at the {PRINTED_DECIMALS} decimals it "
                      f"prints ({where}; it prints no parameter hash, so only the losses were compared)")
    step = next(i for i, (a, b) in enumerate(zip(ours, seed.printed), 1) if a != b)
    return False, (f"seed-script: DIFFERENT at step {step} ({where}): it printed {seed.printed[step - 1]}, this "
                   f"package gives {ours[step - 1]} at {PRINTED_DECIMALS} decimals")


def rungs_agree(results):
    """Every rung computed the same losses and parameters as the first, bit for bit."""
    first = results[0]
    return all(r.losses == first.losses and r.params_sha256 == first.params_sha256 for r in results)


def format_table(results):
    header = ["rung", "ms/step", "speedup", "forward", "backward", "adam", "nodes/step", "ns/node",
              "C calls/step", "GC share"]
    dash = lambda x, f: f.format(x) if x else "-"  # noqa: E731 (the seed's script reports no breakdown)
    rows = [[r.rung, f"{r.ms_step:.3f}", f"{r.speedup:.1f}x", dash(r.ms_forward, "{:.3f}"),
             dash(r.ms_backward, "{:.3f}"), dash(r.ms_adam, "{:.3f}"), dash(r.nodes_step, "{:,.0f}"),
             dash(r.ns_node, "{:.1f}"),
             "-" if r.calls_step is None else f"{r.calls_step:,.0f}",
             f"{100 * r.gc_share:.0f}%" if r.ms_forward else "-"] for r in results]
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    fmt = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))  # noqa: E731
    lines = [fmt(header), "  ".join("-" * w for w in widths)] + [fmt(row) for row in rows]
    lines.append("")
    lines += [f"{r.rung:12s} {r.what}" for r in results]
    return "\n".join(lines)


def plot(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("microgpt: --plot needs matplotlib: pip install 'microgpt-exact[plot]' (or pip install matplotlib)",
              file=sys.stderr)
        return False
    names = [r.rung for r in results]
    fig, ax = plt.subplots(figsize=(8, 4))
    bottom = [0.0] * len(results)
    for label, key in (("forward", "ms_forward"), ("backward", "ms_backward"), ("adam", "ms_adam")):
        heights = [getattr(r, key) for r in results]
        ax.bar(names, heights, bottom=bottom, label=label)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_yscale("log")
    ax.set_ylabel("ms per training step (log scale)")
    ax.set_title("microgpt: one training step on each rung")
    for i, r in enumerate(results):
        ax.annotate(f"{r.speedup:.0f}x", (i, r.ms_step), ha="center", va="bottom", fontsize=8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def cmd_profile(args):
    if args.steps < 2:
        raise ValueError(f"--steps must be at least 2, got {args.steps}")
    names = [SEED_SCRIPT_RUNG] + [r.name for r in RUNGS]
    wanted = args.rungs.split(",") if args.rungs else names
    unknown = set(wanted) - set(names)
    if unknown:
        raise ValueError(f"unknown rung(s) {', '.join(sorted(unknown))}: choose from {', '.join(names)}")
    script = find_seed_script(args.seed_script)
    if args.seed_script and not os.path.isfile(args.seed_script):
        raise ValueError(f"--seed-script {args.seed_script}: no such file")
    if SEED_SCRIPT_RUNG in wanted and not script:
        if args.rungs:
            raise ValueError("rung seed-script: the seed's script was not found; give --seed-script PATH")
        print("microgpt: note: the seed's script was not found; give --seed-script PATH (Karpathy's microgpt.py "
              "as published) to time it as the first rung", file=sys.stderr)
    docs = load_docs(args.data) if args.data else default_docs()
    rungs = [r for r in RUNGS if r.name in wanted]
    c_ok, why = c_status()
    if not c_ok:
        print(f"microgpt: note: skipping the c rungs: {why}", file=sys.stderr)
        rungs = [r for r in rungs if r.backend != "c"]
    if not rungs and not (script and SEED_SCRIPT_RUNG in wanted):
        raise ValueError("no rung left to run")
    results, seed = [], None
    if script and SEED_SCRIPT_RUNG in wanted:
        print(f"running the seed's script {script} ({args.steps} steps)...",
              file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            data_path = args.data or os.path.join(tmp, "docs.txt")
            if not args.data:
                with open(data_path, "w") as f:
                    f.write("\n".join(docs) + "\n")
            seed = run_seed_script(script, data_path, args.steps)
            results.append(seed.result)
    for rung in rungs:
        print(f"running {rung.name} ({args.steps} steps)...", file=sys.stderr, flush=True)
        results.append(run_rung(rung, docs, args.steps))
    for r in results:
        r.speedup = results[0].ms_step / r.ms_step
    print(f"{args.steps} training steps per rung, {len(docs)} documents; times are ms per step, timed after "
          f"an untimed pass over the same steps (the seed's script: the gaps between its step lines)")
    print(format_table(results))
    # the seed's script as published prints 4 decimals: it is compared at those, the rest bit for bit
    compared = results if seed is None or seed.full_precision else results[1:]
    same = rungs_agree(compared) if compared else True
    print()
    if compared and same:
        print(f"bit-identical: yes, all {len(compared)} rungs give the same {args.steps} losses and "
              f"parameters (sha256 {compared[0].params_sha256[:16]}...)")
    elif compared:
        for r in compared:
            print(f"  {r.rung}: losses {r.losses[:3]}... params {r.params_sha256[:16]}")
        print("bit-identical: NO, the rungs above disagree")
    if seed is not None and not seed.full_precision:
        seed_same, seed_line = check_seed_script(seed, docs, args.steps, compared)
        same = same and seed_same
        print(seed_line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"steps": args.steps, "documents": len(docs), "bit_identical": same,
                       "seed_script_compared_at": None if seed is None else
                       "full precision" if seed.full_precision else f"{PRINTED_DECIMALS} decimals",
                       "rungs": [asdict(r) for r in results]}, f, indent=1)
    if args.plot and plot(results, args.plot):
        print(f"plot written to {args.plot}")
    return 0 if same else 1
