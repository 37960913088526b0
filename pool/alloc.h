/* alloc.h - the library's internal allocation calls, with a failure hook
 * for tests (every allocation the library makes goes through here). */
#ifndef FUT_POOL_ALLOC_H
#define FUT_POOL_ALLOC_H

#include <stdarg.h>
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
/* vasprintf and strdup through the hook (the size asked is the format's
 * or the string's length): NULL when refused or out of memory. Free the
 * result with fut__free (it is free). */
char *fut__vasprintf(const char *fmt, va_list ap);
char *fut__asprintf(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
char *fut__strdup(const char *s);

/* Test hook for thread creation: called before each pthread_create the
 * library makes; a nonzero return (an errno code) fails that creation
 * with it, as pthread_create would. The hook may sleep (a slow failure).
 * NULL restores normal creation. Any thread. */
typedef int (*fut__thread_hook_fn)(void);
void fut__thread_set_hook(fut__thread_hook_fn hook);
int fut__thread_refused(void); /* 0, or the hook's errno code */

#endif
