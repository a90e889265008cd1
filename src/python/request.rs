//! `pyrs.Request` and `pyrs.Headers`: the request as handler code sees it.
//! Rust-backed; each field becomes a Python object only when first read.

use super::upload::PyUploadedFile;
use crate::http::form::{self, FormError};
use crate::http::Request as HttpRequest;
use bytes::Bytes;
use pyo3::exceptions::{PyKeyError, PyOSError, PyUnicodeDecodeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use pyo3::IntoPyObjectExt;

#[pyclass(name = "Request", module = "pyrs", frozen)]
pub struct PyRequest {
    inner: HttpRequest,
    /// The body, moved out of `inner` (shared with the form parser, no copy).
    raw_body: Bytes,
    body: PyOnceLock<Py<PyBytes>>,
    headers: PyOnceLock<Py<PyHeaders>>,
    query: PyOnceLock<Multi>,
    params: PyOnceLock<Py<PyDict>>,
    form: PyOnceLock<FormDicts>,
    cookies: PyOnceLock<Py<PyDict>>,
}

/// A repeated-name mapping as two dicts: the first value of each name, and
/// the list of every value.
struct Multi {
    first: Py<PyDict>,
    all: Py<PyDict>,
}

impl Multi {
    fn build<'py, V: IntoPyObject<'py>>(
        py: Python<'py>,
        pairs: impl IntoIterator<Item = (String, V)>,
    ) -> PyResult<Multi> {
        let first = PyDict::new(py);
        let all = PyDict::new(py);
        for (k, v) in pairs {
            let v = v.into_bound_py_any(py)?;
            match all.get_item(&k)? {
                Some(list) => list.cast::<PyList>()?.append(v)?,
                None => {
                    first.set_item(&k, &v)?;
                    all.set_item(k, PyList::new(py, [v])?)?;
                }
            }
        }
        Ok(Multi { first: first.unbind(), all: all.unbind() })
    }
}

struct FormDicts {
    fields: Multi,
    files: Multi,
}

impl PyRequest {
    /// The request head (for responses that depend on it, such as files).
    pub fn head(&self) -> &crate::http::RequestHead {
        &self.inner.head
    }

    pub fn new(mut inner: HttpRequest) -> Self {
        let raw_body = Bytes::from(std::mem::take(&mut inner.body));
        PyRequest {
            inner,
            raw_body,
            body: PyOnceLock::new(),
            headers: PyOnceLock::new(),
            query: PyOnceLock::new(),
            params: PyOnceLock::new(),
            form: PyOnceLock::new(),
            cookies: PyOnceLock::new(),
        }
    }

    fn query_dicts(&self, py: Python<'_>) -> PyResult<&Multi> {
        self.query.get_or_try_init(py, || Multi::build(py, form::urlencoded_pairs(self.inner.head.query().as_bytes())))
    }

    /// Parses the body as a form once (with the GIL released: large parts go to disk).
    fn form_dicts(&self, py: Python<'_>) -> PyResult<&FormDicts> {
        self.form.get_or_try_init(py, || {
            let content_type = self.inner.head.header("content-type").and_then(|v| std::str::from_utf8(v).ok());
            let body = self.raw_body.clone();
            let parsed = py.detach(|| form::parse(content_type, body)).map_err(|e| match e {
                FormError::Spool(_) => PyOSError::new_err(e.to_string()),
                _ => super::http_error(py, e.status(), &e.to_string()),
            })?;
            let files =
                parsed.files.into_iter().map(|u| Ok((u.field.clone(), Bound::new(py, PyUploadedFile::new(u))?)));
            let files = files.collect::<PyResult<Vec<_>>>()?;
            Ok(FormDicts { fields: Multi::build(py, parsed.fields)?, files: Multi::build(py, files)? })
        })
    }

    /// `Host` as sent (empty when absent, as HTTP/1.0 allows).
    fn host_str(&self) -> String {
        self.inner.head.header("host").map(|h| String::from_utf8_lossy(h).into_owned()).unwrap_or_default()
    }
}

/// Latin-1 decoding: every byte maps to one code point, nothing is lost.
fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
    match std::str::from_utf8(bytes) {
        Ok(s) if bytes.is_ascii() => PyString::new(py, s),
        _ => {
            let s: String = bytes.iter().map(|&b| b as char).collect();
            PyString::new(py, &s)
        }
    }
}

#[pymethods]
impl PyRequest {
    #[getter]
    fn method(&self) -> &str {
        self.inner.head.method()
    }

    /// The path without the query string, as sent (not percent-decoded).
    #[getter]
    fn path(&self) -> &str {
        self.inner.head.path()
    }

    /// The request id: the client's `X-Request-Id` when valid, else one pyrs made.
    #[getter]
    fn id(&self) -> &str {
        self.inner.id.as_str()
    }

    #[getter]
    fn query_string(&self) -> &str {
        self.inner.head.query()
    }

    /// Query parameters, decoded; for a repeated name, the first value.
    #[getter]
    fn query<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        Ok(self.query_dicts(py)?.first.bind(py).clone())
    }

    /// Query parameters, decoded: every value of each name, as a list.
    #[getter]
    fn query_all<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        Ok(self.query_dicts(py)?.all.bind(py).clone())
    }

    /// Fields of an urlencoded or multipart form body (first value of each
    /// name); empty for other content types. A malformed body raises HTTPError(400).
    #[getter]
    fn form<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        Ok(self.form_dicts(py)?.fields.first.bind(py).clone())
    }

    /// Every value of each form field, as a list.
    #[getter]
    fn form_all<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        Ok(self.form_dicts(py)?.fields.all.bind(py).clone())
    }

    /// Uploaded files of a multipart body: field name -> `pyrs.UploadedFile` (the first).
    #[getter]
    fn files<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        Ok(self.form_dicts(py)?.files.first.bind(py).clone())
    }

    /// Every uploaded file of each field, as a list.
    #[getter]
    fn files_all<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        Ok(self.form_dicts(py)?.files.all.bind(py).clone())
    }

    /// Cookies of the `Cookie` header: name -> value (the first of a repeated name).
    #[getter]
    fn cookies<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = self.cookies.get_or_try_init(py, || -> PyResult<Py<PyDict>> {
            let d = PyDict::new(py);
            let values = self.inner.head.headers().filter(|(n, _)| n.eq_ignore_ascii_case(b"cookie")).map(|(_, v)| v);
            for (k, v) in crate::http::cookie::parse(values) {
                if !d.contains(&k)? {
                    d.set_item(k, v)?;
                }
            }
            Ok(d.unbind())
        })?;
        Ok(d.bind(py).clone())
    }

    /// `"http"` or `"https"` (from a trusted proxy's X-Forwarded-Proto / Forwarded).
    #[getter]
    fn scheme(&self) -> &'static str {
        self.inner.scheme().as_str()
    }

    /// The `Host` header as sent (with its port, if any); empty when absent.
    #[getter]
    fn host(&self) -> String {
        self.host_str()
    }

    /// The full URL: scheme, host, path and query as sent.
    #[getter]
    fn url(&self) -> String {
        let head = &self.inner.head;
        let mut url = format!("{}://{}{}", self.inner.scheme().as_str(), self.host_str(), head.path());
        if !head.query().is_empty() {
            url.push('?');
            url.push_str(head.query());
        }
        url
    }

    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyHeaders>> {
        let h = self.headers.get_or_try_init(py, || -> PyResult<Py<PyHeaders>> {
            let items: Vec<(Py<PyString>, Py<PyString>)> =
                self.inner.head.headers().map(|(n, v)| (latin1(py, n).unbind(), latin1(py, v).unbind())).collect();
            Py::new(py, PyHeaders { items })
        })?;
        Ok(h.bind(py).clone())
    }

    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        self.body.get_or_init(py, || PyBytes::new(py, &self.raw_body).unbind()).bind(py).clone()
    }

    /// The body decoded as UTF-8 (UnicodeDecodeError if it is not).
    #[getter]
    fn text<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyString>> {
        match std::str::from_utf8(&self.raw_body) {
            Ok(s) => Ok(PyString::new(py, s)),
            Err(e) => Err(match PyUnicodeDecodeError::new_utf8(py, &self.raw_body, e) {
                Ok(exc) => PyErr::from_value(exc.into_any()),
                Err(err) => err,
            }),
        }
    }

    /// The body parsed as JSON; invalid JSON raises HTTPError(400).
    fn json<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let loads = super::bridge(py)?.json_loads.bind(py);
        loads
            .call1((self.body(py),))
            .map_err(|e| super::http_error(py, 400, &format!("invalid JSON body: {}", e.value(py))))
    }

    /// Path parameters of a `/users/{id}` route, percent-decoded.
    #[getter]
    fn params<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = self.params.get_or_try_init(py, || -> PyResult<Py<PyDict>> {
            let d = PyDict::new(py);
            for (k, v) in &self.inner.params {
                d.set_item(k, v)?;
            }
            Ok(d.unbind())
        })?;
        Ok(d.bind(py).clone())
    }

    /// The client's IP address: the peer's, or the one a trusted proxy
    /// gives (`forwarded_allow_ips`); `"unix"` for a Unix socket peer.
    #[getter]
    fn remote_addr(&self) -> String {
        self.inner.client().addr
    }

    /// The client's port (0 for a Unix socket peer, or when a proxy gave no port).
    #[getter]
    fn remote_port(&self) -> u16 {
        self.inner.client().port
    }

    #[getter]
    fn http_version(&self) -> &'static str {
        self.inner.head.version.as_str()
    }

    fn __repr__(&self) -> String {
        format!("<pyrs.Request {} {}>", self.inner.head.method(), self.inner.head.target())
    }
}

/// Request headers: a read-only, case-insensitive mapping. Values are `str`
/// (bytes decoded as Latin-1); for a repeated name, `[name]` gives the first
/// and `get_all(name)` gives every value.
#[pyclass(name = "Headers", module = "pyrs", frozen, mapping)]
pub struct PyHeaders {
    items: Vec<(Py<PyString>, Py<PyString>)>,
}

impl PyHeaders {
    fn find<'a>(&'a self, py: Python<'a>, name: &'a str) -> impl Iterator<Item = &'a Py<PyString>> + 'a {
        self.items
            .iter()
            .filter(move |(n, _)| n.bind(py).to_str().is_ok_and(|n| n.eq_ignore_ascii_case(name)))
            .map(|(_, v)| v)
    }
}

#[pymethods]
impl PyHeaders {
    fn __getitem__(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyString>> {
        self.find(py, name).next().map(|v| v.clone_ref(py)).ok_or_else(|| PyKeyError::new_err(name.to_string()))
    }

    #[pyo3(signature = (name, default=None))]
    fn get(&self, py: Python<'_>, name: &str, default: Option<Py<PyAny>>) -> Option<Py<PyAny>> {
        match self.find(py, name).next() {
            Some(v) => Some(v.clone_ref(py).into_any()),
            None => default,
        }
    }

    fn get_all(&self, py: Python<'_>, name: &str) -> Vec<Py<PyString>> {
        self.find(py, name).map(|v| v.clone_ref(py)).collect()
    }

    fn __contains__(&self, py: Python<'_>, name: &str) -> bool {
        self.find(py, name).next().is_some()
    }

    fn __len__(&self) -> usize {
        self.items.len()
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        PyList::new(py, self.keys(py))?.call_method0("__iter__")
    }

    fn keys(&self, py: Python<'_>) -> Vec<Py<PyString>> {
        self.items.iter().map(|(n, _)| n.clone_ref(py)).collect()
    }

    fn values(&self, py: Python<'_>) -> Vec<Py<PyString>> {
        self.items.iter().map(|(_, v)| v.clone_ref(py)).collect()
    }

    fn items<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        self.items.iter().map(|(n, v)| PyTuple::new(py, [n.clone_ref(py), v.clone_ref(py)])).collect()
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let parts: Vec<String> = self
            .items
            .iter()
            .map(|(n, v)| format!("{:?}: {:?}", n.bind(py).to_string_lossy(), v.bind(py).to_string_lossy()))
            .collect();
        format!("Headers({{{}}})", parts.join(", "))
    }
}
