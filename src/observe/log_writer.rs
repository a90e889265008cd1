//! Where access-log lines go: a writer thread that owns the file (or
//! stderr), fed whole buffers of lines by the event loops over a bounded
//! channel. A loop hands over its buffer at most once per turn; when the
//! writer falls behind and the channel is full, the buffer's lines are
//! dropped and counted instead of blocking a serving thread.
//!
//! A file is opened with O_APPEND and every write(2) holds whole lines, so
//! several worker processes can share one file. SIGUSR1 makes the writer
//! reopen the file (after logrotate moved it). Lines for stderr go through
//! the log's own queue (`logging::writer`), so they never mix with log lines.

use super::metrics::{Region, P_ACCESS_LOG_DROPPED};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Buffers queued for the writer before lines are dropped.
const QUEUE: usize = 256;
/// A thread's buffer is handed over early past this size.
pub const FLUSH_AT: usize = 256 * 1024;
/// Most bytes handed to the log queue at once (it cuts longer "lines").
const STDERR_PIECE: usize = 32 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stderr,
    File(PathBuf),
}

struct Output {
    path: PathBuf,
    file: File,
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o644).open(path)
}

/// The shared end: threads send buffers, get empty ones back.
pub struct LogSink {
    /// Lines go to stderr through the log queue instead of the writer thread.
    stderr: bool,
    tx: Sender<Vec<u8>>,
    spare: Receiver<Vec<u8>>,
    region: Region,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl LogSink {
    /// Opens `target` (a file is created if missing) and starts the writer.
    /// `reopen` is the flag SIGUSR1 sets.
    pub fn start(target: &Target, reopen: Arc<AtomicBool>, region: Region) -> Result<Arc<LogSink>, String> {
        let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(QUEUE);
        let (spare_tx, spare_rx) = crossbeam_channel::bounded::<Vec<u8>>(QUEUE);
        let mut handle = None;
        if let Target::File(path) = target {
            let file = open(path).map_err(|e| format!("cannot open the access log {}: {e}", path.display()))?;
            let output = Output { path: path.clone(), file };
            let spawned = std::thread::Builder::new()
                .name("pyrs-access-log".into())
                .spawn(move || run(output, rx, spare_tx, reopen))
                .map_err(|e| format!("cannot start the access-log thread: {e}"))?;
            handle = Some(spawned);
        }
        Ok(Arc::new(LogSink {
            stderr: *target == Target::Stderr,
            tx,
            spare: spare_rx,
            region,
            writer: Mutex::new(handle),
        }))
    }

    /// Hands `buf` (whole lines) to the writer and leaves an empty buffer in its place.
    pub fn submit(&self, buf: &mut Vec<u8>) {
        if buf.is_empty() {
            return;
        }
        if self.stderr {
            let mut rest = &buf[..];
            while !rest.is_empty() {
                let mut cut = rest.len().min(STDERR_PIECE);
                if cut < rest.len() {
                    cut = rest[..cut].iter().rposition(|&b| b == b'\n').map(|i| i + 1).unwrap_or(cut);
                }
                crate::logging::writer::line(String::from_utf8_lossy(&rest[..cut]).into_owned());
                rest = &rest[cut..];
            }
            buf.clear();
            return;
        }
        let fresh = self.spare.try_recv().unwrap_or_default();
        let full = std::mem::replace(buf, fresh);
        match self.tx.try_send(full) {
            Ok(()) => {}
            Err(TrySendError::Full(mut b)) | Err(TrySendError::Disconnected(mut b)) => {
                let lines = b.iter().filter(|&&c| c == b'\n').count() as u64;
                self.region.add_process(P_ACCESS_LOG_DROPPED, lines);
                b.clear();
                *buf = b;
            }
        }
    }

    /// Waits (up to 2 s) until everything submitted is written; call after
    /// the serving threads stopped.
    pub fn close(&self) {
        let taken = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(handle) = taken {
            // An empty buffer tells the writer to finish (after what is queued).
            let _ = self.tx.send_timeout(Vec::new(), Duration::from_secs(2));
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while !handle.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

fn run(mut output: Output, rx: Receiver<Vec<u8>>, spare: Sender<Vec<u8>>, reopen: Arc<AtomicBool>) {
    let mut failing = false;
    loop {
        let msg = rx.recv_timeout(Duration::from_millis(200));
        if reopen.swap(false, Ordering::AcqRel) {
            match open(&output.path) {
                Ok(f) => {
                    output.file = f;
                    log::info!("access log reopened: {}", output.path.display());
                }
                Err(e) => log::error!("cannot reopen the access log {}: {e}", output.path.display()),
            }
        }
        let mut buf = match msg {
            Ok(b) if b.is_empty() => return,
            Ok(b) => b,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        match output.file.write_all(&buf) {
            Ok(()) => failing = false,
            Err(e) => {
                if !failing {
                    log::error!("cannot write the access log: {e}");
                }
                failing = true;
            }
        }
        buf.clear();
        if buf.capacity() <= 4 * FLUSH_AT {
            let _ = spare.try_send(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::metrics::Layout;

    #[test]
    fn lines_reach_the_file_and_reopen_follows_a_rename() {
        let dir = std::env::temp_dir().join(format!("pyrs-logw-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("access.log");
        let _ = std::fs::remove_file(&path);
        let flag = Arc::new(AtomicBool::new(false));
        let region = Region::heap(Layout { threads: 1, routes: 0 });
        let sink = LogSink::start(&Target::File(path.clone()), flag.clone(), region).unwrap();
        let mut buf = b"one\ntwo\n".to_vec();
        sink.submit(&mut buf);
        assert!(buf.is_empty());
        let wait = |p: &Path, want: &str| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::fs::read_to_string(p).unwrap_or_default() != want {
                assert!(std::time::Instant::now() < deadline, "{} never became {want:?}", p.display());
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        wait(&path, "one\ntwo\n");
        std::fs::rename(&path, dir.join("access.log.1")).unwrap();
        flag.store(true, Ordering::Release);
        buf.extend_from_slice(b"three\n");
        sink.submit(&mut buf);
        wait(&path, "three\n");
        sink.close();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
