//! HTTP pieces shared by the listeners, the links and the admin endpoints: the SSP media
//! type, what a handler knows of its connection, building responses (refusals from the one
//! classification in [`crate::error`]), reading bodies within a limit, and the stream type
//! that is plain TCP or TLS on either side.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::error::Failure;
use crate::ssp::{Message, NS_WV_SSP_13, Primitive, Transaction};

/// The SSP media type (`PROTOCOL.md` §1).
pub const SSP_CONTENT_TYPE: &str = "application/vnd.wv.ssp+xml";

/// What the handler knows about the connection a request came on.
pub struct ConnInfo {
    /// Remote address.
    pub remote: SocketAddr,
    /// The client certificate chain, when one was presented (already verified by rustls).
    pub certs: Option<Vec<CertificateDer<'static>>>,
    /// Which peers that chain was checked against, so the check runs once per connection.
    pub memo: CertMemo,
    /// Told once the sender is identified: the listener stops counting the connection
    /// against its budget of connections that have not proven who they are.
    pub on_authenticated: Option<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnInfo")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl ConnInfo {
    /// A connection from `remote` with these client certificates.
    pub fn new(remote: SocketAddr, certs: Option<Vec<CertificateDer<'static>>>) -> ConnInfo {
        ConnInfo {
            remote,
            certs,
            memo: CertMemo::default(),
            on_authenticated: None,
        }
    }

    /// The sender on this connection has been identified.
    pub fn authenticated(&self) {
        if let Some(f) = &self.on_authenticated {
            f();
        }
    }
}

/// Per-connection results of checking the client certificate against peers' anchors. A chain
/// check is a signature verification (about 100 µs); a keep-alive connection carries
/// thousands of requests with the same certificate, and the peering table changes only at
/// a reload, so each result is computed once per table.
#[derive(Debug, Default)]
pub struct CertMemo {
    /// The configured peer the certificate identifies, if any, under the peering table of
    /// the generation noted.
    listed: std::sync::Mutex<Option<(u64, Option<std::sync::Arc<str>>)>>,
    /// Claimed domains (unlisted peers) and whether the certificate passed for them, under
    /// the generation noted.
    claimed: std::sync::Mutex<(u64, Vec<(String, bool)>)>,
}

impl CertMemo {
    /// The configured peer the certificate identifies under peering table `generation`,
    /// computing it with `find` the first time (and again once a reload has changed the
    /// table: a peer whose trust was withdrawn is not one any more on connections it opened
    /// before).
    /// Shared, not copied: this runs for every request of the connection.
    pub fn listed(
        &self,
        generation: u64,
        find: impl FnOnce() -> Option<String>,
    ) -> Option<std::sync::Arc<str>> {
        if let Ok(m) = self.listed.lock()
            && let Some((g, p)) = m.as_ref()
            && *g == generation
        {
            return p.clone();
        }
        let p: Option<std::sync::Arc<str>> = find().map(Into::into);
        if let Ok(mut m) = self.listed.lock() {
            *m = Some((generation, p.clone()));
        }
        p
    }

    /// Whether the certificate passed for `domain` under peering table `generation`,
    /// computing it with `check` the first time. At most a few domains are remembered per
    /// connection; beyond that `check` runs each time (a connection claiming many domains
    /// gets no help).
    pub fn claimed(&self, generation: u64, domain: &str, check: impl FnOnce() -> bool) -> bool {
        if let Ok(v) = self.claimed.lock()
            && v.0 == generation
            && let Some((_, ok)) = v.1.iter().find(|(d, _)| d == domain)
        {
            return *ok;
        }
        let ok = check();
        if let Ok(mut v) = self.claimed.lock() {
            if v.0 != generation {
                *v = (generation, Vec::new());
            }
            if v.1.len() < 8 {
                v.1.push((domain.to_owned(), ok));
            }
        }
        ok
    }
}

/// A full HTTP response.
pub type HttpResponse = Response<Full<Bytes>>;

/// A response with a status and an optional SSP body.
// Never inlined: `tests/benches/instructions.sh` counts requests by its calls.
#[inline(never)]
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
/// `charset` parameter; `PROTOCOL.md` §1).
pub fn is_ssp_content_type(req: &Request<Incoming>) -> bool {
    let Some(ct) = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    // `to_str` passed, so the value is visible ASCII, spaces and tabs: ASCII trimming is
    // the whole of it.
    let base = match ct.bytes().position(|b| b == b';') {
        Some(i) => &ct[..i],
        None => ct,
    }
    .trim_ascii();
    base.eq_ignore_ascii_case(SSP_CONTENT_TYPE) || base.eq_ignore_ascii_case("text/xml")
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Over the limit (HTTP 413).
    #[error("body exceeds {0} bytes")]
    TooLarge(usize),
    /// Not complete within its deadline.
    #[error("body not received within {0:?}")]
    Timeout(Duration),
    /// Slower than the minimum rate.
    #[error("body arrives slower than {0} bytes per second")]
    TooSlow(usize),
    /// The connection failed while reading.
    #[error("reading body: {0}")]
    Read(String),
}

/// How much of a body, and how fast.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Most bytes.
    pub max: usize,
    /// The whole body within this.
    pub within: Duration,
    /// At least this many bytes per second after the first second (0: no floor).
    pub min_rate: usize,
}

impl BodyLimits {
    /// At most `max` bytes, with no time bounds beyond the connection's own.
    pub fn size(max: usize) -> BodyLimits {
        BodyLimits {
            max,
            within: Duration::from_secs(24 * 3600),
            min_rate: 0,
        }
    }
}

/// The length a request's body is known to have, if any: its `Content-Length` as hyper read
/// it (hyper, or h2, refuses a request whose length is malformed or given twice
/// differently), or 0 for a request without a body; `None` for a chunked one. No header is
/// looked up and parsed again per request.
pub fn content_length(req: &Request<Incoming>) -> Option<u64> {
    hyper::body::Body::size_hint(req.body()).exact()
}

/// Read a whole request body within `limits`: more than `max` bytes are refused without
/// being buffered, and a body that is not complete by its deadline, or that falls below the
/// minimum rate (a trickle that would hold a connection and a slot for ever), is abandoned.
pub async fn read_body(mut body: Incoming, limits: BodyLimits) -> Result<Bytes, BodyError> {
    let start = tokio::time::Instant::now();
    let deadline = start + limits.within;
    // One frame is the common case: kept as it came, without a copy.
    let mut first: Option<Bytes> = None;
    let mut more: Vec<u8> = Vec::new();
    let mut len = 0usize;
    loop {
        // The rate floor: by `start + 1 s + len / min_rate` more must have come.
        let floor = match limits.min_rate {
            0 => deadline,
            r => start + Duration::from_secs(1) + Duration::from_secs_f64(len as f64 / r as f64),
        };
        let until = floor.min(deadline);
        let frame = match tokio::time::timeout_at(until, body.frame()).await {
            Err(_) if until == deadline => return Err(BodyError::Timeout(limits.within)),
            Err(_) => return Err(BodyError::TooSlow(limits.min_rate)),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(BodyError::Read(e.to_string())),
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        len += data.len();
        if len > limits.max {
            return Err(BodyError::TooLarge(limits.max));
        }
        match &first {
            None => first = Some(data),
            Some(f) => {
                if more.is_empty() {
                    more.extend_from_slice(f);
                }
                more.extend_from_slice(&data);
            }
        }
    }
    Ok(if more.is_empty() {
        first.unwrap_or_default()
    } else {
        Bytes::from(more)
    })
}

/// The HTTP refusal of a whole POST: the status of its kind, `Retry-After` when it may be
/// sent again, and, where the sender may read one, an SSP body carrying the status (with an
/// empty transaction ID: it answers no transaction). A POST refused for load (overload, rate)
/// carries none, so that no SSP answer is given for what will be sent again.
pub fn refuse(f: &Failure) -> HttpResponse {
    use crate::error::Kind;
    let body = match f.kind {
        Kind::Method | Kind::MediaType | Kind::Overloaded | Kind::RateLimited | Kind::TooSlow => {
            None
        }
        _ => Some(status_body(f)),
    };
    let mut r = respond(f.kind.http(), body);
    if f.kind == Kind::TooSlow {
        // A sender that cannot keep up does not keep the connection either.
        r.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(secs) = f.retry_after() {
        r.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

/// A body holding one bare Status (for HTTP-level refusals).
pub fn status_body(f: &Failure) -> String {
    Message::session(
        "",
        vec![Transaction::response("", Primitive::Status(f.status()))],
    )
    .emit(NS_WV_SSP_13)
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
        assert!(memo.claimed(0, "opy.example", || check(true)));
        assert!(
            memo.claimed(0, "opy.example", || check(false)),
            "remembered"
        );
        assert!(!memo.claimed(0, "opz.example", || check(false)));
        assert!(
            !memo.claimed(0, "opz.example", || check(true)),
            "a refusal is remembered too"
        );
        assert_eq!(calls.get(), 2);
        // Beyond eight domains nothing more is remembered (bounded per connection).
        for i in 0..10 {
            memo.claimed(0, &format!("d{i}.example"), || check(true));
        }
        let before = calls.get();
        memo.claimed(0, "d9.example", || check(true));
        assert_eq!(calls.get(), before + 1);
        // A reload (a new peering table) makes every answer stale.
        assert!(
            !memo.claimed(1, "opy.example", || check(false)),
            "checked again"
        );
        assert_eq!(calls.get(), before + 2);
        assert_eq!(
            memo.listed(1, || Some("opy.example".into())).as_deref(),
            Some("opy.example")
        );
        assert_eq!(
            memo.listed(1, || None).as_deref(),
            Some("opy.example"),
            "remembered"
        );
        assert_eq!(
            memo.listed(2, || None),
            None,
            "worked out again after a reload"
        );
    }
}
