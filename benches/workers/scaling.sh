#!/usr/bin/env bash
# CPU-bound scaling (issue 5): a handler doing about 200 us of pure Python;
# 1 worker vs 2 workers in the same run, median of 3 rounds each.
# THREADS (default 1) is thread_count per worker: for CPU-bound handlers one
# thread per worker is the right setting (a second thread only waits for the
# GIL); THREADS=2 shows the cost of oversubscribing 2 cores.
#
#   benches/workers/scaling.sh           # DURATION=5s ROUNDS=3 THREADS=1 PYRS=... to change
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
PORT=${PORT:-18420}
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-1}
PYRS=${PYRS:-}
if [ -z "$PYRS" ]; then
    cargo build --release --quiet
    PYRS=$ROOT/target/release/pyrs
fi
export MODEL_MB=1
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
run() { # workers -> req/s of one round
    local log; log=$(mktemp)
    "$PYRS" benches/workers/project.pyrs --workers "$1" --threads "$THREADS" --bind "127.0.0.1:$PORT" >"$log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 300); do grep -q "Listening on" "$log" && break; sleep 0.1; done
    local out; out=$(wrk -t1 -c16 -d"$DURATION" "http://127.0.0.1:$PORT/burn")
    kill -TERM $pid; wait $pid 2>/dev/null || true; rm -f "$log"
    if echo "$out" | grep -q "Non-2xx\|Socket errors"; then echo "INVALID run: $out" >&2; echo 0; return; fi
    echo "$out" | awk '/Requests\/sec/ {print int($2)}'
}
one=(); two=()
for _ in $(seq 1 "$ROUNDS"); do one+=("$(run 1)"); two+=("$(run 2)"); done
M1=$(printf '%s\n' "${one[@]}" | median)
M2=$(printf '%s\n' "${two[@]}" | median)
echo "thread_count $THREADS per worker"
echo "1 worker : ${one[*]} req/s (median $M1)"
echo "2 workers: ${two[*]} req/s (median $M2)"
awk -v a="$M1" -v b="$M2" 'BEGIN {r = (a > 0) ? b / a : 0; printf "ratio 2/1: %.2fx (target >= 1.70x): %s\n", r, (r >= 1.7) ? "met" : "NOT met"}'
