"""The python backend's scalar autograd: the seed's Value, in plain Python.

Every value and local gradient is the same Python expression the seed evaluates, and backward()
visits nodes in the seed's order, so results match the seed to the last bit. Differences that
change no bit of the seed's model:
- A plain number in an operation is folded into the node (`x + 2` is one node with one child)
  instead of becoming a constant leaf: a leaf with no children receives a gradient nobody reads.
- backward() is iterative, so graphs deeper than Python's recursion limit work.
- Data are floats: a leaf made from an int holds a float, and relu gives 0.0 where the seed's
  max(0, x) gives the int 0. An int zero differs from 0.0 only in int-only arithmetic
  (0 * -1 is +0, 0.0 * -1 is -0.0), which the model never does, and the c backend holds doubles.

dot() is the one addition: the seed's `sum(w * x for w, x in zip(ws, xs))` as a single node.
"""
import math
from itertools import chain

from .ops import DerivedOps

_COMPLEX_POW = "negative base to a fractional power: the result would be complex"


def real_pow(x, k):
    """x ** k as Python computes it, refusing the complex result Python gives a negative base."""
    r = x ** k
    if type(r) is complex:
        raise ValueError(_COMPLEX_POW)
    return r


_DONE = object()  # stack marker in backward(): the node below it has had all its children searched


class Value(DerivedOps):
    """A scalar in the graph: its data, its gradient, and how it was made: its children and the
    local gradients d self / d child, followed by the op's name (micrograd's _op, for teaching
    tools; backward's zip stops at the last child, so it never reads the name, and storing it
    there costs the seed's hot path nothing)."""
    __slots__ = ('data', 'grad', '_children', '_local_grads', '_label')
    backend = "python"

    def __init__(self, data, children=(), local_grads=()):
        if not children and type(data) is not float:
            data = float(data)  # leaves hold doubles, as on the c backend, so ints never do int arithmetic
        self.data = data
        self.grad = 0
        self._children = children
        self._local_grads = local_grads

    # other is a Value or a number. A c-backend Value as other is refused by its own reflected
    # operator, which the number branch calls (native.py), so this hot path pays nothing for it.
    def __add__(self, other):
        if isinstance(other, Value):
            return Value(self.data + other.data, (self, other), (1, 1, '+'))
        return Value(self.data + other, (self,), (1, '+'))

    def __mul__(self, other):
        if isinstance(other, Value):
            return Value(self.data * other.data, (self, other), (other.data, self.data, '*'))
        return Value(self.data * other, (self,), (other, '*'))

    def __pow__(self, other):
        if isinstance(other, DerivedOps):
            raise TypeError("Value ** Value is not supported: the exponent must be a number")
        return Value(real_pow(self.data, other), (self,), (other * real_pow(self.data, other - 1), '**'))

    def log(self): return Value(math.log(self.data), (self,), (1 / self.data, 'log'))
    def exp(self): return Value(math.exp(self.data), (self,), (math.exp(self.data), 'exp'))
    def relu(self): return Value(self.data if self.data > 0 else 0.0, (self,), (float(self.data > 0), 'relu'))
    # -x, x - y, x / y and the reflected forms: ops.DerivedOps, as the seed derives them

    @property
    def _op(self):
        grads = self._local_grads
        return grads[-1] if len(grads) > len(self._children) else ''

    @property
    def label(self):
        return getattr(self, '_label', '')

    @label.setter
    def label(self, text):
        self._label = str(text)

    @property
    def _prev(self):
        """micrograd's name: the distinct children, as a set (_children keeps order and repeats)."""
        return set(self._children)

    def __repr__(self):
        return f"Value(data={self.data!r}, grad={self.grad!r})"

    def backward(self):
        # Topological order by depth-first search, children in order, post-order, exactly as the
        # seed's recursive build_topo. Iterative: a node's children go on the stack in reverse so
        # the first is searched first, above a marker that appends the node once they are done.
        topo, visited, stack = [], set(), [self]
        while stack:
            v = stack.pop()
            if v is _DONE:
                topo.append(stack.pop())
            elif v not in visited:
                visited.add(v)
                if v._children:
                    stack += (v, _DONE)
                    stack += reversed(v._children)
                else:
                    topo.append(v)
        # then the chain rule, one node at a time, from the output back
        self.grad = 1
        for v in reversed(topo):
            grad = v.grad
            for child, local_grad in zip(v._children, v._local_grads):
                child.grad += local_grad * grad


def dot(ws, xs):
    """sum(w * x for w, x in zip(ws, xs)) as one node, with the same value and gradients.

    The value is summed in the seed's order (0 + w0*x0, then + w1*x1, ...). Its children are
    (w0, x0, w1, x1, ...), which the search in backward() visits in the order the chain of
    products would. Each child receives its one gradient term, local_grad * grad, exactly as
    through the chain (whose sum and product nodes pass grad on unchanged), so when the
    children are distinct Values, as in a linear layer or attention's sums, every bit of every
    gradient is the chain's. So it is for dot(x, x) (rmsnorm's sum of squares): each x_i is in
    its own pair only, and gets the two terms the chain's x_i * x_i node gives it. It saves two
    nodes per term, which is most of the seed's graph.
    """
    wd = [w.data for w in ws]
    xd = [x.data for x in xs]
    total = 0
    for a, b in zip(wd, xd):
        total += a * b
    local_grads = tuple(chain(chain.from_iterable(zip(xd, wd)), ('dot',)))
    return Value(total, tuple(chain.from_iterable(zip(ws, xs))), local_grads)
