//! Creating the listening socket: address family, SO_REUSEADDR, backlog.

use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;

/// Binds and listens on `addr`. The error names the address and, for the
/// common case of a port in use, says so plainly.
pub fn bind(addr: SocketAddr, backlog: u32) -> Result<std::net::TcpListener, String> {
    let fail = |e: std::io::Error| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (another process is listening there; choose another port with --bind or http_listen_port)"
        } else {
            ""
        };
        format!("cannot listen on {addr}: {e}{hint}")
    };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
    socket.set_reuse_address(true).map_err(fail)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(fail)?;
    }
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(backlog.min(i32::MAX as u32) as i32).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    Ok(socket.into())
}
