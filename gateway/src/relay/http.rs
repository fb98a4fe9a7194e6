//! HTTP plumbing on hyper: the listeners (plain or TLS, HTTP/1.1 and HTTP/2) and the pooled
//! keep-alive client used towards peers and the core.
//!
//! The client verifies a peer's server certificate against the name configured for that peer
//! (its domain by default), not against the URL host: peers are often reached by IP address or
//! by an SRV target name, but their identity is their domain.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The SSP media type (profile section 1).
pub const SSP_CONTENT_TYPE: &str = "application/vnd.wv.ssp+xml";

/// What the handler knows about the connection a request came on.
#[derive(Debug)]
pub struct ConnInfo {
    /// Remote address.
    pub remote: SocketAddr,
    /// The client certificate chain, when one was presented (already verified by rustls).
    pub certs: Option<Vec<CertificateDer<'static>>>,
    /// Which peers that chain was checked against, so the check runs once per connection.
    pub memo: CertMemo,
}

/// Per-connection results of checking the client certificate against peers' anchors. A chain
/// check is a signature verification (about 100 µs); a keep-alive connection carries
/// thousands of requests with the same certificate, and the peering table does not change
/// while the process runs, so each result is computed once.
#[derive(Debug, Default)]
pub struct CertMemo {
    /// The configured peer the certificate identifies, if any.
    pub listed: std::sync::OnceLock<Option<String>>,
    /// Claimed domains (unlisted peers) and whether the certificate passed for them.
    claimed: std::sync::Mutex<Vec<(String, bool)>>,
}

impl CertMemo {
    /// Whether the certificate passed for `domain`, computing it with `check` the first time.
    /// At most a few domains are remembered per connection; beyond that `check` runs each
    /// time (a connection claiming many domains gets no help).
    pub fn claimed(&self, domain: &str, check: impl FnOnce() -> bool) -> bool {
        if let Ok(v) = self.claimed.lock()
            && let Some((_, ok)) = v.iter().find(|(d, _)| d == domain)
        {
            return *ok;
        }
        let ok = check();
        if let Ok(mut v) = self.claimed.lock()
            && v.len() < 8
        {
            v.push((domain.to_owned(), ok));
        }
        ok
    }
}

/// A full HTTP response.
pub type HttpResponse = Response<Full<Bytes>>;

/// The request handler of a listener.
pub type Handler = Arc<
    dyn Fn(Request<Incoming>, Arc<ConnInfo>) -> Pin<Box<dyn Future<Output = HttpResponse> + Send>>
        + Send
        + Sync,
>;

/// A response with a status and an optional SSP body.
pub fn respond(status: StatusCode, body: Option<String>) -> HttpResponse {
    let has_body = body.as_ref().is_some_and(|b| !b.is_empty());
    let mut r = Response::new(Full::new(body.map(Bytes::from).unwrap_or_default()));
    *r.status_mut() = status;
    if has_body {
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(SSP_CONTENT_TYPE),
        );
    }
    r
}

/// Whether a request carries an SSP body (`application/vnd.wv.ssp+xml`, `text/xml`, any
/// `charset` parameter; profile section 1).
pub fn is_ssp_content_type(req: &Request<Incoming>) -> bool {
    let Some(ct) = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let base = ct.split(';').next().unwrap_or("").trim();
    base.eq_ignore_ascii_case(SSP_CONTENT_TYPE) || base.eq_ignore_ascii_case("text/xml")
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Over the limit (HTTP 413).
    #[error("body exceeds {0} bytes")]
    TooLarge(usize),
    /// The connection failed while reading.
    #[error("reading body: {0}")]
    Read(String),
}

/// Read a whole request body, refusing more than `limit` bytes without buffering them.
pub async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge(limit)),
        Err(e) => Err(BodyError::Read(e.to_string())),
    }
}

/// Serve a listener until `shutdown` turns true, then wait up to `drain` for open requests.
pub async fn serve(
    listener: TcpListener,
    tls: Option<(TlsAcceptor, Duration)>,
    handler: Handler,
    mut shutdown: watch::Receiver<bool>,
    max_connections: usize,
    drain: Duration,
    on_tls_error: Arc<dyn Fn(&str) + Send + Sync>,
) {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        // Slow-loris bound: headers must arrive within this time.
        .header_read_timeout(Duration::from_secs(30));
    builder.http2().timer(TokioTimer::new());
    // Plain listeners (the core side) speak HTTP/1.1 only: no h2 preface sniffing.
    if tls.is_none() {
        builder = builder.http1_only();
    }
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let (tcp, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let handler = handler.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let on_tls_error = on_tls_error.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let info_certs;
            let io = match tls {
                Some((acceptor, handshake)) => {
                    match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => {
                            info_certs = s
                                .get_ref()
                                .1
                                .peer_certificates()
                                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect());
                            Stream::ServerTls(Box::new(s))
                        }
                        Ok(Err(e)) => {
                            tracing::info!(%remote, error = %e, "TLS handshake refused");
                            on_tls_error(&e.to_string());
                            return;
                        }
                        Err(_) => {
                            on_tls_error("handshake timeout");
                            return;
                        }
                    }
                }
                None => {
                    info_certs = None;
                    Stream::Plain(tcp)
                }
            };
            let info = Arc::new(ConnInfo {
                remote,
                certs: info_certs,
                memo: CertMemo::default(),
            });
            let svc = hyper::service::service_fn(move |req| {
                let fut = handler(req, info.clone());
                async move { Ok::<_, Infallible>(fut.await) }
            });
            let conn = builder.serve_connection(TokioIo::new(io), svc);
            let conn = watcher.watch(conn.into_owned());
            if let Err(e) = conn.await {
                tracing::debug!(%remote, error = ?e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain deadline passed with connections still open");
    }
}

/// A plain or TLS stream (client or server side).
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS, client side.
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// TLS, server side.
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::ClientTls(s) => Pin::new(s).poll_read(cx, buf),
            Stream::ServerTls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::ClientTls(s) => Pin::new(s).poll_write(cx, buf),
            Stream::ServerTls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::ClientTls(s) => Pin::new(s).poll_flush(cx),
            Stream::ServerTls(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::ClientTls(s) => Pin::new(s).poll_shutdown(cx),
            Stream::ServerTls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::ClientTls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::ServerTls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::ClientTls(s) => s.is_write_vectored(),
            Stream::ServerTls(s) => s.is_write_vectored(),
        }
    }
}

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

    /// POST an SSP body; `headers` are extra (e.g. `x-wv-transactionid`).
    pub async fn post(
        &self,
        url: &Uri,
        body: String,
        headers: &[(&'static str, String)],
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), SendError> {
        let mut req = Request::post(url.clone())
            .header(http::header::CONTENT_TYPE, SSP_CONTENT_TYPE)
            .header(
                http::header::USER_AGENT,
                concat!("ssp-gateway/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in headers {
            if let Ok(v) = HeaderValue::from_str(v) {
                req = req.header(*k, v);
            }
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SendError::Connect(e.to_string()))?;
        let resp = match tokio::time::timeout(timeout, self.client.request(req)).await {
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
        let body = tokio::time::timeout(
            timeout,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn cert_memo_checks_each_claimed_domain_once() {
        let memo = CertMemo::default();
        let calls = Cell::new(0);
        let check = |ok: bool| {
            calls.set(calls.get() + 1);
            ok
        };
        assert!(memo.claimed("opy.example", || check(true)));
        assert!(memo.claimed("opy.example", || check(false)), "remembered");
        assert!(!memo.claimed("opz.example", || check(false)));
        assert!(
            !memo.claimed("opz.example", || check(true)),
            "a refusal is remembered too"
        );
        assert_eq!(calls.get(), 2);
        // Beyond eight domains nothing more is remembered (bounded per connection).
        for i in 0..10 {
            memo.claimed(&format!("d{i}.example"), || check(true));
        }
        let before = calls.get();
        memo.claimed("d9.example", || check(true));
        assert_eq!(calls.get(), before + 1);
    }
}
