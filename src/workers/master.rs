//! The supervisor. Pure Rust: it never starts Python, so it stays small and
//! cannot be wedged by handler code. It owns the listening sockets and the
//! workers' shared metrics memory, starts a template per code generation,
//! keeps one worker per slot alive, recycles workers on request, and turns
//! signals into graceful stops, rolling reloads and scaling.
//!
//! Restart policy: only a start-up in which no worker ever served stops the
//! server (a slot failing 3 times in a row); once any worker has served, a
//! failing slot retries with capped backoff (0.1 s doubling to 10 s) and
//! logs each failure while the healthy workers keep serving. A worker killed
//! for a handler stuck past `timeout`, or for a missed heartbeat (stopped,
//! wedged), is replaced at once: those are not crash loops.

use super::ipc::{self, Message};
use super::{ENV_GENERATION, ENV_MASTER_PID, ENV_ROLE};
use crate::config::Config;
use crate::observe::fleet::{Fleet, ShardId, FIRST_SHARD};
use crate::observe::metrics::Layout;
use crate::observe::shm::{self, Mapping};
use crate::observe::view::RouteLabel;
use crate::server::listener::{self, Listener};
use crate::server::signals::{Signal, SignalPipe};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SIGNALS: Token = Token(0);
const STATUS: Token = Token(1);
/// Status bytes kept while waiting for a line end (a line is under PIPE_BUF).
const STATUS_BACKLOG: usize = 64 * 1024;
/// Consecutive workers of one slot that die before serving, after which the
/// server stops instead of looping.
const MAX_START_FAILURES: u32 = 3;
/// A worker that lived this long resets its slot's failure count.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// A serving worker silent for this long (no heartbeat) is killed and replaced.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting,
    Up,
    Draining,
}

struct WorkerProc {
    slot: usize,
    gen: u64,
    state: State,
    born: Instant,
    /// Its last heartbeat (or birth).
    last_beat: Instant,
    /// Why the master or the worker itself killed it, when that is no crash.
    killed_for: Option<String>,
}

struct Template {
    pid: i32,
    gen: u64,
    /// Write end of its command pipe; closing it tells the template to exit.
    commands: Option<std::fs::File>,
    ready: bool,
    /// Its workers replace the running ones (start-up, SIGHUP). False for a
    /// template that replaces one that died: it only serves new spawns.
    reload: bool,
    /// The metrics shared memory it got (its workers count there).
    shard: ShardId,
}

struct Slot {
    wanted: bool,
    failures: u32,
    respawn_at: Option<Instant>,
    /// A spawn was asked for and its worker has not reported yet.
    pending: bool,
}

struct Master<'a> {
    cfg: &'a Config,
    /// The listening sockets, opened here and inherited by every template
    /// and worker: one accept queue per address for the whole server.
    listeners: Vec<Listener>,
    args: Vec<std::ffi::OsString>,
    status_read: std::fs::File,
    status_write: RawFd,
    templates: Vec<Template>,
    next_gen: u64,
    workers: HashMap<i32, WorkerProc>,
    slots: Vec<Slot>,
    announced: bool,
    /// Some worker reached `up` at least once: failures no longer stop the server.
    ever_up: bool,
    /// Workers killed for a handler stuck past timeout, by route.
    timeout_kills: HashMap<String, u64>,
    /// The generation a SIGHUP reload is bringing up (systemd hears READY=1
    /// once every slot runs it).
    reloading: Option<u64>,
    stopping: Option<Instant>,
    last_fatal: Option<String>,
    pending_line: String,
    /// The workers as /metrics and the status page see them.
    fleet: Arc<Fleet>,
    /// The shared metrics memory new templates get (at fd `shm::FD`), and its shard in the fleet.
    metrics_fd: RawFd,
    metrics_shard: ShardId,
    metrics_env: String,
    /// Its layout and routes: when a reload changes them, new workers count
    /// in a new shared memory ([`Master::follow_metrics_shape`]).
    metrics_shape: (Layout, Vec<RouteLabel>),
    /// Regions in each shared memory.
    metrics_regions: usize,
}

/// Runs the supervisor until the server stops.
pub fn run(cfg: &Config) -> Result<(), String> {
    let count = cfg.workers.resolved_count();
    let mut signals = SignalPipe::install_for(&[
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGCHLD,
        libc::SIGTTIN,
        libc::SIGTTOU,
        libc::SIGUSR1,
    ])
    .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    // Orphaned workers (their template-side parent exits at once) become ours.
    // SAFETY: prctl with an integer argument.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(format!("cannot become a child subreaper: {}", std::io::Error::last_os_error()));
    }
    // The master listens but never accepts: the workers do, from the same sockets.
    let listeners = listener::open_all(&cfg.listeners, cfg.listen_backlog, cfg.unix_socket_mode)?;

    let (status_r, status_w) = ipc::pipe().map_err(|e| format!("cannot create the status pipe: {e}"))?;
    set_nonblocking(status_r);
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    poll.registry().register(signals.receiver(), SIGNALS, Interest::READABLE).map_err(|e| e.to_string())?;
    poll.registry().register(&mut SourceFd(&status_r), STATUS, Interest::READABLE).map_err(|e| e.to_string())?;

    crate::say!(
        "Starting pyrs {} supervisor (pid {}) with {count} workers",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    );
    // Every worker's metrics, in memory the master can read after the worker is gone.
    // The same layout the workers claim (batch threads have rows too).
    let layout = crate::observe::layout_of(cfg);
    let labels = RouteLabel::for_routes(&cfg.modules);
    let regions = (4 * count + 8).clamp(16, 1024);
    let (mapping, metrics_fd) = Mapping::create(layout, regions)?;
    let fleet = Arc::new(Fleet::new(&mapping, labels.clone()));
    let metrics_env = mapping.env_value();
    // The fleet's regions keep it mapped, as long as the shard lives.
    drop(mapping);
    if let Some(addr) = cfg.observe.admin_listen {
        crate::observe::admin::start(listener::bind(addr, 64), fleet.clone())?;
    }
    let mut m = Master {
        cfg,
        listeners,
        args: std::env::args_os().skip(1).collect(),
        // SAFETY: status_r is a fresh descriptor owned from here on.
        status_read: unsafe { std::fs::File::from_raw_fd(status_r) },
        status_write: status_w,
        templates: Vec::new(),
        next_gen: 1,
        workers: HashMap::new(),
        slots: (0..count).map(|_| Slot { wanted: true, failures: 0, respawn_at: None, pending: false }).collect(),
        announced: false,
        ever_up: false,
        timeout_kills: HashMap::new(),
        reloading: None,
        stopping: None,
        last_fatal: None,
        pending_line: String::new(),
        fleet,
        metrics_fd,
        metrics_shard: FIRST_SHARD,
        metrics_env,
        metrics_shape: (layout, labels),
        metrics_regions: regions,
    };
    m.spawn_template(true)?;
    let mut events = Events::with_capacity(64);
    loop {
        let timeout = m.next_timeout();
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(format!("poll failed: {e}"));
            }
        }
        for s in signals.drain() {
            m.on_signal(s)?;
        }
        m.read_status()?;
        m.reap()?;
        m.check_heartbeats();
        m.respawn_due();
        if let Some(since) = m.stopping {
            let alive = m.workers.len() + m.templates.len();
            if alive == 0 {
                log::info!("stopped");
                return Ok(());
            }
            if since.elapsed() > m.cfg.shutdown_timeout + Duration::from_secs(3) {
                log::warn!("{alive} process(es) still running after shutdown_timeout; killing them");
                m.kill_all(libc::SIGKILL);
                return Ok(());
            }
        }
    }
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on a descriptor this process owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

fn describe(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("was killed by signal {}", Signal(libc::WTERMSIG(status)))
    } else {
        format!("ended ({status})")
    }
}

impl Master<'_> {
    fn next_timeout(&self) -> Duration {
        let mut t = Duration::from_millis(500);
        if self.stopping.is_some() {
            t = Duration::from_millis(50);
        }
        // A respawn waits for a loaded template (announced by a status line):
        // without one, its time passing is no reason to wake (no busy loop).
        if !self.templates.iter().any(|t| t.ready && t.commands.is_some()) {
            return t;
        }
        let now = Instant::now();
        for s in &self.slots {
            if let Some(at) = s.respawn_at {
                t = t.min(at.saturating_duration_since(now));
            }
        }
        t
    }

    /// Kills serving workers whose heartbeat stopped (SIGSTOP, a wedged
    /// process): their watchdog thread runs inside them, so only the master
    /// can notice.
    fn check_heartbeats(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        for (&pid, w) in self.workers.iter_mut() {
            if w.state == State::Up && w.killed_for.is_none() && w.last_beat.elapsed() > HEARTBEAT_TIMEOUT {
                log::error!(
                    "worker {pid} (slot {}) sent no heartbeat for {:.1} s (stopped or wedged); killing and replacing it",
                    w.slot,
                    w.last_beat.elapsed().as_secs_f64()
                );
                w.killed_for = Some("no heartbeat".into());
                // SAFETY: signalling a child process.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }

    fn spawn_template(&mut self, reload: bool) -> Result<(), String> {
        let gen = self.next_gen;
        self.next_gen += 1;
        let (cmd_r, cmd_w) = ipc::pipe().map_err(|e| format!("cannot create a command pipe: {e}"))?;
        let exe = std::env::current_exe().map_err(|e| format!("cannot find the pyrs executable: {e}"))?;
        let status_w = self.status_write;
        let mut cmd = Command::new(exe);
        cmd.args(&self.args)
            .env(ENV_ROLE, "template")
            .env(ENV_GENERATION, gen.to_string())
            .env(ENV_MASTER_PID, std::process::id().to_string())
            .env(shm::ENV, &self.metrics_env)
            .env(listener::ENV_LISTEN_FDS, self.listeners.len().to_string())
            .env_remove("NOTIFY_SOCKET")
            .env_remove(listener::ENV_OWNS_PATHS);
        // The pipes on 3 and 4, the metrics region on shm::FD, the listening
        // sockets from FIRST_INHERITED_FD on.
        let mut sources = vec![status_w, cmd_r, self.metrics_fd];
        sources.extend(self.listeners.iter().map(|l| l.as_raw_fd()));
        let mut targets = vec![ipc::STATUS_FD, ipc::COMMAND_FD, shm::FD];
        targets.extend((0..self.listeners.len() as RawFd).map(|i| listener::FIRST_INHERITED_FD + i));
        let mut scratch = vec![0; sources.len()];
        // SAFETY: only async-signal-safe calls (fcntl, dup2, prctl) between
        // fork and exec; the vectors were allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                listener::dup_into_place(&sources, &targets, &mut scratch)?;
                // A template dies with the master, even in the middle of a slow
                // import (its command pipe's EOF is only read once loaded). The
                // signal follows the death of the forking thread: this is the
                // main thread, which lives as long as the master. The template
                // checks its parent once more at start (template::run), for a
                // master that died before this call.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| format!("cannot start a template process: {e}"));
        ipc::close(cmd_r);
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                ipc::close(cmd_w);
                return Err(e);
            }
        };
        log::info!("template {} (generation {gen}) starting", child.id());
        // SAFETY: cmd_w is a fresh descriptor owned from here on.
        let commands = Some(unsafe { std::fs::File::from_raw_fd(cmd_w) });
        let shard = self.metrics_shard;
        self.templates.push(Template { pid: child.id() as i32, gen, commands, ready: false, reload, shard });
        Ok(())
    }

    /// The newest template that has loaded.
    fn ready_template(&mut self) -> Option<&mut Template> {
        self.templates.iter_mut().rev().find(|t| t.ready && t.commands.is_some())
    }

    fn spawn_worker(&mut self, slot: usize) {
        if self.stopping.is_some() || !self.slots[slot].wanted {
            return;
        }
        let Some(t) = self.ready_template() else { return };
        let Some(commands) = t.commands.as_mut() else { return };
        use std::io::Write;
        if let Err(e) = commands.write_all(format!("spawn {slot}\n").as_bytes()) {
            log::error!("cannot ask template {} for a worker: {e}", t.pid);
            return;
        }
        log::debug!("asked template {} for a worker in slot {slot}", t.pid);
        self.slots[slot].pending = true;
        self.slots[slot].respawn_at = None;
    }

    fn on_signal(&mut self, s: Signal) -> Result<(), String> {
        match s.0 {
            libc::SIGINT | libc::SIGTERM => {
                if self.stopping.is_some() {
                    log::warn!("second signal ({s}): killing the workers and exiting now");
                    self.kill_all(libc::SIGKILL);
                    crate::logging::flush(crate::logging::EXIT_NOW_FLUSH);
                    std::process::exit(1);
                }
                log::info!(
                    "{s} received: stopping the workers (in-flight requests finish, up to {:?})",
                    self.cfg.shutdown_timeout
                );
                self.stopping = Some(Instant::now());
                self.fleet.stopping();
                crate::sd_notify::stopping();
                self.kill_all(libc::SIGTERM);
                for t in &mut self.templates {
                    t.commands = None;
                }
            }
            libc::SIGHUP if self.stopping.is_none() => {
                if self.templates.iter().any(|t| !t.ready) {
                    log::warn!("SIGHUP ignored: a reload is already in progress");
                } else {
                    log::info!("SIGHUP received: reloading (new workers with freshly imported code)");
                    crate::sd_notify::reloading();
                    if let Some(new) = self.reread_config() {
                        self.warn_about_unapplied_settings(&new);
                        self.follow_metrics_shape(&new);
                    }
                    self.reloading = Some(self.next_gen);
                    self.spawn_template(true)?;
                }
            }
            libc::SIGTTIN if self.stopping.is_none() => {
                self.slots.push(Slot { wanted: true, failures: 0, respawn_at: None, pending: false });
                log::info!("SIGTTIN: adding a worker ({} wanted)", self.wanted());
                self.spawn_worker(self.slots.len() - 1);
            }
            libc::SIGTTOU if self.stopping.is_none() => {
                if self.wanted() <= 1 {
                    log::warn!("SIGTTOU ignored: at least one worker must run");
                } else if let Some(slot) = self.slots.iter().rposition(|s| s.wanted) {
                    self.slots[slot].wanted = false;
                    log::info!("SIGTTOU: removing a worker ({} wanted)", self.wanted());
                    self.drain_slot(slot, None, "scale_down");
                }
            }
            libc::SIGUSR1 => {
                // Logrotate's signal: every worker reopens its access log.
                for &pid in self.workers.keys() {
                    // SAFETY: signalling a child process.
                    unsafe { libc::kill(pid, libc::SIGUSR1) };
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The configuration as a new template will read it (None when it does
    /// not load: the template reports why).
    fn reread_config(&self) -> Option<Config> {
        let cli = crate::cli::Cli::parse().ok()?;
        Config::load_layered(&cli.project, cli.env, cli.flags).ok()
    }

    /// A reload starts new workers on the same sockets: settings that only
    /// a restart applies (where to listen) are reported when they changed.
    fn warn_about_unapplied_settings(&self, new: &Config) {
        if let Some(why) = listener::differences(&new.listeners, &self.listeners) {
            log::warn!("{why}: a reload keeps the listening sockets; restart pyrs to listen elsewhere");
        }
        if new.workers.count != self.cfg.workers.count {
            log::warn!("workers changed in the configuration: a reload keeps the number of workers (restart pyrs, or send SIGTTIN/SIGTTOU)");
        }
    }

    /// When `new` changes the routes or the threads, the metrics regions of
    /// the workers it starts have another layout: they get a shared memory
    /// of their own, which the fleet adds up with the others (the old workers
    /// keep theirs until they exit; then [`Master::free_idle_metrics`] drops it).
    fn follow_metrics_shape(&mut self, new: &Config) {
        let shape = (crate::observe::layout_of(new), RouteLabel::for_routes(&new.modules));
        if shape == self.metrics_shape {
            return;
        }
        match Mapping::create(shape.0, self.metrics_regions) {
            Ok((mapping, fd)) => {
                self.metrics_shard = self.fleet.add_layout(&mapping, shape.1.clone());
                // Templates already started keep their own copy of the old descriptor.
                ipc::close(self.metrics_fd);
                self.metrics_fd = fd;
                self.metrics_env = mapping.env_value();
                self.metrics_shape = shape;
                log::info!("the routes or threads changed: new workers count their metrics in a new shared memory");
                self.free_idle_metrics();
            }
            Err(e) => log::warn!("{e}; the new workers' metrics stay out of /metrics"),
        }
    }

    /// Drops the metrics shared memories no process uses any more: not the
    /// one new templates get, none a live template holds (it may still fork
    /// workers into it), none with a region a worker owns. Their counts stay
    /// in the fleet's totals.
    fn free_idle_metrics(&self) {
        let keep: Vec<ShardId> = self.templates.iter().map(|t| t.shard).chain([self.metrics_shard]).collect();
        let freed = self.fleet.drop_idle_shards(&keep);
        if freed > 0 {
            log::debug!("freed {freed} metrics shared memory file(s) that no worker uses any more");
        }
    }

    fn wanted(&self) -> usize {
        self.slots.iter().filter(|s| s.wanted).count()
    }

    /// Sends SIGTERM to the workers of `slot` other than `keep`; `reason`
    /// labels their exits in the metrics.
    fn drain_slot(&mut self, slot: usize, keep: Option<i32>, reason: &'static str) {
        for (&pid, w) in self.workers.iter_mut() {
            if w.slot == slot && Some(pid) != keep && w.state != State::Draining {
                w.state = State::Draining;
                self.fleet.draining(pid, reason);
                // SAFETY: signalling a child process.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
    }

    fn kill_all(&mut self, sig: i32) {
        for &pid in self.workers.keys().chain(self.templates.iter().map(|t| &t.pid)) {
            // SAFETY: signalling a child process.
            unsafe { libc::kill(pid, sig) };
        }
    }

    fn read_status(&mut self) -> Result<(), String> {
        let mut buf = [0u8; 4096];
        loop {
            match self.status_read.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.pending_line.push_str(&String::from_utf8_lossy(&buf[..n]));
                    // Workers run handler code, which can write to the inherited status
                    // descriptor: what is not a line of ours is dropped, not kept forever.
                    if self.pending_line.len() > STATUS_BACKLOG && !self.pending_line.contains('\n') {
                        log::warn!("dropped {} bytes on the status pipe without a line end", self.pending_line.len());
                        self.pending_line.clear();
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        while let Some(i) = self.pending_line.find('\n') {
            let line: String = self.pending_line.drain(..=i).collect();
            match Message::parse(&line) {
                Some(msg) if msg.slot().is_some_and(|s| s >= self.slots.len()) => {
                    log::warn!("status line for a slot that does not exist: {:?}", line.trim_end())
                }
                Some(msg) => self.on_message(msg)?,
                None => log::warn!("unexpected status line {:?}", line.trim_end()),
            }
        }
        Ok(())
    }

    fn on_message(&mut self, msg: Message) -> Result<(), String> {
        match msg {
            Message::Ready { gen, pid } => {
                let Some(t) = self.templates.iter_mut().find(|t| t.pid == pid) else { return Ok(()) };
                t.ready = true;
                log::info!("template {pid} (generation {gen}) loaded");
                if !t.reload {
                    // Replaces a template that died: new spawns come from it, nothing else changes.
                    for slot in 0..self.slots.len() {
                        if self.slots[slot].respawn_at.is_some() {
                            self.spawn_worker(slot);
                        }
                    }
                    return Ok(());
                }
                // An older template is no longer needed: new workers come from this one.
                for old in self.templates.iter_mut().filter(|t| t.gen < gen) {
                    old.commands = None;
                }
                for slot in 0..self.slots.len() {
                    if self.slots[slot].wanted {
                        self.spawn_worker(slot);
                    }
                }
            }
            Message::Born { slot, gen, pid } => {
                self.fleet.born(pid, slot);
                let now = Instant::now();
                let w = WorkerProc { slot, gen, state: State::Starting, born: now, last_beat: now, killed_for: None };
                self.workers.insert(pid, w);
                if let Some(s) = self.slots.get_mut(slot) {
                    s.pending = false;
                }
            }
            Message::Up { slot, gen, pid } => {
                if let Some(w) = self.workers.get_mut(&pid) {
                    w.state = State::Up;
                    w.last_beat = Instant::now();
                }
                self.fleet.up(pid);
                self.ever_up = true;
                log::info!("worker {pid} (slot {slot}, generation {gen}) up");
                // The new worker listens: older ones in its slot may drain now
                // (replaced by a newer generation: a reload; else a recycle).
                let older_gen = self.workers.values().any(|w| w.slot == slot && w.gen < gen);
                self.drain_slot(slot, Some(pid), if older_gen { "reload" } else { "recycle" });
                if !self.slots.get(slot).is_some_and(|s| s.wanted) || self.stopping.is_some() {
                    self.drain_slot(slot, None, if self.stopping.is_some() { "shutdown" } else { "scale_down" });
                }
                self.announce_when_all_up();
                self.reload_done_when_all_up();
            }
            Message::Fatal { slot, pid, message, .. } => {
                log::error!("worker {pid} (slot {slot}) failed to start: {message}");
                self.last_fatal = Some(message);
            }
            Message::Recycle { slot, pid, reason, .. } => {
                let current = self.workers.get(&pid).is_some_and(|w| w.state == State::Up);
                if current && !self.slots[slot].pending && self.stopping.is_none() {
                    log::info!("recycling worker {pid} (slot {slot}): {reason}");
                    self.spawn_worker(slot);
                }
            }
            Message::Over { slot, pid, reason, .. } => {
                // Replace it, and stop it now rather than once the replacement
                // listens: memory grows while it keeps accepting.
                let current = self.workers.get(&pid).is_some_and(|w| w.state == State::Up);
                if current && self.stopping.is_none() {
                    log::warn!("stopping worker {pid} (slot {slot}) at once and replacing it: {reason}");
                    if !self.slots[slot].pending {
                        self.spawn_worker(slot);
                    }
                    if let Some(w) = self.workers.get_mut(&pid) {
                        w.state = State::Draining;
                        self.fleet.draining(pid, "max_rss_mb");
                        // SAFETY: signalling a child process.
                        unsafe { libc::kill(pid, libc::SIGTERM) };
                    }
                }
            }
            Message::Beat { pid, .. } => {
                if let Some(w) = self.workers.get_mut(&pid) {
                    w.last_beat = Instant::now();
                }
            }
            Message::Timeout { pid, route, .. } => {
                self.fleet.draining(pid, "timeout");
                if let Some(w) = self.workers.get_mut(&pid) {
                    w.killed_for = Some(format!("a handler for route {route} stuck past timeout"));
                }
                *self.timeout_kills.entry(route).or_default() += 1;
            }
        }
        Ok(())
    }

    fn reload_done_when_all_up(&mut self) {
        let Some(gen) = self.reloading else { return };
        let up = |slot: usize| self.workers.values().any(|w| w.slot == slot && w.state == State::Up && w.gen >= gen);
        // Done once every slot runs the new code and no older worker is left
        // (a draining worker may still take a connection for a moment).
        let older = self.workers.values().any(|w| w.gen < gen);
        if !older && (0..self.slots.len()).all(|s| !self.slots[s].wanted || up(s)) {
            self.reloading = None;
            log::info!("reload complete: every worker runs generation {gen}");
            crate::sd_notify::ready();
        }
    }

    fn announce_when_all_up(&mut self) {
        if self.announced {
            return;
        }
        let up = |slot: usize| self.workers.values().any(|w| w.slot == slot && w.state == State::Up);
        if (0..self.slots.len()).all(|s| !self.slots[s].wanted || up(s)) {
            self.announced = true;
            let mut pids: Vec<i32> =
                self.workers.iter().filter(|(_, w)| w.state == State::Up).map(|(p, _)| *p).collect();
            pids.sort_unstable();
            crate::say!(
                "{}, threads: {}, workers: {} (pids {:?})",
                listener::describe_first(&self.listeners),
                self.cfg.thread_count,
                self.wanted(),
                pids
            );
            for l in &self.listeners {
                crate::say!("Listening on {}", l.url());
            }
            crate::sd_notify::ready();
        }
    }

    fn reap(&mut self) -> Result<(), String> {
        let mut reaped = false;
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a valid out-pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            reaped = true;
            self.on_exit(pid, status)?;
        }
        if reaped {
            self.free_idle_metrics();
        }
        Ok(())
    }

    fn on_exit(&mut self, pid: i32, status: i32) -> Result<(), String> {
        // A worker's counts are kept and its region freed (a template's too:
        // one that died in the middle of a spawn).
        self.fleet.exited(pid);
        if let Some(i) = self.templates.iter().position(|t| t.pid == pid) {
            let t = self.templates.remove(i);
            if self.stopping.is_some() || t.commands.is_none() {
                return Ok(());
            }
            if !t.ready {
                if !self.announced && t.gen == 1 {
                    return Err("the project could not be loaded (see the error above)".into());
                }
                log::error!(
                    "reload failed: template {pid} (generation {}) {}; the running workers keep serving",
                    t.gen,
                    describe(status)
                );
                if self.reloading.take().is_some() {
                    crate::sd_notify::ready();
                }
            } else {
                log::error!(
                    "template {pid} (generation {}) {}; starting a new one. It loads the code as it is on disk \
                     now: workers started from now on (replacements, SIGTTIN, recycling) run that code, the \
                     running ones are not replaced (SIGHUP reloads them all)",
                    t.gen,
                    describe(status)
                );
                if let Some(new) = self.reread_config() {
                    self.follow_metrics_shape(&new);
                }
                self.spawn_template(false)?;
            }
            return Ok(());
        }
        let Some(w) = self.workers.remove(&pid) else { return Ok(()) };
        let how = describe(status);
        if self.stopping.is_some() || w.state == State::Draining {
            log::info!("worker {pid} (slot {}) {how}", w.slot);
            self.reload_done_when_all_up();
            return Ok(());
        }
        let slot = w.slot;
        if let Some(why) = &w.killed_for {
            // Not a crash loop: replaced at once, whatever the slot's history.
            let kills = self.timeout_kills.iter().map(|(r, n)| format!("{r}: {n}")).collect::<Vec<_>>();
            log::warn!(
                "worker {pid} (slot {slot}, generation {}) {how}: killed for {why}; replacing it at once \
                 (timeout kills by route so far: {})",
                w.gen,
                if kills.is_empty() { "none".to_string() } else { kills.join(", ") }
            );
            self.slots[slot].respawn_at = self.slots[slot].wanted.then(Instant::now);
            return Ok(());
        }
        log::warn!("worker {pid} (slot {slot}, generation {}) {how}; replacing it", w.gen);
        let s = &mut self.slots[slot];
        if w.state == State::Starting {
            s.failures += 1;
            if s.failures >= MAX_START_FAILURES && !self.ever_up {
                let why = self.last_fatal.clone().unwrap_or(how);
                self.stopping = Some(Instant::now());
                self.kill_all(libc::SIGTERM);
                return Err(format!(
                    "workers keep failing at start-up ({MAX_START_FAILURES} in a row), stopping: {why}"
                ));
            }
        } else if w.born.elapsed() >= STABLE_AFTER {
            s.failures = 0;
        } else {
            s.failures += 1;
        }
        // Exponential backoff: 0, 0.1, 0.2, 0.4 ... 10 s.
        let delay = if s.failures == 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(100 << (s.failures - 1).min(7)).min(Duration::from_secs(10))
        };
        if s.failures > 0 {
            log::warn!("slot {slot}: {} failure(s) in a row; next worker in {:.1} s", s.failures, delay.as_secs_f64());
        }
        s.respawn_at = Some(Instant::now() + delay);
        if !self.slots[slot].wanted {
            self.slots[slot].respawn_at = None;
        }
        Ok(())
    }

    fn respawn_due(&mut self) {
        let now = Instant::now();
        for slot in 0..self.slots.len() {
            if self.slots[slot].respawn_at.is_some_and(|at| at <= now) {
                self.spawn_worker(slot);
            }
        }
    }
}
