//! The SIP translator's listener: binds `[sip] listen` (UDP and TCP) and serves each
//! incoming request on a task of its own: the translator turns it into an SSP request (or
//! refuses it with a SIP error), the pipeline carries it like an SSP peer's, and its SSP
//! answer goes back as the SIP answer. Requests beyond the in-flight bound, or while
//! draining, get 503 at once.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;

use super::StartError;
use crate::links::Origin;
use crate::links::sip::presence::Notified;
use crate::links::sip::stack::Incoming;
use crate::links::sip::watch::Subscribed;
use crate::links::sip::{self, SipLink, map};
use crate::pipeline::{self, Gateway};

/// How often the presence subscriptions are looked at for a refresh.
const REFRESH_TICK: std::time::Duration = std::time::Duration::from_secs(5);

/// Bind and serve the SIP listener when `[sip]` is configured: where it listens, and the
/// task that serves it (ends when the gateway stops).
pub(super) async fn start(
    gw: &Arc<Gateway>,
) -> Result<Option<(SocketAddr, JoinHandle<()>)>, StartError> {
    let Some(spec) = gw.cfg().sip.clone() else {
        return Ok(None);
    };
    let owner = format!(
        "{}/{}",
        gw.cfg().operator.public_domain,
        gw.cfg().cluster.replica
    );
    let (link, mut requests) = SipLink::bind(
        &spec,
        &gw.cfg().tls,
        gw.links.identity.clone(),
        gw.cfg().timeouts.request,
        gw.store().cloned(),
        owner,
    )
    .await
    .map_err(|e| StartError::Sip(e.to_string()))?;
    let addr = link.local();
    if gw.links.sip.set(link).is_err() {
        return Err(StartError::Sip(
            "the SIP translator was started twice".into(),
        ));
    }
    // Presence subscriptions are refreshed before they run out.
    let g = gw.clone();
    gw.drain().every(REFRESH_TICK, move || {
        let g = g.clone();
        async move {
            let mut tell = g.links.refresh_sip_subscriptions().await;
            tell.extend(g.links.expire_watches().await);
            for (domain, t) in tell {
                to_core(&g, &domain, t).await;
            }
        }
    });
    let g = gw.clone();
    let task = tokio::spawn(async move {
        let drain = g.drain().clone();
        loop {
            let req = tokio::select! {
                r = requests.next() => r,
                () = drain.stopped() => None,
            };
            let Some(req) = req else { break };
            if drain.is_draining() || g.in_flight.available_permits() == 0 {
                g.links.count_sip_answer(&req.method, 503);
                tokio::spawn(req.answer(503, vec![("Retry-After", "30".to_owned())]));
                continue;
            }
            let g2 = g.clone();
            g.drain().spawn(async move { serve(&g2, req).await });
        }
        if let Some(link) = g.links.sip.get() {
            link.stop();
        }
    });
    Ok(Some((addr, task)))
}

/// One incoming SIP request, to its SIP answer.
async fn serve(gw: &Arc<Gateway>, req: Incoming) {
    if req.method == "OPTIONS" {
        gw.links.count_sip_answer(&req.method, 200);
        return req.answer(200, vec![("Allow", sip::ALLOW.into())]).await;
    }
    if req.method == "NOTIFY" {
        return notify(gw, req).await;
    }
    if req.method == "SUBSCRIBE" {
        return subscribe(gw, req).await;
    }
    match gw.links.take_sip(&req).await {
        Err(r) => {
            tracing::debug!(
                method = %req.method, call_id = %req.call_id, transport = req.transport.as_str(),
                code = r.code, why = %r.why,
                "SIP request refused"
            );
            gw.links.count_sip_answer(&req.method, r.code);
            req.answer(r.code, r.headers).await;
        }
        Ok(sip::Taken {
            domain,
            transaction: t,
            notification,
        }) => {
            let origin = Origin::Sip(Arc::from(domain.as_str()));
            let answer = pipeline::translated(gw, &origin, t).await;
            let code = map::sip_code(answer.primitive.answer_code());
            if let (200, Some(id)) = (code, notification) {
                gw.links.notified(&id).await;
            }
            tracing::debug!(call_id = %req.call_id, from = %domain, code, "SIP MESSAGE relayed to the core");
            gw.links.count_sip_answer(&req.method, code);
            let headers = if code == 503 {
                vec![("Retry-After", "30".to_owned())]
            } else {
                Vec::new()
            };
            req.answer(code, headers).await;
        }
    }
}

/// A request the SIP side makes of the core (a notification, an unsubscribe), carried by
/// the pipeline like an SSP peer's: its SSP answer code.
async fn to_core(gw: &Arc<Gateway>, domain: &str, t: crate::ssp::Transaction) -> u16 {
    let origin = Origin::Sip(Arc::from(domain));
    let name = t.primitive.label();
    let code = pipeline::translated(gw, &origin, t)
        .await
        .primitive
        .answer_code();
    if code != 200 {
        tracing::info!(from = %domain, code, request = name, "presence from SIP not taken by the core");
    }
    code
}

/// A NOTIFY: answered at once (the far side's transaction must not wait on our core); a
/// changed state then goes to the core as a `PresenceNotification`. Presence does not wait:
/// a core that cannot take it now misses this state, and the next NOTIFY (even with the
/// same state) tries again.
async fn notify(gw: &Arc<Gateway>, req: Incoming) {
    match gw.links.take_notify(&req).await {
        Err(r) => {
            tracing::debug!(call_id = %req.call_id, code = r.code, why = %r.why, "SIP NOTIFY refused");
            gw.links.count_sip_answer(&req.method, r.code);
            req.answer(r.code, r.headers).await;
        }
        Ok(n) => {
            gw.links.count_sip_answer(&req.method, 200);
            req.answer(200, Vec::new()).await;
            match n {
                Notified::Nothing => {}
                Notified::Core(domain, t, call_id, p) => {
                    if to_core(gw, &domain, *t).await == 200 {
                        gw.links.sip_told(&call_id, p).await;
                    }
                }
                Notified::Again(sub) => {
                    if let Some((domain, t)) = gw.links.sip_resubscribe(&sub).await {
                        to_core(gw, &domain, t).await;
                    }
                }
            }
        }
    }
}

/// A SUBSCRIBE from a SIP user to one of ours (the gateway as notifier): a new watch goes to
/// the core as a `SubscribeRequest` and is answered with the core's verdict, then the first
/// NOTIFY; a refresh is answered here; an end goes to the core as an `UnsubscribeRequest`;
/// a fetch as a `GetPresenceRequest`, its answer in the one NOTIFY.
async fn subscribe(gw: &Arc<Gateway>, req: Incoming) {
    let answered = |code: u16, w: &sip::watch::Watch, expires: u64| {
        let mut h = vec![("Expires", expires.to_string())];
        if code == 200 {
            let contact = gw.links.sip_contact(&w.presentity_uri, req.transport);
            h.push(("Contact", format!("<{contact}>")));
        }
        gw.links.count_sip_answer("SUBSCRIBE", code);
        h
    };
    match gw.links.take_subscribe(&req).await {
        Err(r) => {
            tracing::debug!(call_id = %req.call_id, code = r.code, why = %r.why, "SIP SUBSCRIBE refused");
            gw.links.count_sip_answer(&req.method, r.code);
            req.answer(r.code, r.headers).await;
        }
        Ok(Subscribed::Refreshed(w, expires)) => {
            let h = answered(200, &w, u64::from(expires));
            let tag = w.dialog.local_tag.clone();
            req.answer_in_dialog(200, h, &tag).await;
            gw.links.notify_refresh(&w).await;
        }
        Ok(Subscribed::Ended(domain, t, w)) => {
            gw.links.drop_watch(&w).await;
            let h = answered(200, &w, 0);
            let tag = w.dialog.local_tag.clone();
            req.answer_in_dialog(200, h, &tag).await;
            gw.links.notify_end(&w, "timeout").await;
            to_core(gw, &domain, t).await;
        }
        Ok(Subscribed::Fetch(domain, t, w)) => {
            let origin = Origin::Sip(Arc::from(domain.as_str()));
            let answer = pipeline::translated(gw, &origin, t).await;
            let code = map::sip_code(answer.primitive.answer_code());
            let h = answered(code, &w, 0);
            let tag = w.dialog.local_tag.clone();
            req.answer_in_dialog(code, h, &tag).await;
            if code == 200 {
                gw.links.notify_fetch(&w, &answer.primitive).await;
            }
        }
        Ok(Subscribed::New(domain, t, w)) => {
            // Kept before the core hears of it: its first notification may come before its
            // answer, and is held until the 200 has gone.
            gw.links.hold_watch(&w).await;
            let origin = Origin::Sip(Arc::from(domain.as_str()));
            let answer = pipeline::translated(gw, &origin, t).await;
            let code = map::sip_code(answer.primitive.answer_code());
            let expires = w
                .expires_at
                .saturating_sub(crate::links::sip::dialogs::now());
            let h = answered(code, &w, expires);
            let tag = w.dialog.local_tag.clone();
            if code != 200 {
                gw.links.drop_watch(&w).await;
                req.answer(code, h).await;
                return;
            }
            tracing::info!(watcher = %w.watcher, presentity = %w.presentity, "SIP watch made");
            req.answer_in_dialog(200, h, &tag).await;
            gw.links.confirm_watch(&w).await;
        }
    }
}
