//! The command line: `pyrs PROJECT_FILE [options]`. Flags override the
//! project file. Usage errors exit with status 2 (clap's convention).

use crate::config::{parse_log_level, Config};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "pyrs", version, about = "Serve Python handler classes over HTTP/1.1", long_about = None)]
pub struct Cli {
    /// The project file (JSON5) listing the routes and settings.
    #[arg(value_name = "PROJECT_FILE")]
    pub project: PathBuf,

    /// Listen address, overriding http_listen_address and http_listen_port (IPv6 in brackets: [::1]:8094).
    #[arg(long, value_name = "HOST:PORT")]
    pub bind: Option<SocketAddr>,

    /// Size of the handler thread pool (thread_count).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    /// Worker processes under a supervisor (0 = one per CPU); absent: a single process.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub workers: Option<u16>,

    /// Validate the project file and import every module, class and handler, then exit.
    #[arg(long)]
    pub check: bool,

    /// off, error, warn, info, debug or trace.
    #[arg(long, value_name = "LEVEL", value_parser = parse_log_level)]
    pub log_level: Option<log::LevelFilter>,

    /// Virtualenv whose packages handler code imports (default: $VIRTUAL_ENV).
    #[arg(long, value_name = "PATH")]
    pub venv: Option<PathBuf>,

    /// Seconds to finish in-flight requests after SIGINT/SIGTERM.
    #[arg(long, value_name = "SECONDS", value_parser = seconds)]
    pub shutdown_timeout: Option<Duration>,

    /// Longest request line in bytes (414 beyond).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(16..))]
    pub max_request_line: Option<u64>,

    /// Largest request head in bytes (431 beyond).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(64..))]
    pub max_header_bytes: Option<u64>,

    /// Most header fields in a request (431 beyond; at most 256).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=256))]
    pub max_headers: Option<u64>,

    /// Largest request body in bytes (413 beyond).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(0..))]
    pub max_body_bytes: Option<u64>,

    /// Seconds a client has to send a complete request head (408 beyond).
    #[arg(long, value_name = "SECONDS", value_parser = seconds)]
    pub header_timeout: Option<Duration>,

    /// Seconds an idle keep-alive connection stays open.
    #[arg(long, value_name = "SECONDS", value_parser = seconds)]
    pub keepalive_timeout: Option<Duration>,

    /// Seconds a client has to send a request body (408 beyond).
    #[arg(long, value_name = "SECONDS", value_parser = seconds)]
    pub body_timeout: Option<Duration>,

    /// Seconds a client may leave a response unread before it is closed.
    #[arg(long, value_name = "SECONDS", value_parser = seconds)]
    pub write_timeout: Option<Duration>,

    /// Most open connections; beyond it new ones get 503 and are closed.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
}

fn seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
        return Err(format!("{s}: seconds must be in (0, 86400]"));
    }
    Ok(Duration::from_secs_f64(v))
}

impl Cli {
    /// Applies the flags on top of the project file's values.
    pub fn apply(&self, cfg: &mut Config) {
        if let Some(addr) = self.bind {
            cfg.http_listen_address = addr.ip();
            cfg.http_listen_port = addr.port();
        }
        if let Some(t) = self.threads {
            cfg.thread_count = t as usize;
        }
        if let Some(w) = self.workers {
            cfg.workers.count = Some(w as usize);
        }
        if let Some(l) = self.log_level {
            cfg.log_level = l;
        }
        if let Some(t) = self.shutdown_timeout {
            cfg.shutdown_timeout = t;
        }
        let l = &mut cfg.limits;
        let set = |dst: &mut usize, v: Option<u64>| {
            if let Some(v) = v {
                *dst = v as usize;
            }
        };
        set(&mut l.max_request_line, self.max_request_line);
        set(&mut l.max_header_bytes, self.max_header_bytes);
        set(&mut l.max_headers, self.max_headers);
        set(&mut l.max_body_bytes, self.max_body_bytes);
        set(&mut l.max_connections, self.max_connections);
        for (dst, v) in [
            (&mut l.header_timeout, self.header_timeout),
            (&mut l.keepalive_timeout, self.keepalive_timeout),
            (&mut l.body_timeout, self.body_timeout),
            (&mut l.write_timeout, self.write_timeout),
        ] {
            if let Some(v) = v {
                *dst = v;
            }
        }
    }
}
