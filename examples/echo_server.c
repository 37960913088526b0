/* echo_server.c - the TCP echo server of asyncio's streams documentation,
 * in await style: each connection gets a coroutine of its own that reads
 * one line, prints it, sends it back and closes. echo_client.c is its
 * other half. cc echo_server.c $(pkg-config --cflags --libs futures)
 *
 *   echo_server [PORT] [--once N]
 *
 * Listens on 127.0.0.1:PORT (default 8888; 0: the kernel picks a free
 * port) and prints "Serving on 127.0.0.1:PORT" first. Serves until
 * stopped, or with --once N until N connections have been served, then
 * closes the server, waits for its handlers and exits (what make check
 * uses). */
#include <futures.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A client that says nothing cannot hold its handler longer than this. */
#define TIMEOUT_S 10.0

struct serving {
    const char *port;  /* what to listen on */
    long once;         /* stop after this many connections; 0: never */
    long served;       /* connections handled so far (dispatcher only) */
    fut_promise *done; /* resolved when served reaches once */
};

/* In main's coroutine: say why on stderr, then fail it with code (fut_run
 * returns the code only, not the message). */
static void *failed(int code, const char *what)
{
    fprintf(stderr, "echo_server: %s failed: %s\n", what, strerror(code));
    return fut_raise(code, "%s: %s", what, strerror(code));
}

/* The client's address as "127.0.0.1:50736" (writer.get_extra_info('peername')). */
static const char *peer_name(int fd, char *buf, size_t n)
{
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;

    if (getpeername(fd, (struct sockaddr *)&sa, &len) == 0) {
        if (sa.ss_family == AF_INET) {
            const struct sockaddr_in *in = (const struct sockaddr_in *)&sa;
            inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
            port = ntohs(in->sin_port);
        } else if (sa.ss_family == AF_INET6) {
            const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&sa;
            inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
            port = ntohs(in6->sin6_port);
        }
    }
    snprintf(buf, n, "%s:%u", host, port);
    return buf;
}

/* async def handle_echo(reader, writer): a coroutine per connection. The
 * server closes conn when it returns (writer.close()). */
static void handle_echo(fut_stream *conn, void *arg)
{
    struct serving *srv = arg;
    const char *line;
    char addr[INET6_ADDRSTRLEN + 8];
    ssize_t n = fut_stream_readline(conn, &line, TIMEOUT_S); /* data = await reader.readline() */
    int len;

    if (n < 0) {
        fprintf(stderr, "echo_server: reading from %s: %s\n",
                peer_name(fut_stream_fd(conn), addr, sizeof addr), strerror((int)-n));
    } else if (n > 0) {
        len = (int)n - (line[n - 1] == '\n'); /* the message, without its '\n' */
        peer_name(fut_stream_fd(conn), addr, sizeof addr); /* writer.get_extra_info('peername') */
        printf("Received '%.*s' from %s\n", len, line, addr);
        printf("Send: '%.*s'\n", len, line);
        /* writer.write(data); await writer.drain() */
        if ((n = fut_stream_write(conn, line, (size_t)n, TIMEOUT_S)) < 0)
            fprintf(stderr, "echo_server: writing to %s: %s\n", addr, strerror((int)-n));
        printf("Close the connection\n");
    }
    fflush(stdout); /* whoever reads our output sees each exchange as it ends */
    if (++srv->served == srv->once)
        fut_promise_resolve(srv->done, NULL);
}

/* async def main() */
static void *async_main(void *arg)
{
    struct serving *srv = arg;
    fut_future *done, *closed;
    fut_server *server;
    int err;

    /* server = await asyncio.start_server(handle_echo, '127.0.0.1', 8888) */
    if ((server = fut_serve(NULL, "127.0.0.1", srv->port, handle_echo, srv)) == NULL)
        return failed(errno, "fut_serve");
    printf("Serving on 127.0.0.1:%d\n", fut_server_port(server));
    fflush(stdout); /* a script waits for this line to learn the port */

    /* await server.serve_forever(), or until --once N connections */
    done = fut_promise_future(srv->done);
    fut_await(done, &err);
    fut_release(done);

    /* server.close(); await server.wait_closed() */
    if ((closed = fut_server_close(server)) == NULL)
        return failed(errno, "fut_server_close");
    fut_await(closed, &err);
    fut_release(closed);
    return err ? failed(err, "closing the server") : NULL;
}

int main(int argc, char **argv)
{
    struct serving srv = { "8888", 0, 0, NULL };
    int i, err;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--once") == 0 && i + 1 < argc && atol(argv[i + 1]) > 0)
            srv.once = atol(argv[++i]);
        else if (argv[i][0] != '-')
            srv.port = argv[i];
        else {
            fprintf(stderr, "usage: echo_server [PORT] [--once N]\n");
            return 2;
        }
    }
    if ((srv.done = fut_promise_new(NULL)) == NULL) {
        fprintf(stderr, "echo_server: fut_promise_new: %s\n", strerror(errno));
        return 1;
    }
    /* asyncio.run(main()) */
    err = fut_run(NULL, async_main, &srv, NULL);
    fut_promise_resolve(srv.done, NULL); /* if main() failed first: freed unsettled, it would
                                            report a broken promise that nobody waits for */
    fut_promise_free(srv.done);
    if (err != 0) {
        fprintf(stderr, "echo_server: main() failed: %s\n", strerror(err));
        return 1;
    }
    return 0;
}
