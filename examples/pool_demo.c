/* pool_demo.c - the pool in one page: CPU work on the compute lane, a slow
 * read (a sleep) on the blocking lane. cc pool_demo.c $(pkg-config --cflags --libs futures) */
#define _POSIX_C_SOURCE 200809L /* nanosleep, clock_gettime */

#include <futures.h>

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

enum { N_COMPUTE = 8, N_BLOCKING = 4 }; /* jobs per lane */
#define RANGE 100000u /* numbers summed by one compute job */

/* Job objects embed the pool's job node, so a submit allocates nothing. */
struct sum_job {
    fut_pool_job job; /* the pool's part */
    uint64_t lo, hi;  /* sum i*i for lo <= i < hi ... */
    uint64_t sum;     /* ... into this, on a compute worker */
};

struct read_job {
    fut_pool_job job; /* the pool's part */
    int done;         /* set on the blocking thread */
};

/* Recover our object from the node the callback gets (container_of). */
#define JOB_OF(node, type) ((type *)(void *)((char *)(node) - offsetof(type, job)))

/* Runs on a compute worker; status ECANCELED means it never will. */
static void sum_squares(fut_pool_job *node, int status)
{
    struct sum_job *s = JOB_OF(node, struct sum_job);
    uint64_t sum = 0;
    if (status != 0)
        return; /* nothing to release: the objects live in main */
    for (uint64_t i = s->lo; i < s->hi; i++)
        sum += i * i;
    s->sum = sum;
}

/* Runs on a blocking-lane thread: sleeping there holds no compute worker. */
static void slow_read(fut_pool_job *node, int status)
{
    struct timespec left = { 0, 100 * 1000 * 1000 }; /* 100 ms */
    if (status != 0)
        return;
    while (nanosleep(&left, &left) != 0 && errno == EINTR)
        ;
    JOB_OF(node, struct read_job)->done = 1;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t); /* cannot fail for this clock */
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int failed(const char *what, int err)
{
    fprintf(stderr, "pool_demo: %s failed: %s\n", what, strerror(err));
    return 1;
}

static int run(fut_pool *pool, struct sum_job *sums, struct read_job *reads)
{
    uint64_t n = (uint64_t)N_COMPUTE * RANGE, total = 0;
    fut_pool_stats cpu, blk;
    double start;
    int i, err;
    for (i = 0; i < N_COMPUTE; i++) {
        sums[i] = (struct sum_job){ .lo = (uint64_t)i * RANGE, .hi = (uint64_t)(i + 1) * RANGE };
        if ((err = fut_pool_submit(pool, FUT_LANE_COMPUTE, &sums[i].job, sum_squares)) != 0)
            return failed("fut_pool_submit (compute lane)", err);
    }
    if ((err = fut_pool_wait_idle(pool)) != 0)
        return failed("fut_pool_wait_idle", err);
    for (i = 0; i < N_COMPUTE; i++)
        total += sums[i].sum;
    printf("compute: %d jobs, total = %" PRIu64 "\n", N_COMPUTE, total);
    if (total != (n - 1) * n * (2 * n - 1) / 6) /* sum of i*i for i < n */
        return failed("the compute check (wrong total)", EDOM);
    start = now();
    for (i = 0; i < N_BLOCKING; i++) {
        reads[i].done = 0;
        if ((err = fut_pool_submit(pool, FUT_LANE_BLOCKING, &reads[i].job, slow_read)) != 0)
            return failed("fut_pool_submit (blocking lane)", err);
    }
    if ((err = fut_pool_wait_idle(pool)) != 0)
        return failed("fut_pool_wait_idle", err);
    for (i = 0; i < N_BLOCKING; i++)
        if (!reads[i].done)
            return failed("the blocking check (a job did not run)", ESRCH);
    printf("blocking: %d jobs of 100 ms took %.1fs\n", N_BLOCKING, now() - start);
    if ((err = fut_pool_stats_get(pool, FUT_LANE_COMPUTE, &cpu)) != 0 ||
        (err = fut_pool_stats_get(pool, FUT_LANE_BLOCKING, &blk)) != 0)
        return failed("fut_pool_stats_get", err);
    printf("stats: compute lane %u threads, %" PRIu64 " jobs run; blocking lane"
           " peak %u threads, %" PRIu64 " jobs run\n",
           cpu.threads, cpu.completed, blk.peak_threads, blk.completed);
    return 0;
}

int main(void)
{
    struct sum_job sums[N_COMPUTE];
    struct read_job reads[N_BLOCKING];
    fut_pool *pool = fut_pool_new(NULL); /* defaults: a worker per CPU */
    int rc, err;
    if (pool == NULL)
        return failed("fut_pool_new", errno);
    rc = run(pool, sums, reads); /* the jobs live here, beyond the pool */
    if ((err = fut_pool_free(pool)) != 0) /* cancels what an error left queued */
        rc = failed("fut_pool_free", err);
    return rc;
}
