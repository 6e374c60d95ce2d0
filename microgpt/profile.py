"""`microgpt profile`: the same training steps on every rung, from the seed's algorithm to native
kernels, with where each rung's time goes and a check that every rung computes the same bits.

A rung is a way of building and differentiating the graph. Each one runs the seed's setup
(random.seed, shuffle, parameter draws) and the same N steps: once untimed (a warm-up), then in
`rounds` timed rounds, each from the same initial parameters and Adam moments, timed in three
phases: forward (building the graph), backward, Adam. The table reports each figure's median over
the rounds and the spread of the rounds' totals; every round (and the warm-up) must give the same
bits. Time in the cyclic garbage collector is measured with gc.callbacks; nodes per step are the
scalar nodes the forward creates.
"""
import gc
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

from . import atomic
from .backend import c_status
from .data import default_docs, load_docs
from .model import GPT, Config
from .modes import RUNGS, SEED_SCRIPT_RUNG, new_graph
from .optim import LEARNING_RATE
from .parity import PRINTED_DECIMALS, parse_seed_output, printed_loss
from .plot import require_matplotlib
from .tokenizer import Tokenizer
from .training import params_sha256, step_loss, train, train_step


DEFAULT_ROUNDS = 5
# a profile keeps every step's tokens and losses for each rung: bounds that keep it a measurement
MAX_STEPS, MAX_ROUNDS = 100_000, 1_000
SPREAD_LIMIT = 0.10  # a rung whose rounds' totals spread more than this share of their median is marked
SPREAD_MARK = "!"
PHASES = ("forward", "backward", "adam")
clock = time.perf_counter  # the phase and GC timers' clock (a test swaps it for a deterministic one)


class SeedScriptError(ValueError):
    """The seed's script, run as the first rung, did not finish."""


@dataclass
class Round:
    """One timed pass over a rung's steps."""
    ms_step: float
    ms_forward: float
    ms_backward: float
    ms_adam: float
    gc_share: float
    params_sha256: str
    same_losses: bool = True  # its losses equal the first round's, bit for bit


@dataclass
class Result:
    rung: str
    what: str
    steps: int
    ms_step: float = 0.0  # the median over the rounds (the seed's script: its one run)
    spread: float | None = None  # (slowest round - fastest) / median; None: timed once
    speedup: float = 1.0
    ms_forward: float = 0.0
    ms_backward: float = 0.0
    ms_adam: float = 0.0
    nodes_step: float = 0.0
    ns_node: float = 0.0
    calls_step: float | None = None
    gc_share: float = 0.0
    gc_paused: bool = False
    losses: list = field(default_factory=list)  # the first timed round's
    params_sha256: str = ""  # after the first timed round
    warmup_same: bool = True  # the untimed warm-up gave the first round's losses and parameters
    rounds: list = field(default_factory=list)

    def rounds_differ(self):
        """The first pass that did not give the first round's bits ("the warm-up", "round 3"), or None."""
        if not self.warmup_same:
            return "the warm-up"
        first = self.rounds[0].params_sha256 if self.rounds else None
        return next((f"round {i}" for i, r in enumerate(self.rounds, 1)
                     if not r.same_losses or r.params_sha256 != first), None)

    def spread_is_large(self):
        return self.spread is not None and self.spread > SPREAD_LIMIT


class GCTimer:
    """Seconds spent inside cyclic garbage collections while installed."""

    def __init__(self):
        self.seconds, self._start = 0.0, None

    def __call__(self, phase, info):
        if phase == "start":
            self._start = clock()
        elif self._start is not None:
            self.seconds += clock() - self._start
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
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.last = None

    def start(self):
        self.last = clock()

    def __call__(self, phase):
        now = clock()
        self.seconds[phase] += now - self.last
        self.last = now


def run_steps(model, token_lists, rung):
    """The training steps, each timed by phase. Returns the phase timer, the losses, and the nodes
    the steps made (c graphs; python counts them separately)."""
    graph, timer, nodes, losses = model.graph, PhaseTimer(), 0, []
    for step, tokens in enumerate(token_lists):
        timer.start()
        losses.append(train_step(model, tokens, step, len(token_lists), pause_gc=rung.gc_paused, timer=timer))
        if graph.node_count() is not None:
            nodes += graph.node_count() - model.num_params
    return timer, losses, nodes


def run_rung(rung, docs, steps, rounds=DEFAULT_ROUNDS):
    """The seed's setup and `steps` training steps, run once untimed (a warm-up: caches, the
    allocator, and the programs a replay graph records), then `rounds` times from the same
    parameters and Adam moments, timed. A training run has the warm state for all but its first
    steps. Every pass must give the first timed round's losses and parameters, bit for bit."""
    if rounds < 1:
        raise ValueError(f"--rounds must be a whole number of at least 1, got {rounds}")
    random.seed(42)
    docs = list(docs)
    random.shuffle(docs)
    tokenizer = Tokenizer.from_docs(docs)
    model = GPT(Config(vocab_size=tokenizer.vocab_size), new_graph(rung.backend, rung.mode))
    graph = model.graph
    token_lists = [tokenizer.document(docs[step % len(docs)]) for step in range(steps)]
    initial_params, initial_moments = graph.param_data(), graph.adam_state()
    _, warmup_losses, _ = run_steps(model, token_lists, rung)
    warmup_sha = params_sha256(graph.param_chunks())

    result = Result(rung.name, rung.what, steps, gc_paused=rung.gc_paused)
    for _ in range(rounds):
        graph.set_param_data(initial_params)
        graph.set_adam_state(*initial_moments)
        calls_start = graph.c_calls()
        gc.collect()
        with GCTimer() as gc_timer:
            timer, losses, nodes = run_steps(model, token_lists, rung)
        forward, backward, adam = (timer.seconds[phase] for phase in PHASES)
        total = forward + backward + adam
        sha = params_sha256(graph.param_chunks())
        if not result.rounds:
            result.losses, result.params_sha256, first_nodes = losses, sha, nodes
            if calls_start is not None:
                result.calls_step = (graph.c_calls() - calls_start) / steps
        result.rounds.append(Round(total / steps * 1e3, forward / steps * 1e3, backward / steps * 1e3,
                                   adam / steps * 1e3, gc_timer.seconds / total if total else 0.0, sha,
                                   same_losses=losses == result.losses))
    result.warmup_same = warmup_losses == result.losses and warmup_sha == result.params_sha256
    nodes = first_nodes
    if graph.node_count() is None:
        for tokens in token_lists:  # an untimed pass to count nodes
            nodes += count_python_nodes(model, tokens)
    summarize(result)
    result.nodes_step = nodes / steps
    result.ns_node = result.ms_step * 1e6 / result.nodes_step if nodes else 0.0
    return result


def summarize(result):
    """Each figure's median over the rounds, and the spread of the rounds' totals. Each phase is
    its own median, so the phases need not add up to the total's median exactly."""
    rounds = result.rounds
    result.ms_step = statistics.median(r.ms_step for r in rounds)
    result.ms_forward, result.ms_backward, result.ms_adam = (
        statistics.median(getattr(r, f"ms_{phase}") for r in rounds) for phase in PHASES)
    result.gc_share = statistics.median(r.gc_share for r in rounds)
    totals = [r.ms_step for r in rounds]
    result.spread = (max(totals) - min(totals)) / result.ms_step if len(rounds) > 1 and result.ms_step else None


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
    """Every rung computed the same losses and parameters as the first, bit for bit, in its
    warm-up and every timed round."""
    first = results[0]
    return all(r.losses == first.losses and r.params_sha256 == first.params_sha256 and r.rounds_differ() is None
               for r in results)


def format_spread(r):
    if r.spread is None:
        return "-  "
    return f"{100 * r.spread:.1f}%" + (f" {SPREAD_MARK}" if r.spread_is_large() else "  ")


def format_table(results):
    header = ["rung", "median ms/step", "spread", "speedup", "forward", "backward", "adam", "nodes/step", "ns/node",
              "C calls/step", "GC share"]
    dash = lambda x, f: f.format(x) if x else "-"  # noqa: E731 (the seed's script reports no breakdown)
    rows = [[r.rung, f"{r.ms_step:.3f}", format_spread(r), f"{r.speedup:.1f}x", dash(r.ms_forward, "{:.3f}"),
             dash(r.ms_backward, "{:.3f}"), dash(r.ms_adam, "{:.3f}"), dash(r.nodes_step, "{:,.0f}"),
             dash(r.ns_node, "{:.1f}"),
             "-" if r.calls_step is None else f"{r.calls_step:,.0f}",
             f"{100 * r.gc_share:.0f}%" if r.ms_forward else "-"] for r in results]
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    fmt = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))  # noqa: E731
    lines = [fmt(header), "  ".join("-" * w for w in widths)] + [fmt(row) for row in rows]
    lines.append("")
    lines.append(f"spread: (slowest round - fastest) / median, of the rounds' ms/step (-: timed once); {SPREAD_MARK} "
                 f"marks a spread over {100 * SPREAD_LIMIT:.0f}%: that rung's rounds disagree (a busy machine?), rerun "
                 f"it or raise --rounds or --steps")
    if any(r.rung == SEED_SCRIPT_RUNG for r in results):
        lines.append(f"{SEED_SCRIPT_RUNG}: timed once (it is slow), so no spread and no phases: its ms/step is the "
                     f"mean gap between the step lines it prints")
    lines.append("")
    lines += [f"{r.rung:12s} {r.what}" for r in results]
    return "\n".join(lines)


def format_ms(ms):
    """A time in ms with three significant digits (0.153, 2.19, 85.5, 280)."""
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def plot(results, path):
    """One panel per phase and one for the whole step, horizontal bars on a shared log axis (the
    rungs span three decades), every bar labelled with its median; the step panel also shows
    each rung's fastest-slowest round and its speedup."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("microgpt: --plot needs matplotlib: pip install 'microgpt-exact[plot]' (or pip install matplotlib)",
              file=sys.stderr)
        return False
    panels = [("whole step", "ms_step")] + [(phase, f"ms_{phase}") for phase in PHASES]
    values = [getattr(r, key) for r in results for _, key in panels if getattr(r, key) > 0]
    slowest = max([max(x.ms_step for x in r.rounds) for r in results if r.rounds] + values)
    low, high = min(values) / 2.5, slowest * 20  # room on the right for the labels
    names = [r.rung for r in results]
    fig, axes = plt.subplots(2, 2, figsize=(11, 1.2 + 0.62 * len(results) * 2), sharex=True, sharey=True)
    for ax, (title, key) in zip(axes.flat, panels):
        ax.set_xscale("log")
        ax.set_xlim(low, high)
        for y, r in enumerate(results):
            ms = getattr(r, key)
            if not ms:
                ax.text(low * 1.15, y, "not measured (timed as a whole)", va="center", fontsize=8, color="gray")
                continue
            ax.barh(y, ms - low, left=low, height=0.65, color="tab:orange" if key == "ms_step" else "tab:blue")
            label, right, color = f"{format_ms(ms)} ms", ms, "black"
            if key == "ms_step":
                if r.rounds:
                    fastest, slowest_round = min(x.ms_step for x in r.rounds), max(x.ms_step for x in r.rounds)
                    ax.errorbar(ms, y, xerr=[[ms - fastest], [slowest_round - ms]], color="black", capsize=3,
                                linewidth=1)
                    right = slowest_round
                label += f"  {r.speedup:.1f}x" if r.speedup < 10 else f"  {r.speedup:,.0f}x"
                if r.spread_is_large():
                    label, color = label + f"  {SPREAD_MARK} spread {100 * r.spread:.0f}%", "tab:red"
            ax.text(right * 1.15, y, label, va="center", fontsize=8, color=color)
        ax.set_title(f"{title}, ms per step", fontsize=10)
        ax.grid(axis="x", which="major", linewidth=0.4, alpha=0.5)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
        ax.tick_params(labelbottom=True)
    axes[0][0].set_yticks(range(len(names)), names)
    axes[0][0].invert_yaxis()  # the ladder from the top
    for ax in axes[1]:
        ax.set_xlabel("ms per training step (log scale)")
    rounds = max((len(r.rounds) for r in results), default=0)
    fig.suptitle(f"microgpt profile: {results[0].steps} steps per rung, medians of {rounds} timed "
                 f"round{'s' if rounds > 1 else ''}\n"
                 f"whole step: whiskers = fastest and slowest round, Nx = speedup over the first rung, "
                 f"{SPREAD_MARK} = spread over {100 * SPREAD_LIMIT:.0f}% of the median", fontsize=10)
    fig.tight_layout()
    with atomic.AtomicFile(path, "wb") as f:
        fig.savefig(f.file, format="png", dpi=110)   # PNG whatever the name ends with, as --help says
    plt.close(fig)
    return True


def cmd_profile(args):
    if not 2 <= args.steps <= MAX_STEPS:
        raise ValueError(f"--steps must be from 2 to {MAX_STEPS}, got {args.steps}")
    rounds = getattr(args, "rounds", DEFAULT_ROUNDS)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= MAX_ROUNDS:
        raise ValueError(f"--rounds must be a whole number from 1 to {MAX_ROUNDS}, got {rounds}")
    names = [SEED_SCRIPT_RUNG] + [r.name for r in RUNGS]
    wanted = args.rungs.split(",") if args.rungs else names
    unknown = set(wanted) - set(names)
    if unknown:
        raise ValueError(f"unknown rung(s) {', '.join(sorted(unknown))}: choose from {', '.join(names)}")
    script = args.seed_script
    if script and not os.path.isfile(script):
        raise ValueError(f"--seed-script {script}: no such file")
    if args.plot:  # before the run, not after it
        require_matplotlib("--plot")
    atomic.check_outputs({"--json": args.json, "--plot": args.plot},
                         {"--data": args.data, "--seed-script": script})
    if SEED_SCRIPT_RUNG in wanted and not script:
        if args.rungs:
            raise ValueError("rung seed-script: give the seed's script with --seed-script PATH")
        print("microgpt: note: give --seed-script PATH (Karpathy's microgpt.py as published) to time the seed's "
              "script as the first rung", file=sys.stderr)
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
        print(f"running {rung.name} ({args.steps} steps: a warm-up, then {rounds} timed round"
              f"{'s' if rounds > 1 else ''})...", file=sys.stderr, flush=True)
        results.append(run_rung(rung, docs, args.steps, rounds))
    for r in results:
        r.speedup = results[0].ms_step / r.ms_step
    print(f"{args.steps} training steps per rung, {len(docs)} documents; times are ms per step: after an untimed "
          f"pass over the same steps, each rung runs them {rounds} time{'s' if rounds > 1 else ''} from the same "
          f"start, and each column is the median over those rounds")
    print(format_table(results))
    # the seed's script as published prints 4 decimals: it is compared at those, the rest bit for bit
    compared = results if seed is None or seed.full_precision else results[1:]
    same = rungs_agree(compared) if compared else True
    print()
    if compared and same:
        print(f"bit-identical: yes, all {len(compared)} rungs give the same {args.steps} losses and "
              f"parameters (sha256 {compared[0].params_sha256[:16]}...), in the warm-up and every timed round")
    elif compared:
        for r in compared:
            print(f"  {r.rung}: losses {r.losses[:3]}... params {r.params_sha256[:16]}")
        for r in compared:
            if r.rounds_differ():
                print(f"  {r.rung}: {r.rounds_differ()} gave other losses or parameters than its round 1")
        print("bit-identical: NO, the rungs above disagree")
    if seed is not None and not seed.full_precision:
        seed_same, seed_line = check_seed_script(seed, docs, args.steps, compared)
        same = same and seed_same
        print(seed_line)
    if args.json:
        with atomic.AtomicFile(args.json) as f:
            json.dump({"steps": args.steps, "documents": len(docs), "rounds": rounds,
                       "spread": "(slowest round - fastest) / median, of the rounds' ms_step", "bit_identical": same,
                       "seed_script_compared_at": None if seed is None else
                       "full precision" if seed.full_precision else f"{PRINTED_DECIMALS} decimals",
                       "rungs": [asdict(r) for r in results]}, f, indent=1)
    if args.plot and plot(results, args.plot):
        print(f"plot written to {args.plot}")
    return 0 if same else 1
