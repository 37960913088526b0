/* calls.c - the calls that wait on descriptors: fut_read, fut_write,
 * fut_recv, fut_send, fut_accept, fut_connect.
 *
 * What it does not do: no buffering (io/stream.c), no names (io/net.c),
 * no bookkeeping of descriptors (io/poll.c): each call tries its system
 * call and, when that would block, waits for readiness and tries again.
 *
 * DESIGN
 *
 * Threads: a call runs on the calling thread. In a coroutine its waits
 * are K_IO futures of the coroutine's runtime, made on that dispatcher
 * (the coroutine runs there) and awaited, wrapped in fut_timeout when the
 * call has a deadline, so cancel and timeout are the futures' own. On a
 * thread that is no dispatcher a wait is poll(2) on that thread: no
 * runtime is involved. On a dispatcher outside a coroutine every call
 * refuses with EDEADLK before any system call.
 *
 * Non-blocking: sockets are read and written with MSG_DONTWAIT (their
 * mode is left alone); other descriptors get O_NONBLOCK (F_GETFL, and
 * F_SETFL when missing) because they have no per-call flag. SIGPIPE:
 * sockets get MSG_NOSIGNAL; a write to a pipe blocks SIGPIPE for the
 * thread around the write and takes back the one the write raised.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "futures/coro.h"
#include "io/io.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

int fut__io_mode(void)
{
    if (fut__coro_running != NULL)
        return FUT__IO_CORO;
    if (fut__dispatcher_rt != NULL)
        return FUT__IO_REFUSE;
    return FUT__IO_THREAD;
}

int fut__io_deadline(double timeout_s, uint64_t *deadline)
{
    if (isnan(timeout_s))
        return 1;
    if (timeout_s < 0 || timeout_s > 1e9) {
        *deadline = FUT__NO_DEADLINE;
        return 0;
    }
    *deadline = fut__now_ns() + (uint64_t)(timeout_s * 1e9);
    return 0;
}

int fut__io_wait_fd(int fd, unsigned events, uint64_t deadline)
{
    struct fut__coro *co = fut__coro_running;
    uint64_t now = 0;
    struct pollfd p;
    int err, ms, r;

    if (co != NULL) {
        fut_future *f, *t = NULL;
        if (fut__forked(co->rt))
            return -FUT_EFORKED;
        if (deadline != FUT__NO_DEADLINE && (now = fut__now_ns()) >= deadline)
            return -ETIMEDOUT;
        f = fut__io_wait_here(co->rt, fd, events, 1);
        if (f == NULL)
            return -ENOMEM;
        if (deadline != FUT__NO_DEADLINE) {
            t = fut_timeout(f, (double)(deadline - now) / 1e9);
            if (t == NULL) {
                fut_cancel(f);
                fut_release(f);
                return -ENOMEM;
            }
        }
        (void)fut_await(t != NULL ? t : f, &err);
        fut_release(t);
        fut_release(f);
        return err != 0 ? -err : 0;
    }
    for (;;) {
        ms = -1;
        if (deadline != FUT__NO_DEADLINE) {
            now = fut__now_ns();
            if (now >= deadline)
                return -ETIMEDOUT;
            ms = (deadline - now + 999999) / 1000000 > INT_MAX ? INT_MAX
                                                              : (int)((deadline - now + 999999) / 1000000);
        }
        p.fd = fd;
        p.events = (short)((events & FUT_IO_READ ? POLLIN : 0) | (events & FUT_IO_WRITE ? POLLOUT : 0));
        p.revents = 0;
        r = poll(&p, 1, ms);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            continue; /* the deadline check above ends it */
        if (p.revents & POLLNVAL)
            return -EBADF;
        return 0;
    }
}

static int make_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);

    if (fl < 0)
        return errno;
    if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return errno;
    return 0;
}

static long try_read(int fd, void *buf, size_t n)
{
    ssize_t r = recv(fd, buf, n, MSG_DONTWAIT);
    int rc;

    if (r >= 0)
        return (long)r;
    if (errno != ENOTSOCK)
        return -errno;
    if ((rc = make_nonblocking(fd)) != 0)
        return -rc;
    r = read(fd, buf, n);
    return r >= 0 ? (long)r : -errno;
}

/* write(2) to what is not a socket, without dying of SIGPIPE. */
static long write_nosigpipe(int fd, const void *buf, size_t n)
{
    sigset_t pipe_set, old, pending;
    struct timespec zero = {0, 0};
    int was_pending, e;
    ssize_t r;

    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    sigpending(&pending);
    was_pending = sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    r = write(fd, buf, n);
    e = errno;
    if (r < 0 && e == EPIPE && !was_pending)
        while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
            ;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return r >= 0 ? (long)r : -e;
}

/* flags < 0: write(2) semantics (fut_write); else send(2) with flags. */
static long try_write(int fd, const void *buf, size_t n, int flags)
{
    ssize_t r = send(fd, buf, n, (flags < 0 ? 0 : flags) | MSG_DONTWAIT | MSG_NOSIGNAL);
    int rc;

    if (r >= 0)
        return (long)r;
    if (errno != ENOTSOCK || flags >= 0)
        return -errno;
    if ((rc = make_nonblocking(fd)) != 0)
        return -rc;
    return write_nosigpipe(fd, buf, n);
}

long fut__io_read(int fd, void *buf, size_t n, uint64_t deadline)
{
    long r;
    int rc;

    if (n == 0)
        return 0;
    for (;;) {
        r = try_read(fd, buf, n);
        if (r >= 0)
            return r;
        if (r == -EINTR)
            continue;
        if (r != -EAGAIN)
            return r;
        if ((rc = fut__io_wait_fd(fd, FUT_IO_READ, deadline)) != 0)
            return rc;
    }
}

long fut__io_write(int fd, const void *buf, size_t n, int flags, uint64_t deadline)
{
    const char *p = buf;
    size_t done = 0;
    long r;
    int rc;

    while (done < n) {
        r = try_write(fd, p + done, n - done, flags);
        if (r > 0) {
            done += (size_t)r;
            continue;
        }
        if (r == -EINTR)
            continue;
        if (r < 0 && r != -EAGAIN)
            return r;
        if ((rc = fut__io_wait_fd(fd, FUT_IO_WRITE, deadline)) != 0)
            return rc;
    }
    return (long)n;
}

/* The checks every call makes first: 0 or -code. */
int fut__io_enter(int fd, const void *buf, size_t n, double timeout_s, uint64_t *deadline)
{
    if (fd < 0)
        return -EBADF;
    if (buf == NULL && n > 0)
        return -EINVAL;
    if (fut__io_deadline(timeout_s, deadline) != 0)
        return -EINVAL;
    if (fut__io_mode() == FUT__IO_REFUSE)
        return -EDEADLK;
    return 0;
}

ssize_t fut_read(int fd, void *buf, size_t n, double timeout_s)
{
    uint64_t dl;
    int rc = fut__io_enter(fd, buf, n, timeout_s, &dl);

    return rc != 0 ? rc : fut__io_read(fd, buf, n, dl);
}

ssize_t fut_write(int fd, const void *buf, size_t n, double timeout_s)
{
    uint64_t dl;
    int rc = fut__io_enter(fd, buf, n, timeout_s, &dl);

    return rc != 0 ? rc : fut__io_write(fd, buf, n, -1, dl);
}

ssize_t fut_recv(int fd, void *buf, size_t n, int flags, double timeout_s)
{
    uint64_t dl;
    ssize_t r;
    int rc = fut__io_enter(fd, buf, n, timeout_s, &dl);

    if (rc != 0)
        return rc;
    for (;;) {
        r = recv(fd, buf, n, flags | MSG_DONTWAIT);
        if (r >= 0)
            return r;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN)
            return -errno;
        if ((rc = fut__io_wait_fd(fd, FUT_IO_READ, dl)) != 0)
            return rc;
    }
}

ssize_t fut_send(int fd, const void *buf, size_t n, int flags, double timeout_s)
{
    uint64_t dl;
    int rc = fut__io_enter(fd, buf, n, timeout_s, &dl);

    if (rc != 0)
        return rc;
    if (flags < 0)
        return -EINVAL;
    return fut__io_write(fd, buf, n, flags, dl);
}

/* Errors accept(2) reports for a connection that went wrong before we
 * took it: the listening socket is fine, take the next one. */
static int accept_transient(int e)
{
    return e == ECONNABORTED || e == EPROTO || e == ENETDOWN || e == ENOPROTOOPT ||
           e == EHOSTDOWN || e == ENONET || e == EHOSTUNREACH || e == EOPNOTSUPP ||
           e == ENETUNREACH;
}

int fut_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, double timeout_s)
{
    uint64_t dl;
    int rc = fut__io_enter(fd, NULL, 0, timeout_s, &dl), c;

    if (rc != 0)
        return rc;
    if ((addr == NULL) != (addrlen == NULL))
        return -EINVAL;
    if ((rc = make_nonblocking(fd)) != 0)
        return -rc;
    for (;;) {
        c = accept4(fd, addr, addrlen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c >= 0)
            return c;
        if (errno == EINTR || accept_transient(errno))
            continue;
        if (errno != EAGAIN)
            return -errno;
        if ((rc = fut__io_wait_fd(fd, FUT_IO_READ, dl)) != 0)
            return rc;
    }
}

int fut__io_connect(int fd, const struct sockaddr *addr, socklen_t addrlen, uint64_t deadline,
                    int nonblocking)
{
    socklen_t len = sizeof(int);
    int rc, err = 0;

    if (!nonblocking && (rc = make_nonblocking(fd)) != 0)
        return -rc;
    if (connect(fd, addr, addrlen) == 0)
        return 0;
    if (errno != EINPROGRESS && errno != EINTR)
        return -errno;
    if ((rc = fut__io_wait_fd(fd, FUT_IO_WRITE, deadline)) != 0)
        return rc;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        return -errno;
    return err != 0 ? -err : 0;
}

int fut_connect(int fd, const struct sockaddr *addr, socklen_t addrlen, double timeout_s)
{
    uint64_t dl;
    int rc = fut__io_enter(fd, NULL, 0, timeout_s, &dl);

    if (rc != 0)
        return rc;
    if (addr == NULL || addrlen == 0)
        return -EINVAL;
    return fut__io_connect(fd, addr, addrlen, dl, 0);
}
