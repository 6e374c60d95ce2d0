/*
 * adam.c -- the seed's Adam over the arena's first nparams nodes (the parameters), with the
 * learning rate of the step given (the schedule is Python's). The moments live in the arena.
 *
 * Every number is the expression CPython evaluates for the seed, in its order, with Python's
 * errors where C would make inf or nan. g**2 and v_hat**0.5 take pymath.h's exact shortcut
 * (pow()'s bits, proved there, faster). Where the CPU allows, four or eight parameters go at
 * once (adam_lanes.h, included here once for each width).
 *
 * Not here: the gradients (backward.c), anything about which nodes are parameters beyond
 * "the first nparams", the worker threads an in-place step may be split over (pool.c; the dense
 * executor owns them and lends them: mgi_adam_step).
 */
#include <stdint.h>
#include <string.h>
#include "microgpt.h"
#include "arena.h"
#include "adam.h"
#include "pool.h"

int mg_adam_init(mg_arena *a, int64_t nparams) {
    mgi_count_call(a);
    if (!a || nparams < 0 || nparams > a->keep) return MG_ERR_ARG;
    mgi_note_change(a);
    void *p[] = { a->adam_m, a->adam_v, a->next_m, a->next_v, a->next_p };
    const size_t size[] = { sizeof *a->adam_m, sizeof *a->adam_v, sizeof *a->next_m, sizeof *a->next_v,
                            sizeof *a->next_p };
    int rc = mgi_grow(&a->mem, p, size, 5, 0, &a->adam_cap, nparams, MG_IDX_LIMIT);
    a->adam_m = p[0], a->adam_v = p[1], a->next_m = p[2], a->next_v = p[3], a->next_p = p[4];
    if (rc) return rc;                           // the old nparams stays usable
    if (nparams > 0) {
        memset(a->adam_m, 0, (size_t)nparams * sizeof *a->adam_m);
        memset(a->adam_v, 0, (size_t)nparams * sizeof *a->adam_v);
    }
    a->nparams = nparams;
    a->idle_moments = 0;
    a->negative_moments = 0;
    return 0;
}

// What one step's update needs, for every parameter.
typedef struct {
    double lr_t, beta1, beta2, eps, b1, b2, c1, c2;   // c1 = 1 - beta1, c2 = 1 - beta2
    int err_b1, err_b2;     // the bias corrections' own errors (pow, or division by zero)
    int in_place;           // cannot_fail holds: pow() raises nothing, so its errno is not read
    int idle;               // look for idle lanes (see idle_lanes_possible)
    double idle_p_min;      // the least |p| whose update is provably p itself for an idle lane
    uint64_t beta1_m;       // beta1 * 2^53, an integer (beta1 in [0.5, 1))
    const double *m, *v, *data;
    double *grad;           // zeroed as it is used, when the step writes in place
    double *next_m, *next_v, *next_p;
} adam_args;

// Parameter i, exactly as the seed, with its errors in its order: 0 or the error code.
// `known` says what the vector path (adam_lanes.h) already computed for it (adam_param:
// nothing): with KNOWN_M_HAT, m_hat; with KNOWN_SQUARE too, that v from g*g is v from g**2 (the
// test passed, or pow()'s two possible answers agree) and v_hat, whose root the vector path did
// not decide (or den was 0), so pow() decides v_hat**0.5.
enum { KNOWN_M_HAT = 1, KNOWN_SQUARE = 2 };

// pow() alone, where no error is possible: in an in-place step (cannot_fail), |g| < 2^511, so
// g**2 neither overflows nor raises when it underflows (CPython ignores ERANGE with a result of
// 0, the only underflow for which glibc's pow sets it), and v_hat**0.5 of a finite v_hat > 0 is
// in range. Only with glibc's pow (MG_POW_BOUND_KNOWN); elsewhere py_pow_positive reads errno.
// The exponent goes through a volatile, as in py_pow_positive, so that pow() itself is called.
static inline double pow_in_range(double x, double y) {
    volatile double opaque_y = y;
    return pow(x, opaque_y);
}

// g**2 and v_hat**0.5 by pow() itself (where the shortcut's test did not decide them), calling
// it at once where float_pow would, for a finite base not 0 (and not negative for the root)
static inline double pow_square(const adam_args *A, double g, int *err) {
    if (!(isfinite(g) && g != 0.0)) return py_pow(g, 2.0, err);
    return MG_POW_BOUND_KNOWN && A->in_place ? pow_in_range(fabs(g), 2.0) : py_pow_positive(fabs(g), 2.0, err);
}

static inline double pow_root(const adam_args *A, double v, int *err) {
    if (!(isfinite(v) && v > 0.0)) return py_pow(v, 0.5, err);
    return MG_POW_BOUND_KNOWN && A->in_place ? pow_in_range(v, 0.5) : py_pow_positive(v, 0.5, err);
}

static inline int adam_param_known(const adam_args *A, int64_t i, int known, double m_hat, double v_hat) {
    int err = 0;
    double g = A->grad[i];
    double mi = A->beta1 * A->m[i] + A->c1 * g;
    double g2 = known & KNOWN_SQUARE ? g * g : known ? pow_square(A, g, &err) : py_square(g, &err);   // g**2
    if (err) return err;
    double vi = A->beta2 * A->v[i] + A->c2 * g2;
    if (A->err_b1) return A->err_b1;
    if (!(known & KNOWN_M_HAT)) m_hat = mi / A->b1;
    if (A->err_b2) return A->err_b2;
    if (!(known & KNOWN_SQUARE)) v_hat = vi / A->b2;
    double den = (known & KNOWN_SQUARE ? pow_root(A, v_hat, &err) : py_sqrt(v_hat, &err)) + A->eps;   // v_hat**0.5
    if (err) return err;
    if (den == 0.0) return MG_ERR_ZERODIV;
    A->next_m[i] = mi;
    A->next_v[i] = vi;
    A->next_p[i] = A->data[i] - (A->lr_t * m_hat) / den;
    return 0;
}

static inline int adam_param(const adam_args *A, int64_t i) { return adam_param_known(A, i, 0, 0.0, 0.0); }

// Several parameters at once on a CPU with AVX2 and FMA, or AVX-512 (chosen at run time): four
// or eight lanes, each what adam_param gives (adam_lanes.h, built once for each width).
// Built with GCC or Clang for x86-64 only. MG_ADAM_LANES caps the width (a build that tests
// the four-lane path on a CPU with AVX-512 sets it to 4).
#if MG_POW_BOUND_KNOWN && defined(__x86_64__) && defined(__GNUC__) && !defined(MG_NO_SIMD)
#define MG_ADAM_SIMD 1
#include <immintrin.h>
#ifndef MG_ADAM_LANES                   // AVX-512's intrinsics here: GCC 7 and Clang 5 on
#if (defined(__clang__) && __clang_major__ >= 5) || (!defined(__clang__) && __GNUC__ >= 7)
#define MG_ADAM_LANES 8
#else
#define MG_ADAM_LANES 4
#endif
#endif

// beta1*m + c1*g for an idle lane (g = +-0, m subnormal or +-0, beta1 = beta1_m 2^-53 in
// [0.5, 1)), exactly, in integers: m = +-k 2^-1074, so beta1*m rounds to +-q 2^-1074 with q the
// nearest integer to k beta1_m / 2^53 (ties to even), a subnormal or 0; c1*g is a zero, and the
// sum of two zeros is -0 only when both are.
__extension__ typedef unsigned __int128 mg_u128;    // GCC's and Clang's, as is the rest of this path

static inline double idle_first_moment(double m, double g, uint64_t beta1_m) {
    uint64_t mb, gb;
    memcpy(&mb, &m, sizeof mb), memcpy(&gb, &g, sizeof gb);
    mg_u128 prod = (mg_u128)(mb & 0x000fffffffffffffULL) * beta1_m;
    uint64_t q = (uint64_t)(prod >> 53), rest = (uint64_t)prod & ((1ULL << 53) - 1);
    q += rest > (1ULL << 52) || (rest == (1ULL << 52) && (q & 1));
    uint64_t sign = mb & 0x8000000000000000ULL;
    if (q == 0) sign &= gb;
    uint64_t rb = sign | q;
    double r;
    memcpy(&r, &rb, sizeof r);
    return r;
}

#define ADAM_BLOCK 512                  // lanes a block: adam_simd's outcomes and saved m_hat, v_hat

#define LANES 4
#define LANES_TARGET "avx2,fma"
#define LANES_NAME(name) name##4
#define SPLAT(x) ((VD)_mm256_set1_pd(x))
#define FMSUB(a, b, c) ((VD)_mm256_fmsub_pd((__m256d)(a), (__m256d)(b), (__m256d)(c)))
#define SQRT(x) ((VD)_mm256_sqrt_pd((__m256d)(x)))
#define LANE_BITS(mask) _mm256_movemask_pd((__m256d)(mask))
#define SELECT(mask, a, b) ((VD)_mm256_blendv_pd((__m256d)(a), (__m256d)(b), (__m256d)(mask)))
#include "adam_lanes.h"

#if MG_ADAM_LANES >= 8
#define LANES 8
#define LANES_TARGET "avx512f,avx512dq,avx2,fma"
#define LANES_NAME(name) name##8
#define SPLAT(x) ((VD)_mm512_set1_pd(x))
#define FMSUB(a, b, c) ((VD)_mm512_fmsub_pd((__m512d)(a), (__m512d)(b), (__m512d)(c)))
#define SQRT(x) ((VD)_mm512_sqrt_pd((__m512d)(x)))
#define LANE_BITS(mask) ((int)_mm512_movepi64_mask((__m512i)(mask)))
#define SELECT(mask, a, b) ((VD)_mm512_mask_blend_pd(_mm512_movepi64_mask((__m512i)(mask)), (__m512d)(a), (__m512d)(b)))
#include "adam_lanes.h"
#endif

// the widest vector path this CPU runs (0: none)
static int simd_lanes(void) {
    if (MG_ADAM_LANES >= 8 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")) return 8;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 4;
    return 0;
}

// each path's entry points, by width
static int adam_simd(int lanes, const adam_args *A, int64_t n, int zero_grads) {
#if MG_ADAM_LANES >= 8
    if (lanes == 8) return adam_simd8(A, n, zero_grads);
#endif
    (void)lanes;
    return adam_simd4(A, n, zero_grads);
}

static int any_unsafe_simd(int lanes, const double *g, int64_t n) {
#if MG_ADAM_LANES >= 8
    if (lanes == 8) return any_unsafe_simd8(g, n);
#endif
    (void)lanes;
    return any_unsafe_simd4(g, n);
}
#else
#define MG_ADAM_SIMD 0
#endif

// Whether any of g[0 .. n-1] rules out writing in place (see cannot_fail)
static int any_unsafe(const double *g, int64_t n) {
    int64_t i = 0;
#if MG_ADAM_SIMD
    int lanes = simd_lanes();
    if (lanes) {
        i = n - n % lanes;
        if (any_unsafe_simd(lanes, g, i)) return 1;
    }
#endif
    for (; i < n; i++)
        if (fabs(g[i]) >= 0x1p511 && isfinite(g[i])) return 1;
    return 0;
}

// some second moment is < 0
static int any_negative(const double *v, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (v[i] < 0.0) return 1;
    return 0;
}

// Idle lanes: a parameter that gets no gradient for thousands of steps (a dead ReLU unit's row,
// say) keeps a first moment that decays into the subnormals and stays there (beta1 times the
// least subnormal rounds back to it), and a vector operation on a subnormal is many times
// slower. The vector path writes such lanes without that arithmetic where the step's constants allow
// it; it looks for them only while some first moment is subnormal (idle_moments: checked when
// the moments are written and every IDLE_RESCAN steps), so that other steps pay nothing.
#define IDLE_RESCAN 64

// some first moment is subnormal
static int any_subnormal(const double *m, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (m[i] != 0.0 && fabs(m[i]) < 0x1p-1022) return 1;
    return 0;
}

// Whether idle lanes may be written at once in this step, and the least |p| for which they may:
// for g = +-0, m subnormal or +-0 and v >= 0, the seed's update keeps p. |beta1*m + c1*g| is
// below 2^-1022, so |m_hat| <= 2^-1021 / b1 (b1 <= 1), |lr_t m_hat| <= A = |lr_t| 2^-1021 / b1
// + 2^-1074 and, den being at least eps (v_hat >= 0 with beta2 in (0, 1]), the quotient is at
// most X = 2 A / eps + 2^-1074, each rounding's error included. X <= |p| 2^-54 is below half
// an ULP of p, so p - X rounds to p: idle_p_min = 2^54 X, doubled against its own roundings.
static void idle_lanes_possible(adam_args *A, const mg_arena *a) {
    A->idle = 0;
    if (!a->idle_moments || !(A->beta1 >= 0.5 && A->beta1 < 1.0) || !(A->beta2 > 0.0 && A->beta2 <= 1.0) ||
        !(A->eps > 0.0) || !isfinite(A->lr_t) || A->err_b1 || A->err_b2 || !(A->b1 > 0.0 && A->b1 <= 1.0) ||
        !(A->b2 > 0.0))
        return;
    double least = 0x1p56 * (fabs(A->lr_t) * 0x1p-1021 / A->b1 + 0x1p-1074) / A->eps + 0x1p-1019;
    if (isnan(least)) return;
    A->idle = 1, A->idle_p_min = least, A->beta1_m = (uint64_t)(A->beta1 * 0x1p53);
}

// Every parameter, or the first error: four or eight at a time where the CPU allows it
// (adam_simd). Gradients are zeroed as they are used when zero_grads is set.
static int adam_run(const adam_args *A, int64_t n, int zero_grads) {
    int64_t i = 0;
#if MG_ADAM_SIMD
    int lanes = simd_lanes();
    if (!A->err_b1 && !A->err_b2 && lanes) {
        i = n - n % lanes;
        int rc = adam_simd(lanes, A, i, zero_grads);
        if (rc) return rc;
    }
#endif
    for (; i < n; i++) {
        int rc = adam_param(A, i);
        if (rc) return rc;
        if (zero_grads) A->grad[i] = 0.0;
    }
    return 0;
}

// --- an in-place step over a pool's threads: each part is a run of parameters (a multiple of 8
// long, so that each is whole vectors), and no update can fail (cannot_fail), so the runs are
// independent

static adam_args shifted(const adam_args *A, int64_t first) {
    adam_args B = *A;
    B.m += first, B.v += first, B.data += first, B.grad += first;
    B.next_m += first, B.next_v += first, B.next_p += first;
    return B;
}

// how many parts n parameters split into over the pool's threads, each min_share at least
static int64_t parts_for(mgi_pool *pool, int64_t n, int64_t min_share) {
    int64_t parts = pool ? mgi_pool_threads(pool) : 1;
    if (parts > 1 && min_share > 0 && n / min_share < parts) parts = n / min_share;
    return parts;
}

// part `part` of nparts of n parameters: first .. end-1 (first a multiple of 8; empty: first = end)
static void part_of(int64_t n, int64_t part, int64_t nparts, int64_t *first, int64_t *end) {
    int64_t chunk = (n / nparts + 7) & ~(int64_t)7;
    *first = part * chunk < n ? part * chunk : n;
    *end = part == nparts - 1 || *first + chunk > n ? n : *first + chunk;
}

typedef struct {
    const adam_args *A;
    int64_t n;
    int unsafe[MGI_MAX_THREADS];    // each part's own answer (no two threads write one)
} adam_job;

static void adam_part(void *ctx, int64_t part, int64_t nparts) {
    const adam_job *j = ctx;
    int64_t first, end;
    part_of(j->n, part, nparts, &first, &end);
    if (first >= end) return;
    adam_args B = shifted(j->A, first);
    (void)adam_run(&B, end - first, 1);          // cannot fail: checked before the split
}

static void scan_part(void *ctx, int64_t part, int64_t nparts) {
    adam_job *j = ctx;
    int64_t first, end;
    part_of(j->n, part, nparts, &first, &end);
    j->unsafe[part] = any_unsafe(j->A->grad + first, end - first);
}

// Whether no parameter's update can fail, so that the step may write in place: the rate's
// settings keep v >= 0 and den > 0, every v is >= 0 (or nan: negative_moments is clear), and no
// finite gradient is large enough for g**2 to overflow (inf and nan go through pow without an
// error). The scan of every gradient is split over the pool as the step itself is. The second
// moments need no scan: a step that writes in place keeps them >= 0 (beta2 v + c2 g**2 with
// beta2 and c2 in [0, 1]), so only mg_adam_write and a committed step can make one negative,
// and those set negative_moments.
static int cannot_fail(const mg_arena *a, const adam_args *A, int64_t n, mgi_pool *pool, int64_t min_share) {
    if (a->negative_moments || !(A->eps > 0.0 && A->beta2 >= 0.0 && A->beta2 <= 1.0 && A->b2 > 0.0)) return 0;
    int64_t parts = parts_for(pool, n, min_share);
    if (parts > MGI_MAX_THREADS) parts = MGI_MAX_THREADS;
    if (parts < 2) return !any_unsafe(A->grad, n);
    adam_job j = { .A = A, .n = n };
    mgi_pool_run(pool, scan_part, &j, parts);
    for (int64_t k = 0; k < parts; k++)
        if (j.unsafe[k]) return 0;
    return 1;
}

// every parameter in place, split over the pool's threads where each gets min_share at least
static int adam_in_place(const adam_args *A, int64_t n, mgi_pool *pool, int64_t min_share) {
    int64_t parts = parts_for(pool, n, min_share);
    if (parts < 2) return adam_run(A, n, 1);
    adam_job j = { .A = A, .n = n };
    mgi_pool_run(pool, adam_part, &j, parts);
    return 0;
}

// The seed's update, parameter by parameter in order, with its errors in its order (Python
// raises where C would make inf or nan). A step that fails changes nothing. When no update can
// fail (cannot_fail), each parameter's new moments and value are written in place, in one pass;
// otherwise they go to next_* first and are committed only after every parameter has succeeded.
int mgi_adam_step(mg_arena *a, mgi_pool *pool, int64_t min_share, double lr_t, double beta1, double beta2,
                  double eps, int64_t step) {
    mgi_count_call(a);
    if (!a || a->nparams < 0 || step < 0 || step == INT64_MAX) return MG_ERR_ARG;
    mgi_note_change(a);
    adam_args A = { .lr_t = lr_t, .beta1 = beta1, .beta2 = beta2, .eps = eps,
                    .c1 = 1.0 - beta1, .c2 = 1.0 - beta2,
                    .m = a->adam_m, .v = a->adam_v, .grad = a->grad, .data = a->data,
                    .next_m = a->next_m, .next_v = a->next_v, .next_p = a->next_p };
    A.b1 = 1.0 - py_pow(beta1, (double)(step + 1), &A.err_b1);
    A.b2 = 1.0 - py_pow(beta2, (double)(step + 1), &A.err_b2);
    if (!A.err_b1 && A.b1 == 0.0) A.err_b1 = MG_ERR_ZERODIV;      // float division by zero
    if (!A.err_b2 && A.b2 == 0.0) A.err_b2 = MG_ERR_ZERODIV;
    int64_t n = a->nparams;
    if (MG_ADAM_SIMD && step % IDLE_RESCAN == 0) a->idle_moments = any_subnormal(a->adam_m, n);
    idle_lanes_possible(&A, a);
    if (!A.err_b1 && !A.err_b2 && cannot_fail(a, &A, n, pool, min_share)) {
        mgi_values_change(a);
        A.next_m = a->adam_m, A.next_v = a->adam_v, A.next_p = a->data;   // each read before it is written
        A.in_place = 1;
        return adam_in_place(&A, n, pool, min_share);
    }
    int rc = adam_run(&A, n, 0);
    if (rc) return rc;
    mgi_values_change(a);
    double *t = a->adam_m; a->adam_m = a->next_m; a->next_m = t;    // commit
    t = a->adam_v; a->adam_v = a->next_v; a->next_v = t;
    a->negative_moments = any_negative(a->adam_v, n);      // this step's settings may allow one
    if (n > 0) {
        memcpy(a->data, a->next_p, (size_t)n * sizeof *a->data);
        memset(a->grad, 0, (size_t)n * sizeof *a->grad);
    }
    return 0;
}

int mg_adam_step(mg_arena *a, double lr_t, double beta1, double beta2, double eps, int64_t step) {
    return mgi_adam_step(a, NULL, 0, lr_t, beta1, beta2, eps, step);
}

int mg_adam_read(mg_arena *a, double *m, double *v) {
    mgi_count_call(a);
    if (!a || a->nparams < 0 || (a->nparams > 0 && (!m || !v))) return MG_ERR_ARG;
    if (a->nparams > 0) {
        memcpy(m, a->adam_m, (size_t)a->nparams * sizeof *m);
        memcpy(v, a->adam_v, (size_t)a->nparams * sizeof *v);
    }
    return 0;
}

int mg_adam_write(mg_arena *a, const double *m, const double *v) {
    mgi_count_call(a);
    if (!a || a->nparams < 0 || (a->nparams > 0 && (!m || !v))) return MG_ERR_ARG;
    mgi_note_change(a);
    if (a->nparams > 0) {
        memcpy(a->adam_m, m, (size_t)a->nparams * sizeof *m);
        memcpy(a->adam_v, v, (size_t)a->nparams * sizeof *v);
    }
    a->idle_moments = MG_ADAM_SIMD && any_subnormal(a->adam_m, a->nparams);
    a->negative_moments = any_negative(a->adam_v, a->nparams);
    return 0;
}
