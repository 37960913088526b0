/* io.h - internal: the io room's interface to the rest of the library.
 *
 * io/poll.c watches descriptors for a runtime (its records, its waiters,
 * the poller of sys/sys.h) and gives readiness as futures (K_IO);
 * io/calls.c builds the sock_* style calls on it, io/net.c names and TCP,
 * io/stream.c buffered reading, io/server.c fut_serve. The dispatcher
 * (futures/runtime.c) calls the fut__io_* functions below; nothing in io/
 * touches the dispatcher's queues except through futures. */
#ifndef FUT_IO_IO_H
#define FUT_IO_IO_H

#include "futures/internal.h"
#include "sys/sys.h"

#include <stdint.h>
#include <sys/socket.h>

/* ---- for the dispatcher (futures/runtime.c), on rt's dispatcher ---- */

/* Look for ready descriptors and settle their waiters; wait up to
 * timeout_ns (< 0: no limit; 0: only look) unless woken (the caller has
 * set parked = 2 when it may wait). */
void fut__io_poll(fut_runtime *rt, int64_t timeout_ns);
/* While busy: look without waiting if the last look is older than the
 * bounded interval (so that a stream of tasks cannot starve I/O). */
void fut__io_busy(fut_runtime *rt);
/* Shutdown: cancel every pending wait; 1 if there were any. */
int fut__io_cancel_all(fut_runtime *rt);
/* After the dispatcher has exited (fut_runtime_free): close the poller
 * and free the records. */
void fut__io_stop(fut_runtime *rt);
/* The runtime's memory goes (its last reference): the wake-up descriptor
 * and the rest. Also in a forked child (closes its copies only). */
void fut__io_free(fut_runtime *rt);
/* Wake a dispatcher parked in the poller (any thread; rt->io is set). */
void fut__io_wake(fut_runtime *rt);

/* A K_IO future settled while in its descriptor's waiters: take it out
 * (future.c's task for it, on the dispatcher). */
void fut__io_unlink(struct fut_future *f);

/* ---- for io/ ---- */

/* A readiness future of fd for events, made on rt's dispatcher (the
 * caller is on it). spent: the caller has just seen EAGAIN for these
 * events, so the cached readiness is stale (no poll check). */
struct fut_future *fut__io_wait_here(fut_runtime *rt, int fd, unsigned events, int spent);

/* Run fn(arg) on rt's dispatcher and return its result: directly when
 * called there, else as a task, waiting for it (or on the calling thread,
 * if the dispatcher has exited). EDEADLK on another runtime's dispatcher. */
int fut__io_on_dispatcher(fut_runtime *rt, int (*fn)(fut_runtime *rt, void *arg), void *arg);

/* Detach fd from rt's poller (rt's dispatcher): waiters get EBADF.
 * closing: the caller closes fd next, which removes it from epoll (or, if
 * it was duplicated, leaves an entry whose events carry an old
 * generation and are dropped): no epoll_ctl. */
int fut__io_detach_here(fut_runtime *rt, int fd, int closing);

/* io/calls.c: an absolute CLOCK_MONOTONIC deadline in ns (UINT64_MAX:
 * none) from timeout_s, or 1 for NaN (callers check with this). */
#define FUT__NO_DEADLINE UINT64_MAX
int fut__io_deadline(double timeout_s, uint64_t *deadline);
/* The checks every descriptor call makes first: 0, or -EBADF (fd < 0),
 * -EINVAL (buf NULL with n > 0, timeout NaN), -EDEADLK (a plain
 * continuation on a dispatcher); *deadline set from timeout_s. */
int fut__io_enter(int fd, const void *buf, size_t n, double timeout_s, uint64_t *deadline);
/* The calls with an absolute deadline (for the stream and server code). */
long fut__io_read(int fd, void *buf, size_t n, uint64_t deadline);
long fut__io_write(int fd, const void *buf, size_t n, int flags, uint64_t deadline);
/* nonblocking: fd was made with SOCK_NONBLOCK (no fcntl needed). */
int fut__io_connect(int fd, const struct sockaddr *addr, socklen_t addrlen, uint64_t deadline,
                    int nonblocking);
/* Wait until fd is ready for events (0), or -ETIMEDOUT, -ECANCELED,
 * -EBADF, ...; in a coroutine, on a plain thread; never on a dispatcher
 * outside a coroutine (the callers refuse that first). */
int fut__io_wait_fd(int fd, unsigned events, uint64_t deadline);
/* How the calling thread waits: IO_CORO, IO_THREAD, or IO_REFUSE (a plain
 * continuation on a dispatcher). */
enum { FUT__IO_CORO, FUT__IO_THREAD, FUT__IO_REFUSE };
int fut__io_mode(void);

#endif
