//! The command line, `pyrs PROJECT_FILE [options]`, and the `PYRS_<KEY>`
//! environment variables: two settings layers on top of the project file.
//! Every key has a variable, and every key but `modules` and the
//! address/port pair a flag; values are checked by the same code as the file
//! (`config::Layer::set`). Usage errors exit with status 2 (clap's
//! convention), a bad environment variable with status 1.

use crate::config::{Layer, Source, KEYS};
use clap::{Arg, ArgAction, ArgMatches, Command};
use std::path::PathBuf;

/// Environment variables the project does not read as settings (set by
/// pyrs for its own child processes; `PYRS_BUILD_*` are build-time names).
pub const INTERNAL_ENV_PREFIX: &str = "PYRS_INTERNAL_";

/// Flags whose name is not the key's (`--threads` sets `thread_count`).
const FLAG_ALIASES: &[(&str, &str)] = &[("threads", "thread_count"), ("uds", "unix_socket"), ("admin", "admin_listen")];
/// Keys without a flag of their own.
const NO_FLAG: &[&str] = &["modules", "http_listen_address", "http_listen_port"];
/// Keys whose flag may be given several times.
const REPEATABLE: &[&str] = &["bind", "fd"];

/// What to do, with the settings from the flags and the environment.
pub struct Cli {
    pub project: PathBuf,
    pub check: bool,
    pub print_config: bool,
    pub flags: Layer,
    pub env: Layer,
    /// `PYRS_*` variables that name no setting (warned about once logging is up).
    pub unknown_env: Vec<String>,
}

fn flag_of(key: &str) -> String {
    FLAG_ALIASES.iter().find(|(_, k)| *k == key).map(|(f, _)| f.to_string()).unwrap_or_else(|| key.replace('_', "-"))
}

fn help_of(key: &str) -> &'static str {
    match key {
        "bind" => "Listen on HOST:PORT, localhost:PORT, unix:PATH or fd://N (repeat for several)",
        "unix_socket" => "Listen on a Unix socket at PATH (unix_socket)",
        "unix_socket_mode" => "Permissions of the Unix socket, octal (unix_socket_mode)",
        "fd" => "Serve an inherited listening socket on descriptor N (repeatable)",
        "thread_count" => "Size of the handler thread pool (thread_count)",
        "workers" => "Worker processes under a supervisor (0 = one per CPU); absent: a single process",
        "log_level" => "off, error, warn, info, debug or trace",
        "venv" => "Virtualenv whose packages handler code imports (default: $VIRTUAL_ENV)",
        "forwarded_allow_ips" => "Proxies trusted for Forwarded / X-Forwarded-* (addresses, networks, or *)",
        "access_log" => "Access log: to stderr without a value (or true, -), else appended to PATH",
        "access_log_format" => "combined, json, or a template of {fields} (access_log_format)",
        "admin_listen" => "Serve /metrics, /healthz, /readyz and the status page on HOST:PORT (loopback)",
        "health_path" => "Answer readiness at this path on the main listener (health_path)",
        _ => "see the project.pyrs key of the same name",
    }
}

fn command() -> Command {
    let mut cmd = Command::new("pyrs")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Serve Python handler classes over HTTP/1.1")
        .after_help(
            "Every setting is also read from the environment as PYRS_<KEY> (PYRS_WORKERS=4, PYRS_BIND=127.0.0.1:9000).\n\
             Precedence: flag > environment > project file > default. --print-config shows the result.",
        )
        .arg(Arg::new("project").value_name("PROJECT_FILE").required(true).value_parser(clap::value_parser!(PathBuf)))
        .arg(
            Arg::new("check")
                .long("check")
                .action(ArgAction::SetTrue)
                .help("Validate the project file and import every module, class and handler, then exit"),
        )
        .arg(
            Arg::new("print-config")
                .long("print-config")
                .action(ArgAction::SetTrue)
                .help("Print the effective configuration and where each value came from, then exit"),
        );
    for key in KEYS.iter().filter(|k| !NO_FLAG.contains(k)) {
        let flag = flag_of(key);
        let action = if REPEATABLE.contains(key) { ArgAction::Append } else { ArgAction::Set };
        let mut arg = Arg::new(*key).long(flag).value_name("VALUE").action(action).help(help_of(key));
        if *key == "access_log" {
            // `--access-log` alone means stderr.
            arg = arg.value_name("PATH").num_args(0..=1).default_missing_value("true");
        }
        cmd = cmd.arg(arg);
    }
    cmd
}

impl Cli {
    /// Parses the command line (exits 2 on a usage error) and the environment
    /// (returns the message of a bad variable).
    pub fn parse() -> Result<Cli, String> {
        let matches = command().get_matches();
        let mut flags = Layer::default();
        for key in KEYS.iter().filter(|k| !NO_FLAG.contains(k)) {
            let Some(values) = matches.get_many::<String>(key) else { continue };
            let values: Vec<&String> = values.collect();
            let flag = format!("--{}", flag_of(key));
            let text = if REPEATABLE.contains(key) {
                serde_json::Value::from(values.iter().map(|v| v.as_str()).collect::<Vec<_>>()).to_string()
            } else {
                values.last().map(|v| v.to_string()).unwrap_or_default()
            };
            if let Err(e) = flags.set(key, &text, Source::Flag(flag.clone())) {
                command()
                    .error(clap::error::ErrorKind::ValueValidation, format!("invalid value {text:?} for {flag}: {e}"))
                    .exit();
            }
        }
        let (env, unknown_env) = env_layer(std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v))))?;
        Ok(Cli {
            project: project(&matches),
            check: matches.get_flag("check"),
            print_config: matches.get_flag("print-config"),
            flags,
            env,
            unknown_env,
        })
    }
}

fn project(m: &ArgMatches) -> PathBuf {
    m.get_one::<PathBuf>("project").cloned().unwrap_or_default()
}

/// The settings layer of `PYRS_<KEY>` (and `PYRS_<FLAG>` for the aliased
/// flags, which win over the key's name) among `vars`; the `PYRS_` names
/// that are no setting.
pub fn env_layer(vars: impl Iterator<Item = (String, std::ffi::OsString)>) -> Result<(Layer, Vec<String>), String> {
    let mut named: Vec<(String, String, usize)> = Vec::new();
    let mut unknown = Vec::new();
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix("PYRS_") else { continue };
        if name.starts_with(INTERNAL_ENV_PREFIX) || name.starts_with("PYRS_BUILD_") {
            continue;
        }
        let lower = rest.to_ascii_lowercase();
        let (key, rank) = if let Some((_, key)) = FLAG_ALIASES.iter().find(|(f, _)| *f == lower) {
            (key.to_string(), 1)
        } else if KEYS.contains(&lower.as_str()) {
            (lower, 0)
        } else {
            unknown.push(name);
            continue;
        };
        let value = value.into_string().map_err(|_| format!("environment {name}: the value is not UTF-8"))?;
        named.push((key, format!("{name}={value}"), rank));
    }
    named.sort_by_key(|(_, _, rank)| *rank);
    let mut layer = Layer::default();
    for (key, assignment, _) in named {
        let (name, value) = assignment.split_once('=').unwrap_or((&assignment, ""));
        layer.set(&key, value, Source::Env(name.to_string())).map_err(|e| format!("environment {assignment}: {e}"))?;
    }
    unknown.sort();
    Ok((layer, unknown))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    const FILE: &str = r#"{ thread_count: 3, workers: 2, http_listen_port: 9000,
        modules: [{"path": "/a", "module": "m", "class": "C", "handler": "h"}] }"#;

    fn env(vars: &[(&str, &str)]) -> Result<(Layer, Vec<String>), String> {
        env_layer(vars.iter().map(|(k, v)| (k.to_string(), v.into())))
    }

    #[test]
    fn flag_beats_environment_beats_file_beats_default() {
        let (e, unknown) =
            env(&[("PYRS_THREAD_COUNT", "4"), ("PYRS_WORKERS", "5"), ("PYRS_THREAD_COUT", "1")]).unwrap();
        assert_eq!(unknown, vec!["PYRS_THREAD_COUT".to_string()]);
        let mut f = Layer::default();
        f.set("thread_count", "6", Source::Flag("--threads".into())).unwrap();
        let c = Config::parse_with(Path::new("p.pyrs"), FILE, e, f).unwrap();
        assert_eq!(c.thread_count, 6);
        assert_eq!(c.source("thread_count"), Source::Flag("--threads".into()));
        assert_eq!(c.workers.count, Some(5));
        assert_eq!(c.source("workers"), Source::Env("PYRS_WORKERS".into()));
        assert_eq!(c.http_listen_port, 9000);
        assert_eq!(c.source("http_listen_port"), Source::File);
        assert_eq!(c.source("max_requests"), Source::Default);
    }

    #[test]
    fn values_are_checked_like_the_file() {
        let e = env(&[("PYRS_WORKERS", "many")]).err().unwrap();
        assert!(e.contains("PYRS_WORKERS=many") && e.contains("workers must be an integer"), "{e}");
        let e = env(&[("PYRS_THREADS", "0")]).err().unwrap();
        assert!(e.contains("between 1 and 1024"), "{e}");
        let (l, _) =
            env(&[("PYRS_LOG_LEVEL", "debug"), ("PYRS_TCP_NODELAY", "false"), ("PYRS_TIMEOUT", "2.5")]).unwrap();
        let c = Config::parse_with(Path::new("p.pyrs"), FILE, l, Layer::default()).unwrap();
        assert_eq!(c.log_level, log::LevelFilter::Debug);
        assert!(!c.tcp_nodelay);
        assert_eq!(c.workers.timeout, std::time::Duration::from_millis(2500));
    }

    #[test]
    fn a_layer_naming_a_listener_replaces_the_listeners_below() {
        use crate::config::BindSpec;
        let file = FILE.replace("workers: 2,", "bind: [\"127.0.0.1:1\", \"unix:/tmp/a.sock\"],");
        let c = Config::parse_with(Path::new("p.pyrs"), &file, Layer::default(), Layer::default()).unwrap();
        assert_eq!(c.listeners.len(), 2);
        let (e, _) = env(&[("PYRS_UDS", "/tmp/b.sock")]).unwrap();
        let c = Config::parse_with(Path::new("p.pyrs"), &file, e, Layer::default()).unwrap();
        assert_eq!(c.listeners, vec![BindSpec::Unix("/tmp/b.sock".into())]);
        let (e, _) = env(&[("PYRS_BIND", "127.0.0.1:7000,localhost:7001"), ("PYRS_FD", "3")]).unwrap();
        let c = Config::parse_with(Path::new("p.pyrs"), &file, e, Layer::default()).unwrap();
        assert_eq!(
            c.listeners,
            vec![BindSpec::Tcp("127.0.0.1:7000".parse().unwrap()), BindSpec::Localhost(7001), BindSpec::Fd(3)]
        );
        // Nothing named: http_listen_address and http_listen_port.
        let c = Config::parse_with(Path::new("p.pyrs"), FILE, Layer::default(), Layer::default()).unwrap();
        assert_eq!(c.listeners, vec![BindSpec::Tcp("0.0.0.0:9000".parse().unwrap())]);
    }
}
