//! A complete request as the protocol layer hands it to an application.

use super::request_id::RequestId;
use super::RequestHead;
use std::net::SocketAddr;

/// The scheme the client used to reach pyrs (`request.scheme`, `request.url`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheme {
    #[default]
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Request {
    pub head: RequestHead,
    /// The decoded body (chunked framing removed).
    pub body: Vec<u8>,
    pub remote_addr: SocketAddr,
    /// Path parameters of a `/users/{id}` route, percent-decoded.
    pub params: Vec<(String, String)>,
    pub scheme: Scheme,
    /// Set by the server just before the handler runs.
    pub id: RequestId,
}
