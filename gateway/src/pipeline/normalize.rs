//! Normalize: what real peers send and want that the profile does not say, put right at the
//! edge so that the rest of the path sees the profile (`PROTOCOL.md` §9).
//!
//! - A `DeliveryStatusReport` goes to the original sender. Baraza writes it the other way
//!   round (its user, who received the message, as `Sender`; ours as `Recipient`, without
//!   `wv:`): a report whose `Sender` is not ours but whose `Recipient` is, is turned round.
//! - Users named at their server by ENUM URI, not by number (`[[peer]] address_by =
//!   "enum-uri"`): when ENUM gave `im:alice@a.test` for +254700000001, what we send that peer
//!   names the user `wv:alice@a.test`, and what it sends names of that user come back to our
//!   core as `wv:+254700000001`, so contact lists keep the number. The gateway knows such a
//!   name only from its own ENUM lookups ([`Names`]); a name it has not learnt (yet, or any
//!   more) reaches the core as the peer wrote it.

use super::state::Gateway;
use crate::config::AddressBy;
use crate::links::Origin;
use crate::ssp::walk::Slot;
use crate::ssp::{Primitive, WvId};

/// Whether the peer of `domain` is addressed by ENUM names.
pub(crate) fn by_enum_uri(gw: &Gateway, domain: &str) -> bool {
    gw.cfg()
        .peer(domain)
        .is_some_and(|p| p.address_by == AddressBy::EnumUri)
}

/// A request from `origin`, before policy and routing.
pub(crate) fn request(gw: &Gateway, origin: &Origin, req: &mut Primitive) {
    let Origin::Peer(peer) = origin else { return };
    if let Primitive::DeliveryStatusReport(r) = req
        && let Some(info) = r.info.as_mut()
    {
        let ours = |p: &Option<crate::ssp::Party>| {
            p.as_ref()
                .and_then(|p| p.entities.first())
                .and_then(|e| WvId::parse(&e.id).ok())
                .and_then(|id| id.e164())
                .is_some_and(|n| gw.directory().is_subscriber(n))
        };
        if !ours(&info.sender) && ours(&info.recipient) {
            std::mem::swap(&mut info.sender, &mut info.recipient);
        }
    }
    from_peer(gw, &peer.cfg.domain, req);
}

/// Names of `domain`'s users in `p` (a request or an answer from that peer) back to the
/// numbers the gateway learnt for them.
pub(crate) fn from_peer(gw: &Gateway, domain: &str, p: &mut Primitive) {
    if !by_enum_uri(gw, domain) {
        return;
    }
    p.visit_ids(&mut |slot, id| {
        if slot != Slot::User {
            return;
        }
        let Ok(parsed) = WvId::parse(id) else { return };
        if parsed.e164().is_some() || parsed.domain.as_deref() != Some(domain) {
            return;
        }
        if let Some(n) = gw.names.number_of(&parsed.to_string()) {
            *id = format!("wv:+{n}");
        }
    });
}

/// A request part on its way to `domain`: its users' numbers as the names ENUM gave.
pub(crate) fn to_peer(gw: &Gateway, domain: &str, p: &mut Primitive) {
    if !by_enum_uri(gw, domain) {
        return;
    }
    p.visit_ids(&mut |slot, id| {
        if slot != Slot::User {
            return;
        }
        let Some(n) = WvId::parse(id).ok().and_then(|i| i.e164()) else {
            return;
        };
        if let Some(name) = gw.names.name_of(n, domain) {
            *id = name;
        }
    });
}
