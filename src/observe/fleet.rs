//! Worker mode, in the master: the workers as the admin listener shows
//! them. The master reports births, readiness, drains and exits; figures are
//! read from the workers' shared-memory regions, and a worker that exits has
//! its final counts (and its last handler errors) folded into retired totals
//! under the same lock the readers take, so no scrape sees a count go back.

use super::metrics::{HandlerError, Region, Totals, ERROR_SLOTS, T_IN_FLIGHT, T_REQUESTS};
use super::shm::Mapping;
use super::view::{RouteLabel, Source, View, WorkerRow};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

/// Why a worker exited (the `reason` label of `pyrs_worker_exits_total`).
pub const EXIT_REASONS: [&str; 7] =
    ["shutdown", "reload", "recycle", "scale_down", "crash", "timeout", "start_failure"];

struct Member {
    slot: usize,
    state: &'static str,
    drain_reason: &'static str,
}

struct State {
    retired: Totals,
    retired_errors: Vec<HandlerError>,
    members: BTreeMap<i32, Member>,
    starts: u64,
    spawns_per_slot: HashMap<usize, u64>,
    exits: BTreeMap<&'static str, u64>,
    stopping: bool,
}

pub struct Fleet {
    state: Mutex<State>,
    regions: Vec<Region>,
    labels: Vec<RouteLabel>,
}

impl Fleet {
    pub fn new(mapping: &Arc<Mapping>, labels: Vec<RouteLabel>) -> Fleet {
        let regions = mapping.regions();
        let layout = regions.first().map(|r| r.layout()).unwrap_or(super::layout_for(1, 0));
        Fleet {
            state: Mutex::new(State {
                retired: Totals::zero(layout),
                retired_errors: Vec::new(),
                members: BTreeMap::new(),
                starts: 0,
                spawns_per_slot: HashMap::new(),
                exits: EXIT_REASONS.iter().map(|r| (*r, 0)).collect(),
                stopping: false,
            }),
            regions,
            labels,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A worker process exists (it reported `born`).
    pub fn born(&self, pid: i32, slot: usize) {
        let mut s = self.lock();
        s.starts += 1;
        *s.spawns_per_slot.entry(slot).or_default() += 1;
        s.members.insert(pid, Member { slot, state: "starting", drain_reason: "crash" });
    }

    /// The worker listens and serves.
    pub fn up(&self, pid: i32) {
        if let Some(m) = self.lock().members.get_mut(&pid) {
            m.state = "serving";
        }
    }

    /// The master asked the worker to drain, for `reason` (one of [`EXIT_REASONS`]).
    pub fn draining(&self, pid: i32, reason: &'static str) {
        if let Some(m) = self.lock().members.get_mut(&pid) {
            m.state = "draining";
            m.drain_reason = reason;
        }
    }

    /// SIGTERM/SIGINT reached the master: not ready any more.
    pub fn stopping(&self) {
        let mut s = self.lock();
        s.stopping = true;
        for m in s.members.values_mut() {
            if m.state != "starting" {
                m.drain_reason = "shutdown";
            }
        }
    }

    /// A child process ended: if it was a worker, keep its counts and free its region.
    pub fn exited(&self, pid: i32) {
        let mut s = self.lock();
        let reason = match s.members.remove(&pid) {
            Some(m) if m.state == "starting" => "start_failure",
            Some(m) if m.state == "draining" => m.drain_reason,
            Some(_) if s.stopping => "shutdown",
            Some(_) => "crash",
            None => return,
        };
        *s.exits.entry(reason).or_default() += 1;
        for r in self.regions.iter().filter(|r| r.owner() == pid as u32) {
            if r.in_use() {
                s.retired.add(&r.totals(), true);
                s.retired_errors.extend(r.errors());
            }
            r.release();
        }
        let n = s.retired_errors.len();
        if n > ERROR_SLOTS {
            s.retired_errors.sort_by_key(|e| e.at_ms);
            s.retired_errors.drain(..n - ERROR_SLOTS);
        }
    }
}

impl Source for Fleet {
    fn ready(&self) -> bool {
        let s = self.lock();
        !s.stopping && s.members.values().any(|m| m.state == "serving")
    }

    fn view(&self) -> View {
        let s = self.lock();
        let mut totals = s.retired.clone();
        let mut errors = s.retired_errors.clone();
        let mut workers = Vec::new();
        for (&pid, m) in &s.members {
            let region = self.regions.iter().find(|r| r.owner() == pid as u32 && r.in_use());
            let t = region.map(|r| r.totals());
            if let (Some(r), Some(t)) = (region, &t) {
                totals.add(t, false);
                errors.extend(r.errors());
            }
            let (rss, uss) = super::procmem::memory(pid as u32);
            workers.push(WorkerRow {
                pid: pid as u32,
                slot: Some(m.slot),
                state: m.state,
                started_ms: region.map(|r| r.started_ms()).unwrap_or(0),
                requests: t.as_ref().map(|t| t.global(T_REQUESTS)).unwrap_or(0),
                in_flight: t.as_ref().map(|t| t.global(T_IN_FLIGHT)).unwrap_or(0),
                rss,
                uss,
                restarts: s.spawns_per_slot.get(&m.slot).copied().unwrap_or(1).saturating_sub(1),
            });
        }
        errors.sort_by_key(|e| e.at_ms);
        let n = errors.len();
        if n > ERROR_SLOTS {
            errors.drain(..n - ERROR_SLOTS);
        }
        View {
            totals,
            labels: self.labels.clone(),
            workers,
            errors,
            ready: !s.stopping && s.members.values().any(|m| m.state == "serving"),
            worker_mode: true,
            worker_starts: s.starts,
            worker_exits: s.exits.iter().map(|(k, v)| (*k, *v)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::metrics::Layout;

    #[test]
    fn counts_survive_exits_and_gauges_do_not() {
        let layout = Layout { threads: 2, routes: 1 };
        let (m, fd) = Mapping::create(layout, 4).unwrap();
        let fleet = Fleet::new(&m, vec![]);
        let regions = m.regions();
        fleet.born(100, 0);
        assert!(regions[2].claim(100));
        fleet.up(100);
        assert!(fleet.ready());
        let w = regions[2].thread(1);
        w.request(0, 200, 10);
        w.request(0, 500, 10);
        w.set(T_IN_FLIGHT, 1);
        regions[2].record_error(0, "r1", "boom");
        assert_eq!(fleet.view().totals.route_count(0), 2);
        fleet.exited(100);
        assert!(!fleet.ready());
        assert!(!regions[2].in_use());
        let v = fleet.view();
        assert_eq!(v.totals.route_count(0), 2);
        assert_eq!(v.totals.global(T_IN_FLIGHT), 0);
        assert_eq!(v.errors.len(), 1);
        assert!(v.worker_exits.contains(&("crash", 1)));
        fleet.born(101, 0);
        fleet.draining(101, "recycle");
        fleet.exited(101);
        assert!(fleet.view().worker_exits.contains(&("recycle", 1)));
        assert_eq!(fleet.view().worker_starts, 2);
        // SAFETY: closing the test's descriptor.
        unsafe { libc::close(fd) };
    }
}
