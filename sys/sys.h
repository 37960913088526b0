/* sys.h - what only Linux has, behind one small internal interface: the
 * futex (a thread sleeps on a 32-bit word) and the poller (epoll plus an
 * eventfd to wake it). Everything else in the library is POSIX; a port to
 * another system (kqueue, io_uring, a portable poll() fallback) replaces
 * the files of this room (sys/futex_linux.c, sys/poll_epoll.c) and
 * nothing else.
 *
 * What it does not do: it keeps no state of its own beyond the poller's
 * two descriptors, knows nothing of futures, and decides no policy (which
 * descriptors to watch, when to poll: io/poll.c and futures/runtime.c). */
#ifndef FUT_SYS_SYS_H
#define FUT_SYS_SYS_H

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

/* ---- futex ---- */

/* Sleep while *word == expected (or until woken). Spurious returns happen:
 * callers re-check their predicate. */
void fut__futex_wait(atomic_uint *word, unsigned expected);
/* The same until the absolute CLOCK_MONOTONIC deadline (NULL: none).
 * Returns ETIMEDOUT once it has passed, else 0 (woken, or spurious). */
int fut__futex_wait_until(atomic_uint *word, unsigned expected, const struct timespec *deadline);
/* Wake up to n threads sleeping on word. */
void fut__futex_wake(atomic_uint *word, int n);

/* ---- poller ----
 *
 * A set of watched descriptors, each registered once for both directions,
 * edge-triggered: an event says "became ready since you last looked", so
 * its owner caches readiness and forgets it when a call reports EAGAIN.
 * One thread (the owner) adds, removes and waits; any thread may wake a
 * waiting owner. */

/* Events, the same bits as futures.h's FUT_IO_*. */
#define FUT__EV_READ 0x1u
#define FUT__EV_WRITE 0x4u
#define FUT__EV_ERR 0x8u
#define FUT__EV_HUP 0x10u

struct fut__poll_event {
    uint64_t tag;    /* what the owner gave fut__poller_add */
    unsigned events; /* FUT__EV_*: READ includes end of stream; ERR and HUP come with READ and WRITE */
};

struct fut__poller {
    int fd;   /* the epoll instance */
    int wake; /* an eventfd in it: written by fut__poller_wake */
};

/* Make one: 0, or EMFILE, ENFILE, ENOMEM. */
int fut__poller_open(struct fut__poller *p);
/* Close the epoll instance (the owner is done waiting) and, separately,
 * the wake-up descriptor (no thread can call fut__poller_wake any more). */
void fut__poller_close(struct fut__poller *p);
void fut__poller_close_wake(struct fut__poller *p);
/* Watch fd for both directions, edge-triggered, with tag; if it is
 * watched already, replace its tag. The kernel reports its present state
 * at once. 0, or EBADF, EPERM (a regular file or directory: always
 * ready), ENOMEM, ENOSPC (the user's epoll watch limit). */
int fut__poller_add(struct fut__poller *p, int fd, uint64_t tag);
/* Whether fd, as the number refers to now, is watched (EPOLL_CTL_MOD with
 * its tag: an exact answer, one system call): 0 yes, ENOENT no, EBADF. */
int fut__poller_check(struct fut__poller *p, int fd, uint64_t tag);
/* Stop watching fd: 0, or ENOENT (it was not), EBADF. */
int fut__poller_del(struct fut__poller *p, int fd);
/* Wait for events up to timeout_ns (< 0: no limit; 0: only look), or a
 * wake-up. Fills ev[0..n) and returns n >= 0 (a wake-up is consumed here
 * and not reported). Interrupted by a signal, it returns 0. */
int fut__poller_wait(struct fut__poller *p, struct fut__poll_event *ev, int max, int64_t timeout_ns);
/* Wake the owner out of fut__poller_wait (any thread; async-signal-safe). */
void fut__poller_wake(struct fut__poller *p);

#endif
