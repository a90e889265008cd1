//! `pyrs.Request` and `pyrs.Headers`: the request as handler code sees it.
//! Rust-backed; each field becomes a Python object only when first read.

use crate::http::Request as HttpRequest;
use crate::router::percent_decode;
use pyo3::exceptions::{PyKeyError, PyUnicodeDecodeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

#[pyclass(name = "Request", module = "pyrs", frozen)]
pub struct PyRequest {
    inner: HttpRequest,
    body: PyOnceLock<Py<PyBytes>>,
    headers: PyOnceLock<Py<PyHeaders>>,
    query: PyOnceLock<Py<PyDict>>,
    params: PyOnceLock<Py<PyDict>>,
}

impl PyRequest {
    pub fn new(inner: HttpRequest) -> Self {
        PyRequest {
            inner,
            body: PyOnceLock::new(),
            headers: PyOnceLock::new(),
            query: PyOnceLock::new(),
            params: PyOnceLock::new(),
        }
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

/// Decodes one `application/x-www-form-urlencoded` component.
fn form_decode(s: &str) -> String {
    if s.contains('+') {
        percent_decode(&s.replace('+', " "))
    } else {
        percent_decode(s)
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

    #[getter]
    fn query_string(&self) -> &str {
        self.inner.head.query()
    }

    /// Query parameters, decoded; for a repeated name, the first value.
    #[getter]
    fn query<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = self.query.get_or_try_init(py, || -> PyResult<Py<PyDict>> {
            let d = PyDict::new(py);
            for pair in self.inner.head.query().split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let k = form_decode(k);
                if !d.contains(&k)? {
                    d.set_item(k, form_decode(v))?;
                }
            }
            Ok(d.unbind())
        })?;
        Ok(d.bind(py).clone())
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
        self.body.get_or_init(py, || PyBytes::new(py, &self.inner.body).unbind()).bind(py).clone()
    }

    /// The body decoded as UTF-8 (UnicodeDecodeError if it is not).
    #[getter]
    fn text<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyString>> {
        match std::str::from_utf8(&self.inner.body) {
            Ok(s) => Ok(PyString::new(py, s)),
            Err(e) => Err(match PyUnicodeDecodeError::new_utf8(py, &self.inner.body, e) {
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

    /// The client's IP address.
    #[getter]
    fn remote_addr(&self) -> String {
        self.inner.remote_addr.ip().to_string()
    }

    #[getter]
    fn remote_port(&self) -> u16 {
        self.inner.remote_addr.port()
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
