/*
 * adam.c -- the seed's Adam over the arena's first nparams nodes (the parameters), with the
 * learning rate of the step given (the schedule is Python's). The moments live in the arena.
 *
 * Every number is the expression CPython evaluates for the seed, in its order, with Python's
 * errors where C would make inf or nan. g**2 and v_hat**0.5 take pymath.h's exact shortcut
 * (pow()'s bits, proved there, faster).
 *
 * Not here: the gradients (backward.c), anything about which nodes are parameters beyond
 * "the first nparams".
 */
#include <stdint.h>
#include <string.h>
#include "microgpt.h"
#include "arena.h"

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
    return 0;
}

// The seed's update, parameter by parameter in order, with its errors in its order (Python
// raises where C would make inf or nan). A step that fails changes nothing: the new moments and
// values go to next_* first and are committed only after every parameter has succeeded.
int mg_adam_step(mg_arena *a, double lr_t, double beta1, double beta2, double eps, int64_t step) {
    mgi_count_call(a);
    if (!a || a->nparams < 0 || step < 0 || step == INT64_MAX) return MG_ERR_ARG;
    mgi_note_change(a);
    int err_b1 = 0, err_b2 = 0, err = 0;
    double b1 = 1.0 - py_pow(beta1, (double)(step + 1), &err_b1);
    double b2 = 1.0 - py_pow(beta2, (double)(step + 1), &err_b2);
    if (!err_b1 && b1 == 0.0) err_b1 = MG_ERR_ZERODIV;      // float division by zero
    if (!err_b2 && b2 == 0.0) err_b2 = MG_ERR_ZERODIV;
    const double *m = a->adam_m, *v = a->adam_v, *grad = a->grad, *data = a->data;
    double *next_m = a->next_m, *next_v = a->next_v, *next_p = a->next_p;
    for (int64_t i = 0; i < a->nparams; i++) {
        double g = grad[i];
        double mi = beta1 * m[i] + (1.0 - beta1) * g;
        double g2 = py_square(g, &err);              // g**2 (pymath.h: pow's bits, faster)
        if (err) return err;
        double vi = beta2 * v[i] + (1.0 - beta2) * g2;
        if (err_b1) return err_b1;
        double m_hat = mi / b1;
        if (err_b2) return err_b2;
        double v_hat = vi / b2;
        double den = py_sqrt(v_hat, &err) + eps;     // v_hat**0.5
        if (err) return err;
        if (den == 0.0) return MG_ERR_ZERODIV;
        next_m[i] = mi;
        next_v[i] = vi;
        next_p[i] = data[i] - (lr_t * m_hat) / den;
    }
    mgi_values_change(a);
    double *t = a->adam_m; a->adam_m = a->next_m; a->next_m = t;    // commit
    t = a->adam_v; a->adam_v = a->next_v; a->next_v = t;
    if (a->nparams > 0) {
        memcpy(a->data, next_p, (size_t)a->nparams * sizeof *a->data);
        memset(a->grad, 0, (size_t)a->nparams * sizeof *a->grad);
    }
    return 0;
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
    return 0;
}
