/* W7 net wait in the callback style: the same N requests as
 * bench/w7_net_wait.c, written with readiness futures and continuations
 * instead of coroutines (no stack per request), as a libuv client is:
 * socket and non-blocking connect on the main thread; fut_io_wait(WRITE)
 * -> a continuation checks SO_ERROR and sends "req\n"; fut_io_wait(READ)
 * -> a continuation reads the answer line and closes. Continuations run
 * on the dispatcher. wall = the first connect to the last answer.
 *
 *   ../shared/peers/w7_env.sh bench/w7_net_wait_cb N [PORT]
 *
 * One result line, as w7_net_wait's (peer=libfutures-callbacks). Exits 1
 * if any answer is missing or wrong. Bounded: 120 s for all. */
#include "bench/bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <futures.h>
#include <netinet/in.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

struct req {
    int fd;
    int err;       /* 0 until decided; -1 answered well; else an errno */
    size_t len;
    char buf[64];  /* the answer line */
};

static long n, n_done, n_ok; /* the counters: dispatcher only */
static struct req *rs;
static fut_promise *all_done;

static void finish(struct req *r, int err)
{
    if (r->err != 0)
        return;
    r->err = err ? err : -1;
    n_ok += err == 0;
    fut_close(r->fd);
    if (++n_done == n)
        fut_promise_resolve(all_done, NULL);
}

static void arm(struct req *r, unsigned events, fut_finally_fn fn)
{
    fut_future *w = fut_io_wait(NULL, r->fd, events), *c;

    if (w == NULL) {
        finish(r, errno);
        return;
    }
    c = fut_finally(w, fn, r);
    if (c == NULL)
        finish(r, errno);
    fut_release(c);
    fut_release(w);
}

static void on_readable(fut_future *w, void *arg)
{
    struct req *r = arg;
    ssize_t got;
    int err = fut_error(w);

    if (err != 0) {
        finish(r, err);
        return;
    }
    got = recv(r->fd, r->buf + r->len, sizeof r->buf - r->len, MSG_DONTWAIT);
    if (got < 0 && errno == EAGAIN) {
        arm(r, FUT_IO_READ, on_readable);
        return;
    }
    if (got <= 0) {
        finish(r, got == 0 ? ECONNRESET : errno);
        return;
    }
    r->len += (size_t)got;
    if (memchr(r->buf, '\n', r->len) != NULL)
        finish(r, bench_w7_answer_ok(r->buf, r->len) ? 0 : EPROTO);
    else if (r->len == sizeof r->buf)
        finish(r, EPROTO);
    else
        arm(r, FUT_IO_READ, on_readable);
}

static void on_connected(fut_future *w, void *arg)
{
    struct req *r = arg;
    socklen_t len = sizeof(int);
    int err = fut_error(w), so = 0;

    if (err == 0 && getsockopt(r->fd, SOL_SOCKET, SO_ERROR, &so, &len) != 0)
        err = errno;
    if (err == 0)
        err = so;
    if (err == 0 && send(r->fd, "req\n", 4, MSG_DONTWAIT | MSG_NOSIGNAL) != 4)
        err = errno ? errno : EIO; /* 4 bytes into an empty socket buffer: all or an error */
    if (err != 0) {
        finish(r, err);
        return;
    }
    arm(r, FUT_IO_READ, on_readable);
}

/* On the dispatcher: every socket and connect, as the libuv client does
 * them on its loop thread. */
static void *start_all(void *v, void *arg)
{
    struct sockaddr_in *a = arg;
    long i;

    (void)v;
    for (i = 0; i < n; i++) {
        struct req *r = &rs[i];
        r->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (r->fd < 0) {
            r->err = errno;
            if (++n_done == n)
                fut_promise_resolve(all_done, NULL);
            continue;
        }
        if (connect(r->fd, (struct sockaddr *)a, sizeof *a) != 0 && errno != EINPROGRESS) {
            finish(r, errno);
            continue;
        }
        arm(r, FUT_IO_WRITE, on_connected);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    const char *ps = argc > 2 ? argv[2] : getenv("W7_PORT");
    int p = ps && *ps ? atoi(ps) : 7100;
    struct sockaddr_in a;
    struct rlimit rl;
    fut_promise *go;
    fut_future *done, *go_f, *started;
    long i, cnt[4096] = { 0 };
    double t0, t1;
    int rc;

    n = bench_arg_n(argc, argv, 10000);
    BENCH_CHECK(p > 0 && p < 65536, "usage: %s N [PORT]", argv[0]);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    rs = calloc((size_t)n, sizeof *rs);
    BENCH_CHECK(rs != NULL, "calloc");
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)p);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    all_done = fut_promise_new(NULL);
    go = fut_promise_new(NULL);
    BENCH_CHECK(all_done != NULL && go != NULL, "fut_promise_new: %s", strerror(errno));
    done = fut_promise_future(all_done);
    go_f = fut_promise_future(go);
    started = fut_then(go_f, start_all, &a);
    BENCH_CHECK(done != NULL && started != NULL, "no memory");
    t0 = bench_now();
    fut_promise_resolve(go, NULL);
    rc = fut_wait(done, 120);
    t1 = bench_now();
    BENCH_CHECK(rc == 0, "not every request ended within 120 s (%ld of %ld)", n_done, n);
    if (n_ok != n) {
        for (i = 0; i < n; i++)
            if (rs[i].err > 0 && rs[i].err < 4096)
                cnt[rs[i].err]++;
        for (i = 0; i < 4096; i++)
            if (cnt[i])
                fprintf(stderr, "w7_net_wait_cb: %ld x %s\n", cnt[i], strerror((int)i));
    }
    BENCH_CHECK(n_ok == n, "answered=%ld of n=%ld (port %d)", n_ok, n, p);
    bench_w7_report("libfutures-callbacks", n, t1 - t0);
    fut_release(started);
    fut_release(go_f);
    fut_release(done);
    fut_promise_free(go);
    fut_promise_free(all_done);
    free(rs);
    return 0;
}
