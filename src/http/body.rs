//! Response bodies that are not copied into the connection's output buffer:
//! bytes owned by someone else (a Python `bytes` object kept alive until it
//! is written) and streams produced item by item (a Python generator). The
//! application implements these traits; [`super::output::Output`] queues
//! them in request order and frames them.

/// Bytes that stay valid and unchanged for as long as the value lives.
pub trait SharedBytes: Send {
    fn bytes(&self) -> &[u8];
}

impl SharedBytes for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

impl SharedBytes for &'static [u8] {
    fn bytes(&self) -> &[u8] {
        self
    }
}

/// What one [`BodyStream::pull`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pulled {
    /// An item was appended to the buffer (possibly empty: nothing to send yet).
    Item,
    /// The stream is exhausted; nothing was appended.
    End,
    /// The stream failed (the implementation has logged why): the response
    /// must be cut so that the client can tell it is incomplete.
    Failed,
    /// No item yet (nothing appended): the stream is not pulled again until
    /// it wakes its event loop (an async generator awaiting its next item).
    Pending,
}

/// A response body produced piece by piece. The event loop pulls one item at
/// a time, only while the connection's unsent output is below its bound, and
/// only while the application is locked (for Python: with the GIL held).
pub trait BodyStream: Send {
    /// Appends the next item to `out`.
    fn pull(&mut self, out: &mut Vec<u8>) -> Pulled;

    /// Called when the stream will not be pulled to its end (the client went
    /// away, or the response has no body: HEAD, 204, 304). Runs with the
    /// application locked. A generator's `finally` blocks run here.
    fn close(&mut self) {}

    /// The route that produced the stream (the worker watchdog names it
    /// while an item is pulled; a failure before the first item is counted
    /// as its handler's exception).
    fn route(&self) -> Option<usize> {
        None
    }

    /// After [`Pulled::Failed`] before any item was produced: the status
    /// and `text/plain` body to answer instead of the response (None: 500).
    fn failure(&mut self) -> Option<(u16, String)> {
        None
    }

    /// It must be pulled by the event loop that created it (it wakes that
    /// loop when it returns [`Pulled::Pending`]): its connection then stays
    /// on that loop.
    fn pinned(&self) -> bool {
        false
    }
}

/// A stream of items known in advance (tests and native handlers).
pub struct IterStream<I>(pub I);

impl<I: Iterator<Item = Vec<u8>> + Send> BodyStream for IterStream<I> {
    fn pull(&mut self, out: &mut Vec<u8>) -> Pulled {
        match self.0.next() {
            Some(item) => {
                out.extend_from_slice(&item);
                Pulled::Item
            }
            None => Pulled::End,
        }
    }
}

/// Work still running for a response that will never be sent (its client
/// went away): an awaited coroutine to cancel. Run with the application
/// locked (for Python: `task.cancel()`, so the coroutine's `finally` runs).
pub trait Cancel: Send {
    fn cancel(self: Box<Self>);
}

/// What connections let go of that belongs to the application: streams
/// to close, work to cancel and shared bytes to drop, all with the
/// application locked (for Python: a generator's `finally` runs, and a
/// `bytes` object is freed at once instead of waiting for the interpreter's
/// next pass).
#[derive(Default)]
pub struct Released {
    pub streams: Vec<Box<dyn BodyStream>>,
    pub cancels: Vec<Box<dyn Cancel>>,
    pub shared: Vec<Box<dyn SharedBytes>>,
    /// The notes of responses whose held head was never decided (see
    /// [`crate::http::output::Output::note_held_head`]); the owner takes
    /// them before [`Released::release`], which drops them.
    pub notes: Vec<Note>,
}

/// What the owner of an output attaches to a response whose head is held
/// back, and gets back once the head is decided (opaque here: the server
/// keeps its access-log and metrics record in it).
pub type Note = Box<dyn std::any::Any + Send>;

impl Released {
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty() && self.cancels.is_empty() && self.shared.is_empty() && self.notes.is_empty()
    }

    /// Closes the streams, cancels the pending work and drops the rest
    /// (application locked).
    pub fn release(&mut self) {
        for mut stream in self.streams.drain(..) {
            stream.close();
        }
        for cancel in self.cancels.drain(..) {
            cancel.cancel();
        }
        self.shared.clear();
        self.notes.clear();
    }
}

/// A body queued after its head instead of being copied into the output buffer.
pub enum Body {
    Shared(Box<dyn SharedBytes>),
    Stream(Box<dyn BodyStream>),
    /// `len` bytes of an open file from `offset`, sent with sendfile(2).
    File {
        file: std::fs::File,
        offset: u64,
        len: u64,
    },
}

impl Body {
    /// The body's length when known in advance (None: a stream).
    pub fn known_len(&self) -> Option<u64> {
        match self {
            Body::Shared(b) => Some(b.bytes().len() as u64),
            Body::Stream(_) => None,
            Body::File { len, .. } => Some(*len),
        }
    }
}
