//! The admin listener: `GET /metrics` (Prometheus), `GET /health` (alive), `GET /ready`
//! (serving), `POST /reload` (re-read the subscriber directory), `POST /cluster/answer` (an
//! answer handed over by another replica; it only completes requests whose HMAC-signed
//! transaction IDs this process issued), `POST /cluster/self` (this replica's index and
//! process, for a sibling that signs its request with the shared key). Bind it to a
//! management address only: it has no authentication of its own.

use std::sync::Arc;

use http::{Method, Request, StatusCode};
use hyper::body::Incoming;

use crate::relay::Gateway;
use crate::relay::http::HttpResponse;

fn text(status: StatusCode, body: String, content_type: &'static str) -> HttpResponse {
    let mut r = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

/// The body of a request between replicas (at most `limit` bytes) and the MAC it carries.
async fn signed(
    req: Request<Incoming>,
    limit: usize,
) -> Result<(bytes::Bytes, Option<String>), HttpResponse> {
    let mac = req
        .headers()
        .get(crate::relay::cluster::MAC_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match crate::relay::http::read_body(req.into_body(), limit).await {
        Ok(body) => Ok((body, mac)),
        Err(e) => Err(text(
            StatusCode::BAD_REQUEST,
            format!("{e}\n"),
            "text/plain",
        )),
    }
}

/// Handle one admin request.
pub async fn handle(gw: &Arc<Gateway>, req: Request<Incoming>) -> HttpResponse {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            gw.metrics.render(),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        (&Method::GET, "/health") => text(StatusCode::OK, "ok\n".into(), "text/plain"),
        (&Method::GET, "/ready") => text(
            StatusCode::OK,
            format!(
                "ready: {} directory entries, {} associations, {} pending\n",
                gw.dir.load().len(),
                gw.assoc.count(),
                gw.pending.len()
            ),
            "text/plain",
        ),
        (&Method::POST, "/reload") => match gw.reload() {
            Ok(n) => text(
                StatusCode::OK,
                format!("reloaded: {n} directory entries\n"),
                "text/plain",
            ),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reload failed, previous directory kept: {e}\n"),
                "text/plain",
            ),
        },
        // A report request is one short line.
        (&Method::POST, "/cluster/self") => match signed(req, 256).await {
            Ok((body, mac)) => {
                let (status, msg) = gw.self_report(&body, mac.as_deref());
                text(status, msg, "text/plain")
            }
            Err(r) => r,
        },
        (&Method::POST, "/cluster/answer") => match signed(req, gw.cfg.limits.xml.max_body).await {
            Ok((body, mac)) => {
                let (status, msg) = gw.take_handed_answer(&body, mac.as_deref()).await;
                text(status, msg, "text/plain")
            }
            Err(r) => r,
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain"),
    }
}
