"""The structure the code promises: no import circles among the package's modules, and no call
circles among the C files (each file calls only files below it)."""
import ast
import pathlib
import shutil
import subprocess
import sysconfig

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE, CSRC = ROOT / "microgpt", ROOT / "csrc"


def find_cycle(graph):
    """A cycle of graph {node: set of nodes} as a list, or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [node])
            if found:
                return found
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def package_imports(path):
    """The package modules a module imports, anywhere in it (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("microgpt."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("microgpt."))
    return found


def test_no_python_module_imports_one_that_imports_it_back():
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    graph = {p.stem: package_imports(p) & modules - {p.stem} for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert graph["cgraph"] >= {"graphs", "native", "replay"}  # the parser sees imports
    assert find_cycle(graph) is None, find_cycle(graph)


def c_calls_between_files(tmp_path):
    """{file: files whose functions it calls}, from the symbols each compiled file defines and uses."""
    cc = shutil.which(sysconfig.get_config_var("CC").split()[0] if sysconfig.get_config_var("CC") else "cc")
    if not cc or not shutil.which("nm"):
        pytest.skip("needs a C compiler and nm")
    defined, used = {}, {}
    for src in sorted(CSRC.glob("*.c")):
        obj = tmp_path / (src.stem + ".o")
        subprocess.run([cc, "-std=c11", "-c", f"-I{CSRC}", "-include", "stdint.h", str(src), "-o", str(obj)],
                       check=True, capture_output=True)
        symbols = subprocess.run(["nm", str(obj)], check=True, capture_output=True, text=True).stdout.split("\n")
        defined[src.stem] = {s.split()[-1] for s in symbols if len(s.split()) == 3 and s.split()[1] == "T"}
        used[src.stem] = {s.split()[-1] for s in symbols if len(s.split()) == 2 and s.split()[0] == "U"}
    owner = {symbol: name for name, symbols in defined.items() for symbol in symbols}
    return {name: {owner[s] for s in symbols if s in owner} - {name} for name, symbols in used.items()}


def test_no_c_file_calls_one_that_calls_it_back(tmp_path):
    graph = c_calls_between_files(tmp_path)
    assert graph["tape"] >= {"backward", "kernels", "arena"}  # the symbols are seen
    assert graph["arena"] == set()  # the bottom: the arena calls no other file
    assert find_cycle(graph) is None, find_cycle(graph)
