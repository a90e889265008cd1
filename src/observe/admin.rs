//! The admin listener (`admin_listen`): `/metrics`, `/healthz`, `/readyz`
//! and the status page at `/`, on their own threads, away from the serving
//! threads. One request per connection, answered and closed, each
//! connection on a short-lived thread of its own (at most
//! [`MAX_CONNECTIONS`] at once), so that a slow client never holds up the
//! probes behind it. Every connection is bounded in time (the head within
//! [`HEAD_DEADLINE`], else 408 if part of it came; the whole response
//! written within [`WRITE_DEADLINE`]) and in memory (its request head, its
//! response, a small send buffer).

use super::view::Source;
use crate::http::date::DateCache;
use crate::http::encode::{self, ResponseContext, ResponseWriter};
use crate::http::limits::Limits;
use crate::http::Version;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// The whole request head must arrive within this, however it trickles in.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(5);
/// The whole response must be written within this, however slowly the
/// client reads (a large /metrics to a reader that takes a byte at a time).
pub const WRITE_DEADLINE: Duration = Duration::from_secs(10);
const MAX_HEAD: usize = 16 * 1024;
/// Admin connections served at once; more are refused with 503.
pub const MAX_CONNECTIONS: usize = 16;
/// The kernel's send buffer of an admin connection: what a client that
/// does not read can make the kernel hold for it.
const SEND_BUFFER: usize = 64 * 1024;

/// Serves the admin endpoints from `source` on `listener` (bound by the
/// caller with `server::listener::bind`: observe does not import server) and
/// announces it on stdout (`Admin listening on http://ADDR`).
pub fn start(listener: Result<TcpListener, String>, source: Arc<dyn Source>) -> Result<(), String> {
    let listener = listener.map_err(|e| format!("admin listener: {e}"))?;
    listener.set_nonblocking(false).map_err(|e| format!("admin listener: {e}"))?;
    let bound = listener.local_addr().map_err(|e| format!("admin listener: {e}"))?;
    spawn(listener, source)?;
    crate::say!("Admin listening on http://{bound}");
    Ok(())
}

/// Serves the admin endpoints on `listener` for the rest of the process.
pub fn spawn(listener: TcpListener, source: Arc<dyn Source>) -> Result<(), String> {
    std::thread::Builder::new()
        .name("pyrs-admin".into())
        .spawn(move || {
            let mut date = DateCache::new();
            let active = Arc::new(AtomicUsize::new(0));
            for conn in listener.incoming() {
                match conn {
                    Ok(stream) => {
                        date.refresh();
                        dispatch(stream, &source, date.value(), &active);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        log::warn!("admin listener: accept failed: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start the admin thread: {e}"))
}

/// Serves `stream` on a thread of its own, or refuses it when
/// [`MAX_CONNECTIONS`] are being served.
fn dispatch(mut stream: TcpStream, source: &Arc<dyn Source>, date: &[u8], active: &Arc<AtomicUsize>) {
    if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
        active.fetch_sub(1, Ordering::AcqRel);
        let mut out = Vec::new();
        let ctx = ResponseContext { keep_alive: false, head_only: false, version: Version::Http11 };
        encode::text_response(&mut out, 503, &[], "Too many admin connections\n", date, ctx);
        // A new socket's send buffer has room: this never blocks.
        let _ = stream.set_nonblocking(true);
        let _ = stream.write(&out);
        return;
    }
    // Given back when the thread ends, or with the closure if it cannot start.
    let slot = Slot(active.clone());
    let source = source.clone();
    let date = date.to_vec();
    let spawned = std::thread::Builder::new().name("pyrs-admin-conn".into()).spawn(move || {
        let _slot = slot;
        serve_one(stream, &*source, &date);
    });
    if let Err(e) = spawned {
        log::warn!("admin listener: cannot start a thread for a connection: {e}");
    }
}

/// One of the [`MAX_CONNECTIONS`] in use.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Writes all of `bytes` before `deadline` (each write waits at most
/// IO_TIMEOUT); false when the client did not take them in time.
fn write_before(stream: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> bool {
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_write_timeout(Some(left.min(IO_TIMEOUT))).is_err() {
            return false;
        }
        match stream.write(bytes) {
            Ok(0) => return false,
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

fn serve_one(mut stream: TcpStream, source: &dyn Source, date: &[u8]) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER);
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let limits = Limits { max_header_bytes: MAX_HEAD, ..Limits::default() };
    let deadline = Instant::now() + HEAD_DEADLINE;
    let head = loop {
        match crate::http::head::parse(&buf, &limits) {
            Ok(Some((head, _))) => break Ok(head),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left.min(IO_TIMEOUT))).is_err() {
            // Part of a request came and the rest did not: say so (408)
            // rather than close as if nothing had been asked. A client that
            // sent nothing at all gets the close.
            if buf.is_empty() {
                return;
            }
            break Err(crate::http::HttpError::Timeout);
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) if buf.len() + n <= MAX_HEAD + 1 => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => break Err(crate::http::HttpError::HeadersTooLarge),
            // A pause in the client's sending (or a signal): the head deadline decides.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // Reset: nobody left to answer.
            Err(_) => return,
        }
    };
    let mut out = Vec::new();
    let ctx = |head_only| ResponseContext { keep_alive: false, head_only, version: Version::Http11 };
    match head {
        Err(e) => encode::text_response(&mut out, e.status(), &[], &format!("{}\n", e.detail()), date, ctx(false)),
        Ok(head) => {
            let head_only = head.is_head();
            if head.method() != "GET" && !head_only {
                encode::text_response(
                    &mut out,
                    405,
                    &[(b"Allow", b"GET, HEAD")],
                    "Method Not Allowed\n",
                    date,
                    ctx(false),
                );
            } else {
                let (status, content_type, body) = answer(head.path(), head.query(), source);
                let mut w = ResponseWriter::begin(&mut out, status, date, ctx(head_only));
                let _ = w.header(b"Cache-Control", b"no-store");
                w.finish(content_type.as_bytes(), body.as_bytes());
            }
        }
    }
    if !write_before(&mut stream, &out, Instant::now() + WRITE_DEADLINE) {
        log::debug!("admin listener: a client did not take its response within {WRITE_DEADLINE:?}; closed");
        return;
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // Read what the client may still send, so the close is not a reset.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = stream.read(&mut chunk);
}

fn answer(path: &str, query: &str, source: &dyn Source) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    match path {
        "/metrics" => (200, super::prometheus::CONTENT_TYPE, super::prometheus::render(&source.view())),
        "/healthz" => (200, TEXT, "ok\n".into()),
        "/readyz" => readiness(source.ready()),
        "/" => (
            200,
            "text/html; charset=utf-8",
            super::status_page::render(&source.view(), super::status_page::refresh_of(query)),
        ),
        _ => (404, TEXT, "Not Found\n".into()),
    }
}

/// The readiness answer (also served at `health_path` on the main listener).
pub fn readiness(ready: bool) -> (u16, &'static str, String) {
    if ready {
        (200, "text/plain; charset=utf-8", "ready\n".into())
    } else {
        (503, "text/plain; charset=utf-8", "not ready\n".into())
    }
}
