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
    // Receipts that did not come in time: reported as not confirmed.
    let g = gw.clone();
    gw.drain().every(RECEIPT_TICK, move || {
        let g = g.clone();
        async move {
            for (domain, t) in g.links.xmpp_lapsed_receipts() {
                to_core(&g, &domain, t).await;
            }
        }
    });
    let (events, mut rx) = mpsc::channel::<Event>(1024);
    // What the streams hand over.
    let g = gw.clone();
    let drain = gw.drain().clone();
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
                    let g = g.clone();
                    tokio::spawn(async move {
                        let valid = g.links.xmpp_verify(&domain, &id, &key).await;
                        let _ = reply.send(valid);
                    });
                }
                Event::Stanza { domain, stanza } => {
                    let g2 = g.clone();
                    g.drain()
                        .spawn(async move { serve(&g2, domain, stanza).await });
                }
            }
        }
    });
    let g = gw.clone();
    let streams = Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS));
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
            let (ctx, events) = (ctx.clone(), events.clone());
            tokio::spawn(async move {
                stream::serve(ctx, tcp, events).await;
                drop(permit);
            });
        }
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
    let is_error = s.attr("type") == Some("error");
    let reply_to = s.clone();
    match gw.links.take_xmpp(&domain, s).await {
        Err(r) => {
            tracing::debug!(from = %domain, condition = r.condition, why = %r.why, "XMPP stanza refused");
            gw.metrics()
                .xmpp
                .with_label_values(&["in", kind(&reply_to), "refused"])
                .inc();
            // An error is never answered with an error (RFC 6120 §8.3.1).
            if !is_error {
                let ours = reply_to.attr("to").unwrap_or_default().to_owned();
                let e = stanza::error_reply(&reply_to, &ours, r.kind, r.condition);
                gw.links.xmpp_reply(&domain, &e, "error").await;
            }
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

fn kind(s: &stanza::Stanza) -> &'static str {
    match s.local.as_str() {
        "message" => "message",
        "presence" => "presence",
        _ => "iq",
    }
}
