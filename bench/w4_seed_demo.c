/* W4 seed demo: three 1 s sleeps, sequential (each started by the previous
 * one's continuation) and concurrent (gathered). The end of each is taken
 * in its last continuation, on the dispatcher. Prints the overshoot over
 * 3.000 s and 1.000 s. Default options. */
#include "bench/bench.h"

#include <futures.h>

static fut_runtime *rt;
static fut_promise *chain_done;
static double t_end;
static int fired;

/* Continuation of sleep number 3 - left: start the next, or finish. */
static void *next_sleep(void *value, void *arg)
{
    long left = (long)arg;
    fut_future *s, *c;

    (void)value;
    fired++;
    if (left == 0) {
        t_end = bench_now();
        fut_promise_resolve(chain_done, NULL);
        return NULL;
    }
    s = fut_sleep(rt, 1.0);
    c = fut_then(s, next_sleep, (void *)(left - 1));
    BENCH_CHECK(s != NULL && c != NULL, "no memory");
    fut_release(s);
    fut_release(c);
    return NULL;
}

static void *gathered(void *value, void *arg)
{
    (void)value;
    (void)arg;
    t_end = bench_now();
    return NULL;
}

int main(void)
{
    fut_future *s[3], *c, *g, *done;
    double t0, seq, par;
    int i;

    rt = fut_runtime_new(NULL);
    chain_done = fut_promise_new(rt);
    BENCH_CHECK(rt != NULL && chain_done != NULL, "setup failed");
    done = fut_promise_future(chain_done);

    /* Sequential: sleep, then sleep, then sleep. */
    t0 = bench_now();
    s[0] = fut_sleep(rt, 1.0);
    c = fut_then(s[0], next_sleep, (void *)2L);
    fut_release(s[0]);
    fut_release(c);
    BENCH_CHECK(fut_wait(done, -1) == 0, "wait failed");
    seq = t_end - t0;

    /* Concurrent: three sleeps gathered. */
    t0 = bench_now();
    for (i = 0; i < 3; i++)
        s[i] = fut_sleep(rt, 1.0);
    g = fut_gather(rt, s, 3, 0);
    c = fut_then(g, gathered, NULL);
    BENCH_CHECK(fut_wait(c, -1) == 0, "wait failed");
    par = t_end - t0;
    BENCH_CHECK(fired == 3 && fut_state(g) == FUT_RESOLVED, "fired=%d", fired);
    printf("workload=W4_seed_demo peer=libfutures n=3 sequential_s=%.6f gather_s=%.6f "
           "seq_overshoot_ms=%.3f gather_overshoot_ms=%.3f\n",
           seq, par, (seq - 3) * 1e3, (par - 1) * 1e3);
    for (i = 0; i < 3; i++)
        fut_release(s[i]);
    fut_release(g);
    fut_release(c);
    fut_release(done);
    fut_promise_free(chain_done);
    fut_runtime_free(rt);
    return 0;
}
