/* echo_client.c - the TCP echo client of asyncio's streams documentation,
 * in await style: connect, send one line, read the answer line, close.
 * Talks to echo_server.c. cc echo_client.c $(pkg-config --cflags --libs futures)
 *
 *   echo_client PORT [MESSAGE]
 *
 * Sends MESSAGE (default "Hello World!") and a '\n' to 127.0.0.1:PORT and
 * exits 1 unless the same line comes back. */
#include <futures.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* Each call (the connect, the write, the read) gives up after this. */
#define TIMEOUT_S 10.0

struct client {
    const char *port;    /* where echo_server listens */
    const char *message; /* what to send, without its '\n' */
};

/* In main's coroutine: say why on stderr, then fail it with code (fut_run
 * returns the code only, not the message). */
static void *failed(int code, const char *what)
{
    fprintf(stderr, "echo_client: %s failed: %s\n", what, strerror(code));
    return fut_raise(code, "%s: %s", what, strerror(code));
}

/* async def tcp_echo_client(message) */
static void *tcp_echo_client(void *arg)
{
    const struct client *c = arg;
    size_t len = strlen(c->message);
    const char *line;
    fut_stream *conn;
    ssize_t n;
    int err = 0;

    /* reader, writer = await asyncio.open_connection('127.0.0.1', 8888) */
    if ((conn = fut_open_connection("127.0.0.1", c->port, TIMEOUT_S)) == NULL)
        return failed(errno, "connecting to 127.0.0.1");

    printf("Send: '%s'\n", c->message);
    /* writer.write(message.encode()); await writer.drain() */
    if ((n = fut_stream_write(conn, c->message, len, TIMEOUT_S)) < 0 ||
        (n = fut_stream_write(conn, "\n", 1, TIMEOUT_S)) < 0) {
        err = (int)-n;
        failed(err, "sending");
        goto out;
    }

    /* data = await reader.readline() */
    if ((n = fut_stream_readline(conn, &line, TIMEOUT_S)) < 0) {
        err = (int)-n;
        failed(err, "receiving");
        goto out;
    }
    printf("Received: '%.*s'\n", (int)n - (n > 0 && line[n - 1] == '\n'), line);
    if ((size_t)n != len + 1 || memcmp(line, c->message, len) != 0 || line[len] != '\n') {
        err = EPROTO;
        failed(err, "the echo (another line came back)");
    }
out:
    printf("Close the connection\n");
    /* writer.close(); await writer.wait_closed() */
    fut_stream_close(conn);
    return NULL; /* after a failed(), the raise decides */
}

int main(int argc, char **argv)
{
    struct client c;
    int err;

    if (argc < 2 || argc > 3 || argv[1][0] == '-') {
        fprintf(stderr, "usage: echo_client PORT [MESSAGE]\n");
        return 2;
    }
    c.port = argv[1];
    c.message = argc > 2 ? argv[2] : "Hello World!";
    if (strchr(c.message, '\n') != NULL) {
        fprintf(stderr, "echo_client: MESSAGE is one line: no '\\n' in it\n");
        return 2;
    }
    /* asyncio.run(tcp_echo_client('Hello World!')) */
    err = fut_run(NULL, tcp_echo_client, &c, NULL);
    if (err != 0) {
        fprintf(stderr, "echo_client: failed: %s\n", strerror(err));
        return 1;
    }
    return 0;
}
