//! A process's memory as the status page and `/metrics` show it: resident
//! set (RSS, /proc/PID/statm) and private memory (USS: Private_Clean +
//! Private_Dirty of /proc/PID/smaps_rollup), the part that is not shared
//! with the template and the other workers.

/// (RSS, USS) in bytes; None for a figure the kernel would not give.
pub fn memory(pid: u32) -> (Option<u64>, Option<u64>) {
    (rss(pid), uss(pid))
}

pub fn rss(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * if page > 0 { page as u64 } else { 4096 })
}

pub fn uss(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let mut kb = 0u64;
    let mut found = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Private_Clean:").or_else(|| line.strip_prefix("Private_Dirty:")) {
            kb += rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok()?;
            found = true;
        }
    }
    found.then_some(kb * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn own_memory_is_readable() {
        let (rss, uss) = super::memory(std::process::id());
        let (rss, uss) = (rss.unwrap(), uss.unwrap());
        assert!(rss > 0 && uss > 0 && uss <= rss + 4096, "{rss} {uss}");
    }
}
