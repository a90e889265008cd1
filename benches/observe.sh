#!/usr/bin/env bash
# What observability costs on GET /hello (examples/echo, one pool thread), in one run:
#   base       metrics recorded (always on), no access log
#   access     metrics + access log to a file (target: >= 85% of base's requests/s)
#   nometrics  no metrics recorded (PYRS_INTERNAL_BENCH_NO_METRICS, this benchmark only; target: base >= 97% of it)
# Each round runs the three configurations back to back (interleaved), the server
# pinned to CPU 0 and wrk (-t1 -c32) to CPU 1, both at nice -20 as root. Prints
# the median requests/s and server CPU time per response of each, and the ratios.
#   BENCH_DURATION (5s)  BENCH_ROUNDS (5)  BENCH_NO_BUILD=1 skips cargo build
# With BENCH_CALLGRIND=1 it counts instructions per request instead (valgrind's callgrind,
# independent of other load): counters zeroed after a warm-up, read after 10 s of wrk -t1 -c4.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${BENCH_DURATION:-5s}
ROUNDS=${BENCH_ROUNDS:-5}
NICE=-20
((EUID == 0)) || NICE=0
for tool in wrk taskset curl python3; do
    command -v "$tool" >/dev/null || { echo "benches/observe.sh: $tool is not installed" >&2; exit 1; }
done
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release --locked --bin pyrs
BIN=target/release/pyrs
OUT=target/bench-observe-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
PORT=$((20000 + RANDOM % 20000))
echo "results in $OUT" >&2

run() { # name round -> appends "name round req/s us/response" to results
    local name=$1 round=$2 env=() args=()
    case $name in
        access) args=(--access-log "$OUT/access.log") ;;
        nometrics) env=(PYRS_INTERNAL_BENCH_NO_METRICS=1) ;;
    esac
    env "${env[@]}" nice -n "$NICE" taskset -c 0 "$BIN" examples/echo/project.pyrs --bind "127.0.0.1:$PORT" \
        --threads 1 --log-level warn "${args[@]}" >"$OUT/$name-$round.log" 2>&1 &
    local pid=$!
    for _ in $(seq 200); do curl -sf "http://127.0.0.1:$PORT/hello" >/dev/null && break; sleep 0.05; done
    nice -n "$NICE" taskset -c 1 wrk -t1 -c32 -d1s "http://127.0.0.1:$PORT/hello" >/dev/null 2>&1 || true
    local t0 t1
    t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    nice -n "$NICE" taskset -c 1 wrk -t1 -c32 -d"$DURATION" "http://127.0.0.1:$PORT/hello" >"$OUT/wrk-$name-$round.txt" 2>&1
    t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    local rps total
    rps=$(awk '/Requests\/sec/ {print $2}' "$OUT/wrk-$name-$round.txt")
    total=$(awk '/requests in/ {print $1}' "$OUT/wrk-$name-$round.txt")
    if grep -q "Non-2xx\|Socket errors" "$OUT/wrk-$name-$round.txt"; then
        echo "$name round $round INVALID (errors, see $OUT/wrk-$name-$round.txt)" >&2; return
    fi
    local hz; hz=$(getconf CLK_TCK)
    echo "$name $round $rps $(python3 -c "print(($t1 - $t0) / $hz * 1e6 / $total)")" >>"$OUT/results.tsv"
}

callgrind() { # name [env] [args...] -> prints instructions per request
    local name=$1 env=$2; shift 2
    local dir="$OUT/callgrind-$name"; mkdir -p "$dir"
    env $env valgrind --tool=callgrind --callgrind-out-file="$dir/cg.%p" "$BIN" examples/echo/project.pyrs \
        --bind "127.0.0.1:$PORT" --threads 1 --log-level warn "$@" >"$dir/server.log" 2>&1 &
    local pid=$!
    for _ in $(seq 600); do curl -sf "http://127.0.0.1:$PORT/hello" >/dev/null && break; sleep 0.1; done
    wrk -t1 -c4 -d2s "http://127.0.0.1:$PORT/hello" >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    local n; n=$(wrk -t1 -c4 -d10s "http://127.0.0.1:$PORT/hello" | awk '/requests in/ {print $1}')
    callgrind_control -d "$pid" >/dev/null 2>&1
    kill "$pid"; wait "$pid" 2>/dev/null || true
    local ir; ir=$(grep -h '^totals:' "$dir"/cg.*.1 | awk '{s += $2} END {print s}')
    echo "$name: $((ir / n)) instructions per request ($n requests)"
}
if [ -n "${BENCH_CALLGRIND:-}" ]; then
    command -v valgrind >/dev/null || { echo "benches/observe.sh: valgrind is not installed" >&2; exit 1; }
    callgrind base ""
    callgrind nometrics PYRS_INTERNAL_BENCH_NO_METRICS=1
    callgrind access "" --access-log "$OUT/access.log"
    exit 0
fi

for round in $(seq "$ROUNDS"); do
    for name in base access nometrics; do run "$name" "$round"; done
done
python3 - "$OUT/results.tsv" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {}
for name in ("base", "access", "nometrics"):
    rps = [float(r[2]) for r in rows if r[0] == name]
    cpu = [float(r[3]) for r in rows if r[0] == name]
    med[name] = (statistics.median(rps), statistics.median(cpu))
    print(f"{name:10} {med[name][0]:10.0f} req/s   {med[name][1]:.2f} us CPU/response   ({len(rps)} rounds)")
print(f"access log to a file: {med['access'][0] / med['base'][0] * 100:.1f}% of the requests/s without it (target >= 85%)")
cost = (1 - med['base'][0] / med['nometrics'][0]) * 100
cpu_cost = (med['base'][1] / med['nometrics'][1] - 1) * 100
print(f"recording metrics: {cost:.1f}% fewer requests/s, {cpu_cost:.1f}% more CPU per response (target <= 3%)")
PY
