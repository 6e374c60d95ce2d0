"""Graphs: what the model and the trainer need from a backend, and the python backend's graph.

A graph owns the parameters, builds a training step's nodes through its layers, runs backward
and the Adam update. The model definition (model.py) is written once against this interface;
every graph builds the same scalar nodes or fused ones with the same bits, so every one gives
the same numbers. A graph is made of two parts:

- its Layers: how a vector is represented and how each layer builds its nodes (the seed's
  Python over Value objects, here; C kernels over vecs of an arena, cgraph.py);
- the rest (Graph): where the parameters and Adam's moments live, a step's lifecycle, backward.

The graph modes and which backend builds which are listed once, in modes.py.
"""
import threading
from abc import ABC, abstractmethod
from array import array

from . import layers
from .engine import Value
from .optim import BETA1, BETA2, EPS, LEARNING_RATE, learning_rate


class Layers(ABC):
    """The layers the model calls, over the graph's own representation of vectors."""

    @abstractmethod
    def matrix(self, values, nout, nin):
        """A parameter matrix of nout rows of nin from values, row by row (an array of doubles:
        each becomes a parameter)."""

    @abstractmethod
    def embed(self, wte, wpe, token_id, pos_id): """wte[token_id] + wpe[pos_id]"""

    @abstractmethod
    def add(self, x, y): ...

    @abstractmethod
    def scale(self, x, c): ...

    @abstractmethod
    def relu(self, x): ...

    @abstractmethod
    def linear(self, x, w): ...

    @abstractmethod
    def rmsnorm(self, x): ...

    @abstractmethod
    def softmax(self, x): ...

    @abstractmethod
    def attention(self, q, keys, values, n_head): """all heads at one position, over the KV cache"""

    @abstractmethod
    def cross_entropy(self, logits, target): """-log(softmax(logits)[target]): a node"""

    @abstractmethod
    def mean(self, losses): """(1/n) * sum(losses): a node"""

    @abstractmethod
    def item(self, node): """a node's value as a float"""

    @abstractmethod
    def data(self, vec): """a vector's values as floats"""


class ScalarLayers(Layers):
    """The seed's layers over scalar Values (layers.py), vectors as lists: the python backend's,
    and the c backend's op by op. new_param(x) makes one parameter Value. Fused, each linear row
    is one dot node and a cross-entropy makes only the target's probability: same bits."""

    def __init__(self, new_param, fused):
        self.new_param = new_param
        self._linear = layers.linear_fused if fused else layers.linear
        self._cross_entropy = layers.cross_entropy_fused if fused else layers.cross_entropy
        self._attention = layers.attention_fused if fused else layers.attention
        self._rmsnorm = layers.rmsnorm_fused if fused else layers.rmsnorm

    def matrix(self, values, nout, nin):
        return [[self.new_param(values[r * nin + j]) for j in range(nin)] for r in range(nout)]

    def embed(self, wte, wpe, token_id, pos_id):
        return layers.embed(wte, wpe, token_id, pos_id)

    def add(self, x, y): return layers.add(x, y)
    def scale(self, x, c): return layers.scale(x, c)
    def relu(self, x): return layers.relu(x)
    def linear(self, x, w): return self._linear(x, w)
    def rmsnorm(self, x): return self._rmsnorm(x)
    def softmax(self, x): return layers.softmax(x)
    def attention(self, q, keys, values, n_head): return self._attention(q, keys, values, n_head)
    def cross_entropy(self, logits, target): return self._cross_entropy(logits, target)
    def mean(self, losses): return layers.mean(losses)
    def item(self, node): return node.data
    def data(self, vec): return [v.data for v in vec]


class Graph(ABC):
    """What the model (parameters, layers) and the trainer (a step, backward, Adam) call.

    lock serializes the graph's use between threads: a training step, sampling and the Python
    API's calls hold it (training.py, api.py), so threads sharing a model take turns."""
    backend: str            # 'python' or 'c'
    mode: str               # a graph mode of modes.py
    adam_is_atomic = False  # True: an Adam step that fails changes nothing (guard.py)
    layers: Layers
    lock: threading.RLock

    @abstractmethod
    def finish_params(self):
        """Every parameter is made: set up Adam (and anything else that needs them all)."""

    @abstractmethod
    def param_data(self):
        """Every parameter's value, state_dict order, row by row."""

    @abstractmethod
    def set_param_data(self, values): ...

    @abstractmethod
    def begin_step(self):
        """Drop the previous step's graph; the next nodes belong to a new step."""

    def training_loss(self, model, tokens):
        """The loss of one document; a graph may build it its own way (replay.py)."""
        return model.loss(tokens)

    @abstractmethod
    def backward(self, loss): ...

    def item(self, node):
        """A node's value as a float (the loss, for the trainer)."""
        return self.layers.item(node)

    @abstractmethod
    def adam_step(self, step, num_steps, lr=LEARNING_RATE):
        """The seed's Adam with its linear learning-rate decay; zeroes the gradients."""

    @abstractmethod
    def adam_state(self):
        """(first moments, second moments) as lists of floats."""

    @abstractmethod
    def set_adam_state(self, m, v): ...

    def param_chunks(self):
        """The parameters in order, as arrays of doubles, each used before the next is asked for
        (a backend may refill one array: see CGraph's)."""
        yield array('d', self.param_data())

    def state_arrays(self, into=None):
        """(parameters, first moments, second moments) as arrays of doubles, 8 bytes a number (a
        list holds a 24-byte float object for each, and a pointer): new ones, or `into`'s filled in
        place. set_param_data and set_adam_state take them back."""
        lists = (self.param_data(), *self.adam_state())
        if into is None:
            return tuple(array('d', x) for x in lists)
        for a, x in zip(into, lists):
            a[:] = array('d', x)
        return into

    def set_threads(self, threads):
        """Let a step use up to `threads` threads (the same bits for any number); the number it may
        use. The python backend uses one."""
        return 1

    def node_count(self):
        """Scalar nodes alive now (parameters included), or None where the graph cannot tell."""
        return None

    def c_calls(self):
        """Python-to-C calls made so far, or None for a graph that makes none."""
        return None


class PythonGraph(Graph):
    """The python backend: the seed's Values, layers and Adam in plain Python."""
    backend = "python"

    def __init__(self, fused=True):
        self.lock = threading.RLock()
        self.params = []
        self.mode = "fused" if fused else "seed"
        self.layers = ScalarLayers(self.param, fused)
        self.differentiated = False  # backward ran in this step

    def param(self, x):
        v = Value(x)
        self.params.append(v)
        return v

    def finish_params(self):
        self.m = [0.0] * len(self.params)
        self.v = [0.0] * len(self.params)

    def param_data(self):
        return [p.data for p in self.params]

    def set_param_data(self, values):
        if len(values) != len(self.params):
            raise ValueError(f"expected {len(self.params)} parameter values, got {len(values)}")
        for p, x in zip(self.params, values):
            p.data = x

    def begin_step(self):
        self.differentiated = False

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
        m, v = self.m, self.v
        lr_t = learning_rate(lr, step, num_steps)
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
        if not len(m) == len(v) == len(self.params):
            raise ValueError(f"expected {len(self.params)} Adam moments, got {len(m)} and {len(v)}")
        self.m, self.v = list(m), list(v)
