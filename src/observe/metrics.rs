//! The metrics registry: fixed-layout blocks of `u64` counters that the
//! serving threads bump without locks and without allocating.
//!
//! One process's figures live in a [`Region`]: a header, a process row
//! (counters several threads may bump: atomic adds), one row per pool thread
//! (only that thread writes it: a load and a store, no read-modify-write),
//! and a ring of the last handler errors. A region lives on the heap in a
//! single process and in shared memory (`shm.rs`) in worker mode, where the
//! master reads every worker's region and keeps the counts of workers that
//! exited, so totals never go backwards.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Upper bounds (microseconds) of the request-duration histogram buckets; a
/// last bucket holds everything slower.
pub const BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];
pub const N_BUCKETS: usize = BUCKETS_US.len() + 1;

/// Statuses the HTTP core answers by itself, counted as protocol errors.
pub const PROTOCOL_STATUSES: [u16; 9] = [400, 408, 413, 414, 417, 431, 501, 505, 503];

// Header words.
const H_MAGIC: usize = 0;
const H_OWNER: usize = 1;
const H_LAYOUT: usize = 2;
const H_STARTED_MS: usize = 3;
const H_NEXT_ERROR: usize = 4;
const HEADER_WORDS: usize = 8;

// Process row: protocol errors by status, then these.
pub const P_ACCESS_LOG_DROPPED: usize = PROTOCOL_STATUSES.len();
pub const P_LOG_DROPPED: usize = PROTOCOL_STATUSES.len() + 1;
const PROCESS_WORDS: usize = 16;

// Per-thread globals.
pub const T_IN_FLIGHT: usize = 0;
pub const T_CONNECTIONS: usize = 1;
pub const T_BYTES_IN: usize = 2;
pub const T_BYTES_OUT: usize = 3;
pub const T_GIL_WAIT_US: usize = 4;
pub const T_REQUESTS: usize = 5;
/// Responses still being produced (an awaited coroutine, a stream) when
/// their connection closed: the coroutine was cancelled, the stream closed.
pub const T_ABANDONED: usize = 6;
const THREAD_GLOBALS: usize = 8;
/// Thread globals that are gauges (not summed into retired totals).
const GAUGES: [usize; 2] = [T_IN_FLIGHT, T_CONNECTIONS];

/// Upper bounds of the batch-size histogram buckets (batched routes; a batch
/// holds at most 4096 requests).
pub const BATCH_BUCKETS: [u64; 13] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

// Per-route words: 5 status classes, exceptions, duration histogram, duration
// sum, then (batched routes) the batch-size histogram and the requests batched.
pub const R_CLASS: usize = 0;
pub const R_EXCEPTIONS: usize = 5;
pub const R_BUCKETS: usize = 6;
pub const R_SUM_US: usize = R_BUCKETS + N_BUCKETS;
pub const R_BATCH_BUCKETS: usize = R_SUM_US + 1;
pub const R_BATCHED: usize = R_BATCH_BUCKETS + BATCH_BUCKETS.len();
pub const ROUTE_WORDS: usize = R_BATCHED + 1;

/// Handler errors kept per region, and the bytes of text each keeps.
pub const ERROR_SLOTS: usize = 20;
const ERROR_WORDS: usize = 512;
const ERROR_HEAD: usize = 4;
pub const ERROR_TEXT_BYTES: usize = (ERROR_WORDS - ERROR_HEAD) * 8;

const MAGIC: u64 = 0x7079_7273_6d65_7401;

/// The shape of a region: how many pool threads and routes. Route index
/// `routes` (one past the last) collects requests no route matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub threads: usize,
    pub routes: usize,
}

impl Layout {
    fn row_words(&self) -> usize {
        (THREAD_GLOBALS + (self.routes + 1) * ROUTE_WORDS).div_ceil(8) * 8
    }
    fn thread_base(&self, t: usize) -> usize {
        HEADER_WORDS + PROCESS_WORDS + t * self.row_words()
    }
    fn errors_base(&self) -> usize {
        self.thread_base(self.threads)
    }
    /// Words in one region.
    pub fn words(&self) -> usize {
        self.errors_base() + ERROR_SLOTS * ERROR_WORDS
    }
    /// Identifies the layout (written in the header, checked by readers).
    pub fn code(&self) -> u64 {
        ((self.threads as u64) << 32) | self.routes as u64
    }
    /// Words in a [`Totals`].
    fn total_words(&self) -> usize {
        PROCESS_WORDS + THREAD_GLOBALS + (self.routes + 1) * ROUTE_WORDS
    }
}

/// Memory a region points into; kept alive by every region using it.
pub trait Backing: Send + Sync {}

struct Heap(#[allow(dead_code)] Box<[AtomicU64]>);
impl Backing for Heap {}

/// One process's metrics: header, process row, thread rows, error ring.
#[derive(Clone)]
pub struct Region {
    words: *const AtomicU64,
    layout: Layout,
    _backing: Arc<dyn Backing>,
}

// SAFETY: the words are atomics, and the backing keeps them alive.
unsafe impl Send for Region {}
unsafe impl Sync for Region {}

impl Region {
    /// A private region on the heap (single process, or a worker without shared memory).
    pub fn heap(layout: Layout) -> Region {
        let words: Box<[AtomicU64]> = (0..layout.words()).map(|_| AtomicU64::new(0)).collect();
        let ptr = words.as_ptr();
        let r = Region { words: ptr, layout, _backing: Arc::new(Heap(words)) };
        r.init(std::process::id());
        r
    }

    /// A region over `layout.words()` atomics at `ptr`, kept alive by `backing`.
    ///
    /// # Safety
    /// `ptr` must point to at least `layout.words()` properly aligned `u64`s
    /// that stay mapped as long as `backing` lives.
    pub unsafe fn from_raw(ptr: *const AtomicU64, layout: Layout, backing: Arc<dyn Backing>) -> Region {
        Region { words: ptr, layout, _backing: backing }
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        debug_assert!(i < self.layout.words());
        // SAFETY: every index used is below layout.words() (the layout's
        // arithmetic), and the memory lives as long as the backing.
        unsafe { &*self.words.add(i) }
    }

    /// Marks the region as this process's, zeroed, started now.
    pub fn init(&self, pid: u32) {
        // The owner word is left alone until the end: zeroed on the way, it
        // would let another process claim the region meanwhile.
        for i in (0..self.layout.words()).filter(|&i| i != H_OWNER) {
            self.word(i).store(0, Ordering::Relaxed);
        }
        self.word(H_LAYOUT).store(self.layout.code(), Ordering::Relaxed);
        self.word(H_STARTED_MS).store(now_ms(), Ordering::Relaxed);
        self.word(H_MAGIC).store(MAGIC, Ordering::Relaxed);
        self.word(H_OWNER).store(u64::from(pid), Ordering::Release);
    }

    /// Takes a free shared region for process `pid`; false if another owns it.
    pub fn claim(&self, pid: u32) -> bool {
        if self.word(H_OWNER).compare_exchange(0, u64::from(pid), Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return false;
        }
        self.init(pid);
        true
    }

    /// Gives a claimed region to process `pid` as it is (the template claims
    /// a worker's region before forking it; the forked side, which learns the
    /// worker's pid, hands it over).
    pub fn hand_over(&self, pid: u32) {
        self.word(H_OWNER).store(u64::from(pid), Ordering::Release);
    }

    /// The owning pid (0: free).
    pub fn owner(&self) -> u32 {
        self.word(H_OWNER).load(Ordering::Acquire) as u32
    }

    /// Frees a shared region (the master, after the owner exited).
    pub fn release(&self) {
        self.word(H_MAGIC).store(0, Ordering::Relaxed);
        self.word(H_OWNER).store(0, Ordering::Release);
    }

    /// True when a process owns it and wrote this region's layout.
    pub fn in_use(&self) -> bool {
        self.owner() != 0
            && self.word(H_MAGIC).load(Ordering::Acquire) == MAGIC
            && self.word(H_LAYOUT).load(Ordering::Relaxed) == self.layout.code()
    }

    pub fn started_ms(&self) -> u64 {
        self.word(H_STARTED_MS).load(Ordering::Relaxed)
    }

    /// The writer for pool thread `t` (one per thread).
    pub fn thread(&self, t: usize) -> ThreadMetrics {
        let t = t.min(self.layout.threads.saturating_sub(1));
        ThreadMetrics { region: self.clone(), base: self.layout.thread_base(t), on: true }
    }

    /// Adds to a process-row counter (any thread).
    pub fn add_process(&self, index: usize, v: u64) {
        if index < PROCESS_WORDS {
            self.word(HEADER_WORDS + index).fetch_add(v, Ordering::Relaxed);
        }
    }

    /// Sets a process-row value (one writer).
    pub fn set_process(&self, index: usize, v: u64) {
        if index < PROCESS_WORDS {
            self.word(HEADER_WORDS + index).store(v, Ordering::Relaxed);
        }
    }

    pub fn protocol_error(&self, status: u16) {
        if let Some(i) = PROTOCOL_STATUSES.iter().position(|&s| s == status) {
            self.add_process(i, 1);
        }
    }

    /// Sums the rows into totals.
    pub fn totals(&self) -> Totals {
        let l = self.layout;
        let mut v = vec![0u64; l.total_words()];
        for (i, x) in v.iter_mut().enumerate().take(PROCESS_WORDS) {
            *x = self.word(HEADER_WORDS + i).load(Ordering::Relaxed);
        }
        for t in 0..l.threads {
            let base = l.thread_base(t);
            for (i, x) in v[PROCESS_WORDS..].iter_mut().enumerate() {
                *x += self.word(base + i).load(Ordering::Relaxed);
            }
        }
        Totals { layout: l, values: v }
    }

    /// Records a handler error (route index, request id, text); rare, any thread.
    pub fn record_error(&self, route: usize, request_id: &str, text: &str) {
        let n = self.word(H_NEXT_ERROR).fetch_add(1, Ordering::Relaxed);
        let base = self.layout.errors_base() + (n as usize % ERROR_SLOTS) * ERROR_WORDS;
        let seq = self.word(base);
        // Odd while writing (readers skip it), even when complete.
        let s = seq.fetch_add(1, Ordering::AcqRel) | 1;
        seq.store(s, Ordering::Release);
        self.word(base + 1).store(now_ms(), Ordering::Relaxed);
        self.word(base + 2).store(route as u64, Ordering::Relaxed);
        let mut bytes = Vec::with_capacity(ERROR_TEXT_BYTES);
        bytes.extend_from_slice(request_id.as_bytes());
        bytes.push(b'\n');
        bytes.extend_from_slice(text.as_bytes());
        let mut len = bytes.len().min(ERROR_TEXT_BYTES);
        while len > 0 && std::str::from_utf8(&bytes[..len]).is_err() {
            len -= 1;
        }
        self.word(base + 3).store(len as u64, Ordering::Relaxed);
        for (k, chunk) in bytes[..len].chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.word(base + ERROR_HEAD + k).store(u64::from_le_bytes(w), Ordering::Relaxed);
        }
        seq.store(s + 1, Ordering::Release);
    }

    /// The recorded errors, oldest first.
    pub fn errors(&self) -> Vec<HandlerError> {
        let mut out = Vec::new();
        for slot in 0..ERROR_SLOTS {
            let base = self.layout.errors_base() + slot * ERROR_WORDS;
            let s1 = self.word(base).load(Ordering::Acquire);
            if s1 == 0 || s1 & 1 == 1 {
                continue;
            }
            let at_ms = self.word(base + 1).load(Ordering::Relaxed);
            let route = self.word(base + 2).load(Ordering::Relaxed) as usize;
            let len = (self.word(base + 3).load(Ordering::Relaxed) as usize).min(ERROR_TEXT_BYTES);
            let mut bytes = Vec::with_capacity(len + 8);
            for k in 0..len.div_ceil(8) {
                bytes.extend_from_slice(&self.word(base + ERROR_HEAD + k).load(Ordering::Relaxed).to_le_bytes());
            }
            bytes.truncate(len);
            if self.word(base).load(Ordering::Acquire) != s1 {
                continue;
            }
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let (request_id, text) = text.split_once('\n').unwrap_or(("", &text));
            out.push(HandlerError {
                at_ms,
                route,
                request_id: request_id.to_string(),
                text: text.to_string(),
                pid: self.owner(),
            });
        }
        out.sort_by_key(|e| e.at_ms);
        out
    }
}

/// One recorded handler error.
#[derive(Debug, Clone)]
pub struct HandlerError {
    pub at_ms: u64,
    pub route: usize,
    pub request_id: String,
    pub text: String,
    pub pid: u32,
}

/// A pool thread's writer: bumps its own row only.
pub struct ThreadMetrics {
    region: Region,
    base: usize,
    /// False only in the benchmark that measures what recording costs.
    on: bool,
}

impl ThreadMetrics {
    /// Records nothing from now on (`benches/observe.sh` measures the cost of recording).
    pub fn disable(&mut self) {
        self.on = false;
    }

    #[inline]
    fn bump(&self, i: usize, v: u64) {
        if !self.on {
            return;
        }
        // Only this thread writes its row: no read-modify-write needed.
        let w = self.region.word(self.base + i);
        w.store(w.load(Ordering::Relaxed).wrapping_add(v), Ordering::Relaxed);
    }

    #[inline]
    pub fn add(&self, global: usize, v: u64) {
        if v != 0 {
            self.bump(global, v);
        }
    }

    #[inline]
    pub fn set(&self, global: usize, v: u64) {
        if !self.on {
            return;
        }
        self.region.word(self.base + global).store(v, Ordering::Relaxed);
    }

    /// One answered request: route index (`layout.routes` for none), status, duration.
    #[inline]
    pub fn request(&self, route: usize, status: u16, micros: u64) {
        let route = route.min(self.region.layout.routes);
        let base = THREAD_GLOBALS + route * ROUTE_WORDS;
        let class = (usize::from(status / 100)).clamp(1, 5) - 1;
        self.bump(base + R_CLASS + class, 1);
        let bucket = BUCKETS_US.iter().position(|&b| micros <= b).unwrap_or(BUCKETS_US.len());
        self.bump(base + R_BUCKETS + bucket, 1);
        self.bump(base + R_SUM_US, micros);
        self.bump(T_REQUESTS, 1);
    }

    /// A batched route's handler was called with `size` requests.
    pub fn batch(&self, route: usize, size: u64) {
        let route = route.min(self.region.layout.routes);
        let base = THREAD_GLOBALS + route * ROUTE_WORDS;
        let bucket = BATCH_BUCKETS.iter().position(|&b| size <= b).unwrap_or(BATCH_BUCKETS.len() - 1);
        self.bump(base + R_BATCH_BUCKETS + bucket, 1);
        self.bump(base + R_BATCHED, size);
    }

    /// A handler raised (or returned something unsendable) on `route`.
    pub fn exception(&self, route: usize) {
        let route = route.min(self.region.layout.routes);
        self.bump(THREAD_GLOBALS + route * ROUTE_WORDS + R_EXCEPTIONS, 1);
    }

    pub fn region(&self) -> &Region {
        &self.region
    }
}

/// Summed figures of one or more regions (process row, thread globals, routes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Totals {
    pub layout: Layout,
    values: Vec<u64>,
}

impl Totals {
    pub fn zero(layout: Layout) -> Totals {
        Totals { layout, values: vec![0; layout.total_words()] }
    }

    /// Adds `other`; with `counters_only`, gauges are left out (a retired worker's).
    pub fn add(&mut self, other: &Totals, counters_only: bool) {
        if other.layout.routes != self.layout.routes {
            return;
        }
        for (i, (a, b)) in self.values.iter_mut().zip(&other.values).enumerate() {
            if counters_only && i >= PROCESS_WORDS && GAUGES.contains(&(i - PROCESS_WORDS)) {
                continue;
            }
            *a += b;
        }
    }

    /// Adds `other`, whose route `r` is this one's route `to[r]` (figures
    /// counted under another route list: a reload changed the routes).
    /// Routes `to` does not place in range are left out.
    pub fn add_mapped(&mut self, other: &Totals, to: &[usize]) {
        let routes_at = PROCESS_WORDS + THREAD_GLOBALS;
        for (a, b) in self.values[..routes_at].iter_mut().zip(&other.values[..routes_at]) {
            *a += b;
        }
        for (r, words) in other.values[routes_at..].chunks(ROUTE_WORDS).enumerate() {
            let Some(&dst) = to.get(r).filter(|&&d| d <= self.layout.routes) else { continue };
            let at = routes_at + dst * ROUTE_WORDS;
            for (a, b) in self.values[at..at + ROUTE_WORDS].iter_mut().zip(words) {
                *a += b;
            }
        }
    }

    pub fn process(&self, i: usize) -> u64 {
        self.values[i]
    }

    pub fn global(&self, i: usize) -> u64 {
        self.values[PROCESS_WORDS + i]
    }

    pub fn route(&self, route: usize, i: usize) -> u64 {
        self.values[PROCESS_WORDS + THREAD_GLOBALS + route * ROUTE_WORDS + i]
    }

    pub fn route_count(&self, route: usize) -> u64 {
        (0..5).map(|c| self.route(route, R_CLASS + c)).sum()
    }

    /// Requests of `route` answered with a 5xx.
    pub fn route_errors(&self, route: usize) -> u64 {
        self.route(route, R_CLASS + 4)
    }

    /// The q-quantile (0..1) of `route`'s durations in microseconds, estimated
    /// by interpolating inside the histogram bucket; None without requests.
    pub fn quantile_us(&self, route: usize, q: f64) -> Option<f64> {
        let counts: Vec<u64> = (0..N_BUCKETS).map(|b| self.route(route, R_BUCKETS + b)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut seen = 0u64;
        for (b, &c) in counts.iter().enumerate() {
            if c > 0 && (seen + c) as f64 >= rank {
                let lo = if b == 0 { 0 } else { BUCKETS_US[b - 1] } as f64;
                let hi = BUCKETS_US.get(b).map(|&h| h as f64).unwrap_or(lo * 2.0);
                let frac = ((rank - seen as f64) / c as f64).clamp(0.0, 1.0);
                return Some(lo + (hi - lo) * frac);
            }
            seen += c;
        }
        None
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_sum_and_routes_classify() {
        let r = Region::heap(Layout { threads: 2, routes: 2 });
        let (a, b) = (r.thread(0), r.thread(1));
        a.request(0, 200, 80);
        a.request(0, 404, 300);
        b.request(0, 200, 2_000_000);
        b.request(2, 404, 10);
        a.add(T_BYTES_IN, 100);
        b.add(T_BYTES_IN, 50);
        a.exception(1);
        r.protocol_error(431);
        r.protocol_error(999);
        let t = r.totals();
        assert_eq!(t.route_count(0), 3);
        assert_eq!(t.route(0, R_CLASS + 1), 2);
        assert_eq!(t.route(0, R_CLASS + 3), 1);
        assert_eq!(t.route(0, R_BUCKETS), 1);
        assert_eq!(t.route(0, R_BUCKETS + 2), 1);
        assert_eq!(t.route(0, R_SUM_US), 2_000_380);
        assert_eq!(t.route_count(2), 1);
        assert_eq!(t.route(1, R_EXCEPTIONS), 1);
        assert_eq!(t.global(T_BYTES_IN), 150);
        assert_eq!(t.global(T_REQUESTS), 4);
        assert_eq!(t.process(5), 1);
        let p50 = t.quantile_us(0, 0.5).unwrap();
        assert!((250.0..=500.0).contains(&p50), "{p50}");
    }

    #[test]
    fn totals_add_up_under_another_route_list() {
        let r = Region::heap(Layout { threads: 1, routes: 2 });
        let w = r.thread(0);
        w.request(0, 200, 5);
        w.request(1, 404, 5);
        w.request(1, 404, 5);
        w.request(2, 200, 5);
        let mut merged = Totals::zero(Layout { threads: 1, routes: 3 });
        // Its route 0 is merged route 2, 1 is 0, and unmatched stays last; 9 is out of range.
        merged.add_mapped(&r.totals(), &[2, 0, 3]);
        merged.add_mapped(&r.totals(), &[9, 0, 3]);
        assert_eq!(merged.route_count(2), 1);
        assert_eq!(merged.route_count(0), 4);
        assert_eq!(merged.route_count(1), 0);
        assert_eq!(merged.route_count(3), 2);
        assert_eq!(merged.global(T_REQUESTS), 8);
    }

    #[test]
    fn retired_totals_keep_counters_not_gauges() {
        let r = Region::heap(Layout { threads: 1, routes: 0 });
        let w = r.thread(0);
        w.set(T_IN_FLIGHT, 3);
        w.request(0, 200, 5);
        let mut retired = Totals::zero(r.layout());
        retired.add(&r.totals(), true);
        assert_eq!(retired.global(T_IN_FLIGHT), 0);
        assert_eq!(retired.route_count(0), 1);
    }

    #[test]
    fn error_ring_keeps_the_last_twenty() {
        let r = Region::heap(Layout { threads: 1, routes: 1 });
        for i in 0..25 {
            r.record_error(0, &format!("rid{i}"), &format!("Traceback {i}\nValueError: é"));
        }
        let errs = r.errors();
        assert_eq!(errs.len(), ERROR_SLOTS);
        assert!(errs.iter().any(|e| e.request_id == "rid24" && e.text.ends_with("ValueError: é")));
        assert!(!errs.iter().any(|e| e.request_id == "rid0"));
        r.record_error(0, "long", &"x".repeat(10_000));
        assert!(r.errors().iter().any(|e| e.request_id == "long" && e.text.len() < ERROR_TEXT_BYTES));
    }

    #[test]
    fn claim_and_release() {
        let r = Region::heap(Layout { threads: 1, routes: 0 });
        r.release();
        assert!(!r.in_use());
        assert!(r.claim(42));
        assert!(!r.claim(43));
        assert_eq!(r.owner(), 42);
        assert!(r.in_use());
    }
}
