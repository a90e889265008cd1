//! Streamed responses from Python: an iterator or generator of `str`/`bytes`
//! becomes a [`BodyStream`] the event loop pulls one item at a time (with
//! the GIL held only for that pull), and `pyrs.EventStream` formats
//! Server-Sent Events.

use super::format_exception;
use crate::http::body::{BodyStream, Pulled};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyIterator, PyModule, PyString};

/// `pyrs.EventStream`, written in Python: it only formats text, and a
/// generator keeps the user's iterator's `close()` (its `finally`) tied to
/// the stream's.
const EVENT_STREAM_SOURCE: &std::ffi::CStr = c"
import json as _json

def _sse_lines(field, value):
    text = value if isinstance(value, str) else _json.dumps(value, separators=(',', ':'))
    lines = text.replace('\\r\\n', '\\n').replace('\\r', '\\n').split('\\n')
    return ''.join(f'{field}: {line}\\n' for line in lines)

def _sse_event(item):
    if item is None:
        return ':\\n\\n'
    if isinstance(item, (bytes, bytearray)):
        item = bytes(item).decode('utf-8')
    if not isinstance(item, dict):
        return _sse_lines('data', item) + '\\n'
    unknown = set(item) - {'data', 'event', 'id', 'retry', 'comment'}
    if unknown:
        raise ValueError(f'unknown event field(s) {sorted(unknown)}: use data, event, id, retry, comment')
    out = []
    if item.get('comment') is not None:
        out.append(_sse_lines('', item['comment']))
    for field in ('event', 'id'):
        value = item.get(field)
        if value is not None:
            value = str(value)
            if '\\n' in value or '\\r' in value or '\\0' in value:
                raise ValueError(f'event {field} must not contain CR, LF or NUL')
            out.append(f'{field}: {value}\\n')
    if item.get('retry') is not None:
        out.append(f\"retry: {int(item['retry'])}\\n\")
    if item.get('data') is not None:
        out.append(_sse_lines('data', item['data']))
    return ''.join(out) + '\\n'

class EventStream:
    \"\"\"Server-Sent Events from an iterable, sent as text/event-stream with no buffering.

    Each item is a str or bytes (the event's data; newlines make several data: lines), any other
    JSON-serialisable value (sent as JSON data), a dict with any of 'data', 'event', 'id', 'retry'
    and 'comment', or None (a keep-alive comment line). retry= sends a reconnection delay first.
    \"\"\"

    def __init__(self, events, retry=None):
        self.events = events
        self.retry = retry

    def __iter__(self):
        events = iter(self.events)
        try:
            if self.retry is not None:
                yield f'retry: {int(self.retry)}\\n\\n'
            for item in events:
                yield _sse_event(item)
        finally:
            close = getattr(events, 'close', None)
            if close is not None:
                close()

    def __repr__(self):
        return f'<pyrs.EventStream {self.events!r}>'
";

/// Adds `EventStream` to the `pyrs` module.
pub fn install(py: Python<'_>, m: &Bound<'_, PyModule>) -> PyResult<()> {
    let globals = PyDict::new(py);
    globals.set_item("__name__", "pyrs")?;
    globals.set_item("__builtins__", py.import("builtins")?)?;
    py.run(EVENT_STREAM_SOURCE, Some(&globals), None)?;
    m.add("EventStream", globals.get_item("EventStream")?)?;
    Ok(())
}

/// A Python iterator being sent as a response body.
pub struct PyStream {
    iter: Py<PyIterator>,
    /// `route (module.Class.method)`, for logs.
    label: String,
    route: usize,
}

impl PyStream {
    pub fn new(iter: Bound<'_, PyIterator>, label: String, route: usize) -> Self {
        PyStream { iter: iter.unbind(), label, route }
    }
}

impl BodyStream for PyStream {
    fn pull(&mut self, out: &mut Vec<u8>) -> Pulled {
        // The event loop pulls in its locked phase: this thread holds the GIL.
        Python::attach(|py| {
            let mut it = self.iter.bind(py).clone();
            let item = match it.next() {
                None => return Pulled::End,
                Some(Ok(item)) => item,
                Some(Err(e)) => {
                    log::error!("{} raised while streaming (response cut):\n{}", self.label, format_exception(py, &e));
                    return Pulled::Failed;
                }
            };
            match append_item(&item, out) {
                Ok(()) => Pulled::Item,
                Err(e) => {
                    log::error!("{} streamed a value pyrs cannot send (response cut): {e}", self.label);
                    Pulled::Failed
                }
            }
        })
    }

    fn route(&self) -> Option<usize> {
        Some(self.route)
    }

    fn close(&mut self) {
        Python::attach(|py| {
            let it = self.iter.bind(py);
            let Ok(close) = it.getattr("close") else { return };
            if let Err(e) = close.call0() {
                log::error!("{}: closing the stream raised:\n{}", self.label, format_exception(py, &e));
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
