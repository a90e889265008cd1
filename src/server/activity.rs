//! What each pool thread is doing right now, readable from other threads:
//! which route's handler it is running and since when, and how many requests
//! the process has answered. The worker watchdog reads it to enforce
//! `timeout` and `max_requests`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct ThreadActivity {
    /// Microseconds since `Activity::epoch` when the current handler began, plus one; 0 when idle.
    busy_since: AtomicU64,
    route: AtomicUsize,
}

#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    threads: Vec<ThreadActivity>,
    requests: AtomicU64,
}

impl Activity {
    pub fn new(threads: usize) -> Activity {
        Activity {
            epoch: Instant::now(),
            threads: (0..threads)
                .map(|_| ThreadActivity { busy_since: AtomicU64::new(0), route: AtomicUsize::new(0) })
                .collect(),
            requests: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64 + 1
    }

    /// Thread `thread` starts running the handler of route `route`.
    pub fn begin(&self, thread: usize, route: usize) {
        if let Some(t) = self.threads.get(thread) {
            t.route.store(route, Ordering::Relaxed);
            t.busy_since.store(self.now(), Ordering::Release);
        }
    }

    /// Thread `thread` finished its handler.
    pub fn end(&self, thread: usize) {
        if let Some(t) = self.threads.get(thread) {
            t.busy_since.store(0, Ordering::Release);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The longest-running handler now: (how long, route id).
    pub fn longest_busy(&self) -> Option<(Duration, usize)> {
        let now = self.now();
        self.threads
            .iter()
            .filter_map(|t| {
                let since = t.busy_since.load(Ordering::Acquire);
                (since != 0)
                    .then(|| (Duration::from_micros(now.saturating_sub(since)), t.route.load(Ordering::Relaxed)))
            })
            .max_by_key(|(d, _)| *d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_the_longest_handler() {
        let a = Activity::new(2);
        assert_eq!(a.longest_busy(), None);
        a.begin(0, 7);
        std::thread::sleep(Duration::from_millis(5));
        a.begin(1, 3);
        let (d, route) = a.longest_busy().unwrap();
        assert_eq!(route, 7);
        assert!(d >= Duration::from_millis(5));
        a.end(0);
        a.end(1);
        assert_eq!(a.longest_busy(), None);
        assert_eq!(a.requests(), 2);
    }
}
