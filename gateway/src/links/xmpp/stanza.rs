//! XMPP stanzas as values: what the framer cut, parsed (through the one XML module, with the
//! limits an SSP body has) into an element tree whose names carry their namespace; stanzas
//! and stream elements written back; JIDs, and XEP-0106 escaping of the localparts IMPS user
//! names become.
//!
//! Each stanza is parsed alone, outside the stream document that declared its prefixes, so
//! the namespace of a name is worked out here: its own `xmlns`, else the prefix the stream
//! header bound (`db:` for dialback, `stream:`), else the stream's default (`jabber:server`).

use crate::ssp::xml::{self, Element, Limits, XmlWriter};

/// The server-to-server content namespace (RFC 6120 §4.8.3).
pub const NS_SERVER: &str = "jabber:server";
/// The client content namespace: not ours, but stanzas copied from clients may declare it.
const NS_CLIENT: &str = "jabber:client";
/// The streams namespace.
pub const NS_STREAM: &str = "http://etherx.jabber.org/streams";
/// Server Dialback (XEP-0220).
pub const NS_DIALBACK: &str = "jabber:server:dialback";
/// The dialback stream feature.
pub const NS_DIALBACK_FEATURE: &str = "urn:xmpp:features:dialback";
/// STARTTLS.
pub const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// SASL.
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// Stanza error conditions.
pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// Stream error conditions.
pub const NS_STREAMS_ERR: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// Message delivery receipts (XEP-0184).
pub const NS_RECEIPTS: &str = "urn:xmpp:receipts";
/// XMPP ping (XEP-0199).
pub const NS_PING: &str = "urn:xmpp:ping";

/// Why a stanza or header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StanzaError {
    /// Not well-formed, or beyond a limit.
    #[error("{0}")]
    Xml(#[from] xml::XmlError),
    /// A stream header that is not one (`invalid-namespace`).
    #[error("{0}")]
    Header(String),
}

/// The limits for one stanza of at most `max` bytes. A stanza over one ends its stream
/// (RFC 6120 §4.9.3.13), so they leave room for what servers legitimately carry (XHTML-IM
/// bodies, a few namespaced extensions) and bound only what no real stanza needs.
pub fn limits(max: usize) -> Limits {
    Limits {
        max_body: max,
        max_depth: 16,
        max_attrs: 64,
        max_attr_len: 3072,
        max_text_len: max,
        max_elements: 4096,
        max_transactions: 0,
    }
}

/// The stream header's attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// `from` (the initiating server's domain; RFC 6120 says SHOULD).
    pub from: Option<String>,
    /// `to` (the domain the stream is for).
    pub to: Option<String>,
    /// `id` (set by the receiving side).
    pub id: Option<String>,
    /// Whether it says `version='1.0'` (stream features follow).
    pub v1: bool,
    /// The prefix bound to the dialback namespace, if any.
    pub db_prefix: Option<String>,
    /// The prefix bound to the streams namespace.
    pub stream_prefix: String,
}

/// Parse the header start tag the framer cut.
pub fn header(raw: &[u8], max: usize) -> Result<Header, StanzaError> {
    // The open start tag, closed, is a document of its own.
    let mut closed = raw.to_vec();
    if closed.last() == Some(&b'>') {
        closed.pop();
        closed.extend_from_slice(b"/>");
    }
    let doc = xml::parse(&closed, &limits(max), &|_| false)?;
    let el = doc.root;
    let (prefix, local) = el.name.split_once(':').unwrap_or(("", &el.name));
    let declared = |p: &str| {
        let key = if p.is_empty() {
            "xmlns".to_owned()
        } else {
            format!("xmlns:{p}")
        };
        el.attr(&key).map(str::to_owned)
    };
    if local != "stream" || declared(prefix).as_deref() != Some(NS_STREAM) {
        return Err(StanzaError::Header(format!(
            "<{}> is not a stream header",
            el.name
        )));
    }
    if el.attr("xmlns") != Some(NS_SERVER) {
        return Err(StanzaError::Header(format!(
            "the stream's content namespace is {:?}, not {NS_SERVER}",
            el.attr("xmlns").unwrap_or("")
        )));
    }
    let db_prefix = el.attrs.iter().find_map(|(k, v)| {
        k.strip_prefix("xmlns:")
            .filter(|_| v == NS_DIALBACK)
            .map(str::to_owned)
    });
    Ok(Header {
        from: el.attr("from").map(str::to_ascii_lowercase),
        to: el.attr("to").map(str::to_ascii_lowercase),
        id: el.attr("id").map(str::to_owned),
        v1: el.attr("version") == Some("1.0"),
        db_prefix,
        stream_prefix: prefix.to_owned(),
    })
}

/// A parsed stanza (or stream-level element): its namespace and local name, and the tree.
#[derive(Debug, Clone)]
pub struct Stanza {
    /// Its namespace.
    pub ns: String,
    /// Its local name.
    pub local: String,
    /// The element as parsed (names as written).
    pub el: Element,
}

impl Stanza {
    /// Whether it is `local` in `ns`.
    pub fn is(&self, ns: &str, local: &str) -> bool {
        self.ns == ns && self.local == local
    }

    /// An attribute.
    pub fn attr(&self, k: &str) -> Option<&str> {
        self.el.attr(k)
    }

    /// Its first child `local` in `ns` (children inherit the stanza's namespace).
    pub fn child(&self, ns: &str, local: &str) -> Option<&Element> {
        self.el
            .children
            .iter()
            .find(|c| child_name(c, &self.ns) == (ns, local))
    }
}

/// The (namespace, local name) of child `c` of an element in `parent_ns`.
pub fn child_name<'a>(c: &'a Element, parent_ns: &'a str) -> (&'a str, &'a str) {
    let local = c.name.rsplit(':').next().unwrap_or(&c.name);
    (c.attr("xmlns").unwrap_or(parent_ns), local)
}

/// Parse one stanza the framer cut, with the prefixes `h` bound.
pub fn parse(raw: &[u8], h: &Header, max: usize) -> Result<Stanza, StanzaError> {
    let doc = xml::parse(raw, &limits(max), &|ns| ns == NS_SERVER || ns == NS_CLIENT)?;
    let el = doc.root;
    let (ns, local) = match el.name.split_once(':') {
        Some((p, l)) => {
            let ns = el
                .attr(&format!("xmlns:{p}"))
                .map(str::to_owned)
                .or_else(|| (h.db_prefix.as_deref() == Some(p)).then(|| NS_DIALBACK.to_owned()))
                .or_else(|| (h.stream_prefix == p).then(|| NS_STREAM.to_owned()))
                .unwrap_or_default();
            (ns, l.to_owned())
        }
        None => (
            el.attr("xmlns")
                .filter(|n| *n != NS_CLIENT)
                .unwrap_or(NS_SERVER)
                .to_owned(),
            el.name.to_string(),
        ),
    };
    Ok(Stanza { ns, local, el })
}

/// Our stream header: from our domain to `to`, with `id` when we are the receiving side.
pub fn open(from: &str, to: Option<&str>, id: Option<&str>) -> String {
    let mut w = XmlWriter::fragment();
    w.start("stream:stream");
    w.attr("xmlns", NS_SERVER);
    w.attr("xmlns:stream", NS_STREAM);
    w.attr("xmlns:db", NS_DIALBACK);
    w.attr("from", from);
    if let Some(t) = to {
        w.attr("to", t);
    }
    if let Some(i) = id {
        w.attr("id", i);
    }
    w.attr("version", "1.0");
    // A header is a start tag left open: the writer closes it with the first content.
    w.text(" ");
    let mut s = w.finish();
    s.truncate(s.trim_end().len());
    format!("<?xml version='1.0'?>{s}")
}

/// A stream error with `condition`, and the stream's end (RFC 6120 §4.9).
pub fn stream_error(condition: &str, text: &str) -> String {
    let mut w = XmlWriter::fragment();
    w.start("stream:error");
    w.start(condition);
    w.attr("xmlns", NS_STREAMS_ERR);
    w.end(condition);
    if !text.is_empty() {
        w.start("text");
        w.attr("xmlns", NS_STREAMS_ERR);
        w.text(text);
        w.end("text");
    }
    w.end("stream:error");
    let mut s = w.finish();
    s.push_str("</stream:stream>");
    s
}

/// An element in namespace `ns` with attributes, as text.
pub fn empty(name: &str, ns: &str, attrs: &[(&str, &str)]) -> String {
    let mut w = XmlWriter::fragment();
    w.start(name);
    if !ns.is_empty() {
        w.attr("xmlns", ns);
    }
    for (k, v) in attrs {
        w.attr(k, v);
    }
    w.end(name);
    w.finish()
}

/// `el` as text.
pub fn write(el: &Element) -> String {
    let mut w = XmlWriter::fragment();
    w.element(el);
    w.finish()
}

/// A child element `name` in namespace `ns`.
pub fn ns_el(name: &'static str, ns: &'static str) -> Element {
    let mut e = Element::new(name);
    e.attrs.push(("xmlns".into(), ns.to_owned()));
    e
}

/// A stanza error (RFC 6120 §8.3) answering `orig` (a `message`, `presence` or `iq`), from
/// `from`, with `condition` of `kind` (`cancel`, `wait`, `modify`, `auth`).
pub fn error_reply(orig: &Stanza, from: &str, kind: &str, condition: &'static str) -> Element {
    let mut e = Element::new(match orig.local.as_str() {
        "presence" => "presence",
        "iq" => "iq",
        _ => "message",
    });
    e.attrs.push(("from".into(), from.to_owned()));
    if let Some(to) = orig.attr("from") {
        e.attrs.push(("to".into(), to.to_owned()));
    }
    if let Some(id) = orig.attr("id") {
        e.attrs.push(("id".into(), id.to_owned()));
    }
    e.attrs.push(("type".into(), "error".into()));
    let mut err = Element::new("error");
    err.attrs.push(("type".into(), kind.to_owned()));
    e.with_child(err.with_child(ns_el(condition, NS_STANZAS)))
}

/// The stanza error condition of an error stanza, if it says one.
pub fn error_condition(s: &Stanza) -> Option<String> {
    let err = s.child(&s.ns, "error")?;
    err.children
        .iter()
        .find(|c| c.attr("xmlns") == Some(NS_STANZAS) && !c.name.ends_with("text"))
        .map(|c| c.name.rsplit(':').next().unwrap_or(&c.name).to_owned())
}

/// A JID cut into its parts (RFC 7622), lowercase domain; `None` if it is no JID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jid {
    /// The localpart (as on the wire, escaped).
    pub local: Option<String>,
    /// The domainpart.
    pub domain: String,
    /// The resourcepart.
    pub resource: Option<String>,
}

impl Jid {
    /// Parse `s`.
    pub fn parse(s: &str) -> Option<Jid> {
        if s.is_empty() || s.len() > 3071 {
            return None;
        }
        let (bare, resource) = match s.split_once('/') {
            Some((b, r)) if !r.is_empty() => (b, Some(r.to_owned())),
            Some(_) => return None,
            None => (s, None),
        };
        let (local, domain) = match bare.split_once('@') {
            Some((l, d)) if !l.is_empty() => (Some(l.to_owned()), d),
            Some(_) => return None,
            None => (None, bare),
        };
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if domain.is_empty()
            || local.as_deref().is_some_and(|l| {
                l.len() > 1023
                    || l.chars()
                        .any(|c| "\"&'/:<>@".contains(c) || c.is_whitespace())
            })
            || !crate::resolve::is_host_name(&domain)
        {
            return None;
        }
        Some(Jid {
            local,
            domain,
            resource,
        })
    }

    /// The bare JID (`local@domain`).
    pub fn bare(&self) -> String {
        match &self.local {
            Some(l) => format!("{l}@{}", self.domain),
            None => self.domain.clone(),
        }
    }
}

/// The bare JID a destination is reached at: the one ENUM's URI names (`xmpp:` per
/// RFC 5122, or the address of an `im:`/`pres:` URI), else route-by value `what` (a
/// `wv:` ID) at `domain`: its number (`+MSISDN@domain`) or its user name, escaped.
pub fn target_jid(enum_uri: Option<&str>, what: &str, domain: &str) -> Option<String> {
    if let Some(uri) = enum_uri {
        let (scheme, rest) = uri.split_once(':')?;
        if ["xmpp", "im", "pres"]
            .iter()
            .any(|s| scheme.eq_ignore_ascii_case(s))
        {
            let rest = rest.trim_start_matches("//");
            let rest = rest.split(['?', '#']).next().unwrap_or(rest);
            let j = Jid::parse(rest)?;
            if j.local.is_some() {
                return Some(j.bare());
            }
        }
    }
    let id = crate::ssp::ids::WvId::parse(what).ok()?;
    let local = match id.e164() {
        Some(n) => format!("+{}", n.digits()),
        None if id.is_user() => escape(&id.user),
        None => return None,
    };
    Jid::parse(&format!("{local}@{domain}")).map(|j| j.bare())
}

/// XEP-0106: escape an IMPS user name as a JID localpart.
pub fn escape(local: &str) -> String {
    let mut out = String::with_capacity(local.len());
    for c in local.chars() {
        match c {
            ' ' => out.push_str("\\20"),
            '"' => out.push_str("\\22"),
            '&' => out.push_str("\\26"),
            '\'' => out.push_str("\\27"),
            '/' => out.push_str("\\2f"),
            ':' => out.push_str("\\3a"),
            '<' => out.push_str("\\3c"),
            '>' => out.push_str("\\3e"),
            '@' => out.push_str("\\40"),
            '\\' => out.push_str("\\5c"),
            c => out.push(c),
        }
    }
    out
}

/// XEP-0106: the user name an escaped localpart stands for.
pub fn unescape(local: &str) -> String {
    let mut out = String::with_capacity(local.len());
    let mut rest = local;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let seq = rest.get(i + 1..i + 3);
        let ch = match seq.map(str::to_ascii_lowercase).as_deref() {
            Some("20") => Some(' '),
            Some("22") => Some('"'),
            Some("26") => Some('&'),
            Some("27") => Some('\''),
            Some("2f") => Some('/'),
            Some("3a") => Some(':'),
            Some("3c") => Some('<'),
            Some("3e") => Some('>'),
            Some("40") => Some('@'),
            Some("5c") => Some('\\'),
            _ => None,
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &rest[i + 3..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn h() -> Header {
        header(
            b"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' \
              xmlns:db='jabber:server:dialback' from='B.example' to='a.example' id='x1' version='1.0'>",
            4096,
        )
        .unwrap()
    }

    #[test]
    fn header_and_namespaces_are_worked_out() {
        let h = h();
        assert_eq!(h.from.as_deref(), Some("b.example"));
        assert_eq!(h.id.as_deref(), Some("x1"));
        assert!(h.v1);
        assert_eq!(h.db_prefix.as_deref(), Some("db"));
        let s = parse(
            b"<db:result from='b.example' to='a.example'>k</db:result>",
            &h,
            4096,
        )
        .unwrap();
        assert!(s.is(NS_DIALBACK, "result"));
        let s = parse(b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features>", &h, 4096).unwrap();
        assert!(s.is(NS_STREAM, "features"));
        assert!(s.child(NS_TLS, "starttls").is_some());
        let s = parse(b"<message to='a@a.example'><body> hi </body><request xmlns='urn:xmpp:receipts'/></message>", &h, 4096).unwrap();
        assert!(s.is(NS_SERVER, "message"));
        assert_eq!(s.child(NS_SERVER, "body").unwrap().text, "hi");
        assert!(s.child(NS_RECEIPTS, "request").is_some());
        // A client header is not a server stream.
        assert!(header(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>", 4096).is_err());
        assert!(header(b"<stream xmlns='jabber:server'>", 4096).is_err());
        // Entities and DOCTYPEs are refused in a stanza as in an SSP body.
        assert!(parse(b"<message>&xxe;</message>", &h, 4096).is_err());
    }

    #[test]
    fn our_header_parses_back() {
        let o = open("a.example", Some("b.example"), Some("id&1"));
        let back = header(
            o.trim_start_matches("<?xml version='1.0'?>").as_bytes(),
            4096,
        )
        .unwrap();
        assert_eq!(back.from.as_deref(), Some("a.example"));
        assert_eq!(back.to.as_deref(), Some("b.example"));
        assert_eq!(back.id.as_deref(), Some("id&1"));
        assert!(!o.contains("/>"), "{o}");
    }

    #[test]
    fn jids_and_escaping() {
        let j = Jid::parse("+4915112345678@OPB.example/phone").unwrap();
        assert_eq!(j.local.as_deref(), Some("+4915112345678"));
        assert_eq!(j.domain, "opb.example");
        assert_eq!(j.bare(), "+4915112345678@opb.example");
        assert!(Jid::parse("a@b@c").is_none());
        assert!(Jid::parse("@b").is_none());
        assert!(Jid::parse("a@").is_none());
        assert!(Jid::parse("a@b/").is_none());
        for name in [
            "d'artagnan",
            "joe smith",
            "c:\\net",
            "a@b/c<>&\"",
            "plain",
            "\\20x",
        ] {
            let e = escape(name);
            assert!(Jid::parse(&format!("{e}@x.example")).is_some(), "{e}");
            assert_eq!(unescape(&e), name);
        }
        assert_eq!(escape("joe smith"), "joe\\20smith");
        assert_eq!(
            target_jid(
                Some("xmpp:+4915112345678@opb.example?message"),
                "wv:+4915112345678",
                "x"
            )
            .as_deref(),
            Some("+4915112345678@opb.example")
        );
        assert_eq!(
            target_jid(None, "wv:+4915112345678", "opb.example").as_deref(),
            Some("+4915112345678@opb.example")
        );
        assert_eq!(
            target_jid(None, "wv:joe@opb.example", "opb.example").as_deref(),
            Some("joe@opb.example")
        );
        assert_eq!(unescape("a\\zz"), "a\\zz");
    }
}
