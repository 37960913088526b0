/* ctx_ucontext.c - coroutine context switch with getcontext, makecontext
 * and swapcontext: the portable fallback (configure --with-context=ucontext).
 *
 * DESIGN
 *
 * POSIX.1-2001 calls (removed in 2008, but in every libc that matters).
 * swapcontext saves and restores everything: all registers, the
 * floating-point environment and the signal mask; the signal mask costs
 * two rt_sigprocmask system calls per switch (about 40 times the assembly
 * backends' cost), which is why it is not the default where we have
 * assembly.
 *
 * makecontext passes only int arguments to the new context's function, so
 * the context's address crosses as two 32-bit halves; the entry function
 * and its argument wait in the context itself. uc_link is NULL: the entry
 * never returns (fut__ctx_start aborts if it does).
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
#include <ucontext.h>

/* The first code of a new context: c's address in two halves. */
static void uc_entry(int hi, int lo)
{
    uint64_t bits = ((uint64_t)(unsigned)hi << 32) | (uint64_t)(unsigned)lo;
    struct fut__ctx *c = (struct fut__ctx *)(uintptr_t)bits;

    fut__ctx_start(c->entry, c->arg);
}

int fut__ctx_prepare(struct fut__ctx *c, void *stack_base, size_t size,
                     void (*entry)(void *arg), void *arg)
{
    uint64_t bits = (uint64_t)(uintptr_t)c;

    c->entry = entry;
    c->arg = arg;
    if (getcontext(&c->uc) != 0)
        return errno;
    c->uc.uc_stack.ss_sp = stack_base;
    c->uc.uc_stack.ss_size = size;
    c->uc.uc_stack.ss_flags = 0;
    c->uc.uc_link = NULL;
    makecontext(&c->uc, (void (*)(void))uc_entry, 2, (int)(unsigned)(bits >> 32),
                (int)(unsigned)(bits & 0xffffffffu));
    return 0;
}

void *fut__ctx_jump(struct fut__ctx *from, struct fut__ctx *to, void *val)
{
    to->val = val; /* what its switch returns */
    /* Fails only for a bad pointer (EFAULT): memory is corrupt. */
    if (swapcontext(&from->uc, &to->uc) != 0) {
        fprintf(stderr, "libfutures: fatal: swapcontext: %s\n", strerror(errno));
        abort();
    }
    return from->val; /* set by the switch that resumed us */
}

int fut__ctx_jump_int(struct fut__ctx *from, struct fut__ctx *to)
{
    return (int)(intptr_t)fut__ctx_jump(from, to, NULL);
}
