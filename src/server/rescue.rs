//! No request waits behind another connection's handler: the main thread
//! moves the other connections of a pool thread stuck in a handler to an
//! idle pool thread.
//!
//! A pool thread owns its connections and runs their handlers inline (no
//! hand-off per request, see ARCHITECTURE.md). While one handler runs long
//! (a sync handler sleeping or waiting on I/O), that thread reads none of
//! its other connections. Each pool thread releases its loop's lock while a
//! handler runs (or a generator is pulled for a streamed body's next item); the main thread checks every [`TICK`] (only while some
//! pool thread is busy: an idle server is never woken) and, once a thread
//! has been in one handler call for [`STUCK_AFTER`], takes that loop's
//! lock and moves every other connection that can move (with its parsed
//! requests, in order, and its unsent output; not one waiting on a reserved
//! slot or an async stream) to a pool thread that is not busy, over a
//! channel and that thread's waker. Batches of quick handlers never
//! trigger it: only one call that runs long does.

use super::event_loop::LoopCell;
use super::ThreadShared;
use mio::Waker;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the main thread checks while some pool thread is busy.
pub const TICK: Duration = Duration::from_millis(1);
/// How long one handler call runs before its thread's other connections
/// are moved away.
pub const STUCK_AFTER: Duration = Duration::from_millis(1);
/// Checks without any busy thread before the main thread stops checking.
const IDLE_TICKS: u32 = 100;

/// What pool threads share with the main thread's rescuer.
pub struct Rescue {
    epoch: Instant,
    /// The main thread waits without a timeout; wake it when going busy.
    asleep: AtomicBool,
    /// False with a single pool thread: there is nowhere to move to.
    enabled: bool,
    waker: Waker,
}

impl Rescue {
    pub fn new(waker: Waker, threads: usize) -> Self {
        Rescue { epoch: Instant::now(), asleep: AtomicBool::new(true), enabled: threads > 1, waker }
    }

    /// Wakes the main thread at once (a pool thread died).
    pub fn wake_main(&self) {
        let _ = self.waker.wake();
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

/// One pool thread's busy state (in [`ThreadShared`]).
#[derive(Default)]
pub struct BusySince {
    /// When the current (or last) handler call began (ns since the epoch).
    since: AtomicU64,
}

/// Called by a pool thread as it starts and ends a batch of handlers.
pub fn set_busy(shared: &ThreadShared, busy: bool) {
    shared.busy.store(busy, Ordering::SeqCst);
    let rescue = &shared.rescue;
    if busy && rescue.enabled && rescue.asleep.load(Ordering::SeqCst) && rescue.asleep.swap(false, Ordering::SeqCst) {
        let _ = rescue.waker.wake();
    }
}

/// Called by a pool thread as each handler call begins: a thread is stuck
/// when one call runs long, not when a batch of quick ones does.
pub fn call_started(shared: &ThreadShared) {
    shared.busy_since.since.store(shared.rescue.now().max(1), Ordering::Relaxed);
}

/// In one handler call for [`STUCK_AFTER`] or more.
fn stuck(s: &ThreadShared, now: u64) -> bool {
    s.busy.load(Ordering::SeqCst)
        && now.saturating_sub(s.busy_since.since.load(Ordering::Relaxed)) >= STUCK_AFTER.as_nanos() as u64
}

/// The main thread's side.
pub struct Rescuer<T: 'static> {
    rescue: Arc<Rescue>,
    cells: Vec<Arc<LoopCell<T>>>,
    idle_ticks: u32,
}

impl<T: Send + Sync + 'static> Rescuer<T> {
    pub fn new(rescue: Arc<Rescue>, cells: Vec<Arc<LoopCell<T>>>) -> Self {
        Rescuer { rescue, cells, idle_ticks: 0 }
    }

    /// How long the main thread may wait before the next [`Rescuer::check`]
    /// (None: until woken).
    pub fn timeout(&self) -> Option<Duration> {
        if !self.rescue.enabled || self.rescue.asleep.load(Ordering::SeqCst) {
            None
        } else {
            Some(TICK)
        }
    }

    /// Moves the connections of threads stuck in a handler.
    pub fn check(&mut self, shared: &[Arc<ThreadShared>]) {
        if !self.rescue.enabled {
            return;
        }
        let now = self.rescue.now();
        let mut any_busy = false;
        for (a, s) in shared.iter().enumerate() {
            if !s.busy.load(Ordering::SeqCst) {
                continue;
            }
            any_busy = true;
            if stuck(s, now) {
                self.rescue_from(a, shared);
            }
        }
        if any_busy {
            self.idle_ticks = 0;
            return;
        }
        self.idle_ticks += 1;
        if self.idle_ticks >= IDLE_TICKS {
            // Sleep until a pool thread goes busy; check again after saying so,
            // as one may have gone busy before it could see the flag.
            self.rescue.asleep.store(true, Ordering::SeqCst);
            if shared.iter().any(|s| s.busy.load(Ordering::SeqCst)) {
                self.rescue.asleep.store(false, Ordering::SeqCst);
            }
            self.idle_ticks = 0;
        }
    }

    fn rescue_from(&mut self, a: usize, shared: &[Arc<ThreadShared>]) {
        let now = self.rescue.now();
        // Any thread not itself stuck in a call (one busy with quick handlers
        // takes the connections after its batch); fewest slow connections (so
        // that slow ones spread one per thread and fast ones gather where none
        // is), then idle ones, then fewest connections.
        let target = || {
            let usable = |b: usize| b != a && !stuck(&shared[b], now) && !shared[b].ended.load(Ordering::Acquire);
            (0..shared.len()).filter(|&b| usable(b)).min_by_key(|&b| {
                let s = &shared[b];
                (
                    s.slow_conns.load(Ordering::Acquire),
                    s.busy.load(Ordering::SeqCst),
                    s.connections.load(Ordering::Acquire),
                )
            })
        };
        if target().is_none() {
            return;
        }
        let Some(cell) = self.cells.get(a) else { return };
        // Free only while its thread is inside a handler.
        let Ok(mut stuck) = cell.state.try_lock() else { return };
        let (newly_slow, moved) = stuck.take_movable();
        drop(stuck);
        if newly_slow {
            shared[a].slow_conns.fetch_add(1, Ordering::AcqRel);
        }
        let mut woken = Vec::new();
        for m in moved {
            // A thread that went busy meanwhile leaves none: give it back.
            let b = target().unwrap_or(a);
            let slow = m.slow() && b != a;
            if b != a {
                shared[a].connections.fetch_sub(1, Ordering::AcqRel);
                shared[b].connections.fetch_add(1, Ordering::AcqRel);
            }
            if slow {
                shared[a].slow_conns.fetch_sub(1, Ordering::AcqRel);
                shared[b].slow_conns.fetch_add(1, Ordering::AcqRel);
            }
            if self.cells[b].moved_tx.send(m).is_err() {
                // That thread has exited (shutdown): the connection is dropped.
                shared[b].connections.fetch_sub(1, Ordering::AcqRel);
                if slow {
                    shared[b].slow_conns.fetch_sub(1, Ordering::AcqRel);
                }
            }
            if !woken.contains(&b) {
                woken.push(b);
            }
        }
        log::debug!("thread {a} busy in a handler: connections moved to thread(s) {woken:?}");
        for b in woken {
            let _ = shared[b].waker.wake();
        }
    }
}
