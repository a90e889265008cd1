//! A plain-Rust [`App`]: routes call Rust functions instead of Python.
//!
//! The same HTTP core (parser, router, event loops, encoder) serves these
//! routes, so a server built from a [`NativeApp`] measures what the core
//! costs without Python (the benchmarks' "no-Python ceiling"), and tests can
//! exercise the core without an interpreter.
//!
//! ```no_run
//! use pyrs::native::{self, NativeApp};
//! let app = NativeApp::new()
//!     .route("/hello", Some(&["GET"]), |_req, res| native::text(res, 200, "world"))
//!     .unwrap();
//! ```

use crate::app::{App, Responder, Route, Worker};
use crate::http::Request;
use crate::router::Router;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A route handler: reads the request, writes exactly one response.
pub type Handler = dyn Fn(&Request, &mut Responder<'_>) + Send + Sync;

/// A route table of Rust handlers.
pub struct NativeApp {
    router: Router<Route<Box<Handler>>>,
}

impl Default for NativeApp {
    fn default() -> Self {
        Self::new()
    }
}

impl NativeApp {
    pub fn new() -> Self {
        NativeApp { router: Router::new() }
    }

    /// Adds a route (same patterns and method rules as project.pyrs; `None`
    /// allows every method).
    pub fn route<F>(mut self, path: &str, methods: Option<&[&str]>, handler: F) -> Result<Self, String>
    where
        F: Fn(&Request, &mut Responder<'_>) + Send + Sync + 'static,
    {
        let methods = methods.map(|ms| ms.iter().map(|m| m.to_string()).collect());
        let target: Box<Handler> = Box::new(handler);
        self.router.add(path, methods, Route { id: 0, pattern: path.to_string(), target, batch: None })?;
        Ok(self)
    }

    /// The routes of `examples/echo`, plus `/json`: `/hello` (GET) -> `world`,
    /// `/echo` -> the request body, `/json` -> a 10-key JSON object, and
    /// `/*` -> 404 with a hint.
    pub fn echo_example() -> Self {
        NativeApp::new()
            .route("/hello", Some(&["GET"]), |_, res| text(res, 200, "world"))
            .and_then(|a| a.route("/echo", None, |req, res| bytes(res, 200, &req.body)))
            .and_then(|a| a.route("/json", None, |_, res| json(res, 200, JSON_10_KEYS.as_bytes())))
            .and_then(|a| {
                a.route("/*", None, |_, res| text(res, 404, "pyrs native example: try POST /echo or GET /hello\n"))
            })
            .expect("the example routes are valid")
    }
}

/// The JSON document `/json` answers with: the same 10 keys the Python
/// benchmark handlers return as a dict.
pub const JSON_10_KEYS: &str = r#"{"id":12345,"name":"pyrs","active":true,"score":98.5,"tags":["http","python","rust"],"owner":{"login":"bench","id":1},"count":10,"ratio":0.25,"note":null,"version":"1.0.0"}"#;

/// A `text/plain; charset=utf-8` response.
pub fn text(res: &mut Responder<'_>, status: u16, body: &str) {
    res.start(status).finish(b"text/plain; charset=utf-8", body.as_bytes());
}

/// An `application/octet-stream` response.
pub fn bytes(res: &mut Responder<'_>, status: u16, body: &[u8]) {
    res.start(status).finish(b"application/octet-stream", body);
}

/// An `application/json` response from already-encoded JSON.
pub fn json(res: &mut Responder<'_>, status: u16, body: &[u8]) {
    res.start(status).finish(b"application/json", body);
}

impl App for NativeApp {
    type Target = Box<Handler>;
    type Worker<'w> = NativeWorker;

    fn router(&self) -> &Router<Route<Box<Handler>>> {
        &self.router
    }

    fn run_worker(&self, _index: usize, body: &mut dyn FnMut(&mut NativeWorker)) {
        body(&mut NativeWorker);
    }
}

/// A pool thread of a [`NativeApp`]: there is no lock to release.
pub struct NativeWorker;

impl Worker for NativeWorker {
    type Target = Box<Handler>;

    fn unlocked<R: Send, F: FnOnce() -> R + Send>(&mut self, f: F) -> R {
        f()
    }

    fn handle(&mut self, route: &Route<Box<Handler>>, req: Request, mut res: Responder<'_>) {
        let start = res.out.mark();
        let called = catch_unwind(AssertUnwindSafe(|| (route.target)(&req, &mut res)));
        if called.is_err() || !res.out.changed_since(start) {
            // A panicking handler, or one that wrote nothing, answers 500.
            res.out.rollback(start);
            let why = if called.is_err() { "handler panicked" } else { "handler wrote no response" };
            log::error!("route {}: {why}{}", route.pattern, crate::observe::context::rid_suffix());
            crate::observe::context::handler_error(why);
            res.text(500, "Internal Server Error\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::encode::ResponseContext;
    use crate::http::Version;
    use crate::router::RouteMatch;
    use std::sync::atomic::AtomicBool;

    fn call(app: &NativeApp, method: &str, path: &str, body: &[u8]) -> String {
        let raw = format!("{method} {path} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n", body.len());
        let (head, _) = crate::http::head::parse(raw.as_bytes(), &Default::default()).unwrap().unwrap();
        let req = Request {
            head,
            body: body.to_vec(),
            peer: crate::http::Peer::Tcp("127.0.0.1:1".parse().unwrap()),
            params: vec![],
            id: Default::default(),
        };
        let RouteMatch::Found { target, .. } = app.router().route(method, path) else {
            return "no route".into();
        };
        let mut out = crate::http::output::Output::new();
        let ctx = ResponseContext { keep_alive: true, head_only: false, version: Version::Http11 };
        let stopping = AtomicBool::new(false);
        let closes = std::cell::Cell::new(false);
        let res = Responder::new(&mut out, b"Sun, 06 Nov 1994 08:49:37 GMT", ctx, &stopping, &closes);
        NativeWorker.handle(target, req, res);
        String::from_utf8(out.tail().clone()).unwrap()
    }

    #[test]
    fn example_routes() {
        let app = NativeApp::echo_example();
        assert!(call(&app, "GET", "/hello", b"").ends_with("Content-Length: 5\r\n\r\nworld"));
        assert!(call(&app, "POST", "/echo", b"a\0b").ends_with("\r\n\r\na\0b"));
        assert!(call(&app, "GET", "/json", b"").contains("application/json"));
        assert!(call(&app, "GET", "/nope", b"").starts_with("HTTP/1.1 404"));
        let v: serde_json::Value = serde_json::from_str(JSON_10_KEYS).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 10);
    }

    #[test]
    fn panics_and_silence_become_500() {
        let app = NativeApp::new()
            .route("/panic", None, |_, _| panic!("boom"))
            .and_then(|a| a.route("/silent", None, |_, _| {}))
            .unwrap();
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let r = call(&app, "GET", "/panic", b"");
        std::panic::set_hook(prev);
        assert!(r.starts_with("HTTP/1.1 500"), "{r}");
        assert!(call(&app, "GET", "/silent", b"").starts_with("HTTP/1.1 500"));
    }
}
