/*
 * arena.h -- the arena's layout, its memory, handle checks and the scalar node constructors,
 * for the files above it (backward.c, adam.c, kernels.c, tape.c, layers.c). Not part of the
 * API (that is microgpt.h, which cffi sees; this is not).
 *
 * The arena is a struct of arrays. Node i has data[i], grad[i], op[i], and its children are the
 * edges edge_begin[i] .. edge_begin[i+1]-1: edge e links to node edge_child[e] with the local
 * gradient edge_lgrad[e] (d node / d child), computed when the node is made, as the seed does
 * (except a DOT node's: its children come in pairs (w_j, x_j) that it names through two vecs, and
 * each one's local gradient is its partner's value, read at backward time; see nd_dot_of and
 * dot_changed). mgi_child_count and mgi_child read any node's children.
 * Invariant: edge_begin[count] == nedges, so dropping nodes is moving the two counts back. A
 * leaf's own entry is not read (it has no children), and mg_leaves does not write its leaves'.
 * A child always has a smaller index than its parent (nodes are made after their children).
 *
 * Rules: the nd_* constructors do no checks at all: the caller has validated the child indices
 * and reserved room (mgi_reserve) for every node and edge it will make. A constructor that can
 * fail (pow, log, exp) computes everything first and returns the negative error code before
 * writing anything. Include after <stdint.h> and "microgpt.h".
 */
#ifndef MG_ARENA_H
#define MG_ARENA_H

#include <stddef.h>
#include <errno.h>
#include <math.h>
#include "pymath.h"

#define MG_IDX_MASK    0xffffffffLL   // low 32 bits of a handle: the index
#define MG_IDX_LIMIT   0xffffffffLL   // most nodes (and vec entries) an arena holds
#define MG_GEN_MODULUS 0x7fffffffLL   // generations count 1 .. MG_GEN_MODULUS, then wrap to 1 (never 0),
                                      // so that handles stay >= 0
#define MG_ELEM_LIMIT  (1LL << 40)    // sanity bound on scratch and any other array (edges: MG_IDX_LIMIT)

// A node index or a vec offset as the arena stores one, in vec_ids and edge_child: both are below
// MG_IDX_LIMIT, so 32 bits hold them (half of int64's room: 3.2 MB less at d128's parameters).
// Widen to int64_t before any arithmetic that could go below 0 or past 2^32.
typedef uint32_t mgi_id;
#define MGI_NO_ID UINT32_MAX          // no node: above every index

// Memory an owner holds, counted by mgi_grow: the bytes of every array at its capacity (and
// of the owner's struct), and a cap on them (0: none).
typedef struct {
    int64_t bytes;
    int64_t limit;
} mgi_memory;

// the node ops, MG_OP_LEAF .. MG_OP_DOT, are in microgpt.h (Python reads them: Value._op);
// DOT: a fused sum(w_j * x_j), children (w0, x0, w1, x1, ...)      // DOT: a fused sum(w_j * x_j), children (w0, x0, w1, x1, ...)

struct mg_arena {
    // --- nodes
    int64_t count;          // nodes alive
    int64_t node_cap;       // nodes allocated
    double *data;           // (node_cap) value
    double *grad;           // (node_cap) dloss/dnode
    uint8_t *op;            // (node_cap) MG_OP_*: only DOT changes how backward treats the node
    uint32_t *seen;         // (node_cap) stamp of the last depth-first search that reached the node
    uint32_t *edge_begin;   // (node_cap+1) node i's edges are edge_begin[i] .. edge_begin[i+1]-1 (an arena
                            // holds at most MG_IDX_LIMIT edges)
    // --- edges
    int64_t nedges;         // edges alive
    int64_t edge_cap;       // edges allocated
    mgi_id *edge_child;     // (edge_cap) the child's node index (a DOT node's: see MG_DOT_EDGES)
    double *edge_lgrad;     // (edge_cap) local gradient d node / d child (a DOT node's: see MG_DOT_EDGES)
    // --- vecs: runs of node indices. Only a step's entries are stored (entry off at
    //     vec_ids[off - vecs_keep]): a persistent entry is its run's first node plus its place in
    //     the run (run_start, run_node), which saves 4 bytes a parameter (mgi_vec_entry)
    int64_t vcount;         // entries alive
    int64_t vec_cap;        // entries allocated (from vecs_keep on)
    mgi_id *vec_ids;        // (vec_cap) the node indices of entries vecs_keep .. vcount-1
    // --- persistence: everything below these counts survives mg_arena_reset
    int64_t keep;           // persistent nodes
    int64_t leaves_below;   // nodes 0 .. leaves_below-1 are all leaves (persistent: set by keep)
    int64_t edges_keep;     // their edges
    int64_t vecs_keep;      // persistent vec entries
    int64_t nruns;          // runs of persistent entries that name consecutive nodes (a weight
    int64_t run_cap;        // matrix's vec: one run, or part of one), so a kernel can tell at once
    int64_t *run_start;     // (nruns) the entry each run begins at, ascending (the first: 0)
    int64_t *run_node;      // (nruns) the node its first entry names
    int64_t generation;     // the high half of step handles: 0 until the first reset, then 1, 2, ...
                            // (persistent nodes are all made in generation 0: keep() refuses later)
    // --- the depth-first search's scratch (backward.c)
    uint32_t search_stamp;  // stamp of the current search (compared with seen[])
    int64_t seen_clean;     // seen[leaves_below .. seen_clean-1] hold no stamp later than search_stamp;
                            // a search clears what it needs beyond (seen[] of parameters is never
                            // touched: fresh pages stay unmapped)
    int64_t search_cap;     // entries allocated in each of the three arrays below
    int64_t *stack_node;    // (search_cap) depth-first stack: node
    int64_t *stack_edge;    // (search_cap) depth-first stack: the node's next edge to follow
    mgi_id *order;          // (search_cap) nodes with children, in topological (post-)order
    // --- the kernels' scratch (kernels.c, layers.c)
    int64_t scratch_cap;    // entries allocated
    int64_t *scratch;       // (scratch_cap) kernels' intermediate node indices and offsets
    int64_t view_cap;       // entries allocated
    mgi_id *view;           // (view_cap) persistent vecs a kernel reads, written out (mgi_vec_nodes)
    // --- Adam over nodes 0 .. nparams-1 (adam.c)
    int64_t nparams;        // -1 until mg_adam_init
    int64_t adam_cap;       // entries allocated in each Adam array (>= nparams)
    double *adam_m;         // (adam_cap) first moment of parameter i
    double *adam_v;         // (adam_cap) second moment
    double *next_m;         // (adam_cap) a step's new first moments, swapped in if the step succeeds
    double *next_v;         // (adam_cap) same, second moments
    double *next_p;         // (adam_cap) same, parameter values (copied into data)
    int idle_moments;       // some first moment was subnormal when adam.c last looked (idle lanes)
    int negative_moments;   // some second moment may be < 0 (written so, or left by a step whose
                            // settings allow it): a step may not write in place without looking
    // --- fused (DOT) nodes of the current step
    int64_t step_dots;      // DOT nodes alive that were made since the last reset
    int dot_changed;        // a value changed while DOT nodes lived: their backward would misread it
    int differentiated;     // a backward ran in this step (a second one is refused if DOT nodes live)
    // --- memory and bookkeeping
    mgi_memory mem;         // bytes held (the struct and every array at its capacity), and the cap
    int64_t calls;          // API calls made on this arena (instrumentation only)
    int64_t changes;        // bumped by every change not made by a layer kernel (a recording tape
                            // compares it: such a change cannot be replayed from kernel calls)
    // --- a Values arena (mg_values_new): Python's Value objects name nodes through slots
    const void *owner;      // NULL, or the thread token (mgi_thread_token) of the only thread whose
                            // calls are accepted: a Python thread's own default arena
    int64_t *slot_node;     // (slot_cap) the node a slot names; MG_SLOT_FREE; MG_SLOT_DEAD (its scope ended)
    int64_t *slot_free;     // (slot_cap) stack of free slots
    int64_t slot_count;     // slots ever handed out (the free ones included)
    int64_t slot_cap;
    int64_t nfree;          // entries on the free stack
    int64_t next_compact;   // the node count at which an op compacts first
    int release_asked;      // MG_ERR_RELEASE was returned: the next op compacts
    int64_t *node_label;    // (node_cap) label id of node i (0: none), kept through compaction
    int scope_depth;
    int64_t scope_start[MG_MAX_SCOPES];// node count when each open scope began (moved by compaction)
};

#define MG_SLOT_FREE  (-1)
#define MG_SLOT_DEAD  (-2)

// --- memory (arena.c): every allocation goes through these, so a->mem holds

// Grow a group of arrays that share a capacity (the node arrays, the edge arrays, ...) to hold
// `need` elements: geometric growth, counted in mem->bytes, within mem->limit and `max`. arrays[k]
// (element size sizes[k], `extra` elements beyond the capacity) is updated in place; the caller
// stores every one back, also on failure, when some may have moved. On failure the capacity is
// unchanged (an array already grown is merely larger than it says).
int mgi_grow(mgi_memory *mem, void **arrays, const size_t *sizes, int narrays, int64_t extra,
             int64_t *cap, int64_t need, int64_t max);
// room for that many more nodes, edges and vec entries, and that much kernel scratch (from 0)
int mgi_reserve(mg_arena *a, int64_t nodes, int64_t edges, int64_t vecs, int64_t scratch);
// search scratch for nodes 0 .. n-1
int mgi_reserve_search(mg_arena *a, int64_t n);
// room in the view for n entries
int mgi_reserve_view(mg_arena *a, int64_t n);

// --- calls and changes

// a token unique to the calling thread (the address of a thread-local variable in arena.c)
const void *mgi_thread_token(void);

static inline void mgi_count_call(mg_arena *a) {
    // not when another thread calls into a Values arena: the call is refused, and counting it
    // would write to the arena that thread does not own
    if (a && (!a->owner || a->owner == mgi_thread_token())) a->calls++;
}

// a change a layer kernel did not make (see `changes`)
static inline void mgi_note_change(mg_arena *a) {
    a->changes++;
}

// a value is about to change: a DOT node alive now would read the new value as a local gradient
static inline void mgi_values_change(mg_arena *a) {
    if (a->step_dots) a->dot_changed = 1;
}

// --- threads


// 0, or MG_ERR_THREAD when the arena is bound to another thread
static inline int mgi_thread_check(const mg_arena *a) {
    return a->owner && a->owner != mgi_thread_token() ? MG_ERR_THREAD : 0;
}

// --- handles

static inline int64_t mgi_handle_of(const mg_arena *a, int64_t idx) {
    return idx < a->keep ? idx : idx | (a->generation << 32);
}

// A persistent node's handle is its index (generation 0: it was made before the first reset);
// a step node's carries the current generation, which no later reset gives again, so a handle
// from an earlier step is refused whatever node its index holds now.
static inline int mgi_node_check(const mg_arena *a, int64_t h, int64_t *idx) {
    if (!a) return MG_ERR_ARG;
    if (mgi_thread_check(a)) return MG_ERR_THREAD;   // before any array is read
    if (h < 0) return MG_ERR_STALE;
    int64_t i = h & MG_IDX_MASK;
    if (i >= a->count || (h >> 32) != (i < a->keep ? 0 : a->generation)) return MG_ERR_STALE;
    *idx = i;
    return 0;
}

// vec handle v names entries off .. off+n-1 of vec_ids (the same rule: persistent entries are
// named in generation 0, and no vec runs from persistent entries into a step's)
static inline int mgi_vec_check(const mg_arena *a, int64_t v, int64_t n, int64_t *off) {
    if (!a || n < 0 || n > MG_IDX_LIMIT) return MG_ERR_ARG;
    if (v < 0) return MG_ERR_STALE;
    int64_t o = v & MG_IDX_MASK, end = o + n;
    if ((v >> 32) != (o < a->vecs_keep ? 0 : a->generation)) return MG_ERR_STALE;
    if (end > a->vcount || (o < a->vecs_keep && end > a->vecs_keep)) return MG_ERR_ARG;
    *off = o;
    return 0;
}

static inline int64_t mgi_vec_handle_of(const mg_arena *a, int64_t off) {
    return off < a->vecs_keep ? off : off | (a->generation << 32);
}

// --- vec entries (see vec_ids)

// the stored entries from step offset off (>= vecs_keep) on
static inline mgi_id *mgi_step_ids(const mg_arena *a, int64_t off) {
    return a->vec_ids + (off - a->vecs_keep);
}

// the run persistent entry off (< vecs_keep) lies in: a binary search
static inline int64_t mgi_run_of(const mg_arena *a, int64_t off) {
    int64_t lo = 0, hi = a->nruns;               // run_start[lo] <= off < run_start[hi] (or vecs_keep)
    while (hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2;
        if (a->run_start[mid] <= off) lo = mid; else hi = mid;
    }
    return lo;
}

// the end of run r: the entry after its last
static inline int64_t mgi_run_end_of(const mg_arena *a, int64_t r) {
    return r + 1 < a->nruns ? a->run_start[r + 1] : a->vecs_keep;
}

// the node entry off names
static inline int64_t mgi_vec_entry(const mg_arena *a, int64_t off) {
    if (off >= a->vecs_keep) return a->vec_ids[off - a->vecs_keep];
    int64_t r = mgi_run_of(a, off);
    return a->run_node[r] + (off - a->run_start[r]);
}

// The n node indices of the vec at off as a list: a step vec's stored entries in place; a
// persistent vec's written into dst (room for n; NULL when the vec is a step's)
static inline const mgi_id *mgi_vec_nodes(const mg_arena *a, int64_t off, int64_t n, mgi_id *dst) {
    if (off >= a->vecs_keep) return mgi_step_ids(a, off);
    for (int64_t k = 0, r = mgi_run_of(a, off); k < n; r++) {
        int64_t end = mgi_run_end_of(a, r), node = a->run_node[r] + (off + k - a->run_start[r]);
        for (; k < n && off + k < end; k++) dst[k] = (mgi_id)node++;
    }
    return dst;
}

// vec entries off .. off+n-1 name n consecutive nodes (known at once for persistent entries)
static inline int mgi_vec_is_range(const mg_arena *a, int64_t off, int64_t n) {
    if (off < a->vecs_keep) return off + n <= mgi_run_end_of(a, mgi_run_of(a, off));
    const mgi_id *ids = mgi_step_ids(a, off);
    for (int64_t k = 1; k < n; k++)
        if (ids[k] != (int64_t)ids[0] + k) return 0;
    return 1;
}

// --- scalar node constructors (unchecked; see the rules above)

// append a node with value x and k <= 2 children (c0 with local gradient g0, then c1 with g1).
// Written as one block with the counts in locals so the compiler keeps them in registers.
static inline int64_t nd_make(mg_arena *a, uint8_t op, double x, int k,
                              int64_t c0, double g0, int64_t c1, double g1) {
    int64_t i = a->count, e = a->nedges;
    a->data[i] = x;
    a->grad[i] = 0.0;
    if (k > 0) { a->edge_child[e] = c0; a->edge_lgrad[e] = g0; }
    if (k > 1) { a->edge_child[e + 1] = c1; a->edge_lgrad[e + 1] = g1; }
    a->edge_begin[i + 1] = e + k;
    a->op[i] = op;
    a->count = i + 1;
    a->nedges = e + k;
    return i;
}

static inline int64_t nd_leaf(mg_arena *a, double x) {
    return nd_make(a, MG_OP_LEAF, x, 0, 0, 0.0, 0, 0.0);
}

static inline int64_t nd_add(mg_arena *a, int64_t x, int64_t y) {
    return nd_make(a, MG_OP_ADD, a->data[x] + a->data[y], 2, x, 1.0, y, 1.0);
}

static inline int64_t nd_addc(mg_arena *a, int64_t x, double c) {
    return nd_make(a, MG_OP_ADDC, a->data[x] + c, 1, x, 1.0, 0, 0.0);
}

static inline int64_t nd_mul(mg_arena *a, int64_t x, int64_t y) {
    double dx = a->data[x], dy = a->data[y];
    return nd_make(a, MG_OP_MUL, dx * dy, 2, x, dy, y, dx);
}

static inline int64_t nd_mulc(mg_arena *a, int64_t x, double c) {
    return nd_make(a, MG_OP_MULC, a->data[x] * c, 1, x, c, 0, 0.0);
}

static inline int64_t nd_pow(mg_arena *a, int64_t x, double k) {
    int err = 0;
    double dx = a->data[x];
    double y = py_pow(dx, k, &err);
    if (err) return err;
    double lgrad = k * py_pow(dx, k - 1.0, &err);
    if (err) return err;
    return nd_make(a, MG_OP_POW, y, 1, x, lgrad, 0, 0.0);
}

static inline int64_t nd_log(mg_arena *a, int64_t x) {
    int err = 0;
    double dx = a->data[x];
    double y = py_log(dx, &err);
    if (err) return err;
    return nd_make(a, MG_OP_LOG, y, 1, x, 1.0 / dx, 0, 0.0);
}

static inline int64_t nd_exp(mg_arena *a, int64_t x) {
    int err = 0;
    double y = py_exp(a->data[x], &err);
    if (err) return err;
    return nd_make(a, MG_OP_EXP, y, 1, x, y, 0, 0.0);   // the seed calls math.exp again: same value
}

static inline int64_t nd_relu(mg_arena *a, int64_t x) {
    double dx = a->data[x];
    // max(0, x): 0 for nan and -0.0 too; local gradient float(x > 0)
    return nd_make(a, MG_OP_RELU, dx > 0.0 ? dx : 0.0, 1, x, dx > 0.0 ? 1.0 : 0.0, 0, 0.0);
}

// A DOT node holds two edge entries instead of its 2n children: the vec offsets of its weights
// and of its inputs (edge_child), and its ranges flag and n (edge_lgrad: a DOT node has no local
// gradients of its own; n < 2^32 is exact in a double). Its children are (w0, x0, w1, x1, ...)
// with w_j = vec_ids[weights + j] and x_j = vec_ids[inputs + j] (vecs never change while they live).
#define MG_DOT_EDGES 2

// a DOT node's n, from its first edge entry b
static inline int64_t mgi_dot_n(const mg_arena *a, int64_t b) {
    return (int64_t)a->edge_lgrad[b + 1];
}

// node v's number of children, and its p-th child (a DOT node's read from its vecs)
static inline int64_t mgi_child_count(const mg_arena *a, int64_t v) {
    uint8_t op = a->op[v];
    if (op == MG_OP_LEAF) return 0;              // (mg_leaves writes no edge_begin entry for its leaves)
    int64_t b = a->edge_begin[v];
    return op == MG_OP_DOT ? 2 * mgi_dot_n(a, b) : a->edge_begin[v + 1] - b;
}

static inline int64_t mgi_child(const mg_arena *a, int64_t v, int64_t p) {
    int64_t b = a->edge_begin[v];
    if (a->op[v] == MG_OP_DOT) return mgi_vec_entry(a, a->edge_child[b + (p & 1)] + (p >> 1));
    return a->edge_child[b + p];
}

// The seed's sum(w_j * x_j for j) over the node lists wv and xv (n entries each), rounded
// exactly as its chain of products and sums rounds it: 0 + w0*x0, then + w1*x1, ...
static inline double dot_value(const mg_arena *a, const mgi_id *wv, const mgi_id *xv, int64_t n) {
    const double *d = a->data;
    double acc = d[wv[0]] * d[xv[0]] + 0.0;
    for (int64_t j = 1; j < n; j++) acc = acc + d[wv[j]] * d[xv[j]];
    return acc;
}

// That sum as one DOT node whose value (dot_value's) is given. Each child's local gradient, the
// value of its partner, is read by the backward.
// ranges: both vecs name runs of consecutive nodes, apart from each other (the backward then
// reads them as arrays); kept in the edge_lgrad of the first entry.
static inline int64_t nd_dot_of(mg_arena *a, int64_t w, int64_t x, int64_t n, double value, int ranges) {
    int64_t i = a->count, e = a->nedges;
    a->edge_child[e] = w;
    a->edge_child[e + 1] = x;
    a->edge_lgrad[e] = ranges ? 1.0 : 0.0;
    a->edge_lgrad[e + 1] = (double)n;
    a->step_dots++;
    a->data[i] = value;
    a->grad[i] = 0.0;
    a->edge_begin[i + 1] = e + MG_DOT_EDGES;
    a->op[i] = MG_OP_DOT;
    a->count = i + 1;
    a->nedges = e + MG_DOT_EDGES;
    return i;
}

#endif
