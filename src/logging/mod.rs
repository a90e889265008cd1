//! Logging: the `log` backend (one line per event with UTC time, level and
//! process id, since several worker processes may share one terminal) and
//! the line sink every log line goes through.
//!
//! Logging never blocks serving. Lines go to a bounded in-memory queue that
//! one writer thread copies to stderr (`writer`); when stderr does not keep
//! up (a pipe nobody reads, a slow terminal) new lines are dropped and
//! counted, and the count is logged once stderr moves again. Until
//! [`start_writer`] runs (and always in a process that forks, the
//! template, which must stay single-threaded) lines are written directly.
//! `repeats` rate-limits a message that keeps recurring (a handler raising
//! the same exception on every request): the first in full, then one count
//! per interval.
//!
//! Reuse: anything that produces whole lines (an access log, a bridge from
//! Python's `logging`) calls [`line()`] with the text, newline included; it
//! never blocks and is cheap when lines are dropped. [`flush`] before exit.

pub mod repeats;
pub mod writer;

use log::{LevelFilter, Log, Metadata, Record};
use std::time::Duration;

pub use writer::{dropped, flush, line, start_writer};

struct Logger;

static LOGGER: Logger = Logger;

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        line(format_line(record.level(), &record.args().to_string()));
    }

    fn flush(&self) {}
}

/// `HH:MM:SS.mmm LEVEL pyrs[PID] message\n`.
pub fn format_line(level: log::Level, message: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let date = crate::http::date::format_imf_fixdate(now.as_secs());
    let time = String::from_utf8_lossy(&date[17..25]);
    format!("{time}.{:03} {level:<5} pyrs[{}] {message}\n", now.subsec_millis(), std::process::id())
}

/// Installs the logger (and a panic hook that logs through it); later calls
/// only change the level.
pub fn init(level: LevelFilter) {
    if log::set_logger(&LOGGER).is_ok() {
        // The default hook writes to stderr directly, which can block.
        std::panic::set_hook(Box::new(|info| {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("unnamed");
            line(format_line(log::Level::Error, &format!("thread {name} panicked: {info}")));
        }));
    }
    log::set_max_level(level);
}

/// How long an exiting process waits for queued lines to reach stderr.
pub const EXIT_FLUSH: Duration = Duration::from_secs(1);
/// The same for a process told to exit at once (a second signal).
pub const EXIT_NOW_FLUSH: Duration = Duration::from_millis(200);
