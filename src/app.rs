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
use std::sync::Arc;

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
    /// Where a response finished later is sent back (None: it cannot be
    /// deferred, e.g. a response that is itself filling a slot).
    pub later: Option<Later<'a>>,
}

/// Builds the response of one request later, on the thread that owns its
/// connection, with the application locked (for Python: the GIL held).
pub type Fill = Box<dyn for<'r> FnOnce(Responder<'r>) + Send>;

/// What [`CompletionSink::complete`] carries back to the event loop that
/// owns a connection.
pub enum Completed {
    /// A response finished by someone else (an awaited coroutine, a batch)
    /// for the slot it reserved.
    Fill { token: usize, serial: u64, slot: u64, ctx: ResponseContext, fill: Fill },
    /// A body stream of the connection that had no item has one now.
    Wake { token: usize, serial: u64 },
}

/// The owning event loop's inbox of finished responses (thread-safe; wakes
/// the loop).
pub trait CompletionSink: Send + Sync {
    fn complete(&self, done: Completed);
}

/// Where a [`Responder`] can defer its response to, and where its streams
/// wake their loop.
#[derive(Clone, Copy)]
pub struct Later<'a> {
    pub sink: &'a Arc<dyn CompletionSink>,
    pub token: usize,
    pub serial: u64,
    /// False for a response that is itself filling a slot: it cannot defer.
    pub can_defer: bool,
}

/// Wakes the event loop of a connection whose stream had no item
/// ([`crate::http::body::Pulled::Pending`]) and has one now. Any thread.
#[derive(Clone)]
pub struct StreamWaker {
    sink: Arc<dyn CompletionSink>,
    token: usize,
    serial: u64,
}

impl StreamWaker {
    pub fn wake(&self) {
        self.sink.complete(Completed::Wake { token: self.token, serial: self.serial });
    }
}

/// The reserved place of a response in its connection's output. Complete it
/// from any thread; dropped without completing, it answers 500 (a
/// connection is never left waiting for a response nobody will produce).
pub struct Deferred {
    sink: Arc<dyn CompletionSink>,
    token: usize,
    serial: u64,
    slot: u64,
    ctx: ResponseContext,
    done: bool,
}

impl Deferred {
    /// The reserved slot (see [`Output::on_cancel`]).
    pub fn slot(&self) -> u64 {
        self.slot
    }

    /// Sends `fill` to the owning event loop, which runs it in request order.
    pub fn complete(mut self, fill: Fill) {
        self.done = true;
        self.send(fill);
    }

    fn send(&self, fill: Fill) {
        let done = Completed::Fill { token: self.token, serial: self.serial, slot: self.slot, ctx: self.ctx, fill };
        self.sink.complete(done);
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        if !self.done {
            self.send(Box::new(|mut res: Responder<'_>| res.text(500, "Internal Server Error\n")));
        }
    }
}

impl<'a> Responder<'a> {
    pub fn new(
        out: &'a mut Output,
        date: &'a [u8],
        ctx: ResponseContext,
        stopping: &'a AtomicBool,
        closes: &'a Cell<bool>,
    ) -> Self {
        Responder { out, date, ctx, stopping, closes, request_id: b"", sent: None, later: None }
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

    /// Lets the response be deferred to `later` (see [`Responder::defer`]).
    pub fn with_later(mut self, later: Later<'a>) -> Self {
        self.later = Some(later);
        self
    }

    /// Reserves this response's place in the connection's output, to be
    /// completed later through the returned [`Deferred`]; None when this
    /// responder cannot defer (then answer now). Requests after this one
    /// are still answered, but their responses wait behind this one.
    pub fn defer(&mut self) -> Option<Deferred> {
        let later = self.later.filter(|l| l.can_defer)?;
        let slot = self.out.reserve();
        Some(Deferred {
            sink: later.sink.clone(),
            token: later.token,
            serial: later.serial,
            slot,
            ctx: self.ctx,
            done: false,
        })
    }

    /// What a stream that can answer [`crate::http::body::Pulled::Pending`]
    /// wakes its loop with; None when nothing can wake it.
    pub fn stream_waker(&self) -> Option<StreamWaker> {
        self.later.map(|l| StreamWaker { sink: l.sink.clone(), token: l.token, serial: l.serial })
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

    /// Queues a stream body like [`Responder::send_body`], but with the
    /// response's head (written from `head_at`, the output's tail length
    /// before [`Responder::start`]) held back until the stream's first item:
    /// a stream that fails before producing one is answered with a short
    /// text response instead, the status its [`crate::http::body::BodyStream::failure`]
    /// says, else 500 (see [`Output::push_stream_first`]).
    pub fn send_stream_first(
        &mut self,
        how: SendBody,
        mut stream: Box<dyn crate::http::body::BodyStream>,
        head_at: usize,
    ) {
        if how == SendBody::No {
            stream.close();
            return;
        }
        // A close-delimited body (HTTP/1.0) closes the connection either way.
        let ctx = ResponseContext { keep_alive: self.context().keep_alive && how == SendBody::Chunked, ..self.ctx };
        let (date, rid) = (self.date.to_vec(), self.request_id.to_vec());
        let fallback = Box::new(move |status: u16, body: &str| {
            let mut out = Vec::new();
            let id: [(&[u8], &[u8]); 1] = [(b"X-Request-Id", &rid)];
            let extra: &[(&[u8], &[u8])] = if rid.is_empty() { &[] } else { &id };
            crate::http::encode::text_response(&mut out, status, extra, body, &date, ctx);
            out
        });
        self.out.push_stream_first(stream, how == SendBody::Chunked, head_at, fallback);
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
