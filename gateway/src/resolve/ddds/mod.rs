//! ENUM DDDS (RFC 6116 on RFC 3402/3403) and SRV ordering (RFC 2782) as pure logic.
//!
//! This module turns NAPTR and SRV record data into routing decisions for
//! `wv:+MSISDN` user IDs; it never touches the network. The DNS integration
//! (hickory-resolver) lives in `resolve/mod.rs` and feeds records in through
//! plain structs ([`Naptr`], [`Srv`]) and the [`NaptrSource`] trait.
//!
//! Pipeline:
//! 1. [`enum_domain`] builds the first key from the E.164 digits (RFC 6116 §3.2).
//! 2. [`select`] applies the NAPTR rules to one RRset: (ORDER, PREFERENCE)
//!    sorting, service filtering before the ORDER cut-off, flags, regexp.
//! 3. [`resolve`] follows non-terminal NAPTRs depth-first (RFC 6116 §5.2.1).
//! 4. [`uri_domain`] extracts the domain of the resulting `im:`/`pres:`/
//!    `sip:`/`xmpp:` URI for RFC 3861 SRV lookups.
//! 5. [`order_srv`] orders an SRV RRset by priority and weighted random
//!    selection (RFC 2782).
//!
//! Regexp dialect: the NAPTR regexp field holds a POSIX Extended Regular
//! Expression (RFC 3402 §3.2). It is translated into the `regex` crate's
//! syntax; constructs with no faithful translation (back-references inside the
//! ERE, collating elements, Perl escapes such as `\d`) are rejected with an
//! error. Matching uses leftmost-first rather than POSIX leftmost-longest
//! semantics: both agree on whether an expression matches the AUS, but may
//! capture different text for an alternation such as `(a|ab)`; fully anchored
//! ENUM patterns such as `^\+(.*)$` capture the same either way.

use std::collections::HashSet;
use std::fmt;

use regex::{Regex, RegexBuilder};

/// Maximum number of non-terminal hops followed from the first key.
///
/// RFC 6116 §5.2.1: "more than 5 non-terminal hops MAY be treated as a loop".
pub const MAX_HOPS: usize = 5;

/// Maximum number of NAPTR queries one [`resolve`] call makes, first key included.
///
/// The visited set stops loops and [`MAX_HOPS`] bounds the depth, but an RRset
/// may list many referrals to distinct names (e.g. under a wildcard); this cap
/// bounds the fan-out so a hostile zone cannot make one lookup cost thousands
/// of queries.
pub const MAX_QUERIES: usize = 16;

/// Errors from parsing a NAPTR regexp field (RFC 3402 §3.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DddsError {
    /// The regexp field is empty.
    #[error("empty regexp field")]
    Empty,
    /// The first character cannot be a delimiter (digits, `i` and `\` are excluded).
    #[error("invalid regexp delimiter {0:?} (a digit, 'i' or '\\' cannot delimit)")]
    InvalidDelimiter(char),
    /// RFC 6116 §5: the field must hold exactly three unescaped delimiters.
    #[error("regexp field has {found} unescaped delimiters, expected exactly 3")]
    DelimiterCount {
        /// Number of unescaped delimiters seen, the leading one included.
        found: usize,
    },
    /// A character after the third delimiter other than the `i` flag.
    #[error("unknown regexp flag {0:?} (only 'i' is defined)")]
    UnknownFlag(char),
    /// A `\` with nothing after it.
    #[error("regexp field ends in a lone backslash")]
    TrailingBackslash,
    /// The ERE part between the first two delimiters is empty.
    #[error("empty regular expression")]
    EmptyEre,
    /// A POSIX ERE construct that cannot be translated faithfully.
    #[error("unsupported regular expression construct: {0}")]
    UnsupportedEre(String),
    /// The ERE is malformed (unbalanced parentheses, bad interval, …).
    #[error("invalid regular expression: {0}")]
    InvalidEre(String),
    /// `\0` in the replacement: RFC 3402 allows back-references `\1`..`\9` only.
    #[error("invalid back-reference \\0 (only \\1 to \\9 exist)")]
    InvalidBackref,
    /// A back-reference to a group the ERE does not have.
    #[error("back-reference \\{backref} but the expression has only {groups} group(s)")]
    BackrefOutOfRange {
        /// The referenced group number.
        backref: usize,
        /// Number of capture groups in the ERE.
        groups: usize,
    },
    /// The translated expression was refused by the regex engine (e.g. too large).
    #[error("regular expression rejected: {0}")]
    Regex(String),
}

// ---------------------------------------------------------------------------
// 1. ENUM domain
// ---------------------------------------------------------------------------

/// Build the ENUM query name for an E.164 number (RFC 6116 §3.2).
///
/// Non-digits are dropped, the digits reversed and dot-separated, and `suffix`
/// appended; the result is an FQDN with a trailing dot so that no resolver
/// search list applies. `suffix` may be given with or without its trailing dot.
/// The Application Unique String matched by NAPTR regexps is `+` followed by
/// the same digits (RFC 6116 §3.1), not this name.
///
/// `enum_domain("442079460123", "e164.arpa")` is
/// `"3.2.1.0.6.4.9.7.0.2.4.4.e164.arpa."`.
pub fn enum_domain(e164_digits: &str, suffix: &str) -> String {
    let mut out = String::with_capacity(e164_digits.len() * 2 + suffix.len() + 1);
    for d in e164_digits.chars().rev().filter(char::is_ascii_digit) {
        out.push(d);
        out.push('.');
    }
    let suffix = suffix.trim_matches('.');
    out.push_str(suffix);
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

// ---------------------------------------------------------------------------
// 2/3. NAPTR records and enumservices
// ---------------------------------------------------------------------------

/// One NAPTR record (RFC 3403 §4.1), with its text fields as decoded from the
/// wire: master-file escaping is already undone, so a regexp holds single
/// backslashes (`!^\+(.*)$!sip:\1@example.net!`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naptr {
    /// ORDER: major sort key, lowest first.
    pub order: u16,
    /// PREFERENCE: minor sort key within one ORDER, lowest first.
    pub preference: u16,
    /// FLAGS: `U` (terminal, case-insensitive) or empty (non-terminal).
    pub flags: String,
    /// SERVICES, e.g. `E2U+im` or `E2U+voice:tel+sms:tel`.
    pub services: String,
    /// REGEXP substitution expression, empty when none.
    pub regexp: String,
    /// REPLACEMENT domain name, `"."` when none.
    pub replacement: String,
    /// Time to live of the record, seconds.
    pub ttl: u32,
}

/// An ENUM enumservice (RFC 6116 §3.4.3) as far as the gateway cares.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Service {
    /// `E2U+im` (RFC 5028): an `im:` URI.
    Im,
    /// `E2U+pres` (RFC 3953): a `pres:` URI.
    Pres,
    /// `E2U+sip` (RFC 3764), also the obsolete RFC 2916 form `sip+E2U`.
    Sip,
    /// `E2U+xmpp` (RFC 4979).
    Xmpp,
    /// Any other enumservice, lowercased, with its subtypes: `voice:tel`.
    ///
    /// Also used for `im`/`pres`/`sip`/`xmpp` when they carry a subtype, which
    /// none of those registrations defines.
    Other(String),
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Service::Im => f.write_str("im"),
            Service::Pres => f.write_str("pres"),
            Service::Sip => f.write_str("sip"),
            Service::Xmpp => f.write_str("xmpp"),
            Service::Other(s) => f.write_str(s),
        }
    }
}

/// Parse a NAPTR SERVICES field as an ENUM service field (RFC 6116 §3.4.3).
///
/// Returns `None` when the field does not belong to ENUM (another DDDS
/// application, which clients must skip without failing, §3.4.3) or is
/// malformed. Otherwise returns the enumservices left to right, which is their
/// implicit priority in a compound field such as `E2U+voice:tel+sms:tel`
/// (§3.4.3.2). Matching is case-insensitive (§3.6). Private `P-` types are
/// discarded because this client is not on any private ENUM network
/// (§3.4.3.1), so the list may be empty. The obsolete RFC 2916 form
/// `type+E2U` (e.g. `sip+E2U`) is accepted, as RFC 6116 says clients SHOULD.
pub fn parse_services(field: &str) -> Option<Vec<Service>> {
    let parts: Vec<&str> = field.split('+').collect();
    let specs: &[&str] = match parts.as_slice() {
        [app, rest @ ..] if app.eq_ignore_ascii_case("E2U") && !rest.is_empty() => rest,
        // RFC 2916 (obsolete) put the type first: "sip+E2U".
        [ty, app] if app.eq_ignore_ascii_case("E2U") && !ty.contains(':') => &parts[..1],
        _ => return None,
    };
    let mut out: Vec<Service> = Vec::with_capacity(specs.len());
    for spec in specs {
        let service = parse_enumservice(spec)?;
        if let Some(service) = service
            && !out.contains(&service)
        {
            out.push(service);
        }
    }
    Some(out)
}

/// One `type *(":" subtype)`; `Some(None)` for a discarded private type,
/// `None` for a syntax error.
fn parse_enumservice(spec: &str) -> Option<Option<Service>> {
    // type / subtype = 1*32(ALPHA / DIGIT / "-")  (RFC 6116 §3.4.3)
    let valid = |s: &str| {
        !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let lower = spec.to_ascii_lowercase();
    let mut pieces = lower.split(':');
    let ty = pieces.next()?;
    if !valid(ty) {
        return None;
    }
    let mut has_subtype = false;
    for sub in pieces {
        if !valid(sub) {
            return None;
        }
        has_subtype = true;
    }
    if ty.starts_with("p-") {
        return Some(None);
    }
    let service = match (ty, has_subtype) {
        ("im", false) => Service::Im,
        ("pres", false) => Service::Pres,
        ("sip", false) => Service::Sip,
        ("xmpp", false) => Service::Xmpp,
        _ => Service::Other(lower),
    };
    Some(Some(service))
}

// ---------------------------------------------------------------------------
// 4. Substitution expressions
// ---------------------------------------------------------------------------

/// A character of the ERE or replacement part after delimiter splitting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    /// An ordinary character (a `\` here is still an escape for the next part).
    Plain(char),
    /// `\<delim>` in the field: always the literal delimiter character.
    Delim(char),
}

impl Tok {
    fn ch(self) -> char {
        match self {
            Tok::Plain(c) | Tok::Delim(c) => c,
        }
    }
}

/// One piece of the replacement template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ReplPart {
    Literal(String),
    Backref(usize),
}

/// A parsed NAPTR regexp field: `delim ere delim repl delim [i]` (RFC 3402 §3.2).
#[derive(Debug, Clone)]
pub struct SubstExpr {
    regex: Regex,
    repl: Vec<ReplPart>,
    groups: usize,
    case_insensitive: bool,
}

/// Parse a NAPTR regexp field (RFC 3402 §3.2, RFC 6116 §5).
///
/// The first character is the delimiter; it may be anything but a digit, `i`
/// or `\`. The field must contain exactly three unescaped delimiters, followed
/// only by optional `i` flags. `\<delim>` stands for the delimiter itself in
/// both the ERE and the replacement. In the replacement, `\1`..`\9` are
/// back-references and `\\` is a literal backslash. The ERE is translated to
/// the `regex` crate's syntax; unsupported constructs are errors.
pub fn parse_subst(field: &str) -> Result<SubstExpr, DddsError> {
    let (ere, repl, case_insensitive) = split_subst(field)?;
    if ere.is_empty() {
        return Err(DddsError::EmptyEre);
    }
    let (pattern, groups) = translate_ere(&ere)?;
    let repl = parse_repl(&repl)?;
    if let Some(backref) = repl
        .iter()
        .filter_map(|p| match p {
            ReplPart::Backref(n) => Some(*n),
            ReplPart::Literal(_) => None,
        })
        .find(|n| *n > groups)
    {
        return Err(DddsError::BackrefOutOfRange { backref, groups });
    }
    let regex = RegexBuilder::new(&pattern)
        .case_insensitive(case_insensitive)
        // POSIX `.` matches any character; the AUS never holds a newline anyway.
        .dot_matches_new_line(true)
        // NAPTR data is untrusted: bound compile size and nesting.
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .nest_limit(64)
        .build()
        .map_err(|e| DddsError::Regex(e.to_string()))?;
    Ok(SubstExpr {
        regex,
        repl,
        groups,
        case_insensitive,
    })
}

impl SubstExpr {
    /// Apply to the Application Unique String.
    ///
    /// Returns `None` when the ERE does not match. Otherwise the output is the
    /// replacement with back-references expanded; a group that did not take
    /// part in the match expands to nothing (POSIX). Per RFC 3402 §3 the
    /// expression is always applied to the original AUS, never to the output
    /// of an earlier rule.
    pub fn apply(&self, aus: &str) -> Option<String> {
        let caps = self.regex.captures(aus)?;
        let mut out = String::new();
        for part in &self.repl {
            match part {
                ReplPart::Literal(s) => out.push_str(s),
                ReplPart::Backref(n) => {
                    if *n >= caps.len() {
                        return None;
                    }
                    out.push_str(caps.get(*n).map_or("", |m| m.as_str()));
                }
            }
        }
        Some(out)
    }

    /// Number of capture groups in the ERE.
    pub fn groups(&self) -> usize {
        self.groups
    }

    /// Whether the trailing `i` flag was given.
    pub fn case_insensitive(&self) -> bool {
        self.case_insensitive
    }

    /// The translated pattern in `regex` crate syntax (for diagnostics).
    pub fn pattern(&self) -> &str {
        self.regex.as_str()
    }
}

/// Split a field into (ERE tokens, replacement tokens, `i` flag).
fn split_subst(field: &str) -> Result<(Vec<Tok>, Vec<Tok>, bool), DddsError> {
    let mut chars = field.chars();
    let delim = chars.next().ok_or(DddsError::Empty)?;
    // RFC 3402 §3.2: delim-char is any octet not in POS-DIGIT or flags; a
    // backslash would make every escape ambiguous.
    if delim.is_ascii_digit() || delim == 'i' || delim == 'I' || delim == '\\' {
        return Err(DddsError::InvalidDelimiter(delim));
    }
    let mut delims = 1usize;
    let mut ere = Vec::new();
    let mut repl = Vec::new();
    let mut flags = String::new();
    while let Some(c) = chars.next() {
        if delims >= 3 {
            // Past the third delimiter only flags may follow; count any further
            // delimiter so the error says how many there were.
            if c == delim {
                delims += 1;
            } else {
                flags.push(c);
            }
            continue;
        }
        let section = if delims == 1 { &mut ere } else { &mut repl };
        if c == '\\' {
            match chars.next() {
                None => return Err(DddsError::TrailingBackslash),
                Some(n) if n == delim => section.push(Tok::Delim(n)),
                // Keep other escapes as a pair so the second character is not
                // re-read as a delimiter (`\\/` is a backslash, then `/`).
                Some(n) => {
                    section.push(Tok::Plain('\\'));
                    section.push(Tok::Plain(n));
                }
            }
        } else if c == delim {
            delims += 1;
        } else {
            section.push(Tok::Plain(c));
        }
    }
    if delims != 3 {
        return Err(DddsError::DelimiterCount { found: delims });
    }
    let mut case_insensitive = false;
    for f in flags.chars() {
        // ABNF literals are case-insensitive, so "I" is the same flag.
        if f == 'i' || f == 'I' {
            case_insensitive = true;
        } else {
            return Err(DddsError::UnknownFlag(f));
        }
    }
    Ok((ere, repl, case_insensitive))
}

/// Parse the replacement: `\1`..`\9` back-references, `\\` a backslash,
/// `\<delim>` the delimiter; any other `\x` stays literal (RFC 3402 `anychar`).
fn parse_repl(toks: &[Tok]) -> Result<Vec<ReplPart>, DddsError> {
    let mut parts = Vec::new();
    let mut lit = String::new();
    let mut it = toks.iter().copied();
    while let Some(t) = it.next() {
        match t {
            Tok::Delim(c) => lit.push(c),
            Tok::Plain('\\') => match it.next() {
                None => return Err(DddsError::TrailingBackslash),
                Some(Tok::Plain('0')) => return Err(DddsError::InvalidBackref),
                Some(Tok::Plain(d @ '1'..='9')) => {
                    if !lit.is_empty() {
                        parts.push(ReplPart::Literal(std::mem::take(&mut lit)));
                    }
                    parts.push(ReplPart::Backref(usize::from(d as u8 - b'0')));
                }
                Some(Tok::Plain('\\')) => lit.push('\\'),
                Some(other) => {
                    lit.push('\\');
                    lit.push(other.ch());
                }
            },
            Tok::Plain(c) => lit.push(c),
        }
    }
    if !lit.is_empty() {
        parts.push(ReplPart::Literal(lit));
    }
    Ok(parts)
}

/// What the previous ERE item was, for applying repetition operators.
#[derive(Debug, Clone, Copy)]
enum Last {
    /// Start of the expression, after `(` or `|`: nothing to repeat.
    Nothing,
    /// `^` or `$`: repeating an anchor is undefined in POSIX.
    Anchor,
    /// An atom starting at this byte offset of the output.
    Atom { start: usize, quantified: bool },
}

/// Emit a literal character so the `regex` crate cannot read it as syntax.
fn push_literal(out: &mut String, c: char) {
    if c.is_ascii_alphanumeric() {
        out.push(c);
    } else {
        out.push_str(&format!("\\x{{{:X}}}", u32::from(c)));
    }
}

/// Translate a POSIX ERE into `regex` syntax; returns the pattern and the
/// number of capture groups (numbered by opening parenthesis in both).
fn translate_ere(toks: &[Tok]) -> Result<(String, usize), DddsError> {
    let mut out = String::with_capacity(toks.len() * 2);
    let mut groups = 0usize;
    let mut open: Vec<usize> = Vec::new();
    let mut last = Last::Nothing;
    let mut i = 0usize;
    while let Some(&t) = toks.get(i) {
        i += 1;
        let c = match t {
            Tok::Delim(c) => {
                let start = out.len();
                push_literal(&mut out, c);
                last = Last::Atom {
                    start,
                    quantified: false,
                };
                continue;
            }
            Tok::Plain(c) => c,
        };
        match c {
            '\\' => {
                let next = toks.get(i).ok_or(DddsError::TrailingBackslash)?.ch();
                i += 1;
                // POSIX leaves `\<alnum>` undefined; it would be an ERE
                // back-reference (`\1`) or a Perl class (`\d`), neither of
                // which is ERE.
                if next.is_ascii_alphanumeric() {
                    return Err(DddsError::UnsupportedEre(format!("escape \\{next}")));
                }
                let start = out.len();
                push_literal(&mut out, next);
                last = Last::Atom {
                    start,
                    quantified: false,
                };
            }
            '.' => {
                last = Last::Atom {
                    start: out.len(),
                    quantified: false,
                };
                out.push('.');
            }
            '[' => {
                let start = out.len();
                i = translate_bracket(toks, i, &mut out)?;
                last = Last::Atom {
                    start,
                    quantified: false,
                };
            }
            '(' => {
                open.push(out.len());
                out.push('(');
                groups += 1;
                last = Last::Nothing;
            }
            ')' => {
                let start = open
                    .pop()
                    .ok_or_else(|| DddsError::InvalidEre("unmatched ')'".into()))?;
                out.push(')');
                last = Last::Atom {
                    start,
                    quantified: false,
                };
            }
            '|' => {
                out.push('|');
                last = Last::Nothing;
            }
            '^' | '$' => {
                out.push(c);
                last = Last::Anchor;
            }
            '*' | '+' | '?' => quantify(&mut out, &mut last, &c.to_string())?,
            '{' => {
                let (q, next) = parse_interval(toks, i)?;
                i = next;
                quantify(&mut out, &mut last, &q)?;
            }
            _ => {
                let start = out.len();
                push_literal(&mut out, c);
                last = Last::Atom {
                    start,
                    quantified: false,
                };
            }
        }
    }
    if !open.is_empty() {
        return Err(DddsError::InvalidEre("unmatched '('".into()));
    }
    Ok((out, groups))
}

/// Apply a repetition operator to the previous atom.
fn quantify(out: &mut String, last: &mut Last, q: &str) -> Result<(), DddsError> {
    match *last {
        Last::Atom { start, quantified } => {
            // `a*?` is lazy in the regex crate but a repeated repetition in
            // POSIX; group the inner repetition so it keeps the POSIX meaning.
            if quantified {
                out.insert_str(start, "(?:");
                out.push(')');
            }
            out.push_str(q);
            *last = Last::Atom {
                start,
                quantified: true,
            };
            Ok(())
        }
        Last::Nothing | Last::Anchor => Err(DddsError::InvalidEre(format!(
            "repetition operator '{q}' has nothing to repeat"
        ))),
    }
}

/// Parse `{m}`, `{m,}` or `{m,n}` (tokens from `i`, just after `{`).
fn parse_interval(toks: &[Tok], mut i: usize) -> Result<(String, usize), DddsError> {
    // RE_DUP_MAX is 255 on POSIX systems; larger counts are not portable ERE.
    const DUP_MAX: u32 = 255;
    let bad = || DddsError::InvalidEre("malformed interval {m,n}".into());
    let number = |i: &mut usize| -> Result<Option<u32>, DddsError> {
        let mut value: Option<u32> = None;
        while let Some(Tok::Plain(c)) = toks.get(*i) {
            let Some(d) = c.to_digit(10) else { break };
            let v = value.unwrap_or(0).saturating_mul(10).saturating_add(d);
            if v > DUP_MAX {
                return Err(DddsError::InvalidEre(format!(
                    "interval count above {DUP_MAX}"
                )));
            }
            value = Some(v);
            *i += 1;
        }
        Ok(value)
    };
    let min = number(&mut i)?.ok_or_else(bad)?;
    let q = match toks.get(i) {
        Some(Tok::Plain('}')) => format!("{{{min}}}"),
        Some(Tok::Plain(',')) => {
            i += 1;
            let max = number(&mut i)?;
            if toks.get(i) != Some(&Tok::Plain('}')) {
                return Err(bad());
            }
            match max {
                None => format!("{{{min},}}"),
                Some(max) if max >= min => format!("{{{min},{max}}}"),
                Some(_) => return Err(DddsError::InvalidEre("interval {m,n} with m > n".into())),
            }
        }
        _ => return Err(bad()),
    };
    Ok((q, i + 1))
}

/// Translate a bracket expression (tokens from `i`, just after `[`); returns
/// the index after the closing `]`. Inside brackets a backslash is literal
/// (POSIX), except for the already-resolved `\<delim>`.
fn translate_bracket(toks: &[Tok], mut i: usize, out: &mut String) -> Result<usize, DddsError> {
    const CLASSES: [&str; 12] = [
        "alnum", "alpha", "blank", "cntrl", "digit", "graph", "lower", "print", "punct", "space",
        "upper", "xdigit",
    ];
    let unterminated = || DddsError::InvalidEre("unterminated bracket expression".into());
    let mut cls = String::from("[");
    if toks.get(i) == Some(&Tok::Plain('^')) {
        cls.push('^');
        i += 1;
    }
    let mut first = true;
    loop {
        let t = *toks.get(i).ok_or_else(unterminated)?;
        // A ']' first in the list is a member, not the end.
        if t == Tok::Plain(']') && !first {
            i += 1;
            break;
        }
        first = false;
        if t == Tok::Plain('[') {
            match toks.get(i + 1) {
                Some(Tok::Plain(':')) => {
                    let mut name = String::new();
                    let mut j = i + 2;
                    loop {
                        match (toks.get(j), toks.get(j + 1)) {
                            (Some(Tok::Plain(':')), Some(Tok::Plain(']'))) => break,
                            (Some(Tok::Plain(c)), _) if c.is_ascii_lowercase() => name.push(*c),
                            _ => {
                                return Err(DddsError::InvalidEre(
                                    "malformed character class [:name:]".into(),
                                ));
                            }
                        }
                        j += 1;
                    }
                    if !CLASSES.contains(&name.as_str()) {
                        return Err(DddsError::InvalidEre(format!(
                            "unknown character class [:{name}:]"
                        )));
                    }
                    cls.push_str(&format!("[:{name}:]"));
                    i = j + 2;
                    continue;
                }
                Some(Tok::Plain('.' | '=')) => {
                    return Err(DddsError::UnsupportedEre(
                        "collating element or equivalence class in brackets".into(),
                    ));
                }
                _ => {}
            }
        }
        let lo = t.ch();
        i += 1;
        let is_range = toks.get(i) == Some(&Tok::Plain('-'))
            && toks.get(i + 1).is_some_and(|n| *n != Tok::Plain(']'));
        if is_range {
            let hi_tok = *toks.get(i + 1).ok_or_else(unterminated)?;
            if hi_tok == Tok::Plain('[')
                && matches!(toks.get(i + 2), Some(Tok::Plain('.' | '=' | ':')))
            {
                return Err(DddsError::UnsupportedEre(
                    "class or collating element as a range end point".into(),
                ));
            }
            let hi = hi_tok.ch();
            if lo > hi {
                return Err(DddsError::InvalidEre(format!(
                    "range {lo:?}-{hi:?} is out of order"
                )));
            }
            push_literal(&mut cls, lo);
            cls.push('-');
            push_literal(&mut cls, hi);
            i += 2;
        } else {
            push_literal(&mut cls, lo);
        }
    }
    cls.push(']');
    out.push_str(&cls);
    Ok(i)
}

// ---------------------------------------------------------------------------
// 5. Rule selection within one RRset
// ---------------------------------------------------------------------------

/// A terminal ENUM result: a URI for one wanted enumservice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The URI produced by the regexp (`im:alice@example.net`).
    pub uri: String,
    /// The enumservice it was published for.
    pub service: Service,
    /// ORDER of the source record.
    pub order: u16,
    /// PREFERENCE of the source record.
    pub preference: u16,
    /// TTL of the source record.
    pub ttl: u32,
}

/// The outcome of applying the NAPTR rules to one RRset.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selection {
    /// Accepted terminal results, all of one ORDER, best first: by PREFERENCE,
    /// then by the position of the service in `wanted`, then response order.
    pub terminal: Vec<Candidate>,
    /// Non-terminal referrals to try, in order, before `terminal`: each is
    /// (next key as an FQDN with trailing dot, record TTL, record ORDER).
    /// These are the referrals ranked ahead of the first terminal result; if
    /// there is no terminal result, all valid referrals.
    pub referrals: Vec<(String, u32, u16)>,
}

/// A usable rule of one RRset, in processing order.
#[derive(Debug, Clone)]
enum Entry {
    Terminal(Candidate),
    Referral { key: String, ttl: u32 },
}

/// Apply the NAPTR rules to one RRset (RFC 6116 §5.2, RFC 3403 §4.1).
///
/// - Records are sorted by (ORDER, PREFERENCE), stably: equal keys keep the
///   response order (§5.2) rather than being shuffled.
/// - Service filtering comes BEFORE the ORDER cut-off: a worse-ORDER record
///   offering a wanted service is eligible when no better-ORDER record matches,
///   because a record "MUST NOT be discarded before consideration unless a
///   record has been accepted" (§5.2). Once a terminal record is accepted,
///   records of other ORDERs are ignored.
/// - Flags are case-insensitive: `U` is terminal; empty is non-terminal (its
///   replacement is the next key; services and regexp are ignored, an empty or
///   `"."` replacement discards it, §5.2.1); any other flag skips the record
///   (§3.4.2).
/// - A terminal record with both a regexp and a non-`"."` replacement is
///   ignored (RFC 3403 §4.1), as are records whose regexp fails to parse or
///   match the AUS.
/// - Compound services yield one candidate per wanted service; candidates are
///   ordered by (ORDER, PREFERENCE), then by the service's position in
///   `wanted`.
///
/// `wanted` lists the acceptable services, most preferred first; an
/// [`Service::Other`] entry must be lowercase (`voice:tel`).
pub fn select(records: &[Naptr], aus: &str, wanted: &[Service]) -> Selection {
    let entries = rank(records, aus, wanted);
    let mut sel = Selection::default();
    let mut accepted: Option<u16> = None;
    for (order, entry) in entries {
        match (entry, accepted) {
            (Entry::Referral { key, ttl }, None) => sel.referrals.push((key, ttl, order)),
            (Entry::Referral { .. }, Some(_)) => {}
            (Entry::Terminal(c), None) => {
                accepted = Some(order);
                sel.terminal.push(c);
            }
            (Entry::Terminal(c), Some(o)) if o == order => sel.terminal.push(c),
            (Entry::Terminal(_), Some(_)) => break,
        }
    }
    sel
}

/// The usable rules of an RRset in processing order, each with its ORDER.
fn rank(records: &[Naptr], aus: &str, wanted: &[Service]) -> Vec<(u16, Entry)> {
    let mut sorted: Vec<&Naptr> = records.iter().collect();
    sorted.sort_by_key(|r| (r.order, r.preference));
    // (order, preference, rank in `wanted`, entry); a referral ranks after the
    // terminal results of the same (ORDER, PREFERENCE), which are already known
    // answers, while a referral costs another query.
    let mut out: Vec<(u16, u16, usize, Entry)> = Vec::new();
    for r in sorted {
        let flags = r.flags.to_ascii_lowercase();
        match flags.as_str() {
            "" => {
                if let Some(key) = normalize_key(&r.replacement) {
                    out.push((
                        r.order,
                        r.preference,
                        wanted.len(),
                        Entry::Referral { key, ttl: r.ttl },
                    ));
                }
            }
            "u" => {
                let replacement = r.replacement.trim();
                if !(replacement.is_empty() || replacement == ".") || r.regexp.is_empty() {
                    continue;
                }
                let Some(services) = parse_services(&r.services) else {
                    continue;
                };
                let matching: Vec<(usize, Service)> = services
                    .into_iter()
                    .filter_map(|s| wanted.iter().position(|w| *w == s).map(|i| (i, s)))
                    .collect();
                if matching.is_empty() {
                    continue;
                }
                let Some(uri) = parse_subst(&r.regexp).ok().and_then(|e| e.apply(aus)) else {
                    continue;
                };
                if uri.is_empty() {
                    continue;
                }
                for (idx, service) in matching {
                    out.push((
                        r.order,
                        r.preference,
                        idx,
                        Entry::Terminal(Candidate {
                            uri: uri.clone(),
                            service,
                            order: r.order,
                            preference: r.preference,
                            ttl: r.ttl,
                        }),
                    ));
                }
            }
            // RFC 6116 §3.4.2: an unknown flag means "ignore it and move to the
            // next Rule" (this includes RFC 3404's S/A/P, which ENUM lacks).
            _ => {}
        }
    }
    out.sort_by_key(|(o, p, i, _)| (*o, *p, *i));
    out.into_iter().map(|(o, _, _, e)| (o, e)).collect()
}

/// Validate a REPLACEMENT as a next key; returns it as an FQDN with a
/// trailing dot, or `None` when it is empty, `"."` or not a domain name.
fn normalize_key(name: &str) -> Option<String> {
    let name = name.trim();
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() || bare.len() > 253 {
        return None;
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| !c.is_whitespace() && !c.is_control() && c != '.')
    };
    if !bare.split('.').all(label_ok) {
        return None;
    }
    Some(format!("{bare}."))
}

/// The form of a key used for loop detection: lowercase, no trailing dot.
fn visit_key(name: &str) -> String {
    let name = name.trim();
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

// ---------------------------------------------------------------------------
// 6. Following non-terminal NAPTRs
// ---------------------------------------------------------------------------

/// A NAPTR lookup service; implemented over hickory-resolver in `resolve/mod.rs`
/// and over a map in tests.
pub trait NaptrSource {
    /// Look up the NAPTR RRset at `name` (an FQDN). Transient failures
    /// (timeout, SERVFAIL) are `Err`; authoritative "nothing here" answers are
    /// [`NaptrAnswer::NoData`] / [`NaptrAnswer::NxDomain`].
    fn naptr(
        &self,
        name: &str,
    ) -> impl std::future::Future<Output = Result<NaptrAnswer, SourceError>> + Send;
}

/// The answer to one NAPTR query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NaptrAnswer {
    /// The NAPTR RRset (CNAMEs already followed by the source).
    Records(Vec<Naptr>),
    /// The name exists but has no NAPTR records.
    NoData {
        /// Negative-caching TTL from the SOA (RFC 2308 §5), if one was sent.
        negative_ttl: Option<u32>,
    },
    /// The name does not exist.
    NxDomain {
        /// Negative-caching TTL from the SOA (RFC 2308 §5), if one was sent.
        negative_ttl: Option<u32>,
    },
}

/// A transient lookup failure (timeout, SERVFAIL, network error).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    /// What happened.
    pub message: String,
    /// The name servers failed, not just this name (see `dns::Failure`).
    pub server: bool,
}

/// One query made during [`resolve`], in the order made. Queries that failed
/// with a [`SourceError`] are not recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The queried name.
    pub name: String,
    /// What came back.
    pub answer: NaptrAnswer,
}

/// A successful ENUM resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnumResult {
    /// The best candidate.
    pub candidate: Candidate,
    /// Other acceptable candidates of the same RRset and ORDER, best first
    /// (RFC 3402 step 4 lets a client note several rules).
    pub others: Vec<Candidate>,
    /// Every query made, in order.
    pub steps: Vec<Step>,
    /// Minimum TTL of every record used: the referrals on the winning path and
    /// the returned candidates. A cached result must expire by then
    /// (RFC 6116 §7.2).
    pub min_ttl: u32,
}

/// The outcome of [`resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnumOutcome {
    /// A wanted service was found.
    Found(EnumResult),
    /// No usable record for the wanted services.
    NotFound {
        /// How long this outcome may be cached: the minimum over every answer
        /// seen (record TTLs and negative TTLs); `None` when some negative
        /// answer carried no SOA, which must not be cached (RFC 2308 §5).
        negative_ttl: Option<u32>,
        /// Every query made, in order.
        steps: Vec<Step>,
    },
}

/// One RRset being processed during [`resolve`].
struct Frame {
    entries: Vec<(u16, Entry)>,
    next: usize,
    /// TTL of the referral record that led here (`None` for the first key).
    via_ttl: Option<u32>,
}

/// Resolve an AUS at `first_key` for the `wanted` services (most preferred
/// first), following non-terminal NAPTRs (RFC 6116 §5.2.1).
///
/// Rules of each RRset are processed as in [`select`]. Referrals are followed
/// depth-first in order, at most [`MAX_HOPS`] deep, never to a name already
/// queried (loop detection), and at most [`MAX_QUERIES`] queries in all. When a
/// referenced domain gives a problem (transient error, NXDOMAIN, NODATA, no
/// match, loop) processing continues with the next record of the referring
/// RRset. Every regexp is applied to the original `aus`.
///
/// A transient error of the first query is returned as `Err`. A transient
/// error of a referral is returned only when nothing else matched, since the
/// missing answer might have matched.
pub async fn resolve<S: NaptrSource + Sync>(
    source: &S,
    aus: &str,
    first_key: &str,
    wanted: &[Service],
) -> Result<EnumOutcome, SourceError> {
    let mut steps: Vec<Step> = Vec::new();
    let mut visited: HashSet<String> = HashSet::new();
    visited.insert(visit_key(first_key));
    let first = source.naptr(first_key).await?;
    steps.push(Step {
        name: first_key.to_string(),
        answer: first.clone(),
    });
    let records = match first {
        NaptrAnswer::Records(records) => records,
        NaptrAnswer::NoData { negative_ttl } | NaptrAnswer::NxDomain { negative_ttl } => {
            return Ok(EnumOutcome::NotFound {
                negative_ttl,
                steps,
            });
        }
    };
    let mut stack = vec![Frame {
        entries: rank(&records, aus, wanted),
        next: 0,
        via_ttl: None,
    }];
    let mut queries = 1usize;
    let mut referral_error: Option<SourceError> = None;

    while let Some(frame) = stack.last_mut() {
        let Some((order, entry)) = frame.entries.get(frame.next).cloned() else {
            // RRset exhausted: back to the next record of the referring RRset.
            stack.pop();
            continue;
        };
        frame.next += 1;
        match entry {
            Entry::Terminal(candidate) => {
                // Accepted: only the same ORDER of this RRset may add others.
                let others: Vec<Candidate> = frame
                    .entries
                    .iter()
                    .skip(frame.next)
                    .filter_map(|(o, e)| match e {
                        Entry::Terminal(c) if *o == order => Some(c.clone()),
                        _ => None,
                    })
                    .collect();
                let min_ttl = stack
                    .iter()
                    .filter_map(|f| f.via_ttl)
                    .chain(std::iter::once(candidate.ttl))
                    .chain(others.iter().map(|c| c.ttl))
                    .min()
                    .unwrap_or(candidate.ttl);
                return Ok(EnumOutcome::Found(EnumResult {
                    candidate,
                    others,
                    steps,
                    min_ttl,
                }));
            }
            Entry::Referral { key, ttl } => {
                // stack.len() is the hop count this referral would reach.
                if stack.len() > MAX_HOPS || queries >= MAX_QUERIES {
                    continue;
                }
                if !visited.insert(visit_key(&key)) {
                    continue;
                }
                queries += 1;
                match source.naptr(&key).await {
                    Err(e) => {
                        referral_error.get_or_insert(e);
                    }
                    Ok(answer) => {
                        let records = match &answer {
                            NaptrAnswer::Records(records) => Some(rank(records, aus, wanted)),
                            NaptrAnswer::NoData { .. } | NaptrAnswer::NxDomain { .. } => None,
                        };
                        steps.push(Step { name: key, answer });
                        if let Some(entries) = records {
                            stack.push(Frame {
                                entries,
                                next: 0,
                                via_ttl: Some(ttl),
                            });
                        }
                    }
                }
            }
        }
    }

    if let Some(e) = referral_error {
        return Err(e);
    }
    Ok(EnumOutcome::NotFound {
        negative_ttl: negative_ttl(&steps),
        steps,
    })
}

/// Cache lifetime of a "not found" outcome: minimum over every answer seen.
fn negative_ttl(steps: &[Step]) -> Option<u32> {
    let mut min: Option<u32> = None;
    for step in steps {
        let ttl = match &step.answer {
            NaptrAnswer::Records(records) => records.iter().map(|r| r.ttl).min()?,
            NaptrAnswer::NoData { negative_ttl } | NaptrAnswer::NxDomain { negative_ttl } => {
                (*negative_ttl)?
            }
        };
        min = Some(min.map_or(ttl, |m| m.min(ttl)));
    }
    min
}

// ---------------------------------------------------------------------------
// 7. URI → domain
// ---------------------------------------------------------------------------

/// The domain of an `im:`, `pres:`, `sip:`, `sips:` or `xmpp:` URI, lowercased
/// and without a trailing dot, for the RFC 3861 `_im`/`_pres` SRV lookups.
///
/// - `im:alice@example.net`, `pres:x@y?query`: the part after the last `@`
///   of the address (RFC 3860/3859).
/// - `sip:+441...@example.net;user=phone`: the host, without port, parameters
///   or headers (RFC 3261 §19.1).
/// - `xmpp:bob@xmpp.example.com/res`: the domain part of the JID, ignoring
///   an authority component, the resource, query and fragment (RFC 5122).
///
/// Returns `None` for other schemes, malformed URIs and IP-literal hosts
/// (an address has no domain to look up SRV records for).
pub fn uri_domain(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.trim().split_once(':')?;
    let host = match scheme.to_ascii_lowercase().as_str() {
        "im" | "pres" => {
            let addr = rest.split('?').next()?;
            addr.rsplit_once('@')?.1
        }
        "sip" | "sips" => {
            // No raw '@' may appear in SIP parameters or headers, so the first
            // one ends the userinfo.
            let hostport = rest.split_once('@').map_or(rest, |(_, h)| h);
            if hostport.starts_with('[') {
                return None;
            }
            hostport.split([':', ';', '?']).next()?
        }
        "xmpp" => {
            let path = match rest.strip_prefix("//") {
                Some(auth_and_path) => auth_and_path.split_once('/')?.1,
                None => rest,
            };
            let jid = path.split(['?', '#']).next()?;
            let bare = jid.split('/').next()?;
            bare.rsplit_once('@').map_or(bare, |(_, d)| d)
        }
        _ => return None,
    };
    valid_domain(host)
}

/// Lowercase and check a host name; `None` for IP literals and junk.
fn valid_domain(host: &str) -> Option<String> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > 253 {
        return None;
    }
    let labels_ok = host.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
    });
    if !labels_ok {
        return None;
    }
    // An all-numeric dotted name is an IPv4 literal, not a domain.
    if host
        .split('.')
        .all(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    Some(host.to_lowercase())
}

// ---------------------------------------------------------------------------
// 8. SRV ordering
// ---------------------------------------------------------------------------

/// One SRV record (RFC 2782).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    /// Priority: lower is tried first.
    pub priority: u16,
    /// Relative weight among records of equal priority.
    pub weight: u16,
    /// Port of the service on the target.
    pub port: u16,
    /// Target host; `"."` means "decidedly not available".
    pub target: String,
    /// Time to live of the record, seconds.
    pub ttl: u32,
}

/// The result of [`order_srv`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SrvOrder {
    /// The RRset is a single `"."` target: the service is decidedly not
    /// offered at this domain; do not fall back to address records.
    NotOffered,
    /// Targets in the order to try them (may be empty for an empty RRset).
    Targets(Vec<Srv>),
}

fn is_root_target(target: &str) -> bool {
    let t = target.trim();
    t.is_empty() || t == "."
}

/// Order an SRV RRset for contacting targets (RFC 2782 "Usage rules").
///
/// - A single record with target `"."` (or empty) means the service is not
///   offered: [`SrvOrder::NotOffered`]. An RRset made only of such records is
///   treated the same way; `"."` records among real targets are dropped.
/// - Priorities ascending; within one priority, weighted random selection:
///   weight-0 records first, running sums of weights, a uniform pick in
///   `[0, sum]` inclusive, the first record whose running sum is ≥ the pick is
///   taken next, repeated until the priority is used up. Weight-0 records thus
///   have a small chance of coming first when others have weight.
pub fn order_srv(records: &[Srv], rng: &mut impl rand::Rng) -> SrvOrder {
    if !records.is_empty() && records.iter().all(|r| is_root_target(&r.target)) {
        return SrvOrder::NotOffered;
    }
    let mut live: Vec<Srv> = records
        .iter()
        .filter(|r| !is_root_target(&r.target))
        .cloned()
        .collect();
    live.sort_by_key(|r| r.priority);
    let mut out = Vec::with_capacity(live.len());
    for group in live.chunk_by(|a, b| a.priority == b.priority) {
        // "arrange all … RRs in any order, except that all those with weight 0
        // are placed at the beginning of the list".
        let (mut pool, weighted): (Vec<Srv>, Vec<Srv>) =
            group.iter().cloned().partition(|r| r.weight == 0);
        pool.extend(weighted);
        while !pool.is_empty() {
            let sum: u64 = pool.iter().map(|r| u64::from(r.weight)).sum();
            let pick = rng.random_range(0..=sum);
            let mut running = 0u64;
            let mut chosen = pool.len() - 1;
            for (k, r) in pool.iter().enumerate() {
                running += u64::from(r.weight);
                if running >= pick {
                    chosen = k;
                    break;
                }
            }
            out.push(pool.remove(chosen));
        }
    }
    SrvOrder::Targets(out)
}

#[cfg(test)]
mod tests;
