//! The request a pool thread is running right now, for code that has no
//! other way to know it: log lines about the request (handler tracebacks,
//! Python `logging` records) carry its id, and a handler error is counted
//! and kept for the status page with that id. A batch thread runs many
//! requests in one call: its log lines name every request of the batch,
//! or the one whose answer is being written ([`focus`]).

use super::metrics::Region;
use crate::http::request_id::RequestId;
use std::cell::{Cell, RefCell};

struct Ctx {
    active: Cell<bool>,
    route: Cell<usize>,
    id: Cell<RequestId>,
    failed: Cell<bool>,
    region: RefCell<Option<Region>>,
    /// The ids of the batch being handled (empty outside a batch call).
    batch: RefCell<Vec<RequestId>>,
    /// Within a batch, `id` alone is meant (its answer is being written).
    focused: Cell<bool>,
}

thread_local! {
    static CTX: Ctx = Ctx {
        active: Cell::new(false),
        route: Cell::new(0),
        id: Cell::new(RequestId::default()),
        failed: Cell::new(false),
        region: RefCell::new(None),
        batch: RefCell::new(Vec::new()),
        focused: Cell::new(false),
    };
}

/// Most request ids a log line names for a batch (the rest are counted).
const MAX_NAMED: usize = 64;
/// Most request ids a status page record names (its text is bounded).
const MAX_RECORDED: usize = 8;

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
        c.focused.set(false);
        if let Ok(mut b) = c.batch.try_borrow_mut() {
            b.clear();
        }
    });
}

/// A batch call for `route` starts on this thread for the requests `ids`
/// (in order): until [`focus`], log lines name them all.
pub fn enter_batch(route: usize, ids: impl IntoIterator<Item = RequestId>) {
    CTX.with(|c| {
        let mut batch = c.batch.borrow_mut();
        batch.clear();
        batch.extend(ids);
        c.active.set(true);
        c.route.set(route);
        c.id.set(batch.first().copied().unwrap_or_default());
        c.failed.set(false);
        c.focused.set(false);
    });
}

/// Within a batch call: what follows concerns request `id` alone (its
/// answer is being written).
pub fn focus(id: &RequestId) {
    CTX.with(|c| {
        c.id.set(*id);
        c.focused.set(true);
    });
}

/// The ids a log line names, as `rid=ID` each separated by `sep`, or None
/// outside a request. A batch names each of its requests (up to `max`,
/// then how many more).
fn named(sep: &str, max: usize) -> Option<String> {
    CTX.with(|c| {
        if !c.active.get() {
            return None;
        }
        let batch = c.batch.borrow();
        if c.focused.get() || batch.is_empty() {
            return Some(format!("rid={}", c.id.get()));
        }
        let mut text = String::new();
        for (i, id) in batch.iter().take(max).enumerate() {
            if i > 0 {
                text.push_str(sep);
            }
            text.push_str("rid=");
            text.push_str(id.as_str());
        }
        if batch.len() > max {
            text.push_str(&format!("{sep}(+{} more)", batch.len() - max));
        }
        Some(text)
    })
}

/// The handler returned; true if it failed (see [`handler_error`]).
pub fn leave() -> bool {
    CTX.with(|c| {
        c.active.set(false);
        c.focused.set(false);
        c.failed.replace(false)
    })
}

/// The id of the request this thread is handling, if any.
pub fn current_id() -> Option<RequestId> {
    CTX.with(|c| c.active.get().then(|| c.id.get()))
}

/// ` rid=ID` when a request is being handled (` rid=ID1 rid=ID2 ...` for
/// a batch), else empty: appended to log lines.
pub fn rid_suffix() -> String {
    match named(" ", MAX_NAMED) {
        Some(ids) => format!(" {ids}"),
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
            if c.focused.get() || c.batch.borrow().is_empty() {
                region.record_error(c.route.get(), c.id.get().as_str(), text);
            } else {
                // A whole batch failed: its ids head the text (the record's id is the first).
                let ids = named(" ", MAX_RECORDED).unwrap_or_default();
                region.record_error(c.route.get(), c.id.get().as_str(), &format!("the batch of {ids}: {text}"));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> RequestId {
        RequestId::from_str_lossy(s)
    }

    #[test]
    fn a_batch_names_each_of_its_requests_until_one_is_in_focus() {
        assert_eq!(rid_suffix(), "", "outside a request");
        enter(3, &id("single"));
        assert_eq!(rid_suffix(), " rid=single");
        assert!(!leave());
        enter_batch(3, [id("a"), id("b"), id("c")]);
        assert_eq!(rid_suffix(), " rid=a rid=b rid=c");
        assert_eq!(current_id().map(|i| i.to_string()), Some("a".to_string()));
        focus(&id("b"));
        assert_eq!(rid_suffix(), " rid=b");
        assert_eq!(current_id().map(|i| i.to_string()), Some("b".to_string()));
        leave();
        // The next single request is not taken for part of the batch.
        enter(3, &id("next"));
        assert_eq!(rid_suffix(), " rid=next");
        leave();
        enter_batch(1, (0..MAX_NAMED + 2).map(|i| id(&format!("r{i}"))));
        let suffix = rid_suffix();
        assert!(suffix.starts_with(" rid=r0 rid=r1 ") && suffix.ends_with(" rid=r63 (+2 more)"), "{suffix}");
        leave();
    }
}
