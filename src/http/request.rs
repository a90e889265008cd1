//! A complete request as the protocol layer hands it to an application.

use super::RequestHead;
use std::net::SocketAddr;

#[derive(Debug, Clone)]
pub struct Request {
    pub head: RequestHead,
    /// The decoded body (chunked framing removed).
    pub body: Vec<u8>,
    pub remote_addr: SocketAddr,
    /// Path parameters of a `/users/{id}` route, percent-decoded.
    pub params: Vec<(String, String)>,
}
