/* W5 raw switch: one coroutine and the thread's own context switch to each
 * other N times (one op = a pair of switches: in and back out), through
 * the internal fut__ctx_switch the coroutine layer uses. Compare with
 * ../shared/peers/w5_boost_context.cpp's raw mode (jump_fcontext pairs).
 * Exits 1 if the coroutine's count is wrong. */
#include "bench/bench.h"

#include "config.h"
#include "futures/coro_ctx.h"

#include <errno.h>

static struct fut__ctx main_ctx, co_ctx;
static volatile long counter;

static void co_entry(void *arg)
{
    (void)arg;
    for (;;) {
        counter++;
        fut__ctx_switch(&co_ctx, &main_ctx);
    }
}

int main(int argc, char **argv)
{
    long n = bench_arg_n(argc, argv, 10000000), i;
    struct fut__stack *st = fut__stack_new(64 * 1024);
    double t0, wall;
    int rc;

    BENCH_CHECK(st != NULL, "fut__stack_new: %s", strerror(errno));
    fut__ctx_init_current(&main_ctx);
    rc = fut__ctx_make(&co_ctx, st->base, st->size, co_entry, NULL);
    BENCH_CHECK(rc == 0, "fut__ctx_make: %s", strerror(rc));
    t0 = bench_now();
    for (i = 0; i < n; i++)
        fut__ctx_switch(&main_ctx, &co_ctx);
    wall = bench_now() - t0;
    BENCH_CHECK(counter == n, "counter=%ld of %ld", counter, n);
    bench_report("W5_switch_pair", n, wall);
    /* The coroutine never finishes (like the peer's); its stack is
     * abandoned with it. */
    fut__ctx_destroy(&co_ctx);
    fut__stack_free(st);
    return 0;
}
