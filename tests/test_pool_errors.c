/* test_pool_errors.c - pool error paths: bad arguments and options, use after shutdown, EDEADLK from inside a job, allocation failures (no crash, no leak). */
#include "testutil.h"

static const int bad_lanes[] = { -1, 2, 99 };

/* ------------------------------------------------------------------------
 * Bad arguments
 * ---------------------------------------------------------------------- */

START_TEST(test_submit_bad_args)
{
    fut_pool *p = tu_pool_new(1, 0, 0);
    tu_cjob c;

    tu_cjob_init(&c, NULL);
    for (int lane = FUT_LANE_COMPUTE; lane <= FUT_LANE_BLOCKING; lane++) {
        ck_assert_int_eq(fut_pool_submit(NULL, lane, &c.job, tu_cjob_fn), EINVAL);
        ck_assert_int_eq(fut_pool_submit(p, lane, NULL, tu_cjob_fn), EINVAL);
        ck_assert_int_eq(fut_pool_submit(p, lane, &c.job, NULL), EINVAL);
        ck_assert_int_eq(fut_pool_submit(NULL, lane, NULL, NULL), EINVAL);
    }
    for (size_t i = 0; i < TU_ARRAY_LEN(bad_lanes); i++)
        ck_assert_int_eq(fut_pool_submit(p, bad_lanes[i], &c.job, tu_cjob_fn), EINVAL);
    ck_assert_int_eq(fut_pool_wait_idle(p), 0);
    ck_assert_int_eq(atomic_load(&c.ran) + atomic_load(&c.cancelled) + atomic_load(&c.bad), 0);
    ck_assert_uint_eq(tu_stats(p, FUT_LANE_COMPUTE).completed, 0);
    ck_assert_uint_eq(tu_stats(p, FUT_LANE_BLOCKING).completed, 0);
    /* The job is the caller's again: it can be submitted normally. */
    ck_assert_int_eq(fut_pool_submit(p, FUT_LANE_COMPUTE, &c.job, tu_cjob_fn), 0);
    ck_assert_int_eq(fut_pool_wait_idle(p), 0);
    ck_assert_int_eq(atomic_load(&c.ran), 1);
    ck_assert_int_eq(fut_pool_free(p), 0);
    ck_assert_int_eq(atomic_load(&c.ran), 1);
    ck_assert_int_eq(atomic_load(&c.cancelled), 0);
}
END_TEST

START_TEST(test_other_calls_bad_args)
{
    fut_pool *p = tu_pool_new(1, 0, 0);
    fut_pool_stats s;

    ck_assert_int_eq(fut_pool_options_init(NULL), EINVAL);
    ck_assert_int_eq(fut_pool_wait_idle(NULL), EINVAL);
    ck_assert_int_eq(fut_pool_shutdown(NULL, FUT_POOL_DRAIN), EINVAL);
    ck_assert_int_eq(fut_pool_shutdown(NULL, FUT_POOL_CANCEL), EINVAL);
    ck_assert_int_eq(fut_pool_shutdown(p, -1), EINVAL);
    ck_assert_int_eq(fut_pool_shutdown(p, 2), EINVAL);
    ck_assert_int_eq(fut_pool_stats_get(NULL, FUT_LANE_COMPUTE, &s), EINVAL);
    ck_assert_int_eq(fut_pool_stats_get(p, FUT_LANE_COMPUTE, NULL), EINVAL);
    ck_assert_int_eq(fut_pool_stats_get(p, FUT_LANE_BLOCKING, NULL), EINVAL);
    ck_assert_int_eq(fut_pool_stats_get(NULL, FUT_LANE_BLOCKING, NULL), EINVAL);
    for (size_t i = 0; i < TU_ARRAY_LEN(bad_lanes); i++)
        ck_assert_int_eq(fut_pool_stats_get(p, bad_lanes[i], &s), EINVAL);
    ck_assert_uint_eq(fut_pool_compute_threads(NULL), 0);
    ck_assert_int_eq(fut_pool_free(NULL), 0);
    /* The bad shutdown modes changed nothing. */
    {
        tu_cjob c;
        tu_cjob_init(&c, NULL);
        ck_assert_int_eq(fut_pool_submit(p, FUT_LANE_COMPUTE, &c.job, tu_cjob_fn), 0);
        ck_assert_int_eq(fut_pool_wait_idle(p), 0);
        ck_assert_int_eq(atomic_load(&c.ran), 1);
    }
    ck_assert_int_eq(fut_pool_free(p), 0);
}
END_TEST

static void expect_bad_options(const fut_pool_options *o, const char *what)
{
    fut_pool *p;
    errno = 0;
    p = fut_pool_new(o);
    if (p != NULL)
        fut_pool_free(p);
    ck_assert_msg(p == NULL, "fut_pool_new accepted %s", what);
    ck_assert_msg(errno == EINVAL, "fut_pool_new(%s): errno %d (%s), expected EINVAL", what, errno,
                  strerror(errno));
}

START_TEST(test_new_bad_options)
{
    fut_pool_options d, o;
    fut_pool *p;

    ck_assert_int_eq(fut_pool_options_init(&d), 0);

    o = d; o.compute_threads = 0;
    expect_bad_options(&o, "compute_threads 0");
    o = d; o.compute_threads = FUT_POOL_MAX_COMPUTE + 1;
    expect_bad_options(&o, "compute_threads FUT_POOL_MAX_COMPUTE + 1");
    o = d; o.compute_threads = UINT32_MAX;
    expect_bad_options(&o, "compute_threads UINT32_MAX");
    o = d; o.blocking_max = 0;
    expect_bad_options(&o, "blocking_max 0");
    o = d; o.blocking_max = FUT_POOL_MAX_BLOCKING + 1;
    expect_bad_options(&o, "blocking_max FUT_POOL_MAX_BLOCKING + 1");
    o = d; o.blocking_idle_ms = 0;
    expect_bad_options(&o, "blocking_idle_ms 0");
    o = d; o.blocking_idle_ms = FUT_POOL_MAX_IDLE_MS + 1;
    expect_bad_options(&o, "blocking_idle_ms FUT_POOL_MAX_IDLE_MS + 1");

    /* The limits themselves are valid (blocking threads start on demand,
     * so a huge cap costs nothing). */
    o = d; o.compute_threads = 1; o.blocking_max = FUT_POOL_MAX_BLOCKING;
    o.blocking_idle_ms = FUT_POOL_MAX_IDLE_MS;
    errno = 0;
    p = fut_pool_new(&o);
    ck_assert_msg(p != NULL, "limits rejected: %s", strerror(errno));
    ck_assert_int_eq(fut_pool_free(p), 0);
    o = d; o.compute_threads = 1; o.blocking_max = 1; o.blocking_idle_ms = 1;
    p = fut_pool_new(&o);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(fut_pool_free(p), 0);
    /* NULL options mean the defaults. */
    p = fut_pool_new(NULL);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(fut_pool_free(p), 0);
}
END_TEST

/* ------------------------------------------------------------------------
 * After shutdown. _i is the shutdown mode.
 * ---------------------------------------------------------------------- */

START_TEST(test_after_shutdown)
{
    int mode = _i;
    fut_pool *p = tu_pool_new(2, 0, 0);
    tu_cjob warm, c;
    fut_pool_stats s;

    /* Let both lanes have run something, so threads exist. */
    tu_cjob_init(&warm, NULL);
    ck_assert_int_eq(fut_pool_submit(p, FUT_LANE_BLOCKING, &warm.job, tu_cjob_fn), 0);
    ck_assert_int_eq(fut_pool_wait_idle(p), 0);
    ck_assert_int_eq(atomic_load(&warm.ran), 1);

    ck_assert_int_eq(fut_pool_shutdown(p, mode), 0);
    tu_cjob_init(&c, NULL);
    ck_assert_int_eq(fut_pool_submit(p, FUT_LANE_COMPUTE, &c.job, tu_cjob_fn), ESHUTDOWN);
    ck_assert_int_eq(fut_pool_submit(p, FUT_LANE_BLOCKING, &c.job, tu_cjob_fn), ESHUTDOWN);
    /* Argument checks still come first... or ESHUTDOWN: either is an error. */
    ck_assert_int_ne(fut_pool_submit(p, 7, &c.job, tu_cjob_fn), 0);
    ck_assert_int_eq(fut_pool_shutdown(p, mode), 0);
    ck_assert_int_eq(fut_pool_shutdown(p, 1 - mode), 0);
    ck_assert_int_eq(fut_pool_wait_idle(p), ESHUTDOWN);
    s = tu_stats(p, FUT_LANE_BLOCKING);
    ck_assert_uint_eq(s.completed, 1);
    ck_assert_uint_eq(s.threads, 0);
    s = tu_stats(p, FUT_LANE_COMPUTE);
    ck_assert_uint_eq(s.threads, 0);
    ck_assert_uint_eq(s.queued, 0);
    ck_assert_int_eq(fut_pool_free(p), 0);
    ck_assert_int_eq(atomic_load(&c.ran) + atomic_load(&c.cancelled) + atomic_load(&c.bad), 0);
}
END_TEST

/* ------------------------------------------------------------------------
 * EDEADLK: the pool's own jobs may not wait for, shut down or free it.
 * _i is the lane the job runs on.
 * ---------------------------------------------------------------------- */

typedef struct self_job {
    fut_pool_job job;
    fut_pool *pool;
    fut_pool *other;     /* another pool: waiting for it is fine */
    int rc_wait, rc_drain, rc_cancel, rc_free, rc_wait_other;
    tu_latch *latch;
} self_job;

static void self_job_fn(fut_pool_job *job, int status)
{
    self_job *j = TU_CONTAINER_OF(job, self_job, job);
    tu_latch *l = j->latch;
    TU_WCHECK_EQ(status, 0);
    j->rc_wait = fut_pool_wait_idle(j->pool);
    j->rc_drain = fut_pool_shutdown(j->pool, FUT_POOL_DRAIN);
    j->rc_cancel = fut_pool_shutdown(j->pool, FUT_POOL_CANCEL);
    j->rc_free = fut_pool_free(j->pool);
    j->rc_wait_other = fut_pool_wait_idle(j->other);
    tu_latch_count_down(l);
}

START_TEST(test_edeadlk_from_job)
{
    int lane = _i;
    fut_pool *p = tu_pool_new(2, 0, 0);
    fut_pool *other = tu_pool_new(1, 0, 0);
    tu_latch latch;
    self_job j;
    tu_cjob c;

    tu_latch_init(&latch, 1);
    memset(&j, 0, sizeof j);
    j.pool = p;
    j.other = other;
    j.latch = &latch;
    j.rc_wait = j.rc_drain = j.rc_cancel = j.rc_free = j.rc_wait_other = -1;
    ck_assert_int_eq(fut_pool_submit(p, lane, &j.job, self_job_fn), 0);
    TU_LATCH_WAIT(&latch, TU_WAIT_MS);
    ck_assert_int_eq(j.rc_wait, EDEADLK);
    ck_assert_int_eq(j.rc_drain, EDEADLK);
    ck_assert_int_eq(j.rc_cancel, EDEADLK);
    ck_assert_int_eq(j.rc_free, EDEADLK);
    ck_assert_int_eq(j.rc_wait_other, 0);

    /* Nothing was shut down or freed: the pool still works. */
    ck_assert_int_eq(fut_pool_wait_idle(p), 0);
    for (int l = FUT_LANE_COMPUTE; l <= FUT_LANE_BLOCKING; l++) {
        tu_cjob_init(&c, NULL);
        ck_assert_int_eq(fut_pool_submit(p, l, &c.job, tu_cjob_fn), 0);
        ck_assert_int_eq(fut_pool_wait_idle(p), 0);
        ck_assert_int_eq(atomic_load(&c.ran), 1);
    }
    ck_assert_uint_eq(tu_stats(p, lane).completed, 2);
    ck_assert_int_eq(fut_pool_free(p), 0);
    ck_assert_int_eq(fut_pool_free(other), 0);
    tu_latch_destroy(&latch);
}
END_TEST

/* ------------------------------------------------------------------------
 * Allocation failures (hook from pool/alloc.h)
 * ---------------------------------------------------------------------- */

static atomic_uint hook_calls;   /* allocations seen by the hook */
static atomic_uint hook_fail_at; /* fail only this one (1-based); 0: fail all */

static int hook_fail_all(size_t size)
{
    (void)size;
    atomic_fetch_add(&hook_calls, 1);
    return 1;
}

static int hook_fail_nth(size_t size)
{
    unsigned n = atomic_fetch_add(&hook_calls, 1) + 1;
    (void)size;
    return n == atomic_load(&hook_fail_at);
}

static int hook_count_only(size_t size)
{
    (void)size;
    atomic_fetch_add(&hook_calls, 1);
    return 0;
}

START_TEST(test_alloc_fail_new)
{
    fut_pool_options o;
    fut_pool *p;

    ck_assert_int_eq(fut_pool_options_init(&o), 0);
    o.compute_threads = 2;
    for (int k = 0; k < 2; k++) {
        atomic_store(&hook_calls, 0);
        fut__alloc_set_hook(hook_fail_all);
        errno = 0;
        p = fut_pool_new(k == 0 ? NULL : &o);
        fut__alloc_set_hook(NULL);
        if (p != NULL)
            fut_pool_free(p);
        ck_assert_msg(p == NULL, "fut_pool_new succeeded with every allocation failing");
        ck_assert_int_eq(errno, ENOMEM);
        ck_assert_uint_ge(atomic_load(&hook_calls), 1);
    }
    /* Normal allocation again: works. */
    p = fut_pool_new(&o);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(fut_pool_free(p), 0);
}
END_TEST

START_TEST(test_alloc_fail_blocking_submit)
{
    fut_pool *p = tu_pool_new(1, 4, 0);
    tu_latch latch;
    tu_cjob c, b;
    int rc;

    ck_assert_uint_eq(tu_stats(p, FUT_LANE_BLOCKING).threads, 0);
    tu_latch_init(&latch, 1);
    tu_cjob_init(&b, NULL);
    tu_cjob_init(&c, &latch);

    fut__alloc_set_hook(hook_fail_all);
    rc = fut_pool_submit(p, FUT_LANE_BLOCKING, &b.job, tu_cjob_fn);
    /* A compute submit allocates nothing: it works while memory is short. */
    ck_assert_int_eq(fut_pool_submit(p, FUT_LANE_COMPUTE, &c.job, tu_cjob_fn), 0);
    TU_LATCH_WAIT(&latch, TU_WAIT_MS);
    fut__alloc_set_hook(NULL);

    ck_assert_msg(rc == ENOMEM || rc == EAGAIN,
                  "blocking submit with no thread and no memory returned %d, expected ENOMEM/EAGAIN", rc);
    ck_assert_int_eq(atomic_load(&c.ran), 1);
    ck_assert_int_eq(fut_pool_wait_idle(p), 0);
    ck_assert_int_eq(atomic_load(&b.ran) + atomic_load(&b.cancelled) + atomic_load(&b.bad), 0);
    ck_assert_uint_eq(tu_stats(p, FUT_LANE_BLOCKING).completed, 0);
    ck_assert_uint_eq(tu_stats(p, FUT_LANE_BLOCKING).threads, 0);

    /* The same job on the same pool, memory back: it runs. */
    ck_assert_int_eq(fut_pool_submit(p, FUT_LANE_BLOCKING, &b.job, tu_cjob_fn), 0);
    ck_assert_int_eq(fut_pool_wait_idle(p), 0);
    ck_assert_int_eq(atomic_load(&b.ran), 1);
    ck_assert_uint_eq(tu_stats(p, FUT_LANE_BLOCKING).completed, 1);
    ck_assert_uint_eq(tu_stats(p, FUT_LANE_COMPUTE).completed, 1);
    ck_assert_int_eq(fut_pool_free(p), 0);
    ck_assert_int_eq(atomic_load(&b.ran), 1);
    ck_assert_int_eq(atomic_load(&b.cancelled), 0);
    tu_latch_destroy(&latch);
}
END_TEST

#define NTH_JOBS 64

/* _i = N: only the N-th allocation (counted from the start of
 * fut_pool_new, on any thread) fails. The pool is either not made (NULL,
 * ENOMEM) or fully working; never a leak or a crash. */
START_TEST(test_alloc_fail_nth)
{
    unsigned n = (unsigned)_i;
    fut_pool_options o;
    fut_pool *p;
    int err;
    tu_cjob *c = calloc(NTH_JOBS, sizeof *c);

    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(fut_pool_options_init(&o), 0);
    o.compute_threads = 2;
    o.blocking_max = 4;
    atomic_store(&hook_calls, 0);
    atomic_store(&hook_fail_at, n);
    fut__alloc_set_hook(hook_fail_nth);
    errno = 0;
    p = fut_pool_new(&o);
    err = errno;
    fut__alloc_set_hook(NULL);
    if (p == NULL) {
        ck_assert_msg(err == ENOMEM, "allocation %u failed: fut_pool_new gave NULL, errno %d (%s)", n,
                      err, strerror(err));
    } else {
        for (int i = 0; i < NTH_JOBS; i++) {
            tu_cjob_init(&c[i], NULL);
            ck_assert_int_eq(fut_pool_submit(p, i % 2, &c[i].job, tu_cjob_fn), 0);
        }
        ck_assert_int_eq(fut_pool_wait_idle(p), 0);
        for (int i = 0; i < NTH_JOBS; i++)
            ck_assert_int_eq(atomic_load(&c[i].ran), 1);
        ck_assert_uint_eq(tu_stats(p, FUT_LANE_COMPUTE).completed, NTH_JOBS / 2);
        ck_assert_uint_eq(tu_stats(p, FUT_LANE_BLOCKING).completed, NTH_JOBS / 2);
        ck_assert_uint_eq(tu_stats(p, FUT_LANE_COMPUTE).threads, 2);
        ck_assert_int_eq(fut_pool_free(p), 0);
    }
    free(c);
}
END_TEST

/* The hook sees the pool's allocations at all (else the tests above prove
 * nothing), and a pool made under a counting hook works. */
START_TEST(test_alloc_hook_sees_new)
{
    fut_pool *p;
    atomic_store(&hook_calls, 0);
    fut__alloc_set_hook(hook_count_only);
    p = fut_pool_new(NULL);
    fut__alloc_set_hook(NULL);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_ge(atomic_load(&hook_calls), 1);
    ck_assert_int_eq(fut_pool_free(p), 0);
}
END_TEST

static Suite *pool_errors_suite(void)
{
    Suite *s = suite_create("pool_errors");
    TCase *tc;

    tc = tu_tcase(s, "args", 60);
    tcase_add_test(tc, test_submit_bad_args);
    tcase_add_test(tc, test_other_calls_bad_args);
    tcase_add_test(tc, test_new_bad_options);

    tc = tu_tcase(s, "state", 60);
    tcase_add_loop_test(tc, test_after_shutdown, FUT_POOL_DRAIN, FUT_POOL_CANCEL + 1);
    tcase_add_loop_test(tc, test_edeadlk_from_job, FUT_LANE_COMPUTE, FUT_LANE_BLOCKING + 1);

    tc = tu_tcase(s, "alloc", 60);
    tcase_add_test(tc, test_alloc_hook_sees_new);
    tcase_add_test(tc, test_alloc_fail_new);
    tcase_add_test(tc, test_alloc_fail_blocking_submit);
    tcase_add_loop_test(tc, test_alloc_fail_nth, 1, 11);
    return s;
}

int main(void)
{
    return tu_run_suite(pool_errors_suite());
}
