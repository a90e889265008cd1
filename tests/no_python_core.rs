//! The HTTP core without Python (issue 10): with `--no-default-features` the
//! crate has no pyo3 in its dependency graph, builds without a Python
//! (`PYO3_PYTHON` points nowhere), links no libpython, and a Rust-only server
//! (`examples/native_hello`) serves. This is what lets `fuzz/` and
//! `benches/http.rs` run without Python; the test fails if a Python-only
//! module or dependency leaks into the core.
//!
//! The build goes to its own target directory (`<target>/no-python`: the
//! outer `cargo test` holds the lock of its own) and is incremental after the
//! first run (cold: 53 s of CPU, 78 s with both cores busy elsewhere; warm:
//! well under a second).

mod common;

use common::Server;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `<target>/no-python`, beside the directory this test binary was built in.
fn no_python_target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // <target>/debug/deps/no_python_core-HASH
    let target = exe.ancestors().nth(3).expect("test binary inside a target directory");
    target.join("no-python")
}

/// Runs `cargo ARGS` on this package with no Python anywhere in reach of a
/// build script: pyo3's configuration, were it built, would fail on this
/// interpreter path.
fn cargo(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO"))
        .args(args)
        .args(["--manifest-path", concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")])
        .env("PYO3_PYTHON", "/nonexistent/python3")
        .env_remove("CARGO_TARGET_DIR")
        // No debug info: a third less to compile and half the disk; nothing here is debugged.
        .env("CARGO_PROFILE_DEV_DEBUG", "0")
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "cargo {} failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The package names in the dependency graph (normal and build edges).
fn graph(features: &[&str]) -> Vec<String> {
    let mut args = vec!["tree", "--locked", "--offline", "-e", "normal,build", "--prefix", "none", "--format", "{p}"];
    args.extend_from_slice(features);
    let out = cargo(&args);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn pyo3_is_in_the_default_graph_only() {
    let default = graph(&[]);
    assert!(default.iter().any(|p| p == "pyo3"), "the default build must have pyo3: {default:?}");
    assert!(default.iter().any(|p| p == "pyo3-build-config"), "{default:?}");
    let core = graph(&["--no-default-features"]);
    assert!(core.iter().any(|p| p == "httparse"), "cargo tree listed nothing useful: {core:?}");
    let python: Vec<_> = core.iter().filter(|p| p.starts_with("pyo3")).collect();
    assert!(python.is_empty(), "--no-default-features still depends on {python:?}");
}

/// The shared libraries an ELF file needs (`readelf -d`).
fn needed(binary: &Path) -> Vec<String> {
    let out = Command::new("readelf").arg("-d").arg(binary).output().unwrap_or_else(|e| {
        panic!("cannot run readelf ({e}): install binutils (tests/setup.sh installs what the tests need)")
    });
    assert!(out.status.success(), "readelf -d {}: {}", binary.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next().map(str::to_owned))
        .collect()
}

#[test]
fn the_core_builds_links_and_serves_without_libpython() {
    // The readelf check can see libpython: the default binary needs it.
    let pyrs = needed(Path::new(common::BIN));
    assert!(pyrs.iter().any(|l| l.starts_with("libpython")), "pyrs needs {pyrs:?}");

    let target = no_python_target_dir();
    let out = cargo(&[
        "build",
        "--locked",
        "--offline",
        "--no-default-features",
        "--example",
        "native_hello",
        "--bench",
        "http",
        "--message-format",
        "json-render-diagnostics",
        "--target-dir",
        target.to_str().expect("UTF-8 target path"),
    ]);
    // The executables cargo reports for the targets it built.
    let built: Vec<(String, PathBuf)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter_map(|m| Some((m["target"]["name"].as_str()?.to_owned(), PathBuf::from(m["executable"].as_str()?))))
        .collect();
    for name in ["native_hello", "http"] {
        let exe = &built.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name} in {built:?}")).1;
        let libs = needed(exe);
        assert!(libs.iter().any(|l| l.starts_with("libc.")), "{name} needs {libs:?}");
        let python: Vec<_> = libs.iter().filter(|l| l.contains("python")).collect();
        assert!(python.is_empty(), "{name} ({}) links {python:?}", exe.display());
    }

    // The Python-free server answers.
    let native = &built.iter().find(|(n, _)| n == "native_hello").expect("native_hello built").1;
    let mut cmd = Command::new(native);
    cmd.args(["--bind", "127.0.0.1:0"]);
    let mut server = Server::spawn(cmd);
    let r = server.get("/hello");
    assert_eq!((r.status, r.text()), (200, "world".to_owned()));
    assert_eq!(server.get("/nope").status, 404);
    server.signal("TERM");
    let status = server.wait_exit(30);
    assert!(status.success(), "native_hello exited with {status}; stderr:\n{}", server.stderr());
}
