/* alloc.c - internal allocation with a test failure hook. */
#include "pool/alloc.h"

#include <stdatomic.h>
#include <stdlib.h>

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
