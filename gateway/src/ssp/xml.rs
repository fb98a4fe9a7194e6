//! The one module that talks to quick-xml: a lossless element tree for SSP bodies.
//!
//! quick-xml's API changes between minor versions, so nothing else in the crate names it.
//! Parsing is liberal (prefixes bound to an SSP namespace are dropped, whitespace around text
//! is trimmed, comments and processing instructions are skipped) and bounded: every limit in
//! [`Limits`] is checked while reading, before memory is spent. DOCTYPE, and with it every
//! entity declaration, is refused outright: no XXE, no entity expansion bombs.
//! Emission is strict and canonical: UTF-8, no indentation, attributes in stored order,
//! `"` quoting, and only the escapes XML requires.

use std::borrow::Cow;
use std::ops::Range;

use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;
use smallvec::SmallVec;

mod plain;
pub(crate) use plain::{is_space, read_plain};

/// An element or attribute name. Names the SSP profile knows are static (no allocation);
/// others (vendor content) are owned.
pub type Name = Cow<'static, str>;

/// Element and attribute names of the SSP profile, interned so parsing allocates none of them.
const KNOWN_NAMES: &[&str] = &[
    "WV-SSP-Message",
    "Session",
    "Transaction",
    "SetupTransaction",
    "SendSecretToken",
    "SecretToken",
    "LoginRequest",
    "LoginResponse",
    "PasswordDigest",
    "SendMessageRequest",
    "SendMessageResponse",
    "DeliveryStatusReport",
    "DeliveryResult",
    "DeliveryTime",
    "SubscribeRequest",
    "UnsubscribeRequest",
    "PresenceNotification",
    "GetPresenceRequest",
    "GetPresenceResponse",
    "SearchRequest",
    "SearchResponse",
    "SearchPairList",
    "SearchElement",
    "SearchString",
    "SearchResult",
    "UserList",
    "InviteRequest",
    "InviteResponse",
    "CancelInviteRequest",
    "Inviting",
    "Invited",
    "Responding",
    "Canceling",
    "Canceled",
    "MetaInfo",
    "Requestor",
    "User",
    "UserID",
    "VerUserID",
    "GroupID",
    "ScreenName",
    "ClientID",
    "Status",
    "StatusDescription",
    "DetailedResult",
    "TryAgainTimeout",
    "Domain",
    "MessageInfo",
    "Recipient",
    "Sender",
    "DateTime",
    "ContentData",
    "PresenceValue",
    "PresenceSubList",
    "AttributeList",
    "OnlineStatus",
    "UserAvailability",
    "StatusText",
    "Qualifier",
    // attributes
    "xmlns",
    "sessionID",
    "mode",
    "transactionID",
    "serviceID",
    "protocol",
    "protocolVersion",
    "procotolVersion",
    "timeToLive",
    "encoding",
    "deliveryReport",
    "messageID",
    "messageURI",
    "MessageURI",
    "contentType",
    "contentName",
    "ContentName",
    "contentSize",
    "validity",
    "validlity",
    "clientOriginated",
    "userID",
    "groupID",
    "friendlyName",
    "code",
    "format",
    "searchLimit",
    "searchID",
    "searchIndex",
    "findings",
    "completionFlag",
    "inviteID",
    "inviteType",
    "acceptance",
    "url",
];

/// Values the typed emitter writes from its own model rather than copying them from input:
/// the two modes, the defaults of `clientOriginated`, `deliveryReport` and `contentType`,
/// and a merged search's completion flag.
const MODEL_VALUES: &[&str] = &["Request", "Response", "Yes", "No", "text/plain", "T"];

/// Where the SSP markup the gateway writes itself holds `name`, ASCII case ignored (as the
/// topology scrub compares), described for an error message: the profile's element and
/// attribute names, the values the emitter writes from its model, the XML declaration,
/// `more` (what else it writes that this module does not name: namespaces, the group
/// primitives' names), and numbers (status codes, counts and sizes are written from the
/// model). The topology scrub hides a core name wherever it occurs, names and values alike;
/// a core name found here would make it rewrite the gateway's own markup (a `mode`
/// rewritten is a transaction lost), so the configuration refuses one. Run at
/// configuration time only.
pub fn markup_holding(name: &str, more: &[&str]) -> Option<String> {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
        return Some("a number, as status codes, counts and sizes are".to_owned());
    }
    let name = name.to_ascii_lowercase();
    KNOWN_NAMES
        .iter()
        .chain(MODEL_VALUES)
        .chain([&DECLARATION])
        .chain(more)
        .find(|w| w.to_ascii_lowercase().contains(&name))
        .map(|w| format!("{w:?}"))
}

/// Slot of a name in the intern table: a cheap hash of length and three bytes.
fn name_slot(s: &str) -> usize {
    let b = s.as_bytes();
    let (first, mid, last) = match b {
        [] => (0, 0, 0),
        _ => (b[0], b[b.len() / 2], b[b.len() - 1]),
    };
    let h = (b.len() as u32).wrapping_mul(0x9E37_79B1)
        ^ u32::from(first).wrapping_mul(0x85EB_CA77)
        ^ u32::from(mid).wrapping_mul(0xC2B2_AE3D)
        ^ u32::from(last).wrapping_mul(0x27D4_EB2F);
    (h >> 24) as usize
}

/// The static copy of a known name, or an owned one.
pub fn intern(s: &str) -> Name {
    // Open addressing over 256 slots; the table is built once and is mostly empty, so a
    // lookup is one hash and usually one comparison.
    static TABLE: std::sync::OnceLock<[Option<&'static str>; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [None; 256];
        for k in KNOWN_NAMES {
            let mut i = name_slot(k);
            while t[i].is_some() {
                i = (i + 1) & 255;
            }
            t[i] = Some(*k);
        }
        t
    });
    let mut i = name_slot(s);
    while let Some(k) = table[i] {
        if k == s {
            return Cow::Borrowed(k);
        }
        i = (i + 1) & 255;
    }
    Cow::Owned(s.to_owned())
}

/// An XML element: qualified name, attributes in document order, trimmed text and children.
///
/// SSP has no mixed content, so the text of an element is kept as one trimmed string.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    /// The element name. Names in an accepted SSP namespace lose their prefix.
    pub name: Name,
    /// Attributes in document order, names as written (prefixes kept).
    pub attrs: Vec<(Name, String)>,
    /// Child elements in document order.
    pub children: Vec<Element>,
    /// Character data with surrounding whitespace trimmed; empty when there is none.
    pub text: String,
}

impl Element {
    /// A new element with no attributes, children or text.
    pub fn new(name: impl Into<Name>) -> Self {
        Element {
            name: name.into(),
            ..Element::default()
        }
    }

    /// The value of the first attribute called `name` (exact match).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Builder: append a child.
    pub fn with_child(mut self, child: Element) -> Self {
        self.children.push(child);
        self
    }

    /// Builder: set the text.
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = text.into();
        self
    }

    /// The first child called `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Depth-first visit of this element and all its descendants.
    pub fn walk_mut(&mut self, f: &mut dyn FnMut(&mut Element)) {
        f(self);
        for c in &mut self.children {
            c.walk_mut(f);
        }
    }

    /// Depth-first visit, read-only.
    pub fn walk(&self, f: &mut dyn FnMut(&Element)) {
        f(self);
        for c in &self.children {
            c.walk(f);
        }
    }
}

/// Hard limits applied while parsing. Every one of them maps to an SSP 400 with a description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted body, in bytes (HTTP layer answers 413 above it).
    pub max_body: usize,
    /// Deepest element nesting, the root counting as 1.
    pub max_depth: usize,
    /// Most attributes on one element.
    pub max_attrs: usize,
    /// Longest attribute value, in bytes.
    pub max_attr_len: usize,
    /// Longest text content of one element, in bytes.
    pub max_text_len: usize,
    /// Most elements in one message.
    pub max_elements: usize,
    /// Most `Transaction` elements in one `Session`.
    pub max_transactions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 256 * 1024,
            max_depth: 32,
            max_attrs: 32,
            max_attr_len: 4096,
            max_text_len: 192 * 1024,
            max_elements: 8192,
            max_transactions: 64,
        }
    }
}

/// Why a body was refused. The text is what goes into the SSP `StatusDescription`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// Body larger than [`Limits::max_body`].
    #[error("message body of {0} bytes exceeds the limit of {1} bytes")]
    BodyTooLarge(usize, usize),
    /// Not UTF-8.
    #[error("message body is not valid UTF-8 (only UTF-8 is accepted)")]
    NotUtf8,
    /// A declared encoding other than UTF-8.
    #[error("unsupported XML encoding {0:?}: only UTF-8 is accepted")]
    Encoding(String),
    /// DOCTYPE present.
    #[error("DOCTYPE and entity declarations are not allowed in SSP messages")]
    Doctype,
    /// An entity reference other than the five predefined ones or a character reference.
    #[error("undeclared entity reference &{0};")]
    Entity(String),
    /// Nesting too deep.
    #[error("XML nesting deeper than {0} elements")]
    TooDeep(usize),
    /// Too many attributes on one element.
    #[error("element <{0}> has more than {1} attributes")]
    TooManyAttrs(String, usize),
    /// Attribute value too long.
    #[error("attribute {0} is longer than {1} bytes")]
    AttrTooLong(String, usize),
    /// Text too long.
    #[error("text of <{0}> is longer than {1} bytes")]
    TextTooLong(String, usize),
    /// Too many elements.
    #[error("message has more than {0} elements")]
    TooManyElements(usize),
    /// Too many transactions.
    #[error("message has more than {0} transactions")]
    TooManyTransactions(usize),
    /// No root element, or content after it.
    #[error("{0}")]
    Structure(String),
    /// An element or attribute name that is not an XML name.
    #[error("invalid XML name {0:?}")]
    Name(String),
    /// A character XML 1.0 does not allow (control characters other than tab, LF, CR).
    #[error("character U+{0:04X} is not allowed in XML")]
    Char(u32),
    /// A [`Sink`] stopped reading: not an error of the body (never reported to a sender).
    #[error("reading stopped")]
    Stopped,
    /// A well-formedness error reported by the XML reader.
    #[error("malformed XML at byte {pos}: {msg}")]
    Syntax {
        /// Byte offset of the error.
        pos: u64,
        /// The reader's message.
        msg: String,
    },
}

impl XmlError {
    /// Whether it is a limit exceeded (size, depth, counts), not malformed XML.
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            XmlError::BodyTooLarge(..)
                | XmlError::TooDeep(_)
                | XmlError::TooManyAttrs(..)
                | XmlError::AttrTooLong(..)
                | XmlError::TextTooLong(..)
                | XmlError::TooManyElements(_)
                | XmlError::TooManyTransactions(_)
        )
    }
}

/// The parsed document: the root element and the namespaces it declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The root element (name with an SSP prefix removed; `xmlns` attributes removed).
    pub root: Element,
    /// The root's default or SSP-prefixed namespace, if any.
    pub namespace: Option<String>,
}

/// Namespace test used to decide which prefixes are "ours" and can be dropped.
pub type IsSspNamespace<'a> = &'a dyn Fn(&str) -> bool;

/// Parse a body into a [`Document`], enforcing `limits`.
///
/// `is_ssp_ns` tells which namespace URIs are SSP (prefixes bound to those are removed
/// from element names; the root's `xmlns` declarations are consumed).
pub fn parse(
    body: &[u8],
    limits: &Limits,
    is_ssp_ns: IsSspNamespace<'_>,
) -> Result<Document, XmlError> {
    let mut tree = Tree {
        stack: Vec::with_capacity(8),
        done: Vec::with_capacity(32),
        root: None,
    };
    let namespace = read(text_of(body, limits)?, limits, is_ssp_ns, &mut tree)?;
    let root = tree
        .root
        .ok_or_else(|| XmlError::Structure("no root element".into()))?;
    Ok(Document {
        root,
        namespace: namespace.map(Cow::into_owned),
    })
}

/// One attribute of an element being read, after every check. (`Default`, an empty one,
/// only fills buffers: a sink takes values out with `std::mem::take`.)
#[derive(Debug, Default)]
pub struct Attr<'a> {
    /// The name as written (prefix kept).
    pub key: &'a str,
    /// The value, entities resolved and white space normalised.
    pub value: Cow<'a, str>,
    /// Where the raw value sits in the body (`None` if the reader did not borrow it).
    pub raw: Option<Range<usize>>,
}

/// The attributes of one start tag, inline up to the number real SSP elements carry.
pub type AttrBuf<'a> = SmallVec<[Attr<'a>; 8]>;

/// A start tag that passed every check, for a [`Sink`].
#[derive(Debug)]
pub struct Open<'s, 'a> {
    /// The name, with a prefix bound to an SSP namespace dropped.
    pub name: &'s str,
    /// Whether the name as written has a prefix (SSP or not).
    pub prefixed: bool,
    /// Attributes in document order; SSP namespace declarations are consumed. A sink may
    /// take their values (each reader refills its buffer for the next tag).
    pub attrs: &'s mut [Attr<'a>],
    /// Nesting depth, the root counting as 1.
    pub depth: usize,
    /// The start tag's bytes in the body.
    pub at: Range<usize>,
    /// Whether it is an empty-element tag (`<x/>`).
    pub empty: bool,
}

/// Character data as it is in the body, checked.
#[derive(Debug)]
pub struct Text<'s> {
    /// The bytes as written (a reference: the character it stands for).
    pub raw: &'s str,
    /// Where they are in the body.
    pub at: Range<usize>,
    /// What they were.
    pub kind: TextKind,
}

impl Text<'_> {
    /// The characters, line ends normalised as XML 1.0 says (allocates only for a `\r`).
    pub fn content(&self) -> Cow<'_, str> {
        if self.kind == TextKind::Plain && self.raw.contains('\r') {
            Cow::Owned(self.raw.replace("\r\n", "\n").replace('\r', "\n"))
        } else {
            Cow::Borrowed(self.raw)
        }
    }

    /// The length of [`Text::content`], without making it.
    fn content_len(&self) -> usize {
        if self.kind != TextKind::Plain {
            return self.raw.len();
        }
        let b = self.raw.as_bytes();
        let crlf = memchr::memchr_iter(b'\r', b)
            .filter(|&i| b.get(i + 1) == Some(&b'\n'))
            .count();
        b.len() - crlf
    }
}

/// What a piece of character data was in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// Plain text (no references inside).
    Plain,
    /// A CDATA section.
    CData,
    /// A character or predefined entity reference.
    Ref,
}

/// What [`read`] reports as it goes: elements that passed every limit and refusal, and their
/// text. The element tree ([`parse`]) is one sink; the splicing fast path is another, so both
/// refuse exactly the same input.
pub trait Sink<'a> {
    /// A start tag.
    fn open(&mut self, el: Open<'_, 'a>) -> Result<(), XmlError>;
    /// The end of the innermost open element; `end` is the byte after its end tag.
    fn close(&mut self, end: usize) -> Result<(), XmlError>;
    /// Character data of the innermost open element. Runs of white space before any other
    /// text of the element are not reported.
    fn text(&mut self, t: Text<'_>) -> Result<(), XmlError>;
}

/// `body` as text, if it is within the size limit and UTF-8 (checked in that order).
pub fn text_of<'a>(body: &'a [u8], limits: &Limits) -> Result<&'a str, XmlError> {
    if body.len() > limits.max_body {
        return Err(XmlError::BodyTooLarge(body.len(), limits.max_body));
    }
    // `simdutf8` says only whether it is UTF-8, which is all the error reports.
    simdutf8::basic::from_utf8(body).map_err(|_| XmlError::NotUtf8)
}

/// Read `text` (from [`text_of`]) into `sink`, enforcing `limits` and every refusal (DOCTYPE, entities, names,
/// characters, encoding, structure). Returns the root's SSP namespace, if it declared one.
pub fn read<'a>(
    text: &'a str,
    limits: &Limits,
    is_ssp_ns: IsSspNamespace<'_>,
    sink: &mut dyn Sink<'a>,
) -> Result<Option<Cow<'a, str>>, XmlError> {
    // A UTF-8 byte-order mark is legal before the declaration.
    let stripped = text.strip_prefix('\u{feff}').unwrap_or(text);
    // quick-xml drops one more mark at the start without counting it in its positions.
    let base = text.len() - stripped.len()
        + if stripped.starts_with('\u{feff}') {
            '\u{feff}'.len_utf8()
        } else {
            0
        };
    let mut reader = Reader::from_str(stripped);
    let cfg = reader.config_mut();
    cfg.check_end_names = true;
    cfg.expand_empty_elements = false;
    cfg.trim_text_start = false;
    cfg.trim_text_end = false;

    let mut d = Driver::new(text, limits, is_ssp_ns);
    loop {
        let before = base + reader.buffer_position() as usize;
        let ev = reader.read_event().map_err(|e| XmlError::Syntax {
            pos: reader.error_position(),
            msg: e.to_string(),
        })?;
        let at = before..base + reader.buffer_position() as usize;
        match ev {
            Event::Start(s) => d.open(&s, false, at, sink)?,
            Event::Empty(s) => d.open(&s, true, at, sink)?,
            Event::End(_) => d.close(at.end, sink)?,
            Event::Text(t) => {
                let raw = t.into_inner();
                d.text(&raw, at, TextKind::Plain, sink)?;
            }
            Event::CData(c) => {
                let raw = c.into_inner();
                d.text(&raw, at, TextKind::CData, sink)?;
            }
            Event::GeneralRef(r) => {
                let ch = match r.resolve_char_ref() {
                    Ok(Some(ch)) => ch,
                    Ok(None) => {
                        let name = (*r).to_owned();
                        match name.as_str() {
                            "lt" => '<',
                            "gt" => '>',
                            "amp" => '&',
                            "apos" => '\'',
                            "quot" => '"',
                            _ => return Err(XmlError::Entity(name)),
                        }
                    }
                    Err(e) => {
                        return Err(XmlError::Syntax {
                            pos: reader.buffer_position(),
                            msg: e.to_string(),
                        });
                    }
                };
                let mut buf = [0u8; 4];
                d.text(ch.encode_utf8(&mut buf), at, TextKind::Ref, sink)?;
            }
            Event::Decl(decl) => {
                if let Some(Ok(enc)) = decl.encoding() {
                    let enc = enc.into_owned();
                    if !enc.eq_ignore_ascii_case("utf-8")
                        && !enc.eq_ignore_ascii_case("utf8")
                        && !enc.eq_ignore_ascii_case("us-ascii")
                    {
                        return Err(XmlError::Encoding(enc));
                    }
                }
            }
            Event::DocType(_) => return Err(XmlError::Doctype),
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if !d.stack.is_empty() {
        return Err(XmlError::Structure(
            "document ends inside an element".into(),
        ));
    }
    if !d.root_done {
        return Err(XmlError::Structure("no root element".into()));
    }
    Ok(d.namespace)
}

/// The checks [`read`] makes, with what they need to remember.
struct Driver<'a, 'l> {
    limits: &'l Limits,
    is_ssp_ns: IsSspNamespace<'l>,
    /// The body as text, for the offsets of borrowed attribute values.
    body: &'a str,
    /// Open elements: where their name is in the body (for errors) and text length so far.
    /// Inline up to the depth of real SSP bodies, as `attrs`: reading an unprefixed body
    /// costs no allocation here.
    stack: SmallVec<[(Option<Range<usize>>, usize); 12]>,
    /// The attributes of the element being opened (one buffer for all elements).
    attrs: AttrBuf<'a>,
    /// (depth, prefix) pairs of prefixes bound to an SSP namespace, innermost last.
    prefixes: Vec<(usize, &'a str)>,
    root_done: bool,
    namespace: Option<Cow<'a, str>>,
    elements: usize,
    transactions: usize,
}

impl<'a, 'l> Driver<'a, 'l> {
    fn new(body: &'a str, limits: &'l Limits, is_ssp_ns: IsSspNamespace<'l>) -> Driver<'a, 'l> {
        Driver {
            limits,
            is_ssp_ns,
            body,
            stack: SmallVec::new(),
            attrs: SmallVec::new(),
            prefixes: Vec::new(),
            root_done: false,
            namespace: None,
            elements: 0,
            transactions: 0,
        }
    }

    fn open(
        &mut self,
        s: &BytesStart<'a>,
        empty: bool,
        at: Range<usize>,
        sink: &mut dyn Sink<'a>,
    ) -> Result<(), XmlError> {
        let qname_ref = s.name();
        let qname: &str = qname_ref.as_ref();
        let depth = self.begin(qname)?;
        let mut attrs = s.attributes();
        attrs.with_checks(true);
        for a in attrs {
            let a = a.map_err(|e| XmlError::Syntax {
                pos: 0,
                msg: format!("in attributes of <{qname}>: {e}"),
            })?;
            // The reader borrows from the body: names and values are re-sliced from it so
            // they outlive the start tag.
            let key: &'a str = match offset_in(self.body, a.key.0) {
                Some(r) => &self.body[r],
                None => {
                    return Err(XmlError::Syntax {
                        pos: 0,
                        msg: format!("in attributes of <{qname}>: unexpected name"),
                    });
                }
            };
            let raw = offset_in(self.body, &a.value);
            self.attr(qname, depth, key, a.value.len(), raw.clone(), || {
                let value = a
                    .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .map_err(|e| match e {
                        quick_xml::Error::Escape(
                            quick_xml::escape::EscapeError::UnrecognizedEntity(_, name),
                        ) => XmlError::Entity(name),
                        other => XmlError::Syntax {
                            pos: 0,
                            msg: format!("in attribute {key}: {other}"),
                        },
                    })?;
                Ok(match (value, &raw) {
                    (Cow::Borrowed(_), Some(r)) => Cow::Borrowed(&self.body[r.clone()]),
                    (v, _) => Cow::Owned(v.into_owned()),
                })
            })?;
        }
        self.finish(qname, depth, empty, at, sink)
    }

    /// A start tag named `qname` begins: the limits on content after the root, depth and
    /// element count, and its name. Returns its depth.
    fn begin(&mut self, qname: &str) -> Result<usize, XmlError> {
        if self.root_done {
            return Err(XmlError::Structure("content after the root element".into()));
        }
        let depth = self.stack.len() + 1;
        if depth > self.limits.max_depth {
            return Err(XmlError::TooDeep(self.limits.max_depth));
        }
        self.elements += 1;
        if self.elements > self.limits.max_elements {
            return Err(XmlError::TooManyElements(self.limits.max_elements));
        }
        check_name(qname)?;
        self.attrs.clear();
        Ok(depth)
    }

    /// One attribute of the element begun: its name `key`, the length of its value as
    /// written (`raw_len`, at `raw` in the body) and its value, resolved by `value` once
    /// the checks that need no value have passed.
    fn attr(
        &mut self,
        qname: &str,
        depth: usize,
        key: &'a str,
        raw_len: usize,
        raw: Option<Range<usize>>,
        value: impl FnOnce() -> Result<Cow<'a, str>, XmlError>,
    ) -> Result<(), XmlError> {
        // Counted as kept: SSP namespace declarations, consumed, do not count.
        if self.attrs.len() >= self.limits.max_attrs {
            return Err(XmlError::TooManyAttrs(
                qname.to_owned(),
                self.limits.max_attrs,
            ));
        }
        check_name(key)?;
        if raw_len > self.limits.max_attr_len {
            return Err(XmlError::AttrTooLong(
                key.to_owned(),
                self.limits.max_attr_len,
            ));
        }
        let value = value()?;
        check_chars(&value)?;
        // Namespace declarations: SSP ones are consumed (the emitter writes its own);
        // others are kept as ordinary attributes so vendor content stays well-formed.
        if key == "xmlns" {
            if (self.is_ssp_ns)(&value) {
                if depth == 1 {
                    self.namespace = Some(value);
                }
                return Ok(());
            }
        } else if let Some(prefix) = key.strip_prefix("xmlns:")
            && (self.is_ssp_ns)(&value)
        {
            self.prefixes.push((depth, prefix));
            if depth == 1 && self.namespace.is_none() {
                self.namespace = Some(value);
            }
            return Ok(());
        }
        self.attrs.push(Attr { key, value, raw });
        Ok(())
    }

    /// The start tag `qname`, its attributes read, to the sink (and its end if `empty`).
    fn finish(
        &mut self,
        qname: &str,
        depth: usize,
        empty: bool,
        at: Range<usize>,
        sink: &mut dyn Sink<'a>,
    ) -> Result<(), XmlError> {
        // A byte search: names are short, and this runs for every element.
        let colon = qname.bytes().position(|b| b == b':');
        let (name, prefixed) = match colon.map(|i| (&qname[..i], &qname[i + 1..])) {
            Some((prefix, local)) if self.prefixes.iter().any(|(_, p)| *p == prefix) => {
                (local, true)
            }
            Some(_) => (qname, true),
            None => (qname, false),
        };
        if name == "Transaction" {
            self.transactions += 1;
            if self.transactions > self.limits.max_transactions {
                return Err(XmlError::TooManyTransactions(self.limits.max_transactions));
            }
        }
        let end = at.end;
        sink.open(Open {
            name,
            prefixed,
            attrs: &mut self.attrs[..],
            depth,
            at,
            empty,
        })?;
        self.stack.push((offset_in(self.body, name), 0));
        if empty {
            self.close(end, sink)?;
        }
        Ok(())
    }

    fn close(&mut self, end: usize, sink: &mut dyn Sink<'a>) -> Result<(), XmlError> {
        let depth = self.stack.len();
        if self.stack.pop().is_none() {
            return Err(XmlError::Structure("unexpected end tag".into()));
        }
        while self.prefixes.last().is_some_and(|(d, _)| *d == depth) {
            self.prefixes.pop();
        }
        if self.stack.is_empty() {
            self.root_done = true;
        }
        sink.close(end)
    }

    fn text(
        &mut self,
        s: &str,
        at: Range<usize>,
        kind: TextKind,
        sink: &mut dyn Sink<'a>,
    ) -> Result<(), XmlError> {
        // Line-end normalisation neither adds nor removes a forbidden character, nor makes
        // a blank run less blank: the raw bytes are checked.
        let blank = check_text(s)?;
        let t = Text { raw: s, at, kind };
        match self.stack.last_mut() {
            Some((name, len)) => {
                // Whitespace-only runs before any real text are layout, not content.
                if *len == 0 && blank {
                    return Ok(());
                }
                let n = t.content_len();
                if *len + n > self.limits.max_text_len {
                    let name = name.clone().map_or("?", |r| &self.body[r]);
                    return Err(XmlError::TextTooLong(
                        name.to_owned(),
                        self.limits.max_text_len,
                    ));
                }
                *len += n;
                sink.text(t)
            }
            None if blank => Ok(()),
            None => Err(XmlError::Structure("text outside the root element".into())),
        }
    }
}

/// Where `part` (borrowed from `body`) starts and ends in it.
fn offset_in(body: &str, part: &str) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= body.len()).then_some(start..end)
}

/// The element tree: the [`Sink`] behind [`parse`].
struct Tree {
    /// Open elements with the index in `done` where their children start.
    stack: Vec<(Element, usize)>,
    /// Closed elements waiting for their parent to close; a parent takes its children in one
    /// exactly-sized allocation instead of growing a vector child by child.
    done: Vec<Element>,
    root: Option<Element>,
}

impl<'a> Sink<'a> for Tree {
    fn open(&mut self, o: Open<'_, 'a>) -> Result<(), XmlError> {
        let mut el = Element::new(intern(o.name));
        el.attrs = o
            .attrs
            .iter_mut()
            .map(|a| (intern(a.key), std::mem::take(&mut a.value).into_owned()))
            .collect();
        self.stack.push((el, self.done.len()));
        Ok(())
    }

    fn close(&mut self, _end: usize) -> Result<(), XmlError> {
        let (mut el, first_child) = self
            .stack
            .pop()
            .ok_or_else(|| XmlError::Structure("unexpected end tag".into()))?;
        trim_in_place(&mut el.text);
        if self.done.len() > first_child {
            el.children = self.done.drain(first_child..).collect();
        }
        if self.stack.is_empty() {
            self.root = Some(el);
        } else {
            self.done.push(el);
        }
        Ok(())
    }

    fn text(&mut self, t: Text<'_>) -> Result<(), XmlError> {
        if let Some((el, _)) = self.stack.last_mut() {
            el.text.push_str(&t.content());
        }
        Ok(())
    }
}

/// XML names: no whitespace, controls or markup characters, not starting with a digit,
/// `-` or `.` (quick-xml is lenient here; our output must stay well-formed).
fn check_name(name: &str) -> Result<(), XmlError> {
    /// Bytes no name may hold (one table lookup per byte: this runs for every name read).
    const BAD: [bool; 256] = {
        let mut t = [false; 256];
        let mut b = 0;
        while b <= b' ' as usize {
            t[b] = true;
            b += 1;
        }
        let marks = *b"<>&\"'=/!?\x7f";
        let mut i = 0;
        while i < marks.len() {
            t[marks[i] as usize] = true;
            i += 1;
        }
        t
    };
    let bad_start = name
        .bytes()
        .next()
        .is_none_or(|b| b.is_ascii_digit() || b == b'-' || b == b'.');
    if bad_start || name.bytes().any(|b| BAD[b as usize]) {
        return Err(XmlError::Name(name.to_owned()));
    }
    Ok(())
}

/// Refuse the control characters XML 1.0 forbids (tab, LF and CR are allowed).
fn check_chars(s: &str) -> Result<(), XmlError> {
    match s
        .bytes()
        .find(|&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))
    {
        Some(b) => Err(XmlError::Char(u32::from(b))),
        None => Ok(()),
    }
}

/// [`check_chars`] and whether `s` is all white space, in one pass (this runs for every
/// run of text read).
fn check_text(s: &str) -> Result<bool, XmlError> {
    // Without an early exit the test vectorises; the error path finds the byte again.
    let forbidden = |b: u8| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r');
    if s.bytes().fold(false, |any, b| any | forbidden(b)) {
        check_chars(s)?;
    }
    Ok(s.bytes().all(|b| b.is_ascii_whitespace()))
}

fn trim_in_place(s: &mut String) {
    let end = s.trim_end().len();
    s.truncate(end);
    let start = s.len() - s.trim_start().len();
    if start > 0 {
        s.drain(..start);
    }
}

/// Serialise `root` canonically, declaring `namespace` as the default namespace on it.
pub fn emit(root: &Element, namespace: &str) -> String {
    let mut w = XmlWriter::document(namespace);
    w.element(root);
    w.finish()
}

/// The XML declaration every message we write starts with.
pub(crate) const DECLARATION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// Streaming canonical XML writer. Start tags stay open until the first child or text, so
/// empty elements come out self-closed without knowing in advance.
#[derive(Debug)]
pub struct XmlWriter<'n> {
    out: String,
    /// A start tag is open (`<name attr="v"` written, `>` not yet).
    open: bool,
    /// The namespace still to declare on the next (root) element (borrowed: the writer
    /// lives only while one message is written).
    pending_ns: Option<&'n str>,
}

impl<'n> XmlWriter<'n> {
    /// A writer for a whole document whose root declares `namespace`.
    pub fn document(namespace: &'n str) -> Self {
        let mut out = String::with_capacity(1024);
        out.push_str(DECLARATION);
        XmlWriter {
            out,
            open: false,
            pending_ns: Some(namespace),
        }
    }

    /// A writer for a fragment (no declaration, no namespace).
    pub fn fragment() -> Self {
        XmlWriter {
            out: String::new(),
            open: false,
            pending_ns: None,
        }
    }

    fn close_start(&mut self) {
        if self.open {
            self.out.push('>');
            self.open = false;
        }
    }

    /// Open an element.
    pub fn start(&mut self, name: &str) {
        self.close_start();
        self.out.push('<');
        self.out.push_str(name);
        self.open = true;
        if let Some(ns) = self.pending_ns.take() {
            self.attr("xmlns", ns);
        }
    }

    /// An attribute of the element just opened.
    pub fn attr(&mut self, k: &str, v: &str) {
        debug_assert!(self.open, "attribute written outside a start tag");
        self.out.push(' ');
        self.out.push_str(k);
        self.out.push_str("=\"");
        escape_into(&mut self.out, v, true);
        self.out.push('"');
    }

    /// An attribute if present.
    pub fn attr_opt(&mut self, k: &str, v: &Option<String>) {
        if let Some(v) = v {
            self.attr(k, v);
        }
    }

    /// Several attributes.
    pub fn attrs(&mut self, attrs: &[(Name, String)]) {
        for (k, v) in attrs {
            self.attr(k, v);
        }
    }

    /// Text content of the current element (nothing if empty).
    pub fn text(&mut self, t: &str) {
        if t.is_empty() {
            return;
        }
        self.close_start();
        escape_into(&mut self.out, t, false);
    }

    /// Close the current element.
    pub fn end(&mut self, name: &str) {
        if self.open {
            self.out.push_str("/>");
            self.open = false;
        } else {
            self.out.push_str("</");
            self.out.push_str(name);
            self.out.push('>');
        }
    }

    /// `<name>text</name>`.
    pub fn text_element(&mut self, name: &str, text: &str) {
        self.start(name);
        self.text(text);
        self.end(name);
    }

    /// A whole element tree.
    pub fn element(&mut self, el: &Element) {
        self.start(&el.name);
        self.attrs(&el.attrs);
        self.text(&el.text);
        for c in &el.children {
            self.element(c);
        }
        self.end(&el.name);
    }

    /// The text written so far.
    pub fn finish(mut self) -> String {
        self.close_start();
        self.out
    }
}

/// Byte classes for escaping: 0 = copy, 1 = special in text, 2 = special in attributes,
/// 3 = special in both.
const ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b'<' as usize] = 3;
    t[b'&' as usize] = 3;
    t[b'\r' as usize] = 3;
    t[b'>' as usize] = 1;
    t[b'"' as usize] = 2;
    t[b'\t' as usize] = 2;
    t[b'\n' as usize] = 2;
    t
};

/// `s` escaped onto `out`, for an attribute value (`in_attr`, with no quotes around) or
/// for text: what [`XmlWriter`] writes, and the splicing codec, which writes the envelope
/// as `XmlWriter` does and copies the rest.
pub(crate) fn escape_into(out: &mut String, s: &str, in_attr: bool) {
    escape_with(out, s, if in_attr { 2 } else { 1 });
}

/// Where escaping may begin in `s` for class `class` (as [`ESCAPE`] has them): no byte
/// before it is special. Most values (IDs, tokens, session IDs) have nothing to escape: a
/// search 16 bytes at a time says so. It stops at the special bytes and at the control
/// characters around them (one bound tests those, where a byte each costs more); the caller
/// copies what is not special.
fn first_to_escape(s: &[u8], class: u8) -> Option<usize> {
    debug_assert!(matches!(class, 1 | 2), "escape class {class}");
    if class == 1 {
        // `\r`, and tab and line feed with it.
        super::swar::first_of(s, [b'<', b'&', b'>'], b'\r' + 1)
    } else {
        // Tab, line feed and `\r`.
        super::swar::first_of(s, [b'<', b'&', b'"'], 0x20)
    }
}

/// Copy `s` to `out`, escaping the bytes of class `class`; other runs are copied whole.
fn escape_with(out: &mut String, s: &str, class: u8) {
    let Some(first) = first_to_escape(s.as_bytes(), class) else {
        out.push_str(s);
        return;
    };
    out.push_str(&s[..first]);
    let mut last = first;
    for (i, &b) in s.as_bytes().iter().enumerate().skip(first) {
        if ESCAPE[b as usize] & class == 0 {
            continue;
        }
        out.push_str(&s[last..i]);
        out.push_str(match b {
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'&' => "&amp;",
            b'"' => "&quot;",
            // Raw tab/newline in attributes and CR anywhere would be normalised away by the
            // next parser; character references survive.
            b'\t' => "&#9;",
            b'\n' => "&#10;",
            _ => "&#13;",
        });
        last = i + 1;
    }
    out.push_str(&s[last..]);
}

/// Render an element (without declaration or namespace) for logs and error messages.
pub fn fragment(el: &Element) -> String {
    let mut w = XmlWriter::fragment();
    w.element(el);
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssp(ns: &str) -> bool {
        ns.contains("SSP")
    }

    fn p(s: &str) -> Result<Document, XmlError> {
        parse(s.as_bytes(), &Limits::default(), &ssp)
    }

    #[test]
    fn the_escape_check_stops_at_every_special_byte_and_only_at_controls_besides() {
        for b in 0..=255u8 {
            for class in [1, 2] {
                let special = ESCAPE[b as usize] & class != 0;
                let mut long = vec![b'a'; 100];
                long[57] = b;
                let found = |s: &[u8]| first_to_escape(s, class);
                if special {
                    assert_eq!(found(&[b]), Some(0), "byte {b} class {class}");
                    assert_eq!(found(&long), Some(57), "byte {b} class {class}");
                } else if b >= 0x20 {
                    assert_eq!(found(&[b]), None, "byte {b} class {class}");
                    assert_eq!(found(&long), None, "byte {b} class {class}");
                }
            }
        }
    }

    /// [`escape_with`], byte by byte.
    fn naive_escape(s: &str, class: u8) -> String {
        let mut out = String::new();
        for c in s.chars() {
            let special = c.is_ascii() && ESCAPE[c as usize] & class != 0;
            match c {
                '<' if special => out.push_str("&lt;"),
                '>' if special => out.push_str("&gt;"),
                '&' if special => out.push_str("&amp;"),
                '"' if special => out.push_str("&quot;"),
                '\t' if special => out.push_str("&#9;"),
                '\n' if special => out.push_str("&#10;"),
                '\r' if special => out.push_str("&#13;"),
                c => out.push(c),
            }
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn escaping_is_the_byte_by_byte_escaping(b in crate::ssp::swar::spiky_bytes()) {
            let s = String::from_utf8_lossy(&b);
            for class in [1, 2] {
                let mut out = String::new();
                escape_with(&mut out, &s, class);
                proptest::prop_assert_eq!(out, naive_escape(&s, class));
            }
        }
    }

    #[test]
    fn parses_and_trims_baraza_layout() {
        let d = p("<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n <A x=\"1\">\n\nabc\r\n\n</A> \n</WV-SSP-Message> \n").unwrap();
        assert_eq!(
            d.namespace.as_deref(),
            Some("http://www.openmobilealliance.org/DTD/WV-SSP1.3")
        );
        assert_eq!(d.root.children[0].text, "abc");
        assert_eq!(d.root.children[0].attr("x"), Some("1"));
    }

    #[test]
    fn drops_ssp_prefix_keeps_vendor_prefix() {
        let d = p(r#"<wv:WV-SSP-Message xmlns:wv="urn:SSP" xmlns:v="urn:vendor"><wv:Session/><v:Thing a="1"/></wv:WV-SSP-Message>"#).unwrap();
        assert_eq!(d.root.name, "WV-SSP-Message");
        assert_eq!(d.root.children[0].name, "Session");
        assert_eq!(d.root.children[1].name, "v:Thing");
        assert_eq!(d.root.attr("xmlns:v"), Some("urn:vendor"));
    }

    #[test]
    fn resolves_predefined_and_char_refs() {
        let d =
            p(r#"<R xmlns="urn:SSP" a="x&amp;y&#65;"><T>a &lt;b&gt; &#x263A;</T></R>"#).unwrap();
        assert_eq!(d.root.attr("a"), Some("x&yA"));
        assert_eq!(d.root.children[0].text, "a <b> \u{263A}");
    }

    #[test]
    fn refuses_doctype_and_entities() {
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><lolz>&lol2;</lolz>"#;
        assert_eq!(p(bomb), Err(XmlError::Doctype));
        assert!(matches!(p("<R>&ext;</R>"), Err(XmlError::Entity(n)) if n == "ext"));
        assert!(matches!(p(r#"<R a="&ext;"/>"#), Err(XmlError::Entity(n)) if n == "ext"));
    }

    #[test]
    fn consumed_namespace_declarations_do_not_count_as_attributes() {
        let attrs: String = (0..32).map(|i| format!(" a{i}=\"\"")).collect();
        let body = format!("<M xmlns=\"urn:SSP\"{attrs}/>");
        assert_eq!(p(&body).expect("32 attributes kept").root.attrs.len(), 32);
        let body = format!("<M xmlns=\"urn:SSP\"{attrs} b=\"\"/>");
        assert!(matches!(p(&body), Err(XmlError::TooManyAttrs(..))));
    }

    #[test]
    fn enforces_limits() {
        let l = Limits {
            max_depth: 3,
            max_attrs: 2,
            max_attr_len: 4,
            max_text_len: 5,
            max_elements: 5,
            max_transactions: 1,
            max_body: 200,
        };
        let run = |s: &str| parse(s.as_bytes(), &l, &ssp);
        assert_eq!(run("<a><b><c><d/></c></b></a>"), Err(XmlError::TooDeep(3)));
        assert!(matches!(
            run(r#"<a x="1" y="2" z="3"/>"#),
            Err(XmlError::TooManyAttrs(..))
        ));
        assert!(matches!(
            run(r#"<a x="12345"/>"#),
            Err(XmlError::AttrTooLong(..))
        ));
        assert!(matches!(
            run("<a>123456</a>"),
            Err(XmlError::TextTooLong(..))
        ));
        assert_eq!(
            run("<a><b/><b/><b/><b/><b/></a>"),
            Err(XmlError::TooManyElements(5))
        );
        assert_eq!(
            run("<a><Transaction/><Transaction/></a>"),
            Err(XmlError::TooManyTransactions(1))
        );
        assert!(matches!(
            run(&"x".repeat(201)),
            Err(XmlError::BodyTooLarge(201, 200))
        ));
    }

    #[test]
    fn rejects_control_characters_and_bad_names() {
        assert_eq!(p("<a b=\"x\u{1}\"/>"), Err(XmlError::Char(1)));
        assert_eq!(p("<a>x\u{0}</a>"), Err(XmlError::Char(0)));
        assert!(matches!(
            p("<a mo\u{0}d=\"1\"/>"),
            Err(XmlError::Name(_) | XmlError::Syntax { .. })
        ));
        assert!(matches!(
            p("<a 1b=\"1\"/>"),
            Err(XmlError::Name(_) | XmlError::Syntax { .. })
        ));
        assert!(p("<a>\t\r\n</a>").is_ok());
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!(p("<a><b></a>"), Err(XmlError::Syntax { .. })));
        assert!(p("").is_err());
        assert!(p("<a/><b/>").is_err());
        assert!(matches!(
            p("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a/>"),
            Err(XmlError::Encoding(_))
        ));
        assert_eq!(
            parse(&[0x3c, 0xff, 0x3e], &Limits::default(), &ssp),
            Err(XmlError::NotUtf8)
        );
    }

    #[test]
    fn emits_canonically_and_round_trips() {
        let d = p("<R xmlns=\"urn:SSP\"><A k=\"a&quot;&lt;\n\">t&amp;<B/></A></R>").unwrap();
        let out = emit(&d.root, "urn:SSP");
        assert_eq!(
            out,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><R xmlns=\"urn:SSP\"><A k=\"a&quot;&lt; \">t&amp;<B/></A></R>"
        );
        let again = p(&out).unwrap();
        assert_eq!(again, d);
    }
}
