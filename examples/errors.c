/* errors.c - errors in async code: catch one, gather without failing on
 * one, and a task started now and awaited later.
 * cc errors.c $(pkg-config --cflags --libs futures)
 *
 * Await style: coroutines (fut_async, fut_await, fut_run) that read like
 * the Python lesson line by line. fetch_data_callbacks.c shows the
 * callback style (fut_then, fut_catch); docs/TUTORIAL.md compares them.
 *
 * `raise` becomes fut_raise (the coroutine's future is rejected with a
 * code and a message; ValueError is EINVAL here); `try`/`except` becomes
 * the err of fut_await; gather(return_exceptions=True) becomes fut_gather
 * with FUT_SETTLED. Values are ints carried in the void * of a future. */
#include <futures.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* In main's coroutine: say why on stderr, fail it with code (fut_run
 * returns the code only, not the message), and return code. */
static int failed(int code, const char *what, const char *why)
{
    fprintf(stderr, "errors: %s failed: %s\n", what, why);
    fut_raise(code, "%s: %s", what, why);
    return code;
}

/* async def risky(n) */
static void *risky(void *arg)
{
    intptr_t n = (intptr_t)arg;
    fut_future *nap;
    int err;
    if (n == 0)
        return fut_raise(EINVAL, "Can't process zero"); /* raise ValueError(...) */
    if ((nap = fut_sleep(NULL, 0.1)) == NULL)
        return fut_raise(errno, "risky(%d): fut_sleep: %s", (int)n, strerror(errno));
    fut_await(nap, &err); /* await asyncio.sleep(0.1) */
    fut_release(nap);
    if (err != 0)
        return fut_raise(err, "risky(%d): await asyncio.sleep: %s", (int)n, strerror(err));
    return (void *)(n * 10);
}

/* try:
 *     result = await risky(0)
 * except ValueError as e:
 *     print(f"Caught: {e}") */
static int try_except(void)
{
    fut_future *f = fut_async(NULL, risky, (void *)0);
    int err;
    if (f == NULL)
        return failed(errno, "fut_async", strerror(errno));
    fut_await(f, &err); /* the result (NULL: it failed) is not used */
    if (err == EINVAL) {
        printf("Caught: %s\n", fut_message(f));
        err = 0;
    } else if (err != 0) /* not a ValueError: it goes on up, as in Python */
        err = failed(err, "risky(0)", fut_message(f));
    fut_release(f);
    return err;
}

/* results = await asyncio.gather(risky(1), risky(0), risky(3),
 *                                return_exceptions=True)
 * for r in results: ... */
static int gather_settled(void)
{
    static const intptr_t ns[3] = { 1, 0, 3 };
    fut_future *fs[3] = { NULL }, *all = NULL, *r;
    void **results;
    int i, err;
    for (i = 0; i < 3; i++)
        if ((fs[i] = fut_async(NULL, risky, (void *)ns[i])) == NULL) {
            err = failed(errno, "fut_async", strerror(errno));
            goto out;
        }
    if ((all = fut_gather(NULL, fs, 3, FUT_SETTLED)) == NULL) {
        err = failed(errno, "fut_gather", strerror(errno));
        goto out;
    }
    results = fut_await(all, &err); /* FUT_SETTLED: only a cancel fails it */
    if (err != 0) {
        err = failed(err, "the gather", fut_message(all));
        goto out;
    }
    for (i = 0; i < 3; i++) {
        if ((r = fut_gather_item(all, (size_t)i)) == NULL) { /* borrowed */
            err = failed(errno, "fut_gather_item", strerror(errno));
            goto out;
        }
        if (fut_error(r) != 0) /* isinstance(r, Exception) */
            printf("  Error: %s\n", fut_message(r));
        else
            printf("  Result: %d\n", (int)(intptr_t)results[i]);
    }
out:
    fut_release(all); /* NULL is a no-op */
    for (i = 0; i < 3; i++)
        fut_release(fs[i]);
    return err;
}

/* task = asyncio.create_task(risky(5))
 * print("Task created, doing other work...")
 * result = await task
 * print(f"Task result: {result}") */
static int task_later(void)
{
    fut_future *task = fut_async(NULL, risky, (void *)5); /* it starts at our next await */
    void *result;
    int err;
    if (task == NULL)
        return failed(errno, "fut_async", strerror(errno));
    printf("Task created, doing other work...\n");
    result = fut_await(task, &err);
    if (err != 0)
        err = failed(err, "the task", fut_message(task));
    else
        printf("Task result: %d\n", (int)(intptr_t)result);
    fut_release(task);
    return err;
}

/* async def main(): the three parts, in order. A part that fails has
 * raised (failed()): main() stops there and fails with that error. */
static void *async_main(void *arg)
{
    (void)arg;
    if (try_except() == 0 && gather_settled() == 0)
        task_later();
    return NULL;
}

int main(void)
{
    /* asyncio.run(main()): NULL is the default runtime, made on first use. */
    int err = fut_run(NULL, async_main, NULL, NULL);
    if (err != 0) {
        fprintf(stderr, "errors: main() failed: %s\n", strerror(err));
        return 1;
    }
    return 0;
}
