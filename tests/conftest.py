"""Shared fixtures: every backend-dependent test runs on both backends.

The c backend's tests skip when the extension is not built, unless MICROGPT_REQUIRE_C=1 (as in
CI), where a missing c backend fails them: a silent fallback would hide a broken build."""
import os
import pathlib

import pytest

from microgpt.backend import c_status

# ../shared beside the project's root (MICROGPT_SHARED overrides, for runs from a copied tree): the
# development-only extras. The seed's figures the tests compare with are shipped in tests/golden/
# and microgpt/golden/; what is not shipped is the seed's data and script, which a user can point
# the tests at: MICROGPT_NAMES=names.txt (makemore's, as the seed downloads it to input.txt) and
# MICROGPT_SEED_SCRIPT=microgpt.py (Karpathy's, as published).
SHARED = pathlib.Path(os.environ.get("MICROGPT_SHARED") or pathlib.Path(__file__).resolve().parents[2] / "shared")
GOLDEN = pathlib.Path(__file__).resolve().parent / "golden"
NAMES_SHA256 = "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d"  # makemore's names.txt
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


def env_path(name):
    """The file an environment variable names, made absolute here: the tests run microgpt from
    folders of their own, where a path relative to the shell's folder would name nothing."""
    value = os.environ.get(name)
    return pathlib.Path(value).resolve() if value else None


def find_names_txt():
    """makemore's names.txt, the seed's data: MICROGPT_NAMES, else ../shared's copy; None if absent."""
    for path in (env_path("MICROGPT_NAMES"), SHARED / "data" / "names.txt"):
        if path and pathlib.Path(path).is_file():
            return pathlib.Path(path)
    return None


@pytest.fixture
def names_txt():
    """The seed's data file, checked to be the one the shipped golden figures were made on."""
    import hashlib
    path = find_names_txt()
    if path is None:
        pytest.skip("the seed's data is not here: set MICROGPT_NAMES to makemore's names.txt (the file the seed "
                    "downloads to input.txt) to run this test")
    if hashlib.sha256(path.read_bytes()).hexdigest() != NAMES_SHA256:
        pytest.fail(f"{path} is not makemore's names.txt (sha256 {NAMES_SHA256[:16]}...)")
    return path


@pytest.fixture
def seed_script():
    """The seed's own script: MICROGPT_SEED_SCRIPT (Karpathy's microgpt.py as published), else ../shared's reference."""
    for path in (env_path("MICROGPT_SEED_SCRIPT"), SHARED / "reference" / "seed_microgpt.py"):
        if path and pathlib.Path(path).is_file():
            return pathlib.Path(path)
    pytest.skip("the seed's script is not here: set MICROGPT_SEED_SCRIPT to Karpathy's microgpt.py to run this test")


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
