//! Python's `logging` (and `warnings`) in pyrs's log stream. When the
//! project has loaded and the application has not configured logging itself
//! (the root logger has no handler), a handler is put on the root logger
//! that sends each record to pyrs's log (time, level, pid, then the logger
//! name and message, with the request id when inside a handler), at pyrs's
//! `log_level`; `logging.captureWarnings(True)` routes `warnings` there too.
//! An application that configured logging is left alone. `print` is untouched.

use crate::observe::context;
use pyo3::prelude::*;
use pyo3::types::PyDict;

const SOURCE: &std::ffi::CStr = c"
import logging

class PyrsHandler(logging.Handler):
    \"\"\"Sends records to pyrs's log stream (installed by pyrs).\"\"\"

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter('%(message)s'))

    def emit(self, record):
        try:
            _log(record.levelno, record.name, self.format(record))
        except Exception:
            self.handleError(record)

def install(level):
    root = logging.getLogger()
    if root.handlers:
        return False
    root.addHandler(PyrsHandler())
    root.setLevel(level)
    logging.captureWarnings(True)
    return True
";

/// `_log(levelno, name, message)`: one Python record into pyrs's log.
#[pyfunction]
fn _log(py: Python<'_>, levelno: i64, name: &str, message: &str) {
    let level = match levelno {
        40.. => log::Level::Error,
        30..=39 => log::Level::Warn,
        20..=29 => log::Level::Info,
        10..=19 => log::Level::Debug,
        _ => log::Level::Trace,
    };
    if level > log::max_level() {
        return;
    }
    let line = format!("{name}: {message}{}", context::rid_suffix());
    // Writing the line may wait on stderr: not with the GIL held.
    py.detach(|| log::log!(level, "{line}"));
}

/// pyrs's `log_level` as a Python logging level.
fn python_level() -> i64 {
    match log::max_level() {
        log::LevelFilter::Off => 60,
        log::LevelFilter::Error => 40,
        log::LevelFilter::Warn => 30,
        log::LevelFilter::Info => 20,
        log::LevelFilter::Debug => 10,
        log::LevelFilter::Trace => 1,
    }
}

/// Installs the bridge unless the application configured logging; returns
/// whether it did.
pub fn install(py: Python<'_>) -> PyResult<bool> {
    let globals = PyDict::new(py);
    globals.set_item("__name__", "pyrs._logging")?;
    globals.set_item("__builtins__", py.import("builtins")?)?;
    globals.set_item("_log", wrap_pyfunction!(_log, py)?)?;
    py.run(SOURCE, Some(&globals), None)?;
    let install = globals.as_any().get_item("install")?;
    install.call1((python_level(),))?.extract()
}
