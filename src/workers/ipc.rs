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

/// Writes one message with a single write(2), again when a signal
/// interrupted it before it wrote anything (EINTR: a worker's blocked write
/// to a full pipe returns it when its SIGURG arrives, which has no
/// SA_RESTART; the message must not be lost).
pub fn send(fd: RawFd, msg: &Message) -> io::Result<()> {
    let line = msg.encode();
    loop {
        // SAFETY: writes from a valid buffer of the given length.
        let n = unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
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

    /// A send blocked on a full pipe and interrupted by a signal without
    /// SA_RESTART (EINTR) still delivers its message once there is room.
    #[test]
    fn an_interrupted_send_is_retried() {
        use std::io::Read;
        use std::os::fd::FromRawFd;
        use std::os::unix::thread::JoinHandleExt;
        extern "C" fn nothing(_: libc::c_int) {}
        // SAFETY: a do-nothing SIGURG handler without SA_RESTART (as server::interrupt_accept installs).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = nothing as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGURG, &sa, std::ptr::null_mut());
        }
        let (r, w) = pipe().unwrap();
        // Fill the pipe (non-blocking for that), then make the write end blocking again.
        // SAFETY: fcntl and write on the pipe this test made.
        unsafe {
            let flags = libc::fcntl(w, libc::F_GETFL);
            libc::fcntl(w, libc::F_SETFL, flags | libc::O_NONBLOCK);
            let junk = [b'x'; 4096];
            while libc::write(w, junk.as_ptr().cast(), junk.len()) > 0 {}
            while libc::write(w, junk.as_ptr().cast(), 1) > 0 {}
            libc::fcntl(w, libc::F_SETFL, flags);
        }
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let sender = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tid_tx.send(unsafe { libc::gettid() }).unwrap();
            send(w, &Message::Beat { slot: 1, gen: 2, pid: 3 })
        });
        let tid = tid_rx.recv().unwrap();
        let stat = format!("/proc/self/task/{tid}/stat");
        let blocked = || {
            // The state follows the command name in parentheses: S = sleeping (in write).
            std::fs::read_to_string(&stat).is_ok_and(|s| s.rsplit(") ").next().is_some_and(|t| t.starts_with('S')))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !blocked() {
            assert!(std::time::Instant::now() < deadline, "the sender never blocked on the full pipe");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // The blocked write returns EINTR to send().
        // SAFETY: the thread is alive (it cannot finish while the pipe is full).
        unsafe { libc::pthread_kill(sender.as_pthread_t(), libc::SIGURG) };
        // Drain the pipe until the message arrived or the sender gave up (non-blocking
        // reads: a send that failed writes nothing, and the test must fail, not hang).
        // SAFETY: fcntl on the read end, which File owns (and closes) from here on.
        let mut reader = unsafe {
            libc::fcntl(r, libc::F_SETFL, libc::fcntl(r, libc::F_GETFL) | libc::O_NONBLOCK);
            std::fs::File::from_raw_fd(r)
        };
        let mut all = Vec::new();
        let mut buf = [0u8; 65536];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !all.ends_with(b"\n") {
            let finished = sender.is_finished();
            match reader.read(&mut buf) {
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && finished => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::Interrupted => {
                    assert!(std::time::Instant::now() < deadline, "the message never arrived");
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => panic!("reading the pipe: {e}"),
            }
        }
        let sent = sender.join().unwrap();
        assert!(sent.is_ok(), "send failed instead of retrying: {sent:?}");
        let text = String::from_utf8_lossy(&all);
        assert_eq!(text.trim_start_matches('x'), "beat 1 2 3\n");
        close(w);
    }
}
