/* pool_internal.h - the pool's private structures, shared by pool.c (the
 * pool and its compute lane) and blocking.c (the blocking lane). */
#ifndef FUT_POOL_INTERNAL_H
#define FUT_POOL_INTERNAL_H

#include "futures.h"
#include "pool/sync.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

/* pool->state, only ever moving forward. */
enum {
    POOL_RUNNING = 0,    /* submits accepted */
    POOL_DRAINING = 1,   /* only jobs of this pool may submit */
    POOL_CANCELLING = 2, /* no submits; queued jobs are being cancelled */
    POOL_STOPPING = 3,   /* threads exit once they find no work */
    POOL_STOPPED = 4     /* every thread joined */
};

/* The compute lane's inbox holds this once closed: a push that sees it fails. */
#define FUT__CLOSED ((fut_pool_job *)1)

/* A compute worker. The wake word lives here so that a waker wakes exactly
 * the worker it took off the sleepers list. */
struct fut__worker {
    pthread_t thread;          /* joined at shutdown */
    struct fut_pool *pool;     /* owner */
    struct fut__worker *next_sleeper; /* link in the lane's sleepers list (under lane lock) */
    _Alignas(FUT__CACHELINE) atomic_uint wake; /* futex word: 1 once taken off the sleepers list */
    unsigned index;            /* for the thread name */
    int sleeping;              /* on the sleepers list (under lane lock) */
};

struct fut__compute {
    /* Producers' line: a Treiber stack of submitted jobs (LIFO; a consumer
     * takes it whole, under lock, and reverses it). Nothing else lives
     * here: a submit is one CAS on a line nobody else writes. */
    _Alignas(FUT__CACHELINE) _Atomic(fut_pool_job *) inbox;

    /* Consumers' line, under lock: jobs taken from the inbox, FIFO. */
    _Alignas(FUT__CACHELINE) pthread_mutex_t lock;
    fut_pool_job *head;         /* next job to hand out */
    fut_pool_job *tail;         /* last job, valid when head != NULL */
    struct fut__worker *sleepers; /* parked workers (LIFO: the warmest first) */
    atomic_uint_fast64_t grabbed; /* jobs moved from inbox to FIFO (or collected by cancel) */
    atomic_uint_fast64_t taken;  /* jobs handed to a thread or collected by cancel */

    /* Length of sleepers, written under lock but read by every submit: on
     * a line of its own that changes only when a worker parks or wakes. */
    _Alignas(FUT__CACHELINE) atomic_uint nsleepers;

    /* Finishing line: written once per batch. */
    _Alignas(FUT__CACHELINE) atomic_uint_fast64_t finished; /* ran or cancelled */
    atomic_uint_fast64_t cancelled;

    unsigned nthreads;          /* workers started (fixed after creation) */
    atomic_uint alive;          /* workers not yet joined (for stats) */
    struct fut__worker *workers; /* nthreads of them */
};

/* A blocking-lane thread record, kept until the thread is joined. */
struct fut__bthread {
    pthread_t thread;          /* valid once started */
    struct fut_pool *pool;     /* owner */
    struct fut__bthread *next; /* link in the lane's records list */
    int exited;                /* the thread has left its loop (under lane lock) */
    unsigned id;               /* for the thread name */
};

struct fut__blocking {
    pthread_mutex_t lock;       /* guards every field below but the atomics */
    pthread_cond_t cond;        /* idle threads wait here (CLOCK_MONOTONIC) */
    fut_pool_job *head, *tail;  /* FIFO of queued jobs */
    uint64_t len;               /* jobs queued */
    unsigned nthreads;          /* threads alive or starting */
    unsigned nidle;             /* threads waiting on cond */
    unsigned nstarting;         /* reserved or created, not yet in their loop */
    unsigned nspawning;         /* pthread_create calls in progress */
    pthread_cond_t spawned;     /* signalled when nspawning drops to 0 during stop */
    unsigned peak;              /* most threads at once */
    unsigned next_id;           /* name of the next thread */
    unsigned cap;               /* most threads at once allowed */
    unsigned idle_ms;           /* idle time before a thread retires */
    int closed;                 /* submits refused */
    int stop;                   /* threads exit once the queue is empty */
    struct fut__bthread *threads; /* every record not yet joined */
    atomic_uint_fast64_t submitted; /* accepted submits */
    atomic_uint_fast64_t taken;     /* taken by a thread or collected by cancel */
    atomic_uint_fast64_t finished;  /* ran or cancelled */
    atomic_uint_fast64_t cancelled;
};

struct fut_pool {
    /* Read-mostly line, loaded by every submit. */
    _Alignas(FUT__CACHELINE) atomic_int state; /* POOL_* */
    atomic_int cancelling;      /* set by a FUT_POOL_CANCEL shutdown: batches in hand are cancelled */
    unsigned gen;               /* fork generation the pool was made in */

    struct fut__compute c;
    struct fut__blocking b;

    /* Waiting for idle (fut_pool_wait_idle, drain): a finishing thread
     * bumps idle_seq and wakes the waiters when there are any. */
    _Alignas(FUT__CACHELINE) atomic_uint idle_seq;
    atomic_uint idle_waiters;

    pthread_mutex_t shutdown_lock; /* serializes shutdowns */
    int shut_down;               /* under shutdown_lock */
};

/* Bumped in the child after fork(): a pool of another generation is dead. */
extern atomic_uint fut__fork_gen;

/* The record of the call in progress on this thread, owned by the layer
 * above (futures/internal.h: struct fut__call; fut_raise records into
 * it). The pool only hides it while a thread helps run jobs (in
 * fut_pool_wait_idle, a draining shutdown, fut__pool_help): a job run
 * there is no part of the call that waits. */
struct fut__call;
extern _Thread_local struct fut__call *fut__call_cur;

/* Call job's callback from a thread that may be in a call of the layer
 * above (a shutdown's cancel notices, a failed start's strand notices, on
 * the thread that made that call): outside that call. */
static inline void fut__job_notify(fut_pool_job *job, int status)
{
    struct fut__call *call = fut__call_cur;

    fut__call_cur = NULL;
    job->fn_(job, status);
    fut__call_cur = call;
}

/* The pool whose job the current thread is running (or whose worker it is). */
extern _Thread_local struct fut_pool *fut__current_pool;
/* Set on compute workers (the pool is fut__current_pool). */
extern _Thread_local int fut__compute_worker;

/* Whether the calling thread may submit to pool now: 0, or the error to
 * return (ESHUTDOWN; FUT_EFORKED in a forked child). While the pool
 * drains only its own jobs may submit. */
int fut__pool_submit_refused(struct fut_pool *pool);

/* Run one queued batch of pool's compute jobs on the calling thread.
 * Returns 1 if it ran one, 0 if none was queued. For waits on a compute
 * worker, which must keep the pool moving instead of blocking it. */
int fut__pool_help(struct fut_pool *pool);

/* Wake fut_pool_wait_idle waiters after finished counts moved. */
static inline void fut__pool_finished(struct fut_pool *pool)
{
    /* seq_cst pairs with the waiter's increment of idle_waiters followed by
     * its seq_cst reads of the counters (Dekker): one of the two sees the other. */
    if (atomic_load_explicit(&pool->idle_waiters, memory_order_seq_cst) != 0) {
        atomic_fetch_add_explicit(&pool->idle_seq, 1, memory_order_seq_cst);
        fut__futex_wake(&pool->idle_seq, 0x7fffffff);
    }
}

/* Block every signal around pthread_create so the thread starts with all
 * of them blocked. Returns pthread_create's result. */
int fut__thread_start(pthread_t *t, void *(*fn)(void *), void *arg);
void fut__thread_name(const char *fmt, unsigned id);
void fut__join(pthread_t t);

/* blocking.c */
int fut__blocking_init(struct fut_pool *pool, unsigned cap, unsigned idle_ms);
int fut__blocking_submit(struct fut_pool *pool, fut_pool_job *job, fut_pool_fn fn);
/* Refuse submits; with cancel, take the queue out and return it (FIFO). */
fut_pool_job *fut__blocking_close(struct fut_pool *pool, int cancel);
/* Tell the threads to exit once the queue is empty and join them all. */
void fut__blocking_stop(struct fut_pool *pool);
void fut__blocking_destroy(struct fut_pool *pool, int forked);
void fut__blocking_stats(struct fut_pool *pool, fut_pool_stats *out);
/* Whether the blocking lane's queue is empty. */
int fut__blocking_empty(struct fut_pool *pool);

#endif
