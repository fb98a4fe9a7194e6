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
//! tags, nesting deeper than the 16 levels held inline by `ssp/stack.rs`, a tag with more
//! than the 8 attributes held inline) is declined: the caller reads the body with
//! [`read`](super::read) instead, which accepts or refuses it as it always has.
//!
//! It makes the full reader's checks in a single pass of its own, with no call per element
//! into the full reader's `Driver`: content after the root, depth, element count, attribute
//! count and length, duplicate attributes, namespace declarations, transaction count, text
//! length, text outside the root, control characters. Names and attribute values it checks
//! against a stricter set of bytes than the full reader's. A check that fails declines, so
//! the full reader reports it in its own words. Where this reader accepts a body, a sink
//! sees exactly the events the full reader gives it: the property tests
//! (`gateway/tests/splice.rs`) and the fuzz target `splice_ssp` compare the two
//! (`fuzzing::plain_xml`).
//!
//! The hot spans are read many bytes at a time (`ssp/swar.rs`): attribute values and text
//! 16 bytes at a time; names a word at a time. This reader runs for every
//! request and answer on the fast path.

use std::borrow::Cow;
use std::ops::Range;

use super::{Attr, IsSspNamespace, Limits, Open, Sink, Text, TextKind, XmlError};
use crate::ssp::stack::{DEPTH, Stack};
use crate::ssp::swar::{first_of, not_letter};

/// Bytes of the names this reader takes: ASCII letters, digits, `_`, `-`, `.`, and `:` in
/// attribute names only, after a letter or `_`. A stricter set than the full reader's
/// (`check_name`), so a name taken here passes there.
const NAME: [bool; 256] = names(true);
/// No `:` in element names: a name taken here has no prefix to look up.
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
pub(crate) fn read_plain<'a, S: Sink<'a> + ?Sized>(
    text: &'a str,
    limits: &Limits,
    is_ssp_ns: IsSspNamespace<'_>,
    sink: &mut S,
) -> Result<Option<Option<Cow<'a, str>>>, XmlError> {
    let mut r = Reader {
        text,
        b: text.as_bytes(),
        limits,
        is_ssp_ns,
        stack: Stack::new(),
        attrs: Attrs::new(),
        elements: 0,
        transactions: 0,
        root_done: false,
        namespace: None,
    };
    match r.document(sink) {
        Ok(()) => Ok(Some(r.namespace)),
        Err(Stop::Declined) => Ok(None),
        Err(Stop::Sink(e)) => Err(e),
    }
}

/// An open element: where its name is, and how much text it has had (the limit on text
/// counts it; before any, a white-space run is layout).
/// `Default` only fills the stack's unused places.
#[derive(Clone, Copy, Default)]
struct Elem {
    name: usize,
    len: usize,
    text: usize,
}

/// The attributes a tag may have here: more is not a real SSP element (the full reader,
/// which keeps up to `Limits::max_attrs`, reads such a body).
const ATTRS: usize = 8;

/// The attributes of the tag being read, inline: a `SmallVec` asked on every push and read
/// whether it had moved to the heap. Entries past `len` are those of earlier tags, kept
/// until overwritten.
struct Attrs<'a> {
    items: [Attr<'a>; ATTRS],
    len: usize,
}

impl<'a> Attrs<'a> {
    fn new() -> Self {
        Attrs {
            items: Default::default(),
            len: 0,
        }
    }

    /// Add `a`; `false` (and nothing added) when the buffer is full.
    #[must_use]
    #[inline(always)]
    fn push(&mut self, a: Attr<'a>) -> bool {
        match self.items.get_mut(self.len) {
            Some(slot) => {
                *slot = a;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// The attributes of the tag being read.
    fn kept(&self) -> &[Attr<'a>] {
        self.items.get(..self.len).unwrap_or_default()
    }

    /// The same, for the sink.
    fn kept_mut(&mut self) -> &mut [Attr<'a>] {
        self.items.get_mut(..self.len).unwrap_or_default()
    }
}

/// The reader's state: what the full reader's `Driver` keeps, for the same checks.
struct Reader<'a, 'l> {
    text: &'a str,
    b: &'a [u8],
    limits: &'l Limits,
    is_ssp_ns: IsSspNamespace<'l>,
    /// Open elements, inline: a body nested deeper than real SSP bodies is declined.
    stack: Stack<Elem, DEPTH>,
    /// The attributes of the element being opened (one buffer for all elements).
    attrs: Attrs<'a>,
    elements: usize,
    transactions: usize,
    root_done: bool,
    namespace: Option<Cow<'a, str>>,
}

impl<'a> Reader<'a, '_> {
    fn document<S: Sink<'a> + ?Sized>(&mut self, sink: &mut S) -> Result<(), Stop> {
        let b = self.b;
        let mut i = if b.starts_with(b"<?xml") {
            declaration(b).ok_or(Stop::Declined)?
        } else {
            0
        };
        loop {
            // Layout between tags (a line break, an indent) before any other text of the
            // element, or outside the root, is not reported: skipped with no search.
            let mut k = i;
            while b.get(k).is_some_and(|c| is_space(*c)) {
                k += 1;
            }
            let lt = if b.get(k) == Some(&b'<') && self.stack.last().is_none_or(|e| e.text == 0) {
                k
            } else {
                let lt = self.characters(i, sink)?;
                if lt == b.len() {
                    break;
                }
                lt
            };
            i = match b.get(lt + 1) {
                Some(b'/') => self.end_tag(lt, sink)?,
                Some(c) if c.is_ascii_alphabetic() || *c == b'_' => self.start_tag(lt, sink)?,
                // Comments, CDATA, DOCTYPE, processing instructions, stray `<`.
                _ => return Err(Stop::Declined),
            };
        }
        if !self.stack.is_empty() || !self.root_done {
            return Err(Stop::Declined);
        }
        Ok(())
    }

    /// Character data from `from` to the next `<` (or the end, which it returns): plain
    /// runs and the predefined entities between them, as the full reader's events. One pass
    /// many bytes at a time (`swar::first_of`), to the first `<`, `&` or control character;
    /// tab and line ends go on.
    fn characters<S: Sink<'a> + ?Sized>(
        &mut self,
        from: usize,
        sink: &mut S,
    ) -> Result<usize, Stop> {
        let b = self.b;
        let mut run = from;
        let mut i = from;
        // Line ends written `\r\n` in the run: XML reads each as one character.
        let mut crlf = 0;
        loop {
            let at = first_of(&b[i..], [b'<', b'&'], 0x20).map_or(b.len(), |p| i + p);
            match b.get(at) {
                None | Some(b'<') => {
                    self.run(run..at, crlf, sink)?;
                    return Ok(at);
                }
                Some(b'&') => {
                    self.run(run..at, crlf, sink)?;
                    let (ch, len) = predefined(&b[at + 1..]).ok_or(Stop::Declined)?;
                    let end = at + 1 + len;
                    self.run_of(ch, at..end, TextKind::Ref, sink)?;
                    (run, i, crlf) = (end, end, 0);
                }
                // Tab and line ends are text (a carriage return is counted as XML
                // normalises it, as `Text::content_len` does: a `\n` never ends a run, so a
                // `\r\n` is never split); any other control character is refused by the
                // full reader.
                Some(b'\t' | b'\n') => i = at + 1,
                // A `\r\n` is passed over whole: one search per line of a base64 body,
                // not two.
                Some(b'\r') if b.get(at + 1) == Some(&b'\n') => {
                    crlf += 1;
                    i = at + 2;
                }
                Some(b'\r') => i = at + 1,
                Some(_) => return Err(Stop::Declined),
            }
        }
    }

    /// The plain run at `at` (holding `crlf` line ends written `\r\n`), unless empty.
    fn run<S: Sink<'a> + ?Sized>(
        &mut self,
        at: Range<usize>,
        crlf: usize,
        sink: &mut S,
    ) -> Result<(), Stop> {
        if at.is_empty() {
            return Ok(());
        }
        let s = &self.text[at.clone()];
        let t = Text {
            raw: s,
            at,
            kind: TextKind::Plain,
        };
        self.report(t, s.len() - crlf, sink)
    }

    /// Text `s` (its own content) at `at`.
    fn run_of<S: Sink<'a> + ?Sized>(
        &mut self,
        s: &str,
        at: Range<usize>,
        kind: TextKind,
        sink: &mut S,
    ) -> Result<(), Stop> {
        let t = Text { raw: s, at, kind };
        self.report(t, s.len(), sink)
    }

    /// Text `t` of content length `n` (checked for characters), to the sink as the
    /// full reader's `Driver` gives it: a white-space run before any other text of the
    /// element is layout, text outside the root is refused, and the element's text is
    /// limited.
    fn report<S: Sink<'a> + ?Sized>(
        &mut self,
        t: Text<'_>,
        n: usize,
        sink: &mut S,
    ) -> Result<(), Stop> {
        let blank = || t.raw.bytes().all(is_space);
        match self.stack.last_mut() {
            Some(e) => {
                if e.text == 0 && blank() {
                    return Ok(());
                }
                if e.text + n > self.limits.max_text_len {
                    return Err(Stop::Declined);
                }
                e.text += n;
                Ok(sink.text(t)?)
            }
            None if blank() => Ok(()),
            None => Err(Stop::Declined),
        }
    }

    /// The end tag at `lt` (`</name>`, closing the innermost element). Returns where it ends.
    fn end_tag<S: Sink<'a> + ?Sized>(&mut self, lt: usize, sink: &mut S) -> Result<usize, Stop> {
        let b = self.b;
        let start = lt + 2;
        let open = self.stack.pop().ok_or(Stop::Declined)?;
        // The open element's name, then `>`: compared in place, with no search for the `>`
        // (a name holds no `>`, so this is "the first `>` ends a tag naming the open element").
        let gt = start + open.len;
        if b.get(start..gt) != Some(&b[open.name..open.name + open.len]) || b.get(gt) != Some(&b'>')
        {
            return Err(Stop::Declined);
        }
        self.closed(gt + 1, sink)?;
        Ok(gt + 1)
    }

    /// The innermost element, popped, ended at `end`.
    fn closed<S: Sink<'a> + ?Sized>(&mut self, end: usize, sink: &mut S) -> Result<(), Stop> {
        if self.stack.is_empty() {
            self.root_done = true;
        }
        Ok(sink.close(end)?)
    }

    /// The start tag at `lt` with its attributes, through the full reader's checks (content
    /// after the root, depth, element count, attribute count and length, namespace
    /// declarations, transaction count). Returns where it ends.
    fn start_tag<S: Sink<'a> + ?Sized>(&mut self, lt: usize, sink: &mut S) -> Result<usize, Stop> {
        let (b, text, limits) = (self.b, self.text, self.limits);
        // A prefix (`:`) ends the name where no tag may continue: declined below.
        let mut j = name_end(b, lt + 1, &ELEMENT_NAME);
        let qname = &text[lt + 1..j];
        let depth = self.stack.len() + 1;
        self.elements += 1;
        if self.root_done || depth > limits.max_depth || self.elements > limits.max_elements {
            return Err(Stop::Declined);
        }
        self.attrs.len = 0;
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
            j = close + 1;
            let value = &text[v..close];
            // Kept attributes are counted and limited (a consumed declaration is not).
            if self.attrs.len >= limits.max_attrs || value.len() > limits.max_attr_len {
                return Err(Stop::Declined);
            }
            // Duplicates (the full reader refuses them); a consumed declaration is not kept.
            // An SSP namespace declared below the root would be consumed unseen, where the
            // fast path must see it (another namespace is an attribute the sink sees).
            if key == "xmlns" {
                if depth > 1 && (entities || (self.is_ssp_ns)(value))
                    || std::mem::replace(&mut declared, true)
                {
                    return Err(Stop::Declined);
                }
            } else if key.starts_with("xmlns:") || self.attrs.kept().iter().any(|a| a.key == key) {
                return Err(Stop::Declined);
            }
            let value = if entities {
                Cow::Owned(unescape(value).ok_or(Stop::Declined)?)
            } else {
                Cow::Borrowed(value)
            };
            // The SSP namespace, declared on the root, is consumed (the emitter writes its
            // own); another is an ordinary attribute.
            if key == "xmlns" && (self.is_ssp_ns)(&value) {
                self.namespace = Some(value);
                continue;
            }
            if !self.attrs.push(Attr {
                key,
                value,
                raw: Some(v..close),
            }) {
                return Err(Stop::Declined);
            }
        };
        if qname == "Transaction" {
            self.transactions += 1;
            if self.transactions > limits.max_transactions {
                return Err(Stop::Declined);
            }
        }
        sink.open(Open {
            name: qname,
            prefixed: false,
            attrs: self.attrs.kept_mut(),
            depth,
            at: lt..j,
            empty,
        })?;
        if empty {
            self.closed(j, sink)?;
        } else if !self.stack.push(Elem {
            name: lt + 1,
            len: qname.len(),
            text: 0,
        }) {
            return Err(Stop::Declined);
        }
        Ok(j)
    }
}

/// What the predefined entity reference at the start of `b` (after its `&`) stands for, and
/// the length of its name and `;`.
fn predefined(b: &[u8]) -> Option<(&'static str, usize)> {
    [
        (&b"lt;"[..], "<"),
        (b"gt;", ">"),
        (b"amp;", "&"),
        (b"apos;", "'"),
        (b"quot;", "\""),
    ]
    .into_iter()
    .find(|(name, _)| b.starts_with(name))
    .map(|(name, ch)| (ch, name.len()))
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

/// Where the attribute value starting at `from` ends (at its closing `quote`) and whether it
/// holds an `&`; `None` if a raw `<` or a control character comes first, or no quote does.
/// One pass to the first byte that matters, many bytes at a time (this runs for every
/// attribute of every message).
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
pub(crate) fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

/// Where the name starting at `from` ends: at the first byte not in `table` (a superset of
/// the ASCII letters). Names are mostly letters: eight bytes at a time to the first byte
/// that is not one, which `table` then decides; the last few bytes one by one.
fn name_end(b: &[u8], from: usize, table: &[bool; 256]) -> usize {
    let mut i = from;
    while let Some(word) = b.get(i..i + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
        let flags = not_letter(u64::from_le_bytes(word));
        if flags == 0 {
            i += 8;
            continue;
        }
        i += (flags.trailing_zeros() / 8) as usize;
        if !table[usize::from(b[i])] {
            return i;
        }
        i += 1;
    }
    let rest = b.get(i..).unwrap_or_default();
    i + rest
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
        let (ch, len) = predefined(&rest.as_bytes()[amp + 1..])?;
        out.push_str(ch);
        rest = &rest[amp + 1 + len..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    proptest::proptest! {
        #[test]
        fn a_name_ends_where_the_byte_by_byte_reading_ends_it(
            body in proptest::collection::vec(
                proptest::prop_oneof![
                    6 => proptest::sample::select(b"aZmAz_-.:09".to_vec()),
                    1 => proptest::sample::select(
                        b" =>/\"\t\n@[`{\x7f\x80\xc3\xff\x00".to_vec()
                    ),
                ],
                0..40,
            ),
            from in 0usize..40,
        ) {
            let from = from.min(body.len());
            for table in [&NAME, &ELEMENT_NAME] {
                let naive = from + body[from..]
                    .iter()
                    .position(|c| !table[usize::from(*c)])
                    .unwrap_or(body.len() - from);
                proptest::prop_assert_eq!(name_end(&body, from, table), naive);
            }
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
