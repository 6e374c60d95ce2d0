/*
 * adam_lanes.h -- Adam's vector path, LANES parameters at a time: included by adam.c once for
 * each width (four lanes with AVX2 and FMA, eight with AVX-512), which defines first
 *   LANES, LANES_TARGET (the target attribute), LANES_NAME(name) (name with the width appended),
 *   SPLAT(x), FMSUB(a, b, c) (a*b - c, one rounding), SQRT(x), LANE_BITS(mask) (a bit a lane),
 *   SELECT(mask, a, b) (each lane: b where the mask's lane is set, else a),
 * and undefines them at the end. Every lane is what adam_param gives: the same expressions,
 * lane by lane, so both widths give the same bits as the scalar path.
 *
 * The shortcut for g**2 and v_hat**0.5 is pymath.h's test, with the product errors computed
 * exactly by FMA instead of Dekker's split (both are exact, so the decisions are the same), or
 * where it refuses, both of pow()'s possible answers giving the same bits. Where a lane is not
 * decided so (pow() decides it, or Python would raise), its new values are not written: the
 * bit of each lane that was is set in the result, and the caller runs adam_param_known on the
 * others.
 */

#define LANES_ALL ((1 << LANES) - 1)

// LANES doubles; the same where an array's doubles are read or written (any alignment); LANES int64
typedef double LANES_NAME(mg_vd) __attribute__((vector_size(8 * LANES)));
typedef double LANES_NAME(mg_vdu) __attribute__((vector_size(8 * LANES), aligned(8), __may_alias__));
typedef int64_t LANES_NAME(mg_vi) __attribute__((vector_size(8 * LANES)));
#define VD LANES_NAME(mg_vd)
#define VDU LANES_NAME(mg_vdu)
#define VI LANES_NAME(mg_vi)

__attribute__((target(LANES_TARGET))) static inline VD LANES_NAME(abs)(VD x) {
    return (VD)((VI)x & 0x7fffffffffffffffLL);
}

// pymath.h's shortcut test (py_square, py_sqrt), a lane at a time: the same ranges, the same
// tolerances. Anything it does not accept goes to pow() through adam_param_known, which is
// exact whatever a lane's test said; this only chooses which lanes are fast.
// The ULP of each lane, a mask of the lanes in [lowest, 2^1000) and not a power of two (with
// lowest 2^-900, py_fast_ulp's range), and the lane's bound factor: near for s in [2^-64, 2^64),
// else far (py_fast_tolerance's 0.47 and 0.4, times what the caller's test multiplies them by).
__attribute__((target(LANES_TARGET))) static inline VD LANES_NAME(ulp)(VD s, double lowest, VI *valid, VD *factor,
                                                                     double near, double far) {
    VI bits = (VI)s;
    *valid = (s >= SPLAT(lowest)) & (s < SPLAT(0x1p1000)) & ((bits & 0x000fffffffffffffLL) != 0);
    VI is_near = (s >= SPLAT(0x1p-64)) & (s < SPLAT(0x1p64));
    *factor = SELECT(is_near, SPLAT(far), SPLAT(near));
    return (VD)((bits & 0x7ff0000000000000LL) - (52LL << 52));
}

// Lanes i .. i+LANES-1. Returns the bits of the lanes written (their gradients zeroed with
// zero_grads), with the bits of the lanes whose v g*g decides (the test passed, or pow()'s two
// answers agree) shifted 8 up. With idle (a constant: two versions), idle lanes are written too:
// g = +-0, m subnormal or +-0, v >= 0 and |p| >= idle_p_min. Their first moment comes from
// idle_first_moment, their value stays (p - lr_t m_hat / den is p: idle_lanes_possible), and
// their arithmetic here runs on m = 0 instead: subnormal operands make every vector operation
// on them many times slower.
__attribute__((target(LANES_TARGET), always_inline)) static inline int LANES_NAME(adam_lanes)(
    const adam_args *A, int64_t i, int zero_grads, double *m_hat_out, double *v_hat_out, int idle) {
    VD g = *(const VDU *)(A->grad + i), m = *(const VDU *)(A->m + i), v = *(const VDU *)(A->v + i);
    VD p = *(const VDU *)(A->data + i), m_used = m;
    VI idle_lanes = { 0 };
    if (idle) {
        idle_lanes = (g == SPLAT(0.0)) & (LANES_NAME(abs)(m) < SPLAT(0x1p-1022)) & (v >= SPLAT(0.0)) &
                     (LANES_NAME(abs)(p) >= SPLAT(A->idle_p_min));
        m_used = (VD)((VI)m & ~idle_lanes);
    }
    VD mi = SPLAT(A->beta1) * m_used + SPLAT(A->c1) * g;
    VD s = g * g;
    VD s_err = FMSUB(g, g, s);                          // g*g - s, exactly
    VD vi = SPLAT(A->beta2) * v + SPLAT(A->c2) * s;
    VD m_hat = mi / SPLAT(A->b1), v_hat = vi / SPLAT(A->b2);
    VD r = SQRT(v_hat);
    VD pr = r * r;
    VD r_err = (v_hat - pr) - FMSUB(r, r, pr);          // v_hat - r*r, exactly
    VD den = r + SPLAT(A->eps);
    VI s_valid, r_valid;
    VD s_tol, r_factor;
    VD us = LANES_NAME(ulp)(s, 0x1p-900, &s_valid, &s_tol, 0.47, 0.4);
    // py_sqrt's range is v_hat >= 2^-900: r = sqrt(v_hat) >= 2^-450 and not a power of two is r >
    // 2^-450, which puts v_hat above 2^-900
    VD ur = LANES_NAME(ulp)(r, 0x1p-450, &r_valid, &r_factor, 2.0 * 0.47 * (1.0 - 0x1p-40),
                            2.0 * 0.4 * (1.0 - 0x1p-40));
    // pymath.h's bounds: |g*g - s| <= tol us, |v_hat - r*r| <= 2 tol (1 - 2^-40) r ur
    VI s_ok = (s_valid & (LANES_NAME(abs)(s_err) <= s_tol * us)) | (g == SPLAT(0.0));
    VI r_ok = (r_valid & (LANES_NAME(abs)(r_err) <= r_factor * r * ur)) |
              (v_hat == SPLAT(0.0));                    // sqrt(-0.0) is -0.0, but den is eps either way
    VD a = SPLAT(A->lr_t) * m_hat, new_p = p - a / den;
    // Where a test refuses s = g*g (the exact square within 0.03 ULP of a midpoint), pow()'s
    // answer is s or s's neighbour on the exact value's side (s_err's sign): pow() rounds once
    // from within 0.034 ULP of the exact value (pymath.h), which lies within half an ULP of s on
    // that side. Where both give v the same bits, v does not depend on which pow() returns, and
    // the lane is written; likewise for r = sqrt(v_hat) (r_err's sign) and p. A step of one ULP
    // in g**2 moves c2 g**2 by 1% of an ULP of it, and one in r moves p's update by an ULP of
    // the update: mostly too little to change the rounding of v or p, so pow() is rarely needed.
    // Lanes out of range (where pow() could raise, or a step from 0 would make a subnormal, many
    // times slower to compute with) take a step of 0 and are not written by this.
    VI s_step = s_valid & (((s_err > SPLAT(0.0)) & 2) - 1);
    s_ok |= s_valid & ((VI)vi == (VI)(SPLAT(A->beta2) * v + SPLAT(A->c2) * (VD)((VI)s + s_step)));
    if (A->eps > 0.0) {                        // no den of 0 either way
        VI r_step = r_valid & (((r_err > SPLAT(0.0)) & 2) - 1);
        r_ok |= r_valid & ((VI)new_p == (VI)(p - a / ((VD)((VI)r + r_step) + SPLAT(A->eps))));
    }
    VI ok = s_ok & r_ok & (den != SPLAT(0.0));
    if (idle) {
        int lanes = LANE_BITS(idle_lanes);
        if (lanes) {
            double ms[LANES], gs[LANES];
            *(VDU *)ms = m, *(VDU *)gs = g;
            for (int k = 0; k < LANES; k++)
                if (lanes >> k & 1) ms[k] = idle_first_moment(ms[k], gs[k], A->beta1_m);
            mi = SELECT(idle_lanes, mi, *(const VDU *)ms);
            new_p = SELECT(idle_lanes, new_p, p);
            ok |= idle_lanes;
        }
    }
    // A lane not written gets its old value back (a masked store is microcoded on AMD): in place,
    // adam_param_known reads it later; otherwise it writes that lane's result over it.
    *(VDU *)(A->next_m + i) = SELECT(ok, m, mi);
    *(VDU *)(A->next_v + i) = SELECT(ok, v, vi);
    *(VDU *)(A->next_p + i) = SELECT(ok, p, new_p);
    if (zero_grads) *(VDU *)(A->grad + i) = (VD)((VI)g & ~ok);
    *(VDU *)m_hat_out = m_hat;
    *(VDU *)v_hat_out = v_hat;
    return LANE_BITS(ok) | LANE_BITS(s_ok) << 8;
}

// Parameters 0 .. n-1 (a multiple of LANES), a block at a time: first every lane the shortcut
// decides, LANES at a time and without a branch (a branch taken at random for one lane in ten
// cost more than the arithmetic), noting each vector's outcome; then the lanes it left, in
// order, through adam_param_known (only those can fail, so the first error is still the first
// failing parameter's). A lane left is untouched until then, its gradient included. One
// function, so that the step's constants stay in registers: they are read from a local copy,
// which no store through the arrays' pointers can change (through A_shared, the compiler must
// reload them after every store). Outcomes are looked at four vectors at a time: a lane is left
// about once in a thousand, so most fours have none.
__attribute__((target(LANES_TARGET))) static int LANES_NAME(adam_simd)(const adam_args *A_shared, int64_t n,
                                                                     int zero_grads) {
    const adam_args local = *A_shared, *A = &local;
    const uint64_t all_written = LANES_ALL * 0x0001000100010001ULL;   // four outcomes, every lane written
    uint16_t outcome[ADAM_BLOCK / LANES];   // adam_lanes's result for each vector of the block
    double m_hat[ADAM_BLOCK], v_hat[ADAM_BLOCK];    // and what it computed, for the lanes it left
    for (int64_t start = 0; start < n; start += ADAM_BLOCK) {
        int64_t end = n - start < ADAM_BLOCK ? n : start + ADAM_BLOCK;
        if (A->idle)
            for (int64_t i = start; i < end; i += LANES)
                outcome[(i - start) / LANES] = (uint16_t)LANES_NAME(adam_lanes)(A, i, zero_grads, m_hat + (i - start),
                                                                                v_hat + (i - start), 1);
        else
            for (int64_t i = start; i < end; i += LANES)
                outcome[(i - start) / LANES] = (uint16_t)LANES_NAME(adam_lanes)(A, i, zero_grads, m_hat + (i - start),
                                                                                v_hat + (i - start), 0);
        for (int64_t i = start; i < end; i += LANES) {
            if ((i - start) % (4 * LANES) == 0 && end - i >= 4 * LANES) {
                uint64_t four;
                memcpy(&four, outcome + (i - start) / LANES, sizeof four);
                if ((four & all_written) == all_written) {
                    i += 3 * LANES;
                    continue;
                }
            }
            int o = outcome[(i - start) / LANES];
            for (unsigned left = ~(unsigned)o & LANES_ALL; left; left &= left - 1) {
                int k = __builtin_ctz(left), known = (o >> (8 + k)) & 1 ? KNOWN_M_HAT | KNOWN_SQUARE : KNOWN_M_HAT;
                int64_t j = i - start + k;
                int rc = adam_param_known(A, i + k, known, m_hat[j], v_hat[j]);
                if (rc) return rc;
                if (zero_grads) A->grad[i + k] = 0.0;
            }
        }
    }
    return 0;
}

// cannot_fail's scan of the gradients, LANES at a time (n a multiple of LANES)
__attribute__((target(LANES_TARGET))) static int LANES_NAME(any_unsafe_simd)(const double *g, int64_t n) {
    VI bad = { 0 };
    for (int64_t i = 0; i < n; i += LANES) {
        VD ag = LANES_NAME(abs)(*(const VDU *)(g + i));
        bad |= (ag >= SPLAT(0x1p511)) & (ag != SPLAT(INFINITY));
    }
    return LANE_BITS(bad) != 0;
}

#undef LANES_ALL
#undef LANES
#undef LANES_TARGET
#undef LANES_NAME
#undef VD
#undef VDU
#undef VI
#undef SPLAT
#undef FMSUB
#undef SQRT
#undef LANE_BITS
#undef SELECT
