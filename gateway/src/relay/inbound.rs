//! The peer-facing listener: peers' requests to our core, their answers to our requests, and
//! the association.
//!
//! Checks on each inbound request, in order: the peer is identified (client certificate naming
//! a configured peer, or an established association's session ID); its rate limit; the
//! originator belongs to it (else 901); each route-by ID is one of our subscribers (else 531:
//! the gateway is no open relay). Then IDs are mapped to the core's, the request goes to the
//! core, and the answer comes back rewritten for the peer.

use std::sync::Arc;

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::exchange::Target;
use super::http::{ConnInfo, HttpResponse, read_body, respond};
use super::merge::{ErrorForm, PartResult, error_answer, merge, split, status};
use super::peers::PeerRt;
use super::{Gateway, TapDir};
use crate::config::{PeerAuth, ResponseMode};
use crate::resolve::Unplaced;
use crate::rewrite::{Direction, PeerView};
use crate::ssp::message::RejectedTransaction;
use crate::ssp::walk::RouteBy;
use crate::ssp::{
    Body, Message, Mode, NS_WV_SSP_13, Primitive, Session, SetupTransaction, Status, Transaction,
    WvId, status as code,
};
use crate::tls::cert_names_domain;
use crate::token::{Leg, Token};

/// Outcome of reading and parsing a POST: the message, or the HTTP answer to give instead.
pub(crate) enum Parsed {
    Ok(Box<Message>),
    Answer(HttpResponse),
}

impl Gateway {
    /// Common front: method, media type, size, XML. `who` labels the wire tap.
    pub(crate) async fn read_message(&self, req: Request<Incoming>, who: &str) -> Parsed {
        if req.method() != Method::POST {
            return Parsed::Answer(respond(StatusCode::METHOD_NOT_ALLOWED, None));
        }
        if !super::http::is_ssp_content_type(&req) {
            self.metrics
                .bad_messages
                .with_label_values(&["media"])
                .inc();
            return Parsed::Answer(respond(StatusCode::UNSUPPORTED_MEDIA_TYPE, None));
        }
        let body = match read_body(req.into_body(), self.cfg.limits.xml.max_body).await {
            Ok(b) => b,
            Err(super::http::BodyError::TooLarge(n)) => {
                self.metrics.bad_messages.with_label_values(&["size"]).inc();
                let st = status(
                    code::BAD_REQUEST,
                    format!("message body exceeds the limit of {n} bytes"),
                );
                return Parsed::Answer(respond(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Some(status_body(st)),
                ));
            }
            Err(e) => {
                return Parsed::Answer(respond(
                    StatusCode::BAD_REQUEST,
                    Some(status_body(status(code::BAD_REQUEST, e.to_string()))),
                ));
            }
        };
        if self.tap_enabled() {
            self.tap(TapDir::In, who, &String::from_utf8_lossy(&body));
        }
        match self.codec.parse(&body) {
            Ok(m) => Parsed::Ok(Box::new(m)),
            Err(e) => {
                self.metrics
                    .bad_messages
                    .with_label_values(&["parse"])
                    .inc();
                tracing::info!(from = who, error = %e, "refused SSP message");
                let http = if e.is_too_large() {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    StatusCode::BAD_REQUEST
                };
                Parsed::Answer(respond(http, Some(status_body(e.status()))))
            }
        }
    }

    /// `POST /` on the peer listener.
    pub(crate) async fn on_peer(
        self: &Arc<Self>,
        req: Request<Incoming>,
        info: Arc<ConnInfo>,
    ) -> HttpResponse {
        // Work in a handler (a sync peer waiting for the core's answer) counts for draining.
        let _work = self.track();
        let msg = match self.read_message(req, "peer-listener").await {
            Parsed::Ok(m) => m,
            Parsed::Answer(a) => return a,
        };
        match msg.body {
            Body::Setup(t) => self.on_setup(
                t,
                SetupFrom::Peer(info.certs.clone()),
                Some(info.remote.ip().to_canonical()),
            ),
            Body::Session(s) => self.on_peer_session(s, &info).await,
        }
    }

    /// Which configured peer a connection or session is.
    fn identify(&self, s: &Session, info: &ConnInfo) -> Result<Arc<PeerRt>, Box<HttpResponse>> {
        if let Some(certs) = info.certs.as_deref().filter(|c| !c.is_empty()) {
            let listed = info.memo.listed.get_or_init(|| {
                self.peers
                    .all()
                    .into_iter()
                    .find(|p| {
                        cert_names_domain(&certs[0], &p.cfg.domain)
                            && p.cert_check.as_ref().is_some_and(|c| c.accepts(certs))
                    })
                    .map(|p| p.cfg.domain.clone())
            });
            let mut found = listed.as_deref().and_then(|d| self.peers.get(d));
            if found.is_none() && self.cfg.policy.accept_unlisted_peers {
                // The domain the peer claims (its session ID's, else its requestor's service),
                // accepted when its certificate names it and chains to our default anchors.
                let claimed = s
                    .session_id
                    .rsplit_once('@')
                    .map(|(_, d)| d.to_ascii_lowercase())
                    .or_else(|| {
                        s.transactions
                            .iter()
                            .find_map(|t| {
                                t.primitive.meta()?.requestor_service().map(str::to_owned)
                            })
                            .and_then(|sid| WvId::parse(&sid).ok()?.domain)
                    });
                found = claimed.and_then(|d| {
                    let ok = info.memo.claimed(&d, || {
                        cert_names_domain(&certs[0], &d)
                            && self
                                .peers
                                .get(&d)
                                .and_then(|p| p.cert_check.as_ref().map(|c| c.accepts(certs)))
                                .unwrap_or(false)
                    });
                    if ok { self.peers.get(&d) } else { None }
                });
            }
            return found.ok_or_else(|| {
                self.metrics.refused.with_label_values(&["auth"]).inc();
                tracing::warn!(remote = %info.remote, "client certificate names no configured peer");
                Box::new(respond(
                    StatusCode::FORBIDDEN,
                    Some(status_body(status(code::INVALID_SESSION, "certificate does not identify a configured peer"))),
                ))
            });
        }
        let Some(domain) = self.assoc.domain_of_session(&s.session_id) else {
            self.metrics.refused.with_label_values(&["auth"]).inc();
            return Err(Box::new(respond(
                StatusCode::BAD_REQUEST,
                Some(status_body(status(
                    code::INVALID_SESSION,
                    format!(
                        "unknown or expired session {:?}: associate first or use a client certificate",
                        s.session_id
                    ),
                ))),
            )));
        };
        match self.peers.configured(&domain) {
            Some(p) if p.cfg.auth != PeerAuth::Mtls => Ok(p),
            _ => {
                self.metrics.refused.with_label_values(&["auth"]).inc();
                Err(Box::new(respond(
                    StatusCode::FORBIDDEN,
                    Some(status_body(status(
                        code::INVALID_SESSION,
                        format!("peer {domain} must use mutual TLS"),
                    ))),
                )))
            }
        }
    }

    /// Our session ID towards a peer: the association's, else the peer's default.
    pub(crate) fn session_towards(&self, peer: &PeerRt) -> String {
        self.assoc
            .established(&peer.cfg.domain)
            .map(|e| e.our_session)
            .unwrap_or_else(|| peer.session_id.clone())
    }

    async fn on_peer_session(self: &Arc<Self>, s: Session, info: &ConnInfo) -> HttpResponse {
        let peer = match self.identify(&s, info) {
            Ok(p) => p,
            Err(resp) => return *resp,
        };
        if self.is_draining() && s.transactions.iter().any(|t| t.mode == Mode::Request) {
            return draining_refusal();
        }
        let mut immediate = rejected_answers(&s.rejected);
        let mut requests = Vec::new();
        let mut answers_accepted = 0;
        for t in s.transactions {
            match t.mode {
                Mode::Response => {
                    let tid = t.transaction_id.clone();
                    match self
                        .accept_answer(t, Leg::ToPeer, Some(&peer.cfg.domain))
                        .await
                    {
                        Some(st) => {
                            immediate.push(Transaction::response(tid, Primitive::Status(st)))
                        }
                        None => answers_accepted += 1,
                    }
                }
                Mode::Request => requests.push(t),
            }
        }
        // Refusals only: the whole POST failed (400); otherwise 200 with the refusals listed.
        let nothing_accepted = requests.is_empty() && answers_accepted == 0;
        match peer.cfg.mode {
            ResponseMode::Sync => {
                let futs = requests.into_iter().map(|t| {
                    let g = self.clone();
                    let p = peer.clone();
                    async move { g.inbound_request(&p, t, None).await }
                });
                immediate.extend(join_all(futs.map(Box::pin).collect()).await);
                let http = if nothing_accepted {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::OK
                };
                let body = self.answer_body(&peer, immediate);
                respond(http, Some(body))
            }
            ResponseMode::Async => {
                // Admitted before anything is spawned, so overload or a flood costs no task
                // per request.
                let mut spawned = 0;
                let mut refused = Vec::new();
                for t in requests {
                    let slot = match self.admit_peer(&peer) {
                        Ok(slot) => slot,
                        Err(st) => {
                            let label = t.primitive.label();
                            let answer = self
                                .metered("inbound", label, async { error_answer(&t.primitive, st) })
                                .await;
                            refused.push(Transaction::response(t.transaction_id, answer));
                            continue;
                        }
                    };
                    spawned += 1;
                    let g = self.clone();
                    let p = peer.clone();
                    let work = self.track();
                    tokio::spawn(async move {
                        let answer = g.inbound_request(&p, t, Some(slot)).await;
                        g.send_answers_to_peer(&p, vec![answer]).await;
                        drop(work);
                    });
                }
                if !refused.is_empty() {
                    if spawned == 0 && answers_accepted == 0 {
                        // Nothing of this POST taken in: HTTP 503, no SSP answers (the
                        // sender sends it all again later; no answer is given twice).
                        return retry_later();
                    }
                    // The rest was taken in: the refusals go back as answers, in one POST,
                    // as an asynchronous peer expects them.
                    let g = self.clone();
                    let p = peer.clone();
                    let work = self.track();
                    tokio::spawn(async move {
                        g.send_answers_to_peer(&p, refused).await;
                        drop(work);
                    });
                }
                if immediate.is_empty() {
                    respond(StatusCode::OK, None)
                } else {
                    let http = if nothing_accepted {
                        StatusCode::BAD_REQUEST
                    } else {
                        StatusCode::OK
                    };
                    respond(http, Some(self.answer_body(&peer, immediate)))
                }
            }
        }
    }

    /// Serialise answers for a peer: our session ID, its ID style and namespace, no core names.
    fn answer_body(&self, peer: &PeerRt, answers: Vec<Transaction>) -> String {
        let mut msg = Message::session(self.session_towards(peer), answers);
        let dir = self.dir.load();
        self.rw
            .emit_outbound(&dir, &mut msg, view(peer), &peer.cfg.namespace)
    }

    /// POST answers to an async peer; false if they could not be delivered.
    pub(crate) async fn send_answers_to_peer(
        &self,
        peer: &PeerRt,
        answers: Vec<Transaction>,
    ) -> bool {
        let mut m = Message::session(self.session_towards(peer), answers);
        let dir = self.dir.load();
        let body = self
            .rw
            .emit_outbound(&dir, &mut m, view(peer), &peer.cfg.namespace);
        drop(dir);
        let urls = self.peer_urls(peer).await;
        let target = Target {
            label: &peer.cfg.domain,
            client: &peer.client,
            urls: &urls,
        };
        self.deliver_answers(&target, &m, body).await
    }

    /// One request from `peer`, answered. `admitted`: its in-flight slot, when the caller
    /// already took it (with the peer's rate limit) through [`Gateway::admit_peer`].
    pub(crate) async fn inbound_request(
        &self,
        peer: &PeerRt,
        t: Transaction,
        admitted: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Transaction {
        let label = t.primitive.label();
        let answer = self
            .metered(
                "inbound",
                label,
                self.inbound_answer(peer, &t.transaction_id, t.primitive, admitted),
            )
            .await;
        Transaction::response(t.transaction_id, answer)
    }

    /// An in-flight slot for one more request from `peer`, within its rate limit.
    fn admit_peer(&self, peer: &PeerRt) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        let slot = self
            .admit()
            .ok_or_else(|| status(code::UNAVAILABLE, "gateway overloaded"))?;
        if peer.limiter.check().is_err() {
            self.metrics.refused.with_label_values(&["rate"]).inc();
            return Err(status(
                code::UNAVAILABLE,
                format!("rate limit for {} exceeded", peer.cfg.domain),
            ));
        }
        Ok(slot)
    }

    async fn inbound_answer(
        &self,
        peer: &PeerRt,
        tid: &str,
        request: Primitive,
        admitted: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Primitive {
        let req = &request;
        let _slot = match admitted {
            Some(slot) => slot,
            None => match self.admit_peer(peer) {
                Ok(slot) => slot,
                Err(st) => return error_answer(req, st),
            },
        };
        for o in req.originators() {
            match self.originator_ok(peer, o).await {
                Ok(()) => {}
                Err(Unplaced::Elsewhere) => {
                    self.metrics.refused.with_label_values(&["spoof"]).inc();
                    tracing::warn!(peer = %peer.cfg.domain, originator = o, "originator does not belong to the peer");
                    return error_answer(
                        req,
                        status(
                            code::ADDRESS_ERROR,
                            format!("originator {o} does not belong to {}", peer.cfg.domain),
                        ),
                    );
                }
                Err(Unplaced::Unverifiable(why)) => {
                    self.metrics
                        .refused
                        .with_label_values(&["unverified"])
                        .inc();
                    return error_answer(
                        req,
                        status(
                            code::UNAVAILABLE,
                            format!("originator {o} cannot be verified now: {why}"),
                        ),
                    );
                }
            }
        }
        if let Some(user) = req.meta().and_then(|m| m.requestor_user())
            && self
                .originators
                .check_key(&user.to_ascii_lowercase())
                .is_err()
        {
            self.metrics.refused.with_label_values(&["rate"]).inc();
            return error_answer(
                req,
                status(code::UNAVAILABLE, format!("rate limit for {user} exceeded")),
            );
        }
        let route_by = req.route_by();
        let mut ours = Vec::new();
        let mut unknown = Vec::new();
        for rb in &route_by {
            match self.is_ours(rb) {
                Ok(true) => ours.push(rb.as_str().to_owned()),
                Ok(false) => unknown.push((
                    rb.as_str().to_owned(),
                    status(
                        code::UNKNOWN_USER,
                        format!(
                            "{} is not a subscriber of {}",
                            rb.as_str(),
                            self.cfg.gateway.public_domain
                        ),
                    ),
                )),
                Err(st) => unknown.push((rb.as_str().to_owned(), st)),
            }
        }
        if !unknown.is_empty() {
            self.metrics.refused.with_label_values(&["relay"]).inc();
        }
        if !route_by.is_empty() && ours.is_empty() {
            return merge(req, Vec::new(), unknown);
        }
        if unknown.is_empty() {
            // All of it goes to the core, moved rather than copied; its answer is the answer.
            let form = ErrorForm::of(req);
            return match self.to_core(request, tid, &peer.cfg.domain).await {
                Ok(a) => a,
                Err(st) => form.answer(st),
            };
        }
        let keep: Vec<&str> = ours.iter().map(String::as_str).collect();
        let part = split(req, &keep);
        let answer = match self.to_core(part, tid, &peer.cfg.domain).await {
            Ok(a) => a,
            Err(st) => error_answer(req, st),
        };
        merge(req, vec![PartResult { ids: ours, answer }], unknown)
    }

    /// Send one request primitive to the core (IDs rewritten to the core's) and return the
    /// answer primitive. `origin_peer` is "" for on-net traffic from our own core.
    pub(crate) async fn to_core(
        &self,
        part: Primitive,
        origin_tid: &str,
        origin_peer: &str,
    ) -> Result<Primitive, Status> {
        let Some(core) = &self.core else {
            return Err(status(code::UNAVAILABLE, "no [core] configured"));
        };
        let target = Target {
            label: "core",
            client: &core.client,
            urls: &core.urls,
        };
        let deadline = Instant::now() + self.cfg.timeouts.request;
        // A core authenticated by association gets our session ID of that association.
        let session = match &self.cfg.core {
            Some(c) if c.auth == crate::config::CoreAuth::Association => {
                let domain = self.rw.primary_core_domain().to_owned();
                self.associate(&domain, &target, NS_WV_SSP_13, deadline)
                    .await?
                    .our_session
            }
            _ => self.core_session.clone(),
        };
        let rid = self.pending.next_id();
        let tid = self
            .keys
            .issue(Leg::ToCore, rid, 0, 1, origin_tid, origin_peer);
        let mut msg = Message::session(session, vec![Transaction::request(tid.clone(), part)]);
        let dir = self.dir.load();
        self.rw
            .rewrite(&dir, &mut msg, Direction::Inbound, self.core_view());
        drop(dir);
        let body = msg.emit(NS_WV_SSP_13);
        self.exchange(&target, &msg, body, rid, &tid, deadline)
            .await
            .map(|t| t.primitive)
    }

    /// Whether a route-by value names one of our subscribers (or our own domain).
    fn is_ours(&self, rb: &RouteBy) -> Result<bool, Status> {
        let dir = self.dir.load();
        match super::route::route_number(&self.cfg, rb)? {
            Some(n) => Ok(dir.is_subscriber(n)),
            None => {
                let RouteBy::Id(s) = rb else { return Ok(false) };
                let id =
                    WvId::parse(s).map_err(|e| status(code::INVALID_USER_ID, e.to_string()))?;
                Ok(id.domain.as_deref() == Some(self.rw.public_domain()))
            }
        }
    }

    /// Whether an originator ID may come from `peer` (profile section 7, 901).
    async fn originator_ok(&self, peer: &PeerRt, originator: &str) -> Result<(), Unplaced> {
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
            if self.dir.load().is_subscriber(n) {
                // One of *our* numbers claimed by another operator.
                return Err(Unplaced::Elsewhere);
            }
            return match &self.resolver {
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

    /// An answer to one of our requests (`leg` says which). Returns an error status to give
    /// back when the transaction ID is forged, foreign or stale.
    pub(crate) async fn accept_answer(
        self: &Arc<Self>,
        t: Transaction,
        leg: Leg,
        from_peer: Option<&str>,
    ) -> Option<Status> {
        let tok = match self.keys.open(&t.transaction_id) {
            Ok(tok) if tok.leg == leg && from_peer.is_none_or(|p| p == tok.peer) => tok,
            Ok(_) => {
                self.metrics
                    .orphan_answers
                    .with_label_values(&["wrong-leg"])
                    .inc();
                return Some(status(
                    code::INVALID_TRANSACTION,
                    format!("transaction {} was not sent to you", t.transaction_id),
                ));
            }
            Err(e) => {
                self.metrics
                    .orphan_answers
                    .with_label_values(&["unknown"])
                    .inc();
                tracing::warn!(tid = %t.transaction_id, error = %e, "answer with an unknown transaction ID");
                return Some(status(
                    code::INVALID_TRANSACTION,
                    format!("transaction {}: {e}", t.transaction_id),
                ));
            }
        };
        let ours = tok.instance == self.keys.instance();
        if ours && self.pending.complete(tok.request_id, t.clone()) {
            return None;
        }
        if !ours && self.sibling_of(&tok).is_some() {
            // Another replica's request: hand the answer over in the background, so that the
            // sender's POST is acknowledged at once whatever that replica's state.
            let g = self.clone();
            let work = self.track();
            tokio::spawn(async move {
                let _work = work;
                g.hand_over(tok, t, leg).await;
            });
            return None;
        }
        self.route_unclaimed(tok, t, leg, ours);
        None
    }

    /// An answer no request here waits for. Our own request: the answer is late, and its
    /// request was already answered (504); a second answer must not follow. A predecessor's
    /// request (this replica restarted): nobody else can deliver it, so it is routed by its
    /// token alone while its request's deadline has not passed. Delivery runs on its own
    /// task: the POST that brought the answer may end (its sender gives up waiting) before
    /// delivery does, and must not take the delivery with it.
    pub(crate) fn route_unclaimed(
        self: &Arc<Self>,
        tok: Token,
        t: Transaction,
        leg: Leg,
        ours: bool,
    ) {
        let age = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .saturating_sub(u64::from(tok.issued));
        if ours || tok.parts != 1 || age >= self.cfg.timeouts.request.as_secs() {
            self.metrics
                .orphan_answers
                .with_label_values(&["late"])
                .inc();
            tracing::info!(tid = %t.transaction_id, "late answer dropped (its request was already answered)");
            return;
        }
        if !self.first_routed(&tok) {
            self.metrics
                .orphan_answers
                .with_label_values(&["duplicate"])
                .inc();
            tracing::info!(tid = %t.transaction_id, "answer already routed by its token: dropped");
            return;
        }
        tracing::info!(tid = %t.transaction_id, "answer to a request of a previous gateway process: routing it by its token");
        let answer = Transaction::response(tok.origin_tid.clone(), t.primitive);
        let g = self.clone();
        let work = self.track();
        tokio::spawn(async move {
            let delivered = match leg {
                Leg::ToPeer => g.send_answers_to_core(vec![answer]).await,
                Leg::ToCore => match g.peers.get(&tok.peer) {
                    Some(p) => g.send_answers_to_peer(&p, vec![answer]).await,
                    None => {
                        g.metrics
                            .orphan_answers
                            .with_label_values(&["undeliverable"])
                            .inc();
                        false
                    }
                },
            };
            if !delivered {
                // Not delivered: a copy sent again may still get through.
                g.forget_routed(&tok);
            }
            drop(work);
        });
    }

    /// Handle a `SetupTransaction` from a peer or from the core.
    pub(crate) fn on_setup(
        self: &Arc<Self>,
        t: SetupTransaction,
        from: SetupFrom,
        remote: Option<std::net::IpAddr>,
    ) -> HttpResponse {
        match t.mode {
            Mode::Response => match self.assoc.on_response(t) {
                Ok(()) => respond(StatusCode::OK, None),
                Err(e) => {
                    tracing::info!(error = %e, "unmatched association answer");
                    respond(StatusCode::BAD_REQUEST, None)
                }
            },
            Mode::Request => {
                let allowed = |domain: &str| match &from {
                    SetupFrom::Core => self.cfg.gateway.core_domains.iter().any(|d| d == domain),
                    SetupFrom::Peer(certs) => match self.peers.configured(domain) {
                        // A peer that must use mutual TLS may associate only over such a
                        // connection.
                        Some(p) if p.cfg.auth == PeerAuth::Mtls => certs
                            .as_deref()
                            .and_then(|c| c.first())
                            .is_some_and(|c| cert_names_domain(c, domain)),
                        Some(_) => true,
                        None => false,
                    },
                };
                match self.assoc.on_request(&t, allowed, remote) {
                    Ok((domain, reply)) => {
                        self.metrics.associations.set(self.assoc.count() as i64);
                        let g = self.clone();
                        let to_core = matches!(from, SetupFrom::Core);
                        let work = self.track();
                        // Answer on the claimed domain's own address: the return-path check.
                        tokio::spawn(async move {
                            let within = g.cfg.timeouts.association;
                            let delivered = if to_core {
                                match &g.core {
                                    Some(core) => {
                                        let target = Target {
                                            label: "core",
                                            client: &core.client,
                                            urls: &core.urls,
                                        };
                                        g.deliver(&target, &reply, reply.emit(NS_WV_SSP_13), within)
                                            .await
                                    }
                                    None => false,
                                }
                            } else {
                                match g.peers.get(&domain) {
                                    Some(peer) => {
                                        let urls = g.peer_urls(&peer).await;
                                        let target = Target {
                                            label: &peer.cfg.domain,
                                            client: &peer.client,
                                            urls: &urls,
                                        };
                                        g.deliver(
                                            &target,
                                            &reply,
                                            reply.emit(&peer.cfg.namespace),
                                            within,
                                        )
                                        .await
                                    }
                                    None => false,
                                }
                            };
                            if !delivered {
                                tracing::warn!(%domain, "association answer could not be delivered");
                            }
                            drop(work);
                        });
                        respond(StatusCode::OK, None)
                    }
                    Err(e) => {
                        self.metrics.refused.with_label_values(&["auth"]).inc();
                        tracing::warn!(error = %e, "association step refused");
                        let http = match e {
                            super::assoc::AssocError::Malformed(_) => StatusCode::BAD_REQUEST,
                            _ => StatusCode::FORBIDDEN,
                        };
                        respond(http, None)
                    }
                }
            }
        }
    }

    fn tap_enabled(&self) -> bool {
        self.tap.is_some()
    }
}

/// HTTP 503 for a POST carrying new requests while draining: nothing of it was accepted, so
/// the sender fails over or retries.
pub(crate) fn draining_refusal() -> HttpResponse {
    let mut r = respond(
        StatusCode::SERVICE_UNAVAILABLE,
        Some(status_body(status(
            code::UNAVAILABLE,
            "gateway is shutting down",
        ))),
    );
    r.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    r
}

/// Where a `SetupTransaction` came from.
pub(crate) enum SetupFrom {
    /// The peer listener, with the client certificate if one was presented.
    Peer(Option<Vec<rustls_pki_types::CertificateDer<'static>>>),
    /// The core listener.
    Core,
}

/// HTTP 503 with `Retry-After` and no body: nothing of the POST was taken in.
pub(crate) fn retry_later() -> HttpResponse {
    let mut r = respond(StatusCode::SERVICE_UNAVAILABLE, None);
    r.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("30"),
    );
    r
}

/// How a peer wants IDs written.
pub(crate) fn view(peer: &PeerRt) -> PeerView<'_> {
    PeerView {
        style: peer.cfg.id_style,
        domain: Some(&peer.cfg.domain),
    }
}

/// A body holding one bare Status (for HTTP-level refusals).
pub(crate) fn status_body(st: Status) -> String {
    Message::session("", vec![Transaction::response("", Primitive::Status(st))]).emit(NS_WV_SSP_13)
}

/// 400 answers for transactions refused individually (only those with an ID can be answered).
fn rejected_answers(rejected: &[RejectedTransaction]) -> Vec<Transaction> {
    rejected
        .iter()
        .filter(|r| r.mode != Some(Mode::Response))
        .map(|r| {
            Transaction::response(
                r.transaction_id.clone().unwrap_or_default(),
                Primitive::Status(status(code::BAD_REQUEST, r.reason.clone())),
            )
        })
        .collect()
}

/// Run futures concurrently on this task and collect their outputs in order.
pub(crate) async fn join_all<F: std::future::Future + Unpin>(mut futs: Vec<F>) -> Vec<F::Output> {
    use std::future::poll_fn;
    use std::task::Poll;
    let mut outs: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if outs[i].is_none() {
                match std::pin::Pin::new(f).poll(cx) {
                    Poll::Ready(v) => outs[i] = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outs.into_iter().flatten().collect()
}
