//! The ladder's origin: a fast SSP "core" that answers every POST at once, in the HTTP body,
//! with a `SendMessageResponse` carrying the request's transaction ID. It keeps no state, so
//! every rung measures the proxy in front of it and not the core simulator's bookkeeping.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const MAX_BODY: usize = 1 << 20;

/// The transaction ID of an SSP request body (the first `transactionID="…"`).
pub fn transaction_id(body: &[u8]) -> Option<&[u8]> {
    let start = memchr::memmem::find(body, b"transactionID=\"")? + "transactionID=\"".len();
    let len = memchr::memchr(b'"', &body[start..])?;
    Some(&body[start..start + len])
}

/// The answer to a request with this transaction ID.
pub fn answer(tid: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(400);
    out.extend_from_slice(
        br#"<?xml version="1.0" encoding="UTF-8"?><WV-SSP-Message xmlns="http://www.openmobilealliance.org/DTD/WV-SSP1.3"><Session sessionID="core-1"><Transaction mode="Response" transactionID=""#,
    );
    out.extend_from_slice(tid);
    out.extend_from_slice(
        br#""><SendMessageResponse><Status code="200"/><MessageID>m1</MessageID></SendMessageResponse></Transaction></Session></WV-SSP-Message>"#,
    );
    Bytes::from(out)
}

async fn handle(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
    };
    let Some(tid) = transaction_id(&body) else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    let mut resp = Response::new(Full::new(answer(tid)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/vnd.wv.ssp+xml"),
    );
    Ok(resp)
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = code;
    r
}

/// Serve plain HTTP/1.1 keep-alive on `listener` until the process ends.
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tcp), hyper::service::service_fn(handle))
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_the_transaction_id() {
        let body = br#"<WV-SSP-Message><Session sessionID="s"><Transaction mode="Request" transactionID="g1.abc"><SendMessageRequest/></Transaction></Session></WV-SSP-Message>"#;
        let tid = transaction_id(body).unwrap();
        assert_eq!(tid, b"g1.abc");
        let a = answer(tid);
        assert!(
            std::str::from_utf8(&a)
                .unwrap()
                .contains(r#"transactionID="g1.abc""#)
        );
        assert_eq!(transaction_id(b"<x/>"), None);
    }
}
