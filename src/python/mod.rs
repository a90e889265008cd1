//! The Python bridge: loads the handler classes named in project.pyrs, builds
//! the route table, and implements [`App`] so the HTTP core can call them.
//!
//! Each pool thread attaches to the interpreter once for its whole life and
//! releases the GIL whenever it waits or does socket I/O (`Worker::unlocked`).

pub mod aio;
pub mod batch;
pub mod cookies;
pub mod errors;
pub mod file;
pub mod interpreter;
pub mod json;
pub mod logbridge;
pub mod request;
pub mod response;
pub mod stream;
pub mod upload;

use crate::app::{App, BatchSettings, Deferred, Responder, Route, Worker};
use crate::config::{distinct_classes, RouteSpec};
use crate::http::Request;
use crate::router::Router;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule, PyType};
use std::collections::HashMap;
use std::path::Path;

/// Objects the bridge looks up once.
pub struct Bridge {
    pub http_error: Py<PyType>,
    pub event_stream: Py<PyType>,
    /// `pyrs.loads`: the JSON parser of the contract.
    pub json_loads: Py<PyAny>,
}

static BRIDGE: PyOnceLock<Bridge> = PyOnceLock::new();

pub fn bridge(py: Python<'_>) -> PyResult<&'static Bridge> {
    BRIDGE.get_or_try_init(py, || {
        let module = py.import("pyrs")?;
        let http_error = module.getattr("HTTPError")?.cast_into::<PyType>().map_err(PyErr::from)?.unbind();
        let event_stream = module.getattr("EventStream")?.cast_into::<PyType>().map_err(PyErr::from)?.unbind();
        let json_loads = module.getattr("loads")?.unbind();
        json::init(py)?;
        Ok(Bridge { http_error, event_stream, json_loads })
    })
}

/// A new `pyrs.HTTPError(status, message)` as a `PyErr`.
pub fn http_error(py: Python<'_>, status: u16, message: &str) -> PyErr {
    match bridge(py).and_then(|b| b.http_error.bind(py).call1((status, message))) {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}

/// An exception with its traceback, as Python would print it.
pub fn format_exception(py: Python<'_>, e: &PyErr) -> String {
    let formatted = py
        .import("traceback")
        .and_then(|tb| tb.call_method1("format_exception", (e.get_type(py), e.value(py), e.traceback(py))))
        .and_then(|lines| lines.extract::<Vec<String>>());
    match formatted {
        Ok(lines) => lines.concat().trim_end().to_string(),
        Err(_) => e.to_string(),
    }
}

/// The parts of the `pyrs` module written in Python: the very file the
/// pip-installable package imports, so both behave the same.
const MODULE_SOURCE: &str = include_str!("../../python/pyrs/_shared.py");

/// Runs Python source text as a module body in `globals`.
pub fn run_source(py: Python<'_>, source: &str, globals: &Bound<'_, PyDict>) -> PyResult<()> {
    let code = std::ffi::CString::new(source).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    py.run(&code, Some(globals), None)
}

/// Creates the `pyrs` module handler code imports.
fn install_module(py: Python<'_>) -> PyResult<()> {
    let m = PyModule::new(py, "pyrs")?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<request::PyRequest>()?;
    m.add_class::<request::PyHeaders>()?;
    m.add_class::<response::PyResponse>()?;
    m.add_class::<file::PyFileResponse>()?;
    m.add_class::<upload::PyUploadedFile>()?;
    let globals = PyDict::new(py);
    globals.set_item("__name__", "pyrs")?;
    globals.set_item("__builtins__", py.import("builtins")?)?;
    globals.set_item("Response", m.getattr("Response")?)?;
    run_source(py, MODULE_SOURCE, &globals)?;
    for name in ["HTTPError", "loads", "redirect"] {
        let item = globals.get_item(name)?.ok_or_else(|| PyRuntimeError::new_err(format!("pyrs.{name} missing")))?;
        m.add(name, item)?;
    }
    m.add_function(pyo3::wrap_pyfunction!(dumps, &m)?)?;
    stream::install(py, &m)?;
    let timeout = globals.get_item("Timeout")?.ok_or_else(|| PyRuntimeError::new_err("pyrs.Timeout missing"))?;
    errors::set_timeout_class(py, timeout.clone().cast_into::<PyType>().map_err(PyErr::from)?.unbind());
    m.add("Timeout", timeout)?;
    py.import("sys")?.getattr("modules")?.set_item("pyrs", &m)?;
    Ok(())
}

/// `pyrs.dumps(value) -> bytes`: JSON as pyrs sends a returned dict or list.
#[pyfunction]
fn dumps<'py>(value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
    let mut out = Vec::new();
    json::dumps(value, &mut out)?;
    Ok(pyo3::types::PyBytes::new(value.py(), &out))
}

/// What a route serves.
pub enum PyTarget {
    /// A bound method of a shared handler instance; `origin` is the route's
    /// pattern and `module.Class.method`, for logs (shared with responses
    /// finished later).
    Handler { method: Py<PyAny>, origin: std::sync::Arc<(String, String)> },
    /// A static directory, served without Python.
    Static(crate::files::StaticDir),
}

/// How a handler produces its answer, as `--check` reports it.
fn handler_kind(py: Python<'_>, method: &Bound<'_, PyAny>) -> &'static str {
    let inspect = py.import("inspect");
    let is = |name: &str| {
        inspect
            .as_ref()
            .ok()
            .and_then(|i| i.call_method1(name, (method,)).ok())
            .is_some_and(|r| r.is_truthy().unwrap_or(false))
    };
    if is("iscoroutinefunction") {
        "coroutine"
    } else if is("isasyncgenfunction") {
        "async generator"
    } else if is("isgeneratorfunction") {
        "generator"
    } else {
        "function"
    }
}

/// Calls a lifecycle hook (`post_fork`, `close`); an `async def` one is
/// awaited on the process's event loop, up to `timeout`.
fn call_hook(py: Python<'_>, hook: &Bound<'_, PyAny>, timeout: std::time::Duration) -> PyResult<()> {
    let result = hook.call0()?;
    if aio::is_coroutine(py, &result) {
        aio::run_blocking(py, result, timeout)?;
    }
    Ok(())
}

/// How long an `async def post_fork` may take.
const HOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The loaded project: handler instances and the route table.
pub struct PyApp {
    router: Router<Route<PyTarget>>,
    instances: Vec<(String, Py<PyAny>)>,
}

/// Why the project could not be loaded. Display gives the full message.
#[derive(Debug)]
pub struct LoadError(pub String);

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PyApp {
    /// Imports every module, instantiates each (module, class) once, and
    /// resolves every handler method. `announce` receives one line per route.
    pub fn load(
        project_dir: &Path,
        routes: &[RouteSpec],
        announce: &mut dyn FnMut(String),
    ) -> Result<PyApp, LoadError> {
        Python::attach(|py| {
            let fail = |what: String, e: Option<&PyErr>| match e {
                Some(e) => LoadError(format!("{what}:\n{}", format_exception(py, e))),
                None => LoadError(what),
            };
            interpreter::prepend_sys_path(py, project_dir).map_err(|e| fail("cannot set sys.path".into(), Some(&e)))?;
            install_module(py).map_err(|e| fail("cannot create the pyrs module".into(), Some(&e)))?;
            bridge(py).map_err(|e| fail("cannot set up the pyrs module".into(), Some(&e)))?;

            let mut instances: Vec<(String, Py<PyAny>)> = Vec::new();
            let mut by_class: HashMap<String, usize> = HashMap::new();
            for (module, class) in distinct_classes(routes) {
                let m = py.import(module.as_str()).map_err(|e| {
                    fail(format!("cannot import module {module:?} (from {})", project_dir.display()), Some(&e))
                })?;
                let cls = m
                    .getattr(class.as_str())
                    .map_err(|_| fail(format!("module {module:?} has no class {class:?}"), None))?;
                if !cls.is_callable() {
                    return Err(fail(format!("{module}.{class} is not a class"), None));
                }
                let instance = cls.call0().map_err(|e| fail(format!("{module}.{class}() raised"), Some(&e)))?;
                by_class.insert(format!("{module}.{class}"), instances.len());
                instances.push((format!("{module}.{class}"), instance.unbind()));
            }

            let mut router = Router::new();
            for (id, spec) in routes.iter().enumerate() {
                let methods = spec.methods.as_ref().map(|m| m.join(", ")).unwrap_or_else(|| "all methods".into());
                if let Some(dir) = &spec.r#static {
                    let dir = crate::files::StaticDir::new(&project_dir.join(dir), &spec.path)
                        .map_err(|e| fail(format!("route {}: {e}", spec.path), None))?;
                    announce(format!(
                        "Added route {} -> static directory {} ({methods})",
                        spec.path,
                        dir.root().display()
                    ));
                    let target = PyTarget::Static(dir);
                    let route = Route { id, pattern: spec.path.clone(), target, batch: None };
                    router.add(&spec.path, spec.methods.clone(), route).map_err(|e| fail(e, None))?;
                    continue;
                }
                let key = format!("{}.{}", spec.module, spec.class);
                let instance = by_class
                    .get(&key)
                    .and_then(|&i| instances.get(i))
                    .map(|(_, i)| i.bind(py))
                    .ok_or_else(|| fail(format!("{key} was not loaded"), None))?;
                let label = format!("{key}.{}", spec.handler);
                let method = instance.getattr(spec.handler.as_str()).map_err(|_| {
                    fail(format!("class {key} has no method {:?} (route {})", spec.handler, spec.path), None)
                })?;
                if !method.is_callable() {
                    return Err(fail(format!("{label} is not callable (route {})", spec.path), None));
                }
                let batch = spec.batch.map(|b| BatchSettings {
                    max_size: b.max_size,
                    max_wait: b.max_wait,
                    max_concurrent: b.max_concurrent_batches,
                });
                let batched = match &batch {
                    Some(b) => format!(
                        ", batched: up to {} requests, {} ms, {} at once",
                        b.max_size,
                        b.max_wait.as_secs_f64() * 1000.0,
                        b.max_concurrent
                    ),
                    None => String::new(),
                };
                let kind = match handler_kind(py, &method) {
                    "function" => String::new(),
                    kind => format!(", {kind}"),
                };
                announce(format!("Added route {} -> {label} ({methods}{kind}{batched})", spec.path));
                let origin = std::sync::Arc::new((spec.path.clone(), label));
                let target = PyTarget::Handler { method: method.unbind(), origin };
                router
                    .add(&spec.path, spec.methods.clone(), Route { id, pattern: spec.path.clone(), target, batch })
                    .map_err(|e| fail(e, None))?;
            }
            match logbridge::install(py) {
                Ok(true) => log::debug!("Python logging records go to pyrs's log"),
                Ok(false) => log::debug!("the application configured Python logging; pyrs leaves it alone"),
                Err(e) => log::warn!("cannot route Python logging to pyrs's log: {}", format_exception(py, &e)),
            }
            Ok(PyApp { router, instances })
        })
    }

    /// Calls `method()` on every handler instance that defines it (`post_fork`
    /// in each worker process).
    pub fn call_each(&self, method: &str) -> Result<(), String> {
        Python::attach(|py| {
            for (name, instance) in &self.instances {
                let Ok(hook) = instance.bind(py).getattr(method) else { continue };
                if hook.is_callable() {
                    call_hook(py, &hook, HOOK_TIMEOUT)
                        .map_err(|e| format!("{name}.{method}() raised:\n{}", format_exception(py, &e)))?;
                }
            }
            Ok(())
        })
    }

    /// Registers an `os.register_at_fork` hook that closes the listening
    /// sockets in a process a handler forks (`os.fork()`): such a child,
    /// orphaned or not, must never hold the port or take connections.
    pub fn close_in_forked_children<L: std::os::fd::AsRawFd>(&self, listeners: &[L]) -> Result<(), String> {
        let fds: Vec<i32> = listeners.iter().map(|l| l.as_raw_fd()).collect();
        Python::attach(|py| {
            let code = c"
def _pyrs_close_listeners(fds=FDS):
    import os
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
import os as _os
_os.register_at_fork(after_in_child=_pyrs_close_listeners)
";
            let globals = PyDict::new(py);
            globals.set_item("FDS", fds)?;
            globals.set_item("__builtins__", py.import("builtins")?)?;
            py.run(code, Some(&globals), None)
        })
        .map_err(|e| format!("cannot register the at-fork hook: {e}"))
    }

    /// Python's version and prefix, for the start-up banner.
    pub fn python_info() -> String {
        Python::attach(|py| {
            let sys = py.import("sys");
            let get = |name: &str| {
                sys.as_ref().ok().and_then(|s| s.getattr(name).ok()).map(|v| v.to_string()).unwrap_or_default()
            };
            format!("Python {} ({})", get("version").split_whitespace().next().unwrap_or(""), get("prefix"))
        })
    }
}

impl App for PyApp {
    type Target = PyTarget;
    type Worker<'w> = PyWorker<'w>;

    fn router(&self) -> &Router<Route<PyTarget>> {
        &self.router
    }

    fn run_worker(&self, _index: usize, body: &mut dyn FnMut(&mut PyWorker<'_>)) {
        // Attach once for the thread's whole life (attaching per request costs ~9 us).
        Python::attach(|py| {
            let mut worker = PyWorker { py, scratch: Vec::new(), interrupts_seen: 0, _app: std::marker::PhantomData };
            body(&mut worker);
        });
    }

    /// Cancels the coroutines still running (the pool threads waited for
    /// them up to shutdown_timeout), calls `close()` on every handler
    /// instance that has one, then runs the atexit hooks.
    fn shutdown(&self) {
        Python::attach(|py| {
            let cancelled = aio::cancel_all(py, CANCEL_TIMEOUT);
            if cancelled > 0 {
                log::warn!("cancelled {cancelled} coroutine(s) still running at shutdown");
            }
            for (name, instance) in &self.instances {
                let instance = instance.bind(py);
                if let Ok(close) = instance.getattr("close") {
                    if close.is_callable() {
                        if let Err(e) = call_hook(py, &close, CANCEL_TIMEOUT) {
                            log::error!("{name}.close() raised:\n{}", format_exception(py, &e));
                        }
                    }
                }
            }
            interpreter::run_atexit(py);
        });
    }

    /// Taking the GIL once frees the Python objects pyo3 could only queue
    /// for release when connections holding them closed without it.
    fn idle(&self) {
        Python::attach(|_py| {});
    }

    /// Raises `pyrs.Timeout` in the handler running on `thread`.
    fn interrupt(&self, thread: u64, still: &dyn Fn() -> bool) {
        Python::attach(|py| {
            // With the interpreter lock held the pool thread cannot finish
            // its handler, so the check stays true until the exception is set.
            if !still() {
                return;
            }
            if let Some(class) = errors::timeout_class(py) {
                errors::note_interrupt();
                // SAFETY: called with the interpreter attached; the class is a live type object.
                unsafe { pyo3::ffi::PyThreadState_SetAsyncExc(thread as std::ffi::c_long, class.as_ptr()) };
            }
        });
    }
}

/// How long cancelled coroutines and an `async def close` get at shutdown.
const CANCEL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// One pool thread, attached to the interpreter.
pub struct PyWorker<'w> {
    py: Python<'w>,
    scratch: Vec<u8>,
    /// `errors::INTERRUPTS` when this thread last looked.
    interrupts_seen: u64,
    _app: std::marker::PhantomData<&'w PyApp>,
}

impl Worker for PyWorker<'_> {
    type Target = PyTarget;

    fn unlocked<R: Send, F: FnOnce() -> R + Send>(&mut self, f: F) -> R {
        self.py.detach(f)
    }

    fn handle(&mut self, route: &Route<PyTarget>, req: Request, mut res: Responder<'_>) {
        let py = self.py;
        let (method, origin) = match &route.target {
            PyTarget::Handler { method, origin } => (method, origin),
            PyTarget::Static(dir) => {
                // The file system look-up runs with the GIL released.
                dir.serve(&req.head, &mut res, |find| py.detach(find));
                return;
            }
        };
        let (outcome, request) = match Bound::new(py, request::PyRequest::new(req)) {
            Ok(r) => (method.bind(py).call1((&r,)), Some(r)),
            Err(e) => (Err(e), None),
        };
        errors::clear_late_interrupt(&mut self.interrupts_seen);
        let (pattern, label) = (&origin.0, &origin.1);
        // Debug builds: a test can make this path panic (the per-job catch answers 500).
        crate::fault::hit(crate::fault::Fault::PanicInHandler, pattern);
        match outcome {
            Ok(value) if aio::is_coroutine(py, &value) => match res.defer() {
                Some(later) => {
                    let slot = later.slot();
                    if let Some(task) = await_response(py, value, later, request, origin.clone(), route.id) {
                        res.out.on_cancel(slot, Box::new(ClientGone { task, origin: origin.clone() }));
                    }
                }
                None => {
                    let _ = value.call_method0("close");
                    log::error!("route {pattern} ({label}): a coroutine cannot be awaited here");
                    res.text(500, "Internal Server Error\n");
                }
            },
            outcome => response::write(py, outcome, pattern, label, route.id, request.as_ref(), res, &mut self.scratch),
        }
    }

    fn handle_batch(&mut self, route: &Route<PyTarget>, reqs: Vec<Request>, res: Vec<Responder<'_>>) {
        batch::handle(self.py, route, reqs, res, &mut self.scratch);
    }
}

/// Cancels a handler's coroutine whose client went away before it ended
/// (the connection closed with its response slot unfilled): not an error,
/// logged at debug level.
struct ClientGone {
    task: aio::Task,
    origin: std::sync::Arc<(String, String)>,
}

impl crate::http::body::Cancel for ClientGone {
    fn cancel(self: Box<Self>) {
        log::debug!("route {} ({}): the client went away; cancelling its coroutine", self.origin.0, self.origin.1);
        Python::attach(|py| self.task.cancel(py));
    }
}

/// Runs a handler's coroutine on the event loop; its result (or exception)
/// becomes the response in the slot `later` reserved, written by the thread
/// that owns the connection. Returns what cancels it.
fn await_response(
    py: Python<'_>,
    coro: Bound<'_, PyAny>,
    later: Deferred,
    request: Option<Bound<'_, request::PyRequest>>,
    origin: std::sync::Arc<(String, String)>,
    route_id: usize,
) -> Option<aio::Task> {
    let request = request.map(Bound::unbind);
    aio::spawn(
        py,
        coro,
        Box::new(move |_py, outcome| {
            let outcome = outcome.map(Bound::unbind);
            later.complete(Box::new(move |res| {
                Python::attach(|py| {
                    let outcome = outcome.map(|v| v.into_bound(py));
                    let request = request.map(|r| r.into_bound(py));
                    let (pattern, label) = (&origin.0, &origin.1);
                    response::write(py, outcome, pattern, label, route_id, request.as_ref(), res, &mut Vec::new());
                })
            }));
        }),
        aio::handler_timeout(),
    )
}
