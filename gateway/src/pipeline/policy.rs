//! Policy: what a sender may ask for, before anything is routed.
//!
//! A peer's originators must belong to it (`PROTOCOL.md` §7, 901). A `wv:+MSISDN` must not be
//! one of ours, and must be placed at the peer by what the gateway knows, in this order: a
//! static `[[route]]` whose prefix covers the number names the peer; else ENUM places the
//! number at the peer's domain (503 while DNS cannot say). When neither knows the number,
//! `originator_check = "enforce"` refuses it: an unverifiable number is not let through.
//! A `wv:user@domain` must be in the peer's domain. Each originating user has a rate of its
//! own. The core is trusted for its own users.

use super::state::Gateway;
use crate::config::OriginatorCheck;
use crate::error::{Failure, Kind, Side};
use crate::links::Origin;
use crate::links::peer::PeerRt;
use crate::resolve::Unplaced;
use crate::ssp::{E164, Primitive, WvIdRef};

/// Refuse `req` from `origin` if policy says so.
pub(crate) async fn check(gw: &Gateway, origin: &Origin, req: &Primitive) -> Result<(), Failure> {
    let requestor = req.meta().and_then(|m| m.requestor_user());
    check_ids(gw, origin, req.originators().into_iter(), requestor).await
}

/// [`check`] on what a request names: the IDs that must belong to its sender, and the
/// requesting user.
pub(crate) async fn check_ids<'r>(
    gw: &Gateway,
    origin: &Origin,
    originators: impl Iterator<Item = &'r str>,
    requestor: Option<&str>,
) -> Result<(), Failure> {
    let Origin::Peer(peer) = origin else {
        return Ok(());
    };
    let mode = gw.cfg().policy.originator_check;
    // An ID named twice (the requestor is usually the sender too) has one verdict: one that
    // was accepted is not checked again.
    let mut accepted: smallvec::SmallVec<[&str; 4]> = smallvec::SmallVec::new();
    for o in originators {
        if accepted.contains(&o) {
            continue;
        }
        let refusal = match originator_ok(gw, peer, o).await {
            Ok(()) => {
                accepted.push(o);
                continue;
            }
            Err(Verdict::Elsewhere) => Failure::new(
                Kind::Spoofed,
                Side::Peer,
                format!("originator {o} does not belong to {}", peer.cfg.domain),
            ),
            Err(Verdict::Unknown) => Failure::new(
                Kind::Spoofed,
                Side::Peer,
                format!(
                    "originator {o}: no static route or ENUM places it at {}",
                    peer.cfg.domain
                ),
            ),
            Err(Verdict::Unverifiable(why)) => Failure::local(
                Kind::Unverifiable,
                format!("originator {o} cannot be verified now: {why}"),
            ),
        };
        let label = refusal.kind.label();
        gw.metrics().refused.with_label_values(&[label]).inc();
        if mode == OriginatorCheck::Log {
            crate::sampled!(
                gw.logs(),
                "originator-unplaced",
                tracing::warn!(peer = %peer.cfg.domain, originator = o, reason = %refusal, "originator not placed at the peer: let through (originator_check = \"log\")")
            );
            continue;
        }
        crate::sampled!(
            gw.logs(),
            "originator-refused",
            tracing::warn!(peer = %peer.cfg.domain, originator = o, reason = %refusal, "originator refused")
        );
        return Err(refusal);
    }
    if let Some(user) = requestor
        && gw
            .originators
            .load()
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

/// Why an originator is not accepted from a peer.
enum Verdict {
    /// It belongs to another operator (or is one of ours).
    Elsewhere,
    /// Nothing the gateway knows places it anywhere.
    Unknown,
    /// DNS cannot say now.
    Unverifiable(String),
}

/// Whether an originator ID may come from `peer`.
async fn originator_ok(gw: &Gateway, peer: &PeerRt, originator: &str) -> Result<(), Verdict> {
    if gw.cfg().policy.originator_check == OriginatorCheck::Off {
        return Ok(());
    }
    let Ok(id) = WvIdRef::parse(originator) else {
        return Err(Verdict::Elsewhere);
    };
    let domain = peer.cfg.domain.as_str();
    if let Some(n) = id.e164() {
        // wv:+MSISDN originators have no domain (or the peer's own).
        if id.domain().is_some_and(|d| d != domain) {
            return Err(Verdict::Elsewhere);
        }
        return number_ok(gw, n, domain).await;
    }
    let ok = match id.domain() {
        Some(d) => d == domain || d.strip_suffix(domain).is_some_and(|sub| sub.ends_with('.')),
        // A domain-less ID from a peer cannot be attributed.
        None => false,
    };
    if ok { Ok(()) } else { Err(Verdict::Elsewhere) }
}

/// Whether number `n` may come from the peer of `domain`: not ours, and placed there by a
/// static route, else by ENUM.
async fn number_ok(gw: &Gateway, n: E164, domain: &str) -> Result<(), Verdict> {
    if gw.directory().is_subscriber(n) {
        // One of *our* numbers claimed by another operator.
        return Err(Verdict::Elsewhere);
    }
    if let Some(route) = gw.cfg().route_for(n) {
        return if route.peer == domain {
            Ok(())
        } else {
            Err(Verdict::Elsewhere)
        };
    }
    match &gw.resolver() {
        Some(r) => r.place(n, domain).await.map_err(|u| match u {
            Unplaced::Elsewhere => Verdict::Elsewhere,
            Unplaced::Unverifiable(why) => Verdict::Unverifiable(why),
        }),
        None => Err(Verdict::Unknown),
    }
}
