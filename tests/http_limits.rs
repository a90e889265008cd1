//! Limits and timeouts through the real binary, with small limits and
//! fractional-second timeouts set by CLI flags so the suite stays fast.

mod http_support;
use http_support::common;
use http_support::*;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n")
}

#[test]
fn request_line_limit_is_414() {
    let s = start("", &["--max-request-line", "64"]);
    // "GET /hello?q=... HTTP/1.1" is exactly 64 bytes: accepted.
    let fill = |n: usize| "a".repeat(n);
    let line = |n: usize| format!("GET /hello?q={} HTTP/1.1", fill(n));
    assert_eq!(line(42).len(), 64);
    let mut c = Raw::connect(s.addr);
    c.send(format!("{}\r\nHost: t\r\n\r\n", line(42)).as_bytes());
    assert_eq!(c.response(false), text("world"));
    c.send(format!("{}\nHost: t\n\n", line(42)).as_bytes());
    assert_eq!(c.response(false), text("world"));
    // One byte more: 414, and close.
    c.send(format!("{}\r\nHost: t\r\n\r\n", line(43)).as_bytes());
    assert_eq!(c.read_to_close(5.0), error(414, "request line too long"));
    // An unfinished request line is refused as soon as it passes the limit.
    let mut c = Raw::connect(s.addr);
    c.send(format!("GET /{}", fill(64)).as_bytes());
    assert_eq!(c.read_to_close(5.0), error(414, "request line too long"));
    // Also when it trickles in.
    assert_eq!(exchange_bytewise(&s, format!("GET /{}", fill(70)).as_bytes()), error(414, "request line too long"));
}

#[test]
fn header_bytes_limit_is_431() {
    let s = start("", &["--max-header-bytes", "256"]);
    let head = |n: usize| format!("GET /hello HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n", "p".repeat(n));
    let exact = 256 - head(0).len();
    assert_eq!(head(exact).len(), 256);
    let mut c = Raw::connect(s.addr);
    c.send(head(exact).as_bytes());
    assert_eq!(c.response(false), text("world"));
    c.send(head(exact + 1).as_bytes());
    assert_eq!(c.read_to_close(5.0), error(431, "request header fields too large"));
    // A head that never ends is refused once it passes the limit.
    let mut c = Raw::connect(s.addr);
    c.send(format!("GET /hello HTTP/1.1\r\nHost: t\r\nX-Pad: {}", "p".repeat(300)).as_bytes());
    assert_eq!(c.read_to_close(5.0), error(431, "request header fields too large"));
    // Many short lines, one byte per write.
    let raw = format!("GET /hello HTTP/1.1\r\n{}", "A: b\r\n".repeat(60));
    assert_eq!(exchange_bytewise(&s, raw.as_bytes()), error(431, "request header fields too large"));
}

#[test]
fn header_count_limit_is_431() {
    let s = start("", &["--max-headers", "4"]);
    let mut c = Raw::connect(s.addr);
    c.send(get("/hello", "A: 1\r\nB: 2\r\nC: 3\r\n").as_bytes());
    assert_eq!(c.response(false), text("world"));
    c.send(get("/hello", "A: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n").as_bytes());
    assert_eq!(c.read_to_close(5.0), error(431, "request header fields too large"));
}

#[test]
fn body_limit_is_413() {
    let s = start("", &["--max-body-bytes", "100"]);
    let a100 = "a".repeat(100);
    let mut c = Raw::connect(s.addr);
    c.send(format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{a100}").as_bytes());
    assert_eq!(c.response(false), bytes(&a100));
    let chunked = format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n{}\r\n24\r\n{}\r\n0\r\n\r\n",
        &a100[..64],
        &a100[..36]
    );
    c.send(chunked.as_bytes());
    assert_eq!(c.response(false), bytes(&a100));
    // A declared length over the limit is refused before any body is sent.
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 101\r\n\r\n");
    assert_eq!(c.read_to_close(5.0), error(413, "request body too large"));
    // A chunked body that grows past it: 413 and close, while the client is still sending.
    let mut c = Raw::connect(s.addr);
    c.send(
        format!("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n{}\r\n25\r\n", &a100[..64])
            .as_bytes(),
    );
    assert_eq!(c.read_to_close(5.0), error(413, "request body too large"));
    let mut c = Raw::connect(s.addr);
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nfffffffff\r\n");
    assert_eq!(c.read_to_close(5.0), error(413, "request body too large"));
}

#[test]
fn header_timeout_answers_408_slow_heads() {
    // Timing is checked from below only (a timeout never fires early); how
    // late it fires depends on the machine's load, so the upper bounds are loose.
    let s = start("", &["--header-timeout", "1", "--keepalive-timeout", "60"]);
    // A head that has started but not ended.
    let t = Instant::now();
    let mut c = Raw::connect(s.addr);
    c.send(b"GET /hello HTTP/1.1\r\nHost: t\r\n");
    assert_eq!(c.read_to_close(3.0), error(408, "request not received in time"));
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(950) && took < Duration::from_secs(15), "{took:?}");
    // Trickling does not extend it: the head is due header_timeout after
    // connecting, so the 408 comes while the client is still trickling (one
    // byte per 50 ms would take over 10 s).
    let mut c = Raw::connect(s.addr);
    let head = format!("GET /hello HTTP/1.1\r\nHost: t\r\nX-Slow: {}", "0".repeat(200));
    let mut sent = 0;
    for b in head.as_bytes() {
        if !c.send(std::slice::from_ref(b)) || c.read_for(Duration::from_millis(50)) > 0 || c.eof {
            break;
        }
        sent += 1;
    }
    assert!(sent < head.len(), "the whole trickled head was read without a 408");
    assert_eq!(c.read_to_close(3.0), error(408, "request not received in time"));
    // A connection that sends nothing is closed silently, also not before the timeout.
    let t = Instant::now();
    let mut c = Raw::connect(s.addr);
    assert!(c.closes_silently(3.0), "got {:?}", norm(&c.buf));
    assert!(t.elapsed() >= Duration::from_millis(950), "{:?}", t.elapsed());
    // Between requests the next head's clock starts with its first byte: an
    // idle keep-alive connection outlives header_timeout.
    let mut c = Raw::connect(s.addr);
    c.send(get("/hello", "").as_bytes());
    assert_eq!(c.response(false), text("world"));
    assert!(c.stays_open(1.5), "closed early: {:?}", norm(&c.buf));
    c.send(get("/hello", "").as_bytes());
    assert_eq!(c.response(false), text("world"));
}

#[test]
fn keepalive_timeout_closes_idle_connections() {
    let s = start("", &["--keepalive-timeout", "3"]);
    let mut c = Raw::connect(s.addr);
    c.send(get("/hello", "").as_bytes());
    assert_eq!(c.response(false), text("world"));
    let t = Instant::now();
    assert!(c.stays_open(1.0), "closed early: {:?}", norm(&c.buf));
    // Still usable, and the idle clock restarts after each response.
    c.send(get("/hello", "").as_bytes());
    assert_eq!(c.response(false), text("world"));
    let t2 = Instant::now();
    assert!(c.closes_silently(10.0), "got {:?}", norm(&c.buf));
    let idle = t2.elapsed();
    assert!(idle >= Duration::from_millis(2950) && idle < Duration::from_secs(20), "{idle:?}");
    assert!(t.elapsed() >= Duration::from_millis(3950));
}

#[test]
fn body_timeout_answers_408() {
    let s = start("", &["--body-timeout", "0.5"]);
    let mut c = Raw::connect(s.addr);
    let t = Instant::now();
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc");
    assert_eq!(c.read_to_close(3.0), error(408, "request not received in time"));
    assert!(t.elapsed() >= Duration::from_millis(450) && t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    // A chunked body whose terminating chunk never comes.
    let mut c = Raw::connect(s.addr);
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n");
    assert_eq!(c.read_to_close(3.0), error(408, "request not received in time"));
}

#[test]
fn a_client_that_never_reads_is_bounded_and_closed() {
    let extra = r#""max_buffered_output": 65536,"#;
    let s = start(extra, &["--write-timeout", "1.5", "--threads", "1"]);
    let before = rss_kib(&s);
    let mut c = Raw::connect(s.addr);
    // Pipeline requests for 100 kB responses and never read. pyrs stops
    // reading when its unsent output passes the bound, so the writes block
    // (or fail, once pyrs gives up on the connection).
    let one = get("/big", "");
    let batch = one.repeat(256);
    c.stream.set_write_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut sent = 0usize;
    let limit = 64 << 20;
    while sent < limit {
        match c.stream.write(batch.as_bytes()) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(sent < limit, "pyrs kept reading {sent} bytes of requests from a client that reads nothing");
    let grown = rss_kib(&s).saturating_sub(before);
    assert!(grown < 64 * 1024, "server memory grew by {grown} KiB");
    // With nothing read for write_timeout, pyrs closes the connection (its
    // descriptor goes; reading before that would be progress). The count is
    // taken now: the connection is open (pyrs read from it) and the pool
    // threads' own descriptors exist.
    let fds = open_fds(&s);
    common::wait_until(30, "the connection to be closed", || open_fds(&s) < fds);
    c.read_until_close(Duration::from_secs(30));
    assert!(c.eof, "connection still open after write_timeout");
    let answered = c.buf.len() / 100_000;
    assert!(answered < sent / one.len(), "all {answered} requests answered: the connection was not closed");
    // The server is fine.
    let mut c = Raw::connect(s.addr);
    c.send(get("/hello", "").as_bytes());
    assert_eq!(c.response(false), text("world"));
}

#[test]
fn max_connections_refuses_quickly() {
    let s = start("", &["--max-connections", "3"]);
    let mut open: Vec<Raw> = (0..3).map(|_| Raw::connect(s.addr)).collect();
    for c in &mut open {
        c.send(get("/hello", "").as_bytes());
        assert_eq!(c.response(false), text("world"));
    }
    // The fourth is refused at once with 503, never left hanging.
    for _ in 0..5 {
        let t = Instant::now();
        let mut extra = Raw::connect(s.addr);
        extra.send(get("/hello", "").as_bytes());
        let got = extra.read_to_close(2.0);
        // At once: well before header_timeout (10 s) could have closed it.
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!(got, response(503, &[], "text/plain; charset=utf-8", "Server too busy\n", Some("close")));
    }
    // The ones already open still work; once one closes, a new one is served.
    open[0].send(get("/hello", "").as_bytes());
    assert_eq!(open[0].response(false), text("world"));
    drop(open.pop());
    let deadline = Instant::now() + common::generous(3);
    loop {
        let mut c = Raw::connect(s.addr);
        c.send(get("/hello", "").as_bytes());
        if c.response_or_close() == text("world") {
            break;
        }
        assert!(Instant::now() < deadline, "no slot freed; last answer {:?}", norm(&c.buf));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts the test project under `ulimit -n LIMIT` (soft and hard).
fn start_with_fd_limit(limit: usize) -> Server {
    use std::process::Command;
    let p = project("");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
        .arg(common::BIN)
        .arg(p.file())
        .args(["--bind", "127.0.0.1:0", "--keepalive-timeout", "60"])
        .env_remove("VIRTUAL_ENV");
    Server::spawn(cmd)
}

#[test]
fn accept_errors_do_not_spin() {
    let s = start_with_fd_limit(64);
    // Fill every descriptor the server may open with served keep-alive connections.
    let mut served = Vec::new();
    let mut waiting = Vec::new();
    while waiting.is_empty() {
        assert!(served.len() < 64, "never ran out of descriptors");
        let mut c = Raw::connect(s.addr);
        c.send(get("/hello", "").as_bytes());
        // Served, or left queued because accept failed (pyrs logs that).
        let deadline = Instant::now() + common::RESPONSE_WAIT;
        loop {
            if response_len(&c.buf, false).is_some() {
                assert_eq!(c.response(false), text("world"));
                served.push(c);
                break;
            }
            if s.stderr().contains("accept failed") {
                waiting.push(c);
                break;
            }
            assert!(Instant::now() < deadline && !c.eof, "neither served nor refused: {:?}", norm(&c.buf));
            c.read_for(Duration::from_millis(20));
        }
    }
    assert!(served.len() >= 5, "only {} connections before EMFILE", served.len());
    waiting.extend((0..20).map(|_| Raw::connect(s.addr)));
    // Every accept now fails with EMFILE: pyrs must back off, not spin (a
    // busy loop shows in any second of CPU time, even on a loaded machine).
    let ticks = cpu_ticks(&s);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(&s) - ticks;
    // Clock ticks are 1/100 s: a spinning loop would use about 100.
    assert!(used <= 20, "server used {used} ticks in 1 s while accepts fail");
    // The connections it has still work.
    served[0].send(get("/hello", "").as_bytes());
    assert_eq!(served[0].response(false), text("world"));
    // Once descriptors are free again, the queued connections are served.
    served.truncate(1);
    for mut c in waiting {
        c.send(get("/hello", "Connection: close\r\n").as_bytes());
        let got = c.read_to_close(5.0);
        assert!(got.ends_with(&text_close("world")), "{got:?}");
    }
    s.wait_stderr("accept failed", 30);
}

#[test]
fn slowloris_500_connections_are_closed_in_time_while_others_are_served() {
    let timeout = Duration::from_secs(1);
    // How late a timeout may fire on a loaded machine (the loop below also
    // runs slower there); still far below "never".
    let slack = Duration::from_secs(5);
    let s = start("", &["--header-timeout", "1"]);
    // Counted once a request was served: the pool's own descriptors are
    // created after "Listening on".
    let mut first = Raw::connect(s.addr);
    first.send(get("/hello", "").as_bytes());
    assert_eq!(first.response(false), text("world"));
    let baseline = open_fds(&s);
    let addr = s.addr;
    // A normal client keeps making requests meanwhile.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let normal = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut served = 0;
            let mut worst = Duration::ZERO;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let mut c = Raw::connect(addr);
                c.send(get("/hello", "").as_bytes());
                assert_eq!(c.response(false), text("world"));
                c.send(get("/hello", "").as_bytes());
                assert_eq!(c.response(false), text("world"));
                worst = worst.max(t.elapsed());
                served += 2;
                std::thread::sleep(Duration::from_millis(20));
            }
            (served, worst)
        })
    };
    struct Slow {
        stream: TcpStream,
        opened: Instant,
        closed: Option<Instant>,
        got: Vec<u8>,
    }
    let mut slow: Vec<Slow> = (0..500)
        .map(|_| {
            let mut stream = common::connect(addr).expect("connect");
            let opened = Instant::now();
            stream.write_all(b"GET /hello HTTP/1.1\r\n").unwrap();
            stream.set_nonblocking(true).unwrap();
            Slow { stream, opened, closed: None, got: Vec::new() }
        })
        .collect();
    let start = Instant::now();
    let trickle = b"X-Slow-Header: 0123456789\r\n";
    let mut step = 0;
    while slow.iter().any(|c| c.closed.is_none()) && start.elapsed() < Duration::from_secs(30) {
        for c in slow.iter_mut().filter(|c| c.closed.is_none()) {
            let mut buf = [0u8; 1024];
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        c.closed = Some(Instant::now());
                        break;
                    }
                    Ok(n) => c.got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => {
                        c.closed = Some(Instant::now());
                        break;
                    }
                }
            }
            if c.closed.is_none() {
                let _ = c.stream.write(&trickle[step % trickle.len()..step % trickle.len() + 1]);
            }
        }
        step += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (served, worst) = normal.join().unwrap();
    let want = error(408, "request not received in time");
    for (i, c) in slow.iter().enumerate() {
        let closed = c.closed.unwrap_or_else(|| panic!("slow connection {i} still open after 30 s"));
        let lived = closed - c.opened;
        assert!(lived <= timeout + slack, "slow connection {i} lived {lived:?}");
        assert_eq!(norm(&c.got), want, "slow connection {i} lived {lived:?}");
    }
    assert!(served >= 4, "the normal client was served only {served} times");
    assert!(worst < slack, "a normal request took {worst:?}");
    // The server released the descriptors, too.
    drop(slow);
    common::wait_until(3, "the server to release the slow connections' descriptors", || open_fds(&s) <= baseline + 4);
}
