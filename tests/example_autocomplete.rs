//! examples/autocomplete: a marisa-trie prefix index over symspellpy's
//! frequency list, served by 2 workers. Every answer is checked against a
//! ranking computed here, in Rust, from the same word list.

mod services_support;
use services_support::*;
use std::process::Command;

/// (word, count) from the frequency list symspellpy ships in target/test-venv.
fn frequency_list() -> Vec<(String, u64)> {
    let venv = test_venv(&["symspellpy"]);
    let out = Command::new(venv.join("bin/python"))
        .args(["-c", "import os, symspellpy; print(os.path.dirname(symspellpy.__file__))"])
        .output()
        .unwrap();
    let dir = String::from_utf8(out.stdout).unwrap();
    let text = std::fs::read_to_string(format!("{}/frequency_dictionary_en_82_765.txt", dir.trim())).unwrap();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.parse().ok()?))
        })
        .collect()
}

/// The k most frequent words starting with `prefix`, ties alphabetical.
fn expected(words: &[(String, u64)], prefix: &str, k: usize) -> serde_json::Value {
    let mut hits: Vec<&(String, u64)> = words.iter().filter(|(w, _)| w.starts_with(prefix)).collect();
    hits.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    hits.truncate(k);
    serde_json::json!({
        "prefix": prefix,
        "completions": hits.iter().map(|(w, c)| serde_json::json!({"word": w, "count": c})).collect::<Vec<_>>(),
    })
}

#[test]
fn autocomplete_ranks_completions_by_frequency() {
    let words = frequency_list();
    assert_eq!(words.len(), 82834);
    let server = serve_example("autocomplete", &["marisa_trie", "symspellpy"], &[], &[]);
    let out = server.stdout();
    assert_eq!(out.matches("autocomplete: indexed 82834 words").count(), 1, "built once; stdout:\n{out}");

    // The answer users see.
    let v = get_json(&server, "/complete?prefix=spe&k=3");
    let top: Vec<&str> = v["completions"].as_array().unwrap().iter().map(|c| c["word"].as_str().unwrap()).collect();
    assert_eq!(top, ["special", "specific", "speed"]);
    assert_eq!(v["completions"][0]["count"], 244311841);

    // Heavy prefixes (precomputed at start-up), light ones (ranked per
    // request from the trie), every k from 1 to 50: the same as computed here.
    for (prefix, k) in [
        ("a", 10),
        ("th", 50),
        ("spe", 10),
        ("inter", 25),
        ("qu", 1),
        ("zyg", 10),
        ("xylophon", 10),
        ("photosynth", 50),
    ] {
        let v = get_json(&server, &format!("/complete?prefix={prefix}&k={k}"));
        assert_eq!(v, expected(&words, prefix, k), "prefix {prefix} k {k}");
    }
    // Default k is 10; the prefix is lower-cased and trimmed.
    assert_eq!(get_json(&server, "/complete?prefix=%20Hel"), expected(&words, "hel", 10));
    // No completions at all.
    assert_eq!(get_json(&server, "/complete?prefix=qqqzz")["completions"], serde_json::json!([]));

    // Refusals.
    for (path, reason) in [
        ("/complete", "empty prefix"),
        ("/complete?prefix=a&k=0", "between 1 and 50"),
        ("/complete?prefix=a&k=51", "between 1 and 50"),
        ("/complete?prefix=a&k=-1", "must be a number"),
    ] {
        let r = server.get(path);
        assert_eq!(r.status, 400, "{path}");
        assert!(r.text().contains(reason), "{path}: {}", r.text());
    }
    let r = server.get(&format!("/complete?prefix={}", "a".repeat(51)));
    assert_eq!(r.status, 400);
    assert_eq!(server.post("/complete?prefix=a", b"").status, 405);
    assert_eq!(server.get("/").status, 200);
    assert!(!server.stderr().contains("ERROR"), "stderr:\n{}", server.stderr());
}
