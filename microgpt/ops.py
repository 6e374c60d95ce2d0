"""The operators the seed derives from +, * and **, written once for both Value classes, and the
one error for an operation between Values that cannot meet.

engine.Value (python backend) and native.CValue (c backend) define +, *, ** and the unary ops;
these follow from them exactly as the seed writes them, so both backends build the same nodes.
"""


class DerivedOps:
    __slots__ = ()

    def __neg__(self): return self * -1
    def __radd__(self, other): return self + other
    def __sub__(self, other): return self + (-other)
    def __rsub__(self, other): return other + (-self)
    def __rmul__(self, other): return self * other
    def __truediv__(self, other): return self * other**-1
    def __rtruediv__(self, other): return other * self**-1


def mixing_error(left, right, symbol):
    """The TypeError for `left symbol right` where the two Values cannot be in one graph."""
    if left.backend != right.backend:
        return TypeError(
            f"cannot combine a {left.backend}-backend Value with a {right.backend}-backend Value (in '{symbol}'): "
            f"each backend keeps its own graph. microgpt.Value is the class of the backend live when it is "
            f"looked up, so `from microgpt import Value` keeps the class of import time and set_backend() "
            f"does not change Values already made. Make both with one backend (to carry a number over, "
            f"make a new Value from .data)")
    return TypeError(
        f"cannot combine these two c-backend Values (in '{symbol}'): they live in different graph arenas "
        f"(a model's graph and your own Values, two threads' Values, or an arena of your own), and no node "
        f"can have children in two arenas. Make a new Value from .data to carry a number over")
