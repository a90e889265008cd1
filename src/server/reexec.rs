//! SIGHUP in a single process: the server re-executes itself with its
//! listening sockets inherited, so the port never closes and connections
//! that arrive meanwhile wait in the listen queue instead of being refused.
//!
//! First `pyrs ... --check` runs in a child process while serving goes on:
//! if the new code does not load, the reload is cancelled and the running
//! code keeps serving. Then in-flight requests drain (`shutdown_timeout`),
//! `close()` and atexit hooks run, and the process execs itself (same pid,
//! so systemd, a container runtime or a shell keep tracking it).

use super::listener::{self, Listener};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// Runs `pyrs ARGS --check` (the same arguments and environment): Ok when
/// the project loads.
pub fn check_new_code() -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the pyrs executable: {e}"))?;
    let out = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .arg("--check")
        .env_remove(listener::ENV_LISTEN_FDS)
        .env_remove(listener::ENV_OWNS_PATHS)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run the check: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(format!("the new code does not load:\n{}", err.trim_end()))
}

/// Replaces this process with a fresh `pyrs` (same arguments) that inherits
/// `listeners`. Returns only on failure (the message).
pub fn exec_with(listeners: Vec<Listener>) -> String {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return format!("reload failed: cannot find the pyrs executable: {e}"),
    };
    let sources: Vec<RawFd> = listeners.iter().map(|l| l.as_raw_fd()).collect();
    let targets: Vec<RawFd> = (0..sources.len() as RawFd).map(|i| listener::FIRST_INHERITED_FD + i).collect();
    let mut scratch = vec![0; sources.len()];
    let mut cmd = Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .env(listener::ENV_LISTEN_FDS, sources.len().to_string())
        .env(listener::ENV_OWNS_PATHS, "1");
    if let Some(socket) = crate::sd_notify::socket() {
        cmd.env("NOTIFY_SOCKET", socket);
    }
    // SAFETY: only async-signal-safe calls between the (absent) fork and exec;
    // the vectors were allocated before.
    unsafe {
        cmd.pre_exec(move || listener::dup_into_place(&sources, &targets, &mut scratch));
    }
    log::info!("re-executing pyrs with the listening sockets inherited");
    // The new image owns the socket files now.
    let mut listeners = listeners;
    for l in &mut listeners {
        l.disown_path();
    }
    // Queued log lines would die with this image.
    crate::logging::flush(crate::logging::EXIT_FLUSH);
    let err = cmd.exec();
    format!("reload failed: cannot re-execute pyrs: {err}")
}
