//! Coroutines: the process's asyncio event loop and how Rust runs a
//! coroutine on it.
//!
//! One loop per process, created on first use (so in worker mode it is
//! created after the fork, in the worker) and run forever by its own thread,
//! `pyrs-asyncio`; uvloop's loop when `uvloop` is importable. The thread
//! sleeps in the loop's selector with the GIL released, so an idle loop
//! costs nothing and never competes with the pool threads. [`spawn`] hands
//! a coroutine to the loop from any thread (`call_soon_threadsafe`) and
//! calls a Rust callback with its outcome, on the loop's thread with the
//! GIL held: the handler path completes the request's reserved output slot
//! from there (`crate::app::Deferred`). The reasons for one loop per
//! process rather than one per pool thread are measured in ARCHITECTURE.md.

use super::format_exception;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const RUNNER_SOURCE: &std::ffi::CStr = c"
import asyncio
import logging
import types

try:
    import uvloop as _uvloop
except ImportError:
    _uvloop = None


class AsyncBody:
    \"\"\"An async iterator sent as a response body, one item per pull.\"\"\"

    def __init__(self, aiter):
        self.aiter = aiter
        self.task = None
        self.closed = False

    async def next(self):
        try:
            return (await self.aiter.__anext__(), False)
        except StopAsyncIteration:
            return (None, True)

    async def aclose(self):
        close = getattr(self.aiter, 'aclose', None)
        if close is None:
            return
        try:
            await close()
        except Exception:
            logging.getLogger('pyrs').exception('closing an async generator raised')


class Job:
    \"\"\"A coroutine handed to the loop, and its task once `_start` has made it.\"\"\"

    __slots__ = ('coro', 'task', 'deadline', 'done', 'root')

    def __init__(self, coro):
        self.coro = coro
        self.task = None
        # With a timeout: the loop time past which it is timed out, its
        # callback, and where to look for the frames it waits in (None: the
        # task's coroutine).
        self.deadline = None
        self.done = None
        self.root = None


def _awaiting(coro):
    \"\"\"A traceback of where a suspended coroutine waits: its frame, then
    those of what it awaits, down to the innermost (a future has none).\"\"\"
    frames = []
    while coro is not None and len(frames) < 100:
        frame = getattr(coro, 'cr_frame', None) or getattr(coro, 'gi_frame', None) or getattr(coro, 'ag_frame', None)
        if frame is None:
            break
        frames.append(frame)
        coro = getattr(coro, 'cr_await', None) or getattr(coro, 'gi_yieldfrom', None) or getattr(coro, 'ag_await', None)
        if type(coro).__name__ == 'async_generator_asend':
            # `async for` over an async generator (EventStream over the
            # handler's, a generator wrapping another): the asend shows no
            # frame; the generator it drives is the one of this frame's
            # locals that is running.
            coro = next((v for v in frame.f_locals.values()
                         if isinstance(v, types.AsyncGeneratorType) and v.ag_running), None)
    tb = None
    for frame in reversed(frames):
        tb = types.TracebackType(tb, frame, frame.f_lasti, frame.f_lineno)
    return tb


class Runner:
    def __init__(self, timeout_class):
        self.loop = _uvloop.new_event_loop() if _uvloop is not None else asyncio.new_event_loop()
        self.kind = 'uvloop' if _uvloop is not None else 'asyncio'
        self.tasks = set()
        # pyrs.Timeout: what a handler's coroutine still running past `timeout` is answered with.
        self.timeout_class = timeout_class
        # Jobs with a deadline, checked by one sweep a fraction of the timeout
        # apart while any runs (a timer per request would cost ~2.5 us each).
        self.timed = set()
        self.sweeper = None
        self.timeout = None

    def run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro, done, timeout=None):
        job = Job(coro)
        self.loop.call_soon_threadsafe(self._start, job, done, timeout)
        return job

    def _start(self, job, done, timeout):
        coro, job.coro = job.coro, None
        try:
            task = self.loop.create_task(coro)
        except BaseException as e:
            done(None, e)
            return
        job.task = task
        self.tasks.add(task)
        self._bound(job, done, timeout)
        task.add_done_callback(lambda t: self._finish(t, done, job))

    def _bound(self, job, done, timeout):
        if timeout is None or self.timeout_class is None:
            return
        self.timeout = timeout
        job.deadline = self.loop.time() + timeout
        job.done = done
        self.timed.add(job)
        if self.sweeper is None:
            self.sweeper = self.loop.call_later(self._sweep_every(), self._sweep)

    def _sweep_every(self):
        return min(max(self.timeout / 20, 0.01), 0.5)

    def _sweep(self):
        self.sweeper = None
        now = self.loop.time()
        for job in [j for j in self.timed if j.deadline <= now]:
            self._time_out(job)
        if self.timed:
            self.sweeper = self.loop.call_later(self._sweep_every(), self._sweep)

    def _time_out(self, job):
        # Past `timeout`: answered now with pyrs.Timeout (503, logged with
        # where the coroutine awaits), then cancelled (its finally blocks
        # run); whatever it ends with later is dropped (done answers once).
        self.timed.discard(job)
        done, job.done = job.done, None
        task = job.task
        if done is None or task is None or task.done():
            return
        exc = self.timeout_class(f'still awaiting after {self.timeout:g} s (timeout)')
        # A body's frames are its generator's; an async iterator that is no
        # generator has none of its own: then what the pull awaits. Never
        # raises (the sweep must go on): a stack it cannot walk is left out.
        try:
            tb = _awaiting(job.root) if job.root is not None else None
            if tb is None:
                tb = _awaiting(task.get_coro())
        except Exception:
            tb = None
        done(None, exc.with_traceback(tb) if tb is not None else exc)
        task.cancel()

    def cancel(self, job):
        self.loop.call_soon_threadsafe(self._cancel, job)

    def _cancel(self, job):
        # Always after _start: call_soon_threadsafe keeps its callbacks in
        # order, and cancel() takes the job submit() returned. A task
        # cancelled before its first step never runs the coroutine's body
        # (CancelledError is thrown in at its start). No task: create_task
        # failed, and done() was called with that error.
        if job.task is not None and not job.task.done():
            # CancelledError at the coroutine's await: its finally blocks run.
            job.task.cancel()

    def _finish(self, task, done, job=None):
        self.tasks.discard(task)
        if job is not None and job.deadline is not None:
            self.timed.discard(job)
            job.done = None
        if task.cancelled():
            done(None, asyncio.CancelledError('cancelled at shutdown'))
            return
        exc = task.exception()
        if exc is not None:
            done(None, exc)
        else:
            done(task.result(), None)

    def next_item(self, body, done, timeout=None):
        self.loop.call_soon_threadsafe(self._next_item, body, done, timeout)

    def _next_item(self, body, done, timeout):
        if body.closed:
            done(None, asyncio.CancelledError('closed'))
            return
        body.task = self.loop.create_task(body.next())
        self.tasks.add(body.task)
        job = Job(None)
        job.task = body.task
        job.root = body.aiter
        self._bound(job, done, timeout)
        body.task.add_done_callback(lambda t: self._finish(t, done, job))

    def close_body(self, body):
        self.loop.call_soon_threadsafe(self._close_body, body)

    def _close_body(self, body):
        if body.closed:
            return
        body.closed = True
        if body.task is not None and not body.task.done():
            # CancelledError at the generator's await: its finally blocks
            # run. A task cancelled before it started never entered the
            # generator: aclose() runs once the task is done either way (a
            # no-op for a generator the cancellation ended).
            body.task.cancel()
            body.task.add_done_callback(lambda t: self._aclose(body))
        else:
            self._aclose(body)

    def _aclose(self, body):
        task = self.loop.create_task(body.aclose())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def cancel_all(self):
        me = asyncio.current_task()
        tasks = [t for t in self.tasks if t is not me and not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        return len(tasks)

    def in_flight(self):
        return len(self.tasks)
";

/// The loop and the Python object that drives it.
struct Runner {
    runner: Py<PyAny>,
    /// The `AsyncBody` class.
    async_body: Py<PyAny>,
}

static RUNNER: PyOnceLock<Runner> = PyOnceLock::new();

/// What [`spawn`] calls with a coroutine's outcome (on the loop's thread,
/// with the GIL held).
pub type Done = Box<dyn for<'py> FnOnce(Python<'py>, PyResult<Bound<'py, PyAny>>) + Send>;

/// The Python callable the runner calls with `(result, exception)`.
#[pyclass]
struct DoneCallback {
    done: Mutex<Option<Done>>,
}

#[pymethods]
impl DoneCallback {
    fn __call__(&self, py: Python<'_>, result: Bound<'_, PyAny>, exc: Bound<'_, PyAny>) {
        let Some(done) = self.done.lock().ok().and_then(|mut d| d.take()) else { return };
        let outcome = if exc.is_none() { Ok(result) } else { Err(PyErr::from_value(exc)) };
        done(py, outcome);
    }
}

/// The process's loop, started on first use.
fn runner(py: Python<'_>) -> PyResult<&'static Runner> {
    RUNNER.get_or_try_init(py, || {
        let globals = PyDict::new(py);
        globals.set_item("__name__", "pyrs._aio")?;
        globals.set_item("__builtins__", py.import("builtins")?)?;
        py.run(RUNNER_SOURCE, Some(&globals), None)?;
        let cls = globals.get_item("Runner")?.ok_or_else(|| PyRuntimeError::new_err("pyrs._aio has no Runner"))?;
        let timeout_class = super::errors::timeout_class(py).map(|c| c.clone().into_any());
        let runner = cls.call1((timeout_class,))?;
        let async_body = globals
            .get_item("AsyncBody")?
            .ok_or_else(|| PyRuntimeError::new_err("pyrs._aio has no AsyncBody"))?
            .unbind();
        let kind: String = runner.getattr("kind")?.extract()?;
        let run = runner.getattr("run")?.unbind();
        std::thread::Builder::new()
            .name("pyrs-asyncio".into())
            .stack_size(crate::server::POOL_STACK_SIZE)
            .spawn(move || {
                Python::attach(|py| {
                    if let Err(e) = run.bind(py).call0() {
                        log::error!("the asyncio event loop stopped:\n{}", format_exception(py, &e));
                    }
                })
            })
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the asyncio thread: {e}")))?;
        log::debug!("asyncio event loop started ({kind})");
        Ok(Runner { runner: runner.unbind(), async_body })
    })
}

/// The handler `timeout` of this process, in milliseconds (0: not set).
static HANDLER_TIMEOUT_MS: AtomicU64 = AtomicU64::new(0);

/// Sets the `timeout` that bounds handlers' coroutines (once, at start-up).
pub fn set_handler_timeout(timeout: Duration) {
    HANDLER_TIMEOUT_MS.store(timeout.as_millis().max(1) as u64, Ordering::Relaxed);
}

/// The `timeout` that bounds handlers' coroutines, if set.
pub fn handler_timeout() -> Option<Duration> {
    match HANDLER_TIMEOUT_MS.load(Ordering::Relaxed) {
        0 => None,
        ms => Some(Duration::from_millis(ms)),
    }
}

/// Runs `coro` on the process's event loop and calls `done` with its result
/// or exception (cancelled: `CancelledError`). Callable from any thread
/// holding the GIL; returns at once, with what cancels the coroutine (None
/// when it could not be handed over: then `done` has been called here with
/// the error). With `timeout`, a coroutine still running that long after it
/// started is answered `pyrs.Timeout` (with a traceback of where it awaits)
/// and then cancelled.
pub fn spawn(py: Python<'_>, coro: Bound<'_, PyAny>, done: Done, timeout: Option<Duration>) -> Option<Task> {
    let callback = DoneCallback { done: Mutex::new(Some(done)) };
    let submitted = runner(py).and_then(|r| {
        let callback = Bound::new(py, callback)?;
        let timeout = timeout.map(|t| t.as_secs_f64());
        match r.runner.bind(py).call_method1("submit", (&coro, &callback, timeout)) {
            Ok(job) => Ok(Some(Task { job: job.unbind() })),
            Err(e) => {
                callback.borrow().__call__(py, py.None().into_bound(py), e.value(py).clone().into_any());
                Ok(None)
            }
        }
    });
    submitted.unwrap_or_else(|e| {
        // The runner itself could not start: the callback never reached it.
        let _ = coro.call_method0("close");
        log::error!("cannot run a coroutine:\n{}", format_exception(py, &e));
        None
    })
}

/// A coroutine handed to the loop by [`spawn`].
pub struct Task {
    job: Py<PyAny>,
}

impl Task {
    /// Cancels the coroutine (from any thread holding the GIL): its task
    /// is cancelled on the loop (if it has not taken its first step yet, the
    /// coroutine's body never runs), and its `done` callback gets
    /// `CancelledError`. A no-op once it has ended.
    pub fn cancel(&self, py: Python<'_>) {
        if let Some(r) = RUNNER.get(py) {
            if let Err(e) = r.runner.bind(py).call_method1("cancel", (&self.job,)) {
                log::error!("cannot cancel a coroutine:\n{}", format_exception(py, &e));
            }
        }
    }
}

/// Wraps an async iterator for [`next_item`] and [`close_body`].
pub fn async_body(py: Python<'_>, aiter: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    Ok(runner(py)?.async_body.bind(py).call1((aiter,))?.unbind())
}

/// Awaits the next item of `body` on the loop; `done` gets `(item, False)`,
/// `(None, True)` at the end, or the exception (with `timeout`, as for
/// [`spawn`]: `pyrs.Timeout`, then the wait is cancelled).
pub fn next_item(py: Python<'_>, body: &Bound<'_, PyAny>, done: Done, timeout: Option<Duration>) {
    let callback = DoneCallback { done: Mutex::new(Some(done)) };
    let outcome = runner(py).and_then(|r| {
        let callback = Bound::new(py, callback)?;
        let timeout = timeout.map(|t| t.as_secs_f64());
        if let Err(e) = r.runner.bind(py).call_method1("next_item", (body, &callback, timeout)) {
            callback.borrow().__call__(py, py.None().into_bound(py), e.value(py).clone().into_any());
        }
        Ok(())
    });
    if let Err(e) = outcome {
        log::error!("cannot stream an async generator:\n{}", format_exception(py, &e));
    }
}

/// Stops `body`: a pending `__anext__` is cancelled, else `aclose()` runs
/// (either way its `finally` blocks run, on the loop).
pub fn close_body(py: Python<'_>, body: &Bound<'_, PyAny>) {
    if let Some(r) = RUNNER.get(py) {
        if let Err(e) = r.runner.bind(py).call_method1("close_body", (body,)) {
            log::error!("cannot close an async generator:\n{}", format_exception(py, &e));
        }
    }
}

/// Runs `coro` to completion on the process's loop and waits for it (with
/// the GIL released) up to `timeout`; for `async def` lifecycle hooks.
pub fn run_blocking(py: Python<'_>, coro: Bound<'_, PyAny>, timeout: Duration) -> PyResult<Py<PyAny>> {
    let (tx, rx) = crossbeam_channel::bounded::<PyResult<Py<PyAny>>>(1);
    let _task = spawn(
        py,
        coro,
        Box::new(move |_py, outcome| {
            let _ = tx.send(outcome.map(Bound::unbind));
        }),
        None,
    );
    match py.detach(|| rx.recv_timeout(timeout)) {
        Ok(outcome) => outcome,
        Err(_) => Err(PyRuntimeError::new_err(format!("coroutine did not finish within {timeout:?}"))),
    }
}

/// Whether `value` is a coroutine object (what calling an `async def` returns).
pub fn is_coroutine(py: Python<'_>, value: &Bound<'_, PyAny>) -> bool {
    static CORO: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    let coro = CORO.get_or_try_init(py, || {
        py.import("types")?.getattr("CoroutineType")?.cast_into::<PyType>().map_err(PyErr::from).map(Bound::unbind)
    });
    coro.is_ok_and(|t| value.get_type().is(t.bind(py)))
}

/// Cancels the coroutines still running (their `finally` blocks run) and
/// waits up to `timeout` for them to end; returns how many were cancelled.
/// Does nothing when no coroutine ever ran.
pub fn cancel_all(py: Python<'_>, timeout: Duration) -> usize {
    let Some(r) = RUNNER.get(py) else { return 0 };
    let outcome = r.runner.bind(py).call_method0("cancel_all").and_then(|coro| run_blocking(py, coro, timeout));
    match outcome {
        Ok(n) => n.bind(py).extract().unwrap_or(0),
        Err(e) => {
            log::warn!("cancelling coroutines at shutdown: {}", format_exception(py, &e));
            0
        }
    }
}
