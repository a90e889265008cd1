//! Handler return values, exceptions, shared instances and the request
//! object, through the real binary.

mod common;
use common::*;

const API: &str = r#"
import os
import pyrs

class Api:
    def __init__(self):
        self.counter = 0

    def text(self, request):
        return "héllo wörld ✓"

    def raw(self, request):
        return b"\x00\x01binary\x00"

    def data(self, request):
        return {"a": 1, "b": [True, None, 2.5], "c": "é\"\n", "n": 12345678901234567890}

    def listing(self, request):
        return [1, "two", {"three": 3}]

    def nothing(self, request):
        return None

    def created(self, request):
        return ("made", 201)

    def with_headers(self, request):
        return ("ok", 202, {"X-Custom": "yes", "Content-Type": "text/csv"})

    def response(self, request):
        return pyrs.Response(b"<b>hi</b>", status=203, headers=[("X-A", "1")], content_type="text/html")

    def teapot(self, request):
        raise pyrs.HTTPError(418, "short and stout")

    def boom(self, request):
        raise ValueError("kaboom")

    def junk(self, request):
        return object()

    def bad_status(self, request):
        return ("x", 1000)

    def crlf(self, request):
        return ("x", 200, {"X-Evil": "a\r\nInjected: 1"})

    def echo_header(self, request):
        return pyrs.Response("x", headers={"X-Echo": request.headers["x-in"]},
                             content_type="text/plain; name=" + request.headers["x-in"])

    def euro_header(self, request):
        return ("x", 200, {"X-Price": "5 \u20ac"})

    def count(self, request):
        self.counter += 1
        return str(self.counter)

    def echo(self, request):
        return request.body

    def echo_text(self, request):
        return request.text

    def inspect(self, request):
        return {
            "method": request.method,
            "path": request.path,
            "query_string": request.query_string,
            "query": request.query,
            "host": request.headers["host"],
            "x_multi": request.headers.get_all("X-Multi"),
            "has_missing": "missing" in request.headers,
            "params": request.params,
            "remote_addr": request.remote_addr,
            "http_version": request.http_version,
            "len": len(request.body),
        }

    def parsed(self, request):
        return {"got": request.json()}

    def bye(self, request):
        return ("bye", 200, {"Connection": "close"})

    def pid(self, request):
        return str(os.getpid())
"#;

fn routes() -> Vec<(&'static str, &'static str)> {
    vec![
        ("/text", "text"),
        ("/raw", "raw"),
        ("/data", "data"),
        ("/list", "listing"),
        ("/nothing", "nothing"),
        ("/created", "created"),
        ("/headers", "with_headers"),
        ("/response", "response"),
        ("/teapot", "teapot"),
        ("/boom", "boom"),
        ("/junk", "junk"),
        ("/bad_status", "bad_status"),
        ("/crlf", "crlf"),
        ("/echo_header", "echo_header"),
        ("/euro_header", "euro_header"),
        ("/count1", "count"),
        ("/count2", "count"),
        ("/echo", "echo"),
        ("/echo_text", "echo_text"),
        ("/inspect/{id}", "inspect"),
        ("/json", "parsed"),
        ("/bye", "bye"),
    ]
}

fn server() -> Server {
    let p = Project::simple(API, &routes(), "");
    Server::start(&p, &[])
}

#[test]
fn str_is_utf8_text() {
    let s = server();
    let r = s.get("/text");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.text(), "héllo wörld ✓");
    assert_eq!(r.header("Content-Length"), Some("17"));
    assert_eq!(r.header("Server"), Some("pyrs"));
    assert!(r.header("Date").is_some_and(|d| d.ends_with(" GMT")));
}

#[test]
fn bytes_are_octet_stream_with_nul_bytes() {
    let s = server();
    let r = s.get("/raw");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
    assert_eq!(r.body, b"\x00\x01binary\x00");
}

#[test]
fn dict_and_list_are_json() {
    let s = server();
    let r = s.get("/data");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v, serde_json::json!({"a": 1, "b": [true, null, 2.5], "c": "é\"\n", "n": 12345678901234567890u64}));
    let r = s.get("/list");
    assert_eq!(r.text(), r#"[1,"two",{"three":3}]"#);
}

#[test]
fn none_is_204_without_body() {
    let s = server();
    let r = s.get("/nothing");
    assert_eq!((r.status, r.reason.as_str()), (204, "No Content"));
    assert_eq!(r.header("Content-Length"), None);
    assert!(r.body.is_empty());
}

#[test]
fn tuples_set_status_and_headers() {
    let s = server();
    let r = s.get("/created");
    assert_eq!((r.status, r.text().as_str()), (201, "made"));
    let r = s.get("/headers");
    assert_eq!(r.status, 202);
    assert_eq!(r.header("X-Custom"), Some("yes"));
    assert_eq!(r.header("Content-Type"), Some("text/csv"));
}

#[test]
fn response_object() {
    let s = server();
    let r = s.get("/response");
    assert_eq!(r.status, 203);
    assert_eq!(r.header("Content-Type"), Some("text/html"));
    assert_eq!(r.header("X-A"), Some("1"));
    assert_eq!(r.text(), "<b>hi</b>");
}

#[test]
fn http_error_sets_status() {
    let s = server();
    let r = s.get("/teapot");
    assert_eq!((r.status, r.text().as_str()), (418, "short and stout\n"));
}

#[test]
fn exception_is_500_logged_and_connection_stays_usable() {
    let s = server();
    let mut c = s.connect();
    c.send(b"GET /boom HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_response();
    assert_eq!((r.status, r.text().as_str()), (500, "Internal Server Error\n"));
    assert_eq!(r.header("Connection"), None);
    c.send(b"GET /text HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read_response().status, 200);
    s.wait_stderr("ValueError: kaboom", 5);
    let err = s.stderr();
    assert!(err.contains("route /boom (main.Api.boom) raised"), "{err}");
    assert!(err.contains("Traceback"), "{err}");
}

#[test]
fn unsupported_return_and_bad_status_are_500() {
    let s = server();
    assert_eq!(s.get("/junk").status, 500);
    assert_eq!(s.get("/bad_status").status, 500);
    s.wait_stderr("unsupported return type object", 5);
}

#[test]
fn header_with_crlf_is_never_sent() {
    let s = server();
    let mut c = s.connect();
    c.send(b"GET /crlf HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 500);
    assert!(r.header("Injected").is_none() && r.header("X-Evil").is_none());
    s.wait_stderr("invalid response header \"X-Evil\"", 5);
    c.send(b"GET /text HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read_response().status, 200);
}

#[test]
fn header_values_are_latin_1_both_ways() {
    // Request header values reach Python as Latin-1 text (one char per
    // byte): a value sent back is the same bytes, not their UTF-8.
    let s = server();
    let mut c = s.connect();
    c.send(b"GET /echo_header HTTP/1.1\r\nHost: t\r\nX-In: caf\xe9\r\nConnection: close\r\n\r\n");
    let out = c.read_to_close();
    let has = |needle: &[u8]| out.windows(needle.len()).any(|w| w == needle);
    assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"), "{}", String::from_utf8_lossy(&out));
    assert!(has(b"\r\nX-Echo: caf\xe9\r\n"), "{}", String::from_utf8_lossy(&out));
    assert!(has(b"\r\nContent-Type: text/plain; name=caf\xe9\r\n"), "{}", String::from_utf8_lossy(&out));
    // A character Latin-1 cannot encode is refused like a CR: a logged 500.
    let r = s.get("/euro_header");
    assert_eq!((r.status, r.header("X-Price")), (500, None));
    s.wait_stderr("invalid response header \"X-Price\"", 5);
}

#[test]
fn routes_share_one_instance() {
    let s = server();
    assert_eq!(s.get("/count1").text(), "1");
    assert_eq!(s.get("/count2").text(), "2");
    assert_eq!(s.get("/count1").text(), "3");
}

#[test]
fn text_and_binary_bodies_round_trip() {
    let s = server();
    let text = "Übersetzung: ça marche — 日本語 ✓";
    let r = s.post("/echo_text", text.as_bytes());
    assert_eq!(r.text(), text);
    let binary: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let r = s.post("/echo", &binary);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, binary);
}

#[test]
fn request_fields() {
    let s = server();
    let r = s.request(
        "GET /inspect/a%20b?x=1&y=caf%C3%A9&x=2&z=a+b HTTP/1.1\r\nHost: example\r\nX-Multi: 1\r\nx-multi: 2\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/inspect/a%20b");
    assert_eq!(v["query_string"], "x=1&y=caf%C3%A9&x=2&z=a+b");
    assert_eq!(v["query"], serde_json::json!({"x": "1", "y": "café", "z": "a b"}));
    assert_eq!(v["host"], "example");
    assert_eq!(v["x_multi"], serde_json::json!(["1", "2"]));
    assert_eq!(v["has_missing"], false);
    assert_eq!(v["params"], serde_json::json!({"id": "a b"}));
    assert_eq!(v["remote_addr"], "127.0.0.1");
    assert_eq!(v["http_version"], "HTTP/1.1");
}

#[test]
fn json_body_and_invalid_json_is_400() {
    let s = server();
    let r = s.post("/json", r#"{"k": [1, "é"]}"#.as_bytes());
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), r#"{"got":{"k":[1,"é"]}}"#);
    let r = s.post("/json", b"{nope");
    assert_eq!(r.status, 400);
    assert!(r.text().starts_with("invalid JSON body"), "{}", r.text());
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let s = server();
    let mut c = s.connect();
    c.send(b"GET /count1 HTTP/1.1\r\nHost: t\r\n\r\nPOST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabcGET /created HTTP/1.1\r\nHost: t\r\n\r\n");
    let a = c.read_response();
    let b = c.read_response();
    let d = c.read_response();
    assert_eq!((a.status, a.text().as_str()), (200, "1"));
    assert_eq!((b.status, b.text().as_str()), (200, "abc"));
    assert_eq!((d.status, d.text().as_str()), (201, "made"));
}

#[test]
fn unknown_path_is_404() {
    let s = server();
    let r = s.get("/nope");
    assert_eq!((r.status, r.text().as_str()), (404, "Not Found\n"));
}

#[test]
fn a_handler_can_close_the_connection() {
    let s = server();
    let mut c = s.connect();
    c.send(b"GET /bye HTTP/1.1\r\nHost: t\r\n\r\nGET /text HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_response();
    assert_eq!((r.status, r.text().as_str()), (200, "bye"));
    assert_eq!(r.header("Connection"), Some("close"));
    // The pipelined second request is not answered: the connection closes.
    assert!(c.is_closed());
}
