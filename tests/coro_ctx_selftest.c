/* coro_ctx_selftest.c - the coroutine context layer checked without Check, for cross builds run under qemu-user (tools/test-aarch64.sh): ping-pong order, values through the switch (also into a tail-calling helper's caller and through the int view), a chain of coroutines exiting into each other, callee-saved integer and FP registers kept across switches with the registers garbled, stack alignment and printf on a coroutine, 1,000 live coroutines, the stack cache's counts, overflow faulting in the guard. Prints one line per check; exits 0 if all passed.
 *
 * Built outside the autotools tree, so it takes the backend from the
 * command line (-DFUT_CTX_ASM=1 or -DFUT_CTX_UCONTEXT=1) when there is no
 * config.h. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "futures/coro_ctx.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))
#define STACK (32u * 1024u)

static int failures;

static void report(const char *name, int ok, const char *detail)
{
    printf("%s %s%s%s\n", ok ? "PASS" : "FAIL", name, detail[0] ? ": " : "", detail);
    fflush(stdout);
    if (!ok)
        failures++;
}

static struct fut__ctx main_ctx;
static struct fut__stack_cache cache;

typedef struct coro {
    struct fut__ctx ctx;
    struct fut__stack *stack;
} coro;

static int coro_make(coro *c, void (*entry)(void *), void *arg)
{
    c->stack = fut__stack_get(&cache);
    if (c->stack == NULL)
        return errno;
    return fut__ctx_make(&c->ctx, c->stack->base, c->stack->size, entry, arg);
}

static void coro_release(coro *c)
{
    fut__ctx_destroy(&c->ctx);
    fut__stack_put(&cache, c->stack);
}

/* ---- values through the switch ------------------------------------------ */

static coro tv;
static unsigned long tv_bad, tv_ints;

/* Tail calls: their callers get the value straight from the switch. */
static NOINLINE void *tv_wait(void *reply)
{
    return fut__ctx_transfer(&tv.ctx, &main_ctx, reply);
}

static NOINLINE int tv_wait_int(void)
{
    return fut__ctx_transfer_int(&tv.ctx, &main_ctx);
}

static void tv_entry(void *arg)
{
    uintptr_t v = (uintptr_t)tv_wait(NULL);
    unsigned long k;

    (void)arg;
    for (k = 1; k <= 10000; k++) {
        tv_bad += v != k * 7u;
        v = (uintptr_t)tv_wait((void *)(uintptr_t)(k * 3u));
    }
    tv_bad += v != 0;
    for (k = 1; k <= 10000; k++)
        tv_ints += tv_wait_int() == -(int)k;
    fut__ctx_exit(&tv.ctx, &main_ctx);
}

static void check_transfer(void)
{
    unsigned long k, bad = 0;
    char d[96];

    if (coro_make(&tv, tv_entry, NULL) != 0) {
        report("transfer", 0, "make failed");
        return;
    }
    bad += fut__ctx_transfer(&main_ctx, &tv.ctx, (void *)1) != NULL;
    for (k = 1; k <= 10000; k++)
        bad += (uintptr_t)fut__ctx_transfer(&main_ctx, &tv.ctx, (void *)(uintptr_t)(k * 7u)) != k * 3u;
    (void)fut__ctx_transfer(&main_ctx, &tv.ctx, NULL);
    for (k = 1; k <= 10000; k++) /* the int view gets the low half */
        (void)fut__ctx_transfer(&main_ctx, &tv.ctx,
                                (void *)(uintptr_t)((UINT64_C(0xdead) << 32) | (uint32_t) - (int)k));
    coro_release(&tv);
    snprintf(d, sizeof d, "%lu wrong values, %lu of 10000 ints", bad + tv_bad, tv_ints);
    report("transfer", bad + tv_bad == 0 && tv_ints == 10000, d);
}

/* ---- ping-pong ---------------------------------------------------------- */

static coro pp;
static unsigned long pp_seq, pp_bad;
static int pp_stop;

static void pp_entry(void *arg)
{
    unsigned long expect = 1;

    (void)arg;
    while (!pp_stop) {
        if (pp_seq != expect)
            pp_bad++;
        pp_seq++;
        expect += 2;
        fut__ctx_switch(&pp.ctx, &main_ctx);
    }
    fut__ctx_exit(&pp.ctx, &main_ctx);
}

static void check_pingpong(void)
{
    const unsigned long n = 100000;
    unsigned long bad = 0;
    char d[96];

    if (coro_make(&pp, pp_entry, NULL) != 0) {
        report("pingpong", 0, "make failed");
        return;
    }
    for (unsigned long i = 0; i < n; i++) {
        bad += pp_seq != 2 * i;
        pp_seq++;
        fut__ctx_switch(&main_ctx, &pp.ctx);
    }
    pp_stop = 1;
    fut__ctx_switch(&main_ctx, &pp.ctx);
    coro_release(&pp);
    snprintf(d, sizeof d, "%lu pairs, seq %lu, %lu out of order", n, pp_seq, bad + pp_bad);
    report("pingpong", pp_seq == 2 * n && bad + pp_bad == 0, d);
}

/* ---- chain: main -> c0 -> ... -> c49 -> main, then exits into each other */

#define CHAIN 50
static coro chain[CHAIN];
static long chain_seq, chain_bad, chain_exited;
static int chain_stop;

static struct fut__ctx *chain_next(int i)
{
    return i + 1 < CHAIN ? &chain[i + 1].ctx : &main_ctx;
}

static void chain_entry(void *arg)
{
    int i = (int)(intptr_t)arg;
    long round = 0;

    while (!chain_stop) {
        chain_bad += chain_seq != round * CHAIN + i;
        chain_seq++;
        round++;
        fut__ctx_switch(&chain[i].ctx, chain_next(i));
    }
    chain_exited++;
    fut__ctx_exit(&chain[i].ctx, chain_next(i));
}

static void check_chain(void)
{
    char d[96];

    for (int i = 0; i < CHAIN; i++)
        if (coro_make(&chain[i], chain_entry, (void *)(intptr_t)i) != 0) {
            report("chain", 0, "make failed");
            return;
        }
    for (int r = 0; r < 200; r++)
        fut__ctx_switch(&main_ctx, &chain[0].ctx);
    chain_stop = 1;
    fut__ctx_switch(&main_ctx, &chain[0].ctx);
    for (int i = 0; i < CHAIN; i++)
        coro_release(&chain[i]);
    snprintf(d, sizeof d, "seq %ld, %ld out of order, %ld exited", chain_seq, chain_bad,
             chain_exited);
    report("chain", chain_seq == 200L * CHAIN && chain_bad == 0 && chain_exited == CHAIN, d);
}

/* ---- callee-saved registers ----------------------------------------------- */

#define REGS_ROUNDS 1000

typedef struct regs_co {
    coro co;
    struct fut__ctx *peer;
    volatile uint64_t seed;
    long errors, rounds;
} regs_co;

static NOINLINE void garble_and_switch(struct fut__ctx *from, struct fut__ctx *to)
{
#if defined(__x86_64__)
    __asm__ volatile("movabsq $0x5a5a5a5a5a5a5a5a, %%rbx\n\t"
                     "movq %%rbx, %%r12\n\t" "movq %%rbx, %%r13\n\t"
                     "movq %%rbx, %%r14\n\t" "movq %%rbx, %%r15\n\t"
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

#define IV(s, k, r) ((long long)((s) * (0x100000001b3ull + (k)) + (k) * 7u) + (r) * ((k) + 1))
#define DV(s, k, r) ((double)((s) % 1000003u) * (0.5 + (k)) + (double)(r) * (0.25 * ((k) + 1)))

static NOINLINE long keep_live(regs_co *me, long rounds)
{
    uint64_t s = me->seed;
    long long i0 = IV(s, 0, 0), i1 = IV(s, 1, 0), i2 = IV(s, 2, 0), i3 = IV(s, 3, 0);
    long long i4 = IV(s, 4, 0), i5 = IV(s, 5, 0), i6 = IV(s, 6, 0), i7 = IV(s, 7, 0);
    double d0 = DV(s, 0, 0), d1 = DV(s, 1, 0), d2 = DV(s, 2, 0), d3 = DV(s, 3, 0);
    double d4 = DV(s, 4, 0), d5 = DV(s, 5, 0), d6 = DV(s, 6, 0), d7 = DV(s, 7, 0);
    long errors = 0;

    for (long r = 0; r < rounds; r++) {
        uint64_t t;

        garble_and_switch(&me->co.ctx, me->peer);
        me->rounds++;
        t = me->seed;
        errors += i0 != IV(t, 0, r) || i1 != IV(t, 1, r) || i2 != IV(t, 2, r) ||
                  i3 != IV(t, 3, r) || i4 != IV(t, 4, r) || i5 != IV(t, 5, r) ||
                  i6 != IV(t, 6, r) || i7 != IV(t, 7, r);
        errors += d0 != DV(t, 0, r) || d1 != DV(t, 1, r) || d2 != DV(t, 2, r) ||
                  d3 != DV(t, 3, r) || d4 != DV(t, 4, r) || d5 != DV(t, 5, r) ||
                  d6 != DV(t, 6, r) || d7 != DV(t, 7, r);
        i0 += 1; i1 += 2; i2 += 3; i3 += 4; i4 += 5; i5 += 6; i6 += 7; i7 += 8;
        d0 += 0.25; d1 += 0.5; d2 += 0.75; d3 += 1.0;
        d4 += 1.25; d5 += 1.5; d6 += 1.75; d7 += 2.0;
    }
    return errors;
}

static regs_co ra, rb;

static void regs_entry(void *arg)
{
    regs_co *me = arg;

    me->errors = keep_live(me, REGS_ROUNDS);
    fut__ctx_exit(&me->co.ctx, &main_ctx);
}

static void check_callee_saved(void)
{
    char d[128];

    ra.seed = 0x0123456789abcdefull;
    rb.seed = 0x7766554433221100ull;
    if (coro_make(&ra.co, regs_entry, &ra) != 0 || coro_make(&rb.co, regs_entry, &rb) != 0) {
        report("callee_saved", 0, "make failed");
        return;
    }
    ra.peer = &rb.co.ctx;
    rb.peer = &ra.co.ctx;
    garble_and_switch(&main_ctx, &ra.co.ctx);
    garble_and_switch(&main_ctx, &rb.co.ctx);
    coro_release(&ra.co);
    coro_release(&rb.co);
    snprintf(d, sizeof d, "rounds %ld/%ld, rounds with changed values %ld/%ld", ra.rounds,
             rb.rounds, ra.errors, rb.errors);
    report("callee_saved", ra.rounds == REGS_ROUNDS && rb.rounds == REGS_ROUNDS &&
                               ra.errors == 0 && rb.errors == 0, d);
}

/* ---- alignment and libc ------------------------------------------------- */

static coro al;
static int al_misaligned;
static char al_text[64];

static NOINLINE int is_misaligned(void)
{
    _Alignas(16) volatile char probe[16];

    probe[0] = 1;
    return ((uintptr_t)probe & 15u) != 0;
}

static void al_entry(void *arg)
{
    volatile double x = 3.25;
    volatile long long n = -1234567890123ll;

    (void)arg;
    al_misaligned = is_misaligned();
    snprintf(al_text, sizeof al_text, "%.3f %lld %s", x, n, "ok");
    fut__ctx_exit(&al.ctx, &main_ctx);
}

static void check_alignment(void)
{
    if (coro_make(&al, al_entry, NULL) != 0) {
        report("alignment_libc", 0, "make failed");
        return;
    }
    fut__ctx_switch(&main_ctx, &al.ctx);
    coro_release(&al);
    report("alignment_libc", !al_misaligned && strcmp(al_text, "3.250 -1234567890123 ok") == 0,
           al_text);
}

/* ---- many live coroutines ----------------------------------------------- */

#define MANY 1000
#define ROUNDS 5

typedef struct worker {
    coro co;
    unsigned id, resumes;
    uint64_t result;
    int damaged;
} worker;

static worker *workers;

static uint64_t step(uint64_t acc, unsigned id, unsigned r)
{
    return acc * 6364136223846793005ull + 1442695040888963407ull + id * 31u + r;
}

static void worker_entry(void *arg)
{
    worker *w = arg;
    uint64_t local[32], acc = w->id;

    for (unsigned i = 0; i < 32; i++)
        local[i] = ((uint64_t)w->id << 32) ^ i;
    for (unsigned r = 0; r < ROUNDS; r++) {
        acc = step(acc, w->id, r);
        w->resumes++;
        fut__ctx_switch(&w->co.ctx, &main_ctx);
        for (unsigned i = 0; i < 32; i++)
            w->damaged |= local[i] != (((uint64_t)w->id << 32) ^ i);
    }
    w->result = acc;
    fut__ctx_exit(&w->co.ctx, &main_ctx);
}

static void check_many(void)
{
    long wrong = 0;
    char d[96];

    workers = calloc(MANY, sizeof *workers);
    if (workers == NULL) {
        report("many_alive", 0, "calloc failed");
        return;
    }
    for (unsigned i = 0; i < MANY; i++) {
        workers[i].id = i;
        if (coro_make(&workers[i].co, worker_entry, &workers[i]) != 0) {
            report("many_alive", 0, "make failed");
            return;
        }
    }
    for (unsigned r = 0; r <= ROUNDS; r++)
        for (unsigned k = 0; k < MANY; k++)
            fut__ctx_switch(&main_ctx, &workers[r % 2 ? MANY - 1 - k : k].co.ctx);
    for (unsigned i = 0; i < MANY; i++) {
        uint64_t acc = i;
        for (unsigned r = 0; r < ROUNDS; r++)
            acc = step(acc, i, r);
        wrong += workers[i].result != acc || workers[i].damaged ||
                 workers[i].resumes != ROUNDS;
        coro_release(&workers[i].co);
    }
    free(workers);
    snprintf(d, sizeof d, "%d coroutines x %d rounds, %ld wrong", MANY, ROUNDS, wrong);
    report("many_alive", wrong == 0, d);
}

/* ---- the cache ---------------------------------------------------------- */

static void check_cache(void)
{
    struct fut__stack_cache sc;
    struct fut__stack *st[8];
    char d[128];
    int ok = fut__stack_cache_init(&sc, STACK, 3) == 0;

    for (int i = 0; ok && i < 8; i++)
        ok = (st[i] = fut__stack_get(&sc)) != NULL;
    ok = ok && sc.mapped == 8;
    for (int i = 0; ok && i < 8; i++)
        fut__stack_put(&sc, st[i]);
    ok = ok && sc.mapped == 3 && sc.cached == 3;
    if (ok) {
        st[0] = fut__stack_get(&sc);
        ok = st[0] != NULL && sc.reused == 1 && sc.mapped == 3;
        fut__stack_put(&sc, st[0]);
    }
    fut__stack_cache_destroy(&sc);
    snprintf(d, sizeof d, "mapped %zu cached %u reused %zu after destroy", sc.mapped, sc.cached,
             sc.reused);
    errno = 0;
    ok = ok && sc.mapped == 0 && sc.cached == 0 && fut__stack_new(0) == NULL && errno == EINVAL;
    report("stack_cache", ok, d);
}

/* ---- overflow ----------------------------------------------------------- */

static char *guard_lo, *guard_hi;
static volatile unsigned long dive_limit = ULONG_MAX;
static coro ov;

static NOINLINE unsigned long dive(unsigned long n)
{
    volatile char pad[256];

    pad[0] = (char)n;
    pad[255] = (char)n;
    if (n == dive_limit)
        return 0;
    return dive(n + 1) + (unsigned long)pad[0] + (unsigned long)pad[255];
}

static void ov_entry(void *arg)
{
    (void)arg;
    dive(0);
    fut__ctx_exit(&ov.ctx, &main_ctx);
}

static void on_segv(int sig, siginfo_t *si, void *uc)
{
    char *a = si->si_addr;

    (void)sig;
    (void)uc;
    _exit(a >= guard_lo && a < guard_hi ? 3 : 4);
}

static void check_overflow(void)
{
    static char altstack[64 * 1024];
    pid_t pid = fork();
    int status = 0;
    char d[96];

    if (pid == 0) {
        stack_t ss = { .ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0 };
        struct sigaction sa;

        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_segv;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        if (sigaltstack(&ss, NULL) != 0 || sigaction(SIGSEGV, &sa, NULL) != 0)
            _exit(5);
        if (coro_make(&ov, ov_entry, NULL) != 0)
            _exit(6);
        guard_hi = ov.stack->base;
        guard_lo = guard_hi - FUT__STACK_GUARD;
        fut__ctx_switch(&main_ctx, &ov.ctx);
        _exit(7);
    }
    if (pid < 0 || waitpid(pid, &status, 0) != pid) {
        report("overflow_guard", 0, "fork/waitpid failed");
        return;
    }
    snprintf(d, sizeof d, "child %s %d (3: fault in the guard)",
             WIFEXITED(status) ? "exit" : "signal",
             WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    report("overflow_guard", WIFEXITED(status) && WEXITSTATUS(status) == 3, d);
}

int main(void)
{
    if (fut__stack_cache_init(&cache, STACK, 64) != 0) {
        fprintf(stderr, "cache init failed\n");
        return 1;
    }
    fut__ctx_init_current(&main_ctx);
    check_pingpong();
    check_transfer();
    check_chain();
    check_callee_saved();
    check_alignment();
    check_many();
    check_cache();
    check_overflow();
    fut__stack_cache_destroy(&cache);
    printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
