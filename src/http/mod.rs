//! HTTP/1.1 framing, kept apart from sockets and from Python: request heads
//! (`head`), body decoding (`decode`), response encoding (`encode`), the cached
//! `Date` header (`date`), a connection's output queue (`output`, `body`),
//! limits and the memory budget (`limits`, `budget`), what a request carries
//! (`request`, `target`, `form`, `cookie`, `forwarded`, `request_id`, `file`)
//! and the error statuses the protocol layer answers with by itself.

pub mod body;
pub mod budget;
pub mod cookie;
pub mod date;
pub mod decode;
pub mod encode;
pub mod file;
pub mod form;
pub mod forwarded;
pub mod head;
pub mod limits;
pub mod output;
pub mod request;
pub mod request_id;
pub mod target;

pub use head::{Framing, RequestHead, Version};
pub use limits::{Limits, KNOWN_METHODS};
pub use request::{Peer, Request, Scheme};

/// A request the protocol layer refuses before any handler sees it. Each
/// becomes a short text response sent with `Connection: close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    BadRequest(&'static str),
    Timeout,
    PayloadTooLarge,
    UriTooLong,
    ExpectationFailed,
    HeadersTooLarge,
    NotImplemented(&'static str),
    VersionNotSupported,
}

impl HttpError {
    pub fn status(&self) -> u16 {
        match self {
            HttpError::BadRequest(_) => 400,
            HttpError::Timeout => 408,
            HttpError::PayloadTooLarge => 413,
            HttpError::UriTooLong => 414,
            HttpError::ExpectationFailed => 417,
            HttpError::HeadersTooLarge => 431,
            HttpError::NotImplemented(_) => 501,
            HttpError::VersionNotSupported => 505,
        }
    }

    /// The detail logged (and sent as the body) for this error.
    pub fn detail(&self) -> &'static str {
        match self {
            HttpError::BadRequest(why) | HttpError::NotImplemented(why) => why,
            HttpError::Timeout => "request not received in time",
            HttpError::PayloadTooLarge => "request body too large",
            HttpError::UriTooLong => "request line too long",
            HttpError::ExpectationFailed => "only 'Expect: 100-continue' is supported",
            HttpError::HeadersTooLarge => "request header fields too large",
            HttpError::VersionNotSupported => "only HTTP/1.0 and HTTP/1.1 are supported",
        }
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status(), encode::reason(self.status()), self.detail())
    }
}
