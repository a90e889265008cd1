//! Turning what a handler returned (or raised) into an HTTP response.
//!
//! | returned | status | Content-Type |
//! |---|---|---|
//! | `str` | 200 | `text/plain; charset=utf-8` |
//! | `bytes`, `bytearray`, `memoryview` | 200 | `application/octet-stream` |
//! | `dict`, `list` | 200 | `application/json` |
//! | `None` | 204 | none |
//! | `(body, status)`, `(body, status, headers)` | status | from body |
//! | `pyrs.Response` | its status | its content_type, or from body |
//! | raised `pyrs.HTTPError(status, message)` | status | `text/plain` |
//!
//! Anything else, or any other exception, is a 500 with the traceback logged.

use super::{bridge, format_exception};
use crate::app::Responder;
use crate::http::body::{Body, SharedBytes};
use crate::http::encode::latin1_header;
use crate::observe::context;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyString, PyTuple};

/// `pyrs.Response(body, status=200, headers=None, content_type=None)`.
#[pyclass(name = "Response", module = "pyrs")]
pub struct PyResponse {
    #[pyo3(get, set)]
    pub body: Py<PyAny>,
    #[pyo3(get, set)]
    pub status: u16,
    #[pyo3(get, set)]
    pub headers: Option<Py<PyAny>>,
    #[pyo3(get, set)]
    pub content_type: Option<String>,
    /// `Set-Cookie` values from `set_cookie`/`delete_cookie`, in call order.
    pub cookies: Vec<String>,
}

#[pymethods]
impl PyResponse {
    #[new]
    #[pyo3(signature = (body=None, status=200, headers=None, content_type=None))]
    fn new(
        py: Python<'_>,
        body: Option<Py<PyAny>>,
        status: u16,
        headers: Option<Py<PyAny>>,
        content_type: Option<String>,
    ) -> Self {
        PyResponse { body: body.unwrap_or_else(|| py.None()), status, headers, content_type, cookies: Vec::new() }
    }

    /// Adds a `Set-Cookie` header. `expires` is a Unix time or a datetime
    /// (naive: UTC); `samesite` is "Lax", "Strict", "None" or None.
    #[pyo3(signature = (name, value="", *, max_age=None, expires=None, path=Some("/".to_string()), domain=None, secure=false, httponly=false, samesite=Some("Lax".to_string())))]
    #[allow(clippy::too_many_arguments)]
    fn set_cookie(
        &mut self,
        name: &str,
        value: &str,
        max_age: Option<i64>,
        expires: Option<&Bound<'_, PyAny>>,
        path: Option<String>,
        domain: Option<String>,
        secure: bool,
        httponly: bool,
        samesite: Option<String>,
    ) -> PyResult<()> {
        let expires = match expires {
            None => None,
            Some(e) => Some(unix_time(e)?),
        };
        let spec = super::cookies::CookieSpec {
            name,
            value,
            max_age,
            expires,
            path: path.as_deref(),
            domain: domain.as_deref(),
            secure,
            httponly,
            samesite: samesite.as_deref(),
        };
        self.cookies.push(super::cookies::render(&spec).map_err(PyValueError::new_err)?);
        Ok(())
    }

    /// Adds a `Set-Cookie` header that removes the cookie (same `path` and
    /// `domain` as it was set with).
    #[pyo3(signature = (name, *, path=Some("/".to_string()), domain=None))]
    fn delete_cookie(&mut self, name: &str, path: Option<String>, domain: Option<String>) -> PyResult<()> {
        let spec = super::cookies::CookieSpec {
            name,
            value: "",
            max_age: Some(0),
            expires: Some(0),
            path: path.as_deref(),
            domain: domain.as_deref(),
            secure: false,
            httponly: false,
            samesite: None,
        };
        self.cookies.push(super::cookies::render(&spec).map_err(PyValueError::new_err)?);
        Ok(())
    }

    fn __repr__(&self) -> String {
        format!("<pyrs.Response status={}>", self.status)
    }
}

/// Seconds since the epoch of an int, a float or a datetime (naive: UTC).
fn unix_time(e: &Bound<'_, PyAny>) -> PyResult<i64> {
    if let Ok(dt) = e.cast::<pyo3::types::PyDateTime>() {
        let dt = if dt.getattr("tzinfo")?.is_none() {
            let utc = e.py().import("datetime")?.getattr("timezone")?.getattr("utc")?;
            let kwargs = PyDict::new(e.py());
            kwargs.set_item("tzinfo", utc)?;
            dt.call_method("replace", (), Some(&kwargs))?
        } else {
            dt.clone().into_any()
        };
        return Ok(dt.call_method0("timestamp")?.extract::<f64>()?.floor() as i64);
    }
    match e.extract::<f64>() {
        Ok(t) if t.is_finite() => Ok(t.floor() as i64),
        _ => Err(PyTypeError::new_err("expires must be a Unix time (int or float) or a datetime")),
    }
}

/// Why a return value could not be sent.
pub enum Unsendable {
    Python(PyErr),
    Header(crate::http::encode::InvalidHeader),
}

impl From<PyErr> for Unsendable {
    fn from(e: PyErr) -> Self {
        Unsendable::Python(e)
    }
}

/// Writes the response for a handler's outcome; never fails: anything that
/// cannot be sent becomes a logged 500.
#[allow(clippy::too_many_arguments)]
pub fn write(
    py: Python<'_>,
    outcome: PyResult<Bound<'_, PyAny>>,
    pattern: &str,
    label: &str,
    route_id: usize,
    request: Option<&Bound<'_, super::request::PyRequest>>,
    mut res: Responder<'_>,
    scratch: &mut Vec<u8>,
) {
    let value = match outcome {
        Ok(v) => v,
        Err(e) => {
            let (status, body) = error_response(py, pattern, label, &e);
            res.text(status, &body);
            return;
        }
    };
    let start = res.out.mark();
    let origin = Origin { pattern, label, request, route_id };
    match encode_value(py, &value, &mut res, scratch, origin) {
        Ok(()) => {}
        Err(why) => {
            res.out.rollback(start);
            let why = match why {
                Unsendable::Python(e) => format!("returned a value pyrs cannot send: {}", format_exception(py, &e)),
                Unsendable::Header(h) => h.to_string(),
            };
            log::error!("route {} ({label}){}: {why}", pattern, context::rid_suffix());
            context::handler_error(&why);
            res.text(500, "Internal Server Error\n");
        }
    }
}

/// The status and `text/plain` body that answer a raised exception:
/// `HTTPError`'s own, else 503 for `pyrs.Timeout` or 500, logged with the
/// traceback (see `errors::handler_raised`).
pub fn error_response(py: Python<'_>, pattern: &str, label: &str, e: &PyErr) -> (u16, String) {
    if let Some(parts) = http_error_parts(py, e) {
        return parts;
    }
    match super::errors::handler_raised(py, pattern, label, e) {
        503 => (503, "Handler timed out\n".to_string()),
        _ => (500, "Internal Server Error\n".to_string()),
    }
}

/// `HTTPError(status, message)` raised by the handler: (status, body).
fn http_error_parts(py: Python<'_>, e: &PyErr) -> Option<(u16, String)> {
    let b = bridge(py).ok()?;
    let v = e.value(py);
    if !v.is_instance(b.http_error.bind(py)).ok()? {
        return None;
    }
    let status = v.getattr("status").ok()?.extract::<u16>().ok().filter(|s| (200..=599).contains(s))?;
    let message = v
        .getattr("message")
        .ok()
        .filter(|m| !m.is_none())
        .and_then(|m| m.str().ok())
        .map(|m| m.to_string_lossy().into_owned());
    let mut body = message.unwrap_or_else(|| crate::http::encode::reason(status).to_string());
    body.push('\n');
    Some((status, body))
}

/// Which route and request a response answers (named in the logs of a
/// stream; file responses read the request's conditional headers).
#[derive(Clone, Copy)]
struct Origin<'a, 'py> {
    pattern: &'a str,
    label: &'a str,
    request: Option<&'a Bound<'py, super::request::PyRequest>>,
    route_id: usize,
}

fn encode_value(
    py: Python<'_>,
    value: &Bound<'_, PyAny>,
    res: &mut Responder<'_>,
    scratch: &mut Vec<u8>,
    origin: Origin<'_, '_>,
) -> Result<(), Unsendable> {
    if let Ok(t) = value.cast::<PyTuple>() {
        let (body, status, headers) = match t.len() {
            2 => (t.get_item(0)?, t.get_item(1)?, None),
            3 => (t.get_item(0)?, t.get_item(1)?, Some(t.get_item(2)?)),
            n => {
                return Err(PyTypeError::new_err(format!(
                    "a returned tuple must be (body, status) or (body, status, headers), got {n} items"
                ))
                .into())
            }
        };
        let status = status_of(&status)?;
        if body.is_none() {
            return send(res, status, headers.as_ref(), None, b"", b"");
        }
        return encode_body(py, &body, status, headers.as_ref(), None, res, scratch, origin);
    }
    if let Ok(r) = value.cast::<PyResponse>() {
        let r = r.borrow();
        if !(100..=599).contains(&r.status) || r.status < 200 {
            return Err(
                PyValueError::new_err(format!("status {} is not a final HTTP status (200-599)", r.status)).into()
            );
        }
        let headers = match (r.headers.as_ref(), r.cookies.is_empty()) {
            (h, true) => h.map(|h| h.bind(py).clone()),
            (h, false) => Some(with_cookies(py, h.map(|h| h.bind(py)), &r.cookies)?),
        };
        let body = r.body.bind(py);
        let ct = match r.content_type.as_deref() {
            Some(ct) => Some(latin1_header("Content-Type", ct).map_err(Unsendable::Header)?),
            None => None,
        };
        let ct = ct.as_deref();
        if body.is_none() {
            return send(res, r.status, headers.as_ref(), ct, ct.unwrap_or(b""), b"");
        }
        return encode_body(py, body, r.status, headers.as_ref(), ct, res, scratch, origin);
    }
    if let Ok(f) = value.cast::<super::file::PyFileResponse>() {
        return match super::file::send(py, &f.borrow(), origin.request, res) {
            Ok(()) => Ok(()),
            Err(super::file::FileError::Other(e)) => Err(e),
            Err(super::file::FileError::Missing(e)) => {
                let status = match e.kind() {
                    std::io::ErrorKind::NotFound => 404,
                    std::io::ErrorKind::PermissionDenied => 403,
                    _ => 500,
                };
                log::warn!("route {} ({}): FileResponse {:?}: {e}", origin.pattern, origin.label, f.borrow().path);
                res.text(status, &format!("{}\n", crate::http::encode::reason(status)));
                Ok(())
            }
        };
    }
    if value.is_none() {
        return send(res, 204, None, None, b"", b"");
    }
    encode_body(py, value, 200, None, None, res, scratch, origin)
}

/// The handler's headers (a dict, a list of pairs or None) followed by one
/// `Set-Cookie` pair per cookie, as a list of pairs.
fn with_cookies<'py>(
    py: Python<'py>,
    headers: Option<&Bound<'py, PyAny>>,
    cookies: &[String],
) -> PyResult<Bound<'py, PyAny>> {
    let list = PyList::empty(py);
    match headers {
        Some(h) if h.cast::<PyDict>().is_ok() => {
            for item in h.cast::<PyDict>()?.items() {
                list.append(item)?;
            }
        }
        Some(h) if !h.is_none() => {
            for item in h.try_iter()? {
                list.append(item?)?;
            }
        }
        _ => {}
    }
    for c in cookies {
        list.append(("Set-Cookie", c.as_str()))?;
    }
    Ok(list.into_any())
}

fn status_of(status: &Bound<'_, PyAny>) -> PyResult<u16> {
    match status.extract::<u16>() {
        Ok(s) if (200..=599).contains(&s) => Ok(s),
        _ => Err(PyValueError::new_err(format!("status {} is not a final HTTP status (200-599)", status.repr()?))),
    }
}

#[allow(clippy::too_many_arguments)]
fn encode_body(
    py: Python<'_>,
    body: &Bound<'_, PyAny>,
    status: u16,
    headers: Option<&Bound<'_, PyAny>>,
    content_type: Option<&[u8]>,
    res: &mut Responder<'_>,
    scratch: &mut Vec<u8>,
    origin: Origin<'_, '_>,
) -> Result<(), Unsendable> {
    let ct = content_type;
    if let Ok(s) = body.cast::<PyString>() {
        return send(res, status, headers, ct, b"text/plain; charset=utf-8", s.to_str()?.as_bytes());
    }
    if let Ok(b) = body.cast::<PyBytes>() {
        if b.as_bytes().len() >= SHARED_MIN {
            let shared = Body::Shared(Box::new(PyOwnedBytes::new(b)));
            return send_body(res, status, headers, ct, b"application/octet-stream", shared);
        }
        return send(res, status, headers, ct, b"application/octet-stream", b.as_bytes());
    }
    if let Ok(b) = body.cast::<PyByteArray>() {
        let bytes = b.to_vec();
        return send(res, status, headers, ct, b"application/octet-stream", &bytes);
    }
    if body.cast::<PyDict>().is_ok() || body.cast::<PyList>().is_ok() {
        scratch.clear();
        super::json::dumps(body, scratch)?;
        let result = send(res, status, headers, ct, b"application/json", scratch);
        if scratch.capacity() > 1 << 20 {
            *scratch = Vec::new();
        }
        return result;
    }
    if body.get_type().name()?.to_str()? == "memoryview" {
        let bytes: Vec<u8> = body.call_method0("tobytes")?.cast::<PyBytes>().map_err(PyErr::from)?.as_bytes().to_vec();
        return send(res, status, headers, ct, b"application/octet-stream", &bytes);
    }
    let b = bridge(py)?;
    let is_events = body.is_instance(b.event_stream.bind(py))?;
    let who = || super::stream::StreamOrigin {
        pattern: origin.pattern.to_owned(),
        handler: origin.label.to_owned(),
        route: origin.route_id,
        rid: context::current_id(),
    };
    // Async generators and other async iterators stream too, each item
    // awaited on the event loop; iterators, generators and other iterables
    // (of str or bytes) are pulled on the pool thread.
    let aiter = if is_events {
        let events = body.getattr("events")?;
        if events.hasattr("__aiter__")? {
            Some(body.call_method0("_aevents")?)
        } else {
            None
        }
    } else if body.hasattr("__aiter__")? {
        Some(body.call_method0("__aiter__")?)
    } else {
        None
    };
    let stream = match aiter {
        Some(aiter) => {
            let Some(waker) = res.stream_waker() else {
                return Err(PyTypeError::new_err("an async iterator cannot be streamed here").into());
            };
            Some(Body::Stream(Box::new(super::stream::PyAsyncStream::new(py, &aiter, waker, who())?)))
        }
        None => body.try_iter().ok().map(|iter| Body::Stream(Box::new(super::stream::PyStream::new(iter, who())))),
    };
    if let Some(stream) = stream {
        if is_events {
            // Proxies and browsers must not cache or buffer an event stream; a
            // handler that passes its own headers decides for itself.
            let extra: &[(&[u8], &[u8])] =
                if headers.is_none() { &[(b"Cache-Control", b"no-cache"), (b"X-Accel-Buffering", b"no")] } else { &[] };
            return send_payload(res, status, headers, ct, b"text/event-stream", extra, Payload::Queued(stream));
        }
        return send_body(res, status, headers, ct, b"text/plain; charset=utf-8", stream);
    }
    let ty = body.get_type().name()?;
    Err(PyTypeError::new_err(format!(
        "unsupported return type {ty} (return str, bytes, dict, list, None, an iterator, a tuple or pyrs.Response)"
    ))
    .into())
}

/// `bytes` bodies from this size on are written from the Python object
/// itself instead of being copied into the connection's buffer.
const SHARED_MIN: usize = 64 * 1024;

/// A Python `bytes` object, kept alive until its bytes are written. `bytes`
/// are immutable, so the buffer stays valid and unchanged while the
/// reference is held; it is read without the GIL.
struct PyOwnedBytes {
    _owner: Py<PyBytes>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the pointer is into an immutable object that `_owner` keeps alive;
// dropping a `Py` without the GIL defers the decref to pyo3's pool.
unsafe impl Send for PyOwnedBytes {}

impl PyOwnedBytes {
    fn new(b: &Bound<'_, PyBytes>) -> Self {
        let bytes = b.as_bytes();
        PyOwnedBytes { _owner: b.clone().unbind(), ptr: bytes.as_ptr(), len: bytes.len() }
    }
}

impl SharedBytes for PyOwnedBytes {
    fn bytes(&self) -> &[u8] {
        // SAFETY: see the Send impl: valid, immutable, alive as long as self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// A body to send: copied into the output buffer, or queued after the head.
enum Payload<'a> {
    Inline(&'a [u8]),
    Queued(Body),
}

fn send(
    res: &mut Responder<'_>,
    status: u16,
    headers: Option<&Bound<'_, PyAny>>,
    content_type: Option<&[u8]>,
    default_type: &[u8],
    body: &[u8],
) -> Result<(), Unsendable> {
    send_payload(res, status, headers, content_type, default_type, &[], Payload::Inline(body))
}

fn send_body(
    res: &mut Responder<'_>,
    status: u16,
    headers: Option<&Bound<'_, PyAny>>,
    content_type: Option<&[u8]>,
    default_type: &[u8],
    body: Body,
) -> Result<(), Unsendable> {
    send_payload(res, status, headers, content_type, default_type, &[], Payload::Queued(body))
}

fn send_payload(
    res: &mut Responder<'_>,
    status: u16,
    headers: Option<&Bound<'_, PyAny>>,
    content_type: Option<&[u8]>,
    default_type: &[u8],
    extra: &[(&[u8], &[u8])],
    body: Payload<'_>,
) -> Result<(), Unsendable> {
    let head_at = res.out.tail().len();
    let mut w = res.start(status);
    for (name, value) in extra {
        // pyrs's own headers: always valid.
        let _ = w.header(name, value);
    }
    if let Some(h) = headers {
        if let Err(e) = write_headers(&mut w, h) {
            w.abort();
            return Err(e);
        }
    }
    if let Some(ct) = content_type {
        if let Err(e) = w.header(b"Content-Type", ct) {
            w.abort();
            return Err(Unsendable::Header(e));
        }
    }
    match body {
        Payload::Inline(bytes) => w.finish(default_type, bytes),
        Payload::Queued(Body::Stream(stream)) => {
            // A generator that raises before its first item answers 500.
            let how = w.finish_head(default_type, None);
            res.send_stream_first(how, stream, head_at);
        }
        Payload::Queued(body) => {
            let how = w.finish_head(default_type, body.known_len());
            res.send_body(how, body);
        }
    }
    Ok(())
}

/// Headers as a dict or a list of (name, value) pairs; names and values str (or int values).
pub fn write_headers(w: &mut crate::http::encode::ResponseWriter<'_>, h: &Bound<'_, PyAny>) -> Result<(), Unsendable> {
    if h.is_none() {
        return Ok(());
    }
    let mut one = |name: Bound<'_, PyAny>, value: Bound<'_, PyAny>| -> Result<(), Unsendable> {
        let name =
            name.cast::<PyString>().map_err(|_| PyTypeError::new_err("header names must be str"))?.to_str()?.to_owned();
        let value = match value.cast::<PyString>() {
            Ok(s) => s.to_str()?.to_owned(),
            Err(_) if value.cast::<pyo3::types::PyInt>().is_ok() => value.str()?.to_str()?.to_owned(),
            Err(_) => return Err(PyTypeError::new_err(format!("header {name:?}: values must be str or int")).into()),
        };
        let value = latin1_header(&name, &value).map_err(Unsendable::Header)?;
        w.header(name.as_bytes(), &value).map_err(Unsendable::Header)
    };
    if let Ok(d) = h.cast::<PyDict>() {
        for (k, v) in d.iter() {
            one(k, v)?;
        }
        return Ok(());
    }
    for item in
        h.try_iter().map_err(|_| PyTypeError::new_err("headers must be a dict or a list of (name, value) pairs"))?
    {
        let item = item?;
        let pair = item
            .cast::<PyTuple>()
            .map_err(|_| PyTypeError::new_err("headers must be a dict or a list of (name, value) pairs"))?;
        if pair.len() != 2 {
            return Err(PyTypeError::new_err("each header must be a (name, value) pair").into());
        }
        one(pair.get_item(0)?, pair.get_item(1)?)?;
    }
    Ok(())
}
