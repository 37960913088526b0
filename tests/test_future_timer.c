/* test_future_timer.c - timers: fut_sleep never fires early (0 to 50 ms), fires in deadline order (also after removals from the middle of the heap), rejects bad durations, 1,000 sleeps cancelled from two threads while they expire (exactly one outcome each, nothing after a successful cancel), a cancelled 100 s sleep keeps nothing alive, 100,000 pending sleeps gathered, a runtime freed with 1,000 pending sleeps, the timing wheel under stress with 1 ms, 1 us and 16 ns ticks (sleeps from three threads, a third cancelled at random moments). */
#include "testutil.h"

#include <math.h> /* NAN, INFINITY */

/* The runtime of the running test (each test runs in its own process). */
static fut_runtime *g_rt;

#define NS_PER_MS 1000000ull

/* ------------------------------------------------------------------------
 * One sleep and its three continuations: a then (runs only if the sleep
 * resolved), a catch (only if it was cancelled) and a finally (always).
 * ---------------------------------------------------------------------- */

typedef struct tslot {
    uint64_t delay_ns;        /* requested */
    uint64_t t0;              /* CLOCK_MONOTONIC just before fut_sleep */
    uint64_t fired;           /* CLOCK_MONOTONIC in the then-continuation */
    int catch_code;           /* what the catch-continuation saw */
    int fin_state;            /* the sleep's state the finally saw */
    int cancel_rc;            /* fut_cancel's result, -1 if not cancelled */
    atomic_int then_runs;
    atomic_int catch_runs;
    atomic_int fin_runs;
    fut_future *sleep, *then, *catch_, *fin;
} tslot;

static void *then_fn(void *value, void *arg)
{
    tslot *s = arg;
    TU_WCHECK(fut_on_dispatcher(g_rt));
    TU_WCHECK(value == NULL);
    s->fired = tu_now_ns();
    atomic_fetch_add(&s->then_runs, 1);
    return arg;
}

static void *catch_fn(int code, const char *message, void *arg)
{
    tslot *s = arg;
    TU_WCHECK(fut_on_dispatcher(g_rt));
    TU_WCHECK(message != NULL);
    s->catch_code = code;
    atomic_fetch_add(&s->catch_runs, 1);
    return arg;
}

static void fin_fn(fut_future *f, void *arg)
{
    tslot *s = arg;
    TU_WCHECK(fut_on_dispatcher(g_rt));
    TU_WCHECK(f == s->sleep);
    s->fin_state = fut_state(f);
    atomic_fetch_add(&s->fin_runs, 1);
}

/* Make s's sleep of seconds and its continuations. */
static void tslot_start(tslot *s, double seconds)
{
    double ns = seconds * 1e9;

    s->delay_ns = (uint64_t)ns + ((double)(uint64_t)ns < ns); /* rounded up */
    s->fired = 0;
    s->catch_code = -1;
    s->fin_state = -1;
    s->cancel_rc = -1;
    atomic_init(&s->then_runs, 0);
    atomic_init(&s->catch_runs, 0);
    atomic_init(&s->fin_runs, 0);
    s->t0 = tu_now_ns();
    s->sleep = fut_sleep(g_rt, seconds);
    TU_REQUIRE(s->sleep != NULL, "fut_sleep(%g) failed: %s", seconds, strerror(errno));
    s->then = fut_then(s->sleep, then_fn, s);
    s->catch_ = fut_catch(s->sleep, catch_fn, s);
    s->fin = fut_finally(s->sleep, fin_fn, s);
    TU_REQUIRE(s->then != NULL && s->catch_ != NULL && s->fin != NULL,
               "attaching continuations failed: %s", strerror(errno));
}

static void tslot_wait(tslot *s)
{
    TU_REQUIRE(fut_wait(s->then, TU_WAIT_MS / 1000.0) == 0, "then of a %llu ns sleep never settled",
               (unsigned long long)s->delay_ns);
    TU_REQUIRE(fut_wait(s->catch_, TU_WAIT_MS / 1000.0) == 0, "catch never settled");
    TU_REQUIRE(fut_wait(s->fin, TU_WAIT_MS / 1000.0) == 0, "finally never settled");
}

/* The sleep resolved: the then ran once, not early; the catch never ran. */
static void tslot_check_fired(tslot *s, size_t i)
{
    TU_REQUIRE(fut_state(s->sleep) == FUT_RESOLVED, "sleep %zu: state %d, expected RESOLVED", i,
               fut_state(s->sleep));
    TU_REQUIRE(fut_value(s->sleep) == NULL, "sleep %zu: value %p", i, fut_value(s->sleep));
    TU_REQUIRE(fut_error(s->sleep) == 0, "sleep %zu: error %d", i, fut_error(s->sleep));
    TU_REQUIRE(atomic_load(&s->then_runs) == 1, "sleep %zu: then ran %d times", i,
               atomic_load(&s->then_runs));
    TU_REQUIRE(atomic_load(&s->catch_runs) == 0, "sleep %zu: catch ran %d times", i,
               atomic_load(&s->catch_runs));
    TU_REQUIRE(s->fired - s->t0 >= s->delay_ns, "sleep %zu fired early: after %llu ns of %llu", i,
               (unsigned long long)(s->fired - s->t0), (unsigned long long)s->delay_ns);
    TU_REQUIRE(fut_state(s->then) == FUT_RESOLVED && fut_value(s->then) == s,
               "sleep %zu: then future state %d", i, fut_state(s->then));
    TU_REQUIRE(fut_state(s->catch_) == FUT_RESOLVED && fut_value(s->catch_) == NULL,
               "sleep %zu: catch future state %d", i, fut_state(s->catch_));
    TU_REQUIRE(atomic_load(&s->fin_runs) == 1 && s->fin_state == FUT_RESOLVED,
               "sleep %zu: finally ran %d times, saw state %d", i, atomic_load(&s->fin_runs),
               s->fin_state);
    TU_REQUIRE(fut_state(s->fin) == FUT_RESOLVED, "sleep %zu: finally future state %d", i,
               fut_state(s->fin));
}

/* The sleep was cancelled: the then never ran, the catch saw ECANCELED. */
static void tslot_check_cancelled(tslot *s, size_t i)
{
    TU_REQUIRE(fut_state(s->sleep) == FUT_CANCELLED, "sleep %zu: state %d, expected CANCELLED", i,
               fut_state(s->sleep));
    TU_REQUIRE(fut_error(s->sleep) == ECANCELED, "sleep %zu: error %d", i, fut_error(s->sleep));
    TU_REQUIRE(atomic_load(&s->then_runs) == 0, "sleep %zu: then ran %d times after a cancel", i,
               atomic_load(&s->then_runs));
    TU_REQUIRE(atomic_load(&s->catch_runs) == 1, "sleep %zu: catch ran %d times", i,
               atomic_load(&s->catch_runs));
    TU_REQUIRE(s->catch_code == ECANCELED, "sleep %zu: catch saw code %d", i, s->catch_code);
    TU_REQUIRE(fut_state(s->then) == FUT_CANCELLED && fut_error(s->then) == ECANCELED,
               "sleep %zu: then future state %d error %d", i, fut_state(s->then),
               fut_error(s->then));
    TU_REQUIRE(fut_state(s->catch_) == FUT_RESOLVED && fut_value(s->catch_) == s,
               "sleep %zu: catch future state %d", i, fut_state(s->catch_));
    TU_REQUIRE(atomic_load(&s->fin_runs) == 1 && s->fin_state == FUT_CANCELLED,
               "sleep %zu: finally ran %d times, saw state %d", i, atomic_load(&s->fin_runs),
               s->fin_state);
    TU_REQUIRE(fut_state(s->fin) == FUT_CANCELLED, "sleep %zu: finally future state %d", i,
               fut_state(s->fin));
}

static void tslot_release(tslot *s)
{
    fut_release(s->sleep);
    fut_release(s->then);
    fut_release(s->catch_);
    fut_release(s->fin);
    s->sleep = s->then = s->catch_ = s->fin = NULL;
}

/* ------------------------------------------------------------------------
 * Never early
 * ---------------------------------------------------------------------- */

static const unsigned short_delays_ms[] = { 0, 1, 10, 50 };

#define NEARLY 8 /* sleeps of each duration, side by side */

START_TEST(test_sleep_never_early)
{
    unsigned ms = short_delays_ms[_i];
    tslot s[NEARLY];

    g_rt = tu_rt_new(2);
    ck_assert_int_eq(fut_on_dispatcher(g_rt), 0);
    for (int i = 0; i < NEARLY; i++)
        tslot_start(&s[i], ms / 1000.0);
    for (int i = 0; i < NEARLY; i++) {
        tslot_wait(&s[i]);
        tslot_check_fired(&s[i], (size_t)i);
        tslot_release(&s[i]);
    }
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* Odd durations: the conversion to nanoseconds must round up, not down. */
START_TEST(test_sleep_fractional_never_early)
{
    static const double secs[] = { 1e-9, 1.5e-9, 0.0001234567, 0.0009999999, 0.003000000001,
                                   1.0 / 3.0 / 100.0 };
    tslot s[TU_ARRAY_LEN(secs)];

    g_rt = tu_rt_new(2);
    for (size_t i = 0; i < TU_ARRAY_LEN(secs); i++)
        tslot_start(&s[i], secs[i]);
    for (size_t i = 0; i < TU_ARRAY_LEN(secs); i++) {
        tslot_wait(&s[i]);
        tslot_check_fired(&s[i], i);
        tslot_release(&s[i]);
    }
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* ------------------------------------------------------------------------
 * Bad durations
 * ---------------------------------------------------------------------- */

START_TEST(test_sleep_bad_seconds)
{
    const double bad[] = { -1.0, -1e-9, -1e300, -INFINITY, NAN, -NAN };

    g_rt = tu_rt_new(2);
    for (size_t i = 0; i < TU_ARRAY_LEN(bad); i++) {
        errno = 0;
        fut_future *f = fut_sleep(g_rt, bad[i]);
        ck_assert_msg(f == NULL, "fut_sleep(%g) returned a future", bad[i]);
        ck_assert_msg(errno == EINVAL, "fut_sleep(%g): errno %d, expected EINVAL", bad[i], errno);
    }
    /* Nothing was made. */
    ck_assert_uint_eq(fut_runtime_live(g_rt), 0);
    tu_rt_finish(g_rt);
}
END_TEST

/* ------------------------------------------------------------------------
 * Order
 * ---------------------------------------------------------------------- */

/* Continuations append here; they all run on the dispatcher, one at a
 * time, so the list needs no lock. The test reads it after waiting for
 * every continuation's future. */
static int order_list[4096];
static int order_len;

typedef struct ord {
    int id;
    uint64_t fired;
} ord;

static void *order_fn(void *value, void *arg)
{
    ord *o = arg;
    (void)value;
    TU_WCHECK(fut_on_dispatcher(g_rt));
    o->fired = tu_now_ns();
    if (order_len < (int)TU_ARRAY_LEN(order_list))
        order_list[order_len] = o->id;
    order_len++;
    return NULL;
}

START_TEST(test_sleep_deadline_order)
{
    static const unsigned ms[3] = { 30, 10, 20 };
    ord o[3];
    fut_future *sl[3], *c[3];

    g_rt = tu_rt_new(2);
    order_len = 0;
    for (int i = 0; i < 3; i++) {
        o[i].id = (int)ms[i];
        sl[i] = fut_sleep(g_rt, ms[i] / 1000.0);
        ck_assert_ptr_nonnull(sl[i]);
        c[i] = fut_then(sl[i], order_fn, &o[i]);
        ck_assert_ptr_nonnull(c[i]);
    }
    for (int i = 0; i < 3; i++) {
        TU_SETTLE(c[i]);
        ck_assert_int_eq(fut_state(c[i]), FUT_RESOLVED);
    }
    ck_assert_int_eq(order_len, 3);
    ck_assert_int_eq(order_list[0], 10);
    ck_assert_int_eq(order_list[1], 20);
    ck_assert_int_eq(order_list[2], 30);
    for (int i = 0; i < 3; i++) {
        fut_release(sl[i]);
        fut_release(c[i]);
    }
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* Many sleeps of random durations, a third of them cancelled (removed
 * from the middle of the heap): the others still fire in deadline order.
 * A deadline lies in [t0 + d, t1 + d] (t0, t1: the clock before and after
 * fut_sleep), so two sleeps are only compared when those ranges are at
 * least ORDER_MARGIN apart. */
#define NORDER 600
#define ORDER_MARGIN_NS (3 * NS_PER_MS)

START_TEST(test_sleep_order_random)
{
    static ord o[NORDER];
    static uint64_t lo[NORDER], hi[NORDER];
    static fut_future *sl[NORDER], *c[NORDER];
    static int pos[NORDER];
    tu_rng r;
    int fired = 0;

    g_rt = tu_rt_new(2);
    tu_rng_seed(&r, 42);
    order_len = 0;
    for (int i = 0; i < NORDER; i++) {
        uint64_t d = (uint64_t)tu_rng_upto(&r, 40000) * 1000u; /* 0..40 ms, in us steps */
        o[i].id = i;
        o[i].fired = 0;
        lo[i] = tu_now_ns() + d;
        sl[i] = fut_sleep(g_rt, (double)d / 1e9);
        hi[i] = tu_now_ns() + d;
        TU_REQUIRE(sl[i] != NULL, "fut_sleep failed: %s", strerror(errno));
        c[i] = fut_then(sl[i], order_fn, &o[i]);
        TU_REQUIRE(c[i] != NULL, "fut_then failed");
    }
    /* Armed by now (the short ones fired): the cancels remove timers
     * from anywhere in the heap. */
    tu_sleep_ms(5);
    for (int i = 0; i < NORDER; i += 3)
        fut_cancel(sl[i]); /* EALREADY for those already fired: they count */
    for (int i = 0; i < NORDER; i++) {
        TU_REQUIRE(fut_wait(c[i], TU_WAIT_MS / 1000.0) == 0, "sleep %d never settled", i);
        pos[i] = -1;
    }
    ck_assert_int_le(order_len, NORDER);
    for (int k = 0; k < order_len; k++) {
        int i = order_list[k];
        TU_REQUIRE(fut_state(sl[i]) == FUT_RESOLVED, "sleep %d fired but is in state %d", i,
                   fut_state(sl[i]));
        TU_REQUIRE(pos[i] == -1, "sleep %d fired twice", i);
        TU_REQUIRE(o[i].fired >= lo[i], "sleep %d fired early", i);
        pos[i] = k;
    }
    for (int i = 0; i < NORDER; i++) {
        if (fut_state(sl[i]) == FUT_RESOLVED) {
            TU_REQUIRE(pos[i] >= 0, "sleep %d resolved but its continuation never ran", i);
            fired++;
        } else {
            TU_REQUIRE(i % 3 == 0 && fut_state(sl[i]) == FUT_CANCELLED && pos[i] == -1,
                       "sleep %d: state %d, continuation at %d", i, fut_state(sl[i]), pos[i]);
            TU_REQUIRE(fut_state(c[i]) == FUT_CANCELLED, "sleep %d cancelled, then %d", i,
                       fut_state(c[i]));
        }
    }
    ck_assert_int_eq(fired, order_len);
    ck_assert_int_ge(fired, NORDER - NORDER / 3);
    for (int i = 0; i < NORDER; i++) {
        if (pos[i] < 0)
            continue;
        for (int j = 0; j < NORDER; j++) {
            if (pos[j] < 0 || pos[j] <= pos[i])
                continue;
            /* i fired before j: j's deadline must not be clearly earlier. */
            TU_REQUIRE(!(hi[j] + ORDER_MARGIN_NS < lo[i]),
                       "sleep %d (deadline >= %llu) fired before sleep %d (deadline <= %llu)", i,
                       (unsigned long long)lo[i], j, (unsigned long long)hi[j]);
        }
    }
    for (int i = 0; i < NORDER; i++) {
        fut_release(sl[i]);
        fut_release(c[i]);
    }
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* ------------------------------------------------------------------------
 * Cancelling sleeps while they expire
 * ---------------------------------------------------------------------- */

#define NSTORM 1000

typedef struct canceller {
    tslot *slots;
    int which;      /* cancels the slots with i % 4 == which */
    uint64_t seed;
} canceller;

static void *canceller_main(void *arg)
{
    canceller *c = arg;
    int idx[NSTORM / 4 + 1], n = 0;
    tu_rng r;

    tu_rng_seed(&r, c->seed);
    for (int i = c->which; i < NSTORM; i += 4)
        idx[n++] = i;
    /* A random order, spread over about 25 ms: some cancels come before
     * the timer fires, some after, some at the same moment. */
    for (int k = n - 1; k > 0; k--) {
        int j = (int)tu_rng_upto(&r, (unsigned)k), t = idx[k];
        idx[k] = idx[j];
        idx[j] = t;
    }
    for (int k = 0; k < n; k++) {
        tslot *s = &c->slots[idx[k]];
        s->cancel_rc = fut_cancel(s->sleep);
        if (tu_rng_upto(&r, 3) == 0) {
            struct timespec ts = { 0, (long)tu_rng_upto(&r, 400) * 1000L };
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

START_TEST(test_sleep_cancel_storm)
{
    static tslot s[NSTORM];
    canceller c[2];
    pthread_t th[2];
    tu_rng r;
    int won = 0, lost = 0;

    g_rt = tu_rt_new(2);
    tu_rng_seed(&r, 7);
    for (int i = 0; i < NSTORM; i++)
        tslot_start(&s[i], tu_rng_upto(&r, 50000) / 1e6); /* 0..50 ms */
    for (int k = 0; k < 2; k++) {
        c[k].slots = s;
        c[k].which = k;
        c[k].seed = 100u + (uint64_t)k;
        ck_assert_int_eq(pthread_create(&th[k], NULL, canceller_main, &c[k]), 0);
    }
    for (int k = 0; k < 2; k++)
        ck_assert_int_eq(pthread_join(th[k], NULL), 0);
    for (int i = 0; i < NSTORM; i++) {
        tslot_wait(&s[i]);
        if (i % 4 < 2) {
            TU_REQUIRE(s[i].cancel_rc == 0 || s[i].cancel_rc == EALREADY,
                       "sleep %d: fut_cancel returned %d", i, s[i].cancel_rc);
        } else {
            TU_REQUIRE(s[i].cancel_rc == -1, "sleep %d was not to be cancelled", i);
        }
        if (s[i].cancel_rc == 0) {
            won++;
            tslot_check_cancelled(&s[i], (size_t)i);
        } else {
            lost += s[i].cancel_rc == EALREADY;
            tslot_check_fired(&s[i], (size_t)i);
        }
        /* A late cancel changes nothing. */
        TU_REQUIRE(fut_cancel(s[i].sleep) == EALREADY, "sleep %d cancelled twice", i);
    }
    ck_assert_int_eq(won + lost, NSTORM / 2);
    /* The cancellers start at most a few ms after the last 50 ms sleep
     * was made: some of them come first. */
    ck_assert_int_gt(won, 0);
    for (int i = 0; i < NSTORM; i++)
        tslot_release(&s[i]);
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* ------------------------------------------------------------------------
 * A cancelled long sleep keeps nothing alive
 * ---------------------------------------------------------------------- */

START_TEST(test_sleep_cancel_long)
{
    tslot s;
    bool ok;
    uint64_t t;

    g_rt = tu_rt_new(2);
    tslot_start(&s, 100.0);
    if (_i == 1)
        tu_sleep_ms(5); /* armed by now: removed from the heap */
    ck_assert_int_eq(fut_state(s.sleep), FUT_PENDING);
    ck_assert_int_eq(fut_cancel(s.sleep), 0);
    ck_assert_int_eq(fut_cancel(s.sleep), EALREADY);
    ck_assert_int_eq(fut_state(s.sleep), FUT_CANCELLED);
    tslot_wait(&s);
    tslot_check_cancelled(&s, 0);
    tslot_release(&s);
    /* The timer's own reference goes with the timer, not in 100 s. */
    TU_POLL(ok, fut_runtime_live(g_rt) == 0, 2000u * TU_SLOW);
    ck_assert_msg(ok, "%llu future(s) still live after cancelling the sleep",
                  (unsigned long long)fut_runtime_live(g_rt));
    t = tu_now_ns();
    ck_assert_int_eq(fut_runtime_free(g_rt), 0);
    t = tu_now_ns() - t;
    ck_assert_msg(t < 1000ull * NS_PER_MS * TU_SLOW, "fut_runtime_free took %llu ms",
                  (unsigned long long)(t / NS_PER_MS));
    TU_ASSERT_NO_WFAIL();
}
END_TEST

/* ------------------------------------------------------------------------
 * 100,000 pending sleeps, gathered
 * ---------------------------------------------------------------------- */

#define NGATHER 100000

typedef struct gstamp {
    uint64_t fired;
    atomic_int runs;
    int nonnull; /* values that were not NULL */
} gstamp;

static void *gather_then(void *value, void *arg)
{
    gstamp *g = arg;
    void **v = value;
    TU_WCHECK(fut_on_dispatcher(g_rt));
    g->fired = tu_now_ns();
    g->nonnull = 0;
    for (size_t i = 0; i < NGATHER; i++)
        g->nonnull += v[i] != NULL;
    atomic_fetch_add(&g->runs, 1);
    return NULL;
}

START_TEST(test_sleep_gather_100k)
{
    fut_future **fs = calloc(NGATHER, sizeof *fs);
    fut_future *g, *c;
    gstamp gs = { 0, 0, -1 };
    uint64_t t0;

    ck_assert_ptr_nonnull(fs);
    g_rt = tu_rt_new(2);
    t0 = tu_now_ns();
    for (size_t i = 0; i < NGATHER; i++) {
        fs[i] = fut_sleep(g_rt, 0.050);
        TU_REQUIRE(fs[i] != NULL, "fut_sleep %zu failed: %s", i, strerror(errno));
    }
    g = fut_gather(g_rt, fs, NGATHER, 0);
    ck_assert_ptr_nonnull(g);
    /* The gather keeps its own references. */
    for (size_t i = 0; i < NGATHER; i++)
        fut_release(fs[i]);
    c = fut_then(g, gather_then, &gs);
    ck_assert_ptr_nonnull(c);
    TU_SETTLE(c);
    ck_assert_int_eq(fut_state(c), FUT_RESOLVED);
    ck_assert_int_eq(atomic_load(&gs.runs), 1);
    ck_assert_int_eq(gs.nonnull, 0);
    ck_assert_msg(gs.fired - t0 >= 50 * NS_PER_MS, "gather of 50 ms sleeps resolved after %llu ns",
                  (unsigned long long)(gs.fired - t0));
    ck_assert_int_eq(fut_state(g), FUT_RESOLVED);
    ck_assert_ptr_nonnull(fut_value(g));
    for (size_t i = 0; i < NGATHER; i++) {
        fut_future *it = fut_gather_item(g, i);
        TU_REQUIRE(it != NULL && fut_state(it) == FUT_RESOLVED, "sleep %zu: state %d", i,
                   fut_state(it));
        TU_REQUIRE(((void **)fut_value(g))[i] == NULL, "value %zu not NULL", i);
    }
    fut_release(c);
    fut_release(g);
    free(fs);
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* ------------------------------------------------------------------------
 * A runtime freed with pending sleeps
 * ---------------------------------------------------------------------- */

#define NPENDING 1000

START_TEST(test_free_with_pending_sleeps)
{
    static tslot s[NPENDING];
    tu_rng r;
    int fired = 0, cancelled = 0;

    g_rt = tu_rt_new(2);
    tu_rng_seed(&r, 11);
    for (int i = 0; i < NPENDING; i++) {
        /* One in four short (0..2 ms: may fire first), the rest 100 s. */
        tslot_start(&s[i], i % 4 == 0 ? tu_rng_upto(&r, 2000) / 1e6 : 100.0);
    }
    if (_i == 1)
        tu_sleep_ms(5); /* every timer armed, the short ones fired */
    ck_assert_int_eq(fut_runtime_free(g_rt), 0);
    /* fut_runtime_free returned: every continuation has run, once. The
     * futures stay readable while held. */
    for (int i = 0; i < NPENDING; i++) {
        TU_REQUIRE(fut_state(s[i].then) != FUT_PENDING && fut_state(s[i].catch_) != FUT_PENDING &&
                       fut_state(s[i].fin) != FUT_PENDING,
                   "sleep %d: a continuation is still pending after fut_runtime_free", i);
        if (fut_state(s[i].sleep) == FUT_RESOLVED) {
            TU_REQUIRE(i % 4 == 0, "the 100 s sleep %d resolved", i);
            fired++;
            tslot_check_fired(&s[i], (size_t)i);
        } else {
            cancelled++;
            tslot_check_cancelled(&s[i], (size_t)i);
        }
    }
    ck_assert_int_eq(fired + cancelled, NPENDING);
    ck_assert_int_ge(cancelled, NPENDING - NPENDING / 4);
    /* Nothing but the caller's references is left. */
    ck_assert_uint_eq(fut_runtime_live(g_rt), 4u * NPENDING);
    for (int i = 0; i < NPENDING; i++)
        tslot_release(&s[i]); /* the last one frees the runtime's memory */
    TU_ASSERT_NO_WFAIL();
}
END_TEST

/* ------------------------------------------------------------------------
 * The timing wheel under stress: ticks of 1 ms (the default), 1 us and
 * 16 ns, so that 0-300 ms sleeps cross the boundaries of every level but
 * the top ones many times over: sleeps made from two threads, a third of
 * them cancelled at random moments from a third thread. Each fires once and never early, or is
 * cancelled; nothing is left alive; the wheel never stalls (the test's
 * timeout).
 * ---------------------------------------------------------------------- */

extern unsigned fut__tick_shift; /* futures/internal.h, for tests */

#define NWHEEL 3000

static atomic_int wheel_made[NWHEEL]; /* slot i's sleep exists (release) */

static const unsigned wheel_shifts[] = { 20, 10, 4 };

typedef struct wheel_maker {
    tslot *slots;
    int from, to;   /* slots [from, to) */
    uint64_t seed;
} wheel_maker;

static double wheel_delay(tu_rng *r)
{
    /* Mostly 0-300 ms, a few exactly 0 and a few under 50 us. */
    unsigned k = (unsigned)tu_rng_upto(r, 20);
    if (k == 0)
        return 0;
    if (k == 1)
        return (double)tu_rng_upto(r, 50000) / 1e9;
    return (double)tu_rng_upto(r, 300000) / 1e6;
}

static void *wheel_maker_main(void *arg)
{
    wheel_maker *m = arg;
    tu_rng r;

    tu_rng_seed(&r, m->seed);
    for (int i = m->from; i < m->to; i++) {
        tslot_start(&m->slots[i], wheel_delay(&r));
        atomic_store_explicit(&wheel_made[i], 1, memory_order_release);
        if (tu_rng_upto(&r, 64) == 0) { /* arm in bursts, across ticks */
            struct timespec ts = { 0, (long)tu_rng_upto(&r, 2000) * 1000L };
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

static void *wheel_canceller_main(void *arg)
{
    wheel_maker *m = arg;
    tu_rng r;

    tu_rng_seed(&r, m->seed);
    /* Every third slot, in order, spread over about 250 ms: before, at
     * and after their deadlines. */
    for (int i = 0; i < NWHEEL; i += 3) {
        tslot *s = &m->slots[i];
        bool ok;
        TU_POLL(ok, atomic_load_explicit(&wheel_made[i], memory_order_acquire) != 0, TU_WAIT_MS);
        if (!ok)
            break;
        s->cancel_rc = fut_cancel(s->sleep);
        if (tu_rng_upto(&r, 4) == 0) {
            struct timespec ts = { 0, (long)tu_rng_upto(&r, 1000) * 1000L };
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

START_TEST(test_wheel_stress)
{
    static tslot s[NWHEEL];
    wheel_maker mk[2], cm;
    pthread_t th[3];
    int won = 0, fired = 0;

    for (int i = 0; i < NWHEEL; i++)
        atomic_store(&wheel_made[i], 0);
    fut__tick_shift = wheel_shifts[_i];
    g_rt = tu_rt_new(2);
    for (int k = 0; k < 2; k++) {
        mk[k].slots = s;
        mk[k].from = k * NWHEEL / 2;
        mk[k].to = (k + 1) * NWHEEL / 2;
        mk[k].seed = 500u + (uint64_t)k + 10u * (uint64_t)_i;
        ck_assert_int_eq(pthread_create(&th[k], NULL, wheel_maker_main, &mk[k]), 0);
    }
    cm.slots = s;
    cm.seed = 900u + (uint64_t)_i;
    ck_assert_int_eq(pthread_create(&th[2], NULL, wheel_canceller_main, &cm), 0);
    for (int k = 0; k < 3; k++)
        ck_assert_int_eq(pthread_join(th[k], NULL), 0);
    for (int i = 0; i < NWHEEL; i++) {
        tslot_wait(&s[i]);
        if (i % 3 == 0)
            TU_REQUIRE(s[i].cancel_rc == 0 || s[i].cancel_rc == EALREADY,
                       "sleep %d: fut_cancel returned %d", i, s[i].cancel_rc);
        if (s[i].cancel_rc == 0) {
            won++;
            tslot_check_cancelled(&s[i], (size_t)i);
        } else {
            fired++;
            tslot_check_fired(&s[i], (size_t)i);
        }
    }
    ck_assert_int_eq(won + fired, NWHEEL);
    ck_assert_int_gt(won, 0);
    ck_assert_int_gt(fired, NWHEEL / 2);
    for (int i = 0; i < NWHEEL; i++)
        tslot_release(&s[i]);
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* ------------------------------------------------------------------------
 * fut_call_soon / fut_call_later / fut_call_at, fut_time, fut_winner
 * ---------------------------------------------------------------------- */

static atomic_int call_runs;

static void *call_fn(void *arg)
{
    TU_WCHECK(fut_on_dispatcher(g_rt));
    atomic_fetch_add(&call_runs, 1);
    if (arg == TU_PTR(-1))
        return fut_raise(EDOM, "call raised");
    return arg;
}

START_TEST(test_calls_at_times)
{
    fut_future *f, *g, *h, *x, *in[2], *r;
    fut_promise *p[2];
    double t0;
    size_t idx = 99;
    bool ok;

    g_rt = tu_rt_new(2);
    atomic_store(&call_runs, 0);
    f = fut_call_soon(g_rt, call_fn, TU_PTR(1));
    t0 = fut_time();
    g = fut_call_later(g_rt, 0.02, call_fn, TU_PTR(2));
    h = fut_call_at(g_rt, t0 + 0.03, call_fn, TU_PTR(3));
    x = fut_call_soon(g_rt, call_fn, TU_PTR(-1));
    ck_assert(f && g && h && x);
    TU_SETTLE(f);
    ck_assert_ptr_eq(fut_value(f), TU_PTR(1));
    TU_SETTLE(g);
    ck_assert_msg(fut_time() - t0 >= 0.02, "call_later early: %.4f s", fut_time() - t0);
    ck_assert_ptr_eq(fut_value(g), TU_PTR(2));
    TU_SETTLE(h);
    ck_assert_msg(fut_time() - t0 >= 0.03, "call_at early");
    ck_assert_ptr_eq(fut_value(h), TU_PTR(3));
    TU_SETTLE(x);
    ck_assert_int_eq(fut_error(x), EDOM);
    ck_assert_str_eq(fut_message(x), "call raised");
    ck_assert_int_eq(atomic_load(&call_runs), 4);
    fut_release(f);
    fut_release(g);
    fut_release(h);
    fut_release(x);

    /* Cancelled before it ran: it never runs, and its timer goes. */
    atomic_store(&call_runs, 0);
    f = fut_call_later(g_rt, 100.0, call_fn, TU_PTR(4));
    ck_assert_int_eq(fut_cancel(f), 0);
    fut_release(f);
    TU_POLL(ok, fut_runtime_live(g_rt) == 0, TU_WAIT_MS);
    ck_assert_msg(ok, "%llu futures live after a cancelled call_later",
                  (unsigned long long)fut_runtime_live(g_rt));
    ck_assert_int_eq(atomic_load(&call_runs), 0);

    errno = 0;
    ck_assert_ptr_null(fut_call_soon(g_rt, NULL, NULL));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_null(fut_call_later(g_rt, -1, call_fn, NULL));
    ck_assert_ptr_null(fut_call_later(g_rt, NAN, call_fn, NULL));
    ck_assert_ptr_null(fut_call_at(g_rt, NAN, call_fn, NULL));

    /* fut_winner: which input decided a race, an any. */
    p[0] = fut_promise_new(g_rt);
    p[1] = fut_promise_new(g_rt);
    in[0] = fut_promise_future(p[0]);
    in[1] = fut_promise_future(p[1]);
    r = fut_race(g_rt, in, 2, 0);
    ck_assert_int_eq(fut_winner(r, &idx), EAGAIN);
    ck_assert_int_eq(fut_promise_resolve(p[1], TU_PTR(8)), 0);
    TU_SETTLE(r);
    ck_assert_int_eq(fut_winner(r, &idx), 0);
    ck_assert_uint_eq(idx, 1);
    fut_release(r);
    r = fut_any(g_rt, in, 2, 0); /* in[1] resolved already */
    TU_SETTLE(r);
    ck_assert_int_eq(fut_winner(r, &idx), 0);
    ck_assert_uint_eq(idx, 1);
    ck_assert_int_eq(fut_winner(in[0], &idx), EINVAL);
    ck_assert_int_eq(fut_winner(r, NULL), EINVAL);
    fut_release(r);
    for (int i = 0; i < 2; i++) {
        fut_release(in[i]);
        fut_promise_free(p[i]);
    }

    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

static Suite *future_timer_suite(void)
{
    Suite *s = suite_create("future_timer");
    TCase *tc;

    tc = tu_tcase(s, "sleep", 30);
    tcase_add_loop_test(tc, test_sleep_never_early, 0, (int)TU_ARRAY_LEN(short_delays_ms));
    tcase_add_test(tc, test_sleep_fractional_never_early);
    tcase_add_test(tc, test_sleep_bad_seconds);

    tc = tu_tcase(s, "calls", 30);
    tcase_add_test(tc, test_calls_at_times);

    tc = tu_tcase(s, "order", 30);
    tcase_add_test(tc, test_sleep_deadline_order);
    tcase_add_test(tc, test_sleep_order_random);

    tc = tu_tcase(s, "cancel", 30);
    tcase_add_test(tc, test_sleep_cancel_storm);
    tcase_add_loop_test(tc, test_sleep_cancel_long, 0, 2);

    tc = tu_tcase(s, "wheel", 60);
    tcase_add_loop_test(tc, test_wheel_stress, 0, (int)TU_ARRAY_LEN(wheel_shifts));

    tc = tu_tcase(s, "many", 60);
    tcase_add_test(tc, test_sleep_gather_100k);
    tcase_add_loop_test(tc, test_free_with_pending_sleeps, 0, 2);
    return s;
}

int main(void)
{
    return tu_run_suite(future_timer_suite());
}
