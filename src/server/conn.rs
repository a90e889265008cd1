//! One client connection: its socket, input and output buffers, where it is
//! in the request/response cycle, and which deadline applies to it.
//!
//! Reading turns bytes into [`Job`]s in request order; the event loop runs
//! the jobs and queues responses in `out` (an [`Output`]), which is written
//! in order, so pipelined requests are answered in the order they arrived.
//!
//! No sockets here: the connection is generic over its [`Transport`] (a
//! TCP stream in the server, scripted I/O in the unit tests below).

use super::listener::Stream;
use crate::app::Route;
use crate::http::decode::BodyDecoder;
use crate::http::head::{self, Version};
use crate::http::output::{Output, Sink, Stop};
use crate::http::Limits;
use crate::http::{HttpError, Peer, Request, RequestHead};
use crate::router::{RouteMatch, Router};
use std::io::{self, Read};
use std::net::Shutdown;
use std::time::{Duration, Instant};

/// Bytes read from the socket per `read` call at most.
const READ_CHUNK: usize = 16 * 1024;
/// Most requests queued (parsed, not yet answered) per connection: past it,
/// parsing and reading pause until the queue is answered.
pub const MAX_QUEUED: u32 = 64;
/// How long a closing connection keeps reading (and discarding) input after
/// its last response, so that unread input does not reset the connection
/// before the client has that response.
pub const LINGER: Duration = Duration::from_secs(2);
/// The answer to a request that arrives while the memory budget is spent.
pub const BUDGET_SPENT: &str = "Service Unavailable: the server's memory budget is spent, retry later\n";
/// Most bytes discarded while lingering.
const LINGER_MAX_BYTES: usize = 1024 * 1024;

/// What to do, in order, for one connection.
pub enum JobKind<'r, T> {
    /// Call the application.
    Call { route: &'r Route<T>, req: Request },
    /// Answer with a short text response from the core itself (the head
    /// is kept for the access log and the health probe).
    Reply { status: u16, body: &'static str, allow: Option<String>, head: Option<RequestHead> },
    /// A protocol error: answer and close, reading nothing more. The head,
    /// when one was parsed, is kept for the access log.
    Fail(HttpError, Option<RequestHead>),
    /// Send `100 Continue`.
    Continue,
}

pub struct Job<'r, T> {
    pub token: usize,
    pub serial: u64,
    pub keep_alive: bool,
    pub head_only: bool,
    pub version: Version,
    pub kind: JobKind<'r, T>,
    /// When the request was complete (the start of its duration).
    pub received: Instant,
}

/// A matched route and its path parameters.
type Routed<'r, T> = (&'r Route<T>, Vec<(String, String)>);

/// Where the connection is in reading the current request.
// Body is large, but lives in place in the connection: boxing it would cost an
// allocation per request.
#[allow(clippy::large_enum_variant)]
enum ReadState<'r, T> {
    Head,
    Body {
        head: RequestHead,
        decoder: BodyDecoder,
        body: Vec<u8>,
        route: Option<Routed<'r, T>>,
        reply: Option<(u16, &'static str, Option<String>)>,
    },
    /// After a protocol error or `Connection: close`: input is ignored.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// Waiting for the first byte of a request; expiry closes silently.
    Idle,
    /// A request head has started; expiry answers 408.
    Header,
    /// The body is being received; expiry answers 408.
    Body,
    /// Output is pending; expiry closes.
    Write,
    /// Lingering after the last response; expiry closes.
    Linger,
}

/// The byte stream under a connection.
pub trait Transport: Read + Sink {
    /// Shuts down the sending side (the peer sees EOF).
    fn shutdown_write(&self) -> io::Result<()>;
    /// Bytes sent but not yet acknowledged by the peer; None when unknown.
    fn unacked_bytes(&self) -> Option<usize> {
        None
    }
}

impl Sink for Stream {
    /// sendfile(2): from the page cache to the socket, no copy through user space.
    fn send_file(&mut self, file: &std::fs::File, offset: u64, len: usize) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        let mut off = libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: both descriptors are open for the duration of the call; off is a valid pointer.
        let n = unsafe { libc::sendfile(self.as_raw_fd(), file.as_raw_fd(), &mut off, len) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 && len > 0 {
            // The file shrank under us: the promised length cannot be sent.
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(n as usize)
    }
}

impl Transport for Stream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
    fn unacked_bytes(&self) -> Option<usize> {
        unacked_bytes(self)
    }
}

pub struct Conn<'r, T, S = Stream> {
    pub stream: S,
    pub addr: Peer,
    pub serial: u64,
    /// Input buffer; bytes `consumed..filled` are received but not yet parsed.
    inbuf: Vec<u8>,
    filled: usize,
    consumed: usize,
    pub out: Output,
    state: ReadState<'r, T>,
    /// Jobs queued but not yet answered.
    pub in_flight: u32,
    /// A response with `Connection: close` was queued: read nothing more,
    /// answer nothing more, close once it is flushed.
    pub close_after: bool,
    /// The peer shut down its sending side.
    pub peer_closed: bool,
    /// Reading stopped because too much output is waiting.
    pub read_paused: bool,
    pub served_any: bool,
    pub deadline: Option<(Deadline, Instant)>,
    /// Buffered input waits for the request queue or output to shrink.
    parse_stalled: bool,
    /// Bytes of the current (incomplete) head already searched for LF.
    head_scanned: usize,
    /// The current head's request line is complete.
    head_line_done: bool,
    /// Bytes of empty lines skipped before the current request line.
    blank_prefix: usize,
    /// Our side is shut down; input is read and discarded until EOF.
    pub lingering: bool,
    discarded: usize,
    /// The event loop has queued a pull of this connection's stream.
    pub pull_queued: bool,
    /// Bytes read from the socket so far (for the metrics).
    pub bytes_read: u64,
    /// Bytes of the memory budget this connection has charged (the event
    /// loop keeps it in step with [`Conn::memory`]).
    pub charged: usize,
    /// Bytes reserved for the body being received (its declared length,
    /// at most max_body_bytes).
    body_reserved: usize,
    /// Reading paused because the memory budget is spent.
    pub budget_paused: bool,
    /// One of its handlers kept its thread busy long enough to be rescued
    /// from (see `server::rescue`): such connections are spread one per thread.
    pub slow: bool,
}

/// The result of reading from the socket.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Keep the connection.
    Open,
    /// Close it now (error, or EOF with nothing left to answer).
    Close,
}

impl<'r, T, S: Transport> Conn<'r, T, S> {
    pub fn new(stream: S, addr: Peer, serial: u64) -> Self {
        Conn {
            stream,
            addr,
            serial,
            inbuf: Vec::new(),
            filled: 0,
            consumed: 0,
            out: Output::new(),
            state: ReadState::Head,
            in_flight: 0,
            close_after: false,
            peer_closed: false,
            read_paused: false,
            served_any: false,
            deadline: None,
            parse_stalled: false,
            head_scanned: 0,
            head_line_done: false,
            blank_prefix: 0,
            lingering: false,
            discarded: 0,
            pull_queued: false,
            bytes_read: 0,
            charged: 0,
            body_reserved: 0,
            budget_paused: false,
            slow: false,
        }
    }

    /// Bytes this connection holds that the memory budget counts: the body
    /// being received (at least its declared length) and unsent output.
    pub fn memory(&self) -> usize {
        let body = match &self.state {
            ReadState::Body { body, .. } => body.capacity().max(self.body_reserved),
            _ => 0,
        };
        body + self.out.buffered()
    }

    fn receiving_unknown_length(&self) -> bool {
        matches!(&self.state, ReadState::Body { head, .. } if head.framing == crate::http::Framing::Chunked)
    }

    /// Output is queued, or a response body is still being produced.
    pub fn has_pending_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// No request in progress, nothing queued, nothing to send.
    pub fn is_idle(&self) -> bool {
        self.in_flight == 0
            && !self.has_pending_output()
            && matches!(self.state, ReadState::Head)
            && self.consumed == self.filled
            && self.blank_prefix == 0
    }

    pub fn receiving_body(&self) -> bool {
        matches!(self.state, ReadState::Body { .. })
    }

    /// It can move to another event loop, with its queued requests and
    /// output: it is not lingering and waits on no reserved slot and no
    /// async stream (they deliver to the loop that created them).
    pub fn movable(&self) -> bool {
        !self.lingering && !self.out.has_slot() && !self.out.has_pinned_stream()
    }

    /// True when the connection has answered everything it will and can go.
    pub fn finished(&self) -> bool {
        self.in_flight == 0
            && !self.has_pending_output()
            && !self.parse_stalled
            // Once the peer has closed, a request still incomplete never will be.
            && (self.close_after || self.peer_closed)
    }

    /// Too much is queued or unsent to take on more requests now.
    fn over_bounds(&self, limits: &Limits) -> bool {
        self.in_flight >= MAX_QUEUED || self.out.unsent() > limits.max_buffered_output
    }

    /// Reads what the socket has and queues the requests it completes.
    pub fn read_ready(
        &mut self,
        token: usize,
        router: &'r Router<Route<T>>,
        limits: &Limits,
        jobs: &mut Vec<Job<'r, T>>,
        drain: bool,
    ) -> ReadOutcome {
        if self.lingering {
            return self.linger_read();
        }
        loop {
            if self.over_bounds(limits) {
                // Resumed (read_one) once the queue is answered and the output sent.
                self.read_paused = true;
                return ReadOutcome::Open;
            }
            if limits.memory.over() && self.receiving_unknown_length() {
                // A body of unknown length would grow past the budget:
                // resumed by the event loop once memory is freed.
                self.read_paused = true;
                self.budget_paused = true;
                return ReadOutcome::Open;
            }
            self.budget_paused = false;
            self.read_paused = false;
            if self.parse_stalled {
                self.parse_buffered(token, router, limits, jobs);
                continue;
            }
            if self.close_after || self.peer_closed {
                return ReadOutcome::Open;
            }
            if self.consumed == self.filled {
                self.consumed = 0;
                self.filled = 0;
                if self.inbuf.len() > 4 * READ_CHUNK {
                    // A large head or pipelined burst grew it: give the memory back.
                    self.inbuf.truncate(READ_CHUNK);
                    self.inbuf.shrink_to_fit();
                }
            } else if self.consumed > 0 && self.inbuf.len() - self.filled < READ_CHUNK / 2 {
                self.inbuf.copy_within(self.consumed..self.filled, 0);
                self.filled -= self.consumed;
                self.consumed = 0;
            }
            if self.inbuf.len() - self.filled < READ_CHUNK / 2 {
                // Grows only while a head or pipelined batch is larger than the buffer;
                // head::parse bounds how far.
                self.inbuf.resize(self.filled + READ_CHUNK, 0);
            }
            let offered = self.inbuf.len() - self.filled;
            let n = match self.stream.read(&mut self.inbuf[self.filled..]) {
                Ok(n) => n,
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => return ReadOutcome::Open,
                    io::ErrorKind::Interrupted => continue,
                    _ => return ReadOutcome::Close,
                },
            };
            if n == 0 {
                self.peer_closed = true;
                // A request cut short can never complete; one fully queued is still answered.
                return if self.in_flight == 0 && !self.has_pending_output() {
                    ReadOutcome::Close
                } else {
                    ReadOutcome::Open
                };
            }
            self.filled += n;
            self.bytes_read += n as u64;
            self.parse_buffered(token, router, limits, jobs);
            if !drain && n < offered && !self.parse_stalled {
                // The kernel had no more: a later arrival raises a new edge.
                return ReadOutcome::Open;
            }
        }
    }

    /// Parses as many requests as the buffered input holds, up to the
    /// queue and output bounds (then `parse_stalled` is set).
    pub fn parse_buffered(
        &mut self,
        token: usize,
        router: &'r Router<Route<T>>,
        limits: &Limits,
        jobs: &mut Vec<Job<'r, T>>,
    ) {
        self.parse_stalled = false;
        loop {
            let input = &self.inbuf[self.consumed..self.filled];
            match &mut self.state {
                ReadState::Done => {
                    self.consumed = self.filled;
                    return;
                }
                ReadState::Head => {
                    if input.is_empty() {
                        return;
                    }
                    if self.over_bounds(limits) {
                        self.parse_stalled = true;
                        return;
                    }
                    if self.head_scanned == 0 {
                        // Empty lines before a request line are skipped (RFC 9112
                        // section 2.2), up to max_request_line bytes of them.
                        let blank = head::blank_prefix(input);
                        if blank > 0 {
                            self.consumed += blank;
                            self.blank_prefix += blank;
                            if self.blank_prefix > limits.max_request_line {
                                self.fail(
                                    token,
                                    HttpError::BadRequest("too many empty lines before the request"),
                                    jobs,
                                );
                                return;
                            }
                            continue;
                        }
                        if input == b"\r" {
                            return;
                        }
                    }
                    // Parse again only when a line has ended or a limit is passed:
                    // a head trickled in byte by byte costs linear time, not quadratic.
                    let new_line = input[self.head_scanned.min(input.len())..].contains(&b'\n');
                    self.head_scanned = input.len();
                    let must_parse = new_line
                        || input.len() > limits.max_header_bytes
                        || (!self.head_line_done && input.len() > limits.max_request_line);
                    self.head_line_done |= new_line;
                    if !must_parse {
                        return;
                    }
                    match head::parse(input, limits) {
                        Ok(None) => return,
                        Err(e) => {
                            self.fail(token, e, jobs);
                            return;
                        }
                        Ok(Some((head, len))) => {
                            self.consumed += len;
                            self.head_scanned = 0;
                            self.head_line_done = false;
                            self.blank_prefix = 0;
                            self.start_body(token, head, router, limits, jobs);
                        }
                    }
                }
                ReadState::Body { decoder, body, .. } => {
                    if input.is_empty() && !decoder.is_done() {
                        return;
                    }
                    match decoder.decode(input, body) {
                        Err(e) => {
                            self.fail(token, e, jobs);
                            return;
                        }
                        Ok(p) => {
                            self.consumed += p.consumed;
                            if !p.done {
                                return;
                            }
                            self.finish_request(token, jobs);
                        }
                    }
                }
            }
        }
    }

    fn push_job(
        &mut self,
        token: usize,
        head: &RequestHead,
        keep_alive: bool,
        kind: JobKind<'r, T>,
        jobs: &mut Vec<Job<'r, T>>,
    ) {
        self.in_flight += 1;
        jobs.push(Job {
            token,
            serial: self.serial,
            keep_alive,
            head_only: head.is_head(),
            version: head.version,
            kind,
            received: Instant::now(),
        });
    }

    /// Routes a parsed head and gets ready to receive its body.
    fn start_body(
        &mut self,
        token: usize,
        head: RequestHead,
        router: &'r Router<Route<T>>,
        limits: &Limits,
        jobs: &mut Vec<Job<'r, T>>,
    ) {
        let (route, reply) = if head.target() == "*" {
            (None, Some((200, "", Some(crate::http::KNOWN_METHODS.join(", ")))))
        } else {
            match router.route(head.method(), head.path()) {
                RouteMatch::Found { target, params } => {
                    (Some((target, params.into_iter().map(|(k, v)| (k.to_string(), v)).collect())), None)
                }
                RouteMatch::MethodNotAllowed { allow } => (None, Some((405, "Method Not Allowed\n", Some(allow)))),
                RouteMatch::NotFound => (None, Some((404, "Not Found\n", None))),
                RouteMatch::NotImplemented => (None, Some((501, "Not Implemented\n", None))),
            }
        };
        let declared = match head.framing {
            crate::http::Framing::Length(n) => usize::try_from(n).unwrap_or(usize::MAX).min(limits.max_body_bytes),
            _ => 0,
        };
        if limits.memory.over() || !limits.memory.fits(declared as u64) {
            // Past the process's memory budget: refused without reading the
            // body or calling the application, and the connection closes.
            let kind = JobKind::Reply { status: 503, body: BUDGET_SPENT, allow: None, head: Some(head.clone()) };
            self.push_job(token, &head, false, kind, jobs);
            self.state = ReadState::Done;
            return;
        }
        self.body_reserved = declared;
        let decoder = BodyDecoder::new(head.framing, limits.max_body_bytes);
        if head.expect_continue {
            if route.is_some() {
                self.push_job(token, &head, head.keep_alive, JobKind::Continue, jobs);
            } else if let Some((status, body, allow)) = reply {
                // The body will not be read: answer now and close.
                let kind = JobKind::Reply { status, body, allow, head: Some(head.clone()) };
                self.push_job(token, &head, false, kind, jobs);
                self.state = ReadState::Done;
                return;
            }
        }
        self.state = ReadState::Body { head, decoder, body: Vec::new(), route, reply };
    }

    fn finish_request(&mut self, token: usize, jobs: &mut Vec<Job<'r, T>>) {
        let state = std::mem::replace(&mut self.state, ReadState::Head);
        let ReadState::Body { head, body, route, reply, .. } = state else {
            return;
        };
        let keep_alive = head.keep_alive;
        let (head_only, version) = (head.is_head(), head.version);
        let kind = match (route, reply) {
            (Some((route, params)), _) => {
                JobKind::Call { route, req: Request { head, body, peer: self.addr, params, id: Default::default() } }
            }
            (None, Some((status, body, allow))) => JobKind::Reply { status, body, allow, head: Some(head) },
            (None, None) => {
                JobKind::Reply { status: 500, body: "Internal Server Error\n", allow: None, head: Some(head) }
            }
        };
        self.in_flight += 1;
        jobs.push(Job { token, serial: self.serial, keep_alive, head_only, version, kind, received: Instant::now() });
        if !keep_alive {
            self.state = ReadState::Done;
        }
    }

    /// Queues an error response and stops reading this connection.
    pub fn fail(&mut self, token: usize, e: HttpError, jobs: &mut Vec<Job<'r, T>>) {
        let head = match std::mem::replace(&mut self.state, ReadState::Done) {
            ReadState::Body { head, .. } => Some(head),
            _ => None,
        };
        let head_only = head.as_ref().is_some_and(|h| h.is_head());
        self.in_flight += 1;
        jobs.push(Job {
            token,
            serial: self.serial,
            keep_alive: false,
            head_only,
            version: Version::Http11,
            kind: JobKind::Fail(e, head),
            received: Instant::now(),
        });
        self.consumed = self.filled;
        self.parse_stalled = false;
    }

    /// Writes queued output: why writing stopped, and whether any byte went
    /// out. Err when the connection must close.
    pub fn flush(&mut self) -> io::Result<(Stop, bool)> {
        self.out.write_to(&mut self.stream)
    }

    /// A response was cut (a stream failed): nothing more is read or
    /// answered, and the connection closes once what precedes the cut is sent.
    pub fn cut(&mut self) {
        self.close_after = true;
        self.stop_reading();
    }

    /// Whether a deadline applies now, and which.
    pub fn wanted_deadline(&self) -> Option<Deadline> {
        if self.lingering {
            Some(Deadline::Linger)
        } else if self.out.awaits_slot() {
            // A response still being produced (a reserved slot): no write is
            // pending, and the application owns the time it takes.
            None
        } else if self.has_pending_output() {
            Some(Deadline::Write)
        } else if self.in_flight > 0 || self.has_pending_output() {
            None
        } else {
            match self.state {
                ReadState::Body { .. } => Some(Deadline::Body),
                ReadState::Head if self.consumed < self.filled || self.blank_prefix > 0 => Some(Deadline::Header),
                ReadState::Head | ReadState::Done => Some(Deadline::Idle),
            }
        }
    }

    /// Whether bytes of a request head have been received but not completed.
    pub fn has_partial_head(&self) -> bool {
        matches!(self.state, ReadState::Head) && (self.consumed < self.filled || self.blank_prefix > 0)
    }

    /// Replace the input state after a timeout: nothing more is read.
    pub fn stop_reading(&mut self) {
        self.state = ReadState::Done;
        self.consumed = self.filled;
        self.parse_stalled = false;
    }

    /// Starts a graceful close after the last response: shuts down our
    /// sending side (the client sees EOF after the response) and reads and
    /// discards input until the client closes too, everything sent is
    /// acknowledged, or [`LINGER`] passes. Closing with unread input at once
    /// would reset the connection and could destroy the response in flight.
    /// Returns `Close` when the connection can be closed right away.
    pub fn start_linger(&mut self) -> ReadOutcome {
        if self.peer_closed || self.stream.shutdown_write().is_err() {
            return ReadOutcome::Close;
        }
        self.lingering = true;
        self.state = ReadState::Done;
        self.deadline = Some((Deadline::Linger, Instant::now() + LINGER));
        self.linger_read()
    }

    /// Discards what the socket has; `Close` when lingering is over.
    pub fn linger_read(&mut self) -> ReadOutcome {
        if self.inbuf.len() < READ_CHUNK {
            self.inbuf.resize(READ_CHUNK, 0);
        }
        loop {
            match self.stream.read(&mut self.inbuf) {
                Ok(0) => return ReadOutcome::Close,
                Ok(n) => {
                    self.discarded += n;
                    if self.discarded > LINGER_MAX_BYTES {
                        return ReadOutcome::Close;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return ReadOutcome::Close,
            }
        }
        if self.all_sent_acknowledged() {
            ReadOutcome::Close
        } else {
            ReadOutcome::Open
        }
    }

    /// True when the peer has acknowledged every byte we sent (and our FIN):
    /// a reset can no longer destroy a response. False when unknown.
    pub fn all_sent_acknowledged(&self) -> bool {
        self.stream.unacked_bytes() == Some(0)
    }
}

/// Bytes sent on `stream` but not yet acknowledged by the peer (SIOCOUTQ).
#[cfg(target_os = "linux")]
fn unacked_bytes(stream: &Stream) -> Option<usize> {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SIOCOUTQ has TIOCOUTQ's number. SAFETY: it writes one int through the valid pointer.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut n as *mut libc::c_int) };
    (rc == 0 && n >= 0).then_some(n as usize)
}

#[cfg(not(target_os = "linux"))]
fn unacked_bytes(_stream: &Stream) -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    //! The connection state machine driven by scripted I/O: what arrives
    //! when, how much the peer accepts, and when it closes.
    use super::*;
    use std::collections::VecDeque;
    use std::io::Write;

    enum Step {
        Data(Vec<u8>),
        Block,
        Eof,
    }

    /// Reads follow the script (then WouldBlock); writes take up to `room`
    /// bytes in total (then WouldBlock).
    struct Scripted {
        input: VecDeque<Step>,
        written: Vec<u8>,
        room: usize,
        /// The peer is gone: writes fail with EPIPE.
        broken: bool,
    }

    impl Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.input.pop_front() {
                None | Some(Step::Block) => Err(io::ErrorKind::WouldBlock.into()),
                Some(Step::Eof) => {
                    self.input.push_front(Step::Eof);
                    Ok(0)
                }
                Some(Step::Data(mut d)) => {
                    let n = d.len().min(buf.len());
                    buf[..n].copy_from_slice(&d[..n]);
                    if n < d.len() {
                        self.input.push_front(Step::Data(d.split_off(n)));
                    }
                    Ok(n)
                }
            }
        }
    }

    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.broken {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let n = buf.len().min(self.room);
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.room -= n;
            self.written.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink for Scripted {}

    impl Transport for Scripted {
        fn shutdown_write(&self) -> io::Result<()> {
            Ok(())
        }
    }

    fn router() -> Router<Route<()>> {
        let mut r = Router::new();
        for (id, p) in ["/a", "/b"].iter().enumerate() {
            r.add(
                p,
                Some(vec!["GET".into(), "POST".into()]),
                Route { id, pattern: p.to_string(), target: (), batch: None },
            )
            .unwrap();
        }
        r
    }

    fn conn(steps: Vec<Step>, room: usize) -> Conn<'static, (), Scripted> {
        let s = Scripted { input: steps.into(), written: Vec::new(), room, broken: false };
        Conn::new(s, Peer::Tcp("127.0.0.1:9".parse().unwrap()), 1)
    }

    fn data(s: &str) -> Step {
        Step::Data(s.as_bytes().to_vec())
    }

    /// What a job would be answered with, in a form tests can compare.
    fn describe(job: &Job<'_, ()>) -> String {
        match &job.kind {
            JobKind::Call { route, req } => {
                format!("call {} {} body={:?}", route.pattern, req.head.method(), String::from_utf8_lossy(&req.body))
            }
            JobKind::Reply { status, .. } => format!("reply {status}"),
            JobKind::Fail(e, _) => format!("fail {}", e.status()),
            JobKind::Continue => "continue".into(),
        }
    }

    /// Answers each job the way the event loop does, with its description as the body.
    fn answer(c: &mut Conn<'static, (), Scripted>, jobs: &mut Vec<Job<'static, ()>>) {
        for job in jobs.drain(..) {
            c.in_flight -= 1;
            let body = describe(&job);
            c.out.tail().extend_from_slice(format!("[{body}]").as_bytes());
            if !job.keep_alive {
                c.close_after = true;
            }
        }
    }

    fn leak_router() -> &'static Router<Route<()>> {
        Box::leak(Box::new(router()))
    }

    #[test]
    fn pipelined_requests_become_jobs_in_order_and_answers_go_out_in_order() {
        let r = leak_router();
        let l = Limits::default();
        let mut c = conn(
            vec![
                data("GET /a HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nx"),
                data("yzGET /nope HTTP/1.1\r\nHost: h\r\n\r\nDELETE /a HTTP/1.1\r\nHost: h\r\n\r\n"),
            ],
            1 << 20,
        );
        let mut jobs = Vec::new();
        assert_eq!(c.read_ready(0, r, &l, &mut jobs, true), ReadOutcome::Open);
        let got: Vec<String> = jobs.iter().map(describe).collect();
        assert_eq!(got, ["call /a GET body=\"\"", "call /b POST body=\"xyz\"", "reply 404", "reply 501"]);
        assert_eq!(c.in_flight, 4);
        assert_eq!(c.wanted_deadline(), None, "requests in flight: no deadline");
        answer(&mut c, &mut jobs);
        assert_eq!(c.wanted_deadline(), Some(Deadline::Write));
        assert_eq!(c.flush().unwrap(), (Stop::Empty, true));
        assert!(String::from_utf8_lossy(&c.stream.written).starts_with("[call /a GET"));
        assert!(c.is_idle());
        assert_eq!(c.wanted_deadline(), Some(Deadline::Idle));
    }

    #[test]
    fn a_head_and_a_body_in_pieces_move_the_deadline_from_header_to_body() {
        let r = leak_router();
        let l = Limits::default();
        let mut c = conn(vec![data("POST /a HTTP/1.1\r\nHo"), Step::Block], 1 << 20);
        let mut jobs = Vec::new();
        c.read_ready(0, r, &l, &mut jobs, true);
        assert!(jobs.is_empty() && c.has_partial_head());
        assert_eq!(c.wanted_deadline(), Some(Deadline::Header));
        c.stream.input.extend([data("st: h\r\nContent-Length: 4\r\n\r\nab"), Step::Block]);
        c.read_ready(0, r, &l, &mut jobs, true);
        assert!(jobs.is_empty() && c.receiving_body());
        assert_eq!(c.wanted_deadline(), Some(Deadline::Body));
        c.stream.input.push_back(data("cd"));
        c.read_ready(0, r, &l, &mut jobs, true);
        assert_eq!(jobs.iter().map(describe).collect::<Vec<_>>(), ["call /a POST body=\"abcd\""]);
    }

    #[test]
    fn connection_close_stops_reading_and_the_connection_finishes_once_answered() {
        let r = leak_router();
        let l = Limits::default();
        let mut c = conn(
            vec![data("GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n")],
            1 << 20,
        );
        let mut jobs = Vec::new();
        c.read_ready(0, r, &l, &mut jobs, true);
        assert_eq!(jobs.len(), 1, "nothing is parsed after Connection: close");
        answer(&mut c, &mut jobs);
        assert!(!c.finished(), "not before the answer is written");
        c.flush().unwrap();
        assert!(c.finished());
        assert_eq!(c.start_linger(), ReadOutcome::Open);
        assert_eq!(c.wanted_deadline(), Some(Deadline::Linger));
    }

    #[test]
    fn a_slow_reader_pauses_parsing_until_its_output_drains() {
        let r = leak_router();
        let l = Limits { max_buffered_output: 10, ..Limits::default() };
        let mut c = conn(vec![data(&"GET /a HTTP/1.1\r\nHost: h\r\n\r\n".repeat(3))], 0);
        let mut jobs = Vec::new();
        c.read_ready(0, r, &l, &mut jobs, true);
        assert_eq!(jobs.len(), 3);
        answer(&mut c, &mut jobs);
        c.stream.input.push_back(data("GET /b HTTP/1.1\r\nHost: h\r\n\r\n"));
        assert_eq!(c.flush().unwrap(), (Stop::WouldBlock, false));
        c.read_ready(0, r, &l, &mut jobs, true);
        assert!(jobs.is_empty() && c.read_paused, "output above the bound: nothing more is read");
        c.stream.room = usize::MAX;
        assert_eq!(c.flush().unwrap(), (Stop::Empty, true));
        c.read_ready(0, r, &l, &mut jobs, true);
        assert_eq!(jobs.iter().map(describe).collect::<Vec<_>>(), ["call /b GET body=\"\""]);
    }

    #[test]
    fn eof_closes_an_idle_connection_but_answers_what_is_queued() {
        let r = leak_router();
        let l = Limits::default();
        let mut jobs = Vec::new();
        let mut idle = conn(vec![Step::Eof], 1 << 20);
        assert_eq!(idle.read_ready(0, r, &l, &mut jobs, true), ReadOutcome::Close);
        let mut c = conn(vec![data("GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /a HT"), Step::Eof], 1 << 20);
        assert_eq!(c.read_ready(0, r, &l, &mut jobs, true), ReadOutcome::Open);
        assert_eq!(jobs.len(), 1, "the cut-short second request is never answered");
        answer(&mut c, &mut jobs);
        c.flush().unwrap();
        assert!(c.finished() && c.peer_closed);
    }

    #[test]
    fn a_fin_keeps_the_connection_until_every_received_request_is_answered() {
        let r = leak_router();
        let l = Limits::default();
        let mut jobs = Vec::new();
        let two = "GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n";
        let mut c = conn(vec![data(two), Step::Eof], 1 << 20);
        assert_eq!(c.read_ready(0, r, &l, &mut jobs, true), ReadOutcome::Open);
        assert_eq!(jobs.len(), 2);
        assert!(c.peer_closed);
        // The first is answered at once, the second later (a coroutine or a
        // batch fills its slot).
        jobs.clear();
        c.in_flight = 0;
        c.out.tail().extend_from_slice(b"[a]");
        let slot = c.out.reserve();
        assert_eq!(c.flush().unwrap(), (Stop::Pending, true));
        assert!(!c.finished(), "the FIN does not drop the pending answer");
        assert_eq!(c.wanted_deadline(), None, "nor does a deadline run while it is produced");
        // Readiness after the FIN (a writable edge reports it again) changes nothing.
        assert_eq!(c.read_ready(0, r, &l, &mut jobs, true), ReadOutcome::Open);
        assert!(jobs.is_empty() && !c.finished());
        assert!(c.out.fill(slot, |o| o.tail().extend_from_slice(b"[b]")));
        assert_eq!(c.flush().unwrap(), (Stop::Empty, true));
        assert_eq!(c.stream.written, b"[a][b]");
        assert!(c.finished(), "everything answered: the connection can go");
        assert_eq!(c.start_linger(), ReadOutcome::Close, "the client already closed: no lingering");

        // A write that fails (the client reset) ends it, pending answers or not.
        let mut d = conn(vec![data(two), Step::Eof], 1 << 20);
        d.read_ready(0, r, &l, &mut jobs, true);
        jobs.clear();
        d.in_flight = 0;
        d.out.tail().extend_from_slice(b"[a]");
        let _slot = d.out.reserve();
        d.stream.broken = true;
        assert_eq!(d.flush().map_err(|e| e.kind()), Err(io::ErrorKind::BrokenPipe));
    }

    #[test]
    fn a_protocol_error_answers_and_reads_nothing_more() {
        let r = leak_router();
        let l = Limits::default();
        let mut c =
            conn(vec![data("GET /a HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\n\r\nGET /a HTTP/1.1\r\n\r\n")], 1 << 20);
        let mut jobs = Vec::new();
        c.read_ready(0, r, &l, &mut jobs, true);
        assert_eq!(jobs.iter().map(describe).collect::<Vec<_>>(), ["fail 400"]);
        assert!(!jobs[0].keep_alive);
    }

    #[test]
    fn expect_continue_is_answered_before_the_body_arrives() {
        let r = leak_router();
        let l = Limits::default();
        let mut c = conn(
            vec![data("POST /a HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"), Step::Block],
            1 << 20,
        );
        let mut jobs = Vec::new();
        c.read_ready(0, r, &l, &mut jobs, true);
        assert_eq!(jobs.iter().map(describe).collect::<Vec<_>>(), ["continue"]);
        c.stream.input.push_back(data("hi"));
        c.read_ready(0, r, &l, &mut jobs, true);
        assert_eq!(jobs.iter().map(describe).collect::<Vec<_>>(), ["continue", "call /a POST body=\"hi\""]);
    }

    #[test]
    fn a_spent_memory_budget_refuses_new_requests_and_bodies_that_do_not_fit() {
        let r = leak_router();
        let budget = std::sync::Arc::new(crate::http::budget::MemoryBudget::new(1000));
        let l = Limits { memory: budget.clone(), ..Limits::default() };
        let mut jobs = Vec::new();
        let mut c = conn(vec![data("POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 600\r\n\r\nxx")], 1 << 20);
        c.read_ready(0, r, &l, &mut jobs, true);
        assert!(jobs.is_empty() && c.receiving_body());
        assert_eq!(c.memory(), 600, "the declared length is reserved");
        budget.recharge(0, c.memory());
        let mut d = conn(vec![data("POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 500\r\n\r\n")], 1 << 20);
        d.read_ready(0, r, &l, &mut jobs, true);
        assert_eq!(jobs.iter().map(describe).collect::<Vec<_>>(), ["reply 503"]);
        assert!(!jobs[0].keep_alive);
        jobs.clear();
        budget.recharge(0, 400);
        let mut e = conn(vec![data("GET /a HTTP/1.1\r\nHost: h\r\n\r\n")], 1 << 20);
        e.read_ready(0, r, &l, &mut jobs, true);
        assert_eq!(jobs.iter().map(describe).collect::<Vec<_>>(), ["reply 503"], "over budget: even a GET");
    }

    #[test]
    fn a_reserved_slot_holds_the_connection_open_without_a_write_deadline() {
        let r = leak_router();
        let l = Limits::default();
        let mut c = conn(vec![data("GET /a HTTP/1.1\r\nHost: h\r\n\r\n")], 1 << 20);
        let mut jobs = Vec::new();
        c.read_ready(0, r, &l, &mut jobs, true);
        c.in_flight -= 1;
        let slot = c.out.reserve();
        c.flush().unwrap();
        assert_eq!(c.wanted_deadline(), None, "the application owns the time a deferred response takes");
        assert!(!c.is_idle() && !c.finished());
        assert!(c.out.fill(slot, |o| o.tail().extend_from_slice(b"late answer")));
        assert_eq!(c.wanted_deadline(), Some(Deadline::Write));
        assert_eq!(c.flush().unwrap(), (Stop::Empty, true));
        assert_eq!(c.stream.written, b"late answer");
        assert_eq!(c.wanted_deadline(), Some(Deadline::Idle));
    }

    #[test]
    fn a_cut_stream_stops_reading_and_finishes_the_connection() {
        let r = leak_router();
        let l = Limits::default();
        let mut c = conn(vec![data("GET /a HTTP/1.1\r\nHost: h\r\n\r\n"), Step::Block], 1 << 20);
        let mut jobs = Vec::new();
        c.read_ready(0, r, &l, &mut jobs, true);
        jobs.clear();
        c.in_flight = 0;
        c.out.tail().extend_from_slice(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        struct Boom;
        impl crate::http::body::BodyStream for Boom {
            fn pull(&mut self, _: &mut Vec<u8>) -> crate::http::body::Pulled {
                crate::http::body::Pulled::Failed
            }
        }
        c.out.push_stream(Box::new(Boom), true);
        assert_eq!(c.flush().unwrap(), (Stop::NeedsPull, true));
        assert!(c.out.wants_pull(l.max_buffered_output));
        assert_eq!(c.out.pull(), crate::http::output::PullResult::Failed);
        c.cut();
        assert_eq!(c.flush().unwrap().0, Stop::Cut);
        c.stream.input.push_back(data("GET /b HTTP/1.1\r\nHost: h\r\n\r\n"));
        c.read_ready(0, r, &l, &mut jobs, true);
        assert!(jobs.is_empty() && c.close_after);
    }
}
