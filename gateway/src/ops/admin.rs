//! The admin listener: `GET /metrics` (Prometheus), `GET /health` (alive), `GET /ready`
//! (serving; 503 while draining, so a load balancer or Kubernetes stops sending), `POST
//! /reload` (re-read the configuration, checked whole, and put the directory and renewed
//! certificates in use), `POST /cluster/answer` (an answer handed over
//! by another replica; it only completes requests whose HMAC-signed transaction IDs this
//! process issued), `POST /cluster/self` (this replica's index and process, for a sibling
//! that signs its request with the shared key).
//!
//! Bind it to a management address. `POST /reload` asks for `Authorization: Bearer TOKEN`
//! when `[listen] admin_token_file` is set (401 otherwise); the cluster endpoints are
//! authenticated by the HMAC of the shared key; the `GET` endpoints are read-only. A known
//! path with the wrong method gets 405 with `Allow`, an unknown one 404.
//!
//! What these endpoints need of the running gateway is the [`Admin`] trait; the service
//! implements it, so this module knows nothing of the request path.

use std::future::Future;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;

use crate::web::{BodyLimits, HttpResponse, read_body};

/// Header carrying the HMAC of a body sent between replicas.
pub(crate) const MAC_HEADER: http::HeaderName = http::HeaderName::from_static("ssp-handoff-mac");

/// What the admin endpoints need of the running gateway.
pub(crate) trait Admin {
    /// The Prometheus text exposition.
    fn metrics_text(&self) -> String;
    /// Whether a mutating request with this bearer token (none: no `Authorization: Bearer`)
    /// may proceed.
    fn authorized(&self, bearer: Option<&[u8]>) -> bool;
    /// Whether the gateway takes new requests (`Err` while draining), with a one-line summary.
    fn ready(&self) -> Result<String, String>;
    /// Reload; the summary of what was loaded, or why nothing was.
    fn reload(&self) -> impl Future<Output = Result<String, String>> + Send;
    /// Largest body accepted from a sibling.
    fn max_body(&self) -> usize;
    /// `POST /cluster/self`: this replica's report, for a sibling holding our key.
    fn self_report(&self, body: &[u8], mac: Option<&str>) -> (StatusCode, String);
    /// `POST /cluster/answer`: an answer handed over by a sibling.
    fn cluster_answer(
        &self,
        body: Bytes,
        mac: Option<String>,
    ) -> impl Future<Output = (StatusCode, String)> + Send;
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> HttpResponse {
    let mut r = http::Response::new(http_body_util::Full::new(Bytes::from(body)));
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
) -> Result<(Bytes, Option<String>), HttpResponse> {
    let mac = req
        .headers()
        .get(MAC_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match read_body(req.into_body(), BodyLimits::size(limit)).await {
        Ok(body) => Ok((body, mac)),
        Err(e) => Err(text(
            StatusCode::BAD_REQUEST,
            format!("{e}\n"),
            "text/plain",
        )),
    }
}

/// The admin endpoints: path, and the one method each answers.
const ENDPOINTS: [(&str, Method); 6] = [
    ("/metrics", Method::GET),
    ("/health", Method::GET),
    ("/ready", Method::GET),
    ("/reload", Method::POST),
    ("/cluster/self", Method::POST),
    ("/cluster/answer", Method::POST),
];

/// The token of an `Authorization: Bearer` header.
fn bearer(req: &Request<Incoming>) -> Option<&[u8]> {
    let v = req.headers().get(http::header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = v.split_at(v.iter().position(|&b| b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| token.trim_ascii())
}

/// Handle one admin request.
pub(crate) async fn handle(gw: &impl Admin, req: Request<Incoming>) -> HttpResponse {
    let path = req.uri().path();
    match ENDPOINTS.iter().find(|(p, _)| *p == path) {
        None => return text(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain"),
        Some((_, m)) if m != req.method() => {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{path} takes {m}\n"),
                "text/plain",
            );
            r.headers_mut().insert(
                http::header::ALLOW,
                http::HeaderValue::from_static(if *m == Method::GET { "GET" } else { "POST" }),
            );
            return r;
        }
        Some(_) => {}
    }
    if path == "/reload" && !gw.authorized(bearer(&req)) {
        let mut r = text(
            StatusCode::UNAUTHORIZED,
            "a bearer token is needed (Authorization: Bearer, [listen] admin_token_file)\n".into(),
            "text/plain",
        );
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer realm=\"ssp-gateway admin\""),
        );
        return r;
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            gw.metrics_text(),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        (&Method::GET, "/health") => text(StatusCode::OK, "ok\n".into(), "text/plain"),
        (&Method::GET, "/ready") => match gw.ready() {
            Ok(s) => text(StatusCode::OK, s, "text/plain"),
            Err(s) => text(StatusCode::SERVICE_UNAVAILABLE, s, "text/plain"),
        },
        (&Method::POST, "/reload") => match gw.reload().await {
            Ok(s) => text(StatusCode::OK, s, "text/plain"),
            Err(s) => text(StatusCode::INTERNAL_SERVER_ERROR, s, "text/plain"),
        },
        // A report request is one short line.
        (&Method::POST, "/cluster/self") => match signed(req, 256).await {
            Ok((body, mac)) => {
                let (status, msg) = gw.self_report(&body, mac.as_deref());
                text(status, msg, "text/plain")
            }
            Err(r) => r,
        },
        (&Method::POST, "/cluster/answer") => match signed(req, gw.max_body()).await {
            Ok((body, mac)) => {
                let (status, msg) = gw.cluster_answer(body, mac).await;
                text(status, msg, "text/plain")
            }
            Err(r) => r,
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain"),
    }
}
