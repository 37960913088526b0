/* pool.c - the worker pool: lifecycle, the compute lane, waiting, stats.
 *
 * DESIGN
 *
 * Threads: N compute workers (this file) and the blocking lane's threads
 * (blocking.c). Any thread may submit; jobs running on the pool may too.
 *
 * Compute lane hand-off, built for many tiny jobs:
 *   - Submit pushes the job on `inbox`, a Treiber stack (one CAS, no lock,
 *     no allocation: the node is embedded in the caller's object). Only
 *     whole-stack removal ever happens (exchange with NULL), so there is no
 *     ABA problem. The release CAS publishes the job's fields.
 *   - A worker that finds the lane's FIFO empty takes the whole inbox
 *     (acquire), reverses it into the FIFO, and takes a batch of up to
 *     BATCH_MAX jobs (guided: about len / 2N, at least 1), all under the
 *     lane lock. It runs the batch without the lock and adds the batch to
 *     `finished` once. So a job costs one CAS to submit, and the lock, the
 *     counters and the cache-line traffic are paid once per batch.
 *   - Parking: an idle worker spins briefly on the inbox, then puts itself
 *     on the sleepers list (under the lane lock), re-checks for work and
 *     sleeps on its own futex word. A submitter looks at `nsleepers` after
 *     its push and, only when it is nonzero, takes one worker off the list
 *     and wakes it: one wake-up per sleeping worker, not per job. Both
 *     sides use seq_cst (push CAS then nsleepers load; nsleepers increment
 *     then inbox load), so either the submitter sees the sleeper or the
 *     sleeper sees the job: no lost wake-up. A worker that takes a batch and
 *     leaves jobs behind wakes one more sleeper (wake-ups chain).
 *
 * Counting and quiescence: a submit counts nothing (the CAS is its whole
 * cost). Consumers count under the lane lock: `taken` when a job leaves a
 * queue for a thread (or for cancel), and `finished` (release) once per
 * batch when jobs ran or were cancelled. A job's own submits happen before
 * its finish. The pool is idle when finished (read first, both lanes)
 * equals taken (read last) and the queues (read in between) are empty:
 * taken >= finished always, so equality means no job ran or was taken
 * during the reads, so no job could submit, so the empty queues stayed
 * empty. fut_pool_wait_idle and drain-mode shutdown rest on this. Stats
 * count the inbox by walking it under the lane lock (only removal needs
 * the lock, and a push only changes the top).
 *
 * Shutdown: DRAIN closes the inbox at once (swapping CLOSED in and moving
 * what was there to the FIFO), so that an outside submit racing the state
 * change either landed before or fails; the pool's own jobs may still
 * submit, into the FIFO (and the blocking lane, which refuses outside
 * submits under its lock while draining). It then waits for quiescence
 * (helping with compute jobs), closes the blocking lane, and stops the
 * threads. CANCEL swaps CLOSED into the inbox (taking what was there, so a
 * racing submit either lands in that list or fails), empties both FIFOs,
 * notifies every job with ECANCELED; workers check the state before each
 * job of a batch in hand and cancel the rest themselves.
 *
 * Fork: a child handler bumps a generation counter; calls on a pool made
 * in an earlier generation return FUT_EFORKED without touching its locks,
 * which may be held by threads that do not exist in the child.
 *
 * Not done on purpose: work stealing between per-worker deques (one lane
 * FIFO with batches measured faster on 2 cores and keeps FIFO order), and
 * spinning for long (it halves throughput when threads outnumber cores).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "pool/pool_internal.h"
#include "pool/alloc.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BATCH_MAX 16 /* most jobs a compute worker takes at once */
#define SPIN_ROUNDS 8  /* looks at the inbox before parking */
#define SPIN_PAUSES 32 /* pauses between two looks */
#define BACKOFF_PAUSES 40 /* about 1 us: wait after taking a short batch */

atomic_uint fut__fork_gen;
_Thread_local struct fut__call *fut__call_cur;
_Thread_local struct fut_pool *fut__current_pool;
_Thread_local int fut__compute_worker;

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* ---- small helpers ---------------------------------------------------- */

_Noreturn void fut__die(const char *what, int rc)
{
    fprintf(stderr, "libfutures: fatal: %s: %s\n", what, strerror(rc));
    abort();
}

int fut__cond_init(pthread_cond_t *c)
{
    pthread_condattr_t attr;
    int rc = pthread_condattr_init(&attr);

    if (rc != 0)
        return rc;
    rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(c, &attr);
    pthread_condattr_destroy(&attr);
    return rc;
}

void fut__cond_wait(pthread_cond_t *c, pthread_mutex_t *m)
{
    int rc = pthread_cond_wait(c, m);
    if (rc != 0)
        fut__die("pthread_cond_wait", rc);
}

int fut__cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *deadline)
{
    int rc = pthread_cond_timedwait(c, m, deadline);
    if (rc != 0 && rc != ETIMEDOUT)
        fut__die("pthread_cond_timedwait", rc);
    return rc;
}

void fut__deadline_ms(struct timespec *ts, unsigned ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

int fut__thread_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
    sigset_t all, old;
    int rc;

    if ((rc = fut__thread_refused()) != 0)
        return rc;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(t, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

void fut__thread_name(const char *fmt, unsigned id)
{
#ifdef HAVE_PTHREAD_SETNAME_NP
    char name[16];

    snprintf(name, sizeof name, fmt, id);
    pthread_setname_np(pthread_self(), name);
#else
    (void)fmt;
    (void)id;
#endif
}

void fut__join(pthread_t t)
{
    int rc = pthread_join(t, NULL);
    if (rc != 0)
        fut__die("pthread_join", rc);
}

static void atfork_child(void)
{
    atomic_fetch_add_explicit(&fut__fork_gen, 1, memory_order_relaxed);
}

static void atfork_register(void)
{
    pthread_atfork(NULL, NULL, atfork_child);
}

static int forked(const struct fut_pool *pool)
{
    return pool->gen != atomic_load_explicit(&fut__fork_gen, memory_order_relaxed);
}

/* ---- the compute lane ------------------------------------------------- */

/* Take one sleeper off the list (caller holds the lane lock). */
static struct fut__worker *pop_sleeper(struct fut__compute *c)
{
    struct fut__worker *w = c->sleepers;

    if (w != NULL) {
        c->sleepers = w->next_sleeper;
        w->sleeping = 0;
        atomic_fetch_sub_explicit(&c->nsleepers, 1, memory_order_relaxed);
    }
    return w;
}

static void wake_worker(struct fut__worker *w)
{
    atomic_store_explicit(&w->wake, 1, memory_order_release);
    fut__futex_wake(&w->wake, 1);
}

static void wake_one(struct fut__compute *c)
{
    struct fut__worker *w;

    fut__lock(&c->lock);
    w = pop_sleeper(c);
    fut__unlock(&c->lock);
    if (w != NULL)
        wake_worker(w);
}

static void wake_all(struct fut__compute *c)
{
    struct fut__worker *list = NULL, *w;

    fut__lock(&c->lock);
    while ((w = pop_sleeper(c)) != NULL) {
        w->next_sleeper = list;
        list = w;
    }
    fut__unlock(&c->lock);
    while ((w = list) != NULL) {
        list = w->next_sleeper;
        wake_worker(w);
    }
}

/* Reverse a LIFO chain taken from the inbox into FIFO order; *tail gets
 * the last job. */
static fut_pool_job *reverse(fut_pool_job *j, fut_pool_job **tail, uint64_t *count)
{
    fut_pool_job *prev = NULL, *next;
    uint64_t n = 0;

    *tail = j;
    for (; j != NULL; j = next) {
        next = j->next_;
        j->next_ = prev;
        prev = j;
        n++;
    }
    *count = n;
    return prev;
}

/* Take the whole inbox unless it is empty or closed. */
static fut_pool_job *grab_inbox(struct fut__compute *c)
{
    fut_pool_job *top = atomic_load_explicit(&c->inbox, memory_order_relaxed);

    /* acquire: see the fields of every job pushed (release CAS). */
    while (top != NULL && top != FUT__CLOSED &&
           !atomic_compare_exchange_weak_explicit(&c->inbox, &top, NULL,
                                                  memory_order_acquire,
                                                  memory_order_relaxed))
        ;
    return top == FUT__CLOSED ? NULL : top;
}

/* Hand out a batch: returns its length and its first job (linked by
 * next_, NULL-terminated). 0 when there is nothing to do. */
static unsigned take(struct fut_pool *pool, fut_pool_job **out, uint64_t *grabbed)
{
    struct fut__compute *c = &pool->c;
    struct fut__worker *extra = NULL;
    fut_pool_job *j, *last;
    uint64_t backlog;
    unsigned n, want;

    fut__lock(&c->lock);
    if (c->head == NULL) {
        j = grab_inbox(c);
        if (j == NULL) {
            fut__unlock(&c->lock);
            return 0;
        }
        c->head = reverse(j, &c->tail, grabbed);
        atomic_fetch_add_explicit(&c->grabbed, *grabbed, memory_order_relaxed);
    }
    /* Guided batch size: a share of the FIFO, so that a short queue is
     * spread over every worker and a long one costs few lock trips. */
    backlog = atomic_load_explicit(&c->grabbed, memory_order_relaxed) -
              atomic_load_explicit(&c->taken, memory_order_relaxed);
    want = (unsigned)(backlog / (2u * c->nthreads));
    if (want > BATCH_MAX)
        want = BATCH_MAX;
    if (want == 0)
        want = 1;
    j = c->head;
    last = j;
    for (n = 1; n < want && last->next_ != NULL; n++)
        last = last->next_;
    c->head = last->next_;
    last->next_ = NULL;
    atomic_fetch_add_explicit(&c->taken, n, memory_order_relaxed);
    if (c->head != NULL && atomic_load_explicit(&c->nsleepers, memory_order_relaxed) != 0)
        extra = pop_sleeper(c);
    fut__unlock(&c->lock);
    if (extra != NULL)
        wake_worker(extra);
    *out = j;
    return n;
}

/* Run a batch; in cancel mode, notify what is left instead. */
static void run_batch(struct fut_pool *pool, fut_pool_job *j)
{
    struct fut__compute *c = &pool->c;
    uint64_t done = 0, cancelled = 0;
    fut_pool_job *next;

    for (; j != NULL; j = next) {
        next = j->next_; /* fn may free or resubmit j */
        if (fut__unlikely(atomic_load_explicit(&pool->cancelling, memory_order_relaxed))) {
            j->fn_(j, ECANCELED);
            cancelled++;
        } else {
            j->fn_(j, 0);
        }
        done++;
    }
    if (cancelled != 0)
        atomic_fetch_add_explicit(&c->cancelled, cancelled, memory_order_relaxed);
    /* release: the jobs' own submits happen before this count (see DESIGN). */
    atomic_fetch_add_explicit(&c->finished, done, memory_order_seq_cst);
    fut__pool_finished(pool);
}

static void backoff(void)
{
    int k;

    for (k = 0; k < BACKOFF_PAUSES; k++)
        fut__cpu_relax();
}

static int inbox_has_work(struct fut__compute *c)
{
    fut_pool_job *top = atomic_load_explicit(&c->inbox, memory_order_seq_cst);
    return top != NULL && top != FUT__CLOSED;
}

/* Sleep until woken by a submitter, a chaining worker or shutdown. */
static void park(struct fut_pool *pool, struct fut__worker *w)
{
    struct fut__compute *c = &pool->c;
    int i;

    /* Look at the inbox seldom: every look pulls the submitter's cache
     * line away from it, which costs it more than our wait costs us. */
    for (i = 0; i < SPIN_ROUNDS; i++) {
        int k;
        for (k = 0; k < SPIN_PAUSES; k++)
            fut__cpu_relax();
        if (inbox_has_work(c))
            return;
    }
    fut__lock(&c->lock);
    atomic_store_explicit(&w->wake, 0, memory_order_relaxed);
    w->next_sleeper = c->sleepers;
    c->sleepers = w;
    w->sleeping = 1;
    /* seq_cst: pairs with the submitter's push CAS then nsleepers load. */
    atomic_fetch_add_explicit(&c->nsleepers, 1, memory_order_seq_cst);
    if (c->head != NULL || inbox_has_work(c) ||
        atomic_load_explicit(&pool->state, memory_order_relaxed) >= POOL_STOPPING) {
        if (w->sleeping) {
            /* Still listed: unlink ourselves (we may not be first). */
            struct fut__worker **pp = &c->sleepers;
            while (*pp != w)
                pp = &(*pp)->next_sleeper;
            *pp = w->next_sleeper;
            w->sleeping = 0;
            atomic_fetch_sub_explicit(&c->nsleepers, 1, memory_order_relaxed);
            fut__unlock(&c->lock);
            return;
        }
        /* Someone already took us off the list and is waking us. */
    }
    fut__unlock(&c->lock);
    while (atomic_load_explicit(&w->wake, memory_order_acquire) == 0)
        fut__futex_wait(&w->wake, 0);
}

static void *worker_main(void *arg)
{
    struct fut__worker *w = arg;
    struct fut_pool *pool = w->pool;
    fut_pool_job *batch;

    fut__thread_name("fut-cpu-%u", w->index);
    fut__current_pool = pool;
    fut__compute_worker = 1;
    for (;;) {
        uint64_t grabbed = 0;
        if (take(pool, &batch, &grabbed) != 0) {
            run_batch(pool, batch);
            /* We drain faster than they submit: let jobs pile up a little
             * instead of taking the submitters' cache line for each one. */
            if (grabbed != 0 && grabbed < BATCH_MAX)
                backoff();
            continue;
        }
        if (atomic_load_explicit(&pool->state, memory_order_acquire) >= POOL_STOPPING)
            break;
        park(pool, w);
    }
    return NULL;
}

/* Append the chain first..last (n jobs, in order) to the FIFO; the
 * caller holds the lock. */
static void fifo_append(struct fut__compute *c, fut_pool_job *first, fut_pool_job *last,
                        uint64_t n)
{
    if (c->head == NULL)
        c->head = first;
    else
        c->tail->next_ = first;
    c->tail = last;
    atomic_fetch_add_explicit(&c->grabbed, n, memory_order_relaxed);
}

/* Close the inbox, so that a racing push either landed or fails, and move
 * what it held to the FIFO; the caller holds the lock, as for every
 * removal from the inbox (fut_pool_stats_get walks it). */
static void close_inbox(struct fut__compute *c)
{
    fut_pool_job *rest = atomic_exchange_explicit(&c->inbox, FUT__CLOSED, memory_order_acq_rel);
    fut_pool_job *last;
    uint64_t n;

    if (rest != NULL && rest != FUT__CLOSED) {
        rest = reverse(rest, &last, &n);
        fifo_append(c, rest, last, n);
    }
}

/* The inbox is closed. While the pool drains, its own jobs may still
 * submit (drain's promise): theirs go straight to the FIFO. */
static int submit_closed(struct fut_pool *pool, fut_pool_job *job)
{
    struct fut__compute *c = &pool->c;
    struct fut__worker *w;
    int rc = fut__pool_submit_refused(pool);

    if (rc != 0)
        return rc;
    job->next_ = NULL;
    fut__lock(&c->lock);
    fifo_append(c, job, job, 1);
    w = pop_sleeper(c);
    fut__unlock(&c->lock);
    if (w != NULL)
        wake_worker(w);
    return 0;
}

static int compute_submit(struct fut_pool *pool, fut_pool_job *job, fut_pool_fn fn)
{
    struct fut__compute *c = &pool->c;
    fut_pool_job *top;

    job->fn_ = fn;
    top = atomic_load_explicit(&c->inbox, memory_order_relaxed);
    do {
        if (fut__unlikely(top == FUT__CLOSED))
            return submit_closed(pool, job);
        job->next_ = top;
        /* seq_cst: releases the job and orders the nsleepers load below. */
    } while (!atomic_compare_exchange_weak_explicit(&c->inbox, &top, job,
                                                    memory_order_seq_cst,
                                                    memory_order_relaxed));
    if (atomic_load_explicit(&c->nsleepers, memory_order_seq_cst) != 0)
        wake_one(c);
    return 0;
}

/* ---- the pool --------------------------------------------------------- */

int fut_pool_options_init(fut_pool_options *opts)
{
    long cpus;

    if (opts == NULL)
        return EINVAL;
    cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus < 1)
        cpus = 1;
    if (cpus > (long)FUT_POOL_MAX_COMPUTE)
        cpus = FUT_POOL_MAX_COMPUTE;
    opts->compute_threads = (unsigned)cpus;
    opts->blocking_max = 64;
    opts->blocking_idle_ms = 10000;
    return 0;
}

static int options_valid(const fut_pool_options *o)
{
    return o->compute_threads >= 1 && o->compute_threads <= FUT_POOL_MAX_COMPUTE &&
           o->blocking_max >= 1 && o->blocking_max <= FUT_POOL_MAX_BLOCKING &&
           o->blocking_idle_ms >= 1 && o->blocking_idle_ms <= FUT_POOL_MAX_IDLE_MS;
}

static void stop_workers(struct fut_pool *pool, unsigned n)
{
    unsigned i;

    atomic_store_explicit(&pool->state, POOL_STOPPING, memory_order_seq_cst);
    wake_all(&pool->c);
    for (i = 0; i < n; i++)
        fut__join(pool->c.workers[i].thread);
    atomic_store_explicit(&pool->c.alive, 0, memory_order_relaxed);
}

static void destroy(struct fut_pool *pool)
{
    pthread_mutex_destroy(&pool->c.lock);
    pthread_mutex_destroy(&pool->shutdown_lock);
    fut__blocking_destroy(pool, 0);
    fut__free(pool->c.workers);
    fut__free(pool);
}

fut_pool *fut_pool_new(const fut_pool_options *opts)
{
    fut_pool_options defaults;
    struct fut_pool *pool;
    unsigned i;
    int rc;

    if (opts == NULL) {
        fut_pool_options_init(&defaults);
        opts = &defaults;
    }
    if (!options_valid(opts)) {
        errno = EINVAL;
        return NULL;
    }
    pthread_once(&atfork_once, atfork_register);

    pool = fut__aligned_alloc(FUT__CACHELINE, sizeof *pool);
    if (pool == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    memset(pool, 0, sizeof *pool);
    pool->gen = atomic_load_explicit(&fut__fork_gen, memory_order_relaxed);
    pool->c.nthreads = opts->compute_threads;
    pool->c.workers = fut__aligned_alloc(FUT__CACHELINE, opts->compute_threads * sizeof *pool->c.workers);
    if (pool->c.workers == NULL) {
        fut__free(pool);
        errno = ENOMEM;
        return NULL;
    }
    memset(pool->c.workers, 0, opts->compute_threads * sizeof *pool->c.workers);
    if ((rc = pthread_mutex_init(&pool->c.lock, NULL)) != 0)
        goto fail_workers;
    if ((rc = pthread_mutex_init(&pool->shutdown_lock, NULL)) != 0)
        goto fail_clock;
    if ((rc = fut__blocking_init(pool, opts->blocking_max, opts->blocking_idle_ms)) != 0)
        goto fail_slock;

    for (i = 0; i < pool->c.nthreads; i++) {
        struct fut__worker *w = &pool->c.workers[i];
        w->pool = pool;
        w->index = i;
        rc = fut__thread_start(&w->thread, worker_main, w);
        if (rc != 0) {
            stop_workers(pool, i);
            destroy(pool);
            errno = rc == ENOMEM ? ENOMEM : EAGAIN;
            return NULL;
        }
        atomic_fetch_add_explicit(&pool->c.alive, 1, memory_order_relaxed);
    }
    return pool;

fail_slock:
    pthread_mutex_destroy(&pool->shutdown_lock);
fail_clock:
    pthread_mutex_destroy(&pool->c.lock);
fail_workers:
    fut__free(pool->c.workers);
    fut__free(pool);
    errno = rc;
    return NULL;
}

unsigned fut_pool_compute_threads(const fut_pool *pool)
{
    return pool == NULL ? 0 : pool->c.nthreads;
}

int fut__pool_submit_refused(struct fut_pool *pool)
{
    int st;

    if (forked(pool))
        return FUT_EFORKED;
    st = atomic_load_explicit(&pool->state, memory_order_acquire);
    if (st == POOL_RUNNING || (st == POOL_DRAINING && fut__current_pool == pool))
        return 0;
    return ESHUTDOWN;
}

int fut_pool_submit(fut_pool *pool, int lane, fut_pool_job *job, fut_pool_fn fn)
{
    int rc;

    if (pool == NULL || job == NULL || fn == NULL)
        return EINVAL;
    if (fut__unlikely(atomic_load_explicit(&pool->state, memory_order_relaxed) != POOL_RUNNING ||
                      forked(pool))) {
        if ((rc = fut__pool_submit_refused(pool)) != 0)
            return rc;
    }
    if (lane == FUT_LANE_COMPUTE)
        return compute_submit(pool, job, fn);
    if (lane == FUT_LANE_BLOCKING)
        return fut__blocking_submit(pool, job, fn);
    return EINVAL;
}

/* Idle: nothing queued, nothing running. See DESIGN for why the order of
 * the reads (finished, then the queues, then taken) makes this exact. */
static int quiescent(struct fut_pool *pool)
{
    struct fut__compute *c = &pool->c;
    fut_pool_job *top;
    uint64_t finished, taken;
    int empty;

    finished = atomic_load_explicit(&c->finished, memory_order_seq_cst) +
               atomic_load_explicit(&pool->b.finished, memory_order_seq_cst);
    top = atomic_load_explicit(&c->inbox, memory_order_seq_cst);
    empty = top == NULL || top == FUT__CLOSED;
    if (empty) {
        fut__lock(&c->lock);
        empty = c->head == NULL;
        fut__unlock(&c->lock);
    }
    if (empty)
        empty = fut__blocking_empty(pool);
    if (!empty)
        return 0;
    taken = atomic_load_explicit(&c->taken, memory_order_seq_cst) +
            atomic_load_explicit(&pool->b.taken, memory_order_seq_cst);
    return finished == taken;
}

/* Run a batch on a thread that helps while it waits: as the pool's own
 * (its jobs may submit while draining), outside the call the thread is in
 * (see fut__call_cur). */
static void run_helping(struct fut_pool *pool, fut_pool_job *batch)
{
    struct fut_pool *outer = fut__current_pool;
    struct fut__call *call = fut__call_cur;

    fut__current_pool = pool;
    fut__call_cur = NULL;
    run_batch(pool, batch);
    fut__call_cur = call;
    fut__current_pool = outer;
}

/* Wait until the pool is idle, running compute batches meanwhile. */
static void wait_quiescent(struct fut_pool *pool)
{
    fut_pool_job *batch;
    unsigned seq;

    atomic_fetch_add_explicit(&pool->idle_waiters, 1, memory_order_seq_cst);
    for (;;) {
        seq = atomic_load_explicit(&pool->idle_seq, memory_order_seq_cst);
        if (quiescent(pool))
            break;
        uint64_t grabbed;
        if (take(pool, &batch, &grabbed) != 0) {
            run_helping(pool, batch);
            continue;
        }
        fut__futex_wait(&pool->idle_seq, seq);
    }
    atomic_fetch_sub_explicit(&pool->idle_waiters, 1, memory_order_relaxed);
}

int fut_pool_wait_idle(fut_pool *pool)
{
    if (pool == NULL)
        return EINVAL;
    if (forked(pool))
        return FUT_EFORKED;
    if (fut__current_pool == pool)
        return EDEADLK;
    if (atomic_load_explicit(&pool->state, memory_order_acquire) == POOL_STOPPED)
        return ESHUTDOWN;
    wait_quiescent(pool);
    return 0;
}

int fut__pool_help(struct fut_pool *pool)
{
    fut_pool_job *batch;
    uint64_t grabbed;

    if (take(pool, &batch, &grabbed) == 0)
        return 0;
    run_helping(pool, batch);
    return 1;
}

/* Notify a FIFO chain of jobs that they will never run. */
static uint64_t cancel_chain(fut_pool_job *j)
{
    fut_pool_job *next;
    uint64_t n = 0;

    for (; j != NULL; j = next) {
        next = j->next_;
        fut__job_notify(j, ECANCELED);
        n++;
    }
    return n;
}

static uint64_t chain_len(const fut_pool_job *j)
{
    uint64_t n = 0;

    for (; j != NULL; j = j->next_)
        n++;
    return n;
}

static void cancel_compute_queue(struct fut_pool *pool)
{
    struct fut__compute *c = &pool->c;
    fut_pool_job *fifo;
    uint64_t n;

    fut__lock(&c->lock);
    close_inbox(c);
    fifo = c->head;
    c->head = NULL;
    /* Counted as taken before the lock is released, as every removal, so
     * that quiescent() never sees the jobs neither queued nor taken. */
    n = chain_len(fifo);
    atomic_fetch_add_explicit(&c->taken, n, memory_order_relaxed);
    fut__unlock(&c->lock);
    cancel_chain(fifo);
    atomic_fetch_add_explicit(&c->cancelled, n, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->finished, n, memory_order_seq_cst);
    fut__pool_finished(pool);
}

static void cancel_blocking_queue(struct fut_pool *pool)
{
    fut_pool_job *fifo = fut__blocking_close(pool, 1);
    uint64_t n = chain_len(fifo);

    /* The blocking lane counted these as taken when it handed them over. */
    cancel_chain(fifo);
    atomic_fetch_add_explicit(&pool->b.cancelled, n, memory_order_relaxed);
    atomic_fetch_add_explicit(&pool->b.finished, n, memory_order_seq_cst);
    fut__pool_finished(pool);
}

static void drain(struct fut_pool *pool)
{
    struct fut__compute *c = &pool->c;

    atomic_store_explicit(&pool->state, POOL_DRAINING, memory_order_seq_cst);
    /* Close the inbox now: from here on an outside submit fails, also one
     * that checked the state before it changed (a check cannot be atomic
     * with the push), and the pool's own jobs submit into the FIFO
     * (submit_closed). */
    fut__lock(&c->lock);
    close_inbox(c);
    fut__unlock(&c->lock);
    wake_all(c);
    /* The blocking lane refuses outside submits while we drain (blocking.c,
     * under its lock), so once nothing runs and nothing is queued nothing
     * can be submitted any more. */
    wait_quiescent(pool);
    fut__blocking_close(pool, 0);
}

int fut_pool_shutdown(fut_pool *pool, int mode)
{
    if (pool == NULL || (mode != FUT_POOL_DRAIN && mode != FUT_POOL_CANCEL))
        return EINVAL;
    if (forked(pool))
        return FUT_EFORKED;
    if (fut__current_pool == pool)
        return EDEADLK;

    fut__lock(&pool->shutdown_lock);
    if (pool->shut_down) {
        fut__unlock(&pool->shutdown_lock);
        return 0;
    }
    if (mode == FUT_POOL_DRAIN) {
        drain(pool);
    } else {
        atomic_store_explicit(&pool->cancelling, 1, memory_order_relaxed);
        atomic_store_explicit(&pool->state, POOL_CANCELLING, memory_order_seq_cst);
        cancel_compute_queue(pool);
        cancel_blocking_queue(pool);
        /* Batches in hand (of workers, and of threads helping in
         * fut_pool_wait_idle) are run or cancelled by their holders: wait
         * for them, so that no callback runs after we return. Nothing can
         * be taken any more, so this only waits. */
        wait_quiescent(pool);
    }
    stop_workers(pool, pool->c.nthreads);
    fut__blocking_stop(pool);
    /* Nothing can be queued now: the inbox is closed and every batch in
     * hand was run or cancelled by its worker before it exited. */
    atomic_store_explicit(&pool->state, POOL_STOPPED, memory_order_seq_cst);
    pool->shut_down = 1;
    fut__unlock(&pool->shutdown_lock);
    return 0;
}

int fut_pool_free(fut_pool *pool)
{
    int rc;

    if (pool == NULL)
        return 0;
    if (forked(pool)) {
        /* The threads and whoever held the locks are gone: free the memory
         * only, touching no lock. */
        fut__blocking_destroy(pool, 1);
        fut__free(pool->c.workers);
        fut__free(pool);
        return 0;
    }
    rc = fut_pool_shutdown(pool, FUT_POOL_CANCEL);
    if (rc != 0)
        return rc;
    destroy(pool);
    return 0;
}

static uint64_t sub0(uint64_t a, uint64_t b)
{
    return a > b ? a - b : 0;
}

int fut_pool_stats_get(fut_pool *pool, int lane, fut_pool_stats *out)
{
    if (pool == NULL || out == NULL)
        return EINVAL;
    memset(out, 0, sizeof *out);
    if (lane == FUT_LANE_COMPUTE) {
        struct fut__compute *c = &pool->c;
        uint64_t finished, cancelled, taken, inbox = 0;
        fut_pool_job *j;

        if (forked(pool))
            return FUT_EFORKED;
        /* The inbox changes under our feet only at its top: the chain below
         * the top we load is removed only under the lock we hold. */
        fut__lock(&c->lock);
        j = atomic_load_explicit(&c->inbox, memory_order_acquire);
        for (; j != NULL && j != FUT__CLOSED; j = j->next_)
            inbox++;
        taken = atomic_load_explicit(&c->taken, memory_order_relaxed);
        out->queued = inbox + (atomic_load_explicit(&c->grabbed, memory_order_relaxed) - taken);
        fut__unlock(&c->lock);
        finished = atomic_load_explicit(&c->finished, memory_order_acquire);
        cancelled = atomic_load_explicit(&c->cancelled, memory_order_relaxed);

        out->threads = atomic_load_explicit(&c->alive, memory_order_relaxed);
        out->idle = atomic_load_explicit(&c->nsleepers, memory_order_relaxed);
        out->peak_threads = c->nthreads;
        out->running = sub0(taken, finished);
        out->completed = sub0(finished, cancelled);
        out->cancelled = cancelled;
        return 0;
    }
    if (lane == FUT_LANE_BLOCKING) {
        if (forked(pool))
            return FUT_EFORKED;
        fut__blocking_stats(pool, out);
        return 0;
    }
    return EINVAL;
}
