/*
 * dot.h -- the seed's dot product over arrays of values, and its backward terms, written once
 * for every file that runs them (kernels.c, backward.c, dense.c): header-only, so nothing here
 * is a call between files.
 *
 * Every sum is the seed's chain, 0 + w0*x0, then + w_j*x_j in order: never reassociated, never
 * contracted into a fused multiply-add (the build forbids it). The AVX2 forms, chosen at run
 * time (MGI_HAVE_AVX2), compute the same products and sums lane by lane. Include after
 * <stdint.h>.
 */
#ifndef MG_DOT_H
#define MG_DOT_H

// the seed's sum(w_j * x_j)
static inline double mgi_dot_chain(const double *w, const double *x, int64_t n) {
    double acc = w[0] * x[0] + 0.0;
    for (int64_t j = 1; j < n; j++) acc = acc + w[j] * x[j];
    return acc;
}

// four rows of w (row-major, n columns) against x: four independent chains, each exactly
// mgi_dot_chain's, so the additions overlap instead of each waiting for the one before
static inline void mgi_dot_rows4(const double *w, const double *x, int64_t n, double out[4]) {
    const double *w0 = w, *w1 = w0 + n, *w2 = w1 + n, *w3 = w2 + n;
    double s0 = w0[0] * x[0] + 0.0, s1 = w1[0] * x[0] + 0.0, s2 = w2[0] * x[0] + 0.0, s3 = w3[0] * x[0] + 0.0;
    for (int64_t j = 1; j < n; j++) {
        double xj = x[j];
        s0 = s0 + w0[j] * xj;
        s1 = s1 + w1[j] * xj;
        s2 = s2 + w2[j] * xj;
        s3 = s3 + w3[j] * xj;
    }
    out[0] = s0, out[1] = s1, out[2] = s2, out[3] = s3;
}

// A dot node's backward terms: gw[j] += x[j] * g and gx[j] += w[j] * g for every j, each a
// different node getting its one term (so the order of the j does not matter)
static inline void mgi_dot_terms(double *restrict gw, double *restrict gx, const double *w, const double *x,
                                 int64_t n, double g) {
    for (int64_t j = 0; j < n; j++) {
        gw[j] += x[j] * g;
        gx[j] += w[j] * g;
    }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(MG_NO_SIMD)
#include <immintrin.h>
__attribute__((target("avx2"))) static inline void mgi_dot_terms_avx2(double *restrict gw, double *restrict gx,
                                                                      const double *w, const double *x, int64_t n,
                                                                      double g) {
    __m256d vg = _mm256_set1_pd(g);
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        _mm256_storeu_pd(gw + j, _mm256_add_pd(_mm256_loadu_pd(gw + j), _mm256_mul_pd(_mm256_loadu_pd(x + j), vg)));
        _mm256_storeu_pd(gx + j, _mm256_add_pd(_mm256_loadu_pd(gx + j), _mm256_mul_pd(_mm256_loadu_pd(w + j), vg)));
    }
    mgi_dot_terms(gw + j, gx + j, w + j, x + j, n - j, g);
}
#define MGI_HAVE_AVX2() __builtin_cpu_supports("avx2")
#define MGI_DOT_TERMS(simd, ...) ((simd) ? mgi_dot_terms_avx2(__VA_ARGS__) : mgi_dot_terms(__VA_ARGS__))
#else
#define MGI_HAVE_AVX2() 0
#define MGI_DOT_TERMS(simd, ...) ((void)(simd), mgi_dot_terms(__VA_ARGS__))
#endif

#endif
