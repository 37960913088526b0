/* coro.h - internal: the coroutine records shared by coro.c and the
 * dispatcher's run queue (runtime.c), which resumes coroutines inline. */
#ifndef FUT_FUTURES_CORO_H
#define FUT_FUTURES_CORO_H

#include "futures/coro_ctx.h"
#include "futures/internal.h"

/* Whether a coroutine has started (struct fut__coro's phase): a cancel
 * that finds it unstarted claims it (UNSTARTED -> NEVER) and settles its
 * future at once; its start claims it first (UNSTARTED -> STARTED), and
 * from then on a cancel is a request delivered to the running coroutine. */
enum { FUT__CORO_UNSTARTED, FUT__CORO_STARTED, FUT__CORO_NEVER };

/* Why a coroutine is not running: what its next resume hands back. */
enum {
    FUT__CORO_NEW,   /* not started: the resume enters it */
    FUT__CORO_YIELD, /* in fut_yield: the resume returns its result */
    FUT__CORO_AWAIT  /* in fut_await of a pending future: the resume returns its outcome */
};

struct fut__coro {
    struct fut__ctx ctx;         /* its context, valid while started and not finished */
    struct fut__stack *stack;    /* its stack, while started and not finished */
    fut_future *f;               /* its future (the coroutine's reference until it returns) */
    fut_runtime *rt;             /* f's runtime, whose dispatcher runs it */
    fut_work_fn fn;              /* what it runs */
    void *arg;
    struct fut__task run_task;   /* dispatcher: start it, or resume it */
    struct fut__task wnode;      /* our node in the awaited future's dependents */
    struct fut__task cancel_task; /* dispatcher: deliver a cancel (queued from any thread) */
    atomic_uint phase;           /* FUT__CORO_UNSTARTED, _STARTED, _NEVER (cancelled before it started) */
    atomic_uint cancel_req;      /* 1 while a cancel request is queued (cancel_task), not yet delivered */
    fut_future *awaiting;        /* the future a pending await waits for, else NULL */
    int *err_out;                /* where that await's error code goes */
    struct fut__call call;       /* its call record (fut_raise, fut_cancelled) */
    int err_sink;                /* err_out when the await's caller passed none */
    struct fut__coro *next, *prev; /* the runtime's live coroutines */
    unsigned char started;       /* its context exists */
    unsigned char finished;      /* it returned (or never started) */
    unsigned char cancel;        /* a cancel came: the next await or yield returns ECANCELED */
    unsigned cancels;            /* cancels delivered so far (fut_cancelled) */
    unsigned char why;           /* FUT__CORO_*: why it is suspended */
};

/* The coroutine state of a runtime: dispatcher only. */
struct fut__coro_rt {
    struct fut__ctx main;        /* the dispatcher's own context */
    struct fut__coro *live;      /* started or queued, not finished */
    uint64_t nlive;
    struct fut__stack_cache stacks;
    int cancelled_all;           /* shutdown cancelled every live coroutine */
};

/* The coroutine running on this thread (a dispatcher), else NULL. */
extern _Thread_local struct fut__coro *fut__coro_running;

/* A finished coroutine: its context, stack and reference go. */
void fut__coro_finished(fut_runtime *rt, struct fut__coro *co);

/* What a suspended coroutine's switch hands back when its resume is not
 * a plain yield (a cancel, a shutdown, an await's outcome), on the
 * dispatcher's context just before the switch in (coro.c). */
void *fut__coro_wake(fut_runtime *rt, struct fut__coro *co);

/* Run co until it awaits, yields or returns (dispatcher's context).
 *
 * The resumer finishes the coroutine's suspending call for it: it
 * computes what that fut_yield or fut_await returns, passes it through
 * the switch and makes the coroutine's call record current, so the
 * coroutine side ends its call with a tail call of the switch and comes
 * back straight into its caller (coro.c: suspend).
 *
 * Inlined into its callers (run_queue resumes from its own frame): after
 * a switch back the CPU's return-stack predictor holds the coroutine's
 * calls, so every return between two switches is mispredicted. */
static inline __attribute__((always_inline)) void fut__coro_resume(fut_runtime *rt,
                                                                    struct fut__coro *co)
{
    struct fut__coro_rt *cr = rt->coro;
    struct fut__call *saved = fut__call_cur;
    uint64_t start = rt->slow_ns ? fut__now_ns() : 0;
    void *val = NULL;

    if (fut__unlikely(co->why != FUT__CORO_YIELD || co->cancel ||
                      atomic_load_explicit(&rt->stopping, memory_order_acquire)))
        val = fut__coro_wake(rt, co);
    fut__call_cur = &co->call;
    fut__coro_running = co;
    (void)fut__ctx_transfer(&cr->main, &co->ctx, val);
    fut__coro_running = NULL;
    fut__call_cur = saved;
    if (start != 0) /* debug mode: one step, from a resume to the next switch out */
        fut__debug_slow(rt, "a coroutine", (void (*)(void))co->fn, start);
    if (co->finished)
        fut__coro_finished(rt, co);
}

#endif
