/* coro_ctx.c - the backend-independent half of coroutine contexts:
 * making, destroying and exiting them, and the sanitizer announcements.
 *
 * DESIGN
 *
 * The switch itself is the backend's fut__ctx_jump (ctx_x86_64.S,
 * ctx_aarch64.S or ctx_ucontext.c); without sanitizers fut__ctx_switch
 * calls it directly and nothing here runs per switch.
 *
 * ASan keeps a notion of "the current stack" per thread, to tell stack
 * addresses from others and to hand out fake stacks. Every switch is
 * bracketed: __sanitizer_start_switch_fiber(save, bottom, size) just
 * before, naming the stack we go to, and __sanitizer_finish_switch_fiber
 * just after, on the resumed stack, which also tells us the bounds of the
 * stack we came from. The bounds of a thread's own stack are learned that
 * way at its first switch out (nobody can switch to it before it switched
 * out once), so fut__ctx_init_current needs no system call. The context
 * that switched is passed to the resumed side in a thread-local pointer
 * (switching_from): contexts never change threads. A finished coroutine's
 * last switch passes NULL as the fake-stack save, so ASan frees it.
 *
 * TSan: each made context is a fiber; __tsan_switch_to_fiber(to, 0) right
 * before the jump, which also makes everything done before the switch
 * happen-before everything after it in the resumed context (coroutines
 * hand data to each other through plain memory).
 *
 * No locks, no atomics: a context belongs to one thread.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "futures/coro_ctx.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if FUT__CTX_ASAN
#include <sanitizer/common_interface_defs.h>
#endif
#if FUT__CTX_TSAN
#include <sanitizer/tsan_interface.h>
#endif

#ifdef FUT_CTX_ASM
_Static_assert(offsetof(struct fut__ctx, sp) == 0, "the assembly reads sp at offset 0");
#endif

_Noreturn static void fatal(const char *what)
{
    fprintf(stderr, "libfutures: fatal: %s\n", what);
    abort();
}

#if FUT__CTX_ASAN
/* The context that switched to the one now resuming on this thread: the
 * resumed side records its stack bounds (ASan reports them). */
static _Thread_local struct fut__ctx *switching_from;
#endif

/* Announce the switch from -> to (dying: from never runs again). A macro,
 * not a function: under TSan nothing instrumented may return between
 * __tsan_switch_to_fiber and the jump, because a function's exit hook pops
 * the shadow call stack of whichever fiber is current by then, the new
 * one's (an underflow that crashes TSan). */
#if FUT__CTX_ASAN
#define BEFORE_SWITCH(from, to, dying)                                              \
    do {                                                                            \
        __sanitizer_start_switch_fiber((dying) ? NULL : &(from)->asan_fake_stack,   \
                                       (to)->asan_bottom, (to)->asan_size);         \
        switching_from = (from);                                                    \
    } while (0)
#elif FUT__CTX_TSAN
#define BEFORE_SWITCH(from, to, dying) __tsan_switch_to_fiber((to)->tsan_fiber, 0)
#else
#define BEFORE_SWITCH(from, to, dying) ((void)(from), (void)(to), (void)(dying))
#endif

/* Back on self's stack: finish the switch that resumed it, handing ASan
 * the fake stack self saved (none at a coroutine's first entry). */
#if FUT__CTX_ASAN
#define FINISH_SWITCH(fake)                                                          \
    __sanitizer_finish_switch_fiber((fake), &switching_from->asan_bottom,            \
                                    &switching_from->asan_size)
#define AFTER_SWITCH(self) FINISH_SWITCH((self)->asan_fake_stack)
#define AFTER_FIRST_ENTRY() FINISH_SWITCH(NULL)
#else
#define AFTER_SWITCH(self) ((void)(self))
#define AFTER_FIRST_ENTRY() ((void)0)
#endif

void fut__ctx_init_current(struct fut__ctx *c)
{
    memset(c, 0, sizeof *c);
#if FUT__CTX_TSAN
    c->tsan_fiber = __tsan_get_current_fiber();
    c->tsan_owned = 0;
#endif
}

int fut__ctx_make(struct fut__ctx *c, void *stack_base, size_t size,
                  void (*entry)(void *arg), void *arg)
{
    int rc;

    if (c == NULL || stack_base == NULL || entry == NULL || size < FUT__CTX_MIN_STACK)
        return EINVAL;
    memset(c, 0, sizeof *c);
    rc = fut__ctx_prepare(c, stack_base, size, entry, arg);
    if (rc != 0)
        return rc;
#if FUT__CTX_ASAN
    c->asan_bottom = stack_base;
    c->asan_size = size;
#endif
#if FUT__CTX_TSAN
    c->tsan_fiber = __tsan_create_fiber(0);
    c->tsan_owned = 1;
#endif
    return 0;
}

void fut__ctx_destroy(struct fut__ctx *c)
{
#if FUT__CTX_TSAN
    if (c->tsan_owned && c->tsan_fiber != NULL) {
        /* A fiber that never ran has recorded no event, and TSan's
         * thread-finish code reads trace state only the first event
         * initialises (llvm-project PR 171766, fixed after LLVM 21). Make
         * it current for an instant, with sync (flags 0): the acquire
         * records that event; the edge is inert, the fiber runs nothing. */
        void *self = __tsan_get_current_fiber();

        __tsan_switch_to_fiber(c->tsan_fiber, 0);
        __tsan_switch_to_fiber(self, 0);
        __tsan_destroy_fiber(c->tsan_fiber);
    }
    c->tsan_fiber = NULL;
    c->tsan_owned = 0;
#else
    (void)c;
#endif
}

#if FUT__CTX_ASAN || FUT__CTX_TSAN
void *fut__ctx_switch_sanitized(struct fut__ctx *from, struct fut__ctx *to, void *val)
{
    BEFORE_SWITCH(from, to, 0);
    val = fut__ctx_jump(from, to, val);
    /* Back on from. Also keeps the jump from being a tail call, after
     * which TSan's exit hook would run on the wrong fiber (see above). */
    __asm__ volatile("" ::: "memory");
    AFTER_SWITCH(from);
    return val;
}

int fut__ctx_switch_sanitized_int(struct fut__ctx *from, struct fut__ctx *to)
{
    return (int)(intptr_t)fut__ctx_switch_sanitized(from, to, NULL);
}
#endif

_Noreturn void fut__ctx_exit(struct fut__ctx *from, struct fut__ctx *to)
{
    BEFORE_SWITCH(from, to, 1);
    (void)fut__ctx_jump(from, to, NULL);
    fatal("a coroutine context was resumed after fut__ctx_exit");
}

_Noreturn void fut__ctx_start(void (*entry)(void *arg), void *arg)
{
    AFTER_FIRST_ENTRY();
    entry(arg);
    fatal("a coroutine's entry function returned (it must leave with fut__ctx_exit)");
}
