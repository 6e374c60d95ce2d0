/*
 * pymath.h -- CPython's float `**`, math.exp and math.log, in C, with the same results and errors.
 *
 * The seed computes with Python floats, so every number here must be the double CPython would
 * produce: py_pow mirrors float_pow (Objects/floatobject.c), py_exp and py_log mirror math_1 and
 * m_log (Modules/mathmodule.c), including how they read errno. Use py_pow wherever the seed writes
 * `**`: never sqrt(x) for x**0.5 nor 1/x for x**-1 (the libm pow does not always agree with them),
 * and never let the compiler make that substitution either (see py_pow).
 *
 * Rules: errors are reported by setting *err to an MG_ERR_* code (it is left alone on success),
 * never by raising or aborting. Include after <errno.h>, <math.h> and "microgpt.h".
 * Not here: anything about nodes or the arena (internal.h).
 */
#ifndef MG_PYMATH_H
#define MG_PYMATH_H

// --- float ** float (float_pow)

static inline int py_is_odd_integer(double y) { return fmod(fabs(y), 2.0) == 1.0; }

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
    if (negate) r = -r;
    if (errno != 0) { *err = errno == ERANGE ? MG_ERR_OVERFLOW : MG_ERR_DOMAIN; return 0.0; }
    return r;
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
