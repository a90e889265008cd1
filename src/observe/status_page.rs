//! The status page at the admin listener's `/`: one self-contained HTML
//! page (inline style, no scripts or external assets) that reloads itself
//! every 2 seconds. Everything shown is HTML-escaped.

use super::view::View;
use std::fmt::Write;

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

fn mb(b: Option<u64>) -> String {
    b.map(|b| format!("{:.1} MB", b as f64 / 1048576.0)).unwrap_or_else(|| "-".into())
}

fn age(started_ms: u64, now_ms: u64) -> String {
    let s = now_ms.saturating_sub(started_ms) / 1000;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{:.1} h", s as f64 / 3600.0),
    }
}

fn latency(us: Option<f64>) -> String {
    match us {
        None => "-".into(),
        Some(us) if us < 1000.0 => format!("{us:.0} us"),
        Some(us) => format!("{:.1} ms", us / 1000.0),
    }
}

fn time_of(ms: u64) -> String {
    let date = crate::http::date::format_imf_fixdate(ms / 1000);
    String::from_utf8_lossy(&date[5..25]).into_owned()
}

pub fn render(v: &View) -> String {
    let now = super::metrics::now_ms();
    let mut o = String::with_capacity(16 * 1024);
    let ready = if v.ready { "ready" } else { "not ready" };
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"2\">\
<title>pyrs status</title><style>\
body{{font:14px system-ui,sans-serif;margin:1.5em;color:#222}}h1{{font-size:1.4em}}h2{{font-size:1.1em;margin-top:1.5em}}\
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:right}}\
th{{background:#f0f0f0}}td.l,th.l{{text-align:left}}pre{{background:#f7f7f7;padding:.5em;overflow:auto;max-height:18em}}\
.ok{{color:#070}}.bad{{color:#b00}}</style></head><body>\n\
<h1>pyrs {} <span class=\"{}\" id=\"readiness\">{ready}</span></h1>\n",
        env!("CARGO_PKG_VERSION"),
        if v.ready { "ok" } else { "bad" }
    );
    let _ = write!(
        o,
        "<h2>Workers</h2>\n<table id=\"workers\"><tr><th>pid</th><th>slot</th><th class=\"l\">state</th><th>age</th>\
<th>requests</th><th>in flight</th><th>RSS</th><th>USS</th><th>restarts</th></tr>\n"
    );
    for w in &v.workers {
        let slot = w.slot.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            o,
            "<tr class=\"worker\" data-pid=\"{}\"><td>{}</td><td>{slot}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td>\
<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            w.pid,
            w.pid,
            w.state,
            age(w.started_ms, now),
            w.requests,
            w.in_flight,
            mb(w.rss),
            mb(w.uss),
            w.restarts
        );
    }
    o.push_str("</table>\n");
    o.push_str(
        "<h2>Routes</h2>\n<table id=\"routes\"><tr><th class=\"l\">route</th><th class=\"l\">handler</th><th>requests</th>\
<th>errors (5xx)</th><th>p50</th><th>p99</th></tr>\n",
    );
    for (i, l) in v.labels.iter().enumerate() {
        let _ = writeln!(
            o,
            "<tr class=\"route\"><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&l.route),
            esc(&l.handler),
            v.totals.route_count(i),
            v.totals.route_errors(i),
            latency(v.totals.quantile_us(i, 0.5)),
            latency(v.totals.quantile_us(i, 0.99))
        );
    }
    o.push_str("</table>\n<h2>Last handler errors</h2>\n");
    if v.errors.is_empty() {
        o.push_str("<p id=\"no-errors\">none</p>\n");
    }
    for e in v.errors.iter().rev() {
        let route = v.labels.get(e.route).map(|l| l.route.as_str()).unwrap_or("?");
        let _ = writeln!(
            o,
            "<div class=\"error\"><b>{}</b> pid {} route <code>{}</code> request id <code>{}</code><pre>{}</pre></div>",
            time_of(e.at_ms),
            e.pid,
            esc(route),
            esc(&e.request_id),
            esc(&e.text)
        );
    }
    o.push_str("</body></html>\n");
    o
}
