"""The programs as a user runs them, side by side: the seed's own script as published (cyclic GC
on) and `microgpt train` on each backend, on ../shared/data/names.txt.

Each program runs in its own process with unbuffered output; one benchmark round is waiting for
its next `step` line, so the statistics are its marginal time per training step (start-up, data
loading and sampling excluded). Every program runs the same steps: 2 to STEPS + 1 of the same
1000-step schedule (step 1 is the warm-up round). In those first steps most document lengths are
new, so the c backend records rather than replays them; "c-all-steps" times steps 2 to 1000.

Run with: pytest benchmarks/test_versus_seed.py --benchmark-only --benchmark-columns=mean,median,rounds
"""
import subprocess
import sys

import pytest

from conftest import NAMES

SEED_SCRIPT = NAMES.parents[1] / "reference" / "seed_microgpt.py"
STEPS = 30
TRAIN = ["-m", "microgpt", "train", "--data", str(NAMES), "--steps", "1000"]
PROGRAMS = {
    "seed-script": [str(SEED_SCRIPT), str(NAMES), "1000"],
    "python-seed-graph": TRAIN + ["--backend", "python", "--graph", "seed"],  # only the GC paused
    "python": TRAIN + ["--backend", "python"],  # the default graph: fused dot nodes
    "c-op-by-op": TRAIN + ["--backend", "c", "--graph", "seed"],  # one C call per scalar op
    "c": TRAIN + ["--backend", "c"],  # the default graph: replay
}


@pytest.mark.benchmark(group="marginal training step, as published")
@pytest.mark.parametrize("program,rounds", [(name, STEPS) for name in PROGRAMS] + [("c-all-steps", 999)])
def test_marginal_step(benchmark, program, rounds):
    if not SEED_SCRIPT.exists():
        pytest.skip(f"../shared is absent ({SEED_SCRIPT})")
    argv = PROGRAMS[program.removesuffix("-all-steps")]
    proc = subprocess.Popen([sys.executable, "-u", *argv], stdout=subprocess.PIPE, text=True)
    try:
        def next_step():
            line = proc.stdout.readline()
            if not line.startswith("step"):
                raise RuntimeError(f"{program}: expected a step line, got {line!r}")

        while not proc.stdout.readline().startswith("num params"):  # past the start-up lines
            pass
        benchmark.pedantic(next_step, rounds=rounds, warmup_rounds=1, iterations=1)
    finally:
        proc.kill()
        proc.wait()
