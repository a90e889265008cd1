//! systemd's notify protocol, received on a datagram socket the test owns:
//! READY=1 with MAINPID once serving, RELOADING=1 then READY=1 around a
//! SIGHUP reload, STOPPING=1 at shutdown; in both modes.

mod common;
use common::*;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

const API: &str = "class Api:\n    def version(self, request):\n        return 'v1'\n";

/// Receives datagrams until one contains `state` (panics after `secs`); returns it.
fn expect(sock: &UnixDatagram, state: &str, secs: u64, seen: &mut Vec<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {state:?} within {secs} s; received {seen:?}");
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                seen.push(msg.clone());
                if msg.lines().any(|l| l == state) {
                    return msg;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
}

#[test]
fn notifications_in_both_modes() {
    for workers in [None, Some("2")] {
        let dir = temp_dir("notify");
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        let p = Project::simple(API, &[("/version", "version")], "");
        let mut args = vec![];
        if let Some(w) = workers {
            args.extend(["--workers", w]);
        }
        let mut s = Server::start_with(&p, &args, &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
        let mut seen = Vec::new();
        let ready = expect(&sock, "READY=1", 30, &mut seen);
        assert!(ready.contains(&format!("MAINPID={}", s.child.id())), "{ready}");
        // Nothing but the main process talks to systemd (no READY from workers).
        std::fs::write(p.dir.join("main.py"), API.replace("v1", "v2")).unwrap();
        s.signal("HUP");
        let reloading = expect(&sock, "RELOADING=1", 30, &mut seen);
        assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
        let ready = expect(&sock, "READY=1", 60, &mut seen);
        assert!(ready.contains(&format!("MAINPID={}", s.child.id())), "{ready}");
        // READY=1 after a reload means the new code serves.
        assert_eq!(s.get("/version").text(), "v2", "workers {workers:?}");
        s.signal("TERM");
        expect(&sock, "STOPPING=1", 30, &mut seen);
        assert_eq!(s.wait_exit(30).code(), Some(0));
        let readies = seen.iter().filter(|m| m.lines().any(|l| l == "READY=1")).count();
        assert_eq!(readies, 2, "workers {workers:?}: {seen:?}");
    }
}

#[test]
fn the_shipped_unit_is_type_notify_with_reload() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/pyrs.service")).unwrap();
    for line in ["Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "KillSignal=SIGTERM", "NotifyAccess=main"] {
        assert!(unit.lines().any(|l| l.trim() == line), "deploy/pyrs.service lacks {line:?}");
    }
}
