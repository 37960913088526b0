/* test_pool_fork.c - fork(): in the child the parent's pool fails fast with FUT_EFORKED and frees without hanging, a new pool works there, and the parent's pool keeps working. */
#include "testutil.h"

#include <sys/mman.h>
#include <sys/wait.h>

#if TU_TSAN
/* The child starts a new pool (threads) after a multi-threaded fork;
 * ThreadSanitizer kills such a child unless told not to. */
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
    return "die_after_fork=0";
}
#endif

/* ------------------------------------------------------------------------
 * Child side. The child reports by exit status: 0, or the number of the
 * step that failed. It writes the step it is in to shared memory, so the
 * parent can say where a hung child was.
 * ---------------------------------------------------------------------- */

enum {
    STEP_START = 1,
    STEP_SUBMIT_COMPUTE,   /* submit on the parent's pool, compute lane */
    STEP_SUBMIT_BLOCKING,  /* submit on the parent's pool, blocking lane */
    STEP_WAIT_IDLE,        /* wait_idle on the parent's pool */
    STEP_STATS,            /* stats of the parent's pool */
    STEP_SHUTDOWN,         /* shutdown on the parent's pool */
    STEP_FREE,             /* free the parent's pool */
    STEP_NOT_CALLED,       /* no callback of the parent's pool ran in the child */
    STEP_NEW_POOL,         /* create a pool in the child */
    STEP_NEW_SUBMIT,       /* submit to it */
    STEP_NEW_WAIT,         /* wait_idle on it */
    STEP_NEW_COUNTS,       /* every job ran once */
    STEP_NEW_FREE,         /* free it */
    STEP_DONE
};

static const char *const step_names[] = {
    [STEP_START] = "start",
    [STEP_SUBMIT_COMPUTE] = "fut_pool_submit(compute) on the parent's pool must return FUT_EFORKED",
    [STEP_SUBMIT_BLOCKING] = "fut_pool_submit(blocking) on the parent's pool must return FUT_EFORKED",
    [STEP_WAIT_IDLE] = "fut_pool_wait_idle on the parent's pool must return FUT_EFORKED",
    [STEP_STATS] = "fut_pool_stats_get on the parent's pool must return FUT_EFORKED",
    [STEP_SHUTDOWN] = "fut_pool_shutdown on the parent's pool must return FUT_EFORKED",
    [STEP_FREE] = "fut_pool_free on the parent's pool must return 0",
    [STEP_NOT_CALLED] = "no callback of the parent's jobs may run in the child",
    [STEP_NEW_POOL] = "fut_pool_new in the child",
    [STEP_NEW_SUBMIT] = "fut_pool_submit on the child's pool",
    [STEP_NEW_WAIT] = "fut_pool_wait_idle on the child's pool",
    [STEP_NEW_COUNTS] = "every job of the child's pool ran exactly once",
    [STEP_NEW_FREE] = "fut_pool_free on the child's pool",
    [STEP_DONE] = "done",
};

static volatile int *child_step; /* MAP_SHARED: the child's progress */

#define CHILD_STEP(s) (*child_step = (s))
#define CHILD_CHECK(s, cond)          \
    do {                              \
        CHILD_STEP(s);                \
        if (!(cond))                  \
            _exit(s);                 \
    } while (0)

#define CHILD_JOBS 64

/* A new pool made in the child runs jobs on both lanes. */
static void child_new_pool(void)
{
    tu_cjob jobs[CHILD_JOBS];
    fut_pool_options o;
    fut_pool *np;

    fut_pool_options_init(&o);
    o.compute_threads = 2;
    o.blocking_max = 4;
    np = fut_pool_new(&o);
    CHILD_CHECK(STEP_NEW_POOL, np != NULL);
    for (int i = 0; i < CHILD_JOBS; i++) {
        tu_cjob_init(&jobs[i], NULL);
        CHILD_CHECK(STEP_NEW_SUBMIT, fut_pool_submit(np, i % 2, &jobs[i].job, tu_cjob_fn) == 0);
    }
    CHILD_CHECK(STEP_NEW_WAIT, fut_pool_wait_idle(np) == 0);
    for (int i = 0; i < CHILD_JOBS; i++)
        CHILD_CHECK(STEP_NEW_COUNTS, atomic_load(&jobs[i].ran) == 1 &&
                                         atomic_load(&jobs[i].cancelled) == 0);
    {
        fut_pool_stats s;
        CHILD_CHECK(STEP_NEW_COUNTS, fut_pool_stats_get(np, FUT_LANE_COMPUTE, &s) == 0 &&
                                         s.completed == CHILD_JOBS / 2);
    }
    CHILD_CHECK(STEP_NEW_FREE, fut_pool_free(np) == 0);
}

/* Everything a child does with the parent's pool p. watched: jobs of the
 * parent (queued or not) whose callbacks must not run in the child. */
static void child_main(fut_pool *p, tu_cjob *watched, unsigned nwatched)
{
    tu_cjob c;

    CHILD_STEP(STEP_START);
    tu_cjob_init(&c, NULL);
    CHILD_CHECK(STEP_SUBMIT_COMPUTE, fut_pool_submit(p, FUT_LANE_COMPUTE, &c.job, tu_cjob_fn) == FUT_EFORKED);
    CHILD_CHECK(STEP_SUBMIT_BLOCKING, fut_pool_submit(p, FUT_LANE_BLOCKING, &c.job, tu_cjob_fn) == FUT_EFORKED);
    CHILD_CHECK(STEP_WAIT_IDLE, fut_pool_wait_idle(p) == FUT_EFORKED);
    {
        fut_pool_stats st;
        CHILD_CHECK(STEP_STATS, fut_pool_stats_get(p, FUT_LANE_COMPUTE, &st) == FUT_EFORKED);
        CHILD_CHECK(STEP_STATS, fut_pool_stats_get(p, FUT_LANE_BLOCKING, &st) == FUT_EFORKED);
    }
    CHILD_CHECK(STEP_SHUTDOWN, fut_pool_shutdown(p, FUT_POOL_CANCEL) == FUT_EFORKED);
    CHILD_CHECK(STEP_SHUTDOWN, fut_pool_shutdown(p, FUT_POOL_DRAIN) == FUT_EFORKED);
    CHILD_CHECK(STEP_FREE, fut_pool_free(p) == 0);
    CHILD_CHECK(STEP_NOT_CALLED, atomic_load(&c.ran) + atomic_load(&c.cancelled) + atomic_load(&c.bad) == 0);
    for (unsigned i = 0; i < nwatched; i++)
        CHILD_CHECK(STEP_NOT_CALLED, atomic_load(&watched[i].ran) + atomic_load(&watched[i].cancelled) +
                                         atomic_load(&watched[i].bad) == 0);
    child_new_pool();
    CHILD_STEP(STEP_DONE);
    _exit(0);
}

/* ------------------------------------------------------------------------
 * Parent side
 * ---------------------------------------------------------------------- */

static void map_step(void)
{
    void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert_msg(m != MAP_FAILED, "mmap: %s", strerror(errno));
    child_step = m;
    *child_step = 0;
}

static void unmap_step(void)
{
    munmap((void *)child_step, 4096);
    child_step = NULL;
}

static const char *step_name(int s)
{
    if (s > 0 && s < (int)TU_ARRAY_LEN(step_names) && step_names[s])
        return step_names[s];
    return "?";
}

/* Wait for the child with a bound; a hung child is killed and reported
 * with the step it hung in. */
static void expect_child_ok(pid_t pid, const char *what)
{
    uint64_t end = tu_deadline_ms(TU_WAIT_MS);
    int status = 0;
    pid_t r;

    for (;;) {
        r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        ck_assert_msg(r == 0, "%s: waitpid: %s", what, strerror(errno));
        if (tu_now_ns() > end) {
            int s = *child_step;
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            ck_abort_msg("%s: child hung at step %d (%s)", what, s, step_name(s));
        }
        tu_sleep_ms(1);
    }
    if (WIFSIGNALED(status))
        ck_abort_msg("%s: child killed by signal %d (%s) at step %d (%s)", what, WTERMSIG(status),
                     strsignal(WTERMSIG(status)), *child_step, step_name(*child_step));
    ck_assert_msg(WIFEXITED(status), "%s: child status %#x", what, status);
    ck_assert_msg(WEXITSTATUS(status) == 0, "%s: child failed at step %d: %s", what,
                  WEXITSTATUS(status), step_name(WEXITSTATUS(status)));
}

/* Every thread of p's lanes is parked, and none is starting. */
static bool parked(fut_pool *p)
{
    fut_pool_stats c, b;
    if (fut_pool_stats_get(p, FUT_LANE_COMPUTE, &c) != 0 ||
        fut_pool_stats_get(p, FUT_LANE_BLOCKING, &b) != 0)
        return false;
    return c.idle == c.threads && c.threads == fut_pool_compute_threads(p) &&
           b.idle == b.threads && b.threads == b.peak_threads;
}

/* The parent's pool p works: jobs on both lanes run once. */
static void parent_pool_works(fut_pool *p)
{
    tu_cjob jobs[CHILD_JOBS];
    uint64_t c0 = tu_stats(p, FUT_LANE_COMPUTE).completed;
    uint64_t b0 = tu_stats(p, FUT_LANE_BLOCKING).completed;

    for (int i = 0; i < CHILD_JOBS; i++) {
        tu_cjob_init(&jobs[i], NULL);
        ck_assert_int_eq(fut_pool_submit(p, i % 2, &jobs[i].job, tu_cjob_fn), 0);
    }
    ck_assert_int_eq(fut_pool_wait_idle(p), 0);
    for (int i = 0; i < CHILD_JOBS; i++)
        ck_assert_int_eq(atomic_load(&jobs[i].ran), 1);
    ck_assert_uint_eq(tu_stats(p, FUT_LANE_COMPUTE).completed - c0, CHILD_JOBS / 2);
    ck_assert_uint_eq(tu_stats(p, FUT_LANE_BLOCKING).completed - b0, CHILD_JOBS / 2);
}

/* Wait until every thread of p is parked: no pool thread is still starting
 * (a starting thread allocates) when the test forks. Needed by the ASan
 * build: GCC 12's ASan runtime does not lock its allocator around fork(),
 * so a thread that allocates at that moment leaves the child's allocator
 * locked and the child hangs in its next malloc or pthread_create (glibc's
 * malloc has fork handlers; real programs are not affected). For the same
 * reason no test thread allocates while another forks. */
static void settle(fut_pool *p)
{
    bool ok;
    TU_POLL(ok, parked(p), 5000 * TU_SLOW);
    ck_assert_msg(ok, "pool threads never all parked");
}

/* An idle pool with live threads on both lanes. */
START_TEST(test_fork_idle_pool)
{
    fut_pool *p = tu_pool_new(2, 4, 0);
    pid_t pid;

    map_step();
    parent_pool_works(p); /* both lanes have threads now */
    settle(p);
    fflush(NULL);
    pid = fork();
    ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0)
        child_main(p, NULL, 0);
    expect_child_ok(pid, "idle pool");
    parent_pool_works(p);
    ck_assert_int_eq(fut_pool_free(p), 0);
    unmap_step();
}
END_TEST

/* A pool that was never used (no blocking threads yet). */
START_TEST(test_fork_fresh_pool)
{
    fut_pool *p = tu_pool_new(1, 2, 0);
    pid_t pid;

    map_step();
    settle(p);
    fflush(NULL);
    pid = fork();
    ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0)
        child_main(p, NULL, 0);
    expect_child_ok(pid, "fresh pool");
    parent_pool_works(p);
    ck_assert_int_eq(fut_pool_free(p), 0);
    unmap_step();
}
END_TEST

/* ------------------------------------------------------------------------
 * Fork while the pool is busy: both lanes held by gate jobs with jobs
 * queued behind them. The child frees the pool without running or
 * notifying them; in the parent each still runs exactly once.
 * ---------------------------------------------------------------------- */

typedef struct held {
    fut_pool_job job;
    tu_gate *gate;
    atomic_int ran;
    atomic_int started;
} held;

static void held_fn(fut_pool_job *job, int status)
{
    held *h = TU_CONTAINER_OF(job, held, job);
    TU_WCHECK_EQ(status, 0);
    atomic_store(&h->started, 1);
    tu_gate_wait(h->gate, TU_WAIT_MS);
    atomic_fetch_add(&h->ran, 1);
}

#define QUEUED 1000

START_TEST(test_fork_busy_pool)
{
    fut_pool *p = tu_pool_new(1, 1, 0);
    tu_gate gate;
    held h[2];
    tu_cjob *q = calloc(QUEUED, sizeof *q);
    pid_t pid;
    bool ok;

    ck_assert_ptr_nonnull(q);
    map_step();
    tu_gate_init(&gate);
    memset(h, 0, sizeof h);
    for (int lane = 0; lane < 2; lane++) {
        h[lane].gate = &gate;
        ck_assert_int_eq(fut_pool_submit(p, lane, &h[lane].job, held_fn), 0);
        TU_POLL(ok, atomic_load(&h[lane].started) == 1, TU_WAIT_MS);
        ck_assert_msg(ok, "gate job on the %s lane never started", tu_lane_name(lane));
    }
    for (int i = 0; i < QUEUED; i++) {
        tu_cjob_init(&q[i], NULL);
        TU_REQUIRE(fut_pool_submit(p, i % 2, &q[i].job, tu_cjob_fn) == 0, "submit %d failed", i);
    }
    fflush(NULL);
    pid = fork();
    ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0)
        child_main(p, q, QUEUED);
    expect_child_ok(pid, "busy pool");

    /* The parent: nothing was lost or run twice. */
    tu_gate_open(&gate);
    ck_assert_int_eq(fut_pool_wait_idle(p), 0);
    for (int lane = 0; lane < 2; lane++)
        ck_assert_int_eq(atomic_load(&h[lane].ran), 1);
    for (int i = 0; i < QUEUED; i++)
        TU_REQUIRE(atomic_load(&q[i].ran) == 1 && atomic_load(&q[i].cancelled) + atomic_load(&q[i].bad) == 0,
                   "queued job %d: ran %d cancelled %d bad %d", i, atomic_load(&q[i].ran),
                   atomic_load(&q[i].cancelled), atomic_load(&q[i].bad));
    parent_pool_works(p);
    ck_assert_int_eq(fut_pool_free(p), 0);
    tu_gate_destroy(&gate);
    free(q);
    unmap_step();
}
END_TEST

/* ------------------------------------------------------------------------
 * Fork again and again while another thread keeps submitting to both
 * lanes (pool locks are taken and released all the time): no child hangs
 * or fails, and in the parent every job runs exactly once.
 * ---------------------------------------------------------------------- */

#define FORKS 20

#define RING 4096

typedef struct hjob {
    fut_pool_job job;
    atomic_int busy;      /* submitted, fn not yet called */
    atomic_ulong *ran;
} hjob;

static void hjob_fn(fut_pool_job *job, int status)
{
    hjob *j = TU_CONTAINER_OF(job, hjob, job);
    TU_WCHECK_EQ(status, 0);
    atomic_fetch_add(j->ran, 1);
    atomic_store(&j->busy, 0);
}

/* Submits from a ring of preallocated jobs (no malloc: see settle) until
 * told to stop; a job is reused once its fn has run. */
typedef struct hammer {
    fut_pool *pool;
    hjob *ring;           /* RING jobs */
    atomic_int stop;
    atomic_ulong submitted;
    atomic_ulong ran;
    int bad_rc;
} hammer;

static void *hammer_main(void *arg)
{
    hammer *h = arg;
    unsigned long i = 0;
    while (!atomic_load(&h->stop)) {
        hjob *j = &h->ring[i % RING];
        int rc;
        if (atomic_load(&j->busy)) {
            sched_yield(); /* the pool is behind: let it catch up */
            continue;
        }
        atomic_store(&j->busy, 1);
        j->ran = &h->ran;
        rc = fut_pool_submit(h->pool, i % 8 == 0 ? FUT_LANE_BLOCKING : FUT_LANE_COMPUTE, &j->job, hjob_fn);
        if (rc != 0) {
            h->bad_rc = rc;
            break;
        }
        atomic_fetch_add(&h->submitted, 1);
        if (++i % 64 == 0)
            sched_yield();
    }
    return NULL;
}

/* Starts all cap blocking threads of p and lets them park, so that the
 * hammer's blocking submits never start (allocate) a thread. */
static void fill_blocking_lane(fut_pool *p, unsigned cap)
{
    tu_gate gate;
    held *h = calloc(cap, sizeof *h);
    bool ok;

    ck_assert_ptr_nonnull(h);
    tu_gate_init(&gate);
    for (unsigned k = 0; k < cap; k++) {
        h[k].gate = &gate;
        ck_assert_int_eq(fut_pool_submit(p, FUT_LANE_BLOCKING, &h[k].job, held_fn), 0);
    }
    TU_POLL(ok, tu_stats(p, FUT_LANE_BLOCKING).threads == cap, TU_WAIT_MS);
    ck_assert_msg(ok, "blocking lane never reached %u threads", cap);
    tu_gate_open(&gate);
    ck_assert_int_eq(fut_pool_wait_idle(p), 0);
    settle(p);
    tu_gate_destroy(&gate);
    free(h);
}

START_TEST(test_fork_while_submitting)
{
    fut_pool *p = tu_pool_new(2, 4, 0);
    hammer h;
    pthread_t th;

    map_step();
    fill_blocking_lane(p, 4);
    memset(&h, 0, sizeof h);
    h.pool = p;
    h.ring = calloc(RING, sizeof *h.ring);
    ck_assert_ptr_nonnull(h.ring);
    ck_assert_int_eq(pthread_create(&th, NULL, hammer_main, &h), 0);
    for (int k = 0; k < FORKS; k++) {
        pid_t pid;
        char what[32];
        tu_sleep_ms(2);
        *child_step = 0;
        fflush(NULL);
        pid = fork();
        ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0)
            child_main(p, NULL, 0);
        snprintf(what, sizeof what, "fork %d while submitting", k);
        expect_child_ok(pid, what);
    }
    atomic_store(&h.stop, 1);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(h.bad_rc, 0);
    ck_assert_int_eq(fut_pool_wait_idle(p), 0);
    ck_assert_uint_eq(atomic_load(&h.ran), atomic_load(&h.submitted));
    ck_assert_uint_gt(atomic_load(&h.submitted), 0);
    parent_pool_works(p);
    ck_assert_int_eq(fut_pool_free(p), 0);
    free(h.ring);
    unmap_step();
}
END_TEST

/* A pool made in the child of a fork is a normal pool in that child, and
 * a grandchild sees it as forked. */
START_TEST(test_fork_twice)
{
    pid_t pid;

    map_step();
    fflush(NULL);
    pid = fork();
    ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        /* The child: make a pool, use it, fork again. */
        fut_pool *p;
        pid_t gpid;
        int status = 0;
        tu_cjob c;

        p = fut_pool_new(NULL);
        CHILD_CHECK(STEP_NEW_POOL, p != NULL);
        tu_cjob_init(&c, NULL);
        CHILD_CHECK(STEP_NEW_SUBMIT, fut_pool_submit(p, FUT_LANE_BLOCKING, &c.job, tu_cjob_fn) == 0);
        CHILD_CHECK(STEP_NEW_WAIT, fut_pool_wait_idle(p) == 0);
        {
            bool ok;
            TU_POLL(ok, parked(p), 5000 * TU_SLOW); /* see settle */
            (void)ok;
        }
        gpid = fork();
        if (gpid < 0)
            _exit(100);
        if (gpid == 0)
            child_main(p, NULL, 0);
        if (waitpid(gpid, &status, 0) != gpid || !WIFEXITED(status))
            _exit(101);
        if (WEXITSTATUS(status) != 0)
            _exit(WEXITSTATUS(status));
        CHILD_CHECK(STEP_NEW_COUNTS, atomic_load(&c.ran) == 1);
        CHILD_CHECK(STEP_NEW_FREE, fut_pool_free(p) == 0);
        _exit(0);
    }
    expect_child_ok(pid, "fork twice");
    unmap_step();
}
END_TEST

static Suite *pool_fork_suite(void)
{
    Suite *s = suite_create("pool_fork");
    TCase *tc;

    tc = tu_tcase(s, "fork", 60);
    tcase_add_test(tc, test_fork_idle_pool);
    tcase_add_test(tc, test_fork_fresh_pool);
    tcase_add_test(tc, test_fork_busy_pool);
    tcase_add_test(tc, test_fork_while_submitting);
    tcase_add_test(tc, test_fork_twice);
    return s;
}

int main(void)
{
    return tu_run_suite(pool_fork_suite());
}
