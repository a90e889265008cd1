//! Criterion bench of the Python call path: a parsed request goes in (the
//! `pyrs.Request` object is built), the handler is called, and its return
//! value is converted into the response bytes. No sockets.
//!
//! `cargo bench --bench python_call`. The handlers are the ones compare.sh
//! serves (benches/peers/pyrs_app/main.py), loaded through `PyApp::load`.

use criterion::{criterion_group, criterion_main, Criterion};
use pyo3::Python;
use pyrs::app::{App, Responder, Worker};
use pyrs::config::{Limits, RouteSpec};
use pyrs::http::encode::ResponseContext;
use pyrs::http::{head, Request, Version};
use pyrs::python::{interpreter, PyApp};
use pyrs::router::RouteMatch;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// benches/peers: the handlers compare.sh serves, and the payload they share.
fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches").join("peers")
}

fn spec(path: &str, handler: &str) -> RouteSpec {
    RouteSpec {
        path: path.into(),
        module: "main".into(),
        class: "Bench".into(),
        handler: handler.into(),
        methods: None,
        r#static: None,
        batch: None,
    }
}

fn request(raw: &[u8], body: &[u8]) -> Request {
    let (head, _) = head::parse(raw, &Limits::default()).unwrap().unwrap();
    Request {
        head,
        body: body.to_vec(),
        peer: pyrs::http::Peer::Tcp("127.0.0.1:40000".parse().unwrap()),
        params: Vec::new(),
        id: Default::default(),
    }
}

fn python_call(c: &mut Criterion) {
    interpreter::initialize(None).expect("Python starts");
    Python::attach(|py| interpreter::prepend_sys_path(py, &peers_dir())).expect("sys.path");
    let dir = peers_dir().join("pyrs_app");
    let routes = [
        spec("/hello", "hello"),
        spec("/echo", "echo"),
        spec("/json", "json"),
        spec("/tuple", "tuple"),
        spec("/noop", "noop"),
        spec("/fields", "fields"),
    ];
    let app = PyApp::load(&dir, &routes, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    let date = *b"Sun, 06 Nov 1994 08:49:37 GMT";
    let ctx = ResponseContext { keep_alive: true, head_only: false, version: Version::Http11 };
    let stopping = AtomicBool::new(false);
    let closes = std::cell::Cell::new(false);
    let body_1k = vec![b'x'; 1024];
    let cases: Vec<(&str, Request)> = vec![
        ("hello_str", request(b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", b"")),
        ("echo_bytes_1k", request(b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1024\r\n\r\n", &body_1k)),
        ("json_dict_10_keys", request(b"GET /json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", b"")),
        ("tuple_status_headers", request(b"GET /tuple HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", b"")),
        ("none_204", request(b"GET /noop HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", b"")),
        ("read_fields", request(b"GET /fields?q=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", b"")),
    ];

    app.run_worker(0, &mut |worker| {
        let mut g = c.benchmark_group("python_call");
        let mut out = pyrs::http::output::Output::new();
        for (name, req) in &cases {
            let RouteMatch::Found { target: route, .. } = app.router().route(req.head.method(), req.head.path()) else {
                panic!("{name}: no route");
            };
            // One call outside the timer: the response must be a success.
            out.tail().clear();
            worker.handle(route, req.clone(), Responder::new(&mut out, &date, ctx, &stopping, &closes));
            assert!(out.tail().starts_with(b"HTTP/1.1 2"), "{name}: {}", String::from_utf8_lossy(out.tail()));
            g.bench_function(*name, |b| {
                b.iter_batched(
                    || req.clone(),
                    |req| {
                        out.tail().clear();
                        worker.handle(route, req, Responder::new(&mut out, &date, ctx, &stopping, &closes));
                        out.tail().len()
                    },
                    criterion::BatchSize::SmallInput,
                )
            });
        }
        g.finish();
    });
}

criterion_group!(benches, python_call);
criterion_main!(benches);
