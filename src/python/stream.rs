//! Streamed responses from Python: an iterator or generator of `str`/`bytes`
//! becomes a [`BodyStream`] the event loop pulls one item at a time (with
//! the GIL held only for that pull), and `pyrs.EventStream` formats
//! Server-Sent Events.

use super::{aio, format_exception, response};
use crate::app::StreamWaker;
use crate::http::body::{BodyStream, Pulled};
use crate::http::request_id::RequestId;
use crate::observe::context;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyIterator, PyModule, PyString};
use std::sync::{Arc, Mutex};

/// `pyrs.EventStream`, written in Python: it only formats text, and a
/// generator keeps the user's iterator's `close()` (its `finally`) tied to
/// the stream's.
const EVENT_STREAM_SOURCE: &str = include_str!("../../python/pyrs/_events.py");

/// Adds `EventStream` to the `pyrs` module.
pub fn install(py: Python<'_>, m: &Bound<'_, PyModule>) -> PyResult<()> {
    let globals = PyDict::new(py);
    globals.set_item("__name__", "pyrs")?;
    globals.set_item("__builtins__", py.import("builtins")?)?;
    globals.set_item("dumps", m.getattr("dumps")?)?;
    super::run_source(py, EVENT_STREAM_SOURCE, &globals)?;
    m.add("EventStream", globals.get_item("EventStream")?)?;
    Ok(())
}

/// Which handler's response a stream is, for its logs.
pub struct StreamOrigin {
    pub pattern: String,
    /// `module.Class.method`.
    pub handler: String,
    pub route: usize,
    /// The request it answers (None outside a request).
    pub rid: Option<RequestId>,
}

impl StreamOrigin {
    /// `route PATTERN (module.Class.method)`.
    fn label(&self) -> String {
        format!("route {} ({})", self.pattern, self.handler)
    }

    /// Logs an exception raised after the first item (the response is cut),
    /// with the request's id (pulls run outside its context). `pyrs.Timeout`
    /// (a pull past `timeout`) says so; its traceback is where it hung.
    fn raised_later(&self, py: Python<'_>, e: &PyErr) {
        let timed_out = super::errors::timeout_class(py).is_some_and(|t| e.get_type(py).is(t));
        let kind = if timed_out { "timed out" } else { "raised" };
        let rid = self.rid.map(|rid| format!(" rid={rid}")).unwrap_or_default();
        log::error!("{} {kind} while streaming (response cut){rid}:\n{}", self.label(), format_exception(py, e));
    }

    /// What answers an exception raised before the first item: the
    /// response's head was held back, so the client gets what a handler
    /// that raised gets (`HTTPError`'s status, else a logged 500 with the
    /// traceback and request id, kept for the status page). Called by the
    /// pool thread's pull, in the request's context, which the event loop
    /// leaves after the pull and, as after a handler call, counts the
    /// exception if one was recorded.
    fn raised_first(&self, py: Python<'_>, e: &PyErr) -> (u16, String) {
        if let Some(rid) = &self.rid {
            context::enter(self.route, rid);
        }
        response::error_response(py, &self.pattern, &self.handler, e)
    }
}

/// A Python iterator being sent as a response body.
pub struct PyStream {
    iter: Py<PyIterator>,
    origin: StreamOrigin,
    /// Nothing pulled yet (a failure now answers like a handler's).
    first: bool,
    /// The answer to a failure before the first item.
    failure: Option<(u16, String)>,
}

impl PyStream {
    pub fn new(iter: Bound<'_, PyIterator>, origin: StreamOrigin) -> Self {
        PyStream { iter: iter.unbind(), origin, first: true, failure: None }
    }
}

impl BodyStream for PyStream {
    fn pull(&mut self, out: &mut Vec<u8>) -> Pulled {
        // Debug builds: a test can make this pull panic (the stream fails, the thread serves on).
        crate::fault::hit(crate::fault::Fault::PanicInPull, &self.origin.pattern);
        // The event loop pulls in its locked phase: this thread holds the GIL.
        let first = std::mem::replace(&mut self.first, false);
        Python::attach(|py| {
            let mut it = self.iter.bind(py).clone();
            let item = match it.next() {
                None => return Pulled::End,
                Some(Ok(item)) => item,
                Some(Err(e)) if first => {
                    self.failure = Some(self.origin.raised_first(py, &e));
                    return Pulled::Failed;
                }
                Some(Err(e)) => {
                    self.origin.raised_later(py, &e);
                    return Pulled::Failed;
                }
            };
            match append_item(&item, out) {
                Ok(()) => Pulled::Item,
                Err(e) => {
                    log::error!("{} streamed a value pyrs cannot send (response cut): {e}", self.origin.label());
                    Pulled::Failed
                }
            }
        })
    }

    fn route(&self) -> Option<usize> {
        Some(self.origin.route)
    }

    fn failure(&mut self) -> Option<(u16, String)> {
        self.failure.take()
    }

    fn close(&mut self) {
        Python::attach(|py| {
            let it = self.iter.bind(py);
            let Ok(close) = it.getattr("close") else { return };
            if let Err(e) = close.call0() {
                log::error!("{}: closing the stream raised:\n{}", self.origin.label(), format_exception(py, &e));
            }
        })
    }
}

/// Appends one streamed item: `str` as UTF-8, `bytes`-like as is.
fn append_item(item: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> Result<(), String> {
    if let Ok(s) = item.cast::<PyString>() {
        out.extend_from_slice(s.to_str().map_err(|e| e.to_string())?.as_bytes());
    } else if let Ok(b) = item.cast::<PyBytes>() {
        out.extend_from_slice(b.as_bytes());
    } else if let Ok(b) = item.cast::<PyByteArray>() {
        out.extend_from_slice(&b.to_vec());
    } else if let Ok(view) = item.call_method0("tobytes") {
        let b = view.cast::<PyBytes>().map_err(|e| e.to_string())?;
        out.extend_from_slice(b.as_bytes());
    } else {
        let ty = item.get_type().name().map(|n| n.to_string()).unwrap_or_default();
        return Err(format!("items must be str or bytes, got {ty}"));
    }
    Ok(())
}

/// What the event loop's thread has received from an async generator.
#[derive(Default)]
struct AsyncItems {
    /// The next item, framed by nobody yet.
    item: Option<Vec<u8>>,
    /// A `__anext__` is running on the asyncio loop.
    waiting: bool,
    /// Exhausted (false) or failed (true).
    end: Option<bool>,
    /// An item has arrived (a failure before one answers like a handler's).
    yielded: bool,
    /// The exception raised before the first item, answered by the pool
    /// thread's next pull (not here on the asyncio thread, which has no
    /// request context or metrics region).
    raised_first: Option<PyErr>,
    /// The answer to a failure before the first item.
    failure: Option<(u16, String)>,
}

/// What one `__anext__` gave, before it is published in [`AsyncItems`].
enum Got {
    Item(Vec<u8>),
    End,
    /// An item that is neither `str` nor bytes (logged).
    Unsendable,
    /// Cancelled, or raised after an item (logged).
    Failed,
    /// Raised before any item: answered by the pool thread's next pull.
    RaisedFirst(PyErr),
}

/// An async generator (or other async iterator) sent as a response body:
/// each item is awaited on the process's asyncio loop, and the pool thread
/// is woken ([`StreamWaker`]) when it arrives; one item at a time, only
/// when pulled, so back-pressure works as for generators.
pub struct PyAsyncStream {
    /// The `AsyncBody` helper driving the iterator (`aio`).
    body: Py<PyAny>,
    items: Arc<Mutex<AsyncItems>>,
    waker: StreamWaker,
    origin: Arc<StreamOrigin>,
}

impl PyAsyncStream {
    pub fn new(py: Python<'_>, aiter: &Bound<'_, PyAny>, waker: StreamWaker, origin: StreamOrigin) -> PyResult<Self> {
        let body = aio::async_body(py, aiter)?;
        Ok(PyAsyncStream { body, items: Arc::default(), waker, origin: Arc::new(origin) })
    }
}

fn lock_items(items: &Mutex<AsyncItems>) -> std::sync::MutexGuard<'_, AsyncItems> {
    items.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl BodyStream for PyAsyncStream {
    fn pull(&mut self, out: &mut Vec<u8>) -> Pulled {
        let mut items = lock_items(&self.items);
        if let Some(item) = items.item.take() {
            out.extend_from_slice(&item);
            return Pulled::Item;
        }
        if let Some(e) = items.raised_first.take() {
            // The event loop pulls in its locked phase: this thread holds the
            // GIL (the lock is not held across Python code).
            drop(items);
            let answer = Python::attach(|py| self.origin.raised_first(py, &e));
            lock_items(&self.items).failure = Some(answer);
            return Pulled::Failed;
        }
        match items.end {
            Some(false) => return Pulled::End,
            Some(true) => return Pulled::Failed,
            None if items.waiting => return Pulled::Pending,
            None => items.waiting = true,
        }
        // Each pull is bounded by `timeout` like a sync generator's (and a
        // coroutine handler): the first, which the held head waits for, is
        // then answered 503; a later one cuts the response. Either way the
        // client's connection is freed, even if it only sent a FIN.
        let timeout = aio::handler_timeout();
        drop(items);
        let (shared, waker, origin) = (self.items.clone(), self.waker.clone(), self.origin.clone());
        // The event loop pulls in its locked phase: this thread holds the GIL.
        Python::attach(|py| {
            aio::next_item(
                py,
                self.body.bind(py),
                Box::new(move |py, outcome| {
                    // The Python work (encoding the item, formatting a
                    // traceback) is done before the lock is taken: the pool
                    // thread takes that lock with the GIL held, so it is
                    // never held across Python code. Only this callback (one
                    // `__anext__` at a time) writes `yielded`.
                    let yielded = lock_items(&shared).yielded;
                    let got = match outcome.and_then(|v| v.extract::<(Bound<'_, PyAny>, bool)>()) {
                        Ok((_, true)) => Got::End,
                        Ok((item, false)) => {
                            let mut buf = Vec::new();
                            match append_item(&item, &mut buf) {
                                Ok(()) => Got::Item(buf),
                                Err(e) => {
                                    let label = origin.label();
                                    log::error!("{label} streamed a value pyrs cannot send (response cut): {e}");
                                    Got::Unsendable
                                }
                            }
                        }
                        // Closed (its client went away): not an error.
                        Err(e) if e.is_instance_of::<pyo3::exceptions::asyncio::CancelledError>(py) => Got::Failed,
                        Err(e) if !yielded => Got::RaisedFirst(e),
                        Err(e) => {
                            origin.raised_later(py, &e);
                            Got::Failed
                        }
                    };
                    let mut items = lock_items(&shared);
                    items.waiting = false;
                    match got {
                        Got::Item(buf) => {
                            items.item = Some(buf);
                            items.yielded = true;
                        }
                        Got::End => items.end = Some(false),
                        Got::Unsendable => {
                            items.end = Some(true);
                            items.yielded = true;
                        }
                        Got::Failed => items.end = Some(true),
                        Got::RaisedFirst(e) => {
                            items.raised_first = Some(e);
                            items.end = Some(true);
                        }
                    }
                    drop(items);
                    waker.wake();
                }),
                timeout,
            )
        });
        Pulled::Pending
    }

    fn close(&mut self) {
        Python::attach(|py| aio::close_body(py, self.body.bind(py)));
    }

    fn failure(&mut self) -> Option<(u16, String)> {
        lock_items(&self.items).failure.take()
    }

    fn route(&self) -> Option<usize> {
        Some(self.origin.route)
    }

    fn pinned(&self) -> bool {
        true
    }
}
