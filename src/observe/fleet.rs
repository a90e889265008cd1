//! Worker mode, in the master: the workers as the admin listener shows
//! them. The master reports births, readiness, drains and exits; figures are
//! read from the workers' shared-memory regions, and a worker that exits has
//! its final counts (and its last handler errors) folded into retired totals
//! under the same lock the readers take, so no scrape sees a count go back.
//!
//! A reload that changes the routes or `thread_count` changes the regions'
//! layout: the master then makes another shared-memory file ([`Fleet::add_layout`]).
//! Each file is a shard with its own route list; the view adds every shard
//! up under one merged list of routes (a route keeps its figures across
//! reloads; one that was removed keeps its counts). A shard that no process
//! uses any more (every worker gone, no template holding it, not the one new
//! workers get) is dropped ([`Fleet::drop_idle_shards`]): its retired totals
//! are folded into the fleet's, under the same lock, and its memory unmapped,
//! so a thousand such reloads do not hold a thousand mappings.

use super::metrics::{HandlerError, Layout, Region, Totals, ERROR_SLOTS, T_IN_FLIGHT, T_REQUESTS};
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

/// Names a shard: the master keeps the one new workers get and those its
/// live templates hold. [`Fleet::new`]'s is [`FIRST_SHARD`], then
/// [`Fleet::add_layout`] numbers them.
pub type ShardId = u64;
pub const FIRST_SHARD: ShardId = 0;

/// One shared-memory file: its regions (one layout; they keep the mapping
/// alive), where its routes are in the merged list (`to[r]`; its last route
/// is `unmatched`), and what its exited workers counted.
struct Shard {
    id: ShardId,
    regions: Vec<Region>,
    to: Vec<usize>,
    retired: Totals,
}

struct State {
    shards: Vec<Shard>,
    next_shard: ShardId,
    /// What the dropped shards counted, in merged route numbers (`to` is the
    /// identity, its last entry kept on `unmatched` like a shard's; no regions).
    folded: Shard,
    /// Every shard's routes, first seen first, `unmatched` last.
    labels: Vec<RouteLabel>,
    /// In merged route numbers.
    retired_errors: Vec<HandlerError>,
    members: BTreeMap<i32, Member>,
    starts: u64,
    spawns_per_slot: HashMap<usize, u64>,
    exits: BTreeMap<&'static str, u64>,
    stopping: bool,
}

impl State {
    /// Adds the routes of `labels` (`unmatched` last) that the merged list
    /// lacks, before its `unmatched`; returns where each of them is.
    fn merge(&mut self, labels: &[RouteLabel]) -> Vec<usize> {
        let Some((_, routes)) = labels.split_last() else { return Vec::new() };
        // The list always ends with `unmatched` (Fleet::new puts it there).
        let old_unmatched = self.labels.len() - 1;
        let mut to = Vec::with_capacity(labels.len());
        for l in routes {
            let end = self.labels.len() - 1;
            let i = match self.labels[..end].iter().position(|m| m.route == l.route && m.handler == l.handler) {
                Some(i) => i,
                None => {
                    self.labels.insert(end, l.clone());
                    end
                }
            };
            self.labels[i].batched |= l.batched;
            to.push(i);
        }
        // `unmatched` moved to the end of the longer list: every shard's last route follows it.
        let unmatched = self.labels.len() - 1;
        to.push(unmatched);
        for shard in self.shards.iter_mut().chain([&mut self.folded]) {
            if let Some(last) = shard.to.last_mut() {
                *last = unmatched;
            }
        }
        for e in &mut self.retired_errors {
            if e.route == old_unmatched {
                e.route = unmatched;
            }
        }
        to
    }

    /// Adds a dropped shard's retired totals to `folded`, re-laid out under
    /// the merged list as it is now (it may have grown since the last fold).
    fn fold(&mut self, shard: &Shard) {
        let routes = self.labels.len() - 1;
        let mut totals = Totals::zero(Layout { threads: 1, routes });
        totals.add_mapped(&self.folded.retired, &self.folded.to);
        totals.add_mapped(&shard.retired, &shard.to);
        self.folded.retired = totals;
        self.folded.to = (0..=routes).collect();
    }

    /// The shard and region `pid` claimed.
    fn region_of(&self, pid: i32) -> Option<(&Shard, &Region)> {
        self.shards
            .iter()
            .find_map(|sh| sh.regions.iter().find(|r| r.owner() == pid as u32 && r.in_use()).map(|r| (sh, r)))
    }
}

/// A region's handler errors with merged route numbers.
fn errors_of<'a>(shard: &'a Shard, r: &'a Region) -> impl Iterator<Item = HandlerError> + 'a {
    r.errors().into_iter().map(|mut e| {
        e.route = shard.to.get(e.route).copied().unwrap_or(e.route);
        e
    })
}

pub struct Fleet {
    state: Mutex<State>,
}

fn unmatched() -> RouteLabel {
    RouteLabel { route: "unmatched".into(), handler: String::new(), batched: false }
}

impl Fleet {
    /// `labels`: the routes of `mapping`'s workers, `unmatched` last.
    pub fn new(mapping: &Arc<Mapping>, labels: Vec<RouteLabel>) -> Fleet {
        let nothing = Layout { threads: 1, routes: 0 };
        let fleet = Fleet {
            state: Mutex::new(State {
                shards: Vec::new(),
                next_shard: FIRST_SHARD,
                folded: Shard { id: ShardId::MAX, regions: Vec::new(), to: vec![0], retired: Totals::zero(nothing) },
                labels: vec![unmatched()],
                retired_errors: Vec::new(),
                members: BTreeMap::new(),
                starts: 0,
                spawns_per_slot: HashMap::new(),
                exits: EXIT_REASONS.iter().map(|r| (*r, 0)).collect(),
                stopping: false,
            }),
        };
        fleet.add_layout(mapping, labels);
        fleet
    }

    /// Workers started from now on count in `mapping`'s regions, under
    /// `labels` (`unmatched` last): a reload changed the routes or threads.
    /// Returns the new shard's id.
    pub fn add_layout(&self, mapping: &Arc<Mapping>, labels: Vec<RouteLabel>) -> ShardId {
        let regions = mapping.regions();
        let layout = regions.first().map(|r| r.layout()).unwrap_or(super::layout_for(1, 0));
        let mut labels = labels;
        if labels.len() != layout.routes + 1 {
            // Not one label per route then `unmatched`: route numbers stand in (as Observer::plain).
            labels = (0..layout.routes)
                .map(|i| RouteLabel { route: format!("#{i}"), handler: String::new(), batched: false })
                .chain([unmatched()])
                .collect();
        }
        let mut s = self.lock();
        let to = s.merge(&labels);
        let id = s.next_shard;
        s.next_shard += 1;
        s.shards.push(Shard { id, regions, to, retired: Totals::zero(layout) });
        id
    }

    /// Drops every shard outside `keep` of which no region is owned (its
    /// workers all exited and were folded into its retired totals; a
    /// template claims a worker's region before forking it, so with no
    /// template holding the shard, which the caller's `keep` says, no worker
    /// can come). Their totals move into the fleet's under the lock scrapes
    /// take, so no counter goes back; the mapping goes with the last region.
    /// Returns how many were dropped.
    pub fn drop_idle_shards(&self, keep: &[ShardId]) -> usize {
        let mut s = self.lock();
        let (idle, used): (Vec<Shard>, Vec<Shard>) = std::mem::take(&mut s.shards)
            .into_iter()
            .partition(|sh| !keep.contains(&sh.id) && sh.regions.iter().all(|r| r.owner() == 0));
        s.shards = used;
        for shard in &idle {
            s.fold(shard);
        }
        idle.len()
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

    /// A child process ended: if it was a worker, keep its counts and free
    /// its region. Any other process's regions are freed too (a template
    /// that died between claiming a worker's region and handing it over).
    pub fn exited(&self, pid: i32) {
        let mut s = self.lock();
        let reason = match s.members.remove(&pid) {
            Some(m) if m.state == "starting" => Some("start_failure"),
            Some(m) if m.state == "draining" => Some(m.drain_reason),
            Some(_) if s.stopping => Some("shutdown"),
            Some(_) => Some("crash"),
            None => None,
        };
        if let Some(reason) = reason {
            *s.exits.entry(reason).or_default() += 1;
        }
        let s = &mut *s;
        for shard in &mut s.shards {
            for r in shard.regions.iter().filter(|r| r.owner() == pid as u32) {
                if r.in_use() {
                    shard.retired.add(&r.totals(), true);
                    s.retired_errors.extend(errors_of(shard, r));
                }
                r.release();
            }
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
        let mut totals = Totals::zero(Layout { threads: 1, routes: s.labels.len() - 1 });
        for shard in s.shards.iter().chain([&s.folded]) {
            totals.add_mapped(&shard.retired, &shard.to);
        }
        let mut errors = s.retired_errors.clone();
        let mut workers = Vec::new();
        for (&pid, m) in &s.members {
            let found = s.region_of(pid);
            let region = found.map(|(_, r)| r);
            let t = region.map(|r| r.totals());
            if let (Some((shard, r)), Some(t)) = (found, &t) {
                totals.add_mapped(t, &shard.to);
                errors.extend(errors_of(shard, r));
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
            labels: s.labels.clone(),
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

    fn label(route: &str) -> RouteLabel {
        RouteLabel { route: route.into(), handler: format!("main.Api{route}").replace('/', "."), batched: false }
    }

    #[test]
    fn a_second_layout_adds_up_under_the_merged_routes() {
        let unmatched = RouteLabel { route: "unmatched".into(), handler: String::new(), batched: false };
        let (m1, fd1) = Mapping::create(Layout { threads: 2, routes: 1 }, 2).unwrap();
        let fleet = Fleet::new(&m1, vec![label("/a"), unmatched.clone()]);
        let old = m1.regions();
        fleet.born(100, 0);
        assert!(old[0].claim(100));
        old[0].thread(1).request(0, 200, 10);
        old[0].thread(1).request(1, 404, 10);
        old[0].record_error(0, "r1", "old boom");
        // A reload: one more route, in front, and another thread.
        let (m2, fd2) = Mapping::create(Layout { threads: 3, routes: 2 }, 2).unwrap();
        fleet.add_layout(&m2, vec![label("/b"), label("/a"), unmatched.clone()]);
        let new = m2.regions();
        fleet.born(200, 0);
        assert!(new[1].claim(200));
        let w = new[1].thread(2);
        w.request(0, 200, 10);
        w.request(0, 200, 10);
        w.request(1, 500, 10);
        w.request(2, 404, 10);
        new[1].record_error(0, "r2", "new boom");
        let check = |v: &View| {
            let names: Vec<&str> = v.labels.iter().map(|l| l.route.as_str()).collect();
            assert_eq!(names, ["/a", "/b", "unmatched"]);
            assert_eq!(v.totals.route_count(0), 2, "/a: one old 200, one new 500");
            assert_eq!(v.totals.route_errors(0), 1);
            assert_eq!(v.totals.route_count(1), 2, "/b");
            assert_eq!(v.totals.route_count(2), 2, "unmatched");
            assert_eq!(v.totals.global(T_REQUESTS), 6);
            let mut errors: Vec<(&str, &str)> =
                v.errors.iter().map(|e| (v.labels[e.route].route.as_str(), e.text.as_str())).collect();
            errors.sort();
            assert_eq!(errors, [("/a", "old boom"), ("/b", "new boom")]);
        };
        check(&fleet.view());
        // The old worker exits: its counts stay, under the same routes.
        fleet.exited(100);
        check(&fleet.view());
        fleet.exited(200);
        check(&fleet.view());
        // SAFETY: closing the test's descriptors.
        unsafe {
            libc::close(fd1);
            libc::close(fd2);
        }
    }

    #[test]
    fn a_shard_nobody_uses_is_folded_and_unmapped_and_the_counts_stay() {
        let unmatched = RouteLabel { route: "unmatched".into(), handler: String::new(), batched: false };
        let (m1, fd1) = Mapping::create(Layout { threads: 1, routes: 1 }, 2).unwrap();
        let fleet = Fleet::new(&m1, vec![label("/a"), unmatched.clone()]);
        let first = m1.regions();
        fleet.born(100, 0);
        assert!(first[0].claim(100));
        first[0].thread(0).request(0, 200, 10);
        first[0].thread(0).request(1, 404, 10);
        // A reload adds /b: a second shard, which new workers get.
        let (m2, fd2) = Mapping::create(Layout { threads: 1, routes: 2 }, 2).unwrap();
        let second = fleet.add_layout(&m2, vec![label("/a"), label("/b"), unmatched.clone()]);
        assert_ne!(second, FIRST_SHARD);
        let regions2 = m2.regions();
        fleet.born(200, 0);
        assert!(regions2[0].claim(200));
        regions2[0].thread(0).request(1, 200, 10);
        // A worker still owns a region of the first: it stays, even outside `keep`.
        assert_eq!(fleet.drop_idle_shards(&[second]), 0);
        // A template holding it keeps it too, with no region owned.
        fleet.exited(100);
        assert_eq!(fleet.drop_idle_shards(&[FIRST_SHARD, second]), 0);
        let counts = |v: &View| {
            let names: Vec<&str> = v.labels.iter().map(|l| l.route.as_str()).collect();
            let by_name = |n: &str| v.totals.route_count(names.iter().position(|&x| x == n).unwrap());
            (by_name("/a"), by_name("/b"), by_name("unmatched"), v.totals.global(T_REQUESTS))
        };
        assert_eq!(counts(&fleet.view()), (1, 1, 1, 3));
        // Nobody left: folded, and its mapping goes (the test's handles aside).
        drop(first);
        assert_eq!(Arc::strong_count(&m1), 1 + 2, "the test's handle and the fleet's two regions");
        assert_eq!(fleet.drop_idle_shards(&[second]), 1);
        assert_eq!(Arc::strong_count(&m1), 1, "the fleet no longer maps the first shard");
        assert_eq!(counts(&fleet.view()), (1, 1, 1, 3));
        // The kept shard stays even once empty.
        fleet.exited(200);
        assert_eq!(fleet.drop_idle_shards(&[second]), 0);
        assert_eq!(counts(&fleet.view()), (1, 1, 1, 3));
        // A third layout adds /c in front of `unmatched`: the folded counts
        // keep their routes, `unmatched` included; then the second folds too.
        let (m3, fd3) = Mapping::create(Layout { threads: 1, routes: 1 }, 2).unwrap();
        let third = fleet.add_layout(&m3, vec![label("/c"), unmatched.clone()]);
        let regions3 = m3.regions();
        fleet.born(300, 0);
        assert!(regions3[1].claim(300));
        regions3[1].thread(0).request(0, 200, 10);
        regions3[1].thread(0).request(1, 404, 10);
        let names = |v: &View| v.labels.iter().map(|l| l.route.clone()).collect::<Vec<_>>();
        assert_eq!(names(&fleet.view()), ["/a", "/b", "/c", "unmatched"]);
        assert_eq!(counts(&fleet.view()), (1, 1, 2, 5));
        assert_eq!(fleet.drop_idle_shards(&[third]), 1);
        let v = fleet.view();
        assert_eq!(counts(&v), (1, 1, 2, 5));
        assert_eq!(v.totals.route_count(2), 1, "/c");
        fleet.exited(300);
        assert_eq!(counts(&fleet.view()), (1, 1, 2, 5));
        // SAFETY: closing the test's descriptors.
        unsafe {
            libc::close(fd1);
            libc::close(fd2);
            libc::close(fd3);
        }
    }
}
