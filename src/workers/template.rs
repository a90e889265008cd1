//! The template process: one per code generation. It starts Python, imports
//! and instantiates the handlers once (`preload`), freezes the heap
//! (`gc.collect(); gc.freeze()`) so forked workers keep sharing it, then
//! forks a worker each time the master asks. It never serves. It dies with
//! the master (`PR_SET_PDEATHSIG`, set by the master before exec), even in
//! the middle of loading.

use super::ipc::{self, Message, COMMAND_FD, STATUS_FD};
use super::worker::{self, Identity};
use super::{ENV_GENERATION, ENV_MASTER_PID};
use crate::config::Config;
use crate::python::{interpreter, PyApp};
use pyo3::ffi;
use pyo3::prelude::*;
use std::io::BufRead;
use std::os::fd::FromRawFd;
use std::path::Path;
use std::sync::Arc;

fn env<T: std::str::FromStr>(name: &str) -> Result<T, String> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("internal: {name} is missing or invalid"))
}

/// Runs a template until the master closes its command pipe.
pub fn run(cfg: &Config, venv: Option<&Path>) -> Result<(), String> {
    let gen: u64 = env(ENV_GENERATION)?;
    let master_pid: i32 = env(ENV_MASTER_PID)?;
    // The master set PR_SET_PDEATHSIG (SIGKILL) before exec: this process dies
    // with it. A master that died before that call left this process
    // re-parented already: checked once, now, before any slow import.
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != master_pid {
        return Err(format!("the master ({master_pid}) is gone before the template started"));
    }
    // The master's listening sockets: held here (never accepted on) for the workers.
    let listeners = crate::server::listener::inherited()?.ok_or("internal: no listening sockets from the master")?;
    // The master acts on terminal and control signals; the template ignores them.
    // SAFETY: setting dispositions to SIG_IGN.
    unsafe {
        for sig in [libc::SIGINT, libc::SIGHUP, libc::SIGTTIN, libc::SIGTTOU, libc::SIGUSR1] {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
    // The master's shared metrics memory, inherited by every worker forked from here.
    crate::observe::shm::attach_inherited();
    interpreter::initialize(venv)?;
    // Inherited by the workers through fork.
    crate::http::forwarded::install(cfg.forwarded_allow_ips.clone());
    let announce = |line: String| {
        if gen == 1 {
            crate::say!("{line}");
        } else {
            log::info!("{line}");
        }
    };
    let app = if cfg.workers.preload {
        let mut announce = announce;
        Some(Arc::new(PyApp::load(&cfg.project_dir, &cfg.modules, &mut announce).map_err(|e| e.to_string())?))
    } else {
        None
    };
    Python::attach(|py| -> Result<(), String> {
        let gc = py.import("gc").map_err(|e| e.to_string())?;
        gc.call_method0("collect").and_then(|_| gc.call_method0("freeze")).map_err(|e| e.to_string())?;
        let threads: usize =
            py.import("threading").and_then(|t| t.call_method0("active_count")).and_then(|n| n.extract()).unwrap_or(1);
        if threads > 1 {
            log::warn!(
                "handler code started {} Python threads; they do not survive fork into the workers",
                threads - 1
            );
        }
        Ok(())
    })?;
    // Shared by the workers forked below (balancing bursts of connections).
    crate::server::accept_share::create();
    let pid = std::process::id() as i32;
    ipc::send(STATUS_FD, &Message::Ready { gen, pid }).map_err(|e| format!("cannot report to the master: {e}"))?;

    // SAFETY: COMMAND_FD was set up by the master for this process and is owned here.
    let commands = std::io::BufReader::new(unsafe { std::fs::File::from_raw_fd(COMMAND_FD) });
    for line in commands.lines() {
        let Ok(line) = line else { break };
        let Some(slot) = line.strip_prefix("spawn ").and_then(|s| s.trim().parse::<usize>().ok()) else {
            log::warn!("template {pid}: unknown command {line:?}");
            continue;
        };
        // A command still in the pipe when the master died: nobody would
        // supervise that worker.
        // SAFETY: getppid has no preconditions.
        if unsafe { libc::getppid() } != master_pid {
            log::warn!("template {pid}: the master ({master_pid}) is gone; not starting a worker, exiting");
            break;
        }
        fork_worker(cfg, app.clone(), Identity { slot, gen, master_pid, birth_parent: master_pid });
    }
    drop(listeners);
    Ok(())
}

/// Forks twice so the worker is orphaned to the master (a child subreaper),
/// which then sees its exit. Python's fork protocol is followed around the
/// first fork; the intermediate process only forks again, hands the
/// worker's metrics region over to it, and exits.
fn fork_worker(cfg: &Config, app: Option<Arc<PyApp>>, id: Identity) {
    // Claimed here and handed over before the intermediate exits: once this
    // spawn is done, the region names the worker (shm::reserve).
    let region = crate::observe::shm::reserve(crate::observe::layout_of(cfg));
    Python::attach(|py| {
        // SAFETY: this process has exactly one thread (the template never starts
        // others; handler threads were warned about), and the fork protocol
        // PyOS_BeforeFork / AfterFork_{Child,Parent} is followed.
        unsafe {
            ffi::PyOS_BeforeFork();
            let pid = libc::fork();
            if pid < 0 {
                ffi::PyOS_AfterFork_Parent();
                log::error!("fork failed: {}", std::io::Error::last_os_error());
                if let Some(r) = &region {
                    r.release();
                }
                return;
            }
            if pid == 0 {
                ffi::PyOS_AfterFork_Child();
                // The worker's parent is this process until it exits (not
                // getppid() in the worker: by then this process may be gone
                // and the worker re-parented, to init if the master died too).
                let intermediate = libc::getpid();
                let grandchild = libc::fork();
                if grandchild != 0 {
                    if let Some(r) = &region {
                        if grandchild > 0 {
                            r.hand_over(grandchild as u32);
                        } else {
                            r.release();
                        }
                    }
                    libc::_exit(if grandchild < 0 { 1 } else { 0 });
                }
                let id = worker::Identity { birth_parent: intermediate, ..id };
                let code = worker::run(py, cfg, app, id, region);
                crate::logging::flush(crate::logging::EXIT_FLUSH);
                std::process::exit(code);
            }
            ffi::PyOS_AfterFork_Parent();
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
        }
    });
}
