//! One client connection: its socket, input and output buffers, where it is
//! in the request/response cycle, and which deadline applies to it.
//!
//! Reading turns bytes into [`Job`]s in request order; the event loop runs
//! the jobs and appends responses to `out`, which is flushed in order, so
//! pipelined requests are answered in the order they arrived.

use crate::app::Route;
use crate::config::Limits;
use crate::http::decode::BodyDecoder;
use crate::http::head::{self, Version};
use crate::http::{HttpError, Request, RequestHead};
use crate::router::{RouteMatch, Router};
use mio::net::TcpStream;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

/// Bytes read from the socket per `read` call at most.
const READ_CHUNK: usize = 16 * 1024;

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

/// Where the connection is in reading the current request.
enum ReadState<'r, T> {
    Head,
    Body {
        head: RequestHead,
        decoder: BodyDecoder,
        body: Vec<u8>,
        route: Option<(&'r Route<T>, Vec<(String, String)>)>,
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
    }

    pub fn receiving_body(&self) -> bool {
        matches!(self.state, ReadState::Body { .. })
    }

    /// True when the connection has answered everything it will and can go.
    pub fn finished(&self) -> bool {
        self.in_flight == 0
            && !self.has_pending_output()
            && (self.close_after || (self.peer_closed && !self.receiving_body()))
    }

    /// Reads what the socket has and queues the requests it completes.
    pub fn read_ready(
        &mut self,
        token: usize,
        router: &'r Router<Route<T>>,
        limits: &Limits,
        jobs: &mut Vec<Job<'r, T>>,
    ) -> ReadOutcome {
        loop {
            if self.close_after || self.peer_closed {
                return ReadOutcome::Open;
            }
            if self.out.len() - self.written > limits.max_buffered_output {
                self.read_paused = true;
                return ReadOutcome::Open;
            }
            self.read_paused = false;
            if self.consumed == self.filled {
                self.consumed = 0;
                self.filled = 0;
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
        }
    }

    /// Parses as many requests as the buffered input holds.
    pub fn parse_buffered(
        &mut self,
        token: usize,
        router: &'r Router<Route<T>>,
        limits: &Limits,
        jobs: &mut Vec<Job<'r, T>>,
    ) {
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
                    match head::parse(input, limits) {
                        Ok(None) => return,
                        Err(e) => {
                            self.fail(token, e, jobs);
                            return;
                        }
                        Ok(Some((head, len))) => {
                            self.consumed += len;
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
            (None, Some((200, "", Some(crate::config::KNOWN_METHODS.join(", ")))))
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
            (Some((route, params)), _) => {
                JobKind::Call { route, req: Request { head, body, remote_addr: self.addr, params } }
            }
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
        self.in_flight += 1;
        jobs.push(Job {
            token,
            serial: self.serial,
            keep_alive: false,
            head_only: false,
            version: Version::Http11,
            kind: JobKind::Fail(e),
        });
        self.state = ReadState::Done;
        self.consumed = self.filled;
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
        if self.has_pending_output() {
            Some(Deadline::Write)
        } else if self.in_flight > 0 {
            None
        } else {
            match self.state {
                ReadState::Body { .. } => Some(Deadline::Body),
                ReadState::Head if self.consumed < self.filled => Some(Deadline::Header),
                ReadState::Head | ReadState::Done => Some(Deadline::Idle),
            }
        }
    }

    /// Whether bytes of a request head have been received but not completed.
    pub fn has_partial_head(&self) -> bool {
        matches!(self.state, ReadState::Head) && self.consumed < self.filled
    }

    /// Replace the input state after a timeout: nothing more is read.
    pub fn stop_reading(&mut self) {
        self.state = ReadState::Done;
        self.consumed = self.filled;
    }
}
