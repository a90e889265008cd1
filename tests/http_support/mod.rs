//! Helpers shared by the `tests/http_*.rs` suites: a Python project with the
//! handlers those tests need, a raw client that reads exact response bytes,
//! and builders for the exact responses pyrs sends (with `Date` blanked).
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[path = "../common/mod.rs"]
pub mod common;
pub use common::{Project, Server};

pub const API: &str = r#"
class Api:
    def echo(self, request):
        return request.body

    def hello(self, request):
        return "world"

    def info(self, request):
        return f"{request.method} {request.path} ?{request.query_string} {request.http_version} body={len(request.body)}"

    def big(self, request):
        return b"x" * 100000

    def get_only(self, request):
        return "got"
"#;

/// The project every HTTP test serves: no catch-all, so other paths are 404.
pub fn project(extra: &str) -> Project {
    let pyrs = format!(
        r#"{{
{extra}
"modules": [
  {{"path": "/echo", "module": "main", "class": "Api", "handler": "echo"}},
  {{"path": "/hello", "module": "main", "class": "Api", "handler": "hello"}},
  {{"path": "/info", "module": "main", "class": "Api", "handler": "info"}},
  {{"path": "/big", "module": "main", "class": "Api", "handler": "big"}},
  {{"path": "/get-only", "module": "main", "class": "Api", "handler": "get_only", "methods": ["GET"]}},
]
}}
"#
    );
    Project::new(&[("main.py", API), ("project.pyrs", &pyrs)])
}

/// Starts the test project with these CLI flags (and `extra` project keys).
pub fn start(extra: &str, args: &[&str]) -> Server {
    Server::start(&project(extra), args)
}

/// A raw TCP client that keeps every byte it receives.
pub struct Raw {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
    /// The server closed (EOF or reset).
    pub eof: bool,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = common::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        Raw { stream, buf: Vec::new(), eof: false }
    }

    /// Writes all of `bytes`; false when the server has closed.
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// Writes one byte per `write` call, pausing briefly so the server sees
    /// (most of) them as separate reads.
    pub fn send_bytewise(&mut self, bytes: &[u8]) -> bool {
        for (i, b) in bytes.iter().enumerate() {
            if self.stream.write_all(std::slice::from_ref(b)).is_err() {
                return false;
            }
            if i % 4 == 0 {
                std::thread::sleep(Duration::from_micros(300));
            }
        }
        true
    }

    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Waits up to `wait` for bytes; returns the number read by the first
    /// read that got any (0 on timeout or EOF). Sets `eof` when the server closes.
    pub fn read_for(&mut self, wait: Duration) -> usize {
        let deadline = Instant::now() + wait;
        let mut chunk = [0u8; 65536];
        while !self.eof {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.stream.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return n;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => self.eof = true,
            }
        }
        0
    }

    /// Reads until the server closes or `wait` passes.
    pub fn read_until_close(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        while !self.eof && Instant::now() < deadline {
            self.read_for(deadline.saturating_duration_since(Instant::now()));
        }
    }

    /// Reads until the server closes (panics if it does not within `secs`);
    /// returns everything received, with `Date` values blanked.
    /// `secs` is only when the test gives up: it is stretched for a loaded machine.
    pub fn read_to_close(&mut self, secs: f64) -> String {
        self.read_until_close(Duration::from_secs_f64(secs).max(common::generous(0)));
        assert!(self.eof, "server did not close within {secs} s; got {:?}", norm(&self.buf));
        norm(&std::mem::take(&mut self.buf))
    }

    /// Reads exactly one response (framed by Content-Length; `head` for a
    /// response without a body), with `Date` blanked.
    pub fn response(&mut self, head: bool) -> String {
        let deadline = Instant::now() + common::RESPONSE_WAIT;
        loop {
            if let Some(len) = response_len(&self.buf, head) {
                let r: Vec<u8> = self.buf.drain(..len).collect();
                return norm(&r);
            }
            assert!(!self.eof, "server closed before a full response; got {:?}", norm(&self.buf));
            assert!(Instant::now() < deadline, "no full response in time; got {:?}", norm(&self.buf));
            self.read_for(Duration::from_millis(100));
        }
    }

    /// Reads until one complete response is buffered or the server closes
    /// (panics after the response wait); returns what was received, `Date` blanked.
    pub fn response_or_close(&mut self) -> String {
        let deadline = Instant::now() + common::RESPONSE_WAIT;
        while response_len(&self.buf, false).is_none() && !self.eof {
            assert!(Instant::now() < deadline, "no response and no close in time; got {:?}", norm(&self.buf));
            self.read_for(Duration::from_millis(100));
        }
        norm(&self.buf)
    }

    /// True if the server closes without sending anything (within `secs`,
    /// stretched for a loaded machine).
    pub fn closes_silently(&mut self, secs: f64) -> bool {
        self.read_until_close(Duration::from_secs_f64(secs).max(common::generous(0)));
        self.eof && self.buf.is_empty()
    }

    /// True if the connection is still open after `secs` with nothing received.
    pub fn stays_open(&mut self, secs: f64) -> bool {
        self.read_until_close(Duration::from_secs_f64(secs));
        !self.eof && self.buf.is_empty()
    }
}

/// The length of the first complete response in `buf`, if there is one.
pub fn response_len(buf: &[u8], head: bool) -> Option<usize> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = String::from_utf8_lossy(&buf[..end]);
    let status: u16 = text.get(9..12)?.parse().ok()?;
    let len = text
        .split("\r\n")
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map_or(0, |v| v.parse::<usize>().expect("Content-Length"));
    let len = if head || status < 200 || status == 204 || status == 304 { 0 } else { len };
    (buf.len() >= end + len).then_some(end + len)
}

/// Response bytes as text with every `Date` and `X-Request-Id` value
/// (generated ids differ per request) replaced by `X`.
pub fn norm(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let mut s = s.into_owned();
    for field in ["\r\nDate: ", "\r\nX-Request-Id: "] {
        let mut out = String::with_capacity(s.len());
        let mut rest = &s[..];
        while let Some(i) = rest.find(field) {
            out.push_str(&rest[..i + field.len()]);
            out.push('X');
            rest = &rest[i + field.len()..];
            rest = &rest[rest.find("\r\n").unwrap_or(rest.len())..];
        }
        out.push_str(rest);
        s = out;
    }
    s
}

pub fn reason(status: u16) -> &'static str {
    pyrs::http::encode::reason(status)
}

/// The exact response pyrs sends: `headers` are the extra fields a handler
/// or the core adds before Content-Type.
pub fn response(status: u16, headers: &[&str], content_type: &str, body: &str, conn: Option<&str>) -> String {
    let mut s = format!("HTTP/1.1 {status} {}\r\nServer: pyrs\r\nDate: X\r\nX-Request-Id: X\r\n", reason(status));
    for h in headers {
        s.push_str(h);
        s.push_str("\r\n");
    }
    s.push_str(&format!("Content-Type: {content_type}\r\nContent-Length: {}\r\n", body.len()));
    if let Some(c) = conn {
        s.push_str(&format!("Connection: {c}\r\n"));
    }
    s.push_str("\r\n");
    s.push_str(body);
    s
}

/// A `str` returned by a handler, keep-alive.
pub fn text(body: &str) -> String {
    response(200, &[], "text/plain; charset=utf-8", body, None)
}

/// A `str` returned by a handler, with `Connection: close`.
pub fn text_close(body: &str) -> String {
    response(200, &[], "text/plain; charset=utf-8", body, Some("close"))
}

/// A `bytes` value returned by a handler (echo), keep-alive.
pub fn bytes(body: &str) -> String {
    response(200, &[], "application/octet-stream", body, None)
}

/// An error the protocol layer answers by itself: short text, then close.
pub fn error(status: u16, detail: &str) -> String {
    response(status, &[], "text/plain; charset=utf-8", &format!("{detail}\n"), Some("close"))
}

/// One request on a fresh connection; everything until the server closes.
/// The request should make the server close (an error or `Connection: close`).
pub fn exchange(s: &Server, raw: &[u8]) -> String {
    let mut c = Raw::connect(s.addr);
    c.send(raw);
    c.read_to_close(5.0)
}

/// Like [`exchange`], one byte per write.
pub fn exchange_bytewise(s: &Server, raw: &[u8]) -> String {
    let mut c = Raw::connect(s.addr);
    c.send_bytewise(raw);
    c.read_to_close(5.0)
}

/// The server's resident memory in KiB.
pub fn rss_kib(s: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.child.id())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) the server has used, in clock ticks.
pub fn cpu_ticks(s: &Server) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", s.child.id())).unwrap_or_default();
    let after = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the command.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// Open file descriptors of the server process.
pub fn open_fds(s: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", s.child.id())).map_or(0, |d| d.count())
}
