//! Property tests: random valid requests parse the same whole or cut into
//! random pieces (head parser + body decoder, the way a connection feeds
//! them); random bytes never panic the parser or decoder, and the real server
//! answers any byte sequence with well-formed responses and/or a close.

mod http_support;
use http_support::*;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use pyrs::http::decode::BodyDecoder;
use pyrs::http::head::{self, Framing};
use pyrs::http::HttpError;
use pyrs::http::Limits;
use std::time::Duration;

#[derive(Debug, Clone)]
enum Body {
    None,
    Length(Vec<u8>),
    /// Chunks, each with an extension string; trailer fields.
    Chunked(Vec<(Vec<u8>, String)>, Vec<(String, String)>),
}

#[derive(Debug, Clone)]
struct Req {
    method: String,
    path: String,
    query: Option<String>,
    http10: bool,
    keep_alive_header: Option<&'static str>,
    headers: Vec<(String, String)>,
    body: Body,
    /// Line ending per head line: true for a bare LF.
    bare_lf: Vec<bool>,
}

/// What a parse should yield for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parsed {
    method: String,
    path: String,
    query: String,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    framing: Framing,
    keep_alive: bool,
    body: Vec<u8>,
}

impl Req {
    fn serialize(&self) -> Vec<u8> {
        let mut lines: Vec<String> = Vec::new();
        let target = match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        };
        let version = if self.http10 { "HTTP/1.0" } else { "HTTP/1.1" };
        lines.push(format!("{} {target} {version}", self.method));
        for (n, v) in self.all_headers() {
            lines.push(format!("{n}: {v}"));
        }
        lines.push(String::new());
        let mut out = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            out.extend_from_slice(l.as_bytes());
            let lf = self.bare_lf.get(i).copied().unwrap_or(false);
            out.extend_from_slice(if lf { b"\n" } else { b"\r\n" });
        }
        match &self.body {
            Body::None => {}
            Body::Length(b) => out.extend_from_slice(b),
            Body::Chunked(chunks, trailers) => {
                for (data, ext) in chunks {
                    out.extend_from_slice(format!("{:x}{ext}\r\n", data.len()).as_bytes());
                    out.extend_from_slice(data);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n");
                for (n, v) in trailers {
                    out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
                }
                out.extend_from_slice(b"\r\n");
            }
        }
        out
    }

    fn all_headers(&self) -> Vec<(String, String)> {
        let mut h = Vec::new();
        if !self.http10 {
            h.push(("Host".to_string(), "example.com".to_string()));
        }
        h.extend(self.headers.iter().cloned());
        if let Some(k) = self.keep_alive_header {
            h.push(("Connection".to_string(), k.to_string()));
        }
        match &self.body {
            Body::None => {}
            Body::Length(b) => h.push(("Content-Length".to_string(), b.len().to_string())),
            Body::Chunked(..) => h.push(("Transfer-Encoding".to_string(), "chunked".to_string())),
        }
        h
    }

    fn expected(&self) -> Parsed {
        let (framing, body) = match &self.body {
            Body::None => (Framing::Empty, Vec::new()),
            Body::Length(b) if b.is_empty() => (Framing::Empty, Vec::new()),
            Body::Length(b) => (Framing::Length(b.len() as u64), b.clone()),
            Body::Chunked(chunks, _) => (Framing::Chunked, chunks.iter().flat_map(|(d, _)| d.clone()).collect()),
        };
        let keep_alive = match self.keep_alive_header {
            Some("close") => false,
            Some("keep-alive") => true,
            _ => !self.http10,
        };
        Parsed {
            method: self.method.clone(),
            path: self.path.clone(),
            query: self.query.clone().unwrap_or_default(),
            headers: self.all_headers().into_iter().map(|(n, v)| (n.into_bytes(), v.into_bytes())).collect(),
            framing,
            keep_alive,
            body,
        }
    }
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]{0,15}"
}

fn header() -> impl Strategy<Value = (String, String)> {
    let name = token().prop_filter("framing headers are chosen separately", |n| {
        !["host", "content-length", "transfer-encoding", "connection", "expect"]
            .contains(&n.to_ascii_lowercase().as_str())
    });
    // Values: visible characters with inner spaces and tabs, no surrounding whitespace.
    let value = prop_oneof!["", "[!-~]([ \t!-~]{0,30}[!-~])?"];
    (name, value)
}

fn body(http10: bool) -> BoxedStrategy<Body> {
    let bytes = proptest::collection::vec(any::<u8>(), 0..300);
    let ext = prop_oneof![Just(String::new()), "(;[a-z]{1,5}(=[a-z0-9]{1,5})?){1,3}", " ;[a-z]{1,4}"];
    let chunk = (proptest::collection::vec(any::<u8>(), 1..120), ext);
    let trailers = proptest::collection::vec(header(), 0..3);
    if http10 {
        prop_oneof![Just(Body::None), bytes.prop_map(Body::Length)].boxed()
    } else {
        prop_oneof![
            Just(Body::None),
            bytes.prop_map(Body::Length),
            (proptest::collection::vec(chunk, 0..5), trailers).prop_map(|(c, t)| Body::Chunked(c, t)),
        ]
        .boxed()
    }
}

fn request() -> impl Strategy<Value = Req> {
    let method = prop_oneof![Just("GET".to_string()), Just("POST".to_string()), Just("PUT".to_string()), "[A-Z]{1,10}"];
    let path = "(/[A-Za-z0-9._~%!$&'()*+,;=:@-]{0,12}){1,4}";
    let query = proptest::option::of("[A-Za-z0-9=&%/?._-]{0,24}");
    let keep = prop_oneof![Just(None), Just(Some("close")), Just(Some("keep-alive"))];
    (method, path, query, any::<bool>(), keep, proptest::collection::vec(header(), 0..8)).prop_flat_map(
        |(method, path, query, http10, keep, headers)| {
            (body(http10), proptest::collection::vec(any::<bool>(), 16)).prop_map(move |(body, bare_lf)| Req {
                method: method.clone(),
                path: path.clone(),
                query: query.clone(),
                http10,
                keep_alive_header: keep,
                headers: headers.clone(),
                body,
                bare_lf,
            })
        },
    )
}

/// Feeds `input` in the given pieces to the head parser and body decoder
/// the way a connection does (re-parsing the buffered head as bytes arrive,
/// then streaming the rest through the decoder), for a sequence of requests.
/// Returns the requests completed and whether input was left over.
fn feed(input: &[u8], cuts: &[usize], limits: &Limits) -> Result<(Vec<Parsed>, bool), HttpError> {
    let mut bounds: Vec<usize> = cuts.iter().map(|&c| c % (input.len() + 1)).collect();
    bounds.push(input.len());
    bounds.sort_unstable();
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut current: Option<(head::RequestHead, BodyDecoder, Vec<u8>)> = None;
    let mut prev = 0;
    for end in bounds {
        buf.extend_from_slice(&input[prev..end]);
        prev = end;
        loop {
            if let Some((_, d, body)) = current.as_mut() {
                let p = d.decode(&buf, body)?;
                assert!(p.consumed <= buf.len());
                buf.drain(..p.consumed);
                if !p.done {
                    break;
                }
                let Some((h, _, body)) = current.take() else { unreachable!() };
                out.push(Parsed {
                    method: h.method().to_string(),
                    path: h.path().to_string(),
                    query: h.query().to_string(),
                    headers: h.headers().map(|(n, v)| (n.to_vec(), v.to_vec())).collect(),
                    framing: h.framing,
                    keep_alive: h.keep_alive,
                    body,
                });
            } else {
                if buf.is_empty() {
                    break;
                }
                let Some((h, len)) = head::parse(&buf, limits)? else { break };
                assert!(len <= buf.len());
                buf.drain(..len);
                let d = BodyDecoder::new(h.framing, limits.max_body_bytes);
                current = Some((h, d, Vec::new()));
            }
        }
    }
    Ok((out, current.is_some() || !buf.is_empty()))
}

/// [`feed`] for input that must be whole requests.
fn parse_stream(input: &[u8], cuts: &[usize], limits: &Limits) -> Result<Vec<Parsed>, HttpError> {
    let (out, left_over) = feed(input, cuts, limits)?;
    assert!(!left_over, "input left over");
    Ok(out)
}

proptest! {
    #![proptest_config(Config { cases: 400, ..Config::default() })]

    #[test]
    fn valid_requests_parse_the_same_in_any_pieces(
        reqs in proptest::collection::vec(request(), 1..4),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let limits = Limits::default();
        let input: Vec<u8> = reqs.iter().flat_map(Req::serialize).collect();
        let want: Vec<Parsed> = reqs.iter().map(Req::expected).collect();
        let whole = parse_stream(&input, &[], &limits);
        prop_assert_eq!(whole.as_ref(), Ok(&want));
        prop_assert_eq!(parse_stream(&input, &cuts, &limits), Ok(want));
    }

    #[test]
    fn every_prefix_of_a_valid_head_is_incomplete(req in request()) {
        let limits = Limits::default();
        let input = req.serialize();
        let (_, head_len) = head::parse(&input, &limits).unwrap().unwrap();
        for n in 0..head_len {
            prop_assert!(matches!(head::parse(&input[..n], &limits), Ok(None)), "prefix {}", n);
        }
    }

    #[test]
    fn one_byte_at_a_time_equals_whole(reqs in proptest::collection::vec(request(), 1..3)) {
        let input: Vec<u8> = reqs.iter().flat_map(Req::serialize).collect();
        let cuts: Vec<usize> = (1..input.len()).collect();
        let want: Vec<Parsed> = reqs.iter().map(Req::expected).collect();
        prop_assert_eq!(parse_stream(&input, &cuts, &Limits::default()), Ok(want));
    }
}

/// Bytes that look a little like HTTP, so random input reaches deep states.
fn http_ish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 1..8),
        1 => Just(b"GET / HTTP/1.1\r\n".to_vec()),
        1 => Just(b"POST /echo HTTP/1.1\r\n".to_vec()),
        1 => Just(b"HTTP/1.0".to_vec()),
        1 => Just(b"Host: t\r\n".to_vec()),
        1 => Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
        1 => Just(b"Content-Length: 5\r\n".to_vec()),
        1 => Just(b"Expect: 100-continue\r\n".to_vec()),
        1 => Just(b"Connection: close\r\n".to_vec()),
        2 => Just(b"\r\n".to_vec()),
        1 => Just(b"\n".to_vec()),
        1 => Just(b"\r".to_vec()),
        1 => Just(b":".to_vec()),
        1 => Just(b" ".to_vec()),
        1 => Just(b";".to_vec()),
        1 => "[0-9a-fA-F]{1,20}".prop_map(String::into_bytes),
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(Config { cases: 2000, ..Config::default() })]

    #[test]
    fn random_bytes_never_panic_the_parser(input in http_ish(), cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
        let limits = Limits { max_request_line: 64, max_header_bytes: 256, max_headers: 8, max_body_bytes: 1000, ..Limits::default() };
        let _ = head::parse(&input, &limits);
        for framing in [Framing::Chunked, Framing::Length(7)] {
            // The decoder gives the same answer whole and in pieces.
            let mut whole = BodyDecoder::new(framing, 1000);
            let mut body_whole = Vec::new();
            let r_whole = whole.decode(&input, &mut body_whole);
            let mut pieces = BodyDecoder::new(framing, 1000);
            let mut body_pieces = Vec::new();
            let mut at = 0;
            let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
            bounds.push(input.len());
            bounds.sort_unstable();
            let mut r_pieces = Ok(false);
            for end in bounds {
                if end < at { continue; }
                match pieces.decode(&input[at..end], &mut body_pieces) {
                    Ok(p) => {
                        at += p.consumed;
                        r_pieces = Ok(p.done);
                        if p.done { break; }
                        prop_assert_eq!(at, end, "a partial body consumes all it is given");
                    }
                    Err(e) => { r_pieces = Err(e); break; }
                }
            }
            match r_whole {
                Ok(p) => {
                    prop_assert_eq!(r_pieces, Ok(p.done));
                    if p.done { prop_assert_eq!(at, p.consumed); }
                    prop_assert_eq!(&body_whole, &body_pieces);
                }
                Err(e) => prop_assert_eq!(r_pieces, Err(e)),
            }
        }
        // The connection-style stream parse never panics either.
        let _ = feed(&input, &cuts, &limits);
    }
}

#[test]
fn random_bytes_to_the_server_end_in_responses_or_a_close() {
    let s = start("", &["--header-timeout", "1", "--body-timeout", "1", "--max-request-line", "256"]);
    let mut runner = TestRunner::new(Config { cases: 150, failure_persistence: None, ..Config::default() });
    let strategy = (http_ish(), proptest::collection::vec(any::<usize>(), 0..3));
    runner
        .run(&strategy, |(input, cuts)| {
            let mut c = Raw::connect(s.addr);
            let mut at = 0;
            let mut bounds: Vec<usize> = cuts.iter().map(|x| x % (input.len() + 1)).collect();
            bounds.sort_unstable();
            bounds.push(input.len());
            for end in bounds {
                if end > at {
                    c.send(&input[at..end]);
                    at = end;
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            // EOF from the client: pyrs answers what is complete and closes.
            c.shutdown_write();
            c.read_until_close(common::generous(4));
            prop_assert!(c.eof, "no close for {:?}; got {:?}", String::from_utf8_lossy(&input), norm(&c.buf));
            // What was sent back is a sequence of complete, well-formed responses.
            let mut rest = &c.buf[..];
            while !rest.is_empty() {
                prop_assert!(rest.starts_with(b"HTTP/1.1 "), "bad response start {:?}", norm(rest));
                let Some(len) = response_len(rest, false) else {
                    return Err(TestCaseError::fail(format!("incomplete response {:?}", norm(rest))));
                };
                rest = &rest[len..];
            }
            Ok(())
        })
        .unwrap();
    // Still serving, and nothing panicked.
    let mut c = Raw::connect(s.addr);
    c.send(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response(false), text("world"));
    assert!(!s.stderr().contains("panicked"), "{}", s.stderr());
}
