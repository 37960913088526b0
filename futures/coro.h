/* coro.h - internal: the coroutine records shared by coro.c and the
 * dispatcher's run queue (runtime.c), which resumes coroutines inline. */
#ifndef FUT_FUTURES_CORO_H
#define FUT_FUTURES_CORO_H

#include "futures/coro_ctx.h"
#include "futures/internal.h"

struct fut__coro {
    struct fut__ctx ctx;         /* its context, valid while started and not finished */
    struct fut__stack *stack;    /* its stack, while started and not finished */
    fut_future *f;               /* its future (the coroutine's reference until it returns) */
    fut_work_fn fn;              /* what it runs */
    void *arg;
    struct fut__task run_task;   /* dispatcher: start it, or resume it */
    struct fut__task wnode;      /* our node in the awaited future's dependents */
    struct fut__task cancel_task; /* dispatcher: deliver a cancel (queued from any thread) */
    fut_future *awaiting;        /* the future a pending await waits for, else NULL */
    struct fut__coro *next, *prev; /* the runtime's live coroutines */
    unsigned char started;       /* its context exists */
    unsigned char finished;      /* it returned (or never started) */
    unsigned char cancel;        /* a cancel came: the next await or yield returns ECANCELED */
};

/* The coroutine state of a runtime: dispatcher only. */
struct fut__coro_rt {
    struct fut__ctx main;        /* the dispatcher's own context */
    struct fut__coro *running;   /* the coroutine running now, else NULL */
    struct fut__coro *live;      /* started or queued, not finished */
    uint64_t nlive;
    struct fut__stack_cache stacks;
    int cancelled_all;           /* shutdown cancelled every live coroutine */
};

/* A finished coroutine: its context, stack and reference go. */
void fut__coro_finished(fut_runtime *rt, struct fut__coro *co);

/* Run co until it awaits, yields or returns (dispatcher's context).
 * Inlined into its callers (run_queue resumes from its own frame): after
 * a switch back the CPU's return-stack predictor holds the coroutine's
 * calls, so every return between two switches is mispredicted. */
static inline __attribute__((always_inline)) void fut__coro_resume(fut_runtime *rt,
                                                                    struct fut__coro *co)
{
    struct fut__coro_rt *cr = rt->coro;
    struct fut__raised saved = fut__raised;
    fut_future *saved_work = fut__current_work;
    uint64_t start = rt->slow_ns ? fut__now_ns() : 0;

    cr->running = co;
    fut__ctx_switch(&cr->main, &co->ctx);
    cr->running = NULL;
    fut__raised = saved;
    fut__current_work = saved_work;
    if (start != 0) /* debug mode: one step, from a resume to the next switch out */
        fut__debug_slow(rt, "a coroutine", (void (*)(void))co->fn, start);
    if (co->finished)
        fut__coro_finished(rt, co);
}

#endif
