//! The HTTP client of every SSP link: a pooled keep-alive client on hyper, plain TCP for
//! `http:` URLs and rustls for `https:` ones.
//!
//! The client verifies a peer's server certificate against the name configured for that peer
//! (its domain by default), not against the URL host: peers are often reached by IP address or
//! by an SRV target name, but their identity is their domain.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::web::{SSP_CONTENT_TYPE, Stream};

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Stream::ClientTls(s) if s.get_ref().1.alpn_protocol() == Some(b"h2") => {
                Connected::new().negotiated_h2()
            }
            _ => Connected::new(),
        }
    }
}

/// Connects plain TCP for `http:` and rustls for `https:`, verifying `server_name`.
#[derive(Clone)]
pub struct Connector {
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
    handshake_timeout: Duration,
}

impl Connector {
    /// A connector; `tls` is used for `https:` URLs.
    pub fn new(
        tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
        connect_timeout: Duration,
        handshake_timeout: Duration,
    ) -> Self {
        Connector {
            tls: tls.map(|(c, n)| (TlsConnector::from(c), n)),
            connect_timeout,
            handshake_timeout,
        }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<Stream>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URL without host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let https = uri.scheme_str() == Some("https");
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let tcp = tokio::time::timeout(
                this.connect_timeout,
                TcpStream::connect((host.as_str(), port)),
            )
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timeout"))??;
            let _ = tcp.set_nodelay(true);
            if !https {
                return Ok(TokioIo::new(Stream::Plain(tcp)));
            }
            let (connector, name) = this.tls.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "https URL but no TLS client configuration",
                )
            })?;
            let tls = tokio::time::timeout(this.handshake_timeout, connector.connect(name, tcp))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timeout"))??;
            Ok(TokioIo::new(Stream::ClientTls(Box::new(tls))))
        })
    }
}

/// Why a POST did not produce an HTTP response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection (refused, unreachable, TLS failure, connect timeout): nothing was sent.
    #[error("connect: {0}")]
    Connect(String),
    /// The request may have been sent but no response came (Baraza closes silently).
    #[error("no response: {0}")]
    NoResponse(String),
    /// No response within the deadline.
    #[error("timeout")]
    Timeout,
    /// The response body could not be read or was too large.
    #[error("response body: {0}")]
    Body(String),
}

/// One extra header of a POST, built once per request (not per attempt).
pub type Header = (HeaderName, HeaderValue);

/// The extra headers of one POST: at most the two `x-wv-*` ones, kept inline (no allocation
/// per request for the list).
pub type Headers = smallvec::SmallVec<[Header; 2]>;

/// `name: value`; `None` where `value` cannot be a header value (the extra headers are
/// informational: such a one is left out). Names are constants (`HeaderName::from_static`
/// in a `const`, checked when compiled).
pub fn header(name: HeaderName, value: &str) -> Option<Header> {
    Some((name, HeaderValue::from_str(value).ok()?))
}

/// The `content-type` of every POST (checked when compiled, as `USER_AGENT`).
const CONTENT_TYPE: HeaderValue = HeaderValue::from_static(SSP_CONTENT_TYPE);
/// The `user-agent` of every POST.
const USER_AGENT: HeaderValue =
    HeaderValue::from_static(concat!("ssp-gateway/", env!("CARGO_PKG_VERSION")));

/// A pooled keep-alive HTTP client (HTTP/2 when the server offers it over TLS).
#[derive(Clone)]
pub struct SspClient {
    client: Client<Connector, Full<Bytes>>,
    max_body: usize,
}

impl std::fmt::Debug for SspClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SspClient").finish_non_exhaustive()
    }
}

impl SspClient {
    /// A client over `connector`.
    pub fn new(connector: Connector, idle: Duration, max_body: usize) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(idle)
            .pool_max_idle_per_host(64)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        SspClient { client, max_body }
    }

    /// POST an SSP body; `headers` are extra (e.g. `x-wv-transactionid`, see [`header`]).
    /// The answer, its body included, must be in within `timeout`.
    pub async fn post(
        &self,
        url: &Uri,
        body: impl Into<Bytes>,
        headers: &[Header],
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), SendError> {
        self.post_by(url, body, headers, Instant::now() + timeout)
            .await
    }

    /// [`SspClient::post`], the answer in by `deadline`: the relay's attempts share their
    /// request's deadline, and no clock is read here (a timeout reads one to make its
    /// deadline).
    pub async fn post_by(
        &self,
        url: &Uri,
        body: impl Into<Bytes>,
        headers: &[Header],
        deadline: Instant,
    ) -> Result<(StatusCode, Bytes), SendError> {
        // Built in place rather than through `Request::builder`, which moves the whole
        // request at every header (this runs for every request).
        let mut req = Request::new(Full::new(body.into()));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = url.clone();
        let h = req.headers_mut();
        h.reserve(2 + headers.len());
        h.insert(http::header::CONTENT_TYPE, CONTENT_TYPE);
        h.insert(http::header::USER_AGENT, USER_AGENT);
        for (k, v) in headers {
            h.append(k.clone(), v.clone());
        }
        let resp = match tokio::time::timeout_at(deadline, self.client.request(req)).await {
            Err(_) => return Err(SendError::Timeout),
            Ok(Err(e)) => {
                // hyper-util reports connect failures as "connect" errors: nothing was sent.
                return Err(if e.is_connect() {
                    SendError::Connect(error_chain(&e))
                } else {
                    SendError::NoResponse(error_chain(&e))
                });
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        let body = tokio::time::timeout_at(
            deadline,
            Limited::new(resp.into_body(), self.max_body).collect(),
        )
        .await
        .map_err(|_| SendError::Timeout)?
        .map_err(|e| SendError::Body(e.to_string()))?
        .to_bytes();
        Ok((status, body))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
