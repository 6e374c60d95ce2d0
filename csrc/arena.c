/*
 * arena.c -- the graph arena of microgpt's C backend: its memory, scalar nodes, handles, vecs.
 *
 * One mg_arena holds a whole scalar autograd graph in flat arrays (layout in arena.h). The
 * model's parameters are made first and kept (mg_arena_keep); each training step appends its
 * nodes after them and mg_arena_reset drops the step by moving counts back. Every number is the
 * double CPython computes for the seed's microgpt.py, in the same order, so the results are
 * bit-identical to the Python backend (see shared/PARITY.md).
 *
 * Rules: no global state; nothing exits or aborts; every allocation is checked and growth is
 * geometric. A function that fails returns a negative MG_ERR_* and leaves the arena as it was:
 * arrays are grown before anything is written, and handles are validated (generation and index)
 * before any array is read, so a stale handle can never reach another node's memory.
 * Every exported function counts itself (a->calls); one that changes the arena also notes the
 * change (a->changes), which is what tells a recording tape that it cannot replay the step.
 *
 * Threads: an arena is used by one thread at a time (the Python side serializes or refuses);
 * a Values arena (Python's Value objects of one thread) refuses calls from any other thread.
 * Memory: capacity only grows; a Values arena keeps its node count small by compacting: it
 * drops the nodes no live Value reaches (a Value's slot is released when it dies).
 *
 * Not here: the backward (backward.c), Adam (adam.c), the layer kernels (kernels.c, layers.c),
 * the tape (tape.c): the arena calls none of them.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "microgpt.h"
#include "arena.h"

// --- memory

static int fits(const mgi_memory *mem, int64_t extra) {
    return mem->limit <= 0 || mem->bytes + extra <= mem->limit;
}

int mgi_grow(mgi_memory *mem, void **arrays, const size_t *sizes, int narrays, int64_t extra,
             int64_t *cap, int64_t need, int64_t max) {
    if (need <= *cap) return 0;
    if (need > max) return MG_ERR_NOMEM;
    int64_t elem = 0;                            // bytes per element of the whole group
    for (int k = 0; k < narrays; k++) {
        if ((uint64_t)(max + extra) > SIZE_MAX / sizes[k]) return MG_ERR_NOMEM;
        elem += (int64_t)sizes[k];
    }
    int64_t c = *cap < 64 ? 64 : *cap;           // doubled, or exactly `need` near the limit
    while (c < need) c *= 2;
    if (c > max) c = max;
    if (!fits(mem, (c - *cap) * elem)) c = need;
    if (!fits(mem, (c - *cap) * elem)) return MG_ERR_NOMEM;
    for (int k = 0; k < narrays; k++) {
        void *p = realloc(arrays[k], (size_t)(c + extra) * sizes[k]);
        if (!p) return MG_ERR_NOMEM;
        arrays[k] = p;
    }
    mem->bytes += (c - *cap) * elem;
    *cap = c;
    return 0;
}

static int grow_nodes(mg_arena *a, int64_t need) {
    void *p[] = { a->data, a->grad, a->op, a->seen, a->edge_begin, a->node_label };
    const size_t size[] = { sizeof *a->data, sizeof *a->grad, sizeof *a->op, sizeof *a->seen, sizeof *a->edge_begin,
                            sizeof *a->node_label };
    int narrays = a->owner ? 6 : 5;              // labels: a Values arena's only
    int rc = mgi_grow(&a->mem, p, size, narrays, 1, &a->node_cap, need, MG_IDX_LIMIT);   // edge_begin: cap + 1
    a->data = p[0], a->grad = p[1], a->op = p[2], a->seen = p[3], a->edge_begin = p[4], a->node_label = p[5];
    return rc;                                   // (seen: cleared by the search, see seen_clean)
}

static int grow_edges(mg_arena *a, int64_t need) {
    void *p[] = { a->edge_child, a->edge_lgrad };
    const size_t size[] = { sizeof *a->edge_child, sizeof *a->edge_lgrad };
    int rc = mgi_grow(&a->mem, p, size, 2, 0, &a->edge_cap, need, MG_IDX_LIMIT);   // (edge_begin's 32 bits)
    a->edge_child = p[0], a->edge_lgrad = p[1];
    return rc;
}

// one array of elements of `size` bytes: the vec entries, the kernels' scratch
static int grow_one(mg_arena *a, void **array, size_t size, int64_t *cap, int64_t need, int64_t max) {
    void *p[] = { *array };
    int rc = mgi_grow(&a->mem, p, &size, 1, 0, cap, need, max);
    *array = p[0];
    return rc;
}

int mgi_reserve(mg_arena *a, int64_t nodes, int64_t edges, int64_t vecs, int64_t scratch) {
    if (nodes < 0 || edges < 0 || vecs < 0 || scratch < 0) return MG_ERR_ARG;
    if (nodes > MG_IDX_LIMIT || edges > MG_IDX_LIMIT || vecs > MG_IDX_LIMIT - a->vcount) return MG_ERR_NOMEM;
    int rc = grow_nodes(a, a->count + nodes);
    if (!rc) rc = grow_edges(a, a->nedges + edges);
    void *ids = a->vec_ids, *kernel_scratch = a->scratch;
    if (!rc) rc = grow_one(a, &ids, sizeof *a->vec_ids, &a->vec_cap, a->vcount - a->vecs_keep + vecs, MG_IDX_LIMIT);
    a->vec_ids = ids;
    if (!rc) rc = grow_one(a, &kernel_scratch, sizeof *a->scratch, &a->scratch_cap, scratch, MG_ELEM_LIMIT);
    a->scratch = kernel_scratch;
    return rc;
}

int mgi_reserve_view(mg_arena *a, int64_t n) {
    void *view = a->view;
    int rc = grow_one(a, &view, sizeof *a->view, &a->view_cap, n, MG_IDX_LIMIT);
    a->view = view;
    return rc;
}

int mgi_reserve_search(mg_arena *a, int64_t n) {
    void *p[] = { a->stack_node, a->stack_edge, a->order };
    const size_t size[] = { sizeof *a->stack_node, sizeof *a->stack_edge, sizeof *a->order };
    int rc = mgi_grow(&a->mem, p, size, 3, 0, &a->search_cap, n, MG_IDX_LIMIT);
    a->stack_node = p[0], a->stack_edge = p[1], a->order = p[2];
    return rc;
}

// --- threads

static _Thread_local char thread_token;

const void *mgi_thread_token(void) { return &thread_token; }

// --- lifecycle

mg_arena *mg_arena_new(void) {
    mg_arena *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->edge_begin = calloc(1, sizeof *a->edge_begin);    // edge_begin[0] = 0 for 0 nodes
    if (!a->edge_begin) {
        free(a);
        return NULL;
    }
    a->nparams = -1;
#ifdef MG_CHECK_ORDER
    a->search_stamp = UINT32_MAX - 2;            // the checking build's searches wrap the stamp at once
#endif
    a->mem.bytes = (int64_t)(sizeof *a + sizeof *a->edge_begin);
    return a;
}

void mg_arena_free(mg_arena *a) {
    if (!a) return;
    free(a->data); free(a->grad); free(a->op); free(a->seen); free(a->edge_begin);
    free(a->edge_child); free(a->edge_lgrad);
    free(a->vec_ids); free(a->run_start); free(a->run_node); free(a->view);
    free(a->stack_node); free(a->stack_edge); free(a->order); free(a->scratch);
    free(a->adam_m); free(a->adam_v); free(a->next_m); free(a->next_v); free(a->next_p);
    free(a->slot_node); free(a->slot_free); free(a->node_label);
    free(a);
}

int64_t mg_arena_keep(mg_arena *a) {
    mgi_count_call(a);
    if (!a) return MG_ERR_ARG;
    mgi_note_change(a);
    if (a->owner) return MG_ERR_ARG;             // a Values arena: its nodes live while a Value names them
    if (a->generation != 0) return MG_ERR_ARG;   // after a reset, old handles could name kept nodes
    if (a->step_dots) return MG_ERR_ARG;      // DOT nodes read values that Adam changes: never kept
    // every entry becomes persistent: runs replace the stored entries (see vec_ids, arena.h)
    const mgi_id *ids = a->vec_ids;
    int64_t nruns = 0;
    for (int64_t k = 0; k < a->vcount; k++) nruns += k == 0 || ids[k] != (int64_t)ids[k - 1] + 1;
    void *run[] = { a->run_start, a->run_node };
    const size_t size[] = { sizeof *a->run_start, sizeof *a->run_node };
    int rc = mgi_grow(&a->mem, run, size, 2, 0, &a->run_cap, nruns, MG_IDX_LIMIT);
    a->run_start = run[0], a->run_node = run[1];
    if (rc) return rc;
    a->nruns = 0;
    for (int64_t k = 0; k < a->vcount; k++) {
        if (k > 0 && ids[k] == (int64_t)ids[k - 1] + 1) continue;
        a->run_start[a->nruns] = k;
        a->run_node[a->nruns++] = ids[k];
    }
    // shrunk, not freed: glibc raises its mmap threshold to the size of a freed mapped block,
    // and the step's arrays would then come from the heap, whose freed space it keeps
    mgi_id *shrunk = a->vec_cap > 64 ? realloc(a->vec_ids, 64 * sizeof *a->vec_ids) : a->vec_ids;
    if (shrunk) {
        a->vec_ids = shrunk;
        a->mem.bytes -= (a->vec_cap - 64) * (int64_t)sizeof *a->vec_ids;
        a->vec_cap = 64;
    }
    while (a->leaves_below < a->count && a->op[a->leaves_below] == MG_OP_LEAF) a->leaves_below++;
    a->keep = a->count;
    a->edges_keep = a->nedges;
    a->vecs_keep = a->vcount;
    return a->count;
}

int64_t mg_arena_reset(mg_arena *a) {
    mgi_count_call(a);
    if (!a || a->owner) return MG_ERR_ARG;       // a Values arena compacts instead
    a->count = a->keep;                 // edge_begin[keep] == edges_keep still holds
    a->nedges = a->edges_keep;
    a->vcount = a->vecs_keep;
    a->step_dots = 0;
    a->dot_changed = 0;
    a->differentiated = 0;
    a->generation = a->generation % MG_GEN_MODULUS + 1;   // 1, 2, ..., MG_GEN_MODULUS, 1, ...: never 0
    return a->generation;
}

int64_t mg_arena_nodes(const mg_arena *a) { return a ? a->count : MG_ERR_ARG; }
int64_t mg_arena_edges(const mg_arena *a) { return a ? a->nedges : MG_ERR_ARG; }
int64_t mg_arena_kept(const mg_arena *a) { return a ? a->keep : MG_ERR_ARG; }
int64_t mg_arena_bytes(const mg_arena *a) { return a ? a->mem.bytes : MG_ERR_ARG; }
int64_t mg_arena_calls(const mg_arena *a) { return a ? a->calls : MG_ERR_ARG; }

int mg_arena_set_limit(mg_arena *a, int64_t max_bytes) {
    mgi_count_call(a);
    if (!a || max_bytes < 0) return MG_ERR_ARG;
    a->mem.limit = max_bytes;
    return 0;
}

// --- scalar nodes

// the handle of a node just made, or the constructor's error code
static int64_t handle_or_error(const mg_arena *a, int64_t r) { return r < 0 ? r : mgi_handle_of(a, r); }

// count the call and note the change; validate x, then make room for one node with `edges` children
// room for one more node with `edges` children: the common case without a call
static inline int reserve_one(mg_arena *a, int64_t edges) {
    if (a->count < a->node_cap && a->nedges + edges <= a->edge_cap) return 0;
    return mgi_reserve(a, 1, edges, 0, 0);
}

static int begin_unary(mg_arena *a, int64_t x, int64_t *i, int64_t edges) {
    mgi_count_call(a);
    int rc = mgi_node_check(a, x, i);
    if (rc) return rc;
    mgi_note_change(a);
    return reserve_one(a, edges);
}

static int begin_binary(mg_arena *a, int64_t x, int64_t y, int64_t *i, int64_t *j) {
    mgi_count_call(a);
    int rc = mgi_node_check(a, y, j);
    if (rc) return rc;
    if ((rc = mgi_node_check(a, x, i))) return rc;
    mgi_note_change(a);
    return reserve_one(a, 2);
}

int64_t mg_leaf(mg_arena *a, double x) {
    return mg_leaves(a, &x, 1);
}

int64_t mg_leaves(mg_arena *a, const double *xs, int64_t n) {
    mgi_count_call(a);
    if (!a || n < 1 || !xs) return MG_ERR_ARG;
    if (mgi_thread_check(a)) return MG_ERR_THREAD;
    mgi_note_change(a);
    int rc = n == 1 ? reserve_one(a, 0) : mgi_reserve(a, n, 0, 0, 0);
    if (rc) return rc;
    int64_t first = a->count;
    if (a->owner || n < 2) {
        for (int64_t k = 0; k < n; k++) nd_leaf(a, xs[k]);
        return mgi_handle_of(a, first);
    }
    // A model's parameters: a leaf has no edges (mgi_child_count asks op first), so only the last
    // edge_begin entry is written, edge_begin[count] == nedges; the others' pages (8 bytes a
    // parameter) are never touched
    memcpy(a->data + first, xs, (size_t)n * sizeof *xs);
    memset(a->grad + first, 0, (size_t)n * sizeof *a->grad);
    memset(a->op + first, MG_OP_LEAF, (size_t)n);
    a->count = first + n;
    a->edge_begin[a->count] = a->nedges;
    return mgi_handle_of(a, first);
}

int64_t mg_add(mg_arena *a, int64_t x, int64_t y) {
    int64_t i = 0, j = 0;
    int rc = begin_binary(a, x, y, &i, &j);
    return rc ? rc : handle_or_error(a, nd_add(a, i, j));
}

int64_t mg_mul(mg_arena *a, int64_t x, int64_t y) {
    int64_t i = 0, j = 0;
    int rc = begin_binary(a, x, y, &i, &j);
    return rc ? rc : handle_or_error(a, nd_mul(a, i, j));
}

int64_t mg_add_const(mg_arena *a, int64_t x, double c) {
    int64_t i = 0;
    int rc = begin_unary(a, x, &i, 1);
    return rc ? rc : handle_or_error(a, nd_addc(a, i, c));
}

int64_t mg_mul_const(mg_arena *a, int64_t x, double c) {
    int64_t i = 0;
    int rc = begin_unary(a, x, &i, 1);
    return rc ? rc : handle_or_error(a, nd_mulc(a, i, c));
}

int64_t mg_pow(mg_arena *a, int64_t x, double k) {
    int64_t i = 0;
    int rc = begin_unary(a, x, &i, 1);
    return rc ? rc : handle_or_error(a, nd_pow(a, i, k));
}

int64_t mg_log(mg_arena *a, int64_t x) {
    int64_t i = 0;
    int rc = begin_unary(a, x, &i, 1);
    return rc ? rc : handle_or_error(a, nd_log(a, i));
}

int64_t mg_exp(mg_arena *a, int64_t x) {
    int64_t i = 0;
    int rc = begin_unary(a, x, &i, 1);
    return rc ? rc : handle_or_error(a, nd_exp(a, i));
}

int64_t mg_relu(mg_arena *a, int64_t x) {
    int64_t i = 0;
    int rc = begin_unary(a, x, &i, 1);
    return rc ? rc : handle_or_error(a, nd_relu(a, i));
}

// --- one node's fields

double mg_get_data(mg_arena *a, int64_t x, int *err) {
    mgi_count_call(a);
    int64_t i = 0;
    int rc = mgi_node_check(a, x, &i);
    if (err) *err = rc;
    return rc ? 0.0 : a->data[i];
}

double mg_get_grad(mg_arena *a, int64_t x, int *err) {
    mgi_count_call(a);
    int64_t i = 0;
    int rc = mgi_node_check(a, x, &i);
    if (err) *err = rc;
    return rc ? 0.0 : a->grad[i];
}

int mg_set_data(mg_arena *a, int64_t x, double v) {
    mgi_count_call(a);
    int64_t i = 0;
    int rc = mgi_node_check(a, x, &i);
    if (!rc) {
        mgi_note_change(a);
        mgi_values_change(a);
        a->data[i] = v;
    }
    return rc;
}

int mg_set_grad(mg_arena *a, int64_t x, double v) {
    mgi_count_call(a);
    int64_t i = 0;
    int rc = mgi_node_check(a, x, &i);
    if (!rc) {
        mgi_note_change(a);
        a->grad[i] = v;
    }
    return rc;
}

int64_t mg_children(mg_arena *a, int64_t x, int64_t *out, int64_t cap) {
    mgi_count_call(a);
    int64_t i = 0;
    int rc = mgi_node_check(a, x, &i);
    if (rc) return rc;
    if (cap < 0 || (cap > 0 && !out)) return MG_ERR_ARG;
    int64_t n = mgi_child_count(a, i);
    for (int64_t k = 0; k < n && k < cap; k++) out[k] = mgi_handle_of(a, mgi_child(a, i, k));
    return n;
}

// the fast forms for Python's Value: NaN on a refused handle (mg_node_status tells which)
double mg_data(mg_arena *a, int64_t x) {
    mgi_count_call(a);
    int64_t i = 0;
    return mgi_node_check(a, x, &i) ? NAN : a->data[i];
}

double mg_grad(mg_arena *a, int64_t x) {
    mgi_count_call(a);
    int64_t i = 0;
    return mgi_node_check(a, x, &i) ? NAN : a->grad[i];
}

int mg_node_status(mg_arena *a, int64_t x) {
    mgi_count_call(a);
    int64_t i = 0;
    return mgi_node_check(a, x, &i);
}

int mg_node_op(mg_arena *a, int64_t x) {
    mgi_count_call(a);
    int64_t i = 0;
    int rc = mgi_node_check(a, x, &i);
    return rc ? rc : a->op[i];
}


// --- Values: the slots of a Values arena (see microgpt.h)

#define MG_FIRST_COMPACT (1 << 13)              // nodes before a Values arena first compacts

mg_arena *mg_values_new(void) {
    mg_arena *a = mg_arena_new();
    if (!a) return NULL;
    a->owner = mgi_thread_token();
    a->next_compact = MG_FIRST_COMPACT;
    return a;
}

static int grow_slots(mg_arena *a, int64_t need) {
    void *p[] = { a->slot_node, a->slot_free };
    const size_t size[] = { sizeof *a->slot_node, sizeof *a->slot_free };
    int rc = mgi_grow(&a->mem, p, size, 2, 0, &a->slot_cap, need, MG_IDX_LIMIT);
    a->slot_node = p[0], a->slot_free = p[1];
    return rc;
}

// a live slot of a Values arena, called from its thread: the node it names
static inline int slot_check(const mg_arena *a, int64_t s, int64_t *node) {
    if (!a || !a->owner) return MG_ERR_ARG;
    if (mgi_thread_check(a)) return MG_ERR_THREAD;
    if (s < 0 || s >= a->slot_count || a->slot_node[s] < 0) return MG_ERR_STALE;
    *node = a->slot_node[s];
    return 0;
}

static inline int64_t new_slot(mg_arena *a, int64_t node) {    // room was reserved
    int64_t s = a->nfree ? a->slot_free[--a->nfree] : a->slot_count++;
    a->slot_node[s] = node;
    return s;
}

// a node an op just made (or the op's error): its label cleared, a slot for it
static inline int64_t slot_of_new(mg_arena *a, int64_t node) {
    if (node < 0) return node;
    a->node_label[node] = 0;
    return new_slot(a, node);
}

// Keep the nodes a slot reaches, slid down in order; every slot and open scope follows its node.
static int compact(mg_arena *a) {
    int64_t n = a->count;
    int rc = mgi_reserve_search(a, n);           // order[] becomes the map: old index -> new, or MGI_NO_ID
    if (rc) return rc;
    uint32_t *eb = a->edge_begin;
    mgi_id *map = a->order, *child = a->edge_child;
    for (int64_t i = 0; i < n; i++) map[i] = MGI_NO_ID;
    for (int64_t s = 0; s < a->slot_count; s++)
        if (a->slot_node[s] >= 0) map[a->slot_node[s]] = 0;
    // children have smaller indices than their parents: one sweep down marks all they reach
    for (int64_t i = n - 1; i >= 0; i--)
        if (map[i] == 0)
            for (int64_t e = eb[i]; e < eb[i + 1]; e++) map[child[e]] = 0;
    // slide the marked nodes and their edges down; eb[i + 1] is read before the new end of
    // node i is written, at or below it
    int64_t m = 0, ne = 0, begin = eb[0];
    int d = 0;
    for (int64_t i = 0; i < n; i++) {
        while (d < a->scope_depth && a->scope_start[d] == i) a->scope_start[d++] = m;
        int64_t end = eb[i + 1];
        if (map[i] == 0) {
            map[i] = (mgi_id)m;
            a->data[m] = a->data[i];
            a->grad[m] = a->grad[i];
            a->op[m] = a->op[i];
            a->node_label[m] = a->node_label[i];
            for (int64_t e = begin; e < end; e++, ne++) {
                child[ne] = map[child[e]];       // a child has been moved already: it is below
                a->edge_lgrad[ne] = a->edge_lgrad[e];
            }
            eb[m + 1] = (uint32_t)ne;
            m++;
        }
        begin = end;
    }
    while (d < a->scope_depth) a->scope_start[d++] = m;
    for (int64_t s = 0; s < a->slot_count; s++)
        if (a->slot_node[s] >= 0) a->slot_node[s] = map[a->slot_node[s]];
    a->count = m;
    a->nedges = ne;
    a->next_compact = 2 * m > MG_FIRST_COMPACT ? 2 * m : MG_FIRST_COMPACT;
    return 0;
}

// Before an op that makes one node with `edges` children: when a compaction is due, ask for the
// dead Values' slots once, then compact (slots were checked and stay valid; their nodes may
// move); then room for the node and its slot.
static int v_begin(mg_arena *a, int64_t edges) {
    if (a->count >= a->next_compact) {
        if (!a->release_asked) {
            a->release_asked = 1;
            return MG_ERR_RELEASE;
        }
        a->release_asked = 0;
        if (compact(a)) a->next_compact = 2 * a->count;   // no room to compact now: grow, try later
    }
    int rc = reserve_one(a, edges);
    if (!rc && !a->nfree && a->slot_count >= a->slot_cap) rc = grow_slots(a, a->slot_count + 1);
    if (!rc) mgi_note_change(a);
    return rc;
}

int64_t mg_v_leaf(mg_arena *a, double x) {
    mgi_count_call(a);
    if (!a || !a->owner) return MG_ERR_ARG;
    if (mgi_thread_check(a)) return MG_ERR_THREAD;
    int rc = v_begin(a, 0);
    return rc ? rc : slot_of_new(a, nd_leaf(a, x));
}

// the op on slots x (and y): checked, then made after v_begin, with the nodes they name then
#define V_UNARY(name, make, edges)                                              \
    int64_t name {                                                              \
        mgi_count_call(a);                                                      \
        int64_t i = 0;                                                          \
        int rc = slot_check(a, x, &i);                                          \
        if (!rc) rc = v_begin(a, edges);                                        \
        if (rc) return rc;                                                      \
        i = a->slot_node[x];                                                    \
        return slot_of_new(a, make);                                            \
    }

#define V_BINARY(name, make)                                                    \
    int64_t name {                                                              \
        mgi_count_call(a);                                                      \
        int64_t i = 0, j = 0;                                                   \
        int rc = slot_check(a, x, &i);                                          \
        if (!rc) rc = slot_check(a, y, &j);                                     \
        if (!rc) rc = v_begin(a, 2);                                            \
        if (rc) return rc;                                                      \
        i = a->slot_node[x], j = a->slot_node[y];                               \
        return slot_of_new(a, make);                                            \
    }

V_BINARY(mg_v_add(mg_arena *a, int64_t x, int64_t y), nd_add(a, i, j))
V_BINARY(mg_v_mul(mg_arena *a, int64_t x, int64_t y), nd_mul(a, i, j))
V_UNARY(mg_v_add_const(mg_arena *a, int64_t x, double c), nd_addc(a, i, c), 1)
V_UNARY(mg_v_mul_const(mg_arena *a, int64_t x, double c), nd_mulc(a, i, c), 1)
V_UNARY(mg_v_pow(mg_arena *a, int64_t x, double k), nd_pow(a, i, k), 1)
V_UNARY(mg_v_log(mg_arena *a, int64_t x), nd_log(a, i), 1)
V_UNARY(mg_v_exp(mg_arena *a, int64_t x), nd_exp(a, i), 1)
V_UNARY(mg_v_relu(mg_arena *a, int64_t x), nd_relu(a, i), 1)

double mg_v_data(mg_arena *a, int64_t x) {
    mgi_count_call(a);
    int64_t i = 0;
    return slot_check(a, x, &i) ? NAN : a->data[i];
}

double mg_v_grad(mg_arena *a, int64_t x) {
    mgi_count_call(a);
    int64_t i = 0;
    return slot_check(a, x, &i) ? NAN : a->grad[i];
}

int mg_v_status(mg_arena *a, int64_t x) {
    mgi_count_call(a);
    int64_t i = 0;
    return slot_check(a, x, &i);
}

int mg_v_set_data(mg_arena *a, int64_t x, double v) {
    mgi_count_call(a);
    int64_t i = 0;
    int rc = slot_check(a, x, &i);
    if (!rc) {
        mgi_note_change(a);
        a->data[i] = v;
    }
    return rc;
}

int mg_v_set_grad(mg_arena *a, int64_t x, double v) {
    mgi_count_call(a);
    int64_t i = 0;
    int rc = slot_check(a, x, &i);
    if (!rc) {
        mgi_note_change(a);
        a->grad[i] = v;
    }
    return rc;
}

int64_t mg_v_node(mg_arena *a, int64_t x) {
    mgi_count_call(a);
    int64_t i = 0;
    int rc = slot_check(a, x, &i);
    return rc ? rc : mgi_handle_of(a, i);
}

int64_t mg_v_children(mg_arena *a, int64_t x, int64_t *out, int64_t cap) {
    mgi_count_call(a);
    int64_t i = 0;
    int rc = slot_check(a, x, &i);
    if (rc) return rc;
    if (cap < 0 || (cap > 0 && !out)) return MG_ERR_ARG;
    int64_t b = a->edge_begin[i], n = a->edge_begin[i + 1] - b;
    if (n > cap) return n;
    if (a->nfree + (a->slot_cap - a->slot_count) < n && (rc = grow_slots(a, a->slot_count - a->nfree + n)))
        return rc;
    for (int64_t k = 0; k < n; k++) out[k] = new_slot(a, a->edge_child[b + k]);
    return n;
}

int mg_v_release(mg_arena *a, const int64_t *slots, int64_t n) {
    mgi_count_call(a);
    if (!a || !a->owner || n < 0 || (n > 0 && !slots)) return MG_ERR_ARG;
    if (mgi_thread_check(a)) return MG_ERR_THREAD;
    for (int64_t k = 0; k < n; k++) {
        int64_t s = slots[k];
        if (s < 0 || s >= a->slot_count || a->slot_node[s] == MG_SLOT_FREE) continue;   // not handed out
        a->slot_node[s] = MG_SLOT_FREE;
        a->slot_free[a->nfree++] = s;
    }
    return 0;
}

int64_t mg_v_label(mg_arena *a, int64_t x) {
    mgi_count_call(a);
    int64_t i = 0;
    int rc = slot_check(a, x, &i);
    return rc ? rc : a->node_label[i];
}

int mg_v_set_label(mg_arena *a, int64_t x, int64_t id) {
    mgi_count_call(a);
    int64_t i = 0;
    int rc = slot_check(a, x, &i);
    if (!rc && id < 0) rc = MG_ERR_ARG;
    if (!rc) a->node_label[i] = id;
    return rc;
}

// The label table (Python's: id -> text) is compacted by asking which ids nodes still hold,
// then renumbering them, so that distinct labels set over time do not accumulate.
int mg_v_labels_used(mg_arena *a, uint8_t *used, int64_t nids) {
    mgi_count_call(a);
    if (!a || !a->owner || nids < 0 || (nids > 0 && !used)) return MG_ERR_ARG;
    if (mgi_thread_check(a)) return MG_ERR_THREAD;
    for (int64_t i = 0; i < a->count; i++) {
        int64_t id = a->node_label[i];
        if (id < 0 || id >= nids) return MG_ERR_ARG;
        used[id] = 1;
    }
    return 0;
}

int mg_v_relabel(mg_arena *a, const int64_t *map, int64_t nids) {
    mgi_count_call(a);
    if (!a || !a->owner || nids < 0 || (nids > 0 && !map)) return MG_ERR_ARG;
    if (mgi_thread_check(a)) return MG_ERR_THREAD;
    for (int64_t i = 0; i < a->count; i++)       // checked whole first: a refusal changes nothing
        if (a->node_label[i] < 0 || a->node_label[i] >= nids || map[a->node_label[i]] < 0) return MG_ERR_ARG;
    for (int64_t i = 0; i < a->count; i++) a->node_label[i] = map[a->node_label[i]];
    return 0;
}

int64_t mg_v_collect(mg_arena *a) {
    mgi_count_call(a);
    if (!a || !a->owner) return MG_ERR_ARG;
    if (mgi_thread_check(a)) return MG_ERR_THREAD;
    int rc = compact(a);
    return rc ? rc : a->count;
}

int mg_v_scope_begin(mg_arena *a) {
    mgi_count_call(a);
    if (!a || !a->owner || a->scope_depth >= MG_MAX_SCOPES) return MG_ERR_ARG;
    if (mgi_thread_check(a)) return MG_ERR_THREAD;
    a->scope_start[a->scope_depth++] = a->count;
    return a->scope_depth;
}

int mg_v_scope_end(mg_arena *a) {
    mgi_count_call(a);
    if (!a || !a->owner || a->scope_depth <= 0) return MG_ERR_ARG;
    if (mgi_thread_check(a)) return MG_ERR_THREAD;
    int64_t start = a->scope_start[--a->scope_depth];
    for (int64_t s = 0; s < a->slot_count; s++)  // no node below start has a child at or above it
        if (a->slot_node[s] >= start) a->slot_node[s] = MG_SLOT_DEAD;
    mgi_note_change(a);
    a->count = start;
    a->nedges = a->edge_begin[start];
    return 0;
}

int64_t mg_v_slots(const mg_arena *a) { return a ? a->slot_count - a->nfree : MG_ERR_ARG; }

// --- bulk access to the persistent nodes (plain indices)

static int persistent_range(const mg_arena *a, int64_t first, int64_t n, const void *buf) {
    if (!a || first < 0 || n < 0 || n > a->keep || first > a->keep - n) return MG_ERR_ARG;
    return n > 0 && !buf ? MG_ERR_ARG : 0;
}

int mg_read_data(mg_arena *a, int64_t first, int64_t n, double *out) {
    mgi_count_call(a);
    int rc = persistent_range(a, first, n, out);
    if (!rc && n > 0) memcpy(out, a->data + first, (size_t)n * sizeof *out);
    return rc;
}

int mg_write_data(mg_arena *a, int64_t first, int64_t n, const double *in) {
    mgi_count_call(a);
    int rc = persistent_range(a, first, n, in);
    if (!rc && n > 0) {
        mgi_note_change(a);
        mgi_values_change(a);
        memcpy(a->data + first, in, (size_t)n * sizeof *in);
    }
    return rc;
}

int mg_read_grad(mg_arena *a, int64_t first, int64_t n, double *out) {
    mgi_count_call(a);
    int rc = persistent_range(a, first, n, out);
    if (!rc && n > 0) memcpy(out, a->grad + first, (size_t)n * sizeof *out);
    return rc;
}

// --- vecs

int64_t mg_vec_range(mg_arena *a, int64_t first, int64_t n) {
    mgi_count_call(a);
    int64_t i = 0;
    int rc = mgi_node_check(a, first, &i);
    if (rc) return rc;
    if (n < 0 || n > a->count - i) return MG_ERR_ARG;          // every node in it is alive
    mgi_note_change(a);
    if ((rc = mgi_reserve(a, 0, 0, n, 0))) return rc;
    int64_t off = a->vcount;
    mgi_id *out = mgi_step_ids(a, off);
    for (int64_t k = 0; k < n; k++) out[k] = (mgi_id)(i + k);
    a->vcount += n;
    return off | (a->generation << 32);
}

int64_t mg_vec_of(mg_arena *a, const int64_t *nodes, int64_t n) {
    mgi_count_call(a);
    if (!a || n < 0 || n > MG_IDX_LIMIT || (n > 0 && !nodes)) return MG_ERR_ARG;
    mgi_note_change(a);
    int rc = mgi_reserve(a, 0, 0, n, 0);
    if (rc) return rc;
    int64_t off = a->vcount, node = 0;
    mgi_id *out = mgi_step_ids(a, off);
    for (int64_t k = 0; k < n; k++) {           // written past vcount: kept only if all are valid
        if ((rc = mgi_node_check(a, nodes[k], &node))) return rc;
        out[k] = (mgi_id)node;
    }
    a->vcount += n;
    return off | (a->generation << 32);
}

int mg_vec_data(mg_arena *a, int64_t vec, int64_t n, double *out) {
    mgi_count_call(a);
    int64_t off = 0;
    int rc = mgi_vec_check(a, vec, n, &off);
    if (rc) return rc;
    if (n > 0 && !out) return MG_ERR_ARG;
    for (int64_t k = 0; k < n; k++) out[k] = a->data[mgi_vec_entry(a, off + k)];
    return 0;
}
