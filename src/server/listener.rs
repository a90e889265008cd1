//! Creating listening sockets: address family, SO_REUSEADDR, SO_REUSEPORT
//! for worker processes, backlog.

use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;

/// Binds and listens on `addr`. The error names the address and, for the
/// common case of a port in use, says so plainly.
pub fn bind(addr: SocketAddr, backlog: u32) -> Result<std::net::TcpListener, String> {
    listen(new_socket(addr, false)?, addr, backlog)
}

/// Like [`bind`], with SO_REUSEPORT: several worker processes each listen on
/// the same address and the kernel spreads new connections across them.
pub fn bind_reuseport(addr: SocketAddr, backlog: u32) -> Result<std::net::TcpListener, String> {
    listen(new_socket(addr, true)?, addr, backlog)
}

fn listen(socket: Socket, addr: SocketAddr, backlog: u32) -> Result<std::net::TcpListener, String> {
    socket.listen(backlog.min(i32::MAX as u32) as i32).map_err(|e| describe(addr, e))?;
    socket.set_nonblocking(true).map_err(|e| describe(addr, e))?;
    Ok(socket.into())
}

/// Binds `addr` with SO_REUSEPORT without listening: holds the port (and
/// resolves port 0) for worker processes that listen on it.
pub fn reserve(addr: SocketAddr) -> Result<Socket, String> {
    new_socket(addr, true)
}

fn new_socket(addr: SocketAddr, reuse_port: bool) -> Result<Socket, String> {
    let fail = |e| describe(addr, e);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
    socket.set_reuse_address(true).map_err(fail)?;
    if reuse_port {
        socket.set_reuse_port(true).map_err(fail)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(fail)?;
    }
    socket.bind(&addr.into()).map_err(fail)?;
    Ok(socket)
}

fn describe(addr: SocketAddr, e: std::io::Error) -> String {
    let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
        " (another process is listening there; choose another port with --bind or http_listen_port)"
    } else {
        ""
    };
    format!("cannot listen on {addr}: {e}{hint}")
}
