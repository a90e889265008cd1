//! One pool thread: a mio event loop over the connections handed to it.
//!
//! Each turn, with the application unlocked (the GIL released), the loop
//! flushes output, waits for events, reads and parses every ready
//! connection, and queues the complete requests as jobs. Then it runs the
//! batch of jobs in order, with the application locked once for the whole
//! batch, queueing responses in the connections' outputs. Requests are
//! answered on the thread that parsed them: no hand-off per request.
//!
//! Requests to batched routes are the exception: they reserve a slot in
//! their connection's output and join the route's queue (`batch`), without
//! the application lock; the answer comes back over `filled_rx` and fills
//! the slot.
//!
//! Streamed bodies are pulled in the locked phase too, one item per stream
//! per turn, and only while the connection's unsent output is below
//! `max_buffered_output`; between items the loop serves its other
//! connections. Streams of connections that went away are closed (a
//! generator's `finally` runs) in the next locked phase.

use super::batch::{LoopBatches, ReplyTo};
use super::conn::{Conn, Deadline, Job, JobKind, ReadOutcome, BUDGET_SPENT};
use super::ThreadShared;
use crate::app::{App, Responder, Route, Worker};
use crate::http::body::Released;
use crate::http::date::DateCache;
use crate::http::encode::{self, ResponseContext, Sent};
use crate::http::output::{PullResult, Stop};
use crate::http::request_id::RequestId;
use crate::http::Limits;
use crate::http::RequestHead;
use crate::observe::access_log::Outcome;
use crate::observe::metrics::{T_BYTES_IN, T_BYTES_OUT, T_CONNECTIONS, T_GIL_WAIT_US, T_IN_FLIGHT};
use crate::observe::{admin, context, ThreadObserver};
use crate::router::Router;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub const WAKER: Token = Token(usize::MAX);
const TICK: Duration = Duration::from_millis(200);
/// A connection's holdings are charged to the memory budget in steps of this.
const CHARGE_STEP: usize = 64 * 1024;
/// How long an idle connection stays open once shutdown begins.
const DRAIN_IDLE_GRACE: Duration = Duration::from_millis(1000);

pub struct EventLoop<'r, T> {
    index: usize,
    poll: Poll,
    /// Taken out while its events are handled.
    events: Option<Events>,
    conns: Vec<Option<Conn<'r, T>>>,
    free: Vec<usize>,
    live: usize,
    next_serial: u64,
    /// Connections whose output changed since the last flush.
    dirty: Vec<usize>,
    jobs: Vec<Job<'r, T>>,
    /// Connections whose next stream is to be pulled in the locked phase.
    pulls: Vec<usize>,
    /// Streams of closed connections and written shared bodies: closed and
    /// dropped in the locked phase.
    closing: Released,
    /// This loop's connections with batched requests, and the requests queued this turn.
    batches: LoopBatches,
    date: DateCache,
    router: &'r Router<Route<T>>,
    limits: Limits,
    shared: &'r ThreadShared,
    next_tick: Instant,
    draining: Option<Instant>,
    /// This thread's metrics, request ids and access-log buffer.
    obs: ThreadObserver,
}

/// How the unlocked phase ended.
enum Phase {
    /// Requests are queued for the application.
    Jobs,
    /// Shutdown is complete (or its time ran out).
    Exit,
}

impl<'r, T: Send + Sync + 'static> EventLoop<'r, T> {
    pub fn new(
        index: usize,
        poll: Poll,
        router: &'r Router<Route<T>>,
        limits: Limits,
        shared: &'r ThreadShared,
    ) -> Self {
        EventLoop {
            index,
            poll,
            events: Some(Events::with_capacity(1024)),
            conns: Vec::new(),
            free: Vec::new(),
            live: 0,
            next_serial: 0,
            dirty: Vec::new(),
            jobs: Vec::new(),
            pulls: Vec::new(),
            closing: Released::default(),
            batches: LoopBatches::default(),
            date: DateCache::new(),
            router,
            limits,
            shared,
            next_tick: Instant::now() + TICK,
            draining: None,
            obs: shared.observer.thread(index + 1),
        }
    }

    /// Runs until shutdown; `worker` is the application's view for this thread.
    pub fn run<W: Worker<Target = T>>(&mut self, worker: &mut W) {
        loop {
            let (phase, done) = worker.unlocked(|| (self.io_phase(), Instant::now()));
            // Time from the end of the I/O phase until the application lock (the GIL) was ours.
            self.obs.metrics.add(T_GIL_WAIT_US, done.elapsed().as_micros() as u64);
            match phase {
                Phase::Exit => break,
                Phase::Jobs => self.run_jobs(worker),
            }
        }
        for conn in self.conns.iter_mut().flatten() {
            conn.out.take_streams(&mut self.closing);
        }
        self.close_streams();
        self.obs.flush_now();
        log::debug!("thread {} stopped", self.index);
    }

    /// Socket I/O and waiting; returns when jobs need the application.
    fn io_phase(&mut self) -> Phase {
        let mut polled = false;
        loop {
            self.flush_dirty();
            if !self.jobs.is_empty() {
                // Batched routes' requests only join a queue: no lock needed.
                if self.jobs.iter().any(|j| matches!(j.kind, JobKind::Call { route, .. } if route.batch.is_none())) {
                    return Phase::Jobs;
                }
                // Only core-generated answers: no need to lock the application.
                self.run_jobs_with::<NoApp<T>>(None);
                continue;
            }
            // Streams to pull or close need the application, but new events
            // are taken first so that one busy stream starves no connection.
            let locked_work = !self.pulls.is_empty() || !self.closing.is_empty();
            if locked_work && polled {
                return Phase::Jobs;
            }
            if let Some(deadline) = self.draining {
                if self.live == 0 || Instant::now() >= deadline {
                    return Phase::Exit;
                }
            }
            // Buffered access-log lines go to the writer (one hand-over per 100 ms at most).
            self.obs.flush();
            let timeout =
                if locked_work { Duration::ZERO } else { self.next_tick.saturating_duration_since(Instant::now()) };
            let mut events = self.events.take().unwrap_or_else(|| Events::with_capacity(1024));
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                self.events = Some(events);
                if e.kind() != std::io::ErrorKind::Interrupted {
                    log::error!("thread {}: poll failed: {e}", self.index);
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            polled = true;
            for event in events.iter() {
                let token = event.token();
                let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                // A FIN or error may have come with the data: read to the end then.
                let drain = event.is_read_closed() || event.is_error();
                let writable = event.is_writable();
                if token == WAKER {
                    self.take_new_connections();
                    self.take_filled();
                    continue;
                }
                let i = token.0;
                if writable {
                    self.flush_one(i);
                }
                if readable {
                    self.read_until(i, drain);
                }
            }
            self.events = Some(events);
            if Instant::now() >= self.next_tick {
                self.tick();
            }
        }
    }

    fn take_new_connections(&mut self) {
        while let Ok((stream, addr)) = self.shared.incoming_rx.try_recv() {
            self.add_connection(stream, addr);
        }
        if self.draining.is_none() && self.shared.shutdown.load(Ordering::Acquire) {
            self.start_draining();
        }
    }

    fn add_connection(&mut self, mut stream: TcpStream, addr: SocketAddr) {
        let i = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        if let Err(e) = self.poll.registry().register(&mut stream, Token(i), Interest::READABLE | Interest::WRITABLE) {
            log::warn!("cannot register connection from {addr}: {e}");
            self.free.push(i);
            self.shared.connections.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        self.next_serial += 1;
        let mut conn = Conn::new(stream, addr, self.next_serial);
        conn.deadline = Some((Deadline::Idle, Instant::now() + self.limits.header_timeout));
        self.conns[i] = Some(conn);
        self.live += 1;
        self.obs.metrics.set(T_CONNECTIONS, self.live as u64);
        // The client may have sent its request already: edge-triggered events
        // only report new data, so read now.
        self.read_one(i);
    }

    /// Puts the answers of batched requests in their slots, counts and logs them.
    fn take_filled(&mut self) {
        while let Ok(mut f) = self.shared.filled_rx.try_recv() {
            let to = &f.to;
            self.batches.answered(to.token, to.serial);
            let conn = self.conns.get_mut(to.token).and_then(Option::as_mut).filter(|c| c.serial == to.serial);
            let Some(conn) = conn else {
                // The connection went away while its request waited.
                f.out.take_streams(&mut self.closing);
                continue;
            };
            conn.in_flight -= 1;
            let placed = if f.closes {
                // Nothing queued after a response that closes the connection is sent.
                conn.close_after = true;
                conn.out.fill_last(to.slot, |o| std::mem::swap(o, &mut f.out), &mut self.closing)
            } else {
                conn.out.fill(to.slot, |o| std::mem::swap(o, &mut f.out))
            };
            if !placed {
                // An earlier response closed the connection: this one is never sent.
                f.out.take_streams(&mut self.closing);
                continue;
            }
            self.dirty.push(to.token);
            let micros = to.received.elapsed().as_micros() as u64;
            self.obs.metrics.request(to.route, f.sent.status, micros);
            if let Some(line) = &to.line {
                let outcome = Outcome {
                    status: f.sent.status,
                    bytes: f.sent.body_bytes,
                    duration_us: micros,
                    request_id: to.rid.as_str(),
                    route: self.shared.observer.route_label(to.route),
                    date: self.date.value(),
                };
                self.obs.finish_line_from(line, &outcome);
            }
        }
    }

    fn close(&mut self, i: usize) {
        self.batches.closed(i);
        if let Some(mut conn) = self.conns.get_mut(i).and_then(Option::take) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            conn.out.take_streams(&mut self.closing);
            self.limits.memory.recharge(conn.charged, 0);
            self.free.push(i);
            self.live -= 1;
            self.shared.connections.fetch_sub(1, Ordering::AcqRel);
            self.obs.metrics.set(T_CONNECTIONS, self.live as u64);
        }
    }

    /// Reads until the socket would block (use when the socket's state is unknown).
    fn read_one(&mut self, i: usize) {
        self.read_until(i, true);
    }

    /// Reads and parses; with `drain` false a short read ends it (the socket
    /// is then empty, and new data raises a new edge), saving a recv(2) that
    /// would only say EAGAIN.
    fn read_until(&mut self, i: usize, drain: bool) {
        let Some(conn) = self.conns.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let before = self.jobs.len();
        let read_before = conn.bytes_read;
        let outcome = conn.read_ready(i, self.router, &self.limits, &mut self.jobs, drain);
        self.obs.metrics.add(T_BYTES_IN, conn.bytes_read - read_before);
        if conn.peer_closed && !conn.lingering && self.batches.waiting(i) {
            // A client that disconnects while its request waits for a batch is
            // dropped from it (a FIN counts: clients that give up close).
            log::debug!("{}: client closed while its request waited for a batch", conn.addr);
            self.close(i);
            return;
        }
        if outcome == ReadOutcome::Close && self.jobs.len() == before {
            self.close(i);
        } else {
            self.update_deadline(i);
        }
    }

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &i in &dirty {
            self.flush_one(i);
        }
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    fn flush_one(&mut self, i: usize) {
        let Some(conn) = self.conns.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        if !conn.has_pending_output() {
            return;
        }
        let written_before = conn.out.written_total();
        let flushed = conn.flush();
        self.obs.metrics.add(T_BYTES_OUT, conn.out.written_total() - written_before);
        match flushed {
            Err(_) => {
                self.close(i);
                return;
            }
            Ok((stop, progressed)) => {
                if progressed {
                    conn.deadline = None;
                }
                conn.out.take_retired(&mut self.closing);
                if stop == Stop::Cut {
                    // A stream failed: what preceded it is sent; close without
                    // the rest, so the client sees the response is incomplete.
                    conn.cut();
                    conn.out.take_streams(&mut self.closing);
                    self.retire(i);
                    return;
                }
                if !conn.pull_queued
                    && conn.out.wants_pull(self.limits.max_buffered_output)
                    && !self.limits.memory.over()
                {
                    conn.pull_queued = true;
                    self.pulls.push(i);
                }
            }
        }
        if conn.finished() {
            self.retire(i);
            return;
        }
        if self.draining.is_some() && conn.is_idle() {
            self.close(i);
            return;
        }
        if !conn.has_pending_output() && conn.read_paused {
            // Output drained below the bound: resume the reads we stopped.
            self.read_one(i);
            return;
        }
        self.update_deadline(i);
    }

    /// A connection that has sent its last response: close it, lingering
    /// first when we are the side that closes (see `Conn::start_linger`).
    fn retire(&mut self, i: usize) {
        let Some(conn) = self.conns.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        if !conn.close_after || conn.start_linger() == ReadOutcome::Close {
            self.close(i);
        }
    }

    /// Brings the memory budget in step with what connection `i` holds.
    fn recharge(&mut self, i: usize) {
        if let Some(conn) = self.conns.get_mut(i).and_then(Option::as_mut) {
            charge(conn, &self.limits.memory);
        }
    }

    fn update_deadline(&mut self, i: usize) {
        self.recharge(i);
        let Some(conn) = self.conns.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let wanted = conn.wanted_deadline();
        let current = conn.deadline.map(|(kind, _)| kind);
        if wanted == current {
            return;
        }
        // A new connection's first head is due header_timeout after it was
        // accepted, not after its first byte.
        if let (Some((Deadline::Idle, at)), Some(Deadline::Header)) = (conn.deadline, wanted) {
            if !conn.served_any {
                conn.deadline = Some((Deadline::Header, at));
                return;
            }
        }
        let l = &self.limits;
        conn.deadline = wanted.map(|kind| {
            let after = match kind {
                Deadline::Idle if conn.served_any => l.keepalive_timeout,
                Deadline::Idle | Deadline::Header => l.header_timeout,
                Deadline::Body => l.body_timeout,
                Deadline::Write => l.write_timeout,
                Deadline::Linger => super::conn::LINGER,
            };
            (kind, Instant::now() + after)
        });
    }

    /// Expires deadlines (every TICK).
    fn tick(&mut self) {
        let now = Instant::now();
        self.next_tick = now + TICK;
        if self.index == 0 {
            // Log lines the stderr queue dropped, for /metrics.
            let dropped = crate::logging::writer::dropped();
            self.shared.observer.region.set_process(crate::observe::metrics::P_LOG_DROPPED, dropped);
        }
        self.date.refresh();
        for i in 0..self.conns.len() {
            let Some(conn) = self.conns[i].as_mut() else {
                continue;
            };
            let Some((kind, at)) = conn.deadline else {
                continue;
            };
            if kind == Deadline::Linger && conn.all_sent_acknowledged() {
                self.close(i);
                continue;
            }
            if at > now {
                continue;
            }
            match kind {
                Deadline::Header | Deadline::Body => {
                    log::debug!("{}: request timed out ({kind:?})", conn.addr);
                    conn.stop_reading();
                    conn.deadline = None;
                    conn.fail(i, crate::http::HttpError::Timeout, &mut self.jobs);
                }
                Deadline::Idle | Deadline::Write | Deadline::Linger => self.close(i),
            }
        }
        self.resume_after_budget();
    }

    /// Once the memory budget has room again, resumes what it paused:
    /// reading bodies of unknown length and pulling streams.
    fn resume_after_budget(&mut self) {
        if self.limits.memory.limit() == 0 || self.limits.memory.over() {
            return;
        }
        for i in 0..self.conns.len() {
            let Some(conn) = self.conns[i].as_mut() else {
                continue;
            };
            if !conn.pull_queued && conn.out.wants_pull(self.limits.max_buffered_output) {
                conn.pull_queued = true;
                self.pulls.push(i);
            }
            if conn.budget_paused {
                self.read_one(i);
            }
        }
    }

    /// Stops taking new requests: each connection is closed after its next
    /// response (which says `Connection: close`). Idle keep-alive connections
    /// get a short grace instead of an immediate close, so a request already
    /// on its way is answered rather than lost (clients under load send their
    /// next request within milliseconds).
    fn start_draining(&mut self) {
        let now = Instant::now();
        let timeout = self.shared.shutdown_timeout;
        self.draining = Some(now + timeout);
        let grace = now + DRAIN_IDLE_GRACE.min(timeout);
        for conn in self.conns.iter_mut().flatten() {
            if conn.is_idle() {
                conn.deadline = Some((Deadline::Idle, grace));
            }
        }
    }

    fn run_jobs<W: Worker<Target = T>>(&mut self, worker: &mut W) {
        // While busy in handlers this thread cannot take new connections promptly.
        self.shared.busy.store(true, Ordering::Release);
        self.close_streams();
        self.run_jobs_with(Some(worker));
        self.run_pulls();
        self.shared.busy.store(false, Ordering::Release);
    }

    /// Closes the streams of connections that went away (application locked).
    fn close_streams(&mut self) {
        self.closing.release();
    }

    /// Pulls one item from each stream that asked for one (application locked).
    fn run_pulls(&mut self) {
        let mut pulls = std::mem::take(&mut self.pulls);
        for &i in &pulls {
            let Some(conn) = self.conns.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            if !conn.pull_queued {
                continue;
            }
            conn.pull_queued = false;
            if !conn.out.wants_pull(self.limits.max_buffered_output) || self.limits.memory.over() {
                continue;
            }
            // The watchdog sees a pull like a handler call of the stream's route.
            let route = conn.out.next_stream_route();
            if let (Some(a), Some(id)) = (&self.shared.activity, route) {
                a.begin(self.index, id);
            }
            let pulled = conn.out.pull();
            if let (Some(a), Some(_)) = (&self.shared.activity, route) {
                a.end_pull(self.index);
            }
            match pulled {
                PullResult::Idle => continue,
                PullResult::Item | PullResult::Ended => {}
                PullResult::Failed => conn.cut(),
            }
            self.dirty.push(i);
        }
        pulls.clear();
        if self.pulls.is_empty() {
            self.pulls = pulls;
        }
    }

    /// Answers the queued jobs in order. `worker` is None only when no job
    /// calls the application. Each answer is counted, timed and logged.
    fn run_jobs_with<W: Worker<Target = T>>(&mut self, mut worker: Option<&mut W>) {
        self.date.refresh();
        let mut jobs = std::mem::take(&mut self.jobs);
        let mut remaining = jobs.len() as u64;
        let shared = self.shared;
        let observer = &*shared.observer;
        let unmatched = self.router_len();
        for job in jobs.drain(..) {
            remaining -= 1;
            self.obs.metrics.set(T_IN_FLIGHT, remaining + 1);
            let Some(conn) = self.conns.get_mut(job.token).and_then(Option::as_mut) else {
                continue;
            };
            if conn.serial != job.serial {
                continue;
            }
            conn.in_flight -= 1;
            if conn.close_after {
                // An earlier response on this connection said Connection: close.
                continue;
            }
            let keep_alive = job.keep_alive && self.draining.is_none() && !matches!(job.kind, JobKind::Fail(..));
            let ctx = ResponseContext { keep_alive, head_only: job.head_only, version: job.version };
            let was_empty = !conn.has_pending_output();
            let interim = matches!(job.kind, JobKind::Continue);
            let sent = Cell::new(Sent::default());
            let head: Option<&RequestHead> = match &job.kind {
                JobKind::Call { req, .. } => Some(&req.head),
                JobKind::Reply { head, .. } | JobKind::Fail(_, head) => head.as_ref(),
                JobKind::Continue => None,
            };
            let rid = if interim {
                RequestId::default()
            } else {
                self.obs.ids.for_request(head.and_then(|h| h.header("x-request-id")))
            };
            if !interim {
                self.obs.begin_line(head, conn.addr);
            }
            let probe = !matches!(job.kind, JobKind::Fail(..))
                && observer.health_path.as_deref().is_some_and(|p| head.is_some_and(|h| h.path() == p));
            let id_header: [(&[u8], &[u8]); 1] = [(b"X-Request-Id", rid.as_bytes())];
            let mut route_index = unmatched;
            let mut route_label = None;
            let mut protocol_error = false;
            // A batched request is counted and logged when its answer comes back.
            let mut deferred = false;
            // A short text answer from the core itself, recorded in `sent`.
            let core = |out: &mut Vec<u8>,
                        status: u16,
                        extra: &[(&[u8], &[u8])],
                        body: &str,
                        date: &[u8],
                        ctx: ResponseContext| {
                encode::text_response(out, status, extra, body, date, ctx);
                let body_bytes = if ctx.head_only { 0 } else { body.len() as u64 };
                sent.set(Sent { status, body_bytes: Some(body_bytes) });
            };
            match job.kind {
                _ if probe => {
                    // The readiness answer for load balancers; never reaches the application.
                    let (status, _, body) = admin::readiness(observer.health.ready());
                    core(conn.out.tail(), status, &id_header, &body, self.date.value(), ctx);
                    conn.served_any = true;
                }
                JobKind::Continue => {
                    encode::continue_response(conn.out.tail());
                }
                JobKind::Call { .. } if self.limits.memory.over() => {
                    // Past the memory budget (other requests of this batch
                    // filled it): refused without calling the application.
                    let ctx = ResponseContext { keep_alive: false, ..ctx };
                    core(conn.out.tail(), 503, &id_header, BUDGET_SPENT, self.date.value(), ctx);
                    conn.close_after = true;
                    conn.served_any = true;
                }
                JobKind::Call { route, mut req } if route.batch.is_some() => {
                    route_index = route.id;
                    route_label = Some(route.pattern.as_str());
                    req.id = rid;
                    let shared = self.shared;
                    if let Some(queue) = shared.batches.queue(route.id) {
                        let slot = conn.out.reserve();
                        let line = self.obs.logging().then(|| self.obs.take_line());
                        let reply = ReplyTo {
                            thread: self.index,
                            token: job.token,
                            serial: job.serial,
                            slot,
                            ctx,
                            route: route.id,
                            rid,
                            received: job.received,
                            line,
                        };
                        log::trace!("{}: request queued for a batch of route {}", conn.addr, route.pattern);
                        self.batches.enqueue(queue, req, reply);
                        // Answered (and counted, and logged) when the slot is filled.
                        conn.in_flight += 1;
                        deferred = true;
                    } else {
                        log::error!("route {}: batched, but no batch queue exists", route.pattern);
                        core(conn.out.tail(), 500, &id_header, "Internal Server Error\n", self.date.value(), ctx);
                    }
                    conn.served_any = true;
                }
                JobKind::Call { route, mut req } => {
                    route_index = route.id;
                    route_label = Some(route.pattern.as_str());
                    req.id = rid;
                    let stopping = &self.shared.shutdown;
                    let closes = Cell::new(false);
                    let before = conn.out.mark();
                    let res = Responder::new(&mut conn.out, self.date.value(), ctx, stopping, &closes)
                        .with_request_id(rid.as_bytes())
                        .recording(&sent);
                    match worker.as_deref_mut() {
                        Some(w) => {
                            if let Some(a) = &self.shared.activity {
                                a.set_request_id(self.index, rid.as_bytes());
                                a.begin(self.index, route.id);
                            }
                            context::enter(route.id, &rid);
                            // A panic in one call is contained to its request.
                            let handled =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.handle(route, req, res)));
                            if handled.is_err() {
                                log::error!("route {}: the handler call panicked; answered 500", route.pattern);
                                conn.out.rollback(before);
                                let ctx = ResponseContext { keep_alive: false, ..ctx };
                                core(
                                    conn.out.tail(),
                                    500,
                                    &id_header,
                                    "Internal Server Error\n",
                                    self.date.value(),
                                    ctx,
                                );
                                conn.close_after = true;
                            }
                            // Charged now, so that the next job of the batch sees it.
                            charge(conn, &self.limits.memory);
                            if context::leave() {
                                self.obs.metrics.exception(route.id);
                            }
                            if let Some(a) = &self.shared.activity {
                                a.end(self.index);
                            }
                        }
                        None => core(res.out.tail(), 500, &id_header, "Internal Server Error\n", res.date, ctx),
                    }
                    conn.served_any = true;
                    if closes.get() {
                        conn.close_after = true;
                    }
                }
                JobKind::Reply { status, body, allow, .. } => {
                    let with_allow: [(&[u8], &[u8]); 2];
                    let extra: &[(&[u8], &[u8])] = match &allow {
                        Some(a) => {
                            with_allow = [id_header[0], (b"Allow", a.as_bytes())];
                            &with_allow
                        }
                        None => &id_header,
                    };
                    core(conn.out.tail(), status, extra, body, self.date.value(), ctx);
                    conn.served_any = true;
                }
                JobKind::Fail(e, _) => {
                    log::debug!("{}: {e} rid={rid}", conn.addr);
                    protocol_error = true;
                    let ctx = ResponseContext { keep_alive: false, ..ctx };
                    let body = format!("{}\n", e.detail());
                    core(conn.out.tail(), e.status(), &id_header, &body, self.date.value(), ctx);
                }
            }
            if !interim && !deferred {
                let micros = job.received.elapsed().as_micros() as u64;
                let Sent { status, body_bytes } = sent.get();
                self.obs.metrics.request(route_index, status, micros);
                if protocol_error {
                    observer.region.protocol_error(status);
                }
                let outcome = Outcome {
                    status,
                    bytes: body_bytes,
                    duration_us: micros,
                    request_id: rid.as_str(),
                    route: route_label,
                    date: self.date.value(),
                };
                self.obs.finish_line(&outcome);
            }
            // Shutdown may have begun while the handler ran; its response said close.
            if (!keep_alive || self.shared.shutdown.load(Ordering::Acquire)) && !interim {
                conn.close_after = true;
            }
            if was_empty {
                self.dirty.push(job.token);
            }
        }
        self.obs.metrics.set(T_IN_FLIGHT, 0);
        self.batches.commit();
        self.jobs = jobs;
    }

    /// The route index that stands for "no route" in the metrics.
    fn router_len(&self) -> usize {
        self.shared.observer.labels.len().saturating_sub(1)
    }
}

/// Brings the memory budget in step with what `conn` holds. Holdings under
/// CHARGE_STEP count as nothing, so ordinary requests never touch the
/// shared counter.
fn charge<T>(conn: &mut Conn<'_, T>, budget: &crate::http::budget::MemoryBudget) {
    let now = conn.memory();
    let now = if now < CHARGE_STEP { 0 } else { now };
    if now != conn.charged {
        budget.recharge(conn.charged, now);
        conn.charged = now;
    }
}

/// Stands in for a worker when a batch has no application calls.
struct NoApp<T>(std::marker::PhantomData<T>);

impl<T> Worker for NoApp<T> {
    type Target = T;
    fn unlocked<R: Send, F: FnOnce() -> R + Send>(&mut self, f: F) -> R {
        f()
    }
    fn handle(&mut self, _: &Route<T>, _: crate::http::Request, mut res: Responder<'_>) {
        res.text(500, "Internal Server Error\n");
    }
}

/// Runs one pool thread of `app`.
pub fn run_thread<A: App>(app: &A, index: usize, poll: Poll, limits: Limits, shared: &ThreadShared) {
    let mut poll = Some(poll);
    app.run_worker(index, &mut |worker| {
        let Some(poll) = poll.take() else { return };
        let mut event_loop = EventLoop::new(index, poll, app.router(), limits.clone(), shared);
        event_loop.run(worker);
    });
}
