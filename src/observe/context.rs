//! The request a pool thread is running right now, for code that has no
//! other way to know it: log lines about the request (handler tracebacks,
//! Python `logging` records) carry its id, and a handler error is counted
//! and kept for the status page with that id.

use super::metrics::Region;
use crate::http::request_id::RequestId;
use std::cell::{Cell, RefCell};

struct Ctx {
    active: Cell<bool>,
    route: Cell<usize>,
    id: Cell<RequestId>,
    failed: Cell<bool>,
    region: RefCell<Option<Region>>,
}

thread_local! {
    static CTX: Ctx = Ctx {
        active: Cell::new(false),
        route: Cell::new(0),
        id: Cell::new(RequestId::default()),
        failed: Cell::new(false),
        region: RefCell::new(None),
    };
}

/// Where this thread records handler errors (set once per pool thread).
pub fn set_region(region: Region) {
    CTX.with(|c| *c.region.borrow_mut() = Some(region));
}

/// A handler for `route` starts on this thread for request `id`.
pub fn enter(route: usize, id: &RequestId) {
    CTX.with(|c| {
        c.active.set(true);
        c.route.set(route);
        c.id.set(*id);
        c.failed.set(false);
    });
}

/// The handler returned; true if it failed (see [`handler_error`]).
pub fn leave() -> bool {
    CTX.with(|c| {
        c.active.set(false);
        c.failed.replace(false)
    })
}

/// The id of the request this thread is handling, if any.
pub fn current_id() -> Option<RequestId> {
    CTX.with(|c| c.active.get().then(|| c.id.get()))
}

/// ` rid=ID` when a request is being handled, else empty: appended to log lines.
pub fn rid_suffix() -> String {
    match current_id() {
        Some(id) => format!(" rid={id}"),
        None => String::new(),
    }
}

/// The running handler raised or returned something unsendable; `text` is
/// the traceback or reason. Counted and kept (last 20) for the status page.
pub fn handler_error(text: &str) {
    CTX.with(|c| {
        if !c.active.get() {
            return;
        }
        c.failed.set(true);
        if let Some(region) = c.region.borrow().as_ref() {
            region.record_error(c.route.get(), c.id.get().as_str(), text);
        }
    });
}
