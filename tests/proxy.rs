//! Behind a reverse proxy: `forwarded_allow_ips` decides whose Forwarded /
//! X-Forwarded-For / X-Forwarded-Proto headers give request.remote_addr,
//! request.scheme and request.url (the rightmost untrusted hop); an
//! untrusted peer's headers are ignored.

mod common;
use common::*;

const API: &str = r#"
class Api:
    def who(self, request):
        return {"addr": request.remote_addr, "port": request.remote_port, "scheme": request.scheme, "url": request.url}
"#;

fn who(s: &Server, headers: &str) -> serde_json::Value {
    let r = s.request(&format!("GET /who?x=1 HTTP/1.1\r\nHost: example.org\r\n{headers}\r\n"));
    assert_eq!(r.status, 200);
    serde_json::from_slice(&r.body).unwrap()
}

fn server(extra: &str, args: &[&str]) -> Server {
    Server::start(&Project::simple(API, &[("/who", "who")], extra), args)
}

#[test]
fn a_trusted_proxy_gives_the_client_and_scheme_in_both_modes() {
    for args in [&[][..], &["--workers", "2"][..]] {
        // Default forwarded_allow_ips: 127.0.0.1, the test's own address.
        let s = server("", args);
        let v = who(&s, "X-Forwarded-For: 6.6.6.6, 203.0.113.9\r\nX-Forwarded-Proto: https\r\n");
        assert_eq!(v["addr"], "203.0.113.9", "{args:?}");
        assert_eq!(v["scheme"], "https");
        assert_eq!(v["url"], "https://example.org/who?x=1");
        let v = who(&s, "Forwarded: for=\"[2001:db8::5]:4711\";proto=https\r\n");
        assert_eq!(
            (v["addr"].as_str(), v["port"].as_u64(), v["scheme"].as_str()),
            (Some("2001:db8::5"), Some(4711), Some("https"))
        );
        // No headers: the peer itself.
        let v = who(&s, "");
        assert_eq!((v["addr"].as_str(), v["scheme"].as_str()), (Some("127.0.0.1"), Some("http")));
    }
}

#[test]
fn the_rightmost_untrusted_hop_wins() {
    let s = server("\"forwarded_allow_ips\": [\"127.0.0.1\", \"10.0.0.0/8\"],", &[]);
    // 10.1.1.1 is a trusted inner proxy; 198.51.100.7 is the client it saw; 6.6.6.6 was forged.
    let v = who(&s, "X-Forwarded-For: 6.6.6.6, 198.51.100.7, 10.1.1.1\r\n");
    assert_eq!(v["addr"], "198.51.100.7");
}

#[test]
fn an_untrusted_peer_cannot_claim_another_address_or_https() {
    let s = server("\"forwarded_allow_ips\": \"10.0.0.1\",", &[]);
    let v =
        who(&s, "X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\nForwarded: for=1.2.3.4;proto=https\r\n");
    assert_eq!((v["addr"].as_str(), v["scheme"].as_str()), (Some("127.0.0.1"), Some("http")));
    assert_eq!(v["url"], "http://example.org/who?x=1");
    // "*" trusts every peer; the environment sets it like the file.
    let s = Server::start_with(
        &Project::simple(API, &[("/who", "who")], "\"forwarded_allow_ips\": \"10.0.0.1\","),
        &[],
        &[("PYRS_FORWARDED_ALLOW_IPS", "*")],
    );
    assert_eq!(who(&s, "X-Forwarded-For: 203.0.113.9\r\n")["addr"], "203.0.113.9");
}

#[test]
fn a_unix_socket_peer_is_a_trusted_proxy() {
    let dir = temp_dir("proxy-uds");
    let sock = dir.join("p.sock");
    let p = Project::simple(API, &[("/who", "who")], "\"forwarded_allow_ips\": \"10.0.0.1\",");
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg(p.file()).args(["--uds", sock.to_str().unwrap()]).env_remove("VIRTUAL_ENV");
    let _s = Server::spawn(cmd);
    let raw = "GET /who HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n";
    let v: serde_json::Value = serde_json::from_slice(&unix_request(&sock, raw).unwrap().body).unwrap();
    assert_eq!((v["addr"].as_str(), v["scheme"].as_str()), (Some("203.0.113.9"), Some("https")));
    let raw = "GET /who HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    let v: serde_json::Value = serde_json::from_slice(&unix_request(&sock, raw).unwrap().body).unwrap();
    assert_eq!((v["addr"].as_str(), v["port"].as_u64()), (Some("unix"), Some(0)));
}
