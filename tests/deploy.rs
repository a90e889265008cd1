//! Process-level behaviour operators rely on (issue 9's defects): a closed
//! stdout, a virtualenv of another Python, one server per port, SIGHUP in a
//! single process, pyrs as PID 1, reloads that cannot apply a changed address.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const API: &str = "import os\nclass Api:\n    def hello(self, request):\n        return 'world'\n    def pid(self, request):\n        return str(os.getpid())\n";

/// A 127.0.0.1 port that was free a moment ago (for servers whose stdout
/// cannot report the port).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// GET `path` on 127.0.0.1:`port`, retried while the server starts (up to 30 s).
fn get_when_up(port: u16, path: &str) -> Response {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::Write;
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            if s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).is_ok() {
                let mut c = Client::from_stream(s);
                if let Some(r) = c.try_read_response() {
                    return r;
                }
            }
        }
        assert!(Instant::now() < deadline, "nothing answered on port {port} within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
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
        let port = free_port();
        let mut cmd = Command::new(BIN);
        cmd.arg(p.file()).args(["--bind", &format!("127.0.0.1:{port}")]).env_remove("VIRTUAL_ENV");
        if let Some(w) = workers {
            cmd.args(["--workers", w]);
        }
        let mut child = cmd.stdin(Stdio::null()).stdout(closed_stdout()).stderr(Stdio::piped()).spawn().unwrap();
        let r = get_when_up(port, "/hello");
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
