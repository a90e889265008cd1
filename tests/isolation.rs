//! No request waits behind another connection's handler while a pool thread
//! is idle: connections of a thread stuck in a handler move to an idle one.

mod common;
use common::*;
use std::collections::HashMap;

const API: &str = r#"
import threading

class Api:
    def __init__(self):
        self.release = threading.Event()

    def tid(self, request):
        return str(threading.get_ident())

    def block(self, request):
        print("blocking", flush=True)
        # Releases the GIL; only /release (or 120 s) ends it.
        self.release.wait(120)
        return "unblocked"

    def unblock(self, request):
        self.release.set()
        return "released"
"#;

fn routes() -> Vec<(&'static str, &'static str)> {
    vec![("/tid", "tid"), ("/block", "block"), ("/release", "unblock")]
}

/// Two keep-alive connections served by the same pool thread.
fn two_on_one_thread(s: &Server) -> (Client, Client) {
    let mut by_thread: HashMap<String, Vec<Client>> = HashMap::new();
    // 2 threads: of any 3 connections, two share a thread.
    for _ in 0..3 {
        let mut c = s.connect();
        c.send(b"GET /tid HTTP/1.1\r\nHost: h\r\n\r\n");
        let tid = c.read_response().text();
        by_thread.entry(tid).or_default().push(c);
    }
    let mut pair = by_thread.into_values().find(|v| v.len() >= 2).expect("two connections on one thread");
    let b = pair.pop().unwrap();
    let a = pair.pop().unwrap();
    (a, b)
}

#[test]
fn a_request_is_answered_while_its_threads_handler_blocks() {
    let p = Project::simple(API, &routes(), "\"thread_count\": 2,");
    let s = Server::start(&p, &[]);
    let (mut blocked, mut other) = two_on_one_thread(&s);
    blocked.send(b"GET /block HTTP/1.1\r\nHost: h\r\n\r\n");
    s.wait_stdout("blocking", 1, 10);
    // Before: /tid waited on the blocked thread until /block returned (120 s,
    // or /release below). Now it moves to the idle thread and is answered
    // while /block still blocks.
    other.send(b"GET /tid HTTP/1.1\r\nHost: h\r\n\r\nGET /tid HTTP/1.1\r\nHost: h\r\n\r\n");
    let first = other.read_response();
    assert_eq!(first.status, 200);
    assert_eq!(other.read_response().text(), first.text(), "answered by one thread, in order");
    // /block is still running: it has not been released yet.
    let mut release = s.connect();
    release.send(b"GET /release HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(release.read_response().text(), "released");
    let r = blocked.read_response();
    assert_eq!(r.text(), "unblocked");
    // Both connections stay usable.
    blocked.send(b"GET /tid HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(blocked.read_response().status, 200);
    other.send(b"GET /tid HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(other.read_response().status, 200);
}
