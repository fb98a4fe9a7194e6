//! The ladder's L2: the "physical limit" of a TLS-terminating HTTP proxy on this stack. It is
//! built from the gateway's own parts (its listener loop with rustls and mutual TLS, hyper,
//! and its pooled upstream client) and does nothing else: read the body, POST it upstream,
//! return the answer. The gateway's overhead is L3 minus this.

use std::sync::Arc;
use std::time::Duration;

use http::{StatusCode, Uri};
use ssp_gateway::app::listen::{Handler, Limits, serve as serve_listener};
use ssp_gateway::drain::Drain;
use ssp_gateway::links::http::{Connector, SspClient};
use ssp_gateway::web::{BodyLimits, read_body, respond};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const MAX_BODY: usize = 1 << 20;

/// Serve TLS on `listener` with `tls`, forwarding every POST to `upstream` (plain HTTP).
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, upstream: Uri) {
    let client = Arc::new(SspClient::new(
        Connector::new(None, Duration::from_secs(2), Duration::from_secs(2)),
        Duration::from_secs(90),
        MAX_BODY,
    ));
    let handler: Handler = Arc::new(move |req, _info| {
        let client = client.clone();
        let upstream = upstream.clone();
        Box::pin(async move {
            let body = match read_body(req.into_body(), BodyLimits::size(MAX_BODY)).await {
                Ok(b) => b,
                Err(_) => return respond(StatusCode::BAD_REQUEST, None),
            };
            let Ok(body) = String::from_utf8(body.to_vec()) else {
                return respond(StatusCode::BAD_REQUEST, None);
            };
            match client
                .post(&upstream, body, &[], Duration::from_secs(5))
                .await
            {
                Ok((status, answer)) => {
                    respond(status, Some(String::from_utf8_lossy(&answer).into_owned()))
                }
                Err(_) => respond(StatusCode::BAD_GATEWAY, None),
            }
        })
    });
    serve_listener(
        listener,
        Some((TlsAcceptor::from(tls), Duration::from_secs(5))),
        handler,
        Drain::new(),
        Limits::lenient(20_000),
        Arc::new(|_| {}),
    )
    .await;
}
