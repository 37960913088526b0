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
#define FUT__FIRED ((struct fut__task *)1)

enum fut__kind {
    K_PROMISE,  /* settled by fut_promise_* */
    K_WORK,     /* fut_submit: u.work runs on the pool */
    K_THEN,     /* continuations: u.cont */
    K_CATCH,
    K_FINALLY,
    K_SLEEP,    /* fut_sleep: u.sleep, a timer on the dispatcher */
    K_GATHER,   /* combinators over children: u.group */
    K_ANY,
    K_RACE,
    K_TIMEOUT   /* u.group with one child and a timer */
};

struct fut__group;

/* A dependent of a future is a task: it sits in the future's `waiters`
 * list until the future settles, then runs on the dispatcher. */
struct fut_future {
    struct fut__task task;     /* dispatcher: fire this future's dependents */
    fut_pool_job job;          /* pool: the offloaded work (K_WORK) */
    atomic_uint state;         /* FUT_PENDING.. | ST_SETTLING, plus ST_WAITERS */
    atomic_uint refs;          /* references; freed at 0 */
    _Atomic(struct fut__task *) waiters; /* dependents (LIFO), FUT__FIRED once settled */
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
            struct fut__task wnode; /* our node in src's dependents */
            struct fut_future *src; /* the future this one continues (a reference) */
            void (*fn)(void);  /* fut_then_fn / fut_catch_fn / fut_finally_fn */
            void *arg;
        } cont;
        struct {
            uint64_t deadline; /* CLOCK_MONOTONIC ns */
            uint32_t slot;     /* index in the timer heap, TIMER_NONE if not in it */
            struct fut__task arm;    /* dispatcher: put it in the heap */
            struct fut__task disarm; /* dispatcher: take it out (cancelled) */
        } sleep;
        struct fut__group *group; /* K_GATHER, K_ANY, K_RACE, K_TIMEOUT */
    } u;
};

/* Every future is one block of this size (mem.c). */
#define FUT__OBJ_SIZE ((sizeof(struct fut_future) + 15) & ~(size_t)15)

struct fut_runtime {
    /* Producers' line: tasks scheduled from other threads (Treiber stack,
     * taken whole by the dispatcher). */
    _Alignas(FUT__CACHELINE) _Atomic(struct fut__task *) inbox;

    /* Futex word: 1 while the dispatcher sleeps or is about to. */
    _Alignas(FUT__CACHELINE) atomic_uint parked;

    /* Dispatcher-only. */
    _Alignas(FUT__CACHELINE) struct fut__task *run_head; /* local FIFO */
    struct fut__task *run_tail;
    struct fut__heap_slot *heap; /* timers: a 4-ary min-heap on deadline */
    uint32_t heap_len;           /* timers armed */
    uint32_t heap_cap;           /* slots allocated */

    _Alignas(FUT__CACHELINE) atomic_uint refs; /* 1 while not freed + 1 per live future */
    atomic_int stopping;       /* fut_runtime_free has begun */
    pthread_mutex_t dead_lock; /* serializes tasks run after the dispatcher exited */
    uint64_t slow_ns;          /* debug mode: warn about continuations longer than this (0: off) */
    fut_pool *pool;            /* where work runs */
    pthread_t thread;          /* the dispatcher */
};

/* One armed timer: its deadline beside the future, so that sifting reads
 * one array and not the futures. */
struct fut__heap_slot {
    uint64_t deadline;
    struct fut_future *f;
};
#define TIMER_NONE UINT32_MAX

extern _Thread_local fut_runtime *fut__dispatcher_rt;

/* timer.c (dispatcher thread only) */
uint64_t fut__now_ns(void);
int fut__timer_add(fut_runtime *rt, struct fut_future *f);
void fut__timer_remove(fut_runtime *rt, struct fut_future *f);
/* Settle every timer due by now; returns the next deadline (UINT64_MAX: none). */
uint64_t fut__timers_run(fut_runtime *rt);
/* Cancel every armed timer (runtime shutdown). */
void fut__timers_cancel_all(fut_runtime *rt);
void fut__timers_free(fut_runtime *rt);

/* mem.c: blocks of FUT__OBJ_SIZE, from per-thread caches (any thread) */
void *fut__obj_alloc(void); /* NULL when out of memory */
void fut__obj_free(void *p); /* NULL is a no-op */

/* future.c */
/* Settle f if pending (msg is taken over when owned). 0 or EALREADY. */
int fut__settle(struct fut_future *f, unsigned to, void *value, int code, char *msg, int owned);
struct fut_future *fut__future_new(fut_runtime *rt, int kind, unsigned refs);
/* Run task on the dispatcher once src has settled. */
void fut__depend(struct fut_future *src, struct fut__task *task);
/* Settle d as src settled (src has); marks src's error as read. */
void fut__adopt(struct fut_future *d, struct fut_future *src);

/* combine.c */
void fut__sleep_cancelled(struct fut_future *f);
void fut__group_cancelled(struct fut_future *f);
void fut__group_free(struct fut_future *f);

/* runtime.c */
fut_runtime *fut__runtime(fut_runtime *rt); /* rt, or the default one (NULL if it cannot be made) */
void fut__schedule(fut_runtime *rt, struct fut__task *task);
void fut__runtime_unref(fut_runtime *rt);
/* Debug mode: report fn if it held the dispatcher since start_ns for too long. */
void fut__debug_slow(fut_runtime *rt, void (*fn)(void), uint64_t start_ns);

#endif
