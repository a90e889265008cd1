//! The server: the listening sockets, the acceptor, the pool of event-loop
//! threads, signals, and graceful shutdown.
//!
//! The main thread accepts connections from every listener (in a worker
//! process, whose sockets are shared with its siblings, one thread per
//! socket accepts with blocking calls instead) and hands each to a pool
//! thread that is not busy in a handler, then the one with the fewest open
//! connections (a crossbeam channel plus a mio `Waker`). From then on that thread owns the connection: it reads, parses,
//! calls the application and writes, with no further hand-off.

pub mod accept_share;
pub mod activity;
pub mod batch;
pub mod conn;
pub mod event_loop;
mod interrupt_accept;
pub mod listener;
pub mod reexec;
pub mod rescue;
pub mod signals;
pub mod timeout;
pub mod trim;

use crate::app::{App, Completed, CompletionSink};
use crate::http::date::DateCache;
use crate::http::encode::{self, ResponseContext};
use crate::http::Limits;
use crate::http::Peer;
use crate::http::Version;
use crate::observe::access_log::Outcome;
use crate::observe::metrics::T_BYTES_OUT;
use crate::observe::{Observer, ThreadObserver};
use activity::Activity;
use crossbeam_channel::{Receiver, Sender};
use listener::{Listener, Stream};
use mio::{Events, Interest, Poll, Token, Waker};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SIGNALS: Token = Token(0);
/// Wakes the main thread to watch for pool threads stuck in a handler.
const RESCUE: Token = Token(1);
/// Listener `i` has token `FIRST_LISTENER + i`.
const FIRST_LISTENER: usize = 2;
/// How long accepting pauses after the process runs out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How often the acceptor looks after its threads and memory when idle.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// How often a blocked accept(2) returns to check for shutdown.
const SHARED_ACCEPT_WAKE: Duration = Duration::from_millis(100);
const BUSY_BODY: &str = "Server too busy\n";
/// Pool threads run handler code, so they get the stack Python's main thread
/// has (8 MiB, like the usual `ulimit -s`): deep recursion in a handler
/// (`sys.setrecursionlimit`, deeply nested `json.dumps`) works as it does in
/// plain Python instead of overflowing Rust's 2 MiB default.
pub const POOL_STACK_SIZE: usize = 8 << 20;

/// What the server needs beyond the application.
pub struct ServerConfig {
    pub thread_count: usize,
    pub tcp_nodelay: bool,
    pub shutdown_timeout: Duration,
    pub limits: Limits,
    /// Where pool threads record which handler runs since when (read by the
    /// worker watchdog); None when nobody watches.
    pub activity: Option<Arc<Activity>>,
    /// Metrics, access log, request ids and readiness of this process.
    pub observer: Arc<Observer>,
    /// The listening sockets are shared with sibling processes (workers):
    /// accept with blocking calls on threads of their own, so that the
    /// kernel hands connections to the processes in turn.
    pub shared_accept: bool,
    /// With shared sockets: stop taking connections while a handler has
    /// run this long (the worker is about to be killed for `timeout`, and
    /// what it holds would die with it); the siblings take them.
    pub stuck_after: Option<Duration>,
    /// With shared sockets: this worker's entry in its generation's accept
    /// table, so that a burst of connections is shared with the siblings
    /// (`accept_share`). None: accept as they come.
    pub accept_share: Option<accept_share::Member>,
    /// SIGHUP: run this check on a thread (serving goes on) and, when it
    /// passes, stop like SIGTERM but keep the listeners for a reload. None:
    /// the signal pipe does not carry SIGHUP.
    pub reload_check: Option<fn() -> Result<(), String>>,
    /// A second SIGTERM/SIGINT while stopping exits at once (a single process:
    /// the operator insists). False in a worker: its master forwards SIGTERM,
    /// which systemd (KillMode=control-group, the default) also sends to every
    /// process of the service, so a worker sees it twice; the master escalates
    /// to SIGKILL on its own second signal.
    pub repeat_signal_exits: bool,
    /// Called once this process accepts connections.
    pub on_serving: Option<Box<dyn FnOnce() + Send>>,
}

/// Why [`serve`] returned.
#[derive(Debug)]
pub enum ServeEnd {
    /// SIGINT/SIGTERM: drained and done.
    Stopped,
    /// SIGHUP and the new code loads: drained; the listeners, with what they
    /// have queued, are for the reloaded server.
    Reload(Vec<Listener>),
}

/// State one pool thread shares with the acceptor.
pub struct ThreadShared {
    pub incoming_rx: Receiver<(Stream, Peer)>,
    incoming_tx: Sender<(Stream, Peer)>,
    waker: Waker,
    /// Open connections owned by this thread.
    pub connections: AtomicUsize,
    /// Worker mode: this process's entry in the accept table, which counts
    /// its open connections for the siblings (`accept_share`).
    share: Option<accept_share::Member>,
    /// The thread is running handlers (not waiting for I/O).
    pub busy: AtomicBool,
    /// The thread has ended (a panic past the per-job catch, or shutdown):
    /// it takes no more connections.
    pub ended: AtomicBool,
    /// Since when (see `rescue`).
    busy_since: rescue::BusySince,
    /// Connections owned here whose handlers have kept a thread stuck.
    pub slow_conns: AtomicUsize,
    rescue: Arc<rescue::Rescue>,
    pub shutdown: AtomicBool,
    pub shutdown_timeout: Duration,
    pub activity: Option<Arc<Activity>>,
    pub observer: Arc<Observer>,
    /// The queues of batched routes (shared by every pool thread).
    pub batches: Arc<batch::Batches>,
    /// Answers of batched requests for this thread's connections.
    pub filled_rx: Receiver<batch::Filled>,
    filled_tx: Sender<batch::Filled>,
    /// Responses finished elsewhere (awaited coroutines), filled by the loop.
    pub completed_rx: Receiver<Completed>,
    completed_tx: Sender<Completed>,
    /// The loop was woken for completions it has not taken yet (saves a
    /// wake-up per completion when many finish together).
    completions_signalled: AtomicBool,
}

impl ThreadShared {
    /// Called by the loop before it takes the completed responses.
    pub fn completions_taken(&self) {
        self.completions_signalled.store(false, Ordering::SeqCst);
    }
}

impl ThreadShared {
    /// One of this thread's connections closed (or never got going).
    pub fn closed_one(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
        if let Some(m) = &self.share {
            m.closed();
        }
    }
}

impl CompletionSink for ThreadShared {
    fn complete(&self, done: Completed) {
        if self.completed_tx.send(done).is_ok() && !self.completions_signalled.swap(true, Ordering::SeqCst) {
            let _ = self.waker.wake();
        }
    }
}

/// Serves `app` on `listeners` until SIGINT or SIGTERM, then drains.
pub fn serve<A: App>(
    app: Arc<A>,
    listeners: Vec<Listener>,
    signals: signals::SignalPipe,
    mut cfg: ServerConfig,
) -> io::Result<ServeEnd> {
    let mut poll = Poll::new()?;
    let mut listeners = listeners;
    if !cfg.shared_accept {
        for (i, l) in listeners.iter_mut().enumerate() {
            l.set_nonblocking()?;
            poll.registry().register(l, Token(FIRST_LISTENER + i), Interest::READABLE)?;
        }
    }
    // Emptied once shutdown begins: this process stops accepting (other
    // processes sharing the sockets, if any, go on).
    let mut listeners = Some(listeners);
    let mut signals = signals;
    poll.registry().register(signals.receiver(), SIGNALS, Interest::READABLE)?;

    let batches = Arc::new(batch::Batches::for_app(&*app));
    // The application outlives every pool thread, even one that shutdown
    // leaves behind in a stuck handler: connections (which borrow its routes)
    // can then move between threads.
    let app: &'static Arc<A> = Box::leak(Box::new(app));
    let rescue = Arc::new(rescue::Rescue::new(Waker::new(poll.registry(), RESCUE)?, cfg.thread_count));
    let mut cells = Vec::with_capacity(cfg.thread_count);
    let mut shared = Vec::with_capacity(cfg.thread_count);
    let mut handles = Vec::with_capacity(cfg.thread_count);
    for index in 0..cfg.thread_count {
        let thread_poll = Poll::new()?;
        let waker = Waker::new(thread_poll.registry(), event_loop::WAKER)?;
        let (incoming_tx, incoming_rx) = crossbeam_channel::unbounded();
        let (filled_tx, filled_rx) = crossbeam_channel::unbounded();
        let (completed_tx, completed_rx) = crossbeam_channel::unbounded();
        let s = Arc::new(ThreadShared {
            incoming_rx,
            incoming_tx,
            waker,
            connections: AtomicUsize::new(0),
            share: cfg.accept_share,
            busy: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            busy_since: rescue::BusySince::default(),
            slow_conns: AtomicUsize::new(0),
            rescue: rescue.clone(),
            shutdown: AtomicBool::new(false),
            shutdown_timeout: cfg.shutdown_timeout,
            activity: cfg.activity.clone(),
            observer: cfg.observer.clone(),
            batches: batches.clone(),
            filled_rx,
            filled_tx,
            completed_rx,
            completed_tx,
            completions_signalled: AtomicBool::new(false),
        });
        shared.push(s.clone());
        let limits = cfg.limits.clone();
        let cell = Arc::new(event_loop::LoopCell::new(|moved_rx| {
            event_loop::EventLoop::new(index, thread_poll, app.router(), limits, s.clone(), moved_rx)
        }));
        cells.push(cell.clone());
        let sink: Arc<dyn CompletionSink> = s.clone();
        let handle =
            std::thread::Builder::new().name(format!("pyrs-{index}")).stack_size(POOL_STACK_SIZE).spawn(move || {
                if let Some(a) = &s.activity {
                    a.register_thread(index);
                }
                // A panic past the per-job catch ends the thread: say so at
                // once, so that the acceptor stops choosing it and the main
                // thread stops the server (see `thread_died` below).
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    event_loop::run_thread(&**app, index, cell, sink)
                }));
                s.ended.store(true, Ordering::Release);
                if ran.is_err() {
                    log::error!(
                        "pool thread {index} died (a panic outside any handler call); it takes no more connections"
                    );
                    s.rescue.wake_main();
                }
            })?;
        handles.push(handle);
    }
    let batch_handles = start_batch_threads(app, &shared, cfg.thread_count)?;

    let mut acceptor = Acceptor::new(&shared, &cfg);
    // Sockets shared with sibling processes: one thread per socket accepts
    // with blocking calls, so the processes take turns (see accept_blocking).
    let accept_stop = Arc::new(AtomicBool::new(false));
    let mut accept_threads = Vec::new();
    if cfg.shared_accept {
        interrupt_accept::install();
        for l in listeners.take().unwrap_or_default() {
            l.set_blocking_accept(SHARED_ACCEPT_WAKE)?;
            let (acceptor, stop) = (Acceptor::new(&shared, &cfg), accept_stop.clone());
            let stuck = cfg.activity.clone().zip(cfg.stuck_after);
            let share = cfg.accept_share;
            accept_threads.push(
                std::thread::Builder::new()
                    .name("pyrs-accept".into())
                    .spawn(move || acceptor.accept_blocking(l, &stop, stuck, share))?,
            );
        }
    }
    cfg.observer.health.serving();
    let loops = cells.clone();
    let mut rescuer = rescue::Rescuer::new(rescue, cells);
    if let Some(f) = cfg.on_serving.take() {
        f();
    }
    let mut events = Events::with_capacity(256);
    let mut stopping: Option<Instant> = None;
    // A pool thread ended on its own (a panic outside any request).
    let mut thread_died = false;
    let mut trim = trim::Trim::new();
    let mut reload_check: Option<std::thread::JoinHandle<Result<(), String>>> = None;
    let mut kept: Option<Vec<Listener>> = None;
    loop {
        let mut timeout = acceptor.paused_until.map(|t| t.saturating_duration_since(Instant::now()));
        timeout = Some(timeout.map_or(HOUSEKEEPING, |t| t.min(HOUSEKEEPING)));
        if let Some(tick) = rescuer.timeout() {
            timeout = Some(timeout.map_or(tick, |t| t.min(tick)));
        }
        if stopping.is_some() {
            timeout = Some(Duration::from_millis(20));
        } else if reload_check.is_some() {
            timeout = Some(timeout.unwrap_or(Duration::MAX).min(Duration::from_millis(50)));
        }
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in events.iter() {
            match event.token() {
                Token(t) if t >= FIRST_LISTENER => {
                    if let Some(l) = listeners.as_ref().and_then(|ls| ls.get(t - FIRST_LISTENER)) {
                        acceptor.accept_all(l);
                    }
                }
                SIGNALS => {
                    for signal in signals.drain() {
                        if signal.0 == libc::SIGHUP {
                            match cfg.reload_check {
                                Some(_) if stopping.is_some() || reload_check.is_some() => {
                                    log::warn!("SIGHUP ignored: already stopping or reloading")
                                }
                                Some(check) => {
                                    log::info!("SIGHUP received: checking that the new code loads (serving on)");
                                    crate::sd_notify::reloading();
                                    reload_check = Some(std::thread::spawn(check));
                                }
                                None => {}
                            }
                            continue;
                        }
                        if stopping.is_some() && !cfg.repeat_signal_exits {
                            log::debug!("{signal} again: already stopping");
                            continue;
                        }
                        if stopping.is_some() {
                            log::warn!("second signal ({signal}): exiting now");
                            crate::logging::flush(crate::logging::EXIT_NOW_FLUSH);
                            std::process::exit(1);
                        }
                        stopping = Some(Instant::now());
                        cfg.observer.health.draining();
                        crate::sd_notify::stopping();
                        accept_stop.store(true, Ordering::Release);
                        for t in accept_threads.drain(..) {
                            interrupt_accept::stop(t);
                        }
                        // Take what is already queued (a socket closed by its last
                        // holder resets its queue), then stop listening.
                        for mut l in listeners.take().unwrap_or_default() {
                            acceptor.accept_all(&l);
                            let _ = poll.registry().deregister(&mut l);
                        }
                        // Logged once the listener is closed.
                        log::info!(
                            "{signal} received: stopping (finishing in-flight requests, up to {:?})",
                            cfg.shutdown_timeout
                        );
                        for s in &shared {
                            s.shutdown.store(true, Ordering::Release);
                            let _ = s.waker.wake();
                        }
                        batches.hurry();
                    }
                }
                _ => {}
            }
        }
        // Connections handed to a thread as it died go to the others.
        for s in shared.iter().filter(|s| s.ended.load(Ordering::Acquire)) {
            while let Ok((stream, addr)) = s.incoming_rx.try_recv() {
                s.closed_one();
                acceptor.dispatch(stream, addr);
            }
        }
        let died = |i: usize| shared[i].ended.load(Ordering::Acquire) && !shared[i].shutdown.load(Ordering::Acquire);
        // Batch threads end only after the loop below (`batches.stop`).
        let batch_died = stopping.is_none() && batch_handles.iter().any(|h| h.is_finished());
        if !thread_died && ((0..shared.len()).any(died) || batch_died) {
            // A thread ended without being told to (a panic outside any
            // handler call): its connections are lost and its work would be
            // too. Stop serving (the other threads drain) and exit non-zero,
            // so that a supervisor (pyrs's master, systemd) starts a whole
            // process.
            log::error!("a server thread died; stopping the server (exit status 1)");
            thread_died = true;
            for (i, cell) in loops.iter().enumerate() {
                if died(i) {
                    // Their clients see the close now rather than at exit.
                    cell.abandon();
                }
            }
            stopping.get_or_insert_with(Instant::now);
            cfg.observer.health.draining();
            accept_stop.store(true, Ordering::Release);
            for t in accept_threads.drain(..) {
                interrupt_accept::stop(t);
            }
            for mut l in listeners.take().unwrap_or_default() {
                let _ = poll.registry().deregister(&mut l);
            }
            for s in &shared {
                s.shutdown.store(true, Ordering::Release);
                let _ = s.waker.wake();
            }
            batches.hurry();
        }
        if stopping.is_none() {
            let open = shared.iter().map(|s| s.connections.load(Ordering::Acquire)).sum();
            if trim.tick(acceptor.accepted, open) {
                trim::release(app);
            }
            rescuer.check(&shared);
        }
        if stopping.is_none() && reload_check.as_ref().is_some_and(|h| h.is_finished()) {
            let verdict = reload_check.take().map(|h| h.join().unwrap_or_else(|_| Err("the check panicked".into())));
            match verdict {
                Some(Ok(())) => {
                    log::info!(
                        "reloading: draining in-flight requests (up to {:?}); new connections wait in the listen queue",
                        cfg.shutdown_timeout
                    );
                    stopping = Some(Instant::now());
                    let mut ls = listeners.take().unwrap_or_default();
                    for l in &mut ls {
                        let _ = poll.registry().deregister(l);
                    }
                    kept = Some(ls);
                    for s in &shared {
                        s.shutdown.store(true, Ordering::Release);
                        let _ = s.waker.wake();
                    }
                }
                Some(Err(e)) => {
                    log::error!("reload cancelled, the running code keeps serving: {e}");
                    crate::sd_notify::ready();
                }
                None => {}
            }
        }
        if stopping.is_none() && acceptor.paused_until.is_some_and(|t| Instant::now() >= t) {
            acceptor.paused_until = None;
            for l in listeners.iter().flatten() {
                acceptor.accept_all(l);
            }
        }
        if let Some(since) = stopping {
            let all_done = handles.iter().all(|h| h.is_finished());
            // Threads give up at shutdown_timeout themselves; a handler stuck in
            // Python may keep one busy, so the main thread stops waiting too.
            if all_done || since.elapsed() > cfg.shutdown_timeout + Duration::from_secs(1) {
                break;
            }
        }
    }
    // No request can join a batch any more: the batch threads finish what is queued.
    batches.stop();
    let deadline = stopping.unwrap_or_else(Instant::now) + cfg.shutdown_timeout + Duration::from_secs(1);
    while !batch_handles.iter().all(|h| h.is_finished()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let unfinished: Vec<_> = handles
        .into_iter()
        .chain(batch_handles)
        .filter_map(|h| {
            if h.is_finished() {
                let _ = h.join();
                None
            } else {
                Some(())
            }
        })
        .collect();
    if !unfinished.is_empty() {
        log::warn!("{} thread(s) still busy after shutdown_timeout; exiting without them", unfinished.len());
    }
    if thread_died {
        return Err(io::Error::other("a pool thread died"));
    }
    cfg.observer.finish();
    Ok(match kept {
        Some(listeners) => ServeEnd::Reload(listeners),
        None => ServeEnd::Stopped,
    })
}

/// Starts `max_concurrent` batch threads for each batched route; their
/// indexes (for the watchdog's activity table) follow the pool threads'.
fn start_batch_threads<A: App>(
    app: &Arc<A>,
    shared: &[Arc<ThreadShared>],
    first_index: usize,
) -> io::Result<Vec<std::thread::JoinHandle<()>>> {
    let mut handles = Vec::new();
    let mut routes: Vec<(usize, usize)> =
        app.router().targets().into_iter().filter_map(|r| r.batch.map(|b| (r.id, b.max_concurrent))).collect();
    routes.sort_unstable();
    for (id, count) in routes {
        for k in 0..count {
            let index = first_index + handles.len();
            let app = app.clone();
            let threads = shared.to_vec();
            let handle = std::thread::Builder::new()
                .name(format!("pyrs-batch-{id}-{k}"))
                .stack_size(POOL_STACK_SIZE)
                .spawn(move || {
                let router = app.router();
                let route = router.targets().into_iter().find(|r| r.id == id && r.batch.is_some());
                let queue = threads.first().and_then(|t| t.batches.queue(id).cloned());
                if let (Some(route), Some(queue)) = (route, queue) {
                    batch::run_thread(&*app, index, route, &queue, &threads);
                }
            })?;
            handles.push(handle);
        }
    }
    Ok(handles)
}

struct Acceptor {
    shared: Vec<Arc<ThreadShared>>,
    next: usize,
    tcp_nodelay: bool,
    max_connections: usize,
    paused_until: Option<Instant>,
    last_warning: Option<Instant>,
    date: DateCache,
    /// The 503 answer for connections past max_connections.
    busy: Vec<u8>,
    obs: ThreadObserver,
    /// Connections accepted so far (dispatched or refused).
    accepted: u64,
}

impl Acceptor {
    fn new(shared: &[Arc<ThreadShared>], cfg: &ServerConfig) -> Acceptor {
        Acceptor {
            shared: shared.to_vec(),
            next: 0,
            tcp_nodelay: cfg.tcp_nodelay,
            max_connections: cfg.limits.max_connections,
            paused_until: None,
            last_warning: None,
            date: DateCache::new(),
            busy: Vec::new(),
            // Row 0 of the metrics: the acceptor's (accept threads share it; they
            // only count the rare 503s).
            obs: cfg.observer.thread(0),
            accepted: 0,
        }
    }

    /// Accepts with blocking calls until `stop` (checked at least every
    /// `SHARED_ACCEPT_WAKE`). The kernel gives a new connection to one
    /// waiting accept(2) at a time, in the order they began to wait, so the
    /// processes sharing a socket take turns. But a thread already running
    /// would find a burst queued and take all of it before a sibling's woken
    /// thread runs: with `share`, a worker over its share of the open
    /// connections leaves the queue to its accepting siblings for a moment
    /// (see `accept_share`).
    fn accept_blocking(
        mut self,
        listener: Listener,
        stop: &AtomicBool,
        stuck: Option<(Arc<Activity>, Duration)>,
        share: Option<accept_share::Member>,
    ) {
        let mut yields = 0;
        while !stop.load(Ordering::Acquire) {
            if let Some((activity, after)) = &stuck {
                if activity.longest_busy().is_some_and(|(busy, _)| busy >= *after) {
                    if let Some(m) = &share {
                        m.accepting(false);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            }
            if let Some(m) = &share {
                let open = self.open();
                m.accepting(true);
                if yields < accept_share::MAX_YIELD && m.over_share(open) {
                    yields += 1;
                    std::thread::sleep(accept_share::YIELD);
                    continue;
                }
                yields = 0;
            }
            match listener.accept() {
                Ok((stream, addr)) => self.dispatch(stream, addr),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                            | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    self.warn(&format!("accept failed: {e}; pausing accepts for {ACCEPT_BACKOFF:?}"));
                    std::thread::sleep(ACCEPT_BACKOFF);
                }
            }
        }
        if let Some(m) = &share {
            m.accepting(false);
        }
    }

    /// Open connections of this process's pool threads.
    fn open(&self) -> usize {
        self.shared.iter().map(|s| s.connections.load(Ordering::Acquire)).sum()
    }

    fn accept_all(&mut self, listener: &Listener) {
        if self.paused_until.is_some() {
            return;
        }
        loop {
            match listener.accept() {
                Ok((stream, addr)) => self.dispatch(stream, addr),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted || e.kind() == io::ErrorKind::ConnectionAborted => {
                    continue
                }
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: the pending connection stays
                    // queued; pause instead of spinning on it.
                    self.warn(&format!("accept failed: {e}; pausing accepts for {ACCEPT_BACKOFF:?}"));
                    self.paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    fn warn(&mut self, msg: &str) {
        let now = Instant::now();
        if self.last_warning.is_none_or(|t| now.duration_since(t) > Duration::from_secs(1)) {
            log::warn!("{msg}");
            self.last_warning = Some(now);
        }
    }

    fn dispatch(&mut self, mut stream: Stream, addr: Peer) {
        self.accepted += 1;
        let total = self.open();
        let live = self.shared.iter().filter(|s| !s.ended.load(Ordering::Acquire)).count();
        if total >= self.max_connections || live == 0 {
            if live == 0 {
                self.warn("no server thread is left: refusing new connections with 503");
            } else {
                self.warn(&format!(
                    "max_connections ({}) reached: refusing new connections with 503",
                    self.max_connections
                ));
            }
            self.date.refresh();
            self.busy.clear();
            let ctx = ResponseContext { keep_alive: false, head_only: false, version: Version::Http11 };
            let rid = self.obs.ids.generate();
            let extra: [(&[u8], &[u8]); 1] = [(b"X-Request-Id", rid.as_bytes())];
            encode::text_response(&mut self.busy, 503, &extra, BUSY_BODY, self.date.value(), ctx);
            self.obs.metrics.request(usize::MAX, 503, 0);
            self.obs.metrics.add(T_BYTES_OUT, self.busy.len() as u64);
            self.obs.metrics.region().protocol_error(503);
            self.obs.begin_line(None, addr);
            let outcome = Outcome {
                status: 503,
                bytes: Some(BUSY_BODY.len() as u64),
                duration_us: 0,
                request_id: rid.as_str(),
                route: None,
                date: self.date.value(),
            };
            self.obs.finish_line(&outcome);
            self.obs.flush_now();
            // Best effort: the socket is new, so its send buffer has room. Reading
            // what the client already sent lets the close be a FIN, not a reset
            // that could destroy the 503 on its way.
            let _ = stream.write(&self.busy);
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let _ = stream.read(&mut [0u8; 4096]);
            return;
        }
        if self.tcp_nodelay {
            let _ = stream.set_nodelay(true);
        }
        // A live thread not busy in a handler, with the fewest connections;
        // ties go round-robin. (A thread blocked in a slow handler holds up
        // only the connections it already owns; one that died takes none.)
        let n = self.shared.len();
        let load = |i: usize| {
            let s = &self.shared[i];
            (s.ended.load(Ordering::Acquire), s.busy.load(Ordering::Acquire), s.connections.load(Ordering::Acquire))
        };
        let mut best = self.next % n;
        for k in 0..n {
            let i = (self.next + k) % n;
            if load(i) < load(best) {
                best = i;
            }
        }
        self.next = best + 1;
        let target = &self.shared[best];
        target.connections.fetch_add(1, Ordering::AcqRel);
        if let Some(m) = &target.share {
            m.opened();
        }
        if target.incoming_tx.send((stream, addr)).is_err() {
            target.closed_one();
            return;
        }
        let _ = target.waker.wake();
    }
}
