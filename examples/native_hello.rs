//! The no-Python ceiling: the routes of `examples/echo` served by the pyrs
//! HTTP core from Rust handlers (`pyrs::native`), with no interpreter.
//!
//! `cargo run --release --example native_hello -- --bind 127.0.0.1:8095 [--threads N]`
//!
//! Routes: `GET /hello` -> `world`, `/echo` -> the body, `/json` -> a 10-key
//! JSON object, anything else -> 404. Stops on SIGINT/SIGTERM.

use pyrs::native::NativeApp;
use pyrs::server::{self, listener, signals::SignalPipe, ServerConfig};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

const USAGE: &str = "usage: native_hello [--bind HOST:PORT] [--threads N]";

fn main() -> ExitCode {
    pyrs::logging::init(log::LevelFilter::Warn);
    let mut bind: SocketAddr = "127.0.0.1:8095".parse().expect("valid default address");
    let mut threads = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "--bind" | "--threads" => args.next(),
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => None,
        };
        let parsed = match (arg.as_str(), value) {
            ("--bind", Some(v)) => v.parse().map(|a| bind = a).map_err(|e| format!("--bind {v}: {e}")),
            ("--threads", Some(v)) => match v.parse::<usize>() {
                Ok(n) if n >= 1 => {
                    threads = n;
                    Ok(())
                }
                _ => Err(format!("--threads {v}: expected an integer >= 1")),
            },
            _ => Err(format!("unexpected argument {arg:?}")),
        };
        if let Err(msg) = parsed {
            eprintln!("error: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    match run(bind, threads) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    }
}

fn run(bind: SocketAddr, threads: usize) -> Result<(), String> {
    let signals = SignalPipe::install().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let config = pyrs::config::Limits::default();
    let listener = listener::bind_tcp(bind, 1024)?;
    let bound = listener.tcp_addr().ok_or("cannot read the listening address")?;
    println!("Address: {}, port: {}, threads: {threads}", bound.ip(), bound.port());
    println!("Listening on http://{bound}");
    let cfg = ServerConfig {
        thread_count: threads,
        tcp_nodelay: true,
        shutdown_timeout: std::time::Duration::from_secs(10),
        limits: config,
        activity: None,
        observer: Arc::new(pyrs::observe::Observer::plain(threads, 3)),
        shared_accept: false,
        accept_share: None,
        stuck_after: None,
        on_serving: None,
        reload_check: None,
        repeat_signal_exits: true,
    };
    server::serve(Arc::new(NativeApp::echo_example()), vec![listener], signals, cfg)
        .map(|_| ())
        .map_err(|e| format!("server failed: {e}"))
}
