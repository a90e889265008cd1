//! Helpers shared by the `tests/example_*.rs` suites (the model-serving
//! examples of issue 12): serve a shipped example with `target/test-venv`
//! and `--workers 2`, read JSON answers, and run a real `redis-server` on a
//! free loopback port.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../common/mod.rs"]
pub mod common;
pub use common::{Project, Response, Server};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The virtualenv `tests/setup.sh` makes with every example's requirements.
/// Panics with what to run when it is missing or lacks one of `modules`.
pub fn test_venv(modules: &[&str]) -> PathBuf {
    let venv = repo().join("target/test-venv");
    let python = venv.join("bin/python");
    let hint = "run tests/setup.sh (it installs every examples/*/requirements.txt into target/test-venv)";
    assert!(python.exists(), "{} is missing: {hint}", python.display());
    let imports = format!("import {}", modules.join(", "));
    let out = Command::new(&python).args(["-c", &imports]).env_remove("PYTHONPATH").output().expect("run python");
    assert!(
        out.status.success(),
        "target/test-venv cannot `{imports}`: {hint}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    venv
}

/// Serves `examples/NAME` with the test virtualenv and `--workers 2`, plus
/// `args`; `env` is added to the server's environment.
pub fn serve_example(name: &str, modules: &[&str], args: &[&str], env: &[(&str, &str)]) -> Server {
    let venv = test_venv(modules);
    let project = Project { dir: repo().join("examples").join(name) };
    let mut all = vec!["--venv", venv.to_str().unwrap(), "--workers", "2"];
    all.extend_from_slice(args);
    let mut envs = vec![("PYTHONDONTWRITEBYTECODE", "1")];
    envs.extend_from_slice(env);
    Server::start_with(&project, &all, &envs)
}

pub fn json(r: &Response) -> serde_json::Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}), status {}: {:?}", r.status, String::from_utf8_lossy(&r.body)))
}

/// GET `path`, asserting a 200 with a JSON body.
pub fn get_json(server: &Server, path: &str) -> serde_json::Value {
    let r = server.get(path);
    assert_eq!(r.status, 200, "GET {path}: {}\nstderr:\n{}", String::from_utf8_lossy(&r.body), server.stderr());
    assert_eq!(r.header("Content-Type"), Some("application/json"), "GET {path}");
    json(&r)
}

/// POST `body` to `path`: (status, JSON body or null when the body is not JSON).
pub fn post_json(server: &Server, path: &str, body: &str) -> (u16, serde_json::Value) {
    let r = server.post(path, body.as_bytes());
    (r.status, serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null))
}

/// GETs `path` on fresh connections until answers from `n` distinct worker
/// pids (the JSON field "pid") were seen; returns them. SO_REUSEPORT spreads
/// new connections over the workers' listeners by a hash of the client port.
pub fn worker_pids(server: &Server, path: &str, n: usize) -> Vec<i64> {
    let mut pids = Vec::new();
    for _ in 0..400 {
        let pid = get_json(server, path)["pid"].as_i64().expect("pid");
        if !pids.contains(&pid) {
            pids.push(pid);
            if pids.len() == n {
                return pids;
            }
        }
    }
    panic!(
        "only {} distinct workers answered 400 fresh connections: {pids:?}\nSTDERR\n{}",
        pids.len(),
        server.stderr()
    );
}

/// A private directory under the cargo test tmpdir (emptied first).
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---------------------------------------------------------------- redis

/// A real `redis-server` on 127.0.0.1 and a free port, without persistence;
/// killed when dropped.
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    pub fn start() -> Redis {
        let which = Command::new("sh").args(["-c", "command -v redis-server"]).output().expect("sh");
        assert!(
            which.status.success(),
            "redis-server is not installed: run tests/setup.sh (it installs Debian's redis-server)"
        );
        // A port is free when we can bind it; another process could take it
        // before redis does, so a failed start is retried on a new port.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
                .args(["--protected-mode", "yes", "--daemonize", "no", "--loglevel", "warning"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                if command(port, &["PING"]).as_deref() == Some("+PONG") {
                    return Redis { child, port };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not start on a free loopback port (5 attempts)");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn command(&self, args: &[&str]) -> String {
        command(self.port, args).unwrap_or_else(|| panic!("redis command {args:?} failed"))
    }

    /// An integer reply (`:N`).
    pub fn int(&self, args: &[&str]) -> i64 {
        let reply = self.command(args);
        reply.strip_prefix(':').and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{args:?} -> {reply:?}"))
    }
}

/// One command to the redis on `port`; the reply's first line (`+OK`, `:42`,
/// `$-1`, ...), and for a bulk string its payload after a space.
fn command(port: u16, args: &[&str]) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).ok()?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let line = line.trim_end().to_string();
    if let Some(n) = line.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
        let mut payload = vec![0; n + 2];
        r.read_exact(&mut payload).ok()?;
        return Some(format!("{line} {}", String::from_utf8_lossy(&payload[..n])));
    }
    Some(line)
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
