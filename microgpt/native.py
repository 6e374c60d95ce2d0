"""The c backend's Python side: the compiled module, the arena that owns a graph, and Value handles.

A CValue is a handle into an Arena (csrc/arena.c). Its operations are one C call each and its
numbers are computed in C by the same expressions the python backend evaluates, bit for bit.

Values a user makes (not a model) live in the default arena of the thread that makes them. That
arena collects itself: every Value made in it is listed, and once the arena has grown enough
since the last collection, the Values that nothing but the list refers to (their reference
count says so) are dropped from it, and C keeps only the nodes the others reach, sliding them
down in order (mg_arena_compact) and handing back their new handles. Memory stays flat for any
number of expressions, and no Value a program can still reach ever loses its node.

The hot paths (the operators, .data, .grad) are written out flat: C functions bound once, no
helper calls, one comparison for the errors and the collection together.
"""
import threading
from functools import partial
from itertools import compress
from operator import lt
from sys import getrefcount

from . import _cmg  # ImportError here means the extension was not built: backend.py reports it
from .ops import DerivedOps, mixing_error

ffi, lib = _cmg.ffi, _cmg.lib

_THREAD_MESSAGE = ("this c-backend Value belongs to another thread: a thread's Values live in its own default "
                   "arena and only that thread may use them; pass plain numbers (.data) between threads, or "
                   "use the python backend")
_ERRORS = {
    lib.MG_ERR_NOMEM: (MemoryError, "the graph arena could not grow: out of memory"),
    lib.MG_ERR_STALE: (ValueError, "stale Value: its graph was reset, or it was made in a microgpt.scope() "
                                   "that has ended (or it belongs to another arena)"),
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
    lib.MG_ERR_THREAD: (RuntimeError, _THREAD_MESSAGE),
}

OP_NAMES = {lib.MG_OP_LEAF: "", lib.MG_OP_ADD: "+", lib.MG_OP_ADDC: "+", lib.MG_OP_MUL: "*", lib.MG_OP_MULC: "*",
            lib.MG_OP_POW: "**", lib.MG_OP_LOG: "log", lib.MG_OP_EXP: "exp", lib.MG_OP_RELU: "relu",
            lib.MG_OP_DOT: "dot"}


def raise_error(code):
    exc, message = _ERRORS.get(code, (RuntimeError, f"microgpt C core returned error {code}"))
    raise exc(message)


def check(result):
    """Pass a handle or count through; turn a negative C error code into the Python exception."""
    if result < 0:
        raise_error(result)
    return result


# --- the collection's arithmetic
_NEVER = 1 << 62                 # no handle reaches it: arenas that do not collect
_GEN_MODULUS = 0x7fffffff        # csrc/arena.h: generations run 1 .. modulus, then wrap to 1
_FIRST_COLLECTION = 1 << 14      # nodes before a Values arena first collects (about 1 MB)
# the reference count of a Value that only the arena's list refers to, measured the way
# collect() measures (a list's item, counted by map); CPython's own figure, not assumed
_UNREACHED = list(map(getrefcount, [object()]))[0]
_reached = partial(lt, _UNREACHED)


class Arena:
    """Owns one C graph arena; freed with the object, or at once with close().

    values=True makes a Values arena (a thread's default arena): bound to the thread that makes
    it, listing its Values and collecting what none of them reaches (see the module docstring).
    Other arenas (a model's graph) keep every node until reset(), which is their lifetime."""

    def __init__(self, values=False):
        ptr = lib.mg_arena_new()
        if ptr == ffi.NULL:
            raise MemoryError("could not allocate a graph arena")
        self.ptr = ffi.gc(ptr, lib.mg_arena_free)
        self._err = ffi.new("int *")
        self.collects = values
        self.values = []               # the Values made in it (a Values arena), or those since the last reset
        self.track = self.values.append if values else _forget
        self.labels = {}               # handle -> label (Value.label)
        self.generation = 0            # of new handles (the high half: csrc/microgpt.h)
        self.next_collection = _NEVER  # the first handle that makes the arena collect
        self.scopes = []               # each open scope(): how many listed Values precede it
        self.lock = threading.RLock()  # held by backward(); callers of a shared arena may hold it too
        if values:
            check(lib.mg_arena_bind_thread(self.ptr))
            self.next_collection = _FIRST_COLLECTION

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
        self.generation = check(lib.mg_arena_reset(self.ptr))
        self.labels.clear()
        return self.generation

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

    # --- a Values arena's collection
    def made(self, handle, value=None):
        """A C call returned `handle`, which is an error or past the collection's mark: raise, or
        wrap it (in `value`, or a new CValue), list it, collect, and return it."""
        if handle < 0:
            raise_error(handle)
        if value is None:
            value = _new(CValue)
        value._a = self
        value._h = handle
        self.track(value)
        if self.collects:
            self.collect()  # value is held here, so it stays
        return value

    def collect(self, scope_end=None):
        """Drop every listed Value nothing else refers to, and every node no remaining one reaches.
        scope_end: the Values listed from that index on are dropped whoever holds them."""
        values = self.values
        listed = values if scope_end is None else values[:scope_end]
        reached = list(map(_reached, list(map(getrefcount, listed))))
        alive = list(compress(listed, reached))
        roots = ffi.new("int64_t[]", [v._h for v in alive])
        keys = list(self.labels)
        others = ffi.new("int64_t[]", keys)
        count = check(lib.mg_arena_compact(self.ptr, roots, len(alive), others, len(keys)))
        self.generation = self.generation % _GEN_MODULUS + 1
        for v, h in zip(alive, roots):
            v._h = h
        self.labels = {h: self.labels[k] for k, h in zip(keys, others) if h >= 0}
        # an open scope starts after as many Values as survived before its start
        prefix = [0]
        for r in reached:
            prefix.append(prefix[-1] + r)
        self.scopes = [prefix[min(s, len(reached))] for s in self.scopes]
        values[:] = alive
        # the next collection when as many nodes again are made: scanning stays O(1) a node
        self.next_collection = (self.generation << 32) | min(max(2 * count, _FIRST_COLLECTION), 0xffffffff)
        return count


_forget = __import__("collections").deque(maxlen=0).append  # a list that keeps nothing
_local = threading.local()


def default_arena():
    """The arena of Values made directly by users (not by a model): one per thread."""
    try:
        return _local.arena
    except AttributeError:
        arena = _local.arena = Arena(values=True)
        return arena


class scope:
    """`with microgpt.scope(): ...`: every c-backend Value made inside (in this thread) is freed at
    the end, even one still referred to (using it afterwards is a clear error); Values made
    before stay. Not needed for flat memory (the arena collects itself); it frees at once.
    On the python backend it does nothing: Python frees Values itself."""

    def __enter__(self):
        self.arena = default_arena()
        self.arena.scopes.append(len(self.arena.values))
        return self

    def __exit__(self, *exc):
        arena = self.arena
        start = arena.scopes.pop()
        arena.collect(scope_end=start)


_new = object.__new__
_add, _addc, _mul, _mulc = lib.mg_add, lib.mg_add_const, lib.mg_mul, lib.mg_mul_const
_pow, _log, _exp, _relu, _leaf = lib.mg_pow, lib.mg_log, lib.mg_exp, lib.mg_relu, lib.mg_leaf
_data, _grad, _set_data, _set_grad = lib.mg_data, lib.mg_grad, lib.mg_set_data, lib.mg_set_grad
_status, _backward = lib.mg_node_status, lib.mg_backward


def _nan_or_error(v):
    """mg_data/mg_grad gave NaN: the node's value, or a refused handle."""
    rc = _status(v._a.ptr, v._h)
    if rc:
        raise_error(rc)


def _other_operand(self, other, symbol, reflected=False):
    """An operand C could not take as a number: another backend's Value is a clear error;
    anything else is Python's business (NotImplemented)."""
    if isinstance(other, DerivedOps):
        raise mixing_error(other, self, symbol) if reflected else mixing_error(self, other, symbol)
    return NotImplemented


class CValue(DerivedOps):
    """A scalar in a C graph arena, with the python backend's Value API."""
    __slots__ = ('_a', '_h')
    backend = "c"

    def __init__(self, data, arena=None, label=None):
        if arena is not None:
            a = arena
        else:
            try:
                a = _local.arena
            except AttributeError:
                a = default_arena()
        h = _leaf(a.ptr, data)
        if 0 <= h < a.next_collection:
            self._a = a
            self._h = h
            a.track(self)
        else:
            a.made(h, self)
        if label is not None:
            self.label = label

    @classmethod
    def _wrap(cls, arena, handle):
        """The Value of a handle C returned (or the error it stands for)."""
        if not 0 <= handle < arena.next_collection:
            return arena.made(handle)
        v = _new(CValue)
        v._a = arena
        v._h = handle
        arena.track(v)
        return v

    # The operators: one C call, then the one check below. other is a number, or a CValue of the
    # same arena: anything else goes to _other_operand (cffi raises TypeError for it).
    def __add__(self, other):
        a = self._a
        if type(other) is CValue:
            if other._a is not a:
                raise mixing_error(self, other, "+")
            h = _add(a.ptr, self._h, other._h)
        else:
            try:
                h = _addc(a.ptr, self._h, other)
            except TypeError:
                return _other_operand(self, other, "+")
        if not 0 <= h < a.next_collection:
            return a.made(h)
        v = _new(CValue)
        v._a = a
        v._h = h
        a.track(v)
        return v

    def __mul__(self, other):
        a = self._a
        if type(other) is CValue:
            if other._a is not a:
                raise mixing_error(self, other, "*")
            h = _mul(a.ptr, self._h, other._h)
        else:
            try:
                h = _mulc(a.ptr, self._h, other)
            except TypeError:
                return _other_operand(self, other, "*")
        if not 0 <= h < a.next_collection:
            return a.made(h)
        v = _new(CValue)
        v._a = a
        v._h = h
        a.track(v)
        return v

    def __radd__(self, other):
        if isinstance(other, DerivedOps):
            raise mixing_error(other, self, "+")
        return self + other

    def __rmul__(self, other):
        if isinstance(other, DerivedOps):
            raise mixing_error(other, self, "*")
        return self * other

    def __pow__(self, other):
        if isinstance(other, DerivedOps):
            raise TypeError("Value ** Value is not supported: the exponent must be a number")
        a = self._a
        try:
            h = _pow(a.ptr, self._h, other)
        except TypeError:
            return NotImplemented
        return self._unary(a, h)

    def _unary(self, a, h):
        if not 0 <= h < a.next_collection:
            return a.made(h)
        v = _new(CValue)
        v._a = a
        v._h = h
        a.track(v)
        return v

    def log(self): return self._unary(self._a, _log(self._a.ptr, self._h))
    def exp(self): return self._unary(self._a, _exp(self._a.ptr, self._h))
    def relu(self): return self._unary(self._a, _relu(self._a.ptr, self._h))
    # -x, x - y, x / y and the other reflected forms: ops.DerivedOps

    @property
    def data(self):
        x = _data(self._a.ptr, self._h)
        if x != x:
            _nan_or_error(self)
        return x

    @data.setter
    def data(self, x):
        rc = _set_data(self._a.ptr, self._h, x)
        if rc:
            raise_error(rc)

    @property
    def grad(self):
        x = _grad(self._a.ptr, self._h)
        if x != x:
            _nan_or_error(self)
        return x

    @grad.setter
    def grad(self, x):
        rc = _set_grad(self._a.ptr, self._h, x)
        if rc:
            raise_error(rc)

    # --- the graph, for teaching tools (micrograd's names; python Value has the same)
    @property
    def _children(self):
        a = self._a
        out = ffi.new("int64_t[]", 2)
        n = check(lib.mg_children(a.ptr, self._h, out, 2))
        if n > 2:
            out = ffi.new("int64_t[]", n)
            lib.mg_children(a.ptr, self._h, out, n)
        return tuple(CValue._wrap(a, out[i]) for i in range(n))

    @property
    def _prev(self):
        """The distinct children, as micrograd's _prev (a set; _children keeps order and repeats)."""
        seen = {}
        for child in self._children:
            seen.setdefault(child._h, child)
        return set(seen.values())

    @property
    def _op(self):
        return OP_NAMES[check(lib.mg_node_op(self._a.ptr, self._h))]

    @property
    def label(self):
        return self._a.labels.get(self._h, "")

    @label.setter
    def label(self, text):
        check(lib.mg_node_status(self._a.ptr, self._h))
        self._a.labels[self._h] = text

    def same_node(self, other):
        """Whether two handles name one node (a node's wrappers are not unique on this backend)."""
        return isinstance(other, CValue) and other._a is self._a and other._h == self._h

    def backward(self):
        a = self._a
        with a.lock:
            rc = _backward(a.ptr, self._h)
        if rc:
            raise_error(rc)

    def __reduce__(self):
        raise TypeError("a c-backend Value cannot be pickled or copied: it is a handle into a C graph; "
                        "use its .data")

    def __repr__(self):
        return f"Value(data={self.data!r}, grad={self.grad!r})"
