//! The request path as routing compares it (RFC 3986 section 6.2.2):
//! segments are split on the `/` actually sent, each segment is
//! percent-decoded, and dot segments (`.`, `..`, also as `%2E`) are removed.
//! An encoded slash (`%2F`) and an encoded `%` (`%25`) stay escaped, so an
//! encoded slash never splits or joins segments; path parameters are decoded
//! the same way, so `{name}` never receives a `/` (nor a `..` segment).

use std::borrow::Cow;

/// One decoded path segment: the bytes sent and the form routes compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment<'a> {
    pub raw: &'a str,
    pub decoded: Cow<'a, str>,
}

/// True when routing can use `path` as sent: nothing to decode, no dot segment.
pub fn is_plain(path: &str) -> bool {
    !path.contains('%') && (!path.contains("/.") || !path.split('/').any(|s| s == "." || s == ".."))
}

/// Decodes `%XX` escapes except `%2F` and `%25` (kept, in upper case); a
/// segment whose bytes would not be UTF-8 stays as sent.
pub fn decode_segment(seg: &str) -> Cow<'_, str> {
    if !seg.contains('%') {
        return Cow::Borrowed(seg);
    }
    let b = seg.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let (Some(h), Some(l)) = (b.get(i + 1).and_then(hex), b.get(i + 2).and_then(hex)) {
                let byte = h * 16 + l;
                if byte == b'/' || byte == b'%' {
                    out.extend_from_slice(if byte == b'/' { b"%2F" } else { b"%25" });
                } else {
                    out.push(byte);
                }
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(_) => Cow::Borrowed(seg),
    }
}

fn hex(c: &u8) -> Option<u8> {
    (*c as char).to_digit(16).map(|d| d as u8)
}

/// The segments of `path` (which starts with `/`) after decoding and
/// dot-segment removal. A path ending in a dot segment keeps its trailing
/// slash (`/a/b/..` is `/a/`), as RFC 3986 section 5.2.4 does.
pub fn segments(path: &str) -> Vec<Segment<'_>> {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let mut out: Vec<Segment<'_>> = Vec::new();
    let mut parts = rest.split('/').peekable();
    while let Some(raw) = parts.next() {
        let decoded = decode_segment(raw);
        let last = parts.peek().is_none();
        match &*decoded {
            "." => {}
            ".." => {
                out.pop();
            }
            _ => {
                out.push(Segment { raw, decoded });
                continue;
            }
        }
        if last {
            out.push(Segment { raw: "", decoded: Cow::Borrowed("") });
        }
    }
    out
}

/// `segments` joined back into a path, for exact and prefix matching.
pub fn join(segments: &[Segment<'_>]) -> String {
    let mut path = String::new();
    for s in segments {
        path.push('/');
        path.push_str(&s.decoded);
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

/// A route pattern's literal path in the form requests are compared in.
pub fn normalize(path: &str) -> String {
    if is_plain(path) {
        path.to_string()
    } else {
        join(&segments(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreserved_and_utf8_escapes_decode() {
        assert_eq!(normalize("/%69nfo"), "/info");
        assert_eq!(normalize("/caf%C3%A9/%7Euser"), "/café/~user");
        assert_eq!(normalize("/a%20b"), "/a b");
    }

    #[test]
    fn encoded_slash_and_percent_stay_escaped() {
        assert_eq!(normalize("/a%2fb"), "/a%2Fb");
        assert_eq!(normalize("/a%252Fb"), "/a%252Fb");
        assert_eq!(segments("/a%2Fb/c").len(), 2);
    }

    #[test]
    fn dot_segments_are_removed() {
        assert_eq!(normalize("/a/./b/../c"), "/a/c");
        assert_eq!(normalize("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(normalize("/a/%2E%2E/b"), "/b");
        assert_eq!(normalize("/a/b/.."), "/a/");
        assert_eq!(normalize("/.."), "/");
        assert_eq!(normalize("/a/.b/..c"), "/a/.b/..c");
    }

    #[test]
    fn invalid_escapes_and_bad_utf8_stay_as_sent() {
        assert_eq!(normalize("/a%zz%4"), "/a%zz%4");
        assert_eq!(normalize("/%FF"), "/%FF");
    }
}
