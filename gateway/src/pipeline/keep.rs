//! What kept work carries between attempts: its parts as they were sent (each with the token
//! it first went with, so that a receiver recognises a resend, and with its answer once
//! known, so that an answered part is not sent again), and what a part does when its
//! destination cannot be reached now (waits, in which queue). Also the stored form of
//! transactions.

use std::sync::Arc;

use crate::config::Queue;
use crate::error::{Failure, Kind, Retry, Side};
use crate::links::{Dest, Issued, Links, Part};
use crate::ssp::{Body, Message, NS_WV_SSP_13, Primitive, Transaction, status};
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
        t.unwrap_or_else(|| {
            let f = Failure::local(Kind::Internal, "a kept transaction lost in encoding");
            Transaction::request("", Primitive::Status(f.status()))
        }),
    )
}

/// A stored transaction.
pub(crate) fn decode(links: &Links, xml: &str) -> Option<Transaction> {
    match links.live.load().codec.parse(xml.as_bytes()).ok()?.body {
        Body::Session(mut s) => s.transactions.pop(),
        Body::Setup(_) => None,
    }
}

/// The key of one part of a request: its destination and its route-by IDs; long ones (many
/// IDs) as a digest, so that every key stays well inside any database's index limits.
pub(crate) fn part_key(dest: &Dest, ids: &[String]) -> String {
    let d = match dest {
        Dest::Core => "core".to_owned(),
        Dest::Imps(r) => format!("ssp:{}", r.domain),
        Dest::LastResort(r) => format!("last:{}", r.domain),
        Dest::Sip(t) => format!("sip:{}", t.uri),
        Dest::Xmpp(t) => format!("xmpp:{}", t.jid),
        Dest::Fail(_) => "none".to_owned(),
    };
    let key = format!("{d}|{}", ids.join("\u{1f}"));
    if key.len() <= 200 {
        return key;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("{d}#{hex}")
}

/// The key of the part that is the delivery report of a message that lapsed.
pub(crate) const REPORT: &str = "report";

/// The key-value table where the recipients of a pending delivery report are kept (so that
/// the report is the same when it is sent again after a restart).
const REPORTS: &str = "work.reports";

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
    /// Who holds the work (this replica's lease name).
    pub(crate) owner: &'a str,
    pub(crate) id: String,
    pub(crate) parts: Vec<SentPart>,
    /// The request may wait (a message or report, within its validity).
    pub(crate) may_wait: bool,
    /// The first attempt since the request was taken in, or taken up again after a
    /// "try again later" (a part's recorded 503 is then no outcome: it is sent again).
    pub(crate) fresh: bool,
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
        let stored = self
            .store
            .sent_part(self.owner, &self.id, sent)
            .await
            .map_err(|e| store_failure(self.links, "part", e))?;
        match stored {
            // Ours, or the one another holder recorded first (then it goes with that one).
            Some(p) if p.token == issued.tid => Ok(Some(issued)),
            Some(p) => Ok(Some(Issued {
                tid: p.token,
                instance: u32::try_from(p.instance).unwrap_or(0),
                request_id: u64::try_from(p.request_id).unwrap_or(0),
            })),
            None => Err(Failure::local(
                Kind::StoreUnavailable,
                "this replica's lease on the request ran out",
            )),
        }
    }

    /// The answer the store holds for part `key` now: one that arrived while nobody here
    /// waited for it (another replica took it in, or it came late).
    pub(crate) async fn recheck(&self, key: &str) -> Option<Primitive> {
        let parts = self.store.parts(&self.id).await.ok()?;
        let p = parts.into_iter().find(|p| p.key == key)?;
        decode(self.links, p.answer.as_deref()?).map(|t| t.primitive)
    }

    /// Record the answer of part `key` (so that it is not sent again).
    pub(crate) async fn record(&self, key: &str, answer: &Primitive) {
        let (xml, _) = encode(Transaction::response("part", answer.clone()));
        if let Err(e) = self.store.part_answered(&self.id, key, xml).await {
            store_failure(self.links, "part-answer", e);
        }
    }

    /// An SSP peer's answer that refuses the whole part for now (503: the far side
    /// overloaded, over a rate, or unable to verify the originator while its DNS is down),
    /// as the failure the part waits on, when it may wait: the part is sent again later, like
    /// one whose destination could not be reached, with the token it first went with (a
    /// far side that keeps its work takes the resend up again, `work::keep_one`; one that
    /// does not knows it by its transaction ID). `None`: the answer is the outcome.
    pub(crate) fn try_later(&self, dest: &Dest, answer: &Primitive) -> Option<Failure> {
        // Peers only: a gateway takes a resend of what it answered 503 up again (PROTOCOL.md
        // §10); a core may well answer a resend with the answer it gave, and its 503 stays
        // the outcome, as it always was.
        let label = match dest {
            Dest::Imps(r) | Dest::LastResort(r) => r.domain.as_str(),
            Dest::Core | Dest::Sip(_) | Dest::Xmpp(_) | Dest::Fail(_) => return None,
        };
        let st = answer.answer_status()?;
        if st.code != status::UNAVAILABLE {
            return None;
        }
        let f = Failure::new(
            Kind::Unreachable,
            Side::Peer,
            format!(
                "{label} answered 503: {}",
                st.description.as_deref().unwrap_or("service unavailable")
            ),
        );
        self.waits(Some(dest), &f).is_some().then_some(f)
    }

    /// A recorded answer of part `key` that says "try again later" (see [`Keep::try_later`]),
    /// as the failure the part waits on, the record forgotten so that the part is sent
    /// again (with its token: the far side takes a resend of what it answered 503 as work
    /// to do again, `work::keep_one`). `None`: the answer is the outcome. A store failure
    /// is logged; the next attempt finds the answer again and tries once more.
    pub(crate) async fn recorded_try_later(
        &self,
        key: &str,
        dest: &Dest,
        answer: &Primitive,
    ) -> Option<Failure> {
        let f = self.try_later(dest, answer)?;
        self.unanswer(key).await;
        Some(f)
    }

    /// Whether part `key`'s recorded answer is a 503 to send again now: the request was
    /// just taken up again after a "try again later", and that answer is its cause or came
    /// with it (forgotten here; the part goes again with its token).
    pub(crate) async fn resend_now(&self, key: &str, answer: &Primitive) -> bool {
        if !self.fresh || answer.answer_code() != status::UNAVAILABLE {
            return false;
        }
        self.unanswer(key).await;
        true
    }

    /// Forget part `key`'s recorded answer (a store failure is logged; the next attempt
    /// finds the answer again and decides once more).
    async fn unanswer(&self, key: &str) {
        if let Err(e) = self.store.unanswer_part(self.owner, &self.id, key).await {
            store_failure(self.links, "part-answer", e);
        }
    }

    /// Whether a part that failed with `f` towards `dest` (`None`: no destination found yet)
    /// waits for it, and in which queue.
    pub(crate) fn waits(&self, dest: Option<&Dest>, f: &Failure) -> Option<Queue> {
        if !self.may_wait || f.kind.retry() == Retry::Never {
            return None;
        }
        let cfg = &self.links.cfg();
        let q = match dest {
            Some(Dest::Core) => cfg.core.as_ref().map_or(cfg.store.queue, |c| c.queue),
            Some(Dest::Imps(r) | Dest::LastResort(r)) => {
                cfg.peer(&r.domain).map_or(cfg.store.queue, |p| p.queue)
            }
            Some(Dest::Sip(_) | Dest::Xmpp(_) | Dest::Fail(_)) | None => cfg.store.queue,
        };
        (q != Queue::Off).then_some(q)
    }

    /// Whether the delivery report of this (lapsed) work is under way, and whether it was
    /// answered.
    pub(crate) fn reporting(&self) -> Option<bool> {
        let p = self.parts.iter().find(|p| p.key == REPORT)?;
        Some(p.answer.is_some())
    }

    /// Keep the recipients a delivery report names, before it is first sent.
    pub(crate) async fn keep_report(&self, ids: &[String]) -> Result<(), Failure> {
        let value = serde_json::to_string(ids).unwrap_or_default();
        let ttl = self.links.cfg().store.max_validity * 2;
        self.store
            .table(REPORTS)
            .put(&self.id, &value, Some(ttl))
            .await
            .map_err(|e| store_failure(self.links, "report", e))
    }

    /// The recipients the pending delivery report names.
    pub(crate) async fn report_ids(&self) -> Option<Vec<String>> {
        let v = self.store.table(REPORTS).get(&self.id).await.ok()??;
        serde_json::from_str(&v).ok()
    }

    /// The one answer of a request sent whole, if it came.
    pub(crate) fn only_answer(&self) -> Option<Primitive> {
        match self.parts.as_slice() {
            [p] => decode(self.links, p.answer.as_deref()?).map(|t| t.primitive),
            _ => None,
        }
    }
}
