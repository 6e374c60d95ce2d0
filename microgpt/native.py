"""The c backend's Python side: the compiled module, the arenas that own graphs, and Value handles.

A c-backend Value is a handle into an arena (csrc/arena.c). Its operations are one C call each
and its numbers are computed in C by the same expressions the python backend evaluates, bit for
bit. Two kinds of arena, two kinds of handle:

- a thread's default arena (ValuesArena), for the Values a user makes: CValue objects, each
  naming its node through a slot. A CValue releases its slot when it dies (in batches), and the
  arena compacts itself as it grows, keeping only the nodes some slot reaches: memory stays flat
  for any number of expressions, with nothing for the user to do. The arena is bound to its
  thread: any other thread's call is refused in C before anything is read.
- an Arena of its own (a model's graph): NodeValue objects hold node handles; the arena keeps
  every node until reset(), which is the lifetime of a training step, and refuses old handles.

The hot paths (the operators, .data, .grad) are written out flat, with the C functions bound
once: each costs one C call, one wrapper object and one comparison.
"""
import sys
import threading

from . import _cmg  # ImportError here means the extension was not built: backend.py reports it
from .ops import DerivedOps, mixing_error

ffi, lib = _cmg.ffi, _cmg.lib

_ERRORS = {
    lib.MG_ERR_NOMEM: (MemoryError, "the graph arena could not grow: out of memory"),
    lib.MG_ERR_STALE: (ValueError, "stale Value: its graph was reset, or it was made in a microgpt.scope() "
                                   "that has ended"),
    lib.MG_ERR_DOMAIN: (ValueError, "math domain error"),
    lib.MG_ERR_OVERFLOW: (OverflowError, "math range error"),
    lib.MG_ERR_ZERODIV: (ZeroDivisionError, "0.0 cannot be raised to a negative power"),
    lib.MG_ERR_COMPLEX: (ValueError, "negative base to a fractional power: the result would be complex"),
    lib.MG_ERR_ARG: (ValueError, "argument out of range for the graph arena"),
    lib.MG_ERR_CHANGED: (ValueError, "a value this step's fused nodes depend on was changed after they were "
                                     "made (set_data, parameters written, or Adam): build the step again"),
    lib.MG_ERR_TWICE: (ValueError, "this step's graph has fused nodes and was differentiated already: a second "
                                   "backward would not give the seed's gradients; build the step again"),
    lib.MG_ERR_PLAN: (RuntimeError, "this step cannot run on the dense executor (see the graph's dense status)"),
    lib.MG_ERR_ORDER: (RuntimeError, "a cached backward order differs from a fresh search (a bug in microgpt's "
                                     "csrc/tape.c: please report it)"),
    lib.MG_ERR_THREAD: (RuntimeError, "this c-backend Value belongs to another thread: a thread's Values live in "
                                      "its own default arena and only that thread may use them; pass plain "
                                      "numbers (.data) between threads, or use the python backend"),
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


class Arena:
    """Owns one C graph arena (a model's graph, or one of your own: NodeValue handles); freed
    with the object, or at once with close(). Used by one thread at a time: a caller that shares
    one between threads serializes its use with `lock`."""
    values = False

    def __init__(self, ptr=None):
        ptr = lib.mg_arena_new() if ptr is None else ptr
        if ptr == ffi.NULL:
            raise MemoryError("could not allocate a graph arena")
        self.ptr = ffi.gc(ptr, lib.mg_arena_free)
        self._err = ffi.new("int *")
        self.labels = {}  # handle -> label (Value.label), until reset
        self.lock = threading.RLock()

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
        generation = check(lib.mg_arena_reset(self.ptr))
        self.labels.clear()
        return generation

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


class ValuesArena(Arena):
    """A thread's default arena: CValue slots, released as their Values die, compacted by C."""
    values = True

    def __init__(self):
        super().__init__(lib.mg_values_new())
        self.thread = threading.get_ident()
        self.freed = []                # slots of CValues that died, not yet handed back
        self.label_ids = {}            # label text -> id (C keeps a node's id)
        self.label_texts = [""]        # id -> text

    @property
    def slots(self):
        return lib.mg_v_slots(self.ptr)

    def release(self):
        """Hand dead Values' slots back to C (called in the arena's own thread, when C asks)."""
        freed = self.freed
        n = len(freed)
        slots = ffi.new("int64_t[]", freed[:n])
        del freed[:n]  # one step each: a Value dying in another thread meanwhile appends after them
        check(lib.mg_v_release(self.ptr, slots, n))

    def collect(self):
        """Release what died and compact now (it happens by itself as the arena grows)."""
        self.release()
        return check(lib.mg_v_collect(self.ptr))


_local = threading.local()


def default_arena():
    """The arena of Values made directly by users (not by a model): one per thread."""
    try:
        return _local.arena
    except AttributeError:
        arena = _local.arena = ValuesArena()
        return arena


class scope:
    """`with microgpt.scope(): ...`: every c-backend Value made inside (in this thread) is freed at
    the end, even one still referred to (using it afterwards is a clear error); Values made
    before stay, with the gradients the scope gave them. Not needed for flat memory (the arena
    compacts itself); it frees at once."""

    def __enter__(self):
        self.arena = default_arena()
        check(lib.mg_v_scope_begin(self.arena.ptr))
        return self

    def __exit__(self, *exc):
        check(lib.mg_v_scope_end(self.arena.ptr))


_new = object.__new__
_v_leaf = lib.mg_v_leaf


def _retry(arena, code, fn, *args):
    """A C call on slots returned `code` < 0: an error, or the arena asking for the slots of the
    Values that died before it compacts (then release them and call again)."""
    if code != lib.MG_ERR_RELEASE:
        raise_error(code)
    arena.release()
    return check(fn(arena.ptr, *args))


def _python_values_constant_path():
    """The code objects of the python Value's operators whose number branch computes
    `self.data + other` (or `*`): a c-backend Value reached from there is being mixed with a
    python one. Checked here, in the reflected operator, so that the python Value's hot path,
    the reference and the benchmarks' baseline, pays nothing for it."""
    from .engine import Value
    return (Value.__add__.__code__, Value.__mul__.__code__)


_MIXED_FROM = _python_values_constant_path()
_caller = sys._getframe


def _other_operand(self, other, symbol):
    """An operand C could not take as a number: another backend's or arena's Value is a clear
    error; anything else is Python's business (NotImplemented)."""
    if isinstance(other, DerivedOps):
        raise mixing_error(self, other, symbol)
    return NotImplemented


def _value_class(name, doc, slots):
    """The class of c-backend Values naming nodes through slots (slots=True, a thread's default
    arena) or by node handle (a model's arena). The two differ only in the C functions they call
    and in what they do when they die, so they are written once, here."""
    p = "mg_v_" if slots else "mg_"
    add, addc, mul, mulc, pow_, log, exp, relu = (getattr(lib, p + f) for f in (
        "add", "add_const", "mul", "mul_const", "pow", "log", "exp", "relu"))
    data, grad, set_data, set_grad, status = (getattr(lib, (p + f) if slots else g) for f, g in (
        ("data", "mg_data"), ("grad", "mg_grad"), ("set_data", "mg_set_data"), ("set_grad", "mg_set_grad"),
        ("status", "mg_node_status")))

    def wrap(a, h):
        """The Value of a handle C returned (>= 0)."""
        v = _new(cls)
        v._a = a
        v._h = h
        return v

    def refused(v):
        """data/grad gave NaN: the node's value, or a refused handle."""
        rc = status(v._a.ptr, v._h)
        if rc:
            raise_error(rc)

    class Value(DerivedOps):
        __slots__ = ('_a', '_h')
        backend = "c"

        # The operators: one C call and one check. other is a number, or a Value of the same
        # class and arena; anything else goes to _other_operand (cffi raises TypeError for it).
        def __add__(self, other):
            a = self._a
            if type(other) is cls:
                if other._a is not a:
                    raise mixing_error(self, other, "+")
                h = add(a.ptr, self._h, other._h)
                if h < 0:
                    h = _retry(a, h, add, self._h, other._h)
            else:
                try:
                    h = addc(a.ptr, self._h, other)
                except TypeError:
                    return _other_operand(self, other, "+")
                if h < 0:
                    h = _retry(a, h, addc, self._h, other)
            v = _new(cls)
            v._a = a
            v._h = h
            return v

        def __mul__(self, other):
            a = self._a
            if type(other) is cls:
                if other._a is not a:
                    raise mixing_error(self, other, "*")
                h = mul(a.ptr, self._h, other._h)
                if h < 0:
                    h = _retry(a, h, mul, self._h, other._h)
            else:
                try:
                    h = mulc(a.ptr, self._h, other)
                except TypeError:
                    return _other_operand(self, other, "*")
                if h < 0:
                    h = _retry(a, h, mulc, self._h, other)
            v = _new(cls)
            v._a = a
            v._h = h
            return v

        def __radd__(self, other):
            if _caller(1).f_code in _MIXED_FROM:  # a python Value + this one (see above)
                raise mixing_error(_caller(1).f_locals["self"], self, "+")
            return self + other

        def __rmul__(self, other):
            if _caller(1).f_code in _MIXED_FROM:
                raise mixing_error(_caller(1).f_locals["self"], self, "*")
            return self * other

        def __pow__(self, other):
            if isinstance(other, DerivedOps):
                raise TypeError("Value ** Value is not supported: the exponent must be a number")
            a = self._a
            try:
                h = pow_(a.ptr, self._h, other)
            except TypeError:
                return NotImplemented
            if h < 0:
                h = _retry(a, h, pow_, self._h, other)
            v = _new(cls)
            v._a = a
            v._h = h
            return v

        # log, exp, relu: the same, written out (a shared helper costs a call each)
        def log(self):
            a = self._a
            h = log(a.ptr, self._h)
            if h < 0:
                h = _retry(a, h, log, self._h)
            v = _new(cls)
            v._a = a
            v._h = h
            return v

        def exp(self):
            a = self._a
            h = exp(a.ptr, self._h)
            if h < 0:
                h = _retry(a, h, exp, self._h)
            v = _new(cls)
            v._a = a
            v._h = h
            return v

        def relu(self):
            a = self._a
            h = relu(a.ptr, self._h)
            if h < 0:
                h = _retry(a, h, relu, self._h)
            v = _new(cls)
            v._a = a
            v._h = h
            return v
        # -x, x - y, x / y and the other reflected forms: ops.DerivedOps

        @property
        def data(self):
            x = data(self._a.ptr, self._h)
            if x != x:
                refused(self)
            return x

        @data.setter
        def data(self, x):
            rc = set_data(self._a.ptr, self._h, x)
            if rc:
                raise_error(rc)

        @property
        def grad(self):
            x = grad(self._a.ptr, self._h)
            if x != x:
                refused(self)
            return x

        @grad.setter
        def grad(self, x):
            rc = set_grad(self._a.ptr, self._h, x)
            if rc:
                raise_error(rc)

        def __reduce__(self):
            raise TypeError("a c-backend Value cannot be pickled or copied: it is a handle into a C graph; "
                            "use its .data")

        def __repr__(self):
            return f"Value(data={self.data!r}, grad={self.grad!r})"

    def bind(final):
        """The class the operators make (the subclass below, with what its kind adds)."""
        nonlocal cls
        cls = final
        final._wrap_handle = staticmethod(wrap)

    cls = None
    Value.__name__ = Value.__qualname__ = name
    Value.__doc__ = doc
    Value._bind = staticmethod(bind)
    return Value


class CValue(_value_class("CValue", "A Value a user makes on the c backend: a slot in this thread's default arena, "
                                    "with the python backend's Value API.", slots=True)):
    __slots__ = ()

    def __new__(cls, data, arena=None):
        if arena is not None and not arena.values:
            return NodeValue(data, arena)  # a Value in an arena of your own
        if arena is None:
            try:
                arena = _local.arena
            except AttributeError:
                arena = default_arena()
        h = _v_leaf(arena.ptr, data)
        if h < 0:
            h = _retry(arena, h, _v_leaf, data)
        v = _new(cls)
        v._a = arena
        v._h = h
        return v

    def __del__(self):
        # the slot goes back to C when C asks, before it compacts (in any thread: a list append)
        self._a.freed.append(self._h)

    @classmethod
    def _wrap(cls, arena, handle):
        """A Value of a handle C returned in `arena` (a slot, or a model arena's node handle)."""
        return (CValue if arena.values else NodeValue)._wrap_handle(arena, check(handle))

    def _node(self):
        return check(lib.mg_v_node(self._a.ptr, self._h))

    @property
    def _children(self):
        """The children in order (x * x has x twice), each a new Value of its node."""
        a = self._a
        out = ffi.new("int64_t[]", 2)
        n = check(lib.mg_v_children(a.ptr, self._h, out, 2))
        if n > 2:
            out = ffi.new("int64_t[]", n)
            check(lib.mg_v_children(a.ptr, self._h, out, n))
        return tuple(CValue._wrap_handle(a, out[i]) for i in range(n))

    @property
    def label(self):
        return self._a.label_texts[check(lib.mg_v_label(self._a.ptr, self._h))]

    @label.setter
    def label(self, text):
        a, text = self._a, str(text)
        ident = a.label_ids.get(text)
        if ident is None:
            ident = a.label_ids[text] = len(a.label_texts)
            a.label_texts.append(text)
        check(lib.mg_v_set_label(a.ptr, self._h, ident))

    def backward(self):
        check(lib.mg_backward(self._a.ptr, self._node()))


class NodeValue(_value_class("NodeValue", "A c-backend Value in an arena of its own (a model's graph): a node "
                                          "handle, refused after the arena's reset.", slots=False)):
    __slots__ = ()

    def __new__(cls, data, arena):
        h = check(lib.mg_leaf(arena.ptr, data))
        v = _new(cls)
        v._a = arena
        v._h = h
        return v

    def _node(self):
        return self._h

    @property
    def _children(self):
        a = self._a
        out = ffi.new("int64_t[]", 2)
        n = check(lib.mg_children(a.ptr, self._h, out, 2))
        if n > 2:
            out = ffi.new("int64_t[]", n)
            check(lib.mg_children(a.ptr, self._h, out, n))
        return tuple(NodeValue._wrap_handle(a, out[i]) for i in range(n))

    @property
    def label(self):
        check(lib.mg_node_status(self._a.ptr, self._h))
        return self._a.labels.get(self._h, "")

    @label.setter
    def label(self, text):
        check(lib.mg_node_status(self._a.ptr, self._h))
        self._a.labels[self._h] = str(text)

    def backward(self):
        check(lib.mg_backward(self._a.ptr, self._h))


def _op(self):
    return OP_NAMES[check(lib.mg_node_op(self._a.ptr, self._node()))]


def _prev(self):
    """micrograd's _prev: the distinct children, as a set (_children keeps order and repeats)."""
    distinct = {}
    for child in self._children:
        distinct.setdefault(child._node(), child)
    return set(distinct.values())


def _same_node(self, other):
    """Whether two c-backend Values name one node (a node's Value objects are not unique)."""
    return type(other) is type(self) and other._a is self._a and other._node() == self._node()


for _cls in (CValue, NodeValue):
    _cls._bind(_cls)
    _cls._op = property(_op)
    _cls._prev = property(_prev)
    _cls.same_node = _same_node
