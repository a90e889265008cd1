//! Criterion benches of the HTTP core without Python: the request-head
//! parser, the router with 100 routes, and the response encoder.
//!
//! `cargo bench --bench http` (add `-- parse` etc. to filter).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pyrs::http::encode::{ResponseContext, ResponseWriter};
use pyrs::http::Limits;
use pyrs::http::{head, Version};
use pyrs::router::{RouteMatch, Router};
use std::hint::black_box;

/// What `wrk` sends for GET /hello.
const WRK_GET: &[u8] = b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1:8094\r\n\r\n";
/// A browser-like request: 10 header fields, a query string.
const BROWSER_GET: &[u8] = b"GET /api/v1/users/42/orders?page=2&sort=desc HTTP/1.1\r\n\
Host: example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Connection: keep-alive\r\n\
Cookie: session=0123456789abcdef0123456789abcdef; theme=dark\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Cache-Control: max-age=0\r\n\
If-None-Match: \"5d8c72a5edda8d6a\"\r\n\r\n";
const POST_HEAD: &[u8] =
    b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1:8094\r\nContent-Type: application/octet-stream\r\nContent-Length: 1024\r\n\r\n";

fn parser(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("parse");
    for (name, input) in
        [("wrk_get", WRK_GET), ("browser_get_10_headers", BROWSER_GET), ("post_content_length", POST_HEAD)]
    {
        assert!(matches!(head::parse(input, &limits), Ok(Some(_))), "{name} must parse");
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_function(name, |b| b.iter(|| head::parse(black_box(input), &limits)));
    }
    // 16 pipelined requests in one buffer, parsed one after another (test b's input).
    let pipelined: Vec<u8> = WRK_GET.repeat(16);
    g.throughput(Throughput::Elements(16));
    g.bench_function("wrk_get_x16_pipelined", |b| {
        b.iter(|| {
            let mut at = 0;
            while let Ok(Some((h, len))) = head::parse(black_box(&pipelined[at..]), &limits) {
                black_box(h);
                at += len;
            }
            at
        })
    });
    g.finish();
}

/// 100 routes: 60 exact, 30 parameterised, 9 prefixes and the catch-all.
fn hundred_routes() -> Router<usize> {
    let mut r = Router::new();
    let mut n = 0;
    let mut add = |path: String, methods: Option<Vec<String>>| {
        r.add(&path, methods, n).unwrap();
        n += 1;
    };
    for i in 0..60 {
        add(format!("/api/v1/resource{i}"), Some(vec!["GET".into(), "POST".into()]));
    }
    for i in 0..30 {
        add(format!("/api/v1/items{i}/{{id}}/detail"), Some(vec!["GET".into()]));
    }
    for i in 0..9 {
        add(format!("/static{i}/*"), None);
    }
    add("/*".into(), None);
    assert_eq!(n, 100);
    r
}

fn router(c: &mut Criterion) {
    let r = hundred_routes();
    let mut g = c.benchmark_group("router_100_routes");
    let cases = [
        ("exact", "GET", "/api/v1/resource37"),
        ("param_last", "GET", "/api/v1/items29/12345/detail"),
        ("param_first", "GET", "/api/v1/items0/12345/detail"),
        ("prefix", "GET", "/static4/css/site.css"),
        ("catch_all", "GET", "/nothing/matches/this"),
        ("method_not_allowed", "DELETE", "/api/v1/resource5"),
    ];
    for (name, method, path) in cases {
        assert!(!matches!(r.route(method, path), RouteMatch::NotFound), "{name}");
        g.bench_function(name, |b| b.iter(|| r.route(black_box(method), black_box(path))));
    }
    g.finish();
}

/// 10,000 parameterised routes (`/items{i}/{id}/detail`): the last one must
/// cost about what the first does (the router walks a segment tree, it does
/// not scan the patterns).
fn router_10k_params(c: &mut Criterion) {
    let mut r = Router::new();
    for i in 0..10_000usize {
        r.add(&format!("/items{i}/{{id}}/detail"), Some(vec!["GET".into()]), i).unwrap();
    }
    let mut g = c.benchmark_group("router_10k_params");
    for (name, path, want) in [("first", "/items0/12345/detail", 0), ("last", "/items9999/12345/detail", 9999)] {
        assert!(matches!(r.route("GET", path), RouteMatch::Found { target, .. } if *target == want), "{name}");
        g.bench_function(name, |b| b.iter(|| r.route(black_box("GET"), black_box(path))));
    }
    g.finish();
}

fn encoder(c: &mut Criterion) {
    const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";
    let ctx = ResponseContext { keep_alive: true, head_only: false, version: Version::Http11 };
    let body_1k = vec![b'x'; 1024];
    let mut out = Vec::with_capacity(4096);
    let mut g = c.benchmark_group("encode");
    g.bench_function("text_world", |b| {
        b.iter(|| {
            out.clear();
            ResponseWriter::begin(&mut out, 200, DATE, ctx).finish(b"text/plain; charset=utf-8", black_box(b"world"));
            out.len()
        })
    });
    g.bench_function("octets_1k", |b| {
        b.iter(|| {
            out.clear();
            ResponseWriter::begin(&mut out, 200, DATE, ctx).finish(b"application/octet-stream", black_box(&body_1k));
            out.len()
        })
    });
    g.bench_function("two_headers_checked", |b| {
        b.iter(|| {
            out.clear();
            let mut w = ResponseWriter::begin(&mut out, 201, DATE, ctx);
            w.header(b"X-Request-Id", black_box(b"4f1d0c2a-9b7e-4e8a-8f3c-2d6b1a0e9c55")).unwrap();
            w.header(b"Cache-Control", black_box(b"no-store")).unwrap();
            w.finish(b"application/json", black_box(b"{\"ok\":true}"));
            out.len()
        })
    });
    // Test b's output: 16 responses appended to one buffer, written once.
    g.throughput(Throughput::Elements(16));
    g.bench_function("text_world_x16", |b| {
        b.iter(|| {
            out.clear();
            for _ in 0..16 {
                ResponseWriter::begin(&mut out, 200, DATE, ctx).finish(b"text/plain; charset=utf-8", b"world");
            }
            out.len()
        })
    });
    g.finish();
}

criterion_group!(benches, parser, router, router_10k_params, encoder);
criterion_main!(benches);
