//! Worker processes under the supervisor: several pids serve, crashes and
//! timeouts are replaced, SIGHUP reloads without failed requests, SIGTERM
//! drains, start-up failures stop the server instead of looping.

mod common;
use common::*;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const API: &str = r#"
import os, time

class Api:
    def __init__(self):
        self.forked_in = None

    def post_fork(self):
        self.forked_in = os.getpid()

    def pid(self, request):
        return f"{os.getpid()} {self.forked_in}"

    def version(self, request):
        return "v1"

    def spin(self, request):
        while True:
            pass

    def sleep(self, request):
        print("sleeping", flush=True)
        time.sleep(float(request.query.get("s", "0.5")))
        return "slept"
"#;

fn routes() -> Vec<(&'static str, &'static str)> {
    vec![("/pid", "pid"), ("/version", "version"), ("/spin", "spin"), ("/sleep", "sleep")]
}

/// GET /pid on a new connection. A connection attempt that races a worker
/// closing its SO_REUSEPORT listener (scale-down, reload) can be refused;
/// clients retry those, and so does this.
fn pid_of(s: &Server) -> i32 {
    let mut attempt = 0;
    let text = loop {
        attempt += 1;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.get("/pid").text())) {
            Ok(text) => break text,
            Err(_) if attempt < 10 => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => std::panic::resume_unwind(e),
        }
    };
    let mut parts = text.split(' ');
    let pid: i32 = parts.next().unwrap().parse().unwrap();
    assert_eq!(parts.next().unwrap(), pid.to_string(), "post_fork ran in another process: {text}");
    pid
}

/// Distinct worker pids seen over `n` fresh connections.
fn pids(s: &Server, n: usize) -> HashSet<i32> {
    (0..n).map(|_| pid_of(s)).collect()
}

fn up_count(s: &Server) -> usize {
    s.stderr().matches(") up").count()
}

#[test]
fn two_workers_both_answer_and_run_post_fork() {
    let p = Project::simple(API, &routes(), "\"workers\": 2,");
    let s = Server::start(&p, &[]);
    assert!(s.stdout().contains("workers: 2"), "{}", s.stdout());
    let seen = pids(&s, 60);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(!seen.contains(&(s.child.id() as i32)), "the master itself must not serve");
}

/// A burst of new keep-alive connections is shared between the workers: 16
/// clients connect at once (one after the other, as fast as the kernel
/// completes the handshakes), then each sends 20 requests on its connection;
/// each of the 2 workers must own at least 4 of them, in each of 3 bursts.
/// Before the accept table (`server/accept_share.rs`) the worker whose
/// accept thread ran first took nearly a whole burst (16/0, 15/1, 14/2).
#[test]
fn a_burst_of_connections_is_shared_between_the_workers() {
    const CLIENTS: usize = 16;
    const REQUESTS: usize = 20;
    let p = Project::simple(API, &routes(), "\"workers\": 2,");
    let s = Server::start(&p, &[]);
    wait_until(30, "both workers up", || up_count(&s) >= 2);
    wait_until(30, "both workers answering", || pids(&s, 8).len() == 2);
    for round in 1..=3 {
        // The burst: every connection is made (the kernel completes the
        // handshakes and queues them) before any request is sent.
        let burst: Vec<Client> = (0..CLIENTS).map(|_| s.connect()).collect();
        let done = Arc::new(std::sync::Barrier::new(CLIENTS));
        let clients: Vec<_> = burst
            .into_iter()
            .map(|mut c| {
                let done = done.clone();
                std::thread::spawn(move || {
                    let mut seen = HashSet::new();
                    let mut ask = |c: &mut Client, last: bool| {
                        let close = if last { "Connection: close\r\n" } else { "" };
                        c.send(format!("GET /pid HTTP/1.1\r\nHost: t\r\n{close}\r\n").as_bytes());
                        let r = c.read_response();
                        assert_eq!(r.status, 200);
                        seen.insert(r.text().split(' ').next().unwrap_or_default().parse::<i32>().expect("a pid"));
                    };
                    let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        for _ in 0..REQUESTS {
                            ask(&mut c, false);
                        }
                    }));
                    // Every connection stays open until all have been served
                    // (a client that failed still reaches the barrier); then
                    // the server closes each, so the next burst finds none.
                    done.wait();
                    served.unwrap_or_else(|e| std::panic::resume_unwind(e));
                    ask(&mut c, true);
                    c.read_to_close();
                    assert_eq!(seen.len(), 1, "one keep-alive connection, one worker: {seen:?}");
                    seen.into_iter().next().unwrap_or_default()
                })
            })
            .collect();
        let mut per_pid = std::collections::HashMap::<i32, usize>::new();
        for c in clients {
            *per_pid.entry(c.join().expect("client thread")).or_default() += 1;
        }
        eprintln!("burst {round}: connections per worker pid: {per_pid:?}");
        assert_eq!(per_pid.len(), 2, "burst {round}: connections per worker pid: {per_pid:?}");
        assert!(per_pid.values().all(|&n| n >= 4), "burst {round}: connections per worker pid: {per_pid:?}");
    }
}

/// Sends requests on fresh connections until `stop`; counts ok and failed.
fn load(
    s: &Server,
    path: &'static str,
    stop: Arc<AtomicBool>,
) -> (std::thread::JoinHandle<()>, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let (ok2, failed2, addr) = (ok.clone(), failed.clone(), s.addr);
    let h = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let result = std::panic::catch_unwind(|| {
                let mut c = Client::connect(addr);
                c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
                c.try_read_response().map(|r| r.status)
            });
            match result {
                Ok(Some(200)) => ok2.fetch_add(1, Ordering::Relaxed),
                _ => failed2.fetch_add(1, Ordering::Relaxed),
            };
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    (h, ok, failed)
}

#[test]
fn a_killed_worker_is_replaced_quickly() {
    let p = Project::simple(API, &routes(), "\"workers\": 2,");
    let s = Server::start(&p, &[]);
    let before = pids(&s, 40);
    assert_eq!(before.len(), 2);
    let stop = Arc::new(AtomicBool::new(false));
    let (h, ok, failed) = load(&s, "/version", stop.clone());
    wait_until(10, "requests before the kill", || ok.load(Ordering::Relaxed) >= 25);
    let victim = *before.iter().next().unwrap();
    unsafe_kill(victim, "KILL");
    wait_until(10, "a replacement worker", || up_count(&s) >= 3);
    let at_replacement = ok.load(Ordering::Relaxed);
    wait_until(10, "requests after the replacement", || ok.load(Ordering::Relaxed) >= at_replacement + 25);
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    let after = pids(&s, 40);
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(!after.contains(&victim));
    // Only what was in flight on the killed worker may fail (no request takes long here).
    assert!(
        failed.load(Ordering::Relaxed) <= 2,
        "failed {} of {}",
        failed.load(Ordering::Relaxed),
        ok.load(Ordering::Relaxed)
    );
    assert!(ok.load(Ordering::Relaxed) > 50);
    s.wait_stderr(&format!("worker {victim} (slot"), 30);
}

fn unsafe_kill(pid: i32, sig: &str) {
    let ok =
        std::process::Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status().unwrap().success();
    assert!(ok);
}

#[test]
fn a_handler_past_timeout_gets_pyrs_timeout_and_one_stuck_in_c_gets_its_worker_replaced() {
    let p = Project::simple(API, &routes(), "\"workers\": 2, \"timeout\": 1,");
    let s = Server::start(&p, &[]);
    // Pure Python: interrupted with pyrs.Timeout, answered 503; the worker serves on.
    let mut spinner = s.connect();
    spinner.send(b"GET /spin HTTP/1.1\r\nHost: t\r\n\r\nGET /pid HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = spinner.read_response();
    assert_eq!((r.status, r.text()), (503, "Handler timed out\n".to_string()), "{}", s.stderr());
    assert_eq!(spinner.read_response().status, 200);
    s.wait_stderr("route /spin (main.Api.spin) timed out", 5);
    // The stack where it hung, on later lines.
    s.wait_stderr("in spin", 30);
    assert!(!s.stderr().contains("killed"), "{}", s.stderr());
    // Stuck in C (time.sleep ignores the exception): killed after the grace, replaced at once.
    let mut stuck = s.connect();
    stuck.send(b"GET /sleep?s=60 HTTP/1.1\r\nHost: t\r\n\r\n");
    // Other requests keep being answered meanwhile (pid_of retries the one
    // that may land on the stuck worker as it is killed).
    for _ in 0..20 {
        pid_of(&s);
    }
    s.wait_stderr("killed for a handler for route /sleep stuck past timeout; replacing it at once", 10);
    assert!(stuck.try_read_response().is_none(), "the stuck request cannot be answered");
    s.wait_stderr("timeout kills by route so far: /sleep: 1", 30);
    wait_until(5, "a replacement worker", || up_count(&s) >= 3);
    assert_eq!(pids(&s, 30).len(), 2);
}

#[test]
fn sighup_reloads_without_failed_requests() {
    let p = Project::simple(API, &routes(), "\"workers\": 2,");
    let s = Server::start(&p, &[]);
    assert_eq!(s.get("/version").text(), "v1");
    let stop = Arc::new(AtomicBool::new(false));
    let (h, ok, failed) = load(&s, "/version", stop.clone());
    let (h2, ok2, failed2) = load(&s, "/pid", stop.clone());
    wait_until(10, "requests before the reload", || ok.load(Ordering::Relaxed) >= 25);
    std::fs::write(p.dir.join("main.py"), API.replace("return \"v1\"", "return \"v2\"")).unwrap();
    s.signal("HUP");
    wait_until(10, "the reload", || up_count(&s) >= 4);
    // Until both old workers have drained and exited, and a while after.
    wait_until(20, "the old workers to stop", || s.stderr().matches(") exited with status 0").count() >= 2);
    let at_reload = ok.load(Ordering::Relaxed);
    wait_until(10, "requests after the reload", || ok.load(Ordering::Relaxed) >= at_reload + 50);
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    h2.join().unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed) + failed2.load(Ordering::Relaxed),
        0,
        "ok {} + {}",
        ok.load(Ordering::Relaxed),
        ok2.load(Ordering::Relaxed)
    );
    for _ in 0..10 {
        assert_eq!(s.get("/version").text(), "v2");
    }
    assert!(s.stderr().contains("template") && s.stderr().contains("generation 2) loaded"), "{}", s.stderr());
}

#[test]
fn a_reload_that_fails_to_import_keeps_the_old_workers() {
    let p = Project::simple(API, &routes(), "\"workers\": 1,");
    let s = Server::start(&p, &[]);
    std::fs::write(p.dir.join("main.py"), "raise ImportError('broken deploy')\n").unwrap();
    s.signal("HUP");
    s.wait_stderr("reload failed", 10);
    assert_eq!(s.get("/version").text(), "v1");
}

#[test]
fn sigterm_under_load_answers_every_accepted_request_and_exits_0() {
    let p = Project::simple(API, &routes(), "\"workers\": 2,");
    let mut s = Server::start(&p, &[]);
    let mut slow: Vec<Client> = (0..4).map(|_| s.connect()).collect();
    for c in &mut slow {
        c.send(b"GET /sleep?s=0.8 HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    s.wait_stdout("sleeping", 1, 10);
    s.signal("TERM");
    for c in &mut slow {
        let r = c.read_response();
        assert_eq!((r.status, r.text().as_str()), (200, "slept"));
    }
    assert_eq!(s.wait_exit(15).code(), Some(0), "{}", s.stderr());
}

#[test]
fn workers_that_fail_at_start_up_stop_the_server() {
    let src = API.replace("self.forked_in = os.getpid()", "raise RuntimeError('no database in this worker')");
    let p = Project::simple(&src, &routes(), "\"workers\": 2,");
    let file = p.file();
    let start = Instant::now();
    let (code, _, err) = run_pyrs(&[file.to_str().unwrap(), "--bind", "127.0.0.1:0"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(start.elapsed() < Duration::from_secs(60));
    assert!(err.contains("workers keep failing at start-up"), "{err}");
    assert!(err.contains("RuntimeError: no database in this worker"), "{err}");
}

#[test]
fn import_errors_in_the_template_exit_1() {
    let p = Project::simple("import nope_not_here\n", &routes(), "\"workers\": 2,");
    let file = p.file();
    let (code, _, err) = run_pyrs(&[file.to_str().unwrap(), "--bind", "127.0.0.1:0"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("No module named 'nope_not_here'"), "{err}");
}

#[test]
fn sigttin_and_sigttou_scale_workers() {
    let p = Project::simple(API, &routes(), "\"workers\": 1,");
    let s = Server::start(&p, &[]);
    assert_eq!(pids(&s, 10).len(), 1);
    s.signal("TTIN");
    wait_until(5, "a second worker", || up_count(&s) >= 2);
    wait_until(5, "both workers answering", || pids(&s, 30).len() == 2);
    s.signal("TTOU");
    s.wait_stderr("SIGTTOU: removing a worker", 5);
    wait_until(5, "one worker left", || pids(&s, 30).len() == 1);
}

#[test]
fn max_requests_recycles_gracefully() {
    let p = Project::simple(API, &routes(), "\"workers\": 1, \"max_requests\": 20,");
    let s = Server::start(&p, &[]);
    let first = pid_of(&s);
    let mut failures = 0;
    for _ in 0..200 {
        let mut c = s.connect();
        c.send(b"GET /version HTTP/1.1\r\nHost: t\r\n\r\n");
        if c.try_read_response().map(|r| r.status) != Some(200) {
            failures += 1;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(failures, 0);
    s.wait_stderr("asking to be replaced: served", 30);
    wait_until(5, "a recycled worker", || pid_of(&s) != first);
}

#[test]
fn without_preload_each_worker_imports_the_code() {
    let src = "import os\nIMPORTED_IN = os.getpid()\nclass Api:\n    def pid(self, r):\n        return f'{os.getpid()} {IMPORTED_IN}'\n";
    let p = Project::simple(src, &[("/pid", "pid")], "\"workers\": 2, \"preload\": false,");
    let s = Server::start(&p, &[]);
    // "Listening on" comes with the first worker; the second may still be
    // importing the code (no preload) for the first requests.
    let mut seen = HashSet::new();
    wait_until(60, "answers from both workers", || {
        seen.insert(pid_of(&s));
        seen.len() == 2
    });
}

#[test]
fn max_rss_mb_recycles_a_worker() {
    let p = Project::simple(API, &routes(), "\"workers\": 1, \"max_rss_mb\": 1,");
    let s = Server::start(&p, &[]);
    let first = pid_of(&s);
    s.wait_stderr("private memory", 5);
    s.wait_stderr("at once and replacing it", 5);
    wait_until(5, "a recycled worker", || pid_of(&s) != first);
}

#[test]
fn the_template_and_workers_exit_by_themselves_when_the_master_is_killed() {
    // Seen: a pyrs re-parented to PID 1 after the suite. A master killed by
    // SIGKILL cannot stop its processes; they must notice and exit.
    let p = Project::simple(API, &routes(), "\"workers\": 2,");
    let mut s = Server::start(&p, &["--log-level", "debug"]);
    assert_eq!(pids(&s, 40).len(), 2);
    let master = s.child.id();
    wait_until(30, "the template and two workers", || processes_of_master(master).len() == 3);
    let template: i32 = s
        .stderr()
        .lines()
        .find(|l| l.ends_with("(generation 1) starting"))
        .and_then(|l| l.split("template ").nth(1)?.split(' ').next()?.parse().ok())
        .expect("the template's pid in the log");
    // A spawn command still in the template's pipe when the master dies: the
    // template must not start a worker nobody supervises. Stopped, it cannot
    // read the command before the master is gone; it dies with the master
    // (PR_SET_PDEATHSIG: SIGKILL ends a stopped process too).
    unsafe_kill(template, "STOP");
    s.signal("TTIN");
    // Logged once the command is in the pipe.
    s.wait_stderr("for a worker in slot 2", 30);
    unsafe_kill(master as i32, "KILL");
    s.child.wait().unwrap();
    wait_until(30, "every process of the killed master to exit", || processes_of_master(master).is_empty());
    assert!(!s.stderr().contains("(slot 2, generation 1) serving"), "{}", s.stderr());
}
