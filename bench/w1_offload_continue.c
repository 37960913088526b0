/* W1 offload and continue: on the dispatcher, submit N trivial jobs (all in
 * flight at once, as libuv's benchmark does); each job's continuation runs
 * back on the dispatcher and adds the job's result to a sum. Time from the
 * first submit to the last continuation. Exits 1 if a job or continuation
 * was lost, ran twice, or ran on the wrong thread. Default options. */
#include "bench/bench.h"

#include <futures.h>
#include <stdint.h>

static long n, done_count, sum, wrong_thread;
static double t0, t1;
static fut_runtime *rt;
static fut_promise *all_done;

static void *work(void *arg)
{
    return arg; /* trivial: the job's number */
}

static void *after(void *value, void *arg)
{
    (void)arg;
    if (!fut_on_dispatcher(rt))
        wrong_thread++;
    sum += (long)(intptr_t)value; /* the dispatcher only: no lock */
    if (++done_count == n) {
        t1 = bench_now();
        fut_promise_resolve(all_done, NULL);
    }
    return NULL;
}

static void *start(void *value, void *arg)
{
    long i;

    (void)value;
    (void)arg;
    t0 = bench_now();
    for (i = 0; i < n; i++) {
        fut_future *f = fut_submit(rt, work, (void *)(intptr_t)i);
        fut_future *c = fut_then(f, after, NULL);
        BENCH_CHECK(f != NULL && c != NULL, "out of memory at job %ld", i);
        fut_release(f); /* the continuation keeps what it needs */
        fut_release(c);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    fut_future *go, *started, *done;

    n = bench_arg_n(argc, argv, 200000);
    rt = fut_runtime_new(NULL);
    all_done = fut_promise_new(rt);
    BENCH_CHECK(rt != NULL && all_done != NULL, "setup failed");
    done = fut_promise_future(all_done);
    go = fut_sleep(rt, 0); /* run start() on the dispatcher */
    started = fut_then(go, start, NULL);
    BENCH_CHECK(fut_wait(done, -1) == 0, "wait failed");
    BENCH_CHECK(done_count == n && sum == n * (n - 1) / 2 && wrong_thread == 0,
                "count=%ld sum=%ld wrong_thread=%ld", done_count, sum, wrong_thread);
    bench_report("W1_offload_continue", n, t1 - t0);
    fut_release(go);
    fut_release(started);
    fut_release(done);
    fut_promise_free(all_done);
    fut_runtime_free(rt);
    return 0;
}
