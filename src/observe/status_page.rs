//! The status page at the admin listener's `/`: one self-contained HTML
//! page (inline style, no scripts or external assets) that reloads itself
//! every 2 seconds (`/?refresh=N`: every N seconds, 0 never). Everything
//! shown is HTML-escaped.

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

/// Seconds between reloads when the query does not say.
pub const DEFAULT_REFRESH: u32 = 2;

/// The reload interval a query string asks for (`refresh=N`, N in 0..=3600;
/// 0: the page never reloads itself); [`DEFAULT_REFRESH`] otherwise.
pub fn refresh_of(query: &str) -> u32 {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("refresh="))
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|&n| n <= 3600)
        .unwrap_or(DEFAULT_REFRESH)
}

pub fn render(v: &View, refresh: u32) -> String {
    let now = super::metrics::now_ms();
    let meta_refresh =
        if refresh == 0 { String::new() } else { format!("<meta http-equiv=\"refresh\" content=\"{refresh}\">") };
    let mut o = String::with_capacity(16 * 1024);
    let ready = if v.ready { "ready" } else { "not ready" };
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">{meta_refresh}\
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_sets_the_reload_interval_and_zero_turns_it_off() {
        assert_eq!(refresh_of(""), DEFAULT_REFRESH);
        assert_eq!(refresh_of("refresh=0"), 0);
        assert_eq!(refresh_of("a=1&refresh=10"), 10);
        assert_eq!(refresh_of("refresh=-1"), DEFAULT_REFRESH);
        assert_eq!(refresh_of("refresh=99999"), DEFAULT_REFRESH);
        use super::super::view::Source;
        let source = crate::observe::LocalSource {
            region: super::super::metrics::Region::heap(super::super::metrics::Layout { threads: 1, routes: 1 }),
            labels: Vec::new(),
            health: Default::default(),
        };
        let v = source.view();
        assert!(render(&v, 2).contains("<meta http-equiv=\"refresh\" content=\"2\">"));
        assert!(!render(&v, 0).contains("http-equiv=\"refresh\""));
    }
}
