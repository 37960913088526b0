/* fetch_http.c - fetch_data.c for real: the requests are HTTP/1.1 GETs
 * over TCP, one after another, then all at once.
 * cc fetch_http.c $(pkg-config --cflags --libs futures)
 *
 * The program serves them itself: a small HTTP server (fut_serve, one
 * coroutine per connection) on 127.0.0.1, on a port the kernel picks,
 * answers GET /api/users, /api/posts and /api/comments with a JSON body
 * after the lesson's delay (an awaited fut_sleep: the network latency
 * that fetch_data.c simulates is now the server's). The client names the
 * delay in the query (GET /api/posts?delay=0.3), since the lesson gives
 * api/posts 0.5 s one time and 0.3 s the other. Same output and timings
 * as fetch_data.c; every wait in between is a socket's, and the whole
 * program is one dispatcher thread. */
#include <futures.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Each call on a socket (connect, write, read) gives up after this. */
#define TIMEOUT_S 10.0
/* The largest body a fetch accepts, and the longest delay served. */
#define MAX_BODY 65536
#define MAX_DELAY_S 10.0

static char port[8]; /* the server's, as a string for fut_open_connection */

/* ---- the server ---- */

/* line (n bytes, from a stream) is an empty line: the end of the headers */
static int blank(const char *line, ssize_t n)
{
    return (n == 1 && line[0] == '\n') || (n == 2 && line[0] == '\r' && line[1] == '\n');
}

/* One connection: read "GET /api/users?delay=0.5 HTTP/1.1" and the
 * headers, wait the delay, answer, return (the server closes conn). */
static void handle_http(fut_stream *conn, void *arg)
{
    static const char *const paths[] = { "/api/users", "/api/posts", "/api/comments" };
    const char *line, *status = "404 Not Found";
    char target[128], body[160], out[384], *query;
    double delay = 0;
    ssize_t n;
    size_t i, len;
    int err, body_len, out_len;
    (void)arg;

    /* The request line: "GET " target " HTTP/1.x" */
    n = fut_stream_readline(conn, &line, TIMEOUT_S);
    if (n < 4 || memcmp(line, "GET ", 4) != 0)
        return; /* not a GET, or the client went away: just close */
    for (len = 0; 4 + len < (size_t)n && line[4 + len] != ' ' && len < sizeof target - 1; len++)
        target[len] = line[4 + len];
    target[len] = '\0';
    /* The headers, up to the empty line: this server needs none of them. */
    do
        n = fut_stream_readline(conn, &line, TIMEOUT_S);
    while (n > 0 && !blank(line, n));
    if (n <= 0)
        return;

    if ((query = strchr(target, '?')) != NULL) {
        *query++ = '\0';
        if (strncmp(query, "delay=", 6) == 0)
            delay = strtod(query + 6, NULL);
    }
    for (i = 0; i < sizeof paths / sizeof paths[0] && strcmp(target, paths[i]) != 0; i++)
        ;
    if (i == sizeof paths / sizeof paths[0]) {
        body_len = snprintf(body, sizeof body, "{\"error\": \"no such resource\"}");
    } else if (!(delay >= 0 && delay <= MAX_DELAY_S)) { /* NaN included */
        status = "400 Bad Request";
        body_len = snprintf(body, sizeof body, "{\"error\": \"delay is 0 to %g s\"}", MAX_DELAY_S);
    } else {
        fut_future *nap = fut_sleep(NULL, delay);
        if (nap == NULL)
            return;
        fut_await(nap, &err); /* the network latency, on the server's side */
        fut_release(nap);
        if (err != 0)
            return; /* cancelled: the runtime shuts down */
        status = "200 OK";
        /* {"url": url, "data": f"response from {url}"} */
        body_len = snprintf(body, sizeof body, "{\"url\": \"%s\", \"data\": \"response from %s\"}",
                            target + 1, target + 1);
    }
    out_len = snprintf(out, sizeof out,
                       "HTTP/1.1 %s\r\n"
                       "Content-Type: application/json\r\n"
                       "Content-Length: %d\r\n"
                       "Connection: close\r\n"
                       "\r\n%s",
                       status, body_len, body);
    fut_stream_write(conn, out, (size_t)out_len, TIMEOUT_S); /* a client gone is no concern here */
}

/* ---- the client ---- */

/* The string value of "key" in a flat JSON object (no escapes: ours has
 * none), newly allocated, or NULL. */
static char *json_string(const char *json, const char *key)
{
    char pattern[32];
    const char *start, *end;
    char *s;

    snprintf(pattern, sizeof pattern, "\"%s\": \"", key);
    if ((start = strstr(json, pattern)) == NULL)
        return NULL;
    start += strlen(pattern);
    if ((end = strchr(start, '"')) == NULL || (s = malloc((size_t)(end - start) + 1)) == NULL)
        return NULL;
    memcpy(s, start, (size_t)(end - start));
    s[end - start] = '\0';
    return s;
}

/* GET /url?delay=... from our server: the body, newly allocated and
 * '\0'-terminated, or NULL with *err set. */
static char *http_get(const char *url, double delay, int *err)
{
    char req[256], head[128], *body = NULL;
    const char *line;
    long length = -1;
    fut_stream *s;
    ssize_t n;
    int len;

    if ((s = fut_open_connection("127.0.0.1", port, TIMEOUT_S)) == NULL) {
        *err = errno;
        return NULL;
    }
    len = snprintf(req, sizeof req,
                   "GET /%s?delay=%g HTTP/1.1\r\n"
                   "Host: 127.0.0.1:%s\r\n"
                   "Connection: close\r\n"
                   "\r\n",
                   url, delay, port);
    if ((n = fut_stream_write(s, req, (size_t)len, TIMEOUT_S)) < 0)
        goto fail;

    /* The status line: "HTTP/1.1 200 OK" */
    if ((n = fut_stream_readline(s, &line, TIMEOUT_S)) <= 0)
        goto fail;
    if (n < 12 || memcmp(line, "HTTP/1.", 7) != 0 || memcmp(line + 8, " 200", 4) != 0) {
        fprintf(stderr, "fetch_http: GET /%s: %.*s\n", url,
                (int)(n - 1 - (n > 1 && line[n - 2] == '\r')), line); /* without "\r\n" */
        n = -EPROTO;
        goto fail;
    }
    /* The headers, up to the empty line: Content-Length says how much follows. */
    while ((n = fut_stream_readline(s, &line, TIMEOUT_S)) > 0 && !blank(line, n)) {
        snprintf(head, sizeof head, "%.*s", (int)n, line);
        if (strncasecmp(head, "Content-Length:", 15) == 0)
            length = strtol(head + 15, NULL, 10);
    }
    if (n <= 0)
        goto fail;
    if (length < 0 || length > MAX_BODY) {
        n = -EPROTO;
        goto fail;
    }
    /* The body: exactly Content-Length bytes. */
    if ((body = malloc((size_t)length + 1)) == NULL) {
        n = -ENOMEM;
        goto fail;
    }
    if ((n = fut_stream_readexactly(s, body, (size_t)length, TIMEOUT_S)) != length)
        goto fail;
    body[length] = '\0';
    fut_stream_close(s);
    *err = 0;
    return body;
fail:
    *err = n < 0 ? (int)-n : ECONNRESET; /* n >= 0: the server closed too soon */
    free(body);
    fut_stream_close(s);
    return NULL;
}

/* async def fetch_data(url, delay): a real HTTP request now. Called from
 * a coroutine, it runs in that coroutine, as `await fetch_data(...)`
 * does in Python. Returns the "url" of the JSON answer (newly allocated:
 * Python returns the whole dict, but the url is all main reads of it),
 * with *err 0, or NULL with *err set to why it failed. */
static char *fetch_data(const char *url, double delay, int *err)
{
    char *body, *got;

    printf("  Fetching %s...\n", url);
    if ((body = http_get(url, delay, err)) == NULL)
        return NULL;
    got = json_string(body, "url");
    free(body);
    *err = got ? 0 : EPROTO;
    return got;
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
    char *url = fetch_data(req->url, req->delay, &err);
    return err ? fut_raise(err, "fetching %s: %s", req->url, strerror(err)) : url;
}

/* In main's coroutine: say why on stderr, then fail it with code (fut_run
 * returns the code only, not the message). */
static void *failed(int code, const char *what, const char *why)
{
    fprintf(stderr, "fetch_http: %s failed: %s\n", what, why);
    return fut_raise(code, "%s: %s", what, why);
}

/* The lesson's main(), between starting the server and closing it. */
static void fetch_all(void)
{
    static const struct request reqs[3] = {
        { "api/users", 0.5 }, { "api/posts", 0.3 }, { "api/comments", 0.4 }
    };
    fut_future *fs[3] = { NULL }, *all = NULL;
    char *r1 = NULL, *r2 = NULL, **r;
    int i, err;

    /* Sequential: waits for each before starting the next. */
    printf("Sequential:\n");
    r1 = fetch_data("api/users", 0.5, &err);
    if (err == 0)
        r2 = fetch_data("api/posts", 0.5, &err);
    if (err != 0) {
        failed(err, "a sequential fetch", strerror(err));
        goto out;
    }
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
    /* Every fetch has ended: fut_gather rejects at the first error only,
     * so wait for the others before freeing what they returned. */
    for (i = 0; i < 3; i++)
        if (fs[i] != NULL) {
            fut_await(fs[i], &err);
            free(fut_value(fs[i])); /* NULL unless it resolved */
            fut_release(fs[i]);
        }
    fut_release(all); /* NULL is a no-op */
    free(r1);
    free(r2);
}

/* async def main(): start the server, fetch, close the server. */
static void *async_main(void *arg)
{
    fut_server *server;
    fut_future *closed;
    int err;
    (void)arg;

    /* server = await asyncio.start_server(handle_http, '127.0.0.1', 0) */
    if ((server = fut_serve(NULL, "127.0.0.1", "0", handle_http, NULL)) == NULL)
        return failed(errno, "fut_serve", strerror(errno));
    snprintf(port, sizeof port, "%d", fut_server_port(server));

    fetch_all();

    /* server.close(); await server.wait_closed() */
    if ((closed = fut_server_close(server)) == NULL)
        return failed(errno, "fut_server_close", strerror(errno));
    fut_await(closed, &err);
    fut_release(closed);
    return err ? failed(err, "closing the server", strerror(err)) : NULL;
}

int main(void)
{
    /* asyncio.run(main()): NULL is the default runtime, made on first use. */
    int err = fut_run(NULL, async_main, NULL, NULL);
    if (err != 0) {
        fprintf(stderr, "fetch_http: main() failed: %s\n", strerror(err));
        return 1;
    }
    return 0;
}
