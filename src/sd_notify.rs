//! systemd's readiness protocol (`Type=notify`): with `NOTIFY_SOCKET` set,
//! pyrs sends `READY=1` (with `MAINPID`) once it serves, `RELOADING=1` when a
//! SIGHUP reload begins and `READY=1` again when it is over, and
//! `STOPPING=1` at shutdown. Each message is one datagram to that socket
//! (a path, or an abstract name starting with `@`).
//!
//! The variable is taken out of the environment at start-up, so worker
//! processes and programs that handler code runs do not talk to systemd on
//! the server's behalf; a single-process reload passes it on to the new image.

use std::sync::OnceLock;

static SOCKET: OnceLock<Option<String>> = OnceLock::new();
const VAR: &str = "NOTIFY_SOCKET";

/// Reads and removes `NOTIFY_SOCKET` (call once, before other threads exist).
pub fn init() {
    SOCKET.get_or_init(|| {
        let v = std::env::var(VAR).ok().filter(|v| !v.is_empty());
        std::env::remove_var(VAR);
        v
    });
}

/// The socket, for a process that takes over as the main process (re-exec).
pub fn socket() -> Option<&'static str> {
    SOCKET.get().and_then(|s| s.as_deref())
}

/// Sends `state` (`"READY=1"`, ...); does nothing without `NOTIFY_SOCKET`.
pub fn notify(state: &str) {
    let Some(path) = socket() else { return };
    if let Err(e) = send(path, state) {
        log::warn!("cannot notify systemd at {path}: {e}");
    }
}

/// `READY=1` with this process as the main one.
pub fn ready() {
    notify(&format!("READY=1\nMAINPID={}\nSTATUS=serving", std::process::id()));
}

/// `RELOADING=1` with the monotonic time systemd asks for.
pub fn reloading() {
    // SAFETY: clock_gettime writes one timespec.
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let usec = ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000;
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading"));
}

pub fn stopping() {
    notify("STOPPING=1\nSTATUS=stopping");
}

fn send(path: &str, state: &str) -> std::io::Result<()> {
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), path)?;
    }
    Ok(())
}
