/*
 * microgpt.h -- the C API of microgpt's native backend, and the single source of truth for it:
 * build_ext.py feeds this file to cffi's cdef, and every .c file includes it, so the compiler
 * checks the binding against the implementation. Keep it plain C declarations only (no macros
 * with values other than the ones below, no includes): cffi parses it.
 *
 * The graph: one arena (mg_arena) owns every scalar node in struct-of-arrays form. A node is an
 * integer index; its children and their local gradients are a slice of one edge array. Nodes
 * made before mg_arena_keep() (the model's parameters) persist; a training step appends its
 * nodes after them, and mg_arena_reset() drops the step by moving the counts back.
 *
 * Handles: what Python holds is a handle, an int64 = index | (generation << 32). Every reset
 * bumps the generation, so a handle from an earlier step is refused (MG_ERR_STALE) instead of
 * reading whatever node now sits at its index. Handles of persistent nodes never go stale: they
 * are made before the first reset (generation 0), and mg_arena_keep refuses after one.
 * Vectors ("vecs") are runs of node indices in a second buffer, addressed the same way; a vec
 * handle plus k is the vec starting k elements later (a slice).
 *
 * Errors: functions that make something return its handle (>= 0) or a negative MG_ERR_* code;
 * functions that only act return 0 or a negative code. Nothing here exits or aborts.
 *
 * Calls: every function below that takes an arena counts one call on it (mg_arena_calls),
 * except the five statistics getters mg_arena_nodes/edges/kept/bytes/calls (they observe the
 * arena, they do no work in it) and mg_arena_free. Work a function does inside C, such as the
 * kernels a replay runs, is not a call: the count is Python-to-C crossings.
 *
 * Numbers: every value and local gradient is computed by the same double expression CPython
 * evaluates for the seed's microgpt.py, so results are bit-identical to the Python backend.
 */

/* error codes (Python maps them to exceptions) */
#define MG_ERR_NOMEM    -1  /* an allocation failed: MemoryError */
#define MG_ERR_STALE    -2  /* handle from a reset step, or not a handle of this arena */
#define MG_ERR_DOMAIN   -3  /* math.log of 0 or a negative number: ValueError */
#define MG_ERR_OVERFLOW -4  /* exp or pow overflowed from finite input: OverflowError */
#define MG_ERR_ZERODIV  -5  /* 0.0 to a negative power: ZeroDivisionError */
#define MG_ERR_COMPLEX  -6  /* negative base to a fractional power (Python gives a complex) */
#define MG_ERR_ARG      -7  /* a size, index or argument out of range */
#define MG_ERR_CHANGED  -8  /* backward after a value its fused nodes read was changed (see below) */
#define MG_ERR_TWICE    -9  /* a second backward over a step with fused nodes (see below) */
#define MG_ERR_ORDER   -10  /* checking builds only: a cached backward order differs from a search */
#define MG_ERR_THREAD  -11  /* a Values arena (mg_values_new) called from another thread */
#define MG_ERR_PLAN    -13  /* a program the dense executor cannot run as the graph would: mg_dense_why */
#define MG_ERR_RELEASE -12  /* a Values arena asks for its dead Values' slots (mg_v_release) before it
                               compacts: nothing was done; release them and call again */

typedef struct mg_arena mg_arena;
typedef struct mg_tape mg_tape;

/* --- lifecycle (arena.c) ------------------------------------------------------------------ */
mg_arena *mg_arena_new(void);                 /* NULL when out of memory */
void mg_arena_free(mg_arena *a);              /* NULL is fine */
int64_t mg_arena_keep(mg_arena *a);           /* everything made so far persists; returns node count;
                                                 MG_ERR_ARG after the first reset */
int64_t mg_arena_reset(mg_arena *a);          /* drop nodes and vecs made since keep; returns generation */
int64_t mg_arena_nodes(const mg_arena *a);    /* nodes alive (persistent + this step) */
int64_t mg_arena_edges(const mg_arena *a);    /* edge entries alive (a fused dot node has three) */
int64_t mg_arena_kept(const mg_arena *a);     /* persistent nodes */
int64_t mg_arena_bytes(const mg_arena *a);    /* bytes of memory the arena holds */
int64_t mg_arena_calls(const mg_arena *a);    /* API calls made on this arena so far (see Calls) */
int mg_arena_set_limit(mg_arena *a, int64_t max_bytes); /* cap on memory held; 0 = none */

/* --- scalar nodes, one per Value op (arena.c) ----------------------------------------------- */
int64_t mg_leaf(mg_arena *a, double x);                   /* a Value(x) */
int64_t mg_leaves(mg_arena *a, const double *xs, int64_t n); /* n Values at once: the first's handle */
int64_t mg_add(mg_arena *a, int64_t x, int64_t y);        /* x + y */
int64_t mg_add_const(mg_arena *a, int64_t x, double c);   /* x + c, c not a node */
int64_t mg_mul(mg_arena *a, int64_t x, int64_t y);        /* x * y */
int64_t mg_mul_const(mg_arena *a, int64_t x, double c);   /* x * c */
int64_t mg_pow(mg_arena *a, int64_t x, double k);         /* x ** k, k a number */
int64_t mg_log(mg_arena *a, int64_t x);
int64_t mg_exp(mg_arena *a, int64_t x);
int64_t mg_relu(mg_arena *a, int64_t x);

double mg_get_data(mg_arena *a, int64_t x, int *err);     /* *err = 0 or MG_ERR_* */
double mg_get_grad(mg_arena *a, int64_t x, int *err);
int mg_set_data(mg_arena *a, int64_t x, double v);
int mg_set_grad(mg_arena *a, int64_t x, double v);
int64_t mg_children(mg_arena *a, int64_t x, int64_t *out, int64_t cap); /* count; handles to out */

/* --- bulk access to the persistent nodes (parameters) (arena.c) ----------------------------- */
int mg_read_data(mg_arena *a, int64_t first, int64_t n, double *out);  /* node indices */
int mg_write_data(mg_arena *a, int64_t first, int64_t n, const double *in);
int mg_read_grad(mg_arena *a, int64_t first, int64_t n, double *out);

/* --- vectors of nodes (arena.c) ------------------------------------------------------------- */
int64_t mg_vec_range(mg_arena *a, int64_t first, int64_t n);           /* nodes first..first+n-1 */
int64_t mg_vec_of(mg_arena *a, const int64_t *nodes, int64_t n);       /* from node handles */
int mg_vec_data(mg_arena *a, int64_t vec, int64_t n, double *out);

/* --- backward (backward.c) -----------------------------------------------------------------
 * topological order (iterative depth-first, children in order, post-order), then the chain rule
 * in reverse: grad[child] += local_grad * grad[node]. Sets grad[root] = 1 first.
 * Fused dot nodes (the layer kernels' fused mode) read their local gradients from their
 * children's values at backward time instead of storing them. Changing a value while the step
 * holds such nodes (mg_set_data, mg_write_data, mg_adam_step) makes a later backward of that
 * step fail with MG_ERR_CHANGED, and mg_arena_keep refuses to make them persistent. A fused node
 * does not keep the gradients the seed's chain of sums and products would collect, which only a
 * second backward over the same step would read: that fails with MG_ERR_TWICE. */
int mg_backward(mg_arena *a, int64_t root);

/* --- Adam over the first nparams nodes, moments in the arena (adam.c) ------------------------ */
int mg_adam_init(mg_arena *a, int64_t nparams);           /* zero moments; nparams <= kept */
/* the seed's update at step (0-based) with the learning rate lr_t of that step (the schedule's decay is
 * Python's: microgpt/optim.py); zeroes the gradients */
int mg_adam_step(mg_arena *a, double lr_t, double beta1, double beta2, double eps, int64_t step);
int mg_adam_read(mg_arena *a, double *m, double *v);      /* nparams each */
int mg_adam_write(mg_arena *a, const double *m, const double *v);

/* --- layer kernels (layers.c): each builds exactly the nodes the seed's Python builds -------
 * fused = 0: the seed's graph node for node. fused = 1: the fused graph, same bits, fewer nodes:
 * a linear row, each of attention's sums and an rmsnorm's sum of squares are one dot node, and a
 * cross-entropy makes only the target's probability (its siblings cannot reach the loss). tape: NULL, or a tape that is recording (the call is recorded).
 * A kernel call that fails spoils the recording. */
/* wte[token] + wpe[pos]: wte, wpe are vecs of whole matrices (rows * n_embd, row-major) */
int64_t mg_k_embed(mg_arena *a, mg_tape *tape, int64_t wte, int64_t wte_rows, int64_t wpe,
                   int64_t wpe_rows, int64_t n_embd, int64_t token, int64_t pos);
int64_t mg_k_add(mg_arena *a, mg_tape *tape, int64_t x, int64_t y, int64_t n);     /* [xi + yi] */
int64_t mg_k_scale(mg_arena *a, mg_tape *tape, int64_t x, int64_t n, double c);    /* [xi * c] */
int64_t mg_k_relu(mg_arena *a, mg_tape *tape, int64_t x, int64_t n);               /* [xi.relu()] */
int64_t mg_k_linear(mg_arena *a, mg_tape *tape, int64_t x, int64_t nin, int64_t w, int64_t nout,
                    int fused);                           /* w: nout*nin row-major */
int64_t mg_k_rmsnorm(mg_arena *a, mg_tape *tape, int64_t x, int64_t n, int fused);  /* fused: its sum of squares a DOT */
int64_t mg_k_softmax(mg_arena *a, mg_tape *tape, int64_t x, int64_t n);
/* every head, head h on elements h*head_dim ..: one vec of n_head*head_dim, the heads' outputs
 * in order; keys/values: t vec handles of n_head*head_dim elements each */
int64_t mg_k_attention(mg_arena *a, mg_tape *tape, int64_t q, const int64_t *keys,
                       const int64_t *values, int64_t t, int64_t n_head, int64_t head_dim,
                       int fused);                        /* fused: its sums as DOT nodes */
int64_t mg_k_cross_entropy(mg_arena *a, mg_tape *tape, int64_t logits, int64_t n, int64_t target,
                           int fused);                    /* a node */
int64_t mg_k_mean(mg_arena *a, mg_tape *tape, const int64_t *nodes, int64_t n); /* (1/n) * sum: a node */

/* --- the tape: a training step recorded once, replayed in C for other tokens of its length --
 * (tape.c) A tape is its own object, used with one arena at a time; it holds no pointer to the
 * arena, so the two may be freed in any order. mg_tape_begin (right after mg_arena_reset:
 * MG_ERR_ARG otherwise) starts recording: each kernel call given this tape runs as usual and is
 * recorded. Anything else that makes or changes something in the arena (mg_leaf, mg_vec_of,
 * mg_set_data, mg_backward, a kernel call without the tape, ...) spoils the recording, as does
 * a reset. mg_tape_end stops it and keeps it as a program if it is a function of
 * tokens[0..ntokens-1]: every mg_k_embed's token is tokens[pos], the j-th mg_k_cross_entropy's
 * target is tokens[j+1], and loss is what the last call, an mg_k_mean, returned. It returns the
 * program's id (>= 0), or MG_ERR_ARG (nothing kept) or MG_ERR_NOMEM. mg_tape_replay, right after
 * mg_arena_reset, runs the program again with these tokens (ntokens as recorded) and returns
 * its loss node: the same nodes the kernel calls would make, at the same indices. On an error
 * the partial step is dropped. mg_tape_backward is mg_backward, except that for the loss of the
 * step a program just replayed it reuses the order the program cached (tape.c says why that is
 * exact). Programs live until mg_tape_drop (which frees one: its id is then refused) or
 * mg_tape_free; their memory is mg_tape_bytes, not the arena's. */
mg_tape *mg_tape_new(void);                   /* NULL when out of memory */
void mg_tape_free(mg_tape *t);                /* NULL is fine */
int64_t mg_tape_bytes(const mg_tape *t);
int mg_tape_begin(mg_tape *t, mg_arena *a);
int64_t mg_tape_end(mg_tape *t, mg_arena *a, const int64_t *tokens, int64_t ntokens, int64_t loss);
int64_t mg_tape_replay(mg_tape *t, mg_arena *a, int64_t program, const int64_t *tokens, int64_t ntokens);
int mg_tape_backward(mg_tape *t, mg_arena *a, int64_t loss);
int mg_tape_drop(mg_tape *t, int64_t program);   /* 0, or MG_ERR_ARG (no such program) */

/* --- dense: a recorded step compiled into kernels over flat arrays (dense.c) ------------------
 * A plan runs a program's step without making nodes, with the graph's bits. mg_dense_compile, right
 * after the backward of a step the program built or replayed (the arena still holds it; its order
 * cached), compiles that program and checks the plan against the graph: each node's gradient
 * terms in the graph's order, and every value and gradient bit for bit. It returns the plan's id
 * (>= 0), MG_ERR_PLAN (no plan: mg_dense_why says why), MG_ERR_ARG or MG_ERR_NOMEM.
 * mg_dense_forward runs a plan's forward for tokens (ntokens as recorded) and gives the loss;
 * mg_dense_backward, after it and before anything changes the arena, adds the parameters'
 * gradients into the arena (as mg_backward would), once: MG_ERR_TWICE after that, MG_ERR_CHANGED
 * if the arena changed since the forward, MG_ERR_ARG with no forward. One plan object serves one
 * arena at a time. */
typedef struct mg_dense mg_dense;
mg_dense *mg_dense_new(void);                 /* NULL when out of memory */
void mg_dense_free(mg_dense *d);              /* NULL is fine */
int64_t mg_dense_bytes(const mg_dense *d);      /* held now: plans and the buffers they share */
int64_t mg_dense_peak_bytes(const mg_dense *d); /* the most held at once, a compile's scratch included */
int64_t mg_dense_compile(mg_dense *d, mg_tape *t, mg_arena *a, int64_t program);
const char *mg_dense_why(const mg_dense *d);  /* why the last compile made no plan ("" otherwise) */
/* run the linear layers' rows and positions over up to `threads` threads (1 to 64), each part of
 * at least min_work multiply-adds, and Adam's in-place steps (mg_dense_adam_step, mg_dense_steps)
 * over the same threads, each part of at least adam_min_share parameters: the same bits for any
 * number; 1 where threads are not built (MG_NO_THREADS, or Windows). Returns the number. */
int64_t mg_dense_set_threads(mg_dense *d, int64_t threads, int64_t min_work, int64_t adam_min_share);
/* mg_adam_step on the arena, over the executor's threads */
int mg_dense_adam_step(mg_dense *d, mg_arena *a, double lr_t, double beta1, double beta2, double eps,
                       int64_t step);
int mg_dense_forward(mg_dense *d, mg_arena *a, int64_t plan, const int64_t *tokens, int64_t ntokens,
                     double *loss);
int mg_dense_backward(mg_dense *d, mg_arena *a);
/* k training steps in one call, each a plan's forward (plans[i], the tokens from offsets[i] to
 * offsets[i+1]-1), its backward and mg_adam_step(lrs[i], ..., first_step + i), its loss to
 * losses[i]. Returns the steps done. When it returns i < k, *status says why step i was not done,
 * with the arena in its state from before step i (gradients zero): MG_STEP_NONFINITE (its loss,
 * in losses[i], is not finite) or the MG_ERR_* code of its forward or Adam. */
#define MG_STEP_NONFINITE 1
int64_t mg_dense_steps(mg_dense *d, mg_arena *a, int64_t k, const int64_t *plans, const int64_t *offsets,
                       const int64_t *tokens, const double *lrs, double beta1, double beta2, double eps,
                       int64_t first_step, double *losses, int *status);

/* Sampling on a plan's forward (a plan whose steps run layer by layer: mg_dense_positions gives
 * its positions, 0 for another plan). mg_dense_sample runs position pos for token, reading the
 * keys and values the calls before it left for positions 0 .. pos-1 (pos 0 starts over), and
 * writes softmax(logits * scale) to probs (nprobs = the logits' size; 0: the forward only), each
 * number the seed's. MG_ERR_ARG for a position out of the plan or out of turn, or a token out of
 * range; MG_ERR_CHANGED if the arena changed since position 0. It leaves no step to differentiate
 * (mg_dense_backward refuses), and a training forward ends the sequence. */
int64_t mg_dense_positions(const mg_dense *d, int64_t plan);
int mg_dense_sample(mg_dense *d, mg_arena *a, int64_t plan, int64_t pos, int64_t token, double scale,
                    double *probs, int64_t nprobs);

/* --- Values from Python (arena.c) ------------------------------------------------------------
 * mg_data/mg_grad: one node's data or gradient; NaN when the handle is refused, which
 * mg_node_status then tells apart from a node whose value is NaN (0 or MG_ERR_*).
 * mg_node_op: the node's MG_OP_* code below (>= 0), or MG_ERR_*. */
#define MG_OP_LEAF 0
#define MG_OP_ADD  1
#define MG_OP_ADDC 2
#define MG_OP_MUL  3
#define MG_OP_MULC 4
#define MG_OP_POW  5
#define MG_OP_LOG  6
#define MG_OP_EXP  7
#define MG_OP_RELU 8
#define MG_OP_DOT  9
double mg_data(mg_arena *a, int64_t x);
double mg_grad(mg_arena *a, int64_t x);
int mg_node_status(mg_arena *a, int64_t x);
int mg_node_op(mg_arena *a, int64_t x);

/* A Values arena: the default arena of one Python thread, holding the Values a user makes.
 * It is bound to the thread that made it: a call from any other thread is refused with
 * MG_ERR_THREAD before anything is read (also mg_backward and the node-handle calls above, given
 * its nodes). Python's Value objects name its nodes through slots: a slot handle is a small
 * integer that keeps naming its node while the arena compacts. Each op below makes a node and a
 * slot for it; the Python object releases its slot when it dies (mg_v_release). When the nodes
 * have doubled since the last compaction, an op returns MG_ERR_RELEASE once, doing nothing, so
 * that the caller releases the slots of Values that died; called again, it first compacts: the
 * nodes no slot reaches (through children) are dropped, the rest slide down in order (children
 * stay below parents).
 * A scope (mg_v_scope_begin/end) drops every node made inside it at its end: the slots that
 * named them are refused from then on (MG_ERR_STALE) until released. Reset and keep are refused. */
mg_arena *mg_values_new(void);                /* NULL when out of memory */
int64_t mg_v_leaf(mg_arena *a, double x);
int64_t mg_v_add(mg_arena *a, int64_t x, int64_t y);
int64_t mg_v_add_const(mg_arena *a, int64_t x, double c);
int64_t mg_v_mul(mg_arena *a, int64_t x, int64_t y);
int64_t mg_v_mul_const(mg_arena *a, int64_t x, double c);
int64_t mg_v_pow(mg_arena *a, int64_t x, double k);
int64_t mg_v_log(mg_arena *a, int64_t x);
int64_t mg_v_exp(mg_arena *a, int64_t x);
int64_t mg_v_relu(mg_arena *a, int64_t x);
double mg_v_data(mg_arena *a, int64_t x);     /* NaN when refused: mg_v_status tells */
double mg_v_grad(mg_arena *a, int64_t x);
int mg_v_status(mg_arena *a, int64_t x);      /* 0 or MG_ERR_* */
int mg_v_set_data(mg_arena *a, int64_t x, double v);
int mg_v_set_grad(mg_arena *a, int64_t x, double v);
int64_t mg_v_node(mg_arena *a, int64_t x);    /* the node handle (mg_backward, mg_node_op); valid until
                                                 the next call that makes a node */
int64_t mg_v_children(mg_arena *a, int64_t x, int64_t *out, int64_t cap); /* count; new slots to out
                                                 (only when count <= cap) */
int mg_v_release(mg_arena *a, const int64_t *slots, int64_t n);   /* slots whose Values died */
int64_t mg_v_label(mg_arena *a, int64_t x);   /* the node's label id (0: none) */
int mg_v_set_label(mg_arena *a, int64_t x, int64_t id);
int mg_v_labels_used(mg_arena *a, uint8_t *used, int64_t nids);   /* used[id] = 1 for each label id a
                                        node holds (ids 0 .. nids-1; call mg_v_collect first to drop dead nodes) */
int mg_v_relabel(mg_arena *a, const int64_t *map, int64_t nids);  /* every node's label id: map[id] */
int64_t mg_v_collect(mg_arena *a);            /* compact now; returns the nodes alive */
#define MG_MAX_SCOPES 64                      /* scopes open at once in a Values arena */
int mg_v_scope_begin(mg_arena *a);            /* returns the depth (at most MG_MAX_SCOPES) */
int mg_v_scope_end(mg_arena *a);
int64_t mg_v_slots(const mg_arena *a);        /* slots in use */

/* The Values functions above as one table (values_api.h), for microgpt._values, the c backend's Value
 * type: it calls them directly, with the GIL held (values_api.c). */
typedef struct mg_values_api mg_values_api;
const mg_values_api *mg_values_api_get(void);
