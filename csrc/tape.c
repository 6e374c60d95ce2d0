/*
 * tape.c -- a training step's kernel calls, recorded once per document length and replayed in C.
 *
 * The graph of a training step depends on the document only through its length n: the tokens
 * choose which embedding rows are read and which probability each cross-entropy takes the log
 * of, nothing else. So the kernel calls of one step are recorded (mg_tape_begin .. mg_tape_end)
 * as instructions whose operands are raw vec offsets and node indices, and later steps of the
 * same length re-run them with new tokens (mg_tape_replay) without a single call from Python per
 * layer. The arena is deterministic: a replay that starts from the persistent counts makes every
 * node and vec at the offset the recording made it, which is checked after each instruction.
 *
 * A recording is kept as a program only if it is a function of the tokens: every embedding's
 * token is tokens[pos], the j-th cross-entropy's target is tokens[j+1], nothing but kernels made
 * or changed anything while recording (arena.c spoils the tape otherwise), and the loss is what
 * the last instruction, a mean, returned. What the tape cannot see is Python's control flow: a
 * model whose sequence of layers depends on token values must not be recorded.
 *
 * The cached topological order (mg_backward). The seed's depth-first search gives the order in
 * which gradients are accumulated, which decides their rounding; it is cached per program, and
 * a replay's backward skips the search. The order is NOT the same for every replay: it depends
 * on the cross-entropy targets (measured: two steps that differ in one target differ in order).
 * What the tokens change, exactly:
 *  - an embedding node's children are rows of wte and wpe: leaves (checked). The search marks
 *    leaves and never lists them, and a leaf's mark changes nothing else, so these don't matter.
 *  - a (fused) cross-entropy's probability node is mul(exp_t, total**-1) with t the target, a
 *    non-leaf child that depends on t. The search enters the step's forward graph through it:
 *    from exp_t to logit_t, and everything logit_t depends on that is not yet listed (F) is
 *    listed before logit_t. When every logit has the same non-leaf children in the same order
 *    (checked: the lm_head rows of a fused linear share the input vector; their weights are
 *    leaves), F is the same sequence whichever logit comes first, and the other logits then have
 *    nothing left to list but themselves. So the cross-entropy's part of the order is
 *        F, logit_t, its (x - max) and exp nodes,
 *        for each i in order: [logit_i, (x_i - max), exp_i unless i == t], running total_i,
 *        total**-1, probability, log, * -1
 *    and only the part after F depends on t, within a stretch of 4n + 4 entries (n logits).
 * Everything else in the graph is the same for every replay (same instructions, same operands),
 * and what the search lists before a cross-entropy is too (by induction over the
 * cross-entropies, in the order the search meets them). So the cached order is made exact for
 * new targets by rewriting each cross-entropy's stretch (ce_order). When the order is cached,
 * each stretch is checked against ce_order for the targets the search ran with; if anything
 * does not fit (unfused cross-entropy, logits with different non-leaf children, an embedding
 * of non-leaves, a stretch not where it should be) the program never caches and every
 * backward searches.
 *
 * Not here: the kernels themselves (kernels.c), the search and the chain rule (arena.c).
 */
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <math.h>
#include "microgpt.h"
#include "internal.h"

// --- recording

// append one kernel call (its list entries copied: list may be kernel scratch); no room spoils
// the tape, it never fails the kernel call
void mgi_tape_record(mg_arena *a, mg_instr in, const int64_t *list, int64_t nlist) {
    if (!a->tape_ok) return;
    mg_instr *t = mgi_grow(a, a->tape, &a->tape_cap, a->tlen + 1, sizeof *a->tape);
    if (!t) {
        a->tape_ok = 0;
        return;
    }
    a->tape = t;
    if (nlist > 0) {
        int64_t *l = mgi_grow(a, a->tape_list, &a->tlist_cap, a->tlist + nlist, sizeof *a->tape_list);
        if (!l) {
            a->tape_ok = 0;
            return;
        }
        a->tape_list = l;
        memcpy(l + a->tlist, list, (size_t)nlist * sizeof *l);
    }
    in.list = a->tlist;
    a->tlist += nlist;
    if (in.op == MG_T_CROSS_ENTROPY) in.index = a->tape_nce++;
    a->tape[a->tlen++] = in;
}

int mg_tape_begin(mg_arena *a) {
    mg_count(a);
    if (!a) return MG_ERR_ARG;
    if (a->count != a->keep || a->nedges != a->edges_keep || a->vcount != a->vkeep) return MG_ERR_ARG;
    a->recording = 1;
    a->tape_ok = 1;
    a->tlen = a->tlist = a->tape_nce = 0;
    return 0;
}

// the recorded tape is a function of these tokens (see the top of the file)
static int tape_fits_tokens(const mg_arena *a, const int64_t *tokens, int64_t ntokens) {
    for (int64_t i = 0; i < a->tlen; i++) {
        const mg_instr *in = &a->tape[i];
        if (in->op == MG_T_EMBED && (in->index >= ntokens || in->token != tokens[in->index])) return 0;
        if (in->op == MG_T_CROSS_ENTROPY &&
            (in->index + 1 >= ntokens || in->token != tokens[in->index + 1]))
            return 0;
    }
    return 1;
}

static void program_free(mg_arena *a, mg_program *p) {
    mgi_free(a, p->instr, p->ninstr, sizeof *p->instr);
    mgi_free(a, p->list, p->nlist, sizeof *p->list);
    mgi_free(a, p->tokens, p->ntokens, sizeof *p->tokens);
    mgi_free(a, p->ce_at, p->nce, sizeof *p->ce_at);
    mgi_free(a, p->topo, p->ntopo, sizeof *p->topo);
    memset(p, 0, sizeof *p);
}

int64_t mg_tape_end(mg_arena *a, const int64_t *tokens, int64_t ntokens, int64_t loss) {
    mg_count(a);
    if (!a || !a->recording) return MG_ERR_ARG;
    a->recording = 0;
    int64_t li = 0;
    if (!a->tape_ok || a->tlen == 0 || !tokens || ntokens < 1 || ntokens > MG_IDX_LIMIT) return MG_ERR_ARG;
    if (mg_node_check(a, loss, &li)) return MG_ERR_ARG;
    const mg_instr *last = &a->tape[a->tlen - 1];
    if (last->op != MG_T_MEAN || last->out != li || !tape_fits_tokens(a, tokens, ntokens)) return MG_ERR_ARG;

    mg_program *progs = mgi_grow(a, a->progs, &a->progs_cap, a->nprogs + 1, sizeof *a->progs);
    if (!progs) return MG_ERR_NOMEM;
    a->progs = progs;
    mg_program p = { .ninstr = a->tlen, .nlist = a->tlist, .ntokens = ntokens, .nce = a->tape_nce,
                     .keep = a->keep, .edges_keep = a->edges_keep, .vkeep = a->vkeep,
                     .count = a->count, .nedges = a->nedges, .vcount = a->vcount, .loss = li };
    p.instr = mgi_alloc(a, p.ninstr, sizeof *p.instr);
    p.list = mgi_alloc(a, p.nlist, sizeof *p.list);
    p.tokens = mgi_alloc(a, p.ntokens, sizeof *p.tokens);
    p.ce_at = mgi_alloc(a, p.nce, sizeof *p.ce_at);
    if (!p.instr || !p.list || !p.tokens || !p.ce_at) {
        program_free(a, &p);
        return MG_ERR_NOMEM;
    }
    memcpy(p.instr, a->tape, (size_t)p.ninstr * sizeof *p.instr);
    if (p.nlist) memcpy(p.list, a->tape_list, (size_t)p.nlist * sizeof *p.list);
    memcpy(p.tokens, tokens, (size_t)ntokens * sizeof *p.tokens);
    a->progs[a->nprogs] = p;
    a->cur_prog = a->nprogs;
    return a->nprogs++;
}

// --- replay

// entries off .. off+n-1 exist (a program's offsets are checked before use, never trusted)
static int vec_ok(const mg_arena *a, int64_t off, int64_t n) {
    return off >= 0 && n >= 0 && off <= a->vcount - n;
}

// one instruction with the replay's tokens: what the body returns
static int64_t run(mg_arena *a, const mg_program *p, const mg_instr *in, const int64_t *tokens) {
    switch (in->op) {
    case MG_T_EMBED:
        if (!vec_ok(a, in->x, in->m * in->n) || !vec_ok(a, in->y, in->k * in->n)) return MG_ERR_ARG;
        return mgi_k_embed(a, in->x, in->y, in->n, tokens[in->index], in->index);
    case MG_T_ADD:
        if (!vec_ok(a, in->x, in->n) || !vec_ok(a, in->y, in->n)) return MG_ERR_ARG;
        return mgi_k_add(a, in->x, in->y, in->n);
    case MG_T_SCALE:
        if (!vec_ok(a, in->x, in->n)) return MG_ERR_ARG;
        return mgi_k_scale(a, in->x, in->n, in->c);
    case MG_T_RELU:
        if (!vec_ok(a, in->x, in->n)) return MG_ERR_ARG;
        return mgi_k_relu(a, in->x, in->n);
    case MG_T_LINEAR:
        if (!vec_ok(a, in->x, in->n) || !vec_ok(a, in->y, in->n * in->m)) return MG_ERR_ARG;
        return mgi_k_linear(a, in->x, in->n, in->y, in->m, in->fused);
    case MG_T_RMSNORM:
        if (!vec_ok(a, in->x, in->n)) return MG_ERR_ARG;
        return mgi_k_rmsnorm(a, in->x, in->n);
    case MG_T_SOFTMAX:
        if (!vec_ok(a, in->x, in->n)) return MG_ERR_ARG;
        return mgi_k_softmax(a, in->x, in->n);
    case MG_T_ATTENTION: {
        const int64_t *keys = p->list + in->list, *values = keys + in->n;
        int64_t w = in->m * in->k;                 // a position's vec: n_head * head_dim
        if (!vec_ok(a, in->x, w)) return MG_ERR_ARG;
        for (int64_t s = 0; s < in->n; s++)
            if (!vec_ok(a, keys[s], w) || !vec_ok(a, values[s], w)) return MG_ERR_ARG;
        return mgi_k_attention(a, in->x, keys, values, in->n, in->m, in->k);
    }
    case MG_T_CROSS_ENTROPY:
        if (!vec_ok(a, in->x, in->n)) return MG_ERR_ARG;
        return mgi_k_cross_entropy(a, in->x, in->n, tokens[in->index + 1], in->fused);
    case MG_T_MEAN: {
        const int64_t *nodes = p->list + in->list;
        for (int64_t k = 0; k < in->n; k++)
            if (nodes[k] < 0 || nodes[k] >= a->count) return MG_ERR_ARG;
        return mgi_k_mean(a, nodes, in->n);
    }
    }
    return MG_ERR_ARG;
}

static void ce_orders(mg_arena *a, mg_program *p);

int64_t mg_tape_replay(mg_arena *a, int64_t program, const int64_t *tokens, int64_t ntokens) {
    mg_count_change(a);
    if (!a || a->recording || program < 0 || program >= a->nprogs || !tokens) return MG_ERR_ARG;
    mg_program *p = &a->progs[program];
    if (ntokens != p->ntokens) return MG_ERR_ARG;
    if (a->keep != p->keep || a->edges_keep != p->edges_keep || a->vkeep != p->vkeep ||
        a->count != a->keep || a->nedges != a->edges_keep || a->vcount != a->vkeep)
        return MG_ERR_ARG;                       // not right after a reset, or the parameters changed
    for (int64_t i = 0; i < p->ninstr; i++) {    // every token in range before anything is made
        const mg_instr *in = &p->instr[i];       // (mg_tape_end checked the indices < ntokens)
        if (in->op == MG_T_EMBED && (tokens[in->index] < 0 || tokens[in->index] >= in->m))
            return MG_ERR_ARG;                   // a row of wte
        if (in->op == MG_T_CROSS_ENTROPY && (tokens[in->index + 1] < 0 || tokens[in->index + 1] >= in->n))
            return MG_ERR_ARG;                   // a logit
    }
    int64_t rc = 0;
    for (int64_t i = 0; i < p->ninstr && rc >= 0; i++) {
        int64_t r = run(a, p, &p->instr[i], tokens);
        rc = r < 0 ? r : r != p->instr[i].out ? MG_ERR_ARG : 0;
    }
    if (!rc && (a->count != p->count || a->nedges != p->nedges || a->vcount != p->vcount)) rc = MG_ERR_ARG;
    if (rc < 0) {                                // drop the partial step: back to the persistent counts
        a->count = a->keep;
        a->nedges = a->edges_keep;
        a->vcount = a->vkeep;
        a->step_dots = 0;
        return rc;
    }
    memcpy(p->tokens, tokens, (size_t)ntokens * sizeof *p->tokens);
    if (p->topo_state == 1) ce_orders(a, p);
    a->cur_prog = program;
    return mg_handle_of(a, p->loss);
}

// --- the cached topological order (why it is exact: the top of the file)

// Write (check = 0) or compare with (check = 1) dst: the order in which the search lists a fused
// cross-entropy's own nodes and its logits after F, for this target. Node layout: kernels.c,
// mgi_k_cross_entropy. Compare mode returns 0 on the first difference.
static int ce_order(const mg_arena *a, const mg_instr *in, int64_t target, int64_t *dst, int check) {
    const int64_t n = in->n, b = in->base, *logit = a->vec_ids + in->x;
    int64_t k = 0;
#define EMIT(node) do {                                    \
        if (!check) dst[k] = (node);                       \
        else if (dst[k] != (node)) return 0;               \
        k++;                                               \
    } while (0)
    EMIT(logit[target]);
    EMIT(b + 2 * target);                        // logit - max
    EMIT(b + 2 * target + 1);                    // exp
    for (int64_t i = 0; i < n; i++) {
        if (i != target) {
            EMIT(logit[i]);
            EMIT(b + 2 * i);
            EMIT(b + 2 * i + 1);
        }
        EMIT(b + 2 * n + i);                     // running total
    }
    for (int64_t i = 0; i < 4; i++) EMIT(b + 3 * n + i);   // total**-1, probability, log, * -1
#undef EMIT
    return 1;
}

// rewrite every cross-entropy's stretch of the cached order for the program's current tokens
static void ce_orders(mg_arena *a, mg_program *p) {
    for (int64_t i = 0, j = 0; i < p->ninstr; i++) {
        const mg_instr *in = &p->instr[i];
        if (in->op == MG_T_CROSS_ENTROPY)
            ce_order(a, in, p->tokens[in->index + 1], p->topo + p->ce_at[j++], 0);
    }
}

// u and v have the same non-leaf children in the same order
static int same_inner_children(const mg_arena *a, int64_t u, int64_t v) {
    const int64_t *eb = a->edge_begin, *child = a->edge_child;
    const uint8_t *op = a->op;
    int64_t e = eb[u], eu = eb[u + 1], f = eb[v], ev = eb[v + 1];
    for (;;) {
        while (e < eu && op[child[e]] == MG_OP_LEAF) e++;
        while (f < ev && op[child[f]] == MG_OP_LEAF) f++;
        if (e == eu || f == ev) return e == eu && f == ev;
        if (child[e++] != child[f++]) return 0;
    }
}

// vec entries off .. off+n-1 are all leaves
static int all_leaves(const mg_arena *a, int64_t off, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (a->op[a->vec_ids[off + i]] != MG_OP_LEAF) return 0;
    return 1;
}

// the conditions of the argument at the top, on the program's current graph
static int order_is_target_free(const mg_arena *a, const mg_program *p) {
    for (int64_t i = 0; i < p->ninstr; i++) {
        const mg_instr *in = &p->instr[i];
        if (in->op == MG_T_EMBED && (!all_leaves(a, in->x, in->m * in->n) ||
                                     !all_leaves(a, in->y + in->index * in->n, in->n)))
            return 0;
        if (in->op != MG_T_CROSS_ENTROPY) continue;
        if (!in->fused || in->out != in->base + 3 * in->n + 3) return 0;
        const int64_t *logit = a->vec_ids + in->x;
        for (int64_t k = 0; k < in->n; k++)
            if (a->op[logit[k]] == MG_OP_LEAF || !same_inner_children(a, logit[0], logit[k])) return 0;
    }
    return 1;
}

// The program that built the current step, if root is its loss and nothing was made since.
mg_program *mgi_program_of(mg_arena *a, int64_t root) {
    if (a->cur_prog < 0) return NULL;
    mg_program *p = &a->progs[a->cur_prog];
    if (root != p->loss || a->count != p->count || a->nedges != p->nedges) return NULL;
    return p;
}

// After mg_backward searched the program's current graph: cache the order, with each
// cross-entropy's stretch found and checked, or mark the program as one that never caches.
void mgi_program_keep_topo(mg_arena *a, mg_program *p, const int64_t *topo, int64_t nt) {
    if (!order_is_target_free(a, p)) {
        p->topo_state = -1;
        return;
    }
    int64_t *copy = mgi_alloc(a, nt, sizeof *copy);
    if (!copy) return;                           // no room: search again next time
    memcpy(copy, topo, (size_t)nt * sizeof *copy);
    int64_t k = 0, j = 0;                        // the stretches come in the order the search met them
    for (int64_t i = 0; i < p->ninstr; i++) {
        const mg_instr *in = &p->instr[i];
        if (in->op != MG_T_CROSS_ENTROPY) continue;
        int64_t start = k;
        while (k < nt && copy[k] != in->out) k++;   // the cross-entropy's last node, * -1
        int64_t at = k - (4 * in->n + 3);
        if (k == nt || at < start || !ce_order(a, in, p->tokens[in->index + 1], copy + at, 1)) {
            mgi_free(a, copy, nt, sizeof *copy);
            p->topo_state = -1;
            return;
        }
        p->ce_at[j++] = at;
        k++;
    }
    p->topo = copy;
    p->ntopo = nt;
    p->topo_state = 1;
}

// --- teardown (mg_arena_free)

void mgi_tape_free(mg_arena *a) {
    free(a->tape);
    free(a->tape_list);
    for (int64_t i = 0; i < a->nprogs; i++) program_free(a, &a->progs[i]);
    free(a->progs);
}
