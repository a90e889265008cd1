#!/bin/bash
# Start-up time with many routes: 100,000 exact routes and 10,000
# parameterised routes, loaded by the release binary (median of 3 runs).
# Usage: benches/routes/startup.sh
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

# `pyrs --check` loads the project as a start-up does (config, Python, every
# route into the router) without serving. CPU time (user + sys) is the figure
# that other load on the machine does not inflate; wall time is shown too.
for name in exact100k params10k; do
    runs=()
    for _ in 1 2 3; do
        runs+=("$( { /usr/bin/time -f '%e %U %S' "$bin" "$dir/$name/project.pyrs" --check --log-level warn >/dev/null; } 2>&1 | tail -1 )")
    done
    cpu=$(printf '%s\n' "${runs[@]}" | awk '{printf "%.2f\n", $2 + $3}' | sort -n | sed -n 2p)
    wall=$(printf '%s\n' "${runs[@]}" | awk '{print $1}' | sort -n | sed -n 2p)
    echo "$name: median CPU ${cpu} s, wall ${wall} s (3 runs)"
done
