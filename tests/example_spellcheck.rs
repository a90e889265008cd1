//! examples/spellcheck: symspellpy's shipped English dictionary loaded once in
//! the template, served by 2 workers; real corrections, batch form, errors.
//! One server (the dictionary takes 2-5 s to load) shared by every check.

mod services_support;
use services_support::*;

#[test]
fn spellcheck_corrects_words_phrases_and_batches() {
    let server = serve_example("spellcheck", &["symspellpy"], &[], &[]);

    // The dictionary is loaded once (in the template, before the fork).
    let out = server.stdout();
    let loads: Vec<&str> = out.lines().filter(|l| l.starts_with("spellcheck: loaded")).collect();
    assert_eq!(loads.len(), 1, "loaded once, before forking; stdout:\n{out}");
    assert!(loads[0].starts_with("spellcheck: loaded 82834 words"), "{}", loads[0]);
    assert!(out.find("spellcheck: loaded").unwrap() < out.find("Listening on").unwrap());
    assert!(out.contains("workers: 2"), "{out}");

    // One misspelled word: the closest words, most frequent first.
    let v = get_json(&server, "/correct?q=speling");
    assert_eq!(v["q"], "speling");
    assert_eq!(v["mode"], "word");
    assert_eq!(v["correction"], "spelling");
    assert_eq!(v["distance"], 1);
    assert_eq!(v["suggestions"][0], serde_json::json!({"term": "spelling", "distance": 1, "count": 7368045}));
    assert_eq!(v["suggestions"][1]["term"], "spewing");

    // Two edits away; casing follows the query; a known word is its own answer.
    let v = get_json(&server, "/correct?q=korrectud");
    assert_eq!((v["correction"].as_str(), v["distance"].as_i64()), (Some("corrected"), Some(2)));
    let v = get_json(&server, "/correct?q=Recieve");
    assert_eq!(v["correction"], "Receive");
    let v = get_json(&server, "/correct?q=spelling");
    assert_eq!((v["correction"].as_str(), v["distance"].as_i64()), (Some("spelling"), Some(0)));
    assert_eq!(v["suggestions"].as_array().unwrap().len(), 1);
    // `n` bounds the suggestions.
    let v = get_json(&server, "/correct?q=helo&n=3");
    assert_eq!(v["suggestions"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["correction"], "help");
    // Nothing within two edits.
    let v = get_json(&server, "/correct?q=zzzzqqqq");
    assert_eq!(v["correction"], "zzzzqqqq");
    assert_eq!(v["distance"], serde_json::Value::Null);
    assert_eq!(v["suggestions"], serde_json::json!([]));

    // Several words: compound correction (splits, joins and fixes words).
    let v = get_json(&server, "/correct?q=whereis+th+elove+hehad+dated");
    assert_eq!(v["mode"], "compound");
    assert_eq!(v["correction"], "where is the love he had dated");
    let v = get_json(&server, "/correct?q=in%20te%20dhird%20qarter%20oflast%20jear");
    assert_eq!(v["correction"], "in the third quarter of last year");

    // The batch form: a JSON list in, the results in the same order.
    let (status, v) = post_json(&server, "/correct", r#"["speling", "whereis th elove", "caffe"]"#);
    assert_eq!(status, 200, "{v}");
    let corrections: Vec<&str> = v.as_array().unwrap().iter().map(|r| r["correction"].as_str().unwrap()).collect();
    assert_eq!(corrections, ["spelling", "where is the love", "cafe"]);

    // Both workers answer the same (8 threads, fresh connections).
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..10 {
                    assert_eq!(get_json(&server, "/correct?q=definately")["correction"], "definitely");
                }
            });
        }
    });

    // Refusals are 400s with a reason, not 500s.
    let long = format!("/correct?q={}", "a".repeat(201));
    for (path, reason) in [
        ("/correct", "empty query"),
        ("/correct?q=+++", "empty query"),
        (long.as_str(), "longer than 200"),
        ("/correct?q=x&n=0", "between 1 and 10"),
        ("/correct?q=x&n=11", "between 1 and 10"),
        ("/correct?q=x&n=abc", "must be a number"),
    ] {
        let r = server.get(path);
        assert_eq!(r.status, 400, "{path}");
        assert!(r.text().contains(reason), "{path}: {}", r.text());
    }
    let too_many = serde_json::to_string(&vec!["word"; 101]).unwrap();
    for (body, reason) in [
        (r#"{"q": "speling"}"#, "JSON list"),
        (r#"["speling", 42]"#, "must be a string"),
        ("[not json", "JSON"),
        (too_many.as_str(), "at most 100"),
    ] {
        let r = server.post("/correct", body.as_bytes());
        assert_eq!(r.status, 400, "{body}");
        assert!(r.text().contains(reason), "{body}: {}", r.text());
    }
    assert_eq!(server.request("DELETE /correct HTTP/1.1\r\nHost: t\r\n\r\n").status, 405);
    let r = server.get("/");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("curl 'http://HOST:PORT/correct?q=speling'"), "{}", r.text());
    assert_eq!(server.get("/nothing/here").status, 404);
    assert!(!server.stderr().contains("ERROR"), "stderr:\n{}", server.stderr());
}
