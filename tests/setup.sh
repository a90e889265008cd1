#!/usr/bin/env bash
# Installs, idempotently, what the test suite and the benchmarks need beyond the Rust toolchain and
# CPython: Debian packages (the servers and tools the tests start) and one Python virtualenv,
# target/test-venv, with every examples/*/requirements.txt and tests/requirements.txt.
# A second run changes nothing and takes a second. Safe to run from several processes at once.
set -euo pipefail
cd "$(dirname "$0")/.."

exec 9>/tmp/pyrs-setup.lock
flock 9

# Debian packages the tests start for real.
debs=(wrk nginx redis-server chromium)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "tests/setup.sh: missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
    exit 1
  fi
  echo "tests/setup.sh: installing ${missing[*]}" >&2
  # Services must not start on install (nginx would take port 80): the tests start their own.
  policy=/usr/sbin/policy-rc.d
  had_policy=0; [ -e "$policy" ] && had_policy=1
  [ "$had_policy" = 1 ] || { printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ "$had_policy" = 1 ] || rm -f "$policy"
fi

# The Python virtualenv, made from the CPython pyrs is built against (python3 on PATH).
venv=target/test-venv
reqs=$(ls examples/*/requirements.txt tests/requirements.txt 2>/dev/null || true)
stamp=$venv/.installed
# A virtualenv copied from another checkout still runs, but its bin/pip would install into the
# original (its shebang names it), so pip always runs as `$venv/bin/python -m pip`.
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
need=0
[ -f "$stamp" ] || need=1
for r in $reqs; do [ "$r" -nt "$stamp" ] && need=1; done
if [ "$need" = 1 ] && [ -n "$reqs" ]; then
  echo "tests/setup.sh: installing Python packages into $venv" >&2
  args=()
  for r in $reqs; do args+=(-r "$r"); done
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "${args[@]}"
fi
touch "$stamp"
