//! A worker process, from the moment the template forks it: report to the
//! master, run `post_fork` hooks, serve the master's listening sockets
//! (inherited through the template) with its own thread pool until SIGTERM,
//! then drain and exit. A watchdog thread enforces `timeout`,
//! `max_requests` and `max_rss_mb`, and stops the worker if the master dies.

use super::ipc::{self, Message, STATUS_FD};
use crate::config::Config;
use crate::observe::{Health, Observer};
use crate::python::PyApp;
use crate::server::activity::Activity;
use crate::server::timeout::{self, HandlerTimeout};
use crate::server::{self, listener, signals::SignalPipe, ServerConfig};
use pyo3::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Who this worker is.
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    pub slot: usize,
    pub gen: u64,
    pub master_pid: i32,
    /// The parent right after the fork: the intermediate process, until it
    /// exits and the worker is re-parented to the master (a subreaper). Under
    /// load that can take longer than the watchdog's first look.
    pub birth_parent: i32,
}

/// Runs the worker; returns the process exit status. `py` is the forked
/// template's attached main thread; `region` is the shared metrics region the
/// template claimed for this worker (None: it counts in a private one).
pub fn run(
    py: Python<'_>,
    cfg: &Config,
    preloaded: Option<Arc<PyApp>>,
    id: Identity,
    region: Option<crate::observe::metrics::Region>,
) -> i32 {
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
    // The master's sockets, shared by every worker (inherited through the template).
    let listeners = match listener::inherited() {
        Ok(Some(l)) => l,
        Ok(None) => return fatal("internal: no listening sockets from the master".into()),
        Err(e) => return fatal(e),
    };
    let region = region.unwrap_or_else(|| crate::observe::metrics::Region::heap(crate::observe::layout_of(cfg)));
    let observer =
        match Observer::new(&cfg.observe, &cfg.modules, cfg.thread_count, region, Arc::new(Health::default())) {
            Ok(o) => Arc::new(o),
            Err(e) => return fatal(e),
        };
    if let Err(e) = app.close_in_forked_children(&listeners) {
        return fatal(e);
    }
    // Pool threads first, then batch threads (server::batch).
    let activity = Arc::new(Activity::new(cfg.thread_count + cfg.batch_threads()));
    let max_requests = cfg.workers.max_requests + jitter(cfg.workers.max_requests_jitter);
    let watchdog = Watchdog {
        activity: activity.clone(),
        id,
        max_requests,
        max_private_bytes: cfg.workers.max_rss_mb * 1024 * 1024,
    };
    if let Err(e) = std::thread::Builder::new().name("pyrs-watchdog".into()).spawn(move || watchdog.run()) {
        return fatal(format!("cannot start the watchdog thread: {e}"));
    }
    // A handler still stuck after pyrs.Timeout and the grace: tell the master
    // (it replaces this worker at once and counts the route), then die.
    // Coroutines are bounded by the same timeout, on the asyncio loop.
    crate::python::aio::set_handler_timeout(cfg.workers.timeout);
    let handler_timeout = HandlerTimeout {
        timeout: cfg.workers.timeout,
        grace: HandlerTimeout::grace_for(cfg.workers.timeout),
        routes: cfg.modules.iter().map(|r| r.path.clone()).collect(),
        on_stuck: Box::new(move |run, route| {
            log::error!(
                "worker {pid}: handler for route {route} still runs after {:.1} s despite pyrs.Timeout (stuck \
                 outside Python bytecode); killing the worker",
                run.elapsed.as_secs_f64()
            );
            report(Message::Timeout { slot: id.slot, gen: id.gen, pid, route: route.to_string() });
            // The line must reach stderr before the process dies.
            crate::logging::flush(crate::logging::EXIT_NOW_FLUSH);
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }),
    };
    if let Err(e) = timeout::start(app.clone(), activity.clone(), handler_timeout) {
        return fatal(format!("cannot start the timeout thread: {e}"));
    }
    let server_cfg = ServerConfig {
        thread_count: cfg.thread_count,
        tcp_nodelay: cfg.tcp_nodelay,
        shutdown_timeout: cfg.shutdown_timeout,
        limits: cfg.limits.clone(),
        activity: Some(activity),
        observer,
        shared_accept: true,
        // Balances bursts of new connections with the sibling workers.
        accept_share: crate::server::accept_share::Member::join(id.slot),
        stuck_after: Some(cfg.workers.timeout / 2),
        reload_check: None,
        repeat_signal_exits: false,
        // Up once this worker accepts: only then may the master drain an older one.
        on_serving: Some(Box::new(move || {
            let _ = ipc::send(STATUS_FD, &Message::Up { slot: id.slot, gen: id.gen, pid });
            log::info!("worker {pid} (slot {}, generation {}) serving", id.slot, id.gen);
        })),
    };
    let served = py.detach(|| server::serve(app.clone(), listeners, signals, server_cfg));
    let code = match served {
        Ok(_) => 0,
        Err(e) => {
            log::error!("worker {pid}: server failed: {e}");
            1
        }
    };
    crate::app::App::shutdown(&*app);
    log::info!("worker {pid} (slot {}) stopped", id.slot);
    code
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

/// How often the watchdog looks (parent, heartbeat, limits).
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// How often the master hears that this worker is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

struct Watchdog {
    activity: Arc<Activity>,
    id: Identity,
    max_requests: u64,
    max_private_bytes: u64,
}

impl Watchdog {
    fn run(self) {
        let pid = std::process::id() as i32;
        let (slot, gen) = (self.id.slot, self.id.gen);
        let mut recycle_asked = false;
        let mut stop_asked = false;
        let mut last_beat: Option<Instant> = None;
        loop {
            std::thread::sleep(WATCH_EVERY);
            // Polled, not PR_SET_PDEATHSIG: set at birth, that signal would
            // fire when the double fork's intermediate exits (at once), and
            // the re-parenting to the master is only seen by looking anyway.
            // SAFETY: getppid and kill have no memory-safety preconditions.
            let parent = unsafe { libc::getppid() };
            if parent != self.id.master_pid && parent != self.id.birth_parent && !stop_asked {
                log::warn!("worker {pid}: the master ({}) is gone; stopping", self.id.master_pid);
                stop_asked = true;
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            // The heartbeat comes from this thread, not from the pool: a
            // worker stopped as a whole (SIGSTOP, swapped out) goes silent,
            // one busy in long handlers does not (timeout handles those).
            if last_beat.is_none_or(|t| t.elapsed() >= HEARTBEAT) {
                last_beat = Some(Instant::now());
                let _ = ipc::send(STATUS_FD, &Message::Beat { slot, gen, pid });
            }
            if recycle_asked {
                continue;
            }
            if self.max_requests > 0 && self.activity.requests() >= self.max_requests {
                let reason =
                    format!("served {} requests (max_requests {})", self.activity.requests(), self.max_requests);
                log::info!("worker {pid}: asking to be replaced: {reason}");
                let _ = ipc::send(STATUS_FD, &Message::Recycle { slot, gen, pid, reason });
                recycle_asked = true;
                continue;
            }
            // Private memory (USS): what this worker alone holds. Pages shared
            // with the template (the preloaded model) are not counted.
            if self.max_private_bytes > 0 {
                if let Some(private) = private_bytes() {
                    if private > self.max_private_bytes {
                        let reason = format!(
                            "private memory {} MB exceeds max_rss_mb {}",
                            private >> 20,
                            self.max_private_bytes >> 20
                        );
                        log::warn!("worker {pid}: {reason}; stopping at once and asking to be replaced");
                        let _ = ipc::send(STATUS_FD, &Message::Over { slot, gen, pid, reason });
                        recycle_asked = true;
                    }
                }
            }
        }
    }
}

/// This process's private memory (USS: its private clean and dirty pages),
/// from /proc/self/smaps_rollup.
pub fn private_bytes() -> Option<u64> {
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
    let mut kib = 0u64;
    let mut found = false;
    for line in rollup.lines() {
        let mut parts = line.split_whitespace();
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else { continue };
        if matches!(name, "Private_Clean:" | "Private_Dirty:") {
            kib += value.parse::<u64>().ok()?;
            found = true;
        }
    }
    found.then_some(kib * 1024)
}

/// This process's resident set size, from /proc/self/statm.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * if page > 0 { page as u64 } else { 4096 })
}
