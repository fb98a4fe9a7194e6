//! What kept work carries between attempts: its parts as they were sent (each with the token
//! it first went with, so that a receiver recognises a resend, and with its answer once
//! known, so that an answered part is not sent again), and what a part does when its
//! destination cannot be reached now (waits, in which queue). Also the stored form of
//! transactions.

use std::sync::Arc;

use crate::config::Queue;
use crate::error::{Failure, Kind, Retry};
use crate::links::{Dest, Issued, Links, Part};
use crate::ssp::{Body, Message, NS_WV_SSP_13, Primitive, Status, Transaction};
use crate::store::{SentPart, Store, StoreError};

/// A transaction as stored, and the transaction back.
pub(crate) fn encode(t: Transaction) -> (String, Transaction) {
    let msg = Message::session("kept", vec![t]);
    let xml = msg.emit(NS_WV_SSP_13);
    let t = match msg.body {
        Body::Session(mut s) => s.transactions.pop(),
        Body::Setup(_) => None,
    };
    // The message was built from `t` just above, so it is there; the fallback is never used.
    (
        xml,
        t.unwrap_or_else(|| Transaction::request("", Primitive::Status(Status::new(500)))),
    )
}

/// A stored transaction.
pub(crate) fn decode(links: &Links, xml: &str) -> Option<Transaction> {
    match links.codec.parse(xml.as_bytes()).ok()?.body {
        Body::Session(mut s) => s.transactions.pop(),
        Body::Setup(_) => None,
    }
}

/// The key of one part of a request: its destination and its route-by IDs.
pub(crate) fn part_key(dest: &Dest, ids: &[String]) -> String {
    let d = match dest {
        Dest::Core => "core".to_owned(),
        Dest::Imps(r) => format!("ssp:{}", r.domain),
        Dest::LastResort(r) => format!("last:{}", r.domain),
        Dest::Fail(_) => "none".to_owned(),
    };
    format!("{d}|{}", ids.join(","))
}

/// A store failure: counted, logged (sampled), and what the sender is told.
pub(crate) fn store_failure(links: &Links, op: &'static str, e: StoreError) -> Failure {
    links.metrics.store_errors.with_label_values(&[op]).inc();
    crate::sampled!(
        links.logs,
        "store-failed",
        tracing::error!(op, error = %e, "state store operation failed")
    );
    Failure::local(
        Kind::StoreUnavailable,
        format!("state store unavailable ({op})"),
    )
}

/// The parts of kept work as sent so far, and what a part may do when its destination cannot
/// be reached.
pub(crate) struct Keep<'a> {
    pub(crate) links: &'a Links,
    pub(crate) store: Arc<Store>,
    pub(crate) id: String,
    pub(crate) parts: Vec<SentPart>,
    /// The request may wait (a message or report, within its validity).
    pub(crate) may_wait: bool,
}

impl Keep<'_> {
    /// The answer recorded for part `key`, if any.
    pub(crate) fn stored(&self, key: &str) -> Option<Primitive> {
        let p = self.parts.iter().find(|p| p.key == key)?;
        decode(self.links, p.answer.as_deref()?).map(|t| t.primitive)
    }

    /// The token part `key` went with; else one issued now and recorded before it is sent.
    /// `None` for a destination that is a failure.
    pub(crate) async fn token(
        &self,
        key: &str,
        dest: &Dest,
        part: Part<'_>,
    ) -> Result<Option<Issued>, Failure> {
        if let Some(p) = self.parts.iter().find(|p| p.key == key) {
            return Ok(Some(Issued {
                tid: p.token.clone(),
                instance: u32::try_from(p.instance).unwrap_or(0),
                request_id: u64::try_from(p.request_id).unwrap_or(0),
            }));
        }
        let Some(issued) = self.links.issue(dest, part) else {
            return Ok(None);
        };
        let sent = SentPart {
            key: key.to_owned(),
            token: issued.tid.clone(),
            instance: i64::from(issued.instance),
            request_id: i64::try_from(issued.request_id).unwrap_or(i64::MAX),
            answer: None,
        };
        self.store
            .sent_part(&self.id, sent)
            .await
            .map_err(|e| store_failure(self.links, "part", e))?;
        Ok(Some(issued))
    }

    /// Record the answer of part `key` (so that it is not sent again).
    pub(crate) async fn record(&self, key: &str, answer: &Primitive) {
        let (xml, _) = encode(Transaction::response("part", answer.clone()));
        if let Err(e) = self.store.part_answered(&self.id, key, xml).await {
            store_failure(self.links, "part-answer", e);
        }
    }

    /// Whether a part that failed with `f` towards `dest` (`None`: no destination found yet)
    /// waits for it, and in which queue.
    pub(crate) fn waits(&self, dest: Option<&Dest>, f: &Failure) -> Option<Queue> {
        if !self.may_wait || f.kind.retry() == Retry::Never {
            return None;
        }
        let cfg = &self.links.cfg;
        let q = match dest {
            Some(Dest::Core) => cfg.core.as_ref().map_or(cfg.store.queue, |c| c.queue),
            Some(Dest::Imps(r) | Dest::LastResort(r)) => {
                cfg.peer(&r.domain).map_or(cfg.store.queue, |p| p.queue)
            }
            Some(Dest::Fail(_)) | None => cfg.store.queue,
        };
        (q != Queue::Off).then_some(q)
    }

    /// The recipients of the delivery report this work is sending, if it is at that stage.
    pub(crate) fn reporting(&self) -> Option<(String, Vec<String>, bool)> {
        let p = self.parts.iter().find(|p| p.key.starts_with("report|"))?;
        let ids = p
            .key
            .trim_start_matches("report|")
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        Some((p.key.clone(), ids, p.answer.is_some()))
    }

    /// The one answer of a request sent whole, if it came.
    pub(crate) fn only_answer(&self) -> Option<Primitive> {
        match self.parts.as_slice() {
            [p] => decode(self.links, p.answer.as_deref()?).map(|t| t.primitive),
            _ => None,
        }
    }
}
