//! SIGINT and SIGTERM, delivered to the acceptor's event loop through a
//! self-pipe. Installed before Python starts, so Python never sees them (no
//! stray KeyboardInterrupt in a handler).

use mio::net::UnixStream;
use signal_hook::consts::{SIGINT, SIGTERM};
use std::io::{self, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct SignalPipe {
    receiver: UnixStream,
    last: Arc<AtomicUsize>,
}

impl SignalPipe {
    /// Installs the handlers.
    pub fn install() -> io::Result<SignalPipe> {
        let (read, write) = std::os::unix::net::UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let last = Arc::new(AtomicUsize::new(0));
        for sig in [SIGINT, SIGTERM] {
            // Record which signal came before waking the loop.
            signal_hook::flag::register_usize(sig, last.clone(), sig as usize)?;
            signal_hook::low_level::pipe::register(sig, write.try_clone()?)?;
        }
        Ok(SignalPipe { receiver: UnixStream::from_std(read), last })
    }

    pub fn receiver(&mut self) -> &mut UnixStream {
        &mut self.receiver
    }

    /// The signals received since the last call, by name.
    pub fn drain(&mut self) -> Vec<&'static str> {
        let mut buf = [0u8; 64];
        let mut out = Vec::new();
        loop {
            match self.receiver.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let name = match self.last.load(Ordering::Acquire) as i32 {
                        SIGINT => "SIGINT",
                        _ => "SIGTERM",
                    };
                    out.extend(std::iter::repeat_n(name, n));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        out
    }
}
