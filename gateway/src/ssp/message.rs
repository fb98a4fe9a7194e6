//! The SSP envelope (`PROTOCOL.md` §2): `WV-SSP-Message` holding either a `SetupTransaction`
//! (association) or a `Session` of `Transaction`s, each with exactly one primitive.
//!
//! [`Codec::parse`] is liberal in what it accepts and reports every refusal as a [`ParseError`]
//! whose text becomes the `StatusDescription` of an SSP `Status code="400"`. A transaction that is
//! broken on its own (no `transactionID`, no primitive) does not sink its siblings: it lands in
//! [`Session::rejected`] so the relay can answer it with its own 400.

use super::common::{Attrs, Ext};
use super::primitives::{Primitive, SetupPrimitive};
use super::xml::{self, Element, Limits, XmlError, XmlWriter};

/// `http://www.openmobilealliance.org/DTD/WV-SSP1.3`: Baraza's, and our default output.
pub const NS_WV_SSP_13: &str = "http://www.openmobilealliance.org/DTD/WV-SSP1.3";

/// The namespaces accepted on input without configuration (`PROTOCOL.md` §2).
pub const ACCEPTED_NAMESPACES: &[&str] = &[
    NS_WV_SSP_13,
    "http://www.openmobilealliance.org/DTD/IMPS-SSP1.3",
    "http://www.openmobilealliance.org/DTD/WV-SSP1.2",
    "http://www.wireless-village.org/SSP1.1",
];

/// Request or response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// `mode="Request"`.
    Request,
    /// `mode="Response"`.
    Response,
}

impl Mode {
    pub(crate) fn parse(s: &str) -> Option<Mode> {
        // As written, almost always: no trimming nor case folding to do.
        match s {
            "Request" => return Some(Mode::Request),
            "Response" => return Some(Mode::Response),
            _ => {}
        }
        let s = s.trim();
        if s.eq_ignore_ascii_case("Request") {
            Some(Mode::Request)
        } else if s.eq_ignore_ascii_case("Response") {
            Some(Mode::Response)
        } else {
            None
        }
    }

    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Request => "Request",
            Mode::Response => "Response",
        }
    }
}

/// One transaction of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// Request or response.
    pub mode: Mode,
    /// `transactionID`, never empty.
    pub transaction_id: String,
    /// The primitive.
    pub primitive: Primitive,
    /// Unknown attributes and extra children.
    pub ext: Ext,
}

impl Transaction {
    /// A request transaction.
    pub fn request(tid: impl Into<String>, primitive: Primitive) -> Self {
        Transaction {
            mode: Mode::Request,
            transaction_id: tid.into(),
            primitive,
            ext: Ext::default(),
        }
    }

    /// A response transaction.
    pub fn response(tid: impl Into<String>, primitive: Primitive) -> Self {
        Transaction {
            mode: Mode::Response,
            transaction_id: tid.into(),
            primitive,
            ext: Ext::default(),
        }
    }
}

/// A transaction that could not be accepted, with what is known of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedTransaction {
    /// Its `transactionID`, if it had one.
    pub transaction_id: Option<String>,
    /// Its mode, if valid.
    pub mode: Option<Mode>,
    /// Why.
    pub reason: String,
}

/// `Session@sessionID` with its transactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// `sessionID` as written by the sender (its own session ID, `<id>@<domain>`).
    pub session_id: String,
    /// The acceptable transactions, in order.
    pub transactions: Vec<Transaction>,
    /// Transactions refused individually (never emitted).
    pub rejected: Vec<RejectedTransaction>,
    /// Unknown attributes and non-transaction children.
    pub ext: Ext,
}

/// `SetupTransaction` (association).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupTransaction {
    /// Request or response.
    pub mode: Mode,
    /// `transactionID`.
    pub transaction_id: String,
    /// The primitive.
    pub primitive: SetupPrimitive,
    /// Unknown content.
    pub ext: Ext,
}

/// The first child of the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Association.
    Setup(SetupTransaction),
    /// Session traffic.
    Session(Session),
}

/// A whole SSP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The SSP namespace it arrived with (`None`: none declared). The emitter takes the
    /// namespace to write as a parameter, per peer.
    pub namespace: Option<String>,
    /// The body.
    pub body: Body,
    /// Unknown root attributes (e.g. `xmlns:xsi`) and children after the body.
    pub ext: Ext,
}

/// Why a body is not an acceptable SSP message. Maps to SSP `Status code="400"` (HTTP 400;
/// [`ParseError::Xml`] with `BodyTooLarge` maps to HTTP 413).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// XML-level problem or limit.
    #[error("{0}")]
    Xml(#[from] XmlError),
    /// Root is not `WV-SSP-Message`.
    #[error("root element is <{0}>, expected <WV-SSP-Message>")]
    Root(String),
    /// Namespace not accepted.
    #[error("namespace {0:?} is not an accepted SSP namespace")]
    Namespace(String),
    /// First child is neither `SetupTransaction` nor `Session`.
    #[error("<WV-SSP-Message> must start with <SetupTransaction> or <Session>, found {0}")]
    Body(String),
    /// SetupTransaction problems.
    #[error("SetupTransaction: {0}")]
    Setup(String),
}

impl ParseError {
    /// Whether the HTTP answer is 413 (body too large) rather than 400.
    pub fn is_too_large(&self) -> bool {
        matches!(self, ParseError::Xml(XmlError::BodyTooLarge(..)))
    }
}

/// Parser configuration: limits and accepted namespaces.
#[derive(Debug, Clone, Default)]
pub struct Codec {
    /// Hard limits.
    pub limits: Limits,
    /// Namespaces accepted in addition to [`ACCEPTED_NAMESPACES`].
    pub extra_namespaces: Vec<String>,
}

impl Codec {
    /// Whether `ns` is an SSP namespace we accept.
    pub fn is_ssp_ns(&self, ns: &str) -> bool {
        ACCEPTED_NAMESPACES.contains(&ns) || self.extra_namespaces.iter().any(|n| n == ns)
    }

    /// Parse a body.
    pub fn parse(&self, body: &[u8]) -> Result<Message, ParseError> {
        let doc = xml::parse(body, &self.limits, &|ns| self.is_ssp_ns(ns))?;
        Message::from_root(doc.root, doc.namespace)
    }
}

impl Message {
    /// Build the typed message from a parsed root element.
    pub fn from_root(root: Element, namespace: Option<String>) -> Result<Message, ParseError> {
        if root.name != "WV-SSP-Message" {
            return Err(ParseError::Root(root.name.into_owned()));
        }
        // A default namespace the parser did not consume is a foreign one.
        if let Some(ns) = root.attr("xmlns") {
            return Err(ParseError::Namespace(ns.to_owned()));
        }
        let mut children = root.children.into_iter();
        let first = children
            .next()
            .ok_or_else(|| ParseError::Body("nothing".into()))?;
        let body = match first.name.as_ref() {
            "Session" => Body::Session(parse_session(first)),
            "SetupTransaction" => Body::Setup(parse_setup(first)?),
            other => return Err(ParseError::Body(format!("<{other}>"))),
        };
        Ok(Message {
            namespace,
            body,
            ext: Ext {
                attrs: root.attrs,
                children: children.collect(),
            },
        })
    }
}

fn parse_setup(el: Element) -> Result<SetupTransaction, ParseError> {
    let mut a = Attrs::new(el.attrs);
    let mode = a
        .take(&["mode"])
        .ok_or_else(|| ParseError::Setup("missing mode".into()))?;
    let mode =
        Mode::parse(&mode).ok_or_else(|| ParseError::Setup(format!("invalid mode {mode:?}")))?;
    let transaction_id = a
        .take(&["transactionID"])
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ParseError::Setup("missing transactionID".into()))?;
    let attrs = a.rest();
    let mut children = el.children.into_iter();
    let prim = children
        .next()
        .ok_or_else(|| ParseError::Setup("no primitive".into()))?;
    Ok(SetupTransaction {
        mode,
        transaction_id,
        primitive: SetupPrimitive::from_element(prim),
        ext: Ext {
            attrs,
            children: children.collect(),
        },
    })
}

/// The longest transaction ID of a request.
pub const MAX_REQUEST_TID: usize = 255;

fn parse_session(el: Element) -> Session {
    let mut a = Attrs::new(el.attrs);
    let session_id = a.take(&["sessionID"]).unwrap_or_default().trim().to_owned();
    let mut s = Session {
        session_id,
        transactions: Vec::with_capacity(1),
        rejected: Vec::new(),
        ext: Ext::attrs(a.rest()),
    };
    for c in el.children {
        if c.name != "Transaction" {
            s.ext.children.push(c);
            continue;
        }
        let mut ta = Attrs::new(c.attrs);
        let mode_raw = ta.take(&["mode"]);
        let mode = mode_raw.as_deref().and_then(Mode::parse);
        let tid = ta
            .take(&["transactionID"])
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty());
        let reject = |reason: String| RejectedTransaction {
            transaction_id: tid.clone(),
            mode,
            reason,
        };
        let Some(transaction_id) = tid.clone() else {
            s.rejected
                .push(reject("Transaction without transactionID".into()));
            continue;
        };
        let Some(mode) = mode else {
            s.rejected.push(reject(format!(
                "Transaction {transaction_id}: invalid or missing mode {:?}",
                mode_raw.unwrap_or_default()
            )));
            continue;
        };
        // A request's ID rides inside the ID the gateway gives it onwards (its answer goes
        // back under it), where it has one length byte. Answers carry our own, longer IDs.
        if mode == Mode::Request && transaction_id.len() > MAX_REQUEST_TID {
            s.rejected.push(reject(format!(
                "transactionID is longer than {MAX_REQUEST_TID} bytes"
            )));
            continue;
        }
        let attrs = ta.rest();
        let mut prims = c.children.into_iter();
        let Some(prim) = prims.next() else {
            s.rejected.push(reject(format!(
                "Transaction {transaction_id} holds no primitive"
            )));
            continue;
        };
        s.transactions.push(Transaction {
            mode,
            transaction_id,
            primitive: Primitive::from_element(prim),
            ext: Ext {
                attrs,
                children: prims.collect(),
            },
        });
    }
    s
}

impl Message {
    /// A session message.
    pub fn session(session_id: impl Into<String>, transactions: Vec<Transaction>) -> Message {
        Message {
            namespace: None,
            body: Body::Session(Session {
                session_id: session_id.into(),
                transactions,
                rejected: Vec::new(),
                ext: Ext::default(),
            }),
            ext: Ext::default(),
        }
    }

    /// An association message.
    pub fn setup(mode: Mode, tid: impl Into<String>, primitive: SetupPrimitive) -> Message {
        Message {
            namespace: None,
            body: Body::Setup(SetupTransaction {
                mode,
                transaction_id: tid.into(),
                primitive,
                ext: Ext::default(),
            }),
            ext: Ext::default(),
        }
    }

    /// The session, if this is session traffic.
    pub fn as_session(&self) -> Option<&Session> {
        match &self.body {
            Body::Session(s) => Some(s),
            Body::Setup(_) => None,
        }
    }

    /// Write the message as XML.
    pub fn write(&self, w: &mut XmlWriter) {
        w.start("WV-SSP-Message");
        self.ext.write_attrs(w);
        match &self.body {
            Body::Session(s) => {
                w.start("Session");
                w.attr("sessionID", &s.session_id);
                s.ext.write_attrs(w);
                for t in &s.transactions {
                    w.start("Transaction");
                    w.attr("mode", t.mode.as_str());
                    w.attr("transactionID", &t.transaction_id);
                    t.ext.write_attrs(w);
                    t.primitive.write(w);
                    t.ext.write_children(w);
                    w.end("Transaction");
                }
                s.ext.write_children(w);
                w.end("Session");
            }
            Body::Setup(t) => {
                w.start("SetupTransaction");
                w.attr("mode", t.mode.as_str());
                w.attr("transactionID", &t.transaction_id);
                t.ext.write_attrs(w);
                t.primitive.write(w);
                t.ext.write_children(w);
                w.end("SetupTransaction");
            }
        }
        self.ext.write_children(w);
        w.end("WV-SSP-Message");
    }

    /// Serialise canonically with `namespace` (a peer's choice; default [`NS_WV_SSP_13`]).
    pub fn emit(&self, namespace: &str) -> String {
        let mut w = XmlWriter::document(namespace);
        self.write(&mut w);
        w.finish()
    }

    /// The root element tree (used on slow paths such as the topology scrub).
    pub fn to_element(&self) -> Element {
        let ns = self.namespace.as_deref().unwrap_or(NS_WV_SSP_13);
        let text = self.emit(ns);
        // Our own canonical output always parses; the limits are lifted for it.
        let limits = Limits {
            max_body: usize::MAX,
            max_depth: usize::MAX,
            max_attrs: usize::MAX,
            max_attr_len: usize::MAX,
            max_text_len: usize::MAX,
            max_elements: usize::MAX,
            max_transactions: usize::MAX,
        };
        match xml::parse(text.as_bytes(), &limits, &|n| n == ns) {
            Ok(doc) => doc.root,
            Err(_) => Element::new("WV-SSP-Message"),
        }
    }
}
