//! Helpers of the observability tests: the admin listener's address, plain
//! GETs to it, and /metrics parsed by the official Prometheus parser
//! (`prometheus_client` in target/test-venv, installed by tests/setup.sh).
#![allow(dead_code)]

use crate::common::*;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The admin address pyrs announced (`Admin listening on http://ADDR`).
pub fn admin_addr(s: &Server) -> SocketAddr {
    let out = s.stdout();
    let rest = out.split("Admin listening on http://").nth(1).unwrap_or_else(|| panic!("no admin line in:\n{out}"));
    rest.lines().next().unwrap().trim().parse().unwrap()
}

/// The admin address of a server launched with `--admin 127.0.0.1:0`, once
/// announced (before the project loads: the listener is bound by then).
/// Tests never pick a "free" port themselves: released, it can be taken by
/// any other process on the machine before pyrs binds it, and the test then
/// talks to that process instead.
pub fn announced_admin(s: &Server) -> SocketAddr {
    s.wait_stdout("Admin listening on http://", 1, 30);
    // The line is complete once the one after it started, or at its newline.
    wait_until(30, "the whole admin line", || {
        s.stdout().split("Admin listening on http://").nth(1).is_some_and(|rest| rest.contains('\n'))
    });
    admin_addr(s)
}

/// GET `path` from `addr` on a new connection.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    let mut c = Client::connect(addr);
    c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    c.read_response()
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The test virtualenv's python; panics with what to run when missing.
pub fn venv_python() -> PathBuf {
    let py = repo().join("target/test-venv/bin/python");
    assert!(py.exists(), "{} is missing: run tests/setup.sh", py.display());
    py
}

/// One sample of /metrics: name, labels, value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        print(json.dumps([s.name, s.labels, s.value]))
"#;

/// /metrics text parsed with prometheus_client (fails on anything it rejects).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    use std::io::Write;
    let mut child = Command::new(venv_python())
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the test virtualenv's python");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client rejected /metrics (or is missing: run tests/setup.sh):\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let labels =
                v[1].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().into())).collect();
            Sample { name: v[0].as_str().unwrap().into(), labels, value: v[2].as_f64().unwrap() }
        })
        .collect()
}

/// Fetches and parses /metrics from the admin listener.
pub fn metrics(admin: SocketAddr) -> Vec<Sample> {
    let r = get(admin, "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    parse_metrics(&r.text())
}

/// The value of the one sample named `name` whose labels include `labels`
/// (0 when there is none); panics if several match.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .collect();
    assert!(found.len() <= 1, "several samples match {name} {labels:?}: {found:?}");
    found.first().map(|s| s.value).unwrap_or(0.0)
}

/// Every sample named `name`.
pub fn all<'a>(samples: &'a [Sample], name: &str) -> Vec<&'a Sample> {
    samples.iter().filter(|s| s.name == name).collect()
}

/// The lines of `path` once it holds at least `n` (polled).
pub fn wait_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    wait_until(30, &format!("{n} lines in {}", path.display()), || {
        lines = std::fs::read_to_string(path).unwrap_or_default().lines().map(String::from).collect();
        lines.len() >= n
    });
    lines
}

/// SIGTERM while a request to `/wait` is in flight (its handler writes
/// `started` in `dir` and returns "done" once `go` exists there): /readyz
/// answers 503 and /healthz 200 while draining, the request completes and
/// the server exits 0.
pub fn drain_with_a_request_in_flight(mut s: Server, dir: &std::path::Path, admin: SocketAddr) {
    let addr = s.addr;
    let waiter = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.send(b"GET /wait HTTP/1.1\r\nHost: t\r\n\r\n");
        c.read_response().text()
    });
    wait_until(10, "the /wait handler", || dir.join("started").exists());
    s.signal("TERM");
    wait_until(10, "/readyz 503 while draining", || get(admin, "/readyz").status == 503);
    assert_eq!(get(admin, "/healthz").status, 200);
    std::fs::write(dir.join("go"), "").unwrap();
    assert_eq!(waiter.join().unwrap(), "done");
    assert!(s.wait_exit(30).success());
}
