/*
 * values.c -- microgpt._values: the c backend's Value type (microgpt.native.CValue) in C.
 *
 * A CValue names a node of its thread's Values arena (csrc/arena.c) through a slot. Its
 * operators call the arena's mg_v_* functions directly, through the table values_api.h
 * describes, with the GIL held: cffi's per-call costs (an argument tuple, the GIL released and
 * taken back, errno saved and restored, a Python wrapper per result) are what made a c Value op
 * dearer than a python one. The arena code itself lives once, in microgpt._cmg; this module
 * receives the table's address from it (bind) and never compiles csrc.
 *
 * Objects:
 * - ValuesCore, the C part of native.ValuesArena (a Python subclass): the arena, the table, the
 *   thread that owns it, and the slots of its Values that died in other threads (a Value dying in
 *   its own thread hands its slot back at once; another thread may not call into the arena).
 * - CValue: a strong reference to its ValuesCore and a slot; a subclass of ops.DerivedOps (so that
 *   isinstance checks against it keep working) but not tracked by the cycle collector: it refers
 *   only to its arena, which refers to no Value, so it can be in no cycle.
 *
 * What stays in Python (native.py): the error messages (raise_error, mixing_error), the
 * teaching tools (_children, _op, label), backward, repr and the refusal to pickle.
 * Errors: a negative MG_ERR_* becomes the exception native.raise_error makes of it; MG_ERR_RELEASE
 * (the arena asking for the slots of dead Values before it compacts) is answered here.
 *
 * Rules: limited API (3.10), no global mutable state (the module state holds what the types
 * need), every allocation checked, -Wall -Wextra clean.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include "microgpt.h"
#include "values_api.h"

typedef struct {
    PyObject_HEAD
    mg_arena *ptr;                  /* NULL until opened (open_arena) */
    const mg_values_api *api;
    unsigned long owner;            /* PyThread_get_thread_ident() of the thread the arena is bound to */
    int64_t *dead;                  /* slots of Values that died in another thread, not yet released */
    Py_ssize_t ndead, dead_cap;
} Core;

typedef struct {
    PyObject_HEAD
    Core *arena;                    /* strong */
    int64_t slot;
} Value;

typedef struct {
    const mg_values_api *api;       /* NULL until bind() */
    PyTypeObject *core_type, *value_type;
    PyObject *derived_ops;          /* ops.DerivedOps */
    PyObject *raise_error;          /* native.raise_error(code): raises */
    PyObject *mixing_error;         /* ops.mixing_error(left, right, symbol): the TypeError */
    PyObject *mixed_from_python;    /* native._mixed_from_python(value, symbol): the TypeError */
    PyObject *mixed_codes;          /* the python Value's __add__, __mul__ code objects (a tuple) */
    PyObject *node_value;           /* native.NodeValue */
    PyObject *default_arena;        /* native.default_arena() */
    PyObject *local;                /* native._local (threading.local: .arena) */
    PyObject *arena_name;           /* "arena" */
} State;

enum { OP_ADD, OP_ADDC, OP_MUL, OP_MULC, OP_POW, OP_LOG, OP_EXP, OP_RELU };

static State *state_of(PyObject *value) { return PyType_GetModuleState(Py_TYPE(value)); }

/* ---- errors */

static PyObject *raise_code(State *st, int64_t code) {
    PyObject *r = PyObject_CallFunction(st->raise_error, "L", (long long)code);
    Py_XDECREF(r);                  /* raise_error always raises; anything else is a bug there */
    if (!PyErr_Occurred()) PyErr_Format(PyExc_RuntimeError, "microgpt C core returned error %lld", (long long)code);
    return NULL;
}

static PyObject *raise_made(PyObject *exc) {  /* exc: an exception instance (new reference), or NULL */
    if (exc) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

static PyObject *mixing(State *st, PyObject *left, PyObject *right, const char *symbol) {
    return raise_made(PyObject_CallFunction(st->mixing_error, "OOs", left, right, symbol));
}

/* ---- slots */

/* Hand the slots of Values that died in other threads back to C (in the owner thread). */
static int flush_dead(Core *c) {
    if (!c->ndead) return 0;
    int rc = c->api->release(c->ptr, c->dead, c->ndead);
    if (!rc) c->ndead = 0;
    return rc;
}

/* A Value died: its slot goes back now (its own thread), or when the owner next asks. */
static void give_back(Core *c, int64_t slot) {
    if (PyThread_get_thread_ident() == c->owner) {
        c->api->release(c->ptr, &slot, 1);
        return;
    }
    if (c->ndead == c->dead_cap) {
        Py_ssize_t cap = c->dead_cap ? 2 * c->dead_cap : 64;
        int64_t *p = cap <= PY_SSIZE_T_MAX / (Py_ssize_t)sizeof *p ? PyMem_Realloc(c->dead, (size_t)cap * sizeof *p) : NULL;
        if (!p) return;             /* out of memory: the node stays until the arena is freed */
        c->dead = p;
        c->dead_cap = cap;
    }
    c->dead[c->ndead++] = slot;
}

static int64_t call_op(Core *c, int op, int64_t x, int64_t y, double k) {
    const mg_values_api *f = c->api;
    switch (op) {
    case OP_ADD: return f->add(c->ptr, x, y);
    case OP_ADDC: return f->add_const(c->ptr, x, k);
    case OP_MUL: return f->mul(c->ptr, x, y);
    case OP_MULC: return f->mul_const(c->ptr, x, k);
    case OP_POW: return f->pow(c->ptr, x, k);
    case OP_LOG: return f->log(c->ptr, x);
    case OP_EXP: return f->exp(c->ptr, x);
    default: return f->relu(c->ptr, x);
    }
}

static PyObject *new_value(PyTypeObject *type, Core *c, int64_t slot) {
    Value *v = PyObject_New(Value, type);
    if (!v) {
        give_back(c, slot);
        return NULL;
    }
    Py_INCREF(c);
    v->arena = c;
    v->slot = slot;
    return (PyObject *)v;
}

/* The op on x (and y, or the number k): one C call, two when the arena first asks for dead slots. */
static PyObject *make(Value *x, int op, int64_t y, double k) {
    Core *c = x->arena;
    int64_t h = call_op(c, op, x->slot, y, k);
    if (h == MG_ERR_RELEASE) {
        int rc = flush_dead(c);
        h = rc ? rc : call_op(c, op, x->slot, y, k);
    }
    if (h < 0) return raise_code(state_of((PyObject *)x), h);
    return new_value(Py_TYPE(x), c, h);
}

/* ---- operators */

static PyObject *v_add(PyObject *a, PyObject *b);
static PyObject *v_mul(PyObject *a, PyObject *b);

static int is_value(PyObject *o) { return PyType_GetSlot(Py_TYPE(o), Py_nb_add) == (void *)v_add; }

/* other as a number: 1, or 0 with NotImplemented due (a TypeError cleared) or -1 with an error;
 * another kind of Value is the mixing error */
static int as_number(State *st, PyObject *self, PyObject *other, const char *symbol, double *k) {
    if (PyFloat_CheckExact(other) || PyLong_CheckExact(other)) {
        *k = PyFloat_AsDouble(other);
        return *k == -1.0 && PyErr_Occurred() ? -1 : 1;
    }
    int derived = PyObject_IsInstance(other, st->derived_ops);
    if (derived < 0) return -1;
    if (derived) {
        mixing(st, self, other, symbol);
        return -1;
    }
    *k = PyFloat_AsDouble(other);
    if (*k == -1.0 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_TypeError)) return -1;
        PyErr_Clear();
        return 0;
    }
    return 1;
}

/* x (op) y, x a Value: y a Value of the same arena, or a number */
static PyObject *binary(PyObject *x, PyObject *y, int op, int op_const, const char *symbol) {
    Value *v = (Value *)x;
    if (Py_TYPE(y) == Py_TYPE(x)) {
        if (((Value *)y)->arena != v->arena) return mixing(state_of(x), x, y, symbol);
        return make(v, op, ((Value *)y)->slot, 0.0);
    }
    double k = 0.0;
    int rc = as_number(state_of(x), x, y, symbol, &k);
    if (rc <= 0) {
        if (rc == 0) Py_RETURN_NOTIMPLEMENTED;
        return NULL;
    }
    return make(v, op_const, 0, k);
}

/* other (op) value, other not a Value of this type: Python's reflected operator, which is
 * `value (op) other`. Called from the python Value's __add__ or __mul__, whose number branch
 * computes `self.data + other`, it is a python Value mixed with this one (the only place that
 * can tell: the python Value's own hot path pays nothing for it). */
static PyObject *reflected(PyObject *value, PyObject *other, int op, int op_const, const char *symbol) {
    State *st = state_of(value);
    PyFrameObject *frame = PyEval_GetFrame();            /* borrowed */
    if (frame) {
        PyObject *code = (PyObject *)PyFrame_GetCode(frame);
        int mixed = PySequence_Contains(st->mixed_codes, code);
        Py_DECREF(code);
        if (mixed < 0) return NULL;
        if (mixed) return raise_made(PyObject_CallFunction(st->mixed_from_python, "Os", value, symbol));
    }
    return binary(value, other, op, op_const, symbol);
}

static PyObject *v_add(PyObject *a, PyObject *b) {
    if (Py_TYPE(a) == Py_TYPE(b) || is_value(a)) return binary(a, b, OP_ADD, OP_ADDC, "+");
    return reflected(b, a, OP_ADD, OP_ADDC, "+");
}

static PyObject *v_mul(PyObject *a, PyObject *b) {
    if (Py_TYPE(a) == Py_TYPE(b) || is_value(a)) return binary(a, b, OP_MUL, OP_MULC, "*");
    return reflected(b, a, OP_MUL, OP_MULC, "*");
}

static PyObject *v_pow(PyObject *a, PyObject *b, PyObject *mod) {
    if (!is_value(a) || mod != Py_None) Py_RETURN_NOTIMPLEMENTED;
    State *st = state_of(a);
    double k = 0.0;
    if (PyFloat_CheckExact(b) || PyLong_CheckExact(b)) {
        k = PyFloat_AsDouble(b);
        if (k == -1.0 && PyErr_Occurred()) return NULL;
    } else {
        int derived = PyObject_IsInstance(b, st->derived_ops);
        if (derived < 0) return NULL;
        if (derived) {
            PyErr_SetString(PyExc_TypeError, "Value ** Value is not supported: the exponent must be a number");
            return NULL;
        }
        k = PyFloat_AsDouble(b);
        if (k == -1.0 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_TypeError)) return NULL;
            PyErr_Clear();
            Py_RETURN_NOTIMPLEMENTED;
        }
    }
    return make((Value *)a, OP_POW, 0, k);
}

/* The operators the seed derives from +, * and ** (ops.DerivedOps), written out the same way:
 * -x is x * -1, x - y is x + (-y), x / y is x * y**-1; a number operand goes through Python's own
 * operators, as it does there. */
static PyObject *v_neg(PyObject *a) { return make((Value *)a, OP_MULC, 0, -1.0); }

static PyObject *minus_one_power(PyObject *x) {       /* x ** -1, x anything */
    if (is_value(x)) return make((Value *)x, OP_POW, 0, -1.0);
    PyObject *minus_one = PyLong_FromLong(-1);
    if (!minus_one) return NULL;
    PyObject *r = PyNumber_Power(x, minus_one, Py_None);
    Py_DECREF(minus_one);
    return r;
}

static PyObject *v_sub(PyObject *a, PyObject *b) {
    PyObject *neg, *r;
    if (is_value(a)) {              /* self + (-other) */
        if (!(neg = is_value(b) ? v_neg(b) : PyNumber_Negative(b))) return NULL;
        r = v_add(a, neg);
        if (r == Py_NotImplemented) {  /* as `self + (-other)` in Python: the other side's turn */
            Py_DECREF(r);
            r = PyNumber_Add(a, neg);
        }
    } else {                        /* other + (-self) */
        if (!(neg = v_neg(b))) return NULL;
        r = PyNumber_Add(a, neg);
    }
    Py_DECREF(neg);
    return r;
}

static PyObject *v_truediv(PyObject *a, PyObject *b) {
    PyObject *inv, *r;
    if (is_value(a)) {              /* self * other**-1 */
        if (!(inv = minus_one_power(b))) return NULL;
        r = v_mul(a, inv);
        if (r == Py_NotImplemented) {
            Py_DECREF(r);
            r = PyNumber_Multiply(a, inv);
        }
    } else {                        /* other * self**-1 */
        if (!(inv = minus_one_power(b))) return NULL;
        r = PyNumber_Multiply(a, inv);
    }
    Py_DECREF(inv);
    return r;
}

static PyObject *v_log(PyObject *self, PyObject *unused) { (void)unused; return make((Value *)self, OP_LOG, 0, 0.0); }
static PyObject *v_exp(PyObject *self, PyObject *unused) { (void)unused; return make((Value *)self, OP_EXP, 0, 0.0); }
static PyObject *v_relu(PyObject *self, PyObject *unused) { (void)unused; return make((Value *)self, OP_RELU, 0, 0.0); }

/* ---- data and grad: NaN from C is a node's NaN or a refused slot, which status tells apart */

static PyObject *v_read(PyObject *self, int grad) {
    Value *v = (Value *)self;
    Core *c = v->arena;
    double x = grad ? c->api->grad(c->ptr, v->slot) : c->api->data(c->ptr, v->slot);
    if (x != x) {
        int rc = c->api->status(c->ptr, v->slot);
        if (rc) return raise_code(state_of(self), rc);
    }
    return PyFloat_FromDouble(x);
}

static int v_write(PyObject *self, PyObject *value, int grad) {
    if (!value) {
        PyErr_SetString(PyExc_AttributeError, "a Value's data and grad cannot be deleted");
        return -1;
    }
    double x = PyFloat_AsDouble(value);
    if (x == -1.0 && PyErr_Occurred()) return -1;
    Value *v = (Value *)self;
    Core *c = v->arena;
    int rc = grad ? c->api->set_grad(c->ptr, v->slot, x) : c->api->set_data(c->ptr, v->slot, x);
    if (rc) {
        raise_code(state_of(self), rc);
        return -1;
    }
    return 0;
}

static PyObject *get_data(PyObject *self, void *unused) { (void)unused; return v_read(self, 0); }
static PyObject *get_grad(PyObject *self, void *unused) { (void)unused; return v_read(self, 1); }
static int set_data(PyObject *self, PyObject *x, void *unused) { (void)unused; return v_write(self, x, 0); }
static int set_grad(PyObject *self, PyObject *x, void *unused) { (void)unused; return v_write(self, x, 1); }

/* ---- making and freeing Values */

/* CValue(data, arena=None): a leaf in the thread's default arena, in `arena` (a ValuesArena), or
 * a NodeValue when arena is a model's Arena */
static PyObject *v_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *names[] = {"data", "arena", NULL};
    PyObject *data, *arena = Py_None;
    if (!kwds && PyTuple_Size(args) == 1) {          /* CValue(x): the common case, without the parser */
        if (!(data = PyTuple_GetItem(args, 0))) return NULL;
    } else if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O:CValue", names, &data, &arena)) {
        return NULL;
    }
    State *st = PyType_GetModuleState(type);
    if (!st) return NULL;
    if (arena != Py_None && !PyObject_TypeCheck(arena, st->core_type))
        return PyObject_CallFunctionObjArgs(st->node_value, data, arena, NULL);
    double x = PyFloat_AsDouble(data);
    if (x == -1.0 && PyErr_Occurred()) return NULL;
    if (arena == Py_None) {
        arena = PyObject_GetAttr(st->local, st->arena_name);
        if (!arena) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError)) return NULL;
            PyErr_Clear();
            if (!(arena = PyObject_CallNoArgs(st->default_arena))) return NULL;
        }
        if (!PyObject_TypeCheck(arena, st->core_type)) {
            Py_DECREF(arena);
            PyErr_SetString(PyExc_TypeError, "the default arena is not a ValuesArena");
            return NULL;
        }
    } else {
        Py_INCREF(arena);
    }
    Core *c = (Core *)arena;
    PyObject *r = NULL;
    if (!c->ptr) {
        PyErr_SetString(PyExc_ValueError, "this ValuesArena was not opened");
    } else {
        int64_t h = c->api->leaf(c->ptr, x);
        if (h == MG_ERR_RELEASE) {
            int rc = flush_dead(c);
            h = rc ? rc : c->api->leaf(c->ptr, x);
        }
        r = h < 0 ? raise_code(st, h) : new_value(type, c, h);
    }
    Py_DECREF(arena);
    return r;
}

static void v_dealloc(PyObject *self) {
    Value *v = (Value *)self;
    PyTypeObject *type = Py_TYPE(self);
    Core *c = v->arena;
    if (c) {
        give_back(c, v->slot);
        Py_DECREF(c);
    }
    PyObject_Free(self);
    Py_DECREF(type);
}

/* Never called: CValue is not tracked by the cycle collector (see the top). Present so that it
 * does not inherit DerivedOps's collection support (Python inherits it only with both slots empty). */
static int v_traverse(PyObject *self, visitproc visit, void *arg) {
    (void)self, (void)visit, (void)arg;
    return 0;
}

static PyMemberDef v_members[] = {
    {"_a", T_OBJECT_EX, offsetof(Value, arena), READONLY, "the ValuesArena the Value's node is in"},
    {"_h", T_LONGLONG, offsetof(Value, slot), READONLY, "the slot naming the node"},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef v_getset[] = {
    {"data", get_data, set_data, "the node's value", NULL},
    {"grad", get_grad, set_grad, "the node's gradient", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef v_methods[] = {
    {"log", v_log, METH_NOARGS, NULL},
    {"exp", v_exp, METH_NOARGS, NULL},
    {"relu", v_relu, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot value_slots[] = {
    {Py_tp_doc, "A Value a user makes on the c backend: a slot in this thread's default arena, with the python "
                "backend's Value API."},
    {Py_tp_new, v_new},
    {Py_tp_dealloc, v_dealloc},
    {Py_tp_traverse, v_traverse},
    {Py_tp_free, PyObject_Free},
    {Py_tp_members, v_members},
    {Py_tp_getset, v_getset},
    {Py_tp_methods, v_methods},
    {Py_nb_add, v_add},
    {Py_nb_multiply, v_mul},
    {Py_nb_power, v_pow},
    {Py_nb_negative, v_neg},
    {Py_nb_subtract, v_sub},
    {Py_nb_true_divide, v_truediv},
    {0, NULL},
};

static PyType_Spec value_spec = {
    "microgpt.native.CValue", sizeof(Value), 0, Py_TPFLAGS_DEFAULT, value_slots,
};

/* ---- ValuesCore */

static void core_dealloc(PyObject *self) {
    Core *c = (Core *)self;
    PyTypeObject *type = Py_TYPE(self);
    if (c->ptr) c->api->arena_free(c->ptr);
    PyMem_Free(c->dead);
    freefunc free_ = (freefunc)PyType_GetSlot(type, Py_tp_free);
    free_(self);
    Py_DECREF(type);
}

static PyType_Slot core_slots[] = {
    {Py_tp_doc, "The C part of a ValuesArena (native.py): its arena, and the slots of its Values that died in "
                "other threads."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, core_dealloc},
    {0, NULL},
};

static PyType_Spec core_spec = {
    "microgpt._values.ValuesCore", sizeof(Core), 0, Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE, core_slots,
};

/* ---- module functions */

static Core *as_core(State *st, PyObject *o) {
    if (!PyObject_TypeCheck(o, st->core_type)) {
        PyErr_SetString(PyExc_TypeError, "expected a ValuesArena");
        return NULL;
    }
    return (Core *)o;
}

/* bind(api_address, raise_error, mixing_error, mixed_from_python, mixed_codes, node_value,
 *      default_arena, local): what the types need from native.py, once */
static PyObject *m_bind(PyObject *module, PyObject *args) {
    State *st = PyModule_GetState(module);
    PyObject *address, *objs[7];
    if (!PyArg_ParseTuple(args, "O!OOOO!OOO:bind", &PyLong_Type, &address, &objs[0], &objs[1], &objs[2],
                          &PyTuple_Type, &objs[3], &objs[4], &objs[5], &objs[6]))
        return NULL;
    uintptr_t at = (uintptr_t)PyLong_AsUnsignedLongLong(address);
    if (PyErr_Occurred()) return NULL;
    const mg_values_api *api = (const mg_values_api *)at;
    if (!api || api->size != sizeof *api) {
        PyErr_SetString(PyExc_ImportError, "microgpt._values and microgpt._cmg were built from different sources: "
                                           "reinstall microgpt");
        return NULL;
    }
    PyObject **fields[7] = {&st->raise_error, &st->mixing_error, &st->mixed_from_python, &st->mixed_codes,
                            &st->node_value, &st->default_arena, &st->local};
    for (int k = 0; k < 7; k++) {
        PyObject *old = *fields[k];
        Py_INCREF(objs[k]);
        *fields[k] = objs[k];
        Py_XDECREF(old);
    }
    st->api = api;
    Py_RETURN_NONE;
}

/* open_arena(core): make the core's C arena, bound to this thread; its address, for cffi */
static PyObject *m_open_arena(PyObject *module, PyObject *arg) {
    State *st = PyModule_GetState(module);
    Core *c = as_core(st, arg);
    if (!c) return NULL;
    if (!st->api) return PyErr_Format(PyExc_RuntimeError, "microgpt._values is not bound yet");
    if (c->ptr) return PyErr_Format(PyExc_ValueError, "this ValuesArena is open already");
    if (!(c->ptr = st->api->values_new())) return PyErr_NoMemory();
    c->api = st->api;
    c->owner = PyThread_get_thread_ident();
    return PyLong_FromVoidPtr(c->ptr);
}

/* flush(core): release the slots of Values that died in other threads (in the arena's thread) */
static PyObject *m_flush(PyObject *module, PyObject *arg) {
    State *st = PyModule_GetState(module);
    Core *c = as_core(st, arg);
    if (!c) return NULL;
    if (!c->ptr) Py_RETURN_NONE;
    int rc = flush_dead(c);
    if (rc) return raise_code(st, rc);
    Py_RETURN_NONE;
}

/* wrap(core, slot): the Value of a slot C handed out (mg_v_children); it releases the slot when it dies */
static PyObject *m_wrap(PyObject *module, PyObject *args) {
    State *st = PyModule_GetState(module);
    PyObject *o;
    long long slot;
    if (!PyArg_ParseTuple(args, "OL:wrap", &o, &slot)) return NULL;
    Core *c = as_core(st, o);
    if (!c) return NULL;
    if (!c->ptr || slot < 0) return PyErr_Format(PyExc_ValueError, "not a slot of an open ValuesArena");
    return new_value(st->value_type, c, (int64_t)slot);
}

/* dead(core): how many slots wait in the core's list (tests) */
static PyObject *m_dead(PyObject *module, PyObject *arg) {
    Core *c = as_core(PyModule_GetState(module), arg);
    return c ? PyLong_FromSsize_t(c->ndead) : NULL;
}

static PyMethodDef module_methods[] = {
    {"bind", m_bind, METH_VARARGS, "bind(api_address, raise_error, mixing_error, mixed_from_python, mixed_codes, "
                                   "node_value, default_arena, local)"},
    {"open_arena", m_open_arena, METH_O, "open_arena(core): the address of a new Values arena for core"},
    {"flush", m_flush, METH_O, "flush(core): release the slots of Values that died in other threads"},
    {"wrap", m_wrap, METH_VARARGS, "wrap(core, slot): the Value of a slot C handed out"},
    {"dead", m_dead, METH_O, "dead(core): slots of Values that died in other threads, not yet released"},
    {NULL, NULL, 0, NULL},
};

/* ---- the module */

static int m_exec(PyObject *module) {
    State *st = PyModule_GetState(module);
    PyObject *ops = PyImport_ImportModule("microgpt.ops");
    if (!ops) return -1;
    st->derived_ops = PyObject_GetAttrString(ops, "DerivedOps");
    Py_DECREF(ops);
    if (!st->derived_ops) return -1;
    if (!(st->arena_name = PyUnicode_InternFromString("arena"))) return -1;
    if (!(st->core_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &core_spec, NULL))) return -1;
    PyObject *bases = PyTuple_Pack(1, st->derived_ops);
    if (!bases) return -1;
    st->value_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &value_spec, bases);
    Py_DECREF(bases);
    if (!st->value_type) return -1;
    if (PyModule_AddObjectRef(module, "ValuesCore", (PyObject *)st->core_type) < 0) return -1;
    if (PyModule_AddObjectRef(module, "CValue", (PyObject *)st->value_type) < 0) return -1;
    return 0;
}

static int m_traverse(PyObject *module, visitproc visit, void *arg) {
    State *st = PyModule_GetState(module);
    if (!st) return 0;
    Py_VISIT(st->core_type);
    Py_VISIT(st->value_type);
    Py_VISIT(st->derived_ops);
    Py_VISIT(st->raise_error);
    Py_VISIT(st->mixing_error);
    Py_VISIT(st->mixed_from_python);
    Py_VISIT(st->mixed_codes);
    Py_VISIT(st->node_value);
    Py_VISIT(st->default_arena);
    Py_VISIT(st->local);
    Py_VISIT(st->arena_name);
    return 0;
}

static int m_clear(PyObject *module) {
    State *st = PyModule_GetState(module);
    if (!st) return 0;
    Py_CLEAR(st->core_type);
    Py_CLEAR(st->value_type);
    Py_CLEAR(st->derived_ops);
    Py_CLEAR(st->raise_error);
    Py_CLEAR(st->mixing_error);
    Py_CLEAR(st->mixed_from_python);
    Py_CLEAR(st->mixed_codes);
    Py_CLEAR(st->node_value);
    Py_CLEAR(st->default_arena);
    Py_CLEAR(st->local);
    Py_CLEAR(st->arena_name);
    return 0;
}

static void m_free(void *module) { m_clear((PyObject *)module); }

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, m_exec},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "microgpt._values", "The c backend's Value type (see ext/values.c).", sizeof(State),
    module_methods, module_slots, m_traverse, m_clear, m_free,
};

PyMODINIT_FUNC PyInit__values(void) { return PyModuleDef_Init(&module_def); }
