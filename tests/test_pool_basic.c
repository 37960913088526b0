/* test_pool_basic.c - pool basics: submit/run on both lanes, pool threads (names, signal masks), freeing and resubmitting in fn, nested submits, wait_idle, options, stats, version. */
#include "testutil.h"

/* The test thread, to tell it apart from pool threads. */
static pthread_t caller;

/* ------------------------------------------------------------------------
 * Probe job: records where and how it ran.
 * ---------------------------------------------------------------------- */

typedef struct probe {
    fut_pool_job job;
    int status;          /* status fn got */
    atomic_int calls;    /* times fn was called */
    bool other_thread;   /* fn ran on a thread other than the test's */
    char name[32];       /* the running thread's name */
    int unblocked_sig;   /* first signal not blocked in the thread, or 0 */
    tu_latch *latch;
} probe;

/* The first signal (other than those that cannot be blocked) that the
 * calling thread does not block, or 0 if all are blocked; -1 on error. */
static int first_unblocked_signal(void)
{
    sigset_t set;
    sigemptyset(&set);
    if (pthread_sigmask(SIG_BLOCK, NULL, &set) != 0)
        return -1;
    for (int sig = 1; sig <= SIGRTMAX; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        if (sig > 31 && sig < SIGRTMIN)
            continue; /* reserved by the C library, never blockable */
        if (sigismember(&set, sig) != 1)
            return sig;
    }
    return 0;
}

static void probe_record(probe *p, int status)
{
    p->status = status;
    p->other_thread = !pthread_equal(pthread_self(), caller);
    if (pthread_getname_np(pthread_self(), p->name, sizeof p->name) != 0)
        strcpy(p->name, "<getname failed>");
    p->unblocked_sig = first_unblocked_signal();
}

static void probe_fn(fut_pool_job *job, int status)
{
    probe *p = TU_CONTAINER_OF(job, probe, job);
    tu_latch *l = p->latch;
    probe_record(p, status);
    atomic_fetch_add(&p->calls, 1);
    tu_latch_count_down(l);
}

static void probe_init(probe *p, tu_latch *l)
{
    memset(p, 0, sizeof *p);
    atomic_init(&p->calls, 0);
    p->status = -1;
    p->latch = l;
}

/* Assert that probe p ran once, with status 0, on a thread of lane. */
static void probe_check(const probe *p, int lane, int i)
{
    const char *pfx = tu_lane_prefix(lane);
    ck_assert_msg(atomic_load(&p->calls) == 1, "job %d: fn called %d times", i,
                  atomic_load(&p->calls));
    ck_assert_msg(p->status == 0, "job %d: status %d, expected 0", i, p->status);
    ck_assert_msg(p->other_thread, "job %d ran on the submitting thread", i);
    ck_assert_msg(strncmp(p->name, pfx, strlen(pfx)) == 0,
                  "job %d on the %s lane ran on thread \"%s\", expected prefix \"%s\"", i,
                  tu_lane_name(lane), p->name, pfx);
    ck_assert_msg(p->unblocked_sig == 0, "job %d: signal %d (%s) is not blocked in pool thread \"%s\"",
                  i, p->unblocked_sig, p->unblocked_sig > 0 ? strsignal(p->unblocked_sig) : "?",
                  p->name);
}

/* ------------------------------------------------------------------------
 * Version, options, compute_threads
 * ---------------------------------------------------------------------- */

START_TEST(test_version)
{
    const char *v = fut_version();
    ck_assert_ptr_nonnull(v);
    ck_assert_msg(v[0] != '\0', "fut_version() is empty");
    ck_assert_ptr_eq(fut_version(), v);
}
END_TEST

START_TEST(test_options_defaults)
{
    fut_pool_options o;
    memset(&o, 0xFF, sizeof o);
    ck_assert_int_eq(fut_pool_options_init(&o), 0);
    ck_assert_uint_eq(o.compute_threads, tu_online_cpus());
    ck_assert_uint_eq(o.blocking_max, 64);
    ck_assert_uint_eq(o.blocking_idle_ms, 10000);
}
END_TEST

START_TEST(test_compute_threads)
{
    fut_pool *p;
    bool ok;

    ck_assert_uint_eq(fut_pool_compute_threads(NULL), 0);

    p = fut_pool_new(NULL);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(fut_pool_compute_threads(p), tu_online_cpus());
    ck_assert_int_eq(fut_pool_free(p), 0);

    p = tu_pool_new(3, 0, 0);
    ck_assert_uint_eq(fut_pool_compute_threads(p), 3);
    /* The workers start in fut_pool_new; allow them a moment to count in. */
    TU_POLL(ok, tu_stats(p, FUT_LANE_COMPUTE).threads == 3, 5000 * TU_SLOW);
    ck_assert_msg(ok, "compute lane has %u threads, expected 3",
                  tu_stats(p, FUT_LANE_COMPUTE).threads);
    ck_assert_int_eq(fut_pool_free(p), 0);

    p = tu_pool_new(1, 0, 0);
    ck_assert_uint_eq(fut_pool_compute_threads(p), 1);
    ck_assert_int_eq(fut_pool_free(p), 0);
}
END_TEST

/* ------------------------------------------------------------------------
 * Submit and run
 * ---------------------------------------------------------------------- */

#define NPROBES 64

/* _i is the lane. fn(job, 0) is called exactly once, on a pool thread of
 * that lane (named fut-cpu-K / fut-blk-K), with every signal blocked. The
 * test waits on a latch, not fut_pool_wait_idle (whose caller may run
 * compute jobs itself). */
START_TEST(test_submit_runs_on_lane)
{
    int lane = _i;
    probe *pr = calloc(NPROBES, sizeof *pr);
    tu_latch latch;
    fut_pool *p;
    fut_pool_stats s;

    ck_assert_ptr_nonnull(pr);
    caller = pthread_self();
    tu_latch_init(&latch, NPROBES);
    p = tu_pool_new(2, 0, 0);
    for (int i = 0; i < NPROBES; i++) {
        probe_init(&pr[i], &latch);
        ck_assert_int_eq(fut_pool_submit(p, lane, &pr[i].job, probe_fn), 0);
    }
    TU_LATCH_WAIT(&latch, TU_WAIT_MS);
    for (int i = 0; i < NPROBES; i++)
        probe_check(&pr[i], lane, i);

    ck_assert_int_eq(fut_pool_wait_idle(p), 0);
    s = tu_stats(p, lane);
    ck_assert_uint_eq(s.completed, NPROBES);
    ck_assert_uint_eq(s.cancelled, 0);
    ck_assert_uint_eq(s.queued, 0);
    ck_assert_uint_eq(s.running, 0);
    s = tu_stats(p, 1 - lane);
    ck_assert_uint_eq(s.completed, 0);

    ck_assert_int_eq(fut_pool_free(p), 0);
    for (int i = 0; i < NPROBES; i++)
        ck_assert_int_eq(atomic_load(&pr[i].calls), 1);
    tu_latch_destroy(&latch);
    free(pr);
}
END_TEST

/* A job whose memory fn frees (ASan reports any later touch by the pool). */
typedef struct heap_job {
    fut_pool_job job;
    unsigned idx;
    atomic_int *ran;
} heap_job;

static void heap_job_fn(fut_pool_job *job, int status)
{
    heap_job *h = TU_CONTAINER_OF(job, heap_job, job);
    TU_WCHECK_EQ(status, 0);
    atomic_fetch_add(&h->ran[h->idx], 1);
    memset(h, 0x5A, sizeof *h);
    free(h);
}

#define NHEAP 4000

START_TEST(test_free_in_fn)
{
    int lane = _i;
    atomic_int *ran = calloc(NHEAP, sizeof *ran);
    fut_pool *p = tu_pool_new(2, 8, 0);

    ck_assert_ptr_nonnull(ran);
    for (unsigned i = 0; i < NHEAP; i++) {
        heap_job *h = malloc(sizeof *h);
        TU_REQUIRE(h != NULL, "malloc");
        h->idx = i;
        h->ran = ran;
        TU_REQUIRE(fut_pool_submit(p, lane, &h->job, heap_job_fn) == 0, "submit %u failed", i);
    }
    ck_assert_int_eq(fut_pool_wait_idle(p), 0);
    for (unsigned i = 0; i < NHEAP; i++)
        TU_REQUIRE(atomic_load(&ran[i]) == 1, "job %u ran %d times", i, atomic_load(&ran[i]));
    ck_assert_uint_eq(tu_stats(p, lane).completed, NHEAP);
    ck_assert_int_eq(fut_pool_free(p), 0);
    free(ran);
}
END_TEST

/* ------------------------------------------------------------------------
 * Nested submits: a running job submits to either lane.
 * ---------------------------------------------------------------------- */

typedef struct nest {
    fut_pool_job job;
    fut_pool *pool;
    int inner_lane;
    int submit_rc;       /* rc of the nested fut_pool_submit */
    bool outer_on_lane;  /* the outer job ran on its lane */
    int outer_status;
    probe inner;
    tu_latch *latch;
} nest;

static int outer_lane_of_test;

static void nest_fn(fut_pool_job *job, int status)
{
    nest *n = TU_CONTAINER_OF(job, nest, job);
    tu_latch *l = n->latch;
    n->outer_status = status;
    n->outer_on_lane = tu_on_lane_thread(outer_lane_of_test);
    n->submit_rc = fut_pool_submit(n->pool, n->inner_lane, &n->inner.job, probe_fn);
    if (n->submit_rc != 0)
        tu_latch_count_down(l); /* the inner job will not count down */
    tu_latch_count_down(l);
}

#define NNEST 32

/* _i = 2 * outer lane + inner lane: all four directions. */
START_TEST(test_nested_submit)
{
    int outer = _i / 2, inner = _i % 2;
    nest *ns = calloc(NNEST, sizeof *ns);
    tu_latch latch;
    fut_pool *p = tu_pool_new(2, 0, 0);

    ck_assert_ptr_nonnull(ns);
    caller = pthread_self();
    outer_lane_of_test = outer;
    tu_latch_init(&latch, 2 * NNEST);
    for (int i = 0; i < NNEST; i++) {
        ns[i].pool = p;
        ns[i].inner_lane = inner;
        ns[i].submit_rc = -1;
        ns[i].outer_status = -1;
        ns[i].latch = &latch;
        probe_init(&ns[i].inner, &latch);
        ck_assert_int_eq(fut_pool_submit(p, outer, &ns[i].job, nest_fn), 0);
    }
    TU_LATCH_WAIT(&latch, TU_WAIT_MS);
    for (int i = 0; i < NNEST; i++) {
        ck_assert_int_eq(ns[i].outer_status, 0);
        ck_assert_msg(ns[i].outer_on_lane, "outer job %d not on a %s thread", i, tu_lane_name(outer));
        ck_assert_msg(ns[i].submit_rc == 0, "nested submit %s -> %s returned %d", tu_lane_name(outer),
                      tu_lane_name(inner), ns[i].submit_rc);
        probe_check(&ns[i].inner, inner, i);
    }
    ck_assert_int_eq(fut_pool_wait_idle(p), 0);
    if (outer == inner) {
        ck_assert_uint_eq(tu_stats(p, outer).completed, 2 * NNEST);
    } else {
        ck_assert_uint_eq(tu_stats(p, outer).completed, NNEST);
        ck_assert_uint_eq(tu_stats(p, inner).completed, NNEST);
    }
    ck_assert_int_eq(fut_pool_free(p), 0);
    tu_latch_destroy(&latch);
    free(ns);
}
END_TEST

/* ------------------------------------------------------------------------
 * wait_idle waits for what running jobs submit. Each chain is one job that
 * resubmits itself (allowed from its fn) for HOPS hops, switching lanes as
 * its mode says; fut_pool_wait_idle, called right after the first submits,
 * must not return before the last hop ran.
 * ---------------------------------------------------------------------- */

#define NCHAINS 48
#define HOPS 40

typedef struct chain {
    fut_pool_job job;
    fut_pool *pool;
    int lane;           /* lane of the current hop */
    int mode;           /* 0: stay on compute, 1: stay on blocking, 2: alternate */
    int hops_left;
    atomic_int hops;    /* hops run */
    atomic_int *total;  /* all hops of all chains */
} chain;

static void chain_fn(fut_pool_job *job, int status)
{
    chain *c = TU_CONTAINER_OF(job, chain, job);
    int rc;
    TU_WCHECK_EQ(status, 0);
    TU_WCHECK(tu_on_pool_thread() || c->lane == FUT_LANE_COMPUTE);
    atomic_fetch_add(&c->hops, 1);
    atomic_fetch_add(c->total, 1);
    if (c->lane == FUT_LANE_BLOCKING)
        usleep(200); /* blocking work takes a while: wait_idle must really wait */
    if (c->hops_left == 0)
        return;
    c->hops_left--;
    if (c->mode == 2)
        c->lane = 1 - c->lane;
    rc = fut_pool_submit(c->pool, c->lane, &c->job, chain_fn);
    TU_WCHECK_EQ(rc, 0);
}

START_TEST(test_wait_idle_nested)
{
    chain *cs = calloc(NCHAINS, sizeof *cs);
    atomic_int total;
    fut_pool *p = tu_pool_new(2, 16, 0);
    uint64_t c_done, b_done;

    ck_assert_ptr_nonnull(cs);
    atomic_init(&total, 0);
    /* Nothing submitted: returns at once. */
    ck_assert_int_eq(fut_pool_wait_idle(p), 0);
    for (int i = 0; i < NCHAINS; i++) {
        cs[i].pool = p;
        cs[i].mode = i % 3;
        cs[i].lane = cs[i].mode == 1 ? FUT_LANE_BLOCKING : FUT_LANE_COMPUTE;
        cs[i].hops_left = HOPS - 1;
        cs[i].total = &total;
        atomic_init(&cs[i].hops, 0);
        ck_assert_int_eq(fut_pool_submit(p, cs[i].lane, &cs[i].job, chain_fn), 0);
    }
    ck_assert_int_eq(fut_pool_wait_idle(p), 0);
    /* No other wait: everything must be done now. */
    ck_assert_int_eq(atomic_load(&total), NCHAINS * HOPS);
    for (int i = 0; i < NCHAINS; i++)
        ck_assert_msg(atomic_load(&cs[i].hops) == HOPS, "chain %d ran %d hops", i,
                      atomic_load(&cs[i].hops));
    c_done = tu_stats(p, FUT_LANE_COMPUTE).completed;
    b_done = tu_stats(p, FUT_LANE_BLOCKING).completed;
    ck_assert_uint_eq(c_done + b_done, NCHAINS * HOPS);
    ck_assert_uint_eq(b_done, (NCHAINS / 3) * HOPS + (NCHAINS / 3) * (HOPS / 2));

    /* A second round on the same pool. */
    for (int i = 0; i < NCHAINS; i++) {
        cs[i].hops_left = HOPS - 1;
        ck_assert_int_eq(fut_pool_submit(p, cs[i].lane, &cs[i].job, chain_fn), 0);
    }
    ck_assert_int_eq(fut_pool_wait_idle(p), 0);
    ck_assert_int_eq(atomic_load(&total), 2 * NCHAINS * HOPS);
    ck_assert_int_eq(fut_pool_free(p), 0);
    free(cs);
}
END_TEST

/* ------------------------------------------------------------------------
 * Stats
 * ---------------------------------------------------------------------- */

static bool all_idle(fut_pool *p, int lane)
{
    fut_pool_stats s = tu_stats(p, lane);
    return s.idle == s.threads;
}

#define NSTAT_C 1000
#define NSTAT_B 100

START_TEST(test_stats)
{
    tu_cjob *c = calloc(NSTAT_C + NSTAT_B, sizeof *c);
    fut_pool *p = tu_pool_new(2, 0, 0);
    fut_pool_stats s;
    bool ok;

    ck_assert_ptr_nonnull(c);
    /* A fresh pool: no blocking threads yet, nothing counted. */
    s = tu_stats(p, FUT_LANE_BLOCKING);
    ck_assert_uint_eq(s.threads, 0);
    ck_assert_uint_eq(s.idle, 0);
    ck_assert_uint_eq(s.peak_threads, 0);
    ck_assert_uint_eq(s.queued, 0);
    ck_assert_uint_eq(s.running, 0);
    ck_assert_uint_eq(s.completed, 0);
    ck_assert_uint_eq(s.cancelled, 0);
    s = tu_stats(p, FUT_LANE_COMPUTE);
    ck_assert_uint_eq(s.completed, 0);
    ck_assert_uint_eq(s.queued, 0);

    for (int i = 0; i < NSTAT_C + NSTAT_B; i++) {
        int lane = i < NSTAT_C ? FUT_LANE_COMPUTE : FUT_LANE_BLOCKING;
        tu_cjob_init(&c[i], NULL);
        TU_REQUIRE(fut_pool_submit(p, lane, &c[i].job, tu_cjob_fn) == 0, "submit %d failed", i);
    }
    ck_assert_int_eq(fut_pool_wait_idle(p), 0);
    for (int i = 0; i < NSTAT_C + NSTAT_B; i++)
        TU_REQUIRE(atomic_load(&c[i].ran) == 1 && atomic_load(&c[i].cancelled) == 0 &&
                       atomic_load(&c[i].bad) == 0,
                   "job %d: ran %d cancelled %d bad %d", i, atomic_load(&c[i].ran),
                   atomic_load(&c[i].cancelled), atomic_load(&c[i].bad));

    s = tu_stats(p, FUT_LANE_COMPUTE);
    ck_assert_uint_eq(s.completed, NSTAT_C);
    ck_assert_uint_eq(s.cancelled, 0);
    ck_assert_uint_eq(s.queued, 0);
    ck_assert_uint_eq(s.running, 0);
    ck_assert_uint_eq(s.threads, fut_pool_compute_threads(p));
    ck_assert_uint_eq(s.threads, 2);
    ck_assert_uint_eq(s.peak_threads, 2);
    ck_assert_uint_le(s.idle, s.threads);
    TU_POLL(ok, tu_stats(p, FUT_LANE_COMPUTE).idle == 2, 5000 * TU_SLOW);
    ck_assert_msg(ok, "compute lane: %u of 2 threads idle", tu_stats(p, FUT_LANE_COMPUTE).idle);

    s = tu_stats(p, FUT_LANE_BLOCKING);
    ck_assert_uint_eq(s.completed, NSTAT_B);
    ck_assert_uint_eq(s.cancelled, 0);
    ck_assert_uint_eq(s.queued, 0);
    ck_assert_uint_eq(s.running, 0);
    ck_assert_uint_ge(s.threads, 1); /* idle time is 10 s: none retired yet */
    ck_assert_uint_le(s.threads, 64);
    ck_assert_uint_ge(s.peak_threads, s.threads);
    ck_assert_uint_le(s.peak_threads, 64);
    TU_POLL(ok, all_idle(p, FUT_LANE_BLOCKING), 5000 * TU_SLOW);
    s = tu_stats(p, FUT_LANE_BLOCKING);
    ck_assert_msg(ok, "blocking lane: %u of %u threads idle", s.idle, s.threads);

    /* Stats of both lanes stay exact over a second round. */
    for (int i = 0; i < NSTAT_C + NSTAT_B; i++) {
        int lane = i < NSTAT_C ? FUT_LANE_COMPUTE : FUT_LANE_BLOCKING;
        TU_REQUIRE(fut_pool_submit(p, lane, &c[i].job, tu_cjob_fn) == 0, "resubmit %d failed", i);
    }
    ck_assert_int_eq(fut_pool_wait_idle(p), 0);
    ck_assert_uint_eq(tu_stats(p, FUT_LANE_COMPUTE).completed, 2 * NSTAT_C);
    ck_assert_uint_eq(tu_stats(p, FUT_LANE_BLOCKING).completed, 2 * NSTAT_B);
    for (int i = 0; i < NSTAT_C + NSTAT_B; i++)
        TU_REQUIRE(atomic_load(&c[i].ran) == 2, "job %d ran %d times in two rounds", i,
                   atomic_load(&c[i].ran));

    ck_assert_int_eq(fut_pool_free(p), 0);
    free(c);
}
END_TEST

static Suite *pool_basic_suite(void)
{
    Suite *s = suite_create("pool_basic");
    TCase *tc;

    tc = tu_tcase(s, "api", 60);
    tcase_add_test(tc, test_version);
    tcase_add_test(tc, test_options_defaults);
    tcase_add_test(tc, test_compute_threads);

    tc = tu_tcase(s, "run", 60);
    tcase_add_loop_test(tc, test_submit_runs_on_lane, FUT_LANE_COMPUTE, FUT_LANE_BLOCKING + 1);
    tcase_add_loop_test(tc, test_free_in_fn, FUT_LANE_COMPUTE, FUT_LANE_BLOCKING + 1);
    tcase_add_loop_test(tc, test_nested_submit, 0, 4);
    tcase_add_test(tc, test_wait_idle_nested);

    tc = tu_tcase(s, "stats", 60);
    tcase_add_test(tc, test_stats);
    return s;
}

int main(void)
{
    return tu_run_suite(pool_basic_suite());
}
