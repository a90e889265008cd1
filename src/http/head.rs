//! Request-head parsing: request line, header fields, and the framing
//! decisions of RFC 9112 (how long the body is, whether the connection stays
//! open, whether the client waits for `100 Continue`).
//!
//! httparse does the tokenising; this module enforces the limits and the
//! rules that keep pyrs and a proxy in front of it agreeing on where each
//! request ends. A bare LF is accepted as a line terminator in the head
//! (RFC 9112 section 2.2 allows it); a bare CR anywhere is rejected.

use super::HttpError;
use super::Limits;
use std::mem::MaybeUninit;

/// Upper bound for `max_headers`; the parser's scratch array lives on the stack.
pub const MAX_HEADERS_CAP: usize = 256;

/// Stands for the path "/" of an absolute-form target with no path.
const ROOT: Span = Span { start: u32::MAX, end: u32::MAX };

/// A byte range into the request head's buffer (`RequestHead::buf`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    fn of(buf: &[u8], part: &[u8]) -> Span {
        let start = part.as_ptr() as usize - buf.as_ptr() as usize;
        Span { start: start as u32, end: (start + part.len()) as u32 }
    }
    fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start as usize..self.end as usize).unwrap_or(&[])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// How the body that follows the head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (no Content-Length, no Transfer-Encoding, or Content-Length: 0).
    Empty,
    Length(u64),
    Chunked,
}

/// A parsed request head. Owns a copy of the head bytes; the accessors return
/// slices of it.
#[derive(Debug, Clone)]
pub struct RequestHead {
    buf: Vec<u8>,
    method: Span,
    target: Span,
    path: Span,
    query: Option<Span>,
    headers: Vec<(Span, Span)>,
    pub version: Version,
    pub framing: Framing,
    /// False when the client asked to close (or HTTP/1.0 without keep-alive).
    pub keep_alive: bool,
    pub expect_continue: bool,
}

impl RequestHead {
    pub fn method(&self) -> &str {
        std::str::from_utf8(self.method.get(&self.buf)).unwrap_or("")
    }
    /// The request target as sent (origin-form, absolute-form or `*`).
    pub fn target(&self) -> &str {
        std::str::from_utf8(self.target.get(&self.buf)).unwrap_or("")
    }
    /// The path, without the query string (for absolute-form, without scheme and authority).
    pub fn path(&self) -> &str {
        if self.path == ROOT {
            return "/";
        }
        std::str::from_utf8(self.path.get(&self.buf)).unwrap_or("")
    }
    /// The query string without the `?`, empty when absent.
    pub fn query(&self) -> &str {
        self.query.map(|q| std::str::from_utf8(q.get(&self.buf)).unwrap_or("")).unwrap_or("")
    }
    pub fn header_count(&self) -> usize {
        self.headers.len()
    }
    /// Header fields in the order received: (name, value) as raw bytes.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.headers.iter().map(|(n, v)| (n.get(&self.buf), v.get(&self.buf)))
    }
    /// The first header field with this name (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers().find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| v)
    }
    pub fn is_head(&self) -> bool {
        self.method() == "HEAD"
    }
}

/// Parses a request head at the start of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, `Ok(Some((head, len)))` with
/// the number of bytes the head used, or the error to answer with.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<(RequestHead, usize)>, HttpError> {
    // Empty lines before the request line are ignored (RFC 9112 section 2.2).
    let skip = blank_prefix(buf);
    let line_end = buf[skip..].iter().position(|&b| b == b'\n');
    // The request line's length without its line ending (so far, if incomplete).
    let line_len = match line_end {
        Some(n) => n - usize::from(n > 0 && buf[skip + n - 1] == b'\r'),
        None => (buf.len() - skip) - usize::from(buf.last() == Some(&b'\r')),
    };
    if line_len > limits.max_request_line {
        return Err(HttpError::UriTooLong);
    }
    let mut scratch = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS_CAP];
    let cap = limits.max_headers.clamp(1, MAX_HEADERS_CAP);
    let mut req = httparse::Request::new(&mut []);
    let status = match req.parse_with_uninit_headers(buf, &mut scratch[..cap]) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadersTooLarge),
        Err(_) => {
            // Say which part is at fault: the request line (505 for another
            // HTTP version) or, when that line is well formed, a header field.
            let line = match line_end {
                Some(n) => &buf[skip..skip + n],
                None => &buf[skip..],
            };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(minor) = later_http1_minor(line) {
                // HTTP/1.x with x > 1 is served as HTTP/1.1 (RFC 9110 section 2.5):
                // parse a copy whose version says so (rare, so the copy is fine).
                let mut fixed = buf.to_vec();
                fixed[skip + minor] = b'1';
                return parse(&fixed, limits);
            }
            return Err(match request_line_error(line) {
                Some(e) => e,
                None if line_end.is_some() => HttpError::BadRequest("malformed header field"),
                None => HttpError::BadRequest("malformed request line"),
            });
        }
    };
    let len = match status {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => {
            if buf.len() > limits.max_header_bytes {
                return Err(HttpError::HeadersTooLarge);
            }
            return Ok(None);
        }
    };
    if len > limits.max_header_bytes {
        return Err(HttpError::HeadersTooLarge);
    }
    let head_bytes = &buf[..len];
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    if !target.is_ascii() {
        return Err(HttpError::BadRequest(NON_ASCII_TARGET));
    }
    let version = if req.version == Some(0) { Version::Http10 } else { Version::Http11 };
    let mut head = RequestHead {
        buf: Vec::new(),
        method: Span::of(buf, method.as_bytes()),
        target: Span::of(buf, target.as_bytes()),
        path: Span::default(),
        query: None,
        headers: Vec::with_capacity(req.headers.len()),
        version,
        framing: Framing::Empty,
        keep_alive: version == Version::Http11,
        expect_continue: false,
    };
    let (path, query) = split_target(method, target)?;
    head.path = path.map_or(ROOT, |p| Span::of(buf, p.as_bytes()));
    head.query = query.map(|q| Span::of(buf, q.as_bytes()));

    let mut hosts = 0;
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked_last = false;
    let mut other_coding = false;
    for h in req.headers.iter() {
        head.headers.push((Span::of(buf, h.name.as_bytes()), Span::of(buf, h.value)));
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            if !h.value.iter().all(|&b| is_host_byte(b)) {
                return Err(HttpError::BadRequest("invalid Host header"));
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            for part in h.value.split(|&b| b == b',') {
                let n = parse_content_length(trim(part))?;
                if content_length.is_some_and(|c| c != n) {
                    return Err(HttpError::BadRequest("conflicting Content-Length values"));
                }
                content_length = Some(n);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
            for coding in h.value.split(|&b| b == b',').map(trim).filter(|c| !c.is_empty()) {
                if chunked_last {
                    // Something after chunked: the body length cannot be determined.
                    return Err(HttpError::BadRequest("chunked must be the final transfer coding"));
                }
                if coding.eq_ignore_ascii_case(b"chunked") {
                    chunked_last = true;
                } else {
                    other_coding = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|&b| b == b',').map(trim) {
                if token.eq_ignore_ascii_case(b"close") {
                    head.keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == Version::Http10 {
                    head.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"expect") && version == Version::Http11 {
            if trim(h.value).eq_ignore_ascii_case(b"100-continue") {
                head.expect_continue = true;
            } else {
                return Err(HttpError::ExpectationFailed);
            }
        }
    }
    // An HTTP/1.0 client asking for keep-alive still loses it if it also said close.
    if head.headers().any(|(n, v)| {
        n.eq_ignore_ascii_case(b"connection") && v.split(|&b| b == b',').any(|t| trim(t).eq_ignore_ascii_case(b"close"))
    }) {
        head.keep_alive = false;
    }
    if hosts > 1 {
        return Err(HttpError::BadRequest("more than one Host header"));
    }
    if version == Version::Http11 && hosts == 0 {
        return Err(HttpError::BadRequest("HTTP/1.1 requires a Host header"));
    }
    if transfer_encoding {
        if version == Version::Http10 {
            return Err(HttpError::BadRequest("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if content_length.is_some() {
            return Err(HttpError::BadRequest("both Transfer-Encoding and Content-Length"));
        }
        if !chunked_last {
            return Err(if other_coding {
                HttpError::NotImplemented("unsupported transfer coding")
            } else {
                HttpError::BadRequest("empty Transfer-Encoding")
            });
        }
        if other_coding {
            return Err(HttpError::NotImplemented("unsupported transfer coding"));
        }
        head.framing = Framing::Chunked;
    } else if let Some(n) = content_length {
        if n > limits.max_body_bytes as u64 {
            return Err(HttpError::PayloadTooLarge);
        }
        head.framing = if n == 0 { Framing::Empty } else { Framing::Length(n) };
    }
    if head.framing == Framing::Empty {
        head.expect_continue = false;
    }
    head.buf = head_bytes.to_vec();
    Ok(Some((head, len)))
}

const NON_ASCII_TARGET: &str = "request target has bytes above 0x7F (percent-encode them)";

/// Where the minor version digit of `HTTP/1.x` is in a request line (without
/// its line ending), when x is 2 to 9 and the line is otherwise well formed
/// up to the version.
fn later_http1_minor(line: &[u8]) -> Option<usize> {
    let version = line.get(line.len().checked_sub(9)?..)?;
    let ok = version.starts_with(b" HTTP/1.") && (b'2'..=b'9').contains(&version[8]);
    (ok && request_line_error(line) == Some(HttpError::VersionNotSupported)).then(|| line.len() - 1)
}

/// `host:port` of a CONNECT request (RFC 9112 section 3.2.3).
fn is_authority_form(target: &str) -> bool {
    let Some((host, port)) = target.rsplit_once(':') else { return false };
    let port_ok = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(ip6) => !ip6.is_empty() && ip6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.'),
        None => !host.is_empty() && host.bytes().all(|b| b != b':' && b != b'[' && b != b']' && is_host_byte(b)),
    };
    port_ok && host_ok
}

/// Splits the target into path and query; rejects forms pyrs does not serve.
/// The path is None for an absolute-form target without one (it means "/").
fn split_target<'a>(method: &str, target: &'a str) -> Result<(Option<&'a str>, Option<&'a str>), HttpError> {
    if method == "CONNECT" {
        // Parsed, then refused: pyrs is not a tunnel.
        return Err(if is_authority_form(target) {
            HttpError::NotImplemented("CONNECT is not supported")
        } else {
            HttpError::BadRequest("CONNECT needs an authority-form target (host:port)")
        });
    }
    let origin = if target.starts_with('/') {
        target
    } else if target == "*" {
        if method != "OPTIONS" {
            return Err(HttpError::BadRequest("'*' target is only allowed with OPTIONS"));
        }
        return Ok((Some(target), None));
    } else if let Some(rest) = strip_scheme(target) {
        // absolute-form: drop the authority; the path may be empty.
        match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => &rest[i..],
            Some(i) => return Ok((None, Some(&rest[i + 1..]))),
            None => return Ok((None, None)),
        }
    } else {
        return Err(HttpError::BadRequest("request target must be origin-form or absolute-form"));
    };
    let origin = origin.split('#').next().unwrap_or(origin);
    Ok(match origin.split_once('?') {
        Some((p, q)) => (Some(p), Some(q)),
        None => (Some(origin), None),
    })
}

fn strip_scheme(target: &str) -> Option<&str> {
    let lower = target.get(..8).map(|s| s.to_ascii_lowercase());
    if lower.as_deref().is_some_and(|s| s.starts_with("http://")) {
        Some(&target[7..])
    } else if lower.as_deref() == Some("https://") {
        Some(&target[8..])
    } else {
        None
    }
}

/// The number of bytes of empty lines (CRLF or LF) at the start of `buf`.
/// A CR not followed by LF ends the prefix (the parser then rejects it).
pub fn blank_prefix(buf: &[u8]) -> usize {
    let mut i = 0;
    loop {
        match buf.get(i..i + 2) {
            Some(b"\r\n") => i += 2,
            _ if buf.get(i) == Some(&b'\n') => i += 1,
            _ => return i,
        }
    }
}

/// Bytes of a Host value: uri-host and port (reg-name, IPv4, IP-literal).
fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%:[]".contains(&b)
}

fn parse_content_length(v: &[u8]) -> Result<u64, HttpError> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::BadRequest("Content-Length must be digits"));
    }
    v.iter()
        .try_fold(0u64, |acc, &d| acc.checked_mul(10)?.checked_add(u64::from(d - b'0')))
        .ok_or(HttpError::BadRequest("Content-Length overflows"))
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(v.len());
    let end = v.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |e| e + 1);
    &v[start..end]
}

/// What is wrong with a request line (without its line ending), if anything:
/// `method SP target SP HTTP/1.x`, single spaces. `HTTP/x.y` with another
/// version is 505; anything else malformed is 400.
fn request_line_error(line: &[u8]) -> Option<HttpError> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Some(HttpError::BadRequest("malformed request line"));
    };
    if method.is_empty() || !method.iter().all(|&b| super::encode::is_token_byte(b)) {
        return Some(HttpError::BadRequest("malformed request line"));
    }
    let well_formed = version.len() == 8
        && version.starts_with(b"HTTP/")
        && version[5].is_ascii_digit()
        && version[6] == b'.'
        && version[7].is_ascii_digit();
    if !well_formed {
        return Some(HttpError::BadRequest("malformed HTTP version"));
    }
    if version != b"HTTP/1.0" && version != b"HTTP/1.1" {
        return Some(HttpError::VersionNotSupported);
    }
    if !target.is_ascii() {
        return Some(HttpError::BadRequest(NON_ASCII_TARGET));
    }
    if target.is_empty() || !target.iter().all(|&b| b > b' ' && b != 0x7f) {
        return Some(HttpError::BadRequest("malformed request target"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Option<(RequestHead, usize)>, HttpError> {
        parse(s.as_bytes(), &Limits::default())
    }

    fn ok(s: &str) -> RequestHead {
        p(s).expect("parse error").expect("incomplete").0
    }

    #[test]
    fn simple_get() {
        let h = ok("GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\n");
        assert_eq!((h.method(), h.path(), h.query()), ("GET", "/a/b", "x=1&y=2"));
        assert_eq!(h.header("x-a"), Some(&b"1"[..]));
        assert_eq!(h.framing, Framing::Empty);
        assert!(h.keep_alive);
    }

    #[test]
    fn partial_needs_more() {
        assert!(p("GET / HTTP/1.1\r\nHost: h\r\n").unwrap().is_none());
    }

    #[test]
    fn bare_lf_is_accepted_bare_cr_is_not() {
        assert_eq!(ok("GET / HTTP/1.1\nHost: h\n\n").path(), "/");
        assert!(p("GET / HTTP/1.1\rHost: h\r\n\r\n").is_err());
    }

    #[test]
    fn content_length_rules() {
        assert_eq!(ok("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n").framing, Framing::Length(5));
        assert_eq!(
            ok("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n").framing,
            Framing::Length(5)
        );
        for bad in ["5, 6", "+5", "-1", "0x5", "", "99999999999999999999999"] {
            let r = p(&format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: {bad}\r\n\r\n"));
            assert!(matches!(r, Err(HttpError::BadRequest(_))), "{bad}: {r:?}");
        }
        let big = p("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999\r\n\r\n");
        assert!(matches!(big, Err(HttpError::PayloadTooLarge)));
    }

    #[test]
    fn transfer_encoding_rules() {
        assert_eq!(ok("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n").framing, Framing::Chunked);
        let cases = [
            ("Transfer-Encoding: gzip, chunked", "501"),
            ("Transfer-Encoding: gzip", "501"),
            ("Transfer-Encoding: chunked, gzip", "400"),
            ("Transfer-Encoding: chunked\r\nContent-Length: 3", "400"),
            ("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", "400"),
        ];
        for (hdr, want) in cases {
            let r = p(&format!("POST / HTTP/1.1\r\nHost: h\r\n{hdr}\r\n\r\n"));
            let got = r.map(|_| 200).unwrap_or_else(|e| e.status());
            assert_eq!(got.to_string(), want, "{hdr}");
        }
        let r = p("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(matches!(r, Err(HttpError::BadRequest(_))));
    }

    #[test]
    fn host_rules() {
        assert!(p("GET / HTTP/1.1\r\n\r\n").is_err());
        assert!(p("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").is_err());
        assert!(!ok("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(ok("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(!ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive);
    }

    #[test]
    fn versions_and_targets() {
        assert!(matches!(p("GET / HTTP/2.0\r\nHost: h\r\n\r\n"), Err(HttpError::VersionNotSupported)));
        let h = ok("GET /x HTTP/1.2\r\nHost: h\r\n\r\n");
        assert_eq!((h.version, h.path(), h.keep_alive), (Version::Http11, "/x", true));
        assert_eq!(ok("GET / HTTP/1.9\r\nHost: h\r\nConnection: close\r\n\r\n").version, Version::Http11);
        assert!(matches!(p("GET / HTTP/1.2\r\n\r\n"), Err(HttpError::BadRequest(_))));
        assert!(matches!(p("GET / HTTP/3.1\r\nHost: h\r\n\r\n"), Err(HttpError::VersionNotSupported)));
        assert!(matches!(p("GET / HTTP/1.12\r\nHost: h\r\n\r\n"), Err(HttpError::BadRequest(_))));
        assert!(matches!(p("GET /é HTTP/1.1\r\nHost: h\r\n\r\n"), Err(HttpError::BadRequest(NON_ASCII_TARGET))));
        assert!(matches!(p("GET /é HTTP/1.2\r\nHost: h\r\n\r\n"), Err(HttpError::BadRequest(NON_ASCII_TARGET))));
        assert!(matches!(p("GET / FOO\r\nHost: h\r\n\r\n"), Err(HttpError::BadRequest(_))));
        assert!(p("GET * HTTP/1.1\r\nHost: h\r\n\r\n").is_err());
        assert_eq!(ok("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").path(), "*");
        let h = ok("GET http://example.com/x/y?q=1 HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((h.path(), h.query()), ("/x/y", "q=1"));
        assert_eq!(ok("GET http://example.com HTTP/1.1\r\nHost: h\r\n\r\n").path(), "/");
        for t in ["example.com:443", "10.0.0.1:80", "[::1]:8080"] {
            let r = p(&format!("CONNECT {t} HTTP/1.1\r\nHost: {t}\r\n\r\n"));
            assert!(matches!(r, Err(HttpError::NotImplemented(_))), "{t}: {r:?}");
        }
        for t in ["example.com", "/x", "example.com:", "a:b:1", "http://a:1/", "[::1]"] {
            let r = p(&format!("CONNECT {t} HTTP/1.1\r\nHost: h\r\n\r\n"));
            assert!(matches!(r, Err(HttpError::BadRequest(_))), "{t}: {r:?}");
        }
        assert!(matches!(p("GET example.com:443 HTTP/1.1\r\nHost: h\r\n\r\n"), Err(HttpError::BadRequest(_))));
    }

    #[test]
    fn malformed_headers() {
        for bad in ["X-A : 1", " X-A: 1", "X-A: 1\r\n folded", "X\0A: 1", "X-A: a\0b", "X-A:\r1"] {
            let r = p(&format!("GET / HTTP/1.1\r\nHost: h\r\n{bad}\r\n\r\n"));
            assert!(matches!(r, Err(HttpError::BadRequest(_))), "{bad:?}: {r:?}");
        }
    }

    #[test]
    fn limits() {
        let l = Limits { max_request_line: 20, max_headers: 2, max_header_bytes: 100, ..Limits::default() };
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(30));
        assert!(matches!(parse(long.as_bytes(), &l), Err(HttpError::UriTooLong)));
        assert!(matches!(parse(&long.as_bytes()[..25], &l), Err(HttpError::UriTooLong)));
        let many = "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n";
        assert!(matches!(parse(many.as_bytes(), &l), Err(HttpError::HeadersTooLarge)));
        let big = format!("GET / HTTP/1.1\r\nHost: h\r\nA: {}\r\n", "x".repeat(100));
        assert!(matches!(parse(big.as_bytes(), &l), Err(HttpError::HeadersTooLarge)));
    }

    #[test]
    fn request_line_errors_name_the_fault() {
        let cases = [
            ("GET / HTTP/3.0", "505"),
            ("GET / HTTP/0.9", "505"),
            ("GET / http/1.1", "malformed HTTP version"),
            ("GET / HTTP/1.10", "malformed HTTP version"),
            ("GET /", "malformed request line"),
            ("GET  / HTTP/1.1", "malformed request line"),
            ("G(T / HTTP/1.1", "malformed request line"),
            ("GET /\x01 HTTP/1.1", "malformed request target"),
        ];
        for (line, want) in cases {
            let got = match p(&format!("{line}\r\nHost: h\r\n\r\n")) {
                Err(HttpError::VersionNotSupported) => "505".to_string(),
                Err(e) => e.detail().to_string(),
                Ok(r) => format!("{r:?}"),
            };
            assert_eq!(got, want, "{line:?}");
        }
        let r = p("GET / HTTP/1.1\r\nHost: h\r\nX : 1\r\n\r\n");
        assert_eq!(r.unwrap_err(), HttpError::BadRequest("malformed header field"));
    }

    #[test]
    fn host_values() {
        for ok_host in ["a.example", "a:80", "[::1]:8080", "10.0.0.1", "", "xn--d1a.example"] {
            assert!(p(&format!("GET / HTTP/1.1\r\nHost: {ok_host}\r\n\r\n")).is_ok(), "{ok_host}");
        }
        for bad in ["a b", "a/b", "u@a", "a?b", "a#b", "caf\u{e9}"] {
            let r = p(&format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n"));
            assert_eq!(r.unwrap_err(), HttpError::BadRequest("invalid Host header"), "{bad}");
        }
        let two = p("GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n");
        assert_eq!(two.unwrap_err(), HttpError::BadRequest("more than one Host header"));
    }

    #[test]
    fn request_line_limit_is_exact() {
        let l = Limits { max_request_line: 16, ..Limits::default() };
        // "GET /abc HTTP/1.1" is 17 bytes; "GET /ab HTTP/1.1" is 16.
        assert!(parse(b"GET /ab HTTP/1.1\r\nHost: h\r\n\r\n", &l).unwrap().is_some());
        assert!(parse(b"GET /ab HTTP/1.1\nHost: h\n\n", &l).unwrap().is_some());
        assert!(parse(b"GET /ab HTTP/1.1\r", &l).unwrap().is_none());
        assert_eq!(parse(b"GET /abc HTTP/1.1\r\n", &l).unwrap_err(), HttpError::UriTooLong);
        assert_eq!(parse(b"GET /abc HTTP/1.1", &l).unwrap_err(), HttpError::UriTooLong);
    }

    #[test]
    fn blank_prefix_counts_whole_empty_lines() {
        assert_eq!(blank_prefix(b"\r\n\nGET"), 3);
        assert_eq!(blank_prefix(b"\r\n\r"), 2);
        assert_eq!(blank_prefix(b"\rGET"), 0);
        assert_eq!(ok("\r\n\nGET / HTTP/1.1\r\nHost: h\r\n\r\n").path(), "/");
        assert!(p("\rGET / HTTP/1.1\r\nHost: h\r\n\r\n").is_err());
    }

    #[test]
    fn expect_continue() {
        assert!(ok("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n").expect_continue);
        assert!(matches!(p("POST / HTTP/1.1\r\nHost: h\r\nExpect: teapot\r\n\r\n"), Err(HttpError::ExpectationFailed)));
    }
}
