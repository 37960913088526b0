#!/usr/bin/env bash
# check-all.sh - build and check libfutures every way CI does, on Debian 12:
#   1. install the build tools that are missing (apt-get; needs root), and
#      raise vm.max_map_count for 100,000 coroutine stacks (as root);
#   2. autoreconf -fi;
#   3. four out-of-tree builds, each `make && make check`:
#        build/release  gcc -O2, --enable-werror
#        build/tsan     clang, --enable-sanitizer=thread
#        build/asan     clang, --enable-sanitizer=address (ASan + UBSan)
#        build/ucontext gcc -O2, --with-context=ucontext (the portable
#                       coroutine switch instead of the assembly one)
#   4. make install (release) into a temporary prefix; build every
#      examples/*.c against it with pkg-config alone (pool_demo.c also
#      static), and run them (all but the 4 s sync_vs_async);
#   5. make distcheck (release);
#   6. the coroutine context switch cross-built for aarch64 and run under
#      qemu-user (installs the cross tools);
#   7. hardening, each step bounded:
#        valgrind memcheck over every example (build/release): 0 errors,
#        0 leaks (tools/check-valgrind.sh);
#        the signal storm for 10 s (build/release; make check ran it for
#        2 s in each build);
#        the libFuzzer target over API call sequences for 60 s
#        (tools/fuzz.sh).
#      The fork matrix (tests/test_fork) and the allocation-failure test
#      (tests/test_alloc_fail: every k in the ASan build) are Check suites
#      of make check, in every build.
# Run from anywhere: bash tools/check-all.sh. JOBS=N overrides make -jN.
set -euo pipefail

cd "$(dirname "$0")/.."
top=$(pwd)
jobs=${JOBS:-2}
packages="autoconf automake libtool pkg-config check clang libclang-rt-14-dev make gcc valgrind"

t_all=$(date +%s)
t_step=$t_all
step() {
    echo
    echo "==== $* ===="
    t_step=$(date +%s)
}
done_step() {
    echo "---- $1: $(( $(date +%s) - t_step )) s"
}

# Install the Debian packages among "$@" that are missing (apt-get update
# at most once per run).
apt_updated=
ensure_packages() {
    local p missing= sudo=
    for p in "$@"; do
        # dpkg -s also succeeds for a removed package whose config files remain
        case $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true) in
            *" installed") ;;
            *) missing="$missing $p" ;;
        esac
    done
    if [ -z "$missing" ]; then
        echo "all present: $*"
        return
    fi
    echo "installing:$missing"
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "need root (or sudo) to install:$missing" >&2; exit 1; }
        sudo=sudo
    fi
    if [ -z "$apt_updated" ]; then
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update
        apt_updated=yes
    fi
    # shellcheck disable=SC2086
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y $missing
}

# ---- 1. tools ---------------------------------------------------------------
step "1. build tools"
# shellcheck disable=SC2086
ensure_packages $packages
# tests/test_coro keeps 100,000 coroutines alive at once: a stack is two
# memory mappings, more than Linux's default vm.max_map_count (65530)
# allows. Raise it when we may (the test uses fewer when it cannot).
maps=$(cat /proc/sys/vm/max_map_count 2>/dev/null || echo 0)
if [ "$maps" -lt 262144 ]; then
    if [ "$(id -u)" -eq 0 ] && echo 262144 >/proc/sys/vm/max_map_count 2>/dev/null; then
        echo "vm.max_map_count: $maps -> 262144"
    else
        echo "vm.max_map_count is $maps: test_coro will keep fewer than 100,000 coroutines alive"
    fi
fi
done_step "tools"

# ---- 2. autoreconf ------------------------------------------------------------
step "2. autoreconf -fi"
# An in-tree build (the README's quick start) stops automake from
# configuring out of tree: clean it first.
if [ -f config.status ]; then
    echo "an in-tree build is configured here: make distclean first"
    if [ -f Makefile ]; then make distclean >/dev/null; else rm -f config.status; fi
fi
autoreconf -fi
done_step "autoreconf"

# ---- 3. builds ------------------------------------------------------------------
prefix=$(mktemp -d "${TMPDIR:-/tmp}/libfutures-prefix.XXXXXX")
trap 'rm -rf "$prefix"' EXIT

# Print each test's Check summary, labelled with the build name; on failure
# print the logs of the tests that failed and stop.
report() { # name status
    local name=$1 status=$2 trs log
    echo "[$name] test results:"
    grep -H '^[0-9]*%: Checks' tests/*.log 2>/dev/null | sed "s|^|[$name] |" || true
    for trs in tests/*.trs; do
        [ -e "$trs" ] || continue
        sed -n 's|^:test-result: \([A-Z]*\).*|\1|p' "$trs" | head -n 1 |
            sed "s|^|[$name] |; s|\$| ${trs%.trs}|"
    done
    if [ "$status" -ne 0 ]; then
        for trs in tests/*.trs; do
            [ -e "$trs" ] || continue
            if grep -Eq '^:test-result: (FAIL|ERROR|XPASS)' "$trs"; then
                log=${trs%.trs}.log
                echo
                echo "######## [$name] $log ########"
                cat "$log"
            fi
        done
        echo
        echo "[$name] make check FAILED" >&2
        exit 1
    fi
}

build() { # name configure-arguments...
    local name=$1 status=0
    shift
    step "3. build/$name: configure $*"
    rm -rf "build/$name"
    mkdir -p "build/$name"
    (
        cd "build/$name"
        "$top/configure" "$@" >configure.out || { cat configure.out config.log; exit 1; }
        sed -n '/^configure: *$/,$p' configure.out
        make -j"$jobs"
        make -j"$jobs" check || status=$?
        report "$name" "$status"
    )
    done_step "build/$name"
}

build release CC=gcc CFLAGS="-O2 -g" --enable-werror --prefix="$prefix"
build tsan CC=clang --enable-sanitizer=thread
build asan CC=clang --enable-sanitizer=address
build ucontext CC=gcc CFLAGS="-O2 -g" --enable-werror --with-context=ucontext

# ---- 4. install and use -----------------------------------------------------------
step "4. make install, then build examples/*.c with pkg-config only"
make -C build/release install >/dev/null
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
echo "pkg-config --cflags --libs futures: $(pkg-config --cflags --libs futures)"
echo "pkg-config --static --libs futures:  $(pkg-config --static --libs futures)"
out=$prefix/out
mkdir -p "$out"
for src in examples/*.c; do
    # shellcheck disable=SC2046
    cc -o "$out/$(basename "$src" .c)" "$src" $(pkg-config --cflags --libs futures)
done
LD_LIBRARY_PATH="$prefix/lib" ldd "$out/pool_demo" | grep libfutures
# sync_vs_async sleeps 4 s; each build of step 3 ran it already.
LD_LIBRARY_PATH="$prefix/lib" EXAMPLES_BIN="$out" \
    EXAMPLES="pool_demo fetch_data fetch_data_callbacks errors replace_blocking echo fetch_http" sh tests/examples.sh
# shellcheck disable=SC2046
cc -static -o "$out/pool_demo_static" examples/pool_demo.c $(pkg-config --static --cflags --libs futures)
EXAMPLES=pool_demo POOL_DEMO="$out/pool_demo_static" sh tests/examples.sh
done_step "install"

# ---- 5. distcheck --------------------------------------------------------------------
step "5. make distcheck"
make -C build/release -j"$jobs" distcheck
done_step "distcheck"

# ---- 6. aarch64 ------------------------------------------------------------------------
# The coroutine context layer (both switches: ctx_aarch64.S and ucontext)
# cross-built with Debian's aarch64 compiler and run under qemu-user.
step "6. aarch64: the context switch under qemu-user"
ensure_packages gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
sh tools/test-aarch64.sh
done_step "aarch64"

# ---- 7. hardening ------------------------------------------------------------------------
step "7a. valgrind memcheck over every example (build/release)"
bash tools/check-valgrind.sh build/release
done_step "valgrind"

step "7b. signal storm: SIGALRM every 100 us, no SA_RESTART, 10 s (build/release)"
FUT_STORM_SECONDS=10 build/release/tests/test_signal_storm
done_step "signal storm"

step "7c. libFuzzer: API call sequences for 60 s (tools/fuzz.sh)"
bash tools/fuzz.sh 60
done_step "fuzz"

echo
echo "==== all checks passed in $(( $(date +%s) - t_all )) s ===="
