/* coro_ctx_checks.h - checks of the context switch shared by
 * tests/test_coro_ctx.c (the Check suite) and tests/coro_ctx_selftest.c
 * (built without Check and run under qemu-user by tools/test-aarch64.sh):
 * the coroutine sides and the main sides, which count what went wrong;
 * each file reports in its own way.
 *
 * Include after futures/coro_ctx.h. */
#ifndef FUT_TESTS_CORO_CTX_CHECKS_H
#define FUT_TESTS_CORO_CTX_CHECKS_H

#include <stdint.h>

#ifndef NOINLINE
#define NOINLINE __attribute__((noinline))
#endif

/* ------------------------------------------------------------------------
 * Callee-saved registers: a coroutine keeps 8 integers and 8 doubles live
 * across each switch to its peer, and fills every callee-saved register
 * with garbage just before switching.
 * ---------------------------------------------------------------------- */

struct ctx_regs {
    struct fut__ctx *self;  /* the coroutine's own context */
    struct fut__ctx *peer;  /* where each switch goes */
    volatile uint64_t seed; /* re-read after each switch: the expected values */
    long errors;            /* rounds that found values changed after a switch */
    long rounds;            /* switches made */
};

/* Put garbage in every callee-saved register the switch must restore,
 * then switch. The clobbers make the compiler keep nothing of its own in
 * them across the asm (and save them for our caller). */
static NOINLINE void ctx_garble_and_switch(struct fut__ctx *from, struct fut__ctx *to)
{
#if defined(__x86_64__)
    __asm__ volatile("movabsq $0x5a5a5a5a5a5a5a5a, %%rbx\n\t"
                     "movq %%rbx, %%r12\n\t"
                     "movq %%rbx, %%r13\n\t"
                     "movq %%rbx, %%r14\n\t"
                     "movq %%rbx, %%r15\n\t"
                     ::: "rbx", "r12", "r13", "r14", "r15", "memory");
#elif defined(__aarch64__)
    __asm__ volatile("movz x19, #0x5a5a\n\t"
                     "mov x20, x19\n\t" "mov x21, x19\n\t" "mov x22, x19\n\t"
                     "mov x23, x19\n\t" "mov x24, x19\n\t" "mov x25, x19\n\t"
                     "mov x26, x19\n\t" "mov x27, x19\n\t" "mov x28, x19\n\t"
                     "fmov d8, x19\n\t" "fmov d9, x19\n\t" "fmov d10, x19\n\t"
                     "fmov d11, x19\n\t" "fmov d12, x19\n\t" "fmov d13, x19\n\t"
                     "fmov d14, x19\n\t" "fmov d15, x19\n\t"
                     ::: "x19", "x20", "x21", "x22", "x23", "x24", "x25", "x26", "x27",
                         "x28", "d8", "d9", "d10", "d11", "d12", "d13", "d14", "d15",
                         "memory");
#endif
    fut__ctx_switch(from, to);
}

/* Values derived from the seed at round r: integers and doubles. */
#define CTX_IV(s, k, r) ((long long)((s) * (0x100000001b3ull + (k)) + (k) * 7u) + (r) * ((k) + 1))
#define CTX_DV(s, k, r) \
    ((double)((s) % 1000003u) * (0.5 + (k)) + (double)(r) * (0.25 * ((k) + 1)))

/* Switch to me->peer `rounds` times, checking 16 live values after each;
 * sets me->errors. The coroutine's entry calls it, then exits. */
static NOINLINE void ctx_keep_live(struct ctx_regs *me, long rounds)
{
    uint64_t s = me->seed;
    long long i0 = CTX_IV(s, 0, 0), i1 = CTX_IV(s, 1, 0), i2 = CTX_IV(s, 2, 0);
    long long i3 = CTX_IV(s, 3, 0), i4 = CTX_IV(s, 4, 0), i5 = CTX_IV(s, 5, 0);
    long long i6 = CTX_IV(s, 6, 0), i7 = CTX_IV(s, 7, 0);
    double d0 = CTX_DV(s, 0, 0), d1 = CTX_DV(s, 1, 0), d2 = CTX_DV(s, 2, 0);
    double d3 = CTX_DV(s, 3, 0), d4 = CTX_DV(s, 4, 0), d5 = CTX_DV(s, 5, 0);
    double d6 = CTX_DV(s, 6, 0), d7 = CTX_DV(s, 7, 0);
    long errors = 0;

    for (long r = 0; r < rounds; r++) {
        uint64_t t;

        ctx_garble_and_switch(me->self, me->peer);
        me->rounds++;
        t = me->seed; /* volatile: recomputed, not the registers' copies */
        errors += i0 != CTX_IV(t, 0, r) || i1 != CTX_IV(t, 1, r) || i2 != CTX_IV(t, 2, r) ||
                  i3 != CTX_IV(t, 3, r) || i4 != CTX_IV(t, 4, r) || i5 != CTX_IV(t, 5, r) ||
                  i6 != CTX_IV(t, 6, r) || i7 != CTX_IV(t, 7, r);
        errors += d0 != CTX_DV(t, 0, r) || d1 != CTX_DV(t, 1, r) || d2 != CTX_DV(t, 2, r) ||
                  d3 != CTX_DV(t, 3, r) || d4 != CTX_DV(t, 4, r) || d5 != CTX_DV(t, 5, r) ||
                  d6 != CTX_DV(t, 6, r) || d7 != CTX_DV(t, 7, r);
        i0 += 1; i1 += 2; i2 += 3; i3 += 4; i4 += 5; i5 += 6; i6 += 7; i7 += 8;
        d0 += 0.25; d1 += 0.5; d2 += 0.75; d3 += 1.0;
        d4 += 1.25; d5 += 1.5; d6 += 1.75; d7 += 2.0;
    }
    me->errors = errors;
}

/* ------------------------------------------------------------------------
 * Values through the switch: each side gets what the other passed, also
 * when the switch is the tail call of a helper (the helper's caller gets
 * it straight), and through the int view (the low half).
 *
 * Main makes a context with ctx_xfer_entry and x, then calls
 * ctx_xfer_drive(x); the coroutine exits back to main.
 * ---------------------------------------------------------------------- */

struct ctx_xfer {
    struct fut__ctx *self; /* the coroutine's context */
    struct fut__ctx *main; /* the context driving it */
    long n;                /* values each way, and ints */
    long bad;              /* values the coroutine got wrong */
    long ints;             /* ints it got right (n when all went well) */
    int exited;            /* it reached its end */
};

/* Tail calls: their callers get the value straight from the switch. */
static NOINLINE void *ctx_xfer_wait(struct ctx_xfer *x, void *reply)
{
    return fut__ctx_transfer(x->self, x->main, reply);
}

static NOINLINE int ctx_xfer_wait_int(struct ctx_xfer *x)
{
    return fut__ctx_transfer_int(x->self, x->main);
}

static void ctx_xfer_entry(void *arg)
{
    struct ctx_xfer *x = arg;
    long k;                                          /* callee-saved across every switch */
    uintptr_t v = (uintptr_t)ctx_xfer_wait(x, NULL); /* main's first value */

    for (k = 1; k <= x->n; k++) {
        if (v != (uintptr_t)k * 7u)
            x->bad++;
        v = (uintptr_t)ctx_xfer_wait(x, (void *)((uintptr_t)k * 3u));
    }
    if (v != 0) /* main's end of the first part */
        x->bad++;
    for (k = 1; k <= x->n; k++)
        x->ints += ctx_xfer_wait_int(x) == (int)-k;
    x->exited = 1;
    fut__ctx_exit(x->self, x->main);
}

/* The main side: returns the replies it got wrong (a first entry must
 * hand back NULL: it ignores what it is passed). */
static long ctx_xfer_drive(struct ctx_xfer *x)
{
    long k, bad = 0;

    bad += fut__ctx_transfer(x->main, x->self, (void *)1234) != NULL;
    for (k = 1; k <= x->n; k++)
        bad += (uintptr_t)fut__ctx_transfer(x->main, x->self, (void *)((uintptr_t)k * 7u)) !=
               (uintptr_t)k * 3u;
    (void)fut__ctx_transfer(x->main, x->self, NULL); /* what the int view hands back is undefined */
    for (k = 1; k <= x->n; k++) /* garbage in the high half */
        (void)fut__ctx_transfer(x->main, x->self,
                                (void *)(uintptr_t)((UINT64_C(0xdead) << 32) | (uint32_t)-k));
    return bad;
}

#endif /* FUT_TESTS_CORO_CTX_CHECKS_H */
