/* poll.c - a runtime watches descriptors: readiness as futures (K_IO),
 * fut_io_wait, fut_io_detach, fut_close.
 *
 * What it does not do: no system call on the descriptors themselves (the
 * calls are io/calls.c's), no thread of its own (the dispatcher polls),
 * no policy about O_NONBLOCK.
 *
 * DESIGN
 *
 * Threads: everything here runs on the runtime's dispatcher (or on the
 * thread standing in for it after it exited, one at a time: runtime.c's
 * run_dead), except fut_io_wait's first steps (any thread: it makes the
 * future and queues its registration task), fut__io_wake (any thread:
 * writes the poller's eventfd), fut__io_on_dispatcher (any thread: queues
 * a task and waits for it) and fut__io_free (the runtime's last
 * reference). rt->io is made by the dispatcher at the first wait and
 * published with release; producers read it (acquire) only after they
 * took parked == 2, which the dispatcher stored after making it.
 *
 * Records: one per descriptor number ever waited on (an array indexed by
 * number), with the readiness last reported, the waiters (K_IO futures,
 * a doubly linked list through u.io; the list holds a reference on each,
 * and ST_LINKED in the state says a future is in it) and a generation.
 * A descriptor is added to the poller once, edge-triggered, with the tag
 * (generation << 32 | number); events whose generation is old are
 * dropped, so a closed descriptor's late events never reach the waiters
 * of a later one with the same number.
 *
 * Readiness cache: an event sets the record's ready bits; a call that got
 * EAGAIN clears them before it waits (on this thread, with no poll in
 * between, so any later readiness is a new edge). A fut_io_wait that finds
 * the bit set checks with poll(2) (the user may have drained the
 * descriptor with calls we never saw): level semantics for the user, one
 * epoll_ctl per descriptor for the library's own calls.
 *
 * Identity: the user may close(2) a watched descriptor and get the number
 * back for a new one, and the kernel drops the closed one from epoll
 * silently, so before a wait is linked the record checks that the number
 * still names what it watches: for a socket, its (st_dev, st_ino) (one
 * fstat: socket inodes are unique while they live); for anything else
 * (pipes, terminals, eventfds share or reuse inodes) an EPOLL_CTL_MOD with
 * the record's tag, which fails with ENOENT when the watched file is gone.
 * A record that fails the check ends its old waits with EBADF and watches
 * the new descriptor under a new generation.
 *
 * Detaching: fut_io_detach removes the descriptor from epoll
 * (EPOLL_CTL_DEL), ends its waits with EBADF and moves the record to a
 * new generation. fut_close does the same without the epoll_ctl: the
 * close that follows drops the entry (or, for a descriptor duplicated
 * elsewhere, leaves one whose events carry the old generation and are
 * dropped), a system call saved per connection.
 *
 * Cancel: a waiter cancelled on the dispatcher or elsewhere is settled at
 * once by future.c; because it has ST_LINKED, its own task is queued,
 * which takes it out of the list (fut__io_unlink) before its dependents
 * run. The list is only ever changed on the dispatcher.
 *
 * Shutdown: fut__io_cancel_all (dispatcher, stopping) cancels every
 * waiter; registrations that come later find the runtime stopping and are
 * cancelled; fut__io_stop closes the epoll instance after the dispatcher
 * exited; the eventfd lives until the runtime's memory goes, since a
 * producer may still write it (it holds a reference on a future of rt).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "io/io.h"
#include "pool/alloc.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EV_MAX 128
#define BUSY_LOOK_NS 1000000u /* while busy, look for ready descriptors every 1 ms */

struct rec {
    struct fut_future *waiters; /* K_IO futures (ST_LINKED) */
    int fd;
    unsigned gen;               /* of the tag it is watched with */
    unsigned ready;             /* FUT__EV_* reported and not found spent */
    unsigned char watched;      /* in the poller under (gen, fd) */
    unsigned char socket;       /* identity is (dev, ino) */
    dev_t dev;
    ino_t ino;
};

struct fut__io {
    struct fut__poller poller;
    struct rec **recs;          /* by descriptor number */
    size_t nrecs;
    uint64_t nwaiting;          /* futures linked in records */
    uint64_t last_look;         /* fut__now_ns of the last look */
    int stopped;                /* fut__io_stop ran: nothing is watched any more */
    struct fut__poll_event ev[EV_MAX];
};

static const char shutdown_msg[] = "cancelled: the runtime shut down";
static const char detached_msg[] = "the descriptor was detached (fut_io_detach or fut_close)";
static const char reused_msg[] =
    "the descriptor was closed while waited on, and its number now names another";

static inline struct fut__io *io_of(fut_runtime *rt)
{
    return atomic_load_explicit(&rt->io, memory_order_acquire);
}

static uint64_t tag_of(const struct rec *r)
{
    return (uint64_t)r->gen << 32 | (uint32_t)r->fd;
}

static struct fut__io *io_get(fut_runtime *rt, int *err)
{
    struct fut__io *io = io_of(rt);
    int rc;

    if (io != NULL)
        return io;
    io = fut__calloc(1, sizeof *io);
    if (io == NULL) {
        *err = ENOMEM;
        return NULL;
    }
    rc = fut__poller_open(&io->poller);
    if (rc != 0) {
        fut__free(io);
        *err = rc;
        return NULL;
    }
    io->last_look = fut__now_ns();
    atomic_store_explicit(&rt->io, io, memory_order_release);
    rt->io_here = io; /* the dispatcher's (or the thread standing in for it) */
    return io;
}

static struct rec *rec_get(struct fut__io *io, int fd)
{
    struct rec *r;

    if ((size_t)fd >= io->nrecs) {
        size_t n = io->nrecs ? io->nrecs : 64;
        struct rec **recs;
        while (n <= (size_t)fd)
            n *= 2;
        recs = realloc(io->recs, n * sizeof *recs);
        if (recs == NULL)
            return NULL;
        memset(recs + io->nrecs, 0, (n - io->nrecs) * sizeof *recs);
        io->recs = recs;
        io->nrecs = n;
    }
    r = io->recs[fd];
    if (r == NULL) {
        r = fut__calloc(1, sizeof *r);
        if (r == NULL)
            return NULL;
        r->fd = fd;
        r->gen = 1;
        io->recs[fd] = r;
    }
    return r;
}

/* ---- the waiters' list (dispatcher) ---- */

static void link_waiter(struct fut__io *io, struct rec *r, fut_future *f)
{
    f->u.io.next = r->waiters;
    f->u.io.prev = &r->waiters;
    if (r->waiters != NULL)
        r->waiters->u.io.prev = &f->u.io.next;
    r->waiters = f;
    io->nwaiting++;
}

/* Out of the list, ST_LINKED cleared; the list's reference passes to the
 * caller. */
static void unlink_waiter(fut_future *f)
{
    struct fut__io *io = io_of(f->rt);

    *f->u.io.prev = f->u.io.next;
    if (f->u.io.next != NULL)
        f->u.io.next->u.io.prev = f->u.io.prev;
    f->u.io.next = NULL;
    f->u.io.prev = NULL;
    atomic_fetch_and_explicit(&f->state, ~ST_LINKED, memory_order_acq_rel);
    io->nwaiting--;
}

void fut__io_unlink(fut_future *f)
{
    if (atomic_load_explicit(&f->state, memory_order_acquire) & ST_LINKED) {
        unlink_waiter(f);
        fut_release(f); /* the list's */
    }
}

/* End every wait of r with code (EBADF) or a cancel, and forget what r
 * knew: the number is watched again, if at all, under a new generation. */
static int end_waiters(struct rec *r, unsigned to, int code, const char *msg)
{
    fut_future *f;
    int any = 0;

    while ((f = r->waiters) != NULL) {
        unlink_waiter(f);
        fut__settle(f, to, NULL, code, (char *)msg, 0);
        fut_release(f);
        any = 1;
    }
    return any;
}

static void forget(struct rec *r, const char *msg)
{
    end_waiters(r, FUT_REJECTED, EBADF, msg);
    r->watched = 0;
    r->ready = 0;
    r->gen++;
}

/* Make sure r's number, as it is now, is watched. 0 or an errno. */
static int watch(struct fut__io *io, struct rec *r)
{
    struct stat st;
    int rc;

    if (r->watched) {
        if (r->socket) {
            if (fstat(r->fd, &st) != 0)
                return errno;
            if (S_ISSOCK(st.st_mode) && st.st_dev == r->dev && st.st_ino == r->ino)
                return 0;
        } else {
            rc = fut__poller_check(&io->poller, r->fd, tag_of(r));
            if (rc == 0)
                return 0;
            if (rc != ENOENT)
                return rc;
        }
        /* Closed behind our back, and the number given to another one. */
        forget(r, reused_msg);
    }
    if (fstat(r->fd, &st) != 0)
        return errno;
    r->socket = S_ISSOCK(st.st_mode) != 0;
    r->dev = st.st_dev;
    r->ino = st.st_ino;
    rc = fut__poller_add(&io->poller, r->fd, tag_of(r));
    if (rc != 0)
        return rc;
    r->watched = 1;
    r->ready = 0; /* the kernel reports the present state as an event */
    return 0;
}

/* What fd is ready for now (poll(2), no waiting), as FUT__EV_* bits. */
static unsigned ready_now(int fd, unsigned want)
{
    struct pollfd p;
    unsigned got = 0;

    p.fd = fd;
    p.events = (short)((want & FUT__EV_READ ? POLLIN : 0) | (want & FUT__EV_WRITE ? POLLOUT : 0));
    p.revents = 0;
    if (poll(&p, 1, 0) <= 0)
        return 0;
    if (p.revents & (POLLIN | POLLRDHUP | POLLPRI))
        got |= FUT__EV_READ;
    if (p.revents & POLLOUT)
        got |= FUT__EV_WRITE;
    if (p.revents & POLLERR)
        got |= FUT__EV_ERR | (want & (FUT__EV_READ | FUT__EV_WRITE));
    if (p.revents & POLLHUP)
        got |= FUT__EV_HUP | (want & (FUT__EV_READ | FUT__EV_WRITE));
    return got;
}

static void reject_errno(fut_future *f, int rc)
{
    switch (rc) {
    case EPERM:
        fut__settle(f, FUT_REJECTED, NULL, EPERM,
                    (char *)"this descriptor cannot be waited on (a regular file or a directory"
                            " is always ready)",
                    0);
        break;
    case EBADF:
        fut__settle(f, FUT_REJECTED, NULL, EBADF, (char *)"not an open descriptor", 0);
        break;
    case ENOMEM:
        fut__settle(f, FUT_REJECTED, NULL, ENOMEM, (char *)"no memory to watch a descriptor", 0);
        break;
    default:
        fut__settle(f, FUT_REJECTED, NULL, rc, (char *)"could not watch the descriptor", 0);
        break;
    }
}

/* Register waiter f (we hold one reference, which passes to the list). */
static void io_register(fut_runtime *rt, fut_future *f, int spent)
{
    unsigned want = f->u.io.events, got, s;
    struct fut__io *io;
    struct rec *r;
    int rc = 0;

    if (fut_state(f) != FUT_PENDING)
        goto done;
    if (atomic_load_explicit(&rt->stopping, memory_order_acquire) ||
        ((io = io_of(rt)) != NULL && io->stopped)) {
        fut__settle(f, FUT_CANCELLED, NULL, ECANCELED, (char *)shutdown_msg, 0);
        goto done;
    }
    io = io_get(rt, &rc);
    if (io == NULL)
        goto fail;
    r = rec_get(io, f->u.io.fd);
    if (r == NULL) {
        rc = ENOMEM;
        goto fail;
    }
    rc = watch(io, r);
    if (rc != 0)
        goto fail;
    if (spent) {
        r->ready &= ~want;
    } else if (r->ready & want) {
        got = ready_now(r->fd, want);
        if (got != 0) {
            fut__settle(f, FUT_RESOLVED, (void *)(uintptr_t)got, 0, NULL, 0);
            goto done;
        }
        r->ready &= ~want;
    }
    s = atomic_load_explicit(&f->state, memory_order_relaxed);
    do {
        if ((s & ST_MASK) != FUT_PENDING)
            goto done; /* cancelled meanwhile */
    } while (!atomic_compare_exchange_weak_explicit(&f->state, &s, s | ST_LINKED,
                                                    memory_order_acq_rel, memory_order_relaxed));
    link_waiter(io, r, f);
    return;
fail:
    reject_errno(f, rc);
done:
    fut_release(f);
}

static void register_task(struct fut__task *t)
{
    fut_future *f = (fut_future *)((char *)t - offsetof(fut_future, u.io.task));

    io_register(f->rt, f, 0);
}

static fut_future *io_future(fut_runtime *rt, int fd, unsigned events)
{
    fut_future *f = fut__future_new(rt, K_IO, 2); /* the caller's and the registration's */

    if (f == NULL)
        return NULL;
    f->u.io.fd = fd;
    f->u.io.events = events;
    return f;
}

fut_future *fut__io_wait_here(fut_runtime *rt, int fd, unsigned events, int spent)
{
    fut_future *f = io_future(rt, fd, events);

    if (f != NULL)
        io_register(rt, f, spent);
    return f;
}

fut_future *fut_io_wait(fut_runtime *rt, int fd, unsigned events)
{
    fut_future *f;

    if (fd < 0 || events == 0 || (events & ~(FUT_IO_READ | FUT_IO_WRITE)) != 0) {
        errno = EINVAL;
        return NULL;
    }
    rt = fut__runtime(rt);
    if (rt == NULL)
        return NULL;
    if (fut__forked(rt))
        return fut__forked_future(rt);
    f = io_future(rt, fd, events);
    if (f == NULL)
        return NULL;
    if (fut__dispatcher_rt == rt) {
        io_register(rt, f, 0);
    } else {
        f->u.io.task.run = register_task;
        fut__schedule(rt, &f->u.io.task); /* we hold the caller's reference meanwhile */
    }
    return f;
}

/* ---- the dispatcher's side ---- */

static void dispatch(struct fut__io *io, int n)
{
    int i;

    for (i = 0; i < n; i++) {
        uint64_t tag = io->ev[i].tag;
        unsigned fd = (uint32_t)tag, ev = io->ev[i].events;
        struct rec *r = fd < io->nrecs ? io->recs[fd] : NULL;
        fut_future *f, *next;

        if (r == NULL || !r->watched || r->gen != (unsigned)(tag >> 32))
            continue; /* a descriptor that was detached, or closed and replaced */
        r->ready |= ev;
        for (f = r->waiters; f != NULL; f = next) {
            next = f->u.io.next;
            if ((f->u.io.events & ev) == 0)
                continue;
            unlink_waiter(f); /* the list's reference is ours now */
            fut__settle(f, FUT_RESOLVED,
                        (void *)(uintptr_t)(ev & (f->u.io.events | FUT__EV_ERR | FUT__EV_HUP)), 0,
                        NULL, 0);
            fut_release(f);
        }
    }
}

void fut__io_poll(fut_runtime *rt, int64_t timeout_ns)
{
    struct fut__io *io = io_of(rt);
    int n;

    n = fut__poller_wait(&io->poller, io->ev, EV_MAX, timeout_ns);
    io->last_look = fut__now_ns();
    dispatch(io, n);
}

void fut__io_busy(fut_runtime *rt)
{
    struct fut__io *io = io_of(rt);

    if (io->nwaiting != 0 && fut__now_ns() - io->last_look >= BUSY_LOOK_NS)
        fut__io_poll(rt, 0);
}

void fut__io_wake(fut_runtime *rt)
{
    fut__poller_wake(&io_of(rt)->poller);
}

int fut__io_cancel_all(fut_runtime *rt)
{
    struct fut__io *io = io_of(rt);
    size_t i;
    int any = 0;

    if (io == NULL || io->nwaiting == 0)
        return 0;
    for (i = 0; i < io->nrecs; i++)
        if (io->recs[i] != NULL)
            any |= end_waiters(io->recs[i], FUT_CANCELLED, ECANCELED, shutdown_msg);
    return any;
}

static void free_recs(struct fut__io *io)
{
    size_t i;

    for (i = 0; i < io->nrecs; i++)
        fut__free(io->recs[i]);
    free(io->recs);
    io->recs = NULL;
    io->nrecs = 0;
}

void fut__io_stop(fut_runtime *rt)
{
    struct fut__io *io = io_of(rt);

    if (io == NULL)
        return;
    io->stopped = 1;
    fut__poller_close(&io->poller);
    free_recs(io); /* every waiter was cancelled before the dispatcher exited */
}

void fut__io_free(fut_runtime *rt)
{
    struct fut__io *io = io_of(rt);

    if (io == NULL)
        return;
    /* In a forked child the records may still hold waiters of the
     * parent's threads: memory only, the futures are left alone. */
    fut__poller_close(&io->poller);
    fut__poller_close_wake(&io->poller);
    free_recs(io);
    fut__free(io);
    atomic_store_explicit(&rt->io, NULL, memory_order_relaxed);
    rt->io_here = NULL;
}

/* ---- detaching ---- */

int fut__io_detach_here(fut_runtime *rt, int fd, int closing)
{
    struct fut__io *io = io_of(rt);
    struct rec *r;

    if (io == NULL || io->stopped || (size_t)fd >= io->nrecs || (r = io->recs[fd]) == NULL)
        return 0;
    if (r->watched && !closing)
        (void)fut__poller_del(&io->poller, fd); /* ENOENT/EBADF: closed already */
    forget(r, detached_msg);
    return 0;
}

struct sync_call {
    struct fut__task task;
    int (*fn)(fut_runtime *rt, void *arg);
    void *arg;
    fut_runtime *rt;
    int rc;
    atomic_uint done;
};

static void sync_task(struct fut__task *t)
{
    struct sync_call *c = (struct sync_call *)t;

    c->rc = c->fn(c->rt, c->arg);
    atomic_store_explicit(&c->done, 1, memory_order_release);
    fut__futex_wake(&c->done, 1);
}

int fut__io_on_dispatcher(fut_runtime *rt, int (*fn)(fut_runtime *rt, void *arg), void *arg)
{
    struct sync_call c;

    if (fut__dispatcher_rt == rt)
        return fn(rt, arg);
    if (fut__dispatcher_rt != NULL)
        return EDEADLK;
    c.task.run = sync_task;
    c.fn = fn;
    c.arg = arg;
    c.rt = rt;
    c.rc = 0;
    atomic_init(&c.done, 0);
    fut__schedule(rt, &c.task);
    while (!atomic_load_explicit(&c.done, memory_order_acquire))
        fut__futex_wait(&c.done, 0);
    return c.rc;
}

static int detach_fn(fut_runtime *rt, void *arg)
{
    return fut__io_detach_here(rt, *(int *)arg, 0);
}

static int detach_closing_fn(fut_runtime *rt, void *arg)
{
    return fut__io_detach_here(rt, *(int *)arg, 1);
}

/* The runtime fut_io_detach(NULL, ...) and fut_close mean: the calling
 * coroutine's or continuation's, else the default one if it exists
 * (never made for this). */
static fut_runtime *current_rt(void)
{
    if (fut__dispatcher_rt != NULL)
        return fut__dispatcher_rt;
    return fut__runtime_if_made();
}

int fut_io_detach(fut_runtime *rt, int fd)
{
    if (fd < 0)
        return EINVAL;
    if (rt == NULL && (rt = current_rt()) == NULL)
        return 0;
    if (fut__forked(rt))
        return FUT_EFORKED;
    if (io_of(rt) == NULL && fut__dispatcher_rt != rt)
        return 0; /* never watched anything (a racing first wait is the caller's own bug) */
    return fut__io_on_dispatcher(rt, detach_fn, &fd);
}

int fut_close(int fd)
{
    fut_runtime *rt;

    if (fd < 0)
        return -EBADF;
    rt = current_rt();
    if (rt != NULL && !fut__forked(rt) &&
        (io_of(rt) != NULL || fut__dispatcher_rt == rt))
        (void)fut__io_on_dispatcher(rt, detach_closing_fn, &fd);
    if (close(fd) != 0)
        return errno == EINTR ? 0 : -errno; /* on Linux the descriptor is closed after EINTR */
    return 0;
}
