//! examples/layered: controller -> service -> dao, a real redis-server (on a
//! free loopback port) caching reads for 60 s in front of a real SQLite file,
//! 2 workers that reconnect both in post_fork.

mod services_support;
use services_support::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Sends `requests` (method, path, body) over one keep-alive connection, so
/// one worker answers them all.
fn on_one_worker(server: &Server, requests: &[(&str, &str, &str)]) -> Vec<Response> {
    let mut c = server.connect();
    requests
        .iter()
        .map(|(method, path, body)| {
            c.send(
                format!("{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                    .as_bytes(),
            );
            c.read_response()
        })
        .collect()
}

/// GET `path` as each of the 2 workers: pid -> (X-Cache, JSON body).
fn get_on_each_worker(server: &Server, path: &str) -> HashMap<i64, (String, serde_json::Value)> {
    let mut seen = HashMap::new();
    for _ in 0..400 {
        let r = on_one_worker(server, &[("GET", "/health", ""), ("GET", path, "")]);
        let pid = json(&r[0])["pid"].as_i64().unwrap();
        assert_eq!(r[1].status, 200, "{}", r[1].text());
        seen.entry(pid).or_insert_with(|| (r[1].header("X-Cache").unwrap().to_string(), json(&r[1])));
        if seen.len() == 2 {
            return seen;
        }
    }
    panic!("fewer than 2 workers answered: {seen:?}");
}

fn get(server: &Server, path: &str) -> (String, serde_json::Value) {
    let r = server.get(path);
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    (r.header("X-Cache").expect("X-Cache").to_string(), json(&r))
}

#[test]
fn layered_caches_reads_in_redis_and_invalidates_on_writes() {
    let redis = Redis::start();
    let dir = scratch_dir("layered");
    let db = dir.join("catalogue.sqlite3");
    let server =
        serve_example("layered", &["redis"], &[], &[("REDIS_URL", &redis.url()), ("LAYERED_DB", db.to_str().unwrap())]);
    assert!(server.stdout().contains("layered: 10 products in"), "{}", server.stdout());

    // post_fork: each worker has its own Redis connection (its own client id).
    let mut ids = HashMap::new();
    for _ in 0..400 {
        let h = get_json(&server, "/health");
        assert_eq!(h["redis"]["ok"], true, "{h}");
        ids.insert(h["pid"].as_i64().unwrap(), h["redis"]["client_id"].as_i64().unwrap());
        if ids.len() == 2 {
            break;
        }
    }
    let distinct: std::collections::HashSet<_> = ids.values().collect();
    assert_eq!((ids.len(), distinct.len()), (2, 2), "each worker needs its own Redis connection: {ids:?}");

    // A read is a miss, then a hit in every worker (one shared cache), with
    // a 60 s expiry in Redis.
    let (state, first) = get(&server, "/products/1");
    assert_eq!(state, "MISS");
    assert_eq!(
        first,
        serde_json::json!({"id": 1, "name": "Cast iron skillet 26 cm", "category": "kitchen", "price_cents": 3490, "stock": 12})
    );
    for (pid, (state, body)) in get_on_each_worker(&server, "/products/1") {
        assert_eq!((state.as_str(), &body), ("HIT", &first), "worker {pid}");
    }
    let ttl = redis.int(&["TTL", "product:1"]);
    assert!((1..=60).contains(&ttl), "TTL {ttl}");
    let cached = redis.command(&["GET", "product:1"]);
    let payload = cached.split_once(' ').expect("a bulk string").1;
    assert_eq!(serde_json::from_str::<serde_json::Value>(payload).unwrap(), first, "Redis holds the JSON served");

    // What Redis holds is what is served: the controller reads the cache.
    redis.command(&["SET", "product:2", r#"{"id":2,"name":"from the cache"}"#, "EX", "60"]);
    assert_eq!(get(&server, "/products/2"), ("HIT".into(), serde_json::json!({"id": 2, "name": "from the cache"})));
    // When the entry expires, the next read goes to SQLite again.
    redis.command(&["PEXPIRE", "product:2", "1"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (state, body) = get(&server, "/products/2");
        if state == "MISS" {
            assert_eq!(body["name"], "Chef knife 20 cm");
            break;
        }
        assert!(Instant::now() < deadline, "product:2 never expired");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A category list is cached too; a write invalidates what it changed,
    // for every worker.
    let (state, list) = get(&server, "/products?category=kitchen");
    assert_eq!((state.as_str(), list.as_array().unwrap().len()), ("MISS", 3));
    assert_eq!(get(&server, "/products?category=kitchen").0, "HIT");
    let r = on_one_worker(&server, &[("PUT", "/products/1", r#"{"price_cents": 2990, "stock": 11}"#)]);
    assert_eq!(r[0].status, 200, "{}", r[0].text());
    assert_eq!(json(&r[0])["price_cents"], 2990);
    assert_eq!(redis.int(&["EXISTS", "product:1", "category:kitchen"]), 0, "the write must delete both entries");
    let (state, body) = get(&server, "/products/1");
    assert_eq!((state.as_str(), body["price_cents"].as_i64(), body["stock"].as_i64()), ("MISS", Some(2990), Some(11)));
    for (pid, (state, body)) in get_on_each_worker(&server, "/products/1") {
        assert_eq!((state.as_str(), body["price_cents"].as_i64()), ("HIT", Some(2990)), "worker {pid}");
    }
    // Moving a product to another category invalidates both lists.
    assert_eq!(get(&server, "/products?category=sports").1.as_array().unwrap().len(), 2);
    get(&server, "/products?category=kitchen");
    let r = on_one_worker(&server, &[("PUT", "/products/1", r#"{"category": "sports"}"#)]);
    assert_eq!(r[0].status, 200, "{}", r[0].text());
    let (state, sports) = get(&server, "/products?category=sports");
    assert_eq!((state.as_str(), sports.as_array().unwrap().len()), ("MISS", 3));
    assert_eq!(get(&server, "/products?category=kitchen").1.as_array().unwrap().len(), 2);
    // Creating one invalidates its category.
    let (status, created) =
        post_json(&server, "/products", r#"{"name": "Wok", "category": "kitchen", "price_cents": 4000, "stock": 3}"#);
    assert_eq!((status, created["id"].as_i64()), (201, Some(11)), "{created}");
    let (state, kitchen) = get(&server, "/products?category=kitchen");
    assert_eq!((state.as_str(), kitchen.as_array().unwrap().last().unwrap()["name"].as_str()), ("MISS", Some("Wok")));

    // Errors: 404 for no product (and nothing cached), 400 for bad input.
    assert_eq!(server.get("/products/999").status, 404);
    assert_eq!(redis.int(&["EXISTS", "product:999"]), 0);
    assert_eq!(server.get("/products/abc").status, 404);
    assert_eq!(server.get("/products?category=weapons").status, 400);
    for body in [r#"{"price_cents": -1}"#, r#"{"colour": "red"}"#, r#"{}"#, "not json", r#"{"stock": true}"#] {
        let r = on_one_worker(&server, &[("PUT", "/products/3", body)]);
        assert_eq!(r[0].status, 400, "{body}: {}", r[0].text());
    }
    assert_eq!(post_json(&server, "/products", r#"{"name": "x"}"#).0, 400);
    // No route of the example serves DELETE: 501 (a method some route serves would be 405).
    assert_eq!(server.request("DELETE /products/1 HTTP/1.1\r\nHost: t\r\n\r\n").status, 501);
    assert!(!server.stderr().contains("ERROR"), "stderr:\n{}", server.stderr());

    // Redis gone: requests are served from SQLite (BYPASS), never failed.
    drop(redis);
    for _ in 0..4 {
        let (state, body) = get(&server, "/products/3");
        assert_eq!((state.as_str(), body["name"].as_str()), ("BYPASS", Some("Electric kettle 1.7 l")));
    }
    let (status, _) =
        post_json(&server, "/products", r#"{"name": "Tent", "category": "sports", "price_cents": 9900, "stock": 2}"#);
    assert_eq!(status, 201);
    server.wait_stderr("layered: Redis error, serving uncached", 10);
}
