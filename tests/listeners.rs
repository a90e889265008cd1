//! Where pyrs listens: Unix sockets (mode, stale file replaced, live one
//! refused, removed on exit), inherited descriptors (`--fd`, systemd's
//! LISTEN_FDS), `localhost`, several `--bind`, each in both modes and across
//! reloads; `request.remote_addr` for a Unix socket peer.

mod common;
use common::*;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const API: &str = r#"
import os
class Api:
    def who(self, request):
        return {"addr": request.remote_addr, "port": request.remote_port, "pid": os.getpid(), "v": "v1"}
"#;

fn project(extra: &str) -> Project {
    Project::simple(API, &[("/who", "who")], extra)
}

fn pyrs(p: &Project, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg(p.file()).args(args).env_remove("VIRTUAL_ENV");
    cmd
}

fn who_unix(path: &Path) -> Option<serde_json::Value> {
    let r = unix_request(path, "GET /who HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
    assert_eq!(r.status, 200);
    serde_json::from_slice(&r.body).ok()
}

fn who_tcp(addr: std::net::SocketAddr) -> serde_json::Value {
    let mut c = Client::connect(addr);
    c.send(b"GET /who HTTP/1.1\r\nHost: t\r\n\r\n");
    serde_json::from_slice(&c.read_response().body).unwrap()
}

#[test]
fn a_unix_socket_serves_with_its_mode_and_is_removed_on_exit() {
    for workers in [None, Some("2")] {
        let dir = temp_dir("uds");
        let sock = dir.join("pyrs.sock");
        let p = project("\"unix_socket_mode\": \"660\",");
        let mut args = vec!["--uds", sock.to_str().unwrap()];
        if let Some(w) = workers {
            args.extend(["--workers", w]);
        }
        let mut s = Server::spawn(pyrs(&p, &args));
        assert!(s.stdout().contains(&format!("Listening on unix:{}", sock.display())), "{}", s.stdout());
        let meta = std::fs::metadata(&sock).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        let v = who_unix(&sock).expect("an answer over the Unix socket");
        // A Unix peer has no address: "unix", port 0.
        assert_eq!((v["addr"].as_str(), v["port"].as_u64()), (Some("unix"), Some(0)));
        // A second server on the same live socket is refused, and leaves it alone.
        let (code, _, err) = run_pyrs(&[p.file().to_str().unwrap(), "--uds", sock.to_str().unwrap()], &[]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("another server is listening on it"), "{err}");
        assert!(who_unix(&sock).is_some());
        s.signal("TERM");
        assert_eq!(s.wait_exit(20).code(), Some(0), "{}", s.stderr());
        assert!(!sock.exists(), "the socket file was left behind (workers {workers:?})");
    }
}

#[test]
fn a_stale_socket_file_is_replaced_and_other_files_are_not() {
    let dir = temp_dir("uds-stale");
    let sock = dir.join("stale.sock");
    // What a crashed server leaves: a socket file nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let p = project("");
    let s = Server::spawn(pyrs(&p, &["--bind", &format!("unix:{}", sock.display())]));
    assert!(who_unix(&sock).is_some());
    s.wait_stderr("replacing the stale socket file", 30);
    drop(s);

    let file = dir.join("not-a-socket");
    std::fs::write(&file, "data").unwrap();
    let (code, _, err) = run_pyrs(&[p.file().to_str().unwrap(), "--uds", file.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("exists and is not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "data");
}

#[test]
fn an_inherited_descriptor_serves_in_both_modes() {
    for workers in [None, Some("2")] {
        let p = project("");
        let mut args = vec!["--fd", "7"];
        if let Some(w) = workers {
            args.extend(["--workers", w]);
        }
        let mut cmd = pyrs(&p, &args);
        let addr = pass_listener(&mut cmd, 7);
        let s = Server::spawn(cmd);
        assert_eq!(s.addr, addr, "{}", s.stdout());
        assert_eq!(who_tcp(addr)["v"], "v1");
    }
    let p = project("");
    let (code, _, err) = run_pyrs(&[p.file().to_str().unwrap(), "--fd", "9"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("descriptor 9"), "{err}");
}

#[test]
fn systemd_socket_activation_replaces_the_configured_listeners() {
    let p = project("\"http_listen_port\": 1,");
    // LISTEN_PID must be pyrs's own pid: the shell sets it to its pid and execs pyrs.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"", BIN, p.file().to_str().unwrap()]);
    cmd.env_remove("VIRTUAL_ENV");
    let addr = pass_listener(&mut cmd, 3);
    let s = Server::spawn(cmd);
    assert_eq!(s.addr, addr);
    s.wait_stderr("from systemd (LISTEN_FDS)", 30);
    assert_eq!(who_tcp(addr)["v"], "v1");
    // Handler code does not see the variables (they were for pyrs).
    assert_eq!(s.get("/who").status, 200);
}

#[test]
fn several_binds_and_localhost() {
    let dir = temp_dir("multi");
    let sock = dir.join("m.sock");
    let p = project("");
    for workers in [None, Some("2")] {
        let mut args = vec!["--bind", "127.0.0.1:0", "--bind", "localhost:0"];
        let unix = format!("unix:{}", sock.display());
        args.extend(["--bind", &unix]);
        if let Some(w) = workers {
            args.extend(["--workers", w]);
        }
        let s = Server::spawn(pyrs(&p, &args));
        let out = s.stdout();
        let tcp: Vec<std::net::SocketAddr> = out
            .lines()
            .filter_map(|l| l.strip_prefix("Listening on http://"))
            .map(|a| a.trim().parse().unwrap())
            .collect();
        // 127.0.0.1:0, then localhost: 127.0.0.1 and (when the host has it) ::1 on one port.
        assert!(tcp.len() >= 2, "{out}");
        assert!(tcp[1].ip().is_loopback() && tcp[1].ip().is_ipv4());
        if let Some(v6) = tcp.get(2) {
            assert!(v6.is_ipv6() && v6.port() == tcp[1].port(), "{out}");
        }
        for a in &tcp {
            assert_eq!(who_tcp(*a)["v"], "v1");
        }
        assert_eq!(who_unix(&sock).unwrap()["v"], "v1");
    }
}

/// Every listener kind across a reload: the sockets stay, the code changes.
#[test]
fn reloads_keep_every_kind_of_listener() {
    for workers in [None, Some("2")] {
        let dir = temp_dir("reload-kinds");
        let sock: PathBuf = dir.join("r.sock");
        let p = project("");
        let unix = format!("unix:{}", sock.display());
        let mut args = vec!["--bind", "127.0.0.1:0", "--bind", &unix, "--fd", "8"];
        if let Some(w) = workers {
            args.extend(["--workers", w]);
        }
        let mut cmd = pyrs(&p, &args);
        let inherited = pass_listener(&mut cmd, 8);
        let mut s = Server::spawn(cmd);
        assert_eq!(who_tcp(s.addr)["v"], "v1");
        std::fs::write(p.dir.join("main.py"), API.replace("\"v1\"", "\"v2\"")).unwrap();
        s.signal("HUP");
        wait_for(60, "the new code on every listener", || {
            who_tcp(s.addr)["v"] == "v2"
                && who_tcp(inherited)["v"] == "v2"
                && who_unix(&sock).is_some_and(|v| v["v"] == "v2")
        });
        s.signal("TERM");
        assert_eq!(s.wait_exit(20).code(), Some(0), "{}", s.stderr());
        assert!(!sock.exists(), "workers {workers:?}");
    }
}
