"""The operators the seed derives from +, * and **, written once for both Value classes.

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
