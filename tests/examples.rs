//! The shipped examples (echo, en_fr_translator), the project template and
//! build_all_and_install.sh's prerequisite checks, through the real binary.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A project that already exists in the repository (examples/..., project_template).
fn shipped(dir: &str) -> Project {
    Project { dir: repo().join(dir) }
}

/// Serves a shipped project on an ephemeral port without writing __pycache__ into the repo.
fn serve(dir: &str) -> Server {
    Server::start_with(&shipped(dir), &[], &[("PYTHONDONTWRITEBYTECODE", "1")])
}

fn post_text(server: &Server, path: &str, text: &str) -> Response {
    server.post(path, text.as_bytes())
}

fn json(r: &Response) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&r.body)))
}

// ---------------------------------------------------------------- translator

const TRANSLATOR: &str = "examples/en_fr_translator";

/// Entries in words.tsv: lines that are neither blank nor comments.
fn table_entries() -> usize {
    let text = std::fs::read_to_string(repo().join(TRANSLATOR).join("words.tsv")).unwrap();
    text.lines().filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')).count()
}

#[test]
fn translator_loads_its_table_once_at_start_up() {
    let server = serve(TRANSLATOR);
    let entries = table_entries();
    assert!(entries >= 200, "the word table should hold a few hundred entries, has {entries}");
    // Every route shares one instance, over one keep-alive connection and several.
    let mut c = server.connect();
    for path in ["/translate?q=hello", "/translate.json?q=hello", "/", "/translate?q=summer"] {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        assert!(c.read_response().status < 500, "{path}");
    }
    for _ in 0..3 {
        assert_eq!(post_text(&server, "/translate", "dog").text(), "chien");
    }
    let out = server.stdout();
    let loads: Vec<&str> = out.lines().filter(|l| l.contains("en_fr_translator: loaded")).collect();
    assert_eq!(loads.len(), 1, "the table must be loaded exactly once; stdout:\n{out}");
    assert!(loads[0].contains(&format!("loaded {entries} entries")), "{}", loads[0]);
    let load_at = out.find("en_fr_translator: loaded").unwrap();
    assert!(load_at < out.find("Listening on").unwrap(), "loaded after listening:\n{out}");
}

#[test]
fn translator_returns_accented_french_as_utf8() {
    let server = serve(TRANSLATOR);
    let r = post_text(&server, "/translate", "Where is the boy? He is very happy in summer!");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
    // The exact bytes: ù, ç, è and é each encoded as two UTF-8 bytes.
    let expected: &[u8] = b"O\xc3\xb9 est le gar\xc3\xa7on? Il est tr\xc3\xa8s heureux en \xc3\xa9t\xc3\xa9!";
    assert_eq!(r.body, expected, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.text(), "Où est le garçon? Il est très heureux en été!");
    assert_eq!(r.header("Content-Length"), Some(expected.len().to_string().as_str()));

    // GET ?q= with form encoding (+ for spaces, %3F for '?').
    let r = server.get("/translate?q=The+boy+is+very+happy+in+summer.");
    assert_eq!((r.status, r.text().as_str()), (200, "Le garçon est très heureux en été."));
    let r = server.get("/translate?q=Where%20is%20the%20French%20girl%3F");
    assert_eq!(r.text(), "Où est le français fille?");

    // Capitals follow the source (I and days only at a sentence start), elision
    // applies, newlines and unknown words pass through.
    let r = post_text(&server, "/translate", "HELLO WORLD\nThe man and I eat bread on Monday. I am Zorblax!\n");
    assert_eq!(r.text(), "BONJOUR MONDE\nL'homme et je manger pain sur lundi. Je suis Zorblax!\n");

    // Non-ASCII input that the table does not know comes back byte for byte.
    let r = post_text(&server, "/translate", "café, naïve 東京 — ok");
    assert_eq!(r.text(), "café, naïve 東京 — d'accord");
}

#[test]
fn translator_json_variant() {
    let server = serve(TRANSLATOR);
    let r = post_text(&server, "/translate.json", "Hello Zorblax, thank you very much! Zorblax is tired in winter.");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let v = json(&r);
    assert_eq!(v["source"], "Hello Zorblax, thank you very much! Zorblax is tired in winter.");
    assert_eq!(v["translation"], "Bonjour Zorblax, merci très beaucoup! Zorblax est fatigué en hiver.");
    assert_eq!(v["unknown"], serde_json::json!(["Zorblax"]));

    let r = server.get("/translate.json?q=good+morning%2C+my+friend");
    let v = json(&r);
    assert_eq!(v["source"], "good morning, my friend");
    assert_eq!(v["translation"], "bonjour, mon ami");
    assert_eq!(v["unknown"], serde_json::json!([]));

    // Accented text inside JSON round-trips too.
    let v = json(&post_text(&server, "/translate.json", "où été"));
    assert_eq!(v["translation"], "où été");
    assert_eq!(v["unknown"], serde_json::json!(["où", "été"]));
}

#[test]
fn translator_usage_and_errors() {
    let server = serve(TRANSLATOR);
    let r = server.get("/");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("/translate.json"), "{}", r.text());
    assert_eq!(server.get("/no/such/page").status, 404);
    // No text at all: 400 with a hint, not a 500.
    let r = server.get("/translate");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("q="), "{}", r.text());
    // A body that is not UTF-8: 400.
    let r = server.post("/translate", b"\xff\xfe\x00");
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    // Only GET and POST are routed.
    let r = server.request("DELETE /translate HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 405);
    assert!(r.header("Allow").unwrap().contains("POST"));
    // An empty body translates to nothing.
    let r = server.post("/translate", b"");
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert!(!server.stderr().contains("ERROR"), "stderr:\n{}", server.stderr());
}

// ---------------------------------------------------------------- echo

#[test]
fn echo_example_routes() {
    let server = serve("examples/echo");
    let body = b"hello\x00\xffworld";
    let r = server.post("/echo", body);
    assert_eq!((r.status, r.body.as_slice()), (200, &body[..]));
    assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
    let r = server.get("/hello");
    assert_eq!((r.status, r.text().as_str()), (200, "world"));
    assert_eq!(server.post("/hello", b"x").status, 405);
    for path in ["/", "/anything/else?x=1"] {
        let r = server.get(path);
        assert_eq!(r.status, 404, "{path}");
        assert!(r.text().starts_with("pyrs echo example"), "{path}: {}", r.text());
    }
}

// ---------------------------------------------------------------- project template

#[test]
fn project_template_passes_check() {
    let file = repo().join("project_template/project.pyrs");
    let (code, out, err) = run_pyrs(&[file.to_str().unwrap(), "--check"], &[("PYTHONDONTWRITEBYTECODE", "1")]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    // README quotes this line for a copy of the template: keep them in step.
    assert!(out.contains("project.pyrs is valid (6 routes)"), "{out}");
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(readme.contains("\"OK: project.pyrs is valid (6 routes)\""), "README quotes another --check line");
}

#[test]
fn project_template_serves_its_api() {
    let server = serve("project_template");
    assert_eq!(server.post("/echo", b"ping").body, b"ping");
    assert_eq!(server.get("/hello").text(), "world");
    assert_eq!(server.get("/hello?name=Ada").text(), "Ada");
    assert_eq!(server.get("/users/42?tag=a&tag=b").text(), r#"{"id":42,"tags":["a","b"]}"#);
    let r = server.request(
        "POST /login HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 8\r\n\r\nname=Ada",
    );
    assert_eq!((r.status, r.header("location")), (303, Some("/hello?name=Ada")));
    assert_eq!(r.header("set-cookie"), Some("user=Ada; HttpOnly; SameSite=Lax; Path=/; Max-Age=3600"));
    assert_eq!(server.get("/").status, 200);
    assert_eq!(server.get("/missing").status, 404);
}

/// Field names of `struct NAME { ... }` in src/config.rs (`RawConfig`: the
/// keys of the `settings! { key: Type = "deserializer", ... }` table).
fn struct_fields(source: &str, name: &str) -> Vec<String> {
    let opening = if name == "RawConfig" { "settings! {".to_string() } else { format!("struct {name} {{") };
    let start = source.find(&opening).unwrap_or_else(|| panic!("no {opening} in config.rs"));
    let body = &source[start..];
    let body = &body[body.find('{').unwrap() + 1..body.find("\n}").unwrap()];
    body.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//") && !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("pub ").unwrap_or(l).split_once(':'))
        // A raw identifier (`r#static`) is the key without its `r#`.
        .map(|(field, _)| field.trim().trim_start_matches("r#").to_string())
        .collect()
}

/// The template's comments explain every key the server accepts: each one
/// appears as a live `"key":` entry (so `--check` proves it is accepted).
#[test]
fn project_template_lists_every_config_key() {
    let config = std::fs::read_to_string(repo().join("src/config.rs")).unwrap();
    let template = std::fs::read_to_string(repo().join("project_template/project.pyrs")).unwrap();
    let mut keys = struct_fields(&config, "RawConfig");
    assert!(keys.len() >= 10 && keys.contains(&"modules".to_string()), "{keys:?}");
    keys.extend(struct_fields(&config, "RouteSpec"));
    for key in keys {
        assert!(template.contains(&format!("\"{key}\":")), "project_template/project.pyrs does not explain {key:?}");
    }
    for form in ["/echo", "/users/{id}", "/static/*", "/*"] {
        assert!(template.contains(form), "route form {form} is not explained");
    }
}

// ---------------------------------------------------------------- build_all_and_install.sh

fn script() -> PathBuf {
    repo().join("build_all_and_install.sh")
}

/// Runs the script (never far enough to build): (exit code, stdout + stderr).
/// A non-empty `env` replaces any PYO3_PYTHON / PYTHON the tests run with.
fn run_script(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = Command::new("bash");
    cmd.arg(script()).args(args);
    if !env.is_empty() {
        cmd.env_remove("PYO3_PYTHON").env_remove("PYTHON");
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run bash");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn install_script_is_valid_bash() {
    let status = Command::new("bash").arg("-n").arg(script()).status().unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(script()).unwrap();
    assert!(text.starts_with("#!/usr/bin/env bash\n"));
    assert!(text.contains("set -euo pipefail"));
}

#[test]
fn install_script_names_a_missing_interpreter() {
    let (code, out) = run_script(&[], &[("PYO3_PYTHON", "/nonexistent/python3.99")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("/nonexistent/python3.99") && out.contains("PYO3_PYTHON"), "{out}");
    assert!(!out.contains("building"), "must stop before building:\n{out}");
    let (code, out) = run_script(&["--check"], &[("PYTHON", "no-such-python-here")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no-such-python-here") && out.contains("PYTHON"), "{out}");
}

/// A stand-in interpreter that answers the script's query with `answer`.
fn fake_python(name: &str, answer: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fake-python-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\ncat <<'EOF'\n{answer}EOF\n")).unwrap();
    Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    path
}

#[test]
fn install_script_explains_an_unusable_python() {
    let cases = [
        (
            "old",
            "implementation=cpython\nversion=3.8.10\nshort=3.8\nshared=1\nlibdir=/usr/lib\nldlibrary=libpython3.8.so\n",
            "3.9 or newer",
        ),
        (
            "static",
            "implementation=cpython\nversion=3.11.4\nshort=3.11\nshared=0\nlibdir=/usr/lib\nldlibrary=libpython3.11.a\n",
            "--enable-shared",
        ),
        (
            "nolib",
            "implementation=cpython\nversion=3.12.1\nshort=3.12\nshared=1\nlibdir=/nonexistent\nldlibrary=libpython3.12.so\n",
            "python3.12-dev",
        ),
        (
            "pypy",
            "implementation=pypy\nversion=3.10.14\nshort=3.10\nshared=1\nlibdir=/usr/lib\nldlibrary=libpypy3.so\n",
            "needs CPython",
        ),
    ];
    for (name, answer, expected) in cases {
        let python = fake_python(name, answer);
        let (code, out) = run_script(&["--check"], &[("PYO3_PYTHON", python.to_str().unwrap())]);
        assert_eq!(code, 1, "{name}: {out}");
        assert!(out.contains(expected), "{name}: expected {expected:?} in:\n{out}");
    }
}

/// The interpreter this binary was built with (python3 on PATH, or the
/// PYO3_PYTHON / PYTHON the tests inherit) passes the script's checks.
#[test]
fn install_script_accepts_the_build_interpreter() {
    let (code, out) = run_script(&["--check"], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("all prerequisites found"), "{out}");
}

/// `request.text` on a body that is not UTF-8 raises a UnicodeDecodeError a
/// handler can catch (it once raised a TypeError instead).
#[test]
fn request_text_raises_unicode_decode_error() {
    let project = Project::simple(
        "class Api:\n    def t(self, request):\n        try:\n            return request.text\n        except UnicodeDecodeError:\n            return ('not utf-8', 400)\n",
        &[("/t", "t")],
        "",
    );
    let server = Server::start(&project, &[]);
    let r = server.post("/t", b"\xff\xfe");
    assert_eq!((r.status, r.text().as_str()), (400, "not utf-8"), "stderr:\n{}", server.stderr());
}
