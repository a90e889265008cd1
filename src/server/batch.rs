//! Adaptive request batching: requests to a route declared with `"batch"`,
//! from every connection and pool thread of the process, join one queue per
//! route; batch threads take them out in groups and call the application
//! once per group ([`Worker::handle_batch`]).
//!
//! The request's own event loop reserves a slot in its connection's output
//! ([`crate::http::output::Output::reserve`]), so the answer keeps its place
//! among pipelined neighbours. A batch thread encodes each answer into an
//! output of its own and sends it back to the owning loop over a channel
//! (plus that loop's mio `Waker`); the loop fills the slot.
//!
//! When a batch is dispatched ([`Queue::next_batch`]): when it is full
//! (`max_size`), when its oldest request has waited `max_wait`, or as soon
//! as it holds as many requests as are expected. The expectation is the
//! number of requests of the previous batch whose connections are still open
//! and keep-alive: their clients usually come back. A lone client therefore
//! gets its batch of one at once (no added latency at low load), 64 clients
//! in a closed loop get batches of 64, and requests arriving while a batch
//! runs form the next one. A request whose connection closes (a reset, a
//! failed write) while it waits is dropped before its batch is formed; a
//! client that only sent FIN is answered, but not expected back.

use super::ThreadShared;
use crate::app::{App, BatchSettings, Responder, Route, Worker};
use crate::http::body::Released;
use crate::http::budget::Charge;
use crate::http::date::DateCache;
use crate::http::encode::{ResponseContext, Sent};
use crate::http::output::Output;
use crate::http::request_id::RequestId;
use crate::http::Request;
use crate::observe::access_log::Pending;
use crate::observe::context;
use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// A connection as its batched requests see it.
#[derive(Debug, Default)]
pub struct Ticket(AtomicU8);

/// The connection is open and keep-alive: its client is expected back.
const OPEN: u8 = 0;
/// The connection closes after its response: no more requests from it.
const LEAVING: u8 = 1;
/// The connection is gone: its waiting requests are dropped.
const GONE: u8 = 2;

impl Ticket {
    pub fn leaving(&self) {
        let _ = self.0.compare_exchange(OPEN, LEAVING, Ordering::AcqRel, Ordering::Acquire);
    }
    pub fn gone(&self) {
        self.0.store(GONE, Ordering::Release);
    }
    fn is_gone(&self) -> bool {
        self.0.load(Ordering::Acquire) == GONE
    }
    fn expected_back(&self) -> bool {
        self.0.load(Ordering::Acquire) == OPEN
    }
}

/// A request waiting in a queue.
pub struct Waiting<P> {
    pub payload: P,
    ticket: Arc<Ticket>,
    at: Instant,
}

struct State<P> {
    items: VecDeque<Waiting<P>>,
    /// Tickets of the previous batch: the requests to expect.
    last: Vec<Arc<Ticket>>,
    /// Batch threads waiting in `next_batch`.
    idle: usize,
    /// How many items the waiting threads wait for (a push reaching it wakes one).
    want: usize,
    /// Shutdown began: dispatch at once, without waiting for more.
    hurry: bool,
    /// Every pool thread has stopped: return None once the queue is empty.
    stop: bool,
}

/// One route's queue, shared by every pool thread and the route's batch threads.
pub struct Queue<P> {
    settings: BatchSettings,
    state: Mutex<State<P>>,
    ready: Condvar,
}

impl<P> Queue<P> {
    pub fn new(settings: BatchSettings) -> Self {
        Queue {
            settings,
            state: Mutex::new(State {
                items: VecDeque::new(),
                last: Vec::new(),
                idle: 0,
                want: 1,
                hurry: false,
                stop: false,
            }),
            ready: Condvar::new(),
        }
    }

    pub fn settings(&self) -> BatchSettings {
        self.settings
    }

    fn lock(&self) -> MutexGuard<'_, State<P>> {
        // No code panics while holding it; a poisoned lock still holds valid data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds requests (in order) and wakes a batch thread if they complete what it waits for.
    pub fn push(&self, items: impl IntoIterator<Item = Waiting<P>>) {
        let mut st = self.lock();
        let was_empty = st.items.is_empty();
        st.items.extend(items);
        let len = st.items.len();
        if st.idle > 0 && len > 0 && (was_empty || len >= st.want || len >= self.settings.max_size) {
            self.ready.notify_one();
        }
    }

    /// Waits for the next batch (1..=max_size requests, oldest first); None
    /// once [`Queue::stop`] was called and nothing is left.
    pub fn next_batch(&self) -> Option<Vec<Waiting<P>>> {
        let max_size = self.settings.max_size;
        let mut st = self.lock();
        loop {
            if st.items.is_empty() {
                if st.stop {
                    return None;
                }
                st.idle += 1;
                st = self.ready.wait(st).unwrap_or_else(|e| e.into_inner());
                st.idle -= 1;
                continue;
            }
            let now = Instant::now();
            let due = st.items.front().map_or(now, |w| w.at + self.settings.max_wait);
            let expected = st.last.iter().filter(|t| t.expected_back()).count();
            let want = expected.clamp(1, max_size);
            if st.items.len() >= want || now >= due || st.hurry || st.stop {
                let mut batch = Vec::with_capacity(st.items.len().min(max_size));
                while batch.len() < max_size {
                    let Some(w) = st.items.pop_front() else { break };
                    if !w.ticket.is_gone() {
                        batch.push(w);
                    }
                }
                if batch.is_empty() {
                    continue;
                }
                st.last.clear();
                let tickets: Vec<Arc<Ticket>> = batch.iter().map(|w| w.ticket.clone()).collect();
                st.last = tickets;
                if !st.items.is_empty() && st.idle > 0 {
                    // Another batch thread may take the rest.
                    self.ready.notify_one();
                }
                return Some(batch);
            }
            st.want = want;
            st.idle += 1;
            st = self.ready.wait_timeout(st, due - now).unwrap_or_else(|e| e.into_inner()).0;
            st.idle -= 1;
        }
    }

    /// Shutdown began: what is queued and what arrives is dispatched at once.
    pub fn hurry(&self) {
        self.lock().hurry = true;
        self.ready.notify_all();
    }

    /// No request can arrive any more: batch threads return once it is empty.
    pub fn stop(&self) {
        let mut st = self.lock();
        st.hurry = true;
        st.stop = true;
        self.ready.notify_all();
    }
}

/// Where an answer goes (the pool thread, connection and slot of its
/// request) and what its access-log line and metrics need.
pub struct ReplyTo {
    pub thread: usize,
    pub token: usize,
    pub serial: u64,
    pub slot: u64,
    pub ctx: ResponseContext,
    /// The route's index (metrics).
    pub route: usize,
    pub rid: RequestId,
    /// When the request was complete.
    pub received: Instant,
    /// The request side of its access-log line, when the log is on.
    pub line: Option<Pending>,
    /// Its body, charged to the memory budget while it waits (a connection
    /// no longer counts it once it is queued) and until the batch call ends.
    pub held: Charge,
}

/// A request of a batched route as it waits in its queue.
pub type Item = (Request, ReplyTo);

/// An answer on its way back to the loop that owns the connection.
pub struct Filled {
    pub to: ReplyTo,
    pub out: Output,
    /// The response said `Connection: close`.
    pub closes: bool,
    /// Its status and body size.
    pub sent: Sent,
}

/// The queues of the batched routes of one process, by route id.
#[derive(Default)]
pub struct Batches {
    queues: HashMap<usize, Arc<Queue<Item>>>,
}

impl Batches {
    /// A queue for every route of `app` that declares `batch`.
    pub fn for_app<A: App>(app: &A) -> Batches {
        let queues = app
            .router()
            .targets()
            .into_iter()
            .filter_map(|r| r.batch.map(|s| (r.id, Arc::new(Queue::new(s)))))
            .collect();
        Batches { queues }
    }

    pub fn queue(&self, route: usize) -> Option<&Arc<Queue<Item>>> {
        self.queues.get(&route)
    }

    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Number of batch threads to start.
    pub fn thread_count(&self) -> usize {
        self.queues.values().map(|q| q.settings.max_concurrent).sum()
    }

    pub fn hurry(&self) {
        self.queues.values().for_each(|q| q.hurry());
    }

    pub fn stop(&self) {
        self.queues.values().for_each(|q| q.stop());
    }
}

/// Requests for one queue, pushed at the end of the turn.
type Staged = (Arc<Queue<Item>>, Vec<Waiting<Item>>);

/// One event loop's side of batching: its connections' tickets, and the
/// requests it queued this turn (pushed together, one lock per queue).
#[derive(Default)]
pub struct LoopBatches {
    /// By connection token: (serial, ticket, requests waiting for an answer).
    conns: HashMap<usize, (u64, Arc<Ticket>, u32)>,
    staged: Vec<Staged>,
}

impl LoopBatches {
    /// Queues a request of connection `reply.token` (sent at the end of the
    /// turn by [`LoopBatches::commit`]); `peer_closed` when its client has
    /// sent FIN (answered, but not expected back).
    pub fn enqueue(&mut self, queue: &Arc<Queue<Item>>, req: Request, reply: ReplyTo, peer_closed: bool) {
        let entry = self.conns.entry(reply.token).or_insert_with(|| (reply.serial, Arc::default(), 0));
        if entry.0 != reply.serial {
            *entry = (reply.serial, Arc::default(), 0);
        }
        entry.2 += 1;
        if !reply.ctx.keep_alive || peer_closed {
            entry.1.leaving();
        }
        let waiting = Waiting { payload: (req, reply), ticket: entry.1.clone(), at: Instant::now() };
        match self.staged.iter_mut().find(|(q, _)| Arc::ptr_eq(q, queue)) {
            Some((_, items)) => items.push(waiting),
            None => self.staged.push((queue.clone(), vec![waiting])),
        }
    }

    /// Pushes the requests queued this turn.
    pub fn commit(&mut self) {
        for (queue, items) in self.staged.iter_mut() {
            queue.push(items.drain(..));
        }
        // Keep the few vectors for the next turn.
        self.staged.retain(|(_, items)| items.capacity() <= 1024);
    }

    /// Whether connection `token` has requests waiting for a batch.
    pub fn waiting(&self, token: usize) -> bool {
        self.conns.get(&token).is_some_and(|c| c.2 > 0)
    }

    /// An answer for connection `token` came back.
    pub fn answered(&mut self, token: usize, serial: u64) {
        if let Some(c) = self.conns.get_mut(&token) {
            if c.0 == serial {
                c.2 = c.2.saturating_sub(1);
            }
        }
    }

    /// Connection `token` sends no more requests (its client sent FIN): its
    /// waiting requests are still answered, but no batch waits for it.
    pub fn leaving(&mut self, token: usize) {
        if let Some((_, ticket, _)) = self.conns.get(&token) {
            ticket.leaving();
        }
    }

    /// Connection `token` is closed: its waiting requests are dropped.
    pub fn closed(&mut self, token: usize) {
        if let Some((_, ticket, _)) = self.conns.remove(&token) {
            ticket.gone();
        }
    }
}

/// Responses of batched routes never say `Connection: close` because of a
/// shutdown that began while they waited: the keep-alive decision was made
/// when the request was queued, in order with its pipelined neighbours.
static NOT_STOPPING: AtomicBool = AtomicBool::new(false);

/// The life of one batch thread of `route`: attached to the application
/// once, it takes batches from `queue`, answers them, and sends each answer
/// to the loop that owns its connection.
pub fn run_thread<A: App>(
    app: &A,
    index: usize,
    route: &Route<A::Target>,
    queue: &Queue<Item>,
    threads: &[Arc<ThreadShared>],
) {
    let Some(first) = threads.first() else { return };
    if let Some(a) = &first.activity {
        // The timeout watchdog interrupts a batch that runs too long, as it does a handler.
        a.register_thread(index);
    }
    // Metrics rows: the acceptor's, the pool threads', then the batch threads'.
    let obs = first.observer.thread(index + 1);
    app.run_worker(index, &mut |worker| {
        let mut date = DateCache::new();
        let mut answers: Vec<Filled> = Vec::new();
        loop {
            let batch = worker.unlocked(|| {
                deliver(&mut answers, threads);
                queue.next_batch()
            });
            let Some(batch) = batch else { break };
            date.refresh();
            let n = batch.len();
            obs.metrics.batch(route.id, n as u64);
            let (reqs, mut replies): (Vec<Request>, Vec<ReplyTo>) = batch.into_iter().map(|w| w.payload).unzip();
            let mut outs: Vec<Output> = (0..n).map(|_| Output::new()).collect();
            let closes: Vec<Cell<bool>> = (0..n).map(|_| Cell::new(false)).collect();
            let sent: Vec<Cell<Sent>> = (0..n).map(|_| Cell::new(Sent::default())).collect();
            let res: Vec<Responder<'_>> = outs
                .iter_mut()
                .zip(&closes)
                .zip(&sent)
                .zip(&replies)
                .map(|(((out, closes), sent), r)| {
                    Responder::new(out, date.value(), r.ctx, &NOT_STOPPING, closes)
                        .with_request_id(r.rid.as_bytes())
                        .recording(sent)
                })
                .collect();
            if let Some(a) = &first.activity {
                a.begin(index, route.id);
            }
            // Errors of the whole batch name every request's id; an item's, its own.
            context::enter_batch(route.id, replies.iter().map(|r| r.rid));
            // A panic in one call is contained to its batch: every request gets a 500.
            let handled =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.handle_batch(route, reqs, res)));
            if context::leave() {
                obs.metrics.exception(route.id);
            }
            // The call is over: its requests' bodies are freed.
            replies.iter_mut().for_each(|r| r.held.release());
            if handled.is_err() {
                let ids: Vec<String> = replies.iter().map(|r| format!(" rid={}", r.rid)).collect();
                log::error!(
                    "route {}: the batch handler call panicked; its {n} requests answered 500{}",
                    route.pattern,
                    ids.concat()
                );
                for (((out, closes), sent), r) in outs.iter_mut().zip(&closes).zip(&sent).zip(&replies) {
                    // What the failed call queued is closed and freed here, with the GIL held.
                    let mut dropped = Released::default();
                    out.take_streams(&mut dropped);
                    dropped.release();
                    *out = Output::new();
                    let ctx = ResponseContext { keep_alive: false, ..r.ctx };
                    let id: [(&[u8], &[u8]); 1] = [(b"X-Request-Id", r.rid.as_bytes())];
                    crate::http::encode::text_response(
                        out.tail(),
                        500,
                        &id,
                        "Internal Server Error\n",
                        date.value(),
                        ctx,
                    );
                    closes.set(true);
                    sent.set(Sent { status: 500, body_bytes: Some(22) });
                }
            }
            if let Some(a) = &first.activity {
                a.end_many(index, n as u64);
            }
            for (((to, out), closes), sent) in replies.into_iter().zip(outs).zip(closes).zip(sent) {
                answers.push(Filled { to, out, closes: closes.get(), sent: sent.get() });
            }
        }
        worker.unlocked(|| deliver(&mut answers, threads));
    });
}

/// Sends answers to their loops, waking each loop once.
fn deliver(answers: &mut Vec<Filled>, threads: &[Arc<ThreadShared>]) {
    if answers.is_empty() {
        return;
    }
    let mut woken: Vec<usize> = Vec::new();
    for filled in answers.drain(..) {
        let thread = filled.to.thread;
        let Some(t) = threads.get(thread) else { continue };
        // A loop that has stopped no longer owns the connection: the answer is dropped.
        if t.filled_tx.send(filled).is_ok() && !woken.contains(&thread) {
            woken.push(thread);
        }
    }
    for thread in woken {
        if let Some(t) = threads.get(thread) {
            let _ = t.waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings(max_size: usize, max_wait_ms: u64) -> BatchSettings {
        BatchSettings { max_size, max_wait: Duration::from_millis(max_wait_ms), max_concurrent: 1 }
    }

    fn item(v: u32, ticket: &Arc<Ticket>) -> Waiting<u32> {
        Waiting { payload: v, ticket: ticket.clone(), at: Instant::now() }
    }

    fn values(batch: Option<Vec<Waiting<u32>>>) -> Vec<u32> {
        batch.expect("a batch").into_iter().map(|w| w.payload).collect()
    }

    #[test]
    fn a_lone_request_is_dispatched_at_once() {
        let q = Queue::new(settings(64, 60_000));
        let t = Arc::new(Ticket::default());
        q.push([item(1, &t)]);
        let started = Instant::now();
        assert_eq!(values(q.next_batch()), [1]);
        // The same client again: the previous batch had one request.
        q.push([item(2, &t)]);
        assert_eq!(values(q.next_batch()), [2]);
        assert!(started.elapsed() < Duration::from_secs(30), "never waited for max_wait");
    }

    #[test]
    fn the_clients_of_the_previous_batch_are_waited_for_up_to_max_wait() {
        let q = Arc::new(Queue::new(settings(64, 60_000)));
        let tickets: Vec<Arc<Ticket>> = (0..3).map(|_| Arc::default()).collect();
        q.push(tickets.iter().enumerate().map(|(i, t)| item(i as u32, t)));
        assert_eq!(values(q.next_batch()), [0, 1, 2]);
        // Two of three are back: the thread waits for the third...
        q.push([item(10, &tickets[0]), item(11, &tickets[1])]);
        let waiter = {
            let q = q.clone();
            std::thread::spawn(move || values(q.next_batch()))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "dispatched before the third client came back");
        q.push([item(12, &tickets[2])]);
        assert_eq!(waiter.join().unwrap(), [10, 11, 12]);
        // ...unless its connection closed meanwhile.
        tickets[2].gone();
        q.push([item(20, &tickets[0]), item(21, &tickets[1])]);
        assert_eq!(values(q.next_batch()), [20, 21]);
    }

    #[test]
    fn max_wait_bounds_the_wait_and_max_size_the_batch() {
        let q = Queue::new(settings(2, 30));
        let tickets: Vec<Arc<Ticket>> = (0..3).map(|_| Arc::default()).collect();
        q.push(tickets.iter().enumerate().map(|(i, t)| item(i as u32, t)));
        assert_eq!(values(q.next_batch()), [0, 1]);
        assert_eq!(values(q.next_batch()), [2]);
        q.push([item(3, &tickets[0]), item(4, &tickets[1])]);
        assert_eq!(values(q.next_batch()), [3, 4]);
        // Two expected, one comes: dispatched after max_wait.
        q.push([item(5, &tickets[0])]);
        let started = Instant::now();
        assert_eq!(values(q.next_batch()), [5]);
        assert!(started.elapsed() >= Duration::from_millis(25));
    }

    #[test]
    fn gone_requests_are_dropped_and_leaving_clients_are_not_expected() {
        let q = Queue::new(settings(64, 60_000));
        let (a, b) = (Arc::new(Ticket::default()), Arc::new(Ticket::default()));
        q.push([item(1, &a), item(2, &b), item(3, &a)]);
        b.gone();
        assert_eq!(values(q.next_batch()), [1, 3]);
        a.leaving();
        let c = Arc::new(Ticket::default());
        q.push([item(4, &c)]);
        assert_eq!(values(q.next_batch()), [4], "a leaving connection is not waited for");
    }

    #[test]
    fn stop_dispatches_what_is_left_then_ends() {
        let q = Arc::new(Queue::<u32>::new(settings(64, 60_000)));
        let waiter = {
            let q = q.clone();
            std::thread::spawn(move || q.next_batch().is_none())
        };
        q.stop();
        assert!(waiter.join().unwrap(), "a waiting thread returns at stop");
        let q = Queue::new(settings(64, 60_000));
        let tickets: Vec<Arc<Ticket>> = (0..2).map(|_| Arc::default()).collect();
        q.push([item(1, &tickets[0]), item(2, &tickets[1])]);
        assert_eq!(values(q.next_batch()), [1, 2]);
        q.push([item(3, &tickets[0])]);
        q.stop();
        assert_eq!(values(q.next_batch()), [3], "not held back for the other client");
        assert!(q.next_batch().is_none());
    }
}
