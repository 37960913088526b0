/* W6 blocking offload: N (= 64) jobs that each block in usleep(10000),
 * submitted at once to the blocking lane with default options; wait for
 * all. Ideal 10 ms. Exits 1 if a job was lost. */
#include "bench/bench.h"

#include <futures.h>
#include <stdatomic.h>
#include <unistd.h>

static atomic_long ran;

static void job_fn(fut_pool_job *job, int status)
{
    (void)job;
    if (status == 0) {
        usleep(10000);
        atomic_fetch_add_explicit(&ran, 1, memory_order_relaxed);
    }
}

int main(int argc, char **argv)
{
    long n = bench_arg_n(argc, argv, 64), i;
    fut_pool_job *jobs = calloc((size_t)n, sizeof *jobs);
    fut_pool *pool = fut_pool_new(NULL);
    double t0, wall;
    int rc;

    BENCH_CHECK(jobs != NULL && pool != NULL, "setup failed");
    t0 = bench_now();
    for (i = 0; i < n; i++) {
        rc = fut_pool_submit(pool, FUT_LANE_BLOCKING, &jobs[i], job_fn);
        BENCH_CHECK(rc == 0, "submit: %s", strerror(rc));
    }
    rc = fut_pool_wait_idle(pool);
    wall = bench_now() - t0;
    BENCH_CHECK(rc == 0, "wait_idle: %s", strerror(rc));
    BENCH_CHECK(atomic_load(&ran) == n, "ran=%ld of %ld", atomic_load(&ran), n);
    bench_report("W6_blocking_offload", n, wall);
    fut_pool_free(pool);
    free(jobs);
    return 0;
}
