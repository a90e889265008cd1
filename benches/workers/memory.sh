#!/usr/bin/env bash
# Copy-on-write sharing across workers (issue 5): a ~200 MB model, 2 workers,
# 10k+ requests, then gc.collect() in each worker; prints each process's
# USS (Private_Clean + Private_Dirty from /proc/PID/smaps_rollup) and
# checks it stays under 10 MB per worker.
#
#   benches/workers/memory.sh            # PYRS=path/to/pyrs to skip the build
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
PORT=${PORT:-18410}
PYRS=${PYRS:-}
if [ -z "$PYRS" ]; then
    cargo build --release --quiet
    PYRS=$ROOT/target/release/pyrs
fi
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
LOG=$(mktemp)
"$PYRS" benches/workers/project.pyrs --workers 2 --bind "127.0.0.1:$PORT" >"$LOG" 2>&1 &
MASTER=$!
trap 'kill -TERM $MASTER 2>/dev/null || true; wait $MASTER 2>/dev/null || true; rm -f "$LOG"' EXIT
for _ in $(seq 1 300); do grep -q "Listening on" "$LOG" && break; sleep 0.1; done
grep -q "Listening on" "$LOG" || { cat "$LOG"; exit 1; }
WORKERS=$(sed -n 's/.*pids \[\(.*\)\].*/\1/p' "$LOG" | tr -d ',')
TEMPLATE=$(sed -n 's/.*template \([0-9]*\) (generation 1) loaded.*/\1/p' "$LOG")

uss_kb() { awk '/^Private_(Clean|Dirty):/ {s += $2} END {print s}' "/proc/$1/smaps_rollup"; }
field_kb() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/smaps_rollup"; }

echo "before load:"
for p in $TEMPLATE $WORKERS; do echo "  pid $p  RSS $(( $(field_kb "$p" Rss) / 1024 )) MB  USS $(( $(uss_kb "$p") / 1024 )) MB"; done
OUT=$(wrk -t1 -c8 -d3s "http://127.0.0.1:$PORT/lookup?u=user777")
REQS=$(echo "$OUT" | awk '/requests in/ {print $1}')
echo "load: $REQS requests to /lookup ($(echo "$OUT" | awk '/Requests\/sec/ {print $2}') req/s)"
[ "$REQS" -ge 10000 ] || { echo "fewer than 10k requests" >&2; exit 1; }
# New connections spread over both workers' listeners: every worker collects.
declare -A SEEN=()
for _ in $(seq 1 200); do
    SEEN[$(curl -s "http://127.0.0.1:$PORT/gc")]=1
    [ "${#SEEN[@]}" -ge 2 ] && break
done
echo "gc.collect() ran in workers: ${!SEEN[*]}"
echo "after load and gc.collect():"
FAIL=0
for p in $WORKERS; do
    USS=$(uss_kb "$p")
    echo "  worker $p  RSS $(( $(field_kb "$p" Rss) / 1024 )) MB  PSS $(( $(field_kb "$p" Pss) / 1024 )) MB  USS $((USS / 1024)) MB ($USS kB)"
    [ "$USS" -lt 10240 ] || FAIL=1
done
echo "  template $TEMPLATE  RSS $(( $(field_kb "$TEMPLATE" Rss) / 1024 )) MB  USS $(( $(uss_kb "$TEMPLATE") / 1024 )) MB"
if [ "$FAIL" = 0 ]; then echo "PASS: every worker's private memory is under 10 MB"; else echo "FAIL: a worker's private memory is 10 MB or more"; exit 1; fi
