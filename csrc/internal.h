/*
 * internal.h -- the arena's layout, handle checks, the scalar node constructors, and the
 * functions the C files share (kernel bodies, the tape, memory accounting). Not part of the API
 * (that is microgpt.h, which cffi sees; this is not).
 *
 * The arena is a struct of arrays. Node i has data[i], grad[i], op[i], and its children are the
 * edges edge_begin[i] .. edge_begin[i+1]-1: edge e links to node edge_child[e] with the local
 * gradient edge_lgrad[e] (d node / d child), computed when the node is made, as the seed does
 * (except a DOT node's: its children come in pairs (w_j, x_j), and each one's local gradient is
 * its partner's value, read at backward time; see dot_changed).
 * Invariant: edge_begin[count] == nedges, so dropping nodes is moving the two counts back.
 * A child always has a smaller index than its parent (nodes are made after their children).
 *
 * Rules: the nd_* constructors do no checks at all: the caller has validated the child indices
 * and reserved room (mg_arena_reserve) for every node and edge it will make. A constructor that
 * can fail (pow, log, exp) computes everything first and returns the negative error code before
 * writing anything. The mgi_k_* kernel bodies take raw offsets and indices (validated by the
 * caller) and return raw ones; the exported mg_k_* turn handles into them and back. Include after
 * <stdint.h>, <errno.h>, <math.h> and "microgpt.h".
 */
#ifndef MG_INTERNAL_H
#define MG_INTERNAL_H

#include "pymath.h"

#define MG_IDX_MASK  0xffffffffLL    // low 32 bits of a handle: the index
#define MG_IDX_LIMIT 0xffffffffLL    // most nodes (and vec entries) an arena holds
#define MG_GEN_MASK  0x7fffffffLL    // generations wrap here (to 1, never 0), so that handles stay >= 0

enum { MG_OP_LEAF, MG_OP_ADD, MG_OP_ADDC, MG_OP_MUL, MG_OP_MULC, MG_OP_POW, MG_OP_LOG, MG_OP_EXP,
       MG_OP_RELU, MG_OP_DOT };      // DOT: a fused sum(w_j * x_j), children (w0, x0, w1, x1, ...)

// --- the tape (tape.c): one instruction per recorded kernel call

// the kernels a tape records (mg_k_attention_head is MG_T_ATTENTION with one head)
enum { MG_T_EMBED, MG_T_ADD, MG_T_SCALE, MG_T_RELU, MG_T_LINEAR, MG_T_RMSNORM, MG_T_SOFTMAX,
       MG_T_ATTENTION, MG_T_CROSS_ENTROPY, MG_T_MEAN };

// One kernel call with its operands as raw offsets (no generation: a replay runs in a later
// generation). Which fields an op uses, by op:
//   EMBED:         x wte, y wpe (vec offsets), n n_embd, m wte rows, k wpe rows, index pos, token
//   ADD:           x, y, n            SCALE: x, n, c        RELU, RMSNORM, SOFTMAX: x, n
//   LINEAR:        x input, y w, n nin, m nout, fused
//   ATTENTION:     x q, list: t key offsets then t value offsets, n t, m n_head, k head_dim
//   CROSS_ENTROPY: x logits, n, index ordinal among the tape's cross-entropies, token target, fused
//   MEAN:          list: n node indices
typedef struct {
    int32_t op;             // MG_T_*
    int32_t fused;          // the arena's fused flag when recorded (linear, cross-entropy)
    int64_t x, y;           // operands: vec offsets
    int64_t n, m, k;        // sizes (see above)
    int64_t list;           // first entry of this call's operand list in the tape's list array
    int64_t index;          // embed: the position; cross-entropy: its ordinal j (target tokens[j+1])
    int64_t token;          // embed: the token id; cross-entropy: the target (as recorded)
    double c;               // scale: the constant
    int64_t base;           // first node index the call made
    int64_t out;            // what it made: vec offset, or node index (cross-entropy, mean)
} mg_instr;

// A recorded training step, replayable for any tokens of the same length (mg_tape_replay).
typedef struct {
    int64_t ninstr;         // instructions
    mg_instr *instr;        // (ninstr) the kernel calls, in order
    int64_t nlist;          // operand list entries
    int64_t *list;          // (nlist) attention's key/value offsets, mean's node indices
    int64_t ntokens;        // tokens the step is a function of
    int64_t *tokens;        // (ntokens) the tokens of the program's latest graph (record or replay)
    int64_t nce;            // cross-entropy instructions
    int64_t *ce_at;         // (nce) where each one's own nodes start in topo (topo_state 1)
    int64_t keep, edges_keep, vkeep;   // the persistent counts it starts from
    int64_t count, nedges, vcount;     // the counts it ends at
    int64_t loss;           // the loss node (the last instruction's)
    int topo_state;         // 0: no order cached yet; 1: cached in topo; -1: never (search each time)
    int64_t ntopo;          // nodes in topo
    int64_t *topo;          // (ntopo) topological order of the latest graph, for mg_backward
} mg_program;

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
    double *edge_lgrad;     // (ecap) local gradient d node / d child (not written for DOT nodes)
    // --- vecs: runs of node indices
    int64_t vcount;         // entries alive
    int64_t vcap;           // entries allocated
    int64_t *vec_ids;       // (vcap) node indices
    // --- persistence: everything below these counts survives mg_arena_reset
    int64_t keep;           // persistent nodes
    int64_t edges_keep;     // their edges
    int64_t vkeep;          // persistent vec entries
    int64_t generation;     // the high half of step handles: 0 until the first reset, then 1, 2, ...
                            // (persistent nodes are all made in generation 0: keep() refuses later)
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
    // --- the tape being recorded (mg_tape_begin .. mg_tape_end)
    int recording;          // 1 while kernel calls are being recorded
    int tape_ok;            // while recording: 0 once something happened that a replay cannot redo
    int64_t tlen;           // instructions recorded
    int64_t tape_cap;       // instructions allocated
    mg_instr *tape;         // (tape_cap) the instructions
    int64_t tlist;          // operand list entries recorded
    int64_t tlist_cap;      // entries allocated
    int64_t *tape_list;     // (tlist_cap) operand lists of attention and mean
    int64_t tape_nce;       // cross-entropy calls recorded (the next one's ordinal)
    // --- programs: recorded steps (mg_tape_end), freed with the arena
    int64_t nprogs;         // programs stored
    int64_t progs_cap;      // programs allocated
    mg_program *progs;      // (progs_cap) program i is id i
    int64_t cur_prog;       // the program that built the current step's graph, or -1
    // --- memory and modes
    int64_t bytes;          // bytes held (the struct and every array at its capacity)
    int64_t limit;          // cap on bytes; 0 = none
    int fused;              // kernels make fused DOT nodes for linear layers
    int64_t step_dots;      // DOT nodes alive that were made since the last reset
    int dot_changed;        // a value changed while DOT nodes lived: their backward would misread it
    int differentiated;     // mg_backward ran in this step (a second one is refused if DOT nodes live)
    int64_t *calls;         // (1) API calls made on this arena; behind a pointer so that the
                            // const getters can count themselves without casting const away
};

// --- memory (arena.c): every allocation goes through these, so a->bytes and a->limit hold

int mg_arena_reserve(mg_arena *a, int64_t nodes, int64_t edges, int64_t vecs, int64_t tmp);
void *mgi_alloc(mg_arena *a, int64_t n, size_t size);      // n elements, counted; NULL: no room
void mgi_free(mg_arena *a, void *p, int64_t n, size_t size);   // release what mgi_alloc gave
// p (*cap elements) grown geometrically to hold need >= 1: the array, or NULL (p unchanged)
void *mgi_grow(mg_arena *a, void *p, int64_t *cap, int64_t need, size_t size);

// --- kernel bodies (kernels.c): raw vec offsets and node indices in and out, inputs validated
// by the caller; each reserves its own room and returns its result or an MG_ERR_* code

int64_t mgi_k_embed(mg_arena *a, int64_t wte, int64_t wpe, int64_t n, int64_t token, int64_t pos);
int64_t mgi_k_add(mg_arena *a, int64_t x, int64_t y, int64_t n);
int64_t mgi_k_scale(mg_arena *a, int64_t x, int64_t n, double c);
int64_t mgi_k_relu(mg_arena *a, int64_t x, int64_t n);
int64_t mgi_k_linear(mg_arena *a, int64_t x, int64_t nin, int64_t w, int64_t nout, int fused);
int64_t mgi_k_rmsnorm(mg_arena *a, int64_t x, int64_t n);
int64_t mgi_k_softmax(mg_arena *a, int64_t x, int64_t n);
// keys, values: t vec offsets each; they may sit in a->tmp past 3*t entries (the scratch used)
int64_t mgi_k_attention(mg_arena *a, int64_t q, const int64_t *keys, const int64_t *values,
                        int64_t t, int64_t n_head, int64_t head_dim);
int64_t mgi_k_cross_entropy(mg_arena *a, int64_t logits, int64_t n, int64_t target, int fused);
int64_t mgi_k_mean(mg_arena *a, const int64_t *nodes, int64_t n);   // nodes: indices (may be in a->tmp)

// --- the tape (tape.c)

void mgi_tape_record(mg_arena *a, mg_instr in, const int64_t *list, int64_t nlist);
void mgi_tape_free(mg_arena *a);                           // the tape and every program
mg_program *mgi_program_of(mg_arena *a, int64_t root);      // program that built root's graph, or NULL
void mgi_program_keep_topo(mg_arena *a, mg_program *p, const int64_t *topo, int64_t nt);

// --- call counting: every exported function that takes an arena starts with one of these

// a call that reads, or changes nothing a recorded step depends on
static inline void mg_count(const mg_arena *a) {
    if (a) ++*a->calls;
}

// a call that changes the arena other than through a kernel: a step being recorded can then no
// longer be replayed from its kernel calls alone, so the tape is spoiled
static inline void mg_count_change(mg_arena *a) {
    if (a) {
        ++*a->calls;
        a->tape_ok = 0;
    }
}

// --- handles

static inline int64_t mg_handle_of(const mg_arena *a, int64_t idx) {
    return idx < a->keep ? idx : idx | (a->generation << 32);
}

// A persistent node's handle is its index (generation 0: it was made before the first reset);
// a step node's carries the current generation, which no later reset gives again, so a handle
// from an earlier step is refused whatever node its index holds now.
static inline int mg_node_check(const mg_arena *a, int64_t h, int64_t *idx) {
    if (!a) return MG_ERR_ARG;
    if (h < 0) return MG_ERR_STALE;
    int64_t i = h & MG_IDX_MASK;
    if (i >= a->count || (h >> 32) != (i < a->keep ? 0 : a->generation)) return MG_ERR_STALE;
    *idx = i;
    return 0;
}

// vec handle v names entries off .. off+n-1 of vec_ids (the same rule: persistent entries are
// named in generation 0, and no vec runs from persistent entries into a step's)
static inline int mg_vec_check(const mg_arena *a, int64_t v, int64_t n, int64_t *off) {
    if (!a || n < 0 || n > MG_IDX_LIMIT) return MG_ERR_ARG;
    if (v < 0) return MG_ERR_STALE;
    int64_t o = v & MG_IDX_MASK, end = o + n;
    if ((v >> 32) != (o < a->vkeep ? 0 : a->generation)) return MG_ERR_STALE;
    if (end > a->vcount || (o < a->vkeep && end > a->vkeep)) return MG_ERR_ARG;
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
