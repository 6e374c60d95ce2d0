/*
 * internal.h -- the arena's layout, handle checks and the scalar node constructors, shared by
 * arena.c and kernels.c. Not part of the API (that is microgpt.h, which cffi sees; this is not).
 *
 * The arena is a struct of arrays. Node i has data[i], grad[i], op[i], and its children are the
 * edges edge_begin[i] .. edge_begin[i+1]-1: edge e links to node edge_child[e] with the local
 * gradient edge_lgrad[e] (d node / d child), computed when the node is made, as the seed does.
 * Invariant: edge_begin[count] == nedges, so dropping nodes is moving the two counts back.
 *
 * Rules: the nd_* constructors do no checks at all: the caller has validated the child indices
 * and reserved room (mg_arena_reserve) for every node and edge it will make. A constructor that
 * can fail (pow, log, exp) computes everything first and returns the negative error code before
 * writing anything. Include after <stdint.h>, <errno.h>, <math.h> and "microgpt.h".
 */
#ifndef MG_INTERNAL_H
#define MG_INTERNAL_H

#include "pymath.h"

#define MG_IDX_MASK  0xffffffffLL    // low 32 bits of a handle: the index
#define MG_IDX_LIMIT 0xffffffffLL    // most nodes (and vec entries) an arena holds
#define MG_GEN_MASK  0x7fffffffLL    // generations wrap here, so that handles stay >= 0

enum { MG_OP_LEAF, MG_OP_ADD, MG_OP_ADDC, MG_OP_MUL, MG_OP_MULC, MG_OP_POW, MG_OP_LOG, MG_OP_EXP,
       MG_OP_RELU, MG_OP_DOT };      // DOT: a fused sum(w_j * x_j), children (w0, x0, w1, x1, ...)

struct mg_arena {
    // --- nodes
    int64_t count;          // nodes alive
    int64_t cap;            // nodes allocated
    double *data;           // (cap) value
    double *grad;           // (cap) dloss/dnode
    uint8_t *op;            // (cap) MG_OP_*: only DOT changes how backward treats the node
    uint32_t *seen;         // (cap) epoch of the last depth-first search that reached the node (0: none)
    int64_t *edge_begin;    // (cap+1) node i's edges are edge_begin[i] .. edge_begin[i+1]-1
    // --- edges
    int64_t nedges;         // edges alive
    int64_t ecap;           // edges allocated
    int64_t *edge_child;    // (ecap) the child's node index
    double *edge_lgrad;     // (ecap) local gradient d node / d child
    // --- vecs: runs of node indices
    int64_t vcount;         // entries alive
    int64_t vcap;           // entries allocated
    int64_t *vec_ids;       // (vcap) node indices
    // --- persistence: everything below these counts survives mg_arena_reset
    int64_t keep;           // persistent nodes
    int64_t edges_keep;     // their edges
    int64_t vkeep;          // persistent vec entries
    int64_t generation;     // the high half of every handle made now; bumped by each reset
    // --- scratch
    uint32_t epoch;         // stamp of the current depth-first search (compared with seen[])
    int64_t scap;           // depth-first scratch allocated
    int64_t *stack_node;    // (scap) depth-first stack: node
    int64_t *stack_edge;    // (scap) depth-first stack: the node's next edge to follow
    int64_t *topo;          // (scap) nodes with children, in topological (post-)order
    int64_t tcap;           // kernel scratch allocated
    int64_t *tmp;           // (tcap) kernels' intermediate node indices and offsets
    // --- Adam over nodes 0 .. nparams-1
    int64_t nparams;        // -1 until mg_adam_init
    int64_t acap;           // Adam arrays allocated (>= nparams)
    double *adam_m;         // (acap) first moment of parameter i
    double *adam_v;         // (acap) second moment
    double *next_m;         // (acap) a step's new first moments, swapped in if the step succeeds
    double *next_v;         // (acap) same, second moments
    double *next_p;         // (acap) same, parameter values (copied into data)
    // --- memory and modes
    int64_t bytes;          // bytes held (the struct and every array at its capacity)
    int64_t limit;          // cap on bytes; 0 = none
    int fused;              // kernels make fused DOT nodes for linear layers
};

int mg_arena_reserve(mg_arena *a, int64_t nodes, int64_t edges, int64_t vecs, int64_t tmp);

// --- handles

static inline int64_t mg_handle_of(const mg_arena *a, int64_t idx) {
    return idx < a->keep ? idx : idx | (a->generation << 32);
}

static inline int mg_node_check(const mg_arena *a, int64_t h, int64_t *idx) {
    if (!a) return MG_ERR_ARG;
    if (h < 0) return MG_ERR_STALE;
    int64_t i = h & MG_IDX_MASK;
    if (i >= a->count || (i >= a->keep && (h >> 32) != a->generation)) return MG_ERR_STALE;
    *idx = i;
    return 0;
}

// vec handle v names entries off .. off+n-1 of vec_ids
static inline int mg_vec_check(const mg_arena *a, int64_t v, int64_t n, int64_t *off) {
    if (!a || n < 0 || n > MG_IDX_LIMIT) return MG_ERR_ARG;
    if (v < 0) return MG_ERR_STALE;
    int64_t o = v & MG_IDX_MASK, end = o + n;
    if (end > a->vkeep && (v >> 32) != a->generation) return MG_ERR_STALE;
    if (end > a->vcount) return MG_ERR_ARG;
    *off = o;
    return 0;
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

#endif
