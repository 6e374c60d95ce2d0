"""The c backend's graph: parameters, Adam's moments and every step's nodes in one C arena
(native.Arena), with the layers built one of two ways:

- ScalarLayers (graphs.py) over CValue handles: the seed's Python layers, one C call per op;
- KernelLayers: one C call per layer (csrc/layers.c), vectors as vecs of the arena.

In replay mode a Tape (replay.py) records each document length's step once and replays it; in
dense mode each recording is also compiled into a plan that runs without nodes (dense.py).
"""
import weakref
from array import array

from .graphs import Graph, Layers, ScalarLayers
from .native import Arena, CValue, check, doubles, ffi, lib
from .optim import BETA1, BETA2, EPS, LEARNING_RATE, learning_rate
from .dense import Dense, DenseLoss
from .replay import Tape


class KernelLayers(Layers):
    """Each layer one C call. A vector is (vec handle, length); a matrix (vec handle, rows, cols).
    tape is the C tape being recorded, or NULL."""

    def __init__(self, graph, fused):
        self.graph, self.fused = graph, 1 if fused else 0
        self.ptr = graph.arena.ptr
        self.tape = ffi.NULL

    def matrix(self, values, nout, nin):
        first = self.graph.new_params(values)
        return (check(lib.mg_vec_range(self.ptr, first, nout * nin)), nout, nin)

    def embed(self, wte, wpe, token_id, pos_id):
        if not (0 <= token_id < wte[1] and 0 <= pos_id < wpe[1]):
            raise IndexError(f"embedding row out of range: token {token_id} of {wte[1]}, position {pos_id} of {wpe[1]}")
        return (check(lib.mg_k_embed(self.ptr, self.tape, wte[0], wte[1], wpe[0], wpe[1], wte[2], token_id, pos_id)),
                wte[2])

    def add(self, x, y):
        return (check(lib.mg_k_add(self.ptr, self.tape, x[0], y[0], x[1])), x[1])

    def scale(self, x, c):
        return (check(lib.mg_k_scale(self.ptr, self.tape, x[0], x[1], c)), x[1])

    def relu(self, x):
        return (check(lib.mg_k_relu(self.ptr, self.tape, x[0], x[1])), x[1])

    def linear(self, x, w):
        wh, nout, nin = w
        if x[1] != nin:
            raise ValueError(f"linear: input has {x[1]} elements, the matrix {nin} columns")
        return (check(lib.mg_k_linear(self.ptr, self.tape, x[0], nin, wh, nout, self.fused)), nout)

    def rmsnorm(self, x):
        return (check(lib.mg_k_rmsnorm(self.ptr, self.tape, x[0], x[1], self.fused)), x[1])

    def softmax(self, x):
        return (check(lib.mg_k_softmax(self.ptr, self.tape, x[0], x[1])), x[1])

    def attention(self, q, keys, values, n_head):
        qh, n = q
        out = lib.mg_k_attention(self.ptr, self.tape, qh, [k[0] for k in keys], [v[0] for v in values],
                                 len(keys), n_head, n // n_head, self.fused)
        return (check(out), n)

    def cross_entropy(self, logits, target):
        return check(lib.mg_k_cross_entropy(self.ptr, self.tape, logits[0], logits[1], target, self.fused))

    def mean(self, losses):
        return check(lib.mg_k_mean(self.ptr, self.tape, losses, len(losses)))

    def item(self, node):
        return self.graph.arena.get(lib.mg_get_data, node)

    def data(self, vec):
        out = ffi.new("double[]", vec[1])
        check(lib.mg_vec_data(self.ptr, vec[0], vec[1], out))
        return list(out)


class CGraph(Graph):
    """mode 'seed' (one C call per scalar op), 'kernels', 'fused', 'replay' or 'dense' (modes.py)."""
    backend = "c"
    adam_is_atomic = True   # mg_adam_step: a step that fails changes nothing

    def __init__(self, mode):
        self.mode = mode
        self.arena = Arena()
        self.lock = self.arena.lock  # one lock for the graph and its arena
        self.nparams = 0
        # the layers reach the graph through a weak reference: a cycle would keep the arena's C
        # memory and the executor's threads until Python's cycle collector ran, which counts
        # objects, not the megabytes behind them
        graph = weakref.proxy(self)
        if mode == "seed":
            self.layers = ScalarLayers(lambda x: graph._param_value(x), fused=False)
        else:
            self.layers = KernelLayers(graph, fused=(mode != "kernels"))
        self.tape = Tape(self.arena, self.layers) if mode in ("replay", "dense") else None
        self.dense = Dense(self.arena, self.tape) if mode == "dense" else None

    # --- parameters: the arena's first nparams nodes
    def new_params(self, values):
        """Parameters with these values: the first one's node index (the rest follow it)."""
        first = self.arena.leaves(values)
        self.nparams += len(values)
        return first

    def _param_value(self, x):
        return CValue._wrap(self.arena, self.new_params([x]))

    def finish_params(self):
        self.arena.keep()
        check(lib.mg_adam_init(self.arena.ptr, self.nparams))

    def param_data(self):
        return self.arena.read_data(0, self.nparams)

    def set_param_data(self, values):
        if len(values) != self.nparams:
            raise ValueError(f"expected {self.nparams} parameter values, got {len(values)}")
        self.arena.write_data(0, values)

    # --- a step
    def begin_step(self):
        self.arena.reset()

    def training_loss(self, model, tokens):
        if self.dense:
            return self.dense.training_loss(model, tokens)
        return self.tape.training_loss(model, tokens) if self.tape else model.loss(tokens)

    def item(self, node):
        return node.value if isinstance(node, DenseLoss) else self.layers.item(node)

    def backward(self, loss):
        if self.dense:
            self.dense.backward(loss)
        elif self.tape:
            self.tape.backward(loss)
        elif self.mode == "seed":
            loss.backward()
        else:
            check(lib.mg_backward(self.arena.ptr, loss))

    def adam_step(self, step, num_steps, lr=LEARNING_RATE):
        if num_steps <= 0:
            raise ValueError(f"num_steps must be positive, got {num_steps}")
        lr_t = learning_rate(lr, step, num_steps)
        if self.dense:  # over the dense executor's threads
            self.dense.adam_step(lr_t, step)
        else:
            check(lib.mg_adam_step(self.arena.ptr, lr_t, BETA1, BETA2, EPS, step))

    def set_threads(self, threads):
        """Threads the dense graph's layers and Adam may use (the other modes: one)."""
        return self.dense.set_threads(threads) if self.dense else 1

    def adam_state(self):
        m = ffi.new("double[]", self.nparams)
        v = ffi.new("double[]", self.nparams)
        check(lib.mg_adam_read(self.arena.ptr, m, v))
        return list(m), list(v)

    def set_adam_state(self, m, v):
        if not len(m) == len(v) == self.nparams:
            raise ValueError(f"expected {self.nparams} Adam moments, got {len(m)} and {len(v)}")
        check(lib.mg_adam_write(self.arena.ptr, doubles(m), doubles(v)))

    def param_chunks(self, size=65536):
        # one 512 KB array refilled: a d128 model's whole parameters would be 6.4 MB more at the
        # run's end, where its digest is taken
        chunk = array('d', [0.0]) * min(size, self.nparams)
        for first in range(0, self.nparams, size):
            n = min(size, self.nparams - first)
            check(lib.mg_read_data(self.arena.ptr, first, n, ffi.from_buffer("double[]", chunk)))
            yield chunk if n == len(chunk) else chunk[:n]

    def state_arrays(self, into=None):
        # straight from the arena into the arrays: no float objects on the way
        into = into or tuple(array('d', [0.0]) * self.nparams for _ in range(3))
        params, m, v = (ffi.from_buffer("double[]", a) for a in into)
        check(lib.mg_read_data(self.arena.ptr, 0, self.nparams, params))
        check(lib.mg_adam_read(self.arena.ptr, m, v))
        return into

    def node_count(self):
        return self.arena.nodes

    def c_calls(self):
        return self.arena.calls
