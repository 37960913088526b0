#!/bin/sh
# test-aarch64.sh - cross-build the coroutine context layer for aarch64 with
# Debian's cross compiler and run tests/coro_ctx_selftest.c under qemu-user,
# once per backend (asm: futures/ctx_aarch64.S, and ucontext).
#
#     apt-get install -y gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
#     sh tools/test-aarch64.sh            # aarch64 under qemu-aarch64
#     sh tools/test-aarch64.sh native     # the same program for the build machine
#
# Exit: 0 all passed, 1 a check failed, 77 the cross tools are missing.
set -eu

srcdir=$(cd "$(dirname "$0")/.." && pwd)
mode=${1:-aarch64}
case $mode in
aarch64)
    cc=${CROSS_CC:-aarch64-linux-gnu-gcc}
    run="${QEMU:-qemu-aarch64} -L ${QEMU_LD_PREFIX:-/usr/aarch64-linux-gnu}"
    asm=futures/ctx_aarch64.S
    for tool in "$cc" "${QEMU:-qemu-aarch64}"; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "SKIP: $tool not found (apt-get install -y gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)"
            exit 77
        fi
    done
    ;;
native)
    cc=${CC:-cc}
    run=
    case $(uname -m) in
    x86_64) asm=futures/ctx_x86_64.S ;;
    aarch64) asm=futures/ctx_aarch64.S ;;
    *) asm= ;;
    esac
    ;;
*)
    echo "usage: $0 [aarch64|native]" >&2
    exit 2
    ;;
esac

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
status=0
for backend in asm ucontext; do
    if [ "$backend" = asm ]; then
        [ -n "$asm" ] || continue
        defs=-DFUT_CTX_ASM=1 src=$asm
    else
        defs=-DFUT_CTX_UCONTEXT=1 src=futures/ctx_ucontext.c
    fi
    exe=$out/selftest-$backend
    (cd "$srcdir" && $cc -std=gnu11 -O2 -g -Wall -Wextra -Werror -I. $defs -o "$exe" \
        tests/coro_ctx_selftest.c futures/coro_ctx.c futures/stack.c pool/alloc.c $src)
    echo "== $mode, $backend backend"
    if ! $run "$exe"; then
        status=1
    fi
done
exit $status
