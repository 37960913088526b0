/* call.c - callbacks at a time, for callback-style code: fut_call_soon,
 * fut_call_later, fut_call_at (asyncio's loop.call_soon / call_later /
 * call_at), and the dispatcher's clock (fut_time).
 *
 * What it does not do: no timer of its own (a fut_sleep is the timer), no
 * repetition (call again from the callback), no ordering guarantee
 * between callbacks due at the same time beyond the sleeps' own.
 *
 * DESIGN
 *
 * A call is a record with a sleep, the user's function and a promise
 * whose future is the caller's, and two dependents (raw tasks queued on
 * those futures, as continuations are, without a future of their own):
 * one
 * on the sleep (it fired: run fn in a call record, settle the promise
 * with what fn returned or raised; cancelled: nothing), one on the
 * caller's future (cancelled: cancel the sleep, so its timer leaves the
 * wheel at once). Both run on the dispatcher, so the record's counter of
 * the two needs no atomics; whichever runs second frees it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "futures/internal.h"
#include "pool/alloc.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>

struct call {
    struct fut__task fire;    /* a dependent of the sleep */
    struct fut__task settled; /* a dependent of the caller's future */
    fut_future *sleep;   /* a reference */
    fut_promise *p;
    fut_work_fn fn;
    void *arg;
    int left;            /* continuations still to run (dispatcher only) */
};

static void call_done(struct call *c)
{
    if (--c->left != 0)
        return;
    fut_release(c->sleep);
    fut_promise_free(c->p); /* settled by now: no broken promise */
    fut__free(c);
}

/* The sleep settled: its time came, or the call was cancelled. */
static void call_fire(struct fut__task *t)
{
    struct call *c = (struct call *)((char *)t - offsetof(struct call, fire));
    fut_future *sleep = c->sleep;
    fut_future *f = (fut_future *)c->p; /* the promise's future (future.c) */
    struct fut__call rec;
    void *v;

    if (fut_state(sleep) == FUT_RESOLVED && fut_state(f) == FUT_PENDING) {
        fut__call_begin(&rec, f);
        v = c->fn(c->arg);
        fut__call_end(&rec);
        fut__settle_from_call(f, v, &rec);
    } else if (fut_state(f) == FUT_PENDING) {
        /* The sleep was cancelled by the runtime's shutdown: so is the call. */
        fut__settle(f, FUT_CANCELLED, NULL, ECANCELED, (char *)"cancelled: the runtime shut down", 0);
    }
    call_done(c);
}

/* The caller's future settled: cancelled, the timer goes at once. */
static void call_settled(struct fut__task *t)
{
    struct call *c = (struct call *)((char *)t - offsetof(struct call, settled));
    fut_future *f = (fut_future *)c->p;

    if (fut_state(f) == FUT_CANCELLED)
        fut_cancel(c->sleep);
    call_done(c);
}

static fut_future *call_after(fut_runtime *rt, double seconds, fut_work_fn fn, void *arg)
{
    struct call *c;
    fut_future *f;

    if (fn == NULL || !(seconds >= 0)) {
        errno = EINVAL;
        return NULL;
    }
    rt = fut__runtime(rt);
    if (rt == NULL)
        return NULL;
    if (fut__forked(rt))
        return fut__forked_future(rt);
    c = fut__calloc(1, sizeof *c);
    if (c == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    c->fn = fn;
    c->arg = arg;
    c->left = 2;
    c->p = fut_promise_new(rt);
    f = c->p != NULL ? fut_promise_future(c->p) : NULL;
    c->sleep = f != NULL ? fut_sleep(rt, seconds) : NULL;
    if (c->sleep == NULL) {
        if (c->p != NULL)
            fut_promise_resolve(c->p, NULL); /* nobody saw it: not a broken promise */
        fut_release(f);
        fut_promise_free(c->p);
        fut__free(c);
        errno = ENOMEM;
        return NULL;
    }
    /* Dependents, not continuations: no future of their own to report. */
    c->fire.run = call_fire;
    c->settled.run = call_settled;
    fut__depend(c->sleep, &c->fire);
    fut__depend(f, &c->settled);
    return f;
}

fut_future *fut_call_soon(fut_runtime *rt, fut_work_fn fn, void *arg)
{
    return call_after(rt, 0, fn, arg);
}

fut_future *fut_call_later(fut_runtime *rt, double seconds, fut_work_fn fn, void *arg)
{
    return call_after(rt, seconds, fn, arg);
}

fut_future *fut_call_at(fut_runtime *rt, double when, fut_work_fn fn, void *arg)
{
    double now;

    if (isnan(when)) {
        errno = EINVAL;
        return NULL;
    }
    now = fut_time();
    return call_after(rt, when > now ? when - now : 0, fn, arg);
}

double fut_time(void)
{
    return (double)fut__now_ns() / 1e9;
}
