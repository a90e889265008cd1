//! Serving a file's bytes over HTTP, without touching the file: validators
//! (`ETag`, `Last-Modified`), conditional requests (304), single byte
//! ranges (206/416), `Content-Disposition`, and content types from file
//! name extensions. The caller opens and stats the file, then writes the
//! headers [`plan`] chose and queues the byte range with sendfile(2).

use super::date::format_imf_fixdate;

/// What is known about the file being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    pub len: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
    /// Nanoseconds part of the modification time (makes the ETag change on
    /// rewrites within the same second).
    pub mtime_nsec: u32,
}

impl FileMeta {
    /// A strong validator from the size and modification time.
    pub fn etag(&self) -> String {
        format!("\"{:x}-{:x}-{:x}\"", self.mtime, self.mtime_nsec, self.len)
    }

    pub fn last_modified(&self) -> [u8; 29] {
        format_imf_fixdate(self.mtime)
    }
}

/// The request headers that decide what is sent.
#[derive(Debug, Default, Clone)]
pub struct Conditions<'a> {
    /// Every `If-None-Match` field line's list, joined (a list may be split
    /// over several lines, RFC 9110 section 5.3).
    pub if_none_match: Option<std::borrow::Cow<'a, [u8]>>,
    pub if_modified_since: Option<&'a [u8]>,
    pub range: Option<&'a [u8]>,
    pub if_range: Option<&'a [u8]>,
}

/// What to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// 200 with the whole file.
    Full,
    /// 206 with bytes `start..start + len` of the file.
    Partial { start: u64, len: u64 },
    /// 304: the client's copy is current.
    NotModified,
    /// 416: the range lies outside the file.
    Unsatisfiable,
}

/// Decides the answer to a GET or HEAD of a file (RFC 9110 sections 13 and 14).
pub fn plan(meta: &FileMeta, c: &Conditions<'_>) -> Plan {
    let etag = meta.etag();
    if let Some(inm) = &c.if_none_match {
        if etag_list_matches(inm, &etag) {
            return Plan::NotModified;
        }
    } else if let Some(ims) = c.if_modified_since.and_then(parse_http_date) {
        if meta.mtime <= ims {
            return Plan::NotModified;
        }
    }
    let Some(range) = c.range else {
        return Plan::Full;
    };
    if let Some(if_range) = c.if_range {
        // A range only applies to the representation the client has.
        let current = if if_range.starts_with(b"\"") {
            if_range == etag.as_bytes()
        } else {
            parse_http_date(if_range) == Some(meta.mtime)
        };
        if !current {
            return Plan::Full;
        }
    }
    match parse_range(range, meta.len) {
        RangeSpec::Ignore => Plan::Full,
        RangeSpec::Unsatisfiable => Plan::Unsatisfiable,
        RangeSpec::Bytes(start, len) => Plan::Partial { start, len },
    }
}

/// `If-None-Match`: `*` or a list of entity tags, compared weakly.
fn etag_list_matches(header: &[u8], etag: &str) -> bool {
    let bare = etag.as_bytes();
    header.split(|&b| b == b',').map(<[u8]>::trim_ascii).any(|t| {
        let t = t.strip_prefix(b"W/").unwrap_or(t);
        t == b"*" || t == bare
    })
}

#[derive(Debug, PartialEq, Eq)]
enum RangeSpec {
    /// Absent, malformed, several ranges or another unit: send everything.
    Ignore,
    Unsatisfiable,
    Bytes(u64, u64),
}

/// One `bytes=` range: `a-b`, `a-` or `-n`.
fn parse_range(header: &[u8], size: u64) -> RangeSpec {
    let Some(spec) = header.trim_ascii().strip_prefix(b"bytes=") else {
        return RangeSpec::Ignore;
    };
    if spec.contains(&b',') {
        return RangeSpec::Ignore;
    }
    let Some(dash) = spec.iter().position(|&b| b == b'-') else {
        return RangeSpec::Ignore;
    };
    let (first, last) = (spec[..dash].trim_ascii(), spec[dash + 1..].trim_ascii());
    // Positions past u64 saturate: still larger than any file (RFC 9110
    // section 14.1.1 puts no bound on their digits).
    let num = |s: &[u8]| -> Option<u64> {
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(s.iter().fold(0u64, |n, d| n.saturating_mul(10).saturating_add(u64::from(d - b'0'))))
    };
    match (first.is_empty(), last.is_empty()) {
        (true, true) => RangeSpec::Ignore,
        (true, false) => {
            // The last n bytes.
            let Some(n) = num(last) else { return RangeSpec::Ignore };
            if n == 0 || size == 0 {
                return RangeSpec::Unsatisfiable;
            }
            let n = n.min(size);
            RangeSpec::Bytes(size - n, n)
        }
        (false, _) => {
            let Some(start) = num(first) else { return RangeSpec::Ignore };
            let end = if last.is_empty() {
                u64::MAX
            } else {
                match num(last) {
                    Some(e) if e >= start => e,
                    _ => return RangeSpec::Ignore,
                }
            };
            if start >= size {
                return RangeSpec::Unsatisfiable;
            }
            let end = end.min(size - 1);
            RangeSpec::Bytes(start, end - start + 1)
        }
    }
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`); the obsolete
/// formats are not accepted (the condition is then ignored).
pub fn parse_http_date(s: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(s).ok()?.trim();
    let mut parts = s.split(' ');
    let _weekday = parts.next()?.strip_suffix(',')?;
    let day: u64 = parts.next()?.parse().ok()?;
    let month = parts.next()?;
    let year: u64 = parts.next()?.parse().ok()?;
    let time = parts.next()?;
    if parts.next()? != "GMT" || parts.next().is_some() {
        return None;
    }
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.iter().position(|m| *m == month)? as u64 + 1;
    let mut hms = time.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if !(1970..=9999).contains(&year) || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, mo) = if month <= 2 { (year - 1, month + 9) } else { (year, month - 3) };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

/// `Content-Disposition: attachment` with `filename` as given: an ASCII
/// fallback (quotes, backslashes and control characters replaced) and the
/// exact name in RFC 8187 `filename*`.
pub fn content_disposition(filename: &str) -> String {
    let ascii: String = filename
        .chars()
        .map(|c| if c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '\\' { c } else { '_' })
        .collect();
    let mut encoded = String::new();
    for b in filename.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// The content type for a file name's extension; `application/octet-stream` when unknown.
pub fn content_type_for(name: &str) -> &'static str {
    let ext = match name.rsplit_once('.') {
        Some((_, ext)) if !ext.contains('/') => ext.to_ascii_lowercase(),
        _ => return "application/octet-stream",
    };
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" | "text" | "log" | "md" => "text/plain; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: FileMeta = FileMeta { len: 1000, mtime: 784_111_777, mtime_nsec: 5 };

    fn with(range: &str) -> Plan {
        plan(&META, &Conditions { range: Some(range.as_bytes()), ..Default::default() })
    }

    #[test]
    fn ranges() {
        assert_eq!(with("bytes=0-99"), Plan::Partial { start: 0, len: 100 });
        assert_eq!(with("bytes=990-"), Plan::Partial { start: 990, len: 10 });
        assert_eq!(with("bytes=-10"), Plan::Partial { start: 990, len: 10 });
        assert_eq!(with("bytes=-5000"), Plan::Partial { start: 0, len: 1000 });
        assert_eq!(with("bytes=500-99999"), Plan::Partial { start: 500, len: 500 });
        assert_eq!(with("bytes=1000-"), Plan::Unsatisfiable);
        assert_eq!(with("bytes=-0"), Plan::Unsatisfiable);
        for ignored in ["bytes=0-1,5-6", "items=0-1", "bytes=5-1", "bytes=x-", "bytes=-", "bytes=1-x", "bytes=+1-2"] {
            assert_eq!(with(ignored), Plan::Full, "{ignored}");
        }
        assert_eq!(with("bytes=99999999999999999999-"), Plan::Unsatisfiable);
        assert_eq!(with("bytes=18446744073709551615-"), Plan::Unsatisfiable);
        assert_eq!(with("bytes=990-99999999999999999999"), Plan::Partial { start: 990, len: 10 });
        assert_eq!(with("bytes=-99999999999999999999"), Plan::Partial { start: 0, len: 1000 });
        assert_eq!(with("bytes=99999999999999999999-99999999999999999998"), Plan::Unsatisfiable);
    }

    #[test]
    fn conditionals() {
        let etag = META.etag();
        let c = Conditions { if_none_match: Some(etag.as_bytes().into()), ..Default::default() };
        assert_eq!(plan(&META, &c), Plan::NotModified);
        let list = format!("\"other\", W/{etag}");
        let c = Conditions { if_none_match: Some(list.as_bytes().into()), ..Default::default() };
        assert_eq!(plan(&META, &c), Plan::NotModified);
        let c = Conditions { if_none_match: Some(b"\"other\"".as_slice().into()), ..Default::default() };
        assert_eq!(plan(&META, &c), Plan::Full);
        let lm = META.last_modified();
        let c = Conditions { if_modified_since: Some(&lm), ..Default::default() };
        assert_eq!(plan(&META, &c), Plan::NotModified);
        let c = Conditions { if_modified_since: Some(b"Sun, 06 Nov 1994 08:49:36 GMT"), ..Default::default() };
        assert_eq!(plan(&META, &c), Plan::Full);
        // If-None-Match wins over If-Modified-Since.
        let c = Conditions {
            if_none_match: Some(b"\"x\"".as_slice().into()),
            if_modified_since: Some(&lm),
            ..Default::default()
        };
        assert_eq!(plan(&META, &c), Plan::Full);
        // If-Range with a stale validator: the whole file.
        let c = Conditions { range: Some(b"bytes=0-0"), if_range: Some(b"\"old\""), ..Default::default() };
        assert_eq!(plan(&META, &c), Plan::Full);
        let c = Conditions { range: Some(b"bytes=0-0"), if_range: Some(etag.as_bytes()), ..Default::default() };
        assert_eq!(plan(&META, &c), Plan::Partial { start: 0, len: 1 });
    }

    #[test]
    fn dates_round_trip() {
        for secs in [0, 784_111_777, 951_782_400, 1_700_000_000, 4_102_444_799] {
            assert_eq!(parse_http_date(&format_imf_fixdate(secs)), Some(secs));
        }
        assert_eq!(parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(parse_http_date(b"Sun, 06 Nov 1994 08:49:37 UTC"), None);
    }

    #[test]
    fn dispositions_and_types() {
        assert_eq!(content_disposition("a b.txt"), "attachment; filename=\"a b.txt\"; filename*=UTF-8''a%20b.txt");
        assert_eq!(
            content_disposition("ré\"\r\n.csv"),
            "attachment; filename=\"r____.csv\"; filename*=UTF-8''r%C3%A9%22%0D%0A.csv"
        );
        assert_eq!(content_type_for("x/index.HTML"), "text/html; charset=utf-8");
        assert_eq!(content_type_for("noext"), "application/octet-stream");
        assert_eq!(content_type_for("model.bin"), "application/octet-stream");
    }
}
