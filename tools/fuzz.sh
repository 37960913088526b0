#!/usr/bin/env bash
# fuzz.sh - build the libFuzzer target tests/fuzz/fuzz_api.c together with
# the library's sources (ASan + UBSan + libFuzzer, clang only: no configure,
# no autotools) into build/fuzz/, then fuzz it for SECONDS (default 60)
# starting from a copy of the committed seed corpus tests/fuzz/corpus/.
# New inputs go to build/fuzz/corpus/ (the committed corpus is only read);
# crashes, leaks, timeouts and invariant failures are written to
# build/fuzz/artifacts/ and make the script exit nonzero.
#
# Usage: tools/fuzz.sh [SECONDS]
#   CC=clang-14 tools/fuzz.sh 300    another clang
#   FUZZ_BUILD_ONLY=1 tools/fuzz.sh  build, do not run
#   FUZZ_NO_ASAN=1 tools/fuzz.sh     UBSan only (build/fuzz/fuzz_api_noasan):
#                                    the library's own future allocator
#                                    (futures/mem.c; ASan builds use malloc)
#                                    and native timing; no leak check
#   Reproduce a failure: build/fuzz/fuzz_api build/fuzz/artifacts/crash-...
# Needs: clang with the libFuzzer and sanitizer runtimes (Debian 12:
# apt-get install clang libclang-rt-14-dev), bash, coreutils.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds=${1:-60}
case $seconds in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
cc=${CC:-clang}
out=build/fuzz

# The library's sources: the .c files of libfutures_core_la_SOURCES in
# Makefile.am (its = and += lines; headers skipped), but for the context
# switch, which is chosen here for this CPU as configure's default
# --with-context would.
srcs=$(awk '
    /^libfutures_core_la_SOURCES[ \t]*\+?=/ { on = 1; sub(/^[^=]*=/, "") }
    on { line = $0; more = sub(/\\[ \t]*$/, "", line); print line; if (!more) on = 0 }
' Makefile.am | tr -s ' \t' '\n' | grep '\.c$' | grep -v '^futures/ctx_' || true)
if [ -z "$srcs" ]; then
    echo "fuzz.sh: no sources found in Makefile.am's libfutures_core_la_SOURCES" >&2
    exit 1
fi
case $(uname -m) in
    x86_64 | amd64) ctx="futures/ctx_x86_64.S"; ctx_def="#define FUT_CTX_ASM 1" ;;
    aarch64 | arm64) ctx="futures/ctx_aarch64.S"; ctx_def="#define FUT_CTX_ASM 1" ;;
    *) ctx="futures/ctx_ucontext.c"; ctx_def="#define FUT_CTX_UCONTEXT 1" ;;
esac

# config.h: the few macros the sources read (version.c includes it
# unconditionally; the others with HAVE_CONFIG_H). Kept in build/fuzz, put
# first on the include path, so an in-tree ./config.h from configure is
# never picked up.
mkdir -p "$out/corpus" "$out/artifacts"
version=$(sed -n 's/^AC_INIT(\[[^]]*\], *\[\([^]]*\)\].*/\1/p' configure.ac)
cat > "$out/config.h.new" <<CONFIG
/* Written by tools/fuzz.sh for the fuzz build only. */
#define PACKAGE_VERSION "${version:-unknown}"
$ctx_def
#define HAVE_PTHREAD_SETNAME_NP 1
CONFIG
if cmp -s "$out/config.h.new" "$out/config.h"; then
    rm -f "$out/config.h.new"
else
    mv "$out/config.h.new" "$out/config.h"
fi

sanitize=fuzzer,address,undefined
bin=$out/fuzz_api
if [ "${FUZZ_NO_ASAN:-0}" != 0 ]; then
    sanitize=fuzzer,undefined
    bin=$out/fuzz_api_noasan
fi
flags="-std=gnu11 -g -O1 -fno-omit-frame-pointer -pthread
       -fsanitize=$sanitize -fno-sanitize-recover=undefined
       -DHAVE_CONFIG_H -DFUT_BUILDING_LIBRARY -I$out -Iinclude -I."
echo "fuzz.sh: building $bin with $($cc --version | head -n 1)"
# shellcheck disable=SC2086 # word splitting of flags and srcs is wanted
$cc $flags -Wall -o "$bin" $srcs "$ctx" tests/fuzz/fuzz_api.c -ldl

if [ "${FUZZ_BUILD_ONLY:-0}" != 0 ]; then
    exit 0
fi

# Work on a copy: libFuzzer adds the inputs it finds to its first corpus
# directory, and that must not be the committed one.
cp -p tests/fuzz/corpus/* "$out/corpus/" 2>/dev/null || true

echo "fuzz.sh: fuzzing for $seconds s (corpus $out/corpus, artifacts $out/artifacts/)"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
exec "$bin" \
    -max_total_time="$seconds" \
    -timeout=10 \
    -rss_limit_mb=2048 \
    -max_len=256 \
    -print_final_stats=1 \
    -artifact_prefix="$out/artifacts/" \
    "$out/corpus"
