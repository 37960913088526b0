/* stream.c - buffered reading for line protocols: fut_stream_*.
 *
 * What it does not do: no write buffering (a write is fut_write, done
 * when it returns), no sharing between coroutines (one user at a time),
 * no encodings.
 *
 * DESIGN
 *
 * A stream is its descriptor and one buffer of at most `limit` bytes:
 * bytes [start, end) are read and not yet taken. A read until a delimiter
 * searches only what it has not searched before (from end - dlen + 1), so
 * a long line arriving byte by byte costs O(n), and returns a pointer into
 * the buffer, valid until the next call (which may move the bytes to the
 * front). The buffer grows by doubling up to the limit, and never beyond:
 * a line longer than the limit is -EMSGSIZE, not unbounded memory.
 *
 * Threads: whoever calls; the waiting is io/calls.c's.
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
#include <string.h>

#define STREAM_LIMIT_DEFAULT (64u * 1024u)
#define STREAM_FIRST 4096u

struct fut_stream {
    int fd;
    int eof;       /* the descriptor said end of stream */
    size_t limit;
    char *buf;
    size_t cap, start, end;
};

fut_stream *fut_stream_new(int fd, size_t limit)
{
    fut_stream *s;

    if (fd < 0) {
        errno = EINVAL;
        return NULL;
    }
    s = fut__calloc(1, sizeof *s);
    if (s == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    s->fd = fd;
    s->limit = limit != 0 ? limit : STREAM_LIMIT_DEFAULT;
    return s;
}

fut_stream *fut_open_connection(const char *host, const char *port, double timeout_s)
{
    int fd = fut_tcp_connect(host, port, timeout_s);
    fut_stream *s;

    if (fd < 0) {
        errno = -fd;
        return NULL;
    }
    s = fut_stream_new(fd, 0);
    if (s == NULL) {
        fut_close(fd);
        errno = ENOMEM;
    }
    return s;
}

int fut_stream_fd(const fut_stream *s)
{
    return s != NULL ? s->fd : -EINVAL;
}

int fut_stream_close(fut_stream *s)
{
    int rc;

    if (s == NULL)
        return 0;
    rc = fut_close(s->fd);
    free(s->buf);
    fut__free(s);
    return rc;
}

static size_t buffered(const fut_stream *s)
{
    return s->end - s->start;
}

/* Room for at least one more byte at the end (want: how many we would
 * like): move the bytes to the front, grow up to the limit. 0, ENOMEM,
 * or EMSGSIZE (limit bytes are buffered). */
static int make_room(fut_stream *s, size_t want)
{
    size_t have = buffered(s), cap;
    char *b;

    if (have >= s->limit)
        return EMSGSIZE;
    if (s->start > 0 && (s->end == s->cap || s->start >= s->cap / 2)) {
        memmove(s->buf, s->buf + s->start, have);
        s->start = 0;
        s->end = have;
    }
    if (s->end < s->cap)
        return 0;
    cap = s->cap ? s->cap * 2 : STREAM_FIRST;
    while (cap < have + want && cap < s->limit)
        cap *= 2;
    if (cap > s->limit)
        cap = s->limit;
    b = realloc(s->buf, cap);
    if (b == NULL)
        return ENOMEM;
    s->buf = b;
    s->cap = cap;
    return 0;
}

/* One read into the buffer: > 0 bytes came, 0 end of stream, or -code. */
static long fill(fut_stream *s, uint64_t deadline)
{
    long r;
    int rc;

    if (s->eof)
        return 0;
    if ((rc = make_room(s, STREAM_FIRST)) != 0)
        return -rc;
    r = fut__io_read(s->fd, s->buf + s->end, s->cap - s->end, deadline);
    if (r > 0)
        s->end += (size_t)r;
    else if (r == 0)
        s->eof = 1;
    return r;
}

/* The checks every call makes first (io/calls.c's): 0 or -code. */
static int enter(fut_stream *s, const void *buf, size_t n, double timeout_s, uint64_t *deadline)
{
    return s == NULL ? -EINVAL : fut__io_enter(s->fd, buf, n, timeout_s, deadline);
}

ssize_t fut_stream_read(fut_stream *s, void *buf, size_t n, double timeout_s)
{
    uint64_t dl;
    size_t k;
    long r;
    int rc = enter(s, buf, n, timeout_s, &dl);

    if (rc != 0)
        return rc;
    if (n == 0)
        return 0;
    if (buffered(s) == 0) {
        if (s->eof)
            return 0;
        if (n >= STREAM_FIRST) { /* big reads go straight to the caller */
            r = fut__io_read(s->fd, buf, n, dl);
            if (r == 0)
                s->eof = 1;
            return r;
        }
        r = fill(s, dl);
        if (r <= 0)
            return r;
    }
    k = buffered(s) < n ? buffered(s) : n;
    memcpy(buf, s->buf + s->start, k);
    s->start += k;
    return (ssize_t)k;
}

ssize_t fut_stream_readexactly(fut_stream *s, void *buf, size_t n, double timeout_s)
{
    uint64_t dl;
    size_t got = 0, k;
    char *p = buf;
    long r;
    int rc = enter(s, buf, n, timeout_s, &dl);

    if (rc != 0)
        return rc;
    k = buffered(s) < n ? buffered(s) : n;
    if (k > 0) { /* a new stream has no buffer yet */
        memcpy(p, s->buf + s->start, k);
        s->start += k;
    }
    got = k;
    while (got < n) {
        if (s->eof)
            return (ssize_t)got;
        r = fut__io_read(s->fd, p + got, n - got, dl);
        if (r > 0) {
            got += (size_t)r;
            continue;
        }
        if (r == 0) {
            s->eof = 1;
            return (ssize_t)got;
        }
        /* Keep what came for the next read, where it fits (the buffer is
         * empty now). */
        if ((r == -ETIMEDOUT || r == -ECANCELED) && got > 0 && got <= s->limit) {
            if (s->cap < got) {
                char *b = realloc(s->buf, got);
                if (b == NULL)
                    return r;
                s->buf = b;
                s->cap = got;
            }
            memcpy(s->buf, p, got);
            s->start = 0;
            s->end = got;
        }
        return r;
    }
    return (ssize_t)n;
}

ssize_t fut_stream_readuntil(fut_stream *s, const void *delim, size_t dlen, const char **data,
                             double timeout_s)
{
    uint64_t dl;
    size_t from = 0, n;
    char *hit;
    long r;
    int rc = enter(s, delim, dlen, timeout_s, &dl);

    if (rc != 0)
        return rc;
    if (delim == NULL || dlen == 0 || data == NULL)
        return -EINVAL;
    *data = NULL;
    for (;;) {
        if (buffered(s) >= dlen) {
            hit = memmem(s->buf + s->start + from, buffered(s) - from, delim, dlen);
            if (hit != NULL) {
                n = (size_t)(hit - (s->buf + s->start)) + dlen;
                *data = s->buf + s->start;
                s->start += n;
                return (ssize_t)n;
            }
            from = buffered(s) - (dlen - 1);
        }
        if (s->eof) {
            n = buffered(s);
            if (n == 0)
                return 0;
            *data = s->buf + s->start;
            s->start = s->end;
            return (ssize_t)n;
        }
        if (buffered(s) >= s->limit)
            return -EMSGSIZE;
        r = fill(s, dl);
        if (r < 0)
            return r;
    }
}

ssize_t fut_stream_readline(fut_stream *s, const char **line, double timeout_s)
{
    return fut_stream_readuntil(s, "\n", 1, line, timeout_s);
}

ssize_t fut_stream_write(fut_stream *s, const void *buf, size_t n, double timeout_s)
{
    uint64_t dl;
    int rc = enter(s, buf, n, timeout_s, &dl);

    if (rc != 0)
        return rc;
    return fut__io_write(s->fd, buf, n, -1, dl);
}
