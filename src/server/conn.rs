//! One client connection: its socket, input and output buffers, where it is
//! in the request/response cycle, and which deadline applies to it.
//!
//! Reading turns bytes into [`Job`]s in request order; the event loop runs
//! the jobs and appends responses to `out`, which is flushed in order, so
//! pipelined requests are answered in the order they arrived.

use crate::app::Route;
use crate::http::decode::BodyDecoder;
use crate::http::head::{self, Version};
use crate::http::Limits;
use crate::http::{HttpError, Request, RequestHead, Scheme};
use crate::router::{RouteMatch, Router};
use mio::net::TcpStream;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
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
/// Most bytes discarded while lingering.
const LINGER_MAX_BYTES: usize = 1024 * 1024;

/// What to do, in order, for one connection.
pub enum JobKind<'r, T> {
    /// Call the application.
    Call { route: &'r Route<T>, req: Request },
    /// Answer with a short text response from the core itself.
    Reply { status: u16, body: &'static str, allow: Option<String> },
    /// A protocol error: answer and close, reading nothing more.
    Fail(HttpError),
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

pub struct Conn<'r, T> {
    pub stream: TcpStream,
    pub addr: SocketAddr,
    pub serial: u64,
    /// Input buffer; bytes `consumed..filled` are received but not yet parsed.
    inbuf: Vec<u8>,
    filled: usize,
    consumed: usize,
    pub out: Vec<u8>,
    written: usize,
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
}

/// The result of reading from the socket.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Keep the connection.
    Open,
    /// Close it now (error, or EOF with nothing left to answer).
    Close,
}

impl<'r, T> Conn<'r, T> {
    pub fn new(stream: TcpStream, addr: SocketAddr, serial: u64) -> Self {
        Conn {
            stream,
            addr,
            serial,
            inbuf: Vec::new(),
            filled: 0,
            consumed: 0,
            out: Vec::new(),
            written: 0,
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
        }
    }

    pub fn has_pending_output(&self) -> bool {
        self.written < self.out.len()
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
        self.in_flight >= MAX_QUEUED || self.out.len() - self.written > limits.max_buffered_output
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
            }
        };
        let decoder = BodyDecoder::new(head.framing, limits.max_body_bytes);
        if head.expect_continue {
            if route.is_some() {
                self.push_job(token, &head, head.keep_alive, JobKind::Continue, jobs);
            } else if let Some((status, body, allow)) = reply {
                // The body will not be read: answer now and close.
                self.push_job(token, &head, false, JobKind::Reply { status, body, allow }, jobs);
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
            (Some((route, params)), _) => JobKind::Call {
                route,
                req: Request { head, body, remote_addr: self.addr, params, scheme: Scheme::Http },
            },
            (None, Some((status, body, allow))) => JobKind::Reply { status, body, allow },
            (None, None) => JobKind::Reply { status: 500, body: "Internal Server Error\n", allow: None },
        };
        self.in_flight += 1;
        jobs.push(Job { token, serial: self.serial, keep_alive, head_only, version, kind });
        if !keep_alive {
            self.state = ReadState::Done;
        }
    }

    /// Queues an error response and stops reading this connection.
    pub fn fail(&mut self, token: usize, e: HttpError, jobs: &mut Vec<Job<'r, T>>) {
        let head_only = matches!(&self.state, ReadState::Body { head, .. } if head.is_head());
        self.in_flight += 1;
        jobs.push(Job {
            token,
            serial: self.serial,
            keep_alive: false,
            head_only,
            version: Version::Http11,
            kind: JobKind::Fail(e),
        });
        self.state = ReadState::Done;
        self.consumed = self.filled;
        self.parse_stalled = false;
    }

    /// Writes pending output. Returns Err when the connection must close.
    pub fn flush(&mut self) -> io::Result<bool> {
        let mut progressed = false;
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n;
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
            if self.out.capacity() > 256 * 1024 {
                self.out.shrink_to(64 * 1024);
            }
        }
        Ok(progressed)
    }

    /// Whether a deadline applies now, and which.
    pub fn wanted_deadline(&self) -> Option<Deadline> {
        if self.lingering {
            Some(Deadline::Linger)
        } else if self.has_pending_output() {
            Some(Deadline::Write)
        } else if self.in_flight > 0 {
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
        if self.peer_closed || self.stream.shutdown(Shutdown::Write).is_err() {
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
        unacked_bytes(&self.stream) == Some(0)
    }
}

/// Bytes sent on `stream` but not yet acknowledged by the peer (SIOCOUTQ).
#[cfg(target_os = "linux")]
fn unacked_bytes(stream: &TcpStream) -> Option<usize> {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SIOCOUTQ has TIOCOUTQ's number. SAFETY: it writes one int through the valid pointer.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut n as *mut libc::c_int) };
    (rc == 0 && n >= 0).then_some(n as usize)
}

#[cfg(not(target_os = "linux"))]
fn unacked_bytes(_stream: &TcpStream) -> Option<usize> {
    None
}
