//! Adaptive request batching (`"batch"` on a route): concurrent clients get
//! their own answers from shared handler calls, a lone client is not held
//! back, errors are per item or for the whole batch, pipelined answers keep
//! their order, a client that leaves is dropped from its batch, and the same
//! holds with worker processes and across a reload.

mod common;
use common::*;
use std::collections::HashSet;
use std::time::{Duration, Instant};

const API: &str = r#"
import asyncio, os, time
import pyrs

VERSION = "v1"

class Api:
    def __init__(self):
        self.sizes = []
        self.seen = []

    def echo(self, requests):
        self.sizes.append(len(requests))
        for r in requests:
            hold = r.query.get("hold")
            if hold:
                print("holding", flush=True)
                while not os.path.exists(hold):
                    time.sleep(0.005)
        self.seen.extend(r.query.get("v", "") for r in requests)
        time.sleep(0.002)  # the model
        return [{"v": r.query.get("v", ""), "size": len(requests), "pid": os.getpid(), "version": VERSION}
                for r in requests]

    def mixed(self, requests):
        vals = [r.query.get("v", "") for r in requests]
        print(f"mixed batch {vals}", flush=True)
        if "raise" in vals:
            raise ValueError("the model failed")
        if "http" in vals:
            raise pyrs.HTTPError(503, "model overloaded")
        if "short" in vals:
            return [{"v": v} for v in vals[1:]]
        if "notalist" in vals:
            return {"v": vals}
        return [self.one(v) for v in vals]

    def one(self, v):
        if v.startswith("missing"):
            return pyrs.HTTPError(404, f"no {v}")
        if v == "created":
            return ("made", 201)
        if v == "none":
            return None
        if v == "exc":
            return ValueError("an exception returned, not raised")
        if v == "close":
            return pyrs.Response("bye", headers={"Connection": "close"})
        return {"v": v}

    async def aecho(self, requests):
        await asyncio.sleep(0.001)
        return [r.query.get("v", "") for r in requests]

    def plain(self, request):
        return "plain " + request.query.get("v", "")

    def stats(self, request):
        return {"sizes": self.sizes, "seen": self.seen, "pid": os.getpid()}
"#;

/// A project serving API with `/echo` batched as `batch` (a JSON object).
fn project(batch: &str, extra: &str) -> Project {
    let pyrs = format!(
        r#"{{
{extra}
"modules": [
  {{"path": "/echo", "module": "main", "class": "Api", "handler": "echo", "batch": {batch}}},
  {{"path": "/mixed", "module": "main", "class": "Api", "handler": "mixed", "batch": {{"max_size": 16, "max_wait_ms": 5}}}},
  {{"path": "/aecho", "module": "main", "class": "Api", "handler": "aecho", "batch": {{}}}},
  {{"path": "/plain", "module": "main", "class": "Api", "handler": "plain"}},
  {{"path": "/stats", "module": "main", "class": "Api", "handler": "stats"}},
]
}}
"#
    );
    Project::new(&[("main.py", API), ("project.pyrs", &pyrs)])
}

trait StderrCount {
    fn wait_stderr_count(&self, needle: &str, n: usize, secs: u64);
}

impl StderrCount for Server {
    /// Waits until stderr contains `needle` `n` times.
    fn wait_stderr_count(&self, needle: &str, n: usize, secs: u64) {
        wait_until(secs, &format!("{n} x {needle:?} in stderr"), || self.stderr().matches(needle).count() >= n);
    }
}

fn json(r: &Response) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&r.body)))
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")
}

/// `clients` threads, each on its own keep-alive connection, ask `/echo`
/// `rounds` times with a value of their own and check every answer is
/// theirs; returns the batch sizes the answers reported.
fn concurrent_clients(s: &Server, clients: usize, rounds: usize, version: &str) -> Vec<u64> {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(clients));
    let threads: Vec<_> = (0..clients)
        .map(|t| {
            let (addr, barrier, version) = (s.addr, barrier.clone(), version.to_string());
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                barrier.wait();
                let mut sizes = Vec::new();
                for i in 0..rounds {
                    let v = format!("c{t}-{i}");
                    c.send(get(&format!("/echo?v={v}")).as_bytes());
                    let r = c.read_response();
                    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
                    let j = json(&r);
                    assert_eq!(j["v"], v.as_str(), "client {t} got someone else's answer: {j}");
                    assert_eq!(j["version"], version.as_str());
                    sizes.push(j["size"].as_u64().unwrap());
                }
                sizes
            })
        })
        .collect();
    threads.into_iter().flat_map(|h| h.join().expect("a client failed")).collect()
}

#[test]
fn fifty_concurrent_clients_get_their_own_answers_from_shared_calls() {
    let p = project(r#"{"max_size": 64, "max_wait_ms": 2}"#, "");
    let s = Server::start(&p, &[]);
    assert!(s.stdout().contains("Added route /echo -> main.Api.echo (all methods, batched: up to 64 requests, 2 ms"));
    let sizes = concurrent_clients(&s, 50, 20, "v1");
    assert_eq!(sizes.len(), 1000);
    let stats = json(&s.get("/stats"));
    let calls: Vec<u64> = stats["sizes"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(calls.iter().sum::<u64>(), 1000, "every request in exactly one batch: {calls:?}");
    let seen: HashSet<&str> = stats["seen"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(seen.len(), 1000);
    assert!(calls.iter().all(|&n| (1..=50).contains(&n)), "{calls:?}");
    assert!(*calls.iter().max().unwrap() > 1, "requests were never batched: {calls:?}");
    assert!(calls.len() < 1000, "{calls:?}");
    assert!(!s.stderr().contains("ERROR"), "{}", s.stderr());
}

#[test]
fn a_lone_client_is_answered_at_once_in_batches_of_one() {
    // If a request waited for max_wait_ms, ten of them would take 20 s.
    let p = project(r#"{"max_size": 64, "max_wait_ms": 2000}"#, "");
    let s = Server::start(&p, &[]);
    let started = Instant::now();
    let mut c = s.connect();
    for i in 0..5 {
        c.send(get(&format!("/echo?v=k{i}")).as_bytes());
        let j = json(&c.read_response());
        assert_eq!((j["v"].as_str(), j["size"].as_u64()), (Some(format!("k{i}").as_str()), Some(1)));
    }
    drop(c);
    for i in 0..5 {
        let j = json(&s.get(&format!("/echo?v=f{i}")));
        assert_eq!((j["v"].as_str(), j["size"].as_u64()), (Some(format!("f{i}").as_str()), Some(1)));
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "10 lone requests took {took:?}: they waited for max_wait_ms");
}

#[test]
fn errors_are_per_item_or_for_the_whole_batch() {
    let p = project("{}", "");
    let s = Server::start(&p, &[]);
    // Pipelined in one write: parsed in one read, queued together, one batch.
    let batch = |vals: &[&str]| -> Vec<Response> {
        let mut c = s.connect();
        let raw: String = vals.iter().map(|v| get(&format!("/mixed?v={v}"))).collect();
        c.send(raw.as_bytes());
        let out = vals.iter().map(|_| c.read_response()).collect();
        let line = format!("mixed batch {vals:?}").replace('"', "'");
        s.wait_stdout(&line, 1, 10);
        out
    };
    let r = batch(&["ok1", "missing-x", "created", "none", "exc"]);
    assert_eq!((r[0].status, json(&r[0])["v"].as_str()), (200, Some("ok1")));
    assert_eq!((r[1].status, r[1].text().as_str()), (404, "no missing-x\n"));
    assert_eq!((r[2].status, r[2].text().as_str()), (201, "made"));
    assert_eq!((r[3].status, r[3].body.len()), (204, 0));
    assert_eq!(r[4].status, 500);
    s.wait_stderr("returned a value pyrs cannot send", 10);

    let r = batch(&["a", "raise", "b"]);
    assert!(r.iter().all(|r| r.status == 500 && r.text() == "Internal Server Error\n"));
    s.wait_stderr("raised for a batch of 3 requests (all answered 500)", 10);
    s.wait_stderr("ValueError: the model failed", 10);

    let r = batch(&["short", "a", "b"]);
    assert!(r.iter().all(|r| r.status == 500));
    s.wait_stderr("returned a list of 2 items for a batch of 3 requests (all answered 500)", 10);

    let r = batch(&["notalist"]);
    assert_eq!(r[0].status, 500);
    s.wait_stderr("returned dict instead of a list for a batch of 1 request (all answered 500)", 10);

    let r = batch(&["a", "http"]);
    assert!(r.iter().all(|r| r.status == 503 && r.text() == "model overloaded\n"));

    let err = s.stderr();
    assert_eq!(err.matches("ValueError: the model failed").count(), 1, "logged once per batch:\n{err}");
    assert_eq!(err.matches("for a batch of").count(), 3, "{err}");

    // The same route still answers.
    let r = batch(&["fine"]);
    assert_eq!(json(&r[0])["v"], "fine");
}

#[test]
fn a_failed_batch_names_each_of_its_requests() {
    let p = project("{}", "");
    let s = Server::start(&p, &["--access-log"]);
    // Pipelined in one write: one batch; each request with an id of its own.
    let batch = |vals: &[&str], tag: &str| -> Vec<Response> {
        let mut c = s.connect();
        let raw: String = vals
            .iter()
            .enumerate()
            .map(|(i, v)| format!("GET /mixed?v={v} HTTP/1.1\r\nHost: t\r\nX-Request-Id: {tag}-{i}\r\n\r\n"))
            .collect();
        c.send(raw.as_bytes());
        let out: Vec<Response> = vals.iter().map(|_| c.read_response()).collect();
        s.wait_stdout(&format!("mixed batch {vals:?}").replace('"', "'"), 1, 30);
        for (i, r) in out.iter().enumerate() {
            assert_eq!(r.header("X-Request-Id"), Some(format!("{tag}-{i}").as_str()), "its own id in its answer");
        }
        out
    };
    // Each answer's access-log line carries its own id and status.
    let logged = |path: &str, status: u16, rid: &str| {
        let line = format!("\"GET /mixed?v={path} HTTP/1.1\" {status} ");
        wait_until(30, &format!("the access-log line of {path}"), || {
            s.stderr().lines().any(|l| l.contains(&line) && l.ends_with(&format!(" rid={rid}")))
        });
    };

    let r = batch(&["a", "raise", "b"], "raised");
    assert!(r.iter().all(|r| r.status == 500));
    s.wait_stderr("raised for a batch of 3 requests (all answered 500) rid=raised-0 rid=raised-1 rid=raised-2:", 30);
    for (i, v) in ["a", "raise", "b"].iter().enumerate() {
        logged(v, 500, &format!("raised-{i}"));
    }

    let r = batch(&["short", "c"], "short");
    assert!(r.iter().all(|r| r.status == 500));
    s.wait_stderr(
        "returned a list of 1 items for a batch of 2 requests (all answered 500) rid=short-0 rid=short-1",
        30,
    );
    logged("c", 500, "short-1");

    // One item pyrs cannot send: logged with its own request's id, not the first one's.
    let r = batch(&["fine", "exc"], "item");
    assert_eq!((r[0].status, r[1].status), (200, 500));
    s.wait_stderr("(main.Api.mixed) rid=item-1: returned a value pyrs cannot send", 30);
    logged("fine", 200, "item-0");
    logged("exc", 500, "item-1");
    assert!(!s.stderr().contains("rid=item-0:"), "{}", s.stderr());
}

#[test]
fn pipelined_answers_keep_their_order_around_batched_ones() {
    let p = project("{}", "");
    let s = Server::start(&p, &[]);
    let mut c = s.connect();
    let paths = ["/echo?v=1", "/plain?v=2", "/echo?v=3", "/plain?v=4", "/aecho?v=5", "/echo?v=6", "/plain?v=7"];
    let raw: String = paths.iter().map(|p| get(p)).collect();
    for _ in 0..3 {
        c.send(raw.as_bytes());
        let got: Vec<String> = paths
            .iter()
            .map(|_| {
                let r = c.read_response();
                assert_eq!(r.status, 200);
                match r.header("Content-Type") {
                    Some("application/json") => {
                        let j = json(&r);
                        j.get("v").map(|v| v.as_str().unwrap().to_string()).unwrap_or_else(|| j.to_string())
                    }
                    _ => r.text(),
                }
            })
            .collect();
        assert_eq!(got, ["1", "plain 2", "3", "plain 4", "5", "6", "plain 7"]);
    }

    // A batched response that says Connection: close is the last one sent.
    let mut c = s.connect();
    c.send(format!("{}{}", get("/mixed?v=close"), get("/plain?v=after")).as_bytes());
    let r = c.read_response();
    assert_eq!((r.status, r.text().as_str(), r.header("Connection")), (200, "bye", Some("close")));
    assert!(c.is_closed(), "nothing may follow a response that closes the connection");
}

#[test]
fn a_client_that_disconnects_while_waiting_is_dropped_from_the_batch() {
    let p = project(r#"{"max_size": 64, "max_wait_ms": 2}"#, "");
    let s = Server::start(&p, &["--log-level", "trace"]);
    let queued = |n: usize| s.wait_stderr_count("request queued for a batch", n, 10);
    let flag = p.dir.join("release");
    // The first batch holds the batch thread until the flag exists.
    let mut first = s.connect();
    first.send(get(&format!("/echo?v=first&hold={}", flag.display())).as_bytes());
    s.wait_stdout("holding", 1, 10);
    // Meanwhile a request waits in the queue, and its client goes away.
    let mut gone = s.connect();
    gone.send(get("/echo?v=gone").as_bytes());
    queued(2);
    gone.reset();
    s.wait_stderr("client went away while its request waited for a batch", 10);
    let mut stays = s.connect();
    stays.send(get("/echo?v=stays").as_bytes());
    queued(3);
    std::fs::write(&flag, b"").unwrap();
    assert_eq!(json(&first.read_response())["v"], "first");
    let j = json(&stays.read_response());
    assert_eq!((j["v"].as_str(), j["size"].as_u64()), (Some("stays"), Some(1)));
    let seen = json(&s.get("/stats"))["seen"].clone();
    assert_eq!(
        seen,
        serde_json::json!(["first", "stays"]),
        "the handler never saw the request of the client that left"
    );
}

#[test]
fn a_half_closed_client_gets_its_batched_answer() {
    let p = project(r#"{"max_size": 64, "max_wait_ms": 2}"#, "");
    let s = Server::start(&p, &["--log-level", "debug"]);
    let pid = json(&s.get("/stats"))["pid"].as_u64().unwrap();
    let flag = p.dir.join("release");
    let mut c = s.connect();
    // The batch holds its request until the flag exists; the FIN comes meanwhile.
    let path = format!("/echo?v=half&hold={}", flag.display());
    c.send(format!("{}{}", get("/plain?v=before"), get(&path)).as_bytes());
    s.wait_stdout("holding", 1, 30);
    c.half_close();
    s.wait_stderr("client sent FIN; its received requests are still answered", 30);
    std::fs::write(&flag, b"").unwrap();
    let (got, rids) = masked(&c.read_to_close());
    let body = format!(r#"{{"v":"half","size":1,"pid":{pid},"version":"v1"}}"#);
    let plain = "HTTP/1.1 200 OK\r\nServer: pyrs\r\nDate: X\r\nX-Request-Id: R\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 12\r\n\r\nplain before";
    let echo = format!(
        "HTTP/1.1 200 OK\r\nServer: pyrs\r\nDate: X\r\nX-Request-Id: R\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(got, format!("{plain}{echo}"));
    assert_eq!(rids.len(), 2);
}

#[test]
fn waiting_requests_are_answered_through_a_graceful_stop() {
    let p = project(r#"{"max_size": 64, "max_wait_ms": 2}"#, "");
    let mut s = Server::start(&p, &["--log-level", "trace"]);
    let flag = p.dir.join("release");
    let mut first = s.connect();
    first.send(get(&format!("/echo?v=first&hold={}", flag.display())).as_bytes());
    s.wait_stdout("holding", 1, 10);
    let mut queued = s.connect();
    queued.send(get("/echo?v=queued").as_bytes());
    s.wait_stderr_count("request queued for a batch", 2, 10);
    s.signal("TERM");
    s.wait_stderr("SIGTERM received", 10);
    std::fs::write(&flag, b"").unwrap();
    assert_eq!(json(&first.read_response())["v"], "first");
    assert_eq!(json(&queued.read_response())["v"], "queued");
    assert_eq!(s.wait_exit(15).code(), Some(0), "{}", s.stderr());
}

#[test]
fn worker_processes_batch_in_their_own_queues_and_across_a_reload() {
    let p = project(r#"{"max_size": 64, "max_wait_ms": 2}"#, r#""workers": 2, "thread_count": 2,"#);
    let s = Server::start(&p, &[]);
    let sizes = concurrent_clients(&s, 40, 10, "v1");
    assert!(sizes.iter().any(|&n| n > 1), "never batched: {sizes:?}");
    let mut pids = HashSet::new();
    for _ in 0..400 {
        pids.insert(json(&s.get("/echo?v=p"))["pid"].as_i64().unwrap());
        if pids.len() == 2 {
            break;
        }
    }
    assert_eq!(pids.len(), 2, "both workers answer batched requests");

    std::fs::write(p.dir.join("main.py"), API.replace("VERSION = \"v1\"", "VERSION = \"v2\"")).unwrap();
    s.signal("HUP");
    wait_until(20, "the old workers to stop", || s.stderr().matches(") exited with status 0").count() >= 2);
    let sizes = concurrent_clients(&s, 40, 10, "v2");
    assert!(sizes.iter().any(|&n| n > 1), "never batched after the reload: {sizes:?}");
    assert!(!s.stderr().contains("ERROR"), "{}", s.stderr());
}

#[test]
fn check_validates_batch_settings() {
    let p = project(r#"{"max_size": 64, "max_wait_ms": 2, "max_concurrent_batches": 2}"#, "");
    let file = p.file();
    let (code, out, err) = run_pyrs(&[file.to_str().unwrap(), "--check"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("batched: up to 64 requests, 2 ms, 2 at once"), "{out}");
    for (batch, why) in [
        (r#"{"max_size": 0}"#, "batch max_size must be between 1 and 4096, got 0"),
        (r#"{"max_wait_ms": 70000}"#, "batch max_wait_ms must be between 0 and 60000, got 70000"),
        (r#"{"max_concurrent_batches": 0}"#, "batch max_concurrent_batches must be between 1 and 64, got 0"),
        (r#"{"max_size": 8, "wait": 2}"#, "unknown field `wait`"),
        ("64", "batch must be an object such as"),
    ] {
        let p = project(batch, "");
        let file = p.file();
        let (code, _, err) = run_pyrs(&[file.to_str().unwrap(), "--check"], &[]);
        assert_eq!(code, 1, "{batch}: {err}");
        let at = format!("{}:4:", file.display());
        assert!(err.contains(&at) && err.contains(why), "{batch}: {err}");
    }
}

#[test]
fn metrics_count_batch_sizes_and_batched_requests() {
    let p = project(r#"{"max_size": 64, "max_wait_ms": 2}"#, "");
    let s = Server::start(&p, &["--admin", "127.0.0.1:0", "--access-log"]);
    let out = s.stdout();
    let admin: std::net::SocketAddr = out
        .split("Admin listening on http://")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no admin address in:\n{out}"));
    // Three pipelined in one batch, then one alone.
    let mut c = s.connect();
    c.send(format!("{}{}{}", get("/echo?v=a"), get("/echo?v=b"), get("/echo?v=c")).as_bytes());
    for v in ["a", "b", "c"] {
        assert_eq!(json(&c.read_response())["v"], v);
    }
    assert_eq!(json(&s.get("/echo?v=d"))["v"], "d");
    let mut m = Client::connect(admin);
    m.send(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    let metrics = m.read_response().text();
    let line = |name: &str| -> String {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains("route=\"/echo\""))
            .unwrap_or_else(|| panic!("no {name} for /echo in:\n{metrics}"))
            .to_string()
    };
    assert!(line("pyrs_batch_size_count").ends_with(" 2"), "{metrics}");
    assert!(line("pyrs_batch_size_sum").ends_with(" 4"), "{metrics}");
    assert!(line("pyrs_batch_size_bucket{").contains("le=\"1\"} 1"), "{metrics}");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("pyrs_requests_total{route=\"/echo\"") && l.ends_with("status=\"2xx\"} 4")),
        "{metrics}"
    );
    assert!(!metrics.contains("pyrs_batch_size_count{route=\"/plain\""), "{metrics}");
    // Each batched request has its own access-log line, with its status and request id.
    wait_until(10, "four access-log lines for /echo", || s.stderr().matches("GET /echo?v=").count() >= 4);
    for v in ["a", "b", "c", "d"] {
        assert!(s.stderr().contains(&format!("\"GET /echo?v={v} HTTP/1.1\" 200")), "{}", s.stderr());
    }
}

#[test]
fn max_concurrent_batches_runs_batches_side_by_side() {
    // Two batch threads: while the first batch is held, a second one runs and answers.
    let p = project(r#"{"max_size": 64, "max_wait_ms": 2, "max_concurrent_batches": 2}"#, "");
    let s = Server::start(&p, &["--log-level", "trace"]);
    let flag = p.dir.join("release");
    let mut held = s.connect();
    held.send(get(&format!("/echo?v=held&hold={}", flag.display())).as_bytes());
    s.wait_stdout("holding", 1, 10);
    let j = json(&s.get("/echo?v=beside"));
    assert_eq!((j["v"].as_str(), j["size"].as_u64()), (Some("beside"), Some(1)));
    std::fs::write(&flag, b"").unwrap();
    assert_eq!(json(&held.read_response())["v"], "held");

    // With the default (one at a time), the second waits for the first.
    let p = project(r#"{"max_size": 64, "max_wait_ms": 2}"#, "");
    let s = Server::start(&p, &["--log-level", "trace"]);
    let flag = p.dir.join("release");
    let mut held = s.connect();
    held.send(get(&format!("/echo?v=held&hold={}", flag.display())).as_bytes());
    s.wait_stdout("holding", 1, 10);
    let mut next = s.connect();
    next.send(get("/echo?v=next").as_bytes());
    s.wait_stderr_count("request queued for a batch", 2, 10);
    std::fs::write(&flag, b"").unwrap();
    assert_eq!(json(&held.read_response())["v"], "held");
    assert_eq!(json(&next.read_response())["v"], "next");
    let seen = json(&s.get("/stats"))["seen"].clone();
    assert_eq!(seen, serde_json::json!(["held", "next"]), "one batch after the other");
}
