/* sync.h - thin wrappers over pthreads and the Linux futex.
 *
 * Pthread calls that cannot fail in a correct program abort with a clear
 * message (a failure there means memory corruption or a library bug, and
 * carrying on would hang or corrupt more); resource failures are returned
 * by the callers that can meet them. */
#ifndef FUT_POOL_SYNC_H
#define FUT_POOL_SYNC_H

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "sys/sys.h"

#define FUT__CACHELINE 64
#define fut__likely(x) __builtin_expect(!!(x), 1)
#define fut__unlikely(x) __builtin_expect(!!(x), 0)

_Noreturn void fut__die(const char *what, int rc);

static inline void fut__lock(pthread_mutex_t *m)
{
    int rc = pthread_mutex_lock(m);
    if (rc != 0)
        fut__die("pthread_mutex_lock", rc);
}

static inline void fut__unlock(pthread_mutex_t *m)
{
    int rc = pthread_mutex_unlock(m);
    if (rc != 0)
        fut__die("pthread_mutex_unlock", rc);
}

static inline void fut__cond_signal(pthread_cond_t *c)
{
    int rc = pthread_cond_signal(c);
    if (rc != 0)
        fut__die("pthread_cond_signal", rc);
}

static inline void fut__cond_broadcast(pthread_cond_t *c)
{
    int rc = pthread_cond_broadcast(c);
    if (rc != 0)
        fut__die("pthread_cond_broadcast", rc);
}

/* Waits until signalled or until the absolute CLOCK_MONOTONIC deadline
 * (the condition must have been made by fut__cond_init). Returns 0 or
 * ETIMEDOUT. */
int fut__cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *deadline);
void fut__cond_wait(pthread_cond_t *c, pthread_mutex_t *m);
/* Condition variables here time out on CLOCK_MONOTONIC. Returns 0 or an errno. */
int fut__cond_init(pthread_cond_t *c);

/* The futex calls (fut__futex_wait, _wait_until, _wake) are in sys/sys.h. */

/* Now + ms on CLOCK_MONOTONIC. */
void fut__deadline_ms(struct timespec *ts, unsigned ms);

static inline void fut__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

#endif
