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
    if (err == 0 && !bench_w7_answer_ok(buf, len))
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
/* W7_WARM_STACKS=1 (a diagnostic, not the workload): before the clock
 * starts, N coroutines are alive at once, each having touched the top
 * page of its stack, and end: the timed ones then find N stacks mapped
 * and touched in the runtime's cache (kept a second after a burst). What
 * the timed run costs without making fresh stacks: docs/PERFORMANCE.md. */
static void *warm_one(void *arg)
{
    volatile char touch[512];

    touch[0] = 1;
    (void)touch;
    (void)arg;
    fut_yield(); /* every one has started before any ends */
    return NULL;
}

static void warm_stacks(fut_future **fs)
{
    long i;

    for (i = 0; i < n; i++)
        fs[i] = fut_async(NULL, warm_one, NULL);
    for (i = 0; i < n; i++) {
        (void)fut_await_release(fs[i], NULL);
        fs[i] = NULL;
    }
}

static void *co_starter(void *arg)
{
    fut_future **fs = arg, *all, *bounded;
    const char *warm = getenv("W7_WARM_STACKS");
    long i;
    int err;

    if (warm != NULL && strcmp(warm, "1") == 0)
        warm_stacks(fs);
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
    bench_w7_report("libfutures", n, t1 - t0);
    for (i = 0; i < n; i++)
        fut_release(fs[i]);
    free(fs);
    free(errs);
    return 0;
}
