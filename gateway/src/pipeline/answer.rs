//! Answer: correlation of the answers far sides send to our requests.
//!
//! An answer carries our transaction ID, an authenticated token that says which request it
//! answers and where that request came from. It completes the request waiting in this
//! process (kept work resumed here waits under the token it first went with); or it is
//! handed to the replica that sent the request; or it is recorded on the kept work that sent
//! it, for whoever carries that work next; or, when no kept work sent it (a synchronous
//! sender's request of a process that is gone), it is routed by the token alone, once. A
//! forged, foreign or stale ID gets 420, and a second answer to a request is dropped: the
//! originator gets exactly one answer.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use super::state::Gateway;
use super::work;
use crate::error::{Failure, Kind, Side};
use crate::links::Origin;
use crate::links::cluster::Handoff;
use crate::links::exchange::Backoff;
use crate::ssp::{Body, Mode, Transaction};
use crate::store::Claim;
use crate::token::{Leg, Token};

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An answer `t` from `from` to one of our requests. The failure to give back when its
/// transaction ID is forged, foreign or stale.
pub(crate) fn accept(gw: &Arc<Gateway>, t: Transaction, from: &Origin) -> Result<(), Failure> {
    let links = &gw.links;
    let leg = from.leg();
    let side = match from {
        Origin::Core => Side::Core,
        Origin::Peer(_) | Origin::Sip(_) | Origin::Xmpp(_) => Side::Peer,
    };
    let tok = match links.live.load().keys.open(&t.transaction_id) {
        Ok(tok) if tok.leg == leg && (leg == Leg::ToCore || tok.peer == from.domain()) => tok,
        Ok(_) => {
            gw.metrics()
                .orphan_answers
                .with_label_values(&["wrong-leg"])
                .inc();
            return Err(Failure::new(
                Kind::InvalidTransaction,
                side,
                format!("transaction {} was not sent to you", t.transaction_id),
            ));
        }
        Err(e) => {
            gw.metrics()
                .orphan_answers
                .with_label_values(&["unknown"])
                .inc();
            crate::sampled!(
                gw.logs(),
                "answer-forged",
                tracing::warn!(tid = %t.transaction_id, error = %e, "answer with an unknown transaction ID")
            );
            return Err(Failure::new(
                Kind::InvalidTransaction,
                side,
                format!("transaction {}: {e}", t.transaction_id),
            ));
        }
    };
    let ours = tok.instance == links.live.load().keys.instance();
    if links
        .pending
        .complete((tok.instance, tok.request_id), t.clone())
    {
        return Ok(());
    }
    if !ours && links.sibling_of(&tok).is_some() {
        // Another replica's request: hand the answer over in the background, so that the
        // sender's POST is acknowledged at once whatever that replica's state.
        let g = gw.clone();
        gw.drain()
            .spawn(async move { hand_over(&g, tok, t, leg).await });
        return Ok(());
    }
    route_unclaimed(gw, tok, t, leg, ours);
    Ok(())
}

/// An answer no request here waits for, routed on a task of its own (the POST that brought
/// it may end, its sender giving up waiting, before this does, and must not take it along).
pub(crate) fn route_unclaimed(gw: &Arc<Gateway>, tok: Token, t: Transaction, leg: Leg, ours: bool) {
    let g = gw.clone();
    gw.drain()
        .spawn(async move { unclaimed(&g, tok, t, leg, ours).await });
}

/// See [`route_unclaimed`]. Kept work that sent the token records the answer (or knows it
/// for a second one). Otherwise: our own request's answer is late, and the request was
/// already answered (504), so a second answer must not follow; a predecessor's request (this
/// replica restarted) has nobody else to deliver it, so it is routed by its token alone,
/// once, while its request's deadline has not passed.
async fn unclaimed(gw: &Arc<Gateway>, tok: Token, t: Transaction, leg: Leg, ours: bool) {
    let orphan = |reason: &str| {
        gw.metrics()
            .orphan_answers
            .with_label_values(&[reason])
            .inc();
    };
    match work::claim(gw, tok.instance, tok.request_id, t.clone()).await {
        Ok(Some(Claim::Recorded(id))) => {
            gw.metrics().work.with_label_values(&["answer-kept"]).inc();
            tracing::debug!(tid = %t.transaction_id, work = %id, "answer recorded on its kept work");
            return;
        }
        Ok(Some(Claim::Duplicate)) => {
            orphan("duplicate");
            crate::sampled!(
                gw.logs(),
                "late-answer",
                tracing::info!(tid = %t.transaction_id, "second answer to a request: dropped")
            );
            return;
        }
        // A request no kept work sent (a synchronous sender's), or the store is away: the
        // token says where the answer goes.
        Ok(Some(Claim::Unknown) | None) | Err(_) => {}
    }
    let age = unix_now().saturating_sub(u64::from(tok.issued));
    if ours || tok.parts != 1 || age >= gw.cfg().timeouts.request.as_secs() {
        orphan("late");
        crate::sampled!(
            gw.logs(),
            "late-answer",
            tracing::info!(tid = %t.transaction_id, "late answer dropped (its request was already answered)")
        );
        return;
    }
    if !first_routed(gw, &tok).await {
        orphan("duplicate");
        crate::sampled!(
            gw.logs(),
            "late-answer",
            tracing::info!(tid = %t.transaction_id, "answer already routed by its token: dropped")
        );
        return;
    }
    tracing::info!(tid = %t.transaction_id, "answer to a request of a previous gateway process: routing it by its token");
    let answer = Transaction::response(tok.origin_tid.clone(), t.primitive);
    let origin = match leg {
        Leg::ToPeer => Some(Origin::Core),
        Leg::ToCore => gw.links.live.load().peers.get(&tok.peer).map(Origin::Peer),
    };
    let delivered = match origin {
        Some(o) => gw.links.deliver_answers(&o, vec![answer]).await,
        None => {
            orphan("undeliverable");
            false
        }
    };
    if !delivered {
        // Not delivered: a copy sent again may still get through.
        forget_routed(gw, &tok).await;
    }
}

/// Whether this is the first answer routed by token for the request `tok` names: through the
/// store when there is one (across restarts and replicas), else remembered here (within the
/// request timeout, while at most 65,536 such requests are remembered).
async fn first_routed(gw: &Gateway, tok: &Token) -> bool {
    if let Some(first) = work::route_once(gw, tok.instance, tok.request_id).await {
        return first;
    }
    const REMEMBERED: usize = 1 << 16;
    let Ok(mut seen) = gw.routed_by_token.lock() else {
        return true;
    };
    if seen.len() >= REMEMBERED {
        let now = unix_now();
        let keep = gw.cfg().timeouts.request.as_secs();
        seen.retain(|_, issued| u64::from(*issued) + keep > now);
        if seen.len() >= REMEMBERED {
            seen.clear();
        }
    }
    seen.insert((tok.instance, tok.request_id), tok.issued)
        .is_none()
}

/// Undo [`first_routed`] for `tok` (its delivery failed).
async fn forget_routed(gw: &Gateway, tok: &Token) {
    work::unroute(gw, tok.instance, tok.request_id).await;
    if let Ok(mut seen) = gw.routed_by_token.lock() {
        seen.remove(&(tok.instance, tok.request_id));
    }
}

/// Hand `t` to the replica that issued `tok` until it is taken, that replica says it is not
/// its own (then route it by token), or the request's deadline passes: then kept work that
/// sent it (taken over by another replica) records it, and otherwise it is dropped (routing
/// it by token instead could follow the 504 that replica may already have given).
async fn hand_over(gw: &Arc<Gateway>, tok: Token, t: Transaction, leg: Leg) {
    let issued = std::time::UNIX_EPOCH + Duration::from_secs(u64::from(tok.issued));
    let left = (issued + gw.cfg().timeouts.request)
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    let deadline = tokio::time::Instant::now() + left;
    let mut backoff = Backoff::new(Duration::from_secs(1));
    loop {
        match gw.links.hand_off(&tok, &t).await {
            None | Some(Handoff::NotTheirs) => {
                route_unclaimed(gw, tok, t, leg, false);
                return;
            }
            Some(Handoff::Taken) => return,
            Some(Handoff::Unreachable) => {
                if !backoff.wait(deadline).await {
                    tracing::warn!(
                        tid = %t.transaction_id,
                        replica = tok.replica(),
                        "the replica that sent the request stayed unreachable until its deadline"
                    );
                    unclaimed(gw, tok, t, leg, true).await;
                    return;
                }
            }
        }
    }
}

/// An answer handed over by another replica (`POST /cluster/answer`, `mac` from its MAC
/// header): 200 when this process issued its ID (the waiting request is answered, or it was
/// already answered and this one is dropped), 409 when it did not, 401 without a valid MAC,
/// 400 for anything that is not one authentic answer.
pub(crate) fn take_handed_answer(
    gw: &Arc<Gateway>,
    body: &[u8],
    mac: Option<&str>,
) -> (StatusCode, String) {
    let links = &gw.links;
    if !mac.is_some_and(|m| links.live.load().keys.verify(body, m)) {
        return (
            StatusCode::UNAUTHORIZED,
            "missing or wrong hand-over MAC\n".into(),
        );
    }
    let msg = match links.live.load().codec.parse(body) {
        Ok(m) => m,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let Body::Session(session) = msg.body else {
        return (StatusCode::BAD_REQUEST, "not a session message\n".into());
    };
    let mut it = session.transactions.into_iter();
    let (Some(t), None) = (it.next(), it.next()) else {
        return (StatusCode::BAD_REQUEST, "one transaction expected\n".into());
    };
    if t.mode != Mode::Response {
        return (
            StatusCode::BAD_REQUEST,
            "only answers are handed over\n".into(),
        );
    }
    let tok = match links.live.load().keys.open(&t.transaction_id) {
        Ok(tok) => tok,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let handoffs = &gw.metrics().handoffs;
    // Waited for here: a request of this process, or kept work resumed here.
    if links
        .pending
        .complete((tok.instance, tok.request_id), t.clone())
    {
        handoffs.with_label_values(&["received"]).inc();
        return (StatusCode::OK, "delivered\n".into());
    }
    let ours = tok.instance == links.live.load().keys.instance();
    if !ours && tok.replica() != gw.cfg().cluster.replica {
        handoffs.with_label_values(&["not-ours"]).inc();
        return (StatusCode::CONFLICT, "not issued by this replica\n".into());
    }
    // Ours with nobody waiting (kept work waiting for its next attempt records it; else it
    // is late), or our index in an earlier process (routed here, where every copy of it for
    // this index arrives, so it is routed once).
    handoffs.with_label_values(&["received"]).inc();
    let leg = tok.leg;
    route_unclaimed(gw, tok, t, leg, ours);
    (StatusCode::OK, "taken\n".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssp::{Message, NS_WV_SSP_13, Primitive, Status};

    fn answer(tid: &str, mode: Mode) -> String {
        let mut t = Transaction::response(tid, Primitive::Status(Status::with(200, "ok")));
        t.mode = mode;
        Message::session("cluster", vec![t]).emit(NS_WV_SSP_13)
    }

    #[tokio::test]
    async fn handed_answers_are_authenticated_and_claimed_only_by_their_issuer() {
        let gw = Arc::new(Gateway::new(crate::links::tests::links()));
        let keys = &gw.links.live.load().keys;
        let ours = keys.issue(Leg::ToPeer, 42, 0, 1, "core-t1", "opy.example");
        let body = answer(&ours, Mode::Response);
        let mac = keys.sign(body.as_bytes());
        // No MAC, or a MAC of something else: refused before parsing.
        let (st, _) = take_handed_answer(&gw, body.as_bytes(), None);
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        let other = keys.sign(b"something else");
        let (st, _) = take_handed_answer(&gw, body.as_bytes(), Some(&other));
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        // Only answers are handed over.
        let req = answer(&ours, Mode::Request);
        let (st, _) = take_handed_answer(&gw, req.as_bytes(), Some(&keys.sign(req.as_bytes())));
        assert_eq!(st, StatusCode::BAD_REQUEST);
        // Issued by another process (another replica, or this one before a restart): 409.
        let theirs =
            keys.clone()
                .with_replica(3)
                .issue(Leg::ToPeer, 42, 0, 1, "core-t1", "opy.example");
        let b = answer(&theirs, Mode::Response);
        let (st, _) = take_handed_answer(&gw, b.as_bytes(), Some(&keys.sign(b.as_bytes())));
        assert_eq!(st, StatusCode::CONFLICT);
        // Ours, with nothing waiting: taken (and dropped as late: no second answer).
        let (st, msg) = take_handed_answer(&gw, body.as_bytes(), Some(&mac));
        assert_eq!(st, StatusCode::OK);
        assert!(msg.contains("taken"), "{msg}");
    }
}
