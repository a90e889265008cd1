//! pyrs behind a real nginx (Debian's package; `tests/setup.sh` installs it),
//! configured with deploy/nginx.conf, the settings the README recommends,
//! balancing two pyrs instances on loopback ports. Under steady, bounded
//! load one instance reloads (SIGHUP, single process) and the other stops
//! (SIGTERM, worker mode) and starts again: the client sees no failed request.
//!
//! Ports: pyrs binds port 0 and says which port it got; nginx's port must be
//! written in its configuration first, so nginx is started again on another
//! one when another process took it meanwhile ("Address already in use").

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NGINX: &str = "/usr/sbin/nginx";

fn api(name: &str) -> String {
    format!("import os\nclass Api:\n    def who(self, request):\n        return '{name} v1 ' + request.remote_addr\n")
}

/// A 127.0.0.1 port that was free a moment ago: another process may take it
/// before nginx binds it (then nginx is started again, see `start_nginx`).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Tries to start nginx before giving up when every port was taken first.
const NGINX_TRIES: usize = 5;

struct Nginx {
    child: Child,
    /// Where it listens.
    port: u16,
    dir: std::path::PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT: graceful stop of the master and its worker; then make sure.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGQUIT) };
        let _ = self.child.wait();
    }
}

/// nginx with deploy/nginx.conf's site balancing `upstreams`, on a free
/// loopback port; started again on a new port (at most `NGINX_TRIES` times)
/// when another process took the port before nginx could bind it.
fn start_nginx(upstreams: &[SocketAddr]) -> Nginx {
    assert!(
        std::path::Path::new(NGINX).exists(),
        "{NGINX} is missing: run tests/setup.sh (it installs Debian's nginx)"
    );
    let mut failures = Vec::new();
    for _ in 0..NGINX_TRIES {
        let port = free_port();
        let dir = temp_dir("nginx");
        write_nginx_conf(&dir, port, upstreams);
        let child = Command::new(NGINX)
            .args(["-p", dir.to_str().unwrap(), "-c", dir.join("nginx.conf").to_str().unwrap(), "-e"])
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx { child, port, dir };
        // nginx writes its pid file once it has bound its port: then it
        // listens there (a connection alone could reach whoever took the port).
        let pid_file = nginx.dir.join("nginx.pid");
        wait_for(60, "nginx to listen or exit", || pid_file.exists() || !matches!(nginx.child.try_wait(), Ok(None)));
        if pid_file.exists() {
            wait_for(30, "nginx to accept connections", || TcpStream::connect(("127.0.0.1", port)).is_ok());
            return nginx;
        }
        let log = std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default();
        assert!(log.contains("Address already in use"), "nginx exited: {:?}\n{log}", nginx.child.try_wait());
        failures.push(log);
    }
    panic!("nginx found its port taken {NGINX_TRIES} times:\n{}", failures.join("\n"));
}

/// nginx.conf in `dir`: deploy/nginx.conf's site with `upstreams`, listening on `port`.
fn write_nginx_conf(dir: &std::path::Path, port: u16, upstreams: &[SocketAddr]) {
    let recommended = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx.conf")).unwrap();
    let servers: String = upstreams.iter().map(|a| format!("    server {a};\n")).collect();
    let site = recommended
        .replace("    server 127.0.0.1:8094;\n    server 127.0.0.1:8095;\n", &servers)
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"));
    assert!(site.contains(&servers) && site.contains(&format!("127.0.0.1:{port}")), "deploy/nginx.conf changed shape");
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n{site}\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
}

impl Nginx {
    /// Balances `upstreams` from now on: the configuration rewritten, then
    /// SIGHUP (nginx's graceful reload: new workers, the old ones finish
    /// their requests).
    fn set_upstreams(&self, upstreams: &[SocketAddr]) {
        write_nginx_conf(&self.dir, self.port, upstreams);
        unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) };
    }
}

/// GET /who through nginx on a kept-alive connection (reconnecting when
/// nginx closes it): the body, or None for any failure.
fn get(conn: &mut Option<TcpStream>, port: u16) -> Option<String> {
    for _ in 0..2 {
        if conn.is_none() {
            let s = TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
            *conn = Some(s);
        }
        let s = conn.as_mut()?;
        if s.write_all(b"GET /who HTTP/1.1\r\nHost: app.test\r\n\r\n").is_err() {
            *conn = None;
            continue;
        }
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(r) = parse_response(&buf) {
                if r.header("Connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
                    *conn = None;
                }
                return (r.status == 200).then(|| r.text());
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) if buf.is_empty() => {
                    // nginx closed an idle connection before this request: not a failure, reconnect.
                    *conn = None;
                    break;
                }
                Ok(0) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }
    None
}

#[test]
fn nginx_balances_two_instances_through_a_reload_and_a_restart_without_a_failed_request() {
    let a_project = Project::simple(&api("A"), &[("/who", "who")], "");
    let b_project = Project::simple(&api("B"), &[("/who", "who")], "");
    let b_command = |bind: &str| {
        let mut cmd = Command::new(BIN);
        cmd.arg(b_project.file()).args(["--bind", bind, "--workers", "2"]).env_remove("VIRTUAL_ENV");
        cmd
    };
    let a = Server::start(&a_project, &[]);
    let mut b = Server::spawn(b_command("127.0.0.1:0"));
    let nginx = start_nginx(&[a.addr, b.addr]);
    let port = nginx.port;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed, seen) = (stop.clone(), ok.clone(), failed.clone(), seen.clone());
            std::thread::spawn(move || {
                let mut conn = None;
                // Bounded: at most 200 requests/s per client, and at most 2 minutes.
                let deadline = std::time::Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                    match get(&mut conn, port) {
                        Some(body) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            let mut seen = seen.lock().unwrap();
                            let tag = body.rsplit_once(' ').map(|(t, _)| t.to_string()).unwrap_or_default();
                            if !seen.contains(&tag) {
                                seen.push(tag);
                            }
                            // X-Forwarded-For from nginx (127.0.0.1 is trusted): the client is 127.0.0.1 too.
                            assert!(body.ends_with(" 127.0.0.1"), "{body}");
                        }
                        None => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    let progress = |n: usize, what: &str| {
        let target = ok.load(Ordering::Relaxed) + n;
        wait_for(60, what, || ok.load(Ordering::Relaxed) >= target);
    };
    progress(100, "requests through nginx");
    {
        let s = seen.lock().unwrap();
        assert!(s.contains(&"A v1".to_string()) && s.contains(&"B v1".to_string()), "{s:?}");
    }

    // A: new code, SIGHUP (single process: checks, drains, re-executes).
    std::fs::write(a_project.dir.join("main.py"), api("A").replace("v1", "v2")).unwrap();
    a.signal("HUP");
    a.wait_stderr("reloaded: serving the new code", 60);
    wait_for(60, "A's new code through nginx", || seen.lock().unwrap().contains(&"A v2".to_string()));
    progress(100, "requests after the reload");

    // B: SIGTERM, exit, start again on the same port.
    b.signal("TERM");
    assert_eq!(b.wait_exit(30).code(), Some(0), "{}", b.stderr());
    progress(50, "requests while B is down");
    let b_addr = b.addr;
    drop(b);
    // Again where nginx expects it; if another process took that port while
    // B was down, on a port the system picks, and nginx is told.
    b = match Server::try_spawn(b_command(&b_addr.to_string())) {
        Ok(b) => b,
        Err(why) => {
            assert!(why.contains("Address already in use"), "{why}");
            let b = Server::spawn(b_command("127.0.0.1:0"));
            nginx.set_upstreams(&[a.addr, b.addr]);
            b
        }
    };
    progress(200, "requests after B's restart");
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} failed of {}; A:\n{}\nB:\n{}", ok + failed, a.stderr(), b.stderr());
    assert!(ok >= 450, "{ok}");
    // B's new processes served too (nginx came back to it).
    wait_for(60, "B to serve again", || {
        let mut conn = None;
        (0..10).filter_map(|_| get(&mut conn, port)).any(|body| body.starts_with("B v1"))
    });
}
