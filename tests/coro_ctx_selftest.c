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
#include "coro_ctx_checks.h"

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

/* ---- values through the switch (coro_ctx_checks.h) ---------------------- */

static void check_transfer(void)
{
    static coro tv;
    struct ctx_xfer x = { 0 };
    long bad;
    char d[96];

    if (coro_make(&tv, ctx_xfer_entry, &x) != 0) {
        report("transfer", 0, "make failed");
        return;
    }
    x.self = &tv.ctx;
    x.main = &main_ctx;
    x.n = 10000;
    bad = ctx_xfer_drive(&x);
    coro_release(&tv);
    snprintf(d, sizeof d, "%ld wrong values, %ld of 10000 ints", bad + x.bad, x.ints);
    report("transfer", bad + x.bad == 0 && x.ints == 10000 && x.exited, d);
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

/* ---- callee-saved registers (coro_ctx_checks.h) -------------------------- */

#define REGS_ROUNDS 1000

typedef struct regs_co {
    coro co;
    struct ctx_regs r;
} regs_co;

static regs_co ra, rb;

static void regs_entry(void *arg)
{
    regs_co *me = arg;

    ctx_keep_live(&me->r, REGS_ROUNDS);
    fut__ctx_exit(&me->co.ctx, &main_ctx);
}

static void check_callee_saved(void)
{
    char d[128];

    ra.r.seed = 0x0123456789abcdefull;
    rb.r.seed = 0x7766554433221100ull;
    if (coro_make(&ra.co, regs_entry, &ra) != 0 || coro_make(&rb.co, regs_entry, &rb) != 0) {
        report("callee_saved", 0, "make failed");
        return;
    }
    ra.r.self = &ra.co.ctx;
    rb.r.self = &rb.co.ctx;
    ra.r.peer = &rb.co.ctx;
    rb.r.peer = &ra.co.ctx;
    ctx_garble_and_switch(&main_ctx, &ra.co.ctx);
    ctx_garble_and_switch(&main_ctx, &rb.co.ctx);
    coro_release(&ra.co);
    coro_release(&rb.co);
    snprintf(d, sizeof d, "rounds %ld/%ld, rounds with changed values %ld/%ld", ra.r.rounds,
             rb.r.rounds, ra.r.errors, rb.r.errors);
    report("callee_saved", ra.r.rounds == REGS_ROUNDS && rb.r.rounds == REGS_ROUNDS &&
                               ra.r.errors == 0 && rb.r.errors == 0, d);
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
