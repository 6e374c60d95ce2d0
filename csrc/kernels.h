/*
 * kernels.h -- the layer kernels' bodies (kernels.c), for the exported calls (layers.c) and the
 * tape's replay (tape.c). They take raw vec offsets and node indices that the caller has
 * validated, reserve their own room, and return a vec offset or a node index, or an MG_ERR_*
 * code with nothing made. Include after "arena.h".
 */
#ifndef MG_KERNELS_H
#define MG_KERNELS_H

int64_t mgi_k_embed(mg_arena *a, int64_t wte, int64_t wpe, int64_t n, int64_t token, int64_t pos);
int64_t mgi_k_add(mg_arena *a, int64_t x, int64_t y, int64_t n);
int64_t mgi_k_scale(mg_arena *a, int64_t x, int64_t n, double c);
int64_t mgi_k_relu(mg_arena *a, int64_t x, int64_t n);
int64_t mgi_k_linear(mg_arena *a, int64_t x, int64_t nin, int64_t w, int64_t nout, int fused);
int64_t mgi_k_rmsnorm(mg_arena *a, int64_t x, int64_t n);
int64_t mgi_k_rmsnorm_fused(mg_arena *a, int64_t x, int64_t n);   // its sum of squares one DOT node
int64_t mgi_k_softmax(mg_arena *a, int64_t x, int64_t n);
// keys, values: t vec offsets each; they may sit in a->scratch past 3*t entries (the scratch used)
int64_t mgi_k_attention(mg_arena *a, int64_t q, const int64_t *keys, const int64_t *values,
                        int64_t t, int64_t n_head, int64_t head_dim, int fused);
int64_t mgi_k_cross_entropy(mg_arena *a, int64_t logits, int64_t n, int64_t target, int fused);
int64_t mgi_k_mean(mg_arena *a, const int64_t *nodes, int64_t n);   // nodes: indices (may be in a->scratch)

// How the seed's depth-first search lists a fused cross-entropy over n logits: one stretch of
// MGI_CE_ORDER_LEN(n) entries that ends with its loss node, and holds its own nodes and its
// logits, in an order that depends on the target. Written to dst for that target; base is the
// first node the call made, logits the input vec's offset. (tape.c says where the stretch sits.)
#define MGI_CE_ORDER_LEN(n) (4 * (n) + 4)
void mgi_k_cross_entropy_order(const mg_arena *a, int64_t logits, int64_t n, int64_t base,
                               int64_t target, mgi_id *dst);

#endif
