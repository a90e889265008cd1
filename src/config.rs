//! `project.pyrs`: the project file's keys, their types, defaults and ranges.
//!
//! The file is JSON5 (comments, trailing commas). Every error names the file
//! and the line:column it refers to, including unknown keys (a typo such as
//! `thread_cout` is an error, never silently ignored) and duplicate routes.
//! Config is read first and owns every key's syntax and checks, including
//! the `access_log_format` template (`access_format`); the modules it
//! configures import it, never the other way round.

use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod access_format;

pub use crate::http::forwarded::TrustedProxies;

// Limits and the method list belong to the HTTP layer; re-exported here
// because they are configured in project.pyrs.
pub use crate::http::limits::{Limits, KNOWN_METHODS};

/// One entry of `modules`: a route served by a method of a Python class.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// URL path pattern: `/echo`, `/users/{id}`, `/static/*`, `/*`.
    pub path: String,
    /// Python module name, imported with the project directory first on sys.path.
    #[serde(default)]
    pub module: String,
    /// Class in that module; instantiated once per (module, class).
    #[serde(default)]
    pub class: String,
    /// Method of that class called with the request.
    #[serde(default)]
    pub handler: String,
    /// Allowed HTTP methods; absent means every method (GET and HEAD for a
    /// static route).
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// A directory (relative to the project file) served by this `/prefix/*`
    /// route instead of a handler.
    #[serde(default)]
    pub r#static: Option<String>,
    /// Adaptive batching: the handler is called with a list of requests.
    #[serde(default, deserialize_with = "batch_spec")]
    pub batch: Option<BatchSpec>,
}

/// A route's `"batch"`: concurrent requests to it are grouped into one call
/// `handler(self, requests)` (see `server::batch`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BatchSpec {
    /// Most requests in one call.
    #[serde(default = "BatchSpec::default_max_size", deserialize_with = "batch_max_size")]
    pub max_size: usize,
    /// Longest a request waits for others to join its batch (`max_wait_ms`).
    #[serde(rename = "max_wait_ms", default = "BatchSpec::default_max_wait", deserialize_with = "batch_max_wait")]
    pub max_wait: Duration,
    /// Batches of this route running at once (each on its own thread).
    #[serde(default = "BatchSpec::default_concurrent", deserialize_with = "batch_concurrent")]
    pub max_concurrent_batches: usize,
}

impl BatchSpec {
    pub const MAX_SIZE: usize = 4096;
    pub const MAX_WAIT_MS: f64 = 60_000.0;
    pub const MAX_CONCURRENT: usize = 64;

    fn default_max_size() -> usize {
        64
    }
    fn default_max_wait() -> Duration {
        Duration::from_millis(2)
    }
    fn default_concurrent() -> usize {
        1
    }
}

impl Default for BatchSpec {
    fn default() -> Self {
        BatchSpec {
            max_size: Self::default_max_size(),
            max_wait: Self::default_max_wait(),
            max_concurrent_batches: Self::default_concurrent(),
        }
    }
}

impl RouteSpec {
    pub fn is_static(&self) -> bool {
        self.r#static.is_some()
    }
}

/// The validated project configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The project file, as given.
    pub file: PathBuf,
    /// Directory of the project file; first on Python's sys.path.
    pub project_dir: PathBuf,
    pub http_listen_address: IpAddr,
    pub http_listen_port: u16,
    /// Where to listen: `bind`, `unix_socket` and `fd` together, else
    /// `http_listen_address:http_listen_port`. Never empty.
    pub listeners: Vec<BindSpec>,
    /// The `bind`, `unix_socket` and `fd` keys as set (listeners come from them).
    pub bind: Vec<BindSpec>,
    pub unix_socket: Option<PathBuf>,
    pub fd: Vec<i32>,
    /// Permissions of the Unix sockets pyrs creates (None: as the umask leaves them).
    pub unix_socket_mode: Option<u32>,
    /// The virtualenv handler code imports from (`venv`, else `$VIRTUAL_ENV`).
    pub venv: Option<PathBuf>,
    /// Peers whose Forwarded / X-Forwarded-* headers are believed.
    pub forwarded_allow_ips: TrustedProxies,
    /// Where each key's value came from (for `--print-config`).
    pub sources: Vec<(&'static str, Source)>,
    pub thread_count: usize,
    pub tcp_nodelay: bool,
    /// Responses carry `Server: pyrs` (a handler's own `Server` replaces it).
    pub server_header: bool,
    pub listen_backlog: u32,
    pub shutdown_timeout: Duration,
    pub log_level: log::LevelFilter,
    pub limits: Limits,
    pub workers: Workers,
    pub observe: Observability,
    pub modules: Vec<RouteSpec>,
}

/// Where the access log goes (`access_log`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AccessLog {
    #[default]
    Off,
    Stderr,
    File(PathBuf),
}

/// Access log, admin listener and health probe settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observability {
    pub access_log: AccessLog,
    /// `combined`, `json` or a template of `{field}`s (checked when loaded).
    pub access_log_format: String,
    /// Serve /metrics, /healthz, /readyz and the status page here.
    pub admin_listen: Option<SocketAddr>,
    /// Allow a non-loopback `admin_listen`.
    pub admin_allow_remote: bool,
    /// Answer readiness at this path on the main listener.
    pub health_path: Option<String>,
}

impl Default for Observability {
    fn default() -> Self {
        Observability {
            access_log: AccessLog::Off,
            access_log_format: "combined".into(),
            admin_listen: None,
            admin_allow_remote: false,
            health_path: None,
        }
    }
}

impl Observability {
    /// Checks what depends on several keys (run once every layer is applied).
    pub fn validate(&self) -> Result<(), String> {
        access_format::parse(&self.access_log_format)?;
        match self.admin_listen {
            Some(addr) if !addr.ip().is_loopback() && !self.admin_allow_remote => Err(format!(
                "admin_listen {addr} is not a loopback address; the admin endpoints show internals \
                 (set admin_allow_remote: true to serve them on it anyway)"
            )),
            _ => Ok(()),
        }
    }
}

/// Worker processes (`workers` and friends). Absent `workers`: one process,
/// no supervisor.
#[derive(Debug, Clone, PartialEq)]
pub struct Workers {
    /// None: single process. Some(n): a supervisor with n workers (0 = one per CPU).
    pub count: Option<usize>,
    /// Import and instantiate handlers once, before forking the workers.
    pub preload: bool,
    /// Recycle a worker after this many requests (0: never).
    pub max_requests: u64,
    /// Add up to this many to max_requests, at random per worker.
    pub max_requests_jitter: u64,
    /// Replace a worker whose private memory (USS) exceeds this many MiB (0: never).
    pub max_rss_mb: u64,
    /// Kill and replace a worker whose handler runs longer than this.
    pub timeout: Duration,
}

impl Default for Workers {
    fn default() -> Self {
        Workers {
            count: None,
            preload: true,
            max_requests: 0,
            max_requests_jitter: 0,
            max_rss_mb: 0,
            timeout: Duration::from_secs(30),
        }
    }
}

impl Workers {
    /// The number of worker processes to run (resolving 0 to the CPU count).
    pub fn resolved_count(&self) -> usize {
        match self.count {
            Some(0) => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            Some(n) => n,
            None => 1,
        }
    }
}

/// Why a project file was rejected. `Display` gives `FILE:LINE:COL: message`.
#[derive(Debug)]
pub enum ConfigError {
    Read { file: PathBuf, error: std::io::Error },
    Invalid { file: PathBuf, line: usize, column: usize, message: String },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { file, error } => {
                write!(f, "{}: cannot read project file: {error}", file.display())
            }
            ConfigError::Invalid { file, line, column, message } => {
                write!(f, "{}:{line}:{column}: {message}", file.display())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Declares the settings: one `Option` field per key in `RawConfig` (what
/// one layer, file, environment or flags, sets), the list of keys, and the
/// overlay that gives a higher layer precedence key by key.
macro_rules! settings {
    ($( $key:ident : $ty:ty = $de:literal ),* $(,)?) => {
        /// One layer of settings as serde sees it; every key optional.
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct RawConfig {
            $( #[serde(default, deserialize_with = $de)] pub(crate) $key: Option<$ty>, )*
        }

        /// Every project key, in the order `--print-config` lists them.
        pub const KEYS: &[&str] = &[$(stringify!($key)),*];

        impl RawConfig {
            /// The keys this layer sets.
            pub(crate) fn present(&self) -> Vec<&'static str> {
                let mut keys = Vec::new();
                $( if self.$key.is_some() { keys.push(stringify!($key)); } )*
                keys
            }

            /// Keeps this layer's values where `over` sets none.
            pub(crate) fn overlay(&mut self, over: RawConfig) {
                $( if over.$key.is_some() { self.$key = over.$key; } )*
            }
        }
    };
}

settings! {
    http_listen_address: IpAddr = "ip_addr",
    http_listen_port: u16 = "port",
    bind: Vec<BindSpec> = "binds",
    unix_socket: PathBuf = "path",
    unix_socket_mode: u32 = "file_mode",
    fd: Vec<i32> = "fds",
    thread_count: usize = "thread_count",
    tcp_nodelay: bool = "boolean",
    server_header: bool = "boolean",
    listen_backlog: u32 = "backlog",
    shutdown_timeout: Duration = "seconds",
    log_level: log::LevelFilter = "log_level",
    venv: PathBuf = "path",
    max_request_line: usize = "size",
    max_header_bytes: usize = "size",
    max_headers: usize = "headers_count",
    max_body_bytes: usize = "size",
    header_timeout: Duration = "seconds",
    keepalive_timeout: Duration = "seconds",
    body_timeout: Duration = "seconds",
    write_timeout: Duration = "seconds",
    max_connections: usize = "size",
    max_buffered_output: usize = "size",
    max_memory_mb: u64 = "count",
    workers: usize = "workers",
    preload: bool = "boolean",
    max_requests: u64 = "count",
    max_requests_jitter: u64 = "count",
    max_rss_mb: u64 = "count",
    timeout: Duration = "seconds",
    forwarded_allow_ips: TrustedProxies = "trusted_proxies",
    access_log: AccessLog = "access_log",
    access_log_format: String = "access_log_format",
    admin_listen: SocketAddr = "admin_listen",
    admin_allow_remote: bool = "boolean",
    health_path: String = "health_path",
    modules: Vec<RouteSpec> = "routes",
}

/// Errors must be raised inside a visitor: json5 then reports the position
/// of the offending value instead of the enclosing object.
struct Checked<F> {
    expecting: &'static str,
    check: F,
}

impl<'de, T, F: FnOnce(Num) -> Result<T, String>> Visitor<'de> for Checked<F> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        (self.check)(Num::Int(i128::from(v))).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        (self.check)(Num::Int(i128::from(v))).map_err(E::custom)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        (self.check)(Num::Float(v)).map_err(E::custom)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.check)(Num::Str(v.to_string())).map_err(E::custom)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
        (self.check)(Num::Bool(v)).map_err(E::custom)
    }
}

enum Num {
    Int(i128),
    Float(f64),
    Str(String),
    Bool(bool),
}

fn ranged<'de, D: Deserializer<'de>>(d: D, min: u64, max: u64, what: &'static str) -> Result<u64, D::Error> {
    d.deserialize_any(Checked {
        expecting: "an integer",
        check: |n| match n {
            Num::Int(v) if v >= i128::from(min) && v <= i128::from(max) => Ok(v as u64),
            Num::Int(v) => Err(format!("{what} must be between {min} and {max}, got {v}")),
            Num::Float(v) => Err(format!("{what} must be an integer, got {v}")),
            Num::Str(v) => Err(format!("{what} must be an integer, got the string {v:?}")),
            Num::Bool(v) => Err(format!("{what} must be an integer, got {v}")),
        },
    })
}

fn port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    ranged(d, 0, 65535, "http_listen_port").map(|v| Some(v as u16))
}

fn thread_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    ranged(d, 1, 1024, "thread_count").map(|v| Some(v as usize))
}

fn backlog<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    ranged(d, 1, 65535, "listen_backlog").map(|v| Some(v as u32))
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    ranged(d, 1, 1 << 40, "a size or count").map(|v| Some(v as usize))
}

fn workers<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    ranged(d, 0, 1024, "workers").map(|v| Some(v as usize))
}

fn count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    ranged(d, 0, 1 << 53, "this count").map(Some)
}

/// A route's `batch`: an object of batch settings, or null for none.
fn batch_spec<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BatchSpec>, D::Error> {
    struct BatchVisitor;
    const EXPECTED: &str = "batch must be an object such as {\"max_size\": 64, \"max_wait_ms\": 2}";
    impl<'de> Visitor<'de> for BatchVisitor {
        type Value = Option<BatchSpec>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(EXPECTED)
        }
        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            BatchSpec::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(E::custom(EXPECTED))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(E::custom(EXPECTED))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(E::custom(EXPECTED))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(E::custom(EXPECTED))
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Err(E::custom(EXPECTED))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(de::Error::custom(EXPECTED))
        }
    }
    d.deserialize_any(BatchVisitor)
}

fn batch_max_size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    ranged(d, 1, BatchSpec::MAX_SIZE as u64, "batch max_size").map(|v| v as usize)
}

fn batch_concurrent<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    ranged(d, 1, BatchSpec::MAX_CONCURRENT as u64, "batch max_concurrent_batches").map(|v| v as usize)
}

/// Milliseconds, fractions allowed (`0.5`), 0 to 60000.
fn batch_max_wait<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    number(d, "a number of milliseconds", "batch max_wait_ms must be a number", |ms| {
        if !(0.0..=BatchSpec::MAX_WAIT_MS).contains(&ms) {
            return Err(format!("batch max_wait_ms must be between 0 and {}, got {ms}", BatchSpec::MAX_WAIT_MS));
        }
        Ok(Duration::from_secs_f64(ms / 1000.0))
    })
}

/// An integer or fractional number, checked by `check`; `what` starts the
/// message for a string.
fn number<'de, D: Deserializer<'de>, T>(
    d: D,
    expecting: &'static str,
    what: &'static str,
    check: impl FnOnce(f64) -> Result<T, String>,
) -> Result<T, D::Error> {
    d.deserialize_any(Checked {
        expecting,
        check: |n| match n {
            Num::Int(v) => check(v as f64),
            Num::Float(v) => check(v),
            Num::Str(s) => Err(format!("{what}, got the string {s:?}")),
            Num::Bool(b) => Err(format!("{what}, got {b}")),
        },
    })
}

fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    bool::deserialize(d).map(Some)
}

/// A path, or null for none.
fn path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    match Option::<String>::deserialize(d)? {
        Some(s) if s.is_empty() => Err(de::Error::custom("a path must not be empty")),
        other => Ok(other.map(PathBuf::from)),
    }
}

/// A Unix file mode: a string of octal digits (`"660"`, `"0o660"`) or an
/// integer written with octal digits (`660`).
fn file_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    d.deserialize_option(OrNull(Checked {
        expecting: "a file mode such as \"660\"",
        check: |n| {
            let digits = match n {
                Num::Int(v) => v.to_string(),
                Num::Str(s) => s.trim_start_matches("0o").to_string(),
                Num::Float(v) => return Err(format!("unix_socket_mode must be octal digits, got {v}")),
                Num::Bool(v) => return Err(format!("unix_socket_mode must be octal digits, got {v}")),
            };
            match u32::from_str_radix(&digits, 8) {
                Ok(m) if m <= 0o777 && !digits.is_empty() => Ok(Some(m)),
                _ => Err(format!("unix_socket_mode must be octal digits up to 777, got {digits:?}")),
            }
        },
    }))
}

/// A visitor that also takes null (as None).
struct OrNull<V>(V);

impl<'de, T, V: Visitor<'de, Value = Option<T>>> Visitor<'de> for OrNull<V> {
    type Value = Option<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }
    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_any(self.0)
    }
}

/// One value or a list of them.
fn one_or_many<'de, D: Deserializer<'de>, T>(d: D, item: fn(Num) -> Result<T, String>) -> Result<Vec<T>, D::Error> {
    struct Many<T>(fn(Num) -> Result<T, String>);
    impl<'de, T> Visitor<'de> for Many<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a value or a list of values")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Vec<T>, E> {
            (self.0)(Num::Int(i128::from(v))).map(|v| vec![v]).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Vec<T>, E> {
            (self.0)(Num::Int(i128::from(v))).map(|v| vec![v]).map_err(E::custom)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Vec<T>, E> {
            (self.0)(Num::Float(v)).map(|v| vec![v]).map_err(E::custom)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<T>, E> {
            let items: Result<Vec<T>, String> =
                v.split([',', ' ']).filter(|s| !s.is_empty()).map(|s| (self.0)(Num::Str(s.to_string()))).collect();
            items.map_err(E::custom)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(v) = seq.next_element::<serde_json::Value>()? {
                let n = match v {
                    serde_json::Value::String(s) => Num::Str(s),
                    serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => {
                        Num::Int(n.as_i64().map(i128::from).unwrap_or(i128::MAX))
                    }
                    serde_json::Value::Number(n) => Num::Float(n.as_f64().unwrap_or(f64::NAN)),
                    other => return Err(de::Error::custom(format!("unexpected list item {other}"))),
                };
                out.push((self.0)(n).map_err(de::Error::custom)?);
            }
            Ok(out)
        }
    }
    d.deserialize_any(Many(item))
}

fn binds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<BindSpec>>, D::Error> {
    one_or_many(d, |n| match n {
        Num::Str(s) => BindSpec::parse(&s),
        _ => Err("bind takes \"HOST:PORT\", \"unix:PATH\" or \"fd://N\" strings".into()),
    })
    .map(Some)
}

fn fds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<i32>>, D::Error> {
    one_or_many(d, |n| match n {
        Num::Int(v) if (0..=65535).contains(&v) => Ok(v as i32),
        Num::Str(s) if s.parse::<u16>().is_ok() => Ok(i32::from(s.parse::<u16>().unwrap_or(0))),
        _ => Err("fd takes descriptor numbers".into()),
    })
    .map(Some)
}

fn trusted_proxies<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TrustedProxies>, D::Error> {
    let items = one_or_many(d, |n| match n {
        Num::Str(s) => Ok(s),
        _ => Err("forwarded_allow_ips takes addresses or networks as strings (\"10.0.0.0/8\", \"*\")".into()),
    })?;
    TrustedProxies::parse(&items).map(Some).map_err(de::Error::custom)
}

fn headers_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    ranged(d, 1, crate::http::head::MAX_HEADERS_CAP as u64, "max_headers").map(|v| Some(v as usize))
}

fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    number(d, "a number of seconds", "a timeout must be a number of seconds", |v| {
        if v.is_finite() && v > 0.0 && v <= 86_400.0 {
            Ok(Some(Duration::from_secs_f64(v)))
        } else {
            Err(format!("a timeout must be a number of seconds in (0, 86400], got {v}"))
        }
    })
}

fn string_with<'de, D: Deserializer<'de>, T>(d: D, parse: fn(&str) -> Result<T, String>) -> Result<T, D::Error> {
    d.deserialize_any(Checked {
        expecting: "a string",
        check: |n| match n {
            Num::Str(s) => parse(&s),
            _ => Err("expected a string".to_string()),
        },
    })
}

fn access_log<'de, D: Deserializer<'de>>(d: D) -> Result<Option<AccessLog>, D::Error> {
    d.deserialize_any(Checked {
        expecting: "true, false or a file path",
        check: |n| match n {
            Num::Bool(true) => Ok(Some(AccessLog::Stderr)),
            Num::Bool(false) => Ok(Some(AccessLog::Off)),
            Num::Str(s) => parse_access_log(&s).map(Some),
            _ => Err("access_log must be true (stderr), false, or a file path".to_string()),
        },
    })
}

/// `-` or `stderr`: standard error; anything else: a file path.
pub fn parse_access_log(s: &str) -> Result<AccessLog, String> {
    match s {
        "" => Err("access_log: the file path is empty".into()),
        "-" | "stderr" => Ok(AccessLog::Stderr),
        _ if s.contains('\0') => Err("access_log: the file path contains a NUL byte".into()),
        _ => Ok(AccessLog::File(PathBuf::from(s))),
    }
}

fn access_log_format<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    string_with(d, |s| access_format::parse(s).map(|_| s.to_string())).map(Some)
}

fn admin_listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    string_with(d, |s| {
        s.parse::<SocketAddr>().map_err(|_| format!("admin_listen must be HOST:PORT (IPv6 in brackets), got {s:?}"))
    })
    .map(Some)
}

fn health_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    string_with(d, parse_health_path).map(Some)
}

/// A path starting with `/`, visible ASCII, no query or fragment.
pub fn parse_health_path(s: &str) -> Result<String, String> {
    if s.starts_with('/') && s.bytes().all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#') {
        Ok(s.to_string())
    } else {
        Err(format!("health_path must be a path starting with '/' (no query), got {s:?}"))
    }
}

fn ip_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
    string_with(d, parse_ip).map(Some)
}

/// Parses an IPv4 or IPv6 literal (brackets around IPv6 allowed).
pub fn parse_ip(s: &str) -> Result<IpAddr, String> {
    let bare = s.strip_prefix('[').and_then(|s| s.strip_suffix(']')).unwrap_or(s);
    bare.parse().map_err(|_| format!("http_listen_address must be an IPv4 or IPv6 literal, got {s:?}"))
}

fn log_level<'de, D: Deserializer<'de>>(d: D) -> Result<Option<log::LevelFilter>, D::Error> {
    string_with(d, parse_log_level).map(Some)
}

/// Parses `error`, `warn`, `info`, `debug`, `trace` or `off`.
pub fn parse_log_level(s: &str) -> Result<log::LevelFilter, String> {
    s.parse().map_err(|_| format!("log level must be one of off, error, warn, info, debug, trace; got {s:?}"))
}

/// `modules`: a non-empty list of routes, each checked against those before it
/// so that a duplicate is reported at its own position.
fn routes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<RouteSpec>>, D::Error> {
    struct RoutesVisitor;
    impl<'de> Visitor<'de> for RoutesVisitor {
        type Value = Vec<RouteSpec>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a non-empty list of routes")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out: Vec<RouteSpec> = Vec::new();
            // Routes so far by the paths they match (their shape): checking a
            // new route costs one lookup, not a pass over every earlier route.
            let mut shapes: HashMap<String, Vec<usize>> = HashMap::new();
            while let Some((route, shape)) = seq.next_element_seed(RouteSeed { before: &out, shapes: &shapes })? {
                shapes.entry(shape).or_default().push(out.len());
                out.push(route);
            }
            if out.is_empty() {
                return Err(de::Error::custom("modules must list at least one route"));
            }
            Ok(out)
        }
    }
    d.deserialize_seq(RoutesVisitor).map(Some)
}

struct RouteSeed<'a> {
    before: &'a [RouteSpec],
    /// Indexes into `before` by shape.
    shapes: &'a HashMap<String, Vec<usize>>,
}

impl<'de> DeserializeSeed<'de> for RouteSeed<'_> {
    type Value = (RouteSpec, String);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

/// Validating inside `visit_map` makes json5 report the route's own position.
impl<'de> Visitor<'de> for RouteSeed<'_> {
    type Value = (RouteSpec, String);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a route: {path, module, class, handler, methods?} or {path, static, methods?}")
    }
    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let mut route = RouteSpec::deserialize(de::value::MapAccessDeserializer::new(map))?;
        let shape = validate_route(&mut route, self.before, self.shapes).map_err(de::Error::custom)?;
        Ok((route, shape))
    }
}

/// Checks one route against itself and the routes before it; returns its shape.
fn validate_route(
    route: &mut RouteSpec,
    before: &[RouteSpec],
    shapes: &HashMap<String, Vec<usize>>,
) -> Result<String, String> {
    let shape = crate::router::Pattern::parse(&route.path)?.shape();
    if let Some(dir) = &route.r#static {
        if !route.module.is_empty() || !route.class.is_empty() || !route.handler.is_empty() {
            return Err("a static route has no module, class or handler".into());
        }
        if route.batch.is_some() {
            return Err("a static route cannot be batched (batch is for handler routes)".into());
        }
        if dir.is_empty() || dir.contains('\0') {
            return Err("static must name a directory".into());
        }
        if !route.path.ends_with("/*") {
            return Err(format!("a static route's path must end in /* (got {:?})", route.path));
        }
        let methods = route.methods.get_or_insert_with(|| vec!["GET".into(), "HEAD".into()]);
        if methods.iter().any(|m| !matches!(m.to_ascii_uppercase().as_str(), "GET" | "HEAD")) {
            return Err("a static route serves only GET and HEAD".into());
        }
    }
    let python_fields = [("module", &route.module), ("class", &route.class), ("handler", &route.handler)];
    for (what, name) in python_fields.into_iter().filter(|_| route.r#static.is_none()) {
        if name.is_empty() {
            return Err(format!("a route needs module, class and handler (or static: a directory); {what} is missing"));
        }
        let dotted_ok = what == "module";
        let valid = !name.is_empty()
            && name.split('.').all(|part| {
                !part.is_empty()
                    && !part.starts_with(|c: char| c.is_ascii_digit())
                    && part.chars().all(|c| c.is_alphanumeric() || c == '_')
            })
            && (dotted_ok || !name.contains('.'));
        if !valid {
            return Err(format!("{what} {name:?} is not a valid Python identifier"));
        }
    }
    if let Some(methods) = &mut route.methods {
        if methods.is_empty() {
            return Err("methods must not be empty (leave it out to allow every method)".into());
        }
        for m in methods.iter_mut() {
            m.make_ascii_uppercase();
            if m.is_empty() || !m.bytes().all(crate::http::encode::is_token_byte) {
                return Err(format!("method {m:?} in methods is not an HTTP method name (a token)"));
            }
            if m == "CONNECT" {
                return Err("CONNECT cannot be routed: pyrs answers it 501 (it is not a tunnel)".into());
            }
        }
    }
    for other in shapes.get(&shape).into_iter().flatten().filter_map(|&i| before.get(i)) {
        if methods_overlap(&route.methods, &other.methods) {
            let why = if route.path == other.path {
                format!("duplicate route {:?}", route.path)
            } else {
                format!("route {:?} matches the same paths as {:?}", route.path, other.path)
            };
            return Err(format!("{why} (give them different paths, or disjoint methods)"));
        }
    }
    Ok(shape)
}

/// Whether two routes serve a method in common (no `methods`: `KNOWN_METHODS`).
fn methods_overlap(a: &Option<Vec<String>>, b: &Option<Vec<String>>) -> bool {
    let listed = |ms: &Option<Vec<String>>| -> Vec<String> {
        ms.clone().unwrap_or_else(|| KNOWN_METHODS.iter().map(|m| m.to_string()).collect())
    };
    let (a, b) = (listed(a), listed(b));
    a.iter().any(|m| b.contains(m))
}

/// Where a setting's value came from. Precedence: flag > environment > file > default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File,
    /// An environment variable (its name).
    Env(String),
    /// A command-line flag (its name).
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File => f.write_str("project file"),
            Source::Env(name) => write!(f, "environment {name}"),
            Source::Flag(name) => write!(f, "flag {name}"),
        }
    }
}

/// Settings from the environment or the command line: the values, and the
/// variable or flag that set each key.
#[derive(Default)]
pub struct Layer {
    pub(crate) raw: RawConfig,
    pub(crate) names: Vec<(&'static str, Source)>,
}

/// Keys that together say where to listen: a layer that sets any of them
/// replaces the lower layers' listeners as a whole.
const LISTENER_KEYS: &[&str] = &["bind", "unix_socket", "fd"];

impl Layer {
    /// Parses `text` as the value of `key` and records `source` for it.
    /// The text is read as a JSON5 value (`4`, `false`, `["a", "b"]`) when
    /// it is one, else as a string (`debug`, `127.0.0.1:9000`); a
    /// comma-separated string gives a list for list-valued keys.
    pub fn set(&mut self, key: &str, text: &str, source: Source) -> Result<(), String> {
        let Some(&key) = KEYS.iter().find(|k| **k == key) else {
            return Err(format!("unknown setting {key:?}"));
        };
        let doc = |value: &str| format!("{{\"{key}\": {value}}}");
        let quoted = serde_json::Value::String(text.to_string()).to_string();
        let is_value = json5::from_str::<serde_json::Value>(text).is_ok();
        let parsed = json5::from_str::<RawConfig>(&doc(text))
            .or_else(|raw_err| {
                json5::from_str::<RawConfig>(&doc(&quoted)).map_err(|e| if is_value { raw_err } else { e })
            })
            .map_err(|e| strip_position(&e.to_string()))?;
        self.raw.overlay(parsed);
        self.names.retain(|(k, _)| *k != key);
        self.names.push((key, source));
        Ok(())
    }

    /// True when this layer sets `key`.
    pub fn has(&self, key: &str) -> bool {
        self.names.iter().any(|(k, _)| *k == key)
    }
}

impl Config {
    /// Threads that run batches: `max_concurrent_batches` per batched route.
    pub fn batch_threads(&self) -> usize {
        self.modules.iter().filter_map(|r| r.batch).map(|b| b.max_concurrent_batches).sum()
    }

    /// Reads and validates a project file (no environment, no flags).
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        Config::load_layered(file, Layer::default(), Layer::default())
    }

    /// Reads the project file and puts the environment and flag layers on top.
    pub fn load_layered(file: &Path, env: Layer, flags: Layer) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(file).map_err(|error| ConfigError::Read { file: file.to_path_buf(), error })?;
        Config::parse_with(file, &text, env, flags)
    }

    /// Validates project-file text; `file` names it in errors.
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        Config::parse_with(file, text, Layer::default(), Layer::default())
    }

    /// Validates project-file text with the environment and flag layers on top.
    pub fn parse_with(file: &Path, text: &str, env: Layer, flags: Layer) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid { file: file.to_path_buf(), line: 1, column: 1, message };
        let mut raw: RawConfig = json5::from_str(text).map_err(|e| {
            let (line, column) = e.position().map(|p| (p.line + 1, p.column + 1)).unwrap_or((1, 1));
            let message = strip_position(&e.to_string());
            ConfigError::Invalid { file: file.to_path_buf(), line, column, message }
        })?;
        let mut sources: Vec<(&'static str, Source)> = raw.present().into_iter().map(|k| (k, Source::File)).collect();
        for layer in [env, flags] {
            if LISTENER_KEYS.iter().any(|k| layer.has(k)) {
                raw.bind = None;
                raw.unix_socket = None;
                raw.fd = None;
                sources.retain(|(k, _)| !LISTENER_KEYS.contains(k));
            }
            raw.overlay(layer.raw);
            for (key, source) in layer.names {
                sources.retain(|(k, _)| *k != key);
                sources.push((key, source));
            }
        }
        let mut venv = raw.venv.take();
        if venv.is_none() {
            venv = std::env::var_os("VIRTUAL_ENV").filter(|v| !v.is_empty()).map(PathBuf::from);
            if venv.is_some() {
                sources.push(("venv", Source::Env("VIRTUAL_ENV".into())));
            }
        }
        let Some(modules) = raw.modules else {
            return Err(invalid("missing field `modules` (the list of routes)".into()));
        };
        let project_dir = file
            .canonicalize()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("."));
        let address = raw.http_listen_address.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let port = raw.http_listen_port.unwrap_or(8094);
        let (bind, unix_socket, fd) = (raw.bind.unwrap_or_default(), raw.unix_socket, raw.fd.unwrap_or_default());
        let mut listeners = bind.clone();
        listeners.extend(unix_socket.clone().map(BindSpec::Unix));
        listeners.extend(fd.iter().copied().map(BindSpec::Fd));
        if listeners.is_empty() {
            listeners.push(BindSpec::Tcp(std::net::SocketAddr::new(address, port)));
        }
        let workers = Workers {
            count: raw.workers,
            preload: raw.preload.unwrap_or(true),
            max_requests: raw.max_requests.unwrap_or(0),
            max_requests_jitter: raw.max_requests_jitter.unwrap_or(0),
            max_rss_mb: raw.max_rss_mb.unwrap_or(0),
            timeout: raw.timeout.unwrap_or(Duration::from_secs(30)),
        };
        let d = Limits::default();
        Ok(Config {
            file: file.to_path_buf(),
            project_dir,
            http_listen_address: address,
            http_listen_port: port,
            listeners,
            bind,
            unix_socket,
            fd,
            unix_socket_mode: raw.unix_socket_mode,
            venv,
            forwarded_allow_ips: raw.forwarded_allow_ips.unwrap_or_default(),
            thread_count: raw.thread_count.unwrap_or(2),
            tcp_nodelay: raw.tcp_nodelay.unwrap_or(true),
            server_header: raw.server_header.unwrap_or(true),
            listen_backlog: raw.listen_backlog.unwrap_or(1024),
            shutdown_timeout: raw.shutdown_timeout.unwrap_or(Duration::from_secs(10)),
            log_level: raw.log_level.unwrap_or(log::LevelFilter::Info),
            limits: Limits {
                max_request_line: raw.max_request_line.unwrap_or(d.max_request_line),
                max_header_bytes: raw.max_header_bytes.unwrap_or(d.max_header_bytes),
                max_headers: raw.max_headers.unwrap_or(d.max_headers),
                max_body_bytes: raw.max_body_bytes.unwrap_or(d.max_body_bytes),
                header_timeout: raw.header_timeout.unwrap_or(d.header_timeout),
                keepalive_timeout: raw.keepalive_timeout.unwrap_or(d.keepalive_timeout),
                body_timeout: raw.body_timeout.unwrap_or(d.body_timeout),
                write_timeout: raw.write_timeout.unwrap_or(d.write_timeout),
                max_connections: raw.max_connections.unwrap_or(d.max_connections),
                max_buffered_output: raw.max_buffered_output.unwrap_or(d.max_buffered_output),
                memory: match raw.max_memory_mb {
                    Some(mb) => std::sync::Arc::new(crate::http::budget::MemoryBudget::new(
                        usize::try_from(mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
                    )),
                    // Each worker process has its own budget: share the machine's
                    // (workers 0 is one per CPU).
                    None => std::sync::Arc::new(crate::http::budget::MemoryBudget::new(
                        crate::http::budget::MemoryBudget::default_limit(workers.resolved_count()),
                    )),
                },
            },
            workers,
            observe: Observability {
                access_log: raw.access_log.unwrap_or_default(),
                access_log_format: raw.access_log_format.unwrap_or_else(|| "combined".into()),
                admin_listen: raw.admin_listen,
                admin_allow_remote: raw.admin_allow_remote.unwrap_or(false),
                health_path: raw.health_path,
            },
            modules,
            sources,
        })
    }

    /// Where `key`'s value came from.
    pub fn source(&self, key: &str) -> Source {
        self.sources.iter().find(|(k, _)| *k == key).map(|(_, s)| s.clone()).unwrap_or(Source::Default)
    }

    /// The effective value of every key as JSON text, in `KEYS` order.
    pub fn effective(&self) -> Vec<(&'static str, String)> {
        use serde_json::json;
        let secs = |d: Duration| json!(d.as_secs_f64());
        let l = &self.limits;
        let w = &self.workers;
        let o = &self.observe;
        KEYS.iter()
            .map(|&key| {
                let v = match key {
                    "http_listen_address" => json!(self.http_listen_address.to_string()),
                    "http_listen_port" => json!(self.http_listen_port),
                    "bind" => json!(self.bind.iter().map(BindSpec::to_string).collect::<Vec<_>>()),
                    "unix_socket" => json!(self.unix_socket.as_ref().map(|p| p.display().to_string())),
                    "unix_socket_mode" => json!(self.unix_socket_mode.map(|m| format!("{m:o}"))),
                    "fd" => json!(self.fd),
                    "thread_count" => json!(self.thread_count),
                    "tcp_nodelay" => json!(self.tcp_nodelay),
                    "server_header" => json!(self.server_header),
                    "listen_backlog" => json!(self.listen_backlog),
                    "shutdown_timeout" => secs(self.shutdown_timeout),
                    "log_level" => json!(self.log_level.to_string().to_lowercase()),
                    "venv" => json!(self.venv.as_ref().map(|v| v.display().to_string())),
                    "max_request_line" => json!(l.max_request_line),
                    "max_header_bytes" => json!(l.max_header_bytes),
                    "max_headers" => json!(l.max_headers),
                    "max_body_bytes" => json!(l.max_body_bytes),
                    "header_timeout" => secs(l.header_timeout),
                    "keepalive_timeout" => secs(l.keepalive_timeout),
                    "body_timeout" => secs(l.body_timeout),
                    "write_timeout" => secs(l.write_timeout),
                    "max_connections" => json!(l.max_connections),
                    "max_buffered_output" => json!(l.max_buffered_output),
                    "max_memory_mb" => json!(l.memory.limit() >> 20),
                    "workers" => json!(w.count),
                    "preload" => json!(w.preload),
                    "max_requests" => json!(w.max_requests),
                    "max_requests_jitter" => json!(w.max_requests_jitter),
                    "max_rss_mb" => json!(w.max_rss_mb),
                    "timeout" => secs(w.timeout),
                    "forwarded_allow_ips" => json!(self.forwarded_allow_ips.to_string()),
                    "access_log" => match &o.access_log {
                        AccessLog::Off => json!(false),
                        AccessLog::Stderr => json!(true),
                        AccessLog::File(p) => json!(p.display().to_string()),
                    },
                    "access_log_format" => json!(o.access_log_format),
                    "admin_listen" => json!(o.admin_listen.map(|a| a.to_string())),
                    "admin_allow_remote" => json!(o.admin_allow_remote),
                    "health_path" => json!(o.health_path),
                    "modules" => json!(self.modules.iter().map(|r| r.path.clone()).collect::<Vec<_>>()),
                    _ => json!(null),
                };
                (key, v.to_string())
            })
            .collect()
    }
}

/// Where to listen, as written in `bind`, `unix_socket` or `fd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindSpec {
    /// An IPv4 or IPv6 address and port.
    Tcp(std::net::SocketAddr),
    /// `localhost:PORT`: the IPv4 and (when the host has one) IPv6 loopback.
    Localhost(u16),
    /// A Unix stream socket at this path.
    Unix(PathBuf),
    /// An already listening socket this process inherited on descriptor N.
    Fd(i32),
}

impl BindSpec {
    /// `HOST:PORT` (IPv4, `[IPv6]`, `localhost`), `unix:PATH` or `fd://N`.
    pub fn parse(s: &str) -> Result<BindSpec, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a socket path (unix:/run/pyrs.sock)".into());
            }
            return Ok(BindSpec::Unix(PathBuf::from(path)));
        }
        if let Some(n) = s.strip_prefix("fd://") {
            return n
                .parse::<u16>()
                .map(|n| BindSpec::Fd(i32::from(n)))
                .map_err(|_| format!("bad descriptor in {s:?}"));
        }
        if let Some(port) = s.strip_prefix("localhost:") {
            return port.parse().map(BindSpec::Localhost).map_err(|_| format!("bad port in {s:?}"));
        }
        s.parse().map(BindSpec::Tcp).map_err(|_| {
            format!("cannot listen on {s:?}: expected IPv4:PORT, [IPv6]:PORT, localhost:PORT, unix:PATH or fd://N")
        })
    }
}

impl fmt::Display for BindSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindSpec::Tcp(a) => write!(f, "{a}"),
            BindSpec::Localhost(p) => write!(f, "localhost:{p}"),
            BindSpec::Unix(p) => write!(f, "unix:{}", p.display()),
            BindSpec::Fd(n) => write!(f, "fd://{n}"),
        }
    }
}

/// json5 appends " at line L column C" to its messages; we print the position first.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Every distinct (module, class) pair, in the order first named.
pub fn distinct_classes(routes: &[RouteSpec]) -> Vec<(String, String)> {
    let mut seen = HashSet::new();
    routes
        .iter()
        .filter(|r| !r.is_static() && seen.insert((r.module.clone(), r.class.clone())))
        .map(|r| (r.module.clone(), r.class.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("p.pyrs"), text).map_err(|e| e.to_string())
    }

    const ONE: &str = r#"{"path": "/echo", "module": "main", "class": "Api", "handler": "echo"}"#;

    #[test]
    fn observability_keys() {
        let c = parse(&format!(
            "{{access_log: \"/tmp/a.log\", access_log_format: \"json\", admin_listen: \"127.0.0.1:9000\",\n\
             health_path: \"/healthz\", modules: [{ONE}]}}"
        ))
        .unwrap();
        assert_eq!(c.observe.access_log, AccessLog::File("/tmp/a.log".into()));
        assert_eq!(c.observe.admin_listen, Some("127.0.0.1:9000".parse().unwrap()));
        assert!(c.observe.validate().is_ok());
        let c = parse(&format!("{{access_log: true, modules: [{ONE}]}}")).unwrap();
        assert_eq!(c.observe.access_log, AccessLog::Stderr);
        let e = parse(&format!("{{\naccess_log_format: \"{{nope}}\", modules: [{ONE}]}}")).unwrap_err();
        assert!(e.starts_with("p.pyrs:2:") && e.contains("unknown field {nope}"), "{e}");
        let e = parse(&format!("{{health_path: \"x\", modules: [{ONE}]}}")).unwrap_err();
        assert!(e.contains("health_path"), "{e}");
        let c = parse(&format!("{{admin_listen: \"0.0.0.0:9000\", modules: [{ONE}]}}")).unwrap();
        assert!(c.observe.validate().unwrap_err().contains("admin_allow_remote"));
        let c = parse(&format!("{{admin_listen: \"0.0.0.0:9000\", admin_allow_remote: true, modules: [{ONE}]}}"));
        assert!(c.unwrap().observe.validate().is_ok());
        let mut flags = Layer::default();
        flags.set("access_log", "true", Source::Flag("--access-log".into())).unwrap();
        flags.set("admin_listen", "127.0.0.1:0", Source::Flag("--admin".into())).unwrap();
        let c = Config::parse_with(Path::new("p.pyrs"), &format!("{{modules: [{ONE}]}}"), Layer::default(), flags);
        let c = c.unwrap();
        assert_eq!(c.observe.access_log, AccessLog::Stderr);
        assert!(c.observe.admin_listen.is_some());
    }

    #[test]
    fn static_routes() {
        let c = parse(r#"{ modules: [{"path": "/s/*", "static": "public"}, {"path": "/a", "module": "m", "class": "C", "handler": "h"}] }"#).unwrap();
        assert_eq!(c.modules[0].r#static.as_deref(), Some("public"));
        assert_eq!(c.modules[0].methods, Some(vec!["GET".to_string(), "HEAD".to_string()]));
        assert_eq!(distinct_classes(&c.modules), vec![("m".to_string(), "C".to_string())]);
        for (route, why) in [
            (r#"{"path": "/s/*", "static": "p", "module": "m"}"#, "no module, class or handler"),
            (r#"{"path": "/s", "static": "p"}"#, "must end in /*"),
            (r#"{"path": "/s/*", "static": "p", "methods": ["POST"]}"#, "only GET and HEAD"),
            (r#"{"path": "/s/*", "static": ""}"#, "must name a directory"),
            (r#"{"path": "/s/*", "module": "m", "class": "C"}"#, "handler is missing"),
        ] {
            let e = parse(&format!("{{ modules: [{route}] }}")).unwrap_err();
            assert!(e.contains(why), "{route}: {e}");
        }
    }

    #[test]
    fn defaults_apply() {
        let c = parse(&format!("{{ modules: [{ONE}] }}")).unwrap();
        assert_eq!(c.http_listen_address.to_string(), "0.0.0.0");
        assert_eq!(c.http_listen_port, 8094);
        assert_eq!(c.thread_count, 2);
        assert!(c.tcp_nodelay);
        assert_eq!(c.listen_backlog, 1024);
        assert_eq!(c.limits, Limits::default());
    }

    #[test]
    fn the_default_memory_budget_is_shared_by_the_worker_processes() {
        use crate::http::budget::MemoryBudget;
        let limit = |extra: &str| parse(&format!("{{ {extra} modules: [{ONE}] }}")).unwrap().limits.memory.limit();
        assert_eq!(limit(""), MemoryBudget::default_limit(1));
        assert_eq!(limit("workers: 3,"), MemoryBudget::default_limit(3));
        // workers 0 is one per CPU: the budget is divided by that many, not by 1.
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        assert_eq!(limit("workers: 0,"), MemoryBudget::default_limit(cpus));
        assert_eq!(limit("workers: 0, max_memory_mb: 100,"), 100 << 20);
    }

    #[test]
    fn comments_and_trailing_commas() {
        let text = format!("{{\n // comment\n \"thread_count\": 4, /* c */\n modules: [{ONE},],\n}}");
        assert_eq!(parse(&text).unwrap().thread_count, 4);
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let text = format!("{{\n  \"thread_cout\": 4,\n  modules: [{ONE}]\n}}");
        let e = parse(&text).unwrap_err();
        assert!(e.starts_with("p.pyrs:2:"), "{e}");
        assert!(e.contains("thread_cout"), "{e}");
    }

    #[test]
    fn out_of_range_and_wrong_type() {
        let e = parse(&format!("{{\n\"thread_count\": 0,\nmodules: [{ONE}]}}")).unwrap_err();
        assert!(e.starts_with("p.pyrs:2:") && e.contains("between 1 and 1024"), "{e}");
        let e = parse(&format!("{{\n\n\"tcp_nodelay\": \"yes\",\nmodules: [{ONE}]}}")).unwrap_err();
        assert!(e.starts_with("p.pyrs:3:"), "{e}");
    }

    #[test]
    fn batch_settings_are_checked_where_they_are_written() {
        let route = |batch: &str| {
            format!("{{modules: [\n{{path: \"/p\", module: \"m\", class: \"C\", handler: \"h\",\n batch: {batch}}}]}}")
        };
        let c = parse(&route(r#"{"max_size": 32, "max_wait_ms": 0.5, "max_concurrent_batches": 2}"#)).unwrap();
        let b = c.modules[0].batch.unwrap();
        assert_eq!((b.max_size, b.max_wait, b.max_concurrent_batches), (32, Duration::from_micros(500), 2));
        assert_eq!(c.batch_threads(), 2);
        assert_eq!(parse(&route("{}")).unwrap().modules[0].batch, Some(BatchSpec::default()));
        assert_eq!(parse(&format!("{{modules: [{ONE}]}}")).unwrap().modules[0].batch, None);
        for (batch, why) in [
            (r#"{"max_size": 0}"#, "batch max_size must be between 1 and 4096, got 0"),
            (r#"{"max_size": 2.5}"#, "batch max_size must be an integer"),
            (r#"{"max_wait_ms": -1}"#, "batch max_wait_ms must be between 0 and 60000, got -1"),
            (r#"{"max_wait_ms": "2"}"#, "batch max_wait_ms must be a number"),
            (r#"{"max_concurrent_batches": 65}"#, "between 1 and 64"),
            (r#"{"max_sise": 8}"#, "max_sise"),
            ("true", "batch must be an object"),
            ("[64]", "batch must be an object"),
        ] {
            let e = parse(&route(batch)).unwrap_err();
            assert!(e.starts_with("p.pyrs:3:") && e.contains(why), "{batch}: {e}");
        }
    }

    #[test]
    fn missing_modules_and_bad_syntax() {
        let e = parse("{ \"thread_count\": 2 }").unwrap_err();
        assert!(e.contains("modules"), "{e}");
        let e = parse("{\n\n  \"thread_count\": 2,,\n}").unwrap_err();
        assert!(e.starts_with("p.pyrs:3:"), "{e}");
    }

    #[test]
    fn duplicate_route_is_reported_at_the_second_entry() {
        let text = format!("{{modules: [\n{ONE},\n{ONE}\n]}}");
        let e = parse(&text).unwrap_err();
        assert!(e.starts_with("p.pyrs:3:") && e.contains("duplicate route"), "{e}");
    }

    #[test]
    fn same_path_with_disjoint_methods_is_allowed() {
        let a = r#"{"path": "/x", "module": "m", "class": "C", "handler": "a", "methods": ["get"]}"#;
        let b = r#"{"path": "/x", "module": "m", "class": "C", "handler": "b", "methods": ["POST"]}"#;
        let c = parse(&format!("{{modules: [{a}, {b}]}}")).unwrap();
        assert_eq!(c.modules[0].methods, Some(vec!["GET".to_string()]));
    }

    #[test]
    fn any_token_method_may_be_listed_but_connect() {
        let route = |path: &str, methods: &str| {
            format!(r#"{{"path": "{path}", "module": "m", "class": "C", "handler": "a", "methods": {methods}}}"#)
        };
        let c = parse(&format!("{{modules: [{}]}}", route("/x", r#"["propfind", "PURGE"]"#))).unwrap();
        assert_eq!(c.modules[0].methods, Some(vec!["PROPFIND".to_string(), "PURGE".to_string()]));
        for bad in [r#"["CONNECT"]"#, r#"["GE T"]"#, r#"[""]"#] {
            assert!(parse(&format!("{{modules: [{}]}}", route("/x", bad))).is_err(), "{bad}");
        }
        // A route without methods and one listing only another method share a path.
        let plain = r#"{"path": "/x", "module": "m", "class": "C", "handler": "b"}"#;
        assert!(parse(&format!("{{modules: [{plain}, {}]}}", route("/x", r#"["PROPFIND"]"#))).is_ok());
        assert!(parse(&format!("{{modules: [{plain}, {}]}}", route("/x", r#"["PATCH"]"#))).is_err());
    }

    #[test]
    fn parameter_routes_of_the_same_shape_tie() {
        let a = r#"{"path": "/u/{id}", "module": "m", "class": "C", "handler": "a"}"#;
        let b = r#"{"path": "/u/{name}", "module": "m", "class": "C", "handler": "b"}"#;
        let e = parse(&format!("{{modules: [{a},\n {b}]}}")).unwrap_err();
        assert!(e.contains("matches the same paths"), "{e}");
    }

    #[test]
    fn ipv6_address() {
        let c = parse(&format!("{{http_listen_address: \"::1\", modules: [{ONE}]}}")).unwrap();
        assert!(c.http_listen_address.is_ipv6());
    }
}
