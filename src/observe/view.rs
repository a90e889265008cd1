//! What the admin endpoints show: one consistent snapshot of the figures,
//! the workers and the recent handler errors, from a single process or
//! from the master (which adds up every worker).

use super::metrics::{HandlerError, Totals};

/// A route's labels in `/metrics` and on the status page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteLabel {
    /// The route's path pattern (`/users/{id}`).
    pub route: String,
    /// `module.Class.method`.
    pub handler: String,
    /// Declared with `batch` (has batch-size metrics).
    pub batched: bool,
}

impl RouteLabel {
    /// Labels for the project's routes, plus one for requests no route matched.
    pub fn for_routes(routes: &[crate::config::RouteSpec]) -> Vec<RouteLabel> {
        let mut v: Vec<RouteLabel> = routes
            .iter()
            .map(|r| RouteLabel {
                route: r.path.clone(),
                handler: format!("{}.{}.{}", r.module, r.class, r.handler),
                batched: r.batch.is_some(),
            })
            .collect();
        v.push(RouteLabel { route: "unmatched".into(), handler: String::new(), batched: false });
        v
    }
}

/// One worker process (or the single process) on the status page.
#[derive(Debug, Clone)]
pub struct WorkerRow {
    pub pid: u32,
    pub slot: Option<usize>,
    pub state: &'static str,
    pub started_ms: u64,
    pub requests: u64,
    pub in_flight: u64,
    pub rss: Option<u64>,
    pub uss: Option<u64>,
    pub restarts: u64,
}

#[derive(Debug, Clone)]
pub struct View {
    pub totals: Totals,
    pub labels: Vec<RouteLabel>,
    pub workers: Vec<WorkerRow>,
    /// The last handler errors, oldest first (at most 20).
    pub errors: Vec<HandlerError>,
    pub ready: bool,
    /// Worker mode: starts, and exits by reason.
    pub worker_mode: bool,
    pub worker_starts: u64,
    pub worker_exits: Vec<(&'static str, u64)>,
}

/// Where the admin listener gets its figures.
pub trait Source: Send + Sync {
    /// Readiness: at least one worker serves, not starting, not draining.
    fn ready(&self) -> bool;
    fn view(&self) -> View;
}
