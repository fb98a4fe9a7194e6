//! Sending SSP messages to a far side (a peer, the core) and getting the answer, whichever
//! way the far side answers.
//!
//! Sync far sides put the answer in the HTTP body; async ones (Baraza) answer 200 empty and
//! POST the answer later, which the listener hands to [`Pending`](super::pending::Pending) by
//! the request ID inside our transaction-ID token. Either way the caller gets one answer or one
//! failure before its deadline: connect failures and silent closes fail over to the next URL;
//! nothing that was accepted is dropped. Messages that need no SSP answer (answers, the
//! association's steps) are retried with one [`Backoff`] until their deadline.

use std::borrow::Cow;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode, Uri};
use tokio::time::Instant;

use super::http::{Header, Headers, SendError, SspClient, header};
use super::{Issued, Links, Origin, Reply, TapDir};
use crate::error::{Failure, Kind, Side};
use crate::ssp::splice::{Kind as FastKind, Spliced};
use crate::ssp::{Body, Message, Mode, Primitive, Status, Transaction, status};

/// Where to send: a client and URLs in failover order.
pub struct Target<'a> {
    /// Label for logs (`core` or the peer domain).
    pub label: &'a str,
    /// Label for metrics: `core`, a `[[peer]]` domain, or `unlisted` for peers found only
    /// through DNS (so the far sides cannot grow the number of series).
    pub metric: &'a str,
    /// Whose side the far end is.
    pub side: Side,
    /// The client (TLS profile and pool).
    pub client: &'a SspClient,
    /// URLs in order.
    pub urls: &'a [Uri],
}

/// One request on its way: its headers, its bytes (rewritten, carrying our token), and the
/// token with the key its answer is awaited under.
pub(crate) struct Outgoing<'a> {
    /// The `x-wv-*` headers ([`request_headers`]).
    pub headers: Headers,
    /// Its bytes.
    pub body: String,
    /// Our transaction ID and its pending key.
    pub issued: &'a Issued,
}

/// The waits between attempts of something retried until a deadline: 100 ms, doubling, at
/// most `cap`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    /// Starting at 100 ms, at most `cap` apart.
    pub(crate) fn new(cap: Duration) -> Backoff {
        Backoff {
            next: Duration::from_millis(100),
            cap,
        }
    }

    /// Sleep before the next attempt, if it can still start before `deadline`; false if not.
    pub(crate) async fn wait(&mut self, deadline: Instant) -> bool {
        let now = Instant::now();
        if now + self.next >= deadline {
            return false;
        }
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(self.cap);
        true
    }
}

/// `x-wv-sessionid`, which Baraza sends and reads.
const X_WV_SESSIONID: HeaderName = HeaderName::from_static("x-wv-sessionid");
/// `x-wv-transactionid`, which Baraza sends and reads.
const X_WV_TRANSACTIONID: HeaderName = HeaderName::from_static("x-wv-transactionid");

/// Headers Baraza sends and reads with a request (informational; never relied on).
pub(crate) fn request_headers(session: Option<HeaderValue>, tid: &str) -> Headers {
    [
        session.map(|v| (X_WV_SESSIONID, v)),
        header(X_WV_TRANSACTIONID, tid),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The `x-wv-sessionid` value of a link's own session ID, made once with the link (a
/// clone shares its bytes: no copy or check per request); `None` where it cannot be one.
pub(crate) fn session_value(session: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(session).ok()
}

/// A session ID made for this request (an association's), with its header value.
pub(crate) fn owned_session<'a>(session: String) -> (Cow<'a, str>, Option<HeaderValue>) {
    let header = session_value(&session);
    (Cow::Owned(session), header)
}

/// Headers Baraza sends and reads (informational; never relied on).
pub(crate) fn wv_headers(msg: &Message) -> Headers {
    match &msg.body {
        Body::Session(s) => header(X_WV_SESSIONID, &s.session_id)
            .into_iter()
            .chain(
                s.transactions
                    .first()
                    .and_then(|t| header(X_WV_TRANSACTIONID, &t.transaction_id)),
            )
            .collect(),
        Body::Setup(t) => header(X_WV_TRANSACTIONID, &t.transaction_id)
            .into_iter()
            .collect(),
    }
}

impl Links {
    /// Send one request transaction (already rewritten and carrying our token `tid`) and wait
    /// for its answer until `deadline`. `acknowledged`: the far side never answers this one
    /// (a notification to a Baraza-like peer), so its HTTP acknowledgement is the outcome.
    /// `answer_for` (a spliced request's origin and its transaction ID): a synchronous
    /// answer in the fast shape is written back for them by splicing ([`Reply::Written`]);
    /// anything else is read typed.
    pub(crate) async fn exchange(
        &self,
        target: &Target<'_>,
        out: Outgoing<'_>,
        deadline: Instant,
        acknowledged: bool,
        answer_for: Option<(&Origin, &str)>,
    ) -> Result<Reply, Failure> {
        let Outgoing {
            headers,
            body,
            issued,
        } = out;
        let tid = issued.tid.as_str();
        self.tap(TapDir::Out, target.label, &body);
        // Register before sending: an async answer can overtake the HTTP ack. (A notification
        // the far side only acknowledges waits for nothing.)
        let waiting = (!acknowledged).then(|| self.pending.register(issued.key()));
        // One send for both cases: each await point adds its state to every request's future.
        let (http_status, resp) = self
            .send_with_failover(target, body.into(), &headers, deadline)
            .await?;
        let refused = || {
            Failure::new(
                Kind::Unreachable,
                target.side,
                format!(
                    "{} refused the request with HTTP {}",
                    target.label,
                    http_status.as_u16()
                ),
            )
        };
        let typed = |t: Transaction| Reply::typed(t.primitive);
        if !http_status.is_success() {
            // An SSP error in an HTTP error body is still an answer for our transaction.
            return self.sync_answer(&resp, tid).map(typed).ok_or_else(refused);
        }
        if let Some((origin, origin_tid)) = answer_for
            && let Some(written) = self.splice_answer(&resp, origin, origin_tid)
        {
            return Ok(written);
        }
        if let Some(t) = self.sync_answer(&resp, tid) {
            return Ok(typed(t));
        }
        let Some((_registered, rx)) = waiting else {
            return Ok(Reply::typed(Primitive::Status(Status::with(
                status::OK,
                format!("acknowledged by {}", target.label),
            ))));
        };
        // Async: the answer arrives as its own POST.
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(t)) => Ok(typed(*t)),
            Ok(Err(_)) | Err(_) => {
                crate::sampled!(
                    self.logs,
                    "delivery-failed",
                    tracing::warn!(
                        destination = target.label,
                        tid,
                        "no answer before the deadline"
                    )
                );
                self.metrics
                    .delivery_failures
                    .with_label_values(&[target.metric, "no-answer"])
                    .inc();
                Err(Failure::new(
                    Kind::Timeout,
                    target.side,
                    format!("{} did not answer within the deadline", target.label),
                ))
            }
        }
    }

    /// If `body` holds one answer in the fast path's shape (a `SendMessageResponse` or a
    /// `Status`, alone in its message, as [`Links::sync_answer`] would take it), that answer
    /// written for `origin` under its transaction ID `origin_tid` by splicing its bytes.
    fn splice_answer(&self, body: &[u8], origin: &Origin, origin_tid: &str) -> Option<Reply> {
        if body.is_empty() {
            return None;
        }
        let (mut s, read) = Spliced::scan_read(&self.live.load().codec, body).ok()??;
        self.metrics.count_fast_read(read.label());
        if s.mode != Mode::Response
            || !matches!(s.kind, FastKind::SendMessageResponse | FastKind::Status)
        {
            return None;
        }
        let body = self.answer_spliced(origin, &mut s, origin_tid)?;
        self.metrics.count_fast_path(s.kind.label());
        Some(Reply::Written {
            body,
            code: s.answer_code(),
        })
    }

    /// If `body` holds an SSP answer for `tid`, that answer.
    fn sync_answer(&self, body: &[u8], tid: &str) -> Option<Transaction> {
        if body.is_empty() {
            return None;
        }
        let msg = self.live.load().codec.parse(body).ok()?;
        let Body::Session(s) = msg.body else {
            return None;
        };
        let n = s.transactions.len();
        s.transactions
            .into_iter()
            .find(|t| t.mode == Mode::Response && (t.transaction_id == tid || n == 1))
    }

    /// POST with failover across URLs. Returns the first HTTP answer that is not a 5xx.
    /// `body` is shared by the attempts, not copied for each.
    pub(crate) async fn send_with_failover(
        &self,
        target: &Target<'_>,
        mut body: bytes::Bytes,
        headers: &[Header],
        deadline: Instant,
    ) -> Result<(StatusCode, bytes::Bytes), Failure> {
        if target.urls.is_empty() {
            return Err(Failure::new(
                Kind::NoRoute,
                target.side,
                format!("no SSP address known for {}", target.label),
            ));
        }
        let mut last = String::new();
        // The last attempt takes the body itself: the first clone of a body made from a
        // `String` allocates (its buffer becomes shared), which one URL never needs.
        let n = target.urls.len();
        for (i, url) in target.urls.iter().enumerate() {
            // Only while time is left: nothing is sent past the deadline (an association
            // may have taken it all), where the answer could no longer be waited for.
            if Instant::now() >= deadline {
                break;
            }
            let attempt = if i + 1 == n {
                std::mem::take(&mut body)
            } else {
                body.clone()
            };
            match target.client.post_by(url, attempt, headers, deadline).await {
                Ok((s, _)) if s.is_server_error() => {
                    last = format!("{url} answered HTTP {}", s.as_u16());
                    self.delivery_failed(target, "http-5xx", &last);
                }
                Ok(r) => return Ok(r),
                Err(SendError::Timeout) => {
                    self.delivery_failed(target, "timeout", url);
                    return Err(Failure::new(
                        Kind::Timeout,
                        target.side,
                        format!("{} did not answer within the deadline", target.label),
                    ));
                }
                Err(e) => {
                    // Connect failure, or a close without any HTTP response (Baraza does this
                    // for unknown sessions and bad digests): a failed delivery, try the next.
                    let reason = match e {
                        SendError::Connect(_) => "connect",
                        _ => "no-response",
                    };
                    last = format!("{url}: {e}");
                    self.delivery_failed(target, reason, &last);
                }
            }
        }
        Err(Failure::new(
            Kind::Unreachable,
            target.side,
            format!("{} unreachable ({last})", target.label),
        ))
    }

    fn delivery_failed(&self, target: &Target<'_>, reason: &str, detail: &dyn std::fmt::Display) {
        let label = target.label;
        crate::sampled!(
            self.logs,
            "delivery-failed",
            tracing::warn!(destination = label, reason, %detail, "delivery failed")
        );
        self.metrics
            .delivery_failures
            .with_label_values(&[target.metric, reason])
            .inc();
    }

    /// [`Links::deliver`] for answers, within the request deadline, counting those that
    /// could not be delivered.
    pub(crate) async fn deliver_answers_to(
        &self,
        target: &Target<'_>,
        msg: &Message,
        body: String,
    ) -> bool {
        let within = self.cfg().timeouts.request;
        let delivered = self.deliver(target, msg, body, within).await;
        if !delivered {
            self.metrics
                .orphan_answers
                .with_label_values(&["undeliverable"])
                .inc();
        }
        delivered
    }

    /// POST a message that needs no SSP answer (an answer, an association step), retrying
    /// with backoff until `within` has passed. Returns whether it was delivered.
    pub(crate) async fn deliver(
        &self,
        target: &Target<'_>,
        msg: &Message,
        body: String,
        within: Duration,
    ) -> bool {
        self.tap(TapDir::Out, target.label, &body);
        let body = bytes::Bytes::from(body);
        let headers = wv_headers(msg);
        let deadline = Instant::now() + within;
        let mut backoff = Backoff::new(Duration::from_secs(2));
        loop {
            match self
                .send_with_failover(target, body.clone(), &headers, deadline)
                .await
            {
                Ok((s, _)) if s.is_success() => return true,
                Ok((s, _)) => {
                    // A 4xx will not get better by retrying.
                    crate::sampled!(
                        self.logs,
                        "answer-refused",
                        tracing::warn!(
                            destination = target.label,
                            status = s.as_u16(),
                            "answer refused"
                        )
                    );
                    return false;
                }
                Err(f) => {
                    if backoff.wait(deadline).await {
                        continue;
                    }
                    crate::sampled!(
                        self.logs,
                        "answer-undeliverable",
                        tracing::error!(
                            destination = target.label,
                            reason = %f,
                            "answer could not be delivered before its deadline"
                        )
                    );
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every request carries our session (its value made once per link) and our transaction
    /// ID; one that cannot be a header value is left out, not sent broken.
    #[test]
    fn the_wv_headers_carry_the_session_and_the_transaction() {
        let session = session_value("ssp-gateway@opx.example");
        let h = request_headers(session.clone(), "g2.abc");
        let pairs: Vec<_> = h
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("x-wv-sessionid", "ssp-gateway@opx.example"),
                ("x-wv-transactionid", "g2.abc")
            ]
        );
        assert_eq!(session_value("bad\nvalue"), None);
        let h = request_headers(session_value("bad\nvalue"), "t\r");
        assert!(h.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_to_its_cap_and_stops_at_the_deadline() {
        let start = Instant::now();
        let mut b = Backoff::new(Duration::from_millis(300));
        let deadline = start + Duration::from_millis(1000);
        let mut waits = Vec::new();
        let mut last = start;
        while b.wait(deadline).await {
            waits.push(Instant::now() - last);
            last = Instant::now();
        }
        let ms: Vec<u128> = waits.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![100, 200, 300, 300]);
    }
}
