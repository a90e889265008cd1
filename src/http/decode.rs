//! The request-body framing state machine: Content-Length bodies and
//! `Transfer-Encoding: chunked` (sizes in hex, extensions skipped, trailers
//! read and discarded, the terminating chunk required). Input may arrive
//! split at any byte; the decoder keeps its place between calls.
//!
//! Chunk framing is strict: every chunk-size line, chunk-data end and trailer
//! line must end in CRLF (a bare LF or bare CR is a 400), the size is hex
//! digits only, extensions follow RFC 9112 section 7.1.1 exactly
//! (`*( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )`, so a
//! lone `;`, an unbalanced quote or whitespace after the size without an
//! extension is a 400), and trailer lines are `token ":" value`. Lenient chunk
//! parsing is a known source of request smuggling between proxies and servers.

use super::encode::is_token_byte;
use super::{Framing, HttpError};

/// Longest chunk-size line (size plus extensions, without CRLF) accepted.
pub const MAX_CHUNK_LINE: usize = 4096;
/// Most bytes of trailer fields accepted after the last chunk (431 beyond).
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

const CRLF: HttpError = HttpError::BadRequest("chunk lines must end in CRLF");
const BAD_TRAILER: HttpError = HttpError::BadRequest("malformed trailer");
const BAD_EXTENSION: HttpError = HttpError::BadRequest("invalid chunk extension");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading hex digits of the size; `digits` counted so far.
    Size {
        digits: u32,
    },
    /// Whitespace after the size: only more of it or `;` may follow.
    SizeWs,
    /// Inside the chunk extensions.
    Ext(Ext),
    /// CR seen at the end of a size line.
    SizeLf,
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field name.
    TrailerName,
    /// Inside a trailer field value.
    TrailerValue,
    TrailerLf {
        last: bool,
    },
    Done,
}

/// Where in `chunk-ext` the decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ext {
    /// After `;`: BWS, then a name.
    BeforeName,
    Name,
    /// Whitespace after a name: only `=` or `;` may follow.
    AfterName,
    /// After `=`: BWS, then a token or a quoted string.
    BeforeValue,
    Token,
    Quoted,
    /// After a backslash inside a quoted string.
    QuotedPair,
    /// Just after the closing quote.
    QuoteEnd,
    /// Whitespace after a value: only `;` may follow.
    AfterValue,
}

impl Ext {
    /// The state after byte `b` (never CR or LF, handled by the caller).
    fn next(self, b: u8) -> Result<Ext, HttpError> {
        let ws = b == b' ' || b == b'\t';
        let token = is_token_byte(b);
        Ok(match self {
            Ext::BeforeName if ws => Ext::BeforeName,
            Ext::BeforeName | Ext::Name if token => Ext::Name,
            Ext::Name | Ext::AfterName if ws => Ext::AfterName,
            Ext::Name | Ext::AfterName | Ext::Token | Ext::QuoteEnd | Ext::AfterValue if b == b';' => Ext::BeforeName,
            Ext::Name | Ext::AfterName if b == b'=' => Ext::BeforeValue,
            Ext::BeforeValue if ws => Ext::BeforeValue,
            Ext::BeforeValue if b == b'"' => Ext::Quoted,
            Ext::BeforeValue | Ext::Token if token => Ext::Token,
            Ext::Token | Ext::QuoteEnd | Ext::AfterValue if ws => Ext::AfterValue,
            Ext::Quoted if b == b'"' => Ext::QuoteEnd,
            Ext::Quoted if b == b'\\' => Ext::QuotedPair,
            // qdtext and the escaped byte of a quoted-pair: HTAB, SP, VCHAR, obs-text.
            Ext::Quoted | Ext::QuotedPair if ws || (b > b' ' && b != 0x7f) => Ext::Quoted,
            _ => return Err(BAD_EXTENSION),
        })
    }

    /// May the size line end (CR) here?
    fn can_end(self) -> bool {
        matches!(self, Ext::Name | Ext::Token | Ext::QuoteEnd)
    }
}

/// Decodes one request body into a caller-owned buffer.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    kind: Kind,
    max_body: u64,
    received: u64,
}

#[derive(Debug, Clone)]
enum Kind {
    Length { remaining: u64 },
    Chunked { state: Chunk, size: u64, line_len: usize },
}

/// Progress after feeding bytes to the decoder.
#[derive(Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the input consumed.
    pub consumed: usize,
    /// The body is complete.
    pub done: bool,
}

/// Bytes allowed inside a chunk extension or a trailer value: visible
/// characters, space, tab and obs-text; no other control characters.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b >= b' ' && b != 0x7f)
}

impl BodyDecoder {
    pub fn new(framing: Framing, max_body: usize) -> BodyDecoder {
        let kind = match framing {
            Framing::Empty => Kind::Length { remaining: 0 },
            Framing::Length(n) => Kind::Length { remaining: n },
            Framing::Chunked => Kind::Chunked { state: Chunk::Size { digits: 0 }, size: 0, line_len: 0 },
        };
        BodyDecoder { kind, max_body: max_body as u64, received: 0 }
    }

    pub fn is_done(&self) -> bool {
        match &self.kind {
            Kind::Length { remaining } => *remaining == 0,
            Kind::Chunked { state, .. } => *state == Chunk::Done,
        }
    }

    /// Feeds `input`, appending body bytes to `body`. After an error the
    /// decoder must not be used again.
    pub fn decode(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<Progress, HttpError> {
        match &mut self.kind {
            Kind::Length { remaining } => {
                let take = (*remaining).min(input.len() as u64) as usize;
                body.extend_from_slice(&input[..take]);
                *remaining -= take as u64;
                Ok(Progress { consumed: take, done: *remaining == 0 })
            }
            Kind::Chunked { state, size, line_len } => {
                let mut i = 0;
                while i < input.len() {
                    let b = input[i];
                    match *state {
                        Chunk::Size { digits } => {
                            if let Some(d) = (b as char).to_digit(16) {
                                *size = size
                                    .checked_mul(16)
                                    .and_then(|s| s.checked_add(u64::from(d)))
                                    .ok_or(HttpError::BadRequest("chunk size overflows"))?;
                                *state = Chunk::Size { digits: digits + 1 };
                            } else if digits == 0 {
                                return Err(HttpError::BadRequest("missing chunk size"));
                            } else {
                                *state = match b {
                                    b'\r' => Chunk::SizeLf,
                                    b';' => Chunk::Ext(Ext::BeforeName),
                                    b' ' | b'\t' => Chunk::SizeWs,
                                    b'\n' => return Err(CRLF),
                                    _ => return Err(HttpError::BadRequest("invalid chunk size")),
                                };
                            }
                            *line_len += 1;
                        }
                        Chunk::SizeWs => {
                            *state = match b {
                                b' ' | b'\t' => Chunk::SizeWs,
                                b';' => Chunk::Ext(Ext::BeforeName),
                                b'\n' => return Err(CRLF),
                                _ => return Err(BAD_EXTENSION),
                            };
                            *line_len += 1;
                        }
                        Chunk::Ext(ext) => {
                            *state = match b {
                                b'\r' if ext.can_end() => Chunk::SizeLf,
                                b'\n' => return Err(CRLF),
                                _ => Chunk::Ext(ext.next(b)?),
                            };
                            *line_len += 1;
                        }
                        Chunk::SizeLf => {
                            if b != b'\n' {
                                return Err(CRLF);
                            }
                            *line_len = 0;
                            if *size == 0 {
                                *state = Chunk::TrailerStart;
                            } else {
                                self.received = self.received.saturating_add(*size);
                                if self.received > self.max_body {
                                    return Err(HttpError::PayloadTooLarge);
                                }
                                *state = Chunk::Data { remaining: *size };
                            }
                        }
                        Chunk::Data { remaining } => {
                            let take = remaining.min((input.len() - i) as u64) as usize;
                            body.extend_from_slice(&input[i..i + take]);
                            let remaining = remaining - take as u64;
                            *state = if remaining == 0 { Chunk::DataCr } else { Chunk::Data { remaining } };
                            i += take;
                            continue;
                        }
                        Chunk::DataCr => {
                            if b != b'\r' {
                                return Err(HttpError::BadRequest("chunk data must end in CRLF"));
                            }
                            *state = Chunk::DataLf;
                        }
                        Chunk::DataLf => {
                            if b != b'\n' {
                                return Err(HttpError::BadRequest("chunk data must end in CRLF"));
                            }
                            *size = 0;
                            *state = Chunk::Size { digits: 0 };
                        }
                        Chunk::TrailerStart => {
                            *state = match b {
                                b'\r' => Chunk::TrailerLf { last: true },
                                b'\n' => return Err(CRLF),
                                _ if is_token_byte(b) => Chunk::TrailerName,
                                _ => return Err(BAD_TRAILER),
                            };
                            *line_len += 1;
                        }
                        Chunk::TrailerName => {
                            if b == b':' {
                                *state = Chunk::TrailerValue;
                            } else if !is_token_byte(b) {
                                return Err(BAD_TRAILER);
                            }
                            *line_len += 1;
                        }
                        Chunk::TrailerValue => {
                            if b == b'\r' {
                                *state = Chunk::TrailerLf { last: false };
                            } else if b == b'\n' {
                                return Err(CRLF);
                            } else if !is_field_byte(b) {
                                return Err(BAD_TRAILER);
                            }
                            *line_len += 1;
                        }
                        Chunk::TrailerLf { last } => {
                            if b != b'\n' {
                                return Err(CRLF);
                            }
                            if last {
                                *state = Chunk::Done;
                                return Ok(Progress { consumed: i + 1, done: true });
                            }
                            *state = Chunk::TrailerStart;
                            *line_len += 1;
                        }
                        Chunk::Done => return Ok(Progress { consumed: i, done: true }),
                    }
                    match *state {
                        Chunk::Size { .. } | Chunk::SizeWs | Chunk::Ext(_) if *line_len > MAX_CHUNK_LINE => {
                            return Err(HttpError::BadRequest("chunk size line too long"));
                        }
                        Chunk::TrailerStart | Chunk::TrailerName | Chunk::TrailerValue | Chunk::TrailerLf { .. }
                            if *line_len > MAX_TRAILER_BYTES =>
                        {
                            return Err(HttpError::HeadersTooLarge);
                        }
                        _ => {}
                    }
                    i += 1;
                }
                Ok(Progress { consumed: i, done: *state == Chunk::Done })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(framing: Framing, input: &[u8]) -> Result<(Vec<u8>, usize), HttpError> {
        let mut d = BodyDecoder::new(framing, 1 << 20);
        let mut body = Vec::new();
        let p = d.decode(input, &mut body)?;
        assert!(p.done, "not done");
        Ok((body, p.consumed))
    }

    #[test]
    fn content_length() {
        assert_eq!(decode_all(Framing::Length(3), b"abcdef").unwrap(), (b"abc".to_vec(), 3));
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let input = b"4;name=v\r\nWiki\r\n5 ;x\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let (body, used) = decode_all(Framing::Chunked, input).unwrap();
        assert_eq!(body, b"Wikipedia in\r\n\r\nchunks.");
        assert_eq!(&input[used..], b"NEXT");
    }

    #[test]
    fn chunked_byte_by_byte_matches_whole() {
        let input = b"3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
        let mut d = BodyDecoder::new(Framing::Chunked, 1 << 20);
        let mut body = Vec::new();
        for (n, b) in input.iter().enumerate() {
            let p = d.decode(std::slice::from_ref(b), &mut body).unwrap();
            assert_eq!(p.consumed, 1);
            assert_eq!(p.done, n == input.len() - 1);
        }
        assert_eq!(body, b"abc0123456789abcdef");
    }

    #[test]
    fn chunked_errors() {
        let cases: &[&[u8]] = &[
            b"\r\n",
            b"g\r\n",
            b"3\nabc\r\n0\r\n\r\n",
            b"3\r\nabcX\r\n",
            b"ffffffffffffffffff\r\n",
            b"0\r\n\n",
            b"0\r\n folded\r\n\r\n",
        ];
        for c in cases {
            let mut d = BodyDecoder::new(Framing::Chunked, 1 << 20);
            assert!(d.decode(c, &mut Vec::new()).is_err(), "{:?}", String::from_utf8_lossy(c));
        }
    }

    #[test]
    fn chunk_syntax_is_strict() {
        let err =
            |input: &[u8]| BodyDecoder::new(Framing::Chunked, 1 << 20).decode(input, &mut Vec::new()).unwrap_err();
        assert_eq!(err(b"5 x\r\n"), BAD_EXTENSION);
        assert_eq!(err(b"5;a\x7f\r\n"), BAD_EXTENSION);
        assert_eq!(err(b"5\n"), CRLF);
        assert_eq!(err(b"5;x\n"), CRLF);
        assert_eq!(err(b"5\rx"), CRLF);
        assert_eq!(err(b"0\r\nX: 1\n"), CRLF);
        assert_eq!(err(b"0\r\nX 1\r\n"), BAD_TRAILER);
        assert_eq!(err(b"0\r\nX: \x01\r\n"), BAD_TRAILER);
        assert_eq!(err(b"0\r\n\tX: 1\r\n"), BAD_TRAILER);
        let long = [b"1;".to_vec(), b"x".repeat(MAX_CHUNK_LINE)].concat();
        assert_eq!(err(&long), HttpError::BadRequest("chunk size line too long"));
        let trailers = [b"0\r\n".to_vec(), b"X: y\r\n".repeat(MAX_TRAILER_BYTES / 6 + 1)].concat();
        assert_eq!(err(&trailers), HttpError::HeadersTooLarge);
        // BWS around ';' and '=', token and quoted values (with quoted-pairs and obs-text): accepted.
        for ext in [
            &b"2;a"[..],
            b"2 \t;a=\"x y\";b",
            b"2 ; a = b ; c",
            b"2;a=\"\"",
            b"2;a=\"q\\\"\\\\ \xff\"",
            b"2;a=b;c=\"d\" ;e",
            b"2;!#$%&'*+-.^_`|~=x",
        ] {
            let ok = [ext, b"\r\nhi\r\n0\r\nX: \xe9 \t\r\n\r\n"].concat();
            let got = decode_all(Framing::Chunked, &ok);
            assert_eq!(got, Ok((b"hi".to_vec(), ok.len())), "{:?}", String::from_utf8_lossy(ext));
        }
    }

    #[test]
    fn chunk_extensions_follow_the_grammar() {
        for ext in [
            &b"2;"[..],
            b"2 ",
            b"2\t",
            b"2;;a",
            b"2;a;",
            b"2;a=",
            b"2;=b",
            b"2;a =",
            b"2;a b",
            b"2;a ",
            b"2;a=b ",
            b"2;a=\"b",
            b"2;a=\"b\"c",
            b"2;a=b\"c\"",
            b"2;a=\"\x01\"",
            b"2;a=\"\\\x01\"",
            b"2;a\xff",
            b"2;a=b=c",
            b"2;a=@",
            b"2;a,b",
        ] {
            let input = [ext, b"\r\nhi\r\n0\r\n\r\n"].concat();
            let got = BodyDecoder::new(Framing::Chunked, 1 << 20).decode(&input, &mut Vec::new());
            assert_eq!(got, Err(BAD_EXTENSION), "{:?}", String::from_utf8_lossy(ext));
        }
    }

    #[test]
    fn chunked_body_over_limit() {
        let mut d = BodyDecoder::new(Framing::Chunked, 4);
        let mut body = Vec::new();
        assert!(!d.decode(b"3\r\nabc\r\n", &mut body).unwrap().done);
        assert_eq!(d.decode(b"3\r\n", &mut body), Err(HttpError::PayloadTooLarge));
    }
}
