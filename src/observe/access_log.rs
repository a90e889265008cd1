//! Access-log lines: rendering the fields of the format (`access_log_format`,
//! compiled once by `config::access_format`) without allocation.
//!
//! A line is rendered in two steps because the request head is handed to the
//! handler (which may keep it): [`AccessFormat::begin`] renders the fields
//! taken from the request into a per-thread [`Pending`] before the call, and
//! [`AccessFormat::finish`] writes the whole line, adding status, size,
//! duration and the rest, after it. Bytes a client sent are escaped (`\xHH`
//! in text formats, `\u00HH` in JSON): a control character never reaches the log raw.

use crate::config::access_format::{self, Field, Template};
use crate::http::encode::push_decimal;
use crate::http::{Peer, RequestHead};
use std::io::Write;

/// A compiled `access_log_format` (the syntax is `config::access_format`'s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessFormat {
    fields: Vec<Field>,
    json: bool,
}

/// Taken from the request (rendered before the handler runs).
fn of_request(f: &Field) -> bool {
    matches!(
        f,
        Field::RemoteAddr
            | Field::RemotePort
            | Field::Method
            | Field::Path
            | Field::Query
            | Field::Target
            | Field::Protocol
            | Field::RequestLine
            | Field::Header(_)
    )
}

impl AccessFormat {
    /// `combined` (the default), `json`, or a template with `{field}`s.
    pub fn parse(spec: &str) -> Result<AccessFormat, String> {
        let Template { fields, json } = access_format::parse(spec)?;
        Ok(AccessFormat { fields, json })
    }

    /// Renders the request's fields into `p` (before the handler runs).
    pub fn begin(&self, p: &mut Pending, head: Option<&RequestHead>, remote: Peer) {
        p.buf.clear();
        p.spans.clear();
        for f in &self.fields {
            let start = p.buf.len();
            if of_request(f) {
                self.request_field(&mut p.buf, f, head, remote);
            }
            p.spans.push((start as u32, p.buf.len() as u32));
        }
    }

    fn request_field(&self, out: &mut Vec<u8>, f: &Field, head: Option<&RequestHead>, remote: Peer) {
        let text = |out: &mut Vec<u8>, v: &[u8]| escape(out, v, self.json);
        match (f, head) {
            (Field::RemoteAddr, _) => match remote {
                // Without the formatting machinery: this runs for every line.
                Peer::Tcp(a) => match a.ip() {
                    std::net::IpAddr::V4(v4) => {
                        for (i, octet) in v4.octets().into_iter().enumerate() {
                            if i > 0 {
                                out.push(b'.');
                            }
                            push_decimal(out, u64::from(octet));
                        }
                    }
                    ip => {
                        let _ = write!(out, "{ip}");
                    }
                },
                Peer::Unix => out.extend_from_slice(b"unix"),
            },
            (Field::RemotePort, _) => {
                push_decimal(out, if let Peer::Tcp(a) = remote { u64::from(a.port()) } else { 0 })
            }
            (Field::Method, Some(h)) => text(out, h.method().as_bytes()),
            (Field::Path, Some(h)) => text(out, h.path().as_bytes()),
            (Field::Query, Some(h)) => text(out, h.query().as_bytes()),
            (Field::Target, Some(h)) => text(out, h.target().as_bytes()),
            (Field::Protocol, Some(h)) => out.extend_from_slice(h.version.as_str().as_bytes()),
            (Field::RequestLine, Some(h)) => {
                text(out, h.method().as_bytes());
                out.push(b' ');
                text(out, h.target().as_bytes());
                out.push(b' ');
                out.extend_from_slice(h.version.as_str().as_bytes());
            }
            (Field::Header(name), Some(h)) => match h.header(name) {
                Some(v) => text(out, v),
                None if !self.json => out.push(b'-'),
                None => {}
            },
            (Field::Protocol | Field::RequestLine | Field::Header(_), None) if !self.json => out.push(b'-'),
            (Field::Method | Field::Path | Field::Target, None) if !self.json => out.push(b'-'),
            _ => {}
        }
    }

    /// Appends the whole line (with `\n`) to `out`.
    pub fn finish(&self, p: &Pending, out: &mut Vec<u8>, r: &Outcome<'_>) {
        for (f, &(a, b)) in self.fields.iter().zip(&p.spans) {
            if of_request(f) {
                out.extend_from_slice(&p.buf[a as usize..b as usize]);
                continue;
            }
            match f {
                Field::Lit(l) => out.extend_from_slice(l),
                Field::Status => push_decimal(out, u64::from(r.status)),
                Field::Bytes => match r.bytes {
                    Some(n) => push_decimal(out, n),
                    None if self.json => out.extend_from_slice(b"null"),
                    None => out.push(b'-'),
                },
                Field::DurationUs => push_decimal(out, r.duration_us),
                Field::Pid => push_decimal(out, u64::from(std::process::id())),
                Field::RequestId => escape(out, r.request_id.as_bytes(), self.json),
                Field::Route => match r.route {
                    Some(route) => escape(out, route.as_bytes(), self.json),
                    None if self.json => {}
                    None => out.push(b'-'),
                },
                Field::Time => clf_time(out, r.date),
                Field::TimeIso => iso_time(out, r.date),
                _ => {}
            }
        }
        out.push(b'\n');
    }
}

/// Request fields rendered before the handler ran; reused per thread.
#[derive(Default, Clone)]
pub struct Pending {
    buf: Vec<u8>,
    spans: Vec<(u32, u32)>,
}

/// What the response side of a line needs.
pub struct Outcome<'a> {
    pub status: u16,
    /// Body bytes; None for a streamed body of unknown length.
    pub bytes: Option<u64>,
    pub duration_us: u64,
    pub request_id: &'a str,
    pub route: Option<&'a str>,
    /// The cached IMF-fixdate `Date` value: `Sun, 06 Nov 1994 08:49:37 GMT`.
    pub date: &'a [u8],
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Client bytes: printable ASCII as is; quotes, backslashes, control bytes
/// and bytes >= 0x80 escaped.
pub fn escape(out: &mut Vec<u8>, v: &[u8], json: bool) {
    if v.iter().all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') {
        out.extend_from_slice(v);
        return;
    }
    for &b in v {
        match b {
            b'"' | b'\\' if json => out.extend_from_slice(&[b'\\', b]),
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b'x', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]),
            0x20..=0x7e => out.push(b),
            _ if json => {
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]])
            }
            _ => out.extend_from_slice(&[b'\\', b'x', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]),
        }
    }
}

/// `06/Nov/1994:08:49:37 +0000` from an IMF-fixdate.
fn clf_time(out: &mut Vec<u8>, d: &[u8]) {
    if d.len() < 25 {
        return;
    }
    out.extend_from_slice(&d[5..7]);
    out.push(b'/');
    out.extend_from_slice(&d[8..11]);
    out.push(b'/');
    out.extend_from_slice(&d[12..16]);
    out.push(b':');
    out.extend_from_slice(&d[17..25]);
    out.extend_from_slice(b" +0000");
}

/// `1994-11-06T08:49:37Z` from an IMF-fixdate.
fn iso_time(out: &mut Vec<u8>, d: &[u8]) {
    const MONTHS: [&[u8]; 12] =
        [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
    if d.len() < 25 {
        return;
    }
    let m = MONTHS.iter().position(|m| *m == &d[8..11]).unwrap_or(0) + 1;
    out.extend_from_slice(&d[12..16]);
    out.extend_from_slice(&[b'-', b'0' + (m / 10) as u8, b'0' + (m % 10) as u8, b'-']);
    out.extend_from_slice(&d[5..7]);
    out.push(b'T');
    out.extend_from_slice(&d[17..25]);
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &[u8] = b"Tue, 01 Dec 2026 16:03:29 GMT";

    fn head(raw: &[u8]) -> RequestHead {
        crate::http::head::parse(raw, &Default::default()).unwrap().unwrap().0
    }

    fn line(fmt: &str, h: Option<&RequestHead>, route: Option<&str>) -> String {
        let f = AccessFormat::parse(fmt).unwrap();
        let mut p = Pending::default();
        f.begin(&mut p, h, Peer::Tcp("127.0.0.1:5555".parse().unwrap()));
        let mut out = Vec::new();
        let o = Outcome { status: 200, bytes: Some(57), duration_us: 183, request_id: "abc", route, date: DATE };
        f.finish(&p, &mut out, &o);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn combined_line() {
        let h = head(b"GET /check?word=teh HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/8.5\r\n\r\n");
        assert_eq!(
            line("combined", Some(&h), Some("/check")),
            "127.0.0.1 - - [01/Dec/2026:16:03:29 +0000] \"GET /check?word=teh HTTP/1.1\" 200 57 \"-\" \"curl/8.5\" 183us rid=abc\n"
        );
        assert_eq!(
            line("combined", None, None),
            "127.0.0.1 - - [01/Dec/2026:16:03:29 +0000] \"-\" 200 57 \"-\" \"-\" 183us rid=abc\n"
        );
    }

    #[test]
    fn custom_fields_and_escaping() {
        let h = head(b"GET /a%20b?x=1 HTTP/1.0\r\nUser-Agent: evil\t\"\\ \xff\r\n\r\n");
        assert_eq!(
            line("{method} {path} {query} {status} {{x}} {header:user-agent} {route} {pid}", Some(&h), None),
            format!("GET /a%20b x=1 200 {{x}} evil\\x09\\x22\\x5c \\xff - {}\n", std::process::id())
        );
        assert!(AccessFormat::parse("{nope}").is_err());
    }

    #[test]
    fn json_line_parses() {
        let h = head(b"POST /x?q=\"1\" HTTP/1.1\r\nHost: h\r\nUser-Agent: a\t\xe9\r\n\r\n");
        let l = line("json", Some(&h), Some("/x"));
        let v: serde_json::Value = serde_json::from_str(l.trim_end()).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["query"], "q=\"1\"");
        assert_eq!(v["user_agent"], "a\t\u{e9}");
        assert_eq!(v["time"], "2026-12-01T16:03:29Z");
        assert_eq!(v["route"], "/x");
        assert_eq!(v["referer"], "");
        let l = line("json", None, None);
        let v: serde_json::Value = serde_json::from_str(l.trim_end()).unwrap();
        assert_eq!(v["method"], "");
    }
}
