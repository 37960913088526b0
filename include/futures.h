/*
 * futures.h - libfutures: asyncio-style futures, promises and a worker pool
 * for C on POSIX threads.
 *
 * This header is the reference. Every call states what it does, what it
 * returns, which thread may call it and who owns what.
 *
 * Conventions (one rule for the whole API):
 *   - Calls that can fail return 0 on success or a positive errno code
 *     (EINVAL, ENOMEM, EAGAIN, ESHUTDOWN, ...). They never set errno.
 *   - Calls that create an object return a pointer to it, or NULL with
 *     errno set to the reason.
 *   - Public names start with fut_ / FUT_. Everything else is private.
 *
 * Link with: pkg-config --cflags --libs futures
 */
#ifndef FUTURES_H
#define FUTURES_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && defined(FUT_BUILDING_LIBRARY)
#define FUT_EXPORT __attribute__((visibility("default")))
#else
#define FUT_EXPORT
#endif

/* The error a call made in the child of fork() returns for an object that
 * was created before the fork: its threads do not exist in the child, so
 * the call fails at once instead of waiting for them. */
#define FUT_EFORKED EOWNERDEAD

/* ------------------------------------------------------------------------
 * Version
 * ---------------------------------------------------------------------- */

/* The package version as a string, e.g. "0.1.0". Any thread. */
FUT_EXPORT const char *fut_version(void);

/* ------------------------------------------------------------------------
 * Worker pool (fut_pool_*)
 *
 * A pool owns two lanes of threads:
 *   FUT_LANE_COMPUTE   N workers (default: online CPUs) for CPU work.
 *                      Jobs here should not block.
 *   FUT_LANE_BLOCKING  threads made on demand, up to a cap (default 64),
 *                      that retire after an idle time (default 10 s); for
 *                      jobs that block: sleep, read, getaddrinfo, a query.
 *
 * Jobs are intrusive: the caller embeds a fut_pool_job in its own object
 * and recovers the object in the callback (offsetof / container_of), so a
 * submit allocates nothing. The pool knows nothing of futures.
 *
 * Every submitted job gets exactly one call of its callback:
 *   fn(job, 0)           run the job: on a thread of its lane, or, for the
 *                        compute lane, on a thread that helps while it
 *                        waits in fut_pool_wait_idle or a draining
 *                        fut_pool_shutdown;
 *   fn(job, ECANCELED)   the job will never run (shutdown in cancel mode):
 *                        release what it owns. This call happens on a pool
 *                        thread, on a thread helping in fut_pool_wait_idle,
 *                        or on the thread that called fut_pool_shutdown /
 *                        fut_pool_free, always before that call returns.
 * After that call the pool never touches the job again: the callback may
 * free the memory that holds it, or submit it again.
 *
 * Pool threads are named "fut-cpu-K" and "fut-blk-K" (see ps -L, gdb's
 * "info threads") and run with every signal blocked.
 * ---------------------------------------------------------------------- */

typedef struct fut_pool fut_pool;
typedef struct fut_pool_job fut_pool_job;

/* The job callback. status is 0 (run the job) or ECANCELED (it never will). */
typedef void (*fut_pool_fn)(fut_pool_job *job, int status);

/* Embed one in your object. Its fields belong to the pool from
 * fut_pool_submit until the callback is called; do not read or write them. */
struct fut_pool_job {
    fut_pool_job *next_; /* private: queue link */
    fut_pool_fn fn_;     /* private: the callback */
};

/* Lanes: pass one to fut_pool_submit and fut_pool_stats_get. */
enum fut_pool_lane {
    FUT_LANE_COMPUTE = 0,
    FUT_LANE_BLOCKING = 1
};

/* Shutdown modes. */
enum fut_pool_shutdown_mode {
    FUT_POOL_DRAIN = 0, /* run every queued job, then stop */
    FUT_POOL_CANCEL = 1 /* queued jobs get fn(job, ECANCELED); running ones finish */
};

/* Limits checked by fut_pool_new. */
#define FUT_POOL_MAX_COMPUTE 1024u   /* compute workers */
#define FUT_POOL_MAX_BLOCKING 4096u  /* blocking lane cap */
#define FUT_POOL_MAX_IDLE_MS 86400000u /* one day */

/* Options for fut_pool_new. Fill with fut_pool_options_init, then change
 * what you need. A zero or out-of-range value is an error (EINVAL), never
 * a silent default. */
typedef struct fut_pool_options {
    unsigned compute_threads; /* compute workers, 1..FUT_POOL_MAX_COMPUTE; default online CPUs */
    unsigned blocking_max;    /* blocking lane cap, 1..FUT_POOL_MAX_BLOCKING; default 64 */
    unsigned blocking_idle_ms;/* idle time before a blocking thread retires, 1..FUT_POOL_MAX_IDLE_MS; default 10000 */
} fut_pool_options;

/* Per-lane statistics, a snapshot taken without stopping the pool (the
 * fields are read one after another, so under load they may not add up
 * exactly). */
typedef struct fut_pool_stats {
    unsigned threads;   /* threads alive in the lane */
    unsigned idle;      /* of those, waiting for work */
    uint64_t queued;    /* submitted, not yet taken by a thread */
    uint64_t running;   /* taken by a thread, not yet finished (a compute
                           worker takes a small batch at a time) */
    uint64_t completed; /* ran: fn(job, 0) returned */
    uint64_t cancelled; /* notified with fn(job, ECANCELED) */
    unsigned peak_threads; /* most threads alive at once so far */
} fut_pool_stats;

/* Fill opts with the defaults. Any thread. Returns 0, or EINVAL if opts is NULL. */
FUT_EXPORT int fut_pool_options_init(fut_pool_options *opts);

/* Create a pool and start its compute workers (blocking threads start on
 * demand). opts NULL means the defaults. Returns the pool, or NULL with
 * errno = EINVAL (bad option), ENOMEM, EAGAIN (threads could not be made).
 * Any thread. */
FUT_EXPORT fut_pool *fut_pool_new(const fut_pool_options *opts);

/* Queue job on a lane; fn will be called exactly once (see above).
 * Any thread, including a job running on this pool.
 * Returns 0, or:
 *   EINVAL     pool, job or fn is NULL, or lane is unknown;
 *   ESHUTDOWN  the pool is shutting down or shut down (in FUT_POOL_DRAIN
 *              mode, jobs running on the pool may still submit until the
 *              last queued job has run);
 *   EAGAIN     blocking lane: no thread runs and none could be started;
 *   ENOMEM     blocking lane: no memory to start a thread while none runs;
 *   FUT_EFORKED  called in the child of a fork() on a pool of the parent.
 * On an error fn is not called and the job is the caller's again. */
FUT_EXPORT int fut_pool_submit(fut_pool *pool, int lane, fut_pool_job *job, fut_pool_fn fn);

/* Block until every job submitted so far (on both lanes), and every job
 * those jobs submit, has finished. The calling thread runs compute jobs
 * while it waits. Not from a job of this pool (EDEADLK).
 * Returns 0, EINVAL, EDEADLK, ESHUTDOWN (pool already shut down: nothing
 * to wait for), or FUT_EFORKED. */
FUT_EXPORT int fut_pool_wait_idle(fut_pool *pool);

/* Stop the pool: FUT_POOL_DRAIN runs every queued job (and the jobs they
 * submit) first; FUT_POOL_CANCEL notifies queued jobs with ECANCELED and
 * lets only running jobs finish. New submits fail with ESHUTDOWN from the
 * moment it is called (a submit from outside the pool that races with the
 * call may still be accepted; its job is then run or cancelled like the
 * others, but in drain mode the jobs it submits may be refused). Returns
 * when every callback has returned and every pool thread has exited. The
 * calling thread runs compute jobs while a drain waits.
 * Not from a job of this pool (EDEADLK). Calling it again returns 0 at
 * once. Returns 0, EINVAL, EDEADLK or FUT_EFORKED. */
FUT_EXPORT int fut_pool_shutdown(fut_pool *pool, int mode);

/* Shut down in FUT_POOL_CANCEL mode if not done yet, then free the pool.
 * NULL is a no-op. Not from a job of this pool (returns EDEADLK and frees
 * nothing). In the child of a fork() it releases the memory only: queued
 * jobs are neither run nor notified. Returns 0, EDEADLK. */
FUT_EXPORT int fut_pool_free(fut_pool *pool);

/* Snapshot one lane's statistics into out. Any thread.
 * Returns 0, EINVAL, or FUT_EFORKED. */
FUT_EXPORT int fut_pool_stats_get(fut_pool *pool, int lane, fut_pool_stats *out);

/* The number of compute workers of pool, or 0 if pool is NULL. */
FUT_EXPORT unsigned fut_pool_compute_threads(const fut_pool *pool);

#ifdef __cplusplus
}
#endif

#endif /* FUTURES_H */
