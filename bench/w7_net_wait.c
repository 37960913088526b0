/* W7 net wait: N requests at once, each on its own TCP connection to the
 * delay server of ../shared/peers (w7_server on 127.0.0.1: it answers each
 * request line "ok <seq>\n" after D = 100 ms). Each request is a coroutine
 * (fut_async) on a default-options runtime: fut_tcp_connect, fut_write
 * "req\n", fut_read until the answer's '\n', fut_close. A starter
 * coroutine starts all N, then awaits their fut_gather. wall = the first
 * start to the last answer (ideal: D), as the peers (w7_libuv.c, w7_go.go)
 * measure it.
 *
 *   ../shared/peers/w7_env.sh bench/w7_net_wait N [PORT]
 *
 * w7_env.sh starts the server. PORT default: $W7_PORT, else 7100. One
 * result line on stdout, the peers' W7 line with peer=libfutures, ending
 * with threads= (Threads: of /proc/self/status at the end) and rss_kb=
 * (VmHWM). Exits 1 if any answer is missing or wrong; the errors, counted
 * by kind, go to stderr. Bounded: as the asyncio peer does, the calls
 * take no timeout of their own (-1) and the gather of all of them has one
 * (fut_timeout, 120 s), whose cancel reaches every request still waiting
 * (its call returns -ECANCELED). */
#include "bench/bench.h"

#include <errno.h>
#include <futures.h>
#include <stdint.h>
#include <sys/resource.h>

#define DEADLINE_S 120.0 /* from the start, for all the requests */

static long n;
static char port[8];     /* the server's, as fut_tcp_connect takes it */
static double t0, t1;
static long n_ok;        /* requests answered well (dispatcher only) */
static int *errs;        /* per request: 0 answered well, else an errno */

/* What is left of the time every request has: a timeout for one call. */
/* "ok " digits "\n", and nothing after it (w7_libuv.c's check) */
static int good_answer(const char *b, size_t len)
{
    size_t i = 3;

    if (len < 5 || memcmp(b, "ok ", 3) != 0)
        return 0;
    while (i < len && b[i] >= '0' && b[i] <= '9')
        i++;
    return i > 3 && i == len - 1 && b[i] == '\n';
}

/* One request: connect, send, read the answer line, close. 0 or an errno.
 * Its frame is small on purpose: a suspended coroutine costs the stack
 * pages it has touched. */
static int request(void)
{
    char buf[64]; /* the answer: "ok <seq>\n" */
    size_t len = 0;
    ssize_t got;
    int fd, err = 0;

    if ((fd = fut_tcp_connect("127.0.0.1", port, -1)) < 0)
        return -fd;
    if ((got = fut_write(fd, "req\n", 4, -1)) < 0)
        err = (int)-got;
    while (err == 0) {
        if ((got = fut_read(fd, buf + len, sizeof buf - len, -1)) <= 0) {
            err = got == 0 ? ECONNRESET : (int)-got;
            break;
        }
        len += (size_t)got;
        if (memchr(buf + len - (size_t)got, '\n', (size_t)got) != NULL)
            break; /* the whole line is in */
        if (len == sizeof buf)
            err = EPROTO; /* a line that long is no answer */
    }
    if (err == 0 && !good_answer(buf, len))
        err = EPROTO;
    fut_close(fd);
    return err;
}

static void *co_request(void *arg)
{
    long i = (long)(intptr_t)arg;

    errs[i] = request();
    n_ok += errs[i] == 0;
    return NULL;
}

/* Starts all N, then waits for all: 0, or why the start failed. */
static void *co_starter(void *arg)
{
    fut_future **fs = arg, *all, *bounded;
    long i;
    int err;

    t0 = bench_now();
    for (i = 0; i < n; i++)
        if ((fs[i] = fut_async(NULL, co_request, (void *)(intptr_t)i)) == NULL)
            return (void *)(intptr_t)errno;
    if ((all = fut_gather(NULL, fs, (size_t)n, FUT_SETTLED)) == NULL)
        return (void *)(intptr_t)errno;
    if ((bounded = fut_timeout(all, DEADLINE_S)) == NULL)
        return (void *)(intptr_t)errno;
    fut_await(bounded, &err);
    t1 = bench_now();
    fut_release(bounded);
    fut_release(all);
    return (void *)(intptr_t)err;
}

/* A number field of /proc/self/status ("Threads:", "VmHWM:" in kB), or -1. */
static long status_num(const char *field)
{
    long b = bench_status_bytes(field);

    return b < 0 ? -1 : b / 1024;
}

int main(int argc, char **argv)
{
    const char *ps = argc > 2 ? argv[2] : getenv("W7_PORT");
    int p = ps && *ps ? atoi(ps) : 7100;
    fut_future **fs;
    struct rlimit rl;
    void *res = NULL;
    long i, cnt[4096] = { 0 };
    int rc;

    n = bench_arg_n(argc, argv, 10000);
    BENCH_CHECK(p > 0 && p < 65536, "usage: %s N [PORT]", argv[0]);
    snprintf(port, sizeof port, "%d", p);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && (rlim_t)n + 16 > rl.rlim_cur)
        fprintf(stderr,
                "w7_net_wait: fd limit %lu < N + 16: connections will fail "
                "(run it through w7_env.sh)\n",
                (unsigned long)rl.rlim_cur);
    fs = calloc((size_t)n, sizeof *fs);
    errs = calloc((size_t)n, sizeof *errs);
    BENCH_CHECK(fs != NULL && errs != NULL, "calloc");

    rc = fut_run(NULL, co_starter, fs, &res);
    BENCH_CHECK(rc == 0 && res == NULL, "rc=%d start=%s", rc, strerror((int)(intptr_t)res));
    if (n_ok != n) {
        for (i = 0; i < n; i++)
            if (fs[i] == NULL || fut_state(fs[i]) != FUT_RESOLVED)
                cnt[ECANCELED]++; /* never ran to its end */
            else if (errs[i] > 0 && errs[i] < 4096)
                cnt[errs[i]]++;
        for (i = 0; i < 4096; i++)
            if (cnt[i])
                fprintf(stderr, "w7_net_wait: %ld x %s\n", cnt[i], strerror((int)i));
    }
    BENCH_CHECK(n_ok == n, "answered=%ld of n=%ld (port %d)", n_ok, n, p);
    printf("workload=W7_net_wait peer=libfutures n=%ld wall_s=%.6f ops_per_s=%.0f ns_per_op=%.1f "
           "threads=%ld rss_kb=%ld\n",
           n, t1 - t0, t1 > t0 ? (double)n / (t1 - t0) : 0.0, (t1 - t0) * 1e9 / (double)n,
           status_num("Threads:"), status_num("VmHWM:"));
    fflush(stdout);
    for (i = 0; i < n; i++)
        fut_release(fs[i]);
    free(fs);
    free(errs);
    return 0;
}
