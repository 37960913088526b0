/* futex_linux.c - the futex calls of sys.h (Linux's FUTEX_*_PRIVATE).
 * Nothing else: the protocols that use them are their callers'. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "sys/sys.h"

#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

void fut__futex_wait(atomic_uint *word, unsigned expected)
{
    /* EAGAIN (value changed) and EINTR are normal: callers re-check. */
    syscall(SYS_futex, (unsigned *)word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

int fut__futex_wait_until(atomic_uint *word, unsigned expected, const struct timespec *deadline)
{
    long rc;

    if (deadline == NULL) {
        fut__futex_wait(word, expected);
        return 0;
    }
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline. */
    rc = syscall(SYS_futex, (unsigned *)word, FUTEX_WAIT_BITSET_PRIVATE, expected, deadline, NULL,
                 FUTEX_BITSET_MATCH_ANY);
    return rc == -1 && errno == ETIMEDOUT ? ETIMEDOUT : 0;
}

void fut__futex_wake(atomic_uint *word, int n)
{
    syscall(SYS_futex, (unsigned *)word, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}
