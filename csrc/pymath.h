/*
 * pymath.h -- CPython's float `**`, math.exp and math.log, in C, with the same results and errors.
 *
 * The seed computes with Python floats, so every number here must be the double CPython would
 * produce: py_pow mirrors float_pow (Objects/floatobject.c), py_exp and py_log mirror math_1 and
 * m_log (Modules/mathmodule.c), including how they read errno. Use py_pow wherever the seed writes
 * `**`: never sqrt(x) for x**0.5 nor 1/x for x**-1 (the libm pow does not always agree with them)
 * except where this file proves they agree, and never let the compiler make that substitution
 * either (see py_pow_positive).
 *
 * Rules: errors are reported by setting *err to an MG_ERR_* code (it is left alone on success),
 * never by raising or aborting. Include after <errno.h>, <math.h> and "microgpt.h".
 * Not here: anything about nodes or the arena (internal.h).
 */
#ifndef MG_PYMATH_H
#define MG_PYMATH_H

// --- float ** float (float_pow)

static inline int py_is_odd_integer(double y) { return fmod(fabs(y), 2.0) == 1.0; }

// x**y for finite x > 0 and finite y != 0, where float_pow calls pow() without a special case,
// with CPython's reading of errno (ERANGE: overflow, unless the result underflowed to 0)
static inline double py_pow_positive(double x, double y, int *err) {
    // The exponent goes through a volatile so the compiler cannot see a constant: GCC rewrites
    // pow(x, -1.0) as 1.0/x and pow(x, 2.0) as x*x, and glibc's pow does not always agree with
    // those (measured: pow(5.88931969437088, -1) is one ulp above 1/x). CPython calls pow().
    volatile double opaque_y = y;
    errno = 0;
    double r = pow(x, opaque_y);
    if (errno == 0) {                                // _Py_ADJUST_ERANGE1
        if (isinf(r)) errno = ERANGE;
    } else if (errno == ERANGE && r == 0.0) {
        errno = 0;                                   // underflow to zero is not an error
    }
    if (errno != 0) { *err = errno == ERANGE ? MG_ERR_OVERFLOW : MG_ERR_DOMAIN; return 0.0; }
    return r;
}

// --- x**2, x**0.5 and x**-1 without calling pow(), where that provably gives pow()'s bits
//
// Adam evaluates g**2 and v_hat**0.5 for every parameter; pow() was 40% of a replayed step.
// glibc's pow (since 2.28: Arm's optimized-routines code) states its error as 0.54 ULP at worst,
// "~= ulperr_exp + 1024*Ln2*relerr_log*2^53" with ulperr_exp = 0.509 ULP and relerr_log =
// 1.3 * 2^-68: it rounds once, from a value within 0.009 + |y ln x| * 1.3 * 2^-15 ULP of the
// exact x**y. Where the exact x**y lies farther than that from every midpoint between two
// doubles, pow returns it correctly rounded, which x*x and sqrt(x) always are (IEEE 754).
// How far the exact value lies from x*x or sqrt(x) is computable: x*x - RN(x*x) and
// x - RN(sqrt(x))**2 are representable doubles (py_product_error computes them exactly), as is
// 1 - x*RN(1/x) (the remainder of a correctly rounded division).
// For y = 2, 0.5 and -1, |y ln x| = |ln result|: the error is under 0.0108 ULP for results in
// [2^-64, 2^64) and under 0.034 ULP for results in [2^-900, 2^1000). The fast answer is taken
// when the exact value is within 0.47 and 0.4 ULP of it, respectively (0.03 and 0.1 ULP from a
// midpoint: about 2.8 times those errors), not at a power of two (the ULP below it is half),
// and nowhere else; the nearest disagreement found in 3,000,000 random inputs was 0.4933 ULP
// from x*x or sqrt(x). Everything else calls pow(), as does every build where glibc's bound
// is not known to hold (another libm or architecture). tests/test_adam.py (squares and roots)
// and tests/test_native.py (reciprocals) check the results against CPython's ** on random and
// near-midpoint inputs.
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 28)) && \
    (defined(__x86_64__) || defined(__aarch64__))
#define MG_POW_BOUND_KNOWN 1
#else
#define MG_POW_BOUND_KNOWN 0
#endif

// how near, in ULPs of s, the exact result must be to s for s to be pow's answer (see above)
static inline double py_fast_tolerance(double s) {
    return s >= 0x1p-64 && s < 0x1p64 ? 0.47 : 0.4;
}

// the ULP of s, for 2^-900 <= s < 2^1000 not a power of two; else 0 (no fast answer)
static inline double py_fast_ulp(double s) {
    if (!(s >= 0x1p-900 && s < 0x1p1000)) return 0.0;
    union { double d; uint64_t u; } b = { .d = s };
    if ((b.u & 0x000fffffffffffffULL) == 0) return 0.0;          // a power of two
    b.u = (b.u & 0x7ff0000000000000ULL) - (52ULL << 52);         // 2^(exponent of s - 52)
    return b.d;
}

// a*b - p exactly, for p = RN(a*b) and 2^-450 <= |a|, |b| < 2^500 (Dekker's product: each
// factor is split into halves of 26 bits, whose products are exact). fma() would do, but it is
// a library call unless the compiler may assume the instruction; this stays inline.
static inline double py_product_error(double a, double b, double p) {
    double ca = 134217729.0 * a, cb = 134217729.0 * b;           // 2^27 + 1
    double ah = ca - (ca - a), al = a - ah, bh = cb - (cb - b), bl = b - bh;
    return ((ah * bh - p) + ah * bl + al * bh) + al * bl;
}

// x**-1 for finite x > 0: 1/x where that is pow()'s answer (the exact 1/x within 0.47 ULP of the
// rounded quotient q, which lies in [2^-64, 2^64) and is not a power of two), else 0.0 (not
// decided: the caller calls pow()). 1 - x*q is exact: x*q = p + e exactly, 1 - p is exact
// (Sterbenz: p is within 2^-51 of 1), and their difference is the representable remainder.
// 1/x - q = (1 - x*q) / x, so |1 - x*q| <= 0.47 (1 - 2^-40) ulp(q) x puts 1/x within 0.47 ULP of q
// (ulp(q) x is exact, a power of two times x; the (1 - 2^-40) covers the one rounding of the
// product with 0.47 (1 - 2^-40)).
static inline double py_fast_reciprocal(double x) {
#if MG_POW_BOUND_KNOWN
    double q = 1.0 / x, u = py_fast_ulp(q);
    if (!(q >= 0x1p-64 && q < 0x1p64) || u == 0.0) return 0.0;
    double p = q * x, r = (1.0 - p) - py_product_error(q, x, p);
    if (fabs(r) <= 0.47 * (1.0 - 0x1p-40) * (u * x)) return q;
#else
    (void)x;
#endif
    return 0.0;
}

static inline double py_pow(double x, double y, int *err) {
    if (y == 0.0) return 1.0;                        // x**0 is 1, even 0**0 and nan**0
    if (isnan(x)) return x;
    if (isnan(y)) return x == 1.0 ? 1.0 : y;
    if (isinf(y)) {
        double ax = fabs(x);
        if (ax == 1.0) return 1.0;
        if ((y > 0.0) == (ax > 1.0)) return fabs(y);  // inf
        return 0.0;
    }
    if (isinf(x)) {
        int odd = py_is_odd_integer(y);
        if (y > 0.0) return odd ? x : fabs(x);
        return odd ? copysign(0.0, x) : 0.0;
    }
    if (x == 0.0) {
        if (y < 0.0) { *err = MG_ERR_ZERODIV; return 0.0; }
        return py_is_odd_integer(y) ? x : 0.0;
    }
    int negate = 0;
    if (x < 0.0) {
        if (y != floor(y)) { *err = MG_ERR_COMPLEX; return 0.0; }
        x = -x;
        negate = py_is_odd_integer(y);
    }
    if (x == 1.0) return negate ? -1.0 : 1.0;
    if (y == -1.0) {                                 // the seed's every division: a * b**-1
        double q = py_fast_reciprocal(x);
        if (q != 0.0) return negate ? -q : q;
    }
    int e = 0;
    double r = py_pow_positive(x, y, &e);
    if (e) { *err = e; return 0.0; }
    return negate ? -r : r;
}

// A zero is exact everywhere: CPython's float_pow gives +0.0 for (+-0.0)**2 and for
// (+-0.0)**0.5 without calling pow(), which is what x*x and 0.0 are.
static inline double py_square(double x, int *err) {
    if (x == 0.0) return 0.0;
#if MG_POW_BOUND_KNOWN
    double s = x * x, u = py_fast_ulp(s);
    if (u != 0.0 && fabs(py_product_error(x, x, s)) <= py_fast_tolerance(s) * u) return s;
#endif
    return py_pow(x, 2.0, err);
}

static inline double py_sqrt(double x, int *err) {
    if (x == 0.0) return 0.0;
#if MG_POW_BOUND_KNOWN
    double s = sqrt(x), u = py_fast_ulp(s);
    if (u != 0.0 && x >= 0x1p-900) {
        // x - s*s is exact: s*s = p + e exactly, and x - p is exact (Sterbenz: p is within a
        // factor 2 of x). sqrt(x) - s = (x - s*s) / (sqrt(x) + s), which is (x - s*s) / 2s
        // within a relative 2^-52: |x - s*s| <= 2t(1 - 2^-40) * s * u puts sqrt(x) within t u of s.
        double p = s * s, r = (x - p) - py_product_error(s, s, p);
        if (fabs(r) <= 2.0 * py_fast_tolerance(s) * (1.0 - 0x1p-40) * s * u) return s;
    }
#endif
    return py_pow(x, 0.5, err);
}

// --- math.exp and math.log (math_1 with can_overflow = 1 and 0)

// after r = f(x): what math_1 would raise, or 0
static inline int py_math_1_error(double x, double r, int can_overflow) {
    if (isnan(r) && !isnan(x)) return MG_ERR_DOMAIN;
    if (isinf(r) && isfinite(x)) return can_overflow ? MG_ERR_OVERFLOW : MG_ERR_DOMAIN;
    if (isfinite(r) && errno != 0) {                 // is_error()
        if (errno != ERANGE) return MG_ERR_DOMAIN;   // EDOM, or anything unexpected
        if (fabs(r) >= 1.5) return MG_ERR_OVERFLOW;  // ERANGE from an underflow is fine
    }
    return 0;
}

static inline double py_exp(double x, int *err) {
    errno = 0;
    double r = exp(x);
    int e = py_math_1_error(x, r, 1);
    if (e) { *err = e; return 0.0; }
    return r;
}

static inline double py_log(double x, int *err) {
    double r;                                        // m_log
    errno = 0;
    if (isfinite(x)) {
        if (x > 0.0) r = log(x);
        else { errno = EDOM; r = x == 0.0 ? -HUGE_VAL : NAN; }
    } else if (isnan(x) || x > 0.0) {
        r = x;                                       // log(nan) = nan, log(inf) = inf
    } else {
        errno = EDOM; r = NAN;                       // log(-inf)
    }
    int e = py_math_1_error(x, r, 0);
    if (e) { *err = e; return 0.0; }
    return r;
}

#endif
