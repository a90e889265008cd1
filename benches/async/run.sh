#!/usr/bin/env bash
# Issue 10 benchmarks (not tests), release build; the server pinned to CPU 0
# and the clients to CPU 1, both at nice -20, like benches/compare.sh:
#   1. 1000 connections at once on GET /sleep (await asyncio.sleep(0.5)),
#      thread_count 1: wall time until all are answered (target < 1.5 s);
#   2. wrk -t1 -c32 GET /hello (def) vs GET /ahello (async def, same answer),
#      thread_count 1: what a coroutine's trip through the asyncio thread costs;
#   3. latency isolation, thread_count 8: `wrk -c7` on GET /slow (a def
#      handler blocking 200 ms) while `wrk -c8 --latency` measures GET /hello
#      (target: p99 and max < 10 ms).
# With BEFORE=path/to/another/pyrs, tests 2 and 3 also run it, interleaved
# round by round, for a before/after comparison in one run.
#
#   benches/async/run.sh        # DURATION=5s ROUNDS=3 PYRS=... BEFORE=... to change
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
ASYNC_PORT=${PORT:-18440}
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-3}
BEFORE=${BEFORE:-}
NICE=-20
((EUID == 0)) || NICE=0
# say, die, and this script's autogroup niced to NICE (restored on exit): with autogroup
# scheduling nice only ranks processes within a session (see benches/lib.sh).
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
PYRS=${PYRS:-}
if [ -z "$PYRS" ]; then
    cargo build --release --quiet
    PYRS=$ROOT/target/release/pyrs
fi
LOG=$(mktemp)
SERVER_PID=
stop() { if [ -n "$SERVER_PID" ]; then kill -TERM "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null || true; fi; SERVER_PID=; }
trap 'stop; rm -f "$LOG"; restore_autogroup' EXIT
start() { # binary threads
    # Empty the log here, not in the background job's redirection: that one may run after the
    # loop below has already found the previous server's "Listening on" line.
    : >"$LOG"
    nice -n "$NICE" taskset -c 0 "$1" benches/async/project.pyrs --threads "$2" --bind "127.0.0.1:$ASYNC_PORT" >"$LOG" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 600); do grep -q "Listening on" "$LOG" && return; sleep 0.1; done
    echo "pyrs did not start: $(cat "$LOG")" >&2
    exit 1
}
client() { nice -n "$NICE" taskset -c 1 "$@"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
valid() { ! grep -q "Non-2xx\|Socket errors" <<<"$1"; }
rps() { # path -> req/s of one wrk run (0 when any request failed)
    local out
    out=$(client wrk -t1 -c32 -d"$DURATION" "http://127.0.0.1:$ASYNC_PORT$1")
    if ! valid "$out"; then echo "INVALID run: $out" >&2; echo 0; return; fi
    awk '/Requests\/sec/ {print int($2)}' <<<"$out"
}
ms() { # wrk latency like 1.23ms / 456.00us / 1.20s -> ms
    awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; printf "%.2f", v}' <<<"$1"
}
isolation() { # -> "p50 p99 max hello_rps slow_rps" of one round
    local slow_out fast_out
    slow_out=$(mktemp)
    client wrk -t1 -c7 -d"$DURATION" "http://127.0.0.1:$ASYNC_PORT/slow" >"$slow_out" 2>&1 &
    local slow_pid=$!
    fast_out=$(client wrk -t1 -c8 -d"$DURATION" --latency "http://127.0.0.1:$ASYNC_PORT/hello")
    wait "$slow_pid" || true
    if ! valid "$fast_out" || ! valid "$(cat "$slow_out")"; then echo "INVALID run" >&2; fi
    local p50 p99 max
    p50=$(ms "$(awk '$1 == "50%" {print $2}' <<<"$fast_out")")
    p99=$(ms "$(awk '$1 == "99%" {print $2}' <<<"$fast_out")")
    max=$(ms "$(awk '$1 == "Latency" {print $4}' <<<"$fast_out")")
    echo "$p50 $p99 $max $(awk '/Requests\/sec/ {print int($2)}' <<<"$fast_out") $(awk '/Requests\/sec/ {print $2}' "$slow_out")"
    rm -f "$slow_out"
}
BINS=("$PYRS")
[ -n "$BEFORE" ] && BINS=("$BEFORE" "$PYRS")
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

start "$PYRS" 1
echo "== 1000 concurrent GET /sleep (await asyncio.sleep(0.5)), thread_count 1"
for _ in $(seq 1 "$ROUNDS"); do client python3 benches/async/burst.py "$ASYNC_PORT" 1000 "/sleep?s=0.5"; done
stop

echo "== wrk -t1 -c32 -d$DURATION, thread_count 1: GET /hello (def) and GET /ahello (async def)"
declare -A R
for _ in $(seq 1 "$ROUNDS"); do
    for b in "${BINS[@]}"; do
        start "$b" 1
        client wrk -t1 -c32 -d1s "http://127.0.0.1:$ASYNC_PORT/hello" >/dev/null
        R["$b hello"]+="$(rps /hello) "
        [ "$b" = "$PYRS" ] && R["$b ahello"]+="$(rps /ahello) "
        stop
    done
done
for b in "${BINS[@]}"; do
    # shellcheck disable=SC2086
    echo "$b GET /hello : ${R["$b hello"]}req/s (median $(printf '%s\n' ${R["$b hello"]} | median))"
done
# shellcheck disable=SC2086
echo "$PYRS GET /ahello: ${R["$PYRS ahello"]}req/s (median $(printf '%s\n' ${R["$PYRS ahello"]} | median))"

echo "== latency isolation, thread_count 8: wrk -c7 on /slow (200 ms) + wrk -c8 --latency on /hello, $DURATION"
echo "binary: /hello p50 p99 max (ms), /hello req/s, /slow req/s"
for _ in $(seq 1 "$ROUNDS"); do
    for b in "${BINS[@]}"; do
        start "$b" 8
        echo "$b: $(isolation)"
        stop
    done
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
