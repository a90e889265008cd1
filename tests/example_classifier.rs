//! examples/classifier: a scikit-learn TF-IDF + logistic regression trained
//! at start-up on the 4,000 titles the example ships, served by 2 workers;
//! answers are numpy.str_ / numpy.float64 as the model returns them.

mod services_support;
use services_support::*;

const CATEGORIES: [&str; 10] =
    ["automotive", "beauty", "books", "clothing", "electronics", "garden", "kitchen", "pet supplies", "sports", "toys"];

fn classify(server: &Server, title: &str) -> serde_json::Value {
    let (status, v) = post_json(server, "/classify", &serde_json::json!({ "title": title }).to_string());
    assert_eq!(status, 200, "{title}: {v}\nstderr:\n{}", server.stderr());
    v
}

/// Checks the shape of one answer and returns its best category.
fn best(v: &serde_json::Value) -> String {
    let top = v["top"].as_array().unwrap_or_else(|| panic!("no top: {v}"));
    assert_eq!(top.len(), 3, "{v}");
    let p: Vec<f64> = top.iter().map(|c| c["probability"].as_f64().expect("a JSON number")).collect();
    assert!(p[0] >= p[1] && p[1] >= p[2] && p[2] > 0.0 && p.iter().sum::<f64>() <= 1.0 + 1e-9, "{v}");
    for c in top {
        assert!(CATEGORIES.contains(&c["category"].as_str().unwrap()), "{v}");
    }
    top[0]["category"].as_str().unwrap().to_string()
}

#[test]
fn classifier_trains_once_and_names_the_category() {
    let server = serve_example("classifier", &["sklearn", "numpy"], &[], &[]);
    let out = server.stdout();
    assert_eq!(out.matches("classifier: trained on 4000 titles").count(), 1, "trained once; stdout:\n{out}");

    // Titles it has never seen, from each category's vocabulary.
    for (title, category) in [
        ("Acme wireless earbuds with microphone", "electronics"),
        ("cast iron skillet pre-seasoned", "kitchen"),
        ("dog harness no pull for large dogs", "pet supplies"),
        ("illustrated history of rome box set", "books"),
        ("waterproof rain jacket women's", "clothing"),
        ("wooden train set for toddlers", "toys"),
        ("yoga mat 6mm thick", "sports"),
        ("vitamin c serum for dry skin", "beauty"),
        ("expandable garden hose 30 m", "garden"),
        ("tyre inflator 12v digital", "automotive"),
    ] {
        let v = classify(&server, title);
        assert_eq!(v["title"], title);
        assert_eq!(best(&v), category, "{title}: {v}");
        assert!(v["top"][0]["probability"].as_f64().unwrap() > 0.5, "{title}: {v}");
    }

    // Every 20th shipped title comes back with its label (over fresh
    // connections, so both workers answer).
    let text = std::fs::read_to_string(repo().join("examples/classifier/titles.tsv")).unwrap();
    let rows: Vec<(&str, &str)> =
        text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split_once('\t')).collect();
    assert_eq!(rows.len(), 4000);
    for (category, title) in rows.iter().step_by(20) {
        assert_eq!(best(&classify(&server, title)), *category, "{title}");
    }

    // The batch form, in order.
    let (status, v) =
        post_json(&server, "/classify", r#"{"titles": ["Lumio soundbar with remote", "clumping cat litter 12 kg"]}"#);
    assert_eq!(status, 200, "{v}");
    let got: Vec<String> = v.as_array().unwrap().iter().map(best).collect();
    assert_eq!(got, ["electronics", "pet supplies"]);

    // Refusals.
    let long = serde_json::json!({ "title": "x".repeat(501) }).to_string();
    let many = serde_json::json!({ "titles": vec!["a"; 101] }).to_string();
    for body in [r#"{"name": "x"}"#, r#"{"title": ""}"#, r#"{"title": 7}"#, r#"{"titles": []}"#, "nope", &long, &many] {
        let r = server.post("/classify", body.as_bytes());
        assert_eq!(r.status, 400, "{body}: {}", r.text());
    }
    assert_eq!(server.get("/classify").status, 405);
    assert!(!server.stderr().contains("ERROR"), "stderr:\n{}", server.stderr());
}
