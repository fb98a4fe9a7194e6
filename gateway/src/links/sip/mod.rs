//! The SIP/SIMPLE translator: a link like the core and the SSP peers, for destinations DNS
//! shows reachable by SIP and not by IMPS (the use cases' alternative flows), and a source of
//! requests from the SIP operators `[[sip.peer]]` trusts.
//!
//! - Outbound: a `SendMessageRequest` becomes a `MESSAGE` (RFC 3428) from our user as
//!   `sip:+MSISDN@<public domain>;user=phone` to the URI DNS gave; the SIP answer becomes the
//!   SSP answer (`map`). What may wait (a 480, a 5xx, a timeout) waits like any message.
//! - Inbound: a `MESSAGE` to one of our subscribers from a trusted SIP operator becomes a
//!   `SendMessageRequest` to the core; its sender is `wv:+MSISDN` when ENUM places the number
//!   at the sending domain (the same anti-spoofing as SSP), else `wv:user@domain`.
//!
//! - Presence, our users watching SIP users: `presence` (SUBSCRIBE dialogs, NOTIFY to
//!   `PresenceNotification`); SIP users watching ours: `watch` (SUBSCRIBE to
//!   `SubscribeRequest`, the core's `PresenceNotification` to NOTIFY). The PIDF codec and
//!   the presence mapping are in `pidf`.
//!
//! The SIP stack itself is behind `stack`.

pub(crate) mod dialogs;
pub(crate) mod imdn;
pub(crate) mod map;
pub(crate) mod pidf;
pub(crate) mod presence;
pub(crate) mod stack;
pub(crate) mod trust;
pub(crate) mod watch;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use base64::Engine;

use super::Links;
use crate::config::SipSpec;
use crate::error::{Failure, Kind, Side};
use crate::rewrite::PeerView;
use crate::ssp::primitives::{SendMessageRequest, SendMessageResponse};
use crate::ssp::{MessageInfo, Party, Primitive, Status, Transaction, status};
use map::SipAddress;
use stack::{Incoming, Outgoing, Requests, Stack, Transport};

/// The description of a `SendMessageResponse` for a MESSAGE the far end answered 200 (its
/// user agent took it): what a delivery report is made from.
pub(crate) const DELIVERED: &str = "Delivered";

/// The methods the translator takes.
pub(crate) const ALLOW: &str = "MESSAGE, SUBSCRIBE, NOTIFY, OPTIONS";

/// Bodies above this go over TCP, whatever the server offers first (RFC 3261 §18.1.1).
const UDP_MAX: usize = 1300;

/// One SIP server of a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipServer {
    /// Its address.
    pub addr: SocketAddr,
    /// Whether DNS offered it for TCP (else UDP).
    pub tcp: bool,
    /// Whether DNS offered it for TLS (`_sips._tcp`, `SIPS+D2T`): never sent to in clear.
    pub tls: bool,
}

/// A destination reachable by SIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipTarget {
    /// Its domain.
    pub domain: String,
    /// The Request-URI.
    pub uri: String,
    /// Its servers, in the order to try.
    pub servers: Vec<SipServer>,
}

/// The SIP link: the stack and what it was configured with.
#[derive(Debug)]
pub(crate) struct SipLink {
    stack: Stack,
    spec: SipSpec,
    subs: presence::Subscriptions,
    watches: watch::Watches,
    /// The replica this is (its dialogs are its own).
    owner: String,
    /// Each `[[sip.peer]]`'s rate limit, by domain.
    limits: std::collections::HashMap<String, governor::DefaultDirectRateLimiter>,
    /// The certificate check of each peer trusted over TLS.
    certs: trust::CertChecks,
    /// The state store (messages awaiting an IMDN notification are kept in it).
    store: Option<std::sync::Arc<crate::store::Store>>,
}

/// The store table of messages awaiting a delivery notification, by `imdn.Message-ID`.
const IMDN_TABLE: &str = "sip.imdn";

/// A message sent with a delivery notification asked for: what its report is made of.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct AwaitingNotification {
    /// The SIP domain it went to (the notification must come from there).
    domain: String,
    /// Our sender's public ID (`wv:+MSISDN`).
    sender: String,
    /// The recipient's ID as the core wrote it.
    recipient: String,
    /// The SSP message ID.
    message_id: Option<String>,
}

impl SipLink {
    /// Bind the SIP listeners of `spec`; `timeout` bounds each transaction. The incoming
    /// requests are the caller's to serve.
    /// The presence dialogs replica `owner` kept in `store` are taken up again.
    pub(crate) async fn bind(
        spec: &SipSpec,
        tls: &crate::config::TlsSpec,
        identity: Option<std::sync::Arc<crate::tls::CertStore>>,
        timeout: Duration,
        store: Option<std::sync::Arc<crate::store::Store>>,
        owner: String,
    ) -> Result<(SipLink, Requests), stack::StackError> {
        let (setup, certs) = trust::setup(spec, tls, identity)
            .map_err(|e| stack::StackError(format!("SIP over TLS: {e}")))?;
        let (stack, requests) = Stack::bind(spec.listen, spec.advertise, setup, timeout).await?;
        Ok((
            SipLink {
                stack,
                spec: spec.clone(),
                subs: presence::Subscriptions::load(store.clone(), &owner).await,
                watches: watch::load(store.clone(), &owner).await,
                store,
                owner,
                limits: spec
                    .peers
                    .iter()
                    .map(|p| {
                        let rate = NonZeroU32::new(p.rate.max(1)).unwrap_or(NonZeroU32::MIN);
                        let burst = NonZeroU32::new(p.burst.max(1)).unwrap_or(NonZeroU32::MIN);
                        let quota = governor::Quota::per_second(rate).allow_burst(burst);
                        (
                            p.domain.to_ascii_lowercase(),
                            governor::RateLimiter::direct(quota),
                        )
                    })
                    .collect(),
                certs,
            },
            requests,
        ))
    }

    /// Our Contact for a request from `from` (our user's URI) over `transport`: the user at
    /// this stack's address, so what comes in the dialog comes here.
    pub(crate) fn contact(&self, from: &str, transport: Transport) -> String {
        let user = map::address(from).map(|a| a.user).unwrap_or_default();
        let at = if user.is_empty() {
            String::new()
        } else {
            format!("{user}@")
        };
        format!(
            "sip:{at}{};transport={}",
            self.stack.local_for(transport),
            transport.as_str()
        )
    }

    /// Where SIP peers reach us.
    pub(crate) fn local(&self) -> SocketAddr {
        self.stack.local()
    }

    /// The `[[sip.peer]]` that `req`, claiming to come from `domain`, is trusted as.
    pub(crate) fn trusted(
        &self,
        domain: &str,
        req: &Incoming,
    ) -> Option<&crate::config::SipPeerSpec> {
        trust::peer_of(&self.spec, &self.certs, domain, req)
    }

    /// Close the listeners.
    pub(crate) fn stop(&self) {
        self.stack.stop();
    }
}

/// An incoming SIP request taken, as an SSP request for the core.
#[derive(Debug)]
pub(crate) struct Taken {
    /// The trusted SIP domain it comes from.
    pub(crate) domain: String,
    /// The SSP request.
    pub(crate) transaction: Transaction,
    /// An IMDN notification's message ID: to forget once the core has the report.
    pub(crate) notification: Option<String>,
}

/// A refusal of an incoming SIP request: its code, reason (logged) and extra headers.
#[derive(Debug)]
pub(crate) struct SipRefusal {
    /// The SIP status code.
    pub(crate) code: u16,
    /// Why (for the log).
    pub(crate) why: String,
    /// Extra headers (`Allow`, `Accept`).
    pub(crate) headers: Vec<(&'static str, String)>,
}

fn refuse(code: u16, why: impl Into<String>) -> SipRefusal {
    SipRefusal {
        code,
        why: why.into(),
        headers: Vec::new(),
    }
}

impl Links {
    fn sip_link(&self) -> Result<&SipLink, Failure> {
        self.sip
            .get()
            .ok_or_else(|| Failure::local(Kind::NotSupported, "the SIP translator is not running"))
    }

    /// Send `request` (core IDs, as the pipeline holds it) to a SIP destination.
    pub(crate) async fn to_sip(
        &self,
        target: &SipTarget,
        request: Primitive,
    ) -> Result<Primitive, Failure> {
        let link = self.sip_link()?;
        let wants_report = request.wants_report();
        let m = match request {
            Primitive::SendMessageRequest(m) => m,
            Primitive::SubscribeRequest(r) => return self.sip_subscribe(link, target, &r).await,
            Primitive::UnsubscribeRequest(r) => return self.sip_unsubscribe(link, &r).await,
            Primitive::GetPresenceRequest(r) => return self.sip_fetch(link, target, &r).await,
            Primitive::PresenceNotification(n) => return self.sip_notify(link, &n).await,
            other => {
                return Err(Failure::local(
                    Kind::NotSupported,
                    format!(
                        "{} cannot be carried to {} over SIP",
                        other.name(),
                        target.domain
                    ),
                ));
            }
        };
        let info = m.info.clone().unwrap_or_default();
        let sender = info
            .sender
            .as_ref()
            .and_then(|p| p.entities.first())
            .map(|e| e.id.clone())
            .unwrap_or_default();
        let (public, from) = self.sip_our_user(&sender, "sender")?;
        let (ctype, body) = content(&m, &info)?;
        // A report asked of a peer whose agents speak IMDN comes from its notification.
        // The message's ID, chosen once: the answer and a later report carry the same.
        let message_id = info
            .message_id
            .clone()
            .unwrap_or_else(|| format!("sip-{:016x}", rand::random::<u64>()));
        let mut imdn_id = (wants_report
            && link.store.is_some()
            && link.spec.peer(&target.domain).is_some_and(|p| p.imdn))
        .then(|| format!("{:032x}", rand::random::<u128>()));
        // What the notification will be matched against is kept before the message goes: the
        // far end may notify before its answer reaches us. Not kept: no IMDN is asked for.
        if let Some(id) = &imdn_id {
            let a = AwaitingNotification {
                domain: target.domain.clone(),
                sender: public.clone(),
                recipient: info
                    .recipient
                    .as_ref()
                    .and_then(|r| r.entities.first())
                    .map(|e| e.id.clone())
                    .unwrap_or_default(),
                message_id: Some(message_id.clone()),
            };
            if !self.await_notification(link, id, &a).await {
                imdn_id = None;
            }
        }
        let (ctype, body) = match &imdn_id {
            Some(id) => (
                imdn::CPIM.to_owned(),
                imdn::wrap(&from, &target.uri, id, &ctype, &body),
            ),
            None => (ctype, body),
        };
        if body.len() > link.spec.max_body {
            return Err(Failure::local(
                Kind::TooLarge,
                format!(
                    "a {} byte message; SIP takes at most {}",
                    body.len(),
                    link.spec.max_body
                ),
            ));
        }
        let out = Outgoing {
            method: "MESSAGE",
            uri: target.uri.clone(),
            from,
            to: target.uri.clone(),
            headers: Vec::new(),
            body: Some((ctype, body.clone())),
            dest: SocketAddr::from(([127, 0, 0, 1], 0)),
            transport: Transport::Udp,
            domain: target.domain.clone(),
            dialog: None,
            contact: None,
            route: Vec::new(),
        };
        let started = std::time::Instant::now();
        let sent = self.sip_send(link, target, &out, body.len()).await;
        let failed = match &sent {
            Ok((reply, _)) => map::failure(reply.code, &reply.reason),
            Err(f) => Some(f.clone()),
        };
        if let (Some(_), Some(id)) = (&failed, &imdn_id) {
            // No notification will come for a message not taken (a retry asks anew).
            self.notified(id).await;
        }
        let (reply, _) = sent?;
        match failed {
            None => {
                tracing::debug!(to = %target.uri, code = reply.code, took = ?started.elapsed(), "SIP MESSAGE delivered");
                let awaits = imdn_id.is_some();
                Ok(Primitive::SendMessageResponse(SendMessageResponse {
                    message_id: Some(message_id),
                    // 200: the far end took it; 202: stored for later (Kamailio's msilo); with
                    // IMDN, the far end's agent says later whether it was delivered.
                    status: Some(Status::with(
                        status::OK,
                        if awaits {
                            "Sent; its delivery will be notified"
                        } else if reply.code == 200 {
                            DELIVERED
                        } else {
                            "Accepted for later delivery"
                        },
                    )),
                    ..Default::default()
                }))
            }
            Some(f) => Err(f),
        }
    }

    /// Keep `a` until its notification `id` comes (or the message's validity ends): whether
    /// it is kept (else the report comes from the SIP answer, as without IMDN).
    async fn await_notification(&self, link: &SipLink, id: &str, a: &AwaitingNotification) -> bool {
        let (Some(store), Ok(v)) = (&link.store, serde_json::to_string(a)) else {
            return false;
        };
        let ttl = self.cfg().store.max_validity;
        match store.table(IMDN_TABLE).put(id, &v, Some(ttl)).await {
            Ok(()) => true,
            Err(e) => {
                self.metrics
                    .store_errors
                    .with_label_values(&["sip-imdn"])
                    .inc();
                tracing::warn!(error = %e, "a message awaiting IMDN not kept; its report comes from the SIP answer");
                false
            }
        }
    }

    /// The notification `id` was reported to the core: forget its message.
    pub(crate) async fn notified(&self, id: &str) {
        if let Ok(link) = self.sip_link()
            && let Some(store) = &link.store
            && let Err(e) = store.table(IMDN_TABLE).delete(id).await
        {
            self.metrics
                .store_errors
                .with_label_values(&["sip-imdn"])
                .inc();
            tracing::warn!(error = %e, id, "a reported IMDN notification not forgotten");
        }
    }

    /// An IMDN notification (in `cpim`, of `req`) as a `DeliveryStatusReport` for the core,
    /// when it comes from the domain its message went to and names our user who sent it.
    async fn sip_notification(
        &self,
        link: &SipLink,
        req: &Incoming,
        cpim: &imdn::Cpim,
    ) -> Result<Taken, SipRefusal> {
        let n = imdn::notification(&cpim.body, link.spec.max_body)
            .map_err(|e| refuse(400, e.to_string()))?;
        let (domain, ours, theirs) = self.sip_parties(link, req).await?;
        let store = link
            .store
            .as_ref()
            .ok_or_else(|| refuse(404, "no message awaits a notification"))?;
        let a: AwaitingNotification = match store.table(IMDN_TABLE).get(&n.message_id).await {
            Ok(Some(v)) => serde_json::from_str(&v)
                .map_err(|e| refuse(500, format!("a kept IMDN record: {e}")))?,
            Ok(None) => {
                return Err(refuse(
                    404,
                    format!("no message {:?} awaits a notification", n.message_id),
                ));
            }
            Err(e) => {
                let mut r = refuse(503, format!("the store: {e}"));
                r.headers.push(("Retry-After", "30".into()));
                return Err(r);
            }
        };
        if !a.domain.eq_ignore_ascii_case(&domain) || a.sender != ours {
            return Err(refuse(
                403,
                format!("{domain} notifies of a message it was not sent"),
            ));
        }
        let (code, description) = n.disposition.status();
        let dsr = crate::ssp::primitives::DeliveryStatusReport {
            meta: Some(crate::ssp::MetaInfo::client(
                &format!("wv:@{domain}"),
                &theirs,
            )),
            result: Some(Status::with(code, description)),
            info: Some(MessageInfo {
                message_id: a.message_id,
                recipient: Some(Party::user(a.recipient)),
                sender: Some(Party::user(a.sender)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let tid = format!("sip-{:016x}", rand::random::<u64>());
        Ok(Taken {
            domain,
            transaction: Transaction::request(tid, Primitive::DeliveryStatusReport(dsr)),
            notification: Some(n.message_id),
        })
    }

    /// Our user `core_id` (the `what` of a request: sender, watcher) as (public ID, SIP URI
    /// by number at our domain); a user with no number cannot be named over SIP.
    pub(super) fn sip_our_user(
        &self,
        core_id: &str,
        what: &str,
    ) -> Result<(String, String), Failure> {
        let public = {
            let dir = self.dir.load();
            self.live
                .load()
                .rw
                .outbound_id(&dir, core_id, PeerView::default())
        };
        let uri = crate::ssp::WvId::parse(&public)
            .ok()
            .and_then(|id| id.e164())
            .map(|n| map::our_user(n, &self.cfg().operator.public_domain))
            .ok_or_else(|| {
                Failure::local(
                    Kind::InvalidUserId,
                    format!("the {what} has no number to be named by over SIP"),
                )
            })?;
        Ok((public, uri))
    }

    /// An incoming SIP request as an SSP request for the core: the trusted SIP domain it
    /// comes from, and the transaction. Refused: the SIP answer to give.
    pub(crate) async fn take_sip(&self, req: &Incoming) -> Result<Taken, SipRefusal> {
        let link = self.sip_link().map_err(|f| refuse(503, f.to_string()))?;
        self.metrics
            .sip
            .with_label_values(&["in", method_label(&req.method), "request"])
            .inc();
        if req.method != "MESSAGE" {
            // NOTIFY and SUBSCRIBE have their own (`presence`, `watch`).
            let mut r = refuse(405, format!("{} is not taken", req.method));
            r.headers.push(("Allow", ALLOW.into()));
            return Err(r);
        }
        if req.body.len() > link.spec.max_body {
            return Err(refuse(413, format!("a {} byte body", req.body.len())));
        }
        let mut ctype = req.content_type.clone().unwrap_or_default();
        let mut body = &req.body;
        let cpim;
        if ctype
            .split(';')
            .next()
            .is_some_and(|c| c.trim().eq_ignore_ascii_case(imdn::CPIM))
        {
            // CPIM (RFC 3862): a delivery notification, or a message in a wrapper.
            cpim = imdn::unwrap(&req.body).map_err(|e| refuse(400, e.to_string()))?;
            if cpim.is_notification() {
                return self.sip_notification(link, req, &cpim).await;
            }
            ctype.clone_from(&cpim.content_type);
            body = &cpim.body;
        }
        if !map::is_text(&ctype) {
            let mut r = refuse(415, format!("content type {ctype:?}"));
            r.headers
                .push(("Accept", format!("text/plain, {}", imdn::CPIM)));
            return Err(r);
        }
        let text =
            String::from_utf8(body.clone()).map_err(|_| refuse(400, "the text is not UTF-8"))?;
        let (domain, recipient, sender) = self.sip_parties(link, req).await?;
        let message = SendMessageRequest::text(
            format!("sip-{:016x}", rand::random::<u64>()),
            recipient,
            sender,
            text,
        );
        let tid = format!("sip-{:016x}", rand::random::<u64>());
        Ok(Taken {
            domain,
            transaction: Transaction::request(tid, Primitive::SendMessageRequest(message)),
            notification: None,
        })
    }

    /// Who an incoming request is from and for: the trusted SIP domain it comes from (else
    /// 403), our subscriber it names by number at our domain (else 404: no open relay), and
    /// the sender's SSP ID (`sip_sender`).
    pub(super) async fn sip_parties(
        &self,
        link: &SipLink,
        req: &Incoming,
    ) -> Result<(String, String, String), SipRefusal> {
        let from = map::address(&req.from).ok_or_else(|| refuse(400, "no usable From"))?;
        if link.trusted(&from.host, req).is_none() {
            return Err(refuse(
                403,
                format!(
                    "{} is not a SIP operator trusted from {} over {}",
                    from.host,
                    req.source
                        .map_or("an unknown address".into(), |s| s.to_string()),
                    req.transport.as_str()
                ),
            ));
        }
        // Its rate (RFC 6357: 503 with Retry-After is SIP's way to say "slow down").
        if link
            .limits
            .get(&from.host)
            .is_some_and(|l| l.check().is_err())
        {
            self.metrics.refused.with_label_values(&["rate"]).inc();
            let mut r = refuse(503, format!("rate limit for {} exceeded", from.host));
            r.headers.push(("Retry-After", "1".into()));
            return Err(r);
        }
        let to = map::address(&req.uri).ok_or_else(|| refuse(404, "no usable Request-URI"))?;
        let ours = to.host.is_empty() || to.host == self.cfg().operator.public_domain;
        let recipient = match (ours, to.number()) {
            (true, Some(n)) => format!("wv:+{}", n.digits()),
            _ => return Err(refuse(404, format!("{} is not a subscriber here", req.uri))),
        };
        let sender = self.sip_sender(&from).await?;
        Ok((from.host, recipient, sender))
    }

    /// The SSP ID of a SIP sender: `wv:+MSISDN` when ENUM places the number at the sending
    /// domain, `wv:user@domain` for a user named otherwise. A number placed elsewhere (or
    /// that DNS cannot place now) is refused: the same anti-spoofing as SSP.
    async fn sip_sender(&self, from: &SipAddress) -> Result<String, SipRefusal> {
        use crate::links::sender::NoSender;
        self.foreign_sender(from.number(), &from.user, &from.host)
            .await
            .map_err(|e| match e {
                NoSender::NotAnId => refuse(400, "a From user that is no IMPS user ID"),
                NoSender::NoResolver(_) | NoSender::Elsewhere(_) => {
                    refuse(403, format!("{e} ({})", from.host))
                }
                NoSender::Unverifiable(..) => {
                    let mut r = refuse(503, e.to_string());
                    r.headers.push(("Retry-After", "30".into()));
                    r
                }
            })
    }

    /// Count an answer given to an incoming SIP request.
    pub(crate) fn count_sip_answer(&self, method: &str, code: u16) {
        self.metrics
            .sip
            .with_label_values(&[
                "in",
                method_label(method),
                crate::ops::metrics::class_label(code),
            ])
            .inc();
    }
}

/// The method as a metric label (closed set).
fn method_label(m: &str) -> &'static str {
    match m {
        "MESSAGE" => "MESSAGE",
        "SUBSCRIBE" => "SUBSCRIBE",
        "NOTIFY" => "NOTIFY",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// The content type and bytes of an SSP message (base64 content decoded).
pub(crate) fn content(
    m: &SendMessageRequest,
    info: &MessageInfo,
) -> Result<(String, Vec<u8>), Failure> {
    let c = m
        .content
        .as_ref()
        .ok_or_else(|| Failure::new(Kind::Malformed, Side::Core, "a message without content"))?;
    let ctype = c
        .content_type
        .clone()
        .or_else(|| info.content_type.clone())
        .unwrap_or_else(|| "text/plain".into());
    let ctype = if map::is_text(&ctype) && !ctype.contains("charset") {
        format!("{ctype};charset=UTF-8")
    } else {
        ctype
    };
    let body = if c
        .encoding
        .as_deref()
        .is_some_and(|e| e.eq_ignore_ascii_case("base64"))
    {
        base64::engine::general_purpose::STANDARD
            .decode(c.data.as_bytes())
            .map_err(|e| {
                Failure::new(Kind::Malformed, Side::Core, format!("base64 content: {e}"))
            })?
    } else {
        c.data.clone().into_bytes()
    };
    Ok((ctype, body))
}
