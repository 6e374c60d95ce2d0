/*
 * pool.c -- worker threads that run one job in parts (pool.h). A job is published under the
 * mutex with a new generation number; each worker takes parts from a shared counter until none
 * is left, then reports done; the caller takes parts too and waits until every part is done.
 * Waiting threads poll a little before they sleep (SPINS): the next job is usually that close.
 *
 * Not here: what a part computes (dense.c), or how the parts divide the work.
 */
#include <stdint.h>
#include <stdlib.h>
#include "pool.h"

#if !defined(_WIN32) && !defined(MG_NO_THREADS)
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#define MAX_WORKERS (MGI_MAX_THREADS - 1)
// A step's layers come microseconds apart, and waking a sleeping thread takes tens of them: a
// thread waiting for a job (or for the job's last part) first polls this many times, then sleeps.
#define SPINS 4000

struct mgi_pool {
    pthread_mutex_t mu;
    pthread_cond_t go;      // a new job, or quit
    pthread_cond_t done;    // a worker finished its share of the job
    int64_t nworkers;
    pthread_t tid[MAX_WORKERS];
    pid_t pid;              // the process that made the workers (a fork has none of them)
    int64_t generation;     // bumped for every job
    int quit;
    mgi_job job;            // the job being run, its context and parts
    void *ctx;
    int64_t nparts;
    int64_t next;           // the next part to take
    int64_t finished;       // parts done
    atomic_llong posted;    // generation, and finished, as the spinning threads read them
    atomic_llong parts_done;        // (written under the mutex, read without it)
};

static inline void relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

// poll until *x differs from (or, with equal, reaches) value, SPINS times at most
static void spin(atomic_llong *x, long long value, int equal) {
    for (int i = 0; i < SPINS; i++) {
        long long now = atomic_load_explicit(x, memory_order_acquire);
        if (equal ? now == value : now != value) return;
        relax();
    }
}

// take parts of the current job until none is left; called and returns with the mutex held
static void take_parts(mgi_pool *p) {
    while (p->next < p->nparts) {
        int64_t part = p->next++, nparts = p->nparts;
        mgi_job job = p->job;
        void *ctx = p->ctx;
        pthread_mutex_unlock(&p->mu);
        job(ctx, part, nparts);
        pthread_mutex_lock(&p->mu);
        p->finished++;
        atomic_store_explicit(&p->parts_done, p->finished, memory_order_release);
    }
}

static void *worker(void *arg) {
    mgi_pool *p = arg;
    pthread_mutex_lock(&p->mu);
    int64_t seen = p->generation;
    for (;;) {
        if (!p->quit && p->generation == seen) {
            pthread_mutex_unlock(&p->mu);
            spin(&p->posted, seen, 0);
            pthread_mutex_lock(&p->mu);
        }
        while (!p->quit && p->generation == seen) pthread_cond_wait(&p->go, &p->mu);
        if (p->quit) break;
        seen = p->generation;
        take_parts(p);
        pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

mgi_pool *mgi_pool_new(int64_t threads) {
    if (threads < 2) return NULL;
    mgi_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    if (pthread_mutex_init(&p->mu, NULL)) {
        free(p);
        return NULL;
    }
    if (pthread_cond_init(&p->go, NULL) || pthread_cond_init(&p->done, NULL)) {
        pthread_mutex_destroy(&p->mu);
        free(p);
        return NULL;
    }
    atomic_init(&p->posted, 0);
    atomic_init(&p->parts_done, 0);
    p->pid = getpid();
    int64_t want = threads - 1 < MAX_WORKERS ? threads - 1 : MAX_WORKERS;
    for (int64_t i = 0; i < want; i++) {
        if (pthread_create(&p->tid[i], NULL, worker, p)) break;
        p->nworkers++;
    }
    if (p->nworkers == 0) {
        mgi_pool_free(p);
        return NULL;
    }
    return p;
}

void mgi_pool_free(mgi_pool *p) {
    if (!p) return;
    if (p->pid == getpid()) {                    // a forked child has no workers to wait for
        pthread_mutex_lock(&p->mu);
        p->quit = 1;
        atomic_store_explicit(&p->posted, p->generation + 1, memory_order_release);   // ends a spin
        pthread_cond_broadcast(&p->go);
        pthread_mutex_unlock(&p->mu);
        for (int64_t i = 0; i < p->nworkers; i++) pthread_join(p->tid[i], NULL);
        pthread_cond_destroy(&p->go);
        pthread_cond_destroy(&p->done);
        pthread_mutex_destroy(&p->mu);
    }
    free(p);
}

int64_t mgi_pool_threads(const mgi_pool *p) {
    return p && p->pid == getpid() ? p->nworkers + 1 : 1;
}

int64_t mgi_pool_size(const mgi_pool *p) { return p ? p->nworkers + 1 : 1; }

void mgi_pool_run(mgi_pool *p, mgi_job job, void *ctx, int64_t nparts) {
    if (nparts < 2 || mgi_pool_threads(p) < 2) {  // getpid() is a system call: only when it matters
        for (int64_t part = 0; part < nparts; part++) job(ctx, part, nparts);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->job = job, p->ctx = ctx, p->nparts = nparts, p->next = 0, p->finished = 0;
    atomic_store_explicit(&p->parts_done, 0, memory_order_release);
    p->generation++;
    atomic_store_explicit(&p->posted, p->generation, memory_order_release);
    pthread_cond_broadcast(&p->go);
    take_parts(p);
    if (p->finished < p->nparts) {
        pthread_mutex_unlock(&p->mu);
        spin(&p->parts_done, nparts, 1);
        pthread_mutex_lock(&p->mu);
    }
    while (p->finished < p->nparts) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

#else   // no threads: the caller runs every part

struct mgi_pool { int unused; };

mgi_pool *mgi_pool_new(int64_t threads) { (void)threads; return NULL; }
void mgi_pool_free(mgi_pool *p) { (void)p; }
int64_t mgi_pool_threads(const mgi_pool *p) { (void)p; return 1; }
int64_t mgi_pool_size(const mgi_pool *p) { (void)p; return 1; }

void mgi_pool_run(mgi_pool *p, mgi_job job, void *ctx, int64_t nparts) {
    (void)p;
    for (int64_t part = 0; part < nparts; part++) job(ctx, part, nparts);
}
#endif
