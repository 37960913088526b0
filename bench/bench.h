/* bench.h - clock, memory and the one-line result of ../shared/peers'
 * contract: workload=... peer=libfutures n=... wall_s=... ops_per_s=... ns_per_op=... */
#ifndef FUT_BENCH_H
#define FUT_BENCH_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline double bench_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline long bench_arg_n(int argc, char **argv, long dflt)
{
    long n = argc > 1 ? atol(argv[1]) : dflt;

    if (n <= 0) {
        fprintf(stderr, "usage: %s N (a positive count)\n", argv[0]);
        exit(2);
    }
    return n;
}

static inline void bench_report(const char *workload, long n, double wall)
{
    printf("workload=%s peer=libfutures n=%ld wall_s=%.6f ops_per_s=%.0f ns_per_op=%.1f\n",
           workload, n, wall, wall > 0 ? (double)n / wall : 0.0, wall * 1e9 / (double)n);
    fflush(stdout);
}

/* A line of /proc/self/status in bytes: field "VmRSS:" (now) or "VmHWM:"
 * (peak); -1 if it cannot be read. */
static inline long bench_status_bytes(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    size_t fl = strlen(field);

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, fl) == 0) {
            kb = atol(line + fl);
            break;
        }
    fclose(f);
    return kb * 1024;
}

/* W7 (the W7 clients of ../shared/peers): an answer line is "ok "
 * digits "\n" and nothing after it, as w7_libuv.c checks it. */
static inline int bench_w7_answer_ok(const char *b, size_t len)
{
    size_t i = 3;

    if (len < 5 || memcmp(b, "ok ", 3) != 0)
        return 0;
    while (i < len && b[i] >= '0' && b[i] <= '9')
        i++;
    return i > 3 && i == len - 1 && b[i] == '\n';
}

/* W7's result line, with threads= (Threads: of /proc/self/status) and
 * rss_kb= (VmHWM) at its end, as the W7 peers print it. */
static inline void bench_w7_report(const char *peer, long n, double wall_s)
{
    long threads = bench_status_bytes("Threads:"), hwm = bench_status_bytes("VmHWM:");

    printf("workload=W7_net_wait peer=%s n=%ld wall_s=%.6f ops_per_s=%.0f ns_per_op=%.1f "
           "threads=%ld rss_kb=%ld\n",
           peer, n, wall_s, wall_s > 0 ? (double)n / wall_s : 0.0, wall_s * 1e9 / (double)n,
           threads < 0 ? -1 : threads / 1024, hwm < 0 ? -1 : hwm / 1024);
    fflush(stdout);
}

#define BENCH_CHECK(cond, ...)                                   \
    do {                                                         \
        if (!(cond)) {                                           \
            fprintf(stderr, "VERIFY FAILED: " __VA_ARGS__);      \
            fputc('\n', stderr);                                 \
            exit(1);                                             \
        }                                                        \
    } while (0)

#endif
