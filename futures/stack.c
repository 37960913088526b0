/* stack.c - coroutine stacks: mmap'd with a guard region, and a per-thread
 * cache of free ones.
 *
 * DESIGN
 *
 * A stack is one private anonymous mapping: FUT__STACK_GUARD bytes made
 * PROT_NONE at the low end, then the usable bytes. Stacks grow down, so a
 * coroutine that runs off its stack touches the guard and dies with
 * SIGSEGV there, never writes over the neighbouring memory. The mapping
 * is MAP_NORESERVE: pages are committed when first touched, so a stack
 * costs address space for its size and memory for its deepest use.
 *
 * The descriptor (struct fut__stack) is allocated with fut__malloc, so the
 * allocation hook of pool/alloc.h can make stack allocation fail like any
 * other allocation of the library.
 *
 * The cache is a LIFO free list owned by one thread (the dispatcher): no
 * lock, no atomics. LIFO hands back the stack whose pages are most likely
 * still in the cache and the TLB. A returned stack is not given back to
 * the kernel (no madvise): that would cost a system call per coroutine,
 * the very thing the cache avoids; the bound on cached stacks bounds the
 * memory held instead (max_cached times the deepest use of each).
 *
 * Under ASan, a stack is unpoisoned when it is returned or unmapped: a
 * coroutine that finished leaves the redzones of its last frames poisoned
 * in the shadow, which the next user of the stack must not inherit.
 *
 * Under valgrind (built with valgrind/valgrind.h, HAVE_VALGRIND_VALGRIND_H),
 * the usable part of a stack, not the guard, is registered with
 * VALGRIND_STACK_REGISTER right after it is mapped, and deregistered with
 * the id that returned (kept in the descriptor) right before it is
 * unmapped. Memcheck then knows that a switch moves the stack pointer onto
 * another stack. Without it, a switch between stacks less than
 * --max-stackframe (2 MB) apart looks like a call or a return of a big
 * frame: memcheck marks everything in between undefined or unaddressable,
 * the saved frames of suspended contexts included, and reports thousands
 * of false errors a program. A cached stack stays registered: get and
 * put cost nothing more. The client requests are a few instructions that
 * do nothing when the program does not run under valgrind, so there is no
 * switch to turn them off. Built without valgrind.h, nothing is registered
 * (valgrind_id stays 0).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "futures/coro_ctx.h"
#include "pool/alloc.h"

#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#if FUT__CTX_ASAN
#include <sanitizer/asan_interface.h>
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#ifdef HAVE_VALGRIND_VALGRIND_H
#include <valgrind/valgrind.h>
#define STACK_REGISTER(lo, hi) VALGRIND_STACK_REGISTER((lo), (hi))
#define STACK_DEREGISTER(id) VALGRIND_STACK_DEREGISTER(id)
#else
#define STACK_REGISTER(lo, hi) ((void)(lo), (void)(hi), 0u)
#define STACK_DEREGISTER(id) ((void)(id))
#endif

#ifndef MAP_STACK
#define MAP_STACK 0
#endif
#ifndef MAP_NORESERVE
#define MAP_NORESERVE 0
#endif

static size_t page_size(void)
{
    long n = sysconf(_SC_PAGESIZE);

    return n > 0 ? (size_t)n : 4096u;
}

static size_t round_up(size_t n, size_t to)
{
    return (n + to - 1) / to * to;
}

static size_t guard_size(void)
{
    return round_up(FUT__STACK_GUARD, page_size());
}

/* The usable size for a requested one, or 0 if the request is refused. */
static size_t usable_size(size_t size)
{
    if (size == 0 || size > FUT__STACK_MAX_SIZE)
        return 0;
    return round_up(size, page_size());
}

struct fut__stack *fut__stack_new(size_t size)
{
    size_t usable = usable_size(size), guard = guard_size();
    struct fut__stack *st;
    char *map;

    if (usable == 0) {
        errno = EINVAL;
        return NULL;
    }
    st = fut__malloc(sizeof *st);
    if (st == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    map = fut__alloc_refused(guard + usable)
              ? MAP_FAILED
              : mmap(NULL, guard + usable, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (map == MAP_FAILED) {
        fut__free(st);
        errno = ENOMEM;
        return NULL;
    }
    /* Fails when the process is out of mappings (the guard splits one). */
    if (mprotect(map, guard, PROT_NONE) != 0) {
        munmap(map, guard + usable);
        fut__free(st);
        errno = ENOMEM;
        return NULL;
    }
    st->base = map + guard;
    st->size = usable;
    st->next = NULL;
    st->valgrind_id = STACK_REGISTER(map + guard, map + guard + usable);
    return st;
}

void fut__stack_free(struct fut__stack *st)
{
    size_t guard = guard_size();

    if (st == NULL)
        return;
    UNPOISON(st->base, st->size);
    STACK_DEREGISTER(st->valgrind_id);
    /* Fails only for arguments that did not come from mmap. */
    munmap((char *)st->base - guard, guard + st->size);
    fut__free(st);
}

int fut__stack_cache_init(struct fut__stack_cache *sc, size_t size, unsigned max_cached)
{
    size_t usable = usable_size(size);

    if (sc == NULL || usable == 0)
        return EINVAL;
    sc->free = NULL;
    sc->size = usable;
    sc->max_cached = max_cached;
    sc->cached = 0;
    sc->mapped = 0;
    sc->reused = 0;
    sc->defer = 0;
    sc->over_at = 0;
    return 0;
}

struct fut__stack *fut__stack_get(struct fut__stack_cache *sc)
{
    struct fut__stack *st = sc->free;

    if (st != NULL) {
        sc->free = st->next;
        sc->cached--;
        sc->reused++;
        st->next = NULL;
        return st;
    }
    st = fut__stack_new(sc->size);
    if (st != NULL)
        sc->mapped++;
    return st;
}

/* CLOCK_MONOTONIC in ns (this layer stands alone: no timer.c). */
static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void fut__stack_put(struct fut__stack_cache *sc, struct fut__stack *st)
{
    if (st == NULL)
        return;
    if (sc->cached < sc->max_cached || sc->defer) {
        UNPOISON(st->base, st->size);
        st->next = sc->free;
        sc->free = st;
        if (++sc->cached > sc->max_cached)
            sc->over_at = now_ns();
        return;
    }
    fut__stack_free(st);
    sc->mapped--;
}

uint64_t fut__stack_trim(struct fut__stack_cache *sc, uint64_t now)
{
    struct fut__stack *st;

    if (sc->cached <= sc->max_cached)
        return UINT64_MAX;
    if (now - sc->over_at < FUT__STACK_TRIM_NS)
        return sc->over_at + FUT__STACK_TRIM_NS;
    while (sc->cached > sc->max_cached) {
        st = sc->free;
        sc->free = st->next;
        sc->cached--;
        fut__stack_free(st);
        sc->mapped--;
    }
    return UINT64_MAX;
}

void fut__stack_cache_destroy(struct fut__stack_cache *sc)
{
    struct fut__stack *st;

    while ((st = sc->free) != NULL) {
        sc->free = st->next;
        fut__stack_free(st);
        sc->mapped--;
    }
    sc->cached = 0;
}
