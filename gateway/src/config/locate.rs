//! Finds where a key sits in a TOML document, so every config error names file, line and key.
//!
//! toml's span-preserving `DeTable` is only used here; the rest of the config code works on
//! plain serde structs.

use toml::de::{DeTable, DeValue};

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// `key`
    Key(String),
    /// `[n]`
    Index(usize),
}

/// Render a path like `peer[1].urls[0]`.
pub(super) fn render(path: &[Step]) -> String {
    let mut s = String::new();
    for step in path {
        match step {
            Step::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Step::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// The 1-based line of the value at `path`, or of the deepest existing parent.
pub(super) fn line_of(src: &str, path: &[Step]) -> Option<usize> {
    let table = DeTable::parse(src).ok()?;
    let mut span = table.span();
    let mut cur: Option<&DeValue<'_>> = None;
    let mut cur_table: Option<&DeTable<'_>> = Some(table.get_ref());
    for step in path {
        match step {
            Step::Key(k) => {
                let t = cur_table?;
                let Some((key, v)) = t
                    .iter()
                    .find(|(key, _)| key.get_ref().as_ref() == k.as_str())
                else {
                    break;
                };
                span = key.span();
                cur = Some(v.get_ref());
                cur_table = match v.get_ref() {
                    DeValue::Table(t) => Some(t),
                    _ => None,
                };
                if !matches!(v.get_ref(), DeValue::Table(_) | DeValue::Array(_)) {
                    span = key.span();
                }
            }
            Step::Index(i) => {
                let Some(DeValue::Array(items)) = cur else {
                    break;
                };
                let Some(item) = items.get(*i) else { break };
                span = item.span();
                cur = Some(item.get_ref());
                cur_table = match item.get_ref() {
                    DeValue::Table(t) => Some(t),
                    _ => None,
                };
            }
        }
    }
    Some(line_at(src, span.start))
}

/// The key path at a byte offset (a key, or inside its value), e.g. `resolver.cache_entries`:
/// names the key of a TOML type error, whose span covers only the bad value.
pub(super) fn path_at(src: &str, offset: usize) -> Option<String> {
    let table = DeTable::parse(src).ok()?;
    let mut path = Vec::new();
    in_table(table.get_ref(), offset, &mut path).then(|| render(&path))
}

// Spans of tables made by `[header]` lines need not cover their entries, so every table and
// array is searched, backing out of the ones that do not hold the offset.
fn in_table(t: &DeTable<'_>, offset: usize, path: &mut Vec<Step>) -> bool {
    for (k, v) in t.iter() {
        path.push(Step::Key(k.get_ref().to_string()));
        if k.span().contains(&offset) || in_value(v, offset, path) {
            return true;
        }
        path.pop();
    }
    false
}

fn in_value(v: &toml::Spanned<DeValue<'_>>, offset: usize, path: &mut Vec<Step>) -> bool {
    match v.get_ref() {
        DeValue::Table(t) => in_table(t, offset, path),
        DeValue::Array(items) => items.iter().enumerate().any(|(i, item)| {
            path.push(Step::Index(i));
            let found = in_value(item, offset, path) || item.span().contains(&offset);
            if !found {
                path.pop();
            }
            found
        }),
        _ => v.span().contains(&offset),
    }
}

/// 1-based line number of a byte offset.
pub(super) fn line_at(src: &str, offset: usize) -> usize {
    src.as_bytes()[..offset.min(src.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys_and_array_items() {
        let src = "[gateway]\npublic_domain = \"x\"\n\n[[peer]]\ndomain = \"a\"\n\n[[peer]]\ndomain = \"b\"\nurls = [\n  \"u1\",\n  \"u2\",\n]\n";
        let k = |s: &str| Step::Key(s.into());
        assert_eq!(line_of(src, &[k("gateway"), k("public_domain")]), Some(2));
        assert_eq!(
            line_of(src, &[k("peer"), Step::Index(1), k("domain")]),
            Some(8)
        );
        assert_eq!(
            line_of(src, &[k("peer"), Step::Index(1), k("urls"), Step::Index(1)]),
            Some(11)
        );
        // A missing key points at its parent.
        assert_eq!(
            line_of(src, &[k("peer"), Step::Index(0), k("nope")]),
            Some(4)
        );
        assert_eq!(
            render(&[k("peer"), Step::Index(1), k("urls")]),
            "peer[1].urls"
        );
        let at = |needle: &str| path_at(src, src.find(needle).unwrap());
        assert_eq!(at("\"b\"").as_deref(), Some("peer[1].domain"));
        assert_eq!(at("\"u2\"").as_deref(), Some("peer[1].urls[1]"));
        assert_eq!(
            at("public_domain").as_deref(),
            Some("gateway.public_domain")
        );
    }
}
