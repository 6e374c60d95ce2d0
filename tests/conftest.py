"""Shared fixtures: every backend-dependent test runs on both backends.

The c backend's tests skip when the extension is not built, unless MICROGPT_REQUIRE_C=1 (as in
CI), where a missing c backend fails them: a silent fallback would hide a broken build."""
import os
import pathlib

import pytest

from microgpt.backend import c_status

# ../shared beside the project's root (MICROGPT_SHARED overrides, for runs from a copied tree)
SHARED = pathlib.Path(os.environ.get("MICROGPT_SHARED") or pathlib.Path(__file__).resolve().parents[2] / "shared")
GOLDEN = pathlib.Path(__file__).resolve().parent / "golden"
C_OK, C_WHY = c_status()

from microgpt.modes import BUILDS

# (backend, graph mode): every way this package can build the graph
GRAPHS = list(BUILDS)


def require(backend):
    if backend == "c" and not C_OK:
        if os.environ.get("MICROGPT_REQUIRE_C") == "1":
            pytest.fail(f"the c backend is required (MICROGPT_REQUIRE_C=1) but {C_WHY}")
        pytest.skip(f"c backend not built: {C_WHY}")


@pytest.fixture(params=["python", "c"])
def backend(request):
    require(request.param)
    return request.param


@pytest.fixture(params=GRAPHS, ids=[f"{b}-{m}" for b, m in GRAPHS])
def graph_mode(request):
    require(request.param[0])
    return request.param


@pytest.fixture
def Value(backend):
    from microgpt.backend import value_class
    return value_class(backend)


@pytest.fixture
def shared():
    if not (SHARED / "data" / "names.txt").exists():
        pytest.skip(f"../shared is absent ({SHARED}): the seed's golden outputs are not here")
    return SHARED


@pytest.fixture
def small_data(tmp_path):
    from small_data import write_small_data
    return write_small_data(tmp_path / "small.txt")


def run_microgpt(*args, check=False, timeout=900, env=None, code=None):
    """Run `python -m microgpt ARGS` (or `python -c CODE`) on the very package these tests
    imported: a subprocess started in the source tree would otherwise import ./microgpt."""
    import subprocess
    import sys
    import tempfile

    import microgpt
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = str(pathlib.Path(microgpt.__file__).resolve().parents[1])
    argv = ["-c", code] if code is not None else ["-m", "microgpt", *map(str, args)]
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout,
                              env=env, cwd=cwd, check=check)
