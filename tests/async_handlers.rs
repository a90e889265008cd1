//! `async def` handlers and hooks through the real binary: coroutines run on
//! pyrs's asyncio loop while the pool thread serves other requests.

mod common;
mod observe_support;
use common::*;
use std::time::Instant;

const API: &str = r#"
import asyncio, os, sys, threading
import pyrs

# /hold_loop blocks the asyncio thread itself until /open_loop.
LOOP_HELD = threading.Event()
LOOP_GATE = threading.Event()

class Api:
    def __init__(self):
        self.release = None
        self.forked_pid = None
        self.subscribers = set()

    async def post_fork(self):
        await asyncio.sleep(0)
        self.forked_pid = os.getpid()

    async def sleep(self, request):
        await asyncio.sleep(float(request.query.get("s", "0.5")))
        return {"slept": request.query.get("s", "0.5")}

    def _event(self):
        if self.release is None:
            self.release = asyncio.Event()
        return self.release

    async def first(self, request):
        await self._event().wait()
        return "first"

    async def second(self, request):
        self._event().set()
        return "second", 201, {"X-Order": "2"}

    async def forever(self, request):
        try:
            print("forever started", flush=True)
            await asyncio.Event().wait()
        finally:
            print("forever finally ran", flush=True)

    async def hold_loop(self, request):
        LOOP_HELD.set()
        LOOP_GATE.wait(120)  # no await: the loop runs nothing else meanwhile
        return "held"

    def loop_held(self, request):
        return "yes" if LOOP_HELD.is_set() else "no"

    def open_loop(self, request):
        LOOP_GATE.set()
        return "open"

    async def body_ran(self, request):
        print("body ran " + request.query["n"], flush=True)
        return "ran"

    def mark(self, request):
        print("marked " + request.query["n"], flush=True)
        return "marked"

    async def nap(self, request):
        print("nap started", flush=True)
        await asyncio.sleep(0.3)
        return "napped"

    async def slow(self, request):
        print("slow started", flush=True)
        await asyncio.sleep(0.5)
        return "slow"

    def hello(self, request):
        return "hello"

    async def boom(self, request):
        await asyncio.sleep(0)
        raise ValueError("async boom")

    async def pid(self, request):
        return {"pid": os.getpid(), "post_fork": self.forked_pid}

    async def agen(self, request):
        for i in range(3):
            await asyncio.sleep(0)
            yield f"item{i}\n"

    async def agen_ticking(self, request):
        try:
            while True:
                yield "tick\n"
                await asyncio.sleep(0.02)
        finally:
            print("agen finally ran", flush=True)

    async def agen_boom(self, request):
        yield "a"
        await asyncio.sleep(0)
        raise ValueError("agen boom")

    def aevents(self, request):
        async def events():
            yield {"event": "tick", "data": 1}
            await asyncio.sleep(0)
            yield "two"
        return pyrs.EventStream(events())

    async def wait_marked(self, request):
        # Writes how it ended to the marker file (only a cancellation writes
        # "cancelled"; the sleep outlasts any test).
        marker = request.query["marker"]
        print("waiting " + marker, flush=True)
        how = "returned"
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            how = "cancelled"
            raise
        finally:
            with open(marker, "w") as f:
                f.write(how)
        return "woke"

    async def agen_nap(self, request):
        yield "one\n"
        await asyncio.sleep(0.3)
        yield "two\n"

    async def agen_marked(self, request):
        marker = request.query["marker"]
        how = "ended"
        try:
            yield "first\n"
            await asyncio.sleep(3600)
            yield "never\n"
        except asyncio.CancelledError:
            how = "cancelled"
            raise
        except GeneratorExit:
            how = "closed"
            raise
        finally:
            with open(marker, "w") as f:
                f.write(how)

    async def agen_never_starts(self, request):
        try:
            print("agen_never_starts waiting", flush=True)
            await asyncio.Event().wait()
            yield "never"
        finally:
            print("agen_never_starts finally ran", flush=True)

    async def agen_slow_items(self, request):
        yield "a\n"
        await asyncio.sleep(1.5)
        yield "b\n"

    async def agen_fails_first(self, request):
        await asyncio.sleep(0)
        raise ValueError("async boom before the first item")
        yield "never"

    async def agen_http_error(self, request):
        await asyncio.sleep(0)
        raise pyrs.HTTPError(409, "taken")
        yield "never"

    def gen_fails_first(self, request):
        raise ValueError("sync boom before the first item")
        yield "never"

    def aevents_fail(self, request):
        async def events():
            await asyncio.sleep(0)
            raise ValueError("async events boom")
            yield 1
        return pyrs.EventStream(events())

    async def returns_failing_agen(self, request):
        async def gen():
            raise ValueError("returned generator boom")
            yield "never"
        return pyrs.Response(gen(), status=202)

    async def swallow_cancel(self, request):
        # Keeps going after its first cancellation (the second, at shutdown, ends it).
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            print("swallowed the cancellation", flush=True)
        await asyncio.sleep(3600)
        return "late"

    async def agen_waits_first(self, request):
        await asyncio.sleep(3600)
        yield "never"

    def spin(self, request):
        while True:
            pass

    def aevents_stall(self, request):
        async def events():
            yield {"event": "tick", "data": 1}
            await asyncio.sleep(3600)  # events stall
            yield "never"
        return pyrs.EventStream(events())

    # README's notes example (keep-alives 0.3 s apart; its test's timeout is 2 s).
    async def publish(self, request):
        for queue in self.subscribers:
            queue.put_nowait(request.text)

    def listen(self, request):
        async def events():
            queue = asyncio.Queue()
            self.subscribers.add(queue)
            try:
                while True:
                    try:
                        note = await asyncio.wait_for(queue.get(), 0.3)
                    except asyncio.TimeoutError:
                        yield None
                        continue
                    yield {"event": "note", "data": note}
            finally:
                self.subscribers.discard(queue)
        return pyrs.EventStream(events())

    def aiter_stall(self, request):
        class Stalls:
            def __aiter__(self):
                return self
            async def __anext__(self):
                await asyncio.sleep(3600)  # iterator stalls
        return pyrs.Response(Stalls())

    async def close(self):
        await asyncio.sleep(0)
        print("async close ran", flush=True)
"#;

fn routes() -> Vec<(&'static str, &'static str)> {
    vec![
        ("/sleep", "sleep"),
        ("/first", "first"),
        ("/second", "second"),
        ("/forever", "forever"),
        ("/hello", "hello"),
        ("/slow", "slow"),
        ("/nap", "nap"),
        ("/hold_loop", "hold_loop"),
        ("/loop_held", "loop_held"),
        ("/open_loop", "open_loop"),
        ("/body_ran", "body_ran"),
        ("/mark", "mark"),
        ("/boom", "boom"),
        ("/pid", "pid"),
        ("/agen", "agen"),
        ("/agen_ticking", "agen_ticking"),
        ("/agen_boom", "agen_boom"),
        ("/aevents", "aevents"),
        ("/wait_marked", "wait_marked"),
        ("/agen_marked", "agen_marked"),
        ("/agen_nap", "agen_nap"),
        ("/agen_fails_first", "agen_fails_first"),
        ("/agen_never_starts", "agen_never_starts"),
        ("/agen_slow_items", "agen_slow_items"),
        ("/aevents_fail", "aevents_fail"),
        ("/returns_failing_agen", "returns_failing_agen"),
        ("/agen_http_error", "agen_http_error"),
        ("/gen_fails_first", "gen_fails_first"),
        ("/swallow_cancel", "swallow_cancel"),
        ("/agen_waits_first", "agen_waits_first"),
        ("/spin", "spin"),
        ("/aevents_stall", "aevents_stall"),
        ("/aiter_stall", "aiter_stall"),
        ("/publish", "publish"),
        ("/listen", "listen"),
    ]
}

#[test]
fn check_reports_which_handlers_are_coroutines() {
    let p = Project::simple(API, &routes(), "");
    let (code, out, err) = run_pyrs(&[p.file().to_str().unwrap(), "--check"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("/sleep -> main.Api.sleep (all methods, coroutine)"), "{out}");
    assert!(out.contains("/hello -> main.Api.hello (all methods)\n"), "{out}");
}

/// 1000 connections need more descriptors than a default soft limit of 1024
/// leaves (the server inherits the raised limit).
fn raise_fd_limit() {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < 4096 {
            r.rlim_cur = r.rlim_max.min(4096);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
    assert!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0 && r.rlim_cur >= 2100,
        "need 2100 descriptors (ulimit -n), have {}",
        r.rlim_cur
    );
}

#[test]
fn a_thousand_sleeping_coroutines_overlap_on_one_thread() {
    raise_fd_limit();
    let p = Project::simple(API, &routes(), "\"thread_count\": 1,");
    let s = Server::start(&p, &[]);
    let start = Instant::now();
    let mut clients: Vec<Client> = (0..1000).map(|_| s.connect()).collect();
    for c in &mut clients {
        c.send(b"GET /sleep?s=0.5 HTTP/1.1\r\nHost: h\r\n\r\n");
    }
    for c in &mut clients {
        let r = c.read_response();
        assert_eq!((r.status, r.text()), (200, r#"{"slept":"0.5"}"#.to_string()));
    }
    let took = start.elapsed();
    // Run one after another they would take 500 s; together about 0.6-0.9 s
    // (benches/async/sleep.sh measures it). The bound only allows for a loaded machine.
    assert!(took.as_secs() < 60, "1000 x 0.5 s coroutines took {took:?}: were they serialised?");
}

#[test]
fn pipelined_responses_keep_their_order_when_a_later_coroutine_finishes_first() {
    let p = Project::simple(API, &routes(), "\"thread_count\": 1,");
    let s = Server::start(&p, &[]);
    let mut c = s.connect();
    // /first waits until /second has run: the second response is ready first.
    c.send(b"GET /first HTTP/1.1\r\nHost: h\r\n\r\nGET /second HTTP/1.1\r\nHost: h\r\n\r\nGET /hello HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.read_response();
    assert_eq!((r.status, r.text()), (200, "first".to_string()));
    let r = c.read_response();
    assert_eq!((r.status, r.text(), r.header("x-order")), (201, "second".to_string(), Some("2")));
    assert_eq!(c.read_response().text(), "hello");
}

#[test]
fn the_thread_serves_other_requests_while_a_coroutine_awaits() {
    let p = Project::simple(API, &routes(), "\"thread_count\": 1,");
    let s = Server::start(&p, &[]);
    let mut waiting = s.connect();
    waiting.send(b"GET /first HTTP/1.1\r\nHost: h\r\n\r\n");
    // The only pool thread answers others while /first is suspended.
    for _ in 0..5 {
        assert_eq!(s.get("/hello").text(), "hello");
    }
    let mut other = s.connect();
    other.send(b"GET /second HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(other.read_response().status, 201);
    assert_eq!(waiting.read_response().text(), "first");
}

#[test]
fn an_exception_in_a_coroutine_is_a_logged_500() {
    let p = Project::simple(API, &routes(), "");
    let s = Server::start(&p, &[]);
    let r = s.get("/boom");
    assert_eq!((r.status, r.text()), (500, "Internal Server Error\n".to_string()));
    let rid = r.header("x-request-id").expect("a deferred response carries its request id").to_string();
    s.wait_stderr("ValueError: async boom", 10);
    let err = s.stderr();
    assert!(err.contains("route /boom (main.Api.boom) raised rid="), "{err}");
    assert!(err.contains(&format!("rid={rid}")), "the log line names the request: {err}");
    assert!(!err.contains("never awaited"), "{err}");
    // The connection and the thread carry on.
    assert_eq!(s.get("/hello").text(), "hello");
}

#[test]
fn a_coroutine_that_awaits_past_timeout_is_answered_503_and_cancelled() {
    let p = Project::simple(API, &routes(), "\"timeout\": 1,");
    let s = Server::start(&p, &[]);
    let mut c = s.connect();
    let started = Instant::now();
    c.send(b"GET /forever HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.read_response();
    assert_eq!((r.status, r.text()), (503, "Handler timed out\n".to_string()));
    assert!(started.elapsed() >= std::time::Duration::from_millis(900), "not before the timeout");
    // Cancelled: its finally ran. Logged like a sync handler's timeout, with where it awaited.
    s.wait_stdout("forever finally ran", 1, 30);
    s.wait_stderr("route /forever (main.Api.forever) timed out rid=", 30);
    let err = s.stderr();
    assert!(err.contains("await asyncio.Event().wait()"), "the log shows where it awaited: {err}");
    assert!(!err.contains("CancelledError") && !err.contains("Internal Server Error"), "{err}");
    // The connection carries on.
    c.send(b"GET /hello HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(c.read_response().text(), "hello");
    // A client that closes (a FIN, so its answer is still produced) is
    // answered and its connection freed once the timeout has passed.
    let mut gone = s.connect();
    gone.send(b"GET /forever HTTP/1.1\r\nHost: h\r\n\r\n");
    gone.stream.shutdown(std::net::Shutdown::Write).unwrap();
    let out = String::from_utf8_lossy(&gone.read_to_close()).into_owned();
    assert!(out.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{out}");
    s.wait_stdout("forever finally ran", 2, 30);
    // An async generator's first item is the handler's answer: bounded the same way (its head
    // is held back until then); so is each later pull, as a sync generator's (the stream is cut).
    c.send(b"GET /agen_never_starts HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.read_response();
    assert_eq!((r.status, r.text()), (503, "Handler timed out\n".to_string()));
    s.wait_stdout("agen_never_starts finally ran", 1, 30);
    s.wait_stderr("route /agen_never_starts (main.Api.agen_never_starts) timed out rid=", 30);
    assert!(s.stderr().contains("await asyncio.Event().wait()"), "{}", s.stderr());
    c.send(b"GET /agen_slow_items HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    let out = String::from_utf8_lossy(&c.read_to_close()).into_owned();
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n") && out.ends_with("\r\n\r\n2\r\na\n\r\n"), "cut after a: {out}");
}

#[test]
fn shutdown_answers_coroutines_that_finish_and_cancels_the_rest() {
    let p = Project::simple(API, &routes(), "\"shutdown_timeout\": 2,");
    let mut s = Server::start(&p, &[]);
    let mut stuck = s.connect();
    stuck.send(b"GET /forever HTTP/1.1\r\nHost: h\r\n\r\n");
    s.wait_stdout("forever started", 1, 10);
    let mut short = s.connect();
    short.send(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
    s.wait_stdout("slow started", 1, 10);
    s.signal("TERM");
    let r = short.read_response();
    assert_eq!((r.status, r.text(), r.header("connection")), (200, "slow".to_string(), Some("close")));
    s.wait_exit(20);
    let (out, err) = (s.stdout(), s.stderr());
    assert!(out.contains("forever finally ran"), "{out}\n{err}");
    assert!(err.contains("cancelled 1 coroutine(s) still running at shutdown"), "{err}");
    assert!(out.contains("async close ran"), "{out}\n{err}");
    assert!(stuck.is_closed(), "the cancelled request's connection is closed");
}

#[test]
fn worker_processes_run_async_post_fork_and_coroutines() {
    let p = Project::simple(API, &routes(), "\"workers\": 2,");
    let s = Server::start(&p, &[]);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..50 {
        let r = s.get("/pid");
        assert_eq!(r.status, 200, "{}", r.text());
        let v: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
        assert_eq!(v["pid"], v["post_fork"], "post_fork ran (awaited) in the worker that answers");
        seen.insert(v["pid"].as_i64().unwrap());
        assert_eq!(s.get("/sleep?s=0").status, 200);
    }
    assert!(!seen.is_empty());
}

/// Reads from `c` until what it received contains `needle`.
fn read_until_contains(c: &mut Client, needle: &str) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(needle) {
        let n = read_retry(&mut c.stream, &mut buf).unwrap();
        assert!(n > 0, "closed before {needle:?} arrived: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
}

fn raw(s: &Server, request: &[u8]) -> String {
    let mut c = s.connect();
    c.send(request);
    String::from_utf8_lossy(&c.read_to_close()).into_owned()
}

#[test]
fn async_generators_stream_chunked_and_keep_pipelined_order() {
    let p = Project::simple(API, &routes(), "\"thread_count\": 1,");
    let s = Server::start(&p, &[]);
    let out =
        raw(&s, b"GET /agen HTTP/1.1\r\nHost: h\r\n\r\nGET /hello HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    let (first, second) = out.split_once("0\r\n\r\n").unwrap_or((&out, ""));
    assert!(first.contains("Transfer-Encoding: chunked\r\n"), "{out}");
    assert!(first.ends_with("\r\n\r\n6\r\nitem0\n\r\n6\r\nitem1\n\r\n6\r\nitem2\n\r\n"), "{out}");
    assert!(second.starts_with("HTTP/1.1 200 OK\r\n"), "the pipelined request after the stream: {out}");
    assert!(second.ends_with("\r\n\r\nhello"), "{out}");
    // Server-Sent Events from an async iterable.
    let out = raw(&s, b"GET /aevents HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    assert!(out.contains("Content-Type: text/event-stream\r\n"), "{out}");
    assert!(out.contains("event: tick\ndata: 1\n\n"), "{out}");
    assert!(out.contains("data: two\n\n"), "{out}");
    assert!(out.ends_with("0\r\n\r\n"), "{out}");
}

#[test]
fn a_client_that_disconnects_runs_the_async_generators_finally() {
    let p = Project::simple(API, &routes(), "");
    let s = Server::start(&p, &[]);
    let mut c = s.connect();
    c.send(b"GET /agen_ticking HTTP/1.1\r\nHost: h\r\n\r\n");
    read_until_contains(&mut c, "tick");
    drop(c);
    s.wait_stdout("agen finally ran", 1, 30);
    assert_eq!(s.get("/hello").text(), "hello");
}

#[test]
fn an_exception_in_an_async_generator_cuts_the_response() {
    let p = Project::simple(API, &routes(), "");
    let s = Server::start(&p, &[]);
    let out = raw(&s, b"GET /agen_boom HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(out.contains("\r\n\r\n1\r\na\r\n"), "{out}");
    assert!(!out.ends_with("0\r\n\r\n"), "no terminating chunk: {out}");
    s.wait_stderr("ValueError: agen boom", 30);
    s.wait_stderr("response cut", 30);
}

/// The contents of `path` once it exists (polled with a generous deadline).
fn marker(path: &std::path::Path) -> String {
    wait_until(30, &format!("{} to be written", path.display()), || path.exists());
    // Written by one small write: read until the file has its content.
    let mut text = String::new();
    wait_until(30, "the marker's content", || {
        text = std::fs::read_to_string(path).unwrap_or_default();
        !text.is_empty()
    });
    text
}

#[test]
fn a_client_that_goes_away_cancels_its_pending_coroutine_and_only_that_one() {
    let p = Project::simple(API, &routes(), "\"thread_count\": 1,");
    let s = Server::start(&p, &["--admin", "127.0.0.1:0", "--log-level", "debug"]);
    let dir = temp_dir("cancel-markers");
    let m = |name: &str| dir.join(name);
    let wait = |name: &str| format!("GET /wait_marked?marker={} HTTP/1.1\r\nHost: h\r\n\r\n", m(name).display());

    // Another connection's coroutine on the same thread, which must not be cancelled.
    let mut kept = s.connect();
    kept.send(b"GET /first HTTP/1.1\r\nHost: h\r\n\r\n");

    // The client half-closes (FIN: its coroutine goes on), then resets.
    let mut fin = s.connect();
    fin.send(wait("fin").as_bytes());
    s.wait_stdout(&format!("waiting {}", m("fin").display()), 1, 30);
    fin.half_close();
    s.wait_stderr("client sent FIN; its received requests are still answered", 30);
    fin.reset();
    assert_eq!(marker(&m("fin")), "cancelled", "the coroutine saw CancelledError and its finally ran");

    // The client resets the connection.
    let mut rst = s.connect();
    rst.send(wait("rst").as_bytes());
    s.wait_stdout(&format!("waiting {}", m("rst").display()), 1, 30);
    rst.reset();
    assert_eq!(marker(&m("rst")), "cancelled");

    // Pipelined: the pending coroutine and what queued behind it go with the connection.
    let mut piped = s.connect();
    piped.send(format!("{}GET /hello HTTP/1.1\r\nHost: h\r\n\r\n", wait("piped")).as_bytes());
    s.wait_stdout(&format!("waiting {}", m("piped").display()), 1, 30);
    piped.reset();
    assert_eq!(marker(&m("piped")), "cancelled");

    // The server serves on, and the other connection's coroutine was left running.
    assert_eq!(s.get("/hello").text(), "hello");
    let mut other = s.connect();
    other.send(b"GET /second HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(other.read_response().status, 201);
    assert_eq!(kept.read_response().text(), "first", "the other connection's coroutine ran to its end");
    // A client going away is not an error: nothing about it at error level.
    let err = s.stderr();
    assert!(!err.contains("CancelledError") && !err.contains("Internal Server Error"), "{err}");
    assert!(!err.contains("raised"), "{err}");
    // Counted: the three coroutines cancelled.
    let metrics = observe_support::get(observe_support::admin_addr(&s), "/metrics").text();
    assert!(metrics.contains("\npyrs_abandoned_responses_total 3\n"), "{metrics}");
}

#[test]
fn a_coroutine_whose_client_goes_before_its_task_starts_never_runs() {
    let p = Project::simple(API, &routes(), "\"thread_count\": 1,");
    let s = Server::start(&p, &["--admin", "127.0.0.1:0"]);
    let admin = observe_support::admin_addr(&s);
    let mut held = s.connect();
    held.send(b"GET /hold_loop HTTP/1.1\r\nHost: h\r\n\r\n");
    wait_until(30, "the asyncio thread to be held", || s.get("/loop_held").text() == "yes");
    // Handed to the held loop (its task cannot start), and the client resets.
    // /mark runs after /body_ran's handler returned its coroutine.
    let mut gone = s.connect();
    gone.send(b"GET /body_ran?n=1 HTTP/1.1\r\nHost: h\r\n\r\nGET /mark?n=1 HTTP/1.1\r\nHost: h\r\n\r\n");
    s.wait_stdout("marked 1", 1, 30);
    gone.reset();
    wait_until(30, "the abandoned response to be counted", || {
        observe_support::get(admin, "/metrics").text().contains("\npyrs_abandoned_responses_total 1\n")
    });
    // The thread sends the cancel before it runs another handler: let the loop go on.
    assert_eq!(s.get("/open_loop").text(), "open");
    assert_eq!(held.read_response().text(), "held");
    // The loop takes its callbacks in order: the cancelled task's first step
    // comes before this coroutine's.
    assert_eq!(s.get("/body_ran?n=2").text(), "ran");
    s.wait_stdout("body ran 2", 1, 30);
    let out = s.stdout();
    assert!(!out.contains("body ran 1"), "the coroutine's body ran after its client went:\n{out}");
    let err = s.stderr();
    assert!(!err.contains("never awaited") && !err.contains("rror"), "{err}");
}

#[test]
fn a_client_that_goes_away_closes_an_async_generator_awaiting_its_next_item() {
    let p = Project::simple(API, &routes(), "");
    let s = Server::start(&p, &[]);
    let path = temp_dir("agen-marker").join("agen");
    let mut c = s.connect();
    c.send(format!("GET /agen_marked?marker={} HTTP/1.1\r\nHost: h\r\n\r\n", path.display()).as_bytes());
    read_until_contains(&mut c, "first");
    // The generator now awaits for an hour: no write can fail meanwhile,
    // so only the client's reset tells the server it has gone (a FIN
    // alone would leave the stream to go on).
    c.reset();
    // "cancelled" when its pending __anext__ was cancelled, "closed" when the
    // client went before the next __anext__ started (aclose() then ran).
    let how = marker(&path);
    assert!(how == "cancelled" || how == "closed", "its finally ran: {how}");
    assert_eq!(s.get("/hello").text(), "hello");
    let err = s.stderr();
    assert!(!err.contains("CancelledError") && !err.contains("raised"), "{err}");
}

/// Sends `raw`, waits until stdout has `started` `count` times, half-closes
/// (FIN) and returns everything the server sent until it closed, masked.
fn half_closed_exchange(s: &Server, raw: &str, started: &str, count: usize) -> String {
    let mut c = s.connect();
    c.send(raw.as_bytes());
    s.wait_stdout(started, count, 30);
    c.half_close();
    masked(&c.read_to_close()).0
}

#[test]
fn a_half_closed_client_gets_its_pending_coroutines_answer() {
    let p = Project::simple(API, &routes(), "");
    let s = Server::start(&p, &[]);
    let napped = "HTTP/1.1 200 OK\r\nServer: pyrs\r\nDate: X\r\nX-Request-Id: R\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 6\r\n\r\nnapped";
    let hello = "HTTP/1.1 200 OK\r\nServer: pyrs\r\nDate: X\r\nX-Request-Id: R\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\r\nhello";
    // The FIN comes while the coroutine awaits asyncio.sleep(0.3).
    let got = half_closed_exchange(&s, "GET /nap HTTP/1.1\r\nHost: h\r\n\r\n", "nap started", 1);
    assert_eq!(got, napped);
    // Pipelined, a sync answer then a pending coroutine's: both, in order.
    let raw = "GET /hello HTTP/1.1\r\nHost: h\r\n\r\nGET /nap HTTP/1.1\r\nHost: h\r\n\r\n";
    let got = half_closed_exchange(&s, raw, "nap started", 2);
    assert_eq!(got, format!("{hello}{napped}"));
    let err = s.stderr();
    assert!(!err.contains("CancelledError") && !err.contains("rror"), "{err}");
}

#[test]
fn a_half_closed_client_gets_the_rest_of_an_async_generator_stream() {
    let p = Project::simple(API, &routes(), "");
    let s = Server::start(&p, &[]);
    let mut c = s.connect();
    c.send(b"GET /agen_nap HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("one\n") {
        let n = read_retry(&mut c.stream, &mut buf).unwrap();
        assert!(n > 0, "closed before the first item: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    // The generator now awaits asyncio.sleep(0.3) before its second item.
    c.half_close();
    got.extend(c.read_to_close());
    let want = "HTTP/1.1 200 OK\r\nServer: pyrs\r\nDate: X\r\nX-Request-Id: R\r\nContent-Type: text/plain; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n4\r\none\n\r\n4\r\ntwo\n\r\n0\r\n\r\n";
    assert_eq!(masked(&got).0, want);
}

#[test]
fn on_a_unix_socket_a_half_close_is_answered_and_a_close_cancels() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let p = Project::simple(API, &routes(), "");
    let dir = temp_dir("unix-half-close");
    let sock = dir.join("pyrs.sock");
    let s = Server::start(&p, &["--bind", &format!("unix:{}", sock.display())]);
    let connect = || {
        let c = UnixStream::connect(&sock).expect("connect to the Unix socket");
        c.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
        c
    };
    // Half-closed while the coroutine awaits: answered, then closed.
    let mut c = connect();
    c.write_all(b"GET /nap HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    s.wait_stdout("nap started", 1, 30);
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).expect("read to EOF");
    let napped = "HTTP/1.1 200 OK\r\nServer: pyrs\r\nDate: X\r\nX-Request-Id: R\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 6\r\n\r\nnapped";
    assert_eq!(masked(&got).0, napped);
    // Closed both ways (the server sees a hang-up): its coroutine is cancelled.
    let marker_path = dir.join("closed");
    let mut c = connect();
    c.write_all(format!("GET /wait_marked?marker={} HTTP/1.1\r\nHost: h\r\n\r\n", marker_path.display()).as_bytes())
        .unwrap();
    s.wait_stdout(&format!("waiting {}", marker_path.display()), 1, 30);
    drop(c);
    assert_eq!(marker(&marker_path), "cancelled");
}

#[test]
fn an_async_generator_that_raises_before_its_first_item_answers_500() {
    let p = Project::simple(API, &routes(), "");
    let s = Server::start(&p, &[]);
    let error = "HTTP/1.1 500 Internal Server Error\r\nServer: pyrs\r\nDate: X\r\nX-Request-Id: R\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 22\r\n\r\nInternal Server Error\n";
    let hello = "HTTP/1.1 200 OK\r\nServer: pyrs\r\nDate: X\r\nX-Request-Id: R\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    for (path, exception) in [
        ("/agen_fails_first", "ValueError: async boom before the first item"),
        ("/aevents_fail", "ValueError: async events boom"),
        ("/returns_failing_agen", "ValueError: returned generator boom"),
    ] {
        let raw = format!(
            "GET {path} HTTP/1.1\r\nHost: h\r\n\r\nGET /hello HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        );
        let (got, rids) = exchange_masked(&s, &raw);
        assert_eq!(got, format!("{error}{hello}"), "{path}: a real 500, and the connection goes on");
        let handler = path.trim_start_matches('/');
        s.wait_stderr(&format!("route {path} (main.Api.{handler}) raised rid={}:", rids[0]), 30);
        s.wait_stderr(exception, 30);
    }
    // HTTPError before the first item: its status and message.
    let raw =
        "GET /agen_http_error HTTP/1.1\r\nHost: h\r\n\r\nGET /hello HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    let (got, _) = exchange_masked(&s, raw);
    let conflict = "HTTP/1.1 409 Conflict\r\nServer: pyrs\r\nDate: X\r\nX-Request-Id: R\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 6\r\n\r\ntaken\n";
    assert_eq!(got, format!("{conflict}{hello}"));
}

#[test]
fn a_generator_that_raises_before_its_first_item_counts_as_a_handler_exception() {
    // Answered 500 like a handler that raised, so counted and kept for the
    // status page like one: a sync generator (pulled on the pool thread) and
    // an async one (its exception arrives on the asyncio thread). An
    // HTTPError is an answer, not an exception: not counted.
    let p = Project::simple(API, &routes(), "");
    let s = Server::start(&p, &["--admin", "127.0.0.1:0"]);
    let admin = observe_support::admin_addr(&s);
    let mut rids = Vec::new();
    for path in ["/gen_fails_first", "/agen_fails_first"] {
        let r = s.get(path);
        assert_eq!(r.status, 500, "{path}");
        rids.push(r.header("X-Request-Id").expect("a request id").to_string());
    }
    assert_eq!(s.get("/agen_http_error").status, 409);
    let m = observe_support::metrics(admin);
    for (path, n) in [("/gen_fails_first", 1.0), ("/agen_fails_first", 1.0), ("/agen_http_error", 0.0)] {
        assert_eq!(observe_support::value(&m, "pyrs_handler_exceptions_total", &[("route", path)]), n, "{path}");
    }
    let page = observe_support::get(admin, "/").text();
    for (rid, error) in rids.iter().zip(["sync boom before the first item", "async boom before the first item"]) {
        assert!(page.contains(rid.as_str()) && page.contains(error), "{rid} {error}:\n{page}");
    }
}

/// What a handler past `timeout` is answered with (sync or coroutine), then
/// the pipelined `GET /hello` behind it.
const TIMED_OUT_THEN_HELLO: &str = "HTTP/1.1 503 Service Unavailable\r\nServer: pyrs\r\nDate: X\r\nX-Request-Id: R\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 18\r\n\r\nHandler timed out\nHTTP/1.1 200 OK\r\nServer: pyrs\r\nDate: X\r\nX-Request-Id: R\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";

/// `path` pipelined with `GET /hello` (closing): what the server sent, masked.
fn then_hello(s: &Server, path: &str) -> (String, Vec<String>) {
    exchange_masked(
        s,
        &format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\nGET /hello HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"),
    )
}

#[test]
fn a_coroutine_past_timeout_is_cancelled_and_answered_like_a_sync_handler() {
    let p = Project::simple(API, &routes(), "\"timeout\": 1, \"thread_count\": 2,");
    let s = Server::start(&p, &["--admin", "127.0.0.1:0"]);
    let admin = observe_support::admin_addr(&s);
    let path = temp_dir("timeout-marker").join("forever");
    // Pipelined behind it, /hello waits for the 503 and comes after it.
    let (got, rids) = then_hello(&s, &format!("/wait_marked?marker={}", path.display()));
    assert_eq!(got, TIMED_OUT_THEN_HELLO, "{}", s.stderr());
    assert_eq!(marker(&path), "cancelled", "the task was cancelled and its finally ran");
    // One log line like a sync handler's: route, request id, and where it awaited.
    s.wait_stderr(&format!("route /wait_marked (main.Api.wait_marked) timed out rid={}:", rids[0]), 30);
    let err = s.stderr();
    assert!(err.contains(", in wait_marked\n    await asyncio.sleep(3600)\n"), "the awaiting stack line: {err}");
    assert!(err.contains("pyrs.Timeout: still awaiting after 1 s (timeout)"), "{err}");
    // The sync path's answer, byte for byte.
    assert_eq!(then_hello(&s, "/spin").0, TIMED_OUT_THEN_HELLO, "{}", s.stderr());
    // Counted as the sync timeouts are: a handler exception and a 5xx, kept for the status page.
    let m = observe_support::metrics(admin);
    for route in ["/wait_marked", "/spin"] {
        assert_eq!(observe_support::value(&m, "pyrs_handler_exceptions_total", &[("route", route)]), 1.0, "{route}");
        let labels = [("route", route), ("status", "5xx")];
        assert_eq!(observe_support::value(&m, "pyrs_requests_total", &labels), 1.0, "{route}");
    }
    let page = observe_support::get(admin, "/").text();
    assert!(page.contains(rids[0].as_str()) && page.contains("still awaiting after 1 s"), "{page}");
}

#[test]
fn a_coroutine_that_swallows_its_cancellation_still_gets_its_503_at_the_deadline() {
    let p = Project::simple(API, &routes(), "\"timeout\": 1,");
    let s = Server::start(&p, &[]);
    // The coroutine goes on for an hour after its cancellation: the 503 is the timeout's.
    let r = s.get("/swallow_cancel");
    assert_eq!((r.status, r.text()), (503, "Handler timed out\n".to_string()), "{}", s.stderr());
    s.wait_stdout("swallowed the cancellation", 1, 30);
    s.wait_stderr("route /swallow_cancel (main.Api.swallow_cancel) timed out rid=", 30);
    // The next client is served.
    assert_eq!(s.get("/hello").text(), "hello");
}

#[test]
fn an_async_generator_pull_past_timeout_cuts_the_stream_and_closes_the_generator() {
    let p = Project::simple(API, &routes(), "\"timeout\": 1,");
    let s = Server::start(&p, &[]);
    // The second pull awaits for an hour: cut after the first item, no terminating chunk.
    let path = temp_dir("agen-timeout-marker").join("agen");
    let (got, rids) =
        exchange_masked(&s, &format!("GET /agen_marked?marker={} HTTP/1.1\r\nHost: h\r\n\r\n", path.display()));
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n") && got.contains("Transfer-Encoding: chunked\r\n"), "{got}");
    assert!(got.ends_with("\r\n\r\n6\r\nfirst\n\r\n"), "cut after the first item: {got}");
    assert_eq!(marker(&path), "cancelled", "the pending pull was cancelled and the generator's finally ran");
    let line =
        format!("route /agen_marked (main.Api.agen_marked) timed out while streaming (response cut) rid={}:", rids[0]);
    s.wait_stderr(&line, 30);
    let err = s.stderr();
    assert!(err.contains(", in agen_marked\n    await asyncio.sleep(3600)\n"), "the awaiting stack line: {err}");
    // Before the first item: the head was held back, so a 503 like a handler's, and the connection goes on.
    assert_eq!(then_hello(&s, "/agen_waits_first").0, TIMED_OUT_THEN_HELLO, "{}", s.stderr());
    s.wait_stderr("route /agen_waits_first (main.Api.agen_waits_first) timed out rid=", 30);
    // The stack reaches the handler's own generator through EventStream's
    // `async for`, and an async iterator that is no generator shows its __anext__.
    let out = raw(&s, b"GET /aevents_stall HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(out.ends_with("\r\n\r\n15\r\nevent: tick\ndata: 1\n\n\r\n"), "cut after the first event: {out}");
    s.wait_stderr("route /aevents_stall (main.Api.aevents_stall) timed out while streaming (response cut) rid=", 30);
    s.wait_stderr("await asyncio.sleep(3600)  # events stall", 30);
    assert_eq!(then_hello(&s, "/aiter_stall").0, TIMED_OUT_THEN_HELLO, "{}", s.stderr());
    s.wait_stderr("await asyncio.sleep(3600)  # iterator stalls", 30);
}

#[test]
fn a_worker_is_not_killed_for_a_coroutine_past_timeout() {
    let p = Project::simple(API, &routes(), "\"workers\": 1, \"timeout\": 1,");
    let s = Server::start(&p, &[]);
    let pid = |s: &Server| {
        let r = s.get("/pid");
        assert_eq!(r.status, 200, "{}", r.text());
        serde_json::from_str::<serde_json::Value>(&r.text()).unwrap()["pid"].as_i64().unwrap()
    };
    let before = pid(&s);
    let started = Instant::now();
    let r = s.get("/swallow_cancel");
    assert_eq!((r.status, r.text()), (503, "Handler timed out\n".to_string()), "{}", s.stderr());
    // A stuck sync handler gets its worker killed after timeout + grace (2 s
    // here); a coroutine leaves no pool thread busy, so nothing may be killed
    // once that has passed (the coroutine still runs).
    let past_grace = std::time::Duration::from_secs(3);
    std::thread::sleep(past_grace.saturating_sub(started.elapsed()));
    assert_eq!(pid(&s), before, "the same worker serves on");
    let err = s.stderr();
    assert!(!err.contains("killing the worker") && !err.contains("despite pyrs.Timeout"), "{err}");
}

#[test]
fn a_stream_with_keep_alives_outlives_the_timeout_of_each_pull() {
    // README's notes example: no note for longer than `timeout`, but a
    // keep-alive within it each time, so the stream goes on and the note arrives.
    // 2 s: a loop stalled by load would need 1.7 s to miss a keep-alive.
    let p = Project::simple(API, &routes(), "\"timeout\": 2,");
    let s = Server::start(&p, &[]);
    let mut listener = s.connect();
    listener.send(b"GET /listen HTTP/1.1\r\nHost: h\r\n\r\n");
    let started = Instant::now();
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    // Keep-alives 0.3 s apart until the stream has outlived 1.25 timeouts.
    while started.elapsed() < std::time::Duration::from_millis(2500) || got.matches(":\n\n").count() < 8 {
        let n = read_retry(&mut listener.stream, &mut buf).unwrap();
        assert!(n > 0, "the stream ended: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert_eq!(s.post("/publish", b"hello listeners").status, 204);
    read_until_contains(&mut listener, "event: note\ndata: hello listeners\n\n");
    assert!(!s.stderr().contains("timed out"), "{}", s.stderr());
}
