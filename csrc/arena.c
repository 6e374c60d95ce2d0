/*
 * arena.c -- the graph arena of microgpt's C backend: scalar nodes, handles, backward, Adam, vecs.
 *
 * One mg_arena holds a whole scalar autograd graph in flat arrays (layout in internal.h). The
 * model's parameters are made first and kept (mg_arena_keep); each training step appends its
 * nodes after them and mg_arena_reset drops the step by moving counts back. Every number is the
 * double CPython computes for the seed's microgpt.py, in the same order, so the results are
 * bit-identical to the Python backend (see shared/PARITY.md).
 *
 * Rules: no global state; nothing exits or aborts; every allocation is checked and growth is
 * geometric. A function that fails returns a negative MG_ERR_* and leaves the arena as it was:
 * arrays are grown before anything is written, and handles are validated (generation and index)
 * before any array is read, so a stale handle can never reach another node's memory.
 *
 * Every exported function counts itself (mg_arena_calls) and, if it changes the arena other than
 * through a kernel, spoils a tape being recorded (internal.h: mg_count, mg_count_change).
 *
 * Not here: the layer kernels (kernels.c), the tape and its programs (tape.c), anything about
 * Python objects, threads (an arena is used by one thread at a time), or freeing memory before
 * mg_arena_free (capacity only grows).
 */
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <math.h>
#include "microgpt.h"
#include "internal.h"

// --- memory

#define MG_EDGE_LIMIT (1LL << 40)     // sanity bound on edges and kernel scratch

// bytes per element of each group of arrays that grow together
#define NODE_BYTES    (int64_t)(2 * sizeof(double) + sizeof(uint8_t) + sizeof(uint32_t) + sizeof(int64_t))
#define EDGE_BYTES    (int64_t)(sizeof(int64_t) + sizeof(double))
#define SCRATCH_BYTES (int64_t)(3 * sizeof(int64_t))
#define ADAM_BYTES    (int64_t)(5 * sizeof(double))

// realloc p to n elements of size bytes; NULL on failure (p is then untouched)
static void *resize(void *p, int64_t n, size_t size) {
    if (n < 0 || (uint64_t)n > SIZE_MAX / size) return NULL;
    size_t bytes = (size_t)n * size;
    return realloc(p, bytes ? bytes : 1);
}

// resize a->field to n elements, or return MG_ERR_NOMEM from the calling function
#define RESIZE(field, n) do {                                        \
        void *p_ = resize(a->field, (n), sizeof *a->field);          \
        if (!p_) return MG_ERR_NOMEM;                                \
        a->field = p_;                                               \
    } while (0)

static int fits(const mg_arena *a, int64_t extra) {
    return a->limit <= 0 || a->bytes + extra <= a->limit;
}

// capacity for `need` elements grown from `cap`: doubled, or exactly `need` near the limit.
// If even that does not fit, the caller's fits() check fails.
static int64_t next_cap(const mg_arena *a, int64_t cap, int64_t need, int64_t max, int64_t elem) {
    int64_t c = cap < 64 ? 64 : cap;
    while (c < need) c *= 2;
    if (c > max) c = max;
    if (!fits(a, (c - cap) * elem)) c = need;
    return c;
}

// Each grow_* makes its group hold `need` elements. On failure the group's capacity is unchanged
// (an array that was already grown is merely larger than its capacity says).
static int grow_nodes(mg_arena *a, int64_t need) {
    if (need <= a->cap) return 0;
    if (need > MG_IDX_LIMIT) return MG_ERR_NOMEM;
    int64_t cap = next_cap(a, a->cap, need, MG_IDX_LIMIT, NODE_BYTES);
    if (!fits(a, (cap - a->cap) * NODE_BYTES)) return MG_ERR_NOMEM;
    RESIZE(data, cap);
    RESIZE(grad, cap);
    RESIZE(op, cap);
    RESIZE(seen, cap);
    memset(a->seen + a->cap, 0, (size_t)(cap - a->cap) * sizeof *a->seen);   // never reached
    RESIZE(edge_begin, cap + 1);
    a->bytes += (cap - a->cap) * NODE_BYTES;
    a->cap = cap;
    return 0;
}

static int grow_edges(mg_arena *a, int64_t need) {
    if (need <= a->ecap) return 0;
    if (need > MG_EDGE_LIMIT) return MG_ERR_NOMEM;
    int64_t cap = next_cap(a, a->ecap, need, MG_EDGE_LIMIT, EDGE_BYTES);
    if (!fits(a, (cap - a->ecap) * EDGE_BYTES)) return MG_ERR_NOMEM;
    RESIZE(edge_child, cap);
    RESIZE(edge_lgrad, cap);
    a->bytes += (cap - a->ecap) * EDGE_BYTES;
    a->ecap = cap;
    return 0;
}

static int grow_vecs(mg_arena *a, int64_t need) {
    if (need <= a->vcap) return 0;
    if (need > MG_IDX_LIMIT) return MG_ERR_NOMEM;
    int64_t cap = next_cap(a, a->vcap, need, MG_IDX_LIMIT, sizeof(int64_t));
    if (!fits(a, (cap - a->vcap) * (int64_t)sizeof(int64_t))) return MG_ERR_NOMEM;
    RESIZE(vec_ids, cap);
    a->bytes += (cap - a->vcap) * (int64_t)sizeof(int64_t);
    a->vcap = cap;
    return 0;
}

static int grow_tmp(mg_arena *a, int64_t need) {
    if (need <= a->tcap) return 0;
    if (need > MG_EDGE_LIMIT) return MG_ERR_NOMEM;
    int64_t cap = next_cap(a, a->tcap, need, MG_EDGE_LIMIT, sizeof(int64_t));
    if (!fits(a, (cap - a->tcap) * (int64_t)sizeof(int64_t))) return MG_ERR_NOMEM;
    RESIZE(tmp, cap);
    a->bytes += (cap - a->tcap) * (int64_t)sizeof(int64_t);
    a->tcap = cap;
    return 0;
}

static int grow_scratch(mg_arena *a, int64_t need) {
    if (need <= a->scap) return 0;
    int64_t cap = next_cap(a, a->scap, need, MG_IDX_LIMIT, SCRATCH_BYTES);
    if (!fits(a, (cap - a->scap) * SCRATCH_BYTES)) return MG_ERR_NOMEM;
    RESIZE(stack_node, cap);
    RESIZE(stack_edge, cap);
    RESIZE(topo, cap);
    a->bytes += (cap - a->scap) * SCRATCH_BYTES;
    a->scap = cap;
    return 0;
}

// --- memory for the other files (tape.c): the same accounting, one array at a time

void *mgi_alloc(mg_arena *a, int64_t n, size_t size) {
    if (n < 0 || (uint64_t)n > SIZE_MAX / size || !fits(a, n * (int64_t)size)) return NULL;
    void *p = malloc(n ? (size_t)n * size : 1);
    if (p) a->bytes += n * (int64_t)size;
    return p;
}

void mgi_free(mg_arena *a, void *p, int64_t n, size_t size) {
    if (!p) return;
    free(p);
    a->bytes -= n * (int64_t)size;
}

// p (*cap elements of `size` bytes) grown to hold need >= 1 elements: the array (p itself if it
// is big enough), with *cap updated; NULL if there is no room (p and *cap are then unchanged)
void *mgi_grow(mg_arena *a, void *p, int64_t *cap, int64_t need, size_t size) {
    if (need <= *cap) return p;
    if (need > MG_EDGE_LIMIT || (uint64_t)MG_EDGE_LIMIT > SIZE_MAX / size) return NULL;
    int64_t c = next_cap(a, *cap, need, MG_EDGE_LIMIT, (int64_t)size);
    if (!fits(a, (c - *cap) * (int64_t)size)) return NULL;
    void *q = resize(p, c, size);
    if (!q) return NULL;
    a->bytes += (c - *cap) * (int64_t)size;
    *cap = c;
    return q;
}

// room for that many more nodes, edges, vec entries, and kernel scratch entries (from 0)
int mg_arena_reserve(mg_arena *a, int64_t nodes, int64_t edges, int64_t vecs, int64_t tmp) {
    if (nodes < 0 || edges < 0 || vecs < 0 || tmp < 0) return MG_ERR_ARG;
    if (nodes > MG_IDX_LIMIT || edges > MG_EDGE_LIMIT || vecs > MG_IDX_LIMIT) return MG_ERR_NOMEM;
    int rc = grow_nodes(a, a->count + nodes);
    if (!rc) rc = grow_edges(a, a->nedges + edges);
    if (!rc) rc = grow_vecs(a, a->vcount + vecs);
    if (!rc) rc = grow_tmp(a, tmp);
    return rc;
}

// --- lifecycle

mg_arena *mg_arena_new(void) {
    mg_arena *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->edge_begin = calloc(1, sizeof *a->edge_begin);    // edge_begin[0] = 0 for 0 nodes
    a->calls = calloc(1, sizeof *a->calls);
    if (!a->edge_begin || !a->calls) {
        free(a->edge_begin);
        free(a->calls);
        free(a);
        return NULL;
    }
    a->nparams = -1;
    a->cur_prog = -1;
    a->bytes = (int64_t)(sizeof *a + sizeof *a->edge_begin + sizeof *a->calls);
    return a;
}

void mg_arena_free(mg_arena *a) {
    if (!a) return;
    free(a->data); free(a->grad); free(a->op); free(a->seen); free(a->edge_begin);
    free(a->edge_child); free(a->edge_lgrad);
    free(a->vec_ids);
    free(a->stack_node); free(a->stack_edge); free(a->topo); free(a->tmp);
    free(a->adam_m); free(a->adam_v); free(a->next_m); free(a->next_v); free(a->next_p);
    mgi_tape_free(a);
    free(a->calls);
    free(a);
}

int64_t mg_arena_keep(mg_arena *a) {
    mg_count_change(a);
    if (!a) return MG_ERR_ARG;
    if (a->generation != 0) return MG_ERR_ARG;   // after a reset, old handles could name kept nodes
    if (a->step_dots) return MG_ERR_ARG;      // DOT nodes read values that Adam changes: never kept
    a->keep = a->count;
    a->edges_keep = a->nedges;
    a->vkeep = a->vcount;
    return a->count;
}

int64_t mg_arena_reset(mg_arena *a) {
    mg_count(a);
    if (!a) return MG_ERR_ARG;
    a->count = a->keep;                 // edge_begin[keep] == edges_keep still holds
    a->nedges = a->edges_keep;
    a->vcount = a->vkeep;
    a->recording = 0;                   // a tape being recorded named nodes that are gone now
    a->cur_prog = -1;
    a->step_dots = 0;
    a->dot_changed = 0;
    a->differentiated = 0;
    a->generation = a->generation % MG_GEN_MASK + 1;   // 1, 2, ..., MG_GEN_MASK, 1, ...: never 0
    return a->generation;
}

int64_t mg_arena_nodes(const mg_arena *a) { return a ? a->count : MG_ERR_ARG; }
int64_t mg_arena_edges(const mg_arena *a) { return a ? a->nedges : MG_ERR_ARG; }
int64_t mg_arena_kept(const mg_arena *a) { return a ? a->keep : MG_ERR_ARG; }
int64_t mg_arena_bytes(const mg_arena *a) { return a ? a->bytes : MG_ERR_ARG; }
int64_t mg_arena_calls(const mg_arena *a) { return a ? *a->calls : MG_ERR_ARG; }

int mg_arena_set_fused(mg_arena *a, int on) {     // recorded per kernel call: a tape survives it
    mg_count(a);
    if (!a) return MG_ERR_ARG;
    a->fused = on != 0;
    return 0;
}

int mg_arena_set_limit(mg_arena *a, int64_t max_bytes) {
    mg_count(a);
    if (!a || max_bytes < 0) return MG_ERR_ARG;
    a->limit = max_bytes;
    return 0;
}

// a value is about to change: a DOT node alive now would read the new value as a local gradient
static void dot_values_change(mg_arena *a) {
    if (a->step_dots) a->dot_changed = 1;
}

// --- scalar nodes

// the handle of a node just made, or the constructor's error code
static int64_t made(const mg_arena *a, int64_t r) { return r < 0 ? r : mg_handle_of(a, r); }

// validate x, then make room for one node with `edges` children
static int prepare(mg_arena *a, int64_t x, int64_t *i, int64_t edges) {
    int rc = mg_node_check(a, x, i);
    return rc ? rc : mg_arena_reserve(a, 1, edges, 0, 0);
}

int64_t mg_leaf(mg_arena *a, double x) {
    mg_count_change(a);
    if (!a) return MG_ERR_ARG;
    int rc = mg_arena_reserve(a, 1, 0, 0, 0);
    return rc ? rc : made(a, nd_leaf(a, x));
}

int64_t mg_add(mg_arena *a, int64_t x, int64_t y) {
    mg_count_change(a);
    int64_t i = 0, j = 0;
    int rc = mg_node_check(a, y, &j);
    if (!rc) rc = prepare(a, x, &i, 2);
    return rc ? rc : made(a, nd_add(a, i, j));
}

int64_t mg_mul(mg_arena *a, int64_t x, int64_t y) {
    mg_count_change(a);
    int64_t i = 0, j = 0;
    int rc = mg_node_check(a, y, &j);
    if (!rc) rc = prepare(a, x, &i, 2);
    return rc ? rc : made(a, nd_mul(a, i, j));
}

int64_t mg_add_const(mg_arena *a, int64_t x, double c) {
    mg_count_change(a);
    int64_t i = 0;
    int rc = prepare(a, x, &i, 1);
    return rc ? rc : made(a, nd_addc(a, i, c));
}

int64_t mg_mul_const(mg_arena *a, int64_t x, double c) {
    mg_count_change(a);
    int64_t i = 0;
    int rc = prepare(a, x, &i, 1);
    return rc ? rc : made(a, nd_mulc(a, i, c));
}

int64_t mg_pow(mg_arena *a, int64_t x, double k) {
    mg_count_change(a);
    int64_t i = 0;
    int rc = prepare(a, x, &i, 1);
    return rc ? rc : made(a, nd_pow(a, i, k));
}

int64_t mg_log(mg_arena *a, int64_t x) {
    mg_count_change(a);
    int64_t i = 0;
    int rc = prepare(a, x, &i, 1);
    return rc ? rc : made(a, nd_log(a, i));
}

int64_t mg_exp(mg_arena *a, int64_t x) {
    mg_count_change(a);
    int64_t i = 0;
    int rc = prepare(a, x, &i, 1);
    return rc ? rc : made(a, nd_exp(a, i));
}

int64_t mg_relu(mg_arena *a, int64_t x) {
    mg_count_change(a);
    int64_t i = 0;
    int rc = prepare(a, x, &i, 1);
    return rc ? rc : made(a, nd_relu(a, i));
}

// --- one node's fields

double mg_get_data(const mg_arena *a, int64_t x, int *err) {
    mg_count(a);
    int64_t i = 0;
    int rc = mg_node_check(a, x, &i);
    if (err) *err = rc;
    return rc ? 0.0 : a->data[i];
}

double mg_get_grad(const mg_arena *a, int64_t x, int *err) {
    mg_count(a);
    int64_t i = 0;
    int rc = mg_node_check(a, x, &i);
    if (err) *err = rc;
    return rc ? 0.0 : a->grad[i];
}

int mg_set_data(mg_arena *a, int64_t x, double v) {
    mg_count_change(a);
    int64_t i = 0;
    int rc = mg_node_check(a, x, &i);
    if (!rc) {
        dot_values_change(a);
        a->data[i] = v;
    }
    return rc;
}

int mg_set_grad(mg_arena *a, int64_t x, double v) {
    mg_count_change(a);
    int64_t i = 0;
    int rc = mg_node_check(a, x, &i);
    if (!rc) a->grad[i] = v;
    return rc;
}

int64_t mg_children(const mg_arena *a, int64_t x, int64_t *out, int64_t cap) {
    mg_count(a);
    int64_t i = 0;
    int rc = mg_node_check(a, x, &i);
    if (rc) return rc;
    if (cap < 0 || (cap > 0 && !out)) return MG_ERR_ARG;
    int64_t b = a->edge_begin[i], n = a->edge_begin[i + 1] - b;
    for (int64_t k = 0; k < n && k < cap; k++) out[k] = mg_handle_of(a, a->edge_child[b + k]);
    return n;
}

// --- backward

// The seed's build_topo, without recursion: depth-first from the root, children in stored order,
// a node marked when first reached, appended after all its children (post-order). Leaves are
// marked but not appended: they have no edges, so where they sit in the order changes nothing.
// Returns the number of nodes in a->topo.
static int64_t topo_sort(mg_arena *a, int64_t root) {
    if (++a->epoch == 0) {                       // the stamp wrapped: clear every old stamp once
        memset(a->seen, 0, (size_t)a->cap * sizeof *a->seen);
        a->epoch = 1;
    }
    const uint32_t epoch = a->epoch;
    const int64_t *eb = a->edge_begin, *child = a->edge_child;
    const uint8_t *op = a->op;
    uint32_t *seen = a->seen;
    int64_t *stack_node = a->stack_node, *stack_edge = a->stack_edge, *topo = a->topo;
    int64_t sp = 0, nt = 0;
    seen[root] = epoch;
    if (op[root] == MG_OP_LEAF) return 0;
    // v is the node being expanded, e its next edge; its ancestors wait on the stack
    int64_t v = root, e = eb[root], end = eb[root + 1];
    for (;;) {
        if (e < end) {
            int64_t k = child[e++];
            if (seen[k] == epoch) continue;
            seen[k] = epoch;
            if (op[k] == MG_OP_LEAF) continue;   // a leaf is done at once
            stack_node[sp] = v;                  // descend into k; resume v at edge e
            stack_edge[sp] = e;
            sp++;
            v = k, e = eb[k], end = eb[k + 1];
        } else {                                 // all of v's children are done
            topo[nt++] = v;
            if (sp == 0) break;
            sp--;
            v = stack_node[sp], e = stack_edge[sp], end = eb[v + 1];
        }
    }
    return nt;
}

// A step built by a recorded program (tape.c) comes with its order cached: the search is skipped
// (tape.c says why the cached order is the one topo_sort would find, node for node).
int mg_backward(mg_arena *a, int64_t root) {
    mg_count_change(a);
    int64_t r = 0, nt = 0;
    int rc = mg_node_check(a, root, &r);
    if (rc) return rc;
    if (a->dot_changed) return MG_ERR_CHANGED;
    // a second backward over fused nodes: the seed's chain would have kept the first one's
    // gradients in its sum and product nodes, which a DOT node does not have
    if (a->step_dots && a->differentiated) return MG_ERR_TWICE;
    const int64_t *topo;
    mg_program *p = mgi_program_of(a, r);
    if (p && p->topo_state == 1) {
        topo = p->topo;
        nt = p->ntopo;
    } else {
        if ((rc = grow_scratch(a, r + 1))) return rc;   // everything reachable has an index <= r
        nt = topo_sort(a, r);
        topo = a->topo;
        if (p && p->topo_state == 0) mgi_program_keep_topo(a, p, topo, nt);
    }
    a->differentiated = 1;                      // nothing below can fail
    const int64_t *eb = a->edge_begin, *child = a->edge_child;
    const double *lgrad = a->edge_lgrad, *data = a->data;
    const uint8_t *op = a->op;
    double *grad = a->grad;
    grad[r] = 1.0;
    for (int64_t k = nt - 1; k >= 0; k--) {     // the chain rule in reverse topological order
        int64_t v = topo[k], b = eb[v], end = eb[v + 1];
        double g = grad[v];
        if (op[v] == MG_OP_DOT) {
            // a fused sum(w_j * x_j): each product node of the unfused chain would have had the
            // gradient 0.0 + g, and the chain hands them out from the last pair to the first;
            // each child's local gradient is its partner's value (unchanged: dot_changed)
            double gn = 0.0 + g;
            for (int64_t e = end - 2; e >= b; e -= 2) {
                int64_t w = child[e], x = child[e + 1];
                grad[w] += data[x] * gn;
                grad[x] += data[w] * gn;
            }
        } else {
            for (int64_t e = b; e < end; e++) grad[child[e]] += lgrad[e] * g;
        }
    }
    return 0;
}

// --- bulk access to the persistent nodes (plain indices)

static int persistent_range(const mg_arena *a, int64_t first, int64_t n, const void *buf) {
    if (!a || first < 0 || n < 0 || n > a->keep || first > a->keep - n) return MG_ERR_ARG;
    return n > 0 && !buf ? MG_ERR_ARG : 0;
}

int mg_read_data(const mg_arena *a, int64_t first, int64_t n, double *out) {
    mg_count(a);
    int rc = persistent_range(a, first, n, out);
    if (!rc && n > 0) memcpy(out, a->data + first, (size_t)n * sizeof *out);
    return rc;
}

int mg_write_data(mg_arena *a, int64_t first, int64_t n, const double *in) {
    mg_count_change(a);
    int rc = persistent_range(a, first, n, in);
    if (!rc && n > 0) {
        dot_values_change(a);
        memcpy(a->data + first, in, (size_t)n * sizeof *in);
    }
    return rc;
}

int mg_read_grad(const mg_arena *a, int64_t first, int64_t n, double *out) {
    mg_count(a);
    int rc = persistent_range(a, first, n, out);
    if (!rc && n > 0) memcpy(out, a->grad + first, (size_t)n * sizeof *out);
    return rc;
}

// --- Adam

int mg_adam_init(mg_arena *a, int64_t nparams) {
    mg_count_change(a);
    if (!a || nparams < 0 || nparams > a->keep) return MG_ERR_ARG;
    if (nparams > a->acap) {                     // on failure the old nparams stays usable
        if (!fits(a, (nparams - a->acap) * ADAM_BYTES)) return MG_ERR_NOMEM;
        RESIZE(adam_m, nparams);
        RESIZE(adam_v, nparams);
        RESIZE(next_m, nparams);
        RESIZE(next_v, nparams);
        RESIZE(next_p, nparams);
        a->bytes += (nparams - a->acap) * ADAM_BYTES;
        a->acap = nparams;
    }
    if (nparams > 0) {
        memset(a->adam_m, 0, (size_t)nparams * sizeof *a->adam_m);
        memset(a->adam_v, 0, (size_t)nparams * sizeof *a->adam_v);
    }
    a->nparams = nparams;
    return 0;
}

// The seed's update, parameter by parameter in order, with its errors in its order (Python
// raises where C would make inf or nan). A step that fails changes nothing: the new moments and
// values go to next_* first and are committed only after every parameter has succeeded.
int mg_adam_step(mg_arena *a, double lr, double beta1, double beta2, double eps,
                 int64_t step, int64_t num_steps) {
    mg_count_change(a);
    if (!a || a->nparams < 0 || num_steps <= 0 || step < 0 || step == INT64_MAX) return MG_ERR_ARG;
    int err_b1 = 0, err_b2 = 0, err = 0;
    double lr_t = lr * (1.0 - (double)step / (double)num_steps);
    double b1 = 1.0 - py_pow(beta1, (double)(step + 1), &err_b1);
    double b2 = 1.0 - py_pow(beta2, (double)(step + 1), &err_b2);
    if (!err_b1 && b1 == 0.0) err_b1 = MG_ERR_ZERODIV;      // float division by zero
    if (!err_b2 && b2 == 0.0) err_b2 = MG_ERR_ZERODIV;
    const double *m = a->adam_m, *v = a->adam_v, *grad = a->grad, *data = a->data;
    double *next_m = a->next_m, *next_v = a->next_v, *next_p = a->next_p;
    for (int64_t i = 0; i < a->nparams; i++) {
        double g = grad[i];
        double mi = beta1 * m[i] + (1.0 - beta1) * g;
        double g2 = py_square(g, &err);              // g**2 (pymath.h: pow's bits, faster)
        if (err) return err;
        double vi = beta2 * v[i] + (1.0 - beta2) * g2;
        if (err_b1) return err_b1;
        double m_hat = mi / b1;
        if (err_b2) return err_b2;
        double v_hat = vi / b2;
        double den = py_sqrt(v_hat, &err) + eps;     // v_hat**0.5
        if (err) return err;
        if (den == 0.0) return MG_ERR_ZERODIV;
        next_m[i] = mi;
        next_v[i] = vi;
        next_p[i] = data[i] - (lr_t * m_hat) / den;
    }
    dot_values_change(a);
    double *t = a->adam_m; a->adam_m = a->next_m; a->next_m = t;    // commit
    t = a->adam_v; a->adam_v = a->next_v; a->next_v = t;
    if (a->nparams > 0) {
        memcpy(a->data, next_p, (size_t)a->nparams * sizeof *a->data);
        memset(a->grad, 0, (size_t)a->nparams * sizeof *a->grad);
    }
    return 0;
}

int mg_adam_read(const mg_arena *a, double *m, double *v) {
    mg_count(a);
    if (!a || a->nparams < 0 || (a->nparams > 0 && (!m || !v))) return MG_ERR_ARG;
    if (a->nparams > 0) {
        memcpy(m, a->adam_m, (size_t)a->nparams * sizeof *m);
        memcpy(v, a->adam_v, (size_t)a->nparams * sizeof *v);
    }
    return 0;
}

int mg_adam_write(mg_arena *a, const double *m, const double *v) {
    mg_count_change(a);
    if (!a || a->nparams < 0 || (a->nparams > 0 && (!m || !v))) return MG_ERR_ARG;
    if (a->nparams > 0) {
        memcpy(a->adam_m, m, (size_t)a->nparams * sizeof *m);
        memcpy(a->adam_v, v, (size_t)a->nparams * sizeof *v);
    }
    return 0;
}

// --- vecs

int64_t mg_vec_range(mg_arena *a, int64_t first, int64_t n) {
    mg_count_change(a);
    int64_t i = 0;
    int rc = mg_node_check(a, first, &i);
    if (rc) return rc;
    if (n < 0 || n > a->count - i) return MG_ERR_ARG;          // every node in it is alive
    if ((rc = mg_arena_reserve(a, 0, 0, n, 0))) return rc;
    int64_t off = a->vcount, *out = a->vec_ids + off;
    for (int64_t k = 0; k < n; k++) out[k] = i + k;
    a->vcount += n;
    return off | (a->generation << 32);
}

int64_t mg_vec_of(mg_arena *a, const int64_t *nodes, int64_t n) {
    mg_count_change(a);
    if (!a || n < 0 || n > MG_IDX_LIMIT || (n > 0 && !nodes)) return MG_ERR_ARG;
    int rc = mg_arena_reserve(a, 0, 0, n, 0);
    if (rc) return rc;
    int64_t off = a->vcount, *out = a->vec_ids + off;
    for (int64_t k = 0; k < n; k++)             // written past vcount: kept only if all are valid
        if ((rc = mg_node_check(a, nodes[k], &out[k]))) return rc;
    a->vcount += n;
    return off | (a->generation << 32);
}

int64_t mg_vec_get(const mg_arena *a, int64_t vec, int64_t i) {
    mg_count(a);
    int64_t off = 0;
    if (i < 0 || i >= MG_IDX_LIMIT) return MG_ERR_ARG;
    int rc = mg_vec_check(a, vec, i + 1, &off);
    return rc ? rc : mg_handle_of(a, a->vec_ids[off + i]);
}

int mg_vec_data(const mg_arena *a, int64_t vec, int64_t n, double *out) {
    mg_count(a);
    int64_t off = 0;
    int rc = mg_vec_check(a, vec, n, &off);
    if (rc) return rc;
    if (n > 0 && !out) return MG_ERR_ARG;
    for (int64_t k = 0; k < n; k++) out[k] = a->data[a->vec_ids[off + k]];
    return 0;
}
