#!/bin/sh
# check-symbols.sh - the built shared library exports only fut_ symbols
# (tools/check-symbols.sh does the work). Skipped (77) without a shared
# library, e.g. after configure --disable-shared.
lib=${top_builddir:-.}/.libs/libfutures.so
if [ ! -e "$lib" ]; then
    echo "SKIP: no shared library at $lib"
    exit 77
fi
exec ${SHELL:-/bin/sh} "${top_srcdir:-.}/tools/check-symbols.sh" "$lib"
