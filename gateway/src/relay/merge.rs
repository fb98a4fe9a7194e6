//! Splitting a request per destination, building error answers, and merging split answers
//! back into one (profile section 5: 200 if all parts succeeded, else 201 with one
//! `DetailedResult` per failed ID).

use crate::ssp::primitives::{GetPresenceResponse, SearchResponse, SendMessageResponse};
use crate::ssp::walk::RouteBy;
use crate::ssp::{DetailedResult, Entity, EntityKind, Primitive, Status, status};

/// A copy of `req` keeping only the route-by IDs in `keep` (by exact value).
pub fn split(req: &Primitive, keep: &[&str]) -> Primitive {
    let mut p = req.clone();
    let retain = |es: &mut Vec<Entity>| es.retain(|e| keep.contains(&e.id.as_str()));
    match &mut p {
        Primitive::SendMessageRequest(r) => {
            if let Some(rcpt) = r.info.as_mut().and_then(|i| i.recipient.as_mut()) {
                retain(&mut rcpt.entities);
            }
        }
        Primitive::SubscribeRequest(r)
        | Primitive::UnsubscribeRequest(r)
        | Primitive::GetPresenceRequest(r) => retain(&mut r.users),
        Primitive::PresenceNotification(r) => retain(&mut r.watchers),
        Primitive::InviteRequest(r) | Primitive::CancelInviteRequest(r) => {
            if let Some(to) = r.to.as_mut() {
                retain(&mut to.entities);
            }
        }
        // Single-destination primitives are never split.
        _ => {}
    }
    p
}

/// The answer primitive for `req` carrying only `status` (the gateway's own errors).
pub fn error_answer(req: &Primitive, st: Status) -> Primitive {
    ErrorForm::of(req).answer(st)
}

/// What the gateway's own error answer to a request needs of the request, taken before the
/// request itself is moved on.
#[derive(Debug)]
pub enum ErrorForm {
    /// `SendMessageResponse` with the request's message ID.
    SendMessage(Option<String>),
    /// `GetPresenceResponse`.
    GetPresence,
    /// `SearchResponse` with no findings.
    Search,
    /// A bare `Status`.
    Status,
}

impl ErrorForm {
    /// The error form of answers to `req`.
    pub fn of(req: &Primitive) -> ErrorForm {
        match req {
            Primitive::SendMessageRequest(r) => {
                ErrorForm::SendMessage(r.info.as_ref().and_then(|i| i.message_id.clone()))
            }
            Primitive::GetPresenceRequest(_) => ErrorForm::GetPresence,
            Primitive::SearchRequest(_) => ErrorForm::Search,
            _ => ErrorForm::Status,
        }
    }

    /// The answer carrying `st`.
    pub fn answer(self, st: Status) -> Primitive {
        match self {
            ErrorForm::SendMessage(message_id) => {
                Primitive::SendMessageResponse(SendMessageResponse {
                    message_id,
                    status: Some(st),
                    ..Default::default()
                })
            }
            ErrorForm::GetPresence => Primitive::GetPresenceResponse(GetPresenceResponse {
                status: Some(st),
                ..Default::default()
            }),
            ErrorForm::Search => Primitive::SearchResponse(SearchResponse {
                status: Some(st),
                findings: Some("0".into()),
                ..Default::default()
            }),
            ErrorForm::Status => Primitive::Status(st),
        }
    }
}

/// A status with the usual description, and `TryAgainTimeout` for 503.
pub fn status(code: u16, description: impl Into<String>) -> Status {
    let mut s = Status::with(code, description);
    if code == status::UNAVAILABLE {
        s.try_again = Some(30);
    }
    s
}

/// The overall status of an answer primitive (absent means success, as Baraza's empty
/// GetPresenceResponse).
pub fn answer_status(p: &Primitive) -> Status {
    // Kept in step with `answer_code`.
    let st = match p {
        Primitive::SendMessageResponse(r) => r.status.clone(),
        Primitive::GetPresenceResponse(r) => r.status.clone(),
        Primitive::SearchResponse(r) => r.status.clone(),
        Primitive::InviteResponse(r) => r.status.clone(),
        Primitive::Status(s) => Some(s.clone()),
        _ => None,
    };
    st.unwrap_or_else(|| Status::new(status::OK))
}

/// The overall status code of an answer primitive, without copying its status.
pub fn answer_code(p: &Primitive) -> u16 {
    let st = match p {
        Primitive::SendMessageResponse(r) => r.status.as_ref(),
        Primitive::GetPresenceResponse(r) => r.status.as_ref(),
        Primitive::SearchResponse(r) => r.status.as_ref(),
        Primitive::InviteResponse(r) => r.status.as_ref(),
        Primitive::Status(s) => Some(s),
        _ => None,
    };
    st.map_or(status::OK, |s| s.code)
}

/// One part of a split request, and what became of it.
#[derive(Debug, Clone)]
pub struct PartResult {
    /// The route-by IDs of this part, as the originator wrote them.
    pub ids: Vec<String>,
    /// The answer primitive (success or error form).
    pub answer: Primitive,
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
pub fn merge(
    req: &Primitive,
    mut parts: Vec<PartResult>,
    failed: Vec<(String, Status)>,
) -> Primitive {
    if failed.is_empty() && parts.len() == 1 {
        // Nothing to merge: the far side's answer goes through as it is.
        if let Some(only) = parts.pop() {
            return only.answer;
        }
    }
    if parts.is_empty() && failed.len() == 1 {
        if let Some((_, st)) = failed.into_iter().next() {
            return error_answer(req, st);
        }
        return error_answer(req, status(status::INTERNAL, "nothing to answer"));
    }
    let mut details = Vec::new();
    let mut any_ok = false;
    let mut base: Option<Primitive> = None;
    let mut values = Vec::new();
    for part in &parts {
        let st = answer_status(&part.answer);
        if st.is_success() {
            any_ok = true;
            // 201 from one part: keep its per-ID failures.
            details.extend(st.details.iter().cloned());
            if base.is_none() {
                base = Some(part.answer.clone());
            }
        } else {
            details.extend(detail_for(&part.ids, &st));
        }
        if let Primitive::GetPresenceResponse(r) = &part.answer {
            values.extend(r.values.iter().cloned());
        }
    }
    for (id, st) in &failed {
        details.extend(detail_for(std::slice::from_ref(id), st));
    }
    let st = if details.is_empty() && any_ok {
        Status::with(status::OK, "Successful")
    } else {
        let mut s = Status::with(status::PARTIAL, status::description(status::PARTIAL));
        s.details = details;
        s
    };
    let mut out = base.unwrap_or_else(|| error_answer(req, st.clone()));
    match &mut out {
        Primitive::SendMessageResponse(r) => r.status = Some(st),
        Primitive::GetPresenceResponse(r) => {
            r.status = Some(st);
            r.values = values;
        }
        Primitive::SearchResponse(r) => r.status = Some(st),
        Primitive::InviteResponse(r) => r.status = Some(st),
        other => *other = Primitive::Status(st),
    }
    out
}

/// The route-by IDs' text, for splitting and logs.
pub fn ids_of(rb: &[RouteBy]) -> Vec<String> {
    rb.iter().map(|r| r.as_str().to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssp::primitives::SendMessageRequest;
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
    fn split_keeps_only_the_part() {
        let p = split(&smr(&["wv:a", "wv:b", "wv:c"]), &["wv:b"]);
        assert_eq!(p.route_by().len(), 1);
        assert_eq!(p.route_by()[0].as_str(), "wv:b");
    }

    #[test]
    fn merge_single_part_passes_through() {
        let a = Primitive::Status(Status::new(901));
        let out = merge(
            &smr(&["wv:a"]),
            vec![PartResult {
                ids: vec!["wv:a".into()],
                answer: a.clone(),
            }],
            vec![],
        );
        assert_eq!(out, a);
    }

    #[test]
    fn merge_partial_failure_is_201_with_details() {
        let req = smr(&["wv:a", "wv:b", "wv:x"]);
        let out = merge(
            &req,
            vec![
                PartResult {
                    ids: vec!["wv:a".into()],
                    answer: ok_answer(200),
                },
                PartResult {
                    ids: vec!["wv:b".into()],
                    answer: error_answer(&req, status(503, "peer down")),
                },
            ],
            vec![("wv:x".into(), status(516, "no route"))],
        );
        let st = answer_status(&out);
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
                },
                PartResult {
                    ids: vec!["wv:b".into()],
                    answer: ok_answer(200),
                },
            ],
            vec![],
        );
        assert_eq!(answer_status(&out).code, 200);
    }

    #[test]
    fn error_answer_forms() {
        assert!(matches!(
            error_answer(&smr(&["wv:a"]), Status::new(516)),
            Primitive::SendMessageResponse(_)
        ));
        assert!(matches!(
            error_answer(&Primitive::Status(Status::new(200)), Status::new(516)),
            Primitive::Status(_)
        ));
    }
}
