//! The XMPP translator: a link like the core, the SSP peers and the SIP translator, for
//! destinations DNS shows reachable by XMPP and not by IMPS (the use cases' alternative
//! flows), and a source of requests from the XMPP domains `[xmpp]` federates with. From the
//! XMPP side the gateway is the XMPP server of our public domain: other servers open
//! server-to-server streams to it directly (RFC 6120), with no XMPP server of ours behind.
//!
//! - Outbound: a `SendMessageRequest` becomes `<message type='chat'>` from our user as
//!   `+MSISDN@<public domain>` to the JID DNS gave, on the stream to its domain (`pool`).
//!   XMPP acknowledges nothing: the answer is 200 once the stanza is on a proved stream, and
//!   a delivery report asked for comes from a XEP-0184 receipt, or from an error bounce, or,
//!   when neither comes within `receipt_wait`, says "not confirmed" (never "delivered").
//! - Inbound: a `<message>` to one of our subscribers from a proved domain becomes a
//!   `SendMessageRequest` to the core; its sender is `wv:+MSISDN` when ENUM places the
//!   number at the sending domain (the same anti-spoofing as SSP), else `wv:user@domain`
//!   (XEP-0106 unescaped). A receipt asked for is sent once the core took the message; a
//!   refusal goes back as a stanza error (the table in [`condition_of`] and [`code_of`]).
//! - Presence both ways: `presence`.
//!
//! Streams, their security and their proof are in `stream`; framing and the XML of stanzas
//! in `frame` and `stanza`.

pub mod frame;
pub(crate) mod pool;
pub(crate) mod presence;
pub(crate) mod receipts;
pub mod stanza;
pub(crate) mod stream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Links;
use super::sip::dialogs::Dialogs;
use super::sip::pidf::{self, Presence};
use crate::config::XmppSpec;
use crate::error::{Failure, Kind};
use crate::rewrite::PeerView;
use crate::ssp::ids::WvId;
use crate::ssp::primitives::{
    DeliveryStatusReport, GetPresenceResponse, PresenceNotification, PresenceRequest,
    SendMessageRequest, SendMessageResponse,
};
use crate::ssp::xml::Element;
use crate::ssp::{Entity, MessageInfo, MetaInfo, Party, Primitive, Status, Transaction, status};
use presence::{Sub, Watch};
use stanza::{Jid, NS_PING, NS_RECEIPTS, NS_SERVER, Stanza};

/// The description of a message's answer when a receipt was asked for.
const SENT_REPORTED: &str = "Sent; its delivery will be reported";
/// The description of a message's answer without one.
const SENT: &str = "Sent";
/// The description of the report of a message no receipt confirmed.
pub(crate) const NOT_CONFIRMED: &str = "Sent; delivery not confirmed";

/// How long a domain's server list found by DNS is used before it is looked up again.
const SERVERS_TTL: Duration = Duration::from_secs(300);
/// Rate limiters (and server lists) kept for domains not listed (with `open = true`) before
/// they are forgotten.
const MAX_LIMITERS: usize = 4096;
/// Resources kept per watched user (clients that log in with a new resource each time must
/// not grow it without end).
const MAX_RESOURCES: usize = 16;

/// A destination reachable by XMPP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmppTarget {
    /// Its domain.
    pub domain: String,
    /// The bare JID of the user.
    pub jid: String,
    /// Its domain's servers, in the order to try.
    pub servers: Vec<SocketAddr>,
}

/// The XMPP link.
pub(crate) struct XmppLink {
    pub(crate) ctx: Arc<stream::Ctx>,
    pool: Arc<pool::Pool>,
    local: SocketAddr,
    owner: String,
    limits: Mutex<HashMap<String, Arc<governor::DefaultDirectRateLimiter>>>,
    receipts: receipts::Receipts,
    subs: Dialogs<Sub>,
    watches: Dialogs<Watch>,
    /// Each watched XMPP user's resources, by subscription key.
    resources: Mutex<HashMap<String, presence::Resources>>,
    servers: Mutex<HashMap<String, (Vec<SocketAddr>, Instant)>>,
}

impl std::fmt::Debug for XmppLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XmppLink")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

/// Why the link could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("XMPP: {0}")]
pub(crate) struct XmppError(pub(crate) String);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl XmppLink {
    /// Bind `[xmpp] listen` and set up TLS and the dialback secret. The subscriptions
    /// replica `owner` kept in `store` are taken up again. The listener is the caller's to
    /// serve.
    pub(crate) async fn bind(
        spec: &XmppSpec,
        tls: &crate::config::TlsSpec,
        identity: Option<Arc<crate::tls::CertStore>>,
        domain: &str,
        store: Option<Arc<crate::store::Store>>,
        owner: String,
        metrics: &crate::ops::metrics::Metrics,
    ) -> Result<(XmppLink, tokio::net::TcpListener), XmppError> {
        let e = |e: crate::tls::TlsError| XmppError(e.to_string());
        let anchors = if spec.trust.is_empty() {
            tls.trust.clone()
        } else {
            spec.trust.clone()
        };
        let roots = (!anchors.is_empty())
            .then(|| crate::tls::load_roots(&anchors))
            .transpose()
            .map_err(e)?;
        // Streams opened to us: TLS with our certificate, any client certificate taken in
        // the handshake and judged after it (SASL EXTERNAL: chains to `trust`, names the
        // domain; else the stream may still prove itself by dialback).
        let server_tls = identity
            .as_ref()
            .map(|id| crate::tls::server_config_any_client(id.clone()).map(Arc::new))
            .transpose()
            .map_err(e)?;
        // Streams we open: the server's certificate checked against `trust`; for
        // encryption alone where a domain may prove itself by dialback.
        let client_tls = match (&identity, &roots) {
            (Some(id), Some(roots)) => {
                let mut c = crate::tls::client_config_from(
                    crate::tls::ServerTrust::Roots(Arc::new(roots.clone())),
                    Some(id.clone()),
                    false,
                )
                .map_err(e)?;
                c.alpn_protocols.clear();
                Some(Arc::new(c))
            }
            _ => None,
        };
        let client_tls_any = Some(Arc::new(
            crate::tls::client_config_unverified(identity.clone()).map_err(e)?,
        ));
        let anchors = roots.map(Arc::new);
        let secret = match &spec.dialback_secret_file {
            Some(f) => std::fs::read(f)
                .map_err(|err| XmppError(format!("{}: {err}", f.display())))?
                .trim_ascii()
                .to_vec(),
            None => rand::random::<[u8; 32]>().to_vec(),
        };
        let hashed = ring::digest::digest(&ring::digest::SHA256, &secret);
        let ctx = Arc::new(stream::Ctx {
            domain: domain.to_ascii_lowercase(),
            client_tls,
            client_tls_any,
            server_tls,
            anchors,
            secret: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, hashed.as_ref()),
            max_stanza: spec.max_stanza,
            auth_timeout: spec.auth_timeout,
            policies: spec.clone(),
        });
        let listener = tokio::net::TcpListener::bind(spec.listen)
            .await
            .map_err(|err| XmppError(format!("listen on {}: {err}", spec.listen)))?;
        let local = listener
            .local_addr()
            .map_err(|err| XmppError(err.to_string()))?;
        let link = XmppLink {
            pool: pool::Pool::new(
                ctx.clone(),
                metrics.xmpp_streams.with_label_values(&["out"]),
                metrics.xmpp_proofs.clone(),
            ),
            ctx,
            local,
            subs: Dialogs::load(presence::SUBS, store.clone(), &owner).await,
            receipts: receipts::Receipts::load(
                store.clone(),
                &owner,
                metrics.store_errors.with_label_values(&["xmpp-receipts"]),
            )
            .await,
            watches: Dialogs::load(presence::WATCHES, store, &owner).await,
            owner,
            limits: Mutex::new(HashMap::new()),
            resources: Mutex::new(HashMap::new()),
            servers: Mutex::new(HashMap::new()),
        };
        link.count(metrics);
        Ok((link, listener))
    }

    /// Where other servers reach us.
    pub(crate) fn local(&self) -> SocketAddr {
        self.local
    }

    /// Close the outbound streams.
    pub(crate) fn stop(&self) {
        self.pool.close_all();
    }

    fn count(&self, metrics: &crate::ops::metrics::Metrics) {
        let n = |c: usize| i64::try_from(c).unwrap_or(i64::MAX);
        metrics
            .xmpp_subscriptions
            .with_label_values(&["out"])
            .set(n(self.subs.count(|_| true)));
        metrics
            .xmpp_subscriptions
            .with_label_values(&["in"])
            .set(n(self.watches.count(|_| true)));
    }

    /// Whether `domain` is within its stanza rate.
    fn within_rate(&self, domain: &str) -> bool {
        let Some(p) = self.ctx.policies.policy(domain) else {
            return false;
        };
        let l = lock(&self.limits)
            .entry(domain.to_owned())
            .or_insert_with(|| {
                let rate = NonZeroU32::new(p.rate.max(1)).unwrap_or(NonZeroU32::MIN);
                let burst = NonZeroU32::new(p.burst.max(1)).unwrap_or(NonZeroU32::MIN);
                Arc::new(governor::RateLimiter::direct(
                    governor::Quota::per_second(rate).allow_burst(burst),
                ))
            })
            .clone();
        l.check().is_ok()
    }

    /// Forget what a far side can make grow: server lists past their time, backoffs run
    /// out, the rate limiters of domains not listed (a new one starts with a full bucket).
    pub(crate) fn sweep(&self) {
        let policies = &self.ctx.policies;
        {
            let mut servers = lock(&self.servers);
            servers.retain(|_, (_, at)| at.elapsed() < SERVERS_TTL);
            if servers.len() > MAX_LIMITERS {
                servers.retain(|d, _| policies.peer(d).is_some());
            }
        }
        self.pool.sweep();
        let mut limits = lock(&self.limits);
        if limits.len() > MAX_LIMITERS {
            limits.retain(|d, _| policies.peer(d).is_some());
        }
    }

    /// Keep `domain`'s servers as routing found them (for answers and dialback checks).
    /// Called for every request out: the same list is only stamped, not copied again.
    fn remember_servers(&self, domain: &str, servers: &[SocketAddr]) {
        if servers.is_empty() {
            return;
        }
        let mut all = lock(&self.servers);
        match all.get_mut(domain) {
            Some((known, at)) if known.as_slice() == servers => *at = Instant::now(),
            _ => {
                all.insert(domain.to_owned(), (servers.to_vec(), Instant::now()));
            }
        }
    }
}

/// A refusal of an incoming stanza: the stanza error to answer with, and why (logged).
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    /// The error type (`cancel`, `wait`, `modify`, `auth`).
    pub(crate) kind: &'static str,
    /// The defined condition.
    pub(crate) condition: &'static str,
    /// Why.
    pub(crate) why: String,
}

fn refuse(code: u16, why: impl Into<String>) -> Refusal {
    let (kind, condition) = condition_of(code);
    Refusal {
        kind,
        condition,
        why: why.into(),
    }
}

/// The stanza error for an SSP status code (what the core or the gateway refused with).
pub(crate) fn condition_of(code: u16) -> (&'static str, &'static str) {
    match code {
        status::UNKNOWN_USER => ("cancel", "item-not-found"),
        status::BLOCKED | 403 => ("auth", "forbidden"),
        status::INVALID_USER_ID => ("modify", "jid-malformed"),
        status::NOT_SUPPORTED | 415 => ("cancel", "feature-not-implemented"),
        413 => ("modify", "policy-violation"),
        400..=499 => ("modify", "bad-request"),
        status::DOMAIN_NOT_SUPPORTED => ("cancel", "remote-server-not-found"),
        status::UNAVAILABLE => ("wait", "resource-constraint"),
        status::TIMEOUT => ("wait", "remote-server-timeout"),
        _ => ("cancel", "undefined-condition"),
    }
}

/// The SSP status code for a stanza error condition (a bounce of one of our stanzas).
pub(crate) fn code_of(condition: &str) -> u16 {
    match condition {
        "item-not-found" | "service-unavailable" | "recipient-unavailable" | "gone" => {
            status::UNKNOWN_USER
        }
        "forbidden"
        | "not-allowed"
        | "not-authorized"
        | "subscription-required"
        | "policy-violation" => status::BLOCKED,
        "jid-malformed" => status::INVALID_USER_ID,
        "feature-not-implemented" => status::NOT_SUPPORTED,
        "bad-request" | "not-acceptable" => status::BAD_REQUEST,
        "remote-server-not-found" => status::DOMAIN_NOT_SUPPORTED,
        "remote-server-timeout" => status::TIMEOUT,
        "resource-constraint" => status::UNAVAILABLE,
        _ => status::INTERNAL,
    }
}

/// What an incoming stanza comes to.
#[derive(Debug)]
pub(crate) enum XmppIn {
    /// Handled here; nothing for the core.
    Done,
    /// A message for the core, and the receipt to send once the core took it.
    Message {
        /// The request.
        transaction: Transaction,
        /// The receipt (XEP-0184) asked for.
        receipt: Option<Element>,
        /// The stanza (a refusal answers it).
        stanza: Box<Stanza>,
    },
    /// A delivery report for the core (a receipt, a bounce).
    Report(Transaction),
    /// A new state of a watched user for the core; remembered once the core took it.
    Presence {
        /// The notification.
        transaction: Transaction,
        /// The subscription.
        key: String,
        /// The state.
        presence: Presence,
    },
    /// Their user subscribes to ours: the request, and the watch kept if the core agrees.
    Subscribe {
        /// The `SubscribeRequest`.
        transaction: Transaction,
        /// The watch.
        watch: Box<Watch>,
    },
    /// Their user ends its subscription to ours.
    Unsubscribe(Transaction),
    /// Their server asks our user's presence for a watcher: the `GetPresenceRequest`.
    Probe {
        /// The request.
        transaction: Transaction,
        /// The watch it is for.
        watch: Box<Watch>,
    },
}

fn tid() -> String {
    format!("xmpp-{:016x}", rand::random::<u64>())
}

impl Links {
    fn xmpp_link(&self) -> Result<&XmppLink, Failure> {
        self.xmpp
            .get()
            .ok_or_else(|| Failure::local(Kind::NotSupported, "the XMPP translator is not running"))
    }

    /// Send `request` (core IDs, as the pipeline holds it) to an XMPP destination.
    pub(crate) async fn to_xmpp(
        &self,
        target: &XmppTarget,
        request: Primitive,
    ) -> Result<Primitive, Failure> {
        let link = self.xmpp_link()?;
        link.remember_servers(&target.domain, &target.servers);
        let wants_report = request.wants_report();
        match request {
            Primitive::SendMessageRequest(m) => {
                self.xmpp_message(link, target, &m, wants_report).await
            }
            Primitive::SubscribeRequest(r) => self.xmpp_subscribe(link, target, &r).await,
            Primitive::UnsubscribeRequest(r) => self.xmpp_unsubscribe(link, target, &r).await,
            Primitive::GetPresenceRequest(r) => self.xmpp_get(link, target, &r),
            Primitive::PresenceNotification(n) => self.xmpp_notify(link, target, &n).await,
            other => Err(Failure::local(
                Kind::NotSupported,
                format!(
                    "{} cannot be carried to {} over XMPP",
                    other.name(),
                    target.domain
                ),
            )),
        }
    }

    /// Our user `core_id` as (public ID, bare JID at our domain): by number, else by an
    /// escaped name when the public ID is a name at our domain.
    fn xmpp_our_user(&self, core_id: &str, what: &str) -> Result<(String, String), Failure> {
        let public = {
            let dir = self.dir.load();
            self.live
                .load()
                .rw
                .outbound_id(&dir, core_id, PeerView::default())
        };
        let domain = &self.cfg().operator.public_domain;
        let local = WvId::parse(&public).ok().and_then(|id| match id.e164() {
            Some(n) => Some(format!("+{}", n.digits())),
            None if id.is_user() && id.domain.as_deref() == Some(domain.as_str()) => {
                Some(stanza::escape(&id.user))
            }
            None => None,
        });
        match local {
            Some(l) => Ok((public, format!("{l}@{domain}"))),
            None => Err(Failure::local(
                Kind::InvalidUserId,
                format!("the {what} cannot be named over XMPP"),
            )),
        }
    }

    /// Whether `domain` is within its stanza rate (and federated with).
    pub(crate) fn xmpp_within_rate(&self, domain: &str) -> bool {
        self.xmpp_link().is_ok_and(|l| l.within_rate(domain))
    }

    /// Write `el` to `domain` on its stream, within one request timeout.
    async fn xmpp_send(
        &self,
        link: &XmppLink,
        domain: &str,
        servers: &[SocketAddr],
        el: &Element,
        what: &'static str,
    ) -> Result<(), Failure> {
        let xml = stanza::write(el);
        if xml.len() > link.ctx.max_stanza {
            return Err(Failure::local(
                Kind::TooLarge,
                format!(
                    "a {} byte stanza; XMPP takes at most {}",
                    xml.len(),
                    link.ctx.max_stanza
                ),
            ));
        }
        let deadline = tokio::time::Instant::now() + self.cfg().timeouts.request;
        let sent = link.pool.send(domain, servers, xml, deadline).await;
        self.metrics
            .xmpp
            .with_label_values(&["out", what, if sent.is_ok() { "sent" } else { "error" }])
            .inc();
        sent.map_err(|e| match e {
            pool::SendError::Unreachable(why) => {
                Failure::local(Kind::Unreachable, format!("XMPP server of {domain}: {why}"))
            }
            pool::SendError::Timeout(_) => Failure::local(Kind::Timeout, e.to_string()),
        })
    }

    /// Write `el` to `domain`, finding its servers (an answer to a stanza it sent).
    pub(crate) async fn xmpp_reply(&self, domain: &str, el: &Element, what: &'static str) {
        let Ok(link) = self.xmpp_link() else { return };
        let servers = match self.xmpp_servers(link, domain).await {
            Ok(s) => s,
            Err(f) => {
                tracing::info!(to = domain, error = %f, "XMPP answer not sent: no server");
                return;
            }
        };
        if let Err(f) = self.xmpp_send(link, domain, &servers, el, what).await {
            tracing::info!(to = domain, error = %f, "XMPP answer not sent");
        }
    }

    /// The servers of `domain` (`_xmpp-server._tcp`), remembered for a while.
    async fn xmpp_servers(
        &self,
        link: &XmppLink,
        domain: &str,
    ) -> Result<Vec<SocketAddr>, Failure> {
        if let Some((s, at)) = lock(&link.servers).get(domain)
            && at.elapsed() < SERVERS_TTL
        {
            return Ok(s.clone());
        }
        let r = self.live().resolver.clone().ok_or_else(|| {
            Failure::local(Kind::Unreachable, "no resolver to find XMPP servers with")
        })?;
        let s = r
            .xmpp_servers(domain)
            .await
            .map_err(|e| Failure::local(Kind::Unreachable, e.0))?;
        if s.is_empty() {
            return Err(Failure::local(
                Kind::NoRoute,
                format!("DNS names no XMPP server for {domain}"),
            ));
        }
        link.remember_servers(domain, &s);
        Ok(s)
    }

    /// Check a dialback key `domain` gave on our stream `id` with its authoritative server.
    pub(crate) async fn xmpp_verify(&self, domain: &str, id: &str, key: &str) -> bool {
        let Ok(link) = self.xmpp_link() else {
            return false;
        };
        let servers = match self.xmpp_servers(link, domain).await {
            Ok(s) => s,
            Err(f) => {
                tracing::info!(from = domain, error = %f, "dialback key not checked");
                return false;
            }
        };
        match stream::verify(&link.ctx, domain, &servers, id, key).await {
            Ok(v) => v,
            Err(e) => {
                tracing::info!(from = domain, error = %e, "dialback key not checked");
                false
            }
        }
    }

    /// `SendMessageRequest` to an XMPP user.
    async fn xmpp_message(
        &self,
        link: &XmppLink,
        target: &XmppTarget,
        m: &SendMessageRequest,
        wants_report: bool,
    ) -> Result<Primitive, Failure> {
        let info = m.info.clone().unwrap_or_default();
        let sender = info
            .sender
            .as_ref()
            .and_then(|p| p.entities.first())
            .map(|e| e.id.clone())
            .unwrap_or_default();
        let (public, from) = self.xmpp_our_user(&sender, "sender")?;
        let (ctype, body) = super::sip::content(m, &info)?;
        if !super::sip::map::is_text(&ctype) {
            return Err(Failure::local(
                Kind::NotSupported,
                format!("XMPP carries text; this message is {ctype}"),
            ));
        }
        let text = String::from_utf8(body)
            .map_err(|_| Failure::local(Kind::Malformed, "the text is not UTF-8"))?;
        let id = format!("{:032x}", rand::random::<u128>());
        let mut el = Element::new("message");
        el.attrs.push(("from".into(), from.clone()));
        el.attrs.push(("to".into(), target.jid.clone()));
        el.attrs.push(("type".into(), "chat".into()));
        el.attrs.push(("id".into(), id.clone()));
        el.children.push(Element::new("body").with_text(text));
        let message_id = info
            .message_id
            .clone()
            .unwrap_or_else(|| format!("xmpp-{:016x}", rand::random::<u64>()));
        if wants_report {
            el.children.push(stanza::ns_el("request", NS_RECEIPTS));
            // Kept before it goes: the receipt may come before the write is confirmed.
            let wait =
                i64::try_from(link.ctx.policies.receipt_wait.as_millis()).unwrap_or(i64::MAX);
            link.receipts
                .keep(
                    &id,
                    receipts::Awaiting {
                        domain: target.domain.clone(),
                        sender_jid: from,
                        sender: public,
                        recipient: info
                            .recipient
                            .as_ref()
                            .and_then(|r| r.entities.first())
                            .map(|e| e.id.clone())
                            .unwrap_or_default(),
                        message_id: Some(message_id.clone()),
                        until_ms: crate::store::now_ms().saturating_add(wait),
                        owner: link.receipts.owner().to_owned(),
                    },
                )
                .await;
        }
        let sent = self
            .xmpp_send(link, &target.domain, &target.servers, &el, "message")
            .await;
        if let Err(f) = sent {
            if wants_report {
                link.receipts.forget(&id).await;
            }
            return Err(f);
        }
        Ok(Primitive::SendMessageResponse(SendMessageResponse {
            message_id: Some(message_id),
            status: Some(Status::with(
                status::OK,
                if wants_report { SENT_REPORTED } else { SENT },
            )),
            ..Default::default()
        }))
    }

    /// The reports of messages whose receipt did not come in time: "not confirmed".
    pub(crate) async fn xmpp_lapsed_receipts(&self) -> Vec<(String, Transaction)> {
        let Ok(link) = self.xmpp_link() else {
            return Vec::new();
        };
        link.receipts
            .lapsed()
            .await
            .into_iter()
            .map(|a| {
                tracing::info!(to = %a.domain, "no receipt in time: delivery reported as not confirmed");
                let d = a.domain.clone();
                (d, report(a, status::TIMEOUT, NOT_CONFIRMED))
            })
            .collect()
    }

    /// An incoming stanza from `domain` (which its stream proved), as what it comes to.
    pub(crate) async fn take_xmpp(&self, domain: &str, s: Stanza) -> Result<XmppIn, Refusal> {
        let link = self
            .xmpp_link()
            .map_err(|f| refuse(status::UNAVAILABLE, f.to_string()))?;
        let name: &'static str = match s.local.as_str() {
            "message" => "message",
            "presence" => "presence",
            _ => "iq",
        };
        self.metrics
            .xmpp
            .with_label_values(&["in", name, "taken"])
            .inc();
        match name {
            "message" => self.xmpp_take_message(link, domain, s).await,
            "presence" => self.xmpp_take_presence(link, domain, s).await,
            _ => {
                self.xmpp_iq(domain, &s).await;
                Ok(XmppIn::Done)
            }
        }
    }

    /// An `iq`: a ping (XEP-0199) is answered; other requests get `service-unavailable`;
    /// results and errors are dropped.
    async fn xmpp_iq(&self, domain: &str, s: &Stanza) {
        let ours = s.attr("to").unwrap_or_default().to_owned();
        let reply = match s.attr("type") {
            Some("get") if s.child(NS_PING, "ping").is_some() => {
                let mut r = Element::new("iq");
                r.attrs.push(("from".into(), ours));
                if let Some(to) = s.attr("from") {
                    r.attrs.push(("to".into(), to.to_owned()));
                }
                if let Some(id) = s.attr("id") {
                    r.attrs.push(("id".into(), id.to_owned()));
                }
                r.attrs.push(("type".into(), "result".into()));
                r
            }
            Some("get" | "set") => stanza::error_reply(s, &ours, "cancel", "service-unavailable"),
            _ => return,
        };
        self.xmpp_reply(domain, &reply, "iq").await;
    }

    /// The SSP ID of an XMPP sender: `wv:+MSISDN` when ENUM places the number at the
    /// sending domain, `wv:user@domain` for a user named otherwise. A number placed
    /// elsewhere (or that DNS cannot place now) is refused: the same anti-spoofing as SSP.
    async fn xmpp_sender(&self, from: &Jid) -> Result<String, Refusal> {
        use crate::links::sender::NoSender;
        let local = from
            .local
            .as_deref()
            .ok_or_else(|| refuse(400, "a sender that is a server, not a user"))?;
        let number = local
            .strip_prefix('+')
            .and_then(|d| crate::ssp::ids::E164::from_digits(d).ok());
        self.foreign_sender(number, &stanza::unescape(local), &from.domain)
            .await
            .map_err(|e| match e {
                NoSender::NotAnId => refuse(status::INVALID_USER_ID, e.to_string()),
                NoSender::NoResolver(_) | NoSender::Elsewhere(_) => {
                    refuse(403, format!("{e} ({})", from.domain))
                }
                NoSender::Unverifiable(..) => refuse(status::TIMEOUT, e.to_string()),
            })
    }

    /// Our user a stanza is for, as a public ID (`wv:+MSISDN`, or a name at our domain for
    /// the pipeline to accept or not); whether it is ours is the route stage's to say.
    fn xmpp_recipient(to: &Jid, domain: &str) -> Result<String, Refusal> {
        let local = to
            .local
            .as_deref()
            .ok_or_else(|| refuse(status::UNKNOWN_USER, "a stanza for the server itself"))?;
        Ok(match local.strip_prefix('+') {
            Some(d) if crate::ssp::ids::E164::from_digits(d).is_ok() => format!("wv:{local}"),
            _ => format!(
                "wv:{}@{domain}",
                stanza::unescape(local).to_ascii_lowercase()
            ),
        })
    }

    async fn xmpp_take_message(
        &self,
        link: &XmppLink,
        domain: &str,
        s: Stanza,
    ) -> Result<XmppIn, Refusal> {
        let from = s
            .attr("from")
            .and_then(Jid::parse)
            .ok_or_else(|| refuse(400, "no usable from"))?;
        // A receipt for one of ours.
        if let Some(r) = s.child(NS_RECEIPTS, "received") {
            let id = r.attr("id").or(s.attr("id")).unwrap_or_default();
            let to = s.attr("to").and_then(Jid::parse).map(|j| j.bare());
            let a = link
                .receipts
                .take(id, |a| {
                    a.domain == domain && to.as_deref() == Some(a.sender_jid.as_str())
                })
                .await;
            self.metrics
                .xmpp
                .with_label_values(&[
                    "in",
                    "receipt",
                    if a.is_some() { "taken" } else { "refused" },
                ])
                .inc();
            return Ok(match a {
                Some(a) => XmppIn::Report(report(a, status::OK, "Delivered")),
                None => XmppIn::Done,
            });
        }
        if s.attr("type") == Some("error") {
            let id = s.attr("id").unwrap_or_default();
            let cond = stanza::error_condition(&s).unwrap_or_else(|| "undefined-condition".into());
            let a = link.receipts.take(id, |a| a.domain == domain).await;
            tracing::info!(from = %from.bare(), condition = %cond, reported = a.is_some(), "XMPP message bounced");
            self.metrics
                .xmpp
                .with_label_values(&["in", "message", "error"])
                .inc();
            return Ok(match a {
                Some(a) => {
                    XmppIn::Report(report(a, code_of(&cond), &format!("Not delivered: {cond}")))
                }
                None => XmppIn::Done,
            });
        }
        let Some(body) = s.child(NS_SERVER, "body") else {
            // Chat states, receipts asked alone and the like: nothing for IMPS.
            return Ok(XmppIn::Done);
        };
        if !matches!(s.attr("type"), None | Some("chat" | "normal")) {
            return Err(refuse(
                status::NOT_SUPPORTED,
                format!("a message of type {:?}", s.attr("type").unwrap_or("")),
            ));
        }
        let to = s
            .attr("to")
            .and_then(Jid::parse)
            .ok_or_else(|| refuse(400, "no usable to"))?;
        let recipient = Self::xmpp_recipient(&to, &self.cfg().operator.public_domain)?;
        let sender = self.xmpp_sender(&from).await?;
        let message = SendMessageRequest::text(
            format!("xmpp-{:016x}", rand::random::<u64>()),
            recipient,
            sender,
            body.text.clone(),
        );
        let receipt = match (s.child(NS_RECEIPTS, "request"), s.attr("id")) {
            (Some(_), Some(id)) => {
                let mut r = Element::new("message");
                r.attrs.push(("from".into(), to.bare()));
                r.attrs.push(("to".into(), from.bare()));
                r.attrs
                    .push(("id".into(), format!("{:016x}", rand::random::<u64>())));
                let mut received = stanza::ns_el("received", NS_RECEIPTS);
                received.attrs.push(("id".into(), id.to_owned()));
                r.children.push(received);
                Some(r)
            }
            _ => None,
        };
        Ok(XmppIn::Message {
            transaction: Transaction::request(tid(), Primitive::SendMessageRequest(message)),
            receipt,
            stanza: Box::new(s),
        })
    }
}

/// The `DeliveryStatusReport` of awaited message `a` for the core.
fn report(a: receipts::Awaiting, code: u16, description: &str) -> Transaction {
    let dsr = DeliveryStatusReport {
        meta: Some(MetaInfo::client(&format!("wv:@{}", a.domain), &a.recipient)),
        result: Some(Status::with(code, description)),
        info: Some(MessageInfo {
            message_id: a.message_id,
            recipient: Some(Party::user(a.recipient)),
            sender: Some(Party::user(a.sender)),
            ..Default::default()
        }),
        ..Default::default()
    };
    Transaction::request(tid(), Primitive::DeliveryStatusReport(dsr))
}

impl Links {
    /// `SubscribeRequest` to an XMPP user: `subscribe` sent, the subscription kept.
    async fn xmpp_subscribe(
        &self,
        link: &XmppLink,
        target: &XmppTarget,
        r: &PresenceRequest,
    ) -> Result<Primitive, Failure> {
        let (watcher, watcher_jid) = self.xmpp_watcher(r)?;
        let presentity = presentity(r)?;
        let sub = presence::sub(
            watcher,
            watcher_jid.clone(),
            presentity,
            target.jid.clone(),
            target.domain.clone(),
            target.servers.clone(),
            link.owner.clone(),
        );
        let el = presence_el(watcher_jid, target.jid.clone(), "subscribe");
        // Kept before it goes: the far side may say `subscribed` before the write returns.
        let known = link.subs.find(&sub.key).await;
        if known.is_none() {
            link.subs.keep(sub.clone()).await;
        }
        if let Err(f) = self
            .xmpp_send(link, &target.domain, &target.servers, &el, "presence")
            .await
        {
            if known.is_none() {
                link.subs.forget(&sub.key).await;
            }
            return Err(f);
        }
        link.count(&self.metrics);
        Ok(ok())
    }

    /// `UnsubscribeRequest` to an XMPP user: `unsubscribe` sent, the subscription ended here
    /// whatever the far side says.
    async fn xmpp_unsubscribe(
        &self,
        link: &XmppLink,
        target: &XmppTarget,
        r: &PresenceRequest,
    ) -> Result<Primitive, Failure> {
        let (_, watcher_jid) = self.xmpp_watcher(r)?;
        let k = presence::key(&watcher_jid, &target.jid);
        link.subs.forget(&k).await;
        lock(&link.resources).remove(&k);
        link.count(&self.metrics);
        let el = presence_el(watcher_jid, target.jid.clone(), "unsubscribe");
        if let Err(f) = self
            .xmpp_send(link, &target.domain, &target.servers, &el, "presence")
            .await
        {
            tracing::info!(to = %target.jid, error = %f, "XMPP subscription ended here; the far side was not told");
        }
        Ok(ok())
    }

    /// `GetPresenceRequest` for an XMPP user: what its subscription last said (XMPP has no
    /// one-off fetch between servers; a watcher without one gets offline).
    fn xmpp_get(
        &self,
        link: &XmppLink,
        target: &XmppTarget,
        r: &PresenceRequest,
    ) -> Result<Primitive, Failure> {
        let (_, watcher_jid) = self.xmpp_watcher(r)?;
        let presentity = presentity(r)?;
        let k = presence::key(&watcher_jid, &target.jid);
        // What its resources said last (the core may not have taken it yet), else what the
        // core last took (after a restart), else offline.
        let heard = lock(&link.resources).get(&k).map(presence::merge);
        let p = heard
            .or_else(|| {
                link.subs
                    .select(|s| s.key == k)
                    .into_iter()
                    .next()
                    .and_then(|s| s.last)
            })
            .unwrap_or_else(Presence::offline);
        Ok(Primitive::GetPresenceResponse(GetPresenceResponse {
            status: Some(Status::with(status::OK, "Successful")),
            values: vec![pidf::to_ssp(&presentity, &p)],
            ..Default::default()
        }))
    }

    /// A `PresenceNotification` from the core for XMPP watchers of our users: a presence
    /// stanza for each watch whose state changed.
    async fn xmpp_notify(
        &self,
        link: &XmppLink,
        target: &XmppTarget,
        n: &PresenceNotification,
    ) -> Result<Primitive, Failure> {
        let values: Vec<(String, Presence)> = {
            let dir = self.dir.load();
            let live = self.live.load();
            n.values
                .iter()
                .map(|v| {
                    (
                        live.rw.outbound_id(&dir, &v.user_id, PeerView::default()),
                        pidf::from_ssp(v),
                    )
                })
                .collect()
        };
        let mut sent = 0;
        let mut failure = None;
        for w in link.watches.select(|w| {
            w.watcher_jid == target.jid
                && values
                    .iter()
                    .any(|(p, _)| p.eq_ignore_ascii_case(&w.presentity))
        }) {
            let Some((_, p)) = values
                .iter()
                .find(|(p, _)| p.eq_ignore_ascii_case(&w.presentity))
            else {
                continue;
            };
            if w.last.as_ref() == Some(p) {
                sent += 1;
                continue;
            }
            let el = presence::to_stanza(&w.presentity_jid, &w.watcher_jid, p);
            match self
                .xmpp_send(link, &target.domain, &target.servers, &el, "presence")
                .await
            {
                Ok(()) => {
                    sent += 1;
                    let p = p.clone();
                    link.watches
                        .update(&w.key, |k| {
                            k.last = Some(p);
                            (true, ())
                        })
                        .await;
                }
                Err(f) => failure = Some(f),
            }
        }
        match (sent, failure) {
            (0, Some(f)) => Err(f),
            (0, None) => Err(Failure::local(
                Kind::UnknownUser,
                "no XMPP watcher of that presentity here",
            )),
            _ => Ok(Primitive::Status(Status::with(status::OK, "Successful"))),
        }
    }

    /// The watcher of a presence request, as (public ID, bare JID).
    fn xmpp_watcher(&self, r: &PresenceRequest) -> Result<(String, String), Failure> {
        let core_id = r
            .meta
            .as_ref()
            .and_then(|m| m.requestor_user())
            .unwrap_or_default();
        self.xmpp_our_user(core_id, "watcher")
    }

    /// Ask the presence of every XMPP user our users watch (`probe`, RFC 6121 §4.3): what
    /// a started gateway does instead of subscribing again, to learn what changed while it
    /// was down. Answers come as presence and pass on only when the state changed.
    pub(crate) async fn xmpp_probe_subscriptions(&self) {
        let Ok(link) = self.xmpp_link() else { return };
        let subs = link.subs.select(|_| true);
        if !subs.is_empty() {
            tracing::info!(
                subscriptions = subs.len(),
                "XMPP subscriptions taken up: probing"
            );
        }
        for s in subs {
            let el = presence_el(s.watcher_jid.clone(), s.jid.clone(), "probe");
            // Where the domain's servers are now (the stored list may be old).
            let servers = self
                .xmpp_servers(link, &s.domain)
                .await
                .unwrap_or_else(|_| s.servers.clone());
            if let Err(f) = self
                .xmpp_send(link, &s.domain, &servers, &el, "presence")
                .await
            {
                tracing::info!(to = %s.jid, error = %f, "XMPP probe not sent");
            }
        }
    }

    /// The core took `p` for subscription `key`: the same state is not sent again.
    pub(crate) async fn xmpp_told(&self, key: &str, p: Presence) {
        if let Ok(link) = self.xmpp_link() {
            link.subs
                .update(key, |s| {
                    s.last = Some(p);
                    (true, ())
                })
                .await;
        }
    }

    /// The core's verdict on a watch (kept since it came): taken, `subscribed` is sent;
    /// refused, it is forgotten and `unsubscribed` sent.
    pub(crate) async fn xmpp_watch_answered(&self, w: Watch, taken: bool) {
        let Ok(link) = self.xmpp_link() else { return };
        let el = presence_el(
            w.presentity_jid.clone(),
            w.watcher_jid.clone(),
            if taken { "subscribed" } else { "unsubscribed" },
        );
        if !taken {
            link.watches.forget(&w.key).await;
        }
        link.count(&self.metrics);
        self.xmpp_reply(&w.domain, &el, "presence").await;
    }

    /// The answer to a probe: our user's presence from the core's `answer`, to the watcher.
    pub(crate) async fn xmpp_probe_answered(&self, w: &Watch, answer: &Primitive) {
        let Primitive::GetPresenceResponse(r) = answer else {
            return;
        };
        let p = r
            .values
            .first()
            .map_or_else(Presence::offline, pidf::from_ssp);
        let el = presence::to_stanza(&w.presentity_jid, &w.watcher_jid, &p);
        self.xmpp_reply(&w.domain, &el, "presence").await;
    }

    async fn xmpp_take_presence(
        &self,
        link: &XmppLink,
        domain: &str,
        s: Stanza,
    ) -> Result<XmppIn, Refusal> {
        let from = s
            .attr("from")
            .and_then(Jid::parse)
            .ok_or_else(|| refuse(400, "no usable from"))?;
        let to = s
            .attr("to")
            .and_then(Jid::parse)
            .ok_or_else(|| refuse(400, "no usable to"))?;
        let (ours, theirs) = (to.bare(), from.bare());
        let public_domain = self.cfg().operator.public_domain.clone();
        match s.attr("type") {
            Some("subscribe") => {
                let presentity = Self::xmpp_recipient(&to, &public_domain)?;
                let watcher = self.xmpp_sender(&from).await?;
                let w = Watch {
                    key: presence::key(&ours, &theirs),
                    watcher: watcher.clone(),
                    watcher_jid: theirs,
                    presentity: presentity.clone(),
                    presentity_jid: ours,
                    domain: domain.to_owned(),
                    last: None,
                    owner: link.owner.clone(),
                    since: crate::links::sip::dialogs::now(),
                };
                let t = watch_request(domain, &watcher, &presentity, Ask::Subscribe);
                // Kept before the core hears of it: its first notification may come
                // before its answer does.
                link.watches.keep(w.clone()).await;
                Ok(XmppIn::Subscribe {
                    transaction: t,
                    watch: Box::new(w),
                })
            }
            Some("unsubscribe") => {
                let k = presence::key(&ours, &theirs);
                let Some(w) = link.watches.find(&k).await else {
                    return Ok(XmppIn::Done);
                };
                link.watches.forget(&k).await;
                link.count(&self.metrics);
                Ok(XmppIn::Unsubscribe(watch_request(
                    domain,
                    &w.watcher,
                    &w.presentity,
                    Ask::Unsubscribe,
                )))
            }
            Some("probe") => {
                let k = presence::key(&ours, &theirs);
                let Some(w) = link.watches.find(&k).await else {
                    // No subscription: nothing is said (RFC 6121 §4.3.2 lets us answer
                    // `unsubscribed`; silence leaks less).
                    return Ok(XmppIn::Done);
                };
                let t = watch_request(domain, &w.watcher, &w.presentity, Ask::Fetch);
                Ok(XmppIn::Probe {
                    transaction: t,
                    watch: Box::new(w),
                })
            }
            Some("subscribed") => {
                let k = presence::key(&ours, &theirs);
                link.subs
                    .update(&k, |s| {
                        let was = s.confirmed;
                        s.confirmed = true;
                        (!was, ())
                    })
                    .await;
                Ok(XmppIn::Done)
            }
            Some("unsubscribed") => {
                let k = presence::key(&ours, &theirs);
                let Some(sub) = link.subs.forget(&k).await else {
                    return Ok(XmppIn::Done);
                };
                lock(&link.resources).remove(&k);
                link.count(&self.metrics);
                tracing::info!(watcher = %sub.watcher, presentity = %sub.presentity, "XMPP subscription refused or ended by the far side");
                Ok(XmppIn::Presence {
                    transaction: notification(&sub, &Presence::offline()),
                    key: k,
                    presence: Presence::offline(),
                })
            }
            None | Some("unavailable") => {
                let k = presence::key(&ours, &theirs);
                let Some(sub) = link.subs.select(|s| s.key == k).into_iter().next() else {
                    // Presence nobody here asked for (Prosody sends `unavailable` to a
                    // subscription request it does not know yet): dropped.
                    return Ok(XmppIn::Done);
                };
                let merged = {
                    let mut all = lock(&link.resources);
                    let r = all.entry(k.clone()).or_default();
                    let (p, prio) = presence::from_stanza(&s);
                    let res = presence::resource(&s);
                    if p.online {
                        if r.len() >= MAX_RESOURCES && !r.contains_key(&res) {
                            // The lowest priority makes room.
                            if let Some(low) = r
                                .iter()
                                .min_by_key(|(_, (_, prio))| *prio)
                                .map(|(k, _)| k.clone())
                            {
                                r.remove(&low);
                            }
                        }
                        r.insert(res, (p.clone(), prio));
                        presence::merge(r)
                    } else {
                        // A resource gone is forgotten; the last one going says why.
                        r.remove(&res);
                        if res.is_empty() {
                            r.clear();
                        }
                        if r.is_empty() {
                            all.remove(&k);
                            p
                        } else {
                            presence::merge(r)
                        }
                    }
                };
                if sub.last.as_ref() == Some(&merged) {
                    return Ok(XmppIn::Done);
                }
                Ok(XmppIn::Presence {
                    transaction: notification(&sub, &merged),
                    key: k,
                    presence: merged,
                })
            }
            Some("error") => {
                tracing::info!(from = %theirs, condition = ?stanza::error_condition(&s), "XMPP presence error");
                Ok(XmppIn::Done)
            }
            Some(other) => Err(refuse(400, format!("presence of type {other:?}"))),
        }
    }
}

/// What a watch request asks.
#[derive(Debug, Clone, Copy)]
enum Ask {
    Subscribe,
    Unsubscribe,
    Fetch,
}

/// A presence request of an XMPP watcher for the core.
fn watch_request(domain: &str, watcher: &str, presentity: &str, ask: Ask) -> Transaction {
    let r = PresenceRequest {
        meta: Some(MetaInfo::client(&format!("wv:@{domain}"), watcher)),
        users: vec![Entity::user(presentity.to_owned())],
        ..Default::default()
    };
    let p = match ask {
        Ask::Subscribe => Primitive::SubscribeRequest(r),
        Ask::Unsubscribe => Primitive::UnsubscribeRequest(r),
        Ask::Fetch => Primitive::GetPresenceRequest(r),
    };
    Transaction::request(tid(), p)
}

/// The `PresenceNotification` for `sub`'s watcher saying `p`.
fn notification(sub: &Sub, p: &Presence) -> Transaction {
    let note = PresenceNotification {
        watchers: vec![Entity::user(sub.watcher.clone())],
        values: vec![pidf::to_ssp(&sub.presentity, p)],
        ..Default::default()
    };
    Transaction::request(tid(), Primitive::PresenceNotification(note))
}

/// The presentity of a request for one XMPP destination.
fn presentity(r: &PresenceRequest) -> Result<String, Failure> {
    r.users
        .first()
        .map(|e| e.id.clone())
        .ok_or_else(|| Failure::local(Kind::Malformed, "no presentity"))
}

/// A `<presence>` of `kind` from `from` to `to`.
fn presence_el(from: String, to: String, kind: &'static str) -> Element {
    let mut el = Element::new("presence");
    el.attrs.push(("from".into(), from));
    el.attrs.push(("to".into(), to));
    el.attrs.push(("type".into(), kind.into()));
    el
}

fn ok() -> Primitive {
    Primitive::Status(Status::with(status::OK, "Successful"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_conditions_and_codes_map_both_ways() {
        // What we refuse with reads back as the same SSP code.
        for code in [
            status::UNKNOWN_USER,
            status::BLOCKED,
            status::INVALID_USER_ID,
            status::NOT_SUPPORTED,
            status::BAD_REQUEST,
            status::DOMAIN_NOT_SUPPORTED,
            status::UNAVAILABLE,
            status::TIMEOUT,
        ] {
            let (_, cond) = condition_of(code);
            assert_eq!(code_of(cond), code, "{code} -> {cond}");
        }
        assert_eq!(code_of("service-unavailable"), status::UNKNOWN_USER);
        assert_eq!(code_of("xa"), status::INTERNAL);
    }
}
