/* mem.c - memory for futures: per-thread caches of fixed-size blocks.
 *
 * DESIGN
 *
 * Every future is one block of FUT__SIZE_SMALL (56) or FUT__SIZE_LARGE
 * (80) bytes: two size classes, each with the machinery below. malloc/free cost
 * 15-50 ns per future when one thread allocates and another frees, and a
 * burst of futures makes glibc grow a thread's arena a page or so at a
 * time (an mprotect and page faults each time). So futures come from
 * here instead, in the shape of tcmalloc's thread caches:
 *
 *   - Each thread keeps a private free list (no lock, no atomic). A free
 *     goes to the freeing thread's list, whoever allocated the block.
 *   - Lists move between threads in batches of BATCH blocks through a
 *     central stack of batches under one mutex: a thread whose list is
 *     empty takes a batch; a thread whose list holds 2 * BATCH gives one
 *     back. So the lock is taken at most once per BATCH blocks, and a
 *     thread that only frees (a pool worker dropping the last reference)
 *     passes its blocks on to the thread that only allocates.
 *   - With no batch left, blocks are cut from the current chunk; chunks
 *     come from malloc (so leak checkers see them as reachable heap),
 *     grow from 64 KiB to 2 MiB (then huge pages, where THP allows), and
 *     are faulted in with one madvise(MADV_POPULATE_WRITE) rather than a
 *     fault per page (see new_chunk).
 *   - A thread's list goes back to the central stack when the thread
 *     exits (a pthread key destructor).
 *
 * Memory is kept for reuse for the life of the process, as malloc keeps
 * its arenas: the peak number of futures alive at once, times
 * its block size, plus at most 2 * BATCH blocks per thread.
 *
 * Builds with AddressSanitizer use malloc and free instead, so that a
 * use after free of a future is still caught. Every allocation passes
 * the test failure hook of pool/alloc.h first.
 *
 * Fork: the central mutex is taken around fork() (pthread_atfork), as
 * malloc does with its own, so a child never inherits it locked.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "futures/internal.h"
#include "pool/alloc.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#if defined(__SANITIZE_ADDRESS__)
#define USE_MALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define USE_MALLOC 1
#endif
#endif

#ifndef MADV_HUGEPAGE
#define MADV_HUGEPAGE 14
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; older kernels say EINVAL: harmless */
#endif

#ifdef USE_MALLOC

void *fut__obj_alloc(int large)
{
    return fut__malloc(large ? FUT__SIZE_LARGE : FUT__SIZE_SMALL);
}

void fut__obj_free(void *p, int large)
{
    (void)large;
    fut__free(p);
}

#else

#define BATCH 64                       /* blocks moved to or from the centre at once */
#define CHUNK_MIN ((size_t)64 << 10)   /* first chunk */
#define CHUNK_MAX ((size_t)2 << 20)    /* chunks double up to this: one huge page */

/* A free block: the first word links the list; a batch's first block
 * also links the next batch in the central stack. */
struct block {
    struct block *next;       /* next free block of this list or batch */
    struct block *next_batch; /* central stack: the next batch (first block only) */
};

/* A thread's cache of one size. */
struct cache {
    struct block *head; /* free blocks */
    unsigned n;         /* how many */
};

/* A size class: its blocks' size and its central state. */
struct sclass {
    size_t size;              /* bytes per block */
    struct block *batches;    /* stack of full batches (under central_lock) */
    char *cut, *cut_end;      /* unused part of its newest chunk (under central_lock) */
    size_t next_chunk;        /* size of its next chunk (under central_lock) */
};

/* A chunk header, so that chunks stay reachable from a global. */
struct chunk {
    struct chunk *next; /* every chunk ever made */
};

static pthread_mutex_t central_lock = PTHREAD_MUTEX_INITIALIZER;
static struct chunk *chunks;   /* every chunk (under central_lock) */
static struct sclass classes[2] = {
    { FUT__SIZE_SMALL, NULL, NULL, NULL, CHUNK_MIN },
    { FUT__SIZE_LARGE, NULL, NULL, NULL, CHUNK_MIN },
};

static _Thread_local struct cache caches[2]; /* small, large */
static _Thread_local int registered; /* the key destructor will flush the caches */
static pthread_key_t cache_key;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void give_back(struct sclass *sc, struct block *head);

/* End the list at its k-th block (k >= 1, the list that long); returns
 * the rest. */
static struct block *split(struct block *head, unsigned k)
{
    struct block *rest;

    while (--k > 0)
        head = head->next;
    rest = head->next;
    head->next = NULL;
    return rest;
}

/* Thread exit: hand the lists to the centre, a batch (possibly short) at
 * a time; short batches are fine, a batch is only a list. */
static void cache_flush(void *unused)
{
    int c;

    (void)unused;
    for (c = 0; c < 2; c++) {
        struct cache *cache = &caches[c];
        while (cache->n > 0) {
            unsigned k = cache->n < BATCH ? cache->n : BATCH;
            struct block *h = cache->head;

            cache->head = split(h, k);
            cache->n -= k;
            give_back(&classes[c], h);
        }
    }
    registered = 0;
}

static void atfork_prepare(void)
{
    fut__lock(&central_lock);
}

static void atfork_release(void)
{
    fut__unlock(&central_lock);
}

static void init_once(void)
{
    if (pthread_key_create(&cache_key, cache_flush) != 0)
        fut__die("pthread_key_create", ENOMEM);
    pthread_atfork(atfork_prepare, atfork_release, atfork_release);
}

static void give_back(struct sclass *sc, struct block *head)
{
    fut__lock(&central_lock);
    head->next_batch = sc->batches;
    sc->batches = head;
    fut__unlock(&central_lock);
}

/* Start a new chunk (under central_lock). Chunks are page aligned and
 * faulted in whole by one madvise; from CHUNK_MAX on they are huge-page
 * aligned and asked for huge pages (where the kernel's THP mode allows):
 * a first touch of memory is the dearest part of a burst of futures
 * (in a VM with shadow paging, microseconds a 4 KiB page, far less per
 * byte for a huge page: bench/first_touch measures it; docs/PERFORMANCE.md,
 * W1). Returns 0 or ENOMEM. */
static int new_chunk(struct sclass *sc)
{
    size_t size = sc->next_chunk;
    size_t align = size >= CHUNK_MAX ? CHUNK_MAX : 4096;
    void *mem;
    struct chunk *c;

    if (posix_memalign(&mem, align, size) != 0)
        return ENOMEM;
    if (size >= CHUNK_MAX)
        (void)madvise(mem, size, MADV_HUGEPAGE);
    (void)madvise(mem, size, MADV_POPULATE_WRITE);
    c = mem;
    c->next = chunks;
    chunks = c;
    sc->cut = (char *)mem + FUT__CACHELINE; /* the header's line */
    sc->cut_end = (char *)mem + size;
    if (sc->next_chunk < CHUNK_MAX)
        sc->next_chunk *= 2;
    return 0;
}

/* Refill the empty cache: a batch from the centre, else blocks cut from
 * a chunk. Returns 0 or ENOMEM. */
static int refill(int c)
{
    struct sclass *sc = &classes[c];
    struct cache *cache = &caches[c];
    struct block *b;
    unsigned i;

    if (!registered) {
        pthread_once(&once, init_once);
        /* A thread that cannot register still works; it only keeps its
         * last blocks when it exits. */
        registered = pthread_setspecific(cache_key, caches) == 0;
    }
    fut__lock(&central_lock);
    if (sc->batches != NULL) {
        b = sc->batches;
        sc->batches = b->next_batch;
        fut__unlock(&central_lock);
        cache->head = b;
        for (i = 0; b != NULL; b = b->next)
            i++;
        cache->n = i;
        return 0;
    }
    if ((size_t)(sc->cut_end - sc->cut) < BATCH * sc->size && new_chunk(sc) != 0) {
        fut__unlock(&central_lock);
        return ENOMEM;
    }
    b = NULL;
    for (i = 0; i < BATCH; i++) {
        struct block *blk = (struct block *)(void *)sc->cut;
        sc->cut += sc->size;
        blk->next = b;
        b = blk;
    }
    fut__unlock(&central_lock);
    cache->head = b;
    cache->n = BATCH;
    return 0;
}

void *fut__obj_alloc(int large)
{
    struct cache *cache = &caches[large != 0];
    struct block *b;

    if (fut__unlikely(fut__alloc_refused(classes[large != 0].size)))
        return NULL;
    if (fut__unlikely(cache->n == 0) && refill(large != 0) != 0)
        return NULL;
    b = cache->head;
    cache->head = b->next;
    cache->n--;
    return b;
}

void fut__obj_free(void *p, int large)
{
    struct cache *cache = &caches[large != 0];
    struct block *b = p;

    if (p == NULL)
        return;
    b->next = cache->head;
    cache->head = b;
    if (fut__unlikely(++cache->n >= 2 * BATCH)) {
        /* Keep the BATCH most recently freed (warm in cache), give the
         * older BATCH back. */
        struct block *rest = split(b, BATCH);

        cache->n -= BATCH;
        give_back(&classes[large != 0], rest);
    }
}

#endif
