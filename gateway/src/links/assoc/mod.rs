//! The SSP association (`PROTOCOL.md` §3) on the wire: the initiator role towards a peer (or
//! a core) that authenticates this way, and the responder role for steps that arrive on a
//! listener. The state machine is in [`state`]; this module sends its messages and hands
//! it what arrives.
//!
//! As responder the gateway answers on the claimed domain's own address, so anyone can make
//! it POST to a peer by claiming that peer's domain. That cannot be used to reflect or to
//! exhaust: steps are rate-limited per source address and per claimed domain
//! (`[policy] association_rate`), at most [`REPLIES_PER_DOMAIN`] replies to opening steps
//! per domain and [`REPLIES_IN_FLIGHT`] in all are being delivered at once (an opening step
//! beyond that is refused with 503 and creates nothing), and attempts per domain are few (see
//! [`state`]). The later steps need not be bounded that way: each must carry a digest of the
//! token we sent to the claimed domain, which only that domain has.

pub(crate) mod state;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http::StatusCode;
use rustls_pki_types::CertificateDer;
use tokio::time::Instant;

pub(crate) use state::{AssocError, Associations, Established};

use super::exchange::Target;
use super::{Links, TapDir};
use crate::config::PeerAuth;
use crate::error::{Failure, Kind, Side};
use crate::ssp::{Message, Mode, NS_WV_SSP_13, SetupPrimitive, SetupTransaction};
use crate::tls::cert_names_domain;
use crate::web::{HttpResponse, refuse, respond};

/// Replies to association steps being delivered at once, per claimed domain.
pub(crate) const REPLIES_PER_DOMAIN: usize = 2;
/// The same, in all.
pub(crate) const REPLIES_IN_FLIGHT: usize = 64;

/// Bounds of the responder role.
pub(crate) struct Bounds {
    /// Steps per source address.
    sources: crate::links::peer::KeyedLimiter<IpAddr>,
    /// Opening steps per claimed domain.
    domains: crate::links::peer::KeyedLimiter<String>,
    /// Replies in flight per domain.
    replies: Mutex<HashMap<String, usize>>,
    /// Replies in flight in all.
    total: AtomicUsize,
}

impl Bounds {
    /// `rate` steps per second (and `burst`) per source and per claimed domain.
    pub(crate) fn new(rate: u32, burst: u32) -> Bounds {
        Bounds {
            sources: crate::links::peer::keyed_limiter(rate, burst),
            domains: crate::links::peer::keyed_limiter(rate, burst),
            replies: Mutex::new(HashMap::new()),
            total: AtomicUsize::new(0),
        }
    }

    /// A reply slot for `domain`, if one is free.
    fn slot(self: &Arc<Self>, domain: &str) -> Option<ReplySlot> {
        let mut m = self.replies.lock().ok()?;
        let n = m.entry(domain.to_owned()).or_default();
        if *n >= REPLIES_PER_DOMAIN || self.total.load(Ordering::Acquire) >= REPLIES_IN_FLIGHT {
            return None;
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::AcqRel);
        Some(ReplySlot {
            bounds: self.clone(),
            domain: domain.to_owned(),
        })
    }

    /// Forget the limiters' idle keys (a flood of made-up domains or addresses must not
    /// grow them for ever).
    pub(crate) fn shrink(&self) {
        self.sources.retain_recent();
        self.sources.shrink_to_fit();
        self.domains.retain_recent();
        self.domains.shrink_to_fit();
    }
}

/// One reply being delivered; its place is given back when dropped.
struct ReplySlot {
    bounds: Arc<Bounds>,
    domain: String,
}

impl Drop for ReplySlot {
    fn drop(&mut self) {
        self.bounds.total.fetch_sub(1, Ordering::AcqRel);
        if let Ok(mut m) = self.bounds.replies.lock()
            && let Some(n) = m.get_mut(&self.domain)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.domain);
            }
        }
    }
}

/// How a refused association step is answered: a malformed one as such, anything else
/// (not allowed, unmatched, a wrong digest, a refusal) as not proven.
fn refusal(e: &AssocError) -> Failure {
    let kind = match e {
        AssocError::Malformed(_) => Kind::Malformed,
        _ => Kind::Forbidden,
    };
    Failure::new(kind, Side::Peer, e.to_string())
}

/// Where a `SetupTransaction` came from.
#[derive(Debug)]
pub(crate) enum SetupFrom<'a> {
    /// The peer listener, with the client certificate chain if one was presented.
    Peer(Option<&'a [CertificateDer<'static>]>),
    /// The core listener.
    Core,
}

impl Links {
    /// Make sure an association with `domain` (a peer, or the core) is up, running the
    /// initiator role towards `target` if needed, within `deadline`.
    pub(crate) async fn associate(
        &self,
        domain: &str,
        target: &Target<'_>,
        namespace: &str,
        deadline: Instant,
    ) -> Result<Established, Failure> {
        if let Some(e) = self.assoc.established(domain) {
            return Ok(e);
        }
        let lock = self.assoc_lock(domain);
        let _guard = tokio::time::timeout_at(deadline, lock.lock())
            .await
            .map_err(|_| {
                Failure::new(
                    Kind::Unreachable,
                    target.side,
                    format!("association with {domain} is still being set up"),
                )
            })?;
        if let Some(e) = self.assoc.established(domain) {
            return Ok(e);
        }
        let deadline = deadline.min(Instant::now() + self.cfg().timeouts.association);
        let result = self.initiate(domain, target, namespace, deadline).await;
        if result.is_err() {
            self.assoc.abort(domain);
        }
        self.metrics.associations.set(self.assoc.count() as i64);
        result.map_err(|e| {
            tracing::warn!(%domain, error = %e, "association failed");
            Failure::new(
                Kind::Unreachable,
                target.side,
                format!("association with {domain} failed: {e}"),
            )
        })
    }

    /// The initiator's four steps.
    async fn initiate(
        &self,
        domain: &str,
        target: &Target<'_>,
        namespace: &str,
        deadline: Instant,
    ) -> Result<Established, String> {
        let (_tid, first, mut rx) = self.assoc.begin(domain);
        // Each step is retried, with backoff, on a closed connection or a 5xx: Baraza answers
        // an opening step before it has stored its half, and drops (closes without an HTTP
        // answer) a step that arrives in the millisecond before it has.
        let send = |m: Message| {
            let body = m.emit(namespace);
            async move {
                self.tap(TapDir::Out, target.label, &body);
                let body = bytes::Bytes::from(body);
                let headers = super::exchange::wv_headers(&m);
                let mut backoff = super::exchange::Backoff::new(std::time::Duration::from_secs(1));
                loop {
                    match self
                        .send_with_failover(target, body.clone(), &headers, deadline)
                        .await
                    {
                        Ok((s, _)) if s.is_success() => return Ok(()),
                        Ok((s, _)) => return Err(format!("HTTP {}", s.as_u16())),
                        Err(f) if f.kind == Kind::Timeout => return Err(f.detail.into_owned()),
                        Err(f) => {
                            if !backoff.wait(deadline).await {
                                return Err(f.detail.into_owned());
                            }
                            tracing::debug!(%domain, error = %f, "association step sent again");
                        }
                    }
                }
            }
        };
        let mut next = async || {
            tokio::time::timeout_at(deadline, rx.recv())
                .await
                .map_err(|_| "no answer before the deadline".to_owned())?
                .ok_or_else(|| "association abandoned".to_owned())
        };
        send(first).await?;
        let a1 = next().await?;
        let m2 = self
            .assoc
            .step_token(domain, &a1)
            .map_err(|e| e.to_string())?;
        send(m2).await?;
        let a2 = next().await?;
        let m3 = self
            .assoc
            .step_digest(domain, &a2)
            .map_err(|e| e.to_string())?;
        send(m3).await?;
        let a3 = next().await?;
        let est = self
            .assoc
            .step_done(domain, &a3)
            .map_err(|e| e.to_string())?;
        tracing::info!(%domain, session = %est.our_session, "association established");
        Ok(est)
    }

    /// A `SetupTransaction` from a peer or from the core: a step of an attempt it started
    /// (we respond, on the claimed domain's own address: the return-path check), or an
    /// answer to one of ours.
    pub(crate) fn on_setup(
        self: &Arc<Self>,
        t: SetupTransaction,
        from: SetupFrom<'_>,
        remote: Option<IpAddr>,
    ) -> HttpResponse {
        match t.mode {
            Mode::Response => match self.assoc.on_response(t) {
                Ok(()) => respond(StatusCode::OK, None),
                Err(e) => {
                    crate::sampled!(
                        self.logs,
                        "association-unmatched",
                        tracing::info!(error = %e, "unmatched association answer")
                    );
                    refuse(&refusal(&e))
                }
            },
            Mode::Request => {
                let to_core = matches!(from, SetupFrom::Core);
                // Bounded before anything is created or sent (see the module header).
                let claimed = state::claimed_domain(&t);
                let opening = matches!(t.primitive, SetupPrimitive::SendSecretToken(_));
                let source = remote.unwrap_or(IpAddr::from([0, 0, 0, 0]));
                let over_rate = self
                    .live
                    .load()
                    .assoc_bounds
                    .sources
                    .check_key(&source)
                    .is_err()
                    || (opening
                        && claimed.as_ref().is_some_and(|d| {
                            self.live.load().assoc_bounds.domains.check_key(d).is_err()
                        }));
                if over_rate {
                    self.metrics.refused.with_label_values(&["rate"]).inc();
                    return refuse(&Failure::new(
                        Kind::RateLimited,
                        Side::Peer,
                        "association steps over their rate",
                    ));
                }
                // Only an opening step can be sent by anyone: a later one must carry a digest
                // of the token we sent to the claimed domain, so only its replies are bounded.
                let slot = match claimed.as_ref().filter(|_| opening) {
                    Some(d) => match self.live.load().assoc_bounds.slot(d) {
                        Some(s) => Some(s),
                        None => {
                            self.metrics.refused.with_label_values(&["overload"]).inc();
                            return refuse(&Failure::new(
                                Kind::Overloaded,
                                Side::Local,
                                format!("replies to {d} are still being delivered"),
                            ));
                        }
                    },
                    None => None,
                };
                let allowed = |domain: &str| match &from {
                    SetupFrom::Core => self.cfg().operator.core_domains.iter().any(|d| d == domain),
                    SetupFrom::Peer(certs) => match self.live.load().peers.configured(domain) {
                        // A peer that must use mutual TLS may associate only over such a
                        // connection.
                        Some(p) if p.cfg.auth == PeerAuth::Mtls => certs
                            .and_then(|c| c.first())
                            .is_some_and(|c| cert_names_domain(c, domain)),
                        Some(_) => true,
                        None => false,
                    },
                };
                match self.assoc.on_request(&t, allowed, remote) {
                    Ok((domain, reply)) => {
                        self.metrics.associations.set(self.assoc.count() as i64);
                        if matches!(t.primitive, SetupPrimitive::LoginResponse(_)) {
                            tracing::info!(%domain, "association established (responder)");
                        }
                        self.send_setup_reply(domain, reply, to_core, slot);
                        respond(StatusCode::OK, None)
                    }
                    Err(e) => {
                        self.metrics.refused.with_label_values(&["auth"]).inc();
                        crate::sampled!(
                            self.logs,
                            "association-refused",
                            tracing::warn!(error = %e, "association step refused")
                        );
                        refuse(&refusal(&e))
                    }
                }
            }
        }
    }

    /// POST a responder's reply to the claimed domain's own address, on its own task.
    fn send_setup_reply(
        self: &Arc<Self>,
        domain: String,
        reply: Message,
        to_core: bool,
        slot: Option<ReplySlot>,
    ) {
        let links = self.clone();
        self.drain.spawn(async move {
            let _slot = slot;
            let within = links.cfg().timeouts.association;
            let live = links.live();
            let delivered = if to_core {
                match &live.core {
                    Some(core) => {
                        let body = reply.emit(NS_WV_SSP_13);
                        links.deliver(&core.target(), &reply, body, within).await
                    }
                    None => false,
                }
            } else {
                match live.peers.get(&domain) {
                    Some(peer) => {
                        let urls = links.peer_urls(&peer).await;
                        let body = reply.emit(&peer.cfg.namespace);
                        links
                            .deliver(&peer.target(&urls), &reply, body, within)
                            .await
                    }
                    None => false,
                }
            };
            if !delivered {
                crate::sampled!(
                    links.logs,
                    "association-undeliverable",
                    tracing::warn!(%domain, "association answer could not be delivered")
                );
            }
        });
    }
}
