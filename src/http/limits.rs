//! What the HTTP layer bounds and knows: per-connection limits and
//! timeouts (configured in project.pyrs, see `crate::config`) and the HTTP
//! methods a route may name. Kept here so that `http` depends on nothing
//! else in the crate (the parser can be fuzzed and benchmarked alone).

use super::budget::MemoryBudget;
use std::sync::Arc;
use std::time::Duration;

/// What a route without `methods` serves: the methods of RFC 9110 and PATCH
/// (CONNECT is one of them but never reaches routing: the parser answers it
/// 501). Any other method is served only by the routes that list it.
pub const KNOWN_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH"];

/// Bounds on what one connection may send and how long it may take.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_request_line: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: usize,
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub body_timeout: Duration,
    pub write_timeout: Duration,
    pub max_connections: usize,
    pub max_buffered_output: usize,
    /// Shared by every connection of the process (clones share it).
    pub memory: Arc<MemoryBudget>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_line: 8 * 1024,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_body_bytes: 10 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_buffered_output: 1024 * 1024,
            memory: Arc::new(MemoryBudget::new(MemoryBudget::default_limit(1))),
        }
    }
}
