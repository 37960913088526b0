/* timer.c - the dispatcher's timers: sleeps, in a hierarchical timing wheel.
 *
 * DESIGN
 *
 * Only the dispatcher thread touches the wheel, so it has no lock. A
 * sleep is its own timer node: it is linked into the wheel through
 * u.sleep.wnext and u.sleep.wprev (a pointer to what points at it, so
 * that it unlinks in O(1) without knowing its list), and its deadline
 * sits in the value slot, unused until it settles. So arming allocates
 * nothing and a pending sleep costs its 56-byte future and nothing more
 * (a 4-ary heap of {deadline, future} slots cost 16 bytes more per timer,
 * and a sift of cache misses per expiry).
 *
 * Wheel (Varghese and Lauck's hierarchical scheme): time is cut in ticks
 * of 2^20 ns (about 1 ms). Level l has 64 slots of 64^l ticks each; a
 * sleep due at tick t sits at the lowest level whose span still holds t
 * beside the current tick (t and `tick` agree on every bit above that
 * level's six), in slot (t >> 6l) & 63. When the current tick crosses a
 * boundary of level l, that level's slot for the new span is emptied
 * into the levels below (a cascade: each sleep moves down at most once
 * per level). When a tick's level-0 slot comes, its sleeps are sorted by
 * deadline (a list merge sort) and merged into `due`; `due` fires in
 * deadline order, each sleep only once now >= its exact nanosecond
 * deadline: never early. Empty stretches of level 0 are skipped 64 ticks
 * at a time with the occupancy bitmaps.
 *
 * Who touches what: ST_LINKED (in the state word) says the wheel holds
 * the sleep and its reference; only the dispatcher sets it (arming) and
 * clears it (taking the sleep out), and while it is set a settler leaves
 * the value slot alone (ST_NOMSG), so the deadline stays readable here.
 * A cancel from any thread settles the sleep and queues its own task,
 * which unlinks it on the dispatcher at once (fut__timer_cancelled): a
 * cancelled timer never lingers until its deadline. A sleep that the
 * wheel reaches after it was cancelled, before that task ran, is taken
 * out by the wheel instead; the task then finds ST_LINKED clear.
 *
 * The dispatcher sleeps until the next deadline (or the next cascade)
 * with a futex wait on an absolute CLOCK_MONOTONIC deadline and a 1 ns
 * timer slack (runtime.c).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "futures/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SLOT_MASK (WHEEL_SLOTS - 1u)

static const char shutdown_msg[] = "cancelled: the runtime shut down";

uint64_t fut__now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

unsigned fut__tick_shift = WHEEL_TICK_SHIFT;

void fut__wheel_init(struct fut__wheel *w)
{
    memset(w, 0, sizeof *w);
    w->shift = fut__tick_shift;
    w->tick = fut__now_ns() >> w->shift;
}

/* ---- lists: linked by u.sleep.wnext, with u.sleep.wprev pointing at
 * whatever points at the node ---- */

static void push_front(struct fut_future **head, struct fut_future *f)
{
    f->u.sleep.wnext = *head;
    if (*head != NULL)
        (*head)->u.sleep.wprev = &f->u.sleep.wnext;
    f->u.sleep.wprev = head;
    *head = f;
}

/* Merge two lists sorted by deadline (stable), fixing the back links. */
static struct fut_future *merge(struct fut_future *a, struct fut_future *b)
{
    struct fut_future *head = NULL, **tail = &head, *x;

    while (a != NULL && b != NULL) {
        if (b->deadline < a->deadline) {
            x = b;
            b = b->u.sleep.wnext;
        } else {
            x = a;
            a = a->u.sleep.wnext;
        }
        *tail = x;
        x->u.sleep.wprev = tail;
        tail = &x->u.sleep.wnext;
    }
    x = a != NULL ? a : b;
    *tail = x;
    if (x != NULL)
        x->u.sleep.wprev = tail;
    return head;
}

/* Whether list is in deadline order: 1 ascending, -1 descending (strictly
 * not ascending), 0 neither. */
static int order(struct fut_future *list)
{
    int up = 1, down = 1;
    struct fut_future *f;

    for (f = list; f != NULL && f->u.sleep.wnext != NULL && (up | down); f = f->u.sleep.wnext) {
        uint64_t a = f->deadline, b = f->u.sleep.wnext->deadline;
        up &= a <= b;
        down &= a > b;
    }
    return up ? 1 : down ? -1 : 0;
}

/* Sort list by deadline. Sleeps of one length armed one after another
 * come in deadline order, reversed by each push_front: those lists are
 * only checked, or reversed, in one pass. Others get a bottom-up merge
 * sort, stable, O(n log n), no allocation: runs[i] holds a sorted run of
 * 2^i nodes (or is empty). The head's back link is the caller's to set. */
static struct fut_future *sort(struct fut_future *list)
{
    struct fut_future *runs[64] = { NULL }, *f, *r = NULL;
    unsigned i, top = 0;
    int o = order(list);

    if (o > 0)
        return list;
    if (o < 0) {
        while (list != NULL) {
            f = list;
            list = list->u.sleep.wnext;
            f->u.sleep.wnext = r;
            if (r != NULL)
                r->u.sleep.wprev = &f->u.sleep.wnext;
            r = f;
        }
        return r;
    }

    while (list != NULL) {
        f = list;
        list = list->u.sleep.wnext;
        f->u.sleep.wnext = NULL;
        for (i = 0; i < top && runs[i] != NULL; i++) {
            f = merge(runs[i], f);
            runs[i] = NULL;
        }
        if (i == top)
            top++;
        runs[i] = f;
    }
    for (i = 0; i < top; i++)
        r = merge(runs[i], r);
    return r;
}

/* Merge list into w->due, the list head's back link included. */
static void into_due(struct fut__wheel *w, struct fut_future *list)
{
    w->due = merge(w->due, list);
    if (w->due != NULL)
        w->due->u.sleep.wprev = &w->due;
}

/* ---- the wheel ---- */

static void unlink_sleep(struct fut__wheel *w, struct fut_future *f)
{
    struct fut_future **prev = f->u.sleep.wprev, *next = f->u.sleep.wnext;
    struct fut_future **first = &w->slots[0][0];

    *prev = next;
    if (next != NULL)
        next->u.sleep.wprev = prev;
    else if (prev >= first && prev < first + WHEEL_LEVELS * WHEEL_SLOTS) {
        /* A wheel slot became empty. */
        size_t i = (size_t)(prev - first);
        w->occupied[i / WHEEL_SLOTS] &= ~((uint64_t)1 << (i % WHEEL_SLOTS));
    }
    /* The dispatcher lets go: from here on a settler may use the value slot.
     * Release: a settler that sees ST_LINKED clear (its acquire CAS) must
     * also see our reads of the deadline done, before it writes there. */
    atomic_fetch_and_explicit(&f->state, ~ST_LINKED, memory_order_release);
    w->count--;
}

/* Link f at the level and slot of its tick t (t >= w->tick). */
static void place(struct fut__wheel *w, struct fut_future *f, uint64_t t)
{
    uint64_t diff = t ^ w->tick;
    unsigned level = diff == 0 ? 0 : (unsigned)(63 - __builtin_clzll(diff)) / WHEEL_BITS;
    unsigned slot;

    if (level >= WHEEL_LEVELS) { /* beyond 146 years: park it at the far end */
        level = WHEEL_LEVELS - 1;
        slot = SLOT_MASK;
    } else {
        slot = (unsigned)(t >> (level * WHEEL_BITS)) & SLOT_MASK;
    }
    push_front(&w->slots[level][slot], f);
    w->occupied[level] |= (uint64_t)1 << slot;
}

static struct fut_future *take_slot(struct fut__wheel *w, unsigned level, unsigned slot)
{
    struct fut_future *list = w->slots[level][slot];

    w->slots[level][slot] = NULL;
    w->occupied[level] &= ~((uint64_t)1 << slot);
    return list;
}

/* Move level's slot for the current tick down the wheel. Sleeps cancelled
 * meanwhile move too: their deadline is intact, their task unlinks them. */
static void cascade(struct fut__wheel *w, unsigned level)
{
    unsigned slot = (unsigned)(w->tick >> (level * WHEEL_BITS)) & SLOT_MASK;
    struct fut_future *f = take_slot(w, level, slot), *next;

    for (; f != NULL; f = next) {
        next = f->u.sleep.wnext;
        place(w, f, f->deadline >> w->shift);
    }
}

/* Process every tick up to cur: cascades, then level-0 slots into due. */
static void advance(struct fut__wheel *w, uint64_t cur)
{
    while (w->tick <= cur) {
        unsigned s0 = (unsigned)w->tick & SLOT_MASK, level;
        struct fut_future *list;

        if (s0 == 0) /* a level-1 boundary, perhaps higher ones too: top down */
            for (level = WHEEL_LEVELS - 1; level > 0; level--)
                if ((w->tick & (((uint64_t)1 << (level * WHEEL_BITS)) - 1)) == 0)
                    cascade(w, level);
        if ((w->occupied[0] >> s0) == 0) {
            /* Nothing more at level 0 this round: on to the next boundary. */
            uint64_t next = (w->tick | SLOT_MASK) + 1;
            w->tick = next <= cur ? next : cur + 1;
            continue;
        }
        list = take_slot(w, 0, s0);
        if (list != NULL)
            into_due(w, sort(list));
        w->tick++;
    }
}

/* The time of the next thing the wheel must do: a deadline, or a
 * cascade that will bring sleeps closer. */
static uint64_t next_event(struct fut__wheel *w)
{
    uint64_t best = UINT64_MAX;
    unsigned level;

    if (w->due != NULL)
        return w->due->deadline;
    for (level = 0; level < WHEEL_LEVELS; level++) {
        unsigned shift = level * WHEEL_BITS;
        unsigned at = (unsigned)(w->tick >> shift) & SLOT_MASK;
        /* The current slot counts at level 0, and above while `tick` sits
         * on its first tick: its cascade is still to come. Past that
         * tick, it was cascaded (and is empty). */
        unsigned first =
            level == 0 || (w->tick & (((uint64_t)1 << shift) - 1)) == 0 ? at : at + 1;
        uint64_t ahead = first > SLOT_MASK ? 0 : w->occupied[level] >> first;
        uint64_t t;
        unsigned s;

        if (ahead == 0)
            continue;
        s = first + (unsigned)__builtin_ctzll(ahead);
        if (level == 0) {
            /* Its exact earliest deadline, so that we wake once. */
            struct fut_future *f;
            for (f = w->slots[0][s]; f != NULL; f = f->u.sleep.wnext)
                if (f->deadline < best)
                    best = f->deadline;
            return best;
        }
        t = ((w->tick >> shift >> WHEEL_BITS) << WHEEL_BITS | s) << shift;
        if ((t << w->shift) < best)
            best = t << w->shift;
    }
    return best;
}

int fut__timer_arm(fut_runtime *rt, struct fut_future *f)
{
    struct fut__wheel *w = &rt->wheel;
    unsigned s = atomic_load_explicit(&f->state, memory_order_relaxed);
    uint64_t t;

    do {
        if ((s & ST_MASK) != FUT_PENDING)
            return 0;
    } while (!atomic_compare_exchange_weak_explicit(&f->state, &s, s | ST_ARMED | ST_LINKED,
                                                    memory_order_acq_rel, memory_order_relaxed));
    /* From here no settler writes the value slot: the deadline is ours. */
    w->count++;
    t = f->deadline >> w->shift;
    if (t >= w->tick)
        place(w, f, t);
    else /* its tick was processed: due, sorted in at the next run */
        push_front(&w->late, f);
    return 1;
}

void fut__timer_cancelled(fut_runtime *rt, struct fut_future *f)
{
    if (atomic_load_explicit(&f->state, memory_order_relaxed) & ST_LINKED) {
        unlink_sleep(&rt->wheel, f);
        fut_release(f); /* the wheel's reference */
    }
}

uint64_t fut__timers_run(fut_runtime *rt)
{
    struct fut__wheel *w = &rt->wheel;
    uint64_t now;

    if (w->count == 0)
        return UINT64_MAX;
    if (w->late != NULL) {
        struct fut_future *late = w->late;
        w->late = NULL;
        into_due(w, sort(late));
    }
    now = fut__now_ns();
    advance(w, now >> w->shift);
    while (w->due != NULL && w->due->deadline <= now) {
        struct fut_future *f = w->due;
        unlink_sleep(w, f);
        fut__settle(f, FUT_RESOLVED, NULL, 0, NULL, 0); /* EALREADY if cancelled */
        fut_release(f); /* the wheel's reference */
    }
    return w->count != 0 ? next_event(w) : UINT64_MAX;
}

static void cancel_list(struct fut__wheel *w, struct fut_future **head)
{
    struct fut_future *f;

    while ((f = *head) != NULL) {
        unlink_sleep(w, f);
        fut__settle(f, FUT_CANCELLED, NULL, ECANCELED, (char *)shutdown_msg, 0);
        fut_release(f); /* the wheel's reference */
    }
}

void fut__timers_cancel_all(fut_runtime *rt)
{
    struct fut__wheel *w = &rt->wheel;
    unsigned level, slot;

    for (level = 0; level < WHEEL_LEVELS; level++)
        for (slot = 0; slot < WHEEL_SLOTS; slot++)
            cancel_list(w, &w->slots[level][slot]);
    cancel_list(w, &w->due);
    cancel_list(w, &w->late);
}
