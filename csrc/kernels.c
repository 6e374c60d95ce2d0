/*
 * kernels.c -- microgpt's layers as C loops: every kernel builds exactly the scalar nodes the
 * seed's Python builds for that layer (same ops, same children in the same order, made in the
 * same order), so values and gradients are bit-identical to the Python backend.
 *
 * These are the bodies: raw offsets in (validated by the caller), room reserved first, and a
 * body that fails part way (a math error) drops what it made and returns the error code. The
 * exported calls that check handles and record are in layers.c; a replay (tape.c) calls the
 * bodies directly.
 *
 * The fused graph (fused = 1) keeps every bit with fewer nodes: a linear row, an attention logit's
 * sum, an attention output's sum and an rmsnorm's sum of squares are each one DOT node instead of
 * the seed's chain of products and sums (arena.h, nd_dot_of), and a cross-entropy makes only the
 * target's probability, whose siblings cannot reach the loss (shared/PARITY.md). Attention makes
 * its outputs after every head's softmax, one run of nodes: the graph is the same, only the nodes'
 * indices differ, and the backward's order does not depend on them.
 *
 * Not here: which layers, in which order (that is Python's model), and any recording.
 */
#include <stdint.h>
#include "microgpt.h"
#include "arena.h"
#include "kernels.h"
#include "dot.h"

// --- helpers

// the counts before a kernel made anything, to drop it all if the kernel fails part way
typedef struct { int64_t count, nedges, vcount; } undo_point;

static undo_point undo_point_here(const mg_arena *a) { return (undo_point){ a->count, a->nedges, a->vcount }; }

static int64_t undo_to(mg_arena *a, undo_point u, int64_t rc) {
    a->count = u.count;                          // edge_begin[u.count] == u.nedges still holds
    a->nedges = u.nedges;
    a->vcount = u.vcount;
    return rc;
}

// the n entries just written past vcount become a vec; its offset
static int64_t vec_commit(mg_arena *a, int64_t n) {
    int64_t off = a->vcount;
    a->vcount += n;
    return off;
}

// A kernel's input vec as a node list (mgi_vec_nodes): a persistent one's entries are written
// into the view from *used on (room reserved by the kernel: view_need of each input).
static int64_t view_need(const mg_arena *a, int64_t off, int64_t n) { return off < a->vecs_keep ? n : 0; }

static const mgi_id *input(const mg_arena *a, int64_t off, int64_t n, int64_t *used) {
    mgi_id *dst = off < a->vecs_keep ? a->view + *used : NULL;
    *used += view_need(a, off, n);
    return mgi_vec_nodes(a, off, n, dst);
}

// the seed's sum(u_j * v_j for j): p0 = u0*v0, s = p0 + 0 (the seed's constant), s = s + u_j*v_j
static int64_t dot_chain(mg_arena *a, const mgi_id *u, const mgi_id *v, int64_t n) {
    int64_t s = nd_addc(a, nd_mul(a, u[0], v[0]), 0.0);
    for (int64_t j = 1; j < n; j++) s = nd_add(a, s, nd_mul(a, u[j], v[j]));
    return s;
}

// The seed's softmax over the nodes xs[0..n-1]: e_i = exp(x_i + -max), total = sum(e), and
// out[i] = e_i * total**-1 with its own pow node per i. exps is scratch for n. If only >= 0,
// only out[only] is made (its siblings cannot reach a loss taken from it). 0 or an error code.
// Node layout, from the first node made: per element i the pair (x_i + -max, exp) at 2i and
// 2i+1; the running total at 2n .. 3n-1; then (total**-1, e_i * it) per output made.
static int softmax_nodes(mg_arena *a, const int64_t *xs, int64_t n, int64_t *exps, int64_t *out,
                         int64_t only) {
    const double *d = a->data;
    double mx = d[xs[0]];                        // max(): keeps the first unless one is greater
    for (int64_t i = 1; i < n; i++)
        if (d[xs[i]] > mx) mx = d[xs[i]];
    for (int64_t i = 0; i < n; i++) {
        int64_t e = nd_exp(a, nd_addc(a, xs[i], -mx));
        if (e < 0) return (int)e;
        exps[i] = e;
    }
    int64_t total = nd_addc(a, exps[0], 0.0);
    for (int64_t i = 1; i < n; i++) total = nd_add(a, total, exps[i]);
    for (int64_t i = 0; i < n; i++) {
        if (only >= 0 && i != only) continue;
        int64_t inv = nd_pow(a, total, -1.0);
        if (inv < 0) return (int)inv;
        out[i] = nd_mul(a, exps[i], inv);
    }
    return 0;
}

// the n node indices of the vec at off as the int64 list softmax_nodes reads (copied into dst)
static const int64_t *node_list(int64_t *dst, const mg_arena *a, int64_t off, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = mgi_vec_entry(a, off + i);
    return dst;
}

// --- the bodies

// out_i = wte[token][i] + wpe[pos][i]: the seed's tok_emb + pos_emb, node for node
int64_t mgi_k_embed(mg_arena *a, int64_t wte, int64_t wpe, int64_t n, int64_t token, int64_t pos) {
    return mgi_k_add(a, wte + token * n, wpe + pos * n, n);     // the rows' sum
}

int64_t mgi_k_add(mg_arena *a, int64_t x, int64_t y, int64_t n) {
    int64_t used = 0;
    int rc = mgi_reserve(a, n, 2 * n, n, 0);
    if (!rc) rc = mgi_reserve_view(a, view_need(a, x, n) + view_need(a, y, n));
    if (rc) return rc;
    const mgi_id *xs = input(a, x, n, &used), *ys = input(a, y, n, &used);
    mgi_id *out = mgi_step_ids(a, a->vcount);
    for (int64_t i = 0; i < n; i++) out[i] = nd_add(a, xs[i], ys[i]);
    return vec_commit(a, n);
}

int64_t mgi_k_scale(mg_arena *a, int64_t x, int64_t n, double c) {
    int64_t used = 0;
    int rc = mgi_reserve(a, n, n, n, 0);
    if (!rc) rc = mgi_reserve_view(a, view_need(a, x, n));
    if (rc) return rc;
    const mgi_id *xs = input(a, x, n, &used);
    mgi_id *out = mgi_step_ids(a, a->vcount);
    for (int64_t i = 0; i < n; i++) out[i] = nd_mulc(a, xs[i], c);
    return vec_commit(a, n);
}

int64_t mgi_k_relu(mg_arena *a, int64_t x, int64_t n) {
    int64_t used = 0;
    int rc = mgi_reserve(a, n, n, n, 0);
    if (!rc) rc = mgi_reserve_view(a, view_need(a, x, n));
    if (rc) return rc;
    const mgi_id *xs = input(a, x, n, &used);
    mgi_id *out = mgi_step_ids(a, a->vcount);
    for (int64_t i = 0; i < n; i++) out[i] = nd_relu(a, xs[i]);
    return vec_commit(a, n);
}

// Four rows' sums at once (rows r .. r+3 of w), each exactly dot_value's: four independent
// chains, so the additions overlap instead of each waiting for the one before.
static void dot_values4(const mg_arena *a, const mgi_id *w0, const mgi_id *xv, int64_t nin, double out[4]) {
    const double *d = a->data;
    const mgi_id *w1 = w0 + nin, *w2 = w1 + nin, *w3 = w2 + nin;
    double x0 = d[xv[0]];
    double s0 = d[w0[0]] * x0 + 0.0, s1 = d[w1[0]] * x0 + 0.0, s2 = d[w2[0]] * x0 + 0.0, s3 = d[w3[0]] * x0 + 0.0;
    for (int64_t j = 1; j < nin; j++) {
        double xj = d[xv[j]];
        s0 = s0 + d[w0[j]] * xj;
        s1 = s1 + d[w1[j]] * xj;
        s2 = s2 + d[w2[j]] * xj;
        s3 = s3 + d[w3[j]] * xj;
    }
    out[0] = s0, out[1] = s1, out[2] = s2, out[3] = s3;
}

// out_r = sum(w[r][j] * x[j] for j), w row-major nout x nin: the seed's linear()
int64_t mgi_k_linear(mg_arena *a, int64_t x, int64_t nin, int64_t w, int64_t nout, int fused) {
    int64_t nodes = fused ? nout : 2 * nin * nout;
    int rc = mgi_reserve(a, nodes, fused ? MG_DOT_EDGES * nout : 2 * nodes, nout, 0);
    if (rc) return rc;
    // the weights and inputs as two runs of nodes that do not meet: the fused backward's fast
    // path, and no node lists needed
    int64_t w0 = mgi_vec_entry(a, w), x0 = mgi_vec_entry(a, x), used = 0;
    int ranges = fused && mgi_vec_is_range(a, w, nin * nout) && mgi_vec_is_range(a, x, nin) &&
                 (x0 + nin <= w0 || w0 + nin * nout <= x0);
    if (!ranges && (rc = mgi_reserve_view(a, view_need(a, x, nin) + view_need(a, w, nin * nout)))) return rc;
    const mgi_id *xs = ranges ? NULL : input(a, x, nin, &used), *ws = ranges ? NULL : input(a, w, nin * nout, &used);
    mgi_id *out = mgi_step_ids(a, a->vcount);
    int64_t r = 0;
    if (fused) {
        for (double v[4]; r + 4 <= nout; r += 4) {
            if (ranges)
                mgi_dot_rows4(a->data + w0 + r * nin, a->data + x0, nin, v);
            else
                dot_values4(a, ws + r * nin, xs, nin, v);
            for (int k = 0; k < 4; k++) out[r + k] = nd_dot_of(a, w + (r + k) * nin, x, nin, v[k], ranges);
        }
        for (double v; r < nout; r++) {
            if (ranges)
                v = mgi_dot_chain(a->data + w0 + r * nin, a->data + x0, nin);
            else
                v = dot_value(a, ws + r * nin, xs, nin);
            out[r] = nd_dot_of(a, w + r * nin, x, nin, v, ranges);
        }
    } else {
        for (; r < nout; r++) out[r] = dot_chain(a, ws + r * nin, xs, nin);
    }
    return vec_commit(a, nout);
}

// ms = sum(x_i * x_i) * n**-1; scale = (ms + 1e-5)**-0.5; out_i = x_i * scale. Fused, the sum is
// one DOT node over x and x (not over runs: they meet), whose two terms to each x_i are the
// chain's x_i * x_i node's. Node layout: the sum (its chain of 2n, or the DOT), * 1/n, + 1e-5,
// **-0.5, then the n outputs.
static int64_t rmsnorm_body(mg_arena *a, int64_t x, int64_t n, int fused) {
    int64_t used = 0;
    int rc = mgi_reserve(a, 3 * n + 3, 2 * (3 * n + 3), n, 0);
    if (!rc) rc = mgi_reserve_view(a, view_need(a, x, n));
    if (rc) return rc;
    undo_point u = undo_point_here(a);
    int err = 0;
    double inv_n = py_pow((double)n, -1.0, &err);   // the seed's len(x)**-1, a Python float
    if (err) return err;
    const mgi_id *xs = input(a, x, n, &used);
    int64_t sum = fused ? nd_dot_of(a, x, x, n, dot_value(a, xs, xs, n), 0) : dot_chain(a, xs, xs, n);
    int64_t ms = nd_mulc(a, sum, inv_n);
    int64_t scale = nd_pow(a, nd_addc(a, ms, 1e-5), -0.5);
    if (scale < 0) return undo_to(a, u, scale);
    mgi_id *out = mgi_step_ids(a, a->vcount);
    for (int64_t i = 0; i < n; i++) out[i] = (mgi_id)nd_mul(a, xs[i], scale);
    return vec_commit(a, n);
}

int64_t mgi_k_rmsnorm(mg_arena *a, int64_t x, int64_t n) { return rmsnorm_body(a, x, n, 0); }
int64_t mgi_k_rmsnorm_fused(mg_arena *a, int64_t x, int64_t n) { return rmsnorm_body(a, x, n, 1); }

int64_t mgi_k_softmax(mg_arena *a, int64_t x, int64_t n) {
    int rc = mgi_reserve(a, 5 * n, 10 * n, n, 3 * n);
    if (rc) return rc;
    undo_point u = undo_point_here(a);
    int64_t *exps = a->scratch + n, *out = exps + n;
    rc = softmax_nodes(a, node_list(a->scratch, a, x, n), n, exps, out, -1);
    if (rc) return undo_to(a, u, rc);
    mgi_id *ids = mgi_step_ids(a, a->vcount);
    for (int64_t i = 0; i < n; i++) ids[i] = (mgi_id)out[i];
    return vec_commit(a, n);
}

// Every head at one position, head h after head h-1, each exactly the seed's attention_head on
// the h-th slice (hs = h * hd): logit_s = sum(q[hs+j] * k_s[hs+j] for j) * (hd**0.5)**-1,
// w = softmax(logits), out[hs+j] = sum(w_s * v_s[hs+j] for s). keys[s], values[s]: offsets of
// vecs of n_head*hd elements. The output is one vec, the heads' outputs concatenated.
// Fused, each of those sums is one DOT node, as a fused linear row is: a logit's over the slices
// of q and k_s, an output's over two vecs made for it (the weights, and v_s[hs+j] for every s),
// which follow the output vec (per head: the weights, then each output's values). Node layout,
// fused: per head (DOT, * c) per s and the softmax's 5t, then all n outputs, one run of nodes (so
// that the next layer's rows read them as a run, as they read any other layer's output); unfused,
// per head: the chains, t * (2hd + 1), the softmax's, then hd chains of 2t.
int64_t mgi_k_attention(mg_arena *a, int64_t q, const int64_t *keys, const int64_t *values,
                        int64_t t, int64_t n_head, int64_t head_dim, int fused) {
    int64_t hd = head_dim, n = n_head * hd;
    if ((double)n_head * (double)t * (4.0 * (double)hd + 7.0) > (double)MG_IDX_LIMIT) return MG_ERR_NOMEM;
    // per head: dots t*(2hd+1), softmax 5t, outputs 2*hd*t; fused: 2t, 5t and hd
    int64_t nodes = fused ? n_head * (7 * t + hd) : n_head * t * (4 * hd + 6);
    int64_t vecs = fused ? n + n_head * t * (1 + hd) : n;     // fused: each output's two vecs
    int rc = mgi_reserve(a, nodes, MG_DOT_EDGES * nodes, vecs, 3 * t);
    if (!rc) rc = mgi_reserve_view(a, view_need(a, q, n) + hd);   // q, and a key's slice
    if (rc) return rc;
    int err = 0;
    double c = py_pow(py_pow((double)hd, 0.5, &err), -1.0, &err);   // the seed's / head_dim**0.5
    if (err) return err;
    undo_point u = undo_point_here(a);
    int64_t *logits = a->scratch, *exps = logits + t, *wts = exps + t;   // reused by each head
    int64_t used = 0, off = a->vcount;
    const mgi_id *qs = input(a, q, n, &used);
    mgi_id *out = mgi_step_ids(a, off), *key_view = a->view + used;
    if (fused) vec_commit(a, n);                 // written after every head's softmax
    for (int64_t hs = 0; hs < n; hs += hd) {
        for (int64_t s = 0; s < t; s++) {
            int64_t qv = q + hs, kv = keys[s] + hs, logit;
            const mgi_id *ks = mgi_vec_nodes(a, kv, hd, key_view);
            if (fused) {
                int ranges = mgi_vec_is_range(a, qv, hd) && mgi_vec_is_range(a, kv, hd) &&
                             (qs[hs] + hd <= ks[0] || ks[0] + hd <= qs[hs]);
                logit = nd_dot_of(a, qv, kv, hd, dot_value(a, qs + hs, ks, hd), ranges);
            } else {
                logit = dot_chain(a, qs + hs, ks, hd);
            }
            logits[s] = nd_mulc(a, logit, c);
        }
        if ((rc = softmax_nodes(a, logits, t, exps, wts, -1))) return undo_to(a, u, rc);
        if (fused) {                             // the weights, where the head's vecs will begin
            mgi_id *wv = mgi_step_ids(a, off + n + (hs / hd) * t * (1 + hd));
            for (int64_t s = 0; s < t; s++) wv[s] = (mgi_id)wts[s];
            continue;
        }
        for (int64_t j = hs; j < hs + hd; j++) {
            int64_t acc = nd_addc(a, nd_mul(a, wts[0], mgi_vec_entry(a, values[0] + j)), 0.0);
            for (int64_t s = 1; s < t; s++) acc = nd_add(a, acc, nd_mul(a, wts[s], mgi_vec_entry(a, values[s] + j)));
            out[j] = acc;
        }
    }
    for (int64_t hs = 0; fused && hs < n; hs += hd) {
        int64_t wv = a->vcount;                  // (written above)
        vec_commit(a, t);
        for (int64_t j = hs; j < hs + hd; j++) {
            int64_t xv = a->vcount;
            mgi_id *xs = mgi_step_ids(a, xv);
            for (int64_t s = 0; s < t; s++) xs[s] = (mgi_id)mgi_vec_entry(a, values[s] + j);
            vec_commit(a, t);
            out[j] = nd_dot_of(a, wv, xv, t, dot_value(a, mgi_step_ids(a, wv), xs, t), 0);
        }
    }
    return fused ? off : vec_commit(a, n);
}

// -log(softmax(logits)[target]): the loss node. Fused, only the target's probability is made.
// Node layout: softmax_nodes's, then log and * -1; fused, the last four are at 3n .. 3n+3.
int64_t mgi_k_cross_entropy(mg_arena *a, int64_t logits, int64_t n, int64_t target, int fused) {
    int rc = mgi_reserve(a, 5 * n + 2, 2 * (5 * n + 2), 0, 3 * n);
    if (rc) return rc;
    undo_point u = undo_point_here(a);
    int64_t *exps = a->scratch + n, *probs = exps + n;
    rc = softmax_nodes(a, node_list(a->scratch, a, logits, n), n, exps, probs, fused ? target : -1);
    if (rc) return undo_to(a, u, rc);
    int64_t l = nd_log(a, probs[target]);
    if (l < 0) return undo_to(a, u, l);
    return nd_mulc(a, l, -1.0);
}

// The search enters a fused cross-entropy from its loss: * -1, log, probability = exp_t * inv,
// and first down exp_t to (logit_t - max) and logit_t, where it lists everything logit_t depends
// on (which the tape shows is the same for every target), then logit_t, (logit_t - max), exp_t.
// Then inv = total**-1 leads down the running totals, total_0 = exp_0 + 0 first: each exp_i not
// yet listed brings its logit_i and (logit_i - max) along, and total_i follows. Last come inv,
// the probability, log and * -1.
void mgi_k_cross_entropy_order(const mg_arena *a, int64_t logits, int64_t n, int64_t base,
                               int64_t target, mgi_id *dst) {
    int64_t k = 0;
    dst[k++] = (mgi_id)mgi_vec_entry(a, logits + target);
    dst[k++] = base + 2 * target;                // logit - max
    dst[k++] = base + 2 * target + 1;            // exp
    for (int64_t i = 0; i < n; i++) {
        if (i != target) {
            dst[k++] = (mgi_id)mgi_vec_entry(a, logits + i);
            dst[k++] = base + 2 * i;
            dst[k++] = base + 2 * i + 1;
        }
        dst[k++] = base + 2 * n + i;             // running total
    }
    for (int64_t i = 0; i < 4; i++) dst[k++] = base + 3 * n + i;   // total**-1, probability, log, * -1
}

// (1/n) * sum(nodes): the node
int64_t mgi_k_mean(mg_arena *a, const int64_t *nodes, int64_t n) {
    int rc = mgi_reserve(a, n + 1, 2 * n + 2, 0, 0);
    if (rc) return rc;
    int64_t s = nd_addc(a, nodes[0], 0.0);
    for (int64_t k = 1; k < n; k++) s = nd_add(a, s, nodes[k]);
    return nd_mulc(a, s, 1.0 / (double)n);
}
