/* test_fork.c - fork() and runtimes, the matrix: {the default runtime used before the fork, a runtime made before the fork, a runtime made in the child, the default runtime first used in the child} x {compute work pending, blocking work pending, a 10 s sleep pending, a coroutine suspended in fut_await on a promise, an unsettled promise with a continuation, settled futures}. In the child every call on the parent's runtimes, futures and promises fails at once with FUT_EFORKED (or reads them, as the reading calls do), the default runtime is a fresh one, a runtime made there works fully, and the parent's side keeps working. Also the issue's one-line reproducer, a fork of a fork, exit() in a child, and forks while another thread sets the unobserved-error hook. */
#include "testutil.h"

#include <sys/mman.h>
#include <sys/wait.h>

#if TU_TSAN
/* The child starts new runtimes (threads) after a multi-threaded fork;
 * ThreadSanitizer kills such a child unless told not to. In that child
 * TSan ignores every access (it cannot work there), so what it checks is
 * the parent's side. */
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
    return "die_after_fork=0";
}
#endif

/* A hung child gets SIGALRM after this many seconds: a hang fails the
 * test instead of stalling it. A passing child takes well under 1 s. */
#define CHILD_ALARM_S (5 * TU_SLOW)

/* In a child: SIGALRM after s seconds kills it. Check's runner installs a
 * SIGALRM handler (its timeout) that kills the whole process group, the
 * test's process included, and the child inherits it: put the default
 * action back first, so that only the hung child dies. */
static void child_alarm(unsigned s)
{
    signal(SIGALRM, SIG_DFL);
    alarm(s);
}

/* Waits that must succeed (a bound against hangs only). */
#define WAIT_S (TU_WAIT_MS / 1000.0)

/* ------------------------------------------------------------------------
 * Checks that record instead of aborting. The child of a fork cannot use
 * Check's assertions (they report to the runner through the test process),
 * so every check, in the child and on the test's own side, goes into a
 * MAP_SHARED report: the step being run and the first failures. The
 * test's side turns it into one ck_abort_msg. Only the thread that forked
 * (the test's main thread, the child's only thread) writes it; checks on
 * other threads (work, continuations, coroutines) use W_CHECK.
 * ---------------------------------------------------------------------- */

#define NOTE_LEN 320
#define MAX_FAILS 8

struct report {
    char step[NOTE_LEN];           /* what the writer is doing now */
    unsigned checks;               /* checks made */
    unsigned nfail;                /* checks failed */
    char fail[MAX_FAILS][NOTE_LEN]; /* the first ones */
};

static struct report *rep;

/* The line of the first W_CHECK that failed (0: none), per process. */
static atomic_int wbad_line;

#define W_CHECK(cond)                                               \
    do {                                                            \
        if (!(cond)) {                                              \
            int w_zero_ = 0;                                        \
            atomic_compare_exchange_strong(&wbad_line, &w_zero_, __LINE__); \
        }                                                           \
    } while (0)

static const char *errname(int e)
{
    static char buf[4][24];
    static unsigned k;

    switch (e) {
    case 0: return "0";
    case FUT_EFORKED: return "FUT_EFORKED";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EALREADY: return "EALREADY";
    case ECANCELED: return "ECANCELED";
    case EDEADLK: return "EDEADLK";
    case EINVAL: return "EINVAL";
    case EPERM: return "EPERM";
    case EBUSY: return "EBUSY";
    case ENOMEM: return "ENOMEM";
    case EAGAIN: return "EAGAIN";
    case EIO: return "EIO";
    case EINTR: return "EINTR";
    case ESHUTDOWN: return "ESHUTDOWN";
    case FUT_EBROKEN: return "FUT_EBROKEN";
    default: break;
    }
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%d", e);
    return buf[k];
}

static const char *statename(int s)
{
    switch (s) {
    case FUT_PENDING: return "PENDING";
    case FUT_RESOLVED: return "RESOLVED";
    case FUT_REJECTED: return "REJECTED";
    case FUT_CANCELLED: return "CANCELLED";
    default: return "?";
    }
}

static void step(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void step(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rep->step, sizeof rep->step, fmt, ap);
    va_end(ap);
}

static void cfail(int line, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void cfail(int line, const char *fmt, ...)
{
    char msg[NOTE_LEN], where[NOTE_LEN], all[2 * NOTE_LEN + 32];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    memcpy(where, rep->step, sizeof where);
    where[sizeof where - 1] = '\0';
    if (rep->nfail < MAX_FAILS) {
        int n = snprintf(all, sizeof all, "line %d, %s: %s", line, where, msg);
        (void)n;
        memcpy(rep->fail[rep->nfail], all, NOTE_LEN - 1);
        rep->fail[rep->nfail][NOTE_LEN - 1] = '\0';
    }
    rep->nfail++;
}

#define C_TRUE(c)                                \
    do {                                         \
        rep->checks++;                           \
        if (!(c))                                \
            cfail(__LINE__, "%s", #c);           \
    } while (0)

#define C_EQ(a, b)                                                                 \
    do {                                                                           \
        long long c_a_ = (long long)(a), c_b_ = (long long)(b);                    \
        rep->checks++;                                                             \
        if (c_a_ != c_b_)                                                          \
            cfail(__LINE__, "%s == %s (%lld != %lld)", #a, #b, c_a_, c_b_);        \
    } while (0)

#define C_ERR(a, b)                                                                \
    do {                                                                           \
        int c_a_ = (a), c_b_ = (b);                                                \
        rep->checks++;                                                             \
        if (c_a_ != c_b_)                                                          \
            cfail(__LINE__, "%s returned %s, expected %s", #a, errname(c_a_), errname(c_b_)); \
    } while (0)

#define C_PTR(a, b)                                                                \
    do {                                                                           \
        const void *c_a_ = (a), *c_b_ = (b);                                       \
        rep->checks++;                                                             \
        if (c_a_ != c_b_)                                                          \
            cfail(__LINE__, "%s == %s (%p != %p)", #a, #b, c_a_, c_b_);            \
    } while (0)

/* A future that must be already rejected with FUT_EFORKED; released. */
#define C_FORKED(expr) c_forked((expr), #expr, __LINE__)
static void c_forked(fut_future *f, const char *what, int line)
{
    int st, e;

    rep->checks++;
    if (f == NULL) {
        cfail(line, "%s returned NULL (errno %s), expected a future rejected with FUT_EFORKED",
              what, errname(errno));
        return;
    }
    st = fut_state(f);
    e = fut_error(f);
    if (st != FUT_REJECTED || e != FUT_EFORKED)
        cfail(line, "%s gave a future %s with error %s, expected REJECTED with FUT_EFORKED", what,
              statename(st), errname(e));
    fut_release(f);
}

/* f's state, value and error (the error of a pending or resolved future
 * is 0). */
#define C_OUTCOME(f, st, val, err) c_outcome((f), #f, (st), (val), (err), __LINE__)
static void c_outcome(fut_future *f, const char *what, int st, const void *val, int err, int line)
{
    int s, e;
    void *v;

    rep->checks++;
    if (f == NULL) {
        cfail(line, "%s is NULL", what);
        return;
    }
    s = fut_state(f);
    v = fut_value(f);
    e = fut_error(f);
    if (s != st || v != val || e != err)
        cfail(line, "%s is %s, value %p, error %s (\"%s\"); expected %s, value %p, error %s", what,
              statename(s), v, errname(e), fut_message(f), statename(st), val, errname(err));
}

/* Wait (bounded) for f to settle. */
#define C_SETTLE(f) C_ERR(fut_wait((f), WAIT_S), 0)

static void rep_map(void)
{
    void *m = mmap(NULL, sizeof *rep, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert_msg(m != MAP_FAILED, "mmap: %s", strerror(errno));
    rep = m;
    memset(rep, 0, sizeof *rep);
    atomic_store(&wbad_line, 0);
}

static void rep_unmap(void)
{
    munmap(rep, sizeof *rep);
    rep = NULL;
}

/* The failures recorded so far, as one message. */
static void rep_text(char *out, size_t len)
{
    size_t used = 0;
    int n;

    out[0] = '\0';
    for (unsigned i = 0; i < rep->nfail && i < MAX_FAILS && used < len; i++) {
        n = snprintf(out + used, len - used, "\n    %s", rep->fail[i]);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    if (rep->nfail > MAX_FAILS && used < len)
        snprintf(out + used, len - used, "\n    (%u more)", rep->nfail - MAX_FAILS);
}

/* On the test's side: fail the test if a check failed (here or on another
 * thread), then start a new report. */
static void rep_assert(const char *what)
{
    char text[MAX_FAILS * NOTE_LEN + 64];
    int w = atomic_load(&wbad_line);

    if (w != 0 && rep->nfail == 0)
        cfail(w, "a check on another thread failed (W_CHECK at line %d)", w);
    if (rep->nfail != 0) {
        rep_text(text, sizeof text);
        fprintf(stderr, "%s: %u check(s) failed:%s\n", what, rep->nfail, text);
        ck_abort_msg("%s: %u of %u check(s) failed:%s", what, rep->nfail, rep->checks, text);
    }
    memset(rep, 0, sizeof *rep);
}

/* ------------------------------------------------------------------------
 * Functions run by the runtimes
 * ---------------------------------------------------------------------- */

#define VAL_BLOCKER 0x1000u /* + the byte read */
#define PIPE_BYTE 'x'
#define VAL_QUEUED 0x77u
#define VAL_SETTLED 42u
#define VAL_CORO_IN 41u     /* the coroutine returns what it awaited + 1 */
#define VAL_PROMISE 7u
#define CONT_ADD 1000u      /* continuations return value + CONT_ADD */
#define VAL_X 0x55u         /* the fresh runtime's settled future */

struct counts {
    atomic_int then_runs, catch_runs, finally_runs, work_runs, coro_runs;
};

/* Functions handed to the parent's objects in the child: none may run. */
static struct counts never;

static void *ident(void *arg)
{
    return arg;
}

static void *then_ident(void *v, void *arg)
{
    (void)arg;
    return v;
}

static void *raise_fn(void *arg)
{
    return fut_raise((int)(intptr_t)arg, "raised %d", (int)(intptr_t)arg);
}

static void *count_work(void *arg)
{
    struct counts *c = arg;
    atomic_fetch_add(&c->work_runs, 1);
    return NULL;
}

static void *count_coro(void *arg)
{
    struct counts *c = arg;
    atomic_fetch_add(&c->coro_runs, 1);
    return NULL;
}

static void *then_add(void *v, void *arg)
{
    struct counts *c = arg;
    W_CHECK(fut_on_dispatcher(NULL));
    atomic_fetch_add(&c->then_runs, 1);
    return TU_PTR(TU_UINT(v) + CONT_ADD);
}

static void *catch_count(int code, const char *message, void *arg)
{
    struct counts *c = arg;
    (void)code;
    (void)message;
    atomic_fetch_add(&c->catch_runs, 1);
    return TU_PTR(0xBAD);
}

static void finally_count(fut_future *f, void *arg)
{
    struct counts *c = arg;
    W_CHECK(f != NULL && fut_state(f) != FUT_PENDING);
    atomic_fetch_add(&c->finally_runs, 1);
}

/* ------------------------------------------------------------------------
 * The states of the matrix. make_state builds one on a runtime and waits
 * until it is in place (work running or queued, the coroutine suspended);
 * release_state lets it finish; verify_state checks the results. The test
 * uses them on the parent's runtime before the fork (then, after the child
 * is done, to show the parent unaffected), and the child on a fresh one.
 * ---------------------------------------------------------------------- */

enum pend {
    PEND_COMPUTE,
    PEND_BLOCKING,
    PEND_SLEEP,
    PEND_CORO,
    PEND_PROMISE,
    PEND_SETTLED,
    NPEND
};

static const char *const pend_names[NPEND] = {
    [PEND_COMPUTE] = "compute work pending",
    [PEND_BLOCKING] = "blocking work pending",
    [PEND_SLEEP] = "a sleep pending",
    [PEND_CORO] = "a coroutine suspended in fut_await",
    [PEND_PROMISE] = "a promise with a continuation",
    [PEND_SETTLED] = "settled futures",
};

struct st {
    int pend;
    fut_runtime *rt;     /* as passed to the calls (NULL: the default runtime) */
    double sleep_s;
    uint64_t t0;         /* PEND_SLEEP: when it was made */
    int fd[2];           /* work blocks reading a byte from fd[0] */
    unsigned nwork;      /* work futures blocked on the pipe */
    fut_future **work;
    fut_future *queued;  /* PEND_COMPUTE: queued behind the blocked workers */
    fut_future *main;    /* the state's future (settled for PEND_SETTLED) */
    fut_promise *prom;   /* PEND_CORO, PEND_PROMISE */
    fut_future *prom_f;  /* its future */
    fut_future *cont;    /* PEND_PROMISE: fut_then on prom_f */
    fut_future *rejected; /* PEND_SETTLED: a rejected one */
    fut_future *gather;  /* fut_gather(rt, {main}) */
    atomic_uint started; /* work started / the coroutine reached its await */
    struct counts cnt;   /* the continuation's runs */
};

static void *blocker(void *arg)
{
    struct st *st = arg;
    unsigned char c = 0;
    ssize_t n;

    atomic_fetch_add(&st->started, 1);
    do
        n = read(st->fd[0], &c, 1);
    while (n < 0 && errno == EINTR);
    W_CHECK(n == 1);
    return TU_PTR(VAL_BLOCKER + c);
}

static void *coro_await_promise(void *arg)
{
    struct st *st = arg;
    int err = -1;
    void *v;

    W_CHECK(fut_in_coroutine());
    W_CHECK(fut_yield() == 0);
    atomic_store(&st->started, 1);
    v = fut_await(st->prom_f, &err);
    if (err != 0)
        return fut_raise(err, "the awaited promise failed");
    return TU_PTR(TU_UINT(v) + 1);
}

/* The value the state's main future gets. */
static void *main_value(const struct st *st)
{
    switch (st->pend) {
    case PEND_COMPUTE:
    case PEND_BLOCKING: return TU_PTR(VAL_BLOCKER + PIPE_BYTE);
    case PEND_CORO: return TU_PTR(VAL_CORO_IN + 1);
    case PEND_PROMISE: return TU_PTR(VAL_PROMISE);
    case PEND_SETTLED: return TU_PTR(VAL_SETTLED);
    default: return NULL;
    }
}

/* Wait (bounded) for cond. */
#define POLL_OK(cond) ({ bool ok_; TU_POLL(ok_, (cond), TU_WAIT_MS); ok_; })

/* Make sure the dispatcher of rt has run everything queued so far. */
static void barrier(fut_runtime *rt)
{
    fut_promise *p = fut_promise_new(rt);
    fut_future *pf, *t;

    C_TRUE(p != NULL);
    if (p == NULL)
        return;
    pf = fut_promise_future(p);
    C_ERR(fut_promise_resolve(p, NULL), 0);
    t = fut_then(pf, then_ident, NULL);
    C_TRUE(t != NULL);
    if (t != NULL)
        C_SETTLE(t);
    fut_release(t);
    fut_release(pf);
    fut_promise_free(p);
}

static void make_state(struct st *st, fut_runtime *rt, int pend, double sleep_s)
{
    memset(st, 0, sizeof *st);
    atomic_init(&st->started, 0);
    st->pend = pend;
    st->rt = rt;
    st->sleep_s = sleep_s;
    st->fd[0] = st->fd[1] = -1;
    step("make the state \"%s\"", pend_names[pend]);
    switch (pend) {
    case PEND_COMPUTE:
    case PEND_BLOCKING:
        C_ERR(pipe(st->fd) == 0 ? 0 : errno, 0);
        /* every compute worker blocked, and a job queued behind them */
        st->nwork = pend == PEND_COMPUTE ? fut_pool_compute_threads(fut_runtime_pool(rt)) : 2;
        C_TRUE(st->nwork > 0);
        st->work = calloc(st->nwork ? st->nwork : 1, sizeof *st->work);
        C_TRUE(st->work != NULL);
        if (st->work == NULL)
            return;
        for (unsigned i = 0; i < st->nwork; i++) {
            st->work[i] = pend == PEND_COMPUTE ? fut_submit(rt, blocker, st)
                                               : fut_submit_blocking(rt, blocker, st);
            C_TRUE(st->work[i] != NULL);
        }
        if (pend == PEND_COMPUTE) {
            st->queued = fut_submit(rt, ident, TU_PTR(VAL_QUEUED));
            C_TRUE(st->queued != NULL);
        }
        C_TRUE(POLL_OK(atomic_load(&st->started) == st->nwork));
        st->main = fut_retain(st->work[0]);
        break;
    case PEND_SLEEP:
        st->t0 = tu_now_ns();
        st->main = fut_sleep(rt, sleep_s);
        break;
    case PEND_CORO:
        st->prom = fut_promise_new(rt);
        C_TRUE(st->prom != NULL);
        st->prom_f = fut_promise_future(st->prom);
        st->main = fut_async(rt, coro_await_promise, st);
        C_TRUE(POLL_OK(atomic_load(&st->started) == 1));
        break;
    case PEND_PROMISE:
        st->prom = fut_promise_new(rt);
        C_TRUE(st->prom != NULL);
        st->prom_f = fut_promise_future(st->prom);
        st->cont = fut_then(st->prom_f, then_add, &st->cnt);
        C_TRUE(st->cont != NULL);
        st->main = fut_retain(st->prom_f);
        break;
    case PEND_SETTLED:
        st->main = fut_submit(rt, ident, TU_PTR(VAL_SETTLED));
        st->rejected = fut_submit(rt, raise_fn, TU_PTR(EIO));
        C_TRUE(st->rejected != NULL);
        if (st->rejected != NULL)
            C_SETTLE(st->rejected);
        break;
    default:
        break;
    }
    C_TRUE(st->main != NULL);
    if (st->main == NULL)
        return;
    if (pend == PEND_SETTLED)
        C_SETTLE(st->main);
    st->gather = fut_gather(rt, &st->main, 1, 0);
    C_TRUE(st->gather != NULL);
    if (pend == PEND_SETTLED && st->gather != NULL)
        C_SETTLE(st->gather);
    barrier(rt); /* the coroutine is suspended, the continuation attached */
    if (pend != PEND_SETTLED)
        C_OUTCOME(st->main, FUT_PENDING, NULL, 0);
}

/* Let the state finish: a long sleep is cancelled instead. */
static void release_state(struct st *st)
{
    step("release the state \"%s\"", pend_names[st->pend]);
    switch (st->pend) {
    case PEND_COMPUTE:
    case PEND_BLOCKING:
        for (unsigned i = 0; i < st->nwork; i++) {
            char c = PIPE_BYTE;
            C_EQ(write(st->fd[1], &c, 1), 1);
        }
        break;
    case PEND_SLEEP:
        if (st->sleep_s > 1)
            C_ERR(fut_cancel(st->main), 0);
        break;
    case PEND_CORO:
        C_ERR(fut_promise_resolve(st->prom, TU_PTR(VAL_CORO_IN)), 0);
        break;
    case PEND_PROMISE:
        C_ERR(fut_promise_resolve(st->prom, TU_PTR(VAL_PROMISE)), 0);
        break;
    default:
        break;
    }
}

static void verify_state(struct st *st)
{
    void **vals;
    void *mv = main_value(st);

    step("results of the state \"%s\"", pend_names[st->pend]);
    if (st->main == NULL || st->gather == NULL)
        return; /* reported by make_state */
    for (unsigned i = 0; i < st->nwork; i++) {
        C_SETTLE(st->work[i]);
        C_OUTCOME(st->work[i], FUT_RESOLVED, TU_PTR(VAL_BLOCKER + PIPE_BYTE), 0);
    }
    if (st->queued != NULL) {
        C_SETTLE(st->queued);
        C_OUTCOME(st->queued, FUT_RESOLVED, TU_PTR(VAL_QUEUED), 0);
    }
    C_SETTLE(st->main);
    C_SETTLE(st->gather);
    if (st->pend == PEND_SLEEP && st->sleep_s > 1) {
        C_OUTCOME(st->main, FUT_CANCELLED, NULL, ECANCELED);
        C_OUTCOME(st->gather, FUT_REJECTED, NULL, ECANCELED);
        return;
    }
    C_OUTCOME(st->main, FUT_RESOLVED, mv, 0);
    if (st->pend == PEND_SLEEP)
        C_TRUE(tu_now_ns() - st->t0 >= (uint64_t)(st->sleep_s * 1e9));
    C_EQ(fut_state(st->gather), FUT_RESOLVED);
    vals = fut_value(st->gather);
    C_TRUE(vals != NULL);
    if (vals != NULL)
        C_PTR(vals[0], mv);
    if (st->prom_f != NULL) {
        C_SETTLE(st->prom_f);
        C_OUTCOME(st->prom_f, FUT_RESOLVED,
                  TU_PTR(st->pend == PEND_CORO ? VAL_CORO_IN : VAL_PROMISE), 0);
    }
    if (st->cont != NULL) {
        C_SETTLE(st->cont);
        C_OUTCOME(st->cont, FUT_RESOLVED, TU_PTR(VAL_PROMISE + CONT_ADD), 0);
        C_EQ(atomic_load(&st->cnt.then_runs), 1);
    }
    if (st->rejected != NULL) {
        C_OUTCOME(st->rejected, FUT_REJECTED, NULL, EIO);
        C_TRUE(strcmp(fut_message(st->rejected), "raised 5") == 0);
    }
}

/* Drop the futures and the promise of st (not its pipe, not its memory). */
static void release_futures(struct st *st)
{
    for (unsigned i = 0; i < st->nwork; i++)
        fut_release(st->work[i]);
    fut_release(st->queued);
    fut_release(st->main);
    fut_release(st->prom_f);
    fut_release(st->cont);
    fut_release(st->rejected);
    fut_release(st->gather);
    fut_promise_free(st->prom);
}

static void free_state(struct st *st)
{
    release_futures(st);
    free(st->work);
    if (st->fd[0] >= 0)
        close(st->fd[0]);
    if (st->fd[1] >= 0)
        close(st->fd[1]);
    memset(st, 0, sizeof *st);
}

/* Make sure no thread of rt is busy (allocating, holding a lock) when the
 * test forks: its dispatcher has run everything, then parks. Needed by
 * the ASan build (its allocator is not locked around fork(): see
 * test_pool_fork.c's settle). */
static void quiesce(fut_runtime *rt)
{
    barrier(rt);
    tu_sleep_ms(20);
}

/* ------------------------------------------------------------------------
 * Fresh runtimes (made in the child, or the child's default runtime)
 * ---------------------------------------------------------------------- */

struct cctx {
    fut_runtime *rt;     /* the coroutine's runtime (as passed) */
    fut_future *awaited; /* coro_await_other: what it awaits */
    void *v;             /* ... and what fut_await gave */
    int err;
};

static void *coro_main(void *arg)
{
    struct cctx *c = arg;
    fut_future *s, *w;
    int err = -1;
    void *v;

    W_CHECK(fut_in_coroutine());
    W_CHECK(fut_on_dispatcher(c->rt));
    W_CHECK(fut_yield() == 0);
    s = fut_sleep(c->rt, 0.005);
    W_CHECK(s != NULL);
    fut_await(s, &err);
    W_CHECK(err == 0 && fut_state(s) == FUT_RESOLVED);
    fut_release(s);
    w = fut_submit(c->rt, ident, TU_PTR(9));
    v = fut_await(w, &err);
    W_CHECK(err == 0 && v == TU_PTR(9));
    fut_release(w);
    return TU_PTR(TU_UINT(v) + 33);
}

static void *coro_await_other(void *arg)
{
    struct cctx *c = arg;
    c->v = fut_await(c->awaited, &c->err);
    return TU_PTR(1);
}

static void *cancelled_probe(void *arg)
{
    (void)arg;
    return TU_PTR(0x100u + (unsigned)fut_cancelled());
}

static void *resolver_thread(void *arg)
{
    W_CHECK(fut_promise_resolve(arg, TU_PTR(77)) == 0);
    return NULL;
}

/* Every call works on the fresh runtime F (NULL: the default runtime),
 * with the right results. */
static void fresh_runtime_checks(fut_runtime *F, const char *fname)
{
    struct counts fc;
    struct cctx cx = { F, NULL, NULL, 0 };
    fut_future *f, *s, *t;
    fut_promise *p;
    fut_pool *pool;
    tu_cjob jobs[2];
    pthread_t th;
    uint64_t t0;
    void *r;
    int err;

    memset(&fc, 0, sizeof fc);
    step("%s: fut_runtime_set_stack_size before its first coroutine", fname);
    C_ERR(fut_runtime_set_stack_size(F, 65536), 0);
    C_EQ(fut_on_dispatcher(F), 0);

    step("%s: fut_submit", fname);
    f = fut_submit(F, ident, TU_PTR(5));
    C_SETTLE(f);
    C_OUTCOME(f, FUT_RESOLVED, TU_PTR(5), 0);
    fut_release(f);
    step("%s: fut_submit_blocking", fname);
    f = fut_submit_blocking(F, ident, TU_PTR(6));
    C_SETTLE(f);
    C_OUTCOME(f, FUT_RESOLVED, TU_PTR(6), 0);
    fut_release(f);
    step("%s: fut_submit of work that raises", fname);
    f = fut_submit(F, raise_fn, TU_PTR(EIO));
    C_SETTLE(f);
    C_OUTCOME(f, FUT_REJECTED, NULL, EIO);
    C_TRUE(strcmp(fut_message(f), "raised 5") == 0);
    fut_release(f);

    step("%s: fut_sleep(0.02)", fname);
    t0 = tu_now_ns();
    f = fut_sleep(F, 0.02);
    C_SETTLE(f);
    C_OUTCOME(f, FUT_RESOLVED, NULL, 0);
    C_TRUE(tu_now_ns() - t0 >= 20000000u);
    fut_release(f);

    step("%s: fut_timeout(fut_sleep(10), 0.02)", fname);
    s = fut_sleep(F, 10);
    t = fut_timeout(s, 0.02);
    C_SETTLE(t);
    C_OUTCOME(t, FUT_REJECTED, NULL, ETIMEDOUT);
    C_SETTLE(s);
    C_OUTCOME(s, FUT_CANCELLED, NULL, ECANCELED);
    fut_release(t);
    fut_release(s);

    step("%s: fut_cancel of a promise's future with a continuation", fname);
    p = fut_promise_new(F);
    C_TRUE(p != NULL);
    f = fut_promise_future(p);
    t = fut_then(f, then_add, &fc);
    C_ERR(fut_cancel(f), 0);
    C_ERR(fut_cancel(f), EALREADY);
    C_OUTCOME(f, FUT_CANCELLED, NULL, ECANCELED);
    C_SETTLE(t);
    C_OUTCOME(t, FUT_CANCELLED, NULL, ECANCELED);
    C_ERR(fut_promise_resolve(p, NULL), EALREADY);
    C_EQ(atomic_load(&fc.then_runs), 0);
    fut_release(t);
    fut_release(f);
    fut_promise_free(p);

    step("%s: a promise resolved from another thread", fname);
    p = fut_promise_new(F);
    C_TRUE(p != NULL);
    f = fut_promise_future(p);
    C_ERR(pthread_create(&th, NULL, resolver_thread, p), 0);
    C_SETTLE(f);
    C_ERR(pthread_join(th, NULL), 0);
    C_OUTCOME(f, FUT_RESOLVED, TU_PTR(77), 0);
    C_ERR(fut_promise_resolve(p, NULL), EALREADY);
    fut_release(f);
    fut_promise_free(p);

    step("%s: a promise rejected, with fut_catch", fname);
    p = fut_promise_new(F);
    C_TRUE(p != NULL);
    f = fut_promise_future(p);
    t = fut_catch(f, catch_count, &fc);
    C_ERR(fut_promise_reject(p, EIO, "bad %d", 3), 0);
    C_ERR(fut_promise_reject(p, EIO, "again"), EALREADY);
    C_SETTLE(t);
    C_OUTCOME(f, FUT_REJECTED, NULL, EIO);
    C_TRUE(strcmp(fut_message(f), "bad 3") == 0);
    C_OUTCOME(t, FUT_RESOLVED, TU_PTR(0xBAD), 0);
    C_EQ(atomic_load(&fc.catch_runs), 1);
    fut_release(t);
    fut_release(f);
    fut_promise_free(p);

    step("%s: a promise dropped unsettled", fname);
    p = fut_promise_new(F);
    C_TRUE(p != NULL);
    f = fut_promise_future(p);
    fut_promise_free(p);
    C_OUTCOME(f, FUT_REJECTED, NULL, FUT_EBROKEN);
    fut_release(f);

    step("%s: fut_async (yield, await a sleep and work)", fname);
    f = fut_async(F, coro_main, &cx);
    C_SETTLE(f);
    C_OUTCOME(f, FUT_RESOLVED, TU_PTR(42), 0);
    fut_release(f);
    step("%s: fut_run", fname);
    r = NULL;
    C_ERR(fut_run(F, coro_main, &cx, &r), 0);
    C_PTR(r, TU_PTR(42));
    C_ERR(fut_run(F, raise_fn, TU_PTR(EIO), &r), EIO);
    step("%s: fut_await outside a coroutine", fname);
    f = fut_submit(F, ident, TU_PTR(8));
    err = -1;
    C_PTR(fut_await(f, &err), TU_PTR(8));
    C_ERR(err, 0);
    fut_release(f);
    C_ERR(fut_yield(), EPERM);
    C_EQ(fut_in_coroutine(), 0);

    step("%s: fut_cancelled in work and outside", fname);
    f = fut_submit(F, cancelled_probe, NULL);
    C_SETTLE(f);
    C_OUTCOME(f, FUT_RESOLVED, TU_PTR(0x100), 0);
    fut_release(f);
    C_EQ(fut_cancelled(), 0);

    step("%s: the unobserved-error hook", fname);
    {
        atomic_uint unread;
        atomic_init(&unread, 0);
        fut_set_unobserved_hook(tu_quiet_unobserved, &unread);
        p = fut_promise_new(F);
        C_TRUE(p != NULL);
        f = fut_promise_future(p);
        C_ERR(fut_promise_reject(p, EIO, "nobody reads this"), 0);
        fut_promise_free(p);
        fut_release(f); /* unread: the hook reports it */
        C_TRUE(POLL_OK(atomic_load(&unread) == 1));
        fut_set_unobserved_hook(NULL, NULL);
    }

    step("%s: its pool", fname);
    pool = fut_runtime_pool(F);
    C_TRUE(pool != NULL);
    if (pool != NULL) {
        fut_pool_stats ps;
        tu_cjob_init(&jobs[0], NULL);
        tu_cjob_init(&jobs[1], NULL);
        C_ERR(fut_pool_submit(pool, FUT_LANE_COMPUTE, &jobs[0].job, tu_cjob_fn), 0);
        C_ERR(fut_pool_submit(pool, FUT_LANE_BLOCKING, &jobs[1].job, tu_cjob_fn), 0);
        C_ERR(fut_pool_wait_idle(pool), 0);
        C_EQ(atomic_load(&jobs[0].ran), 1);
        C_EQ(atomic_load(&jobs[1].ran), 1);
        C_ERR(fut_pool_stats_get(pool, FUT_LANE_COMPUTE, &ps), 0);
    }
}

/* The state pend built afresh on F works: continuations, a timeout and
 * combinators on its future run once, with the right values. xs: a
 * resolved future of F (VAL_X). */
static void fresh_state_checks(fut_runtime *F, const char *fname, int pend, fut_future *xs)
{
    struct st fs;
    struct counts fc;
    fut_future *t, *c, *fi, *to, *g, *a, *r, *pair[2];
    void **vals;
    void *mv;
    int pending = pend != PEND_SETTLED;

    memset(&fc, 0, sizeof fc);
    make_state(&fs, F, pend, 0.05);
    if (fs.main == NULL || fs.gather == NULL) {
        free_state(&fs);
        return;
    }
    mv = main_value(&fs);
    step("%s, \"%s\": continuations, a timeout, combinators", fname, pend_names[pend]);
    t = fut_then(fs.main, then_add, &fc);
    c = fut_catch(fs.main, catch_count, &fc);
    fi = fut_finally(fs.main, finally_count, &fc);
    to = fut_timeout(fs.main, 30);
    pair[0] = fs.main;
    pair[1] = xs;
    g = fut_gather(F, pair, 2, 0);
    a = fut_any(F, pair, 2, 0);
    r = fut_race(F, pair, 2, 0);
    C_TRUE(t != NULL && c != NULL && fi != NULL && to != NULL && g != NULL && a != NULL && r != NULL);
    if (pending) {
        uint64_t t0 = tu_now_ns();
        int rc = fut_wait(fs.main, 0.01);
        /* A sleep may have fired meanwhile on a loaded machine: then only
         * once its time had come. Everything else waits for release_state. */
        if (pend == PEND_SLEEP && rc == 0) {
            C_TRUE(tu_now_ns() - fs.t0 >= (uint64_t)(fs.sleep_s * 1e9));
        } else {
            C_ERR(rc, ETIMEDOUT);
            C_TRUE(tu_now_ns() - t0 >= 10000000u);
            if (pend != PEND_SLEEP) {
                C_EQ(fut_state(t), FUT_PENDING);
                C_EQ(atomic_load(&fc.then_runs), 0);
            }
        }
    }
    release_state(&fs);
    verify_state(&fs);
    step("%s, \"%s\": results of the continuations, timeout, combinators", fname, pend_names[pend]);
    if (t != NULL && c != NULL && fi != NULL && to != NULL && g != NULL && a != NULL && r != NULL) {
        C_SETTLE(t);
        C_SETTLE(c);
        C_SETTLE(fi);
        C_SETTLE(to);
        C_SETTLE(g);
        C_SETTLE(a);
        C_SETTLE(r);
        C_OUTCOME(t, FUT_RESOLVED, TU_PTR(TU_UINT(mv) + CONT_ADD), 0);
        C_OUTCOME(c, FUT_RESOLVED, mv, 0);
        C_OUTCOME(fi, FUT_RESOLVED, mv, 0);
        C_OUTCOME(to, FUT_RESOLVED, mv, 0);
        C_EQ(fut_state(g), FUT_RESOLVED);
        vals = fut_value(g);
        C_TRUE(vals != NULL);
        if (vals != NULL) {
            C_PTR(vals[0], mv);
            C_PTR(vals[1], TU_PTR(VAL_X));
        }
        C_TRUE(fut_gather_item(g, 0) != NULL && fut_value(fut_gather_item(g, 0)) == mv);
        C_EQ(fut_state(a), FUT_RESOLVED);
        C_EQ(fut_state(r), FUT_RESOLVED);
        if (pending) { /* xs had resolved first */
            C_PTR(fut_value(a), TU_PTR(VAL_X));
            C_PTR(fut_value(r), TU_PTR(VAL_X));
        } else {
            C_TRUE(fut_value(a) == mv || fut_value(a) == TU_PTR(VAL_X));
            C_TRUE(fut_value(r) == mv || fut_value(r) == TU_PTR(VAL_X));
        }
        C_EQ(atomic_load(&fc.then_runs), 1);
        C_EQ(atomic_load(&fc.catch_runs), 0);
        C_EQ(atomic_load(&fc.finally_runs), 1);
    }
    fut_release(t);
    fut_release(c);
    fut_release(fi);
    fut_release(to);
    fut_release(g);
    fut_release(a);
    fut_release(r);
    free_state(&fs);
}

/* ------------------------------------------------------------------------
 * The parent's objects, seen from the child
 * ---------------------------------------------------------------------- */

/* A future of the parent the child holds, and what it was at the fork. */
struct item {
    fut_future *f;
    char name[48];
    int st;            /* its state */
    void *val;         /* its value (PEND_SETTLED's gather: checked apart) */
    int err;           /* its error */
    const char *msg;   /* its message */
    int is_gather;
};

#define MAX_ITEMS 8

static void add_item(struct item *it, unsigned *n, fut_future *f, const char *name, int st,
                     void *val, int err, const char *msg)
{
    if (f == NULL || *n >= MAX_ITEMS)
        return;
    memset(&it[*n], 0, sizeof it[*n]);
    it[*n].f = f;
    snprintf(it[*n].name, sizeof it[*n].name, "%s", name);
    it[*n].st = st;
    it[*n].val = val;
    it[*n].err = err;
    it[*n].msg = msg;
    (*n)++;
}

static unsigned parent_items(struct st *pst, struct item *it)
{
    unsigned n = 0;

    switch (pst->pend) {
    case PEND_COMPUTE:
    case PEND_BLOCKING:
        for (unsigned i = 0; i < pst->nwork && i < 2; i++) {
            char name[48];
            snprintf(name, sizeof name, "running %s work %u",
                     pst->pend == PEND_COMPUTE ? "compute" : "blocking", i);
            add_item(it, &n, pst->work[i], name, FUT_PENDING, NULL, 0, "");
        }
        add_item(it, &n, pst->queued, "queued compute work", FUT_PENDING, NULL, 0, "");
        break;
    case PEND_SLEEP:
        add_item(it, &n, pst->main, "pending sleep", FUT_PENDING, NULL, 0, "");
        break;
    case PEND_CORO:
        add_item(it, &n, pst->main, "suspended coroutine", FUT_PENDING, NULL, 0, "");
        add_item(it, &n, pst->prom_f, "promise the coroutine awaits", FUT_PENDING, NULL, 0, "");
        break;
    case PEND_PROMISE:
        add_item(it, &n, pst->prom_f, "unsettled promise's future", FUT_PENDING, NULL, 0, "");
        add_item(it, &n, pst->cont, "continuation of the promise", FUT_PENDING, NULL, 0, "");
        break;
    case PEND_SETTLED:
        add_item(it, &n, pst->main, "resolved future", FUT_RESOLVED, TU_PTR(VAL_SETTLED), 0, "");
        add_item(it, &n, pst->rejected, "rejected future", FUT_REJECTED, NULL, EIO, "raised 5");
        break;
    default:
        break;
    }
    if (pst->gather != NULL) {
        int settled = pst->pend == PEND_SETTLED;
        add_item(it, &n, pst->gather, settled ? "resolved gather" : "pending gather",
                 settled ? FUT_RESOLVED : FUT_PENDING, NULL, 0, "");
        it[n - 1].is_gather = 1;
    }
    return n;
}

/* The reading calls give what the future was at the fork. */
static void c_item_read(const struct item *it)
{
    fut_future *f = it->f;

    if (it->is_gather && it->st == FUT_RESOLVED) {
        void **vals = fut_value(f);
        C_EQ(fut_state(f), FUT_RESOLVED);
        C_ERR(fut_error(f), 0);
        C_TRUE(vals != NULL && vals[0] == TU_PTR(VAL_SETTLED));
    } else {
        C_OUTCOME(f, it->st, it->val, it->err);
    }
    C_TRUE(strcmp(fut_message(f), it->msg) == 0);
}

/* The calls on a future of the parent that must fail or answer at once
 * without waiting. rt: the runtime for combinators of that future alone
 * (the parent's; NULL: the default runtime, fresh in the child). xrt, xs:
 * a fresh runtime (NULL: the default) and a resolved future of it. */
static void c_item_nb(const struct item *it, fut_runtime *rt, fut_runtime *xrt, fut_future *xs)
{
    fut_future *f = it->f, *fs[2];

    step("parent's %s: reading", it->name);
    c_item_read(it);
    C_PTR(fut_retain(f), f);
    fut_release(f);

    step("parent's %s: fut_then, fut_catch, fut_finally", it->name);
    C_FORKED(fut_then(f, then_add, &never));
    C_FORKED(fut_catch(f, catch_count, &never));
    C_FORKED(fut_finally(f, finally_count, &never));

    step("parent's %s: fut_timeout", it->name);
    C_FORKED(fut_timeout(f, 0.01));
    C_FORKED(fut_timeout(f, 0));

    step("parent's %s: fut_gather, fut_any, fut_race of it alone (rt %s)", it->name,
         rt == NULL ? "NULL" : "the parent's");
    C_FORKED(fut_gather(rt, &f, 1, 0));
    C_FORKED(fut_gather(rt, &f, 1, FUT_SETTLED));
    C_FORKED(fut_any(rt, &f, 1, 0));
    C_FORKED(fut_race(rt, &f, 1, FUT_CANCEL_REST));

    step("parent's %s: fut_gather, fut_any, fut_race on a fresh runtime with a fresh resolved future",
         it->name);
    fs[0] = xs;
    fs[1] = f;
    C_FORKED(fut_gather(xrt, fs, 2, 0));
    C_FORKED(fut_any(xrt, fs, 2, 0));
    C_FORKED(fut_race(xrt, fs, 2, 0));
    fs[0] = f;
    fs[1] = xs;
    C_FORKED(fut_gather(xrt, fs, 2, FUT_SETTLED | FUT_CANCEL_REST));
    C_FORKED(fut_any(xrt, fs, 2, FUT_CANCEL_REST));
    C_FORKED(fut_race(xrt, fs, 2, 0));
    C_OUTCOME(xs, FUT_RESOLVED, TU_PTR(VAL_X), 0);

    step("parent's %s: fut_cancel", it->name);
    C_ERR(fut_cancel(f), it->st == FUT_PENDING ? FUT_EFORKED : EALREADY);
    c_item_read(it);
}

/* The calls on a future of the parent that would wait for it: at once. */
static void c_item_block(const struct item *it)
{
    fut_future *f = it->f;
    int pending = it->st == FUT_PENDING, want = pending ? FUT_EFORKED : 0, err;
    uint64_t t0;
    void *v;

    step("parent's %s: fut_wait (0, 2 s, -1)", it->name);
    C_ERR(fut_wait(f, 0), want);
    t0 = tu_now_ns();
    C_ERR(fut_wait(f, 2.0), want);
    C_TRUE(tu_now_ns() - t0 < 1000000000u);
    C_ERR(fut_wait(f, -1), want);

    step("parent's %s: fut_await outside a coroutine", it->name);
    err = -1;
    v = fut_await(f, &err);
    C_PTR(v, pending ? NULL : it->is_gather ? fut_value(f) : it->val);
    C_ERR(err, pending ? FUT_EFORKED : it->err);
    C_PTR(fut_await(f, NULL), pending ? NULL : it->is_gather ? fut_value(f) : it->val);
    c_item_read(it);
}

/* fut_gather_item on the parent's gather of its main future. */
static void c_gather_item(struct st *pst)
{
    fut_future *g0;

    if (pst->gather == NULL)
        return;
    step("fut_gather_item on the parent's gather");
    g0 = fut_gather_item(pst->gather, 0);
    C_TRUE(g0 != NULL);
    if (g0 != NULL) {
        C_EQ(fut_state(g0), fut_state(pst->main));
        C_PTR(fut_value(g0), fut_value(pst->main));
    }
    errno = 0;
    C_PTR(fut_gather_item(pst->gather, 1), NULL);
    C_ERR(errno, EINVAL);
}

/* Settling the parent's promise: FUT_EFORKED, it stays pending. */
static void c_parent_promise(struct st *pst)
{
    fut_future *pf;

    step("the parent's promise: fut_promise_future");
    pf = fut_promise_future(pst->prom);
    C_PTR(pf, pst->prom_f);
    fut_release(pf);
    step("the parent's promise: fut_promise_resolve");
    C_ERR(fut_promise_resolve(pst->prom, TU_PTR(1)), FUT_EFORKED);
    C_OUTCOME(pst->prom_f, FUT_PENDING, NULL, 0);
    step("the parent's promise: fut_promise_reject");
    C_ERR(fut_promise_reject(pst->prom, EIO, "in the child %d", 1), FUT_EFORKED);
    C_OUTCOME(pst->prom_f, FUT_PENDING, NULL, 0);
    if (pst->cont != NULL)
        C_OUTCOME(pst->cont, FUT_PENDING, NULL, 0);
}

/* The parent's pool: every call FUT_EFORKED, the job never called. */
static void c_parent_pool(fut_pool *pool)
{
    fut_pool_stats s;
    tu_cjob c;

    step("the parent's pool (fut_runtime_pool before the fork)");
    C_TRUE(pool != NULL);
    if (pool == NULL)
        return;
    tu_cjob_init(&c, NULL);
    C_ERR(fut_pool_submit(pool, FUT_LANE_COMPUTE, &c.job, tu_cjob_fn), FUT_EFORKED);
    C_ERR(fut_pool_submit(pool, FUT_LANE_BLOCKING, &c.job, tu_cjob_fn), FUT_EFORKED);
    C_ERR(fut_pool_wait_idle(pool), FUT_EFORKED);
    C_ERR(fut_pool_stats_get(pool, FUT_LANE_COMPUTE, &s), FUT_EFORKED);
    C_ERR(fut_pool_stats_get(pool, FUT_LANE_BLOCKING, &s), FUT_EFORKED);
    C_ERR(fut_pool_shutdown(pool, FUT_POOL_DRAIN), FUT_EFORKED);
    C_EQ(atomic_load(&c.ran) + atomic_load(&c.cancelled) + atomic_load(&c.bad), 0);
}

/* The calls on the parent's runtime prt that return at once. */
static void c_parent_runtime_nb(fut_runtime *prt, fut_future *xs)
{
    fut_promise *p;
    int e;

    step("the parent's runtime: fut_sleep");
    C_FORKED(fut_sleep(prt, 0.001));
    C_FORKED(fut_sleep(prt, 0));
    C_FORKED(fut_sleep(prt, 10));
    step("the parent's runtime: fut_submit");
    C_FORKED(fut_submit(prt, count_work, &never));
    step("the parent's runtime: fut_submit_blocking");
    C_FORKED(fut_submit_blocking(prt, count_work, &never));
    step("the parent's runtime: fut_async");
    C_FORKED(fut_async(prt, count_coro, &never));
    step("the parent's runtime: fut_promise_new");
    errno = 0;
    p = fut_promise_new(prt);
    e = errno;
    C_PTR(p, NULL);
    C_ERR(e, FUT_EFORKED);
    step("the parent's runtime: fut_runtime_set_stack_size");
    C_ERR(fut_runtime_set_stack_size(prt, 65536), FUT_EFORKED);
    step("the parent's runtime: fut_runtime_live, fut_on_dispatcher");
    C_TRUE(fut_runtime_live(prt) >= 1); /* the child holds some of its futures */
    C_EQ(fut_on_dispatcher(prt), 0);
    C_EQ(fut_on_dispatcher(NULL), 0);
    step("the parent's runtime: fut_gather of nothing, combinators of a fresh future");
    C_FORKED(fut_gather(prt, NULL, 0, 0));
    C_FORKED(fut_gather(prt, &xs, 1, 0));
    C_FORKED(fut_any(prt, &xs, 1, 0));
    C_FORKED(fut_race(prt, &xs, 1, 0));
    step("the parent's runtime: its pool");
    c_parent_pool(fut_runtime_pool(prt));
}

static void child_exit(void)
{
    int w = atomic_load(&wbad_line);
    if (w != 0)
        cfail(w, "a check on another thread failed (W_CHECK at line %d)", w);
    _exit(rep->nfail == 0 ? 0 : 1);
}

/* Release what the child holds of the parent's state (never its pipe: the
 * parent's work reads it). */
static void child_release_parent(struct st *pst)
{
    release_futures(pst);
}

/* ------------------------------------------------------------------------
 * The matrix
 * ---------------------------------------------------------------------- */

enum kind {
    KIND_PARENT_DEFAULT, /* the objects are the default runtime's, used before the fork */
    KIND_PARENT_NEW,     /* the objects are a fut_runtime_new runtime's, made before the fork */
    KIND_CHILD_NEW,      /* the child makes a runtime and uses it (the parent's objects: default's) */
    KIND_CHILD_DEFAULT,  /* the child's first use of the default runtime (the parent never used it) */
    NKIND
};

static const char *const kind_names[NKIND] = {
    [KIND_PARENT_DEFAULT] = "the default runtime used before the fork",
    [KIND_PARENT_NEW] = "a runtime made before the fork",
    [KIND_CHILD_NEW] = "a runtime made in the child",
    [KIND_CHILD_DEFAULT] = "the default runtime first used in the child",
};

/* The child. pst: the parent's state; prt: the parent's runtime (NULL: the
 * default runtime, which the child cannot name); ppool: its pool. */
static void child_main(int kind, struct st *pst, fut_runtime *prt, fut_pool *ppool)
{
    struct item items[MAX_ITEMS];
    unsigned n = parent_items(pst, items);
    fut_runtime *F = NULL; /* the fresh runtime; NULL: the child's default runtime */
    const char *fname = kind == KIND_CHILD_NEW ? "the child's own runtime" : "the child's default runtime";
    fut_promise *xp;
    fut_future *xs;

    child_alarm(CHILD_ALARM_S);
    step("child: start");
    /* The parent's pool first: the child's first NULL-runtime call may
     * free what memory of the parent's default runtime it can. */
    c_parent_pool(ppool);
    if (kind == KIND_CHILD_NEW) {
        fut_pool_options o;
        fut_pool_options_init(&o);
        o.compute_threads = 1;
        o.blocking_max = 4;
        step("fut_runtime_new in the child");
        F = fut_runtime_new(&o);
        C_TRUE(F != NULL);
        if (F == NULL)
            child_exit();
        C_EQ(fut_runtime_live(F), 0);
    }
    step("%s: a resolved promise", fname);
    xp = fut_promise_new(F);
    C_TRUE(xp != NULL);
    if (xp == NULL)
        child_exit();
    xs = fut_promise_future(xp);
    C_ERR(fut_promise_resolve(xp, TU_PTR(VAL_X)), 0);
    fut_promise_free(xp);
    C_OUTCOME(xs, FUT_RESOLVED, TU_PTR(VAL_X), 0);

    /* 1. Calls on the parent's objects that must answer at once. */
    for (unsigned i = 0; i < n; i++)
        c_item_nb(&items[i], prt, F, xs);
    c_gather_item(pst);
    if (pst->prom != NULL)
        c_parent_promise(pst);
    if (prt != NULL)
        c_parent_runtime_nb(prt, xs);

    /* 2. Calls on them that would wait. */
    for (unsigned i = 0; i < n; i++)
        c_item_block(&items[i]);
    if (prt != NULL) {
        step("the parent's runtime: fut_run");
        C_ERR(fut_run(prt, count_coro, &never, NULL), FUT_EFORKED);
    }

    /* 3. The fresh runtime works. */
    if (kind != KIND_PARENT_NEW) {
        fresh_runtime_checks(F, fname);
        fresh_state_checks(F, fname, pst->pend, xs);
    } else { /* the focus is the parent's runtime: a short check */
        void *r = NULL;
        fut_future *f;
        step("%s: fut_submit", fname);
        f = fut_submit(NULL, ident, TU_PTR(5));
        C_SETTLE(f);
        C_OUTCOME(f, FUT_RESOLVED, TU_PTR(5), 0);
        fut_release(f);
        step("%s: fut_run", fname);
        C_ERR(fut_run(NULL, ident, TU_PTR(6), &r), 0);
        C_PTR(r, TU_PTR(6));
    }
    for (unsigned i = 0; i < n; i++) { /* a fresh coroutine awaits a parent's future */
        struct cctx cx = { F, items[i].f, TU_PTR(1), -1 };
        void *r = NULL;
        const struct item *it = &items[i];
        step("a coroutine of %s awaits the parent's %s", fname, it->name);
        C_ERR(fut_run(F, coro_await_other, &cx, &r), 0);
        C_PTR(r, TU_PTR(1));
        C_PTR(cx.v, it->st != FUT_PENDING ? fut_value(it->f) : NULL);
        C_ERR(cx.err, it->st == FUT_PENDING ? FUT_EFORKED : it->err);
    }
    fut_release(xs);
    step("%s: every future freed (the parent's still held)", fname);
    C_TRUE(POLL_OK(fut_runtime_live(F) == 0));
    if (F != NULL) {
        step("fut_runtime_free of the child's own runtime");
        C_ERR(fut_runtime_free(F), 0);
    }

    /* 4. Free the parent's runtime; its futures stay readable. */
    if (prt != NULL) {
        step("fut_runtime_free of the parent's runtime");
        C_ERR(fut_runtime_free(prt), 0);
    }
    for (unsigned i = 0; i < n; i++) {
        step("parent's %s: reading%s", items[i].name, prt != NULL ? " after fut_runtime_free" : "");
        c_item_read(&items[i]);
    }
    step("fut_promise_free, fut_release of the parent's objects");
    child_release_parent(pst);
    step("nothing handed to the parent's objects ran in the child");
    C_EQ(atomic_load(&never.then_runs) + atomic_load(&never.catch_runs) +
             atomic_load(&never.finally_runs), 0);
    C_EQ(atomic_load(&never.work_runs) + atomic_load(&never.coro_runs), 0);
    C_EQ(atomic_load(&pst->cnt.then_runs), 0);
    child_exit();
}

/* Wait for the child (bounded: its alarm ends a hang) and fail the test
 * with what it recorded. */
static void expect_child(pid_t pid, const char *what)
{
    char text[MAX_FAILS * NOTE_LEN + 64];
    uint64_t end = tu_deadline_ms((CHILD_ALARM_S + 10) * 1000u);
    int status = 0;
    pid_t r;

    for (;;) {
        r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        ck_assert_msg(r == 0, "%s: waitpid: %s", what, strerror(errno));
        if (tu_now_ns() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            rep_text(text, sizeof text);
            fprintf(stderr, "%s: the child hung (killed) in step: %s%s\n", what, rep->step, text);
            ck_abort_msg("%s: the child hung (killed) in step: %s%s", what, rep->step, text);
        }
        tu_sleep_ms(1);
    }
    rep_text(text, sizeof text);
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        fprintf(stderr, "%s: the child %s in step: %s (%u of %u checks failed before%s)\n", what,
                sig == SIGALRM ? "hung (SIGALRM)" : strsignal(sig), rep->step, rep->nfail,
                rep->checks, text);
        ck_abort_msg("%s: the child %s in step: %s (%u of %u checks failed before%s)", what,
                     sig == SIGALRM ? "hung (SIGALRM)" : strsignal(sig), rep->step, rep->nfail,
                     rep->checks, text);
    }
    ck_assert_msg(WIFEXITED(status), "%s: child status %#x", what, status);
    if (WEXITSTATUS(status) != 0 && rep->nfail == 0) {
        fprintf(stderr, "%s: the child exited with status %d, every check passed (a sanitizer's report?)\n",
                what, WEXITSTATUS(status));
        ck_abort_msg("%s: the child exited with status %d, every check passed (a sanitizer's report? see the log)",
                     what, WEXITSTATUS(status));
    }
    if (WEXITSTATUS(status) != 0) {
        fprintf(stderr, "%s: in the child %u of %u checks failed (exit status %d):%s\n", what,
                rep->nfail, rep->checks, WEXITSTATUS(status), text);
        ck_abort_msg("%s: in the child %u of %u checks failed (exit status %d):%s", what, rep->nfail,
                     rep->checks, WEXITSTATUS(status), text);
    }
    if (getenv("TEST_FORK_VERBOSE") != NULL)
        fprintf(stderr, "%s: the child passed %u checks\n", what, rep->checks);
    memset(rep, 0, sizeof *rep);
}

/* The parent's runtime after the fork: work, a sleep, a coroutine. */
static void runtime_works(fut_runtime *rt)
{
    struct cctx cx = { rt, NULL, NULL, 0 };
    fut_future *f;
    uint64_t t0;
    void *r = NULL;

    step("the parent's runtime after the fork: work, a sleep, a coroutine");
    f = fut_submit(rt, ident, TU_PTR(3));
    C_SETTLE(f);
    C_OUTCOME(f, FUT_RESOLVED, TU_PTR(3), 0);
    fut_release(f);
    t0 = tu_now_ns();
    f = fut_sleep(rt, 0.005);
    C_SETTLE(f);
    C_OUTCOME(f, FUT_RESOLVED, NULL, 0);
    C_TRUE(tu_now_ns() - t0 >= 5000000u);
    fut_release(f);
    C_ERR(fut_run(rt, coro_main, &cx, &r), 0);
    C_PTR(r, TU_PTR(42));
}

static void run_case(int kind, int pend)
{
    char name[160];
    struct st pst;
    fut_runtime *prt = NULL; /* the parent's runtime; NULL: the default runtime */
    fut_pool *ppool;
    pid_t pid;

    snprintf(name, sizeof name, "[%s / %s]", kind_names[kind], pend_names[pend]);
    rep_map();
    if (kind == KIND_PARENT_NEW || kind == KIND_CHILD_DEFAULT)
        prt = tu_rt_new_opts(1, 4);
    make_state(&pst, prt, pend, 10.0);
    ppool = fut_runtime_pool(prt);
    quiesce(prt);
    rep_assert(name);
    fflush(NULL);
    pid = fork();
    ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0)
        child_main(kind, &pst, prt, ppool);
    expect_child(pid, name);

    /* The parent's side is unaffected. */
    step("the parent's state after the fork");
    if (pend != PEND_SETTLED)
        C_OUTCOME(pst.main, FUT_PENDING, NULL, 0);
    release_state(&pst);
    verify_state(&pst);
    runtime_works(prt);
    free_state(&pst);
    snprintf(name + strlen(name), sizeof name - strlen(name), " the parent after the fork");
    rep_assert(name);
    if (prt != NULL)
        tu_rt_finish(prt);
    rep_unmap();
}

#define MATRIX_TEST(tname, kind, pend) \
    START_TEST(tname)                  \
    {                                  \
        run_case(kind, pend);          \
    }                                  \
    END_TEST

MATRIX_TEST(test_parent_default_compute, KIND_PARENT_DEFAULT, PEND_COMPUTE)
MATRIX_TEST(test_parent_default_blocking, KIND_PARENT_DEFAULT, PEND_BLOCKING)
MATRIX_TEST(test_parent_default_sleep, KIND_PARENT_DEFAULT, PEND_SLEEP)
MATRIX_TEST(test_parent_default_coro, KIND_PARENT_DEFAULT, PEND_CORO)
MATRIX_TEST(test_parent_default_promise, KIND_PARENT_DEFAULT, PEND_PROMISE)
MATRIX_TEST(test_parent_default_settled, KIND_PARENT_DEFAULT, PEND_SETTLED)
MATRIX_TEST(test_parent_new_compute, KIND_PARENT_NEW, PEND_COMPUTE)
MATRIX_TEST(test_parent_new_blocking, KIND_PARENT_NEW, PEND_BLOCKING)
MATRIX_TEST(test_parent_new_sleep, KIND_PARENT_NEW, PEND_SLEEP)
MATRIX_TEST(test_parent_new_coro, KIND_PARENT_NEW, PEND_CORO)
MATRIX_TEST(test_parent_new_promise, KIND_PARENT_NEW, PEND_PROMISE)
MATRIX_TEST(test_parent_new_settled, KIND_PARENT_NEW, PEND_SETTLED)
MATRIX_TEST(test_child_new_compute, KIND_CHILD_NEW, PEND_COMPUTE)
MATRIX_TEST(test_child_new_blocking, KIND_CHILD_NEW, PEND_BLOCKING)
MATRIX_TEST(test_child_new_sleep, KIND_CHILD_NEW, PEND_SLEEP)
MATRIX_TEST(test_child_new_coro, KIND_CHILD_NEW, PEND_CORO)
MATRIX_TEST(test_child_new_promise, KIND_CHILD_NEW, PEND_PROMISE)
MATRIX_TEST(test_child_new_settled, KIND_CHILD_NEW, PEND_SETTLED)
MATRIX_TEST(test_child_default_compute, KIND_CHILD_DEFAULT, PEND_COMPUTE)
MATRIX_TEST(test_child_default_blocking, KIND_CHILD_DEFAULT, PEND_BLOCKING)
MATRIX_TEST(test_child_default_sleep, KIND_CHILD_DEFAULT, PEND_SLEEP)
MATRIX_TEST(test_child_default_coro, KIND_CHILD_DEFAULT, PEND_CORO)
MATRIX_TEST(test_child_default_promise, KIND_CHILD_DEFAULT, PEND_PROMISE)
MATRIX_TEST(test_child_default_settled, KIND_CHILD_DEFAULT, PEND_SETTLED)

/* ------------------------------------------------------------------------
 * The issue's reproducer, a fork of a fork, exit() in the child
 * ---------------------------------------------------------------------- */

START_TEST(test_issue_reproducer)
{
    fut_future *s, *t;
    pid_t pid;

    rep_map();
    s = fut_sleep(NULL, 0.001);
    ck_assert_int_eq(fut_wait(s, -1), 0);
    quiesce(NULL);
    rep_assert("before the fork");
    fflush(NULL);
    pid = fork();
    ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        child_alarm(CHILD_ALARM_S);
        step("t = fut_then(s, ident, NULL)");
        t = fut_then(s, then_ident, NULL);
        C_TRUE(t != NULL);
        if (t != NULL) {
            step("fut_wait(t, -1)");
            C_ERR(fut_wait(t, -1), 0);
            C_OUTCOME(t, FUT_REJECTED, NULL, FUT_EFORKED);
            fut_release(t);
        }
        fut_release(s);
        child_exit();
    }
    expect_child(pid, "the issue's reproducer");
    step("the parent after the fork");
    t = fut_then(s, then_ident, NULL);
    C_SETTLE(t);
    C_OUTCOME(t, FUT_RESOLVED, NULL, 0);
    fut_release(t);
    fut_release(s);
    rep_assert("the issue's reproducer, the parent after the fork");
    rep_unmap();
}
END_TEST

/* The child's default runtime is a parent's runtime to a grandchild. */
START_TEST(test_fork_of_fork)
{
    fut_future *s;
    pid_t pid;

    rep_map();
    s = fut_sleep(NULL, 0.001);
    ck_assert_int_eq(fut_wait(s, -1), 0);
    quiesce(NULL);
    rep_assert("before the fork");
    fflush(NULL);
    pid = fork();
    ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        struct counts fc;
        fut_promise *p;
        fut_future *pf, *c, *f;
        pid_t gpid;
        int status = 0;

        child_alarm(2 * CHILD_ALARM_S);
        memset(&fc, 0, sizeof fc);
        step("child: its default runtime: a promise with a continuation, work");
        p = fut_promise_new(NULL);
        C_TRUE(p != NULL);
        if (p == NULL)
            child_exit();
        pf = fut_promise_future(p);
        c = fut_then(pf, then_add, &fc);
        f = fut_submit(NULL, ident, TU_PTR(5));
        C_SETTLE(f);
        C_OUTCOME(f, FUT_RESOLVED, TU_PTR(5), 0);
        quiesce(NULL);
        fflush(NULL);
        gpid = fork();
        if (gpid < 0) {
            cfail(__LINE__, "fork in the child: %s", strerror(errno));
            child_exit();
        }
        if (gpid == 0) {
            fut_future *g;
            void *r = NULL;
            child_alarm(CHILD_ALARM_S);
            step("grandchild: the child's futures and promise");
            C_FORKED(fut_then(pf, then_add, &never));
            C_FORKED(fut_then(f, then_add, &never));
            C_FORKED(fut_then(s, then_add, &never));
            C_ERR(fut_wait(pf, -1), FUT_EFORKED);
            C_ERR(fut_promise_resolve(p, TU_PTR(1)), FUT_EFORKED);
            C_ERR(fut_cancel(c), FUT_EFORKED);
            step("grandchild: its own default runtime");
            g = fut_submit(NULL, ident, TU_PTR(6));
            C_SETTLE(g);
            C_OUTCOME(g, FUT_RESOLVED, TU_PTR(6), 0);
            fut_release(g);
            g = fut_sleep(NULL, 0.01);
            C_SETTLE(g);
            C_OUTCOME(g, FUT_RESOLVED, NULL, 0);
            fut_release(g);
            C_ERR(fut_run(NULL, ident, TU_PTR(7), &r), 0);
            C_PTR(r, TU_PTR(7));
            C_EQ(atomic_load(&never.then_runs), 0);
            C_EQ(atomic_load(&fc.then_runs), 0);
            child_exit();
        }
        step("child: waiting for the grandchild");
        C_EQ(waitpid(gpid, &status, 0), gpid);
        C_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        step("child: its default runtime after the grandchild");
        C_ERR(fut_promise_resolve(p, TU_PTR(VAL_PROMISE)), 0);
        C_SETTLE(c);
        C_OUTCOME(c, FUT_RESOLVED, TU_PTR(VAL_PROMISE + CONT_ADD), 0);
        C_EQ(atomic_load(&fc.then_runs), 1);
        fut_release(f);
        fut_release(c);
        fut_release(pf);
        fut_promise_free(p);
        fut_release(s);
        child_exit();
    }
    expect_child(pid, "a fork of a fork");
    fut_release(s);
    rep_unmap();
}
END_TEST

/* exit() (not _exit) in a child runs the default runtime's atexit
 * handler: with the parent's default runtime there (the child never used
 * the default runtime), and with a fresh one that has a sleep pending.
 * Neither may hang. */
/* Held, never released, until exit (a global: a leak checker sees it). */
static fut_future *g_pending_at_exit;

static void exit_in_child(int use_default)
{
    fut_promise *p;
    fut_future *pf, *c, *s;
    pid_t pid;

    rep_map();
    s = fut_sleep(NULL, 0.001);
    ck_assert_int_eq(fut_wait(s, -1), 0);
    p = fut_promise_new(NULL);
    ck_assert_ptr_nonnull(p);
    pf = fut_promise_future(p);
    c = fut_then(pf, then_add, &never);
    quiesce(NULL);
    rep_assert("before the fork");
    fflush(NULL);
    pid = fork();
    ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        child_alarm(CHILD_ALARM_S);
        if (use_default) {
            fut_future *f;
            step("child: its default runtime");
            f = fut_submit(NULL, ident, TU_PTR(5));
            C_SETTLE(f);
            C_OUTCOME(f, FUT_RESOLVED, TU_PTR(5), 0);
            fut_release(f);
            g_pending_at_exit = fut_sleep(NULL, 10); /* pending at exit */
            C_TRUE(g_pending_at_exit != NULL);
        }
        step("child: exit()");
        exit(rep->nfail == 0 ? 0 : 1);
    }
    expect_child(pid, use_default ? "exit() in a child using its default runtime"
                                  : "exit() in a child that never used the default runtime");
    ck_assert_int_eq(fut_promise_resolve(p, TU_PTR(VAL_PROMISE)), 0);
    ck_assert_int_eq(fut_wait(c, WAIT_S), 0);
    ck_assert_ptr_eq(fut_value(c), TU_PTR(VAL_PROMISE + CONT_ADD));
    fut_release(c);
    fut_release(pf);
    fut_promise_free(p);
    fut_release(s);
    rep_unmap();
}

START_TEST(test_exit_in_child_unused_default)
{
    exit_in_child(0);
}
END_TEST

START_TEST(test_exit_in_child_fresh_default)
{
    exit_in_child(1);
}
END_TEST

/* Fork again and again while another thread sets the unobserved-error
 * hook in a loop (its lock is taken and released all the time): in the
 * child, setting the hook and dropping an unread rejected future (both
 * take that lock) never hang. */
static atomic_int g_hook_stop;
static atomic_long g_hook_loops;

static void *hook_hammer(void *arg)
{
    while (!atomic_load(&g_hook_stop)) {
        fut_set_unobserved_hook(tu_quiet_unobserved, arg);
        fut_set_unobserved_hook(NULL, NULL);
        atomic_fetch_add(&g_hook_loops, 1);
    }
    return NULL;
}

#define HOOK_FORKS 20

START_TEST(test_fork_while_setting_hook)
{
    atomic_uint parent_unread;
    pthread_t th;

    rep_map();
    atomic_init(&parent_unread, 0);
    atomic_store(&g_hook_stop, 0);
    fut_set_unobserved_hook(NULL, NULL); /* its once-only setup done before the thread starts */
    atomic_store(&g_hook_loops, 0);
    ck_assert_int_eq(pthread_create(&th, NULL, hook_hammer, &parent_unread), 0);
    /* Its start (which allocates) over before the first fork: see quiesce. */
    ck_assert(POLL_OK(atomic_load(&g_hook_loops) > 1000));
    tu_sleep_ms(5);
    for (int k = 0; k < HOOK_FORKS; k++) {
        char what[64];
        pid_t pid;

        tu_sleep_ms(1);
        fflush(NULL);
        pid = fork();
        ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0) {
            atomic_uint unread;
            fut_promise *p;
            fut_future *f;

            child_alarm(CHILD_ALARM_S);
            atomic_init(&unread, 0);
            step("child: fut_set_unobserved_hook");
            fut_set_unobserved_hook(tu_quiet_unobserved, &unread);
            step("child: an unread rejected future of a runtime made in the child");
            {
                fut_runtime *rt = fut_runtime_new(NULL);
                C_TRUE(rt != NULL);
                if (rt == NULL)
                    child_exit();
                p = fut_promise_new(rt);
                C_TRUE(p != NULL);
                if (p == NULL)
                    child_exit();
                f = fut_promise_future(p);
                C_ERR(fut_promise_reject(p, EIO, "nobody reads this"), 0);
                fut_promise_free(p);
                fut_release(f);
                C_TRUE(POLL_OK(atomic_load(&unread) == 1));
                C_TRUE(POLL_OK(fut_runtime_live(rt) == 0));
                C_ERR(fut_runtime_free(rt), 0);
            }
            child_exit();
        }
        snprintf(what, sizeof what, "fork %d while another thread sets the hook", k);
        expect_child(pid, what);
    }
    atomic_store(&g_hook_stop, 1);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    rep_unmap();
}
END_TEST

static Suite *fork_suite(void)
{
    Suite *s = suite_create("fork");
    TCase *tc;

    tc = tu_tcase(s, "matrix", 30);
    tcase_add_test(tc, test_parent_default_compute);
    tcase_add_test(tc, test_parent_default_blocking);
    tcase_add_test(tc, test_parent_default_sleep);
    tcase_add_test(tc, test_parent_default_coro);
    tcase_add_test(tc, test_parent_default_promise);
    tcase_add_test(tc, test_parent_default_settled);
    tcase_add_test(tc, test_parent_new_compute);
    tcase_add_test(tc, test_parent_new_blocking);
    tcase_add_test(tc, test_parent_new_sleep);
    tcase_add_test(tc, test_parent_new_coro);
    tcase_add_test(tc, test_parent_new_promise);
    tcase_add_test(tc, test_parent_new_settled);
    tcase_add_test(tc, test_child_new_compute);
    tcase_add_test(tc, test_child_new_blocking);
    tcase_add_test(tc, test_child_new_sleep);
    tcase_add_test(tc, test_child_new_coro);
    tcase_add_test(tc, test_child_new_promise);
    tcase_add_test(tc, test_child_new_settled);
    tcase_add_test(tc, test_child_default_compute);
    tcase_add_test(tc, test_child_default_blocking);
    tcase_add_test(tc, test_child_default_sleep);
    tcase_add_test(tc, test_child_default_coro);
    tcase_add_test(tc, test_child_default_promise);
    tcase_add_test(tc, test_child_default_settled);

    tc = tu_tcase(s, "more", 30);
    tcase_add_test(tc, test_issue_reproducer);
    tcase_add_test(tc, test_fork_of_fork);
    tcase_add_test(tc, test_exit_in_child_unused_default);
    tcase_add_test(tc, test_exit_in_child_fresh_default);
    tcase_add_test(tc, test_fork_while_setting_hook);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(fork_suite());
    int failed;

    /* Each test in a process of its own whatever CK_FORK says: "the
     * default runtime used before the fork" and "first used in the child"
     * need a process whose default runtime the test alone has touched. */
    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
