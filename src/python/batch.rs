//! Batched routes from Python: one call `handler(self, requests)` answers a
//! whole batch. `requests` is a list of `pyrs.Request`; the handler returns
//! a list of the same length whose items are what a normal handler may
//! return (an `HTTPError` instance answers its request alone). A wrong
//! length, another return type or a raise answers every request of the
//! batch with 500, logged once with the batch size and every request's id
//! (a raised `HTTPError` answers every request with its status); what goes
//! wrong with one item is logged with its request's id. An `async def` handler is run to
//! completion on an event loop of the batch thread.

use super::request::PyRequest;
use super::{bridge, format_exception, response, PyTarget};
use crate::app::{Responder, Route};
use crate::http::request_id::RequestId;
use crate::http::Request;
use crate::observe::context;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use std::cell::RefCell;

thread_local! {
    /// The asyncio event loop of this batch thread, made for its first `async def` batch.
    static EVENT_LOOP: RefCell<Option<Py<PyAny>>> = const { RefCell::new(None) };
}

/// Calls the handler of `route` with `reqs` and writes one response per request into `res`.
pub fn handle(
    py: Python<'_>,
    route: &Route<PyTarget>,
    reqs: Vec<Request>,
    res: Vec<Responder<'_>>,
    scratch: &mut Vec<u8>,
) {
    let n = reqs.len();
    // What concerns one request's answer is logged with its own id (see `context::focus`).
    let ids: Vec<RequestId> = reqs.iter().map(|r| r.id).collect();
    let (method, label) = match &route.target {
        PyTarget::Handler { method, origin } => (method, origin.1.as_str()),
        PyTarget::Static(_) => {
            // The configuration refuses batched static routes.
            log::error!("route {}: a static route cannot be batched", route.pattern);
            return fail_all(res);
        }
    };
    let requests = match reqs.into_iter().map(|r| Bound::new(py, PyRequest::new(r))).collect::<PyResult<Vec<_>>>() {
        Ok(r) => r,
        Err(e) => {
            log::error!("route {} ({label}): cannot build the requests: {}", route.pattern, format_exception(py, &e));
            return fail_all(res);
        }
    };
    let outcome = PyList::new(py, &requests)
        .and_then(|list| method.bind(py).call1((list,)))
        .and_then(|value| complete(py, value));
    let value = match outcome {
        Ok(v) => v,
        Err(e) => {
            let is_http_error = bridge(py).is_ok_and(|b| e.is_instance(py, b.http_error.bind(py)));
            if is_http_error {
                for ((r, req), id) in res.into_iter().zip(&requests).zip(&ids) {
                    context::focus(id);
                    response::write(py, Err(e.clone_ref(py)), &route.pattern, label, route.id, Some(req), r, scratch);
                }
            } else if super::errors::timeout_class(py).is_some_and(|t| e.get_type(py).is(t)) {
                // pyrs.Timeout, raised into the batch past `timeout`.
                raised(py, route, label, n, &e, 503);
                for mut r in res {
                    r.text(503, "Handler timed out\n");
                }
            } else {
                raised(py, route, label, n, &e, 500);
                fail_all(res);
            }
            return;
        }
    };
    let items: Option<Vec<Bound<'_, PyAny>>> = if let Ok(l) = value.cast::<PyList>() {
        Some(l.iter().collect())
    } else if let Ok(t) = value.cast::<PyTuple>() {
        Some(t.iter().collect())
    } else {
        None
    };
    let items = match items {
        Some(items) if items.len() == n => items,
        other => {
            let got = match other {
                Some(items) => format!("a list of {} items", items.len()),
                None => format!("{} instead of a list", type_name(&value)),
            };
            let why = format!("returned {got} for a batch of {} (all answered 500)", requests_text(n));
            log::error!("route {} ({label}) {why}{}", route.pattern, context::rid_suffix());
            context::handler_error(&why);
            fail_all(res);
            return;
        }
    };
    let http_error = bridge(py).ok().map(|b| b.http_error.bind(py));
    for (((item, r), req), id) in items.into_iter().zip(res).zip(&requests).zip(&ids) {
        context::focus(id);
        // An HTTPError instance in the list answers its request as if raised.
        let outcome = match http_error {
            Some(cls) if item.is_instance(cls).unwrap_or(false) => Err(PyErr::from_value(item)),
            _ => Ok(item),
        };
        response::write(py, outcome, &route.pattern, label, route.id, Some(req), r, scratch);
    }
}

/// Logs a batch handler's exception with the batch size: the traceback in
/// full once per 10 s for the same route and exception type, counted always.
fn raised(py: Python<'_>, route: &Route<PyTarget>, label: &str, n: usize, e: &PyErr, status: u16) {
    let kind = e.get_type(py).qualname().map(|q| q.to_string()).unwrap_or_default();
    let tb = format_exception(py, e);
    if crate::logging::repeats::first(&format!("batch {} ({label}) raised {kind}", route.pattern)) {
        log::error!(
            "route {} ({label}) raised for a batch of {} (all answered {status}){}:\n{tb}",
            route.pattern,
            requests_text(n),
            context::rid_suffix()
        );
    }
    context::handler_error(&tb);
}

/// Runs a coroutine (an `async def` handler's result) to its end on this
/// thread's event loop; other values are returned as they are.
fn complete<'py>(py: Python<'py>, value: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    if value.cast::<PyList>().is_ok() {
        return Ok(value);
    }
    let asyncio = py.import("asyncio")?;
    if !asyncio.call_method1("iscoroutine", (&value,))?.is_truthy()? {
        return Ok(value);
    }
    let event_loop = EVENT_LOOP.with(|cell| -> PyResult<Py<PyAny>> {
        let mut slot = cell.borrow_mut();
        if let Some(l) = slot.as_ref() {
            return Ok(l.clone_ref(py));
        }
        let l = asyncio.call_method0("new_event_loop")?.unbind();
        *slot = Some(l.clone_ref(py));
        Ok(l)
    })?;
    event_loop.bind(py).call_method1("run_until_complete", (value,))
}

fn requests_text(n: usize) -> String {
    if n == 1 {
        "1 request".into()
    } else {
        format!("{n} requests")
    }
}

fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}

fn fail_all(res: Vec<Responder<'_>>) {
    for mut r in res {
        r.text(500, "Internal Server Error\n");
    }
}
