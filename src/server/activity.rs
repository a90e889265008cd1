//! What each pool thread (and batch thread) is doing right now, readable from other threads:
//! which route's handler it is running and since when, its thread id, and
//! how many requests the process has answered. The timeout watchdog reads it
//! to enforce `timeout`, the worker watchdog for `max_requests`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct ThreadActivity {
    /// Microseconds since `Activity::epoch` when the current handler began, plus one; 0 when idle.
    busy_since: AtomicU64,
    route: AtomicUsize,
    /// The thread's pthread id (CPython's `threading.get_ident()`), once it runs.
    ident: AtomicU64,
    /// The running request's id (ASCII, 8 bytes a word, zero-padded), for the timeout log.
    request_id: [AtomicU64; ID_WORDS],
}

const ID_WORDS: usize = crate::http::request_id::MAX_LEN / 8;

/// One handler run, as the timeout watchdog sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    pub thread: usize,
    /// Identifies this run (its start); a later run of the thread differs.
    pub token: u64,
    pub elapsed: Duration,
    pub route: usize,
    pub ident: u64,
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
                .map(|_| ThreadActivity {
                    busy_since: AtomicU64::new(0),
                    route: AtomicUsize::new(0),
                    ident: AtomicU64::new(0),
                    request_id: std::array::from_fn(|_| AtomicU64::new(0)),
                })
                .collect(),
            requests: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64 + 1
    }

    /// Records the calling thread as pool thread `thread`.
    pub fn register_thread(&self, thread: usize) {
        if let Some(t) = self.threads.get(thread) {
            // SAFETY: pthread_self has no preconditions.
            t.ident.store(unsafe { libc::pthread_self() } as u64, Ordering::Release);
        }
    }

    /// Every handler running now.
    pub fn busy(&self) -> Vec<Busy> {
        let now = self.now();
        self.threads
            .iter()
            .enumerate()
            .filter_map(|(thread, t)| {
                let since = t.busy_since.load(Ordering::Acquire);
                (since != 0).then(|| Busy {
                    thread,
                    token: since,
                    elapsed: Duration::from_micros(now.saturating_sub(since)),
                    route: t.route.load(Ordering::Relaxed),
                    ident: t.ident.load(Ordering::Acquire),
                })
            })
            .collect()
    }

    /// True while `run` is still the handler its thread runs.
    pub fn still_running(&self, run: &Busy) -> bool {
        self.threads.get(run.thread).is_some_and(|t| t.busy_since.load(Ordering::Acquire) == run.token)
    }

    /// Thread `thread` starts running the handler of route `route`.
    pub fn begin(&self, thread: usize, route: usize) {
        if let Some(t) = self.threads.get(thread) {
            t.route.store(route, Ordering::Relaxed);
            t.busy_since.store(self.now(), Ordering::Release);
        }
    }

    /// Thread `thread`'s current request has id `id` (call before [`Activity::begin`]).
    pub fn set_request_id(&self, thread: usize, id: &[u8]) {
        if let Some(t) = self.threads.get(thread) {
            let mut chunks = id.chunks(8);
            for word in &t.request_id {
                let mut w = [0u8; 8];
                let Some(c) = chunks.next() else {
                    word.store(0, Ordering::Relaxed);
                    break;
                };
                w[..c.len()].copy_from_slice(c);
                word.store(u64::from_le_bytes(w), Ordering::Relaxed);
            }
        }
    }

    /// The id of the request thread `thread` runs (as last set).
    pub fn request_id(&self, thread: usize) -> String {
        let Some(t) = self.threads.get(thread) else { return String::new() };
        let mut bytes = Vec::with_capacity(32);
        for word in &t.request_id {
            let w = word.load(Ordering::Relaxed).to_le_bytes();
            let n = w.iter().position(|&b| b == 0).unwrap_or(8);
            bytes.extend_from_slice(&w[..n]);
            if n < 8 {
                break;
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Thread `thread` finished its handler.
    pub fn end(&self, thread: usize) {
        self.end_many(thread, 1);
    }

    /// Thread `thread` finished a handler call that answered `n` requests (a batch).
    pub fn end_many(&self, thread: usize, n: u64) {
        if let Some(t) = self.threads.get(thread) {
            t.busy_since.store(0, Ordering::Release);
        }
        self.requests.fetch_add(n, Ordering::Relaxed);
    }

    /// Thread `thread` finished pulling a stream item (not a request).
    pub fn end_pull(&self, thread: usize) {
        if let Some(t) = self.threads.get(thread) {
            t.busy_since.store(0, Ordering::Release);
        }
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

    #[test]
    fn keeps_the_running_request_id() {
        let a = Activity::new(1);
        a.set_request_id(0, b"0123456789abcdef-x");
        assert_eq!(a.request_id(0), "0123456789abcdef-x");
        a.set_request_id(0, b"short");
        assert_eq!(a.request_id(0), "short");
        a.set_request_id(0, &[b'z'; 128]);
        assert_eq!(a.request_id(0).len(), 128);
    }
}
