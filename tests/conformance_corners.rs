//! RFC 9112/9110 corners an independent conformance run found, each checked
//! with the exact bytes the real binary sends (the `Date` value masked):
//! chunk-ext grammar, HTTP/1.x with x > 1, 501 for methods no route serves,
//! CONNECT in authority-form, raw bytes above 0x7F in the request-target.

mod common;
use common::*;

const API: &str = r#"
class Api:
    def echo(self, request):
        return request.method + " " + request.http_version + " " + request.body.decode()

    def dav(self, request):
        return "dav"
"#;

fn server() -> (Project, Server) {
    let pyrs = r#"{ "modules": [
        {"path": "/echo", "module": "main", "class": "Api", "handler": "echo"},
        {"path": "/dav", "module": "main", "class": "Api", "handler": "dav", "methods": ["PROPFIND"]},
    ] }"#;
    let p = Project::new(&[("main.py", API), ("project.pyrs", pyrs)]);
    let s = Server::start(&p, &[]);
    (p, s)
}

/// Sends `raw` on a new connection, half-closes, and returns everything the
/// server sent until it closed, with the Date value masked.
fn exchange(s: &Server, raw: &[u8]) -> String {
    let mut c = s.connect();
    c.send(raw);
    let _ = c.stream.shutdown(std::net::Shutdown::Write);
    let got = String::from_utf8_lossy(&c.read_to_close()).into_owned();
    mask_date(&got)
}

/// `Date` masked, and the `X-Request-Id` every response carries (its value differs per request) left out.
fn mask_date(s: &str) -> String {
    s.split("\r\n")
        .filter(|l| !l.starts_with("X-Request-Id: "))
        .map(|l| if l.starts_with("Date: ") { "Date: X" } else { l })
        .collect::<Vec<_>>()
        .join("\r\n")
}

fn text(status: &str, body: &str, close: bool) -> String {
    let close = if close { "Connection: close\r\n" } else { "" };
    format!(
        "HTTP/1.1 {status}\r\nServer: pyrs\r\nDate: X\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{close}\r\n{body}",
        body.len()
    )
}

fn error(status: &str, detail: &str) -> String {
    let body = format!("{detail}\n");
    format!(
        "HTTP/1.1 {status}\r\nServer: pyrs\r\nDate: X\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn chunked(ext: &str) -> String {
    format!("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2{ext}\r\nhi\r\n0\r\n\r\n")
}

#[test]
fn chunk_extensions_follow_the_grammar_exactly() {
    let (_p, s) = server();
    for ext in [";a", ";a=b", " ; a = b ; c", ";a=\"x y\"", ";a=\"q\\\"\"", "\t;a=b;c=\"d\" ;e"] {
        assert_eq!(exchange(&s, chunked(ext).as_bytes()), text("200 OK", "POST HTTP/1.1 hi", true), "{ext:?}");
    }
    for ext in [";", " ", ";;a", ";a=", ";=b", ";a b", ";a ", ";a=\"b", ";a=\"b\"c", ";a=@", ";a,b"] {
        assert_eq!(
            exchange(&s, chunked(ext).as_bytes()),
            error("400 Bad Request", "invalid chunk extension"),
            "{ext:?}"
        );
    }
}

#[test]
fn later_http1_minor_versions_are_served_as_http11() {
    let (_p, s) = server();
    let got = exchange(
        &s,
        b"GET /echo HTTP/1.2\r\nHost: t\r\n\r\nGET /echo HTTP/1.9\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(got, text("200 OK", "GET HTTP/1.1 ", false) + &text("200 OK", "GET HTTP/1.1 ", true));
    let got = exchange(&s, b"GET /echo HTTP/2.0\r\nHost: t\r\n\r\n");
    assert_eq!(got, error("505 HTTP Version Not Supported", "only HTTP/1.0 and HTTP/1.1 are supported"));
}

#[test]
fn methods_no_route_serves_are_501() {
    let (_p, s) = server();
    let not_impl = |m: &str| format!("{m} /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    for m in ["get", "Get", "BREW", "QUERY"] {
        assert_eq!(exchange(&s, not_impl(m).as_bytes()), text("501 Not Implemented", "Not Implemented\n", true), "{m}");
    }
    // A route without `methods` serves RFC 9110's methods and PATCH.
    for m in ["GET", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH"] {
        let want = text("200 OK", &format!("{m} HTTP/1.1 "), true);
        assert_eq!(exchange(&s, not_impl(m).as_bytes()), want, "{m}");
    }
    // Another method only where it is listed: elsewhere 405 with Allow.
    let got = exchange(&s, b"PROPFIND /dav HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(got, text("200 OK", "dav", true));
    let got = exchange(&s, b"PROPFIND /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(
        got,
        "HTTP/1.1 405 Method Not Allowed\r\nServer: pyrs\r\nDate: X\r\nAllow: GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 19\r\nConnection: close\r\n\r\nMethod Not Allowed\n"
    );
    // The connection stays usable after a 501.
    let got = exchange(
        &s,
        b"get /echo HTTP/1.1\r\nHost: t\r\n\r\nGET /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(got, text("501 Not Implemented", "Not Implemented\n", false) + &text("200 OK", "GET HTTP/1.1 ", true));
}

#[test]
fn connect_authority_form_is_parsed_and_501() {
    let (_p, s) = server();
    for t in ["example.com:443", "127.0.0.1:80", "[::1]:8080"] {
        let got = exchange(&s, format!("CONNECT {t} HTTP/1.1\r\nHost: {t}\r\n\r\n").as_bytes());
        assert_eq!(got, error("501 Not Implemented", "CONNECT is not supported"), "{t}");
    }
    for t in ["example.com", "/echo"] {
        let got = exchange(&s, format!("CONNECT {t} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        assert_eq!(got, error("400 Bad Request", "CONNECT needs an authority-form target (host:port)"), "{t}");
    }
}

#[test]
fn raw_bytes_above_0x7f_in_the_target_are_400() {
    let (_p, s) = server();
    for raw in [&b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: t\r\n\r\n"[..], b"GET /echo?q=\xff HTTP/1.1\r\nHost: t\r\n\r\n"] {
        let got = exchange(&s, raw);
        assert_eq!(got, error("400 Bad Request", "request target has bytes above 0x7F (percent-encode them)"));
    }
    // Percent-encoded, the same target is fine.
    let got = exchange(&s, b"GET /ech%6F?q=%C3%A9 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(got, text("200 OK", "GET HTTP/1.1 ", true));
}
