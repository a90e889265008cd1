//! Routing: which target serves a request path and method.
//!
//! Patterns are exact (`/echo`), parameterised (`/users/{id}`), prefix
//! (`/static/*`) or the catch-all `/*`. Precedence: exact, then
//! parameterised (a literal segment beats a parameter, left to right), then the
//! longest prefix, then `/*`. The most specific matching pattern decides: if
//! it does not allow the method, the answer is 405 with `Allow`, never a
//! fallback to a less specific route. Paths are matched as sent (without the
//! query string); parameter values are percent-decoded.

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
            return Ok(Pattern::Prefix(prefix.to_string()));
        }
        if path.contains('*') {
            return Err(format!("route path {path:?}: '*' is only allowed as the last segment, as in /static/*"));
        }
        if !path.contains(['{', '}']) {
            return Ok(Pattern::Exact(path.to_string()));
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
                segments.push(Segment::Literal(seg.to_string()));
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

/// Targets that share a pattern, each with the methods it allows (`None`: all).
#[derive(Debug)]
struct Entry<T> {
    methods: Option<Vec<String>>,
    target: T,
}

#[derive(Debug)]
struct Slot<T> {
    entries: Vec<Entry<T>>,
}

impl<T> Slot<T> {
    fn new() -> Self {
        Slot { entries: Vec::new() }
    }

    fn find(&self, method: &str) -> Option<&T> {
        let allows = |ms: &Option<Vec<String>>, m: &str| ms.as_ref().is_none_or(|ms| ms.iter().any(|x| x == m));
        self.entries
            .iter()
            .find(|e| allows(&e.methods, method))
            .or_else(|| if method == "HEAD" { self.entries.iter().find(|e| allows(&e.methods, "GET")) } else { None })
            .map(|e| &e.target)
    }

    /// The `Allow` header value for this slot.
    fn allow(&self) -> String {
        let mut all: Vec<&str> = Vec::new();
        for e in &self.entries {
            match &e.methods {
                None => return crate::http::KNOWN_METHODS.join(", "),
                Some(ms) => all.extend(ms.iter().map(String::as_str)),
            }
        }
        if all.contains(&"GET") && !all.contains(&"HEAD") {
            all.push("HEAD");
        }
        let mut ordered: Vec<&str> = crate::http::KNOWN_METHODS.iter().copied().filter(|m| all.contains(m)).collect();
        ordered.dedup();
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
}

/// A parameterised pattern and the targets that share it.
type ParamRoute<T> = (Vec<Segment>, Slot<T>);

/// A route table, built once at start-up and read by every thread.
#[derive(Debug)]
pub struct Router<T> {
    exact: HashMap<String, Slot<T>>,
    /// Parameterised patterns by segment count (only those can match a path
    /// with that many segments); in each, literal segments before parameters.
    params: HashMap<usize, Vec<ParamRoute<T>>>,
    /// Longest prefix first; the catch-all `/*` (empty prefix) last.
    prefixes: Vec<(String, Slot<T>)>,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router { exact: HashMap::new(), params: HashMap::new(), prefixes: Vec::new() }
    }
}

impl<T> Router<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route. Conflicts are rejected earlier, by the config check.
    pub fn add(&mut self, path: &str, methods: Option<Vec<String>>, target: T) -> Result<(), String> {
        let entry = Entry { methods, target };
        match Pattern::parse(path)? {
            Pattern::Exact(p) => self.exact.entry(p).or_insert_with(Slot::new).entries.push(entry),
            Pattern::Params(segs) => {
                let bucket = self.params.entry(segs.len()).or_default();
                if slot_for(bucket, segs, entry) {
                    // Literal segments before parameters, left to right.
                    bucket.sort_by_cached_key(|(s, _)| {
                        s.iter().map(|x| matches!(x, Segment::Param(_))).collect::<Vec<_>>()
                    });
                }
            }
            Pattern::Prefix(p) => {
                if slot_for(&mut self.prefixes, p, entry) {
                    self.prefixes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
                }
            }
        }
        Ok(())
    }

    /// Finds the target for `method` on `path` (no query string).
    pub fn route<'r>(&'r self, method: &str, path: &str) -> RouteMatch<'r, T> {
        if let Some(slot) = self.exact.get(path) {
            return Self::pick(slot, method, Vec::new());
        }
        let rest = path.strip_prefix('/').unwrap_or(path);
        let segments = rest.bytes().filter(|&b| b == b'/').count() + 1;
        if let Some(bucket) = self.params.get(&segments) {
            // Split the path once; patterns then compare segment by index.
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
            for (segs, slot) in bucket {
                if let Some(params) = match_params(segs, parts) {
                    return Self::pick(slot, method, params);
                }
            }
        }
        for (prefix, slot) in &self.prefixes {
            let under = path.strip_prefix(prefix.as_str()).is_some_and(|r| r.is_empty() || r.starts_with('/'));
            if under {
                return Self::pick(slot, method, Vec::new());
            }
        }
        RouteMatch::NotFound
    }

    fn pick<'r>(slot: &'r Slot<T>, method: &str, params: Vec<(&'r str, String)>) -> RouteMatch<'r, T> {
        match slot.find(method) {
            Some(target) => RouteMatch::Found { target, params },
            None => RouteMatch::MethodNotAllowed { allow: slot.allow() },
        }
    }
}

/// Adds `entry` to the slot keyed `key`, creating the slot if needed;
/// true when it was created (the list then needs re-sorting).
fn slot_for<K: PartialEq, T>(list: &mut Vec<(K, Slot<T>)>, key: K, entry: Entry<T>) -> bool {
    if let Some((_, slot)) = list.iter_mut().find(|(k, _)| *k == key) {
        slot.entries.push(entry);
        return false;
    }
    let mut slot = Slot::new();
    slot.entries.push(entry);
    list.push((key, slot));
    true
}

/// Matches a pattern against a path split into as many segments; parameter
/// values are decoded only once every literal segment matched.
fn match_params<'r>(segs: &'r [Segment], parts: &[&str]) -> Option<Vec<(&'r str, String)>> {
    let literals_match = segs.iter().zip(parts).all(|(seg, part)| match seg {
        Segment::Literal(l) => l == part,
        Segment::Param(_) => !part.is_empty(),
    });
    if !literals_match || segs.len() != parts.len() {
        return None;
    }
    let params = segs
        .iter()
        .zip(parts)
        .filter_map(|(seg, part)| match seg {
            Segment::Param(name) => Some((name.as_str(), percent_decode(part))),
            Segment::Literal(_) => None,
        })
        .collect();
    Some(params)
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
    fn method_not_allowed_lists_allow() {
        let r = router(&[("/x", Some(&["GET"]), 1), ("/x", Some(&["POST"]), 2), ("/*", None, 3)]);
        assert_eq!(found(&r, "POST", "/x"), Some(2));
        assert_eq!(found(&r, "HEAD", "/x"), Some(1));
        assert_eq!(r.route("DELETE", "/x"), RouteMatch::MethodNotAllowed { allow: "GET, HEAD, POST".into() });
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
