//! Response helpers through the real binary: several Set-Cookie headers,
//! pyrs.redirect, HTTPError without a message, a handler's Server header,
//! and `server_header: false`.

mod common;
use common::*;

const API: &str = r#"
import datetime
import pyrs

class Api:
    def cookies(self, request):
        r = pyrs.Response("ok", headers={"X-A": "1"})
        r.set_cookie("sid", "abc123", httponly=True, max_age=3600)
        r.set_cookie("theme", "dark", path="/app", samesite=None,
                     expires=datetime.datetime(2015, 10, 21, 7, 28, tzinfo=datetime.timezone.utc))
        r.delete_cookie("old")
        return r

    def bad_cookie(self, request):
        r = pyrs.Response("ok")
        try:
            r.set_cookie("a", "x;y")
        except ValueError as e:
            return str(e)
        return "accepted"

    def go(self, request):
        return pyrs.redirect("/there?x=1")

    def moved(self, request):
        return pyrs.redirect("https://example.com/", status=301)

    def bad_redirect(self, request):
        return pyrs.redirect("/x", status=200)

    def missing(self, request):
        raise pyrs.HTTPError(404)

    def teapot(self, request):
        raise pyrs.HTTPError(418)

    def server(self, request):
        return ("hi", 200, {"Server": "mine/1.0"})
"#;

fn project(extra: &str) -> Project {
    Project::simple(
        API,
        &[
            ("/cookies", "cookies"),
            ("/bad_cookie", "bad_cookie"),
            ("/go", "go"),
            ("/moved", "moved"),
            ("/bad_redirect", "bad_redirect"),
            ("/missing", "missing"),
            ("/teapot", "teapot"),
            ("/server", "server"),
        ],
        extra,
    )
}

fn all<'r>(r: &'r Response, name: &str) -> Vec<&'r str> {
    r.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
}

#[test]
fn set_and_delete_cookies_send_one_header_each() {
    let p = project("");
    let s = Server::start(&p, &[]);
    let r = s.get("/cookies");
    assert_eq!((r.status, r.text()), (200, "ok".to_string()));
    assert_eq!(r.header("x-a"), Some("1"));
    assert_eq!(
        all(&r, "set-cookie"),
        [
            "sid=abc123; HttpOnly; SameSite=Lax; Path=/; Max-Age=3600",
            "theme=dark; Path=/app; Expires=Wed, 21 Oct 2015 07:28:00 GMT",
            "old=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        ]
    );
    let r = s.get("/bad_cookie");
    assert!(r.text().starts_with("cookie value \"x;y\" may hold only"), "{}", r.text());
}

#[test]
fn redirects_and_reason_phrases() {
    let p = project("");
    let s = Server::start(&p, &[]);
    let r = s.get("/go");
    assert_eq!((r.status, r.header("location"), r.body.len()), (302, Some("/there?x=1"), 0));
    assert_eq!(r.header("content-length"), Some("0"));
    assert_eq!(r.header("content-type"), None);
    let r = s.get("/moved");
    assert_eq!((r.status, r.header("location")), (301, Some("https://example.com/")));
    assert_eq!(s.get("/bad_redirect").status, 500);
    s.wait_stderr("redirect status must be 301, 302, 303, 307 or 308, not 200", 10);
    let r = s.get("/missing");
    assert_eq!((r.status, r.text()), (404, "Not Found\n".to_string()));
    let r = s.get("/teapot");
    assert_eq!((r.status, r.text()), (418, "I'm a teapot\n".to_string()));
}

#[test]
fn server_header_replaced_or_dropped() {
    let p = project("");
    let s = Server::start(&p, &[]);
    assert_eq!(all(&s.get("/server"), "server"), ["mine/1.0"]);
    assert_eq!(all(&s.get("/go"), "server"), ["pyrs"]);
    assert_eq!(all(&s.get("/nowhere"), "server"), ["pyrs"]);
    drop(s);
    let p = project("\"server_header\": false,");
    let s = Server::start(&p, &[]);
    assert_eq!(all(&s.get("/go"), "server"), Vec::<&str>::new());
    assert_eq!(all(&s.get("/nowhere"), "server"), Vec::<&str>::new());
    assert_eq!(all(&s.get("/server"), "server"), ["mine/1.0"]);
}
