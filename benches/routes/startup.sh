#!/bin/bash
# Start-up time with many routes: 100,000 exact routes and 10,000
# parameterised routes, each timed from exec to "Listening on" with the
# release binary (median of 3 runs). Usage: benches/routes/startup.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --locked --quiet
bin=target/release/pyrs
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

python3 - "$dir" <<'PY'
import json, os, sys
root = sys.argv[1]
api = "class Api:\n    def h(self, r):\n        return 'ok'\n"
for name, paths in [("exact100k", [f"/r{i}" for i in range(100_000)]),
                    ("params10k", [f"/p{i}/{{id}}" for i in range(10_000)])]:
    os.makedirs(f"{root}/{name}")
    open(f"{root}/{name}/main.py", "w").write(api)
    routes = [{"path": p, "module": "main", "class": "Api", "handler": "h"} for p in paths]
    open(f"{root}/{name}/project.pyrs", "w").write(json.dumps({"modules": routes}, indent=1))
PY

# Seconds from exec to the "Listening on" line.
time_to_listen() {
    local start end
    start=$(date +%s.%N)
    coproc server { exec "$bin" "$1" --bind 127.0.0.1:0 --log-level warn; }
    while IFS= read -r line <&"${server[0]}"; do
        if [[ $line == "Listening on"* ]]; then break; fi
    done
    end=$(date +%s.%N)
    kill "$server_PID"
    wait "$server_PID" 2>/dev/null || true
    echo "$end - $start" | bc
}

for name in exact100k params10k; do
    runs=()
    for _ in 1 2 3; do runs+=("$(time_to_listen "$dir/$name/project.pyrs")"); done
    median=$(printf '%s\n' "${runs[@]}" | sort -n | sed -n 2p)
    echo "$name: ${runs[*]} s (median $median s)"
done
