//! pyrs: a multithreaded HTTP/1.1 server for Python handler classes.
//!
//! Layout (ARCHITECTURE.md has a row per module): `cli` and `config` read the
//! flags, the environment and project.pyrs, `router` maps paths to targets,
//! `http` frames HTTP/1.1, `server` owns sockets, threads and the event
//! loops, `app` is the seam between the HTTP core and an application,
//! `python` is the application that calls Python classes (`native` one in
//! plain Rust, `files` answers with files), `workers` runs worker processes,
//! `observe` and `logging` say what the server does; `fault`, `pid1`,
//! `sd_notify` and `stdout` are small leaves.
//!
//! `python` and `workers` (the only modules that use pyo3) exist with the
//! `python` feature (the default); without it the crate is the HTTP core, the
//! server and the plain-Rust `native` App, and does not link libpython.

pub mod app;
pub mod cli;
pub mod config;
pub mod fault;
pub mod files;
pub mod http;
pub mod logging;
pub mod native;
pub mod observe;
pub mod pid1;
#[cfg(feature = "python")]
pub mod python;
pub mod router;
pub mod sd_notify;
pub mod server;
pub mod stdout;
#[cfg(feature = "python")]
pub mod workers;
