//! Giving memory back to the OS after a burst. glibc keeps freed heap memory
//! in its arenas (one per pool thread), so after a burst of large responses
//! the process stays at its peak RSS (2000 reset 256 KB responses left
//! 370 MB resident). The acceptor calls [`Trim::tick`] about once a second
//! with the connections accepted so far and open now; once neither changed
//! for a second after one did, [`release`] runs in a short-lived thread: the
//! application's `idle` (Python: take the GIL once, which frees the objects
//! of connections closed without it, such as `bytes` bodies), then
//! `malloc_trim(0)`, which returns every arena's free pages. It never runs
//! while connections come and go, and at most once per quiet spell; the
//! acceptor never waits for it (the GIL may be busy).

use std::time::{Duration, Instant};

/// Quiet time (no connection opened or closed) before trimming.
const QUIET: Duration = Duration::from_secs(1);

pub struct Trim {
    /// (accepted, open) connections at the last look.
    seen: (u64, usize),
    /// When that number last changed.
    changed: Instant,
    /// Connections arrived since the last trim.
    pending: bool,
}

impl Default for Trim {
    fn default() -> Self {
        Trim { seen: (0, 0), changed: Instant::now(), pending: false }
    }
}

impl Trim {
    pub fn new() -> Self {
        Self::default()
    }

    /// Connections accepted so far and open now. True when they stopped
    /// changing a while ago: time to [`release`] memory.
    pub fn tick(&mut self, accepted: u64, open: usize) -> bool {
        if (accepted, open) != self.seen {
            self.seen = (accepted, open);
            self.changed = Instant::now();
            self.pending = true;
            return false;
        }
        if !self.pending || self.changed.elapsed() < QUIET {
            return false;
        }
        self.pending = false;
        true
    }
}

/// Frees what `app` holds for closed connections, then returns free heap
/// pages to the OS; in its own thread.
pub fn release<A: crate::app::App>(app: &std::sync::Arc<A>) {
    let app = app.clone();
    let spawned = std::thread::Builder::new().name("pyrs-trim".into()).spawn(move || {
        app.idle();
        // SAFETY: malloc_trim has no preconditions; glibc locks each arena.
        unsafe { libc::malloc_trim(0) };
    });
    if let Err(e) = spawned {
        log::debug!("cannot start the memory trim thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_per_quiet_spell() {
        let mut t = Trim::new();
        assert!(!t.tick(0, 0), "nothing happened yet");
        assert!(!t.tick(5, 5), "connections arriving");
        t.changed -= QUIET;
        assert!(t.tick(5, 5));
        assert!(!t.tick(5, 5), "once per quiet spell");
        assert!(!t.tick(5, 0), "connections closing");
        t.changed -= QUIET;
        assert!(t.tick(5, 0));
    }
}
