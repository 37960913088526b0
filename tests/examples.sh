#!/bin/sh
# examples.sh - each example runs, exits 0 and prints the lines it promises.
#   EXAMPLES_BIN  directory of the example programs (default: the build's
#                 examples/; tools/check-all.sh passes the ones it built
#                 against the installed library)
#   POOL_DEMO     another build of pool_demo (default: $EXAMPLES_BIN/pool_demo)
#   EXAMPLES      the examples to run (default: all of them; "echo" is
#                 echo_server and echo_client together)
bin=${EXAMPLES_BIN:-${top_builddir:-.}/examples}
srcdir=${top_srcdir:-.}
examples=${EXAMPLES:-pool_demo sync_vs_async fetch_data fetch_data_callbacks errors replace_blocking
echo fetch_http}

err_file=$(mktemp "${TMPDIR:-/tmp}/examples-err.XXXXXX") || exit 1
srv_out=$(mktemp "${TMPDIR:-/tmp}/examples-srv.XXXXXX") || exit 1
srv_err=$(mktemp "${TMPDIR:-/tmp}/examples-srverr.XXXXXX") || exit 1
srv_pid= # echo_server in the background, while it runs
trap 'rm -f "$err_file" "$srv_out" "$srv_err"; [ -z "$srv_pid" ] || kill "$srv_pid" 2>/dev/null' EXIT

status=0
name=
out=
err=

fail() {
    echo "FAIL: $name: $*"
    status=1
}

# run NAME PROGRAM [ARGS...]: run it, keep its stdout in $out and stderr in
# $err, show both. Returns 1 (and fails) if it exits nonzero.
run() {
    name=$1
    shift
    echo "==== $name"
    out=$("$@" 2>"$err_file")
    _rc=$?
    err=$(cat "$err_file")
    printf '%s\n' "$out"
    [ -z "$err" ] || printf 'stderr: %s\n' "$err"
    if [ "$_rc" -ne 0 ]; then
        fail "$* exited with status $_rc"
        return 1
    fi
    return 0
}

# expect ERE: some line of the output matches.
expect() {
    printf '%s\n' "$out" | grep -Eq "$1" || fail "no line matching: $1"
}

# lines ERE...: the output is exactly these lines, in this order (each ERE
# matches its whole line). Helpers' own variables start with _ (sh has no
# local variables).
lines() {
    _i=0
    for _pattern in "$@"; do
        _i=$((_i + 1))
        _line=$(printf '%s\n' "$out" | sed -n "${_i}p")
        printf '%s\n' "$_line" | grep -Eq "^$_pattern\$" ||
            fail "line $_i is '$_line', expected /^$_pattern\$/"
    done
    _count=$(printf '%s\n' "$out" | wc -l)
    [ "$_count" -eq "$_i" ] || fail "$_count lines of output, expected $_i"
}

# no_stderr: nothing on stderr (a rejected future freed unread prints there).
no_stderr() {
    [ -z "$err" ] || fail "unexpected output on stderr"
}

# within WHAT VALUE LOW HIGH: LOW <= VALUE <= HIGH (decimal numbers).
within() {
    awk -v v="$2" -v lo="$3" -v hi="$4" 'BEGIN { exit !(v != "" && v + 0 >= lo && v + 0 <= hi) }' ||
        fail "$1 is '$2', expected between $3 and $4"
}

# Milliseconds since the epoch, or nothing where date has no %N.
now_ms() {
    case $(date +%N) in
    *[!0-9]* | "") ;;
    *) echo $(($(date +%s%N) / 1000000)) ;;
    esac
}

# TENTHS seconds at most: until the server in the background ($srv_pid)
# has printed its first line into $srv_out. Returns 1 if it has not.
wait_first_line() {
    _t=0
    while [ ! -s "$srv_out" ] || [ "$(sed -n 1p "$srv_out" | wc -l)" -eq 0 ]; do
        [ "$_t" -lt "$1" ] || return 1
        sleep 0.1
        _t=$((_t + 1))
    done
    return 0
}

# TENTHS seconds at most: wait for the server in the background to exit,
# then kill it. Sets srv_rc (its status; 143 when it had to be killed).
wait_server() {
    ( _t=0
      while [ "$_t" -lt "$1" ]; do
          sleep 0.1
          kill -0 "$srv_pid" 2>/dev/null || exit 0
          _t=$((_t + 1))
      done
      kill "$srv_pid" 2>/dev/null ) >/dev/null 2>&1 &
    _watchdog=$!
    wait "$srv_pid"
    srv_rc=$?
    srv_pid=
    wait "$_watchdog"
}

for example in $examples; do
    case $example in
    pool_demo)
        run pool_demo "${POOL_DEMO:-$bin/pool_demo}" || continue
        no_stderr
        expect '^compute: 8 jobs, total = 170666346666800000$'
        # Four 100 ms sleeps on the blocking lane run side by side: 0.1 s (one
        # after another would take 0.4 s). 0.2 s is allowed for a loaded or
        # sanitized run.
        expect '^blocking: 4 jobs of 100 ms took 0\.[12]s$'
        # Thread counts depend on the machine, and counters are snapshots: only
        # the shape of the stats line is checked (tests/ check the counters).
        expect '^stats: compute lane [0-9]+ threads, [0-9]+ jobs run; blocking lane peak [0-9]+ threads, [0-9]+ jobs run$'
        ;;
    sync_vs_async)
        run sync_vs_async "$bin/sync_vs_async" || continue
        no_stderr
        lines 'Sync:  [0-9]+\.[0-9]{2}s' 'Async: [0-9]+\.[0-9]{2}s' 'A done' 'B done' 'C done'
        # 3 s one after another, 1 s at once; the slack is for a loaded machine.
        within "Sync" "$(printf '%s\n' "$out" | sed -n 's/^Sync:  \(.*\)s$/\1/p')" 2.95 3.30
        within "Async" "$(printf '%s\n' "$out" | sed -n 's/^Async: \(.*\)s$/\1/p')" 0.95 1.30
        ;;
    fetch_data | fetch_data_callbacks | fetch_http)
        # The same program in the await style and in the callback style,
        # and for real (fetch_http: HTTP GETs to a server inside the
        # program, the delays on the server's side).
        t0=$(now_ms)
        run "$example" "$bin/$example" || continue
        t1=$(now_ms)
        no_stderr
        lines 'Sequential:' \
            '  Fetching api/users\.\.\.' \
            '  Fetching api/posts\.\.\.' \
            '  Got: api/users, api/posts' \
            'Concurrent:' \
            '  Fetching api/users\.\.\.' \
            '  Fetching api/posts\.\.\.' \
            '  Fetching api/comments\.\.\.' \
            '  Got: api/users, api/posts, api/comments'
        # 0.5 + 0.5 one after another, then max(0.5, 0.3, 0.4): 1.5 s, plus
        # the start of the process (slow under a sanitizer) and, for
        # fetch_http, five connections on loopback.
        if [ -n "$t0" ] && [ -n "$t1" ]; then
            within "the run time in ms" "$((t1 - t0))" 1450 2500
        fi
        ;;
    errors)
        run errors "$bin/errors" || continue
        no_stderr
        lines "Caught: Can't process zero" \
            '  Result: 10' \
            "  Error: Can't process zero" \
            '  Result: 30' \
            'Task created, doing other work\.\.\.' \
            'Task result: 50'
        ;;
    replace_blocking)
        # A small directory that is in every tree, the distributed one too.
        dir=$srcdir/man
        [ -d "$dir" ] || dir=$srcdir/include
        n=$(find "$dir" -type f | wc -l | tr -d ' ')
        run replace_blocking "$bin/replace_blocking" "$dir" || continue
        lines "Sequential: $n files, checksum [0-9a-f]{16}, [0-9]+\.[0-9]{2}s" \
            "Concurrent: $n files, checksum [0-9a-f]{16}, [0-9]+\.[0-9]{2}s" \
            'Same checksum: yes'
        sums=$(printf '%s\n' "$out" | sed -n 's/^[A-Za-z]*: [0-9]* files, checksum \([0-9a-f]*\),.*/\1/p' | sort -u | wc -l)
        [ "$sums" -eq 1 ] || fail "the two checksums differ"
        # The progress line on stderr counted every file.
        printf '%s\n' "$err" | grep -q "read $n/$n files" || fail "no progress line 'read $n/$n files' on stderr"
        ;;
    echo)
        # echo_server on a port the kernel picks, for one client; it prints
        # the port on its first line. Nothing here may hang: the server is
        # killed (and the test fails) if it has not exited 5 s after the
        # client, or printed its port within 5 s.
        : >"$srv_out"
        "$bin/echo_server" 0 --once 1 >"$srv_out" 2>"$srv_err" &
        srv_pid=$!
        if ! wait_first_line 50; then
            name=echo_server
            fail "no 'Serving on' line within 5 s; its stderr: $(cat "$srv_err")"
            wait_server 0
            continue
        fi
        port=$(sed -n '1s/^Serving on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$srv_out")
        if [ -z "$port" ]; then
            name=echo_server
            fail "first line is '$(sed -n 1p "$srv_out")', expected 'Serving on 127.0.0.1:PORT'"
            wait_server 0
            continue
        fi
        if run echo_client "$bin/echo_client" "$port"; then
            no_stderr
            lines "Send: 'Hello World!'" \
                "Received: 'Hello World!'" \
                'Close the connection'
        fi
        wait_server 50
        name=echo_server
        echo "==== echo_server $port (in the background)"
        out=$(cat "$srv_out")
        err=$(cat "$srv_err")
        printf '%s\n' "$out"
        [ -z "$err" ] || printf 'stderr: %s\n' "$err"
        [ "$srv_rc" -eq 0 ] ||
            fail "echo_server 0 --once 1 exited with status $srv_rc (143: killed, it did not stop)"
        no_stderr
        lines 'Serving on 127\.0\.0\.1:[0-9]+' \
            "Received 'Hello World!' from 127\\.0\\.0\\.1:[0-9]+" \
            "Send: 'Hello World!'" \
            'Close the connection'
        ;;
    *)
        name=$example
        fail "unknown example (EXAMPLES='$examples')"
        ;;
    esac
done
exit $status
