//! Starting the embedded CPython: PyConfig (no Python signal handlers,
//! unbuffered stdio, the user's virtualenv), `sys.path`, and the end-of-life
//! steps pyo3 leaves to us (`atexit` hooks).

use pyo3::ffi;
use pyo3::prelude::*;
use std::ffi::CString;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};

/// The interpreter pyrs was built against (set by build.rs).
pub const BUILD_PYTHON: &str = env!("PYRS_BUILD_PYTHON");
/// Its `major.minor` version.
pub const BUILD_PYTHON_VERSION: &str = env!("PYRS_BUILD_PYTHON_VERSION");

/// Checks a virtualenv directory and returns its interpreter path. A
/// virtualenv made by another Python version is refused: its compiled
/// packages and its `lib/pythonX.Y/site-packages` would not be found.
pub fn venv_python(venv: &Path) -> Result<PathBuf, String> {
    let python = venv.join("bin").join("python");
    let cfg = venv.join("pyvenv.cfg");
    let Ok(text) = std::fs::read_to_string(&cfg) else {
        return Err(format!(
            "{} is not a virtualenv (no readable pyvenv.cfg); create one with: python3 -m venv {}",
            venv.display(),
            venv.display()
        ));
    };
    if let Some(version) = venv_version(&text) {
        if version != BUILD_PYTHON_VERSION {
            return Err(format!(
                "virtualenv {} was made with Python {version}, but pyrs runs Python {BUILD_PYTHON_VERSION} \
                 ({BUILD_PYTHON}); recreate it with: {BUILD_PYTHON} -m venv {}",
                venv.display(),
                venv.display()
            ));
        }
    }
    if !python.exists() {
        return Err(format!("virtualenv {} has no bin/python", venv.display()));
    }
    Ok(python)
}

/// `major.minor` from pyvenv.cfg's `version = 3.11.7` (venv) or
/// `version_info = 3.11.7.final.0` (virtualenv).
fn venv_version(cfg: &str) -> Option<String> {
    cfg.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        if !matches!(key.trim(), "version" | "version_info") {
            return None;
        }
        let mut parts = value.trim().split('.');
        let (major, minor) = (parts.next()?, parts.next()?);
        (major.parse::<u32>().is_ok() && minor.parse::<u32>().is_ok()).then(|| format!("{major}.{minor}"))
    })
}

/// Initialises CPython once, then releases the GIL so that any thread can
/// attach. With `venv`, `sys.prefix` and site-packages come from it, the way
/// `venv/bin/python` itself would set them.
pub fn initialize(venv: Option<&Path>) -> Result<(), String> {
    let program = match venv {
        Some(v) => venv_python(v)?,
        None => PathBuf::from(BUILD_PYTHON),
    };
    let program = CString::new(program.as_os_str().as_encoded_bytes())
        .map_err(|_| "interpreter path contains a NUL byte".to_string())?;
    // SAFETY: the PyConfig is initialised by PyConfig_InitPythonConfig before
    // any field is read or written, cleared exactly once, and the interpreter
    // is initialised from it on this (the main) thread before any other
    // Python call.
    unsafe {
        if ffi::Py_IsInitialized() != 0 {
            return Err("the Python interpreter is already initialised".into());
        }
        let mut config = MaybeUninit::<ffi::PyConfig>::uninit();
        ffi::PyConfig_InitPythonConfig(config.as_mut_ptr());
        let mut config = config.assume_init();
        // Rust owns SIGINT/SIGTERM; Python must not turn them into KeyboardInterrupt.
        config.install_signal_handlers = 0;
        // print() in a handler shows up at once in the server's output.
        config.buffered_stdio = 0;
        config.parse_argv = 0;
        let program_name = std::ptr::addr_of_mut!(config.program_name);
        let status = ffi::PyConfig_SetBytesString(&mut config, program_name, program.as_ptr());
        if ffi::PyStatus_Exception(status) != 0 {
            ffi::PyConfig_Clear(&mut config);
            return Err(status_message("cannot set the interpreter path", &status));
        }
        let status = ffi::Py_InitializeFromConfig(&config);
        ffi::PyConfig_Clear(&mut config);
        if ffi::PyStatus_Exception(status) != 0 {
            return Err(status_message("cannot start Python", &status));
        }
        // Release the GIL; every later use goes through Python::attach.
        ffi::PyEval_SaveThread();
    }
    Ok(())
}

fn status_message(what: &str, status: &ffi::PyStatus) -> String {
    let msg = if status.err_msg.is_null() {
        "unknown error".to_string()
    } else {
        // SAFETY: err_msg is a static NUL-terminated C string when set.
        unsafe { std::ffi::CStr::from_ptr(status.err_msg) }.to_string_lossy().into_owned()
    };
    format!("{what}: {msg}")
}

/// Puts the project directory first on `sys.path` (before PYTHONPATH entries).
pub fn prepend_sys_path(py: Python<'_>, dir: &Path) -> PyResult<()> {
    let path = py.import("sys")?.getattr("path")?;
    path.call_method1("insert", (0, dir.to_string_lossy().as_ref()))?;
    Ok(())
}

/// Runs the `atexit` hooks; pyo3 never finalises the interpreter.
pub fn run_atexit(py: Python<'_>) {
    let result = py.import("atexit").and_then(|m| m.call_method0("_run_exitfuncs"));
    if let Err(e) = result {
        log::error!("atexit hooks failed: {}", super::format_exception(py, &e));
    }
}

#[cfg(test)]
mod tests {
    use super::venv_version;

    #[test]
    fn reads_the_version_of_venv_and_virtualenv() {
        assert_eq!(venv_version("home = /usr/bin\nversion = 3.12.1\n").as_deref(), Some("3.12"));
        assert_eq!(venv_version("version_info = 3.11.7.final.0\n").as_deref(), Some("3.11"));
        assert_eq!(venv_version("home = /usr/bin\n"), None);
    }
}
