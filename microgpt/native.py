"""The c backend's Python side: the compiled modules, the arenas that own graphs, and Value handles.

A c-backend Value is a handle into an arena (csrc/arena.c), whose numbers are computed in C by
the same expressions the python backend evaluates, bit for bit. Two kinds of arena, two kinds of
handle:

- a thread's default arena (ValuesArena), for the Values a user makes: CValue objects, each
  naming its node through a slot. CValue is a C type (microgpt._values, ext/values.c): its
  operators, .data and .grad call the arena directly, holding the GIL, at a fraction of a cffi
  call's cost; what it lacks is added below (teaching tools, backward, repr). A CValue releases
  its slot when it dies, and the arena compacts itself as it grows, keeping only the nodes some
  slot reaches: memory stays flat for any number of expressions, with nothing for the user to
  do. The arena is bound to its thread: any other thread's call is refused in C before anything
  is read.
- an Arena of its own (a model's graph): NodeValue objects hold node handles, one cffi call per
  op; the arena keeps every node until reset(), which is the lifetime of a training step, and
  refuses old handles.
"""
import sys
import threading
from array import array

from . import _cmg, _values  # ImportError here means an extension was not built: backend.py reports it
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


def doubles(values):
    """values as a C double[]: an array('d') lent as it is (no copy), anything else copied."""
    if isinstance(values, array) and values.typecode == 'd':
        return ffi.from_buffer("double[]", values)
    return ffi.new("double[]", values)


def owned(ptr, free, what):
    """A C object just made (ptr, NULL when out of memory), freed with its Python reference."""
    if ptr == ffi.NULL:
        raise MemoryError(f"could not allocate {what}")
    return ffi.gc(ptr, free)


class Arena:
    """Owns one C graph arena (a model's graph, or one of your own: NodeValue handles); freed
    with the object, or at once with close(). Used by one thread at a time: a caller that shares
    one between threads serializes its use with `lock`."""
    values = False

    def __init__(self, ptr=None):
        ptr = lib.mg_arena_new() if ptr is None else ptr
        if ptr == ffi.NULL:
            raise MemoryError("could not allocate a graph arena")
        self.ptr = ffi.gc(ptr, lib.mg_arena_free) if self._owns_ptr else ptr
        self._err = ffi.new("int *")
        self.labels = {}  # handle -> label (Value.label), until reset
        self.lock = threading.RLock()

    _owns_ptr = True

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
        """len(values) new nodes at once (floats, or an array of doubles, read in place): the first
        one's handle (the rest follow it)."""
        in_place = isinstance(values, array) and values.typecode == 'd'
        doubles = ffi.from_buffer("double[]", values) if in_place else ffi.new("double[]", values)
        return check(lib.mg_leaves(self.ptr, doubles, len(values)))

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
        check(lib.mg_write_data(self.ptr, first, len(values), doubles(values)))


class ValuesArena(Arena, _values.ValuesCore):
    """A thread's default arena: CValue slots, released as their Values die, compacted by C.
    Its C part (ext/values.c) owns the C arena and frees it with the object; close() does nothing,
    as Values may still name its nodes."""
    values = True
    _owns_ptr = False

    def __init__(self):
        super().__init__(ffi.cast("mg_arena *", _values.open_arena(self)))
        self.thread = threading.get_ident()
        self.label_ids = {}            # label text -> id (C keeps a node's id)
        self.label_texts = [""]        # id -> text
        self.label_limit = LABELS_BEFORE_COMPACTING

    def close(self):
        pass

    @property
    def slots(self):
        return lib.mg_v_slots(self.ptr)

    def release(self):
        """Hand back the slots of Values that died in other threads (a Value dying in the arena's
        own thread hands its slot back at once; C asks for the others before it compacts)."""
        _values.flush(self)

    def collect(self):
        """Release what died and compact now (it happens by itself as the arena grows)."""
        self.release()
        return check(lib.mg_v_collect(self.ptr))

    def label_id(self, text):
        """The id of a label text, new ones numbered on; when there are many, the texts no node
        holds any more are dropped (and the ids renumbered), so memory stays flat however many
        distinct labels a program sets over time."""
        ident = self.label_ids.get(text)
        if ident is None:
            if len(self.label_texts) >= self.label_limit:
                self._compact_labels()
            ident = self.label_ids[text] = len(self.label_texts)
            self.label_texts.append(text)
        return ident

    def _compact_labels(self):
        self.collect()
        n = len(self.label_texts)
        used = ffi.new("uint8_t[]", n)
        check(lib.mg_v_labels_used(self.ptr, used, n))
        used[0] = 1                    # no label
        kept = [i for i in range(n) if used[i]]
        renumber = ffi.new("int64_t[]", [-1] * n)
        for new, old in enumerate(kept):
            renumber[old] = new
        check(lib.mg_v_relabel(self.ptr, renumber, n))
        self.label_texts = [self.label_texts[i] for i in kept]
        self.label_ids = {text: i for i, text in enumerate(self.label_texts) if i}
        self.label_limit = max(LABELS_BEFORE_COMPACTING, 2 * len(kept))


LABELS_BEFORE_COMPACTING = 4096  # distinct label texts a Values arena holds before it drops unused ones

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
        depth = lib.mg_v_scope_begin(self.arena.ptr)
        if depth == lib.MG_ERR_ARG:
            raise RuntimeError(f"scopes nest at most {lib.MG_MAX_SCOPES} deep")
        check(depth)
        return self

    def __exit__(self, *exc):
        check(lib.mg_v_scope_end(self.arena.ptr))


_new = object.__new__
_add, _addc, _mul, _mulc, _data, _grad = lib.mg_add, lib.mg_add_const, lib.mg_mul, lib.mg_mul_const, lib.mg_data, lib.mg_grad


def _mixed_from_python(value, symbol):
    """The error for a python Value (the caller's caller: its __add__ or __mul__, whose number branch
    computed `self.data + value`) mixed with a c-backend one; called by CValue's reflected operators."""
    return mixing_error(sys._getframe(1).f_locals["self"], value, symbol)


def _python_values_constant_path():
    """The code objects of the python Value's operators whose number branch computes
    `self.data + other` (or `*`): a c-backend Value reached from there is being mixed with a
    python one. Checked in the reflected operators, so that the python Value's hot path, the
    reference and the benchmarks' baseline, pays nothing for it."""
    from .engine import Value
    return (Value.__add__.__code__, Value.__mul__.__code__)


def _other_operand(self, other, symbol):
    """An operand C could not take as a number: another backend's or arena's Value is a clear
    error; anything else is Python's business (NotImplemented)."""
    if isinstance(other, DerivedOps):
        raise mixing_error(self, other, symbol)
    return NotImplemented


class NodeValue(DerivedOps):
    """A c-backend Value in an arena of its own (a model's graph): a node handle, refused after the
    arena's reset. Each operator is one cffi call (the arena's mg_* functions), one check and one
    wrapper, written out flat (a shared helper would cost a call each)."""
    __slots__ = ('_a', '_h')
    backend = "c"

    def __new__(cls, data, arena):
        h = check(lib.mg_leaf(arena.ptr, data))
        v = _new(cls)
        v._a = arena
        v._h = h
        return v

    # other is a number, or a Value of the same class and arena; anything else goes to
    # _other_operand (cffi raises TypeError for it)
    def __add__(self, other):
        a = self._a
        if type(other) is NodeValue:
            if other._a is not a:
                raise mixing_error(self, other, "+")
            h = _add(a.ptr, self._h, other._h)
        else:
            try:
                h = _addc(a.ptr, self._h, other)
            except TypeError:
                return _other_operand(self, other, "+")
        if h < 0:
            raise_error(h)
        v = _new(NodeValue)
        v._a = a
        v._h = h
        return v

    def __mul__(self, other):
        a = self._a
        if type(other) is NodeValue:
            if other._a is not a:
                raise mixing_error(self, other, "*")
            h = _mul(a.ptr, self._h, other._h)
        else:
            try:
                h = _mulc(a.ptr, self._h, other)
            except TypeError:
                return _other_operand(self, other, "*")
        if h < 0:
            raise_error(h)
        v = _new(NodeValue)
        v._a = a
        v._h = h
        return v

    def __pow__(self, other):
        if isinstance(other, DerivedOps):
            raise TypeError("Value ** Value is not supported: the exponent must be a number")
        a = self._a
        try:
            h = lib.mg_pow(a.ptr, self._h, other)
        except TypeError:
            return NotImplemented
        if h < 0:
            raise_error(h)
        v = _new(NodeValue)
        v._a = a
        v._h = h
        return v

    def _unary(self, fn):
        a = self._a
        h = fn(a.ptr, self._h)
        if h < 0:
            raise_error(h)
        v = _new(NodeValue)
        v._a = a
        v._h = h
        return v

    def log(self):
        return self._unary(lib.mg_log)

    def exp(self):
        return self._unary(lib.mg_exp)

    def relu(self):
        return self._unary(lib.mg_relu)
    # -x, x - y, x / y and the reflected forms: ops.DerivedOps

    @property
    def data(self):
        x = _data(self._a.ptr, self._h)
        if x != x:  # the node's NaN, or a refused handle
            check(lib.mg_node_status(self._a.ptr, self._h))
        return x

    @data.setter
    def data(self, x):
        check(lib.mg_set_data(self._a.ptr, self._h, x))

    @property
    def grad(self):
        x = _grad(self._a.ptr, self._h)
        if x != x:
            check(lib.mg_node_status(self._a.ptr, self._h))
        return x

    @grad.setter
    def grad(self, x):
        check(lib.mg_set_grad(self._a.ptr, self._h, x))

    @staticmethod
    def _wrap_handle(arena, h):
        v = _new(NodeValue)
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


# A user's Values: the C type of ext/values.c (its operators, data and grad, leaves, and the
# release of a dead Value's slot are C); what follows adds the rest of the Value API.
CValue = _values.CValue
_values.bind(int(ffi.cast("uintptr_t", lib.mg_values_api_get())), raise_error, mixing_error, _mixed_from_python,
             _python_values_constant_path(), NodeValue, default_arena, _local)


def _wrap(arena, handle):
    """A Value of a handle C returned in `arena` (a slot, or a model arena's node handle)."""
    handle = check(handle)
    return _values.wrap(arena, handle) if arena.values else NodeValue._wrap_handle(arena, handle)


def _slot_node(self):
    return check(lib.mg_v_node(self._a.ptr, self._h))


def _slot_children(self):
    """The children in order (x * x has x twice), each a new Value of its node."""
    a = self._a
    out = ffi.new("int64_t[]", 2)
    n = check(lib.mg_v_children(a.ptr, self._h, out, 2))
    if n > 2:
        out = ffi.new("int64_t[]", n)
        check(lib.mg_v_children(a.ptr, self._h, out, n))
    return tuple(_values.wrap(a, out[i]) for i in range(n))


def _slot_label(self):
    return self._a.label_texts[check(lib.mg_v_label(self._a.ptr, self._h))]


def _slot_set_label(self, text):
    a = self._a
    check(lib.mg_v_label(a.ptr, self._h))   # another thread's Value is refused before the table changes
    ident = a.label_id(str(text))
    check(lib.mg_v_set_label(a.ptr, self._h, ident))


def _slot_backward(self):
    check(lib.mg_backward(self._a.ptr, self._node()))


CValue.backend = "c"
CValue._wrap = staticmethod(_wrap)
CValue._node = _slot_node
CValue._children = property(_slot_children)
CValue.label = property(_slot_label, _slot_set_label)
CValue.backward = _slot_backward


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


def _reduce(self):
    raise TypeError("a c-backend Value cannot be pickled or copied: it is a handle into a C graph; use its .data")


def _repr(self):
    return f"Value(data={self.data!r}, grad={self.grad!r})"


for _cls in (CValue, NodeValue):
    _cls._op = property(_op)
    _cls._prev = property(_prev)
    _cls.same_node = _same_node
    _cls.__reduce__ = _reduce
    _cls.__repr__ = _repr
