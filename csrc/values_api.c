/*
 * values_api.c -- the table of values_api.h: the compiler checks each entry against microgpt.h.
 * Constant: no state.
 */
#include <stddef.h>
#include <stdint.h>
#include "microgpt.h"
#include "values_api.h"

static const mg_values_api table = {
    sizeof table, mg_values_new, mg_arena_free, mg_v_leaf, mg_v_add, mg_v_add_const, mg_v_mul, mg_v_mul_const,
    mg_v_pow, mg_v_log, mg_v_exp, mg_v_relu, mg_v_data, mg_v_grad, mg_v_status, mg_v_set_data, mg_v_set_grad,
    mg_v_release,
};

const mg_values_api *mg_values_api_get(void) { return &table; }
