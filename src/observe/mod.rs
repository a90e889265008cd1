//! Observability: what pyrs tells about itself. The metrics registry
//! (`metrics`, lock-free per-thread counters, in shared memory in worker mode:
//! `shm`), request ids (made in `http::request_id`), the request a thread is running
//! (`context`), the access log (`access_log` formats lines, `log_writer`
//! writes them off the serving threads), the admin listener (`admin`) with
//! `/metrics` (`prometheus`), health and the status page (`status_page`),
//! over a [`view::Source`] (this process, or the master adding up workers:
//! `fleet`), and process memory (`procmem`).
//!
//! The serving threads only bump their own counters and append to their own
//! buffers; everything else happens on the admin and writer threads.

pub mod access_log;
pub mod admin;
pub mod context;
pub mod fleet;
pub mod log_writer;
pub mod metrics;
pub mod procmem;
pub mod prometheus;
pub mod shm;
pub mod status_page;
pub mod view;

use crate::config::{AccessLog, Observability};
use access_log::{AccessFormat, Outcome, Pending};
use log_writer::{LogSink, Target};
use metrics::{Layout, Region, ThreadMetrics};

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer").field("layout", &self.region.layout()).finish_non_exhaustive()
    }
}
use crate::http::request_id::{self, IdGenerator};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use view::{RouteLabel, View, WorkerRow};

/// Set (to anything) to record no metrics: only `benches/observe.sh` does,
/// to measure what recording costs. Not a setting.
pub const NO_METRICS_ENV: &str = "PYRS_INTERNAL_BENCH_NO_METRICS";

/// Whether this process serves: starting, serving, or draining after SIGTERM.
#[derive(Debug, Default)]
pub struct Health {
    state: AtomicU8,
}

const STARTING: u8 = 0;
const SERVING: u8 = 1;
const DRAINING: u8 = 2;

impl Health {
    pub fn serving(&self) {
        let _ = self.state.compare_exchange(STARTING, SERVING, Ordering::AcqRel, Ordering::Relaxed);
    }
    pub fn draining(&self) {
        self.state.store(DRAINING, Ordering::Release);
    }
    pub fn ready(&self) -> bool {
        self.state.load(Ordering::Acquire) == SERVING
    }
    pub fn state_name(&self) -> &'static str {
        match self.state.load(Ordering::Acquire) {
            STARTING => "starting",
            SERVING => "serving",
            _ => "draining",
        }
    }
}

/// The layout of a project's metrics: rows for the acceptor and `threads`
/// more threads.
pub fn layout_for(threads: usize, routes: usize) -> Layout {
    Layout { threads: threads + 1, routes }
}

/// The layout of a project's metrics: the acceptor, the pool threads and
/// the batch threads (`server::batch`) each have a row.
pub fn layout_of(cfg: &crate::config::Config) -> Layout {
    layout_for(cfg.thread_count + cfg.batch_threads(), cfg.modules.len())
}

/// What one serving process shares with its threads.
pub struct Observer {
    pub region: Region,
    pub labels: Vec<RouteLabel>,
    access: Option<(AccessFormat, Arc<LogSink>)>,
    pub health: Arc<Health>,
    pub health_path: Option<String>,
    seed: u64,
    threads: usize,
}

impl Observer {
    /// Starts the access-log writer (when configured) and routes SIGUSR1 to
    /// its reopen flag. `region` holds this process's metrics.
    pub fn new(
        settings: &Observability,
        routes: &[crate::config::RouteSpec],
        threads: usize,
        region: Region,
        health: Arc<Health>,
    ) -> Result<Observer, String> {
        let reopen = Arc::new(AtomicBool::new(false));
        // Also keeps SIGUSR1 (logrotate's signal) from killing a process without an access log.
        signal_hook::flag::register(libc::SIGUSR1, reopen.clone())
            .map_err(|e| format!("cannot install the SIGUSR1 handler: {e}"))?;
        let target = match &settings.access_log {
            AccessLog::Off => None,
            AccessLog::Stderr => Some(Target::Stderr),
            AccessLog::File(path) => Some(Target::File(path.clone())),
        };
        let access = match target {
            Some(target) => {
                let format = AccessFormat::parse(&settings.access_log_format)?;
                let sink = LogSink::start(&target, reopen, region.clone())?;
                Some((format, sink))
            }
            None => None,
        };
        Ok(Observer {
            region,
            labels: RouteLabel::for_routes(routes),
            access,
            health,
            health_path: settings.health_path.clone(),
            seed: request_id::process_seed(),
            threads,
        })
    }

    /// Metrics only (no access log, no SIGUSR1 handler), for servers built in
    /// code (the native app, tests): routes are labelled by their index.
    pub fn plain(threads: usize, routes: usize) -> Observer {
        let mut labels: Vec<RouteLabel> = (0..routes)
            .map(|i| RouteLabel { route: format!("#{i}"), handler: String::new(), batched: false })
            .collect();
        labels.push(RouteLabel { route: "unmatched".into(), handler: String::new(), batched: false });
        Observer {
            region: Region::heap(layout_for(threads, routes)),
            labels,
            access: None,
            health: Arc::new(Health::default()),
            health_path: None,
            seed: request_id::process_seed(),
            threads,
        }
    }

    /// The part one thread uses: row 0 is the acceptor's, row `i + 1` pool thread `i`'s.
    pub fn thread(&self, row: usize) -> ThreadObserver {
        context::set_region(self.region.clone());
        let mut metrics = self.region.thread(row);
        if std::env::var_os(NO_METRICS_ENV).is_some() {
            metrics.disable();
        }
        ThreadObserver {
            metrics,
            ids: IdGenerator::new(self.seed, row, self.threads + 1),
            access: self.access.clone(),
            pending: Pending::default(),
            lines: Vec::new(),
            oldest: None,
        }
    }

    /// Writes what the access log still holds (after the threads stopped).
    pub fn finish(&self) {
        if let Some((_, sink)) = &self.access {
            sink.close();
        }
    }

    pub fn route_label(&self, route: usize) -> Option<&str> {
        self.labels.get(route).map(|l| l.route.as_str())
    }
}

/// One pool thread's metrics writer, id generator and access-log buffer.
pub struct ThreadObserver {
    pub metrics: ThreadMetrics,
    pub ids: IdGenerator,
    access: Option<(AccessFormat, Arc<LogSink>)>,
    pending: Pending,
    lines: Vec<u8>,
    /// When the oldest line not yet handed over was written.
    oldest: Option<std::time::Instant>,
}

/// Lines are handed to the writer once they are this old (or `log_writer::FLUSH_AT` bytes).
const HAND_OVER_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

impl ThreadObserver {
    pub fn logging(&self) -> bool {
        self.access.is_some()
    }

    /// Renders the request side of an access-log line (before the handler runs).
    pub fn begin_line(&mut self, head: Option<&crate::http::RequestHead>, remote: crate::http::Peer) {
        if let Some((fmt, _)) = &self.access {
            fmt.begin(&mut self.pending, head, remote);
        }
    }

    /// Completes the line begun last.
    pub fn finish_line(&mut self, outcome: &Outcome<'_>) {
        if let Some((fmt, sink)) = &self.access {
            fmt.finish(&self.pending, &mut self.lines, outcome);
            if self.oldest.is_none() {
                self.oldest = Some(std::time::Instant::now());
            }
            if self.lines.len() >= log_writer::FLUSH_AT {
                sink.submit(&mut self.lines);
                self.oldest = None;
            }
        }
    }

    /// The request side of the line begun last, to be finished later
    /// ([`ThreadObserver::finish_line_from`]; a batched request's answer
    /// comes back after other requests were logged).
    pub fn take_line(&mut self) -> Pending {
        std::mem::take(&mut self.pending)
    }

    /// Completes a line taken with [`ThreadObserver::take_line`].
    pub fn finish_line_from(&mut self, pending: &Pending, outcome: &Outcome<'_>) {
        if let Some((fmt, sink)) = &self.access {
            fmt.finish(pending, &mut self.lines, outcome);
            if self.oldest.is_none() {
                self.oldest = Some(std::time::Instant::now());
            }
            if self.lines.len() >= log_writer::FLUSH_AT {
                sink.submit(&mut self.lines);
                self.oldest = None;
            }
        }
    }

    /// Called once per loop turn: hands the buffered lines to the writer
    /// when the oldest is `HAND_OVER_AFTER` (100 ms) old (one hand-over, one write,
    /// per batch of turns: waking the writer every turn would cost more than
    /// formatting the lines).
    pub fn flush(&mut self) {
        if self.oldest.is_some_and(|t| t.elapsed() >= HAND_OVER_AFTER) {
            self.flush_now();
        }
    }

    /// Hands the buffered lines to the writer now (at exit).
    pub fn flush_now(&mut self) {
        if let Some((_, sink)) = &self.access {
            sink.submit(&mut self.lines);
        }
        self.oldest = None;
    }
}

/// The single process as the admin listener sees it.
pub struct LocalSource {
    pub region: Region,
    pub labels: Vec<RouteLabel>,
    pub health: Arc<Health>,
}

impl view::Source for LocalSource {
    fn ready(&self) -> bool {
        self.health.ready()
    }

    fn view(&self) -> View {
        let totals = self.region.totals();
        let pid = std::process::id();
        let (rss, uss) = procmem::memory(pid);
        let row = WorkerRow {
            pid,
            slot: None,
            state: self.health.state_name(),
            started_ms: self.region.started_ms(),
            requests: totals.global(metrics::T_REQUESTS),
            in_flight: totals.global(metrics::T_IN_FLIGHT),
            rss,
            uss,
            restarts: 0,
        };
        View {
            totals,
            labels: self.labels.clone(),
            workers: vec![row],
            errors: self.region.errors(),
            ready: self.health.ready(),
            worker_mode: false,
            worker_starts: 0,
            worker_exits: Vec::new(),
        }
    }
}
