/* combine.c - sleep, and the futures made of other futures: gather, any,
 * race, timeout.
 *
 * DESIGN
 *
 * A combinator future owns a group: its children (references) and one link
 * per child, a task queued on the child's dependents. Links fire on the
 * dispatcher thread only, so the group's counters need no atomics; each
 * link holds a reference on the combinator until it has fired, so the
 * group outlives every link that points into it.
 *
 * Cancelling a combinator cancels its children (any thread: the children
 * array does not change after creation). A timeout is a race between its
 * future and an internal sleep: whichever settles first decides, and the
 * other is cancelled (the sleep's timer is removed at once). A sleep
 * cancelled while the timeout is undecided was cancelled by the runtime's
 * shutdown (we cancel it only after deciding): the timeout is then
 * rejected with ESHUTDOWN, since no timer can fire any more.
 *
 * A sleep holds one reference for the timer wheel from creation until
 * the wheel lets go of it (timer.c); it is armed by its own task on the
 * dispatcher, so a cancel from any thread never races the wheel.
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- sleep ---- */

fut_future *fut_sleep(fut_runtime *rt, double seconds)
{
    fut_future *f;
    double ns;

    if (!(seconds >= 0)) { /* negative or NaN */
        errno = EINVAL;
        return NULL;
    }
    rt = fut__runtime(rt);
    if (rt == NULL)
        return NULL;
    if (fut__forked(rt))
        return fut__forked_future(rt);
    f = fut__future_new(rt, K_SLEEP, 2); /* the caller's and the wheel's */
    if (f == NULL)
        return NULL;
    /* Rounded up: never early. Capped at about 31 years. */
    ns = seconds * 1e9;
    if (ns > 1e18)
        ns = 1e18;
    f->deadline = fut__now_ns() + (uint64_t)ns + ((double)(uint64_t)ns < ns);
    /* Its own task arms it on the dispatcher (fut__future_task). */
    fut__schedule_future(rt, f);
    return f;
}

/* ---- groups ---- */

struct link {
    struct fut__task node;   /* queued on the child's dependents */
    struct fut__group *group;
};

struct fut__group {
    fut_future *self;        /* the combinator (no reference: it owns us) */
    size_t n;                /* children */
    size_t pending;          /* children not yet settled (dispatcher only) */
    unsigned flags;          /* FUT_SETTLED, FUT_CANCEL_REST */
    double seconds;          /* K_TIMEOUT: for the message */
    atomic_int timed_out;    /* K_TIMEOUT: its time passed and its future was cancelled
                              * (a task: asked, and ending) */
    size_t winner;           /* K_ANY, K_RACE: the input whose outcome it took (written
                              * before the settle that publishes it) */
    int when;                /* K_WAITSET: FUT_FIRST_COMPLETED / _EXCEPTION / FUT_ALL_COMPLETED */
    int timer;               /* K_WAITSET: the last child is its timeout's sleep */
    void **values;           /* K_GATHER: the values, in input order */
    fut_future **children;   /* references */
    struct link links[];     /* one per child */
};

static void cancel_children(struct fut__group *g, size_t except)
{
    size_t i;

    for (i = 0; i < g->n; i++)
        if (i != except)
            fut_cancel(g->children[i]);
}

void fut__group_cancelled(fut_future *f)
{
    struct fut__group *g = f->u.group;

    if (fut__kind(f) == K_WAITSET) { /* asyncio.wait: the inputs are left alone */
        if (g->timer)
            fut_cancel(g->children[g->n - 1]);
        return;
    }
    cancel_children(g, (size_t)-1);
}

int fut__group_decided(fut_future *f)
{
    struct fut__group *g = f->u.group;
    size_t i, n;

    if (g == NULL || fut__kind(f) == K_WAITSET)
        return 0; /* a wait set may always be cancelled (its inputs are not) */
    n = fut__kind(f) == K_TIMEOUT ? 1 : g->n; /* a timeout: its future, not the sleep */
    for (i = 0; i < n; i++)
        if (fut_state(g->children[i]) == FUT_PENDING)
            return 0;
    return n != 0;
}

static int is_task(fut_future *f)
{
    return fut__kind(f) == K_CORO;
}

static void timed_out(fut_future *self, struct fut__group *g)
{
    char *msg = fut__asprintf("timed out after %g s", g->seconds);

    fut__settle(self, FUT_REJECTED, NULL, ETIMEDOUT, msg, 1);
}

void fut__group_free(fut_future *f)
{
    struct fut__group *g = f->u.group;
    size_t i;

    if (g == NULL)
        return;
    for (i = 0; i < g->n; i++)
        fut_release(g->children[i]);
    fut__free(g->values);
    fut__free(g->children);
    fut__free(g);
}

/* Settle the combinator as child c settled. A cancelled child makes it
 * rejected with ECANCELED, not cancelled: cancelling one child must not
 * cancel its siblings through the combinator (asyncio's gather does the
 * same). */
static void adopt_child(fut_future *self, fut_future *c)
{
    if ((atomic_load_explicit(&c->state, memory_order_acquire) & ST_MASK) == FUT_CANCELLED)
        fut__settle(self, FUT_REJECTED, NULL, ECANCELED, (char *)"a combined future was cancelled", 0);
    else
        fut__adopt(self, c);
}

static int settled_ok(fut_future *c)
{
    return (atomic_load_explicit(&c->state, memory_order_acquire) & ST_MASK) == FUT_RESOLVED;
}

/* K_WAITSET: resolve with the number of inputs settled now. */
static void waitset_resolve(fut_future *self, struct fut__group *g)
{
    size_t i, nin = g->n - (size_t)g->timer, done = 0;

    for (i = 0; i < nin; i++)
        done += fut_state(g->children[i]) != FUT_PENDING;
    fut__settle(self, FUT_RESOLVED, (void *)(uintptr_t)done, 0, NULL, 0);
    if (g->timer)
        fut_cancel(g->children[g->n - 1]); /* its timer is not needed any more */
}

/* K_WAITSET: child i settled (an input, or the timeout's sleep). */
static void waitset_fired(fut_future *self, struct fut__group *g, size_t i, fut_future *c)
{
    size_t nin = g->n - (size_t)g->timer;

    if (g->timer && i == nin) {
        /* The time passed, or the sleep was cancelled by the runtime's
         * shutdown (no timer can fire any more): report what is done. */
        waitset_resolve(self, g);
        return;
    }
    if (g->when == FUT_FIRST_COMPLETED ||
        (g->when == FUT_FIRST_EXCEPTION && !settled_ok(c)) ||
        g->pending == (size_t)g->timer) /* every input settled */
        waitset_resolve(self, g);
}

/* A child settled (dispatcher thread). */
static void link_fired(struct fut__task *node)
{
    struct link *l = (struct link *)node;
    struct fut__group *g = l->group;
    fut_future *self = g->self;
    size_t i = (size_t)(l - g->links);
    fut_future *c = g->children[i];
    int decided = (atomic_load_explicit(&self->state, memory_order_acquire) & ST_MASK) != FUT_PENDING;

    g->pending--;
    if (decided) {
        /* The combinator settled already (an earlier child, or a cancel):
         * a later failure is read here, as asyncio's gather consumes it,
         * not reported as nobody's. (A wait set's inputs are the
         * caller's to read, as asyncio.wait leaves them.) */
        if (fut__kind(self) != K_WAITSET)
            fut__observe(c);
    } else if (fut__kind(self) == K_GATHER) {
        if (settled_ok(c)) {
            g->values[i] = c->value;
            if (g->pending == 0)
                fut__settle(self, FUT_RESOLVED, g->values, 0, NULL, 0);
        } else if (g->flags & FUT_SETTLED) {
            fut__observe(c);
            if (g->pending == 0)
                fut__settle(self, FUT_RESOLVED, g->values, 0, NULL, 0);
        } else {
            adopt_child(self, c);
            if (g->flags & FUT_CANCEL_REST)
                cancel_children(g, i);
        }
    } else if (fut__kind(self) == K_ANY) {
        if (settled_ok(c) || g->pending == 0)
            g->winner = i;
        if (settled_ok(c)) {
            adopt_child(self, c);
            if (g->flags & FUT_CANCEL_REST)
                cancel_children(g, i);
        } else if (g->pending == 0) {
            adopt_child(self, c); /* every child failed: the last error */
        } else {
            fut__observe(c);
        }
    } else if (fut__kind(self) == K_RACE) {
        g->winner = i;
        adopt_child(self, c);
        if (g->flags & FUT_CANCEL_REST)
            cancel_children(g, i);
    } else if (fut__kind(self) == K_WAITSET) {
        waitset_fired(self, g, i, c);
    } else { /* K_TIMEOUT: child 0 is the future, child 1 the sleep */
        if (i == 0) {
            if (atomic_load_explicit(&g->timed_out, memory_order_acquire) &&
                (atomic_load_explicit(&c->state, memory_order_acquire) & ST_MASK) == FUT_CANCELLED) {
                fut__observe(c);
                timed_out(self, g); /* it ended cancelled: the time had passed */
            } else {
                adopt_child(self, c); /* what it returned or raised meanwhile wins */
            }
            fut_cancel(g->children[1]);
        } else if (settled_ok(c)) {
            /* The time passed: cancel f, and let f's own link decide
             * (ETIMEDOUT if it ended cancelled). A plain future is
             * cancelled at once and its link comes next; a task is asked
             * and its link waits for its end, cleanup done (asyncio's
             * wait_for). An f that settled first (EALREADY: its link not
             * yet run) keeps its result: no result is lost to a timeout.
             * The store follows the cancel safely: f's link runs on this
             * dispatcher, after this task. */
            if (fut_cancel(g->children[0]) == 0)
                atomic_store_explicit(&g->timed_out, 1, memory_order_release);
        } else if (!settled_ok(c) && fut_state(g->children[0]) == FUT_PENDING) {
            /* The sleep was cancelled while the timeout was undecided: not
             * by us (we cancel it only after deciding), so by the runtime's
             * shutdown, which cancels every timer (also one made after
             * fut_runtime_free). No timer can fire now: say so rather than
             * wait for f forever. (An f that settled meanwhile keeps its
             * result: its own link adopts it.) */
            fut__settle(self, FUT_REJECTED, NULL, ESHUTDOWN,
                        (char *)"the runtime shut down: the timeout can no longer fire", 0);
        }
    }
    fut_release(self); /* the link's reference */
}

/* seconds: K_TIMEOUT's delay (its message), set before any link can fire. */
static fut_future *group_new(fut_runtime *rt, int kind, fut_future *const *fs, size_t n,
                             unsigned flags, double seconds, int when, int timer)
{
    struct fut__group *g;
    fut_future *self;
    size_t i;

    if ((n != 0 && fs == NULL) || (flags & ~(unsigned)(FUT_SETTLED | FUT_CANCEL_REST)) ||
        n > ((size_t)-1 - sizeof *g) / sizeof(struct link)) {
        errno = EINVAL;
        return NULL;
    }
    for (i = 0; i < n; i++) /* before the runtime check: a fresh runtime's gather of the parent's futures */
        if (fs[i] != NULL && fut__forked(fs[i]->rt))
            return fut__forked_future(fs[i]->rt);
    rt = fut__runtime(rt);
    if (rt == NULL)
        return NULL;
    if (fut__forked(rt))
        return fut__forked_future(rt);
    for (i = 0; i < n; i++) {
        if (fs[i] == NULL || fs[i]->rt != rt) {
            errno = EINVAL;
            return NULL;
        }
    }
    g = fut__malloc(sizeof *g + n * sizeof(struct link));
    if (g == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    memset(g, 0, sizeof *g);
    g->n = n;
    g->pending = n;
    g->flags = flags;
    g->seconds = seconds;
    g->when = when;   /* K_WAITSET: set before any link can run */
    g->timer = timer;
    g->children = fut__malloc((n ? n : 1) * sizeof *g->children);
    if (kind == K_GATHER)
        g->values = fut__calloc(n ? n : 1, sizeof *g->values);
    if (g->children == NULL || (kind == K_GATHER && g->values == NULL)) {
        fut__free(g->children);
        fut__free(g->values);
        fut__free(g);
        errno = ENOMEM;
        return NULL;
    }
    /* The caller's reference and one per link. */
    self = fut__future_new(rt, kind, 1 + (unsigned)n);
    if (self == NULL) {
        fut__free(g->children);
        fut__free(g->values);
        fut__free(g);
        return NULL;
    }
    g->self = self;
    self->u.group = g;
    for (i = 0; i < n; i++)
        g->children[i] = fut_retain(fs[i]);
    if (n == 0)
        fut__settle(self, FUT_RESOLVED, g->values, 0, NULL, 0);
    for (i = 0; i < n; i++) {
        g->links[i].group = g;
        g->links[i].node.run = link_fired;
        fut__depend(fs[i], &g->links[i].node);
    }
    return self;
}

fut_future *fut_gather(fut_runtime *rt, fut_future *const *fs, size_t n, unsigned flags)
{
    return group_new(rt, K_GATHER, fs, n, flags, 0, 0, 0);
}

fut_future *fut_any(fut_runtime *rt, fut_future *const *fs, size_t n, unsigned flags)
{
    if (n == 0 || (flags & FUT_SETTLED)) {
        errno = EINVAL;
        return NULL;
    }
    return group_new(rt, K_ANY, fs, n, flags, 0, 0, 0);
}

fut_future *fut_race(fut_runtime *rt, fut_future *const *fs, size_t n, unsigned flags)
{
    if (n == 0 || (flags & FUT_SETTLED)) {
        errno = EINVAL;
        return NULL;
    }
    return group_new(rt, K_RACE, fs, n, flags, 0, 0, 0);
}

int fut_winner(fut_future *f, size_t *index)
{
    unsigned kind, st;

    if (f == NULL || index == NULL)
        return EINVAL;
    kind = fut__kind(f);
    if (kind != K_ANY && kind != K_RACE)
        return EINVAL;
    st = atomic_load_explicit(&f->state, memory_order_acquire) & ST_MASK;
    if (st == FUT_PENDING || st == ST_SETTLING || st == FUT_CANCELLED)
        return EAGAIN; /* undecided, or cancelled before an input decided */
    *index = f->u.group->winner;
    return 0;
}

fut_future *fut_wait_many(fut_runtime *rt, fut_future *const *fs, size_t n, int when,
                          double timeout_s)
{
    fut_future **all, *w;
    size_t i;
    int timer = timeout_s >= 0;

    if (fs == NULL || n == 0 || n > ((size_t)-1) / sizeof *all - 1 ||
        (when != FUT_FIRST_COMPLETED && when != FUT_FIRST_EXCEPTION && when != FUT_ALL_COMPLETED) ||
        timeout_s != timeout_s) {
        errno = EINVAL;
        return NULL;
    }
    rt = fut__runtime(rt);
    if (rt == NULL)
        return NULL;
    all = fut__malloc((n + 1) * sizeof *all);
    if (all == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    for (i = 0; i < n; i++)
        all[i] = fs[i];
    if (timer) {
        all[n] = fut_sleep(rt, timeout_s);
        if (all[n] == NULL) {
            fut__free(all);
            return NULL;
        }
    }
    w = group_new(rt, K_WAITSET, all, n + (size_t)timer, 0, timeout_s, when, timer);
    if (timer) {
        if (w == NULL)
            fut_cancel(all[n]);
        fut_release(all[n]);
    }
    fut__free(all);
    return w;
}

fut_future *fut_gather_item(fut_future *g, size_t i)
{
    if (g == NULL || fut__kind(g) != K_GATHER || i >= g->u.group->n) {
        errno = EINVAL;
        return NULL;
    }
    return g->u.group->children[i];
}

fut_future *fut_timeout(fut_future *f, double seconds)
{
    fut_future *pair[2], *t;

    if (f == NULL || !(seconds >= 0)) {
        errno = EINVAL;
        return NULL;
    }
    if (fut__forked(f->rt))
        return fut__forked_future(f->rt);
    pair[0] = f;
    pair[1] = fut_sleep(f->rt, seconds);
    if (pair[1] == NULL)
        return NULL;
    t = group_new(f->rt, K_TIMEOUT, pair, 2, 0, seconds, 0, 0);
    if (t == NULL)
        fut_cancel(pair[1]);
    else if (seconds == 0 && is_task(f) && fut_state(f) == FUT_PENDING) {
        /* No time at all: a task not started yet never starts (the cancel
         * settles it at once), one that runs is asked to end; either way
         * its link then finds the time passed. */
        atomic_store_explicit(&t->u.group->timed_out, 1, memory_order_release);
        fut__coro_request_cancel(f);
    }
    fut_release(pair[1]);
    return t;
}
