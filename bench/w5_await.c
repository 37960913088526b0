/* W5 await: one coroutine on the default-options runtime, timed inside it.
 *
 *   bench/w5_await N yield      fut_yield N times: each a real suspension,
 *                               a trip through the dispatcher's queue and a
 *                               resume (asyncio.sleep(0))
 *   bench/w5_await N settled    fut_await an already resolved future N
 *                               times (no switch)
 *   bench/w5_await N suspended  start N coroutines that each await one
 *                               never-settled promise future (all the same
 *                               one); wall = until all have started and
 *                               suspended; memory per suspended coroutine
 *                               on stderr: (peak RSS at the end - RSS
 *                               before) / N, as bench/w3_timers does. Then
 *                               all are cancelled and run to their end.
 *
 * One result line on stdout (../shared/peers' contract). Exits 1 if a
 * count or a value is wrong. */
#include "bench/bench.h"

#include <errno.h>
#include <futures.h>
#include <stdatomic.h>
#include <stdint.h>

static long n;
static fut_runtime *rt;
static double t0, t1;

static void *co_yield(void *arg)
{
    long i, ok = 0;

    (void)arg;
    t0 = bench_now();
    for (i = 0; i < n; i++)
        ok += fut_yield() == 0;
    t1 = bench_now();
    return (void *)(intptr_t)ok;
}

static void *co_settled(void *arg)
{
    fut_future *f = arg;
    long i, ok = 0;
    int err;

    t0 = bench_now();
    for (i = 0; i < n; i++)
        ok += fut_await(f, &err) == (void *)f && err == 0;
    t1 = bench_now();
    return (void *)(intptr_t)ok;
}

/* suspended: the children and the coroutine that starts them */
static fut_future *never;               /* the future every child awaits */
static long suspended_count, cancelled_count, finished_count; /* dispatcher only */

static void *co_child(void *arg)
{
    int err = 0;

    (void)arg;
    suspended_count++;
    fut_await(never, &err);
    cancelled_count += err == ECANCELED;
    finished_count++;
    return NULL;
}

static void *co_starter(void *arg)
{
    fut_future **kids = arg;
    long i, pending = 0;

    t0 = bench_now();
    for (i = 0; i < n; i++) {
        kids[i] = fut_async(rt, co_child, NULL);
        if (kids[i] == NULL)
            return (void *)(intptr_t)-1;
    }
    /* Every child was queued before this yield: when it returns, each has
     * run up to its await and suspended there. */
    fut_yield();
    t1 = bench_now();
    for (i = 0; i < n; i++)
        pending += fut_state(kids[i]) == FUT_PENDING;
    if (suspended_count != n || finished_count != 0 || pending != n)
        return (void *)(intptr_t)-2;
    for (i = 0; i < n; i++)
        fut_cancel(kids[i]);
    while (finished_count < n) /* let the cancels reach them and let them return */
        fut_yield();
    return (void *)(intptr_t)n;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 2 ? argv[2] : "yield";
    void *res = NULL;
    int rc;

    n = bench_arg_n(argc, argv, 10000000);
    rt = fut_runtime_new(NULL);
    BENCH_CHECK(rt != NULL, "setup failed");
    if (strcmp(mode, "yield") == 0) {
        rc = fut_run(rt, co_yield, NULL, &res);
        BENCH_CHECK(rc == 0 && (long)(intptr_t)res == n, "rc=%d yields=%ld of %ld", rc,
                    (long)(intptr_t)res, n);
        bench_report("W5_await_yield", n, t1 - t0);
    } else if (strcmp(mode, "settled") == 0) {
        fut_promise *p = fut_promise_new(rt);
        fut_future *f;

        BENCH_CHECK(p != NULL, "setup failed");
        f = fut_promise_future(p);
        BENCH_CHECK(fut_promise_resolve(p, f) == 0, "resolve failed");
        rc = fut_run(rt, co_settled, f, &res);
        BENCH_CHECK(rc == 0 && (long)(intptr_t)res == n, "rc=%d awaits=%ld of %ld", rc,
                    (long)(intptr_t)res, n);
        bench_report("W5_await_settled", n, t1 - t0);
        fut_release(f);
        fut_promise_free(p);
    } else if (strcmp(mode, "suspended") == 0) {
        fut_promise *p = fut_promise_new(rt);
        fut_future **kids = malloc((size_t)n * sizeof *kids);
        long base, peak, i;

        BENCH_CHECK(p != NULL && kids != NULL, "setup failed");
        never = fut_promise_future(p);
        base = bench_status_bytes("VmRSS:");
        rc = fut_run(rt, co_starter, kids, &res);
        peak = bench_status_bytes("VmHWM:");
        BENCH_CHECK(rc == 0 && (long)(intptr_t)res == n,
                    "rc=%d result=%ld (-1: fut_async failed, -2: not all suspended) "
                    "suspended=%ld of %ld",
                    rc, (long)(intptr_t)res, suspended_count, n);
        BENCH_CHECK(finished_count == n && cancelled_count == n, "finished=%ld cancelled=%ld of %ld",
                    finished_count, cancelled_count, n);
        for (i = 0; i < n; i++)
            BENCH_CHECK(fut_state(kids[i]) == FUT_CANCELLED, "child %ld not cancelled", i);
        bench_report("W5_await_suspended", n, t1 - t0);
        fprintf(stderr, "baseRSS=%ld peakRSS=%ld bytes_per_coroutine=%.1f\n", base, peak,
                (double)(peak - base) / (double)n);
        for (i = 0; i < n; i++)
            fut_release(kids[i]);
        free(kids);
        fut_release(never);
        fut_promise_free(p);
    } else {
        fprintf(stderr, "usage: %s N yield|settled|suspended\n", argv[0]);
        return 2;
    }
    fut_runtime_free(rt);
    return 0;
}
