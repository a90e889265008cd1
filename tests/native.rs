//! The HTTP core without Python: a `pyrs::native::NativeApp` served in this
//! process on an ephemeral 127.0.0.1 port, checked over real sockets.

use pyrs::native::{self, NativeApp};
use pyrs::server::{self, listener, signals::SignalPipe, ServerConfig};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reads one response (Content-Length framed, or bodiless); returns (head, body).
fn read_response(s: &mut TcpStream, pending: &mut Vec<u8>) -> (String, Vec<u8>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(pending[..end].to_vec()).unwrap();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .map(|v| v.trim().parse::<usize>().unwrap())
                .unwrap_or(0);
            if pending.len() >= end + 4 + len {
                let body = pending[end + 4..end + 4 + len].to_vec();
                pending.drain(..end + 4 + len);
                return (head, body);
            }
        }
        assert!(Instant::now() < deadline, "no complete response; got {:?}", String::from_utf8_lossy(pending));
        let mut buf = [0u8; 4096];
        let n = read_retry(s, &mut buf);
        assert!(n > 0, "connection closed; got {:?}", String::from_utf8_lossy(pending));
        pending.extend_from_slice(&buf[..n]);
    }
}

/// One read, retrying EINTR (this process handles SIGTERM below).
fn read_retry(s: &mut TcpStream, buf: &mut [u8]) -> usize {
    loop {
        match s.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other.expect("read"),
        }
    }
}

fn exchange(addr: SocketAddr, raw: &[u8]) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(raw).unwrap();
    read_response(&mut s, &mut Vec::new())
}

#[test]
fn native_app_through_the_core() {
    let app = NativeApp::echo_example()
        .route("/panic", None, |_, _| panic!("a bug in a handler"))
        .unwrap()
        .route("/users/{id}", Some(&["GET"]), |req, res| {
            let id = req.params.iter().find(|(k, _)| k == "id").map(|(_, v)| v.as_str()).unwrap_or("");
            native::text(res, 200, &format!("user {id}"))
        })
        .unwrap();
    let signals = SignalPipe::install().unwrap();
    let listener = listener::bind_tcp("127.0.0.1:0".parse().unwrap(), 128).unwrap();
    let addr = listener.tcp_addr().unwrap();
    let cfg = ServerConfig {
        thread_count: 2,
        tcp_nodelay: true,
        shutdown_timeout: Duration::from_secs(5),
        limits: Default::default(),
        activity: None,
        observer: Arc::new(pyrs::observe::Observer::plain(2, 4)),
        shared_accept: false,
        accept_share: None,
        stuck_after: None,
        on_serving: None,
        reload_check: None,
        repeat_signal_exits: true,
    };
    let server = std::thread::spawn(move || server::serve(Arc::new(app), vec![listener], signals, cfg));

    let (head, body) = exchange(addr, b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\nServer: pyrs\r\n") && head.contains("\r\nDate: "), "{head}");
    assert!(head.contains("Content-Type: text/plain; charset=utf-8"), "{head}");
    assert_eq!(body, b"world");

    let payload: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let mut raw = format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", payload.len()).into_bytes();
    raw.extend_from_slice(&payload);
    let (head, body) = exchange(addr, &raw);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains("application/octet-stream"), "{head}");
    assert_eq!(body, payload);

    let (_, body) = exchange(
        addr,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    );
    assert_eq!(body, b"abcde");

    let (head, body) = exchange(addr, b"GET /json HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(head.contains("Content-Type: application/json"), "{head}");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v.as_object().map(|o| o.len()), Some(10));

    let (head, body) = exchange(addr, b"GET /users/42%20x HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"user 42 x");

    let (head, _) = exchange(addr, b"GET /nothing/here HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (head, _) = exchange(addr, b"POST /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 405") && head.contains("\r\nAllow: GET, HEAD"), "{head}");

    // Pipelined requests in one write are answered in order on one connection.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(
        b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\nPOST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\none\
          GET /users/7 HTTP/1.1\r\nHost: t\r\n\r\nHEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .unwrap();
    let mut pending = Vec::new();
    assert_eq!(read_response(&mut s, &mut pending).1, b"world");
    assert_eq!(read_response(&mut s, &mut pending).1, b"one");
    assert_eq!(read_response(&mut s, &mut pending).1, b"user 7");
    // HEAD: Content-Length of the GET response, no body follows.
    let end = loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let mut buf = [0u8; 1024];
        let n = read_retry(&mut s, &mut buf);
        assert!(n > 0);
        pending.extend_from_slice(&buf[..n]);
    };
    assert!(String::from_utf8_lossy(&pending[..end]).contains("Content-Length: 5"));
    assert_eq!(pending.len(), end + 4);

    // A panic in a handler call is contained to its request: 500, and the
    // same pool thread serves on.
    for _ in 0..4 {
        let (head, _) = exchange(addr, b"GET /panic HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 500"), "{head}");
        let (_, body) = exchange(addr, b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(body, b"world");
    }
    assert!(!server.is_finished());

    // SIGTERM (caught by the server's handler, not fatal to this process): serve returns.
    signal_hook::low_level::raise(signal_hook::consts::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.is_finished() {
        assert!(Instant::now() < deadline, "server did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.join().unwrap().unwrap();
}
