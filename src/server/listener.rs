//! Listening sockets, one enum for every kind pyrs serves: TCP (an address
//! pyrs binds, `localhost`, or a socket inherited on a descriptor: `--fd`,
//! systemd's `LISTEN_FDS`, or a parent pyrs) and Unix stream sockets (a path
//! pyrs binds, replacing a stale socket file and refusing a live one, and
//! removing it on exit; or an inherited one). Also the accepted connection
//! ([`Stream`]) and the hand-over of listeners to child processes.
//!
//! No SO_REUSEPORT: a second server on a port in use fails with "address in
//! use", and the processes of one pyrs share one accept queue (worker
//! processes inherit the master's listening sockets), so a worker that stops
//! never takes queued connections with it.

use crate::config::BindSpec;
use crate::http::Peer;
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where a parent pyrs hands its listening sockets to a child: descriptors
/// `FIRST_INHERITED_FD..` (above the worker pipes on 3 and 4 and the
/// metrics region on 5), their count in this variable.
pub const ENV_LISTEN_FDS: &str = "PYRS_INTERNAL_LISTEN_FDS";
/// Set when the child owns the Unix socket files (removes them on exit).
pub const ENV_OWNS_PATHS: &str = "PYRS_INTERNAL_OWNS_PATHS";
pub const FIRST_INHERITED_FD: RawFd = 10;
/// systemd socket activation: the first passed descriptor.
const SD_LISTEN_FDS_START: RawFd = 3;

/// A listening socket.
#[derive(Debug)]
pub enum Listener {
    Tcp(mio::net::TcpListener),
    /// `owned`: the socket file pyrs created, removed when this is dropped.
    Unix {
        listener: mio::net::UnixListener,
        owned: Option<OwnedPath>,
    },
}

/// A Unix socket file to remove on exit, if it is still ours (same inode).
#[derive(Debug)]
pub struct OwnedPath {
    path: PathBuf,
    ino: u64,
}

impl Drop for OwnedPath {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// An accepted connection.
#[derive(Debug)]
pub enum Stream {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl Listener {
    /// Accepts one connection (`WouldBlock` when none is waiting).
    pub fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, a)| (Stream::Tcp(s), Peer::Tcp(a))),
            Listener::Unix { listener, .. } => listener.accept().map(|(s, _)| (Stream::Unix(s), Peer::Unix)),
        }
    }

    /// The TCP address, when this is a TCP listener.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix { .. } => None,
        }
    }

    /// Its spec: `127.0.0.1:8094` or `unix:/run/pyrs.sock`.
    pub fn spec(&self) -> Option<BindSpec> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok().map(BindSpec::Tcp),
            Listener::Unix { listener, .. } => {
                listener.local_addr().ok().and_then(|a| a.as_pathname().map(Path::to_path_buf)).map(BindSpec::Unix)
            }
        }
    }

    /// `http://127.0.0.1:8094` or `unix:/run/pyrs.sock`, for the banner.
    pub fn url(&self) -> String {
        match (self, self.spec()) {
            (Listener::Tcp(_), Some(spec)) => format!("http://{spec}"),
            (_, Some(spec)) => spec.to_string(),
            (_, None) => "an unnamed socket".into(),
        }
    }

    /// For accepting through an event loop.
    pub fn set_nonblocking(&self) -> io::Result<()> {
        set_nonblocking(self.as_raw_fd(), true)
    }

    /// For accepting with blocking calls that return `WouldBlock` after
    /// `wake` (SO_RCVTIMEO applies to accept(2)). Both settings belong to
    /// the socket every process sharing it uses: only processes that all
    /// accept this way may share it.
    pub fn set_blocking_accept(&self, wake: std::time::Duration) -> io::Result<()> {
        set_nonblocking(self.as_raw_fd(), false)?;
        let tv = libc::timeval {
            tv_sec: wake.as_secs() as libc::time_t,
            tv_usec: wake.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: setsockopt reads one timeval from a valid pointer.
        let rc = unsafe {
            libc::setsockopt(
                self.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Stops owning the socket file (a child process owns it now).
    pub fn disown_path(&mut self) {
        if let Listener::Unix { owned, .. } = self {
            if let Some(o) = owned.take() {
                std::mem::forget(o);
            }
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix { listener, .. } => listener.as_raw_fd(),
        }
    }
}

impl mio::event::Source for Listener {
    fn register(&mut self, r: &mio::Registry, t: mio::Token, i: mio::Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.register(r, t, i),
            Listener::Unix { listener, .. } => listener.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &mio::Registry, t: mio::Token, i: mio::Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.reregister(r, t, i),
            Listener::Unix { listener, .. } => listener.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &mio::Registry) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.deregister(r),
            Listener::Unix { listener, .. } => listener.deregister(r),
        }
    }
}

impl Stream {
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nodelay(on),
            Stream::Unix(_) => Ok(()),
        }
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl mio::event::Source for Stream {
    fn register(&mut self, r: &mio::Registry, t: mio::Token, i: mio::Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(r, t, i),
            Stream::Unix(s) => s.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &mio::Registry, t: mio::Token, i: mio::Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(r, t, i),
            Stream::Unix(s) => s.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &mio::Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(r),
            Stream::Unix(s) => s.deregister(r),
        }
    }
}

fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor this process owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = if on { flags | libc::O_NONBLOCK } else { flags & !libc::O_NONBLOCK };
        if libc::fcntl(fd, libc::F_SETFL, flags) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Opens every listener `specs` asks for, or takes the sockets systemd passed
/// (`LISTEN_FDS` for this pid), which then replace `specs`. `unix_mode`: the
/// permissions of the socket files created.
pub fn open_all(specs: &[BindSpec], backlog: u32, unix_mode: Option<u32>) -> Result<Vec<Listener>, String> {
    if let Some(n) = systemd_fds() {
        log::info!("using {n} socket(s) from systemd (LISTEN_FDS) instead of the configured listeners");
        return (0..n).map(|i| from_fd(SD_LISTEN_FDS_START + i, "systemd socket")).collect();
    }
    let mut out = Vec::new();
    for spec in specs {
        match spec {
            BindSpec::Tcp(addr) => out.push(bind_tcp(*addr, backlog)?),
            BindSpec::Localhost(port) => {
                let v4 = bind_tcp(SocketAddr::from(([127, 0, 0, 1], *port)), backlog)?;
                // Port 0: the IPv6 loopback gets the port the IPv4 one got.
                let port = v4.tcp_addr().map(|a| a.port()).unwrap_or(*port);
                out.push(v4);
                match bind_tcp(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)), backlog) {
                    Ok(v6) => out.push(v6),
                    Err(e) => log::info!("localhost: IPv4 only ({e})"),
                }
            }
            BindSpec::Unix(path) => out.push(bind_unix(path, backlog, unix_mode)?),
            BindSpec::Fd(fd) => out.push(from_fd(*fd, "--fd")?),
        }
    }
    Ok(out)
}

/// The listeners a parent pyrs handed over (`ENV_LISTEN_FDS`), if any.
pub fn inherited() -> Result<Option<Vec<Listener>>, String> {
    let Some(n) = std::env::var(ENV_LISTEN_FDS).ok().and_then(|v| v.parse::<i32>().ok()) else {
        return Ok(None);
    };
    let owns = std::env::var_os(ENV_OWNS_PATHS).is_some();
    let mut out = Vec::new();
    for fd in FIRST_INHERITED_FD..FIRST_INHERITED_FD + n {
        let mut l = from_fd(fd, "inherited")?;
        if owns {
            if let Listener::Unix { listener, owned } = &mut l {
                let path = listener.local_addr().ok().and_then(|a| a.as_pathname().map(Path::to_path_buf));
                *owned = path.and_then(|p| Some(OwnedPath { ino: std::fs::metadata(&p).ok()?.ino(), path: p }));
            }
        }
        out.push(l);
    }
    Ok(Some(out))
}

/// `LISTEN_FDS` when `LISTEN_PID` is this process; the variables are
/// removed so that child processes do not take them for theirs.
fn systemd_fds() -> Option<i32> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let n: i32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if pid != std::process::id() || n <= 0 {
        return None;
    }
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    Some(n)
}

/// Takes over a listening socket on descriptor `fd` (TCP or Unix).
fn from_fd(fd: RawFd, what: &str) -> Result<Listener, String> {
    let fail = |e: io::Error| format!("{what} descriptor {fd}: {e}");
    // SAFETY: fcntl and getsockopt on a descriptor number; a closed or
    // non-socket descriptor only makes them fail.
    unsafe {
        if libc::fcntl(fd, libc::F_GETFD) < 0 {
            return Err(fail(io::Error::last_os_error()));
        }
        let mut accepting: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let rc = libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut accepting as *mut libc::c_int).cast(),
            &mut len,
        );
        if rc != 0 || accepting == 0 {
            return Err(format!("{what} descriptor {fd} is not a listening socket"));
        }
        // Not passed on to the processes handler code starts.
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    // SAFETY: fd is an open listening socket this process now owns.
    let socket = unsafe { Socket::from_raw_fd(fd) };
    // The blocking mode is left alone: it belongs to every process sharing
    // the socket, and whoever accepts sets it (Listener::set_nonblocking /
    // set_blocking_accept).
    let domain = socket.local_addr().map_err(fail)?.domain();
    if domain == Domain::UNIX {
        let l: std::os::unix::net::UnixListener = socket.into();
        Ok(Listener::Unix { listener: mio::net::UnixListener::from_std(l), owned: None })
    } else {
        let l: std::net::TcpListener = socket.into();
        Ok(Listener::Tcp(mio::net::TcpListener::from_std(l)))
    }
}

/// A plain blocking-capable std listener on `addr` (the admin listener).
pub fn bind(addr: SocketAddr, backlog: u32) -> Result<std::net::TcpListener, String> {
    match bind_tcp(addr, backlog)? {
        Listener::Tcp(l) => {
            use std::os::fd::{FromRawFd, IntoRawFd};
            // SAFETY: the descriptor is moved from one owner to the other.
            Ok(unsafe { std::net::TcpListener::from_raw_fd(l.into_raw_fd()) })
        }
        Listener::Unix { .. } => Err(format!("cannot listen on {addr}: not a TCP listener")),
    }
}

/// Binds and listens on a TCP address.
pub fn bind_tcp(addr: SocketAddr, backlog: u32) -> Result<Listener, String> {
    let fail = |e| describe(&addr.to_string(), e);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
    // SO_REUSEADDR only (rebinding past TIME_WAIT); never SO_REUSEPORT.
    socket.set_reuse_address(true).map_err(fail)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(fail)?;
    }
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(backlog.min(i32::MAX as u32) as i32).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    let l: std::net::TcpListener = socket.into();
    Ok(Listener::Tcp(mio::net::TcpListener::from_std(l)))
}

fn bind_unix(path: &Path, backlog: u32, mode: Option<u32>) -> Result<Listener, String> {
    let name = format!("unix:{}", path.display());
    let fail = |e| describe(&name, e);
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            // A live server answers a connection; a stale file left by a crash refuses it.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(format!(
                    "cannot listen on {name}: another server is listening on it (stop it, or choose another path)"
                ));
            }
            log::info!("replacing the stale socket file {}", path.display());
            std::fs::remove_file(path).map_err(fail)?;
        }
        Ok(_) => return Err(format!("cannot listen on {name}: the path exists and is not a socket")),
        Err(_) => {}
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(fail)?;
    let addr = socket2::SockAddr::unix(path).map_err(fail)?;
    socket.bind(&addr).map_err(fail)?;
    let ino = std::fs::metadata(path).map_err(fail)?.ino();
    let owned = OwnedPath { path: path.to_path_buf(), ino };
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(fail)?;
    }
    socket.listen(backlog.min(i32::MAX as u32) as i32).map_err(fail)?;
    socket.set_nonblocking(true).map_err(fail)?;
    let l: std::os::unix::net::UnixListener = socket.into();
    Ok(Listener::Unix { listener: mio::net::UnixListener::from_std(l), owned: Some(owned) })
}

fn describe(what: &str, e: io::Error) -> String {
    let hint = if e.kind() == io::ErrorKind::AddrInUse {
        " (another process is listening there; stop it, or choose another address with --bind)"
    } else {
        ""
    };
    format!("cannot listen on {what}: {e}{hint}")
}

/// Runs in a child between fork and exec: puts `sources[i]` on descriptor
/// `targets[i]` (not close-on-exec) for the program exec'd next. `scratch`
/// is as long as `sources`. Only async-signal-safe calls.
pub fn dup_into_place(sources: &[RawFd], targets: &[RawFd], scratch: &mut [RawFd]) -> io::Result<()> {
    // First out of the way (close-on-exec copies above every target), then into place.
    for (i, &fd) in sources.iter().enumerate() {
        // SAFETY: fcntl on a descriptor of this (forked) process.
        let high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 64) };
        if high < 0 {
            return Err(io::Error::last_os_error());
        }
        scratch[i] = high;
    }
    for (&high, &target) in scratch.iter().zip(targets) {
        // SAFETY: dup2 onto a descriptor number this process may overwrite.
        if unsafe { libc::dup2(high, target) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The banner's first part: `Address: 127.0.0.1, port: 8094` or `Address: unix:/run/pyrs.sock`.
pub fn describe_first(listeners: &[Listener]) -> String {
    match listeners.first().map(|l| (l.tcp_addr(), l.spec())) {
        Some((Some(a), _)) => format!("Address: {}, port: {}", a.ip(), a.port()),
        Some((None, Some(spec))) => format!("Address: {spec}"),
        _ => "Address: none".into(),
    }
}

/// What differs between the configured listeners and the open ones (a reload
/// cannot move them), if anything.
pub fn differences(specs: &[BindSpec], open: &[Listener]) -> Option<String> {
    let open_specs: Vec<BindSpec> = open.iter().filter_map(Listener::spec).collect();
    let missing: Vec<String> = specs
        .iter()
        .filter(|spec| match spec {
            BindSpec::Tcp(a) => a.port() != 0 && !open_specs.contains(spec),
            BindSpec::Localhost(p) => {
                *p != 0 && !open_specs.contains(&BindSpec::Tcp(SocketAddr::from(([127, 0, 0, 1], *p))))
            }
            BindSpec::Unix(_) => !open_specs.contains(spec),
            BindSpec::Fd(_) => false,
        })
        .map(BindSpec::to_string)
        .collect();
    if missing.is_empty() {
        return None;
    }
    let open: Vec<String> = open_specs.iter().map(BindSpec::to_string).collect();
    Some(format!(
        "the configuration now says to listen on {} but pyrs listens on {}",
        missing.join(", "),
        open.join(", ")
    ))
}
