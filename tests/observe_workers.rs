//! Observability with worker processes: the master's /metrics adds up every
//! worker and keeps the counts of workers that died (a SIGKILLed worker does
//! not make a counter go back) and the new workers of a reload that changed
//! the routes and threads (a shared memory no worker uses any more is freed,
//! its counts kept), workers share one access-log file in whole
//! lines, /readyz follows the workers, and the status page, loaded in
//! headless Chromium, shows one row per worker (screenshot under target/).

mod common;
mod observe_support;
use common::*;
use observe_support::*;
use std::process::Command;

const API: &str = r#"
import os, time

HERE = os.path.dirname(os.path.abspath(__file__))

class Api:
    def hello(self, request):
        return "world"

    def pid(self, request):
        return str(os.getpid())

    def fail(self, request):
        raise KeyError("missing")

    def wait(self, request):
        open(os.path.join(HERE, "started"), "w").close()
        while not os.path.exists(os.path.join(HERE, "go")):
            time.sleep(0.01)
        return "done"
"#;

fn project(extra: &str) -> Project {
    Project::simple(
        API,
        &[("/hello", "hello"), ("/pid", "pid"), ("/fail", "fail"), ("/wait", "wait")],
        &format!("\"workers\": 2, \"thread_count\": 1, {extra}"),
    )
}

/// GET on a new connection, retrying the refusal a worker's closing listener can cause.
fn get_retry(s: &Server, path: &str) -> Response {
    for _ in 0..5 {
        if let Ok(r) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.get(path))) {
            return r;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    s.get(path)
}

#[test]
fn the_master_adds_up_workers_and_keeps_the_counts_of_dead_ones() {
    let p = project("");
    let log = p.dir.join("access.log");
    let s = Server::start(&p, &["--admin", "127.0.0.1:0", "--access-log", log.to_str().unwrap()]);
    let admin = admin_addr(&s);
    for _ in 0..20 {
        assert_eq!(get_retry(&s, "/hello").text(), "world");
    }
    let m = metrics(admin);
    assert_eq!(value(&m, "pyrs_requests_total", &[("route", "/hello"), ("status", "2xx")]), 20.0);
    assert_eq!(value(&m, "pyrs_request_duration_seconds_count", &[("route", "/hello")]), 20.0);
    assert_eq!(value(&m, "pyrs_workers_up", &[]), 2.0);
    assert_eq!(value(&m, "pyrs_worker_starts_total", &[]), 2.0);
    let rss = all(&m, "pyrs_worker_resident_memory_bytes");
    assert_eq!(rss.len(), 2, "{rss:?}");
    assert!(rss.iter().all(|s| s.value > 1e6));
    let uss = all(&m, "pyrs_worker_private_memory_bytes");
    assert!(uss.len() == 2 && uss.iter().zip(&rss).all(|(u, r)| u.value > 0.0 && u.value < r.value), "{uss:?}");

    // Kill a worker outright: its counts stay, the replacement adds to them.
    // Its access-log lines are handed to the writer within 100 ms; wait for
    // all 20 to be in the file first, or the SIGKILL would lose some.
    wait_lines(&log, 20);
    let victim: i32 = get_retry(&s, "/pid").text().parse().unwrap();
    // SAFETY: signalling the worker process this test started.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let mut last = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let m = metrics(admin);
        assert!(value(&m, "pyrs_requests_total", &[("route", "/hello"), ("status", "2xx")]) >= 20.0);
        let replaced = value(&m, "pyrs_worker_exits_total", &[("reason", "crash")]) >= 1.0
            && value(&m, "pyrs_worker_starts_total", &[]) >= 3.0
            && value(&m, "pyrs_workers_up", &[]) == 2.0;
        if replaced {
            break;
        }
        last = m;
        assert!(std::time::Instant::now() < deadline, "no replacement worker: {last:#?}\n{}", s.stderr());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(last);
    for _ in 0..10 {
        assert_eq!(get_retry(&s, "/hello").text(), "world");
    }
    let m = metrics(admin);
    assert_eq!(value(&m, "pyrs_requests_total", &[("route", "/hello"), ("status", "2xx")]), 30.0);
    assert_eq!(value(&m, "pyrs_requests_total", &[("route", "/pid"), ("status", "2xx")]), 1.0);
    assert_eq!(value(&m, "pyrs_worker_exits_total", &[("reason", "crash")]), 1.0);
    assert!(!all(&m, "pyrs_worker_resident_memory_bytes").iter().any(|s| s.labels["pid"] == victim.to_string()));

    // Both workers wrote whole lines to the one file (the /pid line may have
    // died with the SIGKILLed worker before its writer thread wrote it).
    let lines = wait_lines(&log, 30);
    assert!(lines.len() == 30 || lines.len() == 31, "{lines:#?}");
    assert!(lines.iter().all(|l| l.starts_with("127.0.0.1 - - [") && l.contains(" rid=")), "{lines:#?}");
    assert_eq!(lines.iter().filter(|l| l.contains("\"GET /hello HTTP/1.1\" 200 5 ")).count(), 30);
    let pids: std::collections::HashSet<&str> =
        lines.iter().filter_map(|l| l.split("rid=").nth(1)).map(|r| &r[..16]).collect();
    assert!(pids.len() >= 2, "ids come from more than one process: {pids:?}");

    // SIGUSR1 to the master reaches every worker.
    std::fs::rename(&log, p.dir.join("access.log.1")).unwrap();
    s.signal("USR1");
    wait_until(30, "lines in the reopened file", || {
        get_retry(&s, "/hello");
        std::fs::read_to_string(&log).is_ok_and(|t| !t.is_empty())
    });
}

/// A reload that adds a route and a thread gives the new workers another
/// metrics layout: the master still adds them up, the new route included,
/// and the old workers' counts stay.
#[test]
fn a_reload_that_changes_routes_and_threads_keeps_every_worker_in_the_metrics() {
    let p = project("");
    let s = Server::start(&p, &["--admin", "127.0.0.1:0"]);
    let admin = admin_addr(&s);
    for _ in 0..3 {
        assert_eq!(get_retry(&s, "/hello").text(), "world");
    }
    let routes = [("/hello", "hello"), ("/pid", "pid"), ("/whoami", "pid"), ("/fail", "fail"), ("/wait", "wait")];
    let reloaded = Project::simple(API, &routes, "\"workers\": 2, \"thread_count\": 2,");
    std::fs::copy(reloaded.file(), p.file()).unwrap();
    s.signal("HUP");
    s.wait_stderr("reload complete", 90);
    for _ in 0..5 {
        assert_eq!(get_retry(&s, "/whoami").status, 200);
    }
    for _ in 0..4 {
        assert_eq!(get_retry(&s, "/hello").text(), "world");
    }
    let m = metrics(admin);
    let hello = [("route", "/hello"), ("status", "2xx")];
    assert_eq!(value(&m, "pyrs_requests_total", &[("route", "/whoami"), ("status", "2xx")]), 5.0);
    assert_eq!(value(&m, "pyrs_requests_total", &hello), 7.0, "3 from the old workers, 4 from the new");
    assert_eq!(value(&m, "pyrs_request_duration_seconds_count", &[("route", "/whoami")]), 5.0);
    assert_eq!(value(&m, "pyrs_workers_up", &[]), 2.0);
    assert!(!s.stderr().contains("stay out of /metrics"), "{}", s.stderr());
    // Once more with the old shape: a third layout, the same routes' counts go on.
    let back = Project::simple(API, &[("/hello", "hello")], "\"workers\": 2, \"thread_count\": 1,");
    std::fs::copy(back.file(), p.file()).unwrap();
    s.signal("HUP");
    wait_until(90, "the second reload", || s.stderr().matches("reload complete").count() == 2);
    assert_eq!(get_retry(&s, "/hello").text(), "world");
    let m = metrics(admin);
    assert_eq!(value(&m, "pyrs_requests_total", &hello), 8.0);
    assert_eq!(
        value(&m, "pyrs_requests_total", &[("route", "/whoami"), ("status", "2xx")]),
        5.0,
        "a removed route keeps its count"
    );
}

/// The master's descriptors and mappings of the workers' shared metrics memory.
fn metrics_memory_of(master: u32) -> (usize, usize) {
    let fds = std::fs::read_dir(format!("/proc/{master}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|target| target.to_string_lossy().contains("memfd:pyrs-metrics"))
                .count()
        })
        .unwrap_or(0);
    let maps = std::fs::read_to_string(format!("/proc/{master}/maps")).unwrap_or_default();
    (fds, maps.lines().filter(|l| l.contains("memfd:pyrs-metrics")).count())
}

/// Each reload that changes the routes gives the new workers another shared
/// memory; once no worker or template uses the old one, the master unmaps it
/// (before: one more mapping per such reload, until pyrs stopped), and its
/// counts stay in /metrics.
#[test]
fn a_shared_memory_no_worker_uses_is_freed_and_its_counts_stay() {
    let p = project("");
    let s = Server::start(&p, &["--admin", "127.0.0.1:0"]);
    let admin = admin_addr(&s);
    let master = s.child.id();
    assert_eq!(metrics_memory_of(master), (1, 1));
    let mut routes: Vec<(String, &str)> =
        [("/hello", "hello"), ("/pid", "pid"), ("/fail", "fail"), ("/wait", "wait")].map(|(p, h)| (p.into(), h)).into();
    let (mut hello, mut first_extra) = (0, 0);
    for round in 1..=8 {
        for _ in 0..3 {
            assert_eq!(get_retry(&s, "/hello").text(), "world");
            hello += 1;
        }
        routes.push((format!("/extra{round}"), "pid"));
        let pairs: Vec<(&str, &str)> = routes.iter().map(|(p, h)| (p.as_str(), *h)).collect();
        let reloaded = Project::simple(API, &pairs, "\"workers\": 2, \"thread_count\": 1,");
        std::fs::copy(reloaded.file(), p.file()).unwrap();
        s.signal("HUP");
        wait_until(90, &format!("reload {round}"), || s.stderr().matches("reload complete").count() == round);
        assert_eq!(get_retry(&s, "/extra1").status, 200);
        first_extra += 1;
        // The new one, and the old one until its last worker and template are reaped.
        let (fds, maps) = metrics_memory_of(master);
        assert!(fds <= 1 && maps <= 2, "round {round}: {fds} descriptors, {maps} mappings");
        wait_until(30, &format!("the old shared memory freed after reload {round}"), || {
            metrics_memory_of(master) == (1, 1)
        });
    }
    let m = metrics(admin);
    assert_eq!(value(&m, "pyrs_requests_total", &[("route", "/hello"), ("status", "2xx")]), f64::from(hello));
    assert_eq!(value(&m, "pyrs_requests_total", &[("route", "/extra1"), ("status", "2xx")]), f64::from(first_extra));
    assert!(!s.stderr().contains("stay out of /metrics"), "{}", s.stderr());
}

#[test]
fn readiness_follows_the_workers() {
    let p = project("");
    let slow = format!("{API}\nwhile not os.path.exists(os.path.join(HERE, 'loaded')):\n    time.sleep(0.01)\n");
    std::fs::write(p.dir.join("main.py"), slow).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg(p.file()).args(["--bind", "127.0.0.1:0", "--admin", "127.0.0.1:0"]).env_remove("VIRTUAL_ENV");
    // Owned here from the start: a failed check below kills it on the way out.
    let mut s = Server::launch(cmd);
    // The master announces its admin address before the template loads.
    let admin = announced_admin(&s);
    assert_eq!(get(admin, "/readyz").status, 503, "no worker serves while the template loads");
    std::fs::write(p.dir.join("loaded"), "").unwrap();
    s.wait_listening();
    assert_eq!(get(admin, "/readyz").status, 200);
    drain_with_a_request_in_flight(s, &p.dir, admin);
}

#[test]
fn status_page_in_chromium_shows_one_row_per_worker() {
    let chromium =
        ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| std::path::Path::new(p).exists());
    let chromium = chromium.expect("Chromium is not installed: run tests/setup.sh (it installs Debian's chromium)");
    let p = project("");
    let s = Server::start(&p, &["--admin", "127.0.0.1:0"]);
    let admin = admin_addr(&s);
    for _ in 0..5 {
        get_retry(&s, "/hello");
    }
    let failed = get_retry(&s, "/fail");
    assert_eq!(failed.status, 500);
    let rid = failed.header("X-Request-Id").unwrap().to_string();
    // refresh=0: a page that reloads itself every 2 s can keep a slow
    // (loaded) headless Chromium navigating forever instead of dumping it.
    let url = format!("http://{admin}/?refresh=0");
    let profile = p.dir.join("chromium-profile");
    let shot = repo().join("target/status-page.png");
    let _ = std::fs::remove_file(&shot);
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1200,900",
    ];
    // Chromium itself can hang on a loaded machine (seen once in many runs:
    // killed by `timeout` with nothing printed): one more try, with a fresh
    // profile, before failing.
    let run = |extra: &str| {
        let mut last = String::new();
        for attempt in 0..2 {
            let _ = std::fs::remove_dir_all(&profile);
            let out = Command::new("timeout")
                .arg("120")
                .arg(chromium)
                .args(flags)
                .arg(format!("--user-data-dir={}", profile.display()))
                .arg(extra)
                .arg(&url)
                .output()
                .expect("run chromium");
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            last = format!("attempt {attempt}: {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
        }
        panic!("chromium failed twice; the last: {last}");
    };
    let dom = run("--dump-dom");
    let rows = dom.matches("class=\"worker\"").count();
    assert_eq!(rows, 2, "one row per worker:\n{dom}");
    assert!(dom.contains("id=\"readiness\"") && dom.contains(">ready<"), "{dom}");
    assert!(dom.contains("KeyError") && dom.contains(&rid), "the failing request's traceback and id:\n{dom}");
    assert!(dom.contains(">/hello<"), "{dom}");
    run(&format!("--screenshot={}", shot.display()));
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5000, "{} bytes", png.len());
}
