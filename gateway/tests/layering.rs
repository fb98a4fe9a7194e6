//! The module layering of the gateway's source, checked from the source text:
//!
//! - no two top-level modules import each other, directly or round a longer cycle;
//! - no two sibling modules (children of one module) do either;
//! - the layers run one way: `resolve` knows no links, pipeline or service; `links` no
//!   pipeline or service; `pipeline` no service; `ops` none of the request path.
//!
//! A reference is any `crate::a::b` or `super::b` path in code (comments and test modules
//! are left out). A child using its own parent's items is not counted: a parent declares its
//! children, and children implementing the parent's types is how a module is split by
//! concern.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path of a source file (`pipeline/handle.rs` → `["pipeline", "handle"]`).
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without comments and without its test module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every module path a file's code names: `crate::a::b…` and `super::…` (relative to `m`),
/// braces of `use` lists expanded one level.
fn references(m: &[String], code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for (start, prefix) in code
        .match_indices("crate::")
        .chain(code.match_indices("super::"))
    {
        // Only whole path starts (not `foo_crate::`).
        if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            continue;
        }
        let mut base: Vec<String> = if prefix == "crate::" {
            Vec::new()
        } else {
            m.iter().take(m.len().saturating_sub(1)).cloned().collect()
        };
        let rest = &code[start + prefix.len()..];
        let mut rest = rest;
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        let mut path = base.clone();
        let mut segs = rest;
        let mut listed = false;
        loop {
            if let Some(r) = segs.strip_prefix('{') {
                // A use list: each item's first segment.
                let end = r.find('}').unwrap_or(r.len());
                for item in r[..end].split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != "self" {
                        let mut p = path.clone();
                        p.push(name);
                        out.push(p);
                    }
                }
                listed = true;
                break;
            }
            let name: String = segs
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name.is_empty() {
                break;
            }
            path.push(name.clone());
            segs = &segs[name.len()..];
            match segs.strip_prefix("::") {
                Some(r) => segs = r,
                None => break,
            }
        }
        if !listed && !path.is_empty() {
            out.push(path);
        }
    }
    out
}

fn cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_owned(), 1);
        stack.push(n.to_owned());
        for m in edges.get(n).into_iter().flatten() {
            match state.get(m.as_str()) {
                Some(1) => {
                    let at = stack.iter().position(|s| s == m).unwrap_or(0);
                    let mut c = stack[at..].to_vec();
                    c.push(m.clone());
                    return Some(c);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(m, edges, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(n.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in edges.keys() {
        if !state.contains_key(n.as_str()) {
            let mut stack = Vec::new();
            if let Some(c) = visit(n, edges, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

/// Module dependency edges at every level: `parent` → (child → children it uses).
fn graph() -> BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let modules: BTreeSet<Vec<String>> = files
        .iter()
        .map(|f| module_of(f.strip_prefix(&root).unwrap()))
        .collect();
    let mut levels: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap();
        if rel == Path::new("main.rs") || rel.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let m = module_of(rel);
        let text = std::fs::read_to_string(f).unwrap();
        for r in references(&m, &code(&text)) {
            // The deepest common ancestor decides the level; an ancestor itself is not an
            // edge (a child using its parent's items).
            let common = m.iter().zip(&r).take_while(|(a, b)| a == b).count();
            if common >= m.len() || common >= r.len() {
                continue;
            }
            let parent = m[..common].to_vec();
            // Items of the common parent (its types, its re-exports) are not a sibling.
            if !modules.contains(&r[..=common]) {
                continue;
            }
            levels
                .entry(parent)
                .or_default()
                .entry(m[common].clone())
                .or_default()
                .insert(r[common].clone());
        }
    }
    levels
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let levels = graph();
    assert!(
        levels.get(&Vec::new()).is_some_and(|e| e.len() > 5),
        "the checker sees the top-level modules: {levels:?}"
    );
    for (parent, edges) in &levels {
        if let Some(c) = cycle(edges) {
            panic!(
                "import cycle among the children of crate::{}: {}",
                parent.join("::"),
                c.join(" -> ")
            );
        }
    }
}

#[test]
fn the_layers_run_one_way() {
    let levels = graph();
    let top = &levels[&Vec::new()];
    let forbidden: &[(&str, &[&str])] = &[
        ("ssp", &["resolve", "links", "pipeline", "app", "ops"]),
        ("resolve", &["links", "pipeline", "app"]),
        ("ops", &["links", "pipeline", "app", "resolve"]),
        ("links", &["pipeline", "app"]),
        ("pipeline", &["app"]),
    ];
    for (from, not) in forbidden {
        for to in *not {
            assert!(
                !top.get(*from).is_some_and(|t| t.contains(*to)),
                "{from} must not use {to}"
            );
        }
    }
}

#[test]
fn the_checker_finds_cycles_and_references() {
    let m = vec!["a".to_owned(), "b".to_owned()];
    let refs = references(&m, "use super::{c::D, e};\nlet x = crate::f::g::h();");
    let refs: Vec<String> = refs.iter().map(|r| r.join("::")).collect();
    assert_eq!(refs, vec!["f::g::h", "a::c", "a::e"]);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.entry("x".into()).or_default().insert("y".into());
    assert!(cycle(&edges).is_none());
    edges.entry("y".into()).or_default().insert("x".into());
    assert_eq!(
        cycle(&edges),
        Some(vec!["x".into(), "y".into(), "x".into()])
    );
}
