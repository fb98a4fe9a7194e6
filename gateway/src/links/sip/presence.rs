//! Presence over SIP/SIMPLE, our users watching SIP users (RFC 3856, RFC 6665): an SSP
//! `SubscribeRequest` becomes a `SUBSCRIBE` (`Event: presence`, PIDF) whose dialog the
//! gateway keeps, refreshes before it runs out, and ends with `Expires: 0` on
//! `UnsubscribeRequest`; each `NOTIFY` in it becomes a `PresenceNotification` to the core
//! (a state the core already has is not repeated); `GetPresenceRequest` is a fetch (a
//! `SUBSCRIBE` with `Expires: 0`, answered with the state its one `NOTIFY` carries).
//!
//! A dialog is pending (memory only) until its SUBSCRIBE is answered, then active (also in
//! the state store's `sip.subscriptions` table, so a restarted gateway recognises its
//! NOTIFYs and refreshes it: presence resumes without a new subscription from the core),
//! then ending once we sent `Expires: 0` (kept to take the far side's last NOTIFY). Every
//! change is made in place (`Dialogs::update`), so a refresh answered after an unsubscribe
//! cannot bring the subscription back. A subscription the far side ends is made again when
//! its reason allows it (`deactivated`, `timeout`); otherwise, and when one runs out
//! unrefreshed, the core is told the presentity is offline, so no watcher waits on a state
//! that will not change.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::dialogs::{Dialog, Dialogs, now};
use super::map;
use super::pidf::{self, Presence};
use super::stack::{DialogIds, Incoming, Outgoing, Reply, Transport};
use super::{SipLink, SipRefusal, SipServer, SipTarget, refuse};
use crate::error::{Failure, Kind};
use crate::links::Links;
use crate::ssp::primitives::{GetPresenceResponse, PresenceNotification, PresenceRequest};
use crate::ssp::{Entity, Primitive, Status, Transaction, status};
use crate::store::Store;

/// The store table the dialogs are kept in.
const TABLE: &str = "sip.subscriptions";

/// How long an ended subscription waits for its last NOTIFY (RFC 3261 Timer F).
const ENDING: Duration = Duration::from_secs(32);

/// How long a refresh that failed waits before it is tried again.
const RETRY: u64 = 30;

/// Where a subscription is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Phase {
    /// SUBSCRIBE sent, not answered yet (memory only).
    Pending,
    /// Answered 2xx: refreshed until ended.
    Active,
    /// `Expires: 0` sent: waiting only for the last NOTIFY.
    Ending,
}

/// One subscription of ours: the dialog and what it is for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Subscription {
    /// The dialog (our tag chosen before the SUBSCRIBE went; the CSeq is our next one).
    pub(crate) dialog: DialogIds,
    /// The route set: `Route` headers of our requests in the dialog.
    pub(crate) route: Vec<String>,
    /// The highest CSeq of the far side's NOTIFYs taken.
    pub(crate) remote_cseq: u32,
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
    /// Over TLS (and TCP).
    #[serde(default)]
    pub(crate) tls: bool,
    /// The presentity's domain.
    pub(crate) domain: String,
    /// When it runs out (Unix seconds).
    pub(crate) expires_at: u64,
    /// How long the far side granted it last (seconds): it is refreshed with a fifth of
    /// that left.
    pub(crate) granted: u32,
    /// How long each refresh asks for (seconds; raised by a 423).
    pub(crate) period: u32,
    /// Where it is in its life.
    pub(crate) phase: Phase,
    /// No refresh before this (Unix seconds; after a failed one).
    pub(crate) retry_at: u64,
    /// The replica that made it.
    pub(crate) owner: String,
    /// The last state the core took (not repeated).
    #[serde(skip)]
    pub(crate) last: Option<Presence>,
}

impl Dialog for Subscription {
    fn call_id(&self) -> &str {
        &self.dialog.call_id
    }
    fn expires_at(&self) -> u64 {
        self.expires_at
    }
    fn owner(&self) -> &str {
        &self.owner
    }
    fn pending(&self) -> bool {
        self.phase == Phase::Pending
    }
}

/// A fetch waiting for its NOTIFY: our tag, and where the state goes.
type Fetch = (String, oneshot::Sender<Presence>);

/// The subscriptions of this process, and the fetches waiting for their NOTIFY.
#[derive(Debug)]
pub(crate) struct Subscriptions {
    kept: Dialogs<Subscription>,
    fetches: Mutex<HashMap<String, Fetch>>,
}

impl Subscriptions {
    /// The subscriptions replica `owner` kept in `store`.
    pub(crate) async fn load(store: Option<Arc<Store>>, owner: &str) -> Subscriptions {
        Subscriptions {
            kept: Dialogs::load(TABLE, store, owner).await,
            fetches: Mutex::new(HashMap::new()),
        }
    }

    fn fetches(&self) -> std::sync::MutexGuard<'_, HashMap<String, Fetch>> {
        self.fetches.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn active(&self, watcher: &str, presentity: &str) -> Option<Subscription> {
        self.kept
            .select(|s| {
                s.phase == Phase::Active
                    && s.watcher == watcher
                    && s.presentity.eq_ignore_ascii_case(presentity)
            })
            .into_iter()
            .next()
    }

    /// Whether `ip` is the server of one of our subscriptions.
    fn serves(&self, ip: std::net::IpAddr) -> bool {
        self.kept.count(|s| s.server.ip().to_canonical() == ip) > 0
    }
}

/// Takes a dialog held while it is made out of memory if the making is abandoned (its
/// caller gave up, or it failed).
struct Held<'a> {
    subs: &'a Subscriptions,
    call_id: String,
    armed: bool,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.subs.kept.drop_held(&self.call_id);
        }
    }
}

/// Takes a fetch's waiter away when the fetch ends, however it ends.
struct Waiting<'a> {
    subs: &'a Subscriptions,
    call_id: String,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.subs.fetches().remove(&self.call_id);
    }
}

/// What an incoming NOTIFY comes to.
pub(crate) enum Notified {
    /// Nothing for the core (pending, unchanged, ended by us, a fetch's answer).
    Nothing,
    /// A `PresenceNotification` for the core, from this SIP domain; once the core took it,
    /// [`Links::sip_told`] with the dialog's Call-ID and the state.
    Core(String, Box<Transaction>, String, Presence),
    /// The far side ended the subscription in a way that asks for a new one (RFC 6665
    /// §4.1.3: `deactivated`, `timeout`): [`Links::sip_resubscribe`].
    Again(Box<Subscription>),
}

fn tag() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn new_call_id() -> String {
    format!("{:032x}@ssp", rand::random::<u128>())
}

impl Links {
    /// Our watcher (core ID in `meta`) as (public ID, SIP URI).
    fn sip_watcher(&self, r: &PresenceRequest) -> Result<(String, String), Failure> {
        let core_id = r
            .meta
            .as_ref()
            .and_then(|m| m.requestor_user())
            .unwrap_or_default();
        self.sip_our_user(core_id, "watcher")
    }

    /// The presentity of a request for one SIP destination (the part the route stage gave).
    fn sip_presentity(r: &PresenceRequest) -> Result<String, Failure> {
        r.users
            .first()
            .map(|e: &Entity| e.id.clone())
            .ok_or_else(|| Failure::local(Kind::Malformed, "no presentity"))
    }

    /// Send `out` to the servers of `target` in turn, all within one transaction timeout:
    /// the first final answer from a server that did not fail as a server, and the server
    /// that gave it.
    pub(super) async fn sip_send(
        &self,
        link: &SipLink,
        target: &SipTarget,
        out: &Outgoing,
        body_len: usize,
    ) -> Result<(Reply, SipServer), Failure> {
        let deadline = tokio::time::Instant::now() + self.cfg().timeouts.request;
        let mut last = Err(Failure::local(
            Kind::Unreachable,
            format!("no SIP server for {}", target.domain),
        ));
        for server in &target.servers {
            // TLS when DNS offered it (never downgraded); TCP when offered or the body is
            // too big for a datagram.
            let transport = Transport::of(server.tcp || body_len > super::UDP_MAX, server.tls);
            let mut o = out.clone();
            o.dest = server.addr;
            o.transport = transport;
            o.domain.clone_from(&target.domain);
            if let Some(c) = &mut o.contact {
                *c = link.contact(c, transport);
            }
            let reply = match tokio::time::timeout_at(deadline, link.stack.request(o)).await {
                Ok(r) => r,
                Err(_) => {
                    self.count_sip_out(out.method, None);
                    return Err(Failure::local(
                        Kind::Timeout,
                        format!("no SIP answer from {} in time", target.domain),
                    ));
                }
            };
            self.count_sip_out(out.method, reply.as_ref().ok().map(|r| r.code));
            let used = SipServer {
                addr: server.addr,
                tcp: transport != Transport::Udp,
                tls: transport == Transport::Tls,
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

    /// Count a request we sent and its answer (`None`: none came).
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

    fn count_subscriptions(&self, link: &SipLink) {
        let n = link.subs.kept.count(|s| s.phase == Phase::Active);
        self.metrics
            .sip_subscriptions
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// `SubscribeRequest` to a SIP destination: a SUBSCRIBE dialog, kept. Subscribing again
    /// refreshes the one there is (RFC 6665 §4.1.2.1).
    pub(super) async fn sip_subscribe(
        &self,
        link: &SipLink,
        target: &SipTarget,
        r: &PresenceRequest,
    ) -> Result<Primitive, Failure> {
        let (watcher, watcher_uri) = self.sip_watcher(r)?;
        let presentity = Self::sip_presentity(r)?;
        if let Some(old) = link.subs.active(&watcher, &presentity) {
            self.sip_refresh(link, &old.dialog.call_id).await?;
            return Ok(ok());
        }
        self.sip_make(link, target, watcher, watcher_uri, presentity)
            .await?;
        Ok(ok())
    }

    /// Make a new subscription of `watcher` to `presentity` at `target`.
    async fn sip_make(
        &self,
        link: &SipLink,
        target: &SipTarget,
        watcher: String,
        watcher_uri: String,
        presentity: String,
    ) -> Result<(), Failure> {
        let mut period = link.spec.subscribe_expires;
        let call_id = new_call_id();
        let dialog = DialogIds {
            call_id: call_id.clone(),
            local_tag: tag(),
            remote_tag: String::new(),
            cseq: 1,
        };
        // Held before it is sent: the first NOTIFY may come before the answer does.
        link.subs.kept.hold(Subscription {
            dialog: dialog.clone(),
            route: Vec::new(),
            remote_cseq: 0,
            watcher,
            watcher_uri: watcher_uri.clone(),
            presentity,
            presentity_uri: target.uri.clone(),
            target: target.uri.clone(),
            server: target.servers.first().map_or(link.local(), |s| s.addr),
            tcp: false,
            tls: false,
            domain: target.domain.clone(),
            expires_at: now() + u64::from(period),
            granted: period,
            period,
            phase: Phase::Pending,
            retry_at: 0,
            owner: link.owner.clone(),
            last: None,
        });
        let mut held = Held {
            subs: &link.subs,
            call_id: call_id.clone(),
            armed: true,
        };
        let subscribe = |expires: u32, cseq: u32| Outgoing {
            dialog: Some(DialogIds {
                cseq,
                ..dialog.clone()
            }),
            ..subscribe_out(
                target.uri.clone(),
                watcher_uri.clone(),
                target.uri.clone(),
                expires,
                Vec::new(),
            )
        };
        let (mut reply, mut server) = self
            .sip_send(link, target, &subscribe(period, 1), 0)
            .await?;
        let mut cseq = 2;
        // 423: the far side wants longer; asked once more for its Min-Expires.
        if reply.code == 423
            && let Some(min) = reply.min_expires.filter(|m| (period..=86_400).contains(m))
        {
            period = min;
            (reply, server) = self
                .sip_send(link, target, &subscribe(period, 2), 0)
                .await?;
            cseq = 3;
        }
        if let Some(f) = map::failure(reply.code, &reply.reason) {
            return Err(f);
        }
        let granted = reply.expires.unwrap_or(period);
        let made = link
            .subs
            .kept
            .update(&call_id, |s| {
                if let Some(t) = &reply.remote_tag
                    && s.dialog.remote_tag.is_empty()
                {
                    s.dialog.remote_tag = t.clone();
                }
                s.dialog.cseq = cseq;
                // The far side's Record-Route, reversed, is our route set (§12.1.2).
                s.route = reply.record_route.iter().rev().cloned().collect();
                if let Some(c) = &reply.contact {
                    s.target = c.clone();
                }
                s.server = server.addr;
                s.tcp = server.tcp;
                s.tls = server.tls;
                s.period = period;
                s.granted = granted;
                s.expires_at = now() + u64::from(granted);
                s.phase = Phase::Active;
                (true, ())
            })
            .await;
        held.armed = false;
        let Some((sub, ())) = made else {
            // Its NOTIFY said `terminated` before the answer was taken: refused, in effect.
            return Err(Failure::new(
                Kind::Declined,
                crate::error::Side::Peer,
                format!("{} ended the subscription at once", target.domain),
            ));
        };
        tracing::info!(watcher = %sub.watcher, presentity = %sub.presentity, call_id = %call_id, code = reply.code, "SIP presence subscription made");
        self.count_subscriptions(link);
        Ok(())
    }

    /// Refresh the subscription of `call_id` in its dialog. A dialog the far side no longer
    /// knows (481) is made anew; a 423 raises what is asked for next time; other failures
    /// wait [`RETRY`] seconds.
    async fn sip_refresh(&self, link: &SipLink, call_id: &str) -> Result<(), Failure> {
        let taken = link
            .subs
            .kept
            .update(call_id, |s| {
                if s.phase != Phase::Active {
                    return (false, None);
                }
                let cseq = s.dialog.cseq;
                s.dialog.cseq += 1;
                (true, Some(cseq))
            })
            .await;
        let Some((sub, Some(cseq))) = taken else {
            return Ok(());
        };
        let out = sub.in_dialog(cseq, sub.period);
        let sent = self.sip_send(link, &sub.in_dialog_target(), &out, 0).await;
        let code = sent.as_ref().map_or(0, |(r, _)| r.code);
        if code == 481 {
            if link.subs.kept.forget(call_id).await.is_none() {
                return Ok(());
            }
            tracing::info!(watcher = %sub.watcher, presentity = %sub.presentity, "SIP subscription unknown to the far side; made anew");
            return self
                .sip_make(
                    link,
                    &sub.anew_target(),
                    sub.watcher.clone(),
                    sub.watcher_uri.clone(),
                    sub.presentity.clone(),
                )
                .await;
        }
        let result = match &sent {
            Ok((r, _)) => map::failure(r.code, &r.reason).map_or(Ok(()), Err),
            Err(f) => Err(f.clone()),
        };
        link.subs
            .kept
            .update(call_id, |s| {
                // Ended meanwhile (an unsubscribe): left as it is.
                if s.phase != Phase::Active {
                    return (false, ());
                }
                match &sent {
                    Ok((r, _)) if (200..300).contains(&r.code) => {
                        s.granted = r.expires.unwrap_or(s.period);
                        s.expires_at = now() + u64::from(s.granted);
                        s.retry_at = 0;
                    }
                    Ok((r, _)) if r.code == 423 => {
                        if let Some(min) = r.min_expires.filter(|m| *m <= 86_400) {
                            s.period = s.period.max(min);
                        }
                    }
                    _ => s.retry_at = now() + RETRY,
                }
                (true, ())
            })
            .await;
        result
    }

    /// Make `old`'s subscription again (the far side forgot or ended it), at the server that
    /// had it; if that fails, the core is told the presentity is offline.
    pub(crate) async fn sip_resubscribe(
        &self,
        old: &Subscription,
    ) -> Option<(String, Transaction)> {
        let link = self.sip.get()?;
        let made = self
            .sip_make(
                link,
                &old.anew_target(),
                old.watcher.clone(),
                old.watcher_uri.clone(),
                old.presentity.clone(),
            )
            .await;
        match made {
            Ok(()) => None,
            Err(f) => {
                tracing::info!(watcher = %old.watcher, presentity = %old.presentity, error = %f, "SIP subscription not made again; the watcher is told the presentity is offline");
                Some(offline(old))
            }
        }
    }

    /// The core took `p` from the dialog of `call_id`: the same state is not sent again.
    pub(crate) async fn sip_told(&self, call_id: &str, p: Presence) {
        if let Some(link) = self.sip.get() {
            link.subs
                .kept
                .update(call_id, |s| {
                    s.last = Some(p);
                    (false, ())
                })
                .await;
        }
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
        let Some(sub) = link.subs.active(&watcher, &presentity) else {
            return Ok(ok());
        };
        // Kept a little longer, ending: the far side's last NOTIFY (terminated) is still
        // answered 200 (a 481 would make it clean up what it already ended).
        let taken = link
            .subs
            .kept
            .update(&sub.dialog.call_id, |s| {
                let cseq = s.dialog.cseq;
                s.dialog.cseq += 1;
                s.phase = Phase::Ending;
                s.expires_at = now() + ENDING.as_secs();
                (true, cseq)
            })
            .await;
        self.count_subscriptions(link);
        let Some((sub, cseq)) = taken else {
            return Ok(ok());
        };
        let out = sub.in_dialog(cseq, 0);
        match self.sip_send(link, &sub.in_dialog_target(), &out, 0).await {
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
    /// with the state its NOTIFY carries, all within one request timeout.
    pub(super) async fn sip_fetch(
        &self,
        link: &SipLink,
        target: &SipTarget,
        r: &PresenceRequest,
    ) -> Result<Primitive, Failure> {
        let deadline = tokio::time::Instant::now() + self.cfg().timeouts.request;
        let (_, watcher_uri) = self.sip_watcher(r)?;
        let presentity = Self::sip_presentity(r)?;
        let dialog = DialogIds {
            call_id: new_call_id(),
            local_tag: tag(),
            remote_tag: String::new(),
            cseq: 1,
        };
        let (tx, rx) = oneshot::channel();
        link.subs
            .fetches()
            .insert(dialog.call_id.clone(), (dialog.local_tag.clone(), tx));
        let _waiting = Waiting {
            subs: &link.subs,
            call_id: dialog.call_id.clone(),
        };
        let out = Outgoing {
            dialog: Some(dialog),
            ..subscribe_out(
                target.uri.clone(),
                watcher_uri,
                target.uri.clone(),
                0,
                Vec::new(),
            )
        };
        let (reply, _) = self.sip_send(link, target, &out, 0).await?;
        if let Some(f) = map::failure(reply.code, &reply.reason) {
            return Err(f);
        }
        let p = tokio::time::timeout_at(deadline, rx)
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| {
                Failure::local(
                    Kind::Timeout,
                    format!("no NOTIFY from {} for the fetch", target.domain),
                )
            })?;
        Ok(Primitive::GetPresenceResponse(GetPresenceResponse {
            status: Some(Status::with(status::OK, "Successful")),
            values: vec![pidf::to_ssp(&presentity, &p)],
            ..Default::default()
        }))
    }

    /// Refresh the subscriptions with a fifth of what was granted left (at least 10 s), not
    /// before a failed refresh's retry time; forget those ended or run out. What the core
    /// must be told (a subscription ran out unrefreshed: offline) is returned.
    pub(crate) async fn refresh_sip_subscriptions(&self) -> Vec<(String, Transaction)> {
        let Some(link) = self.sip.get() else {
            return Vec::new();
        };
        let mut tell = Vec::new();
        let t = now();
        for sub in link.subs.kept.select(|s| {
            s.phase != Phase::Pending
                && s.retry_at <= t
                && s.expires_at <= t + (u64::from(s.granted) / 5).max(10)
        }) {
            if sub.expires_at <= now() {
                if sub.phase == Phase::Active {
                    tracing::warn!(watcher = %sub.watcher, presentity = %sub.presentity, "SIP presence subscription ran out unrefreshed; the watcher is told the presentity is offline");
                    tell.push(offline(&sub));
                }
                link.subs.kept.forget(&sub.dialog.call_id).await;
                continue;
            }
            if sub.phase != Phase::Active {
                continue;
            }
            if let Err(f) = self.sip_refresh(link, &sub.dialog.call_id).await {
                if link.subs.kept.holds(&sub.dialog.call_id) {
                    tracing::warn!(watcher = %sub.watcher, presentity = %sub.presentity, error = %f, "SIP presence subscription not refreshed; tried again later");
                } else {
                    // Forgotten by the far side and not made again: the watcher is told.
                    tracing::info!(watcher = %sub.watcher, presentity = %sub.presentity, error = %f, "SIP subscription not made again; the watcher is told the presentity is offline");
                    tell.push(offline(&sub));
                }
            }
        }
        self.count_subscriptions(link);
        tell
    }

    /// An incoming NOTIFY: for a subscription of ours (else 481), from where it was made or
    /// a trusted address of its domain (else 403), `Event: presence` with PIDF, in CSeq
    /// order (else 500).
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
        let state = map::sub_state(
            &req.header("Subscription-State")
                .ok_or_else(|| refuse(400, "no Subscription-State"))?,
        );
        // Only from a SIP operator we trust or a server we subscribed at: nobody else makes
        // the gateway look anything up.
        let source = req.source.map(|s| s.ip().to_canonical());
        let known = source.is_some_and(|ip| {
            link.spec
                .peers
                .iter()
                .any(|p| p.addresses.iter().any(|n| n.contains(&ip)))
                || link.subs.serves(ip)
        });
        if !known {
            return Err(refuse(403, "a NOTIFY from an address we do not know"));
        }
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
        // A fetch's NOTIFY (its tag must be the one the fetch went with).
        let fetch = {
            let mut f = link.subs.fetches();
            match f.get(&req.call_id) {
                Some((t, _)) if *t == ours => f.remove(&req.call_id),
                _ => None,
            }
        };
        if let Some((_, tx)) = fetch {
            let p = presence()?;
            let _ = tx.send(p);
            return Ok(Notified::Nothing);
        }
        let Some(sub) = link.subs.kept.find(&req.call_id).await else {
            return Err(refuse(481, "no such subscription"));
        };
        if ours != sub.dialog.local_tag {
            return Err(refuse(481, "no such subscription (our tag)"));
        }
        let theirs = map::tag(&req.from).unwrap_or_default();
        if !sub.dialog.remote_tag.is_empty() && theirs != sub.dialog.remote_tag {
            // Another fork of the SUBSCRIBE: one dialog is kept (RFC 6665 §4.1.2.4 allows
            // refusing the others).
            return Err(refuse(481, "no such subscription (another fork)"));
        }
        let trusted = source.is_some_and(|ip| ip == sub.server.ip().to_canonical())
            || link.trusted(&sub.domain, req).is_some();
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
        let cseq = req.cseq().unwrap_or(0);
        if !link.subs.kept.holds(&req.call_id) {
            // Another replica's dialog (the far side reached this one): recognised and
            // answered, not taken over; what it says still reaches the core.
            return Ok(if state.terminated() || sub.phase != Phase::Active {
                Notified::Nothing
            } else {
                notified(&sub, p)
            });
        }
        let order = link
            .subs
            .kept
            .update(&req.call_id, |s| {
                if cseq != 0 && cseq <= s.remote_cseq {
                    return (false, false);
                }
                s.remote_cseq = cseq;
                if s.dialog.remote_tag.is_empty() {
                    s.dialog.remote_tag = theirs.to_owned();
                }
                if let Some(e) = state.expires.filter(|_| !state.terminated()) {
                    s.expires_at = now() + u64::from(e);
                    s.granted = e;
                }
                (s.phase != Phase::Pending, true)
            })
            .await;
        let Some((sub, true)) = order else {
            return match order {
                None => Err(refuse(481, "no such subscription")),
                Some(_) => Err(refuse(500, "a NOTIFY out of CSeq order")),
            };
        };
        if state.terminated() {
            let ending = sub.phase == Phase::Ending;
            link.subs.kept.forget(&sub.dialog.call_id).await;
            self.count_subscriptions(link);
            if ending {
                return Ok(Notified::Nothing);
            }
            let reason = state.reason.as_deref().unwrap_or("");
            tracing::info!(watcher = %sub.watcher, presentity = %sub.presentity, reason, "SIP presence subscription ended by the far side");
            return Ok(match reason {
                // RFC 6665 §4.1.3: these ask for a new subscription.
                "deactivated" | "timeout" | "" if sub.phase == Phase::Active => {
                    Notified::Again(Box::new(sub))
                }
                _ => {
                    let (domain, t) = offline(&sub);
                    Notified::Core(domain, Box::new(t), String::new(), Presence::offline())
                }
            });
        }
        if sub.phase == Phase::Ending || state.state == "pending" || sub.last.as_ref() == Some(&p) {
            return Ok(Notified::Nothing);
        }
        Ok(notified(&sub, p))
    }
}

/// The `PresenceNotification` for `sub`'s watcher saying `p`, and the domain it is from.
fn notification(sub: &Subscription, p: &Presence) -> (String, Transaction) {
    let note = PresenceNotification {
        watchers: vec![Entity::user(sub.watcher.clone())],
        values: vec![pidf::to_ssp(&sub.presentity, p)],
        ..Default::default()
    };
    let tid = format!("sip-{:016x}", rand::random::<u64>());
    (
        sub.domain.clone(),
        Transaction::request(tid, Primitive::PresenceNotification(note)),
    )
}

/// [`notification`] as what a NOTIFY comes to.
fn notified(sub: &Subscription, p: Presence) -> Notified {
    let (domain, t) = notification(sub, &p);
    Notified::Core(domain, Box::new(t), sub.dialog.call_id.clone(), p)
}

/// The core's word that `sub`'s presentity is offline (the subscription ended for good).
fn offline(sub: &Subscription) -> (String, Transaction) {
    notification(sub, &Presence::offline())
}

impl Subscription {
    /// A SUBSCRIBE in this dialog numbered `cseq`, asking for `expires` seconds.
    fn in_dialog(&self, cseq: u32, expires: u32) -> Outgoing {
        Outgoing {
            dialog: Some(DialogIds {
                cseq,
                ..self.dialog.clone()
            }),
            ..subscribe_out(
                self.target.clone(),
                self.watcher_uri.clone(),
                self.presentity_uri.clone(),
                expires,
                self.route.clone(),
            )
        }
    }

    /// Where to make this subscription anew: the presentity at the server that had it.
    fn anew_target(&self) -> SipTarget {
        SipTarget {
            domain: self.domain.clone(),
            uri: self.presentity_uri.clone(),
            servers: vec![SipServer {
                addr: self.server,
                tcp: self.tcp,
                tls: self.tls,
            }],
        }
    }

    /// The destination of requests in this dialog: the server that took it.
    fn in_dialog_target(&self) -> SipTarget {
        SipTarget {
            domain: self.domain.clone(),
            uri: self.target.clone(),
            servers: vec![SipServer {
                addr: self.server,
                tcp: self.tcp,
                tls: self.tls,
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
    route: Vec<String>,
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
        domain: String::new(),
        dialog: None,
        route,
    }
}

fn ok() -> Primitive {
    Primitive::Status(Status::with(status::OK, "Successful"))
}
