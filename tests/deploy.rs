//! Process-level behaviour operators rely on (issue 9's defects): a closed
//! stdout, a virtualenv of another Python, one server per port, SIGHUP in a
//! single process, pyrs as PID 1, reloads that cannot apply a changed address.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const API: &str = "import os\nclass Api:\n    def hello(self, request):\n        return 'world'\n    def pid(self, request):\n        return str(os.getpid())\n";

/// GET `path` on `addr`, a socket the test listens on and pyrs serves: the
/// connection waits in its queue until pyrs accepts it (up to 60 s).
fn get_when_up(addr: std::net::SocketAddr, path: &str) -> Response {
    let s = connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(generous(60))).unwrap();
    let mut c = Client::from_stream(s);
    c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    c.try_read_response().unwrap_or_else(|| panic!("{addr} closed the connection without answering"))
}

/// stdout is a pipe whose reader has gone (`pyrs app.pyrs | head -0`).
fn closed_stdout() -> Stdio {
    let mut fds = [0; 2];
    // SAFETY: pipe fills the array; the read end is closed at once, the write
    // end is handed to the child as its stdout.
    unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        libc::close(fds[0]);
        Stdio::from(std::os::fd::OwnedFd::from_raw_fd(fds[1]))
    }
}
use std::os::fd::FromRawFd;

#[test]
fn a_closed_stdout_is_not_an_error_in_either_mode() {
    for workers in [None, Some("1")] {
        let p = Project::simple(API, &[("/hello", "hello")], "");
        // pyrs cannot say which port it took (its stdout is gone): it serves a
        // socket the test bound, so no other process can take the port first.
        let mut cmd = Command::new(BIN);
        cmd.arg(p.file()).args(["--fd", "7"]).env_remove("VIRTUAL_ENV");
        let addr = pass_listener(&mut cmd, 7);
        if let Some(w) = workers {
            cmd.args(["--workers", w]);
        }
        let mut child = cmd.stdin(Stdio::null()).stdout(closed_stdout()).stderr(Stdio::piped()).spawn().unwrap();
        let r = get_when_up(addr, "/hello");
        assert_eq!((r.status, r.text().as_str()), (200, "world"), "workers {workers:?}");
        assert!(child.try_wait().unwrap().is_none(), "pyrs exited (workers {workers:?})");
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "workers {workers:?}: {err}");
        assert!(!err.contains("panicked") && !err.contains("could not be loaded"), "{err}");
    }
}

#[test]
fn a_virtualenv_of_another_python_is_refused_naming_both_versions() {
    let python = env!("PYRS_BUILD_PYTHON");
    let venv = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("venv-other-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&venv);
    let ok = Command::new(python).args(["-m", "venv", "--without-pip"]).arg(&venv).status().unwrap().success();
    assert!(ok, "python -m venv failed");
    // What `python3.12 -m venv` writes (the interpreter itself does not matter to the check).
    let cfg = std::fs::read_to_string(venv.join("pyvenv.cfg")).unwrap();
    let cfg: String = cfg
        .lines()
        .map(|l| if l.starts_with("version") { "version = 3.12.1".to_string() } else { l.to_string() })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(venv.join("pyvenv.cfg"), cfg).unwrap();
    let p = Project::simple(API, &[("/hello", "hello")], "");
    let (code, _, err) = run_pyrs(&[p.file().to_str().unwrap(), "--check", "--venv", venv.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{err}");
    let ours = Command::new(python).args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"]).output().unwrap();
    let ours = String::from_utf8(ours.stdout).unwrap();
    assert!(
        err.contains("made with Python 3.12") && err.contains(&format!("pyrs runs Python {}", ours.trim())),
        "{err}"
    );
    // The same through VIRTUAL_ENV, when serving.
    let (code, _, err) = run_pyrs(&[p.file().to_str().unwrap()], &[("VIRTUAL_ENV", venv.to_str().unwrap())]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("made with Python 3.12"), "{err}");
}

fn spawn_pyrs(p: &Project, args: &[&str]) -> Server {
    let mut cmd = Command::new(BIN);
    cmd.arg(p.file()).args(args).env_remove("VIRTUAL_ENV");
    Server::spawn(cmd)
}

#[test]
fn a_second_server_on_a_port_in_use_fails_in_both_modes() {
    let p = Project::simple(API, &[("/hello", "hello")], "");
    for first in [&[][..], &["--workers", "1"][..]] {
        let s = Server::start(&p, first);
        let bind = s.addr.to_string();
        for second in [&[][..], &["--workers", "1"][..]] {
            let mut args = vec![p.file().to_str().unwrap().to_string(), "--bind".into(), bind.clone()];
            args.extend(second.iter().map(|a| a.to_string()));
            // A second server that starts serving would never exit: give it 30 s.
            let mut child = Command::new(BIN)
                .args(&args)
                .env_remove("VIRTUAL_ENV")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(1),
                "first {first:?}, second {second:?} kept running or failed otherwise: {err}"
            );
            assert!(err.contains("Address already in use") || err.contains("address in use"), "{err}");
        }
        // The first server alone answers.
        assert_eq!(s.get("/hello").text(), "world");
    }
}

const FORKER: &str = r#"
import os, time
class Api:
    def hello(self, request):
        return 'world'
    def fork(self, request):
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        return str(pid)
"#;

/// A process a handler forked (os.fork, no exec) outlives the server: it must
/// not hold the port nor take a share of the next server's connections.
#[test]
fn a_process_forked_by_a_handler_never_holds_the_port() {
    for workers in [None, Some("1")] {
        let p = Project::simple(FORKER, &[("/hello", "hello"), ("/fork", "fork")], "");
        let mut args = vec![];
        if let Some(w) = workers {
            args.extend(["--workers", w]);
        }
        let mut s = Server::start(&p, &args);
        let orphan: i32 = s.get("/fork").text().parse().unwrap();
        let port = s.addr.port();
        // The child closes the listening sockets as it starts (pyrs still listens).
        // What the checks below look for, seen where it is: pyrs (the master in worker mode) holds it.
        let pyrs_pid = s.child.id() as i32;
        assert!(holds_listener(pyrs_pid, port).is_some(), "pyrs holds no socket listening on {port}");
        wait_for(30, "the forked child to close the listening sockets", || holds_listener(orphan, port).is_none());
        s.signal("TERM");
        assert_eq!(s.wait_exit(20).code(), Some(0), "{}", s.stderr());
        // The forked child is still alive, and nothing listens on the port any more. (Asked of
        // the kernel rather than by binding the port: another process may take a free port.)
        assert_eq!(unsafe { libc::kill(orphan, 0) }, 0, "the forked child should still run");
        let held = holds_listener(orphan, port);
        let left = listening_sockets_on(port);
        unsafe { libc::kill(orphan, libc::SIGKILL) };
        assert_eq!(held, None, "workers {workers:?}: the forked child holds the listening socket");
        assert!(left.is_empty(), "workers {workers:?}: port {port} still listens after pyrs exited: {left:?}");
    }
}

/// The inodes of the TCP sockets (IPv4 and IPv6) listening on `port`, from /proc/net.
fn listening_sockets_on(port: u16) -> Vec<u64> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port =
                f.get(1).and_then(|a| a.rsplit_once(':')).and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && f.get(3) == Some(&"0A") {
                inodes.extend(f.get(9).and_then(|i| i.parse::<u64>().ok()));
            }
        }
    }
    inodes
}

/// A descriptor of process `pid` that is a socket listening on `port`.
fn holds_listener(pid: i32, port: u16) -> Option<String> {
    let listening = listening_sockets_on(port);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .map(|l| l.display().to_string())
        .find(|target| listening.iter().any(|inode| *target == format!("socket:[{inode}]")))
}

/// Sends GET `path` on fresh connections until `stop`: (ok, failed, bodies seen).
fn load(
    addr: std::net::SocketAddr,
    path: &'static str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, usize, Vec<String>)> {
    std::thread::spawn(move || {
        let (mut ok, mut failed, mut seen) = (0, 0, Vec::<String>::new());
        while !stop.load(Ordering::Relaxed) {
            let r = std::panic::catch_unwind(|| {
                let mut c = Client::connect(addr);
                c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
                c.try_read_response()
            });
            match r {
                Ok(Some(r)) if r.status == 200 => {
                    ok += 1;
                    let body = r.text();
                    if !seen.contains(&body) {
                        seen.push(body);
                    }
                }
                _ => failed += 1,
            }
        }
        (ok, failed, seen)
    })
}
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const VERSIONED: &str = r#"
import time
class Api:
    def version(self, request):
        return "v1"
    def slow(self, request):
        time.sleep(0.3)
        return "slow v1"
    def close(self):
        print("close() ran", flush=True)
"#;

#[test]
fn sighup_reloads_a_single_process_without_failing_a_request() {
    let p = Project::simple(VERSIONED, &[("/version", "version"), ("/slow", "slow")], "");
    let mut s = Server::start(&p, &[]);
    let pid = s.child.id();
    let stop = Arc::new(AtomicBool::new(false));
    let loads: Vec<_> = (0..3).map(|_| load(s.addr, "/version", stop.clone())).collect();
    let slow = load(s.addr, "/slow", stop.clone());
    wait_for(10, "some requests", || s.get("/version").status == 200);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(p.dir.join("main.py"), VERSIONED.replace("v1", "v2")).unwrap();
    s.signal("HUP");
    wait_for(60, "the new code", || s.get("/version").text() == "v2");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for h in loads.into_iter().chain([slow]) {
        let (ok, failed, seen) = h.join().unwrap();
        assert_eq!(failed, 0, "{failed} failed requests (ok {ok}); stderr:\n{}", s.stderr());
        assert!(seen.iter().any(|b| b.contains("v2")), "{seen:?}");
        total += ok;
    }
    assert!(total > 20, "only {total} requests");
    // Same process (systemd and shells keep tracking it); close() ran for the old code.
    assert!(s.child.try_wait().unwrap().is_none());
    assert_eq!(s.child.id(), pid);
    assert!(s.stdout().contains("close() ran"), "{}", s.stdout());
    // A reload whose code does not import is cancelled; the running code serves on.
    std::fs::write(p.dir.join("main.py"), "raise ImportError('broken deploy')\n").unwrap();
    s.signal("HUP");
    s.wait_stderr("reload cancelled", 30);
    // The import error is on a later line of the same record: wait for it too.
    s.wait_stderr("broken deploy", 30);
    assert_eq!(s.get("/version").text(), "v2");
    s.signal("TERM");
    assert_eq!(s.wait_exit(20).code(), Some(0));
}

const SPAWNER: &str = r#"
import os, subprocess
class Api:
    def spawn(self, request):
        # The shell exits at once; its background child is orphaned to PID 1.
        subprocess.run(["sh", "-c", "sleep 0.05 &"], check=True)
        return "spawned"
    def zombies(self, request):
        count = 0
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                            count += 1
                except OSError:
                    pass
        return str(count)
    def pid(self, request):
        return str(os.getpid())
"#;

#[test]
fn as_pid_1_orphans_are_reaped() {
    let p = Project::simple(SPAWNER, &[("/spawn", "spawn"), ("/zombies", "zombies"), ("/pid", "pid")], "");
    let probe = Command::new("unshare").args(["--pid", "--fork", "--mount-proc", "true"]).status();
    assert!(
        probe.is_ok_and(|s| s.success()),
        "this test needs `unshare --pid --fork --mount-proc` (util-linux, as root) to run pyrs as PID 1"
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child", BIN])
        .arg(p.file())
        .args(["--bind", "127.0.0.1:0"])
        .env_remove("VIRTUAL_ENV");
    let s = Server::spawn(cmd);
    // The server runs under PID 1 in its namespace (pyrs's init process).
    assert_eq!(s.get("/pid").text(), "2");
    for _ in 0..20 {
        assert_eq!(s.get("/spawn").text(), "spawned");
    }
    // Each background sleep ends within 50 ms; none may stay a zombie.
    wait_for(20, "no zombies in the container", || s.get("/zombies").text() == "0");
}

#[test]
fn a_reload_says_when_the_address_needs_a_restart() {
    for workers in [None, Some("1")] {
        // The project names where to listen; the system picks the port, and
        // the new configuration names another one (pyrs never binds it).
        let p = Project::simple(API, &[("/hello", "hello")], "\"bind\": \"127.0.0.1:0\",");
        let mut args = vec![];
        if let Some(w) = workers {
            args.extend(["--workers", w]);
        }
        let s = spawn_pyrs(&p, &args);
        let port = s.addr.port();
        assert_ne!(port, 0);
        let other = if port == u16::MAX { port - 1 } else { port + 1 };
        let text =
            std::fs::read_to_string(p.file()).unwrap().replace("\"127.0.0.1:0\"", &format!("\"127.0.0.1:{other}\""));
        std::fs::write(p.file(), text).unwrap();
        s.signal("HUP");
        s.wait_stderr("restart pyrs to listen elsewhere", 60);
        s.wait_stderr(&format!("127.0.0.1:{other}"), 30);
        // Still serving where it was.
        wait_for(30, "the old address to answer", || s.get("/hello").status == 200);
    }
}

#[test]
fn a_dead_template_is_replaced_without_reloading_the_workers() {
    let p = Project::simple(
        API.replace("'world'", "'v1'").as_str(),
        &[("/hello", "hello"), ("/pid", "pid")],
        "\"workers\": 2,",
    );
    let s = Server::start(&p, &[]);
    let stderr = s.stderr();
    let template: i32 = stderr
        .split("template ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no template pid in:\n{stderr}"));
    let mut workers = std::collections::HashSet::new();
    for _ in 0..300 {
        workers.insert(s.get("/pid").text());
        if workers.len() == 2 {
            break;
        }
    }
    assert_eq!(workers.len(), 2, "stderr:\n{}", s.stderr());
    std::fs::write(p.dir.join("main.py"), API.replace("'world'", "'v2'")).unwrap();
    unsafe { libc::kill(template, libc::SIGKILL) };
    s.wait_stderr("running ones are not replaced", 20);
    s.wait_stderr("(generation 2) loaded", 60);
    // The same workers, still running the code they started with.
    let mut after = std::collections::HashSet::new();
    for _ in 0..300 {
        let pid = s.get("/pid").text();
        assert!(workers.contains(&pid), "a new worker {pid} answered; stderr:\n{}", s.stderr());
        after.insert(pid);
        if after.len() == workers.len() {
            break;
        }
    }
    assert_eq!(after, workers, "stderr:\n{}", s.stderr());
    assert_eq!(s.get("/hello").text(), "v1");
}
