/*
 * kernels.c -- microgpt's layers, one C call each: every kernel builds exactly the scalar nodes
 * the seed's Python builds for that layer (same ops, same children in the same order, made in
 * the same order), so values and gradients are bit-identical to the Python backend.
 *
 * Each kernel comes in two layers. The body, mgi_k_*, takes raw vec offsets and node indices that
 * its caller has validated, reserves room for everything it will make, then calls the unchecked
 * node constructors of internal.h; one that fails part way (a math error) drops what it made and
 * returns the error code. The exported mg_k_* counts the call, turns handles into offsets (every
 * handle is checked before any array is read), runs the body, appends the call to the tape when
 * one is being recorded (tape.c), and turns the result back into a handle. A replay (tape.c)
 * calls the bodies directly.
 *
 * One deliberate difference in fused mode (mg_arena_set_fused): a linear layer's output element
 * is a single DOT node instead of the seed's chain of products and sums. Its value and its
 * backward reproduce the chain's roundings exactly (shared/PARITY.md, "Fewer nodes, same bits").
 *
 * Not here: anything else about the model (which layers, in which order: that is Python's),
 * no fusing beyond linear layers, and no recording logic (tape.c).
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

// the n entries just written past vcount become a vec; its offset
static int64_t vec_commit(mg_arena *a, int64_t n) {
    int64_t off = a->vcount;
    a->vcount += n;
    return off;
}

// the seed's sum(u_j * v_j for j): p0 = u0*v0, s = p0 + 0 (the seed's constant), s = s + u_j*v_j
static int64_t dot_chain(mg_arena *a, const int64_t *u, const int64_t *v, int64_t n) {
    int64_t s = nd_addc(a, nd_mul(a, u[0], v[0]), 0.0);
    for (int64_t j = 1; j < n; j++) s = nd_add(a, s, nd_mul(a, u[j], v[j]));
    return s;
}

// the same sum as one DOT node: children (w0, x0, w1, x1, ...), the value rounded exactly as
// the chain rounds it. Each child's local gradient, the value of its partner, is not stored:
// backward reads it from data (writing it was a quarter of a replayed step's forward)
static int64_t dot_fused(mg_arena *a, const int64_t *w, const int64_t *x, int64_t n) {
    const double *d = a->data;
    int64_t i = a->count, e = a->nedges;
    double acc = d[w[0]] * d[x[0]] + 0.0;
    for (int64_t j = 1; j < n; j++) acc = acc + d[w[j]] * d[x[j]];
    for (int64_t j = 0; j < n; j++, e += 2) {
        a->edge_child[e] = w[j];
        a->edge_child[e + 1] = x[j];
    }
    a->step_dots++;
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

// --- kernel bodies: raw offsets in, raw offset or node index out

// out_i = wte[token][i] + wpe[pos][i]: the seed's tok_emb + pos_emb, node for node
int64_t mgi_k_embed(mg_arena *a, int64_t wte, int64_t wpe, int64_t n, int64_t token, int64_t pos) {
    int rc = mg_arena_reserve(a, n, 2 * n, n, 0);
    if (rc) return rc;
    const int64_t *ts = a->vec_ids + wte + token * n, *ps = a->vec_ids + wpe + pos * n;
    int64_t *out = a->vec_ids + a->vcount;
    for (int64_t i = 0; i < n; i++) out[i] = nd_add(a, ts[i], ps[i]);
    return vec_commit(a, n);
}

int64_t mgi_k_add(mg_arena *a, int64_t x, int64_t y, int64_t n) {
    int rc = mg_arena_reserve(a, n, 2 * n, n, 0);
    if (rc) return rc;
    const int64_t *xs = a->vec_ids + x, *ys = a->vec_ids + y;
    int64_t *out = a->vec_ids + a->vcount;
    for (int64_t i = 0; i < n; i++) out[i] = nd_add(a, xs[i], ys[i]);
    return vec_commit(a, n);
}

int64_t mgi_k_scale(mg_arena *a, int64_t x, int64_t n, double c) {
    int rc = mg_arena_reserve(a, n, n, n, 0);
    if (rc) return rc;
    const int64_t *xs = a->vec_ids + x;
    int64_t *out = a->vec_ids + a->vcount;
    for (int64_t i = 0; i < n; i++) out[i] = nd_mulc(a, xs[i], c);
    return vec_commit(a, n);
}

int64_t mgi_k_relu(mg_arena *a, int64_t x, int64_t n) {
    int rc = mg_arena_reserve(a, n, n, n, 0);
    if (rc) return rc;
    const int64_t *xs = a->vec_ids + x;
    int64_t *out = a->vec_ids + a->vcount;
    for (int64_t i = 0; i < n; i++) out[i] = nd_relu(a, xs[i]);
    return vec_commit(a, n);
}

// out_r = sum(w[r][j] * x[j] for j), w row-major nout x nin: the seed's linear()
int64_t mgi_k_linear(mg_arena *a, int64_t x, int64_t nin, int64_t w, int64_t nout, int fused) {
    int64_t nodes = fused ? nout : 2 * nin * nout;
    int rc = mg_arena_reserve(a, nodes, fused ? 2 * nin * nout : 2 * nodes, nout, 0);
    if (rc) return rc;
    const int64_t *xs = a->vec_ids + x, *ws = a->vec_ids + w;
    int64_t *out = a->vec_ids + a->vcount;
    for (int64_t r = 0; r < nout; r++)
        out[r] = fused ? dot_fused(a, ws + r * nin, xs, nin) : dot_chain(a, ws + r * nin, xs, nin);
    return vec_commit(a, nout);
}

// ms = sum(x_i * x_i) * n**-1; scale = (ms + 1e-5)**-0.5; out_i = x_i * scale
int64_t mgi_k_rmsnorm(mg_arena *a, int64_t x, int64_t n) {
    int rc = mg_arena_reserve(a, 3 * n + 3, 2 * (3 * n + 3), n, 0);
    if (rc) return rc;
    kmark m = kbegin(a);
    int err = 0;
    double inv_n = py_pow((double)n, -1.0, &err);   // the seed's len(x)**-1, a Python float
    if (err) return err;
    const int64_t *xs = a->vec_ids + x;
    int64_t ms = nd_mulc(a, dot_chain(a, xs, xs, n), inv_n);
    int64_t scale = nd_pow(a, nd_addc(a, ms, 1e-5), -0.5);
    if (scale < 0) return kfail(a, m, scale);
    int64_t *out = a->vec_ids + a->vcount;
    for (int64_t i = 0; i < n; i++) out[i] = nd_mul(a, xs[i], scale);
    return vec_commit(a, n);
}

int64_t mgi_k_softmax(mg_arena *a, int64_t x, int64_t n) {
    int rc = mg_arena_reserve(a, 5 * n, 10 * n, n, n);
    if (rc) return rc;
    kmark m = kbegin(a);
    rc = softmax_nodes(a, a->vec_ids + x, n, a->tmp, a->vec_ids + a->vcount, -1);
    if (rc) return kfail(a, m, rc);
    return vec_commit(a, n);
}

// Every head at one position, head h after head h-1, each exactly the seed's attention_head on
// the h-th slice (hs = h * hd): logit_s = sum(q[hs+j] * k_s[hs+j] for j) * (hd**0.5)**-1,
// w = softmax(logits), out[hs+j] = sum(w_s * v_s[hs+j] for s). keys[s], values[s]: offsets of
// vecs of n_head*hd elements. The output is one vec, the heads' outputs concatenated.
int64_t mgi_k_attention(mg_arena *a, int64_t q, const int64_t *keys, const int64_t *values,
                        int64_t t, int64_t n_head, int64_t head_dim) {
    int64_t hd = head_dim, n = n_head * hd;
    if ((double)n_head * (double)t * (4.0 * (double)hd + 6.0) > (double)MG_IDX_LIMIT) return MG_ERR_NOMEM;
    int64_t nodes = n_head * t * (4 * hd + 6);   // per head: dots t*(2hd+1), softmax 5t, outputs 2*hd*t
    int rc = mg_arena_reserve(a, nodes, 2 * nodes, n, 3 * t);
    if (rc) return rc;
    int err = 0;
    double c = py_pow(py_pow((double)hd, 0.5, &err), -1.0, &err);   // the seed's / head_dim**0.5
    if (err) return err;
    kmark m = kbegin(a);
    int64_t *logits = a->tmp, *exps = logits + t, *wts = exps + t;   // scratch, reused by each head
    const int64_t *ids = a->vec_ids;
    int64_t *out = a->vec_ids + a->vcount;
    for (int64_t hs = 0; hs < n; hs += hd) {
        const int64_t *qs = ids + q + hs;
        for (int64_t s = 0; s < t; s++) logits[s] = nd_mulc(a, dot_chain(a, qs, ids + keys[s] + hs, hd), c);
        if ((rc = softmax_nodes(a, logits, t, exps, wts, -1))) return kfail(a, m, rc);
        for (int64_t j = hs; j < hs + hd; j++) {
            int64_t acc = nd_addc(a, nd_mul(a, wts[0], ids[values[0] + j]), 0.0);
            for (int64_t s = 1; s < t; s++) acc = nd_add(a, acc, nd_mul(a, wts[s], ids[values[s] + j]));
            out[j] = acc;
        }
    }
    return vec_commit(a, n);
}

// -log(softmax(logits)[target]): the loss node. Fused, only the target's probability is made
// (its siblings cannot reach the loss). Node layout, from the first node made (tape.c's cached
// order depends on it): per logit i the pair (x_i + -max, exp) at 2i and 2i+1; the running
// total at 2n .. 3n-1; fused: total**-1, the probability, log, * -1 at 3n .. 3n+3.
int64_t mgi_k_cross_entropy(mg_arena *a, int64_t logits, int64_t n, int64_t target, int fused) {
    int rc = mg_arena_reserve(a, 5 * n + 2, 2 * (5 * n + 2), 0, 2 * n);
    if (rc) return rc;
    kmark m = kbegin(a);
    int64_t *exps = a->tmp, *probs = exps + n;
    rc = softmax_nodes(a, a->vec_ids + logits, n, exps, probs, fused ? target : -1);
    if (rc) return kfail(a, m, rc);
    int64_t l = nd_log(a, probs[target]);
    if (l < 0) return kfail(a, m, l);
    return nd_mulc(a, l, -1.0);
}

// (1/n) * sum(nodes): the node
int64_t mgi_k_mean(mg_arena *a, const int64_t *nodes, int64_t n) {
    int rc = mg_arena_reserve(a, n + 1, 2 * n + 2, 0, 0);
    if (rc) return rc;
    int64_t s = nd_addc(a, nodes[0], 0.0);
    for (int64_t k = 1; k < n; k++) s = nd_add(a, s, nodes[k]);
    return nd_mulc(a, s, 1.0 / (double)n);
}

// --- the exported kernels: handles in, body, record, handle out

// a kernel call that failed: a tape being recorded cannot contain it
static int64_t kerr(mg_arena *a, int64_t rc) {
    if (a) a->tape_ok = 0;
    return rc;
}

// a body's result: recorded if a tape is running, and returned as a vec handle
static int64_t kvec(mg_arena *a, int64_t r, mg_instr in, const int64_t *list, int64_t nlist) {
    if (r < 0) return kerr(a, r);
    if (a->recording) {
        in.out = r;
        mgi_tape_record(a, in, list, nlist);
    }
    return r | (a->generation << 32);
}

// the same for a body that makes a node
static int64_t knode(mg_arena *a, int64_t r, mg_instr in, const int64_t *list, int64_t nlist) {
    if (r < 0) return kerr(a, r);
    if (a->recording) {
        in.out = r;
        mgi_tape_record(a, in, list, nlist);
    }
    return mg_handle_of(a, r);
}

// the exported form of a body that maps one vec of n elements to a new one (relu, rmsnorm, softmax)
static int64_t vec_to_vec(mg_arena *a, int32_t op, int64_t (*body)(mg_arena *, int64_t, int64_t),
                          int64_t x, int64_t n) {
    mg_count(a);
    int64_t xo = 0;
    int rc = kin(a, x, n, &xo);
    if (rc) return kerr(a, rc);
    mg_instr in = { .op = op, .x = xo, .n = n, .base = a->count };
    return kvec(a, body(a, xo, n), in, NULL, 0);
}

int64_t mg_k_embed(mg_arena *a, int64_t wte, int64_t wte_rows, int64_t wpe, int64_t wpe_rows,
                   int64_t n_embd, int64_t token, int64_t pos) {
    mg_count(a);
    int64_t to = 0, po = 0, n = n_embd;
    if (!a || n < 1 || wte_rows < 1 || wpe_rows < 1) return kerr(a, MG_ERR_ARG);
    if (wte_rows > MG_IDX_LIMIT / n || wpe_rows > MG_IDX_LIMIT / n) return kerr(a, MG_ERR_ARG);
    if (token < 0 || token >= wte_rows || pos < 0 || pos >= wpe_rows) return kerr(a, MG_ERR_ARG);
    int rc = kin(a, wte, wte_rows * n, &to);
    if (!rc) rc = kin(a, wpe, wpe_rows * n, &po);
    if (rc) return kerr(a, rc);
    mg_instr in = { .op = MG_T_EMBED, .x = to, .y = po, .n = n, .m = wte_rows, .k = wpe_rows,
                    .index = pos, .token = token, .base = a->count };
    return kvec(a, mgi_k_embed(a, to, po, n, token, pos), in, NULL, 0);
}

int64_t mg_k_add(mg_arena *a, int64_t x, int64_t y, int64_t n) {
    mg_count(a);
    int64_t xo = 0, yo = 0;
    int rc = kin(a, x, n, &xo);
    if (!rc) rc = kin(a, y, n, &yo);
    if (rc) return kerr(a, rc);
    mg_instr in = { .op = MG_T_ADD, .x = xo, .y = yo, .n = n, .base = a->count };
    return kvec(a, mgi_k_add(a, xo, yo, n), in, NULL, 0);
}

int64_t mg_k_scale(mg_arena *a, int64_t x, int64_t n, double c) {
    mg_count(a);
    int64_t xo = 0;
    int rc = kin(a, x, n, &xo);
    if (rc) return kerr(a, rc);
    mg_instr in = { .op = MG_T_SCALE, .x = xo, .n = n, .c = c, .base = a->count };
    return kvec(a, mgi_k_scale(a, xo, n, c), in, NULL, 0);
}

int64_t mg_k_relu(mg_arena *a, int64_t x, int64_t n) {
    return vec_to_vec(a, MG_T_RELU, mgi_k_relu, x, n);
}

int64_t mg_k_linear(mg_arena *a, int64_t x, int64_t nin, int64_t w, int64_t nout) {
    mg_count(a);
    int64_t xo = 0, wo = 0;
    if (!a || nin < 1 || nout < 1 || nout > MG_IDX_LIMIT / nin) return kerr(a, MG_ERR_ARG);
    int rc = kin(a, x, nin, &xo);
    if (!rc) rc = kin(a, w, nin * nout, &wo);
    if (rc) return kerr(a, rc);
    mg_instr in = { .op = MG_T_LINEAR, .fused = a->fused, .x = xo, .y = wo, .n = nin, .m = nout,
                    .base = a->count };
    return kvec(a, mgi_k_linear(a, xo, nin, wo, nout, a->fused), in, NULL, 0);
}

int64_t mg_k_rmsnorm(mg_arena *a, int64_t x, int64_t n) {
    return vec_to_vec(a, MG_T_RMSNORM, mgi_k_rmsnorm, x, n);
}

int64_t mg_k_softmax(mg_arena *a, int64_t x, int64_t n) {
    return vec_to_vec(a, MG_T_SOFTMAX, mgi_k_softmax, x, n);
}

// both attention kernels: validate, put the key and value offsets in a->tmp past the body's
// scratch (3t), run the body, record
static int64_t attention(mg_arena *a, int64_t q, const int64_t *keys, const int64_t *values,
                         int64_t t, int64_t n_head, int64_t head_dim) {
    int64_t qo = 0, hd = head_dim;
    if (!a || !keys || !values || t < 1 || hd < 1 || n_head < 1 || t > MG_IDX_LIMIT / 5 ||
        hd > MG_IDX_LIMIT || n_head > MG_IDX_LIMIT / hd)
        return kerr(a, MG_ERR_ARG);
    int64_t n = n_head * hd;
    int rc = kin(a, q, n, &qo);
    if (!rc) rc = mg_arena_reserve(a, 0, 0, 0, 5 * t);
    if (rc) return kerr(a, rc);
    int64_t *koff = a->tmp + 3 * t, *voff = koff + t;
    for (int64_t s = 0; s < t; s++) {
        if ((rc = kin(a, keys[s], n, &koff[s]))) return kerr(a, rc);
        if ((rc = kin(a, values[s], n, &voff[s]))) return kerr(a, rc);
    }
    mg_instr in = { .op = MG_T_ATTENTION, .x = qo, .n = t, .m = n_head, .k = hd, .base = a->count };
    return kvec(a, mgi_k_attention(a, qo, koff, voff, t, n_head, hd), in, koff, 2 * t);
}

int64_t mg_k_attention_head(mg_arena *a, int64_t q, const int64_t *keys, const int64_t *values,
                            int64_t t, int64_t head_dim) {
    mg_count(a);
    return attention(a, q, keys, values, t, 1, head_dim);
}

int64_t mg_k_attention(mg_arena *a, int64_t q, const int64_t *keys, const int64_t *values,
                       int64_t t, int64_t n_head, int64_t head_dim) {
    mg_count(a);
    return attention(a, q, keys, values, t, n_head, head_dim);
}

int64_t mg_k_cross_entropy(mg_arena *a, int64_t logits, int64_t n, int64_t target) {
    mg_count(a);
    int64_t lo = 0;
    int rc = kin(a, logits, n, &lo);
    if (!rc && (target < 0 || target >= n)) rc = MG_ERR_ARG;
    if (rc) return kerr(a, rc);
    mg_instr in = { .op = MG_T_CROSS_ENTROPY, .fused = a->fused, .x = lo, .n = n, .token = target,
                    .base = a->count };
    return knode(a, mgi_k_cross_entropy(a, lo, n, target, a->fused), in, NULL, 0);
}

int64_t mg_k_mean(mg_arena *a, const int64_t *nodes, int64_t n) {
    mg_count(a);
    if (!a || !nodes || n < 1 || n > MG_IDX_LIMIT) return kerr(a, MG_ERR_ARG);
    int rc = mg_arena_reserve(a, 0, 0, 0, n);
    if (rc) return kerr(a, rc);
    int64_t *ids = a->tmp;
    for (int64_t k = 0; k < n; k++)
        if ((rc = mg_node_check(a, nodes[k], &ids[k]))) return kerr(a, rc);
    mg_instr in = { .op = MG_T_MEAN, .n = n, .base = a->count };
    return knode(a, mgi_k_mean(a, ids, n), in, ids, n);
}
