//! Threads and shutdown: slow handlers do not stall the server; SIGTERM and
//! SIGINT drain in-flight requests, call close() and atexit hooks, exit 0.

mod common;
use common::*;
use std::time::{Duration, Instant};

const API: &str = r#"
import atexit, os, sys, time

def _bye():
    print("atexit hook ran", flush=True)

atexit.register(_bye)

class Api:
    def sleep(self, request):
        print("sleeping", flush=True)
        time.sleep(float(request.query.get("s", "1")))
        return "slept"

    def wait(self, request):
        # Blocks until the test creates the file named by ?f=.
        print("waiting", flush=True)
        while not os.path.exists(request.query["f"]):
            time.sleep(0.01)
        return "done"

    def fast(self, request):
        return "fast"

    def close(self):
        print("close() called", flush=True)
"#;

fn server(extra: &str, args: &[&str]) -> Server {
    let p = Project::simple(API, &[("/sleep", "sleep"), ("/fast", "fast"), ("/wait", "wait")], extra);
    Server::start(&p, args)
}

#[test]
fn sigterm_waits_for_the_in_flight_response_then_exits_0() {
    let mut s = server("", &[]);
    let mut idle = s.connect();
    idle.send(b"GET /fast HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(idle.read_response().status, 200);

    let mut c = s.connect();
    c.send(b"GET /sleep?s=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    s.wait_stdout("sleeping", 1, 10);
    s.signal("TERM");
    let r = c.read_response();
    assert_eq!((r.status, r.text().as_str()), (200, "slept"));
    assert_eq!(r.header("Connection"), Some("close"));
    // The idle keep-alive connection is closed, not left hanging.
    assert!(idle.is_closed());
    let status = s.wait_exit(10);
    assert_eq!(status.code(), Some(0), "stderr:\n{}", s.stderr());
    let out = s.stdout();
    assert!(out.contains("close() called"), "{out}");
    assert!(out.contains("atexit hook ran"), "{out}");
    let err = s.stderr();
    assert!(!err.contains("KeyboardInterrupt") && !err.contains("Traceback"), "{err}");
}

#[test]
fn sigint_is_not_a_keyboard_interrupt() {
    let mut s = server("", &[]);
    let mut c = s.connect();
    c.send(b"GET /sleep?s=0.5 HTTP/1.1\r\nHost: t\r\n\r\n");
    s.wait_stdout("sleeping", 1, 10);
    s.signal("INT");
    assert_eq!(c.read_response().text(), "slept");
    assert_eq!(s.wait_exit(10).code(), Some(0));
    let err = s.stderr();
    assert!(err.contains("SIGINT received"), "{err}");
    assert!(!err.contains("KeyboardInterrupt"), "{err}");
}

#[test]
fn shutdown_timeout_bounds_the_wait_and_a_second_signal_exits_at_once() {
    let mut s = server("\"shutdown_timeout\": 1,", &[]);
    let mut c = s.connect();
    c.send(b"GET /sleep?s=60 HTTP/1.1\r\nHost: t\r\n\r\n");
    s.wait_stdout("sleeping", 1, 10);
    let start = Instant::now();
    s.signal("TERM");
    let status = s.wait_exit(10);
    // Well before the handler's 60 s.
    assert!(start.elapsed() < Duration::from_secs(30), "took {:?}", start.elapsed());
    assert_eq!(status.code(), Some(0));

    let mut s = server("", &[]);
    let mut c = s.connect();
    c.send(b"GET /sleep?s=60 HTTP/1.1\r\nHost: t\r\n\r\n");
    s.wait_stdout("sleeping", 1, 10);
    let start = Instant::now();
    s.signal("TERM");
    s.wait_stderr("SIGTERM received", 5);
    s.signal("TERM");
    let status = s.wait_exit(5);
    // Well before shutdown_timeout (10 s by default).
    assert!(start.elapsed() < Duration::from_secs(9), "took {:?}", start.elapsed());
    assert_eq!(status.code(), Some(1));
    assert!(s.stderr().contains("second signal"), "{}", s.stderr());
}

#[test]
fn a_sleeping_handler_does_not_stall_other_connections() {
    let s = server("\"thread_count\": 2,", &[]);
    let flag = flag_path(&s);
    let mut slow = s.connect();
    slow.send(format!("GET /wait?f={} HTTP/1.1\r\nHost: t\r\n\r\n", flag.display()).as_bytes());
    s.wait_stdout("waiting", 1, 10);
    // The blocked handler holds only its own thread: these are all answered
    // while it still waits.
    for _ in 0..20 {
        assert_eq!(s.get("/fast").text(), "fast");
    }
    std::fs::write(&flag, b"").unwrap();
    assert_eq!(slow.read_response().text(), "done");
}

#[test]
fn new_connections_are_refused_after_the_signal() {
    let mut s = server("", &[]);
    let mut c = s.connect();
    let flag = flag_path(&s);
    c.send(format!("GET /wait?f={} HTTP/1.1\r\nHost: t\r\n\r\n", flag.display()).as_bytes());
    s.wait_stdout("waiting", 1, 10);
    s.signal("TERM");
    s.wait_stderr("SIGTERM received", 5);
    // The listener is closed (before that line is logged): connecting fails
    // (or is reset without an answer).
    match std::net::TcpStream::connect(s.addr) {
        Err(_) => {}
        Ok(mut stream) => {
            use std::io::{Read, Write};
            let _ = stream.write_all(b"GET /fast HTTP/1.1\r\nHost: t\r\n\r\n");
            stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut buf = Vec::new();
            let _ = stream.read_to_end(&mut buf);
            assert!(buf.is_empty(), "got {:?}", String::from_utf8_lossy(&buf));
        }
    }
    std::fs::write(&flag, b"").unwrap();
    assert_eq!(c.read_response().text(), "done");
    assert_eq!(s.wait_exit(10).code(), Some(0));
}

/// A path for a flag file the `/wait` handler polls for (not created yet).
fn flag_path(s: &Server) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("flag-{}", s.child.id()))
}
