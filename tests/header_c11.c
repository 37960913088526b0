/* header_c11.c - futures.h compiles on its own as strict ISO C11
 * (-std=c11 -pedantic -Wall -Wextra -Werror), and its calls link from the
 * shared library. */
#include <futures.h>

#include <stdio.h>

int main(void)
{
    const char *v = fut_version();
    fut_pool_options opts;

    if (v == NULL || v[0] == '\0') {
        fprintf(stderr, "header_c11: fut_version() returned nothing\n");
        return 1;
    }
    if (fut_pool_options_init(&opts) != 0 || opts.compute_threads == 0) {
        fprintf(stderr, "header_c11: fut_pool_options_init failed\n");
        return 1;
    }
    printf("header_c11: libfutures %s\n", v);
    return 0;
}
