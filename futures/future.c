/* future.c - futures and promises: settling, continuations, offload, wait.
 *
 * DESIGN
 *
 * One state word per future, changed by compare-and-swap: PENDING ->
 * SETTLING -> RESOLVED | REJECTED | CANCELLED. Whoever wins the swap out
 * of PENDING settles (writes the value or message) and publishes the
 * final state, with the error code in its upper half, by a release CAS
 * that keeps the bits other threads may change meanwhile (ST_WAITERS,
 * which it then clears and wakes; ST_LINKED, the dispatcher's); the
 * others get EALREADY. Readers load the state with acquire before reading
 * the outcome. Threads in fut_wait set ST_WAITERS in the same word and
 * sleep on it (futex). The kind and flags share the word too (see
 * internal.h): the common part of a future is 40 bytes.
 *
 * A sleep is special in two ways (timer.c): its arm task and its fire
 * task share the future's link, so a sleep settled before it was armed
 * (no ST_ARMED) leaves its dependents to the arm task (which waits for
 * that settler to publish, if it finds the state ST_SETTLING); and while it is in
 * the timer wheel (ST_LINKED) its value slot holds its deadline, so a
 * cancel leaves the slot alone (ST_NOMSG) and queues the sleep's task to
 * take it out of the wheel.
 *
 * Dependents (continuations) and settling meet in `waiters`: a dependent
 * is pushed with CAS unless the word is FUT__FIRED. A settler that finds
 * the list empty swaps FUT__FIRED in (CAS); otherwise it schedules the
 * future's fire task, and the dispatcher swaps FUT__FIRED in and runs the
 * list. So each dependent is taken exactly once, runs on the dispatcher,
 * and in attach order: until the swap, new dependents join the list;
 * after it, they are scheduled behind the fire task that is running.
 *
 * References: the caller's; one held by a source's dependents list for
 * each dependent; one a dependent holds on its source; one held by the
 * pool while work is queued or running; one held while a fire task is
 * scheduled. Every settler holds its own reference while it touches the
 * future, so the last release may come from any thread at any moment.
 *
 * Fork: in the child of a fork(), calls that would queue a task on a
 * runtime of the parent (attach, cancel, settle a promise, wait) fail with
 * FUT_EFORKED first (fut__forked, internal.h): its dispatcher is gone.
 *
 * Errors: a rejected future records whether anyone read its error
 * (ST_OBSERVED); freed unread, it is reported through the unobserved hook.
 * fut_raise records the error in a thread-local slot that the code which
 * called the work or the continuation collects when it returns.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "futures/internal.h"
#include "io/io.h"
#include "pool/alloc.h"
#include "pool/pool_internal.h"

#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char broken_msg[] = "broken promise: dropped before it settled";
static const char cancelled_msg[] = "cancelled";
static const char forked_msg[] =
    "the runtime was made before fork(): its threads do not exist in this process";

/* ---- fut_raise and the call in progress ---- */

/* fut__call_cur is defined by the pool (pool.c), which hides it while a
 * thread helps run jobs. */

static char *vformat(const char *fmt, va_list ap)
{
    return fut__vasprintf(fmt, ap);
}

void *fut_raise(int code, const char *fmt, ...)
{
    struct fut__call *c = fut__call_cur;
    va_list ap;

    if (c == NULL)
        return NULL;
    free(c->message);
    va_start(ap, fmt);
    c->message = vformat(fmt, ap);
    va_end(ap);
    c->code = code > 0 ? code : EINVAL;
    return NULL;
}

int fut_cancelled(void)
{
    struct fut__call *c = fut__call_cur;
    fut_future *f = c != NULL ? c->work : NULL;

    if (f == NULL)
        return 0;
    if (fut__kind(f) == K_CORO) /* a task: whether a cancel was asked of it */
        return fut__coro_cancel_requested(f);
    return (atomic_load_explicit(&f->state, memory_order_acquire) & ST_MASK) == FUT_CANCELLED;
}

void fut__call_begin(struct fut__call *c, fut_future *work)
{
    c->outer = fut__call_cur; /* calls nest when a wait helps run jobs */
    c->work = work != NULL ? work : c->outer != NULL ? c->outer->work : NULL;
    c->code = 0;
    c->message = NULL;
    fut__call_cur = c;
}

void fut__call_end(struct fut__call *c)
{
    fut__call_cur = c->outer;
}

/* ---- the unobserved hook ---- */

static void default_unobserved(int code, const char *message, void *arg)
{
    (void)arg;
    fprintf(stderr, "libfutures: a rejected future was freed and nobody read its error: %s (%s)\n",
            message, strerror(code));
}

/* The hook and its argument change together: under one lock, taken only
 * to set them and to report (a rare path). */
static pthread_mutex_t unobserved_lock = PTHREAD_MUTEX_INITIALIZER;
static fut_unobserved_fn unobserved_fn;
static void *unobserved_arg;

void fut__unobserved_atfork_child(void)
{
    pthread_mutex_init(&unobserved_lock, NULL);
}

void fut_set_unobserved_hook(fut_unobserved_fn fn, void *arg)
{
    fut__atfork_init();
    fut__lock(&unobserved_lock);
    unobserved_fn = fn;
    unobserved_arg = arg;
    fut__unlock(&unobserved_lock);
}

static void report_unobserved(int code, const char *message)
{
    fut_unobserved_fn fn;
    void *arg;

    fut__lock(&unobserved_lock);
    fn = unobserved_fn != NULL ? unobserved_fn : default_unobserved;
    arg = unobserved_arg;
    fut__unlock(&unobserved_lock);
    fn(code, message, arg);
}

/* ---- life ---- */

/* The block size of a future of kind: the common part plus what u holds. */
static int large_kind(unsigned kind)
{
    return kind == K_WORK || kind == K_THEN || kind == K_CATCH || kind == K_FINALLY || kind == K_IO;
}

fut_future *fut__future_new(fut_runtime *rt, int kind, unsigned refs)
{
    int large = large_kind((unsigned)kind);
    fut_future *f = fut__obj_alloc(large);

    if (f == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    memset(f, 0, large ? FUT__SIZE_LARGE : FUT__SIZE_SMALL);
    atomic_init(&f->state, FUT_PENDING | (unsigned)kind << ST_KIND_SHIFT);
    atomic_init(&f->refs, refs);
    atomic_init(&f->waiters, NULL);
    f->rt = rt;
    atomic_fetch_add_explicit(&rt->refs, 1, memory_order_relaxed);
    return f;
}

void fut__observe(fut_future *f)
{
    if (!(atomic_load_explicit(&f->state, memory_order_relaxed) & ST_OBSERVED))
        atomic_fetch_or_explicit(&f->state, ST_OBSERVED, memory_order_release);
}

static void future_free(fut_future *f)
{
    unsigned s = atomic_load_explicit(&f->state, memory_order_acquire);
    unsigned kind = (s & ST_KIND) >> ST_KIND_SHIFT;
    fut_runtime *rt = f->rt;

    if ((s & ST_MASK) == FUT_REJECTED && !(s & ST_OBSERVED))
        report_unobserved((int)(s >> ST_CODE_SHIFT), fut__message(f) ? fut__message(f) : "");
    if (s & ST_MSG_OWNED)
        free(f->message);
    if (IS_GROUP(kind))
        fut__group_free(f);
    else if (kind == K_CORO)
        fut__coro_free(f);
    fut__obj_free(f, large_kind(kind));
    fut__runtime_unref(rt);
}

fut_future *fut_retain(fut_future *f)
{
    if (f != NULL)
        atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
    return f;
}

void fut_release(fut_future *f)
{
    /* acq_rel: the last releaser sees every write made through the others. */
    if (f != NULL && atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) == 1)
        future_free(f);
}

/* ---- settling ---- */

/* Run the dependents of settled f in the order they were attached. */
static void fire(fut_future *f)
{
    struct fut__task *d, *prev = NULL, *next;

    /* Taken here, on the dispatcher, not by the settler: a dependent
     * attached until now joins this list, one attached after it is
     * scheduled behind this task. Either way, attach order holds. */
    d = atomic_exchange_explicit(&f->waiters, FUT__FIRED, memory_order_acq_rel);
    for (; d != NULL; d = next) { /* LIFO -> attach order */
        next = d->next;
        d->next = prev;
        prev = d;
    }
    for (d = prev; d != NULL; d = next) {
        next = d->next; /* d may be freed by its run */
        d->run(d);
    }
}

/* Wait until a settler that is writing f's outcome has published it. */
static void wait_published(fut_future *f)
{
    unsigned spins = 0;

    while ((atomic_load_explicit(&f->state, memory_order_acquire) & ST_MASK) == ST_SETTLING) {
        if (++spins % 64 == 0)
            sched_yield(); /* the settler may have been preempted */
        else
            fut__cpu_relax();
    }
}

void fut__future_task(fut_future *f)
{
    unsigned s = atomic_load_explicit(&f->state, memory_order_acquire);

    if (((s & ST_KIND) >> ST_KIND_SHIFT) == K_SLEEP) {
        if (!(s & ST_ARMED)) {
            /* fut_sleep's arm task, holding the wheel's reference. */
            if ((s & ST_MASK) == FUT_PENDING) {
                if (atomic_load_explicit(&f->rt->stopping, memory_order_acquire))
                    fut__settle(f, FUT_CANCELLED, NULL, ECANCELED,
                                (char *)"cancelled: the runtime shut down", 0);
                else if (fut__timer_arm(f->rt, f))
                    return; /* the wheel took the reference */
            }
            /* Settled before it was armed: its dependents are ours to run
             * (fut__settle left them to this task). A settler that won the
             * swap out of PENDING may not have published the outcome yet
             * (ST_SETTLING: the arm above failed on it): the dependents
             * must not run before it is visible, so wait the few
             * instructions it needs (the fuzzer caught a fut_finally that
             * saw its sleep pending). */
            wait_published(f);
        } else if ((s & ST_MASK) == FUT_CANCELLED) {
            fut__timer_cancelled(f->rt, f); /* out of the wheel, if still in it */
        }
    } else if (((s & ST_KIND) >> ST_KIND_SHIFT) == K_IO && (s & ST_LINKED)) {
        fut__io_unlink(f); /* settled while waiting: out of its descriptor's waiters */
    }
    fire(f);
    fut_release(f); /* the reference of the scheduled task */
}

/* Make task run on the dispatcher once src has settled: queued on src's
 * dependents, or scheduled now if src has settled. */
void fut__depend(fut_future *src, struct fut__task *task)
{
    struct fut__task *top = atomic_load_explicit(&src->waiters, memory_order_acquire);

    do {
        if (top == FUT__FIRED) {
            fut__schedule(src->rt, task);
            return;
        }
        task->next = top;
    } while (!atomic_compare_exchange_weak_explicit(&src->waiters, &top, task, memory_order_acq_rel,
                                                    memory_order_acquire));
}

/* A future was cancelled: pass it on to what it stands for. */
static void cancelled_hook(fut_future *f)
{
    unsigned kind = fut__kind(f);

    if (IS_GROUP(kind))
        fut__group_cancelled(f);
}

/* Settle f if pending. msg is taken over (freed on failure) when owned.
 * Returns 0, or EALREADY when f had settled. The caller holds a reference. */
int fut__settle(fut_future *f, unsigned to, void *value, int code, char *msg, int owned)
{
    unsigned s = atomic_load_explicit(&f->state, memory_order_relaxed), cur, fin, kind;
    struct fut__task *deps;

    do {
        if ((s & ST_MASK) != FUT_PENDING) {
            if (owned)
                free(msg);
            return EALREADY;
        }
    } while (!atomic_compare_exchange_weak_explicit(&f->state, &s, (s & ~ST_MASK) | ST_SETTLING,
                                                    memory_order_acquire, memory_order_relaxed));
    if (to == FUT_RESOLVED) {
        f->value = value;
        fin = to;
    } else {
        if (code <= 0 || code > FUT__CODE_MAX)
            code = EINVAL;
        fin = to | (unsigned)code << ST_CODE_SHIFT;
        if ((s & ST_LINKED) && ((s & ST_KIND) >> ST_KIND_SHIFT) == K_SLEEP) {
            /* A sleep in the wheel: the slot holds its deadline, which the
             * dispatcher may be reading. */
            if (owned)
                free(msg);
            fin |= ST_NOMSG;
        } else {
            f->message = msg;
            if (owned && msg != NULL)
                fin |= ST_MSG_OWNED;
        }
    }
    /* Publish (release); the dispatcher may clear ST_LINKED meanwhile, and
     * a waiter may add ST_WAITERS: keep the one, wake the other. */
    cur = atomic_load_explicit(&f->state, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(
        &f->state, &cur, fin | (cur & (ST_KIND | ST_ARMED | ST_LINKED)), memory_order_acq_rel,
        memory_order_relaxed))
        ;
    if (cur & ST_WAITERS)
        fut__futex_wake(&f->state, 0x7fffffff);
    kind = (s & ST_KIND) >> ST_KIND_SHIFT;
    if (kind == K_SLEEP && !(s & ST_ARMED)) {
        /* fut_sleep's arm task is queued on f->link: it runs the
         * dependents when it finds f settled. */
    } else if ((kind == K_SLEEP || kind == K_IO) && (s & ST_LINKED)) {
        /* In the wheel, or in a descriptor's waiters: its task takes it
         * out at once, then runs the dependents. */
        fut_retain(f);
        fut__schedule_future(f->rt, f);
    } else {
        /* No dependents: mark it fired, later ones are scheduled
         * directly. Else the dispatcher takes the list (fire). */
        deps = NULL;
        if (!atomic_compare_exchange_strong_explicit(&f->waiters, &deps, FUT__FIRED,
                                                     memory_order_acq_rel, memory_order_acquire)) {
            fut_retain(f);
            fut__schedule_future(f->rt, f);
        }
    }
    if (to == FUT_CANCELLED)
        cancelled_hook(f);
    return 0;
}

#define settle fut__settle

static int settle_error(fut_future *f, unsigned to, int code, const char *fmt, ...)
{
    va_list ap;
    char *msg;

    va_start(ap, fmt);
    msg = vformat(fmt, ap);
    va_end(ap);
    return settle(f, to, NULL, code, msg, 1);
}

/* Settle d with the outcome of a call: its return value, or what it raised. */
void fut__settle_from_call(fut_future *d, void *value, struct fut__call *c)
{
    char *msg = c->message;

    c->message = NULL;
    if (c->code != 0)
        settle(d, FUT_REJECTED, NULL, c->code, msg, 1);
    else
        settle(d, FUT_RESOLVED, value, 0, NULL, 0);
}

/* Pass src's outcome on to d (src has settled). */
void fut__adopt(fut_future *d, fut_future *src)
{
    unsigned st = atomic_load_explicit(&src->state, memory_order_acquire) & ST_MASK;
    char *msg = NULL;

    if (st == FUT_RESOLVED) {
        settle(d, FUT_RESOLVED, src->value, 0, NULL, 0);
        return;
    }
    fut__observe(src);
    if (!(atomic_load_explicit(&src->state, memory_order_acquire) & ST_MSG_OWNED)) {
        /* A static message ("cancelled", "broken promise"...): shared, so
         * it survives even when memory is short. */
        settle(d, st, NULL, fut__code(src), (char *)fut__message(src), 0);
        return;
    }
    msg = fut__strdup(fut__message(src)); /* NULL when out of memory: the message is "" */
    settle(d, st, NULL, fut__code(src), msg, 1);
}

fut_future *fut__forked_future(fut_runtime *rt)
{
    fut_future *f = fut__future_new(rt, K_PROMISE, 1);

    if (f != NULL) /* no dependents yet: nothing is scheduled on rt */
        settle(f, FUT_REJECTED, NULL, FUT_EFORKED, (char *)forked_msg, 0);
    return f;
}

/* ---- continuations ---- */

/* fut_then_future's second step: the future its function returned has
 * settled; d settles as it did. */
static void follow_done(struct fut__task *node)
{
    fut_future *d = (fut_future *)((char *)node - offsetof(fut_future, u.cont.wnode));
    fut_future *next = d->u.cont.src;

    if ((atomic_load_explicit(&d->state, memory_order_acquire) & ST_MASK) == FUT_PENDING)
        fut__adopt(d, next);
    else
        fut__observe(next); /* d was cancelled meanwhile: nobody else reads it */
    d->u.cont.src = NULL;
    fut_release(next); /* the reference fn returned */
    fut_release(d);    /* the reference of next's dependents list */
}

/* fut_then_future's function returned next (a new reference) or failed:
 * 1 if d now follows next (its node is queued on next), else 0 (d has
 * settled, or the call's error settles it). */
static int follow(fut_future *d, void *v, struct fut__call *call)
{
    fut_future *next = v;

    if (call->code != 0) { /* it raised: settle_from_call rejects d */
        fut_release(next);  /* and what it returned anyway is ours to drop */
        return 0;
    }
    if (next == NULL) {
        settle(d, FUT_REJECTED, NULL, EINVAL,
               (char *)"the continuation returned no future (fut_then_future)", 0);
        return 0;
    }
    if (next == d) {
        fut_release(next);
        settle(d, FUT_REJECTED, NULL, EDEADLK,
               (char *)"the continuation returned its own future: it would wait for itself", 0);
        return 0;
    }
    d->u.cont.src = next; /* takes over the reference fn returned */
    d->u.cont.wnode.run = follow_done;
    fut__depend(next, &d->u.cont.wnode);
    return 1;
}

static void run_dependent(struct fut__task *node)
{
    fut_future *d = (fut_future *)((char *)node - offsetof(fut_future, u.cont.wnode));
    fut_future *src = d->u.cont.src;
    unsigned st = atomic_load_explicit(&src->state, memory_order_acquire) & ST_MASK;
    unsigned kind = fut__kind(d);
    unsigned ds = atomic_load_explicit(&d->state, memory_order_acquire);
    int flatten = (ds & ST_FLATTEN) != 0;
    struct fut__call call;
    void *v = NULL;

    if ((ds & ST_MASK) != FUT_PENDING) {
        /* Cancelled before its source settled: it does not run. */
    } else if (kind == K_THEN && st != FUT_RESOLVED) {
        fut__adopt(d, src);
    } else if (kind == K_CATCH && st == FUT_RESOLVED) {
        fut__adopt(d, src);
    } else {
        uint64_t start = d->rt->slow_ns ? fut__now_ns() : 0;
        fut__call_begin(&call, NULL);
        if (kind == K_THEN) {
            v = ((fut_then_fn)d->u.cont.fn)(src->value, d->u.cont.arg);
        } else if (kind == K_CATCH) {
            fut__observe(src);
            v = ((fut_catch_fn)d->u.cont.fn)(fut__code(src),
                                             fut__message(src) ? fut__message(src) : "",
                                             d->u.cont.arg);
        } else {
            ((fut_finally_fn)d->u.cont.fn)(src, d->u.cont.arg);
        }
        fut__call_end(&call);
        if (start != 0)
            fut__debug_slow(d->rt, "a continuation", d->u.cont.fn, start);
        if (kind == K_FINALLY && call.code == 0) {
            fut__adopt(d, src);
        } else if (flatten) {
            if (follow(d, v, &call)) {
                fut_release(src); /* d's reference on its first source; d stays on the list */
                return;
            }
            if (call.code != 0)
                fut__settle_from_call(d, NULL, &call);
        } else {
            fut__settle_from_call(d, v, &call);
        }
    }
    d->u.cont.src = NULL;
    fut_release(src); /* d's reference on its source */
    fut_release(d);   /* the reference of src's dependents list */
}

static fut_future *attach(fut_future *src, int kind, void (*fn)(void), void *arg)
{
    fut_future *d;

    if (src == NULL || fn == NULL) {
        errno = EINVAL;
        return NULL;
    }
    if (fut__forked(src->rt)) /* its dispatcher does not exist here */
        return fut__forked_future(src->rt);
    d = fut__future_new(src->rt, kind, 2); /* the caller's and the dependents list's */
    if (d == NULL)
        return NULL;
    d->u.cont.src = fut_retain(src);
    d->u.cont.fn = fn;
    d->u.cont.arg = arg;
    d->u.cont.wnode.run = run_dependent;
    fut__depend(src, &d->u.cont.wnode);
    return d;
}

fut_future *fut_then(fut_future *f, fut_then_fn fn, void *arg)
{
    return attach(f, K_THEN, (void (*)(void))fn, arg);
}

fut_future *fut_then_future(fut_future *f, fut_then_future_fn fn, void *arg)
{
    fut_future *d;

    if (f == NULL || fn == NULL) {
        errno = EINVAL;
        return NULL;
    }
    if (fut__forked(f->rt))
        return fut__forked_future(f->rt);
    d = fut__future_new(f->rt, K_THEN, 2);
    if (d == NULL)
        return NULL;
    /* Before d is shared: plain store of the flag. */
    atomic_fetch_or_explicit(&d->state, ST_FLATTEN, memory_order_relaxed);
    d->u.cont.src = fut_retain(f);
    d->u.cont.fn = (void (*)(void))fn;
    d->u.cont.arg = arg;
    d->u.cont.wnode.run = run_dependent;
    fut__depend(f, &d->u.cont.wnode);
    return d;
}

fut_future *fut_catch(fut_future *f, fut_catch_fn fn, void *arg)
{
    return attach(f, K_CATCH, (void (*)(void))fn, arg);
}

fut_future *fut_finally(fut_future *f, fut_finally_fn fn, void *arg)
{
    return attach(f, K_FINALLY, (void (*)(void))fn, arg);
}

/* ---- offload ---- */

static void work_job(fut_pool_job *job, int status)
{
    fut_future *f = (fut_future *)((char *)job - offsetof(fut_future, u.work.job));
    struct fut__call call;
    void *v;

    if (status == ECANCELED) {
        settle(f, FUT_CANCELLED, NULL, ECANCELED, (char *)"cancelled: the runtime shut down", 0);
    } else if (status != 0) { /* the blocking lane could start no thread for it */
        settle_error(f, FUT_REJECTED, status, "could not start the work: %s", strerror(status));
    } else if ((atomic_load_explicit(&f->state, memory_order_acquire) & ST_MASK) == FUT_PENDING) {
        fut__call_begin(&call, f);
        v = f->u.work.fn(f->u.work.arg);
        fut__call_end(&call);
        fut__settle_from_call(f, v, &call);
    }
    /* else cancelled while queued: the work is skipped. */
    fut_release(f); /* the pool's reference */
}

static fut_future *submit(fut_runtime *rt, int lane, fut_work_fn fn, void *arg)
{
    fut_future *f;
    int rc;

    if (fn == NULL) {
        errno = EINVAL;
        return NULL;
    }
    rt = fut__runtime(rt);
    if (rt == NULL)
        return NULL;
    if (fut__forked(rt))
        return fut__forked_future(rt);
    f = fut__future_new(rt, K_WORK, 2); /* the caller's and the pool's */
    if (f == NULL)
        return NULL;
    f->u.work.fn = fn;
    f->u.work.arg = arg;
    rc = fut_pool_submit(rt->pool, lane, &f->u.work.job, work_job);
    if (rc != 0) {
        settle_error(f, FUT_REJECTED, rc, "could not start the work: %s", strerror(rc));
        fut_release(f);
    }
    return f;
}

fut_future *fut_submit(fut_runtime *rt, fut_work_fn fn, void *arg)
{
    return submit(rt, FUT_LANE_COMPUTE, fn, arg);
}

fut_future *fut_submit_blocking(fut_runtime *rt, fut_work_fn fn, void *arg)
{
    return submit(rt, FUT_LANE_BLOCKING, fn, arg);
}

/* ---- reading ---- */

int fut_state(const fut_future *f)
{
    unsigned st;

    if (f == NULL)
        return FUT_PENDING;
    st = atomic_load_explicit(&((fut_future *)f)->state, memory_order_acquire) & ST_MASK;
    return st == ST_SETTLING ? FUT_PENDING : (int)st;
}

void *fut_value(const fut_future *f)
{
    return fut_state(f) == FUT_RESOLVED ? f->value : NULL;
}

int fut_error(fut_future *f)
{
    int st = fut_state(f);

    if (st != FUT_REJECTED && st != FUT_CANCELLED)
        return 0;
    fut__observe(f);
    return fut__code(f);
}

const char *fut_message(const fut_future *f)
{
    int st = fut_state(f);

    if ((st != FUT_REJECTED && st != FUT_CANCELLED) || fut__message(f) == NULL)
        return "";
    return fut__message(f);
}

int fut_cancel(fut_future *f)
{
    if (f == NULL)
        return EINVAL;
    if (fut__forked(f->rt)) /* its dependents would wait for a dispatcher that is gone */
        return fut_state(f) == FUT_PENDING ? FUT_EFORKED : EALREADY;
    switch (fut__kind(f)) {
    case K_CORO: /* a task: a request, it settles when its function returns */
        return fut__coro_request_cancel(f);
    case K_GATHER:
    case K_ANY:
    case K_RACE:
    case K_TIMEOUT:
        /* Every input settled: the result is computed (perhaps not yet
         * written), and a cancel must not throw it away. */
        if (fut__group_decided(f))
            return EALREADY;
        break;
    default:
        break;
    }
    return settle(f, FUT_CANCELLED, NULL, ECANCELED, (char *)cancelled_msg, 0);
}

static void deadline_after(struct timespec *ts, double seconds)
{
    double whole;

    clock_gettime(CLOCK_MONOTONIC, ts);
    if (seconds > 1e9)
        seconds = 1e9;
    whole = (double)(time_t)seconds;
    ts->tv_sec += (time_t)whole;
    ts->tv_nsec += (long)((seconds - whole) * 1e9);
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static int passed(const struct timespec *deadline)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > deadline->tv_sec ||
           (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

int fut_wait(fut_future *f, double timeout_s)
{
    struct timespec deadline, *dl = NULL;
    unsigned s;

    if (f == NULL || timeout_s != timeout_s)
        return EINVAL;
    if (fut__dispatcher_rt == f->rt &&
        (atomic_load_explicit(&f->state, memory_order_acquire) & ST_MASK) == FUT_PENDING)
        return EDEADLK;
    if (timeout_s >= 0) {
        deadline_after(&deadline, timeout_s);
        dl = &deadline;
    }
    for (;;) {
        s = atomic_load_explicit(&f->state, memory_order_acquire);
        if ((s & ST_MASK) != FUT_PENDING && (s & ST_MASK) != ST_SETTLING)
            return 0;
        if (fut__forked(f->rt)) /* nothing here would ever settle it */
            return FUT_EFORKED;
        if (dl != NULL && passed(dl))
            return ETIMEDOUT;
        if (fut__compute_worker && fut__current_pool == f->rt->pool) {
            /* A compute worker keeps its pool moving: the future may be
             * waiting for a job queued behind us. */
            if (fut__pool_help(f->rt->pool)) /* outside our call (pool_internal.h) */
                continue;
            struct timespec nap;
            deadline_after(&nap, 0.0005);
            if (dl != NULL && (dl->tv_sec < nap.tv_sec ||
                               (dl->tv_sec == nap.tv_sec && dl->tv_nsec < nap.tv_nsec)))
                nap = *dl;
            if (!(s & ST_WAITERS) &&
                !atomic_compare_exchange_strong_explicit(&f->state, &s, s | ST_WAITERS,
                                                         memory_order_relaxed, memory_order_relaxed))
                continue;
            fut__futex_wait_until(&f->state, s | ST_WAITERS, &nap);
            continue;
        }
        if (!(s & ST_WAITERS) &&
            !atomic_compare_exchange_strong_explicit(&f->state, &s, s | ST_WAITERS,
                                                     memory_order_relaxed, memory_order_relaxed))
            continue;
        fut__futex_wait_until(&f->state, s | ST_WAITERS, dl);
    }
}

/* ---- promises ---- */

/* A promise is its future in disguise, holding one reference. */
static fut_future *promise_future(fut_promise *p)
{
    return (fut_future *)p;
}

fut_promise *fut_promise_new(fut_runtime *rt)
{
    rt = fut__runtime(rt);
    if (rt == NULL)
        return NULL;
    if (fut__forked(rt)) {
        errno = FUT_EFORKED;
        return NULL;
    }
    return (fut_promise *)fut__future_new(rt, K_PROMISE, 1);
}

fut_future *fut_promise_future(fut_promise *p)
{
    if (p == NULL) {
        errno = EINVAL;
        return NULL;
    }
    return fut_retain(promise_future(p));
}

/* A settler holds its own reference: the thread that sees the promise
 * settled may free it while this call is still waking waiters. */
static int settle_promise(fut_promise *p, unsigned to, void *value, int code, char *msg)
{
    fut_future *f = fut_retain(promise_future(p));
    int rc;

    if (fut__forked(f->rt)) { /* its dependents would wait for a dispatcher that is gone */
        free(msg);
        rc = fut_state(f) == FUT_PENDING ? FUT_EFORKED : EALREADY;
    } else {
        rc = settle(f, to, value, code, msg, 1);
    }

    fut_release(f);
    return rc;
}

int fut_promise_resolve(fut_promise *p, void *value)
{
    if (p == NULL)
        return EINVAL;
    return settle_promise(p, FUT_RESOLVED, value, 0, NULL);
}

int fut_promise_reject(fut_promise *p, int code, const char *fmt, ...)
{
    va_list ap;
    char *msg;

    if (p == NULL || code <= 0 || code > FUT__CODE_MAX)
        return EINVAL;
    va_start(ap, fmt);
    msg = vformat(fmt, ap);
    va_end(ap);
    return settle_promise(p, FUT_REJECTED, NULL, code, msg);
}

/* fut_promise_on_cancel's record: a dependent of the promise's future. */
struct cancel_hook {
    struct fut__task node;
    fut_future *f;              /* a reference */
    void (*fn)(void *arg);
    void *arg;
};

static void cancel_hook_run(struct fut__task *t)
{
    struct cancel_hook *h = (struct cancel_hook *)t;

    if (fut_state(h->f) == FUT_CANCELLED)
        h->fn(h->arg);
    fut_release(h->f);
    fut__free(h);
}

int fut_promise_on_cancel(fut_promise *p, void (*fn)(void *arg), void *arg)
{
    fut_future *f;
    struct cancel_hook *h;
    int st;

    if (p == NULL || fn == NULL)
        return EINVAL;
    f = promise_future(p);
    if (fut__forked(f->rt))
        return FUT_EFORKED;
    st = fut_state(f);
    if (st == FUT_RESOLVED || st == FUT_REJECTED)
        return EALREADY; /* it can no longer be cancelled */
    h = fut__malloc(sizeof *h);
    if (h == NULL)
        return ENOMEM;
    h->node.run = cancel_hook_run;
    h->f = fut_retain(f);
    h->fn = fn;
    h->arg = arg;
    fut__depend(f, &h->node); /* runs on the dispatcher once f settles */
    return 0;
}

void fut_promise_free(fut_promise *p)
{
    if (p == NULL)
        return;
    if (!fut__forked(promise_future(p)->rt)) /* in a forked child: memory only */
        settle(promise_future(p), FUT_REJECTED, NULL, FUT_EBROKEN, (char *)broken_msg, 0);
    fut_release(promise_future(p));
}
