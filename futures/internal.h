/* internal.h - private structures of the futures layer: the runtime, its
 * dispatcher, and the future itself. Uses pool/ (never the other way). */
#ifndef FUT_FUTURES_INTERNAL_H
#define FUT_FUTURES_INTERNAL_H

#include "futures.h"
#include "pool/sync.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

/* Something for the dispatcher thread to run. Embedded in its owner. */
struct fut__task {
    struct fut__task *next;             /* link in a dispatcher queue */
    void (*run)(struct fut__task *task); /* called on the dispatcher */
};

/* future->state: the low byte is the state, ST_WAITERS says a thread sleeps
 * in fut_wait on this word (futex). */
#define ST_MASK 0xffu
#define ST_SETTLING 4u /* after FUT_PENDING..FUT_CANCELLED: being written */
#define ST_WAITERS 0x100u

/* future->waiters once the future has settled: later dependents are
 * scheduled directly. */
#define FUT__FIRED ((struct fut_future *)1)

enum fut__kind {
    K_PROMISE,  /* settled by fut_promise_* */
    K_WORK,     /* fut_submit: u.work runs on the pool */
    K_THEN,     /* continuations: u.cont */
    K_CATCH,
    K_FINALLY
};

struct fut_future {
    struct fut__task task;     /* dispatcher: fire dependents, or run as continuation */
    fut_pool_job job;          /* pool: the offloaded work (K_WORK) */
    atomic_uint state;         /* FUT_PENDING.. | ST_SETTLING, plus ST_WAITERS */
    atomic_uint refs;          /* references; freed at 0 */
    _Atomic(struct fut_future *) waiters; /* dependents (LIFO), FUT__FIRED once settled */
    struct fut_future *next_waiter; /* link in the source's dependents */
    struct fut_future *fired;  /* dependents taken at settle, for the dispatcher */
    fut_runtime *rt;           /* owner (holds a reference on it) */
    void *value;               /* resolved: the value */
    char *message;             /* rejected or cancelled: the message */
    int code;                  /* rejected or cancelled: the code */
    unsigned char kind;        /* enum fut__kind */
    unsigned char msg_owned;   /* message was allocated */
    atomic_uchar observed;     /* someone read the error */
    union {
        struct {
            fut_work_fn fn;    /* the work */
            void *arg;
        } work;
        struct {
            struct fut_future *src; /* the future this one continues (a reference) */
            void (*fn)(void);  /* fut_then_fn / fut_catch_fn / fut_finally_fn */
            void *arg;
        } cont;
    } u;
};

struct fut_runtime {
    /* Producers' line: tasks scheduled from other threads (Treiber stack,
     * taken whole by the dispatcher). */
    _Alignas(FUT__CACHELINE) _Atomic(struct fut__task *) inbox;

    /* Futex word: 1 while the dispatcher sleeps or is about to. */
    _Alignas(FUT__CACHELINE) atomic_uint parked;

    /* Dispatcher-only. */
    _Alignas(FUT__CACHELINE) struct fut__task *run_head; /* local FIFO */
    struct fut__task *run_tail;

    _Alignas(FUT__CACHELINE) atomic_uint refs; /* 1 while not freed + 1 per live future */
    atomic_int stopping;       /* fut_runtime_free has begun */
    pthread_mutex_t dead_lock; /* serializes tasks run after the dispatcher exited */
    fut_pool *pool;            /* where work runs */
    pthread_t thread;          /* the dispatcher */
};

extern _Thread_local fut_runtime *fut__dispatcher_rt;

/* runtime.c */
fut_runtime *fut__runtime(fut_runtime *rt); /* rt, or the default one (NULL if it cannot be made) */
void fut__schedule(fut_runtime *rt, struct fut__task *task);
void fut__runtime_unref(fut_runtime *rt);

#endif
