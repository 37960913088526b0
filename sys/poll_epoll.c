/* poll_epoll.c - the poller of sys.h on Linux: epoll, edge-triggered, and
 * an eventfd to wake the waiting thread.
 *
 * DESIGN
 *
 * Threads: the owner (a runtime's dispatcher) is the only thread that
 * adds, checks, removes and waits; fut__poller_wake may be called from any
 * thread, and only writes the eventfd (8 bytes; a counter that saturates
 * harmlessly, so repeated wakes before the owner reads it cost nothing
 * more). The owner reads the eventfd back when epoll reports it, so it
 * stays edge-ready for the next wake.
 *
 * Timeouts are nanoseconds (epoll_pwait2, Linux 5.11); on an older kernel
 * (ENOSYS, remembered) epoll_wait's milliseconds are used, rounded up, so
 * a wait never ends early: the dispatcher's own spin covers the rest.
 *
 * Every descriptor is registered once for EPOLLIN | EPOLLOUT | EPOLLRDHUP
 * with EPOLLET: no epoll_ctl per wait. What that costs the caller is to
 * remember readiness (an edge is reported once) and to forget it when a
 * call says EAGAIN (io/poll.c). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "sys/sys.h"

#ifdef HAVE_VALGRIND_VALGRIND_H
#include <valgrind/valgrind.h>
#endif

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#define WAKE_TAG UINT64_MAX
#define WATCH (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)

static atomic_int no_pwait2; /* the kernel has no epoll_pwait2 */

int fut__poller_open(struct fut__poller *p)
{
    struct epoll_event ev;
    int rc;

#ifdef HAVE_VALGRIND_VALGRIND_H
    /* valgrind 3.19 does not know epoll_pwait2 (it warns, then says
     * ENOSYS): do not ask. */
    if (RUNNING_ON_VALGRIND)
        atomic_store_explicit(&no_pwait2, 1, memory_order_relaxed);
#endif
    p->fd = epoll_create1(EPOLL_CLOEXEC);
    if (p->fd < 0)
        return errno;
    p->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (p->wake < 0) {
        rc = errno;
        close(p->fd);
        p->fd = -1;
        return rc;
    }
    ev.events = EPOLLIN | EPOLLET;
    ev.data.u64 = WAKE_TAG;
    if (epoll_ctl(p->fd, EPOLL_CTL_ADD, p->wake, &ev) != 0) {
        rc = errno;
        close(p->wake);
        close(p->fd);
        p->fd = p->wake = -1;
        return rc;
    }
    return 0;
}

void fut__poller_close(struct fut__poller *p)
{
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
}

void fut__poller_close_wake(struct fut__poller *p)
{
    if (p->wake >= 0)
        close(p->wake);
    p->wake = -1;
}

int fut__poller_add(struct fut__poller *p, int fd, uint64_t tag)
{
    struct epoll_event ev;

    ev.events = WATCH;
    ev.data.u64 = tag;
    if (epoll_ctl(p->fd, EPOLL_CTL_ADD, fd, &ev) == 0)
        return 0;
    if (errno == EEXIST && epoll_ctl(p->fd, EPOLL_CTL_MOD, fd, &ev) == 0)
        return 0;
    return errno;
}

int fut__poller_check(struct fut__poller *p, int fd, uint64_t tag)
{
    struct epoll_event ev;

    ev.events = WATCH;
    ev.data.u64 = tag;
    return epoll_ctl(p->fd, EPOLL_CTL_MOD, fd, &ev) == 0 ? 0 : errno;
}

int fut__poller_del(struct fut__poller *p, int fd)
{
    struct epoll_event ev = {0};

    return epoll_ctl(p->fd, EPOLL_CTL_DEL, fd, &ev) == 0 ? 0 : errno;
}

static unsigned events_of(uint32_t e)
{
    unsigned r = 0;

    if (e & (EPOLLIN | EPOLLRDHUP | EPOLLPRI))
        r |= FUT__EV_READ;
    if (e & EPOLLOUT)
        r |= FUT__EV_WRITE;
    if (e & EPOLLERR)
        r |= FUT__EV_ERR | FUT__EV_READ | FUT__EV_WRITE;
    if (e & EPOLLHUP)
        r |= FUT__EV_HUP | FUT__EV_READ | FUT__EV_WRITE;
    return r;
}

int fut__poller_wait(struct fut__poller *p, struct fut__poll_event *out, int max, int64_t timeout_ns)
{
    struct epoll_event ev[128];
    int n, i, k = 0;
    uint64_t junk;

    if (max > (int)(sizeof ev / sizeof ev[0]))
        max = (int)(sizeof ev / sizeof ev[0]);
    n = -1;
#ifdef SYS_epoll_pwait2
    if (!atomic_load_explicit(&no_pwait2, memory_order_relaxed)) {
        struct timespec ts, *tp = NULL;
        if (timeout_ns >= 0) {
            ts.tv_sec = (time_t)(timeout_ns / 1000000000);
            ts.tv_nsec = (long)(timeout_ns % 1000000000);
            tp = &ts;
        }
        n = (int)syscall(SYS_epoll_pwait2, p->fd, ev, max, tp, NULL, (size_t)(_NSIG / 8));
        if (n < 0 && errno == ENOSYS)
            atomic_store_explicit(&no_pwait2, 1, memory_order_relaxed);
        else if (n < 0)
            return 0; /* EINTR */
    }
#endif
    if (n < 0) {
        int ms = timeout_ns < 0 ? -1 : (int)((timeout_ns + 999999) / 1000000);
        if (timeout_ns > (int64_t)2000000000 * 1000000)
            ms = 2000000000;
        n = epoll_wait(p->fd, ev, max, ms);
        if (n < 0)
            return 0;
    }
    for (i = 0; i < n; i++) {
        if (ev[i].data.u64 == WAKE_TAG) {
            while (read(p->wake, &junk, sizeof junk) > 0)
                ;
            continue;
        }
        out[k].tag = ev[i].data.u64;
        out[k].events = events_of(ev[i].events);
        k++;
    }
    return k;
}

void fut__poller_wake(struct fut__poller *p)
{
    uint64_t one = 1;
    ssize_t rc;

    do
        rc = write(p->wake, &one, sizeof one);
    while (rc < 0 && errno == EINTR);
}
