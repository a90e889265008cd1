//! pyrs.FileResponse and static directory routes through the real binary:
//! validators, 304, ranges, Content-Disposition, traversal attempts, and
//! flat memory while large files go to slow clients.

mod common;
use common::*;
use std::io::Read;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const API: &str = r#"
import os
import pyrs

HERE = os.path.dirname(os.path.abspath(__file__))

class Api:
    def data(self, request):
        return pyrs.FileResponse(os.path.join(HERE, "public", "data.txt"))

    def download(self, request):
        return pyrs.FileResponse(os.path.join(HERE, "public", "data.txt"), filename="résumé 1.txt",
                                 content_type="application/x-custom", headers={"X-Extra": "1"})

    def evil_type(self, request):
        return pyrs.FileResponse(os.path.join(HERE, "public", "data.txt"), content_type="text/plain\r\nInjected: 1")

    def bad_status(self, request):
        f = pyrs.FileResponse(os.path.join(HERE, "public", "data.txt"))
        f.status = int(request.query["s"])
        return f

    def missing(self, request):
        return pyrs.FileResponse(os.path.join(HERE, "nope.bin"))

    def huge(self, request):
        return pyrs.FileResponse(os.path.join(HERE, "huge.bin"))
"#;

const DATA: &str = "0123456789abcdefghij";

fn project() -> Project {
    let routes = r#"
  "modules": [
    {"path": "/data", "module": "main", "class": "Api", "handler": "data"},
    {"path": "/download", "module": "main", "class": "Api", "handler": "download"},
    {"path": "/evil_type", "module": "main", "class": "Api", "handler": "evil_type"},
    {"path": "/bad_status", "module": "main", "class": "Api", "handler": "bad_status"},
    {"path": "/missing", "module": "main", "class": "Api", "handler": "missing"},
    {"path": "/huge", "module": "main", "class": "Api", "handler": "huge"},
    {"path": "/static/*", "static": "public"},
  ]"#;
    let p = Project::new(&[
        ("main.py", API),
        ("project.pyrs", &format!("{{ \"thread_count\": 2, {routes} }}")),
        ("public/data.txt", DATA),
        ("public/style.css", "body{}"),
        ("public/docs/index.html", "<h1>docs</h1>"),
        ("public/noindex/x.js", "x"),
        ("public/.env", "SECRET=1"),
        ("public/a b.txt", "spaced"),
        ("secret.txt", "top secret"),
    ]);
    std::os::unix::fs::symlink(p.dir.join("secret.txt"), p.dir.join("public/escape.txt")).unwrap();
    std::os::unix::fs::symlink(p.dir.join("public/style.css"), p.dir.join("public/alias.css")).unwrap();
    p
}

fn req(s: &Server, raw: &str) -> Response {
    let mut c = s.connect();
    c.head_request = raw.starts_with("HEAD");
    c.send(raw.as_bytes());
    c.read_response()
}

#[test]
fn file_responses_carry_validators_and_answer_conditions_and_ranges() {
    let p = project();
    let s = Server::start(&p, &[]);
    let r = s.get("/data");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), DATA);
    assert_eq!(r.header("content-length"), Some("20"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    let etag = r.header("etag").unwrap().to_string();
    let modified = r.header("last-modified").unwrap().to_string();
    assert!(etag.starts_with('"') && modified.ends_with(" GMT"), "{etag} {modified}");

    let r = req(&s, &format!("GET /data HTTP/1.1\r\nHost: h\r\nIf-None-Match: {etag}\r\n\r\n"));
    assert_eq!((r.status, r.body.len(), r.header("etag")), (304, 0, Some(etag.as_str())));
    let r = req(&s, &format!("GET /data HTTP/1.1\r\nHost: h\r\nIf-Modified-Since: {modified}\r\n\r\n"));
    assert_eq!(r.status, 304);
    let r = req(&s, "GET /data HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"other\"\r\n\r\n");
    assert_eq!(r.status, 200);
    // A list split over several field lines is one list.
    let split =
        format!("GET /data HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"a\"\r\nIf-None-Match: \"b\", W/{etag}\r\n\r\n");
    assert_eq!(req(&s, &split).status, 304);

    let r = req(&s, "GET /data HTTP/1.1\r\nHost: h\r\nRange: bytes=2-5\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (206, "2345"));
    assert_eq!(r.header("content-range"), Some("bytes 2-5/20"));
    let r = req(&s, "GET /data HTTP/1.1\r\nHost: h\r\nRange: bytes=-3\r\n\r\n");
    assert_eq!((r.status, r.text().as_str(), r.header("content-range")), (206, "hij", Some("bytes 17-19/20")));
    let r = req(&s, "GET /data HTTP/1.1\r\nHost: h\r\nRange: bytes=20-\r\n\r\n");
    assert_eq!((r.status, r.header("content-range")), (416, Some("bytes */20")));
    let r = req(&s, "GET /data HTTP/1.1\r\nHost: h\r\nRange: bytes=0-1,4-5\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, DATA), "several ranges: the whole file");
    let r = req(&s, "GET /data HTTP/1.1\r\nHost: h\r\nRange: bytes=0-1\r\nIf-Range: \"stale\"\r\n\r\n");
    assert_eq!(r.status, 200);
    // Positions past u64 (more than 19 digits): still a range, against a file that is far smaller.
    let r = req(&s, "GET /data HTTP/1.1\r\nHost: h\r\nRange: bytes=5-99999999999999999999999\r\n\r\n");
    assert_eq!(
        (r.status, r.text().as_str(), r.header("content-range")),
        (206, "56789abcdefghij", Some("bytes 5-19/20"))
    );
    let r = req(&s, "GET /data HTTP/1.1\r\nHost: h\r\nRange: bytes=99999999999999999999999-\r\n\r\n");
    assert_eq!((r.status, r.header("content-range")), (416, Some("bytes */20")));
    let r = req(&s, "GET /data HTTP/1.1\r\nHost: h\r\nRange: bytes=-99999999999999999999999\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (206, DATA));

    let r = req(&s, "HEAD /data HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((r.status, r.header("content-length"), r.body.len()), (200, Some("20"), 0));

    let r = s.get("/download");
    assert_eq!(r.text(), DATA);
    assert_eq!(r.header("content-type"), Some("application/x-custom"));
    assert_eq!(r.header("x-extra"), Some("1"));
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"r_sum_ 1.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9%201.txt")
    );

    let r = s.get("/missing");
    assert_eq!(r.status, 404);
    s.wait_stderr("nope.bin", 30);
}

#[test]
fn a_content_type_with_crlf_or_a_bad_status_is_never_sent() {
    let p = project();
    let s = Server::start(&p, &[]);
    let mut c = s.connect();
    c.send(b"GET /evil_type HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 500);
    assert!(r.header("Injected").is_none(), "{:?}", r.headers);
    s.wait_stderr("invalid response header \"Content-Type\"", 5);
    c.send(b"GET /data HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read_response().status, 200);
    // A status set after construction is checked when sent, like pyrs.Response's.
    for bad in ["42", "101"] {
        c.send(format!("GET /bad_status?s={bad} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let r = c.read_response();
        assert_eq!(r.status, 500, "status {bad}");
        assert_eq!(r.text(), "Internal Server Error\n", "status {bad}");
    }
    s.wait_stderr("status 42 is not a final HTTP status", 5);
    // 206 and 416 need a Content-Range only pyrs can write (from the request's Range).
    for partial in ["206", "416"] {
        c.send(format!("GET /bad_status?s={partial} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let r = c.read_response();
        assert_eq!((r.status, r.header("content-range")), (500, None), "status {partial}");
    }
    s.wait_stderr("status 206 is answered by pyrs from the request's Range header", 5);
    c.send(b"GET /bad_status?s=203 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read_response().status, 203);
}

#[test]
fn a_fifo_is_refused_without_waiting_for_a_writer() {
    // Before: open(2) of a FIFO waited for a writer, and the thread with it.
    let p = project();
    let fifo = p.dir.join("public/pipe");
    let ok = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo (coreutils)");
    assert!(ok.success());
    let s = Server::start(&p, &["--threads", "1"]);
    assert_eq!(s.get("/static/pipe").status, 404);
    assert_eq!(s.get("/static/style.css").status, 200);
}

#[test]
fn static_routes_serve_the_directory_and_nothing_outside_it() {
    let p = project();
    let s = Server::start(&p, &[]);
    let r = s.get("/static/style.css");
    assert_eq!((r.status, r.text().as_str()), (200, "body{}"));
    assert_eq!(r.header("content-type"), Some("text/css; charset=utf-8"));
    assert!(r.header("etag").is_some());
    assert_eq!(s.get("/static/alias.css").text(), "body{}", "a symlink inside the directory is served");
    assert_eq!(s.get("/static/a%20b.txt").text(), "spaced");
    let r = s.get("/static/docs/");
    assert_eq!((r.status, r.header("content-type")), (200, Some("text/html; charset=utf-8")));
    assert_eq!(r.text(), "<h1>docs</h1>");
    let r = s.get("/static/docs?x=1");
    assert_eq!((r.status, r.header("location")), (301, Some("/static/docs/?x=1")));
    let r = req(&s, "GET /static/data.txt HTTP/1.1\r\nHost: h\r\nRange: bytes=10-\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (206, "abcdefghij"));

    for path in [
        "/static/",
        "/static/noindex/",
        "/static/nothing.txt",
        "/static/.env",
        "/static/escape.txt",
        "/static/../secret.txt",
        "/static/docs/../../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/%2E%2E/secret.txt",
        "/static/docs%2f..%2f..%2fsecret.txt",
        "/static/..%2fsecret.txt",
        "/static/..%5csecret.txt",
        "/static/data.txt%00.css",
        "/static/data.txt/",
        "/static/style.css//",
    ] {
        let r = s.get(path);
        assert_eq!(r.status, 404, "{path}: {}", String::from_utf8_lossy(&r.body));
        assert!(!String::from_utf8_lossy(&r.body).contains("secret"), "{path}");
    }
    let r = s.post("/static/data.txt", b"x");
    assert_eq!(r.status, 405);
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_gigabyte_to_four_slow_clients_keeps_memory_flat() {
    const SIZE: u64 = 1 << 30;
    let p = project();
    // Sparse: no disk space used.
    std::fs::File::create(p.dir.join("huge.bin")).unwrap().set_len(SIZE).unwrap();
    let s = Server::start(&p, &[]);
    assert_eq!(s.get("/data").status, 200);
    let pid = s.child.id();
    let before = rss_kb(pid);
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(rss_kb(pid));
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            peak
        })
    };
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let addr = s.addr;
            std::thread::spawn(move || {
                let mut c = connect(addr).unwrap();
                c.set_read_timeout(Some(RESPONSE_WAIT)).unwrap();
                c.write_all(b"GET /huge HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0u64;
                let mut head_len = None;
                let mut head = Vec::new();
                loop {
                    let n = read_retry(&mut c, &mut buf).unwrap();
                    assert!(n > 0, "EOF after {total} bytes");
                    total += n as u64;
                    if head_len.is_none() {
                        head.extend_from_slice(&buf[..n]);
                        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                            let text = String::from_utf8_lossy(&head[..i]).to_string();
                            assert!(text.contains("Content-Length: 1073741824"), "{text}");
                            head_len = Some(i as u64 + 4);
                        }
                    }
                    if head_len.is_some_and(|h| total >= h + SIZE) {
                        assert_eq!(total, head_len.unwrap() + SIZE);
                        break;
                    }
                    // A slow reader: a pause between reads.
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
                let _ = c.read(&mut [0u8; 1]);
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    let grown_mb = peak.saturating_sub(before) / 1024;
    eprintln!("RSS before {before} kB, peak {peak} kB while sending 4 x 1 GiB");
    assert!(grown_mb < 10, "RSS grew {grown_mb} MB while sending 4 x 1 GiB");
    assert_eq!(s.get("/data").text(), DATA);
}
