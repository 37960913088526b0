/* test_alloc_fail.c - allocation and thread-creation failures everywhere.
 *
 * A workload uses every kind of future on a small runtime: compute and
 * blocking work that returns, raises, offloads, or runs until cancelled;
 * promises resolved, rejected and dropped; then/catch/finally (one that
 * raises, one that makes futures on the dispatcher); sleeps, one
 * cancelled; a timeout that fires and one that does not; gather (plain,
 * FUT_SETTLED, FUT_CANCEL_REST, of nothing), any (one cancelled), race
 * (FUT_CANCEL_REST, one won by a rejection); coroutines that await, yield,
 * raise, are cancelled, or are suspended when the runtime is freed;
 * fut_run; then fut_runtime_free with a sleep, a timeout and a coroutine
 * pending, and, after it, continuations of a promise settled on the
 * calling thread, a sleep and a timeout made on the freed runtime.
 *
 * It runs once with counting hooks (N allocations, T thread creations),
 * then for every k in 1..N plus a margin with the k-th allocation refused
 * ("once"), again with the k-th and every later one refused ("from"), and
 * likewise for every k in 1..T thread creations, also with thread
 * creations that fail only after 20 ms ("slow": other submits overlap
 * them). The sweeps are made twice (the sites move a little with thread
 * timing). Every run checks each call against its contract: a NULL only
 * with errno ENOMEM (fut_runtime_new: also EAGAIN); every future settles
 * within TU_WAIT_MS (else a hang); its outcome is the one the workload
 * expects from its inputs (a continuation settles as its source, ...) or
 * a rejection with ENOMEM or EAGAIN. The one degradation accepted: once a
 * failure was injected, a rejection's message may be empty (a message
 * that could not be allocated is dropped; its code is kept). After each
 * run, fut_runtime_live must reach what the workload still holds, and
 * under ASan LeakSanitizer must find nothing (checked in-process after
 * every run, so that a leak names its k). Two more cases make the default
 * runtime's first use fail (every allocation / thread creation, then the
 * k-th of each attempt) until it succeeds.
 *
 * A failing run stops the case and prints its k with a reproduce line;
 * a crash prints the k of the run in progress.
 *
 * Environment (for reproducing and for slow builds):
 *   FUT_ALLOC_FAIL_MAX_K=M     run k = 1..M at most (a cap for slow builds;
 *                              unset: every k)
 *   FUT_ALLOC_FAIL_K=k         run only this k (a reproducer)
 *   FUT_ALLOC_FAIL_ROUNDS=R    sweep every k R times (default 2)
 *   FUT_ALLOC_FAIL_KEEP_GOING=1  run each k in a forked child and go on
 *                              after a failing k, listing them all (to
 *                              survey bugs; the default stops at the first)
 *   FUT_ALLOC_FAIL_VERBOSE=1   print every k, what it refused, its time
 *   FUT_ALLOC_FAIL_STACK=1     (ASan builds) print the stack of every
 *                              refused allocation or thread creation
 *   FUT_ALLOC_FAIL_SELFTEST_LEAK=1  leak a future on purpose: the ASan
 *                              build must then fail (shows the check works)
 * Select one case with CK_RUN_CASE: count, alloc_once, alloc_from,
 * thread_once, thread_from, thread_once_slow, thread_from_slow,
 * default_rt_alloc, default_rt_thread. */
#include "testutil.h"

#include <sys/wait.h>

#if TU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/lsan_interface.h>
#endif

/* ------------------------------------------------------------------------
 * Failure injection
 * ---------------------------------------------------------------------- */

enum { FAIL_NONE = 0, FAIL_ONCE = 1, FAIL_FROM = 2 };
enum { ON_ALLOC = 0, ON_THREAD = 1 };

static const char *const mode_name[] = { "count", "only the k-th", "the k-th and every later one" };
static const char *const what_name[] = { "allocation", "thread creation" };

/* Counters of the current run, and what it refuses. */
static atomic_ulong g_seen[2];   /* hook calls (allocations, thread creations) */
static atomic_ulong g_failed[2]; /* of those, refused */
static atomic_ulong g_k[2];      /* the k-th call is refused (0: none) */
static atomic_int g_mode[2];     /* FAIL_* */

static const char *g_case = "?"; /* the test case running (for the reproduce line) */
/* FUT_ALLOC_FAIL_SELFTEST_LEAK=1: the workload leaks a future after the
 * runtime is freed (and with it the runtime), to show that a leak fails
 * the test (under ASan; elsewhere nothing sees it). */
static int g_selftest_leak;

/* For crash reports: the run in progress. */
static volatile int g_cur_what = -1, g_cur_mode;
static volatile unsigned long g_cur_k;

static int should_fail(int what)
{
    unsigned long n = atomic_fetch_add(&g_seen[what], 1) + 1;
    unsigned long k = atomic_load_explicit(&g_k[what], memory_order_relaxed);
    int mode = atomic_load_explicit(&g_mode[what], memory_order_relaxed);

    if (mode == FAIL_NONE || k == 0)
        return 0;
    if (n == k || (mode == FAIL_FROM && n > k)) {
        atomic_fetch_add(&g_failed[what], 1);
        return 1;
    }
    return 0;
}

static int g_print_stack; /* FUT_ALLOC_FAIL_STACK=1: print where each refusal happens (ASan) */
static atomic_uint g_slow_ms; /* a refused thread creation takes this long (a slow failure) */

static void print_refused(int what, size_t size)
{
#if TU_ASAN
    if (g_print_stack) {
        fprintf(stderr, "test_alloc_fail: refused %s (size %zu) at:\n", what_name[what], size);
        __sanitizer_print_stack_trace();
    }
#else
    (void)what;
    (void)size;
#endif
}

static int alloc_hook(size_t size)
{
    if (!should_fail(ON_ALLOC))
        return 0;
    print_refused(ON_ALLOC, size);
    return 1;
}

static int thread_hook(void)
{
    unsigned ms;

    if (!should_fail(ON_THREAD))
        return 0;
    print_refused(ON_THREAD, 0);
    /* A slow failure: other threads submit meanwhile, counting on the
     * creation in progress. */
    if ((ms = atomic_load(&g_slow_ms)) != 0)
        tu_sleep_ms(ms);
    return EAGAIN;
}

static unsigned long injected(void)
{
    return atomic_load(&g_failed[ON_ALLOC]) + atomic_load(&g_failed[ON_THREAD]);
}

/* ------------------------------------------------------------------------
 * Violations: recorded from any thread, read after the run
 * ---------------------------------------------------------------------- */

static pthread_mutex_t v_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned v_count;
static int v_hung; /* a future never settled */
static char v_first[1024];

static void viol(int line, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void viol(int line, const char *fmt, ...)
{
    va_list ap;

    pthread_mutex_lock(&v_lock);
    if (v_count++ == 0) {
        int n = snprintf(v_first, sizeof v_first, "test_alloc_fail.c:%d: ", line);
        va_start(ap, fmt);
        if (n > 0 && (size_t)n < sizeof v_first)
            vsnprintf(v_first + n, sizeof v_first - (size_t)n, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&v_lock);
}

#define V(cond)                                                  \
    do {                                                         \
        if (!(cond))                                             \
            viol(__LINE__, "check failed: %s", #cond);           \
    } while (0)

static void mark_hung(void)
{
    pthread_mutex_lock(&v_lock);
    v_hung = 1;
    pthread_mutex_unlock(&v_lock);
}

static void viol_reset(void)
{
    pthread_mutex_lock(&v_lock);
    v_count = 0;
    v_hung = 0;
    v_first[0] = '\0';
    pthread_mutex_unlock(&v_lock);
}

static unsigned long env_ulong(const char *name, unsigned long dflt)
{
    const char *s = getenv(name);
    char *end;
    unsigned long v;

    if (s == NULL || *s == '\0')
        return dflt;
    v = strtoul(s, &end, 10);
    return *end == '\0' ? v : dflt;
}

static int verbose(void)
{
    return env_ulong("FUT_ALLOC_FAIL_VERBOSE", 0) != 0;
}

/* ------------------------------------------------------------------------
 * Outcomes
 * ---------------------------------------------------------------------- */

static const char *state_name(int st)
{
    static const char *const names[] = { "pending", "resolved", "rejected", "cancelled" };
    return st >= 0 && st <= 3 ? names[st] : "?";
}

static int oom_code(int code)
{
    return code == ENOMEM || code == EAGAIN;
}

/* f failed with an allocation or thread-creation error (or one passed on). */
static int failed_oom(fut_future *f)
{
    return fut_state(f) == FUT_REJECTED && oom_code(fut_error(f));
}

/* A message is the expected one, or, once a failure was injected, empty:
 * a message that could not be allocated is dropped, the code is kept
 * (fut_raise, fut_promise_reject, a rejection passed on by fut_then; as
 * futures.h says of fut_message). */
static int msg_ok(const char *got, const char *want)
{
    return strcmp(got, want) == 0 || (got[0] == '\0' && injected() != 0);
}

static void describe(char *buf, size_t n, fut_future *f)
{
    int st = fut_state(f);

    if (st == FUT_RESOLVED)
        snprintf(buf, n, "resolved %#lx", (unsigned long)TU_UINT(fut_value(f)));
    else if (st == FUT_PENDING)
        snprintf(buf, n, "pending");
    else
        snprintf(buf, n, "%s %d (%s) \"%s\"", state_name(st), fut_error(f), strerror(fut_error(f)),
                 fut_message(f));
}

#define BAD_OUTCOME(f, name, want)                                               \
    do {                                                                         \
        char d_[300];                                                            \
        describe(d_, sizeof d_, (f));                                            \
        viol(__LINE__, "%s: %s, expected %s (or rejected ENOMEM/EAGAIN)", (name), d_, (want)); \
    } while (0)

/* f resolved with v, or failed with ENOMEM/EAGAIN. */
#define EXPECT_VALUE(f, name, v)                                                 \
    do {                                                                         \
        if ((f) != NULL && !failed_oom(f) &&                                     \
            !(fut_state(f) == FUT_RESOLVED && fut_value(f) == (void *)(v)))      \
            BAD_OUTCOME((f), (name), "resolved " #v);                            \
    } while (0)

/* f rejected with code and message msg (or an empty one after a
 * failure), or failed with ENOMEM/EAGAIN. */
#define EXPECT_ERROR(f, name, code, msg)                                         \
    do {                                                                         \
        if ((f) != NULL && !failed_oom(f) &&                                     \
            !(fut_state(f) == FUT_REJECTED && fut_error(f) == (code) &&          \
              msg_ok(fut_message(f), (msg))))                                    \
            BAD_OUTCOME((f), (name), "rejected " #code " \"" msg "\"");          \
    } while (0)

#define EXPECT_CANCELLED(f, name)                                                \
    do {                                                                         \
        if ((f) != NULL && !failed_oom(f) &&                                     \
            !(fut_state(f) == FUT_CANCELLED && fut_error(f) == ECANCELED))       \
            BAD_OUTCOME((f), (name), "cancelled");                               \
    } while (0)

/* d settled as src did (same state, value or code; the message, or an
 * empty one after a failure), or failed with ENOMEM/EAGAIN. */
static void expect_same(int line, fut_future *d, const char *name, fut_future *src)
{
    int st = fut_state(src), ok;
    char a[300], b[300];

    if (d == NULL || src == NULL || failed_oom(d))
        return;
    if (st == FUT_RESOLVED)
        ok = fut_state(d) == FUT_RESOLVED && fut_value(d) == fut_value(src);
    else
        ok = fut_state(d) == st && fut_error(d) == fut_error(src) &&
             msg_ok(fut_message(d), fut_message(src));
    if (!ok) {
        describe(a, sizeof a, d);
        describe(b, sizeof b, src);
        viol(line, "%s: %s, expected it settled as its source: %s", name, a, b);
    }
}
#define EXPECT_SAME(d, name, src) expect_same(__LINE__, (d), (name), (src))

/* ------------------------------------------------------------------------
 * The workload
 * ---------------------------------------------------------------------- */

#define MAX_HELD 64

typedef struct wl {
    fut_runtime *rt;
    fut_future *held[MAX_HELD]; /* every future made: released at the end */
    const char *held_what[MAX_HELD]; /* the call that made it */
    unsigned char held_late[MAX_HELD]; /* settles only after fut_runtime_free */
    int late;                   /* futures made now are late ones */
    size_t nheld;
    fut_promise *p5;            /* awaited by the coroutine that is cancelled */
    atomic_int co3_waiting;     /* that coroutine is about to await */
    atomic_int fin_runs;        /* finally callbacks run */
    atomic_int spin_started;    /* work_until_cancelled runs */
    char catch_msg[3][128];     /* what the catch callbacks were given */
    int catch_code[3];
    pthread_t main_thread;      /* the workload's thread */
    atomic_int late_off_thread; /* a late continuation ran on another thread */
} wl;

static fut_future *made_(wl *w, fut_future *f, int err, const char *what, int line)
{
    if (f == NULL) {
        if (err != ENOMEM)
            viol(line, "%s returned NULL with errno %d (%s), expected ENOMEM", what, err,
                 strerror(err));
        return NULL;
    }
    if (w->nheld >= MAX_HELD) {
        viol(line, "workload holds too many futures");
        fut_release(f);
        return NULL;
    }
    w->held_what[w->nheld] = what;
    w->held_late[w->nheld] = (unsigned char)w->late;
    w->held[w->nheld++] = f;
    return f;
}

/* Make a future with expr, checking a NULL against the contract, and keep
 * it for the checks and the final release. */
#define MADE(w, expr) (errno = 0, made_errno((w), (expr), #expr, __LINE__))
static fut_future *made_errno(wl *w, fut_future *f, const char *what, int line)
{
    return made_(w, f, errno, what, line); /* errno as expr left it */
}

/* Wait, bounded, for f to settle: else a hang. */
static int settles(fut_future *f, const char *what, int line)
{
    uint64_t t0 = tu_now_ns();
    int rc;

    if (f == NULL)
        return 0;
    rc = fut_wait(f, TU_WAIT_MS / 1000.0);
    if (verbose() && tu_now_ns() - t0 > 500000000u)
        fprintf(stderr, "test_alloc_fail: %s (line %d) took %.1f s to settle\n", what, line,
                (double)(tu_now_ns() - t0) / 1e9);
    if (rc != 0) {
        viol(line, "%s never settled: fut_wait returned %d (%s)", what, rc, strerror(rc));
        mark_hung();
        return 0;
    }
    return 1;
}
#define SETTLES(f) settles((f), #f, __LINE__)

/* ---- work, continuations, coroutines ---- */

static void *work_value(void *arg)
{
    return arg;
}

static void *work_raise(void *arg)
{
    return fut_raise((int)TU_UINT(arg), "work raised %d", (int)TU_UINT(arg));
}

/* Compute work that runs until it is cancelled (fut_cancelled). */
static void *work_until_cancelled(void *arg)
{
    wl *w = arg;
    uint64_t end = tu_deadline_ms(TU_WAIT_MS);

    atomic_store(&w->spin_started, 1);
    while (!fut_cancelled() && tu_now_ns() < end)
        tu_sleep_ms(1);
    V(fut_cancelled());
    return TU_PTR(1); /* ignored: cancelled */
}

/* Compute work that offloads blocking work and waits for it (from a
 * compute worker, while other submits start blocking threads too). */
static void *work_nested_blocking(void *arg)
{
    wl *w = arg;
    fut_future *f;
    void *v;
    int rc, err;

    errno = 0;
    f = fut_submit_blocking(w->rt, work_value, TU_PTR(9));
    if (f == NULL) {
        if (errno != ENOMEM)
            viol(__LINE__, "fut_submit_blocking (nested) returned NULL with errno %d", errno);
        return fut_raise(ENOMEM, "nested: no memory");
    }
    rc = fut_wait(f, TU_WAIT_MS / 1000.0);
    if (rc != 0) {
        viol(__LINE__, "nested blocking work never settled: fut_wait returned %d", rc);
        mark_hung();
        fut_release(f);
        return NULL;
    }
    v = fut_await(f, &err); /* settled: its outcome */
    fut_release(f);
    if (err != 0 && oom_code(err))
        return fut_raise(err, "nested blocking work failed");
    V(err == 0 && v == TU_PTR(9));
    return TU_PTR(10);
}

static void *add_one(void *v, void *arg)
{
    (void)arg;
    return TU_PTR(TU_UINT(v) + 1);
}

static void *then_raise(void *v, void *arg)
{
    (void)arg;
    return fut_raise(ENOENT, "then raised %u", (unsigned)TU_UINT(v));
}

/* arg: the slot (0 or 1) of the wl given through catch_ctx. */
typedef struct catch_ctx {
    wl *w;
    int slot;
} catch_ctx;

static void *catch_code(int code, const char *message, void *arg)
{
    catch_ctx *c = arg;

    c->w->catch_code[c->slot] = code;
    snprintf(c->w->catch_msg[c->slot], sizeof c->w->catch_msg[0], "%s", message);
    return TU_PTR(1000 + code);
}

static void fin_count(fut_future *f, void *arg)
{
    V(fut_state(f) != FUT_PENDING);
    atomic_fetch_add((atomic_int *)arg, 1);
}

/* A continuation that makes futures on the dispatcher (and drops them). */
static void *then_allocates(void *v, void *arg)
{
    wl *w = arg;
    fut_future *sl, *f;

    errno = 0;
    if ((sl = fut_sleep(w->rt, 0)) == NULL) {
        if (errno != ENOMEM)
            viol(__LINE__, "in a continuation: fut_sleep NULL with errno %d", errno);
        return fut_raise(ENOMEM, "then_allocates: no memory");
    }
    errno = 0;
    f = fut_then(sl, add_one, NULL);
    fut_release(sl);
    if (f == NULL) {
        if (errno != ENOMEM)
            viol(__LINE__, "in a continuation: fut_then NULL with errno %d", errno);
        return fut_raise(ENOMEM, "then_allocates: no memory");
    }
    fut_release(f);
    return TU_PTR(TU_UINT(v) + 100);
}

/* A coroutine that awaits a promise nobody settles before the runtime is
 * freed: the shutdown cancels it. */
static void *coro_await_late(void *arg)
{
    fut_future *f = arg;
    int err = -1;

    V(fut_await(f, &err) == NULL && err == ECANCELED);
    return fut_raise(err, "the shutdown's cancel, passed on"); /* so the task ends cancelled */
}

/* A continuation of a promise settled after fut_runtime_free: it runs on
 * the thread that settles it (as a plain continuation). */
static void *late_then(void *v, void *arg)
{
    wl *w = arg;

    if (!pthread_equal(pthread_self(), w->main_thread))
        atomic_store(&w->late_off_thread, 1);
    V(!fut_in_coroutine());
    return TU_PTR(TU_UINT(v) + 1);
}

/* In a coroutine: a call made nothing (errno must say ENOMEM); pass it on
 * as the coroutine's failure. */
static void *coro_oom(int err, const char *what, int line)
{
    if (err != ENOMEM)
        viol(line, "in a coroutine: %s returned NULL with errno %d (%s)", what, err, strerror(err));
    return fut_raise(ENOMEM, "%s: no memory", what);
}

/* Await, yield, await a sleep, await a rejection, await blocking work. */
static void *coro_main(void *arg)
{
    wl *w = arg;
    fut_future *f;
    void *v;
    int err = -1;

    V(fut_in_coroutine());
    V(fut_on_dispatcher(w->rt));

    errno = 0;
    if ((f = fut_submit(w->rt, work_value, TU_PTR(3))) == NULL)
        return coro_oom(errno, "fut_submit", __LINE__);
    v = fut_await(f, &err);
    V(err == 0 && v == TU_PTR(3)); /* compute work cannot fail once made */
    fut_release(f);

    err = fut_yield();
    V(err == 0);

    errno = 0;
    if ((f = fut_sleep(w->rt, 0.001)) == NULL)
        return coro_oom(errno, "fut_sleep", __LINE__);
    v = fut_await(f, &err);
    V(err == 0 && v == NULL);
    fut_release(f);

    errno = 0;
    if ((f = fut_submit(w->rt, work_raise, TU_PTR(EIO))) == NULL)
        return coro_oom(errno, "fut_submit", __LINE__);
    v = fut_await(f, &err);
    V(err == EIO && v == NULL);
    V(msg_ok(fut_message(f), "work raised 5"));
    fut_release(f);

    errno = 0;
    if ((f = fut_submit_blocking(w->rt, work_value, TU_PTR(4))) == NULL)
        return coro_oom(errno, "fut_submit_blocking", __LINE__);
    v = fut_await(f, &err);
    if (oom_code(err)) { /* no thread for it: pass it on */
        fut_release(f);
        return fut_raise(err, "blocking work failed");
    }
    V(err == 0 && v == TU_PTR(4));
    fut_release(f);

    err = fut_yield();
    V(err == 0);
    return TU_PTR(42);
}

static void *coro_raise(void *arg)
{
    (void)arg;
    V(fut_yield() == 0);
    return fut_raise(EDOM, "coro raised %d", 33);
}

/* Awaits a promise that never settles, until it is cancelled. */
static void *coro_wait(void *arg)
{
    wl *w = arg;
    fut_future *pf = fut_promise_future(w->p5);
    void *v;
    int err = -1;

    V(pf != NULL);
    atomic_store(&w->co3_waiting, 1);
    v = fut_await(pf, &err);
    V(v == NULL && err == ECANCELED);
    /* The cancel cancels what it awaited, unless the workload dropped the
     * promise first (the cancel reaches the coroutine through a task of
     * the dispatcher; fut_cancel returns before it ran). */
    V(fut_state(pf) == FUT_CANCELLED ||
      (fut_state(pf) == FUT_REJECTED && fut_error(pf) == FUT_EBROKEN));
    fut_release(pf);
    /* Passed on: the task ends cancelled (its message may be "" when the
     * allocation for it fails; the code stays). */
    return fut_raise(ECANCELED, "cancelled while waiting for p5");
}

static void *coro_value(void *arg)
{
    V(fut_yield() == 0);
    return arg;
}

/* A promise, checked against the contract (NULL only with ENOMEM). */
static fut_promise *promise_new(fut_runtime *rt, int line)
{
    fut_promise *p;

    errno = 0;
    p = fut_promise_new(rt);
    if (p == NULL && errno != ENOMEM)
        viol(line, "fut_promise_new returned NULL with errno %d (%s)", errno, strerror(errno));
    return p;
}

/* The future of a promise: never NULL for a promise. */
static fut_future *promise_future(wl *w, fut_promise *p, int line)
{
    fut_future *f;

    if (p == NULL)
        return NULL;
    f = fut_promise_future(p);
    if (f == NULL) {
        viol(line, "fut_promise_future returned NULL");
        return NULL;
    }
    return made_(w, f, 0, "fut_promise_future", line);
}

static void workload(wl *w)
{
    fut_pool_options o;
    fut_runtime *rt;
    fut_promise *p1, *p2, *p3, *p4;
    fut_future *f1, *f2, *f3, *f4, *w1, *w2, *b1, *b2, *t1, *t2, *t3, *c1, *c2, *fin1, *fin2;
    fut_future *s1, *s_cancel, *s_long, *to1, *to2, *g1, *g2, *a1, *r1, *co1, *co2, *co3;
    fut_future *w3, *spin, *f6, *t6, *k6, *t6b, *n6, *f7, *s8, *to7;
    fut_future *g0, *g3, *s_g3, *a2, *s_a2, *r2, *f8, *f9, *t4;
    fut_future *f10, *f11, *co4, *s_free, *to_free;
    fut_promise *p8, *p9, *p10, *p11;
    fut_promise *p6, *p7;
    catch_ctx cc[3] = { { w, 0 }, { w, 1 }, { w, 2 } };
    size_t nlate = 0;
    int fins_made = 0, rc, settled_all = 1;
    void *res;
    size_t i;
    bool ok;

    memset(w, 0, sizeof *w);
    w->catch_code[0] = w->catch_code[1] = w->catch_code[2] = -1;
    w->main_thread = pthread_self();
    fut_pool_options_init(&o);
    o.compute_threads = 2;
    o.blocking_max = 2;
    o.blocking_idle_ms = 1000;
    errno = 0;
    rt = fut_runtime_new(&o);
    if (rt == NULL) {
        if (errno != ENOMEM && errno != EAGAIN)
            viol(__LINE__, "fut_runtime_new returned NULL with errno %d (%s)", errno, strerror(errno));
        return;
    }
    w->rt = rt;
    V(fut_runtime_live(rt) == 0);
    V(fut_runtime_set_stack_size(rt, 64 * 1024) == 0); /* before the first coroutine */

    /* ---- running work that is cancelled; work that offloads ---- */
    spin = MADE(w, fut_submit(rt, work_until_cancelled, w));
    w3 = MADE(w, fut_submit(rt, work_nested_blocking, w));

    /* ---- promises, offload, continuations attached to pending futures ---- */
    p1 = promise_new(rt, __LINE__);
    p2 = promise_new(rt, __LINE__);
    p3 = promise_new(rt, __LINE__);
    p4 = promise_new(rt, __LINE__);
    w->p5 = promise_new(rt, __LINE__);
    f1 = promise_future(w, p1, __LINE__);
    f2 = promise_future(w, p2, __LINE__);
    f3 = promise_future(w, p3, __LINE__);
    f4 = promise_future(w, p4, __LINE__);

    w1 = MADE(w, fut_submit(rt, work_value, TU_PTR(7)));
    w2 = MADE(w, fut_submit(rt, work_raise, TU_PTR(EIO)));
    b1 = MADE(w, fut_submit_blocking(rt, work_value, TU_PTR(8)));
    b2 = MADE(w, fut_submit_blocking(rt, work_raise, TU_PTR(ETIME)));
    if (spin != NULL) {
        TU_POLL(ok, atomic_load(&w->spin_started), TU_WAIT_MS);
        if (!ok) {
            viol(__LINE__, "work_until_cancelled never started");
            mark_hung();
        }
        V(fut_cancel(spin) == 0);
    }

    /* ---- settled after fut_runtime_free: continuations on this thread ---- */
    w->late = 1;
    p6 = promise_new(rt, __LINE__);
    p7 = promise_new(rt, __LINE__);
    f6 = promise_future(w, p6, __LINE__);
    f7 = promise_future(w, p7, __LINE__);
    t6 = f6 ? MADE(w, fut_then(f6, add_one, NULL)) : NULL;
    k6 = f6 ? MADE(w, fut_catch(f6, catch_code, &cc[2])) : NULL;
    t6b = k6 ? MADE(w, fut_then(k6, late_then, w)) : NULL;
    n6 = f6 ? MADE(w, fut_finally(f6, fin_count, &w->fin_runs)) : NULL;
    /* pending when the runtime is freed: cancelled by the shutdown */
    p10 = promise_new(rt, __LINE__);
    p11 = promise_new(rt, __LINE__);
    f10 = promise_future(w, p10, __LINE__);
    f11 = promise_future(w, p11, __LINE__);
    co4 = f10 ? MADE(w, fut_async(rt, coro_await_late, f10)) : NULL;
    s_free = MADE(w, fut_sleep(rt, 10.0));
    to_free = f11 ? MADE(w, fut_timeout(f11, 10.0)) : NULL;
    w->late = 0;

    t1 = w1 ? MADE(w, fut_then(w1, add_one, NULL)) : NULL;
    t2 = w2 ? MADE(w, fut_then(w2, add_one, NULL)) : NULL;
    c1 = w2 ? MADE(w, fut_catch(w2, catch_code, &cc[0])) : NULL;
    t3 = f1 ? MADE(w, fut_then(f1, then_raise, NULL)) : NULL;
    t4 = w1 ? MADE(w, fut_then(w1, then_allocates, w)) : NULL;
    fin1 = f3 ? MADE(w, fut_finally(f3, fin_count, &w->fin_runs)) : NULL;
    fin2 = b2 ? MADE(w, fut_finally(b2, fin_count, &w->fin_runs)) : NULL;
    fins_made = (fin1 != NULL) + (fin2 != NULL);

    /* ---- settle the promises ---- */
    if (p1 != NULL)
        V(fut_promise_resolve(p1, TU_PTR(11)) == 0);
    if (p2 != NULL) {
        V(fut_promise_reject(p2, EACCES, "rejected %d", 2) == 0);
        V(fut_promise_resolve(p2, TU_PTR(1)) == EALREADY);
    }
    fut_promise_free(p3); /* unsettled: broken */
    fut_promise_free(p1);
    fut_promise_free(p2);

    /* ---- time ---- */
    s1 = MADE(w, fut_sleep(rt, 0.001));
    s_cancel = MADE(w, fut_sleep(rt, 10.0));
    if (s_cancel != NULL)
        V(fut_cancel(s_cancel) == 0);
    to1 = f4 ? MADE(w, fut_timeout(f4, 0.002)) : NULL; /* f4 never settles: times out */
    if (f4 != NULL && to1 == NULL)
        V(fut_promise_resolve(p4, NULL) == 0); /* no timeout to cancel it */
    to2 = w1 ? MADE(w, fut_timeout(w1, 10.0)) : NULL;  /* w1 wins */

    /* ---- combinators ---- */
    g1 = g2 = a1 = r1 = NULL;
    if (w1 && f1 && s1) {
        fut_future *in[3] = { w1, f1, s1 };
        g1 = MADE(w, fut_gather(rt, in, 3, 0));
    }
    if (w1 && w2 && b1) {
        fut_future *in[3] = { w1, w2, b1 };
        g2 = MADE(w, fut_gather(rt, in, 3, FUT_SETTLED));
    }
    if (w2 && b1) {
        fut_future *in[2] = { w2, b1 };
        a1 = MADE(w, fut_any(rt, in, 2, 0));
    }
    g0 = MADE(w, fut_gather(rt, NULL, 0, 0)); /* resolves at once */
    g3 = NULL;
    s_g3 = MADE(w, fut_sleep(rt, 10.0));
    if (s_g3 && w2) {
        fut_future *in[2] = { s_g3, w2 }; /* w2 fails: s_g3 is cancelled */
        g3 = MADE(w, fut_gather(rt, in, 2, FUT_CANCEL_REST));
    }
    if (s_g3 != NULL && g3 == NULL)
        V(fut_cancel(s_g3) == 0);
    a2 = r2 = NULL;
    s_a2 = MADE(w, fut_sleep(rt, 10.0));
    p9 = promise_new(rt, __LINE__);
    f9 = promise_future(w, p9, __LINE__);
    if (s_a2 && f9) {
        fut_future *in[2] = { s_a2, f9 };
        a2 = MADE(w, fut_any(rt, in, 2, 0));
        if (a2 != NULL) /* cancels its inputs */
            V(fut_cancel(a2) == 0);
    }
    if (s_a2 != NULL && a2 == NULL)
        V(fut_cancel(s_a2) == 0);
    fut_promise_free(p9); /* f9: cancelled by a2, else broken */
    p8 = promise_new(rt, __LINE__);
    f8 = promise_future(w, p8, __LINE__);
    if (f2 != NULL && f8 != NULL) {
        /* f2 was rejected before: its link is queued first, it decides */
        fut_future *in[2] = { f2, f8 };
        r2 = MADE(w, fut_race(rt, in, 2, 0));
    }
    fut_promise_free(p8); /* f8: broken, after f2 decided */
    s_long = MADE(w, fut_sleep(rt, 10.0));
    if (s_long && w1) {
        fut_future *in[2] = { s_long, w1 };
        r1 = MADE(w, fut_race(rt, in, 2, FUT_CANCEL_REST));
    }
    if (s_long != NULL && r1 == NULL)
        V(fut_cancel(s_long) == 0); /* no race to cancel it */

    /* ---- coroutines ---- */
    co1 = MADE(w, fut_async(rt, coro_main, w));
    co2 = MADE(w, fut_async(rt, coro_raise, NULL));
    co3 = w->p5 ? MADE(w, fut_async(rt, coro_wait, w)) : NULL;
    res = TU_PTR(1);
    rc = fut_run(rt, coro_value, TU_PTR(5), &res);
    if (rc == 0)
        V(res == TU_PTR(5));
    else if (rc != ENOMEM)
        viol(__LINE__, "fut_run returned %d (%s), expected 0 or ENOMEM", rc, strerror(rc));
    else /* NULL whatever failed (futures.h) */
        V(res == NULL);
    if (co3 != NULL) {
        /* Cancel it while it awaits (or once it failed to start). */
        TU_POLL(ok, atomic_load(&w->co3_waiting) || fut_state(co3) != FUT_PENDING, TU_WAIT_MS);
        if (!ok) {
            viol(__LINE__, "co3 neither started nor failed");
            mark_hung();
        }
        rc = fut_cancel(co3);
        if (rc != 0 && !(rc == EALREADY && failed_oom(co3)))
            viol(__LINE__, "fut_cancel(co3) returned %d", rc);
    }

    /* ---- a continuation attached to a settled future ---- */
    c2 = NULL;
    if (w1 != NULL && SETTLES(w1))
        c2 = MADE(w, fut_catch(w1, catch_code, &cc[1]));

    /* ---- everything settles ---- */
    for (i = 0; i < w->nheld; i++) {
        if (w->held_late[i])
            nlate++;
        else if (!settles(w->held[i], w->held_what[i], __LINE__))
            settled_all = 0;
    }

    /* ---- outcomes ---- */
    if (settled_all) {
        EXPECT_VALUE(f1, "f1 (promise resolved)", TU_PTR(11));
        EXPECT_ERROR(f2, "f2 (promise rejected)", EACCES, "rejected 2");
        EXPECT_ERROR(f3, "f3 (promise dropped)", FUT_EBROKEN,
                     "broken promise: dropped before it settled");
        if (to1 != NULL)
            EXPECT_CANCELLED(f4, "f4 (cancelled by its timeout)");
        else
            EXPECT_VALUE(f4, "f4 (resolved: its timeout was not made)", NULL);
        EXPECT_CANCELLED(spin, "spin (running work, cancelled)");
        EXPECT_VALUE(w3, "w3 (work that offloads blocking work)", TU_PTR(10));
        EXPECT_VALUE(w1, "w1 (work)", TU_PTR(7));
        EXPECT_ERROR(w2, "w2 (work that raises)", EIO, "work raised 5");
        EXPECT_VALUE(b1, "b1 (blocking work)", TU_PTR(8));
        EXPECT_ERROR(b2, "b2 (blocking work that raises)", ETIME, "work raised 62");
        if (t1 != NULL && fut_state(w1) == FUT_RESOLVED)
            EXPECT_VALUE(t1, "t1 (then of w1)", TU_PTR(8));
        EXPECT_SAME(t2, "t2 (then of a rejected w2)", w2);
        if (c1 != NULL && fut_state(w2) == FUT_REJECTED) {
            EXPECT_VALUE(c1, "c1 (catch of w2)", TU_PTR(1000 + EIO));
            if (fut_state(c1) == FUT_RESOLVED) {
                V(w->catch_code[0] == EIO);
                V(strcmp(w->catch_msg[0], fut_message(w2)) == 0);
            }
        }
        if (t3 != NULL && fut_state(f1) == FUT_RESOLVED)
            EXPECT_ERROR(t3, "t3 (then that raises)", ENOENT, "then raised 11");
        EXPECT_SAME(fin1, "fin1 (finally of f3)", f3);
        EXPECT_SAME(fin2, "fin2 (finally of b2)", b2);
        V(atomic_load(&w->fin_runs) == fins_made);
        EXPECT_VALUE(s1, "s1 (sleep)", NULL);
        if (t4 != NULL && fut_state(w1) == FUT_RESOLVED)
            EXPECT_VALUE(t4, "t4 (then that allocates)", TU_PTR(107));
        EXPECT_CANCELLED(s_cancel, "s_cancel (cancelled sleep)");
        EXPECT_ERROR(to1, "to1 (timeout that fires)", ETIMEDOUT, "timed out after 0.002 s");
        EXPECT_SAME(to2, "to2 (timeout that does not fire)", w1);
        if (g1 != NULL && !failed_oom(g1)) {
            void **vals = fut_value(g1);
            if (fut_state(g1) != FUT_RESOLVED || vals == NULL)
                BAD_OUTCOME(g1, "g1 (gather)", "resolved [7, 11, NULL]");
            else
                V(vals[0] == TU_PTR(7) && vals[1] == TU_PTR(11) && vals[2] == NULL);
        }
        if (g2 != NULL && !failed_oom(g2)) {
            void **vals = fut_value(g2);
            if (fut_state(g2) != FUT_RESOLVED || vals == NULL) {
                BAD_OUTCOME(g2, "g2 (gather FUT_SETTLED)", "resolved");
            } else {
                V(fut_gather_item(g2, 0) == w1 && fut_gather_item(g2, 1) == w2 &&
                  fut_gather_item(g2, 2) == b1);
                V(vals[0] == TU_PTR(7) && vals[1] == NULL);
                V(vals[2] == (fut_state(b1) == FUT_RESOLVED ? TU_PTR(8) : NULL));
            }
        }
        if (a1 != NULL) {
            if (fut_state(b1) == FUT_RESOLVED)
                EXPECT_VALUE(a1, "a1 (any)", TU_PTR(8));
            else if (!failed_oom(a1) &&
                     !(fut_state(a1) == FUT_REJECTED &&
                       (fut_error(a1) == EIO || fut_error(a1) == fut_error(b1))))
                BAD_OUTCOME(a1, "a1 (any, every input failed)", "the error of an input");
        }
        if (g0 != NULL && !failed_oom(g0) &&
            !(fut_state(g0) == FUT_RESOLVED && fut_value(g0) != NULL))
            BAD_OUTCOME(g0, "g0 (gather of nothing)", "resolved (an empty array)");
        if (g3 != NULL) {
            if (!failed_oom(g3) &&
                !(fut_state(g3) == FUT_REJECTED && fut_error(g3) == EIO &&
                  msg_ok(fut_message(g3), fut_message(w2))))
                BAD_OUTCOME(g3, "g3 (gather FUT_CANCEL_REST)", "w2's rejection");
            EXPECT_CANCELLED(s_g3, "s_g3 (cancelled by g3)");
        }
        if (a2 != NULL) {
            EXPECT_CANCELLED(a2, "a2 (any, cancelled)");
            EXPECT_CANCELLED(s_a2, "s_a2 (cancelled with a2)");
            EXPECT_CANCELLED(f9, "f9 (cancelled with a2)");
        } else {
            EXPECT_ERROR(f9, "f9 (promise dropped)", FUT_EBROKEN,
                         "broken promise: dropped before it settled");
        }
        if (r2 != NULL)
            EXPECT_SAME(r2, "r2 (race won by a rejection)", f2);
        EXPECT_ERROR(f8, "f8 (promise dropped)", FUT_EBROKEN,
                     "broken promise: dropped before it settled");
        if (r1 != NULL) {
            EXPECT_VALUE(r1, "r1 (race)", TU_PTR(7));
            if (fut_state(r1) == FUT_RESOLVED && SETTLES(s_long))
                EXPECT_CANCELLED(s_long, "s_long (the race's loser)");
        }
        EXPECT_VALUE(co1, "co1 (coroutine)", TU_PTR(42));
        EXPECT_ERROR(co2, "co2 (coroutine that raises)", EDOM, "coro raised 33");
        EXPECT_CANCELLED(co3, "co3 (cancelled coroutine)");
        EXPECT_VALUE(c2, "c2 (catch of a resolved w1)", TU_PTR(7));
        if (c2 != NULL && fut_state(c2) == FUT_RESOLVED)
            V(w->catch_code[1] == -1); /* it did not run */
    }

    /* ---- release everything but the late ones ---- */
    fut_promise_free(p4);
    fut_promise_free(w->p5);
    for (i = 0; i < w->nheld; i++) {
        if (!w->held_late[i]) {
            fut_release(w->held[i]);
            w->held[i] = NULL;
        }
    }
    if (settled_all) {
        /* The late futures (each a distinct object: a promise's future is
         * the promise) are all that is left. */
        size_t left = nlate + (to_free != NULL); /* and the timeout's own sleep */
        TU_POLL(ok, fut_runtime_live(rt) == left, TU_WAIT_MS);
        if (!ok)
            viol(__LINE__, "%llu future(s) live after everything but %zu was released",
                 (unsigned long long)fut_runtime_live(rt), left);
    }
    rc = fut_runtime_free(rt);
    if (rc != 0)
        viol(__LINE__, "fut_runtime_free returned %d", rc);

    /* ---- after fut_runtime_free (rt lives while its futures do) ---- */
    s8 = to7 = NULL;
    if (nlate != 0) {
        w->late = 1;
        s8 = MADE(w, fut_sleep(rt, 10.0));            /* cancelled at once */
        to7 = f7 ? MADE(w, fut_timeout(f7, 10.0)) : NULL; /* ESHUTDOWN at once */
        w->late = 0;
    }
    if (p6 != NULL) /* its continuations run here, now */
        V(fut_promise_reject(p6, EFAULT, "late %d", 6) == 0);
    fut_promise_free(p6);
    fut_promise_free(p7);  /* f7: broken */
    fut_promise_free(p10); /* f10: cancelled with co4's await, or broken */
    fut_promise_free(p11); /* f11: broken (its timeout left it alone) */
    for (i = 0; i < w->nheld; i++)
        if (w->held[i] != NULL && !settles(w->held[i], w->held_what[i], __LINE__))
            settled_all = 0;
    if (settled_all) {
        EXPECT_ERROR(f6, "f6 (promise rejected after the runtime was freed)", EFAULT, "late 6");
        EXPECT_SAME(t6, "t6 (late then of f6)", f6);
        if (k6 != NULL && fut_state(f6) == FUT_REJECTED) {
            EXPECT_VALUE(k6, "k6 (late catch of f6)", TU_PTR(1000 + EFAULT));
            if (fut_state(k6) == FUT_RESOLVED) {
                V(w->catch_code[2] == EFAULT);
                V(strcmp(w->catch_msg[2], fut_message(f6)) == 0);
            }
        }
        if (t6b != NULL && fut_state(k6) == FUT_RESOLVED)
            EXPECT_VALUE(t6b, "t6b (late then of k6)", TU_PTR(1000 + EFAULT + 1));
        EXPECT_SAME(n6, "n6 (late finally of f6)", f6);
        V(atomic_load(&w->fin_runs) == fins_made + (n6 != NULL));
        V(atomic_load(&w->late_off_thread) == 0);
        EXPECT_CANCELLED(s8, "s8 (sleep made after the runtime was freed)");
        EXPECT_CANCELLED(co4, "co4 (coroutine suspended when the runtime was freed)");
        if (f10 != NULL && !(fut_state(f10) == FUT_REJECTED && fut_error(f10) == FUT_EBROKEN))
            EXPECT_CANCELLED(f10, "f10 (awaited by co4: cancelled with it, or dropped)");
        EXPECT_CANCELLED(s_free, "s_free (sleep pending when the runtime was freed)");
        EXPECT_ERROR(to_free, "to_free (timeout undecided when the runtime was freed)", ESHUTDOWN,
                     "the runtime shut down: the timeout can no longer fire");
        EXPECT_ERROR(f11, "f11 (promise dropped; its timeout left it alone)", FUT_EBROKEN,
                     "broken promise: dropped before it settled");
        EXPECT_ERROR(to7, "to7 (timeout made after the runtime was freed)", ESHUTDOWN,
                     "the runtime shut down: the timeout can no longer fire");
        EXPECT_ERROR(f7, "f7 (late promise dropped)", FUT_EBROKEN,
                     "broken promise: dropped before it settled");
    }
    /* The last release frees rt: LeakSanitizer sees if it does not. */
    for (i = 0; i < w->nheld; i++)
        if (!(w->held[i] == t6 && g_selftest_leak)) /* the self-test leaks t6 */
            fut_release(w->held[i]);
    w->nheld = 0;
}

/* ------------------------------------------------------------------------
 * Runs
 * ---------------------------------------------------------------------- */

typedef struct run_result {
    unsigned long seen[2];   /* hook calls */
    unsigned long failed[2]; /* refused */
    unsigned viol;           /* violations (0: fine) */
    int hung;
    int leaked;              /* LeakSanitizer found something */
    char first[1024];
} run_result;

static void run_once(int what, unsigned long k, int mode, run_result *r)
{
    wl *w = calloc(1, sizeof *w);
    int i;

    ck_assert_ptr_nonnull(w);
    viol_reset();
    for (i = 0; i < 2; i++) {
        atomic_store(&g_seen[i], 0);
        atomic_store(&g_failed[i], 0);
        atomic_store(&g_k[i], i == what ? k : 0);
        atomic_store(&g_mode[i], i == what ? mode : FAIL_NONE);
    }
    g_cur_what = what;
    g_cur_k = k;
    g_cur_mode = mode;
    fut__alloc_set_hook(alloc_hook);
    fut__thread_set_hook(thread_hook);
    workload(w);
    fut__alloc_set_hook(NULL);
    fut__thread_set_hook(NULL);
    free(w);

    memset(r, 0, sizeof *r);
    for (i = 0; i < 2; i++) {
        r->seen[i] = atomic_load(&g_seen[i]);
        r->failed[i] = atomic_load(&g_failed[i]);
    }
    pthread_mutex_lock(&v_lock);
    r->viol = v_count;
    r->hung = v_hung;
    memcpy(r->first, v_first, sizeof r->first);
    pthread_mutex_unlock(&v_lock);
#if TU_ASAN
    /* Every thread of the run has been joined: what is unreachable now
     * was leaked by this run. */
    r->leaked = __lsan_do_recoverable_leak_check() != 0;
#endif
    g_cur_what = -1;
}

static int run_bad(const run_result *r)
{
    return r->viol != 0 || r->hung || r->leaked;
}

static void run_describe(char *buf, size_t n, int what, unsigned long k, int mode,
                         const run_result *r)
{
    snprintf(buf, n,
             "%s k=%lu (%s%s) refused %lu of %lu; %u violation(s)%s%s; first: %s"
             "\n  reproduce: FUT_ALLOC_FAIL_K=%lu CK_RUN_CASE=%s tests/test_alloc_fail",
             what_name[what], k, mode_name[mode], atomic_load(&g_slow_ms) ? ", slowly" : "",
             r->failed[what], r->seen[what], r->viol, r->hung ? ", a hang" : "",
             r->leaked ? ", a LEAK (see the LeakSanitizer report above)" : "",
             r->first[0] ? r->first : "-", k, g_case);
}

/* Crash reports name the run. */
static void say_current(void)
{
    char buf[200];
    int n;

    if (g_cur_what < 0)
        return;
    n = snprintf(buf, sizeof buf,
                 "\ntest_alloc_fail: crashed in the run refusing %s k=%lu (%s); reproduce with "
                 "FUT_ALLOC_FAIL_K=%lu\n",
                 what_name[g_cur_what], g_cur_k, mode_name[g_cur_mode], g_cur_k);
    if (n > 0)
        (void)!write(2, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

#if !TU_ASAN
static void on_crash(int sig)
{
    say_current();
    signal(sig, SIG_DFL);
    raise(sig);
}
#endif

static void install_crash_report(void)
{
#if TU_ASAN
    __asan_set_death_callback(say_current);
#else
    signal(SIGSEGV, on_crash);
    signal(SIGBUS, on_crash);
    signal(SIGABRT, on_crash);
    signal(SIGFPE, on_crash);
#endif
}



/* The counts of a run with nothing refused, the most of a few runs (they
 * differ a little with thread timing); the runs must pass every check. */
static void count_sites(unsigned long *n_alloc, unsigned long *n_thread)
{
    run_result r;
    char buf[1500];
    int i;

    *n_alloc = *n_thread = 0;
    for (i = 0; i < 3; i++) {
        run_once(ON_ALLOC, 0, FAIL_NONE, &r);
        run_describe(buf, sizeof buf, ON_ALLOC, 0, FAIL_NONE, &r);
        ck_assert_msg(!run_bad(&r), "the workload fails with nothing refused: %s", buf);
        ck_assert_uint_eq(r.failed[ON_ALLOC] + r.failed[ON_THREAD], 0);
        if (r.seen[ON_ALLOC] > *n_alloc)
            *n_alloc = r.seen[ON_ALLOC];
        if (r.seen[ON_THREAD] > *n_thread)
            *n_thread = r.seen[ON_THREAD];
    }
    ck_assert_uint_gt(*n_alloc, 0);
    ck_assert_uint_gt(*n_thread, 0);
}

/* Keep-going mode: the run in a child of its own, so that a leak, a
 * crash or a hang of one k does not spoil the next. Returns 0 if fine,
 * 4 if fine and a failure was injected, else 1 (buf says why). */
static int run_in_child(int what, unsigned long k, int mode, char *buf, size_t n)
{
    int fds[2], status;
    pid_t pid;
    ssize_t got;
    size_t len = 0;

    ck_assert_int_eq(pipe(fds), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        run_result r;
        char msg[1500];
        close(fds[0]);
        alarm((unsigned)(TU_WAIT_MS / 1000u) * 3u);
        run_once(what, k, mode, &r);
        if (!run_bad(&r))
            _exit(r.failed[what] != 0 ? 4 : 0);
        run_describe(msg, sizeof msg, what, k, mode, &r);
        (void)!write(fds[1], msg, strlen(msg));
        _exit(1);
    }
    close(fds[1]);
    buf[0] = '\0';
    while (len + 1 < n && (got = read(fds[0], buf + len, n - 1 - len)) > 0)
        len += (size_t)got;
    buf[len] = '\0';
    close(fds[0]);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    if (WIFEXITED(status) && (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 4))
        return WEXITSTATUS(status);
    if (buf[0] == '\0')
        snprintf(buf, n, "%s k=%lu (%s): the child %s %d", what_name[what], k, mode_name[mode],
                 WIFSIGNALED(status) ? "died of signal" : "exited with",
                 WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    return 1;
}

/* Refuse the k-th allocation (or thread creation) for every k. */
static void sweep(const char *case_name, int what, int mode, unsigned slow_ms)
{
    unsigned long n_alloc, n_thread, n, top, k, cap, only, runs = 0, hit = 0, bad = 0;
    unsigned long round, rounds = env_ulong("FUT_ALLOC_FAIL_ROUNDS", 2);
    int keep_going = env_ulong("FUT_ALLOC_FAIL_KEEP_GOING", 0) != 0;
    uint64_t t0 = tu_now_ns();
    char buf[1500];

    g_case = case_name;
    g_selftest_leak = env_ulong("FUT_ALLOC_FAIL_SELFTEST_LEAK", 0) != 0;
    install_crash_report();
    fut_set_unobserved_hook(tu_quiet_unobserved, NULL);
    count_sites(&n_alloc, &n_thread);
    g_print_stack = env_ulong("FUT_ALLOC_FAIL_STACK", 0) != 0;
    n = what == ON_ALLOC ? n_alloc : n_thread;
    /* A margin: the counts move a little with thread timing. */
    top = n + 4 + n / 8;
    cap = env_ulong("FUT_ALLOC_FAIL_MAX_K", 0);
    if (cap != 0 && top > cap)
        top = cap;
    only = env_ulong("FUT_ALLOC_FAIL_K", 0);
    if (only != 0 || rounds == 0)
        rounds = 1;
    atomic_store(&g_slow_ms, slow_ms);
    /* Every k, then every k again: the sites move with thread timing, so
     * a second round refuses a few other ones. */
    for (round = 0; round < rounds; round++)
    for (k = only ? only : 1; k <= (only ? only : top); k++) {
        run_result r;
        runs++;
        if (keep_going) {
            int rc = run_in_child(what, k, mode, buf, sizeof buf);
            if (rc == 4)
                hit++;
            else if (rc != 0) {
                bad++;
                fprintf(stderr, "test_alloc_fail: FAILED: %s\n", buf);
            }
            continue;
        }
        uint64_t t1 = tu_now_ns();
        run_once(what, k, mode, &r);
        if (r.failed[what] != 0)
            hit++;
        if (verbose())
            fprintf(stderr,
                    "test_alloc_fail: %s k=%lu (%s): refused %lu of %lu, %u violation(s), %.1f ms\n",
                    what_name[what], k, mode_name[mode], r.failed[what], r.seen[what], r.viol,
                    (double)(tu_now_ns() - t1) / 1e6);
        if (run_bad(&r)) {
            run_describe(buf, sizeof buf, what, k, mode, &r);
            ck_abort_msg("%s", buf);
        }
    }
    atomic_store(&g_slow_ms, 0);
    printf("test_alloc_fail: %s: %s sites counted %lu (%s: %lu); refused %s%s for k = %lu..%lu, "
           "%lu round(s): %lu run(s), %lu injected a failure, %lu failed; %.2f s\n",
           case_name, what_name[what], n, what_name[!what], what == ON_ALLOC ? n_thread : n_alloc,
           mode_name[mode], slow_ms ? " (slowly)" : "", only ? only : 1, only ? only : top, rounds,
           runs, hit, bad, (double)(tu_now_ns() - t0) / 1e9);
    fflush(stdout);
    fut_set_unobserved_hook(NULL, NULL);
    ck_assert_msg(bad == 0, "%lu run(s) failed (listed on stderr)", bad);
}

START_TEST(test_count)
{
    unsigned long n_alloc, n_thread;

    install_crash_report();
    fut_set_unobserved_hook(tu_quiet_unobserved, NULL);
    count_sites(&n_alloc, &n_thread);
    printf("test_alloc_fail: the workload makes %lu allocations and %lu thread creations\n",
           n_alloc, n_thread);
    fflush(stdout);
    fut_set_unobserved_hook(NULL, NULL);
}
END_TEST

START_TEST(test_alloc_once)
{
    sweep("alloc_once", ON_ALLOC, FAIL_ONCE, 0);
}
END_TEST

START_TEST(test_alloc_from)
{
    sweep("alloc_from", ON_ALLOC, FAIL_FROM, 0);
}
END_TEST

START_TEST(test_thread_once)
{
    sweep("thread_once", ON_THREAD, FAIL_ONCE, 0);
}
END_TEST

START_TEST(test_thread_from)
{
    sweep("thread_from", ON_THREAD, FAIL_FROM, 0);
}
END_TEST

/* Thread creations that fail after 20 ms: submits made meanwhile count on
 * the creation in progress (the blocking lane's stranded jobs). */
START_TEST(test_thread_once_slow)
{
    sweep("thread_once_slow", ON_THREAD, FAIL_ONCE, 20);
}
END_TEST

START_TEST(test_thread_from_slow)
{
    sweep("thread_from_slow", ON_THREAD, FAIL_FROM, 20);
}
END_TEST

/* ------------------------------------------------------------------------
 * The default runtime (rt NULL): made on first use; a failed attempt is
 * not remembered, the next use tries again. Each test runs in a process
 * of its own (Check's fork mode), where no default runtime exists yet.
 * ---------------------------------------------------------------------- */

static int no_fork_mode(void)
{
    const char *f = getenv("CK_FORK");
    return f != NULL && strcmp(f, "no") == 0;
}

/* Every call on NULL fails with err while every allocation (ON_ALLOC) or
 * thread creation (ON_THREAD) is refused, then, refusing only the k-th of
 * each attempt for k = 1, 2, ..., until an attempt succeeds: each failed
 * attempt fails with err and leaks nothing; the first success makes a
 * default runtime that works. */
static void default_runtime_sweep(int what)
{
    int err = what == ON_ALLOC ? ENOMEM : EAGAIN;
    fut_future *f = NULL;
    fut_promise *p;
    unsigned long k;
    void *res = TU_PTR(1);
    int i;

    if (no_fork_mode()) /* another test may have made the default runtime */
        return;
    install_crash_report();
    fut_set_unobserved_hook(tu_quiet_unobserved, NULL);
    for (i = 0; i < 2; i++) {
        atomic_store(&g_seen[i], 0);
        atomic_store(&g_failed[i], 0);
        atomic_store(&g_k[i], i == what ? 1 : 0);
        atomic_store(&g_mode[i], i == what ? FAIL_FROM : FAIL_NONE);
    }
    fut__alloc_set_hook(alloc_hook);
    fut__thread_set_hook(thread_hook);

    /* Everything refused. */
    errno = 0;
    ck_assert_ptr_null(fut_promise_new(NULL));
    ck_assert_int_eq(errno, err);
    errno = 0;
    ck_assert_ptr_null(fut_submit(NULL, work_value, TU_PTR(1)));
    ck_assert_int_eq(errno, err);
    errno = 0;
    ck_assert_ptr_null(fut_sleep(NULL, 0.001));
    ck_assert_int_eq(errno, err);
    errno = 0;
    ck_assert_ptr_null(fut_gather(NULL, NULL, 0, 0));
    ck_assert_int_eq(errno, err);
    errno = 0;
    ck_assert_ptr_null(fut_async(NULL, coro_value, NULL));
    ck_assert_int_eq(errno, err);
    ck_assert_int_eq(fut_run(NULL, coro_value, NULL, &res), err);
    ck_assert_int_eq(fut_runtime_set_stack_size(NULL, 64 * 1024), err);
    ck_assert_ptr_null(fut_runtime_pool(NULL));
    ck_assert_uint_eq(fut_runtime_live(NULL), 0);
#if TU_ASAN
    ck_assert_msg(__lsan_do_recoverable_leak_check() == 0,
                  "failed attempts to make the default runtime leaked (see above)");
#endif

    /* Only the k-th of an attempt refused. */
    for (k = 1; k < 1000; k++) {
        atomic_store(&g_seen[what], 0);
        atomic_store(&g_mode[what], FAIL_ONCE);
        atomic_store(&g_k[what], k);
        errno = 0;
        f = fut_submit(NULL, work_value, TU_PTR(3));
        if (f != NULL)
            break;
        ck_assert_msg(errno == err || (what == ON_ALLOC && errno == EAGAIN),
                      "fut_submit(NULL) with the %s k=%lu refused: NULL with errno %d (%s)",
                      what_name[what], k, errno, strerror(errno));
#if TU_ASAN
        ck_assert_msg(__lsan_do_recoverable_leak_check() == 0,
                      "a failed attempt (%s k=%lu refused) leaked (see above)", what_name[what], k);
#endif
    }
    fut__alloc_set_hook(NULL);
    fut__thread_set_hook(NULL);
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_gt(k, 1); /* the first attempts failed */
    TU_SETTLE(f);
    ck_assert_uint_eq(fut_state(f), FUT_RESOLVED);
    ck_assert_ptr_eq(fut_value(f), TU_PTR(3));
    fut_release(f);
    /* It works: a promise, a coroutine. */
    p = fut_promise_new(NULL);
    ck_assert_ptr_nonnull(p);
    fut_promise_free(p);
    ck_assert_int_eq(fut_run(NULL, coro_value, TU_PTR(4), &res), 0);
    ck_assert_ptr_eq(res, TU_PTR(4));
    printf("test_alloc_fail: default runtime: made at the attempt refusing %s k=%lu\n",
           what_name[what], k);
    fflush(stdout);
    fut_set_unobserved_hook(NULL, NULL);
}

START_TEST(test_default_rt_alloc)
{
    default_runtime_sweep(ON_ALLOC);
}
END_TEST

START_TEST(test_default_rt_thread)
{
    default_runtime_sweep(ON_THREAD);
}
END_TEST

static Suite *alloc_fail_suite(void)
{
    Suite *s = suite_create("alloc_fail");
    TCase *tc;

    tc = tu_tcase(s, "count", 60);
    tcase_add_test(tc, test_count);
    tc = tu_tcase(s, "alloc_once", 300);
    tcase_add_test(tc, test_alloc_once);
    tc = tu_tcase(s, "alloc_from", 300);
    tcase_add_test(tc, test_alloc_from);
    tc = tu_tcase(s, "thread_once", 120);
    tcase_add_test(tc, test_thread_once);
    tc = tu_tcase(s, "thread_from", 120);
    tcase_add_test(tc, test_thread_from);
    tc = tu_tcase(s, "thread_once_slow", 120);
    tcase_add_test(tc, test_thread_once_slow);
    tc = tu_tcase(s, "thread_from_slow", 120);
    tcase_add_test(tc, test_thread_from_slow);
    tc = tu_tcase(s, "default_rt_alloc", 60);
    tcase_add_test(tc, test_default_rt_alloc);
    tc = tu_tcase(s, "default_rt_thread", 60);
    tcase_add_test(tc, test_default_rt_thread);
    return s;
}

int main(void)
{
    return tu_run_suite(alloc_fail_suite());
}
