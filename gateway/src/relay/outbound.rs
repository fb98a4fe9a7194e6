//! The core-facing listener: the core's requests to the world, and its answers to requests
//! peers sent it.
//!
//! For each request: find a destination for every route-by ID, split the request per
//! destination, rewrite each part for its peer, send the parts concurrently, merge the answers
//! into one, map it back to the core's IDs and deliver it to the core.

use std::sync::Arc;

use http::{Request, StatusCode, Uri};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::Gateway;
use super::exchange::Target;
use super::http::{ConnInfo, HttpResponse, respond};
use super::inbound::{Parsed, draining_refusal, join_all, status_body, view};
use super::merge::{ErrorForm, PartResult, error_answer, merge, split, status};
use super::peers::PeerRt;
use super::route::{Dest, Remote, no_route, route_static};
use crate::config::{CoreAuth, PeerAuth, ResponseMode};
use crate::rewrite::Direction;
use crate::ssp::walk::RouteBy;
use crate::ssp::{
    Body, Message, Mode, NS_WV_SSP_13, Primitive, Status, Transaction, status as code,
};
use crate::token::Leg;

/// Route-by IDs (recipients, watched users) in one request from the core.
const MAX_ROUTE_BY: usize = 255;

impl Gateway {
    /// `POST /` on the core listener.
    pub(crate) async fn on_core(
        self: &Arc<Self>,
        req: Request<Incoming>,
        info: Arc<ConnInfo>,
    ) -> HttpResponse {
        let _work = self.track();
        if let Some(c) = &self.cfg.core {
            let allowed_addr = c.allow.iter().any(|n| n.contains(&info.remote.ip()));
            let ok = match c.auth {
                CoreAuth::Allowlist => allowed_addr,
                CoreAuth::Mtls => info.certs.as_ref().is_some_and(|c| !c.is_empty()),
                // The association proves the core; an allowlist, if given, still applies.
                CoreAuth::Association => c.allow.is_empty() || allowed_addr,
            };
            if !ok {
                self.metrics.refused.with_label_values(&["auth"]).inc();
                tracing::warn!(remote = %info.remote, "refused a core connection that is not the core");
                return respond(StatusCode::FORBIDDEN, None);
            }
        }
        let msg = match self.read_message(req, "core").await {
            Parsed::Ok(m) => m,
            Parsed::Answer(a) => return a,
        };
        let by_association = self
            .cfg
            .core
            .as_ref()
            .is_some_and(|c| c.auth == CoreAuth::Association);
        let s = match msg.body {
            Body::Session(s) => s,
            Body::Setup(t) if by_association => {
                return self.on_setup(
                    t,
                    super::inbound::SetupFrom::Core,
                    Some(info.remote.ip().to_canonical()),
                );
            }
            Body::Setup(_) => {
                return respond(
                    StatusCode::BAD_REQUEST,
                    Some(status_body(status(
                        code::BAD_REQUEST,
                        "the core is authenticated by address or certificate; no association is needed",
                    ))),
                );
            }
        };
        if by_association
            && !self
                .assoc
                .domain_of_session(&s.session_id)
                .is_some_and(|d| self.rw.is_own_domain(Some(&d)))
        {
            self.metrics.refused.with_label_values(&["auth"]).inc();
            return respond(
                StatusCode::BAD_REQUEST,
                Some(status_body(status(
                    code::INVALID_SESSION,
                    format!("unknown or expired session {:?}", s.session_id),
                ))),
            );
        }
        if self.is_draining() && s.transactions.iter().any(|t| t.mode == Mode::Request) {
            return draining_refusal();
        }
        let mut immediate: Vec<Transaction> = s
            .rejected
            .iter()
            .filter(|r| r.mode != Some(Mode::Response))
            .map(|r| {
                Transaction::response(
                    r.transaction_id.clone().unwrap_or_default(),
                    Primitive::Status(status(code::BAD_REQUEST, r.reason.clone())),
                )
            })
            .collect();
        let mut requests = Vec::new();
        let mut answers_accepted = 0;
        for t in s.transactions {
            match t.mode {
                Mode::Response => {
                    let tid = t.transaction_id.clone();
                    match self.accept_answer(t, Leg::ToCore, None).await {
                        Some(st) => {
                            immediate.push(Transaction::response(tid, Primitive::Status(st)))
                        }
                        None => answers_accepted += 1,
                    }
                }
                Mode::Request => requests.push(t),
            }
        }
        let mode = self.core.as_ref().map(|c| c.mode).unwrap_or_default();
        match mode {
            ResponseMode::Sync => {
                let futs = requests.into_iter().map(|t| {
                    let g = self.clone();
                    Box::pin(async move { g.outbound_request(t, None).await })
                });
                immediate.extend(join_all(futs.collect()).await);
                respond(StatusCode::OK, Some(self.core_body(immediate)))
            }
            ResponseMode::Async => {
                // Admitted before anything is spawned (see the inbound side).
                let mut spawned = 0;
                let mut refused = Vec::new();
                for t in requests {
                    let Some(slot) = self.admit() else {
                        let label = t.primitive.label();
                        let answer = self
                            .metered("outbound", label, async {
                                error_answer(
                                    &t.primitive,
                                    status(code::UNAVAILABLE, "gateway overloaded"),
                                )
                            })
                            .await;
                        refused.push(Transaction::response(t.transaction_id, answer));
                        continue;
                    };
                    spawned += 1;
                    let g = self.clone();
                    let work = self.track();
                    tokio::spawn(async move {
                        let answer = g.outbound_request(t, Some(slot)).await;
                        g.send_answers_to_core(vec![answer]).await;
                        drop(work);
                    });
                }
                if !refused.is_empty() {
                    if spawned == 0 && answers_accepted == 0 {
                        return super::inbound::retry_later();
                    }
                    let g = self.clone();
                    let work = self.track();
                    tokio::spawn(async move {
                        g.send_answers_to_core(refused).await;
                        drop(work);
                    });
                }
                if immediate.is_empty() {
                    respond(StatusCode::OK, None)
                } else {
                    respond(StatusCode::OK, Some(self.core_body(immediate)))
                }
            }
        }
    }

    /// Serialise answers for the core (IDs mapped to the core's).
    fn core_body(&self, answers: Vec<Transaction>) -> String {
        let mut msg = Message::session(self.core_session_id(), answers);
        let dir = self.dir.load();
        self.rw
            .rewrite(&dir, &mut msg, Direction::Inbound, self.core_view());
        msg.emit(NS_WV_SSP_13)
    }

    /// POST answers to the core (async core); false if they could not be delivered.
    pub(crate) async fn send_answers_to_core(&self, answers: Vec<Transaction>) -> bool {
        let Some(core) = &self.core else { return false };
        let mut msg = Message::session(self.core_session_id(), answers);
        let dir = self.dir.load();
        self.rw
            .rewrite(&dir, &mut msg, Direction::Inbound, self.core_view());
        drop(dir);
        let body = msg.emit(NS_WV_SSP_13);
        let target = Target {
            label: "core",
            client: &core.client,
            urls: &core.urls,
        };
        self.deliver_answers(&target, &msg, body).await
    }

    /// One request from the core, start to answer. `admitted`: its in-flight slot, when the
    /// caller already took it.
    pub(crate) async fn outbound_request(
        &self,
        t: Transaction,
        admitted: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Transaction {
        let Transaction {
            transaction_id: tid,
            primitive: request,
            ..
        } = t;
        let label = request.label();
        let answer = self.metered("outbound", label, async {
            match admitted.or_else(|| self.admit()) {
                Some(_slot) => self.outbound_answer(&tid, request).await,
                None => error_answer(&request, status(code::UNAVAILABLE, "gateway overloaded")),
            }
        });
        let answer = answer.await;
        Transaction::response(tid, answer)
    }

    /// Where one route-by value goes.
    pub(crate) async fn route(&self, rb: &RouteBy, req: &Primitive) -> Dest {
        let dir = self.dir.load_full();
        if let Some(d) = route_static(&self.cfg, &dir, &self.rw, rb) {
            return d;
        }
        match &self.resolver {
            Some(r) => r.route(&self.cfg, rb, req).await,
            None => no_route(rb),
        }
    }

    async fn outbound_answer(&self, tid: &str, request: Primitive) -> Primitive {
        let req = &request;
        let route_by = req.route_by();
        if route_by.is_empty() {
            return error_answer(
                req,
                status(
                    code::DOMAIN_NOT_SUPPORTED,
                    format!("a {} names no destination to route by", req.name()),
                ),
            );
        }
        // Each ID may cost DNS lookups, and the parts of a split request are numbered in a
        // byte of the transaction ID: a bound on both.
        if route_by.len() > MAX_ROUTE_BY {
            return error_answer(
                req,
                status(
                    code::BAD_REQUEST,
                    format!(
                        "{} recipients in one request; at most {MAX_ROUTE_BY}",
                        route_by.len()
                    ),
                ),
            );
        }
        // Group route-by IDs by destination, keeping first-seen order.
        let mut groups: Vec<(Dest, Vec<String>)> = Vec::new();
        let mut failed: Vec<(String, Status)> = Vec::new();
        for rb in &route_by {
            match self.route(rb, req).await {
                Dest::Fail(st) => failed.push((rb.as_str().to_owned(), st)),
                d => match groups.iter_mut().find(|(g, _)| *g == d) {
                    Some((_, ids)) => ids.push(rb.as_str().to_owned()),
                    None => groups.push((d, vec![rb.as_str().to_owned()])),
                },
            }
        }
        let parts = groups.len();
        if parts == 1 && failed.is_empty() {
            // One destination for everything: the request goes on moved, not copied, and its
            // answer is the answer.
            if let Some((dest, _)) = groups.pop() {
                let form = ErrorForm::of(req);
                return match self.send_part(dest, request, tid, 0, 1).await {
                    Ok(a) => a,
                    Err(st) => form.answer(st),
                };
            }
        }
        let futs = groups.into_iter().enumerate().map(|(i, (dest, ids))| {
            let keep: Vec<&str> = ids.iter().map(String::as_str).collect();
            let part = split(req, &keep);
            Box::pin(async move {
                let answer = self.send_part(dest, part, tid, i, parts).await;
                PartResult {
                    answer: answer.unwrap_or_else(|st| error_answer(req, st)),
                    ids,
                }
            })
        });
        let results = join_all(futs.collect()).await;
        merge(req, results, failed)
    }

    /// Send part `i` of `parts` of a request to its destination, for its answer.
    async fn send_part(
        &self,
        dest: Dest,
        part: Primitive,
        tid: &str,
        i: usize,
        parts: usize,
    ) -> Result<Primitive, Status> {
        match dest {
            Dest::Core => self.to_core(part, tid, "").await,
            Dest::Remote(r) => {
                // Between operators the searched number travels as +E164.
                let (part, searched) = self.canonical_search(part);
                // Both below MAX_ROUTE_BY + 1 (checked by the caller).
                let (i, n) = (
                    u8::try_from(i).unwrap_or(u8::MAX),
                    u8::try_from(parts).unwrap_or(u8::MAX),
                );
                let answer = self.to_peer(&r, part, tid, i, n).await;
                match searched {
                    Some(n) => Ok(self.unregistered_search(n, answer)),
                    None => answer,
                }
            }
            Dest::Fail(st) => Err(st),
        }
    }

    /// A search by mobile number with the number rewritten to `+E164`, and that number.
    fn canonical_search(&self, mut part: Primitive) -> (Primitive, Option<crate::ssp::E164>) {
        let Primitive::SearchRequest(s) = &mut part else {
            return (part, None);
        };
        let Some(pair) = s
            .pairs
            .iter_mut()
            .find(|p| p.element.eq_ignore_ascii_case("USER_MOBILE_NUMBER"))
        else {
            return (part, None);
        };
        match self.cfg.plan.normalise(&pair.string) {
            Ok(n) => {
                pair.string = format!("+{n}");
                (part, Some(n))
            }
            Err(_) => (part, None),
        }
    }

    /// The seed's "add regardless if that user is registered": when the operator ENUM names
    /// does not know the number (531, or no findings), answer with its `wv:+MSISDN` anyway
    /// where policy allows. Other answers pass through.
    fn unregistered_search(
        &self,
        n: crate::ssp::E164,
        answer: Result<Primitive, Status>,
    ) -> Primitive {
        let unknown = match &answer {
            Err(st) => st.code == code::UNKNOWN_USER,
            Ok(Primitive::SearchResponse(r)) => {
                r.results.is_empty()
                    && r.status
                        .as_ref()
                        .is_none_or(|s| s.is_success() || s.code == code::UNKNOWN_USER)
            }
            Ok(p) => super::merge::answer_code(p) == code::UNKNOWN_USER,
        };
        if unknown && self.cfg.policy.search_unregistered_answer {
            return Primitive::SearchResponse(crate::ssp::primitives::SearchResponse {
                search_id: None,
                findings: Some("1".into()),
                completion_flag: Some("T".into()),
                search_index: Some("1".into()),
                status: Some(Status::with(
                    code::OK,
                    "number not registered at its operator; returned as is",
                )),
                results: vec![crate::ssp::Entity::user(format!("wv:+{n}"))],
                ext: Default::default(),
            });
        }
        match answer {
            Ok(p) => p,
            Err(st) => Primitive::SearchResponse(crate::ssp::primitives::SearchResponse {
                status: Some(st),
                findings: Some("0".into()),
                ..Default::default()
            }),
        }
    }

    /// The URLs of a peer: configured ones first, then DNS-found ones.
    pub(crate) async fn peer_urls(&self, peer: &PeerRt) -> Vec<Uri> {
        if !peer.urls.is_empty() {
            return peer.urls.clone();
        }
        match &self.resolver {
            Some(r) => r.peer_urls(&peer.cfg.domain).await,
            None => Vec::new(),
        }
    }

    /// Send one part to a peer and return its answer primitive (IDs still in public form).
    async fn to_peer(
        &self,
        r: &Remote,
        part: Primitive,
        core_tid: &str,
        i: u8,
        n: u8,
    ) -> Result<Primitive, Status> {
        let peer = self.peers.get(&r.domain).ok_or_else(|| {
            status(
                code::UNAVAILABLE,
                format!("no TLS profile for {}", r.domain),
            )
        })?;
        let urls: Vec<Uri> = if r.urls.is_empty() {
            self.peer_urls(&peer).await
        } else {
            r.urls.iter().filter_map(|u| u.parse().ok()).collect()
        };
        let deadline = Instant::now() + self.cfg.timeouts.request;
        let session = if peer.cfg.auth == PeerAuth::Association {
            let target = Target {
                label: &peer.cfg.domain,
                client: &peer.client,
                urls: &urls,
            };
            self.associate(&peer.cfg.domain, &target, &peer.cfg.namespace, deadline)
                .await?
                .our_session
        } else {
            self.session_towards(&peer)
        };
        let rid = self.pending.next_id();
        let tid = self
            .keys
            .issue(Leg::ToPeer, rid, i, n, core_tid, &peer.cfg.domain);
        let mut msg = Message::session(session, vec![Transaction::request(tid.clone(), part)]);
        let dir = self.dir.load();
        let body = self
            .rw
            .emit_outbound(&dir, &mut msg, view(&peer), &peer.cfg.namespace);
        drop(dir);
        let target = Target {
            label: &peer.cfg.domain,
            client: &peer.client,
            urls: &urls,
        };
        self.exchange(&target, &msg, body, rid, &tid, deadline)
            .await
            .map(|t| t.primitive)
    }

    /// Make sure an association with `domain` (a peer, or the core) is up, running the
    /// initiator role towards `target` if needed, within `deadline`.
    pub(crate) async fn associate(
        &self,
        domain: &str,
        target: &Target<'_>,
        namespace: &str,
        deadline: Instant,
    ) -> Result<super::assoc::Established, Status> {
        if let Some(e) = self.assoc.established(domain) {
            return Ok(e);
        }
        let lock = self.assoc_lock(domain);
        let _guard = tokio::time::timeout_at(deadline, lock.lock())
            .await
            .map_err(|_| {
                status(
                    code::UNAVAILABLE,
                    format!("association with {domain} is still being set up"),
                )
            })?;
        if let Some(e) = self.assoc.established(domain) {
            return Ok(e);
        }
        let deadline = deadline.min(Instant::now() + self.cfg.timeouts.association);
        let result = self
            .run_association(domain, target, namespace, deadline)
            .await;
        if result.is_err() {
            self.assoc.abort(domain);
        }
        self.metrics.associations.set(self.assoc.count() as i64);
        result.map_err(|e| {
            tracing::warn!(%domain, error = %e, "association failed");
            status(
                code::UNAVAILABLE,
                format!("association with {domain} failed: {e}"),
            )
        })
    }

    async fn run_association(
        &self,
        domain: &str,
        target: &Target<'_>,
        namespace: &str,
        deadline: Instant,
    ) -> Result<super::assoc::Established, String> {
        let (_tid, first, mut rx) = self.assoc.begin(domain);
        let send = |m: Message| {
            let body = m.emit(namespace);
            async move {
                self.tap(super::TapDir::Out, target.label, &body);
                match self.send_with_failover(target, &body, &m, deadline).await {
                    Ok((s, _)) if s.is_success() => Ok(()),
                    Ok((s, _)) => Err(format!("HTTP {}", s.as_u16())),
                    Err(st) => Err(st.description.unwrap_or_default()),
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
}
