/* coro_ctx.h - internal: execution contexts of stackful coroutines (the
 * switch) and the stacks they run on. Nothing here is exported.
 *
 * A context is a suspended thread of control: a stack and the registers
 * needed to resume it. fut__ctx_switch saves the running one into `from`
 * and resumes `to`; it returns when some context switches back to `from`.
 * All switches among a set of contexts happen on one thread (the
 * dispatcher): a context is never resumed on another thread (the
 * sanitizer bookkeeping and the thread's own context are per thread).
 * A made context must not be moved or copied (a ucontext_t points into
 * itself).
 *
 * The switch is chosen by configure (--with-context): a small assembly
 * routine (futures/ctx_x86_64.S, futures/ctx_aarch64.S: FUT_CTX_ASM) or
 * ucontext (futures/ctx_ucontext.c: FUT_CTX_UCONTEXT), the portable
 * fallback, which costs two system calls per switch (the signal mask).
 *
 * What a switch saves (asm backends): the registers the C ABI says a call
 * preserves, and the stack pointer. Not the floating-point environment:
 * MXCSR and the x87 control word on x86-64, FPCR on aarch64 (rounding
 * mode, exception masks, flush-to-zero) belong to the thread and are
 * shared by every context on it; saving them would add ~6 ns a switch
 * pair for what almost no code changes. A coroutine that changes a
 * floating-point mode (fesetround, fesetenv, _MM_SET_FLUSH_ZERO_MODE) must
 * restore it before it suspends. ucontext saves and restores them.
 *
 * Sanitizers: with ASan every switch is announced with
 * __sanitizer_start_switch_fiber / __sanitizer_finish_switch_fiber (also
 * the first entry into a coroutine and the last switch out of a finished
 * one, which drops its fake stack); with TSan every context is a TSan
 * fiber (__tsan_create_fiber, __tsan_switch_to_fiber, and
 * __tsan_destroy_fiber in fut__ctx_destroy). Without sanitizers
 * fut__ctx_switch is a direct call of the backend's routine.
 *
 * Debugging: gdb's backtrace of the running coroutine ends at the backend's
 * `trampoline` frame. To see where a suspended context c stopped (asm
 * backends), point the registers at its saved frame, then put them back:
 *
 *     set $s = (char *)c->sp
 *     set $o_sp = $sp
 *     set $o_pc = $pc
 *     set $o_fp = $rbp                     (aarch64: $x29)
 *     set $rbp = *(void **)($s + 40)       (aarch64: $x29 = *(void **)($s + 80))
 *     set $pc = *(void **)($s + 48)        (aarch64: *(void **)($s + 88))
 *     set $sp = $s + 56                    (aarch64: $s + 160)
 *     bt
 *     set $sp = $o_sp
 *     set $pc = $o_pc
 *     set $rbp = $o_fp                     (aarch64: $x29)
 *
 * Include config.h before this header: the layout of struct fut__ctx
 * depends on the backend configure chose.
 */
#ifndef FUT_CORO_CTX_H
#define FUT_CORO_CTX_H

#include <stddef.h>
#include <stdint.h>

#if defined(FUT_CTX_UCONTEXT)
#include <ucontext.h>
#elif !defined(FUT_CTX_ASM)
#error "include config.h before futures/coro_ctx.h (it defines FUT_CTX_ASM or FUT_CTX_UCONTEXT)"
#endif

/* ------------------------------------------------------------------------
 * Sanitizers in this compilation (ASan and TSan exclude each other)
 * ---------------------------------------------------------------------- */

#if defined(__SANITIZE_ADDRESS__)
#define FUT__CTX_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#define FUT__CTX_TSAN 1
#endif
#ifdef __has_feature
#if __has_feature(address_sanitizer) && !defined(FUT__CTX_ASAN)
#define FUT__CTX_ASAN 1
#endif
#if __has_feature(thread_sanitizer) && !defined(FUT__CTX_TSAN)
#define FUT__CTX_TSAN 1
#endif
#endif
#ifndef FUT__CTX_ASAN
#define FUT__CTX_ASAN 0
#endif
#ifndef FUT__CTX_TSAN
#define FUT__CTX_TSAN 0
#endif

/* ------------------------------------------------------------------------
 * Contexts
 * ---------------------------------------------------------------------- */

/* The smallest stack fut__ctx_make accepts: the initial frame plus room
 * for the entry function to call anything at all. */
#define FUT__CTX_MIN_STACK 4096u

struct fut__ctx {
#ifdef FUT_CTX_UCONTEXT
    ucontext_t uc;            /* registers, FP environment, signal mask, stack (swapcontext) */
    void (*entry)(void *arg); /* what the first switch into it runs (fut__ctx_make) */
    void *arg;                /* entry's argument */
    void *val;                /* what the switch that resumes it passes (fut__ctx_jump) */
#else
    /* Stack pointer saved by the last switch out (offset 0: the assembly
     * uses it). The callee-saved registers and the resume address lie at
     * sp, in the order the backend's .S file describes. */
    void *sp;
#endif
#if FUT__CTX_ASAN
    const void *asan_bottom; /* ASan: lowest address of this context's stack */
    size_t asan_size;        /* ASan: its size; for a thread's own context, learned at its first switch out */
    void *asan_fake_stack;   /* ASan: its fake stack (use-after-return frames) while switched out */
#endif
#if FUT__CTX_TSAN
    void *tsan_fiber; /* TSan: the fiber this context runs as */
    int tsan_owned;   /* TSan: 1 if fut__ctx_make created tsan_fiber (fut__ctx_destroy frees it) */
#endif
};

/* Make c the calling thread's own context (the one it runs on now, on its
 * own stack), so that it can be a `from` and, once switched out of, a
 * `to`. Nothing to destroy: fut__ctx_destroy on it is a no-op. */
void fut__ctx_init_current(struct fut__ctx *c);

/* Prepare c to run entry(arg) on the stack [stack_base, stack_base+size)
 * at the first fut__ctx_switch to it. Runs nothing now. The stack must
 * stay mapped until the context has finished and fut__ctx_destroy(c)
 * was called.
 *
 * entry must never return: a finished coroutine switches away for good
 * with fut__ctx_exit. If entry returns anyway, the process aborts with a
 * message (there is no context to return to).
 *
 * Returns 0, or EINVAL (c, stack_base or entry NULL, size below
 * FUT__CTX_MIN_STACK), or the errno of getcontext (ucontext backend). */
int fut__ctx_make(struct fut__ctx *c, void *stack_base, size_t size,
                  void (*entry)(void *arg), void *arg);

/* Release what fut__ctx_make set up beyond the stack (TSan's fiber). Call
 * it from another context, once c has left with fut__ctx_exit or will
 * never be resumed; then its stack may be reused or unmapped. A context
 * abandoned while suspended is not unwound: nothing on its stack runs
 * again. */
void fut__ctx_destroy(struct fut__ctx *c);

/* The backend's switch (ctx_*.S or ctx_ucontext.c): save the callee-saved
 * state of the running context into from, resume to, handing it val.
 * Use fut__ctx_transfer or fut__ctx_switch. */
void *fut__ctx_jump(struct fut__ctx *from, struct fut__ctx *to, void *val);
/* The same switch seen as returning an int (the low half of the value
 * passed; the asm backends alias one routine), passing nothing: for a
 * tail call from a function that returns int. */
int fut__ctx_jump_int(struct fut__ctx *from, struct fut__ctx *to);

#if FUT__CTX_ASAN || FUT__CTX_TSAN
/* fut__ctx_jump wrapped in the sanitizers' announcements (coro_ctx.c). */
void *fut__ctx_switch_sanitized(struct fut__ctx *from, struct fut__ctx *to, void *val);
int fut__ctx_switch_sanitized_int(struct fut__ctx *from, struct fut__ctx *to);
#endif

/* Suspend the running context, saving it into from (which must describe
 * the running context: its own thread context or a coroutine's), and
 * resume to (a context made by fut__ctx_make and not finished, or one
 * saved by an earlier switch). The switch that suspended to returns val
 * there (a new context's first entry ignores it). Returns, when a switch
 * resumes from, the val that switch passed.
 *
 * A caller may end with `return fut__ctx_transfer(...)` as a tail call:
 * the resumed side then comes back straight into the caller's caller with
 * the value the resumer passed, and no return instruction runs between
 * the two (returns after a switch are mispredicted: the CPU's return
 * predictor holds the other context's calls). */
static inline void *fut__ctx_transfer(struct fut__ctx *from, struct fut__ctx *to, void *val)
{
#if FUT__CTX_ASAN || FUT__CTX_TSAN
    return fut__ctx_switch_sanitized(from, to, val);
#else
    return fut__ctx_jump(from, to, val);
#endif
}

/* fut__ctx_transfer passing nothing and returning the int the resumer
 * passed (as (void *)(intptr_t)n). */
static inline int fut__ctx_transfer_int(struct fut__ctx *from, struct fut__ctx *to)
{
#if FUT__CTX_ASAN || FUT__CTX_TSAN
    return fut__ctx_switch_sanitized_int(from, to);
#else
    return fut__ctx_jump_int(from, to);
#endif
}

/* fut__ctx_transfer without a value. */
static inline void fut__ctx_switch(struct fut__ctx *from, struct fut__ctx *to)
{
    (void)fut__ctx_transfer(from, to, NULL);
}

/* The last switch out of a finished coroutine (from is the running one):
 * resume to and never come back. Sanitizers learn that from's stack is
 * dead (ASan drops its fake stack). Resuming from afterwards is undefined. */
_Noreturn void fut__ctx_exit(struct fut__ctx *from, struct fut__ctx *to);

/* Backends only: the first code a new context runs, on its own stack:
 * finishes the sanitizers' switch, calls entry(arg), aborts if it returns. */
_Noreturn void fut__ctx_start(void (*entry)(void *arg), void *arg);

/* Backends only: set up c (zeroed, sanitizer fields not yet set) so that
 * the first fut__ctx_jump to it calls fut__ctx_start(entry, arg) on the
 * stack [stack_base, stack_base+size). Asm: writes the initial frame below
 * the 16-byte aligned top and sets c->sp. Returns 0 or an errno. */
int fut__ctx_prepare(struct fut__ctx *c, void *stack_base, size_t size,
                     void (*entry)(void *arg), void *arg);

/* ------------------------------------------------------------------------
 * Stacks (futures/stack.c)
 *
 * One mmap per stack: a PROT_NONE guard region at the low end (stacks grow
 * down, so running off the end faults at once instead of overwriting
 * whatever lies below), then the usable bytes. Pages are committed by the
 * kernel only when first touched: a stack costs address space for its
 * full size, memory for the pages its deepest call used.
 *
 * Under valgrind the usable part of each stack is registered with it
 * (VALGRIND_STACK_REGISTER) while mapped, when configure found
 * valgrind/valgrind.h: memcheck then takes a switch onto it for a change
 * of stacks, not a huge stack frame.
 *
 * A stack is two kernel mappings (the guard and the usable part), and
 * Linux allows vm.max_map_count (65530 by default) per process: about
 * 32,000 stacks can be live at once unless that limit is raised; past it
 * fut__stack_new fails with ENOMEM.
 * ---------------------------------------------------------------------- */

/* Usable bytes of a stack when the caller has no better figure: 256 KiB.
 * Only touched pages cost memory, so the size is address space; it must
 * be generous enough for code that calls into libc (printf, getaddrinfo,
 * and every function's frame is two to three times larger under ASan). */
#define FUT__STACK_DEFAULT_SIZE (256u * 1024u)
/* Sizes above this are refused (EINVAL): certainly a unit mistake. */
#define FUT__STACK_MAX_SIZE ((size_t)1 << 30)
/* The guard region below every stack. A frame larger than the guard can
 * step over it (stack clash): 64 KiB costs only address space, and
 * covers any frame without a large variable-length array or alloca;
 * code with bigger frames needs -fstack-clash-protection. */
#define FUT__STACK_GUARD (64u * 1024u)
/* Stacks a cache keeps when the caller has no better figure. */
#define FUT__STACK_CACHE_DEFAULT_MAX 256u

struct fut__stack {
    void *base;              /* lowest usable byte, just above the guard */
    size_t size;             /* usable bytes, a multiple of the page size */
    struct fut__stack *next; /* next free stack while in a cache */
    unsigned valgrind_id;    /* valgrind's id of [base, base+size) (VALGRIND_STACK_REGISTER),
                              * from mmap to munmap; 0 without valgrind.h or valgrind */
};

/* A new stack of at least size usable bytes (rounded up to whole pages).
 * Returns NULL with errno EINVAL (size 0 or above FUT__STACK_MAX_SIZE) or
 * ENOMEM (no memory or no mapping left; also when the allocation hook of
 * pool/alloc.h refuses the descriptor). */
struct fut__stack *fut__stack_new(size_t size);

/* Unmap st (NULL: nothing). */
void fut__stack_free(struct fut__stack *st);

/* A cache of free stacks of one size, owned by one thread: no locking.
 * Counters are for tests and statistics; read them directly. */
struct fut__stack_cache {
    struct fut__stack *free; /* cached stacks, most recently returned first */
    size_t size;             /* usable bytes of every stack it hands out */
    unsigned max_cached;     /* at most this many stay in free */
    unsigned cached;         /* stacks in free now */
    size_t mapped;           /* stacks it mapped and has not unmapped (out + cached) */
    size_t reused;           /* fut__stack_get calls served from free */
    int defer;               /* put keeps stacks beyond max_cached until fut__stack_trim */
    uint64_t over_at;        /* deferred: when a put last left more than max_cached */
};

/* Initialise sc for stacks of size usable bytes (rounded up to pages),
 * keeping at most max_cached free ones (0: cache nothing). Maps nothing
 * yet. Returns 0 or EINVAL (size 0 or above FUT__STACK_MAX_SIZE). */
int fut__stack_cache_init(struct fut__stack_cache *sc, size_t size, unsigned max_cached);

/* A stack from the cache, or a new one. NULL with errno ENOMEM. */
struct fut__stack *fut__stack_get(struct fut__stack_cache *sc);

/* Deferred mode (sc->defer = 1, the dispatcher's): put keeps every stack,
 * and the ones beyond max_cached are unmapped by fut__stack_trim once no
 * put has gone beyond max_cached for FUT__STACK_TRIM_NS. A burst of
 * coroutines that end together then costs no munmap each (every munmap
 * is a TLB shootdown on each CPU that ran a thread of the process: a
 * quarter of the dispatcher's time when 10,000 connections end), and the
 * next burst finds its stacks mapped. now: fut__now_ns(). Returns when
 * to call it again (UINT64_MAX: nothing to trim). */
#define FUT__STACK_TRIM_NS 1000000000u
uint64_t fut__stack_trim(struct fut__stack_cache *sc, uint64_t now);


/* Give st (from fut__stack_get on sc, no longer in use by any context)
 * back: cached if there is room, else unmapped. */
void fut__stack_put(struct fut__stack_cache *sc, struct fut__stack *st);

/* Unmap every cached stack. Stacks still out stay mapped (sc->mapped
 * counts them) and must then be freed with fut__stack_free. */
void fut__stack_cache_destroy(struct fut__stack_cache *sc);

#endif /* FUT_CORO_CTX_H */
