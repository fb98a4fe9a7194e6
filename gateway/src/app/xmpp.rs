//! The XMPP translator's listener: binds `[xmpp] listen`, serves each server-to-server
//! stream another server opens on a task of its own, and serves what those streams hand
//! over: each stanza on a task of its own (the translator turns it into an SSP request, or
//! refuses it with a stanza error; the pipeline carries it like an SSP peer's; the core's
//! verdict goes back as a receipt, a presence answer or a stanza error), and each dialback
//! key to check. Streams beyond the connection bound, or while draining, are not taken.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::StartError;
use crate::links::Origin;
use crate::links::xmpp::stream::{self, Event};
use crate::links::xmpp::{self, XmppIn, XmppLink, stanza};
use crate::pipeline::{self, Gateway};

/// How often receipts that did not come are looked for.
const RECEIPT_TICK: std::time::Duration = std::time::Duration::from_secs(1);
/// Streams other servers may have open to us at once.
const MAX_STREAMS: usize = 4096;
/// Stanzas that may wait in one lane.
const LANE: usize = 256;
/// Lanes (pairs of users with stanzas under way) at once; beyond, stanzas are refused.
const MAX_LANES: usize = 8192;
/// Dialback checks under way at once, for all streams (each a lookup and a connection).
const MAX_VERIFYING: usize = 64;
/// Refusals being sent at once; beyond, a refused stanza is dropped (counted) unanswered.
const MAX_REFUSING: usize = 256;

/// Stanzas between one pair of users are served in the order they came (a conversation's
/// messages, a user's successive presence), each pair on a lane of its own so that pairs do
/// not wait for each other. A lane lives while it has stanzas.
struct Lanes {
    all:
        std::sync::Mutex<std::collections::HashMap<String, mpsc::Sender<(String, stanza::Stanza)>>>,
    /// Refusals under way (bounded: a flood of refused stanzas must not become as many
    /// tasks).
    refusing: Arc<tokio::sync::Semaphore>,
}

impl Default for Lanes {
    fn default() -> Lanes {
        Lanes {
            all: std::sync::Mutex::default(),
            refusing: Arc::new(tokio::sync::Semaphore::new(MAX_REFUSING)),
        }
    }
}

impl Lanes {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::HashMap<String, mpsc::Sender<(String, stanza::Stanza)>>,
    > {
        self.all.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuse `s` with a stanza error, on a task of its own while refusals are few;
    /// else drop it (counted).
    fn refuse(
        &self,
        gw: &Arc<Gateway>,
        domain: String,
        s: stanza::Stanza,
        condition: &'static str,
    ) {
        let Ok(permit) = self.refusing.clone().try_acquire_owned() else {
            gw.metrics()
                .xmpp
                .with_label_values(&["in", kind(&s), "refused"])
                .inc();
            return;
        };
        let g = gw.clone();
        gw.drain().spawn(async move {
            refused(&g, &domain, &s, "wait", condition).await;
            drop(permit);
        });
    }
}

/// The lane of a stanza: its sender's and recipient's bare JIDs.
fn lane_of(s: &stanza::Stanza) -> String {
    let bare = |k: &str| {
        s.attr(k)
            .and_then(stanza::Jid::parse)
            .map(|j| j.bare())
            .unwrap_or_default()
    };
    format!("{} {}", bare("from"), bare("to"))
}

/// Hand `s` from `domain` to its lane, starting the lane if it has none.
fn dispatch(gw: &Arc<Gateway>, lanes: &Arc<Lanes>, domain: String, s: stanza::Stanza) {
    // The domain's rate first: what it sends beyond it costs no lane and no request.
    if !gw.links.xmpp_within_rate(&domain) {
        gw.metrics().refused.with_label_values(&["rate"]).inc();
        lanes.refuse(gw, domain, s, "resource-constraint");
        return;
    }
    let key = lane_of(&s);
    let mut all = lanes.lock();
    let mut item = (domain, s);
    if let Some(tx) = all.get(&key) {
        match tx.try_send(item) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full((domain, s))) => {
                drop(all);
                tracing::info!(from = %domain, "XMPP lane full: stanza refused");
                lanes.refuse(gw, domain, s, "resource-constraint");
                return;
            }
            Err(mpsc::error::TrySendError::Closed(back)) => item = back,
        }
    }
    if all.len() >= MAX_LANES {
        drop(all);
        let (domain, s) = item;
        tracing::info!(from = %domain, "{MAX_LANES} XMPP lanes busy: stanza refused");
        lanes.refuse(gw, domain, s, "resource-constraint");
        return;
    }
    let (tx, mut rx) = mpsc::channel(LANE);
    let _ = tx.try_send(item);
    all.insert(key.clone(), tx);
    drop(all);
    let (g, lanes) = (gw.clone(), lanes.clone());
    gw.drain().spawn(async move {
        loop {
            let next = match rx.try_recv() {
                Ok(x) => Some(x),
                Err(_) => {
                    // Empty: the lane ends, unless a stanza came meanwhile (senders hand
                    // over under the same lock, so none is left behind).
                    let mut all = lanes.lock();
                    match rx.try_recv() {
                        Ok(x) => Some(x),
                        Err(_) => {
                            all.remove(&key);
                            None
                        }
                    }
                }
            };
            let Some((domain, s)) = next else { break };
            serve(&g, domain, s).await;
        }
    });
}

/// Bind and serve the XMPP listener when `[xmpp]` is configured: where it listens, and the
/// task that serves it (ends when the gateway stops).
pub(super) async fn start(
    gw: &Arc<Gateway>,
) -> Result<Option<(SocketAddr, JoinHandle<()>)>, StartError> {
    let cfg = gw.cfg();
    let Some(spec) = cfg.xmpp.clone() else {
        return Ok(None);
    };
    let owner = format!("{}/{}", cfg.operator.public_domain, cfg.cluster.replica);
    let (link, listener) = XmppLink::bind(
        &spec,
        &cfg.tls,
        gw.links.identity.clone(),
        &cfg.operator.public_domain,
        gw.store().cloned(),
        owner,
        gw.metrics(),
    )
    .await
    .map_err(|e| StartError::Xmpp(e.to_string()))?;
    let addr = link.local();
    let ctx = link.ctx.clone();
    if gw.links.xmpp.set(link).is_err() {
        return Err(StartError::Xmpp(
            "the XMPP translator was started twice".into(),
        ));
    }
    // What our users watch may have changed while we were down.
    let g = gw.clone();
    gw.drain()
        .spawn(async move { g.links.xmpp_probe_subscriptions().await });
    // Receipts that did not come in time: reported as not confirmed.
    let g = gw.clone();
    gw.drain().every(RECEIPT_TICK, move || {
        let g = g.clone();
        async move {
            for (domain, t) in g.links.xmpp_lapsed_receipts().await {
                to_core(&g, &domain, t).await;
            }
            if let Some(link) = g.links.xmpp.get() {
                link.sweep();
            }
        }
    });
    let (events, mut rx) = mpsc::channel::<Event>(1024);
    let lanes = Arc::new(Lanes::default());
    // What the streams hand over.
    let g = gw.clone();
    let drain = gw.drain().clone();
    let verifying = Arc::new(tokio::sync::Semaphore::new(MAX_VERIFYING));
    tokio::spawn(async move {
        let inbound = g.metrics().xmpp_streams.with_label_values(&["in"]);
        loop {
            let ev = tokio::select! {
                ev = rx.recv() => ev,
                () = drain.stopped() => None,
            };
            // Stopped: the streams find the channel closed and end.
            let Some(ev) = ev else { break };
            match ev {
                Event::Streams(n) => inbound.add(n),
                Event::Proved(p) => g
                    .metrics()
                    .xmpp_proofs
                    .with_label_values(&["in", p.label()])
                    .inc(),
                Event::Verify {
                    domain,
                    id,
                    key,
                    reply,
                } => {
                    let Ok(permit) = verifying.clone().try_acquire_owned() else {
                        tracing::info!(from = %domain, "dialback key not checked: {MAX_VERIFYING} checks under way");
                        let _ = reply.send(None);
                        continue;
                    };
                    let g = g.clone();
                    tokio::spawn(async move {
                        let valid = g.links.xmpp_verify(&domain, &id, &key).await;
                        let _ = reply.send(Some(valid));
                        drop(permit);
                    });
                }
                Event::Stanza { domain, stanza } => dispatch(&g, &lanes, domain, stanza),
            }
        }
    });
    let g = gw.clone();
    let streams = Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS));
    // Streams opened to us end with `system-shutdown` when the gateway stops.
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let drain = g.drain().clone();
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = drain.stopped() => break,
            };
            let (tcp, from) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "XMPP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = streams.clone().try_acquire_owned() else {
                tracing::warn!(%from, "XMPP stream refused: {MAX_STREAMS} open");
                continue;
            };
            if drain.is_draining() {
                continue;
            }
            let _ = tcp.set_nodelay(true);
            let (ctx, events, stop) = (ctx.clone(), events.clone(), stop.clone());
            tokio::spawn(async move {
                stream::serve(ctx, tcp, events, stop).await;
                drop(permit);
            });
        }
        let _ = stop_tx.send(true);
        if let Some(link) = g.links.xmpp.get() {
            link.stop();
        }
    });
    Ok(Some((addr, task)))
}

/// A request the XMPP side makes of the core, carried by the pipeline like an SSP peer's:
/// its answer.
async fn to_core(
    gw: &Arc<Gateway>,
    domain: &str,
    t: crate::ssp::Transaction,
) -> crate::ssp::Primitive {
    let origin = Origin::Xmpp(Arc::from(domain));
    let name = t.primitive.label();
    let answer = pipeline::translated(gw, &origin, t).await.primitive;
    let code = answer.answer_code();
    if code != 200 {
        tracing::info!(from = %domain, code, request = name, "a request from XMPP not taken by the core");
    }
    answer
}

/// One stanza from `domain` (proved by its stream), to what it comes to.
async fn serve(gw: &Arc<Gateway>, domain: String, s: stanza::Stanza) {
    let reply_to = s.clone();
    match gw.links.take_xmpp(&domain, s).await {
        Err(r) => {
            tracing::debug!(from = %domain, condition = r.condition, why = %r.why, "XMPP stanza refused");
            refused(gw, &domain, &reply_to, r.kind, r.condition).await;
        }
        Ok(XmppIn::Done) => {}
        Ok(XmppIn::Message {
            transaction,
            receipt,
            stanza,
        }) => {
            let answer = to_core(gw, &domain, transaction).await;
            let code = answer.answer_code();
            if code == 200 {
                if let Some(r) = receipt {
                    gw.links.xmpp_reply(&domain, &r, "receipt").await;
                }
            } else {
                let (kind, condition) = xmpp::condition_of(code);
                let ours = stanza.attr("to").unwrap_or_default().to_owned();
                let e = stanza::error_reply(&stanza, &ours, kind, condition);
                gw.links.xmpp_reply(&domain, &e, "error").await;
            }
        }
        Ok(XmppIn::Report(t)) => {
            to_core(gw, &domain, t).await;
        }
        Ok(XmppIn::Presence {
            transaction,
            key,
            presence,
        }) => {
            if to_core(gw, &domain, transaction).await.answer_code() == 200 {
                gw.links.xmpp_told(&key, presence).await;
            }
        }
        Ok(XmppIn::Subscribe { transaction, watch }) => {
            let taken = to_core(gw, &domain, transaction).await.answer_code() == 200;
            gw.links.xmpp_watch_answered(*watch, taken).await;
        }
        Ok(XmppIn::Unsubscribe(t)) => {
            to_core(gw, &domain, t).await;
        }
        Ok(XmppIn::Probe { transaction, watch }) => {
            let answer = to_core(gw, &domain, transaction).await;
            gw.links.xmpp_probe_answered(&watch, &answer).await;
        }
    }
}

/// Refuse `s` from `domain` with a stanza error (never an error with an error, RFC 6120
/// §8.3.1), counted.
async fn refused(
    gw: &Arc<Gateway>,
    domain: &str,
    s: &stanza::Stanza,
    kind_: &'static str,
    condition: &'static str,
) {
    gw.metrics()
        .xmpp
        .with_label_values(&["in", kind(s), "refused"])
        .inc();
    if s.attr("type") == Some("error") {
        return;
    }
    let ours = s.attr("to").unwrap_or_default().to_owned();
    let e = stanza::error_reply(s, &ours, kind_, condition);
    gw.links.xmpp_reply(domain, &e, "error").await;
}

fn kind(s: &stanza::Stanza) -> &'static str {
    match s.local.as_str() {
        "message" => "message",
        "presence" => "presence",
        _ => "iq",
    }
}
