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

const STREAMS: &str = r#"
import os, sys, time
import pyrs

HERE = os.path.dirname(os.path.abspath(__file__))

def mark(text):
    print(text, flush=True)

def wait_for_file(name):
    path = os.path.join(HERE, name)
    deadline = time.monotonic() + 120
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} never appeared")
        time.sleep(0.005)

class Api:
    def __init__(self):
        self.pulled = 0

    def small(self, request):
        return "small"

    def waiting(self, request):
        yield "first\n"
        wait_for_file("go")
        yield b"second\n"

    def endless(self, request):
        try:
            while True:
                yield "x" * 1000
        finally:
            mark("finally ran")

    def failing(self, request):
        yield "a"
        raise RuntimeError("mid-stream boom")

    def words(self, request):
        def gen():
            mark("words pulled")
            yield "ab"
            yield ""
            yield bytearray(b"c")
        return gen()

    def explicit(self, request):
        return pyrs.Response(("x", "y"), status=201, headers={"X-A": "1"}, content_type="text/csv")

    def events(self, request):
        items = ["hello", {"event": "tick", "id": 7, "data": "line1\nline2"}, None, {"data": {"k": 1}},
                 {"data": b"raw\nbytes"}]
        return pyrs.EventStream(items, retry=1000)

    def big(self, request):
        chunk = b"z" * 65536
        for _ in range(16384):   # 1 GiB
            self.pulled += 1
            yield chunk

    def pulled_count(self, request):
        return str(self.pulled)

    def fails_first(self, request):
        raise RuntimeError("boom before the first item")
        yield "never"

    def fails_first_wrapped(self, request):
        def gen():
            raise RuntimeError("wrapped boom")
            yield "never"
        return pyrs.Response(gen(), status=201, headers={"X-A": "1"})

    def fails_first_events(self, request):
        def gen():
            raise RuntimeError("events boom")
            yield "never"
        return pyrs.EventStream(gen())

    def fails_first_http(self, request):
        raise pyrs.HTTPError(404, "no such model")
        yield "never"

    def empty_first(self, request):
        yield ""
        raise RuntimeError("after an empty first item")
"#;

fn stream_server(extra: &str) -> (Project, Server) {
    let routes = [
        ("/small", "small"),
        ("/waiting", "waiting"),
        ("/endless", "endless"),
        ("/failing", "failing"),
        ("/words", "words"),
        ("/explicit", "explicit"),
        ("/events", "events"),
        ("/big", "big"),
        ("/pulled", "pulled_count"),
        ("/fails_first", "fails_first"),
        ("/fails_first_wrapped", "fails_first_wrapped"),
        ("/fails_first_events", "fails_first_events"),
        ("/empty_first", "empty_first"),
        ("/fails_first_http", "fails_first_http"),
    ];
    let p = Project::simple(STREAMS, &routes, extra);
    let s = Server::start(&p, &[]);
    (p, s)
}

/// A client that reads a response head and then its chunks one at a time.
struct ChunkReader {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl ChunkReader {
    fn open(s: &Server, request: &str) -> ChunkReader {
        let mut stream = connect(s.addr).unwrap();
        stream.set_read_timeout(Some(RESPONSE_WAIT)).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        ChunkReader { stream, buf: Vec::new() }
    }

    /// Reads more; false at EOF.
    fn fill(&mut self) -> bool {
        let mut b = [0u8; 65536];
        match read_retry(&mut self.stream, &mut b) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&b[..n]);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => false,
            Err(e) => panic!("read failed: {e}; have {:?}", String::from_utf8_lossy(&self.buf)),
        }
    }

    fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8(self.buf[..i].to_vec()).unwrap();
                self.buf.drain(..i + 2);
                return Some(line);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// The status line and headers (lower-cased names).
    fn head(&mut self) -> (String, Vec<(String, String)>) {
        let status = self.line().expect("a status line");
        let mut headers = Vec::new();
        while let Some(l) = self.line() {
            if l.is_empty() {
                break;
            }
            let (n, v) = l.split_once(": ").unwrap();
            headers.push((n.to_ascii_lowercase(), v.to_string()));
        }
        (status, headers)
    }

    /// The next chunk's data; None for the terminating chunk; panics at EOF.
    fn chunk(&mut self) -> Option<Vec<u8>> {
        let size = self.line().expect("EOF before a chunk");
        let n = usize::from_str_radix(&size, 16).unwrap_or_else(|_| panic!("bad chunk size {size:?}"));
        while self.buf.len() < n + 2 {
            assert!(self.fill(), "EOF inside a chunk");
        }
        let data = self.buf[..n].to_vec();
        assert_eq!(&self.buf[n..n + 2], b"\r\n");
        self.buf.drain(..n + 2);
        if n == 0 {
            None
        } else {
            Some(data)
        }
    }

    /// The whole chunked body (after the head).
    fn body(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        while let Some(c) = self.chunk() {
            all.extend_from_slice(&c);
        }
        all
    }

    fn rest(&mut self) -> Vec<u8> {
        while self.fill() {}
        std::mem::take(&mut self.buf)
    }
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

#[test]
fn the_first_chunk_arrives_before_the_generator_finishes() {
    let (p, s) = stream_server("");
    let mut c = ChunkReader::open(&s, "GET /waiting HTTP/1.1\r\nHost: h\r\n\r\n");
    let (status, h) = c.head();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(header(&h, "transfer-encoding"), Some("chunked"));
    assert_eq!(header(&h, "content-length"), None);
    assert_eq!(header(&h, "content-type"), Some("text/plain; charset=utf-8"));
    // The generator is now waiting for the file: the first item is already here.
    assert_eq!(c.chunk().unwrap(), b"first\n");
    std::fs::write(p.dir.join("go"), "").unwrap();
    assert_eq!(c.chunk().unwrap(), b"second\n");
    assert_eq!(c.chunk(), None);
    // Keep-alive: the connection serves the next request.
    c.stream.write_all(b"GET /small HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let (status, h) = c.head();
    assert_eq!((status.as_str(), header(&h, "content-length")), ("HTTP/1.1 200 OK", Some("5")));
}

#[test]
fn a_client_that_disconnects_runs_the_generators_finally() {
    let (_p, s) = stream_server("");
    let mut c = ChunkReader::open(&s, "GET /endless HTTP/1.1\r\nHost: h\r\n\r\n");
    c.head();
    assert_eq!(c.chunk().unwrap().len(), 1000);
    drop(c);
    s.wait_stdout("finally ran", 1, 30);
    assert_eq!(s.get("/small").text(), "small");
}

#[test]
fn an_exception_mid_stream_is_logged_and_cuts_the_response() {
    let (_p, s) = stream_server("");
    let mut c = ChunkReader::open(&s, "GET /failing HTTP/1.1\r\nHost: h\r\n\r\n");
    let (status, _) = c.head();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(c.chunk().unwrap(), b"a");
    // No terminating chunk: the connection ends instead.
    assert_eq!(c.rest(), b"");
    s.wait_stderr("mid-stream boom", 30);
    s.wait_stderr("response cut", 30);
}

#[test]
fn http_1_0_gets_a_close_delimited_body_and_head_gets_headers_only() {
    let (_p, s) = stream_server("");
    let mut c = ChunkReader::open(&s, "GET /words HTTP/1.0\r\n\r\n");
    let (status, h) = c.head();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(header(&h, "transfer-encoding"), None);
    assert_eq!(header(&h, "content-length"), None);
    assert_eq!(header(&h, "connection"), Some("close"));
    assert_eq!(c.rest(), b"abc");

    let mut c = ChunkReader::open(&s, "HEAD /words HTTP/1.1\r\nHost: h\r\n\r\n");
    let (status, h) = c.head();
    assert_eq!((status.as_str(), header(&h, "transfer-encoding")), ("HTTP/1.1 200 OK", Some("chunked")));
    c.stream.write_all(b"GET /small HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let (status, h) = c.head();
    assert_eq!((status.as_str(), header(&h, "content-length")), ("HTTP/1.1 200 OK", Some("5")));
    let want_small = b"small".to_vec();
    while c.buf.len() < 5 {
        assert!(c.fill());
    }
    assert_eq!(c.buf, want_small, "HEAD sent no body before the next response");
    // The HEAD request never pulled the generator; the 1.0 request did once.
    s.wait_stdout("words pulled", 1, 30);
    assert_eq!(s.stdout().matches("words pulled").count(), 1);
}

#[test]
fn response_with_an_iterable_and_event_streams() {
    let (_p, s) = stream_server("");
    let mut c = ChunkReader::open(&s, "GET /explicit HTTP/1.1\r\nHost: h\r\n\r\n");
    let (status, h) = c.head();
    assert_eq!(status, "HTTP/1.1 201 Created");
    assert_eq!(header(&h, "x-a"), Some("1"));
    assert_eq!(header(&h, "content-type"), Some("text/csv"));
    assert_eq!(c.body(), b"xy");

    let mut c = ChunkReader::open(&s, "GET /events HTTP/1.1\r\nHost: h\r\n\r\n");
    let (_, h) = c.head();
    assert_eq!(header(&h, "content-type"), Some("text/event-stream"));
    assert_eq!(header(&h, "cache-control"), Some("no-cache"));
    assert_eq!(header(&h, "transfer-encoding"), Some("chunked"));
    let body = String::from_utf8(c.body()).unwrap();
    assert_eq!(
        body,
        "retry: 1000\n\ndata: hello\n\nevent: tick\nid: 7\ndata: line1\ndata: line2\n\n:\n\ndata: {\"k\":1}\n\n\
         data: raw\ndata: bytes\n\n",
        "bytes as an event's data are text, as a bytes item is"
    );
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_slow_reader_costs_bounded_memory_and_the_thread_serves_others() {
    let (_p, s) = stream_server("\"thread_count\": 1,");
    assert_eq!(s.get("/small").text(), "small");
    let before = rss_kb(s.child.id());
    let mut c = ChunkReader::open(&s, "GET /big HTTP/1.1\r\nHost: h\r\n\r\n");
    c.head();
    // The client reads nothing more: pulls stop once the socket buffers and
    // max_buffered_output are full. Wait until the count stays put.
    let mut last = u64::MAX;
    let mut same = 0;
    wait_until(60, "the generator to stop being pulled", || {
        // The same (single) thread answers while the stream waits.
        let n: u64 = s.get("/pulled").text().parse().unwrap();
        same = if n == last { same + 1 } else { 0 };
        last = n;
        std::thread::sleep(Duration::from_millis(50));
        same >= 20
    });
    let pulled_mb = last * 64 / 1024;
    eprintln!("pulled {last} items of 64 KiB for a client that reads nothing");
    assert!(pulled_mb < 48, "{pulled_mb} MiB pulled for a client that reads nothing");
    let grown_mb = rss_kb(s.child.id()).saturating_sub(before) / 1024;
    assert!(grown_mb < 20, "RSS grew {grown_mb} MiB");
    // Reading resumes the stream.
    for _ in 0..64 {
        assert_eq!(c.chunk().unwrap().len(), 65536);
    }
}

#[test]
fn a_stream_then_a_pipelined_request_keep_their_order() {
    let (_p, s) = stream_server("");
    let mut c = ChunkReader::open(
        &s,
        "GET /words HTTP/1.1\r\nHost: h\r\n\r\nGET /explicit HTTP/1.1\r\nHost: h\r\n\r\nGET /small HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    c.head();
    assert_eq!(c.body(), b"abc");
    let (status, _) = c.head();
    assert_eq!(status, "HTTP/1.1 201 Created");
    assert_eq!(c.body(), b"xy");
    let (status, _) = c.head();
    assert_eq!(status, "HTTP/1.1 200 OK");
}

#[test]
fn a_generator_stuck_between_items_is_seen_by_the_worker_timeout() {
    let src = r#"
import time

class Api:
    def stuck(self, request):
        yield "first"
        time.sleep(600)
        yield "never"

    def small(self, request):
        return "small"
"#;
    let p = Project::simple(src, &[("/stuck", "stuck"), ("/small", "small")], "\"workers\": 1, \"timeout\": 1,");
    let s = Server::start(&p, &[]);
    let mut c = ChunkReader::open(&s, "GET /stuck HTTP/1.1\r\nHost: h\r\n\r\n");
    c.head();
    assert_eq!(c.chunk().unwrap(), b"first");
    s.wait_stderr("handler for route /stuck has run for", 60);
    // The replacement worker serves.
    wait_until(60, "a replacement worker", || {
        connect(s.addr).is_ok_and(|mut t| {
            t.set_read_timeout(Some(RESPONSE_WAIT)).unwrap();
            t.write_all(b"GET /small HTTP/1.1\r\nHost: h\r\n\r\n").is_ok() && {
                let mut b = [0u8; 12];
                read_retry(&mut t, &mut b).is_ok_and(|n| n == 12 && &b[9..12] == b"200")
            }
        })
    });
}

const ERROR_500: &str = "HTTP/1.1 500 Internal Server Error\r\nServer: pyrs\r\nDate: X\r\nX-Request-Id: R\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 22\r\n\r\nInternal Server Error\n";
const SMALL_CLOSE: &str = "HTTP/1.1 200 OK\r\nServer: pyrs\r\nDate: X\r\nX-Request-Id: R\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\nConnection: close\r\n\r\nsmall";

#[test]
fn a_generator_that_raises_before_its_first_item_answers_500() {
    let (_p, s) = stream_server("");
    for (path, error) in [
        ("/fails_first", "RuntimeError: boom before the first item"),
        ("/fails_first_wrapped", "RuntimeError: wrapped boom"),
        ("/fails_first_events", "RuntimeError: events boom"),
    ] {
        // A real 500 (not a 200 head and a cut body), and the connection goes on:
        // the pipelined request behind it is answered.
        let raw = format!(
            "GET {path} HTTP/1.1\r\nHost: h\r\n\r\nGET /small HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        );
        let (got, rids) = exchange_masked(&s, &raw);
        assert_eq!(got, format!("{ERROR_500}{SMALL_CLOSE}"), "{path}");
        // Logged as the handler's error, with its traceback and request id.
        let handler = path.trim_start_matches('/');
        let line = format!("route {path} (main.Api.{handler}) raised rid={}:", rids[0]);
        s.wait_stderr(&line, 30);
        s.wait_stderr(error, 30);
    }
    // HTTPError before the first item: its status and message, as from a handler (not logged).
    let raw =
        "GET /fails_first_http HTTP/1.1\r\nHost: h\r\n\r\nGET /small HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    let (got, _) = exchange_masked(&s, raw);
    let not_found = "HTTP/1.1 404 Not Found\r\nServer: pyrs\r\nDate: X\r\nX-Request-Id: R\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 14\r\n\r\nno such model\n";
    assert_eq!(got, format!("{not_found}{SMALL_CLOSE}"));
    // HEAD: the generator is never advanced, the head is the 200 one.
    let (got, _) = exchange_masked(&s, "HEAD /fails_first HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    assert!(
        got.starts_with("HTTP/1.1 200 OK\r\n")
            && got.ends_with("Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"),
        "{got}"
    );
    // HTTP/1.0 (close-delimited): a 500 that closes the connection.
    let (got, _) = exchange_masked(&s, "GET /fails_first HTTP/1.0\r\n\r\n");
    assert_eq!(got, ERROR_500.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n"));
    // Once anything was yielded, even an empty item, the head has gone: a failure cuts the response.
    let mut c = ChunkReader::open(&s, "GET /empty_first HTTP/1.1\r\nHost: h\r\n\r\n");
    let (status, _) = c.head();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(c.rest(), b"", "no terminating chunk");
    s.wait_stderr("after an empty first item", 30);
}
