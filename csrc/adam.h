/*
 * adam.h -- Adam's step for the C files that lend it worker threads (dense.c). Python calls
 * mg_adam_step (microgpt.h), which is this step on one thread.
 */
#ifndef MG_ADAM_H
#define MG_ADAM_H
#include <stdint.h>
#include "microgpt.h"
#include "pool.h"

// mg_adam_step, with a step that writes in place split over pool's threads (NULL: none), each
// taking min_share parameters at least: the same bits for any number (each update is its own)
int mgi_adam_step(mg_arena *a, mgi_pool *pool, int64_t min_share, double lr_t, double beta1, double beta2,
                  double eps, int64_t step);

#endif
