//! The seam between the HTTP core and an application. The core parses,
//! routes, frames and writes; an [`App`] turns one routed request into one
//! response. Python is one implementation (`crate::python`); a plain Rust
//! implementation serves the tests that need no interpreter and the
//! benchmarks' no-Python ceiling.

use crate::http::body::Body;
use crate::http::encode::{ResponseContext, ResponseWriter, SendBody, Sent};
use crate::http::output::Output;
use crate::http::Request;
use crate::router::Router;
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

/// A route target together with the pattern that selected it (for logs).
pub struct Route<T> {
    /// Index of the route in the project file (names it in watchdog logs).
    pub id: usize,
    pub pattern: String,
    pub target: T,
    /// Set when the route's requests are grouped into batches
    /// ([`Worker::handle_batch`], `server::batch`).
    pub batch: Option<BatchSettings>,
}

/// How a batched route groups its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// Most requests in one batch.
    pub max_size: usize,
    /// Longest a request waits for others to join its batch.
    pub max_wait: std::time::Duration,
    /// Batches of the route running at once.
    pub max_concurrent: usize,
}

/// An application served by the HTTP core.
pub trait App: Send + Sync + 'static {
    type Target: Send + Sync + 'static;
    type Worker<'w>: Worker<Target = Self::Target>
    where
        Self: 'w;

    fn router(&self) -> &Router<Route<Self::Target>>;

    /// Runs `body` as the whole life of one pool thread. Python attaches the
    /// thread to the interpreter here, once.
    fn run_worker(&self, index: usize, body: &mut dyn FnMut(&mut Self::Worker<'_>));

    /// Called once after every pool thread has stopped.
    fn shutdown(&self) {}

    /// Interrupts the handler running on the thread with pthread id
    /// `thread` (past `timeout`), if `still` is true once that is safe to
    /// decide (for Python: with the interpreter lock held). May block.
    fn interrupt(&self, _thread: u64, _still: &dyn Fn() -> bool) {}

    /// The server is idle after a burst: release what can be released
    /// (Python: objects dropped without the GIL). May block.
    fn idle(&self) {}
}

/// One pool thread's view of the application.
pub trait Worker {
    type Target;

    /// Runs `f` without holding any application lock (for Python: with the
    /// GIL released). The event loop does all socket I/O and waiting in here.
    fn unlocked<R: Send, F: FnOnce() -> R + Send>(&mut self, f: F) -> R;

    /// Answers one request. Must write exactly one complete response through
    /// `res` (a head, then its body inline or queued with
    /// [`Responder::send_body`]); must not panic on bad input.
    fn handle(&mut self, route: &Route<Self::Target>, req: Request, res: Responder<'_>);

    /// Answers a batch of requests to a batched route: exactly one complete
    /// response through each of `res`, in the order of `reqs` (the same
    /// length). By default each request is handled on its own.
    fn handle_batch(&mut self, route: &Route<Self::Target>, reqs: Vec<Request>, res: Vec<Responder<'_>>) {
        for (req, r) in reqs.into_iter().zip(res) {
            self.handle(route, req, r);
        }
    }
}

/// Where a handler writes its response: the connection's output queue plus
/// what the encoder needs to know about the request. Heads and small bodies
/// are encoded straight into the queue's byte buffer (no allocation);
/// larger bodies and streams are queued as segments behind them. A response
/// produced later fills a slot reserved with [`Output::reserve`], through a
/// `Responder` over the slot's own `Output` (see [`Output::fill`]).
pub struct Responder<'a> {
    pub out: &'a mut Output,
    pub date: &'a [u8],
    pub ctx: ResponseContext,
    /// Set when the server began shutting down, possibly while the handler
    /// ran: the response then says `Connection: close`.
    pub stopping: &'a AtomicBool,
    /// Set when the response said `Connection: close` (the handler asked
    /// for it): the connection closes once it is sent.
    pub closes: &'a Cell<bool>,
    /// Sent as `X-Request-Id` when not empty.
    pub request_id: &'a [u8],
    /// Receives the response's status and body size.
    pub sent: Option<&'a Cell<Sent>>,
}

impl<'a> Responder<'a> {
    pub fn new(
        out: &'a mut Output,
        date: &'a [u8],
        ctx: ResponseContext,
        stopping: &'a AtomicBool,
        closes: &'a Cell<bool>,
    ) -> Self {
        Responder { out, date, ctx, stopping, closes, request_id: b"", sent: None }
    }

    /// The response's status and body size are recorded in `sent`.
    pub fn recording(mut self, sent: &'a Cell<Sent>) -> Self {
        self.sent = Some(sent);
        self
    }

    /// The response carries `X-Request-Id: id`.
    pub fn with_request_id(mut self, id: &'a [u8]) -> Self {
        self.request_id = id;
        self
    }

    fn context(&self) -> ResponseContext {
        let keep_alive = self.ctx.keep_alive && !self.stopping.load(Ordering::Relaxed);
        ResponseContext { keep_alive, ..self.ctx }
    }

    /// Starts a response with `status` (100..=599).
    pub fn start(&mut self, status: u16) -> ResponseWriter<'_> {
        let ctx = self.context();
        let mut w = ResponseWriter::begin(self.out.tail(), status, self.date, ctx).track_close(self.closes);
        if !self.request_id.is_empty() {
            // Always valid: request ids are visible ASCII.
            let _ = w.header(b"X-Request-Id", self.request_id);
        }
        if let Some(sent) = self.sent {
            w = w.track_sent(sent);
        }
        w
    }

    /// Queues the body of a response whose head [`ResponseWriter::finish_head`]
    /// ended. A stream that will not be sent is closed at once.
    pub fn send_body(&mut self, how: SendBody, body: Body) {
        match (how, body) {
            (SendBody::No, Body::Stream(mut s)) => s.close(),
            (SendBody::No, Body::Shared(_) | Body::File { .. }) => {}
            (_, Body::Shared(b)) => self.out.push_shared(b),
            (_, Body::File { file, offset, len }) => self.out.push_file(file, offset, len),
            (how, Body::Stream(s)) => self.out.push_stream(s, how == SendBody::Chunked),
        }
    }

    /// A complete response with a body that is not copied (`Body::Shared`,
    /// `Content-Length` framed) or streamed (`Body::Stream`).
    pub fn body(&mut self, status: u16, content_type: &[u8], body: Body) {
        let how = self.start(status).finish_head(content_type, body.known_len());
        self.send_body(how, body);
    }

    /// A complete `text/plain` response.
    pub fn text(&mut self, status: u16, body: &str) {
        self.start(status).finish(b"text/plain; charset=utf-8", body.as_bytes());
    }
}
