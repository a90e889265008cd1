#!/usr/bin/env bash
# The model-serving examples measured against the way such services are served today (issue 12).
#
#   benches/services.sh                     # 3 services x 6 servers, 3 rounds of 10 s (about 22 minutes)
#   BENCH_DURATION=3s BENCH_ROUNDS=1 BENCH_SERVICES=spellcheck benches/services.sh   # quick look
#
# For each service (examples/spellcheck, classifier, usernames), the SAME service class
# (examples/NAME/service.py) behind thin adapters (benches/services/) on:
#   pyrs-1            pyrs, one process (examples/NAME/main.py), --threads 1
#   pyrs-2            pyrs --workers 2 --threads 1 (the template loads once, gc.freeze(), forks)
#   gunicorn          gunicorn + Flask, 2 sync workers (each worker loads the model)
#   gunicorn-preload  the same with --preload (the master loads, then forks)
#   granian           Granian WSGI, 2 workers, a plain WSGI callable
#   tornado           Tornado, one process (how the original services ran)
# Phases:
#   1. throughput: every server up at once, pinned to CPU $BENCH_SERVER_CPU (0) at nice -20,
#      `wrk -t1 -c32` pinned to CPU $BENCH_WRK_CPU (1), the service's request mix
#      (benches/wrk/services.lua), rounds interleaved across servers, median of the rounds; every
#      answer is checked before the load, and a run with any non-2xx or socket error is INVALID;
#   2. memory: each server alone (so that no other server shares its library pages), one load run,
#      then PSS summed over all its processes and USS of each worker; then gc.collect() in each
#      worker (GET /gc over fresh connections until every worker answered) and the same again;
#   3. scaling: pyrs-1 and pyrs-2 with both CPUs for the servers (wrk shares them), interleaved;
#   4. tables (requests/s, p99, memory, requests/s per GB), the issue's targets, and a chart
#      (matplotlib) of requests/s against memory, all in $BENCH_OUT.
# The peers and matplotlib live in target/services-venv (made here), never in the test virtualenv.
#
# Environment:
#   BENCH_DURATION (10s)  BENCH_ROUNDS (3)  BENCH_CONNECTIONS (32)  BENCH_SERVICES  BENCH_SERVERS
#   BENCH_SERVER_CPU (0)  BENCH_WRK_CPU (1)  BENCH_PORT_BASE (18600)  BENCH_NICE (-20, as root)
#   BENCH_NO_BUILD=1 skips cargo build  BENCH_NO_SCALING=1 skips phase 3
#   BENCH_OUT (target/services-<time>): logs, raw wrk output, results.tsv, table.md, services.png
#
# Load goes to 127.0.0.1 only; every server started here is stopped on exit.

set -euo pipefail
set +m # no job control: a background `setsid` then keeps its pid, which is its process group

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DURATION=${BENCH_DURATION:-10s}
ROUNDS=${BENCH_ROUNDS:-3}
CONNS=${BENCH_CONNECTIONS:-32}
SERVICES=${BENCH_SERVICES:-spellcheck classifier usernames}
SERVERS_WANTED=${BENCH_SERVERS:-pyrs-1 pyrs-2 gunicorn gunicorn-preload granian tornado}
SERVER_CPU=${BENCH_SERVER_CPU:-0}
WRK_CPU=${BENCH_WRK_CPU:-1}
PORT_BASE=${BENCH_PORT_BASE:-18600}
NICE=${BENCH_NICE:--20}
((EUID == 0)) || NICE=0
OUT=${BENCH_OUT:-$ROOT/target/services-$(date +%Y%m%d-%H%M%S)}
VENV=$ROOT/target/services-venv
ADAPTERS=$ROOT/benches/services
LUA=$ROOT/benches/wrk/services.lua
PYTHON=${PYTHON:-python3}
START_TIME=$SECONDS
# Loading a model on one pinned CPU, twice for gunicorn without --preload, takes a while.
START_TIMEOUT=180
READY_PATH=/pid

mkdir -p "$OUT"
RESULTS=$OUT/results.tsv
: >"$RESULTS"

# say, die, start_server, stop_server, cleanup, group_pids, cpu_ticks, pss_kb, uss_kb, wrk_row.
source "$ROOT/benches/lib.sh"

need_tools cargo wrk taskset curl setsid pgrep "$PYTHON"
ncpu=$(nproc)
((ncpu >= 2)) || die "needs 2 CPUs (one for the servers, one for wrk); this machine has $ncpu"
load_now() { cut -d' ' -f1-3 /proc/loadavg; }
LOAD_BEFORE=$(load_now)

# ---- build and environment ----------------------------------------------

setup_venv() {
    [[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
    local stamp=$VENV/.installed reqs=(examples/spellcheck/requirements.txt examples/classifier/requirements.txt
        examples/usernames/requirements.txt benches/services/requirements.txt) r need=0 args=()
    [[ -f $stamp ]] || need=1
    for r in "${reqs[@]}"; do
        [[ $r -nt $stamp ]] && need=1
        args+=(-r "$r")
    done
    if ((need)); then
        say "== installing the services and the peers into $VENV"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${args[@]}" >&2
        touch "$stamp"
    fi
}
build_with_venv
BUILD_SECONDS=$((SECONDS - START_TIME))

export VIRTUAL_ENV=$VENV
export PYTHONDONTWRITEBYTECODE=1
export USERNAMES_DB=$OUT/usernames.sqlite3

# ---- servers -------------------------------------------------------------

# Worker processes (those that run requests) per server.
declare -A WORKERS=([pyrs-1]=1 [pyrs-2]=2 [gunicorn]=2 [gunicorn-preload]=2 [granian]=2 [tornado]=1)

# launch SERVICE SERVER PORT: starts one server for one service.
launch() {
    local service=$1 server=$2 port=$3 name="$1-$2"
    local -a cmd
    case $server in
    pyrs-1 | pyrs-2)
        cmd=("$PYRS" "$ADAPTERS/pyrs_$service.pyrs" --bind "127.0.0.1:$port" --threads 1)
        [[ $server == pyrs-2 ]] && cmd+=(--workers 2)
        PYTHONPATH=$ROOT/examples/$service start_server "$name" "$port" "$ADAPTERS" "${cmd[@]}"
        ;;
    gunicorn | gunicorn-preload)
        cmd=("$VENV/bin/gunicorn" -w 2 -k sync -b "127.0.0.1:$port" --log-level warning)
        [[ $server == gunicorn-preload ]] && cmd+=(--preload)
        BENCH_SERVICE=$service start_server "$name" "$port" "$ADAPTERS" "${cmd[@]}" flask_app:app
        ;;
    granian)
        BENCH_SERVICE=$service start_server "$name" "$port" "$ADAPTERS" "$VENV/bin/granian" --interface wsgi \
            --host 127.0.0.1 --port "$port" --workers 2 --runtime-threads 1 --http 1 --no-ws \
            --log-level warning --no-access-log wsgi_app:app
        ;;
    tornado)
        BENCH_SERVICE=$service start_server "$name" "$port" "$ADAPTERS" "$VENV/bin/python" tornado_app.py "$port"
        ;;
    *) die "unknown server $server" ;;
    esac
}

# check_answers SERVICE NAME: the service's answer from this server, before any load.
check_answers() {
    local base="http://127.0.0.1:${PORT[$2]}" got
    case $1 in
    spellcheck) got=$(curl -s --max-time 10 "$base/correct?q=speling") ;;
    classifier) got=$(curl -s --max-time 10 -H 'Content-Type: application/json' \
        -d '{"title": "Acme wireless earbuds with microphone"}' "$base/classify") ;;
    usernames) got=$(curl -s --max-time 10 "$base/available?name=olivia.smith42") ;;
    esac
    "$VENV/bin/python" -c '
import json, sys
service, got = sys.argv[1], json.loads(sys.argv[2])
ok = {"spellcheck": lambda v: v["correction"] == "spelling" and v["distance"] == 1,
      "classifier": lambda v: v["top"][0]["category"] == "electronics" and len(v["top"]) == 3,
      "usernames": lambda v: v == {"name": "olivia.smith42", "available": False, "checked": "exact"}}[service]
sys.exit(0 if ok(got) else 1)' "$1" "$got" 2>/dev/null || {
        say "$2: wrong answer ${got@Q}"
        return 1
    }
}

# run_wrk SERVICE NAME ROUND [WRK_CPUS [LABEL]]: one load run; appends a results.tsv line with
# LABEL (default NAME) as the server, except for ROUND warmup (1 s) and mem (not recorded).
run_wrk() {
    local service=$1 name=$2 round=$3 cpus=${4:-$WRK_CPU} label=${5:-$2} raw cpu0 cpu1 duration=$DURATION
    [[ $round == warmup ]] && duration=1s
    raw=$OUT/wrk-$label-$round.txt
    cpu0=$(cpu_ticks "$name")
    nice -n "$NICE" taskset -c "$cpus" wrk -t1 -c"$CONNS" -d"$duration" --latency -s "$LUA" \
        "http://127.0.0.1:${PORT[$name]}" -- "$service" >"$raw" 2>&1 || true
    cpu1=$(cpu_ticks "$name")
    [[ $round == warmup || $round == mem ]] && return 0
    wrk_row "$label" "$service" "$round" $((cpu1 - cpu0)) "$raw" >>"$RESULTS"
    say "  $(tail -n 1 "$RESULTS" | cut -f1,3-7 | tr '\t' ' ')"
}

# gc_in_every_worker NAME: GET /gc on fresh connections until every worker ran it; prints their pids.
gc_in_every_worker() {
    local name=$1 want=${WORKERS[${1#*-}]} pid
    declare -A seen=()
    for _ in $(seq 400); do
        pid=$(curl -s --max-time 10 "http://127.0.0.1:${PORT[$name]}/gc" | tr -dc '0-9')
        [[ -n $pid ]] && seen[$pid]=1
        ((${#seen[@]} >= want)) && break
    done
    ((${#seen[@]} >= want)) || say "warning: $name: only ${#seen[@]} of $want workers ran gc.collect()"
    echo "${!seen[@]}"
}

# pss_total NAME: PSS (kB) summed over all the server's processes.
pss_total() {
    local total=0 p
    for p in $(group_pids "$1"); do total=$((total + $(pss_kb "$p"))); done
    echo "$total"
}

# worker_pids NAME: the processes that answer requests (GET /pid until all were seen).
worker_pids() {
    local name=$1 want=${WORKERS[${1#*-}]} pid
    declare -A seen=()
    for _ in $(seq 400); do
        pid=$(curl -s --max-time 10 "http://127.0.0.1:${PORT[$name]}/pid" | tr -dc '0-9')
        [[ -n $pid ]] && seen[$pid]=1
        ((${#seen[@]} >= want)) && break
    done
    echo "${!seen[@]}"
}

uss_list() {
    local p out=()
    for p in $1; do out+=("$(($(uss_kb "$p") / 1024))"); done
    local IFS=,
    echo "${out[*]}"
}

port=$PORT_BASE
for service in $SERVICES; do
    # ---- 1. throughput, every server up, interleaved rounds --------------------
    say "== $service: starting servers (pinned to CPU $SERVER_CPU; logs in $OUT)"
    SERVER_NAMES=()
    for server in $SERVERS_WANTED; do
        port=$((port + 1))
        if launch "$service" "$server" "$port" && check_answers "$service" "$service-$server"; then
            SERVER_NAMES+=("$service-$server")
            say "   $service-$server: pid ${PID[$service-$server]}, port $port"
        else
            say "SKIPPING $service-$server: it did not start or answered wrongly (log: $OUT/$service-$server.log)"
            stop_server "$service-$server"
        fi
    done
    for name in "${SERVER_NAMES[@]}"; do run_wrk "$service" "$name" warmup; done
    for round in $(seq "$ROUNDS"); do
        say "== $service: round $round of $ROUNDS (wrk -t1 -c$CONNS -d$DURATION on CPU $WRK_CPU; load $(load_now))"
        for name in "${SERVER_NAMES[@]}"; do run_wrk "$service" "$name" "$round"; done
    done
    cleanup
    STARTED=()

    # ---- 2. memory, each server alone ---------------------------------------------
    say "== $service: memory, each server alone, after a load run and after gc.collect() in each worker"
    for name in "${SERVER_NAMES[@]}"; do
        port=$((port + 1))
        launch "$service" "${name#"$service"-}" "$port" || continue
        run_wrk "$service" "$name" mem
        workers=$(worker_pids "$name")
        pss_load=$(pss_total "$name")
        uss_load=$(uss_list "$workers")
        gc_pids=$(gc_in_every_worker "$name")
        pss_gc=$(pss_total "$name")
        uss_gc=$(uss_list "$gc_pids")
        nproc_group=$(group_pids "$name" | wc -l)
        printf 'mem\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$service" "$pss_load" "$pss_gc" "$uss_load" "$uss_gc" \
            "$nproc_group" >>"$RESULTS"
        say "   $name: $nproc_group processes, PSS $((pss_load / 1024)) MB after load, $((pss_gc / 1024)) MB after gc.collect(); worker USS $uss_load -> $uss_gc MB"
        stop_server "$name"
    done
    STARTED=()

    # ---- 3. scaling: pyrs 1 vs 2 workers on both CPUs -------------------------------
    if [[ ${BENCH_NO_SCALING:-} != 1 && " $SERVERS_WANTED " == *" pyrs-1 "* && " $SERVERS_WANTED " == *" pyrs-2 "* ]]; then
        say "== $service: scaling, pyrs-1 and pyrs-2 on CPUs 0,1 (wrk shares them)"
        saved_cpu=$SERVER_CPU
        SERVER_CPU=0,1
        SCALE=()
        for server in pyrs-1 pyrs-2; do
            port=$((port + 1))
            launch "$service" "$server" "$port" && check_answers "$service" "$service-$server" && SCALE+=("$service-$server")
        done
        for name in "${SCALE[@]}"; do run_wrk "$service" "$name" warmup 0,1; done
        for round in $(seq "$ROUNDS"); do
            for name in "${SCALE[@]}"; do run_wrk "$service" "$name" "$round" 0,1 "scale:$name"; done
        done
        cleanup
        STARTED=()
        SERVER_CPU=$saved_cpu
    fi
done

# ---- 4. report -------------------------------------------------------------------

ELAPSED=$((SECONDS - START_TIME))
cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
"$VENV/bin/python" "$ADAPTERS/report.py" "$RESULTS" "$OUT" "$ELAPSED" "$ncpu" "$cpu_model" "$DURATION" "$ROUNDS" \
    "$CONNS" "$LOAD_BEFORE" "$(load_now)" "$NICE" "$BUILD_SECONDS" "$SERVICES" >"$OUT/table.md"
cat "$OUT/table.md"
say "(raw wrk output, logs, results.tsv and services.png: $OUT)"
