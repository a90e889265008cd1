//! Responses that are not one buffer: large `bytes` sent from the Python
//! object, streamed bodies (generators, `pyrs.Response(iterable)`,
//! `pyrs.EventStream`), through the real binary.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const API: &str = r#"
import pyrs

BIG = bytes(range(256)) * 4096 * 3   # 3 MiB

class Api:
    def big(self, request):
        return BIG

    def small(self, request):
        return "small"
"#;

#[test]
fn large_bytes_responses_are_whole_and_keep_pipelined_order() {
    let p = Project::simple(API, &[("/big", "big"), ("/small", "small")], "");
    let s = Server::start(&p, &[]);
    let mut c = s.connect();
    c.send(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\nGET /small HTTP/1.1\r\nHost: h\r\n\r\nGET /big HTTP/1.1\r\nHost: h\r\n\r\nGET /small HTTP/1.1\r\nHost: h\r\n\r\n");
    let want: Vec<u8> = (0..=255u8).collect::<Vec<u8>>().repeat(4096 * 3);
    for _ in 0..2 {
        let r = c.read_response();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some("3145728"));
        assert!(r.body == want, "big body differs");
        let r = c.read_response();
        assert_eq!(r.text(), "small");
    }
    c.head_request = true;
    c.send(b"HEAD /big HTTP/1.1\r\nHost: h\r\n\r\nGET /small HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.read_response();
    assert_eq!((r.status, r.header("content-length"), r.body.len()), (200, Some("3145728"), 0));
    c.head_request = false;
    assert_eq!(c.read_response().text(), "small");
}

#[test]
fn a_reader_that_stops_midway_does_not_hold_up_others() {
    let p = Project::simple(API, &[("/big", "big"), ("/small", "small")], "\"thread_count\": 1,");
    let s = Server::start(&p, &[]);
    // Ask for a big body and never read it.
    let mut stuck = TcpStream::connect(s.addr).unwrap();
    stuck.write_all(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let mut first = [0u8; 16];
    stuck.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stuck.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200 OK\r");
    for _ in 0..20 {
        assert_eq!(s.get("/small").text(), "small");
    }
}
