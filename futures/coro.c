/* coro.c - coroutines: async and await on the dispatcher.
 *
 * DESIGN
 *
 * A coroutine is a future (K_CORO) plus a struct fut__coro: a context
 * with its own stack (coro_ctx.h, stack.c) that runs only on its
 * runtime's dispatcher thread. The dispatcher's own context resumes it
 * (resume); it runs until it awaits a pending future, yields or returns,
 * and each of those switches back to the dispatcher's context, which goes
 * on with its queues. So coroutines, continuations and timers interleave
 * on one thread, and a coroutine's code between two awaits runs alone.
 *
 * Who touches what: everything in struct fut__coro but cancel_task is the
 * dispatcher's. Other threads reach a coroutine only through tasks: its
 * start (run_task), the awaited future's dependent (wnode, which queues
 * the resume), and a cancel (cancel_task, queued by the cancel of its
 * future from any thread).
 *
 * An await of a settled future is one acquire load, no switch. An await
 * of a pending one attaches wnode to it and switches out; when it
 * settles, wnode (on the dispatcher of the awaited future's runtime)
 * queues run_task on ours, and resume switches back in.
 *
 * The resumer finishes the suspending call: a coroutine that yields or
 * awaits a pending future records why (co->why) and switches out as a tail
 * call, so fut_yield's and fut_await's frames are gone while it is
 * suspended. The dispatcher, just before it switches back in, computes
 * what that call returns (fut__coro_wake: 0 or ECANCELED for a yield, the
 * value and error code for an await), and the switch hands it over in a
 * register: the coroutine continues in its own code, as if the call had
 * returned. So no return instruction runs right after a switch, where it
 * would be mispredicted (the CPU's return predictor holds the other
 * context's calls): that was half of a yield's cost (docs/PERFORMANCE.md).
 *
 * The call record of fut_raise and fut_cancelled (internal.h: struct
 * fut__call) of a coroutine is co->call, its outermost call for its whole
 * life: the dispatcher makes it the thread's current call each time it
 * switches in, and puts its own back after.
 *
 * Cancel (asyncio's Task): a cancel is a request. Before the coroutine
 * started, fut_cancel claims it (phase UNSTARTED -> NEVER, one CAS that
 * races with start_task's UNSTARTED -> STARTED) and settles its future
 * at once: it never runs. After, fut_cancel (any thread) sets cancel_req
 * and, if it was 0, queues cancel_task with a reference; cancel_task
 * clears cancel_req, then marks the coroutine (cancel, cancels) and
 * cancels the future it awaits (a task it awaits is asked in turn, and
 * the coroutine stays suspended until that one ends). The coroutine's
 * await (or yield) returns ECANCELED once; it may clean up, await again,
 * and return. Its future settles only then (settle_outcome): cancelled
 * if it passed the cancel on (fut_raise(ECANCELED)) or returned with a
 * cancel it never took (cancel or cancel_req still set), else as it
 * returned or raised. cancel_req is atomic (any thread); the rest of the
 * fields are the dispatcher's.
 *
 * Lifetime: the coroutine holds a reference on its future until it
 * returns; struct fut__coro lives as long as the future (freed by
 * future_free), its stack only until the coroutine returns (back to the
 * runtime's stack cache).
 *
 * Shutdown: fut_runtime_free cancels every live coroutine once; from then
 * on an await of a pending future cancels that future and returns
 * ECANCELED at once, and a yield returns ECANCELED, so every coroutine
 * runs to its end before the dispatcher exits, and its future settles as
 * its function decides (above); one not yet started never starts.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "futures/coro.h"
#include "pool/alloc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

_Thread_local struct fut__coro *fut__coro_running;

/* The running coroutine of the calling thread, if it is a dispatcher
 * running one. */
static inline struct fut__coro *current(void)
{
    return fut__coro_running;
}

int fut__coro_rt_init(fut_runtime *rt)
{
    struct fut__coro_rt *cr = fut__calloc(1, sizeof *cr);
    size_t size;

    if (cr == NULL)
        return ENOMEM;
    atomic_store_explicit(&rt->coro_begun, 1, memory_order_seq_cst);
    size = atomic_load_explicit(&rt->coro_stack_size, memory_order_seq_cst);
    if (fut__stack_cache_init(&cr->stacks, size ? size : FUT__STACK_DEFAULT_SIZE,
                              FUT__STACK_CACHE_DEFAULT_MAX) != 0) {
        fut__free(cr);
        return EINVAL;
    }
    cr->stacks.defer = 1; /* the excess of a burst is trimmed when it is over (fut__coro_trim) */
    fut__ctx_init_current(&cr->main);
    rt->coro = cr;
    return 0;
}

void fut__coro_rt_free(fut_runtime *rt)
{
    if (rt->coro == NULL)
        return;
    fut__stack_cache_destroy(&rt->coro->stacks);
    fut__free(rt->coro);
    rt->coro = NULL;
}

uint64_t fut__coro_trim(fut_runtime *rt)
{
    struct fut__coro_rt *cr = rt->coro;

    if (cr == NULL || cr->stacks.cached <= cr->stacks.max_cached)
        return UINT64_MAX;
    return fut__stack_trim(&cr->stacks, fut__now_ns());
}

uint64_t fut__coro_live(fut_runtime *rt)
{
    return rt->coro != NULL ? rt->coro->nlive : 0;
}

/* ---- switching ---- */

void fut__coro_finished(fut_runtime *rt, struct fut__coro *co)
{
    fut__ctx_destroy(&co->ctx);
    fut__stack_put(&rt->coro->stacks, co->stack);
    co->stack = NULL;
    fut_release(co->f); /* the coroutine's own reference */
}

/* Switch from the running coroutine back to the dispatcher's context
 * (co->why says why). Returns, when something resumes it, what the
 * resumer computed for the suspending call (fut__coro_wake): callers end
 * with `return suspend(...)`, a tail call, so the resumed coroutine comes
 * back straight into their caller. */
static inline void *suspend(fut_runtime *rt, struct fut__coro *co)
{
    return fut__ctx_transfer(&co->ctx, &rt->coro->main, NULL);
}

/* suspend for fut_yield, whose result is an int: the same switch seen
 * through an int prototype, so that the call stays a tail call. */
static inline int suspend_yield(fut_runtime *rt, struct fut__coro *co)
{
    return fut__ctx_transfer_int(&co->ctx, &rt->coro->main);
}

static void unlink_live(struct fut__coro_rt *cr, struct fut__coro *co)
{
    if (co->prev != NULL)
        co->prev->next = co->next;
    else
        cr->live = co->next;
    if (co->next != NULL)
        co->next->prev = co->prev;
    co->next = co->prev = NULL;
    cr->nlive--;
}

/* Settle a coroutine's future as its function ended (asyncio's Task):
 * cancelled if it passed a cancel on (returned fut_raise(ECANCELED, ...)),
 * or if it returned while a cancel asked of it had not reached an await
 * (a request still queued, or delivered and not yet taken); else with
 * what it returned or raised, also after it took a cancel and went on. */
static void settle_outcome(struct fut__coro *co, void *v)
{
    struct fut__call *c = &co->call;
    char *msg;

    if (c->code == ECANCELED) { /* passed on */
        msg = c->message;
        c->message = NULL;
        c->code = 0;
        fut__settle(co->f, FUT_CANCELLED, NULL, ECANCELED, msg, 1);
        return;
    }
    if (c->code == 0 &&
        (co->cancel || atomic_load_explicit(&co->cancel_req, memory_order_acquire))) {
        /* A cancel it never saw: asyncio's Task ends cancelled then too
         * (an error it raised wins, as there). */
        fut__settle(co->f, FUT_CANCELLED, NULL, ECANCELED, (char *)"cancelled", 0);
        return;
    }
    fut__settle_from_call(co->f, v, c);
}

/* The first code of a coroutine, on its own stack. */
static void entry(void *arg)
{
    struct fut__coro *co = arg;
    fut_runtime *rt = co->rt;
    void *v;

    /* co->call is current: every resume, this first one too, makes it so */
    v = co->fn(co->arg);
    settle_outcome(co, v);
    co->finished = 1;
    unlink_live(rt->coro, co);
    fut__ctx_exit(&co->ctx, &rt->coro->main);
}

/* ---- tasks ---- */

static void start_task(struct fut__task *t)
{
    struct fut__coro *co = (struct fut__coro *)((char *)t - offsetof(struct fut__coro, run_task));
    fut_runtime *rt = co->rt;
    struct fut__coro_rt *cr = rt->coro;
    int rc;

    unsigned phase = FUT__CORO_UNSTARTED;

    if (atomic_load_explicit(&rt->stopping, memory_order_acquire) &&
        atomic_compare_exchange_strong_explicit(&co->phase, &phase, FUT__CORO_NEVER,
                                                memory_order_acq_rel, memory_order_acquire))
        fut__settle(co->f, FUT_CANCELLED, NULL, ECANCELED, (char *)"cancelled: the runtime shut down",
                    0);
    phase = FUT__CORO_UNSTARTED;
    if (!atomic_compare_exchange_strong_explicit(&co->phase, &phase, FUT__CORO_STARTED,
                                                 memory_order_acq_rel, memory_order_acquire) ||
        fut_state(co->f) != FUT_PENDING) {
        /* Cancelled before it started (its future settled then): it never
         * runs. */
        co->finished = 1;
        fut_release(co->f);
        return;
    }
    if (cr == NULL) {
        rc = fut__coro_rt_init(rt);
        if (rc != 0) {
            fut__settle(co->f, FUT_REJECTED, NULL, rc,
                        (char *)"could not set up coroutines on this runtime", 0);
            co->finished = 1;
            fut_release(co->f);
            return;
        }
        cr = rt->coro;
    }
    co->stack = fut__stack_get(&cr->stacks);
    rc = co->stack == NULL ? ENOMEM
                           : fut__ctx_make(&co->ctx, co->stack->base, co->stack->size, entry, co);
    if (rc != 0) {
        if (co->stack != NULL)
            fut__stack_put(&cr->stacks, co->stack);
        co->stack = NULL;
        fut__settle(co->f, FUT_REJECTED, NULL, rc,
                    (char *)(rc == ENOMEM ? "no memory for a coroutine stack"
                                          : "could not make a coroutine context"),
                    0);
        co->finished = 1;
        fut_release(co->f);
        return;
    }
    co->started = 1; /* from now on run_task is queued as a resume (fut__schedule_coro) */
    co->next = cr->live;
    if (cr->live != NULL)
        cr->live->prev = co;
    cr->live = co;
    cr->nlive++;
    fut__coro_resume(rt, co);
}

/* The awaited future settled (on its own runtime's dispatcher). */
static void await_fired(struct fut__task *t)
{
    struct fut__coro *co = (struct fut__coro *)((char *)t - offsetof(struct fut__coro, wnode));
    fut_runtime *rt = co->rt;
    fut_future *f;

    if (fut__dispatcher_rt == rt) { /* our own dispatcher: a local queue */
        fut__schedule_coro(rt, &co->run_task);
        return;
    }
    /* Another runtime's dispatcher: nothing here holds our runtime, and
     * fut__schedule needs it alive until it returns (internal.h): the
     * coroutine may end, and our runtime be freed, as soon as the resume
     * is in the inbox. A reference on the coroutine's future holds it. */
    f = fut_retain(co->f);
    fut__schedule_coro(rt, &co->run_task);
    fut_release(f);
}

/* Tell a running coroutine of a cancel (dispatcher): its next await or
 * yield returns ECANCELED, and the future it awaits is cancelled. */
static void deliver_cancel(struct fut__coro *co)
{
    if (co->started && !co->finished) {
        co->cancel = 1;
        co->cancels++;
        if (co->awaiting != NULL)
            fut_cancel(co->awaiting); /* it resumes us, if it had not settled */
    }
}

static void cancel_task(struct fut__task *t)
{
    struct fut__coro *co = (struct fut__coro *)((char *)t - offsetof(struct fut__coro, cancel_task));
    fut_future *f = co->f;

    /* From here a new request queues the task again (it is ours now). */
    atomic_store_explicit(&co->cancel_req, 0, memory_order_release);
    deliver_cancel(co);
    fut_release(f); /* the request's reference */
}

/* fut_cancel of a coroutine's future (any thread). Not started yet: claim
 * it, and its future is cancelled at once (it never runs). Started: a
 * request, delivered on the dispatcher to its pending or next await or
 * yield; its future settles when its function returns. */
int fut__coro_request_cancel(fut_future *f)
{
    struct fut__coro *co = f->u.coro;
    unsigned phase = FUT__CORO_UNSTARTED;

    if (fut_state(f) != FUT_PENDING)
        return EALREADY;
    if (atomic_compare_exchange_strong_explicit(&co->phase, &phase, FUT__CORO_NEVER,
                                                memory_order_acq_rel, memory_order_acquire))
        return fut__settle(f, FUT_CANCELLED, NULL, ECANCELED, (char *)"cancelled", 0);
    if (atomic_exchange_explicit(&co->cancel_req, 1, memory_order_acq_rel) == 0) {
        fut_retain(f);
        co->cancel_task.run = cancel_task;
        fut__schedule(f->rt, &co->cancel_task);
    }
    return 0;
}

int fut__coro_cancel_requested(const fut_future *f)
{
    const struct fut__coro *co = f->u.coro;

    /* (co->cancel is only ever set with cancels counted) */
    return co->cancels != 0 ||
           atomic_load_explicit(&((struct fut__coro *)co)->cancel_req, memory_order_acquire) != 0;
}

void fut__coro_free(fut_future *f)
{
    fut__free(f->u.coro);
}

/* Shutdown (dispatcher): cancel every live coroutine once. */
int fut__coro_cancel_all(fut_runtime *rt)
{
    struct fut__coro_rt *cr = rt->coro;
    struct fut__coro *co;

    if (cr == NULL || cr->cancelled_all || cr->nlive == 0)
        return 0;
    cr->cancelled_all = 1;
    for (co = cr->live; co != NULL; co = co->next) {
        /* Delivered here, not requested: a coroutine that took a cancel
         * before and awaits again must get this one too (the fuzzer found
         * one waiting for ever), and what it returns then decides its
         * future, as after any cancel. */
        deliver_cancel(co);
    }
    return 1;
}

/* ---- the calls ---- */

fut_future *fut_async(fut_runtime *rt, fut_work_fn fn, void *arg)
{
    struct fut__coro *co;
    fut_future *f;

    if (fn == NULL) {
        errno = EINVAL;
        return NULL;
    }
    rt = fut__runtime(rt);
    if (rt == NULL)
        return NULL;
    if (fut__forked(rt))
        return fut__forked_future(rt);
    co = fut__calloc(1, sizeof *co);
    if (co == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    f = fut__future_new(rt, K_CORO, 2); /* the caller's and the coroutine's */
    if (f == NULL) {
        fut__free(co);
        return NULL;
    }
    co->f = f;
    co->rt = rt;
    co->call.work = f; /* fut_cancelled in it: its own future */
    co->fn = fn;
    co->arg = arg;
    f->u.coro = co;
    co->run_task.run = start_task;
    co->wnode.run = await_fired;
    fut__schedule(rt, &co->run_task);
    return f;
}

/* Whether a cancel came for co since it last looked; it is delivered
 * once. */
static int take_cancel(struct fut__coro *co)
{
    int c = co->cancel;

    co->cancel = 0;
    return c;
}

/* Read settled f's outcome the way an await hands it back. */
static void *outcome(fut_future *f, int *err)
{
    unsigned s = atomic_load_explicit(&f->state, memory_order_acquire);

    if ((s & ST_MASK) == FUT_RESOLVED) {
        *err = 0;
        return f->value;
    }
    fut__observe(f);
    *err = (int)(s >> ST_CODE_SHIFT);
    return NULL;
}

void *fut__coro_wake(fut_runtime *rt, struct fut__coro *co)
{
    fut_future *f;
    void *v;
    int *err;

    switch (co->why) {
    case FUT__CORO_YIELD:
        if (atomic_load_explicit(&rt->stopping, memory_order_acquire)) {
            (void)take_cancel(co); /* the shutdown cancels every coroutine */
            return (void *)(intptr_t)ECANCELED;
        }
        return (void *)(intptr_t)(take_cancel(co) ? ECANCELED : 0);
    case FUT__CORO_AWAIT:
        f = co->awaiting;
        err = co->err_out;
        co->awaiting = NULL;
        if (take_cancel(co)) {
            *err = ECANCELED;
            v = NULL;
        } else {
            v = outcome(f, err);
        }
        fut_release(f); /* the await's reference; the caller holds its own */
        return v;
    default: /* FUT__CORO_NEW: its first entry */
        return NULL;
    }
}

void *fut_await(fut_future *f, int *err)
{
    struct fut__coro *co;
    fut_runtime *rt;
    int dummy, rc;
    unsigned s;

    if (f == NULL) {
        if (err != NULL)
            *err = EINVAL;
        return NULL;
    }
    /* Settled: the same answer everywhere, and no switch (a cancel of the
     * running coroutine can only have come while it was suspended, and
     * that suspension's await or yield took it). */
    s = atomic_load_explicit(&f->state, memory_order_acquire);
    if (fut__likely((s & ST_MASK) == FUT_RESOLVED)) {
        if (err != NULL)
            *err = 0;
        return f->value;
    }
    co = current();
    if (err == NULL) /* the pending path's coroutine side ends before it resumes */
        err = co != NULL ? &co->err_sink : &dummy;
    if ((s & ST_MASK) != FUT_PENDING && (s & ST_MASK) != ST_SETTLING)
        return outcome(f, err);
    if (fut__forked(f->rt) || (co != NULL && fut__forked(co->rt))) {
        /* In a forked child: nothing here would settle f or resume us. */
        *err = FUT_EFORKED;
        return NULL;
    }
    if (co == NULL) {
        /* Not in a coroutine: block this thread; not a dispatcher (a
         * continuation there would stop its runtime); a pool worker helps
         * its pool while it waits (fut_wait). */
        if (fut__dispatcher_rt != NULL) {
            *err = EDEADLK;
            return NULL;
        }
        rc = fut_wait(f, -1);
        if (rc != 0) {
            *err = rc;
            return NULL;
        }
        return outcome(f, err);
    }
    if (take_cancel(co)) {
        *err = ECANCELED;
        return NULL;
    }
    if (f == co->f) { /* itself: it would wait forever */
        *err = EDEADLK;
        return NULL;
    }
    rt = co->rt;
    if (atomic_load_explicit(&rt->stopping, memory_order_acquire)) {
        fut_cancel(f); /* the shutdown cancels every coroutine: its awaits fail at once */
        *err = ECANCELED;
        return NULL;
    }
    co->awaiting = fut_retain(f);
    co->err_out = err;
    co->why = FUT__CORO_AWAIT;
    fut__depend(f, &co->wnode);
    return suspend(rt, co); /* fut__coro_wake finishes the await */
}

void *fut_await_release(fut_future *f, int *err)
{
    void *v = fut_await(f, err);

    fut_release(f);
    return v;
}

int fut_asleep(double seconds)
{
    struct fut__coro *co = current();
    struct timespec ts;
    fut_future *s;
    int err = 0;

    if (!(seconds >= 0)) /* negative or NaN */
        return EINVAL;
    if (co != NULL) {
        s = fut_sleep(co->rt, seconds);
        if (s == NULL)
            return errno;
        (void)fut_await(s, &err);
        fut_release(s);
        return err;
    }
    if (fut__dispatcher_rt != NULL)
        return EDEADLK; /* a plain continuation: it would stop the dispatcher */
    if (seconds > 1e9)
        seconds = 1e9;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    return 0;
}

int fut_yield(void)
{
    struct fut__coro *co = current();
    fut_runtime *rt;

    if (co == NULL)
        return EPERM;
    rt = co->rt;
    if (fut__forked(rt)) /* fork() from a coroutine: its dispatcher is gone */
        return FUT_EFORKED;
    co->why = FUT__CORO_YIELD;
    if (fut__unlikely(co->cancel || atomic_load_explicit(&rt->stopping, memory_order_acquire)))
        return (int)(intptr_t)fut__coro_wake(rt, co); /* no suspension: the answer now */
    fut__append_local(rt, fut__entry_coro_of(&co->run_task)); /* behind everything queued now */
    return suspend_yield(rt, co); /* fut__coro_wake (or nothing) gives the result */
}

int fut_runtime_set_stack_size(fut_runtime *rt, size_t bytes)
{
    if (bytes < FUT_STACK_MIN || bytes > FUT__STACK_MAX_SIZE)
        return EINVAL;
    rt = fut__runtime(rt);
    if (rt == NULL)
        return errno;
    if (fut__forked(rt))
        return FUT_EFORKED;
    atomic_store_explicit(&rt->coro_stack_size, bytes, memory_order_seq_cst);
    /* Dekker with fut__coro_rt_init: either it sees our size, or we see
     * that it began. */
    if (atomic_load_explicit(&rt->coro_begun, memory_order_seq_cst))
        return EBUSY;
    return 0;
}

int fut_in_coroutine(void)
{
    return current() != NULL;
}

int fut_run(fut_runtime *rt, fut_work_fn fn, void *arg, void **result)
{
    fut_future *f;
    int rc;

    if (result != NULL)
        *result = NULL;
    if (fn == NULL)
        return EINVAL;
    if (fut__dispatcher_rt != NULL)
        return EDEADLK;
    f = fut_async(rt, fn, arg);
    if (f == NULL)
        return errno;
    rc = fut_wait(f, -1);
    if (rc == 0) {
        rc = fut_error(f);
        if (result != NULL)
            *result = rc == 0 ? fut_value(f) : NULL;
    }
    fut_release(f);
    return rc;
}
