//! Fan-out: a request whose route-by IDs have several destinations is split per
//! destination, the parts are forwarded concurrently, and their answers are merged back into
//! one (`PROTOCOL.md` §5: 200 if all parts succeeded, else 201 with one `DetailedResult` per
//! failed ID). A request with one destination goes on whole, moved rather than copied.
//!
//! A number search between operators is carried as `+E164`, and a number the far operator
//! does not know is still answered with its `wv:+MSISDN` where policy allows (the use case
//! "add a user by number regardless of whether that user is registered").

use super::keep::Keep;
use super::normalize;
use super::route::Plan;
use super::state::Gateway;
use crate::config::Queue;
use crate::error::{Failure, Kind};
use crate::links::{Dest, Part, sip};
use crate::ssp::answer::AnswerForm;
use crate::ssp::primitives::SearchResponse;
use crate::ssp::{DetailedResult, E164, Entity, EntityKind, Primitive, Status, status};

/// What a fan-out came to.
#[derive(Debug)]
pub(crate) struct Spread {
    /// The answer for the originator: the parts' answers merged, a part that waits for its
    /// destination counted with its failure.
    pub answer: Primitive,
    /// When parts wait for their destination (store-and-forward): how their sender hears of
    /// it, and the answer with those parts counted as accepted for delivery.
    pub waiting: Option<(Queue, Primitive)>,
}

impl Spread {
    fn done(answer: Primitive) -> Spread {
        Spread {
            answer,
            waiting: None,
        }
    }
}

/// The status of a part kept for delivery while its destination cannot be reached.
pub(crate) fn accepted_status() -> Status {
    Status::with(status::OK, "accepted for delivery")
}

/// The queue of all waiting parts together: the sender's answer waits if any part's does.
fn together(a: Option<Queue>, b: Option<Queue>) -> Option<Queue> {
    match (a, b) {
        (Some(Queue::Hold), _) | (_, Some(Queue::Hold)) => Some(Queue::Hold),
        (Some(q), _) | (None, Some(q)) => Some(q),
        (None, None) => None,
    }
}

/// Forward `request` along `plan`. `keep`: the kept work it belongs to (its parts go with
/// the tokens they first went with, answered parts are not sent again, and a part whose
/// destination cannot be reached now may wait for it).
pub(crate) async fn run(
    gw: &Gateway,
    mut plan: Plan,
    request: Primitive,
    origin_tid: &str,
    origin_peer: &str,
    keep: Option<&Keep<'_>>,
) -> Spread {
    let parts = plan.groups.len();
    // Both below the route-by bound plus one (checked by the route stage).
    let of = u8::try_from(parts).unwrap_or(u8::MAX);
    let part = |index: usize| Part {
        origin_tid,
        origin_peer,
        index: u8::try_from(index).unwrap_or(u8::MAX),
        of,
        issued: None,
    };
    if parts == 1
        && plan.failed.is_empty()
        && let Some((dest, ids)) = plan.groups.pop()
    {
        // One destination for everything: the request goes on moved, not copied, and its
        // answer is the answer.
        let form = AnswerForm::of(&request);
        return match kept(gw, &dest, &ids, request, part(0), keep, false).await {
            Ok(a) => Spread::done(a),
            Err(f) => {
                let waits = keep.and_then(|k| k.waits(Some(&dest), &f));
                Spread {
                    answer: form.clone().answer(f.status()),
                    waiting: waits.map(|q| (q, form.answer(accepted_status()))),
                }
            }
        };
    }
    let req = &request;
    let futs = plan.groups.into_iter().enumerate().map(|(i, (dest, ids))| {
        let keep_ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let p = req.part(&keep_ids);
        Box::pin(async move {
            match kept(gw, &dest, &ids, p, part(i), keep, true).await {
                Ok(answer) => PartResult {
                    answer,
                    ids,
                    waits: None,
                },
                Err(f) => PartResult {
                    answer: AnswerForm::of(req).answer(f.status()),
                    waits: keep.and_then(|k| k.waits(Some(&dest), &f)),
                    ids,
                },
            }
        })
    });
    let mut results = join_all(futs.collect()).await;
    // IDs the route stage could not place for now (DNS down) may wait like a destination
    // that cannot be reached.
    let mut failed = Vec::new();
    for (id, f) in plan.failed {
        match keep.and_then(|k| k.waits(None, &f)) {
            Some(q) => results.push(PartResult {
                answer: AnswerForm::of(req).answer(f.status()),
                ids: vec![id],
                waits: Some(q),
            }),
            None => failed.push((id, f)),
        }
    }
    let queue = results.iter().fold(None, |q, r| together(q, r.waits));
    let Some(queue) = queue else {
        return Spread::done(merge(req, results, failed));
    };
    let accepting: Vec<PartResult> = results
        .iter()
        .map(|r| match r.waits {
            Some(_) => PartResult {
                answer: AnswerForm::of(req).answer(accepted_status()),
                ids: r.ids.clone(),
                waits: None,
            },
            None => r.clone(),
        })
        .collect();
    Spread {
        answer: merge(req, results, failed.clone()),
        waiting: Some((queue, merge(req, accepting, failed))),
    }
}

/// One part to its destination, as part of kept work when there is one: an answer the store
/// already holds for it is the answer; else it goes with its recorded token (recorded now
/// if it has none), and its answer is recorded when `record` (a split request: the work's
/// own answer is recorded by the caller otherwise).
async fn kept(
    gw: &Gateway,
    dest: &Dest,
    ids: &[String],
    request: Primitive,
    part: Part<'_>,
    keep: Option<&Keep<'_>>,
    record: bool,
) -> Result<Primitive, Failure> {
    let Some(k) = keep else {
        return forward(gw, dest, request, part).await;
    };
    let key = super::keep::part_key(dest, ids);
    if let Some(a) = k.stored(&key)
        && !k.resend_now(&key, &a).await
    {
        // Recorded while nobody waited: a "try again later" is not an outcome.
        return k
            .recorded_try_later(&key, dest, &a)
            .await
            .map_or(Ok(a), Err);
    }
    let issued = k.token(&key, dest, part).await?;
    let p = Part {
        issued: issued.as_ref(),
        ..part
    };
    let answer = match forward(gw, dest, request, p).await {
        // The answer may have reached another replica, or come after the wait here ended,
        // and been recorded on the work.
        Err(f) if f.kind == crate::error::Kind::Timeout => match k.recheck(&key).await {
            Some(a) => k
                .recorded_try_later(&key, dest, &a)
                .await
                .map_or(Ok(a), Err),
            None => Err(f),
        },
        // "Try again later" from the far side, for a part that may wait: it waits.
        Ok(a) => k.try_later(dest, &a).map_or(Ok(a), Err),
        other => other,
    };
    if record && let Ok(a) = &answer {
        k.record(&key, a).await;
    }
    answer
}

/// One part to its destination, counted by the protocol it goes out in.
async fn forward(
    gw: &Gateway,
    dest: &Dest,
    request: Primitive,
    part: Part<'_>,
) -> Result<Primitive, Failure> {
    // What is answered here (a failed route, a number search for a SIP operator) was not
    // handed to anyone.
    let protocol = match (dest, &request) {
        (Dest::Fail(_), _) | (Dest::Sip(_) | Dest::Xmpp(_), Primitive::SearchRequest(_)) => None,
        (Dest::Sip(_), _) => Some("sip"),
        (Dest::Xmpp(_), _) => Some("xmpp"),
        _ => Some("ssp"),
    };
    let answer = forward_part(gw, dest, request, part).await;
    if let Some(p) = protocol {
        gw.metrics().count_delivery(p, answer.is_ok());
    }
    answer
}

/// One part to its destination. Between operators a number search travels as `+E164`.
async fn forward_part(
    gw: &Gateway,
    dest: &Dest,
    request: Primitive,
    part: Part<'_>,
) -> Result<Primitive, Failure> {
    let (Dest::Imps(remote) | Dest::LastResort(remote)) = dest else {
        if let (Dest::Sip(t), Primitive::SearchRequest(_)) = (dest, &request) {
            // SIP has no search: a number DNS places at a SIP operator is the ID to add
            // (use case 5.20: a contact is added whether or not the far side speaks IMPS).
            return match canonical_search(gw, request).1 {
                Some(n) => Ok(number_found(
                    n,
                    &format!("reachable by SIP at {}; the number is the ID", t.domain),
                )),
                None => Err(Failure::local(
                    Kind::NotSupported,
                    format!(
                        "only a search by number reaches {}, a SIP operator",
                        t.domain
                    ),
                )),
            };
        }
        if let (Dest::Xmpp(t), Primitive::SearchRequest(_)) = (dest, &request) {
            // Nor has XMPP between servers: the number DNS places there is the ID to add.
            return match canonical_search(gw, request).1 {
                Some(n) => Ok(number_found(
                    n,
                    &format!("reachable by XMPP at {}; the number is the ID", t.domain),
                )),
                None => Err(Failure::local(
                    Kind::NotSupported,
                    format!(
                        "only a search by number reaches {}, an XMPP operator",
                        t.domain
                    ),
                )),
            };
        }
        if let Dest::Sip(t) = dest
            && request.wants_report()
        {
            // Boxed: a rare path that would otherwise grow every request's future.
            return Box::pin(sip_reported(gw, dest, t, request, part)).await;
        }
        return gw.links.send(dest, request, part).await;
    };
    let (mut request, searched) = canonical_search(gw, request);
    normalize::to_peer(gw, &remote.domain, &mut request);
    let answer = gw.links.send(dest, request, part).await.map(|mut a| {
        normalize::from_peer(gw, &remote.domain, &mut a);
        a
    });
    match searched {
        Some(n) => Ok(unregistered_search(gw, n, answer)),
        None => answer,
    }
}

/// A message to a SIP destination whose sender asked for a delivery report. SIP has no
/// report of its own: a 200 from the far end (its user agent took the message) is reported
/// to the sender here, as a `DeliveryStatusReport` to our core; a report that cannot be
/// given is logged (the message itself was delivered and answered).
async fn sip_reported(
    gw: &Gateway,
    dest: &Dest,
    t: &crate::links::sip::SipTarget,
    request: Primitive,
    part: Part<'_>,
) -> Result<Primitive, Failure> {
    let info = match &request {
        Primitive::SendMessageRequest(m) => m.info.clone(),
        _ => None,
    };
    let answer = gw.links.send(dest, request, part).await;
    let delivered = answer.as_ref().is_ok_and(|a| {
        a.answer_status()
            .is_some_and(|s| s.description.as_deref() == Some(sip::DELIVERED))
    });
    if !delivered {
        return answer;
    }
    let recipient = info
        .as_ref()
        .and_then(|i| i.recipient.as_ref())
        .and_then(|r| r.entities.first())
        .map(|e| e.id.clone())
        .unwrap_or_default();
    let dsr = Primitive::DeliveryStatusReport(crate::ssp::primitives::DeliveryStatusReport {
        meta: Some(crate::ssp::MetaInfo::client(
            &format!("wv:@{}", t.domain),
            &recipient,
        )),
        result: Some(Status::with(status::OK, sip::DELIVERED)),
        info,
        ..Default::default()
    });
    let tid = format!("{}-report", part.origin_tid);
    let report = Part {
        origin_tid: &tid,
        origin_peer: "",
        index: 0,
        of: 1,
        issued: None,
    };
    if let Err(f) = gw.links.send(&Dest::Core, dsr, report).await {
        tracing::warn!(to = %t.domain, reason = %f, "delivery report for a SIP message not given to the core");
    }
    answer
}

/// A search by mobile number with the number rewritten to `+E164`, and that number.
fn canonical_search(gw: &Gateway, mut part: Primitive) -> (Primitive, Option<E164>) {
    let Primitive::SearchRequest(s) = &mut part else {
        return (part, None);
    };
    let Some(pair) = s
        .pairs
        .iter_mut()
        .find(|p| p.element.eq_ignore_ascii_case("USER_MOBILE_NUMBER"))
    else {
        return (part, None);
    };
    match gw.cfg().plan.normalise(&pair.string) {
        Ok(n) => {
            pair.string = format!("+{n}");
            (part, Some(n))
        }
        Err(_) => (part, None),
    }
}

/// When the operator ENUM names does not know a searched number (531, or no findings),
/// answer with its `wv:+MSISDN` anyway where policy allows. Other answers pass through.
fn unregistered_search(gw: &Gateway, n: E164, answer: Result<Primitive, Failure>) -> Primitive {
    let unknown = match &answer {
        Err(f) => f.code() == status::UNKNOWN_USER,
        Ok(Primitive::SearchResponse(r)) => {
            r.results.is_empty()
                && r.status
                    .as_ref()
                    .is_none_or(|s| s.is_success() || s.code == status::UNKNOWN_USER)
        }
        Ok(p) => p.answer_code() == status::UNKNOWN_USER,
    };
    if unknown && gw.cfg().policy.search_unregistered_answer {
        return number_found(n, "number not registered at its operator; returned as is");
    }
    match answer {
        Ok(p) => p,
        Err(f) => AnswerForm::Search.answer(f.status()),
    }
}

/// A search by number answered with the number's own `wv:+MSISDN`, `why` as the description.
fn number_found(n: E164, why: &str) -> Primitive {
    Primitive::SearchResponse(SearchResponse {
        search_id: None,
        findings: Some("1".into()),
        completion_flag: Some("T".into()),
        search_index: Some("1".into()),
        status: Some(Status::with(status::OK, why.to_owned())),
        results: vec![Entity::user(format!("wv:+{n}"))],
        ext: Default::default(),
    })
}

/// One part of a split request, and what became of it.
#[derive(Debug, Clone)]
pub(crate) struct PartResult {
    /// The route-by IDs of this part, as the originator wrote them.
    pub ids: Vec<String>,
    /// The answer primitive (success or error form).
    pub answer: Primitive,
    /// Whether it waits for its destination, in which queue.
    pub waits: Option<Queue>,
}

fn detail_for(ids: &[String], st: &Status) -> Vec<DetailedResult> {
    // A part that already says which IDs failed keeps that precision.
    if !st.details.is_empty() {
        return st.details.clone();
    }
    vec![DetailedResult {
        code: st.code,
        description: st.description.clone(),
        ids: ids
            .iter()
            .map(|id| Entity::new(EntityKind::UserId, id.clone()))
            .collect(),
        domains: Vec::new(),
        ext: Default::default(),
    }]
}

/// Merge the answers of a split request. `failed` are IDs that never got a destination.
pub(crate) fn merge(
    req: &Primitive,
    mut parts: Vec<PartResult>,
    failed: Vec<(String, Failure)>,
) -> Primitive {
    if failed.is_empty() && parts.len() == 1 {
        // Nothing to merge: the far side's answer goes through as it is.
        if let Some(only) = parts.pop() {
            return only.answer;
        }
    }
    if parts.is_empty()
        && failed.len() == 1
        && let Some((_, f)) = failed.first()
    {
        return AnswerForm::of(req).answer(f.status());
    }
    let mut details = Vec::new();
    let mut any_ok = false;
    let mut base: Option<Primitive> = None;
    let mut values = Vec::new();
    for part in &parts {
        let ok = part.answer.answer_status().is_none_or(Status::is_success);
        if ok {
            any_ok = true;
            // 201 from one part: keep its per-ID failures.
            if let Some(st) = part.answer.answer_status() {
                details.extend(st.details.iter().cloned());
            }
            if base.is_none() {
                base = Some(part.answer.clone());
            }
        } else if let Some(st) = part.answer.answer_status() {
            details.extend(detail_for(&part.ids, st));
        }
        if let Primitive::GetPresenceResponse(r) = &part.answer {
            values.extend(r.values.iter().cloned());
        }
    }
    for (id, f) in &failed {
        details.extend(detail_for(std::slice::from_ref(id), &f.status()));
    }
    let st = if details.is_empty() && any_ok {
        Status::with(status::OK, "Successful")
    } else {
        let mut s = Status::with(status::PARTIAL, status::description(status::PARTIAL));
        s.details = details;
        s
    };
    let mut out = base.unwrap_or_else(|| AnswerForm::of(req).answer(st.clone()));
    if let Primitive::GetPresenceResponse(r) = &mut out {
        r.values = values;
    }
    out.set_answer_status(st);
    out
}

/// Run futures concurrently on this task and collect their outputs in order.
pub(crate) async fn join_all<F: std::future::Future + Unpin>(mut futs: Vec<F>) -> Vec<F::Output> {
    use std::future::poll_fn;
    use std::task::Poll;
    let mut outs: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if outs[i].is_none() {
                match std::pin::Pin::new(f).poll(cx) {
                    Poll::Ready(v) => outs[i] = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outs.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;
    use crate::ssp::primitives::{SendMessageRequest, SendMessageResponse};
    use crate::ssp::{MessageInfo, Party};

    fn smr(ids: &[&str]) -> Primitive {
        Primitive::SendMessageRequest(SendMessageRequest {
            info: Some(MessageInfo {
                message_id: Some("m1".into()),
                recipient: Some(Party {
                    entities: ids.iter().map(|i| Entity::user(*i)).collect(),
                    ext: Default::default(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn ok_answer(code: u16) -> Primitive {
        Primitive::SendMessageResponse(SendMessageResponse {
            message_id: Some("m1".into()),
            status: Some(Status::new(code)),
            ..Default::default()
        })
    }

    #[test]
    fn merge_single_part_passes_through() {
        let a = Primitive::Status(Status::new(901));
        let out = merge(
            &smr(&["wv:a"]),
            vec![PartResult {
                ids: vec!["wv:a".into()],
                answer: a.clone(),
                waits: None,
            }],
            vec![],
        );
        assert_eq!(out, a);
    }

    #[test]
    fn merge_partial_failure_is_201_with_details() {
        let req = smr(&["wv:a", "wv:b", "wv:x"]);
        let down = Failure::local(Kind::Unreachable, "peer down");
        let out = merge(
            &req,
            vec![
                PartResult {
                    ids: vec!["wv:a".into()],
                    answer: ok_answer(200),
                    waits: None,
                },
                PartResult {
                    ids: vec!["wv:b".into()],
                    answer: AnswerForm::of(&req).answer(down.status()),
                    waits: None,
                },
            ],
            vec![("wv:x".into(), Failure::local(Kind::NoRoute, "no route"))],
        );
        let st = out.answer_status().unwrap();
        assert_eq!(st.code, 201);
        let codes: Vec<u16> = st.details.iter().map(|d| d.code).collect();
        assert_eq!(codes, vec![503, 516]);
        assert_eq!(st.details[1].ids[0].id, "wv:x");
    }

    #[test]
    fn merge_all_ok_is_200() {
        let req = smr(&["wv:a", "wv:b"]);
        let out = merge(
            &req,
            vec![
                PartResult {
                    ids: vec!["wv:a".into()],
                    answer: ok_answer(200),
                    waits: None,
                },
                PartResult {
                    ids: vec!["wv:b".into()],
                    answer: ok_answer(200),
                    waits: None,
                },
            ],
            vec![],
        );
        assert_eq!(out.answer_code(), 200);
    }
}
