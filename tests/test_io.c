/* test_io.c - waiting on descriptors with pipes and socketpairs: fut_io_wait (a write from another thread, fut_then, fut_await in a coroutine, already ready, FUT_IO_WRITE at once, end of stream, fut_timeout removing the interest, fut_race, fut_gather, cancel without a leak, bad arguments, regular files and directories EPERM, closed numbers EBADF); fut_read / fut_write / fut_recv / fut_send in a coroutine and on the main thread (partial reads, 16 MiB to a slow reader checked byte by byte, end of stream, timeouts bounding the whole call, timeout 0, cancel while waiting returning -ECANCELED once, -EPIPE with SIGPIPE at its default disposition, -EBADF, -EINVAL), -EDEADLK in a plain continuation before any system call, fut_io_detach and fut_close while awaited, a plain close() whose number is reused while a wait is pending, fut_runtime_free while coroutines wait, and fork() (the parent's runtime is refused in the child with FUT_EFORKED, a runtime made there works, the parent's poller goes on). Every test ends with as many open descriptors as it began with. */
#include "testutil.h"

#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#if TU_TSAN
/* test_fork's child starts threads (a runtime, a writer) after a
 * multi-threaded fork, as test_pool_fork.c's does. */
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
    return "die_after_fork=0";
}
#endif

static fut_runtime *g_rt;

/* A descriptor number that is not open (checked where used). */
#define NOT_OPEN_FD 4000

/* Generous upper bound for "returned promptly" (seconds). */
#define SLACK_S (5.0 * TU_SLOW)

#define EV_ALL (FUT_IO_READ | FUT_IO_WRITE | FUT_IO_ERR | FUT_IO_HUP)

/* ------------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------- */

static double now_s(void)
{
    return (double)tu_now_ns() / 1e9;
}

static void xpipe(int p[2])
{
    ck_assert_int_eq(pipe(p), 0);
}

static void xsocketpair(int sv[2])
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
}

static void close2(int p[2])
{
    if (p[0] >= 0)
        close(p[0]);
    if (p[1] >= 0)
        close(p[1]);
    p[0] = p[1] = -1;
}

static bool fd_is_open(int fd)
{
    return fcntl(fd, F_GETFD) != -1;
}

/* Write all of buf with plain write(2), whatever the descriptor's mode (the
 * library may have made it non-blocking). Returns false on an error. */
static bool write_all(int fd, const void *buf, size_t n)
{
    const char *c = buf;
    while (n > 0) {
        ssize_t k = write(fd, c, n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                struct pollfd pf = { fd, POLLOUT, 0 };
                (void)poll(&pf, 1, 100);
                continue;
            }
            return false;
        }
        c += k;
        n -= (size_t)k;
    }
    return true;
}

/* One plain read(2) that waits (poll) if the descriptor is non-blocking. */
static ssize_t read_some(int fd, void *buf, size_t n, int timeout_ms)
{
    for (;;) {
        ssize_t k = read(fd, buf, n);
        if (k >= 0 || (errno != EAGAIN && errno != EINTR))
            return k;
        if (errno == EAGAIN) {
            struct pollfd pf = { fd, POLLIN, 0 };
            if (poll(&pf, 1, timeout_ms) == 0)
                return -1;
        }
    }
}

/* Bytes waiting to be read on fd (0 if none), without blocking. */
static bool fd_readable_now(int fd)
{
    struct pollfd pf = { fd, POLLIN, 0 };
    return poll(&pf, 1, 0) == 1 && (pf.revents & POLLIN);
}

/* Fill a pipe or socket's buffer until a write would block; returns the
 * bytes written. Leaves the descriptor non-blocking. */
static size_t fill_up(int fd)
{
    static char junk[4096];
    size_t total = 0;
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    for (;;) {
        ssize_t k = write(fd, junk, sizeof junk);
        if (k > 0) {
            total += (size_t)k;
            continue;
        }
        if (k < 0 && errno == EINTR)
            continue;
        break;
    }
    /* a socket may take a last small write after a large one failed */
    for (;;) {
        ssize_t k = write(fd, junk, 1);
        if (k <= 0)
            break;
        total += (size_t)k;
    }
    return total;
}

/* Read and drop everything readable now. */
static void drain(int fd)
{
    char buf[4096];
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    while (read(fd, buf, sizeof buf) > 0) {
    }
    fcntl(fd, F_SETFL, fl);
}

static unsigned char pattern(size_t i)
{
    return (unsigned char)((i * 131u) ^ (i >> 11) ^ (i >> 19));
}

static void *settled_value(fut_future *f, int want_state)
{
    TU_SETTLE(f);
    ck_assert_msg(fut_state(f) == want_state, "state %d, want %d (error %d %s)", fut_state(f),
                  want_state, fut_error(f), fut_message(f));
    return fut_value(f);
}

static unsigned settled_events(fut_future *f)
{
    unsigned ev = (unsigned)TU_UINT(settled_value(f, FUT_RESOLVED));
    ck_assert_msg((ev & ~EV_ALL) == 0, "events 0x%x has unknown bits", ev);
    return ev;
}

static void expect_rejected(fut_future *f, int code)
{
    TU_SETTLE(f);
    ck_assert_msg(fut_state(f) == FUT_REJECTED && fut_error(f) == code,
                  "state %d error %d (%s), want rejected with %d (%s)", fut_state(f), fut_error(f),
                  fut_message(f), code, strerror(code));
}

/* ------------------------------------------------------------------------
 * A thread that feeds a descriptor: after delay_ms, writes data, one byte
 * every gap_ms if gap_ms > 0 (else all at once), then closes fd if asked.
 * ---------------------------------------------------------------------- */

struct feeder {
    pthread_t th;
    int fd;
    const char *data;
    size_t n;
    unsigned delay_ms;
    unsigned gap_ms;
    bool close_after;
};

static void *feeder_main(void *arg)
{
    struct feeder *fd = arg;
    tu_sleep_ms(fd->delay_ms);
    if (fd->gap_ms == 0) {
        TU_WCHECK(write_all(fd->fd, fd->data, fd->n));
    } else {
        for (size_t i = 0; i < fd->n; i++) {
            TU_WCHECK(write_all(fd->fd, fd->data + i, 1));
            tu_sleep_ms(fd->gap_ms);
        }
    }
    if (fd->close_after)
        close(fd->fd);
    return NULL;
}

static void feeder_start(struct feeder *f, int fd, const char *data, size_t n, unsigned delay_ms,
                         unsigned gap_ms, bool close_after)
{
    f->fd = fd;
    f->data = data;
    f->n = n;
    f->delay_ms = delay_ms;
    f->gap_ms = gap_ms;
    f->close_after = close_after;
    ck_assert_int_eq(pthread_create(&f->th, NULL, feeder_main, f), 0);
}

static void feeder_join(struct feeder *f)
{
    ck_assert_int_eq(pthread_join(f->th, NULL), 0);
}

/* Make sure the dispatcher has run everything queued so far. */
static void *noop_body(void *arg)
{
    return arg;
}

static void barrier(fut_runtime *rt)
{
    void *r = NULL;
    ck_assert_int_eq(fut_run(rt, noop_body, TU_PTR(5), &r), 0);
    ck_assert_ptr_eq(r, TU_PTR(5));
}

/* ------------------------------------------------------------------------
 * fut_io_wait
 * ---------------------------------------------------------------------- */

START_TEST(test_wait_basic)
{
    TU_FD_BEGIN();
    int p[2], sv[2];
    fut_future *f;
    struct feeder fd;
    unsigned ev;
    double t0;
    char c;

    g_rt = tu_rt_new(2);
    xpipe(p);
    xsocketpair(sv);

    /* A write from another thread wakes it. */
    f = fut_io_wait(g_rt, p[0], FUT_IO_READ);
    ck_assert_ptr_nonnull(f);
    tu_sleep_ms(50);
    ck_assert_int_eq(fut_state(f), FUT_PENDING);
    feeder_start(&fd, p[1], "x", 1, 30, 0, false);
    ev = settled_events(f);
    ck_assert_msg(ev & FUT_IO_READ, "events 0x%x", ev);
    ck_assert_msg(!(ev & FUT_IO_WRITE), "events 0x%x on a pipe's read end", ev);
    feeder_join(&fd);
    fut_release(f);

    /* Already readable (the byte is still there): resolves at once. */
    t0 = now_s();
    f = fut_io_wait(g_rt, p[0], FUT_IO_READ);
    ck_assert_ptr_nonnull(f);
    ev = settled_events(f);
    ck_assert_msg(ev & FUT_IO_READ, "events 0x%x", ev);
    ck_assert_msg(now_s() - t0 < 1.0 * TU_SLOW, "took %.3f s", now_s() - t0);
    fut_release(f);
    /* ... and again: level semantics, nobody read it yet. */
    f = fut_io_wait(g_rt, p[0], FUT_IO_READ | FUT_IO_WRITE);
    ck_assert_ptr_nonnull(f);
    ck_assert_msg(settled_events(f) & FUT_IO_READ, "level");
    fut_release(f);
    ck_assert_int_eq(read_some(p[0], &c, 1, 1000), 1);
    ck_assert_int_eq(c, 'x');

    /* FUT_IO_WRITE on an empty pipe: at once. */
    t0 = now_s();
    f = fut_io_wait(g_rt, p[1], FUT_IO_WRITE);
    ck_assert_ptr_nonnull(f);
    ev = settled_events(f);
    ck_assert_msg(ev & FUT_IO_WRITE, "events 0x%x", ev);
    ck_assert_msg(!(ev & FUT_IO_READ), "events 0x%x", ev);
    ck_assert_msg(now_s() - t0 < 1.0 * TU_SLOW, "took %.3f s", now_s() - t0);
    fut_release(f);

    /* Both asked on a socket with nothing to read: writable only. */
    f = fut_io_wait(g_rt, sv[0], FUT_IO_READ | FUT_IO_WRITE);
    ck_assert_ptr_nonnull(f);
    ev = settled_events(f);
    ck_assert_msg(ev == FUT_IO_WRITE, "events 0x%x", ev);
    fut_release(f);

    /* Full pipe: FUT_IO_WRITE waits until a reader makes room. */
    (void)fill_up(p[1]);
    f = fut_io_wait(g_rt, p[1], FUT_IO_WRITE);
    ck_assert_ptr_nonnull(f);
    tu_sleep_ms(50);
    ck_assert_int_eq(fut_state(f), FUT_PENDING);
    drain(p[0]);
    ck_assert_msg(settled_events(f) & FUT_IO_WRITE, "writable after the drain");
    fut_release(f);

    /* The writer hangs up: the reader sees FUT_IO_HUP. */
    ck_assert_int_eq(fut_io_detach(g_rt, p[1]), 0);
    close(p[1]);
    p[1] = -1;
    f = fut_io_wait(g_rt, p[0], FUT_IO_READ);
    ck_assert_ptr_nonnull(f);
    ev = settled_events(f);
    ck_assert_msg(ev & FUT_IO_HUP, "events 0x%x after the writer closed", ev);
    fut_release(f);

    /* The peer of a socket closes: readable (end of stream) and HUP. */
    close(sv[1]);
    sv[1] = -1;
    f = fut_io_wait(g_rt, sv[0], FUT_IO_READ);
    ck_assert_ptr_nonnull(f);
    ev = settled_events(f);
    ck_assert_msg(ev & (FUT_IO_READ | FUT_IO_HUP), "events 0x%x after the peer closed", ev);
    fut_release(f);

    ck_assert_int_eq(fut_io_detach(g_rt, p[0]), 0);
    ck_assert_int_eq(fut_io_detach(g_rt, sv[0]), 0);
    close2(p);
    close2(sv);
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

/* With a continuation. */
struct then_rec {
    int fd;
    atomic_int runs;
    atomic_int on_dispatcher;
    char got;
};

static void *on_readable(void *value, void *arg)
{
    struct then_rec *r = arg;
    atomic_fetch_add(&r->runs, 1);
    atomic_store(&r->on_dispatcher, fut_on_dispatcher(g_rt) != 0);
    TU_WCHECK(read(r->fd, &r->got, 1) == 1); /* ready: does not block */
    return TU_PTR(TU_UINT(value) | 0x1000u);
}

START_TEST(test_wait_then)
{
    TU_FD_BEGIN();
    int p[2];
    fut_future *f, *g;
    struct then_rec rec = { .fd = -1 };
    struct feeder fd;
    unsigned v;

    g_rt = tu_rt_new(2);
    xpipe(p);
    rec.fd = p[0];
    f = fut_io_wait(g_rt, p[0], FUT_IO_READ);
    ck_assert_ptr_nonnull(f);
    g = fut_then(f, on_readable, &rec);
    ck_assert_ptr_nonnull(g);
    tu_sleep_ms(30);
    ck_assert_int_eq(atomic_load(&rec.runs), 0);
    feeder_start(&fd, p[1], "q", 1, 20, 0, false);
    v = (unsigned)TU_UINT(settled_value(g, FUT_RESOLVED));
    ck_assert_msg((v & 0x1000u) && (v & FUT_IO_READ), "value 0x%x", v);
    ck_assert_int_eq(atomic_load(&rec.runs), 1);
    ck_assert_int_eq(atomic_load(&rec.on_dispatcher), 1);
    ck_assert_int_eq(rec.got, 'q');
    feeder_join(&fd);
    fut_release(g);
    fut_release(f);
    ck_assert_int_eq(fut_io_detach(g_rt, p[0]), 0);
    close2(p);
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

/* With fut_await in a coroutine: the dispatcher is free meanwhile. */
struct await_ctx {
    int fd;
    atomic_int waiting;
    unsigned ev;
    int err;
    char got;
};

static void *await_readable(void *arg)
{
    struct await_ctx *c = arg;
    fut_future *f = fut_io_wait(g_rt, c->fd, FUT_IO_READ);
    void *v;
    TU_WCHECK(f != NULL);
    if (f == NULL)
        return NULL;
    atomic_store(&c->waiting, 1);
    v = fut_await(f, &c->err);
    c->ev = (unsigned)TU_UINT(v);
    fut_release(f);
    TU_WCHECK(read(c->fd, &c->got, 1) == 1);
    return TU_PTR(1);
}

START_TEST(test_wait_await)
{
    TU_FD_BEGIN();
    int p[2];
    fut_future *co;
    struct await_ctx c = { .fd = -1 };

    g_rt = tu_rt_new(2);
    xpipe(p);
    c.fd = p[0];
    co = fut_async(g_rt, await_readable, &c);
    ck_assert_ptr_nonnull(co);
    {
        bool ok;
        TU_POLL(ok, atomic_load(&c.waiting) == 1, TU_WAIT_MS);
        ck_assert(ok);
    }
    /* Other coroutines run while it waits. */
    barrier(g_rt);
    barrier(g_rt);
    ck_assert_int_eq(fut_state(co), FUT_PENDING);
    ck_assert(write_all(p[1], "a", 1));
    ck_assert_ptr_eq(settled_value(co, FUT_RESOLVED), TU_PTR(1));
    ck_assert_int_eq(c.err, 0);
    ck_assert_msg(c.ev & FUT_IO_READ, "events 0x%x", c.ev);
    ck_assert_int_eq(c.got, 'a');
    fut_release(co);
    ck_assert_int_eq(fut_io_detach(g_rt, p[0]), 0);
    close2(p);
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

/* fut_timeout, fut_race, fut_gather. */
START_TEST(test_wait_combinators)
{
    TU_FD_BEGIN();
    int a[2], b[2], c[2];
    fut_future *f, *t, *fs[2], *r, *g;
    void **vals;
    double t0, dt;
    struct feeder fd;
    bool ok;

    g_rt = tu_rt_new(2);
    xpipe(a);
    xpipe(b);
    xpipe(c);

    /* Nothing comes: ETIMEDOUT, and the wait is cancelled. */
    f = fut_io_wait(g_rt, a[0], FUT_IO_READ);
    ck_assert_ptr_nonnull(f);
    t0 = now_s();
    t = fut_timeout(f, 0.1);
    ck_assert_ptr_nonnull(t);
    expect_rejected(t, ETIMEDOUT);
    dt = now_s() - t0;
    ck_assert_msg(dt >= 0.09 && dt < SLACK_S, "timeout after %.3f s", dt);
    ck_assert_int_eq(fut_state(f), FUT_CANCELLED);
    fut_release(t);
    fut_release(f);
    TU_POLL(ok, fut_runtime_live(g_rt) == 0, TU_WAIT_MS);
    ck_assert_msg(ok, "%llu futures live", (unsigned long long)fut_runtime_live(g_rt));
    /* The interest is gone: a write now must not touch the freed wait. */
    ck_assert(write_all(a[1], "z", 1));
    tu_sleep_ms(50);
    barrier(g_rt);
    /* ... and a new wait sees the byte. */
    f = fut_io_wait(g_rt, a[0], FUT_IO_READ);
    ck_assert_ptr_nonnull(f);
    t = fut_timeout(f, 5.0);
    ck_assert_ptr_nonnull(t);
    ck_assert_msg(TU_UINT(settled_value(t, FUT_RESOLVED)) & FUT_IO_READ, "read");
    fut_release(t);
    fut_release(f);
    drain(a[0]);

    /* fut_race of two waits: the pipe written decides. */
    fs[0] = fut_io_wait(g_rt, a[0], FUT_IO_READ);
    fs[1] = fut_io_wait(g_rt, b[0], FUT_IO_READ);
    ck_assert_ptr_nonnull(fs[0]);
    ck_assert_ptr_nonnull(fs[1]);
    r = fut_race(g_rt, fs, 2, FUT_CANCEL_REST);
    ck_assert_ptr_nonnull(r);
    feeder_start(&fd, b[1], "b", 1, 30, 0, false);
    ck_assert_msg(TU_UINT(settled_value(r, FUT_RESOLVED)) & FUT_IO_READ, "race value");
    ck_assert_int_eq(fut_state(fs[1]), FUT_RESOLVED);
    TU_POLL(ok, fut_state(fs[0]) == FUT_CANCELLED, TU_WAIT_MS);
    ck_assert_msg(ok, "the other wait: state %d", fut_state(fs[0]));
    feeder_join(&fd);
    fut_release(r);
    fut_release(fs[0]);
    fut_release(fs[1]);

    /* fut_race of a wait and a sleep: the sleep wins (value NULL). */
    fs[0] = fut_io_wait(g_rt, a[0], FUT_IO_READ);
    fs[1] = fut_sleep(g_rt, 0.05);
    r = fut_race(g_rt, fs, 2, FUT_CANCEL_REST);
    ck_assert_ptr_nonnull(r);
    ck_assert_ptr_null(settled_value(r, FUT_RESOLVED));
    TU_POLL(ok, fut_state(fs[0]) == FUT_CANCELLED, TU_WAIT_MS);
    ck_assert_msg(ok, "the wait: state %d", fut_state(fs[0]));
    fut_release(r);
    fut_release(fs[0]);
    fut_release(fs[1]);

    /* fut_gather: one ready at once (b still has its byte), one later. */
    fs[0] = fut_io_wait(g_rt, b[0], FUT_IO_READ);
    fs[1] = fut_io_wait(g_rt, c[0], FUT_IO_READ);
    g = fut_gather(g_rt, fs, 2, 0);
    ck_assert_ptr_nonnull(g);
    tu_sleep_ms(30);
    ck_assert_int_eq(fut_state(g), FUT_PENDING);
    feeder_start(&fd, c[1], "c", 1, 10, 0, false);
    vals = settled_value(g, FUT_RESOLVED);
    ck_assert_ptr_nonnull(vals);
    ck_assert_msg(TU_UINT(vals[0]) & FUT_IO_READ, "item 0: 0x%x", (unsigned)TU_UINT(vals[0]));
    ck_assert_msg(TU_UINT(vals[1]) & FUT_IO_READ, "item 1: 0x%x", (unsigned)TU_UINT(vals[1]));
    feeder_join(&fd);
    fut_release(g);
    fut_release(fs[0]);
    fut_release(fs[1]);

    /* A gather with a timeout over a wait that never comes. */
    fs[0] = fut_io_wait(g_rt, b[1], FUT_IO_WRITE);
    fs[1] = fut_io_wait(g_rt, a[0], FUT_IO_READ);
    g = fut_gather(g_rt, fs, 2, 0);
    t = fut_timeout(g, 0.05);
    expect_rejected(t, ETIMEDOUT);
    TU_POLL(ok, fut_state(fs[1]) == FUT_CANCELLED, TU_WAIT_MS);
    ck_assert_msg(ok, "the pending item: state %d", fut_state(fs[1]));
    fut_release(t);
    fut_release(g);
    fut_release(fs[0]);
    fut_release(fs[1]);

    int all[] = { a[0], a[1], b[0], b[1], c[0], c[1] };
    for (size_t i = 0; i < TU_ARRAY_LEN(all); i++)
        ck_assert_int_eq(fut_io_detach(g_rt, all[i]), 0);
    close2(a);
    close2(b);
    close2(c);
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

/* Cancelling waits leaks nothing, and the descriptor can be waited on
 * again afterwards. */
START_TEST(test_wait_cancel)
{
    TU_FD_BEGIN();
    int p[2];
    fut_future *f;
    bool ok;

    g_rt = tu_rt_new(2);
    xpipe(p);
    for (int i = 0; i < 300; i++) {
        f = fut_io_wait(g_rt, p[0], FUT_IO_READ);
        TU_REQUIRE(f != NULL, "fut_io_wait %d: %s", i, strerror(errno));
        if (i % 10 == 0)
            tu_sleep_ms(2); /* let the dispatcher add the interest first */
        TU_REQUIRE(fut_cancel(f) == 0, "cancel %d", i);
        TU_REQUIRE(fut_state(f) == FUT_CANCELLED, "state %d", fut_state(f));
        fut_release(f);
    }
    /* Several waiters on one descriptor, some cancelled, some not. */
    {
        fut_future *w[8];
        for (int k = 0; k < 8; k++) {
            w[k] = fut_io_wait(g_rt, p[0], FUT_IO_READ);
            ck_assert_ptr_nonnull(w[k]);
        }
        tu_sleep_ms(20);
        for (int k = 0; k < 8; k += 2)
            ck_assert_int_eq(fut_cancel(w[k]), 0);
        ck_assert(write_all(p[1], "w", 1));
        for (int k = 1; k < 8; k += 2)
            ck_assert_msg(settled_events(w[k]) & FUT_IO_READ, "waiter %d", k);
        for (int k = 0; k < 8; k++) {
            if (k % 2 == 0)
                ck_assert_int_eq(fut_state(w[k]), FUT_CANCELLED);
            fut_release(w[k]);
        }
        drain(p[0]);
    }
    TU_POLL(ok, fut_runtime_live(g_rt) == 0, TU_WAIT_MS);
    ck_assert_msg(ok, "%llu futures live after the cancels",
                  (unsigned long long)fut_runtime_live(g_rt));
    ck_assert(write_all(p[1], "k", 1));
    tu_sleep_ms(20);
    f = fut_io_wait(g_rt, p[0], FUT_IO_READ);
    ck_assert_ptr_nonnull(f);
    ck_assert_msg(settled_events(f) & FUT_IO_READ, "read after the cancels");
    ck_assert_int_eq(fut_cancel(f), EALREADY);
    fut_release(f);
    ck_assert_int_eq(fut_io_detach(g_rt, p[0]), 0);
    close2(p);
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

/* Readiness futures made, cancelled, timed out and made ready from
 * several threads at once: each one settles exactly once (resolved with
 * READ, or cancelled, or rejected with ETIMEDOUT by its timeout), its
 * descriptor's list of waiters stays sound (the dispatcher unlinks what
 * other threads cancel), and every future is freed. */
#define RACE_THREADS 4
#define RACE_ROUNDS (2500 / TU_SLOW)

struct race_arg {
    int rfd, wfd;
    unsigned seed;
    long resolved, cancelled, timedout;
};

static void *race_thread(void *arg)
{
    struct race_arg *a = arg;
    long r;

    for (r = 0; r < RACE_ROUNDS; r++) {
        fut_future *f = fut_io_wait(g_rt, a->rfd, FUT_IO_READ), *t = NULL;
        unsigned pick = (a->seed = a->seed * 1103515245u + 12345u) >> 16;
        int st;

        if (f == NULL)
            return (void *)"fut_io_wait";
        switch (pick % 4) {
        case 0: /* cancel at once: maybe before its registration ran */
            fut_cancel(f);
            break;
        case 1: /* make it ready */
            if (write(a->wfd, "x", 1) != 1)
                return (void *)"write";
            break;
        case 2: /* a short timeout */
            t = fut_timeout(f, 0.0002);
            if (t == NULL)
                return (void *)"fut_timeout";
            break;
        default: /* cancel a moment later, when it is likely linked */
            sched_yield();
            fut_cancel(f);
            break;
        }
        if (fut_wait(t != NULL ? t : f, 10.0 * TU_SLOW) != 0 ||
            (t != NULL && fut_wait(f, 10.0 * TU_SLOW) != 0))
            return (void *)"a wait never settled";
        st = fut_state(f);
        if (st == FUT_RESOLVED) {
            if (!((uintptr_t)fut_value(f) & FUT_IO_READ))
                return (void *)"resolved without FUT_IO_READ";
            a->resolved++;
        } else if (st == FUT_CANCELLED) {
            a->cancelled++;
        } else {
            return (void *)"rejected";
        }
        if (t != NULL) {
            if (fut_state(t) == FUT_REJECTED && fut_error(t) == ETIMEDOUT)
                a->timedout++;
            fut_release(t);
        }
        fut_release(f);
    }
    return NULL;
}

START_TEST(test_wait_cancel_races)
{
    TU_FD_BEGIN();
    struct race_arg a[RACE_THREADS];
    pthread_t th[RACE_THREADS];
    int p[RACE_THREADS][2], i;
    long resolved = 0, cancelled = 0, timedout = 0;
    bool ok;

    g_rt = tu_rt_new(2);
    for (i = 0; i < RACE_THREADS; i++) {
        xpipe(p[i]);
        a[i] = (struct race_arg){ .rfd = p[i][0], .wfd = p[i][1], .seed = 77u + (unsigned)i };
        ck_assert_int_eq(pthread_create(&th[i], NULL, race_thread, &a[i]), 0);
    }
    for (i = 0; i < RACE_THREADS; i++) {
        void *err = NULL;
        ck_assert_int_eq(pthread_join(th[i], &err), 0);
        ck_assert_msg(err == NULL, "thread %d: %s", i, (const char *)err);
        resolved += a[i].resolved;
        cancelled += a[i].cancelled;
        timedout += a[i].timedout;
    }
    ck_assert_int_eq(resolved + cancelled, (long)RACE_THREADS * RACE_ROUNDS);
    ck_assert_int_gt(resolved, 0);
    ck_assert_int_gt(cancelled, 0);
    TU_POLL(ok, fut_runtime_live(g_rt) == 0, TU_WAIT_MS);
    ck_assert_msg(ok, "%llu futures live", (unsigned long long)fut_runtime_live(g_rt));
    (void)timedout; /* how many timeouts won depends on the machine */
    for (i = 0; i < RACE_THREADS; i++) {
        ck_assert_int_eq(fut_io_detach(g_rt, p[i][0]), 0);
        close2(p[i]);
    }
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

START_TEST(test_wait_bad_args)
{
    TU_FD_BEGIN();
    int p[2], file, dir;
    char tmpl[] = "/tmp/test_io_XXXXXX";
    fut_future *f;
    const unsigned bad[] = { 0u, 0x100u, FUT_IO_ERR, FUT_IO_HUP, FUT_IO_READ | 0x100u,
                             FUT_IO_WRITE | FUT_IO_HUP, ~0u };

    g_rt = tu_rt_new(2);
    xpipe(p);
    errno = 0;
    ck_assert_ptr_null(fut_io_wait(g_rt, -1, FUT_IO_READ));
    ck_assert_int_eq(errno, EINVAL);
    for (size_t i = 0; i < TU_ARRAY_LEN(bad); i++) {
        errno = 0;
        f = fut_io_wait(g_rt, p[0], bad[i]);
        ck_assert_msg(f == NULL && errno == EINVAL, "events 0x%x: %p errno %d", bad[i], (void *)f,
                      errno);
    }

    /* A regular file and a directory: always ready, refused with EPERM. */
    file = mkstemp(tmpl);
    ck_assert_int_ge(file, 0);
    unlink(tmpl);
    ck_assert(write_all(file, "data", 4));
    f = fut_io_wait(g_rt, file, FUT_IO_READ);
    ck_assert_ptr_nonnull(f);
    expect_rejected(f, EPERM);
    fut_release(f);
    f = fut_io_wait(g_rt, file, FUT_IO_WRITE);
    ck_assert_ptr_nonnull(f);
    expect_rejected(f, EPERM);
    fut_release(f);
    dir = open("/", O_RDONLY | O_DIRECTORY);
    ck_assert_int_ge(dir, 0);
    f = fut_io_wait(g_rt, dir, FUT_IO_READ);
    ck_assert_ptr_nonnull(f);
    expect_rejected(f, EPERM);
    fut_release(f);

    /* A number that is not open: EBADF. */
    ck_assert(!fd_is_open(NOT_OPEN_FD));
    f = fut_io_wait(g_rt, NOT_OPEN_FD, FUT_IO_READ);
    ck_assert_ptr_nonnull(f);
    expect_rejected(f, EBADF);
    fut_release(f);

    /* fut_io_detach and fut_close arguments. */
    ck_assert_int_eq(fut_io_detach(g_rt, -1), EINVAL);
    ck_assert_int_eq(fut_io_detach(g_rt, p[0]), 0);        /* never watched */
    ck_assert_int_eq(fut_io_detach(g_rt, NOT_OPEN_FD), 0); /* not watched either */
    ck_assert_int_eq(fut_close(NOT_OPEN_FD), -EBADF);
    {
        int r = fut_close(-1);
        ck_assert_msg(r == -EINVAL || r == -EBADF, "fut_close(-1) = %d", r);
    }
    /* fut_close of a plain descriptor on the main thread closes it. */
    ck_assert_int_eq(fut_close(file), 0);
    ck_assert(!fd_is_open(file));
    ck_assert_int_eq(fut_close(dir), 0);
    ck_assert(!fd_is_open(dir));

    close2(p);
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

/* ------------------------------------------------------------------------
 * The calls, each body run both in a coroutine and on the main thread
 * ---------------------------------------------------------------------- */

/* Run body in a coroutine of g_rt (fut_run), then on this thread. */
static void both_worlds(fut_work_fn body)
{
    void *r = NULL;
    int rc = fut_run(g_rt, body, NULL, &r);
    ck_assert_msg(rc == 0, "fut_run: %d (%s)", rc, strerror(rc));
    ck_assert_ptr_eq(r, TU_PTR(1));
    TU_ASSERT_NO_WFAIL();
    ck_assert_ptr_eq(body(NULL), TU_PTR(1));
    TU_ASSERT_NO_WFAIL();
}

static const char msg_text[] = "a message that arrives one byte at a time\n";

/* Partial reads, end of stream, data that comes later. */
static void *partial_body(void *arg)
{
    int p[2], sv[2], nreads = 0;
    char buf[128];
    size_t got = 0, len = sizeof msg_text - 1;
    struct feeder fd;
    ssize_t r;
    double t0;
    (void)arg;

    TU_WCHECK(pipe(p) == 0);
    feeder_start(&fd, p[1], msg_text, len, 10, 2, true);
    while (got < len) {
        r = fut_read(p[0], buf + got, sizeof buf - got, 10.0);
        TU_WCHECK(r > 0);
        if (r <= 0)
            break;
        got += (size_t)r;
        nreads++;
    }
    TU_WCHECK_EQ(got, len);
    TU_WCHECK(memcmp(buf, msg_text, len) == 0);
    TU_WCHECK(nreads > 1);
    /* The writer closes after its last byte: end of stream. */
    TU_WCHECK_EQ(fut_read(p[0], buf, sizeof buf, 10.0), 0);
    TU_WCHECK_EQ(fut_read(p[0], buf, sizeof buf, 0), 0);
    pthread_join(fd.th, NULL);
    TU_WCHECK_EQ(fut_close(p[0]), 0);

    /* The same on a socket with fut_recv, and MSG_PEEK. */
    TU_WCHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    feeder_start(&fd, sv[1], msg_text, len, 10, 2, false);
    got = 0;
    nreads = 0;
    while (got < len) {
        r = fut_recv(sv[0], buf + got, sizeof buf - got, 0, 10.0);
        TU_WCHECK(r > 0);
        if (r <= 0)
            break;
        got += (size_t)r;
        nreads++;
    }
    TU_WCHECK_EQ(got, len);
    TU_WCHECK(memcmp(buf, msg_text, len) == 0);
    TU_WCHECK(nreads > 1);
    pthread_join(fd.th, NULL);
    /* Data that comes later: the call waits for it. */
    feeder_start(&fd, sv[1], "peek", 4, 100, 0, false);
    t0 = now_s();
    TU_WCHECK_EQ(fut_recv(sv[0], buf, 4, MSG_PEEK | MSG_WAITALL, 10.0), 4);
    TU_WCHECK(now_s() - t0 >= 0.05);
    pthread_join(fd.th, NULL);
    TU_WCHECK_EQ(fut_recv(sv[0], buf, sizeof buf, 0, 10.0), 4);
    TU_WCHECK(memcmp(buf, "peek", 4) == 0);
    /* fut_send the other way, then the peer's end of stream. */
    TU_WCHECK_EQ(fut_send(sv[0], "back", 4, 0, 5.0), 4);
    TU_WCHECK_EQ(read_some(sv[1], buf, sizeof buf, 5000), 4);
    TU_WCHECK(memcmp(buf, "back", 4) == 0);
    TU_WCHECK_EQ(fut_write(sv[0], "more", 4, 5.0), 4);
    TU_WCHECK_EQ(read_some(sv[1], buf, sizeof buf, 5000), 4);
    close(sv[1]);
    TU_WCHECK_EQ(fut_recv(sv[0], buf, sizeof buf, 0, 10.0), 0);
    TU_WCHECK_EQ(fut_read(sv[0], buf, sizeof buf, 10.0), 0);
    /* n == 0 reads nothing, also with a NULL buffer. */
    TU_WCHECK_EQ(fut_read(sv[0], buf, 0, 1.0), 0);
    TU_WCHECK_EQ(fut_read(sv[0], NULL, 0, 1.0), 0);
    TU_WCHECK_EQ(fut_close(sv[0]), 0);
    return TU_PTR(1);
}

START_TEST(test_calls_partial)
{
    TU_FD_BEGIN();
    g_rt = tu_rt_new(2);
    both_worlds(partial_body);
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

/* A slow reader: reads chunk bytes at a time, sleeps 1 ms every 64 reads,
 * checks every byte against pattern(), until end of stream. */
struct slow_reader {
    pthread_t th;
    int fd;
    size_t chunk;
    size_t total;
    size_t bad;      /* bytes that did not match */
    size_t first_bad;
};

static void *slow_reader_main(void *arg)
{
    struct slow_reader *s = arg;
    unsigned char *buf = malloc(s->chunk);
    unsigned reads = 0;
    TU_WCHECK(buf != NULL);
    for (;;) {
        ssize_t k = read_some(s->fd, buf, s->chunk, 20000);
        if (k <= 0) {
            TU_WCHECK(k == 0);
            break;
        }
        for (ssize_t i = 0; i < k; i++)
            if (buf[i] != pattern(s->total + (size_t)i) && s->bad++ == 0)
                s->first_bad = s->total + (size_t)i;
        s->total += (size_t)k;
        if (++reads % 64 == 0)
            tu_sleep_ms(1);
    }
    free(buf);
    return NULL;
}

#define BIG (16u << 20)

static unsigned char *big_buffer(size_t n)
{
    unsigned char *b = malloc(n);
    ck_assert_ptr_nonnull(b);
    for (size_t i = 0; i < n; i++)
        b[i] = pattern(i);
    return b;
}

struct big_ctx {
    int fd;
    const unsigned char *buf;
    size_t n;
    bool use_send;
    ssize_t r;
    atomic_int done;
};

static void *big_writer(void *arg)
{
    struct big_ctx *c = arg;
    if (c->use_send)
        c->r = fut_send(c->fd, c->buf, c->n, 0, 60.0 * TU_SLOW);
    else
        c->r = fut_write(c->fd, c->buf, c->n, 60.0 * TU_SLOW);
    TU_WCHECK_EQ(fut_close(c->fd), 0); /* the reader sees end of stream */
    atomic_store(&c->done, 1);
    return NULL;
}

static void big_transfer(bool socket, bool in_coroutine)
{
    int p[2];
    struct slow_reader sr = { .chunk = 1000 };
    struct big_ctx c = { .n = socket ? (4u << 20) : BIG, .use_send = socket };
    unsigned char *buf = big_buffer(c.n);
    fut_future *co = NULL;

    if (socket)
        xsocketpair(p);
    else
        xpipe(p);
    sr.fd = p[0];
    c.fd = p[1];
    c.buf = buf;
    ck_assert_int_eq(pthread_create(&sr.th, NULL, slow_reader_main, &sr), 0);
    if (in_coroutine) {
        co = fut_async(g_rt, big_writer, &c);
        ck_assert_ptr_nonnull(co);
        /* The dispatcher is not held by the writer. */
        while (!atomic_load(&c.done) && fut_state(co) == FUT_PENDING) {
            double t0 = now_s();
            barrier(g_rt);
            ck_assert_msg(now_s() - t0 < 1.0 * TU_SLOW,
                          "a coroutine waited %.3f s for the dispatcher", now_s() - t0);
            tu_sleep_ms(20);
        }
        TU_SETTLE(co);
        ck_assert_int_eq(fut_state(co), FUT_RESOLVED);
        fut_release(co);
    } else {
        big_writer(&c);
    }
    ck_assert_int_eq(pthread_join(sr.th, NULL), 0);
    ck_assert_msg(c.r == (ssize_t)c.n, "%s returned %zd of %zu", socket ? "fut_send" : "fut_write",
                  c.r, c.n);
    ck_assert_msg(sr.total == c.n, "the reader got %zu of %zu bytes", sr.total, c.n);
    ck_assert_msg(sr.bad == 0, "%zu bytes differ, the first at offset %zu", sr.bad, sr.first_bad);
    close(p[0]);
    free(buf);
}

START_TEST(test_calls_big_write)
{
    TU_FD_BEGIN();
    g_rt = tu_rt_new(2);
    big_transfer(false, true);
    big_transfer(true, true);
    big_transfer(false, false);
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

/* Timeouts: each call's, the whole call's, and 0 = try once. */
static void *timeout_body(void *arg)
{
    int p[2], sv[2];
    char buf[64];
    ssize_t r;
    double t0, dt;
    (void)arg;

    TU_WCHECK(pipe(p) == 0);
    TU_WCHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);

#define TIMED(call, want, lo, hi)                                                        \
    do {                                                                                 \
        t0 = now_s();                                                                    \
        r = (call);                                                                      \
        dt = now_s() - t0;                                                               \
        TU_WCHECK_EQ(r, want);                                                           \
        if (dt < (lo) || dt > (hi))                                                      \
            tu_wfail(__FILE__, __LINE__, "%s took %.3f s, not in [%.3f, %.3f]", #call, dt, \
                     (double)(lo), (double)(hi));                                        \
    } while (0)

    TIMED(fut_read(p[0], buf, sizeof buf, 0.1), -ETIMEDOUT, 0.08, SLACK_S);
    TIMED(fut_recv(sv[0], buf, sizeof buf, 0, 0.1), -ETIMEDOUT, 0.08, SLACK_S);
    TIMED(fut_read(p[0], buf, sizeof buf, 0), -ETIMEDOUT, 0, 0.5 * TU_SLOW);
    TIMED(fut_recv(sv[0], buf, sizeof buf, 0, 0), -ETIMEDOUT, 0, 0.5 * TU_SLOW);

    /* Data there: timeout 0 reads it. */
    TU_WCHECK(write_all(p[1], "ab", 2));
    TIMED(fut_read(p[0], buf, sizeof buf, 0), 2, 0, 0.5 * TU_SLOW);
    TU_WCHECK(send(sv[1], "cd", 2, 0) == 2);
    TIMED(fut_recv(sv[0], buf, sizeof buf, 0, 0), 2, 0, 0.5 * TU_SLOW);

    /* Full buffers: writes time out. */
    (void)fill_up(p[1]);
    (void)fill_up(sv[0]);
    TIMED(fut_write(p[1], "x", 1, 0.1), -ETIMEDOUT, 0.08, SLACK_S);
    TIMED(fut_send(sv[0], "x", 1, 0, 0.1), -ETIMEDOUT, 0.08, SLACK_S);
    TIMED(fut_write(p[1], "x", 1, 0), -ETIMEDOUT, 0, 0.5 * TU_SLOW);
    TIMED(fut_send(sv[0], "x", 1, 0, 0), -ETIMEDOUT, 0, 0.5 * TU_SLOW);
    /* Room again: timeout 0 writes what fits at once. */
    drain(p[0]);
    TIMED(fut_write(p[1], "x", 1, 0), 1, 0, 0.5 * TU_SLOW);
    drain(p[0]);
    drain(sv[1]);
    TU_WCHECK(fut_close(p[0]) == 0);
    TU_WCHECK(fut_close(p[1]) == 0);
    TU_WCHECK(fut_close(sv[0]) == 0);
    TU_WCHECK(fut_close(sv[1]) == 0);
    return TU_PTR(1);
}

START_TEST(test_calls_timeouts)
{
    TU_FD_BEGIN();
    g_rt = tu_rt_new(2);
    both_worlds(timeout_body);
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

/* The timeout bounds the whole call, not each wait: a reader that takes
 * 4 KiB every 20 ms (about 200 KB/s) and a 4 MiB write with 0.3 s. */
struct trickle {
    pthread_t th;
    int fd;
    atomic_int stop;
};

static void *trickle_main(void *arg)
{
    struct trickle *t = arg;
    char buf[4096];
    for (;;) {
        ssize_t k = read_some(t->fd, buf, atomic_load(&t->stop) ? sizeof buf : 4096, 20000);
        if (k <= 0)
            break;
        if (!atomic_load(&t->stop))
            tu_sleep_ms(20);
    }
    return NULL;
}

static void *whole_call_body(void *arg)
{
    int p[2];
    struct trickle t = { .fd = -1 };
    size_t n = 4u << 20;
    char *buf = calloc(1, n);
    ssize_t r;
    double t0, dt;
    (void)arg;

    TU_WCHECK(buf != NULL && pipe(p) == 0);
    t.fd = p[0];
    TU_WCHECK(pthread_create(&t.th, NULL, trickle_main, &t) == 0);
    TIMED(fut_write(p[1], buf, n, 0.3), -ETIMEDOUT, 0.25, 2.0 * TU_SLOW);
    atomic_store(&t.stop, 1);
    TU_WCHECK(fut_close(p[1]) == 0);
    pthread_join(t.th, NULL);
    close(p[0]);
    free(buf);
    return TU_PTR(1);
}

START_TEST(test_calls_whole_timeout)
{
    TU_FD_BEGIN();
    g_rt = tu_rt_new(2);
    both_worlds(whole_call_body);
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

/* EPIPE, never SIGPIPE (left at its default disposition: a SIGPIPE kills
 * the test). */

/* Reads 100 bytes, then closes the read end. */
static void *read_then_close(void *arg)
{
    int fd = *(int *)arg;
    char buf[100];
    size_t got = 0;
    while (got < sizeof buf) {
        ssize_t k = read_some(fd, buf + got, sizeof buf - got, 20000);
        if (k <= 0)
            break;
        got += (size_t)k;
    }
    TU_WCHECK_EQ(got, sizeof buf);
    close(fd);
    return NULL;
}

static void *epipe_body(void *arg)
{
    int p[2], sv[2];
    size_t n = 1u << 20;
    char *buf = calloc(1, n);
    pthread_t th;
    (void)arg;

    TU_WCHECK(buf != NULL);
    TU_WCHECK(pipe(p) == 0);
    close(p[0]);
    TU_WCHECK_EQ(fut_write(p[1], "x", 1, 1.0), -EPIPE);
    TU_WCHECK_EQ(fut_write(p[1], "x", 1, 0), -EPIPE);
    TU_WCHECK_EQ(fut_close(p[1]), 0);

    TU_WCHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    close(sv[1]);
    TU_WCHECK_EQ(fut_send(sv[0], "x", 1, 0, 1.0), -EPIPE);
    TU_WCHECK_EQ(fut_write(sv[0], "x", 1, 1.0), -EPIPE);
    TU_WCHECK_EQ(fut_close(sv[0]), 0);

    /* The reader goes away in the middle of a long write. */
    TU_WCHECK(pipe(p) == 0);
    TU_WCHECK(pthread_create(&th, NULL, read_then_close, &p[0]) == 0);
    TU_WCHECK_EQ(fut_write(p[1], buf, n, 10.0), -EPIPE);
    pthread_join(th, NULL);
    TU_WCHECK_EQ(fut_close(p[1]), 0);

    TU_WCHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    TU_WCHECK(pthread_create(&th, NULL, read_then_close, &sv[1]) == 0);
    TU_WCHECK_EQ(fut_send(sv[0], buf, n, 0, 10.0), -EPIPE);
    pthread_join(th, NULL);
    TU_WCHECK_EQ(fut_close(sv[0]), 0);
    free(buf);
    return TU_PTR(1);
}

START_TEST(test_calls_epipe)
{
    TU_FD_BEGIN();
    sigset_t set;

    signal(SIGPIPE, SIG_DFL);
    g_rt = tu_rt_new(2);
    both_worlds(epipe_body);
    /* The main thread's calls left no SIGPIPE blocked or pending behind. */
    ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, NULL, &set), 0);
    ck_assert(!sigismember(&set, SIGPIPE));
    ck_assert_int_eq(sigpending(&set), 0);
    ck_assert(!sigismember(&set, SIGPIPE));
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST
/* -EBADF and -EINVAL. */
static void *bad_body(void *arg)
{
    int p[2], sv[2];
    char buf[8];
    (void)arg;

    TU_WCHECK(!fd_is_open(NOT_OPEN_FD));
    TU_WCHECK_EQ(fut_read(NOT_OPEN_FD, buf, sizeof buf, 1.0), -EBADF);
    TU_WCHECK_EQ(fut_write(NOT_OPEN_FD, "x", 1, 1.0), -EBADF);
    TU_WCHECK_EQ(fut_recv(NOT_OPEN_FD, buf, sizeof buf, 0, 1.0), -EBADF);
    TU_WCHECK_EQ(fut_send(NOT_OPEN_FD, "x", 1, 0, 1.0), -EBADF);
    TU_WCHECK_EQ(fut_read(-1, buf, sizeof buf, 1.0) < 0, 1);

    TU_WCHECK(pipe(p) == 0);
    TU_WCHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    TU_WCHECK(write_all(p[1], "d", 1));
    TU_WCHECK(send(sv[1], "d", 1, 0) == 1);
    TU_WCHECK_EQ(fut_read(p[0], NULL, 1, 1.0), -EINVAL);
    TU_WCHECK_EQ(fut_write(p[1], NULL, 1, 1.0), -EINVAL);
    TU_WCHECK_EQ(fut_recv(sv[0], NULL, 1, 0, 1.0), -EINVAL);
    TU_WCHECK_EQ(fut_send(sv[0], NULL, 1, 0, 1.0), -EINVAL);
    TU_WCHECK_EQ(fut_read(p[0], buf, 1, NAN), -EINVAL);
    TU_WCHECK_EQ(fut_write(p[1], "x", 1, NAN), -EINVAL);
    TU_WCHECK_EQ(fut_recv(sv[0], buf, 1, 0, NAN), -EINVAL);
    TU_WCHECK_EQ(fut_send(sv[0], "x", 1, 0, NAN), -EINVAL);
    /* The refused calls did not read or write. */
    TU_WCHECK_EQ(fut_read(p[0], buf, sizeof buf, 1.0), 1);
    TU_WCHECK_EQ(fut_read(p[0], buf, sizeof buf, 0), -ETIMEDOUT);
    TU_WCHECK_EQ(fut_recv(sv[0], buf, sizeof buf, 0, 1.0), 1);
    TU_WCHECK_EQ(fut_recv(sv[1], buf, sizeof buf, 0, 0), -ETIMEDOUT);
    /* An infinite timeout is "no limit", not an error. */
    TU_WCHECK(write_all(p[1], "e", 1));
    TU_WCHECK_EQ(fut_read(p[0], buf, sizeof buf, INFINITY), 1);
    TU_WCHECK(write_all(p[1], "e", 1));
    TU_WCHECK_EQ(fut_read(p[0], buf, sizeof buf, -1.0), 1);
    TU_WCHECK_EQ(fut_close(p[0]), 0);
    TU_WCHECK_EQ(fut_close(p[1]), 0);
    TU_WCHECK_EQ(fut_close(sv[0]), 0);
    TU_WCHECK_EQ(fut_close(sv[1]), 0);
    /* Closed now. */
    TU_WCHECK_EQ(fut_read(sv[0], buf, sizeof buf, 1.0), -EBADF);
    return TU_PTR(1);
}

START_TEST(test_calls_bad)
{
    TU_FD_BEGIN();
    g_rt = tu_rt_new(2);
    both_worlds(bad_body);
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

/* Cancel a coroutine while it waits in each call. */
enum { OP_READ, OP_WRITE, OP_RECV, OP_SEND, OP_COUNT };

struct cancel_ctx {
    int op;
    int fd;
    atomic_int entered;
    atomic_int ended;
    ssize_t r1, r2;
    int yield_rc;
};

static ssize_t do_op(int op, int fd, double timeout)
{
    char buf[16];
    switch (op) {
    case OP_READ:
        return fut_read(fd, buf, sizeof buf, timeout);
    case OP_WRITE:
        return fut_write(fd, "0123456789", 10, timeout);
    case OP_RECV:
        return fut_recv(fd, buf, sizeof buf, 0, timeout);
    default:
        return fut_send(fd, "0123456789", 10, 0, timeout);
    }
}

static void *cancel_body(void *arg)
{
    struct cancel_ctx *c = arg;
    atomic_store(&c->entered, 1);
    c->r1 = do_op(c->op, c->fd, 30.0);
    /* The cancel was taken: the next calls wait as usual. */
    c->r2 = do_op(c->op, c->fd, 0.05);
    c->yield_rc = fut_yield();
    atomic_fetch_add(&c->ended, 1);
    return TU_PTR(7);
}

static const char *op_name(int op)
{
    static const char *names[] = { "fut_read", "fut_write", "fut_recv", "fut_send" };
    return names[op];
}

START_TEST(test_calls_cancel)
{
    TU_FD_BEGIN();
    g_rt = tu_rt_new(2);
    for (int op = 0; op < OP_COUNT; op++) {
        int p[2];
        struct cancel_ctx c = { .op = op };
        fut_future *co;
        bool ok;
        double t0, dt;

        if (op == OP_RECV || op == OP_SEND)
            xsocketpair(p);
        else
            xpipe(p);
        if (op == OP_WRITE || op == OP_SEND) {
            (void)fill_up(p[1]);
            c.fd = p[1];
        } else {
            c.fd = p[0];
        }
        co = fut_async(g_rt, cancel_body, &c);
        ck_assert_ptr_nonnull(co);
        TU_POLL(ok, atomic_load(&c.entered) == 1, TU_WAIT_MS);
        ck_assert(ok);
        tu_sleep_ms(50); /* suspended in the call by now */
        ck_assert_int_eq(fut_state(co), FUT_PENDING);
        t0 = now_s();
        ck_assert_int_eq(fut_cancel(co), 0);
        /* A task's cancel is a request: its call returns -ECANCELED, it
         * goes on to its end, and its future settles then, with what it
         * returned (it handled the cancel; see test_coro.c's test_cancel). */
        TU_SETTLE(co);
        ck_assert_int_eq(fut_state(co), FUT_RESOLVED);
        ck_assert_ptr_eq(fut_value(co), TU_PTR(7));
        TU_POLL(ok, atomic_load(&c.ended) == 1, TU_WAIT_MS);
        ck_assert_msg(ok, "%s: the cancelled coroutine did not go on to its end", op_name(op));
        dt = now_s() - t0;
        ck_assert_msg(dt < SLACK_S, "%s: the cancel took %.3f s", op_name(op), dt);
        ck_assert_msg(c.r1 == -ECANCELED, "%s: %zd, want -ECANCELED", op_name(op), c.r1);
        ck_assert_msg(c.r2 == -ETIMEDOUT, "%s after the cancel: %zd, want -ETIMEDOUT", op_name(op),
                      c.r2);
        ck_assert_int_eq(c.yield_rc, 0);
        fut_release(co);
        ck_assert_int_eq(fut_io_detach(g_rt, p[0]), 0);
        ck_assert_int_eq(fut_io_detach(g_rt, p[1]), 0);
        close2(p);
        TU_POLL(ok, fut_runtime_live(g_rt) == 0, TU_WAIT_MS);
        ck_assert_msg(ok, "%s: %llu futures live", op_name(op),
                      (unsigned long long)fut_runtime_live(g_rt));
    }
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

/* ------------------------------------------------------------------------
 * In a plain continuation: -EDEADLK before any system call
 * ---------------------------------------------------------------------- */

struct cont_ctx {
    int p[2], sv[2];
    ssize_t r[4];
    int in_coroutine;
    double dt;
};

static void *in_continuation(void *value, void *arg)
{
    struct cont_ctx *c = arg;
    char buf[4];
    double t0 = now_s();
    (void)value;
    c->in_coroutine = fut_in_coroutine();
    c->r[0] = fut_read(c->p[0], buf, sizeof buf, 1.0);
    c->r[1] = fut_write(c->p[1], "y", 1, 1.0);
    c->r[2] = fut_recv(c->sv[0], buf, sizeof buf, 0, 1.0);
    c->r[3] = fut_send(c->sv[0], "y", 1, 0, 1.0);
    c->dt = now_s() - t0;
    return TU_PTR(1);
}

START_TEST(test_continuation_edeadlk)
{
    TU_FD_BEGIN();
    struct cont_ctx c;
    fut_future *s, *t;
    char buf[8];
    ssize_t k;

    g_rt = tu_rt_new(2);
    xpipe(c.p);
    xsocketpair(c.sv);
    /* Data is there: the calls would not even block. */
    ck_assert(write_all(c.p[1], "x", 1));
    ck_assert_int_eq(send(c.sv[1], "z", 1, 0), 1);
    s = fut_sleep(g_rt, 0.001);
    t = fut_then(s, in_continuation, &c);
    ck_assert_ptr_nonnull(t);
    ck_assert_ptr_eq(settled_value(t, FUT_RESOLVED), TU_PTR(1));
    ck_assert_int_eq(c.in_coroutine, 0);
    for (int i = 0; i < 4; i++)
        ck_assert_msg(c.r[i] == -EDEADLK, "%s in a continuation: %zd, want -EDEADLK", op_name(i),
                      c.r[i]);
    ck_assert_msg(c.dt < 0.5 * TU_SLOW, "took %.3f s", c.dt);
    /* Nothing was read or written. */
    ck_assert_int_eq(read(c.p[0], buf, sizeof buf), 1);
    ck_assert_int_eq(buf[0], 'x');
    ck_assert(!fd_readable_now(c.p[0]));
    k = recv(c.sv[0], buf, sizeof buf, MSG_DONTWAIT);
    ck_assert_int_eq(k, 1);
    ck_assert_int_eq(buf[0], 'z');
    ck_assert(!fd_readable_now(c.sv[1]));
    fut_release(t);
    fut_release(s);
    close2(c.p);
    close2(c.sv);
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

/* ------------------------------------------------------------------------
 * Detach and close while awaited; a number reused after a plain close
 * ---------------------------------------------------------------------- */

struct reader_ctx {
    int fd;
    double timeout;
    atomic_int entered;
    atomic_int ended;
    ssize_t r;
};

static void *reader_body(void *arg)
{
    struct reader_ctx *c = arg;
    char buf[16];
    atomic_store(&c->entered, 1);
    c->r = fut_read(c->fd, buf, sizeof buf, c->timeout);
    atomic_fetch_add(&c->ended, 1);
    return TU_PTR(1);
}

static void *closer_body(void *arg)
{
    int fd = (int)TU_UINT(arg);
    return TU_PTR(fut_close(fd) == 0 ? 1 : 2);
}

static void start_reader(struct reader_ctx *c, fut_future **co, int fd, double timeout,
                         bool expect_wait)
{
    bool ok;
    c->fd = fd;
    c->timeout = timeout;
    atomic_store(&c->entered, 0);
    atomic_store(&c->ended, 0);
    c->r = 12345;
    *co = fut_async(g_rt, reader_body, c);
    ck_assert_ptr_nonnull(*co);
    TU_POLL(ok, atomic_load(&c->entered) == 1, TU_WAIT_MS);
    ck_assert(ok);
    if (!expect_wait)
        return;
    /* The reader has run up to its wait before this coroutine runs (one
     * dispatcher): this orders its system calls before ours for TSan. */
    barrier(g_rt);
    tu_sleep_ms(50);
    ck_assert_msg(fut_state(*co) == FUT_PENDING,
                  "the coroutine's fut_read(%d) did not wait: returned %zd", fd, c->r);
}

START_TEST(test_detach_close_awaited)
{
    TU_FD_BEGIN();
    int p[2], q[2], w[2];
    struct reader_ctx c;
    fut_future *co, *closer, *f;
    double t0;

    g_rt = tu_rt_new(2);
    xpipe(p);
    xpipe(q);
    xpipe(w);

    /* fut_io_detach from the main thread ends the coroutine's read. */
    start_reader(&c, &co, p[0], 30.0, true);
    t0 = now_s();
    ck_assert_int_eq(fut_io_detach(g_rt, p[0]), 0);
    TU_SETTLE(co);
    ck_assert_msg(now_s() - t0 < SLACK_S, "took %.3f s", now_s() - t0);
    ck_assert_msg(c.r == -EBADF, "fut_read after fut_io_detach: %zd, want -EBADF", c.r);
    ck_assert_int_eq(atomic_load(&c.ended), 1);
    fut_release(co);
    ck_assert(fd_is_open(p[0])); /* detach does not close */
    /* The descriptor can be used again afterwards. */
    ck_assert(write_all(p[1], "again", 5));
    start_reader(&c, &co, p[0], 10.0, false);
    TU_SETTLE(co);
    ck_assert_int_eq(c.r, 5);
    fut_release(co);

    /* fut_close from another coroutine of the runtime. */
    start_reader(&c, &co, q[0], 30.0, true);
    closer = fut_async(g_rt, closer_body, TU_PTR(q[0]));
    ck_assert_ptr_nonnull(closer);
    ck_assert_ptr_eq(settled_value(closer, FUT_RESOLVED), TU_PTR(1));
    TU_SETTLE(co);
    ck_assert_msg(c.r == -EBADF, "fut_read after fut_close: %zd, want -EBADF", c.r);
    fut_release(closer);
    fut_release(co);
    ck_assert(!fd_is_open(q[0]));
    q[0] = -1;

    /* A readiness future is rejected with EBADF by the detach. */
    f = fut_io_wait(g_rt, w[0], FUT_IO_READ);
    ck_assert_ptr_nonnull(f);
    tu_sleep_ms(20);
    ck_assert_int_eq(fut_io_detach(g_rt, w[0]), 0);
    expect_rejected(f, EBADF);
    fut_release(f);

    close2(p);
    close2(q);
    close2(w);
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

/* Give the number old to a new pipe; returns the new pipe in q (q[0] ==
 * old). */
static void pipe_on_number(int q[2], int old)
{
    xpipe(q);
    if (q[0] == old)
        return;
    if (q[1] == old) {
        int t = dup(q[1]);
        ck_assert_int_ge(t, 0);
        close(q[1]);
        q[1] = t;
    }
    ck_assert_int_eq(dup2(q[0], old), old);
    close(q[0]);
    q[0] = old;
}

START_TEST(test_close_reuse)
{
    TU_FD_BEGIN();
    int p[2], q[2];
    int old;
    fut_future *f1, *f2, *co;
    struct reader_ctx c;
    char buf[8];

    g_rt = tu_rt_new(2);

    /* A readiness future. */
    xpipe(p);
    old = p[0];
    f1 = fut_io_wait(g_rt, old, FUT_IO_READ);
    ck_assert_ptr_nonnull(f1);
    tu_sleep_ms(50);
    barrier(g_rt);
    ck_assert_int_eq(fut_state(f1), FUT_PENDING);
    close2(p);
    tu_sleep_ms(20);
    /* The kernel said nothing: still pending. */
    ck_assert_int_eq(fut_state(f1), FUT_PENDING);
    pipe_on_number(q, old);
    ck_assert_int_eq(q[0], old);
    f2 = fut_io_wait(g_rt, old, FUT_IO_READ);
    ck_assert_ptr_nonnull(f2);
    ck_assert(write_all(q[1], "n", 1));
    ck_assert_msg(settled_events(f2) & FUT_IO_READ, "the new pipe's wait");
    TU_SETTLE(f1);
    ck_assert_msg(fut_state(f1) != FUT_RESOLVED,
                  "the wait on the closed descriptor got the new one's event (0x%x)",
                  (unsigned)TU_UINT(fut_value(f1)));
    expect_rejected(f1, EBADF);
    fut_release(f1);
    fut_release(f2);
    /* The byte is still there for the new pipe's reader. */
    ck_assert_int_eq(read_some(q[0], buf, sizeof buf, 1000), 1);
    ck_assert_int_eq(fut_io_detach(g_rt, q[0]), 0);
    close2(q);

    /* A coroutine in fut_read. */
    xpipe(p);
    old = p[0];
    start_reader(&c, &co, old, 10.0, true);
    close2(p);
    pipe_on_number(q, old);
    f2 = fut_io_wait(g_rt, old, FUT_IO_READ);
    ck_assert_ptr_nonnull(f2);
    TU_SETTLE(co);
    ck_assert_msg(c.r == -EBADF, "fut_read on the closed number: %zd, want -EBADF", c.r);
    tu_sleep_ms(20);
    ck_assert_int_eq(fut_state(f2), FUT_PENDING);
    ck_assert(write_all(q[1], "m", 1));
    ck_assert_msg(settled_events(f2) & FUT_IO_READ, "the new pipe's wait");
    ck_assert_int_eq(read_some(q[0], buf, sizeof buf, 1000), 1);
    ck_assert_int_eq(buf[0], 'm');
    fut_release(f2);
    fut_release(co);
    /* A coroutine's read on the new descriptor works. */
    ck_assert(write_all(q[1], "ok", 2));
    start_reader(&c, &co, old, 10.0, false);
    TU_SETTLE(co);
    ck_assert_int_eq(c.r, 2);
    fut_release(co);
    ck_assert_int_eq(fut_io_detach(g_rt, q[0]), 0);
    close2(q);
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

/* ------------------------------------------------------------------------
 * fut_runtime_free while coroutines wait
 * ---------------------------------------------------------------------- */

#define NWAITERS 8

struct free_ctx {
    int fd;
    int op;
    atomic_int *entered;
    atomic_int *ended;
    ssize_t r;
};

static void *free_waiter(void *arg)
{
    struct free_ctx *c = arg;
    atomic_fetch_add(c->entered, 1);
    c->r = do_op(c->op, c->fd, -1.0);
    atomic_fetch_add(c->ended, 1);
    return NULL;
}

START_TEST(test_runtime_free_waiting)
{
    TU_FD_BEGIN();
    int p[NWAITERS][2];
    struct free_ctx c[NWAITERS];
    fut_future *co[NWAITERS], *w;
    atomic_int entered = 0, ended = 0;
    bool ok;

    g_rt = tu_rt_new(2);
    for (int i = 0; i < NWAITERS; i++) {
        c[i].op = i % OP_COUNT;
        if (c[i].op == OP_RECV || c[i].op == OP_SEND)
            xsocketpair(p[i]);
        else
            xpipe(p[i]);
        if (c[i].op == OP_WRITE || c[i].op == OP_SEND) {
            (void)fill_up(p[i][1]);
            c[i].fd = p[i][1];
        } else {
            c[i].fd = p[i][0];
        }
        c[i].entered = &entered;
        c[i].ended = &ended;
        c[i].r = 12345;
        co[i] = fut_async(g_rt, free_waiter, &c[i]);
        ck_assert_ptr_nonnull(co[i]);
    }
    w = fut_io_wait(g_rt, p[0][0], FUT_IO_READ);
    ck_assert_ptr_nonnull(w);
    TU_POLL(ok, atomic_load(&entered) == NWAITERS, TU_WAIT_MS);
    ck_assert(ok);
    tu_sleep_ms(50);
    ck_assert_int_eq(atomic_load(&ended), 0);
    ck_assert_int_eq(fut_runtime_free(g_rt), 0);
    ck_assert_int_eq(atomic_load(&ended), NWAITERS);
    for (int i = 0; i < NWAITERS; i++) {
        ck_assert_msg(c[i].r == -ECANCELED, "%s %d at shutdown: %zd, want -ECANCELED",
                      op_name(c[i].op), i, c[i].r);
        /* It took the shutdown's cancel and returned: its own outcome. */
        ck_assert_int_eq(fut_state(co[i]), FUT_RESOLVED);
        fut_release(co[i]);
        close2(p[i]);
    }
    ck_assert_int_eq(fut_state(w), FUT_CANCELLED);
    fut_release(w);
    TU_FD_END();
}
END_TEST

/* ------------------------------------------------------------------------
 * fork()
 * ---------------------------------------------------------------------- */

/* In the child: the first failed check's number becomes the exit status. */
#define CHILD_CHECK(n, cond)        \
    do {                            \
        if (!(cond))                \
            _exit(n);               \
    } while (0)

static void *child_writer(void *arg)
{
    int fd = *(int *)arg;
    tu_sleep_ms(30);
    if (write(fd, "c", 1) != 1)
        _exit(90);
    return NULL;
}

static void *child_coroutine(void *arg)
{
    int fd = *(int *)arg;
    char c = 0;
    if (fut_read(fd, &c, 1, 10.0) != 1 || c != 'c')
        return TU_PTR(2);
    if (fut_read(fd, &c, 1, 0.05) != -ETIMEDOUT)
        return TU_PTR(3);
    return TU_PTR(1);
}

static void child_main(fut_runtime *prt, int pfd)
{
    int q[2];
    fut_future *f;
    fut_runtime *crt;
    pthread_t th;
    void *r = NULL;
    char c;

    alarm(20 * TU_SLOW);
    /* The parent's runtime is refused. */
    f = fut_io_wait(prt, pfd, FUT_IO_READ);
    CHILD_CHECK(10, f != NULL);
    CHILD_CHECK(11, fut_state(f) == FUT_REJECTED);
    CHILD_CHECK(12, fut_error(f) == FUT_EFORKED);
    fut_release(f);
    CHILD_CHECK(13, fut_io_detach(prt, pfd) == FUT_EFORKED);
    /* A plain thread's call blocks with poll, no runtime needed. */
    CHILD_CHECK(20, pipe(q) == 0);
    CHILD_CHECK(21, pthread_create(&th, NULL, child_writer, &q[1]) == 0);
    CHILD_CHECK(22, fut_read(q[0], &c, 1, 10.0) == 1 && c == 'c');
    pthread_join(th, NULL);
    /* A runtime made here works. */
    crt = fut_runtime_new(NULL);
    CHILD_CHECK(30, crt != NULL);
    CHILD_CHECK(31, write(q[1], "r", 1) == 1);
    f = fut_io_wait(crt, q[0], FUT_IO_READ);
    CHILD_CHECK(32, f != NULL);
    CHILD_CHECK(33, fut_wait(f, 10.0) == 0);
    CHILD_CHECK(34, fut_state(f) == FUT_RESOLVED && (TU_UINT(fut_value(f)) & FUT_IO_READ));
    fut_release(f);
    CHILD_CHECK(35, read(q[0], &c, 1) == 1 && c == 'r');
    CHILD_CHECK(36, pthread_create(&th, NULL, child_writer, &q[1]) == 0);
    CHILD_CHECK(37, fut_run(crt, child_coroutine, &q[0], &r) == 0);
    CHILD_CHECK(38, r == TU_PTR(1));
    pthread_join(th, NULL);
    CHILD_CHECK(39, fut_io_detach(crt, q[0]) == 0);
    CHILD_CHECK(40, fut_runtime_free(crt) == 0);
    close(q[0]);
    close(q[1]);
    CHILD_CHECK(50, fut_runtime_free(prt) == 0); /* memory only */
    _exit(0);
}

START_TEST(test_fork)
{
    TU_FD_BEGIN();
    int p[2], s[2];
    fut_future *pending, *f;
    pid_t pid;
    int status = 0;
    uint64_t end;

    g_rt = tu_rt_new(2);
    xpipe(p);
    xpipe(s);
    /* The parent's poller exists (a wait went through it) and has a wait
     * pending at the fork. */
    ck_assert(write_all(p[1], "p", 1));
    f = fut_io_wait(g_rt, p[0], FUT_IO_READ);
    ck_assert_msg(settled_events(f) & FUT_IO_READ, "parent");
    fut_release(f);
    drain(p[0]);
    pending = fut_io_wait(g_rt, s[0], FUT_IO_READ);
    ck_assert_ptr_nonnull(pending);
    barrier(g_rt);
    tu_sleep_ms(20); /* the dispatcher is parked (see test_fork.c's quiesce) */

    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        child_main(g_rt, p[0]);

    end = tu_deadline_ms(30000u * TU_SLOW);
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        ck_assert_int_eq(r, 0);
        if (tu_now_ns() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            ck_abort_msg("the child hung");
        }
        tu_sleep_ms(2);
    }
    ck_assert_msg(WIFEXITED(status), "the child died of signal %d",
                  WIFSIGNALED(status) ? WTERMSIG(status) : -1);
    ck_assert_msg(WEXITSTATUS(status) == 0, "the child failed check %d (see child_main)",
                  WEXITSTATUS(status));

    /* The parent's poller goes on: its pending wait, and a new one. */
    ck_assert_int_eq(fut_state(pending), FUT_PENDING);
    ck_assert(write_all(s[1], "s", 1));
    ck_assert_msg(settled_events(pending) & FUT_IO_READ, "the parent's pending wait");
    fut_release(pending);
    ck_assert(write_all(p[1], "p", 1));
    f = fut_io_wait(g_rt, p[0], FUT_IO_READ);
    ck_assert_msg(settled_events(f) & FUT_IO_READ, "a wait in the parent after the fork");
    fut_release(f);
    ck_assert_int_eq(fut_io_detach(g_rt, p[0]), 0);
    ck_assert_int_eq(fut_io_detach(g_rt, s[0]), 0);
    close2(p);
    close2(s);
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

/* ------------------------------------------------------------------------
 * Fairness and exit
 * ---------------------------------------------------------------------- */

/* A coroutine that yields in a loop keeps the dispatcher busy for ever: a
 * descriptor that becomes ready meanwhile must still be seen (the
 * dispatcher looks at its poller at a bounded interval while busy). */
static int busy_seen;     /* dispatcher only */
static long busy_rounds;  /* dispatcher only */

static void *busy_spinner(void *arg)
{
    double end = now_s() + 10.0 * TU_SLOW;

    (void)arg;
    while (!busy_seen && now_s() < end) {
        busy_rounds++;
        if (fut_yield() != 0)
            break;
    }
    return NULL;
}

static void *busy_mark(void *v, void *arg)
{
    (void)v;
    (void)arg;
    busy_seen = 1;
    return NULL;
}

START_TEST(test_busy_dispatcher_polls)
{
    TU_FD_BEGIN();
    int p[2];
    fut_future *spin, *w, *c;
    double t0;

    g_rt = tu_rt_new(2);
    xpipe(p);
    busy_seen = 0;
    busy_rounds = 0;
    w = fut_io_wait(g_rt, p[0], FUT_IO_READ);
    c = fut_then(w, busy_mark, NULL);
    ck_assert_ptr_nonnull(c);
    barrier(g_rt); /* the wait is registered before the dispatcher gets busy */
    spin = fut_async(g_rt, busy_spinner, NULL);
    ck_assert_ptr_nonnull(spin);
    tu_sleep_ms(30);
    t0 = now_s();
    ck_assert(write_all(p[1], "x", 1));
    ck_assert_int_eq(fut_wait(spin, 20.0 * TU_SLOW), 0);
    ck_assert_msg(busy_seen, "a descriptor ready for 10 s was never seen while a coroutine yielded"
                             " in a loop (%ld rounds)", busy_rounds);
    ck_assert_msg(now_s() - t0 < 1.0 * TU_SLOW, "seen after %.3f s", now_s() - t0);
    ck_assert_int_gt(busy_rounds, 0);
    fut_release(spin);
    fut_release(c);
    fut_release(w);
    ck_assert_int_eq(fut_io_detach(g_rt, p[0]), 0);
    close2(p);
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

/* Returning from main (exit) while a coroutine of the default runtime
 * waits on a pipe, and while a blocking-lane job is stuck in a read that
 * never returns: the process ends promptly (the coroutine's read returns
 * -ECANCELED and it runs to its end; the stuck job is left after one
 * second). In a child, so that exit is real. */
static int exit_pipe[2], stuck_pipe[2], report_pipe[2];

static void *exit_reader(void *arg)
{
    char c;
    ssize_t n = fut_read(exit_pipe[0], &c, 1, -1);
    char r = n == -ECANCELED ? 'C' : 'X';

    (void)arg;
    (void)!write(report_pipe[1], &r, 1); /* the coroutine ran to its end */
    return NULL;
}

static void *exit_stuck(void *arg)
{
    char c;

    (void)arg;
    (void)!read(stuck_pipe[0], &c, 1); /* never written */
    return NULL;
}

START_TEST(test_exit_prompt)
{
    TU_FD_BEGIN();
    int with_stuck;

    for (with_stuck = 0; with_stuck <= 1; with_stuck++) {
        pid_t pid;
        int status = 0;
        double t0;
        char r = 0;

        xpipe(exit_pipe);
        xpipe(stuck_pipe);
        xpipe(report_pipe);
        pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            fut_future *co = fut_async(NULL, exit_reader, NULL);
            if (co == NULL)
                _exit(3);
            if (with_stuck && fut_submit_blocking(NULL, exit_stuck, NULL) == NULL)
                _exit(4);
            usleep(50000); /* both are waiting now */
            exit(0);       /* atexit: the default runtime goes */
        }
        t0 = now_s();
        for (;;) {
            pid_t w = waitpid(pid, &status, WNOHANG);
            if (w == pid)
                break;
            ck_assert_int_eq(w, 0);
            if (now_s() - t0 > 20.0 * TU_SLOW) {
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
                ck_abort_msg("exit hung (stuck job: %d)", with_stuck);
            }
            tu_sleep_ms(5);
        }
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %#x", status);
        ck_assert_msg(now_s() - t0 < (with_stuck ? 1.0 : 0) + 2.0 * TU_SLOW,
                      "exit took %.3f s (stuck job: %d)", now_s() - t0, with_stuck);
        if (!with_stuck) { /* the shutdown ran fully: the coroutine saw the cancel */
            ck_assert_int_eq(read(report_pipe[0], &r, 1), 1);
            ck_assert_int_eq(r, 'C');
        }
        close2(exit_pipe);
        close2(stuck_pipe);
        close2(report_pipe);
    }
    TU_FD_END();
}
END_TEST

static Suite *io_suite(void)
{
    Suite *s = suite_create("io");
    TCase *tc;

    tc = tu_tcase(s, "wait", 30);
    tcase_add_test(tc, test_wait_basic);
    tcase_add_test(tc, test_wait_then);
    tcase_add_test(tc, test_wait_await);
    tcase_add_test(tc, test_wait_combinators);
    tcase_add_test(tc, test_wait_cancel);
    tcase_add_test(tc, test_wait_cancel_races);
    tcase_add_test(tc, test_wait_bad_args);

    tc = tu_tcase(s, "calls", 60);
    tcase_add_test(tc, test_calls_partial);
    tcase_add_test(tc, test_calls_big_write);
    tcase_add_test(tc, test_calls_timeouts);
    tcase_add_test(tc, test_calls_whole_timeout);
    tcase_add_test(tc, test_calls_epipe);
    tcase_add_test(tc, test_calls_bad);
    tcase_add_test(tc, test_calls_cancel);
    tcase_add_test(tc, test_continuation_edeadlk);

    tc = tu_tcase(s, "lifetime", 30);
    tcase_add_test(tc, test_detach_close_awaited);
    tcase_add_test(tc, test_close_reuse);
    tcase_add_test(tc, test_runtime_free_waiting);
    tcase_add_test(tc, test_fork);
    tcase_add_test(tc, test_busy_dispatcher_polls);
    tcase_add_test(tc, test_exit_prompt);
    return s;
}

int main(void)
{
    return tu_run_suite(io_suite());
}
