//! Response encoding straight into a connection's output buffer.
//!
//! Every response carries `Server`, `Date` (cached), and `Content-Length`
//! (except 1xx, 204 and 304, which have no body). Header fields a handler
//! supplies are validated: a name that is not a token or a value with CR, LF,
//! NUL or another control character is refused, and the caller answers 500
//! instead. Framing headers (`Content-Length`, `Transfer-Encoding`, `Date`)
//! set by a handler are ignored: pyrs owns framing. A handler's
//! `Connection: close` is honoured (the connection closes after the response);
//! other `Connection` values are ignored.

use super::Version;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

/// What the encoder needs to know about the request being answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseContext {
    /// The connection stays open after this response.
    pub keep_alive: bool,
    /// HEAD: send the headers GET would send, no body.
    pub head_only: bool,
    pub version: Version,
}

/// A header field a handler supplied that may not be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidHeader {
    pub name: String,
}

impl std::fmt::Display for InvalidHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid response header {:?} (names must be tokens; values must not contain CR, LF, NUL or other control characters, nor characters outside Latin-1: percent-encode them, RFC 8187)", self.name)
    }
}

/// A header value given as text, as the bytes sent: Latin-1, one byte per
/// character, as request header values are decoded (so a value sent back
/// is the bytes that came in). None when a character is outside Latin-1.
pub fn latin1(value: &str) -> Option<std::borrow::Cow<'_, [u8]>> {
    if value.is_ascii() {
        return Some(std::borrow::Cow::Borrowed(value.as_bytes()));
    }
    value.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect::<Option<Vec<u8>>>().map(std::borrow::Cow::Owned)
}

/// [`latin1`], refused as an invalid `name` header when it cannot be.
pub fn latin1_header<'v>(name: &str, value: &'v str) -> Result<std::borrow::Cow<'v, [u8]>, InvalidHeader> {
    latin1(value).ok_or_else(|| InvalidHeader { name: name.to_string() })
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Writes one response. Created by [`ResponseWriter::begin`], which writes the
/// status line and fixed headers; [`ResponseWriter::finish`] completes it.
pub struct ResponseWriter<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
    status: u16,
    ctx: ResponseContext,
    has_content_type: bool,
    /// An `X-Request-Id` was written (pyrs's own): a handler's is dropped, not repeated.
    has_request_id: bool,
    /// Set when the response goes out with `Connection: close`.
    closes: Option<&'a Cell<bool>>,
    /// Receives the status and body size once the head is finished.
    sent: Option<&'a Cell<Sent>>,
    /// Where pyrs's `Server` line is, until a handler's replaces it.
    server_at: Option<usize>,
}

const SERVER_LINE: &[u8] = b"Server: pyrs\r\n";

/// Whether responses carry `Server: pyrs` (the `server_header` setting).
static SERVER_HEADER: AtomicBool = AtomicBool::new(true);

/// Sets the `server_header` setting for this process (once, at start-up).
pub fn set_server_header(on: bool) {
    SERVER_HEADER.store(on, Ordering::Relaxed);
}

/// What a response said, for the access log and the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    pub status: u16,
    /// Body bytes that follow the head; None when not known in advance (a stream).
    pub body_bytes: Option<u64>,
}

/// A `tchar` of RFC 9110 (the bytes of a method or a field name).
pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `value` may be sent as a header field value: no CR, LF, NUL or
/// other control characters (tab allowed).
pub fn is_field_value(value: &[u8]) -> bool {
    value.iter().all(|&b| b >= b' ' && b != 0x7f || b == b'\t')
}

fn push_status(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&[
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
        b' ',
    ]);
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

impl<'a> ResponseWriter<'a> {
    /// Starts a response; `status` must be 100..=599 (callers validate).
    pub fn begin(out: &'a mut Vec<u8>, status: u16, date: &[u8], ctx: ResponseContext) -> Self {
        let start = out.len();
        push_status(out, status);
        let server_at = SERVER_HEADER.load(Ordering::Relaxed).then(|| {
            out.extend_from_slice(SERVER_LINE);
            out.len() - SERVER_LINE.len()
        });
        out.extend_from_slice(b"Date: ");
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n");
        ResponseWriter {
            out,
            start,
            status,
            ctx,
            has_content_type: false,
            has_request_id: false,
            closes: None,
            sent: None,
            server_at,
        }
    }

    /// Records in `sent` the status and body size of this response.
    pub fn track_sent(mut self, sent: &'a Cell<Sent>) -> Self {
        self.sent = Some(sent);
        self
    }

    /// Records in `flag` whether this response closes the connection.
    pub fn track_close(mut self, flag: &'a Cell<bool>) -> Self {
        self.closes = Some(flag);
        self
    }

    /// Adds a header field, or refuses it (the response is then unusable:
    /// call [`ResponseWriter::abort`]).
    pub fn header(&mut self, name: &[u8], value: &[u8]) -> Result<(), InvalidHeader> {
        let valid_name = !name.is_empty() && name.iter().all(|&b| is_token_byte(b));
        if !valid_name || !is_field_value(value) {
            return Err(InvalidHeader { name: String::from_utf8_lossy(name).into_owned() });
        }
        if name.eq_ignore_ascii_case(b"connection") {
            // A handler may ask to close the connection after this response.
            if value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close")) {
                self.ctx.keep_alive = false;
            }
            return Ok(());
        }
        let ignored: [&[u8]; 3] = [b"content-length", b"transfer-encoding", b"date"];
        if ignored.iter().any(|i| name.eq_ignore_ascii_case(i)) {
            return Ok(());
        }
        if name.eq_ignore_ascii_case(b"content-type") {
            self.has_content_type = true;
        }
        if name.eq_ignore_ascii_case(b"x-request-id") {
            if self.has_request_id {
                return Ok(());
            }
            self.has_request_id = true;
        }
        if name.eq_ignore_ascii_case(b"server") {
            // The handler's Server header replaces pyrs's.
            if let Some(at) = self.server_at.take() {
                self.out.drain(at..at + SERVER_LINE.len());
            }
        }
        self.out.extend_from_slice(name);
        self.out.extend_from_slice(b": ");
        self.out.extend_from_slice(value);
        self.out.extend_from_slice(b"\r\n");
        Ok(())
    }

    /// Removes everything this writer wrote.
    pub fn abort(self) {
        self.out.truncate(self.start);
    }

    /// Writes `Content-Type` (unless a header set it), `Content-Length`,
    /// `Connection` when needed, and the body.
    pub fn finish(self, content_type: &[u8], body: &[u8]) {
        let out = self.finish_framing(content_type, Some(body.len() as u64));
        if let Some(out) = out {
            out.extend_from_slice(body);
        }
    }

    /// Ends the head of a response whose body is queued separately (see
    /// `http::output`), of `len` bytes or, with None, of unknown length:
    /// chunked to HTTP/1.1 clients, delimited by closing the connection to
    /// HTTP/1.0 ones. Says whether and how the body is to be sent.
    pub fn finish_head(mut self, content_type: &[u8], len: Option<u64>) -> SendBody {
        if len.is_none() && self.ctx.version == Version::Http10 {
            self.ctx.keep_alive = false;
        }
        let chunked = len.is_none() && self.ctx.version == Version::Http11;
        match self.finish_framing(content_type, len) {
            None => SendBody::No,
            Some(_) if chunked => SendBody::Chunked,
            Some(_) => SendBody::Raw,
        }
    }

    /// Writes the framing headers and the blank line; returns the buffer
    /// when a body is to follow.
    fn finish_framing(self, content_type: &[u8], len: Option<u64>) -> Option<&'a mut Vec<u8>> {
        let no_body = self.status < 200 || self.status == 204 || self.status == 304;
        if let Some(sent) = self.sent {
            let body_bytes = if no_body || self.ctx.head_only { Some(0) } else { len };
            sent.set(Sent { status: self.status, body_bytes });
        }
        if !no_body && !self.has_content_type && !content_type.is_empty() {
            self.out.extend_from_slice(b"Content-Type: ");
            self.out.extend_from_slice(content_type);
            self.out.extend_from_slice(b"\r\n");
        }
        if !no_body {
            match len {
                Some(n) => {
                    self.out.extend_from_slice(b"Content-Length: ");
                    push_decimal(self.out, n);
                    self.out.extend_from_slice(b"\r\n");
                }
                None if self.ctx.version == Version::Http11 => {
                    self.out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
                }
                None => {}
            }
        }
        if !self.ctx.keep_alive {
            self.out.extend_from_slice(b"Connection: close\r\n");
            if let Some(flag) = self.closes {
                flag.set(true);
            }
        } else if self.ctx.version == Version::Http10 {
            self.out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
        (!no_body && !self.ctx.head_only).then_some(self.out)
    }
}

/// Whether and how a separately queued body follows its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendBody {
    /// No body: HEAD, or a status without one (1xx, 204, 304).
    No,
    /// As it is: `Content-Length` framed, or delimited by closing.
    Raw,
    /// As chunks, then the terminating chunk.
    Chunked,
}

/// Appends `n` in decimal, without allocating.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// A complete short `text/plain` response (errors, 404, 405 and the like).
pub fn text_response(
    out: &mut Vec<u8>,
    status: u16,
    extra: &[(&[u8], &[u8])],
    body: &str,
    date: &[u8],
    ctx: ResponseContext,
) {
    let mut w = ResponseWriter::begin(out, status, date, ctx);
    for (n, v) in extra {
        if w.header(n, v).is_err() {
            // Extra headers come from pyrs itself and are always valid.
            debug_assert!(false, "invalid internal header");
        }
    }
    w.finish(b"text/plain; charset=utf-8", body.as_bytes());
}

/// The interim response to `Expect: 100-continue`.
pub fn continue_response(out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";
    const KA: ResponseContext = ResponseContext { keep_alive: true, head_only: false, version: Version::Http11 };

    #[test]
    fn header_text_is_sent_as_latin_1() {
        assert_eq!(latin1("plain").as_deref(), Some(&b"plain"[..]));
        assert!(matches!(latin1("plain"), Some(std::borrow::Cow::Borrowed(_))), "ASCII is not copied");
        assert_eq!(latin1("caf\u{e9} \u{ff}").as_deref(), Some(&b"caf\xe9 \xff"[..]));
        assert_eq!(latin1("5 \u{20ac}"), None);
        assert_eq!(latin1_header("X-Price", "\u{100}").unwrap_err().name, "X-Price");
    }

    #[test]
    fn a_handler_server_header_replaces_pyrs_s() {
        let mut out = b"earlier".to_vec();
        let mut w = ResponseWriter::begin(&mut out, 200, DATE, KA);
        w.header(b"X-A", b"1").unwrap();
        w.header(b"server", b"mine/1.0").unwrap();
        w.finish(b"text/plain", b"");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "earlierHTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nX-A: 1\r\nserver: mine/1.0\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn basic_response() {
        let mut out = Vec::new();
        let mut w = ResponseWriter::begin(&mut out, 200, DATE, KA);
        w.header(b"X-A", b"1").unwrap();
        w.finish(b"text/plain", b"hello");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nServer: pyrs\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nX-A: 1\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
        );
    }

    #[test]
    fn head_close_and_no_body_statuses() {
        let mut out = Vec::new();
        let ctx = ResponseContext { keep_alive: false, head_only: true, version: Version::Http11 };
        ResponseWriter::begin(&mut out, 200, DATE, ctx).finish(b"text/plain", b"hello");
        let s = String::from_utf8(out).unwrap();
        assert!(s.ends_with("Content-Length: 5\r\nConnection: close\r\n\r\n"), "{s}");
        let mut out = Vec::new();
        ResponseWriter::begin(&mut out, 204, DATE, KA).finish(b"text/plain", b"x");
        let s = String::from_utf8(out).unwrap();
        assert!(!s.contains("Content-Length") && s.ends_with("\r\n\r\n"), "{s}");
    }

    #[test]
    fn rejects_crlf_and_nul_and_bad_names() {
        for (n, v) in [
            (&b"X"[..], &b"a\r\nEvil: 1"[..]),
            (b"X", b"a\nb"),
            (b"X", b"a\0"),
            (b"X Y", b"1"),
            (b"", b"1"),
            (b"X:", b"1"),
        ] {
            let mut out = b"prev".to_vec();
            let mut w = ResponseWriter::begin(&mut out, 200, DATE, KA);
            assert!(w.header(n, v).is_err());
            w.abort();
            assert_eq!(out, b"prev");
        }
    }

    #[test]
    fn a_handler_connection_close_is_honoured_and_tracked() {
        let flag = Cell::new(false);
        let mut out = Vec::new();
        let mut w = ResponseWriter::begin(&mut out, 200, DATE, KA).track_close(&flag);
        w.header(b"Connection", b"keep-alive, Close").unwrap();
        w.finish(b"text/plain", b"x");
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("\r\nConnection: close\r\n") && !s.contains("Close"), "{s}");
        assert!(flag.get());
        let mut out = Vec::new();
        let mut w = ResponseWriter::begin(&mut out, 200, DATE, KA).track_close(&flag);
        flag.set(false);
        w.header(b"Connection", b"upgrade").unwrap();
        w.finish(b"text/plain", b"x");
        assert!(!String::from_utf8(out).unwrap().contains("Connection") && !flag.get());
    }

    #[test]
    fn unknown_length_is_chunked_to_1_1_and_close_delimited_to_1_0() {
        let mut out = Vec::new();
        assert_eq!(ResponseWriter::begin(&mut out, 200, DATE, KA).finish_head(b"text/plain", None), SendBody::Chunked);
        let s = String::from_utf8(out).unwrap();
        assert!(s.ends_with("Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"), "{s}");
        let mut out = Vec::new();
        let flag = Cell::new(false);
        let ctx = ResponseContext { version: Version::Http10, ..KA };
        let w = ResponseWriter::begin(&mut out, 200, DATE, ctx).track_close(&flag);
        assert_eq!(w.finish_head(b"text/plain", None), SendBody::Raw);
        let s = String::from_utf8(out).unwrap();
        assert!(s.ends_with("text/plain\r\nConnection: close\r\n\r\n") && flag.get(), "{s}");
        let mut out = Vec::new();
        let head = ResponseContext { head_only: true, ..KA };
        assert_eq!(ResponseWriter::begin(&mut out, 200, DATE, head).finish_head(b"a/b", Some(7)), SendBody::No);
        assert!(String::from_utf8(out).unwrap().ends_with("Content-Length: 7\r\n\r\n"));
        let mut out = Vec::new();
        assert_eq!(ResponseWriter::begin(&mut out, 304, DATE, KA).finish_head(b"a/b", None), SendBody::No);
        assert!(!String::from_utf8(out).unwrap().contains("chunked"));
    }

    #[test]
    fn one_request_id_header() {
        let mut out = Vec::new();
        let mut w = ResponseWriter::begin(&mut out, 200, DATE, KA);
        w.header(b"X-Request-Id", b"pyrs-id").unwrap();
        w.header(b"x-request-id", b"handler-id").unwrap();
        w.finish(b"text/plain", b"");
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("X-Request-Id: pyrs-id\r\n") && !s.contains("handler-id"), "{s}");
    }

    #[test]
    fn framing_headers_from_handlers_are_ignored() {
        let mut out = Vec::new();
        let mut w = ResponseWriter::begin(&mut out, 200, DATE, KA);
        w.header(b"Content-Length", b"999").unwrap();
        w.header(b"Content-Type", b"text/html").unwrap();
        w.finish(b"text/plain", b"ab");
        let s = String::from_utf8(out).unwrap();
        assert!(!s.contains("999") && s.contains("Content-Type: text/html\r\n") && !s.contains("text/plain"), "{s}");
    }
}
