//! A small mutation fuzzer for the stable toolchain (no libFuzzer, no
//! coverage feedback): mutates a seed corpus of requests and bodies and runs
//! the same checks as the cargo-fuzz targets.
//!
//! cargo run --release --manifest-path fuzz/Cargo.toml --no-default-features --bin stable -- [EXECS] [SEED]
//!
//! Each check runs EXECS times (default 1,000,000). A finding is written to
//! fuzz/artifacts/stable-<target>-<n> and the run exits with status 1.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

const SEEDS: &[&[u8]] = &[
    b"\0GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"\x01POST /echo?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
    b"\0POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n",
    b"\0GET http://h/p HTTP/1.0\nConnection: keep-alive\n\n",
    b"\x01OPTIONS * HTTP/1.1\r\nHost: [::1]:80\r\nContent-Length: 1, 1\r\n\r\n",
    b"\0\0\x05\x03;a=b\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: 1\r\n\r\n",
    b"\x02\x10\x40a\r\n0123456789\r\n0;x\r\n\r\n",
    b"\x1d\x01\x02abcdefghi",
];

const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"\0",
    b"0",
    b"f",
    b"ffffffffffffffff",
    b"HTTP/1.1",
    b"HTTP/2.0",
    b"Host: ",
    b"Content-Length: ",
    b"Transfer-Encoding: chunked",
    b"Connection: close",
    b"Expect: 100-continue",
    b"\r\n\r\n",
    b"0\r\n\r\n",
];

/// A check's name and function.
type Target = (&'static str, fn(&[u8]));

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut d = corpus[rng.below(corpus.len())].clone();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(d.len() + 1);
        match rng.below(7) {
            0 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] ^= 1 << rng.below(8);
            }
            1 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] = rng.next() as u8;
            }
            2 => d.insert(at, rng.next() as u8),
            3 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                d.splice(at..at, t.iter().copied());
            }
            4 if !d.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(d.len());
                d.drain(at.min(end)..end);
            }
            5 if !d.is_empty() => {
                let start = rng.below(d.len());
                let end = (start + 1 + rng.below(32)).min(d.len());
                let piece = d[start..end].to_vec();
                d.splice(at..at, piece);
            }
            _ => {
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len() + 1);
                d.truncate(at);
                d.extend_from_slice(&other[from..]);
            }
        }
    }
    d.truncate(4096);
    d
}

fn main() {
    let mut args = std::env::args().skip(1);
    let execs: u64 = args.next().and_then(|a| a.replace('_', "").parse().ok()).unwrap_or(1_000_000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0x9e37_79b9_7f4a_7c15);
    std::panic::set_hook(Box::new(|_| {}));
    let targets: [Target; 2] = [("head_parser", pyrs_fuzz::head_parser), ("body_decoder", pyrs_fuzz::body_decoder)];
    for (name, check) in targets {
        let mut rng = Rng(seed | 1);
        let mut corpus: Vec<Vec<u8>> = SEEDS.iter().map(|s| s.to_vec()).collect();
        let started = Instant::now();
        for n in 0..execs {
            let input = mutate(&mut rng, &corpus);
            if catch_unwind(AssertUnwindSafe(|| check(&input))).is_err() {
                let _ = std::fs::create_dir_all("fuzz/artifacts");
                let path = format!("fuzz/artifacts/stable-{name}-{n}");
                let _ = std::fs::write(&path, &input);
                let _ = std::panic::take_hook();
                eprintln!("{name}: finding after {n} executions, input saved to {path}");
                check(&input);
                std::process::exit(1);
            }
            // Keep some mutants as new seeds so inputs drift away from the start.
            if rng.below(64) == 0 && corpus.len() < 4096 {
                corpus.push(input);
            }
        }
        println!("{name}: {execs} executions, 0 crashes, {:.1} s", started.elapsed().as_secs_f64());
    }
}
