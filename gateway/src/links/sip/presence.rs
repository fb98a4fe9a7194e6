//! Presence over SIP/SIMPLE, our users watching SIP users (RFC 3856, RFC 6665): an SSP
//! `SubscribeRequest` becomes a `SUBSCRIBE` (`Event: presence`, PIDF) whose dialog the
//! gateway keeps, refreshes before it runs out, and ends with `Expires: 0` on
//! `UnsubscribeRequest`; each `NOTIFY` in it becomes a `PresenceNotification` to the core
//! (unchanged states are not repeated); `GetPresenceRequest` is a fetch (a `SUBSCRIBE` with
//! `Expires: 0`, answered with the state its one `NOTIFY` carries).
//!
//! Dialogs are kept in the state store's `sip.subscriptions` table (by Call-ID) as well as
//! in memory, so a restarted gateway, or another replica the far side reaches, recognises
//! the NOTIFYs of subscriptions made before, and refreshes them: presence resumes without a
//! new subscription from the core.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::dialogs::{Dialogs, now};
use super::map;
use super::pidf::{self, Presence};
use super::stack::{DialogIds, Incoming, Outgoing, Reply, Transport};
use super::{SipLink, SipRefusal, SipServer, SipTarget, refuse};
use crate::error::{Failure, Kind};
use crate::links::Links;
use crate::rewrite::PeerView;
use crate::ssp::primitives::{GetPresenceResponse, PresenceNotification, PresenceRequest};
use crate::ssp::{Entity, Primitive, Status, Transaction, status};
use crate::store::Store;

/// The store table the dialogs are kept in.
const TABLE: &str = "sip.subscriptions";

/// How long an ended subscription waits for its last NOTIFY (RFC 3261 Timer F).
const ENDING: std::time::Duration = std::time::Duration::from_secs(32);

/// One subscription of ours: the dialog and what it is for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Subscription {
    /// The dialog.
    pub(crate) dialog: DialogIds,
    /// Our watching user's public ID (`wv:+MSISDN`).
    pub(crate) watcher: String,
    /// The same as a SIP URI (From).
    pub(crate) watcher_uri: String,
    /// The presentity as the core named it.
    pub(crate) presentity: String,
    /// The presentity's SIP URI (To).
    pub(crate) presentity_uri: String,
    /// Where requests in the dialog go: the far side's Contact, else the Request-URI.
    pub(crate) target: String,
    /// The server that took it, and over what.
    pub(crate) server: SocketAddr,
    /// Over TCP (else UDP).
    pub(crate) tcp: bool,
    /// The presentity's domain.
    pub(crate) domain: String,
    /// When it runs out (Unix seconds).
    pub(crate) expires_at: u64,
    /// How long each refresh asks for (seconds).
    pub(crate) period: u32,
    /// Ended by us (`Expires: 0` sent): kept only to take the far side's last NOTIFY, until
    /// `expires_at`.
    #[serde(default)]
    pub(crate) ending: bool,
    /// The last state told to the core (not repeated).
    #[serde(skip)]
    pub(crate) last: Option<Presence>,
}

impl super::dialogs::Dialog for Subscription {
    fn call_id(&self) -> &str {
        &self.dialog.call_id
    }
    fn expires_at(&self) -> u64 {
        self.expires_at
    }
}

/// The subscriptions of this process, and the fetches waiting for their NOTIFY.
#[derive(Debug)]
pub(crate) struct Subscriptions {
    kept: Dialogs<Subscription>,
    fetches: Mutex<HashMap<String, oneshot::Sender<Presence>>>,
}

impl Subscriptions {
    /// The subscriptions kept in `store` (what a restarted process takes up again).
    pub(crate) async fn load(store: Option<Arc<Store>>) -> Subscriptions {
        Subscriptions {
            kept: Dialogs::load(TABLE, store).await,
            fetches: Mutex::new(HashMap::new()),
        }
    }

    fn fetches(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Presence>>> {
        self.fetches.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn by_parties(&self, watcher: &str, presentity: &str) -> Option<Subscription> {
        self.kept
            .select(|s| {
                !s.ending && s.watcher == watcher && s.presentity.eq_ignore_ascii_case(presentity)
            })
            .into_iter()
            .next()
    }
}

/// What an incoming NOTIFY comes to.
pub(crate) enum Notified {
    /// Nothing for the core (pending, unchanged, ended, a fetch's answer).
    Nothing,
    /// A `PresenceNotification` for the core, from this SIP domain.
    Core(String, Box<Transaction>),
}

impl Links {
    /// Our watcher (core ID in `meta`) as (public ID, SIP URI); a watcher with no number
    /// cannot be named over SIP.
    fn sip_watcher(&self, r: &PresenceRequest) -> Result<(String, String), Failure> {
        let core_id = r
            .meta
            .as_ref()
            .and_then(|m| m.requestor_user())
            .unwrap_or_default()
            .to_owned();
        let public = {
            let dir = self.dir.load();
            self.rw.outbound_id(&dir, &core_id, PeerView::default())
        };
        let uri = crate::ssp::WvId::parse(&public)
            .ok()
            .and_then(|id| id.e164())
            .map(|n| map::our_user(n, &self.cfg.operator.public_domain))
            .ok_or_else(|| {
                Failure::local(
                    Kind::InvalidUserId,
                    "the watcher has no number to be named by over SIP",
                )
            })?;
        Ok((public, uri))
    }

    /// The presentity of a request for one SIP destination (the part the route stage gave).
    fn sip_presentity(r: &PresenceRequest) -> Result<String, Failure> {
        r.users
            .first()
            .map(|e: &Entity| e.id.clone())
            .ok_or_else(|| Failure::local(Kind::Malformed, "no presentity"))
    }

    /// Send `out` to the servers of `target` in turn: the first final answer from a server
    /// that did not fail as a server, and the server that gave it.
    pub(super) async fn sip_send(
        &self,
        link: &SipLink,
        target: &SipTarget,
        out: &Outgoing,
        body_len: usize,
    ) -> Result<(Reply, SipServer), Failure> {
        let mut last = Err(Failure::local(
            Kind::Unreachable,
            format!("no SIP server for {}", target.domain),
        ));
        for server in &target.servers {
            let transport = if server.tcp || body_len > super::UDP_MAX {
                Transport::Tcp
            } else {
                Transport::Udp
            };
            let mut o = out.clone();
            o.dest = server.addr;
            o.transport = transport;
            if let Some(c) = &mut o.contact {
                *c = link.contact(c, transport);
            }
            let reply = link.stack.request(o).await;
            self.count_sip_out(out.method, reply.as_ref().ok().map(|r| r.code));
            let used = SipServer {
                addr: server.addr,
                tcp: transport == Transport::Tcp,
            };
            match reply {
                // Another server may do better only when this one failed as a server.
                Ok(r) if matches!(r.code, 408 | 500 | 503) => last = Ok((r, used)),
                Ok(r) => return Ok((r, used)),
                Err(e) => last = Err(Failure::local(Kind::Unreachable, e.to_string())),
            }
        }
        last
    }

    /// Count a request we sent and its answer (`None`: not sent).
    pub(super) fn count_sip_out(&self, method: &'static str, code: Option<u16>) {
        self.metrics
            .sip
            .with_label_values(&[
                "out",
                super::method_label(method),
                code.map_or("error", crate::ops::metrics::class_label),
            ])
            .inc();
    }

    /// `SubscribeRequest` to a SIP destination: a SUBSCRIBE dialog, kept.
    pub(super) async fn sip_subscribe(
        &self,
        link: &SipLink,
        target: &SipTarget,
        r: &PresenceRequest,
    ) -> Result<Primitive, Failure> {
        let (watcher, watcher_uri) = self.sip_watcher(r)?;
        let presentity = Self::sip_presentity(r)?;
        if let Some(old) = link.subs.by_parties(&watcher, &presentity) {
            // Subscribing again refreshes the one there is (RFC 6665 §4.1.2.1).
            return match self.sip_refresh(link, old).await {
                Ok(()) => Ok(ok()),
                Err(f) => Err(f),
            };
        }
        let period = link.spec.subscribe_expires;
        let call_id = format!("{:032x}@ssp", rand::random::<u128>());
        let out = subscribe_out(
            target.uri.clone(),
            watcher_uri.clone(),
            target.uri.clone(),
            period,
            None,
            Some(call_id.clone()),
        );
        // Known before it is sent: the first NOTIFY may come before the answer does.
        let pending = Subscription {
            dialog: DialogIds {
                call_id: call_id.clone(),
                local_tag: String::new(),
                remote_tag: String::new(),
                cseq: 2,
            },
            watcher,
            watcher_uri,
            presentity,
            presentity_uri: target.uri.clone(),
            target: target.uri.clone(),
            server: target.servers.first().map_or(link.local(), |s| s.addr),
            tcp: false,
            domain: target.domain.clone(),
            expires_at: now() + u64::from(period),
            period,
            ending: false,
            last: None,
        };
        link.subs
            .kept
            .lock()
            .insert(call_id.clone(), pending.clone());
        let mut sent = self.sip_send(link, target, &out, 0).await;
        let mut retried = false;
        // 423: the far side wants longer; asked once more for its Min-Expires (RFC 6665 §4.1.2.1).
        if let Ok((r, _)) = &sent
            && r.code == 423
            && let Some(min) = r.min_expires.filter(|m| (period..=86_400).contains(m))
        {
            let again = Outgoing {
                dialog: Some(DialogIds {
                    call_id: call_id.clone(),
                    local_tag: r.local_tag.clone(),
                    remote_tag: String::new(),
                    cseq: 2,
                }),
                ..subscribe_out(
                    target.uri.clone(),
                    pending.watcher_uri.clone(),
                    target.uri.clone(),
                    min,
                    None,
                    None,
                )
            };
            sent = self.sip_send(link, target, &again, 0).await;
            retried = true;
        }
        let (reply, server) = match sent {
            Ok(x) => x,
            Err(f) => {
                link.subs.kept.lock().remove(&call_id);
                return Err(f);
            }
        };
        if let Some(f) = map::failure(reply.code, &reply.reason) {
            link.subs.kept.lock().remove(&call_id);
            return Err(f);
        }
        let mut sub = link
            .subs
            .kept
            .lock()
            .get(&call_id)
            .cloned()
            .unwrap_or(pending);
        sub.dialog.local_tag = reply.local_tag.clone();
        if let Some(t) = &reply.remote_tag {
            sub.dialog.remote_tag = t.clone();
        }
        if let Some(c) = &reply.contact {
            sub.target = c.clone();
        }
        sub.server = server.addr;
        sub.tcp = server.tcp;
        sub.expires_at = now() + u64::from(reply.expires.unwrap_or(period));
        if retried {
            sub.dialog.cseq = 3;
        }
        tracing::info!(watcher = %sub.watcher, presentity = %sub.presentity, call_id = %call_id, code = reply.code, "SIP presence subscription made");
        link.subs.kept.keep(sub).await;
        self.metrics.sip_subscriptions.set(gauge(link));
        Ok(ok())
    }

    /// Refresh `sub` in its dialog; a dialog the far side no longer knows (481) is made anew.
    async fn sip_refresh(&self, link: &SipLink, mut sub: Subscription) -> Result<(), Failure> {
        let out = Outgoing {
            dialog: Some(sub.dialog.clone()),
            ..subscribe_out(
                sub.target.clone(),
                sub.watcher_uri.clone(),
                sub.presentity_uri.clone(),
                sub.period,
                None,
                None,
            )
        };
        let target = sub.in_dialog_target();
        sub.dialog.cseq += 1;
        let (reply, _) = self.sip_send(link, &target, &out, 0).await?;
        if reply.code == 481 {
            link.subs.kept.forget(&sub.dialog.call_id).await;
            let fresh = SipTarget {
                domain: sub.domain.clone(),
                uri: sub.presentity_uri.clone(),
                servers: vec![SipServer {
                    addr: sub.server,
                    tcp: sub.tcp,
                }],
            };
            let req = PresenceRequest {
                users: vec![Entity::user(sub.presentity.clone())],
                ..Default::default()
            };
            return self
                .sip_subscribe_as(link, &fresh, &req, &sub.watcher, &sub.watcher_uri)
                .await
                .map(|_| ());
        }
        if let Some(f) = map::failure(reply.code, &reply.reason) {
            link.subs.kept.keep(sub).await;
            return Err(f);
        }
        sub.expires_at = now() + u64::from(reply.expires.unwrap_or(sub.period));
        link.subs.kept.keep(sub).await;
        Ok(())
    }

    /// A new subscription for a watcher already known by its public ID and URI (a refresh
    /// the far side had forgotten).
    async fn sip_subscribe_as(
        &self,
        link: &SipLink,
        target: &SipTarget,
        r: &PresenceRequest,
        watcher: &str,
        watcher_uri: &str,
    ) -> Result<Primitive, Failure> {
        let presentity = Self::sip_presentity(r)?;
        let period = link.spec.subscribe_expires;
        let out = subscribe_out(
            target.uri.clone(),
            watcher_uri.to_owned(),
            target.uri.clone(),
            period,
            None,
            None,
        );
        let (reply, server) = self.sip_send(link, target, &out, 0).await?;
        if let Some(f) = map::failure(reply.code, &reply.reason) {
            return Err(f);
        }
        let sub = Subscription {
            dialog: DialogIds {
                call_id: reply.call_id.clone(),
                local_tag: reply.local_tag.clone(),
                remote_tag: reply.remote_tag.clone().unwrap_or_default(),
                cseq: 2,
            },
            watcher: watcher.to_owned(),
            watcher_uri: watcher_uri.to_owned(),
            presentity,
            presentity_uri: target.uri.clone(),
            target: reply.contact.clone().unwrap_or_else(|| target.uri.clone()),
            server: server.addr,
            tcp: server.tcp,
            domain: target.domain.clone(),
            expires_at: now() + u64::from(reply.expires.unwrap_or(period)),
            period,
            ending: false,
            last: None,
        };
        link.subs.kept.keep(sub).await;
        Ok(ok())
    }

    /// `UnsubscribeRequest` to a SIP destination: the dialog ends with `Expires: 0`. Ended on
    /// our side whatever the far side says (an unknown subscription is ended already).
    pub(super) async fn sip_unsubscribe(
        &self,
        link: &SipLink,
        r: &PresenceRequest,
    ) -> Result<Primitive, Failure> {
        let (watcher, _) = self.sip_watcher(r)?;
        let presentity = Self::sip_presentity(r)?;
        let Some(sub) = link.subs.by_parties(&watcher, &presentity) else {
            return Ok(ok());
        };
        let out = Outgoing {
            dialog: Some(sub.dialog.clone()),
            ..subscribe_out(
                sub.target.clone(),
                sub.watcher_uri.clone(),
                sub.presentity_uri.clone(),
                0,
                None,
                None,
            )
        };
        // Kept a little longer, ending: the far side's last NOTIFY (terminated) is still
        // answered 200 (a 481 would make it clean up what it already ended).
        let mut ending = sub.clone();
        ending.ending = true;
        ending.expires_at = now() + ENDING.as_secs();
        ending.dialog.cseq += 1;
        link.subs.kept.keep(ending).await;
        self.metrics.sip_subscriptions.set(gauge(link));
        let sent = self.sip_send(link, &sub.in_dialog_target(), &out, 0).await;
        match sent {
            Ok((reply, _)) => {
                tracing::info!(watcher = %sub.watcher, presentity = %sub.presentity, code = reply.code, "SIP presence subscription ended");
            }
            Err(f) => {
                tracing::info!(watcher = %sub.watcher, presentity = %sub.presentity, error = %f, "SIP presence subscription ended here; the far side was not told");
            }
        }
        Ok(ok())
    }

    /// `GetPresenceRequest` to a SIP destination: a fetch (SUBSCRIBE `Expires: 0`), answered
    /// with the state its NOTIFY carries.
    pub(super) async fn sip_fetch(
        &self,
        link: &SipLink,
        target: &SipTarget,
        r: &PresenceRequest,
    ) -> Result<Primitive, Failure> {
        let (_, watcher_uri) = self.sip_watcher(r)?;
        let presentity = Self::sip_presentity(r)?;
        let call_id = format!("{:032x}@ssp", rand::random::<u128>());
        let (tx, rx) = oneshot::channel();
        link.subs.fetches().insert(call_id.clone(), tx);
        let out = subscribe_out(
            target.uri.clone(),
            watcher_uri,
            target.uri.clone(),
            0,
            None,
            Some(call_id.clone()),
        );
        let result = async {
            let (reply, _) = self.sip_send(link, target, &out, 0).await?;
            if let Some(f) = map::failure(reply.code, &reply.reason) {
                return Err(f);
            }
            tokio::time::timeout(self.cfg.timeouts.request, rx)
                .await
                .ok()
                .and_then(Result::ok)
                .ok_or_else(|| {
                    Failure::local(
                        Kind::Timeout,
                        format!("no NOTIFY from {} for the fetch", target.domain),
                    )
                })
        }
        .await;
        link.subs.fetches().remove(&call_id);
        let p = result?;
        Ok(Primitive::GetPresenceResponse(GetPresenceResponse {
            status: Some(Status::with(status::OK, "Successful")),
            values: vec![pidf::to_ssp(&presentity, &p)],
            ..Default::default()
        }))
    }

    /// Refresh the subscriptions that run out within a fifth of their period (at least 10 s);
    /// drop those that ran out. Called every few seconds by the listener's task.
    pub(crate) async fn refresh_sip_subscriptions(&self) {
        let Some(link) = self.sip.get() else { return };
        self.metrics.sip_subscriptions.set(gauge(link));
        let t = now();
        for sub in link
            .subs
            .kept
            .select(|s| s.expires_at <= t + (u64::from(s.period) / 5).max(10))
        {
            if sub.ending {
                if sub.expires_at <= now() {
                    link.subs.kept.forget(&sub.dialog.call_id).await;
                }
                continue;
            }
            if sub.expires_at <= now() {
                tracing::warn!(watcher = %sub.watcher, presentity = %sub.presentity, "SIP presence subscription ran out unrefreshed");
                link.subs.kept.forget(&sub.dialog.call_id).await;
                continue;
            }
            let (w, p) = (sub.watcher.clone(), sub.presentity.clone());
            if let Err(f) = self.sip_refresh(link, sub).await {
                tracing::warn!(watcher = %w, presentity = %p, error = %f, "SIP presence subscription not refreshed; tried again");
            }
        }
    }

    /// An incoming NOTIFY: for a subscription of ours (else 481), from where it was made or
    /// a trusted address of its domain (else 403), `Event: presence` with PIDF.
    pub(crate) async fn take_notify(&self, req: &Incoming) -> Result<Notified, SipRefusal> {
        let link = self.sip.get().ok_or_else(|| refuse(503, "no SIP link"))?;
        let ours = map::tag(&req.to).unwrap_or_default().to_owned();
        let event = req.header("Event").unwrap_or_default();
        let event = event.split(';').next().unwrap_or("").trim();
        if !event.eq_ignore_ascii_case("presence") {
            let mut r = refuse(489, format!("event {event:?}"));
            r.headers.push(("Allow-Events", "presence".into()));
            return Err(r);
        }
        let state = map::sub_state(&req.header("Subscription-State").unwrap_or_default());
        let presence = || -> Result<Presence, SipRefusal> {
            if req.body.len() > link.spec.max_body {
                return Err(refuse(413, format!("a {} byte body", req.body.len())));
            }
            let ctype = req.content_type.clone().unwrap_or_default();
            let bare = ctype.split(';').next().unwrap_or("").trim();
            if !req.body.is_empty() && !bare.eq_ignore_ascii_case(pidf::CONTENT_TYPE) {
                let mut r = refuse(415, format!("content type {ctype:?}"));
                r.headers.push(("Accept", pidf::CONTENT_TYPE.into()));
                return Err(r);
            }
            pidf::parse(&req.body, link.spec.max_body).map_err(|e| refuse(400, e.to_string()))
        };
        // A fetch's NOTIFY.
        let fetch = link.subs.fetches().remove(&req.call_id);
        if let Some(tx) = fetch {
            let p = presence()?;
            let _ = tx.send(p);
            return Ok(Notified::Nothing);
        }
        let Some(mut sub) = link.subs.kept.find(&req.call_id).await else {
            return Err(refuse(481, "no such subscription"));
        };
        if !sub.dialog.local_tag.is_empty() && ours != sub.dialog.local_tag {
            return Err(refuse(481, "no such subscription (tag)"));
        }
        let source = req.source.map(|s| s.ip().to_canonical());
        let trusted = source.is_some_and(|ip| {
            ip == sub.server.ip().to_canonical() || link.spec.peer_at(&sub.domain, ip).is_some()
        });
        if !trusted {
            return Err(refuse(
                403,
                format!(
                    "a NOTIFY for {} from an address it does not use",
                    sub.domain
                ),
            ));
        }
        let p = presence()?;
        if sub.dialog.remote_tag.is_empty()
            && let Some(t) = map::tag(&req.from)
        {
            sub.dialog.remote_tag = t.to_owned();
        }
        if state.terminated() {
            if !sub.ending {
                tracing::info!(watcher = %sub.watcher, presentity = %sub.presentity, reason = ?state.reason, "SIP presence subscription ended by the far side");
            }
            link.subs.kept.forget(&sub.dialog.call_id).await;
            self.metrics.sip_subscriptions.set(gauge(link));
            return Ok(Notified::Nothing);
        }
        if sub.ending {
            // Ended here: what it says now is for nobody.
            return Ok(Notified::Nothing);
        }
        if let Some(e) = state.expires {
            sub.expires_at = now() + u64::from(e);
        }
        let changed = state.state != "pending" && sub.last.as_ref() != Some(&p);
        if changed {
            sub.last = Some(p.clone());
        }
        link.subs.kept.keep(sub.clone()).await;
        if !changed {
            return Ok(Notified::Nothing);
        }
        let note = PresenceNotification {
            watchers: vec![Entity::user(sub.watcher.clone())],
            values: vec![pidf::to_ssp(&sub.presentity, &p)],
            ..Default::default()
        };
        let tid = format!("sip-{:016x}", rand::random::<u64>());
        Ok(Notified::Core(
            sub.domain.clone(),
            Box::new(Transaction::request(
                tid,
                Primitive::PresenceNotification(note),
            )),
        ))
    }
}

impl Subscription {
    /// The destination of requests in this dialog: the server that took it.
    fn in_dialog_target(&self) -> SipTarget {
        SipTarget {
            domain: self.domain.clone(),
            uri: self.target.clone(),
            servers: vec![SipServer {
                addr: self.server,
                tcp: self.tcp,
            }],
        }
    }
}

/// A SUBSCRIBE for presence (its destination filled in by the sender).
fn subscribe_out(
    uri: String,
    from: String,
    to: String,
    expires: u32,
    dialog: Option<DialogIds>,
    call_id: Option<String>,
) -> Outgoing {
    Outgoing {
        method: "SUBSCRIBE",
        uri,
        // The From URI names our user; the Contact says where NOTIFYs come.
        contact: Some(from.clone()),
        from,
        to,
        headers: vec![
            ("Event", "presence".into()),
            ("Accept", pidf::CONTENT_TYPE.into()),
            ("Expires", expires.to_string()),
        ],
        body: None,
        dest: SocketAddr::from(([127, 0, 0, 1], 0)),
        transport: Transport::Udp,
        dialog,
        call_id,
    }
}

/// The number of subscriptions (those ending not counted), as a gauge value.
fn gauge(link: &SipLink) -> i64 {
    i64::try_from(link.subs.kept.select(|s| !s.ending).len()).unwrap_or(i64::MAX)
}

fn ok() -> Primitive {
    Primitive::Status(Status::with(status::OK, "Successful"))
}
