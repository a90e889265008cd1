//! pyrs as PID 1 (a container's entry point). The kernel makes PID 1 the
//! parent of every orphan, and a single-process server would never reap
//! them (a handler that starts a background process would leave a zombie
//! per request). So PID 1 forks once, before any thread or Python exists:
//! the parent stays PID 1, forwards signals to the server (its child) and
//! reaps every process that ends, and exits with the server's status.
//! Python's own children are the server's children, reaped by Python.

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2, SIGWINCH};

/// When this process is PID 1, turns it into the init process and returns
/// only in the child, which goes on as the server. Otherwise returns at once.
pub fn init_if_pid1() {
    if std::process::id() != 1 {
        return;
    }
    // SAFETY: called from main before any other thread exists.
    let child = unsafe { libc::fork() };
    if child < 0 {
        log::warn!("running as PID 1 without an init process (fork failed: {})", std::io::Error::last_os_error());
        return;
    }
    if child == 0 {
        return;
    }
    for sig in [SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGTTIN, SIGTTOU, SIGWINCH] {
        // SAFETY: the handler only calls kill(2), which is async-signal-safe.
        let _ = unsafe {
            signal_hook::low_level::register(sig, move || {
                libc::kill(child, sig);
            })
        };
    }
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid out-pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid == child {
            let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
            std::process::exit(code);
        }
        if pid < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
            std::process::exit(1);
        }
    }
}
