"""The c backend's Python side: the compiled module, the arena that owns a graph, and Value handles.

A CValue is a handle into an Arena (csrc/arena.c). Its operations are one C call each and its
numbers are computed in C by the same expressions the python backend evaluates, bit for bit.
"""
from . import _cmg  # ImportError here means the extension was not built: backend.py reports it
from .ops import DerivedOps

ffi, lib = _cmg.ffi, _cmg.lib

_ERRORS = {
    lib.MG_ERR_NOMEM: (MemoryError, "the graph arena could not grow: out of memory"),
    lib.MG_ERR_STALE: (ValueError, "stale Value: its graph was reset (or it belongs to another arena)"),
    lib.MG_ERR_DOMAIN: (ValueError, "math domain error"),
    lib.MG_ERR_OVERFLOW: (OverflowError, "math range error"),
    lib.MG_ERR_ZERODIV: (ZeroDivisionError, "0.0 cannot be raised to a negative power"),
    lib.MG_ERR_COMPLEX: (ValueError, "negative base to a fractional power: the result would be complex"),
    lib.MG_ERR_ARG: (ValueError, "argument out of range for the graph arena"),
    lib.MG_ERR_CHANGED: (ValueError, "a value this step's fused nodes depend on was changed after they were "
                                     "made (set_data, parameters written, or Adam): build the step again"),
    lib.MG_ERR_TWICE: (ValueError, "this step's graph has fused nodes and was differentiated already: a second "
                                   "backward would not give the seed's gradients; build the step again"),
    lib.MG_ERR_ORDER: (RuntimeError, "a cached backward order differs from a fresh search (a bug in microgpt's "
                                     "csrc/tape.c: please report it)"),
}


def raise_error(code):
    exc, message = _ERRORS.get(code, (RuntimeError, f"microgpt C core returned error {code}"))
    raise exc(message)


def check(result):
    """Pass a handle or count through; turn a negative C error code into the Python exception."""
    if result < 0:
        raise_error(result)
    return result


class Arena:
    """Owns one C graph arena; freed with the object, or at once with close()."""

    def __init__(self):
        ptr = lib.mg_arena_new()
        if ptr == ffi.NULL:
            raise MemoryError("could not allocate a graph arena")
        self.ptr = ffi.gc(ptr, lib.mg_arena_free)
        self._err = ffi.new("int *")

    def close(self):
        if self.ptr is not None:
            ffi.release(self.ptr)
            self.ptr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def keep(self):
        """Everything made so far (the parameters) survives later resets."""
        return check(lib.mg_arena_keep(self.ptr))

    def reset(self):
        """Drop every node made since keep(); their handles go stale."""
        return check(lib.mg_arena_reset(self.ptr))

    def set_limit(self, max_bytes):
        check(lib.mg_arena_set_limit(self.ptr, max_bytes))

    @property
    def nodes(self):
        return lib.mg_arena_nodes(self.ptr)

    @property
    def edges(self):
        return lib.mg_arena_edges(self.ptr)

    @property
    def nbytes(self):
        return lib.mg_arena_bytes(self.ptr)

    @property
    def calls(self):
        return lib.mg_arena_calls(self.ptr)

    def leaves(self, values):
        """len(values) new nodes at once: the first one's handle (the rest follow it)."""
        return check(lib.mg_leaves(self.ptr, ffi.new("double[]", values), len(values)))

    def get(self, getter, handle):
        x = getter(self.ptr, handle, self._err)
        if self._err[0]:
            raise_error(self._err[0])
        return x

    def read_data(self, first, n):
        out = ffi.new("double[]", n)
        check(lib.mg_read_data(self.ptr, first, n, out))
        return list(out)

    def read_grad(self, first, n):
        out = ffi.new("double[]", n)
        check(lib.mg_read_grad(self.ptr, first, n, out))
        return list(out)

    def write_data(self, first, values):
        check(lib.mg_write_data(self.ptr, first, len(values), ffi.new("double[]", values)))


_default_arena = None


def default_arena():
    """The arena of Values made directly by users (not by a model)."""
    global _default_arena
    if _default_arena is None:
        _default_arena = Arena()
    return _default_arena


class CValue(DerivedOps):
    """A scalar in a C graph arena, with the python backend's Value API."""
    __slots__ = ('_arena', '_h')

    def __init__(self, data, arena=None):
        arena = arena or default_arena()
        self._arena = arena
        self._h = check(lib.mg_leaf(arena.ptr, data))

    @classmethod
    def _wrap(cls, arena, handle):
        v = cls.__new__(cls)
        v._arena = arena
        v._h = check(handle)
        return v

    def _binary(self, other, op, op_const):
        arena = self._arena
        if isinstance(other, CValue):
            if other._arena is not arena:
                raise ValueError("cannot combine Values from two different graph arenas")
            return CValue._wrap(arena, op(arena.ptr, self._h, other._h))
        return CValue._wrap(arena, op_const(arena.ptr, self._h, other))

    def __add__(self, other): return self._binary(other, lib.mg_add, lib.mg_add_const)
    def __mul__(self, other): return self._binary(other, lib.mg_mul, lib.mg_mul_const)

    def __pow__(self, other):
        if isinstance(other, CValue):
            raise TypeError("Value ** Value is not supported: the exponent must be a number")
        return CValue._wrap(self._arena, lib.mg_pow(self._arena.ptr, self._h, other))

    def log(self): return CValue._wrap(self._arena, lib.mg_log(self._arena.ptr, self._h))
    def exp(self): return CValue._wrap(self._arena, lib.mg_exp(self._arena.ptr, self._h))
    def relu(self): return CValue._wrap(self._arena, lib.mg_relu(self._arena.ptr, self._h))
    # -x, x - y, x / y and the reflected forms: ops.DerivedOps

    @property
    def data(self):
        return self._arena.get(lib.mg_get_data, self._h)

    @data.setter
    def data(self, x):
        check(lib.mg_set_data(self._arena.ptr, self._h, x))

    @property
    def grad(self):
        return self._arena.get(lib.mg_get_grad, self._h)

    @grad.setter
    def grad(self, x):
        check(lib.mg_set_grad(self._arena.ptr, self._h, x))

    @property
    def _children(self):
        out = ffi.new("int64_t[]", 2)
        n = check(lib.mg_children(self._arena.ptr, self._h, out, 2))
        if n > 2:
            out = ffi.new("int64_t[]", n)
            lib.mg_children(self._arena.ptr, self._h, out, n)
        return tuple(CValue._wrap(self._arena, out[i]) for i in range(n))

    def backward(self):
        check(lib.mg_backward(self._arena.ptr, self._h))

    def __repr__(self):
        return f"Value(data={self.data!r}, grad={self.grad!r})"
