//! Worker processes: a supervisor (`master`) that never starts Python, a
//! preloaded `template` process per code generation that forks the workers,
//! and the `worker` side that serves.
//!
//! ```text
//! master (Rust only; child subreaper; owns the listening sockets)
//!   └─ template gen N   (Python: imports, instantiates, gc.freeze(); waits for commands)
//!        └─ (short-lived) ─ worker slot K gen N   (reparented to the master)
//! ```
//!
//! The template double-forks each worker so the worker becomes the master's
//! child: the master learns of every worker's death through SIGCHLD and
//! `waitpid`. Children report to the master on one shared status pipe, one
//! line per message (shorter than PIPE_BUF, so lines never interleave); the
//! master commands a template over its own pipe. SIGHUP starts a new template
//! with freshly imported code; its workers replace the old ones one by one.

pub mod ipc;
pub mod master;
pub mod template;
pub mod worker;

/// Environment variables the master sets for a template process.
/// (`PYRS_INTERNAL_*`: never read as settings.)
pub const ENV_ROLE: &str = "PYRS_INTERNAL_ROLE";
pub const ENV_GENERATION: &str = "PYRS_INTERNAL_GENERATION";
pub const ENV_BIND: &str = "PYRS_INTERNAL_BIND";
pub const ENV_MASTER_PID: &str = "PYRS_INTERNAL_MASTER_PID";
