"""Limits checked before anything big is allocated: the memory a model needs, step counts, data size.

The memory estimate counts what a run holds at its peak: the parameters and Adam's moments, the
largest training step's graph (a document that fills block_size: its nodes and child links,
derived below from the model's structure, layer by layer, as model.py builds it), and the copies
the command line makes of the parameters (the last good state, the checkpoint being written).
Byte costs per node and per link are the backends' own: the C arena's array layout (csrc/arena.c)
with its capacity doubling, and the python backend's objects (measured, see tests/test_limits.py,
which also checks the counts and bytes against both backends so the estimate cannot drift).
"""
import math
import os

# The learning rate's decay and Adam's bias correction take the step as a double: counts up to
# 2**53 are exact there (and fit the C core's int64).
MAX_STEPS = 2 ** 53

# No model size may exceed this (the C arena indexes nodes with 32 bits): bigger numbers are
# refused as such, before they reach the estimate's arithmetic.
MAX_DIMENSION = 2 ** 32

# Data is read whole into memory and every line becomes a Python string; a names list is well
# under a megabyte.
MAX_DATA_BYTES = 256 * 2 ** 20


class MemoryLimitError(ValueError):
    """A configuration whose estimated memory exceeds what is available."""


# --- the graph of one training step, counted

# edge entries of a fused dot node in the C arena: it names its children through two vecs
# (csrc/arena.h, nd_dot_of) where the python backend's node holds all 2n of them
C_DOT_EDGES = 2


def _linear(nin, nout, fused, compact=False):
    """(nodes, links) of one linear layer: each row the seed's chain of products and sums
    (0 + w0*x0, then + wj*xj), or one fused dot node with children (w0, x0, w1, x1, ...), which
    the C arena stores compactly (compact: its edge entries, not its children)."""
    if fused:
        return nout, (C_DOT_EDGES if compact else 2 * nin) * nout
    return 2 * nin * nout, nout * (4 * nin - 1)


def _rmsnorm(n, fused, compact=False):
    # sum of squares (2n nodes, 4n-1 links; fused one dot node), / n, + 1e-5, ** -0.5, n products
    if fused:
        return n + 4, (C_DOT_EDGES if compact else 2 * n) + 3 + 2 * n
    return 3 * n + 3, 6 * n + 2


def _softmax(n):
    # per element: + -max, exp, ** -1 of the total, * ; the total: 0 + e0, then + ej
    return 5 * n, 7 * n - 1


def _cross_entropy(vocab, fused):
    # softmax, log, * -1; fused: only the target's probability is made
    if fused:
        return 3 * vocab + 4, 4 * vocab + 4
    nodes, links = _softmax(vocab)
    return nodes + 2, links + 2


def _attention(t, n_head, head_dim, fused, compact=False):
    """One position attending over t cached positions, every head: per head t dots of hd (the
    logits), t scalings, a softmax over t and hd dots over t (the outputs); each dot the seed's
    chain, or fused one dot node (as a linear row: _linear)."""
    hd = head_dim
    if fused:
        nodes = n_head * (7 * t + hd)
        links = n_head * (t * (C_DOT_EDGES if compact else 2 * hd) + t + (7 * t - 1)
                          + hd * (C_DOT_EDGES if compact else 2 * t))
        return nodes, links
    nodes = n_head * (4 * hd * t + 6 * t)
    links = n_head * (t * (4 * hd - 1) + t + (7 * t - 1) + hd * (4 * t - 1))
    return nodes, links


def _add(nodes_links, *more):
    n, e = nodes_links
    for a, b in more:
        n, e = n + a, e + b
    return n, e


def step_graph(config, positions, fused_dots, fused_loss, compact_dots=False):
    """(nodes, links) that one training step over `positions` positions makes (a document of
    positions + 1 tokens, positions <= block_size), not counting the parameters. fused_dots:
    every dot (linear rows, attention's sums, rmsnorm's sum of squares) one node. compact_dots:
    count a fused dot node's links as the C arena's edge entries."""
    c, P = config, positions
    n, V, L = c.n_embd, c.vocab_size, c.n_layer
    # the parts of a position that do not depend on how many positions came before it
    cd = compact_dots
    f = fused_dots
    layer = _add(_rmsnorm(n, f, cd), *[_linear(n, n, f, cd)] * 4, (n, 2 * n),  # q k v o, residual
                 _rmsnorm(n, f, cd), _linear(n, 4 * n, f, cd), (4 * n, 4 * n),  # fc1, relu
                 _linear(4 * n, n, f, cd), (n, 2 * n))  # fc2, residual
    fixed = _add((n, 2 * n), _rmsnorm(n, f, cd), (L * layer[0], L * layer[1]),  # embed, rmsnorm, layers
                 _linear(n, V, f, cd), _cross_entropy(V, fused_loss))
    # attention is linear in t; summed over t = 1..P with sum(t) = P(P+1)/2
    a0 = _attention(0, c.n_head, c.head_dim, f, cd)  # the part that does not grow with t
    a1 = _attention(1, c.n_head, c.head_dim, f, cd)
    slope = (a1[0] - a0[0], a1[1] - a0[1])
    tri = P * (P + 1) // 2
    nodes = P * fixed[0] + L * (P * a0[0] + tri * slope[0])
    links = P * fixed[1] + L * (P * a0[1] + tri * slope[1])
    return nodes + P + 1, links + 2 * P  # the mean of the P losses


def vector_entries(config, positions, fused=True):
    """Vector entries a kernel graph (c kernels, fused, replay) keeps for one step's layer outputs;
    fused, also the two vecs each of attention's output dots reads (the weights once a head, and
    the values' entries), t * (1 + head_dim) a head at a position over t positions."""
    n, c = config.n_embd, config
    outputs = positions * (2 * n + c.n_layer * 18 * n + c.vocab_size)
    if not fused:
        return outputs
    return outputs + c.n_layer * c.n_head * (1 + c.head_dim) * positions * (positions + 1) // 2


def num_params(config):
    """The parameters model.parameter_shapes lists, counted without listing them (a config may
    ask for a billion layers): wte, lm_head, wpe, and per layer q k v o (n x n) and fc1, fc2 (4n x n)."""
    c = config
    return (2 * c.vocab_size + c.block_size) * c.n_embd + c.n_layer * 12 * c.n_embd ** 2


# --- bytes

# the C arena (csrc/arena.c): data, grad, op, seen, edge_begin (32 bits) per node; child (32 bits) and local
# gradient per link; a vec entry (32 bits); the backward's stack and order (32 bits) per node; Adam's m, v
# and the step's m, v, p
C_NODE_BYTES, C_LINK_BYTES, C_VEC_BYTES, C_SCRATCH_BYTES, C_ADAM_BYTES = 8 + 8 + 1 + 4 + 4, 4 + 8, 4, 8 + 8 + 4, 5 * 8
C_INSTR_BYTES = 96  # one recorded kernel call (mg_instr)
C_PROGRAM_BYTES = 200  # a recorded program's own record (mg_program)
C_DENSE_OP_BYTES, C_DENSE_PLAN_BYTES = 152, 152  # a compiled instruction and plan (csrc/dense.c)
C_FIXED_BYTES = 64 * 1024  # the arena's struct and small arrays, with room to spare
# the python backend, fitted to tracemalloc's peak over a training step with some margin
# (tests/test_limits.py checks it): a Value (its object, float, two tuples, its place in the
# backward's order and visited set), and one child with its local gradient. The c backend's
# op-by-op handles die as the layers go: the graph itself is all in the arena.
PY_NODE_BYTES, PY_LINK_BYTES = 260, 32
# per parameter outside the graph: the python backend's Value and moments; its copies kept as
# the last good state (arrays of doubles, made from lists; the c backend keeps none: guard.py); a
# checkpoint's arrays while it is written, a slice of numbers at a time as text (tracemalloc on a
# 51,584-parameter model, which is one slice: 126 bytes a parameter on either backend)
PY_PARAM_BYTES, PY_SNAPSHOT_BYTES, SAVE_BYTES = 190, 50, 30
CHECKPOINT_SLICE = 65536  # the numbers a checkpoint is written (and read) a slice of at a time
SAVE_SLICE_BYTES = 130 * CHECKPOINT_SLICE  # a slice as text, and its numbers' strings


def _capacity(n):
    """The arena's capacity for n elements: doubled from 64 until it holds them."""
    c = 64
    while c < n:
        c *= 2
    return c


def _dense_bytes(config, positions, step_nodes):
    """The dense executor (csrc/dense.c) at its peak: buffers for a step of `positions` positions
    (values and gradients of its vec entries and losses, the kernels' aux and scratch), a plan per
    document length, and the scratch of the longest one's compile (its order check's counts)."""
    c, P, L, H, V = config, positions, config.n_layer, config.n_head, config.vocab_size
    values = vector_entries(c, P, fused=False) + P + 1  # attention's vecs for its dots get no value
    aux = P * (3 * (1 + 2 * L) + V + 3) + L * (P + H * (P * (P + 1) + 2 * P))  # rmsnorms, losses, attention
    n, T4 = c.n_embd, (P + 3) // 4 * 4
    # scratch: attention's and the softmaxes', and the inputs of a linear layer for every position
    # transposed; per position pointers
    scratch = _capacity(max(3 * P, 2 * V, 4 * n * T4)) + _capacity(2 * P + 1)
    buffers = (2 * _capacity(values) + _capacity(aux) + scratch + _capacity(P + 1)) * 8
    calls, rows = 4 + 12 * L, 9 * n * L  # per position: instructions, rows of q k v o fc1 fc2
    s1, s2 = P * (P + 1) // 2, P * (P + 1) * (2 * P + 1) // 6  # sums of the lengths and their squares
    # per plan: its instructions, attention's lists, and the rows' schedules (one position's: the
    # other positions' are the same, shared)
    plans = ((C_DENSE_OP_BYTES + 8) * calls * s1 + 8 * (L * (s2 + s1) + s1) + 8 * (2 * rows * P + P)
             + calls * P + _capacity(P) * C_DENSE_PLAN_BYTES)
    # the parameters the order check keeps a record of: each weight row's first (the rows read
    # as runs: q k v o, fc1, fc2, lm_head), the embeddings' nodes
    params_with_terms = L * 9 * n + V + n * (V + P)
    # node_of and topo (4 bytes an entry) live through the compile; beside them first the rows'
    # (key, instruction, row) triples, then the producer of each value (8), then the order
    # check's record of a node that gets terms (12 bytes; counted for every node, a bound), where
    # step runs end (4), the bitmaps numbering the nodes (12 bytes per 64: counted for the
    # parameters, the step's are a few kB), a run's reach (4) and the gradients (8) of the parameters
    # one instruction of every position reads: an MLP matrix, q k v together, or the embeddings
    throughout = (values + step_nodes) * 4
    structure = max(24 * (rows + V) * P, 8 * values)
    window = max(4 * n * n, 3 * n * n, (V + c.block_size) * n)
    check = ((step_nodes + 1) * (12 + 4) + (num_params(c) // 64 + 2) * 12 + (params_with_terms + 1) * (12 + 4)
             + window * 8)
    compile_scratch = throughout + max(structure, check)
    return buffers + plans + compile_scratch


def _c_arena_bytes(config, mode, positions):
    P = num_params(config)
    fused = mode in ("fused", "replay", "dense")
    nodes, links = step_graph(config, positions, fused, fused, compact_dots=True)
    total = (_capacity(P + nodes) * C_NODE_BYTES + _capacity(links) * C_LINK_BYTES
             + _capacity(P + nodes) * C_SCRATCH_BYTES + _capacity(P) * C_ADAM_BYTES)
    if mode != "seed":  # the step's vecs; the persistent ones are runs of consecutive nodes, not
        # stored (run_start and run_node): the model's weight vecs name its parameters in order, one run
        total += _capacity(vector_entries(config, positions, fused)) * C_VEC_BYTES + _capacity(1) * 16
    if mode in ("replay", "dense"):
        # a recording per document length: each keeps its kernel calls, their operand lists
        # (attention's key and value offsets, the mean's losses) and its backward order
        L = config.n_layer
        calls, lists = 4 + 12 * L, lambda length: L * length * (length + 1) + length

        def program(length, length_nodes):  # its order (32 bits a node), calls, lists, tokens and loss positions
            return length_nodes * 4 + (lists(length) + 2 * length + 1) * 8 + (length * calls + 1) * C_INSTR_BYTES
        if positions <= 256:
            for length in range(1, positions + 1):
                total += program(length, step_graph(config, length, True, True)[0])
        else:  # bounded above by the longest one, for every length
            total += positions * program(positions, nodes)
        # the tape being recorded, and the programs' table
        total += (_capacity(positions * calls + 1) * C_INSTR_BYTES + _capacity(lists(positions)) * 8
                  + _capacity(positions) * C_PROGRAM_BYTES)
    if mode == "dense":
        total += _dense_bytes(config, positions, nodes)
    # the kernels' scratch (attention: 3 per position, cross-entropy: 3 per logit) and the arena itself
    kernel_scratch = 3 * positions if mode == "seed" else max(3 * positions, 3 * config.vocab_size)
    return total + _capacity(kernel_scratch) * 8 + C_FIXED_BYTES


def estimate_bytes(config, backend, mode, saving=True):
    """Bytes a training run of this config needs at its peak, on backend 'python' or 'c' with
    graph mode 'seed', 'kernels', 'fused', 'replay' or 'dense'. Pure arithmetic: instant for any size."""
    P = num_params(config)
    positions = config.block_size
    save = P * SAVE_BYTES + SAVE_SLICE_BYTES if saving else 0
    if backend == "python":
        fused = mode != "seed"
        nodes, links = step_graph(config, positions, fused, fused)
        return P * (PY_PARAM_BYTES + PY_SNAPSHOT_BYTES) + save + nodes * PY_NODE_BYTES + links * PY_LINK_BYTES
    return _c_arena_bytes(config, mode, positions) + save


MAX_THREADS = 64  # csrc/pool.h's MGI_MAX_THREADS


def default_threads():
    """Threads a large model's step may be split over (the dense graph): the CPUs this process may run on."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_THREADS))


def available_bytes():
    """MemAvailable from /proc/meminfo, or None where there is no such file."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


_UNITS = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}


def parse_size(text):
    """'512M', '2G', '1.5G', '100000' (bytes) -> bytes; ValueError with a message otherwise."""
    s = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = s[-1:] if s[-1:] in _UNITS and s[-1:] else ""
    try:
        value = float(s[:len(s) - len(unit)])
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{text!r} is not a size: give a positive size such as 512M or 2G")
    return int(value * _UNITS[unit])


def format_bytes(n):
    for unit, size in (("TiB", 2 ** 40), ("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n} bytes"


def check_memory(config, backend, mode, max_memory=None, saving=True):
    """Refuse a config whose estimate exceeds max_memory (bytes), else MemAvailable."""
    need = estimate_bytes(config, backend, mode, saving)
    limit, what = max_memory, "the limit given (--max-memory, max_memory)"
    if limit is None:
        limit, what = available_bytes(), "available memory (MemAvailable)"
    if limit is not None and need > limit:
        c = config
        raise MemoryLimitError(
            f"this model needs an estimated {format_bytes(need)} ({num_params(c):,} parameters, n_layer "
            f"{c.n_layer}, n_embd {c.n_embd}, block_size {c.block_size}, {backend} backend) but {what} "
            f"is {format_bytes(limit)}")
    return need


def regular_file_size(path, what):
    """Size of a regular file, or a ValueError naming it: devices, pipes and folders are refused
    before a byte is read (/dev/zero would be read until memory runs out)."""
    import stat
    st = os.stat(path)
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{what} {path} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{what} {path} is not a regular file (a device, pipe or socket)")
    return st.st_size
