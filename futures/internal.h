/* internal.h - private structures of the futures layer: the runtime, its
 * dispatcher, and the future itself. Uses pool/ (never the other way). */
#ifndef FUT_FUTURES_INTERNAL_H
#define FUT_FUTURES_INTERNAL_H

#include "futures.h"
#include "pool/pool_internal.h"
#include "pool/sync.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Something for the dispatcher thread to run. Embedded in its owner. */
struct fut__task {
    struct fut__task *next;             /* link in a dispatcher queue */
    void (*run)(struct fut__task *task); /* called on the dispatcher */
};

/* future->state, one 32-bit word (also the futex word of fut_wait):
 *   bits 0-2   the state: FUT_PENDING..FUT_CANCELLED, or ST_SETTLING
 *   bit 3      ST_WAITERS: a thread sleeps in fut_wait on this word
 *   bit 4      ST_OBSERVED: someone read the error (set once settled)
 *   bit 5      ST_MSG_OWNED: the message was allocated (set at settling)
 *   bit 6      ST_ARMED: a sleep's arm task has run (its link is free)
 *   bit 7      ST_NOMSG: cancelled while in the timer wheel, the message
 *              slot was left alone (it held the deadline): the message is
 *              "cancelled"
 *   bits 8-11  the kind (enum fut__kind), fixed at creation
 *   bit 13     ST_FLATTEN: a fut_then_future continuation (fixed at
 *              creation, dropped when it settles)
 *   bit 12     ST_LINKED: a sleep is in the timer wheel, or a K_IO wait
 *              in its descriptor's list of waiters; only the dispatcher
 *              sets and clears it, and while a sleep has it the value
 *              slot holds the deadline and settlers do not write it
 *   bits 16-31 the error code of a rejected or cancelled future
 * Packing them here keeps the common part of a future at 40 bytes. */
#define ST_MASK 0x7u
#define ST_SETTLING 4u /* after FUT_PENDING..FUT_CANCELLED: being written */
#define ST_WAITERS 0x8u
#define ST_OBSERVED 0x10u
#define ST_MSG_OWNED 0x20u
#define ST_ARMED 0x40u
#define ST_NOMSG 0x80u
#define ST_LINKED 0x1000u
#define ST_FLATTEN 0x2000u /* K_THEN of fut_then_future: follow the future fn returns (until settled) */
#define ST_KIND_SHIFT 8
#define ST_KIND (0xfu << ST_KIND_SHIFT)
#define ST_CODE_SHIFT 16
#define FUT__CODE_MAX 0xffff /* larger codes are stored as EINVAL */

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
    K_TIMEOUT,  /* u.group with one child and a timer */
    K_CORO,     /* fut_async: u.coro, a coroutine on the dispatcher (coro.c) */
    K_IO,       /* fut_io_wait: u.io, a wait for a descriptor (io/poll.c) */
    K_WAITSET   /* fut_wait_many: u.group, inputs and maybe a timer (combine.c) */
};

#define IS_GROUP(kind) (((kind) >= K_GATHER && (kind) <= K_TIMEOUT) || (kind) == K_WAITSET)

struct fut__group;
struct fut__coro;
struct fut__coro_rt;

/* A future: 40 bytes common to all, then what its kind needs (see
 * fut__future_size). A dependent of a future is a task: it sits in the
 * future's `waiters` list until the future settles, then runs on the
 * dispatcher. */
struct fut_future {
    /* The future's own dispatcher task (fire its dependents; arm a
     * sleep): only a link, queued as a tagged entry (runtime.c), so it
     * needs no function pointer. */
    struct fut__task *link;
    atomic_uint state;         /* see ST_* above */
    atomic_uint refs;          /* references; freed at 0 */
    _Atomic(struct fut__task *) waiters; /* dependents (LIFO), FUT__FIRED once settled */
    fut_runtime *rt;           /* owner (holds a reference on it) */
    union {
        void *value;           /* resolved: the value */
        char *message;         /* rejected or cancelled: the message (may be NULL; see fut__message) */
        uint64_t deadline;     /* a pending sleep: CLOCK_MONOTONIC ns (see ST_LINKED) */
    };
    union {
        struct {
            fut_pool_job job;  /* pool: the offloaded work */
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
            struct fut_future *wnext;  /* next in its timer wheel list (while ST_LINKED) */
            struct fut_future **wprev; /* what points at us there */
        } sleep;
        struct fut__group *group; /* K_GATHER, K_ANY, K_RACE, K_TIMEOUT */
        struct fut__coro *coro;   /* K_CORO */
        struct {
            struct fut__task task;     /* registration on the dispatcher, when made elsewhere */
            struct fut_future *next;   /* in its descriptor's waiters (while ST_LINKED) */
            struct fut_future **prev;  /* what points at us there */
            int fd;
            unsigned events;           /* FUT_IO_READ | FUT_IO_WRITE */
        } io;                     /* K_IO */
    } u;
};

static inline unsigned fut__kind(const struct fut_future *f)
{
    /* Fixed before the future is shared: relaxed is enough. */
    return (atomic_load_explicit(&((struct fut_future *)f)->state, memory_order_relaxed) & ST_KIND) >>
           ST_KIND_SHIFT;
}

/* The error code of a settled future (0 if resolved). */
static inline int fut__code(const struct fut_future *f)
{
    return (int)(atomic_load_explicit(&((struct fut_future *)f)->state, memory_order_acquire) >>
                 ST_CODE_SHIFT);
}

/* The message of a rejected or cancelled future (may be NULL). */
static inline const char *fut__message(const struct fut_future *f)
{
    if (atomic_load_explicit(&((struct fut_future *)f)->state, memory_order_acquire) & ST_NOMSG)
        return "cancelled";
    return f->message;
}

/* Futures come in two block sizes (mem.c): the common part plus the
 * largest member of u that a kind uses. */
#define FUT__SIZE_SMALL (offsetof(struct fut_future, u) + 16) /* promise, sleep, groups: 56 */
#define FUT__SIZE_LARGE sizeof(struct fut_future)               /* work, continuations: 80 */

/* The dispatcher's timers: a hierarchical timing wheel (timer.c). */
#define WHEEL_BITS 6
#define WHEEL_SLOTS (1u << WHEEL_BITS)
#define WHEEL_LEVELS 7 /* 2^42 ticks: 146 years */
#define WHEEL_TICK_SHIFT 20 /* a tick is 2^20 ns, about 1 ms (see fut__tick_shift) */
struct fut__wheel {
    unsigned shift;            /* a tick is 2^shift ns */
    uint64_t tick;             /* next tick to process: every earlier one is done */
    uint64_t occupied[WHEEL_LEVELS]; /* bit s: slots[level][s] is not empty */
    struct fut_future *slots[WHEEL_LEVELS][WHEEL_SLOTS]; /* lists linked by u.sleep.wnext */
    struct fut_future *due;    /* ticks processed, deadline not reached: sorted by deadline */
    struct fut_future *late;   /* armed after their tick was processed: unsorted */
    uint64_t count;            /* sleeps in the wheel (ST_LINKED) */
};

struct fut_runtime {
    /* Producers' line: tasks scheduled from other threads (Treiber stack,
     * taken whole by the dispatcher). */
    _Alignas(FUT__CACHELINE) _Atomic(struct fut__task *) inbox;

    /* 1 while the dispatcher sleeps on this futex word or is about to,
     * 2 while it sleeps in its poller (wake it through the poller). */
    _Alignas(FUT__CACHELINE) atomic_uint parked;

    /* Dispatcher-only. */
    _Alignas(FUT__CACHELINE) struct fut__task *run_head; /* local FIFO */
    struct fut__task *run_tail;
    struct fut__io *io_here;     /* rt->io, the dispatcher's copy on this line */
    struct fut__wheel wheel;     /* timers (timer.c) */

    _Alignas(FUT__CACHELINE) atomic_uint refs; /* 1 while not freed + 1 per live future */
    atomic_int stopping;       /* fut_runtime_free has begun */
    pthread_mutex_t dead_lock; /* serializes tasks run after the dispatcher exited */
    uint64_t slow_ns;          /* debug mode: warn about continuations longer than this (0: off) */
    uint64_t spin_ns;          /* dispatcher only: a timed wait ends this early, then spins */
    uint64_t spin_max_ns;      /* cap of spin_ns (0: never spin) */
    fut_pool *pool;            /* where work runs */
    struct fut__coro_rt *coro; /* dispatcher only: coroutines, made at the first one (coro.c) */
    _Atomic size_t coro_stack_size; /* usable bytes of coroutine stacks */
    atomic_int coro_begun;     /* the first coroutine started: the stack size is fixed */
    unsigned gen;              /* fork generation it was made in (fut__forked) */
    /* Descriptors watched (io/poll.c): made by the dispatcher on first
     * use (release), read by producers that find parked == 2 to wake it. */
    _Atomic(struct fut__io *) io;
    pthread_t thread;          /* the dispatcher */
};

/* Whether rt was made before a fork() that made the calling process (its
 * threads do not exist here): every call on it fails with FUT_EFORKED.
 * One relaxed load: the generation only changes in the child's atfork
 * handler, before any other thread of the child exists. */
static inline int fut__forked(const fut_runtime *rt)
{
    return fut__unlikely(rt->gen != atomic_load_explicit(&fut__fork_gen, memory_order_relaxed));
}

/* A future of rt already rejected with FUT_EFORKED, for the calls that
 * return a future (NULL, errno ENOMEM, when there is no memory for it). */
fut_future *fut__forked_future(fut_runtime *rt);


extern _Thread_local fut_runtime *fut__dispatcher_rt;

/* timer.c (dispatcher thread only) */
uint64_t fut__now_ns(void);
/* The tick of wheels made from now on (tests shrink it to cross every
 * level's boundaries in milliseconds); WHEEL_TICK_SHIFT by default. */
extern unsigned fut__tick_shift;
void fut__wheel_init(struct fut__wheel *w);
/* Put a pending sleep in the wheel (ST_ARMED; the wheel takes over the
 * caller's reference): 1. 0 if it had settled (nothing done). */
int fut__timer_arm(fut_runtime *rt, struct fut_future *f);
/* A sleep was cancelled after it was armed: take it out of the wheel if
 * it is still there (dropping the wheel's reference). */
void fut__timer_cancelled(fut_runtime *rt, struct fut_future *f);
/* Settle every timer due by now; returns when the wheel next needs the
 * dispatcher (a deadline or a cascade; UINT64_MAX: never). */
uint64_t fut__timers_run(fut_runtime *rt);
/* Cancel every armed timer (runtime shutdown). */
void fut__timers_cancel_all(fut_runtime *rt);

/* mem.c: blocks of FUT__SIZE_SMALL (large = 0) or FUT__SIZE_LARGE
 * (large = 1), from per-thread caches (any thread) */
void *fut__obj_alloc(int large); /* NULL when out of memory */
void fut__obj_free(void *p, int large); /* NULL is a no-op */

/* future.c */
/* A call in progress on this thread: a work function, a continuation or a
 * coroutine. fut_raise records into the innermost one, fut_cancelled asks
 * about its work. A record lives in the frame of whoever makes the call
 * (a coroutine's in its struct fut__coro); calls nest (a wait that helps
 * run jobs), through outer. A coroutine's record is made current by the
 * dispatcher each time it resumes it, and the dispatcher's own put back
 * after, so switching costs one pointer. */
struct fut__call {
    struct fut__call *outer; /* the call this one runs inside, or NULL */
    struct fut_future *work; /* whose cancel fut_cancelled reports, or NULL */
    int code;                /* 0: nothing raised */
    char *message;           /* owned */
};
extern _Thread_local struct fut__call *fut__call_cur; /* NULL: no call in progress */
/* Start call c for work (NULL: the outer call's work) and make it
 * current; end it (the outer one is current again). */
void fut__call_begin(struct fut__call *c, struct fut_future *work);
void fut__call_end(struct fut__call *c);
/* Settle d with a call's return value, or with what it raised (the
 * message passes to d). */
void fut__settle_from_call(struct fut_future *d, void *value, struct fut__call *c);
/* Settle f if pending (msg is taken over when owned). 0 or EALREADY. */
int fut__settle(struct fut_future *f, unsigned to, void *value, int code, char *msg, int owned);
struct fut_future *fut__future_new(fut_runtime *rt, int kind, unsigned refs);
/* Run task on the dispatcher once src has settled. */
void fut__depend(struct fut_future *src, struct fut__task *task);
/* Settle d as src settled (src has); marks src's error as read. */
void fut__adopt(struct fut_future *d, struct fut_future *src);
/* The future's own task (its link was queued, with a reference): arm a
 * sleep, or run the dependents of a settled future. Dispatcher only. */
void fut__future_task(struct fut_future *f);
/* Mark f's error as read. */
void fut__observe(struct fut_future *f);
/* In the child of a fork(): the unobserved hook's lock is made new. */
void fut__unobserved_atfork_child(void);

/* combine.c */
void fut__group_cancelled(struct fut_future *f);
/* Whether every input of group f has settled (K_TIMEOUT: its future):
 * its result is computed, a cancel is refused. Any thread. */
int fut__group_decided(struct fut_future *f);
void fut__group_free(struct fut_future *f);

/* coro.c (dispatcher only, but fut__coro_request_cancel, _cancel_requested and fut__coro_free) */
int fut__coro_rt_init(fut_runtime *rt);
void fut__coro_rt_free(fut_runtime *rt);
uint64_t fut__coro_live(fut_runtime *rt);   /* coroutines started, not finished */
/* Unmap the cached stacks beyond the cache's bound once a burst is over;
 * returns when to call it again (UINT64_MAX: nothing to trim). */
uint64_t fut__coro_trim(fut_runtime *rt);
int fut__coro_cancel_all(fut_runtime *rt);  /* 1 if it cancelled any (once) */
/* fut_cancel of a K_CORO (any thread): 0 (asked, or cancelled before it
 * started), EALREADY (it ended). */
int fut__coro_request_cancel(struct fut_future *f);
/* Whether a cancel was asked of the coroutine f (fut_cancelled in it). */
int fut__coro_cancel_requested(const struct fut_future *f);
void fut__coro_free(struct fut_future *f);  /* future_free of a K_CORO */

/* Dispatcher queue entries (runtime.c): a generic task (run through its
 * function), or a future's own task, entered as the future's address with
 * bit 0 set (run by fut__future_task; linked through f->link), or a
 * coroutine's resume, its run_task's address with bit 1 set (resumed
 * inline by run_queue). Tagging the entry rather than storing a function
 * in every future saves 8 bytes a future; resuming inline saves a
 * mispredicted return after every switch back. */
static inline int fut__entry_is_future(const struct fut__task *e)
{
    return ((uintptr_t)e & 1u) != 0;
}

static inline int fut__entry_is_coro(const struct fut__task *e)
{
    return ((uintptr_t)e & 2u) != 0;
}

static inline struct fut_future *fut__entry_future(struct fut__task *e)
{
    return (struct fut_future *)((uintptr_t)e - 1u);
}

/* The task of a generic or coroutine entry. */
static inline struct fut__task *fut__entry_task(struct fut__task *e)
{
    return (struct fut__task *)((uintptr_t)e & ~(uintptr_t)3);
}

/* The coroutine of a resume entry (coro.h's struct fut__coro). */
#define fut__entry_coro(e) \
    ((struct fut__coro *)((char *)fut__entry_task(e) - offsetof(struct fut__coro, run_task)))

static inline struct fut__task *fut__entry_coro_of(struct fut__task *run_task)
{
    return (struct fut__task *)((uintptr_t)run_task | 2u);
}

static inline struct fut__task **fut__entry_next(struct fut__task *e)
{
    if (fut__entry_is_future(e))
        return &fut__entry_future(e)->link;
    return &fut__entry_task(e)->next;
}

/* Append entry e to rt's local FIFO: on rt's dispatcher only (or the
 * thread standing in for it). */
static inline void fut__append_local(fut_runtime *rt, struct fut__task *e)
{
    *fut__entry_next(e) = NULL;
    if (rt->run_head == NULL)
        rt->run_head = e;
    else
        *fut__entry_next(rt->run_tail) = e;
    rt->run_tail = e;
}

/* runtime.c */
/* Register the futures layer's fork handler (once): call before taking a
 * lock of this layer that another thread may hold across a fork(). */
void fut__atfork_init(void);
fut_runtime *fut__runtime(fut_runtime *rt); /* rt, or the default one (NULL if it cannot be made) */
fut_runtime *fut__runtime_if_made(void);    /* the default runtime if it exists (never makes it) */
/* Queue a task on rt's dispatcher (any thread). The caller must keep rt
 * alive until the call returns, not only until the task is queued: from
 * another thread the push still reads rt (to wake the dispatcher) after
 * the task became visible, and the task may run, and end the last future
 * of rt, meanwhile. Holding a reference on any future of rt does it (a
 * settler holds its future; coro.c's await_fired takes one). Same for the
 * two calls below. */
void fut__schedule(fut_runtime *rt, struct fut__task *task);
/* Queue f's own task (f->link, a tagged entry): fut__future_task(f). */
void fut__schedule_future(fut_runtime *rt, struct fut_future *f);
/* Queue the resume of the coroutine whose run_task this is (a tagged
 * entry: run_queue resumes it inline). */
void fut__schedule_coro(fut_runtime *rt, struct fut__task *run_task);
void fut__runtime_unref(fut_runtime *rt);
/* Debug mode: report fn if it held the dispatcher since start_ns for too
 * long; what: "a continuation", "a coroutine". */
void fut__debug_slow(fut_runtime *rt, const char *what, void (*fn)(void), uint64_t start_ns);

#endif
