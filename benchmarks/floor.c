/*
 * floor.c -- what Adam's step cannot do without, as bare loops: lower bounds on csrc/adam.c's
 * time on this CPU, timed beside it by test_sizes.py (the "Adam step" groups).
 *
 *   floor_divisions: the four operations every parameter needs that the divider does, m/b1,
 *     v/b2, the root of v_hat and the update's division, and nothing else. Over a block that
 *     stays in the first-level cache, so that memory costs nothing.
 *   floor_traffic: the bytes Adam moves, and nothing else: p, g, m and v read, p, m and v
 *     written, g zeroed (the next step's sums start from it).
 *
 * Built for this CPU (-march=native, -O3, no errno from sqrt) so that the compiler takes the
 * widest vectors it has; no multiply-add contraction, as in the package.
 */
#include <math.h>
#include <stdint.h>

#define FLOOR_BLOCK 1024     // parameters: 3 arrays of 8 KB

// n parameters' divisions and roots, through one block of FLOOR_BLOCK again and again; the
// results are added into out, so that no pass can be left out
void floor_divisions(const double *m, const double *v, double *out, int64_t n, double b1, double b2,
                     double lr, double eps) {
    for (int64_t done = 0; done < n; done += FLOOR_BLOCK) {
        int64_t len = n - done < FLOOR_BLOCK ? n - done : FLOOR_BLOCK;
        for (int64_t i = 0; i < len; i++) {
            double m_hat = m[i] / b1, v_hat = v[i] / b2;
            out[i] += lr * m_hat / (sqrt(v_hat) + eps);
        }
    }
}

void floor_traffic(double *p, double *g, double *m, double *v, int64_t n, double c) {
    for (int64_t i = 0; i < n; i++) {
        double gi = g[i];
        m[i] = m[i] * c + gi;
        v[i] = v[i] * c + gi;
        p[i] = p[i] - gi * c;
        g[i] = 0.0;
    }
}
