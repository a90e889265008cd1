//! The line queue and its writer thread. Producers never block: a line that
//! would take the queue past its byte budget is dropped and counted. The
//! writer thread batches what is queued into one write(2) to stderr, logs
//! the number of dropped lines once writes go through again, and emits the
//! interval counts of `repeats`.

use super::repeats;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Bytes of lines waiting for stderr, at most.
const BUDGET: usize = 1 << 20;
/// A longer line is cut (a traceback of this size is already unreadable).
const MAX_LINE: usize = 64 << 10;
/// How often the writer wakes without lines (for `repeats` counts).
const TICK: Duration = Duration::from_secs(1);

struct Queue {
    tx: Sender<String>,
    /// Bytes queued and not yet written.
    queued: AtomicUsize,
}

static QUEUE: OnceLock<Queue> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Queues one whole line (newline included) for stderr; never blocks.
/// Before [`start_writer`], writes it directly.
pub fn line(mut text: String) {
    if text.len() > MAX_LINE {
        let mut cut = MAX_LINE;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str(" ... (line cut)\n");
    }
    let Some(q) = QUEUE.get() else {
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
        return;
    };
    let len = text.len();
    if q.queued.fetch_add(len, Ordering::AcqRel) + len > BUDGET {
        q.queued.fetch_sub(len, Ordering::AcqRel);
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if q.tx.try_send(text).is_err() {
        q.queued.fetch_sub(len, Ordering::AcqRel);
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Lines dropped so far because stderr did not keep up.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Starts the writer thread (once per process; call it after any fork).
/// A process that will fork must not call it: fork keeps only one thread.
pub fn start_writer() {
    let (tx, rx) = crossbeam_channel::unbounded();
    if QUEUE.set(Queue { tx, queued: AtomicUsize::new(0) }).is_err() {
        return;
    }
    let spawned = std::thread::Builder::new().name("pyrs-log".into()).spawn(move || run(rx));
    if let Err(e) = spawned {
        let _ = writeln!(std::io::stderr(), "cannot start the log writer thread: {e}");
    }
}

/// Waits up to `wait` for queued lines to be written (before exit).
pub fn flush(wait: Duration) {
    let Some(q) = QUEUE.get() else { return };
    let deadline = Instant::now() + wait;
    while q.queued.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn run(rx: Receiver<String>) {
    let Some(q) = QUEUE.get() else { return };
    let mut batch = String::new();
    let mut reported = 0u64;
    loop {
        match rx.recv_timeout(TICK) {
            Ok(first) => batch.push_str(&first),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        while batch.len() < 64 << 10 {
            match rx.try_recv() {
                Ok(more) => batch.push_str(&more),
                Err(_) => break,
            }
        }
        let taken = batch.len();
        let dropped = DROPPED.load(Ordering::Relaxed);
        if dropped > reported {
            batch.push_str(&super::format_line(
                log::Level::Warn,
                &format!("{} log line(s) dropped: stderr did not keep up", dropped - reported),
            ));
            reported = dropped;
        }
        for summary in repeats::due(Instant::now()) {
            batch.push_str(&super::format_line(log::Level::Error, &summary));
        }
        if !batch.is_empty() {
            // Blocks while stderr is full; only this thread waits.
            let _ = std::io::stderr().lock().write_all(batch.as_bytes());
        }
        q.queued.fetch_sub(taken, Ordering::AcqRel);
        batch.clear();
        if batch.capacity() > 256 << 10 {
            batch.shrink_to(64 << 10);
        }
    }
}
