"""A training step at the sizes the speed issue names: the seed's config, d64 and d128 (names
data, one document a step), on the c backend's replay graph (the scalar graph built and walked by
C every step) and its dense graph (the same step compiled, no nodes), side by side in one group
per size, with PyTorch on the CPU as an outside reference when it is installed.

Run with: pytest benchmarks/test_sizes.py --benchmark-only --benchmark-columns=median,mean,rounds
Every timed round is a step of a length seen in the warm-up (recorded, and compiled on dense).
The group "peak memory" runs `microgpt train` itself at each size and prints its peak RSS."""
import pathlib
import random
import subprocess
import sys

import pytest

from conftest import NAMES
from microgpt.backend import c_status
from microgpt.data import default_docs, load_docs
from microgpt.limits import default_threads
from microgpt.model import GPT, Config
from microgpt.modes import new_graph
from microgpt.tokenizer import Tokenizer
from microgpt.training import step_loss, train_step

SIZES = {
    "seed": dict(),
    "d64": dict(n_embd=64, n_layer=2, n_head=4, block_size=16),
    "d128": dict(n_embd=128, n_layer=4, n_head=8, block_size=32),
}
ROUNDS = {"seed": 400, "d64": 60, "d128": 15}


def documents(size):
    random.seed(42)
    docs = load_docs(NAMES) if NAMES.exists() else default_docs()
    random.shuffle(docs)
    tokenizer = Tokenizer.from_docs(docs)
    return tokenizer, [tokenizer.document(docs[i]) for i in range(ROUNDS[size])]


def warmed_up(size, mode, threads):
    """(model on the c backend, its documents) after a pass over them: every length recorded (and
    compiled on dense), the moments a run's. threads: a number, or "all" (every CPU: skipped where
    that is one, the one-thread run already)."""
    if not c_status()[0]:
        pytest.skip(f"c backend not built: {c_status()[1]}")
    if threads == "all":
        threads = default_threads()
        if threads == 1:
            pytest.skip("one CPU: the same as the one-thread run")
    tokenizer, docs = documents(size)
    model = GPT(Config(vocab_size=tokenizer.vocab_size, **SIZES[size]), new_graph("c", mode))
    model.graph.set_threads(threads)
    for step, tokens in enumerate(docs):
        train_step(model, tokens, step, 10**6)
    return model, docs


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("mode,threads", [("replay", 1), ("dense", 1), ("dense", "all")])
def test_training_step(benchmark, size, mode, threads):
    """One thread (as PyTorch below), and dense with every CPU (`microgpt train`'s default)."""
    model, docs = warmed_up(size, mode, threads)
    benchmark.group = f"training step, {size}"
    steps = iter(enumerate(docs))

    def one_step():
        step, tokens = next(steps)
        train_step(model, tokens, step, 10**6)

    benchmark.pedantic(one_step, rounds=ROUNDS[size], iterations=1)


@pytest.mark.parametrize("size", list(SIZES))
def test_training_step_pytorch(benchmark, size):
    torch = pytest.importorskip("torch")
    from torch_reference import TorchGPT
    torch.set_num_threads(1)
    benchmark.group = f"training step, {size}"
    tokenizer, docs = documents(size)
    model = TorchGPT(Config(vocab_size=tokenizer.vocab_size, **SIZES[size]))
    for step, tokens in enumerate(docs):
        model.train_step(tokens, step, 10**6)
    steps = iter(enumerate(docs))

    def one_step():
        step, tokens = next(steps)
        model.train_step(tokens, step, 10**6)

    benchmark.pedantic(one_step, rounds=ROUNDS[size], iterations=1)


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("threads", [1, "all"])
def test_adam_step(benchmark, size, threads):
    """Adam alone on the dense graph (the default), each round on a fresh step's gradients, so that
    the share of parameters pow() decides is a training run's. Divide by the parameter count
    (seed 4,192, d64 102,784, d128 797,440) for the cost of one."""
    model, docs = warmed_up(size, "dense", threads)
    benchmark.group = f"Adam step, {size}"
    steps = iter(enumerate(docs, len(docs)))

    def fresh_gradients():
        step, tokens = next(steps)
        model.graph.backward(step_loss(model, tokens))
        return (step,), {}

    benchmark.pedantic(lambda step: model.graph.adam_step(step, 10**6), setup=fresh_gradients,
                       rounds=ROUNDS[size], iterations=1)


@pytest.fixture(scope="module")
def floor(tmp_path_factory):
    """floor.c built for this CPU (None where it cannot be: no compiler)."""
    import cffi
    ffi = cffi.FFI()
    ffi.cdef("void floor_divisions(const double *m, const double *v, double *out, int64_t n, double b1, double b2, "
             "double lr, double eps); void floor_traffic(double *p, double *g, double *m, double *v, int64_t n, "
             "double c);")
    source = pathlib.Path(__file__).with_name("floor.c")
    ffi.set_source("_floor", source.read_text(),
                   extra_compile_args=["-O3", "-march=native", "-fno-math-errno", "-ffp-contract=off"])
    build = tmp_path_factory.mktemp("floor")
    try:
        module = ffi.compile(tmpdir=str(build), verbose=False)
    except Exception as e:  # cffi.VerificationError, or the compiler's own
        pytest.skip(f"floor.c not built: {e}")
    import importlib.util
    spec = importlib.util.spec_from_file_location("_floor", module)
    lib = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lib)
    return lib


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("part", ["divisions", "traffic"])
def test_adam_floor(benchmark, floor, size, part):
    """Beside Adam alone: the divisions and roots it needs, at the divider's pace (from the cache),
    or the bytes it moves (p, g, m and v: 64 a parameter), one thread, nothing else (floor.c).
    Adam cannot take less time than either; the seed's size and d64 are the divider's, d128
    comes near the memory's."""
    from array import array
    benchmark.group = f"Adam step, {size}"
    n = Config(vocab_size=27, **SIZES[size]).num_params
    lib, ffi = floor.lib, floor.ffi
    if part == "divisions":
        m = array("d", [1e-3 * (1 + k % 7) for k in range(1024)])   # floor.c's block
        v = array("d", [1e-6 * (1 + k % 5) for k in range(1024)])
        out = array("d", bytes(8 * 1024))
        args = (ffi.from_buffer("double[]", m), ffi.from_buffer("double[]", v), ffi.from_buffer("double[]", out),
                n, 0.15, 0.01, 0.01, 1e-8)
        benchmark.pedantic(lambda: lib.floor_divisions(*args), rounds=ROUNDS[size] * 4, iterations=1)
    else:
        arrays = [array("d", bytes(8 * n)) for _ in range(4)]
        args = [ffi.from_buffer("double[]", a) for a in arrays] + [n, 0.5]
        benchmark.pedantic(lambda: lib.floor_traffic(*args), rounds=ROUNDS[size] * 4, iterations=1)


MEMORY_STEPS = 1000  # names.txt in the CLI's order: every name length comes up well before this

# The child's own peak, in KB: VmHWM, the high-water mark of the memory it runs in since its exec.
# Not ru_maxrss: Linux carries that over from before the exec, where the child was a copy of this
# pytest process, so every run would read at least pytest's size. ru_maxrss where /proc is not.
PRINT_PEAK = ("import resource; "
              "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')] "
              "if __import__('os').path.exists('/proc/self/status') else []; "
              "print('peak', hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("mode", ["replay", "dense"])
def test_peak_memory_of_training(benchmark, size, mode):
    """`microgpt train --steps 1000` at this size, in a process of its own: its peak resident
    memory (ru_maxrss), printed and kept in the benchmark's extra_info; the time is the run's,
    start-up, first steps and sampling included."""
    if not c_status()[0]:
        pytest.skip(f"c backend not built: {c_status()[1]}")
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in SIZES[size].items()]
    data = ["--data", str(NAMES)] if NAMES.exists() else []   # else the embedded names (data.default_docs)
    argv = ["train", "--backend", "c", "--graph", mode, *data, "--steps", str(MEMORY_STEPS), "--samples", "0",
            *flags]
    code = f"import sys; from microgpt.cli import main; main(sys.argv[1:]); {PRINT_PEAK}"
    root = pathlib.Path(__file__).resolve().parents[1]
    import microgpt
    env = {"PYTHONPATH": str(pathlib.Path(microgpt.__file__).resolve().parents[1]), "PATH": ""}
    benchmark.group = "peak memory of microgpt train (1000 steps)"

    def run():
        return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True,
                              cwd=root, env=env)

    report_peak(benchmark, f"{size} {mode}", benchmark.pedantic(run, rounds=1, iterations=1))


def report_peak(benchmark, what, result):
    peak_mb = int(result.stdout.split("peak ")[-1]) / 1024
    benchmark.extra_info["peak_rss_mb"] = round(peak_mb, 1)
    print(f"\n{what}: peak RSS {peak_mb:.1f} MB")


@pytest.mark.parametrize("size", list(SIZES))
def test_peak_memory_of_training_pytorch(benchmark, size):
    """The same 1000 steps of the same model in PyTorch (torch_reference.py), in a process of its
    own: its peak resident memory, beside microgpt train's."""
    pytest.importorskip("torch")
    code = ("import os, random, resource, sys; sys.path.insert(0, sys.argv[1]); import torch; "
            "from torch_reference import TorchGPT; from microgpt.data import default_docs, load_docs; "
            "from microgpt.model import Config; from microgpt.tokenizer import Tokenizer; "
            "torch.set_num_threads(1); random.seed(42); "
            "docs = load_docs(sys.argv[2]) if os.path.exists(sys.argv[2]) else default_docs(); random.shuffle(docs); "
            "tok = Tokenizer.from_docs(docs); "
            f"model = TorchGPT(Config(vocab_size=tok.vocab_size, **{SIZES[size]!r})); "
            f"[model.train_step(tok.document(docs[s]), s, {MEMORY_STEPS}) for s in range({MEMORY_STEPS})]; "
            f"{PRINT_PEAK}")
    here = pathlib.Path(__file__).resolve().parent
    import microgpt
    env = {"PYTHONPATH": str(pathlib.Path(microgpt.__file__).resolve().parents[1]), "PATH": ""}
    benchmark.group = "peak memory of microgpt train (1000 steps)"

    def run():
        return subprocess.run([sys.executable, "-c", code, str(here), str(NAMES)], capture_output=True, text=True,
                              check=True, cwd=here.parent, env=env)

    report_peak(benchmark, f"{size} pytorch", benchmark.pedantic(run, rounds=1, iterations=1))
