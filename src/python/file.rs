//! `pyrs.FileResponse`: a file sent from the event loop with sendfile(2),
//! with validators, conditional GET and single ranges (see `crate::files`).

use super::request::PyRequest;
use crate::app::Responder;
use crate::files::{self, Presentation};
use crate::http::file::content_type_for;
use pyo3::prelude::*;
use std::io;
use std::path::PathBuf;

/// `pyrs.FileResponse(path, content_type=None, filename=None, headers=None, status=200)`.
#[pyclass(name = "FileResponse", module = "pyrs")]
pub struct PyFileResponse {
    #[pyo3(get)]
    pub path: PathBuf,
    #[pyo3(get, set)]
    pub content_type: Option<String>,
    /// Sent as an attachment with this name (`Content-Disposition`).
    #[pyo3(get, set)]
    pub filename: Option<String>,
    #[pyo3(get, set)]
    pub headers: Option<Py<PyAny>>,
    #[pyo3(get, set)]
    pub status: u16,
}

#[pymethods]
impl PyFileResponse {
    #[new]
    #[pyo3(signature = (path, content_type=None, filename=None, headers=None, status=200))]
    fn new(
        path: PathBuf,
        content_type: Option<String>,
        filename: Option<String>,
        headers: Option<Py<PyAny>>,
        status: u16,
    ) -> PyResult<Self> {
        check_status(status)?;
        Ok(PyFileResponse { path, content_type, filename, headers, status })
    }

    fn __repr__(&self) -> String {
        format!("<pyrs.FileResponse {:?}>", self.path)
    }
}

fn check_status(status: u16) -> PyResult<()> {
    if matches!(status, 206 | 416) {
        // Either needs a Content-Range, which pyrs writes from the request.
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "status {status} is answered by pyrs from the request's Range header; give the status of the whole file"
        )));
    }
    if (200..=599).contains(&status) {
        return Ok(());
    }
    Err(pyo3::exceptions::PyValueError::new_err(format!("status {status} is not a final HTTP status (200-599)")))
}

/// Why a file response could not be sent as asked.
pub enum FileError {
    /// Answered with this status and logged at this level instead.
    Missing(io::Error),
    Other(super::response::Unsendable),
}

impl From<crate::http::encode::InvalidHeader> for FileError {
    fn from(e: crate::http::encode::InvalidHeader) -> Self {
        FileError::Other(super::response::Unsendable::Header(e))
    }
}

impl From<super::response::Unsendable> for FileError {
    fn from(e: super::response::Unsendable) -> Self {
        FileError::Other(e)
    }
}

/// Opens the file (GIL released) and answers with it.
pub fn send(
    py: Python<'_>,
    f: &PyFileResponse,
    request: Option<&Bound<'_, PyRequest>>,
    res: &mut Responder<'_>,
) -> Result<(), FileError> {
    // `status` is settable after construction: checked again here.
    check_status(f.status).map_err(|e| FileError::Other(e.into()))?;
    let path = f.path.clone();
    let opened = py.detach(move || files::open(&path)).map_err(FileError::Missing)?;
    let borrowed = request.map(|r| r.borrow());
    let cond = borrowed.as_ref().map(|r| files::conditions(r.head())).unwrap_or_default();
    let name = f.filename.as_deref().or_else(|| f.path.file_name().and_then(|n| n.to_str())).unwrap_or("");
    let content_type = f.content_type.as_deref().unwrap_or_else(|| content_type_for(name));
    let content_type = crate::http::encode::latin1_header("Content-Type", content_type)?;
    let how = Presentation { status: f.status, content_type: &content_type, filename: f.filename.as_deref() };
    let headers = f.headers.as_ref().map(|h| h.bind(py).clone());
    files::respond(res, opened, &cond, &how, |w| match &headers {
        Some(h) => super::response::write_headers(w, h).map_err(FileError::Other),
        None => Ok(()),
    })
}
