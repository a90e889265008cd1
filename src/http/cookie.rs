//! Cookies: the request's `Cookie` header fields as (name, value) pairs
//! (the `cookie` crate parses; pyrs decides what to keep).

/// Every cookie in the `Cookie` header values, in order. Pairs that do not
/// parse are skipped (a browser's other cookies stay usable); a value in
/// double quotes loses them; nothing is percent-decoded (RFC 6265 leaves
/// encoding to the application).
pub fn parse<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for value in values {
        let Ok(value) = std::str::from_utf8(value) else { continue };
        for c in cookie::Cookie::split_parse(value).flatten() {
            let (name, value) = c.name_value_trimmed();
            out.push((name.to_string(), value.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn pairs_in_order_quotes_removed_bad_pairs_skipped() {
        let got = parse([&b"a=1; b=\"two\"; =x; c=; bad"[..], b"d=4"].into_iter());
        let want: Vec<(String, String)> = [("a", "1"), ("b", "two"), ("c", ""), ("d", "4")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want);
    }
}
