//! Answering with files: opening one (and, for a static directory route,
//! finding it without ever leaving the directory), then the response:
//! validators, 304, one byte range (206/416), `Content-Disposition`, and
//! the bytes queued for sendfile(2). Opening runs without the application
//! lock; [`respond`] only encodes.

use crate::app::Responder;
use crate::http::body::Body;
use crate::http::encode::{InvalidHeader, ResponseWriter};
use crate::http::file::{self, Conditions, FileMeta, Plan};
use crate::http::RequestHead;
use std::borrow::Cow;
use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// An open regular file and what is known about it.
pub struct Opened {
    pub file: File,
    pub meta: FileMeta,
}

/// Opens `path` for sending; refuses anything but a regular file.
pub fn open(path: &Path) -> io::Result<Opened> {
    open_with(path, false)
}

fn open_with(path: &Path, no_follow: bool) -> io::Result<Opened> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer,
    // freezing the thread; it changes nothing for the regular files sent.
    let nofollow = if no_follow { libc::O_NOFOLLOW } else { 0 };
    opts.custom_flags(libc::O_NONBLOCK | nofollow);
    let file = opts.open(path)?;
    let m = file.metadata()?;
    if !m.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    let meta = FileMeta { len: m.len(), mtime: m.mtime().max(0) as u64, mtime_nsec: m.mtime_nsec().max(0) as u32 };
    Ok(Opened { file, meta })
}

/// The request headers that make a file response conditional or partial,
/// for GET and HEAD only.
pub fn conditions(head: &RequestHead) -> Conditions<'_> {
    if !matches!(head.method(), "GET" | "HEAD") {
        return Conditions::default();
    }
    Conditions {
        if_none_match: field_list(head, b"if-none-match"),
        if_modified_since: head.header("if-modified-since"),
        range: head.header("range"),
        if_range: head.header("if-range"),
    }
}

/// A list field's value: its one line as is, or its lines joined with
/// commas (copied only then).
fn field_list<'h>(head: &'h RequestHead, name: &[u8]) -> Option<Cow<'h, [u8]>> {
    let mut lines = head.headers().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v);
    let first = lines.next()?;
    let Some(second) = lines.next() else {
        return Some(Cow::Borrowed(first));
    };
    let mut joined = [first, second].join(&b","[..]);
    for more in lines {
        joined.push(b',');
        joined.extend_from_slice(more);
    }
    Some(Cow::Owned(joined))
}

/// How to describe the file in the response.
pub struct Presentation<'a> {
    /// The status of a full response (200 unless the handler said otherwise).
    pub status: u16,
    /// As sent (Latin-1, see `http::encode::latin1`).
    pub content_type: &'a [u8],
    /// Sent as an attachment under this name.
    pub filename: Option<&'a str>,
}

/// Writes the response for `opened` and queues its bytes. `headers` adds the
/// handler's own header fields (it may refuse them: the response is then
/// abandoned and the error returned).
pub fn respond<E: From<InvalidHeader>>(
    res: &mut Responder<'_>,
    opened: Opened,
    cond: &Conditions<'_>,
    how: &Presentation<'_>,
    headers: impl FnOnce(&mut ResponseWriter<'_>) -> Result<(), E>,
) -> Result<(), E> {
    if !crate::http::encode::is_field_value(how.content_type) {
        // A handler's content_type goes into the head as it is.
        return Err(InvalidHeader { name: "Content-Type".into() }.into());
    }
    let Opened { file, meta } = opened;
    let plan = if how.status == 200 { file::plan(&meta, cond) } else { Plan::Full };
    let status = match plan {
        Plan::Full => how.status,
        Plan::Partial { .. } => 206,
        Plan::NotModified => 304,
        Plan::Unsatisfiable => 416,
    };
    let mut w = res.start(status);
    if let Err(e) = headers(&mut w) {
        w.abort();
        return Err(e);
    }
    let etag = meta.etag();
    let fixed = |w: &mut ResponseWriter<'_>| -> Result<(), InvalidHeader> {
        w.header(b"Last-Modified", &meta.last_modified())?;
        w.header(b"ETag", etag.as_bytes())?;
        if plan == Plan::NotModified {
            return Ok(());
        }
        w.header(b"Accept-Ranges", b"bytes")?;
        match plan {
            Plan::Partial { start, len } => {
                let range = format!("bytes {start}-{}/{}", start + len - 1, meta.len);
                w.header(b"Content-Range", range.as_bytes())?;
            }
            Plan::Unsatisfiable => w.header(b"Content-Range", format!("bytes */{}", meta.len).as_bytes())?,
            _ => {}
        }
        if let Some(name) = how.filename {
            w.header(b"Content-Disposition", file::content_disposition(name).as_bytes())?;
        }
        Ok(())
    };
    if let Err(e) = fixed(&mut w) {
        w.abort();
        return Err(e.into());
    }
    match plan {
        Plan::NotModified => w.finish(b"", b""),
        Plan::Unsatisfiable => w.finish(b"text/plain; charset=utf-8", b"Range Not Satisfiable\n"),
        Plan::Full => {
            let send = w.finish_head(how.content_type, Some(meta.len));
            res.send_body(send, Body::File { file, offset: 0, len: meta.len });
        }
        Plan::Partial { start, len } => {
            let send = w.finish_head(how.content_type, Some(len));
            res.send_body(send, Body::File { file, offset: start, len });
        }
    }
    Ok(())
}

/// A directory served by a `{"path": "/prefix/*", "static": "dir"}` route.
#[derive(Debug)]
pub struct StaticDir {
    /// The directory, canonical (symlinks resolved).
    root: PathBuf,
    /// The route's prefix (`/static` for `/static/*`).
    prefix: String,
}

/// What a static route found for a request path.
pub enum Lookup {
    File {
        opened: Opened,
        content_type: &'static str,
    },
    /// A directory asked for without its trailing slash: redirect there.
    AddSlash,
    NotFound,
}

impl StaticDir {
    /// `dir` must exist and be a directory; `pattern` is the route's `/prefix/*`.
    pub fn new(dir: &Path, pattern: &str) -> Result<StaticDir, String> {
        let root = std::fs::canonicalize(dir).map_err(|e| format!("static directory {}: {e}", dir.display()))?;
        if !root.is_dir() {
            return Err(format!("static directory {} is not a directory", dir.display()));
        }
        let prefix =
            pattern.strip_suffix("/*").ok_or_else(|| format!("a static route must end in /* (got {pattern:?})"))?;
        Ok(StaticDir { root, prefix: prefix.to_string() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Finds the file for request path `path` (as sent, percent-encoded).
    /// Anything that could leave the directory is not found: `.` and `..`
    /// segments (also percent-encoded), encoded slashes or backslashes,
    /// NUL, hidden (dot) files, and symlinks that resolve outside it.
    pub fn lookup(&self, path: &str) -> Lookup {
        let Some(rest) = path.strip_prefix(self.prefix.as_str()) else {
            return Lookup::NotFound;
        };
        let mut target = self.root.clone();
        for segment in rest.split('/').filter(|s| !s.is_empty()) {
            let Some(name) = decode_segment(segment) else {
                return Lookup::NotFound;
            };
            target.push(name);
        }
        let Ok(real) = std::fs::canonicalize(&target) else {
            return Lookup::NotFound;
        };
        if !real.starts_with(&self.root) {
            return Lookup::NotFound;
        }
        let real = if real.is_dir() {
            if !rest.is_empty() && !rest.ends_with('/') {
                return Lookup::AddSlash;
            }
            match std::fs::canonicalize(real.join("index.html")) {
                Ok(index) if index.starts_with(&self.root) => index,
                _ => return Lookup::NotFound,
            }
        } else if rest.ends_with('/') {
            // A file named as a directory (`/static/a.css/`): not found, as
            // open(2) answers; served, its relative links would resolve wrongly.
            return Lookup::NotFound;
        } else {
            real
        };
        match open_with(&real, true) {
            Ok(opened) => {
                let name = real.file_name().and_then(|n| n.to_str()).unwrap_or("");
                Lookup::File { opened, content_type: file::content_type_for(name) }
            }
            Err(_) => Lookup::NotFound,
        }
    }

    /// Answers a request for this directory. Runs `find` (the file system
    /// look-up) through `unlocked` so the application lock is not held.
    pub fn serve(
        &self,
        head: &RequestHead,
        res: &mut Responder<'_>,
        unlocked: impl FnOnce(&(dyn Fn() -> Lookup + Sync)) -> Lookup,
    ) {
        let path = head.path();
        match unlocked(&|| self.lookup(path)) {
            Lookup::File { opened, content_type } => {
                let how = Presentation { status: 200, content_type: content_type.as_bytes(), filename: None };
                let _ = respond::<InvalidHeader>(res, opened, &conditions(head), &how, |_| Ok(()));
            }
            Lookup::AddSlash => {
                let mut location = format!("{path}/");
                if !head.query().is_empty() {
                    location.push('?');
                    location.push_str(head.query());
                }
                let mut w = res.start(301);
                if w.header(b"Location", location.as_bytes()).is_err() {
                    w.abort();
                    res.text(404, "Not Found\n");
                    return;
                }
                w.finish(b"text/plain; charset=utf-8", b"Moved Permanently\n");
            }
            Lookup::NotFound => res.text(404, "Not Found\n"),
        }
    }
}

/// One path segment, percent-decoded; None when it could escape or is hidden.
fn decode_segment(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            out.push(v);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let name = String::from_utf8(out).ok()?;
    if name.starts_with('.') || name.contains(['/', '\\', '\0']) {
        return None;
    }
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_that_could_escape_are_refused() {
        assert_eq!(decode_segment("a%20b.css").as_deref(), Some("a b.css"));
        assert_eq!(decode_segment("caf%C3%A9").as_deref(), Some("café"));
        for bad in ["..", "%2e%2e", "%2E.", ".", ".env", "a%2fb", "a%2Fb", "a%5cb", "a%00", "%zz", "%4", "%ff"] {
            assert_eq!(decode_segment(bad), None, "{bad}");
        }
    }

    #[test]
    fn lookups_stay_inside_the_directory() {
        let base = std::env::temp_dir().join(format!("pyrs-static-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("pub/sub")).unwrap();
        std::fs::create_dir_all(base.join("pub/noindex")).unwrap();
        std::fs::write(base.join("pub/a.css"), "a").unwrap();
        std::fs::write(base.join("pub/sub/index.html"), "i").unwrap();
        std::fs::write(base.join("secret.txt"), "s").unwrap();
        std::os::unix::fs::symlink(base.join("secret.txt"), base.join("pub/link.txt")).unwrap();
        std::os::unix::fs::symlink(base.join("pub/a.css"), base.join("pub/inside.css")).unwrap();
        let d = StaticDir::new(&base.join("pub"), "/s/*").unwrap();
        let found = |p: &str| match d.lookup(p) {
            Lookup::File { content_type, .. } => content_type.to_string(),
            Lookup::AddSlash => "add slash".into(),
            Lookup::NotFound => "not found".into(),
        };
        assert_eq!(found("/s/a.css"), "text/css; charset=utf-8");
        assert_eq!(found("/s/inside.css"), "text/css; charset=utf-8");
        assert_eq!(found("/s/sub/"), "text/html; charset=utf-8");
        assert_eq!(found("/s/sub"), "add slash");
        for missing in [
            "/s/",
            "/s/noindex/",
            "/s/link.txt",
            "/s/../secret.txt",
            "/s/%2e%2e/secret.txt",
            "/s/sub%2f..%2f..%2fsecret.txt",
            "/s/nope",
            "/other/a.css",
            "/s/a.css/",
        ] {
            assert_eq!(found(missing), "not found", "{missing}");
        }
        std::fs::remove_dir_all(&base).unwrap();
    }
}
