//! What handlers read from a request beyond the raw fields: forms (urlencoded
//! and multipart, uploaded with the real `curl -F`), uploaded files (in memory
//! and spooled to disk), cookies, repeated query names, url/scheme/host.

mod common;
use common::*;
use std::process::Command;

const API: &str = r#"
import json
import pyrs

class Api:
    def form(self, request):
        return {"form": request.form, "all": request.form_all, "files": sorted(request.files)}

    def files(self, request):
        out = {}
        for name, ups in request.files_all.items():
            out[name] = []
            for f in ups:
                first = f.read(3)
                f.seek(0)
                whole = f.read()
                out[name].append({
                    "name": f.name, "filename": f.filename, "content_type": f.content_type,
                    "size": f.size, "same": f.data == whole and whole[:3] == first and f.tell() == f.size,
                    "head": f.data[:16].decode("latin-1"),
                })
        return {"form": request.form, "files": out}

    def save(self, request):
        f = request.files["f"]
        path = request.query["to"]
        f.save(path)
        with open(path, "rb") as fh:
            return {"size": f.size, "saved": len(fh.read())}

    def catch(self, request):
        try:
            request.form
        except pyrs.HTTPError as e:
            return {"status": e.status, "message": e.message}
        return "parsed"

    def cookies(self, request):
        return request.cookies

    def query(self, request):
        return {"first": request.query, "all": request.query_all}

    def where(self, request):
        return {"url": request.url, "scheme": request.scheme, "host": request.host}
"#;

fn server() -> (Project, Server) {
    let p = Project::simple(
        API,
        &[
            ("/form", "form"),
            ("/files", "files"),
            ("/save", "save"),
            ("/catch", "catch"),
            ("/cookies", "cookies"),
            ("/query", "query"),
            ("/where", "where"),
        ],
        "",
    );
    let s = Server::start(&p, &[]);
    (p, s)
}

fn json(r: &Response) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&r.body)))
}

fn post(s: &Server, path: &str, content_type: &str, body: &[u8]) -> Response {
    let mut c = s.connect();
    c.send(
        format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    c.send(body);
    c.read_response()
}

/// Runs curl against the server; returns (status, body).
fn curl(s: &Server, path: &str, args: &[&str]) -> (u16, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .arg(format!("http://{}{path}", s.addr))
        .output()
        .expect("curl is missing: run tests/setup.sh");
    assert!(out.status.success(), "curl failed: {}", String::from_utf8_lossy(&out.stderr));
    let split = out.stdout.iter().rposition(|&b| b == b'\n').unwrap();
    let status = std::str::from_utf8(&out.stdout[split + 1..]).unwrap().parse().unwrap();
    (status, out.stdout[..split].to_vec())
}

#[test]
fn urlencoded_form_first_and_all_values() {
    let (_p, s) = server();
    let r = post(&s, "/form", "application/x-www-form-urlencoded", b"a=1&b=x+y%21&a=2&caf%C3%A9=%E2%9C%93");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        json(&r),
        serde_json::json!({"form": {"a": "1", "b": "x y!", "café": "✓"},
                           "all": {"a": ["1", "2"], "b": ["x y!"], "café": ["✓"]}, "files": []})
    );
    // Not a form: empty, not an error.
    let r = post(&s, "/form", "application/json", b"{\"a\": 1}");
    assert_eq!(json(&r), serde_json::json!({"form": {}, "all": {}, "files": []}));
}

#[test]
fn curl_multipart_upload_fields_and_files() {
    let (p, s) = server();
    let small = p.dir.join("small.txt");
    std::fs::write(&small, b"hello upload\n").unwrap();
    let bin = p.dir.join("data.bin");
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&bin, &blob).unwrap();
    let (status, body) = curl(
        &s,
        "/files",
        &[
            "-F",
            "title=Hello wörld",
            "-F",
            &format!("doc=@{};type=text/plain", small.display()),
            "-F",
            &format!("doc=@{}", bin.display()),
        ],
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["form"], serde_json::json!({"title": "Hello wörld"}));
    let docs = v["files"]["doc"].as_array().unwrap();
    assert_eq!(docs.len(), 2);
    assert_eq!(
        docs[0],
        serde_json::json!({"name": "doc", "filename": "small.txt", "content_type": "text/plain",
                           "size": 13, "same": true, "head": "hello upload\n"})
    );
    assert_eq!(docs[1]["filename"], "data.bin");
    assert_eq!(docs[1]["content_type"], "application/octet-stream");
    assert_eq!(docs[1]["size"], 200_000);
    assert_eq!(docs[1]["same"], true);
}

#[test]
fn large_upload_is_spooled_and_saved_intact() {
    let (p, s) = server();
    let big = p.dir.join("big.bin");
    // Past the 1 MiB spool threshold.
    let blob: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    std::fs::write(&big, &blob).unwrap();
    let dest = p.dir.join("saved.bin");
    let (status, body) = curl(&s, &format!("/save?to={}", dest.display()), &["-F", &format!("f=@{}", big.display())]);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v, serde_json::json!({"size": 3_000_000, "saved": 3_000_000}));
    assert_eq!(std::fs::read(&dest).unwrap(), blob);
    let (status, body) = curl(&s, "/files", &["-F", &format!("f=@{}", big.display())]);
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["files"]["f"][0]["same"], true);
    assert_eq!(v["files"]["f"][0]["size"], 3_000_000);
}

#[test]
fn malformed_multipart_is_400_with_a_clear_message() {
    let (_p, s) = server();
    let bad: &[(&str, &[u8])] = &[
        ("multipart/form-data; boundary=XX", b"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end"),
        ("multipart/form-data; boundary=XX", b"not multipart at all"),
        ("multipart/form-data", b"--XX\r\n\r\n--XX--\r\n"),
    ];
    for (ct, body) in bad {
        let r = post(&s, "/form", ct, body);
        assert_eq!(r.status, 400, "{ct} {:?}: {}", String::from_utf8_lossy(body), r.text());
        assert!(r.text().starts_with("malformed form body: "), "{}", r.text());
        let r = post(&s, "/catch", ct, body);
        assert_eq!(r.status, 200);
        assert_eq!(json(&r)["status"], 400);
    }
    assert!(!s.stderr().contains("Traceback"), "{}", s.stderr());
}

#[test]
fn too_many_parts_is_413() {
    let (_p, s) = server();
    let body = "a=1&".repeat(1001);
    let r = post(&s, "/form", "application/x-www-form-urlencoded", body.as_bytes());
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.text(), "form has more than 1000 parts\n");
    let body = "a=1&".repeat(1000);
    assert_eq!(post(&s, "/form", "application/x-www-form-urlencoded", body.as_bytes()).status, 200);
}

#[test]
fn cookies_first_value_wins_quotes_removed() {
    let (_p, s) = server();
    let r =
        s.request("GET /cookies HTTP/1.1\r\nHost: t\r\nCookie: sid=abc123; theme=\"dark\"; sid=later; junk\r\n\r\n");
    assert_eq!(json(&r), serde_json::json!({"sid": "abc123", "theme": "dark"}));
    assert_eq!(json(&s.get("/cookies")), serde_json::json!({}));
    let (status, body) = curl(&s, "/cookies", &["-b", "a=1; b=2"]);
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap(), serde_json::json!({"a": "1", "b": "2"}));
}

#[test]
fn query_all_keeps_every_value() {
    let (_p, s) = server();
    let r = s.get("/query?tag=a&tag=b+c&x=%2F&tag=&empty");
    assert_eq!(
        json(&r),
        serde_json::json!({"first": {"tag": "a", "x": "/", "empty": ""},
                           "all": {"tag": ["a", "b c", ""], "x": ["/"], "empty": [""]}})
    );
}

#[test]
fn url_scheme_host() {
    let (_p, s) = server();
    let r = s.request("GET /where?q=1 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n");
    assert_eq!(
        json(&r),
        serde_json::json!({"url": "http://example.com:8080/where?q=1", "scheme": "http", "host": "example.com:8080"})
    );
    let r = s.request("GET /where HTTP/1.0\r\n\r\n");
    assert_eq!(json(&r), serde_json::json!({"url": "http:///where", "scheme": "http", "host": ""}));
}
