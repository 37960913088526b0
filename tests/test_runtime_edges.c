/* test_runtime_edges.c - the edges of a runtime's life that once hung:
 * fut_runtime_free called on another runtime's dispatcher, continuations of
 * a freed runtime run by a coroutine of another one (the stand-in), a
 * timeout made or pending when its runtime is freed, a default runtime
 * whose first making failed, a raw pool job run inside a work function's
 * wait, and a coroutine that took a cancel and awaits again when its
 * runtime is freed. Each test here hung (or failed) before its
 * fix; a hang fails through the test case's timeout. */
#include "testutil.h"

#include <sys/wait.h>

static void *ident_work(void *arg)
{
    return arg;
}

/* ------------------------------------------------------------------------
 * fut_runtime_free(A) on B's dispatcher is refused (EDEADLK), never a hang
 * ---------------------------------------------------------------------- */

typedef struct cross {
    fut_runtime *a, *b;
    fut_future *awaited;   /* a pending future of B, awaited by A's coroutine */
    atomic_int awaiting;
    atomic_int a_err;      /* what A's coroutine's await returned */
    atomic_int free_rc;    /* fut_runtime_free(A) on B's dispatcher */
} cross;

static void *a_awaits_b(void *arg)
{
    cross *x = arg;
    int err = -1;

    atomic_store(&x->awaiting, 1);
    fut_await(x->awaited, &err);
    atomic_store(&x->a_err, err);
    return NULL;
}

static void *free_a_then(void *value, void *arg)
{
    cross *x = arg;

    (void)value;
    atomic_store(&x->free_rc, fut_runtime_free(x->a));
    return NULL;
}

static void *free_a_coro(void *arg)
{
    cross *x = arg;

    atomic_store(&x->free_rc, fut_runtime_free(x->a));
    return NULL;
}

static void cross_free(int from_coroutine)
{
    cross x = { 0 };
    fut_promise *p;
    fut_future *co, *trigger, *c;

    x.a = tu_rt_new(1);
    x.b = tu_rt_new(1);
    atomic_store(&x.free_rc, -1);
    atomic_store(&x.a_err, -1);
    p = fut_promise_new(x.b);
    x.awaited = fut_promise_future(p);
    co = fut_async(x.a, a_awaits_b, &x);
    ck_assert_ptr_nonnull(co);
    TU_POLL_COUNT(&x.awaiting, 1);
    if (from_coroutine) {
        c = fut_async(x.b, free_a_coro, &x);
    } else {
        trigger = fut_sleep(x.b, 0);
        c = fut_then(trigger, free_a_then, &x);
        fut_release(trigger);
    }
    TU_SETTLE(c);
    ck_assert_int_eq(atomic_load(&x.free_rc), EDEADLK);
    ck_assert_int_eq(fut_state(co), FUT_PENDING); /* A was left alone */
    fut_release(c);
    /* From a plain thread it works: A's coroutine is cancelled, and with it
     * the future of B it awaited, whose dependents B's dispatcher runs. */
    ck_assert_int_eq(fut_runtime_free(x.a), 0);
    ck_assert_int_eq(atomic_load(&x.a_err), ECANCELED);
    ck_assert_int_eq(fut_state(co), FUT_RESOLVED); /* it took the cancel and returned */
    ck_assert_int_eq(fut_state(x.awaited), FUT_CANCELLED);
    ck_assert_int_eq(fut_promise_resolve(p, NULL), EALREADY);
    fut_release(co);
    fut_release(x.awaited);
    fut_promise_free(p);
    tu_rt_finish(x.b);
}

START_TEST(test_free_on_other_dispatcher_continuation)
{
    cross_free(0);
}
END_TEST

START_TEST(test_free_on_other_dispatcher_coroutine)
{
    cross_free(1);
}
END_TEST

/* ------------------------------------------------------------------------
 * A freed runtime's continuation run by another runtime's coroutine
 * (the stand-in) is a plain continuation
 * ---------------------------------------------------------------------- */

typedef struct standin {
    fut_runtime *a, *b;
    fut_promise *pa;       /* a promise of A, freed runtime */
    fut_promise *pb;       /* a pending promise of B */
    fut_future *fb;        /* its future */
    int in_coroutine, on_a, on_b, await_err, yield_rc;  /* seen in A's continuation */
    int after_in_coroutine, after_on_b, resolve_rc;     /* seen in B's coroutine after */
    atomic_int ran;
} standin;

static void *a_continuation(void *value, void *arg)
{
    standin *s = arg;

    s->in_coroutine = fut_in_coroutine();
    s->on_a = fut_on_dispatcher(s->a);
    s->on_b = fut_on_dispatcher(s->b);
    s->await_err = -1;
    fut_await(s->fb, &s->await_err); /* pending: must not suspend anything here */
    s->yield_rc = fut_yield();
    atomic_fetch_add(&s->ran, 1);
    return value;
}

static void *b_settles_a(void *arg)
{
    standin *s = arg;

    s->resolve_rc = fut_promise_resolve(s->pa, TU_PTR(5)); /* runs a_continuation here */
    s->after_in_coroutine = fut_in_coroutine();
    s->after_on_b = fut_on_dispatcher(s->b);
    return TU_PTR(1);
}

static void *count_then(void *value, void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
    return value;
}

START_TEST(test_stand_in_is_plain_continuation)
{
    standin s = { 0 };
    fut_future *fa, *ca, *co, *fa2, *ca2;
    fut_promise *pa2;
    atomic_int second = 0;

    s.a = tu_rt_new(1);
    s.b = tu_rt_new(1);
    s.pa = fut_promise_new(s.a);
    pa2 = fut_promise_new(s.a);
    s.pb = fut_promise_new(s.b);
    s.fb = fut_promise_future(s.pb);
    fa = fut_promise_future(s.pa);
    ca = fut_then(fa, a_continuation, &s);
    fa2 = fut_promise_future(pa2);
    ca2 = fut_then(fa2, count_then, &second);
    ck_assert_int_eq(fut_runtime_free(s.a), 0); /* the promises keep A's futures pending */
    co = fut_async(s.b, b_settles_a, &s);
    TU_SETTLE(co);
    ck_assert_int_eq(fut_error(co), 0);
    ck_assert_int_eq(atomic_load(&s.ran), 1);
    ck_assert_int_eq(s.resolve_rc, 0);
    ck_assert_int_eq(s.in_coroutine, 0);  /* a continuation of A, not B's coroutine */
    ck_assert_int_eq(s.on_a, 1);          /* the thread stands in for A's dispatcher */
    ck_assert_int_eq(s.on_b, 0);
    ck_assert_int_eq(s.await_err, EDEADLK);
    ck_assert_int_eq(s.yield_rc, EPERM);
    ck_assert_int_eq(s.after_in_coroutine, 1);
    ck_assert_int_eq(s.after_on_b, 1);
    TU_SETTLE(ca);
    ck_assert_ptr_eq(fut_value(ca), TU_PTR(5));
    /* The stand-in's lock is free: another thread settles A's other promise. */
    ck_assert_int_eq(fut_promise_resolve(pa2, TU_PTR(6)), 0);
    TU_SETTLE(ca2);
    ck_assert_ptr_eq(fut_value(ca2), TU_PTR(6));
    ck_assert_int_eq(atomic_load(&second), 1);
    ck_assert_int_eq(fut_state(s.fb), FUT_PENDING);
    fut_release(fa);
    fut_release(ca);
    fut_release(fa2);
    fut_release(ca2);
    fut_release(co);
    fut_release(s.fb);
    fut_promise_free(s.pa);
    fut_promise_free(pa2);
    fut_promise_resolve(s.pb, NULL);
    fut_promise_free(s.pb);
    tu_rt_finish(s.b);
}
END_TEST

/* ------------------------------------------------------------------------
 * fut_timeout and a freed runtime: rejected with ESHUTDOWN, never pending
 * forever
 * ---------------------------------------------------------------------- */

START_TEST(test_timeout_made_after_free)
{
    fut_runtime *rt = tu_rt_new(1);
    fut_promise *p = fut_promise_new(rt);
    fut_future *f = fut_promise_future(p), *t, *t2, *done;
    atomic_int ran = 0;

    ck_assert_int_eq(fut_runtime_free(rt), 0);
    t = fut_timeout(f, 0.01);
    ck_assert_ptr_nonnull(t);
    TU_SETTLE(t);
    ck_assert_int_eq(fut_state(t), FUT_REJECTED);
    ck_assert_int_eq(fut_error(t), ESHUTDOWN);
    ck_assert_str_eq(fut_message(t), "the runtime shut down: the timeout can no longer fire");
    ck_assert_int_eq(fut_state(f), FUT_PENDING); /* f is left alone */
    /* On a future that has settled, the timeout takes its outcome. */
    done = fut_then(f, count_then, &ran);
    ck_assert_int_eq(fut_promise_resolve(p, TU_PTR(3)), 0);
    TU_SETTLE(done);
    ck_assert_int_eq(atomic_load(&ran), 1);
    t2 = fut_timeout(f, 0.01);
    TU_SETTLE(t2);
    ck_assert_int_eq(fut_error(t2), 0);
    ck_assert_ptr_eq(fut_value(t2), TU_PTR(3));
    fut_release(t);
    fut_release(t2);
    fut_release(done);
    fut_release(f);
    fut_promise_free(p);
}
END_TEST

START_TEST(test_timeout_pending_across_free)
{
    fut_runtime *rt = tu_rt_new(1);
    fut_promise *p = fut_promise_new(rt);
    fut_future *f = fut_promise_future(p), *t;

    t = fut_timeout(f, 30);
    ck_assert_int_eq(fut_runtime_free(rt), 0);
    TU_SETTLE(t);
    ck_assert_int_eq(fut_error(t), ESHUTDOWN);
    ck_assert_int_eq(fut_state(f), FUT_PENDING);
    ck_assert_int_eq(fut_promise_resolve(p, NULL), 0);
    fut_release(t);
    fut_release(f);
    fut_promise_free(p);
}
END_TEST

/* ------------------------------------------------------------------------
 * The default runtime: a failed first making is retried on later use
 * ---------------------------------------------------------------------- */

static int no_threads(void)
{
    return EAGAIN;
}

/* In a child process, so that the default runtime is made here first. */
static int default_retry_child(void)
{
    fut_future *f, *s;
    void *r = NULL;

    fut__thread_set_hook(no_threads);
    errno = 0;
    if (fut_submit(NULL, ident_work, TU_PTR(1)) != NULL || errno != EAGAIN)
        return 10;
    errno = 0;
    if (fut_sleep(NULL, 0) != NULL || errno != EAGAIN)
        return 11;
    if (fut_run(NULL, ident_work, NULL, NULL) != EAGAIN)
        return 12;
    if (fut_runtime_pool(NULL) != NULL)
        return 13;
    fut__thread_set_hook(NULL); /* threads can be made again: the next use works */
    f = fut_submit(NULL, ident_work, TU_PTR(42));
    if (f == NULL || fut_wait(f, 10) != 0 || fut_value(f) != TU_PTR(42))
        return 14;
    s = fut_sleep(NULL, 0.001);
    if (s == NULL || fut_wait(s, 10) != 0 || fut_state(s) != FUT_RESOLVED)
        return 15;
    if (fut_run(NULL, ident_work, TU_PTR(7), &r) != 0 || r != TU_PTR(7))
        return 16;
    fut_release(f);
    fut_release(s);
    return 0;
}

START_TEST(test_default_runtime_retried)
{
    pid_t pid;
    int status;

    fflush(NULL);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        alarm(20);
        _exit(default_retry_child());
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status), "the child died (signal %d)", WTERMSIG(status));
    ck_assert_msg(WEXITSTATUS(status) == 0, "check %d failed in the child", WEXITSTATUS(status));
}
END_TEST

/* ------------------------------------------------------------------------
 * A raw pool job that a waiting work function runs (fut_wait helps its
 * pool) is no part of that work: its fut_raise has no effect on it
 * (found by the fuzzer: the work was rejected with the job's error)
 * ---------------------------------------------------------------------- */

typedef struct raw_probe {
    fut_pool_job job;
    atomic_int calls;
    atomic_int saw_cancelled;
} raw_probe;

static void raw_probe_fn(fut_pool_job *job, int status)
{
    raw_probe *r = TU_CONTAINER_OF(job, raw_probe, job);

    (void)status;
    atomic_store(&r->saw_cancelled, fut_cancelled());
    fut_raise(EIO, "a raw job raised"); /* outside any work: no effect */
    atomic_fetch_add(&r->calls, 1);
}

typedef struct helper_work {
    fut_runtime *rt;
    fut_future *never;  /* a pending future to wait on */
    raw_probe probe;
    int submit_rc, wait_rc;
} helper_work;

static void *work_that_helps(void *arg)
{
    helper_work *h = arg;

    h->submit_rc = fut_pool_submit(fut_runtime_pool(h->rt), FUT_LANE_COMPUTE, &h->probe.job, raw_probe_fn);
    /* The only compute worker is us: the raw job runs in this wait. */
    h->wait_rc = fut_wait(h->never, 0.2);
    return TU_PTR(7);
}

START_TEST(test_raw_job_in_wait_is_not_the_work)
{
    helper_work h = { 0 };
    fut_promise *p;
    fut_future *w;

    h.rt = tu_rt_new(1);
    p = fut_promise_new(h.rt);
    h.never = fut_promise_future(p);
    w = fut_submit(h.rt, work_that_helps, &h);
    TU_SETTLE(w);
    ck_assert_int_eq(h.submit_rc, 0);
    ck_assert_int_eq(h.wait_rc, ETIMEDOUT);
    ck_assert_int_eq(atomic_load(&h.probe.calls), 1);
    ck_assert_int_eq(atomic_load(&h.probe.saw_cancelled), 0);
    ck_assert_int_eq(fut_error(w), 0);
    ck_assert_ptr_eq(fut_value(w), TU_PTR(7));
    fut_release(w);
    fut_release(h.never);
    fut_promise_resolve(p, NULL);
    fut_promise_free(p);
    tu_rt_finish(h.rt);
}
END_TEST

/* ------------------------------------------------------------------------
 * A coroutine cancelled before the runtime is freed, which took the
 * cancel and went on to await again, is still cancelled by the shutdown
 * (found by the fuzzer: fut_runtime_free hung)
 * ---------------------------------------------------------------------- */

typedef struct stubborn {
    fut_future *first, *second;  /* pending futures it awaits in turn */
    atomic_int first_err, second_err, at_first, at_second;
} stubborn;

static void *stubborn_coro(void *arg)
{
    stubborn *st = arg;
    int err = -1;

    atomic_store(&st->at_first, 1);
    fut_await(st->first, &err);
    atomic_store(&st->first_err, err);
    err = -1;
    atomic_store(&st->at_second, 1);
    fut_await(st->second, &err); /* it took the cancel and goes on */
    atomic_store(&st->second_err, err);
    return NULL;
}

START_TEST(test_free_cancels_coroutine_cancelled_before)
{
    fut_runtime *rt = tu_rt_new(1);
    fut_promise *p1 = fut_promise_new(rt), *p2 = fut_promise_new(rt);
    stubborn st = { 0 };
    fut_future *co;

    st.first = fut_promise_future(p1);
    st.second = fut_promise_future(p2);
    atomic_store(&st.first_err, -1);
    atomic_store(&st.second_err, -1);
    co = fut_async(rt, stubborn_coro, &st);
    ck_assert_ptr_nonnull(co);
    TU_POLL_COUNT(&st.at_first, 1); /* it awaits the first */
    ck_assert_int_eq(fut_cancel(co), 0);
    TU_POLL_COUNT(&st.at_second, 1);
    ck_assert_int_eq(atomic_load(&st.first_err), ECANCELED);
    ck_assert_int_eq(fut_runtime_free(rt), 0); /* hung before the fix */
    ck_assert_int_eq(atomic_load(&st.second_err), ECANCELED);
    ck_assert_int_eq(fut_state(st.second), FUT_CANCELLED);
    ck_assert_int_eq(fut_state(co), FUT_RESOLVED); /* it took both cancels and returned */
    fut_release(co);
    fut_release(st.first);
    fut_release(st.second);
    fut_promise_free(p1);
    fut_promise_free(p2);
}
END_TEST

/* The same for the notices of a shutdown: work of B frees runtime A,
 * whose queued blocking job is told ECANCELED on that work's thread; the
 * job's fut_raise must not reject B's work. */
typedef struct gate_job {
    fut_pool_job job;
    atomic_int open, running;
} gate_job;

static void gate_fn(fut_pool_job *job, int status)
{
    gate_job *g = TU_CONTAINER_OF(job, gate_job, job);
    uint64_t until = tu_deadline_ms(5000);

    (void)status;
    atomic_store(&g->running, 1);
    while (!atomic_load(&g->open) && tu_now_ns() < until)
        usleep(1000);
}

typedef struct freer {
    fut_runtime *a;
    gate_job *gate;
    int rc;
} freer;

static void *open_gate_later(void *arg)
{
    gate_job *g = arg;

    usleep(50000);
    atomic_store(&g->open, 1);
    return NULL;
}

static void *work_frees_a(void *arg)
{
    freer *fr = arg;
    pthread_t t;

    pthread_create(&t, NULL, open_gate_later, fr->gate);
    fr->rc = fut_runtime_free(fr->a); /* the probe is told ECANCELED here */
    pthread_join(t, NULL);
    return TU_PTR(9);
}

START_TEST(test_shutdown_notice_is_not_the_work)
{
    fut_runtime *a = tu_rt_new_opts(1, 1), *b = tu_rt_new(1);
    gate_job gate = { 0 };
    raw_probe probe = { 0 };
    freer fr = { .a = a, .gate = &gate };
    fut_future *w;

    ck_assert_int_eq(fut_pool_submit(fut_runtime_pool(a), FUT_LANE_BLOCKING, &gate.job, gate_fn), 0);
    TU_POLL_COUNT(&gate.running, 1); /* the lane's only thread is busy */
    ck_assert_int_eq(fut_pool_submit(fut_runtime_pool(a), FUT_LANE_BLOCKING, &probe.job, raw_probe_fn), 0);
    w = fut_submit(b, work_frees_a, &fr);
    TU_SETTLE(w);
    ck_assert_int_eq(fr.rc, 0);
    ck_assert_int_eq(atomic_load(&probe.calls), 1);
    ck_assert_int_eq(fut_error(w), 0);
    ck_assert_ptr_eq(fut_value(w), TU_PTR(9));
    fut_release(w);
    tu_rt_finish(b);
}
END_TEST

static Suite *runtime_edges_suite(void)
{
    Suite *s = suite_create("runtime_edges");
    TCase *tc;

    tc = tu_tcase(s, "free", 20);
    tcase_add_test(tc, test_free_on_other_dispatcher_continuation);
    tcase_add_test(tc, test_free_on_other_dispatcher_coroutine);
    tcase_add_test(tc, test_stand_in_is_plain_continuation);
    tcase_add_test(tc, test_timeout_made_after_free);
    tcase_add_test(tc, test_timeout_pending_across_free);
    tcase_add_test(tc, test_free_cancels_coroutine_cancelled_before);

    tc = tu_tcase(s, "calls", 20);
    tcase_add_test(tc, test_raw_job_in_wait_is_not_the_work);
    tcase_add_test(tc, test_shutdown_notice_is_not_the_work);

    tc = tu_tcase(s, "default", 30);
    tcase_add_test(tc, test_default_runtime_retried);
    return s;
}

int main(void)
{
    return tu_run_suite(runtime_edges_suite());
}
