//! Who the client is behind a reverse proxy: `forwarded_allow_ips` (the
//! peers whose `Forwarded` / `X-Forwarded-For` / `X-Forwarded-Proto` headers
//! are believed) and the walk that picks the client from those headers.
//!
//! The chain is the header's hops followed by the peer itself. Walking from
//! the right, trusted addresses are skipped; the first untrusted hop is the
//! client (an untrusted client can prepend anything, so nothing left of it is
//! believed). A peer that is not trusted is the client, whatever it sends.

use super::head::RequestHead;
use std::fmt;
use std::net::IpAddr;
use std::sync::OnceLock;

/// The process's `forwarded_allow_ips`, set once at start-up.
static TRUSTED: OnceLock<TrustedProxies> = OnceLock::new();

/// Sets the process-wide trusted proxies (the first call wins).
pub fn install(trust: TrustedProxies) {
    let _ = TRUSTED.set(trust);
}

/// The trusted proxies ([`install`]ed, else the default, 127.0.0.1).
pub fn trusted() -> &'static TrustedProxies {
    TRUSTED.get_or_init(TrustedProxies::default)
}

/// Addresses and networks allowed to say who the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustedProxies {
    /// `*`: every peer.
    Any,
    /// These networks (address, prefix length); a bare address is a /32 or /128.
    Nets(Vec<(IpAddr, u8)>),
}

impl Default for TrustedProxies {
    /// `127.0.0.1`: a proxy on the same host.
    fn default() -> Self {
        TrustedProxies::Nets(vec![(IpAddr::from([127, 0, 0, 1]), 32)])
    }
}

impl TrustedProxies {
    /// `["*"]`, or addresses and CIDR networks (`"10.0.0.0/8"`, `"::1"`).
    pub fn parse(items: &[String]) -> Result<TrustedProxies, String> {
        if items.iter().any(|i| i.trim() == "*") {
            return Ok(TrustedProxies::Any);
        }
        let mut nets = Vec::new();
        for item in items.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
            let (addr, prefix) = match item.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (item, None),
            };
            let bad = || format!("forwarded_allow_ips: {item:?} is not an address, a network (10.0.0.0/8) or *");
            let addr: IpAddr = addr.trim_matches(['[', ']']).parse().map_err(|_| bad())?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
                None => max,
            };
            nets.push((addr, prefix));
        }
        Ok(TrustedProxies::Nets(nets))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match self {
            TrustedProxies::Any => true,
            TrustedProxies::Nets(nets) => nets.iter().any(|&(net, prefix)| in_net(ip, canonical(net), prefix)),
        }
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrustedProxies::Any => f.write_str("*"),
            TrustedProxies::Nets(nets) => {
                let items: Vec<String> = nets
                    .iter()
                    .map(
                        |(a, p)| {
                            if *p == if a.is_ipv4() { 32 } else { 128 } {
                                a.to_string()
                            } else {
                                format!("{a}/{p}")
                            }
                        },
                    )
                    .collect();
                f.write_str(&items.join(","))
            }
        }
    }
}

/// An IPv4-mapped IPv6 address compares as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix)) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The client as the application sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// An IP address, or what a trusted `Forwarded: for=` gave (`unknown`, `_hidden`).
    pub addr: String,
    pub port: u16,
    /// `http` or `https`.
    pub scheme: &'static str,
}

/// One hop of a forwarding chain.
struct Hop {
    addr: String,
    ip: Option<IpAddr>,
    port: u16,
    proto: Option<&'static str>,
}

/// Resolves the client of a request from a peer at `peer` (None: a Unix
/// socket peer, which is trusted: the socket's file permissions decide who
/// connects). `peer_addr`/`peer_port` are what is reported without proxies.
pub fn client(
    head: &RequestHead,
    peer: Option<IpAddr>,
    peer_addr: String,
    peer_port: u16,
    trust: &TrustedProxies,
) -> ClientInfo {
    let direct = ClientInfo { addr: peer_addr, port: peer_port, scheme: "http" };
    if peer.is_some_and(|ip| !trust.contains(ip)) {
        return direct;
    }
    let hops = forwarded_hops(head).or_else(|| x_forwarded_hops(head));
    let Some(hops) = hops.filter(|h| !h.is_empty()) else {
        // A trusted proxy may give only the protocol.
        let proto = list(head, "x-forwarded-proto").last().and_then(|p| scheme(p));
        return ClientInfo { scheme: proto.unwrap_or("http"), ..direct };
    };
    // Rightmost untrusted hop; all trusted: the leftmost.
    let chosen = hops.iter().rev().find(|h| !h.ip.is_some_and(|ip| trust.contains(ip))).unwrap_or(&hops[0]);
    ClientInfo { addr: chosen.addr.clone(), port: chosen.port, scheme: chosen.proto.unwrap_or("http") }
}

fn scheme(value: &str) -> Option<&'static str> {
    match value.trim().trim_matches('"') {
        v if v.eq_ignore_ascii_case("https") => Some("https"),
        v if v.eq_ignore_ascii_case("http") => Some("http"),
        _ => None,
    }
}

/// Every value of a header, split at commas, in order.
fn list<'h>(head: &'h RequestHead, name: &str) -> Vec<&'h str> {
    head.headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .flat_map(|(_, v)| std::str::from_utf8(v).unwrap_or("").split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// `Forwarded` (RFC 7239): one hop per element with a `for=`.
fn forwarded_hops(head: &RequestHead) -> Option<Vec<Hop>> {
    let elements = list(head, "forwarded");
    if elements.is_empty() {
        return None;
    }
    let mut hops = Vec::new();
    for element in elements {
        let mut hop = None;
        let mut proto = None;
        for pair in element.split(';') {
            let Some((k, v)) = pair.split_once('=') else { continue };
            match k.trim().to_ascii_lowercase().as_str() {
                "for" => hop = Some(parse_node(v.trim().trim_matches('"'))),
                "proto" => proto = scheme(v),
                _ => {}
            }
        }
        if let Some(mut h) = hop {
            h.proto = proto;
            hops.push(h);
        }
    }
    Some(hops)
}

/// `X-Forwarded-For` with `X-Forwarded-Proto` (aligned hop by hop when both
/// list as many values, else the last protocol for every hop).
fn x_forwarded_hops(head: &RequestHead) -> Option<Vec<Hop>> {
    let fors = list(head, "x-forwarded-for");
    let protos = list(head, "x-forwarded-proto");
    if fors.is_empty() {
        return None;
    }
    let aligned = protos.len() == fors.len();
    Some(
        fors.iter()
            .enumerate()
            .map(|(i, f)| {
                let mut hop = parse_node(f);
                hop.proto = if aligned { scheme(protos[i]) } else { protos.last().and_then(|p| scheme(p)) };
                hop
            })
            .collect(),
    )
}

/// `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]:4711`, `2001:db8::1`, `unknown`.
fn parse_node(s: &str) -> Hop {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':').and_then(|p| p.parse().ok()).unwrap_or(0)),
            None => (rest, 0),
        }
    } else if s.matches(':').count() == 1 {
        let (h, p) = s.split_once(':').unwrap_or((s, ""));
        (h, p.parse().unwrap_or(0))
    } else {
        (s, 0)
    };
    let ip = host.parse::<IpAddr>().ok();
    let addr = ip.map(|ip| canonical(ip).to_string()).unwrap_or_else(|| host.to_string());
    Hop { addr, ip, port, proto: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Limits;

    fn head(headers: &str) -> RequestHead {
        let raw = format!("GET / HTTP/1.1\r\nHost: t\r\n{headers}\r\n");
        crate::http::head::parse(raw.as_bytes(), &Limits::default()).unwrap().unwrap().0
    }

    fn who(headers: &str, peer: &str, trust: &[&str]) -> (String, &'static str) {
        let trust = TrustedProxies::parse(&trust.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let ip: IpAddr = peer.parse().unwrap();
        let c = client(&head(headers), Some(ip), peer.to_string(), 5000, &trust);
        (c.addr, c.scheme)
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let h = "X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\nForwarded: for=5.6.7.8\r\n";
        assert_eq!(who(h, "10.0.0.9", &["127.0.0.1"]), ("10.0.0.9".into(), "http"));
    }

    #[test]
    fn x_forwarded_for_takes_the_rightmost_untrusted_hop() {
        let trust = ["127.0.0.1", "10.0.0.0/8"];
        // The client forged 6.6.6.6; the first trusted proxy saw 1.2.3.4.
        let h = "X-Forwarded-For: 6.6.6.6, 1.2.3.4, 10.1.2.3\r\nX-Forwarded-Proto: https\r\n";
        assert_eq!(who(h, "127.0.0.1", &trust), ("1.2.3.4".into(), "https"));
        // Every hop trusted: the leftmost.
        assert_eq!(who("X-Forwarded-For: 10.9.9.9\r\n", "127.0.0.1", &trust), ("10.9.9.9".into(), "http"));
        // Several header fields form one list.
        let h = "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 2.2.2.2\r\n";
        assert_eq!(who(h, "127.0.0.1", &trust).0, "2.2.2.2");
    }

    #[test]
    fn forwarded_wins_and_gives_the_protocol_of_its_hop() {
        let h = "Forwarded: for=\"[2001:db8::7]:4711\";proto=https, for=10.0.0.2;proto=http\r\nX-Forwarded-For: 9.9.9.9\r\n";
        assert_eq!(who(h, "127.0.0.1", &["127.0.0.1", "10.0.0.0/8"]), ("2001:db8::7".into(), "https"));
        assert_eq!(who("Forwarded: for=unknown\r\n", "127.0.0.1", &["127.0.0.1"]).0, "unknown");
    }

    #[test]
    fn star_trusts_every_peer_and_proto_alone_is_honoured() {
        assert_eq!(who("X-Forwarded-Proto: https\r\n", "192.0.2.1", &["*"]), ("192.0.2.1".into(), "https"));
        assert_eq!(who("X-Forwarded-Proto: gopher\r\n", "127.0.0.1", &[]), ("127.0.0.1".into(), "http"));
    }

    #[test]
    fn networks_and_mapped_addresses() {
        let t = TrustedProxies::parse(&["10.0.0.0/8".into(), "::1".into()]).unwrap();
        assert!(t.contains("10.200.0.1".parse().unwrap()));
        assert!(t.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(t.contains("::1".parse().unwrap()));
        assert!(!t.contains("11.0.0.1".parse().unwrap()));
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(TrustedProxies::parse(&["nope".into()]).is_err());
        assert_eq!(t.to_string(), "10.0.0.0/8,::1");
    }
}
