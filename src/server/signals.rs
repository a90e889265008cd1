//! Signals delivered to an event loop through a self-pipe: each signal
//! writes its number as one byte, the loop reads and acts on them in order.
//! Installed before Python starts, so Python never sees them (no stray
//! KeyboardInterrupt in a handler).

use mio::net::UnixStream;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGTTIN, SIGTTOU};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, IntoRawFd};

/// A received signal; `Display` gives its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal(pub i32);

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.0 {
            SIGINT => "SIGINT",
            SIGTERM => "SIGTERM",
            SIGHUP => "SIGHUP",
            SIGCHLD => "SIGCHLD",
            SIGTTIN => "SIGTTIN",
            SIGTTOU => "SIGTTOU",
            n => return write!(f, "signal {n}"),
        };
        f.write_str(name)
    }
}

pub struct SignalPipe {
    receiver: UnixStream,
}

impl SignalPipe {
    /// SIGINT and SIGTERM: what a single server process handles.
    pub fn install() -> io::Result<SignalPipe> {
        Self::install_for(&[SIGINT, SIGTERM])
    }

    /// Routes each of `signals` into the pipe.
    pub fn install_for(signals: &[i32]) -> io::Result<SignalPipe> {
        let (read, write) = std::os::unix::net::UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        // The write end lives for the rest of the process: the handlers use it.
        let fd = write.into_raw_fd();
        for &sig in signals {
            // SAFETY: the handler only calls write(2), which is async-signal-safe,
            // on a descriptor that is never closed.
            unsafe {
                signal_hook::low_level::register(sig, move || {
                    let byte = sig as u8;
                    libc::write(fd, std::ptr::addr_of!(byte).cast(), 1);
                })?;
            }
        }
        Ok(SignalPipe { receiver: UnixStream::from_std(read) })
    }

    pub fn receiver(&mut self) -> &mut UnixStream {
        &mut self.receiver
    }

    pub fn raw_fd(&self) -> i32 {
        self.receiver.as_raw_fd()
    }

    /// The signals received since the last call, in order.
    pub fn drain(&mut self) -> Vec<Signal> {
        let mut buf = [0u8; 64];
        let mut out = Vec::new();
        loop {
            match self.receiver.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend(buf[..n].iter().map(|&b| Signal(i32::from(b)))),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        out
    }
}
