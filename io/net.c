/* net.c - names and TCP: fut_tcp_connect, fut_tcp_listen, fut_local_port.
 *
 * What it does not do: no waiting of its own (io/calls.c waits), no
 * caching of names, no UDP.
 *
 * DESIGN
 *
 * Names: a numeric address and port (inet_pton, digits) need no lookup;
 * anything else goes to getaddrinfo, which may block for seconds (DNS):
 * in a coroutine it runs on the blocking lane of the coroutine's runtime,
 * as a raw pool job that shares a small request with the coroutine (two
 * references: whoever drops the last frees it, so a coroutine that gives
 * up on a timeout or cancel leaves the job to clean up); on a plain thread
 * it is called directly (that thread may block).
 *
 * Threads: the calling thread; the lookup job on a blocking-lane thread.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "futures/coro.h"
#include "io/io.h"
#include "pool/alloc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Addresses to try, in order. */
struct addr {
    int family;
    socklen_t len;
    struct sockaddr_storage ss;
};

struct addrs {
    size_t n;
    struct addr *a;   /* a[0..n): `one`, or allocated */
    struct addr one[2];
};

static void addrs_free(struct addrs *as)
{
    if (as->a != as->one)
        free(as->a);
    as->a = NULL;
    as->n = 0;
}

static int gai_code(int rc)
{
    switch (rc) {
    case 0:
        return 0;
    case EAI_AGAIN:
        return EAGAIN;
    case EAI_MEMORY:
        return ENOMEM;
    case EAI_SYSTEM:
        return errno != 0 ? errno : EIO;
    case EAI_FAIL:
        return EIO;
    case EAI_BADFLAGS:
    case EAI_FAMILY:
    case EAI_SOCKTYPE:
        return EINVAL;
    default: /* EAI_NONAME, EAI_NODATA, EAI_SERVICE, EAI_ADDRFAMILY */
        return ENOENT;
    }
}

static int addrs_from(struct addrs *as, const struct addrinfo *res)
{
    const struct addrinfo *ai;
    size_t n = 0;

    for (ai = res; ai != NULL; ai = ai->ai_next)
        if (ai->ai_addrlen <= sizeof(struct sockaddr_storage))
            n++;
    if (n == 0)
        return ENOENT;
    as->a = calloc(n, sizeof *as->a);
    if (as->a == NULL)
        return ENOMEM;
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof(struct sockaddr_storage))
            continue;
        as->a[as->n].family = ai->ai_family;
        as->a[as->n].len = ai->ai_addrlen;
        memcpy(&as->a[as->n].ss, ai->ai_addr, ai->ai_addrlen);
        as->n++;
    }
    return 0;
}

/* host and port as numbers: fill as and return 1; else 0 (a lookup is
 * needed). host NULL (passive): every local address, IPv6 then IPv4. */
static int numeric(const char *host, const char *port, struct addrs *as)
{
    struct sockaddr_in *v4;
    struct sockaddr_in6 *v6;
    unsigned long p;
    char *end;

    if (port[0] < '0' || port[0] > '9')
        return 0;
    p = strtoul(port, &end, 10);
    if (*end != '\0' || p > 65535)
        return 0;
    memset(as->one, 0, sizeof as->one);
    as->a = as->one;
    v6 = (struct sockaddr_in6 *)&as->one[0].ss;
    v4 = (struct sockaddr_in *)&as->one[0].ss;
    if (host == NULL) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)p);
        v6->sin6_addr = in6addr_any;
        as->one[0].family = AF_INET6;
        as->one[0].len = sizeof *v6;
        v4 = (struct sockaddr_in *)&as->one[1].ss;
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)p);
        v4->sin_addr.s_addr = htonl(INADDR_ANY);
        as->one[1].family = AF_INET;
        as->one[1].len = sizeof *v4;
        as->n = 2;
        return 1;
    }
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)p);
        as->one[0].family = AF_INET;
        as->one[0].len = sizeof *v4;
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)p);
        as->one[0].family = AF_INET6;
        as->one[0].len = sizeof *v6;
    } else {
        return 0;
    }
    as->n = 1;
    return 1;
}

/* ---- getaddrinfo on the blocking lane ---- */

struct lookup {
    fut_pool_job job;
    char *host, *port;
    int passive;
    int rc;                 /* getaddrinfo's */
    int err;                /* errno after it */
    struct addrinfo *res;
    fut_promise *done;
    atomic_int refs;
};

static void lookup_unref(struct lookup *l)
{
    if (atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (l->res != NULL)
        freeaddrinfo(l->res);
    fut_promise_free(l->done);
    free(l->host);
    free(l->port);
    free(l);
}

static int gai(const char *host, const char *port, int passive, struct addrinfo **res)
{
    struct addrinfo hints;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    hints.ai_flags = passive ? AI_PASSIVE : AI_ADDRCONFIG;
    return getaddrinfo(host, port, &hints, res);
}

static void lookup_job(fut_pool_job *job, int status)
{
    struct lookup *l = (struct lookup *)job;

    if (status == 0) {
        errno = 0;
        l->rc = gai(l->host, l->port, l->passive, &l->res);
        l->err = errno;
        fut_promise_resolve(l->done, NULL);
    } else {
        fut_promise_reject(l->done, status, "the name lookup could not run");
    }
    lookup_unref(l);
}

static int lookup_offloaded(fut_runtime *rt, const char *host, const char *port, int passive,
                            uint64_t deadline, struct addrs *as)
{
    struct lookup *l = calloc(1, sizeof *l);
    fut_future *f = NULL, *t = NULL;
    uint64_t now;
    int rc, err = 0;

    if (l == NULL)
        return ENOMEM;
    atomic_init(&l->refs, 2);
    l->passive = passive;
    l->host = host != NULL ? strdup(host) : NULL;
    l->port = strdup(port);
    l->done = fut_promise_new(rt);
    if ((host != NULL && l->host == NULL) || l->port == NULL || l->done == NULL ||
        (f = fut_promise_future(l->done)) == NULL) {
        if (l->done != NULL)
            fut_promise_resolve(l->done, NULL); /* not a broken promise: nobody waits */
        atomic_store(&l->refs, 1);
        lookup_unref(l);
        return ENOMEM;
    }
    rc = fut_pool_submit(rt->pool, FUT_LANE_BLOCKING, &l->job, lookup_job);
    if (rc != 0) {
        fut_release(f);
        fut_promise_resolve(l->done, NULL);
        atomic_store(&l->refs, 1);
        lookup_unref(l);
        return rc;
    }
    if (deadline != FUT__NO_DEADLINE) {
        now = fut__now_ns();
        t = fut_timeout(f, now < deadline ? (double)(deadline - now) / 1e9 : 0);
        if (t == NULL)
            err = ENOMEM;
    }
    if (err == 0)
        (void)fut_await(t != NULL ? t : f, &err);
    fut_release(t);
    fut_release(f);
    if (err == 0) {
        rc = l->rc;
        if (rc == EAI_SYSTEM)
            errno = l->err;
        err = rc != 0 ? gai_code(rc) : addrs_from(as, l->res);
    }
    lookup_unref(l);
    return err;
}

/* The addresses of host:port: 0 or an errno (EDEADLK: a lookup would be
 * needed in a plain continuation, where it would block the dispatcher). */
static int resolve(const char *host, const char *port, int passive, uint64_t deadline,
                   struct addrs *as)
{
    struct addrinfo *res = NULL;
    int rc;

    memset(as, 0, sizeof *as);
    if (numeric(host, port, as))
        return 0;
    if (fut__io_mode() == FUT__IO_REFUSE)
        return EDEADLK;
    if (fut__coro_running != NULL)
        return lookup_offloaded(fut__coro_running->rt, host, port, passive, deadline, as);
    errno = 0;
    rc = gai(host, port, passive, &res);
    if (rc != 0)
        return gai_code(rc);
    rc = addrs_from(as, res);
    freeaddrinfo(res);
    return rc;
}

int fut_tcp_connect(const char *host, const char *port, double timeout_s)
{
    struct addrs as;
    uint64_t dl;
    size_t i;
    int rc, s, last = -ECONNREFUSED, one = 1;

    if (host == NULL || port == NULL || fut__io_deadline(timeout_s, &dl) != 0)
        return -EINVAL;
    if (fut__io_mode() == FUT__IO_REFUSE)
        return -EDEADLK;
    if ((rc = resolve(host, port, 0, dl, &as)) != 0)
        return -rc;
    for (i = 0; i < as.n; i++) {
        s = socket(as.a[i].family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s < 0) {
            last = -errno;
            continue;
        }
        rc = fut__io_connect(s, (struct sockaddr *)&as.a[i].ss, as.a[i].len, dl, 1);
        if (rc == 0) {
            (void)setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            addrs_free(&as);
            return s;
        }
        fut_close(s);
        last = rc;
        if (rc == -ETIMEDOUT || rc == -ECANCELED || rc == -FUT_EFORKED)
            break;
    }
    addrs_free(&as);
    return last;
}

int fut_tcp_listen(const char *host, const char *port, int backlog)
{
    struct addrs as;
    size_t i;
    int rc, s, last = -EADDRNOTAVAIL, one = 1, zero = 0;

    if (port == NULL)
        return -EINVAL;
    if ((rc = resolve(host, port, 1, FUT__NO_DEADLINE, &as)) != 0)
        return -rc;
    if (backlog <= 0)
        backlog = SOMAXCONN;
    for (i = 0; i < as.n; i++) {
        s = socket(as.a[i].family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (s < 0) {
            last = -errno;
            continue;
        }
        (void)setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (as.a[i].family == AF_INET6 && host == NULL)
            (void)setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        if (bind(s, (struct sockaddr *)&as.a[i].ss, as.a[i].len) == 0 && listen(s, backlog) == 0) {
            addrs_free(&as);
            return s;
        }
        last = -errno;
        close(s);
    }
    addrs_free(&as);
    return last;
}

int fut_local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;

    if (fd < 0)
        return -EBADF;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return -errno;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return -EAFNOSUPPORT;
}
