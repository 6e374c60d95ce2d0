"""The programs as a user runs them, side by side: the seed's own script (cyclic GC on) and
`microgpt train` on each backend, on the same data.

The data: MICROGPT_NAMES (makemore's names.txt, what the seed trains on), else ../shared's copy
beside a development checkout, else the embedded names list. The seed's script: MICROGPT_SEED_SCRIPT
(Karpathy's microgpt.py as published), else ../shared's reference; without one, its row skips.
It runs in a scratch folder with the data as input.txt, where the published script reads it (it
downloads names.txt only when input.txt is absent); the reference's arguments are also given, and
the published script ignores them.

Each program runs in its own process with unbuffered output; one benchmark round is waiting for
its next `step` line (the published script ends them with a carriage return), so the statistics
are its marginal time per training step (start-up, data loading and sampling excluded). Every
program runs the same steps: 2 to STEPS + 1 of the same 1000-step schedule (step 1 is the warm-up
round). In those first steps most document lengths are new, so the c backend records rather than
replays them; "c-all-steps" times steps 2 to 1000.

Run with: pytest benchmarks/test_versus_seed.py --benchmark-only --benchmark-columns=mean,median,rounds
"""
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from conftest import NAMES

# made absolute: the programs run in folders of their own
SEED_SCRIPT = pathlib.Path(os.environ.get("MICROGPT_SEED_SCRIPT") or NAMES.parents[1] / "reference" /
                           "seed_microgpt.py").resolve()
STEPS = 30
TRAIN = ["-m", "microgpt", "train", "--steps", "1000"]
PROGRAMS = {
    "seed-script": None,  # the script, in its scratch folder
    "python-seed-graph": TRAIN + ["--backend", "python", "--graph", "seed"],  # only the GC paused
    "python": TRAIN + ["--backend", "python"],  # the default graph: fused dot nodes
    "c-op-by-op": TRAIN + ["--backend", "c", "--graph", "seed"],  # one C call per scalar op
    "c": TRAIN + ["--backend", "c"],  # the default graph: replay
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    names = os.environ.get("MICROGPT_NAMES") or (NAMES if NAMES.exists() else None)
    if names:
        return pathlib.Path(names).resolve()
    from microgpt.data import default_docs
    path = tmp_path_factory.mktemp("data") / "names.txt"
    path.write_text("\n".join(default_docs()) + "\n", encoding="utf-8")
    return path


class StepLines:
    """A process's stdout as lines ended by a newline or a carriage return, read as they arrive."""

    def __init__(self, proc):
        self.fd, self.pending, self.lines = proc.stdout.fileno(), b"", []

    def next(self):
        while not self.lines:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise RuntimeError("the program ended")
            *complete, self.pending = re.split(rb"[\r\n]", self.pending + chunk)
            self.lines += [line.decode() for line in complete if line]
        return self.lines.pop(0)


@pytest.mark.benchmark(group="marginal training step, as published")
@pytest.mark.parametrize("program,rounds", [(name, STEPS) for name in PROGRAMS] + [("c-all-steps", 999)])
def test_marginal_step(benchmark, program, rounds, data, tmp_path):
    name = program.removesuffix("-all-steps")
    if name == "seed-script":
        if not SEED_SCRIPT.exists():
            pytest.skip(f"the seed's script is not here ({SEED_SCRIPT}): set MICROGPT_SEED_SCRIPT to Karpathy's "
                        f"microgpt.py to time it")
        shutil.copyfile(data, tmp_path / "input.txt")
        argv = [str(SEED_SCRIPT.resolve()), "input.txt", "1000"]
    else:
        argv = PROGRAMS[name] + ["--data", str(data)]
    proc = subprocess.Popen([sys.executable, "-u", *argv], stdout=subprocess.PIPE, cwd=tmp_path)
    try:
        out = StepLines(proc)

        def next_step():
            line = out.next()
            if not line.startswith("step"):
                raise RuntimeError(f"{program}: expected a step line, got {line!r}")

        while not out.next().startswith("num params"):  # past the start-up lines
            pass
        benchmark.pedantic(next_step, rounds=rounds, warmup_rounds=1, iterations=1)
    finally:
        proc.kill()
        proc.wait()
