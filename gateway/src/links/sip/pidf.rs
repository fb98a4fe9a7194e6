//! Presence between IMPS and SIP/SIMPLE: PIDF (RFC 3863) with RPID activities (RFC 4480),
//! read and written over the SSP codec's bounded XML tree (no crate exists for it), and the
//! mapping to and from IMPS presence attributes (`PROTOCOL.md` §11):
//!
//! | IMPS | PIDF/RPID |
//! |---|---|
//! | `OnlineStatus` F | every tuple `<basic>closed</basic>` (or no tuple) |
//! | `OnlineStatus` T, `UserAvailability` AVAILABLE | a tuple `open`, no activity |
//! | T, DISCREET | `open`, `<rpid:busy/>` (read: also on-the-phone, meeting, performance, presentation) |
//! | T, NOT_AVAILABLE | `open`, `<rpid:away/>` (read: also vacation, holiday, sleeping, steering) |
//! | `StatusText` | the first `<note>` (tuple, person or presence) |
//!
//! Several tuples (Kamailio aggregates each PUBLISH into one) are online when any is open;
//! a person's activity decides availability over the tuples'.

use crate::ssp::xml::{self, Element, Limits, XmlWriter};
use crate::ssp::{Ext, PresenceValue};

/// The PIDF namespace.
pub(crate) const PIDF_NS: &str = "urn:ietf:params:xml:ns:pidf";
/// The RPID namespace.
const RPID_NS: &str = "urn:ietf:params:xml:ns:pidf:rpid";
/// The PIDF data-model namespace (`dm:person`).
const DM_NS: &str = "urn:ietf:params:xml:ns:pidf:data-model";
/// The content type of a PIDF body.
pub(crate) const CONTENT_TYPE: &str = "application/pidf+xml";
/// The longest note kept (IMPS `StatusText` is short; the rest is cut on a char boundary).
const MAX_NOTE: usize = 1024;

/// How available a user says they are, IMPS's three values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Availability {
    /// `AVAILABLE`.
    Available,
    /// `DISCREET` (busy).
    Discreet,
    /// `NOT_AVAILABLE` (away).
    NotAvailable,
}

impl Availability {
    fn imps(self) -> &'static str {
        match self {
            Availability::Available => "AVAILABLE",
            Availability::Discreet => "DISCREET",
            Availability::NotAvailable => "NOT_AVAILABLE",
        }
    }
}

/// One user's presence, as both sides can say it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Presence {
    /// Reachable for IM.
    pub(crate) online: bool,
    /// How available, when online.
    pub(crate) availability: Availability,
    /// Free text (IMPS `StatusText`, PIDF `note`).
    pub(crate) note: Option<String>,
}

impl Presence {
    /// Offline, nothing said: what an empty or pending notification means.
    pub(crate) fn offline() -> Presence {
        Presence {
            online: false,
            availability: Availability::NotAvailable,
            note: None,
        }
    }
}

/// Why a PIDF body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PidfError {
    /// Not well-formed, or beyond a limit (DOCTYPE and entities included).
    #[error("PIDF: {0}")]
    Xml(#[from] xml::XmlError),
    /// Not a `<presence>` document.
    #[error("PIDF: the root is <{0}>, not <presence>")]
    Root(String),
}

/// The limits for a PIDF body of at most `max_body` bytes: a presence document is small and
/// shallow, so much tighter than an SSP message's.
fn limits(max_body: usize) -> Limits {
    Limits {
        max_body,
        max_depth: 12,
        max_attrs: 16,
        max_attr_len: 1024,
        max_text_len: 4096,
        max_elements: 512,
        max_transactions: 0,
    }
}

fn local(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

/// Read a PIDF body (at most `max_body` bytes). An empty body is [`Presence::offline`].
pub(crate) fn parse(body: &[u8], max_body: usize) -> Result<Presence, PidfError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Presence::offline());
    }
    let doc = xml::parse(body, &limits(max_body), &|ns| ns == PIDF_NS)?;
    let root = doc.root;
    if local(&root.name) != "presence" {
        return Err(PidfError::Root(root.name.into_owned()));
    }
    let mut online = false;
    let mut tuple_note = None;
    let mut other_note = None;
    let mut activity = None;
    for c in &root.children {
        match local(&c.name) {
            "tuple" => {
                let open = c
                    .child("status")
                    .and_then(|s| s.children.iter().find(|b| local(&b.name) == "basic"))
                    .is_some_and(|b| b.text.eq_ignore_ascii_case("open"));
                online |= open;
                if open && tuple_note.is_none() {
                    tuple_note = first_note(c);
                }
            }
            "person" => {
                c.walk(&mut |e| {
                    if local(&e.name) == "activities" {
                        for a in &e.children {
                            activity = activity.or_else(|| availability_of(local(&a.name)));
                        }
                    }
                });
                if other_note.is_none() {
                    other_note = first_note(c);
                }
            }
            "note" if other_note.is_none() && !c.text.is_empty() => {
                other_note = Some(c.text.clone());
            }
            _ => {}
        }
    }
    let note = tuple_note.or(other_note).map(cut);
    Ok(Presence {
        online,
        availability: if online {
            activity.unwrap_or(Availability::Available)
        } else {
            Availability::NotAvailable
        },
        note,
    })
}

/// The first non-empty `note` at or under `el`.
fn first_note(el: &Element) -> Option<String> {
    let mut note = None;
    el.walk(&mut |e| {
        if note.is_none() && local(&e.name) == "note" && !e.text.is_empty() {
            note = Some(e.text.clone());
        }
    });
    note
}

/// An RPID activity as IMPS availability (`None`: says nothing about it).
fn availability_of(activity: &str) -> Option<Availability> {
    match activity {
        "busy" | "on-the-phone" | "meeting" | "performance" | "presentation" | "worship" => {
            Some(Availability::Discreet)
        }
        "away" | "vacation" | "holiday" | "sleeping" | "steering" | "travel" => {
            Some(Availability::NotAvailable)
        }
        _ => None,
    }
}

fn cut(mut s: String) -> String {
    if s.len() > MAX_NOTE {
        let mut at = MAX_NOTE;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
    s
}

/// A PIDF document for `entity` (a SIP URI) saying `p`.
pub(crate) fn emit(entity: &str, p: &Presence) -> String {
    let mut w = XmlWriter::document(PIDF_NS);
    w.start("presence");
    w.attr("xmlns:dm", DM_NS);
    w.attr("xmlns:rpid", RPID_NS);
    w.attr("entity", entity);
    w.start("tuple");
    w.attr("id", "im");
    w.start("status");
    w.text_element("basic", if p.online { "open" } else { "closed" });
    w.end("status");
    if let Some(n) = &p.note {
        w.text_element("note", n);
    }
    w.end("tuple");
    let activity = match (p.online, p.availability) {
        (true, Availability::Discreet) => Some("rpid:busy"),
        (true, Availability::NotAvailable) => Some("rpid:away"),
        _ => None,
    };
    if let Some(a) = activity {
        w.start("dm:person");
        w.attr("id", "p");
        w.start("rpid:activities");
        w.start(a);
        w.end(a);
        w.end("rpid:activities");
        w.end("dm:person");
    }
    w.end("presence");
    w.finish()
}

/// IMPS presence values as `p`: `OnlineStatus`, `UserAvailability` and `StatusText` in a
/// `PresenceSubList`, each qualified `T`.
pub(crate) fn to_ssp(user_id: &str, p: &Presence) -> PresenceValue {
    let attr = |name: &'static str, value: &str| {
        Element::new(name)
            .with_child(Element::new("Qualifier").with_text("T"))
            .with_child(Element::new("PresenceValue").with_text(value))
    };
    let mut sub = Element::new("PresenceSubList")
        .with_child(attr("OnlineStatus", if p.online { "T" } else { "F" }))
        .with_child(attr("UserAvailability", p.availability.imps()));
    if let Some(n) = &p.note {
        sub = sub.with_child(attr("StatusText", n));
    }
    PresenceValue {
        user_id: user_id.to_owned(),
        ext: Ext {
            attrs: Vec::new(),
            children: vec![sub],
        },
    }
}

/// What IMPS presence values say, wherever the attributes sit under the `PresenceValue`
/// (with or without `PresenceSubList`, a value as `PresenceValue` child or as text).
/// Missing `OnlineStatus` counts as online when an availability is given.
pub(crate) fn from_ssp(v: &PresenceValue) -> Presence {
    let value_of = |e: &Element| {
        e.children
            .iter()
            .find(|c| local(&c.name) == "PresenceValue")
            .map_or_else(|| e.text.clone(), |c| c.text.clone())
    };
    let (mut online, mut availability, mut note) = (None, None, None);
    for c in &v.ext.children {
        c.walk(&mut |e| match local(&e.name) {
            "OnlineStatus" => {
                let v = value_of(e).to_ascii_lowercase();
                online = Some(matches!(v.as_str(), "t" | "true" | "yes" | "1"));
            }
            "UserAvailability" => {
                availability = match value_of(e).to_ascii_uppercase().as_str() {
                    "AVAILABLE" => Some(Availability::Available),
                    "DISCREET" => Some(Availability::Discreet),
                    "NOT_AVAILABLE" => Some(Availability::NotAvailable),
                    _ => availability,
                };
            }
            "StatusText" => {
                let t = value_of(e);
                if !t.is_empty() {
                    note = Some(cut(t));
                }
            }
            _ => {}
        });
    }
    let online = online.unwrap_or(availability.is_some());
    Presence {
        online,
        availability: availability.unwrap_or(if online {
            Availability::Available
        } else {
            Availability::NotAvailable
        }),
        note,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// What Kamailio sent after two PUBLISHes (one open, one busy with a note).
    const KAMAILIO: &str = r#"<?xml version="1.0"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:bob@b.test">
<tuple id="t-busy"><status><basic>open</basic></status><note>In a meeting</note></tuple>
<dm:person id="p1"><rpid:activities><rpid:busy/></rpid:activities></dm:person>
<tuple xmlns="urn:ietf:params:xml:ns:pidf" id="t-open"><status><basic>open</basic></status><note>Online</note></tuple>
</presence>"#;

    #[test]
    fn aggregated_tuples_and_a_person_activity() {
        let p = parse(KAMAILIO.as_bytes(), 4096).unwrap();
        assert_eq!(
            p,
            Presence {
                online: true,
                availability: Availability::Discreet,
                note: Some("In a meeting".into()),
            }
        );
    }

    #[test]
    fn closed_tuples_are_offline_and_empty_bodies_too() {
        let closed = r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:b@b.test"><tuple id="a"><status><basic>closed</basic></status></tuple></presence>"#;
        assert!(!parse(closed.as_bytes(), 4096).unwrap().online);
        assert_eq!(parse(b"  \r\n", 4096).unwrap(), Presence::offline());
    }

    #[test]
    fn other_prefixes_and_away_activities() {
        let body = r#"<p:presence xmlns:p="urn:ietf:params:xml:ns:pidf" xmlns:r="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:b@b.test"><p:tuple id="a"><p:status><p:basic>open</p:basic></p:status></p:tuple><r:person><r:activities><r:vacation/></r:activities><p:note>Back on Monday</p:note></r:person></p:presence>"#;
        let p = parse(body.as_bytes(), 4096).unwrap();
        assert_eq!(p.availability, Availability::NotAvailable);
        assert!(p.online);
        assert_eq!(p.note.as_deref(), Some("Back on Monday"));
    }

    #[test]
    fn entity_bombs_oversize_and_other_roots_are_refused() {
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE p [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><presence xmlns="urn:ietf:params:xml:ns:pidf">&b;</presence>"#;
        assert!(matches!(
            parse(bomb.as_bytes(), 4096),
            Err(PidfError::Xml(xml::XmlError::Doctype))
        ));
        let big = format!(
            r#"<presence xmlns="urn:ietf:params:xml:ns:pidf"><note>{}</note></presence>"#,
            "x".repeat(5000)
        );
        assert!(parse(big.as_bytes(), 4096).is_err());
        assert!(matches!(
            parse(b"<html/>", 4096),
            Err(PidfError::Root(r)) if r == "html"
        ));
        assert!(parse(b"<presence", 4096).is_err());
    }

    #[test]
    fn emitted_documents_read_back_for_each_state() {
        for p in [
            Presence {
                online: true,
                availability: Availability::Available,
                note: Some("Hi <there> & all".into()),
            },
            Presence {
                online: true,
                availability: Availability::Discreet,
                note: None,
            },
            Presence {
                online: true,
                availability: Availability::NotAvailable,
                note: Some("Away".into()),
            },
            Presence::offline(),
        ] {
            let body = emit("sip:+46701234567@opx.example;user=phone", &p);
            assert_eq!(parse(body.as_bytes(), 4096).unwrap(), p, "{body}");
        }
    }

    #[test]
    fn imps_values_round_trip() {
        let p = Presence {
            online: true,
            availability: Availability::Discreet,
            note: Some("In a meeting".into()),
        };
        let v = to_ssp("wv:+4915112345678", &p);
        assert_eq!(v.user_id, "wv:+4915112345678");
        assert_eq!(from_ssp(&v), p);
        // A core that sends only an availability is online.
        let only = PresenceValue {
            user_id: "wv:a".into(),
            ext: Ext {
                attrs: Vec::new(),
                children: vec![
                    Element::new("UserAvailability")
                        .with_child(Element::new("PresenceValue").with_text("NOT_AVAILABLE")),
                ],
            },
        };
        let p = from_ssp(&only);
        assert!(p.online);
        assert_eq!(p.availability, Availability::NotAvailable);
    }
}
