//! Worker mode: every worker's metrics region lives in a shared memory
//! file (memfd) that the master creates (another one when a reload changes
//! the routes or threads: `fleet` adds them up, and drops one no worker uses
//! any more), the template maps before forking. The template claims a free
//! region for each worker it forks; the worker's pid goes into the region's
//! header. The master reads all regions for `/metrics` and, when a worker
//! exits, adds its final counts to the retired totals and frees the region:
//! nothing is lost even when a worker is killed.

use super::metrics::{Layout, Region};
use std::os::fd::RawFd;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

/// Where a template finds the shared memory the master made.
pub const FD: RawFd = 5;
pub const ENV: &str = "PYRS_INTERNAL_METRICS";

/// An mmap'ed shared memory file holding `count` regions of `layout`.
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
    layout: Layout,
    count: usize,
}

// SAFETY: the mapping is only accessed through atomics.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}
impl super::metrics::Backing for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping what map() mapped.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

fn region_bytes(layout: Layout) -> usize {
    layout.words() * 8
}

fn map(fd: RawFd, layout: Layout, count: usize) -> Result<Arc<Mapping>, String> {
    let len = region_bytes(layout) * count;
    // SAFETY: mapping a shared file of at least `len` bytes; checked for failure.
    let ptr =
        unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0) };
    if ptr == libc::MAP_FAILED {
        return Err(format!("cannot map the metrics memory: {}", std::io::Error::last_os_error()));
    }
    Ok(Arc::new(Mapping { ptr: ptr.cast(), len, layout, count }))
}

impl Mapping {
    /// The master: a new zeroed shared memory file for `count` regions. Returns
    /// the mapping and the file's descriptor (close-on-exec; the master puts it
    /// at [`FD`] in each template).
    pub fn create(layout: Layout, count: usize) -> Result<(Arc<Mapping>, RawFd), String> {
        // SAFETY: memfd_create with a NUL-terminated name.
        let fd = unsafe { libc::memfd_create(c"pyrs-metrics".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(format!("cannot create the metrics memory: {}", std::io::Error::last_os_error()));
        }
        let len = region_bytes(layout) * count;
        // SAFETY: resizing our own new file.
        if unsafe { libc::ftruncate(fd, len as libc::off_t) } != 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: closing our own descriptor.
            unsafe { libc::close(fd) };
            return Err(format!("cannot size the metrics memory: {e}"));
        }
        let m = map(fd, layout, count)?;
        Ok((m, fd))
    }

    /// The value of [`ENV`] for a template: `threads,routes,count`.
    pub fn env_value(&self) -> String {
        format!("{},{},{}", self.layout.threads, self.layout.routes, self.count)
    }

    pub fn regions(self: &Arc<Self>) -> Vec<Region> {
        let step = region_bytes(self.layout);
        (0..self.count)
            .map(|i| {
                // SAFETY: region i lies inside the mapping, 8-byte aligned (page-aligned base, step a multiple of 64).
                unsafe { Region::from_raw(self.ptr.add(i * step) as *const AtomicU64, self.layout, self.clone()) }
            })
            .collect()
    }
}

static INHERITED: OnceLock<Arc<Mapping>> = OnceLock::new();

/// A template: maps the master's shared memory (fd [`FD`], shape in [`ENV`]),
/// for the workers it forks. Without it (older master, no memory) workers
/// keep private metrics.
pub fn attach_inherited() {
    let Some(spec) = std::env::var(ENV).ok() else { return };
    let nums: Vec<usize> = spec.split(',').filter_map(|n| n.parse().ok()).collect();
    let [threads, routes, count] = nums[..] else { return };
    match map(FD, Layout { threads, routes }, count) {
        Ok(m) => {
            let _ = INHERITED.set(m);
        }
        Err(e) => log::warn!("{e}; worker metrics will not reach the master"),
    }
}

/// The template, before it forks a worker: claims a free shared region of
/// `layout` (owned by the template until the forked side hands it over with
/// [`Region::hand_over`], once it knows the worker's pid). So a region names
/// its worker before the template finishes the spawn, and a shared memory
/// the master sees with no region owned and no template alive has no user
/// left (`Fleet::drop_idle_shards`). None, with a warning, when the shape
/// differs from the master's (the project file changed between the master's
/// and the template's reads of it) or every region is taken: that worker
/// then counts in a private region, out of `/metrics`.
pub fn reserve(layout: Layout) -> Option<Region> {
    let pid = std::process::id();
    let m = INHERITED.get()?;
    if m.layout != layout {
        log::warn!(
            "template {pid}: the routes or threads differ from what the master read in the project file; the metrics of this template's workers stay out of /metrics (reload again)"
        );
        return None;
    }
    let region = m.regions().into_iter().find(|r| r.claim(pid));
    if region.is_none() {
        log::warn!("template {pid}: no free metrics region; a new worker's metrics stay out of /metrics");
    }
    region
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_shared_and_claimed_once() {
        let layout = Layout { threads: 2, routes: 1 };
        let (m, fd) = Mapping::create(layout, 3).unwrap();
        let second = map(fd, layout, 3).unwrap();
        let a = m.regions();
        let b = second.regions();
        assert!(a.iter().all(|r| !r.in_use()));
        assert!(a[1].claim(77));
        assert!(!b[1].claim(78));
        assert!(b[1].in_use() && b[1].owner() == 77);
        a[1].thread(1).request(0, 200, 10);
        assert_eq!(b[1].totals().route_count(0), 1);
        b[1].release();
        assert!(!a[1].in_use());
        // SAFETY: closing the test's descriptor.
        unsafe { libc::close(fd) };
    }
}
