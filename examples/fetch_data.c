/* fetch_data.c - simulated requests, one after another, then all at once.
 * cc fetch_data.c $(pkg-config --cflags --libs futures)
 *
 * Await style: coroutines (fut_async, fut_await, fut_run) that read like
 * the Python lesson line by line. fetch_data_callbacks.c is the same
 * program in the callback style (fut_then, fut_catch); docs/TUTORIAL.md
 * says when to prefer which. */
#include <futures.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* In main's coroutine: say why on stderr, then fail it with code (fut_run
 * returns the code only, not the message). */
static void *failed(int code, const char *what, const char *why)
{
    fprintf(stderr, "fetch_data: %s failed: %s\n", what, why);
    return fut_raise(code, "%s: %s", what, why);
}

/* async def fetch_data(url, delay): simulates an HTTP request.
 * A plain function that awaits: called from a coroutine, it runs in that
 * coroutine, as `await fetch_data(...)` does in Python. Like fut_await, it
 * returns its value (the url: Python returns a dict, but the url is all
 * main reads of it) and sets *err to 0 or why it failed. */
static const char *fetch_data(const char *url, double delay, int *err)
{
    printf("  Fetching %s...\n", url);
    *err = fut_asleep(delay); /* await asyncio.sleep(delay): simulate network latency */
    return *err ? NULL : url;
}

/* fetch_data as a task of its own, for gather (asyncio.gather wraps each
 * coroutine it gets in a task): a failure rejects the task's future. */
struct request {
    const char *url;
    double delay;
};

static void *fetch_task(void *arg)
{
    const struct request *req = arg;
    int err;
    const char *url = fetch_data(req->url, req->delay, &err);
    return err ? fut_raise(err, "fetching %s: %s", req->url, strerror(err)) : (void *)url;
}

/* async def main() */
static void *async_main(void *arg)
{
    static const struct request reqs[3] = {
        { "api/users", 0.5 }, { "api/posts", 0.3 }, { "api/comments", 0.4 }
    };
    fut_future *fs[3] = { NULL }, *all = NULL;
    const char *r1, *r2, **r;
    int i, err;
    (void)arg;

    /* Sequential: waits for each before starting the next. */
    printf("Sequential:\n");
    r1 = fetch_data("api/users", 0.5, &err);
    if (err == 0)
        r2 = fetch_data("api/posts", 0.5, &err);
    if (err != 0)
        return failed(err, "a sequential fetch", strerror(err));
    printf("  Got: %s, %s\n", r1, r2);

    /* Concurrent with gather: runs all three at the same time.
     * r1, r2, r3 = await asyncio.gather(fetch_data("api/users", 0.5), ...) */
    printf("Concurrent:\n");
    for (i = 0; i < 3; i++)
        if ((fs[i] = fut_async(NULL, fetch_task, (void *)&reqs[i])) == NULL) {
            failed(errno, "fut_async", strerror(errno));
            goto out;
        }
    if ((all = fut_gather(NULL, fs, 3, 0)) == NULL) {
        failed(errno, "fut_gather", strerror(errno));
        goto out;
    }
    r = fut_await(all, &err); /* the values in input order, owned by `all` */
    if (err != 0) {
        failed(err, "the concurrent fetches", fut_message(all));
        goto out;
    }
    printf("  Got: %s, %s, %s\n", r[0], r[1], r[2]);
out:
    fut_release(all); /* NULL is a no-op */
    for (i = 0; i < 3; i++)
        fut_release(fs[i]);
    return NULL; /* after a failed(), the raise decides: main() fails */
}

int main(void)
{
    /* asyncio.run(main()): NULL is the default runtime, made on first use. */
    int err = fut_run(NULL, async_main, NULL, NULL);
    if (err != 0) {
        fprintf(stderr, "fetch_data: main() failed: %s\n", strerror(err));
        return 1;
    }
    return 0;
}
