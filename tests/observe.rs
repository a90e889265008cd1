//! Observability of a single process: the access log (every response,
//! Python's and the core's, escaped; json and custom formats; SIGUSR1
//! reopens), request ids, Python logging in pyrs's log, /metrics parsed by
//! prometheus_client with counts equal to what was sent, /healthz, /readyz
//! (starting, serving, draining), health_path, the status page, and the
//! admin listener's loopback rule.

mod common;
mod observe_support;
use common::*;
use observe_support::*;

const API: &str = r#"
import logging, os, time, warnings

HERE = os.path.dirname(os.path.abspath(__file__))

class Api:
    def hello(self, request):
        return "world"

    def fail(self, request):
        raise ValueError("boom")

    def teapot(self, request):
        return ("no", 418)

    def rid(self, request):
        return request.id

    def wait(self, request):
        open(os.path.join(HERE, "started"), "w").close()
        while not os.path.exists(os.path.join(HERE, "go")):
            time.sleep(0.01)
        return "done"

    def logs(self, request):
        log = logging.getLogger("myapp")
        log.warning("careful %s", 42)
        log.debug("hidden detail")
        warnings.warn("old api")
        print("printed line", flush=True)
        return "logged"
"#;

fn project(extra: &str) -> Project {
    let route = |path: &str, handler: &str, methods: &str| {
        format!(r#"{{"path": "{path}", "module": "main", "class": "Api", "handler": "{handler}"{methods}}}"#)
    };
    let routes = [
        route("/hello", "hello", r#", "methods": ["GET"]"#),
        route("/fail", "fail", ""),
        route("/teapot", "teapot", ""),
        route("/rid", "rid", ""),
        route("/wait", "wait", ""),
        route("/logs", "logs", ""),
    ];
    let pyrs = format!("{{\n{extra}\n\"modules\": [{}]\n}}\n", routes.join(",\n"));
    Project::new(&[("main.py", API), ("project.pyrs", &pyrs)])
}

fn send_raw(s: &Server, raw: &[u8]) -> Response {
    let mut c = s.connect();
    c.send(raw);
    c.read_response()
}

#[test]
fn metrics_count_exactly_what_was_sent() {
    let p = project("");
    let s = Server::start(&p, &["--admin", "127.0.0.1:0"]);
    let admin = admin_addr(&s);
    for _ in 0..5 {
        assert_eq!(s.get("/hello").text(), "world");
    }
    let failed = s.get("/fail");
    assert_eq!(failed.status, 500);
    let failed_id = failed.header("X-Request-Id").unwrap().to_string();
    assert_eq!(s.get("/fail").status, 500);
    assert_eq!(s.get("/teapot").status, 418);
    for _ in 0..3 {
        assert_eq!(s.get("/nope").status, 404);
    }
    assert_eq!(s.post("/hello", b"x").status, 405);
    assert_eq!(send_raw(&s, b"GET  / HTTP/1.1\r\nHost: t\r\n\r\n").status, 400);

    let m = metrics(admin);
    let req = |route: &str, class: &str| value(&m, "pyrs_requests_total", &[("route", route), ("status", class)]);
    assert_eq!(req("/hello", "2xx"), 5.0);
    assert_eq!(req("/fail", "5xx"), 2.0);
    assert_eq!(req("/teapot", "4xx"), 1.0);
    // 3 x 404, the 405 and the 400 matched no route.
    assert_eq!(req("unmatched", "4xx"), 5.0);
    let total: f64 = all(&m, "pyrs_requests_total").iter().map(|s| s.value).sum();
    assert_eq!(total, 13.0);
    assert_eq!(
        value(&m, "pyrs_requests_total", &[("route", "/hello"), ("handler", "main.Api.hello"), ("status", "2xx")]),
        5.0
    );
    assert_eq!(value(&m, "pyrs_request_duration_seconds_count", &[("route", "/hello")]), 5.0);
    assert_eq!(value(&m, "pyrs_request_duration_seconds_bucket", &[("route", "/hello"), ("le", "+Inf")]), 5.0);
    assert!(value(&m, "pyrs_request_duration_seconds_sum", &[("route", "/hello")]) > 0.0);
    assert_eq!(value(&m, "pyrs_handler_exceptions_total", &[("route", "/fail")]), 2.0);
    assert_eq!(value(&m, "pyrs_handler_exceptions_total", &[("route", "/teapot")]), 0.0);
    assert_eq!(value(&m, "pyrs_protocol_errors_total", &[("status", "400")]), 1.0);
    assert_eq!(value(&m, "pyrs_requests_in_flight", &[]), 0.0);
    assert_eq!(value(&m, "pyrs_workers_up", &[]), 1.0);
    assert!(value(&m, "pyrs_received_bytes_total", &[]) >= 13.0 * 30.0);
    assert!(value(&m, "pyrs_sent_bytes_total", &[]) >= 13.0 * 100.0);
    assert!(value(&m, "pyrs_gil_wait_seconds_total", &[]) >= 0.0);
    for name in ["pyrs_open_connections", "pyrs_access_log_dropped_lines_total", "pyrs_log_dropped_lines_total"] {
        assert_eq!(all(&m, name).len(), 1, "{name}");
    }
    let pid = s.child.id().to_string();
    assert!(value(&m, "pyrs_worker_resident_memory_bytes", &[("pid", &pid)]) > 1e6);
    assert!(value(&m, "pyrs_worker_private_memory_bytes", &[("pid", &pid)]) > 0.0);

    // The status page names the failing route, its traceback and request id.
    let page = get(admin, "/");
    assert_eq!(page.status, 200);
    assert_eq!(page.header("Content-Type"), Some("text/html; charset=utf-8"));
    let html = page.text();
    assert!(html.contains("http-equiv=\"refresh\"") && !html.contains("<script src") && !html.contains("href=\"http"));
    let still = get(admin, "/?refresh=0").text();
    assert!(!still.contains("http-equiv") && still.contains("ValueError: boom"), "{still}");
    assert!(html.contains(&format!("data-pid=\"{pid}\"")), "{html}");
    assert!(html.contains("ValueError: boom") && html.contains(&failed_id), "{html}");
    // The traceback in the log carries the request id too.
    s.wait_stderr(&format!("rid={failed_id}"), 10);
    assert_eq!(get(admin, "/nope").status, 404);
}

#[test]
fn access_log_has_a_line_per_response_with_client_bytes_escaped() {
    let p = project("\"max_body_bytes\": 10, \"max_headers\": 8, \"header_timeout\": 1,");
    let log = p.dir.join("access.log");
    let s = Server::start(&p, &["--access-log", log.to_str().unwrap()]);
    let ok = send_raw(
        &s,
        b"GET /hello?x=1 HTTP/1.1\r\nHost: t\r\nUser-Agent: ua \"q\" \\ \xff\r\nReferer: http://r/\r\n\r\n",
    );
    assert_eq!(ok.status, 200);
    let rid = ok.header("X-Request-Id").unwrap().to_string();
    assert_eq!(s.get("/nope").status, 404);
    assert_eq!(s.post("/hello", b"").status, 405);
    assert_eq!(send_raw(&s, b"GET  / HTTP/1.1\r\nHost: t\r\n\r\n").status, 400);
    assert_eq!(s.post("/teapot", &[b'x'; 20]).status, 413);
    let many: String = (0..10).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_eq!(send_raw(&s, format!("GET /hello HTTP/1.1\r\nHost: t\r\n{many}\r\n").as_bytes()).status, 431);
    // A head that never completes gets 408 after header_timeout.
    let mut slow = s.connect();
    slow.send(b"GET /hello HTTP/1.1\r\nHost: t\r\n");
    assert_eq!(slow.read_response().status, 408);

    let lines = wait_lines(&log, 7);
    assert_eq!(lines.len(), 7, "{lines:#?}");
    let first = lines.iter().find(|l| l.contains("/hello?x=1")).unwrap();
    let re_prefix = "127.0.0.1 - - [";
    assert!(first.starts_with(re_prefix), "{first}");
    let after_time = &first[first.find("] ").unwrap() + 2..];
    let (duration, tail) = after_time.rsplit_once("us rid=").unwrap();
    assert_eq!(tail, rid);
    let duration: u64 = duration.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(duration > 0);
    assert!(
        after_time.starts_with(r#""GET /hello?x=1 HTTP/1.1" 200 5 "http://r/" "ua \x22q\x22 \x5c \xff" "#),
        "{after_time}"
    );
    // The time is the CLF one: 01/Dec/2026:16:03:29 +0000.
    let time = &first[re_prefix.len()..first.find(']').unwrap()];
    assert_eq!(time.len(), 26, "{time}");
    assert!(time.ends_with(" +0000") && &time[2..3] == "/" && &time[6..7] == "/", "{time}");
    // Pool threads hand over their lines independently: compare as a set.
    let mut statuses: Vec<&str> =
        lines.iter().map(|l| l.split('"').nth(2).unwrap().split_whitespace().next().unwrap()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, ["200", "400", "404", "405", "408", "413", "431"]);
    // A request line that did not parse is logged as "-".
    assert!(lines.iter().any(|l| l.contains("\"-\" 400 ")), "{lines:#?}");
    assert!(lines.iter().all(|l| l.contains(" rid=") && !l.contains('\r')));
}

#[test]
fn a_connection_refused_for_max_connections_is_logged() {
    let p = project("\"max_connections\": 1,");
    let log = p.dir.join("access.log");
    let s = Server::start(&p, &["--access-log", log.to_str().unwrap()]);
    let _held = s.connect();
    // Wait until the held connection counts, then the next one gets 503.
    wait_until(10, "a 503", || {
        let mut c = s.connect();
        c.send(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
        c.try_read_response().is_some_and(|r| r.status == 503)
    });
    let lines = wait_lines(&log, 1);
    assert!(lines.iter().any(|l| l.contains("\"-\" 503 16 \"-\" \"-\" 0us rid=")), "{lines:#?}");
}

#[test]
fn json_and_template_formats() {
    let p = project("\"access_log_format\": \"json\",");
    let log = p.dir.join("access.log");
    let s = Server::start(&p, &["--access-log", log.to_str().unwrap()]);
    let r = send_raw(
        &s,
        b"GET /hello?a=%22b HTTP/1.1\r\nHost: t\r\nUser-Agent: agent\t\"x\r\nX-Request-Id: client-id-1\r\n\r\n",
    );
    assert_eq!(r.header("X-Request-Id"), Some("client-id-1"));
    assert_eq!(s.get("/nope").status, 404);
    let mut lines = wait_lines(&log, 2);
    // Two pool threads: the lines may come in either order.
    lines.sort_by_key(|l| !l.contains("\"status\":200"));
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/hello");
    assert_eq!(v["query"], "a=%22b");
    assert_eq!(v["status"], 200);
    assert_eq!(v["bytes"], 5);
    assert_eq!(v["request_id"], "client-id-1");
    assert_eq!(v["route"], "/hello");
    assert_eq!(v["user_agent"], "agent\t\"x");
    assert_eq!(v["pid"], s.child.id());
    assert!(v["duration_us"].as_u64().is_some() && v["time"].as_str().unwrap().ends_with('Z'));
    let v: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!((v["status"].as_u64(), v["route"].as_str()), (Some(404), Some("")));
    drop(s);

    let fmt = "{method} {path} {query} {status} {bytes} {route} {header:X-Custom} {pid} {{x}}";
    let log2 = p.dir.join("custom.log");
    let s = Server::start(&p, &["--access-log", log2.to_str().unwrap(), "--access-log-format", fmt]);
    send_raw(&s, b"GET /teapot?q=1 HTTP/1.1\r\nHost: t\r\nX-Custom: yes\r\n\r\n");
    let lines = wait_lines(&log2, 1);
    assert_eq!(lines[0], format!("GET /teapot q=1 418 2 /teapot yes {} {{x}}", s.child.id()));

    let (code, _, err) = run_pyrs(&[p.file().to_str().unwrap(), "--access-log-format", "{nope}", "--check"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown field {nope}"), "{err}");
}

#[test]
fn request_ids_are_kept_or_made_and_reach_python() {
    let p = project("");
    let s = Server::start(&p, &[]);
    let r = send_raw(&s, b"GET /rid HTTP/1.1\r\nHost: t\r\nX-Request-Id: abc-123\r\n\r\n");
    assert_eq!((r.header("X-Request-Id"), r.text().as_str()), (Some("abc-123"), "abc-123"));
    let long = "a".repeat(129);
    let mut made = Vec::new();
    for bad in ["has space", long.as_str(), ""] {
        let r = send_raw(&s, format!("GET /rid HTTP/1.1\r\nHost: t\r\nX-Request-Id: {bad}\r\n\r\n").as_bytes());
        let id = r.header("X-Request-Id").unwrap().to_string();
        assert_eq!(r.text(), id);
        assert!(id.len() == 28 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        made.push(id);
    }
    made.push(s.get("/rid").text());
    made.sort();
    made.dedup();
    assert_eq!(made.len(), 4, "ids must differ: {made:?}");
    // Responses made without Python carry one too.
    assert!(s.get("/nope").header("X-Request-Id").is_some());
}

#[test]
fn python_logging_goes_to_the_pyrs_log_unless_the_app_configured_it() {
    let p = project("");
    let s = Server::start(&p, &[]);
    let r = s.get("/logs");
    let rid = r.header("X-Request-Id").unwrap().to_string();
    s.wait_stderr(&format!("myapp: careful 42 rid={rid}"), 10);
    s.wait_stderr("py.warnings: ", 10);
    s.wait_stdout("printed line", 1, 10);
    let err = s.stderr();
    let line = err.lines().find(|l| l.contains("myapp: careful 42")).unwrap();
    assert!(line.contains("WARN") && line.contains(&format!("pyrs[{}]", s.child.id())), "{line}");
    s.wait_stderr("UserWarning: old api", 30);
    assert!(!err.contains("hidden detail"), "debug records are below log_level info: {err}");
    drop(s);

    // --log-level debug lets debug records through.
    let s = Server::start(&p, &["--log-level", "debug"]);
    s.get("/logs");
    s.wait_stderr("myapp: hidden detail", 10);
    drop(s);

    // An application that configured logging keeps its own handlers.
    let configured = format!(
        "import logging, sys\nlogging.basicConfig(stream=sys.stdout, level=logging.INFO, format='APP %(levelname)s %(name)s %(message)s')\n{API}"
    );
    std::fs::write(p.dir.join("main.py"), configured).unwrap();
    let s = Server::start(&p, &[]);
    s.get("/logs");
    s.wait_stdout("APP WARNING myapp careful 42", 1, 10);
    assert!(!s.stderr().contains("myapp: careful"), "{}", s.stderr());
}

#[test]
fn health_readiness_and_the_probe_path() {
    let p = project("\"health_path\": \"/ready-check\",");
    // /readyz answers 503 while the project loads: __init__ waits for a file.
    let slow = format!("{API}\nimport os as _os, time as _t\n_here = _os.path.dirname(_os.path.abspath(__file__))\nwhile not _os.path.exists(_os.path.join(_here, 'loaded')):\n    _t.sleep(0.01)\n");
    std::fs::write(p.dir.join("main.py"), slow).unwrap();
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg(p.file()).args(["--bind", "127.0.0.1:0", "--admin", "127.0.0.1:0"]).env_remove("VIRTUAL_ENV");
    // Owned here from the start: a failed check below kills it on the way out.
    let mut s = Server::launch(cmd);
    // The admin address is announced before the project loads.
    let admin = announced_admin(&s);
    let r = get(admin, "/readyz");
    assert_eq!((r.status, r.text().as_str()), (503, "not ready\n"));
    assert_eq!(get(admin, "/healthz").status, 200);
    std::fs::write(p.dir.join("loaded"), "").unwrap();
    s.wait_listening();
    // Readiness is set once the pool threads run, just after "Listening on".
    let mut r = get(admin, "/readyz");
    wait_until(30, "/readyz 200 once serving", || {
        r = get(admin, "/readyz");
        r.status == 200
    });
    assert_eq!((r.status, r.text().as_str()), (200, "ready\n"));
    assert_eq!(get(admin, "/healthz").text(), "ok\n");

    // health_path is answered on the main port without Python (no route matches it).
    let r = s.get("/ready-check");
    assert_eq!((r.status, r.text().as_str()), (200, "ready\n"));
    assert!(r.header("X-Request-Id").is_some());

    // Draining: a request in flight keeps the server up; /readyz says 503.
    drain_with_a_request_in_flight(s, &p.dir, admin);
}

#[test]
fn sigusr1_reopens_the_access_log() {
    let p = project("");
    let log = p.dir.join("access.log");
    let s = Server::start(&p, &["--access-log", log.to_str().unwrap()]);
    s.get("/hello");
    wait_lines(&log, 1);
    let rotated = p.dir.join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    s.signal("USR1");
    wait_until(10, "a line in the reopened file", || {
        s.get("/teapot");
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("\" 418 "))
    });
    assert!(std::fs::read_to_string(&rotated).unwrap().contains("\"GET /hello HTTP/1.1\" 200 "));
    s.wait_stderr("access log reopened", 10);
}

#[test]
fn access_log_to_stderr_and_admin_refuses_other_addresses() {
    let p = project("");
    let s = Server::start(&p, &["--access-log"]);
    let rid = s.get("/hello").header("X-Request-Id").unwrap().to_string();
    s.wait_stderr("\"GET /hello HTTP/1.1\" 200 5 \"-\" \"-\"", 10);
    s.wait_stderr(&format!("rid={rid}"), 30);
    drop(s);

    let file = p.file();
    let (code, _, err) = run_pyrs(&[file.to_str().unwrap(), "--admin", "0.0.0.0:0"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("admin_allow_remote"), "{err}");
    let (code, _, err) = run_pyrs(&[file.to_str().unwrap(), "--admin", "nonsense"], &[]);
    assert_eq!(code, 2, "{err}");
    let allowed = project("\"admin_allow_remote\": true,");
    let s = Server::start(&allowed, &["--admin", "0.0.0.0:0"]);
    let port = admin_addr(&s).port();
    let r = get(format!("127.0.0.1:{port}").parse().unwrap(), "/healthz");
    assert_eq!(r.status, 200);
}

#[test]
fn a_trickling_admin_client_is_cut_off_and_probes_are_answered_again() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let p = project("");
    let s = Server::start(&p, &["--admin", "127.0.0.1:0"]);
    let admin = admin_addr(&s);
    // One byte every 200 ms, never ending the head: the admin thread must
    // drop this client (after its 5 s head deadline), not serve it forever.
    let mut slow = std::net::TcpStream::connect(admin).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nX-Pad: ").unwrap();
    let start = Instant::now();
    let mut cut_off = false;
    while start.elapsed() < Duration::from_secs(60) {
        if slow.write_all(b"a").is_err() {
            cut_off = true;
            break;
        }
        match slow.read(&mut [0u8; 64]) {
            Ok(_) => {
                cut_off = true;
                break;
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => {
                cut_off = true;
                break;
            }
        }
    }
    assert!(cut_off, "the admin listener still served a client trickling its head after 60 s");
    assert_eq!(get(admin, "/healthz").status, 200);
}

/// A probe whose request head stops halfway gets an HTTP answer (408 once
/// the 5 s head deadline passes), never a bare close; the listener serves on.
#[test]
fn an_admin_request_cut_short_is_answered_408() {
    let p = project("");
    let s = Server::start(&p, &["--admin", "127.0.0.1:0"]);
    let admin = admin_addr(&s);
    let mut c = Client::connect(admin);
    c.send(b"GET /readyz HTTP/1.1\r\nHost: t\r\n");
    let r = c.read_response();
    assert_eq!((r.status, r.text().as_str()), (408, "request not received in time\n"));
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(c.is_closed());
    assert_eq!(get(admin, "/healthz").status, 200);
}

#[test]
fn a_slow_admin_reader_holds_up_no_probe_and_is_cut_at_the_write_deadline() {
    // 3000 routes: /metrics is about 6 MB, more than the kernel buffers of
    // a connection (tcp_wmem's 4 MiB at most) can absorb.
    let routes: Vec<String> = (0..3000)
        .map(|i| format!(r#"{{"path": "/r{i}", "module": "main", "class": "Api", "handler": "hello"}}"#))
        .collect();
    let pyrs = format!("{{\n\"modules\": [{}]\n}}\n", routes.join(",\n"));
    let p = Project::new(&[("main.py", API), ("project.pyrs", &pyrs)]);
    let s = Server::start(&p, &["--admin", "127.0.0.1:0"]);
    let admin = admin_addr(&s);
    let full = get(admin, "/metrics").body.len();
    assert!(full > 5_000_000, "/metrics is only {full} bytes");
    // A client with a 4 KiB receive window that takes 1 KiB every 50 ms
    // (20 KB/s). Before, the single admin thread kept writing to it for as
    // long as it took (minutes), and every probe waited behind it.
    let mut slow = connect_with_small_window(admin, 4096);
    std::io::Write::write_all(&mut slow, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    slow.set_read_timeout(Some(RESPONSE_WAIT)).unwrap();
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let reader = {
        let received = received.clone();
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let mut chunk = [0u8; 1024];
            // Until the server closes (bounded: the test fails, not hangs, without a deadline).
            while started.elapsed() < std::time::Duration::from_secs(120) {
                match read_retry(&mut slow, &mut chunk) {
                    Ok(0) => return Ok(()),
                    Ok(n) => received.fetch_add(n, std::sync::atomic::Ordering::Relaxed),
                    // Closed with unread bytes in its buffers: a reset.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
                    Err(e) => return Err(format!("{e} after {:?}", started.elapsed())),
                };
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            // At 20 KB/s the 6 MB would take 5 minutes: only a deadline closes it before 120 s.
            Err("still open after 120 s".to_string())
        })
    };
    wait_until(30, "the slow reader's first bytes", || received.load(std::sync::atomic::Ordering::Relaxed) > 0);
    // Probes on new connections are answered meanwhile.
    for _ in 0..3 {
        assert_eq!(get(admin, "/healthz").text(), "ok\n");
    }
    assert_eq!(get(admin, "/readyz").text(), "ready\n");
    // The slow reader is cut off at the write deadline, well short of the response.
    let closed = reader.join().unwrap();
    let got = received.load(std::sync::atomic::Ordering::Relaxed);
    assert!(closed.is_ok(), "the server did not cut the slow reader: {closed:?} ({got} bytes)");
    assert!(got < full, "the slow reader got all {got} bytes: no write deadline");
    assert_eq!(get(admin, "/healthz").text(), "ok\n");
}

const STREAMS: &str = r#"
import asyncio, os, pyrs, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
BIG = b"x" * (16 << 20)

class Api:
    def tid(self, request):
        return str(threading.get_ident())

    def big(self, request):
        return BIG

    def marked_fails(self, request):
        def gen():
            raise RuntimeError("boom after a move")
            yield "never"
        open(os.path.join(HERE, "marked"), "w").close()
        return gen()

    def batch_gens(self, requests):
        def fails():
            raise pyrs.HTTPError(409, "taken")
            yield "never"
        def ok():
            yield "a"
            yield "b"
        return [fails() if r.query.get("fail") else ok() for r in requests]

    def block(self, request):
        open(os.path.join(HERE, "blocking"), "w").close()
        while not os.path.exists(os.path.join(HERE, "go")):
            time.sleep(0.01)
        return "unblocked"

    def sync_fails(self, request):
        raise RuntimeError("boom before the first item")
        yield "never"

    def sync_http(self, request):
        raise pyrs.HTTPError(404, "no such model")
        yield "never"

    def sync_ok(self, request):
        yield "a"
        yield "b"

    async def async_fails(self, request):
        await asyncio.sleep(0)
        raise RuntimeError("async boom before the first item")
        yield "never"

    async def async_http(self, request):
        await asyncio.sleep(0)
        raise pyrs.HTTPError(404, "no such model")
        yield "never"

    async def async_ok(self, request):
        await asyncio.sleep(0)
        yield "a"
        yield "b"

    async def coro_fails(self, request):
        def gen():
            raise RuntimeError("returned generator boom")
            yield "never"
        return pyrs.Response(gen(), status=202)

    async def async_waits(self, request):
        open(os.path.join(HERE, "waiting"), "w").close()
        await asyncio.sleep(3600)
        yield "never"
"#;

/// A project serving `STREAMS`: each of `names` at `/NAME` (batched when it starts with `batch_`).
fn streams_project(names: &[&str], extra: &str) -> Project {
    let routes: Vec<String> = names
        .iter()
        .map(|h| {
            let batch = if h.starts_with("batch_") { r#", "batch": {"max_size": 4, "max_wait_ms": 1}"# } else { "" };
            format!(r#"{{"path": "/{h}", "module": "main", "class": "Api", "handler": "{h}"{batch}}}"#)
        })
        .collect();
    let pyrs = format!("{{\n{extra}\n\"modules\": [{}]\n}}\n", routes.join(",\n"));
    Project::new(&[("main.py", STREAMS), ("project.pyrs", &pyrs)])
}

#[test]
fn a_stream_that_fails_before_its_first_item_is_logged_and_counted_with_the_status_sent() {
    let names = [
        "sync_fails",
        "sync_http",
        "sync_ok",
        "async_fails",
        "async_http",
        "async_ok",
        "coro_fails",
        "async_waits",
        "batch_gens",
    ];
    let p = streams_project(&names, "");
    let log = p.dir.join("access.log");
    let s = Server::start(&p, &["--access-log", log.to_str().unwrap(), "--admin", "127.0.0.1:0"]);
    let admin = admin_addr(&s);
    // (route, status sent, the line's bytes: the replacing response's body, `-` for a stream)
    let expected = [
        ("/sync_fails", 500, "22"),
        ("/sync_http", 404, "14"),
        ("/sync_ok", 200, "-"),
        ("/async_fails", 500, "22"),
        ("/async_http", 404, "14"),
        ("/async_ok", 200, "-"),
        ("/coro_fails", 500, "22"),
        ("/batch_gens?fail=1", 409, "6"),
        ("/batch_gens", 200, "-"),
    ];
    for (path, status, _) in expected {
        let mut c = s.connect();
        c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes());
        let got = String::from_utf8_lossy(&c.read_to_close()).into_owned();
        assert!(got.starts_with(&format!("HTTP/1.1 {status} ")), "{path}: {got}");
        if status == 200 {
            assert!(got.ends_with("\r\n\r\n1\r\na\r\n1\r\nb\r\n0\r\n\r\n"), "{path}: {got}");
        }
    }
    // A client that leaves before the head is decided still gets its line (the handler's status).
    let mut c = s.connect();
    c.send(b"GET /async_waits HTTP/1.1\r\nHost: t\r\n\r\n");
    wait_until(30, "the generator's first pull", || p.dir.join("waiting").exists());
    c.reset();

    let lines = wait_lines(&log, expected.len() + 1);
    assert_eq!(lines.len(), expected.len() + 1, "{lines:#?}");
    let logged = |path: &str| {
        let request = format!("\"GET {path} HTTP/1.1\" ");
        let found: Vec<&String> = lines.iter().filter(|l| l.contains(&request)).collect();
        assert_eq!(found.len(), 1, "{path}: {lines:#?}");
        let after = &found[0][found[0].find(&request).unwrap() + request.len()..];
        let mut fields = after.split(' ');
        (fields.next().unwrap().to_string(), fields.next().unwrap().to_string())
    };
    for (path, status, bytes) in expected {
        assert_eq!(logged(path), (status.to_string(), bytes.to_string()), "{path}");
    }
    assert_eq!(logged("/async_waits"), ("200".to_string(), "-".to_string()));

    let m = metrics(admin);
    let req = |route: &str, class: &str| value(&m, "pyrs_requests_total", &[("route", route), ("status", class)]);
    assert_eq!((req("/batch_gens", "4xx"), req("/batch_gens", "2xx")), (1.0, 1.0));
    for &(path, status, _) in &expected[..expected.len() - 2] {
        let class = format!("{}xx", status / 100);
        assert_eq!(req(path, &class), 1.0, "{path} {class}");
        let total: f64 = all(&m, "pyrs_requests_total")
            .iter()
            .filter(|s| s.labels.get("route").map(String::as_str) == Some(path))
            .map(|s| s.value)
            .sum();
        assert_eq!(total, 1.0, "{path}: counted once");
        assert_eq!(value(&m, "pyrs_request_duration_seconds_count", &[("route", path)]), 1.0, "{path}");
    }
}

#[test]
fn a_held_streams_record_moves_with_its_connection() {
    let p = streams_project(&["tid", "big", "marked_fails", "block"], r#""thread_count": 2, "log_level": "debug","#);
    let log = p.dir.join("access.log");
    let s = Server::start(&p, &["--access-log", log.to_str().unwrap()]);
    // Two connections served by the same pool thread (3 connections over 2 threads).
    let mut conns: Vec<(Client, String)> = (0..3)
        .map(|_| {
            let mut c = s.connect();
            c.send(b"GET /tid HTTP/1.1\r\nHost: t\r\n\r\n");
            let tid = c.read_response().text();
            (c, tid)
        })
        .collect();
    let (i, j) = [(0, 1), (0, 2), (1, 2)].into_iter().find(|&(i, j)| conns[i].1 == conns[j].1).unwrap();
    let (mut blocker, _) = conns.remove(j);
    let (mut held, _) = conns.remove(i);
    // A response the client does not read, then a stream that fails before its first item:
    // the stream is not pulled while the unread bytes exceed max_buffered_output.
    held.send(
        b"GET /big HTTP/1.1\r\nHost: t\r\n\r\nGET /marked_fails HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    wait_until(30, "the stream's handler", || p.dir.join("marked").exists());
    // The thread blocks in another handler: the rescuer moves the held connection away.
    blocker.send(b"GET /block HTTP/1.1\r\nHost: t\r\n\r\n");
    wait_until(30, "the blocking handler", || p.dir.join("blocking").exists());
    s.wait_stderr("busy in a handler: connections moved to thread", 30);
    // Its stream is pulled by the other thread once the client reads: the 500 replaces it.
    let big = held.read_response();
    assert_eq!((big.status, big.body.len()), (200, 16 << 20));
    assert_eq!(held.read_response().status, 500);
    std::fs::write(p.dir.join("go"), b"").unwrap();
    assert_eq!(blocker.read_response().text(), "unblocked");
    let lines = wait_lines(&log, 6);
    let failed: Vec<&String> = lines.iter().filter(|l| l.contains("\"GET /marked_fails HTTP/1.1\" ")).collect();
    assert_eq!(failed.len(), 1, "{lines:#?}");
    assert!(failed[0].contains("\"GET /marked_fails HTTP/1.1\" 500 22 "), "{}", failed[0]);
}
