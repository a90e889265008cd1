//! The crate's module graph has no cycle: for every top-level module of
//! `src/` (a file `src/X.rs` or a directory `src/X/`), the other top-level
//! modules its code names through `crate::Y` (a path, a `use crate::{..}`
//! group or an exported macro `crate::m!`), outside comments and literals.
//! ARCHITECTURE.md says which way the dependencies point; this test fails
//! when a change makes two modules (or a longer ring) import each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// `text` without comments, string/char literal contents and lifetimes' quotes
/// (so that `"crate::x"` in a message or `b'"'` do not count or confuse).
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c[i] == 'r' && (next == Some('"') || next == Some('#')) && !ident_char(c.get(i.wrapping_sub(1))) {
            // Raw string r"..." / r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= c.len() {
                    break;
                }
                if c[j] == '"' && (0..hashes).all(|k| c.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c[i] == '\'' {
            // A char literal ('x', '\n', '\'', '"') or a lifetime ('a).
            if next == Some('\\') {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
            out.push(' ');
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

fn ident_char(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || *c == '_')
}

fn ident_at(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// The names a piece of code reaches through `crate::` (first path segment,
/// every entry of a `crate::{..}` group).
fn crate_names(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if ident_char(before.as_ref()) {
            continue; // `pyrs_crate::` or the like
        }
        let tail = rest.trim_start();
        if let Some(group) = tail.strip_prefix('{') {
            // Top-level entries of the group: `a::b, c::{d, e}, f`.
            let mut depth = 0;
            let mut start = true;
            for (k, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && depth == 0 && (c.is_alphanumeric() || c == '_') => {
                        names.insert(ident_at(&group[k..]).to_string());
                        start = false;
                    }
                    c if c.is_whitespace() => {}
                    _ => start = false,
                }
            }
        } else {
            let name = ident_at(tail);
            if !name.is_empty() {
                names.insert(name.to_string());
            }
        }
    }
    names
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// `#[macro_export] macro_rules! NAME` in `code`: reachable as `crate::NAME!`.
fn exported_macros(code: &str) -> Vec<String> {
    let mut v = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[macro_export]") {
        rest = &rest[at + "#[macro_export]".len()..];
        if let Some(m) = rest.trim_start().strip_prefix("macro_rules!") {
            v.push(ident_at(m.trim_start()).to_string());
        }
    }
    v
}

/// Every top-level module of `src` and the other top-level modules it uses.
fn module_graph(src: &Path) -> Graph {
    let mut modules: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(src).expect("src/ is readable") {
        let p = entry.expect("directory entry").path();
        let name = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        if p.is_dir() {
            let mut files = Vec::new();
            rust_files(&p, &mut files);
            modules.entry(name).or_default().extend(files);
        } else if p.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main" {
            modules.entry(name).or_default().push(p);
        }
    }
    let code: BTreeMap<&String, String> = modules
        .iter()
        .map(|(m, files)| {
            let text: String = files
                .iter()
                .map(|f| std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
                .collect::<Vec<_>>()
                .join("\n");
            (m, code_only(&text))
        })
        .collect();
    let mut owner: BTreeMap<String, String> = modules.keys().map(|m| (m.clone(), m.clone())).collect();
    for (m, c) in &code {
        for mac in exported_macros(c) {
            owner.insert(mac, (*m).clone());
        }
    }
    code.iter()
        .map(|(m, c)| {
            let uses = crate_names(c).into_iter().filter_map(|n| owner.get(&n).cloned()).filter(|d| d != *m).collect();
            ((*m).clone(), uses)
        })
        .collect()
}

/// A cycle of `g` as the list of its modules (first repeated at the end), if any.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit(g: &Graph, m: &str, marks: &mut BTreeMap<String, Mark>, path: &mut Vec<String>) -> Option<Vec<String>> {
        marks.insert(m.to_string(), Mark::OnPath);
        path.push(m.to_string());
        for d in g.get(m).into_iter().flatten() {
            match marks.get(d).copied().unwrap_or(Mark::New) {
                Mark::OnPath => {
                    let from = path.iter().position(|p| p == d).unwrap_or(0);
                    let mut cycle = path[from..].to_vec();
                    cycle.push(d.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(g, d, marks, path) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(m.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for m in g.keys() {
        if marks.get(m).copied().unwrap_or(Mark::New) == Mark::New {
            if let Some(c) = visit(g, m, &mut marks, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn render(g: &Graph) -> String {
    g.iter()
        .map(|(m, deps)| format!("  {m} -> {}", deps.iter().cloned().collect::<Vec<_>>().join(", ")))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_crate_has_no_module_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = module_graph(&src);
    // The scan sees the crate: the modules and a few known edges exist.
    for m in ["config", "http", "observe", "server", "python", "workers"] {
        assert!(g.contains_key(m), "module {m} not found in src/:\n{}", render(&g));
    }
    assert!(g["observe"].contains("config"), "observe reads its settings from config:\n{}", render(&g));
    assert!(g["server"].contains("http"), "server frames with http:\n{}", render(&g));
    assert!(g["http"].is_empty(), "http depends on no other module of the crate:\n{}", render(&g));
    println!("module -> what it uses:\n{}", render(&g));
    if let Some(cycle) = find_cycle(&g) {
        panic!("module cycle: {}\nthe graph (module -> what it uses):\n{}", cycle.join(" -> "), render(&g));
    }
}

#[test]
fn the_scanner_sees_paths_groups_and_macros_but_not_comments_or_strings() {
    let code = code_only(
        "use crate::a::B;\nuse crate::{b::C, c, d::{e, f}};\n// crate::g\n/* crate::h /* nested */ crate::i */\n\
         let s = \"crate::j\"; let r = r#\"crate::k\"#; let q = b'\"'; crate::l!(x); fn f<'a>(x: &'a crate::m::T) {}\n",
    );
    let names: Vec<String> = crate_names(&code).into_iter().collect();
    assert_eq!(names, ["a", "b", "c", "d", "l", "m"]);
    assert_eq!(exported_macros("#[macro_export]\nmacro_rules! say { () => {} }"), ["say"]);
}

#[test]
fn the_cycle_finder_finds_a_ring_and_accepts_a_dag() {
    let graph = |edges: &[(&str, &str)]| {
        let mut g = Graph::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    };
    assert_eq!(find_cycle(&graph(&[("a", "b"), ("b", "c"), ("a", "c")])), None);
    let ring = find_cycle(&graph(&[("a", "b"), ("b", "c"), ("c", "d"), ("d", "b")])).expect("b -> c -> d -> b");
    assert_eq!(ring, ["b", "c", "d", "b"]);
}
