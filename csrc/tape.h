/*
 * tape.h -- what the exported layer calls (layers.c) need of the tape (tape.c): one instruction
 * per recorded kernel call, and the two calls that record it. Include after "arena.h".
 */
#ifndef MG_TAPE_H
#define MG_TAPE_H

enum { MG_T_EMBED, MG_T_ADD, MG_T_SCALE, MG_T_RELU, MG_T_LINEAR, MG_T_RMSNORM, MG_T_SOFTMAX,
       MG_T_ATTENTION, MG_T_CROSS_ENTROPY, MG_T_MEAN };

// One kernel call, its operands as raw vec offsets and node indices (no generation: a replay
// runs in a later generation). `op` says which member of `k` holds them.
typedef struct {
    int32_t op;             // MG_T_*
    int64_t base;           // first node index the call made
    int64_t out;            // what it made: a vec offset, or a node index (cross-entropy, mean)
    union {
        struct { int64_t wte, wte_rows, wpe, wpe_rows, n_embd, pos, token; } embed;  // token: as recorded
        struct { int64_t x, y, n; } add;
        struct { int64_t x, n; double c; } scale;
        struct { int64_t x, n; int fused; } unary;          // relu, rmsnorm (fused: its sum one DOT), softmax
        struct { int64_t x, nin, w, nout; int fused; } linear;
        struct { int64_t q, t, n_head, head_dim, list; int fused; } attention;  // list: t key, then t value offsets
        struct { int64_t logits, n, target, ordinal; int fused; } cross_entropy;  // target: as recorded;
                                                             // ordinal: j for the j-th of the step
        struct { int64_t n, list; } mean;                    // list: n node indices
    } k;
} mg_instr;

// Called by an exported kernel before its body runs: whether the call can be recorded on t
// (recording, nothing else changed the arena since the last recorded call). If not, t is
// spoiled (a recording that missed a change cannot be replayed).
int mgi_tape_ready(mg_tape *t, const mg_arena *a);
// After the body succeeded: append the call (list entries copied; list may be kernel scratch).
void mgi_tape_record(mg_tape *t, const mg_arena *a, mg_instr in, const int64_t *list, int64_t nlist);
// A kernel call that failed: the recording cannot be replayed.
void mgi_tape_spoil(mg_tape *t);

// What a compiler of programs (dense.c) reads of one, all borrowed from the tape.
typedef struct {
    const mg_instr *instr;  // (ninstr) the kernel calls, in order
    int64_t ninstr;
    const int64_t *list;    // attention's key/value offsets, mean's node indices
    int64_t ntokens;
    const int64_t *tokens;  // (ntokens) the tokens of the program's latest graph
    int64_t keep, vecs_keep;        // the persistent counts it starts from
    int64_t count, vcount;          // the counts its step ends at
    int64_t loss;           // the loss node
    const mgi_id *order;    // (norder) the backward order of the latest graph, or NULL: not cached
    int64_t norder;
    int live;               // the arena holds this program's latest graph, differentiated
} mgi_program_view;

// Program `id` of t, as seen with arena a: 0, or MG_ERR_ARG (no such program).
int mgi_tape_program(const mg_tape *t, const mg_arena *a, int64_t id, mgi_program_view *view);

#endif
