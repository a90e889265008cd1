//! The log backend: one line per event on stderr, with UTC time, level and
//! process id (several worker processes may share one terminal).

use log::{LevelFilter, Log, Metadata, Record};
use std::io::Write;

struct StderrLogger;

static LOGGER: StderrLogger = StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let date = crate::http::date::format_imf_fixdate(now.as_secs());
        let time = String::from_utf8_lossy(&date[17..25]).into_owned();
        let line = format!(
            "{time}.{:03} {:<5} pyrs[{}] {}\n",
            now.subsec_millis(),
            record.level(),
            std::process::id(),
            record.args()
        );
        // One write per line keeps lines from different threads whole.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the logger; later calls only change the level.
pub fn init(level: LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
