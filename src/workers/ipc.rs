//! The messages between the master, templates and workers, and the pipes
//! that carry them. Each message is one text line written with a single
//! write(2), shorter than PIPE_BUF, so concurrent writers never interleave.

use std::io;
use std::os::fd::RawFd;

/// In a template: where status lines go (inherited by its workers).
pub const STATUS_FD: RawFd = 3;
/// In a template: where commands come from.
pub const COMMAND_FD: RawFd = 4;

const MAX_LINE: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A template finished loading and can fork workers.
    Ready { gen: u64, pid: i32 },
    /// A worker process exists (sent first thing after the fork).
    Born { slot: usize, gen: u64, pid: i32 },
    /// A worker is listening and serving.
    Up { slot: usize, gen: u64, pid: i32 },
    /// A worker could not start; it exits 1 after sending this.
    Fatal { slot: usize, gen: u64, pid: i32, message: String },
    /// A worker asks to be replaced (max_requests); it drains once its
    /// replacement listens.
    Recycle { slot: usize, gen: u64, pid: i32, reason: String },
    /// A worker is over `max_rss_mb`: replace it and stop it at once.
    Over { slot: usize, gen: u64, pid: i32, reason: String },
    /// A worker is alive (every second, from its watchdog thread).
    Beat { slot: usize, gen: u64, pid: i32 },
    /// A worker is about to kill itself: a handler for `route` stayed stuck
    /// past `timeout` and the grace after `pyrs.Timeout`.
    Timeout { slot: usize, gen: u64, pid: i32, route: String },
}

impl Message {
    pub fn encode(&self) -> String {
        let flat = |s: &str| s.replace(['\n', '\r'], " | ");
        let mut line = match self {
            Message::Ready { gen, pid } => format!("ready {gen} {pid}"),
            Message::Born { slot, gen, pid } => format!("born {slot} {gen} {pid}"),
            Message::Up { slot, gen, pid } => format!("up {slot} {gen} {pid}"),
            Message::Fatal { slot, gen, pid, message } => format!("fatal {slot} {gen} {pid} {}", flat(message)),
            Message::Recycle { slot, gen, pid, reason } => format!("recycle {slot} {gen} {pid} {}", flat(reason)),
            Message::Over { slot, gen, pid, reason } => format!("over {slot} {gen} {pid} {}", flat(reason)),
            Message::Beat { slot, gen, pid } => format!("beat {slot} {gen} {pid}"),
            Message::Timeout { slot, gen, pid, route } => format!("timeout {slot} {gen} {pid} {}", flat(route)),
        };
        if line.len() > MAX_LINE - 1 {
            let mut cut = MAX_LINE - 1;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        line.push('\n');
        line
    }

    /// The worker slot the message is about (None for a template's).
    pub fn slot(&self) -> Option<usize> {
        match self {
            Message::Ready { .. } => None,
            Message::Born { slot, .. }
            | Message::Up { slot, .. }
            | Message::Fatal { slot, .. }
            | Message::Recycle { slot, .. }
            | Message::Over { slot, .. }
            | Message::Beat { slot, .. }
            | Message::Timeout { slot, .. } => Some(*slot),
        }
    }

    pub fn parse(line: &str) -> Option<Message> {
        let mut parts = line.trim_end().splitn(5, ' ');
        let kind = parts.next()?;
        if kind == "ready" {
            let gen = parts.next()?.parse().ok()?;
            let pid = parts.next()?.parse().ok()?;
            return Some(Message::Ready { gen, pid });
        }
        let slot = parts.next()?.parse().ok()?;
        let gen = parts.next()?.parse().ok()?;
        let pid = parts.next()?.parse().ok()?;
        let rest = parts.next().unwrap_or("").to_string();
        Some(match kind {
            "born" => Message::Born { slot, gen, pid },
            "up" => Message::Up { slot, gen, pid },
            "fatal" => Message::Fatal { slot, gen, pid, message: rest },
            "recycle" => Message::Recycle { slot, gen, pid, reason: rest },
            "over" => Message::Over { slot, gen, pid, reason: rest },
            "beat" => Message::Beat { slot, gen, pid },
            "timeout" => Message::Timeout { slot, gen, pid, route: rest },
            _ => return None,
        })
    }
}

/// Writes one message with a single write(2).
pub fn send(fd: RawFd, msg: &Message) -> io::Result<()> {
    let line = msg.encode();
    // SAFETY: writes from a valid buffer of the given length.
    let n = unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A pipe whose ends are close-on-exec: (read, write).
pub fn pipe() -> io::Result<(RawFd, RawFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((fds[0], fds[1]))
}

pub fn close(fd: RawFd) {
    // SAFETY: closing a descriptor this process owns.
    unsafe {
        libc::close(fd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let msgs = [
            Message::Ready { gen: 2, pid: 10 },
            Message::Born { slot: 1, gen: 2, pid: 11 },
            Message::Up { slot: 1, gen: 2, pid: 11 },
            Message::Fatal { slot: 0, gen: 1, pid: 12, message: "post_fork raised:\nValueError: x".into() },
            Message::Recycle { slot: 3, gen: 1, pid: 13, reason: "served 1000 requests".into() },
            Message::Over { slot: 3, gen: 1, pid: 13, reason: "private memory 120 MB".into() },
            Message::Beat { slot: 2, gen: 4, pid: 14 },
            Message::Timeout { slot: 1, gen: 1, pid: 15, route: "/users/{id}".into() },
        ];
        for m in msgs {
            let line = m.encode();
            assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
            let back = Message::parse(&line).unwrap();
            match (&m, &back) {
                (Message::Fatal { .. }, Message::Fatal { message, .. }) => {
                    assert_eq!(message, "post_fork raised: | ValueError: x")
                }
                _ => assert_eq!(m, back),
            }
        }
        assert_eq!(Message::parse("nonsense"), None);
        assert!(Message::Fatal { slot: 0, gen: 1, pid: 1, message: "é".repeat(2000) }.encode().len() <= MAX_LINE);
    }
}
