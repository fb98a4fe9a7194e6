//! Tables about primitives that the request path needs, kept here once (`PROTOCOL.md` §5):
//!
//! - which list of entities a request is routed by, so a request can be split per
//!   destination ([`Primitive::route_by_list`], also the source of [`Primitive::route_by`]);
//! - where an answer carries its overall status ([`Primitive::answer_status`]);
//! - which answer primitive answers a request, for the gateway's own answers
//!   ([`AnswerForm`]).

use super::common::{Entity, Status};
use super::primitives::{GetPresenceResponse, Primitive, SearchResponse, SendMessageResponse};
use super::status;

impl Primitive {
    /// Whether the sender of this message asked for a delivery report (`DeliveryReport`
    /// Yes, T or true).
    pub fn wants_report(&self) -> bool {
        match self {
            Primitive::SendMessageRequest(r) => r.delivery_report.as_deref().is_some_and(|v| {
                ["yes", "t", "true"]
                    .iter()
                    .any(|w| v.trim().eq_ignore_ascii_case(w))
            }),
            _ => false,
        }
    }

    /// The list of entities a request is routed by, for the primitives whose route-by IDs are
    /// such a list (recipients, presentities, watchers, invitees): the ones a request can be
    /// split by. `None` for the others (a delivery report names one sender, a search one
    /// number, a group primitive one group).
    pub fn route_by_list(&self) -> Option<&Vec<Entity>> {
        match self {
            Primitive::SendMessageRequest(r) => r
                .info
                .as_ref()
                .and_then(|i| i.recipient.as_ref())
                .map(|p| &p.entities),
            Primitive::SubscribeRequest(r)
            | Primitive::UnsubscribeRequest(r)
            | Primitive::GetPresenceRequest(r) => Some(&r.users),
            Primitive::PresenceNotification(r) => Some(&r.watchers),
            Primitive::InviteRequest(r) | Primitive::CancelInviteRequest(r) => {
                r.to.as_ref().map(|p| &p.entities)
            }
            _ => None,
        }
    }

    /// [`Primitive::route_by_list`], to change.
    pub fn route_by_list_mut(&mut self) -> Option<&mut Vec<Entity>> {
        match self {
            Primitive::SendMessageRequest(r) => r
                .info
                .as_mut()
                .and_then(|i| i.recipient.as_mut())
                .map(|p| &mut p.entities),
            Primitive::SubscribeRequest(r)
            | Primitive::UnsubscribeRequest(r)
            | Primitive::GetPresenceRequest(r) => Some(&mut r.users),
            Primitive::PresenceNotification(r) => Some(&mut r.watchers),
            Primitive::InviteRequest(r) | Primitive::CancelInviteRequest(r) => {
                r.to.as_mut().map(|p| &mut p.entities)
            }
            _ => None,
        }
    }

    /// A copy keeping only the route-by IDs in `keep` (by exact value): one part of a request
    /// split per destination. Primitives with a single route-by ID are copied whole.
    pub fn part(&self, keep: &[&str]) -> Primitive {
        let mut p = self.clone();
        if let Some(list) = p.route_by_list_mut() {
            list.retain(|e| keep.contains(&e.id.as_str()));
        }
        p
    }

    /// The overall status an answer primitive carries, if it has a place for one.
    pub fn answer_status(&self) -> Option<&Status> {
        match self {
            Primitive::SendMessageResponse(r) => r.status.as_ref(),
            Primitive::GetPresenceResponse(r) => r.status.as_ref(),
            Primitive::SearchResponse(r) => r.status.as_ref(),
            Primitive::InviteResponse(r) => r.status.as_ref(),
            Primitive::Status(s) => Some(s),
            _ => None,
        }
    }

    /// The overall status code of an answer (absent means success, as in Baraza's
    /// `GetPresenceResponse` without a `Status`).
    pub fn answer_code(&self) -> u16 {
        self.answer_status().map_or(status::OK, |s| s.code)
    }

    /// Put `st` in the answer's status place; an answer without one becomes a bare `Status`.
    pub fn set_answer_status(&mut self, st: Status) {
        match self {
            Primitive::SendMessageResponse(r) => r.status = Some(st),
            Primitive::GetPresenceResponse(r) => r.status = Some(st),
            Primitive::SearchResponse(r) => r.status = Some(st),
            Primitive::InviteResponse(r) => r.status = Some(st),
            other => *other = Primitive::Status(st),
        }
    }
}

/// Which primitive answers a request, with what of the request it must repeat: enough to
/// build the gateway's own answer after the request itself has moved on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerForm {
    /// `SendMessageResponse` with the request's message ID.
    SendMessage(Option<String>),
    /// `GetPresenceResponse`.
    GetPresence,
    /// `SearchResponse` with no findings.
    Search,
    /// A bare `Status` (notifications, reports, subscriptions, everything else).
    Status,
}

impl AnswerForm {
    /// The answer form of `req`.
    pub fn of(req: &Primitive) -> AnswerForm {
        match req {
            Primitive::SendMessageRequest(r) => {
                AnswerForm::SendMessage(r.info.as_ref().and_then(|i| i.message_id.clone()))
            }
            Primitive::GetPresenceRequest(_) => AnswerForm::GetPresence,
            Primitive::SearchRequest(_) => AnswerForm::Search,
            _ => AnswerForm::Status,
        }
    }

    /// The answer carrying `st`.
    pub fn answer(self, st: Status) -> Primitive {
        match self {
            AnswerForm::SendMessage(message_id) => {
                Primitive::SendMessageResponse(SendMessageResponse {
                    message_id,
                    status: Some(st),
                    ..Default::default()
                })
            }
            AnswerForm::GetPresence => Primitive::GetPresenceResponse(GetPresenceResponse {
                status: Some(st),
                ..Default::default()
            }),
            AnswerForm::Search => Primitive::SearchResponse(SearchResponse {
                status: Some(st),
                findings: Some("0".into()),
                ..Default::default()
            }),
            AnswerForm::Status => Primitive::Status(st),
        }
    }
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

    #[test]
    fn a_part_keeps_only_its_ids() {
        let p = smr(&["wv:a", "wv:b", "wv:c"]).part(&["wv:b"]);
        assert_eq!(p.route_by().len(), 1);
        assert_eq!(p.route_by()[0].as_str(), "wv:b");
    }

    #[test]
    fn answer_forms_and_status_places() {
        let a = AnswerForm::of(&smr(&["wv:a"])).answer(Status::new(516));
        assert!(matches!(a, Primitive::SendMessageResponse(_)));
        assert_eq!(a.answer_code(), 516);
        let mut b = AnswerForm::of(&Primitive::Status(Status::new(200))).answer(Status::new(516));
        assert!(matches!(b, Primitive::Status(_)));
        b.set_answer_status(Status::new(201));
        assert_eq!(b.answer_code(), 201);
        assert_eq!(
            Primitive::GetPresenceResponse(Default::default()).answer_code(),
            200,
            "no status is success"
        );
    }
}
