/* test_coro_ctx.c - coroutine contexts and stacks (internal layer): 1,000,000 in-order ping-pong switches with the thread's own context, values passed through 400,000 switches both ways (also into a tail-calling helper's caller and through the int view), a chain of 100 coroutines switching to each other and exiting into each other, 10,000 live coroutines resumed round-robin with their stacks intact, 5,000 made and destroyed without running, callee-saved integer and FP values kept across switches with the registers garbled, 16-byte stack alignment and printf on a coroutine, an entry that returns aborts, stack cache reuse and bound without leaks, abandoned coroutines, the allocation hook, overflow dying at the guard region, bad arguments. */
#include "testutil.h"

#include "config.h"
#include "futures/coro_ctx.h"
#include "coro_ctx_checks.h"

#include <limits.h>
#include <sys/mman.h>

/* Stack size for the tests' coroutines: small, so that 10,000 fit. */
#define SMALL_STACK (32u * 1024u)

/* A coroutine of the tests: its context, its stack, where it goes back. */
typedef struct coro {
    struct fut__ctx ctx;
    struct fut__stack *stack;
    struct fut__ctx *home; /* the context it switches to when it yields */
} coro;

static void coro_make(coro *c, struct fut__stack_cache *sc, struct fut__ctx *home,
                      void (*entry)(void *), void *arg)
{
    int rc;

    c->stack = fut__stack_get(sc);
    TU_REQUIRE(c->stack != NULL, "fut__stack_get: %s", strerror(errno));
    c->home = home;
    rc = fut__ctx_make(&c->ctx, c->stack->base, c->stack->size, entry, arg);
    TU_REQUIRE(rc == 0, "fut__ctx_make: %s", strerror(rc));
}

static void coro_release(coro *c, struct fut__stack_cache *sc)
{
    fut__ctx_destroy(&c->ctx);
    fut__stack_put(sc, c->stack);
    c->stack = NULL;
}

static void cache_init(struct fut__stack_cache *sc, size_t size, unsigned max_cached)
{
    int rc = fut__stack_cache_init(sc, size, max_cached);
    ck_assert_msg(rc == 0, "fut__stack_cache_init(%zu, %u): %s", size, max_cached, strerror(rc));
}

/* ------------------------------------------------------------------------
 * Ping-pong with the thread's own context
 * ---------------------------------------------------------------------- */

#define PINGPONG_N 1000000L

typedef struct pingpong {
    coro co;
    struct fut__ctx main;
    unsigned long long seq;    /* each side adds one per turn: even = main's turn */
    unsigned long long bad_at; /* first seq the coroutine saw out of order, +1 */
    int stop;                  /* main asks the coroutine to finish */
} pingpong;

static void pingpong_entry(void *arg)
{
    pingpong *p = arg;
    unsigned long long expect = 1;

    while (!p->stop) {
        if (p->seq != expect && p->bad_at == 0)
            p->bad_at = p->seq + 1;
        p->seq++;
        expect += 2;
        fut__ctx_switch(&p->co.ctx, &p->main);
    }
    fut__ctx_exit(&p->co.ctx, &p->main);
}

START_TEST(test_pingpong)
{
    struct fut__stack_cache sc;
    pingpong *p = calloc(1, sizeof *p);

    ck_assert_ptr_nonnull(p);
    cache_init(&sc, SMALL_STACK, 1);
    fut__ctx_init_current(&p->main);
    coro_make(&p->co, &sc, &p->main, pingpong_entry, p);
    for (long i = 0; i < PINGPONG_N; i++) {
        TU_REQUIRE(p->seq == 2ull * (unsigned long long)i, "switch %ld: seq %llu, expected %llu",
                   i, p->seq, 2ull * (unsigned long long)i);
        p->seq++;
        fut__ctx_switch(&p->main, &p->co.ctx);
    }
    ck_assert_uint_eq(p->seq, 2ull * PINGPONG_N);
    ck_assert_msg(p->bad_at == 0, "the coroutine saw seq %llu out of order", p->bad_at - 1);
    p->stop = 1;
    fut__ctx_switch(&p->main, &p->co.ctx); /* it exits back to us */
    ck_assert_uint_eq(p->seq, 2ull * PINGPONG_N);
    coro_release(&p->co, &sc);
    ck_assert_uint_eq(sc.mapped, 1);
    fut__stack_cache_destroy(&sc);
    ck_assert_uint_eq(sc.mapped, 0);
    free(p);
}
END_TEST

/* ------------------------------------------------------------------------
 * Values through the switch: each side gets what the other passed, also
 * when the switch is the tail call of a helper (the helper's caller gets
 * it straight), and through the int view.
 * ---------------------------------------------------------------------- */

#define TRANSFER_N 200000L

START_TEST(test_transfer_values)
{
    struct fut__stack_cache sc;
    struct fut__ctx main_ctx;
    struct ctx_xfer x = { 0 };
    coro c;
    long bad;

    cache_init(&sc, SMALL_STACK, 1);
    fut__ctx_init_current(&main_ctx);
    coro_make(&c, &sc, &main_ctx, ctx_xfer_entry, &x);
    x.self = &c.ctx;
    x.main = &main_ctx;
    x.n = TRANSFER_N;
    bad = ctx_xfer_drive(&x);
    ck_assert_int_eq(bad, 0);
    ck_assert_int_eq(x.bad, 0);
    ck_assert_int_eq(x.exited, 1);
    ck_assert_int_eq(x.ints, TRANSFER_N);
    coro_release(&c, &sc);
    fut__stack_cache_destroy(&sc);
}
END_TEST

/* ------------------------------------------------------------------------
 * A chain: main -> c0 -> c1 -> ... -> c99 -> main, coroutine to coroutine;
 * at the end each exits into the next one.
 * ---------------------------------------------------------------------- */

#define CHAIN_LEN 100
#define CHAIN_ROUNDS 2000

typedef struct chain chain;

typedef struct chain_link {
    coro co;
    chain *ch;
    int index;
    struct fut__ctx *next; /* the next coroutine, or main for the last */
} chain_link;

struct chain {
    chain_link links[CHAIN_LEN];
    struct fut__ctx main;
    long seq;     /* one per coroutine visit, in chain order */
    long errors;  /* visits that found seq out of order */
    long exited;  /* coroutines that ran to their exit */
    int stop;
};

static void link_entry(void *arg)
{
    chain_link *l = arg;
    chain *ch = l->ch;
    long round = 0;

    while (!ch->stop) {
        if (ch->seq != round * CHAIN_LEN + l->index)
            ch->errors++;
        ch->seq++;
        round++;
        fut__ctx_switch(&l->co.ctx, l->next);
    }
    ch->exited++;
    fut__ctx_exit(&l->co.ctx, l->next);
}

START_TEST(test_chain)
{
    struct fut__stack_cache sc;
    chain *ch = calloc(1, sizeof *ch);

    ck_assert_ptr_nonnull(ch);
    cache_init(&sc, SMALL_STACK, CHAIN_LEN);
    fut__ctx_init_current(&ch->main);
    for (int i = 0; i < CHAIN_LEN; i++) {
        chain_link *l = &ch->links[i];
        l->ch = ch;
        l->index = i;
        l->next = i + 1 < CHAIN_LEN ? &ch->links[i + 1].co.ctx : &ch->main;
        coro_make(&l->co, &sc, &ch->main, link_entry, l);
    }
    for (long r = 0; r < CHAIN_ROUNDS; r++) {
        fut__ctx_switch(&ch->main, &ch->links[0].co.ctx);
        TU_REQUIRE(ch->seq == (r + 1) * CHAIN_LEN, "round %ld: seq %ld", r, ch->seq);
    }
    ck_assert_int_eq(ch->errors, 0);
    ch->stop = 1;
    fut__ctx_switch(&ch->main, &ch->links[0].co.ctx);
    ck_assert_int_eq(ch->exited, CHAIN_LEN);
    for (int i = 0; i < CHAIN_LEN; i++)
        coro_release(&ch->links[i].co, &sc);
    ck_assert_uint_eq(sc.mapped, CHAIN_LEN);
    ck_assert_uint_eq(sc.cached, CHAIN_LEN);
    fut__stack_cache_destroy(&sc);
    ck_assert_uint_eq(sc.mapped, 0);
    free(ch);
}
END_TEST

/* ------------------------------------------------------------------------
 * 10,000 coroutines alive at once, each resumed MANY_ROUNDS times
 * ---------------------------------------------------------------------- */

#define MANY 10000
#define MANY_ROUNDS 5
#define MANY_LOCALS 64

typedef struct worker {
    coro co;
    unsigned id;
    unsigned resumes;  /* times it has been switched into and came back out */
    int damaged;       /* its stack-local data changed while it was out */
    uint64_t result;   /* set just before it exits */
    int finished;
} worker;

static uint64_t worker_step(uint64_t acc, unsigned id, unsigned r)
{
    return acc * 6364136223846793005ull + 1442695040888963407ull + id * 31u + r;
}

static void worker_entry(void *arg)
{
    worker *w = arg;
    uint64_t local[MANY_LOCALS];
    uint64_t acc = w->id;

    for (unsigned i = 0; i < MANY_LOCALS; i++)
        local[i] = ((uint64_t)w->id << 32) ^ (i * 0x9E3779B97F4A7C15ull);
    for (unsigned r = 0; r < MANY_ROUNDS; r++) {
        acc = worker_step(acc, w->id, r);
        w->resumes++;
        fut__ctx_switch(&w->co.ctx, w->co.home);
        for (unsigned i = 0; i < MANY_LOCALS; i++)
            if (local[i] != (((uint64_t)w->id << 32) ^ (i * 0x9E3779B97F4A7C15ull)))
                w->damaged = 1;
    }
    w->result = acc;
    w->finished = 1;
    fut__ctx_exit(&w->co.ctx, w->co.home);
}

START_TEST(test_many_alive)
{
    struct fut__stack_cache sc;
    struct fut__ctx main_ctx;
    worker *w = calloc(MANY, sizeof *w);

    ck_assert_ptr_nonnull(w);
    cache_init(&sc, SMALL_STACK, 64);
    fut__ctx_init_current(&main_ctx);
    for (unsigned i = 0; i < MANY; i++) {
        w[i].id = i;
        coro_make(&w[i].co, &sc, &main_ctx, worker_entry, &w[i]);
    }
    ck_assert_uint_eq(sc.mapped, MANY);
    /* MANY_ROUNDS + 1 resumes each (the first starts it, the last ends
     * it), in alternating directions so neighbours interleave both ways. */
    for (unsigned r = 0; r <= MANY_ROUNDS; r++) {
        for (unsigned k = 0; k < MANY; k++) {
            unsigned i = r % 2 == 0 ? k : MANY - 1 - k;
            fut__ctx_switch(&main_ctx, &w[i].co.ctx);
            TU_REQUIRE(w[i].resumes == (r < MANY_ROUNDS ? r + 1 : MANY_ROUNDS),
                       "coroutine %u: %u resumes after round %u", i, w[i].resumes, r);
        }
    }
    for (unsigned i = 0; i < MANY; i++) {
        uint64_t acc = i;
        for (unsigned r = 0; r < MANY_ROUNDS; r++)
            acc = worker_step(acc, i, r);
        TU_REQUIRE(w[i].finished, "coroutine %u did not finish", i);
        TU_REQUIRE(!w[i].damaged, "coroutine %u: its stack changed while it was suspended", i);
        TU_REQUIRE(w[i].result == acc, "coroutine %u: result %llx, expected %llx", i,
                   (unsigned long long)w[i].result, (unsigned long long)acc);
        coro_release(&w[i].co, &sc);
    }
    ck_assert_uint_eq(sc.cached, 64);
    ck_assert_uint_eq(sc.mapped, 64);
    fut__stack_cache_destroy(&sc);
    ck_assert_uint_eq(sc.mapped, 0);
    free(w);
}
END_TEST

/* ------------------------------------------------------------------------
 * Callee-saved registers: two coroutines keep 8 integers and 8 doubles
 * live across each switch to the other, and fill every callee-saved
 * register with garbage just before switching.
 * ---------------------------------------------------------------------- */

#define REGS_ROUNDS 1000

typedef struct regs_co {
    coro co;
    struct ctx_regs r;
} regs_co;

static void regs_entry(void *arg)
{
    regs_co *me = arg;

    ctx_keep_live(&me->r, REGS_ROUNDS);
    fut__ctx_exit(&me->co.ctx, me->co.home);
}

START_TEST(test_callee_saved)
{
    struct fut__stack_cache sc;
    struct fut__ctx main_ctx;
    regs_co *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
    volatile uint64_t main_seed = 0xfeedfacecafebeefull;
    uint64_t ms = main_seed;
    long long m0 = CTX_IV(ms, 0, 0), m1 = CTX_IV(ms, 1, 0);
    double e0 = CTX_DV(ms, 0, 0), e1 = CTX_DV(ms, 1, 0);

    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    cache_init(&sc, SMALL_STACK, 2);
    fut__ctx_init_current(&main_ctx);
    a->r.seed = 0x0123456789abcdefull;
    b->r.seed = 0x7766554433221100ull;
    coro_make(&a->co, &sc, &main_ctx, regs_entry, a);
    coro_make(&b->co, &sc, &main_ctx, regs_entry, b);
    a->r.self = &a->co.ctx;
    b->r.self = &b->co.ctx;
    a->r.peer = &b->co.ctx;
    b->r.peer = &a->co.ctx;
    /* a and b switch to each other REGS_ROUNDS times each; a finishes
     * first (back to main), then b is resumed to finish. */
    ctx_garble_and_switch(&main_ctx, &a->co.ctx);
    ck_assert_int_eq(a->r.rounds, REGS_ROUNDS);
    ck_assert_int_eq(b->r.rounds, REGS_ROUNDS - 1);
    ctx_garble_and_switch(&main_ctx, &b->co.ctx);
    ck_assert_int_eq(b->r.rounds, REGS_ROUNDS);
    ck_assert_msg(a->r.errors == 0, "coroutine a: %ld rounds with changed values", a->r.errors);
    ck_assert_msg(b->r.errors == 0, "coroutine b: %ld rounds with changed values", b->r.errors);
    ms = main_seed;
    ck_assert_msg(m0 == CTX_IV(ms, 0, 0) && m1 == CTX_IV(ms, 1, 0) && e0 == CTX_DV(ms, 0, 0) &&
                      e1 == CTX_DV(ms, 1, 0),
                  "the thread's own context lost values across its switches");
    coro_release(&a->co, &sc);
    coro_release(&b->co, &sc);
    fut__stack_cache_destroy(&sc);
    free(a);
    free(b);
}
END_TEST

/* ------------------------------------------------------------------------
 * Stack alignment and libc on a coroutine stack
 * ---------------------------------------------------------------------- */

typedef struct align_co {
    coro co;
    int misaligned; /* a 16-aligned local was not 16-aligned */
    char text[64];  /* what snprintf wrote on the coroutine's stack */
} align_co;

static NOINLINE int is_misaligned(void)
{
    _Alignas(16) volatile char probe[16];

    probe[0] = 1;
    return ((uintptr_t)probe & 15u) != 0;
}

static void align_entry(void *arg)
{
    align_co *c = arg;
    volatile double x = 3.25;
    volatile long long n = -1234567890123ll;

    c->misaligned = is_misaligned();
    snprintf(c->text, sizeof c->text, "%.3f %lld %s", x, n, "ok");
    fut__ctx_switch(&c->co.ctx, c->co.home);
    c->misaligned |= is_misaligned();
    fut__ctx_exit(&c->co.ctx, c->co.home);
}

START_TEST(test_alignment_and_libc)
{
    struct fut__stack_cache sc;
    struct fut__ctx main_ctx;
    align_co c;

    memset(&c, 0, sizeof c);
    cache_init(&sc, FUT__STACK_DEFAULT_SIZE, 1);
    fut__ctx_init_current(&main_ctx);
    coro_make(&c.co, &sc, &main_ctx, align_entry, &c);
    fut__ctx_switch(&main_ctx, &c.co.ctx);
    ck_assert_str_eq(c.text, "3.250 -1234567890123 ok");
    fut__ctx_switch(&main_ctx, &c.co.ctx);
    ck_assert_msg(!c.misaligned, "a 16-byte aligned local was misaligned on the coroutine stack");
    coro_release(&c.co, &sc);
    fut__stack_cache_destroy(&sc);
}
END_TEST

/* An entry that returns: the process aborts (there is nowhere to go). */
static void returning_entry(void *arg)
{
    (void)arg;
}

START_TEST(test_entry_returns_aborts)
{
    struct fut__ctx main_ctx, co;
    struct fut__stack *st = fut__stack_new(SMALL_STACK);

    ck_assert_ptr_nonnull(st);
    fut__ctx_init_current(&main_ctx);
    ck_assert_int_eq(fut__ctx_make(&co, st->base, st->size, returning_entry, NULL), 0);
    fut__ctx_switch(&main_ctx, &co);
    ck_abort_msg("came back after the entry returned");
}
END_TEST

/* ------------------------------------------------------------------------
 * Stacks and the cache
 * ---------------------------------------------------------------------- */

/* Whether [p, p + n) is mapped at all (msync fails with ENOMEM if not). */
static bool is_mapped(const void *p, size_t n)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = (uintptr_t)p & ~(page - 1);

    return msync((void *)lo, (uintptr_t)p + n - lo, MS_ASYNC) == 0;
}

/* Whether /proc/self/maps shows [lo, hi) inside one mapping with no access;
 * -1 if /proc cannot be read. */
static int is_guard(const void *lo, const void *hi)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int found = 0;

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long long a, b;
        char perms[8];
        if (sscanf(line, "%llx-%llx %7s", &a, &b, perms) != 3)
            continue;
        if (a <= (uintptr_t)lo && (uintptr_t)hi <= b) {
            found = strncmp(perms, "---", 3) == 0;
            break;
        }
    }
    fclose(f);
    return found;
}

typedef struct counter_co {
    coro co;
    int ran; /* times the entry ran */
} counter_co;

static void counter_entry(void *arg)
{
    counter_co *c = arg;

    c->ran++;
    fut__ctx_exit(&c->co.ctx, c->co.home);
}

START_TEST(test_stack_layout)
{
    long page = sysconf(_SC_PAGESIZE);
    struct fut__stack *st = fut__stack_new(1);
    volatile char *lo, *hi;
    int g;

    ck_assert_ptr_nonnull(st);
    ck_assert_uint_eq(st->size, (size_t)page);
    fut__stack_free(st);

    st = fut__stack_new(FUT__STACK_DEFAULT_SIZE + 1);
    ck_assert_ptr_nonnull(st);
    ck_assert_uint_eq(st->size, FUT__STACK_DEFAULT_SIZE + (size_t)page);
    ck_assert_uint_eq((uintptr_t)st->base % (uintptr_t)page, 0);
    lo = st->base;
    hi = (char *)st->base + st->size - 1;
    *lo = 1; /* every usable byte is writable */
    *hi = 2;
    ck_assert_int_eq(*lo + *hi, 3);
    g = is_guard((char *)st->base - FUT__STACK_GUARD, st->base);
    if (g >= 0)
        ck_assert_msg(g == 1, "no inaccessible guard of %u bytes below the stack",
                      FUT__STACK_GUARD);
    fut__stack_free(st);
    ck_assert_msg(!is_mapped((const void *)lo, 1), "a freed stack is still mapped");
    fut__stack_free(NULL);
}
END_TEST

/* Deferred mode (the dispatcher's): a burst's stacks stay cached beyond
 * the bound, and fut__stack_trim unmaps the excess only once no put has
 * gone beyond it for FUT__STACK_TRIM_NS. */
START_TEST(test_cache_deferred_trim)
{
    enum { KEEP2 = 3, BURST = 12 };
    struct fut__stack_cache sc;
    struct fut__stack *st[BURST];
    void *bases[BURST];
    uint64_t due;

    cache_init(&sc, SMALL_STACK, KEEP2);
    sc.defer = 1;
    ck_assert_uint_eq(fut__stack_trim(&sc, 0), UINT64_MAX); /* nothing cached */
    for (int i = 0; i < BURST; i++) {
        st[i] = fut__stack_get(&sc);
        ck_assert_ptr_nonnull(st[i]);
        bases[i] = st[i]->base;
    }
    for (int i = 0; i < BURST; i++)
        fut__stack_put(&sc, st[i]);
    ck_assert_uint_eq(sc.cached, BURST); /* all kept: no munmap per put */
    ck_assert_uint_eq(sc.mapped, BURST);
    /* Too soon: nothing goes, and it says when to come back. */
    due = fut__stack_trim(&sc, sc.over_at);
    ck_assert_uint_eq(due, sc.over_at + FUT__STACK_TRIM_NS);
    ck_assert_uint_eq(sc.cached, BURST);
    /* Then the excess goes, the bound stays, every cached one mapped. */
    ck_assert_uint_eq(fut__stack_trim(&sc, due), UINT64_MAX);
    ck_assert_uint_eq(sc.cached, KEEP2);
    ck_assert_uint_eq(sc.mapped, KEEP2);
    {
        int still = 0;
        for (int i = 0; i < BURST; i++)
            still += is_mapped(bases[i], SMALL_STACK);
        ck_assert_int_eq(still, KEEP2);
    }
    fut__stack_cache_destroy(&sc);
    ck_assert_uint_eq(sc.mapped, 0);
}
END_TEST

START_TEST(test_cache_reuse)
{
    enum { OUT = 10, KEEP = 4, CYCLES = 1000 };
    struct fut__stack_cache sc;
    struct fut__ctx main_ctx;
    struct fut__stack *st[OUT];
    void *bases[OUT];
    counter_co c;

    cache_init(&sc, SMALL_STACK, KEEP);
    ck_assert_uint_eq(sc.mapped, 0);
    ck_assert_uint_eq(sc.cached, 0);
    for (int i = 0; i < OUT; i++) {
        st[i] = fut__stack_get(&sc);
        ck_assert_ptr_nonnull(st[i]);
        bases[i] = st[i]->base;
        ck_assert_uint_eq(st[i]->size, SMALL_STACK);
    }
    ck_assert_uint_eq(sc.mapped, OUT);
    ck_assert_uint_eq(sc.reused, 0);
    for (int i = 0; i < OUT; i++)
        fut__stack_put(&sc, st[i]);
    /* The first KEEP returned are kept, the rest unmapped at once. */
    ck_assert_uint_eq(sc.cached, KEEP);
    ck_assert_uint_eq(sc.mapped, KEEP);
    for (int i = 0; i < KEEP; i++)
        ck_assert_msg(is_mapped(bases[i], SMALL_STACK), "cached stack %d not mapped", i);
    for (int i = KEEP; i < OUT; i++)
        ck_assert_msg(!is_mapped(bases[i], SMALL_STACK), "stack %d still mapped", i);
    /* LIFO: the last one cached comes back first. */
    st[0] = fut__stack_get(&sc);
    ck_assert_ptr_eq(st[0]->base, bases[KEEP - 1]);
    ck_assert_uint_eq(sc.reused, 1);
    ck_assert_uint_eq(sc.cached, KEEP - 1);
    fut__stack_put(&sc, st[0]);

    /* 1,000 coroutines one after another run on the cached stacks. */
    fut__ctx_init_current(&main_ctx);
    for (int i = 0; i < CYCLES; i++) {
        memset(&c, 0, sizeof c);
        coro_make(&c.co, &sc, &main_ctx, counter_entry, &c);
        fut__ctx_switch(&main_ctx, &c.co.ctx);
        TU_REQUIRE(c.ran == 1, "cycle %d: entry ran %d times", i, c.ran);
        coro_release(&c.co, &sc);
        TU_REQUIRE(sc.mapped == KEEP && sc.cached == KEEP, "cycle %d: %zu mapped, %u cached", i,
                   sc.mapped, sc.cached);
    }
    ck_assert_uint_eq(sc.reused, 1 + CYCLES);

    fut__stack_cache_destroy(&sc);
    ck_assert_uint_eq(sc.mapped, 0);
    ck_assert_uint_eq(sc.cached, 0);
    for (int i = 0; i < KEEP; i++)
        ck_assert_msg(!is_mapped(bases[i], SMALL_STACK), "cached stack %d still mapped", i);

    /* A cache that keeps nothing unmaps at once. */
    cache_init(&sc, SMALL_STACK, 0);
    st[0] = fut__stack_get(&sc);
    ck_assert_ptr_nonnull(st[0]);
    bases[0] = st[0]->base;
    ck_assert_uint_eq(sc.mapped, 1);
    fut__stack_put(&sc, st[0]);
    ck_assert_uint_eq(sc.mapped, 0);
    ck_assert(!is_mapped(bases[0], SMALL_STACK));
    fut__stack_cache_destroy(&sc);
}
END_TEST

/* A coroutine abandoned while suspended: destroyed without finishing, its
 * stack goes back to the cache and serves the next one. */
typedef struct abandoned_co {
    coro co;
    int resumed; /* must stay 0 */
} abandoned_co;

static NOINLINE void abandoned_deep(abandoned_co *c, int depth)
{
    volatile char pad[128];

    pad[0] = (char)depth;
    if (depth > 0)
        abandoned_deep(c, depth - 1);
    else
        fut__ctx_switch(&c->co.ctx, c->co.home);
    c->resumed += pad[0] + 1;
}

static void abandoned_entry(void *arg)
{
    abandoned_co *c = arg;

    abandoned_deep(c, 20);
    fut__ctx_exit(&c->co.ctx, c->co.home);
}

START_TEST(test_abandoned)
{
    struct fut__stack_cache sc;
    struct fut__ctx main_ctx;
    abandoned_co a;
    counter_co c;
    void *base;

    cache_init(&sc, SMALL_STACK, 1);
    fut__ctx_init_current(&main_ctx);
    memset(&a, 0, sizeof a);
    coro_make(&a.co, &sc, &main_ctx, abandoned_entry, &a);
    base = a.co.stack->base;
    fut__ctx_switch(&main_ctx, &a.co.ctx); /* it suspends 21 frames deep */
    coro_release(&a.co, &sc);              /* and is never resumed */
    ck_assert_int_eq(a.resumed, 0);
    memset(&c, 0, sizeof c);
    coro_make(&c.co, &sc, &main_ctx, counter_entry, &c);
    ck_assert_ptr_eq(c.co.stack->base, base);
    fut__ctx_switch(&main_ctx, &c.co.ctx);
    ck_assert_int_eq(c.ran, 1);
    coro_release(&c.co, &sc);
    ck_assert_uint_eq(sc.mapped, 1);
    fut__stack_cache_destroy(&sc);
    ck_assert_uint_eq(sc.mapped, 0);
}
END_TEST

/* Contexts made and destroyed without ever running (a coroutine cancelled
 * before it started), 5,000 of them, then one that runs. */
START_TEST(test_never_run)
{
    struct fut__stack_cache sc;
    struct fut__ctx main_ctx;
    counter_co c;

    cache_init(&sc, SMALL_STACK, 1);
    fut__ctx_init_current(&main_ctx);
    for (int i = 0; i < 5000; i++) {
        memset(&c, 0, sizeof c);
        coro_make(&c.co, &sc, &main_ctx, counter_entry, &c);
        coro_release(&c.co, &sc);
    }
    ck_assert_int_eq(c.ran, 0);
    coro_make(&c.co, &sc, &main_ctx, counter_entry, &c);
    fut__ctx_switch(&main_ctx, &c.co.ctx);
    ck_assert_int_eq(c.ran, 1);
    coro_release(&c.co, &sc);
    ck_assert_uint_eq(sc.mapped, 1);
    fut__stack_cache_destroy(&sc);
}
END_TEST

static int refuse_all(size_t size)
{
    (void)size;
    return 1;
}

START_TEST(test_alloc_hook)
{
    struct fut__stack_cache sc;
    struct fut__stack *st;

    cache_init(&sc, SMALL_STACK, 4);
    fut__alloc_set_hook(refuse_all);
    errno = 0;
    ck_assert_ptr_null(fut__stack_new(SMALL_STACK));
    ck_assert_int_eq(errno, ENOMEM);
    errno = 0;
    ck_assert_ptr_null(fut__stack_get(&sc));
    ck_assert_int_eq(errno, ENOMEM);
    ck_assert_uint_eq(sc.mapped, 0);
    fut__alloc_set_hook(NULL);
    st = fut__stack_get(&sc);
    ck_assert_ptr_nonnull(st);
    ck_assert_uint_eq(sc.mapped, 1);
    fut__stack_put(&sc, st);
    /* A cached stack is handed out even while allocation fails. */
    fut__alloc_set_hook(refuse_all);
    st = fut__stack_get(&sc);
    ck_assert_ptr_nonnull(st);
    fut__alloc_set_hook(NULL);
    fut__stack_put(&sc, st);
    fut__stack_cache_destroy(&sc);
    ck_assert_uint_eq(sc.mapped, 0);
}
END_TEST

START_TEST(test_bad_arguments)
{
    struct fut__stack_cache sc;
    struct fut__ctx c;
    struct fut__stack *st;
    static char buf[FUT__CTX_MIN_STACK];

    errno = 0;
    ck_assert_ptr_null(fut__stack_new(0));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(fut__stack_new(FUT__STACK_MAX_SIZE + 1));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(fut__stack_new(SIZE_MAX));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(fut__stack_cache_init(&sc, 0, 4), EINVAL);
    ck_assert_int_eq(fut__stack_cache_init(&sc, SIZE_MAX, 4), EINVAL);
    ck_assert_int_eq(fut__stack_cache_init(&sc, FUT__STACK_MAX_SIZE + 1, 4), EINVAL);
    ck_assert_int_eq(fut__stack_cache_init(NULL, SMALL_STACK, 4), EINVAL);
    /* The largest size is accepted (address space only). */
    st = fut__stack_new(FUT__STACK_MAX_SIZE);
    ck_assert_ptr_nonnull(st);
    ck_assert_uint_eq(st->size, FUT__STACK_MAX_SIZE);
    fut__stack_free(st);

    ck_assert_int_eq(fut__ctx_make(&c, NULL, sizeof buf, counter_entry, NULL), EINVAL);
    ck_assert_int_eq(fut__ctx_make(&c, buf, sizeof buf, NULL, NULL), EINVAL);
    ck_assert_int_eq(fut__ctx_make(&c, buf, FUT__CTX_MIN_STACK - 1, counter_entry, NULL), EINVAL);
    ck_assert_int_eq(fut__ctx_make(&c, buf, 0, counter_entry, NULL), EINVAL);
    ck_assert_int_eq(fut__ctx_make(NULL, buf, sizeof buf, counter_entry, NULL), EINVAL);
    ck_assert_int_eq(fut__ctx_make(&c, buf, sizeof buf, counter_entry, NULL), 0);
    fut__ctx_destroy(&c);
}
END_TEST

/* ------------------------------------------------------------------------
 * Overflow: a coroutine that recurses without end faults in the guard.
 * ---------------------------------------------------------------------- */

/* Exit status of the child when the fault was in the guard / elsewhere. */
#define GUARD_HIT 3
#define FAULT_ELSEWHERE 4

static char *guard_lo, *guard_hi;
static volatile unsigned long dive_limit = ULONG_MAX;
static volatile unsigned long dive_depth;

static NOINLINE unsigned long dive(unsigned long n)
{
    volatile char pad[256];

    pad[0] = (char)n;
    pad[255] = (char)n;
    dive_depth = n;
    if (n == dive_limit)
        return 0;
    return dive(n + 1) + (unsigned long)pad[0] + (unsigned long)pad[255];
}

static void overflow_entry(void *arg)
{
    coro *c = arg;

    dive(0);
    fut__ctx_exit(&c->ctx, c->home);
}

static void on_segv(int sig, siginfo_t *si, void *uctx)
{
    char *a = si->si_addr;

    (void)sig;
    (void)uctx;
    _exit(a >= guard_lo && a < guard_hi ? GUARD_HIT : FAULT_ELSEWHERE);
}

static void run_overflow(void)
{
    struct fut__stack_cache sc;
    struct fut__ctx main_ctx;
    coro c;

    cache_init(&sc, SMALL_STACK, 1);
    fut__ctx_init_current(&main_ctx);
    coro_make(&c, &sc, &main_ctx, overflow_entry, &c);
    guard_hi = c.stack->base;
    guard_lo = guard_hi - FUT__STACK_GUARD;
    fut__ctx_switch(&main_ctx, &c.ctx);
    ck_abort_msg("the coroutine came back after recursing %lu frames deep", dive_depth);
}

/* The fault address is inside the guard (a handler on its own stack
 * checks si_addr). Works under the sanitizers too: they pass SIGSEGV to
 * a handler the program installs. */
START_TEST(test_overflow_hits_guard)
{
    static char altstack[64 * 1024];
    stack_t ss;
    struct sigaction sa;

    memset(&ss, 0, sizeof ss);
    ss.ss_sp = altstack;
    ss.ss_size = sizeof altstack;
    ck_assert_int_eq(sigaltstack(&ss, NULL), 0);
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    ck_assert_int_eq(sigaction(SIGSEGV, &sa, NULL), 0);
    run_overflow();
}
END_TEST

#if !TU_ASAN && !TU_TSAN
/* With no handler, the process dies of SIGSEGV. Not run under ASan or
 * TSan: their own SIGSEGV handler reports the crash and exits with a
 * status instead of dying of the signal (test_overflow_hits_guard covers
 * those builds). */
START_TEST(test_overflow_kills)
{
    run_overflow();
}
END_TEST
#endif

static Suite *coro_ctx_suite(void)
{
    Suite *s = suite_create("coro_ctx");
    TCase *tc;

    tc = tu_tcase(s, "switch", 120);
    tcase_add_test(tc, test_pingpong);
    tcase_add_test(tc, test_transfer_values);
    tcase_add_test(tc, test_chain);
    tcase_add_test(tc, test_many_alive);
    tcase_add_test(tc, test_callee_saved);
    tcase_add_test(tc, test_alignment_and_libc);
    tcase_add_test_raise_signal(tc, test_entry_returns_aborts, SIGABRT);

    tc = tu_tcase(s, "stack", 60);
    tcase_add_test(tc, test_stack_layout);
    tcase_add_test(tc, test_cache_reuse);
    tcase_add_test(tc, test_cache_deferred_trim);
    tcase_add_test(tc, test_abandoned);
    tcase_add_test(tc, test_never_run);
    tcase_add_test(tc, test_alloc_hook);
    tcase_add_test(tc, test_bad_arguments);

    tc = tu_tcase(s, "overflow", 60);
    tcase_add_exit_test(tc, test_overflow_hits_guard, GUARD_HIT);
#if !TU_ASAN && !TU_TSAN
    tcase_add_test_raise_signal(tc, test_overflow_kills, SIGSEGV);
#endif
    return s;
}

int main(void)
{
    return tu_run_suite(coro_ctx_suite());
}
