/* testutil.h - helpers shared by the pool Check suites: job wrappers, latches, gates, worker-side checks, sanitizer time scaling. */
#ifndef FUT_TESTUTIL_H
#define FUT_TESTUTIL_H

/* Include this header first: pthread_getname_np and pthread_timedjoin_np
 * are GNU extensions. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "futures.h"
#include "pool/alloc.h"

#define TU_UNUSED __attribute__((unused))

/* ------------------------------------------------------------------------
 * Sanitizers. Used only to lengthen time bounds (timeouts, polls), never
 * to lower a required count.
 * ---------------------------------------------------------------------- */

#if defined(__SANITIZE_THREAD__)
#define TU_TSAN 1
#endif
#if defined(__SANITIZE_ADDRESS__)
#define TU_ASAN 1
#endif
#ifdef __has_feature
#if __has_feature(thread_sanitizer) && !defined(TU_TSAN)
#define TU_TSAN 1
#endif
#if __has_feature(address_sanitizer) && !defined(TU_ASAN)
#define TU_ASAN 1
#endif
#endif
#ifndef TU_TSAN
#define TU_TSAN 0
#endif
#ifndef TU_ASAN
#define TU_ASAN 0
#endif

/* How much slower than a plain -O2 build we expect to be (for time
 * bounds inside tests only). */
#if TU_TSAN
#define TU_SLOW 3
#elif TU_ASAN
#define TU_SLOW 2
#else
#define TU_SLOW 1
#endif

/* Milliseconds after which a wait inside a test gives up and fails: only
 * a hang gets there. Below every TCase timeout. */
#define TU_WAIT_MS (10000u * TU_SLOW)

/* The Check timeout (seconds) of a TCase: a deadlock fails instead of
 * hanging. Sanitizer builds scale it with CK_TIMEOUT_MULTIPLIER (make
 * check sets it). */
#define TU_TIMEOUT(s) ((double)(s))

/* ------------------------------------------------------------------------
 * Small things
 * ---------------------------------------------------------------------- */

#define TU_CONTAINER_OF(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* Like ck_assert_msg, for loops over many jobs: Check's own assertions
 * record their location (a write to the runner) even when they pass. */
#define TU_REQUIRE(cond, ...)            \
    do {                                 \
        if (!(cond))                     \
            ck_abort_msg(__VA_ARGS__);   \
    } while (0)

#define TU_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static TU_UNUSED uint64_t tu_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static TU_UNUSED uint64_t tu_deadline_ms(unsigned ms)
{
    return tu_now_ns() + (uint64_t)ms * 1000000u;
}

static TU_UNUSED void tu_sleep_ms(unsigned ms)
{
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static TU_UNUSED unsigned tu_online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1u : (unsigned)n;
}

/* Poll cond every millisecond until it holds or ms milliseconds pass;
 * ok (a bool lvalue) gets the final value of cond. */
#define TU_POLL(ok, cond, ms)                                    \
    do {                                                         \
        uint64_t tu_poll_end_ = tu_deadline_ms(ms);              \
        while (!((ok) = (cond)) && tu_now_ns() < tu_poll_end_)   \
            tu_sleep_ms(1);                                      \
    } while (0)

/* A deterministic pseudo random generator (xorshift64*). */
typedef struct tu_rng {
    uint64_t s;
} tu_rng;

static TU_UNUSED void tu_rng_seed(tu_rng *r, uint64_t seed)
{
    r->s = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
    if (r->s == 0)
        r->s = 1;
}

static TU_UNUSED uint64_t tu_rng_next(tu_rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1Dull;
}

/* Uniform in [0, n]. */
static TU_UNUSED unsigned tu_rng_upto(tu_rng *r, unsigned n)
{
    return (unsigned)(tu_rng_next(r) % ((uint64_t)n + 1));
}

/* ------------------------------------------------------------------------
 * Checks made on pool threads. ck_assert on a thread other than the test's
 * own is not reliable, so workers record the first failure here and the
 * test thread asserts that none happened (TU_ASSERT_NO_WFAIL; the checked
 * teardown tu_teardown does it too).
 * ---------------------------------------------------------------------- */

static atomic_uint tu_wfail_count;
static pthread_mutex_t tu_wfail_lock = PTHREAD_MUTEX_INITIALIZER;
static char tu_wfail_msg[512];

static TU_UNUSED void tu_wfail(const char *file, int line, const char *fmt, ...)
{
    pthread_mutex_lock(&tu_wfail_lock);
    if (atomic_fetch_add(&tu_wfail_count, 1) == 0) {
        va_list ap;
        int n = snprintf(tu_wfail_msg, sizeof tu_wfail_msg, "%s:%d: ", file, line);
        va_start(ap, fmt);
        if (n > 0 && (size_t)n < sizeof tu_wfail_msg)
            vsnprintf(tu_wfail_msg + n, sizeof tu_wfail_msg - (size_t)n, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&tu_wfail_lock);
}

/* Check cond on any thread; the failure shows in the next
 * TU_ASSERT_NO_WFAIL. */
#define TU_WCHECK(cond)                                                \
    do {                                                               \
        if (!(cond))                                                   \
            tu_wfail(__FILE__, __LINE__, "worker check failed: %s", #cond); \
    } while (0)

/* Like TU_WCHECK for two integers that must be equal. */
#define TU_WCHECK_EQ(a, b)                                                   \
    do {                                                                     \
        long long tu_a_ = (long long)(a), tu_b_ = (long long)(b);            \
        if (tu_a_ != tu_b_)                                                  \
            tu_wfail(__FILE__, __LINE__, "worker check failed: %s == %s (%lld != %lld)", \
                     #a, #b, tu_a_, tu_b_);                                  \
    } while (0)

#define TU_ASSERT_NO_WFAIL()                                                   \
    do {                                                                       \
        unsigned tu_n_ = atomic_load(&tu_wfail_count);                         \
        if (tu_n_ != 0) {                                                      \
            char tu_m_[sizeof tu_wfail_msg];                                   \
            pthread_mutex_lock(&tu_wfail_lock);                                \
            memcpy(tu_m_, tu_wfail_msg, sizeof tu_m_);                         \
            pthread_mutex_unlock(&tu_wfail_lock);                              \
            ck_abort_msg("%u check(s) failed on other threads; first: %s",     \
                         tu_n_, tu_m_);                                        \
        }                                                                      \
    } while (0)

/* Checked fixture for every TCase: starts each test clean, and fails it if
 * a worker-side check failed. */
static TU_UNUSED void tu_setup(void)
{
    atomic_store(&tu_wfail_count, 0);
    tu_wfail_msg[0] = '\0';
    fut__alloc_set_hook(NULL);
}

static TU_UNUSED void tu_teardown(void)
{
    fut__alloc_set_hook(NULL);
    TU_ASSERT_NO_WFAIL();
}

/* ------------------------------------------------------------------------
 * Latch: the test thread waits, with a bound, for n events.
 * ---------------------------------------------------------------------- */

typedef struct tu_latch {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* CLOCK_MONOTONIC */
    long count;          /* events still expected */
} tu_latch;

static TU_UNUSED void tu_cond_init_mono(pthread_cond_t *c)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
}

static TU_UNUSED void tu_latch_init(tu_latch *l, long count)
{
    pthread_mutex_init(&l->lock, NULL);
    tu_cond_init_mono(&l->cond);
    l->count = count;
}

static TU_UNUSED void tu_latch_destroy(tu_latch *l)
{
    pthread_cond_destroy(&l->cond);
    pthread_mutex_destroy(&l->lock);
}

static TU_UNUSED void tu_latch_add(tu_latch *l, long n)
{
    pthread_mutex_lock(&l->lock);
    l->count += n;
    pthread_mutex_unlock(&l->lock);
}

static TU_UNUSED void tu_latch_count_down(tu_latch *l)
{
    pthread_mutex_lock(&l->lock);
    TU_WCHECK(l->count > 0);
    if (--l->count <= 0)
        pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->lock);
}

static TU_UNUSED int tu_timed_wait(pthread_cond_t *c, pthread_mutex_t *m, uint64_t deadline_ns)
{
    struct timespec ts = { (time_t)(deadline_ns / 1000000000u), (long)(deadline_ns % 1000000000u) };
    return pthread_cond_timedwait(c, m, &ts);
}

/* Wait up to ms milliseconds for the count to reach 0. Returns the count
 * left (0 on success). */
static TU_UNUSED long tu_latch_wait(tu_latch *l, unsigned ms)
{
    uint64_t end = tu_deadline_ms(ms);
    long left;
    pthread_mutex_lock(&l->lock);
    while (l->count > 0 && tu_now_ns() < end)
        tu_timed_wait(&l->cond, &l->lock, end);
    left = l->count;
    pthread_mutex_unlock(&l->lock);
    return left;
}

#define TU_LATCH_WAIT(l, ms)                                                   \
    do {                                                                       \
        long tu_left_ = tu_latch_wait((l), (ms));                              \
        ck_assert_msg(tu_left_ == 0, "timed out after %u ms with %ld event(s) missing", \
                      (unsigned)(ms), tu_left_);                               \
    } while (0)

/* ------------------------------------------------------------------------
 * Gate: jobs wait, with a bound, until another thread opens it. A gate that
 * is never opened fails the test instead of hanging it.
 * ---------------------------------------------------------------------- */

typedef struct tu_gate {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* CLOCK_MONOTONIC */
    bool open;
    unsigned waiting;    /* threads inside tu_gate_wait */
} tu_gate;

static TU_UNUSED void tu_gate_init(tu_gate *g)
{
    pthread_mutex_init(&g->lock, NULL);
    tu_cond_init_mono(&g->cond);
    g->open = false;
    g->waiting = 0;
}

static TU_UNUSED void tu_gate_destroy(tu_gate *g)
{
    pthread_cond_destroy(&g->cond);
    pthread_mutex_destroy(&g->lock);
}

static TU_UNUSED void tu_gate_open(tu_gate *g)
{
    pthread_mutex_lock(&g->lock);
    g->open = true;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->lock);
}

/* Returns true if opened, false (and records a worker failure) after ms. */
static TU_UNUSED bool tu_gate_wait(tu_gate *g, unsigned ms)
{
    uint64_t end = tu_deadline_ms(ms);
    bool open;
    pthread_mutex_lock(&g->lock);
    g->waiting++;
    pthread_cond_broadcast(&g->cond);
    while (!g->open && tu_now_ns() < end)
        tu_timed_wait(&g->cond, &g->lock, end);
    open = g->open;
    g->waiting--;
    pthread_mutex_unlock(&g->lock);
    if (!open)
        tu_wfail(__FILE__, __LINE__, "gate not opened within %u ms", ms);
    return open;
}

/* Wait up to ms for n threads to be inside tu_gate_wait. */
static TU_UNUSED bool tu_gate_wait_waiters(tu_gate *g, unsigned n, unsigned ms)
{
    uint64_t end = tu_deadline_ms(ms);
    bool ok;
    pthread_mutex_lock(&g->lock);
    while (g->waiting < n && tu_now_ns() < end)
        tu_timed_wait(&g->cond, &g->lock, end);
    ok = g->waiting >= n;
    pthread_mutex_unlock(&g->lock);
    return ok;
}

/* ------------------------------------------------------------------------
 * Concurrency meter: how many jobs ran at the same time.
 * ---------------------------------------------------------------------- */

typedef struct tu_conc {
    atomic_int cur; /* jobs inside now */
    atomic_int max; /* most ever inside at once */
} tu_conc;

static TU_UNUSED void tu_conc_enter(tu_conc *c)
{
    int now = atomic_fetch_add(&c->cur, 1) + 1;
    int m = atomic_load(&c->max);
    while (now > m && !atomic_compare_exchange_weak(&c->max, &m, now)) {
    }
}

static TU_UNUSED void tu_conc_leave(tu_conc *c)
{
    atomic_fetch_sub(&c->cur, 1);
}

/* ------------------------------------------------------------------------
 * Pool helpers
 * ---------------------------------------------------------------------- */

/* A pool with the given options (0 keeps that default). */
static TU_UNUSED fut_pool *tu_pool_new(unsigned compute, unsigned blocking_max, unsigned idle_ms)
{
    fut_pool_options o;
    fut_pool *p;
    ck_assert_int_eq(fut_pool_options_init(&o), 0);
    if (compute)
        o.compute_threads = compute;
    if (blocking_max)
        o.blocking_max = blocking_max;
    if (idle_ms)
        o.blocking_idle_ms = idle_ms;
    errno = 0;
    p = fut_pool_new(&o);
    ck_assert_msg(p != NULL, "fut_pool_new(%u, %u, %u) failed: %s", o.compute_threads,
                  o.blocking_max, o.blocking_idle_ms, strerror(errno));
    return p;
}

static TU_UNUSED fut_pool_stats tu_stats(fut_pool *p, int lane)
{
    fut_pool_stats s;
    memset(&s, 0xA5, sizeof s);
    ck_assert_int_eq(fut_pool_stats_get(p, lane, &s), 0);
    return s;
}

static TU_UNUSED const char *tu_lane_name(int lane)
{
    return lane == FUT_LANE_COMPUTE ? "compute" : lane == FUT_LANE_BLOCKING ? "blocking" : "?";
}

/* The thread-name prefix of a lane's threads. */
static TU_UNUSED const char *tu_lane_prefix(int lane)
{
    return lane == FUT_LANE_COMPUTE ? "fut-cpu-" : "fut-blk-";
}

/* True if the calling thread's name starts with the lane's prefix. */
static TU_UNUSED bool tu_on_lane_thread(int lane)
{
    char name[32] = "";
    const char *pfx = tu_lane_prefix(lane);
    if (pthread_getname_np(pthread_self(), name, sizeof name) != 0)
        return false;
    return strncmp(name, pfx, strlen(pfx)) == 0;
}

/* True if the calling thread's name starts with either lane's prefix. */
static TU_UNUSED bool tu_on_pool_thread(void)
{
    return tu_on_lane_thread(FUT_LANE_COMPUTE) || tu_on_lane_thread(FUT_LANE_BLOCKING);
}

/* A simple counted job: records how often it ran and was cancelled. */
typedef struct tu_cjob {
    fut_pool_job job;
    atomic_int ran;       /* fn(job, 0) calls */
    atomic_int cancelled; /* fn(job, ECANCELED) calls */
    atomic_int bad;       /* calls with any other status */
    tu_latch *latch;      /* counted down on every call, if set */
} tu_cjob;

static TU_UNUSED void tu_cjob_fn(fut_pool_job *job, int status)
{
    tu_cjob *c = TU_CONTAINER_OF(job, tu_cjob, job);
    tu_latch *l = c->latch;
    if (status == 0)
        atomic_fetch_add(&c->ran, 1);
    else if (status == ECANCELED)
        atomic_fetch_add(&c->cancelled, 1);
    else
        atomic_fetch_add(&c->bad, 1);
    if (l)
        tu_latch_count_down(l);
}

static TU_UNUSED void tu_cjob_init(tu_cjob *c, tu_latch *latch)
{
    memset(&c->job, 0, sizeof c->job);
    atomic_init(&c->ran, 0);
    atomic_init(&c->cancelled, 0);
    atomic_init(&c->bad, 0);
    c->latch = latch;
}

/* A TCase with the checked fixture and a timeout; added to s. */
static TU_UNUSED TCase *tu_tcase(Suite *s, const char *name, double plain_seconds)
{
    TCase *tc = tcase_create(name);
    tcase_add_checked_fixture(tc, tu_setup, tu_teardown);
    tcase_set_timeout(tc, TU_TIMEOUT(plain_seconds));
    suite_add_tcase(s, tc);
    return tc;
}

/* Run every test of s (fork mode, as the environment or the default
 * says) and return the process exit status. */
static TU_UNUSED int tu_run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    int failed;
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* ------------------------------------------------------------------------
 * Runtime helpers (the futures suites)
 * ---------------------------------------------------------------------- */

/* Integers carried as future values. */
#define TU_PTR(n) ((void *)(uintptr_t)(n))
#define TU_UINT(p) ((uintptr_t)(p))

/* A runtime with the given options (0 keeps that default). */
static TU_UNUSED fut_runtime *tu_rt_new_opts(unsigned compute, unsigned blocking_max)
{
    fut_pool_options o;
    fut_runtime *rt;
    ck_assert_int_eq(fut_pool_options_init(&o), 0);
    if (compute)
        o.compute_threads = compute;
    if (blocking_max)
        o.blocking_max = blocking_max;
    errno = 0;
    rt = fut_runtime_new(&o);
    ck_assert_msg(rt != NULL, "fut_runtime_new(compute %u, blocking_max %u) failed: %s",
                  o.compute_threads, o.blocking_max, strerror(errno));
    ck_assert_uint_eq(fut_runtime_live(rt), 0);
    return rt;
}

/* A runtime with compute compute workers (0: the default count). */
static TU_UNUSED fut_runtime *tu_rt_new(unsigned compute)
{
    return tu_rt_new_opts(compute, 0);
}

/* Wait (bounded) for f to settle; fails the test if it does not. */
#define TU_SETTLE(f)                                                          \
    do {                                                                      \
        int tu_rc_ = fut_wait((f), TU_WAIT_MS / 1000.0);                      \
        ck_assert_msg(tu_rc_ == 0, "fut_wait(%s) returned %d (%s)", #f, tu_rc_, \
                      strerror(tu_rc_));                                      \
    } while (0)

/* Wait until every future of rt has been freed (the dispatcher may still
 * hold references while it finishes continuations), then free rt. Call
 * after releasing every future the test holds. */
static TU_UNUSED void tu_rt_finish(fut_runtime *rt)
{
    bool ok;
    TU_POLL(ok, fut_runtime_live(rt) == 0, TU_WAIT_MS);
    ck_assert_msg(ok, "%llu future(s) still live after everything was released",
                  (unsigned long long)fut_runtime_live(rt));
    ck_assert_int_eq(fut_runtime_free(rt), 0);
}

/* Poll (bounded) until the atomic counter *c reaches n; fails the test
 * otherwise or if it went past n. */
#define TU_POLL_COUNT(c, n)                                                   \
    do {                                                                      \
        bool tu_ok_;                                                          \
        long long tu_n_ = (long long)(n);                                     \
        TU_POLL(tu_ok_, (long long)atomic_load(c) >= tu_n_, TU_WAIT_MS);      \
        ck_assert_msg((long long)atomic_load(c) == tu_n_, "%s is %lld, expected %lld", #c, \
                      (long long)atomic_load(c), tu_n_);                      \
    } while (0)

/* A silent unobserved-error hook for suites that reject many futures on
 * purpose (the default hook prints a line per future). */
static TU_UNUSED void tu_quiet_unobserved(int code, const char *message, void *arg)
{
    (void)code;
    (void)message;
    if (arg)
        atomic_fetch_add((atomic_uint *)arg, 1);
}

/* ------------------------------------------------------------------------
 * Descriptor accounting: a test that opens descriptors ends with as many
 * open as it began with (TU_FD_BEGIN at its start, TU_FD_END at its end)
 * ---------------------------------------------------------------------- */

static TU_UNUSED int tu_count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

/* The open descriptors and what they are, for a failure message. */
static TU_UNUSED void tu_describe_fds(char *out, size_t size)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    size_t used = 0;

    out[0] = '\0';
    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL && used + 64 < size) {
        char path[300], target[128];
        ssize_t k;
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        k = readlink(path, target, sizeof target - 1);
        target[k > 0 ? k : 0] = '\0';
        used += (size_t)snprintf(out + used, size - used, " %s=%.40s", e->d_name, target);
    }
    closedir(d);
}

#define TU_FD_BEGIN() int fd_base_ = tu_count_fds()

/* Descriptors may be closed by the dispatcher a moment after the future
 * that tells us settles: poll (bounded), then compare. */
#define TU_FD_END()                                                               \
    do {                                                                       \
        bool fd_ok_;                                                           \
        TU_POLL(fd_ok_, tu_count_fds() == fd_base_, 2000);                        \
        if (!fd_ok_) {                                                         \
            char fd_list_[2048];                                               \
            tu_describe_fds(fd_list_, sizeof fd_list_);                           \
            ck_abort_msg("descriptor leak: %d open at the start, %d at the end:%s", \
                         fd_base_, tu_count_fds(), fd_list_);                     \
        }                                                                      \
    } while (0)


#endif /* FUT_TESTUTIL_H */
