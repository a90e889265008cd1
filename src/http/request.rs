//! A complete request as the protocol layer hands it to an application.

use super::forwarded::{self, ClientInfo};
use super::request_id::RequestId;
use super::RequestHead;
use std::fmt;
use std::net::SocketAddr;

/// The other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Tcp(SocketAddr),
    /// A client on a Unix socket (it has no address).
    Unix,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(a) => write!(f, "{a}"),
            Peer::Unix => f.write_str("unix-peer"),
        }
    }
}

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
    /// Who connected (a proxy, when there is one: see [`Request::client`]).
    pub peer: Peer,
    /// Path parameters of a `/users/{id}` route, percent-decoded.
    pub params: Vec<(String, String)>,
    /// Set by the server just before the handler runs.
    pub id: RequestId,
}

impl Request {
    /// The client: the peer, or, when the peer is a trusted proxy
    /// (`forwarded_allow_ips`), who the proxy says the client is. A Unix
    /// socket peer reports the address `"unix"` and port 0.
    pub fn client(&self) -> ClientInfo {
        let (ip, addr, port) = match self.peer {
            Peer::Tcp(a) => (Some(a.ip()), a.ip().to_string(), a.port()),
            Peer::Unix => (None, "unix".to_string(), 0),
        };
        forwarded::client(&self.head, ip, addr, port, forwarded::trusted())
    }

    /// The scheme the client used (`https` only through a trusted proxy that says so).
    pub fn scheme(&self) -> Scheme {
        match self.client().scheme {
            "https" => Scheme::Https,
            _ => Scheme::Http,
        }
    }
}
