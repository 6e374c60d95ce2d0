/*
 * tape.c -- a training step's kernel calls, recorded once per document length and replayed in C.
 *
 * The graph of a training step depends on the document only through its length n: the tokens
 * choose which embedding rows are read and which probability each cross-entropy takes the log
 * of, nothing else. So the kernel calls of one step are recorded (mg_tape_begin .. mg_tape_end)
 * as instructions whose operands are raw vec offsets and node indices, and later steps of the
 * same length re-run them with new tokens (mg_tape_replay) without a call from Python per layer.
 * The arena is deterministic: a replay that starts from the persistent counts makes every node
 * and vec at the offset the recording made it, which is checked after each instruction.
 *
 * A recording is kept as a program only if it is a function of the tokens: every embedding's
 * token is tokens[pos], the j-th cross-entropy's target is tokens[j+1], nothing but kernel calls
 * given this tape made or changed anything while recording (the arena's change count and node
 * counts tell), and the loss is what the last instruction, a mean, returned. What the tape
 * cannot see is Python's control flow: a model whose layers depend on token values must not be
 * recorded.
 *
 * The cached backward order. The seed's depth-first search decides the order in which gradient
 * terms are added; a program caches the order its first backward found, so a replay's backward
 * skips the search (a third of a replayed step). The order depends on the tokens only through
 * the cross-entropies: a leaf's place in the search lists nothing, so the embedding rows do not
 * matter (checked: they are leaves), and a fused cross-entropy enters the forward graph through
 * its target's logit. When all its logits have the same non-leaf children (checked: the rows of
 * a fused linear layer share their input), what the search lists below the first logit it meets
 * is the same whichever logit that is, and the rest of the cross-entropy is one stretch whose
 * order the kernel that built it gives (kernels.c, mgi_k_cross_entropy_order). By induction over
 * the cross-entropies, in the order the search meets them, everything else is the same for
 * every replay. So for new targets the cached order is made exact by rewriting each
 * cross-entropy's stretch. When the order is cached, each stretch is checked against the
 * kernel's order for the targets the search ran with; a program where anything does not fit
 * never caches and searches every time. Building with MG_CHECK_ORDER (the sanitizer CI build
 * does) compares every rewritten order with a fresh search.
 *
 * Not here: the kernels (kernels.c), the search and the chain rule (backward.c).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "microgpt.h"
#include "arena.h"
#include "backward.h"
#include "kernels.h"
#include "tape.h"

enum { ORDER_UNKNOWN, ORDER_CACHED, ORDER_UNCACHEABLE };   // a program's backward order

// A recorded training step, replayable for any tokens of the same length.
typedef struct {
    int64_t ninstr;         // instructions
    mg_instr *instr;        // (ninstr) the kernel calls, in order
    int64_t nlist;          // operand list entries
    int64_t *list;          // (nlist) attention's key/value offsets, mean's node indices
    int64_t ntokens;        // tokens the step is a function of
    int64_t *tokens;        // (ntokens) the tokens of the program's latest graph (record or replay)
    int64_t keep, edges_keep, vecs_keep;   // the persistent counts it starts from
    int64_t count, nedges, vcount;         // the counts it ends at
    int64_t loss;           // the loss node (the last instruction's)
    int order_state;        // ORDER_*
    int dropped;            // mg_tape_drop freed it: its id names nothing any more
    int64_t norder;         // entries in order
    mgi_id *order;          // (norder) the backward order of the tokens' graph (ORDER_CACHED)
    int64_t nce;            // cross-entropy instructions
    int64_t *ce_at;         // (nce) where each one's stretch starts in order
} mg_program;

struct mg_tape {
    mgi_memory mem;         // bytes held (not capped)
    // --- the recording (mg_tape_begin .. mg_tape_end)
    int recording;          // between begin and end
    int spoiled;            // something happened that a replay could not redo
    int64_t generation;     // the arena's generation and change count at begin: a reset or a
    int64_t changes;        //   change made by anything but a recorded kernel call spoils it
    int64_t next_count, next_nedges, next_vcount;   // where the next recorded call must start
    int64_t ninstr, instr_cap;
    mg_instr *instr;        // (instr_cap) the calls recorded
    int64_t nlist, list_cap;
    int64_t *list;          // (list_cap) their operand lists
    int64_t nce;            // cross-entropy calls recorded (the next one's ordinal)
    // --- programs
    int64_t nprogs, progs_cap;
    mg_program *progs;      // (progs_cap) program i is id i
    int64_t current;        // the program that built the arena's step in generation current_gen, or -1
    int64_t current_gen;
};

// grow one array of the tape (`size`-byte elements) to hold `need`
static int grow(mg_tape *t, void **array, size_t size, int64_t *cap, int64_t need) {
    return mgi_grow(&t->mem, array, &size, 1, 0, cap, need, MG_ELEM_LIMIT);
}

// an array of n elements (a copy of src unless it is NULL), counted in the tape's memory; NULL
// when out of memory
static void *array_of(mg_tape *t, const void *src, int64_t n, size_t size) {
    if (n < 0 || (uint64_t)n > SIZE_MAX / size) return NULL;
    void *p = malloc(n > 0 ? (size_t)n * size : 1);
    if (!p) return NULL;
    if (src && n > 0) memcpy(p, src, (size_t)n * size);
    t->mem.bytes += n * (int64_t)size;
    return p;
}

static void array_free(mg_tape *t, void *p, int64_t n, size_t size) {
    if (!p) return;
    free(p);
    t->mem.bytes -= n * (int64_t)size;
}

// --- lifecycle

mg_tape *mg_tape_new(void) {
    mg_tape *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->current = -1;
    t->mem.bytes = (int64_t)sizeof *t;
    return t;
}

static void program_free(mg_tape *t, mg_program *p) {
    array_free(t, p->instr, p->ninstr, sizeof *p->instr);
    array_free(t, p->list, p->nlist, sizeof *p->list);
    array_free(t, p->tokens, p->ntokens, sizeof *p->tokens);
    array_free(t, p->order, p->norder, sizeof *p->order);
    array_free(t, p->ce_at, p->nce, sizeof *p->ce_at);
}

void mg_tape_free(mg_tape *t) {
    if (!t) return;
    free(t->instr);
    free(t->list);
    for (int64_t i = 0; i < t->nprogs; i++) program_free(t, &t->progs[i]);
    free(t->progs);
    free(t);
}

int64_t mg_tape_bytes(const mg_tape *t) { return t ? t->mem.bytes : MG_ERR_ARG; }

int mg_tape_drop(mg_tape *t, int64_t program) {
    if (!t || program < 0 || program >= t->nprogs || t->progs[program].dropped) return MG_ERR_ARG;
    program_free(t, &t->progs[program]);
    t->progs[program] = (mg_program){ .dropped = 1 };
    if (t->current == program) t->current = -1;
    return 0;
}

// --- recording

int mg_tape_begin(mg_tape *t, mg_arena *a) {
    mgi_count_call(a);
    if (!t || !a) return MG_ERR_ARG;
    if (a->count != a->keep || a->nedges != a->edges_keep || a->vcount != a->vecs_keep) return MG_ERR_ARG;
    t->recording = 1;
    t->spoiled = 0;
    t->generation = a->generation;
    t->changes = a->changes;
    t->next_count = a->count, t->next_nedges = a->nedges, t->next_vcount = a->vcount;
    t->ninstr = t->nlist = t->nce = 0;
    return 0;
}

// the arena is as the last recorded call (or begin) left it
static int arena_unchanged(const mg_tape *t, const mg_arena *a) {
    return a->generation == t->generation && a->changes == t->changes && a->count == t->next_count &&
           a->nedges == t->next_nedges && a->vcount == t->next_vcount;
}

int mgi_tape_ready(mg_tape *t, const mg_arena *a) {
    if (!t->recording || t->spoiled) return 0;
    if (!arena_unchanged(t, a)) t->spoiled = 1;
    return !t->spoiled;
}

void mgi_tape_spoil(mg_tape *t) {
    t->spoiled = 1;
}

void mgi_tape_record(mg_tape *t, const mg_arena *a, mg_instr in, const int64_t *list, int64_t nlist) {
    void *p = t->instr;
    int rc = grow(t, &p, sizeof *t->instr, &t->instr_cap, t->ninstr + 1);
    t->instr = p;
    if (!rc && nlist > 0) {
        p = t->list;
        rc = grow(t, &p, sizeof *t->list, &t->list_cap, t->nlist + nlist);
        t->list = p;
    }
    if (rc) {                                    // no room: not replayable, the call itself stands
        t->spoiled = 1;
        return;
    }
    if (nlist > 0) memcpy(t->list + t->nlist, list, (size_t)nlist * sizeof *list);
    if (in.op == MG_T_ATTENTION) in.k.attention.list = t->nlist;
    if (in.op == MG_T_MEAN) in.k.mean.list = t->nlist;
    if (in.op == MG_T_CROSS_ENTROPY) in.k.cross_entropy.ordinal = t->nce++;
    t->nlist += nlist;
    t->instr[t->ninstr++] = in;
    t->next_count = a->count, t->next_nedges = a->nedges, t->next_vcount = a->vcount;
}

// the recorded calls are a function of these tokens (see the top of the file)
static int recording_fits_tokens(const mg_tape *t, const int64_t *tokens, int64_t ntokens) {
    for (int64_t i = 0; i < t->ninstr; i++) {
        const mg_instr *in = &t->instr[i];
        if (in->op == MG_T_EMBED &&
            (in->k.embed.pos >= ntokens || in->k.embed.token != tokens[in->k.embed.pos]))
            return 0;
        if (in->op == MG_T_CROSS_ENTROPY && (in->k.cross_entropy.ordinal + 1 >= ntokens ||
                                             in->k.cross_entropy.target != tokens[in->k.cross_entropy.ordinal + 1]))
            return 0;
    }
    return 1;
}

int64_t mg_tape_end(mg_tape *t, mg_arena *a, const int64_t *tokens, int64_t ntokens, int64_t loss) {
    mgi_count_call(a);
    if (!t || !a || !t->recording) return MG_ERR_ARG;
    t->recording = 0;
    int64_t li = 0;
    if (t->spoiled || !arena_unchanged(t, a) || t->ninstr == 0) return MG_ERR_ARG;
    if (!tokens || ntokens < 1 || ntokens > MG_IDX_LIMIT || mgi_node_check(a, loss, &li)) return MG_ERR_ARG;
    const mg_instr *last = &t->instr[t->ninstr - 1];
    if (last->op != MG_T_MEAN || last->out != li || !recording_fits_tokens(t, tokens, ntokens)) return MG_ERR_ARG;

    void *grown = t->progs;
    int rc = grow(t, &grown, sizeof *t->progs, &t->progs_cap, t->nprogs + 1);
    t->progs = grown;
    if (rc) return rc;
    mg_program p = { .ninstr = t->ninstr, .nlist = t->nlist, .ntokens = ntokens, .nce = t->nce,
                     .keep = a->keep, .edges_keep = a->edges_keep, .vecs_keep = a->vecs_keep,
                     .count = a->count, .nedges = a->nedges, .vcount = a->vcount, .loss = li };
    p.instr = array_of(t, t->instr, p.ninstr, sizeof *p.instr);
    p.list = array_of(t, t->list, p.nlist, sizeof *p.list);
    p.tokens = array_of(t, tokens, ntokens, sizeof *p.tokens);
    p.ce_at = array_of(t, NULL, p.nce, sizeof *p.ce_at);
    if (!p.instr || !p.list || !p.tokens || !p.ce_at) {
        program_free(t, &p);
        return MG_ERR_NOMEM;
    }
    t->progs[t->nprogs] = p;
    t->current = t->nprogs;
    t->current_gen = a->generation;
    return t->nprogs++;
}

// --- replay

// entries off .. off+n-1 exist (a program's offsets are checked before use, never trusted)
static int vec_ok(const mg_arena *a, int64_t off, int64_t n) {
    return off >= 0 && n >= 0 && off <= a->vcount - n;
}

// one instruction with the replay's tokens: what the body returns
static int64_t run_instruction(mg_arena *a, const mg_program *p, const mg_instr *in, const int64_t *tokens) {
    switch (in->op) {
    case MG_T_EMBED: {
        int64_t n = in->k.embed.n_embd;
        if (!vec_ok(a, in->k.embed.wte, in->k.embed.wte_rows * n) || !vec_ok(a, in->k.embed.wpe, in->k.embed.wpe_rows * n))
            return MG_ERR_ARG;
        return mgi_k_embed(a, in->k.embed.wte, in->k.embed.wpe, n, tokens[in->k.embed.pos], in->k.embed.pos);
    }
    case MG_T_ADD:
        if (!vec_ok(a, in->k.add.x, in->k.add.n) || !vec_ok(a, in->k.add.y, in->k.add.n)) return MG_ERR_ARG;
        return mgi_k_add(a, in->k.add.x, in->k.add.y, in->k.add.n);
    case MG_T_SCALE:
        if (!vec_ok(a, in->k.scale.x, in->k.scale.n)) return MG_ERR_ARG;
        return mgi_k_scale(a, in->k.scale.x, in->k.scale.n, in->k.scale.c);
    case MG_T_RELU:
    case MG_T_RMSNORM:
    case MG_T_SOFTMAX:
        if (!vec_ok(a, in->k.unary.x, in->k.unary.n)) return MG_ERR_ARG;
        return (in->op == MG_T_RELU      ? mgi_k_relu
                : in->op == MG_T_SOFTMAX ? mgi_k_softmax
                : in->k.unary.fused      ? mgi_k_rmsnorm_fused
                                         : mgi_k_rmsnorm)(a, in->k.unary.x, in->k.unary.n);
    case MG_T_LINEAR:
        if (!vec_ok(a, in->k.linear.x, in->k.linear.nin) ||
            !vec_ok(a, in->k.linear.w, in->k.linear.nin * in->k.linear.nout))
            return MG_ERR_ARG;
        return mgi_k_linear(a, in->k.linear.x, in->k.linear.nin, in->k.linear.w, in->k.linear.nout,
                            in->k.linear.fused);
    case MG_T_ATTENTION: {
        int64_t nt = in->k.attention.t, w = in->k.attention.n_head * in->k.attention.head_dim;
        const int64_t *keys = p->list + in->k.attention.list, *values = keys + nt;
        if (!vec_ok(a, in->k.attention.q, w)) return MG_ERR_ARG;
        for (int64_t s = 0; s < nt; s++)
            if (!vec_ok(a, keys[s], w) || !vec_ok(a, values[s], w)) return MG_ERR_ARG;
        return mgi_k_attention(a, in->k.attention.q, keys, values, nt, in->k.attention.n_head,
                               in->k.attention.head_dim, in->k.attention.fused);
    }
    case MG_T_CROSS_ENTROPY:
        if (!vec_ok(a, in->k.cross_entropy.logits, in->k.cross_entropy.n)) return MG_ERR_ARG;
        return mgi_k_cross_entropy(a, in->k.cross_entropy.logits, in->k.cross_entropy.n,
                                   tokens[in->k.cross_entropy.ordinal + 1], in->k.cross_entropy.fused);
    case MG_T_MEAN: {
        const int64_t *nodes = p->list + in->k.mean.list;
        for (int64_t k = 0; k < in->k.mean.n; k++)
            if (nodes[k] < 0 || nodes[k] >= a->count) return MG_ERR_ARG;
        return mgi_k_mean(a, nodes, in->k.mean.n);
    }
    }
    return MG_ERR_ARG;
}

// every token an instruction reads is in range (mg_tape_end checked the positions < ntokens)
static int tokens_in_range(const mg_program *p, const int64_t *tokens) {
    for (int64_t i = 0; i < p->ninstr; i++) {
        const mg_instr *in = &p->instr[i];
        if (in->op == MG_T_EMBED) {
            int64_t token = tokens[in->k.embed.pos];
            if (token < 0 || token >= in->k.embed.wte_rows) return 0;      // a row of wte
        }
        if (in->op == MG_T_CROSS_ENTROPY) {
            int64_t target = tokens[in->k.cross_entropy.ordinal + 1];
            if (target < 0 || target >= in->k.cross_entropy.n) return 0;  // a logit
        }
    }
    return 1;
}

int64_t mg_tape_replay(mg_tape *t, mg_arena *a, int64_t program, const int64_t *tokens, int64_t ntokens) {
    mgi_count_call(a);
    if (!t || !a || program < 0 || program >= t->nprogs || !tokens) return MG_ERR_ARG;
    t->recording = 0;                            // a recording left unfinished (its step raised) ends
    mg_program *p = &t->progs[program];
    if (p->dropped || ntokens != p->ntokens || !tokens_in_range(p, tokens)) return MG_ERR_ARG;
    if (a->keep != p->keep || a->edges_keep != p->edges_keep || a->vecs_keep != p->vecs_keep ||
        a->count != a->keep || a->nedges != a->edges_keep || a->vcount != a->vecs_keep)
        return MG_ERR_ARG;                       // not right after a reset, or the parameters changed
    mgi_note_change(a);
    int64_t rc = 0;
    for (int64_t i = 0; i < p->ninstr && rc >= 0; i++) {
        int64_t r = run_instruction(a, p, &p->instr[i], tokens);
        rc = r < 0 ? r : r != p->instr[i].out ? MG_ERR_ARG : 0;
    }
    if (!rc && (a->count != p->count || a->nedges != p->nedges || a->vcount != p->vcount)) rc = MG_ERR_ARG;
    if (rc < 0) {                                // drop the partial step: back to the persistent counts
        a->count = a->keep;
        a->nedges = a->edges_keep;
        a->vcount = a->vecs_keep;
        a->step_dots = 0;
        return rc;
    }
    memcpy(p->tokens, tokens, (size_t)ntokens * sizeof *p->tokens);
    t->current = program;
    t->current_gen = a->generation;
    return mgi_handle_of(a, p->loss);
}

// --- the cached backward order (why it is exact: the top of the file)

// u and v have the same non-leaf children in the same order
static int same_inner_children(const mg_arena *a, int64_t u, int64_t v) {
    const uint8_t *op = a->op;
    int64_t e = 0, eu = mgi_child_count(a, u), f = 0, ev = mgi_child_count(a, v);
    for (;;) {
        while (e < eu && op[mgi_child(a, u, e)] == MG_OP_LEAF) e++;
        while (f < ev && op[mgi_child(a, v, f)] == MG_OP_LEAF) f++;
        if (e == eu || f == ev) return e == eu && f == ev;
        if (mgi_child(a, u, e++) != mgi_child(a, v, f++)) return 0;
    }
}

// vec entries off .. off+n-1 are all leaves
static int all_leaves(const mg_arena *a, int64_t off, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (a->op[mgi_vec_entry(a, off + i)] != MG_OP_LEAF) return 0;
    return 1;
}

// the conditions of the argument at the top, on the program's current graph
static int order_is_target_free(const mg_arena *a, const mg_program *p) {
    for (int64_t i = 0; i < p->ninstr; i++) {
        const mg_instr *in = &p->instr[i];
        if (in->op == MG_T_EMBED &&
            !all_leaves(a, in->k.embed.wte, in->k.embed.wte_rows * in->k.embed.n_embd)) return 0;
        if (in->op == MG_T_EMBED && !all_leaves(a, in->k.embed.wpe, in->k.embed.wpe_rows * in->k.embed.n_embd))
            return 0;
        if (in->op != MG_T_CROSS_ENTROPY) continue;
        if (!in->k.cross_entropy.fused) return 0;
        int64_t logits = in->k.cross_entropy.logits, first = mgi_vec_entry(a, logits);
        for (int64_t k = 0; k < in->k.cross_entropy.n; k++) {
            int64_t logit = mgi_vec_entry(a, logits + k);
            if (a->op[logit] == MG_OP_LEAF || !same_inner_children(a, first, logit)) return 0;
        }
    }
    return 1;
}

// each cross-entropy's stretch of order, written for the program's current tokens (into dst),
// or compared with what is there (returns 0 on the first difference). scratch: room for the
// longest stretch.
static int ce_stretches(const mg_arena *a, const mg_program *p, mgi_id *order, mgi_id *scratch, int check) {
    for (int64_t i = 0, j = 0; i < p->ninstr; i++) {
        const mg_instr *in = &p->instr[i];
        if (in->op != MG_T_CROSS_ENTROPY) continue;
        int64_t n = in->k.cross_entropy.n, target = p->tokens[in->k.cross_entropy.ordinal + 1];
        mgi_id *dst = check ? scratch : order + p->ce_at[j];
        mgi_k_cross_entropy_order(a, in->k.cross_entropy.logits, n, in->base, target, dst);
        if (check && memcmp(dst, order + p->ce_at[j], (size_t)MGI_CE_ORDER_LEN(n) * sizeof *dst)) return 0;
        j++;
    }
    return 1;
}

// After a search of the program's current graph: cache the order, with each cross-entropy's
// stretch found and checked, or mark the program as one that never caches.
static void cache_order(mg_tape *t, const mg_arena *a, mg_program *p, const mgi_id *order, int64_t n) {
    p->order_state = ORDER_UNCACHEABLE;
    if (!order_is_target_free(a, p)) return;
    int64_t longest = 0, k = 0, j = 0;
    for (int64_t i = 0; i < p->ninstr; i++) {    // the stretches come in the order the search met them
        const mg_instr *in = &p->instr[i];
        if (in->op != MG_T_CROSS_ENTROPY) continue;
        int64_t start = k, len = MGI_CE_ORDER_LEN(in->k.cross_entropy.n);
        while (k < n && order[k] != in->out) k++;    // the stretch ends with the loss node
        if (k == n || k + 1 - len < start) return;
        p->ce_at[j++] = k + 1 - len;
        if (len > longest) longest = len;
        k++;
    }
    mgi_id *copy = array_of(t, order, n, sizeof *copy), *scratch = array_of(t, NULL, longest, sizeof *scratch);
    if (copy && scratch && ce_stretches(a, p, copy, scratch, 1)) {
        p->order = copy;
        p->norder = n;
        p->order_state = ORDER_CACHED;
        copy = NULL;
    } else if (!copy || !scratch) {
        p->order_state = ORDER_UNKNOWN;          // no room: search again next time
    }
    array_free(t, copy, n, sizeof *copy);
    array_free(t, scratch, longest, sizeof *scratch);
}

// The program that built the arena's current step, if root is its loss and nothing was made since.
static mg_program *program_of(mg_tape *t, const mg_arena *a, int64_t root) {
    if (t->current < 0 || t->current_gen != a->generation) return NULL;
    mg_program *p = &t->progs[t->current];
    if (root != p->loss || a->count != p->count || a->nedges != p->nedges) return NULL;
    return p;
}

int mg_tape_backward(mg_tape *t, mg_arena *a, int64_t loss) {
    mgi_count_call(a);
    int64_t r = 0;
    int rc = mgi_node_check(a, loss, &r);
    if (rc) return rc;
    if (!t) return MG_ERR_ARG;
    mgi_note_change(a);
    if ((rc = mgi_backward_refused(a))) return rc;   // before the search can run out of memory
    mg_program *p = program_of(t, a, r);
    if (p && p->order_state == ORDER_CACHED) {
        ce_stretches(a, p, p->order, NULL, 0);   // the order for this step's targets
#ifdef MG_CHECK_ORDER
        int64_t n = mgi_search_order(a, r);
        if (n < 0) return (int)n;
        if (n != p->norder || memcmp(a->order, p->order, (size_t)n * sizeof *a->order)) return MG_ERR_ORDER;
#endif
        return mgi_chain_rule(a, r, p->order, p->norder);
    }
    int64_t n = mgi_search_order(a, r);
    if (n < 0) return (int)n;
    if (p && p->order_state == ORDER_UNKNOWN) cache_order(t, a, p, a->order, n);
    return mgi_chain_rule(a, r, a->order, n);
}

int mgi_tape_program(const mg_tape *t, const mg_arena *a, int64_t id, mgi_program_view *view) {
    if (!t || !a || id < 0 || id >= t->nprogs || t->progs[id].dropped) return MG_ERR_ARG;
    const mg_program *p = &t->progs[id];
    int cached = p->order_state == ORDER_CACHED;
    *view = (mgi_program_view){ .instr = p->instr, .ninstr = p->ninstr, .list = p->list,
                                .ntokens = p->ntokens, .tokens = p->tokens, .keep = p->keep,
                                .vecs_keep = p->vecs_keep, .count = p->count, .vcount = p->vcount,
                                .loss = p->loss, .order = cached ? p->order : NULL,
                                .norder = cached ? p->norder : 0 };
    view->live = t->current == id && t->current_gen == a->generation && a->count == p->count &&
                 a->vcount == p->vcount && a->differentiated;
    return 0;
}
