//! The fast path's codec: the primitives that dominate traffic (`SendMessageRequest` and its
//! response, `PresenceNotification`, `DeliveryStatusReport`, `Status`) read without building
//! a typed tree, their IDs rewritten and the message written again by splicing the bytes of
//! the original body.
//!
//! [`Spliced::scan`] reads the body through the same checks as the typed parser
//! ([`xml::read`]: size, UTF-8, DOCTYPE, entities, depth, attributes, names, characters), so
//! it refuses exactly what the typed path refuses. It reads plain XML (what real senders
//! write) with a reader of its own first (`xml::read_plain`, the same events where it
//! takes a body), and anything else with the full one. What it accepts it accepts only in the
//! plain shape real senders use: one `Session` with one `Transaction` holding one of the
//! primitives above, no namespace prefixes, every entity with its ID attribute, no character
//! references, nested at most 16 deep (`ssp/stack.rs`). Anything else is `Ok(None)` and
//! takes the typed path, which understands it. A body of the shape of one it read before on
//! the same thread (the same fixed bytes, other values) it reads by difference with that
//! one, with the same checks of what differs and the same result ([`shape`]).
//!
//! On the way it records the byte range of every ID slot the typed walk
//! ([`walk`](super::walk)) would visit (`userID`, `groupID` and `serviceID` attributes, and
//! `Domain` text), and the few values the stages decide by: the route-by IDs, the
//! originators, the requestor, whether a report is wanted, and an answer's status code, with
//! the same meaning as the typed accessors of the same names. Emission writes the envelope
//! as the typed emitter does (our session, our transaction ID, the destination's namespace)
//! and copies the primitive's bytes with each ID slot replaced: for a message in canonical
//! form both paths give the same bytes (property tests in `gateway/tests/splice.rs`); for any other,
//! the same message once parsed.

use std::borrow::Cow;
use std::ops::Range;

use smallvec::SmallVec;

use super::message::{Body, Codec, MAX_REQUEST_TID, Mode, NS_WV_SSP_13};
use super::primitives::Primitive;
use super::stack::{DEPTH, Stack};
use super::walk::{RouteBy, Slot, attr_slot};
use super::xml::{self, Open, Sink, Text, TextKind, XmlError};
use crate::ssp::status;

pub mod shape;

use shape::{Hole, Role, Shape};

/// The primitives the fast path carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `SendMessageRequest`.
    SendMessageRequest,
    /// `SendMessageResponse`.
    SendMessageResponse,
    /// `DeliveryStatusReport`.
    DeliveryStatusReport,
    /// `PresenceNotification`.
    PresenceNotification,
    /// A bare `Status`.
    Status,
}

impl Kind {
    fn of(name: &str) -> Option<Kind> {
        Some(match name {
            "SendMessageRequest" => Kind::SendMessageRequest,
            "SendMessageResponse" => Kind::SendMessageResponse,
            "DeliveryStatusReport" => Kind::DeliveryStatusReport,
            "PresenceNotification" => Kind::PresenceNotification,
            "Status" => Kind::Status,
            _ => return None,
        })
    }

    /// The primitive's name, as the metric label of the typed path.
    pub fn label(self) -> &'static str {
        match self {
            Kind::SendMessageRequest => "SendMessageRequest",
            Kind::SendMessageResponse => "SendMessageResponse",
            Kind::DeliveryStatusReport => "DeliveryStatusReport",
            Kind::PresenceNotification => "PresenceNotification",
            Kind::Status => "Status",
        }
    }
}

/// How [`Spliced::scan_read`] read a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// By the shape of a body read before on this thread ([`shape`]).
    Shape,
    /// By the scan (the plain reader, or the full one).
    Scan,
}

impl Read {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Read::Shape => "shape",
            Read::Scan => "scan",
        }
    }
}

/// One ID slot: its kind, its value (rewritten in place) and where it sits in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Id<'a> {
    /// What the slot holds.
    pub slot: Slot,
    /// The value, entities resolved; what is written back. Borrowed from the body until
    /// it is rewritten.
    pub value: Cow<'a, str>,
    raw: Range<usize>,
    in_attr: bool,
}

/// A message read for the fast path.
#[derive(Debug, Clone, PartialEq)]
pub struct Spliced<'a> {
    body: &'a str,
    /// Which primitive it holds.
    pub kind: Kind,
    /// Request or response.
    pub mode: Mode,
    /// The sender's session ID (trimmed).
    pub session_id: Cow<'a, str>,
    /// The sender's transaction ID (trimmed).
    pub transaction_id: Cow<'a, str>,
    /// Every ID slot of the primitive, in document order.
    pub ids: Vec<Id<'a>>,
    prim: Range<usize>,
    /// Indexes into `ids` (as the other lists here), inline for the usual few: a scan
    /// allocates for its IDs only.
    route_by: SmallVec<[usize; 4]>,
    service: Option<usize>,
    requestor_user: Option<usize>,
    /// Originators the primitive adds after its requestor (sender, presence values).
    originators: SmallVec<[usize; 4]>,
    recipient_first: Option<usize>,
    sender_first: Option<usize>,
    wants_report: bool,
    code: Option<u16>,
    message_id: Option<Cow<'a, str>>,
}

impl<'a> Spliced<'a> {
    /// Read `body` for the fast path. `Err`: refused, as the typed parser refuses it (the
    /// typed path gives the sender its answer); `Ok(None)`: not in the fast path's shape.
    pub fn scan(codec: &Codec, body: &'a [u8]) -> Result<Option<Spliced<'a>>, XmlError> {
        Ok(Self::scan_read(codec, body)?.map(|(s, _)| s))
    }

    /// [`Spliced::scan`], and how the body was read (for `ssp_fast_path_reads_total`).
    pub fn scan_read(
        codec: &Codec,
        body: &'a [u8],
    ) -> Result<Option<(Spliced<'a>, Read)>, XmlError> {
        let text = xml::text_of(body, &codec.limits)?;
        // A body of a shape this thread read lately is taken by difference with it; any
        // other is scanned, and its shape kept (`ssp/splice/shape.rs`).
        let make = match shape::read_kept(codec, text) {
            Ok(s) => return Ok(Some((s, Read::Shape))),
            Err(make) => make,
        };
        let (out, shape) = Self::scan_text(codec, text, make)?;
        if let Some(shape) = shape {
            shape::keep(codec, shape);
        }
        Ok(out.map(|s| (s, Read::Scan)))
    }

    /// [`Spliced::scan`] without the shapes this thread keeps, and the shape of `body` if
    /// one can be made of it (for the tests and the fuzz target, which hold
    /// [`Shape::read`] to this).
    #[doc(hidden)]
    pub fn scan_fresh(
        codec: &Codec,
        body: &'a [u8],
    ) -> Result<(Option<Spliced<'a>>, Option<Shape>), XmlError> {
        Self::scan_text(codec, xml::text_of(body, &codec.limits)?, true)
    }

    /// The scan of `text`, a body within the size limit and UTF-8, and, if `make`, its shape
    /// if the plain reader took it and one can be made of it.
    fn scan_text(
        codec: &Codec,
        text: &'a str,
        make: bool,
    ) -> Result<(Option<Spliced<'a>>, Option<Shape>), XmlError> {
        let is_ssp = |ns: &str| codec.is_ssp_ns(ns);
        // The plain reader first (what real senders write); what it declines, the full
        // reader reads from the start, accepting or refusing it as the typed path does.
        let mut s = Scan::new(text, true, make);
        let plain = match xml::read_plain(text, &codec.limits, &is_ssp, &mut s) {
            Ok(Some(_)) => true,
            Err(XmlError::Stopped) => return Ok((None, None)),
            Err(e) => return Err(e),
            Ok(None) => {
                s = Scan::new(text, false, false);
                match xml::read(text, &codec.limits, &is_ssp, &mut s) {
                    Ok(_) => false,
                    Err(XmlError::Stopped) => return Ok((None, None)),
                    Err(e) => return Err(e),
                }
            }
        };
        let Some(mut out) = s.out else {
            return Ok((None, None));
        };
        if out.prim.is_empty() || out.session_id.is_empty() {
            return Ok((None, None));
        }
        // The primitive's bytes are copied as they are, so they must be plain:
        // - free text is checked for core names by its bytes on the way out, and a character
        //   reference (`&#`) or text split by a comment, a processing instruction or CDATA
        //   (`<!`, `<?`) could spell one that a byte search would not see;
        // - comments and processing instructions may be malformed in ways the reader lets
        //   through (`--` in a comment, a declaration in mid-document);
        // - a namespace declaration (`xmlns`; an SSP one is consumed by the reader unseen)
        //   would put the primitive in another namespace than the envelope we write.
        // The plain reader declines the first three and an SSP declaration below the root
        // (another namespace's is an attribute the scan stopped on above), so what it read
        // needs no search.
        let prim = &text.as_bytes()[out.prim.clone()];
        if !plain
            && [&b"&#"[..], b"<!", b"<?", b"xmlns"]
                .iter()
                .any(|n| memchr::memmem::find(prim, n).is_some())
        {
            return Ok((None, None));
        }
        out.body = s.body;
        let shape = match (plain, &s.holes) {
            (true, Some(holes)) => Shape::new(&codec.limits, text, &out, holes),
            _ => None,
        };
        Ok((Some(out), shape))
    }

    /// The route-by IDs, as [`Primitive::route_by`](super::Primitive::route_by) gives them.
    pub fn route_by(&self) -> Vec<RouteBy> {
        self.route_by
            .iter()
            .map(|&i| RouteBy::Id(self.ids[i].value.to_string()))
            .collect()
    }

    /// The IDs that must belong to the sender, as
    /// [`Primitive::originators`](super::Primitive::originators) gives them.
    pub fn originators(&self) -> impl Iterator<Item = &str> {
        self.service
            .iter()
            .chain(&self.requestor_user)
            .chain(&self.originators)
            .map(|&i| self.ids[i].value.as_ref())
    }

    /// The requesting user (`MetaInfo/Requestor`), if any.
    pub fn requestor_user(&self) -> Option<&str> {
        self.requestor_user.map(|i| self.ids[i].value.as_ref())
    }

    /// The first ID of `MessageInfo/Sender` and of `MessageInfo/Recipient`.
    pub fn sender_and_recipient(&self) -> (Option<&str>, Option<&str>) {
        let id = |i: Option<usize>| i.map(|i| self.ids[i].value.as_ref());
        (id(self.sender_first), id(self.recipient_first))
    }

    /// The requestor's `serviceID`, if any.
    pub fn requestor_service(&self) -> Option<&str> {
        self.service.map(|i| self.ids[i].value.as_ref())
    }

    /// A `SendMessageRequest`'s `MessageInfo/@messageID` (its answer repeats it).
    pub fn message_id(&self) -> Option<&str> {
        self.message_id.as_deref()
    }

    /// Whether the sender asked for a delivery report.
    pub fn wants_report(&self) -> bool {
        self.wants_report
    }

    /// An answer's status code, as [`Primitive::answer_code`](super::Primitive::answer_code)
    /// gives it.
    pub fn answer_code(&self) -> u16 {
        match self.kind {
            Kind::Status | Kind::SendMessageResponse => self.code.unwrap_or(status::OK),
            _ => status::OK,
        }
    }

    /// Every ID slot, for rewriting in place.
    pub fn slots(&mut self) -> impl Iterator<Item = (Slot, &mut Cow<'a, str>)> {
        self.ids.iter_mut().map(|id| (id.slot, &mut id.value))
    }

    /// The typed primitive of the same body (its IDs as they came), for what only the typed
    /// path can do. `None` only if the typed parser refuses what the scan took, which the
    /// property tests and the fuzz target rule out.
    pub fn typed(&self, codec: &Codec) -> Option<Primitive> {
        let msg = codec.parse(self.body.as_bytes()).ok()?;
        let Body::Session(session) = msg.body else {
            return None;
        };
        session.transactions.into_iter().next().map(|t| t.primitive)
    }

    /// The whole body as it came.
    pub fn body(&self) -> &'a str {
        self.body
    }

    /// The message with `session_id` and `tid`, declaring `namespace`, the primitive's bytes
    /// copied with every ID slot written from [`Spliced::ids`].
    pub fn emit(&self, namespace: &str, session_id: &str, tid: &str) -> String {
        self.emit_parts(namespace, session_id, tid).0
    }

    /// [`Spliced::emit`], and where the primitive is in what it wrote: the only part whose
    /// text came from the far side apart from `session_id` and `tid` (the rest is markup
    /// and the configured `namespace`), which is what a check of the text looks at.
    pub fn emit_parts(
        &self,
        namespace: &str,
        session_id: &str,
        tid: &str,
    ) -> (String, Range<usize>) {
        // Room for the whole message, so it is written in one allocation: the envelope's
        // markup (under 192 bytes), its values, the primitive, and what rewriting added
        // (escapes aside, which IDs almost never need).
        let grown: usize = self
            .ids
            .iter()
            .map(|id| id.value.len().saturating_sub(id.raw.len()))
            .sum();
        let size = 192 + namespace.len() + session_id.len() + tid.len() + self.prim.len() + grown;
        // The envelope as the typed emitter writes it (`XmlWriter`: the declaration, then
        // no white space), its fixed parts each in one piece.
        let mut out = String::with_capacity(size);
        out.push_str(xml::DECLARATION);
        out.push_str(r#"<WV-SSP-Message xmlns=""#);
        // The namespace almost every side uses (the default of every link) has nothing to
        // escape: known without a look at its bytes.
        if namespace == NS_WV_SSP_13 {
            out.push_str(NS_WV_SSP_13);
        } else {
            xml::escape_into(&mut out, namespace, true);
        }
        out.push_str(r#""><Session sessionID=""#);
        xml::escape_into(&mut out, session_id, true);
        out.push_str(r#""><Transaction mode=""#);
        out.push_str(self.mode.as_str());
        out.push_str(r#"" transactionID=""#);
        xml::escape_into(&mut out, tid, true);
        out.push_str(r#"">"#);
        let start = out.len();
        let mut last = self.prim.start;
        for id in &self.ids {
            out.push_str(&self.body[last..id.raw.start]);
            xml::escape_into(&mut out, &id.value, id.in_attr);
            last = id.raw.end;
        }
        out.push_str(&self.body[last..self.prim.end]);
        let prim = start..out.len();
        out.push_str("</Transaction></Session></WV-SSP-Message>");
        (out, prim)
    }
}

/// Where an element sits, for the values the stages decide by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Ctx {
    Root,
    Session,
    Transaction,
    Prim,
    Meta,
    Requestor,
    Info,
    Recipient,
    Sender,
    Domain,
    /// An element whose attributes and children the typed parser drops.
    Leaf,
    /// Also the default, which only fills the scan stack's unused places.
    #[default]
    Other,
}

/// Typed singletons met so far (a second one would be extension content to the typed
/// parser, which the fast path does not model).
#[derive(Debug, Default)]
struct Seen {
    session: bool,
    transaction: bool,
    prim: bool,
    meta: bool,
    requestor: bool,
    requestor_user: bool,
    info: bool,
    recipient: bool,
    sender: bool,
    sender_first: bool,
    status: bool,
}

struct Scan<'a> {
    body: &'a str,
    out: Option<Spliced<'a>>,
    /// Each open element's context, and whether it has text (bit 0) or a child (bit 1);
    /// inline to the depth of real SSP bodies (a deeper body is left to the typed path).
    /// SSP has no mixed content: the typed parser joins text around a child, which the
    /// spliced bytes would keep apart (a core name split by an element would escape the
    /// byte search).
    stack: Stack<(Ctx, u8), DEPTH>,
    seen: Seen,
    /// The `Domain` text being read: its ID index, once seen.
    text_slot: Option<usize>,
    /// Read by the plain reader, which declines a raw `<` in an attribute value itself.
    plain: bool,
    /// The values met so far that vary from message to message, for the body's shape
    /// (`ssp/splice/shape.rs`); `None` when read by the full reader, or once a value held an
    /// entity (a shape holds none).
    holes: Option<Vec<Hole>>,
}

/// The ID attributes the scan needs by their exact name (an entity's, a presence value's, a
/// requestor's service), in the order of the places [`Key::of`] and `entity_attr` give
/// them; the tests hold both to it.
#[cfg(test)]
const EXACT_KEYS: [&str; 3] = ["userID", "groupID", "serviceID"];

/// Entity elements and the place in `EXACT_KEYS` of the attribute that holds their ID
/// (`common::EntityKind`).
fn entity_attr(name: &str) -> Option<usize> {
    match name {
        "User" | "UserID" | "VerUserID" => Some(0),
        "GroupID" | "ScreenName" => Some(1),
        _ => None,
    }
}

/// What an attribute's name means to the scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    /// An ID attribute ([`attr_slot`]), and its place among `userID`, `groupID` and
    /// `serviceID` (0, 1, 2: `EXACT_KEYS`) if it is named exactly as one of them.
    Id(Slot, Option<usize>),
    /// A namespace declaration (`xmlns`, `xmlns:…`).
    Xmlns,
    /// `deliveryReport`.
    DeliveryReport,
    /// `messageID`.
    MessageId,
    /// `code`.
    Code,
    /// Anything else.
    Other,
}

impl Key {
    /// The meaning of the attribute named `key`. The names SSP bodies carry are told apart
    /// by their length first, so each costs one or two comparisons; the rest are the
    /// general tests.
    /// (This runs for every attribute of every request and answer.)
    #[inline]
    fn of(key: &str) -> Key {
        match key.len() {
            4 if key == "code" => return Key::Code,
            6 if key == "userID" => return Key::Id(Slot::User, Some(0)),
            7 if key == "groupID" => return Key::Id(Slot::Group, Some(1)),
            9 if key == "serviceID" => return Key::Id(Slot::Service, Some(2)),
            9 if key == "messageID" => return Key::MessageId,
            14 if key == "deliveryReport" => return Key::DeliveryReport,
            _ => {}
        }
        if key.starts_with("xmlns") {
            Key::Xmlns
        } else if let Some(slot) = attr_slot(key) {
            Key::Id(slot, None)
        } else {
            Key::Other
        }
    }
}

impl<'a> Scan<'a> {
    /// A scan of `body`, read by the plain reader if `plain`, noting its holes if `shape`.
    fn new(body: &'a str, plain: bool, shape: bool) -> Scan<'a> {
        Scan {
            body,
            out: None,
            stack: Stack::new(),
            seen: Seen::default(),
            text_slot: None,
            plain,
            holes: (plain && shape).then(|| Vec::with_capacity(48)),
        }
    }

    fn envelope(&mut self, o: &Open<'_, 'a>) -> Result<Ctx, XmlError> {
        let stop = Err(XmlError::Stopped);
        match (o.depth, o.name) {
            (1, "WV-SSP-Message") if o.attrs.is_empty() => Ok(Ctx::Root),
            (2, "Session") if !self.seen.session => {
                self.seen.session = true;
                let mut session = None;
                for a in o.attrs.iter() {
                    match a.key {
                        "sessionID" => {
                            note(&mut self.holes, a, Role::Session);
                            session = Some(trimmed(&a.value));
                        }
                        _ => return stop,
                    }
                }
                let Some(session_id) = session else {
                    return stop;
                };
                self.out = Some(Spliced {
                    body: "",
                    kind: Kind::Status,
                    mode: Mode::Request,
                    session_id,
                    transaction_id: Cow::Borrowed(""),
                    ids: Vec::new(),
                    prim: 0..0,
                    route_by: SmallVec::new(),
                    service: None,
                    requestor_user: None,
                    originators: SmallVec::new(),
                    recipient_first: None,
                    sender_first: None,
                    wants_report: false,
                    code: None,
                    message_id: None,
                });
                Ok(Ctx::Session)
            }
            (3, "Transaction") if !self.seen.transaction => {
                self.seen.transaction = true;
                let (mut mode, mut tid) = (None, None);
                for a in o.attrs.iter() {
                    match a.key {
                        "mode" => mode = Mode::parse(&a.value),
                        "transactionID" => {
                            note(&mut self.holes, a, Role::Transaction);
                            tid = Some(trimmed(&a.value));
                        }
                        _ => return stop,
                    }
                }
                let (Some(mode), Some(tid)) = (mode, tid) else {
                    return stop;
                };
                if tid.is_empty() || (mode == Mode::Request && tid.len() > MAX_REQUEST_TID) {
                    return stop;
                }
                let Some(out) = self.out.as_mut() else {
                    return stop;
                };
                out.mode = mode;
                out.transaction_id = tid;
                Ok(Ctx::Transaction)
            }
            _ => stop,
        }
    }
}

impl<'a> Sink<'a> for Scan<'a> {
    fn open(&mut self, o: Open<'_, 'a>) -> Result<(), XmlError> {
        let stop = Err(XmlError::Stopped);
        if o.prefixed {
            return stop;
        }
        let parent = self.stack.last().map(|e| e.0);
        if let Some((_, f)) = self.stack.last_mut() {
            if *f & 1 != 0 {
                return stop;
            }
            *f |= 2;
        }
        if o.depth <= 3 {
            let ctx = self.envelope(&o)?;
            return if self.stack.push((ctx, 0)) {
                Ok(())
            } else {
                stop
            };
        }
        let seen = &mut self.seen;
        let Some(out) = self.out.as_mut() else {
            return stop;
        };
        let mut wants_code = false;
        let ctx = match (parent, o.name) {
            (Some(Ctx::Transaction), name) if !seen.prim => {
                seen.prim = true;
                let Some(kind) = Kind::of(name) else {
                    return stop;
                };
                out.kind = kind;
                // Room for a request's IDs at once (a message names about eight); an
                // answer rarely names any, and costs no allocation for them.
                if out.mode == Mode::Request {
                    out.ids.reserve(8);
                }
                out.prim = o.at.start..o.at.start;
                Ctx::Prim
            }
            (Some(Ctx::Transaction) | None, _) => return stop,
            (Some(Ctx::Domain | Ctx::Leaf), _) => return stop,
            (Some(Ctx::Prim), "MetaInfo")
                if matches!(
                    out.kind,
                    Kind::SendMessageRequest
                        | Kind::DeliveryStatusReport
                        | Kind::PresenceNotification
                ) =>
            {
                if std::mem::replace(&mut seen.meta, true) {
                    return stop;
                }
                Ctx::Meta
            }
            (Some(Ctx::Meta), "Requestor") => {
                if std::mem::replace(&mut seen.requestor, true) {
                    return stop;
                }
                Ctx::Requestor
            }
            (Some(Ctx::Prim), "MessageInfo")
                if matches!(
                    out.kind,
                    Kind::SendMessageRequest | Kind::DeliveryStatusReport
                ) =>
            {
                if std::mem::replace(&mut seen.info, true) {
                    return stop;
                }
                Ctx::Info
            }
            (Some(Ctx::Info), "Recipient") => {
                if std::mem::replace(&mut seen.recipient, true) {
                    return stop;
                }
                Ctx::Recipient
            }
            (Some(Ctx::Info), "Sender") => {
                if std::mem::replace(&mut seen.sender, true) {
                    return stop;
                }
                Ctx::Sender
            }
            (Some(Ctx::Prim), "Status") if out.kind == Kind::SendMessageResponse => {
                // The code of the first `Status` is the answer's.
                wants_code = !std::mem::replace(&mut seen.status, true);
                Ctx::Other
            }
            (_, "Domain") if o.attrs.is_empty() => Ctx::Domain,
            (_, "Domain" | "StatusDescription" | "TryAgainTimeout" | "DeliveryTime") => {
                if !o.attrs.is_empty() {
                    return stop;
                }
                Ctx::Leaf
            }
            _ => Ctx::Other,
        };
        // A bare `Status`'s code is the answer's.
        wants_code |= ctx == Ctx::Prim && out.kind == Kind::Status;
        // Every ID attribute, wherever it is (the typed walk visits vendor content too),
        // and the few others the stages read: each name told apart once ([`Key::of`]).
        // The IDs of the attributes named exactly `userID`, `groupID` and `serviceID`
        // are noted on the way (in that order), for the entity and requestor
        // checks below. A duplicate attribute is refused (the plain reader declines it, the
        // full one refuses it), so each is met once.
        let mut exact_ids: [Option<usize>; 3] = [None; 3];
        let (mut report, mut message_id, mut code) = (false, None, None);
        for a in o.attrs.iter() {
            let key = Key::of(a.key);
            if key == Key::Xmlns {
                return stop;
            }
            // A raw `<` in a value is let through by the full reader but is not XML (the
            // plain reader declines it).
            let Some(raw) = a.raw.clone() else {
                return stop;
            };
            if !self.plain && self.body.as_bytes()[raw.clone()].contains(&b'<') {
                return stop;
            }
            // The values that vary from message to message are the shape's holes; the
            // others the scan decides by (`deliveryReport`, `code`) are fixed bytes of it.
            match key {
                Key::Id(..) => note(&mut self.holes, a, Role::Id(out.ids.len())),
                Key::MessageId if ctx == Ctx::Info && out.kind == Kind::SendMessageRequest => {
                    note(&mut self.holes, a, Role::MessageId);
                }
                Key::MessageId | Key::Other => note(&mut self.holes, a, Role::Opaque),
                Key::DeliveryReport | Key::Code | Key::Xmlns => {}
            }
            match key {
                Key::Id(slot, exact) => {
                    if let Some(k) = exact {
                        exact_ids[k] = exact_ids[k].or(Some(out.ids.len()));
                    }
                    out.ids.push(Id {
                        slot,
                        value: a.value.clone(),
                        raw,
                        in_attr: true,
                    });
                }
                Key::DeliveryReport => {
                    report |= ["yes", "t", "true"]
                        .iter()
                        .any(|w| a.value.trim().eq_ignore_ascii_case(w));
                }
                Key::MessageId => message_id = message_id.or(Some(&a.value)),
                Key::Code => code = code.or(Some(&a.value)),
                Key::Xmlns | Key::Other => {}
            }
        }
        if wants_code {
            // As the typed parser reads it: 0 when missing or invalid.
            out.code = Some(code.and_then(|v| v.trim().parse().ok()).unwrap_or(0));
        }
        // An entity without its ID attribute would gain an empty one on the typed path.
        let entity = match entity_attr(o.name) {
            Some(k) => match exact_ids[k] {
                Some(i) => Some(i),
                None => return stop,
            },
            None => None,
        };
        let [user_id, _, service_id] = exact_ids;
        match (ctx, parent) {
            (Ctx::Prim, _) if out.kind == Kind::SendMessageRequest => out.wants_report = report,
            (Ctx::Requestor, _) => out.service = service_id,
            (Ctx::Info, _) if out.kind == Kind::SendMessageRequest => {
                out.message_id = message_id.cloned();
            }
            (Ctx::Other, Some(Ctx::Requestor)) if entity.is_some() => {
                if std::mem::replace(&mut seen.requestor_user, true) {
                    return stop;
                }
                out.requestor_user = entity;
            }
            (Ctx::Other, Some(Ctx::Recipient)) => {
                if let Some(i) = entity {
                    if out.kind == Kind::SendMessageRequest {
                        out.route_by.push(i);
                    }
                    if out.recipient_first.is_none() {
                        out.recipient_first = Some(i);
                    }
                }
            }
            (Ctx::Other, Some(Ctx::Sender)) => {
                if let Some(i) = entity
                    && !std::mem::replace(&mut seen.sender_first, true)
                {
                    out.sender_first = Some(i);
                    match out.kind {
                        Kind::SendMessageRequest => out.originators.push(i),
                        Kind::DeliveryStatusReport => out.route_by.push(i),
                        _ => {}
                    }
                }
            }
            (Ctx::Other, Some(Ctx::Prim)) if out.kind == Kind::PresenceNotification => {
                if o.name == "PresenceValue" {
                    match user_id {
                        Some(i) => out.originators.push(i),
                        None => return stop,
                    }
                } else if let Some(i) = entity
                    && matches!(o.name, "User" | "UserID" | "VerUserID")
                {
                    out.route_by.push(i);
                }
            }
            (Ctx::Other, _) if o.name == "PresenceValue" && user_id.is_none() => {
                return stop;
            }
            _ => {}
        }
        if !self.stack.push((ctx, 0)) {
            return stop;
        }
        Ok(())
    }

    fn close(&mut self, end: usize) -> Result<(), XmlError> {
        let ctx = self.stack.pop().map(|e| e.0);
        if ctx == Some(Ctx::Prim)
            && let Some(out) = self.out.as_mut()
        {
            out.prim.end = end;
        }
        if ctx == Some(Ctx::Domain) {
            self.text_slot = None;
        }
        Ok(())
    }

    fn text(&mut self, t: Text<'_>) -> Result<(), XmlError> {
        let stop = Err(XmlError::Stopped);
        if let Some((_, f)) = self.stack.last_mut() {
            if *f & 2 != 0 {
                return stop;
            }
            *f |= 1;
        }
        match self.stack.last().map(|e| e.0) {
            // Inside the primitive: copied as it is, but it must stay well-formed.
            Some(Ctx::Domain) => {
                let Some(out) = self.out.as_mut() else {
                    return stop;
                };
                // Plain text whose bytes are the value (no line ends to normalise): the
                // trimmed value's place in the body follows from the run's.
                if t.kind != TextKind::Plain || self.text_slot.is_some() || t.raw.contains('\r') {
                    return stop;
                }
                let s = t.raw;
                let value = s.trim();
                if value.is_empty() {
                    return stop;
                }
                let lead = s.len() - s.trim_start().len();
                let raw = t.at.start + lead..t.at.start + lead + value.len();
                // The body's own bytes, borrowed for the message's lifetime (the Text's is
                // the reader's): the same text, since the run is the body's bytes at `t.at`.
                let Some(borrowed) = self.body.get(raw.clone()).filter(|b| *b == value) else {
                    return stop;
                };
                self.text_slot = Some(out.ids.len());
                if let Some(holes) = self.holes.as_mut() {
                    holes.push(Hole {
                        at: t.at.clone(),
                        attr: false,
                        role: Role::Domain(out.ids.len()),
                    });
                }
                out.ids.push(Id {
                    slot: Slot::Domain,
                    value: Cow::Borrowed(borrowed),
                    raw,
                    in_attr: false,
                });
                Ok(())
            }
            Some(Ctx::Root | Ctx::Session | Ctx::Transaction) | None => stop,
            Some(_) => {
                if t.kind == TextKind::Plain && has_cdata_end(t.raw.as_bytes()) {
                    return stop;
                }
                // A text's hole; a reference splits it, and a shape holds none.
                if t.kind == TextKind::Plain {
                    if let Some(holes) = self.holes.as_mut() {
                        holes.push(Hole {
                            at: t.at,
                            attr: false,
                            role: Role::Opaque,
                        });
                    }
                } else {
                    self.holes = None;
                }
                Ok(())
            }
        }
    }
}

/// Note attribute `a`'s value as a hole of the body's shape, holding `role`; a value with an
/// entity (no longer the body's bytes) means there is no shape.
fn note(holes: &mut Option<Vec<Hole>>, a: &xml::Attr<'_>, role: Role) {
    if let Some(list) = holes {
        match (&a.value, &a.raw) {
            (Cow::Borrowed(_), Some(at)) => list.push(Hole {
                at: at.clone(),
                attr: true,
                role,
            }),
            _ => *holes = None,
        }
    }
}

/// Whether `text` holds `]]>` (not allowed in character data): a `>` after `]]`. Text
/// rarely holds a `>` at all, so this is one byte search, without the set-up of a substring
/// search.
fn has_cdata_end(text: &[u8]) -> bool {
    memchr::memchr_iter(b'>', text).any(|i| i >= 2 && &text[i - 2..i] == b"]]")
}

/// `v` trimmed, still borrowed from the body when it was.
fn trimmed<'a>(v: &Cow<'a, str>) -> Cow<'a, str> {
    // Nothing to trim when both ends are visible ASCII (`str::trim` decodes a character at
    // each end to find out; every white-space character is ASCII or starts above it).
    if let (Some(first), Some(last)) = (v.as_bytes().first(), v.as_bytes().last())
        && first.is_ascii_graphic()
        && last.is_ascii_graphic()
    {
        return v.clone();
    }
    match v {
        Cow::Borrowed(b) => Cow::Borrowed(b.trim()),
        Cow::Owned(o) => Cow::Owned(o.trim().to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    /// [`Key::of`], the obvious way: each test in turn, as the scan made them before the
    /// names were told apart once.
    fn naive_key(key: &str) -> Key {
        if key.starts_with("xmlns") {
            return Key::Xmlns;
        }
        if let Some(slot) = attr_slot(key) {
            return Key::Id(slot, EXACT_KEYS.iter().position(|k| *k == key));
        }
        match key {
            "deliveryReport" => Key::DeliveryReport,
            "messageID" => Key::MessageId,
            "code" => Key::Code,
            _ => Key::Other,
        }
    }

    proptest::proptest! {
        #[test]
        fn an_attribute_name_means_what_each_test_in_turn_says(
            key in proptest::prop_oneof![
                proptest::sample::select(vec![
                    "userID", "groupID", "serviceID", "messageID", "deliveryReport", "code",
                    "UserID", "userid", "x:userID", "vendor:serviceid", "xmlns", "xmlns:x",
                    "sessionID", "transactionID", "mode", "id", "ID", "d", "", "codes",
                    "contentType", "friendlyName", "xmlnsuserID", "a:groupID",
                    "xmlns:userID", "xmlns:serviceID",
                ]).prop_map(|k: &str| k.to_owned()),
                "[a-zA-Z:]{0,16}",
            ],
        ) {
            proptest::prop_assert_eq!(Key::of(&key), naive_key(&key), "{}", key);
        }
    }

    #[test]
    fn an_entity_names_its_id_attribute_by_the_place_key_of_gives_it() {
        for (element, attr) in [
            ("User", "userID"),
            ("UserID", "userID"),
            ("VerUserID", "userID"),
            ("GroupID", "groupID"),
            ("ScreenName", "groupID"),
        ] {
            let place = entity_attr(element);
            assert_eq!(place.map(|k| EXACT_KEYS[k]), Some(attr), "{element}");
            assert!(
                matches!(Key::of(attr), Key::Id(_, p) if p == place),
                "{element}"
            );
        }
        assert_eq!(entity_attr("Sender"), None);
    }

    #[test]
    fn cdata_end_is_found_wherever_it_is() {
        for (text, want) in [
            ("", false),
            (">", false),
            ("]>", false),
            ("]]>", true),
            ("a]] >", false),
            ("a > b ]]> c", true),
            ("]]]>", true),
            ("] ]>", false),
        ] {
            assert_eq!(has_cdata_end(text.as_bytes()), want, "{text:?}");
            assert_eq!(want, text.contains("]]>"));
        }
    }
}
