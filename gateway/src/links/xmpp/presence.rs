//! Presence over XMPP (RFC 6121), both ways, and the subscriptions behind it.
//!
//! - Our users watching XMPP users (`Sub`): a `SubscribeRequest` from the core becomes
//!   `<presence type='subscribe'>`; the far side's `subscribed`, `unsubscribed` and presence
//!   updates become `PresenceNotification`s to the core; `UnsubscribeRequest` becomes
//!   `unsubscribe`.
//! - XMPP users watching ours (`Watch`): their `subscribe` becomes a `SubscribeRequest` to
//!   the core and is answered `subscribed` or `unsubscribed` by its verdict; the core's
//!   `PresenceNotification`s become presence stanzas; their `probe` is answered from the
//!   core's presence; their `unsubscribe` becomes an `UnsubscribeRequest`.
//!
//! XMPP subscriptions do not run out: both kinds are kept in the state store (tables
//! `xmpp.subs` and `xmpp.watches`) until ended, and a restarted gateway takes them up.
//! Presence is mapped by the same table as SIP's (`sip::pidf`): no `type` is online (`show`
//! absent or `chat`: AVAILABLE, `dnd`: DISCREET, `away`/`xa`: NOT_AVAILABLE), `unavailable`
//! is offline, `status` is the `StatusText`. Several resources of one user are merged (online
//! if any is; the most available of the highest priority), and a state the far side repeats
//! (servers send the same presence several times in one handshake) is not passed on again:
//! duplicates are found on the mapped state, not on the XML.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::stanza::{Jid, NS_SERVER, Stanza};
use crate::links::sip::dialogs::{Dialog, now};
use crate::links::sip::pidf::{Availability, Presence};
use crate::ssp::xml::Element;

/// The store table of our users' subscriptions to XMPP users.
pub(crate) const SUBS: &str = "xmpp.subs";
/// The store table of XMPP users' subscriptions to ours.
pub(crate) const WATCHES: &str = "xmpp.watches";

/// XMPP subscriptions do not run out; the store keeps them this long unless ended.
const KEEP: u64 = 5 * 365 * 86_400;

/// One of our users watching an XMPP user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Sub {
    /// `key(watcher_jid, jid)`.
    pub(crate) key: String,
    /// Our user's public ID (`wv:+MSISDN`), the watcher the core is told of.
    pub(crate) watcher: String,
    /// The same as a bare JID at our domain.
    pub(crate) watcher_jid: String,
    /// The presentity as the core named it.
    pub(crate) presentity: String,
    /// The presentity's bare JID.
    pub(crate) jid: String,
    /// Its domain.
    pub(crate) domain: String,
    /// Its domain's servers, as routing found them.
    pub(crate) servers: Vec<SocketAddr>,
    /// Whether the far side said `subscribed`.
    pub(crate) confirmed: bool,
    /// The last state the core took.
    pub(crate) last: Option<Presence>,
    /// The replica that made it.
    pub(crate) owner: String,
    /// When it was made (Unix seconds).
    pub(crate) since: u64,
}

impl Dialog for Sub {
    fn call_id(&self) -> &str {
        &self.key
    }
    fn expires_at(&self) -> u64 {
        self.since + KEEP
    }
    fn owner(&self) -> &str {
        &self.owner
    }
}

/// An XMPP user watching one of ours.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Watch {
    /// `key(presentity_jid, watcher_jid)`.
    pub(crate) key: String,
    /// The watcher's SSP ID (`wv:+MSISDN` or `wv:user@domain`).
    pub(crate) watcher: String,
    /// The watcher's bare JID.
    pub(crate) watcher_jid: String,
    /// Our user's public ID.
    pub(crate) presentity: String,
    /// The same as a bare JID at our domain.
    pub(crate) presentity_jid: String,
    /// The watcher's domain.
    pub(crate) domain: String,
    /// The last state sent to the watcher.
    pub(crate) last: Option<Presence>,
    /// The replica that made it.
    pub(crate) owner: String,
    /// When it was made (Unix seconds).
    pub(crate) since: u64,
}

impl Dialog for Watch {
    fn call_id(&self) -> &str {
        &self.key
    }
    fn expires_at(&self) -> u64 {
        self.since + KEEP
    }
    fn owner(&self) -> &str {
        &self.owner
    }
}

/// The key of a subscription between our user's bare JID `ours` and `theirs`.
pub(crate) fn key(ours: &str, theirs: &str) -> String {
    format!("{ours} {theirs}")
}

/// A new `Sub`.
pub(crate) fn sub(
    watcher: String,
    watcher_jid: String,
    presentity: String,
    jid: String,
    domain: String,
    servers: Vec<SocketAddr>,
    owner: String,
) -> Sub {
    Sub {
        key: key(&watcher_jid, &jid),
        watcher,
        watcher_jid,
        presentity,
        jid,
        domain,
        servers,
        confirmed: false,
        last: None,
        owner,
        since: now(),
    }
}

/// What one resource's presence stanza says, and its priority.
pub(crate) fn from_stanza(s: &Stanza) -> (Presence, i8) {
    let text = |name: &str| s.child(NS_SERVER, name).map(|c| c.text.clone());
    let priority = text("priority")
        .and_then(|p| p.trim().parse::<i8>().ok())
        .unwrap_or(0);
    let note = text("status").filter(|t| !t.is_empty()).map(|mut t| {
        // IMPS StatusText is short: cut on a char boundary.
        if t.len() > 1024 {
            let mut n = 1024;
            while !t.is_char_boundary(n) {
                n -= 1;
            }
            t.truncate(n);
        }
        t
    });
    if s.attr("type") == Some("unavailable") {
        return (
            Presence {
                note,
                ..Presence::offline()
            },
            priority,
        );
    }
    let availability = match text("show").as_deref().map(str::trim) {
        Some("dnd") => Availability::Discreet,
        Some("away" | "xa") => Availability::NotAvailable,
        _ => Availability::Available,
    };
    (
        Presence {
            online: true,
            availability,
            note,
        },
        priority,
    )
}

/// The presence stanza saying `p`, from our user `from` to `to`.
pub(crate) fn to_stanza(from: &str, to: &str, p: &Presence) -> Element {
    let mut e = Element::new("presence");
    e.attrs.push(("from".into(), from.to_owned()));
    e.attrs.push(("to".into(), to.to_owned()));
    if !p.online {
        e.attrs.push(("type".into(), "unavailable".into()));
    } else {
        match p.availability {
            Availability::Available => {}
            Availability::Discreet => e.children.push(Element::new("show").with_text("dnd")),
            Availability::NotAvailable => {
                e.children.push(Element::new("show").with_text("away"));
            }
        }
    }
    if let Some(n) = &p.note {
        e.children.push(Element::new("status").with_text(n.clone()));
    }
    e
}

/// Each resource's presence and priority, by resource.
pub(crate) type Resources = HashMap<String, (Presence, i8)>;

/// One user's presence from that of each of its resources: online if any is; else the
/// last word of any (its status text); online, the most available of the highest priority.
pub(crate) fn merge(resources: &Resources) -> Presence {
    let rank = |a: Availability| match a {
        Availability::Available => 2,
        Availability::Discreet => 1,
        Availability::NotAvailable => 0,
    };
    let best = resources
        .values()
        .filter(|(p, _)| p.online)
        .max_by_key(|(p, prio)| (*prio, rank(p.availability)));
    match best {
        Some((p, _)) => p.clone(),
        None => Presence {
            note: resources.values().find_map(|(p, _)| p.note.clone()),
            ..Presence::offline()
        },
    }
}

/// The resource a presence stanza is from ("" for the bare JID).
pub(crate) fn resource(s: &Stanza) -> String {
    s.attr("from")
        .and_then(Jid::parse)
        .and_then(|j| j.resource)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::links::xmpp::stanza;

    fn st(xml: &str) -> Stanza {
        let h = stanza::Header::default();
        stanza::parse(xml.as_bytes(), &h, 10_000).unwrap()
    }

    #[test]
    fn the_mapping_table_both_ways() {
        let cases = [
            ("<presence from='b@x/r'/>", true, Availability::Available),
            (
                "<presence from='b@x/r'><show>chat</show></presence>",
                true,
                Availability::Available,
            ),
            (
                "<presence from='b@x/r'><show>dnd</show></presence>",
                true,
                Availability::Discreet,
            ),
            (
                "<presence from='b@x/r'><show>away</show></presence>",
                true,
                Availability::NotAvailable,
            ),
            (
                "<presence from='b@x/r'><show>xa</show></presence>",
                true,
                Availability::NotAvailable,
            ),
            (
                "<presence from='b@x/r' type='unavailable'/>",
                false,
                Availability::NotAvailable,
            ),
        ];
        for (xml, online, availability) in cases {
            let (p, _) = from_stanza(&st(xml));
            assert_eq!((p.online, p.availability), (online, availability), "{xml}");
            // And back: what we send maps to the same state.
            let back = stanza::write(&to_stanza("a@y", "b@x", &p));
            let (again, _) = from_stanza(&st(&back));
            assert_eq!(again, p, "{back}");
        }
        let (p, prio) = from_stanza(&st(
            "<presence from='b@x/r'><show>away</show><status>brb</status><priority>5</priority></presence>",
        ));
        assert_eq!((p.note.as_deref(), prio), (Some("brb"), 5));
    }

    #[test]
    fn resources_merge_and_the_last_one_going_is_offline() {
        let on = |a| Presence {
            online: true,
            availability: a,
            note: None,
        };
        let mut r = HashMap::new();
        r.insert("phone".to_owned(), (on(Availability::NotAvailable), 0));
        r.insert("desk".to_owned(), (on(Availability::Available), 0));
        assert_eq!(merge(&r).availability, Availability::Available);
        // A higher priority wins over a more available one.
        r.insert("phone".to_owned(), (on(Availability::Discreet), 10));
        assert_eq!(merge(&r).availability, Availability::Discreet);
        r.insert("phone".to_owned(), (Presence::offline(), 0));
        r.insert("desk".to_owned(), (Presence::offline(), 0));
        assert!(!merge(&r).online);
    }
}
