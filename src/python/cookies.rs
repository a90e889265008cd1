//! `Set-Cookie` values for `pyrs.Response.set_cookie`/`delete_cookie`: the
//! arguments checked (RFC 6265 section 4.1.1), then rendered by the `cookie`
//! crate. The pip-installable package renders the same text.

use cookie::time::{Duration, OffsetDateTime};
use cookie::{Cookie, SameSite};

/// What `set_cookie` was called with.
pub struct CookieSpec<'a> {
    pub name: &'a str,
    pub value: &'a str,
    pub max_age: Option<i64>,
    /// Seconds since the Unix epoch.
    pub expires: Option<i64>,
    pub path: Option<&'a str>,
    pub domain: Option<&'a str>,
    pub secure: bool,
    pub httponly: bool,
    pub samesite: Option<&'a str>,
}

/// `cookie-octet`: visible ASCII except `"`, `,`, `;` and `\`.
fn is_cookie_octet(b: u8) -> bool {
    b == 0x21
        || (0x23..=0x2b).contains(&b)
        || (0x2d..=0x3a).contains(&b)
        || (0x3c..=0x5b).contains(&b)
        || (0x5d..=0x7e).contains(&b)
}

/// The `Set-Cookie` value, or why the arguments cannot make one.
pub fn render(spec: &CookieSpec<'_>) -> Result<String, String> {
    let name = spec.name;
    if name.is_empty() || !name.bytes().all(crate::http::encode::is_token_byte) {
        return Err(format!("cookie name {name:?} must be a token (letters, digits, !#$%&'*+-.^_`|~)"));
    }
    if !spec.value.bytes().all(is_cookie_octet) {
        return Err(format!(
            "cookie value {:?} may hold only visible ASCII without '\"', ',', ';', '\\\\' or spaces (percent-encode it)",
            spec.value
        ));
    }
    for (what, v) in [("path", spec.path), ("domain", spec.domain)] {
        if let Some(v) = v {
            if v.bytes().any(|b| b == b';' || b < b' ' || b == 0x7f) {
                return Err(format!("cookie {what} {v:?} must not contain ';' or control characters"));
            }
        }
    }
    let same_site = match spec.samesite {
        None => None,
        Some("Lax") => Some(SameSite::Lax),
        Some("Strict") => Some(SameSite::Strict),
        Some("None") if spec.secure => Some(SameSite::None),
        Some("None") => return Err("samesite=\"None\" needs secure=True (browsers refuse it otherwise)".into()),
        Some(other) => return Err(format!("samesite must be \"Lax\", \"Strict\", \"None\" or None, not {other:?}")),
    };
    let mut c = Cookie::new(name, spec.value);
    c.set_http_only(spec.httponly.then_some(true));
    c.set_secure(spec.secure.then_some(true));
    c.set_same_site(same_site);
    if let Some(p) = spec.path {
        c.set_path(p);
    }
    if let Some(d) = spec.domain {
        c.set_domain(d);
    }
    if let Some(age) = spec.max_age {
        c.set_max_age(Duration::seconds(age));
    }
    if let Some(t) = spec.expires {
        let t = OffsetDateTime::from_unix_timestamp(t).map_err(|e| format!("expires {t} is out of range: {e}"))?;
        c.set_expires(t);
    }
    Ok(c.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &'static str, value: &'static str) -> CookieSpec<'static> {
        CookieSpec {
            name,
            value,
            max_age: None,
            expires: None,
            path: Some("/"),
            domain: None,
            secure: false,
            httponly: false,
            samesite: Some("Lax"),
        }
    }

    #[test]
    fn renders_in_a_fixed_order() {
        assert_eq!(render(&spec("sid", "abc")).unwrap(), "sid=abc; SameSite=Lax; Path=/");
        let full = CookieSpec {
            max_age: Some(3600),
            expires: Some(1_445_412_480),
            domain: Some("example.com"),
            secure: true,
            httponly: true,
            samesite: Some("None"),
            ..spec("a", "1")
        };
        assert_eq!(
            render(&full).unwrap(),
            "a=1; HttpOnly; SameSite=None; Secure; Path=/; Domain=example.com; Max-Age=3600; Expires=Wed, 21 Oct 2015 07:28:00 GMT"
        );
    }

    #[test]
    fn refuses_what_would_break_the_header() {
        for (n, v) in [("", "x"), ("a b", "x"), ("a;", "x"), ("a", "x;y"), ("a", "x y"), ("a", "\"q\""), ("a", "é")] {
            assert!(render(&spec(n, v)).is_err(), "{n:?}={v:?}");
        }
        assert!(render(&CookieSpec { samesite: Some("None"), ..spec("a", "1") }).is_err());
        assert!(render(&CookieSpec { samesite: Some("lax"), ..spec("a", "1") }).is_err());
        assert!(render(&CookieSpec { path: Some("/a;b"), ..spec("a", "1") }).is_err());
    }
}
