//! The seam between the HTTP core and an application. The core parses,
//! routes, frames and writes; an [`App`] turns one routed request into one
//! response. Python is one implementation (`crate::python`); a plain Rust
//! implementation serves the tests that need no interpreter and the
//! benchmarks' no-Python ceiling.

use crate::http::encode::{ResponseContext, ResponseWriter};
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
}

/// One pool thread's view of the application.
pub trait Worker {
    type Target;

    /// Runs `f` without holding any application lock (for Python: with the
    /// GIL released). The event loop does all socket I/O and waiting in here.
    fn unlocked<R: Send, F: FnOnce() -> R + Send>(&mut self, f: F) -> R;

    /// Answers one request. Must write exactly one complete response through
    /// `res`; must not panic on bad input.
    fn handle(&mut self, route: &Route<Self::Target>, req: Request, res: Responder<'_>);
}

/// Where a handler writes its response: the connection's output buffer plus
/// what the encoder needs to know about the request.
pub struct Responder<'a> {
    pub out: &'a mut Vec<u8>,
    pub date: &'a [u8],
    pub ctx: ResponseContext,
    /// Set when the server began shutting down, possibly while the handler
    /// ran: the response then says `Connection: close`.
    pub stopping: &'a AtomicBool,
    /// Set when the response said `Connection: close` (the handler asked
    /// for it): the connection closes once it is sent.
    pub closes: &'a Cell<bool>,
}

impl<'a> Responder<'a> {
    pub fn new(
        out: &'a mut Vec<u8>,
        date: &'a [u8],
        ctx: ResponseContext,
        stopping: &'a AtomicBool,
        closes: &'a Cell<bool>,
    ) -> Self {
        Responder { out, date, ctx, stopping, closes }
    }

    fn context(&self) -> ResponseContext {
        let keep_alive = self.ctx.keep_alive && !self.stopping.load(Ordering::Relaxed);
        ResponseContext { keep_alive, ..self.ctx }
    }

    /// Starts a response with `status` (100..=599).
    pub fn start(&mut self, status: u16) -> ResponseWriter<'_> {
        let ctx = self.context();
        ResponseWriter::begin(self.out, status, self.date, ctx).track_close(self.closes)
    }

    /// A complete `text/plain` response.
    pub fn text(&mut self, status: u16, body: &str) {
        let ctx = self.context();
        crate::http::encode::text_response(self.out, status, &[], body, self.date, ctx);
    }
}
