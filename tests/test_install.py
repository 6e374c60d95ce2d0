"""The build: per-compiler flags that keep every bit, every csrc file picked up, a header edit
rebuilding, an install without a C compiler that warns and falls back to python, and the one
notice the python fallback prints at run time. (.ci/no-compiler does the whole install with pip.)"""
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
WARNING = "microgpt: WARNING: the C extension could not be built"
NOTICE = "microgpt: note: using the python backend"


def source_tree():
    if not (ROOT / "setup.py").exists() or not (ROOT / "build_ext.py").exists():
        pytest.skip(f"not run from a source tree (no setup.py and build_ext.py in {ROOT})")
    return ROOT


def load_build_ext(env=None):
    spec = importlib.util.spec_from_file_location("microgpt_build_ext", source_tree() / "build_ext.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_c_file_is_a_source_and_every_header_a_dependency():
    build = load_build_ext()
    csrc = ROOT / "csrc"
    resolve = lambda paths: [str((ROOT / p).resolve()) for p in paths]  # noqa: E731
    assert resolve(build.SOURCES) == [str(p.resolve()) for p in sorted(csrc.glob("*.c"))] and build.SOURCES
    assert resolve(build.HEADERS) == [str(p.resolve()) for p in sorted(csrc.glob("*.h"))]
    assert any(h.endswith("microgpt.h") for h in build.HEADERS)
    kwds = build.ffibuilder._assigned_source[3]
    assert kwds["sources"] == build.SOURCES and kwds["depends"] == build.HEADERS


def test_flags_forbid_contraction_on_each_compiler(monkeypatch):
    build = load_build_ext()
    monkeypatch.delenv("MICROGPT_SANITIZE", raising=False)
    compile_args, link_args, libraries = build.compiler_flags("unix")
    assert {"-std=c11", "-O2", "-Wall", "-Wextra", "-ffp-contract=off"} <= set(compile_args)
    assert libraries == ["m"] and link_args == ["-pthread"]  # Adam's threads (csrc/adam.c)
    compile_args, link_args, libraries = build.compiler_flags("msvc")
    assert "/fp:precise" in compile_args and libraries == []
    assert not any(a.startswith(("/fp:fast", "/fp:contract", "/arch:AVX")) for a in compile_args)
    monkeypatch.setenv("MICROGPT_SANITIZE", "1")
    compile_args, link_args, _ = build.compiler_flags("unix")
    assert "-fsanitize=address,undefined" in compile_args and "-fsanitize=address,undefined" in link_args


def copy_tree(tmp_path):
    """The source tree without builds, so a build here leaves the checkout alone."""
    dest = tmp_path / "src"
    shutil.copytree(source_tree(), dest, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.so", "*.pyd", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis",
        "venv*"))
    return dest


def setuptools_builds_here():
    try:
        import setuptools
    except ImportError:
        pytest.skip("setuptools is not installed")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"pyproject.toml needs setuptools>=77, this is {setuptools.__version__}")


def build(tree, env):
    return subprocess.run([sys.executable, "setup.py", "build_ext", "--build-lib", "lib", "--build-temp", "tmp"],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=300)


def built_module(tree):
    return sorted((tree / "lib" / "microgpt").glob("_cmg*"))


def no_compiler_env(tmp_path):
    """CC names a file that does not exist, and gcc, cc, clang... first on the PATH fail."""
    shims = tmp_path / "nocc"
    shims.mkdir()
    for name in ("cc", "gcc", "clang", "c++", "g++", "x86_64-linux-gnu-gcc"):
        (shims / name).write_text("#!/bin/sh\nexit 1\n")
        (shims / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICROGPT_")}
    env.update(CC="/nonexistent/cc", PATH=f"{shims}{os.pathsep}{env.get('PATH', '')}")
    return env


@pytest.mark.skipif(sys.platform == "win32", reason="shell shims")
def test_no_compiler_builds_without_the_extension_and_warns_once(tmp_path):
    setuptools_builds_here()
    tree = copy_tree(tmp_path)
    (tree / "microgpt" / "_cmg.abi3.so").write_text("an older build")  # must not outlive a failed build
    result = build(tree, no_compiler_env(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count(WARNING) == 1, result.stderr[-2000:]
    assert "python backend" in result.stderr and "C compiler" in result.stderr
    assert built_module(tree) == [] and not (tree / "microgpt" / "_cmg.abi3.so").exists()
    assert not sorted((tree / "lib" / "microgpt").glob("_values*"))  # the Value type is built with it, or not at all


@pytest.mark.skipif(sys.platform == "win32", reason="shell shims")
def test_require_c_makes_a_failed_build_an_error(tmp_path):
    setuptools_builds_here()
    env = no_compiler_env(tmp_path)
    env["MICROGPT_REQUIRE_C"] = "1"
    result = build(copy_tree(tmp_path), env)
    assert result.returncode != 0 and WARNING not in result.stderr


def test_a_header_edit_rebuilds_the_extension(tmp_path):
    """setuptools rebuilds when a source or a `depends` file is newer than the module."""
    setuptools_builds_here()
    if not (shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")):
        pytest.skip("no C compiler")
    tree = copy_tree(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "MICROGPT_SANITIZE"}
    assert build(tree, env).returncode == 0
    [module] = built_module(tree)
    # the c backend's Value type beside it, on the stable ABI (one abi3 wheel, as setup.py tags it)
    [values] = sorted((tree / "lib" / "microgpt").glob("_values*"))
    assert sys.platform == "win32" or sysconfig.get_config_var("Py_GIL_DISABLED") or values.name == "_values.abi3.so"
    # and a copy of each beside the sources (the checkout's ./microgpt wins imports run from its root)
    assert {p.name for p in (tree / "microgpt").iterdir() if p.suffix in (".so", ".pyd")} == {module.name, values.name}
    first = module.stat().st_mtime_ns
    assert build(tree, env).returncode == 0
    assert module.stat().st_mtime_ns == first  # nothing changed: not rebuilt (so the check below can fail)
    header = sorted((tree / "csrc").glob("*.h"))[-1]
    later = first / 1e9 + 10
    os.utime(header, (later, later))
    assert build(tree, env).returncode == 0
    assert module.stat().st_mtime_ns != first


def package_without_extension(tmp_path, checkout=False):
    """A copy of the microgpt package with no compiled module: an install made without a compiler
    (or, with checkout=True, a source checkout that was never built)."""
    import microgpt
    root = tmp_path / ("checkout" if checkout else "site-packages")
    shutil.copytree(pathlib.Path(microgpt.__file__).parent, root / "microgpt",
                    ignore=shutil.ignore_patterns("_cmg*", "__pycache__"))
    if checkout:
        (root / "build_ext.py").write_text("# the checkout's builder\n")
    return root


def run_package(root, *args, **env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICROGPT_")}
    env.update(PYTHONPATH=str(root), **env_extra)
    # An editable install's import hook would find the checkout's compiled module for the copy.
    code = ("import runpy, sys; sys.meta_path[:] = [f for f in sys.meta_path if '_editable_' not in repr(f)]; "
            "sys.argv[0] = 'microgpt'; runpy.run_module('microgpt', run_name='__main__', alter_sys=True)")
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=root.parent, timeout=300)


def test_fallback_notice_is_one_line_that_says_why_and_what_to_do(tmp_path, small_data):
    root = package_without_extension(tmp_path)
    result = run_package(root, "train", "--steps", 5, "--data", small_data)
    assert result.returncode == 0, result.stderr
    assert len([line for line in result.stdout.splitlines() if line.startswith("step")]) == 5
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(NOTICE), result.stderr
    for fragment in ("the same results", "was not built when microgpt was installed", "no working C compiler",
                     "install a C compiler", "--force-reinstall --no-cache-dir", "MICROGPT_BACKEND=python silences"):
        assert fragment in lines[0]


def test_fallback_notice_in_an_unbuilt_checkout(tmp_path, small_data):
    result = run_package(package_without_extension(tmp_path, checkout=True), "train", "--steps", 1,
                         "--data", small_data)
    lines = result.stderr.splitlines()
    assert result.returncode == 0 and len(lines) == 1 and lines[0].startswith(NOTICE)
    assert "source checkout" in lines[0] and "pip install ." in lines[0]


def test_no_notice_when_python_is_asked_for(tmp_path, small_data):
    result = run_package(package_without_extension(tmp_path), "train", "--steps", 1, "--data", small_data,
                         MICROGPT_BACKEND="python")
    assert result.returncode == 0 and result.stderr == ""


def test_asking_for_c_without_the_extension_is_one_clear_error(tmp_path, small_data):
    result = run_package(package_without_extension(tmp_path), "train", "--steps", 1, "--data", small_data,
                         "--backend", "c")
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("microgpt: error: backend 'c' was requested") and "C compiler" in lines[0]
