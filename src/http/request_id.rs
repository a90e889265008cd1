//! Request ids: a valid incoming `X-Request-Id` (1 to 128 visible ASCII
//! characters) is kept; otherwise pyrs makes one from 64 random bits drawn
//! once per process (so ids differ across workers and restarts) and a
//! per-thread sequence number. Fixed-size, no allocation.

use std::fmt;

pub const MAX_LEN: usize = 128;

/// A request id, stored inline.
#[derive(Clone, Copy)]
pub struct RequestId {
    len: u8,
    bytes: [u8; MAX_LEN],
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId { len: 0, bytes: [0; MAX_LEN] }
    }
}

impl RequestId {
    /// The id as text (always ASCII).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// An id a client sent, if acceptable: 1..=128 bytes of visible ASCII.
    pub fn from_client(value: &[u8]) -> Option<RequestId> {
        if value.is_empty() || value.len() > MAX_LEN || !value.iter().all(|&b| (0x21..0x7f).contains(&b)) {
            return None;
        }
        let mut id = RequestId { len: value.len() as u8, ..Default::default() };
        id.bytes[..value.len()].copy_from_slice(value);
        Some(id)
    }

    pub fn from_str_lossy(s: &str) -> RequestId {
        Self::from_client(s.as_bytes()).unwrap_or_default()
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Makes ids for one pool thread: 16 hex digits of the process's random
/// prefix, then 12 of a sequence that interleaves the threads.
pub struct IdGenerator {
    prefix: [u8; 16],
    next: u64,
    step: u64,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl IdGenerator {
    /// `thread` of `threads`, in a process whose random prefix is `seed`.
    pub fn new(seed: u64, thread: usize, threads: usize) -> IdGenerator {
        let mut prefix = [0u8; 16];
        for (i, p) in prefix.iter_mut().enumerate() {
            *p = HEX[((seed >> (60 - 4 * i)) & 0xf) as usize];
        }
        IdGenerator { prefix, next: thread as u64, step: threads.max(1) as u64 }
    }

    /// The id for a request whose `X-Request-Id` header is `incoming`.
    pub fn for_request(&mut self, incoming: Option<&[u8]>) -> RequestId {
        if let Some(id) = incoming.and_then(RequestId::from_client) {
            return id;
        }
        self.generate()
    }

    pub fn generate(&mut self) -> RequestId {
        let mut id = RequestId { len: 28, ..Default::default() };
        id.bytes[..16].copy_from_slice(&self.prefix);
        let n = self.next;
        self.next = self.next.wrapping_add(self.step);
        for i in 0..12 {
            id.bytes[16 + i] = HEX[((n >> (44 - 4 * i)) & 0xf) as usize];
        }
        id
    }
}

/// 64 random bits for this process (from the kernel; the clock and pid if that fails).
pub fn process_seed() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: getrandom writes at most buf.len() bytes into buf.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n == 8 {
        return u64::from_le_bytes(buf);
    }
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64);
    t.unwrap_or(0) ^ (u64::from(std::process::id()) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn keeps_valid_ids_and_replaces_others() {
        let mut g = IdGenerator::new(0x0123_4567_89ab_cdef, 1, 2);
        assert_eq!(g.for_request(Some(b"abc-123")).as_str(), "abc-123");
        let long = [b'a'; 129];
        for bad in [&b""[..], b"a b", b"a\r\n", &long, b"\xc3\xa9"] {
            let id = g.for_request(Some(bad));
            assert_eq!(id.as_str().len(), 28, "{bad:?}");
        }
        assert_eq!(g.generate().as_str(), "0123456789abcdef00000000000b");
        assert_eq!(RequestId::from_client(&[b'x'; 128]).unwrap().as_str().len(), 128);
    }

    #[test]
    fn threads_never_collide() {
        let mut seen = HashSet::new();
        let mut gens: Vec<IdGenerator> = (0..3).map(|t| IdGenerator::new(7, t, 3)).collect();
        for _ in 0..1000 {
            for g in &mut gens {
                assert!(seen.insert(g.generate().as_str().to_string()));
            }
        }
        assert_ne!(process_seed(), process_seed());
    }
}
