/* runtime.c - a runtime: one dispatcher thread and one pool.
 *
 * DESIGN
 *
 * Threads: the dispatcher runs every task (continuations, firing a settled
 * future's dependents); pool threads run work; any thread may schedule.
 *
 * Hand-off to the dispatcher: fut__schedule pushes the task on `inbox`, a
 * Treiber stack (one CAS; only whole-stack removal, so no ABA). The
 * dispatcher takes the whole stack, reverses it into its private FIFO and
 * runs it without any lock. A task scheduled by the dispatcher itself goes
 * straight to the private FIFO.
 *
 * Parking: the dispatcher stores parked = 1, re-checks the inbox and
 * sleeps on the futex word; a producer that pushed loads parked and, if 1,
 * exchanges it to 0 and wakes it. Both sides are seq_cst (push then load;
 * store then load), so either the producer sees parked or the dispatcher
 * sees the task: no lost wake-up, and no system call while it is awake.
 *
 * Descriptors (io/poll.c): once something has waited on one, the
 * dispatcher parks in its poller instead (epoll_pwait2, nanosecond
 * timeouts) and stores parked = 2, which tells a producer to wake it
 * through the poller's eventfd; the same exchange gives one wake-up per
 * sleep. While busy it looks at the poller without waiting at most every
 * millisecond (fut__io_busy), so a stream of tasks cannot starve I/O; a
 * look settles at most 128 waits' futures, whose dependents queue behind
 * the tasks already queued, so I/O cannot starve tasks. A runtime that
 * never waits on a descriptor never makes the poller and keeps the futex.
 *
 * Timers (timer.c) are the dispatcher's own: it runs the due ones after
 * its queues, then sleeps until the earliest deadline (futex wait on an
 * absolute CLOCK_MONOTONIC deadline, timer slack 1 ns).
 *
 * Shutdown (fut_runtime_free): the pool is shut down in cancel mode first
 * (running work finishes and settles; queued work's futures are
 * cancelled), so every settle that can come from a pool thread has
 * scheduled its task; then the dispatcher cancels its timers (a sleep made
 * from then on is cancelled when armed) and runs until its queues are empty
 * and exits, closing its inbox (a sentinel a push cannot get past). Tasks
 * scheduled after that (a promise the user settles later) run on the
 * scheduling thread, which stands in for the dispatcher one at a time
 * under dead_lock, as plain continuations: a thread that schedules from
 * inside a coroutine of another runtime hides that coroutine while it
 * stands in (fut__coro_running NULL), so nothing awaits or switches away
 * with dead_lock held. fut_runtime_free is refused on every dispatcher:
 * its join waits for this runtime's coroutines, which may await futures
 * whose dependents the calling dispatcher would have to run.
 *
 * Fork: a runtime records the fork generation it was made in (pool.c's
 * counter, bumped in the child). In a child, every call that would need
 * the threads of a runtime of the parent fails with FUT_EFORKED before it
 * touches the runtime's queues or locks (fut__forked: one relaxed load);
 * fut_runtime_free of one releases memory only. The default runtime is
 * replaced on first use in the child (see "the default runtime" below).
 *
 * Lifetime: every future holds a reference on its runtime, so the struct
 * outlives fut_runtime_free while the user still holds futures.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "futures/coro.h"
#include "io/io.h"
#include "pool/alloc.h"
#include "pool/pool_internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

_Thread_local fut_runtime *fut__dispatcher_rt;

/* A closed inbox: never a queue entry (entries are aligned task pointers,
 * or future pointers with bit 0 set). */
#define INBOX_CLOSED ((struct fut__task *)2)

static void run_queue(fut_runtime *rt);
static void run_all(fut_runtime *rt);
static void atfork_child(void);

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void atfork_register(void)
{
    pthread_atfork(NULL, NULL, atfork_child);
}

/* The dispatcher has exited: the calling thread stands in for it, one
 * thread at a time (see DESIGN). */
static void run_dead(fut_runtime *rt, struct fut__task *e)
{
    fut_runtime *outer = fut__dispatcher_rt;
    struct fut__coro *co = fut__coro_running;

    fut__lock(&rt->dead_lock);
    fut__dispatcher_rt = rt;
    /* The scheduling thread may be running a coroutine of another
     * runtime: what runs here is a plain continuation of rt (fut_await
     * gives EDEADLK, fut_in_coroutine 0), so that nothing switches away
     * with dead_lock held or with this thread posing as rt's dispatcher. */
    fut__coro_running = NULL;
    fut__append_local(rt, e);
    run_all(rt);
    fut__coro_running = co;
    fut__dispatcher_rt = outer;
    fut__unlock(&rt->dead_lock);
}

/* The dispatcher was parked (was: what parked held before we took it). */
static void wake(fut_runtime *rt, unsigned was)
{
    if (was == 1)
        fut__futex_wake(&rt->parked, 1);
    else if (was == 2)
        fut__io_wake(rt); /* in its poller: rt->io is set (stored before parked) */
}

static void push(fut_runtime *rt, struct fut__task *e)
{
    struct fut__task *top;

    if (fut__dispatcher_rt == rt) {
        fut__append_local(rt, e);
        return;
    }
    top = atomic_load_explicit(&rt->inbox, memory_order_relaxed);
    do {
        if (fut__unlikely(top == INBOX_CLOSED)) {
            run_dead(rt, e);
            return;
        }
        *fut__entry_next(e) = top;
        /* seq_cst: releases the entry and orders the parked load below. */
    } while (!atomic_compare_exchange_weak_explicit(&rt->inbox, &top, e, memory_order_seq_cst,
                                                    memory_order_relaxed));
    if (atomic_load_explicit(&rt->parked, memory_order_seq_cst) != 0)
        wake(rt, atomic_exchange_explicit(&rt->parked, 0, memory_order_seq_cst));
}

void fut__schedule(fut_runtime *rt, struct fut__task *task)
{
    push(rt, task);
}

void fut__schedule_future(fut_runtime *rt, struct fut_future *f)
{
    push(rt, (struct fut__task *)((uintptr_t)f | 1u));
}

void fut__schedule_coro(fut_runtime *rt, struct fut__task *run_task)
{
    push(rt, fut__entry_coro_of(run_task));
}

/* Move the inbox into the private FIFO; returns whether it held anything. */
static int take_inbox(fut_runtime *rt, struct fut__task *replace)
{
    struct fut__task *t = atomic_exchange_explicit(&rt->inbox, replace, memory_order_acquire);
    struct fut__task *prev = NULL, *next, *last = t;

    if (t == NULL)
        return 0;
    for (; t != NULL; t = next) { /* LIFO -> FIFO */
        next = *fut__entry_next(t);
        *fut__entry_next(t) = prev;
        prev = t;
    }
    if (rt->run_head == NULL)
        rt->run_head = prev;
    else
        *fut__entry_next(rt->run_tail) = prev;
    rt->run_tail = last;
    return 1;
}

/* Run the tasks queued now, not those they queue: a coroutine that
 * yields in a loop (it queues itself again) must not keep the inbox and
 * the timers waiting. */
static void run_queue(fut_runtime *rt)
{
    struct fut__task *t, *last = rt->run_tail;

    while ((t = rt->run_head) != NULL) {
        rt->run_head = *fut__entry_next(t);
        /* may schedule more, at the tail */
        if (fut__entry_is_future(t))
            fut__future_task(fut__entry_future(t));
        else if (fut__entry_is_coro(t))
            fut__coro_resume(rt, fut__entry_coro(t));
        else
            t->run(t);
        if (t == last) { /* compared, not read: t may be freed */
            /* End of the round. With nothing in the inbox, no timer
             * armed and no poller, the next round may start here: a
             * yielding coroutine goes round without the dispatcher loop's
             * atomic exchange. With a poller, the loop's look at it must
             * come between rounds (a coroutine yielding for ever would
             * starve I/O). */
            if (atomic_load_explicit(&rt->inbox, memory_order_relaxed) != NULL ||
                rt->wheel.count != 0 || rt->io_here != NULL)
                break;
            last = rt->run_tail;
        }
    }
}

static void run_all(fut_runtime *rt)
{
    while (rt->run_head != NULL)
        run_queue(rt);
}

/* Sleep until a task is scheduled or the time `next` (UINT64_MAX: no
 * timer). A timed futex wait here wakes 20-200 us late (more in a VM),
 * timer slack 1 ns notwithstanding, so a sleep of 1 s would overshoot by
 * as much: the wait ends `spin_ns` early, where spin_ns follows the
 * lateness seen lately (up at once, down slowly, capped at spin_max_ns;
 * 100 us to begin with), and the rest
 * is spent polling the inbox and the clock. Never early: timers check
 * their own deadlines. */
#define POLL_NS 20000u /* look at the inbox this long before parking */

static void park(fut_runtime *rt, uint64_t next, int stopping_too)
{
    uint64_t target = next, now;
    struct timespec until;
    int timed_out, io = rt->io_here != NULL;

    if (next != UINT64_MAX && rt->spin_max_ns != 0)
        target = next > rt->spin_ns ? next - rt->spin_ns : 0;
    /* A stream of tasks from other threads (a loop of fut_sleep, work
     * finishing) would wake us once per task, a system call each: look
     * at the inbox for a few microseconds before parking. */
    now = fut__now_ns();
    for (uint64_t until_ns = now + POLL_NS; now < until_ns && now < target;) {
        int i;
        for (i = 0; i < 64; i++)
            fut__cpu_relax();
        if (atomic_load_explicit(&rt->inbox, memory_order_relaxed) != NULL)
            return;
        now = fut__now_ns();
    }
    /* Waiting on descriptors: sleep in the poller (2: a producer wakes
     * us through it), else on the futex word (1). */
    atomic_store_explicit(&rt->parked, io ? 2 : 1, memory_order_seq_cst);
    if (atomic_load_explicit(&rt->inbox, memory_order_seq_cst) != NULL ||
        (!stopping_too && atomic_load_explicit(&rt->stopping, memory_order_seq_cst))) {
        atomic_store_explicit(&rt->parked, 0, memory_order_relaxed);
        if (io)
            fut__io_busy(rt);
        return;
    }
    if (next == UINT64_MAX) {
        if (io)
            fut__io_poll(rt, -1);
        else
            fut__futex_wait(&rt->parked, 1);
        atomic_store_explicit(&rt->parked, 0, memory_order_relaxed);
        return;
    }
    now = fut__now_ns();
    if (target > now) {
        if (io) {
            fut__io_poll(rt, (int64_t)(target - now));
            now = fut__now_ns();
            timed_out = now >= target;
        } else {
            until.tv_sec = (time_t)(target / 1000000000u);
            until.tv_nsec = (long)(target % 1000000000u);
            timed_out = fut__futex_wait_until(&rt->parked, 1, &until) == ETIMEDOUT;
        }
        atomic_store_explicit(&rt->parked, 0, memory_order_relaxed);
        if (rt->spin_max_ns == 0 || !timed_out)
            return;
        now = fut__now_ns();
        if (now > target) {
            /* Learn how late the kernel is: at once when later than we
             * thought (a late timer is the error we avoid), slowly when
             * earlier (1/8 of the news: spinning is only CPU). */
            uint64_t late = now - target;
            if (late > rt->spin_max_ns)
                late = rt->spin_max_ns;
            rt->spin_ns = late > rt->spin_ns ? late : (rt->spin_ns * 7 + late) / 8;
        }
    } else {
        atomic_store_explicit(&rt->parked, 0, memory_order_relaxed);
        if (io)
            fut__io_busy(rt);
    }
    while (now < next && atomic_load_explicit(&rt->inbox, memory_order_relaxed) == NULL &&
           !atomic_load_explicit(&rt->stopping, memory_order_relaxed)) {
        fut__cpu_relax();
        now = fut__now_ns();
    }
}

static void *dispatcher_main(void *arg)
{
    fut_runtime *rt = arg;

    fut__thread_name("fut-dispatch%u", 0);
    /* Sleep as exactly as the kernel can: timers must not fire late by the
     * default 50 us slack. */
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    fut__dispatcher_rt = rt;
    for (;;) {
        uint64_t next;
        run_queue(rt);
        if (fut__unlikely(rt->io_here != NULL))
            fut__io_busy(rt); /* tasks cannot starve I/O: a look every millisecond */
        if (take_inbox(rt, NULL))
            continue;
        next = fut__timers_run(rt);
        if (rt->run_head != NULL)
            continue;
        if (atomic_load_explicit(&rt->stopping, memory_order_acquire)) {
            if (fut__coro_cancel_all(rt)) /* once: they run to their ends */
                continue;
            if (rt->wheel.count != 0) {
                fut__timers_cancel_all(rt); /* their dependents run before we exit */
                continue;
            }
            if (fut__io_cancel_all(rt)) /* waits on descriptors: cancelled */
                continue;
            if (fut__coro_live(rt) == 0)
                break;
            park(rt, UINT64_MAX, 1); /* a coroutine waits for another runtime */
            continue;
        }
        if (fut__unlikely(rt->coro != NULL && rt->coro->stacks.cached > rt->coro->stacks.max_cached)) {
            uint64_t trim = fut__coro_trim(rt); /* idle: the stacks a burst left */
            if (trim < next)
                next = trim;
        }
        park(rt, next, 0);
    }
    /* Close the inbox, taking what raced in: from now on a task runs on
     * the thread that schedules it. */
    fut__lock(&rt->dead_lock);
    take_inbox(rt, INBOX_CLOSED);
    run_all(rt);
    fut__unlock(&rt->dead_lock);
    fut__coro_rt_free(rt); /* every coroutine has ended: their stacks are back */
    fut__dispatcher_rt = NULL;
    return NULL;
}

/* FUT_DEBUG=1 turns the debug mode on with a 100 ms threshold (asyncio's
 * slow_callback_duration); FUT_DEBUG_SLOW_MS=N sets it (and turns it on). */
static uint64_t debug_threshold_ns(void)
{
    const char *ms = getenv("FUT_DEBUG_SLOW_MS"), *on = getenv("FUT_DEBUG");
    char *end;
    double v;

    if (ms != NULL && *ms != '\0') {
        v = strtod(ms, &end);
        if (*end == '\0' && v > 0 && v < 1e9)
            return (uint64_t)(v * 1e6);
    }
    if (on != NULL && *on != '\0' && strcmp(on, "0") != 0)
        return 100000000u;
    return 0;
}

/* FUT_TIMER_SPIN_US=N caps the busy wait before a timer at N us (0: never
 * spin, sleep only); default 250 us. */
static uint64_t timer_spin_max_ns(void)
{
    const char *us = getenv("FUT_TIMER_SPIN_US");
    char *end;
    double v;

    if (us != NULL && *us != '\0') {
        v = strtod(us, &end);
        if (*end == '\0' && v >= 0 && v <= 1e6)
            return (uint64_t)(v * 1e3);
    }
    return 250000u;
}

void fut__debug_slow(fut_runtime *rt, const char *what, void (*fn)(void), uint64_t start_ns)
{
    uint64_t took = fut__now_ns() - start_ns;
    Dl_info info;
    const char *name = "?", *file = "?";

    if (took < rt->slow_ns)
        return;
    memset(&info, 0, sizeof info);
    if (dladdr((void *)(uintptr_t)fn, &info) != 0) {
        if (info.dli_sname != NULL)
            name = info.dli_sname;
        if (info.dli_fname != NULL)
            file = info.dli_fname;
    }
    fprintf(stderr,
            "libfutures: debug: %s held the dispatcher for %.1f ms (threshold %.1f ms):"
            " %s (%p in %s)\n",
            what, (double)took / 1e6, (double)rt->slow_ns / 1e6, name, (void *)(uintptr_t)fn, file);
}

fut_runtime *fut_runtime_new(const fut_pool_options *opts)
{
    fut_runtime *rt;
    int rc;

    rt = fut__aligned_alloc(FUT__CACHELINE, sizeof *rt);
    if (rt == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    memset(rt, 0, sizeof *rt);
    atomic_init(&rt->refs, 1);
    rt->slow_ns = debug_threshold_ns();
    rt->spin_max_ns = timer_spin_max_ns();
    rt->spin_ns = rt->spin_max_ns < 100000 ? rt->spin_max_ns : 100000;
    fut__wheel_init(&rt->wheel);
    pthread_once(&atfork_once, atfork_register);
    rt->pool = fut_pool_new(opts);
    if (rt->pool == NULL) {
        rc = errno;
        fut__free(rt);
        errno = rc;
        return NULL;
    }
    rt->gen = rt->pool->gen;
    if ((rc = pthread_mutex_init(&rt->dead_lock, NULL)) != 0)
        goto fail_pool;
    rc = fut__thread_start(&rt->thread, dispatcher_main, rt);
    if (rc != 0) {
        pthread_mutex_destroy(&rt->dead_lock);
        goto fail_pool;
    }
    return rt;

fail_pool:
    fut_pool_free(rt->pool);
    fut__free(rt);
    errno = rc == ENOMEM ? ENOMEM : EAGAIN;
    return NULL;
}

void fut__runtime_unref(fut_runtime *rt)
{
    if (atomic_fetch_sub_explicit(&rt->refs, 1, memory_order_acq_rel) == 1) {
        fut__io_free(rt);
        pthread_mutex_destroy(&rt->dead_lock);
        fut__free(rt);
    }
}

/* fut_runtime_free in the child of a fork(): the threads are gone, so
 * release what memory we can (the pool's, the cached stacks) and the
 * runtime's own reference. What the parent's threads held at the fork
 * (running work, armed timers, suspended coroutines' stacks) stays. */
static void free_forked(fut_runtime *rt)
{
    fut_pool_free(rt->pool); /* memory only, in the child */
    rt->pool = NULL;
    if (rt->coro != NULL) { /* the dispatcher's: it is gone */
        fut__stack_cache_destroy(&rt->coro->stacks);
        fut__free(rt->coro);
        rt->coro = NULL;
    }
    fut__runtime_unref(rt);
}

int fut_runtime_free(fut_runtime *rt)
{
    int rc;

    if (rt == NULL)
        return 0;
    if (fut__forked(rt)) {
        if (rt->pool != NULL)
            free_forked(rt);
        return 0;
    }
    /* Not from any dispatcher: ours would join itself, and another
     * runtime's would wait for our dispatcher, which may be waiting for it
     * (a coroutine of rt awaiting that runtime's future is cancelled, and
     * that cancel's dependents run on the other dispatcher). */
    if (fut__dispatcher_rt != NULL || fut__current_pool == rt->pool)
        return EDEADLK;
    /* Work first: after this no pool thread settles anything. */
    rc = fut_pool_shutdown(rt->pool, FUT_POOL_CANCEL);
    if (rc != 0)
        return rc;
    atomic_store_explicit(&rt->stopping, 1, memory_order_seq_cst);
    wake(rt, atomic_exchange_explicit(&rt->parked, 0, memory_order_seq_cst));
    fut__join(rt->thread);
    fut__io_stop(rt); /* the poller: nothing waits in it any more */
    fut_pool_free(rt->pool);
    rt->pool = NULL;
    fut__runtime_unref(rt);
    return 0;
}

/* ---- the default runtime ----
 *
 * Made on first use, under default_lock, and published with release: the
 * common path is one acquire load and the fork check. A failed attempt
 * (no thread, no memory) is not remembered: the next use tries again. In
 * the child of a fork() the parent's default runtime is dead (fut__forked):
 * the first use there frees what memory of it can be freed and makes a
 * fresh one. default_lock is made new in the child (a thread of the
 * parent may have held it at the fork), as is the unobserved hook's lock
 * (future.c). */

static pthread_mutex_t default_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(fut_runtime *) default_rt;
static int default_atexit; /* under default_lock */

static void atfork_child(void)
{
    pthread_mutex_init(&default_lock, NULL);
    fut__unobserved_atfork_child();
    /* fork() called in a continuation or coroutine: the child's only
     * thread is no dispatcher (library calls treat it as a plain thread;
     * it should exec or _exit rather than return into the parent's
     * dispatcher loop, which it has a copy of). */
    fut__dispatcher_rt = NULL;
    fut__coro_running = NULL;
}

void fut__atfork_init(void)
{
    pthread_once(&atfork_once, atfork_register);
}

/* At exit the default runtime is freed by a thread of its own, which
 * exit waits for at most EXIT_WAIT_NS: work stuck in a system call (a
 * blocking-lane read that never returns) must not hang exit forever, and
 * its result would go nowhere. After that wait, exit goes on and the
 * process ends with that work unfinished (as a Go program's goroutines
 * do); shutdowns that finish in time (coroutines waiting on sockets are
 * cancelled and run to their ends) are done fully. */
#define EXIT_WAIT_NS 1000000000u

static struct {
    fut_runtime *rt;
    atomic_uint done;
} reaper;

static void *reap_main(void *arg)
{
    (void)arg;
    fut_runtime_free(reaper.rt);
    atomic_store_explicit(&reaper.done, 1, memory_order_release);
    fut__futex_wake(&reaper.done, 1);
    return NULL;
}

static void default_free(void)
{
    fut_runtime *rt = atomic_exchange_explicit(&default_rt, NULL, memory_order_acq_rel);
    struct timespec until;
    pthread_t t;
    uint64_t end;

    if (rt == NULL)
        return;
    /* exit() from a continuation, coroutine or work of it: its dispatcher
     * or pool cannot be joined from here; the process ends anyway. */
    if (fut__dispatcher_rt == rt || fut__current_pool == rt->pool)
        return;
    reaper.rt = rt;
    atomic_store_explicit(&reaper.done, 0, memory_order_relaxed);
    if (fut__thread_start(&t, reap_main, NULL) != 0) {
        fut_runtime_free(rt);
        return;
    }
    end = fut__now_ns() + EXIT_WAIT_NS;
    until.tv_sec = (time_t)(end / 1000000000u);
    until.tv_nsec = (long)(end % 1000000000u);
    while (!atomic_load_explicit(&reaper.done, memory_order_acquire))
        if (fut__futex_wait_until(&reaper.done, 0, &until) == ETIMEDOUT)
            break;
    if (atomic_load_explicit(&reaper.done, memory_order_acquire))
        fut__join(t);
    else
        pthread_detach(t); /* still waiting for stuck work: exit without it */
}

static fut_runtime *default_make(void)
{
    fut_runtime *rt, *dead = NULL;
    int err = 0;

    fut__atfork_init();
    fut__lock(&default_lock);
    rt = atomic_load_explicit(&default_rt, memory_order_acquire);
    if (rt != NULL && fut__forked(rt)) {
        dead = rt;
        rt = NULL;
    }
    if (rt == NULL) {
        rt = fut_runtime_new(NULL);
        if (rt == NULL) {
            err = errno;
        } else {
            if (!default_atexit && atexit(default_free) == 0)
                default_atexit = 1;
        }
        atomic_store_explicit(&default_rt, rt, memory_order_release);
    }
    fut__unlock(&default_lock);
    if (dead != NULL) /* the parent's: memory only (nobody here can reach it through NULL) */
        fut_runtime_free(dead);
    if (rt == NULL)
        errno = err != 0 ? err : ENOMEM;
    return rt;
}

fut_runtime *fut__runtime(fut_runtime *rt)
{
    if (rt != NULL)
        return rt;
    rt = atomic_load_explicit(&default_rt, memory_order_acquire);
    if (fut__likely(rt != NULL && !fut__forked(rt)))
        return rt;
    return default_make();
}

fut_runtime *fut__runtime_if_made(void)
{
    fut_runtime *rt = atomic_load_explicit(&default_rt, memory_order_acquire);

    return rt != NULL && !fut__forked(rt) ? rt : NULL;
}

fut_pool *fut_runtime_pool(fut_runtime *rt)
{
    rt = fut__runtime(rt);
    return rt == NULL ? NULL : rt->pool;
}

uint64_t fut_runtime_live(fut_runtime *rt)
{
    rt = fut__runtime(rt);
    if (rt == NULL)
        return 0;
    /* One reference is the runtime's own until fut_runtime_free. */
    return atomic_load_explicit(&rt->refs, memory_order_acquire) - (rt->pool != NULL);
}

int fut_on_dispatcher(fut_runtime *rt)
{
    return rt == NULL ? fut__dispatcher_rt != NULL : fut__dispatcher_rt == rt;
}
