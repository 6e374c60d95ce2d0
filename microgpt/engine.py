"""The python backend's scalar autograd: the seed's Value, in plain Python.

Every value and local gradient is the same Python expression the seed evaluates, and backward()
visits nodes in the seed's order, so results match the seed to the last bit. Two differences,
neither of which changes a bit:
- A plain number in an operation is folded into the node (`x + 2` is one node with one child)
  instead of becoming a constant leaf: a leaf with no children receives a gradient nobody reads.
- backward() is iterative, so graphs deeper than Python's recursion limit work.
"""
import math

_COMPLEX_POW = "negative base to a fractional power: the result would be complex"


def real_pow(x, k):
    """x ** k as Python computes it, refusing the complex result Python gives a negative base."""
    r = x ** k
    if type(r) is complex:
        raise ValueError(_COMPLEX_POW)
    return r


class Value:
    """A scalar in the graph: its data, its gradient, and how it was made."""
    __slots__ = ('data', 'grad', '_children', '_local_grads')

    def __init__(self, data, children=(), local_grads=()):
        self.data = data
        self.grad = 0
        self._children = children
        self._local_grads = local_grads

    def __add__(self, other):
        if isinstance(other, Value):
            return Value(self.data + other.data, (self, other), (1, 1))
        return Value(self.data + other, (self,), (1,))

    def __mul__(self, other):
        if isinstance(other, Value):
            return Value(self.data * other.data, (self, other), (other.data, self.data))
        return Value(self.data * other, (self,), (other,))

    def __pow__(self, other):
        if isinstance(other, Value):
            raise TypeError("Value ** Value is not supported: the exponent must be a number")
        return Value(real_pow(self.data, other), (self,), (other * real_pow(self.data, other - 1),))

    def log(self): return Value(math.log(self.data), (self,), (1 / self.data,))
    def exp(self): return Value(math.exp(self.data), (self,), (math.exp(self.data),))
    def relu(self): return Value(max(0, self.data), (self,), (float(self.data > 0),))
    def __neg__(self): return self * -1
    def __radd__(self, other): return self + other
    def __sub__(self, other): return self + (-other)
    def __rsub__(self, other): return other + (-self)
    def __rmul__(self, other): return self * other
    def __truediv__(self, other): return self * other**-1
    def __rtruediv__(self, other): return other * self**-1

    def __repr__(self):
        return f"Value(data={self.data!r}, grad={self.grad!r})"

    def backward(self):
        # Topological order by depth-first search, children in order, post-order, exactly as the
        # seed's recursive build_topo; an explicit stack of (node, next child) replaces recursion.
        topo, visited = [], {id(self)}
        stack = [(self, iter(self._children))]
        while stack:
            node, children = stack[-1]
            for child in children:
                if id(child) not in visited:
                    visited.add(id(child))
                    stack.append((child, iter(child._children)))
                    break
            else:
                stack.pop()
                topo.append(node)
        # then the chain rule, one node at a time, from the output back
        self.grad = 1
        for v in reversed(topo):
            for child, local_grad in zip(v._children, v._local_grads):
                child.grad += local_grad * v.grad
