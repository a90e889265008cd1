//! examples/usernames: an rbloom filter and an exact set of 3,000,000
//! generated names, registrations in SQLite. With 2 workers: a registration
//! made through one worker is seen at once by the other, a name raced by 8
//! clients is given to exactly one, and a SIGHUP reload keeps every
//! registration. One server (building the 3M-name set takes 3-5 s) for all.

mod services_support;
use services_support::*;
use std::collections::{HashMap, HashSet};

/// On one keep-alive connection (so one worker): that worker's pid and its
/// answer for `name`.
fn ask_one_worker(server: &Server, name: &str) -> (i64, serde_json::Value) {
    let mut c = server.connect();
    c.send(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
    let health = json(&c.read_response());
    c.send(format!("GET /available?name={name} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    let r = c.read_response();
    assert_eq!(r.status, 200, "{}", r.text());
    (health["pid"].as_i64().unwrap(), json(&r))
}

/// `name`'s availability as each of two workers (not in `old`) sees it.
fn per_worker(server: &Server, name: &str, old: &HashSet<i64>) -> HashMap<i64, bool> {
    let mut seen = HashMap::new();
    for _ in 0..400 {
        let (pid, v) = ask_one_worker(server, name);
        if !old.contains(&pid) {
            seen.insert(pid, v["available"].as_bool().unwrap());
            if seen.len() == 2 {
                return seen;
            }
        }
    }
    panic!("fewer than 2 workers answered: {seen:?}");
}

fn register(server: &Server, name: &str) -> (u16, serde_json::Value) {
    post_json(server, "/register", &format!(r#"{{"name": "{name}"}}"#))
}

#[test]
fn usernames_are_checked_and_registered_once_across_workers_and_reloads() {
    let dir = scratch_dir("usernames");
    let db = dir.join("registered.sqlite3");
    let server = serve_example("usernames", &["rbloom"], &[], &[("USERNAMES_DB", db.to_str().unwrap())]);
    let out = server.stdout();
    assert_eq!(
        out.matches("usernames: 3000000 generated names and 0 registered ones").count(),
        1,
        "built once, in the template; stdout:\n{out}"
    );

    // Generated names are taken (a Bloom hit confirmed by the exact set);
    // others are free, most of them answered by the filter alone.
    for name in ["olivia.smith0", "olivia.smith42", "asher.powell299", "Emma.Jones7"] {
        let v = get_json(&server, &format!("/available?name={name}"));
        assert_eq!((v["available"].as_bool(), v["checked"].as_str()), (Some(false), Some("exact")), "{name}: {v}");
    }
    assert_eq!(get_json(&server, "/available?name=Emma.Jones7")["name"], "emma.jones7");
    let mut by_filter = 0;
    for n in 300..400 {
        let v = get_json(&server, &format!("/available?name=olivia.smith{n}"));
        assert_eq!(v["available"], true, "{v}");
        by_filter += (v["checked"] == "bloom") as usize;
    }
    // 1% false positives: about 1 in 100 goes on to the exact check.
    assert!(by_filter >= 90, "the filter answered only {by_filter} of 100 free names");

    let pids: HashSet<i64> = worker_pids(&server, "/health", 2).into_iter().collect();

    // A registration through one worker is final for both at once.
    let (status, v) = register(&server, "Ada.Lovelace");
    assert_eq!((status, v.clone()), (201, serde_json::json!({"name": "ada.lovelace", "registered": true})));
    assert_eq!(per_worker(&server, "ada.lovelace", &HashSet::new()).values().collect::<Vec<_>>(), [&false, &false]);
    let (status, v) = register(&server, "ada.lovelace");
    assert_eq!((status, v["reason"].as_str()), (409, Some("taken")));
    assert_eq!(register(&server, "liam.garcia12").0, 409, "a generated name cannot be registered");

    // 8 clients race for each of 5 names over fresh connections (both
    // workers): each name goes to exactly one of them.
    let wins: Vec<(String, u16)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| -> Vec<(String, u16)> {
                    (0..5).map(|i| (format!("race.{i}"), register(&server, &format!("race.{i}")).0)).collect()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    for i in 0..5 {
        let statuses: Vec<u16> = wins.iter().filter(|(n, _)| *n == format!("race.{i}")).map(|(_, s)| *s).collect();
        assert_eq!(statuses.iter().filter(|&&s| s == 201).count(), 1, "race.{i}: {statuses:?}");
        assert_eq!(statuses.iter().filter(|&&s| s == 409).count(), 7, "race.{i}: {statuses:?}");
    }
    for (pid, available) in per_worker(&server, "race.3", &HashSet::new()) {
        assert!(!available, "worker {pid} thinks race.3 is free");
    }

    // Refusals.
    for name in ["ab", "no spaces", "-dash.first", &"x".repeat(33), "caf%C3%A9"] {
        let r = server.get(&format!("/available?name={name}"));
        assert_eq!(r.status, 400, "{name}: {}", r.text());
    }
    for body in ["not json", r#"{"nom": "x"}"#, r#"{"name": 42}"#, r#"["ada"]"#] {
        let r = server.post("/register", body.as_bytes());
        assert_eq!(r.status, 400, "{body}: {}", r.text());
    }
    assert_eq!(server.get("/register").status, 405);

    // A rolling reload (SIGHUP): the new template rebuilds the filter from the
    // generated names and the database; the registrations stay taken.
    server.signal("HUP");
    server.wait_stderr("(slot 0, generation 2) up", 60);
    server.wait_stderr("(slot 1, generation 2) up", 60);
    for name in ["ada.lovelace", "race.0", "race.4"] {
        for (pid, available) in per_worker(&server, name, &pids) {
            assert!(!available, "after the reload, worker {pid} thinks {name} is free");
        }
    }
    assert!(
        server.stdout().contains("usernames: 3000000 generated names and 6 registered ones"),
        "{}",
        server.stdout()
    );
    assert_eq!(register(&server, "race.2").0, 409);
    assert_eq!(register(&server, "after.reload").0, 201);
    assert!(!server.stderr().contains("ERROR"), "stderr:\n{}", server.stderr());
}
