/* blocking.c - the blocking lane: threads made on demand, retired when idle.
 *
 * DESIGN
 *
 * Jobs here sleep in system calls for milliseconds, so the lane is a plain
 * mutex + condition variable FIFO: its cost is noise next to the job's.
 * What matters is how many threads run:
 *   - A submit starts a thread when the jobs queued outnumber the threads
 *     that will take one (idle + starting) and the cap allows: 64 jobs that
 *     each block 10 ms run side by side, not in waves of a fixed pool.
 *   - A thread idle for idle_ms (CLOCK_MONOTONIC deadline) retires.
 *   - Invariant: while a job is queued, some thread of the lane is alive or
 *     starting. A thread retires only with the queue empty (under the lock),
 *     and a submit that cannot start the lane's only thread takes its job
 *     back and fails (ENOMEM / EAGAIN).
 * Every record of a started thread stays on `threads` until joined: retired
 * threads are joined by the next submit that starts one, and by shutdown,
 * so no thread ever touches the pool after it is freed.
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

static void *bthread_main(void *arg)
{
    struct fut__bthread *self = arg;
    struct fut_pool *pool = self->pool;
    struct fut__blocking *b = &pool->b;
    struct timespec deadline;
    fut_pool_job *job;
    int idle_since_set = 0;

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
            fut__unlock(&b->lock);
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

int fut__blocking_submit(struct fut_pool *pool, fut_pool_job *job, fut_pool_fn fn)
{
    struct fut__blocking *b = &pool->b;
    struct fut__bthread *rec = NULL, *reaped;
    int spawn = 0, rc;
    unsigned id = 0;

    job->fn_ = fn;
    job->next_ = NULL;
    fut__lock(&b->lock);
    if (b->closed) {
        fut__unlock(&b->lock);
        return ESHUTDOWN;
    }
    if (b->head == NULL)
        b->head = job;
    else
        b->tail->next_ = job;
    b->tail = job;
    b->len++;
    atomic_fetch_add_explicit(&b->submitted, 1, memory_order_relaxed);
    if (b->len > (uint64_t)b->nidle + b->nstarting && b->nthreads < b->cap) {
        spawn = 1;
        b->nthreads++;
        b->nstarting++;
        if (b->nthreads > b->peak)
            b->peak = b->nthreads;
        id = b->next_id++;
    } else if (b->nidle != 0) {
        fut__cond_signal(&b->cond);
    }
    reaped = take_exited(b);
    fut__unlock(&b->lock);
    join_all(reaped);
    if (!spawn)
        return 0;

    rc = ENOMEM;
    rec = fut__malloc(sizeof *rec);
    if (rec != NULL) {
        memset(rec, 0, sizeof *rec);
        rec->pool = pool;
        rec->id = id;
        fut__lock(&b->lock);
        if (b->stop) {
            /* Shutdown got in between: it has already cancelled or drained
             * the job, and would not join a thread started now. */
            rc = ESHUTDOWN;
        } else {
            /* Listed and started under one lock hold, so that shutdown
             * always finds the record of every thread it must join. */
            rec->next = b->threads;
            b->threads = rec;
            rc = fut__thread_start(&rec->thread, bthread_main, rec);
            if (rc != 0)
                b->threads = rec->next;
        }
        fut__unlock(&b->lock);
        if (rc == 0)
            return 0;
        fut__free(rec);
        if (rc != ESHUTDOWN)
            rc = rc == ENOMEM ? ENOMEM : EAGAIN;
    }
    fut__lock(&b->lock);
    b->nthreads--;
    b->nstarting--;
    if (b->nthreads != 0 || !unqueue(b, job)) {
        /* Another thread is alive or starting and will run it. */
        fut__unlock(&b->lock);
        return 0;
    }
    atomic_fetch_sub_explicit(&b->submitted, 1, memory_order_relaxed);
    fut__unlock(&b->lock);
    return rc;
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
