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
//!
//! The loop's state is shared with the main thread ([`LoopCell`]): the
//! thread holds its lock except while a handler runs, so that the main
//! thread can move the other connections of a thread stuck in a handler
//! (`super::rescue`). Responses finished later (awaited coroutines) come
//! back through the thread's `CompletionSink` and fill their reserved slots
//! in the locked phase.

use super::batch::{LoopBatches, ReplyTo};
use super::conn::{Conn, Deadline, Job, JobKind, ReadOutcome, BUDGET_SPENT};
use super::listener::Stream;
use super::rescue;
use super::ThreadShared;
use crate::app::{App, Completed, CompletionSink, Later, Responder, Route, Worker};
use crate::http::body::{Note, Released};
use crate::http::date::{DateCache, DATE_LEN};
use crate::http::encode::{self, ResponseContext, Sent};
use crate::http::output::{Head, Mark, Output, PullResult, Stop};
use crate::http::request_id::RequestId;
use crate::http::Limits;
use crate::http::{Peer, Request, RequestHead};
use crate::observe::access_log::{Outcome, Pending};
use crate::observe::metrics::{T_ABANDONED, T_BYTES_IN, T_BYTES_OUT, T_CONNECTIONS, T_GIL_WAIT_US, T_IN_FLIGHT};
use crate::observe::{admin, context, ThreadObserver};
use crate::router::Router;
use crossbeam_channel::{Receiver, Sender};
use mio::{Events, Interest, Poll, Token};
use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub const WAKER: Token = Token(usize::MAX);
const TICK: Duration = Duration::from_millis(200);
/// A connection's holdings are charged to the memory budget in steps of this.
const CHARGE_STEP: usize = 64 * 1024;
/// How long an idle connection stays open once shutdown begins.
const DRAIN_IDLE_GRACE: Duration = Duration::from_millis(1000);

pub struct EventLoop<'r, T: 'static> {
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
    /// Requests parsed, not yet answered.
    jobs: Vec<Job<'r, T>>,
    /// The jobs being answered now, in order (visible to the rescuer while a
    /// handler runs, so that requests queued behind it can move).
    batch: VecDeque<Job<'r, T>>,
    /// The connection whose handler runs now (its output is taken out).
    in_handler: Option<usize>,
    /// Connections moved here from a thread stuck in a handler.
    moved_rx: Receiver<Moved<T>>,
    /// Responses finished elsewhere, filled in the locked phase.
    completed: Vec<Completed>,
    /// What the access log and metrics need of deferred responses.
    deferred: Vec<DeferredLog<'r>>,
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
    shared: Arc<ThreadShared>,
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
        shared: Arc<ThreadShared>,
        moved_rx: Receiver<Moved<T>>,
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
            batch: VecDeque::new(),
            in_handler: None,
            moved_rx,
            completed: Vec::new(),
            deferred: Vec::new(),
            pulls: Vec::new(),
            closing: Released::default(),
            batches: LoopBatches::default(),
            date: DateCache::new(),
            router,
            limits,
            obs: shared.observer.thread(index + 1),
            shared,
            next_tick: Instant::now() + TICK,
            draining: None,
        }
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
                self.run_core_jobs();
                continue;
            }
            // Streams to pull or close need the application, but new events
            // are taken first so that one busy stream starves no connection.
            let locked_work = !self.pulls.is_empty() || !self.closing.is_empty() || !self.completed.is_empty();
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
                if event.is_write_closed() {
                    // A reset, or a Unix peer that closed both ways: nothing
                    // written can arrive, so the connection's pending work
                    // (a batched request, a coroutine, a stream) is dropped.
                    self.peer_gone(i);
                    continue;
                }
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
        self.shared.completions_taken();
        self.completed.extend(self.shared.completed_rx.try_iter());
        while let Ok(moved) = self.moved_rx.try_recv() {
            self.add_moved(moved);
        }
        while let Ok((stream, addr)) = self.shared.incoming_rx.try_recv() {
            self.add_connection(stream, addr);
        }
        if self.draining.is_none() && self.shared.shutdown.load(Ordering::Acquire) {
            self.start_draining();
        }
    }

    fn add_connection(&mut self, mut stream: Stream, addr: Peer) {
        let i = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        if let Err(e) = self.poll.registry().register(&mut stream, Token(i), Interest::READABLE | Interest::WRITABLE) {
            log::warn!("cannot register connection from {addr}: {e}");
            self.free.push(i);
            self.shared.closed_one();
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
            self.batches.answered(f.to.token, f.to.serial);
            let to = &mut f.to;
            let conn = self.conns.get_mut(to.token).and_then(Option::as_mut).filter(|c| c.serial == to.serial);
            let Some(conn) = conn else {
                // The connection went away while its request waited.
                f.out.take_streams(&mut self.closing);
                continue;
            };
            conn.in_flight -= 1;
            let mut held = false;
            let (out, sent) = (&mut f.out, f.sent);
            let place = |o: &mut Output| {
                std::mem::swap(o, out);
                held = hold_record(o, Mark::default(), sent, || HeldRecord {
                    line: to.line.take(),
                    rid: to.rid,
                    route: to.route,
                    status: sent.status,
                    received: to.received,
                });
            };
            let placed = if f.closes {
                // Nothing queued after a response that closes the connection is sent.
                conn.close_after = true;
                conn.out.fill_last(to.slot, place, &mut self.closing)
            } else {
                conn.out.fill(to.slot, place)
            };
            if !placed {
                // An earlier response closed the connection: this one is never sent.
                f.out.take_streams(&mut self.closing);
                continue;
            }
            let to = &f.to;
            self.dirty.push(to.token);
            if held {
                // Counted and logged when its stream's head is decided.
                continue;
            }
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

    /// Takes over a connection moved from a thread stuck in a handler: a new
    /// token and serial here, its parsed requests queued in order.
    fn add_moved(&mut self, moved: Moved<T>) {
        let Moved { mut conn, jobs } = moved;
        let i = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self.poll.registry().register(&mut conn.stream, Token(i), interest) {
            log::warn!("cannot take over the connection from {}: {e}", conn.addr);
            self.free.push(i);
            self.shared.closed_one();
            if conn.slow {
                self.shared.slow_conns.fetch_sub(1, Ordering::AcqRel);
            }
            return;
        }
        self.next_serial += 1;
        conn.serial = self.next_serial;
        for mut job in jobs {
            job.token = i;
            job.serial = conn.serial;
            self.jobs.push(job);
        }
        if self.draining.is_some() && conn.is_idle() {
            conn.deadline = Some((Deadline::Idle, Instant::now() + DRAIN_IDLE_GRACE));
        }
        // Its output (answers queued before the handler that got stuck) is
        // flushed here; a stream in it is pulled here.
        conn.pull_queued = false;
        self.conns[i] = Some(conn);
        self.live += 1;
        self.obs.metrics.set(T_CONNECTIONS, self.live as u64);
        self.dirty.push(i);
        // Edge-triggered: what arrived while it moved raises no new event.
        self.read_one(i);
    }

    /// The client can receive nothing more: the connection closes at once.
    fn peer_gone(&mut self, i: usize) {
        let Some(conn) = self.conns.get(i).and_then(Option::as_ref) else {
            return;
        };
        if !conn.lingering && (conn.in_flight > 0 || conn.has_pending_output()) {
            let what =
                if self.batches.waiting(i) { "its request waited for a batch" } else { "its response was pending" };
            log::debug!("{}: client went away while {what}", conn.addr);
        }
        self.close(i);
    }

    fn close(&mut self, i: usize) {
        self.batches.closed(i);
        if let Some(mut conn) = self.conns.get_mut(i).and_then(Option::take) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            let before = self.closing.streams.len() + self.closing.cancels.len();
            conn.out.take_streams(&mut self.closing);
            let abandoned = self.closing.streams.len() + self.closing.cancels.len() - before;
            if abandoned > 0 {
                self.obs.metrics.add(T_ABANDONED, abandoned as u64);
            }
            self.limits.memory.recharge(conn.charged, 0);
            self.free.push(i);
            self.live -= 1;
            self.shared.closed_one();
            self.obs.metrics.set(T_CONNECTIONS, self.live as u64);
            if conn.slow {
                self.shared.slow_conns.fetch_sub(1, Ordering::AcqRel);
            }
            if !self.deferred.is_empty() {
                self.deferred.retain(|d| d.token != i);
            }
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
        let was_closed = conn.peer_closed;
        let outcome = conn.read_ready(i, self.router, &self.limits, &mut self.jobs, drain);
        self.obs.metrics.add(T_BYTES_IN, conn.bytes_read - read_before);
        if conn.peer_closed && !was_closed {
            // A FIN only ends what the client sends: every request already
            // received is still answered (batched, awaited or streamed ones
            // too), but its client is not expected back with another.
            self.batches.leaving(i);
            if conn.in_flight > 0 || conn.has_pending_output() {
                log::debug!("{}: client sent FIN; its received requests are still answered", conn.addr);
            }
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

    /// Answers a batch with the application locked (the GIL held). The
    /// loop's own lock is released while each handler runs, so that the
    /// main thread can move this thread's other connections away if the
    /// handler takes long (see `rescue`).
    fn run_jobs<W: Worker<Target = T>>(
        held: &mut Held<'_, Self>,
        worker: &mut W,
        sink: &Arc<dyn CompletionSink>,
        shared: &ThreadShared,
    ) {
        // While busy in handlers this thread cannot take new connections promptly.
        rescue::set_busy(shared, true);
        let index = {
            let lp = held.get();
            lp.close_streams();
            lp.fill_completed(sink);
            lp.start_batch();
            lp.index
        };
        while let Some((mut call, req)) = held.get().next_call() {
            let closes = Cell::new(false);
            let sent = Cell::new(Sent::default());
            let later = Later { sink, token: call.token, serial: call.serial, can_defer: true };
            let route = call.route;
            if let Some(a) = &shared.activity {
                a.set_request_id(index, call.rid.as_bytes());
                a.begin(index, route.id);
            }
            rescue::call_started(shared);
            let slot_before = call.out.last_slot();
            let before = call.out.mark();
            let (failed, panicked) = held.unlocked(|| {
                let res = Responder::new(&mut call.out, &call.date, call.ctx, &shared.shutdown, &closes)
                    .with_request_id(call.rid.as_bytes())
                    .recording(&sent)
                    .with_later(later);
                context::enter(route.id, &call.rid);
                // A panic in one call is contained to its request.
                let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.handle(route, req, res)));
                if handled.is_err() {
                    // Counted and kept for the status page like a handler's exception.
                    context::handler_error("the handler call panicked");
                }
                (context::leave(), handled.is_err())
            });
            if let Some(a) = &shared.activity {
                a.end(index);
            }
            // Debug builds: a test can make the loop itself die here (see `server::serve`).
            crate::fault::hit(crate::fault::Fault::PanicInLoop, &route.pattern);
            let mut deferred = (call.out.last_slot() != slot_before).then(|| call.out.last_slot());
            if panicked {
                log::error!(
                    "route {}: the handler call panicked; answered 500, thread {index} serves on rid={}",
                    route.pattern,
                    call.rid.as_str()
                );
                call.out.rollback(before);
                deferred = None;
                let ctx = ResponseContext { keep_alive: false, ..call.ctx };
                let id: [(&[u8], &[u8]); 1] = [(b"X-Request-Id", call.rid.as_bytes())];
                let body = "Internal Server Error\n";
                encode::text_response(call.out.tail(), 500, &id, body, &call.date, ctx);
                sent.set(Sent { status: 500, body_bytes: Some(body.len() as u64) });
                closes.set(true);
            }
            held.get().finish_call(call, closes.get(), sent.get(), failed, (before, deferred));
        }
        let lp = held.get();
        lp.obs.metrics.set(T_IN_FLIGHT, 0);
        lp.batches.commit();
        EventLoop::run_pulls(held, shared);
        rescue::set_busy(shared, false);
    }

    /// Puts responses finished elsewhere in their reserved places, then
    /// logs and counts them (application locked). Those of connections that
    /// went away are dropped.
    fn fill_completed(&mut self, sink: &Arc<dyn CompletionSink>) {
        if self.completed.is_empty() {
            return;
        }
        self.date.refresh();
        for done in std::mem::take(&mut self.completed) {
            let (token, serial, slot, ctx, fill) = match done {
                Completed::Fill { token, serial, slot, ctx, fill } => (token, serial, slot, ctx, fill),
                Completed::Wake { token, serial } => {
                    self.wake_streams(token, serial);
                    continue;
                }
            };
            let at = self.deferred.iter().position(|d| (d.token, d.serial, d.slot) == (token, serial, slot));
            let Some(mut log) = at.map(|at| self.deferred.swap_remove(at)) else {
                continue;
            };
            let Some(conn) = self.conns.get_mut(token).and_then(Option::as_mut) else {
                continue;
            };
            if conn.serial != serial {
                continue;
            }
            let closes = Cell::new(false);
            let sent = Cell::new(Sent::default());
            let (date, stopping) = (self.date.value(), &self.shared.shutdown);
            // Its streams may wake the loop, but it cannot defer again.
            let later = Later { sink, token, serial, can_defer: false };
            context::enter(log.route_index, &log.rid);
            let mut held = false;
            conn.out.fill(slot, |part| {
                fill(
                    Responder::new(part, date, ctx, stopping, &closes)
                        .with_request_id(log.rid.as_bytes())
                        .recording(&sent)
                        .with_later(later),
                );
                held = hold_record(part, Mark::default(), sent.get(), || HeldRecord {
                    line: log.line.take(),
                    rid: log.rid,
                    route: log.route_index,
                    status: sent.get().status,
                    received: log.received,
                });
            });
            if context::leave() {
                self.obs.metrics.exception(log.route_index);
            }
            if closes.get() {
                conn.close_after = true;
            }
            self.dirty.push(token);
            if held {
                // Counted and logged when its stream's head is decided.
                continue;
            }
            let micros = log.received.elapsed().as_micros() as u64;
            let Sent { status, body_bytes } = sent.get();
            self.obs.metrics.request(log.route_index, status, micros);
            if let Some(line) = &log.line {
                let outcome = Outcome {
                    status,
                    bytes: body_bytes,
                    duration_us: micros,
                    request_id: log.rid.as_str(),
                    route: Some(log.route_label),
                    date: self.date.value(),
                };
                self.obs.finish_line_from(line, &outcome);
            }
        }
    }

    /// A waiting stream of connection `token` has an item: pull it this turn.
    fn wake_streams(&mut self, token: usize, serial: u64) {
        let Some(conn) = self.conns.get_mut(token).and_then(Option::as_mut) else {
            return;
        };
        if conn.serial != serial || !conn.out.wake_streams() {
            return;
        }
        if !conn.pull_queued && conn.out.wants_pull(self.limits.max_buffered_output) {
            conn.pull_queued = true;
            self.pulls.push(token);
        }
        self.dirty.push(token);
    }

    /// Closes the streams of connections that went away (application locked).
    fn close_streams(&mut self) {
        // Responses whose head was never decided (the client went first):
        // recorded with the status their handler chose.
        for note in std::mem::take(&mut self.closing.notes) {
            self.record_held(note, None);
        }
        self.closing.release();
    }

    /// Counts and logs a response whose head was held back (see
    /// [`HeldRecord`]), now that `head` decided it (None: never decided).
    fn record_held(&mut self, note: Note, head: Option<Head>) {
        let Ok(rec) = note.downcast::<HeldRecord>() else {
            return;
        };
        let (status, bytes) = match head {
            Some(Head::Replaced { status, body_bytes }) => (status, Some(body_bytes)),
            Some(Head::Sent) | None => (rec.status, None),
        };
        let micros = rec.received.elapsed().as_micros() as u64;
        self.obs.metrics.request(rec.route, status, micros);
        if let Some(line) = &rec.line {
            let outcome = Outcome {
                status,
                bytes,
                duration_us: micros,
                request_id: rec.rid.as_str(),
                route: self.shared.observer.route_label(rec.route),
                date: self.date.value(),
            };
            self.obs.finish_line_from(line, &outcome);
        }
    }

    /// Pulls one item from each stream that asked for one (application
    /// locked). Like a handler call, a pull runs with the loop's own lock
    /// released and the connection's output taken out, so that a generator
    /// that blocks between items gets this thread's other connections moved
    /// away (`rescue`) instead of holding them up.
    fn run_pulls(held: &mut Held<'_, Self>, shared: &ThreadShared) {
        let mut pulls = std::mem::take(&mut held.get().pulls);
        for &i in &pulls {
            let lp = held.get();
            let Some(conn) = lp.conns.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            if !conn.pull_queued {
                continue;
            }
            conn.pull_queued = false;
            if !conn.out.wants_pull(lp.limits.max_buffered_output) || lp.limits.memory.over() {
                continue;
            }
            // The watchdog sees a pull like a handler call of the stream's route.
            let route = conn.out.next_stream_route();
            let (index, serial) = (lp.index, conn.serial);
            let mut out = std::mem::take(&mut conn.out);
            lp.in_handler = Some(i);
            if let (Some(a), Some(id)) = (&shared.activity, route) {
                a.begin(index, id);
            }
            rescue::call_started(shared);
            let pulled = held.unlocked(|| out.pull());
            if let (Some(a), Some(_)) = (&shared.activity, route) {
                a.end_pull(index);
            }
            let lp = held.get();
            lp.in_handler = None;
            // A held head decided by this pull: its response is recorded now.
            for (note, head) in out.take_decided() {
                lp.record_held(note, Some(head));
            }
            // A stream that raised before its first item answered like a
            // handler that raised, in its request's context: counted like one.
            if context::leave() {
                if let Some(id) = route {
                    lp.obs.metrics.exception(id);
                }
            }
            // The connection being pulled is never moved (it is `in_handler`).
            let Some(conn) = lp.conns.get_mut(i).and_then(Option::as_mut).filter(|c| c.serial == serial) else {
                out.take_streams(&mut lp.closing);
                continue;
            };
            conn.out = out;
            match pulled {
                PullResult::Idle => continue,
                PullResult::Item | PullResult::Ended | PullResult::Replaced => {}
                PullResult::Failed => conn.cut(),
            }
            lp.dirty.push(i);
        }
        pulls.clear();
        let lp = held.get();
        if lp.pulls.is_empty() {
            lp.pulls = pulls;
        }
    }

    /// Moves the parsed requests into the batch being answered.
    fn start_batch(&mut self) {
        self.date.refresh();
        self.batch.extend(self.jobs.drain(..));
    }

    /// Answers a batch that has no application calls (application unlocked).
    fn run_core_jobs(&mut self) {
        self.start_batch();
        while let Some((mut call, _req)) = self.next_call() {
            // Not reached: io_phase locks the application for batches with calls.
            let sent = Sent { status: 500, body_bytes: Some(22) };
            encode::text_response(call.out.tail(), 500, &[], "Internal Server Error\n", &call.date, call.ctx);
            self.finish_call(call, false, sent, false, (Mark::default(), None));
        }
        self.obs.metrics.set(T_IN_FLIGHT, 0);
        self.batches.commit();
    }

    /// Answers the batch's jobs in order until one calls the application;
    /// returns that call, with its connection's output taken out until
    /// [`EventLoop::finish_call`] puts it back. Each answer is counted,
    /// timed and logged.
    fn next_call(&mut self) -> Option<(Call<'r, T>, Request)> {
        let unmatched = self.router_len();
        while let Some(job) = self.batch.pop_front() {
            self.obs.metrics.set(T_IN_FLIGHT, self.batch.len() as u64 + 1);
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
            let observer = &*self.shared.observer;
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
                    req.id = rid;
                    let shared = &self.shared;
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
                            held: self.limits.memory.hold(req.body.capacity()),
                        };
                        log::trace!("{}: request queued for a batch of route {}", conn.addr, route.pattern);
                        self.batches.enqueue(queue, req, reply, conn.peer_closed);
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
                    req.id = rid;
                    let mut date = [b' '; DATE_LEN];
                    let now = self.date.value();
                    let n = now.len().min(DATE_LEN);
                    date[..n].copy_from_slice(&now[..n]);
                    let out = std::mem::take(&mut conn.out);
                    self.in_handler = Some(job.token);
                    let call = Call {
                        token: job.token,
                        serial: conn.serial,
                        route,
                        ctx,
                        keep_alive,
                        was_empty,
                        out,
                        date,
                        rid,
                        received: job.received,
                    };
                    return Some((call, req));
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
                self.obs.metrics.request(unmatched, status, micros);
                if protocol_error {
                    observer.region.protocol_error(status);
                }
                let outcome = Outcome {
                    status,
                    bytes: body_bytes,
                    duration_us: micros,
                    request_id: rid.as_str(),
                    route: None,
                    date: self.date.value(),
                };
                self.obs.finish_line(&outcome);
            }
            // Shutdown may have begun meanwhile; the response said close.
            if (!keep_alive || self.shared.shutdown.load(Ordering::Acquire)) && !interim {
                conn.close_after = true;
            }
            if was_empty {
                self.dirty.push(job.token);
            }
        }
        None
    }

    /// Puts a handled call's output back in its connection, then counts and
    /// logs the answer (or keeps what that needs, for a response deferred
    /// to the reserved `slot`).
    /// `at` is where the call's response began in the output (`Mark`) and
    /// its deferred slot, if any.
    fn finish_call(&mut self, call: Call<'r, T>, closes: bool, sent: Sent, failed: bool, at: (Mark, Option<u64>)) {
        let (before, slot) = at;
        self.in_handler = None;
        let route = call.route;
        if failed {
            self.obs.metrics.exception(route.id);
        }
        let Some(conn) = self.conns.get_mut(call.token).and_then(Option::as_mut) else {
            return;
        };
        if conn.serial != call.serial {
            return;
        }
        conn.out = call.out;
        // Charged now, so that the next job of the batch sees it.
        charge(conn, &self.limits.memory);
        conn.served_any = true;
        // Shutdown may have begun while the handler ran; its response said close.
        if closes || !call.keep_alive || self.shared.shutdown.load(Ordering::Acquire) {
            conn.close_after = true;
        }
        if call.was_empty {
            self.dirty.push(call.token);
        }
        if let Some(slot) = slot {
            self.deferred.push(DeferredLog {
                token: call.token,
                serial: call.serial,
                slot,
                line: self.obs.logging().then(|| self.obs.take_line()),
                rid: call.rid,
                route_index: route.id,
                route_label: route.pattern.as_str(),
                received: call.received,
            });
            return;
        }
        let obs = &mut self.obs;
        let record = || HeldRecord {
            line: obs.logging().then(|| obs.take_line()),
            rid: call.rid,
            route: route.id,
            status: sent.status,
            received: call.received,
        };
        if hold_record(&mut conn.out, before, sent, record) {
            // Counted and logged when its stream's head is decided.
            return;
        }
        let micros = call.received.elapsed().as_micros() as u64;
        let Sent { status, body_bytes } = sent;
        self.obs.metrics.request(route.id, status, micros);
        let outcome = Outcome {
            status,
            bytes: body_bytes,
            duration_us: micros,
            request_id: call.rid.as_str(),
            route: Some(route.pattern.as_str()),
            date: self.date.value(),
        };
        self.obs.finish_line(&outcome);
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

impl<T: Send + Sync + 'static> EventLoop<'static, T> {
    /// Takes every connection that can move to another loop (the rescuer
    /// holds this loop's lock while its thread runs a handler): not the one
    /// in the handler (marked slow; true when newly so), none waiting on a
    /// reserved slot; the requests it has queued and its output go along.
    pub fn take_movable(&mut self) -> (bool, Vec<Moved<T>>) {
        let Some(busy) = self.in_handler else {
            return (false, Vec::new());
        };
        let newly_slow = match self.conns.get_mut(busy).and_then(Option::as_mut) {
            Some(conn) if !conn.slow => {
                conn.slow = true;
                true
            }
            _ => false,
        };
        let mut moved = Vec::new();
        for i in 0..self.conns.len() {
            if i == busy {
                continue;
            }
            let Some(conn) = self.conns[i].as_mut() else {
                continue;
            };
            if !conn.movable() || self.poll.registry().deregister(&mut conn.stream).is_err() {
                continue;
            }
            let Some(conn) = self.conns[i].take() else {
                continue;
            };
            let serial = conn.serial;
            let mine = |j: &Job<'static, T>| j.token == i && j.serial == serial;
            let mut jobs: Vec<Job<'static, T>> = Vec::new();
            let mut k = 0;
            while k < self.batch.len() {
                if mine(&self.batch[k]) {
                    jobs.extend(self.batch.remove(k));
                } else {
                    k += 1;
                }
            }
            let (theirs, stay): (Vec<_>, Vec<_>) = self.jobs.drain(..).partition(|j| mine(j));
            jobs.extend(theirs);
            self.jobs = stay;
            self.free.push(i);
            self.live -= 1;
            moved.push(Moved { conn, jobs });
        }
        self.obs.metrics.set(T_CONNECTIONS, self.live as u64);
        (newly_slow, moved)
    }
}

/// One application call being made, with its connection's output.
struct Call<'r, T> {
    token: usize,
    serial: u64,
    route: &'r Route<T>,
    ctx: ResponseContext,
    keep_alive: bool,
    was_empty: bool,
    out: Output,
    date: [u8; DATE_LEN],
    rid: RequestId,
    received: Instant,
}

/// What the access log and metrics need of a response deferred to a slot.
struct DeferredLog<'r> {
    token: usize,
    serial: u64,
    slot: u64,
    /// The access-log line's request part (None: no access log).
    line: Option<Pending>,
    rid: RequestId,
    route_index: usize,
    route_label: &'r str,
    received: Instant,
}

/// The access-log line and metrics of a response whose head its stream
/// holds back until the first item (`Output::push_stream_first`): noted on
/// that head, so that it travels with the connection if the rescuer moves
/// it, and recorded by the loop that owns the connection once a pull
/// decides the head (the status actually sent: the handler's, or the one
/// of the response that replaced it).
struct HeldRecord {
    /// The access-log line's request part (None: no access log).
    line: Option<Pending>,
    rid: RequestId,
    route: usize,
    /// The handler's status (recorded as such when the head is never decided).
    status: u16,
    received: Instant,
}

/// Notes the record `rec` makes on the held head of a stream response
/// queued in `out` since `since`; false (and `rec` not made) when the
/// response is not one (a plain response: `sent` has its body size).
fn hold_record(out: &mut Output, since: Mark, sent: Sent, rec: impl FnOnce() -> HeldRecord) -> bool {
    sent.body_bytes.is_none() && out.note_held_head(since, || Box::new(rec()) as Note)
}

/// A connection moved from a thread stuck in a handler, with its parsed requests.
pub struct Moved<T: 'static> {
    conn: Conn<'static, T>,
    jobs: Vec<Job<'static, T>>,
}

impl<T> Moved<T> {
    pub fn slow(&self) -> bool {
        self.conn.slow
    }
}

/// A pool thread's loop, shared with the main thread's rescuer: the thread
/// holds the lock except while a handler runs.
pub struct LoopCell<T: 'static> {
    pub state: Mutex<EventLoop<'static, T>>,
    pub moved_tx: Sender<Moved<T>>,
}

impl<T: Send + Sync + 'static> LoopCell<T> {
    pub fn new(event_loop: impl FnOnce(Receiver<Moved<T>>) -> EventLoop<'static, T>) -> Self {
        let (moved_tx, moved_rx) = crossbeam_channel::unbounded();
        LoopCell { state: Mutex::new(event_loop(moved_rx)), moved_tx }
    }

    /// The loop's thread died: shuts down every connection it owned, so
    /// that their clients see the close now (what they wait for is lost).
    pub fn abandon(&self) {
        let lp = lock(&self.state);
        for conn in lp.conns.iter().flatten() {
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Runs the loop until shutdown; `worker` is the application's view for this thread.
    pub fn run<W: Worker<Target = T>>(&self, worker: &mut W, sink: &Arc<dyn CompletionSink>) {
        let mut held = Held::new(&self.state);
        let shared = held.get().shared.clone();
        // The loop was built on the main thread: handler errors are recorded
        // through this thread's context.
        context::set_region(shared.observer.region.clone());
        loop {
            let lp = held.get();
            let (phase, done) = worker.unlocked(|| (lp.io_phase(), Instant::now()));
            // Time from the end of the I/O phase until the application lock (the GIL) was ours.
            lp.obs.metrics.add(T_GIL_WAIT_US, done.elapsed().as_micros() as u64);
            match phase {
                Phase::Exit => break,
                Phase::Jobs => EventLoop::run_jobs(&mut held, worker, sink, &shared),
            }
        }
        let lp = held.get();
        for conn in lp.conns.iter_mut().flatten() {
            conn.out.take_streams(&mut lp.closing);
        }
        // Coroutines still running are the shutdown's to cancel (and count),
        // after every pool thread has stopped (`App::shutdown`).
        lp.closing.cancels.clear();
        lp.close_streams();
        lp.obs.flush_now();
        log::debug!("thread {} stopped", lp.index);
    }
}

/// A loop's lock, released around handler calls and taken again on next use.
struct Held<'a, L> {
    cell: &'a Mutex<L>,
    guard: Option<MutexGuard<'a, L>>,
}

impl<'a, L> Held<'a, L> {
    fn new(cell: &'a Mutex<L>) -> Self {
        Held { cell, guard: Some(lock(cell)) }
    }

    fn get(&mut self) -> &mut L {
        let cell = self.cell;
        self.guard.get_or_insert_with(|| lock(cell))
    }

    fn unlocked<R>(&mut self, f: impl FnOnce() -> R) -> R {
        self.guard = None;
        f()
    }
}

/// Nothing run under the lock panics (handlers run outside it), so a
/// poisoned lock still guards consistent state.
fn lock<L>(m: &Mutex<L>) -> MutexGuard<'_, L> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs one pool thread of `app`.
pub fn run_thread<A: App>(app: &A, index: usize, cell: Arc<LoopCell<A::Target>>, sink: Arc<dyn CompletionSink>) {
    app.run_worker(index, &mut |worker| cell.run(worker, &sink));
}
