/* timer.c - the dispatcher's timers: a 4-ary min-heap on deadline.
 *
 * DESIGN
 *
 * Only the dispatcher thread touches the heap, so it has no lock. Each
 * slot holds the deadline beside the future, so sifting reads one array;
 * the future remembers its slot, so a cancelled sleep is removed in
 * O(log n) at once instead of lingering until its deadline. Four children
 * per node: half the depth of a binary heap, and the four deadlines share
 * one cache line.
 *
 * Deadlines are absolute CLOCK_MONOTONIC nanoseconds; a timer fires only
 * once now >= deadline, never early. The dispatcher sleeps until the
 * earliest deadline with a futex wait on an absolute deadline, its timer
 * slack set to 1 ns.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "futures/internal.h"
#include "pool/alloc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ARITY 4

uint64_t fut__now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void place(fut_runtime *rt, uint32_t i, struct fut__heap_slot slot)
{
    rt->heap[i] = slot;
    slot.f->u.sleep.slot = i;
}

static void sift_up(fut_runtime *rt, uint32_t i, struct fut__heap_slot slot)
{
    while (i > 0) {
        uint32_t parent = (i - 1) / ARITY;
        if (rt->heap[parent].deadline <= slot.deadline)
            break;
        place(rt, i, rt->heap[parent]);
        i = parent;
    }
    place(rt, i, slot);
}

static void sift_down(fut_runtime *rt, uint32_t i, struct fut__heap_slot slot)
{
    uint32_t n = rt->heap_len;

    for (;;) {
        uint32_t first = i * ARITY + 1, best, c, end;
        if (first >= n)
            break;
        end = first + ARITY < n ? first + ARITY : n;
        best = first;
        for (c = first + 1; c < end; c++)
            if (rt->heap[c].deadline < rt->heap[best].deadline)
                best = c;
        if (rt->heap[best].deadline >= slot.deadline)
            break;
        place(rt, i, rt->heap[best]);
        i = best;
    }
    place(rt, i, slot);
}

int fut__timer_add(fut_runtime *rt, struct fut_future *f)
{
    struct fut__heap_slot slot = { f->u.sleep.deadline, f };

    if (rt->heap_len == rt->heap_cap) {
        uint32_t cap = rt->heap_cap ? rt->heap_cap * 2 : 64;
        struct fut__heap_slot *h;
        if (cap <= rt->heap_cap || cap == TIMER_NONE)
            return ENOMEM;
        h = fut__malloc((size_t)cap * sizeof *h);
        if (h == NULL)
            return ENOMEM;
        if (rt->heap_len != 0)
            memcpy(h, rt->heap, (size_t)rt->heap_len * sizeof *h);
        fut__free(rt->heap);
        rt->heap = h;
        rt->heap_cap = cap;
    }
    sift_up(rt, rt->heap_len++, slot);
    return 0;
}

void fut__timer_remove(fut_runtime *rt, struct fut_future *f)
{
    uint32_t i = f->u.sleep.slot;
    struct fut__heap_slot last;

    if (i == TIMER_NONE)
        return;
    f->u.sleep.slot = TIMER_NONE;
    last = rt->heap[--rt->heap_len];
    if (i == rt->heap_len)
        return;
    if (i > 0 && last.deadline < rt->heap[(i - 1) / ARITY].deadline)
        sift_up(rt, i, last);
    else
        sift_down(rt, i, last);
}

/* Take the earliest timer out of the heap. */
static struct fut_future *pop(fut_runtime *rt)
{
    struct fut_future *f = rt->heap[0].f;
    struct fut__heap_slot last = rt->heap[--rt->heap_len];

    f->u.sleep.slot = TIMER_NONE;
    if (rt->heap_len != 0)
        sift_down(rt, 0, last);
    return f;
}

uint64_t fut__timers_run(fut_runtime *rt)
{
    uint64_t now;

    if (rt->heap_len == 0)
        return UINT64_MAX;
    now = fut__now_ns();
    while (rt->heap_len != 0 && rt->heap[0].deadline <= now) {
        struct fut_future *f = pop(rt);
        fut__settle(f, FUT_RESOLVED, NULL, 0, NULL, 0);
        fut_release(f); /* the heap's reference */
    }
    return rt->heap_len != 0 ? rt->heap[0].deadline : UINT64_MAX;
}

void fut__timers_cancel_all(fut_runtime *rt)
{
    while (rt->heap_len != 0) {
        struct fut_future *f = pop(rt);
        fut__settle(f, FUT_CANCELLED, NULL, ECANCELED, (char *)"cancelled: the runtime shut down", 0);
        fut_release(f);
    }
}

void fut__timers_free(fut_runtime *rt)
{
    fut__free(rt->heap);
    rt->heap = NULL;
    rt->heap_cap = 0;
}
