/* W3 timers: N concurrent 100 ms sleeps started at once; wall until all
 * have fired (ideal 0.100 s) and memory per pending sleep, the future
 * included: (peak RSS at the end - RSS before arming) / N, as the peers
 * measure it. Exits 1 if a sleep did not resolve or fired early. */
#include "bench/bench.h"

#include <futures.h>

int main(int argc, char **argv)
{
    long n = bench_arg_n(argc, argv, 100000), i, base, peak;
    fut_runtime *rt = fut_runtime_new(NULL);
    fut_future **s;
    double t0, t_arm, wall;

    BENCH_CHECK(rt != NULL, "setup failed");
    base = bench_status_bytes("VmRSS:");
    t0 = bench_now();
    s = malloc((size_t)n * sizeof *s);
    BENCH_CHECK(s != NULL, "no memory");
    for (i = 0; i < n; i++) {
        s[i] = fut_sleep(rt, 0.100);
        BENCH_CHECK(s[i] != NULL, "fut_sleep failed at %ld", i);
    }
    t_arm = bench_now() - t0;
    for (i = 0; i < n; i++)
        BENCH_CHECK(fut_wait(s[i], -1) == 0 && fut_state(s[i]) == FUT_RESOLVED, "sleep %ld", i);
    wall = bench_now() - t0;
    peak = bench_status_bytes("VmHWM:");
    BENCH_CHECK(wall >= 0.100, "fired early: %.6f s", wall);
    bench_report("W3_timers_100ms", n, wall);
    /* bytes_per_timer as the peers measure it (their timer arrays are
     * their timers); library_bytes_per_timer leaves out this program's
     * own array of n handles (8 bytes each). */
    fprintf(stderr, "arm_s=%.4f baseRSS=%ld peakRSS=%ld bytes_per_timer=%.1f library_bytes_per_timer=%.1f\n",
            t_arm, base, peak, (double)(peak - base) / (double)n,
            (double)(peak - base - n * (long)sizeof *s) / (double)n);
    for (i = 0; i < n; i++)
        fut_release(s[i]);
    free(s);
    fut_runtime_free(rt);
    return 0;
}
