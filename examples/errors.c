/* errors.c - errors in async code: catch one, gather without failing on
 * one, and a task started now and used later.
 * cc errors.c $(pkg-config --cflags --libs futures)
 *
 * A raise becomes a rejected future (fut_raise inside work or a
 * continuation); `except` becomes fut_catch; gather(return_exceptions=True)
 * becomes fut_gather with FUT_SETTLED. Values are ints carried in the
 * void * of a future. */
#include <futures.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define TIMEOUT 10.0 /* seconds main waits before it calls it a hang */

static fut_runtime *rt; /* the event loop */

static int failed(const char *what, int err)
{
    fprintf(stderr, "errors: %s failed: %s\n", what, strerror(err));
    return 1;
}

/* raise ValueError("Can't process zero"), as work on a pool thread. */
static void *raise_zero(void *arg)
{
    (void)arg;
    return fut_raise(EINVAL, "Can't process zero");
}

/* The rest of risky after `await asyncio.sleep(0.1)`: return n * 10. */
static void *times_ten(void *value, void *n)
{
    (void)value; /* a sleep resolves with NULL */
    return (void *)(intptr_t)((intptr_t)n * 10);
}

/* async def risky(n) */
static fut_future *risky(int n)
{
    fut_future *nap, *f;
    if (n == 0)
        return fut_submit(rt, raise_zero, NULL);
    if ((nap = fut_sleep(rt, 0.1)) == NULL)
        return NULL;
    f = fut_then(nap, times_ten, (void *)(intptr_t)n);
    fut_release(nap); /* the continuation keeps its own reference */
    return f;
}

/* except ValueError as e: print(f"Caught: {e}") -- on the dispatcher.
 * Any other error is raised again, as Python would let it through. */
static void *caught(int code, const char *message, void *arg)
{
    (void)arg;
    if (code != EINVAL)
        return fut_raise(code, "%s", message);
    printf("Caught: %s\n", message);
    return NULL;
}

/* Wait for f; 0 if it resolved, else print why and return 1. */
static int wait_ok(fut_future *f, const char *what)
{
    int err = fut_wait(f, TIMEOUT);
    if (err != 0)
        return failed(what, err);
    if ((err = fut_error(f)) != 0) {
        fprintf(stderr, "errors: %s failed: %s\n", what, fut_message(f));
        return 1;
    }
    return 0;
}

/* try: result = await risky(0)  except ValueError as e: ... */
static int try_except(void)
{
    fut_future *r0, *handled;
    int rc;
    if ((r0 = risky(0)) == NULL)
        return failed("risky(0)", errno);
    if ((handled = fut_catch(r0, caught, NULL)) == NULL)
        rc = failed("fut_catch", errno);
    else
        rc = wait_ok(handled, "the try block"); /* resolves once caught() ran */
    fut_release(handled);
    fut_release(r0);
    return rc;
}

/* results = await asyncio.gather(risky(1), risky(0), risky(3),
 *                                return_exceptions=True) */
static int gather_settled(void)
{
    static const int ns[3] = { 1, 0, 3 };
    fut_future *fs[3] = { NULL }, *all = NULL, *item;
    int i, rc = 0;
    for (i = 0; i < 3 && rc == 0; i++)
        if ((fs[i] = risky(ns[i])) == NULL)
            rc = failed("risky", errno);
    if (rc == 0 && (all = fut_gather(rt, fs, 3, FUT_SETTLED)) == NULL)
        rc = failed("fut_gather", errno);
    if (rc == 0)
        rc = wait_ok(all, "the gather"); /* FUT_SETTLED: it never rejects */
    for (i = 0; i < 3 && rc == 0; i++) {
        if ((item = fut_gather_item(all, (size_t)i)) == NULL)
            rc = failed("fut_gather_item", errno);
        else if (fut_error(item) != 0) /* isinstance(r, Exception) */
            printf("  Error: %s\n", fut_message(item));
        else
            printf("  Result: %d\n", (int)(intptr_t)fut_value(item));
    }
    fut_release(all);
    for (i = 0; i < 3; i++)
        fut_release(fs[i]);
    return rc;
}

/* task = asyncio.create_task(risky(5)); ...; result = await task */
static int task_later(void)
{
    fut_future *task;
    int rc;
    if ((task = risky(5)) == NULL) /* it runs from now on */
        return failed("risky(5)", errno);
    printf("Task created, doing other work...\n");
    if ((rc = wait_ok(task, "the task")) == 0)
        printf("Task result: %d\n", (int)(intptr_t)fut_value(task));
    fut_release(task);
    return rc;
}

int main(void)
{
    int rc, err;
    if ((rt = fut_runtime_new(NULL)) == NULL)
        return failed("fut_runtime_new", errno);
    if ((rc = try_except()) == 0 && (rc = gather_settled()) == 0)
        rc = task_later();
    if ((err = fut_runtime_free(rt)) != 0)
        rc = failed("fut_runtime_free", err);
    return rc;
}
