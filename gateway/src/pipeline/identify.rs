//! Identify: who sent a session message. On the peer listener, a client certificate that
//! names a configured peer (or, where unlisted peers are accepted, the domain the peer claims
//! and its certificate names), else an established association's session ID. On the core
//! listener, the core by address, certificate or association.

use std::sync::Arc;

use super::state::Gateway;
use crate::config::{CoreAuth, PeerAuth};
use crate::error::{Failure, Kind, Side};
use crate::links::peer::PeerRt;
use crate::ssp::WvId;
use crate::tls::cert_names_domain;
use crate::web::ConnInfo;

fn refused(gw: &Gateway, f: Failure) -> Failure {
    gw.metrics()
        .refused
        .with_label_values(&[f.kind.label()])
        .inc();
    f
}

/// Which configured peer a connection or session is.
/// `session_id` and `requestor_service` (the first transaction's that has one) are what the
/// message claims.
pub(crate) fn peer(
    gw: &Gateway,
    session_id: &str,
    requestor_service: Option<&str>,
    info: &ConnInfo,
) -> Result<Arc<PeerRt>, Failure> {
    let live = gw.links.live.load();
    let peers = &live.peers;
    if let Some(certs) = info.certs.as_deref().filter(|c| !c.is_empty()) {
        let listed = info.memo.listed(live.generation, || {
            peers
                .all()
                .into_iter()
                .find(|p| {
                    cert_names_domain(&certs[0], &p.cfg.domain)
                        && p.cert_check.as_ref().is_some_and(|c| c.accepts(certs))
                })
                .map(|p| p.cfg.domain.clone())
        });
        let mut found = listed.as_deref().and_then(|d| peers.get(d));
        if found.is_none() && live.cfg.policy.accept_unlisted_peers {
            // The domain the peer claims (its session ID's, else its requestor's service),
            // accepted when its certificate names it and chains to our default anchors.
            let claimed = session_id
                .rsplit_once('@')
                .map(|(_, d)| d.to_ascii_lowercase())
                .or_else(|| requestor_service.and_then(|sid| WvId::parse(sid).ok()?.domain));
            found = claimed.and_then(|d| {
                let ok = info.memo.claimed(live.generation, &d, || {
                    cert_names_domain(&certs[0], &d)
                        && peers
                            .get(&d)
                            .and_then(|p| p.cert_check.as_ref().map(|c| c.accepts(certs)))
                            .unwrap_or(false)
                });
                if ok { peers.get(&d) } else { None }
            });
        }
        return found.ok_or_else(|| {
            crate::sampled!(
                gw.logs(),
                "certificate-unknown",
                tracing::warn!(remote = %info.remote, "client certificate names no configured peer")
            );
            refused(
                gw,
                Failure::new(
                    Kind::Forbidden,
                    Side::Peer,
                    "certificate does not identify a configured peer",
                ),
            )
        });
    }
    let Some(domain) = gw.links.assoc.domain_of_session(session_id) else {
        return Err(refused(
            gw,
            Failure::new(
                Kind::UnknownSession,
                Side::Peer,
                format!(
                    "unknown or expired session {:?}: associate first or use a client certificate",
                    session_id
                ),
            ),
        ));
    };
    match peers.configured(&domain) {
        Some(p) if p.cfg.auth != PeerAuth::Mtls => Ok(p),
        _ => Err(refused(
            gw,
            Failure::new(
                Kind::Forbidden,
                Side::Peer,
                format!("peer {domain} must use mutual TLS"),
            ),
        )),
    }
}

/// Whether a connection to the core listener is the core's (by address or certificate; a
/// core that associates is checked by its session, [`core_session`]).
pub(crate) fn core_connection(gw: &Gateway, info: &ConnInfo) -> Result<(), Failure> {
    let Some(c) = &gw.cfg().core else {
        return Ok(());
    };
    let allowed_addr = c.allow.iter().any(|n| n.contains(&info.remote.ip()));
    let ok = match c.auth {
        CoreAuth::Allowlist => allowed_addr,
        CoreAuth::Mtls => info.certs.as_ref().is_some_and(|c| !c.is_empty()),
        // The association proves the core; an allowlist, if given, still applies.
        CoreAuth::Association => c.allow.is_empty() || allowed_addr,
    };
    if ok {
        return Ok(());
    }
    crate::sampled!(
        gw.logs(),
        "connection-refused",
        tracing::warn!(remote = %info.remote, "refused a core connection that is not the core")
    );
    Err(refused(
        gw,
        Failure::new(
            Kind::Forbidden,
            Side::Core,
            "this listener is for the core only",
        ),
    ))
}

/// Whether the core authenticates by association.
pub(crate) fn core_associates(gw: &Gateway) -> bool {
    gw.cfg()
        .core
        .as_ref()
        .is_some_and(|c| c.auth == CoreAuth::Association)
}

/// For a core that associates: its session must be an association with one of our core
/// domains.
pub(crate) fn core_session(gw: &Gateway, session_id: &str) -> Result<(), Failure> {
    if !core_associates(gw) {
        return Ok(());
    }
    let links = &gw.links;
    if links
        .assoc
        .domain_of_session(session_id)
        .is_some_and(|d| links.live.load().rw.is_own_domain(Some(&d)))
    {
        return Ok(());
    }
    Err(refused(
        gw,
        Failure::new(
            Kind::UnknownSession,
            Side::Core,
            format!("unknown or expired session {session_id:?}"),
        ),
    ))
}
