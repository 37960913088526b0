/* sync_vs_async.c - the waiting problem: three 1 s tasks one after another
 * (3 s), then the same three at once (1 s).
 * cc sync_vs_async.c $(pkg-config --cflags --libs futures)
 *
 * Python:  results = await asyncio.gather(async_task("A", 1), ...)
 * Here:    no await yet, so each task is a fut_sleep continued with
 *          fut_then (the code after the await), the three are combined
 *          with fut_gather, and main blocks in fut_wait for the gather. */
#define _POSIX_C_SOURCE 200809L /* nanosleep, clock_gettime */

#include <futures.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

enum { N_TASKS = 3 };

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t); /* cannot fail for this clock */
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int failed(const char *what, int err)
{
    fprintf(stderr, "sync_vs_async: %s failed: %s\n", what, strerror(err));
    return 1;
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

/* One async_task: its name, and room for the string it returns. */
struct task {
    const char *name;
    char result[16];
};

/* The rest of async_task after `await asyncio.sleep(delay)`: runs on the
 * dispatcher thread once the sleep is over. Its return value resolves the
 * future that fut_then made. */
static void *task_done(void *value, void *arg)
{
    struct task *t = arg;
    (void)value; /* a sleep resolves with NULL */
    snprintf(t->result, sizeof t->result, "%s done", t->name);
    return t->result;
}

/* async def async_task(name, delay): await asyncio.sleep(delay); return ... */
static fut_future *async_task(fut_runtime *rt, struct task *t, double delay)
{
    fut_future *nap = fut_sleep(rt, delay), *f;
    if (nap == NULL)
        return NULL;
    f = fut_then(nap, task_done, t);
    fut_release(nap); /* the continuation keeps its own reference */
    return f;
}

static int run(fut_runtime *rt, struct task *tasks)
{
    fut_future *fs[N_TASKS] = { NULL }, *all = NULL;
    char r[N_TASKS][16];
    void **results;
    double start;
    int i, err, rc = 1;

    /* Synchronous: 1 + 1 + 1 seconds. */
    start = now();
    for (i = 0; i < N_TASKS; i++)
        sync_task(tasks[i].name, 1.0, r[i], sizeof r[i]);
    printf("Sync:  %.2fs\n", now() - start);

    /* Asynchronous: three timers on the dispatcher at once; no thread sleeps. */
    start = now();
    for (i = 0; i < N_TASKS; i++)
        if ((fs[i] = async_task(rt, &tasks[i], 1.0)) == NULL) {
            rc = failed("async_task", errno);
            goto out;
        }
    if ((all = fut_gather(rt, fs, N_TASKS, 0)) == NULL) { /* asyncio.gather */
        rc = failed("fut_gather", errno);
        goto out;
    }
    if ((err = fut_wait(all, 10.0)) != 0) { /* block until done (10 s: a hang) */
        rc = failed("fut_wait", err);
        goto out;
    }
    if ((err = fut_error(all)) != 0) {
        fprintf(stderr, "sync_vs_async: the gather failed: %s\n", fut_message(all));
        goto out;
    }
    printf("Async: %.2fs\n", now() - start);
    results = fut_value(all); /* the values in input order, owned by `all` */
    for (i = 0; i < N_TASKS; i++)
        printf("%s\n", (const char *)results[i]);
    rc = 0;
out:
    fut_release(all);
    for (i = 0; i < N_TASKS; i++)
        fut_release(fs[i]); /* NULL is a no-op */
    return rc;
}

int main(void)
{
    /* Continuations write into these: they live until the runtime is freed. */
    struct task tasks[N_TASKS] = { { "A", "" }, { "B", "" }, { "C", "" } };
    fut_runtime *rt = fut_runtime_new(NULL); /* the event loop: a dispatcher and a pool */
    int rc, err;
    if (rt == NULL)
        return failed("fut_runtime_new", errno);
    rc = run(rt, tasks);
    if ((err = fut_runtime_free(rt)) != 0)
        rc = failed("fut_runtime_free", err);
    return rc;
}
