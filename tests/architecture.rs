//! The shape of `src/`, checked on every test run (issue 15):
//! - only `proxy/` sees Pingora's server session, the per-request `Ctx` and the shared
//!   `Gateway`;
//! - `config/` is a leaf: it imports no other module of the crate;
//! - the top-level modules import each other without cycles (a cycle inside one module
//!   folder is that folder's business).
//!
//! The source is read as text: comments, strings and `#[cfg(test)]` modules are left out, and a
//! module's imports are every `crate::name` path in its code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `src/`, with its path relative to `src/`.
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("read src/")
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, root, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                let rel = p
                    .strip_prefix(root)
                    .expect("under src/")
                    .to_string_lossy()
                    .replace('\\', "/");
                let text = std::fs::read_to_string(&p).expect("read a source file");
                out.push((rel, text));
            }
        }
    }
    let root = src_dir();
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    assert!(out.len() > 10, "src/ has its files");
    out
}

/// The code of a file: comments, string and char literals blanked, and everything from the
/// first `#[cfg(test)]` on dropped (test modules sit at the end of a file here).
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    let b = text.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == b'/' && next == Some(b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && next == Some(b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
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
        } else if c == b'r' && (next == Some(b'"') || next == Some(b'#')) && !ident_before(b, i) {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(c as char);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == b'"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&b'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == b'\'' {
            // A char literal ('x', '\n', '\u{..}', '"'); otherwise a lifetime.
            let end = if next == Some(b'\\') {
                b[i + 2..]
                    .iter()
                    .position(|&x| x == b'\'')
                    .map(|p| i + 2 + p)
            } else {
                let ch_len = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                (b.get(i + 1 + ch_len) == Some(&b'\'')).then_some(i + 1 + ch_len)
            };
            match end {
                Some(e) => {
                    out.push_str("' '");
                    i = e + 1;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            // Copy one whole character.
            let ch = text[i..].chars().next().expect("a character");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

fn ident_before(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// Whole-word occurrences of `word` in `code`.
fn mentions(code: &str, word: &str) -> bool {
    let b = code.as_bytes();
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    code.match_indices(word).any(|(i, _)| {
        let before = i == 0 || !is_ident(b[i - 1]);
        let after = b.get(i + word.len()).is_none_or(|&c| !is_ident(c));
        before && after
    })
}

/// The top-level module a file belongs to (`proxy/chat.rs` -> `proxy`, `auth.rs` -> `auth`).
fn top_module(rel: &str) -> String {
    rel.split('/')
        .next()
        .unwrap_or(rel)
        .trim_end_matches(".rs")
        .to_string()
}

/// The crate's top-level modules a piece of code names (`crate::x`, `crate::{x, y::z}`).
fn imports(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
        rest = after;
    }
    out
}

#[test]
fn only_proxy_sees_the_session_ctx_and_gateway() {
    let mut offenders = Vec::new();
    for (rel, text) in sources() {
        if rel.starts_with("proxy/") {
            continue;
        }
        let code = code(&text);
        for word in ["Session", "ServerSession", "Ctx", "Gateway"] {
            if mentions(&code, word) {
                offenders.push(format!("src/{rel} mentions {word}"));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}

#[test]
fn config_is_a_leaf() {
    let mut offenders = Vec::new();
    let mut seen = 0;
    for (rel, text) in sources() {
        if !(rel == "config.rs" || rel.starts_with("config/")) {
            continue;
        }
        seen += 1;
        let code = code(&text);
        for m in imports(&code) {
            if m != "config" {
                offenders.push(format!("src/{rel} imports crate::{m}"));
            }
        }
        if code.contains("super::super") {
            offenders.push(format!(
                "src/{rel} reaches outside config/ through super::super"
            ));
        }
    }
    assert!(seen > 0, "src/config exists");
    assert!(offenders.is_empty(), "{offenders:#?}");
}

#[test]
fn top_level_modules_have_no_import_cycle() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, text) in sources() {
        let from = top_module(&rel);
        if from == "lib" || from == "main" {
            continue;
        }
        let deps = graph.entry(from.clone()).or_default();
        for to in imports(&code(&text)) {
            if to != from {
                deps.insert(to);
            }
        }
    }
    // Depth-first search for a back edge; the path to it is the cycle.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(node) {
            Some(2) => return None,
            Some(1) => {
                let start = path.iter().position(|p| p == node).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(node.to_string(), 1);
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        let mut path = Vec::new();
        if let Some(cycle) = visit(node, &graph, &mut state, &mut path) {
            panic!("import cycle between modules: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_checks_can_fail() {
    // The reader sees code, not comments or strings...
    let c = code("// Gateway\nlet s = \"Ctx\"; let c = '\"'; fn f<'a>(x: &'a Session) {}");
    assert!(!mentions(&c, "Gateway") && !mentions(&c, "Ctx"));
    assert!(mentions(&c, "Session"));
    assert!(!mentions("GatewayError", "Gateway"));
    // ...and finds imports written either way.
    let i = imports("use crate::{auth, cache::key::Key};\nlet x = crate::metrics::f();");
    assert_eq!(
        i.into_iter().collect::<Vec<_>>(),
        ["auth", "cache", "metrics"]
    );
    assert_eq!(top_module("proxy/chat.rs"), "proxy");
    assert_eq!(top_module("auth.rs"), "auth");
}
