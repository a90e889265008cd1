//! The design question behind src/server/event_loop.rs: what would it cost
//! to hand each parsed request to a separate handler thread and the
//! response back, instead of running the handler on the thread that parsed
//! it? Measures one request's round trip through two crossbeam channels
//! between two threads (the receiving side blocks, as an idle pool thread
//! would), against an inline call, and a batch of 16 handed over at once.
//!
//! `cargo bench --bench handoff`

use criterion::{criterion_group, criterion_main, Criterion};
use crossbeam_channel::{bounded, unbounded};
use std::hint::black_box;
use std::time::Instant;

fn handler(x: u64) -> u64 {
    black_box(x.wrapping_mul(31).wrapping_add(7))
}

fn handoff(c: &mut Criterion) {
    let mut g = c.benchmark_group("handoff");
    g.bench_function("inline call", |b| b.iter(|| handler(black_box(42))));

    g.bench_function("round trip to a blocked thread", |b| {
        b.iter_custom(|iters| {
            let (to_worker, jobs) = unbounded::<u64>();
            let (to_io, results) = bounded::<u64>(1);
            let worker = std::thread::spawn(move || {
                while let Ok(x) = jobs.recv() {
                    if to_io.send(handler(x)).is_err() {
                        break;
                    }
                }
            });
            let start = Instant::now();
            for i in 0..iters {
                to_worker.send(i).unwrap();
                black_box(results.recv().unwrap());
            }
            let took = start.elapsed();
            drop(to_worker);
            worker.join().unwrap();
            took
        })
    });

    g.bench_function("round trip of a batch of 16 (per request)", |b| {
        b.iter_custom(|iters| {
            let (to_worker, jobs) = unbounded::<Vec<u64>>();
            let (to_io, results) = bounded::<Vec<u64>>(1);
            let worker = std::thread::spawn(move || {
                while let Ok(batch) = jobs.recv() {
                    if to_io.send(batch.into_iter().map(handler).collect()).is_err() {
                        break;
                    }
                }
            });
            let rounds = iters.div_ceil(16);
            let start = Instant::now();
            for i in 0..rounds {
                to_worker.send((0..16).map(|k| i + k).collect()).unwrap();
                black_box(results.recv().unwrap());
            }
            let took = start.elapsed();
            drop(to_worker);
            worker.join().unwrap();
            took.mul_f64(iters as f64 / (rounds * 16) as f64)
        })
    });
    g.finish();
}

criterion_group!(benches, handoff);
criterion_main!(benches);
