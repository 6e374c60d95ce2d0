/*
 * pool.h -- a few worker threads that run one job in parts: the dense executor's (dense.c) way
 * of splitting independent rows or positions over cores, which it lends to Adam (adam.c). The
 * pool is an object its owner holds (no global state); its workers sleep between jobs. Where threads are not built (MG_NO_THREADS,
 * or Windows), or in a process forked from the one that made the pool, every job runs in the
 * caller alone, part by part: a job must give the same result whichever thread runs a part.
 */
#ifndef MG_POOL_H
#define MG_POOL_H
#include <stdint.h>

typedef struct mgi_pool mgi_pool;

#define MGI_MAX_THREADS 64          // the most threads a pool has, the caller's included

// job(ctx, part, nparts) for part = 0 .. nparts-1: each part once, in any thread, in any order
typedef void (*mgi_job)(void *ctx, int64_t part, int64_t nparts);

// a pool of `threads` threads in all (the caller counts as one; 1: no workers); NULL when out of
// memory or when no worker could start
mgi_pool *mgi_pool_new(int64_t threads);
void mgi_pool_free(mgi_pool *p);              // NULL is fine; waits for the workers to end
int64_t mgi_pool_threads(const mgi_pool *p);  // threads a job may use now (1 for NULL): a system call
int64_t mgi_pool_size(const mgi_pool *p);     // threads it was made with, fork or not (for sizes)
// run job in nparts parts over the pool's threads (the caller's included) and return when all
// are done; p may be NULL (then the caller runs every part)
void mgi_pool_run(mgi_pool *p, mgi_job job, void *ctx, int64_t nparts);

#endif
