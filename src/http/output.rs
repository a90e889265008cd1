//! A connection's output: a queue of segments kept in request order, and
//! how each is written. No sockets: it writes to any `io::Write`.
//!
//! The common case is a single byte buffer (`tail`): response heads and
//! small bodies are encoded straight into it and written with one `write`,
//! with no allocation per request. Bodies that are not copied (a Python
//! `bytes` object, a stream) become segments; bytes encoded after them wait
//! in `tail` until they are written. A `Seg::Pending` slot ([`Output::reserve`]) holds the place
//! of a response that will be produced later (by another thread, or an
//! awaited coroutine): everything after it waits until [`Output::fill`].

use super::body::{BodyStream, Cancel, Note, Pulled, Released, SharedBytes};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice, Write};

/// Above this capacity an emptied `tail` is shrunk back.
const TAIL_KEEP: usize = 64 * 1024;
/// Most slices handed to one `writev`.
const MAX_SLICES: usize = 16;
/// Most bytes of a file handed to one sendfile(2).
const FILE_CHUNK: usize = 1 << 20;

/// Where output goes: a writer that may also send file ranges itself.
pub trait Sink: Write {
    /// Writes up to `len` bytes of `file` from `offset` (sendfile(2) on a
    /// socket); returns how many were written. The default reads the file
    /// into a buffer and writes that.
    fn send_file(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 16 * 1024];
        let n = len.min(buf.len());
        let got = file.read_at(&mut buf[..n], offset)?;
        if got == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.write(&buf[..got])
    }
}

impl Sink for Vec<u8> {}

/// A body stream being sent: framed items wait in `buf`.
struct StreamSeg {
    stream: Box<dyn BodyStream>,
    buf: Vec<u8>,
    pos: usize,
    /// `Transfer-Encoding: chunked` (HTTP/1.1); else close-delimited (1.0).
    chunked: bool,
    state: StreamState,
    /// The response's head, held back until the first item (see
    /// [`Output::push_stream_first`]).
    held: Option<Box<HeldHead>>,
}

/// A stream response's head waiting for the stream's first item, and what
/// encodes the complete response sent instead (from a status and a
/// `text/plain` body) if the stream fails before producing one.
struct HeldHead {
    head: Vec<u8>,
    fallback: Fallback,
    /// The owner's note, handed back when the head is decided.
    note: Option<Note>,
}

/// How a held head was decided (see [`Output::take_decided`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// The head went out with the first item (or the end of the stream).
    Sent,
    /// The stream failed first: a complete response with this status and
    /// `body_bytes` of body went out instead.
    Replaced { status: u16, body_bytes: u64 },
}

/// Encodes a complete short response from a status and a `text/plain` body.
pub type Fallback = Box<dyn FnOnce(u16, &str) -> Vec<u8> + Send>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    Open,
    /// The stream has no item yet and wakes its loop when it has one
    /// ([`Output::wake_streams`]); not pulled meanwhile.
    Waiting,
    /// Exhausted; `buf` holds the last bytes (the terminating chunk).
    Ended,
    /// Failed: `buf` is sent, then the connection closes.
    Failed,
}

enum Seg {
    Bytes {
        buf: Vec<u8>,
        pos: usize,
    },
    Shared {
        data: Box<dyn SharedBytes>,
        pos: usize,
    },
    Stream(StreamSeg),
    /// A file range, written with [`Sink::send_file`].
    File {
        file: File,
        offset: u64,
        left: u64,
    },
    /// A response not produced yet (see [`Output::reserve`]).
    Pending(u64),
}

impl Seg {
    /// The bytes ready to write now, if this segment is plain bytes or a
    /// stream with buffered items.
    fn ready(&self) -> &[u8] {
        match self {
            Seg::Bytes { buf, pos } => &buf[*pos..],
            Seg::Shared { data, pos } => &data.bytes()[*pos..],
            Seg::Stream(s) => &s.buf[s.pos..],
            Seg::File { .. } | Seg::Pending(_) => &[],
        }
    }

    /// Marks `n` more bytes written (n <= ready().len()).
    fn advance(&mut self, n: usize) {
        match self {
            Seg::Bytes { pos, .. } | Seg::Shared { pos, .. } => *pos += n,
            Seg::Stream(s) => s.pos += n,
            Seg::File { .. } | Seg::Pending(_) => debug_assert_eq!(n, 0),
        }
    }

    /// Nothing after this segment may be written yet (once its ready bytes are).
    fn blocks(&self) -> bool {
        match self {
            Seg::Bytes { .. } | Seg::Shared { .. } => false,
            Seg::Stream(s) => s.state != StreamState::Ended,
            Seg::File { .. } | Seg::Pending(_) => true,
        }
    }

    /// Hands what belongs to the application (an unfinished stream, shared
    /// bytes, an undecided head's note) to `into`; the rest is dropped.
    fn release(self, into: &mut Released) {
        match self {
            Seg::Stream(s) if matches!(s.state, StreamState::Open | StreamState::Waiting) => {
                if let Some(note) = s.held.and_then(|h| h.note) {
                    into.notes.push(note);
                }
                into.streams.push(s.stream)
            }
            Seg::Shared { data, .. } => into.shared.push(data),
            _ => {}
        }
    }

    /// Fully written and nothing more will come.
    fn done(&self) -> bool {
        match self {
            Seg::Bytes { buf, pos } => *pos == buf.len(),
            Seg::Shared { data, pos } => *pos == data.bytes().len(),
            Seg::Stream(s) => s.state == StreamState::Ended && s.pos == s.buf.len(),
            Seg::File { left, .. } => *left == 0,
            Seg::Pending(_) => false,
        }
    }
}

/// A position in the queue to roll back to (see [`Output::rollback`]); the
/// default is the start of an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mark {
    segs: usize,
    tail: usize,
}

/// Why [`Output::write_to`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Everything queued is written.
    Empty,
    /// The writer would block.
    WouldBlock,
    /// A stream must be pulled before more can be written.
    NeedsPull,
    /// A response slot has not been filled yet.
    Pending,
    /// A stream failed and what preceded it is written: close the connection.
    Cut,
}

/// The outcome of [`Output::pull`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullResult {
    /// Nothing to pull (no open stream is next).
    Idle,
    Item,
    Ended,
    /// The stream failed: the response is cut and the connection must close
    /// once the bytes before the failure are written.
    Failed,
    /// The stream failed before its first item while its head was held
    /// back: a complete fallback response replaces it, the connection goes on.
    Replaced,
}

#[derive(Default)]
pub struct Output {
    segs: VecDeque<Seg>,
    /// Bytes after the last segment (the only output while `segs` is empty).
    tail: Vec<u8>,
    /// Bytes of `tail` already written (only while `segs` is empty).
    sent: usize,
    next_slot: u64,
    /// Bytes written since the output was created (for access logs).
    written_total: u64,
    /// Reused buffer for one pulled item before it is framed.
    scratch: Vec<u8>,
    /// Shared bodies fully written, to be dropped with the application locked.
    retired: Vec<Box<dyn SharedBytes>>,
    /// What cancels the work behind an unfilled slot, by slot (see
    /// [`Output::on_cancel`]); handed over when the connection goes.
    cancels: Vec<(u64, Box<dyn Cancel>)>,
    /// Notes of held heads decided by [`Output::pull`], not yet taken.
    decided: Vec<(Note, Head)>,
}

impl Output {
    pub fn new() -> Self {
        Self::default()
    }

    /// Where response heads and small bodies are encoded (after everything queued).
    pub fn tail(&mut self) -> &mut Vec<u8> {
        &mut self.tail
    }

    /// Nothing left to write or produce.
    pub fn is_empty(&self) -> bool {
        self.segs.is_empty() && self.sent == self.tail.len()
    }

    /// Bytes queued and not yet written, file ranges included (what
    /// back-pressure bounds).
    pub fn unsent(&self) -> usize {
        let files: u64 = self.segs.iter().map(|s| if let Seg::File { left, .. } = s { *left } else { 0 }).sum();
        let tail = self.tail.len() - if self.segs.is_empty() { self.sent } else { 0 };
        let ready: usize = self.segs.iter().map(|s| s.ready().len()).sum();
        (ready + tail).saturating_add(usize::try_from(files).unwrap_or(usize::MAX))
    }

    /// Bytes held in memory for this output and not yet written (a shared
    /// body counts whole: it is held until its last byte is written).
    pub fn buffered(&self) -> usize {
        let tail = self.tail.len() - if self.segs.is_empty() { self.sent } else { 0 };
        let held = |s: &Seg| match s {
            Seg::Shared { data, .. } => data.bytes().len(),
            other => other.ready().len(),
        };
        self.segs.iter().map(held).sum::<usize>() + tail
    }

    pub fn written_total(&self) -> u64 {
        self.written_total
    }

    pub fn mark(&self) -> Mark {
        Mark { segs: self.segs.len(), tail: self.tail.len() }
    }

    /// Whether anything was queued since `mark`.
    pub fn changed_since(&self, mark: Mark) -> bool {
        self.mark() != mark
    }

    /// Removes everything queued since `mark` (a response that failed half
    /// way), closing the streams it queued. Runs with the application locked.
    pub fn rollback(&mut self, mark: Mark) {
        if self.segs.len() > mark.segs {
            let mut extra = self.segs.split_off(mark.segs);
            // The first new segment starts with the old tail (sealed when a
            // body segment was queued after it).
            if let Some(Seg::Bytes { .. }) = extra.front() {
                if let Some(Seg::Bytes { mut buf, pos }) = extra.pop_front() {
                    buf.truncate(mark.tail);
                    self.sent = pos.min(buf.len());
                    self.tail = buf;
                }
            } else {
                // The tail was empty: the first new segment is not its bytes.
                self.tail.clear();
                self.sent = 0;
            }
            for seg in extra {
                match seg {
                    Seg::Stream(mut s) => s.stream.close(),
                    Seg::Pending(slot) => {
                        if let Some(at) = self.cancels.iter().position(|(n, _)| *n == slot) {
                            self.cancels.swap_remove(at).1.cancel();
                        }
                    }
                    _ => {}
                }
            }
        } else {
            self.tail.truncate(mark.tail);
        }
    }

    /// Moves the bytes of `tail` into a segment so that a new segment can follow them.
    fn seal_tail(&mut self) {
        if self.sent < self.tail.len() {
            let buf = std::mem::take(&mut self.tail);
            self.segs.push_back(Seg::Bytes { buf, pos: self.sent });
        } else {
            self.tail.clear();
        }
        self.sent = 0;
    }

    /// Queues bytes owned elsewhere, written without a copy.
    pub fn push_shared(&mut self, data: Box<dyn SharedBytes>) {
        if data.bytes().is_empty() {
            return;
        }
        self.seal_tail();
        self.segs.push_back(Seg::Shared { data, pos: 0 });
    }

    /// Queues a body stream; with `chunked` each item is a chunk and the
    /// end is the terminating chunk, else the items are sent as they are
    /// (the connection closing ends the body).
    pub fn push_stream(&mut self, stream: Box<dyn BodyStream>, chunked: bool) {
        self.seal_tail();
        self.push_stream_seg(stream, chunked, None);
    }

    /// Queues a stream like [`Output::push_stream`], its response's head
    /// (the bytes of the tail from `head_at` on) held back until the
    /// stream's first item or end. If the stream fails before either, the
    /// response `fallback` encodes (with the stream's
    /// [`BodyStream::failure`], else a 500) is sent instead of the head and
    /// the connection goes on; once the head is out, a failure
    /// cuts the response as usual. The first item is pulled like any other
    /// (by the event loop, below the output bound), so nothing blocks here.
    pub fn push_stream_first(
        &mut self,
        stream: Box<dyn BodyStream>,
        chunked: bool,
        head_at: usize,
        fallback: Fallback,
    ) {
        let head = self.tail.split_off(head_at.min(self.tail.len()));
        self.seal_tail();
        self.push_stream_seg(stream, chunked, Some(Box::new(HeldHead { head, fallback, note: None })));
    }

    /// Attaches `note` to the held head of the stream queued last, when that
    /// stream was queued since `since` and its head is still held without a
    /// note (says whether it did; `note` is made only then);
    /// [`Output::take_decided`] hands it back once the head is decided, or
    /// [`Output::take_streams`] (undecided) when the connection goes.
    pub fn note_held_head(&mut self, since: Mark, note: impl FnOnce() -> Note) -> bool {
        if self.segs.len() <= since.segs {
            return false;
        }
        match self.segs.back_mut() {
            Some(Seg::Stream(StreamSeg { held: Some(held), .. })) if held.note.is_none() => {
                held.note = Some(note());
                true
            }
            _ => false,
        }
    }

    /// The notes of the held heads decided since the last call, and how
    /// (the caller of [`Output::pull`] takes them right after it).
    pub fn take_decided(&mut self) -> Vec<(Note, Head)> {
        std::mem::take(&mut self.decided)
    }

    /// Appends an open stream segment (the tail sealed before).
    fn push_stream_seg(&mut self, stream: Box<dyn BodyStream>, chunked: bool, held: Option<Box<HeldHead>>) {
        let seg = StreamSeg { stream, buf: Vec::new(), pos: 0, chunked, state: StreamState::Open, held };
        self.segs.push_back(Seg::Stream(seg));
    }

    /// Queues `len` bytes of `file` from `offset`.
    pub fn push_file(&mut self, file: File, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        self.seal_tail();
        self.segs.push_back(Seg::File { file, offset, left: len });
    }

    /// Reserves the place of a response produced later; returns its slot.
    pub fn reserve(&mut self) -> u64 {
        self.seal_tail();
        self.next_slot += 1;
        self.segs.push_back(Seg::Pending(self.next_slot));
        self.next_slot
    }

    /// Registers what cancels the work that will fill `slot` (an awaited
    /// coroutine), should the connection go before it is filled: then
    /// [`Output::take_streams`] hands it over. Filling the slot drops it.
    pub fn on_cancel(&mut self, slot: u64, cancel: Box<dyn Cancel>) {
        if self.segs.iter().any(|s| matches!(s, Seg::Pending(n) if *n == slot)) {
            self.cancels.push((slot, cancel));
        }
    }

    /// Holds a stream that must stay on the loop that created it.
    pub fn has_pinned_stream(&self) -> bool {
        self.segs.iter().any(|s| matches!(s, Seg::Stream(st) if st.stream.pinned()))
    }

    /// Streams that said they had no item yet may be pulled again (one of
    /// them has an item now); true when any was waiting.
    pub fn wake_streams(&mut self) -> bool {
        let mut woke = false;
        for seg in self.segs.iter_mut() {
            if let Seg::Stream(s) = seg {
                if s.state == StreamState::Waiting {
                    s.state = StreamState::Open;
                    woke = true;
                }
            }
        }
        woke
    }

    /// The slot reserved last (0: none yet): a change across a handler call
    /// tells that it deferred its response.
    pub fn last_slot(&self) -> u64 {
        self.next_slot
    }

    /// Fills a reserved slot with what `encode` writes into an output of its
    /// own (the same calls that answer a request at once). False when the
    /// slot is unknown (already filled).
    pub fn fill(&mut self, slot: u64, encode: impl FnOnce(&mut Output)) -> bool {
        let Some(at) = self.segs.iter().position(|s| matches!(s, Seg::Pending(n) if *n == slot)) else {
            return false;
        };
        if !self.cancels.is_empty() {
            self.cancels.retain(|(n, _)| *n != slot);
        }
        let mut part = Output::new();
        encode(&mut part);
        part.seal_tail();
        self.segs.remove(at);
        for (k, seg) in part.segs.drain(..).enumerate() {
            self.segs.insert(at + k, seg);
        }
        true
    }

    /// Everything queued before the first reserved slot is written: nothing
    /// can be written until [`Output::fill`].
    pub fn awaits_slot(&self) -> bool {
        for seg in &self.segs {
            match seg {
                Seg::Pending(_) => return true,
                s if s.done() => continue,
                _ => return false,
            }
        }
        false
    }

    /// Fills a slot like [`Output::fill`] with a response that closes the
    /// connection: everything queued after it is dropped (never sent), its
    /// open streams and shared bodies handed to `dropped` (closed and freed
    /// with the application locked).
    pub fn fill_last(&mut self, slot: u64, encode: impl FnOnce(&mut Output), dropped: &mut Released) -> bool {
        let Some(at) = self.segs.iter().position(|s| matches!(s, Seg::Pending(n) if *n == slot)) else {
            return false;
        };
        for seg in self.segs.drain(at + 1..) {
            seg.release(dropped);
        }
        // Slots are numbered in queue order: those after this one are dropped.
        let (after, keep): (Vec<_>, Vec<_>) = self.cancels.drain(..).partition(|(n, _)| *n > slot);
        self.cancels = keep;
        dropped.cancels.extend(after.into_iter().map(|(_, c)| c));
        self.tail.clear();
        self.sent = 0;
        self.fill(slot, encode)
    }

    /// A reserved slot is not filled yet (its response will be delivered to
    /// the event loop that reserved it).
    pub fn has_slot(&self) -> bool {
        self.segs.iter().any(|s| matches!(s, Seg::Pending(_)))
    }

    /// The stream that is next to produce output: the first segment that is
    /// not plain bytes, when it is an open stream.
    fn next_stream(&mut self) -> Option<&mut StreamSeg> {
        for seg in self.segs.iter_mut() {
            match seg {
                Seg::Bytes { .. } | Seg::Shared { .. } => continue,
                Seg::Stream(s) if s.state == StreamState::Open => return Some(s),
                _ => return None,
            }
        }
        None
    }

    /// The route of the stream [`Output::pull`] would pull, when it says.
    pub fn next_stream_route(&mut self) -> Option<usize> {
        self.next_stream().and_then(|s| s.stream.route())
    }

    /// True when a stream is next and less than `max_buffered` bytes wait.
    pub fn wants_pull(&self, max_buffered: usize) -> bool {
        let next_open = self
            .segs
            .iter()
            .find(|s| !matches!(s, Seg::Bytes { .. } | Seg::Shared { .. }))
            .is_some_and(|s| matches!(s, Seg::Stream(st) if st.state == StreamState::Open));
        next_open && self.unsent() < max_buffered
    }

    /// Pulls one item from the next stream and frames it.
    pub fn pull(&mut self) -> PullResult {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let Some(s) = self.next_stream() else {
            self.scratch = scratch;
            return PullResult::Idle;
        };
        // A panic in the stream's code (a bug) fails that stream, as an
        // exception would, not the thread that pulls it: like a handler
        // call, a pull is contained to its request.
        let pulled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.stream.pull(&mut scratch)))
            .unwrap_or_else(|_| {
                log::error!("pulling a response stream's next item panicked; that stream failed");
                Pulled::Failed
            });
        let mut sent_note = None;
        match (pulled, s.held.take()) {
            (Pulled::Pending, held) => s.held = held,
            (Pulled::Failed, Some(held)) => {
                // Nothing of this response was sent: the fallback replaces it whole.
                let (status, body) = s.stream.failure().unwrap_or_else(|| (500, "Internal Server Error\n".into()));
                let HeldHead { fallback, note, .. } = *held;
                s.buf = fallback(status, &body);
                s.state = StreamState::Ended;
                self.scratch = scratch;
                if let Some(note) = note {
                    self.decided.push((note, Head::Replaced { status, body_bytes: body.len() as u64 }));
                }
                return PullResult::Replaced;
            }
            (_, Some(held)) => {
                let HeldHead { head, note, .. } = *held;
                s.buf = head;
                sent_note = note;
            }
            (_, None) => {}
        }
        let result = match pulled {
            Pulled::Item => {
                if s.chunked {
                    if !scratch.is_empty() {
                        push_chunk(&mut s.buf, &scratch);
                    }
                } else {
                    s.buf.extend_from_slice(&scratch);
                }
                PullResult::Item
            }
            Pulled::End => {
                if s.chunked {
                    s.buf.extend_from_slice(b"0\r\n\r\n");
                }
                s.state = StreamState::Ended;
                PullResult::Ended
            }
            Pulled::Failed => {
                s.state = StreamState::Failed;
                PullResult::Failed
            }
            Pulled::Pending => {
                s.state = StreamState::Waiting;
                PullResult::Idle
            }
        };
        if scratch.capacity() > TAIL_KEEP {
            scratch = Vec::new();
        }
        self.scratch = scratch;
        if let Some(note) = sent_note {
            self.decided.push((note, Head::Sent));
        }
        if result == PullResult::Failed {
            // Nothing after a cut response is ever sent.
            let at = self.segs.iter().position(|s| matches!(s, Seg::Stream(st) if st.state == StreamState::Failed));
            if let Some(at) = at {
                self.segs.truncate(at + 1);
            }
            self.tail.clear();
            self.sent = 0;
        }
        result
    }

    /// Removes every open stream (to be closed by the caller, with the
    /// application locked) and everything queued: the connection is going.
    pub fn take_streams(&mut self, into: &mut Released) {
        for seg in self.segs.drain(..) {
            seg.release(into);
        }
        into.cancels.extend(self.cancels.drain(..).map(|(_, c)| c));
        into.shared.append(&mut self.retired);
        self.tail.clear();
        self.sent = 0;
    }

    /// Hands over the shared bodies written since the last call.
    pub fn take_retired(&mut self, into: &mut Released) {
        into.shared.append(&mut self.retired);
    }

    /// Removes the fully written segments at the front.
    fn pop_done(&mut self) {
        while self.segs.front().is_some_and(Seg::done) {
            if let Some(Seg::Shared { data, .. }) = self.segs.pop_front() {
                self.retired.push(data);
            }
        }
    }

    /// Writes as much as `w` takes; stops at a stream that needs a pull, an
    /// unfilled slot, or a cut. Returns why it stopped and whether any byte
    /// was written.
    pub fn write_to<W: Sink + ?Sized>(&mut self, w: &mut W) -> io::Result<(Stop, bool)> {
        let mut progressed = false;
        self.pop_done();
        loop {
            let result = match self.segs.front_mut() {
                None if self.sent == self.tail.len() => {
                    self.finish_tail();
                    return Ok((Stop::Empty, progressed));
                }
                None => w.write(&self.tail[self.sent..]).map(|n| (n, false)),
                Some(Seg::File { file, offset, left }) => {
                    let chunk = usize::try_from(*left).unwrap_or(usize::MAX).min(FILE_CHUNK);
                    w.send_file(file, *offset, chunk).map(|n| (n, true))
                }
                Some(_) => {
                    let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                    let count = self.gather(&mut slices);
                    if count == 0 {
                        return Ok((self.next_stop().unwrap_or(Stop::Empty), progressed));
                    }
                    if count == 1 { w.write(&slices[0]) } else { w.write_vectored(&slices[..count]) }
                        .map(|n| (n, false))
                }
            };
            match result {
                Ok((0, _)) => return Err(io::ErrorKind::WriteZero.into()),
                Ok((n, from_file)) => {
                    progressed = true;
                    self.written_total += n as u64;
                    if from_file {
                        self.advance_file(n as u64);
                    } else {
                        self.advance(n);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((Stop::WouldBlock, progressed)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Marks `n` bytes of the front file segment written.
    fn advance_file(&mut self, n: u64) {
        if let Some(Seg::File { offset, left, .. }) = self.segs.front_mut() {
            *offset += n;
            *left -= n.min(*left);
            if *left == 0 {
                self.segs.pop_front();
            }
        }
    }

    /// What will stop writing once the ready bytes are written.
    fn next_stop(&self) -> Option<Stop> {
        for seg in &self.segs {
            match seg {
                Seg::Bytes { .. } | Seg::Shared { .. } => {}
                Seg::Stream(s) => {
                    return match s.state {
                        StreamState::Open | StreamState::Waiting => Some(Stop::NeedsPull),
                        StreamState::Failed => Some(Stop::Cut),
                        StreamState::Ended => continue,
                    }
                }
                Seg::Pending(_) => return Some(Stop::Pending),
                Seg::File { .. } => return None,
            }
        }
        None
    }

    /// Collects the bytes ready to write, in order, up to the first
    /// segment that cannot be written yet.
    fn gather<'a>(&'a self, slices: &mut [IoSlice<'a>; MAX_SLICES]) -> usize {
        let mut count = 0;
        let mut reached_end = true;
        for seg in &self.segs {
            let ready = seg.ready();
            if !ready.is_empty() {
                if count == MAX_SLICES {
                    return count;
                }
                slices[count] = IoSlice::new(ready);
                count += 1;
            }
            if seg.blocks() {
                reached_end = false;
                break;
            }
        }
        if reached_end && !self.tail.is_empty() && count < MAX_SLICES {
            slices[count] = IoSlice::new(&self.tail);
            count += 1;
        }
        count
    }

    /// Marks `n` bytes written, in queue order.
    fn advance(&mut self, mut n: usize) {
        if self.segs.is_empty() {
            self.sent += n;
            return;
        }
        for seg in self.segs.iter_mut() {
            let ready = seg.ready().len();
            let step = ready.min(n);
            seg.advance(step);
            n -= step;
            if n == 0 || !seg.done() {
                break;
            }
        }
        self.pop_done();
        if let Some(Seg::Stream(s)) = self.segs.front_mut() {
            if s.pos == s.buf.len() {
                s.buf.clear();
                s.pos = 0;
            }
        }
        if self.segs.is_empty() {
            self.sent = n;
        }
    }

    fn finish_tail(&mut self) {
        self.tail.clear();
        self.sent = 0;
        if self.tail.capacity() > 4 * TAIL_KEEP {
            self.tail.shrink_to(TAIL_KEEP);
        }
    }
}

/// Appends `data` as one chunk of a chunked body.
fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    let mut hex = [0u8; 16];
    let mut i = hex.len();
    let mut n = data.len();
    loop {
        i -= 1;
        hex[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&hex[i..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::body::IterStream;

    /// A writer that takes at most `room` bytes per call, then would block once.
    struct Slow {
        got: Vec<u8>,
        room: usize,
        calls: usize,
    }

    impl Write for Slow {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls % 2 == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink for Slow {}

    fn drain(out: &mut Output, w: &mut Slow) -> Stop {
        loop {
            match out.write_to(w).unwrap().0 {
                Stop::WouldBlock => continue,
                Stop::NeedsPull => {
                    out.pull();
                }
                other => return other,
            }
        }
    }

    fn items(v: &[&str]) -> Box<dyn BodyStream> {
        let owned: Vec<Vec<u8>> = v.iter().map(|s| s.as_bytes().to_vec()).collect();
        Box::new(IterStream(owned.into_iter()))
    }

    #[test]
    fn segments_are_written_in_order_through_a_slow_writer() {
        let mut out = Output::new();
        out.tail().extend_from_slice(b"H1|");
        out.push_shared(Box::new(b"shared-body|".to_vec()));
        out.tail().extend_from_slice(b"H2|");
        out.push_stream(items(&["ab", "", "cde"]), true);
        out.tail().extend_from_slice(b"H3|");
        out.push_stream(items(&["x"]), false);
        out.tail().extend_from_slice(b"end");
        let mut w = Slow { got: Vec::new(), room: 3, calls: 0 };
        assert_eq!(drain(&mut out, &mut w), Stop::Empty);
        assert_eq!(String::from_utf8(w.got).unwrap(), "H1|shared-body|H2|2\r\nab\r\n3\r\ncde\r\n0\r\n\r\nH3|xend");
        assert!(out.is_empty());
    }

    #[test]
    fn a_stream_is_pulled_only_below_the_bound() {
        let mut out = Output::new();
        out.push_stream(items(&["0123456789", "0123456789", "z"]), false);
        assert!(out.wants_pull(15));
        assert_eq!(out.pull(), PullResult::Item);
        assert!(out.wants_pull(15));
        assert_eq!(out.pull(), PullResult::Item);
        assert_eq!(out.unsent(), 20);
        assert!(!out.wants_pull(15));
        let mut w = Slow { got: Vec::new(), room: 100, calls: 0 };
        assert_eq!(out.write_to(&mut w).unwrap(), (Stop::NeedsPull, true));
        assert!(out.wants_pull(15));
        assert_eq!(out.pull(), PullResult::Item);
        assert_eq!(out.pull(), PullResult::Ended);
        assert_eq!(out.pull(), PullResult::Idle);
    }

    struct Failing(u8);
    impl BodyStream for Failing {
        fn pull(&mut self, out: &mut Vec<u8>) -> Pulled {
            if self.0 == 0 {
                return Pulled::Failed;
            }
            self.0 -= 1;
            out.extend_from_slice(b"ok");
            Pulled::Item
        }
    }

    #[test]
    fn a_failed_stream_cuts_the_output_without_a_last_chunk() {
        let mut out = Output::new();
        out.tail().extend_from_slice(b"H|");
        out.push_stream(Box::new(Failing(1)), true);
        out.tail().extend_from_slice(b"next response");
        let mut w = Slow { got: Vec::new(), room: 100, calls: 0 };
        assert_eq!(drain(&mut out, &mut w), Stop::Cut);
        assert_eq!(w.got, b"H|2\r\nok\r\n");
    }

    fn fallback() -> Fallback {
        Box::new(|status, body| format!("FALLBACK {status} {body}|").into_bytes())
    }

    #[test]
    fn a_held_head_goes_out_with_the_first_item_or_gives_way_to_the_fallback() {
        // Fails before its first item: the fallback replaces the whole response; what follows is sent.
        let mut out = Output::new();
        out.tail().extend_from_slice(b"before|");
        let head_at = out.tail().len();
        out.tail().extend_from_slice(b"HEAD|");
        out.push_stream_first(Box::new(Failing(0)), true, head_at, fallback());
        out.tail().extend_from_slice(b"next response");
        let mut w = Slow { got: Vec::new(), room: 100, calls: 0 };
        assert_eq!(out.write_to(&mut w).unwrap(), (Stop::NeedsPull, true));
        assert_eq!(w.got, b"before|", "the head waits for the first item");
        assert_eq!(out.pull(), PullResult::Replaced);
        assert_eq!(drain(&mut out, &mut w), Stop::Empty);
        assert_eq!(w.got, b"before|FALLBACK 500 Internal Server Error\n|next response");
        // Fails after its first item: the head went out with it, then the response is cut.
        let mut out = Output::new();
        out.tail().extend_from_slice(b"HEAD|");
        out.push_stream_first(Box::new(Failing(1)), true, 0, fallback());
        out.tail().extend_from_slice(b"next response");
        let mut w = Slow { got: Vec::new(), room: 100, calls: 0 };
        assert_eq!(drain(&mut out, &mut w), Stop::Cut);
        assert_eq!(w.got, b"HEAD|2\r\nok\r\n");
        // An empty stream sends its head with the last chunk.
        let mut out = Output::new();
        out.tail().extend_from_slice(b"HEAD|");
        out.push_stream_first(items(&[]), true, 0, fallback());
        let mut w = Slow { got: Vec::new(), room: 100, calls: 0 };
        assert_eq!(drain(&mut out, &mut w), Stop::Empty);
        assert_eq!(w.got, b"HEAD|0\r\n\r\n");
    }

    #[test]
    fn a_held_heads_note_comes_back_once_the_head_is_decided_or_with_the_stream() {
        let note = |n: u32| move || Box::new(n) as Note;
        let decided = |out: &mut Output| -> Vec<(u32, Head)> {
            out.take_decided().into_iter().map(|(n, h)| (*n.downcast::<u32>().unwrap(), h)).collect()
        };
        // Only a held head queued since the mark takes a note, and only one.
        let mut out = Output::new();
        let start = out.mark();
        assert!(!out.note_held_head(start, note(0)), "nothing queued");
        out.push_stream(items(&["x"]), true);
        assert!(!out.note_held_head(start, note(0)), "a stream without a held head");
        out.push_stream_first(Box::new(Failing(0)), true, 0, fallback());
        let after = out.mark();
        assert!(!out.note_held_head(after, note(0)), "queued before the mark");
        assert!(out.note_held_head(start, note(1)));
        assert!(!out.note_held_head(start, note(2)), "noted already");
        // The first stream's item is no head; the second fails first: replaced.
        assert_eq!(out.pull(), PullResult::Item);
        assert_eq!(out.pull(), PullResult::Ended);
        assert_eq!(decided(&mut out), []);
        let mut w = Vec::new();
        assert_eq!(out.write_to(&mut w).unwrap(), (Stop::NeedsPull, true));
        assert_eq!(out.pull(), PullResult::Replaced);
        let replaced = Head::Replaced { status: 500, body_bytes: 22 };
        assert_eq!(decided(&mut out), [(1, replaced)]);
        assert_eq!(decided(&mut out), [], "handed back once");
        // The head goes out with the first item (an empty stream: its end).
        let mut out = Output::new();
        out.push_stream_first(items(&[]), true, 0, fallback());
        assert!(out.note_held_head(Mark::default(), note(3)));
        assert_eq!(out.pull(), PullResult::Ended);
        assert_eq!(decided(&mut out), [(3, Head::Sent)]);
        // Never decided: the note goes with the stream when the connection goes.
        let mut out = Output::new();
        out.push_stream_first(items(&["x"]), true, 0, fallback());
        assert!(out.note_held_head(Mark::default(), note(4)));
        let mut taken = Released::default();
        out.take_streams(&mut taken);
        assert_eq!(taken.streams.len(), 1);
        let notes: Vec<u32> = taken.notes.drain(..).map(|n| *n.downcast::<u32>().unwrap()).collect();
        assert_eq!(notes, [4]);
        // Dropped after another response's slot filled last: the same.
        let mut out = Output::new();
        let slot = out.reserve();
        out.push_stream_first(items(&["x"]), true, 0, fallback());
        assert!(out.note_held_head(Mark::default(), note(5)));
        assert!(out.fill_last(slot, |o| o.tail().extend_from_slice(b"closing"), &mut taken));
        let notes: Vec<u32> = taken.notes.drain(..).map(|n| *n.downcast::<u32>().unwrap()).collect();
        assert_eq!(notes, [5]);
    }

    #[test]
    fn a_reserved_slot_holds_back_what_follows_until_filled() {
        let mut out = Output::new();
        out.tail().extend_from_slice(b"first|");
        let slot = out.reserve();
        out.tail().extend_from_slice(b"third");
        let mut w = Slow { got: Vec::new(), room: 100, calls: 0 };
        assert!(!out.awaits_slot(), "first| is still to be written");
        assert_eq!(drain(&mut out, &mut w), Stop::Pending);
        assert_eq!(w.got, b"first|");
        assert!(out.awaits_slot());
        assert!(out.fill(slot, |o| {
            o.tail().extend_from_slice(b"second:");
            o.push_shared(Box::new(b"body|".to_vec()));
        }));
        assert!(!out.fill(slot, |_| {}));
        assert_eq!(drain(&mut out, &mut w), Stop::Empty);
        assert_eq!(w.got, b"first|second:body|third");
    }

    #[test]
    fn a_last_response_drops_what_was_queued_after_its_slot() {
        let mut out = Output::new();
        out.tail().extend_from_slice(b"first|");
        let slot = out.reserve();
        out.tail().extend_from_slice(b"later|");
        out.push_stream(items(&["s"]), true);
        out.push_shared(Box::new(b"shared".to_vec()));
        out.tail().extend_from_slice(b"more");
        let mut dropped = Released::default();
        assert!(out.fill_last(slot, |o| o.tail().extend_from_slice(b"closing"), &mut dropped));
        assert_eq!(dropped.streams.len(), 1, "the open stream after the slot is handed back");
        assert_eq!(dropped.shared.len(), 1, "and the shared body, to be freed with the application locked");
        let mut w = Slow { got: Vec::new(), room: 100, calls: 0 };
        assert_eq!(drain(&mut out, &mut w), Stop::Empty);
        assert_eq!(w.got, b"first|closing");
        assert!(!out.fill_last(slot, |_| {}, &mut dropped));
    }

    #[test]
    fn open_streams_are_handed_back_when_the_connection_goes() {
        let mut out = Output::new();
        out.push_stream(items(&["a"]), true);
        out.tail().extend_from_slice(b"x");
        out.push_shared(Box::new(b"shared".to_vec()));
        let mut taken = Released::default();
        out.take_streams(&mut taken);
        assert_eq!((taken.streams.len(), taken.shared.len()), (1, 1));
        assert!(out.is_empty());
    }

    /// Counts its cancellations in a shared counter.
    struct Counted(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl Cancel for Counted {
        fn cancel(self: Box<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn the_work_behind_an_unfilled_slot_is_cancelled_only_when_the_slot_is_dropped() {
        let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let cancels = || n.load(std::sync::atomic::Ordering::SeqCst);
        let mut out = Output::new();
        let (a, b, c) = (out.reserve(), out.reserve(), out.reserve());
        for slot in [a, b, c] {
            out.on_cancel(slot, Box::new(Counted(n.clone())));
        }
        out.on_cancel(99, Box::new(Counted(n.clone())));
        // Filled: nothing to cancel any more.
        assert!(out.fill(a, |o| o.tail().extend_from_slice(b"a")));
        // A response that closes the connection drops the slots after it.
        let mut dropped = Released::default();
        assert!(out.fill_last(b, |o| o.tail().extend_from_slice(b"b"), &mut dropped));
        assert_eq!(dropped.cancels.len(), 1, "slot c's work");
        dropped.release();
        assert_eq!(cancels(), 1);
        // The connection goes with a slot unfilled.
        let mut out = Output::new();
        let d = out.reserve();
        out.on_cancel(d, Box::new(Counted(n.clone())));
        let mut taken = Released::default();
        out.take_streams(&mut taken);
        assert!(!taken.is_empty());
        taken.release();
        assert_eq!(cancels(), 2);
        // A handler call rolled back after deferring cancels at once.
        let mut out = Output::new();
        let mark = out.mark();
        let e = out.reserve();
        out.on_cancel(e, Box::new(Counted(n.clone())));
        out.rollback(mark);
        assert_eq!(cancels(), 3);
        let mut taken = Released::default();
        out.take_streams(&mut taken);
        assert!(taken.is_empty());
    }

    #[test]
    fn rollback_restores_the_queue_as_it_was() {
        let mut out = Output::new();
        out.tail().extend_from_slice(b"done|");
        let mut w = Slow { got: Vec::new(), room: 2, calls: 0 };
        out.write_to(&mut w).unwrap();
        let m = out.mark();
        out.tail().extend_from_slice(b"half a head");
        out.rollback(m);
        assert!(!out.changed_since(m));
        out.tail().extend_from_slice(b"head:");
        out.push_shared(Box::new(b"body".to_vec()));
        out.push_stream(items(&["s"]), true);
        out.tail().extend_from_slice(b"more");
        out.rollback(m);
        assert_eq!(out.mark(), m);
        out.tail().extend_from_slice(b"ok");
        assert_eq!(drain(&mut out, &mut w), Stop::Empty);
        assert_eq!(w.got, b"done|ok");
    }

    #[test]
    fn file_ranges_are_sent_between_their_neighbours() {
        use std::io::Write as _;
        let path = std::env::temp_dir().join(format!("pyrs-output-test-{}", std::process::id()));
        std::fs::File::create(&path).unwrap().write_all(b"0123456789").unwrap();
        let mut out = Output::new();
        out.tail().extend_from_slice(b"H|");
        out.push_file(File::open(&path).unwrap(), 2, 5);
        out.tail().extend_from_slice(b"|next");
        assert_eq!(out.unsent(), 12);
        assert_eq!(out.buffered(), 7);
        let mut w = Slow { got: Vec::new(), room: 2, calls: 0 };
        assert_eq!(drain(&mut out, &mut w), Stop::Empty);
        assert_eq!(w.got, b"H|23456|next");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn chunk_sizes_are_hex() {
        let mut v = Vec::new();
        push_chunk(&mut v, &[b'a'; 255]);
        assert!(v.starts_with(b"ff\r\naaa"));
        assert!(v.ends_with(b"a\r\n"));
    }
}
