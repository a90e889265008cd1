//! Form bodies: `application/x-www-form-urlencoded` and `multipart/form-data`,
//! parsed from a complete, already size-bounded request body into fields and
//! uploaded files. No Python here; `python::request` wraps the result.
//!
//! Multipart goes through `multer` (the parser axum uses): it is written
//! against `futures::Stream`, but it needs no runtime. The body is handed to it
//! as one ready chunk, so every poll makes progress and the parse is driven to
//! completion here with a no-op waker, synchronously. Parts are `Bytes` slices
//! of that one buffer (no copy); a file part larger than [`SPOOL_THRESHOLD`]
//! is written to an unnamed temporary file instead (deleted when closed).

use bytes::Bytes;
use std::future::Future;
use std::io::Write;
use std::task::{Context, Poll, Waker};

/// Most fields plus files one form may have (413 beyond).
pub const MAX_FORM_PARTS: usize = 1000;
/// A file part larger than this is spooled to a temporary file.
pub const SPOOL_THRESHOLD: usize = 1024 * 1024;

/// Where an uploaded file's bytes are.
#[derive(Debug)]
pub enum Stored {
    Memory(Bytes),
    /// An unnamed temporary file, positioned at its end, and its length.
    Disk(std::fs::File, u64),
}

/// One `multipart/form-data` part that had a `filename`.
#[derive(Debug)]
pub struct Upload {
    /// The form field's name.
    pub field: String,
    /// The file name as the client sent it (never a safe path).
    pub filename: String,
    pub content_type: Option<String>,
    pub data: Stored,
}

/// A parsed form: fields (name, value) and files, each in body order.
#[derive(Debug, Default)]
pub struct Form {
    pub fields: Vec<(String, String)>,
    pub files: Vec<Upload>,
}

/// Why a form body was refused.
#[derive(Debug)]
pub enum FormError {
    /// The body does not follow its Content-Type (answered 400).
    Malformed(String),
    /// More than [`MAX_FORM_PARTS`] parts (answered 413).
    TooManyParts,
    /// A large part could not be written to a temporary file (answered 500).
    Spool(std::io::Error),
}

impl FormError {
    pub fn status(&self) -> u16 {
        match self {
            FormError::Malformed(_) => 400,
            FormError::TooManyParts => 413,
            FormError::Spool(_) => 500,
        }
    }
}

impl std::fmt::Display for FormError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormError::Malformed(why) => write!(f, "malformed form body: {why}"),
            FormError::TooManyParts => write!(f, "form has more than {MAX_FORM_PARTS} parts"),
            FormError::Spool(e) => write!(f, "cannot store an uploaded file: {e}"),
        }
    }
}

/// What kind of form a Content-Type announces.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    UrlEncoded,
    Multipart,
    /// Not a form: `request.form` is empty.
    Other,
}

fn kind(content_type: &str) -> Kind {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        Kind::UrlEncoded
    } else if essence.eq_ignore_ascii_case("multipart/form-data") {
        Kind::Multipart
    } else {
        Kind::Other
    }
}

/// Parses `body` as the form its `content_type` announces; any other type
/// (or none) gives an empty form. Invalid UTF-8 in names and values is
/// replaced by U+FFFD.
pub fn parse(content_type: Option<&str>, body: Bytes) -> Result<Form, FormError> {
    match content_type.map(kind) {
        Some(Kind::UrlEncoded) => urlencoded(&body),
        Some(Kind::Multipart) => multipart(content_type.unwrap_or(""), body),
        _ => Ok(Form::default()),
    }
}

/// Every (name, value) pair of an urlencoded string (a form body or a query).
pub fn urlencoded_pairs(input: &[u8]) -> impl Iterator<Item = (String, String)> + '_ {
    form_urlencoded::parse(input).map(|(k, v)| (k.into_owned(), v.into_owned()))
}

fn urlencoded(body: &[u8]) -> Result<Form, FormError> {
    let mut form = Form::default();
    for pair in urlencoded_pairs(body) {
        if form.fields.len() == MAX_FORM_PARTS {
            return Err(FormError::TooManyParts);
        }
        form.fields.push(pair);
    }
    Ok(form)
}

/// Polls a future that never waits on I/O (its input is one ready chunk)
/// until it completes; `None` if it keeps asking to wait (a bug, not input).
fn drive<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..64 {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Some(v);
        }
    }
    None
}

fn malformed(e: multer::Error) -> FormError {
    FormError::Malformed(e.to_string())
}

fn multipart(content_type: &str, body: Bytes) -> Result<Form, FormError> {
    let boundary = multer::parse_boundary(content_type).map_err(malformed)?;
    let stream = futures_util::stream::once(std::future::ready(Ok::<Bytes, std::convert::Infallible>(body)));
    let mut parts = multer::Multipart::new(stream, boundary);
    let stalled = || FormError::Malformed("the multipart parser stalled".into());
    let mut form = Form::default();
    while let Some(mut field) = drive(parts.next_field()).ok_or_else(stalled)?.map_err(malformed)? {
        if form.fields.len() + form.files.len() == MAX_FORM_PARTS {
            return Err(FormError::TooManyParts);
        }
        let name = field.name().unwrap_or("").to_string();
        let filename = field.file_name().map(str::to_string);
        let content_type = field.content_type().map(|m| m.to_string());
        let mut data = Stored::Memory(Bytes::new());
        let mut pieces: Vec<Bytes> = Vec::new();
        let mut size = 0usize;
        while let Some(chunk) = drive(field.chunk()).ok_or_else(stalled)?.map_err(malformed)? {
            size += chunk.len();
            match &mut data {
                Stored::Disk(file, len) => {
                    file.write_all(&chunk).map_err(FormError::Spool)?;
                    *len += chunk.len() as u64;
                }
                Stored::Memory(_) if filename.is_some() && size > SPOOL_THRESHOLD => {
                    let mut file = tempfile::tempfile().map_err(FormError::Spool)?;
                    for piece in pieces.drain(..).chain(std::iter::once(chunk)) {
                        file.write_all(&piece).map_err(FormError::Spool)?;
                    }
                    data = Stored::Disk(file, size as u64);
                }
                Stored::Memory(_) => pieces.push(chunk),
            }
        }
        if let Stored::Memory(_) = data {
            data = Stored::Memory(join(pieces));
        }
        match (filename, data) {
            (Some(filename), data) => form.files.push(Upload { field: name, filename, content_type, data }),
            (None, Stored::Memory(bytes)) => form.fields.push((name, String::from_utf8_lossy(&bytes).into_owned())),
            (None, Stored::Disk(..)) => return Err(FormError::Malformed("a text field was spooled".into())),
        }
    }
    Ok(form)
}

/// One `Bytes` from the chunks of a part (no copy for the usual single chunk).
fn join(mut pieces: Vec<Bytes>) -> Bytes {
    match pieces.len() {
        0 => Bytes::new(),
        1 => pieces.pop().unwrap_or_default(),
        _ => pieces.concat().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek};

    fn mp(body: &str) -> Result<Form, FormError> {
        parse(Some("multipart/form-data; boundary=XX"), Bytes::from(body.replace('\n', "\r\n")))
    }

    #[test]
    fn urlencoded_fields_in_order_with_repeats() {
        let f =
            parse(Some("application/x-www-form-urlencoded; charset=utf-8"), Bytes::from("a=1&b=x+y%21&a=2&c")).unwrap();
        let want: Vec<(String, String)> = [("a", "1"), ("b", "x y!"), ("a", "2"), ("c", "")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(f.fields, want);
    }

    #[test]
    fn other_content_types_are_not_forms() {
        assert!(parse(Some("application/json"), Bytes::from("a=1")).unwrap().fields.is_empty());
        assert!(parse(None, Bytes::from("a=1")).unwrap().fields.is_empty());
    }

    #[test]
    fn multipart_fields_and_files() {
        let f = mp("--XX\nContent-Disposition: form-data; name=\"t\"\n\nhello\n--XX\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\nContent-Type: text/plain\n\nfile\nbody\n--XX--\n").unwrap();
        assert_eq!(f.fields, vec![("t".to_string(), "hello".to_string())]);
        assert_eq!(f.files.len(), 1);
        let u = &f.files[0];
        assert_eq!(
            (u.field.as_str(), u.filename.as_str(), u.content_type.as_deref()),
            ("f", "a.txt", Some("text/plain"))
        );
        match &u.data {
            Stored::Memory(b) => assert_eq!(&b[..], b"file\r\nbody"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn large_files_are_spooled() {
        let big = "x".repeat(SPOOL_THRESHOLD + 10);
        let f = mp(&format!("--XX\nContent-Disposition: form-data; name=\"f\"; filename=\"b\"\n\n{big}\n--XX--\n"))
            .unwrap();
        match &f.files[0].data {
            Stored::Disk(file, len) => {
                assert_eq!(*len as usize, big.len());
                let mut file = file.try_clone().unwrap();
                file.rewind().unwrap();
                let mut s = String::new();
                file.read_to_string(&mut s).unwrap();
                assert_eq!(s, big);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_multipart_is_an_error() {
        for body in [
            "",
            "garbage",
            "--XX\nContent-Disposition: form-data; name=\"t\"\n\nno end",
            "--XX\nbroken header line\n\nx\n--XX--\n",
        ] {
            let e = mp(body).unwrap_err();
            assert_eq!(e.status(), 400, "{body:?}: {e}");
        }
        let e = parse(Some("multipart/form-data"), Bytes::from("x")).unwrap_err();
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn part_count_is_bounded() {
        let body = "a=1&".repeat(MAX_FORM_PARTS + 1);
        assert!(matches!(
            parse(Some("application/x-www-form-urlencoded"), Bytes::from(body)),
            Err(FormError::TooManyParts)
        ));
        let part = "--XX\nContent-Disposition: form-data; name=\"t\"\n\nv\n";
        let body = format!("{}--XX--\n", part.repeat(MAX_FORM_PARTS + 1));
        assert!(matches!(mp(&body), Err(FormError::TooManyParts)));
    }
}
