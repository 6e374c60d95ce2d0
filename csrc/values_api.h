/*
 * values_api.h -- the Values-arena functions of arena.c as one table, for the extension module
 * microgpt._values (ext/values.c). That module is the c backend's Value type: it calls these
 * through the table with the GIL held, instead of through cffi, whose every call releases and
 * takes back the GIL. The table is handed over as an address (mg_values_api_get, through cffi),
 * so both modules run one copy of the arena code, with one thread token. Include microgpt.h first.
 */
#ifndef MG_VALUES_API_H
#define MG_VALUES_API_H
#include <stddef.h>
#include <stdint.h>

struct mg_values_api {
    size_t size;                                /* sizeof(struct mg_values_api): a mismatch is refused */
    mg_arena *(*values_new)(void);
    void (*arena_free)(mg_arena *a);
    int64_t (*leaf)(mg_arena *a, double x);
    int64_t (*add)(mg_arena *a, int64_t x, int64_t y);
    int64_t (*add_const)(mg_arena *a, int64_t x, double c);
    int64_t (*mul)(mg_arena *a, int64_t x, int64_t y);
    int64_t (*mul_const)(mg_arena *a, int64_t x, double c);
    int64_t (*pow)(mg_arena *a, int64_t x, double k);
    int64_t (*log)(mg_arena *a, int64_t x);
    int64_t (*exp)(mg_arena *a, int64_t x);
    int64_t (*relu)(mg_arena *a, int64_t x);
    double (*data)(mg_arena *a, int64_t x);
    double (*grad)(mg_arena *a, int64_t x);
    int (*status)(mg_arena *a, int64_t x);
    int (*set_data)(mg_arena *a, int64_t x, double v);
    int (*set_grad)(mg_arena *a, int64_t x, double v);
    int (*release)(mg_arena *a, const int64_t *slots, int64_t n);
};

#endif
