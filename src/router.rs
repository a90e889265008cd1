//! Routing: which target serves a request path and method.
//!
//! Patterns are exact (`/echo`), parameterised (`/users/{id}`), prefix
//! (`/static/*`) or the catch-all `/*`. Precedence: exact, then
//! parameterised (a literal segment beats a parameter, left to right), then the
//! longest prefix, then `/*`. The most specific matching pattern decides: if
//! it does not allow the method, the answer is 405 with `Allow`, never a
//! fallback to a less specific route. Paths are matched without the query
//! string, decoded as `http::target` says (`/%69nfo` is `/info`; `%2F` never
//! splits a segment); parameter values are percent-decoded except `%2F`. A
//! method no route serves is 501 (a route without `methods` serves
//! `http::KNOWN_METHODS`).
//!
//! Lookups do not scan the route list: exact paths and prefixes are hash
//! maps (a path's candidate prefixes are tried longest first), parameterised
//! patterns a segment tree; so start-up and matching stay fast with 100k routes.

use crate::http::{target, KNOWN_METHODS};
use std::collections::HashMap;

/// One segment of a parameterised pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Param(String),
}

/// A parsed route path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    Params(Vec<Segment>),
    /// `/static/*` is stored as `/static`; `/*` as the empty string.
    Prefix(String),
}

impl Pattern {
    pub fn parse(path: &str) -> Result<Pattern, String> {
        if !path.starts_with('/') {
            return Err(format!("route path {path:?} must start with '/'"));
        }
        if path.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'?' || b == b'#') {
            return Err(format!("route path {path:?} must not contain spaces, control characters, '?' or '#'"));
        }
        if let Some(prefix) = path.strip_suffix("/*") {
            if prefix.contains(['*', '{', '}']) {
                return Err(format!("route path {path:?}: a prefix route may not contain parameters or other '*'"));
            }
            return Ok(Pattern::Prefix(if prefix.is_empty() { String::new() } else { target::normalize(prefix) }));
        }
        if path.contains('*') {
            return Err(format!("route path {path:?}: '*' is only allowed as the last segment, as in /static/*"));
        }
        if !path.contains(['{', '}']) {
            return Ok(Pattern::Exact(target::normalize(path)));
        }
        let mut segments = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for seg in path[1..].split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                let ident = !name.is_empty()
                    && !name.starts_with(|c: char| c.is_ascii_digit())
                    && name.chars().all(|c| c.is_alphanumeric() || c == '_');
                if !ident {
                    return Err(format!("route path {path:?}: parameter {{{name}}} must be an identifier"));
                }
                if names.contains(&name) {
                    return Err(format!("route path {path:?}: parameter {{{name}}} appears twice"));
                }
                names.push(name);
                segments.push(Segment::Param(name.to_string()));
            } else if seg.contains(['{', '}']) {
                return Err(format!("route path {path:?}: a parameter must fill a whole segment, as in /users/{{id}}"));
            } else {
                segments.push(Segment::Literal(target::decode_segment(seg).into_owned()));
            }
        }
        Ok(Pattern::Params(segments))
    }

    /// Two patterns with the same shape match exactly the same paths.
    pub fn shape(&self) -> String {
        match self {
            Pattern::Exact(p) => p.clone(),
            Pattern::Prefix(p) => format!("{p}/*"),
            Pattern::Params(segs) => segs
                .iter()
                .map(|s| match s {
                    Segment::Literal(l) => format!("/{l}"),
                    Segment::Param(_) => "/{}".to_string(),
                })
                .collect(),
        }
    }
}

/// Targets that share a pattern, each with the methods it allows (`None`:
/// all) and, for a parameterised pattern, its parameter names in order.
#[derive(Debug)]
struct Entry<T> {
    methods: Option<Vec<String>>,
    names: Vec<String>,
    target: T,
}

#[derive(Debug)]
struct Slot<T> {
    entries: Vec<Entry<T>>,
    /// For a parameterised shape: which segments are parameters.
    param_positions: Vec<usize>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot { entries: Vec::new(), param_positions: Vec::new() }
    }
}

impl<T> Slot<T> {
    fn find(&self, method: &str) -> Option<&Entry<T>> {
        let allows = |ms: &Option<Vec<String>>, m: &str| match ms {
            None => KNOWN_METHODS.contains(&m),
            Some(ms) => ms.iter().any(|x| x == m),
        };
        self.entries.iter().find(|e| allows(&e.methods, method)).or_else(|| {
            if method == "HEAD" {
                self.entries.iter().find(|e| allows(&e.methods, "GET"))
            } else {
                None
            }
        })
    }

    /// The `Allow` header value for this slot.
    fn allow(&self) -> String {
        let mut all: Vec<&str> = Vec::new();
        for e in &self.entries {
            match &e.methods {
                None => all.extend(KNOWN_METHODS),
                Some(ms) => all.extend(ms.iter().map(String::as_str)),
            }
        }
        if all.contains(&"GET") && !all.contains(&"HEAD") {
            all.push("HEAD");
        }
        // The default methods in their usual order, then the others as listed.
        let mut ordered: Vec<&str> = KNOWN_METHODS.iter().copied().filter(|m| all.contains(m)).collect();
        for m in all {
            if !ordered.contains(&m) {
                ordered.push(m);
            }
        }
        ordered.join(", ")
    }
}

/// The outcome of routing one request.
#[derive(Debug, PartialEq)]
pub enum RouteMatch<'r, T> {
    Found {
        target: &'r T,
        params: Vec<(&'r str, String)>,
    },
    /// The path matched, the method did not: answer 405 with this `Allow`.
    MethodNotAllowed {
        allow: String,
    },
    NotFound,
    /// No route serves this method (methods are case-sensitive): 501.
    NotImplemented,
}

/// The parameterised patterns as a tree of segments: a path walks down one
/// segment at a time, trying the literal child before the parameter child
/// (so a literal segment beats a parameter, left to right), and a pattern
/// ends where its last segment does. Matching costs one hash lookup per
/// segment whatever the number of routes; adding a route costs the same.
#[derive(Debug)]
struct ParamNode<T> {
    literals: HashMap<String, ParamNode<T>>,
    param: Option<Box<ParamNode<T>>>,
    /// Patterns that end here (all with the same shape).
    end: Option<Slot<T>>,
}

impl<T> Default for ParamNode<T> {
    fn default() -> Self {
        ParamNode { literals: HashMap::new(), param: None, end: None }
    }
}

impl<T> ParamNode<T> {
    fn insert(&mut self, segs: &[Segment]) -> &mut Slot<T> {
        let mut node = self;
        for seg in segs {
            node = match seg {
                Segment::Literal(l) => node.literals.entry(l.clone()).or_default(),
                Segment::Param(_) => node.param.get_or_insert_with(Box::default),
            };
        }
        node.end.get_or_insert_with(|| Slot {
            entries: Vec::new(),
            param_positions: segs
                .iter()
                .enumerate()
                .filter_map(|(i, s)| matches!(s, Segment::Param(_)).then_some(i))
                .collect(),
        })
    }

    /// The first pattern (literal before parameter, left to right) matching
    /// all of `parts`.
    fn find(&self, parts: &[&str]) -> Option<&Slot<T>> {
        let Some((first, rest)) = parts.split_first() else {
            return self.end.as_ref();
        };
        if let Some(found) = self.literals.get(*first).and_then(|n| n.find(rest)) {
            return Some(found);
        }
        // A parameter matches any non-empty segment.
        if first.is_empty() {
            return None;
        }
        self.param.as_ref().and_then(|n| n.find(rest))
    }
}

/// A route table, built once at start-up and read by every thread.
#[derive(Debug)]
pub struct Router<T> {
    exact: HashMap<String, Slot<T>>,
    params: ParamNode<T>,
    /// By prefix without the `/*`; the catch-all `/*` is the empty prefix.
    prefixes: HashMap<String, Slot<T>>,
    /// Every method some route serves (HEAD with GET).
    implemented: Vec<String>,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router {
            exact: HashMap::new(),
            params: ParamNode::default(),
            prefixes: HashMap::new(),
            implemented: Vec::new(),
        }
    }
}

impl<T> Router<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route. Conflicts are rejected earlier, by the config check.
    pub fn add(&mut self, path: &str, methods: Option<Vec<String>>, target: T) -> Result<(), String> {
        let listed = methods.as_deref().unwrap_or_default();
        let served = methods.as_ref().map_or(KNOWN_METHODS, |_| &[]).iter().map(|m| m.to_string());
        let head = listed.iter().any(|m| m == "GET").then(|| "HEAD".to_string());
        for m in served.chain(listed.iter().cloned()).chain(head) {
            if !self.implemented.contains(&m) {
                self.implemented.push(m);
            }
        }
        let mut entry = Entry { methods, names: Vec::new(), target };
        let slot = match Pattern::parse(path)? {
            Pattern::Exact(p) => self.exact.entry(p).or_default(),
            Pattern::Params(segs) => {
                entry.names = segs
                    .iter()
                    .filter_map(|s| match s {
                        Segment::Param(name) => Some(name.clone()),
                        Segment::Literal(_) => None,
                    })
                    .collect();
                self.params.insert(&segs)
            }
            Pattern::Prefix(p) => self.prefixes.entry(p).or_default(),
        };
        slot.entries.push(entry);
        Ok(())
    }

    /// Every target, in no particular order.
    pub fn targets(&self) -> Vec<&T> {
        let mut out: Vec<&T> = Vec::new();
        let slots = self.exact.values().chain(self.prefixes.values());
        out.extend(slots.flat_map(|s| s.entries.iter().map(|e| &e.target)));
        let mut stack = vec![&self.params];
        while let Some(node) = stack.pop() {
            out.extend(node.end.iter().flat_map(|s| s.entries.iter().map(|e| &e.target)));
            stack.extend(node.literals.values());
            stack.extend(node.param.as_deref());
        }
        out
    }

    /// Finds the target for `method` on `path` (no query string), as sent.
    pub fn route<'r>(&'r self, method: &str, path: &str) -> RouteMatch<'r, T> {
        if !self.implemented.iter().any(|m| m == method) {
            return RouteMatch::NotImplemented;
        }
        if target::is_plain(path) {
            // The common case: nothing to decode, no allocation.
            return self.route_decoded(method, path, None);
        }
        let segments = target::segments(path);
        let raw: Vec<&str> = segments.iter().map(|s| s.raw).collect();
        self.route_decoded(method, &target::join(&segments), Some(&raw))
    }

    /// Routes a decoded path; `raw` holds its segments as sent when they
    /// differ (parameters are decoded from those).
    fn route_decoded<'r>(&'r self, method: &str, path: &str, raw: Option<&[&str]>) -> RouteMatch<'r, T> {
        if let Some(slot) = self.exact.get(path) {
            return Self::pick(slot, method, &[]);
        }
        let rest = path.strip_prefix('/').unwrap_or(path);
        let segments = rest.bytes().filter(|&b| b == b'/').count() + 1;
        if !self.params.literals.is_empty() || self.params.param.is_some() {
            // Split the path once, on the stack for ordinary depths.
            let mut stack = [""; 16];
            let heap: Vec<&str>;
            let parts: &[&str] = if segments <= stack.len() {
                for (slot, part) in stack.iter_mut().zip(rest.split('/')) {
                    *slot = part;
                }
                &stack[..segments]
            } else {
                heap = rest.split('/').collect();
                &heap
            };
            if let Some(slot) = self.params.find(parts) {
                return Self::pick(slot, method, raw.unwrap_or(parts));
            }
        }
        // Prefixes, longest first: the path itself, then up to each '/'
        // from the right (a prefix ends at a segment boundary); "" is `/*`.
        if !self.prefixes.is_empty() {
            if let Some(slot) = self.prefixes.get(path) {
                return Self::pick(slot, method, &[]);
            }
            for (i, _) in path.rmatch_indices('/') {
                if let Some(slot) = self.prefixes.get(&path[..i]) {
                    return Self::pick(slot, method, &[]);
                }
            }
        }
        RouteMatch::NotFound
    }

    /// The entry of `slot` for `method`; for a parameterised pattern, `parts`
    /// are the path's segments (parameter values are decoded only here).
    fn pick<'r>(slot: &'r Slot<T>, method: &str, parts: &[&str]) -> RouteMatch<'r, T> {
        let Some(entry) = slot.find(method) else {
            return RouteMatch::MethodNotAllowed { allow: slot.allow() };
        };
        let params = entry
            .names
            .iter()
            .zip(&slot.param_positions)
            .map(|(name, &i)| (name.as_str(), parts.get(i).map_or_else(String::new, |p| decode_param(p))))
            .collect();
        RouteMatch::Found { target: &entry.target, params }
    }
}

/// A path parameter's value: every `%XX` escape decoded except `%2F`, which
/// stays as sent (a parameter never holds a `/`).
fn decode_param(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.as_bytes().windows(3).position(|w| w[0] == b'%' && w[1] == b'2' && (w[2] | 0x20) == b'f') {
        out.push_str(&percent_decode(&rest[..i]));
        out.push_str(&rest[i..i + 3]);
        rest = &rest[i + 3..];
    }
    out.push_str(&percent_decode(rest));
    out
}

/// Decodes `%XX` escapes; invalid escapes stay as they are; invalid UTF-8 is replaced.
pub fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(&str, Option<&[&str]>, u32)]) -> Router<u32> {
        let mut r = Router::new();
        for (p, m, t) in routes {
            r.add(p, m.map(|m| m.iter().map(|s| s.to_string()).collect()), *t).unwrap();
        }
        r
    }

    fn found(r: &Router<u32>, method: &str, path: &str) -> Option<u32> {
        match r.route(method, path) {
            RouteMatch::Found { target, .. } => Some(*target),
            _ => None,
        }
    }

    #[test]
    fn precedence_exact_params_prefix_catch_all() {
        let r = router(&[
            ("/*", None, 1),
            ("/static/*", None, 2),
            ("/static/img/*", None, 3),
            ("/users/{id}", None, 4),
            ("/users/me", None, 5),
        ]);
        assert_eq!(found(&r, "GET", "/users/me"), Some(5));
        assert_eq!(found(&r, "GET", "/users/42"), Some(4));
        assert_eq!(found(&r, "GET", "/static/a.css"), Some(2));
        assert_eq!(found(&r, "GET", "/static/img/a.png"), Some(3));
        assert_eq!(found(&r, "GET", "/static"), Some(2));
        assert_eq!(found(&r, "GET", "/staticx"), Some(1));
        assert_eq!(found(&r, "GET", "/"), Some(1));
        assert_eq!(found(&r, "GET", "/users/42/x"), Some(1));
    }

    #[test]
    fn targets_lists_every_route_once() {
        let r = router(&[
            ("/*", None, 1),
            ("/static/*", None, 2),
            ("/users/{id}", Some(&["GET"]), 3),
            ("/users/{id}", Some(&["POST"]), 4),
            ("/users/{id}/x/{y}", None, 5),
            ("/a", None, 6),
        ]);
        let mut all: Vec<u32> = r.targets().into_iter().copied().collect();
        all.sort();
        assert_eq!(all, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn params_are_decoded() {
        let r = router(&[("/u/{id}/posts/{post}", None, 1)]);
        match r.route("GET", "/u/a%20b/posts/7") {
            RouteMatch::Found { params, .. } => {
                assert_eq!(params, vec![("id", "a b".to_string()), ("post", "7".to_string())])
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(found(&r, "GET", "/u//posts/7"), None);
    }

    #[test]
    fn literal_segment_beats_parameter() {
        let r = router(&[("/{a}/x", None, 1), ("/y/{b}", None, 2)]);
        assert_eq!(found(&r, "GET", "/y/x"), Some(2));
        assert_eq!(found(&r, "GET", "/z/x"), Some(1));
    }

    #[test]
    fn a_literal_dead_end_backtracks_to_a_parameter() {
        let r = router(&[("/a/{x}/c", None, 1), ("/{y}/b/d", None, 2)]);
        assert_eq!(found(&r, "GET", "/a/b/d"), Some(2));
        assert_eq!(found(&r, "GET", "/a/q/c"), Some(1));
        // The most specific match decides, even when its method does not fit.
        let r = router(&[("/a/{x}/c", None, 1), ("/{y}/b/d", None, 2), ("/a/b/{z}", Some(&["POST"]), 3)]);
        assert_eq!(found(&r, "POST", "/a/b/d"), Some(3));
        assert_eq!(r.route("GET", "/a/b/d"), RouteMatch::MethodNotAllowed { allow: "POST".into() });
        match r.route("GET", "/x/b/d") {
            RouteMatch::Found { params, .. } => assert_eq!(params, vec![("y", "x".to_string())]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn same_shape_with_other_names_and_disjoint_methods() {
        let r = router(&[("/u/{id}", Some(&["GET"]), 1), ("/u/{name}", Some(&["POST"]), 2), ("/v", Some(&["PUT"]), 3)]);
        match r.route("POST", "/u/ann") {
            RouteMatch::Found { target, params } => {
                assert_eq!((*target, params), (2, vec![("name", "ann".to_string())]))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(found(&r, "GET", "/u/7"), Some(1));
        assert_eq!(r.route("PUT", "/u/7"), RouteMatch::MethodNotAllowed { allow: "GET, HEAD, POST".into() });
    }

    #[test]
    fn many_routes_are_found_without_scanning() {
        let mut r = Router::new();
        for i in 0..20_000u32 {
            r.add(&format!("/p{i}/{{id}}"), None, i).unwrap();
            r.add(&format!("/e{i}"), None, i).unwrap();
            r.add(&format!("/s{i}/*"), None, i).unwrap();
        }
        assert_eq!(found(&r, "GET", "/p19999/x"), Some(19_999));
        assert_eq!(found(&r, "GET", "/e0"), Some(0));
        assert_eq!(found(&r, "GET", "/s7/a/b"), Some(7));
        assert_eq!(found(&r, "GET", "/s7"), Some(7));
        assert_eq!(found(&r, "GET", "/s7x"), None);
    }

    #[test]
    fn prefix_boundaries() {
        let r = router(&[("/a//*", None, 1), ("/a/*", None, 2)]);
        assert_eq!(found(&r, "GET", "/a//x"), Some(1));
        assert_eq!(found(&r, "GET", "/a/"), Some(1));
        assert_eq!(found(&r, "GET", "/a/b"), Some(2));
        assert_eq!(found(&r, "GET", "/ab"), None);
    }

    #[test]
    fn method_not_allowed_lists_allow() {
        let r = router(&[("/x", Some(&["GET"]), 1), ("/x", Some(&["POST"]), 2), ("/*", None, 3)]);
        assert_eq!(found(&r, "POST", "/x"), Some(2));
        assert_eq!(found(&r, "HEAD", "/x"), Some(1));
        assert_eq!(r.route("DELETE", "/x"), RouteMatch::MethodNotAllowed { allow: "GET, HEAD, POST".into() });
    }

    #[test]
    fn routes_match_the_decoded_path() {
        let r = router(&[("/info", None, 1), ("/files/{name}", None, 2), ("/static/*", None, 3), ("/a/b", None, 4)]);
        assert_eq!(found(&r, "GET", "/%69nfo"), Some(1));
        assert_eq!(found(&r, "GET", "/x/../info"), Some(1));
        assert_eq!(found(&r, "GET", "/%73tatic/x.css"), Some(3));
        // %2F neither splits nor joins segments.
        assert_eq!(found(&r, "GET", "/a%2Fb"), None);
        assert_eq!(found(&r, "GET", "/files/a%2Fb/c"), None);
        let params = |path: &str| match r.route("GET", path) {
            RouteMatch::Found { params, .. } => params.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
            other => panic!("{path}: {other:?}"),
        };
        assert_eq!(params("/files/..%2F..%2Fetc%2Fpasswd"), vec!["..%2F..%2Fetc%2Fpasswd"]);
        assert_eq!(params("/files/a%20b%25"), vec!["a b%"]);
        // Dot segments are removed before matching, so `..` never arrives as a parameter.
        assert_eq!(found(&r, "GET", "/files/.."), None);
        assert_eq!(found(&r, "GET", "/files/%2e%2e"), None);
        assert_eq!(params("/files/x/../y"), vec!["y"]);
    }

    #[test]
    fn route_patterns_are_decoded_too() {
        let r = router(&[("/caf%C3%A9", None, 1), ("/u/%7Bx%7D", None, 2)]);
        assert_eq!(found(&r, "GET", "/café"), Some(1));
        assert_eq!(found(&r, "GET", "/caf%c3%a9"), Some(1));
        assert_eq!(found(&r, "GET", "/u/{x}"), Some(2));
    }

    #[test]
    fn methods_no_route_serves_are_not_implemented() {
        let r = router(&[("/x", None, 1), ("/dav", Some(&["PROPFIND"]), 2)]);
        for m in ["get", "Get", "BREW", "CONNECT"] {
            assert_eq!(r.route(m, "/x"), RouteMatch::NotImplemented, "{m}");
        }
        for m in KNOWN_METHODS {
            assert_eq!(found(&r, m, "/x"), Some(1), "{m}");
        }
        assert_eq!(found(&r, "PROPFIND", "/dav"), Some(2));
        // Served somewhere, but not by a route without `methods`.
        assert_eq!(
            r.route("PROPFIND", "/x"),
            RouteMatch::MethodNotAllowed { allow: "GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH".into() }
        );
        assert_eq!(r.route("GET", "/dav"), RouteMatch::MethodNotAllowed { allow: "PROPFIND".into() });
        // Only listed methods: PUT is not implemented anywhere.
        let r = router(&[("/x", Some(&["GET"]), 1)]);
        assert_eq!(r.route("PUT", "/x"), RouteMatch::NotImplemented);
        assert_eq!(found(&r, "HEAD", "/x"), Some(1));
    }

    #[test]
    fn not_found_without_catch_all() {
        let r = router(&[("/x", None, 1)]);
        assert_eq!(r.route("GET", "/y"), RouteMatch::NotFound);
    }

    #[test]
    fn bad_patterns_are_rejected() {
        for p in ["echo", "/a/*/b", "/a/{", "/a/{1x}", "/a/x{y}", "/a/{x}/{x}", "/a b"] {
            assert!(Pattern::parse(p).is_err(), "{p}");
        }
    }

    #[test]
    fn percent_decode_edge_cases() {
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%41%zz%"), "A%zz%");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }
}
