/* test_signal_storm.c - SIGALRM every 100 us, installed without SA_RESTART, for FUT_STORM_SECONDS seconds (default 2) while the main thread runs a workload in a loop on a runtime and on the default runtime, and does the waiting: work on both lanes, sleeps (never early), fut_wait with timeouts (0 or ETIMEDOUT only, ETIMEDOUT only once the time has passed), promises settled from another thread, continuations (each exactly once), gathers, timeouts, coroutines with fut_await and fut_yield, fut_run, fut_await outside a coroutine and fut_pool_wait_idle. No call may return EINTR, every value must arrive, the handler must have run thousands of times (most of them during the library's waits), and at the end nothing is live. */
#include "testutil.h"

#include <sys/time.h>

/* ------------------------------------------------------------------------
 * The storm
 * ---------------------------------------------------------------------- */

#define STORM_INTERVAL_US 100

static volatile sig_atomic_t g_signals;

static void on_alarm(int sig)
{
    (void)sig;
    g_signals = g_signals + 1;
}

static double storm_seconds(void)
{
    const char *s = getenv("FUT_STORM_SECONDS");
    char *end;
    double v;

    if (s == NULL || *s == '\0')
        return 2.0;
    v = strtod(s, &end);
    if (*end != '\0' || !(v > 0) || v > 3600)
        return 2.0;
    return v;
}

/* The fewest signals per second of storm the handler must see. With a
 * 100 us interval the kernel sends up to 10,000 a second (one is dropped
 * while another is still pending). Measured on a 2-core VM: 7,400 to
 * 9,600 a second in every build (gcc, ucontext, ASan, TSan), 5,700 under
 * TSan with both cores busy with other tests. */
#define MIN_SIGNALS_PER_S 1000

static struct sigaction g_old_action;

static void storm_start(void)
{
    struct sigaction sa;
    struct itimerval it;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: interrupted system calls fail with EINTR */
    ck_assert_int_eq(sigaction(SIGALRM, &sa, &g_old_action), 0);
    memset(&it, 0, sizeof it);
    it.it_interval.tv_usec = STORM_INTERVAL_US;
    it.it_value.tv_usec = STORM_INTERVAL_US;
    ck_assert_int_eq(setitimer(ITIMER_REAL, &it, NULL), 0);
}

static void storm_stop(void)
{
    struct itimerval it;

    memset(&it, 0, sizeof it);
    ck_assert_int_eq(setitimer(ITIMER_REAL, &it, NULL), 0);
    ck_assert_int_eq(sigaction(SIGALRM, &g_old_action, NULL), 0);
}

/* ------------------------------------------------------------------------
 * Checks during the storm. Check's own assertions write to the runner
 * (and stdio does not retry a write that a signal interrupted), so while
 * the storm blows nothing calls them: failures are recorded with
 * tu_wfail and asserted after the timer has stopped.
 * ---------------------------------------------------------------------- */

static atomic_long g_eintr; /* calls that returned EINTR */

#define S_CHECK(cond, ...)                                   \
    do {                                                     \
        if (!(cond))                                         \
            tu_wfail(__FILE__, __LINE__, __VA_ARGS__);       \
    } while (0)

/* A call's return code must be want. */
#define S_RC(call, want)                                                         \
    do {                                                                         \
        int s_rc_ = (call), s_want_ = (want);                                    \
        if (s_rc_ == EINTR)                                                      \
            atomic_fetch_add(&g_eintr, 1);                                       \
        S_CHECK(s_rc_ == s_want_, "%s returned %d (%s), expected %d", #call, s_rc_, \
                strerror(s_rc_), s_want_);                                       \
    } while (0)

/* Signals that arrived while the main thread was inside a library call
 * that waits (fut_wait, fut_run, fut_await, fut_pool_wait_idle). */
static long g_signals_in_waits;

/* Wait for f without a limit; must return 0. */
static void s_wait(fut_future *f, const char *what)
{
    long before = g_signals;
    int rc = fut_wait(f, -1);

    g_signals_in_waits += g_signals - before;
    if (rc == EINTR)
        atomic_fetch_add(&g_eintr, 1);
    S_CHECK(rc == 0, "fut_wait(%s, -1) returned %d (%s)", what, rc, strerror(rc));
    S_CHECK(fut_state(f) != FUT_PENDING, "fut_wait(%s, -1) returned 0, the future is pending", what);
}

/* fut_wait(f, timeout): 0 (then f has settled) or ETIMEDOUT (then the time
 * has passed), nothing else. Returns the code. */
static int s_wait_for(fut_future *f, double timeout_s, const char *what)
{
    long before = g_signals;
    uint64_t t0 = tu_now_ns(), took;
    int rc = fut_wait(f, timeout_s);

    took = tu_now_ns() - t0;
    g_signals_in_waits += g_signals - before;
    if (rc == EINTR)
        atomic_fetch_add(&g_eintr, 1);
    S_CHECK(rc == 0 || rc == ETIMEDOUT, "fut_wait(%s, %g) returned %d (%s)", what, timeout_s, rc,
            strerror(rc));
    if (rc == 0)
        S_CHECK(fut_state(f) != FUT_PENDING, "fut_wait(%s, %g) returned 0, the future is pending",
                what, timeout_s);
    if (rc == ETIMEDOUT)
        S_CHECK(took >= (uint64_t)(timeout_s * 1e9),
                "fut_wait(%s, %g) returned ETIMEDOUT after %llu ns only", what, timeout_s,
                (unsigned long long)took);
    return rc;
}

#define S_RESOLVED(f, v)                                                                   \
    do {                                                                                   \
        fut_future *s_f_ = (f);                                                            \
        void *s_v_ = (v);                                                                  \
        S_CHECK(fut_state(s_f_) == FUT_RESOLVED && fut_value(s_f_) == s_v_,                \
                "%s: state %d value %p error %d (%s), expected resolved with %p", #f,      \
                fut_state(s_f_), fut_value(s_f_), fut_error(s_f_), fut_message(s_f_), s_v_); \
    } while (0)

/* ------------------------------------------------------------------------
 * A thread of the test that settles promises after a short delay. It
 * runs with SIGALRM blocked, so that every signal lands on the main
 * thread, which does the waiting.
 * ---------------------------------------------------------------------- */

#define SETTLER_QUEUE 64

struct settle_req {
    fut_promise *p;
    void *value;
    unsigned delay_us;
};

static struct settler {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct settle_req q[SETTLER_QUEUE];
    unsigned head, tail;
    bool stop;
    pthread_t thread;
} g_settler;

static void *settler_main(void *arg)
{
    struct settler *s = arg;

    pthread_mutex_lock(&s->lock);
    for (;;) {
        struct settle_req r;
        while (s->head == s->tail && !s->stop)
            pthread_cond_wait(&s->cond, &s->lock);
        if (s->head == s->tail)
            break;
        r = s->q[s->head % SETTLER_QUEUE];
        s->head++;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
        if (r.delay_us != 0) {
            struct timespec ts = { 0, (long)r.delay_us * 1000L };
            while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
            }
        }
        TU_WCHECK_EQ(fut_promise_resolve(r.p, r.value), 0);
        fut_promise_free(r.p);
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static void settler_start(void)
{
    sigset_t set, old;

    pthread_mutex_init(&g_settler.lock, NULL);
    pthread_cond_init(&g_settler.cond, NULL);
    g_settler.head = g_settler.tail = 0;
    g_settler.stop = false;
    /* Born with SIGALRM blocked: not a signal may land there. */
    sigemptyset(&set);
    sigaddset(&set, SIGALRM);
    ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, &set, &old), 0);
    ck_assert_int_eq(pthread_create(&g_settler.thread, NULL, settler_main, &g_settler), 0);
    ck_assert_int_eq(pthread_sigmask(SIG_SETMASK, &old, NULL), 0);
}

/* Hand p over (the settler resolves it with value, then frees it). Any
 * thread, coroutines included (the lock is held for a moment only). */
static void settle_later(fut_promise *p, void *value, unsigned delay_us)
{
    pthread_mutex_lock(&g_settler.lock);
    while (g_settler.tail - g_settler.head == SETTLER_QUEUE)
        pthread_cond_wait(&g_settler.cond, &g_settler.lock);
    g_settler.q[g_settler.tail % SETTLER_QUEUE] = (struct settle_req){ p, value, delay_us };
    g_settler.tail++;
    pthread_cond_broadcast(&g_settler.cond);
    pthread_mutex_unlock(&g_settler.lock);
}

static void settler_stop(void)
{
    pthread_mutex_lock(&g_settler.lock);
    g_settler.stop = true;
    pthread_cond_broadcast(&g_settler.cond);
    pthread_mutex_unlock(&g_settler.lock);
    ck_assert_int_eq(pthread_join(g_settler.thread, NULL), 0);
    pthread_cond_destroy(&g_settler.cond);
    pthread_mutex_destroy(&g_settler.lock);
}

/* ------------------------------------------------------------------------
 * The workload
 * ---------------------------------------------------------------------- */

/* Continuations made and run, by kind: each must run exactly once. */
static atomic_long g_then_made, g_then_ran, g_finally_made, g_finally_ran, g_catch_ran;

struct round {
    atomic_int then_runs, catch_runs, finally_runs;
};

static void *square(void *arg)
{
    uintptr_t n = TU_UINT(arg);
    return TU_PTR(n * n);
}

static void *then_plus1(void *v, void *arg)
{
    struct round *r = arg;
    atomic_fetch_add(&r->then_runs, 1);
    atomic_fetch_add(&g_then_ran, 1);
    return TU_PTR(TU_UINT(v) + 1);
}

static void *catch_never(int code, const char *msg, void *arg)
{
    struct round *r = arg;
    (void)code;
    (void)msg;
    atomic_fetch_add(&r->catch_runs, 1);
    atomic_fetch_add(&g_catch_ran, 1);
    return NULL;
}

static void finally_count(fut_future *f, void *arg)
{
    struct round *r = arg;
    TU_WCHECK(fut_state(f) != FUT_PENDING);
    atomic_fetch_add(&r->finally_runs, 1);
    atomic_fetch_add(&g_finally_ran, 1);
}

struct coro_arg {
    fut_runtime *rt;
    unsigned n;
};

/* yield, await a sleep, work and a promise the settler thread resolves;
 * returns n*n + n + 1. */
static void *coro_fn(void *arg)
{
    struct coro_arg *a = arg;
    fut_future *s, *w, *pf;
    fut_promise *p;
    int err = -1;
    void *v, *pv;

    TU_WCHECK(fut_in_coroutine());
    TU_WCHECK_EQ(fut_yield(), 0);
    s = fut_sleep(a->rt, 0.0002);
    fut_await(s, &err);
    TU_WCHECK_EQ(err, 0);
    fut_release(s);
    w = fut_submit(a->rt, square, TU_PTR(a->n));
    v = fut_await(w, &err);
    TU_WCHECK_EQ(err, 0);
    fut_release(w);
    TU_WCHECK_EQ(fut_yield(), 0);
    p = fut_promise_new(a->rt);
    TU_WCHECK(p != NULL);
    if (p == NULL)
        return NULL;
    pf = fut_promise_future(p);
    settle_later(p, TU_PTR(a->n + 1), 0);
    pv = fut_await(pf, &err);
    TU_WCHECK_EQ(err, 0);
    fut_release(pf);
    return TU_PTR(TU_UINT(v) + TU_UINT(pv));
}

static void *coro_result(unsigned n)
{
    return TU_PTR((uintptr_t)n * n + n + 1);
}

struct stats {
    unsigned long rounds, sleeps, timeouts_seen, waits;
};

#define GATHER_N 4
#define POOL_JOBS 16

static void one_round(fut_runtime *rt, unsigned n, tu_rng *rng, struct stats *st)
{
    struct round r;
    fut_future *f1, *f2, *t1, *c2, *fi2, *s, *pf, *c, *fs[GATHER_N], *g, *slow, *tmo, *w, *ok, *a;
    fut_promise *p;
    struct coro_arg ca = { rt, n };
    uint64_t t0;
    unsigned us;
    void *v;
    int err, rc;

    memset(&r, 0, sizeof r);
    st->rounds++;

    /* Work on both lanes, with continuations. */
    f1 = fut_submit(rt, square, TU_PTR(n));
    f2 = fut_submit_blocking(rt, square, TU_PTR(n + 1));
    t1 = fut_then(f1, then_plus1, &r);
    c2 = fut_catch(f2, catch_never, &r);
    fi2 = fut_finally(f2, finally_count, &r);
    atomic_fetch_add(&g_then_made, 1);
    atomic_fetch_add(&g_finally_made, 1);
    S_CHECK(f1 && f2 && t1 && c2 && fi2, "round %u: a call returned NULL", n);
    if (!(f1 && f2 && t1 && c2 && fi2))
        return;
    s_wait(t1, "then");
    s_wait(c2, "catch");
    s_wait(fi2, "finally");
    S_RESOLVED(f1, TU_PTR((uintptr_t)n * n));
    S_RESOLVED(f2, TU_PTR((uintptr_t)(n + 1) * (n + 1)));
    S_RESOLVED(t1, TU_PTR((uintptr_t)n * n + 1));
    S_RESOLVED(c2, TU_PTR((uintptr_t)(n + 1) * (n + 1)));
    S_RESOLVED(fi2, TU_PTR((uintptr_t)(n + 1) * (n + 1)));
    S_CHECK(atomic_load(&r.then_runs) == 1 && atomic_load(&r.catch_runs) == 0 &&
                atomic_load(&r.finally_runs) == 1,
            "round %u: continuations ran then %d catch %d finally %d times", n,
            atomic_load(&r.then_runs), atomic_load(&r.catch_runs), atomic_load(&r.finally_runs));
    fut_release(f1);
    fut_release(f2);
    fut_release(t1);
    fut_release(c2);
    fut_release(fi2);

    /* A sleep is never early. */
    us = tu_rng_upto(rng, 2000);
    t0 = tu_now_ns();
    s = fut_sleep(rt, us / 1e6);
    S_CHECK(s != NULL, "fut_sleep returned NULL");
    if (s != NULL) {
        s_wait(s, "sleep");
        S_CHECK(tu_now_ns() - t0 >= (uint64_t)us * 1000u, "a sleep of %u us settled after %llu ns",
                us, (unsigned long long)(tu_now_ns() - t0));
        S_RESOLVED(s, NULL);
        fut_release(s);
        st->sleeps++;
    }

    /* fut_wait with timeouts on a promise nobody settles yet, then
     * settled by the settler thread after a while, a continuation on it. */
    p = fut_promise_new(rt);
    S_CHECK(p != NULL, "fut_promise_new returned NULL");
    if (p == NULL)
        return;
    pf = fut_promise_future(p);
    c = fut_then(pf, then_plus1, &r);
    atomic_fetch_add(&g_then_made, 1);
    S_RC(s_wait_for(pf, 0, "pending promise"), ETIMEDOUT);
    S_RC(s_wait_for(pf, tu_rng_upto(rng, 3000) / 1e6, "pending promise"), ETIMEDOUT);
    settle_later(p, TU_PTR(n), tu_rng_upto(rng, 1000));
    t0 = tu_now_ns();
    while ((rc = s_wait_for(c, 0.0003, "continuation of a promise")) == ETIMEDOUT) {
        st->timeouts_seen++;
        if (tu_now_ns() - t0 > (uint64_t)TU_WAIT_MS * 1000000u) {
            tu_wfail(__FILE__, __LINE__, "round %u: the promise's continuation never settled", n);
            break;
        }
    }
    st->waits++;
    S_RESOLVED(pf, TU_PTR(n));
    S_RESOLVED(c, TU_PTR((uintptr_t)n + 1));
    S_CHECK(atomic_load(&r.then_runs) == 2, "round %u: the promise's continuation ran %d times", n,
            atomic_load(&r.then_runs) - 1);
    fut_release(c);
    fut_release(pf);

    /* A gather of work. */
    for (unsigned k = 0; k < GATHER_N; k++)
        fs[k] = fut_submit(rt, square, TU_PTR(n + k));
    g = fut_gather(rt, fs, GATHER_N, 0);
    S_CHECK(g != NULL, "fut_gather returned NULL");
    if (g != NULL) {
        void **vals;
        s_wait(g, "gather");
        vals = fut_value(g);
        S_CHECK(vals != NULL, "round %u: gather: no values (state %d, error %d)", n, fut_state(g),
                fut_error(g));
        for (unsigned k = 0; vals != NULL && k < GATHER_N; k++)
            S_CHECK(vals[k] == TU_PTR((uintptr_t)(n + k) * (n + k)), "round %u: gather value %u", n, k);
        fut_release(g);
    }
    for (unsigned k = 0; k < GATHER_N; k++)
        fut_release(fs[k]);

    /* Timeouts: one that expires (its input is cancelled), one that does not. */
    t0 = tu_now_ns();
    slow = fut_sleep(rt, 0.05);
    tmo = fut_timeout(slow, 0.001);
    s_wait(tmo, "expiring timeout");
    S_CHECK(fut_state(tmo) == FUT_REJECTED && fut_error(tmo) == ETIMEDOUT,
            "round %u: timeout: state %d error %d", n, fut_state(tmo), fut_error(tmo));
    S_CHECK(tu_now_ns() - t0 >= 1000000u, "a timeout of 1 ms expired after %llu ns",
            (unsigned long long)(tu_now_ns() - t0));
    s_wait(slow, "the timed-out sleep");
    S_CHECK(fut_state(slow) == FUT_CANCELLED, "round %u: the timed-out sleep: state %d", n,
            fut_state(slow));
    fut_release(tmo);
    fut_release(slow);
    w = fut_submit(rt, square, TU_PTR(n));
    ok = fut_timeout(w, 10.0);
    s_wait(ok, "timeout that does not expire");
    S_RESOLVED(ok, TU_PTR((uintptr_t)n * n));
    fut_release(ok);
    fut_release(w);

    /* Coroutines: one with fut_async, one with fut_run from this thread. */
    a = fut_async(rt, coro_fn, &ca);
    S_CHECK(a != NULL, "fut_async returned NULL");
    if (a != NULL) {
        struct coro_arg cb = { rt, n + 1 };
        long before = g_signals;
        v = NULL;
        rc = fut_run(rt, coro_fn, &cb, &v);
        g_signals_in_waits += g_signals - before;
        S_RC(rc, 0);
        S_CHECK(v == coro_result(n + 1), "round %u: fut_run gave %p", n, v);
        s_wait(a, "coroutine");
        S_RESOLVED(a, coro_result(n));
        fut_release(a);
    }

    /* fut_await outside a coroutine: blocks this thread. */
    w = fut_submit_blocking(rt, square, TU_PTR(n + 2));
    {
        long before = g_signals;
        err = -1;
        v = fut_await(w, &err);
        g_signals_in_waits += g_signals - before;
    }
    S_RC(err, 0);
    S_CHECK(v == TU_PTR((uintptr_t)(n + 2) * (n + 2)), "round %u: fut_await gave %p", n, v);
    fut_release(w);

    /* Raw pool jobs and fut_pool_wait_idle, every 8th round. */
    if (n % 8 == 0) {
        tu_cjob jobs[POOL_JOBS];
        fut_pool *pool = fut_runtime_pool(rt);
        long before;
        for (unsigned k = 0; k < POOL_JOBS; k++) {
            tu_cjob_init(&jobs[k], NULL);
            S_RC(fut_pool_submit(pool, k % 4 == 0 ? FUT_LANE_BLOCKING : FUT_LANE_COMPUTE, &jobs[k].job,
                                 tu_cjob_fn),
                 0);
        }
        before = g_signals;
        S_RC(fut_pool_wait_idle(pool), 0);
        g_signals_in_waits += g_signals - before;
        for (unsigned k = 0; k < POOL_JOBS; k++)
            S_CHECK(atomic_load(&jobs[k].ran) == 1 && atomic_load(&jobs[k].cancelled) == 0,
                    "round %u: pool job %u ran %d times", n, k, atomic_load(&jobs[k].ran));
    }
}

START_TEST(test_signal_storm)
{
    fut_runtime *rt = tu_rt_new(2);
    double secs = storm_seconds();
    struct stats st;
    tu_rng rng;
    uint64_t t0, end, took;
    long sigs;
    bool ok;

    memset(&st, 0, sizeof st);
    tu_rng_seed(&rng, 20240611);
    /* Both runtimes made (threads started) before the storm. */
    ck_assert_ptr_nonnull(fut_runtime_pool(NULL));
    settler_start();
    g_signals = 0;
    g_signals_in_waits = 0;

    storm_start();
    t0 = tu_now_ns();
    end = t0 + (uint64_t)(secs * 1e9);
    for (unsigned n = 0; tu_now_ns() < end && atomic_load(&tu_wfail_count) == 0; n++)
        one_round(n % 2 == 0 ? rt : NULL, n, &rng, &st);
    took = tu_now_ns() - t0;
    storm_stop();
    sigs = g_signals;

    settler_stop();
    fprintf(stderr,
            "signal storm: %.1f s, %lu rounds, %ld signals (%.0f a second), %ld of them during "
            "the library's waits, %lu sleeps, %lu fut_wait timeouts\n",
            (double)took / 1e9, st.rounds, sigs, (double)sigs / ((double)took / 1e9),
            g_signals_in_waits, st.sleeps, st.timeouts_seen);
    TU_ASSERT_NO_WFAIL();
    ck_assert_msg(atomic_load(&g_eintr) == 0, "%ld call(s) returned EINTR", atomic_load(&g_eintr));
    ck_assert_uint_gt(st.rounds, 10);
    ck_assert_msg((double)sigs >= MIN_SIGNALS_PER_S * ((double)took / 1e9),
                  "the handler ran %ld times in %.2f s: fewer than %d a second", sigs,
                  (double)took / 1e9, MIN_SIGNALS_PER_S);
    ck_assert_msg(g_signals_in_waits >= sigs / 10,
                  "only %ld of %ld signals arrived while the library waited", g_signals_in_waits, sigs);

    /* Every continuation ran exactly once, and nothing is left. */
    TU_POLL(ok, fut_runtime_live(rt) == 0 && fut_runtime_live(NULL) == 0, TU_WAIT_MS);
    ck_assert_msg(ok, "still live: %llu futures of the runtime, %llu of the default runtime",
                  (unsigned long long)fut_runtime_live(rt), (unsigned long long)fut_runtime_live(NULL));
    ck_assert_int_eq(atomic_load(&g_then_ran), atomic_load(&g_then_made));
    ck_assert_int_eq(atomic_load(&g_finally_ran), atomic_load(&g_finally_made));
    ck_assert_int_eq(atomic_load(&g_catch_ran), 0);
    ck_assert_int_eq(fut_runtime_free(rt), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("signal_storm");
    /* The storm lasts FUT_STORM_SECONDS; the rest is setup and draining. */
    TCase *tc = tu_tcase(s, "storm", 30 + 2 * storm_seconds());

    tcase_add_test(tc, test_signal_storm);
    return tu_run_suite(s);
}
