/* alloc.c - internal allocation with a test failure hook: every
 * allocation the library makes (malloc, calloc, posix_memalign, vasprintf,
 * strdup, and, through fut__alloc_refused, the mmap of a coroutine stack)
 * and every thread it starts asks the hooks first. Not the allocator of
 * futures themselves (futures/mem.c, which asks once per chunk). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "pool/alloc.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Atomic(fut__alloc_hook_fn) hook;

void fut__alloc_set_hook(fut__alloc_hook_fn fn)
{
    atomic_store_explicit(&hook, fn, memory_order_release);
}

static int refused(size_t size)
{
    fut__alloc_hook_fn fn = atomic_load_explicit(&hook, memory_order_acquire);
    return fn != NULL && fn(size) != 0;
}

int fut__alloc_refused(size_t size)
{
    return refused(size);
}

void *fut__malloc(size_t size)
{
    return refused(size) ? NULL : malloc(size);
}

void *fut__calloc(size_t n, size_t size)
{
    return refused(n * size) ? NULL : calloc(n, size);
}

void *fut__aligned_alloc(size_t align, size_t size)
{
    void *p;

    if (refused(size) || posix_memalign(&p, align, size) != 0)
        return NULL;
    return p;
}

void fut__free(void *p)
{
    free(p);
}

char *fut__vasprintf(const char *fmt, va_list ap)
{
    char *s = NULL;

    if (fmt == NULL || refused(strlen(fmt) + 1) || vasprintf(&s, fmt, ap) < 0)
        return NULL;
    return s;
}

char *fut__asprintf(const char *fmt, ...)
{
    va_list ap;
    char *s;

    va_start(ap, fmt);
    s = fut__vasprintf(fmt, ap);
    va_end(ap);
    return s;
}

char *fut__strdup(const char *s)
{
    if (s == NULL || refused(strlen(s) + 1))
        return NULL;
    return strdup(s);
}

static _Atomic(fut__thread_hook_fn) thread_hook;

void fut__thread_set_hook(fut__thread_hook_fn fn)
{
    atomic_store_explicit(&thread_hook, fn, memory_order_release);
}

int fut__thread_refused(void)
{
    fut__thread_hook_fn fn = atomic_load_explicit(&thread_hook, memory_order_acquire);
    return fn != NULL ? fn() : 0;
}
