/* header_c99.c - futures.h compiles on its own as strict ISO C99
 * (-std=c99 -pedantic -Wall -Wextra -Werror), and its calls link from the
 * shared library. */
#include <futures.h>

#include <stdio.h>

int main(void)
{
    const char *v = fut_version();
    fut_pool_options opts;

    if (v == NULL || v[0] == '\0') {
        fprintf(stderr, "header_c99: fut_version() returned nothing\n");
        return 1;
    }
    if (fut_pool_options_init(&opts) != 0 || opts.compute_threads == 0) {
        fprintf(stderr, "header_c99: fut_pool_options_init failed\n");
        return 1;
    }
    printf("header_c99: libfutures %s\n", v);
    return 0;
}
