/*
 * kernels.c -- microgpt's layers, one C call each: every kernel builds exactly the scalar nodes
 * the seed's Python builds for that layer (same ops, same children in the same order, made in
 * the same order), so values and gradients are bit-identical to the Python backend.
 *
 * Vectors are vec handles (arena.c); each kernel validates its inputs once, reserves room for
 * everything it will make, then calls the unchecked node constructors of internal.h. A kernel
 * that fails part way (a math error) drops what it made and returns the error code.
 *
 * One deliberate difference in fused mode (mg_arena_set_fused): a linear layer's output element
 * is a single DOT node instead of the seed's chain of products and sums. Its value and its
 * backward reproduce the chain's roundings exactly (shared/PARITY.md, "Fewer nodes, same bits").
 *
 * Not here: anything else about the model (which layers, in which order: that is Python's),
 * and no fusing beyond linear layers.
 */
#include <stdint.h>
#include <stddef.h>
#include <errno.h>
#include <math.h>
#include "microgpt.h"
#include "internal.h"

// --- helpers

// a kernel's starting point, to drop everything it made if it fails part way
typedef struct { int64_t count, nedges, vcount; } kmark;

static kmark kbegin(const mg_arena *a) { return (kmark){ a->count, a->nedges, a->vcount }; }

static int64_t kfail(mg_arena *a, kmark m, int64_t rc) {
    a->count = m.count;                          // edge_begin[m.count] == m.nedges still holds
    a->nedges = m.nedges;
    a->vcount = m.vcount;
    return rc;
}

// validate an input vec of n >= 1 elements
static int kin(const mg_arena *a, int64_t v, int64_t n, int64_t *off) {
    if (n < 1) return MG_ERR_ARG;
    return mg_vec_check(a, v, n, off);
}

// the n entries just written past vcount become a vec; its handle
static int64_t vec_commit(mg_arena *a, int64_t n) {
    int64_t off = a->vcount;
    a->vcount += n;
    return off | (a->generation << 32);
}

// the seed's sum(u_j * v_j for j): p0 = u0*v0, s = p0 + 0 (the seed's constant), s = s + u_j*v_j
static int64_t dot_chain(mg_arena *a, const int64_t *u, const int64_t *v, int64_t n) {
    int64_t s = nd_addc(a, nd_mul(a, u[0], v[0]), 0.0);
    for (int64_t j = 1; j < n; j++) s = nd_add(a, s, nd_mul(a, u[j], v[j]));
    return s;
}

// the same sum as one DOT node: children (w0, x0, w1, x1, ...), each with the local gradient its
// product node would give it; the value rounded exactly as the chain rounds it
static int64_t dot_fused(mg_arena *a, const int64_t *w, const int64_t *x, int64_t n) {
    const double *d = a->data;
    int64_t i = a->count, e = a->nedges;
    double acc = d[w[0]] * d[x[0]] + 0.0;
    for (int64_t j = 1; j < n; j++) acc = acc + d[w[j]] * d[x[j]];
    for (int64_t j = 0; j < n; j++, e += 2) {
        a->edge_child[e] = w[j];
        a->edge_lgrad[e] = d[x[j]];
        a->edge_child[e + 1] = x[j];
        a->edge_lgrad[e + 1] = d[w[j]];
    }
    a->data[i] = acc;
    a->grad[i] = 0.0;
    a->edge_begin[i + 1] = e;
    a->op[i] = MG_OP_DOT;
    a->count = i + 1;
    a->nedges = e;
    return i;
}

// The seed's softmax over the nodes xs[0..n-1]: e_i = exp(x_i + -max), total = sum(e), and
// out[i] = e_i * total**-1 with its own pow node per i. exps is scratch for n. If only >= 0,
// only out[only] is made (its siblings cannot reach a loss taken from it). 0 or an error code.
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

// --- elementwise

int64_t mg_k_add(mg_arena *a, int64_t x, int64_t y, int64_t n) {
    int64_t xo = 0, yo = 0;
    int rc = kin(a, x, n, &xo);
    if (!rc) rc = kin(a, y, n, &yo);
    if (!rc) rc = mg_arena_reserve(a, n, 2 * n, n, 0);
    if (rc) return rc;
    const int64_t *xs = a->vec_ids + xo, *ys = a->vec_ids + yo;
    int64_t *out = a->vec_ids + a->vcount;
    for (int64_t i = 0; i < n; i++) out[i] = nd_add(a, xs[i], ys[i]);
    return vec_commit(a, n);
}

int64_t mg_k_scale(mg_arena *a, int64_t x, int64_t n, double c) {
    int64_t xo = 0;
    int rc = kin(a, x, n, &xo);
    if (!rc) rc = mg_arena_reserve(a, n, n, n, 0);
    if (rc) return rc;
    const int64_t *xs = a->vec_ids + xo;
    int64_t *out = a->vec_ids + a->vcount;
    for (int64_t i = 0; i < n; i++) out[i] = nd_mulc(a, xs[i], c);
    return vec_commit(a, n);
}

int64_t mg_k_relu(mg_arena *a, int64_t x, int64_t n) {
    int64_t xo = 0;
    int rc = kin(a, x, n, &xo);
    if (!rc) rc = mg_arena_reserve(a, n, n, n, 0);
    if (rc) return rc;
    const int64_t *xs = a->vec_ids + xo;
    int64_t *out = a->vec_ids + a->vcount;
    for (int64_t i = 0; i < n; i++) out[i] = nd_relu(a, xs[i]);
    return vec_commit(a, n);
}

// --- linear, rmsnorm, softmax

// out_r = sum(w[r][j] * x[j] for j), w row-major nout x nin: the seed's linear()
int64_t mg_k_linear(mg_arena *a, int64_t x, int64_t nin, int64_t w, int64_t nout) {
    int64_t xo = 0, wo = 0;
    if (!a || nin < 1 || nout < 1 || nout > MG_IDX_LIMIT / nin) return MG_ERR_ARG;
    int64_t nodes = a->fused ? nout : 2 * nin * nout;
    int rc = kin(a, x, nin, &xo);
    if (!rc) rc = kin(a, w, nin * nout, &wo);
    if (!rc) rc = mg_arena_reserve(a, nodes, a->fused ? 2 * nin * nout : 2 * nodes, nout, 0);
    if (rc) return rc;
    const int64_t *xs = a->vec_ids + xo, *ws = a->vec_ids + wo;
    int64_t *out = a->vec_ids + a->vcount;
    for (int64_t r = 0; r < nout; r++)
        out[r] = a->fused ? dot_fused(a, ws + r * nin, xs, nin) : dot_chain(a, ws + r * nin, xs, nin);
    return vec_commit(a, nout);
}

// ms = sum(x_i * x_i) * n**-1; scale = (ms + 1e-5)**-0.5; out_i = x_i * scale
int64_t mg_k_rmsnorm(mg_arena *a, int64_t x, int64_t n) {
    int64_t xo = 0;
    int rc = kin(a, x, n, &xo);
    if (!rc) rc = mg_arena_reserve(a, 3 * n + 3, 2 * (3 * n + 3), n, 0);
    if (rc) return rc;
    kmark m = kbegin(a);
    int err = 0;
    double inv_n = py_pow((double)n, -1.0, &err);   // the seed's len(x)**-1, a Python float
    if (err) return err;
    const int64_t *xs = a->vec_ids + xo;
    int64_t ms = nd_mulc(a, dot_chain(a, xs, xs, n), inv_n);
    int64_t scale = nd_pow(a, nd_addc(a, ms, 1e-5), -0.5);
    if (scale < 0) return kfail(a, m, scale);
    int64_t *out = a->vec_ids + a->vcount;
    for (int64_t i = 0; i < n; i++) out[i] = nd_mul(a, xs[i], scale);
    return vec_commit(a, n);
}

int64_t mg_k_softmax(mg_arena *a, int64_t x, int64_t n) {
    int64_t xo = 0;
    int rc = kin(a, x, n, &xo);
    if (!rc) rc = mg_arena_reserve(a, 5 * n, 10 * n, n, n);
    if (rc) return rc;
    kmark m = kbegin(a);
    rc = softmax_nodes(a, a->vec_ids + xo, n, a->tmp, a->vec_ids + a->vcount, -1);
    if (rc) return kfail(a, m, rc);
    return vec_commit(a, n);
}

// --- attention

// One head at one position: logit_s = sum(q_j * k_s[j]) * (hd**0.5)**-1, w = softmax(logits),
// out_j = sum(w_s * v_s[j] for s). keys[s], values[s]: vec handles of hd elements each.
int64_t mg_k_attention_head(mg_arena *a, int64_t q, const int64_t *keys, const int64_t *values,
                            int64_t t, int64_t head_dim) {
    int64_t qo = 0, hd = head_dim;
    if (!a || !keys || !values || t < 1 || hd < 1 || t > MG_IDX_LIMIT || hd > MG_IDX_LIMIT)
        return MG_ERR_ARG;
    if ((double)t * (4.0 * (double)hd + 6.0) > (double)MG_IDX_LIMIT) return MG_ERR_NOMEM;
    int64_t nodes = t * (4 * hd + 6);            // dots t*(2hd+1), softmax 5t, outputs 2*hd*t
    int rc = kin(a, q, hd, &qo);
    if (!rc) rc = mg_arena_reserve(a, nodes, 2 * nodes, hd, 5 * t);
    if (rc) return rc;
    // scratch: offsets of the keys and values, then the logit, exp and weight nodes
    int64_t *koff = a->tmp, *voff = koff + t, *logits = voff + t, *exps = logits + t, *wts = exps + t;
    for (int64_t s = 0; s < t; s++) {
        if ((rc = kin(a, keys[s], hd, &koff[s]))) return rc;
        if ((rc = kin(a, values[s], hd, &voff[s]))) return rc;
    }
    int err = 0;
    double c = py_pow(py_pow((double)hd, 0.5, &err), -1.0, &err);   // the seed's / head_dim**0.5
    if (err) return err;
    kmark m = kbegin(a);
    const int64_t *ids = a->vec_ids, *qs = ids + qo;
    for (int64_t s = 0; s < t; s++) logits[s] = nd_mulc(a, dot_chain(a, qs, ids + koff[s], hd), c);
    if ((rc = softmax_nodes(a, logits, t, exps, wts, -1))) return kfail(a, m, rc);
    int64_t *out = a->vec_ids + a->vcount;
    for (int64_t j = 0; j < hd; j++) {
        int64_t acc = nd_addc(a, nd_mul(a, wts[0], ids[voff[0] + j]), 0.0);
        for (int64_t s = 1; s < t; s++) acc = nd_add(a, acc, nd_mul(a, wts[s], ids[voff[s] + j]));
        out[j] = acc;
    }
    return vec_commit(a, hd);
}

// --- loss

// -log(softmax(logits)[target]): returns the loss node's handle
int64_t mg_k_cross_entropy(mg_arena *a, int64_t logits, int64_t n, int64_t target) {
    int64_t lo = 0;
    int rc = kin(a, logits, n, &lo);
    if (!rc && (target < 0 || target >= n)) rc = MG_ERR_ARG;
    if (!rc) rc = mg_arena_reserve(a, 5 * n + 2, 2 * (5 * n + 2), 0, 2 * n);
    if (rc) return rc;
    kmark m = kbegin(a);
    int64_t *exps = a->tmp, *probs = exps + n;
    rc = softmax_nodes(a, a->vec_ids + lo, n, exps, probs, a->fused ? target : -1);
    if (rc) return kfail(a, m, rc);
    int64_t l = nd_log(a, probs[target]);
    if (l < 0) return kfail(a, m, l);
    return mg_handle_of(a, nd_mulc(a, l, -1.0));
}

// (1/n) * sum(nodes): returns the node's handle
int64_t mg_k_mean(mg_arena *a, const int64_t *nodes, int64_t n) {
    if (!a || !nodes || n < 1 || n > MG_IDX_LIMIT) return MG_ERR_ARG;
    int rc = mg_arena_reserve(a, n + 1, 2 * n + 2, 0, n);
    if (rc) return rc;
    int64_t *ids = a->tmp;
    for (int64_t k = 0; k < n; k++)
        if ((rc = mg_node_check(a, nodes[k], &ids[k]))) return rc;
    int64_t s = nd_addc(a, ids[0], 0.0);
    for (int64_t k = 1; k < n; k++) s = nd_add(a, s, ids[k]);
    return mg_handle_of(a, nd_mulc(a, s, 1.0 / (double)n));
}
