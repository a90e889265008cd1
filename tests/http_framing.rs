//! RFC 9112 framing through the real binary: raw bytes over TCP, exact
//! responses (only `Date` is blanked). Each test serves the project in
//! `http_support` (routes /echo, /hello, /info, /big, GET-only /get-only).

mod http_support;
use http_support::*;

const HOST: &str = "Host: t\r\n";

fn req(method: &str, path: &str, headers: &str, body: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\n{HOST}{headers}\r\n{body}")
}

/// Sends `raw` and expects exactly `want` followed by the server closing.
#[track_caller]
fn assert_closes_with(s: &Server, raw: &str, want: &str) {
    assert_eq!(exchange(s, raw.as_bytes()), want, "request {raw:?}");
}

#[test]
fn content_length_bodies() {
    let s = start("", &[]);
    let mut c = Raw::connect(s.addr);
    // The body ends exactly where Content-Length says; the next request follows.
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhelloGET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response(false), bytes("hello"));
    assert_eq!(c.response(false), text("world"));
    // Equal values, as a list or repeated, fold into one; leading zeros are digits.
    for cl in ["3, 3", "3,3\r\nContent-Length: 3", "003"] {
        c.send(req("POST", "/echo", &format!("Content-Length: {cl}\r\n"), "abc").as_bytes());
        assert_eq!(c.response(false), bytes("abc"), "Content-Length: {cl}");
    }
    // A body on GET is read (so it cannot be taken for the next request).
    c.send(req("GET", "/info", "Content-Length: 4\r\n", "GET ").as_bytes());
    assert_eq!(c.response(false), text("GET /info ? HTTP/1.1 body=4"));
    // Content-Length: 0 is an empty body.
    c.send(req("POST", "/echo", "Content-Length: 0\r\n", "").as_bytes());
    assert_eq!(c.response(false), bytes(""));
}

#[test]
fn content_length_errors_are_400_and_close() {
    let s = start("", &[]);
    let cases = [
        ("3, 4", "conflicting Content-Length values"),
        ("3\r\nContent-Length: 4", "conflicting Content-Length values"),
        ("+3", "Content-Length must be digits"),
        ("-3", "Content-Length must be digits"),
        ("0x3", "Content-Length must be digits"),
        ("3 3", "Content-Length must be digits"),
        ("3;", "Content-Length must be digits"),
        ("3,", "Content-Length must be digits"),
        ("", "Content-Length must be digits"),
        ("1e3", "Content-Length must be digits"),
        ("99999999999999999999999", "Content-Length overflows"),
    ];
    for (cl, detail) in cases {
        // What follows the bad head (here a complete request) is never processed.
        let raw =
            req("POST", "/echo", &format!("Content-Length: {cl}\r\n"), "abcGET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_closes_with(&s, &raw, &error(400, detail));
    }
}

#[test]
fn body_cut_short_by_eof_is_closed_without_answer() {
    let s = start("", &[]);
    let mut c = Raw::connect(s.addr);
    c.send(req("POST", "/echo", "Content-Length: 10\r\n", "abc").as_bytes());
    c.shutdown_write();
    assert!(c.closes_silently(5.0), "got {:?}", norm(&c.buf));
    let mut c = Raw::connect(s.addr);
    c.send(req("POST", "/echo", "Transfer-Encoding: chunked\r\n", "3\r\nabc\r\n").as_bytes());
    c.shutdown_write();
    assert!(c.closes_silently(5.0), "got {:?}", norm(&c.buf));
    // Requests completed before it are answered, then the connection closes at once.
    let mut c = Raw::connect(s.addr);
    c.send(
        format!("{}{}", req("GET", "/hello", "", ""), req("POST", "/echo", "Content-Length: 10\r\n", "abc")).as_bytes(),
    );
    c.shutdown_write();
    assert_eq!(c.read_to_close(2.0), text("world"));
    // A complete request followed by EOF is still answered.
    let mut c = Raw::connect(s.addr);
    c.send(req("POST", "/echo", "Content-Length: 3\r\n", "abc").as_bytes());
    c.shutdown_write();
    assert_eq!(c.read_to_close(5.0), bytes("abc"));
}

#[test]
fn chunked_bodies_extensions_and_trailers() {
    let s = start("", &[]);
    let mut c = Raw::connect(s.addr);
    let te = "Transfer-Encoding: chunked\r\n";
    let body = "5;name=value;flag\r\nhello\r\n6 ; q=\"a;b\"\r\n world\r\n00A\r\n0123456789\r\n0;last\r\nX-Trailer: 1\r\nChecksum: abc\r\n\r\n";
    c.send(req("POST", "/echo", te, body).as_bytes());
    assert_eq!(c.response(false), bytes("hello world0123456789"));
    // Without trailers; upper and lower case hex; the connection stays usable.
    c.send(req("POST", "/echo", te, "a\r\n0123456789\r\nB\r\nabcdefghijk\r\n0\r\n\r\n").as_bytes());
    assert_eq!(c.response(false), bytes("0123456789abcdefghijk"));
    // A zero-length chunked body; "Transfer-Encoding: CHUNKED" with spaces.
    c.send(req("POST", "/echo", "Transfer-Encoding:  CHUNKED \r\n", "0\r\n\r\n").as_bytes());
    assert_eq!(c.response(false), bytes(""));
    // Trailers are read and discarded: the handler sees only the head's fields.
    c.send(req("POST", "/info", te, "1\r\nx\r\n0\r\nHost: evil\r\n\r\n").as_bytes());
    assert_eq!(c.response(false), text("POST /info ? HTTP/1.1 body=1"));
    c.send(req("GET", "/hello", "Connection: close\r\n", "").as_bytes());
    assert_eq!(c.read_to_close(5.0), text_close("world"));
}

#[test]
fn chunked_errors_are_400_and_close() {
    let s = start("", &[]);
    let te = "Transfer-Encoding: chunked\r\n";
    let next = "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n";
    let cases = [
        ("10000000000000000\r\n", "chunk size overflows"),
        ("ffffffffffffffffff\r\n", "chunk size overflows"),
        ("\r\n", "missing chunk size"),
        (" 5\r\nhello\r\n0\r\n\r\n", "missing chunk size"),
        ("-5\r\nhello\r\n0\r\n\r\n", "missing chunk size"),
        ("0x5\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
        ("5x\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
        ("5 x\r\nhello\r\n0\r\n\r\n", "invalid chunk extension"),
        ("5;a\x01b\r\nhello\r\n0\r\n\r\n", "invalid chunk extension"),
        // Chunk lines must end in CRLF: a bare LF is refused (no lenient framing here).
        ("5\nhello\r\n0\r\n\r\n", "chunk lines must end in CRLF"),
        ("5;ext\nhello\r\n0\r\n\r\n", "chunk lines must end in CRLF"),
        ("5\rhello\r\n0\r\n\r\n", "chunk lines must end in CRLF"),
        ("5\r\nhello\n0\r\n\r\n", "chunk data must end in CRLF"),
        ("5\r\nhelloXX\r\n0\r\n\r\n", "chunk data must end in CRLF"),
        ("3\r\nhello\r\n0\r\n\r\n", "chunk data must end in CRLF"),
        ("0\r\n\n", "chunk lines must end in CRLF"),
        ("0\r\nX: 1\n\r\n", "chunk lines must end in CRLF"),
        ("0\r\nX: 1\r\n folded\r\n\r\n", "malformed trailer"),
        ("0\r\n: 1\r\n\r\n", "malformed trailer"),
        ("0\r\nX : 1\r\n\r\n", "malformed trailer"),
        ("0\r\nX\r\n\r\n", "malformed trailer"),
        ("0\r\nX: a\0b\r\n\r\n", "malformed trailer"),
    ];
    for (body, detail) in cases {
        let raw = req("POST", "/echo", te, &format!("{body}{next}"));
        assert_closes_with(&s, &raw, &error(400, detail));
    }
}

#[test]
fn transfer_encoding_rules() {
    let s = start("", &[]);
    let body = "3\r\nabc\r\n0\r\n\r\nGET /hello HTTP/1.1\r\nHost: t\r\n\r\n";
    let cases = [
        // Smuggling guards: both framings, or chunked on HTTP/1.0.
        ("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", 400, "both Transfer-Encoding and Content-Length"),
        ("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", 400, "both Transfer-Encoding and Content-Length"),
        ("Content-Length: 3\r\nTransfer-Encoding: gzip\r\n", 400, "both Transfer-Encoding and Content-Length"),
        ("Transfer-Encoding: chunked, gzip\r\n", 400, "chunked must be the final transfer coding"),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            400,
            "chunked must be the final transfer coding",
        ),
        ("Transfer-Encoding: chunked, chunked\r\n", 400, "chunked must be the final transfer coding"),
        ("Transfer-Encoding: \r\n", 400, "empty Transfer-Encoding"),
        ("Transfer-Encoding: ,\r\n", 400, "empty Transfer-Encoding"),
        // Other codings are not implemented.
        ("Transfer-Encoding: gzip\r\n", 501, "unsupported transfer coding"),
        ("Transfer-Encoding: gzip, chunked\r\n", 501, "unsupported transfer coding"),
        ("Transfer-Encoding: identity\r\n", 501, "unsupported transfer coding"),
        ("Transfer-Encoding: xchunked\r\n", 501, "unsupported transfer coding"),
        ("Transfer-Encoding: chunked;q=1\r\n", 501, "unsupported transfer coding"),
        // Header syntax a lenient parser might read as Transfer-Encoding.
        ("Transfer-Encoding : chunked\r\n", 400, "malformed header field"),
        ("Transfer-Encoding:\r\n chunked\r\n", 400, "malformed header field"),
        (" Transfer-Encoding: chunked\r\n", 400, "malformed header field"),
    ];
    for (headers, status, detail) in cases {
        assert_closes_with(&s, &req("POST", "/echo", headers, body), &error(status, detail));
    }
    // Transfer-Encoding in an HTTP/1.0 request.
    let raw = format!("POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
    assert_closes_with(&s, &raw, &error(400, "Transfer-Encoding in an HTTP/1.0 request"));
    // The classic CL.TE smuggling attempt answers 400 only: the "GET" is never served.
    let raw = "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /hello HTTP/1.1\r\nHost: t\r\n\r\n";
    assert_closes_with(&s, raw, &error(400, "both Transfer-Encoding and Content-Length"));
}

#[test]
fn request_line_rules() {
    let s = start("", &[]);
    // (HTTP/1.2 and later 1.x are served as HTTP/1.1: tests/conformance_corners.rs.)
    let version_cases = ["HTTP/2.0", "HTTP/0.9", "HTTP/3.0", "HTTP/9.9"];
    for v in version_cases {
        let raw = format!("GET /hello {v}\r\nHost: t\r\n\r\n");
        assert_closes_with(&s, &raw, &error(505, "only HTTP/1.0 and HTTP/1.1 are supported"));
    }
    let bad = [
        ("GET /hello http/1.1\r\nHost: t\r\n\r\n", "malformed HTTP version"),
        ("GET /hello HTTP/1.10\r\nHost: t\r\n\r\n", "malformed HTTP version"),
        ("GET /hello HTTP/1\r\nHost: t\r\n\r\n", "malformed HTTP version"),
        ("GET /hello HTTP/1.1x\r\nHost: t\r\n\r\n", "malformed HTTP version"),
        ("GET /hello\r\nHost: t\r\n\r\n", "malformed request line"),
        ("GET  /hello HTTP/1.1\r\nHost: t\r\n\r\n", "malformed request line"),
        ("GET /hello  HTTP/1.1\r\nHost: t\r\n\r\n", "malformed request line"),
        ("GET /hello HTTP/1.1 \r\nHost: t\r\n\r\n", "malformed request line"),
        ("GET\t/hello HTTP/1.1\r\nHost: t\r\n\r\n", "malformed request line"),
        ("G@T /hello HTTP/1.1\r\nHost: t\r\n\r\n", "malformed request line"),
        ("GET /he llo HTTP/1.1\r\nHost: t\r\n\r\n", "malformed request line"),
        (" GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", "malformed request line"),
        ("GET /hello\0 HTTP/1.1\r\nHost: t\r\n\r\n", "malformed request target"),
        ("GET /hel\x7flo HTTP/1.1\r\nHost: t\r\n\r\n", "malformed request target"),
        ("GET * HTTP/1.1\r\nHost: t\r\n\r\n", "'*' target is only allowed with OPTIONS"),
        ("GET example.com:443 HTTP/1.1\r\nHost: t\r\n\r\n", "request target must be origin-form or absolute-form"),
        ("GET hello HTTP/1.1\r\nHost: t\r\n\r\n", "request target must be origin-form or absolute-form"),
    ];
    for (raw, detail) in bad {
        assert_closes_with(&s, raw, &error(400, detail));
    }
    // Raw bytes above 0x7F in the target, UTF-8 or not (percent-encoded they are fine; see below).
    for raw in
        [&b"GET /h\xffllo HTTP/1.1\r\nHost: t\r\n\r\n"[..], "GET /h\u{e9}llo HTTP/1.1\r\nHost: t\r\n\r\n".as_bytes()]
    {
        let mut c = Raw::connect(s.addr);
        c.send(raw);
        assert_eq!(c.read_to_close(5.0), error(400, "request target has bytes above 0x7F (percent-encode them)"));
    }

    let mut c = Raw::connect(s.addr);
    // Absolute-form: the authority is dropped, the path routed.
    c.send(b"GET http://example.com/info?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert_eq!(c.response(false), text("GET /info ?x=1 HTTP/1.1 body=0"));
    c.send(b"GET HTTPS://example.com:8443/info HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert_eq!(c.response(false), text("GET /info ? HTTP/1.1 body=0"));
    c.send(b"GET /h%C3%A9llo HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response(false), response(404, &[], "text/plain; charset=utf-8", "Not Found\n", None));
    // A fragment is not part of the path.
    c.send(b"GET /info?a=b#frag HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response(false), text("GET /info ?a=b HTTP/1.1 body=0"));
    // `*` with OPTIONS answers for the server as a whole.
    c.send(b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n");
    let allow = format!("Allow: {}", pyrs::config::KNOWN_METHODS.join(", "));
    assert_eq!(c.response(false), response(200, &[&allow], "text/plain; charset=utf-8", "", None));
    // Empty lines before a request line are ignored.
    c.send(b"\r\n\r\nGET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response(false), text("world"));
    c.send(b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response(false), response(404, &[], "text/plain; charset=utf-8", "Not Found\n", None));
    c.send(b"DELETE /get-only HTTP/1.1\r\nHost: t\r\n\r\n");
    let want = response(405, &["Allow: GET, HEAD"], "text/plain; charset=utf-8", "Method Not Allowed\n", None);
    assert_eq!(c.response(false), want);
    c.send(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(c.read_to_close(5.0), text_close("world"));
}

#[test]
fn host_rules() {
    let s = start("", &[]);
    let cases = [
        ("GET /hello HTTP/1.1\r\n\r\n", "HTTP/1.1 requires a Host header"),
        ("GET /hello HTTP/1.1\r\nX: y\r\n\r\n", "HTTP/1.1 requires a Host header"),
        ("GET /hello HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", "more than one Host header"),
        ("GET /hello HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", "more than one Host header"),
        ("GET /hello HTTP/1.1\r\nHost: a b\r\n\r\n", "invalid Host header"),
        ("GET /hello HTTP/1.1\r\nHost: a/b\r\n\r\n", "invalid Host header"),
        ("GET /hello HTTP/1.1\r\nHost: user@a\r\n\r\n", "invalid Host header"),
    ];
    for (raw, detail) in cases {
        assert_closes_with(&s, raw, &error(400, detail));
    }
    let mut c = Raw::connect(s.addr);
    for host in ["example.com", "example.com:8080", "127.0.0.1:1", "[::1]:80", "", "xn--caf-dma.example"] {
        c.send(format!("GET /hello HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        assert_eq!(c.response(false), text("world"), "Host: {host}");
    }
    // HTTP/1.0 needs no Host.
    assert_closes_with(&s, "GET /hello HTTP/1.0\r\n\r\n", &text_close("world"));
}

#[test]
fn header_syntax_rules() {
    let s = start("", &[]);
    let bad = [
        "X-A : 1\r\n",       // whitespace before the colon
        "X-A\t: 1\r\n",      // (also a tab)
        "X-A: 1\r\n 2\r\n",  // obs-fold
        "X-A: 1\r\n\t2\r\n", // obs-fold with a tab
        "X-A: a\0b\r\n",     // NUL in a value
        "X\0A: 1\r\n",       // NUL in a name
        "X-A: 1\r2\r\n",     // bare CR in a value
        "X-A\r: 1\r\n",      // bare CR in a name
        "X-A: 1\r\r\n",      // CR CR LF
        "X-A: \x7f\r\n",     // DEL
        "X-A: \x01\r\n",     // other control characters
        "X(A): 1\r\n",       // a name that is not a token
        "X-A\r\n",           // no colon
        ": 1\r\n",           // empty name
        "X A: 1\r\n",        // space inside a name
    ];
    for h in bad {
        let raw = format!("GET /hello HTTP/1.1\r\nHost: t\r\n{h}\r\nGET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_closes_with(&s, &raw, &error(400, "malformed header field"));
    }
    // A bare CR right after the request line, and as the head's end.
    assert_closes_with(&s, "GET /hello HTTP/1.1\rHost: t\r\n\r\n", &error(400, "malformed request line"));
    assert_closes_with(&s, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\r\n", &error(400, "malformed header field"));

    let mut c = Raw::connect(s.addr);
    // Values may hold tabs, spaces and obs-text; surrounding whitespace is trimmed.
    c.send(b"GET /hello HTTP/1.1\r\nHost: t\r\nX-A:\t a \t b \t\r\nX-B: caf\xe9\r\nX-C:\r\n\r\n");
    assert_eq!(c.response(false), text("world"));
}

#[test]
fn bare_lf_ends_head_lines() {
    // Decision (README, "HTTP behaviour"): a bare LF ends a line of the request
    // head (RFC 9112 section 2.2 allows it); chunk lines and trailers need CRLF.
    let s = start("", &[]);
    let mut c = Raw::connect(s.addr);
    c.send(b"GET /hello HTTP/1.1\nHost: t\n\n");
    assert_eq!(c.response(false), text("world"));
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\nContent-Length: 2\r\n\nhi");
    assert_eq!(c.response(false), bytes("hi"));
    c.send(b"\nGET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\n\r\n");
    assert_eq!(c.read_to_close(5.0), text_close("world"));
    let raw = "POST /echo HTTP/1.1\nHost: t\nTransfer-Encoding: chunked\n\n2\nhi\n0\n\n";
    assert_closes_with(&s, raw, &error(400, "chunk lines must end in CRLF"));
}

#[test]
fn expect_100_continue() {
    let s = start("", &["--max-body-bytes", "100"]);
    let expect = "Expect: 100-continue\r\n";
    // Route exists and the length is within limits: 100 first, then the answer.
    let mut c = Raw::connect(s.addr);
    c.send(req("POST", "/echo", &format!("Content-Length: 5\r\n{expect}"), "").as_bytes());
    assert_eq!(c.response(false), "HTTP/1.1 100 Continue\r\n\r\n");
    c.send(b"hello");
    assert_eq!(c.response(false), bytes("hello"));
    // Chunked bodies too; and a client that sends the body at once is fine.
    c.send(req("POST", "/echo", &format!("Transfer-Encoding: chunked\r\n{expect}"), "2\r\nhi\r\n0\r\n\r\n").as_bytes());
    assert_eq!(c.response(false), "HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(c.response(false), bytes("hi"));
    // No body: nothing to continue.
    c.send(req("GET", "/hello", expect, "").as_bytes());
    assert_eq!(c.response(false), text("world"));
    // HTTP/1.0 ignores the expectation.
    c.send(b"POST /echo HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi");
    assert_eq!(c.response(false), response(200, &[], "application/octet-stream", "hi", Some("keep-alive")));

    // The body would not be read: the final status at once, then close.
    let cases = [
        (req("POST", "/nope", &format!("Content-Length: 5\r\n{expect}"), ""), "404"),
        (req("POST", "/get-only", &format!("Content-Length: 5\r\n{expect}"), ""), "405"),
        (req("POST", "/echo", &format!("Content-Length: 101\r\n{expect}"), ""), "413"),
    ];
    let want_404 = response(404, &[], "text/plain; charset=utf-8", "Not Found\n", Some("close"));
    let want_405 =
        response(405, &["Allow: GET, HEAD"], "text/plain; charset=utf-8", "Method Not Allowed\n", Some("close"));
    for (raw, status) in cases {
        let want = match status {
            "404" => want_404.clone(),
            "405" => want_405.clone(),
            _ => error(413, "request body too large"),
        };
        let mut c = Raw::connect(s.addr);
        c.send(raw.as_bytes());
        // Answered without sending the body, and closed.
        assert_eq!(c.read_to_close(5.0), want, "{raw:?}");
    }
    let raw = req("POST", "/echo", "Content-Length: 5\r\nExpect: something-else\r\n", "hello");
    assert_closes_with(&s, &raw, &error(417, "only 'Expect: 100-continue' is supported"));
}

#[test]
fn head_has_get_headers_and_no_body() {
    let s = start("", &[]);
    let mut c = Raw::connect(s.addr);
    for path in ["/hello", "/big", "/nope"] {
        c.send(req("GET", path, "", "").as_bytes());
        let get = c.response(false);
        c.send(req("HEAD", path, "", "").as_bytes());
        let head = c.response(true);
        let end = get.find("\r\n\r\n").unwrap() + 4;
        assert_eq!(head, get[..end], "HEAD {path}");
        assert!(head.contains("\r\nContent-Length: "), "{head}");
    }
    // Nothing but the head was sent: the next response starts right after it.
    c.send(req("HEAD", "/hello", "", "").as_bytes());
    c.send(req("GET", "/hello", "Connection: close\r\n", "").as_bytes());
    let all = c.read_to_close(5.0);
    let head = text("world");
    let head = &head[..head.len() - "world".len()];
    assert_eq!(all, format!("{head}{}", text_close("world")));
}

#[test]
fn http10_keep_alive_and_connection_close() {
    let s = start("", &[]);
    // HTTP/1.0 closes unless it asks for keep-alive.
    assert_closes_with(&s, "GET /hello HTTP/1.0\r\n\r\n", &text_close("world"));
    let mut c = Raw::connect(s.addr);
    c.send(b"GET /hello HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    assert_eq!(c.response(false), response(200, &[], "text/plain; charset=utf-8", "world", Some("keep-alive")));
    c.send(b"GET /info HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let want = response(200, &[], "text/plain; charset=utf-8", "GET /info ? HTTP/1.0 body=0", Some("keep-alive"));
    assert_eq!(c.response(false), want);
    c.send(b"GET /hello HTTP/1.0\r\n\r\n");
    assert_eq!(c.read_to_close(5.0), text_close("world"));
    // keep-alive together with close: close wins.
    assert_closes_with(&s, "GET /hello HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", &text_close("world"));
    assert_closes_with(
        &s,
        "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
        &text_close("world"),
    );
    // HTTP/1.1 "Connection: close": answered with close; a pipelined request after it is ignored.
    let raw = "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: CLOSE\r\n\r\nGET /hello HTTP/1.1\r\nHost: t\r\n\r\n";
    assert_closes_with(&s, raw, &text_close("world"));
    let raw = "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: foo, close\r\n\r\n";
    assert_closes_with(&s, raw, &text_close("world"));
}

#[test]
fn nothing_after_a_framing_error_is_processed() {
    let s = start("", &[]);
    let good = "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n";
    let bad = "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1, 2\r\n\r\n";
    let raw = format!("{good}{bad}{good}{good}");
    let want = format!("{}{}", text("world"), error(400, "conflicting Content-Length values"));
    assert_closes_with(&s, &raw, &want);
    // An error inside a chunked body: the requests before it are answered, nothing after.
    let raw = format!("{good}POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhiX\r\n{good}");
    let want = format!("{}{}", text("world"), error(400, "chunk data must end in CRLF"));
    assert_closes_with(&s, &raw, &want);
}

#[test]
fn error_response_is_flushed_before_close_despite_unread_input() {
    let s = start("", &[]);
    for _ in 0..5 {
        let mut c = Raw::connect(s.addr);
        let mut raw = b"GET /hello HTTP/1.1\r\nHost : t\r\n\r\n".to_vec();
        // The client keeps sending after the bad head: pyrs must still deliver
        // its 400 completely (a close with unread input would send RST).
        let stream = c.stream.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            let mut stream = stream;
            raw.extend(std::iter::repeat_n(b'x', 256 * 1024));
            let _ = std::io::Write::write_all(&mut stream, &raw);
        });
        assert_eq!(c.read_to_close(5.0), error(400, "malformed header field"));
        sender.join().unwrap();
    }
}

const PIPELINE: &str = concat!(
    "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n",
    "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
    "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n",
    "HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n",
    "\r\nGET /info?q=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nxy",
    "POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
    "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n",
    "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n",
);

fn pipeline_answer() -> String {
    let world = text("world");
    [
        world.clone(),
        bytes("hello"),
        bytes("abcde"),
        world[..world.len() - 5].to_string(),
        text("GET /info ?q=1 HTTP/1.1 body=2"),
        "HTTP/1.1 100 Continue\r\n\r\n".to_string(),
        bytes("ok"),
        response(404, &[], "text/plain; charset=utf-8", "Not Found\n", None),
        text_close("world"),
    ]
    .concat()
}

#[test]
fn several_requests_in_one_write() {
    let s = start("", &[]);
    assert_eq!(exchange(&s, PIPELINE.as_bytes()), pipeline_answer());
}

#[test]
fn one_byte_per_write() {
    let s = start("", &[]);
    assert_eq!(exchange_bytewise(&s, PIPELINE.as_bytes()), pipeline_answer());
    // Errors are found just the same when the bytes trickle in.
    let raw = "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc";
    assert_eq!(exchange_bytewise(&s, raw.as_bytes()), error(400, "both Transfer-Encoding and Content-Length"));
    let raw = "GET /hello HTTP/1.1\r\nHost: t\r\n\r\nGET /hello HTTP/3.0\r\n";
    assert_eq!(
        exchange_bytewise(&s, raw.as_bytes()),
        format!("{}{}", text("world"), error(505, "only HTTP/1.0 and HTTP/1.1 are supported"))
    );
}

#[test]
fn every_split_point_of_a_request_pair() {
    // Two requests cut at every byte boundary into two writes.
    let s = start("", &[]);
    let raw = concat!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2;e\r\nab\r\n0\r\nT: 1\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\ncd",
    );
    let want = format!("{}{}", bytes("ab"), response(200, &[], "application/octet-stream", "cd", Some("close")));
    for cut in 1..raw.len() {
        let mut c = Raw::connect(s.addr);
        c.send(&raw.as_bytes()[..cut]);
        std::thread::sleep(std::time::Duration::from_micros(500));
        c.send(&raw.as_bytes()[cut..]);
        assert_eq!(c.read_to_close(5.0), want, "cut at {cut}");
    }
}

#[test]
fn responses_queued_before_a_close_survive_unread_input() {
    // Large pipelined responses, then "Connection: close", then more input
    // the server will never read, while the client is slow to read. Closing
    // outright with unread input would reset the connection and drop the
    // responses still queued in the kernel; pyrs closes gracefully instead.
    let s = start("", &[]);
    for _ in 0..3 {
        let mut c = Raw::connect(s.addr);
        let mut raw = req("GET", "/big", "", "").repeat(30);
        raw.push_str(&req("GET", "/hello", "Connection: close\r\n", ""));
        c.send(raw.as_bytes());
        std::thread::sleep(std::time::Duration::from_millis(100));
        c.send(&vec![b'x'; 64 * 1024]);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let got = c.read_to_close(5.0);
        let big = response(200, &[], "application/octet-stream", &"x".repeat(100_000), None);
        assert_eq!(got.len(), big.len() * 30 + text_close("world").len(), "responses lost");
        assert!(got.ends_with(&text_close("world")));
    }
}
