//! The checks the fuzz targets run, shared by the cargo-fuzz targets
//! (`fuzz_targets/`) and the stable-toolchain runner (`src/bin/stable.rs`).
//!
//! Both take arbitrary bytes; the first byte or two choose limits, framing
//! and where the input is cut, the rest is what a client would send. A panic
//! or a failed assertion is a finding.

use pyrs::config::Limits;
use pyrs::http::decode::BodyDecoder;
use pyrs::http::head::{self, Framing, RequestHead};

fn limits(selector: u8) -> Limits {
    if selector & 1 == 0 {
        Limits::default()
    } else {
        Limits {
            max_request_line: 64,
            max_header_bytes: 256,
            max_headers: 8,
            max_body_bytes: 1000,
            ..Limits::default()
        }
    }
}

fn same_head(a: &RequestHead, b: &RequestHead) -> bool {
    a.method() == b.method()
        && a.target() == b.target()
        && a.path() == b.path()
        && a.query() == b.query()
        && a.headers().eq(b.headers())
        && a.framing == b.framing
        && a.keep_alive == b.keep_alive
        && a.expect_continue == b.expect_continue
        && a.version == b.version
}

/// Request-head parser: never panics; a head it accepts is accepted the
/// same when the input ends right after it, and is incomplete one byte
/// earlier; results respect the limits.
pub fn head_parser(data: &[u8]) {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let limits = limits(selector);
    match head::parse(input, &limits) {
        Ok(Some((h, len))) => {
            assert!(len > 0 && len <= input.len(), "head length {len} of {}", input.len());
            assert!(len <= limits.max_header_bytes, "head of {len} bytes passed the limit");
            assert!(h.header_count() <= limits.max_headers);
            // The accessors work on whatever was accepted.
            let _ = (h.method(), h.target(), h.path(), h.query(), h.header("host"), h.is_head());
            assert!(!h.path().is_empty());
            assert!(!(h.framing == Framing::Empty && h.expect_continue));
            match head::parse(&input[..len], &limits) {
                Ok(Some((h2, len2))) => {
                    assert_eq!(len, len2);
                    assert!(same_head(&h, &h2), "{h:?} != {h2:?}");
                }
                other => panic!("the head alone parses differently: {other:?}"),
            }
            let shorter = head::parse(&input[..len - 1], &limits);
            assert!(matches!(shorter, Ok(None)), "a prefix of an accepted head gave {shorter:?}");
        }
        Ok(None) => {
            assert!(
                input.len() <= limits.max_header_bytes,
                "incomplete head of {} bytes passed the limit",
                input.len()
            );
        }
        Err(e) => {
            assert!([400, 413, 414, 417, 431, 501, 505].contains(&e.status()), "{e:?}");
            assert!(!e.detail().is_empty());
        }
    }
}

/// Body decoder: never panics; gives the same result (body, bytes used,
/// completion or the same error) whole and cut into three pieces; bodies
/// stay within their bounds.
pub fn body_decoder(data: &[u8]) {
    let [selector, cut1, cut2, input @ ..] = data else {
        return;
    };
    let max_body = if selector & 2 == 0 { 1000 } else { 1 << 20 };
    let framing = if selector & 1 == 0 { Framing::Chunked } else { Framing::Length(u64::from(selector >> 2)) };
    let mut whole = BodyDecoder::new(framing, max_body);
    let mut body_whole = Vec::new();
    let r_whole = whole.decode(input, &mut body_whole);
    if let Ok(p) = &r_whole {
        assert!(p.consumed <= input.len());
        assert_eq!(p.done, whole.is_done());
        if !p.done {
            assert_eq!(p.consumed, input.len(), "an unfinished body leaves input unused");
        }
    }
    assert!(body_whole.len() <= max_body);
    if let Framing::Length(n) = framing {
        assert!(body_whole.len() as u64 <= n);
    }

    let mut a = usize::from(*cut1) % (input.len() + 1);
    let mut b = usize::from(*cut2) * 7 % (input.len() + 1);
    if a > b {
        std::mem::swap(&mut a, &mut b);
    }
    let mut pieces = BodyDecoder::new(framing, max_body);
    let mut body_pieces = Vec::new();
    let mut at = 0;
    let mut r_pieces = Ok(false);
    for end in [a, b, input.len()] {
        if end < at {
            continue;
        }
        match pieces.decode(&input[at..end], &mut body_pieces) {
            Ok(p) => {
                at += p.consumed;
                r_pieces = Ok(p.done);
                if p.done {
                    break;
                }
            }
            Err(e) => {
                r_pieces = Err(e);
                break;
            }
        }
    }
    match r_whole {
        Ok(p) => {
            assert_eq!(r_pieces, Ok(p.done));
            if p.done {
                assert_eq!(at, p.consumed);
            }
            assert_eq!(body_whole, body_pieces);
        }
        Err(e) => assert_eq!(r_pieces, Err(e)),
    }
}
