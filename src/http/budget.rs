//! The process-wide memory budget for what connections buffer: request
//! bodies being received and response bytes not yet sent. Connections
//! charge what they hold; past the limit, new requests are refused with 503,
//! bodies of unknown length stop being read and streams stop being pulled,
//! until sending frees memory. The default comes from the machine: a
//! quarter of the smallest of physical memory, the cgroup's memory limit
//! and the address-space limit (`ulimit -v`).
//!
//! What leaves a connection but stays in memory (a request body waiting in
//! a batch queue) is charged through a [`Charge`] until it is released.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const MIB: usize = 1024 * 1024;
/// The smallest default budget.
const MIN_DEFAULT: usize = 32 * MIB;

#[derive(Debug)]
pub struct MemoryBudget {
    /// Bytes; 0: unlimited.
    limit: usize,
    used: AtomicUsize,
}

impl PartialEq for MemoryBudget {
    fn eq(&self, other: &Self) -> bool {
        self.limit == other.limit
    }
}

impl MemoryBudget {
    /// A budget of `limit` bytes (0: unlimited).
    pub fn new(limit: usize) -> Self {
        MemoryBudget { limit, used: AtomicUsize::new(0) }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The budget is spent: refuse new requests.
    pub fn over(&self) -> bool {
        self.limit != 0 && self.used() >= self.limit
    }

    /// Whether `n` more bytes fit.
    pub fn fits(&self, n: u64) -> bool {
        self.limit == 0 || (self.used() as u64).saturating_add(n) <= self.limit as u64
    }

    /// A holder's charge changes from `before` to `after` bytes.
    pub fn recharge(&self, before: usize, after: usize) {
        if after > before {
            self.used.fetch_add(after - before, Ordering::Relaxed);
        } else if before > after {
            self.used.fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    /// Charges `bytes` held outside any connection until the returned
    /// [`Charge`] is released or dropped.
    pub fn hold(self: &Arc<Self>, bytes: usize) -> Charge {
        if self.limit == 0 || bytes == 0 {
            return Charge::default();
        }
        self.recharge(0, bytes);
        Charge { budget: Some(self.clone()), bytes }
    }

    /// A quarter of the smallest memory limit that applies to this process,
    /// shared by `processes` worker processes (1 for a single process), and
    /// never under 32 MiB each.
    pub fn default_limit(processes: usize) -> usize {
        let mut limits = Vec::new();
        if let Some(kb) = meminfo_total_kb() {
            limits.push(kb.saturating_mul(1024));
        }
        for path in ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"] {
            if let Some(v) = std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse::<u64>().ok()) {
                limits.push(v);
            }
        }
        for resource in [libc::RLIMIT_AS, libc::RLIMIT_DATA] {
            let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: getrlimit writes one rlimit through the valid pointer.
            if unsafe { libc::getrlimit(resource, &mut r) } == 0 && r.rlim_cur != libc::RLIM_INFINITY {
                limits.push(r.rlim_cur);
            }
        }
        let smallest = limits.into_iter().min().unwrap_or(4 << 30);
        let share = smallest / 4 / u64::try_from(processes.max(1)).unwrap_or(u64::MAX);
        usize::try_from(share).unwrap_or(usize::MAX).max(MIN_DEFAULT)
    }
}

/// Bytes charged to a budget by something other than a connection; given
/// back when released or dropped.
#[derive(Debug, Default)]
pub struct Charge {
    budget: Option<Arc<MemoryBudget>>,
    bytes: usize,
}

impl Charge {
    /// Gives the bytes back now (the holder no longer has them).
    pub fn release(&mut self) {
        if let Some(budget) = self.budget.take() {
            budget.recharge(self.bytes, 0);
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.release();
    }
}

fn meminfo_total_kb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_and_limits() {
        let b = MemoryBudget::new(100);
        assert!(b.fits(100) && !b.fits(101) && !b.over());
        b.recharge(0, 60);
        b.recharge(0, 40);
        assert!(b.over() && !b.fits(1));
        b.recharge(60, 10);
        assert_eq!(b.used(), 50);
        let unlimited = MemoryBudget::new(0);
        unlimited.recharge(0, usize::MAX / 2);
        assert!(!unlimited.over() && unlimited.fits(u64::MAX));
        let one = MemoryBudget::default_limit(1);
        assert!(one >= MIN_DEFAULT);
        // Shared by worker processes, never below the floor.
        assert_eq!(MemoryBudget::default_limit(4), (one / 4).max(MIN_DEFAULT));
        assert_eq!(MemoryBudget::default_limit(1 << 30), MIN_DEFAULT);
        assert_eq!(MemoryBudget::default_limit(0), one);
    }

    #[test]
    fn a_hold_is_charged_until_released_or_dropped() {
        let b = Arc::new(MemoryBudget::new(100));
        let mut held = b.hold(70);
        let other = b.hold(30);
        assert!(b.over());
        held.release();
        held.release();
        assert_eq!(b.used(), 30);
        drop(other);
        assert_eq!(b.used(), 0);
        let unlimited = Arc::new(MemoryBudget::new(0));
        let _free = unlimited.hold(1 << 30);
        assert_eq!(unlimited.used(), 0);
    }
}
