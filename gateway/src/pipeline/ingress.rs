//! Ingress: one SSP POST read and parsed, the same on every listener. Method, media type,
//! size and XML are checked here; what fails gets its HTTP refusal from the one
//! classification, and is counted.

use bytes::Bytes;
use http::{Method, Request};
use hyper::body::Incoming;

use super::state::Gateway;
use crate::error::{Failure, Kind, Side};
use crate::links::TapDir;
use crate::ssp::message::RejectedTransaction;
use crate::ssp::{Message, Mode, Primitive, Transaction};
use crate::web::{BodyError, BodyLimits, content_length, is_ssp_content_type, read_body};

/// Read the body of the POST `req` from `side` (`who` labels the wire tap).
pub(crate) async fn read(
    gw: &Gateway,
    req: Request<Incoming>,
    side: Side,
    who: &str,
) -> Result<Bytes, Failure> {
    if req.method() != Method::POST {
        return Err(Failure::new(Kind::Method, side, "only POST carries SSP"));
    }
    if !is_ssp_content_type(&req) {
        return Err(bad(
            gw,
            Failure::new(Kind::MediaType, side, "not an SSP media type"),
        ));
    }
    // Copied out: the configuration is not held across the read (`CfgRef`).
    let (max, within, min_rate) = {
        let cfg = gw.cfg();
        (
            cfg.limits.xml.max_body,
            cfg.timeouts.body,
            cfg.limits.min_body_rate,
        )
    };
    let too_large = |n: usize| {
        Failure::new(
            Kind::TooLarge,
            side,
            format!("message body exceeds the limit of {n} bytes"),
        )
    };
    // Refused up front when it says so: not a byte of it is read.
    if content_length(&req).is_some_and(|n| n > max as u64) {
        return Err(bad(gw, too_large(max)));
    }
    let limits = BodyLimits {
        max,
        within,
        min_rate,
    };
    let body = match read_body(req.into_body(), limits).await {
        Ok(b) => b,
        Err(BodyError::TooLarge(n)) => return Err(bad(gw, too_large(n))),
        Err(e @ (BodyError::Timeout(_) | BodyError::TooSlow(_))) => {
            return Err(bad(gw, Failure::new(Kind::TooSlow, side, e.to_string())));
        }
        Err(e) => return Err(Failure::new(Kind::Malformed, side, e.to_string())),
    };
    if gw.links.tapping() {
        gw.links
            .tap(TapDir::In, who, &String::from_utf8_lossy(&body));
    }
    Ok(body)
}

/// Parse a body [`read`] from `side` (`who` labels the log line of a refusal).
pub(crate) fn parse(gw: &Gateway, body: &[u8], side: Side, who: &str) -> Result<Message, Failure> {
    gw.links.live.load().codec.parse(body).map_err(|e| {
        crate::sampled!(
            gw.logs(),
            "message-refused",
            tracing::info!(from = who, error = %e, "refused SSP message")
        );
        let mut f = Failure::from(&e);
        f.side = side;
        bad(gw, f)
    })
}

/// Count a body refused before relaying.
fn bad(gw: &Gateway, f: Failure) -> Failure {
    gw.metrics()
        .bad_messages
        .with_label_values(&[f.kind.label()])
        .inc();
    f
}

/// 400 answers for transactions refused on their own (only requests with an ID can be
/// answered; a broken answer is dropped).
pub(crate) fn rejected(rejected: &[RejectedTransaction], side: Side) -> Vec<Transaction> {
    rejected
        .iter()
        .filter(|r| r.mode != Some(Mode::Response))
        .map(|r| {
            let f = Failure::new(Kind::Malformed, side, r.reason.clone());
            Transaction::response(
                r.transaction_id.clone().unwrap_or_default(),
                Primitive::Status(f.status()),
            )
        })
        .collect()
}
