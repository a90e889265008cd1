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

    def stream(self, request):
        def items():
            yield "item1\n"
            print("stream blocking", flush=True)
            # Releases the GIL between two items; only /release ends it.
            self.release.wait(120)
            yield "item2\n"
            yield "item3\n"
        return items()
"#;

fn routes() -> Vec<(&'static str, &'static str)> {
    vec![("/tid", "tid"), ("/block", "block"), ("/release", "unblock"), ("/stream", "stream")]
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

/// Two pipelined requests on `other` are answered, in order, by one thread
/// (while the other connection of its thread is held up), then /release
/// ends the wait.
fn answered_meanwhile_then_release(s: &Server, other: &mut Client) {
    other.send(b"GET /tid HTTP/1.1\r\nHost: h\r\n\r\nGET /tid HTTP/1.1\r\nHost: h\r\n\r\n");
    let first = other.read_response();
    assert_eq!(first.status, 200);
    assert_eq!(other.read_response().text(), first.text(), "answered by one thread, in order");
    let mut release = s.connect();
    release.send(b"GET /release HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(release.read_response().text(), "released");
}

/// Both connections still answer.
fn both_usable(a: &mut Client, b: &mut Client) {
    for c in [a, b] {
        c.send(b"GET /tid HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(c.read_response().status, 200);
    }
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
    // /block is still running: it has not been released yet.
    answered_meanwhile_then_release(&s, &mut other);
    let r = blocked.read_response();
    assert_eq!(r.text(), "unblocked");
    both_usable(&mut blocked, &mut other);
}

#[test]
fn a_request_is_answered_while_its_threads_generator_blocks_between_items() {
    let p = Project::simple(API, &routes(), "\"thread_count\": 2,");
    let s = Server::start(&p, &[]);
    let (mut streaming, mut other) = two_on_one_thread(&s);
    streaming.send(b"GET /stream HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("item1") {
        let n = read_retry(&mut streaming.stream, &mut buf).unwrap();
        assert!(n > 0, "closed before the first item");
        got.extend_from_slice(&buf[..n]);
    }
    s.wait_stdout("stream blocking", 1, 30);
    // The generator now blocks its thread between item 1 and item 2 (until
    // /release). The other connection of that thread moves to the idle
    // thread and is answered while the stream is still mid-way.
    answered_meanwhile_then_release(&s, &mut other);
    while !String::from_utf8_lossy(&got).ends_with("\r\n0\r\n\r\n") {
        let n = read_retry(&mut streaming.stream, &mut buf).unwrap();
        assert!(n > 0, "closed before the end of the stream: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.ends_with("\r\n\r\n6\r\nitem1\n\r\n6\r\nitem2\n\r\n6\r\nitem3\n\r\n0\r\n\r\n"), "{text}");
    both_usable(&mut streaming, &mut other);
}
