/* version.c - fut_version: the package version set in configure.ac. */
#include "config.h"

#include <futures.h>

const char *fut_version(void)
{
    return PACKAGE_VERSION;
}
