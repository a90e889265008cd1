//! The `pyrs` command: read the settings (flags, `PYRS_<KEY>` variables,
//! the project file), then either supervise worker processes
//! (`workers::master`, with `workers`) or serve as a single process: own the
//! signals, start Python, open every configured listener (or take the
//! sockets inherited across a SIGHUP re-exec) before the long load, load the
//! handlers, serve until SIGINT/SIGTERM and shut down cleanly, or re-exec
//! for a reload.

use pyrs::cli::Cli;
use pyrs::config::Config;
use pyrs::http::forwarded;
use pyrs::observe::{self, metrics::Region, view::RouteLabel, Health, LocalSource, Observer};
use pyrs::python::{interpreter, PyApp};
use pyrs::server::activity::Activity;
use pyrs::server::timeout::{self, HandlerTimeout};
use pyrs::server::{self, listener, reexec, signals::SignalPipe, ServeEnd, ServerConfig};
use pyrs::workers;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    pyrs::logging::init(log::LevelFilter::Info);
    match Cli::parse().and_then(run) {
        Ok(()) => {
            pyrs::logging::flush(pyrs::logging::EXIT_FLUSH);
            // pyo3 never finalises the interpreter; leave without running
            // destructors that would need it.
            std::process::exit(0);
        }
        Err(msg) => {
            pyrs::logging::flush(pyrs::logging::EXIT_FLUSH);
            let _ = writeln!(std::io::stderr(), "error: {msg}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let cfg = Config::load_layered(&cli.project, cli.env, cli.flags).map_err(|e| e.to_string())?;
    pyrs::logging::init(cfg.log_level);
    // Debug builds only: PYRS_INTERNAL_FAULT (tests inject panics with it).
    pyrs::fault::arm();
    pyrs::http::encode::set_server_header(cfg.server_header);
    for name in &cli.unknown_env {
        log::warn!("environment variable {name} is not a pyrs setting (ignored)");
    }
    if cli.print_config {
        print_config(&cfg);
        return Ok(());
    }
    let venv = cfg.venv.clone();
    cfg.observe.validate().map_err(|e| format!("{}: {e}", cfg.file.display()))?;
    pyrs::sd_notify::init();
    if std::env::var_os(workers::ENV_ROLE).is_some_and(|r| r == "template") {
        // The template forks: it stays single-threaded and logs directly.
        return workers::template::run(&cfg, venv.as_deref());
    }
    let worker_mode = cfg.workers.count.is_some() && !cli.check;
    // As a container's PID 1, a small init process stays PID 1 (reaping
    // orphans, forwarding signals) and the server runs as its child. Before
    // any thread exists (the log writer is one).
    if !worker_mode && !cli.check {
        pyrs::pid1::init_if_pid1();
    }
    pyrs::logging::start_writer();
    if worker_mode {
        return workers::master::run(&cfg);
    }

    let w = &cfg.workers;
    let defaults = pyrs::config::Workers::default();
    if w.max_requests != 0 || w.max_rss_mb != 0 || w.preload != defaults.preload {
        log::warn!("preload, max_requests and max_rss_mb apply only with worker processes (set workers)");
    }

    // Rust owns SIGINT/SIGTERM/SIGHUP; install before Python starts.
    let signals = SignalPipe::install_for(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    interpreter::initialize(venv.as_deref())?;

    if cli.check {
        let app =
            PyApp::load(&cfg.project_dir, &cfg.modules, &mut |line| pyrs::say!("{line}")).map_err(|e| e.to_string())?;
        drop(app);
        pyrs::say!("OK: {} is valid ({} routes)", cfg.file.display(), cfg.modules.len());
        return Ok(());
    }

    // Bind before loading: a port in use fails at once, not after a long model
    // load. After a SIGHUP re-exec the sockets are inherited instead.
    let reloaded = listener::inherited()?;
    let is_reload = reloaded.is_some();
    let listeners = match reloaded {
        Some(ls) => {
            if let Some(why) = listener::differences(&cfg.listeners, &ls) {
                log::warn!("{why}: a reload keeps the listening sockets; restart pyrs to listen elsewhere");
            }
            ls
        }
        None => listener::open_all(&cfg.listeners, cfg.listen_backlog, cfg.unix_socket_mode)?,
    };
    forwarded::install(cfg.forwarded_allow_ips.clone());

    // Metrics and the admin listener come up before the (possibly long) load:
    // /readyz answers 503 until the server serves.
    let health = Arc::new(Health::default());
    let region = Region::heap(observe::layout_of(&cfg));
    if let Some(addr) = cfg.observe.admin_listen {
        let source = LocalSource {
            region: region.clone(),
            labels: RouteLabel::for_routes(&cfg.modules),
            health: health.clone(),
        };
        observe::admin::start(listener::bind(addr, 64), Arc::new(source))?;
    }
    let observer = Observer::new(&cfg.observe, &cfg.modules, cfg.thread_count, region, health)?;

    let announce = |line: String| if is_reload { log::info!("{line}") } else { pyrs::say!("{line}") };
    announce(format!("Starting pyrs {} with {}", env!("CARGO_PKG_VERSION"), PyApp::python_info()));
    let app = PyApp::load(&cfg.project_dir, &cfg.modules, &mut |line| announce(line)).map_err(|e| e.to_string())?;
    app.close_in_forked_children(&listeners)?;
    announce(format!("{}, threads: {}", listener::describe_first(&listeners), cfg.thread_count));
    for l in &listeners {
        announce(format!("Listening on {}", l.url()));
    }
    if is_reload {
        log::info!("reloaded: serving the new code");
    }
    pyrs::sd_notify::ready();

    // Pool threads first, then batch threads (server::batch).
    let activity = Arc::new(Activity::new(cfg.thread_count + cfg.batch_threads()));
    let server_cfg = ServerConfig {
        thread_count: cfg.thread_count,
        tcp_nodelay: cfg.tcp_nodelay,
        shutdown_timeout: cfg.shutdown_timeout,
        limits: cfg.limits.clone(),
        activity: Some(activity.clone()),
        observer: Arc::new(observer),
        shared_accept: false,
        accept_share: None,
        stuck_after: None,
        on_serving: None,
        reload_check: Some(reexec::check_new_code),
        repeat_signal_exits: true,
    };
    let app = Arc::new(app);
    // A single process cannot replace itself: a handler stuck past the grace
    // is logged, and its thread stays busy (new connections go to the others).
    // Coroutines are bounded by the same timeout, on the asyncio loop.
    pyrs::python::aio::set_handler_timeout(cfg.workers.timeout);
    let handler_timeout = HandlerTimeout {
        timeout: cfg.workers.timeout,
        grace: HandlerTimeout::grace_for(cfg.workers.timeout),
        routes: cfg.modules.iter().map(|r| r.path.clone()).collect(),
        on_stuck: Box::new(|run, route| {
            log::error!(
                "handler for route {route} still runs after {:.1} s despite pyrs.Timeout (stuck outside Python \
                 bytecode); its thread stays busy (with workers it would be replaced)",
                run.elapsed.as_secs_f64()
            )
        }),
    };
    timeout::start(app.clone(), activity, handler_timeout)
        .map_err(|e| format!("cannot start the timeout thread: {e}"))?;
    let outcome =
        server::serve(app.clone(), listeners, signals, server_cfg).map_err(|e| format!("server failed: {e}"))?;
    pyrs::app::App::shutdown(&*app);
    match outcome {
        ServeEnd::Stopped => {
            log::info!("stopped");
            Ok(())
        }
        ServeEnd::Reload(listeners) => Err(reexec::exec_with(listeners)),
    }
}

/// `--print-config`: every key's effective value and where it came from.
fn print_config(cfg: &Config) {
    pyrs::say!("# pyrs {}: effective configuration of {}", env!("CARGO_PKG_VERSION"), cfg.file.display());
    pyrs::say!("# precedence: flag > environment (PYRS_<KEY>) > project file > default");
    let rows = cfg.effective();
    let width = rows.iter().map(|(k, v)| k.len() + v.len() + 3).max().unwrap_or(0);
    for (key, value) in rows {
        let line = format!("{key} = {value}");
        pyrs::say!("{line:<width$}  # {}", cfg.source(key));
    }
    let listeners: Vec<String> = cfg.listeners.iter().map(|l| l.to_string()).collect();
    pyrs::say!("# listening on: {}", listeners.join(", "));
}
