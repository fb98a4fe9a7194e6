//! The subscriber directory: which MSISDNs are ours, and the core user ID of each.
//!
//! Two sources, consulted in this order:
//! 1. explicit entries from a CSV file (`msisdn,core_id`, read as RFC 4180 CSV: quoted
//!    fields understood, a record of another length refused; see `routes/directory.csv`),
//!    which also carry ported-out numbers as `msisdn,-`;
//! 2. templates such as `wv:{national}@core.opx.example` <-> `+46{national}`, optionally
//!    restricted to number ranges.
//!
//! Both lookups are O(1) hash lookups (templates are a short list of string prefix tests).
//! The directory is immutable once built; the gateway swaps in a new one on reload.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{DirectorySpec, TemplateSpec};
use crate::ssp::ids::{E164, WvId};

/// A directory load error naming the file and line (`file:line: message`; `file: message`
/// when the file as a whole is the problem).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", file.display(), if *line > 0 { format!(":{line}") } else { String::new() })]
pub struct DirectoryError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line (0 when the file as a whole is the problem: it could not be read).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// A compiled template.
#[derive(Debug, Clone)]
struct Template {
    /// Canonical core ID text before `{national}` (e.g. `wv:`).
    core_prefix: String,
    /// Canonical core ID text after `{national}` (e.g. `@core.opx.example`).
    core_suffix: String,
    /// Digits of the public form before `{national}` (the country code).
    cc: String,
    /// Covered ranges (digit prefixes); empty: all.
    ranges: Vec<String>,
}

impl Template {
    fn compile(spec: &TemplateSpec) -> Option<Template> {
        let (pre, post) = spec.core.split_once("{national}")?;
        // Canonicalise the fixed parts the same way IDs are canonicalised.
        // Where the number sits in the canonical form: the one byte in which two samples
        // differ (the fixed parts may hold digits of their own, as in `wv:u1_{national}@…`).
        let one = WvId::parse(&format!("{pre}1{post}")).ok()?.to_string();
        let two = WvId::parse(&format!("{pre}2{post}")).ok()?.to_string();
        let idx = one.bytes().zip(two.bytes()).position(|(a, b)| a != b)?;
        let core_prefix = one.get(..idx)?.to_owned();
        let core_suffix = one.get(idx + 1..)?.to_owned();
        if two.get(idx + 1..)? != core_suffix {
            return None;
        }
        let public = spec
            .public
            .trim_start_matches("wv:")
            .trim_start_matches("WV:");
        let cc = public
            .strip_prefix('+')?
            .strip_suffix("{national}")?
            .to_owned();
        Some(Template {
            core_prefix,
            core_suffix,
            cc,
            ranges: spec
                .ranges
                .iter()
                .map(|r| r.trim_start_matches('+').to_owned())
                .collect(),
        })
    }

    fn covers(&self, digits: &str) -> bool {
        self.ranges.is_empty() || self.ranges.iter().any(|r| digits.starts_with(r.as_str()))
    }

    /// The national part of `digits` (a number's, without `+`) if this template covers it.
    fn national<'d>(&self, digits: &'d str) -> Option<&'d str> {
        if !self.covers(digits) {
            return None;
        }
        digits
            .strip_prefix(self.cc.as_str())
            .filter(|s| !s.is_empty())
    }

    /// Whether the template gives `n` a core ID (asked for every request: no string built).
    fn serves(&self, n: E164) -> bool {
        self.national(n.written().digits()).is_some()
    }

    fn core_for(&self, n: E164) -> Option<String> {
        let w = n.written();
        let national = self.national(w.digits())?;
        let mut id =
            String::with_capacity(self.core_prefix.len() + national.len() + self.core_suffix.len());
        id.push_str(&self.core_prefix);
        id.push_str(national);
        id.push_str(&self.core_suffix);
        Some(id)
    }

    fn msisdn_for(&self, canonical_core: &str) -> Option<E164> {
        let national = canonical_core
            .strip_prefix(self.core_prefix.as_str())?
            .strip_suffix(self.core_suffix.as_str())?;
        if national.is_empty() || !national.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n = E164::from_digits(&format!("{}{national}", self.cc)).ok()?;
        self.covers(&n.digits()).then_some(n)
    }
}

/// How the directory's maps hash: foldhash, seeded per process. Their keys come from the
/// operator's configuration; a peer's numbers only look them up, and a lookup cannot crowd
/// a table the way inserted keys could, so SipHash's resistance buys nothing here (its
/// hashing was about 850 instructions of each relayed request's directory lookups).
type Hasher = foldhash::fast::RandomState;

/// The directory.
#[derive(Debug, Default)]
pub struct Directory {
    by_msisdn: HashMap<u64, Arc<str>, Hasher>,
    by_core: HashMap<Arc<str>, u64, Hasher>,
    ported_out: HashSet<u64, Hasher>,
    templates: Vec<Template>,
}

impl Directory {
    /// Build from the config's `[directory]` section (reads the CSV file if any).
    pub fn load(spec: &DirectorySpec) -> Result<Directory, DirectoryError> {
        let mut dir = Directory::default();
        for (i, t) in spec.templates.iter().enumerate() {
            let tpl = Template::compile(t).ok_or_else(|| DirectoryError {
                file: PathBuf::from("[directory]"),
                line: 0,
                message: format!("template {i} ({:?} <-> {:?}) is invalid", t.core, t.public),
            })?;
            dir.templates.push(tpl);
        }
        if let Some(file) = &spec.file {
            let text = std::fs::read_to_string(file).map_err(|e| DirectoryError {
                file: file.clone(),
                line: 0,
                message: format!("cannot read the subscriber directory ([directory] file): {e}"),
            })?;
            dir.load_csv(file, &text)?;
        }
        Ok(dir)
    }

    /// Add the entries of a CSV text (RFC 4180: `msisdn,core_id` per record, fields may be
    /// quoted as spreadsheets write them; whole-line `#` comments; `-` = ported out). A
    /// record with another number of fields is an error naming the file and line.
    pub fn load_csv(&mut self, file: &Path, text: &str) -> Result<(), DirectoryError> {
        let err = |line: usize, message: String| DirectoryError {
            file: file.to_owned(),
            line,
            message,
        };
        // Pre-size from the line count: a reload of a large file then never rehashes.
        let estimate = text.len() / 40;
        self.by_msisdn.reserve(estimate);
        self.by_core.reserve(estimate);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .comment(Some(b'#'))
            .trim(csv::Trim::All)
            // Field counts are checked here, to say which line and what was expected.
            .flexible(true)
            .from_reader(text.as_bytes());
        let mut first = true;
        let mut record = csv::StringRecord::new();
        loop {
            let more = reader.read_record(&mut record).map_err(|e| {
                let line = e
                    .position()
                    .map_or(1, |p| usize::try_from(p.line()).unwrap_or(1));
                err(line, format!("not CSV: {}", csv_reason(&e)))
            })?;
            if !more {
                break;
            }
            let line = record.position().map_or(1, |p| line_of(text, p.byte()));
            if record.len() == 1 && record.get(0).is_some_and(str::is_empty) {
                continue; // a line of blanks
            }
            if record.get(0).is_some_and(|f| f.starts_with('#')) {
                continue; // an indented comment line
            }
            let (Some(num), Some(core), 2) = (record.get(0), record.get(1), record.len()) else {
                return Err(err(
                    line,
                    format!(
                        "expected 2 fields (msisdn,core_id), got {}: {:?}",
                        record.len(),
                        record.iter().collect::<Vec<_>>().join(",")
                    ),
                ));
            };
            if std::mem::take(&mut first) && num.eq_ignore_ascii_case("msisdn") {
                continue; // header row
            }
            let n = E164::parse(num).map_err(|e| err(line, format!("column msisdn: {e}")))?;
            if core == "-" {
                self.ported_out.insert(n.value());
                continue;
            }
            let id = WvId::parse(core).map_err(|e| err(line, format!("column core_id: {e}")))?;
            if !id.is_user() || id.e164().is_some() {
                return Err(err(
                    line,
                    format!(
                        "column core_id: {core:?} must be a plain user ID like wv:alice@core.example"
                    ),
                ));
            }
            let canon: Arc<str> = Arc::from(id.to_string());
            if let Some(prev) = self.by_msisdn.get(&n.value()) {
                return Err(err(line, format!("+{n} is listed twice (already {prev})")));
            }
            if self.by_core.contains_key(&canon) {
                return Err(err(line, format!("{canon} is listed twice")));
            }
            self.by_msisdn.insert(n.value(), canon.clone());
            self.by_core.insert(canon, n.value());
        }
        Ok(())
    }

    /// Number of explicit entries.
    pub fn len(&self) -> usize {
        self.by_msisdn.len()
    }

    /// No explicit entries.
    pub fn is_empty(&self) -> bool {
        self.by_msisdn.is_empty()
    }

    /// The core ID (canonical text) of one of our subscribers; `None` if the number is not ours.
    pub fn core_id(&self, n: E164) -> Option<String> {
        if let Some(id) = self.by_msisdn.get(&n.value()) {
            return Some(id.to_string());
        }
        if self.ported_out.contains(&n.value()) {
            return None;
        }
        self.templates.iter().find_map(|t| t.core_for(n))
    }

    /// Whether the number is one of ours (explicit entry, or template range and not ported out).
    pub fn is_subscriber(&self, n: E164) -> bool {
        self.by_msisdn.contains_key(&n.value())
            || (!self.ported_out.contains(&n.value()) && self.templates.iter().any(|t| t.serves(n)))
    }

    /// The MSISDN of a core user ID (canonical text as produced by [`WvId`]'s `Display`).
    pub fn msisdn(&self, canonical_core: &str) -> Option<E164> {
        if let Some(n) = self.by_core.get(canonical_core) {
            return E164::from_value(*n);
        }
        self.templates
            .iter()
            .find_map(|t| t.msisdn_for(canonical_core))
            .filter(|n| !self.ported_out.contains(&n.value()))
    }
}

/// The line of the record that starts at byte `at` of `text`. The csv reader's own line
/// number is where it began looking, before the comment and blank lines it skipped.
fn line_of(text: &str, at: u64) -> usize {
    let at = usize::try_from(at).unwrap_or(usize::MAX).min(text.len());
    let mut line = 1 + text.as_bytes()[..at]
        .iter()
        .filter(|b| **b == b'\n')
        .count();
    for l in text.get(at..).unwrap_or("").lines() {
        let t = l.trim();
        if !(t.is_empty() || t.starts_with('#')) {
            break;
        }
        line += 1;
    }
    line
}

/// What is wrong with CSV text, without the position (the caller names file and line).
fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "a field is not UTF-8".into(),
        csv::ErrorKind::Io(e) => e.to_string(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DirectorySpec {
        DirectorySpec {
            file: None,
            templates: vec![TemplateSpec {
                core: "wv:{national}@Core.OPX.example".into(),
                public: "wv:+46{national}".into(),
                ranges: vec!["+4670".into()],
            }],
        }
    }

    fn n(s: &str) -> E164 {
        E164::parse(s).unwrap()
    }

    #[test]
    fn explicit_entries_both_ways() {
        let mut d = Directory::load(&spec()).unwrap();
        d.load_csv(
            Path::new("dir.csv"),
            "msisdn,core_id\n# comment\n+46701234567, wv:UserA@core.opx.example\n# ported in\n+4915100000001,wv:ported-in@core.opx.example\n\n+46701230000,-\n",
        )
        .unwrap();
        assert_eq!(
            d.core_id(n("+46701234567")).as_deref(),
            Some("wv:usera@core.opx.example")
        );
        assert_eq!(
            d.msisdn("wv:usera@core.opx.example"),
            Some(n("+46701234567"))
        );
        // A ported-in number from another country is ours.
        assert!(d.is_subscriber(n("+4915100000001")));
        // A ported-out number in our template range is not.
        assert!(!d.is_subscriber(n("+46701230000")));
        assert_eq!(d.msisdn("wv:701230000@core.opx.example"), None);
    }

    #[test]
    fn templates_both_ways_within_ranges() {
        let d = Directory::load(&spec()).unwrap();
        assert_eq!(
            d.core_id(n("+46705550001")).as_deref(),
            Some("wv:705550001@core.opx.example")
        );
        assert_eq!(
            d.msisdn("wv:705550001@core.opx.example"),
            Some(n("+46705550001"))
        );
        assert_eq!(d.core_id(n("+46805550001")), None, "outside range");
        assert_eq!(d.msisdn("wv:805550001@core.opx.example"), None);
        assert_eq!(d.msisdn("wv:alice@core.opx.example"), None);
        // Digits in the fixed parts do not confuse where the number goes.
        let d = Directory::load(&DirectorySpec {
            file: None,
            templates: vec![TemplateSpec {
                core: "wv:u1_{national}@core1.opx.example".into(),
                public: "wv:+46{national}".into(),
                ranges: Vec::new(),
            }],
        })
        .unwrap();
        assert_eq!(
            d.core_id(n("+46705550001")).as_deref(),
            Some("wv:u1_705550001@core1.opx.example")
        );
        assert_eq!(
            d.msisdn("wv:u1_705550001@core1.opx.example"),
            Some(n("+46705550001"))
        );
    }

    #[test]
    fn csv_errors_name_line_and_column() {
        let mut d = Directory::default();
        let e = d
            .load_csv(
                Path::new("routes/dir.csv"),
                "+46701234567,wv:a@x\n4670,wv:b@x\n",
            )
            .unwrap_err();
        assert_eq!(e.line, 2);
        assert!(
            e.to_string().starts_with("routes/dir.csv:2: column msisdn"),
            "{e}"
        );
        let e = d
            .load_csv(Path::new("d.csv"), "+46701234568,wv:a@x\n")
            .unwrap_err();
        assert!(e.message.contains("listed twice"), "{e}");
        let e = d
            .load_csv(Path::new("d.csv"), "+46701234569 wv:c@x\n")
            .unwrap_err();
        assert!(e.message.contains("expected"), "{e}");
        let e = d
            .load_csv(Path::new("d.csv"), "+46701234569,wv:/room@x\n")
            .unwrap_err();
        assert!(e.message.contains("column core_id"), "{e}");
    }

    #[test]
    fn csv_is_read_strictly_as_csv() {
        // A third field is an error naming the line, not part of the core ID.
        let e = Directory::default()
            .load_csv(
                Path::new("d.csv"),
                "+46701234567,wv:a@x\n+46701234570,wv:x@core.opx.example,extra\n",
            )
            .unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("expected 2 fields"), "{e}");
        // Quoted fields, as spreadsheet exports write them, are understood.
        let mut d = Directory::default();
        d.load_csv(
            Path::new("d.csv"),
            "\"msisdn\",\"core_id\"\n\"+46701234567\",\"wv:q@core.opx.example\"\n",
        )
        .unwrap();
        assert_eq!(
            d.core_id(n("+46701234567")).as_deref(),
            Some("wv:q@core.opx.example")
        );
        // A comma inside quotes is part of the field, not a third one.
        let mut d = Directory::default();
        d.load_csv(Path::new("d.csv"), "+46701234567,\"wv:a,b@x\"\n")
            .unwrap();
        assert_eq!(d.core_id(n("+46701234567")).as_deref(), Some("wv:a,b@x"));
        // The line of a bad row after comments and blank lines is its own.
        let e = Directory::default()
            .load_csv(
                Path::new("d.csv"),
                "# note\n\n  # indented note\n4670,wv:b@x\n",
            )
            .unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        let e = Directory::default()
            .load_csv(Path::new("d.csv"), "+46701234567,wv:a@x # trailing\n")
            .unwrap_err();
        assert!(
            e.message.contains("column core_id"),
            "comments are whole lines: {e}"
        );
    }
}
