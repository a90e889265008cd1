//! `pyrs.UploadedFile`: one file of a `multipart/form-data` body, in memory or
//! spooled to an unnamed temporary file (see `http::form`). File I/O runs with
//! the GIL released.

use crate::http::form::{Stored, Upload};
use bytes::Bytes;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

#[pyclass(name = "UploadedFile", module = "pyrs", frozen)]
pub struct PyUploadedFile {
    /// The form field's name.
    #[pyo3(get)]
    name: String,
    /// The file name as the client sent it: display it, never use it as a path.
    #[pyo3(get)]
    filename: String,
    /// The part's Content-Type, if it had one.
    #[pyo3(get)]
    content_type: Option<String>,
    data: Stored,
    /// The `read()` position.
    pos: Mutex<u64>,
}

impl PyUploadedFile {
    pub fn new(upload: Upload) -> Self {
        PyUploadedFile {
            name: upload.field,
            filename: upload.filename,
            content_type: upload.content_type,
            data: upload.data,
            pos: Mutex::new(0),
        }
    }

    fn len(&self) -> u64 {
        match &self.data {
            Stored::Memory(b) => b.len() as u64,
            Stored::Disk(_, len) => *len,
        }
    }

    /// Up to `n` bytes from `offset`.
    fn read_range(&self, py: Python<'_>, offset: u64, n: u64) -> PyResult<Bytes> {
        let end = offset.saturating_add(n).min(self.len());
        let start = offset.min(end);
        match &self.data {
            Stored::Memory(b) => Ok(b.slice(start as usize..end as usize)),
            Stored::Disk(file, _) => {
                let mut buf = vec![0u8; (end - start) as usize];
                py.detach(|| file.read_exact_at(&mut buf, start)).map_err(|e| PyOSError::new_err(e.to_string()))?;
                Ok(Bytes::from(buf))
            }
        }
    }

    fn position(&self) -> std::sync::MutexGuard<'_, u64> {
        self.pos.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Copies the first `len` bytes of a spooled upload to `out`, 64 KiB at a
/// time. `read_exact_at` and `write_all` retry EINTR; a spool shorter than
/// `len` is an error (UnexpectedEof), never a silently truncated copy.
fn copy_spooled(file: &std::fs::File, len: u64, out: &mut impl std::io::Write) -> std::io::Result<()> {
    let mut buf = vec![0u8; len.min(64 * 1024) as usize];
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], at)?;
        out.write_all(&buf[..n])?;
        at += n as u64;
    }
    Ok(())
}

#[pymethods]
impl PyUploadedFile {
    /// The size in bytes.
    #[getter]
    fn size(&self) -> u64 {
        self.len()
    }

    /// The whole content (whatever the read position).
    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = self.read_range(py, 0, self.len())?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Like a binary file's `read`: up to `size` bytes (all when negative)
    /// from the current position, which moves past them.
    #[pyo3(signature = (size=-1))]
    fn read<'py>(&self, py: Python<'py>, size: i64) -> PyResult<Bound<'py, PyBytes>> {
        let at = *self.position();
        let n = if size < 0 { u64::MAX } else { size as u64 };
        let bytes = self.read_range(py, at, n)?;
        *self.position() = at + bytes.len() as u64;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Like a binary file's `seek`; returns the new position.
    #[pyo3(signature = (offset, whence=0))]
    fn seek(&self, offset: i64, whence: i32) -> PyResult<u64> {
        let base = match whence {
            0 => 0,
            1 => *self.position() as i64,
            2 => self.len() as i64,
            _ => return Err(PyValueError::new_err(format!("invalid whence ({whence}, should be 0, 1 or 2)"))),
        };
        let to = base.checked_add(offset).filter(|p| *p >= 0);
        let to = to.ok_or_else(|| PyValueError::new_err(format!("negative seek position {offset}")))? as u64;
        *self.position() = to;
        Ok(to)
    }

    fn tell(&self) -> u64 {
        *self.position()
    }

    /// Writes the content to `path` (created or truncated).
    fn save(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
        let result = py.detach(|| -> std::io::Result<()> {
            match &self.data {
                Stored::Memory(b) => std::fs::write(&path, b),
                Stored::Disk(file, len) => copy_spooled(file, *len, &mut std::fs::File::create(&path)?),
            }
        });
        result.map_err(|e| PyOSError::new_err(format!("cannot save the upload to {}: {e}", path.display())))
    }

    fn __repr__(&self) -> String {
        format!("<pyrs.UploadedFile {:?} {:?} {} bytes>", self.name, self.filename, self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::copy_spooled;
    use std::io::Write;

    #[test]
    fn a_spooled_upload_is_copied_whole_or_fails() {
        let path = std::env::temp_dir().join(format!("pyrs-upload-copy-{}", std::process::id()));
        let content: Vec<u8> = (0..200_003u32).map(|i| (i % 251) as u8).collect();
        std::fs::File::create(&path).and_then(|mut f| f.write_all(&content)).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let mut out = Vec::new();
        copy_spooled(&file, content.len() as u64, &mut out).unwrap();
        assert!(out == content, "the copy differs from the spool");
        out.clear();
        copy_spooled(&file, 1000, &mut out).unwrap();
        assert_eq!(out, content[..1000]);
        let short = copy_spooled(&file, content.len() as u64 + 1, &mut Vec::new()).unwrap_err();
        assert_eq!(short.kind(), std::io::ErrorKind::UnexpectedEof);
        copy_spooled(&file, 0, &mut out).unwrap();
    }
}
