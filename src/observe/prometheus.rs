//! `/metrics`: the figures in the Prometheus text exposition format
//! (version 0.0.4). Names carry the `pyrs_` prefix, counters end in
//! `_total`, durations are in seconds and sizes in bytes.

use super::metrics::*;
use super::view::View;
use std::fmt::Write;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A label value with `\`, `"` and newlines escaped.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn seconds(us: u64) -> String {
    format!("{}", us as f64 / 1e6)
}

pub fn render(v: &View) -> String {
    let t = &v.totals;
    let mut o = String::with_capacity(8192);
    let routes: Vec<(usize, String)> = v
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i, format!("route=\"{}\",handler=\"{}\"", esc(&l.route), esc(&l.handler))))
        .collect();

    head(&mut o, "pyrs_requests_total", "counter", "Requests answered, by route and status class.");
    for (i, l) in &routes {
        for (c, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
            let _ = writeln!(o, "pyrs_requests_total{{{l},status=\"{class}\"}} {}", t.route(*i, R_CLASS + c));
        }
    }
    head(
        &mut o,
        "pyrs_request_duration_seconds",
        "histogram",
        "Time from a complete request to its response, by route.",
    );
    for (i, l) in &routes {
        let mut cum = 0;
        for b in 0..N_BUCKETS {
            cum += t.route(*i, R_BUCKETS + b);
            let le = BUCKETS_US.get(b).map(|&us| seconds(us)).unwrap_or_else(|| "+Inf".into());
            let _ = writeln!(o, "pyrs_request_duration_seconds_bucket{{{l},le=\"{le}\"}} {cum}");
        }
        let _ = writeln!(o, "pyrs_request_duration_seconds_sum{{{l}}} {}", seconds(t.route(*i, R_SUM_US)));
        let _ = writeln!(o, "pyrs_request_duration_seconds_count{{{l}}} {cum}");
    }
    head(
        &mut o,
        "pyrs_handler_exceptions_total",
        "counter",
        "Handler calls that raised or returned a value pyrs cannot send.",
    );
    for (i, l) in &routes {
        if *i + 1 < routes.len() {
            let _ = writeln!(o, "pyrs_handler_exceptions_total{{{l}}} {}", t.route(*i, R_EXCEPTIONS));
        }
    }
    if v.labels.iter().any(|l| l.batched) {
        head(&mut o, "pyrs_batch_size", "histogram", "Requests per handler call of a batched route.");
        for (i, l) in &routes {
            if !v.labels[*i].batched {
                continue;
            }
            let mut cum = 0;
            for (b, le) in BATCH_BUCKETS.iter().enumerate() {
                cum += t.route(*i, R_BATCH_BUCKETS + b);
                let _ = writeln!(o, "pyrs_batch_size_bucket{{{l},le=\"{le}\"}} {cum}");
            }
            let _ = writeln!(o, "pyrs_batch_size_bucket{{{l},le=\"+Inf\"}} {cum}");
            let _ = writeln!(o, "pyrs_batch_size_sum{{{l}}} {}", t.route(*i, R_BATCHED));
            let _ = writeln!(o, "pyrs_batch_size_count{{{l}}} {cum}");
        }
    }
    head(&mut o, "pyrs_protocol_errors_total", "counter", "Requests refused by the HTTP core, by status.");
    for (i, s) in PROTOCOL_STATUSES.iter().enumerate() {
        let _ = writeln!(o, "pyrs_protocol_errors_total{{status=\"{s}\"}} {}", t.process(i));
    }
    let simple: [(&str, &str, &str, String); 8] = [
        (
            "pyrs_requests_in_flight",
            "gauge",
            "Requests received and not yet answered.",
            t.global(T_IN_FLIGHT).to_string(),
        ),
        ("pyrs_open_connections", "gauge", "Open client connections.", t.global(T_CONNECTIONS).to_string()),
        ("pyrs_received_bytes_total", "counter", "Bytes read from clients.", t.global(T_BYTES_IN).to_string()),
        ("pyrs_sent_bytes_total", "counter", "Response bytes written to clients.", t.global(T_BYTES_OUT).to_string()),
        (
            "pyrs_abandoned_responses_total",
            "counter",
            "Responses still being produced when their client went away (coroutine cancelled, stream closed).",
            t.global(T_ABANDONED).to_string(),
        ),
        (
            "pyrs_gil_wait_seconds_total",
            "counter",
            "Time pool threads waited to take the GIL.",
            seconds(t.global(T_GIL_WAIT_US)),
        ),
        (
            "pyrs_access_log_dropped_lines_total",
            "counter",
            "Access-log lines dropped because the writer fell behind.",
            t.process(P_ACCESS_LOG_DROPPED).to_string(),
        ),
        (
            "pyrs_log_dropped_lines_total",
            "counter",
            "Log lines dropped because stderr did not keep up.",
            t.process(P_LOG_DROPPED).to_string(),
        ),
    ];
    for (name, kind, help, value) in simple {
        head(&mut o, name, kind, help);
        let _ = writeln!(o, "{name} {value}");
    }
    head(&mut o, "pyrs_workers_up", "gauge", "Worker processes serving (1 for a single process).");
    let up = v.workers.iter().filter(|w| w.state == "serving").count();
    let _ = writeln!(o, "pyrs_workers_up {up}");
    head(&mut o, "pyrs_worker_starts_total", "counter", "Worker processes started.");
    let _ = writeln!(o, "pyrs_worker_starts_total {}", v.worker_starts);
    head(&mut o, "pyrs_worker_exits_total", "counter", "Worker processes that exited, by reason.");
    for (reason, n) in &v.worker_exits {
        let _ = writeln!(o, "pyrs_worker_exits_total{{reason=\"{reason}\"}} {n}");
    }
    head(&mut o, "pyrs_worker_resident_memory_bytes", "gauge", "Resident set size of each worker process.");
    for w in &v.workers {
        if let Some(rss) = w.rss {
            let _ =
                writeln!(o, "pyrs_worker_resident_memory_bytes{{pid=\"{}\",slot=\"{}\"}} {rss}", w.pid, slot(w.slot));
        }
    }
    head(&mut o, "pyrs_worker_private_memory_bytes", "gauge", "Private memory (USS) of each worker process.");
    for w in &v.workers {
        if let Some(uss) = w.uss {
            let _ =
                writeln!(o, "pyrs_worker_private_memory_bytes{{pid=\"{}\",slot=\"{}\"}} {uss}", w.pid, slot(w.slot));
        }
    }
    o
}

fn slot(s: Option<usize>) -> String {
    s.map(|s| s.to_string()).unwrap_or_default()
}
