//! A reader for the plain XML that SSP senders write, for the fast path: the same events and
//! checks as [`read`](super::read), without quick-xml's general machinery.
//!
//! "Plain" is what real SSP bodies look like: an optional `<?xml version="1.0" ...?>`
//! declaration at the very start, then elements with unprefixed ASCII names, attributes
//! written `name="value"` (or `'value'`), and text; the five predefined entities in values
//! and text; the SSP namespace declared on the root only. Anything else (a byte-order
//! mark, comments, processing instructions, CDATA, DOCTYPE, character references, prefixes,
//! an SSP namespace declared below the root, white space around `=` or in end tags, line
//! breaks or tabs in attribute values, a raw `<` in one, duplicate attributes, malformed
//! tags) is declined: the caller reads the body with [`read`](super::read) instead, which
//! accepts or refuses it as it always has.
//!
//! The checks are the [`Driver`]'s, the same code the full reader runs: limits, namespace
//! declarations, text characters, the sink's events. Names and attribute values this reader
//! checks itself, against a stricter set than the Driver's (which it then skips). A check
//! that fails declines too, so the full reader reports it with its own wording. So where
//! this reader accepts a body, a sink sees exactly the events the full reader gives it; the
//! fuzz target `splice_ssp` and the property tests compare the two.

use std::borrow::Cow;
use std::ops::Range;

use super::{Driver, IsSspNamespace, Limits, Sink, TextKind, XmlError};
use crate::ssp::swar::first_of;

/// Bytes of the names this reader takes: ASCII letters, digits, `_`, `-`, `.`, and `:` in
/// attribute names only, after a letter or `_`. A stricter set than the full reader's
/// (`check_name`), which the Driver then skips, as it skips `check_chars` on values this
/// reader has checked for every control character.
const NAME: [bool; 256] = names(true);
/// No `:` in element names: the Driver skips its search for a prefix on what this reader
/// takes.
const ELEMENT_NAME: [bool; 256] = names(false);

const fn names(colon: bool) -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.') || (colon && c == b':');
        b += 1;
    }
    t
}

/// The first `needle` in `hay`. The spans this reader searches this way are mostly short
/// (the text between two tags, a reference), where `memchr`'s set-up costs more than the
/// search: the first bytes are looked at one by one, the rest with `memchr`.
#[inline]
fn find(needle: u8, hay: &[u8]) -> Option<usize> {
    const HEAD: usize = 16;
    let head = hay.len().min(HEAD);
    match hay[..head].iter().position(|&c| c == needle) {
        Some(p) => Some(p),
        None => memchr::memchr(needle, &hay[head..]).map(|p| head + p),
    }
}

/// Why reading stopped: the body is not plain (or failed a check), or the sink stopped it.
enum Stop {
    Declined,
    Sink(XmlError),
}

impl From<XmlError> for Stop {
    /// A sink's stop is the caller's; any other error is a failed check, which the full
    /// reader reports in its own words.
    fn from(e: XmlError) -> Stop {
        match e {
            XmlError::Stopped => Stop::Sink(e),
            _ => Stop::Declined,
        }
    }
}

/// Read `text` (from [`text_of`](super::text_of)) into `sink` if it is plain XML that
/// passes every check: `Ok(Some(namespace))` as [`read`](super::read) returns it. `Ok(None)`:
/// declined, nothing decided (read it with [`read`](super::read), with a fresh sink). `Err`:
/// the sink stopped reading.
pub(crate) fn read_plain<'a>(
    text: &'a str,
    limits: &Limits,
    is_ssp_ns: IsSspNamespace<'_>,
    sink: &mut dyn Sink<'a>,
) -> Result<Option<Option<Cow<'a, str>>>, XmlError> {
    let mut d = Driver::new(text, limits, is_ssp_ns, true);
    match document(&mut d, text, sink) {
        Ok(()) => Ok(Some(d.namespace)),
        Err(Stop::Declined) => Ok(None),
        Err(Stop::Sink(e)) => Err(e),
    }
}

fn document<'a>(
    d: &mut Driver<'a, '_>,
    text: &'a str,
    sink: &mut dyn Sink<'a>,
) -> Result<(), Stop> {
    let b = text.as_bytes();
    let mut i = if b.starts_with(b"<?xml") {
        declaration(b).ok_or(Stop::Declined)?
    } else {
        0
    };
    loop {
        // Layout between tags (a line break, an indent) before any other text of the
        // element, or outside the root: the Driver drops it unreported, so it needs no
        // search and no call.
        let mut k = i;
        while b.get(k).is_some_and(|c| is_space(*c)) {
            k += 1;
        }
        if b.get(k) == Some(&b'<') && d.stack.last().is_none_or(|(_, len)| *len == 0) {
            i = k;
        }
        let lt = find(b'<', &b[i..]).map(|p| i + p);
        let end = lt.unwrap_or(b.len());
        if end > i {
            characters(d, text, i..end, sink)?;
        }
        let Some(lt) = lt else {
            break;
        };
        i = match b.get(lt + 1) {
            Some(b'/') => end_tag(d, text, lt, sink)?,
            Some(c) if c.is_ascii_alphabetic() || *c == b'_' => start_tag(d, text, lt, sink)?,
            // Comments, CDATA, DOCTYPE, processing instructions, stray `<`.
            _ => return Err(Stop::Declined),
        };
    }
    if !d.stack.is_empty() || !d.root_done {
        return Err(Stop::Declined);
    }
    Ok(())
}

/// The XML declaration at the start of `b`: `version="1.0"`, then optionally an encoding
/// the full reader accepts and `standalone`, in that order. Returns where it ends.
fn declaration(b: &[u8]) -> Option<usize> {
    // The declarations real senders write, taken at a glance: reading one pseudo-attribute
    // by pseudo-attribute costs some hundreds of instructions per message.
    if let Some(d) = COMMON_DECLARATIONS.iter().find(|d| b.starts_with(d)) {
        return Some(d.len());
    }
    read_declaration(b)
}

/// Declarations [`read_declaration`] accepts, as senders write them: ours (and most
/// senders'), Baraza's, and their near variants.
const COMMON_DECLARATIONS: [&[u8]; 5] = [
    b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
    b"<?xml version='1.0'?>",
    b"<?xml version=\"1.0\"?>",
    b"<?xml version=\"1.0\" encoding=\"utf-8\"?>",
    b"<?xml version='1.0' encoding='UTF-8'?>",
];

/// [`declaration`], read pseudo-attribute by pseudo-attribute.
fn read_declaration(b: &[u8]) -> Option<usize> {
    // The first `?>`: the first `>` that follows a `?` (the search a longer needle would
    // need costs more than this short declaration).
    let end = memchr::memchr_iter(b'>', b).find(|&i| i > 0 && b[i - 1] == b'?')? - 1;
    let mut rest = &b[b"<?xml".len()..end];
    let mut names: &[&[u8]] = &[b"version", b"encoding", b"standalone"];
    let mut first = true;
    loop {
        let skip = rest.iter().take_while(|c| is_space(**c)).count();
        let trimmed = &rest[skip..];
        if trimmed.is_empty() {
            break;
        }
        // Each pseudo-attribute follows white space.
        if trimmed.len() == rest.len() {
            return None;
        }
        let eq = memchr::memchr(b'=', trimmed)?;
        let (name, after) = (&trimmed[..eq], &trimmed[eq + 1..]);
        let quote = *after.first()?;
        if quote != b'"' && quote != b'\'' {
            return None;
        }
        let close = memchr::memchr(quote, &after[1..])? + 1;
        let value = &after[1..close];
        // In order, each at most once; version first.
        let at = names.iter().position(|n| *n == name)?;
        if first && at != 0 {
            return None;
        }
        first = false;
        let ok = match name {
            b"version" => value == b"1.0",
            b"encoding" => [&b"utf-8"[..], b"utf8", b"us-ascii"]
                .iter()
                .any(|e| value.eq_ignore_ascii_case(e)),
            _ => value == b"yes" || value == b"no",
        };
        if !ok {
            return None;
        }
        names = &names[at + 1..];
        rest = &after[close + 1..];
    }
    if first {
        return None;
    }
    Some(end + 2)
}

/// Character data at `at`: plain runs and the predefined entities between them, as the
/// full reader's events.
fn characters<'a>(
    d: &mut Driver<'a, '_>,
    text: &'a str,
    at: Range<usize>,
    sink: &mut dyn Sink<'a>,
) -> Result<(), Stop> {
    let b = text.as_bytes();
    // Most runs are the line breaks between tags: white space holds neither a reference
    // nor a forbidden character, so it needs neither search nor check.
    if b[at.clone()].iter().all(|c| is_space(*c)) {
        let run = &text[at.clone()];
        return Ok(d.text_checked(run, at, TextKind::Plain, true, sink)?);
    }
    let mut from = at.start;
    while let Some(p) = find(b'&', &b[from..at.end]) {
        let amp = from + p;
        if amp > from {
            d.text(&text[from..amp], from..amp, TextKind::Plain, sink)?;
        }
        let semi = amp + find(b';', &b[amp..at.end]).ok_or(Stop::Declined)?;
        let ch = predefined(&b[amp + 1..semi]).ok_or(Stop::Declined)?;
        d.text(ch, amp..semi + 1, TextKind::Ref, sink)?;
        from = semi + 1;
    }
    if at.end > from {
        d.text(&text[from..at.end], from..at.end, TextKind::Plain, sink)?;
    }
    Ok(())
}

/// What a predefined entity's name stands for.
fn predefined(name: &[u8]) -> Option<&'static str> {
    Some(match name {
        b"lt" => "<",
        b"gt" => ">",
        b"amp" => "&",
        b"apos" => "'",
        b"quot" => "\"",
        _ => return None,
    })
}

/// The end tag at `lt` (`</name>`, closing the innermost element). Returns where it ends.
fn end_tag<'a>(
    d: &mut Driver<'a, '_>,
    text: &'a str,
    lt: usize,
    sink: &mut dyn Sink<'a>,
) -> Result<usize, Stop> {
    let b = text.as_bytes();
    let start = lt + 2;
    let open = d
        .stack
        .last()
        .and_then(|(name, _)| name.clone())
        .ok_or(Stop::Declined)?;
    // The open element's name, then `>`: compared in place, with no search for the `>`
    // (a name holds no `>`, so this is "the first `>` ends a tag naming the open element").
    let gt = start + open.len();
    if b.get(start..gt) != Some(&b[open]) || b.get(gt) != Some(&b'>') {
        return Err(Stop::Declined);
    }
    d.close(gt + 1, sink)?;
    Ok(gt + 1)
}

/// The start tag at `lt` with its attributes. Returns where it ends.
fn start_tag<'a>(
    d: &mut Driver<'a, '_>,
    text: &'a str,
    lt: usize,
    sink: &mut dyn Sink<'a>,
) -> Result<usize, Stop> {
    let b = text.as_bytes();
    // A prefix (`:`) ends the name where no tag may continue: declined below.
    let mut j = name_end(b, lt + 1, &ELEMENT_NAME);
    let qname = &text[lt + 1..j];
    let depth = d.begin(qname)?;
    let mut declared = false;
    let empty = loop {
        let before = j;
        while b.get(j).is_some_and(|c| is_space(*c)) {
            j += 1;
        }
        match b.get(j) {
            Some(b'>') => {
                j += 1;
                break false;
            }
            Some(b'/') if b.get(j + 1) == Some(&b'>') => {
                j += 2;
                break true;
            }
            // An attribute, after white space.
            Some(c) if j > before && (c.is_ascii_alphabetic() || *c == b'_') => {}
            _ => return Err(Stop::Declined),
        }
        let k = j;
        j = name_end(b, j, &NAME);
        let key = &text[k..j];
        let quote = match (b.get(j), b.get(j + 1)) {
            (Some(b'='), Some(q @ (b'"' | b'\''))) => *q,
            _ => return Err(Stop::Declined),
        };
        // The value, to its closing quote: declined at a raw `<` (not XML) or any control
        // character (tab and line ends, which the full reader normalises, and those it
        // refuses); an `&` is resolved below.
        let v = j + 2;
        let (close, entities) = value_end(b, v, quote).ok_or(Stop::Declined)?;
        let raw = &b[v..close];
        // Duplicates (the full reader refuses them); a consumed declaration is not kept.
        // An SSP namespace declared below the root would be consumed unseen, where the fast
        // path must see it (another namespace is an attribute the sink sees).
        let value = &text[v..close];
        if key.starts_with("xmlns:")
            || (key == "xmlns" && depth > 1 && (entities || (d.is_ssp_ns)(value)))
        {
            return Err(Stop::Declined);
        }
        if key == "xmlns" {
            if std::mem::replace(&mut declared, true) {
                return Err(Stop::Declined);
            }
        } else if d.attrs.iter().any(|a| a.key == key) {
            return Err(Stop::Declined);
        }
        d.attr(qname, depth, key, raw.len(), Some(v..close), || {
            Ok(if entities {
                Cow::Owned(unescape(value).ok_or(XmlError::Stopped)?)
            } else {
                Cow::Borrowed(value)
            })
        })
        .map_err(|_| Stop::Declined)?;
        j = close + 1;
    };
    d.finish(qname, depth, empty, lt..j, sink)?;
    Ok(j)
}

/// Where the attribute value starting at `from` ends (at its closing `quote`) and whether it
/// holds an `&`; `None` if a raw `<` or a control character comes first, or no quote does.
/// One pass to the first byte that matters, a word at a time (this runs for every attribute
/// of every message).
fn value_end(b: &[u8], from: usize, quote: u8) -> Option<(usize, bool)> {
    let mut i = from;
    let mut entities = false;
    loop {
        i += first_of(b.get(i..)?, [quote, b'<', b'&'], 0x20)?;
        match b[i] {
            c if c == quote => return Some((i, entities)),
            b'&' => entities = true,
            _ => return None,
        }
        i += 1;
    }
}

/// XML's white space: space, tab, line feed, carriage return (not form feed, which
/// `u8::is_ascii_whitespace` includes and XML does not).
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

/// Where the name starting at `from` ends: at the first byte not in `table`.
fn name_end(b: &[u8], from: usize, table: &[bool; 256]) -> usize {
    let rest = b.get(from..).unwrap_or_default();
    from + rest
        .iter()
        .position(|c| !table[usize::from(*c)])
        .unwrap_or(rest.len())
}

/// `value` with the predefined entities resolved; `None` for any other reference.
fn unescape(value: &str) -> Option<String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let semi = rest[amp..].find(';')? + amp;
        out.push_str(predefined(&rest.as_bytes()[amp + 1..semi])?);
        rest = &rest[semi + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_agrees_with_memchr_on_both_sides_of_its_head() {
        for len in 0..48 {
            for at in 0..len {
                let mut hay = vec![b'a'; len];
                hay[at] = b'<';
                assert_eq!(find(b'<', &hay), Some(at), "len {len}, at {at}");
                if at + 1 < len {
                    hay[at + 1] = b'<';
                    assert_eq!(find(b'<', &hay), Some(at), "first of two, len {len}");
                }
            }
            assert_eq!(find(b'<', &vec![b'a'; len]), None);
        }
    }

    /// [`value_end`], the slow and obvious way: the first quote, then every byte before it.
    fn naive_value_end(b: &[u8], from: usize, quote: u8) -> Option<(usize, bool)> {
        let close = from + b[from..].iter().position(|&c| c == quote)?;
        let raw = &b[from..close];
        if raw.iter().any(|&c| c < 0x20 || c == b'<') {
            return None;
        }
        Some((close, raw.contains(&b'&')))
    }

    proptest::proptest! {
        #[test]
        fn a_value_ends_where_the_byte_by_byte_reading_ends_it(
            body in crate::ssp::swar::spiky_bytes(),
            from in 0usize..40,
            double in proptest::bool::ANY,
        ) {
            let from = from.min(body.len());
            let quote = if double { b'"' } else { b'\'' };
            proptest::prop_assert_eq!(
                value_end(&body, from, quote),
                naive_value_end(&body, from, quote)
            );
        }
    }

    #[test]
    fn the_common_declarations_are_read_as_the_general_reading_reads_them() {
        for d in COMMON_DECLARATIONS {
            assert_eq!(
                read_declaration(d),
                Some(d.len()),
                "{}",
                String::from_utf8_lossy(d)
            );
            let mut doc = d.to_vec();
            doc.extend_from_slice(b"\n<a/>");
            assert_eq!(declaration(&doc), read_declaration(&doc));
        }
    }

    #[test]
    fn a_declaration_ends_at_the_first_question_mark_and_angle() {
        assert_eq!(read_declaration(b"<?xml version=\"1.0\"?><a/>"), Some(21));
        let spaced = b"<?xml version=\"1.0\" encoding=\"UTF-8\" ?>";
        assert_eq!(read_declaration(spaced), Some(spaced.len()));
        // A `>` alone, or a `?` alone, does not end it.
        assert_eq!(read_declaration(b"<?xml version=\"1>0\"?>"), None);
        assert_eq!(read_declaration(b"<?xml version=\"1.0\"? >"), None);
        assert_eq!(read_declaration(b"<?xml?>"), None);
    }
}
