# Helpers shared by the benchmark scripts (compare.sh, services.sh); sourced, not run.
#
# The caller sets, before sourcing: OUT (logs), SERVER_CPU (taskset CPU list for servers),
# NICE (niceness of servers and wrk). It gets:
#   say / die                        messages on stderr
#   start_server NAME PORT DIR CMD   a server in its own process group, pinned and niced,
#                                    waited for until GET $READY_PATH (default /hello) answers
#   stop_server NAME / cleanup       SIGTERM to the group, SIGKILL after 5 s (cleanup: all started)
#   group_pids NAME                  the pids of a server's process group
#   rss_mb NAME / cpu_ticks NAME     summed over the group
#   pss_kb PID / uss_kb PID          from /proc/PID/smaps_rollup
#   wrk_row SERVER TEST ROUND TICKS RAW   one results.tsv line from wrk's output:
#                                    server test round rps p99_ms valid|INVALID why cpu_us_per_response
# and an EXIT trap that stops every server started.
#
# Niceness and autogroups: with autogroup scheduling (Linux's sched_autogroup_enabled=1, the
# default on Debian), nice only ranks processes within their session's group, and each session
# competes with the others as a whole: a server in its own session (setsid) at nice -20 still got
# about 1/6 of its CPU while five other sessions compiled. So NICE is also given to the autogroup of
# each server and of this script (restored on exit), which is what makes nice -20 hold.

say() { printf '%s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

declare -A PID=() PORT=()
STARTED=()
READY_PATH=${READY_PATH:-/hello}

# autogroup_nice PID: gives the autogroup of PID's session the niceness NICE (root only).
# need_tools TOOL...: dies naming the first tool that is not installed.
need_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "$tool is not installed (wrk: apt-get install wrk; taskset, setsid: util-linux; pgrep: procps)"
    done
}

autogroup_nice() {
    local f=/proc/$1/autogroup
    [[ $NICE != 0 && -w $f ]] || return 0
    echo "$NICE" >"$f" 2>/dev/null || true
}
AUTOGROUP_WAS=$(awk '{print $3}' /proc/$$/autogroup 2>/dev/null || true)
autogroup_nice $$
restore_autogroup() {
    [[ -n $AUTOGROUP_WAS && -w /proc/$$/autogroup ]] && echo "$AUTOGROUP_WAS" >/proc/$$/autogroup 2>/dev/null
    return 0
}

# build_with_venv: runs the caller's setup_venv (which makes $VENV) while cargo builds pyrs in release
# (skipped with BENCH_NO_BUILD=1), then sets PYRS.
build_with_venv() {
    setup_venv &
    local venv_job=$!
    if [[ ${BENCH_NO_BUILD:-} != 1 ]]; then
        say "== building pyrs (release)"
        cargo build --release --bin pyrs >&2
    fi
    wait "$venv_job" || die "cannot set up $VENV"
    PYRS=$ROOT/target/release/pyrs
    [[ -x $PYRS ]] || die "$PYRS is missing (run without BENCH_NO_BUILD)"
}

stop_server() {
    local name=$1 pid=${PID[$1]:-}
    [[ -n $pid ]] || return 0
    # Each server runs in its own process group (setsid): signal the group.
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    unset "PID[$name]"
}

cleanup() {
    local name
    for name in "${STARTED[@]}"; do
        stop_server "$name"
    done
}
trap 'cleanup; restore_autogroup' EXIT
trap 'exit 130' INT TERM

# start_server NAME PORT DIR CMD...: runs CMD in DIR on CPU(s) $SERVER_CPU and
# waits (up to $START_TIMEOUT s, default 30) until it answers GET $READY_PATH on PORT.
start_server() {
    local name=$1 port=$2 dir=$3 tries=$((${START_TIMEOUT:-30} * 10))
    shift 3
    (cd "$dir" && exec setsid nice -n "$NICE" taskset -c "$SERVER_CPU" "$@") >"$OUT/$name.log" 2>&1 &
    PID[$name]=$!
    PORT[$name]=$port
    STARTED+=("$name")
    for _ in $(seq "$tries"); do
        if curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$port$READY_PATH"; then
            autogroup_nice "${PID[$name]}"
            return 0
        fi
        if ! kill -0 "${PID[$name]}" 2>/dev/null; then
            say "$name exited before answering; its log ($OUT/$name.log):"
            tail -n 20 "$OUT/$name.log" >&2
            unset "PID[$name]"
            return 1
        fi
        sleep 0.1
    done
    say "$name did not answer on port $port within $((tries / 10)) s"
    stop_server "$name"
    return 1
}

group_pids() {
    local pid=${PID[$1]:-}
    [[ -n $pid ]] && pgrep -g "$pid"
    return 0
}

# Resident memory of a server: the sum over the processes of its group, in MB.
rss_mb() {
    local total=0 p kb
    for p in $(group_pids "$1"); do
        kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
        total=$((total + ${kb:-0}))
    done
    echo $(((total + 512) / 1024))
}

# CPU time (user + system, clock ticks) used so far by a server's processes.
cpu_ticks() {
    local total=0 p t
    for p in $(group_pids "$1"); do
        t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)
        total=$((total + ${t:-0}))
    done
    echo "$total"
}

# Proportional (PSS) and unique (USS = private clean + dirty) memory of one process, in kB.
pss_kb() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
uss_kb() { awk '/^Private_(Clean|Dirty):/ {s += $2} END {print s + 0}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }

# wrk_row SERVER TEST ROUND TICKS RAW: a results.tsv line from wrk's output. A run with any
# non-2xx/3xx response, socket error or no request at all is INVALID (with the reason).
wrk_row() {
    awk -v server="$1" -v test="$2" -v round="$3" -v ticks="$4" -v hz="$(getconf CLK_TCK)" '
        function ms(v) {
            if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
            if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
            if (v ~ /s$/) return substr(v, 1, length(v) - 1) * 1000
            return v + 0
        }
        /^Requests\/sec:/ { rps = $2 }
        / requests in / { n = $1 }
        /^ +99%/ { p99 = ms($2) }
        /Non-2xx or 3xx responses:/ { why = why "non-2xx=" $NF ";" }
        /Socket errors:/ { sub(/^ *Socket errors: */, ""); gsub(/ /, ""); why = why "socket-errors(" $0 ");" }
        END {
            if (rps == "" || rps + 0 == 0) why = why "no-requests;"
            us = n > 0 ? ticks * 1e6 / hz / n : 0
            printf "%s\t%s\t%s\t%.2f\t%.3f\t%s\t%s\t%.2f\n", server, test, round, rps + 0, p99 + 0, why == "" ? "valid" : "INVALID", why, us
        }' "$5"
}
