//! What pyrs logs when a handler raises: the route, the handler and the
//! Python traceback, rate-limited per (route, exception type, innermost
//! frame) so that a handler failing on every request logs its traceback once
//! per interval plus a count (`logging::repeats`), and the repeats cost no
//! traceback formatting. `pyrs.Timeout` (raised by pyrs into a handler past
//! `timeout`) is answered 503 and logged with the stack where it hung.

use super::format_exception;
use crate::observe::context;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use std::sync::atomic::{AtomicU64, Ordering};

static TIMEOUT: PyOnceLock<Py<PyType>> = PyOnceLock::new();
/// Interrupts sent so far (pool threads compare it after each handler).
static INTERRUPTS: AtomicU64 = AtomicU64::new(0);

/// Counts an interrupt about to be sent.
pub fn note_interrupt() {
    INTERRUPTS.fetch_add(1, Ordering::AcqRel);
}

/// After a handler returned: if an interrupt was sent since `seen`, one may
/// still be pending for this thread (the handler ended before reaching the
/// next bytecode); clear it so it cannot hit the next request.
pub fn clear_late_interrupt(seen: &mut u64) {
    let now = INTERRUPTS.load(Ordering::Acquire);
    if now != *seen {
        *seen = now;
        // SAFETY: the calling pool thread holds the interpreter lock; a null
        // exception clears this thread's pending asynchronous exception.
        unsafe { pyo3::ffi::PyThreadState_SetAsyncExc(libc::pthread_self() as std::ffi::c_long, std::ptr::null_mut()) };
    }
}

/// Remembers the `pyrs.Timeout` class (set when the module is created).
pub fn set_timeout_class(py: Python<'_>, class: Py<PyType>) {
    let _ = TIMEOUT.set(py, class);
}

/// `pyrs.Timeout`, once the module exists.
pub fn timeout_class(py: Python<'_>) -> Option<&Bound<'_, PyType>> {
    TIMEOUT.get(py).map(|c| c.bind(py))
}

/// Logs an exception a handler raised; returns the status to answer (503
/// for `pyrs.Timeout`, 500 otherwise).
pub fn handler_raised(py: Python<'_>, pattern: &str, label: &str, e: &PyErr) -> u16 {
    let timed_out = timeout_class(py).is_some_and(|t| e.get_type(py).is(t));
    let (kind, status) = if timed_out { ("timed out", 503) } else { ("raised", 500) };
    let key = format!("route {pattern} ({label}) {kind}: {}", where_raised(py, e));
    // Counted, and kept for the status page with the request id, every time.
    if crate::logging::repeats::first(&key) {
        let tb = format_exception(py, e);
        log::error!("route {pattern} ({label}) {kind}{}:\n{tb}", context::rid_suffix());
        context::handler_error(&tb);
    } else {
        context::handler_error(&format!("{key} (repeated: the traceback was logged before)"));
    }
    status
}

/// `Type at file:line` of the innermost frame: what makes two tracebacks the
/// same for rate limiting, found without formatting the traceback.
fn where_raised(py: Python<'_>, e: &PyErr) -> String {
    let kind = e.get_type(py).qualname().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
    let mut tb = e.traceback(py).map(|t| t.into_any());
    let mut place = String::from("?");
    while let Some(t) = tb {
        let file = t.getattr("tb_frame").and_then(|f| f.getattr("f_code")).and_then(|c| c.getattr("co_filename"));
        let line = t.getattr("tb_lineno");
        if let (Ok(file), Ok(line)) = (file, line) {
            place = format!("{file}:{line}");
        }
        tb = t.getattr("tb_next").ok().filter(|n| !n.is_none());
    }
    format!("{kind} at {place}")
}
