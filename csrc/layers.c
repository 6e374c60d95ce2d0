/*
 * layers.c -- the exported layer calls (mg_k_*): each counts itself, turns handles into raw
 * offsets (every handle checked before any array is read), runs the kernel body (kernels.c),
 * records the call when it is given a recording tape (tape.c), and returns the result as a
 * handle.
 *
 * Not here: the layers' arithmetic (kernels.c) and what a recording becomes (tape.c).
 */
#include <stdint.h>
#include "microgpt.h"
#include "arena.h"
#include "kernels.h"
#include "tape.h"

// an input vec of n >= 1 elements: its offset
static int input_vec(const mg_arena *a, int64_t v, int64_t n, int64_t *off) {
    if (n < 1) return MG_ERR_ARG;
    return mgi_vec_check(a, v, n, off);
}

// a call refused or failed: a recording cannot contain it
static int64_t refused(mg_tape *t, int64_t rc) {
    if (t) mgi_tape_spoil(t);
    return rc;
}

// Run a body: check the tape first (before the body changes the counts), then record the call
// with what the body returned. in.base is the first node the body makes.
#define RUN(a, t, in, body, list, nlist) do {                                   \
        int ready_ = (t) && mgi_tape_ready((t), (a));                           \
        (in).base = (a)->count;                                                 \
        int64_t r_ = (body);                                                    \
        if (r_ < 0) return refused((t), r_);                                    \
        (in).out = r_;                                                          \
        if (ready_) mgi_tape_record((t), (a), (in), (list), (nlist));           \
        result = r_;                                                            \
    } while (0)

// the exported form of a body that maps one vec of n elements to a new one (relu, rmsnorm, softmax)
static int64_t vec_to_vec(mg_arena *a, mg_tape *t, int32_t op,
                          int64_t (*body)(mg_arena *, int64_t, int64_t), int64_t x, int64_t n, int fused) {
    mgi_count_call(a);
    int64_t xo = 0, result = 0;
    int rc = input_vec(a, x, n, &xo);
    if (rc) return refused(t, rc);
    mg_instr in = { .op = op, .k.unary = { .x = xo, .n = n, .fused = fused } };
    RUN(a, t, in, body(a, xo, n), NULL, 0);
    return mgi_vec_handle_of(a, result);
}

int64_t mg_k_embed(mg_arena *a, mg_tape *t, int64_t wte, int64_t wte_rows, int64_t wpe,
                   int64_t wpe_rows, int64_t n_embd, int64_t token, int64_t pos) {
    mgi_count_call(a);
    int64_t to = 0, po = 0, n = n_embd, result = 0;
    if (!a || n < 1 || wte_rows < 1 || wpe_rows < 1) return refused(t, MG_ERR_ARG);
    if (wte_rows > MG_IDX_LIMIT / n || wpe_rows > MG_IDX_LIMIT / n) return refused(t, MG_ERR_ARG);
    if (token < 0 || token >= wte_rows || pos < 0 || pos >= wpe_rows) return refused(t, MG_ERR_ARG);
    int rc = input_vec(a, wte, wte_rows * n, &to);
    if (!rc) rc = input_vec(a, wpe, wpe_rows * n, &po);
    if (rc) return refused(t, rc);
    mg_instr in = { .op = MG_T_EMBED, .k.embed = { .wte = to, .wte_rows = wte_rows, .wpe = po,
                    .wpe_rows = wpe_rows, .n_embd = n, .pos = pos, .token = token } };
    RUN(a, t, in, mgi_k_embed(a, to, po, n, token, pos), NULL, 0);
    return mgi_vec_handle_of(a, result);
}

int64_t mg_k_add(mg_arena *a, mg_tape *t, int64_t x, int64_t y, int64_t n) {
    mgi_count_call(a);
    int64_t xo = 0, yo = 0, result = 0;
    int rc = input_vec(a, x, n, &xo);
    if (!rc) rc = input_vec(a, y, n, &yo);
    if (rc) return refused(t, rc);
    mg_instr in = { .op = MG_T_ADD, .k.add = { .x = xo, .y = yo, .n = n } };
    RUN(a, t, in, mgi_k_add(a, xo, yo, n), NULL, 0);
    return mgi_vec_handle_of(a, result);
}

int64_t mg_k_scale(mg_arena *a, mg_tape *t, int64_t x, int64_t n, double c) {
    mgi_count_call(a);
    int64_t xo = 0, result = 0;
    int rc = input_vec(a, x, n, &xo);
    if (rc) return refused(t, rc);
    mg_instr in = { .op = MG_T_SCALE, .k.scale = { .x = xo, .n = n, .c = c } };
    RUN(a, t, in, mgi_k_scale(a, xo, n, c), NULL, 0);
    return mgi_vec_handle_of(a, result);
}

int64_t mg_k_relu(mg_arena *a, mg_tape *t, int64_t x, int64_t n) {
    return vec_to_vec(a, t, MG_T_RELU, mgi_k_relu, x, n, 0);
}

int64_t mg_k_rmsnorm(mg_arena *a, mg_tape *t, int64_t x, int64_t n, int fused) {
    return vec_to_vec(a, t, MG_T_RMSNORM, fused ? mgi_k_rmsnorm_fused : mgi_k_rmsnorm, x, n, fused != 0);
}

int64_t mg_k_softmax(mg_arena *a, mg_tape *t, int64_t x, int64_t n) {
    return vec_to_vec(a, t, MG_T_SOFTMAX, mgi_k_softmax, x, n, 0);
}

int64_t mg_k_linear(mg_arena *a, mg_tape *t, int64_t x, int64_t nin, int64_t w, int64_t nout,
                    int fused) {
    mgi_count_call(a);
    int64_t xo = 0, wo = 0, result = 0;
    if (!a || nin < 1 || nout < 1 || nout > MG_IDX_LIMIT / nin) return refused(t, MG_ERR_ARG);
    int rc = input_vec(a, x, nin, &xo);
    if (!rc) rc = input_vec(a, w, nin * nout, &wo);
    if (rc) return refused(t, rc);
    mg_instr in = { .op = MG_T_LINEAR, .k.linear = { .x = xo, .nin = nin, .w = wo, .nout = nout,
                    .fused = fused != 0 } };
    RUN(a, t, in, mgi_k_linear(a, xo, nin, wo, nout, fused != 0), NULL, 0);
    return mgi_vec_handle_of(a, result);
}

// the key and value offsets go in a->scratch past the body's own scratch (3t)
int64_t mg_k_attention(mg_arena *a, mg_tape *t, int64_t q, const int64_t *keys,
                       const int64_t *values, int64_t nt, int64_t n_head, int64_t head_dim, int fused) {
    mgi_count_call(a);
    int64_t qo = 0, hd = head_dim, result = 0;
    if (!a || !keys || !values || nt < 1 || hd < 1 || n_head < 1 || nt > MG_IDX_LIMIT / 5 ||
        hd > MG_IDX_LIMIT || n_head > MG_IDX_LIMIT / hd)
        return refused(t, MG_ERR_ARG);
    int64_t n = n_head * hd;
    int rc = input_vec(a, q, n, &qo);
    if (!rc) rc = mgi_reserve(a, 0, 0, 0, 5 * nt);
    if (rc) return refused(t, rc);
    int64_t *koff = a->scratch + 3 * nt, *voff = koff + nt;
    for (int64_t s = 0; s < nt; s++) {
        if ((rc = input_vec(a, keys[s], n, &koff[s]))) return refused(t, rc);
        if ((rc = input_vec(a, values[s], n, &voff[s]))) return refused(t, rc);
    }
    mg_instr in = { .op = MG_T_ATTENTION, .k.attention = { .q = qo, .t = nt, .n_head = n_head,
                    .head_dim = hd, .fused = fused != 0 } };
    RUN(a, t, in, mgi_k_attention(a, qo, koff, voff, nt, n_head, hd, fused != 0), koff, 2 * nt);
    return mgi_vec_handle_of(a, result);
}

int64_t mg_k_cross_entropy(mg_arena *a, mg_tape *t, int64_t logits, int64_t n, int64_t target,
                           int fused) {
    mgi_count_call(a);
    int64_t lo = 0, result = 0;
    int rc = input_vec(a, logits, n, &lo);
    if (!rc && (target < 0 || target >= n)) rc = MG_ERR_ARG;
    if (rc) return refused(t, rc);
    mg_instr in = { .op = MG_T_CROSS_ENTROPY, .k.cross_entropy = { .logits = lo, .n = n,
                    .target = target, .fused = fused != 0 } };
    RUN(a, t, in, mgi_k_cross_entropy(a, lo, n, target, fused != 0), NULL, 0);
    return mgi_handle_of(a, result);
}

int64_t mg_k_mean(mg_arena *a, mg_tape *t, const int64_t *nodes, int64_t n) {
    mgi_count_call(a);
    int64_t result = 0;
    if (!a || !nodes || n < 1 || n > MG_IDX_LIMIT) return refused(t, MG_ERR_ARG);
    int rc = mgi_reserve(a, 0, 0, 0, n);
    if (rc) return refused(t, rc);
    int64_t *ids = a->scratch;
    for (int64_t k = 0; k < n; k++)
        if ((rc = mgi_node_check(a, nodes[k], &ids[k]))) return refused(t, rc);
    mg_instr in = { .op = MG_T_MEAN, .k.mean = { .n = n } };
    RUN(a, t, in, mgi_k_mean(a, ids, n), ids, n);
    return mgi_handle_of(a, result);
}
