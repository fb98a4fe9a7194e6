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
use crate::links::sip::stack::Incoming;
use crate::links::sip::{SipLink, map};
use crate::pipeline::{self, Gateway};

/// Bind and serve the SIP listener when `[sip]` is configured: where it listens, and the
/// task that serves it (ends when the gateway stops).
pub(super) async fn start(
    gw: &Arc<Gateway>,
) -> Result<Option<(SocketAddr, JoinHandle<()>)>, StartError> {
    let Some(spec) = gw.cfg().sip.clone() else {
        return Ok(None);
    };
    let (link, mut requests) = SipLink::bind(&spec, gw.cfg().timeouts.request)
        .await
        .map_err(|e| StartError::Sip(e.to_string()))?;
    let addr = link.local();
    if gw.links.sip.set(link).is_err() {
        return Err(StartError::Sip(
            "the SIP translator was started twice".into(),
        ));
    }
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
        return req
            .answer(200, vec![("Allow", "MESSAGE, OPTIONS".into())])
            .await;
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
        Ok((domain, t)) => {
            let origin = Origin::Sip(Arc::from(domain.as_str()));
            let answer = pipeline::translated(gw, &origin, t).await;
            let code = map::sip_code(answer.primitive.answer_code());
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
