//! The documentation matches the code: README.md documents every setting the
//! real binary accepts (with its default) and no setting it does not, every
//! flag of `pyrs --help` and its `PYRS_` variable; ARCHITECTURE.md names every
//! source file and only files that exist; every source file starts with a
//! header comment. The keys and flags come from the binary itself
//! (`--print-config`, `--help`), not from a second reading of the source.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every setting, in `--print-config` order (`key = value  # source` lines).
fn keys() -> Vec<String> {
    let p = Project::simple("class Api:\n    def a(self, request):\n        return 'a'\n", &[("/a", "a")], "");
    let (code, out, err) = run_pyrs(&[p.file().to_str().unwrap(), "--print-config"], &[]);
    assert_eq!(code, 0, "{err}");
    let keys: Vec<String> = out
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k.trim().to_string()))
        .collect();
    assert!(keys.len() >= 30 && keys.iter().any(|k| k == "modules"), "{out}");
    keys
}

/// The long flags `pyrs --help` lists, without clap's own and the two actions.
fn flags() -> Vec<String> {
    let (code, out, err) = run_pyrs(&["--help"], &[]);
    assert_eq!(code, 0, "{err}");
    let flags: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("--")))
        .map(|w| w.trim_end_matches(',').to_string())
        .filter(|f| !["--help", "--version", "--check", "--print-config"].contains(&f.as_str()))
        .collect();
    assert!(flags.len() >= 30 && flags.contains(&"--threads".to_string()), "{out}");
    flags
}

/// README's section `heading`, up to the next heading of the same or a
/// higher level (lines in code blocks, such as `# comment`, are no headings).
fn section(readme: &str, heading: &str) -> String {
    let level = heading.chars().take_while(|&c| c == '#').count();
    let mut lines = readme.lines().skip_while(|l| *l != heading);
    assert!(lines.next().is_some(), "README has no {heading:?}");
    let mut in_code = false;
    let mut out = String::new();
    for line in lines {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !in_code && hashes > 0 && hashes <= level && line[hashes..].starts_with(' ') {
            break;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The rows of the markdown tables in `text` whose first cell starts with a
/// backticked name: (name, cells).
fn rows(text: &str) -> Vec<(String, Vec<String>)> {
    text.lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<String> = l.trim_matches('|').split(" | ").map(|c| c.trim().to_string()).collect();
            let name = cells[0].trim_start_matches('`').split('`').next().unwrap_or("").to_string();
            (name, cells)
        })
        .collect()
}

/// The settings tables: `## project.pyrs` (key, type, default, meaning) and
/// `## Worker processes` (key, default, meaning): key -> default.
fn documented_settings(readme: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (heading, default_column) in [("## project.pyrs", 2), ("## Worker processes", 1)] {
        let table = rows(&section(readme, heading));
        assert!(!table.is_empty(), "README {heading} has no table of keys");
        for (name, cells) in table {
            out.push((name, cells.get(default_column).cloned().unwrap_or_default()));
        }
    }
    out
}

#[test]
fn readme_documents_every_setting_with_its_default_and_no_other() {
    let readme = read("README.md");
    let keys = keys();
    let documented = documented_settings(&readme);
    for key in &keys {
        let row = documented.iter().find(|(name, _)| name == key);
        let Some((_, default)) = row else { panic!("README's settings tables have no row for {key:?}") };
        // `modules` is required: it has no default.
        assert!(key == "modules" || !default.is_empty(), "README gives no default for {key:?}");
    }
    for (name, _) in &documented {
        assert!(keys.contains(name), "README documents {name:?}, which is no setting of pyrs (--print-config)");
    }
    let unique: BTreeSet<&String> = documented.iter().map(|(n, _)| n).collect();
    assert_eq!(unique.len(), documented.len(), "a key has two rows in README's settings tables");
}

#[test]
fn readme_documents_every_flag_and_variable() {
    let readme = read("README.md");
    let keys = keys();
    let settings = section(&readme, "### Settings: flags, environment, file");
    for flag in flags() {
        let generic = keys.iter().any(|k| flag == format!("--{}", k.replace('_', "-")));
        if generic {
            // Documented by the rule "--KEY-WITH-DASHES" and the key's row.
            continue;
        }
        // A flag named otherwise than its key is spelled out, with its variable.
        assert!(readme.contains(&format!("`{flag}")), "README never mentions {flag}");
        let var = format!("PYRS_{}", flag.trim_start_matches("--").replace('-', "_").to_ascii_uppercase());
        let is_alias = settings.contains(&format!("`{flag}` for"));
        assert!(
            !is_alias || settings.contains(&format!("`{var}`")),
            "README does not name {var} (the variable of {flag})"
        );
    }
    // The keys the Settings section says have no flag indeed have none, and the others have one.
    let help = run_pyrs(&["--help"], &[]).1;
    for key in ["modules", "http_listen_address", "http_listen_port"] {
        assert!(settings.contains(&format!("`{key}`")), "README's Settings section does not say {key} has no flag");
        assert!(!help.contains(&format!("--{} ", key.replace('_', "-"))), "{key} has a flag now: update README");
    }
    // Every flag the synopsis shows exists.
    let synopsis = section(&readme, "## Command line");
    let synopsis = synopsis.split("```").nth(1).expect("README's Command line section has no synopsis block");
    for word in synopsis.split(|c: char| c.is_whitespace() || c == '[' || c == ']') {
        if word.starts_with("--") && word != "--KEY" {
            assert!(help.contains(&format!("{word} ")), "README's synopsis shows {word}, which pyrs --help lacks");
        }
    }
}

/// The `.rs` files under `dir`, as paths relative to the repository.
fn sources(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path.strip_prefix(repo()).unwrap().to_string_lossy().into_owned());
        }
    }
}

#[test]
fn architecture_names_every_source_file_and_only_real_ones() {
    let arch = read("ARCHITECTURE.md");
    let mut files = Vec::new();
    sources(&repo().join("src"), &mut files);
    files.sort();
    assert!(files.len() > 40, "{files:?}");
    // A module table row: "| `src/x.rs` | ..." or "| `src/dir/` | ... `file.rs` ...".
    let table = rows(&arch);
    for file in &files {
        let (dir, name) = file.rsplit_once('/').unwrap();
        let named = arch.contains(&format!("`{file}`"))
            || table.iter().any(|(row, cells)| {
                row == &format!("{dir}/") && (name == "mod.rs" || cells[1..].join(" ").contains(&format!("`{name}`")))
            })
            // A file of a subdirectory named from its parent's row (`config/access_format.rs`).
            || arch.contains(&format!("`{}`", file.trim_start_matches("src/")));
        assert!(named, "ARCHITECTURE.md does not name {file}");
    }
    // Every source file a row names exists.
    for (row, cells) in &table {
        if !row.starts_with("src/") {
            continue;
        }
        if row.ends_with(".rs") {
            assert!(files.contains(row), "ARCHITECTURE.md names {row}, which does not exist");
        }
        if row.ends_with('/') {
            for named in cells[1..].join(" ").split('`').filter(|w| w.ends_with(".rs")) {
                let path = format!("{row}{named}");
                assert!(
                    files.contains(&path) || files.contains(&format!("src/{named}")),
                    "ARCHITECTURE.md's {row} row names {named}, which does not exist"
                );
            }
        }
    }
}

#[test]
fn every_source_file_starts_with_a_header_saying_what_it_owns() {
    let mut files = Vec::new();
    sources(&repo().join("src"), &mut files);
    for file in files {
        let text = read(&file);
        let header: Vec<&str> = text.lines().take_while(|l| l.starts_with("//!")).collect();
        let words = header.iter().map(|l| l.split_whitespace().count()).sum::<usize>();
        assert!(words >= 8, "{file} does not start with a //! comment saying what it owns");
    }
}
