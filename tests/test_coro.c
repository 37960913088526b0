/* test_coro.c - coroutines: fut_run and fut_async results and errors, await of settled futures without a switch, yields interleaving in order, await outside coroutines (plain thread, continuation, own future), bad arguments, up to 100,000 coroutines alive at once each awaiting a sleep and a pool job, a 1,000-deep await chain, errors crossing three levels of awaits, each coroutine's fut_raise and fut_cancelled kept across switches (interleaved with continuations and work functions that raise), awaits racing a pool thread's settle (10,000 rounds), awaits of another runtime's futures with our runtime freed at once (200 cycles), cancel before start / while suspended / of a yield loop / after finish, runtime shutdown with suspended coroutines, stack reuse without leaks, stack size, and a stack overflow dying at the guard. */
#include "testutil.h"

#include <math.h>

#include <signal.h>

static fut_runtime *g_rt;

/* ------------------------------------------------------------------------
 * Results and errors
 * ---------------------------------------------------------------------- */

static void *answer(void *arg)
{
    TU_WCHECK(fut_in_coroutine());
    TU_WCHECK(fut_on_dispatcher(g_rt));
    return arg;
}

static void *raiser(void *arg)
{
    return fut_raise((int)(intptr_t)arg, "raised %d", (int)(intptr_t)arg);
}

START_TEST(test_run_and_async)
{
    void *r = TU_PTR(1);
    fut_future *f;
    int err;

    g_rt = tu_rt_new(2);
    ck_assert_int_eq(fut_run(g_rt, answer, TU_PTR(42), &r), 0);
    ck_assert_ptr_eq(r, TU_PTR(42));
    ck_assert_int_eq(fut_run(g_rt, raiser, TU_PTR(EIO), &r), EIO);
    ck_assert_ptr_null(r);
    ck_assert_int_eq(fut_run(g_rt, answer, NULL, NULL), 0);

    f = fut_async(g_rt, raiser, TU_PTR(ENOENT));
    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_null(fut_await(f, &err)); /* a plain thread blocks */
    ck_assert_int_eq(err, ENOENT);
    ck_assert_str_eq(fut_message(f), "raised 2");
    fut_release(f);

    f = fut_async(g_rt, answer, TU_PTR(7));
    ck_assert_ptr_eq(fut_await(f, NULL), TU_PTR(7));
    fut_release(f);
    ck_assert_int_eq(fut_in_coroutine(), 0);
    ck_assert_int_eq(fut_yield(), EPERM);
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* Bad arguments. */
static void *await_null(void *arg)
{
    int err = 0;
    (void)arg;
    TU_WCHECK(fut_await(NULL, &err) == NULL && err == EINVAL);
    return NULL;
}

START_TEST(test_bad_args)
{
    int err = 0;

    g_rt = tu_rt_new(2);
    errno = 0;
    ck_assert_ptr_null(fut_async(g_rt, NULL, NULL));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(fut_run(g_rt, NULL, NULL, NULL), EINVAL);
    ck_assert_ptr_null(fut_await(NULL, &err));
    ck_assert_int_eq(err, EINVAL);
    ck_assert_ptr_null(fut_await(NULL, NULL));
    ck_assert_int_eq(fut_run(g_rt, await_null, NULL, NULL), 0);
    ck_assert_int_eq(fut_runtime_set_stack_size(g_rt, 0), EINVAL);
    ck_assert_int_eq(fut_runtime_set_stack_size(g_rt, 1), EINVAL);
    ck_assert_int_eq(fut_runtime_set_stack_size(g_rt, FUT_STACK_MIN - 1), EINVAL);
    ck_assert_int_eq(fut_runtime_set_stack_size(g_rt, (size_t)1 << 31), EINVAL);
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* ------------------------------------------------------------------------
 * Order: an await of a settled future does not switch; yields interleave
 * ---------------------------------------------------------------------- */

static char trace[64];
static int ntrace;

static void *settled_awaiter(void *arg)
{
    fut_future *f = arg;
    int err;
    trace[ntrace++] = 'a';
    for (int i = 0; i < 1000; i++)
        TU_WCHECK(fut_await(f, &err) == TU_PTR(5) && err == 0);
    trace[ntrace++] = 'A';
    return NULL;
}

static void *other(void *arg)
{
    (void)arg;
    trace[ntrace++] = 'o';
    return NULL;
}

static void *yielder(void *arg)
{
    char c = (char)(intptr_t)arg;
    for (int i = 0; i < 3; i++) {
        trace[ntrace++] = c;
        TU_WCHECK(fut_yield() == 0);
    }
    return NULL;
}

/* Start the two coroutines from a coroutine, so that both are queued on
 * the dispatcher before either runs. */
struct pair_args {
    fut_work_fn fn[2];
    void *arg[2];
};

static void *start_pair(void *arg)
{
    struct pair_args *pa = arg;
    fut_future *c[2];
    int err;

    c[0] = fut_async(g_rt, pa->fn[0], pa->arg[0]);
    c[1] = fut_async(g_rt, pa->fn[1], pa->arg[1]);
    for (int k = 0; k < 2; k++) {
        TU_WCHECK(c[k] != NULL);
        (void)fut_await(c[k], &err);
        TU_WCHECK(err == 0);
        fut_release(c[k]);
    }
    return NULL;
}

START_TEST(test_order)
{
    fut_promise *p;
    fut_future *f;
    struct pair_args pa;

    g_rt = tu_rt_new(2);
    p = fut_promise_new(g_rt);
    f = fut_promise_future(p);
    ck_assert_int_eq(fut_promise_resolve(p, TU_PTR(5)), 0);
    ntrace = 0;
    pa.fn[0] = settled_awaiter;
    pa.arg[0] = f;
    pa.fn[1] = other;
    pa.arg[1] = NULL;
    ck_assert_int_eq(fut_run(g_rt, start_pair, &pa, NULL), 0);
    trace[ntrace] = '\0';
    ck_assert_str_eq(trace, "aAo"); /* no switch in 1,000 awaits */

    ntrace = 0;
    pa.fn[0] = pa.fn[1] = yielder;
    pa.arg[0] = TU_PTR('x');
    pa.arg[1] = TU_PTR('y');
    ck_assert_int_eq(fut_run(g_rt, start_pair, &pa, NULL), 0);
    trace[ntrace] = '\0';
    ck_assert_str_eq(trace, "xyxyxy");
    fut_release(f);
    fut_promise_free(p);
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* ------------------------------------------------------------------------
 * Await outside a coroutine: in a continuation, and a coroutine awaiting
 * its own future
 * ---------------------------------------------------------------------- */

static fut_future *pending_f;
static atomic_int cont_err;

static void *cont_awaits(void *value, void *arg)
{
    int err = 0;
    (void)value;
    (void)arg;
    TU_WCHECK(!fut_in_coroutine());
    TU_WCHECK(fut_await(pending_f, &err) == NULL);
    atomic_store(&cont_err, err);
    return NULL;
}

static fut_future *self_f;
static atomic_int self_ready;

static void *self_awaiter(void *arg)
{
    int err = 0;
    (void)arg;
    while (!atomic_load(&self_ready))
        TU_WCHECK(fut_yield() == 0);
    TU_WCHECK(fut_await(self_f, &err) == NULL);
    return TU_PTR(err);
}

START_TEST(test_await_outside)
{
    fut_promise *p, *q;
    fut_future *src, *c;

    g_rt = tu_rt_new(2);
    p = fut_promise_new(g_rt);
    q = fut_promise_new(g_rt);
    pending_f = fut_promise_future(p);
    src = fut_promise_future(q);
    c = fut_then(src, cont_awaits, NULL);
    ck_assert_int_eq(fut_promise_resolve(q, NULL), 0);
    TU_SETTLE(c);
    ck_assert_int_eq(atomic_load(&cont_err), EDEADLK);
    fut_release(c);
    fut_release(src);
    fut_promise_free(q);
    ck_assert_int_eq(fut_promise_resolve(p, NULL), 0);
    fut_release(pending_f);
    fut_promise_free(p);

    atomic_store(&self_ready, 0);
    self_f = fut_async(g_rt, self_awaiter, NULL);
    atomic_store(&self_ready, 1);
    TU_SETTLE(self_f);
    ck_assert_ptr_eq(fut_value(self_f), TU_PTR(EDEADLK));
    fut_release(self_f);
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* ------------------------------------------------------------------------
 * Many alive at once: each awaits a sleep and a pool job
 * ---------------------------------------------------------------------- */

/* ThreadSanitizer gives every coroutine (a TSan fiber) about 160 KiB of
 * its own state: 100,000 of them do not fit there. */
#if TU_TSAN
#define NMANY_MAX 4000
#else
#define NMANY_MAX 100000
#endif

static void *times3(void *arg)
{
    TU_WCHECK(!fut_on_dispatcher(g_rt));
    return TU_PTR(TU_UINT(arg) * 3);
}

static atomic_long many_started;

static void *many_one(void *arg)
{
    int err;
    fut_future *s, *w;
    void *v;

    atomic_fetch_add(&many_started, 1);
    s = fut_sleep(g_rt, 0.05);
    TU_WCHECK(s != NULL);
    TU_WCHECK(fut_await(s, &err) == NULL && err == 0);
    fut_release(s);
    w = fut_submit(g_rt, times3, arg);
    v = fut_await(w, &err);
    TU_WCHECK(err == 0);
    fut_release(w);
    return TU_PTR(TU_UINT(v) + 1);
}

/* How many stacks the process may map: two mappings each (a guard and the
 * stack), and room for everything else. */
static long coroutines_that_fit(void)
{
    FILE *fp = fopen("/proc/sys/vm/max_map_count", "r");
    long max = 65530, n;

    if (fp != NULL) {
        if (fscanf(fp, "%ld", &max) != 1)
            max = 65530;
        fclose(fp);
    }
    n = (max - 4000) / 2;
    return n < NMANY_MAX ? n : NMANY_MAX;
}

START_TEST(test_many_alive)
{
    long n = coroutines_that_fit();
    fut_future **fs = malloc((size_t)n * sizeof *fs), *all;
    void **vals;
    int err;

    if (n < NMANY_MAX && !TU_TSAN)
        fprintf(stderr, "test_many_alive: vm.max_map_count allows %ld coroutines at once, not %d "
                        "(tools/check-all.sh raises it when run as root)\n", n, NMANY_MAX);
    TU_REQUIRE(fs != NULL, "malloc");
    g_rt = tu_rt_new(2);
    ck_assert_int_eq(fut_runtime_set_stack_size(g_rt, 16384), 0);
    atomic_store(&many_started, 0);
    for (long i = 0; i < n; i++) {
        fs[i] = fut_async(g_rt, many_one, TU_PTR(i));
        TU_REQUIRE(fs[i] != NULL, "fut_async %ld: %s", i, strerror(errno));
    }
    all = fut_gather(g_rt, fs, (size_t)n, 0);
    TU_REQUIRE(all != NULL, "gather");
    TU_REQUIRE(fut_wait(all, 4 * TU_WAIT_MS / 1000.0) == 0, "the coroutines did not finish");
    err = fut_error(all);
    TU_REQUIRE(err == 0, "gather failed: %d %s", err, fut_message(all));
    vals = fut_value(all);
    for (long i = 0; i < n; i++)
        TU_REQUIRE(TU_UINT(vals[i]) == (uintptr_t)i * 3 + 1, "coroutine %ld returned %lu", i,
                   (unsigned long)TU_UINT(vals[i]));
    ck_assert_int_eq(atomic_load(&many_started), n);
    fut_release(all);
    for (long i = 0; i < n; i++)
        fut_release(fs[i]);
    free(fs);
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* ------------------------------------------------------------------------
 * Chains: a 1,000-deep chain of awaits; an error through three levels
 * ---------------------------------------------------------------------- */

#define DEPTH 1000

static void *chain(void *arg)
{
    uintptr_t d = TU_UINT(arg);
    fut_future *f;
    void *v;
    int err;

    if (d == DEPTH)
        return TU_PTR(0);
    f = fut_async(g_rt, chain, TU_PTR(d + 1));
    TU_WCHECK(f != NULL);
    v = fut_await(f, &err);
    fut_release(f);
    if (err != 0)
        return fut_raise(err, "level %lu: %s", (unsigned long)d, strerror(err));
    return TU_PTR(TU_UINT(v) + 1);
}

static void *level3(void *arg)
{
    (void)arg;
    return fut_raise(EACCES, "denied at level 3: %s", "/etc/shadow");
}

static void *level_up(void *arg)
{
    fut_work_fn next = (fut_work_fn)arg;
    fut_future *f = fut_async(g_rt, next, NULL);
    int err;
    void *v = fut_await(f, &err);
    if (err != 0) {
        char buf[128];
        snprintf(buf, sizeof buf, "%s", fut_message(f));
        fut_release(f);
        return fut_raise(err, "%s", buf);
    }
    fut_release(f);
    return v;
}

static void *level2(void *arg)
{
    (void)arg;
    return level_up((void *)level3);
}

START_TEST(test_chains)
{
    void *r = NULL;
    fut_future *f;
    int err;

    g_rt = tu_rt_new(2);
    ck_assert_int_eq(fut_run(g_rt, chain, TU_PTR(0), &r), 0);
    ck_assert_ptr_eq(r, TU_PTR(DEPTH));

    f = fut_async(g_rt, level_up, (void *)level2);
    ck_assert_ptr_null(fut_await(f, &err));
    ck_assert_int_eq(err, EACCES);
    ck_assert_str_eq(fut_message(f), "denied at level 3: /etc/shadow");
    fut_release(f);
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* ------------------------------------------------------------------------
 * Each coroutine's fut_raise and fut_cancelled are its own across switches:
 * two raisers interleaved by yields and awaits, a clean one between them,
 * a continuation raising on the dispatcher meanwhile, a work function
 * raising on the pool, and fut_cancelled in a cancelled yield loop.
 * ---------------------------------------------------------------------- */

static void *catch_raise(int code, const char *message, void *arg)
{
    (void)arg;
    TU_WCHECK(code == ENOSPC && strcmp(message, "from a work function") == 0);
    return fut_raise(EINVAL, "from a continuation");
}

static void *work_raise(void *arg)
{
    (void)arg;
    return fut_raise(ENOSPC, "from a work function");
}

/* arg: the error to raise first (0: none); every step yields or awaits. */
static void *interleaved(void *arg)
{
    int code = (int)(intptr_t)arg, err = 0;
    fut_future *w, *t;

    TU_WCHECK(!fut_cancelled());
    if (code != 0)
        fut_raise(code, "raised %d before the switches", code);
    for (int i = 0; i < 50; i++) {
        TU_WCHECK(fut_yield() == 0);
        w = fut_submit(g_rt, work_raise, NULL); /* pending: a real suspension */
        TU_WCHECK(fut_await(w, &err) == NULL && err == ENOSPC);
        TU_WCHECK(strcmp(fut_message(w), "from a work function") == 0);
        t = fut_catch(w, catch_raise, NULL);
        TU_WCHECK(fut_await(t, &err) == NULL && err == EINVAL);
        TU_WCHECK(strcmp(fut_message(t), "from a continuation") == 0);
        fut_release(t);
        fut_release(w);
    }
    return TU_PTR(7);
}

static volatile int loop_saw_cancelled = -1;

static void *cancelled_loop(void *arg)
{
    (void)arg;
    TU_WCHECK(!fut_cancelled());
    while (fut_yield() == 0)
        ;
    loop_saw_cancelled = fut_cancelled();
    return NULL;
}

START_TEST(test_call_records)
{
    fut_future *f[3], *loop;
    int err;

    g_rt = tu_rt_new(2);
    f[0] = fut_async(g_rt, interleaved, TU_PTR(EIO));
    f[1] = fut_async(g_rt, interleaved, TU_PTR(0));
    f[2] = fut_async(g_rt, interleaved, TU_PTR(EPERM));
    loop = fut_async(g_rt, cancelled_loop, NULL);
    ck_assert(f[0] && f[1] && f[2] && loop);
    ck_assert_ptr_null(fut_await(f[0], &err));
    ck_assert_int_eq(err, EIO);
    ck_assert_str_eq(fut_message(f[0]), "raised 5 before the switches");
    ck_assert_ptr_eq(fut_await(f[1], &err), TU_PTR(7));
    ck_assert_int_eq(err, 0);
    ck_assert_ptr_null(fut_await(f[2], &err));
    ck_assert_int_eq(err, EPERM);
    ck_assert_str_eq(fut_message(f[2]), "raised 1 before the switches");
    ck_assert_int_eq(fut_cancel(loop), 0);
    ck_assert_int_eq(fut_wait(loop, -1), 0);
    for (int i = 0; i < 3; i++)
        fut_release(f[i]);
    fut_release(loop);
    tu_rt_finish(g_rt); /* the loop has returned by now */
    ck_assert_int_eq(loop_saw_cancelled, 1);
    TU_ASSERT_NO_WFAIL();
}
END_TEST

/* ------------------------------------------------------------------------
 * An await racing the settle by a pool thread, 10,000 rounds
 * ---------------------------------------------------------------------- */

#define NRACE 10000

static void *settle_promise_work(void *arg)
{
    fut_promise *p = arg;
    TU_WCHECK(fut_promise_resolve(p, TU_PTR(99)) == 0);
    return NULL;
}

static void *racer(void *arg)
{
    long ok = 0;
    (void)arg;
    for (int i = 0; i < NRACE; i++) {
        fut_promise *p = fut_promise_new(g_rt);
        fut_future *f = fut_promise_future(p), *w;
        int err;
        w = fut_submit(g_rt, settle_promise_work, p);
        if (i % 3 == 0)
            (void)fut_yield();
        ok += fut_await(f, &err) == TU_PTR(99) && err == 0;
        (void)fut_await(w, &err);
        fut_release(w);
        fut_release(f);
        fut_promise_free(p);
    }
    return TU_PTR(ok);
}

START_TEST(test_await_races_settle)
{
    void *r = NULL;

    g_rt = tu_rt_new(2);
    ck_assert_int_eq(fut_run(g_rt, racer, NULL, &r), 0);
    ck_assert_int_eq((long)TU_UINT(r), NRACE);
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* ------------------------------------------------------------------------
 * Awaiting another runtime's futures, then freeing ours at once (the
 * other runtime's dispatcher resumes us through our inbox: it must not
 * touch our runtime once we may be gone), 200 cycles
 * ---------------------------------------------------------------------- */

static fut_runtime *other_rt;

static void *await_other(void *arg)
{
    int err = 0;
    (void)arg;
    for (int i = 0; i < 3; i++) {
        fut_future *s = fut_sleep(other_rt, 0);
        TU_WCHECK(s != NULL);
        TU_WCHECK(fut_await(s, &err) == NULL && err == 0);
        fut_release(s);
    }
    return TU_PTR(7);
}

START_TEST(test_await_other_runtime)
{
    other_rt = tu_rt_new(1);
    for (int cycle = 0; cycle < 200; cycle++) {
        void *r = NULL;
        g_rt = tu_rt_new(1);
        TU_REQUIRE(fut_run(g_rt, await_other, NULL, &r) == 0 && r == TU_PTR(7), "cycle %d", cycle);
        TU_REQUIRE(fut_runtime_free(g_rt) == 0, "cycle %d", cycle);
    }
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(other_rt);
}
END_TEST

/* ------------------------------------------------------------------------
 * Cancel
 * ---------------------------------------------------------------------- */

static atomic_int ran;
static fut_future *long_sleep;

static void *sleeper(void *arg)
{
    int err = 0;
    (void)arg;
    atomic_fetch_add(&ran, 1);
    long_sleep = fut_sleep(g_rt, 100.0);
    TU_WCHECK(fut_await(long_sleep, &err) == NULL);
    TU_WCHECK(err == ECANCELED);
    /* It may clean up and await again: that await works normally. */
    fut_future *s = fut_sleep(g_rt, 0.001);
    int err2 = -1;
    TU_WCHECK(fut_await(s, &err2) == NULL && err2 == 0);
    fut_release(s);
    atomic_fetch_add(&ran, 10);
    return TU_PTR(err);
}

static atomic_int spin_started;

static void *spin_yield(void *arg)
{
    long n = 0;
    (void)arg;
    atomic_store(&spin_started, 1);
    while (fut_yield() == 0)
        n++;
    atomic_fetch_add(&ran, 100);
    return TU_PTR(n);
}

static void *start_and_cancel(void *arg)
{
    fut_future *f = fut_async(g_rt, sleeper, NULL);
    int err = 0;

    (void)arg;
    TU_WCHECK(f != NULL && fut_cancel(f) == 0);
    for (int i = 0; i < 3; i++)
        TU_WCHECK(fut_yield() == 0); /* its start comes and goes */
    TU_WCHECK(fut_state(f) == FUT_CANCELLED);
    TU_WCHECK(fut_await(f, &err) == NULL && err == ECANCELED);
    fut_release(f);
    return NULL;
}

START_TEST(test_cancel)
{
    fut_future *f;
    bool ok;

    g_rt = tu_rt_new(2);
    /* Before it starts: made and cancelled by a coroutine, so it is still
     * queued behind it; it never runs. */
    atomic_store(&ran, 0);
    ck_assert_int_eq(fut_run(g_rt, start_and_cancel, NULL, NULL), 0);
    ck_assert_int_eq(atomic_load(&ran), 0);

    /* While suspended in an await: the await returns ECANCELED, the
     * awaited sleep is cancelled, the coroutine goes on and ends. */
    atomic_store(&ran, 0);
    long_sleep = NULL;
    f = fut_async(g_rt, sleeper, NULL);
    TU_POLL(ok, atomic_load(&ran) == 1, TU_WAIT_MS);
    ck_assert(ok);
    tu_sleep_ms(5);
    ck_assert_int_eq(fut_cancel(f), 0);
    TU_POLL(ok, atomic_load(&ran) == 11, TU_WAIT_MS);
    ck_assert_msg(ok, "the cancelled coroutine did not go on: ran %d", atomic_load(&ran));
    ck_assert_int_eq(fut_state(long_sleep), FUT_CANCELLED);
    /* It handled the cancel and returned: a task's cancel is a request,
     * and what it returns then is its result (asyncio's Task). */
    TU_SETTLE(f);
    ck_assert_int_eq(fut_state(f), FUT_RESOLVED);
    ck_assert_ptr_eq(fut_value(f), TU_PTR(ECANCELED));
    ck_assert_int_eq(fut_cancel(f), EALREADY);
    fut_release(long_sleep);
    fut_release(f);

    /* A yield loop. */
    atomic_store(&ran, 0);
    atomic_store(&spin_started, 0);
    f = fut_async(g_rt, spin_yield, NULL);
    TU_POLL(ok, atomic_load(&spin_started) == 1, TU_WAIT_MS); /* a cancel before would stop it starting */
    ck_assert(ok);
    ck_assert_int_eq(fut_cancel(f), 0);
    TU_POLL(ok, atomic_load(&ran) == 100, TU_WAIT_MS);
    ck_assert(ok);
    fut_release(f);

    /* After it finished. */
    f = fut_async(g_rt, answer, TU_PTR(3));
    TU_SETTLE(f);
    ck_assert_int_eq(fut_cancel(f), EALREADY);
    ck_assert_ptr_eq(fut_value(f), TU_PTR(3));
    fut_release(f);
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* ------------------------------------------------------------------------
 * A task's cancel is a request (asyncio's Task): it ends when its
 * function does, and what it does with the cancel decides how.
 * ---------------------------------------------------------------------- */

static atomic_int cleanup_done;

/* On a cancel: 20 ms of cleanup (an await that works again), then pass
 * it on (arg NULL) or return a value instead (arg the value). */
static atomic_int cleans_started;

static void *cleans_up(void *arg)
{
    fut_future *s = fut_sleep(g_rt, 100.0), *c;
    int err = 0;

    atomic_store(&cleans_started, 1);

    (void)fut_await(s, &err);
    fut_release(s);
    if (err != ECANCELED)
        return TU_PTR(1); /* not cancelled: not this test */
    c = fut_sleep(g_rt, 0.02);
    (void)fut_await(c, &err);
    fut_release(c);
    TU_WCHECK(err == 0); /* the cancel was taken once: this await works */
    atomic_store(&cleanup_done, 1);
    if (arg != NULL)
        return arg;
    return fut_raise(ECANCELED, "cleaned up, then cancelled");
}

static void *cancels_then_awaits(void *arg)
{
    fut_future *t = fut_async(g_rt, cleans_up, arg);
    fut_future *y = fut_sleep(g_rt, 0.005);
    int err = -1;
    void *v;

    (void)fut_await(y, NULL); /* it runs and waits now */
    fut_release(y);
    TU_WCHECK(fut_cancel(t) == 0);
    TU_WCHECK(fut_cancel(t) == 0); /* still asked, not yet ended */
    TU_WCHECK(fut_state(t) == FUT_PENDING);
    v = fut_await(t, &err);
    /* The await returned after the task ended: its cleanup is done. */
    TU_WCHECK(atomic_load(&cleanup_done) == 1);
    fut_release(t);
    return arg != NULL ? (err == 0 ? v : NULL) : TU_PTR(err);
}

struct selfbox {
    fut_future *me;   /* its own future, stored before gate resolves */
    fut_future *gate;
};

static void *self_cancel(void *arg)
{
    struct selfbox *b = arg;

    (void)fut_await(b->gate, NULL);
    /* A cancel it asks of itself and never awaits: it ends cancelled
     * although it returns a value (asyncio's must-cancel). */
    TU_WCHECK(fut_cancel(b->me) == 0);
    return TU_PTR(5);
}

static void *never_started(void *arg)
{
    (void)arg;
    atomic_fetch_add(&ran, 1);
    return NULL;
}

static void *zero_timeout(void *arg)
{
    fut_future *t = fut_async(g_rt, never_started, NULL), *to;
    int err = 0;

    (void)arg;
    to = fut_timeout(t, 0);
    (void)fut_await(to, &err);
    TU_WCHECK(err == ETIMEDOUT);
    TU_WCHECK(fut_state(t) == FUT_CANCELLED);
    fut_release(to);
    fut_release(t);
    return NULL;
}

static atomic_int unobserved_count;

static void count_unobserved(int code, const char *message, void *arg)
{
    (void)code;
    (void)message;
    (void)arg;
    atomic_fetch_add(&unobserved_count, 1);
}

START_TEST(test_cancel_request)
{
    fut_future *f, *t, *g, *in[2];
    fut_promise *p[2];
    void *v = NULL;
    int err;
    double t0;
    bool ok;

    g_rt = tu_rt_new(2);

    /* Passed on: awaiting the task waits for its cleanup, then ECANCELED. */
    atomic_store(&cleanup_done, 0);
    ck_assert_int_eq(fut_run(g_rt, cancels_then_awaits, NULL, &v), 0);
    ck_assert_ptr_eq(v, TU_PTR(ECANCELED));

    /* Handled: the task's value is its result. */
    atomic_store(&cleanup_done, 0);
    ck_assert_int_eq(fut_run(g_rt, cancels_then_awaits, TU_PTR(42), &v), 0);
    ck_assert_ptr_eq(v, TU_PTR(42));

    /* The state and message of a task that passed its cancel on. */
    atomic_store(&cleanup_done, 0);
    atomic_store(&cleans_started, 0);
    f = fut_async(g_rt, cleans_up, NULL);
    TU_POLL(ok, atomic_load(&cleans_started) == 1, TU_WAIT_MS); /* started: a request, not a claim */
    ck_assert(ok);
    tu_sleep_ms(2);
    ck_assert_int_eq(fut_cancel(f), 0);
    TU_SETTLE(f);
    ck_assert_int_eq(fut_state(f), FUT_CANCELLED);
    ck_assert_int_eq(fut_error(f), ECANCELED);
    ck_assert_str_eq(fut_message(f), "cleaned up, then cancelled");
    ck_assert_int_eq(atomic_load(&cleanup_done), 1);
    ck_assert_int_eq(fut_cancel(f), EALREADY);
    fut_release(f);

    /* A timeout of a task asks it to cancel and waits for it to end:
     * ETIMEDOUT once it ended cancelled, its cleanup done by then ... */
    atomic_store(&cleanup_done, 0);
    atomic_store(&cleans_started, 0);
    f = fut_async(g_rt, cleans_up, NULL);
    TU_POLL(ok, atomic_load(&cleans_started) == 1, TU_WAIT_MS);
    ck_assert(ok);
    t0 = tu_now_ns() / 1e9;
    t = fut_timeout(f, 0.02);
    TU_SETTLE(t);
    ck_assert_int_eq(fut_state(t), FUT_REJECTED);
    ck_assert_int_eq(fut_error(t), ETIMEDOUT);
    ck_assert_int_eq(atomic_load(&cleanup_done), 1);
    ck_assert_int_eq(fut_state(f), FUT_CANCELLED);
    ck_assert_msg(tu_now_ns() / 1e9 - t0 >= 0.039, "settled before the cleanup's 20 ms");
    fut_release(t);
    fut_release(f);
    /* ... and what it returned instead wins (asyncio.wait_for). */
    atomic_store(&cleanup_done, 0);
    atomic_store(&cleans_started, 0);
    f = fut_async(g_rt, cleans_up, TU_PTR(9));
    TU_POLL(ok, atomic_load(&cleans_started) == 1, TU_WAIT_MS);
    ck_assert(ok);
    t = fut_timeout(f, 0.02);
    TU_SETTLE(t);
    ck_assert_int_eq(fut_state(t), FUT_RESOLVED);
    ck_assert_ptr_eq(fut_value(t), TU_PTR(9));
    fut_release(t);
    fut_release(f);

    /* A zero timeout on a task not started yet: it never starts. */
    atomic_store(&ran, 0);
    ck_assert_int_eq(fut_run(g_rt, zero_timeout, NULL, NULL), 0);
    tu_sleep_ms(5);
    ck_assert_int_eq(atomic_load(&ran), 0);

    /* A self-cancel followed by a return: cancelled. */
    {
        fut_promise *gate = fut_promise_new(g_rt);
        struct selfbox box = { NULL, fut_promise_future(gate) };

        f = fut_async(g_rt, self_cancel, &box);
        box.me = f;
        ck_assert_int_eq(fut_promise_resolve(gate, NULL), 0);
        TU_SETTLE(f);
        ck_assert_int_eq(fut_state(f), FUT_CANCELLED);
        fut_release(f);
        fut_release(box.gate);
        fut_promise_free(gate);
    }

    /* A gather whose inputs have all settled refuses a cancel, even
     * before its own result is written: the result is kept. */
    p[0] = fut_promise_new(g_rt);
    p[1] = fut_promise_new(g_rt);
    in[0] = fut_promise_future(p[0]);
    in[1] = fut_promise_future(p[1]);
    g = fut_gather(g_rt, in, 2, 0);
    ck_assert_int_eq(fut_promise_resolve(p[0], TU_PTR(1)), 0);
    ck_assert_int_eq(fut_promise_resolve(p[1], TU_PTR(2)), 0);
    ck_assert_int_eq(fut_cancel(g), EALREADY);
    TU_SETTLE(g);
    ck_assert_int_eq(fut_state(g), FUT_RESOLVED);
    ck_assert_ptr_eq(((void **)fut_value(g))[1], TU_PTR(2));
    fut_release(g);
    for (int i = 0; i < 2; i++) {
        fut_release(in[i]);
        fut_promise_free(p[i]);
    }

    /* A fail-fast gather that failed reads its items' later errors. */
    atomic_store(&unobserved_count, 0);
    fut_set_unobserved_hook(count_unobserved, NULL);
    p[0] = fut_promise_new(g_rt);
    p[1] = fut_promise_new(g_rt);
    in[0] = fut_promise_future(p[0]);
    in[1] = fut_promise_future(p[1]);
    g = fut_gather(g_rt, in, 2, 0);
    ck_assert_int_eq(fut_promise_reject(p[0], EIO, "first"), 0);
    TU_SETTLE(g);
    ck_assert_int_eq(fut_error(g), EIO);
    fut_release(in[0]);
    fut_release(in[1]); /* the gather holds them */
    ck_assert_int_eq(fut_promise_reject(p[1], EPERM, "later"), 0);
    fut_promise_free(p[0]);
    fut_promise_free(p[1]);
    tu_sleep_ms(20); /* the gather's link reads it on the dispatcher */
    fut_release(g);
    tu_sleep_ms(5);
    ck_assert_int_eq(atomic_load(&unobserved_count), 0);
    fut_set_unobserved_hook(NULL, NULL);

    (void)err;
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* ------------------------------------------------------------------------
 * fut_asleep, fut_await_release, fut_promise_on_cancel
 * ---------------------------------------------------------------------- */

static void *asleeper(void *arg)
{
    double t0 = tu_now_ns() / 1e9;
    int rc = fut_asleep(0.02);

    (void)arg;
    TU_WCHECK(rc == 0);
    TU_WCHECK(tu_now_ns() / 1e9 - t0 >= 0.019);
    TU_WCHECK(fut_asleep(-1) == EINVAL);
    TU_WCHECK(fut_asleep(0) == 0);
    atomic_fetch_add(&ran, 1);
    rc = fut_asleep(100.0); /* cancelled below */
    atomic_store(&cleanup_done, rc);
    return fut_raise(rc, "asleep: %d", rc);
}

static void *identity_work(void *arg)
{
    return arg;
}

static void *await_released(void *arg)
{
    int err = -1;
    void *v = fut_await_release(fut_submit(g_rt, identity_work, arg), &err);

    TU_WCHECK(err == 0);
    (void)fut_await_release(NULL, &err);
    TU_WCHECK(err == EINVAL);
    return v;
}

static atomic_int hook_runs;

static void on_cancel_hook(void *arg)
{
    TU_WCHECK(fut_on_dispatcher(g_rt));
    atomic_fetch_add(&hook_runs, (int)(intptr_t)arg);
}

static void *asleep_in_continuation(void *v, void *arg)
{
    (void)v;
    (void)arg;
    return TU_PTR(fut_asleep(0.001));
}

START_TEST(test_asleep_and_hooks)
{
    fut_future *f, *c, *t, *pf;
    fut_promise *p;
    void *v = NULL;
    double t0;
    bool ok;

    g_rt = tu_rt_new(2);
    /* In a coroutine: sleeps, then a cancel ends its long sleep. */
    atomic_store(&ran, 0);
    atomic_store(&cleanup_done, -1);
    f = fut_async(g_rt, asleeper, NULL);
    TU_POLL(ok, atomic_load(&ran) == 1, TU_WAIT_MS);
    ck_assert(ok);
    tu_sleep_ms(5);
    ck_assert_int_eq(fut_cancel(f), 0);
    TU_SETTLE(f);
    ck_assert_int_eq(atomic_load(&cleanup_done), ECANCELED);
    ck_assert_int_eq(fut_state(f), FUT_CANCELLED);
    fut_release(f);
    /* On a plain thread: it sleeps the thread; in a continuation: EDEADLK. */
    t0 = tu_now_ns() / 1e9;
    ck_assert_int_eq(fut_asleep(0.01), 0);
    ck_assert(tu_now_ns() / 1e9 - t0 >= 0.0095);
    ck_assert_int_eq(fut_asleep(NAN), EINVAL);
    p = fut_promise_new(g_rt);
    pf = fut_promise_future(p);
    c = fut_then(pf, asleep_in_continuation, NULL);
    ck_assert_int_eq(fut_promise_resolve(p, NULL), 0);
    TU_SETTLE(c);
    ck_assert_ptr_eq(fut_value(c), TU_PTR(EDEADLK));
    fut_release(c);
    fut_release(pf);
    fut_promise_free(p);

    /* fut_await_release */
    ck_assert_int_eq(fut_run(g_rt, await_released, TU_PTR(6), &v), 0);
    ck_assert_ptr_eq(v, TU_PTR(6));

    /* fut_promise_on_cancel: runs once on the dispatcher when cancelled
     * (each hook once), also when registered after the cancel; never when
     * the future resolves; EALREADY once it did. */
    atomic_store(&hook_runs, 0);
    p = fut_promise_new(g_rt);
    pf = fut_promise_future(p);
    ck_assert_int_eq(fut_promise_on_cancel(p, on_cancel_hook, TU_PTR(1)), 0);
    ck_assert_int_eq(fut_promise_on_cancel(p, on_cancel_hook, TU_PTR(10)), 0);
    ck_assert_int_eq(fut_promise_on_cancel(NULL, on_cancel_hook, NULL), EINVAL);
    ck_assert_int_eq(fut_promise_on_cancel(p, NULL, NULL), EINVAL);
    t = fut_timeout(pf, 0.005); /* the timeout is what cancels it */
    TU_SETTLE(t);
    ck_assert_int_eq(fut_error(t), ETIMEDOUT);
    ck_assert_int_eq(fut_promise_on_cancel(p, on_cancel_hook, TU_PTR(100)), 0);
    TU_POLL(ok, atomic_load(&hook_runs) == 111, TU_WAIT_MS);
    ck_assert_msg(ok, "hooks ran for %d", atomic_load(&hook_runs));
    ck_assert_int_eq(fut_promise_resolve(p, NULL), EALREADY);
    fut_release(t);
    fut_release(pf);
    fut_promise_free(p);

    atomic_store(&hook_runs, 0);
    p = fut_promise_new(g_rt);
    pf = fut_promise_future(p);
    ck_assert_int_eq(fut_promise_on_cancel(p, on_cancel_hook, TU_PTR(1)), 0);
    ck_assert_int_eq(fut_promise_resolve(p, TU_PTR(3)), 0);
    ck_assert_int_eq(fut_promise_on_cancel(p, on_cancel_hook, TU_PTR(1)), EALREADY);
    TU_SETTLE(pf);
    ck_assert_int_eq(fut_run(g_rt, answer, NULL, NULL), 0); /* behind the hook: it has run */
    ck_assert_int_eq(atomic_load(&hook_runs), 0);
    fut_release(pf);
    fut_promise_free(p);

    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

/* Shutdown with coroutines suspended on a promise nobody settles, on a
 * long sleep and in a yield loop: each gets ECANCELED and ends, its
 * finally runs once, nothing is left. */
static fut_promise *never;
static atomic_int ended, fin_runs;

static void *waits_forever(void *arg)
{
    fut_future *f = arg;
    int err = 0;
    TU_WCHECK(fut_await(f, &err) == NULL && err == ECANCELED);
    /* Awaits while shutting down give up at once. */
    fut_future *s = fut_sleep(g_rt, 50.0);
    if (s != NULL) {
        TU_WCHECK(fut_await(s, &err) == NULL && err == ECANCELED);
        fut_release(s);
    }
    atomic_fetch_add(&ended, 1);
    return fut_raise(ECANCELED, "passed on"); /* so the task ends cancelled */
}

static void count_fin(fut_future *f, void *arg)
{
    (void)arg;
    TU_WCHECK(fut_state(f) != FUT_PENDING);
    atomic_fetch_add(&fin_runs, 1);
}

START_TEST(test_shutdown_suspended)
{
    for (int cycle = 0; cycle < 50; cycle++) {
        fut_future *pf, *s, *c[3], *fin[3];
        g_rt = tu_rt_new(2);
        atomic_store(&ended, 0);
        atomic_store(&fin_runs, 0);
        never = fut_promise_new(g_rt);
        pf = fut_promise_future(never);
        s = fut_sleep(g_rt, 100.0);
        c[0] = fut_async(g_rt, waits_forever, pf);
        c[1] = fut_async(g_rt, waits_forever, s);
        c[2] = fut_async(g_rt, spin_yield, NULL);
        for (int k = 0; k < 3; k++)
            fin[k] = fut_finally(c[k], count_fin, NULL);
        if (cycle % 2)
            tu_sleep_ms(1);
        ck_assert_int_eq(fut_runtime_free(g_rt), 0);
        TU_REQUIRE(atomic_load(&fin_runs) == 3, "cycle %d: finally ran %d times", cycle,
                   atomic_load(&fin_runs));
        TU_REQUIRE(atomic_load(&ended) <= 2, "cycle %d", cycle);
        for (int k = 0; k < 3; k++) {
            /* The two awaiters pass the shutdown's cancel on; the yield
             * loop handles it and returns its count. (A coroutine that
             * had not started yet never runs and is cancelled.) */
            int want = k < 2 ? FUT_CANCELLED : FUT_RESOLVED;
            TU_REQUIRE(fut_state(c[k]) == want || fut_state(c[k]) == FUT_CANCELLED,
                       "cycle %d: coroutine %d state %d", cycle, k, fut_state(c[k]));
            fut_release(c[k]);
            (void)fut_error(fin[k]);
            fut_release(fin[k]);
        }
        fut_promise_free(never); /* rejects pf if nobody cancelled it */
        (void)fut_error(pf);
        fut_release(pf);
        fut_release(s);
    }
    TU_ASSERT_NO_WFAIL();
}
END_TEST

/* ------------------------------------------------------------------------
 * Stacks: reuse without leaks, size, overflow
 * ---------------------------------------------------------------------- */

static long count_maps(void)
{
    FILE *fp = fopen("/proc/self/maps", "r");
    long n = 0;
    int c;
    if (fp == NULL)
        return -1;
    while ((c = fgetc(fp)) != EOF)
        n += c == '\n';
    fclose(fp);
    return n;
}

START_TEST(test_stack_reuse)
{
    long before, after;
    void *r;

    g_rt = tu_rt_new(2);
    ck_assert_int_eq(fut_run(g_rt, answer, NULL, &r), 0); /* set up */
    before = count_maps();
    for (int i = 0; i < 20000; i++) {
        fut_future *f = fut_async(g_rt, answer, TU_PTR(i));
        TU_REQUIRE(fut_await(f, NULL) == TU_PTR(i), "coroutine %d", i);
        fut_release(f);
    }
    after = count_maps();
    /* One at a time: the same stack comes back every time (a leak would
     * add two mappings a coroutine; the sanitizers map a few of their own). */
    TU_REQUIRE(after - before <= 100, "maps grew from %ld to %ld over 20,000 coroutines", before,
               after);
    ck_assert_int_eq(fut_runtime_set_stack_size(g_rt, 65536), EBUSY);
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

static void *deep(void *arg)
{
    volatile char buf[1024];
    uintptr_t n = TU_UINT(arg);
    buf[0] = (char)n;
    if (n == 0)
        return TU_PTR(0);
    /* buf is read after the call: the frame stays. */
    return TU_PTR(TU_UINT(deep(TU_PTR(n - 1))) + 1 + (buf[0] != (char)n));
}

START_TEST(test_stack_size)
{
    void *r = NULL;

    g_rt = tu_rt_new(2);
    ck_assert_int_eq(fut_runtime_set_stack_size(g_rt, 1 << 20), 0);
    /* 512 frames of over 1 KiB: more than the default 256 KiB would hold
     * under ASan, well within 1 MiB. */
    ck_assert_int_eq(fut_run(g_rt, deep, TU_PTR(512), &r), 0);
    ck_assert_ptr_eq(r, TU_PTR(512));
    tu_rt_finish(g_rt);
}
END_TEST

/* On the smallest stack allowed, the library's own calls fit, in every
 * build: fut_raise formatting a message, awaits of pending and settled
 * futures, a yield, a sleep, offloaded work. */
static void *twice_work(void *arg)
{
    return TU_PTR(TU_UINT(arg) * 2);
}

static void *min_stack_body(void *arg)
{
    fut_future *s = fut_sleep(NULL, 0), *w;
    void *v;
    int err = -1;

    (void)arg;
    fut_await(s, &err);
    TU_REQUIRE(err == 0, "sleep: %d", err);
    fut_release(s);
    s = fut_sleep(g_rt, 0.001);
    fut_await(s, &err);
    TU_REQUIRE(err == 0, "sleep: %d", err);
    fut_await(s, &err); /* settled */
    fut_release(s);
    TU_REQUIRE(fut_yield() == 0, "yield");
    w = fut_submit(g_rt, twice_work, TU_PTR(21));
    v = fut_await(w, &err);
    TU_REQUIRE(err == 0 && v == TU_PTR(42), "work: %d %p", err, v);
    fut_release(w);
    return fut_raise(EIO, "failed at %s:%d after %.3f s (%g, %e, %lu, %x, %c) %s", "somewhere/in/the/code.c",
                     1234, 0.5, 1e300, 2.5e-300, 123456789ul, 0xbeefu, 'z',
                     "and a long tail to the message, long enough to make the formatter allocate");
}

START_TEST(test_min_stack)
{
    fut_future *f;

    g_rt = tu_rt_new(2);
    ck_assert_int_eq(fut_runtime_set_stack_size(g_rt, FUT_STACK_MIN), 0);
    f = fut_async(g_rt, min_stack_body, NULL);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fut_wait(f, TU_WAIT_MS / 1000.0), 0);
    ck_assert_int_eq(fut_error(f), EIO);
    ck_assert_str_eq(fut_message(f), "failed at somewhere/in/the/code.c:1234 after 0.500 s (1e+300, "
                                     "2.500000e-300, 123456789, beef, z) and a long tail to the "
                                     "message, long enough to make the formatter allocate");
    fut_release(f);
    TU_ASSERT_NO_WFAIL();
    tu_rt_finish(g_rt);
}
END_TEST

START_TEST(test_overflow_dies)
{
    g_rt = tu_rt_new(2);
    ck_assert_int_eq(fut_runtime_set_stack_size(g_rt, 16384), 0);
    (void)fut_run(g_rt, deep, TU_PTR(100000), NULL);
    ck_abort_msg("a 100 MiB recursion on a 16 KiB stack returned");
}
END_TEST

static Suite *coro_suite(void)
{
    Suite *s = suite_create("coro");
    TCase *tc;

    tc = tu_tcase(s, "basics", 30);
    tcase_add_test(tc, test_run_and_async);
    tcase_add_test(tc, test_bad_args);
    tcase_add_test(tc, test_order);
    tcase_add_test(tc, test_await_outside);

    tc = tu_tcase(s, "many", 120);
    tcase_add_test(tc, test_many_alive);
    tcase_add_test(tc, test_chains);
    tcase_add_test(tc, test_call_records);
    tcase_add_test(tc, test_await_races_settle);
    tcase_add_test(tc, test_await_other_runtime);

    tc = tu_tcase(s, "cancel", 60);
    tcase_add_test(tc, test_cancel);
    tcase_add_test(tc, test_cancel_request);
    tcase_add_test(tc, test_asleep_and_hooks);
    tcase_add_test(tc, test_shutdown_suspended);

    tc = tu_tcase(s, "stacks", 60);
    tcase_add_test(tc, test_stack_reuse);
    tcase_add_test(tc, test_stack_size);
    tcase_add_test(tc, test_min_stack);
#if !TU_ASAN && !TU_TSAN
    /* The sanitizers catch SIGSEGV themselves and exit with an error code. */
    tcase_add_test_raise_signal(tc, test_overflow_dies, SIGSEGV);
#else
    (void)test_overflow_dies;
#endif
    return s;
}

int main(void)
{
    return tu_run_suite(coro_suite());
}
