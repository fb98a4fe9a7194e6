//! Core simulator: a small legacy IMPS server ("the core") that speaks SSP over plain HTTP to
//! exactly one SSP peer, its gateway.
//!
//! It is test infrastructure: end-to-end tests and the demo drive it through the API below
//! (add users, send messages, subscribe to presence, search by MSISDN) and inspect what it
//! stored and what went over the wire.
//!
//! - Users are `wv:<local>@<core_domain>`. Every ID outside that domain is remote and goes to
//!   the gateway as it is: the gateway, not the core, maps core IDs to and from `wv:+MSISDN`.
//! - Transport (`PROTOCOL.md` §1): `POST /` with `application/vnd.wv.ssp+xml`. In
//!   [`CoreMode::Async`] (Baraza style) every POST is answered `200` with an empty body and the
//!   SSP response follows as a separate POST; in [`CoreMode::Sync`] the SSP response rides in
//!   the HTTP 200 body. For its own requests the core accepts both answer styles whatever its
//!   mode, and correlates by `transactionID` under a deadline.
//! - All XML goes through the gateway's SSP codec, so the simulator exercises the same model
//!   the gateway uses.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ssp_gateway::ssp::common::DateTime;
use ssp_gateway::ssp::ids::{WvId, canonical};
use ssp_gateway::ssp::primitives::{
    DeliveryStatusReport, GetPresenceResponse, PresenceNotification, PresenceRequest, SearchPair,
    SearchRequest, SearchResponse, SendMessageRequest, SendMessageResponse,
};
use ssp_gateway::ssp::xml::Element;
use ssp_gateway::ssp::{
    Body, Codec, ContentData, DetailedResult, Entity, EntityKind, Ext, Message, MessageInfo,
    MetaInfo, Mode, NS_WV_SSP_13, Party, PresenceValue, Primitive, Status, Transaction, status,
};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, timeout, timeout_at};
use tracing::{debug, warn};

/// The SSP media type (`PROTOCOL.md` §1).
const SSP_CONTENT_TYPE: &str = "application/vnd.wv.ssp+xml";
/// How long the core waits for any answer to one of its requests.
const DEADLINE: Duration = Duration::from_secs(10);
/// Largest body the core reads, either direction.
const MAX_BODY: usize = 1 << 20;

/// How the core answers the requests it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoreMode {
    /// `200` with an empty body at once; the SSP response comes later in its own POST.
    Async,
    /// The SSP response rides in the HTTP 200 body.
    Sync,
}

/// Configuration of one simulated core.
#[derive(Debug, Clone)]
pub struct CoreSimConfig {
    /// The core's own domain: its users are `wv:<local>@<core_domain>`.
    pub core_domain: String,
    /// How it answers inbound requests.
    pub mode: CoreMode,
    /// `Session@sessionID` written on everything it sends (`<id>@<domain>`).
    pub session_id: String,
    /// Address to listen on (default: an ephemeral loopback port).
    pub listen: Option<std::net::SocketAddr>,
    /// What the core remembers across restarts (its database): answers given by transaction
    /// ID, messages delivered, answers received. Default: a fresh one per instance.
    pub ledger: Option<Arc<Ledger>>,
    /// How the core's own transaction IDs start (`<prefix>-<n>`): a restarted core given
    /// another prefix does not reuse its predecessor's IDs.
    pub tid_prefix: String,
    /// How long an asynchronous core takes to answer (a slow core keeps requests in flight).
    pub answer_delay: Duration,
    /// A connection per request (no keep-alive), so that a TCP balancer in front of several
    /// gateway replicas spreads the requests.
    pub fresh_connections: bool,
}

/// What a core remembers across its restarts, as a real core's database would, and what the
/// fault suite counts: the answer it gave to each transaction ID (an idempotent receiver
/// answers a resend with it, and does not deliver twice), each message delivered (by its
/// text), and each answer received for its own requests (by transaction ID).
#[derive(Debug, Default)]
pub struct Ledger {
    state: Mutex<LedgerState>,
}

#[derive(Debug, Default)]
struct LedgerState {
    given: HashMap<String, Primitive>,
    delivered: HashMap<String, Vec<String>>,
    answers: HashMap<String, Vec<u16>>,
    resends: u64,
}

impl Ledger {
    /// The transaction IDs under which the message with `text` was delivered.
    pub fn deliveries(&self, text: &str) -> Vec<String> {
        lock(&self.state)
            .delivered
            .get(text)
            .cloned()
            .unwrap_or_default()
    }

    /// The answer codes received for our request `tid`, in order.
    pub fn answers(&self, tid: &str) -> Vec<u16> {
        lock(&self.state)
            .answers
            .get(tid)
            .cloned()
            .unwrap_or_default()
    }

    /// Requests received again with a transaction ID already answered (answered again, not
    /// handled twice).
    pub fn resends(&self) -> u64 {
        lock(&self.state).resends
    }

    fn given(&self, tid: &str) -> Option<Primitive> {
        let mut st = lock(&self.state);
        let p = st.given.get(tid).cloned();
        if p.is_some() {
            st.resends += 1;
        }
        p
    }

    fn give(&self, tid: &str, answer: &Primitive) {
        lock(&self.state)
            .given
            .insert(tid.to_owned(), answer.clone());
    }

    fn delivered(&self, text: &str, tid: &str) {
        lock(&self.state)
            .delivered
            .entry(text.to_owned())
            .or_default()
            .push(tid.to_owned());
    }

    fn answered(&self, tid: &str, code: u16) {
        lock(&self.state)
            .answers
            .entry(tid.to_owned())
            .or_default()
            .push(code);
    }
}

impl CoreSimConfig {
    /// A configuration with the session ID `core-1@<core_domain>`.
    pub fn new(core_domain: &str, mode: CoreMode) -> Self {
        CoreSimConfig {
            core_domain: core_domain.to_owned(),
            mode,
            session_id: format!("core-1@{core_domain}"),
            listen: None,
            ledger: None,
            tid_prefix: "core".into(),
            answer_delay: Duration::ZERO,
            fresh_connections: false,
        }
    }
}

/// Who may watch or fetch a user's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PresencePolicy {
    /// Anyone (use case 5.20's precondition: the user "proactively authorized the general public").
    #[default]
    Public,
    /// Only IDs on the user's contact list.
    ContactsOnly,
    /// Nobody.
    Deny,
}

/// Direction of a wire-log entry, seen from the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireDir {
    /// A body the core sent (request POST or HTTP response body).
    Sent,
    /// A body the core received (request POST or HTTP response body).
    Received,
}

/// An instant message delivered to a local user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The sender's ID as it arrived.
    pub from: String,
    /// The decoded text.
    pub text: String,
    /// The message ID the core assigned (or the one that came with the message).
    pub message_id: String,
}

/// A delivery report received for a message a local user sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// The message ID it reports on.
    pub message_id: String,
    /// `DeliveryResult/Status@code`.
    pub code: u16,
    /// The recipient that reported (the report's requestor), as it arrived.
    pub recipient: String,
}

/// One presentity's presence as seen by a watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceInfo {
    /// The presentity's ID as it arrived.
    pub presentity: String,
    /// `UserAvailability`: `AVAILABLE`, `DISCREET` or `NOT_AVAILABLE` (empty if absent).
    pub availability: String,
    /// `OnlineStatus`, if present.
    pub online: Option<bool>,
    /// `StatusText` (empty if absent).
    pub status_text: String,
}

/// A running simulated core. Cheap to clone: all clones share one server.
#[derive(Clone)]
pub struct CoreSim {
    inner: Arc<Inner>,
}

#[derive(Debug, Clone)]
struct Presence {
    availability: String,
    online: bool,
    status_text: String,
}

#[derive(Debug, Clone)]
struct Contact {
    id: String,
    nickname: Option<String>,
}

#[derive(Debug)]
struct User {
    msisdn: Option<String>,
    friendly_name: String,
    policy: PresencePolicy,
    presence: Presence,
    contacts: Vec<Contact>,
    watchers: Vec<String>,
    auth_requests: Vec<String>,
    inbox: Vec<ReceivedMessage>,
    reports: Vec<DeliveryReport>,
    seen: Vec<PresenceInfo>,
}

impl User {
    /// Whether `requester` may watch or fetch this user's presence; the refusal code if not.
    fn allows(&self, requester: Option<&str>) -> Result<(), u16> {
        match self.policy {
            PresencePolicy::Public => Ok(()),
            // 532 "Blocked": the user refuses everybody.
            PresencePolicy::Deny => Err(532),
            // 403: the request is understood but the requester is not authorised (yet).
            PresencePolicy::ContactsOnly => match requester {
                Some(r) if self.contacts.iter().any(|c| same_id(&c.id, r)) => Ok(()),
                _ => Err(403),
            },
        }
    }
}

#[derive(Debug, Default)]
struct State {
    users: BTreeMap<String, User>,
}

struct Inner {
    cfg: CoreSimConfig,
    /// `core_domain`, lowercase (IDs compare case-insensitively).
    domain: String,
    /// `wv:@<core_domain>`.
    service_id: String,
    addr: SocketAddr,
    codec: Codec,
    client: Client<HttpConnector, Full<Bytes>>,
    gateway_url: Mutex<Option<String>>,
    state: Mutex<State>,
    /// What it remembers across restarts.
    ledger: Arc<Ledger>,
    /// Our outstanding requests by transactionID, waiting for an asynchronous response.
    pending: Mutex<HashMap<String, oneshot::Sender<Primitive>>>,
    wire: Mutex<Vec<(WireDir, String)>>,
    /// Message and search IDs.
    seq: AtomicU64,
    /// Transaction IDs of the core's own requests (`core-<n>`), unique per instance.
    tid_seq: AtomicU64,
    /// Bumped on every state change so that tests can wait for conditions without sleeping.
    changed: watch::Sender<u64>,
    stop: watch::Sender<bool>,
    server: Mutex<Option<JoinHandle<()>>>,
    /// Background sends (async responses, reports, notifications), aborted on shutdown.
    tasks: Mutex<JoinSet<()>>,
}

/// Locks, recovering from poisoning: a panicking test thread must not wedge the simulator.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl CoreSim {
    /// Bind `127.0.0.1:0` and start serving.
    pub async fn start(cfg: CoreSimConfig) -> anyhow::Result<CoreSim> {
        let addr = cfg
            .listen
            .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = TcpListener::bind(addr)
            .await
            .context("binding the core simulator listener")?;
        let addr = listener.local_addr()?;
        let domain = cfg.core_domain.trim().to_ascii_lowercase();
        let (stop, stop_rx) = watch::channel(false);
        let (changed, _) = watch::channel(0u64);
        let client = {
            let mut b = Client::builder(TokioExecutor::new());
            if cfg.fresh_connections {
                b.pool_max_idle_per_host(0);
            }
            b.build_http()
        };
        let inner = Arc::new(Inner {
            ledger: cfg.ledger.clone().unwrap_or_default(),
            service_id: format!("wv:@{domain}"),
            domain,
            cfg,
            addr,
            codec: Codec::default(),
            client,
            gateway_url: Mutex::new(None),
            state: Mutex::new(State::default()),
            pending: Mutex::new(HashMap::new()),
            wire: Mutex::new(Vec::new()),
            seq: AtomicU64::new(1),
            tid_seq: AtomicU64::new(1),
            changed,
            stop,
            server: Mutex::new(None),
            tasks: Mutex::new(JoinSet::new()),
        });
        // The server holds a weak reference: dropping every CoreSim handle stops it.
        let handle = tokio::spawn(serve(listener, Arc::downgrade(&inner), stop_rx));
        *lock(&inner.server) = Some(handle);
        Ok(CoreSim { inner })
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.inner.addr)
    }

    /// Where the core POSTs everything it sends (the gateway's core-facing listener).
    pub fn set_gateway_url(&self, url: &str) {
        *lock(&self.inner.gateway_url) = Some(url.to_owned());
    }

    /// Add (or update) a user. `msisdn` like `+46701234567`.
    pub fn add_user(&self, local: &str, msisdn: Option<&str>, friendly_name: &str) {
        let mut st = lock(&self.inner.state);
        let user = st
            .users
            .entry(local.trim().to_ascii_lowercase())
            .or_insert_with(|| User {
                msisdn: None,
                friendly_name: String::new(),
                policy: PresencePolicy::default(),
                presence: Presence {
                    availability: "AVAILABLE".into(),
                    online: true,
                    status_text: String::new(),
                },
                contacts: Vec::new(),
                watchers: Vec::new(),
                auth_requests: Vec::new(),
                inbox: Vec::new(),
                reports: Vec::new(),
                seen: Vec::new(),
            });
        user.msisdn = msisdn.map(|m| m.trim().to_owned());
        user.friendly_name = friendly_name.to_owned();
        drop(st);
        self.inner.bump();
    }

    /// `wv:<local>@<core_domain>`.
    pub fn core_id(&self, local: &str) -> String {
        self.inner.core_id(local)
    }

    /// Set who may watch or fetch the user's presence (unknown users are ignored).
    pub fn set_policy(&self, local: &str, policy: PresencePolicy) {
        if let Some(u) = lock(&self.inner.state).users.get_mut(&norm_local(local)) {
            u.policy = policy;
        }
    }

    /// Send an instant message from a local user. Recipients in the core's domain are served
    /// locally; the others go to the gateway in one `SendMessageRequest`. Waits for the
    /// `SendMessageResponse` (a bare `Status` as the response is accepted too). When every
    /// recipient is remote the gateway's answer is returned unchanged.
    pub async fn send_message(
        &self,
        from_local: &str,
        to: &[&str],
        text: &str,
        delivery_report: bool,
    ) -> anyhow::Result<(String, Status)> {
        let inner = &self.inner;
        let from = inner.existing_core_id(from_local)?;
        if to.is_empty() {
            bail!("send_message needs at least one recipient");
        }
        let (local_to, remote_to): (Vec<&str>, Vec<&str>) =
            to.iter().copied().partition(|id| inner.is_ours(id));
        let local_id = inner.next_id("m");
        let mut results = Vec::new();
        if !local_to.is_empty() {
            let recipients: Vec<String> = local_to.iter().map(|s| (*s).to_owned()).collect();
            let mut st = lock(&inner.state);
            // The sender is local, so any delivery report is stored directly: no follow-ups.
            let (r, _) = inner.deliver_local(
                &mut st,
                &from,
                &recipients,
                text,
                &local_id,
                delivery_report,
            );
            results = r;
            drop(st);
            inner.bump();
        }
        if remote_to.is_empty() {
            return Ok((local_id, merge(&results)));
        }
        let req = message_request(&inner.service_id, &from, &remote_to, text, delivery_report);
        let (remote_id, remote_status) =
            match inner.request(Primitive::SendMessageRequest(req)).await? {
                Primitive::SendMessageResponse(r) => (
                    r.message_id.unwrap_or_default(),
                    r.status.unwrap_or_else(|| status_of_code(200)),
                ),
                Primitive::Status(s) => (String::new(), s),
                other => bail!("unexpected answer {} to SendMessageRequest", other.name()),
            };
        if local_to.is_empty() {
            return Ok((remote_id, remote_status));
        }
        // Mixed local and remote recipients: one merged answer, as the gateway would give.
        for id in &remote_to {
            let code = remote_status
                .details
                .iter()
                .find(|d| d.ids.iter().any(|e| same_id(&e.id, id)))
                .map(|d| d.code)
                .unwrap_or(if remote_status.is_success() {
                    200
                } else {
                    remote_status.code
                });
            results.push(((*id).to_owned(), code));
        }
        Ok((local_id, merge(&results)))
    }

    /// Send a message from a local user without waiting for its answer: `Ok(tid)` once the
    /// gateway accepted it (HTTP 200). Its answer, when it comes, is in the ledger.
    pub async fn send_accepted(
        &self,
        from_local: &str,
        to: &str,
        text: &str,
    ) -> anyhow::Result<String> {
        let inner = &self.inner;
        let from = inner.existing_core_id(from_local)?;
        let req = message_request(&inner.service_id, &from, &[to], text, false);
        let tid = inner.next_tid();
        let body = inner.session_body(vec![Transaction::request(
            tid.clone(),
            Primitive::SendMessageRequest(req),
        )]);
        let (http, _) = timeout(DEADLINE, inner.post(body))
            .await
            .map_err(|_| anyhow!("{tid}: no HTTP answer within {DEADLINE:?}"))??;
        if !http.is_success() {
            bail!("{tid}: HTTP {http}");
        }
        Ok(tid)
    }

    /// What the core remembers across restarts (shared with the instances that follow it).
    pub fn ledger(&self) -> Arc<Ledger> {
        self.inner.ledger.clone()
    }

    /// Messages delivered to a local user, oldest first.
    pub fn received(&self, local: &str) -> Vec<ReceivedMessage> {
        self.inner.with_user(local, |u| u.inbox.clone())
    }

    /// Delivery reports received for a local sender, oldest first.
    pub fn delivery_reports(&self, local: &str) -> Vec<DeliveryReport> {
        self.inner.with_user(local, |u| u.reports.clone())
    }

    /// Subscribe a local watcher to a presentity's presence; returns the subscription status.
    pub async fn subscribe(&self, watcher_local: &str, presentity: &str) -> anyhow::Result<Status> {
        let inner = &self.inner;
        let watcher = inner.existing_core_id(watcher_local)?;
        if inner.is_ours(presentity) {
            let mut st = lock(&inner.state);
            let (results, notes) = inner.subscribe_local(&mut st, &watcher, &[presentity.into()]);
            drop(st);
            inner.bump();
            // The watcher is local, so its notification was stored directly.
            inner.spawn_requests(notes);
            return Ok(merge(&results));
        }
        let req = presence_request(&inner.service_id, &watcher, EntityKind::UserId, presentity);
        status_of(inner.request(Primitive::SubscribeRequest(req)).await?)
    }

    /// End a local watcher's subscription.
    pub async fn unsubscribe(
        &self,
        watcher_local: &str,
        presentity: &str,
    ) -> anyhow::Result<Status> {
        let inner = &self.inner;
        let watcher = inner.existing_core_id(watcher_local)?;
        if inner.is_ours(presentity) {
            let mut st = lock(&inner.state);
            let results = inner.unsubscribe_local(&mut st, &watcher, &[presentity.into()]);
            drop(st);
            inner.bump();
            return Ok(merge(&results));
        }
        let req = presence_request(&inner.service_id, &watcher, EntityKind::UserId, presentity);
        status_of(inner.request(Primitive::UnsubscribeRequest(req)).await?)
    }

    /// Fetch a presentity's presence once, on behalf of a local user.
    pub async fn get_presence(
        &self,
        requester_local: &str,
        target: &str,
    ) -> anyhow::Result<(Status, Vec<PresenceInfo>)> {
        let inner = &self.inner;
        let requester = inner.existing_core_id(requester_local)?;
        let resp = if inner.is_ours(target) {
            let st = lock(&inner.state);
            inner.get_presence_local(&st, Some(&requester), &[target.into()])
        } else {
            // UserID as in Baraza's GetPresenceRequest; the gateway routes by any user entity.
            let req = presence_request(&inner.service_id, &requester, EntityKind::UserId, target);
            match inner.request(Primitive::GetPresenceRequest(req)).await? {
                Primitive::GetPresenceResponse(r) => r,
                Primitive::Status(s) => return Ok((s, Vec::new())),
                other => bail!("unexpected answer {} to GetPresenceRequest", other.name()),
            }
        };
        // Baraza answers without a Status: success with whatever values came.
        let status = resp.status.unwrap_or_else(|| status_of_code(200));
        Ok((status, resp.values.iter().map(presence_info).collect()))
    }

    /// Change a local user's presence, then push a `PresenceNotification` to every watcher
    /// (local ones directly, remote ones one request each through the gateway) and wait for
    /// all their answers. Fails if any remote watcher's notification failed.
    pub async fn set_presence(
        &self,
        local: &str,
        availability: &str,
        status_text: &str,
    ) -> anyhow::Result<()> {
        let inner = &self.inner;
        let availability = availability.trim().to_ascii_uppercase();
        if !matches!(
            availability.as_str(),
            "AVAILABLE" | "DISCREET" | "NOT_AVAILABLE"
        ) {
            bail!("availability must be AVAILABLE, DISCREET or NOT_AVAILABLE, not {availability}");
        }
        let local = norm_local(local);
        let notes = {
            let mut st = lock(&inner.state);
            let user = st
                .users
                .get_mut(&local)
                .ok_or_else(|| anyhow!("no such local user {local:?}"))?;
            user.presence = Presence {
                online: availability != "NOT_AVAILABLE",
                availability,
                status_text: status_text.to_owned(),
            };
            let watchers = user.watchers.clone();
            let notes: Vec<(String, Primitive)> = watchers
                .into_iter()
                .filter_map(|w| inner.notify(&mut st, &w, &local).map(|p| (w, p)))
                .collect();
            notes
        };
        inner.bump();
        let mut set = JoinSet::new();
        for (watcher, note) in notes {
            let me = inner.clone();
            set.spawn(async move {
                let r = match me.request(note).await {
                    Ok(p) => status_of(p),
                    Err(e) => Err(e),
                };
                (watcher, r)
            });
        }
        let mut failures = Vec::new();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((_, Ok(s))) if s.is_success() => {}
                Ok((w, Ok(s))) => failures.push(format!("{w}: status {}", s.code)),
                Ok((w, Err(e))) => failures.push(format!("{w}: {e:#}")),
                Err(e) => failures.push(format!("notification task: {e}")),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            bail!("presence notification failed: {}", failures.join("; "))
        }
    }

    /// Presence notifications received for a local watcher, oldest first.
    pub fn presence_seen(&self, local: &str) -> Vec<PresenceInfo> {
        self.inner.with_user(local, |u| u.seen.clone())
    }

    /// Search a user by MSISDN on behalf of a local user: the core's own users first (digits
    /// compared), otherwise a `SearchRequest` (`USER_MOBILE_NUMBER`) to the gateway.
    pub async fn search_msisdn(
        &self,
        requester_local: &str,
        number: &str,
    ) -> anyhow::Result<(Status, Vec<(String, Option<String>)>)> {
        let inner = &self.inner;
        let requester = inner.existing_core_id(requester_local)?;
        let hits: Vec<(String, Option<String>)> = {
            let st = lock(&inner.state);
            inner
                .find_msisdn(&st, number)
                .into_iter()
                .map(|e| (e.id, e.friendly_name))
                .collect()
        };
        if !hits.is_empty() {
            return Ok((status_of_code(200), hits));
        }
        let req = SearchRequest {
            search_limit: Some("10".into()),
            meta: Some(MetaInfo::client(&inner.service_id, &requester)),
            pairs: vec![SearchPair {
                element: "USER_MOBILE_NUMBER".into(),
                string: number.to_owned(),
                ext: Ext::default(),
            }],
            ..SearchRequest::default()
        };
        match inner.request(Primitive::SearchRequest(req)).await? {
            Primitive::SearchResponse(r) => Ok((
                r.status.unwrap_or_else(|| status_of_code(200)),
                r.results
                    .into_iter()
                    .map(|e| (e.id, e.friendly_name))
                    .collect(),
            )),
            Primitive::Status(s) => Ok((s, Vec::new())),
            other => bail!("unexpected answer {} to SearchRequest", other.name()),
        }
    }

    /// Add an ID to a local user's contact list, then subscribe to it (use case 5.20 steps 10-13:
    /// the far side learns that this user added its user). Returns the subscription status.
    pub async fn add_contact(
        &self,
        local: &str,
        id: &str,
        nickname: Option<&str>,
    ) -> anyhow::Result<Status> {
        {
            let mut st = lock(&self.inner.state);
            let key = norm_local(local);
            let user = st
                .users
                .get_mut(&key)
                .ok_or_else(|| anyhow!("no such local user {key:?}"))?;
            if !user.contacts.iter().any(|c| same_id(&c.id, id)) {
                user.contacts.push(Contact {
                    id: id.to_owned(),
                    nickname: nickname.map(str::to_owned),
                });
            }
        }
        self.inner.bump();
        self.subscribe(local, id).await
    }

    /// A local user's contact IDs, in the order added.
    pub fn contacts(&self, local: &str) -> Vec<String> {
        self.inner
            .with_user(local, |u| u.contacts.iter().map(|c| c.id.clone()).collect())
    }

    /// A local user's contacts with their nicknames.
    pub fn contact_entries(&self, local: &str) -> Vec<(String, Option<String>)> {
        self.inner.with_user(local, |u| {
            u.contacts
                .iter()
                .map(|c| (c.id.clone(), c.nickname.clone()))
                .collect()
        })
    }

    /// IDs that asked to watch (added) this local user, whether or not they were allowed.
    pub fn auth_requests(&self, local: &str) -> Vec<String> {
        self.inner.with_user(local, |u| u.auth_requests.clone())
    }

    /// Current watchers of a local user.
    pub fn watchers(&self, local: &str) -> Vec<String> {
        self.inner.with_user(local, |u| u.watchers.clone())
    }

    /// Every body sent and received so far, in order.
    pub fn wire_log(&self) -> Vec<(WireDir, String)> {
        lock(&self.inner.wire).clone()
    }

    /// The gateway's directory format: a `msisdn,core_id` header, then one line per user that
    /// has an MSISDN.
    pub fn directory_csv(&self) -> String {
        let st = lock(&self.inner.state);
        let mut out = String::from("msisdn,core_id\n");
        for (local, u) in &st.users {
            if let Some(m) = &u.msisdn {
                let digits: String = m.chars().filter(char::is_ascii_digit).collect();
                if !digits.is_empty() {
                    out.push_str(&format!("+{digits},{}\n", self.inner.core_id(local)));
                }
            }
        }
        out
    }

    /// Message `n` (0 for the first) that local user `local` received, waiting up to
    /// `within` for it to arrive.
    pub async fn message(
        &self,
        local: &str,
        n: usize,
        within: Duration,
    ) -> Option<ReceivedMessage> {
        self.wait_until(within, |c| c.received(local).len() > n)
            .await
            .then(|| self.received(local).swap_remove(n))
    }

    /// Delivery report `n` (0 for the first) for local sender `local`, waiting up to `within`.
    pub async fn report(&self, local: &str, n: usize, within: Duration) -> Option<DeliveryReport> {
        self.wait_until(within, |c| c.delivery_reports(local).len() > n)
            .await
            .then(|| self.delivery_reports(local).swap_remove(n))
    }

    /// Wait until `cond` holds, re-checking after every state change; `false` on timeout.
    /// Inbound traffic is handled in the background, so tests use this instead of sleeping.
    pub async fn wait_until(&self, within: Duration, cond: impl Fn(&CoreSim) -> bool) -> bool {
        let deadline = Instant::now() + within;
        let mut rx = self.inner.changed.subscribe();
        loop {
            rx.mark_unchanged();
            if cond(self) {
                return true;
            }
            match timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                // Timed out, or the simulator is gone: one last look.
                _ => return cond(self),
            }
        }
    }

    /// Stop serving and abort background sends; outstanding requests fail.
    pub async fn shutdown(self) {
        let inner = self.inner;
        inner.stop.send_replace(true);
        let server = lock(&inner.server).take();
        if let Some(mut h) = server
            && timeout(Duration::from_secs(5), &mut h).await.is_err()
        {
            h.abort();
        }
        lock(&inner.tasks).abort_all();
        // Dropping the senders wakes every waiter with an error instead of a timeout.
        lock(&inner.pending).clear();
    }
}

/// Removes a pending transaction when its requester stops waiting, whatever the outcome.
struct PendingGuard<'a> {
    inner: &'a Inner,
    tid: String,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.inner.pending).remove(&self.tid);
    }
}

async fn serve(listener: TcpListener, inner: Weak<Inner>, mut stop: watch::Receiver<bool>) {
    // Connection tasks live in this set: leaving the loop drops it and closes them all.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let weak = inner.clone();
                    conns.spawn(async move {
                        let svc = service_fn(move |req| {
                            let weak = weak.clone();
                            async move {
                                let resp = match weak.upgrade() {
                                    Some(inner) => inner.handle_http(req).await,
                                    None => plain(StatusCode::SERVICE_UNAVAILABLE),
                                };
                                Ok::<_, Infallible>(resp)
                            }
                        });
                        if let Err(e) = http1::Builder::new()
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(stream), svc)
                            .await
                        {
                            debug!("core simulator connection ended: {e}");
                        }
                    });
                }
                Err(e) => warn!("core simulator accept failed: {e}"),
            },
            // A stop signal, or every handle dropped (the sender lives in Inner).
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

impl Inner {
    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn log(&self, dir: WireDir, text: String) {
        lock(&self.wire).push((dir, text));
        // The wire log is observable state too: `wait_until` conditions on it must wake.
        self.bump();
    }

    fn next_tid(&self) -> String {
        format!(
            "{}-{}",
            self.cfg.tid_prefix,
            self.tid_seq.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn next_id(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.seq.fetch_add(1, Ordering::Relaxed))
    }

    fn core_id(&self, local: &str) -> String {
        format!("wv:{}@{}", norm_local(local), self.domain)
    }

    fn existing_core_id(&self, local: &str) -> anyhow::Result<String> {
        let key = norm_local(local);
        if !lock(&self.state).users.contains_key(&key) {
            bail!("no such local user {key:?}");
        }
        Ok(self.core_id(&key))
    }

    fn with_user<T: Default>(&self, local: &str, f: impl FnOnce(&User) -> T) -> T {
        lock(&self.state)
            .users
            .get(&norm_local(local))
            .map(f)
            .unwrap_or_default()
    }

    /// Whether the ID lives in the core's domain (known user or not).
    fn is_ours(&self, id: &str) -> bool {
        WvId::parse(id).is_ok_and(|w| w.domain.as_deref() == Some(self.domain.as_str()))
    }

    /// The local name of a plain user ID in the core's domain.
    fn local_of(&self, id: &str) -> Option<String> {
        let w = WvId::parse(id).ok()?;
        (w.is_user() && w.e164().is_none() && w.domain.as_deref() == Some(self.domain.as_str()))
            .then_some(w.user)
    }

    /// The local name of an existing user.
    fn known_local(&self, st: &State, id: &str) -> Option<String> {
        self.local_of(id).filter(|l| st.users.contains_key(l))
    }

    fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = lock(&self.tasks);
        // Reap finished tasks so the set does not grow with traffic.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(fut);
    }

    /// Send follow-up requests (reports, notifications) in the background, one after another.
    fn spawn_requests(self: &Arc<Self>, reqs: Vec<Primitive>) {
        if reqs.is_empty() {
            return;
        }
        let me = self.clone();
        self.spawn(async move {
            for r in reqs {
                me.request_logged(r).await;
            }
        });
    }

    async fn request_logged(self: &Arc<Self>, req: Primitive) {
        let name = req.name().to_owned();
        match self.request(req).await.and_then(status_of) {
            Ok(s) if s.is_success() => debug!("{name} answered {}", s.code),
            Ok(s) => warn!("{name} answered {}", s.code),
            Err(e) => warn!("{name} failed: {e:#}"),
        }
    }

    fn session_body(&self, transactions: Vec<Transaction>) -> String {
        Message::session(&self.cfg.session_id, transactions).emit(NS_WV_SSP_13)
    }

    /// An HTTP error whose body is an SSP Status (`PROTOCOL.md` §1).
    fn ssp_error(
        &self,
        http: StatusCode,
        tid: Option<String>,
        st: Status,
    ) -> Response<Full<Bytes>> {
        let tid = tid.unwrap_or_else(|| "0".into());
        let body = self.session_body(vec![Transaction::response(tid, Primitive::Status(st))]);
        self.log(WireDir::Sent, body.clone());
        ssp_response(http, body)
    }

    async fn handle_http(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::POST {
            return plain(StatusCode::METHOD_NOT_ALLOWED);
        }
        if let Some(ct) = req.headers().get(CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
            let mime = ct.split(';').next().unwrap_or("").trim();
            if !matches!(mime, SSP_CONTENT_TYPE | "text/xml" | "application/xml") {
                return plain(StatusCode::UNSUPPORTED_MEDIA_TYPE);
            }
        }
        let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                return self.ssp_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    None,
                    Status::with(400, format!("body larger than {MAX_BODY} bytes")),
                );
            }
            Err(_) => return plain(StatusCode::BAD_REQUEST),
        };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        self.log(WireDir::Received, text.clone());
        let msg = match self.codec.parse(&bytes) {
            Ok(m) => m,
            Err(e) => {
                let http = if e.is_too_large() {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    StatusCode::BAD_REQUEST
                };
                return self.ssp_error(
                    http,
                    guess_tid(&text),
                    ssp_gateway::error::Failure::from(&e).status(),
                );
            }
        };
        let session = match msg.body {
            Body::Session(s) => s,
            Body::Setup(t) => {
                return self.ssp_error(
                    StatusCode::BAD_REQUEST,
                    Some(t.transaction_id),
                    Status::with(501, "the core simulator does not do SSP association"),
                );
            }
        };
        let mut responses = Vec::new();
        let mut followups = Vec::new();
        let mut had_responses = false;
        for t in session.transactions {
            match t.mode {
                Mode::Response => {
                    had_responses = true;
                    self.complete(t);
                }
                Mode::Request => {
                    // An idempotent receiver: a transaction ID answered before gets the same
                    // answer, and nothing is handled twice.
                    if let Some(given) = self.ledger.given(&t.transaction_id) {
                        responses.push(Transaction::response(t.transaction_id, given));
                        continue;
                    }
                    let (resp, more) = self.handle_request(&t.primitive);
                    if let Primitive::SendMessageRequest(m) = &t.primitive
                        && resp.answer_status().is_none_or(Status::is_success)
                    {
                        let text = m.content.as_ref().map(content_text).unwrap_or_default();
                        self.ledger.delivered(&text, &t.transaction_id);
                    }
                    self.ledger.give(&t.transaction_id, &resp);
                    responses.push(Transaction::response(t.transaction_id, resp));
                    followups.extend(more);
                }
            }
        }
        let mut untracked = None;
        for r in session.rejected {
            match (r.transaction_id, r.mode) {
                (_, Some(Mode::Response)) => {}
                (Some(tid), _) => responses.push(Transaction::response(
                    tid,
                    Primitive::Status(Status::with(400, r.reason)),
                )),
                (None, _) => untracked = Some(r.reason),
            }
        }
        if responses.is_empty() && !had_responses {
            // Nothing to answer transaction by transaction: refuse the whole message.
            let reason = untracked.unwrap_or_else(|| "no transaction in the session".into());
            return self.ssp_error(StatusCode::BAD_REQUEST, None, Status::with(400, reason));
        }
        let mode = self.cfg.mode;
        match mode {
            CoreMode::Sync => {
                let resp = if responses.is_empty() {
                    plain(StatusCode::OK)
                } else {
                    let body = self.session_body(responses);
                    self.log(WireDir::Sent, body.clone());
                    ssp_response(StatusCode::OK, body)
                };
                self.spawn_requests(followups);
                resp
            }
            CoreMode::Async => {
                let me = self.clone();
                let delay = self.cfg.answer_delay;
                self.spawn(async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    // The response first, then what it triggered (reports, notifications).
                    if !responses.is_empty()
                        && let Err(e) = me.post_responses(responses).await
                    {
                        warn!("core simulator could not deliver its responses: {e:#}");
                    }
                    for f in followups {
                        me.request_logged(f).await;
                    }
                });
                plain(StatusCode::OK)
            }
        }
    }

    fn complete(&self, t: Transaction) {
        self.ledger
            .answered(&t.transaction_id, t.primitive.answer_code());
        match lock(&self.pending).remove(&t.transaction_id) {
            Some(tx) => {
                let _ = tx.send(t.primitive);
            }
            None => debug!("response for unknown transaction {}", t.transaction_id),
        }
    }

    async fn post(&self, body: String) -> anyhow::Result<(StatusCode, Bytes)> {
        let url = lock(&self.gateway_url)
            .clone()
            .ok_or_else(|| anyhow!("gateway URL not set"))?;
        let uri: hyper::Uri = url
            .parse()
            .with_context(|| format!("bad gateway URL {url:?}"))?;
        self.log(WireDir::Sent, body.clone());
        let req = Request::post(uri)
            .header(CONTENT_TYPE, SSP_CONTENT_TYPE)
            .body(Full::new(Bytes::from(body)))?;
        let resp = self
            .client
            .request(req)
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = resp.status();
        let bytes = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| anyhow!("reading the answer from {url}: {e}"))?
            .to_bytes();
        if !bytes.is_empty() {
            self.log(
                WireDir::Received,
                String::from_utf8_lossy(&bytes).into_owned(),
            );
        }
        Ok((status, bytes))
    }

    async fn post_responses(&self, responses: Vec<Transaction>) -> anyhow::Result<()> {
        let body = self.session_body(responses);
        let (status, _) = timeout(DEADLINE, self.post(body))
            .await
            .map_err(|_| anyhow!("no HTTP answer within {DEADLINE:?}"))??;
        if !status.is_success() {
            bail!("HTTP {status}");
        }
        Ok(())
    }

    /// Send one request to the gateway and wait for its response: from the HTTP body (a
    /// synchronous peer) or from a later POST with the same transactionID (an asynchronous one).
    async fn request(self: &Arc<Self>, prim: Primitive) -> anyhow::Result<Primitive> {
        let tid = self.next_tid();
        let body = self.session_body(vec![Transaction::request(tid.clone(), prim)]);
        let (tx, rx) = oneshot::channel();
        // Registered before sending: an asynchronous answer may overtake the HTTP 200.
        lock(&self.pending).insert(tid.clone(), tx);
        let _guard = PendingGuard {
            inner: self,
            tid: tid.clone(),
        };
        let deadline = Instant::now() + DEADLINE;
        let (http, reply) = timeout_at(deadline, self.post(body))
            .await
            .map_err(|_| anyhow!("{tid}: no HTTP answer within {DEADLINE:?}"))??;
        if !reply.is_empty() {
            match self.codec.parse(&reply) {
                Ok(Message {
                    body: Body::Session(s),
                    ..
                }) => {
                    let mut fallback = None;
                    for t in s.transactions {
                        if t.mode == Mode::Response && t.transaction_id == tid {
                            return Ok(t.primitive);
                        }
                        if let Primitive::Status(st) = t.primitive {
                            fallback.get_or_insert(st);
                        }
                    }
                    // An HTTP error with an SSP Status body (e.g. 400 for a refused message).
                    if !http.is_success()
                        && let Some(st) = fallback
                    {
                        return Ok(Primitive::Status(st));
                    }
                }
                Ok(_) => {}
                Err(e) if http.is_success() => bail!("{tid}: unparseable answer body: {e}"),
                Err(_) => {}
            }
        }
        if !http.is_success() {
            bail!("{tid}: HTTP {http}");
        }
        match timeout_at(deadline, rx).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(_)) => bail!("{tid}: the simulator shut down while waiting"),
            Err(_) => bail!("{tid}: no SSP response within {DEADLINE:?}"),
        }
    }

    /// Answer one inbound request; also returns the requests it triggers towards the gateway.
    fn handle_request(&self, prim: &Primitive) -> (Primitive, Vec<Primitive>) {
        let mut st = lock(&self.state);
        let out = match prim {
            Primitive::SendMessageRequest(p) => self.on_send_message(&mut st, p),
            Primitive::SubscribeRequest(p) => self.on_subscribe(&mut st, p),
            Primitive::UnsubscribeRequest(p) => {
                let status = match watcher_and_ids(p) {
                    Ok((w, ids)) => merge(&self.unsubscribe_local(&mut st, &w, &ids)),
                    Err(s) => s,
                };
                (Primitive::Status(status), Vec::new())
            }
            Primitive::GetPresenceRequest(p) => {
                let ids: Vec<String> = p.users.iter().map(|e| e.id.clone()).collect();
                let requester = p.meta.as_ref().and_then(MetaInfo::requestor_user);
                let resp = if ids.is_empty() {
                    GetPresenceResponse {
                        status: Some(Status::with(400, "GetPresenceRequest names no user")),
                        ..GetPresenceResponse::default()
                    }
                } else {
                    self.get_presence_local(&st, requester, &ids)
                };
                (Primitive::GetPresenceResponse(resp), Vec::new())
            }
            Primitive::PresenceNotification(p) => (
                Primitive::Status(self.on_presence_notification(&mut st, p)),
                Vec::new(),
            ),
            Primitive::DeliveryStatusReport(p) => (
                Primitive::Status(self.on_delivery_report(&mut st, p)),
                Vec::new(),
            ),
            Primitive::SearchRequest(p) => (self.on_search(&st, p), Vec::new()),
            // Baraza answers 501 for primitives it does not handle.
            other => (
                Primitive::Status(Status::with(
                    501,
                    format!("{} is not supported by the core", other.name()),
                )),
                Vec::new(),
            ),
        };
        drop(st);
        self.bump();
        out
    }

    fn on_send_message(
        &self,
        st: &mut State,
        p: &SendMessageRequest,
    ) -> (Primitive, Vec<Primitive>) {
        let info = p.info.as_ref();
        let recipients: Vec<String> = info
            .and_then(|i| i.recipient.as_ref())
            .map(|r| r.entities.iter().map(|e| e.id.clone()).collect())
            .unwrap_or_default();
        if recipients.is_empty() {
            let resp = SendMessageResponse {
                status: Some(Status::with(400, "SendMessageRequest names no recipient")),
                ..SendMessageResponse::default()
            };
            return (Primitive::SendMessageResponse(resp), Vec::new());
        }
        let sender = info
            .and_then(MessageInfo::sender_id)
            .or_else(|| p.meta.as_ref().and_then(MetaInfo::requestor_user))
            .unwrap_or_default()
            .to_owned();
        let text = p.content.as_ref().map(content_text).unwrap_or_default();
        let message_id = info
            .and_then(|i| i.message_id.clone())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| self.next_id("m"));
        let report = p.delivery_report.as_deref().is_some_and(|d| {
            matches!(d.trim().to_ascii_lowercase().as_str(), "yes" | "t" | "true")
        });
        let (results, followups) =
            self.deliver_local(st, &sender, &recipients, &text, &message_id, report);
        let resp = SendMessageResponse {
            message_id: Some(message_id),
            status: Some(merge(&results)),
            ext: Ext::default(),
        };
        (Primitive::SendMessageResponse(resp), followups)
    }

    /// Store a message for each local recipient; per-recipient codes plus the delivery reports
    /// to send (reports for a local sender are stored directly).
    fn deliver_local(
        &self,
        st: &mut State,
        sender: &str,
        recipients: &[String],
        text: &str,
        message_id: &str,
        report: bool,
    ) -> (Vec<(String, u16)>, Vec<Primitive>) {
        let mut results = Vec::with_capacity(recipients.len());
        let mut delivered = Vec::new();
        for r in recipients {
            let Some(local) = self.known_local(st, r) else {
                results.push((r.clone(), status::UNKNOWN_USER));
                continue;
            };
            if let Some(u) = st.users.get_mut(&local) {
                u.inbox.push(ReceivedMessage {
                    from: sender.to_owned(),
                    text: text.to_owned(),
                    message_id: message_id.to_owned(),
                });
            }
            results.push((r.clone(), status::OK));
            delivered.push(local);
        }
        let mut followups = Vec::new();
        if report && !sender.is_empty() {
            for local in delivered {
                let recipient = self.core_id(&local);
                followups.extend(self.delivery_report(st, sender, &recipient, message_id));
            }
        }
        (results, followups)
    }

    /// The `DeliveryStatusReport` for a delivered message, routed by the original sender.
    fn delivery_report(
        &self,
        st: &mut State,
        sender: &str,
        recipient: &str,
        message_id: &str,
    ) -> Option<Primitive> {
        if self.is_ours(sender) {
            if let Some(u) = self
                .known_local(st, sender)
                .and_then(|l| st.users.get_mut(&l))
            {
                u.reports.push(DeliveryReport {
                    message_id: message_id.to_owned(),
                    code: status::OK,
                    recipient: recipient.to_owned(),
                });
            }
            return None;
        }
        Some(Primitive::DeliveryStatusReport(DeliveryStatusReport {
            meta: Some(MetaInfo::client(&self.service_id, recipient)),
            result: Some(status_of_code(200)),
            result_ext: Ext::default(),
            delivery_time: Some(iso8601_now()),
            info: Some(MessageInfo {
                message_id: Some(message_id.to_owned()),
                recipient: Some(Party::user(recipient)),
                sender: Some(Party::user(sender)),
                ..MessageInfo::default()
            }),
            ext: Ext::default(),
        }))
    }

    fn on_subscribe(&self, st: &mut State, p: &PresenceRequest) -> (Primitive, Vec<Primitive>) {
        match watcher_and_ids(p) {
            Ok((watcher, ids)) => {
                let (results, notes) = self.subscribe_local(st, &watcher, &ids);
                (Primitive::Status(merge(&results)), notes)
            }
            Err(s) => (Primitive::Status(s), Vec::new()),
        }
    }

    /// Record the authorization request on every known presentity (use case 5.20 step 14: the
    /// presentity learns who added them), add the watcher where policy allows and produce the
    /// initial notification for each granted subscription.
    fn subscribe_local(
        &self,
        st: &mut State,
        watcher: &str,
        presentities: &[String],
    ) -> (Vec<(String, u16)>, Vec<Primitive>) {
        let mut results = Vec::with_capacity(presentities.len());
        let mut granted = Vec::new();
        for id in presentities {
            let Some((local, user)) = self
                .known_local(st, id)
                .and_then(|l| st.users.get_mut(&l).map(|u| (l, u)))
            else {
                results.push((id.clone(), status::UNKNOWN_USER));
                continue;
            };
            push_unique(&mut user.auth_requests, watcher);
            match user.allows(Some(watcher)) {
                Ok(()) => {
                    push_unique(&mut user.watchers, watcher);
                    results.push((id.clone(), status::OK));
                    granted.push(local);
                }
                Err(code) => results.push((id.clone(), code)),
            }
        }
        let notes = granted
            .iter()
            .filter_map(|local| self.notify(st, watcher, local))
            .collect();
        (results, notes)
    }

    fn unsubscribe_local(
        &self,
        st: &mut State,
        watcher: &str,
        presentities: &[String],
    ) -> Vec<(String, u16)> {
        presentities
            .iter()
            .map(|id| match self.known_local(st, id) {
                Some(local) => {
                    if let Some(u) = st.users.get_mut(&local) {
                        u.watchers.retain(|w| !same_id(w, watcher));
                    }
                    (id.clone(), status::OK)
                }
                None => (id.clone(), status::UNKNOWN_USER),
            })
            .collect()
    }

    /// A presentity's current presence for one watcher: stored directly for a local watcher,
    /// otherwise the `PresenceNotification` to send to the gateway.
    fn notify(&self, st: &mut State, watcher: &str, presentity_local: &str) -> Option<Primitive> {
        let presentity = self.core_id(presentity_local);
        let value = presence_value(&presentity, &st.users.get(presentity_local)?.presence);
        if self.is_ours(watcher) {
            if let Some(w) = self
                .known_local(st, watcher)
                .and_then(|l| st.users.get_mut(&l))
            {
                w.seen.push(presence_info(&value));
            }
            return None;
        }
        Some(Primitive::PresenceNotification(PresenceNotification {
            meta: Some(MetaInfo::client(&self.service_id, &presentity)),
            watchers: vec![Entity::user(watcher)],
            values: vec![value],
            ext: Ext::default(),
        }))
    }

    fn get_presence_local(
        &self,
        st: &State,
        requester: Option<&str>,
        ids: &[String],
    ) -> GetPresenceResponse {
        let mut results = Vec::with_capacity(ids.len());
        let mut values = Vec::new();
        for id in ids {
            let Some(local) = self.known_local(st, id) else {
                results.push((id.clone(), status::UNKNOWN_USER));
                continue;
            };
            let Some(user) = st.users.get(&local) else {
                results.push((id.clone(), status::UNKNOWN_USER));
                continue;
            };
            match user.allows(requester) {
                Ok(()) => {
                    values.push(presence_value(&self.core_id(&local), &user.presence));
                    results.push((id.clone(), status::OK));
                }
                Err(code) => results.push((id.clone(), code)),
            }
        }
        GetPresenceResponse {
            status: Some(merge(&results)),
            values,
            ext: Ext::default(),
        }
    }

    fn on_presence_notification(&self, st: &mut State, p: &PresenceNotification) -> Status {
        if p.watchers.is_empty() {
            return Status::with(400, "PresenceNotification names no watcher");
        }
        let infos: Vec<PresenceInfo> = p.values.iter().map(presence_info).collect();
        let results: Vec<(String, u16)> = p
            .watchers
            .iter()
            .map(|w| {
                match self
                    .known_local(st, &w.id)
                    .and_then(|l| st.users.get_mut(&l))
                {
                    Some(u) => {
                        u.seen.extend(infos.iter().cloned());
                        (w.id.clone(), status::OK)
                    }
                    None => (w.id.clone(), status::UNKNOWN_USER),
                }
            })
            .collect();
        merge(&results)
    }

    fn on_delivery_report(&self, st: &mut State, p: &DeliveryStatusReport) -> Status {
        let Some(info) = p.info.as_ref() else {
            return Status::with(400, "DeliveryStatusReport without MessageInfo");
        };
        let Some(sender) = info.sender_id() else {
            return Status::with(400, "DeliveryStatusReport without MessageInfo/Sender");
        };
        let recipient = p
            .meta
            .as_ref()
            .and_then(MetaInfo::requestor_user)
            .or_else(|| {
                info.recipient
                    .as_ref()
                    .and_then(|r| r.entities.first())
                    .map(|e| e.id.as_str())
            })
            .unwrap_or_default()
            .to_owned();
        match self
            .known_local(st, sender)
            .and_then(|l| st.users.get_mut(&l))
        {
            Some(u) => {
                u.reports.push(DeliveryReport {
                    message_id: info.message_id.clone().unwrap_or_default(),
                    code: p.result.as_ref().map_or(status::OK, |s| s.code),
                    recipient,
                });
                status_of_code(200)
            }
            None => merge(&[(sender.to_owned(), status::UNKNOWN_USER)]),
        }
    }

    /// Local users whose MSISDN has the same digits as `number`.
    fn find_msisdn(&self, st: &State, number: &str) -> Vec<Entity> {
        let digits: String = number.chars().filter(char::is_ascii_digit).collect();
        if digits.is_empty() {
            return Vec::new();
        }
        st.users
            .iter()
            .filter(|(_, u)| {
                u.msisdn
                    .as_deref()
                    .is_some_and(|m| m.chars().filter(char::is_ascii_digit).eq(digits.chars()))
            })
            .map(|(local, u)| Entity {
                friendly_name: Some(u.friendly_name.clone()),
                ..Entity::user(self.core_id(local))
            })
            .collect()
    }

    fn on_search(&self, st: &State, p: &SearchRequest) -> Primitive {
        let search_id = p.search_id.clone().unwrap_or_else(|| self.next_id("s"));
        let Some(number) = p.mobile_number() else {
            return Primitive::SearchResponse(SearchResponse {
                search_id: Some(search_id),
                status: Some(Status::with(
                    405,
                    "the core searches by USER_MOBILE_NUMBER only",
                )),
                ..SearchResponse::default()
            });
        };
        let results = self.find_msisdn(st, number);
        Primitive::SearchResponse(SearchResponse {
            search_id: Some(search_id),
            findings: Some(results.len().to_string()),
            completion_flag: Some("T".into()),
            search_index: Some("1".into()),
            status: Some(status_of_code(200)),
            results,
            ext: Ext::default(),
        })
    }
}

/// The watcher (MetaInfo/Requestor/User) and presentity IDs of a presence request, or the 400.
fn watcher_and_ids(p: &PresenceRequest) -> Result<(String, Vec<String>), Status> {
    let watcher = p
        .meta
        .as_ref()
        .and_then(MetaInfo::requestor_user)
        .filter(|w| !w.is_empty())
        .ok_or_else(|| Status::with(400, "no MetaInfo/Requestor/User (the watcher)"))?;
    if p.users.is_empty() {
        return Err(Status::with(400, "no presentity UserID"));
    }
    Ok((
        watcher.to_owned(),
        p.users.iter().map(|e| e.id.clone()).collect(),
    ))
}

fn presence_request(service: &str, user: &str, kind: EntityKind, target: &str) -> PresenceRequest {
    PresenceRequest {
        meta: Some(MetaInfo::client(service, user)),
        users: vec![Entity::new(kind, target)],
        ..PresenceRequest::default()
    }
}

/// The `SendMessageRequest` a local user `from` sends to `to`.
fn message_request(
    service_id: &str,
    from: &str,
    to: &[&str],
    text: &str,
    delivery_report: bool,
) -> SendMessageRequest {
    SendMessageRequest {
        delivery_report: Some(if delivery_report { "Yes" } else { "No" }.into()),
        meta: Some(MetaInfo::client(service_id, from)),
        info: Some(MessageInfo {
            content_type: Some("text/plain".into()),
            content_size: Some(text.len().to_string()),
            recipient: Some(Party {
                entities: to.iter().map(|id| Entity::user(*id)).collect(),
                ext: Ext::default(),
            }),
            sender: Some(Party::user(from.to_owned())),
            date_time: Some(DateTime {
                format: Some("iso8601".into()),
                value: iso8601_now(),
                ext: Ext::default(),
            }),
            ..MessageInfo::default()
        }),
        content: Some(ContentData {
            content_type: Some("text/plain".into()),
            encoding: Some("base64".into()),
            data: B64.encode(text.as_bytes()),
            ext: Ext::default(),
        }),
        ext: Ext::default(),
    }
}

fn norm_local(local: &str) -> String {
    local.trim().to_ascii_lowercase()
}

/// IDs compare in canonical form (case, `wv:` prefix and escapes do not matter).
fn same_id(a: &str, b: &str) -> bool {
    canonical(a) == canonical(b)
}

fn push_unique(list: &mut Vec<String>, id: &str) {
    if !list.iter().any(|x| same_id(x, id)) {
        list.push(id.to_owned());
    }
}

fn describe(code: u16) -> &'static str {
    match code {
        403 => "Forbidden",
        532 => "Blocked",
        c => status::description(c),
    }
}

fn status_of_code(code: u16) -> Status {
    Status::with(code, describe(code))
}

/// One answer for per-ID results: 200 if all succeeded; 201 with one `DetailedResult` per
/// failed ID if some did; if all failed, their common code (or 900, multiple errors) with the
/// details.
fn merge(results: &[(String, u16)]) -> Status {
    let failed: Vec<&(String, u16)> = results
        .iter()
        .filter(|(_, c)| !(200..300).contains(c))
        .collect();
    let Some(first) = failed.first() else {
        return status_of_code(200);
    };
    let code = if failed.len() < results.len() {
        status::PARTIAL
    } else if failed.iter().all(|(_, c)| *c == first.1) {
        first.1
    } else {
        status::MULTIPLE_ERRORS
    };
    Status {
        details: failed
            .iter()
            .map(|(id, c)| DetailedResult::for_user(*c, describe(*c), id))
            .collect(),
        ..status_of_code(code)
    }
}

/// The status carried by an answer primitive.
fn status_of(p: Primitive) -> anyhow::Result<Status> {
    let ok = || status_of_code(200);
    Ok(match p {
        Primitive::Status(s) => s,
        Primitive::SendMessageResponse(r) => r.status.unwrap_or_else(ok),
        Primitive::GetPresenceResponse(r) => r.status.unwrap_or_else(ok),
        Primitive::SearchResponse(r) => r.status.unwrap_or_else(ok),
        other => bail!("unexpected answer {}", other.name()),
    })
}

fn content_text(c: &ContentData) -> String {
    let base64 = c
        .encoding
        .as_deref()
        .is_some_and(|e| e.eq_ignore_ascii_case("base64"));
    if base64 {
        // Undecodable base64 is kept as written rather than dropped: tests can still see it.
        match B64.decode(c.data.as_bytes()) {
            Ok(raw) => String::from_utf8_lossy(&raw).into_owned(),
            Err(_) => c.data.clone(),
        }
    } else {
        c.data.clone()
    }
}

/// `<PresenceValue userID=…><PresenceSubList>` with OnlineStatus, UserAvailability and
/// StatusText, each as `<Qualifier>T</Qualifier><PresenceValue>…</PresenceValue>`.
fn presence_value(user_id: &str, p: &Presence) -> PresenceValue {
    let attr = |name: &'static str, value: &str| {
        Element::new(name)
            .with_child(Element::new("Qualifier").with_text("T"))
            .with_child(Element::new("PresenceValue").with_text(value))
    };
    let sub = Element::new("PresenceSubList")
        .with_child(attr("OnlineStatus", if p.online { "T" } else { "F" }))
        .with_child(attr("UserAvailability", &p.availability))
        .with_child(attr("StatusText", &p.status_text));
    PresenceValue {
        user_id: user_id.to_owned(),
        ext: Ext {
            attrs: Vec::new(),
            children: vec![sub],
        },
    }
}

/// Read the presence attributes wherever they sit under a `PresenceValue` (with or without
/// `PresenceSubList`, prefixed or not).
fn presence_info(v: &PresenceValue) -> PresenceInfo {
    let mut info = PresenceInfo {
        presentity: v.user_id.clone(),
        availability: String::new(),
        online: None,
        status_text: String::new(),
    };
    let value_of = |e: &Element| {
        e.children
            .iter()
            .find(|c| local_name(&c.name) == "PresenceValue")
            .map_or_else(|| e.text.clone(), |c| c.text.clone())
    };
    for c in &v.ext.children {
        c.walk(&mut |e| match local_name(&e.name) {
            "UserAvailability" => info.availability = value_of(e),
            "StatusText" => info.status_text = value_of(e),
            "OnlineStatus" => {
                let v = value_of(e).to_ascii_lowercase();
                info.online = Some(matches!(v.as_str(), "t" | "true" | "yes" | "1"));
            }
            _ => {}
        });
    }
    info
}

fn local_name(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

/// The transactionID of an unparseable body, if one is visible, so that the 400 can name it.
fn guess_tid(text: &str) -> Option<String> {
    let start = text.find("transactionID=")? + "transactionID=".len();
    let rest = &text[start..];
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let rest = &rest[1..];
    let end = rest.find(quote)?;
    let tid = rest[..end].trim();
    (!tid.is_empty() && tid.len() <= 64).then(|| tid.to_owned())
}

fn plain(code: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = code;
    r
}

fn ssp_response(code: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(SSP_CONTENT_TYPE),
    );
    r
}

/// Now as extended ISO 8601 UTC (`PROTOCOL.md` §2: emit extended UTC).
fn iso8601_now() -> String {
    crate::dates::iso8601(crate::dates::now_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    /// Two cores wired directly to each other (each one's gateway is the other core).
    async fn pair(x_mode: CoreMode, y_mode: CoreMode) -> (CoreSim, CoreSim) {
        let x = CoreSim::start(CoreSimConfig::new("core.opx.example", x_mode))
            .await
            .unwrap();
        let y = CoreSim::start(CoreSimConfig::new("core.opy.example", y_mode))
            .await
            .unwrap();
        x.set_gateway_url(&y.url());
        y.set_gateway_url(&x.url());
        x.add_user("usera", Some("+46701234567"), "User A");
        x.add_user("userc", None, "User C");
        y.add_user("userb", Some("+4915112345678"), "User B");
        (x, y)
    }

    async fn scenario(x: &CoreSim, y: &CoreSim) {
        let a = x.core_id("usera");
        let b = y.core_id("userb");
        assert_eq!(a, "wv:usera@core.opx.example");

        // IM with a delivery report (use case 5.22).
        let (mid, st) = x
            .send_message("usera", &[&b], "hello B", true)
            .await
            .unwrap();
        assert_eq!(st.code, 200, "{st:?}");
        assert!(!mid.is_empty());
        let got = y.received("userb");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].from, a);
        assert_eq!(got[0].text, "hello B");
        assert_eq!(got[0].message_id, mid);
        assert!(
            x.wait_until(WAIT, |x| !x.delivery_reports("usera").is_empty())
                .await,
            "no delivery report"
        );
        let rep = &x.delivery_reports("usera")[0];
        assert_eq!((rep.message_id.as_str(), rep.code), (mid.as_str(), 200));
        assert_eq!(rep.recipient, b);

        // One unknown recipient among two: 201 with a DetailedResult 531 naming it.
        let nobody = "wv:nobody@core.opy.example";
        let (_, st) = x
            .send_message("usera", &[&b, nobody], "two", false)
            .await
            .unwrap();
        assert_eq!(st.code, 201, "{st:?}");
        assert_eq!(st.details.len(), 1);
        assert_eq!(st.details[0].code, 531);
        assert_eq!(st.details[0].ids[0].id, nobody);
        assert_eq!(y.received("userb").len(), 2);
        // A single unknown recipient: 531.
        let (_, st) = x
            .send_message("usera", &[nobody], "x", false)
            .await
            .unwrap();
        assert_eq!(st.code, 531);

        // Search by MSISDN (use case 5.20 steps 3-8), number written loosely.
        let (st, hits) = x.search_msisdn("usera", "+49 151 1234 5678").await.unwrap();
        assert_eq!(st.code, 200);
        assert_eq!(hits, vec![(b.clone(), Some("User B".to_owned()))]);
        let (st, hits) = x.search_msisdn("usera", "+4915100000000").await.unwrap();
        assert_eq!((st.code, hits.len()), (200, 0));

        // Add contact -> subscription, authorization request and first notification.
        let st = x.add_contact("usera", &b, Some("Bob")).await.unwrap();
        assert_eq!(st.code, 200, "{st:?}");
        assert_eq!(x.contacts("usera"), vec![b.clone()]);
        assert_eq!(y.auth_requests("userb"), vec![a.clone()]);
        assert_eq!(y.watchers("userb"), vec![a.clone()]);
        assert!(
            x.wait_until(WAIT, |x| !x.presence_seen("usera").is_empty())
                .await
        );
        let first = &x.presence_seen("usera")[0];
        assert_eq!(first.presentity, b);
        assert_eq!(first.availability, "AVAILABLE");
        assert_eq!(first.online, Some(true));

        // Presence change reaches the remote watcher before set_presence returns.
        y.set_presence("userb", "DISCREET", "in a meeting")
            .await
            .unwrap();
        let last = x.presence_seen("usera").last().cloned().unwrap();
        assert_eq!(last.availability, "DISCREET");
        assert_eq!(last.status_text, "in a meeting");
        assert_eq!(last.online, Some(true));

        let (st, vals) = x.get_presence("usera", &b).await.unwrap();
        assert_eq!(st.code, 200);
        assert_eq!(vals.len(), 1);
        assert_eq!(vals[0].availability, "DISCREET");

        // Policies: Deny blocks, ContactsOnly needs the watcher on the contact list.
        let st = x.unsubscribe("usera", &b).await.unwrap();
        assert_eq!(st.code, 200);
        assert!(y.watchers("userb").is_empty());
        y.set_policy("userb", PresencePolicy::Deny);
        assert_eq!(x.subscribe("usera", &b).await.unwrap().code, 532);
        y.set_policy("userb", PresencePolicy::ContactsOnly);
        assert_eq!(x.subscribe("usera", &b).await.unwrap().code, 403);
        let (st, vals) = x.get_presence("usera", &b).await.unwrap();
        assert_eq!((st.code, vals.len()), (403, 0));
        // B adds A back (use case 5.20 step 15): now A is allowed.
        assert_eq!(y.add_contact("userb", &a, None).await.unwrap().code, 200);
        assert_eq!(x.auth_requests("usera"), vec![b.clone()]);
        assert_eq!(x.subscribe("usera", &b).await.unwrap().code, 200);
        assert!(y.watchers("userb").contains(&a));

        // Wire: own session ID, client-originated MetaInfo with the service ID.
        let log = x.wire_log();
        let sent_req = log
            .iter()
            .find(|(d, t)| *d == WireDir::Sent && t.contains("<SendMessageRequest"))
            .unwrap();
        assert!(
            sent_req
                .1
                .contains(r#"sessionID="core-1@core.opx.example""#)
        );
        assert!(sent_req.1.contains(r#"serviceID="wv:@core.opx.example""#));
        assert!(sent_req.1.contains(r#"clientOriginated="Yes""#));
        assert!(
            y.wire_log()
                .iter()
                .any(|(d, t)| *d == WireDir::Sent && t.contains("<DeliveryStatusReport"))
        );
    }

    #[tokio::test]
    async fn async_to_async() {
        let (x, y) = pair(CoreMode::Async, CoreMode::Async).await;
        scenario(&x, &y).await;
        x.shutdown().await;
        y.shutdown().await;
    }

    #[tokio::test]
    async fn sync_to_async() {
        let (x, y) = pair(CoreMode::Sync, CoreMode::Async).await;
        scenario(&x, &y).await;
        x.shutdown().await;
        y.shutdown().await;
    }

    #[tokio::test]
    async fn async_to_sync() {
        let (x, y) = pair(CoreMode::Async, CoreMode::Sync).await;
        scenario(&x, &y).await;
        x.shutdown().await;
        y.shutdown().await;
    }

    #[tokio::test]
    async fn sync_answers_ride_in_the_http_body() {
        let (x, y) = pair(CoreMode::Sync, CoreMode::Sync).await;
        let b = y.core_id("userb");
        let (_, st) = x.send_message("usera", &[&b], "hi", false).await.unwrap();
        assert_eq!(st.code, 200);
        // The answer came back in the HTTP body, not as a POST from y.
        let y_received_responses = y
            .wire_log()
            .iter()
            .filter(|(d, t)| *d == WireDir::Received && t.contains(r#"mode="Response""#))
            .count();
        assert_eq!(y_received_responses, 0);
        x.shutdown().await;
        y.shutdown().await;
    }

    async fn raw_post(url: &str, ct: &str, body: &str) -> (StatusCode, String) {
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let req = Request::post(url)
            .header(CONTENT_TYPE, ct)
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        let code = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (code, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn bad_input_gets_400_with_ssp_status() {
        let x = CoreSim::start(CoreSimConfig::new("core.opx.example", CoreMode::Async))
            .await
            .unwrap();
        let (code, body) = raw_post(&x.url(), SSP_CONTENT_TYPE, "<WV-SSP-Message><Sess").await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        let msg = Codec::default().parse(body.as_bytes()).unwrap();
        let t = &msg.as_session().unwrap().transactions[0];
        assert!(matches!(&t.primitive, Primitive::Status(s) if s.code == 400));

        // A transaction without transactionID: refused as a whole, with a 400 Status.
        let no_tid = format!(
            r#"<WV-SSP-Message xmlns="{NS_WV_SSP_13}"><Session sessionID="g@gw"><Transaction mode="Request"><SearchRequest/></Transaction></Session></WV-SSP-Message>"#
        );
        let (code, body) = raw_post(&x.url(), SSP_CONTENT_TYPE, &no_tid).await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert!(body.contains(r#"code="400""#));

        let (code, _) = raw_post(&x.url(), "image/png", "x").await;
        assert_eq!(code, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(
            x.wire_log()
                .iter()
                .filter(|(d, _)| *d == WireDir::Received)
                .count(),
            2
        );
        x.shutdown().await;
    }

    #[tokio::test]
    async fn sync_core_answers_inbound_requests_in_the_body() {
        let x = CoreSim::start(CoreSimConfig::new("core.opx.example", CoreMode::Sync))
            .await
            .unwrap();
        x.add_user("usera", Some("+46701234567"), "User A");
        let search = format!(
            r#"<WV-SSP-Message xmlns="{NS_WV_SSP_13}"><Session sessionID="g@gw"><Transaction mode="Request" transactionID="t1"><SearchRequest><SearchPairList><SearchElement>USER_MOBILE_NUMBER</SearchElement><SearchString>+46701234567</SearchString></SearchPairList></SearchRequest></Transaction></Session></WV-SSP-Message>"#
        );
        let (code, body) = raw_post(&x.url(), SSP_CONTENT_TYPE, &search).await;
        assert_eq!(code, StatusCode::OK);
        let msg = Codec::default().parse(body.as_bytes()).unwrap();
        let t = &msg.as_session().unwrap().transactions[0];
        assert_eq!((t.mode, t.transaction_id.as_str()), (Mode::Response, "t1"));
        let Primitive::SearchResponse(r) = &t.primitive else {
            panic!("{:?}", t.primitive)
        };
        assert_eq!(r.findings.as_deref(), Some("1"));
        assert_eq!(r.completion_flag.as_deref(), Some("T"));
        assert_eq!(r.results[0].id, "wv:usera@core.opx.example");
        assert_eq!(r.results[0].friendly_name.as_deref(), Some("User A"));
        x.shutdown().await;
    }

    #[tokio::test]
    async fn local_delivery_and_directory() {
        let (x, y) = pair(CoreMode::Async, CoreMode::Async).await;
        let c = x.core_id("userc");
        let (_, st) = x
            .send_message("usera", &[&c], "on-net", true)
            .await
            .unwrap();
        assert_eq!(st.code, 200);
        assert_eq!(x.received("userc")[0].text, "on-net");
        assert_eq!(x.delivery_reports("usera").len(), 1);
        // Nothing went over the wire for an on-net message.
        assert!(x.wire_log().is_empty());
        assert_eq!(
            x.directory_csv(),
            "msisdn,core_id\n+46701234567,wv:usera@core.opx.example\n"
        );
        // Requests fail with an error (not a hang) when the gateway is gone.
        y.shutdown().await;
        let err = x
            .send_message("usera", &["wv:userb@core.opy.example"], "x", false)
            .await;
        assert!(err.is_err());
        x.shutdown().await;
    }

    #[test]
    fn tids() {
        assert_eq!(
            guess_tid(r#"<Transaction transactionID="abc-1" mode"#).as_deref(),
            Some("abc-1")
        );
        assert_eq!(guess_tid("<x"), None);
    }
}
