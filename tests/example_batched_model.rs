//! examples/batched_model: scikit-learn digit classifiers (load_digits) served
//! per request and batched, with 2 workers; batched answers equal the
//! unbatched ones, concurrent clients share model calls, a bad row gets its
//! own 400 without failing its batch.

mod services_support;
use services_support::*;
use std::collections::HashMap;

/// Every 30th image of load_digits() as a JSON array, and its label.
fn digit_rows() -> Vec<(String, i64)> {
    let python = test_venv(&["sklearn"]).join("bin/python");
    let code = "import json; from sklearn.datasets import load_digits; d = load_digits(); \
                print(json.dumps([[d.data[i].tolist(), int(d.target[i])] for i in range(0, len(d.data), 30)]))";
    let out = std::process::Command::new(python).args(["-c", code]).output().expect("run python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<(Vec<f64>, i64)> = serde_json::from_slice(&out.stdout).unwrap();
    rows.into_iter().map(|(px, label)| (serde_json::to_string(&px).unwrap(), label)).collect()
}

fn digit(server: &Server, path: &str, row: &str) -> i64 {
    let (status, v) = post_json(server, path, row);
    assert_eq!(status, 200, "{path}: {v}\nstderr:\n{}", server.stderr());
    v["digit"].as_i64().unwrap_or_else(|| panic!("{path}: {v}"))
}

#[test]
fn batched_answers_equal_unbatched_ones_and_concurrent_clients_share_calls() {
    let server = serve_example("batched_model", &["sklearn", "numpy"], &[], &[]);
    let out = server.stdout();
    assert_eq!(out.matches("batched_model: trained").count(), 1, "trained once, before the fork:\n{out}");
    assert!(
        out.contains("/forest/batched -> main.Model.forest_batched (POST, batched: up to 64 requests, 2 ms"),
        "{out}"
    );

    let rows = digit_rows();
    assert_eq!(rows.len(), 60);
    let mut expected: HashMap<String, i64> = HashMap::new();
    let mut right = 0;
    for (row, label) in &rows {
        let forest = digit(&server, "/forest", row);
        assert_eq!(digit(&server, "/forest/batched", row), forest);
        assert_eq!(digit(&server, "/logreg/batched", row), digit(&server, "/logreg", row));
        right += usize::from(forest == *label);
        expected.insert(row.clone(), forest);
    }
    assert!(right >= 57, "the forest knows its training digits: {right} of 60");

    // 32 clients at once, 5 rows each, on keep-alive connections.
    let rows = std::sync::Arc::new(rows);
    let expected = std::sync::Arc::new(expected);
    let threads: Vec<_> = (0..32)
        .map(|t| {
            let (addr, rows, expected) = (server.addr, rows.clone(), expected.clone());
            std::thread::spawn(move || {
                let mut c = common::Client::connect(addr);
                let mut sizes = Vec::new();
                for k in 0..5 {
                    let (row, _) = &rows[(t * 5 + k) % rows.len()];
                    let head =
                        format!("POST /forest/batched HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", row.len());
                    c.send(format!("{head}{row}").as_bytes());
                    let v = json(&c.read_response());
                    assert_eq!(v["digit"].as_i64(), Some(expected[row]), "client {t}: {v}");
                    sizes.push(v["batch"].as_u64().unwrap());
                }
                sizes
            })
        })
        .collect();
    let sizes: Vec<u64> = threads.into_iter().flat_map(|h| h.join().expect("a client failed")).collect();
    assert!(sizes.iter().any(|&n| n > 1), "never batched: {sizes:?}");
    assert!(!server.stderr().contains("ERROR"), "{}", server.stderr());
}

#[test]
fn a_bad_row_gets_its_own_400_and_its_batch_still_answers() {
    let server = serve_example("batched_model", &["sklearn", "numpy"], &[], &[]);
    let good = serde_json::to_string(&vec![0.0; 64]).unwrap();
    let post = |body: &str| {
        format!("POST /logreg/batched HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len())
    };
    let mut c = server.connect();
    // Pipelined in one write: one batch of three.
    c.send(format!("{}{}{}{}", post(&good), post("[1, 2]"), post("not json"), post(&good)).as_bytes());
    let r: Vec<Response> = (0..4).map(|_| c.read_response()).collect();
    assert_eq!(r.iter().map(|r| r.status).collect::<Vec<_>>(), [200, 400, 400, 200]);
    assert_eq!(r[1].text(), "send a JSON array of 64 numbers (8x8 pixels, 0-16)\n");
    assert_eq!(json(&r[0])["digit"], json(&r[3])["digit"]);
    assert_eq!(server.get("/").status, 200);
}
