//! Replicas of one gateway behind one address (`[cluster]`). An asynchronous answer may reach
//! a replica that did not send the request: the replica index in its transaction ID says
//! which one did, and the answer is handed to that replica's admin listener
//! (`POST /cluster/answer`), which completes the waiting request. When that replica does not
//! know the request (it restarted) or cannot be reached (it is gone), the receiving replica
//! routes the answer by its token, as for a predecessor's request after a restart. Either way
//! the originator gets exactly one answer.

use http::StatusCode;

use super::Gateway;
use crate::ssp::{Body, Message, NS_WV_SSP_13, Transaction};
use crate::token::Token;

/// What the issuing replica said about a handed-over answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handoff {
    /// It issued the ID: answered (or dropped as late, its request having had its 504).
    Taken,
    /// It did not issue the ID (it is a newer process than the one that did).
    NotTheirs,
    /// No usable answer (down, timed out, error).
    Unreachable,
}

impl Gateway {
    /// Hand `t` to the replica that issued `tok`, when that is another replica of a cluster;
    /// `None` when there is no such replica.
    pub(crate) async fn hand_off(&self, tok: &Token, t: &Transaction) -> Option<Handoff> {
        let client = self.siblings.as_ref()?;
        let replica = tok.replica();
        if replica == self.cfg.cluster.replica {
            return None;
        }
        let base = self.cfg.cluster.siblings.get(usize::from(replica))?;
        let url: http::Uri = format!(
            "{}://{}/cluster/answer",
            base.scheme_str().unwrap_or("http"),
            base.authority().map(|a| a.as_str()).unwrap_or_default()
        )
        .parse()
        .ok()?;
        let body = Message::session("cluster", vec![t.clone()]).emit(NS_WV_SSP_13);
        let result = match client
            .post(&url, body, &[], self.cfg.timeouts.connect.saturating_mul(2))
            .await
        {
            Ok((StatusCode::OK, _)) => Handoff::Taken,
            Ok((StatusCode::NOT_FOUND, _)) => Handoff::NotTheirs,
            Ok((status, _)) => {
                tracing::warn!(%url, %status, "replica refused a handed-over answer");
                Handoff::Unreachable
            }
            Err(e) => {
                tracing::warn!(%url, error = %e, "replica unreachable for a handed-over answer");
                Handoff::Unreachable
            }
        };
        let label = match result {
            Handoff::Taken => "taken",
            Handoff::NotTheirs => "not-theirs",
            Handoff::Unreachable => "unreachable",
        };
        self.metrics.handoffs.with_label_values(&[label]).inc();
        Some(result)
    }

    /// An answer handed over by another replica (`POST /cluster/answer`): 200 when this
    /// process issued its ID (the waiting request is answered, or it was already answered
    /// and this one is dropped), 404 when it did not, 400 for anything that is not one
    /// authentic answer.
    pub async fn take_handed_answer(&self, body: &[u8]) -> (StatusCode, String) {
        let msg = match self.codec.parse(body) {
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
        let tok = match self.keys.open(&t.transaction_id) {
            Ok(tok) => tok,
            Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")),
        };
        if tok.instance != self.keys.instance() {
            self.metrics.handoffs.with_label_values(&["not-ours"]).inc();
            return (StatusCode::NOT_FOUND, "not issued by this process\n".into());
        }
        self.metrics.handoffs.with_label_values(&["received"]).inc();
        if self.pending.complete(tok.request_id, t) {
            (StatusCode::OK, "delivered\n".into())
        } else {
            self.metrics
                .orphan_answers
                .with_label_values(&["late"])
                .inc();
            (
                StatusCode::OK,
                "late: its request was already answered\n".into(),
            )
        }
    }
}
