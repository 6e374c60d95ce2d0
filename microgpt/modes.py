"""The graph modes and the profile's rungs: the one list of both, from which the CLI's choices
and help, the profile, the benchmarks and the tests' parametrizations are derived; and
new_graph(), which builds a graph in a mode.

A mode is a way of building the graph. Every mode gives the same bits: the seed's graph node for
node, or fused nodes that reproduce its roundings (see README, "Backends and graph modes").
"""
from dataclasses import dataclass

from .backend import resolve


@dataclass(frozen=True)
class GraphMode:
    name: str
    backends: tuple         # the backends that can build it
    what: str


GRAPH_MODES = (
    GraphMode("seed", ("python", "c"), "the seed's graph node for node, one scalar op at a time"),
    GraphMode("kernels", ("c",), "the seed's graph node for node, one C call per layer"),
    GraphMode("fused", ("python", "c"), "each sum of products (linear rows, attention's sums, rmsnorm's "
                                        "sum of squares) one dot node, each cross-entropy only the "
                                        "target's probability: the seed's bits, a fourteenth of the nodes"),
    GraphMode("replay", ("c",), "fused, each training step recorded once per document length and replayed in C"),
    GraphMode("dense", ("c",), "replay's recording compiled into dense kernels over flat arrays, no nodes; "
                               "checked against the graph once per document length"),
)
MODE_NAMES = tuple(m.name for m in GRAPH_MODES)
AUTO = {"python": "fused", "c": "dense"}   # what 'auto' builds: the fastest mode of each backend


@dataclass(frozen=True)
class Rung:
    """One rung of the profile's ladder: a backend, a mode, and whether the cyclic GC is paused."""
    name: str
    backend: str
    mode: str
    gc_paused: bool
    what: str


RUNGS = (
    Rung("seed", "python", "seed", False, "python backend, the seed's graph node for node, cyclic GC on as published"),
    Rung("python-nogc", "python", "seed", True, "the same graph with the cyclic GC paused during a step"),
    Rung("python", "python", "fused", True, "python backend, fused graph"),
    Rung("c-ops", "c", "seed", True, "c backend, the seed's Python layers, one C call per scalar op"),
    Rung("c-kernels", "c", "kernels", True, "c backend, one C call per layer, the seed's graph node for node"),
    Rung("c-fused", "c", "fused", True, "c backend, one C call per layer, fused graph"),
    Rung("c-replay", "c", "replay", True, "c-fused recorded once per document length, replayed by one C call"),
    Rung("c-dense", "c", "dense", True, "c-replay's recording compiled into dense kernels: no graph per step"),
)
RUNG_NAMES = tuple(r.name for r in RUNGS)
SEED_SCRIPT_RUNG = "seed-script"   # the first rung when the seed's own script is given: no build of ours
# every (backend, mode) this package can build, in ladder order
BUILDS = tuple(dict.fromkeys((r.backend, r.mode) for r in RUNGS))


def mode_help():
    """The --graph help text."""
    parts = [f"{m.name}: {m.what}" + ("" if len(m.backends) > 1 else f" ({m.backends[0]} only)") for m in GRAPH_MODES]
    return ("how the graph is built (all give the same bits); " + "; ".join(parts) +
            f"; auto (default): {AUTO['c']} on c, {AUTO['python']} on python")


def new_graph(backend=None, mode="auto"):
    """A graph for backend 'python', 'c' or 'auto' (None: the live choice), in one of the graph
    modes above, or 'auto': the fastest the backend has."""
    if mode != "auto" and mode not in MODE_NAMES:
        raise ValueError(f"unknown graph mode {mode!r}: choose one of auto, {', '.join(MODE_NAMES)}")
    backend = resolve(backend)
    mode = AUTO[backend] if mode == "auto" else mode
    if backend not in next(m for m in GRAPH_MODES if m.name == mode).backends:
        raise ValueError(f"graph mode {mode!r} needs the c backend")
    if backend == "python":
        from .graphs import PythonGraph
        return PythonGraph(fused=(mode == "fused"))
    from .cgraph import CGraph  # only when the c extension is built
    return CGraph(mode)
