//! Where user IDs sit in each primitive (`PROTOCOL.md` §5): the route-by IDs the router needs,
//! the originator IDs anti-spoofing checks, and a visitor over *every* ID for rewriting.
//!
//! The visitor covers typed fields and, generically, every `userID`/`groupID`/`serviceID`
//! attribute and `Domain` text inside unknown (vendor) content and unknown primitives, so the
//! rewriter never misses an ID because the typed layer does not model its element.

use super::common::{
    ContentData, DetailedResult, Entity, Ext, MessageInfo, MetaInfo, Party, PresenceValue, Status,
};
use super::message::{Body, Message};
use super::primitives::{Invite, Primitive, SetupPrimitive};
use super::xml::Element;

/// What kind of value a visited slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// A `userID` (user, resource or MSISDN ID).
    User,
    /// A `groupID`.
    Group,
    /// A `serviceID` (`wv:@domain`).
    Service,
    /// A bare domain (`DetailedResult/Domain`).
    Domain,
}

/// Mutable visitor over ID slots.
pub type IdVisitor<'a> = dyn FnMut(Slot, &mut String) + 'a;

/// Where a route-by ID was found: the destination's home network decides the route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteBy {
    /// A user or group ID (`wv:…`).
    Id(String),
    /// The MSISDN searched for (`SearchRequest`, `USER_MOBILE_NUMBER`), as written.
    SearchNumber(String),
}

impl RouteBy {
    /// The text, for logs and the `ssp rewrite` tool.
    pub fn as_str(&self) -> &str {
        match self {
            RouteBy::Id(s) | RouteBy::SearchNumber(s) => s,
        }
    }

    /// The text, moved out.
    pub fn into_string(self) -> String {
        match self {
            RouteBy::Id(s) | RouteBy::SearchNumber(s) => s,
        }
    }
}

fn entity_ids(es: &[Entity]) -> impl Iterator<Item = &str> {
    es.iter().map(|e| e.id.as_str())
}

fn party_ids(p: &Option<Party>) -> Vec<&str> {
    p.as_ref()
        .map(|p| entity_ids(&p.entities).collect())
        .unwrap_or_default()
}

impl Primitive {
    /// The route-by IDs of a request primitive, in document order (empty for responses).
    pub fn route_by(&self) -> Vec<RouteBy> {
        if let Some(list) = self.route_by_list() {
            return list.iter().map(|e| RouteBy::Id(e.id.clone())).collect();
        }
        match self {
            Primitive::DeliveryStatusReport(p) => p
                .info
                .as_ref()
                .and_then(|i| i.sender_id())
                .map(|s| RouteBy::Id(s.to_owned()))
                .into_iter()
                .collect(),
            Primitive::SearchRequest(p) => p
                .mobile_number()
                .map(|n| RouteBy::SearchNumber(n.to_owned()))
                .into_iter()
                .collect(),
            Primitive::Group(g) => g.group_id.iter().map(|g| RouteBy::Id(g.clone())).collect(),
            _ => Vec::new(),
        }
    }

    /// The IDs that must belong to the sending side (anti-spoofing), including the requestor's
    /// `serviceID`.
    pub fn originators(&self) -> Vec<&str> {
        let mut out = Vec::new();
        if let Some(m) = self.meta() {
            out.extend(m.requestor_service());
            out.extend(m.requestor_user());
        }
        match self {
            Primitive::SendMessageRequest(p) => {
                out.extend(p.info.as_ref().and_then(MessageInfo::sender_id));
            }
            Primitive::PresenceNotification(p) => {
                out.extend(p.values.iter().map(|v| v.user_id.as_str()));
            }
            Primitive::InviteRequest(p) | Primitive::CancelInviteRequest(p) => {
                out.extend(party_ids(&p.from));
            }
            _ => {}
        }
        out
    }

    /// Visit every ID slot of the primitive.
    pub fn visit_ids(&mut self, f: &mut IdVisitor<'_>) {
        match self {
            Primitive::SendMessageRequest(p) => {
                meta(&mut p.meta, f);
                info(&mut p.info, f);
                if let Some(c) = &mut p.content {
                    content(c, f);
                }
                ext(&mut p.ext, f);
            }
            Primitive::SendMessageResponse(p) => {
                status(&mut p.status, f);
                ext(&mut p.ext, f);
            }
            Primitive::DeliveryStatusReport(p) => {
                meta(&mut p.meta, f);
                status(&mut p.result, f);
                ext(&mut p.result_ext, f);
                info(&mut p.info, f);
                ext(&mut p.ext, f);
            }
            Primitive::SubscribeRequest(p)
            | Primitive::UnsubscribeRequest(p)
            | Primitive::GetPresenceRequest(p) => {
                meta(&mut p.meta, f);
                entities(&mut p.users, f);
                if let Some(a) = &mut p.attribute_list {
                    element(a, f);
                }
                ext(&mut p.ext, f);
            }
            Primitive::PresenceNotification(p) => {
                meta(&mut p.meta, f);
                entities(&mut p.watchers, f);
                values(&mut p.values, f);
                ext(&mut p.ext, f);
            }
            Primitive::GetPresenceResponse(p) => {
                status(&mut p.status, f);
                values(&mut p.values, f);
                ext(&mut p.ext, f);
            }
            Primitive::SearchRequest(p) => {
                meta(&mut p.meta, f);
                for pair in &mut p.pairs {
                    ext(&mut pair.ext, f);
                }
                ext(&mut p.ext, f);
            }
            Primitive::SearchResponse(p) => {
                status(&mut p.status, f);
                entities(&mut p.results, f);
                ext(&mut p.ext, f);
            }
            Primitive::InviteRequest(p)
            | Primitive::InviteResponse(p)
            | Primitive::CancelInviteRequest(p) => invite(p, f),
            Primitive::Group(p) => {
                if let Some(g) = &mut p.group_id {
                    f(Slot::Group, g);
                }
                meta(&mut p.meta, f);
                ext(&mut p.ext, f);
            }
            Primitive::Status(s) => status_one(s, f),
            Primitive::Other(e) => element(e, f),
        }
    }
}

impl SetupPrimitive {
    /// Visit the `serviceID` of an association primitive.
    pub fn visit_ids(&mut self, f: &mut IdVisitor<'_>) {
        match self {
            SetupPrimitive::SendSecretToken(p) => {
                if let Some(s) = &mut p.service_id {
                    f(Slot::Service, s);
                }
                ext(&mut p.ext, f);
            }
            SetupPrimitive::LoginRequest(p) => {
                if let Some(s) = &mut p.service_id {
                    f(Slot::Service, s);
                }
                ext(&mut p.ext, f);
            }
            SetupPrimitive::LoginResponse(p) => {
                status(&mut p.status, f);
                ext(&mut p.ext, f);
            }
            SetupPrimitive::Other(e) => element(e, f),
        }
    }
}

impl Message {
    /// Visit every ID slot in the message (transactions, unknown envelope content).
    pub fn visit_ids(&mut self, f: &mut IdVisitor<'_>) {
        match &mut self.body {
            Body::Session(s) => {
                for t in &mut s.transactions {
                    t.primitive.visit_ids(f);
                    ext(&mut t.ext, f);
                }
                ext(&mut s.ext, f);
            }
            Body::Setup(t) => {
                t.primitive.visit_ids(f);
                ext(&mut t.ext, f);
            }
        }
        ext(&mut self.ext, f);
    }

    /// Visit every string in the message: element and attribute names, attribute values and
    /// text, IDs or not (the topology scrub; names included so that nothing can leak).
    pub fn visit_strings(&mut self, f: &mut dyn FnMut(&mut String)) {
        // Through the element tree: simple, and only used on the rare slow path.
        let mut root = self.to_element();
        root.walk_mut(&mut |el| {
            visit_name(&mut el.name, f);
            for (k, v) in &mut el.attrs {
                visit_name(k, f);
                f(v);
            }
            f(&mut el.text);
        });
        // The tree came from a valid message and only values changed, so it still parses.
        if let Ok(m) = Message::from_root(root, self.namespace.clone()) {
            *self = m;
        }
    }
}

fn meta(m: &mut Option<MetaInfo>, f: &mut IdVisitor<'_>) {
    let Some(m) = m else { return };
    if let Some(r) = &mut m.requestor {
        if let Some(s) = &mut r.service_id {
            f(Slot::Service, s);
        }
        if let Some(u) = &mut r.user {
            entity(u, f);
        }
        ext(&mut r.ext, f);
    }
    ext(&mut m.ext, f);
}

fn info(i: &mut Option<MessageInfo>, f: &mut IdVisitor<'_>) {
    let Some(i) = i else { return };
    for p in [&mut i.recipient, &mut i.sender].into_iter().flatten() {
        party(p, f);
    }
    if let Some(d) = &mut i.date_time {
        ext(&mut d.ext, f);
    }
    ext(&mut i.ext, f);
}

fn content(c: &mut ContentData, f: &mut IdVisitor<'_>) {
    ext(&mut c.ext, f);
}

fn party(p: &mut Party, f: &mut IdVisitor<'_>) {
    entities(&mut p.entities, f);
    ext(&mut p.ext, f);
}

fn entities(es: &mut [Entity], f: &mut IdVisitor<'_>) {
    for e in es {
        entity(e, f);
    }
}

fn entity(e: &mut Entity, f: &mut IdVisitor<'_>) {
    let slot = if e.kind.is_group() {
        Slot::Group
    } else {
        Slot::User
    };
    f(slot, &mut e.id);
    ext(&mut e.ext, f);
}

fn values(vs: &mut [PresenceValue], f: &mut IdVisitor<'_>) {
    for v in vs {
        f(Slot::User, &mut v.user_id);
        ext(&mut v.ext, f);
    }
}

fn status(s: &mut Option<Status>, f: &mut IdVisitor<'_>) {
    if let Some(s) = s {
        status_one(s, f);
    }
}

fn status_one(s: &mut Status, f: &mut IdVisitor<'_>) {
    for d in &mut s.details {
        detailed(d, f);
    }
    ext(&mut s.ext, f);
}

fn detailed(d: &mut DetailedResult, f: &mut IdVisitor<'_>) {
    entities(&mut d.ids, f);
    for dom in &mut d.domains {
        f(Slot::Domain, dom);
    }
    ext(&mut d.ext, f);
}

fn invite(p: &mut Invite, f: &mut IdVisitor<'_>) {
    meta(&mut p.meta, f);
    for side in [&mut p.from, &mut p.to].into_iter().flatten() {
        party(side, f);
    }
    status(&mut p.status, f);
    ext(&mut p.ext, f);
}

fn ext(e: &mut Ext, f: &mut IdVisitor<'_>) {
    for (k, v) in &mut e.attrs {
        if let Some(slot) = attr_slot(k) {
            f(slot, v);
        }
    }
    for c in &mut e.children {
        element(c, f);
    }
}

/// The ID slot of an attribute named `name`, if it holds an ID. (Inlined: the fast path's
/// scan asks for every attribute of every request and answer.)
#[inline]
pub(crate) fn attr_slot(name: &str) -> Option<Slot> {
    // Every ID attribute name ends in "id": most names are ruled out by their last byte
    // (this runs for every attribute of every message).
    if !name
        .as_bytes()
        .last()
        .is_some_and(|b| b.eq_ignore_ascii_case(&b'd'))
    {
        return None;
    }
    // Vendor content may use its own prefix; match on the local part (after the last
    // `:`): the name ends with one of the three, right after a `:` or at its start. For a
    // name without a prefix, only the one of its length is compared byte by byte.
    let b = name.as_bytes();
    [
        (&b"userid"[..], Slot::User),
        (b"groupid", Slot::Group),
        (b"serviceid", Slot::Service),
    ]
    .into_iter()
    .find(|(want, _)| {
        let Some(local) = b.len().checked_sub(want.len()) else {
            return false;
        };
        (local == 0 || b[local - 1] == b':') && b[local..].eq_ignore_ascii_case(want)
    })
    .map(|(_, slot)| slot)
}

/// Generic walk over unknown content: ID attributes anywhere, and `Domain` text.
fn element(el: &mut Element, f: &mut IdVisitor<'_>) {
    el.walk_mut(&mut |e| {
        for (k, v) in &mut e.attrs {
            if let Some(slot) = attr_slot(k) {
                f(slot, v);
            }
        }
        if e.name == "Domain" && !e.text.is_empty() {
            f(Slot::Domain, &mut e.text);
        }
    });
}

/// Visit a name, allocating only if the visitor changes it.
fn visit_name(name: &mut super::xml::Name, f: &mut dyn FnMut(&mut String)) {
    let mut s = name.to_string();
    f(&mut s);
    if s != *name {
        *name = std::borrow::Cow::Owned(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`attr_slot`], the obvious way: the part after the last `:`, compared with each.
    fn naive_slot(name: &str) -> Option<Slot> {
        let local = name.rsplit(':').next().unwrap_or(name);
        [
            ("userID", Slot::User),
            ("groupID", Slot::Group),
            ("serviceID", Slot::Service),
        ]
        .into_iter()
        .find(|(want, _)| local.eq_ignore_ascii_case(want))
        .map(|(_, slot)| slot)
    }

    proptest::proptest! {
        #[test]
        fn an_id_attribute_is_known_by_its_local_part(
            prefix in "([a-z]{0,3}:){0,2}[a-z]{0,2}",
            local in proptest::sample::select(vec![
                "userID", "USERid", "groupID", "serviceID", "sessionID", "userIDx", "serviceid",
                "ID", "d", "", "ervICEID",
            ]),
        ) {
            let name = format!("{prefix}{local}");
            proptest::prop_assert_eq!(attr_slot(&name), naive_slot(&name), "{}", name);
        }
    }
}
