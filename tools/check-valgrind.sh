#!/usr/bin/env bash
# check-valgrind.sh BUILD_DIR - run every example program built in
# BUILD_DIR/examples under valgrind's memcheck, one after another, and
# print one line per example: its name, memcheck's error count (leaks
# included), the blocks it leaked, its exit status and the seconds it took.
#
# An invalid access, a use of an uninitialised value, and a leak of any
# kind but "still reachable" (definite, indirect, possible: each loss
# record counts as an error) fail the example, and so does its own nonzero
# exit status; the script then shows the example's valgrind log and exits
# 1. Exit 0: every example passed. Exit 77: valgrind is not installed.
# Exit 2: a usage or build problem (the examples are not built, the build
# is sanitized, or it was configured without valgrind/valgrind.h, so that
# coroutine stacks are not registered with valgrind and memcheck would
# report thousands of false errors).
#
# BUILD_DIR is a configured and built (make) tree, in-tree or out of tree.
# The examples are libtool wrapper scripts: valgrind runs the real
# programs, through BUILD_DIR/libtool --mode=execute. replace_blocking
# reads the source tree's examples/ directory. --track-origins is off, for
# speed: to find where an uninitialised value came from, rerun that one
# example by hand with --track-origins=yes. Options of valgrind's own come
# from VALGRIND_OPTS as usual; CHECK_VALGRIND_TIMEOUT (seconds, default
# 300) bounds each example, where timeout(1) exists.
#
# Valgrind 3.19 (Debian 12) cannot read the DWARF 5 debug information that
# clang 14 writes by default, and gives up at once: configure a clang
# build with CFLAGS='-g -gdwarf-4'. gcc's builds need nothing.
#
# The whole run takes about 15 s on 2 cores (sync_vs_async sleeps 4 s).
#
#   tools/check-valgrind.sh build/vg
set -euo pipefail

if [ $# -ne 1 ] || [ ! -d "$1" ]; then
    echo "usage: $0 BUILD_DIR (a built tree: its examples/ holds the example programs)" >&2
    exit 2
fi
build=$(cd "$1" && pwd)
srcdir=$(cd "$(dirname "$0")/.." && pwd)
examples="pool_demo sync_vs_async fetch_data fetch_data_callbacks errors replace_blocking fetch_http"
limit=${CHECK_VALGRIND_TIMEOUT:-300}

if ! command -v valgrind >/dev/null 2>&1; then
    echo "SKIP: valgrind not found (Debian: apt-get install valgrind, then configure again)" >&2
    exit 77
fi
if [ ! -x "$build/libtool" ] || [ ! -f "$build/config.h" ] || [ ! -f "$build/Makefile" ]; then
    echo "$0: $build is not a configured build tree (no libtool, config.h or Makefile)" >&2
    exit 2
fi
if ! grep -q '^#define HAVE_VALGRIND_VALGRIND_H 1' "$build/config.h"; then
    echo "$0: $build was configured without valgrind/valgrind.h: coroutine stacks are not" >&2
    echo "registered with valgrind, and memcheck would report false errors. Install" >&2
    echo "valgrind (it ships the header) and run configure again." >&2
    exit 2
fi
if grep -q '^CFLAGS = .*-fsanitize' "$build/Makefile"; then
    echo "$0: $build is built with a sanitizer, which valgrind cannot run" >&2
    exit 2
fi
for name in $examples; do
    if [ ! -x "$build/examples/$name" ]; then
        echo "$0: $build/examples/$name is not built (run make in $build)" >&2
        exit 2
    fi
done

timeout_cmd=()
if command -v timeout >/dev/null 2>&1; then
    timeout_cmd=(timeout "$limit")
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/check-valgrind.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Nanoseconds since the epoch (bash 5's EPOCHREALTIME, else date).
now_ns() {
    if [ -n "${EPOCHREALTIME:-}" ]; then
        local t=${EPOCHREALTIME/[.,]/}
        echo "${t}000"
    else
        date +%s%N
    fi
}

# The exit status valgrind gives when it found errors (the example's own
# status otherwise); errors are counted from the log in any case.
vg_error_status=99
failed=
printf '%-22s %8s %8s %6s %8s\n' example errors leaked exit seconds
for name in $examples; do
    args=()
    case $name in
    replace_blocking) args=("$srcdir/examples") ;;
    esac
    log=$tmp/$name.vg
    t0=$(now_ns)
    status=0
    "${timeout_cmd[@]}" "$build/libtool" --mode=execute \
        valgrind --tool=memcheck --error-exitcode=$vg_error_status \
        --leak-check=full --show-leak-kinds=definite,indirect,possible \
        --errors-for-leak-kinds=definite,indirect,possible \
        --track-origins=no --num-callers=30 --log-file="$log" \
        "$build/examples/$name" ${args[@]+"${args[@]}"} \
        >"$tmp/$name.out" 2>&1 || status=$?
    t1=$(now_ns)
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
    # The last summaries in the log are the ones of the example's process.
    errors=$(sed -n 's/^==[0-9]*== ERROR SUMMARY: \([0-9,]*\) errors.*/\1/p' "$log" | tail -n 1 | tr -d ,)
    leaked=$(sed -n 's/^==[0-9]*== *\(definitely\|indirectly\|possibly\) lost: [0-9,]* bytes in \([0-9,]*\) blocks.*/\2/p' "$log" |
        tr -d , | awk '{ n += $1 } END { print n + 0 }')
    # What valgrind ran: the real program, not libtool's wrapper script
    # (memcheck would then check only the shell and pass whatever).
    ran=$(sed -n 's/^==[0-9]*== Command: \([^ ]*\).*/\1/p' "$log" | head -n 1)
    why=
    if [ -n "$ran" ] && [ "$(head -c 4 "$ran" 2>/dev/null | od -An -c | tr -d ' ')" != '177ELF' ]; then
        errors='?'
        why="valgrind ran $ran, which is not a program (a libtool wrapper?)"
    elif [ -z "$errors" ]; then
        errors='?'
        why="no ERROR SUMMARY in valgrind's log (did valgrind start?)"
        if grep -q 'debuginfo reader' "$log"; then
            why="valgrind cannot read this build's debug information (clang's default DWARF 5?): configure with CFLAGS='-g -gdwarf-4'"
        fi
    elif [ "$errors" -ne 0 ]; then
        why="$errors errors"
    fi
    if [ "$leaked" -ne 0 ]; then
        why="${why:+$why, }$leaked blocks leaked"
    fi
    if [ "$status" -ne 0 ] && [ -z "$why" ]; then
        why="exit status $status"
        if [ "$status" -eq 124 ] && [ ${#timeout_cmd[@]} -ne 0 ]; then
            why="timed out after $limit s"
        fi
    fi
    printf '%-22s %8s %8s %6s %8s\n' "$name" "$errors" "$leaked" "$status" "$secs"
    if [ -n "$why" ]; then
        failed="$failed $name"
        {
            echo "---- FAIL: $name: $why"
            echo "---- its output:"
            cat "$tmp/$name.out"
            echo "---- valgrind's log:"
            cat "$log" 2>/dev/null || echo "(no log)"
            echo "----"
        } >&2
    fi
done

if [ -n "$failed" ]; then
    echo "FAIL:$failed" >&2
    exit 1
fi
echo "PASS: every example ran clean under memcheck (0 errors, 0 leaks)"
