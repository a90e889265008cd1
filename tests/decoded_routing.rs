//! Routing on the decoded path through the real binary: percent-encoded
//! characters match their plain form, `%2F` never splits or joins segments,
//! dot segments are removed, and traversal attempts never reach `{name}`.

mod common;
use common::*;

const API: &str = r#"
class Api:
    def info(self, request):
        return {"route": "info", "path": request.path}

    def file(self, request):
        return {"route": "file", "name": request.params["name"], "path": request.path}

    def static(self, request):
        return {"route": "static", "path": request.path}

    def ab(self, request):
        return {"route": "a/b"}
"#;

fn json(r: &Response) -> serde_json::Value {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn decoded_path_routing_and_traversal() {
    let p = Project::simple(
        API,
        &[("/info", "info"), ("/files/{name}", "file"), ("/static/*", "static"), ("/a/b", "ab")],
        "",
    );
    let s = Server::start(&p, &[]);
    // Unreserved characters percent-encoded match their plain form; request.path stays as sent.
    assert_eq!(json(&s.get("/%69nfo")), serde_json::json!({"route": "info", "path": "/%69nfo"}));
    assert_eq!(json(&s.get("/%73tatic/x.css"))["route"], "static");
    assert_eq!(json(&s.get("/files/caf%C3%A9"))["name"], "café");
    // An encoded slash neither joins ...
    assert_eq!(s.get("/a%2Fb").status, 404);
    // ... nor splits segments, and stays encoded in a parameter.
    let v = json(&s.get("/files/..%2F..%2Fetc%2Fpasswd"));
    assert_eq!(v["name"], "..%2F..%2Fetc%2Fpasswd");
    assert!(!v["name"].as_str().unwrap().contains('/'));
    assert_eq!(s.get("/files/a%2Fb/c").status, 404);
    // Dot segments are removed before routing: `..` never arrives as a parameter.
    for path in
        ["/files/..", "/files/%2e%2e", "/files/.%2E", "/files/../../etc/passwd", "/files/%2E%2E/%2E%2E/etc/passwd"]
    {
        assert_eq!(s.get(path).status, 404, "{path}");
    }
    assert_eq!(json(&s.get("/files/x/../y"))["name"], "y");
    assert_eq!(json(&s.get("/static/../info"))["route"], "info");
    assert_eq!(s.get("/static/../../etc/passwd").status, 404);
}
