#!/usr/bin/env bash
# Builds pyrs in release mode and installs the `pyrs` binary on PATH.
#
#   ./build_all_and_install.sh            check prerequisites, build, install, verify
#   ./build_all_and_install.sh --check    only check the prerequisites
#
# Environment:
#   PYO3_PYTHON or PYTHON   the Python interpreter to build against (default: python3).
#                           pyrs links that interpreter's libpython and records its
#                           directory as an rpath, so the binary runs without
#                           LD_LIBRARY_PATH and loads exactly that libpython.
#   INSTALL_DIR             the directory to install `pyrs` into, or
#   PREFIX                  install into PREFIX/bin.
#                           Default: $HOME/.cargo/bin if it is on PATH, else /usr/local/bin.
#
# Safe to run again: it rebuilds only what changed and replaces the installed binary.
set -euo pipefail

die() {
    printf 'build_all_and_install.sh: error: %s\n' "$1" >&2
    shift
    local line
    for line in "$@"; do
        printf '  %s\n' "$line" >&2
    done
    exit 1
}

say() {
    printf '==> %s\n' "$*"
}

check_only=0
case "${1:-}" in
    "") ;;
    --check) check_only=1 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument '$1'" "usage: $0 [--check | --help]" ;;
esac

repo_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$repo_dir"

# ---- Rust toolchain ----
if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        die "cargo is installed in $HOME/.cargo/bin but that directory is not on PATH." \
            "Run: source \"$HOME/.cargo/env\"   (or add $HOME/.cargo/bin to PATH), then run this script again."
    fi
    die "cargo (the Rust toolchain) was not found on PATH." \
        "Install it with rustup: curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh" \
        "then: source \"\$HOME/.cargo/env\" and run this script again." \
        "(Debian/Ubuntu's 'apt-get install cargo' also works if its Rust is new enough.)"
fi
need_rust=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -n 1)
have_rust=$(rustc --version 2>/dev/null | sed -n 's/^rustc \([0-9][0-9.]*\).*/\1/p')
if [ -n "$need_rust" ] && [ -n "$have_rust" ]; then
    lowest=$(printf '%s\n%s\n' "$need_rust" "$have_rust" | sort -t. -k1,1n -k2,2n -k3,3n | head -n 1)
    if [ "$lowest" != "$need_rust" ]; then
        die "Rust $have_rust is too old: pyrs needs Rust $need_rust or newer." \
            "Update it with: rustup update stable"
    fi
fi
say "cargo: $(command -v cargo) (rustc ${have_rust:-unknown})"

# ---- Python: CPython >= 3.9 with a shared libpython ----
python=${PYO3_PYTHON:-${PYTHON:-python3}}
if [ -n "${PYO3_PYTHON:-}" ]; then
    python_from="PYO3_PYTHON"
elif [ -n "${PYTHON:-}" ]; then
    python_from="PYTHON"
else
    python_from="default"
fi
if ! python_path=$(command -v "$python" 2>/dev/null) || [ -z "$python_path" ]; then
    if [ "$python_from" = default ]; then
        die "no Python interpreter: 'python3' was not found on PATH." \
            "Install CPython 3.9 or newer with its shared library and headers," \
            "e.g. on Debian/Ubuntu: apt-get install python3 python3-dev" \
            "or point PYO3_PYTHON at an interpreter: PYO3_PYTHON=/path/to/python3 $0"
    fi
    die "the Python interpreter '$python' (from $python_from) was not found or is not executable." \
        "Set $python_from to an existing CPython 3.9+ interpreter, or unset it to use python3 from PATH."
fi

# One query, key=value per line; it must also run (and fail clearly) on old interpreters.
query='import sys, sysconfig
v = sysconfig.get_config_var
impl = getattr(sys, "implementation", None)
print("implementation=%s" % (impl.name if impl else "unknown"))
print("version=%d.%d.%d" % tuple(sys.version_info[:3]))
print("short=%d.%d" % tuple(sys.version_info[:2]))
print("shared=%s" % (v("Py_ENABLE_SHARED") or 0))
print("libdir=%s" % (v("LIBDIR") or ""))
print("ldlibrary=%s" % (v("LDLIBRARY") or ""))
print("prefix=%s" % sys.prefix)'
if ! info=$("$python" -c "$query" 2>&1); then
    die "could not run '$python' (from $python_from) to inspect it:" "$info"
fi
field() {
    printf '%s\n' "$info" | sed -n "s/^$1=//p" | head -n 1
}
py_impl=$(field implementation)
py_version=$(field version)
py_short=$(field short)
py_shared=$(field shared)
py_libdir=$(field libdir)
py_ldlibrary=$(field ldlibrary)
py_prefix=$(field prefix)

if [ -z "$py_version" ]; then
    die "'$python' did not answer like a Python interpreter:" "$info"
fi
if [ "$py_impl" != cpython ]; then
    die "'$python' is $py_impl $py_version; pyrs needs CPython 3.9 or newer." \
        "Point PYO3_PYTHON at a CPython interpreter, e.g. PYO3_PYTHON=/usr/bin/python3 $0"
fi
py_major=${py_short%%.*}
py_minor=${py_short#*.}
if [ "$py_major" -lt 3 ] || { [ "$py_major" -eq 3 ] && [ "$py_minor" -lt 9 ]; }; then
    die "'$python' is Python $py_version; pyrs needs CPython 3.9 or newer." \
        "On Debian/Ubuntu: apt-get install python3 python3-dev (a release with Python >= 3.9)," \
        "with pyenv: PYTHON_CONFIGURE_OPTS=--enable-shared pyenv install 3.11," \
        "then run again with PYO3_PYTHON pointing at the new interpreter."
fi
pyenv_hint="pyenv users: PYTHON_CONFIGURE_OPTS=--enable-shared pyenv install --force $py_version"
if [ "$py_shared" != 1 ]; then
    die "'$python' (Python $py_version, $py_prefix) was built without a shared libpython (Py_ENABLE_SHARED=$py_shared)." \
        "pyrs embeds Python and needs libpython$py_short.so. Use an interpreter built with --enable-shared:" \
        "Debian/Ubuntu: apt-get install python3-dev   (then PYO3_PYTHON=/usr/bin/python3)" \
        "$pyenv_hint" \
        "from source: ./configure --enable-shared && make && make install"
fi
libpython="$py_libdir/$py_ldlibrary"
if [ -z "$py_libdir" ] || [ -z "$py_ldlibrary" ] || [ ! -e "$libpython" ]; then
    die "the shared libpython of '$python' (Python $py_version) is missing: '$libpython' does not exist." \
        "It comes with the development package: apt-get install python$py_short-dev (or python3-dev)," \
        "$pyenv_hint"
fi
say "python: $python_path (CPython $py_version, prefix $py_prefix)"
say "libpython: $libpython"

if [ "$check_only" = 1 ]; then
    say "all prerequisites found"
    exit 0
fi

# ---- Build ----
# pyo3 picks python3 from PATH by itself (the interpreter checked above); pass
# the user's choice on, and only then, so a default run builds exactly what a
# plain `cargo build --release` builds.
if [ "$python_from" != default ]; then
    export PYO3_PYTHON="$python_path"
fi
build=(cargo build --release)
if [ -f Cargo.lock ]; then
    build+=(--locked)
fi
say "building: ${PYO3_PYTHON:+PYO3_PYTHON=$PYO3_PYTHON }${build[*]}"
"${build[@]}"
target_dir=${CARGO_TARGET_DIR:-target}
built="$target_dir/release/pyrs"
[ -x "$built" ] || die "the build finished but $built does not exist."

# ---- Install ----
on_path() {
    case ":$PATH:" in
        *":$1:"* | *":$1/:"*) return 0 ;;
        *) return 1 ;;
    esac
}
if [ -n "${INSTALL_DIR:-}" ]; then
    dest=$INSTALL_DIR
elif [ -n "${PREFIX:-}" ]; then
    dest=$PREFIX/bin
elif on_path "$HOME/.cargo/bin"; then
    dest=$HOME/.cargo/bin
else
    dest=/usr/local/bin
fi
dest=${dest%/}

sudo=()
if ! { mkdir -p "$dest" 2>/dev/null && [ -w "$dest" ]; }; then
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then
        say "$dest is not writable: using sudo"
        sudo=(sudo)
        ${sudo[@]+"${sudo[@]}"} mkdir -p "$dest"
    else
        die "cannot write to $dest." \
            "Choose another directory: INSTALL_DIR=\$HOME/.local/bin $0   (or PREFIX=\$HOME/.local)"
    fi
fi
# Copy next to the target, then rename: replaces a running pyrs safely.
tmp="$dest/.pyrs.install.$$"
${sudo[@]+"${sudo[@]}"} install -m 0755 "$built" "$tmp"
${sudo[@]+"${sudo[@]}"} mv -f "$tmp" "$dest/pyrs"
installed="$dest/pyrs"

# ---- Verify: runs without LD_LIBRARY_PATH and loads the libpython it was built against ----
if ! version=$(env -u LD_LIBRARY_PATH -u PYTHONHOME "$installed" --version 2>&1); then
    die "the installed $installed does not run:" "$version"
fi
if command -v ldd >/dev/null 2>&1; then
    loaded=$(env -u LD_LIBRARY_PATH ldd "$installed" | sed -n 's/^[[:space:]]*libpython[^ ]* => \([^ ]*\) .*/\1/p' | head -n 1)
    if [ -n "$loaded" ] && [ "$(readlink -f "$loaded")" != "$(readlink -f "$libpython")" ]; then
        die "$installed loads $loaded, not the libpython it was built against ($libpython)."
    fi
fi
if ! check=$(env -u LD_LIBRARY_PATH "$installed" "$repo_dir/project_template/project.pyrs" --check 2>&1); then
    die "the installed pyrs cannot start Python (pyrs project_template/project.pyrs --check failed):" "$check"
fi

say "installed $version to $installed"
if ! on_path "$dest"; then
    # shellcheck disable=SC2016 # $PATH is meant literally here
    printf 'note: %s is not on PATH; add it (export PATH="%s:$PATH") or run %s directly.\n' "$dest" "$dest" "$installed"
elif [ "$(command -v pyrs)" != "$installed" ]; then
    printf 'note: another pyrs comes first on PATH: %s\n' "$(command -v pyrs)"
fi
# What to do next: the example README.md's first command serves, then a project of one's own.
printf '\nTry it:   pyrs %s/examples/echo/project.pyrs\n' "$repo_dir"
printf '          then, in another terminal: curl -d hello http://127.0.0.1:8094/echo   (answers hello; Ctrl-C stops pyrs)\n'
printf 'Your own: cp -r %s/project_template myproject && pyrs myproject/project.pyrs\n' "$repo_dir"
printf '          (edit myproject/main.py and myproject/project.pyrs; every key is explained in its comments)\n'
