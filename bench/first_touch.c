/* first_touch.c - a probe, not a workload: what writing fresh memory costs
 * here, the fact behind futures/mem.c's chunks. Writes N 128-byte blocks
 * (a future's size before it shrank) into memory that was
 *   4k:   malloc'd, pages faulted one by one on first write;
 *   4k+populate: faulted in first by MADV_POPULATE_WRITE (4 KiB pages);
 *   2m+populate: 2 MiB aligned, MADV_HUGEPAGE, then MADV_POPULATE_WRITE
 *                (timed with the writes: the populate is part of the cost).
 * Prints ns per block for each. Usage: first_touch [N] (default 400000). */
#include "bench/bench.h"

#include <stdint.h>
#include <sys/mman.h>

#ifndef MADV_HUGEPAGE
#define MADV_HUGEPAGE 14
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define BLOCK 128
#define HUGE ((size_t)2 << 20)

static double fill(char *p, long n)
{
    double t0 = bench_now();
    for (long i = 0; i < n; i++)
        memset(p + (size_t)i * BLOCK, 1, BLOCK);
    return (bench_now() - t0) * 1e9 / (double)n;
}

int main(int argc, char **argv)
{
    long n = bench_arg_n(argc, argv, 400000);
    size_t len = ((size_t)n * BLOCK + HUGE - 1) & ~(HUGE - 1);
    char *a = malloc(len), *b = malloc(len), *c;
    void *m;
    double t0, pop;

    BENCH_CHECK(a != NULL && b != NULL, "no memory");
    printf("4k:          %.1f ns per block\n", fill(a, n));
    (void)madvise((void *)(((uintptr_t)b + 4095) & ~(uintptr_t)4095), len - 4096,
                  MADV_POPULATE_WRITE);
    printf("4k+populate: %.1f ns per block (populate not timed)\n", fill(b, n));
    BENCH_CHECK(posix_memalign(&m, HUGE, len) == 0, "no memory");
    c = m;
    t0 = bench_now();
    (void)madvise(c, len, MADV_HUGEPAGE);
    (void)madvise(c, len, MADV_POPULATE_WRITE);
    pop = (bench_now() - t0) * 1e9 / (double)n;
    printf("2m+populate: %.1f ns per block (%.1f of it the populate)\n", pop + fill(c, n), pop);
    printf("again:       %.1f ns per block (the same memory, written a second time)\n", fill(a, n));
    return 0;
}
