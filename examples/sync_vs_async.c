/* sync_vs_async.c - the waiting problem: three 1 s tasks one after another
 * (3 s), then the same three at once (1 s).
 * cc sync_vs_async.c $(pkg-config --cflags --libs futures)
 *
 * Await style: coroutines (fut_async, fut_await, fut_run) that read like
 * the Python lesson line by line. fetch_data_callbacks.c shows the
 * callback style (fut_then, fut_catch); docs/TUTORIAL.md compares them. */
#define _POSIX_C_SOURCE 200809L /* nanosleep, clock_gettime */

#include <futures.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

enum { N_TASKS = 3 };

static double now(void) /* time.perf_counter() */
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t); /* cannot fail for this clock */
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* In main's coroutine: say why on stderr, then fail it with code (fut_run
 * returns the code only, not the message). */
static void *failed(int code, const char *what, const char *why)
{
    fprintf(stderr, "sync_vs_async: %s failed: %s\n", what, why);
    return fut_raise(code, "%s: %s", what, why);
}

/* def sync_task(name, delay): time.sleep(delay); return f"{name} done"
 * The thread does nothing else while it sleeps. */
static void sync_task(const char *name, double delay, char *result, size_t size)
{
    struct timespec left = { (time_t)delay, (long)((delay - (double)(time_t)delay) * 1e9) };
    while (nanosleep(&left, &left) != 0 && errno == EINTR)
        ;
    snprintf(result, size, "%s done", name);
}

/* The arguments of one async_task, and room for the string it returns
 * (static: a task may outlive main's coroutine if that one fails). */
static struct task {
    const char *name;
    double delay;
    char result[16];
} tasks[N_TASKS] = { { "A", 1.0, "" }, { "B", 1.0, "" }, { "C", 1.0, "" } };

/* async def async_task(name, delay):
 *     await asyncio.sleep(delay)   # non-blocking wait
 *     return f"{name} done" */
static void *async_task(void *arg)
{
    struct task *t = arg;
    fut_future *nap;
    int err;
    if ((nap = fut_sleep(NULL, t->delay)) == NULL) /* raise: main says why */
        return fut_raise(errno, "%s: fut_sleep: %s", t->name, strerror(errno));
    fut_await(nap, &err); /* only this coroutine waits: a timer, no thread */
    fut_release(nap);
    if (err != 0)
        return fut_raise(err, "%s: await asyncio.sleep: %s", t->name, strerror(err));
    snprintf(t->result, sizeof t->result, "%s done", t->name);
    return t->result;
}

/* async def main() */
static void *async_main(void *arg)
{
    fut_future *fs[N_TASKS] = { NULL }, *all = NULL;
    void **results;
    double start = now();
    int i, err;
    (void)arg;
    /* results = await asyncio.gather(async_task("A", 1), async_task("B", 1), ...) */
    for (i = 0; i < N_TASKS; i++)
        if ((fs[i] = fut_async(NULL, async_task, &tasks[i])) == NULL) {
            failed(errno, "fut_async", strerror(errno));
            goto out;
        }
    if ((all = fut_gather(NULL, fs, N_TASKS, 0)) == NULL) {
        failed(errno, "fut_gather", strerror(errno));
        goto out;
    }
    results = fut_await(all, &err);
    if (err != 0) {
        failed(err, "the gather", fut_message(all));
        goto out;
    }
    printf("Async: %.2fs\n", now() - start);
    for (i = 0; i < N_TASKS; i++) /* print(results) */
        printf("%s\n", (const char *)results[i]);
out:
    fut_release(all); /* NULL is a no-op */
    for (i = 0; i < N_TASKS; i++)
        fut_release(fs[i]);
    return NULL; /* after a failed(), the raise decides: main() fails */
}

int main(void)
{
    char r[N_TASKS][16];
    double start = now();
    int i, err;

    /* Synchronous: 1 + 1 + 1 seconds. */
    for (i = 0; i < N_TASKS; i++)
        sync_task(tasks[i].name, tasks[i].delay, r[i], sizeof r[i]);
    printf("Sync:  %.2fs\n", now() - start);

    /* Asynchronous: about 1 second, all three at once.
     * asyncio.run(main()): NULL is the default runtime, made on first use. */
    if ((err = fut_run(NULL, async_main, NULL, NULL)) != 0) {
        fprintf(stderr, "sync_vs_async: main() failed: %s\n", strerror(err));
        return 1;
    }
    return 0;
}
