/* blocking.c - the blocking lane: threads made on demand, retired when idle.
 *
 * DESIGN
 *
 * Jobs here sleep in system calls for milliseconds, so the lane is a plain
 * mutex + condition variable FIFO: its cost is noise next to the job's.
 * What matters is how many threads run:
 *   - A thread is started when the jobs queued outnumber the threads that
 *     will take one (idle + starting) and the cap allows: 64 jobs that
 *     each block 10 ms run side by side, not in waves of a fixed pool.
 *     The submitter starts one only when no thread is starting; a thread
 *     that starts and finds the queue still short of threads starts up to
 *     two more before it runs its job. A burst of N jobs is met by a tree
 *     of depth log2 N, and a submit stays cheap: pthread_create costs
 *     25 us here, 1.6 ms for 64 if one thread made them all.
 *   - A thread idle for idle_ms (CLOCK_MONOTONIC deadline) retires.
 *   - Invariant: while a job is queued, some thread of the lane is alive or
 *     starting. A thread retires only with the queue empty (under the lock),
 *     and a submit that cannot start the lane's only thread takes its job
 *     back and fails (ENOMEM / EAGAIN). Other submits may have queued jobs
 *     meanwhile, counting on that start (a submit starts no thread while
 *     one is starting) and returned 0: the failing submit takes them out
 *     too and calls each one's fn(job, EAGAIN or ENOMEM), so every accepted
 *     job runs or is told that it never will.
 * Threads are created without the lock (nspawning counts creations in
 * progress); every record of a started thread is listed on `threads` until
 * joined: retired threads are joined by the next submit, and shutdown
 * waits for creations in progress, then joins all, so no thread ever
 * touches the pool after it is freed.
 * Lock order: this lane's lock is never held while calling a job, and never
 * together with the compute lane's lock.
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
#include <string.h>

int fut__blocking_init(struct fut_pool *pool, unsigned cap, unsigned idle_ms)
{
    struct fut__blocking *b = &pool->b;
    int rc;

    if ((rc = pthread_mutex_init(&b->lock, NULL)) != 0)
        return rc;
    if ((rc = fut__cond_init(&b->cond)) != 0) {
        pthread_mutex_destroy(&b->lock);
        return rc;
    }
    if ((rc = pthread_cond_init(&b->spawned, NULL)) != 0) {
        pthread_cond_destroy(&b->cond);
        pthread_mutex_destroy(&b->lock);
        return rc;
    }
    b->cap = cap;
    b->idle_ms = idle_ms;
    return 0;
}

/* Unlink the records of exited threads (caller holds the lock). */
static struct fut__bthread *take_exited(struct fut__blocking *b)
{
    struct fut__bthread **pp = &b->threads, *r, *done = NULL;

    while ((r = *pp) != NULL) {
        if (r->exited) {
            *pp = r->next;
            r->next = done;
            done = r;
        } else {
            pp = &r->next;
        }
    }
    return done;
}

static void join_all(struct fut__bthread *r)
{
    struct fut__bthread *next;

    for (; r != NULL; r = next) {
        next = r->next;
        fut__join(r->thread);
        fut__free(r);
    }
}

static void *bthread_main(void *arg);

/* Reserve a thread slot if the queue needs one more thread than will take
 * a job (idle or starting ones), within the cap. Caller holds the lock.
 * Returns 1 and sets *id when reserved. */
static int reserve(struct fut__blocking *b, unsigned *id)
{
    if (b->stop || b->len <= (uint64_t)b->nidle + b->nstarting || b->nthreads >= b->cap)
        return 0;
    b->nthreads++;
    b->nstarting++;
    b->nspawning++;
    if (b->nthreads > b->peak)
        b->peak = b->nthreads;
    *id = b->next_id++;
    return 1;
}

/* Start the thread of a reserved slot, without the lock (pthread_create
 * takes tens of microseconds: other threads keep taking jobs meanwhile).
 * Returns 0 or the errno; on failure the slot is released. */
static int spawn(struct fut_pool *pool, unsigned id)
{
    struct fut__blocking *b = &pool->b;
    struct fut__bthread *rec = fut__malloc(sizeof *rec);
    int rc = ENOMEM;

    if (rec != NULL) {
        memset(rec, 0, sizeof *rec);
        rec->pool = pool;
        rec->id = id;
        rc = fut__thread_start(&rec->thread, bthread_main, rec);
        if (rc != 0)
            rc = rc == ENOMEM ? ENOMEM : EAGAIN;
    }
    fut__lock(&b->lock);
    if (rc == 0) {
        /* Listed even if it has already retired: it is joined either way. */
        rec->next = b->threads;
        b->threads = rec;
    } else {
        b->nthreads--;
        b->nstarting--;
    }
    if (--b->nspawning == 0 && b->stop)
        fut__cond_broadcast(&b->spawned);
    fut__unlock(&b->lock);
    if (rc != 0)
        fut__free(rec);
    return rc;
}

static void *bthread_main(void *arg)
{
    struct fut__bthread *self = arg;
    struct fut_pool *pool = self->pool;
    struct fut__blocking *b = &pool->b;
    struct timespec deadline;
    fut_pool_job *job;
    int idle_since_set = 0;
    unsigned ids[2], nspawn, i;

    fut__thread_name("fut-blk-%u", self->id);
    fut__current_pool = pool;
    fut__lock(&b->lock);
    b->nstarting--;
    for (;;) {
        if (b->head != NULL) {
            job = b->head;
            b->head = job->next_;
            b->len--;
            atomic_fetch_add_explicit(&b->taken, 1, memory_order_relaxed);
            idle_since_set = 0;
            /* Still more jobs than threads coming for them: start up to two
             * more, so that a burst is met by a tree of spawning threads
             * rather than by its submitter starting them one by one. */
            for (nspawn = 0; nspawn < 2 && reserve(b, &ids[nspawn]); nspawn++)
                ;
            fut__unlock(&b->lock);
            for (i = 0; i < nspawn; i++)
                spawn(pool, ids[i]); /* a failure is fine: we are here */
            job->fn_(job, 0);
            atomic_fetch_add_explicit(&b->finished, 1, memory_order_seq_cst);
            fut__pool_finished(pool);
            fut__lock(&b->lock);
            continue;
        }
        if (b->stop)
            break;
        if (!idle_since_set) {
            fut__deadline_ms(&deadline, b->idle_ms);
            idle_since_set = 1;
        }
        b->nidle++;
        int rc = fut__cond_timedwait(&b->cond, &b->lock, &deadline);
        b->nidle--;
        if (rc == ETIMEDOUT && b->head == NULL && !b->stop)
            break; /* idle long enough: retire */
    }
    b->nthreads--;
    self->exited = 1;
    fut__unlock(&b->lock);
    return NULL;
}

/* Remove job from the queue if it is still there (caller holds the lock). */
static int unqueue(struct fut__blocking *b, fut_pool_job *job)
{
    fut_pool_job **pp = &b->head, *prev = NULL;

    while (*pp != NULL && *pp != job) {
        prev = *pp;
        pp = &(*pp)->next_;
    }
    if (*pp == NULL)
        return 0;
    *pp = job->next_;
    if (b->tail == job)
        b->tail = prev;
    b->len--;
    return 1;
}

/* Tell jobs taken out of a lane with no thread that they will never run
 * (fn(job, rc), rc EAGAIN or ENOMEM), without the lock. They count as
 * cancelled. */
static void strand(struct fut_pool *pool, fut_pool_job *j, uint64_t n, int rc)
{
    struct fut__blocking *b = &pool->b;
    fut_pool_job *next;

    for (; j != NULL; j = next) {
        next = j->next_; /* fn may free or resubmit j */
        fut__job_notify(j, rc);
    }
    atomic_fetch_add_explicit(&b->cancelled, n, memory_order_relaxed);
    atomic_fetch_add_explicit(&b->finished, n, memory_order_seq_cst);
    fut__pool_finished(pool);
}

int fut__blocking_submit(struct fut_pool *pool, fut_pool_job *job, fut_pool_fn fn)
{
    struct fut__blocking *b = &pool->b;
    struct fut__bthread *reaped;
    fut_pool_job *stranded;
    uint64_t nstranded;
    unsigned id = 0;
    int spawning, rc, mine;

    job->fn_ = fn;
    job->next_ = NULL;
    fut__lock(&b->lock);
    /* The state again, under the lock: an outside submit that checked it
     * before a drain began must not land after the drain found this lane
     * empty (its job would run after the compute inbox closed, and its own
     * submits would be refused against drain's promise). The drain stores
     * POOL_DRAINING before it looks at this queue under this lock, so a
     * submit after that look sees it. */
    rc = b->closed ? ESHUTDOWN : fut__pool_submit_refused(pool);
    if (rc != 0) {
        fut__unlock(&b->lock);
        return rc;
    }
    if (b->head == NULL)
        b->head = job;
    else
        b->tail->next_ = job;
    b->tail = job;
    b->len++;
    atomic_fetch_add_explicit(&b->submitted, 1, memory_order_relaxed);
    /* A thread that is starting will start more if the queue needs them
     * (see bthread_main); only when none is do we start one here. */
    spawning = b->nstarting == 0 && reserve(b, &id);
    if (!spawning && b->nidle != 0)
        fut__cond_signal(&b->cond);
    reaped = take_exited(b);
    fut__unlock(&b->lock);
    join_all(reaped);
    if (!spawning || (rc = spawn(pool, id)) == 0)
        return 0;

    fut__lock(&b->lock);
    if (b->nthreads != 0) {
        /* Another thread is alive or starting and will run the queue. */
        fut__unlock(&b->lock);
        return 0;
    }
    /* No thread is alive or starting: our job is ours again (unless a
     * cancel has notified it already), and every other job in the queue
     * was accepted by a submit that counted on our start. Those will never
     * run: they are told so now, with our error. */
    mine = unqueue(b, job);
    if (mine)
        atomic_fetch_sub_explicit(&b->submitted, 1, memory_order_relaxed);
    stranded = b->head;
    nstranded = b->len;
    b->head = b->tail = NULL;
    b->len = 0;
    atomic_fetch_add_explicit(&b->taken, nstranded, memory_order_relaxed);
    fut__unlock(&b->lock);
    if (stranded != NULL)
        strand(pool, stranded, nstranded, rc);
    return mine ? rc : 0;
}

fut_pool_job *fut__blocking_close(struct fut_pool *pool, int cancel)
{
    struct fut__blocking *b = &pool->b;
    fut_pool_job *fifo = NULL;

    fut__lock(&b->lock);
    b->closed = 1;
    if (cancel) {
        fifo = b->head;
        atomic_fetch_add_explicit(&b->taken, b->len, memory_order_relaxed);
        b->head = b->tail = NULL;
        b->len = 0;
    }
    fut__unlock(&b->lock);
    return fifo;
}

void fut__blocking_stop(struct fut_pool *pool)
{
    struct fut__blocking *b = &pool->b;
    struct fut__bthread *all;

    fut__lock(&b->lock);
    b->closed = 1;
    b->stop = 1;
    fut__cond_broadcast(&b->cond);
    /* A spawn in progress lists its thread when it ends: wait for it. */
    while (b->nspawning != 0)
        fut__cond_wait(&b->spawned, &b->lock);
    all = b->threads;
    b->threads = NULL;
    fut__unlock(&b->lock);
    /* Joining also waits for threads still running a job or the queue's
     * last jobs; none of them can start a thread (the lane is closed). */
    join_all(all);
}

void fut__blocking_destroy(struct fut_pool *pool, int forked)
{
    struct fut__blocking *b = &pool->b;
    struct fut__bthread *r, *next;

    for (r = b->threads; r != NULL; r = next) {
        next = r->next;
        fut__free(r);
    }
    b->threads = NULL;
    if (!forked) {
        pthread_cond_destroy(&b->spawned);
        pthread_cond_destroy(&b->cond);
        pthread_mutex_destroy(&b->lock);
    }
}

int fut__blocking_empty(struct fut_pool *pool)
{
    struct fut__blocking *b = &pool->b;
    int empty;

    fut__lock(&b->lock);
    empty = b->head == NULL;
    fut__unlock(&b->lock);
    return empty;
}

void fut__blocking_stats(struct fut_pool *pool, fut_pool_stats *out)
{
    struct fut__blocking *b = &pool->b;
    uint64_t finished, cancelled;

    fut__lock(&b->lock);
    out->threads = b->nthreads - b->nstarting;
    out->idle = b->nidle;
    out->peak_threads = b->peak;
    out->queued = b->len;
    finished = atomic_load_explicit(&b->finished, memory_order_relaxed);
    cancelled = atomic_load_explicit(&b->cancelled, memory_order_relaxed);
    out->running = atomic_load_explicit(&b->taken, memory_order_relaxed) - finished;
    out->completed = finished - cancelled;
    out->cancelled = cancelled;
    fut__unlock(&b->lock);
}
