/* test_future_basic.c - futures basics: fut_submit/fut_submit_blocking values, fut_raise, fut_wait (timeouts, EDEADLK on the dispatcher, waits on compute workers), promises, fut_cancel (pending, queued, fut_cancelled in long work), the unobserved-error hook, bad arguments, the default runtime. */
#include "testutil.h"

/* The runtime of the running test, for work and continuations. */
static fut_runtime *g_rt;

/* ------------------------------------------------------------------------
 * Work that records where it ran.
 * ---------------------------------------------------------------------- */

typedef struct wprobe {
    int lane;           /* lane it must run on */
    uintptr_t value;    /* returned + 1 */
    atomic_int runs;
} wprobe;

static void *probe_work(void *arg)
{
    wprobe *w = arg;
    TU_WCHECK(fut_on_dispatcher(g_rt) == 0);
    TU_WCHECK(fut_on_dispatcher(NULL) == 0);
    TU_WCHECK(tu_on_lane_thread(w->lane));
    TU_WCHECK(fut_cancelled() == 0);
    atomic_fetch_add(&w->runs, 1);
    return TU_PTR(w->value + 1);
}

static void *null_work(void *arg)
{
    (void)arg;
    TU_WCHECK(fut_on_dispatcher(g_rt) == 0);
    return NULL;
}

#define NPROBES 64

static void submit_values(int lane)
{
    static wprobe w[NPROBES];
    fut_future *f[NPROBES];

    for (int i = 0; i < NPROBES; i++) {
        w[i].lane = lane;
        w[i].value = 1000u + (uintptr_t)i;
        atomic_init(&w[i].runs, 0);
        f[i] = lane == FUT_LANE_COMPUTE ? fut_submit(g_rt, probe_work, &w[i])
                                        : fut_submit_blocking(g_rt, probe_work, &w[i]);
        ck_assert_ptr_nonnull(f[i]);
    }
    for (int i = 0; i < NPROBES; i++) {
        TU_SETTLE(f[i]);
        ck_assert_int_eq(fut_state(f[i]), FUT_RESOLVED);
        ck_assert_uint_eq(TU_UINT(fut_value(f[i])), 1001u + (uintptr_t)i);
        ck_assert_int_eq(fut_error(f[i]), 0);
        ck_assert_str_eq(fut_message(f[i]), "");
        ck_assert_int_eq(atomic_load(&w[i].runs), 1);
        fut_release(f[i]);
    }
    TU_ASSERT_NO_WFAIL();
}

START_TEST(test_submit_value)
{
    fut_future *f;

    g_rt = tu_rt_new(2);
    submit_values(FUT_LANE_COMPUTE);
    submit_values(FUT_LANE_BLOCKING);

    /* A NULL return value resolves (it is not an error). */
    f = fut_submit(g_rt, null_work, NULL);
    ck_assert_ptr_nonnull(f);
    TU_SETTLE(f);
    ck_assert_int_eq(fut_state(f), FUT_RESOLVED);
    ck_assert_ptr_null(fut_value(f));
    ck_assert_int_eq(fut_error(f), 0);
    fut_release(f);
    f = fut_submit_blocking(g_rt, null_work, NULL);
    ck_assert_ptr_nonnull(f);
    TU_SETTLE(f);
    ck_assert_int_eq(fut_state(f), FUT_RESOLVED);
    ck_assert_ptr_null(fut_value(f));
    fut_release(f);

    tu_rt_finish(g_rt);
}
END_TEST

/* ------------------------------------------------------------------------
 * fut_raise
 * ---------------------------------------------------------------------- */

static void *raise_work(void *arg)
{
    TU_WCHECK(fut_on_dispatcher(g_rt) == 0);
    return fut_raise(ENOENT, "no %s #%d", (const char *)arg, 42);
}

/* Raises, then returns a value anyway: still rejected. */
static void *raise_then_value_work(void *arg)
{
    TU_WCHECK(fut_on_dispatcher(g_rt) == 0);
    (void)arg;
    fut_raise(EIO, "io %c", 'x');
    return TU_PTR(5);
}

static void *raise_code_work(void *arg)
{
    TU_WCHECK(fut_on_dispatcher(g_rt) == 0);
    return fut_raise((int)(intptr_t)arg, "bad code %d", (int)(intptr_t)arg);
}

static void *plain_work(void *arg)
{
    return arg;
    TU_WCHECK(fut_on_dispatcher(g_rt) == 0);
}

static void check_rejected(fut_future *f, int code, const char *msg)
{
    TU_SETTLE(f);
    ck_assert_int_eq(fut_state(f), FUT_REJECTED);
    ck_assert_int_eq(fut_error(f), code);
    ck_assert_ptr_null(fut_value(f));
    if (msg)
        ck_assert_str_eq(fut_message(f), msg);
}

START_TEST(test_raise)
{
    fut_future *f;

    g_rt = tu_rt_new(2);

    f = fut_submit(g_rt, raise_work, (void *)"file");
    ck_assert_ptr_nonnull(f);
    check_rejected(f, ENOENT, "no file #42");
    fut_release(f);

    f = fut_submit_blocking(g_rt, raise_work, (void *)"dir");
    ck_assert_ptr_nonnull(f);
    check_rejected(f, ENOENT, "no dir #42");
    fut_release(f);

    f = fut_submit(g_rt, raise_then_value_work, NULL);
    ck_assert_ptr_nonnull(f);
    check_rejected(f, EIO, "io x");
    fut_release(f);

    /* Codes <= 0 become EINVAL. */
    f = fut_submit(g_rt, raise_code_work, (void *)(intptr_t)0);
    ck_assert_ptr_nonnull(f);
    check_rejected(f, EINVAL, "bad code 0");
    fut_release(f);
    f = fut_submit(g_rt, raise_code_work, (void *)(intptr_t)-3);
    ck_assert_ptr_nonnull(f);
    check_rejected(f, EINVAL, "bad code -3");
    fut_release(f);
    /* And so do codes over 65535; 65535 itself is kept. */
    f = fut_submit(g_rt, raise_code_work, (void *)(intptr_t)70000);
    ck_assert_ptr_nonnull(f);
    check_rejected(f, EINVAL, "bad code 70000");
    fut_release(f);
    f = fut_submit(g_rt, raise_code_work, (void *)(intptr_t)65535);
    ck_assert_ptr_nonnull(f);
    check_rejected(f, 65535, "bad code 65535");
    fut_release(f);

    /* Outside work: returns NULL, no effect. */
    ck_assert_ptr_null(fut_raise(EPERM, "outside %d", 1));
    ck_assert_int_eq(fut_cancelled(), 0);

    tu_rt_finish(g_rt);
}
END_TEST

/* One worker: a raise in one job must not leak into the next job run by
 * the same thread. */
START_TEST(test_raise_does_not_leak)
{
    enum { N = 100 };
    fut_future *f[N];

    g_rt = tu_rt_new(1);
    for (int i = 0; i < N; i++) {
        f[i] = i % 2 ? fut_submit(g_rt, plain_work, TU_PTR(i))
                     : fut_submit(g_rt, raise_work, (void *)"x");
        ck_assert_ptr_nonnull(f[i]);
    }
    for (int i = 0; i < N; i++) {
        TU_SETTLE(f[i]);
        if (i % 2) {
            TU_REQUIRE(fut_state(f[i]) == FUT_RESOLVED, "job %d: state %d", i, fut_state(f[i]));
            TU_REQUIRE(TU_UINT(fut_value(f[i])) == (uintptr_t)i, "job %d: wrong value", i);
            TU_REQUIRE(fut_error(f[i]) == 0, "job %d: error %d", i, fut_error(f[i]));
        } else {
            TU_REQUIRE(fut_state(f[i]) == FUT_REJECTED, "job %d: state %d", i, fut_state(f[i]));
            TU_REQUIRE(fut_error(f[i]) == ENOENT, "job %d: error %d", i, fut_error(f[i]));
        }
        fut_release(f[i]);
    }
    tu_rt_finish(g_rt);
}
END_TEST

/* ------------------------------------------------------------------------
 * fut_wait
 * ---------------------------------------------------------------------- */

START_TEST(test_wait_timeout)
{
    fut_promise *p;
    fut_future *f;
    uint64_t t0, el;

    g_rt = tu_rt_new(2);
    p = fut_promise_new(g_rt);
    ck_assert_ptr_nonnull(p);
    f = fut_promise_future(p);
    ck_assert_ptr_nonnull(f);

    t0 = tu_now_ns();
    ck_assert_int_eq(fut_wait(f, 0.05), ETIMEDOUT);
    el = tu_now_ns() - t0;
    ck_assert_msg(el >= 49000000u, "fut_wait(0.05) returned after %llu ns", (unsigned long long)el);
    ck_assert_msg(el < 2000000000ull * TU_SLOW, "fut_wait(0.05) returned after %llu ns",
                  (unsigned long long)el);
    ck_assert_int_eq(fut_wait(f, 0), ETIMEDOUT);
    ck_assert_int_eq(fut_state(f), FUT_PENDING);

    ck_assert_int_eq(fut_promise_resolve(p, TU_PTR(9)), 0);
    ck_assert_int_eq(fut_wait(f, 0), 0);
    ck_assert_int_eq(fut_wait(f, 0.05), 0);
    ck_assert_int_eq(fut_wait(f, -1), 0);
    ck_assert_int_eq(fut_state(f), FUT_RESOLVED);
    ck_assert_uint_eq(TU_UINT(fut_value(f)), 9);

    fut_release(f);
    fut_promise_free(p);
    tu_rt_finish(g_rt);
}
END_TEST

typedef struct later {
    fut_promise *p;
    unsigned delay_ms;
    int rc;
} later;

static void *resolve_later_main(void *arg)
{
    later *l = arg;
    tu_sleep_ms(l->delay_ms);
    l->rc = fut_promise_resolve(l->p, TU_PTR(77));
    return NULL;
}

/* A promise resolved from another thread wakes a waiter with no limit. */
START_TEST(test_wait_other_thread)
{
    later l;
    pthread_t th;
    fut_future *f;

    g_rt = tu_rt_new(2);
    l.p = fut_promise_new(g_rt);
    ck_assert_ptr_nonnull(l.p);
    l.delay_ms = 30;
    l.rc = -1;
    f = fut_promise_future(l.p);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(pthread_create(&th, NULL, resolve_later_main, &l), 0);
    ck_assert_int_eq(fut_wait(f, -1), 0);
    ck_assert_int_eq(fut_state(f), FUT_RESOLVED);
    ck_assert_uint_eq(TU_UINT(fut_value(f)), 77);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(l.rc, 0);
    /* Second settle loses. */
    ck_assert_int_eq(fut_promise_resolve(l.p, TU_PTR(78)), EALREADY);
    ck_assert_int_eq(fut_promise_reject(l.p, EIO, "late"), EALREADY);
    ck_assert_int_eq(fut_cancel(f), EALREADY);
    ck_assert_int_eq(fut_state(f), FUT_RESOLVED);
    ck_assert_uint_eq(TU_UINT(fut_value(f)), 77);
    ck_assert_int_eq(fut_error(f), 0);
    fut_release(f);
    fut_promise_free(l.p);
    tu_rt_finish(g_rt);
}
END_TEST

/* fut_wait on the dispatcher thread returns EDEADLK instead of waiting. */
typedef struct dl_ctx {
    fut_future *pending;
    atomic_int runs;
    int rc0, rc1, rc_inf;
    uint64_t elapsed_ns;
} dl_ctx;

static void *deadlock_then(void *value, void *arg)
{
    dl_ctx *c = arg;
    uint64_t t0 = tu_now_ns();
    TU_WCHECK(fut_on_dispatcher(g_rt));
    TU_WCHECK(fut_on_dispatcher(NULL));
    c->rc0 = fut_wait(c->pending, 0);
    c->rc1 = fut_wait(c->pending, 1.0);
    c->rc_inf = fut_wait(c->pending, -1);
    c->elapsed_ns = tu_now_ns() - t0;
    atomic_fetch_add(&c->runs, 1);
    return value;
}

START_TEST(test_wait_on_dispatcher)
{
    fut_promise *p, *q;
    fut_future *pf, *qf, *d;
    dl_ctx c;

    g_rt = tu_rt_new(2);
    p = fut_promise_new(g_rt);
    q = fut_promise_new(g_rt);
    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_nonnull(q);
    pf = fut_promise_future(p);
    qf = fut_promise_future(q);
    memset(&c, 0, sizeof c);
    c.pending = pf;
    atomic_init(&c.runs, 0);
    c.rc0 = c.rc1 = c.rc_inf = -1;
    d = fut_then(qf, deadlock_then, &c);
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(fut_promise_resolve(q, TU_PTR(3)), 0);
    TU_SETTLE(d);
    TU_ASSERT_NO_WFAIL();
    ck_assert_int_eq(atomic_load(&c.runs), 1);
    ck_assert_int_eq(c.rc0, EDEADLK);
    ck_assert_int_eq(c.rc1, EDEADLK);
    ck_assert_int_eq(c.rc_inf, EDEADLK);
    ck_assert_msg(c.elapsed_ns < 500000000ull, "EDEADLK took %llu ns", (unsigned long long)c.elapsed_ns);
    ck_assert_int_eq(fut_state(d), FUT_RESOLVED);
    ck_assert_uint_eq(TU_UINT(fut_value(d)), 3);
    ck_assert_int_eq(fut_state(pf), FUT_PENDING);
    ck_assert_int_eq(fut_promise_resolve(p, NULL), 0);
    fut_release(d);
    fut_release(pf);
    fut_release(qf);
    fut_promise_free(p);
    fut_promise_free(q);
    tu_rt_finish(g_rt);
}
END_TEST

/* With one compute worker, work that waits for other compute work (or for
 * a promise that other compute work resolves) must not deadlock: the
 * waiting worker runs the other jobs. */
static void *leaf_work(void *arg)
{
    TU_WCHECK(tu_on_lane_thread(FUT_LANE_COMPUTE));
    return TU_PTR(TU_UINT(arg) * 10);
}

static void *waiting_work(void *arg)
{
    uintptr_t v = TU_UINT(arg);
    fut_future *f = fut_submit(g_rt, leaf_work, TU_PTR(v));
    int rc;
    void *out;
    TU_WCHECK(fut_on_dispatcher(g_rt) == 0);
    TU_WCHECK(f != NULL);
    if (f == NULL)
        return NULL;
    rc = fut_wait(f, TU_WAIT_MS / 1000.0);
    TU_WCHECK_EQ(rc, 0);
    TU_WCHECK_EQ(fut_state(f), FUT_RESOLVED);
    out = TU_PTR(TU_UINT(fut_value(f)) + 1);
    fut_release(f);
    return out;
}

/* Waits on a waiting job: two levels of nesting. */
static void *nested_waiting_work(void *arg)
{
    fut_future *f = fut_submit(g_rt, waiting_work, arg);
    void *out;
    TU_WCHECK(f != NULL);
    if (f == NULL)
        return NULL;
    TU_WCHECK_EQ(fut_wait(f, TU_WAIT_MS / 1000.0), 0);
    out = TU_PTR(TU_UINT(fut_value(f)) + 1);
    fut_release(f);
    return out;
}

static void *resolver_work(void *arg)
{
    TU_WCHECK(fut_on_dispatcher(g_rt) == 0);
    TU_WCHECK_EQ(fut_promise_resolve(arg, TU_PTR(555)), 0);
    return NULL;
}

/* Submits a job that resolves a promise, then waits for the promise. */
static void *promise_waiting_work(void *arg)
{
    fut_promise *p = fut_promise_new(g_rt);
    fut_future *pf, *r;
    void *out;
    TU_WCHECK(p != NULL);
    if (p == NULL)
        return NULL;
    pf = fut_promise_future(p);
    r = fut_submit(g_rt, resolver_work, p);
    TU_WCHECK(pf != NULL && r != NULL);
    TU_WCHECK_EQ(fut_wait(pf, TU_WAIT_MS / 1000.0), 0);
    out = fut_value(pf);
    TU_WCHECK_EQ(fut_wait(r, TU_WAIT_MS / 1000.0), 0);
    fut_release(r);
    fut_release(pf);
    fut_promise_free(p);
    (void)arg;
    return out;
}

START_TEST(test_wait_on_worker)
{
    enum { N = 8 };
    fut_future *f[N], *n, *pw;

    g_rt = tu_rt_new(1);
    for (int i = 0; i < N; i++) {
        f[i] = fut_submit(g_rt, waiting_work, TU_PTR(i + 1));
        ck_assert_ptr_nonnull(f[i]);
    }
    n = fut_submit(g_rt, nested_waiting_work, TU_PTR(7));
    pw = fut_submit(g_rt, promise_waiting_work, NULL);
    ck_assert_ptr_nonnull(n);
    ck_assert_ptr_nonnull(pw);
    for (int i = 0; i < N; i++) {
        TU_SETTLE(f[i]);
        ck_assert_int_eq(fut_state(f[i]), FUT_RESOLVED);
        ck_assert_uint_eq(TU_UINT(fut_value(f[i])), (uintptr_t)(i + 1) * 10 + 1);
        fut_release(f[i]);
    }
    TU_SETTLE(n);
    ck_assert_int_eq(fut_state(n), FUT_RESOLVED);
    ck_assert_uint_eq(TU_UINT(fut_value(n)), 72);
    TU_SETTLE(pw);
    ck_assert_int_eq(fut_state(pw), FUT_RESOLVED);
    ck_assert_uint_eq(TU_UINT(fut_value(pw)), 555);
    fut_release(n);
    fut_release(pw);
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* ------------------------------------------------------------------------
 * Promises
 * ---------------------------------------------------------------------- */

START_TEST(test_promise_basics)
{
    fut_promise *p;
    fut_future *f, *f2;

    g_rt = tu_rt_new(2);

    /* The same future every time, a new reference each time. */
    p = fut_promise_new(g_rt);
    ck_assert_ptr_nonnull(p);
    f = fut_promise_future(p);
    f2 = fut_promise_future(p);
    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_eq(f, f2);
    fut_release(f2);
    ck_assert_int_eq(fut_state(f), FUT_PENDING);
    ck_assert_ptr_null(fut_value(f));
    ck_assert_int_eq(fut_error(f), 0);
    ck_assert_str_eq(fut_message(f), "");
    ck_assert_int_eq(fut_promise_resolve(p, TU_PTR(11)), 0);
    ck_assert_int_eq(fut_promise_resolve(p, TU_PTR(12)), EALREADY);
    ck_assert_int_eq(fut_promise_reject(p, EIO, "no"), EALREADY);
    ck_assert_int_eq(fut_state(f), FUT_RESOLVED);
    ck_assert_uint_eq(TU_UINT(fut_value(f)), 11);
    /* Freeing a settled promise changes nothing. */
    fut_promise_free(p);
    ck_assert_int_eq(fut_state(f), FUT_RESOLVED);
    ck_assert_uint_eq(TU_UINT(fut_value(f)), 11);
    fut_release(f);

    /* Reject with a formatted message. */
    p = fut_promise_new(g_rt);
    ck_assert_ptr_nonnull(p);
    f = fut_promise_future(p);
    ck_assert_int_eq(fut_promise_reject(p, EACCES, "denied %d/%s", 7, "x"), 0);
    ck_assert_int_eq(fut_promise_reject(p, EIO, "again"), EALREADY);
    ck_assert_int_eq(fut_promise_resolve(p, TU_PTR(1)), EALREADY);
    ck_assert_int_eq(fut_wait(f, 0), 0);
    ck_assert_int_eq(fut_state(f), FUT_REJECTED);
    ck_assert_int_eq(fut_error(f), EACCES);
    ck_assert_str_eq(fut_message(f), "denied 7/x");
    ck_assert_ptr_null(fut_value(f));
    fut_release(f); /* the promise still holds it */
    fut_promise_free(p);

    /* A code <= 0 never makes a future rejected with code <= 0. */
    p = fut_promise_new(g_rt);
    ck_assert_ptr_nonnull(p);
    f = fut_promise_future(p);
    {
        int rc = fut_promise_reject(p, 0, "zero");
        ck_assert_msg(rc == 0 || rc == EINVAL, "reject(code 0) returned %d", rc);
        if (rc == 0) {
            ck_assert_int_eq(fut_state(f), FUT_REJECTED);
            ck_assert_int_eq(fut_error(f), EINVAL);
        } else {
            ck_assert_int_eq(fut_state(f), FUT_PENDING);
            ck_assert_int_eq(fut_promise_resolve(p, NULL), 0);
        }
    }
    fut_release(f);
    fut_promise_free(p);

    /* Codes are 1 to 65535: a larger one is refused, the promise stays
     * pending; the largest is kept exactly. */
    p = fut_promise_new(g_rt);
    ck_assert_ptr_nonnull(p);
    f = fut_promise_future(p);
    ck_assert_int_eq(fut_promise_reject(p, 65536, "too big"), EINVAL);
    ck_assert_int_eq(fut_promise_reject(p, -5, "negative"), EINVAL);
    ck_assert_int_eq(fut_state(f), FUT_PENDING);
    ck_assert_int_eq(fut_promise_reject(p, 65535, "largest"), 0);
    ck_assert_int_eq(fut_error(f), 65535);
    ck_assert_str_eq(fut_message(f), "largest");
    fut_release(f);
    fut_promise_free(p);

    /* A promise whose future nobody took; one whose future was released
     * before the promise was settled. */
    p = fut_promise_new(g_rt);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(fut_promise_resolve(p, NULL), 0);
    fut_promise_free(p);
    p = fut_promise_new(g_rt);
    ck_assert_ptr_nonnull(p);
    f = fut_promise_future(p);
    fut_release(f);
    ck_assert_int_eq(fut_promise_resolve(p, TU_PTR(2)), 0);
    fut_promise_free(p);

    tu_rt_finish(g_rt);
}
END_TEST

/* A promise dropped unsettled rejects its future with FUT_EBROKEN: a
 * waiter on another thread and a continuation both see it. */
typedef struct waiter {
    fut_future *f;
    int rc;
} waiter;

static void *waiter_main(void *arg)
{
    waiter *w = arg;
    w->rc = fut_wait(w->f, TU_WAIT_MS / 1000.0);
    return NULL;
}

typedef struct catch_rec {
    atomic_int runs;
    int code;
    char msg[128];
} catch_rec;

static void *record_catch(int code, const char *message, void *arg)
{
    catch_rec *c = arg;
    TU_WCHECK(fut_on_dispatcher(g_rt));
    c->code = code;
    snprintf(c->msg, sizeof c->msg, "%s", message ? message : "(null)");
    atomic_fetch_add(&c->runs, 1);
    return TU_PTR(1234);
}

START_TEST(test_promise_broken)
{
    fut_promise *p;
    fut_future *f, *d;
    waiter w;
    pthread_t th;
    catch_rec c;

    g_rt = tu_rt_new(2);
    p = fut_promise_new(g_rt);
    ck_assert_ptr_nonnull(p);
    f = fut_promise_future(p);
    memset(&c, 0, sizeof c);
    atomic_init(&c.runs, 0);
    d = fut_catch(f, record_catch, &c);
    ck_assert_ptr_nonnull(d);
    w.f = f;
    w.rc = -1;
    ck_assert_int_eq(pthread_create(&th, NULL, waiter_main, &w), 0);
    tu_sleep_ms(20);
    fut_promise_free(p);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(w.rc, 0);
    ck_assert_int_eq(fut_state(f), FUT_REJECTED);
    ck_assert_int_eq(fut_error(f), FUT_EBROKEN);
    ck_assert_msg(strstr(fut_message(f), "broken") != NULL, "message \"%s\"", fut_message(f));
    TU_SETTLE(d);
    ck_assert_int_eq(atomic_load(&c.runs), 1);
    ck_assert_int_eq(c.code, FUT_EBROKEN);
    ck_assert_int_eq(fut_state(d), FUT_RESOLVED);
    ck_assert_uint_eq(TU_UINT(fut_value(d)), 1234);
    fut_release(d);
    fut_release(f);
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* ------------------------------------------------------------------------
 * Cancellation
 * ---------------------------------------------------------------------- */

START_TEST(test_cancel_promise)
{
    fut_promise *p;
    fut_future *f, *d;
    catch_rec c;

    g_rt = tu_rt_new(2);
    p = fut_promise_new(g_rt);
    ck_assert_ptr_nonnull(p);
    f = fut_promise_future(p);
    memset(&c, 0, sizeof c);
    atomic_init(&c.runs, 0);
    d = fut_catch(f, record_catch, &c);
    ck_assert_ptr_nonnull(d);

    ck_assert_int_eq(fut_cancel(f), 0);
    /* Settled at once. */
    ck_assert_int_eq(fut_state(f), FUT_CANCELLED);
    ck_assert_int_eq(fut_wait(f, 0), 0);
    ck_assert_int_eq(fut_error(f), ECANCELED);
    ck_assert_ptr_null(fut_value(f));
    ck_assert_ptr_nonnull(fut_message(f));
    ck_assert_int_eq(fut_cancel(f), EALREADY);
    ck_assert_int_eq(fut_promise_resolve(p, TU_PTR(1)), EALREADY);
    ck_assert_int_eq(fut_promise_reject(p, EIO, "x"), EALREADY);
    ck_assert_int_eq(fut_state(f), FUT_CANCELLED);

    TU_SETTLE(d);
    ck_assert_int_eq(atomic_load(&c.runs), 1);
    ck_assert_int_eq(c.code, ECANCELED);
    ck_assert_int_eq(fut_state(d), FUT_RESOLVED);

    /* A settled future cannot be cancelled. */
    ck_assert_int_eq(fut_cancel(d), EALREADY);
    ck_assert_int_eq(fut_state(d), FUT_RESOLVED);

    fut_release(d);
    fut_release(f);
    fut_promise_free(p);
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* A raw pool job that holds its worker until a gate opens. */
typedef struct gate_job {
    fut_pool_job job;
    tu_gate *gate;
    tu_latch *started;
    atomic_int calls;
} gate_job;

static void gate_job_fn(fut_pool_job *job, int status)
{
    gate_job *g = TU_CONTAINER_OF(job, gate_job, job);
    TU_WCHECK_EQ(status, 0);
    tu_latch_count_down(g->started);
    tu_gate_wait(g->gate, TU_WAIT_MS);
    atomic_fetch_add(&g->calls, 1);
}

static atomic_int counted_runs[256];

static void *counted_work(void *arg)
{
    TU_WCHECK(fut_on_dispatcher(g_rt) == 0);
    atomic_fetch_add(&counted_runs[TU_UINT(arg)], 1);
    return TU_PTR(TU_UINT(arg) + 1);
}

/* Queued work that is cancelled never runs; _i = 0 compute lane (one
 * worker), _i = 1 blocking lane (cap 1). */
START_TEST(test_cancel_queued)
{
    enum { N = 100 };
    int lane = _i == 0 ? FUT_LANE_COMPUTE : FUT_LANE_BLOCKING;
    tu_gate gate;
    tu_latch started;
    gate_job gj;
    fut_future *f[N], *after;
    catch_rec c;
    fut_future *d;

    g_rt = tu_rt_new_opts(1, 1);
    tu_gate_init(&gate);
    tu_latch_init(&started, 1);
    memset(&gj, 0, sizeof gj);
    gj.gate = &gate;
    gj.started = &started;
    atomic_init(&gj.calls, 0);
    for (int i = 0; i < N; i++)
        atomic_store(&counted_runs[i], 0);

    ck_assert_int_eq(fut_pool_submit(fut_runtime_pool(g_rt), lane, &gj.job, gate_job_fn), 0);
    TU_LATCH_WAIT(&started, TU_WAIT_MS);

    for (int i = 0; i < N; i++) {
        f[i] = lane == FUT_LANE_COMPUTE ? fut_submit(g_rt, counted_work, TU_PTR(i))
                                        : fut_submit_blocking(g_rt, counted_work, TU_PTR(i));
        ck_assert_ptr_nonnull(f[i]);
    }
    memset(&c, 0, sizeof c);
    atomic_init(&c.runs, 0);
    d = fut_catch(f[0], record_catch, &c);
    ck_assert_ptr_nonnull(d);
    for (int i = 0; i < N; i += 2) {
        ck_assert_int_eq(fut_cancel(f[i]), 0);
        ck_assert_int_eq(fut_state(f[i]), FUT_CANCELLED);
        ck_assert_int_eq(fut_cancel(f[i]), EALREADY);
    }
    TU_SETTLE(d);
    ck_assert_int_eq(atomic_load(&c.runs), 1);
    ck_assert_int_eq(c.code, ECANCELED);
    for (int i = 1; i < N; i += 2)
        ck_assert_int_eq(fut_state(f[i]), FUT_PENDING);

    tu_gate_open(&gate);
    /* One thread per lane: a job queued after all others finishes last. */
    after = lane == FUT_LANE_COMPUTE ? fut_submit(g_rt, counted_work, TU_PTR(N))
                                     : fut_submit_blocking(g_rt, counted_work, TU_PTR(N));
    ck_assert_ptr_nonnull(after);
    TU_SETTLE(after);
    for (int i = 0; i < N; i++) {
        TU_SETTLE(f[i]);
        if (i % 2 == 0) {
            TU_REQUIRE(atomic_load(&counted_runs[i]) == 0, "cancelled job %d ran", i);
            TU_REQUIRE(fut_state(f[i]) == FUT_CANCELLED, "job %d: state %d", i, fut_state(f[i]));
            TU_REQUIRE(fut_error(f[i]) == ECANCELED, "job %d: error %d", i, fut_error(f[i]));
        } else {
            TU_REQUIRE(atomic_load(&counted_runs[i]) == 1, "job %d ran %d times", i,
                       atomic_load(&counted_runs[i]));
            TU_REQUIRE(fut_state(f[i]) == FUT_RESOLVED, "job %d: state %d", i, fut_state(f[i]));
            TU_REQUIRE(TU_UINT(fut_value(f[i])) == (uintptr_t)i + 1, "job %d: value", i);
        }
        fut_release(f[i]);
    }
    ck_assert_int_eq(atomic_load(&gj.calls), 1);
    fut_release(after);
    fut_release(d);
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
    /* The runtime is gone: nothing can still run a cancelled job now. */
    for (int i = 0; i < N; i += 2)
        TU_REQUIRE(atomic_load(&counted_runs[i]) == 0, "cancelled job %d ran", i);
    tu_gate_destroy(&gate);
    tu_latch_destroy(&started);
}
END_TEST

/* Long work sees fut_cancelled() once its future is cancelled. */
typedef struct long_ctx {
    tu_latch started, done;
    atomic_int saw_cancel;
    atomic_int cancelled_at_start;
} long_ctx;

static void *long_work(void *arg)
{
    long_ctx *c = arg;
    uint64_t end = tu_deadline_ms(TU_WAIT_MS);
    TU_WCHECK(fut_on_dispatcher(g_rt) == 0);
    atomic_store(&c->cancelled_at_start, fut_cancelled());
    tu_latch_count_down(&c->started);
    while (tu_now_ns() < end) {
        if (fut_cancelled()) {
            atomic_store(&c->saw_cancel, 1);
            break;
        }
        tu_sleep_ms(1);
    }
    tu_latch_count_down(&c->done);
    return TU_PTR(99);
}

static void *check_not_cancelled_work(void *arg)
{
    (void)arg;
    return TU_PTR(fut_cancelled() ? 1 : 2);
}

START_TEST(test_cancelled_in_work)
{
    long_ctx c;
    fut_future *f, *next;

    g_rt = tu_rt_new(_i == 0 ? 1 : 2);
    tu_latch_init(&c.started, 1);
    tu_latch_init(&c.done, 1);
    atomic_init(&c.saw_cancel, 0);
    atomic_init(&c.cancelled_at_start, -1);
    f = _i == 2 ? fut_submit_blocking(g_rt, long_work, &c) : fut_submit(g_rt, long_work, &c);
    ck_assert_ptr_nonnull(f);
    TU_LATCH_WAIT(&c.started, TU_WAIT_MS);
    ck_assert_int_eq(atomic_load(&c.cancelled_at_start), 0);
    ck_assert_int_eq(fut_cancel(f), 0);
    ck_assert_int_eq(fut_state(f), FUT_CANCELLED);
    ck_assert_int_eq(fut_cancelled(), 0); /* not inside work */
    TU_LATCH_WAIT(&c.done, TU_WAIT_MS);
    ck_assert_int_eq(atomic_load(&c.saw_cancel), 1);
    /* The next job on the same worker starts uncancelled. */
    next = _i == 2 ? fut_submit_blocking(g_rt, check_not_cancelled_work, NULL)
                   : fut_submit(g_rt, check_not_cancelled_work, NULL);
    ck_assert_ptr_nonnull(next);
    TU_SETTLE(next);
    ck_assert_uint_eq(TU_UINT(fut_value(next)), 2);
    /* The work's return value does not change a cancelled future. */
    ck_assert_int_eq(fut_state(f), FUT_CANCELLED);
    ck_assert_int_eq(fut_error(f), ECANCELED);
    ck_assert_ptr_null(fut_value(f));
    fut_release(next);
    fut_release(f);
    tu_rt_finish(g_rt);
    tu_latch_destroy(&c.started);
    tu_latch_destroy(&c.done);
}
END_TEST

/* ------------------------------------------------------------------------
 * The unobserved-error hook
 * ---------------------------------------------------------------------- */

typedef struct hook_rec {
    pthread_mutex_t lock;
    int calls;
    int code;
    char msg[128];
} hook_rec;

static hook_rec g_hook = { PTHREAD_MUTEX_INITIALIZER, 0, 0, "" };

static void record_hook(int code, const char *message, void *arg)
{
    hook_rec *h = arg;
    pthread_mutex_lock(&h->lock);
    h->calls++;
    h->code = code;
    snprintf(h->msg, sizeof h->msg, "%s", message ? message : "(null)");
    pthread_mutex_unlock(&h->lock);
}

static int hook_calls(void)
{
    int n;
    pthread_mutex_lock(&g_hook.lock);
    n = g_hook.calls;
    pthread_mutex_unlock(&g_hook.lock);
    return n;
}

static void hook_reset(void)
{
    pthread_mutex_lock(&g_hook.lock);
    g_hook.calls = 0;
    g_hook.code = 0;
    g_hook.msg[0] = '\0';
    pthread_mutex_unlock(&g_hook.lock);
}

/* Wait until the hook was called n times (or a short while, for n = 0). */
static void expect_hook(int n, int code, const char *msg)
{
    bool ok = false;
    if (n > 0)
        TU_POLL(ok, hook_calls() >= n, TU_WAIT_MS);
    tu_sleep_ms(20); /* a second call would show now */
    pthread_mutex_lock(&g_hook.lock);
    ck_assert_msg(g_hook.calls == n, "hook called %d times, expected %d (last: %d \"%s\")",
                  g_hook.calls, n, g_hook.code, g_hook.msg);
    if (n > 0) {
        ck_assert_int_eq(g_hook.code, code);
        ck_assert_str_eq(g_hook.msg, msg);
    }
    pthread_mutex_unlock(&g_hook.lock);
    (void)ok;
}

static void *pass_then(void *value, void *arg)
{
    (void)arg;
    TU_WCHECK(0); /* never runs: its future is rejected */
    return value;
}

START_TEST(test_unobserved_hook)
{
    fut_promise *p;
    fut_future *f, *d;
    catch_rec c;
    bool ok = false;

    g_rt = tu_rt_new(2);
    hook_reset();
    fut_set_unobserved_hook(record_hook, &g_hook);

    /* Released unread: reported once, with code and message. */
    p = fut_promise_new(g_rt);
    f = fut_promise_future(p);
    ck_assert_int_eq(fut_promise_reject(p, EIO, "disk %d", 3), 0);
    fut_release(f);
    fut_promise_free(p);
    expect_hook(1, EIO, "disk 3");

    /* Read with fut_error first: not reported. */
    hook_reset();
    p = fut_promise_new(g_rt);
    f = fut_promise_future(p);
    ck_assert_int_eq(fut_promise_reject(p, EIO, "read"), 0);
    ck_assert_int_eq(fut_error(f), EIO);
    fut_release(f);
    fut_promise_free(p);
    expect_hook(0, 0, NULL);

    /* A catch observes it (and the catch's own future resolves). */
    p = fut_promise_new(g_rt);
    f = fut_promise_future(p);
    memset(&c, 0, sizeof c);
    atomic_init(&c.runs, 0);
    d = fut_catch(f, record_catch, &c);
    ck_assert_int_eq(fut_promise_reject(p, ENOENT, "caught"), 0);
    TU_SETTLE(d);
    ck_assert_int_eq(atomic_load(&c.runs), 1);
    fut_release(d);
    fut_release(f);
    fut_promise_free(p);
    expect_hook(0, 0, NULL);

    /* A then passes it on: the original counts as observed, the derived
     * future, released unread, is reported once. */
    p = fut_promise_new(g_rt);
    f = fut_promise_future(p);
    d = fut_then(f, pass_then, NULL);
    ck_assert_ptr_nonnull(d);
    ck_assert_int_eq(fut_promise_reject(p, EPERM, "passed %s", "on"), 0);
    TU_SETTLE(d);
    fut_release(d);
    fut_release(f);
    fut_promise_free(p);
    expect_hook(1, EPERM, "passed on");

    /* Work that raises, its future released at once: reported once when
     * the last reference goes. */
    hook_reset();
    f = fut_submit(g_rt, raise_work, (void *)"thing");
    ck_assert_ptr_nonnull(f);
    fut_release(f);
    expect_hook(1, ENOENT, "no thing #42");

    /* Resolved futures are never reported. */
    hook_reset();
    f = fut_submit(g_rt, plain_work, TU_PTR(1));
    TU_SETTLE(f);
    fut_release(f);

    TU_POLL(ok, fut_runtime_live(g_rt) == 0, TU_WAIT_MS);
    expect_hook(0, 0, NULL);
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
    expect_hook(0, 0, NULL);
    fut_set_unobserved_hook(NULL, NULL);
    (void)ok;
}
END_TEST

/* The default hook (and NULL restoring it) prints the message on stderr. */
START_TEST(test_unobserved_default)
{
    fut_promise *p;
    fut_future *f;
    char path[] = "/tmp/fut-test-stderr-XXXXXX";
    int fd = mkstemp(path);
    int saved;
    char buf[4096];
    ssize_t n;
    bool ok = false;

    ck_assert_int_ge(fd, 0);
    unlink(path);
    g_rt = tu_rt_new(2);
    fut_set_unobserved_hook(record_hook, &g_hook);
    fut_set_unobserved_hook(NULL, NULL);

    fflush(stderr);
    saved = dup(2);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_ge(dup2(fd, 2), 0);
    p = fut_promise_new(g_rt);
    f = fut_promise_future(p);
    ck_assert_int_eq(fut_promise_reject(p, EIO, "marker-%d-unread", 4242), 0);
    fut_release(f);
    fut_promise_free(p);
    for (uint64_t end = tu_deadline_ms(TU_WAIT_MS); !ok && tu_now_ns() < end;) {
        fflush(stderr);
        n = pread(fd, buf, sizeof buf - 1, 0);
        if (n > 0) {
            buf[n] = '\0';
            ok = strstr(buf, "marker-4242-unread") != NULL;
        }
        if (!ok)
            tu_sleep_ms(1);
    }
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fd);
    ck_assert_msg(ok, "the default hook did not print the message on stderr");
    ck_assert_int_eq(hook_calls(), 0);
    tu_rt_finish(g_rt);
}
END_TEST

/* ------------------------------------------------------------------------
 * Bad arguments, runtime queries
 * ---------------------------------------------------------------------- */

static void *id_then(void *value, void *arg)
{
    (void)arg;
    return value;
}

static void *id_catch(int code, const char *message, void *arg)
{
    (void)code;
    (void)message;
    return arg;
}

static void nop_finally(fut_future *f, void *arg)
{
    (void)f;
    (void)arg;
}

#define EXPECT_NULL_EINVAL(expr)                                               \
    do {                                                                       \
        void *tu_p_;                                                           \
        errno = 0;                                                             \
        tu_p_ = (void *)(expr);                                                \
        ck_assert_msg(tu_p_ == NULL, "%s did not return NULL", #expr);         \
        ck_assert_msg(errno == EINVAL, "%s: errno %d, expected EINVAL", #expr, errno); \
    } while (0)

START_TEST(test_bad_args)
{
    fut_pool_options o;
    fut_promise *p;
    fut_future *f;

    ck_assert_int_eq(fut_pool_options_init(&o), 0);
    o.compute_threads = 0;
    EXPECT_NULL_EINVAL(fut_runtime_new(&o));

    g_rt = tu_rt_new(2);
    ck_assert_ptr_nonnull(fut_runtime_pool(g_rt));
    ck_assert_uint_eq(fut_pool_compute_threads(fut_runtime_pool(g_rt)), 2);
    ck_assert_int_eq(fut_on_dispatcher(g_rt), 0);
    ck_assert_int_eq(fut_on_dispatcher(NULL), 0);
    ck_assert_int_eq(fut_cancelled(), 0);
    ck_assert_ptr_null(fut_raise(EIO, "outside"));

    EXPECT_NULL_EINVAL(fut_submit(g_rt, NULL, NULL));
    EXPECT_NULL_EINVAL(fut_submit_blocking(g_rt, NULL, NULL));
    EXPECT_NULL_EINVAL(fut_promise_future(NULL));

    p = fut_promise_new(g_rt);
    ck_assert_ptr_nonnull(p);
    f = fut_promise_future(p);
    ck_assert_ptr_nonnull(f);
    EXPECT_NULL_EINVAL(fut_then(NULL, id_then, NULL));
    EXPECT_NULL_EINVAL(fut_then(f, NULL, NULL));
    EXPECT_NULL_EINVAL(fut_catch(NULL, id_catch, NULL));
    EXPECT_NULL_EINVAL(fut_catch(f, NULL, NULL));
    EXPECT_NULL_EINVAL(fut_finally(NULL, nop_finally, NULL));
    EXPECT_NULL_EINVAL(fut_finally(f, NULL, NULL));

    ck_assert_int_eq(fut_promise_resolve(NULL, NULL), EINVAL);
    ck_assert_int_eq(fut_promise_reject(NULL, EIO, "x"), EINVAL);
    ck_assert_int_eq(fut_cancel(NULL), EINVAL);
    ck_assert_int_eq(fut_wait(NULL, 0), EINVAL);
    ck_assert_int_eq(fut_wait(NULL, -1), EINVAL);
    ck_assert_int_eq(fut_state(NULL), FUT_PENDING);
    ck_assert_ptr_null(fut_value(NULL));
    fut_release(NULL);
    fut_promise_free(NULL);
    ck_assert_int_eq(fut_runtime_free(NULL), 0);

    /* fut_retain returns its argument and adds a reference. */
    ck_assert_ptr_eq(fut_retain(f), f);
    fut_release(f);
    ck_assert_int_eq(fut_state(f), FUT_PENDING);
    ck_assert_uint_ge(fut_runtime_live(g_rt), 1);

    ck_assert_int_eq(fut_promise_resolve(p, TU_PTR(4)), 0);
    ck_assert_uint_eq(TU_UINT(fut_value(f)), 4);
    fut_release(f);
    fut_promise_free(p);
    tu_rt_finish(g_rt);
}
END_TEST

/* fut_runtime_free from the dispatcher or a pool thread returns EDEADLK
 * and frees nothing. */
static void *free_from_work(void *arg)
{
    (void)arg;
    return TU_PTR(fut_runtime_free(g_rt));
}

static void *free_from_then(void *value, void *arg)
{
    (void)value;
    (void)arg;
    TU_WCHECK(fut_on_dispatcher(g_rt));
    return TU_PTR(fut_runtime_free(g_rt));
}

START_TEST(test_free_edeadlk)
{
    fut_future *f, *b, *d, *again;

    g_rt = tu_rt_new(2);
    f = fut_submit(g_rt, free_from_work, NULL);
    b = fut_submit_blocking(g_rt, free_from_work, NULL);
    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_nonnull(b);
    TU_SETTLE(f);
    TU_SETTLE(b);
    ck_assert_uint_eq(TU_UINT(fut_value(f)), EDEADLK);
    ck_assert_uint_eq(TU_UINT(fut_value(b)), EDEADLK);
    d = fut_then(f, free_from_then, NULL);
    ck_assert_ptr_nonnull(d);
    TU_SETTLE(d);
    ck_assert_int_eq(fut_state(d), FUT_RESOLVED);
    ck_assert_uint_eq(TU_UINT(fut_value(d)), EDEADLK);
    /* Still alive. */
    again = fut_submit(g_rt, plain_work, TU_PTR(8));
    ck_assert_ptr_nonnull(again);
    TU_SETTLE(again);
    ck_assert_uint_eq(TU_UINT(fut_value(again)), 8);
    fut_release(again);
    fut_release(d);
    fut_release(b);
    fut_release(f);
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* ------------------------------------------------------------------------
 * The default runtime (NULL): made on first use in this forked test
 * process, torn down at its exit.
 * ---------------------------------------------------------------------- */

static atomic_int default_then_runs;

static void *default_work(void *arg)
{
    TU_WCHECK(fut_on_dispatcher(NULL) == 0);
    TU_WCHECK(tu_on_pool_thread());
    return TU_PTR(TU_UINT(arg) * 2);
}

static void *default_then(void *value, void *arg)
{
    (void)arg;
    TU_WCHECK(fut_on_dispatcher(NULL));
    atomic_fetch_add(&default_then_runs, 1);
    return TU_PTR(TU_UINT(value) + 1);
}

START_TEST(test_default_runtime)
{
    fut_future *f, *b, *d, *pf;
    fut_promise *p;
    bool ok = false;

    g_rt = NULL;
    atomic_store(&default_then_runs, 0);
    f = fut_submit(NULL, default_work, TU_PTR(21));
    ck_assert_ptr_nonnull(f);
    b = fut_submit_blocking(NULL, default_work, TU_PTR(5));
    ck_assert_ptr_nonnull(b);
    d = fut_then(f, default_then, NULL);
    ck_assert_ptr_nonnull(d);
    ck_assert_ptr_nonnull(fut_runtime_pool(NULL));
    TU_SETTLE(f);
    TU_SETTLE(b);
    TU_SETTLE(d);
    ck_assert_uint_eq(TU_UINT(fut_value(f)), 42);
    ck_assert_uint_eq(TU_UINT(fut_value(b)), 10);
    ck_assert_uint_eq(TU_UINT(fut_value(d)), 43);
    ck_assert_int_eq(atomic_load(&default_then_runs), 1);
    ck_assert_int_eq(fut_on_dispatcher(NULL), 0);

    p = fut_promise_new(NULL);
    ck_assert_ptr_nonnull(p);
    pf = fut_promise_future(p);
    ck_assert_int_eq(fut_promise_resolve(p, TU_PTR(6)), 0);
    ck_assert_uint_eq(TU_UINT(fut_value(pf)), 6);

    fut_release(pf);
    fut_promise_free(p);
    fut_release(d);
    fut_release(b);
    fut_release(f);
    TU_POLL(ok, fut_runtime_live(NULL) == 0, TU_WAIT_MS);
    ck_assert_msg(ok, "%llu futures of the default runtime still live",
                  (unsigned long long)fut_runtime_live(NULL));
    TU_ASSERT_NO_WFAIL();
}
END_TEST

static Suite *future_basic_suite(void)
{
    Suite *s = suite_create("future_basic");
    TCase *tc;

    tc = tu_tcase(s, "submit", 60);
    tcase_add_test(tc, test_submit_value);
    tcase_add_test(tc, test_raise);
    tcase_add_test(tc, test_raise_does_not_leak);
    tcase_add_test(tc, test_default_runtime);

    tc = tu_tcase(s, "wait", 60);
    tcase_add_test(tc, test_wait_timeout);
    tcase_add_test(tc, test_wait_other_thread);
    tcase_add_test(tc, test_wait_on_dispatcher);
    tcase_add_test(tc, test_wait_on_worker);

    tc = tu_tcase(s, "promise", 60);
    tcase_add_test(tc, test_promise_basics);
    tcase_add_test(tc, test_promise_broken);

    tc = tu_tcase(s, "cancel", 60);
    tcase_add_test(tc, test_cancel_promise);
    tcase_add_loop_test(tc, test_cancel_queued, 0, 2);
    tcase_add_loop_test(tc, test_cancelled_in_work, 0, 3);

    tc = tu_tcase(s, "unobserved", 60);
    tcase_add_test(tc, test_unobserved_hook);
    tcase_add_test(tc, test_unobserved_default);

    tc = tu_tcase(s, "args", 60);
    tcase_add_test(tc, test_bad_args);
    tcase_add_test(tc, test_free_edeadlk);
    return s;
}

int main(void)
{
    return tu_run_suite(future_basic_suite());
}
