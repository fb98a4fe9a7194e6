//! Presence over SIP/SIMPLE, SIP users watching our users (RFC 3856, RFC 6665; the
//! gateway is the notifier): a `SUBSCRIBE` to one of our subscribers by number becomes an
//! SSP `SubscribeRequest` to the core, and the dialog is kept; the core's
//! `PresenceNotification`s for that watcher become `NOTIFY`s with PIDF in it. A refresh is
//! answered here; `Expires: 0` ends it (`UnsubscribeRequest` to the core); a `SUBSCRIBE`
//! with `Expires: 0` outside any dialog is a fetch (`GetPresenceRequest`). A watch that runs
//! out unrefreshed is ended the same way.
//!
//! The first NOTIFY goes after the 200 (RFC 6665 §4.2.1.2) with the state the core gave by
//! then: what the core says before the 200 is held, not sent ahead of it. Watches are kept
//! in the state store's `sip.dialogs` table, so they survive a restart.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::dialogs::{Dialog, Dialogs, now};
use super::map;
use super::pidf::{self, Presence};
use super::stack::{DialogIds, Incoming, Outgoing, Transport};
use super::{SipLink, SipRefusal, SipServer, SipTarget, refuse};
use crate::error::{Failure, Kind};
use crate::links::Links;
use crate::rewrite::PeerView;
use crate::ssp::primitives::{PresenceNotification, PresenceRequest};
use crate::ssp::{Entity, MetaInfo, Primitive, Status, Transaction, status};
use crate::store::Store;

/// The store table the watches are kept in.
const TABLE: &str = "sip.dialogs";

/// The longest and shortest subscription a SIP watcher is granted (seconds).
const MAX_EXPIRES: u32 = 3600;
const MIN_EXPIRES: u32 = 60;

/// How far a restarted process moves its NOTIFY numbering on (more than it sends between
/// two writes of a watch).
const CSEQ_JUMP: u32 = 100;

/// A SIP user watching one of ours: the dialog, and what it is for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Watch {
    /// The dialog (our tag is the To tag we answered with; the CSeq is our next NOTIFY's).
    pub(crate) dialog: DialogIds,
    /// The route set: the SUBSCRIBE's Record-Route, as `Route` headers of our NOTIFYs.
    pub(crate) route: Vec<String>,
    /// The watcher's SSP ID (`wv:+MSISDN` or `wv:user@domain`).
    pub(crate) watcher: String,
    /// The watcher's SIP URI (To of our NOTIFYs).
    pub(crate) watcher_uri: String,
    /// Our user's public ID (`wv:+MSISDN`).
    pub(crate) presentity: String,
    /// The same as a SIP URI (From of our NOTIFYs).
    pub(crate) presentity_uri: String,
    /// The watcher's Contact (Request-URI of our NOTIFYs).
    pub(crate) target: String,
    /// Where NOTIFYs are sent: the SIP server the SUBSCRIBE (or its last refresh) came
    /// from, the operator's trusted border (a watcher's Contact is often not reachable from
    /// another operator).
    pub(crate) dest: SocketAddr,
    /// Over TCP (else UDP).
    pub(crate) tcp: bool,
    /// Over TLS: the connection the watcher's server opened (and TCP).
    #[serde(default)]
    pub(crate) tls: bool,
    /// The watcher's trusted SIP domain.
    pub(crate) domain: String,
    /// When it runs out (Unix seconds).
    pub(crate) expires_at: u64,
    /// Answered: NOTIFYs may go (before, the state is held in `last`).
    #[serde(default)]
    pub(crate) confirmed: bool,
    /// The replica that made it.
    pub(crate) owner: String,
    /// The last state (sent, or held until the 200).
    #[serde(skip)]
    pub(crate) last: Option<Presence>,
}

impl Dialog for Watch {
    fn call_id(&self) -> &str {
        &self.dialog.call_id
    }
    fn expires_at(&self) -> u64 {
        self.expires_at
    }
    fn owner(&self) -> &str {
        &self.owner
    }
}

/// The watches of SIP users.
pub(crate) type Watches = Dialogs<Watch>;

/// The watches replica `owner` kept in `store` (what a restarted process takes up again).
/// Their NOTIFY numbering jumps ahead: the last numbers a process sent before it died may
/// not have been stored.
pub(crate) async fn load(store: Option<Arc<Store>>, owner: &str) -> Watches {
    let w: Watches = Dialogs::load(TABLE, store, owner).await;
    for d in w.lock().values_mut() {
        d.dialog.cseq = d.dialog.cseq.saturating_add(CSEQ_JUMP);
    }
    w
}

/// Which SSP request a watch gives the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// `SubscribeRequest`: a new watch.
    Subscribe,
    /// `UnsubscribeRequest`: it ended.
    Unsubscribe,
    /// `GetPresenceRequest`: a fetch.
    Fetch,
}

/// What an incoming SUBSCRIBE comes to.
pub(crate) enum Subscribed {
    /// A new watch: the request for the core, and the watch to keep once it agrees.
    New(String, Transaction, Watch),
    /// A fetch (`Expires: 0`, no dialog): the request for the core, and the watch-to-be
    /// whose one NOTIFY carries the answer.
    Fetch(String, Transaction, Watch),
    /// A refresh of a kept watch, for this long.
    Refreshed(Watch, u32),
    /// The end of a kept watch: the `UnsubscribeRequest` for the core.
    Ended(String, Transaction, Watch),
}

impl Links {
    /// An incoming SUBSCRIBE: in a dialog of ours a refresh or an end; else a new watch (or
    /// a fetch) of our subscriber by a trusted SIP operator's user.
    pub(crate) async fn take_subscribe(&self, req: &Incoming) -> Result<Subscribed, SipRefusal> {
        let link = self.sip.get().ok_or_else(|| refuse(503, "no SIP link"))?;
        self.metrics
            .sip
            .with_label_values(&["in", "SUBSCRIBE", "request"])
            .inc();
        let event = req.header("Event").unwrap_or_default();
        if !event
            .split(';')
            .next()
            .is_some_and(|e| e.trim().eq_ignore_ascii_case("presence"))
        {
            let mut r = refuse(489, format!("event {event:?}"));
            r.headers.push(("Allow-Events", "presence".into()));
            return Err(r);
        }
        let accept = req.headers("Accept");
        if !accept.is_empty()
            && !accept
                .iter()
                .any(|a| a.to_ascii_lowercase().contains(pidf::CONTENT_TYPE))
        {
            let mut r = refuse(406, format!("accepts {accept:?}"));
            r.headers.push(("Accept", pidf::CONTENT_TYPE.into()));
            return Err(r);
        }
        let asked = req
            .header("Expires")
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(MAX_EXPIRES);
        if asked != 0 && asked < MIN_EXPIRES {
            let mut r = refuse(423, format!("{asked} s asked"));
            r.headers.push(("Min-Expires", MIN_EXPIRES.to_string()));
            return Err(r);
        }
        let expires = asked.min(MAX_EXPIRES);
        // In a dialog of ours: a refresh, or the end.
        if let Some(ours) = map::tag(&req.to) {
            let Some(w) = link.watches.find(&req.call_id).await else {
                return Err(refuse(481, "no such subscription"));
            };
            if w.dialog.local_tag != ours
                || map::tag(&req.from) != Some(w.dialog.remote_tag.as_str())
            {
                return Err(refuse(481, "no such subscription (tags)"));
            }
            if link.trusted(&w.domain, req).is_none() {
                return Err(refuse(403, "a refresh from an untrusted address"));
            }
            if expires == 0 {
                let t = presence_request(&w, Ask::Unsubscribe);
                return Ok(Subscribed::Ended(w.domain.clone(), t, w));
            }
            // Later NOTIFYs go where this refresh came from (a TCP connection may be new).
            let (dest, tcp, tls) = (
                req.source,
                req.transport != Transport::Udp,
                req.transport == Transport::Tls,
            );
            let refresh = |w: &mut Watch| {
                w.expires_at = now() + u64::from(expires);
                if let Some(d) = dest {
                    w.dest = d;
                    w.tcp = tcp;
                    w.tls = tls;
                }
            };
            if !link.watches.holds(&req.call_id) {
                // Another replica's watch: the refresh is stored for it to read back.
                let mut w = w;
                refresh(&mut w);
                link.watches.put_stored(&w).await;
                return Ok(Subscribed::Refreshed(w, expires));
            }
            let refreshed = link
                .watches
                .update(&req.call_id, |w| {
                    refresh(w);
                    (true, ())
                })
                .await;
            let Some((w, ())) = refreshed else {
                return Err(refuse(481, "no such subscription"));
            };
            return Ok(Subscribed::Refreshed(w, expires));
        }
        let (domain, presentity, watcher) = self.sip_parties(link, req).await?;
        let from = map::address(&req.from).ok_or_else(|| refuse(400, "no usable From"))?;
        let remote_tag = map::tag(&req.from)
            .ok_or_else(|| refuse(400, "a From without a tag"))?
            .to_owned();
        let contact = req
            .header("Contact")
            .and_then(|c| map::contact_uri(&c))
            .ok_or_else(|| refuse(400, "no usable Contact"))?;
        let dest = req.source.ok_or_else(|| refuse(400, "no source address"))?;
        let w = Watch {
            dialog: DialogIds {
                call_id: req.call_id.clone(),
                local_tag: format!("{:016x}", rand::random::<u64>()),
                remote_tag,
                cseq: 1,
            },
            route: req.headers("Record-Route"),
            watcher,
            watcher_uri: format!("sip:{}@{}", from.user, from.host),
            presentity_uri: map::our_number_uri(&presentity, &self.cfg().operator.public_domain),
            presentity,
            target: contact,
            dest,
            tcp: req.transport != Transport::Udp,
            tls: req.transport == Transport::Tls,
            domain: domain.clone(),
            expires_at: now() + u64::from(expires),
            confirmed: false,
            owner: link.owner.clone(),
            last: None,
        };
        let fetch = expires == 0;
        let t = presence_request(&w, if fetch { Ask::Fetch } else { Ask::Subscribe });
        Ok(if fetch {
            Subscribed::Fetch(domain, t, w)
        } else {
            Subscribed::New(domain, t, w)
        })
    }

    /// Keep a watch before the core hears of it (its first notification may come before its
    /// answer does). A watch of the same watcher on the same user before it is replaced
    /// (a phone that lost its dialog subscribes again), so watches never pile up.
    pub(crate) async fn hold_watch(&self, w: &Watch) {
        if let Some(link) = self.sip.get() {
            for old in link.watches.select(|o| {
                o.watcher.eq_ignore_ascii_case(&w.watcher)
                    && o.presentity.eq_ignore_ascii_case(&w.presentity)
            }) {
                link.watches.forget(&old.dialog.call_id).await;
            }
            link.watches.keep(w.clone()).await;
            self.count_watches(link);
        }
    }

    /// Our Contact for a dialog our user `uri` is in, over `transport` (`uri` itself when
    /// the translator is not running).
    pub(crate) fn sip_contact(&self, uri: &str, transport: Transport) -> String {
        self.sip
            .get()
            .map_or_else(|| uri.to_owned(), |l| l.contact(uri, transport))
    }

    /// Forget a watch (the core refused it, it ended, or it ran out).
    pub(crate) async fn drop_watch(&self, w: &Watch) {
        if let Some(link) = self.sip.get() {
            link.watches.forget(&w.dialog.call_id).await;
            self.count_watches(link);
        }
    }

    fn count_watches(&self, link: &SipLink) {
        self.metrics
            .sip_watches
            .set(i64::try_from(link.watches.count(|_| true)).unwrap_or(i64::MAX));
    }

    /// The watch answered 200: NOTIFYs may go from now on, and the first one does now, with
    /// the state the core gave so far (none: an empty body, "nothing known yet").
    pub(crate) async fn confirm_watch(&self, w: &Watch) {
        let Some(link) = self.sip.get() else { return };
        let confirmed = link
            .watches
            .update(&w.dialog.call_id, |k| {
                k.confirmed = true;
                (true, ())
            })
            .await;
        if confirmed.is_some() {
            let _ = self
                .send_notify(link, w, Subscription::Active, Says::Last)
                .await;
        }
    }

    /// The one NOTIFY of a fetch: the state the core answered with, the dialog ended.
    pub(crate) async fn notify_fetch(&self, w: &Watch, answer: &Primitive) {
        let Some(link) = self.sip.get() else { return };
        let p = match answer {
            Primitive::GetPresenceResponse(r) => r.values.first().map(pidf::from_ssp),
            _ => None,
        };
        let _ = self
            .send_notify(link, w, Subscription::Ended("timeout"), Says::This(p))
            .await;
    }

    /// The last NOTIFY of a watch that ended (`reason`: `timeout` for an unsubscribe or a
    /// watch run out).
    pub(crate) async fn notify_end(&self, w: &Watch, reason: &'static str) {
        let Some(link) = self.sip.get() else { return };
        let _ = self
            .send_notify(link, w, Subscription::Ended(reason), Says::This(None))
            .await;
    }

    /// A refresh answered: a NOTIFY with the last state (RFC 6665 §4.2.1.2).
    pub(crate) async fn notify_refresh(&self, w: &Watch) {
        let Some(link) = self.sip.get() else { return };
        let _ = self
            .send_notify(link, w, Subscription::Active, Says::Last)
            .await;
    }

    /// Watches that ran out unrefreshed: forgotten, each with its last NOTIFY; the
    /// `UnsubscribeRequest`s for the core are returned.
    pub(crate) async fn expire_watches(&self) -> Vec<(String, Transaction)> {
        let Some(link) = self.sip.get() else {
            return Vec::new();
        };
        let t = now();
        let mut out = Vec::new();
        for w in link.watches.select(|w| w.expires_at <= t) {
            // Another replica may have taken a refresh or the end of it: the store says.
            if link.watches.stores() {
                match link.watches.stored(&w.dialog.call_id).await {
                    None => {
                        link.watches.drop_held(&w.dialog.call_id);
                        continue;
                    }
                    Some(s) if s.expires_at > t => {
                        link.watches
                            .update(&w.dialog.call_id, |k| {
                                k.expires_at = s.expires_at;
                                k.dest = s.dest;
                                k.tcp = s.tcp;
                                k.tls = s.tls;
                                (false, ())
                            })
                            .await;
                        continue;
                    }
                    Some(_) => {}
                }
            }
            tracing::info!(watcher = %w.watcher, presentity = %w.presentity, "SIP watch ran out unrefreshed");
            self.drop_watch(&w).await;
            self.notify_end(&w, "timeout").await;
            out.push((w.domain.clone(), presence_request(&w, Ask::Unsubscribe)));
        }
        out
    }

    /// The core's `PresenceNotification` for SIP watchers: a NOTIFY in each of their watches
    /// of the presentities it names.
    pub(super) async fn sip_notify(
        &self,
        link: &SipLink,
        n: &PresenceNotification,
    ) -> Result<Primitive, Failure> {
        let values: Vec<(String, Presence)> = {
            let dir = self.dir.load();
            n.values
                .iter()
                .map(|v| {
                    let public =
                        self.live
                            .load()
                            .rw
                            .outbound_id(&dir, &v.user_id, PeerView::default());
                    (public, pidf::from_ssp(v))
                })
                .collect()
        };
        let mut sent = 0;
        let mut failure = None;
        for watcher in &n.watchers {
            let watches = link.watches.select(|w| {
                w.watcher.eq_ignore_ascii_case(&watcher.id)
                    && values
                        .iter()
                        .any(|(p, _)| p.eq_ignore_ascii_case(&w.presentity))
            });
            for w in watches {
                let Some((_, p)) = values
                    .iter()
                    .find(|(p, _)| p.eq_ignore_ascii_case(&w.presentity))
                else {
                    continue;
                };
                match self.watch_state(link, &w, p.clone()).await {
                    Ok(()) => sent += 1,
                    Err(f) => failure = Some(f),
                }
            }
        }
        match (sent, failure) {
            (0, Some(f)) => Err(f),
            (0, None) => Err(Failure::local(
                Kind::UnknownUser,
                "no SIP watcher of that presentity here",
            )),
            _ => Ok(Primitive::Status(Status::with(status::OK, "Successful"))),
        }
    }

    /// A new state for watch `w`: held until its 200 (the first NOTIFY carries it), else
    /// sent unless unchanged.
    async fn watch_state(&self, link: &SipLink, w: &Watch, p: Presence) -> Result<(), Failure> {
        let send = link
            .watches
            .update(&w.dialog.call_id, |k| {
                if k.confirmed && k.last.as_ref() == Some(&p) {
                    return (false, false);
                }
                k.last = Some(p.clone());
                (false, k.confirmed)
            })
            .await;
        match send {
            Some((w, true)) => {
                self.send_notify(link, &w, Subscription::Active, Says::This(Some(p)))
                    .await
            }
            _ => Ok(()),
        }
    }

    /// One NOTIFY in watch `w`: its number (and, for [`Says::Last`], the state) taken under
    /// the lock and stored with the watch, so NOTIFYs are numbered in the order they are
    /// made, across restarts too. A watch the far side no longer knows (481) is ended.
    async fn send_notify(
        &self,
        link: &SipLink,
        w: &Watch,
        sub: Subscription,
        says: Says,
    ) -> Result<(), Failure> {
        let taken = link
            .watches
            .update(&w.dialog.call_id, |k| {
                let cseq = k.dialog.cseq;
                k.dialog.cseq += 1;
                let p = match &says {
                    Says::Last => k.last.clone(),
                    Says::This(p) => p.clone(),
                };
                (true, (cseq, p))
            })
            .await;
        let (w, cseq, p) = match taken {
            Some((k, (cseq, p))) => (k, cseq, p),
            // Ended already (its last NOTIFY): numbered after the rest.
            None => {
                let p = match says {
                    Says::Last => w.last.clone(),
                    Says::This(p) => p,
                };
                (w.clone(), w.dialog.cseq, p)
            }
        };
        let state = match sub {
            Subscription::Active => format!(
                "active;expires={}",
                w.expires_at.saturating_sub(now()).max(1)
            ),
            Subscription::Ended(reason) => format!("terminated;reason={reason}"),
        };
        let body = p.map(|p| {
            (
                pidf::CONTENT_TYPE.to_owned(),
                pidf::emit(&w.presentity_uri, &p).into_bytes(),
            )
        });
        let len = body.as_ref().map_or(0, |(_, b)| b.len());
        let out = Outgoing {
            method: "NOTIFY",
            uri: w.target.clone(),
            from: w.presentity_uri.clone(),
            to: w.watcher_uri.clone(),
            headers: vec![("Event", "presence".into()), ("Subscription-State", state)],
            body,
            dest: w.dest,
            transport: Transport::Udp,
            domain: w.domain.clone(),
            dialog: Some(DialogIds {
                cseq,
                ..w.dialog.clone()
            }),
            contact: Some(w.presentity_uri.clone()),
            route: w.route.clone(),
        };
        let target = SipTarget {
            domain: w.domain.clone(),
            uri: w.target.clone(),
            servers: vec![SipServer {
                addr: w.dest,
                tcp: w.tcp,
                tls: w.tls,
            }],
        };
        let (reply, _) = self.sip_send(link, &target, &out, len).await?;
        if matches!(reply.code, 481 | 404 | 410) {
            tracing::info!(watcher = %w.watcher, code = reply.code, "SIP watcher gone; watch ended");
            self.drop_watch(&w).await;
        }
        match map::failure(reply.code, &reply.reason) {
            None => Ok(()),
            Some(f) => Err(f),
        }
    }
}

/// The `Subscription-State` of a NOTIFY.
#[derive(Debug, Clone, Copy)]
enum Subscription {
    /// `active;expires=…`.
    Active,
    /// `terminated;reason=…`.
    Ended(&'static str),
}

/// What a NOTIFY says.
enum Says {
    /// The watch's last state, as it is when the NOTIFY is numbered.
    Last,
    /// This state (`None`: nothing, an empty body).
    This(Option<Presence>),
}

/// The SSP request `ask` of watch `w`, from its watcher for its presentity.
fn presence_request(w: &Watch, ask: Ask) -> Transaction {
    let r = PresenceRequest {
        meta: Some(MetaInfo::client(&format!("wv:@{}", w.domain), &w.watcher)),
        users: vec![Entity::user(w.presentity.clone())],
        ..Default::default()
    };
    let tid = format!("sip-{:016x}", rand::random::<u64>());
    let p = match ask {
        Ask::Subscribe => Primitive::SubscribeRequest(r),
        Ask::Unsubscribe => Primitive::UnsubscribeRequest(r),
        Ask::Fetch => Primitive::GetPresenceRequest(r),
    };
    Transaction::request(tid, p)
}
