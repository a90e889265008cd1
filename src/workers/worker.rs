//! A worker process, from the moment the template forks it: report to the
//! master, run `post_fork` hooks, open its own SO_REUSEPORT listener and
//! thread pool, serve until SIGTERM, then drain and exit. A watchdog thread
//! enforces `timeout`, `max_requests` and `max_rss_mb`, and stops the worker
//! if the master dies.

use super::ipc::{self, Message, STATUS_FD};
use crate::config::Config;
use crate::observe::{Health, Observer};
use crate::python::PyApp;
use crate::server::activity::Activity;
use crate::server::{self, listener, signals::SignalPipe, ServerConfig};
use pyo3::prelude::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Who this worker is.
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    pub slot: usize,
    pub gen: u64,
    pub master_pid: i32,
}

/// Runs the worker; returns the process exit status. `py` is the forked
/// template's attached main thread.
pub fn run(py: Python<'_>, cfg: &Config, preloaded: Option<Arc<PyApp>>, id: Identity, bind: SocketAddr) -> i32 {
    let pid = std::process::id() as i32;
    // Forked from the single-threaded template: this process's own log writer.
    crate::logging::start_writer();
    let report = |m: Message| {
        let _ = ipc::send(STATUS_FD, &m);
    };
    report(Message::Born { slot: id.slot, gen: id.gen, pid });
    ipc::close(ipc::COMMAND_FD);
    let fatal = |message: String| {
        log::error!("worker {pid} (slot {}) cannot start: {message}", id.slot);
        report(Message::Fatal { slot: id.slot, gen: id.gen, pid, message });
        1
    };

    // Ctrl-C reaches the whole process group; the master alone acts on it.
    // SAFETY: setting a signal to be ignored.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
    let signals = match SignalPipe::install_for(&[libc::SIGTERM]) {
        Ok(s) => s,
        Err(e) => return fatal(format!("cannot install signal handlers: {e}")),
    };
    let app = match preloaded {
        Some(app) => app,
        None => match PyApp::load(&cfg.project_dir, &cfg.modules, &mut |line| log::info!("{line}")) {
            Ok(app) => Arc::new(app),
            Err(e) => return fatal(e.to_string()),
        },
    };
    if let Err(e) = app.call_each("post_fork") {
        return fatal(e);
    }
    let listener = match listener::bind_reuseport(bind, cfg.listen_backlog) {
        Ok(l) => l,
        Err(e) => return fatal(e),
    };
    let layout = crate::observe::layout_for(cfg.thread_count, cfg.modules.len());
    let region = crate::observe::shm::claim(layout);
    let observer =
        match Observer::new(&cfg.observe, &cfg.modules, cfg.thread_count, region, Arc::new(Health::default())) {
            Ok(o) => Arc::new(o),
            Err(e) => return fatal(e),
        };
    let activity = Arc::new(Activity::new(cfg.thread_count));
    let max_requests = cfg.workers.max_requests + jitter(cfg.workers.max_requests_jitter);
    let watchdog = Watchdog {
        activity: activity.clone(),
        id,
        timeout: cfg.workers.timeout,
        max_requests,
        max_rss_bytes: cfg.workers.max_rss_mb * 1024 * 1024,
        routes: cfg.modules.iter().map(|r| r.path.clone()).collect(),
    };
    if let Err(e) = std::thread::Builder::new().name("pyrs-watchdog".into()).spawn(move || watchdog.run()) {
        return fatal(format!("cannot start the watchdog thread: {e}"));
    }
    report(Message::Up { slot: id.slot, gen: id.gen, pid });
    log::info!("worker {pid} (slot {}, generation {}) serving", id.slot, id.gen);

    let server_cfg = ServerConfig {
        thread_count: cfg.thread_count,
        tcp_nodelay: cfg.tcp_nodelay,
        shutdown_timeout: cfg.shutdown_timeout,
        limits: cfg.limits.clone(),
        activity: Some(activity),
        observer,
    };
    let served = py.detach(|| server::serve(app.clone(), listener, signals, server_cfg));
    if let Err(e) = served {
        log::error!("worker {pid}: server failed: {e}");
    }
    crate::app::App::shutdown(&*app);
    log::info!("worker {pid} (slot {}) stopped", id.slot);
    0
}

/// A random number in 0..=max (max_requests_jitter), from the pid and clock.
fn jitter(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let seed = u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0);
    seed % (max + 1)
}

struct Watchdog {
    activity: Arc<Activity>,
    id: Identity,
    timeout: Duration,
    max_requests: u64,
    max_rss_bytes: u64,
    routes: Vec<String>,
}

impl Watchdog {
    fn run(self) {
        let pid = std::process::id() as i32;
        let mut recycle_asked = false;
        let mut stop_asked = false;
        let mut last_rss_check = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(100));
            // SAFETY: getppid and kill have no memory-safety preconditions.
            let parent = unsafe { libc::getppid() };
            if parent != self.id.master_pid && !stop_asked {
                log::warn!("worker {pid}: the master ({}) is gone; stopping", self.id.master_pid);
                stop_asked = true;
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            if let Some((busy, route)) = self.activity.longest_busy() {
                if busy > self.timeout {
                    let route = self.routes.get(route).map(String::as_str).unwrap_or("?");
                    log::error!(
                        "worker {pid}: handler for route {route} has run for {:.1} s (timeout {:.1} s); killing the worker",
                        busy.as_secs_f64(),
                        self.timeout.as_secs_f64()
                    );
                    // The line must reach stderr before the process dies.
                    crate::logging::flush(crate::logging::EXIT_NOW_FLUSH);
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            if recycle_asked {
                continue;
            }
            let mut reason = None;
            if self.max_requests > 0 && self.activity.requests() >= self.max_requests {
                reason =
                    Some(format!("served {} requests (max_requests {})", self.activity.requests(), self.max_requests));
            }
            if self.max_rss_bytes > 0 && last_rss_check.elapsed() >= Duration::from_secs(1) {
                last_rss_check = Instant::now();
                if let Some(rss) = resident_bytes() {
                    if rss > self.max_rss_bytes {
                        reason = Some(format!(
                            "resident memory {} MB exceeds max_rss_mb {}",
                            rss >> 20,
                            self.max_rss_bytes >> 20
                        ));
                    }
                }
            }
            if let Some(reason) = reason {
                log::info!("worker {pid}: asking to be replaced: {reason}");
                let _ = ipc::send(STATUS_FD, &Message::Recycle { slot: self.id.slot, gen: self.id.gen, pid, reason });
                recycle_asked = true;
            }
        }
    }
}

/// This process's resident set size, from /proc/self/statm.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * if page > 0 { page as u64 } else { 4096 })
}
