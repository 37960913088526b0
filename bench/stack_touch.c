/* stack_touch.c - a probe of what a fresh coroutine stack costs the
 * kernel on this machine: N regions laid out as libfutures' stacks are
 * (256 KiB usable above a 64 KiB guard, MAP_NORESERVE), each made with
 * mmap + mprotect, then the top page of each touched once (what a new
 * coroutine's first switch does), then touched again (what a resume
 * costs once 10,000 stacks are in use: TLB misses), then each unmapped. Prints microseconds
 * per stack for each phase. Not a peer workload: a witness of the machine
 * state next to W7 (docs/PERFORMANCE.md), like bench/first_touch.
 *
 *   bench/stack_touch [N]     (default 10000) */
#include "bench/bench.h"

#include <sys/mman.h>

#define USABLE (256u * 1024u)
#define GUARD (64u * 1024u)

int main(int argc, char **argv)
{
    long n = bench_arg_n(argc, argv, 10000), i;
    char **p = calloc((size_t)n, sizeof *p);
    double t0, t1, t2, t3, t4;

    BENCH_CHECK(p != NULL, "calloc");
    t0 = bench_now();
    for (i = 0; i < n; i++) {
        p[i] = mmap(NULL, USABLE + GUARD, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
        BENCH_CHECK(p[i] != MAP_FAILED, "mmap");
        BENCH_CHECK(mprotect(p[i], GUARD, PROT_NONE) == 0, "mprotect");
    }
    t1 = bench_now();
    for (i = 0; i < n; i++)
        ((volatile char *)p[i])[USABLE + GUARD - 64] = 1;
    t2 = bench_now();
    for (i = 0; i < n; i++) /* again: what touching a page per resume costs */
        ((volatile char *)p[i])[USABLE + GUARD - 128] = 2;
    t3 = bench_now();
    for (i = 0; i < n; i++)
        munmap(p[i], USABLE + GUARD);
    t4 = bench_now();
    printf("stacks=%ld map_us=%.2f first_touch_us=%.2f again_us=%.3f unmap_us=%.2f (per stack)\n",
           n, (t1 - t0) * 1e6 / (double)n, (t2 - t1) * 1e6 / (double)n,
           (t3 - t2) * 1e6 / (double)n, (t4 - t3) * 1e6 / (double)n);
    free(p);
    return 0;
}
