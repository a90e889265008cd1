//! Settings from three layers: `PYRS_<KEY>` environment variables and flags
//! on top of project.pyrs (flag > environment > file > default), and
//! `--print-config` naming where each value came from.

mod common;
use common::*;

const API: &str = "class Api:\n    def hello(self, request):\n        return 'world'\n";

fn project() -> Project {
    Project::simple(API, &[("/hello", "hello")], "\"thread_count\": 3, \"max_requests\": 7,")
}

/// `key = value  # source` for `key` in --print-config output.
fn row<'a>(out: &'a str, key: &str) -> (&'a str, &'a str) {
    let line = out.lines().find(|l| l.starts_with(&format!("{key} = "))).unwrap_or_else(|| panic!("no {key}:\n{out}"));
    let (value, source) = line.split_once('#').unwrap();
    (value.trim().trim_start_matches(&format!("{key} = ")), source.trim())
}

#[test]
fn print_config_shows_each_value_and_its_source() {
    let p = project();
    let file = p.file();
    let env = [("PYRS_THREAD_COUNT", "4"), ("PYRS_WORKERS", "2"), ("PYRS_LOG_LEVEL", "debug"), ("PYRS_TIMEOUT", "7.5")];
    let (code, out, err) =
        run_pyrs(&[file.to_str().unwrap(), "--print-config", "--workers", "3", "--max-rss-mb", "300"], &env);
    assert_eq!(code, 0, "{err}");
    assert_eq!(row(&out, "workers"), ("3", "flag --workers"));
    assert_eq!(row(&out, "thread_count"), ("4", "environment PYRS_THREAD_COUNT"));
    assert_eq!(row(&out, "log_level"), ("\"debug\"", "environment PYRS_LOG_LEVEL"));
    assert_eq!(row(&out, "timeout"), ("7.5", "environment PYRS_TIMEOUT"));
    assert_eq!(row(&out, "max_requests"), ("7", "project file"));
    assert_eq!(row(&out, "max_rss_mb"), ("300", "flag --max-rss-mb"));
    assert_eq!(row(&out, "max_requests_jitter"), ("0", "default"));
    assert_eq!(row(&out, "http_listen_port"), ("8094", "default"));
    assert!(out.contains("# listening on: 0.0.0.0:8094"), "{out}");
    // Nothing was started.
    assert!(!out.contains("Listening on") && !out.contains("Added route"), "{out}");
}

#[test]
fn every_worker_setting_has_a_flag() {
    let p = project();
    let file = p.file();
    let args = [
        file.to_str().unwrap(),
        "--print-config",
        "--timeout",
        "12",
        "--max-requests",
        "100",
        "--max-requests-jitter",
        "10",
        "--max-rss-mb",
        "512",
    ];
    let (code, out, err) = run_pyrs(&args, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(row(&out, "timeout"), ("12.0", "flag --timeout"));
    assert_eq!(row(&out, "max_requests"), ("100", "flag --max-requests"));
    assert_eq!(row(&out, "max_requests_jitter"), ("10", "flag --max-requests-jitter"));
    assert_eq!(row(&out, "max_rss_mb"), ("512", "flag --max-rss-mb"));
}

#[test]
fn environment_configures_a_running_server_and_flags_win() {
    let p = project();
    // PYRS_THREADS (the flag's name) and PYRS_BIND work like the flags.
    let s = Server::start_with(&p, &[], &[("PYRS_THREADS", "5")]);
    assert!(s.stdout().contains("threads: 5"), "{}", s.stdout());
    assert_eq!(s.get("/hello").text(), "world");
    let s = Server::start_with(&p, &["--threads", "2"], &[("PYRS_THREADS", "5")]);
    assert!(s.stdout().contains("threads: 2"), "{}", s.stdout());
    // Worker mode from the environment alone.
    let s = Server::start_with(&p, &[], &[("PYRS_WORKERS", "2")]);
    assert!(s.stdout().contains("workers: 2"), "{}", s.stdout());
    assert_eq!(s.get("/hello").text(), "world");
}

#[test]
fn bad_values_are_errors_naming_their_origin() {
    let p = project();
    let file = p.file();
    let (code, _, err) = run_pyrs(&[file.to_str().unwrap(), "--check"], &[("PYRS_WORKERS", "many")]);
    assert_eq!(code, 1);
    assert!(err.contains("environment PYRS_WORKERS=many: workers must be an integer"), "{err}");
    let (code, _, err) = run_pyrs(&[file.to_str().unwrap(), "--check", "--max-requests=-1"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--max-requests"), "{err}");
    // A misspelt variable is reported, not silently ignored.
    let (code, _, err) = run_pyrs(&[file.to_str().unwrap(), "--print-config"], &[("PYRS_THRAEDS", "4")]);
    assert_eq!(code, 0);
    assert!(err.contains("PYRS_THRAEDS is not a pyrs setting"), "{err}");
}
