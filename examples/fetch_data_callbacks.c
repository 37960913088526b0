/* fetch_data_callbacks.c - simulated requests, one after another, then all
 * at once: fetch_data.c again, in the callback style.
 * cc fetch_data_callbacks.c $(pkg-config --cflags --libs futures)
 *
 * Callback style: the code after each await becomes a continuation
 * (fut_then) that runs on the dispatcher thread when the awaited future
 * settles, fut_catch plays `except`, and main blocks in fut_wait until it
 * is all over. fetch_data.c is the same program in the await style
 * (coroutines); docs/TUTORIAL.md says when to prefer which. */
#include <futures.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define TIMEOUT 10.0 /* seconds main waits before it calls it a hang */
static fut_runtime *rt; /* the event loop: continuations start fetches too */

static int failed(const char *what, const char *why)
{
    fprintf(stderr, "fetch_data_callbacks: %s failed: %s\n", what, why);
    return 1;
}

/* The rest of fetch_data after `await asyncio.sleep(delay)`. */
static void *return_url(void *value, void *url)
{
    (void)value; /* a sleep resolves with NULL */
    return url;  /* Python returns a dict; the url is all main reads of it */
}

/* async def fetch_data(url, delay):
 *     print(f"  Fetching {url}..."); await asyncio.sleep(delay); return url */
static fut_future *fetch_data(const char *url, double delay)
{
    fut_future *nap, *f;
    printf("  Fetching %s...\n", url);
    if ((nap = fut_sleep(rt, delay)) == NULL)
        return NULL;
    f = fut_then(nap, return_url, (void *)url);
    fut_release(nap); /* the continuation keeps its own reference */
    return f;
}

/* The sequential half of main(), cut at its awaits. */
struct sequential {
    fut_promise *done; /* settled when the half is over; main waits for it */
    const char *r1;    /* r1 = await fetch_data("api/users", 0.5) */
};

/* except: a failure anywhere along the chain ends it, with that error. */
static void *fail(int code, const char *message, void *arg)
{
    struct sequential *s = arg; /* EALREADY below: it settled already */
    (void)fut_promise_reject(s->done, code, "%s", message);
    return NULL;
}

/* step(value) once f resolves, fail() if anything fails; takes f over. */
static int then_or_fail(fut_future *f, fut_then_fn step, struct sequential *s)
{
    fut_future *next = f ? fut_then(f, step, s) : NULL; /* f NULL: errno says why */
    fut_future *guarded = next ? fut_catch(next, fail, s) : NULL;
    int err = guarded ? 0 : errno;
    if (next != NULL && guarded == NULL)
        (void)fut_cancel(next); /* unguarded: do not run the step at all */
    fut_release(guarded);
    fut_release(next); /* the chain keeps what it needs */
    fut_release(f);
    return err;
}

/* r2 = await fetch_data("api/posts", 0.5); print(...) */
static void *got_posts(void *url, void *arg)
{
    struct sequential *s = arg;
    printf("  Got: %s, %s\n", s->r1, (const char *)url);
    if (fut_promise_resolve(s->done, NULL) != 0) /* EALREADY */
        return fut_raise(EALREADY, "the promise had settled already");
    return NULL;
}

/* r1 = await fetch_data("api/users", 0.5); then the next fetch starts. */
static void *got_users(void *url, void *arg)
{
    struct sequential *s = arg;
    int err;
    s->r1 = url;
    if ((err = then_or_fail(fetch_data("api/posts", 0.5), got_posts, s)) != 0)
        return fut_raise(err, "fetching api/posts: %s", strerror(err));
    return NULL;
}

/* Block until f settles; 0 if it resolved, else say why and return 1. */
static int wait_ok(fut_future *f, const char *what)
{
    int err = fut_wait(f, TIMEOUT);
    return err ? failed(what, strerror(err)) : fut_error(f) ? failed(what, fut_message(f)) : 0;
}

static int sequential(struct sequential *s)
{
    fut_future *done = fut_promise_future(s->done);
    int err, rc;
    printf("Sequential:\n");
    if (done == NULL)
        rc = failed("fut_promise_future", strerror(errno));
    else if ((err = then_or_fail(fetch_data("api/users", 0.5), got_users, s)) != 0)
        rc = failed("fetching api/users", strerror(err));
    else
        rc = wait_ok(done, "the sequential fetches"); /* got_posts printed */
    fut_release(done);
    return rc;
}

static int concurrent(void)
{
    fut_future *fs[3] = { NULL }, *all = NULL;
    int i, rc = 1;
    printf("Concurrent:\n");
    /* r1, r2, r3 = await asyncio.gather(fetch_data(...), ...) */
    if ((fs[0] = fetch_data("api/users", 0.5)) == NULL ||
        (fs[1] = fetch_data("api/posts", 0.3)) == NULL ||
        (fs[2] = fetch_data("api/comments", 0.4)) == NULL)
        rc = failed("fetch_data", strerror(errno));
    else if ((all = fut_gather(rt, fs, 3, 0)) == NULL)
        rc = failed("fut_gather", strerror(errno));
    else if ((rc = wait_ok(all, "the concurrent fetches")) == 0) {
        void **r = fut_value(all); /* the values in input order, owned by `all` */
        printf("  Got: %s, %s, %s\n", (const char *)r[0], (const char *)r[1],
               (const char *)r[2]);
    }
    fut_release(all);
    for (i = 0; i < 3; i++)
        fut_release(fs[i]);
    return rc;
}

int main(void)
{
    struct sequential s = { NULL, NULL };
    int rc, err;
    if ((rt = fut_runtime_new(NULL)) == NULL)
        return failed("fut_runtime_new", strerror(errno));
    if ((s.done = fut_promise_new(rt)) == NULL)
        rc = failed("fut_promise_new", strerror(errno));
    else if ((rc = sequential(&s)) == 0)
        rc = concurrent();
    if ((err = fut_runtime_free(rt)) != 0)
        rc = failed("fut_runtime_free", strerror(err));
    fut_promise_free(s.done); /* only now: no continuation can be settling it */
    return rc;
}
