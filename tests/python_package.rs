//! The pip-installable `pyrs` package (python/, distribution `pyrs-server`),
//! installed editable into target/test-venv by tests/setup.sh:
//! - the same handler cases through the real server and through
//!   pyrs.testing give the same bytes (Date and X-Request-Id aside);
//! - its pytest suite (python/tests) passes;
//! - `mypy --strict` passes on project_template and on every examples/*/
//!   with a main.py (found on disk, so a new example is checked too);
//! - its version is Cargo.toml's, and inside the server the built-in module wins.

mod common;
use common::*;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A tool of target/test-venv, which tests/setup.sh makes.
fn venv_bin(name: &str) -> PathBuf {
    let bin = repo().join("target/test-venv/bin").join(name);
    assert!(bin.exists(), "{} is missing: run tests/setup.sh", bin.display());
    bin
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.stdin(Stdio::null()).output().expect("run a tool of target/test-venv");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// (method, target, extra headers, body)
type Case = (&'static str, &'static str, Vec<(&'static str, &'static str)>, &'static str);

fn cases() -> Vec<Case> {
    let form = "application/x-www-form-urlencoded";
    let multipart = "multipart/form-data; boundary=XyZ";
    let mp_body = "--XyZ\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nHello\r\n--XyZ\r\nContent-Disposition: form-data; name=\"doc\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nfile body\r\n--XyZ--\r\n";
    vec![
        ("GET", "/text", vec![], ""),
        ("HEAD", "/text", vec![], ""),
        ("GET", "/raw", vec![], ""),
        ("GET", "/data", vec![], ""),
        ("GET", "/listing", vec![], ""),
        ("GET", "/nothing", vec![], ""),
        ("GET", "/created", vec![], ""),
        ("GET", "/response", vec![], ""),
        ("GET", "/go", vec![], ""),
        ("GET", "/missing", vec![], ""),
        ("GET", "/teapot", vec![], ""),
        ("GET", "/boom", vec![], ""),
        ("GET", "/bad_header", vec![], ""),
        ("GET", "/nan", vec![], ""),
        ("GET", "/gen_boom", vec![], ""),
        ("HEAD", "/gen_boom", vec![], ""),
        ("GET", "/gen_http_error", vec![], ""),
        ("HEAD", "/gen_http_error", vec![], ""),
        ("GET", "/async_created", vec![], ""),
        ("HEAD", "/async_created", vec![], ""),
        ("GET", "/async_teapot", vec![], ""),
        ("GET", "/async_boom", vec![], ""),
        ("GET", "/info?a=1&b=x+y&a=2&caf%C3%A9=%E2%9C%93", vec![("Cookie", "sid=abc; theme=\"dark\"; sid=2")], ""),
        ("POST", "/info", vec![("Content-Type", "text/plain")], "some body"),
        ("GET", "/%69nfo", vec![], ""),
        ("GET", "/users/a%20b/posts/..%2Fx", vec![], ""),
        ("GET", "/users/1/../2/posts/3", vec![], ""),
        ("GET", "/static/a/b.css", vec![], ""),
        ("GET", "/static", vec![], ""),
        ("POST", "/form", vec![("Content-Type", form)], "a=1&b=two+words&a=3"),
        ("POST", "/form", vec![("Content-Type", multipart)], mp_body),
        ("POST", "/form", vec![("Content-Type", "multipart/form-data")], "x"),
        (
            "POST",
            "/json",
            vec![("Content-Type", "application/json")],
            "{\"n\": 123456789012345678901234567890, \"f\": 0.5}",
        ),
        ("POST", "/json", vec![], "{\"a\": NaN}"),
        ("POST", "/json", vec![], "[1e400]"),
        ("POST", "/json", vec![], "{oops"),
        ("GET", "/nowhere", vec![], ""),
        ("DELETE", "/form", vec![], ""),
        ("get", "/text", vec![], ""),
        ("BREW", "/text", vec![], ""),
    ]
}

/// The response without its Date and X-Request-Id lines.
fn comparable(raw: &str) -> String {
    raw.split("\r\n")
        .filter(|l| !l.starts_with("Date: ") && !l.starts_with("X-Request-Id: "))
        .collect::<Vec<_>>()
        .join("\r\n")
}

#[test]
fn server_and_pyrs_testing_answer_with_the_same_bytes() {
    let python = venv_bin("python");
    let project = Project { dir: repo().join("tests/pyrs_conformance") };
    let server = Server::start_with(&project, &[], &[("PYTHONDONTWRITEBYTECODE", "1")]);
    let cases = cases();
    let mut from_server = Vec::new();
    for (method, target, headers, body) in &cases {
        let mut raw = format!("{method} {target} HTTP/1.1\r\nHost: testserver\r\n");
        for (n, v) in headers {
            raw.push_str(&format!("{n}: {v}\r\n"));
        }
        if !body.is_empty() {
            raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        raw.push_str("\r\n");
        raw.push_str(body);
        let mut c = server.connect();
        c.head_request = *method == "HEAD";
        c.send(raw.as_bytes());
        let r = c.read_response();
        let mut text = format!("HTTP/1.1 {} {}\r\n", r.status, r.reason);
        for (n, v) in &r.headers {
            text.push_str(&format!("{n}: {v}\r\n"));
        }
        text.push_str("\r\n");
        text.push_str(&String::from_utf8_lossy(&r.body));
        from_server.push(comparable(&text));
    }

    let requests: Vec<serde_json::Value> = cases
        .iter()
        .map(|(m, t, h, b)| {
            let mut headers = vec![serde_json::json!(["Host", "testserver"])];
            headers.extend(h.iter().map(|(n, v)| serde_json::json!([n, v])));
            serde_json::json!([m, t, headers, b])
        })
        .collect();
    let mut child = Command::new(&python)
        .arg(repo().join("tests/pyrs_conformance/run_testing.py"))
        .arg(project.file())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    child.stdin.take().unwrap().write_all(serde_json::to_string(&requests).unwrap().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "pyrs.testing failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let from_testing: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    for (i, (case, testing)) in cases.iter().zip(&from_testing).enumerate() {
        // The server's body is shown as UTF-8 text; so is the testing client's.
        let testing = String::from_utf8_lossy(&testing.chars().map(|c| c as u8).collect::<Vec<u8>>()).into_owned();
        assert_eq!(from_server[i], comparable(&testing), "case {i}: {} {}", case.0, case.1);
    }
}

#[test]
fn inside_the_server_the_built_in_module_wins() {
    // The virtualenv has the package installed; handler code still gets the server's module.
    let venv = repo().join("target/test-venv");
    assert!(venv_bin("python").exists());
    let project = Project { dir: repo().join("tests/pyrs_conformance") };
    let server = Server::start_with(&project, &["--venv", venv.to_str().unwrap()], &[("PYTHONDONTWRITEBYTECODE", "1")]);
    let want = format!(r#"{{"built_in":true,"version":"{}"}}"#, env!("CARGO_PKG_VERSION"));
    assert_eq!(server.get("/which").text(), want);
}

#[test]
fn pytest_suite_of_pyrs_testing_passes() {
    let (ok, out) = run(Command::new(venv_bin("pytest"))
        .args(["-q", "-p", "no:cacheprovider"])
        .arg(repo().join("python/tests"))
        .env("PYTHONDONTWRITEBYTECODE", "1"));
    assert!(ok, "pytest python/tests failed:\n{out}");
    assert!(out.contains(" passed"), "{out}");
}

#[test]
fn mypy_strict_passes_on_the_template_and_typed_examples() {
    // The template and every example with Python code, found on disk, so a new example is checked too.
    let mut dirs = vec![repo().join("project_template")];
    let mut examples: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("main.py").exists())
        .collect();
    examples.sort();
    assert!(examples.len() >= 2, "{examples:?}");
    dirs.extend(examples);
    for dir in dirs {
        let (ok, out) = run(Command::new(venv_bin("mypy"))
            .args(["--strict", "--no-incremental", "--cache-dir", "/dev/null", "."])
            .current_dir(&dir));
        assert!(ok && out.contains("Success"), "mypy --strict in {}:\n{out}", dir.display());
    }
}

#[test]
fn package_version_is_cargo_s() {
    let (ok, out) = run(Command::new(venv_bin("python")).args(["-c", "import pyrs; print(pyrs.__version__)"]));
    assert!(ok, "{out}");
    assert_eq!(out.trim(), env!("CARGO_PKG_VERSION"));
    let pyproject = std::fs::read_to_string(repo().join("python/pyproject.toml")).unwrap();
    assert!(pyproject.contains(&format!("version = \"{}\"", env!("CARGO_PKG_VERSION"))), "python/pyproject.toml");
}
