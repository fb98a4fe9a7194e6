//! Kept work: exactly one answer for every request an asynchronous sender hands over, across
//! crashes, restarts and replicas; and store-and-forward for what may wait.
//!
//! A request from an asynchronous sender (the core, or a peer that takes its answers as POSTs
//! of their own) is committed to the state store before the sender hears HTTP 200, and stays
//! there until its answer has been delivered; then a while longer (`[store] keep`) as a
//! tombstone, so that the same request sent again is recognised and answered again instead of
//! being relayed twice. A worker carries one piece of work:
//!
//! 1. an answer recorded but not yet delivered is delivered first (for a message accepted
//!    for delivery, forwarding goes on whether or not that answer got through);
//! 2. an attempt: the relay stages, each part sent with the token it first went with
//!    (recorded before it is sent, so that a receiver recognises a resend) and a split
//!    request's part answers recorded (so that an answered part is not sent again);
//! 3. the outcome: the answer for the sender, recorded, then delivered. When parts wait for a
//!    destination that cannot be reached now and the request may wait (a message, a delivery
//!    report: `PROTOCOL.md` §10), the work is tried again later, with backoff, until its
//!    validity ends; its sender is told "accepted for delivery" at once (`queue = "accept"`)
//!    or hears only the outcome (`"hold"`). A message that is still undelivered when its
//!    validity ends is reported to its sender as a delivery report, when it asked for one.
//!
//! Work is leased to the replica that handles it. Each replica takes over what is due and
//! held by nobody: work to try again, the work of a replica that died (its lease ran out),
//! and the work of this replica's previous process (released at start). Every write a worker
//! makes names its lease: a worker whose lease ran out (a database away for longer than the
//! lease) finds its write refused and stops, so two replicas never carry one piece of work
//! past that point; the renewal loop tells the workers of leases it lost.

use std::sync::Arc;
use std::time::Duration;

use super::admit::Slot;
use super::fanout;
use super::keep::{Keep, REPORT, decode, encode, store_failure};
use super::relay::{self, InFlight};
use super::state::Gateway;
use crate::config::Queue;
use crate::error::{Failure, Kind, Retry};
use crate::links::exchange::Backoff;
use crate::links::{Dest, Origin, Part, Remote, Source};
use crate::ssp::answer::AnswerForm;
use crate::ssp::primitives::DeliveryStatusReport;
use crate::ssp::status::UNAVAILABLE;
use crate::ssp::{Entity, Primitive, Transaction};
use crate::store::{self, Claim, NewWork, Put, Store, StoreError, ms, now_ms};

/// One piece of work in a worker's hands.
struct Job {
    /// Its key in the store (none without a store).
    id: Option<String>,
    /// Who sent it, where its answer goes.
    origin: Origin,
    /// The sender's transaction ID.
    tid: String,
    /// The request as the sender sent it.
    request: Primitive,
    /// When it was accepted (Unix ms).
    accepted_at: i64,
    /// Until when it may be tried (Unix ms).
    expires: i64,
    /// Attempts made.
    attempts: i64,
    /// An answer recorded and not yet delivered.
    answer: Option<Primitive>,
    /// The sender was told "accepted for delivery"; the outcome is still to come.
    queued: bool,
    /// Queued work that reached its outcome: only the sender's answer is left to deliver.
    forwarded: bool,
    /// Just accepted: policy has not seen it yet.
    fresh: bool,
}

/// What taking in one request came to.
enum Kept {
    /// New work.
    New(Box<Job>),
    /// A resend of work answered "try again later": taken up again.
    Reopened(Box<Job>),
    /// A resend of work answered before: its answer, to deliver again.
    Answered(Box<Transaction>),
    /// A resend of work still in hand.
    InHand,
    /// A resend of work that ended without an answer to give again (it could not be read
    /// back): the sender gets an error now.
    Unanswerable(Box<Transaction>),
}

/// The primitives that may wait for their destination.
fn may_wait(p: &Primitive) -> bool {
    matches!(
        p,
        Primitive::SendMessageRequest(_) | Primitive::DeliveryStatusReport(_)
    )
}

fn event(gw: &Gateway, what: &str) {
    gw.metrics().work.with_label_values(&[what]).inc();
}

/// When a request accepted `now` is due (its answer), and until when it may be tried (its
/// own validity or `[store] max_validity`, whichever is shorter, for what may wait).
fn times(gw: &Gateway, p: &Primitive, now: i64) -> (i64, i64) {
    let cfg = gw.cfg();
    let deadline = now + ms(cfg.timeouts.request);
    if !may_wait(p) {
        return (deadline, deadline);
    }
    let own = match p {
        Primitive::SendMessageRequest(r) => r
            .info
            .as_ref()
            .and_then(|i| i.validity.as_deref())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs),
        _ => None,
    };
    let validity = own
        .map_or(cfg.store.max_validity, |v| v.min(cfg.store.max_validity))
        .max(cfg.timeouts.request);
    (deadline, now + ms(validity))
}

/// Take in requests from an asynchronous sender, each with its in-flight slot: kept (when
/// there is a store) before the caller acknowledges them, then carried on tasks of their own.
/// A request sent again is recognised: answered again if it was answered, else left to the
/// work in hand. Err: some could not be kept (the sender must send the POST again; what was
/// kept is recognised then).
pub(crate) async fn take_in(
    gw: &Arc<Gateway>,
    origin: &Origin,
    admitted: Vec<(Transaction, Slot)>,
) -> Result<(), Failure> {
    let now = now_ms();
    for (t, _) in &admitted {
        relay::count_request(gw, origin, t.primitive.label());
    }
    let Some(store) = gw.works.store().cloned() else {
        for (t, slot) in admitted {
            let (_, expires) = times(gw, &t.primitive, now);
            start(gw, job(None, origin, t, now, expires), Some(slot));
        }
        return Ok(());
    };
    let futs = admitted.into_iter().map(|(t, slot)| {
        let store = &store;
        Box::pin(async move { (keep_one(gw, store, origin, t, now).await, slot) })
    });
    let mut failure = None;
    for (kept, slot) in fanout::join_all(futs.collect()).await {
        match kept {
            Ok(Kept::New(job)) => {
                event(gw, "kept");
                start(gw, *job, Some(slot));
            }
            Ok(Kept::Reopened(job)) => {
                event(gw, "reopened");
                start(gw, *job, Some(slot));
            }
            Ok(Kept::Answered(answer)) => {
                event(gw, "resent");
                let (g, o) = (gw.clone(), origin.clone());
                gw.drain().spawn(async move {
                    g.links.deliver_answers(&o, vec![*answer]).await;
                });
            }
            Ok(Kept::InHand) => event(gw, "resent"),
            Ok(Kept::Unanswerable(answer)) => {
                event(gw, "resent");
                let (g, o) = (gw.clone(), origin.clone());
                gw.drain().spawn(async move {
                    g.links.deliver_answers(&o, vec![*answer]).await;
                });
            }
            Err(f) => failure = Some(f),
        }
    }
    failure.map_or(Ok(()), Err)
}

fn job(id: Option<String>, origin: &Origin, t: Transaction, now: i64, expires: i64) -> Job {
    Job {
        id,
        origin: origin.clone(),
        tid: t.transaction_id,
        request: t.primitive,
        accepted_at: now,
        expires,
        attempts: 0,
        answer: None,
        queued: false,
        forwarded: false,
        fresh: true,
    }
}

/// Keep one request (committed when this returns).
async fn keep_one(
    gw: &Gateway,
    store: &Store,
    origin: &Origin,
    t: Transaction,
    now: i64,
) -> Result<Kept, Failure> {
    let (xml, t) = encode(t);
    let (deadline, expires) = times(gw, &t.primitive, now);
    let mut new = NewWork {
        origin: origin.domain().to_owned(),
        origin_tid: t.transaction_id.clone(),
        request: xml,
        deadline,
        expires,
    };
    let (owner, lease) = (gw.works.owner(), gw.cfg().store.lease);
    let mut put = store.put_work(new.clone(), owner, lease).await;
    if let Ok(Put::Known { same: false, .. }) = put {
        // The sender reused a transaction ID for another request (it restarted and counts
        // from the start again): another request, kept under an ID of its own.
        let digest = ring::digest::digest(&ring::digest::SHA256, new.request.as_bytes());
        let tag: String = digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        tracing::info!(origin = %new.origin, tid = %new.origin_tid, "transaction ID reused for another request");
        new = NewWork {
            origin_tid: format!("{}#{tag}", new.origin_tid),
            ..new
        };
        put = store.put_work(new.clone(), owner, lease).await;
    }
    match put.map_err(|e| store_failure(&gw.links, "keep", e))? {
        Put::New(id) => Ok(Kept::New(Box::new(job(Some(id), origin, t, now, expires)))),
        // Sent again after its sender was told to try again later (503: over a rate, DNS
        // that could not verify the originator, a destination away with `queue = "off"`):
        // taken up again, as new work under its key, its parts keeping their tokens (so the
        // far side knows a resend of what it got before).
        Put::Known {
            id,
            answer: Some(a),
            same: true,
            done: true,
        } if decode(&gw.links, &a).is_some_and(|a| a.primitive.answer_code() == UNAVAILABLE) => {
            let reopened = store
                .reopen(&id, owner, lease, deadline, expires)
                .await
                .map_err(|e| store_failure(&gw.links, "keep", e))?;
            if reopened {
                return Ok(Kept::Reopened(Box::new(job(
                    Some(id),
                    origin,
                    t,
                    now,
                    expires,
                ))));
            }
            // Taken up by another resend just now (in hand), or purged meanwhile: kept anew.
            match store.put_work(new, owner, lease).await {
                Ok(Put::New(id)) => Ok(Kept::New(Box::new(job(Some(id), origin, t, now, expires)))),
                Ok(_) => Ok(Kept::InHand),
                Err(e) => Err(store_failure(&gw.links, "keep", e)),
            }
        }
        Put::Known {
            answer: Some(a), ..
        } => Ok(decode(&gw.links, &a).map_or(Kept::InHand, |t| Kept::Answered(Box::new(t)))),
        Put::Known {
            answer: None,
            done: true,
            ..
        } => {
            let f = Failure::local(Kind::Internal, "this request ended without an answer");
            let answer = AnswerForm::of(&t.primitive).answer(f.status());
            Ok(Kept::Unanswerable(Box::new(Transaction::response(
                t.transaction_id,
                answer,
            ))))
        }
        Put::Known { answer: None, .. } => Ok(Kept::InHand),
    }
}

/// Carry `job` on a task of its own (tracked by the drain), holding `slot`.
fn start(gw: &Arc<Gateway>, job: Job, slot: Option<Slot>) {
    let hand = job.id.as_deref().map(|id| gw.works.hold(id));
    let g = gw.clone();
    gw.drain().spawn(async move {
        let _slot = slot;
        let _hand = hand;
        carry(&g, job).await;
    });
}

/// What delivering an answer came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// Delivered, and recorded as delivered.
    Delivered,
    /// Not now: to be tried again (or given up: too late).
    Later,
    /// This replica no longer holds the work: the worker stops.
    Lost,
}

/// Carry one piece of work as far as it goes now.
async fn carry(gw: &Arc<Gateway>, mut job: Job) {
    let _in_flight = InFlight::new(gw, &job.origin);
    // 1. An answer recorded and not delivered goes first. A message accepted for delivery
    //    is forwarded whether or not that answer gets through now (it is tried again).
    if let Some(answer) = job.answer.take() {
        match deliver(gw, &mut job, answer).await {
            Delivery::Lost => return,
            Delivery::Delivered if !job.queued => return,
            Delivery::Later if !job.queued => return put_off(gw, &job).await,
            Delivery::Delivered | Delivery::Later => {}
        }
        if job.forwarded {
            // Only that answer was left.
            return if job.answer.is_none() {
                done(gw, &job).await
            } else {
                put_off(gw, &job).await
            };
        }
    }
    let owner = gw.works.owner();
    let keep = match (gw.works.store(), &job.id) {
        (Some(store), Some(id)) => match store.parts(id).await {
            Ok(parts) => Some(Keep {
                links: &gw.links,
                store: store.clone(),
                owner,
                id: id.clone(),
                parts,
                may_wait: may_wait(&job.request) && now_ms() < job.expires,
                fresh: job.fresh,
            }),
            // Its lease runs out and it is taken up again.
            Err(e) => {
                store_failure(&gw.links, "parts", e);
                return;
            }
        },
        _ => None,
    };
    // Queued work whose delivery report is under way: the report is what is left.
    if job.queued
        && let Some(k) = &keep
        && let Some(answered) = k.reporting()
    {
        if answered {
            return outcome_reached(gw, &mut job).await;
        }
        let ids = k.report_ids().await.unwrap_or_default();
        return report(gw, &mut job, k, ids).await;
    }
    // Resumed after its deadline (the gateway was down): what came, or the failure.
    if !job.fresh && !job.queued && now_ms() >= job.expires {
        let answer = keep
            .as_ref()
            .and_then(Keep::only_answer)
            .unwrap_or_else(|| {
                let f = Failure::local(
                    Kind::Timeout,
                    "not answered before its deadline (the gateway restarted)",
                );
                AnswerForm::of(&job.request).answer(f.status())
            });
        drop(keep);
        return answer_sender(gw, &mut job, answer).await;
    }
    // 2. An attempt.
    let spread = relay::stages(
        gw,
        &job.origin,
        &job.tid,
        job.request.clone(),
        job.fresh,
        keep.as_ref(),
    )
    .await;
    job.fresh = false;
    job.attempts += 1;
    if job.id.as_deref().is_some_and(|id| gw.works.is_lost(id)) {
        return;
    }
    // 3. Its outcome.
    match spread.waiting {
        Some((queue, accepted)) if job.id.is_some() && now_ms() < job.expires => {
            drop(keep);
            if queue == Queue::Accept && !job.queued {
                // Recorded before the sender hears it: "accepted" is a promise.
                if !record_answer(gw, &job, &accepted, true).await {
                    return;
                }
                event(gw, "accepted");
                job.queued = true;
                if deliver(gw, &mut job, accepted).await == Delivery::Lost {
                    return;
                }
            }
            put_off(gw, &job).await;
        }
        _ => {
            let lapsed = job.attempts > 1 && now_ms() >= job.expires;
            let failed = failed_ids(&job.request, &spread.answer);
            if lapsed && !failed.is_empty() {
                event(gw, "expired");
            }
            if !job.queued {
                drop(keep);
                return answer_sender(gw, &mut job, spread.answer).await;
            }
            // The sender was told "accepted": this is the outcome, reported when it asked.
            match keep {
                Some(k) if !failed.is_empty() && job.request.wants_report() => {
                    if k.keep_report(&failed).await.is_err() {
                        return; // its lease runs out, and it is taken up again
                    }
                    report(gw, &mut job, &k, failed).await;
                }
                _ => outcome_reached(gw, &mut job).await,
            }
        }
    }
}

/// Record `answer` for the sender of the work (a store failure is logged). False when this
/// replica no longer holds the work.
async fn record_answer(gw: &Gateway, job: &Job, answer: &Primitive, queued: bool) -> bool {
    let (Some(store), Some(id)) = (gw.works.store(), &job.id) else {
        return true;
    };
    let (xml, _) = encode(Transaction::response(job.tid.clone(), answer.clone()));
    match store.answered(gw.works.owner(), id, xml, queued).await {
        Ok(held) => held,
        Err(e) => {
            store_failure(&gw.links, "answer", e);
            // "Accepted" is not given unless recorded; a final answer is delivered all the
            // same (and recorded with its delivery).
            !queued
        }
    }
}

/// The final answer for the sender: counted, recorded, delivered (or put off).
async fn answer_sender(gw: &Arc<Gateway>, job: &mut Job, answer: Primitive) {
    let took = Duration::from_millis(u64::try_from(now_ms() - job.accepted_at).unwrap_or(0));
    relay::count_answer(gw, &job.origin, answer.answer_code(), took);
    if !record_answer(gw, job, &answer, false).await {
        return;
    }
    if deliver(gw, job, answer).await == Delivery::Later {
        put_off(gw, job).await;
    }
}

/// Queued work reached its outcome: done once the sender's answer is delivered, else it
/// waits to deliver that.
async fn outcome_reached(gw: &Gateway, job: &mut Job) {
    job.forwarded = true;
    if job.answer.is_some() {
        if let (Some(store), Some(id)) = (gw.works.store(), &job.id)
            && !recorded(gw, "forwarded", || store.forwarded(gw.works.owner(), id)).await
        {
            return;
        }
        return put_off(gw, job).await;
    }
    done(gw, job).await;
}

/// Deliver an answer to the work's sender. Not delivered: kept in `job.answer` to be tried
/// again, until the work's validity and `[store] max_validity` have passed (then given up
/// and counted).
async fn deliver(gw: &Arc<Gateway>, job: &mut Job, answer: Primitive) -> Delivery {
    if job.id.as_deref().is_some_and(|id| gw.works.is_lost(id)) {
        return Delivery::Lost;
    }
    let t = Transaction::response(job.tid.clone(), answer);
    let (xml, t) = encode(t);
    if gw.links.deliver_answers(&job.origin, vec![t]).await {
        if let (Some(store), Some(id)) = (gw.works.store(), &job.id) {
            let (owner, queued) = (gw.works.owner(), job.queued);
            let xml = Some(xml);
            if !recorded(gw, "delivered", || {
                store.delivered(owner, id, queued, xml.clone())
            })
            .await
            {
                return Delivery::Lost;
            }
        }
        if !job.queued {
            event(gw, "done");
        }
        return Delivery::Delivered;
    }
    let give_up = job
        .expires
        .max(job.accepted_at + ms(gw.cfg().store.max_validity));
    if job.id.is_none() {
        return Delivery::Later;
    }
    if now_ms() >= give_up {
        event(gw, "undeliverable");
        tracing::error!(
            origin = job.origin.domain(),
            tid = %job.tid,
            "answer could not be delivered to its sender within the validity; dropped"
        );
        // As if delivered: nothing more to do for it.
        if let (Some(store), Some(id)) = (gw.works.store(), &job.id) {
            let (owner, queued) = (gw.works.owner(), job.queued);
            if !recorded(gw, "delivered", || store.delivered(owner, id, queued, None)).await {
                return Delivery::Lost;
            }
        }
        return Delivery::Delivered;
    }
    if let Some(a) = decode(&gw.links, &xml) {
        job.answer = Some(a.primitive);
    }
    Delivery::Later
}

/// The work is over.
async fn done(gw: &Gateway, job: &Job) {
    event(gw, "done");
    if let (Some(store), Some(id)) = (gw.works.store(), &job.id) {
        recorded(gw, "done", || store.done(gw.works.owner(), id)).await;
    }
}

/// A write that records what has happened (an answer delivered, work done or put off): tried
/// again while the store is away (a database restart), for up to four leases, the work held
/// here meanwhile so that it is not taken up a second time by this process. Whether this
/// replica still holds the work (false: the write was refused, or never got through).
async fn recorded<F, Fut>(gw: &Gateway, op: &'static str, mut write: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, StoreError>>,
{
    let deadline = tokio::time::Instant::now() + gw.cfg().store.lease * 4;
    let mut backoff = Backoff::new(Duration::from_secs(1));
    loop {
        match write().await {
            Ok(held) => return held,
            Err(e) => {
                store_failure(&gw.links, op, e);
                if !backoff.wait(deadline).await {
                    return false;
                }
            }
        }
    }
}

/// The work waits: its next attempt after a backoff (doubling from `[store] retry_min` up
/// to `retry_max`), at the latest when its validity ends, so that its outcome is on time.
async fn put_off(gw: &Gateway, job: &Job) {
    let (Some(store), Some(id)) = (gw.works.store(), &job.id) else {
        return;
    };
    let (retry_min, retry_max) = {
        let s = &gw.cfg().store;
        (s.retry_min, s.retry_max)
    };
    let doublings = u32::try_from(job.attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    let mut wait = retry_min.saturating_mul(1u32 << doublings).min(retry_max);
    let now = now_ms();
    if now < job.expires {
        wait = wait.min(Duration::from_millis(
            u64::try_from(job.expires - now).unwrap_or(0),
        ));
    }
    event(gw, "retried");
    recorded(gw, "reschedule", || {
        store.reschedule(gw.works.owner(), id, wait, job.attempts)
    })
    .await;
}

/// The recipients `answer` says were not reached: only recipients of the request (a far
/// side cannot make the gateway report on anybody else).
fn failed_ids(request: &Primitive, answer: &Primitive) -> Vec<String> {
    let recipients: Vec<String> = request
        .route_by()
        .iter()
        .map(|r| r.as_str().to_owned())
        .collect();
    match answer.answer_status() {
        None => Vec::new(),
        Some(st) if st.is_success() && st.details.is_empty() => Vec::new(),
        Some(st) if !st.details.is_empty() => {
            let mut failed: Vec<String> = recipients
                .into_iter()
                .filter(|r| {
                    st.details
                        .iter()
                        .filter(|d| d.code >= 300)
                        .any(|d| d.ids.iter().any(|e| e.id.eq_ignore_ascii_case(r)))
                })
                .collect();
            failed.dedup();
            failed
        }
        Some(_) => recipients,
    }
}

/// Send the sender a delivery report: the message did not reach `ids` (its validity
/// ended, or the destination refused it for good).
async fn report(gw: &Arc<Gateway>, job: &mut Job, keep: &Keep<'_>, ids: Vec<String>) {
    let Primitive::SendMessageRequest(m) = &job.request else {
        return outcome_reached(gw, job).await;
    };
    let mut info = m.info.clone().unwrap_or_default();
    if let Some(r) = info.recipient.as_mut() {
        r.entities = ids.iter().map(|id| Entity::user(id.clone())).collect();
    }
    let mut result = if now_ms() >= job.expires {
        Failure::local(Kind::Timeout, "not delivered within its validity").status()
    } else {
        Failure::local(
            Kind::Unreachable,
            "not delivered: the destination refused it",
        )
        .status()
    };
    // A report is not an invitation to send the message again.
    result.try_again = None;
    let dsr = Primitive::DeliveryStatusReport(DeliveryStatusReport {
        result: Some(result),
        info: Some(info),
        ..Default::default()
    });
    let dest = match &job.origin {
        Origin::Core => Dest::Core,
        Origin::Peer(p) => Dest::Imps(Remote {
            domain: p.cfg.domain.clone(),
            urls: Vec::new(),
            source: Source::Peering,
        }),
        // Not kept (answered in its SIP transaction): there is no report to send.
        Origin::Sip(_) | Origin::Xmpp(_) => return outcome_reached(gw, job).await,
    };
    let part = Part {
        origin_tid: &job.tid,
        origin_peer: "",
        index: 0,
        of: 1,
        issued: None,
    };
    let sent = match keep.token(REPORT, &dest, part).await {
        Ok(issued) => {
            let p = Part {
                issued: issued.as_ref(),
                ..part
            };
            gw.links.send(&dest, dsr, p).await
        }
        Err(f) => Err(f),
    };
    match sent {
        Ok(a) => {
            event(gw, "reported");
            keep.record(REPORT, &a).await;
            outcome_reached(gw, job).await;
        }
        Err(f)
            if f.kind.retry() != Retry::Never
                && now_ms() < job.expires + ms(gw.cfg().store.max_validity) =>
        {
            put_off(gw, job).await;
        }
        Err(f) => {
            tracing::warn!(tid = %job.tid, reason = %f, "delivery report could not be sent");
            outcome_reached(gw, job).await;
        }
    }
}

/// The work of `w`, as a job (`None`: it does not decode, or its sender is not known).
fn resumed(gw: &Gateway, w: store::Work) -> Option<Job> {
    let origin = if w.origin.is_empty() {
        Origin::Core
    } else {
        Origin::Peer(gw.links.live.load().peers.get(&w.origin)?)
    };
    let t = decode(&gw.links, &w.request)?;
    let answer = match (&w.answer, w.answer_sent) {
        (Some(a), false) => Some(decode(&gw.links, a)?.primitive),
        _ => None,
    };
    Some(Job {
        id: Some(w.id),
        origin,
        tid: t.transaction_id,
        request: t.primitive,
        accepted_at: w.accepted_at,
        expires: w.expires,
        attempts: w.attempts,
        answer,
        queued: w.queued,
        forwarded: w.forwarded,
        fresh: false,
    })
}

/// Take up work that is due and held by nobody (a retry, a dead replica's, a previous
/// process's), as far as in-flight slots allow: at most half of those free, so that new
/// requests are never starved by old ones.
pub(crate) async fn take_over(gw: &Arc<Gateway>) {
    let Some(store) = gw.works.store().cloned() else {
        return;
    };
    if gw.drain().is_draining() {
        return;
    }
    let free = gw.in_flight.available_permits() / 2;
    if free == 0 {
        return;
    }
    let limit = i64::try_from(free.min(256)).unwrap_or(256);
    let lease = gw.cfg().store.lease;
    let taken = match store.take_over(gw.works.owner(), lease, limit).await {
        Ok(t) => t,
        Err(e) => {
            store_failure(&gw.links, "take-over", e);
            return;
        }
    };
    for w in taken {
        let id = w.id.clone();
        if gw.works.holds(&id) {
            // Still in hand here (its worker is waiting for the store to record it).
            continue;
        }
        let from_holder = w.resumed;
        match resumed(gw, w) {
            Some(job) => {
                // Taken from a holder that is gone, or picked up when due.
                event(gw, if from_holder { "resumed" } else { "due" });
                let slot = gw.in_flight.clone().try_acquire_owned().ok();
                start(gw, job, slot);
            }
            None => {
                tracing::error!(work = %id, "kept work that cannot be read back (or whose sender is unknown) dropped");
                event(gw, "unreadable");
                if let Err(e) = store.done(gw.works.owner(), &id).await {
                    store_failure(&gw.links, "done", e);
                }
            }
        }
    }
}

/// At start: what this replica's previous process held is free at once.
pub(crate) async fn release(gw: &Gateway) -> Result<u64, StoreError> {
    match gw.works.store() {
        Some(s) => s.release(gw.works.owner()).await,
        None => Ok(0),
    }
}

/// Keep the leases of the work in hand.
pub(crate) async fn renew(gw: &Gateway) {
    let Some(store) = gw.works.store() else {
        return;
    };
    let held = gw.works.held();
    let lease = gw.cfg().store.lease;
    match store.renew(gw.works.owner(), held, lease).await {
        Ok(lost) if !lost.is_empty() => {
            tracing::warn!(
                n = lost.len(),
                "leases ran out while the store was away; that work is left to whoever took it"
            );
            event(gw, "lease-lost");
            gw.works.lose(&lost);
        }
        Ok(_) => {}
        Err(e) => {
            store_failure(&gw.links, "renew", e);
        }
    }
}

/// Gauges of the queue, and tombstones past `[store] keep` forgotten.
pub(crate) async fn housekeeping(gw: &Gateway) {
    let Some(store) = gw.works.store() else {
        return;
    };
    match store.depth().await {
        Ok((n, oldest)) => {
            let m = gw.metrics();
            m.queue_depth.set(n);
            m.queue_oldest.set(oldest / 1000);
        }
        Err(e) => {
            store_failure(&gw.links, "depth", e);
        }
    }
    let keep = gw.cfg().store.keep;
    if let Err(e) = store.purge(now_ms() - ms(keep)).await {
        store_failure(&gw.links, "purge", e);
    }
}

/// An answer nobody in this process waited for, to a token kept work may have sent:
/// recorded there (the work uses it when it is next carried), or known as a second answer.
/// `Ok(false)`: no kept work sent that token.
pub(crate) async fn claim(
    gw: &Gateway,
    instance: u32,
    request_id: u64,
    t: Transaction,
) -> Result<Option<Claim>, Failure> {
    let Some(store) = gw.works.store() else {
        return Ok(None);
    };
    let (xml, _) = encode(t);
    store
        .claim(
            i64::from(instance),
            i64::try_from(request_id).unwrap_or(i64::MAX),
            xml,
        )
        .await
        .map(Some)
        .map_err(|e| store_failure(&gw.links, "claim", e))
}

/// Whether this is the first time the answer to the request of a process that is gone is
/// routed by its token (through the store when there is one: across restarts and replicas).
pub(crate) async fn route_once(gw: &Gateway, instance: u32, request_id: u64) -> Option<bool> {
    let store = gw.works.store()?;
    let rid = i64::try_from(request_id).unwrap_or(i64::MAX);
    match store.route_once(i64::from(instance), rid).await {
        Ok(first) => Some(first),
        Err(e) => {
            store_failure(&gw.links, "route-once", e);
            // Not routed: a copy sent again may still get through.
            Some(false)
        }
    }
}

/// Undo [`route_once`] (the delivery failed).
pub(crate) async fn unroute(gw: &Gateway, instance: u32, request_id: u64) {
    if let Some(store) = gw.works.store() {
        let rid = i64::try_from(request_id).unwrap_or(i64::MAX);
        if let Err(e) = store.unroute(i64::from(instance), rid).await {
            store_failure(&gw.links, "unroute", e);
        }
    }
}
