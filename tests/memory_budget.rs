//! The process-wide memory budget (max_memory_mb, default a quarter of the
//! machine's, cgroup's or address-space limit): clients that never read
//! large responses, or withhold the last byte of large bodies, cannot make
//! the server abort under `ulimit -v`; past the budget new requests get 503
//! and, once those clients go, the server serves normally again.

mod common;
use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::process::Command;

const API: &str = r#"
class Api:
    def big(self, request):
        return b"x" * (8 << 20)   # a new 8 MiB object per request

    def small(self, request):
        return "small"

    def upload(self, request):
        return str(len(request.body))
"#;

/// 2 GiB of address space: the default budget is then 512 MiB.
const ULIMIT_V_KB: u64 = 2 * 1024 * 1024;

fn start_limited() -> (Project, Server) {
    let p =
        Project::simple(API, &[("/big", "big"), ("/small", "small"), ("/upload", "upload")], "\"thread_count\": 2,");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -v {ULIMIT_V_KB} && exec \"$0\" \"$@\""))
        .arg(BIN)
        .arg(p.file())
        .args(["--bind", "127.0.0.1:0", "--print-config"])
        .env_remove("VIRTUAL_ENV");
    // --print-config prints and exits: check the derived default first.
    let out = cmd.output().unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(printed.contains("max_memory_mb") && printed.contains("512"), "{printed}");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -v {ULIMIT_V_KB} && exec \"$0\" \"$@\""))
        .arg(BIN)
        .arg(p.file())
        .args(["--bind", "127.0.0.1:0"])
        .env_remove("VIRTUAL_ENV");
    (p, Server::spawn(cmd))
}

/// The status code at the start of a response on `c`.
fn status_of(c: &mut TcpStream) -> u16 {
    let mut head = [0u8; 12];
    let mut got = 0;
    while got < head.len() {
        match read_retry(c, &mut head[got..]) {
            Ok(0) | Err(_) => return 0,
            Ok(n) => got += n,
        }
    }
    String::from_utf8_lossy(&head[9..12]).parse().unwrap_or(0)
}

fn assert_alive_and_recovers(s: &mut Server) {
    assert!(s.child.try_wait().unwrap().is_none(), "pyrs died:\n{}", s.stderr());
    wait_until(60, "GET /small to be served again", || {
        let mut c = s.connect();
        c.send(b"GET /small HTTP/1.1\r\nHost: h\r\n\r\n");
        c.read_response().status == 200
    });
    assert!(s.child.try_wait().unwrap().is_none(), "pyrs died:\n{}", s.stderr());
    let err = s.stderr();
    assert!(!err.contains("memory allocation") && !err.contains("panicked"), "{err}");
}

#[test]
fn clients_that_never_read_8_mib_responses_meet_the_budget_not_an_abort() {
    let (_p, mut s) = start_limited();
    let mut clients = Vec::new();
    for _ in 0..400 {
        let mut c = connect(s.addr).unwrap();
        c.set_read_timeout(Some(RESPONSE_WAIT)).unwrap();
        c.write_all(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        clients.push(c);
    }
    // Each gets an answer (read only its status line: the rest stays unread).
    let statuses: Vec<u16> = clients.iter_mut().map(status_of).collect();
    let ok = statuses.iter().filter(|&&st| st == 200).count();
    let refused = statuses.iter().filter(|&&st| st == 503).count();
    assert_eq!(ok + refused, 400, "{statuses:?}");
    assert!(ok >= 16 && refused >= 100, "{ok} answered, {refused} refused");
    // Meanwhile others get an answer, not a hang.
    let mut c = s.connect();
    c.send(b"GET /small HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(matches!(c.read_response().status, 200 | 503));
    drop(clients);
    assert_alive_and_recovers(&mut s);
}

#[test]
fn clients_that_withhold_the_last_byte_of_9_mib_bodies_meet_the_budget() {
    let (_p, mut s) = start_limited();
    let body = vec![b'y'; 9 << 20];
    let mut clients = Vec::new();
    let mut refused = 0;
    for _ in 0..400 {
        let mut c = connect(s.addr).unwrap();
        c.set_read_timeout(Some(RESPONSE_WAIT)).unwrap();
        let head = format!("POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n", body.len());
        c.write_all(head.as_bytes()).unwrap();
        // All but the last byte; a refused client sees its write fail.
        if c.write_all(&body[..body.len() - 1]).is_err() {
            refused += 1;
            continue;
        }
        clients.push(c);
    }
    // Those refused were told so (the ones whose writes went through may
    // still have a 503 waiting).
    for c in clients.iter_mut() {
        c.set_nonblocking(true).unwrap();
    }
    let mut seen = vec![false; clients.len()];
    let mut answered_503 = refused;
    wait_until(60, "100 of the 400 uploads refused with 503", || {
        for (c, seen) in clients.iter_mut().zip(seen.iter_mut()).filter(|(_, s)| !**s) {
            let mut b = [0u8; 12];
            if let Ok(12) = c.peek(&mut b) {
                *seen = true;
                if &b[9..12] == b"503" {
                    answered_503 += 1;
                }
            }
        }
        answered_503 >= 100
    });
    drop(clients);
    assert_alive_and_recovers(&mut s);
    let r = s.post("/upload", &body);
    assert_eq!(r.text(), (9 << 20).to_string());
}

/// A batched route whose calls wait for the file "release" beside main.py.
const BATCHED: &str = r#"
import os, time

RELEASE = os.path.join(os.path.dirname(__file__), "release")

class Api:
    def infer(self, requests):
        while not os.path.exists(RELEASE):
            time.sleep(0.01)
        return [str(len(r.body)) for r in requests]

    def small(self, request):
        return "small"
"#;

#[test]
fn bodies_waiting_in_a_batch_queue_count_against_the_budget() {
    // An 8 MiB budget and 1 MiB bodies: one batch of one holds the batch
    // thread, the others wait in the queue with their bodies. Before, a body
    // stopped counting once its connection had queued it: the queue could
    // hold any amount and the budget never refused anything.
    let pyrs = r#"{
  "max_memory_mb": 8,
  "thread_count": 2,
  "modules": [
    {"path": "/infer", "module": "main", "class": "Api", "handler": "infer",
     "batch": {"max_size": 1, "max_concurrent_batches": 1}},
    {"path": "/small", "module": "main", "class": "Api", "handler": "small"},
  ]
}"#;
    let p = Project::new(&[("main.py", BATCHED), ("project.pyrs", pyrs)]);
    let mut s = Server::start(&p, &[]);
    assert_eq!(s.get("/small").text(), "small");
    let body = vec![b'b'; 1 << 20];
    let mut uploads = Vec::new();
    for _ in 0..16 {
        let mut c = s.connect();
        c.stream.set_write_timeout(Some(RESPONSE_WAIT)).unwrap();
        let head = format!("POST /infer HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n", body.len());
        c.send(head.as_bytes());
        // A refused upload may see its connection closed before the body is written.
        let _ = c.stream.write_all(&body);
        uploads.push(c);
    }
    // The queued bodies spend the budget: a new request is refused.
    wait_until(30, "GET /small refused while the bodies wait", || s.get("/small").status == 503);
    assert!(s.child.try_wait().unwrap().is_none(), "pyrs died:\n{}", s.stderr());
    // The batches drain: every upload gets its answer or its 503.
    std::fs::write(p.dir.join("release"), "").unwrap();
    let statuses: Vec<u16> = uploads.iter_mut().map(|c| c.try_read_response().map_or(0, |r| r.status)).collect();
    let ok = statuses.iter().filter(|&&st| st == 200).count();
    assert!(ok >= 4 && statuses.iter().all(|&st| st == 200 || st == 503 || st == 0), "{statuses:?}");
    // And with the queue empty, the budget has room again.
    assert_alive_and_recovers(&mut s);
    assert_eq!(s.post("/infer", &body).text(), (1 << 20).to_string());
}
