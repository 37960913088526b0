/* test_pool_blocking.c - the blocking lane: threads made on demand up to the cap (64 sleeping jobs at once), the cap enforced, idle threads retire and new ones start again, and a failed thread start leaves no accepted job behind. */
#include "testutil.h"

typedef struct bjob {
    fut_pool_job job;
    tu_conc *conc;         /* concurrency meter shared by the batch */
    int target;            /* hold until this many ran at once... */
    uint64_t deadline_ns;  /* ...or until this time */
    tu_gate *gate;         /* or hold on this gate, if set */
    unsigned sleep_us;     /* then block this long */
    atomic_int ran;
    atomic_int other;      /* calls with status != 0 */
    bool on_lane;          /* ran on a fut-blk- thread */
    tu_latch *latch;
} bjob;

static void bjob_fn(fut_pool_job *job, int status)
{
    bjob *b = TU_CONTAINER_OF(job, bjob, job);
    tu_latch *l = b->latch;
    if (status != 0) {
        atomic_fetch_add(&b->other, 1);
        tu_latch_count_down(l);
        return;
    }
    b->on_lane = tu_on_lane_thread(FUT_LANE_BLOCKING);
    tu_conc_enter(b->conc);
    if (b->gate)
        tu_gate_wait(b->gate, TU_WAIT_MS);
    else
        while (atomic_load(&b->conc->max) < b->target && tu_now_ns() < b->deadline_ns)
            usleep(1000);
    usleep(b->sleep_us);
    tu_conc_leave(b->conc);
    atomic_fetch_add(&b->ran, 1);
    tu_latch_count_down(l);
}

/* Submit n blocking jobs that wait until target of them run at once (or
 * hold_ms pass), then sleep sleep_us; wait for all; check each ran once on
 * a blocking thread. Returns the concurrency reached. */
static int run_batch(fut_pool *p, unsigned n, int target, unsigned sleep_us, unsigned hold_ms)
{
    bjob *b = calloc(n, sizeof *b);
    tu_conc conc;
    tu_latch latch;
    uint64_t deadline = tu_deadline_ms(hold_ms);
    int max;

    ck_assert_ptr_nonnull(b);
    atomic_init(&conc.cur, 0);
    atomic_init(&conc.max, 0);
    tu_latch_init(&latch, n);
    for (unsigned i = 0; i < n; i++) {
        b[i].conc = &conc;
        b[i].target = target;
        b[i].deadline_ns = deadline;
        b[i].sleep_us = sleep_us;
        b[i].latch = &latch;
        ck_assert_int_eq(fut_pool_submit(p, FUT_LANE_BLOCKING, &b[i].job, bjob_fn), 0);
    }
    TU_LATCH_WAIT(&latch, hold_ms + TU_WAIT_MS);
    for (unsigned i = 0; i < n; i++) {
        ck_assert_msg(atomic_load(&b[i].ran) == 1, "job %u ran %d times", i, atomic_load(&b[i].ran));
        ck_assert_int_eq(atomic_load(&b[i].other), 0);
        ck_assert_msg(b[i].on_lane, "job %u not on a fut-blk- thread", i);
    }
    ck_assert_int_eq(atomic_load(&conc.cur), 0);
    max = atomic_load(&conc.max);
    tu_latch_destroy(&latch);
    free(b);
    return max;
}

/* Default options: 64 jobs that block 50 ms all run at the same time. */
START_TEST(test_sixty_four_at_once)
{
    fut_pool *p = fut_pool_new(NULL);
    fut_pool_stats s;
    int max;

    ck_assert_ptr_nonnull(p);
    max = run_batch(p, 64, 64, 50000, TU_WAIT_MS);
    ck_assert_msg(max == 64, "only %d of 64 blocking jobs ran at the same time", max);
    ck_assert_int_eq(fut_pool_wait_idle(p), 0);
    s = tu_stats(p, FUT_LANE_BLOCKING);
    ck_assert_uint_ge(s.peak_threads, 64);
    ck_assert_uint_le(s.peak_threads, 64);
    ck_assert_uint_le(s.threads, 64);
    ck_assert_uint_eq(s.completed, 64);
    ck_assert_uint_eq(s.queued, 0);
    ck_assert_uint_eq(s.running, 0);
    ck_assert_uint_eq(tu_stats(p, FUT_LANE_COMPUTE).completed, 0);

    /* More jobs than the cap: they queue and all run; the cap holds. */
    max = run_batch(p, 200, 0, 2000, 0);
    ck_assert_int_le(max, 64);
    ck_assert_int_eq(fut_pool_wait_idle(p), 0);
    s = tu_stats(p, FUT_LANE_BLOCKING);
    ck_assert_uint_eq(s.completed, 264);
    ck_assert_uint_le(s.peak_threads, 64);
    ck_assert_uint_le(s.threads, 64);
    ck_assert_int_eq(fut_pool_free(p), 0);
}
END_TEST

/* blocking_max 4, 16 jobs held on a gate: exactly 4 run at once, the other
 * 12 wait in the queue, and all 16 run once the gate opens. */
START_TEST(test_cap_respected)
{
    fut_pool *p = tu_pool_new(1, 4, 0);
    bjob b[16];
    tu_conc conc;
    tu_latch latch;
    tu_gate gate;
    fut_pool_stats s;
    bool ok;

    atomic_init(&conc.cur, 0);
    atomic_init(&conc.max, 0);
    tu_latch_init(&latch, 16);
    tu_gate_init(&gate);
    memset(b, 0, sizeof b);
    for (int i = 0; i < 16; i++) {
        b[i].conc = &conc;
        b[i].gate = &gate;
        b[i].sleep_us = 5000;
        b[i].latch = &latch;
        ck_assert_int_eq(fut_pool_submit(p, FUT_LANE_BLOCKING, &b[i].job, bjob_fn), 0);
    }
    TU_POLL(ok, atomic_load(&conc.cur) == 4, TU_WAIT_MS);
    ck_assert_msg(ok, "%d jobs running, expected 4", atomic_load(&conc.cur));
    tu_sleep_ms(50); /* room for a fifth to start, if the cap leaked */
    ck_assert_int_eq(atomic_load(&conc.cur), 4);
    s = tu_stats(p, FUT_LANE_BLOCKING);
    ck_assert_uint_eq(s.threads, 4);
    ck_assert_uint_eq(s.queued, 12);
    ck_assert_uint_eq(s.completed, 0);
    tu_gate_open(&gate);
    TU_LATCH_WAIT(&latch, TU_WAIT_MS);
    ck_assert_int_eq(atomic_load(&conc.max), 4);
    for (int i = 0; i < 16; i++) {
        ck_assert_int_eq(atomic_load(&b[i].ran), 1);
        ck_assert_int_eq(atomic_load(&b[i].other), 0);
        ck_assert(b[i].on_lane);
    }
    ck_assert_int_eq(fut_pool_wait_idle(p), 0);
    s = tu_stats(p, FUT_LANE_BLOCKING);
    ck_assert_uint_eq(s.completed, 16);
    ck_assert_uint_eq(s.peak_threads, 4);
    ck_assert_uint_le(s.threads, 4);

    /* And again without a gate: the cap still holds. */
    ck_assert_int_le(run_batch(p, 40, 0, 1000, 0), 4);
    ck_assert_uint_le(tu_stats(p, FUT_LANE_BLOCKING).peak_threads, 4);
    ck_assert_int_eq(fut_pool_free(p), 0);
    tu_gate_destroy(&gate);
    tu_latch_destroy(&latch);
}
END_TEST

/* Poll until the blocking lane has no thread left. */
static void expect_shrunk(fut_pool *p, const char *when)
{
    fut_pool_stats s;
    bool ok;
    TU_POLL(ok, (s = tu_stats(p, FUT_LANE_BLOCKING)).threads == 0, 5000 * TU_SLOW);
    ck_assert_msg(ok, "%s: blocking lane still has %u threads (%u idle) long after its 100 ms idle time",
                  when, s.threads, s.idle);
    ck_assert_uint_eq(s.idle, 0);
}

/* blocking_idle_ms 100: the lane grows for work, shrinks back to 0 threads
 * when idle, and grows again for new work. */
START_TEST(test_retire_and_regrow)
{
    fut_pool *p = tu_pool_new(2, 0, 100);
    fut_pool_stats s;
    int max;

    ck_assert_uint_eq(tu_stats(p, FUT_LANE_BLOCKING).threads, 0);
    max = run_batch(p, 16, 16, 10000, TU_WAIT_MS);
    ck_assert_int_eq(max, 16);
    ck_assert_int_eq(fut_pool_wait_idle(p), 0);
    s = tu_stats(p, FUT_LANE_BLOCKING);
    ck_assert_uint_ge(s.peak_threads, 16);
    ck_assert_uint_le(s.threads, 16);
    expect_shrunk(p, "after 16 jobs");
    /* Retiring blocking threads leaves the compute lane alone. */
    ck_assert_uint_eq(tu_stats(p, FUT_LANE_COMPUTE).threads, 2);

    /* New threads start after the old ones retired. */
    max = run_batch(p, 8, 8, 10000, TU_WAIT_MS);
    ck_assert_int_eq(max, 8);
    ck_assert_int_eq(fut_pool_wait_idle(p), 0);
    s = tu_stats(p, FUT_LANE_BLOCKING);
    ck_assert_uint_eq(s.completed, 24);
    ck_assert_uint_ge(s.peak_threads, 16);
    expect_shrunk(p, "after 8 more jobs");

    /* Once more with a single job: one thread starts, runs, retires. */
    ck_assert_int_eq(run_batch(p, 1, 1, 0, 0), 1);
    ck_assert_int_eq(fut_pool_wait_idle(p), 0);
    ck_assert_uint_eq(tu_stats(p, FUT_LANE_BLOCKING).completed, 25);
    expect_shrunk(p, "after 1 more job");
    ck_assert_int_eq(fut_pool_free(p), 0);
}
END_TEST

/* Jobs keep arriving while threads are retiring: none is lost. A short
 * idle time (1 ms) makes threads retire between the bursts. */
START_TEST(test_retire_races_submit)
{
    fut_pool *p = tu_pool_new(1, 8, 1);
    uint64_t total = 0;

    for (int round = 0; round < 60; round++) {
        unsigned n = 1 + (unsigned)(round % 7);
        ck_assert_int_le(run_batch(p, n, 0, 0, 0), 8);
        total += n;
        if (round % 3 == 0)
            usleep((useconds_t)(500 * (round % 5)));
    }
    ck_assert_int_eq(fut_pool_wait_idle(p), 0);
    ck_assert_uint_eq(tu_stats(p, FUT_LANE_BLOCKING).completed, total);
    ck_assert_uint_le(tu_stats(p, FUT_LANE_BLOCKING).peak_threads, 8);
    ck_assert_int_eq(fut_pool_free(p), 0);
}
END_TEST

/* A burst starts threads that start more threads (a spawning tree) while
 * shutdown begins at once: every job ran or was cancelled exactly once,
 * drain ran them all, and every thread was joined (the sanitizers see a
 * leaked thread or a use after free). 100 cycles, both modes. */
#define BURST 64

START_TEST(test_burst_then_shutdown)
{
    tu_cjob *jobs = calloc(BURST, sizeof *jobs);

    ck_assert_ptr_nonnull(jobs);
    for (int cycle = 0; cycle < 100; cycle++) {
        int mode = cycle % 2 ? FUT_POOL_CANCEL : FUT_POOL_DRAIN;
        fut_pool *p = tu_pool_new(1, BURST, 10000);
        unsigned accepted = 0;

        for (unsigned i = 0; i < BURST; i++) {
            tu_cjob_init(&jobs[i], NULL);
            if (fut_pool_submit(p, FUT_LANE_BLOCKING, &jobs[i].job, tu_cjob_fn) == 0)
                accepted++;
        }
        ck_assert_uint_eq(accepted, BURST);
        ck_assert_int_eq(fut_pool_shutdown(p, mode), 0);
        for (unsigned i = 0; i < BURST; i++) {
            int r = atomic_load(&jobs[i].ran), c = atomic_load(&jobs[i].cancelled);
            TU_REQUIRE(r + c == 1 && atomic_load(&jobs[i].bad) == 0,
                       "cycle %d job %u: ran %d cancelled %d", cycle, i, r, c);
            if (mode == FUT_POOL_DRAIN)
                TU_REQUIRE(r == 1, "cycle %d: drain cancelled job %u", cycle, i);
        }
        ck_assert_uint_eq(tu_stats(p, FUT_LANE_BLOCKING).threads, 0);
        ck_assert_int_eq(fut_pool_free(p), 0);
    }
    free(jobs);
}
END_TEST

/* An outside thread submits while threads retire (idle 1 ms), so that its
 * submits keep starting threads, and shutdown comes at a random moment:
 * a thread being created by a submit when shutdown begins must still be
 * joined (the sanitizers report one that is not), and every accepted job
 * ran or was cancelled exactly once. 200 cycles, both modes. */
#define RACE_JOBS 400

typedef struct racer {
    fut_pool *pool;
    tu_cjob *jobs;
    atomic_uint accepted; /* jobs[0..accepted) were accepted */
    atomic_int go;
} racer;

static void *racer_main(void *arg)
{
    racer *r = arg;
    unsigned i;

    atomic_store(&r->go, 1);
    for (i = 0; i < RACE_JOBS; i++) {
        if (fut_pool_submit(r->pool, FUT_LANE_BLOCKING, &r->jobs[i].job, tu_cjob_fn) != 0)
            break;
        atomic_store(&r->accepted, i + 1);
        if (i % 4 == 3)
            usleep(100 + 300 * (i % 3));
    }
    return NULL;
}

START_TEST(test_submit_spawn_vs_shutdown)
{
    tu_cjob *jobs = calloc(RACE_JOBS, sizeof *jobs);
    tu_rng rng;

    ck_assert_ptr_nonnull(jobs);
    tu_rng_seed(&rng, 12345);
    for (int cycle = 0; cycle < 200; cycle++) {
        int mode = cycle % 2 ? FUT_POOL_CANCEL : FUT_POOL_DRAIN;
        racer r = { .jobs = jobs };
        pthread_t t;
        unsigned n;

        for (unsigned i = 0; i < RACE_JOBS; i++)
            tu_cjob_init(&jobs[i], NULL);
        r.pool = tu_pool_new(1, 4, 1);
        atomic_init(&r.accepted, 0);
        atomic_init(&r.go, 0);
        ck_assert_int_eq(pthread_create(&t, NULL, racer_main, &r), 0);
        while (!atomic_load(&r.go))
            ;
        usleep(tu_rng_upto(&rng, 3000));
        ck_assert_int_eq(fut_pool_shutdown(r.pool, mode), 0);
        ck_assert_int_eq(pthread_join(t, NULL), 0);
        n = atomic_load(&r.accepted);
        for (unsigned i = 0; i < RACE_JOBS; i++) {
            int ran = atomic_load(&jobs[i].ran), c = atomic_load(&jobs[i].cancelled);
            if (i < n)
                TU_REQUIRE(ran + c == 1, "cycle %d job %u: ran %d cancelled %d", cycle, i, ran, c);
            else
                TU_REQUIRE(ran + c == 0, "cycle %d: refused job %u was called", cycle, i);
        }
        ck_assert_uint_eq(tu_stats(r.pool, FUT_LANE_BLOCKING).threads, 0);
        ck_assert_int_eq(fut_pool_free(r.pool), 0);
    }
    free(jobs);
}
END_TEST


/* ---- a failed thread start strands no accepted job ---- */

/* Submitter A starts the lane's first thread, whose creation fails
 * slowly; meanwhile B queues a job, sees a start in progress and starts
 * none. Every accepted job must still run or be told it never will. */
static atomic_int hook_entered, b_submitted;

static int slow_failing_start(void)
{
    uint64_t until = tu_deadline_ms(5000);

    atomic_store(&hook_entered, 1);
    while (!atomic_load(&b_submitted) && tu_now_ns() < until)
        usleep(1000);
    usleep(20000); /* B's submit has returned: fail after it */
    return EAGAIN;
}

typedef struct strand_job {
    fut_pool_job job;
    atomic_int calls;
    atomic_int status;
} strand_job;

static void strand_fn(fut_pool_job *job, int status)
{
    strand_job *j = TU_CONTAINER_OF(job, strand_job, job);
    atomic_store(&j->status, status);
    atomic_fetch_add(&j->calls, 1);
}

static void *ident_work(void *arg)
{
    return arg;
}

typedef struct submitter_b {
    fut_pool *pool;
    fut_runtime *rt;       /* or through the futures layer */
    strand_job job;
    int rc;
    fut_future *f;
} submitter_b;

static void *submitter_b_main(void *arg)
{
    submitter_b *b = arg;
    uint64_t until = tu_deadline_ms(5000);

    while (!atomic_load(&hook_entered) && tu_now_ns() < until)
        usleep(100);
    if (b->rt != NULL)
        b->f = fut_submit_blocking(b->rt, ident_work, (void *)(intptr_t)7);
    else
        b->rc = fut_pool_submit(b->pool, FUT_LANE_BLOCKING, &b->job.job, strand_fn);
    atomic_store(&b_submitted, 1);
    return NULL;
}

START_TEST(test_failed_start_strands_nothing)
{
    fut_pool *p = tu_pool_new(1, 4, 1000);
    submitter_b b = { .pool = p };
    strand_job a = { 0 }, later = { 0 };
    pthread_t t;
    int rc;

    atomic_store(&hook_entered, 0);
    atomic_store(&b_submitted, 0);
    ck_assert_int_eq(pthread_create(&t, NULL, submitter_b_main, &b), 0);
    fut__thread_set_hook(slow_failing_start);
    rc = fut_pool_submit(p, FUT_LANE_BLOCKING, &a.job, strand_fn);
    fut__thread_set_hook(NULL);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_eq(rc, EAGAIN);       /* A's job is A's again */
    ck_assert_int_eq(atomic_load(&a.calls), 0);
    ck_assert_int_eq(b.rc, 0);          /* B's was accepted... */
    ck_assert_int_eq(atomic_load(&b.job.calls), 1); /* ...and told it never runs */
    ck_assert_int_eq(atomic_load(&b.job.status), EAGAIN);
    ck_assert_uint_eq(tu_stats(p, FUT_LANE_BLOCKING).queued, 0);
    ck_assert_uint_eq(tu_stats(p, FUT_LANE_BLOCKING).cancelled, 1);
    ck_assert_int_eq(fut_pool_wait_idle(p), 0); /* nothing left waiting */
    /* The lane recovers once threads can be made. */
    ck_assert_int_eq(fut_pool_submit(p, FUT_LANE_BLOCKING, &later.job, strand_fn), 0);
    ck_assert_int_eq(fut_pool_shutdown(p, FUT_POOL_DRAIN), 0);
    ck_assert_int_eq(atomic_load(&later.calls), 1);
    ck_assert_int_eq(atomic_load(&later.status), 0);
    ck_assert_int_eq(fut_pool_free(p), 0);
}
END_TEST

/* The same through the futures layer: B's future is rejected with the
 * start's error, never left pending. */
START_TEST(test_failed_start_rejects_future)
{
    fut_pool_options o;
    fut_runtime *rt;
    submitter_b b = { 0 };
    fut_future *fa;
    pthread_t t;

    fut_pool_options_init(&o);
    o.compute_threads = 1;
    o.blocking_max = 4;
    rt = fut_runtime_new(&o);
    ck_assert_ptr_nonnull(rt);
    b.rt = rt;
    atomic_store(&hook_entered, 0);
    atomic_store(&b_submitted, 0);
    ck_assert_int_eq(pthread_create(&t, NULL, submitter_b_main, &b), 0);
    fut__thread_set_hook(slow_failing_start);
    fa = fut_submit_blocking(rt, ident_work, (void *)(intptr_t)1);
    fut__thread_set_hook(NULL);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_ptr_nonnull(fa);
    ck_assert_ptr_nonnull(b.f);
    ck_assert_int_eq(fut_wait(fa, 10), 0);
    ck_assert_int_eq(fut_error(fa), EAGAIN);
    ck_assert_int_eq(fut_wait(b.f, 10), 0);
    ck_assert_int_eq(fut_error(b.f), EAGAIN);
    ck_assert_str_eq(fut_message(b.f), "could not start the work: Resource temporarily unavailable");
    fut_release(fa);
    fut_release(b.f);
    ck_assert_int_eq(fut_runtime_free(rt), 0);
}
END_TEST

static Suite *pool_blocking_suite(void)
{
    Suite *s = suite_create("pool_blocking");
    TCase *tc;

    tc = tu_tcase(s, "grow", 60);
    tcase_add_test(tc, test_sixty_four_at_once);
    tcase_add_test(tc, test_cap_respected);
    tcase_add_test(tc, test_burst_then_shutdown);

    tc = tu_tcase(s, "retire", 60);
    tcase_add_test(tc, test_retire_and_regrow);
    tcase_add_test(tc, test_retire_races_submit);
    tcase_add_test(tc, test_submit_spawn_vs_shutdown);

    tc = tu_tcase(s, "start_fails", 30);
    tcase_add_test(tc, test_failed_start_strands_nothing);
    tcase_add_test(tc, test_failed_start_rejects_future);
    return s;
}

int main(void)
{
    return tu_run_suite(pool_blocking_suite());
}
