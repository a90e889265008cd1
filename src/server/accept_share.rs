//! Worker mode: the workers of one generation share a burst of new
//! connections. Each worker accepts with blocking accept(2) on the sockets
//! it shares with its siblings; the kernel wakes one waiter per arrival, but
//! a thread that is already running finds the queue non-empty and would
//! drain a whole burst before a sibling's woken thread runs. So each worker
//! publishes, in a small table the template maps (shared, anonymous) before
//! it forks, its open connections (counted as they open and close) and
//! until when it is known to accept (refreshed by its accept threads); a
//! worker that holds clearly more than the average of the live, accepting
//! workers leaves the queue to them for a millisecond at a time (nginx's
//! `accept_disabled` idea), at most [`MAX_YIELD`] in a row.
//!
//! Never a connection stranded: a worker alone (or whose siblings are
//! draining, stopped, stuck past half the timeout, dead or of another
//! generation) sees no accepting sibling and accepts as before; a sibling's
//! entry counts only while its accept thread keeps it fresh ([`FRESH_MS`])
//! and its process exists. A single process never looks at the table.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// Entries (one per worker slot); a slot past the table does not take part.
pub const SLOTS: usize = 256;
/// How long an entry's "accepting" stamp holds (an idle accept thread
/// refreshes it at least every `SHARED_ACCEPT_WAKE`, 100 ms).
const FRESH_MS: u64 = 400;
/// One yield: how long an over-share worker leaves the queue to its siblings.
pub const YIELD: Duration = Duration::from_millis(1);
/// Yields in a row at most: then the worker accepts one connection anyway
/// (a sibling that looks alive but does not run must not hold connections up).
pub const MAX_YIELD: u32 = 20;

/// One worker's entry, a cache line of its own.
#[repr(C, align(64))]
struct Entry {
    /// The pid of the worker that owns the entry (0: never used).
    owner: AtomicU64,
    /// CLOCK_MONOTONIC milliseconds until which the worker is known to accept (0: not accepting).
    accepting_until: AtomicU64,
    /// Its open connections.
    connections: AtomicU64,
}

struct Table {
    entries: &'static [Entry],
}

static TABLE: OnceLock<Table> = OnceLock::new();

/// The template, before it forks any worker: maps the shared table (kept for
/// the process's life, inherited by every worker it forks). Without it the
/// workers accept as they come (a warning says so).
pub fn create() {
    let len = SLOTS * std::mem::size_of::<Entry>();
    // SAFETY: a fresh anonymous shared mapping, checked for failure; zeroed
    // memory is a valid `Entry` (atomics), and the mapping is never unmapped.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        log::warn!(
            "cannot map the accept table ({}); workers will not balance bursts of connections",
            std::io::Error::last_os_error()
        );
        return;
    }
    // SAFETY: see above; page-aligned, so 64-byte aligned.
    let entries = unsafe { std::slice::from_raw_parts(ptr as *const Entry, SLOTS) };
    let _ = TABLE.set(Table { entries });
}

fn now_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

fn alive(pid: u64) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    pid != 0 && (unsafe { libc::kill(pid as libc::pid_t, 0) } == 0)
}

/// A worker's place in the table.
#[derive(Clone, Copy)]
pub struct Member {
    entries: &'static [Entry],
    slot: usize,
    pid: u64,
}

impl Member {
    /// A worker in `slot`: takes the slot's entry (a replacement overwrites
    /// the entry of the worker it replaces). None without a table or past it.
    pub fn join(slot: usize) -> Option<Member> {
        let entries = TABLE.get()?.entries;
        if slot >= entries.len() {
            return None;
        }
        let m = Member { entries, slot, pid: u64::from(std::process::id()) };
        let e = &entries[slot];
        e.accepting_until.store(0, Ordering::Release);
        e.connections.store(0, Ordering::Release);
        e.owner.store(m.pid, Ordering::Release);
        Some(m)
    }

    fn mine(&self) -> Option<&Entry> {
        let e = &self.entries[self.slot];
        (e.owner.load(Ordering::Acquire) == self.pid).then_some(e)
    }

    /// Publishes that this worker accepts (or not: draining, stuck). Leaves
    /// an entry a newer worker took alone (as do `opened` and `closed`).
    pub fn accepting(&self, accepting: bool) {
        if let Some(e) = self.mine() {
            e.accepting_until.store(if accepting { now_ms() + FRESH_MS } else { 0 }, Ordering::Release);
        }
    }

    /// One more open connection (counted where the pool threads count theirs,
    /// so an idle sibling's count is never stale).
    pub fn opened(&self) {
        if let Some(e) = self.mine() {
            e.connections.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// One connection fewer.
    pub fn closed(&self) {
        if let Some(e) = self.mine() {
            let _ = e.connections.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }

    /// Whether this worker, holding `mine` connections, should leave new
    /// ones to its siblings for now: only when some live sibling accepts and
    /// `mine` exceeds the average over the accepting workers (this one
    /// included) by more than a slack of max(1, average / 8).
    pub fn over_share(&self, mine: usize) -> bool {
        if mine < 2 {
            return false;
        }
        let now = now_ms();
        let (mut workers, mut total) = (1u64, mine as u64);
        for (i, e) in self.entries.iter().enumerate() {
            if i == self.slot || e.accepting_until.load(Ordering::Acquire) < now {
                continue;
            }
            let owner = e.owner.load(Ordering::Acquire);
            if owner == self.pid || !alive(owner) {
                continue;
            }
            workers += 1;
            total += e.connections.load(Ordering::Acquire);
        }
        over(mine as u64, workers, total)
    }
}

/// `mine > average + max(1, average / 8)` over `workers` holding `total`, in integers.
fn over(mine: u64, workers: u64, total: u64) -> bool {
    if workers < 2 {
        return false;
    }
    let slack = (total / (8 * workers)).max(1);
    mine * workers > total + slack * workers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alone_never_over_share() {
        assert!(!over(1000, 1, 1000));
    }

    #[test]
    fn over_share_needs_clearly_more_than_the_average() {
        // Two workers: 3 against 0 is over (average 1.5, slack 1); 2 against 0 is not.
        assert!(over(3, 2, 3));
        assert!(!over(2, 2, 2));
        assert!(!over(9, 2, 16));
        assert!(over(10, 2, 16));
        // Large counts: slack is an eighth of the average.
        assert!(!over(110, 2, 200));
        assert!(over(114, 2, 200));
    }

    #[test]
    fn siblings_count_only_while_fresh_and_alive() {
        create();
        let me = Member::join(0).unwrap();
        me.accepting(true);
        me.opened();
        me.closed();
        me.closed();
        assert_eq!(TABLE.get().unwrap().entries[0].connections.load(Ordering::Acquire), 0, "never below 0");
        assert!(!me.over_share(5), "alone");
        // A live sibling (this test process's parent stands in for it) that accepts.
        let sibling = &TABLE.get().unwrap().entries[1];
        sibling.owner.store(u64::from(std::os::unix::process::parent_id()), Ordering::Release);
        sibling.connections.store(0, Ordering::Release);
        sibling.accepting_until.store(now_ms() + FRESH_MS, Ordering::Release);
        assert!(me.over_share(5));
        assert!(!me.over_share(1));
        // Not accepting (draining), or stale: no longer a sibling to leave connections to.
        sibling.accepting_until.store(0, Ordering::Release);
        assert!(!me.over_share(5));
        sibling.accepting_until.store(now_ms().saturating_sub(1), Ordering::Release);
        assert!(!me.over_share(5));
        // Dead.
        sibling.accepting_until.store(now_ms() + FRESH_MS, Ordering::Release);
        sibling.owner.store(0x3FFF_FFFF, Ordering::Release);
        assert!(!me.over_share(5));
        // Past the table: no member.
        assert!(Member::join(SLOTS).is_none());
    }
}
