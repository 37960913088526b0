/* server.c - fut_serve: accept connections, one coroutine per connection
 * (asyncio.start_server), and stop serving while handlers finish.
 *
 * What it does not do: no limit on connections (the descriptor limit is
 * the limit: on EMFILE the accept loop waits 100 ms and tries again, as
 * Go's and asyncio's do), no TLS, no cancel of running handlers on close
 * (a runtime shutdown cancels them).
 *
 * DESIGN
 *
 * Threads: everything of a server but fut_serve's listen and the start of
 * fut_server_close runs on its runtime's dispatcher: the accept loop is a
 * coroutine, each handler a coroutine, and their counters and flags are
 * plain fields touched only there. fut_server_close from another thread
 * runs its part there as a task and waits for it (fut__io_on_dispatcher),
 * so the listening socket is closed when it returns; from a dispatcher of
 * another runtime it queues the task and does not wait.
 *
 * The accept loop checks `closing` before every accept(2) in the same
 * step as the call, so once the close task has closed the listening
 * socket (on the dispatcher, while the loop is suspended) the loop never
 * touches that descriptor number again.
 *
 * Lifetime: the server is freed when closing is set, the accept loop has
 * ended and no handler runs; its `closed` promise is resolved then. Each
 * handler's record holds two references (the handler coroutine and a
 * fut_finally on its future, which cleans up for a handler that never
 * started: cancelled, or no stack), and whichever ends last frees it.
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
#include <stdlib.h>
#include <unistd.h>

struct fut_server {
    fut_runtime *rt;
    int lfd;              /* listening socket; -1 once closed */
    int port;
    fut_conn_fn fn;
    void *arg;
    fut_promise *closed;  /* resolved when the last handler has returned */
    fut_future *closed_f; /* its future, for fut_server_close */
    uint64_t handlers;    /* running or queued */
    int closing;          /* fut_server_close ran */
    int accepting;        /* the accept loop has not ended */
};

struct conn {
    fut_server *srv;
    fut_stream *stream;
    int refs;             /* dispatcher only: the coroutine's and the finally's */
    int started;
};

static void maybe_done(fut_server *s)
{
    if (!s->closing || s->accepting || s->handlers != 0)
        return;
    fut_promise_resolve(s->closed, NULL);
    fut_promise_free(s->closed);
    fut_release(s->closed_f);
    fut__free(s);
}

static void conn_end(struct conn *c)
{
    if (--c->refs != 0)
        return;
    fut__free(c);
}

static void conn_close(struct conn *c)
{
    fut_server *s = c->srv;

    fut_stream_close(c->stream);
    c->stream = NULL;
    s->handlers--;
    maybe_done(s);
}

static void *handler_main(void *arg)
{
    struct conn *c = arg;

    c->started = 1;
    c->srv->fn(c->stream, c->srv->arg);
    conn_close(c);
    conn_end(c);
    return NULL;
}

static void handler_settled(fut_future *f, void *arg)
{
    struct conn *c = arg;

    (void)f;
    if (!c->started) { /* it never ran, and never will */
        conn_close(c);
        conn_end(c); /* the coroutine's reference */
    }
    conn_end(c);
}

static void start_handler(fut_server *s, int fd)
{
    struct conn *c = fut__calloc(1, sizeof *c);
    fut_future *h, *fin;

    if (c == NULL || (c->stream = fut_stream_new(fd, 0)) == NULL) {
        fut__free(c);
        fut_close(fd);
        return;
    }
    c->srv = s;
    c->refs = 2;
    s->handlers++;
    h = fut_async(s->rt, handler_main, c);
    if (h == NULL) {
        fut_stream_close(c->stream);
        fut__free(c);
        s->handlers--;
        return;
    }
    fin = fut_finally(h, handler_settled, c);
    if (fin == NULL) {
        /* No memory for the clean-up of a handler that never starts: it
         * will start (nothing cancels it but a shutdown), so let it own
         * both references. */
        c->refs = 1;
    }
    fut_release(fin);
    fut_release(h);
}

static void *accept_main(void *arg)
{
    fut_server *s = arg;
    int fd, rc;

    for (;;) {
        if (s->closing)
            break;
        fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            start_handler(s, fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
            continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            fut_future *nap = fut_sleep(s->rt, 0.1); /* out of descriptors: let some close */
            fut_await(nap, &rc);
            fut_release(nap);
            if (rc == ECANCELED)
                break;
            continue;
        }
        if (errno != EAGAIN)
            break;
        rc = fut__io_wait_fd(s->lfd, FUT_IO_READ, FUT__NO_DEADLINE);
        if (rc == -ECANCELED || rc == -EBADF || rc == -FUT_EFORKED)
            break;
    }
    /* Ended by fut_server_close (which closed the socket) or a shutdown. */
    if (!s->closing && s->lfd >= 0) {
        fut_close(s->lfd);
        s->lfd = -1;
    }
    s->accepting = 0;
    maybe_done(s);
    return NULL;
}

fut_server *fut_serve(fut_runtime *rt, const char *host, const char *port, fut_conn_fn fn, void *arg)
{
    fut_server *s;
    fut_future *loop;
    int fd;

    if (fn == NULL || port == NULL) {
        errno = EINVAL;
        return NULL;
    }
    rt = fut__runtime(rt);
    if (rt == NULL)
        return NULL;
    if (fut__forked(rt)) {
        errno = FUT_EFORKED;
        return NULL;
    }
    fd = fut_tcp_listen(host, port, 0);
    if (fd < 0) {
        errno = -fd;
        return NULL;
    }
    s = fut__calloc(1, sizeof *s);
    if (s == NULL || (s->closed = fut_promise_new(rt)) == NULL ||
        (s->closed_f = fut_promise_future(s->closed)) == NULL) {
        if (s != NULL)
            fut_promise_free(s->closed); /* no future was given out: nobody sees it broken */
        fut__free(s);
        close(fd);
        errno = ENOMEM;
        return NULL;
    }
    s->rt = rt;
    s->lfd = fd;
    s->port = fut_local_port(fd);
    s->fn = fn;
    s->arg = arg;
    s->accepting = 1;
    loop = fut_async(rt, accept_main, s);
    if (loop == NULL) {
        fut_release(s->closed_f);
        fut_promise_resolve(s->closed, NULL);
        fut_promise_free(s->closed);
        fut__free(s);
        close(fd);
        errno = ENOMEM;
        return NULL;
    }
    fut_release(loop); /* it ends by itself: on close, or on shutdown (cancelled) */
    return s;
}

int fut_server_port(const fut_server *s)
{
    return s != NULL ? s->port : -EINVAL;
}

/* On the dispatcher: stop accepting, close the listening socket. */
static int close_fn(fut_runtime *rt, void *arg)
{
    fut_server *s = arg;

    (void)rt;
    s->closing = 1;
    if (s->lfd >= 0) {
        fut__io_detach_here(s->rt, s->lfd, 1); /* the accept loop's wait ends (EBADF) */
        close(s->lfd);
        s->lfd = -1;
    }
    maybe_done(s);
    return 0;
}

static void close_task(struct fut__task *t)
{
    struct fut__task *self = t;
    fut_server *s = *(fut_server **)(self + 1);

    fut__free(t);
    close_fn(s->rt, s);
}

fut_future *fut_server_close(fut_server *s)
{
    fut_future *f;
    fut_runtime *rt;

    if (s == NULL) {
        errno = EINVAL;
        return NULL;
    }
    rt = s->rt;
    f = fut_retain(s->closed_f); /* the server may be freed by the close */
    if (fut__dispatcher_rt != NULL && fut__dispatcher_rt != rt) {
        /* Another runtime's dispatcher: do not wait for ours. */
        struct fut__task *t = fut__malloc(sizeof *t + sizeof s);
        if (t == NULL) {
            fut_release(f);
            errno = ENOMEM;
            return NULL;
        }
        t->run = close_task;
        *(fut_server **)(t + 1) = s;
        fut__schedule(rt, t);
        return f;
    }
    (void)fut__io_on_dispatcher(rt, close_fn, s);
    return f;
}
