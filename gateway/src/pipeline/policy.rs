//! Policy: what a sender may ask for, before anything is routed.
//!
//! A peer's originators must belong to it (`PROTOCOL.md` §7, 901): a `wv:+MSISDN` must be
//! placed at the peer by ENUM (503 while DNS cannot say) and must not be one of ours; a
//! `wv:user@domain` must be in the peer's domain. Each originating user has a rate of its own.
//! The core is trusted for its own users.

use super::state::Gateway;
use crate::error::{Failure, Kind, Side};
use crate::links::Origin;
use crate::links::peer::PeerRt;
use crate::resolve::Unplaced;
use crate::ssp::{Primitive, WvId};

/// Refuse `req` from `origin` if policy says so.
pub(crate) async fn check(gw: &Gateway, origin: &Origin, req: &Primitive) -> Result<(), Failure> {
    let Origin::Peer(peer) = origin else {
        return Ok(());
    };
    for o in req.originators() {
        match originator_ok(gw, peer, o).await {
            Ok(()) => {}
            Err(Unplaced::Elsewhere) => {
                gw.metrics().refused.with_label_values(&["spoof"]).inc();
                tracing::warn!(peer = %peer.cfg.domain, originator = o, "originator does not belong to the peer");
                return Err(Failure::new(
                    Kind::Spoofed,
                    Side::Peer,
                    format!("originator {o} does not belong to {}", peer.cfg.domain),
                ));
            }
            Err(Unplaced::Unverifiable(why)) => {
                gw.metrics()
                    .refused
                    .with_label_values(&["unverified"])
                    .inc();
                return Err(Failure::local(
                    Kind::Unverifiable,
                    format!("originator {o} cannot be verified now: {why}"),
                ));
            }
        }
    }
    if let Some(user) = req.meta().and_then(|m| m.requestor_user())
        && gw
            .originators
            .check_key(&user.to_ascii_lowercase())
            .is_err()
    {
        gw.metrics().refused.with_label_values(&["rate"]).inc();
        return Err(Failure::local(
            Kind::RateLimited,
            format!("rate limit for {user} exceeded"),
        ));
    }
    Ok(())
}

/// Whether an originator ID may come from `peer`.
async fn originator_ok(gw: &Gateway, peer: &PeerRt, originator: &str) -> Result<(), Unplaced> {
    let Ok(id) = WvId::parse(originator) else {
        return Err(Unplaced::Elsewhere);
    };
    let domain = peer.cfg.domain.as_str();
    if let Some(n) = id.e164() {
        // wv:+MSISDN originators have no domain to compare (or the peer's own); the
        // ENUM-based check decides where the resolver is configured.
        if id.domain.as_deref().is_some_and(|d| d != domain) {
            return Err(Unplaced::Elsewhere);
        }
        if gw.directory().is_subscriber(n) {
            // One of *our* numbers claimed by another operator.
            return Err(Unplaced::Elsewhere);
        }
        return match &gw.resolver {
            Some(r) => r.check_originator(n, domain).await,
            None => Ok(()),
        };
    }
    let ok = match id.domain.as_deref() {
        Some(d) => d == domain || d.ends_with(&format!(".{domain}")),
        // A domain-less ID from a peer cannot be attributed.
        None => false,
    };
    if ok { Ok(()) } else { Err(Unplaced::Elsewhere) }
}
