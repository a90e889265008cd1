//! Start-up: the banner, `--check`, and every start-up failure with its
//! message and exit status.

mod common;
use common::*;

const OK_API: &str = "class Api:\n    def hello(self, request):\n        return 'world'\n";

fn run(project: &Project, extra: &[&str]) -> (i32, String, String) {
    let file = project.file();
    // An ephemeral port: tests run in parallel.
    let mut args = vec![file.to_str().unwrap(), "--bind", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    run_pyrs(&args, &[])
}

#[test]
fn banner_lists_routes_address_and_threads() {
    let p = Project::simple(OK_API, &[("/hello", "hello")], "\"thread_count\": 3,");
    let s = Server::start(&p, &[]);
    let out = s.stdout();
    assert!(out.contains("Added route /hello -> main.Api.hello (all methods)"), "{out}");
    assert!(out.contains(&format!("Address: 127.0.0.1, port: {}, threads: 3", s.addr.port())), "{out}");
    assert!(out.contains(&format!("Listening on http://{}", s.addr)), "{out}");
}

#[test]
fn flags_override_the_file() {
    let p = Project::simple(OK_API, &[("/hello", "hello")], "\"thread_count\": 3,");
    let s = Server::start(&p, &["--threads", "5"]);
    assert!(s.stdout().contains("threads: 5"), "{}", s.stdout());
}

#[test]
fn check_validates_without_serving() {
    let p = Project::simple(OK_API, &[("/hello", "hello")], "");
    let (code, out, err) = run(&p, &["--check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("OK:") && out.contains("(1 routes)"), "{out}");
    assert!(!out.contains("Listening"), "{out}");

    let bad = Project::simple(OK_API, &[("/hello", "missing")], "");
    let (code, _, err) = run(&bad, &["--check"]);
    assert_eq!(code, 1);
    assert!(err.contains("class main.Api has no method \"missing\" (route /hello)"), "{err}");
}

#[test]
fn missing_project_file() {
    let (code, _, err) = run_pyrs(&["/nonexistent/project.pyrs"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("error: /nonexistent/project.pyrs: cannot read project file"), "{err}");
}

#[test]
fn unknown_key_is_rejected_with_line_and_column() {
    let p = Project::new(&[
        ("main.py", OK_API),
        ("project.pyrs", "{\n  // comment\n  \"thread_cout\": 4,\n  \"modules\": [{\"path\": \"/hello\", \"module\": \"main\", \"class\": \"Api\", \"handler\": \"hello\"}]\n}\n"),
    ]);
    let (code, _, err) = run(&p, &[]);
    assert_eq!(code, 1);
    let file = p.file();
    let want = format!("error: {}:3:3: unknown field `thread_cout`", file.display());
    assert!(err.contains(&want), "want {want:?} in:\n{err}");
}

#[test]
fn bad_values_name_their_position() {
    let p = Project::new(&[
        ("main.py", OK_API),
        ("project.pyrs", "{\n\"thread_count\": 0,\n\"modules\": [{\"path\": \"/hello\", \"module\": \"main\", \"class\": \"Api\", \"handler\": \"hello\"}]}"),
    ]);
    let (code, _, err) = run(&p, &[]);
    assert_eq!(code, 1);
    assert!(err.contains(":2:17: thread_count must be between 1 and 1024, got 0"), "{err}");

    let p = Project::new(&[("main.py", OK_API), ("project.pyrs", "{\n\"modules\": [],\n}")]);
    let (code, _, err) = run(&p, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("modules must list at least one route"), "{err}");

    let p = Project::new(&[("main.py", OK_API), ("project.pyrs", "{\n\"thread_count\": 2\n}")]);
    let (code, _, err) = run(&p, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("missing field `modules`"), "{err}");

    let p = Project::new(&[("main.py", OK_API), ("project.pyrs", "{\n\"thread_count\": 2,,\n}")]);
    let (code, _, err) = run(&p, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("project.pyrs:2:"), "{err}");
}

#[test]
fn duplicate_route_is_rejected() {
    let p = Project::simple(OK_API, &[("/hello", "hello"), ("/hello", "hello")], "");
    let (code, _, err) = run(&p, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("duplicate route \"/hello\""), "{err}");
}

#[test]
fn import_error_shows_traceback() {
    let p = Project::simple("import no_such_module_xyz\n", &[("/hello", "hello")], "");
    let (code, _, err) = run(&p, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot import module \"main\""), "{err}");
    assert!(err.contains("ModuleNotFoundError: No module named 'no_such_module_xyz'"), "{err}");
    assert!(err.contains("Traceback"), "{err}");
}

#[test]
fn raising_init_shows_traceback() {
    let src = "class Api:\n    def __init__(self):\n        raise RuntimeError('model file missing')\n    def hello(self, r):\n        return 'x'\n";
    let p = Project::simple(src, &[("/hello", "hello")], "");
    let (code, _, err) = run(&p, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("main.Api() raised"), "{err}");
    assert!(err.contains("RuntimeError: model file missing"), "{err}");
}

#[test]
fn missing_class_and_non_callable_handler() {
    let p = Project::new(&[
        ("main.py", "class Api:\n    value = 3\n"),
        ("project.pyrs", r#"{"modules": [{"path": "/a", "module": "main", "class": "Nope", "handler": "value"}]}"#),
    ]);
    let (code, _, err) = run(&p, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("module \"main\" has no class \"Nope\""), "{err}");

    let p = Project::simple("class Api:\n    value = 3\n", &[("/a", "value")], "");
    let (code, _, err) = run(&p, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("main.Api.value is not callable (route /a)"), "{err}");
}

#[test]
fn address_in_use() {
    let p = Project::simple(OK_API, &[("/hello", "hello")], "");
    let s = Server::start(&p, &[]);
    let bind = s.addr.to_string();
    let file = p.file();
    let (code, _, err) = run_pyrs(&[file.to_str().unwrap(), "--bind", &bind], &[]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("cannot listen on {bind}")) && err.contains("in use"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    let (code, _, err) = run_pyrs(&[], &[]);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = run_pyrs(&["p.pyrs", "--threads", "0"], &[]);
    assert_eq!(code, 2);
    let (code, _, _) = run_pyrs(&["p.pyrs", "--no-such-flag"], &[]);
    assert_eq!(code, 2);
    let (code, out, _) = run_pyrs(&["--version"], &[]);
    assert_eq!(code, 0);
    assert!(out.starts_with("pyrs "), "{out}");
}

#[test]
fn python_is_the_one_pyrs_was_built_against() {
    let src = "import sys\nclass Api:\n    def info(self, r):\n        libs = sorted({l.split()[-1] for l in open('/proc/self/maps') if 'libpython' in l})\n        return {'version': sys.version, 'prefix': sys.prefix, 'path0': sys.path[0], 'libs': libs}\n";
    let p = Project::simple(src, &[("/info", "info")], "");
    let s = Server::start_with(&p, &[], &[("LD_LIBRARY_PATH", ""), ("PYTHONPATH", "/tmp/pyrs-extra-path")]);
    let v: serde_json::Value = serde_json::from_slice(&s.get("/info").body).unwrap();
    let python = env!("PYRS_BUILD_PYTHON");
    let out = std::process::Command::new(python).args(["-c", "import sys, sysconfig, os; print(sys.version); print(sys.base_prefix); print(os.path.realpath(os.path.join(sysconfig.get_config_var('LIBDIR'), sysconfig.get_config_var('INSTSONAME'))))"]).output().unwrap();
    let expected = String::from_utf8(out.stdout).unwrap();
    let mut lines = expected.lines();
    assert_eq!(v["version"], lines.next().unwrap());
    assert_eq!(v["prefix"], lines.next().unwrap());
    // Exactly the libpython of that interpreter is mapped, found without LD_LIBRARY_PATH.
    let libs: Vec<String> = v["libs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| std::fs::canonicalize(l.as_str().unwrap()).unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(libs, vec![lines.next().unwrap().to_string()]);
    // The project directory comes first, before PYTHONPATH entries.
    assert_eq!(v["path0"], p.dir.canonicalize().unwrap().to_str().unwrap());
}

#[test]
fn virtualenv_packages_are_importable() {
    let python = env!("PYRS_BUILD_PYTHON");
    let venv = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("venv-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&venv);
    let ok =
        std::process::Command::new(python).args(["-m", "venv", "--without-pip"]).arg(&venv).status().unwrap().success();
    assert!(ok, "python -m venv failed");
    // A package only this venv has, written straight into its site-packages.
    let site = std::fs::read_dir(venv.join("lib")).unwrap().next().unwrap().unwrap().path().join("site-packages");
    std::fs::write(site.join("pyrs_venv_probe.py"), "MARK = 'from-venv'\n").unwrap();
    let src = "import sys, pyrs_venv_probe\nclass Api:\n    def info(self, r):\n        return {'mark': pyrs_venv_probe.MARK, 'prefix': sys.prefix}\n";
    let p = Project::simple(src, &[("/info", "info")], "");
    let venv_str = venv.to_str().unwrap();
    let s = Server::start_with(&p, &[], &[("VIRTUAL_ENV", venv_str)]);
    let v: serde_json::Value = serde_json::from_slice(&s.get("/info").body).unwrap();
    assert_eq!(v["mark"], "from-venv");
    assert_eq!(v["prefix"], venv_str);

    // --venv does the same; without either the package is missing.
    let file = p.file();
    let (code, _, err) = run_pyrs(&[file.to_str().unwrap(), "--check", "--venv", venv_str], &[]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run_pyrs(&[file.to_str().unwrap(), "--check"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("No module named 'pyrs_venv_probe'"), "{err}");
    let (code, _, err) = run_pyrs(&[file.to_str().unwrap(), "--check", "--venv", "/nonexistent-venv"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("is not a virtualenv"), "{err}");
}

#[test]
fn worker_settings_without_workers_are_flagged() {
    let p = Project::simple(OK_API, &[("/hello", "hello")], "\"max_requests\": 10,");
    let s = Server::start(&p, &[]);
    assert_eq!(s.get("/hello").text(), "world");
    s.wait_stderr("apply only with worker processes", 30);
}

#[test]
fn a_hundred_thousand_routes_start_and_the_last_ones_are_served() {
    // Start-up was quadratic in the number of routes (each one re-parsed every
    // earlier one): 100k exact routes had not started after 69 s. Now each
    // route costs a hash lookup or two; benches/routes/startup.sh times it.
    let mut routes: Vec<String> = (0..100_000)
        .map(|i| format!(r#"{{"path": "/r{i}", "module": "main", "class": "Api", "handler": "hello"}}"#))
        .collect();
    routes.extend(
        (0..10_000)
            .map(|i| format!(r#"{{"path": "/p{i}/{{id}}", "module": "main", "class": "Api", "handler": "param"}}"#)),
    );
    let pyrs = format!("{{\"modules\": [\n{}\n]}}\n", routes.join(",\n"));
    let api = "class Api:\n    def hello(self, r):\n        return r.path\n    def param(self, r):\n        return r.params['id']\n";
    let p = Project::new(&[("main.py", api), ("project.pyrs", &pyrs)]);
    let s = Server::start(&p, &[]);
    assert_eq!(s.get("/r99999").text(), "/r99999");
    assert_eq!(s.get("/p9999/abc").text(), "abc");
    assert_eq!(s.get("/p0/x").text(), "x");
    assert_eq!(s.get("/r100000").status, 404);
}
