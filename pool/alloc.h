/* alloc.h - the library's internal allocation calls, with a failure hook
 * for tests (every allocation the library makes goes through here). */
#ifndef FUT_POOL_ALLOC_H
#define FUT_POOL_ALLOC_H

#include <stddef.h>

/* Test hook: called before each allocation with its size; returning
 * nonzero makes that allocation fail as if memory were exhausted. */
typedef int (*fut__alloc_hook_fn)(size_t size);

/* Install hook (NULL restores normal allocation). Any thread. */
void fut__alloc_set_hook(fut__alloc_hook_fn hook);

/* Whether the hook refuses an allocation of size (for allocators built
 * on top of these calls, which must ask once per object). */
int fut__alloc_refused(size_t size);

void *fut__malloc(size_t size);
void *fut__calloc(size_t n, size_t size);
/* size bytes aligned to align (a power of two, at least sizeof(void *)). */
void *fut__aligned_alloc(size_t align, size_t size);
void fut__free(void *p);

#endif
