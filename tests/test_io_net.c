/* test_io_net.c - TCP on 127.0.0.1: fut_tcp_listen and fut_local_port, fut_tcp_connect / fut_connect / fut_accept in coroutines and on plain threads with data both ways, refused connects, a reset by the peer, connect and accept timeouts (a full accept queue), bad names and arguments, -EDEADLK in a continuation; streams (lines that arrive a byte at a time, a line over the limit and its drain, readexactly cut short by end of stream or a timeout, readuntil with a multi-byte delimiter split across reads); fut_serve with an echo handler, fut_server_close waiting for a running handler and refusing new clients, a runtime shutdown while serving; about 10,000 concurrent connections served and answered by one runtime; and 1,000 idle connections while new clients keep getting answers. Every test ends with as many open descriptors as it began with. */
#include "testutil.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>

static fut_runtime *g_rt;

/* A descriptor number that is not open (checked where used). */
#define NOT_OPEN_FD 4000

/* Generous upper bound for "returned promptly" (seconds). */
#define SLACK_S (5.0 * TU_SLOW)

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

static void *settled_value(fut_future *f, int want_state)
{
    TU_SETTLE(f);
    ck_assert_msg(fut_state(f) == want_state, "state %d, want %d (error %d %s)", fut_state(f),
                  want_state, fut_error(f), fut_message(f));
    return fut_value(f);
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

/* Run body in a coroutine of g_rt (fut_run), then on this thread. */
static void both_worlds(fut_work_fn body, void *arg)
{
    void *r = NULL;
    int rc = fut_run(g_rt, body, arg, &r);
    ck_assert_msg(rc == 0, "fut_run: %d (%s)", rc, strerror(rc));
    ck_assert_ptr_eq(r, TU_PTR(1));
    TU_ASSERT_NO_WFAIL();
    ck_assert_ptr_eq(body(arg), TU_PTR(1));
    TU_ASSERT_NO_WFAIL();
}

static bool is_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl != -1 && (fl & O_NONBLOCK);
}

static bool is_cloexec(int fd)
{
    int fl = fcntl(fd, F_GETFD);
    return fl != -1 && (fl & FD_CLOEXEC);
}

static void port_str(char *out, size_t size, int port)
{
    snprintf(out, size, "%d", port);
}

/* A listener on 127.0.0.1 with a kernel-chosen port. */
static int listen_local(char *port, size_t size, int backlog)
{
    int lfd = fut_tcp_listen("127.0.0.1", "0", backlog);
    int p;
    ck_assert_msg(lfd >= 0, "fut_tcp_listen: %d (%s)", lfd, strerror(-lfd));
    p = fut_local_port(lfd);
    ck_assert_msg(p > 0 && p < 65536, "fut_local_port: %d", p);
    port_str(port, size, p);
    return lfd;
}

static struct sockaddr_in local_addr(int port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

/* Read exactly n bytes with fut_read (any world). */
static bool read_exact(int fd, char *buf, size_t n, double timeout)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = fut_read(fd, buf + got, n - got, timeout);
        if (r <= 0)
            return false;
        got += (size_t)r;
    }
    return true;
}

/* ------------------------------------------------------------------------
 * Listen, connect, accept, exchange
 * ---------------------------------------------------------------------- */

struct pair_ctx {
    int lfd;
    char port[16];
    const char *host; /* what the client connects to */
    atomic_int accepted;
};

/* Accept one connection, read "ping\n", answer "pong\n", close. */
static void *server_one(void *arg)
{
    struct pair_ctx *c = arg;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char buf[8];
    int fd = fut_accept(c->lfd, (struct sockaddr *)&ss, &len, 10.0);

    TU_WCHECK(fd >= 0);
    if (fd < 0)
        return TU_PTR(2);
    atomic_fetch_add(&c->accepted, 1);
    TU_WCHECK(is_nonblocking(fd));
    TU_WCHECK(is_cloexec(fd));
    TU_WCHECK(ss.ss_family == AF_INET || ss.ss_family == AF_INET6);
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        TU_WCHECK(len == sizeof *in);
        TU_WCHECK(in->sin_addr.s_addr == htonl(INADDR_LOOPBACK));
    }
    TU_WCHECK(read_exact(fd, buf, 5, 10.0));
    TU_WCHECK(memcmp(buf, "ping\n", 5) == 0);
    TU_WCHECK_EQ(fut_write(fd, "pong\n", 5, 10.0), 5);
    TU_WCHECK_EQ(fut_close(fd), 0);
    return TU_PTR(1);
}

/* Connect, send "ping\n", read "pong\n", then end of stream. */
static void *client_one(void *arg)
{
    struct pair_ctx *c = arg;
    char buf[8];
    int one = 0;
    socklen_t len = sizeof one;
    int fd = fut_tcp_connect(c->host, c->port, 10.0);

    TU_WCHECK(fd >= 0);
    if (fd < 0) {
        tu_wfail(__FILE__, __LINE__, "fut_tcp_connect(%s, %s): %d", c->host, c->port, fd);
        return TU_PTR(2);
    }
    TU_WCHECK(is_nonblocking(fd));
    TU_WCHECK(is_cloexec(fd));
    TU_WCHECK(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, &len) == 0 && one != 0);
    TU_WCHECK(fut_local_port(fd) > 0);
    TU_WCHECK_EQ(fut_send(fd, "ping\n", 5, 0, 10.0), 5);
    TU_WCHECK(read_exact(fd, buf, 5, 10.0));
    TU_WCHECK(memcmp(buf, "pong\n", 5) == 0);
    TU_WCHECK_EQ(fut_recv(fd, buf, sizeof buf, 0, 10.0), 0);
    TU_WCHECK_EQ(fut_close(fd), 0);
    return TU_PTR(1);
}

static void *thread_adapter(void *arg)
{
    return server_one(arg);
}

START_TEST(test_listen_connect)
{
    TU_FD_BEGIN();
    struct pair_ctx c = { .host = "127.0.0.1" };
    fut_future *fs[2], *g;
    pthread_t th;
    void *r;
    int p[2];

    g_rt = tu_rt_new(2);
    c.lfd = listen_local(c.port, sizeof c.port, 0);
    ck_assert(is_nonblocking(c.lfd));
    ck_assert(is_cloexec(c.lfd));
    ck_assert_int_eq(fut_local_port(c.lfd), atoi(c.port));
    ck_assert_int_lt(fut_local_port(-1), 0);
    ck_assert_int_lt(fut_local_port(NOT_OPEN_FD), 0);
    xpipe(p);
    ck_assert_int_lt(fut_local_port(p[0]), 0); /* not a socket */
    close2(p);

    /* Both in coroutines of one runtime. */
    fs[0] = fut_async(g_rt, server_one, &c);
    fs[1] = fut_async(g_rt, client_one, &c);
    g = fut_gather(g_rt, fs, 2, 0);
    ck_assert_ptr_nonnull(g);
    TU_SETTLE(g);
    ck_assert_int_eq(fut_state(g), FUT_RESOLVED);
    ck_assert_ptr_eq(((void **)fut_value(g))[0], TU_PTR(1));
    ck_assert_ptr_eq(((void **)fut_value(g))[1], TU_PTR(1));
    fut_release(g);
    fut_release(fs[0]);
    fut_release(fs[1]);
    TU_ASSERT_NO_WFAIL();

    /* Both on plain threads. */
    ck_assert_int_eq(pthread_create(&th, NULL, thread_adapter, &c), 0);
    ck_assert_ptr_eq(client_one(&c), TU_PTR(1));
    ck_assert_int_eq(pthread_join(th, &r), 0);
    ck_assert_ptr_eq(r, TU_PTR(1));
    TU_ASSERT_NO_WFAIL();

    /* Server coroutine, client on the main thread, by name: "localhost"
     * (from /etc/hosts; may give ::1 first, which refuses: the next
     * address is tried). */
    fs[0] = fut_async(g_rt, server_one, &c);
    c.host = "localhost";
    ck_assert_ptr_eq(client_one(&c), TU_PTR(1));
    ck_assert_ptr_eq(settled_value(fs[0], FUT_RESOLVED), TU_PTR(1));
    fut_release(fs[0]);
    /* ... and the client in a coroutine (the lookup goes to the blocking
     * lane). */
    fs[0] = fut_async(g_rt, server_one, &c);
    fs[1] = fut_async(g_rt, client_one, &c);
    ck_assert_ptr_eq(settled_value(fs[1], FUT_RESOLVED), TU_PTR(1));
    ck_assert_ptr_eq(settled_value(fs[0], FUT_RESOLVED), TU_PTR(1));
    fut_release(fs[0]);
    fut_release(fs[1]);
    ck_assert_int_eq(atomic_load(&c.accepted), 4);
    TU_ASSERT_NO_WFAIL();

    ck_assert_int_eq(fut_close(c.lfd), 0);
    ck_assert(!fd_is_open(c.lfd));
    ck_assert_int_eq(fut_close(c.lfd), -EBADF);
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

/* fut_connect on a socket of our own (blocking: it is made non-blocking). */
struct own_ctx {
    int lfd;
    int port;
};

static void *own_connect_body(void *arg)
{
    struct own_ctx *c = arg;
    struct sockaddr_in a = local_addr(c->port);
    char buf[4];
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int afd;

    TU_WCHECK(s >= 0);
    TU_WCHECK(!is_nonblocking(s));
    TU_WCHECK_EQ(fut_connect(s, (struct sockaddr *)&a, sizeof a, 10.0), 0);
    TU_WCHECK(is_nonblocking(s));
    afd = fut_accept(c->lfd, NULL, NULL, 10.0);
    TU_WCHECK(afd >= 0);
    TU_WCHECK_EQ(fut_write(s, "abc", 3, 10.0), 3);
    TU_WCHECK(read_exact(afd, buf, 3, 10.0));
    TU_WCHECK(memcmp(buf, "abc", 3) == 0);
    TU_WCHECK_EQ(fut_close(afd), 0);
    TU_WCHECK_EQ(fut_close(s), 0);
    return TU_PTR(1);
}

START_TEST(test_own_socket_connect)
{
    TU_FD_BEGIN();
    struct own_ctx c;
    char port[16];

    g_rt = tu_rt_new(2);
    c.lfd = listen_local(port, sizeof port, 0);
    c.port = atoi(port);
    both_worlds(own_connect_body, &c);
    ck_assert_int_eq(fut_close(c.lfd), 0);
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

/* A refused connect: listen, take the port, close, connect. */
static void *refused_body(void *arg)
{
    const char *port = arg;
    struct sockaddr_in a = local_addr(atoi(port));
    fut_stream *st;
    int s;

    TU_WCHECK_EQ(fut_tcp_connect("127.0.0.1", port, 10.0), -ECONNREFUSED);
    s = socket(AF_INET, SOCK_STREAM, 0);
    TU_WCHECK(s >= 0);
    TU_WCHECK_EQ(fut_connect(s, (struct sockaddr *)&a, sizeof a, 10.0), -ECONNREFUSED);
    close(s);
    errno = 0;
    st = fut_open_connection("127.0.0.1", port, 10.0);
    TU_WCHECK(st == NULL);
    TU_WCHECK_EQ(errno, ECONNREFUSED);
    return TU_PTR(1);
}

START_TEST(test_refused)
{
    TU_FD_BEGIN();
    char port[16];
    int lfd;

    g_rt = tu_rt_new(2);
    lfd = listen_local(port, sizeof port, 0);
    ck_assert_int_eq(fut_close(lfd), 0);
    both_worlds(refused_body, port);
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

/* Reset by the peer: SO_LINGER {1, 0} then close on the server side. */
struct reset_ctx {
    int fd;
    int use_recv;
    atomic_int entered;
    ssize_t r, w;
};

static void *reset_reader(void *arg)
{
    struct reset_ctx *c = arg;
    char buf[16];
    atomic_store(&c->entered, 1);
    if (c->use_recv)
        c->r = fut_recv(c->fd, buf, sizeof buf, 0, 10.0);
    else
        c->r = fut_read(c->fd, buf, sizeof buf, 10.0);
    c->w = fut_write(c->fd, "x", 1, 1.0);
    return TU_PTR(1);
}

static void hard_close(int fd)
{
    struct linger l = { 1, 0 };
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l), 0);
    ck_assert_int_eq(fut_close(fd), 0);
}

START_TEST(test_reset)
{
    TU_FD_BEGIN();
    char port[16];
    int lfd, cfd, afd;
    struct reset_ctx c;
    fut_future *co;
    bool ok;

    g_rt = tu_rt_new(2);
    lfd = listen_local(port, sizeof port, 0);
    for (int round = 0; round < 4; round++) {
        bool coroutine = round >= 2;
        memset(&c, 0, sizeof c);
        cfd = fut_tcp_connect("127.0.0.1", port, 10.0);
        ck_assert_int_ge(cfd, 0);
        afd = fut_accept(lfd, NULL, NULL, 10.0);
        ck_assert_int_ge(afd, 0);
        c.fd = cfd;
        c.use_recv = round % 2;
        if (coroutine) {
            /* The reader waits in the call when the reset comes. */
            co = fut_async(g_rt, reset_reader, &c);
            ck_assert_ptr_nonnull(co);
            TU_POLL(ok, atomic_load(&c.entered) == 1, TU_WAIT_MS);
            ck_assert(ok);
            tu_sleep_ms(30);
            hard_close(afd);
            ck_assert_ptr_eq(settled_value(co, FUT_RESOLVED), TU_PTR(1));
            fut_release(co);
        } else {
            hard_close(afd);
            reset_reader(&c);
        }
        ck_assert_msg(c.r == -ECONNRESET, "round %d: %s after a reset: %zd, want -ECONNRESET",
                      round, c.use_recv ? "fut_recv" : "fut_read", c.r);
        ck_assert_msg(c.w == -EPIPE || c.w == -ECONNRESET, "round %d: fut_write after a reset: %zd",
                      round, c.w);
        ck_assert_int_eq(fut_close(cfd), 0);
    }
    ck_assert_int_eq(fut_close(lfd), 0);
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

/* Timeouts of fut_accept, and of fut_connect / fut_tcp_connect against a
 * listener whose accept queue is full (backlog 1, nobody accepts: Linux
 * drops the SYNs, so the connect waits: loopback only). */
static void *accept_timeout_body(void *arg)
{
    int lfd = (int)TU_UINT(arg);
    ssize_t r;
    double t0, dt;

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

    TIMED(fut_accept(lfd, NULL, NULL, 0.1), -ETIMEDOUT, 0.08, SLACK_S);
    TIMED(fut_accept(lfd, NULL, NULL, 0), -ETIMEDOUT, 0, 0.5 * TU_SLOW);
    TU_WCHECK_EQ(fut_accept(lfd, NULL, NULL, NAN), -EINVAL);
    TU_WCHECK_EQ(fut_accept(NOT_OPEN_FD, NULL, NULL, 1.0), -EBADF);
    return TU_PTR(1);
}

struct full_ctx {
    int port;
    char port_s[16];
    int held[40];
    int nheld;
};

static void *full_queue_body(void *arg)
{
    struct full_ctx *c = arg;
    struct sockaddr_in a = local_addr(c->port);
    ssize_t r = 0;
    double t0, dt = 0;
    int timed_out = 0;

    c->nheld = 0;
    for (int i = 0; i < 40 && !timed_out; i++) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        TU_WCHECK(s >= 0);
        t0 = now_s();
        r = fut_connect(s, (struct sockaddr *)&a, sizeof a, 0.3);
        dt = now_s() - t0;
        if (r == 0) {
            c->held[c->nheld++] = s;
            continue;
        }
        TU_WCHECK_EQ(r, -ETIMEDOUT);
        if (dt < 0.25 || dt > SLACK_S)
            tu_wfail(__FILE__, __LINE__, "fut_connect timed out after %.3f s, not 0.3", dt);
        timed_out = 1;
        close(s);
    }
    if (!timed_out) {
        tu_wfail(__FILE__, __LINE__, "40 connects to a backlog-1 listener all succeeded");
        return TU_PTR(2);
    }
    /* The whole call's timeout, for fut_tcp_connect too, and 0. */
    TIMED(fut_tcp_connect("127.0.0.1", c->port_s, 0.3), -ETIMEDOUT, 0.25, SLACK_S);
    TIMED(fut_tcp_connect("127.0.0.1", c->port_s, 0), -ETIMEDOUT, 0, 0.5 * TU_SLOW);
    for (int i = 0; i < c->nheld; i++)
        close(c->held[i]);
    return TU_PTR(1);
}

START_TEST(test_timeouts)
{
    TU_FD_BEGIN();
    char port[16];
    int lfd;
    struct full_ctx c;

    g_rt = tu_rt_new(2);
    lfd = listen_local(port, sizeof port, 0);
    both_worlds(accept_timeout_body, TU_PTR(lfd));
    ck_assert_int_eq(fut_close(lfd), 0);

    for (int world = 0; world < 2; world++) {
        void *r = NULL;
        lfd = listen_local(c.port_s, sizeof c.port_s, 1);
        c.port = atoi(c.port_s);
        if (world == 0)
            ck_assert_int_eq(fut_run(g_rt, full_queue_body, &c, &r), 0);
        else
            r = full_queue_body(&c);
        TU_ASSERT_NO_WFAIL();
        ck_assert_ptr_eq(r, TU_PTR(1));
        ck_assert_int_eq(fut_close(lfd), 0);
    }
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

/* Bad names and arguments. The unknown host name case
 * ("no-such-host.invalid" -> -ENOENT or -EAGAIN) is not tested: its lookup
 * goes to the name server, and these tests use no network. An unknown
 * service name is refused from /etc/services alone. */
static void *names_body(void *arg)
{
    char taken[16];
    int lfd = fut_tcp_listen("127.0.0.1", "0", 0);
    (void)arg;

    TU_WCHECK(lfd >= 0);
    port_str(taken, sizeof taken, fut_local_port(lfd));
    TU_WCHECK_EQ(fut_tcp_connect("127.0.0.1", NULL, 1.0), -EINVAL);
    TU_WCHECK_EQ(fut_tcp_connect(NULL, taken, 1.0), -EINVAL);
    TU_WCHECK_EQ(fut_tcp_connect("127.0.0.1", taken, NAN), -EINVAL);
    TU_WCHECK_EQ(fut_tcp_connect("127.0.0.1", "no-such-service-xyzzy", 1.0), -ENOENT);
    TU_WCHECK_EQ(fut_tcp_listen("127.0.0.1", NULL, 0), -EINVAL);
    TU_WCHECK_EQ(fut_tcp_listen("127.0.0.1", "no-such-service-xyzzy", 0), -ENOENT);
    TU_WCHECK_EQ(fut_tcp_listen("127.0.0.1", taken, 0), -EADDRINUSE);
    errno = 0;
    TU_WCHECK(fut_open_connection("127.0.0.1", NULL, 1.0) == NULL);
    TU_WCHECK_EQ(errno, EINVAL);
    TU_WCHECK_EQ(fut_close(lfd), 0);
    return TU_PTR(1);
}

static void echo_handler(fut_stream *conn, void *arg);

START_TEST(test_names_and_args)
{
    TU_FD_BEGIN();
    g_rt = tu_rt_new(2);
    both_worlds(names_body, NULL);
    errno = 0;
    ck_assert_ptr_null(fut_serve(g_rt, "127.0.0.1", NULL, echo_handler, NULL));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(fut_serve(g_rt, "127.0.0.1", "0", NULL, NULL));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(fut_server_port(NULL), -EINVAL);
    errno = 0;
    ck_assert_ptr_null(fut_server_close(NULL));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(fut_stream_new(-1, 0));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(fut_stream_fd(NULL), -EINVAL);
    ck_assert_int_eq(fut_stream_close(NULL), 0);
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

/* In a plain continuation: -EDEADLK before any system call. */
struct cont_ctx {
    int lfd;
    char port[16];
    int r[3];
    int fds_before, fds_after;
};

static void *net_in_continuation(void *value, void *arg)
{
    struct cont_ctx *c = arg;
    struct sockaddr_in a = local_addr(atoi(c->port));
    (void)value;
    c->fds_before = tu_count_fds();
    c->r[0] = fut_accept(c->lfd, NULL, NULL, 1.0);
    c->r[1] = fut_connect(c->lfd, (struct sockaddr *)&a, sizeof a, 1.0);
    c->r[2] = fut_tcp_connect("127.0.0.1", c->port, 1.0);
    c->fds_after = tu_count_fds();
    return TU_PTR(1);
}

START_TEST(test_continuation_edeadlk)
{
    TU_FD_BEGIN();
    struct cont_ctx c;
    fut_future *s, *t;
    int cfd;

    g_rt = tu_rt_new(2);
    c.lfd = listen_local(c.port, sizeof c.port, 0);
    /* A connection is waiting: accept would not even block. */
    cfd = fut_tcp_connect("127.0.0.1", c.port, 10.0);
    ck_assert_int_ge(cfd, 0);
    s = fut_sleep(g_rt, 0.001);
    t = fut_then(s, net_in_continuation, &c);
    ck_assert_ptr_eq(settled_value(t, FUT_RESOLVED), TU_PTR(1));
    ck_assert_int_eq(c.r[0], -EDEADLK);
    ck_assert_int_eq(c.r[1], -EDEADLK);
    ck_assert_int_eq(c.r[2], -EDEADLK);
    ck_assert_int_eq(c.fds_after, c.fds_before);
    /* The connection is still queued. */
    {
        int afd = fut_accept(c.lfd, NULL, NULL, 0);
        ck_assert_int_ge(afd, 0);
        close(afd);
    }
    fut_release(t);
    fut_release(s);
    close(cfd);
    ck_assert_int_eq(fut_close(c.lfd), 0);
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

/* ------------------------------------------------------------------------
 * Streams
 * ---------------------------------------------------------------------- */

#define EXPECT_DATA(got_n, got_p, want)                                              \
    do {                                                                             \
        ssize_t ed_n_ = (got_n);                                                     \
        const char *ed_w_ = (want);                                                  \
        if (ed_n_ != (ssize_t)strlen(ed_w_) || memcmp((got_p), ed_w_, strlen(ed_w_)) != 0) \
            tu_wfail(__FILE__, __LINE__, "got %zd \"%.*s\", want \"%s\"", ed_n_,      \
                     ed_n_ > 0 ? (int)ed_n_ : 0, ed_n_ > 0 ? (const char *)(got_p) : "", \
                     ed_w_);                                                         \
    } while (0)

static fut_stream *stream_pair(int sv[2], size_t limit)
{
    fut_stream *s;
    TU_WCHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    s = fut_stream_new(sv[0], limit);
    TU_WCHECK(s != NULL);
    TU_WCHECK_EQ(fut_stream_fd(s), sv[0]);
    return s;
}

static void *lines_body(void *arg)
{
    static const char text[] = "line one\nline two\n\nlast";
    int sv[2];
    fut_stream *s = stream_pair(sv, 0);
    struct feeder f;
    const char *line;
    ssize_t n;
    (void)arg;

    feeder_start(&f, sv[1], text, sizeof text - 1, 5, 1, true);
    n = fut_stream_readline(s, &line, 10.0);
    EXPECT_DATA(n, line, "line one\n");
    n = fut_stream_readline(s, &line, 10.0);
    EXPECT_DATA(n, line, "line two\n");
    n = fut_stream_readline(s, &line, 10.0);
    EXPECT_DATA(n, line, "\n");
    n = fut_stream_readline(s, &line, 10.0);
    EXPECT_DATA(n, line, "last"); /* end of stream: what is left, no '\n' */
    TU_WCHECK_EQ(fut_stream_readline(s, &line, 10.0), 0);
    TU_WCHECK_EQ(fut_stream_readline(s, &line, 10.0), 0);
    pthread_join(f.th, NULL);
    TU_WCHECK_EQ(fut_stream_close(s), 0);
    return TU_PTR(1);
}

static void *limit_body(void *arg)
{
    static const char text[] = "abcdefghijklmno\n"          /* 16 bytes: fits */
                               "0123456789abcdefghijXYZ\n"  /* 24 bytes: too long */
                               "next\n";
    int sv[2];
    fut_stream *s = stream_pair(sv, 16);
    struct feeder f;
    const char *line;
    char buf[64];
    size_t got = 0;
    ssize_t n;
    (void)arg;

    feeder_start(&f, sv[1], text, sizeof text - 1, 5, 1, false);
    n = fut_stream_readline(s, &line, 10.0);
    EXPECT_DATA(n, line, "abcdefghijklmno\n");
    TU_WCHECK_EQ(fut_stream_readline(s, &line, 10.0), -EMSGSIZE);
    /* The bytes stay buffered: fut_stream_read drains the long line. */
    while (got < 24) {
        n = fut_stream_read(s, buf + got, 24 - got, 10.0);
        TU_WCHECK(n > 0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    EXPECT_DATA((ssize_t)got, buf, "0123456789abcdefghijXYZ\n");
    n = fut_stream_readline(s, &line, 10.0);
    EXPECT_DATA(n, line, "next\n");
    pthread_join(f.th, NULL);
    /* A long line that is there all at once. */
    TU_WCHECK(write_all(sv[1], "this line is much longer than sixteen bytes\nok\n", 47));
    TU_WCHECK_EQ(fut_stream_readline(s, &line, 10.0), -EMSGSIZE);
    got = 0;
    while (got < 44) {
        n = fut_stream_read(s, buf + got, 44 - got, 10.0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    EXPECT_DATA((ssize_t)got, buf, "this line is much longer than sixteen bytes\n");
    n = fut_stream_readline(s, &line, 10.0);
    EXPECT_DATA(n, line, "ok\n");
    close(sv[1]);
    TU_WCHECK_EQ(fut_stream_read(s, buf, sizeof buf, 10.0), 0);
    TU_WCHECK_EQ(fut_stream_close(s), 0);
    return TU_PTR(1);
}

static void *exactly_body(void *arg)
{
    int sv[2];
    fut_stream *s = stream_pair(sv, 0);
    struct feeder f;
    char buf[32];
    ssize_t n;
    double t0;
    (void)arg;

    /* Across several writes. */
    feeder_start(&f, sv[1], "abcdefghi", 9, 5, 3, false);
    n = fut_stream_readexactly(s, buf, 9, 10.0);
    EXPECT_DATA(n, buf, "abcdefghi");
    pthread_join(f.th, NULL);
    /* A timeout keeps what came for the next read. */
    TU_WCHECK(write_all(sv[1], "123", 3));
    t0 = now_s();
    TU_WCHECK_EQ(fut_stream_readexactly(s, buf, 6, 0.1), -ETIMEDOUT);
    TU_WCHECK(now_s() - t0 >= 0.08 && now_s() - t0 < SLACK_S);
    TU_WCHECK(write_all(sv[1], "456", 3));
    n = fut_stream_readexactly(s, buf, 6, 10.0);
    EXPECT_DATA(n, buf, "123456");
    /* n == 0. */
    TU_WCHECK_EQ(fut_stream_readexactly(s, buf, 0, 10.0), 0);
    /* End of stream in the middle: the short count, then 0. */
    feeder_start(&f, sv[1], "0123456789", 10, 5, 1, true);
    n = fut_stream_readexactly(s, buf, 20, 10.0);
    EXPECT_DATA(n, buf, "0123456789");
    TU_WCHECK_EQ(fut_stream_readexactly(s, buf, 20, 10.0), 0);
    TU_WCHECK_EQ(fut_stream_read(s, buf, sizeof buf, 10.0), 0);
    pthread_join(f.th, NULL);
    TU_WCHECK_EQ(fut_stream_close(s), 0);
    return TU_PTR(1);
}

static void *until_body(void *arg)
{
    static const char text[] = "HEADER\r\n\r\nBODYa\r\n\rb\r\n\r\n";
    int sv[2];
    fut_stream *s = stream_pair(sv, 0);
    struct feeder f;
    const char *d;
    char buf[8];
    ssize_t n;
    (void)arg;

    /* One byte at a time: the delimiter arrives in four reads. */
    feeder_start(&f, sv[1], text, sizeof text - 1, 5, 1, false);
    n = fut_stream_readuntil(s, "\r\n\r\n", 4, &d, 10.0);
    EXPECT_DATA(n, d, "HEADER\r\n\r\n");
    n = fut_stream_readexactly(s, buf, 4, 10.0);
    EXPECT_DATA(n, buf, "BODY");
    /* A partial match ("\r\n\r" then 'b') is not the delimiter. */
    n = fut_stream_readuntil(s, "\r\n\r\n", 4, &d, 10.0);
    EXPECT_DATA(n, d, "a\r\n\rb\r\n\r\n");
    pthread_join(f.th, NULL);
    /* Several delimiters in one read: one at a time. */
    TU_WCHECK(write_all(sv[1], "x--y--z", 7));
    n = fut_stream_readuntil(s, "--", 2, &d, 10.0);
    EXPECT_DATA(n, d, "x--");
    n = fut_stream_readuntil(s, "--", 2, &d, 10.0);
    EXPECT_DATA(n, d, "y--");
    TU_WCHECK_EQ(fut_stream_readuntil(s, "--", 2, &d, 0.05), -ETIMEDOUT);
    TU_WCHECK_EQ(fut_stream_readuntil(s, "--", 0, &d, 1.0), -EINVAL);
    close(sv[1]);
    /* End of stream: what is left, then 0. */
    n = fut_stream_readuntil(s, "--", 2, &d, 10.0);
    EXPECT_DATA(n, d, "z");
    TU_WCHECK_EQ(fut_stream_readuntil(s, "--", 2, &d, 10.0), 0);
    TU_WCHECK_EQ(fut_stream_close(s), 0);
    return TU_PTR(1);
}

/* A readline that times out keeps the partial line; fut_stream_write. */
static void *partial_line_body(void *arg)
{
    int sv[2];
    fut_stream *s = stream_pair(sv, 0);
    const char *line;
    char buf[16];
    ssize_t n;
    (void)arg;

    TU_WCHECK(write_all(sv[1], "half", 4));
    TU_WCHECK_EQ(fut_stream_readline(s, &line, 0.05), -ETIMEDOUT);
    TU_WCHECK_EQ(fut_stream_readline(s, &line, 0), -ETIMEDOUT);
    TU_WCHECK(write_all(sv[1], " and half\n", 10));
    n = fut_stream_readline(s, &line, 10.0);
    EXPECT_DATA(n, line, "half and half\n");
    TU_WCHECK_EQ(fut_stream_write(s, "reply\n", 6, 10.0), 6);
    TU_WCHECK_EQ(read_some(sv[1], buf, sizeof buf, 5000), 6);
    TU_WCHECK(memcmp(buf, "reply\n", 6) == 0);
    close(sv[1]);
    TU_WCHECK_EQ(fut_stream_write(s, "x", 1, 1.0), -EPIPE);
    TU_WCHECK_EQ(fut_stream_close(s), 0);
    return TU_PTR(1);
}

START_TEST(test_streams)
{
    TU_FD_BEGIN();
    signal(SIGPIPE, SIG_DFL);
    g_rt = tu_rt_new(2);
    both_worlds(lines_body, NULL);
    both_worlds(limit_body, NULL);
    both_worlds(exactly_body, NULL);
    both_worlds(until_body, NULL);
    both_worlds(partial_line_body, NULL);
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

/* fut_open_connection to a listener. */
static void *open_conn_body(void *arg)
{
    int lfd = (int)TU_UINT(arg);
    char port[16];
    fut_stream *s;
    const char *line;
    ssize_t n;
    int afd;

    port_str(port, sizeof port, fut_local_port(lfd));
    s = fut_open_connection("127.0.0.1", port, 10.0);
    TU_WCHECK(s != NULL);
    if (s == NULL)
        return TU_PTR(2);
    TU_WCHECK(is_nonblocking(fut_stream_fd(s)) && is_cloexec(fut_stream_fd(s)));
    afd = fut_accept(lfd, NULL, NULL, 10.0);
    TU_WCHECK(afd >= 0);
    TU_WCHECK_EQ(fut_write(afd, "greeting\n", 9, 10.0), 9);
    n = fut_stream_readline(s, &line, 10.0);
    EXPECT_DATA(n, line, "greeting\n");
    TU_WCHECK_EQ(fut_close(afd), 0);
    TU_WCHECK_EQ(fut_stream_readline(s, &line, 10.0), 0);
    TU_WCHECK_EQ(fut_stream_close(s), 0);
    return TU_PTR(1);
}

START_TEST(test_open_connection)
{
    TU_FD_BEGIN();
    char port[16];
    int lfd;

    g_rt = tu_rt_new(2);
    lfd = listen_local(port, sizeof port, 0);
    both_worlds(open_conn_body, TU_PTR(lfd));
    ck_assert_int_eq(fut_close(lfd), 0);
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

/* ------------------------------------------------------------------------
 * Servers
 * ---------------------------------------------------------------------- */

struct srv_stats {
    atomic_int started;
    atomic_int ended;
    atomic_int lines;
    atomic_int bad; /* a handler saw something wrong */
};

/* Echo every line back until end of stream or an error. */
static void echo_handler(fut_stream *conn, void *arg)
{
    struct srv_stats *st = arg;
    const char *line;
    if (st)
        atomic_fetch_add(&st->started, 1);
    if (!fut_in_coroutine() && st)
        atomic_fetch_add(&st->bad, 1);
    for (;;) {
        ssize_t n = fut_stream_readline(conn, &line, 30.0 * TU_SLOW);
        if (n <= 0)
            break;
        if (st)
            atomic_fetch_add(&st->lines, 1);
        if (fut_stream_write(conn, line, (size_t)n, 30.0 * TU_SLOW) != n)
            break;
    }
    if (st)
        atomic_fetch_add(&st->ended, 1);
}

/* A client: connect, send "hello <i>\n" twice, expect the echo, close. */
static void *echo_client(void *arg)
{
    const char *port = ((const char **)arg)[0];
    int i = (int)TU_UINT(((void **)arg)[1]);
    char msg[32];
    const char *line;
    fut_stream *s = fut_open_connection("127.0.0.1", port, 10.0);
    int len;

    if (s == NULL) {
        tu_wfail(__FILE__, __LINE__, "client %d: fut_open_connection: %s", i, strerror(errno));
        return TU_PTR(2);
    }
    len = snprintf(msg, sizeof msg, "hello %d\n", i);
    for (int k = 0; k < 2; k++) {
        ssize_t n;
        TU_WCHECK_EQ(fut_stream_write(s, msg, (size_t)len, 10.0), len);
        n = fut_stream_readline(s, &line, 10.0);
        EXPECT_DATA(n, line, msg);
    }
    TU_WCHECK_EQ(fut_stream_close(s), 0);
    return TU_PTR(1);
}

#define NECHO 20

START_TEST(test_serve_echo)
{
    TU_FD_BEGIN();
    struct srv_stats st;
    fut_server *srv;
    fut_future *cl[NECHO], *g, *closed;
    char port[16];
    void *args[NECHO][2];

    memset(&st, 0, sizeof st);
    g_rt = tu_rt_new(2);
    srv = fut_serve(g_rt, "127.0.0.1", "0", echo_handler, &st);
    ck_assert_msg(srv != NULL, "fut_serve: %s", strerror(errno));
    ck_assert_int_gt(fut_server_port(srv), 0);
    port_str(port, sizeof port, fut_server_port(srv));
    for (int i = 0; i < NECHO; i++) {
        args[i][0] = port;
        args[i][1] = TU_PTR(i);
        cl[i] = fut_async(g_rt, echo_client, args[i]);
        ck_assert_ptr_nonnull(cl[i]);
    }
    g = fut_gather(g_rt, cl, NECHO, 0);
    ck_assert_ptr_nonnull(g);
    TU_SETTLE(g);
    ck_assert_int_eq(fut_state(g), FUT_RESOLVED);
    for (int i = 0; i < NECHO; i++)
        ck_assert_ptr_eq(((void **)fut_value(g))[i], TU_PTR(1));
    fut_release(g);
    for (int i = 0; i < NECHO; i++)
        fut_release(cl[i]);
    TU_ASSERT_NO_WFAIL();
    /* A client on the main thread. */
    {
        void *a[2] = { port, TU_PTR(99) };
        ck_assert_ptr_eq(echo_client(a), TU_PTR(1));
    }
    TU_ASSERT_NO_WFAIL();

    closed = fut_server_close(srv);
    ck_assert_ptr_nonnull(closed);
    ck_assert_ptr_null(settled_value(closed, FUT_RESOLVED));
    fut_release(closed);
    ck_assert_int_eq(atomic_load(&st.started), NECHO + 1);
    ck_assert_int_eq(atomic_load(&st.ended), NECHO + 1);
    ck_assert_int_eq(atomic_load(&st.lines), 2 * (NECHO + 1));
    ck_assert_int_eq(atomic_load(&st.bad), 0);
    /* Closed: refused. */
    ck_assert_int_eq(fut_tcp_connect("127.0.0.1", port, 10.0), -ECONNREFUSED);
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

/* fut_server_close while a handler runs: the future resolves only after
 * that handler has returned; new clients are refused at once. */
struct slow_handler_ctx {
    fut_future *release; /* the handler awaits it */
    atomic_int in_handler;
    atomic_int returned;
    int await_err;
};

static void slow_handler(fut_stream *conn, void *arg)
{
    struct slow_handler_ctx *c = arg;
    const char *line;
    ssize_t n = fut_stream_readline(conn, &line, 10.0);
    TU_WCHECK_EQ(n, 6);
    atomic_store(&c->in_handler, 1);
    (void)fut_await(c->release, &c->await_err);
    TU_WCHECK_EQ(fut_stream_write(conn, "bye\n", 4, 10.0), 4);
    atomic_store(&c->returned, 1);
}

START_TEST(test_server_close_waits)
{
    TU_FD_BEGIN();
    struct slow_handler_ctx c;
    fut_promise *rel;
    fut_server *srv;
    fut_future *closed;
    char port[16], buf[16];
    int cfd;
    bool ok;

    memset(&c, 0, sizeof c);
    g_rt = tu_rt_new(2);
    rel = fut_promise_new(g_rt);
    c.release = fut_promise_future(rel);
    srv = fut_serve(g_rt, "127.0.0.1", "0", slow_handler, &c);
    ck_assert_ptr_nonnull(srv);
    port_str(port, sizeof port, fut_server_port(srv));
    cfd = fut_tcp_connect("127.0.0.1", port, 10.0);
    ck_assert_int_ge(cfd, 0);
    ck_assert_int_eq(fut_write(cfd, "hello\n", 6, 10.0), 6);
    TU_POLL(ok, atomic_load(&c.in_handler) == 1, TU_WAIT_MS);
    ck_assert(ok);

    closed = fut_server_close(srv);
    ck_assert_ptr_nonnull(closed);
    /* The listening socket is closed now. */
    ck_assert_int_eq(fut_tcp_connect("127.0.0.1", port, 10.0), -ECONNREFUSED);
    tu_sleep_ms(100);
    ck_assert_msg(fut_state(closed) == FUT_PENDING,
                  "fut_server_close's future settled (state %d) while a handler runs",
                  fut_state(closed));
    ck_assert_int_eq(atomic_load(&c.returned), 0);
    ck_assert_int_eq(fut_promise_resolve(rel, NULL), 0);
    ck_assert_ptr_null(settled_value(closed, FUT_RESOLVED));
    ck_assert_msg(atomic_load(&c.returned) == 1,
                  "fut_server_close's future resolved before the handler returned");
    ck_assert_int_eq(c.await_err, 0);
    fut_release(closed);
    /* The handler's goodbye, then the server closed the connection. */
    ck_assert(read_exact(cfd, buf, 4, 10.0));
    ck_assert(memcmp(buf, "bye\n", 4) == 0);
    ck_assert_int_eq(fut_read(cfd, buf, sizeof buf, 10.0), 0);
    ck_assert_int_eq(fut_close(cfd), 0);

    /* Closed with no handler running: resolves at once. */
    srv = fut_serve(g_rt, "127.0.0.1", "0", echo_handler, NULL);
    ck_assert_ptr_nonnull(srv);
    closed = fut_server_close(srv);
    ck_assert_ptr_null(settled_value(closed, FUT_RESOLVED));
    fut_release(closed);

    fut_promise_free(rel);
    fut_release(c.release);
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

/* The runtime shuts down while serving: handlers' pending calls return
 * -ECANCELED and they run to their ends; fut_server_close then frees the
 * server (it is still the caller's). */
struct shut_ctx {
    atomic_int started;
    atomic_int ended;
    ssize_t r[4];
};

static void waiting_handler(fut_stream *conn, void *arg)
{
    struct shut_ctx *c = arg;
    const char *line;
    int k = atomic_fetch_add(&c->started, 1);
    ssize_t r = fut_stream_readline(conn, &line, -1.0);
    if (k < 4)
        c->r[k] = r;
    atomic_fetch_add(&c->ended, 1);
}

START_TEST(test_server_runtime_shutdown)
{
    TU_FD_BEGIN();
    struct shut_ctx c;
    fut_server *srv;
    fut_future *closed;
    char port[16];
    int cfd[3];
    bool ok;

    memset(&c, 0, sizeof c);
    g_rt = tu_rt_new(2);
    srv = fut_serve(g_rt, "127.0.0.1", "0", waiting_handler, &c);
    ck_assert_ptr_nonnull(srv);
    port_str(port, sizeof port, fut_server_port(srv));
    for (int i = 0; i < 3; i++) {
        cfd[i] = fut_tcp_connect("127.0.0.1", port, 10.0);
        ck_assert_int_ge(cfd[i], 0);
    }
    TU_POLL(ok, atomic_load(&c.started) == 3, TU_WAIT_MS);
    ck_assert(ok);
    tu_sleep_ms(30);
    ck_assert_int_eq(fut_runtime_free(g_rt), 0);
    ck_assert_int_eq(atomic_load(&c.ended), 3);
    for (int i = 0; i < 3; i++)
        ck_assert_msg(c.r[i] == -ECANCELED, "handler %d's readline at shutdown: %zd", i, c.r[i]);
    /* The server closed its connections: the clients see end of stream. */
    for (int i = 0; i < 3; i++) {
        char b;
        ck_assert_int_eq(fut_read(cfd[i], &b, 1, 10.0), 0);
        close(cfd[i]);
    }
    closed = fut_server_close(srv);
    if (closed != NULL) {
        ck_assert_msg(fut_state(closed) != FUT_PENDING, "a pending future after the shutdown");
        fut_release(closed);
    }
    TU_FD_END();
}
END_TEST

/* ------------------------------------------------------------------------
 * Many connections
 * ---------------------------------------------------------------------- */

/* Answer "req <i>\n" with "ok <i>\n". */
static void req_handler(fut_stream *conn, void *arg)
{
    struct srv_stats *st = arg;
    const char *line;
    char out[32];
    ssize_t n;
    long i;
    char *end;

    atomic_fetch_add(&st->started, 1);
    n = fut_stream_readline(conn, &line, 60.0 * TU_SLOW);
    if (n < 6 || memcmp(line, "req ", 4) != 0 || line[n - 1] != '\n') {
        atomic_fetch_add(&st->bad, 1);
    } else {
        i = strtol(line + 4, &end, 10);
        if (end != line + n - 1) {
            atomic_fetch_add(&st->bad, 1);
        } else {
            int len = snprintf(out, sizeof out, "ok %ld\n", i);
            if (fut_stream_write(conn, out, (size_t)len, 60.0 * TU_SLOW) == len)
                atomic_fetch_add(&st->lines, 1);
            else
                atomic_fetch_add(&st->bad, 1);
        }
    }
    atomic_fetch_add(&st->ended, 1);
}

struct many_ctx {
    char port[16];
    atomic_int answered;
    atomic_int connect_fail;
    atomic_int first_connect_err;
    atomic_int io_fail;
    atomic_int first_io_err;
    atomic_int ready;          /* idle clients: answered once, now waiting */
    fut_future *release;       /* idle clients await it */
};

static void note_err(atomic_int *count, atomic_int *first, long code)
{
    int zero = 0;
    atomic_fetch_add(count, 1);
    atomic_compare_exchange_strong(first, &zero, (int)code);
}

/* One request: connect, "req <i>\n", expect "ok <i>\n". Returns the open
 * stream (hold) or closes it. */
static fut_stream *one_request(struct many_ctx *c, long i, bool hold)
{
    char msg[32], want[32];
    const char *line;
    fut_stream *s;
    ssize_t n;
    int len, wlen;
    int fd = fut_tcp_connect("127.0.0.1", c->port, 60.0 * TU_SLOW);

    if (fd < 0) {
        note_err(&c->connect_fail, &c->first_connect_err, fd);
        return NULL;
    }
    s = fut_stream_new(fd, 0);
    if (s == NULL) {
        close(fd);
        note_err(&c->io_fail, &c->first_io_err, -ENOMEM);
        return NULL;
    }
    len = snprintf(msg, sizeof msg, "req %ld\n", i);
    wlen = snprintf(want, sizeof want, "ok %ld\n", i);
    n = fut_stream_write(s, msg, (size_t)len, 60.0 * TU_SLOW);
    if (n != len) {
        note_err(&c->io_fail, &c->first_io_err, n);
    } else {
        n = fut_stream_readline(s, &line, 60.0 * TU_SLOW);
        if (n == wlen && memcmp(line, want, (size_t)wlen) == 0)
            atomic_fetch_add(&c->answered, 1);
        else
            note_err(&c->io_fail, &c->first_io_err, n <= 0 ? n : -EPROTO);
    }
    if (hold)
        return s;
    fut_stream_close(s);
    return NULL;
}

static void *many_client(void *arg)
{
    struct many_ctx *c = ((void **)arg)[0];
    long i = (long)TU_UINT(((void **)arg)[1]);
    (void)one_request(c, i, false);
    return NULL;
}

static bool sanitized(void)
{
    const char *m = getenv("CK_TIMEOUT_MULTIPLIER");
    return TU_ASAN || TU_TSAN || (m != NULL && atof(m) > 1.0);
}

/* Raise RLIMIT_NOFILE to the hard limit; returns the soft limit now. */
static long raise_nofile(void)
{
    struct rlimit rl;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    }
    return rl.rlim_cur == RLIM_INFINITY ? 1L << 20 : (long)rl.rlim_cur;
}

#define NMANY 10000

START_TEST(test_many_connections)
{
    TU_FD_BEGIN();
    struct srv_stats st;
    struct many_ctx c;
    fut_server *srv;
    fut_future **cl, *g, *closed;
    void *(*args)[2];
    long limit = raise_nofile();
    long n = NMANY, fit;
    double t0;

    /* Two descriptors a connection (the client's and the accepted one),
     * plus what is open now and a margin for the runtime and the
     * blocking lane. */
    fit = (limit - fd_base_ - 100) / 2;
    if (sanitized())
        n = 2000; /* the sanitizer builds are several times slower */
    if (n > fit)
        n = fit;
    if (n != NMANY)
        fprintf(stderr, "test_many_connections: %ld connections (RLIMIT_NOFILE %ld%s)\n", n,
                limit, sanitized() ? ", sanitizer build" : "");
    ck_assert_int_ge(n, 100);

    memset(&st, 0, sizeof st);
    memset(&c, 0, sizeof c);
    cl = calloc((size_t)n, sizeof *cl);
    args = calloc((size_t)n, sizeof *args);
    ck_assert(cl != NULL && args != NULL);
    g_rt = tu_rt_new(2);
    /* 64 KiB stacks: n clients and n handlers may be alive at once. */
    ck_assert_int_eq(fut_runtime_set_stack_size(g_rt, 64 * 1024), 0);
    srv = fut_serve(g_rt, "127.0.0.1", "0", req_handler, &st);
    ck_assert_ptr_nonnull(srv);
    port_str(c.port, sizeof c.port, fut_server_port(srv));
    /* All n clients are started at once. The listen backlog is SOMAXCONN
     * (net.core.somaxconn, often 4096): when the accept queue is full the
     * kernel drops a SYN and the client's connect retries it a second
     * later, so a burst larger than the backlog is slower, not refused. */
    t0 = now_s();
    for (long i = 0; i < n; i++) {
        args[i][0] = &c;
        args[i][1] = TU_PTR(i);
        cl[i] = fut_async(g_rt, many_client, args[i]);
        TU_REQUIRE(cl[i] != NULL, "fut_async %ld: %s", i, strerror(errno));
    }
    g = fut_gather(g_rt, cl, (size_t)n, 0);
    ck_assert_ptr_nonnull(g);
    ck_assert_msg(fut_wait(g, 80.0 * TU_SLOW) == 0,
                  "%ld clients not done in time: %d answered, %d connect failures, %d I/O failures",
                  n, atomic_load(&c.answered), atomic_load(&c.connect_fail),
                  atomic_load(&c.io_fail));
    ck_assert_int_eq(fut_state(g), FUT_RESOLVED);
    ck_assert_msg(atomic_load(&c.answered) == n,
                  "%d of %ld answered; %d connects failed (first %d: %s), %d reads or writes "
                  "failed (first %d: %s), %d handler errors",
                  atomic_load(&c.answered), n, atomic_load(&c.connect_fail),
                  atomic_load(&c.first_connect_err), strerror(-atomic_load(&c.first_connect_err)),
                  atomic_load(&c.io_fail), atomic_load(&c.first_io_err),
                  strerror(-atomic_load(&c.first_io_err)), atomic_load(&st.bad));
    fprintf(stderr, "test_many_connections: %ld connections answered in %.2f s\n", n,
            now_s() - t0);
    fut_release(g);
    for (long i = 0; i < n; i++)
        fut_release(cl[i]);
    closed = fut_server_close(srv);
    ck_assert_ptr_nonnull(closed);
    TU_SETTLE(closed);
    fut_release(closed);
    ck_assert_int_eq(atomic_load(&st.started), n);
    ck_assert_int_eq(atomic_load(&st.ended), n);
    ck_assert_int_eq(atomic_load(&st.lines), n);
    ck_assert_int_eq(atomic_load(&st.bad), 0);
    free(cl);
    free(args);
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

/* Idle clients: answered once, then hold their connection until
 * released. */
static void *idle_client(void *arg)
{
    struct many_ctx *c = ((void **)arg)[0];
    long i = (long)TU_UINT(((void **)arg)[1]);
    int err = 0;
    fut_stream *s = one_request(c, i, true);
    if (s == NULL)
        return NULL;
    atomic_fetch_add(&c->ready, 1);
    (void)fut_await(c->release, &err);
    TU_WCHECK_EQ(err, 0);
    fut_stream_close(s);
    return NULL;
}

/* A handler that answers every line (as req_handler, in a loop). */
static void req_loop_handler(fut_stream *conn, void *arg)
{
    struct srv_stats *st = arg;
    const char *line;
    char out[32];
    atomic_fetch_add(&st->started, 1);
    for (;;) {
        ssize_t n = fut_stream_readline(conn, &line, -1.0);
        char *end;
        long i;
        int len;
        if (n <= 0)
            break;
        i = strtol(line + 4, &end, 10);
        if (n < 6 || memcmp(line, "req ", 4) != 0 || end != line + n - 1) {
            atomic_fetch_add(&st->bad, 1);
            break;
        }
        len = snprintf(out, sizeof out, "ok %ld\n", i);
        if (fut_stream_write(conn, out, (size_t)len, 30.0 * TU_SLOW) != len)
            break;
        atomic_fetch_add(&st->lines, 1);
    }
    atomic_fetch_add(&st->ended, 1);
}

#define NIDLE 1000
#define NWAVES 10
#define WAVE 20

START_TEST(test_idle_connections)
{
    TU_FD_BEGIN();
    struct srv_stats st;
    struct many_ctx c;
    fut_server *srv;
    fut_promise *rel;
    fut_future **idle, *g, *closed;
    void *(*args)[2];
    bool ok;

    (void)raise_nofile();
    memset(&st, 0, sizeof st);
    memset(&c, 0, sizeof c);
    idle = calloc(NIDLE, sizeof *idle);
    args = calloc(NIDLE + NWAVES * WAVE, sizeof *args);
    ck_assert(idle != NULL && args != NULL);
    g_rt = tu_rt_new(2);
    ck_assert_int_eq(fut_runtime_set_stack_size(g_rt, 64 * 1024), 0);
    rel = fut_promise_new(g_rt);
    c.release = fut_promise_future(rel);
    srv = fut_serve(g_rt, "127.0.0.1", "0", req_loop_handler, &st);
    ck_assert_ptr_nonnull(srv);
    port_str(c.port, sizeof c.port, fut_server_port(srv));
    for (long i = 0; i < NIDLE; i++) {
        args[i][0] = &c;
        args[i][1] = TU_PTR(i);
        idle[i] = fut_async(g_rt, idle_client, args[i]);
        TU_REQUIRE(idle[i] != NULL, "fut_async");
    }
    TU_POLL(ok, atomic_load(&c.ready) == NIDLE, 4 * TU_WAIT_MS);
    ck_assert_msg(ok, "%d of %d idle clients got their first answer (%d connect failures, %d "
                      "I/O failures)",
                  atomic_load(&c.ready), NIDLE, atomic_load(&c.connect_fail),
                  atomic_load(&c.io_fail));
    ck_assert_int_eq(atomic_load(&st.started), NIDLE);

    /* New clients keep getting answers, promptly. */
    for (int w = 0; w < NWAVES; w++) {
        fut_future *cl[WAVE];
        double t0 = now_s(), dt;
        int before = atomic_load(&c.answered);
        for (int k = 0; k < WAVE; k++) {
            long i = NIDLE + w * WAVE + k;
            args[i][0] = &c;
            args[i][1] = TU_PTR(i);
            cl[k] = fut_async(g_rt, many_client, args[i]);
            ck_assert_ptr_nonnull(cl[k]);
        }
        g = fut_gather(g_rt, cl, WAVE, 0);
        TU_SETTLE(g);
        dt = now_s() - t0;
        ck_assert_int_eq(atomic_load(&c.answered) - before, WAVE);
        ck_assert_msg(dt < 2.0 * TU_SLOW, "wave %d took %.3f s", w, dt);
        fut_release(g);
        for (int k = 0; k < WAVE; k++)
            fut_release(cl[k]);
    }
    ck_assert_int_eq(atomic_load(&c.connect_fail), 0);
    ck_assert_int_eq(atomic_load(&c.io_fail), 0);

    /* Release the idle ones. */
    ck_assert_int_eq(fut_promise_resolve(rel, NULL), 0);
    g = fut_gather(g_rt, idle, NIDLE, 0);
    TU_SETTLE(g);
    ck_assert_int_eq(fut_state(g), FUT_RESOLVED);
    fut_release(g);
    for (long i = 0; i < NIDLE; i++)
        fut_release(idle[i]);
    closed = fut_server_close(srv);
    ck_assert_ptr_nonnull(closed);
    TU_SETTLE(closed);
    fut_release(closed);
    ck_assert_int_eq(atomic_load(&st.started), NIDLE + NWAVES * WAVE);
    ck_assert_int_eq(atomic_load(&st.ended), NIDLE + NWAVES * WAVE);
    ck_assert_int_eq(atomic_load(&st.lines), NIDLE + NWAVES * WAVE);
    ck_assert_int_eq(atomic_load(&st.bad), 0);
    fut_promise_free(rel);
    fut_release(c.release);
    free(idle);
    free(args);
    tu_rt_finish(g_rt);
    TU_FD_END();
}
END_TEST

static Suite *io_net_suite(void)
{
    Suite *s = suite_create("io_net");
    TCase *tc;

    tc = tu_tcase(s, "tcp", 30);
    tcase_add_test(tc, test_listen_connect);
    tcase_add_test(tc, test_own_socket_connect);
    tcase_add_test(tc, test_refused);
    tcase_add_test(tc, test_reset);
    tcase_add_test(tc, test_timeouts);
    tcase_add_test(tc, test_names_and_args);
    tcase_add_test(tc, test_continuation_edeadlk);

    tc = tu_tcase(s, "streams", 30);
    tcase_add_test(tc, test_streams);
    tcase_add_test(tc, test_open_connection);

    tc = tu_tcase(s, "server", 30);
    tcase_add_test(tc, test_serve_echo);
    tcase_add_test(tc, test_server_close_waits);
    tcase_add_test(tc, test_server_runtime_shutdown);

    tc = tu_tcase(s, "many", 90);
    tcase_add_test(tc, test_many_connections);
    tcase_add_test(tc, test_idle_connections);
    return s;
}

int main(void)
{
    return tu_run_suite(io_net_suite());
}
