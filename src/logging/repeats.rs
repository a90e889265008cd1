//! Rate limiting of a message that keeps recurring: the first occurrence of
//! a key in an interval is logged in full, later ones only counted, and the
//! count is logged when the interval ends (by the log writer thread). A key
//! quiet for a whole interval is forgotten, so its next occurrence is logged
//! in full again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long after a full message its repeats are only counted.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Keys tracked at most; past it a new key is counted under an overflow key.
const MAX_KEYS: usize = 1024;
const OVERFLOW: &str = "other repeated errors";

struct Window {
    started: Instant,
    repeats: u64,
}

static KEYS: Mutex<Option<HashMap<String, Window>>> = Mutex::new(None);

/// True when `key` should be logged in full now; false when it is counted.
pub fn first(key: &str) -> bool {
    first_at(key, Instant::now())
}

fn first_at(key: &str, now: Instant) -> bool {
    let mut keys = KEYS.lock().unwrap_or_else(|p| p.into_inner());
    let keys = keys.get_or_insert_with(HashMap::new);
    if let Some(w) = keys.get_mut(key) {
        w.repeats += 1;
        return false;
    }
    if keys.len() >= MAX_KEYS {
        keys.entry(OVERFLOW.to_string()).or_insert(Window { started: now, repeats: 0 }).repeats += 1;
        return false;
    }
    keys.insert(key.to_string(), Window { started: now, repeats: 0 });
    true
}

/// Summaries of the intervals that ended by `now` ("KEY: N more times in
/// the last 10 s"); keys with no repeats are forgotten.
pub fn due(now: Instant) -> Vec<String> {
    let mut keys = KEYS.lock().unwrap_or_else(|p| p.into_inner());
    let Some(keys) = keys.as_mut() else { return Vec::new() };
    let mut out = Vec::new();
    keys.retain(|key, w| {
        if now.duration_since(w.started) < INTERVAL {
            return true;
        }
        if w.repeats == 0 {
            return false;
        }
        out.push(format!(
            "{key}: {} more time(s) in the last {} s (logged in full once per {} s)",
            w.repeats,
            now.duration_since(w.started).as_secs(),
            INTERVAL.as_secs()
        ));
        // The next occurrence counts in a new interval, not in full.
        w.started = now;
        w.repeats = 0;
        true
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_in_full_then_counted_then_summarised() {
        let t = Instant::now();
        assert!(first_at("k-test", t));
        assert!(!first_at("k-test", t));
        assert!(!first_at("k-test", t));
        assert!(due(t).iter().all(|s| !s.starts_with("k-test")));
        let later = t + INTERVAL;
        let summaries = due(later);
        assert!(summaries.iter().any(|s| s.starts_with("k-test: 2 more time(s)")), "{summaries:?}");
        // Counted in the new interval; a quiet interval forgets the key.
        assert!(!first_at("k-test", later));
        let _ = due(later + INTERVAL);
        let _ = due(later + INTERVAL * 2);
        assert!(first_at("k-test", later + INTERVAL * 2));
    }
}
