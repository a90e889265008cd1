//! The `access_log_format` syntax: `combined`, `json` or a template of
//! `{field}`s, compiled into the list of [`Field`]s a line is made of. Config
//! owns it (a wrong format is a `project.pyrs` error); `observe::access_log`
//! renders the fields.

/// The default format: combined log format, then the duration and the request id.
pub const COMBINED: &str = "{remote_addr} - - [{time}] \"{request_line}\" {status} {bytes} \"{header:Referer}\" \"{header:User-Agent}\" {duration_us}us rid={request_id}";

/// Field names `access_log_format` accepts (besides `header:NAME`).
pub const FIELD_NAMES: &[&str] = &[
    "remote_addr",
    "remote_port",
    "method",
    "path",
    "query",
    "target",
    "protocol",
    "request_line",
    "status",
    "bytes",
    "duration_us",
    "request_id",
    "route",
    "pid",
    "time",
    "time_iso8601",
];

/// One piece of an access-log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// Literal bytes.
    Lit(Vec<u8>),
    RemoteAddr,
    RemotePort,
    Method,
    Path,
    Query,
    Target,
    Protocol,
    RequestLine,
    /// A request header by name (`{header:NAME}`).
    Header(String),
    Status,
    Bytes,
    DurationUs,
    RequestId,
    Route,
    Pid,
    Time,
    TimeIso,
}

impl Field {
    /// Rendered as a JSON number (not quoted) in the json format.
    pub fn numeric(&self) -> bool {
        matches!(self, Field::RemotePort | Field::Status | Field::Bytes | Field::DurationUs | Field::Pid)
    }
}

/// A compiled `access_log_format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The line's pieces in order (a `json` line's keys and quotes are literals).
    pub fields: Vec<Field>,
    /// The `json` format: values are escaped as JSON strings.
    pub json: bool,
}

fn named(name: &str) -> Result<Field, String> {
    if let Some(h) = name.strip_prefix("header:") {
        if h.is_empty() || !h.bytes().all(crate::http::encode::is_token_byte) {
            return Err(format!("access_log_format: {{header:{h}}} needs a header name"));
        }
        return Ok(Field::Header(h.to_string()));
    }
    Ok(match name {
        "remote_addr" => Field::RemoteAddr,
        "remote_port" => Field::RemotePort,
        "method" => Field::Method,
        "path" => Field::Path,
        "query" => Field::Query,
        "target" => Field::Target,
        "protocol" => Field::Protocol,
        "request_line" => Field::RequestLine,
        "status" => Field::Status,
        "bytes" => Field::Bytes,
        "duration_us" => Field::DurationUs,
        "request_id" => Field::RequestId,
        "route" => Field::Route,
        "pid" => Field::Pid,
        "time" => Field::Time,
        "time_iso8601" => Field::TimeIso,
        _ => {
            return Err(format!(
                "access_log_format: unknown field {{{name}}} (known: {}, header:NAME)",
                FIELD_NAMES.join(", ")
            ))
        }
    })
}

/// `combined` (the default), `json`, or a template with `{field}`s (`{{`
/// and `}}` for literal braces).
pub fn parse(spec: &str) -> Result<Template, String> {
    match spec {
        "combined" => return parse(COMBINED),
        "json" => return Ok(json()),
        _ => {}
    }
    let mut fields = Vec::new();
    let mut lit = Vec::new();
    let mut rest = spec;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("{{") || rest.starts_with("}}") {
            lit.push(rest.as_bytes()[0]);
            rest = &rest[2..];
        } else if c == '{' {
            let end = rest.find('}').ok_or("access_log_format: unclosed '{'")?;
            if !lit.is_empty() {
                fields.push(Field::Lit(std::mem::take(&mut lit)));
            }
            fields.push(named(&rest[1..end])?);
            rest = &rest[end + 1..];
        } else if c == '}' {
            return Err("access_log_format: '}' without '{' (write }} for a literal brace)".into());
        } else if c.is_control() {
            return Err("access_log_format: control characters are not allowed".into());
        } else {
            lit.extend_from_slice(c.to_string().as_bytes());
            rest = &rest[c.len_utf8()..];
        }
    }
    if !lit.is_empty() {
        fields.push(Field::Lit(lit));
    }
    Ok(Template { fields, json: false })
}

/// The `json` format: one object per line, fixed keys.
fn json() -> Template {
    let keys: [(&str, Field); 14] = [
        ("time", Field::TimeIso),
        ("remote_addr", Field::RemoteAddr),
        ("method", Field::Method),
        ("path", Field::Path),
        ("query", Field::Query),
        ("protocol", Field::Protocol),
        ("status", Field::Status),
        ("bytes", Field::Bytes),
        ("duration_us", Field::DurationUs),
        ("request_id", Field::RequestId),
        ("route", Field::Route),
        ("pid", Field::Pid),
        ("referer", Field::Header("Referer".into())),
        ("user_agent", Field::Header("User-Agent".into())),
    ];
    let mut fields = Vec::new();
    for (i, (key, field)) in keys.into_iter().enumerate() {
        let sep = if i == 0 { "{" } else { "," };
        let quote = if field.numeric() { "" } else { "\"" };
        fields.push(Field::Lit(format!("{sep}\"{key}\":{quote}").into_bytes()));
        fields.push(field.clone());
        if !field.numeric() {
            fields.push(Field::Lit(b"\"".to_vec()));
        }
    }
    fields.push(Field::Lit(b"}".to_vec()));
    Template { fields, json: true }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_compile_into_fields() {
        let t = parse("{method} {{x}} {header:X-Id}é").unwrap();
        assert_eq!(
            t.fields,
            [
                Field::Method,
                Field::Lit(b" {x} ".to_vec()),
                Field::Header("X-Id".into()),
                Field::Lit("é".as_bytes().to_vec()),
            ]
        );
        assert!(!t.json);
        assert_eq!(parse("combined").unwrap(), parse(COMBINED).unwrap());
        assert!(parse("json").unwrap().json);
    }

    #[test]
    fn bad_templates_are_errors() {
        for bad in ["{nope}", "{", "}", "{header:}", "{header:a b}", "a\nb"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("{nope}").unwrap_err().contains("unknown field {nope}"));
    }
}
