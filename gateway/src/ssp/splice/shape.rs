//! A message's shape, for reading the fast path's bodies by difference.
//!
//! A sender's software writes every message of a kind the same way: the same declaration,
//! tags, attribute order, layout and fixed values (`mode`, `deliveryReport`, a status
//! `code`); what changes from one message to the next is the values that name things (the
//! session, the transaction, the IDs, the message ID, vendor attributes) and the text. A
//! [`Shape`] is a body the fast path's scan accepted (`splice::Spliced::scan`, with the
//! plain reader), cut at those values (its *holes*): the fixed bytes between them, what each
//! hole meant to the scan, and the scan's result with the holes' values taken out.
//!
//! [`Shape::read`] takes a body of the same shape without reading it as XML: it compares
//! each run of fixed bytes with the shape's, finds each hole's end as the plain reader finds
//! it (an attribute value to its quote, text to the next `<`), and makes of each hole the
//! checks the reader and the scan would make of it there: no `<`, `&` or control character
//! in a value, and not longer than the limit; text with no `&` or control character but tab
//! and line ends, not blank, within the limit, with no `]]>`; a `Domain` as the scan takes it;
//! a session and transaction ID not empty once trimmed, a request's not too long. Every
//! other decision the reader and the scan make depends on the fixed bytes alone, which were
//! checked when the shape was made, under the same limits and namespaces (a shape is kept
//! for one [`Codec`]'s). So a body [`Shape::read`] takes is one the scan takes, with the
//! same result; anything else (a different shape, an entity, a value the checks doubt) is
//! not taken, and the caller scans it. Refusals are always the scan's, never the shape's.
//!
//! The property tests in `gateway/tests/splice.rs` and the fuzz target `splice_ssp`
//! (`fuzzing::splice`) hold [`Shape::read`] to the scan on messages of a shape with their
//! values changed, bytes added, dropped or changed, and on messages of other shapes.
//!
//! Each thread keeps the shapes of the last few bodies it scanned ([`read_kept`], [`keep`]):
//! real traffic is a few shapes per sender (a request, its answer), and a body of another
//! shape costs one failed comparison per kept shape before it is scanned, most ending
//! within the envelope (a request and an answer part at `mode`, about 150 bytes in), and
//! then the shape made of it. A thread whose bodies seldom share a shape holds back (it
//! tries two shapes, and makes the shape of one body in sixteen: [`MISSES`]), so such
//! traffic costs about what the scan alone did. A shape keeps the fixed bytes only: nothing
//! of a message's IDs or text stays in memory once it is relayed.

use std::borrow::Cow;
use std::cell::RefCell;
use std::ops::Range;

use super::{Id, Spliced, trimmed};
use crate::ssp::message::{Codec, MAX_REQUEST_TID, Mode};
use crate::ssp::swar::{first_of, first_of_but};
use crate::ssp::xml::{self, Limits};

/// A request as the load ladder sends it (`tests/src/bin/ladder.rs`, shortened), for the fuzz
/// target's shapes (`fuzzing::splice`).
#[doc(hidden)]
pub const USUAL_REQUEST: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>
<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">
<Session sessionID=\"peer-1@opy.example\">
<Transaction mode=\"Request\" transactionID=\"t-1\">
<SendMessageRequest deliveryReport=\"No\">
<MetaInfo clientOriginated=\"Yes\">
<Requestor serviceID=\"wv:@opy.example\">
<User userID=\"wv:+4915112345678\"/>
</Requestor></MetaInfo>
<MessageInfo messageID=\"8aee9981\" contentType=\"text/plain\" contentSize=\"5\">
<Recipient>
<User userID=\"wv:+46701234567\"/>
</Recipient>
<Sender>
<User userID=\"wv:+4915112345678\" friendlyName=\"Load\"/>
</Sender>
<DateTime format=\"iso8601\">2026-11-25T12:27:59Z</DateTime>
</MessageInfo>
<ContentData contentType=\"text/plain\" encoding=\"base64\">
SGVsbG8=\r
</ContentData>
</SendMessageRequest>
</Transaction>
</Session>
</WV-SSP-Message>
";

/// A core's answer as the load ladder's origin writes it (`tests/src/ladder/origin.rs`).
#[doc(hidden)]
pub const USUAL_ANSWER: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><WV-SSP-Message \
xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\"><Session sessionID=\"core-1\">\
<Transaction mode=\"Response\" transactionID=\"g1.0123456789abcdef\"><SendMessageResponse>\
<Status code=\"200\"/><MessageID>m1</MessageID></SendMessageResponse></Transaction></Session>\
</WV-SSP-Message>";

/// What a hole held, to the scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// A value the scan only passes over (a vendor attribute, a message's text).
    Opaque,
    /// `Session/@sessionID`.
    Session,
    /// `Transaction/@transactionID`.
    Transaction,
    /// An ID attribute: the place of its slot among the scan's IDs.
    Id(usize),
    /// `MessageInfo/@messageID` of a `SendMessageRequest`.
    MessageId,
    /// A `Domain`'s text: the place of its slot among the scan's IDs.
    Domain(usize),
}

/// A hole as the scan met it: where its raw bytes are, whether it is an attribute value
/// (or text), and what it held.
#[derive(Debug, Clone)]
pub(super) struct Hole {
    pub(super) at: Range<usize>,
    pub(super) attr: bool,
    pub(super) role: Role,
}

/// A hole as a shape keeps it: the fixed bytes before it, then how it ends and what it held.
#[derive(Debug, Clone)]
struct Piece {
    /// The fixed bytes before the hole, in [`Shape::fixed`].
    fixed: Range<usize>,
    /// An attribute value's quote; `None` for text, which ends at the next `<`.
    quote: Option<u8>,
    role: Role,
}

/// Holes a shape may have: more is not a message real senders write over and over.
const MAX_HOLES: usize = 64;
/// The longest body kept as a shape (each thread keeps [`KEEP`] of them).
const MAX_BODY: usize = 16 * 1024;
/// Shapes each thread keeps.
const KEEP: usize = 4;

/// A body the scan accepted, cut at its holes (see the module's header).
#[derive(Debug, Clone)]
pub struct Shape {
    /// The limits the body was read under, which the holes are checked against.
    limits: Limits,
    /// The body's fixed bytes, one run after another: nothing of its holes (the IDs and
    /// the text of a message) is kept. (Not fitted to its length: a copy that would cost
    /// on every shape made, for at most the body's size per shape.)
    fixed: String,
    pieces: Vec<Piece>,
    /// The fixed bytes after the last hole.
    tail: Range<usize>,
    /// The scan's result, its holes' values taken out (empty, at `0..0`).
    skeleton: Spliced<'static>,
    /// Where the primitive starts and ends: the piece whose fixed bytes hold its first byte
    /// (and its last), and the offset in them (`pieces.len()` is the tail).
    prim_start: (usize, usize),
    prim_end: (usize, usize),
}

impl Shape {
    /// The shape of `body`, which the scan read with the plain reader into `spliced`,
    /// meeting `holes` in document order (the scan keeps none once a value held an entity).
    /// `None` where a shape would not be sound or not worth keeping: too many holes, a long
    /// body, or a result some hole does not account for.
    pub(super) fn new(
        limits: &Limits,
        body: &str,
        spliced: &Spliced<'_>,
        holes: &[Hole],
    ) -> Option<Shape> {
        if holes.len() > MAX_HOLES || body.len() > MAX_BODY {
            return None;
        }
        let b = body.as_bytes();
        let mut pieces = Vec::with_capacity(holes.len());
        let mut fixed = String::with_capacity(body.len());
        let mut last = 0;
        // Every ID the scan found, the session, the transaction and the message ID must
        // come from a hole, or the skeleton would keep a value of this body.
        let mut filled: smallvec::SmallVec<[bool; 32]> =
            smallvec::smallvec![false; spliced.ids.len()];
        let (mut session, mut transaction, mut message_id) = (false, false, false);
        // Where the primitive's first byte (its `<`) and last (its end tag's `>`) are:
        // both in fixed bytes.
        let (first, end) = (spliced.prim.start, spliced.prim.end.checked_sub(1)?);
        let (mut prim_start, mut prim_end) = (None, None);
        let mut place = |k: usize, run: Range<usize>| {
            if run.contains(&first) {
                prim_start = Some((k, first - run.start));
            }
            if run.contains(&end) {
                prim_end = Some((k, end + 1 - run.start));
            }
        };
        for (k, h) in holes.iter().enumerate() {
            if h.at.start < last || h.at.end > b.len() {
                return None;
            }
            let quote = if h.attr {
                Some(*b.get(h.at.end)?).filter(|q| matches!(q, b'"' | b'\''))
            } else {
                None
            };
            if h.attr && quote.is_none() {
                return None;
            }
            match h.role {
                Role::Id(i) | Role::Domain(i) => *filled.get_mut(i)? = true,
                Role::Session => session = true,
                Role::Transaction => transaction = true,
                Role::MessageId => message_id = true,
                Role::Opaque => {}
            }
            place(k, last..h.at.start);
            let from = fixed.len();
            fixed.push_str(body.get(last..h.at.start)?);
            pieces.push(Piece {
                fixed: from..fixed.len(),
                quote,
                role: h.role,
            });
            last = h.at.end;
        }
        if !filled.iter().all(|f| *f)
            || !session
            || !transaction
            || message_id != spliced.message_id.is_some()
        {
            return None;
        }
        place(pieces.len(), last..b.len());
        let from = fixed.len();
        fixed.push_str(body.get(last..)?);
        Some(Shape {
            limits: *limits,
            fixed,
            pieces,
            tail: from..b.len() - last + from,
            skeleton: spliced.skeleton(),
            prim_start: prim_start?,
            prim_end: prim_end?,
        })
    }

    /// `text` read by difference with this shape: what the scan would give for it, if it
    /// is of this shape and every hole passes the checks made of it there; `None` if not
    /// (the caller scans it).
    pub fn read<'a>(&self, text: &'a str) -> Option<Spliced<'a>> {
        let limits = &self.limits;
        let b = text.as_bytes();
        let own = self.fixed.as_bytes();
        // First where each hole ends, without building anything: most bodies of another
        // shape stop here, in the first fixed bytes that differ.
        let mut ends: smallvec::SmallVec<[usize; MAX_HOLES]> = smallvec::SmallVec::new();
        let mut at = 0;
        for p in &self.pieces {
            let fixed = &own[p.fixed.clone()];
            if b.get(at..at + fixed.len())? != fixed {
                return None;
            }
            at += fixed.len();
            let end = match p.quote {
                Some(q) => value_end(b, at, q, limits)?,
                None => text_end(b, at, limits, !matches!(p.role, Role::Domain(_)))?,
            };
            ends.push(end);
            at = end;
        }
        let tail = &own[self.tail.clone()];
        if b.get(at..)? != tail {
            return None;
        }
        // Then the values, into the skeleton.
        let mut out: Spliced<'a> = self.skeleton.clone();
        out.body = text;
        let mut at = 0;
        let mut prim = 0..0;
        for (k, (p, &end)) in self.pieces.iter().zip(&ends).enumerate() {
            if k == self.prim_start.0 {
                prim.start = at + self.prim_start.1;
            }
            if k == self.prim_end.0 {
                prim.end = at + self.prim_end.1;
            }
            at += p.fixed.len();
            let raw = at..end;
            let value = text.get(raw.clone())?;
            match p.role {
                Role::Opaque => {}
                Role::Session => {
                    out.session_id = trimmed(&Cow::Borrowed(value));
                    if out.session_id.is_empty() {
                        return None;
                    }
                }
                Role::Transaction => {
                    let tid = trimmed(&Cow::Borrowed(value));
                    if tid.is_empty() || (out.mode == Mode::Request && tid.len() > MAX_REQUEST_TID)
                    {
                        return None;
                    }
                    out.transaction_id = tid;
                }
                Role::MessageId => out.message_id = Some(Cow::Borrowed(value)),
                Role::Id(i) => {
                    let id = out.ids.get_mut(i)?;
                    id.value = Cow::Borrowed(value);
                    id.raw = raw;
                }
                Role::Domain(i) => {
                    // As the scan takes a `Domain`: no carriage return, trimmed, not empty.
                    let trimmed = value.trim();
                    if value.contains('\r') || trimmed.is_empty() {
                        return None;
                    }
                    let lead = value.len() - value.trim_start().len();
                    let id = out.ids.get_mut(i)?;
                    id.raw = raw.start + lead..raw.start + lead + trimmed.len();
                    id.value = Cow::Borrowed(trimmed);
                }
            }
            at = end;
        }
        if self.prim_start.0 == self.pieces.len() {
            prim.start = at + self.prim_start.1;
        }
        if self.prim_end.0 == self.pieces.len() {
            prim.end = at + self.prim_end.1;
        }
        out.prim = prim;
        Some(out)
    }

    /// A body of this shape with its holes filled from `fills` in turn (empty if there are
    /// none), for the tests and the fuzz target, which hold [`Shape::read`] to the scan on it.
    #[doc(hidden)]
    pub fn refilled<S: AsRef<str>>(&self, fills: &[S]) -> String {
        let mut out = String::with_capacity(self.fixed.len());
        let mut fill = fills.iter().map(AsRef::as_ref).cycle();
        for p in &self.pieces {
            out.push_str(&self.fixed[p.fixed.clone()]);
            out.push_str(fill.next().unwrap_or_default());
        }
        out.push_str(&self.fixed[self.tail.clone()]);
        out
    }
}

/// Where the attribute value hole at `from` ends (its closing `quote`), if the plain reader
/// would take it as it is: no `<` or control character (as `xml::value_end`), no `&` (a
/// shape holds no entity), and within `max_attr_len`. One search, inlined here: the
/// reader's own continues past an `&`, which a shape never does.
#[inline(always)]
fn value_end(b: &[u8], from: usize, quote: u8, limits: &Limits) -> Option<usize> {
    let at = from + first_of(b.get(from..)?, [quote, b'<', b'&'], 0x20)?;
    (b[at] == quote && at - from <= limits.max_attr_len).then_some(at)
}

/// Where the text hole at `from` ends (its next `<`), if it is text the reader would report
/// whole and the scan take as it is: no `&` (a shape holds no entity), no control character
/// but tab and line ends, not blank (a blank run before a tag is layout, not reported),
/// within `max_text_len` with each `\r\n` counted as one character, as XML reads it, and,
/// if `copied` (the text is copied as it is, not a `Domain` the scan rewrites), no `]]>`,
/// as the scan refuses it there. One search over the whole run, with `>` among what it
/// stops at (text rarely holds one) and line ends not: the `\r\n`s are counted only for a
/// run longer than the limit, the one place they matter.
fn text_end(b: &[u8], from: usize, limits: &Limits, copied: bool) -> Option<usize> {
    let mut i = from;
    loop {
        let at = i + first_of_but(b.get(i..)?, [b'<', b'&', b'>'], 0x20, [b'\t', b'\n', b'\r'])?;
        match b[at] {
            b'<' => {
                let run = &b[from..at];
                if run.iter().all(|c| xml::is_space(*c)) {
                    return None;
                }
                let len = if run.len() > limits.max_text_len {
                    run.len() - run.windows(2).filter(|w| w == b"\r\n").count()
                } else {
                    run.len()
                };
                return (len <= limits.max_text_len).then_some(at);
            }
            b'>' if copied && at >= from + 2 && &b[at - 2..at] == b"]]" => return None,
            b'>' => i = at + 1,
            _ => return None,
        }
    }
}

impl Spliced<'_> {
    /// This result with every value that came from a hole taken out: what a shape keeps.
    fn skeleton(&self) -> Spliced<'static> {
        let empty = || Cow::Borrowed("");
        Spliced {
            body: "",
            kind: self.kind,
            mode: self.mode,
            session_id: empty(),
            transaction_id: empty(),
            ids: self
                .ids
                .iter()
                .map(|id| Id {
                    slot: id.slot,
                    value: empty(),
                    raw: 0..0,
                    in_attr: id.in_attr,
                })
                .collect(),
            prim: 0..0,
            route_by: self.route_by.clone(),
            service: self.service,
            requestor_user: self.requestor_user,
            originators: self.originators.clone(),
            recipient_first: self.recipient_first,
            sender_first: self.sender_first,
            wants_report: self.wants_report,
            code: self.code,
            message_id: self.message_id.as_ref().map(|_| empty()),
        }
    }
}

/// The shapes one thread keeps, most recently read first, for one codec's limits and
/// namespaces (a shape's checks were made under them), and a count of the bodies none of
/// them took: up by one for each, down by [`HIT`] for each body one took, at most [`CAP`].
#[derive(Default)]
struct Kept {
    codec: Option<(Limits, Vec<String>)>,
    shapes: Vec<Shape>,
    misses: u32,
    /// Bodies no shape took, counted without bound, to choose one in [`SPARSE`].
    missed: u32,
}

/// The count of misses from which a thread holds back: it tries only its two most recent
/// shapes (a request's and an answer's), and makes the shape of one body in [`SPARSE`].
/// Traffic whose messages seldom share a shape would otherwise pay on every body for
/// shapes never read, and for comparisons with each of them.
const MISSES: u32 = 8;
/// While holding back, one body in this many has its shape made.
const SPARSE: u32 = 16;
/// What a body read by a shape takes off the count: a thread whose bodies are mostly read
/// by their shapes stays under [`MISSES`], one whose bodies seldom are stays over it.
const HIT: u32 = 4;
/// The most the count reaches: a thread whose traffic turns to shapes it keeps stops
/// holding back within `CAP / HIT` bodies read.
const CAP: u32 = 64;

impl Kept {
    /// Whether the shapes kept were made under `codec`'s limits and namespaces.
    fn serves(&self, codec: &Codec) -> bool {
        matches!(&self.codec, Some((limits, extra))
            if *limits == codec.limits && *extra == codec.extra_namespaces)
    }
}

thread_local! {
    static KEPT: RefCell<Kept> = RefCell::new(Kept::default());
}

/// `text` read by one of the shapes this thread keeps for `codec`: `Ok` if one took it;
/// `Err(make)` if none did, `make` saying whether the scan should make its shape (seldom
/// while the thread is holding back, see [`MISSES`]).
pub(super) fn read_kept<'a>(codec: &Codec, text: &'a str) -> Result<Spliced<'a>, bool> {
    KEPT.with(|kept| {
        let Ok(mut kept) = kept.try_borrow_mut() else {
            return Err(false);
        };
        let same = kept.serves(codec);
        let tried = if kept.misses >= MISSES { 2 } else { KEEP };
        let read = same
            .then(|| {
                kept.shapes
                    .iter()
                    .take(tried)
                    .enumerate()
                    .find_map(|(k, s)| s.read(text).map(|out| (k, out)))
            })
            .flatten();
        match read {
            Some((k, out)) => {
                // The most recently read first: a sender's next message is most likely of
                // its shape.
                kept.shapes[..=k].rotate_right(1);
                kept.misses = kept.misses.saturating_sub(HIT);
                Ok(out)
            }
            None => {
                kept.misses = (kept.misses + 1).min(CAP);
                kept.missed = kept.missed.wrapping_add(1);
                Err(kept.misses < MISSES || kept.missed % SPARSE == 0)
            }
        }
    })
}

/// Keep `shape` (of a body scanned under `codec`) on this thread, dropping the least
/// recently read if it keeps [`KEEP`] already.
pub(super) fn keep(codec: &Codec, shape: Shape) {
    KEPT.with(|kept| {
        let Ok(mut kept) = kept.try_borrow_mut() else {
            return;
        };
        if !kept.serves(codec) {
            kept.codec = Some((codec.limits, codec.extra_namespaces.clone()));
            kept.shapes.clear();
        }
        if kept.shapes.len() >= KEEP {
            kept.shapes.pop();
        }
        kept.shapes.insert(0, shape);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The core's answer with status `code`: one shape per code (a fixed value).
    fn answer(code: u16, tid: &str) -> String {
        format!(
            "<WV-SSP-Message><Session sessionID=\"core-1\"><Transaction mode=\"Response\" \
             transactionID=\"{tid}\"><SendMessageResponse><Status code=\"{code}\"/>\
             <MessageID>m1</MessageID></SendMessageResponse></Transaction></Session>\
             </WV-SSP-Message>"
        )
    }

    fn scan(codec: &Codec, body: &str) {
        assert!(
            matches!(Spliced::scan(codec, body.as_bytes()), Ok(Some(_))),
            "{body}"
        );
    }

    #[test]
    fn a_thread_reads_by_the_shapes_it_kept_for_the_same_codec_only() {
        let codec = Codec::default();
        let other = Codec {
            limits: Limits {
                max_depth: 20,
                ..Limits::default()
            },
            ..Codec::default()
        };
        let with_ns = Codec {
            extra_namespaces: vec!["urn:x".into()],
            ..Codec::default()
        };
        assert!(read_kept(&codec, &answer(200, "t2")).is_err());
        scan(&codec, &answer(200, "t1"));
        let next = answer(200, "t2");
        let read = read_kept(&codec, &next).expect("kept");
        assert_eq!(read.transaction_id, "t2");
        assert_eq!(
            Some(read),
            Spliced::scan_fresh(&codec, next.as_bytes())
                .expect("scan")
                .0
        );
        // Not for other limits or namespaces; and a scan under them drops it.
        assert!(read_kept(&other, &next).is_err());
        assert!(read_kept(&with_ns, &next).is_err());
        scan(&with_ns, &answer(200, "t3"));
        assert!(read_kept(&codec, &next).is_err());
        assert!(read_kept(&with_ns, &next).is_ok());
    }

    #[test]
    fn a_thread_keeps_the_most_recently_read_shapes() {
        let codec = Codec::default();
        let codes = [200u16, 201, 404, 500, 531, 900];
        for code in &codes[..5] {
            scan(&codec, &answer(*code, "a"));
        }
        // Five shapes made, four kept: the first made went.
        assert!(read_kept(&codec, &answer(200, "b")).is_err());
        for code in &codes[1..5] {
            assert!(read_kept(&codec, &answer(*code, "b")).is_ok(), "{code}");
        }
        // Read last, 201 is now the most recent; 404 the least, which the next shape
        // made drops.
        assert!(read_kept(&codec, &answer(201, "c")).is_ok());
        scan(&codec, &answer(900, "a"));
        assert!(read_kept(&codec, &answer(404, "b")).is_err());
        for code in [201, 500, 531, 900] {
            assert!(read_kept(&codec, &answer(code, "b")).is_ok(), "{code}");
        }
    }

    /// Read `body` as `Spliced::scan` does, by this thread's shapes or by the scan, whose
    /// shape is kept when `read_kept` says to make it. Whether a shape read it, and whether
    /// one was made.
    fn read_or_scan(codec: &Codec, body: &str) -> (bool, bool) {
        match read_kept(codec, body) {
            Ok(_) => (true, false),
            Err(make) => {
                let (s, shape) = Spliced::scan_text(codec, body, make).expect("scan");
                assert!(s.is_some(), "{body}");
                if let Some(shape) = shape {
                    keep(codec, shape);
                }
                (false, make)
            }
        }
    }

    #[test]
    fn a_thread_whose_bodies_seldom_share_a_shape_holds_back() {
        let codec = Codec::default();
        // Sixteen shapes in turn (the status code is a fixed value): more than a thread
        // keeps, so none is read while kept.
        let (mut reads, mut made) = (0, 0);
        for i in 0..128u16 {
            let (read, make) = read_or_scan(&codec, &answer(300 + i % 16, "t"));
            reads += usize::from(read);
            made += usize::from(make);
        }
        // The first seven misses make shapes, then one in sixteen (the sparse shapes are
        // read when their body comes round again: each takes a little off the count).
        assert!(made <= 7 + 2 * 128 / 16, "{made} shapes made");
        let held = KEPT.with(|k| k.borrow().misses);
        assert!(held >= MISSES, "holding back: {held} misses");
        // A sender's messages of one shape: read again within a sparse round, and the
        // thread stops holding back within `CAP / HIT` of them.
        let mut first_read = None;
        for i in 0..(SPARSE + CAP / HIT + 1) {
            if read_or_scan(&codec, &answer(200, "s")).0 && first_read.is_none() {
                first_read = Some(i);
            }
        }
        assert!(
            first_read.is_some_and(|i| i <= SPARSE),
            "{first_read:?} ({reads} before)"
        );
        assert!(KEPT.with(|k| k.borrow().misses) < MISSES);
    }

    #[test]
    fn a_shape_keeps_no_value_of_the_body_it_was_made_of() {
        let codec = Codec::default();
        let body = answer(200, "secret-tid").replace("m1", "secret-message-id");
        let (_, shape) = Spliced::scan_fresh(&codec, body.as_bytes()).expect("scan");
        let shape = shape.expect("shape");
        assert!(!shape.fixed.contains("secret"), "{}", shape.fixed);
        assert!(!format!("{:?}", shape.skeleton).contains("secret"));
        assert_eq!(
            shape.refilled(&["core-1", "secret-tid", "secret-message-id"]),
            body
        );
    }

    #[test]
    fn a_domain_holding_a_cdata_end_is_read_as_the_scan_reads_it() {
        let codec = Codec::default();
        let body = "<WV-SSP-Message><Session sessionID=\"s\"><Transaction mode=\"Response\" \
                    transactionID=\"t\"><Status><Domain>]]></Domain></Status></Transaction>\
                    </Session></WV-SSP-Message>";
        let (fresh, shape) = Spliced::scan_fresh(&codec, body.as_bytes()).expect("scan");
        assert!(fresh.is_some());
        assert_eq!(shape.expect("shape").read(body), fresh);
    }
}
