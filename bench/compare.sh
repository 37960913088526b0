#!/usr/bin/env bash
# compare.sh - run our bench program and a peer's side by side, A B A B,
# and print the median wall of each and their ratio (ours / peer).
#
#   bench/compare.sh RUNS 'OURS COMMAND' 'PEER COMMAND'
#   bench/compare.sh 7 'build/release/bench/w2_raw_pool 1000000' '/tmp/peers/w2_tbb 1000000'
#
# Both commands must print the ../shared/peers one-line result (wall_s=...).
# One warm-up run of each is not counted.
set -euo pipefail
runs=${1:?runs}; ours=${2:?ours}; peer=${3:?peer}

wall() { "$@" | sed -n 's/.*wall_s=\([0-9.]*\).*/\1/p'; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

env $ours >/dev/null; env $peer >/dev/null
a=(); b=()
for ((i = 0; i < runs; i++)); do
    a+=("$(wall env $ours)")
    b+=("$(wall env $peer)")
done
ma=$(printf '%s\n' "${a[@]}" | median)
mb=$(printf '%s\n' "${b[@]}" | median)
printf 'ours: %s\n  runs: %s\n  median wall_s=%s\n' "$ours" "${a[*]}" "$ma"
printf 'peer: %s\n  runs: %s\n  median wall_s=%s\n' "$peer" "${b[*]}" "$mb"
awk -v a="$ma" -v b="$mb" 'BEGIN { printf "ratio ours/peer = %.3f\n", a / b }'
