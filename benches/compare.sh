#!/usr/bin/env bash
# Side-by-side throughput of pyrs and other Python HTTP servers on this machine.
#
#   benches/compare.sh                 # full run: 3 rounds of 10 s per test (about 9 minutes)
#   BENCH_DURATION=3s BENCH_ROUNDS=1 benches/compare.sh   # quick look
#
# What it does:
#   1. builds pyrs (release) and examples/native_hello (the same HTTP core
#      serving the same routes from Rust: the no-Python ceiling);
#   2. creates target/bench-venv with socketify and granian from PyPI;
#   3. starts every server on 127.0.0.1, one process, pinned to CPU
#      $BENCH_SERVER_CPU (0), with the handlers in benches/peers/;
#   4. runs wrk pinned to CPU $BENCH_WRK_CPU (1), `wrk -t1 -c32 -d10s`, for
#      (a) GET /hello, (b) 16 pipelined GET /hello, (c) POST 1 KiB echo,
#      (d) GET a 10-key dict as JSON; rounds are interleaved across servers;
#   5. prints one markdown table: median requests/s, median p99, RSS, the
#      pyrs/peer ratios and pyrs/ceiling (Python efficiency). A run with any
#      non-2xx/3xx response or socket error is INVALID and never counted;
#   6. checks a handler that sleeps 10 ms with thread_count 8 (target >= 600
#      req/s) and the idle RSS of examples/echo (target <= 20 MB).
#
# Environment:
#   BENCH_DURATION (10s)  BENCH_ROUNDS (3)  BENCH_CONNECTIONS (32)
#   BENCH_PEERS ("socketify granian-wsgi"; granian-rsgi is also known)
#   BENCH_SERVER_CPU (0)  BENCH_WRK_CPU (1)  BENCH_PORT_BASE (18300)
#   BENCH_SLEEP_DURATION (5s)  BENCH_NICE (-20, as root)  BENCH_NO_BUILD=1 skips cargo build
#   BENCH_OUT (target/bench-<time>): logs, raw wrk output, results.tsv, table.md
#
# Load goes to 127.0.0.1 only; every server started here is stopped on exit.

set -euo pipefail
set +m # no job control: a background `setsid` then keeps its pid, which is its process group

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DURATION=${BENCH_DURATION:-10s}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_CONNECTIONS:-32}
PEERS=${BENCH_PEERS:-socketify granian-wsgi}
SERVER_CPU=${BENCH_SERVER_CPU:-0}
WRK_CPU=${BENCH_WRK_CPU:-1}
PORT_BASE=${BENCH_PORT_BASE:-18300}
SLEEP_DURATION=${BENCH_SLEEP_DURATION:-5s}
# Servers and wrk run at this niceness (root only) so that other work on the
# machine (builds) does not preempt them in the middle of a run.
NICE=${BENCH_NICE:--20}
((EUID == 0)) || NICE=0
OUT=${BENCH_OUT:-$ROOT/target/bench-$(date +%Y%m%d-%H%M%S)}
VENV=$ROOT/target/bench-venv
PEERS_DIR=$ROOT/benches/peers
WRK_DIR=$ROOT/benches/wrk
PYTHON=${PYTHON:-python3}
START_TIME=$SECONDS

mkdir -p "$OUT"
RESULTS=$OUT/results.tsv
: >"$RESULTS"

# say, die, start_server, stop_server, cleanup, rss_mb, cpu_ticks, wrk_row (and the EXIT trap).
source "$ROOT/benches/lib.sh"

need_tools cargo wrk taskset curl setsid pgrep "$PYTHON"
ncpu=$(nproc)
if ((ncpu < 2)); then
    say "warning: only $ncpu CPU: server and wrk share it; numbers are not comparable to a 2-CPU run"
    SERVER_CPU=0 WRK_CPU=0
fi

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD_BEFORE%% *}" -v n="$ncpu" 'BEGIN {exit !(l > n / 4)}'; then
    say "warning: load average is $LOAD_BEFORE on $ncpu CPUs: other work is running and will skew the numbers"
fi

# ---- servers -------------------------------------------------------------

# Answers of one server to the benchmark routes, checked before any load.
smoke_test() {
    local name=$1 base="http://127.0.0.1:${PORT[$1]}" body got
    got=$(curl -s --max-time 5 "$base/hello") || true
    [[ $got == world ]] || {
        say "$name: GET /hello answered ${got@Q}, expected 'world'"
        return 1
    }
    body=$(head -c 1024 /dev/zero | tr '\0' x)
    got=$(curl -s --max-time 5 -X POST -H 'Content-Type: application/octet-stream' --data-binary "$body" "$base/echo") || true
    [[ $got == "$body" ]] || {
        say "$name: POST /echo did not return the 1 KiB body"
        return 1
    }
    got=$(curl -s --max-time 5 "$base/json") || true
    "$PYTHON" -c 'import json,sys; d=json.loads(sys.argv[1]); assert len(d)==10 and d["tags"]==["http","python","rust"]' "$got" 2>/dev/null || {
        say "$name: GET /json answered ${got@Q}, expected the 10-key document"
        return 1
    }
}

# ---- wrk -----------------------------------------------------------------

# run_wrk NAME TEST ROUND DURATION: one wrk run; appends a line to results.tsv:
# server test round requests/s p99_ms valid why
run_wrk() {
    local name=$1 test=$2 round=$3 duration=$4 base="http://127.0.0.1:${PORT[$1]}" raw
    local -a args
    case $test in
    a) args=("$base/hello") ;;
    b) args=(-s "$WRK_DIR/pipeline.lua" "$base" -- 16 /hello) ;;
    c) args=(-s "$WRK_DIR/post.lua" "$base/echo") ;;
    d) args=(-s "$WRK_DIR/json.lua" "$base/json") ;;
    esac
    raw=$OUT/wrk-$name-$test-$round.txt
    local cpu0 cpu1
    cpu0=$(cpu_ticks "$name")
    nice -n "$NICE" taskset -c "$WRK_CPU" wrk -t1 -c"$CONNS" -d"$duration" --latency "${args[@]}" >"$raw" 2>&1 || true
    cpu1=$(cpu_ticks "$name")
    [[ $round == warmup ]] && return 0
    wrk_row "$name" "$test" "$round" $((cpu1 - cpu0)) "$raw" >>"$RESULTS"
    say "  $(tail -n 1 "$RESULTS" | cut -f1-7 | tr '\t' ' ')"
}

# ---- build and environment ----------------------------------------------

# The virtualenv is set up while cargo builds.
setup_venv() {
    if [[ ! -x $VENV/bin/python ]]; then
        say "== creating $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    "$VENV/bin/python" -c 'import socketify, granian' 2>/dev/null || {
        say "== installing socketify and granian into $VENV"
        "$VENV/bin/pip" install -q --disable-pip-version-check socketify granian >&2 ||
            say "warning: pip install failed; missing peers are skipped"
    }
}
setup_venv &
VENV_JOB=$!
if [[ ${BENCH_NO_BUILD:-} != 1 ]]; then
    say "== building pyrs and examples/native_hello (release)"
    cargo build --release --bin pyrs --example native_hello >&2
fi
wait "$VENV_JOB" || die "cannot create $VENV"
BUILD_SECONDS=$((SECONDS - START_TIME))
PYRS=$ROOT/target/release/pyrs
NATIVE=$ROOT/target/release/examples/native_hello
[[ -x $PYRS && -x $NATIVE ]] || die "release binaries missing (run without BENCH_NO_BUILD)"

declare -A PEER_OK=()
for peer in $PEERS; do
    case $peer in
    socketify)
        if ! err=$("$VENV/bin/python" -c 'import socketify' 2>&1); then
            if [[ $err == *libuv* ]] && ((EUID == 0)) && command -v apt-get >/dev/null; then
                say "== socketify needs libuv: apt-get install -y libuv1"
                apt-get install -y -q libuv1 >&2 || true
            fi
        fi
        if err=$("$VENV/bin/python" -c 'import socketify' 2>&1); then
            PEER_OK[socketify]=1
        else
            say "SKIPPING socketify: it cannot be imported here (${err##*$'\n'}); on Debian/Ubuntu it needs libuv1"
        fi
        ;;
    granian-wsgi | granian-rsgi)
        if [[ -x $VENV/bin/granian ]]; then PEER_OK[$peer]=1; else say "SKIPPING $peer: granian is not installed in $VENV"; fi
        ;;
    *) die "unknown peer $peer (known: socketify granian-wsgi granian-rsgi)" ;;
    esac
done

# ---- start everything ----------------------------------------------------

export PYTHONPATH=$PEERS_DIR${PYTHONPATH:+:$PYTHONPATH}
export VIRTUAL_ENV=$VENV
SERVERS=()
port=$PORT_BASE
launch() {
    local name=$1
    shift
    port=$((port + 1))
    if start_server "$name" "$port" "$@" && smoke_test "$name"; then
        SERVERS+=("$name")
        say "   $name: pid ${PID[$name]}, port $port, RSS $(rss_mb "$name") MB"
    else
        say "SKIPPING $name: it did not start or answered wrongly (log: $OUT/$name.log)"
        stop_server "$name"
    fi
}

say "== starting servers (pinned to CPU $SERVER_CPU; logs in $OUT)"
launch pyrs "$PEERS_DIR/pyrs_app" "$PYRS" project.pyrs --bind "127.0.0.1:$((port + 1))" --threads 1 --log-level warn
launch ceiling "$ROOT" "$NATIVE" --bind "127.0.0.1:$((port + 1))" --threads 1
for peer in $PEERS; do
    [[ -n ${PEER_OK[$peer]:-} ]] || continue
    case $peer in
    socketify) launch socketify "$PEERS_DIR" "$VENV/bin/python" socketify_app.py "$((port + 1))" ;;
    granian-wsgi | granian-rsgi)
        # --http1-pipeline-flush (experimental) answers a pipelined batch with one write: (b) 61k -> 105k.
        launch "$peer" "$PEERS_DIR" "$VENV/bin/granian" --interface "${peer#granian-}" --host 127.0.0.1 \
            --port "$((port + 1))" --workers 1 --runtime-threads 1 --http 1 --no-ws --log-level warning \
            --no-access-log --http1-pipeline-flush "granian_${peer#granian-}:app"
        ;;
    esac
done
[[ " ${SERVERS[*]} " == *" pyrs "* ]] || die "pyrs did not start; see $OUT/pyrs.log"

# ---- the matrix ----------------------------------------------------------

TESTS=(a b c d)
say "== warm-up (1 s per server)"
for name in "${SERVERS[@]}"; do run_wrk "$name" a warmup 1s; done
for round in $(seq "$ROUNDS"); do
    say "== round $round of $ROUNDS (wrk -t1 -c$CONNS -d$DURATION, pinned to CPU $WRK_CPU)"
    for test in "${TESTS[@]}"; do
        for name in "${SERVERS[@]}"; do run_wrk "$name" "$test" "$round" "$DURATION"; done
    done
done
declare -A RSS=()
for name in "${SERVERS[@]}"; do
    RSS[$name]=$(rss_mb "$name")
    printf 'rss\t%s\t%s\n' "$name" "${RSS[$name]}" >>"$RESULTS"
done
cleanup
STARTED=()

# ---- slow handlers and idle memory --------------------------------------

say "== sleeping handler: GET /sleep sleeps 10 ms, --threads 8, wrk -c$CONNS -d$SLEEP_DURATION"
port=$((port + 1))
PID=() PORT=()
if start_server pyrs-sleep "$port" "$PEERS_DIR/pyrs_app" "$PYRS" project.pyrs --bind "127.0.0.1:$port" --threads 8 --log-level warn; then
    nice -n "$NICE" taskset -c "$WRK_CPU" wrk -t1 -c"$CONNS" -d"$SLEEP_DURATION" --latency "http://127.0.0.1:$port/sleep" >"$OUT/wrk-sleep.txt" 2>&1 || true
    awk '/^Requests\/sec:/ {rps=$2} /Non-2xx or 3xx responses:|Socket errors:/ {bad=1}
         END {printf "sleep\t%.1f\t%s\n", rps, bad ? "INVALID" : "valid"}' "$OUT/wrk-sleep.txt" >>"$RESULTS"
    stop_server pyrs-sleep
fi

say "== idle RSS of examples/echo (default thread_count, after one request)"
port=$((port + 1))
unset VIRTUAL_ENV
if start_server echo-idle "$port" "$ROOT/examples/echo" "$PYRS" project.pyrs --bind "127.0.0.1:$port" --log-level warn; then
    sleep 1
    printf 'idle_rss\t%s\n' "$(rss_mb echo-idle)" >>"$RESULTS"
    stop_server echo-idle
fi
STARTED=()

# ---- report --------------------------------------------------------------

ELAPSED=$((SECONDS - START_TIME))
cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
"$PYTHON" - "$RESULTS" "$ELAPSED" "$ncpu" "$cpu_model" "$DURATION" "$ROUNDS" "$CONNS" "${SERVERS[*]}" "$LOAD_BEFORE" "$NICE" "$BUILD_SECONDS" >"$OUT/table.md" <<'PY'
import statistics, sys
from collections import defaultdict

path, elapsed, ncpu, cpu, duration, rounds, conns, servers, load, nice, build = sys.argv[1:]
servers = servers.split()
runs = defaultdict(list)   # (server, test) -> [(rps, p99, valid, why)]
rss, sleep, idle = {}, None, None
for line in open(path):
    f = line.rstrip("\n").split("\t")
    if f[0] == "rss":
        rss[f[1]] = int(f[2])
    elif f[0] == "sleep":
        sleep = (float(f[1]), f[2])
    elif f[0] == "idle_rss":
        idle = int(f[1])
    else:
        runs[(f[0], f[1])].append((float(f[3]), float(f[4]), f[5] == "valid", f[6], float(f[7])))

TESTS = [("a", "(a) GET /hello"), ("b", "(b) 16 pipelined GET /hello"), ("c", "(c) POST 1 KiB echo"), ("d", "(d) 10-key dict as JSON")]

def cell(server, test):
    """(median rps, median p99) over the valid runs, or None when any run was invalid."""
    rs = runs.get((server, test), [])
    if not rs or not all(r[2] for r in rs):
        return None
    return statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs)

def fmt_rps(v):
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.1f}k" if v >= 1e3 else f"{v:.0f}"

def show(server, test):
    c = cell(server, test)
    if c is None:
        rs = runs.get((server, test), [])
        bad = sorted({r[3] for r in rs if not r[2]})
        return "INVALID " + " ".join(bad) if rs else "n/a"
    if test == "b":
        return fmt_rps(c[0])  # wrk's latency figures are meaningless when pipelining
    return f"{fmt_rps(c[0])} (p99 {c[1]:.2f} ms)"

peers = [s for s in servers if s not in ("pyrs", "ceiling")]
names = {"ceiling": "no-Python ceiling"}
cols = ["pyrs"] + peers + (["ceiling"] if "ceiling" in servers else [])
hdr = ["test"] + [names.get(c, c) for c in cols] + [f"pyrs/{p}" for p in peers] + (["pyrs/ceiling"] if "ceiling" in servers else [])
print(f"Machine: {ncpu} CPUs, {cpu}. Server pinned to CPU 0, wrk to CPU 1, both at nice {nice}; `wrk -t1 -c{conns} -d{duration}`, "
      f"median of {rounds} interleaved rounds; requests/s with the median p99 latency. "
      f"Load average before the run: {load}.")
print()
print("| " + " | ".join(hdr) + " |")
print("|" + "---|" * len(hdr))
ratios = {}
for t, label in TESTS:
    row = [label] + [show(c, t) for c in cols]
    base = cell("pyrs", t)
    for other in peers + (["ceiling"] if "ceiling" in servers else []):
        o = cell(other, t)
        if base and o and o[0] > 0:
            ratios[(t, other)] = (base[0] / o[0], base[1], o[1])
            row.append(f"{base[0] / o[0]:.2f}x")
        else:
            row.append("n/a")
    print("| " + " | ".join(row) + " |")
print("| RSS after the runs | " + " | ".join(f"{rss.get(c, 0)} MB" for c in cols) + " |" + " |" * (len(hdr) - 1 - len(cols)))
print()
print("Server CPU time per response (user + system, median over the valid runs; less sensitive to other load on the machine):")
print()
print("| test | " + " | ".join(names.get(c, c) for c in cols) + " |")
print("|" + "---|" * (len(cols) + 1))
for t, label in TESTS:
    cells = []
    for c in cols:
        rs = [r for r in runs.get((c, t), []) if r[2]]
        cells.append(f"{statistics.median(r[4] for r in rs):.2f} us" if rs else "n/a")
    print(f"| {label} | " + " | ".join(cells) + " |")
print()
if sleep:
    print(f"Sleeping handler (10 ms, `--threads 8`, -c{conns}): {sleep[0]:.0f} req/s ({sleep[1]}).")
if idle is not None:
    print(f"Idle RSS of examples/echo: {idle} MB.")
print()
print("Issue-4 targets:")

def target(label, ok):
    print(f"- {label}: {'MET' if ok else 'NOT MET' if ok is not None else 'n/a'}")

def vs(t, peer, factor):
    r = ratios.get((t, peer))
    return (r[0] >= factor, f"{r[0]:.2f}x") if r else (None, "n/a")

for t, peer, factor, what in [("a", "socketify", 1.25, "(a) >= 1.25x socketify"), ("a", "ceiling", 0.80, "(a) >= 80% of the no-Python ceiling"),
                              ("b", "socketify", 2.0, "(b) >= 2x socketify"), ("c", "socketify", 1.15, "(c) >= 1.15x socketify"),
                              ("d", "socketify", 1.5, "(d) >= 1.5x socketify")]:
    ok, got = vs(t, peer, factor)
    target(f"{what} (measured {got})", ok)
for t, label in TESTS:
    if t == "b":
        print(f"- {label}: p99 not measured (wrk records one latency per pipelined batch and then \"corrects\" it by the per-response rate)")
        continue
    r = ratios.get((t, "socketify"))
    target(f"{label}: p99 <= socketify's" + (f" ({r[1]:.2f} vs {r[2]:.2f} ms)" if r else ""), (r[1] <= r[2]) if r else None)
target(f"idle RSS of examples/echo <= 20 MB ({idle} MB)", idle <= 20 if idle is not None else None)
target(f"sleeping handler >= 600 req/s ({sleep[0]:.0f})" if sleep else "sleeping handler >= 600 req/s",
       (sleep[0] >= 600 and sleep[1] == "valid") if sleep else None)
print()
print(f"compare.sh took {int(elapsed) // 60} min {int(elapsed) % 60} s ({build} s of it building and setting up the virtualenv).")
PY
cat "$OUT/table.md"
say "(raw wrk output and logs: $OUT)"
