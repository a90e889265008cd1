#!/usr/bin/env bash
# Adaptive batching, measured: scikit-learn models trained at start-up on load_digits(), each request
# one 8x8 image as 64 floats in JSON, served in the same run by
#   pyrs-unbatched  examples/batched_model, POST /MODEL           (one model call per request)
#   pyrs-batched    examples/batched_model, POST /MODEL/batched   ("batch": {"max_size": 64, "max_wait_ms": 2})
#   litserve        LitServe from PyPI, max_batch_size=64, batch_timeout=2 ms (benches/peers/litserve_digits.py)
# for MODEL = forest (RandomForest, 50 trees) and logreg (LogisticRegression).
#
#   benches/batching.sh                                # 10 s per run, 1 round (about 3 minutes plus set-up)
#   BENCH_DURATION=5s BENCH_ROUNDS=2 benches/batching.sh
#
# Like benches/compare.sh (and with its helpers, benches/lib.sh): every server is one process group
# pinned to CPU $BENCH_SERVER_CPU (0), wrk to CPU $BENCH_WRK_CPU (1), both at nice -20 (as root);
# `wrk -t1 -c64 --timeout 10s` (LitServe's p99 nears wrk's default 2 s). A run with a non-2xx answer or
# a socket error is INVALID. The batch sizes come from pyrs's /metrics (pyrs_batch_size) and from a
# counter in the LitServe handler. Then one client alone (`wrk -c1`) on the unbatched and the batched
# pyrs routes: a lone request must not wait for max_wait_ms.
#
# Environment: BENCH_DURATION (10s) BENCH_ROUNDS (1) BENCH_CONNECTIONS (64) BENCH_SERVER_CPU (0)
# BENCH_WRK_CPU (1) BENCH_PORT_BASE (18400) BENCH_NICE (-20) BENCH_NO_BUILD=1 (skip cargo build)
# BENCH_OUT (target/batching-<time>) BENCH_COMMIT (the commit the table names; default HEAD). The
# benchmark-only packages (litserve, scikit-learn) go into the virtualenv target/batching-venv, made
# here. Load goes to 127.0.0.1 only; every server is stopped on exit.

set -euo pipefail
set +m

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DURATION=${BENCH_DURATION:-10s}
ROUNDS=${BENCH_ROUNDS:-1}
CONNS=${BENCH_CONNECTIONS:-64}
SERVER_CPU=${BENCH_SERVER_CPU:-0}
WRK_CPU=${BENCH_WRK_CPU:-1}
PORT_BASE=${BENCH_PORT_BASE:-18400}
NICE=${BENCH_NICE:--20}
((EUID == 0)) || NICE=0
OUT=${BENCH_OUT:-$ROOT/target/batching-$(date +%Y%m%d-%H%M%S)}
VENV=$ROOT/target/batching-venv
PYTHON=${PYTHON:-python3}
START_TIME=$SECONDS
mkdir -p "$OUT"
RESULTS=$OUT/results.tsv
: >"$RESULTS"

# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

need_tools cargo wrk taskset curl setsid pgrep "$PYTHON"
if (($(nproc) < 2)); then
    say "warning: one CPU: server and wrk share it"
    SERVER_CPU=0 WRK_CPU=0
fi
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- build and environment ----------------------------------------------

setup_venv() {
    [[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -c 'import litserve, sklearn' 2>/dev/null || {
        say "== installing litserve and scikit-learn into $VENV"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check litserve==0.2.19 \
            -r "$ROOT/examples/batched_model/requirements.txt" >&2
    }
}
build_with_venv

# The request body: image 0 of load_digits() (a 0), 64 floats as JSON.
BODY=$OUT/digit.json
"$VENV/bin/python" -c 'import json; from sklearn.datasets import load_digits; print(json.dumps(load_digits().data[0].tolist()))' >"$BODY"
cat >"$OUT/post.lua" <<'LUA'
-- POSTs the JSON body read from the file given as the script's argument.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
function init(args)
   local f = assert(io.open(args[1], "rb"))
   wrk.body = f:read("*a"):gsub("%s+$", "")
   f:close()
end
LUA

# ---- runs ----------------------------------------------------------------

# metric NAME ROUTE: a pyrs_batch_size sample (sum or count) for ROUTE from pyrs's /metrics.
metric() {
    curl -s --max-time 5 "http://127.0.0.1:$ADMIN_PORT/metrics" |
        awk -v name="pyrs_batch_size_$1" -v route="route=\"$2\"" 'index($0, name "{") == 1 && index($0, route) {print $NF}'
}

# measure NAME URL MODEL: warm-up, then ROUNDS runs of wrk; records the mean batch size.
measure() {
    local name=$1 url=$2 model=$3 round raw cpu0 cpu1 sum0 count0 sum1 count1
    nice -n "$NICE" taskset -c "$WRK_CPU" wrk -t1 -c"$CONNS" -d2s --timeout 10s -s "$OUT/post.lua" "$url" -- "$BODY" >/dev/null 2>&1 || true
    for round in $(seq "$ROUNDS"); do
        raw=$OUT/wrk-$name-$model-$round.txt
        read -r sum0 count0 < <(batch_counts "$name" "$model")
        cpu0=$(cpu_ticks "$name")
        nice -n "$NICE" taskset -c "$WRK_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" --timeout 10s --latency -s "$OUT/post.lua" "$url" -- "$BODY" >"$raw" 2>&1 || true
        cpu1=$(cpu_ticks "$name")
        read -r sum1 count1 < <(batch_counts "$name" "$model")
        printf '%s\t%s\n' "$(wrk_row "$name" "$model" "$round" $((cpu1 - cpu0)) "$raw")" \
            "$(awk -v s=$((sum1 - sum0)) -v c=$((count1 - count0)) 'BEGIN {printf "%.1f", (c > 0 ? s / c : 1)}')" >>"$RESULTS"
        say "  $(tail -n 1 "$RESULTS" | cut -f1-7,9 | tr '\t' ' ')"
    done
}

# batch_counts NAME MODEL: "rows calls" handled so far in batches (1 1 for unbatched servers).
batch_counts() {
    case $1 in
    pyrs-batched) echo "$(metric sum "/$2/batched") $(metric count "/$2/batched")" ;;
    litserve) cat "$OUT/litserve-$2.stats" 2>/dev/null || echo "0 0" ;;
    *) echo "0 0" ;;
    esac
}

# lone NAME URL MODEL: one client alone; records wrk's median and p99 latency.
lone() {
    local name=$1 url=$2 model=$3 raw=$OUT/wrk-lone-$1-$3.txt
    nice -n "$NICE" taskset -c "$WRK_CPU" wrk -t1 -c1 -d"$DURATION" --timeout 10s --latency -s "$OUT/post.lua" "$url" -- "$BODY" >"$raw" 2>&1 || true
    awk -v name="$name" -v model="$model" '
        function ms(v) {
            if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
            if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
            if (v ~ /s$/) return substr(v, 1, length(v) - 1) * 1000
            return v + 0
        }
        /^ +50%/ { p50 = ms($2) }
        /^ +99%/ { p99 = ms($2) }
        /Non-2xx or 3xx responses:|Socket errors:/ { bad = 1 }
        END { printf "lone\t%s\t%s\t%.3f\t%.3f\t%s\n", name, model, p50, p99, bad ? "INVALID" : "valid" }' "$raw" >>"$RESULTS"
    say "  $(tail -n 1 "$RESULTS" | tr '\t' ' ')"
}

export VIRTUAL_ENV=$VENV
PORT_PYRS=$((PORT_BASE + 1))
ADMIN_PORT=$((PORT_BASE + 2))
say "== pyrs (examples/batched_model, pinned to CPU $SERVER_CPU; logs in $OUT)"
READY_PATH=/ start_server pyrs "$PORT_PYRS" "$ROOT/examples/batched_model" "$PYRS" project.pyrs \
    --bind "127.0.0.1:$PORT_PYRS" --admin "127.0.0.1:$ADMIN_PORT" --log-level warn || die "pyrs did not start"
PID[pyrs-unbatched]=${PID[pyrs]} PID[pyrs-batched]=${PID[pyrs]}
for model in forest logreg; do
    say "== $model: wrk -t1 -c$CONNS -d$DURATION, $ROUNDS round(s)"
    measure pyrs-unbatched "http://127.0.0.1:$PORT_PYRS/$model" "$model"
    measure pyrs-batched "http://127.0.0.1:$PORT_PYRS/$model/batched" "$model"
    say "== $model: one client alone (wrk -c1)"
    lone pyrs-unbatched "http://127.0.0.1:$PORT_PYRS/$model" "$model"
    lone pyrs-batched "http://127.0.0.1:$PORT_PYRS/$model/batched" "$model"
done
unset "PID[pyrs-unbatched]" "PID[pyrs-batched]"
PYRS_RSS=$(rss_mb pyrs)
stop_server pyrs

for model in forest logreg; do
    port=$((PORT_BASE + 10))
    say "== litserve $model (pinned to CPU $SERVER_CPU)"
    if START_TIMEOUT=120 READY_PATH=/health start_server litserve "$port" "$ROOT/benches/peers" "$VENV/bin/python" litserve_digits.py \
        "$model" "$port" "$OUT/litserve-$model.stats"; then
        # Ready once the model worker answers, not only the HTTP front.
        for _ in $(seq 300); do
            curl -sf -o /dev/null --max-time 2 -H "Content-Type: application/json" -d @"$BODY" "http://127.0.0.1:$port/predict" && break
            sleep 0.2
        done
        measure litserve "http://127.0.0.1:$port/predict" "$model"
        printf 'rss\tlitserve-%s\t%s\n' "$model" "$(rss_mb litserve)" >>"$RESULTS"
        stop_server litserve
    else
        say "SKIPPING litserve $model: it did not start (log: $OUT/litserve.log)"
    fi
done
STARTED=()

# ---- report --------------------------------------------------------------

ELAPSED=$((SECONDS - START_TIME))
"$PYTHON" - "$RESULTS" "$DURATION" "$ROUNDS" "$CONNS" "$LOAD_BEFORE" "$NICE" "$ELAPSED" "$PYRS_RSS" "${BENCH_COMMIT:-$(git -C "$ROOT" rev-parse --short HEAD)}" >"$OUT/table.md" <<'PY'
import statistics, sys
from collections import defaultdict

path, duration, rounds, conns, load, nice, elapsed, pyrs_rss, commit = sys.argv[1:]
runs, lone, rss = defaultdict(list), {}, {}
for line in open(path):
    f = line.rstrip("\n").split("\t")
    if f[0] == "lone":
        lone[(f[1], f[2])] = (float(f[3]), float(f[4]), f[5] == "valid")
    elif f[0] == "rss":
        rss[f[1]] = f[2]
    else:
        runs[(f[0], f[1])].append((float(f[3]), float(f[4]), f[5] == "valid", f[6], float(f[8])))

def cell(server, model):
    rs = runs.get((server, model), [])
    if not rs or not all(r[2] for r in rs):
        return None
    return statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs), statistics.median(r[4] for r in rs)

names = {"forest": "RandomForest (50 trees)", "logreg": "LogisticRegression"}
servers = ["pyrs-unbatched", "pyrs-batched", "litserve"]
print(f"Commit {commit}. Server pinned to CPU 0, wrk to CPU 1, both at nice {nice}; `wrk -t1 -c{conns} -d{duration}`, "
      f"median of {rounds} round(s); POST of one load_digits() image as 64 floats in JSON. Load average before: {load}.")
print()
print("| model | server | requests/s | p99 | mean batch | vs pyrs unbatched | vs LitServe |")
print("|---|---|---|---|---|---|---|")
ratio = {}
for model in ["forest", "logreg"]:
    base, lit = cell("pyrs-unbatched", model), cell("litserve", model)
    for s in servers:
        c = cell(s, model)
        if c is None:
            rs = runs.get((s, model), [])
            print(f"| {names[model]} | {s} | {'INVALID ' + ' '.join(sorted({r[3] for r in rs})) if rs else 'n/a'} | | | | |")
            continue
        vb = f"{c[0] / base[0]:.1f}x" if base else "n/a"
        vl = f"{c[0] / lit[0]:.1f}x" if lit else "n/a"
        ratio[(s, model)] = (c[0] / base[0] if base else None, c[0] / lit[0] if lit else None, c[1])
        print(f"| {names[model]} | {s} | {c[0]:,.0f} | {c[1]:.1f} ms | {c[2]:.1f} | {vb} | {vl} |")
print()
print("One client alone (`wrk -c1`), median / p99 latency:")
print()
for model in ["forest", "logreg"]:
    u, b = lone.get(("pyrs-unbatched", model)), lone.get(("pyrs-batched", model))
    if u and b:
        print(f"- {names[model]}: unbatched {u[0]:.2f} / {u[1]:.2f} ms, batched {b[0]:.2f} / {b[1]:.2f} ms "
              f"(median difference {b[0] - u[0]:+.2f} ms){'' if u[2] and b[2] else ' INVALID'}")
print()
print(f"RSS: pyrs {pyrs_rss} MB (both models, one process); LitServe " +
      ", ".join(f"{k.split('-')[1]} {v} MB" for k, v in rss.items()) + " (one model each).")
print()
print("Issue-13 targets:")
def t(label, ok):
    print(f"- {label}: {'MET' if ok else 'NOT MET' if ok is not None else 'n/a'}")
fb = ratio.get(("pyrs-batched", "forest"))
lb = ratio.get(("pyrs-batched", "logreg"))
t(f"RandomForest: pyrs batched >= 10x pyrs unbatched ({fb[0]:.1f}x)" if fb and fb[0] else "RandomForest: >= 10x unbatched", fb[0] >= 10 if fb and fb[0] else None)
t(f"RandomForest: pyrs batched >= 8x LitServe batched ({fb[1]:.1f}x)" if fb and fb[1] else "RandomForest: >= 8x LitServe", fb[1] >= 8 if fb and fb[1] else None)
t(f"RandomForest: pyrs batched p99 < 100 ms ({fb[2]:.1f} ms)" if fb else "RandomForest: p99 < 100 ms", fb[2] < 100 if fb else None)
t(f"LogisticRegression: pyrs batched >= 4x pyrs unbatched ({lb[0]:.1f}x)" if lb and lb[0] else "LogisticRegression: >= 4x unbatched", lb[0] >= 4 if lb and lb[0] else None)
for model in ["forest", "logreg"]:
    u, b = lone.get(("pyrs-unbatched", model)), lone.get(("pyrs-batched", model))
    if u and b:
        t(f"{names[model]}: a lone client's median latency within 1 ms of unbatched ({b[0] - u[0]:+.2f} ms)", abs(b[0] - u[0]) <= 1.0)
print()
print(f"batching.sh took {int(elapsed) // 60} min {int(elapsed) % 60} s.")
PY
cat "$OUT/table.md"
say "(raw wrk output and logs: $OUT)"
