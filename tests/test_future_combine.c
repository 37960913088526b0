/* test_future_combine.c - combinators: fut_gather (0, 1, 100,000 items resolved from two threads, values in input order; first error, FUT_CANCEL_REST, FUT_SETTLED and fut_gather_item), fut_any, fut_race (also settled by two threads at once), fut_timeout (value first, expiry, racing 1,000 jobs), cancelling a combinator, bad arguments, and the unobserved-error hook. */
#include "testutil.h"

#include <math.h> /* NAN, INFINITY */

/* The runtime of the running test (each test runs in its own process). */
static fut_runtime *g_rt;

#define NS_PER_MS 1000000ull

/* Rejected futures nobody read, counted by the hook every test installs
 * (tu_quiet_unobserved), so that the expected ones print nothing. */
static atomic_uint g_unobserved;

#define ASSERT_NONE_UNOBSERVED()                                                    \
    do {                                                                            \
        unsigned n_ = atomic_load(&g_unobserved);                                   \
        ck_assert_msg(n_ == 0, "%u rejected future(s) were freed with their error unread", n_); \
    } while (0)

static void start(void)
{
    g_rt = tu_rt_new(2);
    atomic_store(&g_unobserved, 0);
    fut_set_unobserved_hook(tu_quiet_unobserved, &g_unobserved);
}

/* Everything released: the runtime drains to zero futures promptly (a
 * leftover timer would keep one alive for seconds) and frees at once. */
static void finish(void)
{
    bool ok;
    uint64_t t;

    TU_POLL(ok, fut_runtime_live(g_rt) == 0, 2000u * TU_SLOW);
    ck_assert_msg(ok, "%llu future(s) still live after everything was released",
                  (unsigned long long)fut_runtime_live(g_rt));
    t = tu_now_ns();
    ck_assert_int_eq(fut_runtime_free(g_rt), 0);
    t = tu_now_ns() - t;
    ck_assert_msg(t < 1000ull * NS_PER_MS * TU_SLOW, "fut_runtime_free took %llu ms",
                  (unsigned long long)(t / NS_PER_MS));
    g_rt = NULL;
    fut_set_unobserved_hook(NULL, NULL);
    TU_ASSERT_NO_WFAIL();
}

/* ------------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------- */

typedef struct prom {
    fut_promise *p;
    fut_future *f;
} prom;

static void prom_new(prom *x)
{
    x->p = fut_promise_new(g_rt);
    TU_REQUIRE(x->p != NULL, "fut_promise_new failed: %s", strerror(errno));
    x->f = fut_promise_future(x->p);
    TU_REQUIRE(x->f != NULL, "fut_promise_future failed");
}

static void prom_free(prom *x)
{
    fut_release(x->f);
    fut_promise_free(x->p);
    x->f = NULL;
    x->p = NULL;
}

/* A finally-continuation on a combinator: records, on the dispatcher,
 * what it settled to and how many times it fired. */
typedef struct watch {
    atomic_int runs;
    int state;
    void *value;
    int code;
    char msg[160];
    uint64_t at;
    fut_future *fin;
} watch;

static void watch_fn(fut_future *f, void *arg)
{
    watch *w = arg;
    TU_WCHECK(fut_on_dispatcher(g_rt));
    w->state = fut_state(f);
    w->value = fut_value(f);
    w->code = fut_error(f);
    snprintf(w->msg, sizeof w->msg, "%s", fut_message(f));
    w->at = tu_now_ns();
    atomic_fetch_add(&w->runs, 1);
}

static void watch_on(watch *w, fut_future *f)
{
    atomic_init(&w->runs, 0);
    w->state = -1;
    w->value = NULL;
    w->code = -1;
    w->msg[0] = '\0';
    w->at = 0;
    w->fin = fut_finally(f, watch_fn, w);
    TU_REQUIRE(w->fin != NULL, "fut_finally failed: %s", strerror(errno));
}

/* Wait for the watched future's continuation; it fired exactly once and
 * saw what the future says now. */
static void watch_wait(watch *w, fut_future *f)
{
    TU_REQUIRE(fut_wait(w->fin, TU_WAIT_MS / 1000.0) == 0, "the continuation never ran");
    TU_REQUIRE(atomic_load(&w->runs) == 1, "the continuation ran %d times",
               atomic_load(&w->runs));
    TU_REQUIRE(fut_state(f) == w->state, "state %d, the continuation saw %d", fut_state(f),
               w->state);
    TU_REQUIRE(fut_value(f) == w->value, "value changed after the continuation");
    TU_REQUIRE(fut_state(w->fin) == w->state, "the finally future settled to %d, not %d",
               fut_state(w->fin), w->state);
    (void)fut_error(w->fin); /* read: it carries the same error */
}

static void watch_release(watch *w)
{
    fut_release(w->fin);
    w->fin = NULL;
}

/* Work that waits at a gate (a running job), then returns ret. */
typedef struct gwork {
    tu_gate *gate;
    void *ret;
    atomic_int runs;
    atomic_int done;
    atomic_int saw_cancel;
} gwork;

static void *gated_fn(void *arg)
{
    gwork *w = arg;
    TU_WCHECK(!fut_on_dispatcher(g_rt));
    atomic_fetch_add(&w->runs, 1);
    tu_gate_wait(w->gate, TU_WAIT_MS);
    atomic_store(&w->saw_cancel, fut_cancelled());
    atomic_store(&w->done, 1);
    return w->ret;
}

static void gwork_init(gwork *w, tu_gate *g, void *ret)
{
    w->gate = g;
    w->ret = ret;
    atomic_init(&w->runs, 0);
    atomic_init(&w->done, 0);
    atomic_init(&w->saw_cancel, 0);
}

/* Occupy both compute workers with gated jobs (one at a time, so that
 * each worker holds one): work submitted after this stays queued until
 * the gate opens. */
static void block_workers(tu_gate *g, gwork w[2], fut_future *f[2])
{
    for (int k = 0; k < 2; k++) {
        gwork_init(&w[k], g, TU_PTR(900 + k));
        f[k] = fut_submit(g_rt, gated_fn, &w[k]);
        ck_assert_ptr_nonnull(f[k]);
        ck_assert_msg(tu_gate_wait_waiters(g, (unsigned)k + 1, TU_WAIT_MS),
                      "compute worker %d never started its job", k);
    }
}

/* Wait until f has settled (a cancel that a combinator passes on). */
static void settled(fut_future *f, const char *what)
{
    int rc = fut_wait(f, TU_WAIT_MS / 1000.0);
    ck_assert_msg(rc == 0, "%s never settled (%d)", what, rc);
}

static void *raise_fn(void *arg)
{
    return fut_raise(ENOENT, "no file %s", (const char *)arg);
}

static void *value_fn(void *arg)
{
    TU_WCHECK(!fut_on_dispatcher(g_rt));
    return arg;
}

static void *then_id(void *value, void *arg)
{
    (void)arg;
    TU_WCHECK(fut_on_dispatcher(g_rt));
    return value;
}

/* A catch that does nothing: waiting for its future tells that every
 * dependent attached to the source before it has run. */
static void *nop_catch(int code, const char *message, void *arg)
{
    (void)code;
    (void)message;
    return arg;
}

/* Wait until the dispatcher has passed f's settling to every dependent
 * attached before now (dependents run in attach order). */
static void drain_dependents(fut_future *f)
{
    fut_future *c = fut_catch(f, nop_catch, NULL);
    ck_assert_ptr_nonnull(c);
    settled(c, "a catch");
    fut_release(c);
}

/* ------------------------------------------------------------------------
 * fut_gather: values in input order
 * ---------------------------------------------------------------------- */

static const unsigned gather_flags[] = { 0, FUT_SETTLED, FUT_CANCEL_REST, FUT_SETTLED | FUT_CANCEL_REST };

START_TEST(test_gather_empty)
{
    unsigned flags = gather_flags[_i];
    fut_future *one[1] = { NULL };
    fut_future *g, *g2;
    watch w;

    start();
    g = fut_gather(g_rt, NULL, 0, flags);
    ck_assert_ptr_nonnull(g);
    /* n == 0 resolves at once: no wait. */
    ck_assert_int_eq(fut_state(g), FUT_RESOLVED);
    ck_assert_int_eq(fut_error(g), 0);
    ck_assert_str_eq(fut_message(g), "");
    ck_assert_int_eq(fut_cancel(g), EALREADY);
    errno = 0;
    ck_assert_ptr_null(fut_gather_item(g, 0));
    ck_assert_int_eq(errno, EINVAL);
    watch_on(&w, g);
    watch_wait(&w, g);
    ck_assert_int_eq(w.state, FUT_RESOLVED);

    /* A non-NULL array with n == 0 is the same. */
    g2 = fut_gather(g_rt, one, 0, flags);
    ck_assert_ptr_nonnull(g2);
    ck_assert_int_eq(fut_state(g2), FUT_RESOLVED);
    fut_release(g2);

    watch_release(&w);
    fut_release(g);
    ASSERT_NONE_UNOBSERVED();
    finish();
}
END_TEST

/* One item, of each kind: a promise, work, a sleep, and each of those
 * settled before the gather was made. */
START_TEST(test_gather_one)
{
    int kind = _i % 3, early = _i / 3;
    prom p = { NULL, NULL };
    fut_future *f = NULL, *g;
    void *expect = TU_PTR(0x77);
    watch w;

    start();
    if (kind == 0) {
        prom_new(&p);
        f = fut_retain(p.f);
    } else if (kind == 1) {
        f = fut_submit(g_rt, value_fn, expect);
    } else {
        f = fut_sleep(g_rt, 0.002);
        expect = NULL;
    }
    ck_assert_ptr_nonnull(f);
    if (early) {
        if (kind == 0)
            ck_assert_int_eq(fut_promise_resolve(p.p, expect), 0);
        settled(f, "the item");
    }
    g = fut_gather(g_rt, &f, 1, 0);
    ck_assert_ptr_nonnull(g);
    watch_on(&w, g);
    ck_assert_ptr_eq(fut_gather_item(g, 0), f);
    if (kind == 0 && !early) {
        ck_assert_int_eq(fut_state(g), FUT_PENDING);
        ck_assert_int_eq(fut_promise_resolve(p.p, expect), 0);
    }
    watch_wait(&w, g);
    ck_assert_int_eq(fut_state(g), FUT_RESOLVED);
    ck_assert_ptr_nonnull(fut_value(g));
    ck_assert_ptr_eq(((void **)fut_value(g))[0], expect);
    ck_assert_ptr_eq(((void **)w.value)[0], expect);
    ck_assert_int_eq(fut_state(fut_gather_item(g, 0)), FUT_RESOLVED);
    watch_release(&w);
    fut_release(f);
    if (kind == 0)
        prom_free(&p);
    /* The gather keeps its item readable while it is held. */
    ck_assert_int_eq(fut_state(fut_gather_item(g, 0)), FUT_RESOLVED);
    fut_release(g);
    ASSERT_NONE_UNOBSERVED();
    finish();
}
END_TEST

/* 100,000 promises resolved from two threads at once, in random order. */
#define NBIG 100000

typedef struct resolver {
    prom *ps;
    const unsigned *perm;
    int which;
    pthread_barrier_t *go;
} resolver;

static void *resolver_main(void *arg)
{
    resolver *r = arg;
    pthread_barrier_wait(r->go);
    for (size_t k = (size_t)r->which; k < NBIG; k += 2) {
        unsigned i = r->perm[k];
        TU_WCHECK_EQ(fut_promise_resolve(r->ps[i].p, TU_PTR((uintptr_t)i * 7 + 1)), 0);
    }
    return NULL;
}

START_TEST(test_gather_100k)
{
    prom *ps = calloc(NBIG, sizeof *ps);
    fut_future **fs = calloc(NBIG, sizeof *fs);
    unsigned *perm = calloc(NBIG, sizeof *perm);
    pthread_barrier_t go;
    resolver r[2];
    pthread_t th[2];
    fut_future *g;
    void **v;
    tu_rng rng;
    watch w;

    ck_assert(ps && fs && perm);
    start();
    tu_rng_seed(&rng, 2024);
    for (unsigned i = 0; i < NBIG; i++) {
        prom_new(&ps[i]);
        fs[i] = ps[i].f;
        perm[i] = i;
    }
    for (unsigned k = NBIG - 1; k > 0; k--) {
        unsigned j = tu_rng_upto(&rng, k), t = perm[k];
        perm[k] = perm[j];
        perm[j] = t;
    }
    g = fut_gather(g_rt, fs, NBIG, 0);
    ck_assert_ptr_nonnull(g);
    watch_on(&w, g);
    ck_assert_int_eq(pthread_barrier_init(&go, NULL, 3), 0);
    for (int k = 0; k < 2; k++) {
        r[k] = (resolver){ ps, perm, k, &go };
        ck_assert_int_eq(pthread_create(&th[k], NULL, resolver_main, &r[k]), 0);
    }
    pthread_barrier_wait(&go);
    for (int k = 0; k < 2; k++)
        ck_assert_int_eq(pthread_join(th[k], NULL), 0);
    TU_ASSERT_NO_WFAIL();
    watch_wait(&w, g);
    ck_assert_int_eq(fut_state(g), FUT_RESOLVED);
    v = fut_value(g);
    ck_assert_ptr_nonnull(v);
    ck_assert_ptr_eq(w.value, v);
    for (size_t i = 0; i < NBIG; i++) {
        TU_REQUIRE(v[i] == TU_PTR(i * 7 + 1), "value %zu is %p, expected %zu", i, v[i], i * 7 + 1);
        TU_REQUIRE(fut_gather_item(g, i) == fs[i], "item %zu is not the future given", i);
    }
    for (size_t i = 0; i < NBIG; i++)
        prom_free(&ps[i]);
    /* Still readable: the gather holds its items. */
    ck_assert_ptr_eq(((void **)fut_value(g))[NBIG - 1], TU_PTR((NBIG - 1) * 7 + 1));
    watch_release(&w);
    fut_release(g);
    pthread_barrier_destroy(&go);
    free(ps);
    free(fs);
    free(perm);
    ASSERT_NONE_UNOBSERVED();
    finish();
}
END_TEST

/* Values in input order when the items are work finishing in any order. */
#define NWORK 2000

START_TEST(test_gather_work)
{
    fut_future **fs = calloc(NWORK, sizeof *fs);
    fut_future *g;
    watch w;

    ck_assert_ptr_nonnull(fs);
    start();
    for (uintptr_t i = 0; i < NWORK; i++) {
        fs[i] = fut_submit(g_rt, value_fn, TU_PTR(i * 3 + 5));
        TU_REQUIRE(fs[i] != NULL, "fut_submit failed");
    }
    g = fut_gather(g_rt, fs, NWORK, 0);
    ck_assert_ptr_nonnull(g);
    for (size_t i = 0; i < NWORK; i++)
        fut_release(fs[i]);
    watch_on(&w, g);
    watch_wait(&w, g);
    ck_assert_int_eq(fut_state(g), FUT_RESOLVED);
    for (size_t i = 0; i < NWORK; i++)
        TU_REQUIRE(((void **)fut_value(g))[i] == TU_PTR(i * 3 + 5), "value %zu out of order", i);
    watch_release(&w);
    fut_release(g);
    free(fs);
    finish();
}
END_TEST

/* ------------------------------------------------------------------------
 * fut_gather: the first error
 * ---------------------------------------------------------------------- */

START_TEST(test_gather_first_error)
{
    int cancel_rest = _i;
    tu_gate gate;
    gwork gw;
    prom p1, p2;
    fut_future *work, *sl, *g, *fs[4];
    watch w;
    bool ok;

    start();
    tu_gate_init(&gate);
    gwork_init(&gw, &gate, TU_PTR(5));
    work = fut_submit(g_rt, gated_fn, &gw); /* running, held at the gate */
    ck_assert_ptr_nonnull(work);
    ck_assert(tu_gate_wait_waiters(&gate, 1, TU_WAIT_MS));
    prom_new(&p1);
    prom_new(&p2);
    sl = fut_sleep(g_rt, 10.0);
    ck_assert_ptr_nonnull(sl);
    fs[0] = work;
    fs[1] = p1.f;
    fs[2] = p2.f;
    fs[3] = sl;
    g = fut_gather(g_rt, fs, 4, cancel_rest ? FUT_CANCEL_REST : 0);
    ck_assert_ptr_nonnull(g);
    watch_on(&w, g);

    ck_assert_int_eq(fut_promise_reject(p1.p, ENOENT, "item %d is missing", 1), 0);
    watch_wait(&w, g);
    ck_assert_int_eq(w.state, FUT_REJECTED);
    ck_assert_int_eq(w.code, ENOENT);
    ck_assert_str_eq(w.msg, "item 1 is missing");
    ck_assert_int_eq(fut_state(g), FUT_REJECTED);
    ck_assert_int_eq(fut_error(g), ENOENT);
    ck_assert_str_eq(fut_message(g), "item 1 is missing");
    ck_assert_ptr_null(fut_value(g));
    ck_assert_int_eq(fut_state(p1.f), FUT_REJECTED);

    if (!cancel_rest) {
        /* The others keep running (asyncio's default). */
        ck_assert_int_eq(fut_state(work), FUT_PENDING);
        ck_assert_int_eq(fut_state(p2.f), FUT_PENDING);
        ck_assert_int_eq(fut_state(sl), FUT_PENDING);
        tu_gate_open(&gate);
        settled(work, "the work");
        ck_assert_int_eq(fut_state(work), FUT_RESOLVED);
        ck_assert_ptr_eq(fut_value(work), TU_PTR(5));
        ck_assert_int_eq(atomic_load(&gw.saw_cancel), 0);
        /* A later error changes nothing. */
        ck_assert_int_eq(fut_promise_reject(p2.p, EIO, "second"), 0);
        drain_dependents(p2.f);
        ck_assert_int_eq(fut_error(p2.f), EIO);
        ck_assert_int_eq(fut_error(g), ENOENT);
        ck_assert_str_eq(fut_message(g), "item 1 is missing");
        ck_assert_int_eq(fut_state(sl), FUT_PENDING);
        ck_assert_int_eq(fut_cancel(sl), 0); /* ours to stop */
    } else {
        settled(work, "the work");
        settled(p2.f, "promise 2");
        settled(sl, "the sleep");
        ck_assert_int_eq(fut_state(work), FUT_CANCELLED);
        ck_assert_int_eq(fut_state(p2.f), FUT_CANCELLED);
        ck_assert_int_eq(fut_state(sl), FUT_CANCELLED);
        ck_assert_int_eq(fut_error(sl), ECANCELED);
        ck_assert_int_eq(fut_promise_resolve(p2.p, NULL), EALREADY);
        /* The running work sees the cancel when it polls. */
        tu_gate_open(&gate);
        TU_POLL(ok, atomic_load(&gw.done) == 1, TU_WAIT_MS);
        ck_assert(ok);
        ck_assert_int_eq(atomic_load(&gw.saw_cancel), 1);
        ck_assert_int_eq(fut_state(work), FUT_CANCELLED);
        ck_assert_int_eq(fut_state(p1.f), FUT_REJECTED); /* the one that decided */
    }
    ck_assert_int_eq(atomic_load(&gw.runs), 1);
    watch_release(&w);
    fut_release(g);
    fut_release(work);
    fut_release(sl);
    prom_free(&p1);
    prom_free(&p2);
    finish(); /* quickly: the 10 s sleep is gone either way */
    tu_gate_destroy(&gate);
    /* Every error was read: p1's by the gather, the gather's by us. */
    ASSERT_NONE_UNOBSERVED();
}
END_TEST

/* A cancelled item is an error like any other: it rejects the gather with
 * ECANCELED (the gather is not cancelled), and the other items keep
 * running unless FUT_CANCEL_REST is given (asyncio: cancelling one item
 * must not cancel the others). */
START_TEST(test_gather_cancelled_item)
{
    int cancel_rest = _i;
    prom p[3];
    fut_future *fs[3], *g;
    watch w;

    start();
    for (int i = 0; i < 3; i++) {
        prom_new(&p[i]);
        fs[i] = p[i].f;
    }
    g = fut_gather(g_rt, fs, 3, cancel_rest ? FUT_CANCEL_REST : 0);
    ck_assert_ptr_nonnull(g);
    watch_on(&w, g);
    ck_assert_int_eq(fut_cancel(p[1].f), 0);
    watch_wait(&w, g);
    /* Rejected with ECANCELED: the gather itself is not cancelled. */
    ck_assert_int_eq(fut_state(g), FUT_REJECTED);
    ck_assert_int_eq(fut_error(g), ECANCELED);
    ck_assert_int_eq(w.state, FUT_REJECTED);
    if (cancel_rest) {
        for (int i = 0; i < 3; i += 2) {
            settled(p[i].f, "another item");
            ck_assert_int_eq(fut_state(p[i].f), FUT_CANCELLED);
        }
    } else {
        ck_assert_msg(fut_state(p[0].f) == FUT_PENDING && fut_state(p[2].f) == FUT_PENDING,
                      "cancelling item 1 settled the others without FUT_CANCEL_REST: "
                      "states %d and %d",
                      fut_state(p[0].f), fut_state(p[2].f));
        ck_assert_int_eq(fut_promise_resolve(p[0].p, TU_PTR(1)), 0);
        ck_assert_int_eq(fut_promise_resolve(p[2].p, TU_PTR(2)), 0);
        drain_dependents(p[0].f);
        drain_dependents(p[2].f);
        ck_assert_int_eq(fut_error(g), ECANCELED);
    }
    watch_release(&w);
    fut_release(g);
    for (int i = 0; i < 3; i++)
        prom_free(&p[i]);
    finish();
    ASSERT_NONE_UNOBSERVED();
}
END_TEST

/* ------------------------------------------------------------------------
 * fut_gather with FUT_SETTLED, and fut_gather_item
 * ---------------------------------------------------------------------- */

#define NSETTLED 7

START_TEST(test_gather_settled)
{
    unsigned flags = _i ? FUT_SETTLED | FUT_CANCEL_REST : FUT_SETTLED;
    prom p[4];
    fut_future *fs[NSETTLED], *g;
    void **v;
    watch w;

    start();
    for (int i = 0; i < 4; i++)
        prom_new(&p[i]);
    fs[0] = p[0].f; /* resolved (after) */
    fs[1] = p[1].f; /* rejected before the gather is made */
    ck_assert_int_eq(fut_promise_reject(p[1].p, EIO, "disk %d failed", 3), 0);
    fs[2] = p[2].f; /* cancelled */
    fs[3] = fut_submit(g_rt, raise_fn, (void *)"x"); /* raises ENOENT */
    fs[4] = p[3].f; /* broken promise */
    fs[5] = fut_sleep(g_rt, 0.005);
    fs[6] = fut_submit(g_rt, value_fn, TU_PTR(60));
    ck_assert(fs[3] && fs[5] && fs[6]);
    g = fut_gather(g_rt, fs, NSETTLED, flags);
    ck_assert_ptr_nonnull(g);
    watch_on(&w, g);
    ck_assert_int_eq(fut_cancel(p[2].f), 0);
    fut_release(p[3].f);
    fut_promise_free(p[3].p); /* dropped unsettled: FUT_EBROKEN */
    ck_assert_int_eq(fut_state(g), FUT_PENDING); /* p[0] is still pending */
    ck_assert_int_eq(fut_promise_resolve(p[0].p, TU_PTR(10)), 0);

    watch_wait(&w, g);
    ck_assert_int_eq(fut_state(g), FUT_RESOLVED); /* never rejects */
    ck_assert_int_eq(fut_error(g), 0);
    v = fut_value(g);
    ck_assert_ptr_nonnull(v);
    ck_assert_ptr_eq(v[0], TU_PTR(10));
    for (int i = 1; i <= 5; i++)
        ck_assert_msg(v[i] == NULL, "value %d of a failed (or NULL) item is %p", i, v[i]);
    ck_assert_ptr_eq(v[6], TU_PTR(60));

    for (int i = 0; i < NSETTLED; i++)
        ck_assert_ptr_eq(fut_gather_item(g, (size_t)i), fs[i]);
    ck_assert_int_eq(fut_state(fut_gather_item(g, 0)), FUT_RESOLVED);
    ck_assert_int_eq(fut_state(fut_gather_item(g, 1)), FUT_REJECTED);
    ck_assert_int_eq(fut_error(fut_gather_item(g, 1)), EIO);
    ck_assert_str_eq(fut_message(fut_gather_item(g, 1)), "disk 3 failed");
    ck_assert_int_eq(fut_state(fut_gather_item(g, 2)), FUT_CANCELLED);
    ck_assert_int_eq(fut_error(fut_gather_item(g, 2)), ECANCELED);
    ck_assert_int_eq(fut_state(fut_gather_item(g, 3)), FUT_REJECTED);
    ck_assert_int_eq(fut_error(fut_gather_item(g, 3)), ENOENT);
    ck_assert_str_eq(fut_message(fut_gather_item(g, 3)), "no file x");
    ck_assert_int_eq(fut_state(fut_gather_item(g, 4)), FUT_REJECTED);
    ck_assert_int_eq(fut_error(fut_gather_item(g, 4)), FUT_EBROKEN);
    ck_assert_ptr_nonnull(strstr(fut_message(fut_gather_item(g, 4)), "broken"));
    ck_assert_int_eq(fut_state(fut_gather_item(g, 5)), FUT_RESOLVED);
    ck_assert_int_eq(fut_state(fut_gather_item(g, 6)), FUT_RESOLVED);
    ck_assert_ptr_eq(fut_value(fut_gather_item(g, 6)), TU_PTR(60));

    watch_release(&w);
    fut_release(fs[3]);
    fut_release(fs[5]);
    fut_release(fs[6]);
    for (int i = 0; i < 3; i++)
        prom_free(&p[i]);
    /* The gather holds every item: still readable. */
    ck_assert_int_eq(fut_error(fut_gather_item(g, 1)), EIO);
    ck_assert_int_eq(fut_error(fut_gather_item(g, 4)), FUT_EBROKEN);
    fut_release(g);
    finish();
    ASSERT_NONE_UNOBSERVED();
}
END_TEST

START_TEST(test_gather_item_bad)
{
    prom p[3];
    fut_future *fs[3], *g, *a, *r, *t, *sl, *th;

    start();
    for (int i = 0; i < 3; i++) {
        prom_new(&p[i]);
        fs[i] = p[i].f;
    }
    g = fut_gather(g_rt, fs, 3, 0);
    a = fut_any(g_rt, fs, 3, 0);
    r = fut_race(g_rt, fs, 3, 0);
    t = fut_timeout(fs[0], 10.0);
    sl = fut_sleep(g_rt, 10.0);
    th = fut_then(fs[0], then_id, NULL);
    ck_assert(g && a && r && t && sl && th);

    for (int i = 0; i < 3; i++)
        ck_assert_ptr_eq(fut_gather_item(g, (size_t)i), fs[i]);
    struct {
        fut_future *f;
        size_t i;
        const char *what;
    } bad[] = {
        { g, 3, "index n" },         { g, 4, "index n + 1" },  { g, SIZE_MAX, "index SIZE_MAX" },
        { NULL, 0, "NULL" },         { fs[0], 0, "a promise" }, { a, 0, "fut_any" },
        { r, 0, "fut_race" },        { t, 0, "fut_timeout" },  { sl, 0, "fut_sleep" },
        { th, 0, "fut_then" },
    };
    for (size_t k = 0; k < TU_ARRAY_LEN(bad); k++) {
        errno = 0;
        fut_future *it = fut_gather_item(bad[k].f, bad[k].i);
        ck_assert_msg(it == NULL, "fut_gather_item(%s) returned %p", bad[k].what, (void *)it);
        ck_assert_msg(errno == EINVAL, "fut_gather_item(%s): errno %d", bad[k].what, errno);
    }
    /* Also once settled. */
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(fut_promise_resolve(p[i].p, TU_PTR(i + 1)), 0);
    settled(g, "the gather");
    errno = 0;
    ck_assert_ptr_null(fut_gather_item(g, 3));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_eq(fut_gather_item(g, 2), fs[2]);

    fut_release(g);
    fut_release(a);
    fut_release(r);
    fut_release(t);
    ck_assert_int_eq(fut_cancel(sl), 0);
    fut_release(sl);
    fut_release(th);
    for (int i = 0; i < 3; i++)
        prom_free(&p[i]);
    finish();
}
END_TEST

/* ------------------------------------------------------------------------
 * Cancelling a combinator cancels its pending children
 * ---------------------------------------------------------------------- */

enum { C_GATHER, C_GATHER_SETTLED, C_ANY, C_RACE, C_TIMEOUT, C_KINDS };

START_TEST(test_cancel_combinator)
{
    int kind = _i;
    tu_gate gate;
    gwork bw[2], qw;
    fut_future *bf[2], *q, *sl, *c, *fs[5];
    prom p0, p1, pr;
    size_t n;
    watch w;

    start();
    tu_gate_init(&gate);
    block_workers(&gate, bw, bf);
    gwork_init(&qw, &gate, TU_PTR(1));
    q = fut_submit(g_rt, gated_fn, &qw); /* queued behind the two */
    ck_assert_ptr_nonnull(q);
    prom_new(&p0);
    prom_new(&p1);
    prom_new(&pr);
    sl = fut_sleep(g_rt, 10.0);
    ck_assert_ptr_nonnull(sl);
    fs[0] = p0.f;
    fs[1] = q;
    fs[2] = sl;
    fs[3] = p1.f;
    fs[4] = pr.f;
    n = 4;
    if (kind == C_GATHER || kind == C_GATHER_SETTLED) {
        /* An item that has resolved stays resolved. */
        ck_assert_int_eq(fut_promise_resolve(pr.p, TU_PTR(3)), 0);
        n = 5;
    }
    switch (kind) {
    case C_GATHER: c = fut_gather(g_rt, fs, n, 0); break;
    case C_GATHER_SETTLED: c = fut_gather(g_rt, fs, n, FUT_SETTLED); break;
    case C_ANY: c = fut_any(g_rt, fs, n, 0); break;
    case C_RACE: c = fut_race(g_rt, fs, n, 0); break;
    default: c = fut_timeout(p0.f, 10.0); n = 1; break;
    }
    ck_assert_ptr_nonnull(c);
    watch_on(&w, c);
    ck_assert_int_eq(fut_state(c), FUT_PENDING);

    ck_assert_int_eq(fut_cancel(c), 0);
    ck_assert_int_eq(fut_state(c), FUT_CANCELLED); /* at once */
    ck_assert_int_eq(fut_error(c), ECANCELED);
    ck_assert_int_eq(fut_cancel(c), EALREADY);
    for (size_t i = 0; i < n && i < 4; i++) {
        settled(fs[i], "a child");
        ck_assert_msg(fut_state(fs[i]) == FUT_CANCELLED, "child %zu: state %d", i,
                      fut_state(fs[i]));
        ck_assert_int_eq(fut_error(fs[i]), ECANCELED);
    }
    if (n == 5)
        ck_assert_int_eq(fut_state(pr.f), FUT_RESOLVED);
    ck_assert_int_eq(fut_promise_resolve(p0.p, NULL), EALREADY);
    watch_wait(&w, c);
    ck_assert_int_eq(w.state, FUT_CANCELLED);
    ck_assert_int_eq(w.code, ECANCELED);

    /* The queued job, cancelled with the combinator, never runs. */
    tu_gate_open(&gate);
    for (int k = 0; k < 2; k++) {
        settled(bf[k], "a blocking job");
        ck_assert_int_eq(fut_state(bf[k]), FUT_RESOLVED);
        fut_release(bf[k]);
    }
    if (kind == C_TIMEOUT) {
        /* Not a child: runs. */
        settled(q, "the queued job");
        ck_assert_int_eq(fut_state(q), FUT_RESOLVED);
    } else {
        ck_assert_int_eq(fut_state(q), FUT_CANCELLED);
    }
    watch_release(&w);
    fut_release(c);
    fut_release(q);
    if (kind == C_TIMEOUT)
        ck_assert_int_eq(fut_cancel(sl), 0); /* not a child either: ours to stop */
    fut_release(sl);
    if (kind != C_GATHER && kind != C_GATHER_SETTLED)
        ck_assert_int_eq(fut_promise_resolve(pr.p, NULL), 0);
    if (kind == C_TIMEOUT)
        ck_assert_int_eq(fut_promise_resolve(p1.p, NULL), 0);
    prom_free(&p0);
    prom_free(&p1);
    prom_free(&pr);
    finish();
    ck_assert_int_eq(atomic_load(&qw.runs), kind == C_TIMEOUT ? 1 : 0);
    tu_gate_destroy(&gate);
    ASSERT_NONE_UNOBSERVED();
}
END_TEST

/* ------------------------------------------------------------------------
 * fut_any
 * ---------------------------------------------------------------------- */

START_TEST(test_any_first_resolved_wins)
{
    int cancel_rest = _i;
    prom p[3];
    fut_future *fs[3], *a;
    watch w;

    start();
    for (int i = 0; i < 3; i++) {
        prom_new(&p[i]);
        fs[i] = p[i].f;
    }
    a = fut_any(g_rt, fs, 3, cancel_rest ? FUT_CANCEL_REST : 0);
    ck_assert_ptr_nonnull(a);
    watch_on(&w, a);

    /* An earlier failure does not decide it. */
    ck_assert_int_eq(fut_promise_reject(p[0].p, EIO, "p0 failed"), 0);
    drain_dependents(p[0].f);
    ck_assert_int_eq(fut_state(a), FUT_PENDING);
    ck_assert_int_eq(fut_promise_resolve(p[1].p, TU_PTR(11)), 0);
    watch_wait(&w, a);
    ck_assert_int_eq(fut_state(a), FUT_RESOLVED);
    ck_assert_ptr_eq(fut_value(a), TU_PTR(11));
    ck_assert_ptr_eq(w.value, TU_PTR(11));
    if (cancel_rest) {
        settled(p[2].f, "the third");
        ck_assert_int_eq(fut_state(p[2].f), FUT_CANCELLED);
        ck_assert_int_eq(fut_promise_resolve(p[2].p, TU_PTR(22)), EALREADY);
    } else {
        ck_assert_int_eq(fut_state(p[2].f), FUT_PENDING);
        ck_assert_int_eq(fut_promise_resolve(p[2].p, TU_PTR(22)), 0);
        drain_dependents(p[2].f);
    }
    ck_assert_ptr_eq(fut_value(a), TU_PTR(11));
    ck_assert_int_eq(fut_state(p[0].f), FUT_REJECTED);
    watch_release(&w);
    fut_release(a);
    for (int i = 0; i < 3; i++)
        prom_free(&p[i]);
    finish();
    /* p0's error was taken by fut_any: nothing is reported. */
    ASSERT_NONE_UNOBSERVED();
}
END_TEST

START_TEST(test_any_all_fail)
{
    static const int codes[3] = { EIO, ENOENT, EACCES };
    int early = _i == 1, last_cancelled = _i == 2;
    prom p[3];
    fut_future *fs[3], *a;
    watch w;

    start();
    for (int i = 0; i < 3; i++) {
        prom_new(&p[i]);
        fs[i] = p[i].f;
        if (early)
            ck_assert_int_eq(fut_promise_reject(p[i].p, codes[i], "failure %d", i), 0);
    }
    a = fut_any(g_rt, fs, 3, 0);
    ck_assert_ptr_nonnull(a);
    watch_on(&w, a);
    if (!early) {
        for (int i = 0; i < 3; i++) {
            ck_assert_int_eq(fut_state(a), FUT_PENDING);
            if (i == 2 && last_cancelled)
                ck_assert_int_eq(fut_cancel(p[i].f), 0);
            else
                ck_assert_int_eq(fut_promise_reject(p[i].p, codes[i], "failure %d", i), 0);
            drain_dependents(p[i].f);
        }
    }
    watch_wait(&w, a);
    ck_assert_int_eq(fut_state(a), FUT_REJECTED);
    if (last_cancelled) {
        /* The last failure was a cancel: a failure with ECANCELED, not a
         * cancel of the fut_any. */
        ck_assert_int_eq(fut_error(a), ECANCELED);
    } else if (!early) {
        /* The error of the last to fail. */
        ck_assert_int_eq(fut_error(a), EACCES);
        ck_assert_str_eq(fut_message(a), "failure 2");
    } else {
        /* All failed at once: one of their errors, whole. */
        int e = fut_error(a), i;
        for (i = 0; i < 3 && codes[i] != e; i++) {
        }
        ck_assert_msg(i < 3, "fut_any rejected with %d", e);
        char m[32];
        snprintf(m, sizeof m, "failure %d", i);
        ck_assert_str_eq(fut_message(a), m);
    }
    ck_assert_int_eq(w.code, fut_error(a));
    watch_release(&w);
    fut_release(a);
    for (int i = 0; i < 3; i++)
        prom_free(&p[i]);
    finish();
    ASSERT_NONE_UNOBSERVED();
}
END_TEST

/* ------------------------------------------------------------------------
 * fut_race
 * ---------------------------------------------------------------------- */

START_TEST(test_race_first_settled)
{
    int how = _i % 3, cancel_rest = _i / 3; /* 0: an error first, 1: a value, 2: a cancel */
    prom p[3];
    fut_future *fs[3], *r;
    watch w;

    start();
    for (int i = 0; i < 3; i++) {
        prom_new(&p[i]);
        fs[i] = p[i].f;
    }
    r = fut_race(g_rt, fs, 3, cancel_rest ? FUT_CANCEL_REST : 0);
    ck_assert_ptr_nonnull(r);
    watch_on(&w, r);
    ck_assert_int_eq(fut_state(r), FUT_PENDING);
    if (how == 0)
        ck_assert_int_eq(fut_promise_reject(p[1].p, EPERM, "p1 lost"), 0);
    else if (how == 1)
        ck_assert_int_eq(fut_promise_resolve(p[1].p, TU_PTR(33)), 0);
    else
        ck_assert_int_eq(fut_cancel(p[1].f), 0);
    watch_wait(&w, r);
    if (how == 0) {
        ck_assert_int_eq(fut_state(r), FUT_REJECTED);
        ck_assert_int_eq(fut_error(r), EPERM);
        ck_assert_str_eq(fut_message(r), "p1 lost");
    } else if (how == 1) {
        ck_assert_int_eq(fut_state(r), FUT_RESOLVED);
        ck_assert_ptr_eq(fut_value(r), TU_PTR(33));
    } else {
        /* A cancelled input is a failure: the race is not cancelled. */
        ck_assert_int_eq(fut_state(r), FUT_REJECTED);
        ck_assert_int_eq(fut_error(r), ECANCELED);
    }
    if (cancel_rest) {
        for (int i = 0; i < 3; i += 2) {
            settled(p[i].f, "a loser");
            ck_assert_int_eq(fut_state(p[i].f), FUT_CANCELLED);
            ck_assert_int_eq(fut_promise_resolve(p[i].p, TU_PTR(1)), EALREADY);
        }
    } else {
        /* A later value changes nothing; the others keep going. */
        ck_assert_int_eq(fut_state(p[0].f), FUT_PENDING);
        ck_assert_int_eq(fut_promise_resolve(p[0].p, TU_PTR(1)), 0);
        ck_assert_int_eq(fut_promise_resolve(p[2].p, TU_PTR(2)), 0);
        drain_dependents(p[0].f);
        drain_dependents(p[2].f);
    }
    ck_assert_int_eq(fut_state(r), w.state);
    watch_release(&w);
    fut_release(r);
    for (int i = 0; i < 3; i++)
        prom_free(&p[i]);
    finish();
    ASSERT_NONE_UNOBSERVED();
}
END_TEST

/* fut_any and fut_race over two promises settled by two threads at the
 * same moment, many rounds: each settles exactly once; fut_any always
 * gets the value (the other item fails); fut_race gets one of the two. */
#define NROUNDS 1000

typedef struct duel {
    prom p[2];
    fut_future *any, *race;
    watch wa, wr;
} duel;

typedef struct dueller {
    duel *d;
    int which; /* 0 rejects, 1 resolves */
    pthread_barrier_t *go;
} dueller;

static void *dueller_main(void *arg)
{
    dueller *x = arg;
    pthread_barrier_wait(x->go);
    for (int k = 0; k < NROUNDS; k++) {
        if (x->which == 0)
            TU_WCHECK_EQ(fut_promise_reject(x->d[k].p[0].p, EAGAIN, "round %d", k), 0);
        else
            TU_WCHECK_EQ(fut_promise_resolve(x->d[k].p[1].p, TU_PTR(k + 1)), 0);
    }
    return NULL;
}

START_TEST(test_any_race_threads)
{
    static duel d[NROUNDS];
    pthread_barrier_t go;
    dueller x[2];
    pthread_t th[2];
    int race_values = 0, race_errors = 0;

    start();
    for (int k = 0; k < NROUNDS; k++) {
        fut_future *fs[2];
        prom_new(&d[k].p[0]);
        prom_new(&d[k].p[1]);
        fs[0] = d[k].p[0].f;
        fs[1] = d[k].p[1].f;
        d[k].any = fut_any(g_rt, fs, 2, 0);
        d[k].race = fut_race(g_rt, fs, 2, 0);
        TU_REQUIRE(d[k].any && d[k].race, "fut_any / fut_race failed");
        watch_on(&d[k].wa, d[k].any);
        watch_on(&d[k].wr, d[k].race);
    }
    ck_assert_int_eq(pthread_barrier_init(&go, NULL, 3), 0);
    for (int i = 0; i < 2; i++) {
        x[i] = (dueller){ d, i, &go };
        ck_assert_int_eq(pthread_create(&th[i], NULL, dueller_main, &x[i]), 0);
    }
    pthread_barrier_wait(&go);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
    TU_ASSERT_NO_WFAIL();
    for (int k = 0; k < NROUNDS; k++) {
        watch_wait(&d[k].wa, d[k].any);
        watch_wait(&d[k].wr, d[k].race);
        TU_REQUIRE(fut_state(d[k].any) == FUT_RESOLVED && fut_value(d[k].any) == TU_PTR(k + 1),
                   "round %d: fut_any state %d value %p", k, fut_state(d[k].any),
                   fut_value(d[k].any));
        if (fut_state(d[k].race) == FUT_RESOLVED) {
            TU_REQUIRE(fut_value(d[k].race) == TU_PTR(k + 1), "round %d: race value %p", k,
                       fut_value(d[k].race));
            race_values++;
        } else {
            TU_REQUIRE(fut_state(d[k].race) == FUT_REJECTED && fut_error(d[k].race) == EAGAIN,
                       "round %d: race state %d error %d", k, fut_state(d[k].race),
                       fut_error(d[k].race));
            race_errors++;
        }
        /* The rejected item: read (or taken by fut_race). */
        (void)fut_error(d[k].p[0].f);
    }
    ck_assert_int_eq(race_values + race_errors, NROUNDS);
    for (int k = 0; k < NROUNDS; k++) {
        watch_release(&d[k].wa);
        watch_release(&d[k].wr);
        fut_release(d[k].any);
        fut_release(d[k].race);
        prom_free(&d[k].p[0]);
        prom_free(&d[k].p[1]);
    }
    pthread_barrier_destroy(&go);
    finish();
    ASSERT_NONE_UNOBSERVED();
}
END_TEST

/* ------------------------------------------------------------------------
 * Bad arguments
 * ---------------------------------------------------------------------- */

typedef fut_future *(*comb_fn)(fut_runtime *, fut_future *const *, size_t, unsigned);

static const struct {
    comb_fn fn;
    const char *name;
} combs[] = { { fut_gather, "fut_gather" }, { fut_any, "fut_any" }, { fut_race, "fut_race" } };

#define EXPECT_EINVAL(call, what)                                                         \
    do {                                                                                  \
        errno = 0;                                                                        \
        fut_future *r_ = (call);                                                          \
        ck_assert_msg(r_ == NULL, "%s: returned a future", what);                         \
        ck_assert_msg(errno == EINVAL, "%s: errno %d, expected EINVAL", what, errno);     \
    } while (0)

START_TEST(test_bad_args)
{
    fut_runtime *rt2;
    fut_promise *q;
    prom p[2];
    fut_future *mine[2], *mixed[2], *theirs[1], *with_null[2];
    char what[96];

    start();
    rt2 = tu_rt_new(2);
    prom_new(&p[0]);
    prom_new(&p[1]);
    q = fut_promise_new(rt2);
    ck_assert_ptr_nonnull(q);
    mine[0] = p[0].f;
    mine[1] = p[1].f;
    mixed[0] = p[0].f;
    mixed[1] = fut_promise_future(q);
    theirs[0] = mixed[1];
    with_null[0] = p[0].f;
    with_null[1] = NULL;

    for (size_t k = 0; k < TU_ARRAY_LEN(combs); k++) {
        comb_fn fn = combs[k].fn;
        if (fn != fut_gather) {
            snprintf(what, sizeof what, "%s with n == 0", combs[k].name);
            EXPECT_EINVAL(fn(g_rt, mine, 0, 0), what);
            EXPECT_EINVAL(fn(g_rt, NULL, 0, 0), what);
        }
        snprintf(what, sizeof what, "%s with a NULL array", combs[k].name);
        EXPECT_EINVAL(fn(g_rt, NULL, 2, 0), what);
        snprintf(what, sizeof what, "%s with a NULL item", combs[k].name);
        EXPECT_EINVAL(fn(g_rt, with_null, 2, 0), what);
        snprintf(what, sizeof what, "%s with a future of another runtime", combs[k].name);
        EXPECT_EINVAL(fn(g_rt, mixed, 2, 0), what);
        EXPECT_EINVAL(fn(g_rt, theirs, 1, 0), what);
        EXPECT_EINVAL(fn(rt2, mixed, 2, 0), what);
        EXPECT_EINVAL(fn(rt2, mine, 1, 0), what);
        static const unsigned bad_flags[] = { 4u, 8u, 0x80u, 0x80000000u, ~0u, FUT_CANCEL_REST | 4u };
        for (size_t j = 0; j < TU_ARRAY_LEN(bad_flags); j++) {
            snprintf(what, sizeof what, "%s with flags %#x", combs[k].name, bad_flags[j]);
            EXPECT_EINVAL(fn(g_rt, mine, 2, bad_flags[j]), what);
        }
    }
    EXPECT_EINVAL(fut_gather(g_rt, NULL, 0, 4u), "fut_gather(n 0) with unknown flags");
    /* fut_timeout */
    EXPECT_EINVAL(fut_timeout(NULL, 1.0), "fut_timeout(NULL)");
    EXPECT_EINVAL(fut_timeout(p[0].f, -1.0), "fut_timeout(-1)");
    EXPECT_EINVAL(fut_timeout(p[0].f, -1e-9), "fut_timeout(-1e-9)");
    EXPECT_EINVAL(fut_timeout(p[0].f, -INFINITY), "fut_timeout(-inf)");
    EXPECT_EINVAL(fut_timeout(p[0].f, NAN), "fut_timeout(NaN)");

    /* Nothing was made, and nothing was touched. */
    ck_assert_uint_eq(fut_runtime_live(g_rt), 2);
    ck_assert_uint_eq(fut_runtime_live(rt2), 1);
    ck_assert_int_eq(fut_state(p[0].f), FUT_PENDING);
    ck_assert_int_eq(fut_state(p[1].f), FUT_PENDING);
    ck_assert_int_eq(fut_promise_resolve(p[0].p, NULL), 0);
    ck_assert_int_eq(fut_promise_resolve(p[1].p, NULL), 0);
    ck_assert_int_eq(fut_promise_resolve(q, NULL), 0);

    /* The good calls work on the same arguments. */
    for (size_t k = 0; k < TU_ARRAY_LEN(combs); k++) {
        fut_future *c = combs[k].fn(g_rt, mine, 2, FUT_CANCEL_REST);
        ck_assert_msg(c != NULL, "%s failed on good arguments", combs[k].name);
        settled(c, combs[k].name);
        ck_assert_int_eq(fut_state(c), FUT_RESOLVED);
        fut_release(c);
    }
    fut_release(mixed[1]);
    fut_promise_free(q);
    prom_free(&p[0]);
    prom_free(&p[1]);
    tu_rt_finish(rt2);
    finish();
}
END_TEST

/* ------------------------------------------------------------------------
 * fut_timeout
 * ---------------------------------------------------------------------- */

/* The future settles first (0: right after, 1: before fut_timeout, 2: an
 * error right after, 3: cancelled by its owner): the timeout future takes
 * its outcome (a cancel as a failure with ECANCELED) and its 10 s timer
 * is gone at once (finish() would wait for it otherwise). */
START_TEST(test_timeout_settles_first)
{
    prom p;
    fut_future *t;
    watch w;

    start();
    prom_new(&p);
    if (_i == 1)
        ck_assert_int_eq(fut_promise_resolve(p.p, TU_PTR(9)), 0);
    t = fut_timeout(p.f, 10.0);
    ck_assert_ptr_nonnull(t);
    watch_on(&w, t);
    if (_i == 0)
        ck_assert_int_eq(fut_promise_resolve(p.p, TU_PTR(9)), 0);
    else if (_i == 2)
        ck_assert_int_eq(fut_promise_reject(p.p, EBADMSG, "bad reply %d", 42), 0);
    else if (_i == 3)
        ck_assert_int_eq(fut_cancel(p.f), 0);
    watch_wait(&w, t);
    if (_i == 3) {
        ck_assert_int_eq(fut_state(t), FUT_REJECTED);
        ck_assert_int_eq(fut_error(t), ECANCELED);
    } else if (_i == 2) {
        ck_assert_int_eq(fut_state(t), FUT_REJECTED);
        ck_assert_int_eq(fut_error(t), EBADMSG);
        ck_assert_str_eq(fut_message(t), "bad reply 42");
    } else {
        ck_assert_int_eq(fut_state(t), FUT_RESOLVED);
        ck_assert_ptr_eq(fut_value(t), TU_PTR(9));
        ck_assert_ptr_eq(w.value, TU_PTR(9));
    }
    ck_assert_int_eq(fut_state(p.f), _i == 2 ? FUT_REJECTED : _i == 3 ? FUT_CANCELLED : FUT_RESOLVED);
    watch_release(&w);
    fut_release(t);
    prom_free(&p);
    finish();
    ASSERT_NONE_UNOBSERVED();
}
END_TEST

/* The future never settles: after 50 ms, ETIMEDOUT and the future is
 * cancelled. Futures: a promise, a 10 s sleep, a continuation of a
 * promise, queued work. */
START_TEST(test_timeout_expires)
{
    int kind = _i;
    tu_gate gate;
    gwork bw[2], qw;
    fut_future *bf[2] = { NULL, NULL }, *inner, *t;
    prom p;
    uint64_t t0;
    watch w;

    start();
    tu_gate_init(&gate);
    prom_new(&p);
    if (kind == 0) {
        inner = fut_retain(p.f);
    } else if (kind == 1) {
        inner = fut_sleep(g_rt, 10.0);
    } else if (kind == 2) {
        inner = fut_then(p.f, then_id, NULL);
    } else {
        block_workers(&gate, bw, bf);
        gwork_init(&qw, &gate, TU_PTR(1));
        inner = fut_submit(g_rt, gated_fn, &qw);
    }
    ck_assert_ptr_nonnull(inner);
    t0 = tu_now_ns();
    t = fut_timeout(inner, 0.05);
    ck_assert_ptr_nonnull(t);
    watch_on(&w, t);
    watch_wait(&w, t);
    ck_assert_msg(w.at - t0 >= 50 * NS_PER_MS, "timed out after %llu ns of 50 ms",
                  (unsigned long long)(w.at - t0));
    ck_assert_int_eq(fut_state(t), FUT_REJECTED);
    ck_assert_int_eq(fut_error(t), ETIMEDOUT);
    ck_assert_msg(strstr(fut_message(t), "timed out") != NULL, "message \"%s\"", fut_message(t));
    ck_assert_int_eq(w.code, ETIMEDOUT);
    /* The future was cancelled (before the continuation ran). */
    ck_assert_int_eq(fut_state(inner), FUT_CANCELLED);
    ck_assert_int_eq(fut_error(inner), ECANCELED);
    ck_assert_int_eq(fut_cancel(inner), EALREADY);
    if (kind == 0)
        ck_assert_int_eq(fut_promise_resolve(p.p, NULL), EALREADY);
    tu_gate_open(&gate);
    if (kind == 3) {
        for (int k = 0; k < 2; k++) {
            settled(bf[k], "a blocking job");
            fut_release(bf[k]);
        }
    }
    if (kind != 0)
        ck_assert_int_eq(fut_promise_resolve(p.p, NULL), 0); /* not the inner future */
    watch_release(&w);
    fut_release(t);
    fut_release(inner);
    prom_free(&p);
    finish();
    if (kind == 3)
        ck_assert_int_eq(atomic_load(&qw.runs), 0); /* cancelled while queued */
    tu_gate_destroy(&gate);
    ASSERT_NONE_UNOBSERVED();
}
END_TEST

/* 1,000 rounds of a 0-2 ms job under a 1 ms timeout: each timeout future
 * settles exactly once, with the job's value (the job resolved) or with
 * ETIMEDOUT (the job cancelled). */
#define NTIMEOUT 1000

typedef struct tjob {
    uint64_t ns;
    uintptr_t value;
    atomic_int runs;
} tjob;

static void *tjob_fn(void *arg)
{
    tjob *j = arg;
    uint64_t end = tu_now_ns() + j->ns;
    TU_WCHECK(!fut_on_dispatcher(g_rt));
    atomic_fetch_add(&j->runs, 1);
    while (tu_now_ns() < end && !fut_cancelled()) {
        struct timespec ts = { 0, 50000 };
        nanosleep(&ts, NULL);
    }
    return TU_PTR(j->value);
}

START_TEST(test_timeout_race_completion)
{
    static tjob jobs[NTIMEOUT];
    int resolved = 0, timed_out = 0;
    tu_rng r;

    start();
    tu_rng_seed(&r, 99);
    for (int k = 0; k < NTIMEOUT; k++) {
        tjob *j = &jobs[k];
        fut_future *job, *t;
        watch w;

        j->ns = (uint64_t)tu_rng_upto(&r, 2000) * 1000u; /* 0..2 ms */
        j->value = (uintptr_t)k + 100;
        atomic_init(&j->runs, 0);
        job = fut_submit(g_rt, tjob_fn, j);
        TU_REQUIRE(job != NULL, "fut_submit failed");
        t = fut_timeout(job, 0.001);
        TU_REQUIRE(t != NULL, "fut_timeout failed: %s", strerror(errno));
        watch_on(&w, t);
        watch_wait(&w, t);
        if (fut_state(t) == FUT_RESOLVED) {
            resolved++;
            TU_REQUIRE(fut_value(t) == TU_PTR(j->value), "round %d: value %p", k, fut_value(t));
            TU_REQUIRE(fut_state(job) == FUT_RESOLVED, "round %d: job state %d", k,
                       fut_state(job));
            TU_REQUIRE(atomic_load(&j->runs) == 1, "round %d: job ran %d times", k,
                       atomic_load(&j->runs));
        } else {
            timed_out++;
            TU_REQUIRE(fut_state(t) == FUT_REJECTED && fut_error(t) == ETIMEDOUT,
                       "round %d: timeout state %d error %d", k, fut_state(t), fut_error(t));
            /* the delay in the message: set before the timer could fire */
            TU_REQUIRE(strcmp(fut_message(t), "timed out after 0.001 s") == 0,
                       "round %d: message \"%s\"", k, fut_message(t));
            TU_REQUIRE(fut_state(job) == FUT_CANCELLED,
                       "round %d: timed out, but the %llu us job is in state %d (value %p), not "
                       "cancelled",
                       k, (unsigned long long)(j->ns / 1000), fut_state(job), fut_value(job));
            TU_REQUIRE(atomic_load(&j->runs) <= 1, "round %d: job ran %d times", k,
                       atomic_load(&j->runs));
        }
        watch_release(&w);
        fut_release(t);
        fut_release(job);
    }
    ck_assert_int_eq(resolved + timed_out, NTIMEOUT);
    ck_assert_int_gt(resolved, 0);
    ck_assert_int_gt(timed_out, 0);
    finish();
    ASSERT_NONE_UNOBSERVED();
}
END_TEST

/* ------------------------------------------------------------------------
 * The unobserved-error hook
 * ---------------------------------------------------------------------- */

static atomic_int hook_calls;
static atomic_int hook_code;
static pthread_mutex_t hook_lock = PTHREAD_MUTEX_INITIALIZER;
static char hook_msg[128];

static void record_hook(int code, const char *message, void *arg)
{
    TU_WCHECK(arg == &hook_calls);
    pthread_mutex_lock(&hook_lock);
    snprintf(hook_msg, sizeof hook_msg, "%s", message ? message : "(null)");
    pthread_mutex_unlock(&hook_lock);
    atomic_store(&hook_code, code);
    atomic_fetch_add(&hook_calls, 1);
}

#define ASSERT_HOOK_CALLS(n)                                                        \
    do {                                                                            \
        int c_ = atomic_load(&hook_calls);                                          \
        ck_assert_msg(c_ == (n), "the unobserved hook was called %d time(s), expected %d", c_, (n)); \
    } while (0)
#define ASSERT_HOOK_CODE(code)                                                      \
    do {                                                                            \
        int c_ = atomic_load(&hook_code);                                           \
        ck_assert_msg(c_ == (code), "the unobserved hook got code %d, expected %d", c_, (code)); \
    } while (0)

static void drained(void)
{
    bool ok;
    TU_POLL(ok, fut_runtime_live(g_rt) == 0, 2000u * TU_SLOW);
    ck_assert_msg(ok, "%llu future(s) still live", (unsigned long long)fut_runtime_live(g_rt));
}

START_TEST(test_unobserved_hook)
{
    prom p[4];
    fut_future *fs[5], *g, *a;

    start();
    atomic_store(&hook_calls, 0);
    fut_set_unobserved_hook(record_hook, &hook_calls);

    /* 1. FUT_SETTLED collects its items' errors: none is reported, even
     * though nobody reads them. */
    for (int i = 0; i < 3; i++) {
        prom_new(&p[i]);
        fs[i] = p[i].f;
    }
    ck_assert_int_eq(fut_promise_reject(p[0].p, EIO, "a"), 0); /* before */
    fs[3] = fut_submit(g_rt, raise_fn, (void *)"y");
    fs[4] = fut_sleep(g_rt, 0.001);
    ck_assert(fs[3] && fs[4]);
    g = fut_gather(g_rt, fs, 5, FUT_SETTLED);
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(fut_promise_reject(p[1].p, ENOENT, "b"), 0); /* after */
    ck_assert_int_eq(fut_promise_resolve(p[2].p, NULL), 0);
    fut_release(fs[3]);
    fut_release(fs[4]);
    for (int i = 0; i < 3; i++)
        prom_free(&p[i]);
    TU_SETTLE(g); /* fut_wait reads no error */
    ck_assert_int_eq(fut_state(g), FUT_RESOLVED);
    fut_release(g);
    drained();
    ck_assert_msg(atomic_load(&hook_calls) == 0,
                  "the hook was called %d time(s) for items a FUT_SETTLED gather collected; "
                  "last: %d %s",
                  atomic_load(&hook_calls), atomic_load(&hook_code), hook_msg);

    /* 2. A rejected gather released unread: reported once, with its error
     * (its item's error was taken by the gather: not reported). */
    prom_new(&p[3]);
    g = fut_gather(g_rt, &p[3].f, 1, 0);
    ck_assert_ptr_nonnull(g);
    ck_assert_int_eq(fut_promise_reject(p[3].p, EPERM, "gather failed %s", "here"), 0);
    prom_free(&p[3]);
    TU_SETTLE(g);
    ck_assert_int_eq(fut_state(g), FUT_REJECTED);
    fut_release(g);
    drained();
    ASSERT_HOOK_CALLS(1);
    ASSERT_HOOK_CODE(EPERM);
    pthread_mutex_lock(&hook_lock);
    ck_assert_str_eq(hook_msg, "gather failed here");
    pthread_mutex_unlock(&hook_lock);

    /* 3. The same for fut_any whose items all failed: once, for the any. */
    atomic_store(&hook_calls, 0);
    prom_new(&p[0]);
    prom_new(&p[1]);
    fs[0] = p[0].f;
    fs[1] = p[1].f;
    a = fut_any(g_rt, fs, 2, 0);
    ck_assert_ptr_nonnull(a);
    ck_assert_int_eq(fut_promise_reject(p[0].p, EIO, "first"), 0);
    drain_dependents(p[0].f);
    ck_assert_int_eq(fut_promise_reject(p[1].p, ENOSPC, "second"), 0);
    prom_free(&p[0]);
    prom_free(&p[1]);
    TU_SETTLE(a);
    fut_release(a);
    drained();
    ASSERT_HOOK_CALLS(1);
    ASSERT_HOOK_CODE(ENOSPC);

    /* 4. A rejected gather whose error was read: not reported. */
    atomic_store(&hook_calls, 0);
    prom_new(&p[0]);
    g = fut_gather(g_rt, &p[0].f, 1, 0);
    ck_assert_int_eq(fut_promise_reject(p[0].p, EIO, "read"), 0);
    prom_free(&p[0]);
    TU_SETTLE(g);
    ck_assert_int_eq(fut_error(g), EIO);
    fut_release(g);
    drained();
    ASSERT_HOOK_CALLS(0);

    finish(); /* restores the default hook */
    TU_ASSERT_NO_WFAIL();
}
END_TEST

/* ------------------------------------------------------------------------
 * fut_wait_many (asyncio.wait)
 * ---------------------------------------------------------------------- */

START_TEST(test_wait_many)
{
    fut_promise *p[3];
    fut_future *in[3], *w;
    double t0;
    int i;

    g_rt = tu_rt_new(2);
    for (i = 0; i < 3; i++) {
        p[i] = fut_promise_new(g_rt);
        in[i] = fut_promise_future(p[i]);
    }
    /* FIRST_COMPLETED: one settles, it resolves with 1; nothing else is
     * touched. */
    w = fut_wait_many(g_rt, in, 3, FUT_FIRST_COMPLETED, -1);
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(fut_promise_resolve(p[1], TU_PTR(5)), 0);
    TU_SETTLE(w);
    ck_assert_ptr_eq(fut_value(w), TU_PTR(1));
    ck_assert_int_eq(fut_state(in[0]), FUT_PENDING);
    fut_release(w);
    /* FIRST_EXCEPTION: a resolve is not enough, a reject is. */
    w = fut_wait_many(g_rt, in, 3, FUT_FIRST_EXCEPTION, -1);
    tu_sleep_ms(5);
    ck_assert_int_eq(fut_state(w), FUT_PENDING); /* in[1] resolved: not an exception */
    ck_assert_int_eq(fut_promise_reject(p[2], EIO, "bad"), 0);
    TU_SETTLE(w);
    ck_assert_ptr_eq(fut_value(w), TU_PTR(2));
    ck_assert_int_eq(fut_error(in[2]), EIO); /* still ours to read */
    fut_release(w);
    /* A timeout: resolves with what is done; the pending one is left. */
    w = fut_wait_many(g_rt, in, 3, FUT_ALL_COMPLETED, 0.02);
    t0 = tu_now_ns() / 1e9;
    TU_SETTLE(w);
    ck_assert(tu_now_ns() / 1e9 - t0 >= 0.015);
    ck_assert_ptr_eq(fut_value(w), TU_PTR(2));
    ck_assert_int_eq(fut_state(in[0]), FUT_PENDING);
    fut_release(w);
    /* Cancelling it leaves the inputs alone. */
    w = fut_wait_many(g_rt, in, 3, FUT_ALL_COMPLETED, 100.0);
    ck_assert_int_eq(fut_cancel(w), 0);
    ck_assert_int_eq(fut_state(in[0]), FUT_PENDING);
    fut_release(w);
    /* ALL_COMPLETED. */
    w = fut_wait_many(g_rt, in, 3, FUT_ALL_COMPLETED, -1);
    ck_assert_int_eq(fut_promise_resolve(p[0], NULL), 0);
    TU_SETTLE(w);
    ck_assert_ptr_eq(fut_value(w), TU_PTR(3));
    fut_release(w);
    /* Bad arguments. */
    errno = 0;
    ck_assert_ptr_null(fut_wait_many(g_rt, in, 0, FUT_ALL_COMPLETED, -1));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_null(fut_wait_many(g_rt, in, 3, 7, -1));
    ck_assert_ptr_null(fut_wait_many(g_rt, NULL, 3, FUT_ALL_COMPLETED, -1));
    for (i = 0; i < 3; i++) {
        fut_release(in[i]);
        fut_promise_free(p[i]);
    }
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

static Suite *future_combine_suite(void)
{
    Suite *s = suite_create("future_combine");
    TCase *tc;

    tc = tu_tcase(s, "gather", 30);
    tcase_add_loop_test(tc, test_gather_empty, 0, (int)TU_ARRAY_LEN(gather_flags));
    tcase_add_loop_test(tc, test_gather_one, 0, 6);
    tcase_add_test(tc, test_gather_100k);
    tcase_add_test(tc, test_gather_work);
    tcase_add_loop_test(tc, test_gather_first_error, 0, 2);
    tcase_add_loop_test(tc, test_gather_cancelled_item, 0, 2);
    tcase_add_loop_test(tc, test_gather_settled, 0, 2);
    tcase_add_test(tc, test_gather_item_bad);

    tc = tu_tcase(s, "cancel", 30);
    tcase_add_loop_test(tc, test_cancel_combinator, 0, C_KINDS);

    tc = tu_tcase(s, "wait_many", 30);
    tcase_add_test(tc, test_wait_many);

    tc = tu_tcase(s, "any_race", 30);
    tcase_add_loop_test(tc, test_any_first_resolved_wins, 0, 2);
    tcase_add_loop_test(tc, test_any_all_fail, 0, 3);
    tcase_add_loop_test(tc, test_race_first_settled, 0, 6);
    tcase_add_test(tc, test_any_race_threads);

    tc = tu_tcase(s, "args", 30);
    tcase_add_test(tc, test_bad_args);

    tc = tu_tcase(s, "timeout", 30);
    tcase_add_loop_test(tc, test_timeout_settles_first, 0, 4);
    tcase_add_loop_test(tc, test_timeout_expires, 0, 4);
    tcase_add_test(tc, test_timeout_race_completion);

    tc = tu_tcase(s, "unobserved", 30);
    tcase_add_test(tc, test_unobserved_hook);
    return s;
}

int main(void)
{
    return tu_run_suite(future_combine_suite());
}
