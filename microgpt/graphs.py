"""Graphs: what a model needs from a backend, one class per way of building the graph.

A graph makes the parameters, supplies the layer kernels the model calls (add, linear, rmsnorm,
attention, ...), runs backward and the Adam update. The model definition (model.py) is written
once against this interface; every graph class builds the same scalar nodes, so every one gives
the same bits.

- PythonGraph: the python backend, the seed's Values and layers in plain Python (by default
               with each linear row one fused dot node, engine.dot: same bits, fewer nodes).
- COpsGraph:   Values are handles into a C arena, one C call per scalar op; layers are the same
               Python functions as PythonGraph's. Backward and Adam run in C.
- CKernelGraph: each layer is one C call that builds that layer's nodes; vectors stay in C as
               runs of node ids. With fused=True a linear row is one fused dot node instead of a
               chain of products and sums (same bits; see csrc/kernels.c).
- CReplayGraph (replay.py): CKernelGraph, fused, whose training steps are recorded once per
               document length and replayed by one C call (csrc/tape.c).
"""
from . import layers
from .engine import Value

LEARNING_RATE, BETA1, BETA2, EPS = 0.01, 0.85, 0.99, 1e-8


class Graph:
    def training_loss(self, model, tokens):
        """The loss of one document; a graph may build it its own way (see replay.py)."""
        return model.loss(tokens)


class PythonGraph(Graph):
    """fused=True (the default) builds each linear row as one dot node (engine.dot): same bits."""
    backend = "python"

    def __init__(self, fused=True):
        self.params = []
        self.mode = "fused" if fused else "seed"
        self.differentiated = False  # backward ran in this step
        if fused:
            self.linear = layers.linear_fused

    # --- parameters
    def param(self, x):
        v = Value(x)
        self.params.append(v)
        return v

    def matrix(self, rows):
        return rows

    def row(self, matrix, i):
        return matrix[i]

    def finish_params(self):
        self.m = [0.0] * len(self.params)
        self.v = [0.0] * len(self.params)

    def param_data(self):
        return [p.data for p in self.params]

    def set_param_data(self, values):
        for p, x in zip(self.params, values, strict=True):
            p.data = x

    # --- a step
    def begin_step(self):
        self.differentiated = False

    add, scale, relu, linear = (staticmethod(f) for f in (layers.add, layers.scale, layers.relu, layers.linear))
    embed = staticmethod(layers.embed)
    rmsnorm, softmax, attention = (staticmethod(f) for f in (layers.rmsnorm, layers.softmax, layers.attention))
    cross_entropy, mean = staticmethod(layers.cross_entropy), staticmethod(layers.mean)

    def item(self, node):
        return node.data

    def data(self, vec):
        return [v.data for v in vec]

    def backward(self, loss):
        # The seed's chain of sums and products keeps the gradients of a first backward and
        # adds a second one's to them; a fused dot node has no such nodes, so only the first
        # backward of a step gives the seed's bits (the c backend refuses the same way).
        if self.mode == "fused" and self.differentiated:
            raise ValueError("this step's graph has fused nodes and was differentiated already: a second "
                             "backward would not give the seed's gradients; build the step again")
        self.differentiated = True
        loss.backward()

    def adam_step(self, step, num_steps, lr=LEARNING_RATE):
        """The seed's Adam with linear learning-rate decay; zeroes the gradients."""
        m, v = self.m, self.v
        lr_t = lr * (1 - step / num_steps)
        for i, p in enumerate(self.params):
            m[i] = BETA1 * m[i] + (1 - BETA1) * p.grad
            v[i] = BETA2 * v[i] + (1 - BETA2) * p.grad ** 2
            m_hat = m[i] / (1 - BETA1 ** (step + 1))
            v_hat = v[i] / (1 - BETA2 ** (step + 1))
            p.data -= lr_t * m_hat / (v_hat ** 0.5 + EPS)
            p.grad = 0

    def adam_state(self):
        return list(self.m), list(self.v)

    def set_adam_state(self, m, v):
        self.m, self.v = list(m), list(v)

    def nodes(self):
        return None


class _CGraph(Graph):
    """What both C graphs share: the arena, the parameters at its start, backward and Adam."""
    backend = "c"

    def __init__(self):
        from .native import Arena, check, ffi, lib
        self._ffi, self._lib, self._check = ffi, lib, check
        self.arena = Arena()
        self.nparams = 0

    def _leaf(self, x):
        self.nparams += 1
        return self._check(self._lib.mg_leaf(self.arena.ptr, x))

    def finish_params(self):
        self.arena.keep()
        self._check(self._lib.mg_adam_init(self.arena.ptr, self.nparams))

    def param_data(self):
        return self.arena.read_data(0, self.nparams)

    def set_param_data(self, values):
        if len(values) != self.nparams:
            raise ValueError(f"expected {self.nparams} parameter values, got {len(values)}")
        self.arena.write_data(0, values)

    def begin_step(self):
        self.arena.reset()

    def adam_step(self, step, num_steps, lr=LEARNING_RATE):
        self._check(self._lib.mg_adam_step(self.arena.ptr, lr, BETA1, BETA2, EPS, step, num_steps))

    def adam_state(self):
        m = self._ffi.new("double[]", self.nparams)
        v = self._ffi.new("double[]", self.nparams)
        self._check(self._lib.mg_adam_read(self.arena.ptr, m, v))
        return list(m), list(v)

    def set_adam_state(self, m, v):
        if not len(m) == len(v) == self.nparams:
            raise ValueError(f"expected {self.nparams} Adam moments, got {len(m)} and {len(v)}")
        new = self._ffi.new
        self._check(self._lib.mg_adam_write(self.arena.ptr, new("double[]", m), new("double[]", v)))

    def nodes(self):
        return self.arena.nodes


class COpsGraph(_CGraph, PythonGraph):
    """C arena, but the layers are the seed's Python, one C call per scalar op."""
    mode = "seed"

    def param(self, x):
        from .native import CValue
        return CValue._wrap(self.arena, self._leaf(x))

    def backward(self, loss):
        loss.backward()


class CKernelGraph(_CGraph):
    """Each layer one C call; a vector is (vec handle, length), a matrix (vec handle, rows, cols)."""

    def __init__(self, fused=False):
        super().__init__()
        self.fused = fused
        self.mode = "fused" if fused else "kernels"
        self.arena.set_fused(fused)
        lib, ptr, check = self._lib, self.arena.ptr, self._check
        # bind the hot C calls once: each layer below is one call plus a tuple
        self._k = (lib, ptr, check)

    def param(self, x):
        return self._leaf(x)

    def matrix(self, rows):
        nrows, ncols = len(rows), len(rows[0])
        return (self._check(self._lib.mg_vec_range(self.arena.ptr, rows[0][0], nrows * ncols)), nrows, ncols)

    def row(self, matrix, i):
        h, nrows, ncols = matrix
        if not 0 <= i < nrows:
            raise IndexError(f"row {i} out of range for a matrix of {nrows} rows")
        return (h + i * ncols, ncols)

    def embed(self, wte, wpe, token_id, pos_id):
        lib, ptr, check = self._k
        h = lib.mg_k_embed(ptr, wte[0], wte[1], wpe[0], wpe[1], wte[2], token_id, pos_id)
        if h < 0:
            self.row(wte, token_id), self.row(wpe, pos_id)  # an index out of range: IndexError
        return (check(h), wte[2])

    def add(self, x, y):
        lib, ptr, check = self._k
        return (check(lib.mg_k_add(ptr, x[0], y[0], x[1])), x[1])

    def scale(self, x, c):
        lib, ptr, check = self._k
        return (check(lib.mg_k_scale(ptr, x[0], x[1], c)), x[1])

    def relu(self, x):
        lib, ptr, check = self._k
        return (check(lib.mg_k_relu(ptr, x[0], x[1])), x[1])

    def linear(self, x, w):
        lib, ptr, check = self._k
        wh, nout, nin = w
        if x[1] != nin:
            raise ValueError(f"linear: input has {x[1]} elements, the matrix {nin} columns")
        return (check(lib.mg_k_linear(ptr, x[0], nin, wh, nout)), nout)

    def rmsnorm(self, x):
        lib, ptr, check = self._k
        return (check(lib.mg_k_rmsnorm(ptr, x[0], x[1])), x[1])

    def softmax(self, x):
        lib, ptr, check = self._k
        return (check(lib.mg_k_softmax(ptr, x[0], x[1])), x[1])

    def attention(self, q, keys, values, n_head):
        lib, ptr, check = self._k
        qh, n = q
        out = lib.mg_k_attention(ptr, qh, [k[0] for k in keys], [v[0] for v in values], len(keys),
                                 n_head, n // n_head)
        return (check(out), n)

    def cross_entropy(self, logits, target):
        lib, ptr, check = self._k
        return check(lib.mg_k_cross_entropy(ptr, logits[0], logits[1], target))

    def mean(self, losses):
        lib, ptr, check = self._k
        return check(lib.mg_k_mean(ptr, losses, len(losses)))

    def item(self, node):
        return self.arena.get(self._lib.mg_get_data, node)

    def data(self, vec):
        out = self._ffi.new("double[]", vec[1])
        self._check(self._lib.mg_vec_data(self.arena.ptr, vec[0], vec[1], out))
        return list(out)

    def backward(self, loss):
        self._check(self._lib.mg_backward(self.arena.ptr, loss))


GRAPH_MODES = ("auto", "seed", "kernels", "fused", "replay")


def new_graph(backend=None, mode="auto"):
    """A graph for backend 'python', 'c' or 'auto' (None: the live choice), built in one of
    GRAPH_MODES: 'seed', the seed's graph one scalar op at a time; 'kernels' (c only), the same
    graph one C call per layer; 'fused', linear rows as fused dot nodes; 'replay' (c only),
    'fused' with each training step recorded once per document length and replayed in C
    (replay.py); 'auto' (default), the fastest the backend has: replay on c, fused on python.
    All give the same bits."""
    from .backend import resolve
    if mode not in GRAPH_MODES:
        raise ValueError(f"unknown graph mode {mode!r}: choose one of {', '.join(GRAPH_MODES)}")
    backend = resolve(backend)
    if mode == "auto":
        mode = "replay" if backend == "c" else "fused"
    if backend == "python":
        if mode in ("kernels", "replay"):
            raise ValueError(f"graph mode {mode!r} needs the c backend")
        return PythonGraph(fused=(mode == "fused"))
    if mode == "seed":
        return COpsGraph()
    if mode == "replay":
        from .replay import CReplayGraph  # replay.py builds on this module's CKernelGraph
        return CReplayGraph()
    return CKernelGraph(fused=(mode == "fused"))
