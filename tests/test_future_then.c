/* test_future_then.c - continuations: fut_then/fut_catch/fut_finally semantics, fut_raise in continuations, attaching before/after/while settling (always run once on the dispatcher), attach order, 10,000-long chains, cancellation reaching continuations. */
#include "testutil.h"

static fut_runtime *g_rt;
static pthread_t g_test_thread;

/* ------------------------------------------------------------------------
 * Recording continuations. Each checks it runs on the dispatcher, never on
 * the test thread, and never nested inside another continuation.
 * ---------------------------------------------------------------------- */

static atomic_int in_continuation; /* continuations running right now */

static void enter_cont(void)
{
    TU_WCHECK(fut_on_dispatcher(g_rt));
    TU_WCHECK(fut_on_dispatcher(NULL));
    TU_WCHECK(!pthread_equal(pthread_self(), g_test_thread));
    TU_WCHECK_EQ(atomic_fetch_add(&in_continuation, 1), 0);
}

static void leave_cont(void)
{
    atomic_fetch_sub(&in_continuation, 1);
}

typedef struct rec {
    atomic_int runs;
    void *value;      /* then: value seen */
    int code;         /* catch: code seen; finally: fut_error seen */
    int state;        /* finally: fut_state seen */
    char msg[128];    /* catch / finally: message seen */
    void *ret;        /* what to return */
    int raise_code;   /* > 0: fut_raise this instead */
} rec;

static void rec_init(rec *r, void *ret, int raise_code)
{
    memset(r, 0, sizeof *r);
    atomic_init(&r->runs, 0);
    r->ret = ret;
    r->raise_code = raise_code;
    r->code = -1;
    r->state = -1;
}

static void *rec_then(void *value, void *arg)
{
    rec *r = arg;
    void *out;
    enter_cont();
    r->value = value;
    out = r->raise_code ? fut_raise(r->raise_code, "then raised %d", r->raise_code) : r->ret;
    atomic_fetch_add(&r->runs, 1);
    leave_cont();
    return out;
}

static void *rec_catch(int code, const char *message, void *arg)
{
    rec *r = arg;
    void *out;
    enter_cont();
    r->code = code;
    snprintf(r->msg, sizeof r->msg, "%s", message ? message : "(null)");
    out = r->raise_code ? fut_raise(r->raise_code, "catch raised %d", r->raise_code) : r->ret;
    atomic_fetch_add(&r->runs, 1);
    leave_cont();
    return out;
}

static void rec_finally(fut_future *f, void *arg)
{
    rec *r = arg;
    enter_cont();
    r->state = fut_state(f);
    r->value = fut_value(f);
    r->code = fut_error(f);
    snprintf(r->msg, sizeof r->msg, "%s", fut_message(f));
    if (r->raise_code)
        fut_raise(r->raise_code, "finally raised %d", r->raise_code);
    atomic_fetch_add(&r->runs, 1);
    leave_cont();
}

static void *inc_then(void *value, void *arg)
{
    (void)arg;
    enter_cont();
    leave_cont();
    return TU_PTR(TU_UINT(value) + 1);
}

static void begin(unsigned compute)
{
    g_test_thread = pthread_self();
    atomic_store(&in_continuation, 0);
    g_rt = tu_rt_new(compute);
}

static fut_promise *new_promise(fut_future **f)
{
    fut_promise *p = fut_promise_new(g_rt);
    ck_assert_ptr_nonnull(p);
    *f = fut_promise_future(p);
    ck_assert_ptr_nonnull(*f);
    return p;
}

/* The outcome a promise gets: _i of the semantic tests. */
enum outcome { RESOLVE, REJECT, CANCEL };

static void settle(fut_promise *p, fut_future *f, int how)
{
    if (how == RESOLVE)
        ck_assert_int_eq(fut_promise_resolve(p, TU_PTR(40)), 0);
    else if (how == REJECT)
        ck_assert_int_eq(fut_promise_reject(p, ENOENT, "gone %d", 1), 0);
    else
        ck_assert_int_eq(fut_cancel(f), 0);
}

/* Asserts d settled with the outcome `how` produces. */
static void check_passed_on(fut_future *d, int how)
{
    TU_SETTLE(d);
    if (how == RESOLVE) {
        ck_assert_int_eq(fut_state(d), FUT_RESOLVED);
        ck_assert_uint_eq(TU_UINT(fut_value(d)), 40);
        ck_assert_int_eq(fut_error(d), 0);
    } else if (how == REJECT) {
        ck_assert_int_eq(fut_state(d), FUT_REJECTED);
        ck_assert_int_eq(fut_error(d), ENOENT);
        ck_assert_str_eq(fut_message(d), "gone 1");
        ck_assert_ptr_null(fut_value(d));
    } else {
        int st = fut_state(d);
        ck_assert_msg(st == FUT_CANCELLED || st == FUT_REJECTED, "state %d", st);
        ck_assert_int_eq(fut_error(d), ECANCELED);
        ck_assert_ptr_null(fut_value(d));
    }
}

/* ------------------------------------------------------------------------
 * fut_then: runs on success, skips on error and passes the error on.
 * _i: 0 resolve, 1 reject, 2 cancel; _i + 3: same, attached after settling.
 * ---------------------------------------------------------------------- */

START_TEST(test_then_semantics)
{
    int how = _i % 3, after = _i >= 3;
    fut_promise *p;
    fut_future *f, *d;
    rec r;

    begin(2);
    p = new_promise(&f);
    rec_init(&r, TU_PTR(41), 0);
    if (after)
        settle(p, f, how);
    d = fut_then(f, rec_then, &r);
    ck_assert_ptr_nonnull(d);
    if (!after)
        settle(p, f, how);
    TU_SETTLE(d);
    if (how == RESOLVE) {
        ck_assert_int_eq(atomic_load(&r.runs), 1);
        ck_assert_uint_eq(TU_UINT(r.value), 40);
        ck_assert_int_eq(fut_state(d), FUT_RESOLVED);
        ck_assert_uint_eq(TU_UINT(fut_value(d)), 41);
    } else {
        tu_sleep_ms(5);
        ck_assert_int_eq(atomic_load(&r.runs), 0);
        check_passed_on(d, how);
    }
    fut_release(d);
    fut_release(f);
    fut_promise_free(p);
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* fut_raise inside a then rejects the derived future; a later catch sees it. */
START_TEST(test_then_raise)
{
    fut_promise *p;
    fut_future *f, *d, *c;
    rec r, rc;

    begin(2);
    p = new_promise(&f);
    rec_init(&r, TU_PTR(1), EPERM);
    rec_init(&rc, TU_PTR(500), 0);
    d = fut_then(f, rec_then, &r);
    c = fut_catch(d, rec_catch, &rc);
    ck_assert_ptr_nonnull(d);
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(fut_promise_resolve(p, TU_PTR(3)), 0);
    TU_SETTLE(c);
    ck_assert_int_eq(atomic_load(&r.runs), 1);
    ck_assert_int_eq(fut_state(d), FUT_REJECTED);
    ck_assert_int_eq(fut_error(d), EPERM);
    ck_assert_str_eq(fut_message(d), "then raised 1");
    ck_assert_int_eq(atomic_load(&rc.runs), 1);
    ck_assert_int_eq(rc.code, EPERM);
    ck_assert_str_eq(rc.msg, "then raised 1");
    ck_assert_int_eq(fut_state(c), FUT_RESOLVED);
    ck_assert_uint_eq(TU_UINT(fut_value(c)), 500);
    fut_release(c);
    fut_release(d);
    fut_release(f);
    fut_promise_free(p);
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* ------------------------------------------------------------------------
 * fut_catch: recovers from errors, skips on success.
 * _i: 0 resolve, 1 reject, 2 cancel, 3 reject with a raising catch;
 * _i + 4: attached after settling.
 * ---------------------------------------------------------------------- */

START_TEST(test_catch_semantics)
{
    int variant = _i % 4, after = _i >= 4;
    int how = variant == 3 ? REJECT : variant;
    fut_promise *p;
    fut_future *f, *d;
    rec r;

    begin(2);
    p = new_promise(&f);
    rec_init(&r, TU_PTR(77), variant == 3 ? EBUSY : 0);
    if (after)
        settle(p, f, how);
    d = fut_catch(f, rec_catch, &r);
    ck_assert_ptr_nonnull(d);
    if (!after)
        settle(p, f, how);
    TU_SETTLE(d);
    if (how == RESOLVE) {
        tu_sleep_ms(5);
        ck_assert_int_eq(atomic_load(&r.runs), 0);
        check_passed_on(d, RESOLVE);
    } else {
        ck_assert_int_eq(atomic_load(&r.runs), 1);
        if (how == REJECT) {
            ck_assert_int_eq(r.code, ENOENT);
            ck_assert_str_eq(r.msg, "gone 1");
        } else {
            ck_assert_int_eq(r.code, ECANCELED);
        }
        if (variant == 3) {
            ck_assert_int_eq(fut_state(d), FUT_REJECTED);
            ck_assert_int_eq(fut_error(d), EBUSY);
            ck_assert_str_eq(fut_message(d), "catch raised 16");
        } else {
            ck_assert_int_eq(fut_state(d), FUT_RESOLVED);
            ck_assert_uint_eq(TU_UINT(fut_value(d)), 77);
            ck_assert_int_eq(fut_error(d), 0);
        }
    }
    fut_release(d);
    fut_release(f);
    fut_promise_free(p);
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* ------------------------------------------------------------------------
 * fut_finally: runs on every outcome, passes the outcome through.
 * _i: 0 resolve, 1 reject, 2 cancel, 3..5 the same with a raising
 * finally; _i + 6: attached after settling.
 * ---------------------------------------------------------------------- */

START_TEST(test_finally_semantics)
{
    int how = _i % 3, raising = (_i % 6) >= 3, after = _i >= 6;
    fut_promise *p;
    fut_future *f, *d;
    rec r;

    begin(2);
    p = new_promise(&f);
    rec_init(&r, NULL, raising ? EROFS : 0);
    if (after)
        settle(p, f, how);
    d = fut_finally(f, rec_finally, &r);
    ck_assert_ptr_nonnull(d);
    if (!after)
        settle(p, f, how);
    TU_SETTLE(d);
    ck_assert_int_eq(atomic_load(&r.runs), 1);
    /* What fn saw of f. */
    if (how == RESOLVE) {
        ck_assert_int_eq(r.state, FUT_RESOLVED);
        ck_assert_uint_eq(TU_UINT(r.value), 40);
        ck_assert_int_eq(r.code, 0);
    } else if (how == REJECT) {
        ck_assert_int_eq(r.state, FUT_REJECTED);
        ck_assert_int_eq(r.code, ENOENT);
        ck_assert_str_eq(r.msg, "gone 1");
    } else {
        ck_assert_int_eq(r.state, FUT_CANCELLED);
        ck_assert_int_eq(r.code, ECANCELED);
    }
    if (raising) {
        char want[64];
        snprintf(want, sizeof want, "finally raised %d", EROFS);
        ck_assert_int_eq(fut_state(d), FUT_REJECTED);
        ck_assert_int_eq(fut_error(d), EROFS);
        ck_assert_str_eq(fut_message(d), want);
    } else {
        check_passed_on(d, how);
    }
    fut_release(d);
    fut_release(f);
    fut_promise_free(p);
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* Continuations on futures of submitted work (settled on a worker). */
static void *square_work(void *arg)
{
    TU_WCHECK(fut_on_dispatcher(g_rt) == 0);
    return TU_PTR(TU_UINT(arg) * TU_UINT(arg));
}

static void *failing_work(void *arg)
{
    TU_WCHECK(fut_on_dispatcher(g_rt) == 0);
    return fut_raise(EDOM, "bad %u", (unsigned)TU_UINT(arg));
}

START_TEST(test_work_continuations)
{
    enum { N = 200 };
    fut_future *f[N], *t[N], *c[N], *fi[N];
    rec rt[N], rc[N], rf[N];

    begin(2);
    for (int i = 0; i < N; i++) {
        f[i] = i % 3 == 2 ? fut_submit_blocking(g_rt, i % 2 ? failing_work : square_work, TU_PTR(i))
                          : fut_submit(g_rt, i % 2 ? failing_work : square_work, TU_PTR(i));
        ck_assert_ptr_nonnull(f[i]);
        rec_init(&rt[i], TU_PTR(i + 1), 0);
        rec_init(&rc[i], TU_PTR(i + 2), 0);
        rec_init(&rf[i], NULL, 0);
        t[i] = fut_then(f[i], rec_then, &rt[i]);
        c[i] = fut_catch(f[i], rec_catch, &rc[i]);
        fi[i] = fut_finally(f[i], rec_finally, &rf[i]);
        ck_assert_ptr_nonnull(t[i]);
        ck_assert_ptr_nonnull(c[i]);
        ck_assert_ptr_nonnull(fi[i]);
    }
    for (int i = 0; i < N; i++) {
        TU_SETTLE(t[i]);
        TU_SETTLE(c[i]);
        TU_SETTLE(fi[i]);
        TU_REQUIRE(atomic_load(&rf[i].runs) == 1, "finally %d ran %d times", i, atomic_load(&rf[i].runs));
        if (i % 2 == 0) {
            TU_REQUIRE(atomic_load(&rt[i].runs) == 1, "then %d ran %d times", i, atomic_load(&rt[i].runs));
            TU_REQUIRE(TU_UINT(rt[i].value) == (uintptr_t)(i * i), "then %d saw a wrong value", i);
            TU_REQUIRE(TU_UINT(fut_value(t[i])) == (uintptr_t)i + 1, "then %d: wrong result", i);
            TU_REQUIRE(atomic_load(&rc[i].runs) == 0, "catch %d ran", i);
            TU_REQUIRE(TU_UINT(fut_value(c[i])) == (uintptr_t)(i * i), "catch %d: wrong pass-through", i);
            TU_REQUIRE(TU_UINT(fut_value(fi[i])) == (uintptr_t)(i * i), "finally %d: wrong pass-through", i);
        } else {
            TU_REQUIRE(atomic_load(&rt[i].runs) == 0, "then %d ran", i);
            TU_REQUIRE(fut_error(t[i]) == EDOM, "then %d: error %d", i, fut_error(t[i]));
            TU_REQUIRE(atomic_load(&rc[i].runs) == 1, "catch %d ran %d times", i, atomic_load(&rc[i].runs));
            TU_REQUIRE(rc[i].code == EDOM, "catch %d saw %d", i, rc[i].code);
            TU_REQUIRE(TU_UINT(fut_value(c[i])) == (uintptr_t)i + 2, "catch %d: wrong result", i);
            TU_REQUIRE(fut_error(fi[i]) == EDOM, "finally %d: error %d", i, fut_error(fi[i]));
            TU_REQUIRE(fut_error(f[i]) == EDOM, "work %d: error %d", i, fut_error(f[i]));
        }
        fut_release(t[i]);
        fut_release(c[i]);
        fut_release(fi[i]);
        fut_release(f[i]);
    }
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* ------------------------------------------------------------------------
 * Attached after settling: still on the dispatcher, never on the attaching
 * thread (the test thread, a compute worker, or the dispatcher itself,
 * where it must run after the attaching continuation returned).
 * ---------------------------------------------------------------------- */

typedef struct attach_ctx {
    fut_future *settled;   /* already resolved */
    rec r;
    fut_future *derived;   /* the attached continuation's future */
    pthread_t attacher;    /* the attaching thread, if not the dispatcher */
    bool check_thread;     /* attacher is set */
    atomic_int attaching;  /* 1 while the attaching code is running */
} attach_ctx;

static void *checking_then(void *value, void *arg)
{
    attach_ctx *a = arg;
    enter_cont();
    if (a->check_thread)
        TU_WCHECK(!pthread_equal(pthread_self(), a->attacher));
    else /* attached by a continuation: runs after it returned */
        TU_WCHECK_EQ(atomic_load(&a->attaching), 0);
    atomic_fetch_add(&a->r.runs, 1);
    leave_cont();
    return TU_PTR(TU_UINT(value) + 1);
}

static void *attach_from_work(void *arg)
{
    attach_ctx *a = arg;
    a->attacher = pthread_self();
    a->check_thread = true;
    atomic_store(&a->attaching, 1);
    a->derived = fut_then(a->settled, checking_then, a);
    tu_sleep_ms(5); /* it would run now if it ran here */
    atomic_store(&a->attaching, 0);
    return NULL;
}

static void *attach_from_continuation(void *value, void *arg)
{
    attach_ctx *a = arg;
    enter_cont();
    /* The dispatcher itself: "attaching" shows a nested run. */
    atomic_store(&a->attaching, 1);
    a->derived = fut_then(a->settled, checking_then, a);
    tu_sleep_ms(5);
    atomic_store(&a->attaching, 0);
    leave_cont();
    return value;
}

START_TEST(test_attach_after_settled)
{
    fut_promise *p;
    fut_future *f, *d, *w, *c;
    attach_ctx a1, a2;
    rec r;

    begin(2);
    p = new_promise(&f);
    ck_assert_int_eq(fut_promise_resolve(p, TU_PTR(10)), 0);

    /* From the test thread. */
    rec_init(&r, TU_PTR(5), 0);
    d = fut_then(f, rec_then, &r);
    ck_assert_ptr_nonnull(d);
    TU_SETTLE(d);
    ck_assert_int_eq(atomic_load(&r.runs), 1);
    ck_assert_uint_eq(TU_UINT(fut_value(d)), 5);

    /* From a compute worker. */
    memset(&a1, 0, sizeof a1);
    atomic_init(&a1.r.runs, 0);
    atomic_init(&a1.attaching, 0);
    a1.settled = f;
    w = fut_submit(g_rt, attach_from_work, &a1);
    ck_assert_ptr_nonnull(w);
    TU_SETTLE(w);
    ck_assert_ptr_nonnull(a1.derived);
    TU_SETTLE(a1.derived);
    ck_assert_int_eq(atomic_load(&a1.r.runs), 1);
    ck_assert_uint_eq(TU_UINT(fut_value(a1.derived)), 11);

    /* From a continuation, on the dispatcher: runs after it returns. */
    memset(&a2, 0, sizeof a2);
    atomic_init(&a2.r.runs, 0);
    atomic_init(&a2.attaching, 0);
    a2.settled = f;
    c = fut_then(f, attach_from_continuation, &a2);
    ck_assert_ptr_nonnull(c);
    TU_SETTLE(c);
    ck_assert_ptr_nonnull(a2.derived);
    TU_SETTLE(a2.derived);
    ck_assert_int_eq(atomic_load(&a2.r.runs), 1);
    ck_assert_uint_eq(TU_UINT(fut_value(a2.derived)), 11);

    fut_release(a2.derived);
    fut_release(c);
    fut_release(a1.derived);
    fut_release(w);
    fut_release(d);
    fut_release(f);
    fut_promise_free(p);
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* ------------------------------------------------------------------------
 * Attached while settling: 10,000 rounds; in each, ATTACHERS threads each
 * attach PER_ATTACHER continuations (then and finally in turn) while
 * another thread resolves. Each fires exactly once, on the dispatcher, and
 * each attacher's continuations run in the order it attached them.
 * ---------------------------------------------------------------------- */

#define RACE_ROUNDS 10000
#define ATTACHERS 2
#define PER_ATTACHER 4

typedef struct race_round race_round;

typedef struct race_arg {
    race_round *r;
    int attacher;
    int k; /* position in its attacher's sequence */
} race_arg;

struct race_round {
    fut_promise *p;
    fut_future *f;
    fut_future *d[ATTACHERS][PER_ATTACHER];
    race_arg args[ATTACHERS][PER_ATTACHER];
    atomic_int runs[ATTACHERS][PER_ATTACHER];
    atomic_int next[ATTACHERS];     /* the k expected to run next */
    atomic_int out_of_order;
    atomic_int bad_value;
};

static race_round *rounds;
static pthread_barrier_t race_start, race_end;

static void race_record(race_arg *a)
{
    race_round *r = a->r;
    if (atomic_load(&r->next[a->attacher]) != a->k)
        atomic_fetch_add(&r->out_of_order, 1);
    atomic_store(&r->next[a->attacher], a->k + 1);
    atomic_fetch_add(&r->runs[a->attacher][a->k], 1);
}

static void *race_then(void *value, void *arg)
{
    race_arg *a = arg;
    enter_cont();
    if (TU_UINT(value) != (uintptr_t)(a->r - rounds) + 1)
        atomic_fetch_add(&a->r->bad_value, 1);
    race_record(a);
    leave_cont();
    return TU_PTR(TU_UINT(value) + 1);
}

static void race_finally(fut_future *f, void *arg)
{
    race_arg *a = arg;
    enter_cont();
    TU_WCHECK_EQ(fut_state(f), FUT_RESOLVED);
    race_record(a);
    leave_cont();
}

typedef struct racer {
    int id; /* 0..ATTACHERS-1 attach; ATTACHERS resolves */
} racer;

static void *race_main(void *arg)
{
    racer *me = arg;
    for (int i = 0; i < RACE_ROUNDS; i++) {
        race_round *r = &rounds[i];
        pthread_barrier_wait(&race_start);
        if (me->id == ATTACHERS) {
            TU_WCHECK_EQ(fut_promise_resolve(r->p, TU_PTR(i + 1)), 0);
        } else {
            for (int k = 0; k < PER_ATTACHER; k++) {
                race_arg *a = &r->args[me->id][k];
                r->d[me->id][k] = k % 2 ? fut_finally(r->f, race_finally, a) : fut_then(r->f, race_then, a);
                TU_WCHECK(r->d[me->id][k] != NULL);
            }
        }
        pthread_barrier_wait(&race_end);
    }
    return NULL;
}

START_TEST(test_attach_while_settling)
{
    pthread_t th[ATTACHERS + 1];
    racer rc[ATTACHERS + 1];
    bool ok = false;
    int disorder_rounds = 0, first_disorder = -1;

    begin(2);
    rounds = calloc(RACE_ROUNDS, sizeof *rounds);
    ck_assert_ptr_nonnull(rounds);
    for (int i = 0; i < RACE_ROUNDS; i++) {
        race_round *r = &rounds[i];
        r->p = new_promise(&r->f);
        for (int a = 0; a < ATTACHERS; a++) {
            atomic_init(&r->next[a], 0);
            for (int k = 0; k < PER_ATTACHER; k++) {
                r->args[a][k].r = r;
                r->args[a][k].attacher = a;
                r->args[a][k].k = k;
                atomic_init(&r->runs[a][k], 0);
            }
        }
        atomic_init(&r->out_of_order, 0);
        atomic_init(&r->bad_value, 0);
    }
    pthread_barrier_init(&race_start, NULL, ATTACHERS + 1);
    pthread_barrier_init(&race_end, NULL, ATTACHERS + 1);
    for (int k = 0; k <= ATTACHERS; k++) {
        rc[k].id = k;
        ck_assert_int_eq(pthread_create(&th[k], NULL, race_main, &rc[k]), 0);
    }
    for (int k = 0; k <= ATTACHERS; k++)
        ck_assert_int_eq(pthread_join(th[k], NULL), 0);
    pthread_barrier_destroy(&race_start);
    pthread_barrier_destroy(&race_end);
    TU_ASSERT_NO_WFAIL();

    for (int i = 0; i < RACE_ROUNDS; i++) {
        race_round *r = &rounds[i];
        for (int a = 0; a < ATTACHERS; a++) {
            for (int k = 0; k < PER_ATTACHER; k++) {
                int st;
                TU_SETTLE(r->d[a][k]);
                st = fut_state(r->d[a][k]);
                TU_REQUIRE(st == FUT_RESOLVED, "round %d: derived future in state %d", i, st);
                TU_REQUIRE(TU_UINT(fut_value(r->d[a][k])) == (uintptr_t)i + (k % 2 ? 1u : 2u),
                           "round %d: continuation %d/%d has a wrong result", i, a, k);
            }
        }
    }
    for (int i = 0; i < RACE_ROUNDS; i++) {
        race_round *r = &rounds[i];
        for (int a = 0; a < ATTACHERS; a++) {
            for (int k = 0; k < PER_ATTACHER; k++) {
                TU_POLL(ok, atomic_load(&r->runs[a][k]) >= 1, TU_WAIT_MS);
                TU_REQUIRE(atomic_load(&r->runs[a][k]) == 1, "round %d: continuation %d/%d ran %d times", i,
                           a, k, atomic_load(&r->runs[a][k]));
            }
        }
        TU_REQUIRE(atomic_load(&r->bad_value) == 0, "round %d: a then saw a wrong value", i);
        if (atomic_load(&r->out_of_order) != 0 && disorder_rounds++ == 0)
            first_disorder = i;
        for (int a = 0; a < ATTACHERS; a++)
            for (int k = 0; k < PER_ATTACHER; k++)
                fut_release(r->d[a][k]);
        fut_release(r->f);
        fut_promise_free(r->p);
    }
    free(rounds);
    rounds = NULL;
    ck_assert_msg(disorder_rounds == 0,
                  "%d of %d rounds ran a thread's continuations out of attach order (first: round %d)",
                  disorder_rounds, RACE_ROUNDS, first_disorder);
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* ------------------------------------------------------------------------
 * Order across threads, deterministic: c1 is attached by the test thread,
 * which then resolves the future from outside the dispatcher; a
 * continuation X that is running on the dispatcher meanwhile waits for the
 * resolve to have returned, then attaches c2 to the (now settled) future.
 * c1 was attached first, so it must run first.
 * ---------------------------------------------------------------------- */

typedef struct xorder {
    fut_future *f;          /* the future c1 and c2 attach to */
    fut_future *c2;
    atomic_int x_running;
    atomic_int resolved;    /* set after fut_promise_resolve returned */
    int seen[2];
    atomic_int pos;
} xorder;

static void *xorder_first(void *value, void *arg)
{
    xorder *x = arg;
    (void)value;
    enter_cont();
    x->seen[atomic_fetch_add(&x->pos, 1) & 1] = 1;
    leave_cont();
    return NULL;
}

static void *xorder_second(void *value, void *arg)
{
    xorder *x = arg;
    (void)value;
    enter_cont();
    x->seen[atomic_fetch_add(&x->pos, 1) & 1] = 2;
    leave_cont();
    return NULL;
}

static void *xorder_x(void *value, void *arg)
{
    xorder *x = arg;
    uint64_t end = tu_deadline_ms(TU_WAIT_MS);
    enter_cont();
    atomic_store(&x->x_running, 1);
    while (!atomic_load(&x->resolved) && tu_now_ns() < end)
        tu_sleep_ms(1);
    TU_WCHECK(atomic_load(&x->resolved));
    TU_WCHECK(fut_state(x->f) == FUT_RESOLVED);
    x->c2 = fut_then(x->f, xorder_second, x);
    TU_WCHECK(x->c2 != NULL);
    leave_cont();
    return value;
}

START_TEST(test_order_across_threads)
{
    fut_promise *p, *q;
    fut_future *f, *qf, *c1, *xd;
    xorder x;
    bool ok = false;

    begin(2);
    memset(&x, 0, sizeof x);
    atomic_init(&x.x_running, 0);
    atomic_init(&x.resolved, 0);
    atomic_init(&x.pos, 0);
    p = new_promise(&f);
    q = new_promise(&qf);
    x.f = f;
    c1 = fut_then(f, xorder_first, &x);
    ck_assert_ptr_nonnull(c1);
    xd = fut_then(qf, xorder_x, &x);
    ck_assert_ptr_nonnull(xd);
    ck_assert_int_eq(fut_promise_resolve(q, NULL), 0);
    TU_POLL(ok, atomic_load(&x.x_running) != 0, TU_WAIT_MS);
    ck_assert(ok);
    ck_assert_int_eq(fut_promise_resolve(p, TU_PTR(1)), 0);
    atomic_store(&x.resolved, 1);
    TU_SETTLE(xd);
    ck_assert_ptr_nonnull(x.c2);
    TU_SETTLE(c1);
    TU_SETTLE(x.c2);
    ck_assert_int_eq(atomic_load(&x.pos), 2);
    ck_assert_msg(x.seen[0] == 1 && x.seen[1] == 2,
                  "continuations ran in the order %d, %d; attached as 1, 2", x.seen[0], x.seen[1]);
    fut_release(x.c2);
    fut_release(xd);
    fut_release(c1);
    fut_release(qf);
    fut_release(f);
    fut_promise_free(q);
    fut_promise_free(p);
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* ------------------------------------------------------------------------
 * Order: continuations of one future run in the order attached.
 * _i = 0: all 100 before settling; 1: all after; 2: 50 before, 50 after.
 * ---------------------------------------------------------------------- */

#define ORDER_N 100

static int order_seen[ORDER_N];
static atomic_int order_pos;

static void *order_then(void *value, void *arg)
{
    int pos;
    enter_cont();
    pos = atomic_fetch_add(&order_pos, 1);
    if (pos < ORDER_N)
        order_seen[pos] = (int)TU_UINT(arg);
    leave_cont();
    return value;
}

static void order_finally(fut_future *f, void *arg)
{
    (void)order_then(fut_value(f), arg);
}

START_TEST(test_order)
{
    fut_promise *p;
    fut_future *f, *d[ORDER_N];
    int before = _i == 0 ? ORDER_N : _i == 1 ? 0 : ORDER_N / 2;

    begin(2);
    atomic_store(&order_pos, 0);
    memset(order_seen, 0xff, sizeof order_seen);
    p = new_promise(&f);
    for (int i = 0; i < ORDER_N; i++) {
        if (i == before)
            ck_assert_int_eq(fut_promise_resolve(p, TU_PTR(1)), 0);
        d[i] = i % 2 ? fut_then(f, order_then, TU_PTR(i)) : fut_finally(f, order_finally, TU_PTR(i));
        ck_assert_ptr_nonnull(d[i]);
    }
    if (before == ORDER_N)
        ck_assert_int_eq(fut_promise_resolve(p, TU_PTR(1)), 0);
    for (int i = 0; i < ORDER_N; i++)
        TU_SETTLE(d[i]);
    ck_assert_int_eq(atomic_load(&order_pos), ORDER_N);
    for (int i = 0; i < ORDER_N; i++)
        ck_assert_msg(order_seen[i] == i, "position %d ran continuation %d", i, order_seen[i]);
    for (int i = 0; i < ORDER_N; i++)
        fut_release(d[i]);
    fut_release(f);
    fut_promise_free(p);
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* ------------------------------------------------------------------------
 * Chains of 10,000 thens (no stack growth with the length).
 * _i = 0: built on a pending root, every future kept;
 *      1: built on a pending root, each intermediate released at once;
 *      2: built on a resolved root, intermediates released;
 *      3: the root rejected: 10,000 thens pass the error, a catch ends it.
 * ---------------------------------------------------------------------- */

#define CHAIN 10000

START_TEST(test_chain)
{
    fut_promise *p;
    fut_future *root, *cur, **all = NULL, *c = NULL;
    rec rc;
    int keep = _i == 0, pre_resolved = _i == 2, reject = _i == 3;

    begin(2);
    p = new_promise(&root);
    if (pre_resolved)
        ck_assert_int_eq(fut_promise_resolve(p, TU_PTR(0)), 0);
    if (keep) {
        all = calloc(CHAIN, sizeof *all);
        ck_assert_ptr_nonnull(all);
    }
    cur = fut_retain(root);
    for (int i = 0; i < CHAIN; i++) {
        fut_future *n = fut_then(cur, inc_then, NULL);
        TU_REQUIRE(n != NULL, "fut_then %d failed", i);
        if (keep)
            all[i] = n;
        fut_release(cur);
        cur = keep ? fut_retain(n) : n;
    }
    if (reject) {
        rec_init(&rc, TU_PTR(9), 0);
        c = fut_catch(cur, rec_catch, &rc);
        ck_assert_ptr_nonnull(c);
        ck_assert_int_eq(fut_promise_reject(p, EXDEV, "root failed"), 0);
    } else if (!pre_resolved) {
        ck_assert_int_eq(fut_promise_resolve(p, TU_PTR(0)), 0);
    }
    if (reject) {
        TU_SETTLE(c);
        ck_assert_int_eq(atomic_load(&rc.runs), 1);
        ck_assert_int_eq(rc.code, EXDEV);
        ck_assert_str_eq(rc.msg, "root failed");
        ck_assert_uint_eq(TU_UINT(fut_value(c)), 9);
        ck_assert_int_eq(fut_state(cur), FUT_REJECTED);
        ck_assert_int_eq(fut_error(cur), EXDEV);
        fut_release(c);
    } else {
        TU_SETTLE(cur);
        ck_assert_int_eq(fut_state(cur), FUT_RESOLVED);
        ck_assert_uint_eq(TU_UINT(fut_value(cur)), CHAIN);
    }
    if (keep) {
        for (int i = 0; i < CHAIN; i++) {
            TU_REQUIRE(fut_state(all[i]) == FUT_RESOLVED, "link %d: state %d", i, fut_state(all[i]));
            TU_REQUIRE(TU_UINT(fut_value(all[i])) == (uintptr_t)i + 1, "link %d: value %lu", i,
                       (unsigned long)TU_UINT(fut_value(all[i])));
            fut_release(all[i]);
        }
        free(all);
    }
    fut_release(cur);
    fut_release(root);
    fut_promise_free(p);
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* ------------------------------------------------------------------------
 * Cancellation reaches continuations as ECANCELED.
 * ---------------------------------------------------------------------- */

static void *cancel_aware_work(void *arg)
{
    tu_latch *started = arg;
    uint64_t end = tu_deadline_ms(TU_WAIT_MS);
    TU_WCHECK(fut_on_dispatcher(g_rt) == 0);
    tu_latch_count_down(started);
    while (!fut_cancelled() && tu_now_ns() < end)
        tu_sleep_ms(1);
    return TU_PTR(1);
}

START_TEST(test_cancel_propagates)
{
    fut_promise *p, *q;
    fut_future *f, *d1, *d2, *c, *fin, *w, *wc, *qf, *qd, *qdc;
    rec r1, r2, rc, rf, rwc, rq, rqc;
    tu_latch started;

    begin(2);

    /* A pending promise's future, then -> then -> catch, plus a finally. */
    p = new_promise(&f);
    rec_init(&r1, NULL, 0);
    rec_init(&r2, NULL, 0);
    rec_init(&rc, TU_PTR(3), 0);
    rec_init(&rf, NULL, 0);
    d1 = fut_then(f, rec_then, &r1);
    d2 = fut_then(d1, rec_then, &r2);
    c = fut_catch(d2, rec_catch, &rc);
    fin = fut_finally(f, rec_finally, &rf);
    ck_assert_ptr_nonnull(d1);
    ck_assert_ptr_nonnull(d2);
    ck_assert_ptr_nonnull(c);
    ck_assert_ptr_nonnull(fin);
    ck_assert_int_eq(fut_cancel(f), 0);
    TU_SETTLE(c);
    TU_SETTLE(fin);
    ck_assert_int_eq(atomic_load(&r1.runs), 0);
    ck_assert_int_eq(atomic_load(&r2.runs), 0);
    ck_assert_int_eq(atomic_load(&rc.runs), 1);
    ck_assert_int_eq(rc.code, ECANCELED);
    ck_assert_int_eq(fut_state(c), FUT_RESOLVED);
    ck_assert_uint_eq(TU_UINT(fut_value(c)), 3);
    ck_assert_int_eq(fut_error(d1), ECANCELED);
    ck_assert_int_eq(fut_error(d2), ECANCELED);
    ck_assert_int_eq(atomic_load(&rf.runs), 1);
    ck_assert_int_eq(rf.state, FUT_CANCELLED);
    ck_assert_int_eq(rf.code, ECANCELED);
    ck_assert_int_eq(fut_error(fin), ECANCELED);
    ck_assert_int_eq(fut_promise_resolve(p, NULL), EALREADY);

    /* Running work cancelled: its catch sees ECANCELED. */
    tu_latch_init(&started, 1);
    w = fut_submit(g_rt, cancel_aware_work, &started);
    ck_assert_ptr_nonnull(w);
    rec_init(&rwc, TU_PTR(4), 0);
    wc = fut_catch(w, rec_catch, &rwc);
    ck_assert_ptr_nonnull(wc);
    TU_LATCH_WAIT(&started, TU_WAIT_MS);
    ck_assert_int_eq(fut_cancel(w), 0);
    TU_SETTLE(wc);
    ck_assert_int_eq(atomic_load(&rwc.runs), 1);
    ck_assert_int_eq(rwc.code, ECANCELED);
    ck_assert_uint_eq(TU_UINT(fut_value(wc)), 4);

    /* A derived future cancelled while its source is pending: its own
     * continuations see ECANCELED, and it stays cancelled when the source
     * resolves later. */
    q = new_promise(&qf);
    rec_init(&rq, TU_PTR(6), 0);
    rec_init(&rqc, TU_PTR(7), 0);
    qd = fut_then(qf, rec_then, &rq);
    ck_assert_ptr_nonnull(qd);
    qdc = fut_catch(qd, rec_catch, &rqc);
    ck_assert_ptr_nonnull(qdc);
    ck_assert_int_eq(fut_cancel(qd), 0);
    TU_SETTLE(qdc);
    ck_assert_int_eq(atomic_load(&rqc.runs), 1);
    ck_assert_int_eq(rqc.code, ECANCELED);
    ck_assert_int_eq(fut_promise_resolve(q, TU_PTR(5)), 0);
    TU_SETTLE(qf);
    tu_sleep_ms(5);
    ck_assert_int_eq(fut_state(qd), FUT_CANCELLED);
    ck_assert_int_eq(fut_error(qd), ECANCELED);
    ck_assert_int_le(atomic_load(&rq.runs), 1);
    ck_assert_int_eq(atomic_load(&rqc.runs), 1);

    fut_release(qdc);
    fut_release(qd);
    fut_release(qf);
    fut_promise_free(q);
    fut_release(wc);
    fut_release(w);
    fut_release(fin);
    fut_release(c);
    fut_release(d2);
    fut_release(d1);
    fut_release(f);
    fut_promise_free(p);
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
    tu_latch_destroy(&started);
}
END_TEST

/* ------------------------------------------------------------------------
 * fut_then_future: a continuation that returns a future to follow
 * ---------------------------------------------------------------------- */

static fut_future *flat_self;     /* the future the next fn must return */
static atomic_int flat_runs;

static void *flat_work(void *arg)
{
    return arg;
}

static void *flat_fail(void *arg)
{
    return fut_raise((int)(intptr_t)arg, "step failed");
}

static fut_future *flat_step(void *value, void *arg)
{
    atomic_fetch_add(&flat_runs, 1);
    switch ((int)(intptr_t)arg) {
    case 0: /* the next asynchronous step: work that adds one */
        return fut_submit(g_rt, flat_work, (void *)((intptr_t)value + 1));
    case 1:
        return fut_submit(g_rt, flat_fail, TU_PTR(EIO));
    case 2:
        return NULL;
    case 3:
        return fut_retain(flat_self);
    default:
        return fut_raise(EDOM, "raised in the step");
    }
}

START_TEST(test_then_future)
{
    fut_promise *p;
    fut_future *src, *a, *b, *c;

    g_rt = tu_rt_new(2);
    atomic_store(&flat_runs, 0);
    p = fut_promise_new(g_rt);
    src = fut_promise_future(p);
    a = fut_then_future(src, flat_step, TU_PTR(0)); /* 10 + 1 */
    b = fut_then_future(a, flat_step, TU_PTR(0));   /* + 1 */
    c = fut_then_future(b, flat_step, TU_PTR(0));   /* + 1 */
    ck_assert(a && b && c);
    ck_assert_int_eq(fut_promise_resolve(p, TU_PTR(10)), 0);
    TU_SETTLE(c);
    ck_assert_int_eq(fut_state(c), FUT_RESOLVED);
    ck_assert_ptr_eq(fut_value(c), TU_PTR(13));
    ck_assert_int_eq(atomic_load(&flat_runs), 3);
    fut_release(a);
    fut_release(b);
    fut_release(c);

    /* The returned future fails: so does the new one. */
    a = fut_then_future(src, flat_step, TU_PTR(1));
    TU_SETTLE(a);
    ck_assert_int_eq(fut_error(a), EIO);
    ck_assert_str_eq(fut_message(a), "step failed");
    fut_release(a);
    /* No future: EINVAL. A raise: its code. */
    a = fut_then_future(src, flat_step, TU_PTR(2));
    TU_SETTLE(a);
    ck_assert_int_eq(fut_error(a), EINVAL);
    fut_release(a);
    a = fut_then_future(src, flat_step, TU_PTR(4));
    TU_SETTLE(a);
    ck_assert_int_eq(fut_error(a), EDOM);
    fut_release(a);
    fut_release(src);
    fut_promise_free(p);

    /* Its own future: EDEADLK, never a hang. */
    p = fut_promise_new(g_rt);
    src = fut_promise_future(p);
    flat_self = fut_then_future(src, flat_step, TU_PTR(3));
    ck_assert_int_eq(fut_promise_resolve(p, NULL), 0);
    TU_SETTLE(flat_self);
    ck_assert_int_eq(fut_error(flat_self), EDEADLK);
    fut_release(flat_self);
    flat_self = NULL;
    fut_release(src);
    fut_promise_free(p);

    /* A rejected source: fn does not run. */
    atomic_store(&flat_runs, 0);
    p = fut_promise_new(g_rt);
    src = fut_promise_future(p);
    a = fut_then_future(src, flat_step, TU_PTR(0));
    ck_assert_int_eq(fut_promise_reject(p, EACCES, "no"), 0);
    TU_SETTLE(a);
    ck_assert_int_eq(fut_error(a), EACCES);
    ck_assert_int_eq(atomic_load(&flat_runs), 0);
    fut_release(a);
    fut_release(src);
    fut_promise_free(p);
    errno = 0;
    ck_assert_ptr_null(fut_then_future(NULL, flat_step, NULL));
    ck_assert_int_eq(errno, EINVAL);

    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

static Suite *future_then_suite(void)
{
    Suite *s = suite_create("future_then");
    TCase *tc;

    tc = tu_tcase(s, "semantics", 60);
    tcase_add_loop_test(tc, test_then_semantics, 0, 6);
    tcase_add_test(tc, test_then_raise);
    tcase_add_loop_test(tc, test_catch_semantics, 0, 8);
    tcase_add_loop_test(tc, test_finally_semantics, 0, 12);
    tcase_add_test(tc, test_work_continuations);
    tcase_add_test(tc, test_then_future);

    tc = tu_tcase(s, "attach", 60);
    tcase_add_test(tc, test_attach_after_settled);
    tcase_add_test(tc, test_attach_while_settling);
    tcase_add_loop_test(tc, test_order, 0, 3);
    tcase_add_test(tc, test_order_across_threads);

    tc = tu_tcase(s, "chain", 60);
    tcase_add_loop_test(tc, test_chain, 0, 4);
    tcase_add_test(tc, test_cancel_propagates);
    return s;
}

int main(void)
{
    return tu_run_suite(future_then_suite());
}
