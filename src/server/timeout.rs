//! The handler timeout, in a single process and in each worker: a thread
//! that watches [`Activity`] and, for a handler running past `timeout`,
//! first asks the application to interrupt it (Python: `pyrs.Timeout` raised
//! in that thread, answered 503, and the thread serves on); a handler still
//! running `grace` later (stuck in C code, which the exception cannot
//! interrupt) is reported to `on_stuck` (a worker has itself killed and
//! replaced; a single process logs it).

use super::activity::{Activity, Busy};
use crate::app::App;
use std::sync::Arc;
use std::time::Duration;

/// How often running handlers are checked.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// A handler still running after the interrupt and the grace period (with
/// its route's pattern).
pub type OnStuck = Box<dyn Fn(&Busy, &str) + Send>;

pub struct HandlerTimeout {
    pub timeout: Duration,
    pub grace: Duration,
    /// Route patterns by route id, for the logs.
    pub routes: Vec<String>,
    pub on_stuck: OnStuck,
}

impl HandlerTimeout {
    /// The grace after the interrupt: `timeout` itself, at most 10 s.
    pub fn grace_for(timeout: Duration) -> Duration {
        timeout.min(Duration::from_secs(10))
    }
}

/// Starts the watchdog thread for `app`'s pool threads.
pub fn start<A: App>(app: Arc<A>, activity: Arc<Activity>, t: HandlerTimeout) -> std::io::Result<()> {
    std::thread::Builder::new().name("pyrs-timeout".into()).spawn(move || watch(&app, &activity, &t))?;
    Ok(())
}

fn watch<A: App>(app: &Arc<A>, activity: &Arc<Activity>, t: &HandlerTimeout) {
    // Runs already interrupted or reported, by token.
    let mut interrupted: Vec<u64> = Vec::new();
    let mut reported: Vec<u64> = Vec::new();
    loop {
        std::thread::sleep(CHECK_EVERY);
        let busy = activity.busy();
        interrupted.retain(|tok| busy.iter().any(|b| b.token == *tok));
        reported.retain(|tok| busy.iter().any(|b| b.token == *tok));
        for run in busy {
            let route = t.routes.get(run.route).map(String::as_str).unwrap_or("?");
            if run.elapsed >= t.timeout + t.grace && !reported.contains(&run.token) {
                reported.push(run.token);
                (t.on_stuck)(&run, route);
            } else if run.elapsed >= t.timeout && !interrupted.contains(&run.token) {
                interrupted.push(run.token);
                log::warn!(
                    "handler for route {route} has run for {:.1} s (timeout {:.1} s): raising pyrs.Timeout in it rid={}",
                    run.elapsed.as_secs_f64(),
                    t.timeout.as_secs_f64(),
                    activity.request_id(run.thread)
                );
                // The interrupt may wait for the interpreter lock, which a
                // stuck handler can hold: never in this thread.
                let (app, activity) = (app.clone(), activity.clone());
                let spawned = std::thread::Builder::new()
                    .name("pyrs-interrupt".into())
                    .spawn(move || app.interrupt(run.ident, &|| activity.still_running(&run)));
                if let Err(e) = spawned {
                    log::error!("cannot interrupt a handler past timeout: {e}");
                }
            }
        }
    }
}
