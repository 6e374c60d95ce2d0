/*
 * dense.c -- a recorded training step (a tape's program) compiled into a plan of dense kernels
 * over flat arrays, which then runs the step's forward and backward without making a node.
 *
 * The graph stays the definition and the verifier. A plan is compiled right after the backward
 * of a step its program built, while that step's graph is alive, and kept only if two checks
 * pass on it:
 *   - the order check: from the graph's topological order, the sequence of gradient terms each
 *     node receives (which parent, which of its children, in which order); the plan's backward
 *     is run once in a tracing mode that checks each term it adds against that sequence, which
 *     must be the same for every node (a node with two terms may have them either way round:
 *     0 + a + b is b + a exactly). Terms are what decide a gradient's bits: each is the same product of the
 *     same two numbers, so the same terms in the same order give the same sums.
 *   - the values check: that same run's values and gradients, of every node the plan keeps and
 *     of every parameter, equal the graph's bit for bit.
 * The order depends on the tokens only through each cross-entropy's stretch (tape.c says why),
 * which orders the rows of the linear layer that makes its logits: the last one is the target's,
 * the others come in descending order. The plan keeps that as a rule, checked for the recorded
 * target, and applies it to each step's targets; everything else it does the same every step.
 *
 * The plan. Every value a step makes that another kernel reads (each vec entry of the step, each
 * cross-entropy's loss and the mean) has a place in one array of values and one of gradients;
 * parameters are read and their gradients added in the arena. Kernels keep what their backward
 * needs (rmsnorm's scale, attention's weights, the softmaxes' exponentials) in `aux`. The
 * backward runs the kernels in reverse, each as the graph would order its terms, except that
 * linear layers reading the same input (q, k and v) run as one group whose rows come in the
 * order the graph's search gave them (attention reaches them head by head).
 *
 * Sampling runs a plan's forward one position at a time (mg_dense_sample): position t's
 * instructions read the earlier positions' keys and values where the plan keeps them, which is
 * the seed's KV cache in flat arrays.
 *
 * Arithmetic: every value and term is the double expression the seed evaluates, in its order;
 * sums are never reassociated (a dot product is one chain; vector loops run across rows or
 * columns only), and the build forbids contraction into fused multiply-adds.
 *
 * Not here: the recording (tape.c), the graph's backward (backward.c), Adam (adam.c).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include "microgpt.h"
#include "arena.h"
#include "tape.h"
#include "pool.h"
#include "dot.h"
#include "adam.h"

// A location: >= 0 an index into the plan's values/gradients; < 0 the parameter node -1 - loc.
static inline int64_t loc_at(int64_t loc, int64_t k) { return loc >= 0 ? loc + k : loc - k; }

typedef struct {
    int32_t op;             // MG_T_*
    int64_t out;            // location of the output (vec or scalar)
    int64_t x, y, w;        // locations of the inputs (embed: w = wte, y = wpe)
    int64_t n, nout;        // sizes: elements (linear: nin), rows (linear) or heads (attention)
    int64_t t, hd, pos;     // attention: positions and head size; embed: position
    double c;               // scale: the constant; rmsnorm: 1/n; attention: the logits' scale, 1/hd**0.5
    int64_t aux;            // first entry in aux
    int64_t list;           // attention: t key then t value locations; mean: n loss locations
    int64_t ordinal;        // cross-entropy: its target is tokens[ordinal + 1]
    int64_t base;           // first node the recording made (names the nodes in the order check)
    int64_t leader;         // linear: the group's first instruction, which runs the group's rows
    int64_t sched, nsched;  // a group's leader: its (instruction - leader, row) pairs in sched
    int64_t ce;             // linear: the cross-entropy taking its output as logits, or -1
} dense_op;

typedef struct {
    int64_t nops;
    dense_op *ops;
    int64_t nlocs;
    int64_t *locs;
    int64_t nsched;
    int64_t *sched;         // pairs (instruction - the group's leader, row): a group whose pairs are
                            // another's (the same layer's at another position) shares them
    int64_t ntokens;
    int64_t nval, naux, ntmp;       // entries the step needs in val/grad, aux and tmp
    int64_t keep, vecs_keep;        // the arena's persistent counts it was compiled for
    int64_t loss;           // location of the loss
    int64_t *sequence;      // (nops) the order the forward runs the instructions in; the backward
                            // runs it backwards
    int64_t bytes;          // what its arrays hold (counted in the plans' memory)
    int64_t K, T;           // layer by layer (see sequence): instructions per position, positions; T = 0: not
    uint8_t *batch;         // (K) BATCH_* flags of instruction k of every position
} dense_plan;

enum { BATCH_FORWARD = 1,   // a linear layer whose forward runs for every position at once
       BATCH_BACKWARD = 2 };// a linear group's leader whose rows run for every position at once

struct mg_dense {
    mgi_memory mem;
    int64_t peak;           // the most bytes held at once, a compile's scratch included
    int64_t nplans, plans_cap;
    dense_plan *plans;
    int64_t val_cap, aux_cap, tmp_cap;
    double *val, *grad;     // (val_cap) shared by every plan: one step at a time
    double *aux;            // (aux_cap)
    double *tmp;            // (tmp_cap) a backward's scratch
    const double **ptrs;    // (ptrs_cap) a batch's per-position vectors
    int64_t ptrs_cap;
    mgi_pool *pool;         // worker threads for the batched linear layers, or NULL
    int64_t min_work;       // multiply-adds a part of a batch must have to be run by another thread
    int64_t adam_min_share; // parameters a part of Adam's step must have (mgi_adam_step)
    int64_t forward_plan;   // the plan whose forward ran last (-1: none)
    int differentiated;     // its backward ran
    const mg_arena *forward_arena;
    int64_t forward_changes;        // the arena's change count then
    int64_t *tokens;        // (tokens_cap) the tokens of the last forward, or those sampled so far
    int64_t tokens_cap;
    int64_t sample_plan;    // the plan a sampler's positions ran on so far (-1: none), and
    int64_t sample_next;    // the next position it may run
    int64_t sample_changes; // the arena's change count when its first position ran
    char why[200];          // why the last compile kept no plan
};

// --- the order check's record of terms
//
// The graph's chain rule gives node v its terms in a fixed order: parents in the backward's
// order (the topological order, last first), each parent's children in its own order. So each
// term has a key, (the parent's place in that order, the child's place in the parent's), and v's
// terms are its edges sorted by key. The plan's terms to v are that very list when each is an
// edge into v, their keys rise, and there are as many as v has edges: no list is stored, only
// per node the terms still to come, the last key and a few flags.

// the order check's record of a node the graph gives terms to
// (12 bytes: one for each of d128's 184k step nodes)
typedef struct {
    uint32_t last_place;    // the key of the last term the plan gave it (trace_term): its parent's
    uint32_t last_slot;     // place from the order's end, and the term's among the parent's
    unsigned left : 28;     // how many of the terms the graph gives it the plan has not given
    unsigned kinds : 4;     // graph_terms' flags: TWO_TERMS; GOT_TERM once the plan gave one
} term_state;

// Records only for the nodes that get terms: of the parameters a few in each row (a weight row's
// first node, for its run; each node of a row read without a run; an embedding's nodes), of the
// step's nodes those not inside a run (118k of 184k at d128's longest name). They are numbered
// in node order by a bitmap of the nodes, with each word's count of set bits before it, and kept
// by that number, not in arrays over every node.
typedef struct {
    int64_t first;          // the node bit 0 stands for: 0 (parameters) or keep (the step's nodes)
    uint64_t *bits;         // (words) bit i % 64 of word i / 64: node first + i gets terms
    uint32_t *before;       // (words) the nodes before word w that get terms
    int64_t words, count;
    uint32_t *run;          // parameters': (count) the most nodes of a run that begins at it (0: none)
    term_state *state;      // (count)
} term_records;

typedef struct {
    const mg_arena *a;      // the arena holding the recorded step
    const uint32_t *node_of;// location (>= 0) -> node, for the recorded step
    const uint32_t *topo;   // (nnodes - keep) a step node's place in the order, or NO_PLACE
    int64_t norder, keep;
    const term_records *params, *steps;
    int64_t nnodes;
    int64_t bad;            // the first node whose terms differ from the graph's, or -1
} tracer;

#define TOO_MANY_TERMS (-1000)      // graph_terms: a graph too large for its term counts (refused)
#define NO_PLACE UINT32_MAX         // topo: a node the backward's order does not hold (node indices,
                                    // and so places, are below MG_IDX_LIMIT = UINT32_MAX)
enum { RUN_TERM = 1, NODE_TERM = 2, TWO_TERMS = 4, GOT_TERM = 8 };  // kinds: see graph_terms
#define W_RUN (-1)                  // the slots of a DOT node's terms to its runs (see below)
#define X_RUN (-2)

static int64_t node_of(const tracer *tr, int64_t loc, int64_t k) {
    return loc >= 0 ? tr->node_of[loc + k] : -1 - loc + k;
}

static int dot_over_runs(const mg_arena *a, int64_t v) {
    return a->op[v] == MG_OP_DOT && a->edge_lgrad[a->edge_begin[v]] != 0.0;
}

// the set bits of x (a population count, portably)
static int ones(uint64_t x) {
    x = x - ((x >> 1) & 0x5555555555555555u);
    x = (x & 0x3333333333333333u) + ((x >> 2) & 0x3333333333333333u);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fu;
    return (int)((x * 0x0101010101010101u) >> 56);
}

// the lowest set bit's place in x (x != 0)
static int lowest(uint64_t x) {
    return ones((x & (~x + 1)) - 1);
}

// node v's number among those of r that get terms, or -1 when it gets none
static int64_t record_number(const term_records *r, int64_t v) {
    int64_t i = v - r->first;
    uint64_t word = r->bits[i >> 6], bit = (uint64_t)1 << (i & 63);
    return word & bit ? (int64_t)r->before[i >> 6] + ones(word & (bit - 1)) : -1;
}

// node v's record, or NULL when the graph gives it no term
static term_state *state_of(const tracer *tr, int64_t v) {
    const term_records *r = v >= tr->keep ? tr->steps : tr->params;
    int64_t k = record_number(r, v);
    return k >= 0 ? &r->state[k] : NULL;
}

// Where parent v's child number q (or its run, slot W_RUN or X_RUN) comes among the terms v
// gives, in the order the chain rule gives them (backward.c: a DOT node's pairs last to first)
static int64_t term_place(const mg_arena *a, int64_t v, int64_t q) {
    if (q < 0) return q == W_RUN ? 0 : 1;
    if (a->op[v] != MG_OP_DOT) return q;
    return mgi_child_count(a, v) - 2 - (q & ~(int64_t)1) + (q & 1);
}

// The plan adds a term to node recv, from parent src as its child number slot: it must be an
// edge of the graph, and come after the last term recv got (by key). Two terms may come either
// way round: 0 + a + b is b + a.
static void trace_term(tracer *tr, int64_t recv, int64_t src, int64_t slot) {
    if (tr->bad >= 0) return;
    if (recv < 0 || recv >= tr->nnodes) {
        tr->bad = recv < 0 ? 0 : recv;
        return;
    }
    const mg_arena *a = tr->a;
    uint32_t place = src >= tr->keep && src < tr->nnodes ? tr->topo[src - tr->keep] : NO_PLACE;
    int64_t at = place == NO_PLACE ? -1 : (int64_t)place;
    int runs = at >= 0 && dot_over_runs(a, src), edge;
    if (slot < 0)
        edge = runs && slot >= X_RUN && mgi_child(a, src, slot == W_RUN ? 0 : 1) == recv;
    else
        edge = at >= 0 && !runs && slot < mgi_child_count(a, src) && mgi_child(a, src, slot) == recv;
    term_state *st = state_of(tr, recv);
    if (!edge || !st || st->left == 0) {
        tr->bad = recv;
        return;
    }
    uint64_t key = (uint64_t)(tr->norder - 1 - at) << 32 | (uint32_t)term_place(a, src, slot);
    uint64_t last = (uint64_t)st->last_place << 32 | st->last_slot;
    if (st->kinds & GOT_TERM && (st->kinds & TWO_TERMS ? key == last : key <= last)) {
        tr->bad = recv;
        return;
    }
    st->last_place = (uint32_t)(key >> 32), st->last_slot = (uint32_t)key;
    st->left--;
    st->kinds |= GOT_TERM;
}

// A DOT node over two runs of nodes (arena.h, nd_dot_of: its ranges flag) gives every one of its
// 2n children its term at one moment of the chain rule: so the order check counts one term for
// each run, to the run's first node (slot W_RUN or X_RUN), instead of 2n, as long as no other
// node gives a term to any node of the run past its first (checked by graph_terms).
// A DOT node's terms to its weights (wl, as a location) or to its input (x), as the plan adds
// them: all n at once, so one term for the run where graph_terms counts one
static void trace_dot(tracer *tr, int64_t dot, int64_t loc, int64_t n, int inputs) {
    if (dot_over_runs(tr->a, dot)) {
        trace_term(tr, node_of(tr, loc, 0), dot, inputs ? X_RUN : W_RUN);
        return;
    }
    for (int64_t j = 0; j < n; j++) trace_term(tr, node_of(tr, loc, j), dot, 2 * j + (inputs ? 1 : 0));
}

// one term: dst += v, and recorded when tracing (the node ids are only computed then)
#define TERM(dst, v, recv, src, slot) do {                               \
        (dst) += (v);                                                   \
        if (tr) trace_term(tr, (recv), (src), (slot));                  \
    } while (0)

// --- a run of a plan

typedef struct {
    const dense_plan *p;
    const dense_op *ops;
    double *val, *grad, *aux, *tmp;
    const double **ptrs;    // room for 2T pointers
    mgi_pool *pool;         // NULL: one thread (always when tracing)
    int64_t min_work;       // see mg_dense
    int simd;               // the AVX2 kernels (same bits): every run, the compile's traced one too, so
                            // that its values check tests the code every later step runs
    double *pdata, *pgrad;  // the parameters' values and gradients: node v's at [v], [v - pfirst]
    int64_t pfirst;         // 0; the compile's check holds the gradients of a window of parameters
    const int64_t *tokens;
    tracer *tr;             // NULL, or the order check's record
} dense_run;

static inline double *V(const dense_run *r, int64_t loc) { return loc >= 0 ? r->val + loc : r->pdata + (-1 - loc); }
static inline double *G(const dense_run *r, int64_t loc) {
    return loc >= 0 ? r->grad + loc : r->pgrad + (-1 - loc - r->pfirst);
}

// --- forward: each kernel's values, as kernels.c computes them

// The seed's softmax over xs[0..n-1] up to the total: e_i = exp(x_i + -max), total = e_0 + 0 + ...
// Then inv = total**-1 and (unless lg_inv is NULL) its local gradient -1 * total**-2. 0 or an
// error code.
static int softmax_values(const double *xs, int64_t n, double *e, double *inv, double *lg_inv) {
    int err = 0;
    double mx = xs[0];
    for (int64_t i = 1; i < n; i++)
        if (xs[i] > mx) mx = xs[i];
    for (int64_t i = 0; i < n; i++) {
        e[i] = py_exp(xs[i] + -mx, &err);
        if (err) return err;
    }
    double total = e[0] + 0.0;
    for (int64_t i = 1; i < n; i++) total = total + e[i];
    *inv = py_pow(total, -1.0, &err);
    if (err || !lg_inv) return err;
    *lg_inv = -1.0 * py_pow(total, -2.0, &err);
    return err;
}

static int forward_op(dense_run *r, const dense_op *o) {
    int err = 0;
    double *out = V(r, o->out);
    switch (o->op) {
    case MG_T_EMBED: {
        const double *te = V(r, loc_at(o->w, r->tokens[o->pos] * o->n)), *pe = V(r, o->y);
        for (int64_t i = 0; i < o->n; i++) out[i] = te[i] + pe[i];
        return 0;
    }
    case MG_T_ADD: {
        const double *x = V(r, o->x), *y = V(r, o->y);
        for (int64_t i = 0; i < o->n; i++) out[i] = x[i] + y[i];
        return 0;
    }
    case MG_T_SCALE: {
        const double *x = V(r, o->x);
        for (int64_t i = 0; i < o->n; i++) out[i] = x[i] * o->c;
        return 0;
    }
    case MG_T_RELU: {
        const double *x = V(r, o->x);
        for (int64_t i = 0; i < o->n; i++) out[i] = x[i] > 0.0 ? x[i] : 0.0;
        return 0;
    }
    case MG_T_LINEAR: {
        const double *w = V(r, o->w), *x = V(r, o->x);
        int64_t n = o->n, k = 0;
        for (; k + 4 <= o->nout; k += 4) mgi_dot_rows4(w + k * n, x, n, out + k);
        for (; k < o->nout; k++) out[k] = mgi_dot_chain(w + k * n, x, n);
        return 0;
    }
    case MG_T_RMSNORM: {                          // aux: scale, its local gradient, 1/n
        const double *x = V(r, o->x);
        double *aux = r->aux + o->aux;
        double inv_n = o->c;
        double ms = mgi_dot_chain(x, x, o->n) * inv_n, base = ms + 1e-5;
        double scale = py_pow(base, -0.5, &err);
        if (err) return err;
        double lg = -0.5 * py_pow(base, -1.5, &err);
        if (err) return err;
        aux[0] = scale, aux[1] = lg, aux[2] = inv_n;
        for (int64_t i = 0; i < o->n; i++) out[i] = x[i] * scale;
        return 0;
    }
    case MG_T_ATTENTION: {                        // aux: c, then per head e[t], w[t], inv, lg_inv
        int64_t t = o->t, hd = o->hd;
        const int64_t *keys = r->p->locs + o->list, *vals = keys + t;
        double *aux = r->aux + o->aux;
        double c = o->c;
        aux[0] = c;
        const double *q = V(r, o->x);
        double *logits = r->tmp;
        for (int64_t h = 0; h < o->nout; h++) {
            int64_t hs = h * hd;
            double *e = aux + 1 + h * (2 * t + 2), *w = e + t;
            for (int64_t s = 0; s < t; s++) logits[s] = mgi_dot_chain(q + hs, V(r, keys[s]) + hs, hd) * c;
            if ((err = softmax_values(logits, t, e, w + t, w + t + 1))) return err;
            for (int64_t s = 0; s < t; s++) w[s] = e[s] * w[t];
            for (int64_t j = hs; j < hs + hd; j++) {
                double acc = w[0] * V(r, vals[0])[j] + 0.0;
                for (int64_t s = 1; s < t; s++) acc = acc + w[s] * V(r, vals[s])[j];
                out[j] = acc;
            }
        }
        return 0;
    }
    case MG_T_CROSS_ENTROPY: {                    // aux: e[n], inv, lg_inv, prob
        int64_t n = o->n, target = r->tokens[o->ordinal + 1];
        double *e = r->aux + o->aux;
        if ((err = softmax_values(V(r, o->x), n, e, e + n, e + n + 1))) return err;
        double prob = e[target] * e[n];
        e[n + 2] = prob;
        double l = py_log(prob, &err);
        if (err) return err;
        *out = l * -1.0;
        return 0;
    }
    case MG_T_MEAN: {
        const int64_t *losses = r->p->locs + o->list;
        double s = *V(r, losses[0]) + 0.0;
        for (int64_t k = 1; k < o->n; k++) s = s + *V(r, losses[k]);
        *out = s * (1.0 / (double)o->n);
        return 0;
    }
    }
    return MG_ERR_ARG;
}

// --- backward: each kernel's terms, in the order the graph's chain rule adds them

// A linear group's rows: each row's terms to its weights and to the input. pairs: (instruction
// - lead, row)
static void backward_rows(dense_run *r, int64_t lead, const int64_t *pairs, int64_t npairs) {
    tracer *tr = r->tr;
    for (int64_t k = 0; k < npairs; k++) {
        const dense_op *o = &r->ops[lead + pairs[2 * k]];
        int64_t row = pairs[2 * k + 1], n = o->n;
        double gn = 0.0 + G(r, o->out)[row];     // the product nodes' gradient in the seed's chain
        int64_t wl = loc_at(o->w, row * n);
        MGI_DOT_TERMS(r->simd, G(r, wl), G(r, o->x), V(r, wl), V(r, o->x), n, gn);
        if (tr) {
            int64_t dot = node_of(tr, o->out, row);
            trace_dot(tr, dot, wl, n, 0);
            trace_dot(tr, dot, o->x, n, 1);
        }
    }
}

// The rows of a linear layer whose outputs are a cross-entropy's logits: descending, the target's last.
static void backward_logit_rows(dense_run *r, int64_t opi) {
    const dense_op *o = &r->ops[opi];
    int64_t target = r->tokens[r->ops[o->ce].ordinal + 1], pair[2] = { 0, 0 };
    for (int64_t row = o->nout - 1; row >= 0; row--) {
        if (row == target) continue;
        pair[1] = row;
        backward_rows(r, opi, pair, 1);
    }
    pair[1] = target;
    backward_rows(r, opi, pair, 1);
}

// The terms the seed's softmax gives from its running totals down, for s = n-1 .. 0, given the
// total's gradient gt: e, ge: the exponentials and their gradients so far; out: each
// (logit - max) node's gradient, whose one term to its logit the caller adds. Nodes (tracing):
// (logit - max, exp) pairs from b, the totals from b + 2n.
static void softmax_terms(dense_run *r, int64_t n, const double *e, double *ge, double gt, double *gshift,
                          int64_t b) {
    tracer *tr = r->tr;
    for (int64_t s = n - 1; s >= 0; s--) {
        int64_t total = b + 2 * n + s;
        if (s > 0) {                              // total_s = total_{s-1} + e_s
            double prev = 0.0;
            TERM(prev, gt, total - 1, total, 0);
            TERM(ge[s], gt, b + 2 * s + 1, total, 1);
            gt = prev;
        } else {                                  // total_0 = e_0 + 0
            TERM(ge[0], gt, b + 1, total, 0);
        }
        gshift[s] = 0.0;
        TERM(gshift[s], e[s] * ge[s], b + 2 * s, b + 2 * s + 1, 0);   // exp: its value is its local gradient
    }
}

static void backward_op(dense_run *r, int64_t opi) {
    const dense_op *o = &r->ops[opi];
    tracer *tr = r->tr;
    const double *g = G(r, o->out);
    int64_t b = o->base;
    switch (o->op) {
    case MG_T_EMBED: {
        int64_t tl = loc_at(o->w, r->tokens[o->pos] * o->n);
        double *gt = G(r, tl), *gp = G(r, o->y);
        for (int64_t i = 0; i < o->n; i++) {
            TERM(gt[i], g[i], node_of(tr, tl, i), b + i, 0);
            TERM(gp[i], g[i], node_of(tr, o->y, i), b + i, 1);
        }
        return;
    }
    case MG_T_ADD: {
        double *gx = G(r, o->x), *gy = G(r, o->y);
        for (int64_t i = 0; i < o->n; i++) {
            TERM(gx[i], g[i], node_of(tr, o->x, i), b + i, 0);
            TERM(gy[i], g[i], node_of(tr, o->y, i), b + i, 1);
        }
        return;
    }
    case MG_T_SCALE: {
        double *gx = G(r, o->x);
        for (int64_t i = 0; i < o->n; i++) TERM(gx[i], o->c * g[i], node_of(tr, o->x, i), b + i, 0);
        return;
    }
    case MG_T_RELU: {
        const double *x = V(r, o->x);
        double *gx = G(r, o->x);
        for (int64_t i = 0; i < o->n; i++)
            TERM(gx[i], (double)(x[i] > 0.0) * g[i], node_of(tr, o->x, i), b + i, 0);   // 1.0 or 0.0, no branch
        return;
    }
    case MG_T_LINEAR:
        if (o->leader != opi) return;             // its rows run with its group's leader
        if (o->ce >= 0)
            backward_logit_rows(r, opi);
        else
            backward_rows(r, opi, r->p->sched + 2 * o->sched, o->nsched);
        return;
    case MG_T_RMSNORM: {
        // the fused graph's nodes: sum(x_i * x_i) (one DOT), * 1/n, + 1e-5, **-0.5, then
        // out_i = x_i * scale
        int64_t n = o->n, pw = b + 3;
        const double *x = V(r, o->x), *aux = r->aux + o->aux;
        double *gx = G(r, o->x), scale = aux[0], gscale = 0.0;
        for (int64_t i = n - 1; i >= 0; i--) {
            TERM(gx[i], scale * g[i], node_of(tr, o->x, i), pw + 1 + i, 0);
            TERM(gscale, x[i] * g[i], pw, pw + 1 + i, 1);
        }
        double gbase = 0.0, gms = 0.0, gsum = 0.0;
        TERM(gbase, aux[1] * gscale, pw - 1, pw, 0);
        TERM(gms, gbase, pw - 2, pw - 1, 0);
        TERM(gsum, aux[2] * gms, b, pw - 2, 0);
        for (int64_t j = n - 1; j >= 0; j--) {    // the DOT's pairs (x_j, x_j), last to first
            TERM(gx[j], x[j] * gsum, node_of(tr, o->x, j), b, 2 * j);
            TERM(gx[j], x[j] * gsum, node_of(tr, o->x, j), b, 2 * j + 1);
        }
        return;
    }
    case MG_T_ATTENTION: {                        // the fused graph's (kernels.c): see its layout
        int64_t t = o->t, hd = o->hd, per_head = 7 * t, outputs = b + o->nout * per_head;
        const int64_t *keys = r->p->locs + o->list, *vals = keys + t;
        const double *aux = r->aux + o->aux, *q = V(r, o->x);
        double c = aux[0], *gq = G(r, o->x), *gw = r->tmp, *ge = gw + t, *gl = ge + t;
        for (int64_t h = o->nout - 1; h >= 0; h--) {
            int64_t hs = h * hd, hb = b + h * per_head, sb = hb + 2 * t, ob = outputs + hs;
            const double *e = aux + 1 + h * (2 * t + 2), *w = e + t, inv = w[t], lg_inv = w[t + 1];
            for (int64_t s = 0; s < t; s++) gw[s] = ge[s] = 0.0;
            // out_j = sum(w_s * v_s[j]), one DOT node: its pairs last to first. Each w_s gets its
            // terms in descending j, each v_s[j] its one term here: positions outer, so that each
            // position's vectors are found once
            for (int64_t s = t - 1; s >= 0; s--) {
                const double *v = V(r, vals[s]);
                double *gv = G(r, vals[s]), gws = gw[s];
                for (int64_t j = hs + hd - 1; j >= hs; j--) {
                    int64_t dot = ob + (j - hs);
                    TERM(gws, v[j] * g[j], sb + 3 * t + 2 * s + 1, dot, 2 * s);
                    TERM(gv[j], w[s] * g[j], node_of(tr, vals[s], j), dot, 2 * s + 1);
                }
                gw[s] = gws;
            }
            // w_s = e_s * inv_s, inv_s = total**-1 (one node each), in descending s
            double gt = 0.0;
            for (int64_t s = t - 1; s >= 0; s--) {
                int64_t ws = sb + 3 * t + 2 * s + 1;
                double ginv = 0.0;
                TERM(ge[s], inv * gw[s], sb + 2 * s + 1, ws, 0);
                TERM(ginv, e[s] * gw[s], ws - 1, ws, 1);
                TERM(gt, lg_inv * ginv, sb + 3 * t - 1, ws - 1, 0);
            }
            softmax_terms(r, t, e, ge, gt, gl, sb);
            // logit_s = (one DOT node over q's and k_s's slices) * c
            for (int64_t s = t - 1; s >= 0; s--) {
                int64_t dot = hb + 2 * s;
                double glogit = 0.0, gdot = 0.0;
                TERM(glogit, gl[s], dot + 1, sb + 2 * s, 0);
                TERM(gdot, c * glogit, dot, dot + 1, 0);
                const double *k = V(r, keys[s]);
                double *gk = G(r, keys[s]);
                for (int64_t j = hd - 1; j >= 0; j--) {
                    gq[hs + j] += k[hs + j] * gdot;
                    gk[hs + j] += q[hs + j] * gdot;
                }
                if (tr) {
                    trace_dot(tr, dot, loc_at(o->x, hs), hd, 0);
                    trace_dot(tr, dot, loc_at(keys[s], hs), hd, 1);
                }
            }
        }
        return;
    }
    case MG_T_CROSS_ENTROPY: {
        // nodes: (logit - max, exp) pairs, totals, then total**-1, probability, log, * -1
        int64_t n = o->n, target = r->tokens[o->ordinal + 1], pw = b + 3 * n;
        const double *e = r->aux + o->aux;
        double *ge = r->tmp, *gl = ge + n, glog = 0.0, gprob = 0.0, ginv = 0.0, gt = 0.0;
        for (int64_t i = 0; i < n; i++) ge[i] = 0.0;
        TERM(glog, -1.0 * g[0], pw + 2, pw + 3, 0);
        TERM(gprob, (1.0 / e[n + 2]) * glog, pw + 1, pw + 2, 0);
        TERM(ge[target], e[n] * gprob, b + 2 * target + 1, pw + 1, 0);
        TERM(ginv, e[target] * gprob, pw, pw + 1, 1);
        TERM(gt, e[n + 1] * ginv, pw - 1, pw, 0);
        softmax_terms(r, n, e, ge, gt, gl, b);
        double *glogits = G(r, o->x);
        for (int64_t i = n - 1; i >= 0; i--) TERM(glogits[i], gl[i], node_of(tr, o->x, i), b + 2 * i, 0);
        return;
    }
    case MG_T_MEAN: {
        // nodes: the sum's chain (n) and * 1/n
        int64_t n = o->n;
        const int64_t *losses = r->p->locs + o->list;
        double gsum = 0.0;
        TERM(gsum, (1.0 / (double)n) * g[0], b + n - 1, b + n, 0);
        for (int64_t k = n - 1; k >= 0; k--) {
            int64_t recv = tr ? node_of(tr, losses[k], 0) : 0;
            if (k) {
                double gprev = 0.0;
                TERM(gprev, gsum, b + k - 1, b + k, 0);
                TERM(*G(r, losses[k]), gsum, recv, b + k, 1);
                gsum = gprev;
            } else {
                TERM(*G(r, losses[0]), gsum, recv, b, 0);
            }
        }
        return;
    }
    }
}

// --- lifecycle

mg_dense *mg_dense_new(void) {
    mg_dense *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->forward_plan = -1;
    d->sample_plan = -1;
    d->min_work = 1, d->adam_min_share = 1;
    d->mem.bytes = (int64_t)sizeof *d;
    return d;
}

static void plan_free(mg_dense *d, dense_plan *p) {
    free(p->ops);
    free(p->locs);
    free(p->sched);
    free(p->sequence);
    free(p->batch);
    d->mem.bytes -= p->bytes;
    memset(p, 0, sizeof *p);
}

void mg_dense_free(mg_dense *d) {
    if (!d) return;
    for (int64_t i = 0; i < d->nplans; i++) plan_free(d, &d->plans[i]);
    free(d->plans);
    free(d->val);
    free(d->grad);
    free(d->aux);
    free(d->tmp);
    free((void *)d->ptrs);
    mgi_pool_free(d->pool);
    free(d->tokens);
    free(d);
}

int64_t mg_dense_bytes(const mg_dense *d) { return d ? d->mem.bytes : MG_ERR_ARG; }

int64_t mg_dense_peak_bytes(const mg_dense *d) {
    if (!d) return MG_ERR_ARG;
    return d->peak > d->mem.bytes ? d->peak : d->mem.bytes;
}

const char *mg_dense_why(const mg_dense *d) { return d ? d->why : ""; }

int64_t mg_dense_set_threads(mg_dense *d, int64_t threads, int64_t min_work, int64_t adam_min_share) {
    if (!d || threads < 1 || threads > MGI_MAX_THREADS || min_work < 1 || adam_min_share < 1) return MG_ERR_ARG;
    d->min_work = min_work;
    d->adam_min_share = adam_min_share;
    if (threads == mgi_pool_threads(d->pool)) return threads;
    mgi_pool_free(d->pool);
    d->pool = mgi_pool_new(threads);             // NULL: one thread (no threads built, or none started)
    return mgi_pool_threads(d->pool);
}

// the shared buffers hold a plan's step
static int buffers_for(mg_dense *d, const dense_plan *p) {
    void *vg[] = { d->val, d->grad };
    const size_t dsize[] = { sizeof(double), sizeof(double) };
    int rc = mgi_grow(&d->mem, vg, dsize, 2, 0, &d->val_cap, p->nval, MG_ELEM_LIMIT);
    d->val = vg[0], d->grad = vg[1];
    void *x = d->aux;
    if (!rc) rc = mgi_grow(&d->mem, &x, dsize, 1, 0, &d->aux_cap, p->naux, MG_ELEM_LIMIT);
    d->aux = x;
    x = d->tmp;
    int64_t ntmp = p->ntmp > mgi_pool_size(d->pool) * (p->T + 1) ? p->ntmp : mgi_pool_size(d->pool) * (p->T + 1);
    if (!rc) rc = mgi_grow(&d->mem, &x, dsize, 1, 0, &d->tmp_cap, ntmp, MG_ELEM_LIMIT);
    d->tmp = x;
    const size_t psize[] = { sizeof *d->ptrs };
    x = (void *)d->ptrs;
    if (!rc) rc = mgi_grow(&d->mem, &x, psize, 1, 0, &d->ptrs_cap, 2 * p->T + 1, MG_ELEM_LIMIT);
    d->ptrs = x;
    const size_t isize[] = { sizeof(int64_t) };
    x = d->tokens;
    if (!rc) rc = mgi_grow(&d->mem, &x, isize, 1, 0, &d->tokens_cap, p->ntokens, MG_ELEM_LIMIT);
    d->tokens = x;
    return rc;
}

static dense_run run_of(mg_dense *d, const dense_plan *p, mg_arena *a, const int64_t *tokens) {
    return (dense_run){ .p = p, .ops = p->ops, .val = d->val, .grad = d->grad, .aux = d->aux, .tmp = d->tmp,
                        .ptrs = d->ptrs, .pool = d->pool, .min_work = d->min_work,
                        .pdata = a->data, .pgrad = a->grad, .tokens = tokens, .simd = MGI_HAVE_AVX2() };
}


// --- linear layers for every position at once (layer by layer)

// out_t[row] = sum(w[row][j] * x_t[j]) for every position t, with the weights read once: the
// inputs transposed into tmp (xt[j][t], T rounded up to 4), then each lane of a vector is one
// position's sum, chained over j in the seed's order exactly as mgi_dot_chain.
static void forward_rows_portable(const double *w, const double *xt, int64_t n, int64_t T4, int64_t row0,
                                  int64_t row1, int64_t T, double **outs) {
    for (int64_t row = row0; row < row1; row++)
        for (int64_t t = 0; t < T; t++) {
            double acc = w[row * n] * xt[t] + 0.0;
            for (int64_t j = 1; j < n; j++) acc = acc + w[row * n + j] * xt[j * T4 + t];
            outs[t][row] = acc;
        }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(MG_NO_SIMD)
// rows row .. row+R-1 for positions tb .. tb+4B-1: R*B sums in registers, each a lane's chain
// (as the portable loop's), the R weights of a column read once for the B vectors of inputs.
// The next R rows (next, unless NULL) are asked for as these are read: R rows at once are more
// streams than the CPU's own prefetcher follows, and waiting for them was a quarter of the
// forward at d128. A hint only: no value depends on it.
__attribute__((target("avx2"), always_inline)) static inline void forward_block(const double *w, const double *xt,
                                                                               int64_t n, int64_t T4, int64_t row,
                                                                               int64_t tb, int64_t T, double **outs,
                                                                               const double *next, int R, int B) {
    __m256d acc[8][2], x[2];            // unrolled, so that the accumulators stay in registers
    const double *wr = w + row * n;
#pragma GCC unroll 2
    for (int b = 0; b < B; b++) x[b] = _mm256_loadu_pd(xt + tb + 4 * b);
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
        __m256d wi = _mm256_set1_pd(wr[i * n]);
#pragma GCC unroll 2
        for (int b = 0; b < B; b++) acc[i][b] = _mm256_add_pd(_mm256_mul_pd(wi, x[b]), _mm256_setzero_pd());
    }
    for (int64_t j = 1; j < n; j++) {
        if (next && (j & 7) == 0)
#pragma GCC unroll 8
            for (int i = 0; i < R; i++) __builtin_prefetch(next + i * n + j, 0);
#pragma GCC unroll 2
        for (int b = 0; b < B; b++) x[b] = _mm256_loadu_pd(xt + j * T4 + tb + 4 * b);
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) {
            __m256d wi = _mm256_set1_pd(wr[i * n + j]);
#pragma GCC unroll 2
            for (int b = 0; b < B; b++) acc[i][b] = _mm256_add_pd(acc[i][b], _mm256_mul_pd(wi, x[b]));
        }
    }
    double lanes[4];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++)
#pragma GCC unroll 2
        for (int b = 0; b < B; b++) {
            _mm256_storeu_pd(lanes, acc[i][b]);
            for (int64_t t = tb + 4 * b; t < tb + 4 * b + 4 && t < T; t++) outs[t][row + i] = lanes[t - tb - 4 * b];
        }
}

// rows row0 .. row1-1 four or eight at a time while four remain: returns the first row not done.
// Eight sums in flight at a time (four rows by two vectors of positions, or eight rows by one).
__attribute__((target("avx2"))) static int64_t forward_rows_avx2(const double *w, const double *xt, int64_t n,
                                                                 int64_t T4, int64_t row0, int64_t row1, int64_t T,
                                                                 double **outs) {
    int64_t row = row0;
    while (row + 4 <= row1) {
        if (T4 == 4 && row + 8 <= row1) {
            forward_block(w, xt, n, T4, row, 0, T, outs, row + 16 <= row1 ? w + (row + 8) * n : NULL, 8, 1);
            row += 8;
            continue;
        }
        const double *next = row + 8 <= row1 ? w + (row + 4) * n : NULL;     // once, with the first positions
        int64_t tb = 0;
        for (; tb + 8 <= T4; tb += 8, next = NULL) forward_block(w, xt, n, T4, row, tb, T, outs, next, 4, 2);
        for (; tb < T4; tb += 4, next = NULL) forward_block(w, xt, n, T4, row, tb, T, outs, next, 4, 1);
        row += 4;
    }
    return row;
}
#define FORWARD_ROWS(simd, w, xt, n, T4, row0, row1, T, outs) \
    ((simd) ? forward_rows_avx2((w), (xt), (n), (T4), (row0), (row1), (T), (outs)) : (row0))
#else
#define FORWARD_ROWS(simd, w, xt, n, T4, row0, row1, T, outs) ((void)(simd), (row0))
#endif

// How many parts a batch of `rows` rows (or positions) of `work` multiply-adds each is split
// into: one per thread when each part is worth waking a thread for (min_work)
static int64_t parts_for(const dense_run *r, int64_t rows, int64_t work) {
    int64_t least = r->min_work;
    if (!r->pool || rows < 2 || rows * work < 2 * least) return 1;     // too small to ask the pool
    int64_t threads = mgi_pool_threads(r->pool), parts = threads;
    if (threads < 2) return 1;
    if (rows * work / parts < least) parts = rows * work / least;
    if (parts > rows) parts = rows;
    return parts < 1 ? 1 : parts;
}

// rows lo .. hi-1 of part `part` of nparts, for `rows` rows cut at multiples of `align`
static void part_range(int64_t rows, int64_t align, int64_t part, int64_t nparts, int64_t *lo, int64_t *hi) {
    int64_t chunk = (rows / nparts + align - 1) / align * align;
    *lo = part * chunk < rows ? part * chunk : rows;
    *hi = part == nparts - 1 || (part + 1) * chunk > rows ? rows : (part + 1) * chunk;
}

typedef struct {
    const dense_run *r;
    const double *w, *xt;
    double **outs;
    int64_t n, T4, nout, T;
} forward_job;

static void forward_part(void *ctx, int64_t part, int64_t nparts) {
    const forward_job *f = ctx;
    int64_t lo, hi;
    part_range(f->nout, 4, part, nparts, &lo, &hi);
    int64_t done = FORWARD_ROWS(f->r->simd, f->w, f->xt, f->n, f->T4, lo, hi, f->T, f->outs);
    forward_rows_portable(f->w, f->xt, f->n, f->T4, done, hi, f->T, f->outs);
}

static void forward_linear_batch(dense_run *r, int64_t k) {
    const dense_plan *p = r->p;
    const dense_op *o = &r->ops[k];
    int64_t T = p->T, K = p->K, T4 = (T + 3) & ~(int64_t)3, n = o->n;
    double *xt = r->tmp, **outs = (double **)r->ptrs;
    for (int64_t t = 0; t < T; t++) {
        const double *x = V(r, r->ops[t * K + k].x);
        for (int64_t j = 0; j < n; j++) xt[j * T4 + t] = x[j];
        outs[t] = V(r, r->ops[t * K + k].out);
    }
    for (int64_t t = T; t < T4; t++)
        for (int64_t j = 0; j < n; j++) xt[j * T4 + t] = 0.0;
    forward_job f = { r, V(r, o->w), xt, outs, n, T4, o->nout, T };
    mgi_pool_run(r->pool, forward_part, &f, parts_for(r, o->nout, n * T));
}

// gw[j] += x_t[j] * g[t] for t = T-1 .. 0, for every j: a weight row's terms from every
// position, last to first (the graph's order), the row kept in registers
static void weight_terms_portable(double *gw, const double **xs, const double *g, int64_t T, int64_t j0, int64_t n) {
    for (int64_t j = j0; j < n; j++) {
        double acc = gw[j];
        for (int64_t t = T - 1; t >= 0; t--) acc += xs[t][j] * g[t];
        gw[j] = acc;
    }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(MG_NO_SIMD)
// out[j .. j+4V-1] += vecs[i][j ..] * c[i] for the terms i = first, first + step, ... (nterms of
// them) in that order, the 4V sums held in V registers, each its own chain (the weight terms'
// and the input terms' kernel: the portable loops' order, four elements a vector)
__attribute__((target("avx2"), always_inline)) static inline void terms_block(double *out, const double *const *vecs,
                                                                             const double *c, int64_t first,
                                                                             int64_t step, int64_t nterms,
                                                                             int64_t j, int V) {
    __m256d acc[8];                     // unrolled, so that the accumulators stay in registers
#pragma GCC unroll 8
    for (int k = 0; k < V; k++) acc[k] = _mm256_loadu_pd(out + j + 4 * k);
    for (int64_t q = 0, i = first; q < nterms; q++, i += step) {
        __m256d ci = _mm256_set1_pd(c[i]);
        const double *x = vecs[i] + j;
#pragma GCC unroll 8
        for (int k = 0; k < V; k++) acc[k] = _mm256_add_pd(acc[k], _mm256_mul_pd(_mm256_loadu_pd(x + 4 * k), ci));
    }
#pragma GCC unroll 8
    for (int k = 0; k < V; k++) _mm256_storeu_pd(out + j + 4 * k, acc[k]);
}

// the same over out[0 .. n-1] in blocks of 32, 16 and 4: returns the first element not done
__attribute__((target("avx2"))) static int64_t terms_avx2(double *out, const double *const *vecs, const double *c,
                                                          int64_t first, int64_t step, int64_t nterms, int64_t n) {
    int64_t j = 0;
    for (; j + 32 <= n; j += 32) terms_block(out, vecs, c, first, step, nterms, j, 8);
    for (; j + 16 <= n; j += 16) terms_block(out, vecs, c, first, step, nterms, j, 4);
    for (; j + 4 <= n; j += 4) terms_block(out, vecs, c, first, step, nterms, j, 1);
    return j;
}

// a weight row's terms: positions last to first
#define weight_terms_avx2(gw, xs, g, T, n) terms_avx2((gw), (xs), (g), (T) - 1, -1, (T), (n))

#define WEIGHT_TERMS(simd, gw, xs, g, T, n) \
    weight_terms_portable((gw), (xs), (g), (T), (simd) ? weight_terms_avx2((gw), (xs), (g), (T), (n)) : 0, (n))
#else
#define WEIGHT_TERMS(simd, gw, xs, g, T, n) ((void)(simd), weight_terms_portable((gw), (xs), (g), (T), 0, (n)))
#endif

// The q-th (instruction, row) pair of the group led by instruction lead, in the order the
// graph's chain rule meets them: its schedule, or for the rows of logits the target's rule
// (descending, the target's last); n: how many there are.
static int64_t group_size(const dense_run *r, int64_t lead) {
    const dense_op *o = &r->ops[lead];
    return o->ce >= 0 ? o->nout : o->nsched;
}

static inline void group_pair(const dense_run *r, int64_t lead, int64_t q, int64_t *m, int64_t *row) {
    const dense_op *o = &r->ops[lead];
    if (o->ce < 0) {
        *m = lead + r->p->sched[2 * (o->sched + q)], *row = r->p->sched[2 * (o->sched + q) + 1];
        return;
    }
    int64_t target = r->tokens[r->ops[o->ce].ordinal + 1], n = o->nout;
    *m = lead;
    *row = q == n - 1 ? target : n - 1 - q - (n - 1 - q <= target);
}

typedef struct {
    dense_run *r;
    int64_t k;              // the group's leader at position 0
} group_job;

// Ask for x[0 .. n-1] to be brought into cache, to be written: a weight row's gradients come
// from memory (6.4 MB of them at d128), each row a run too short for the CPU's own prefetcher
// to be ahead of, and waiting for them was a quarter of the backward. A hint: no value depends
// on it.
static inline void prefetch_for_write(const double *x, int64_t n) {
#if defined(__GNUC__)
    for (int64_t k = 0; k < n; k += 64 / (int64_t)sizeof *x) __builtin_prefetch(x + k, 1);
#else
    (void)x, (void)n;
#endif
}

// weights: rows lo .. hi-1 of position 0's group (rows do not share nodes: any row order)
static void weight_part(void *ctx, int64_t part, int64_t nparts) {
    const group_job *g = ctx;
    dense_run *r = g->r;
    tracer *tr = r->tr;
    int64_t T = r->p->T, K = r->p->K, lo, hi;
    const double **xs = r->ptrs;
    double *gn = r->tmp + part * (T + 1);
    part_range(group_size(r, g->k), 1, part, nparts, &lo, &hi);
    int64_t m = 0, row = 0, next_m = 0, next_row = 0;
    if (lo < hi) group_pair(r, g->k, lo, &next_m, &next_row);
    for (int64_t q = lo; q < hi; q++) {
        m = next_m, row = next_row;
        const dense_op *o = &r->ops[m];
        int64_t wl = loc_at(o->w, row * o->n);
        if (q + 1 < hi) {                       // the next row's gradients, on their way from memory
            group_pair(r, g->k, q + 1, &next_m, &next_row);
            const dense_op *o1 = &r->ops[next_m];
            prefetch_for_write(G(r, loc_at(o1->w, next_row * o1->n)), o1->n);
        }
        for (int64_t t = 0; t < T; t++) gn[t] = 0.0 + G(r, r->ops[t * K + m].out)[row];
        WEIGHT_TERMS(r->simd, G(r, wl), xs, gn, T, o->n);
        if (tr)
            for (int64_t t = T - 1; t >= 0; t--) {
                int64_t dot = node_of(tr, r->ops[t * K + m].out, row);
                trace_dot(tr, dot, wl, o->n, 0);
            }
    }
}

// The q-th row of position lead's group (group_pair): its weights, and *a = 0 + its output's
// gradient, the factor of its terms to the input
static inline const double *input_row(const dense_run *r, int64_t lead, int64_t q, int64_t n, double *a) {
    int64_t m, row;
    group_pair(r, lead, q, &m, &row);
    const dense_op *o = &r->ops[m];
    *a = 0.0 + G(r, o->out)[row];
    return V(r, o->w) + row * n;
}

// rows q0 .. q1-1 of position lead's group (q1 - q0 <= ROWS_CHUNK) into its input gradient gx
// (n long), in their order: gx[j] += w_row[j] * a for each, one row after another
#define ROWS_CHUNK 32
static void input_rows_portable(const dense_run *r, int64_t lead, int64_t q0, int64_t q1, double *gx, int64_t n) {
    for (int64_t q = q0; q < q1; q++) {
        double a;
        const double *w = input_row(r, lead, q, n, &a);
        for (int64_t j = 0; j < n; j++) gx[j] += w[j] * a;
    }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(MG_NO_SIMD)
// the same, four elements of gx a vector in registers over the rows (terms_avx2), the rest one by one
__attribute__((target("avx2"))) static void input_rows_avx2(const dense_run *r, int64_t lead, int64_t q0, int64_t q1,
                                                            double *gx, int64_t n) {
    const double *w[ROWS_CHUNK];
    double a[ROWS_CHUNK];
    int64_t nq = q1 - q0;
    for (int64_t q = 0; q < nq; q++) w[q] = input_row(r, lead, q0 + q, n, &a[q]);
    for (int64_t j = terms_avx2(gx, w, a, 0, 1, nq, n); j < n; j++)
        for (int64_t q = 0; q < nq; q++) gx[j] += w[q][j] * a[q];
}
#define INPUT_ROWS(simd, r, lead, q0, q1, gx, n) \
    ((simd) ? input_rows_avx2((r), (lead), (q0), (q1), (gx), (n)) : input_rows_portable((r), (lead), (q0), (q1), (gx), (n)))
#else
#define INPUT_ROWS(simd, r, lead, q0, q1, gx, n) ((void)(simd), input_rows_portable((r), (lead), (q0), (q1), (gx), (n)))
#endif

// inputs: positions lo .. hi-1, each its rows in its own order. A chunk of rows goes to every
// position before the next chunk, so that its weights are read from memory once, not once a
// position (positions of one group mostly take the same rows at each place of their order).
static void input_part(void *ctx, int64_t part, int64_t nparts) {
    const group_job *g = ctx;
    dense_run *r = g->r;
    tracer *tr = r->tr;
    int64_t T = r->p->T, K = r->p->K, lo, hi;
    part_range(T, 1, part, nparts, &lo, &hi);
    for (int64_t q0 = 0, more = 1; more; q0 += ROWS_CHUNK) {
        more = 0;
        for (int64_t t = hi - 1; t >= lo; t--) {
            int64_t lead = t * K + g->k, n = r->ops[lead].n, npairs = group_size(r, lead);
            if (q0 >= npairs) continue;
            int64_t q1 = npairs - q0 < ROWS_CHUNK ? npairs : q0 + ROWS_CHUNK;
            more |= q1 < npairs;
            INPUT_ROWS(r->simd, r, lead, q0, q1, G(r, r->ops[lead].x), n);
        }
    }
    for (int64_t t = hi - 1; tr && t >= lo; t--) {
        int64_t lead = t * K + g->k, n = r->ops[lead].n;
        for (int64_t q = 0, npairs = group_size(r, lead); q < npairs; q++) {
            int64_t m, row;                       // the same terms, traced (in the same order)
            group_pair(r, lead, q, &m, &row);
            trace_dot(tr, node_of(tr, r->ops[m].out, row), r->ops[lead].x, n, 1);
        }
    }
}

// A group of linear layers (instruction k's) for every position at once. Each weight row gets
// its terms from every position, last to first, while it is in cache; then each position's input
// gradient gets the rows in its own order (group_pair). Per node, the same terms in the same
// order as backward_rows at each position. Rows, then positions, split over the pool's threads.
static void backward_group_batch(dense_run *r, int64_t k) {
    int64_t T = r->p->T, K = r->p->K, n = r->ops[k].n, rows = group_size(r, k);
    for (int64_t t = 0; t < T; t++) r->ptrs[t] = V(r, r->ops[t * K + k].x);
    group_job g = { r, k };
    mgi_pool_run(r->pool, weight_part, &g, parts_for(r, rows, n * T));
    mgi_pool_run(r->pool, input_part, &g, parts_for(r, T, n * rows));
}

static int run_forward(dense_run *r) {
    const dense_plan *p = r->p;
    if (r->tr) r->pool = NULL;                   // the trace is recorded by one thread
    for (int64_t s = 0; s < p->nops; s++) {
        int64_t i = p->sequence[s];
        if (p->T && i < p->nops - 1 && (p->batch[i % p->K] & BATCH_FORWARD)) {
            if (i < p->K) forward_linear_batch(r, i);   // position 0's turn: every position
            continue;
        }
        int rc = forward_op(r, &r->ops[i]);
        if (rc) return rc;
    }
    return 0;
}

static void backward_start(dense_run *r) {
    if (r->tr) r->pool = NULL;
    memset(r->grad, 0, (size_t)r->p->nval * sizeof *r->grad);
    r->grad[r->p->loss] = 1.0;                   // the root's, as the chain rule sets it
}

// the backward's instructions sequence[from], sequence[from - 1], ..., sequence[to]
static void backward_span(dense_run *r, int64_t from, int64_t to) {
    const dense_plan *p = r->p;
    for (int64_t s = from; s >= to; s--) {
        int64_t i = p->sequence[s];
        if (p->T && i < p->nops - 1 && (p->batch[i % p->K] & BATCH_BACKWARD)) {
            if (i / p->K == p->T - 1) backward_group_batch(r, i % p->K);  // the last position's turn
            continue;
        }
        backward_op(r, i);
    }
}

static void run_backward(dense_run *r) {
    backward_start(r);
    backward_span(r, r->p->nops - 1, 0);
}

// --- compiling a program

// Parameters lo .. hi-1, which only the instructions of class cls give gradient terms to. A
// class is an instruction of every position (k: instructions k, K + k, 2K + k, ...; the mean is
// class K): a layer-by-layer plan's backward runs each class's instructions one after another.
typedef struct { int64_t lo, hi, cls; } param_span;

// the compile's temporary arrays, and their bytes
typedef struct {
    int64_t bytes, peak;    // held now; the most held at once
    uint32_t *node_of;      // (nval) location -> node of the recorded step
    uint32_t *topo;         // (count - keep) a step node's place in the order, or NO_PLACE
    term_records params, steps;     // the tracer's records of parameters and of step nodes
    int64_t *pairs;         // (3 * rows) a group's (key, instruction, row) before sorting
    int64_t *producer;      // (nval) location -> the instruction that makes it
    int64_t *blocks;        // loc_map's
    double *pgrad;          // the parameters' gradients of the plan's run: all of them (keep), or
                            // one class's window at a time (see param_windows)
    param_span *spans;      // (nspans) the parameters each class's instructions give terms to, by node
    int64_t nspans;         // 0: the gradients are compared all at once
    int64_t *hull;          // (2 (K + 1)) each class's first and past-last parameter node in spans
} compile_scratch;

// a scratch array of n elements, counted; NULL when out of memory
static void *scratch(compile_scratch *c, int64_t n, size_t size, int zero) {
    if (n < 0 || (uint64_t)n + 1 > (uint64_t)PTRDIFF_MAX / size) return NULL;   // no object is larger
    void *p = zero ? calloc((size_t)n + 1, size) : malloc(((size_t)n + 1) * size);
    if (p) c->bytes += (n + 1) * (int64_t)size;
    if (c->bytes > c->peak) c->peak = c->bytes;
    return p;
}

// frees one, made by scratch() with the same n and size
static void scratch_drop(compile_scratch *c, void *p, int64_t n, size_t size) {
    if (p) c->bytes -= (n + 1) * (int64_t)size;
    free(p);
}

static void scratch_free(compile_scratch *c) {
    free(c->node_of), free(c->topo);
    const term_records *both[] = { &c->params, &c->steps };
    for (int k = 0; k < 2; k++) free(both[k]->bits), free(both[k]->before), free(both[k]->run), free(both[k]->state);
    free(c->pairs), free(c->pgrad), free(c->producer), free(c->spans), free(c->hull), free(c->blocks);
}

// no plan: why (instr: the instruction it concerns, or -1)
static int64_t refuse(mg_dense *d, const char *why, int64_t instr) {
    if (instr >= 0)
        snprintf(d->why, sizeof d->why, "%s (instruction %lld of the step)", why, (long long)instr);
    else
        snprintf(d->why, sizeof d->why, "%s", why);
    return MG_ERR_PLAN;
}

// Where a recorded step's vec entries go in the plan's values. A fused attention's output is
// followed by the vecs its DOT nodes read (the weights, and each output's values: h t (1 + hd)
// entries, kernels.c), which name other nodes and have no value of their own: those get no
// location, and the step's other entries are numbered in order without them (a third of the
// values at d128's longest name).
typedef struct {
    const mg_arena *a;
    const mgi_program_view *pv;
    int64_t nblocks;
    int64_t *blocks;        // (3 nblocks) each such stretch's first offset, length and the entries of
                            // the stretches before it, in offset order
} loc_map;

// The stretches of the recorded step's attentions, or MG_ERR_PLAN when they do not follow one
// another as the kernels make them; *skipped: their entries
static int alias_blocks(loc_map *m, compile_scratch *c, int64_t *skipped) {
    const mgi_program_view *pv = m->pv;
    int64_t n = 0, before = 0, end = pv->vecs_keep;
    for (int64_t i = 0; i < pv->ninstr; i++) n += pv->instr[i].op == MG_T_ATTENTION && pv->instr[i].k.attention.fused;
    if (!(m->blocks = scratch(c, 3 * n, sizeof *m->blocks, 0))) return MG_ERR_NOMEM;
    for (int64_t i = 0; i < pv->ninstr; i++) {
        const mg_instr *in = &pv->instr[i];
        if (in->op != MG_T_ATTENTION || !in->k.attention.fused) continue;
        int64_t h = in->k.attention.n_head, hd = in->k.attention.head_dim, t = in->k.attention.t;
        int64_t first = in->out + h * hd, len = h * t * (1 + hd);
        if (first < end || first + len > pv->vcount) return MG_ERR_PLAN;
        int64_t *b = m->blocks + 3 * m->nblocks++;
        b[0] = first, b[1] = len, b[2] = before;
        before += len, end = first + len;
    }
    *skipped = before;
    return 0;
}

// a vec operand of n entries at offset off: its location, or -1 with *ok = 0 (parameter vecs
// must be runs of nodes; step vecs lie within the step, outside attention's stretches)
static int64_t vec_loc(const loc_map *m, int64_t off, int64_t n, int *ok) {
    const mgi_program_view *pv = m->pv;
    if (off >= pv->vecs_keep && off + n <= pv->vcount) {
        int64_t lo = 0, hi = m->nblocks;            // the stretches before lo begin at or below off
        while (lo < hi) {
            int64_t mid = lo + (hi - lo) / 2;
            if (m->blocks[3 * mid] <= off) lo = mid + 1; else hi = mid;
        }
        const int64_t *prev = lo > 0 ? m->blocks + 3 * (lo - 1) : NULL;
        const int64_t *next = lo < m->nblocks ? m->blocks + 3 * lo : NULL;
        if ((!prev || off >= prev[0] + prev[1]) && (!next || off + n <= next[0]))
            return off - pv->vecs_keep - (prev ? prev[2] + prev[1] : 0);
    } else if (off >= 0 && off + n <= pv->vecs_keep && mgi_vec_is_range(m->a, off, n)) {
        return -1 - mgi_vec_entry(m->a, off);
    }
    *ok = 0;
    return 0;
}

// sort (key, instruction, row) triples by key, descending
static int by_key_descending(const void *x, const void *y) {
    int64_t kx = ((const int64_t *)x)[0], ky = ((const int64_t *)y)[0];
    return kx < ky ? 1 : kx > ky ? -1 : 0;
}

static int same_bits(double x, double y) { return memcmp(&x, &y, sizeof x) == 0; }

// Layer by layer, which linear layers run for every position at once: forward, those that read
// the same weights at every position; backward, the groups whose schedule is the same at every
// position (not the logits' rows, whose order follows each position's target).
static int batches(dense_plan *p) {
    int64_t K = p->K, T = p->T, T4 = (T + 3) & ~(int64_t)3;
    p->batch = calloc((size_t)K, 1);
    if (!p->batch) return MG_ERR_NOMEM;
    p->bytes += K;
    for (int64_t k = 0; k < K; k++) {
        const dense_op *o = &p->ops[k];
        if (o->op != MG_T_LINEAR) continue;
        int same = 1;
        for (int64_t t = 1; t < T && same; t++) {
            const dense_op *ot = &p->ops[t * K + k];
            same = ot->w == o->w && ot->n == o->n && ot->nout == o->nout;
        }
        if (!same) continue;
        p->batch[k] |= BATCH_FORWARD;
        if (o->n * T4 > p->ntmp) p->ntmp = o->n * T4;
    }
    for (int64_t k = 0; k < K; k++) {
        const dense_op *o = &p->ops[k];
        if (o->op != MG_T_LINEAR || o->leader != k) continue;
        int same = 1;                             // at every position: the same members, same weights
        for (int64_t t = 0; t < T && same; t++) {
            const dense_op *ot = &p->ops[t * K + k];
            same = ot->leader == t * K + k && ot->nsched == o->nsched && (ot->ce >= 0) == (o->ce >= 0);
            const int64_t *b = p->sched + 2 * ot->sched;
            for (int64_t q = 0; q < ot->nsched && same; q++) {
                int64_t m = t * K + k + b[2 * q];
                same = m / K == t && p->ops[m % K].leader == k && (p->batch[m % K] & BATCH_FORWARD);
            }
        }
        if (!same || !(p->batch[k] & BATCH_FORWARD)) continue;
        p->batch[k] |= BATCH_BACKWARD;
        if (T > p->ntmp) p->ntmp = T;
    }
    return 0;
}

// how many locations an instruction's output has
static int64_t output_size(const dense_op *o) {
    switch (o->op) {
    case MG_T_LINEAR: return o->nout;
    case MG_T_CROSS_ENTROPY: case MG_T_MEAN: return 1;
    default: return o->n;
    }
}

// The order to run the instructions in. A step is T positions of the same K instructions and a
// mean; when every input comes from an earlier instruction of its position or from the same or
// an earlier instruction of an earlier position (attention's keys and values), the plan runs
// instruction k of every position before instruction k + 1 of any ("layer by layer"), so that
// each weight matrix is read for all positions while it is in cache. The backward runs that
// order backwards: each gradient is still final before it is used, and the order check decides
// whether every node's terms still come in the graph's order. Otherwise: the recorded order.
static int sequence(dense_plan *p, compile_scratch *c) {
    p->sequence = malloc((size_t)p->nops * sizeof *p->sequence);
    c->producer = scratch(c, p->nval, sizeof *c->producer, 0);
    if (!p->sequence || !c->producer) return MG_ERR_NOMEM;
    p->bytes += p->nops * (int64_t)sizeof *p->sequence;
    for (int64_t i = 0; i < p->nops; i++) p->sequence[i] = i;
    int64_t K = 0, T = 0, n = p->nops;
    while (K < n && p->ops[K].op != MG_T_CROSS_ENTROPY) K++;
    for (int64_t i = 0; i < n; i++) T += p->ops[i].op == MG_T_CROSS_ENTROPY;
    if (K == n || (K + 1) * T + 1 != n || p->ops[n - 1].op != MG_T_MEAN) return 0;
    K++;
    for (int64_t i = 0; i < n - 1; i++)
        if (p->ops[i].op != p->ops[i % K].op) return 0;
    for (int64_t i = 0; i < n; i++) {
        const dense_op *o = &p->ops[i];
        if (o->out >= 0)
            for (int64_t k = 0; k < output_size(o); k++) c->producer[o->out + k] = i;
    }
    for (int64_t i = 0; i < n - 1; i++) {          // every input made by an instruction before it
        const dense_op *o = &p->ops[i];
        int64_t inputs[3] = { o->x, o->y, -1 }, ninputs = o->op == MG_T_ADD ? 2 : 1;
        if (o->op == MG_T_EMBED) inputs[0] = o->y;   // wte is a parameter; its row comes from a token
        for (int64_t s = 0; o->op == MG_T_ATTENTION && s <= 2 * o->t; s++) {
            int64_t loc = s < 2 * o->t ? p->locs[o->list + s] : o->x;
            if (loc >= 0) {
                int64_t j = c->producer[loc];
                if (!(j % K < i % K || (j % K == i % K && j / K < i / K))) return 0;
            }
        }
        for (int64_t k = 0; k < ninputs; k++) {
            if (inputs[k] < 0) continue;
            int64_t j = c->producer[inputs[k]];
            if (!(j % K < i % K || (j % K == i % K && j / K < i / K))) return 0;
        }
    }
    int64_t at = 0;
    for (int64_t k = 0; k < K; k++)
        for (int64_t t = 0; t < T; t++) p->sequence[at++] = t * K + k;
    p->sequence[at] = n - 1;
    p->K = K, p->T = T;
    return batches(p);
}

static int64_t compile(mg_dense *d, mg_arena *a, const mgi_program_view *pv, dense_plan *p, compile_scratch *c) {
    if (pv->ninstr < 0 || pv->ninstr > MG_ELEM_LIMIT) return MG_ERR_ARG;   // (a tape's counts: never)
    loc_map lm = { .a = a, .pv = pv };
    int64_t skipped = 0;
    int rc = alias_blocks(&lm, c, &skipped);
    c->blocks = lm.blocks;
    if (rc == MG_ERR_PLAN) return refuse(d, "an attention's vecs are not where its kernel makes them", -1);
    if (rc) return rc;
    int64_t nvec = pv->vcount - pv->vecs_keep - skipped, nscalar = 0, nlocs = 0, nsteps = pv->count - pv->keep;
    for (int64_t i = 0; i < pv->ninstr; i++) {
        const mg_instr *in = &pv->instr[i];
        if (in->op == MG_T_CROSS_ENTROPY || in->op == MG_T_MEAN) nscalar++;
        if (in->op == MG_T_ATTENTION) nlocs += 2 * in->k.attention.t;
        if (in->op == MG_T_MEAN) nlocs += in->k.mean.n;
    }
    p->nops = pv->ninstr, p->nlocs = nlocs, p->ntokens = pv->ntokens, p->nval = nvec + nscalar;
    p->keep = pv->keep, p->vecs_keep = pv->vecs_keep;
    p->ops = calloc((size_t)p->nops, sizeof *p->ops);
    p->locs = malloc((size_t)(nlocs > 0 ? nlocs : 1) * sizeof *p->locs);
    c->node_of = scratch(c, p->nval, sizeof *c->node_of, 0);
    c->topo = scratch(c, nsteps, sizeof *c->topo, 0);
    if (!p->ops || !p->locs || !c->node_of || !c->topo) return MG_ERR_NOMEM;
    p->bytes += p->nops * (int64_t)sizeof *p->ops + nlocs * (int64_t)sizeof *p->locs;
    for (int64_t off = pv->vecs_keep, k = 0, loc = 0; off < pv->vcount; off++) {
        if (k < lm.nblocks && off == lm.blocks[3 * k]) {   // a stretch: past it
            off += lm.blocks[3 * k + 1] - 1;
            k++;
            continue;
        }
        c->node_of[loc++] = (uint32_t)mgi_vec_entry(a, off);
    }
    for (int64_t i = 0; i < nsteps; i++) c->topo[i] = NO_PLACE;
    for (int64_t k = 0; k < pv->norder; k++)
        if (pv->order[k] >= pv->keep) c->topo[pv->order[k] - pv->keep] = (uint32_t)k;

    // each instruction's operands as locations
    int ok = 1;
    int64_t scalar = nvec, list = 0;
    for (int64_t i = 0; i < pv->ninstr; i++) {
        const mg_instr *in = &pv->instr[i];
        dense_op *o = &p->ops[i];
        o->op = in->op, o->base = in->base, o->leader = i, o->ce = -1, o->aux = p->naux;
        switch (in->op) {
        case MG_T_EMBED: {
            int64_t n = in->k.embed.n_embd;
            o->n = n, o->nout = in->k.embed.wte_rows, o->pos = in->k.embed.pos;
            o->w = vec_loc(&lm, in->k.embed.wte, in->k.embed.wte_rows * n, &ok);
            o->y = loc_at(vec_loc(&lm, in->k.embed.wpe, in->k.embed.wpe_rows * n, &ok), o->pos * n);
            o->out = vec_loc(&lm, in->out, n, &ok);
            break;
        }
        case MG_T_ADD:
            o->n = in->k.add.n;
            o->x = vec_loc(&lm, in->k.add.x, o->n, &ok), o->y = vec_loc(&lm, in->k.add.y, o->n, &ok);
            o->out = vec_loc(&lm, in->out, o->n, &ok);
            break;
        case MG_T_SCALE:
            o->n = in->k.scale.n, o->c = in->k.scale.c;
            o->x = vec_loc(&lm, in->k.scale.x, o->n, &ok), o->out = vec_loc(&lm, in->out, o->n, &ok);
            break;
        case MG_T_RELU:
        case MG_T_RMSNORM:
            if (in->op == MG_T_RMSNORM && !in->k.unary.fused)
                return refuse(d, "an unfused rmsnorm (only the fused graph compiles)", i);
            o->n = in->k.unary.n;
            o->x = vec_loc(&lm, in->k.unary.x, o->n, &ok), o->out = vec_loc(&lm, in->out, o->n, &ok);
            if (in->op == MG_T_RMSNORM) {
                int err = 0;
                o->c = py_pow((double)o->n, -1.0, &err);   // 1/n, the same every step
                if (err) return refuse(d, "an rmsnorm of no elements", i);
                p->naux += 3;
            }
            break;
        case MG_T_LINEAR: {
            if (!in->k.linear.fused) return refuse(d, "an unfused linear layer (only the fused graph compiles)", i);
            int64_t nin = in->k.linear.nin, nout = in->k.linear.nout;
            if (nin >= (int64_t)1 << 30) return refuse(d, "a linear layer too wide for the order check", i);
            o->n = nin, o->nout = nout;
            o->x = vec_loc(&lm, in->k.linear.x, nin, &ok), o->w = vec_loc(&lm, in->k.linear.w, nin * nout, &ok);
            o->out = vec_loc(&lm, in->out, nout, &ok);
            if (ok && o->w >= 0) return refuse(d, "a linear layer whose weights are not parameters", i);
            if (ok && o->x < 0 && -1 - o->x < -1 - o->w + nin * nout && -1 - o->w < -1 - o->x + nin)
                return refuse(d, "a linear layer whose input overlaps its weights", i);
            break;
        }
        case MG_T_SOFTMAX:
            return refuse(d, "a softmax in a training step (only cross-entropies take one)", i);
        case MG_T_ATTENTION: {
            if (!in->k.attention.fused) return refuse(d, "an unfused attention (only the fused graph compiles)", i);
            int64_t t = in->k.attention.t, hd = in->k.attention.head_dim, h = in->k.attention.n_head;
            o->t = t, o->hd = hd, o->nout = h, o->n = h * hd, o->list = list;
            int err = 0;
            o->c = py_pow(py_pow((double)hd, 0.5, &err), -1.0, &err);   // the logits' scale, the same every step
            if (err) return refuse(d, "an attention head of no elements", i);
            o->x = vec_loc(&lm, in->k.attention.q, o->n, &ok), o->out = vec_loc(&lm, in->out, o->n, &ok);
            for (int64_t s = 0; s < 2 * t; s++)
                p->locs[list++] = vec_loc(&lm, pv->list[in->k.attention.list + s], o->n, &ok);
            p->naux += 1 + h * (2 * t + 2);
            if (3 * t > p->ntmp) p->ntmp = 3 * t;
            break;
        }
        case MG_T_CROSS_ENTROPY:
            if (!in->k.cross_entropy.fused) return refuse(d, "an unfused cross-entropy (only the fused graph compiles)", i);
            o->n = in->k.cross_entropy.n, o->ordinal = in->k.cross_entropy.ordinal;
            o->x = vec_loc(&lm, in->k.cross_entropy.logits, o->n, &ok);
            o->out = scalar, c->node_of[scalar++] = (uint32_t)in->out;
            p->naux += o->n + 3;
            if (2 * o->n > p->ntmp) p->ntmp = 2 * o->n;
            break;
        case MG_T_MEAN:
            o->n = in->k.mean.n, o->list = list;
            for (int64_t k = 0; k < o->n; k++) {  // each loss it averages is a cross-entropy's
                int64_t node = pv->list[in->k.mean.list + k], at = -1;
                for (int64_t s = nvec; s < scalar; s++)
                    if (c->node_of[s] == node) at = s;
                if (at < 0) return refuse(d, "a mean of something other than cross-entropies", i);
                p->locs[list++] = at;
            }
            o->out = scalar, c->node_of[scalar++] = (uint32_t)in->out;
            break;
        default:
            return refuse(d, "an instruction the dense executor does not know", i);
        }
        if (!ok) return refuse(d, "an operand that is neither a parameter matrix nor a vector of the step", i);
    }
    const mg_instr *last = &pv->instr[pv->ninstr - 1];
    if (last->op != MG_T_MEAN) return refuse(d, "a step whose loss is not a mean", -1);
    p->loss = p->ops[p->nops - 1].out;

    // linear layers: groups by input; the one giving a cross-entropy its logits
    for (int64_t i = 0; i < p->nops; i++) {
        dense_op *o = &p->ops[i];
        if (o->op == MG_T_CROSS_ENTROPY) {
            int64_t lin = -1;
            for (int64_t j = 0; j < i; j++)
                if (p->ops[j].op == MG_T_LINEAR && p->ops[j].out == o->x && p->ops[j].nout == o->n) lin = j;
            if (lin < 0 || p->ops[lin].ce >= 0)
                return refuse(d, "a cross-entropy whose logits are not the whole output of a linear layer of their own", i);
            p->ops[lin].ce = i;
        }
        if (o->op != MG_T_LINEAR) continue;
        for (int64_t j = 0; j < i; j++)
            if (p->ops[j].op == MG_T_LINEAR && p->ops[j].x == o->x) {
                o->leader = p->ops[j].leader;
                break;
            }
    }
    // each group's rows in the order the graph's chain rule meets them (descending place in the
    // topological order)
    int64_t rows_total = 0;
    for (int64_t i = 0; i < p->nops; i++)
        if (p->ops[i].op == MG_T_LINEAR) rows_total += p->ops[i].nout;
    c->pairs = scratch(c, 3 * rows_total, sizeof *c->pairs, 0);
    p->sched = malloc((size_t)(2 * rows_total + 1) * sizeof *p->sched);
    if (!c->pairs || !p->sched) return MG_ERR_NOMEM;
    p->bytes += 2 * rows_total * (int64_t)sizeof *p->sched;
    for (int64_t i = 0; i < p->nops; i++) {
        dense_op *o = &p->ops[i];
        if (o->op != MG_T_LINEAR || o->leader != i) continue;
        int64_t n = 0;
        for (int64_t j = i; j < p->nops; j++) {
            const dense_op *m = &p->ops[j];
            if (m->op != MG_T_LINEAR || m->leader != i) continue;
            if (m->ce >= 0 && j != i) return refuse(d, "a linear layer making logits shares its input with another", j);
            for (int64_t row = 0; row < m->nout; row++) {
                int64_t node = c->node_of[m->out + row];
                uint32_t at = node >= pv->keep ? c->topo[node - pv->keep] : NO_PLACE;
                if (at == NO_PLACE) return refuse(d, "a linear layer's row that the loss does not depend on", j);
                c->pairs[3 * n] = at, c->pairs[3 * n + 1] = j, c->pairs[3 * n + 2] = row;
                n++;
            }
        }
        qsort(c->pairs, (size_t)n, 3 * sizeof *c->pairs, by_key_descending);
        if (o->ce >= 0) {                         // the rule: descending, the target's last
            int64_t target = pv->tokens[p->ops[o->ce].ordinal + 1];
            for (int64_t k = 0; k < n; k++) {
                int64_t want = k == n - 1 ? target : o->nout - 1 - k - (o->nout - 1 - k <= target);
                if (c->pairs[3 * k + 2] != want)
                    return refuse(d, "the logits' rows do not come in the order a cross-entropy gives", i);
            }
            continue;
        }
        int64_t *mine = p->sched + 2 * p->nsched;
        for (int64_t k = 0; k < n; k++) mine[2 * k] = c->pairs[3 * k + 1] - i, mine[2 * k + 1] = c->pairs[3 * k + 2];
        o->sched = p->nsched, o->nsched = n;
        for (int64_t j = i - 1; j >= 0; j--) {    // the same pairs as an earlier group's: shared
            const dense_op *e = &p->ops[j];
            if (e->op == MG_T_LINEAR && e->leader == j && e->ce < 0 && e->nsched == n &&
                !memcmp(p->sched + 2 * e->sched, mine, (size_t)(2 * n) * sizeof *mine)) {
                o->sched = e->sched;
                break;
            }
        }
        if (o->sched == p->nsched) p->nsched += n;
    }
    scratch_drop(c, c->pairs, 3 * rows_total, sizeof *c->pairs);  // gone before the larger scratch comes
    c->pairs = NULL;
    int64_t *fit = realloc(p->sched, (size_t)(2 * p->nsched + 1) * sizeof *p->sched);
    if (fit) {                                    // (else the larger array stays, counted)
        p->sched = fit;
        p->bytes -= 2 * (rows_total - p->nsched) * (int64_t)sizeof *p->sched;
    }
    rc = sequence(p, c);
    scratch_drop(c, c->producer, p->nval, sizeof *c->producer);
    c->producer = NULL;
    return rc;
}

// r's bitmap for n nodes from first on
static int records_bits(compile_scratch *c, term_records *r, int64_t first, int64_t n) {
    r->first = first, r->words = n / 64 + 1;
    r->bits = scratch(c, r->words, sizeof *r->bits, 1);
    r->before = scratch(c, r->words, sizeof *r->before, 0);
    return r->bits && r->before ? 0 : MG_ERR_NOMEM;
}

// r's numbering and records, once its bitmap is set
static int records_numbered(compile_scratch *c, term_records *r) {
    for (int64_t w = 0; w < r->words; w++) {
        r->before[w] = (uint32_t)r->count;
        r->count += ones(r->bits[w]);
    }
    r->state = scratch(c, r->count, sizeof *r->state, 1);
    return r->state ? 0 : MG_ERR_NOMEM;
}

// the nodes that get terms, numbered (see term_records): those the order's nodes give terms to;
// or TOO_MANY_TERMS
static int number_nodes(const mg_arena *a, const mgi_program_view *pv, compile_scratch *c) {
    int64_t keep = pv->keep;
    int rc = records_bits(c, &c->params, 0, keep);
    if (!rc) rc = records_bits(c, &c->steps, keep, pv->count - keep);
    if (rc) return rc;
    int64_t terms = 0;                          // all of them: below 2^32, every count and place fits
    for (int64_t k = 0; k < pv->norder; k++) {
        int64_t v = pv->order[k], nc = dot_over_runs(a, v) ? 2 : mgi_child_count(a, v);
        if ((terms += nc) >= (int64_t)UINT32_MAX) return TOO_MANY_TERMS;
        for (int64_t q = 0; q < nc; q++) {       // a run's first node (children 0 and 1), or each child
            int64_t child = mgi_child(a, v, q), i = child < keep ? child : child - keep;
            (child < keep ? &c->params : &c->steps)->bits[i >> 6] |= (uint64_t)1 << (i & 63);
        }
    }
    if ((rc = records_numbered(c, &c->params)) || (rc = records_numbered(c, &c->steps))) return rc;
    c->params.run = scratch(c, c->params.count, sizeof *c->params.run, 1);
    return c->params.run ? 0 : MG_ERR_NOMEM;
}

// node v's record in the making (number_nodes marked it); *k: a parameter's number, else -1
static term_state *record_of(compile_scratch *c, int64_t keep, int64_t v, int64_t *k) {
    term_records *r = v >= keep ? &c->steps : &c->params;
    int64_t number = record_number(r, v);
    *k = v >= keep ? -1 : number;
    return &r->state[number];
}

// A run's term, to its first node v0, for n nodes: the later ones are marked, in `ends` (where
// runs over step nodes begin and end) or by `run` (how far one from a parameter reaches). 0, or
// TOO_MANY_TERMS when v0 has 2^28 terms
static int run_term(compile_scratch *c, uint32_t *ends, int64_t keep, int64_t v0, int64_t n) {
    int64_t k;
    term_state *st = record_of(c, keep, v0, &k);
    if (++st->left == 0) return TOO_MANY_TERMS;   // (the count wrapped)
    st->kinds |= RUN_TERM;
    if (k >= 0 && (uint32_t)n > c->params.run[k]) c->params.run[k] = (uint32_t)n;
    int64_t lo = v0 + 1 > keep ? v0 + 1 : keep, hi = v0 + n;   // its later step nodes
    if (lo < hi) ends[lo - keep]++, ends[hi - keep]--;
    return 0;
}

// A node's check once all terms are counted: a run's later node gets no term of its own, and no
// node gets terms both as a run's first and as a node; two terms may come either way round.
static int counted(term_state *st, int later) {
    if (later ? st->left != 0 : st->kinds == (RUN_TERM | NODE_TERM)) return MG_ERR_PLAN;
    if (st->left == 2) st->kinds |= TWO_TERMS;
    return 0;
}

// How many terms the graph gives every node, and the tracer over them; 0, an error code, or
// MG_ERR_PLAN when a run's later node gets a term of its own, or a run's first node gets terms
// both as a run's and as a node's (see trace_dot). kinds: RUN_TERM and NODE_TERM, the kinds of
// terms a node gets; TWO_TERMS, it gets two (which may come either way round).
static int graph_terms(const mg_arena *a, const mgi_program_view *pv, compile_scratch *c, tracer *tr) {
    int64_t nn = pv->count, keep = pv->keep, nsteps = nn - keep;
    uint32_t *ends = scratch(c, nsteps, sizeof *ends, 1);   // +1 where runs begin, -1 past their end
    int rc = ends ? number_nodes(a, pv, c) : MG_ERR_NOMEM;
    for (int64_t k = 0; !rc && k < pv->norder; k++) {
        int64_t v = pv->order[k], nc = mgi_child_count(a, v), p;
        if (dot_over_runs(a, v)) {              // children w0 + j and x0 + j (nd_dot_of's runs)
            rc = run_term(c, ends, keep, mgi_child(a, v, 0), nc / 2);
            if (!rc) rc = run_term(c, ends, keep, mgi_child(a, v, 1), nc / 2);
            continue;
        }
        for (int64_t q = 0; !rc && q < nc; q++) {
            term_state *st = record_of(c, keep, mgi_child(a, v, q), &p);
            if (++st->left == 0) rc = TOO_MANY_TERMS;
            st->kinds |= NODE_TERM;
        }
    }
    uint32_t later = 0;                         // runs that a step node is a later node of (mod 2^32)
    for (int64_t i = 0; !rc && i < nsteps; i++) {
        later += ends[i];
        int64_t k = record_number(&c->steps, keep + i);   // (none: no terms, which passes)
        if (k >= 0) rc = counted(&c->steps.state[k], later != 0);
    }
    scratch_drop(c, ends, nsteps, sizeof *ends);
    // the parameters in node order, each after the runs from parameters that begin before it
    const term_records *ps = &c->params;
    int64_t reach = 0;                          // past the last node of those runs
    for (int64_t w = 0; !rc && w < ps->words; w++)
        for (uint64_t bits = ps->bits[w]; !rc && bits; bits &= bits - 1) {
            int64_t v = 64 * w + lowest(bits), k = record_number(ps, v);
            rc = counted(&ps->state[k], v < reach);
            if (v + ps->run[k] > reach) reach = v + ps->run[k];
        }
    if (rc) return rc;
    *tr = (tracer){ .a = a, .node_of = c->node_of, .topo = c->topo, .norder = pv->norder, .keep = keep,
                    .params = ps, .steps = &c->steps, .nnodes = nn, .bad = -1 };
    return 0;
}

// after the traced run: -1 if every node got all its terms, else the first that did not
static int64_t terms_differ(const tracer *tr) {
    if (tr->bad >= 0) return tr->bad;
    const term_records *both[] = { tr->params, tr->steps };
    for (int k = 0; k < 2; k++)
        for (int64_t w = 0; w < both[k]->words; w++)
            for (uint64_t bits = both[k]->bits[w]; bits; bits &= bits - 1) {
                int64_t v = both[k]->first + 64 * w + lowest(bits);
                if (both[k]->state[record_number(both[k], v)].left != 0) return v;
            }
    return -1;
}

// --- the parameters' gradients, checked a class at a time
//
// The check compares the plan's parameter gradients with the graph's, so it must hold both. A
// layer-by-layer plan gives each parameter all its terms in one class's turn of the backward
// (a weight matrix is read by one instruction of each position), so the check holds only that
// class's window of parameters and compares it when the class is done: at d128 the largest
// window is one MLP matrix, 0.5 MB, where all the gradients are 6.4 MB.

// the class whose turn of the backward adds instruction i's terms: a linear layer's rows run
// with its group's leader
static int64_t class_of(const dense_plan *p, int64_t i) {
    if (i == p->nops - 1) return p->K;
    const dense_op *o = &p->ops[i];
    return (o->op == MG_T_LINEAR ? o->leader : i) % p->K;
}

// a parameter span for location loc of len entries, if loc is a parameter; sp NULL: counted only
static int64_t span_of(param_span *sp, int64_t n, int64_t loc, int64_t len, int64_t cls) {
    if (loc >= 0 || len <= 0) return n;
    if (sp) sp[n] = (param_span){ -1 - loc, -1 - loc + len, cls };
    return n + 1;
}

// the spans instruction i's backward may add terms to (every location it takes a gradient of),
// after the n already in sp
static int64_t op_spans(const dense_plan *p, int64_t i, param_span *sp, int64_t n) {
    const dense_op *o = &p->ops[i];
    int64_t cls = class_of(p, i);
    switch (o->op) {
    case MG_T_EMBED:
        return span_of(sp, span_of(sp, n, o->w, o->nout * o->n, cls), o->y, o->n, cls);
    case MG_T_ADD:
        return span_of(sp, span_of(sp, n, o->x, o->n, cls), o->y, o->n, cls);
    case MG_T_LINEAR:
        return span_of(sp, span_of(sp, n, o->x, o->n, cls), o->w, o->nout * o->n, cls);
    case MG_T_ATTENTION:
        for (int64_t s = 0; s < 2 * o->t; s++) n = span_of(sp, n, p->locs[o->list + s], o->n, cls);
        return span_of(sp, n, o->x, o->n, cls);
    case MG_T_MEAN:
        for (int64_t k = 0; k < o->n; k++) n = span_of(sp, n, p->locs[o->list + k], 1, cls);
        return n;
    default:                                      // scale, relu, rmsnorm, cross-entropy: the input
        return span_of(sp, n, o->x, o->n, cls);
    }
}

static int by_first_node(const void *x, const void *y) {
    int64_t a = ((const param_span *)x)->lo, b = ((const param_span *)y)->lo;
    return a < b ? -1 : a > b;
}

// Each class's spans, sorted and merged, and the window that holds any class's: c->pgrad. A plan
// that is not layer by layer, or whose classes share a parameter, is checked all at once.
static int param_windows(const dense_plan *p, int64_t keep, compile_scratch *c) {
    int64_t n = 0, window = 0;
    for (int64_t i = 0; p->T && i < p->nops; i++) n = op_spans(p, i, NULL, n);
    if (n > 0) {
        if (!(c->spans = scratch(c, n, sizeof *c->spans, 0))) return MG_ERR_NOMEM;
        for (int64_t i = 0, k = 0; i < p->nops; i++) k = op_spans(p, i, c->spans, k);
        qsort(c->spans, (size_t)n, sizeof *c->spans, by_first_node);
        int64_t m = 0;                            // merged: spans of one class that overlap or touch
        for (int64_t k = 0; k < n && m >= 0; k++) {
            param_span s = c->spans[k], *last = m ? &c->spans[m - 1] : NULL;
            if (last && s.lo < last->hi && s.cls != last->cls) m = -1;    // shared: all at once
            else if (last && s.lo <= last->hi && s.cls == last->cls) last->hi = s.hi > last->hi ? s.hi : last->hi;
            else c->spans[m++] = s;
        }
        c->nspans = m > 0 ? m : 0;
    }
    if (c->nspans) {
        int64_t classes = p->K + 1;
        if (!(c->hull = scratch(c, 2 * classes, sizeof *c->hull, 0))) return MG_ERR_NOMEM;
        for (int64_t k = 0; k < classes; k++) c->hull[2 * k] = INT64_MAX, c->hull[2 * k + 1] = 0;
        for (int64_t k = 0; k < c->nspans; k++) {
            const param_span *s = &c->spans[k];
            int64_t *h = c->hull + 2 * s->cls;
            if (s->lo < h[0]) h[0] = s->lo;
            if (s->hi > h[1]) h[1] = s->hi;
            if (h[1] - h[0] > window) window = h[1] - h[0];
        }
    }
    if (!c->nspans) window = keep;
    return (c->pgrad = scratch(c, window, sizeof *c->pgrad, 1)) ? 0 : MG_ERR_NOMEM;
}

// the plan's parameter gradients in the window (first node lo) equal the graph's over nodes from .. to-1
static int same_grads(const double *window, int64_t lo, const double *grad, int64_t from, int64_t to) {
    for (int64_t v = from; v < to; v++)
        if (!same_bits(window[v - lo], grad[v])) return 0;
    return 1;
}

// The traced run's backward, each parameter's gradient compared with the graph's (in a) once it
// is complete: *differ = 1 when one is not the same
static void checked_backward(dense_run *r, const mg_arena *a, const compile_scratch *c, int *differ) {
    const dense_plan *p = r->p;
    backward_start(r);
    r->pgrad = c->pgrad;
    if (!c->nspans) {
        r->pfirst = 0;
        backward_span(r, p->nops - 1, 0);
        *differ = !same_grads(c->pgrad, 0, a->grad, 0, p->keep);
        return;
    }
    int64_t next = 0;                             // the spans of parameters no class gives a term to
    *differ = 0;
    for (int64_t k = p->K; k >= 0; k--) {         // the mean, then instruction K - 1 of every position, ...
        int64_t lo = c->hull[2 * k], hi = c->hull[2 * k + 1];
        if (hi > lo) memset(c->pgrad, 0, (size_t)(hi - lo) * sizeof *c->pgrad);
        r->pfirst = hi > lo ? lo : 0;
        backward_span(r, k == p->K ? p->nops - 1 : k * p->T + p->T - 1, k == p->K ? p->nops - 1 : k * p->T);
        for (int64_t j = 0; j < c->nspans; j++)
            if (c->spans[j].cls == k && !same_grads(c->pgrad, lo, a->grad, c->spans[j].lo, c->spans[j].hi))
                *differ = 1;
    }
    for (int64_t j = 0; j <= c->nspans; j++) {
        int64_t to = j < c->nspans ? c->spans[j].lo : p->keep;
        for (int64_t v = next; v < to; v++)
            if (!same_bits(0.0, a->grad[v])) *differ = 1;   // what the plan leaves a parameter it never reads
        if (j < c->nspans) next = c->spans[j].hi;
    }
}

int64_t mg_dense_compile(mg_dense *d, mg_tape *t, mg_arena *a, int64_t program) {
    mgi_count_call(a);
    if (!d || !t || !a) return MG_ERR_ARG;
    int rc = mgi_thread_check(a);
    if (rc) return rc;
    mgi_program_view pv;
    if (mgi_tape_program(t, a, program, &pv) || !pv.live) return MG_ERR_ARG;
    d->why[0] = 0;
    if (!pv.order) return refuse(d, "the step's backward order is not cached (tape.c says when it cannot be)", -1);
    void *grown = d->plans;
    rc = mgi_grow(&d->mem, &grown, (const size_t[]){ sizeof *d->plans }, 1, 0, &d->plans_cap, d->nplans + 1,
                  MG_ELEM_LIMIT);
    d->plans = grown;
    if (rc) return rc;
    dense_plan p = { 0 };
    compile_scratch c = { 0 };
    tracer tr;
    int64_t result = compile(d, a, &pv, &p, &c);
    if (!result) {
        result = graph_terms(a, &pv, &c, &tr);
        if (result == MG_ERR_PLAN)
            result = refuse(d, "a fused row's weights or input also get gradient terms from elsewhere", -1);
        else if (result == TOO_MANY_TERMS)
            result = refuse(d, "the step's graph has 2^32 gradient terms or more (or 2^28 to one node), more than the "
                            "order check counts", -1);
    }
    d->forward_plan = -1, d->sample_plan = -1;  // the buffers are the check's now
    if (!result) result = buffers_for(d, &p);
    if (!result) result = param_windows(&p, pv.keep, &c);
    if (!result) {
        // one run with the recorded tokens, its terms traced, its gradients apart from the arena's
        memset(d->val, 0, (size_t)p.nval * sizeof *d->val);
        memset(d->aux, 0, (size_t)p.naux * sizeof *d->aux);
        dense_run r = run_of(d, &p, a, pv.tokens);
        r.tr = &tr;
        result = run_forward(&r);
        int params_differ = 0;
        if (result) {
            result = refuse(d, "the plan's forward fails where the graph's did not", -1);
        } else {
            checked_backward(&r, a, &c, &params_differ);
            int64_t v = terms_differ(&tr);
            if (v >= 0) {
                char why[sizeof d->why];
                snprintf(why, sizeof why, "node %lld receives its gradient terms in another order than the graph gives "
                         "them", (long long)v);
                result = refuse(d, why, -1);
            }
        }
        for (int64_t i = 0; !result && i < p.nval; i++)
            if (!same_bits(d->val[i], a->data[c.node_of[i]]) || !same_bits(d->grad[i], a->grad[c.node_of[i]]))
                result = refuse(d, "a value or gradient of the plan differs from the graph's", -1);
        if (!result && params_differ) result = refuse(d, "a parameter's gradient differs from the graph's", -1);
    }
    if (d->mem.bytes + p.bytes + c.peak > d->peak) d->peak = d->mem.bytes + p.bytes + c.peak;
    scratch_free(&c);
#if defined(__GLIBC__)
    // glibc keeps freed blocks below its (moving) mmap threshold in its heap: hand the compile's
    // scratch, megabytes once per document length, back to the system, or the next compile's
    // peak sits on top of it (a 1000-step d128 run: 64.8 MB at its peak instead of 67.6)
    malloc_trim(0);
#endif
    if (result) {
        p.bytes = 0;                              // never counted
        plan_free(d, &p);
        return result;
    }
    d->mem.bytes += p.bytes;
    d->plans[d->nplans] = p;
    return d->nplans++;
}

// every token a plan reads is in range
static int tokens_fit(const dense_plan *p, const int64_t *tokens) {
    for (int64_t i = 0; i < p->nops; i++) {
        const dense_op *o = &p->ops[i];
        if (o->op == MG_T_EMBED && (tokens[o->pos] < 0 || tokens[o->pos] >= o->nout)) return 0;
        if (o->op == MG_T_CROSS_ENTROPY && (tokens[o->ordinal + 1] < 0 || tokens[o->ordinal + 1] >= o->n)) return 0;
    }
    return 1;
}

int mg_dense_forward(mg_dense *d, mg_arena *a, int64_t plan, const int64_t *tokens, int64_t ntokens, double *loss) {
    mgi_count_call(a);
    if (!d || !a || !tokens || !loss || plan < 0 || plan >= d->nplans) return MG_ERR_ARG;
    int rc = mgi_thread_check(a);
    if (rc) return rc;
    const dense_plan *p = &d->plans[plan];
    if (ntokens != p->ntokens || !tokens_fit(p, tokens)) return MG_ERR_ARG;
    if (a->keep != p->keep || a->vecs_keep != p->vecs_keep) return MG_ERR_ARG;   // other parameters
    d->forward_plan = -1;
    d->sample_plan = -1;                         // the buffers are this step's now
    if ((rc = buffers_for(d, p))) return rc;
    memcpy(d->tokens, tokens, (size_t)ntokens * sizeof *tokens);
    dense_run r = run_of(d, p, a, d->tokens);
    if ((rc = run_forward(&r))) return rc;
    *loss = d->val[p->loss];
    d->forward_plan = plan;
    d->differentiated = 0;
    d->forward_arena = a;
    d->forward_changes = a->changes;
    return 0;
}

int mg_dense_backward(mg_dense *d, mg_arena *a) {
    mgi_count_call(a);
    if (!d || !a) return MG_ERR_ARG;
    int rc = mgi_thread_check(a);
    if (rc) return rc;
    if (d->forward_plan < 0 || d->forward_arena != a) return MG_ERR_ARG;   // no forward
    if (d->differentiated) return MG_ERR_TWICE;  // its gradients are in the parameters already
    if (a->changes != d->forward_changes) return MG_ERR_CHANGED;           // the parameters it read moved
    mgi_note_change(a);
    dense_run r = run_of(d, &d->plans[d->forward_plan], a, d->tokens);
    run_backward(&r);
    d->differentiated = 1;
    return 0;
}

int mg_dense_adam_step(mg_dense *d, mg_arena *a, double lr_t, double beta1, double beta2, double eps,
                       int64_t step) {
    if (!d) return MG_ERR_ARG;
    return mgi_adam_step(a, d->pool, d->adam_min_share, lr_t, beta1, beta2, eps, step);
}

int64_t mg_dense_steps(mg_dense *d, mg_arena *a, int64_t k, const int64_t *plans, const int64_t *offsets,
                       const int64_t *tokens, const double *lrs, double beta1, double beta2, double eps,
                       int64_t first_step, double *losses, int *status) {
    if (!d || !a || !status || k < 0 || (k > 0 && (!plans || !offsets || !tokens || !lrs || !losses)))
        return MG_ERR_ARG;
    *status = 0;
    for (int64_t i = 0; i < k; i++) {
        int64_t n = offsets[i + 1] - offsets[i];
        int rc = n < 1 ? MG_ERR_ARG : mg_dense_forward(d, a, plans[i], tokens + offsets[i], n, &losses[i]);
        if (!rc && !isfinite(losses[i])) {       // the step is not taken: the caller reports its loss
            *status = MG_STEP_NONFINITE;
            return i;
        }
        if (!rc) rc = mg_dense_backward(d, a);
        if (!rc) {
            rc = mg_dense_adam_step(d, a, lrs[i], beta1, beta2, eps, first_step + i);
            if (rc && a->nparams > 0) memset(a->grad, 0, (size_t)a->nparams * sizeof *a->grad);
        }
        if (rc) {                                 // the state is the one before step i
            *status = rc;
            return i;
        }
    }
    return k;
}

// --- sampling: a plan's forward one position at a time

int64_t mg_dense_positions(const mg_dense *d, int64_t plan) {
    if (!d || plan < 0 || plan >= d->nplans) return MG_ERR_ARG;
    return d->plans[plan].T;
}

// Position pos's instructions but its cross-entropy, in their recorded order: what the model's
// forward makes for one token, reading the earlier positions' keys and values where they lie.
int mg_dense_sample(mg_dense *d, mg_arena *a, int64_t plan, int64_t pos, int64_t token, double scale, double *probs,
                    int64_t nprobs) {
    mgi_count_call(a);
    if (!d || !a || plan < 0 || plan >= d->nplans || nprobs < 0 || (nprobs > 0 && !probs)) return MG_ERR_ARG;
    int rc = mgi_thread_check(a);
    if (rc) return rc;
    const dense_plan *p = &d->plans[plan];
    if (p->T == 0 || pos < 0 || pos >= p->T) return MG_ERR_ARG;
    if (a->keep != p->keep || a->vecs_keep != p->vecs_keep) return MG_ERR_ARG;   // other parameters
    const dense_op *ops = p->ops + pos * p->K, *ce = &ops[p->K - 1];
    if (nprobs > 0 && nprobs != ce->n) return MG_ERR_ARG;
    for (int64_t k = 0; k < p->K - 1; k++)
        if (ops[k].op == MG_T_EMBED && (token < 0 || token >= ops[k].nout)) return MG_ERR_ARG;
    if (pos > 0) {                                // the positions before it are this plan's, still
        if (d->sample_plan != plan || d->sample_next != pos || d->forward_arena != a) return MG_ERR_ARG;
        if (a->changes != d->sample_changes) return MG_ERR_CHANGED;
    } else if ((rc = buffers_for(d, p))) {
        return rc;
    }
    d->forward_plan = -1;                         // no backward: the buffers are the sampler's
    d->sample_plan = -1;                          // until this position has run
    d->tokens[pos] = token;
    dense_run r = run_of(d, p, a, d->tokens);
    for (int64_t k = 0; k < p->K - 1; k++)
        if ((rc = forward_op(&r, &ops[k]))) return rc;
    if (nprobs > 0) {                             // softmax(logits * scale), as the seed's sampler
        const double *logits = V(&r, ce->x);
        double *e = r.aux + ce->aux, inv;         // the cross-entropy's room, unused here
        for (int64_t i = 0; i < nprobs; i++) probs[i] = logits[i] * scale;
        if ((rc = softmax_values(probs, nprobs, e, &inv, NULL))) return rc;
        for (int64_t i = 0; i < nprobs; i++) probs[i] = e[i] * inv;
    }
    if (pos == 0) d->sample_changes = a->changes, d->forward_arena = a;
    d->sample_plan = plan, d->sample_next = pos + 1;
    return 0;
}
