#!/bin/sh
# examples.sh - examples/pool_demo runs and prints the lines it promises.
# POOL_DEMO may name another build of it (tools/check-all.sh runs the one
# built against the installed library).
demo=${POOL_DEMO:-${top_builddir:-.}/examples/pool_demo}

out=$("$demo" 2>&1)
rc=$?
printf '%s\n' "$out"
if [ "$rc" -ne 0 ]; then
    echo "FAIL: $demo exited with status $rc"
    exit 1
fi

status=0
expect() {
    if ! printf '%s\n' "$out" | grep -Eq "$1"; then
        echo "FAIL: no line matching: $1"
        status=1
    fi
}
expect '^compute: 8 jobs, total = 170666346666800000$'
# Four 100 ms sleeps on the blocking lane run side by side: 0.1 s (one after
# another would take 0.4 s). 0.2 s is allowed for a loaded or sanitized run.
expect '^blocking: 4 jobs of 100 ms took 0\.[12]s$'
# Thread counts depend on the machine, and counters are snapshots: only the
# shape of the stats line is checked (tests/ check the counters).
expect '^stats: compute lane [0-9]+ threads, [0-9]+ jobs run; blocking lane peak [0-9]+ threads, [0-9]+ jobs run$'
exit $status
