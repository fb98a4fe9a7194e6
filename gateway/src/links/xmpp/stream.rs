//! Server-to-server streams (RFC 6120): opening one to another XMPP server and proving our
//! domain to it, and serving one another server opened to us until it proves its own.
//!
//! A stream is proved by SASL EXTERNAL after STARTTLS when the far side's certificate names
//! its domain (RFC 6120 §13.7.1.2.1, §6.3.4), else by Server Dialback (XEP-0220, keys per
//! XEP-0185) where policy allows it for that domain. Dialback has two halves: the server that
//! receives our key checks it by asking us on a connection of its own (`db:verify`, answered
//! on any stream, authenticated or not), and a key a server gives us is checked the same way
//! ([`verify`]).
//!
//! Each direction is its own TCP connection: stanzas for a domain go out on the stream we
//! opened to it, and come in on the streams it opened to us. Inbound, the stream serves
//! [`Event`]s to the translator: authenticated stanzas, and keys to check.
//!
//! Every failure of one stream (bad XML, a stanza over the limit, a `from` outside what it
//! proved, no proof in time) ends that stream with its stream error, and no other.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::frame::{Frame, FrameError, Framer};
use super::stanza::{
    self, Header, NS_DIALBACK, NS_DIALBACK_FEATURE, NS_SASL, NS_SERVER, NS_STREAM, NS_TLS, Stanza,
    StanzaError,
};
use crate::config::XmppPolicy;

/// Why a stream ended or could not be opened.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum StreamError {
    /// The socket.
    #[error("{0}")]
    Io(String),
    /// What the far side sent cannot be framed.
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// What the far side sent cannot be parsed.
    #[error("{0}")]
    Stanza(#[from] StanzaError),
    /// The far side closed the stream (or the connection).
    #[error("the stream was closed by the far side")]
    Closed,
    /// The far side sent a stream error.
    #[error("stream error from the far side: {0}")]
    Remote(String),
    /// The far side broke the protocol, or refused us.
    #[error("{0}")]
    Protocol(String),
    /// Not done in time.
    #[error("{0}")]
    Timeout(String),
    /// The TLS handshake failed (the far side's certificate, or ours).
    #[error("{0}")]
    Certificate(String),
    /// We refuse what the far side did, with this stream error condition.
    #[error("{condition}: {text}")]
    Refused {
        /// The stream error condition (RFC 6120 §4.9.3).
        condition: &'static str,
        /// Why, for the far side's log and ours.
        text: String,
    },
}

fn refused(condition: &'static str, text: impl Into<String>) -> StreamError {
    StreamError::Refused {
        condition,
        text: text.into(),
    }
}

impl StreamError {
    /// The stream error condition to send for it (RFC 6120 §4.9.3).
    fn condition(&self) -> &'static str {
        match self {
            StreamError::Frame(FrameError::Restricted) => "restricted-xml",
            StreamError::Frame(FrameError::TooLarge(_) | FrameError::TooDeep(_)) => {
                "policy-violation"
            }
            StreamError::Frame(FrameError::Syntax(_)) => "not-well-formed",
            StreamError::Stanza(StanzaError::Xml(crate::ssp::xml::XmlError::Doctype)) => {
                "restricted-xml"
            }
            StreamError::Stanza(StanzaError::Xml(e)) if e.is_limit() => "policy-violation",
            StreamError::Stanza(StanzaError::Xml(_)) => "not-well-formed",
            StreamError::Stanza(StanzaError::Header(_)) => "invalid-namespace",
            StreamError::Timeout(_) => "connection-timeout",
            StreamError::Refused { condition, .. } => condition,
            _ => "undefined-condition",
        }
    }
}

fn io(e: std::io::Error) -> StreamError {
    StreamError::Io(e.to_string())
}

/// A socket, before or after TLS.
#[derive(Debug)]
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
    /// Taken for an upgrade that failed.
    Gone,
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Io::Gone => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Io::Gone => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Io::Gone => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Io::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// What a stream needs to know of this gateway.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// Our domain (the public domain).
    pub(crate) domain: String,
    /// TLS towards other servers (their certificates checked, ours presented), if we have
    /// a certificate and anchors.
    pub(crate) client_tls: Option<Arc<rustls::ClientConfig>>,
    /// TLS for encryption only (any server certificate), for domains that may prove
    /// themselves by dialback, and for dialback checks.
    pub(crate) client_tls_any: Option<Arc<rustls::ClientConfig>>,
    /// TLS for streams opened to us, if we have a certificate.
    pub(crate) server_tls: Option<Arc<rustls::ServerConfig>>,
    /// What a certificate presented to us must chain to, for SASL EXTERNAL.
    pub(crate) anchors: Option<Arc<rustls::RootCertStore>>,
    /// The dialback secret's hash (XEP-0185 keys are an HMAC under it).
    pub(crate) secret: ring::hmac::Key,
    /// The largest stanza taken.
    pub(crate) max_stanza: usize,
    /// How long a stream has to prove itself (and to be opened).
    pub(crate) auth_timeout: Duration,
    /// The policy of each domain (`None`: not federated with).
    pub(crate) policies: crate::config::XmppSpec,
}

impl Ctx {
    /// The dialback key for a stream `id` from `originating` to `receiving` (XEP-0185 §3:
    /// HMAC-SHA256 keyed by SHA-256 of the secret, over "receiving originating id").
    pub(crate) fn key(&self, receiving: &str, originating: &str, id: &str) -> String {
        let tag = ring::hmac::sign(
            &self.secret,
            format!("{receiving} {originating} {id}").as_bytes(),
        );
        tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    fn policy(&self, domain: &str) -> Option<XmppPolicy> {
        self.policies.policy(domain)
    }
}

/// How long one write may take: a far side that stops reading must not hold a task (and
/// its connection slot) for ever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the goodbye of a failing stream may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// One stream's connection: the socket, its framer, and the far side's header.
#[derive(Debug)]
pub(crate) struct Conn {
    io: Io,
    framer: Framer,
    header: Header,
    max: usize,
    /// The certificate chain the far side presented in TLS.
    certs: Vec<CertificateDer<'static>>,
    buf: Box<[u8]>,
    /// Our domain (a stream error needs our header before it).
    ours: String,
    /// Whether our header for the current stream was sent.
    header_sent: bool,
}

impl Conn {
    fn new(tcp: TcpStream, max: usize, ours: &str) -> Conn {
        Conn {
            io: Io::Plain(tcp),
            framer: Framer::new(max, 16),
            header: Header::default(),
            max,
            certs: Vec::new(),
            buf: vec![0; 16 * 1024].into_boxed_slice(),
            ours: ours.to_owned(),
            header_sent: false,
        }
    }

    /// Send our stream header.
    async fn send_header(&mut self, h: &str) -> Result<(), StreamError> {
        self.write(h).await?;
        self.header_sent = true;
        Ok(())
    }

    /// The stream restarts (after STARTTLS or SASL): both headers anew.
    fn restart(&mut self) {
        self.framer.reset();
        self.header_sent = false;
    }

    /// Whether the stream runs over TLS.
    pub(crate) fn tls(&self) -> bool {
        matches!(self.io, Io::Tls(_))
    }

    /// Write `s` whole.
    pub(crate) async fn write(&mut self, s: &str) -> Result<(), StreamError> {
        tokio::time::timeout(WRITE_TIMEOUT, async {
            self.io.write_all(s.as_bytes()).await.map_err(io)?;
            self.io.flush().await.map_err(io)
        })
        .await
        .map_err(|_| StreamError::Timeout("the far side does not read what we send".into()))?
    }

    /// The next frame. Cancel-safe: what was read stays in the framer.
    async fn frame(&mut self) -> Result<Frame, StreamError> {
        loop {
            if let Some(f) = self.framer.next_frame()? {
                return Ok(f);
            }
            let n = self.io.read(&mut self.buf).await.map_err(io)?;
            if n == 0 {
                return Err(StreamError::Closed);
            }
            self.framer.push(&self.buf[..n]);
        }
    }

    /// The next stanza (or stream-level element); a stream error or the stream's end is
    /// an error. Cancel-safe.
    pub(crate) async fn stanza(&mut self) -> Result<Stanza, StreamError> {
        match self.frame().await? {
            Frame::Stanza(raw) => {
                let s = stanza::parse(&raw, &self.header, self.max)?;
                if s.is(NS_STREAM, "error") {
                    let cond =
                        s.el.children
                            .first()
                            .map(|c| c.name.to_string())
                            .unwrap_or_default();
                    return Err(StreamError::Remote(cond));
                }
                Ok(s)
            }
            Frame::End => Err(StreamError::Closed),
            Frame::Header(_) => Err(refused("bad-format", "a second stream header")),
        }
    }

    /// The far side's stream header.
    async fn read_header(&mut self) -> Result<(), StreamError> {
        match self.frame().await? {
            Frame::Header(raw) => {
                self.header = stanza::header(&raw, self.max)?;
                Ok(())
            }
            _ => Err(StreamError::Protocol("no stream header".into())),
        }
    }

    /// End the stream with a stream error (best effort: the far side may be gone).
    pub(crate) async fn fail(&mut self, e: &StreamError) {
        let mut text = String::new();
        if !self.header_sent {
            // A stream error follows a header of ours (RFC 6120 §4.9.1.2).
            text.push_str(&stanza::open(&self.ours, None, Some("0")));
        }
        text.push_str(&stanza::stream_error(e.condition(), &e.to_string()));
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            let _ = self.io.write_all(text.as_bytes()).await;
            let _ = self.io.shutdown().await;
        })
        .await;
    }

    /// End the stream cleanly.
    pub(crate) async fn close(&mut self) {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            let _ = self.io.write_all(b"</stream:stream>").await;
            let _ = self.io.shutdown().await;
        })
        .await;
    }

    fn take_tcp(&mut self) -> Result<TcpStream, StreamError> {
        if self.framer.pending() != 0 {
            // Bytes after <starttls/> or <proceed/> would be read as if they came over TLS
            // (a known injection, CVE-2011-0411 style).
            return Err(refused("policy-violation", "data after the TLS request"));
        }
        match std::mem::replace(&mut self.io, Io::Gone) {
            Io::Plain(t) => Ok(t),
            other => {
                self.io = other;
                Err(StreamError::Protocol("TLS twice".into()))
            }
        }
    }
}

/// The `<stream:features>` that follow a version 1.0 header.
async fn features(conn: &mut Conn) -> Result<Stanza, StreamError> {
    if !conn.header.v1 {
        // A pre-1.0 server: dialback only, no features.
        return Ok(Stanza {
            ns: NS_STREAM.into(),
            local: "features".into(),
            el: crate::ssp::xml::Element::new("stream:features")
                .with_child(stanza::ns_el("dialback", NS_DIALBACK_FEATURE)),
        });
    }
    let f = conn.stanza().await?;
    if !f.is(NS_STREAM, "features") {
        return Err(StreamError::Protocol(format!(
            "<{}> where stream features were due",
            f.el.name
        )));
    }
    Ok(f)
}

/// How an outbound stream proved our domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proof {
    /// SASL EXTERNAL with our certificate.
    Sasl,
    /// Server Dialback.
    Dialback,
}

impl Proof {
    /// As a metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Proof::Sasl => "sasl-external",
            Proof::Dialback => "dialback",
        }
    }
}

/// Open a stream to `domain` at the first of `servers` that answers, and prove our domain
/// on it, all within the context's auth timeout.
pub(crate) async fn connect(
    ctx: &Ctx,
    domain: &str,
    servers: &[SocketAddr],
) -> Result<(Conn, Proof), StreamError> {
    let policy = ctx
        .policy(domain)
        .ok_or_else(|| StreamError::Protocol(format!("{domain} is not federated with")))?;
    tokio::time::timeout(ctx.auth_timeout, async {
        let mut last = StreamError::Protocol(format!("no XMPP server known for {domain}"));
        for addr in servers {
            let tcp = match TcpStream::connect(addr).await {
                Ok(t) => t,
                Err(e) => {
                    last = StreamError::Io(format!("{addr}: {e}"));
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let mut conn = Conn::new(tcp, ctx.max_stanza, &ctx.domain);
            // TLS with the server's certificate checked; where the domain may prove itself
            // by dialback, TLS for encryption alone when the check fails (or cannot be
            // made), then dialback (XEP-0220 over TLS).
            let strict = ctx.client_tls.as_ref().or(ctx
                .client_tls_any
                .as_ref()
                .filter(|_| policy.allow_dialback));
            match open_out(ctx, &mut conn, domain, &policy, strict).await {
                Ok(p) => return Ok((conn, p)),
                Err(StreamError::Certificate(why))
                    if policy.allow_dialback && ctx.client_tls.is_some() =>
                {
                    tracing::info!(to = domain, error = %why, "certificate not verified; TLS for encryption and dialback");
                    let Ok(tcp) = TcpStream::connect(addr).await else {
                        last = StreamError::Certificate(why);
                        continue;
                    };
                    let _ = tcp.set_nodelay(true);
                    let mut conn = Conn::new(tcp, ctx.max_stanza, &ctx.domain);
                    match open_out(ctx, &mut conn, domain, &policy, ctx.client_tls_any.as_ref())
                        .await
                    {
                        Ok(p) => return Ok((conn, p)),
                        Err(e) => {
                            conn.fail(&e).await;
                            last = e;
                        }
                    }
                }
                Err(e) => {
                    conn.fail(&e).await;
                    last = e;
                }
            }
        }
        Err(last)
    })
    .await
    .map_err(|_| {
        StreamError::Timeout(format!(
            "no stream to {domain} proved within {:?}",
            ctx.auth_timeout
        ))
    })?
}

/// Open, secure and prove an outbound stream on `conn`.
async fn open_out(
    ctx: &Ctx,
    conn: &mut Conn,
    domain: &str,
    policy: &XmppPolicy,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Proof, StreamError> {
    conn.send_header(&stanza::open(&ctx.domain, Some(domain), None))
        .await?;
    conn.read_header().await?;
    let mut f = features(conn).await?;
    if f.child(NS_TLS, "starttls").is_some()
        && let Some(tls) = tls
    {
        starttls(ctx, conn, domain, tls).await?;
        f = features(conn).await?;
    }
    if policy.require_tls && !conn.tls() {
        return Err(StreamError::Protocol(format!(
            "{domain} offers no TLS, and its policy requires TLS"
        )));
    }
    let external = f.child(NS_SASL, "mechanisms").is_some_and(|m| {
        m.children
            .iter()
            .any(|c| c.text.eq_ignore_ascii_case("EXTERNAL"))
    });
    if conn.tls() && external {
        // Our domain is in our certificate: the authorization identity is left to it ("=").
        let mut auth = crate::ssp::xml::Element::new("auth").with_text("=");
        auth.attrs.push(("xmlns".into(), NS_SASL.into()));
        auth.attrs.push(("mechanism".into(), "EXTERNAL".into()));
        conn.write(&stanza::write(&auth)).await?;
        let answer = conn.stanza().await?;
        if answer.is(NS_SASL, "success") {
            conn.restart();
            conn.send_header(&stanza::open(&ctx.domain, Some(domain), None))
                .await?;
            conn.read_header().await?;
            let _ = features(conn).await?;
            return Ok(Proof::Sasl);
        }
        tracing::info!(to = domain, "SASL EXTERNAL refused; dialback if allowed");
    }
    if !policy.allow_dialback {
        return Err(StreamError::Protocol(format!(
            "{domain} did not take our certificate, and dialback is not allowed with it"
        )));
    }
    if f.child(NS_DIALBACK_FEATURE, "dialback").is_none() && conn.header.v1 {
        return Err(StreamError::Protocol(format!(
            "{domain} offers neither SASL EXTERNAL for our certificate nor dialback"
        )));
    }
    let id =
        conn.header.id.clone().ok_or_else(|| {
            StreamError::Protocol("no stream ID from the receiving server".into())
        })?;
    let key = ctx.key(domain, &ctx.domain, &id);
    let mut r = crate::ssp::xml::Element::new("db:result").with_text(key);
    r.attrs.push(("from".into(), ctx.domain.clone()));
    r.attrs.push(("to".into(), domain.to_owned()));
    conn.write(&stanza::write(&r)).await?;
    loop {
        let s = conn.stanza().await?;
        if !s.is(NS_DIALBACK, "result") {
            // Nothing else is due before the verdict; a server may still send a ping.
            continue;
        }
        return match s.attr("type") {
            Some("valid") => Ok(Proof::Dialback),
            other => Err(StreamError::Protocol(format!(
                "{domain} found our dialback key {}",
                other.unwrap_or("unanswered")
            ))),
        };
    }
}

/// STARTTLS on `conn` with `tls`, and the stream restarted (our header sent, theirs read;
/// the features are the caller's to read).
async fn starttls(
    ctx: &Ctx,
    conn: &mut Conn,
    domain: &str,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<(), StreamError> {
    conn.write(&stanza::empty("starttls", NS_TLS, &[])).await?;
    let answer = conn.stanza().await?;
    if !answer.is(NS_TLS, "proceed") {
        return Err(StreamError::Protocol(format!(
            "STARTTLS refused by {domain}"
        )));
    }
    let tcp = conn.take_tcp()?;
    let name = ServerName::try_from(domain.to_owned())
        .map_err(|e| StreamError::Protocol(format!("{domain}: {e}")))?;
    let s = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| StreamError::Certificate(format!("TLS with {domain}: {e}")))?;
    conn.io = Io::Tls(Box::new(tokio_rustls::TlsStream::Client(s)));
    conn.restart();
    conn.send_header(&stanza::open(&ctx.domain, Some(domain), None))
        .await?;
    conn.read_header().await
}

/// Check, as the receiving server, the dialback `key` that `domain` gave on our stream `id`:
/// ask its authoritative server at `servers` (XEP-0220 §2.2).
pub(crate) async fn verify(
    ctx: &Ctx,
    domain: &str,
    servers: &[SocketAddr],
    id: &str,
    key: &str,
) -> Result<bool, StreamError> {
    tokio::time::timeout(ctx.auth_timeout, async {
        let mut last = StreamError::Protocol(format!("no XMPP server known for {domain}"));
        for addr in servers {
            let tcp = match TcpStream::connect(addr).await {
                Ok(t) => t,
                Err(e) => {
                    last = StreamError::Io(format!("{addr}: {e}"));
                    continue;
                }
            };
            let mut conn = Conn::new(tcp, ctx.max_stanza, &ctx.domain);
            let asked = async {
                conn.send_header(&stanza::open(&ctx.domain, Some(domain), None))
                    .await?;
                conn.read_header().await?;
                let f = features(&mut conn).await?;
                // A server that wants TLS first gets it (for encryption: what is asked is
                // only whether a key is its own).
                if f.child(NS_TLS, "starttls").is_some()
                    && let Some(tls) = &ctx.client_tls_any
                {
                    starttls(ctx, &mut conn, domain, tls).await?;
                    let _ = features(&mut conn).await?;
                }
                let mut v = crate::ssp::xml::Element::new("db:verify").with_text(key);
                v.attrs.push(("from".into(), ctx.domain.clone()));
                v.attrs.push(("to".into(), domain.to_owned()));
                v.attrs.push(("id".into(), id.to_owned()));
                conn.write(&stanza::write(&v)).await?;
                loop {
                    let s = conn.stanza().await?;
                    if s.is(NS_DIALBACK, "verify") && s.attr("id") == Some(id) {
                        return Ok(s.attr("type") == Some("valid"));
                    }
                }
            }
            .await;
            match asked {
                Ok(v) => {
                    conn.close().await;
                    return Ok(v);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    })
    .await
    .map_err(|_| StreamError::Timeout(format!("{domain} did not answer a dialback check")))?
}

/// What a stream opened to us hands the translator.
#[derive(Debug)]
pub(crate) enum Event {
    /// A stanza from `domain`, which the stream proved.
    Stanza {
        /// The proved domain its `from` is in.
        domain: String,
        /// The stanza.
        stanza: Stanza,
    },
    /// Check a dialback key `domain` gave on our stream `id`; the answer to `reply`.
    Verify {
        /// The domain that claims it.
        domain: String,
        /// Our stream's ID.
        id: String,
        /// The key.
        key: String,
        /// Whether it is valid (`None`: it could not be checked now).
        reply: oneshot::Sender<Option<bool>>,
    },
    /// A stream opened or closed (for the gauge): +1 or -1.
    Streams(i64),
    /// A stream proved a domain this way.
    Proved(Proof),
}

/// Serve a stream another server opened to us on `tcp`, until it ends, handing what it
/// proves and sends to `events`.
/// `stop` turning true ends it with `system-shutdown`.
pub(crate) async fn serve(
    ctx: Arc<Ctx>,
    tcp: TcpStream,
    events: mpsc::Sender<Event>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let _ = events.try_send(Event::Streams(1));
    let mut conn = Conn::new(tcp, ctx.max_stanza, &ctx.domain);
    let outcome = Inbound {
        ctx: &ctx,
        events: &events,
        authed: HashSet::new(),
        verifying: HashSet::new(),
        id: String::new(),
        stop,
        chain_ok: None,
        auth_failures: 0,
    }
    .run(&mut conn)
    .await;
    match outcome {
        Ok(()) => conn.close().await,
        Err(StreamError::Closed) => conn.close().await,
        Err(e) => {
            tracing::info!(error = %e, "inbound XMPP stream ended");
            conn.fail(&e).await;
        }
    }
    let _ = events.try_send(Event::Streams(-1));
}

struct Inbound<'a> {
    ctx: &'a Ctx,
    events: &'a mpsc::Sender<Event>,
    /// The domains this stream proved.
    authed: HashSet<String>,
    /// The domains whose dialback keys are being checked (one check each at a time).
    verifying: HashSet<String>,
    /// Our stream ID (the one dialback keys are made for).
    id: String,
    /// The gateway is stopping.
    stop: tokio::sync::watch::Receiver<bool>,
    /// Whether the certificate of this TLS session chains to our anchors (checked once).
    chain_ok: Option<bool>,
    /// SASL EXTERNAL attempts refused on this stream.
    auth_failures: u8,
}

/// SASL EXTERNAL attempts refused before the stream is ended (each may cost a chain check).
const MAX_AUTH_FAILURES: u8 = 2;

/// Dialback checks one stream may have under way at once: each costs a lookup and a
/// connection to the claimed domain, so a stream must not make the gateway a reflector.
const MAX_VERIFYING: usize = 4;

impl Inbound<'_> {
    async fn run(&mut self, conn: &mut Conn) -> Result<(), StreamError> {
        let mut deadline = tokio::time::Instant::now() + self.ctx.auth_timeout;
        // Dialback verdicts come back from checks that run beside the stream.
        let (mut vtx, mut vrx) = mpsc::channel::<(String, Option<bool>)>(MAX_VERIFYING);
        'restart: loop {
            let h = tokio::time::timeout_at(deadline, conn.read_header())
                .await
                .map_err(|_| StreamError::Timeout("no stream header in time".into()))?;
            h?;
            match conn.header.to.as_deref() {
                Some(to) if to == self.ctx.domain => {}
                other => {
                    // The error follows a header of ours (RFC 6120 §4.9.1.2).
                    let text = format!("the stream is for {:?}", other.unwrap_or(""));
                    conn.send_header(&stanza::open(&self.ctx.domain, None, Some("0")))
                        .await?;
                    return Err(refused("host-unknown", text));
                }
            }
            self.id = format!("{:032x}", rand::random::<u128>());
            let from = conn.header.from.clone();
            conn.send_header(&stanza::open(
                &self.ctx.domain,
                from.as_deref(),
                Some(&self.id),
            ))
            .await?;
            if conn.header.v1 {
                let mut f = crate::ssp::xml::Element::new("stream:features");
                if self.authed.is_empty() {
                    if !conn.tls() && self.ctx.server_tls.is_some() {
                        f = f.with_child(stanza::ns_el("starttls", NS_TLS));
                    }
                    if conn.tls() && !conn.certs.is_empty() && self.ctx.anchors.is_some() {
                        f = f.with_child(stanza::ns_el("mechanisms", NS_SASL).with_child(
                            crate::ssp::xml::Element::new("mechanism").with_text("EXTERNAL"),
                        ));
                    }
                    f = f.with_child(stanza::ns_el("dialback", NS_DIALBACK_FEATURE));
                }
                conn.write(&stanza::write(&f)).await?;
            }
            loop {
                let s = tokio::select! {
                    s = conn.stanza() => s?,
                    _ = self.stop.changed() => {
                        return Err(refused("system-shutdown", "the gateway is stopping"));
                    }
                    Some((domain, valid)) = vrx.recv() => {
                        self.verifying.remove(&domain);
                        let mut r = crate::ssp::xml::Element::new("db:result");
                        r.attrs.push(("from".into(), self.ctx.domain.clone()));
                        r.attrs.push(("to".into(), domain.clone()));
                        let kind = match valid {
                            Some(true) => "valid",
                            Some(false) => "invalid",
                            // Not checked (too many checks under way): an error to try
                            // again later, not a verdict on the key (XEP-0220 §2.4).
                            None => "error",
                        };
                        r.attrs.push(("type".into(), kind.into()));
                        if valid.is_none() {
                            let mut e = crate::ssp::xml::Element::new("error");
                            e.attrs.push(("type".into(), "wait".into()));
                            r = r.with_child(
                                e.with_child(stanza::ns_el("resource-constraint", stanza::NS_STANZAS)),
                            );
                        }
                        conn.write(&stanza::write(&r)).await?;
                        if valid == Some(true) {
                            tracing::debug!(from = %domain, "inbound XMPP stream proved by dialback");
                            let _ = self.events.try_send(Event::Proved(Proof::Dialback));
                            self.authed.insert(domain);
                        }
                        continue;
                    }
                    () = tokio::time::sleep_until(deadline), if self.authed.is_empty() => {
                        return Err(refused("not-authorized", "the stream was not proved in time"));
                    }
                };
                if s.is(NS_TLS, "starttls") {
                    let Some(tls) = self.ctx.server_tls.clone().filter(|_| !conn.tls()) else {
                        conn.write(&stanza::empty("failure", NS_TLS, &[])).await?;
                        return Err(refused("policy-violation", "STARTTLS was not offered"));
                    };
                    conn.write(&stanza::empty("proceed", NS_TLS, &[])).await?;
                    let tcp = conn.take_tcp()?;
                    let s = tokio::time::timeout_at(
                        deadline,
                        tokio_rustls::TlsAcceptor::from(tls).accept(tcp),
                    )
                    .await
                    .map_err(|_| StreamError::Timeout("TLS handshake".into()))?
                    .map_err(|e| StreamError::Io(format!("TLS: {e}")))?;
                    conn.certs = s
                        .get_ref()
                        .1
                        .peer_certificates()
                        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                        .unwrap_or_default();
                    conn.io = Io::Tls(Box::new(tokio_rustls::TlsStream::Server(s)));
                    conn.restart();
                    // Nothing learned before TLS counts after it (RFC 6120 §5.4.3.3).
                    self.authed.clear();
                    self.chain_ok = None;
                    self.verifying.clear();
                    (vtx, vrx) = mpsc::channel(MAX_VERIFYING);
                    continue 'restart;
                }
                if s.is(NS_SASL, "auth") {
                    match self.external(conn, &s) {
                        Ok(domain) => {
                            conn.write(&stanza::empty("success", NS_SASL, &[])).await?;
                            tracing::debug!(from = %domain, "inbound XMPP stream proved by SASL EXTERNAL");
                            let _ = self.events.try_send(Event::Proved(Proof::Sasl));
                            self.authed.insert(domain);
                            conn.restart();
                            // The restarted header has its own time: the proof is made.
                            deadline = tokio::time::Instant::now() + self.ctx.auth_timeout;
                            continue 'restart;
                        }
                        Err(why) => {
                            tracing::info!(why = %why, "SASL EXTERNAL refused");
                            self.auth_failures += 1;
                            if self.auth_failures > MAX_AUTH_FAILURES {
                                return Err(refused("not-authorized", "SASL EXTERNAL failed"));
                            }
                            let mut f = stanza::ns_el("failure", NS_SASL);
                            f = f.with_child(crate::ssp::xml::Element::new("not-authorized"));
                            conn.write(&stanza::write(&f)).await?;
                            continue;
                        }
                    }
                }
                if s.is(NS_DIALBACK, "verify") {
                    // We are the authoritative server: was this key ours, for that stream?
                    let (Some(from), Some(id)) = (s.attr("from"), s.attr("id")) else {
                        return Err(refused("bad-format", "a db:verify without from or id"));
                    };
                    let ours = self
                        .ctx
                        .key(&from.to_ascii_lowercase(), &self.ctx.domain, id);
                    let valid = crate::token::same_secret(s.el.text.as_bytes(), ours.as_bytes());
                    let mut r = crate::ssp::xml::Element::new("db:verify");
                    r.attrs.push(("from".into(), self.ctx.domain.clone()));
                    r.attrs.push(("to".into(), from.to_owned()));
                    r.attrs.push(("id".into(), id.to_owned()));
                    r.attrs.push((
                        "type".into(),
                        if valid { "valid" } else { "invalid" }.into(),
                    ));
                    conn.write(&stanza::write(&r)).await?;
                    continue;
                }
                if s.is(NS_DIALBACK, "result") {
                    self.dialback(conn, &s, &vtx).await?;
                    continue;
                }
                if s.ns == NS_SERVER && matches!(s.local.as_str(), "message" | "presence" | "iq") {
                    let domain = self.proved_sender(&s)?;
                    if self
                        .events
                        .send(Event::Stanza { domain, stanza: s })
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                    continue;
                }
                return Err(refused(
                    "unsupported-stanza-type",
                    format!("<{}>", s.el.name),
                ));
            }
        }
    }

    /// SASL EXTERNAL: the domain the presented certificate proves, or why not.
    fn external(&mut self, conn: &Conn, s: &Stanza) -> Result<String, String> {
        if s.attr("mechanism") != Some("EXTERNAL") {
            return Err(format!("mechanism {:?}", s.attr("mechanism")));
        }
        let authzid = match s.el.text.as_str() {
            "" | "=" => None,
            t => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(t)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or("an authorization identity that is not base64 UTF-8")?,
            ),
        };
        let domain = authzid
            .or_else(|| conn.header.from.clone())
            .ok_or("no domain claimed")?
            .to_ascii_lowercase();
        let (Some(anchors), Some((ee, _))) = (&self.ctx.anchors, conn.certs.split_first()) else {
            return Err("no certificate".into());
        };
        // The cheap checks first; the chain once per TLS session.
        if self.ctx.policy(&domain).is_none() {
            return Err(format!("{domain} is not federated with"));
        }
        if !crate::tls::cert_names_domain(ee, &domain) {
            return Err(format!("the certificate does not name {domain}"));
        }
        let chains = *self
            .chain_ok
            .get_or_insert_with(|| crate::tls::server_chain_ok(anchors, &conn.certs));
        if !chains {
            return Err(format!(
                "{domain}'s certificate does not chain to our anchors"
            ));
        }
        Ok(domain)
    }

    /// A dialback key given to us: checked with its domain's authoritative server, beside
    /// the stream; the verdict comes back through `verdicts`.
    async fn dialback(
        &mut self,
        conn: &mut Conn,
        s: &Stanza,
        verdicts: &mpsc::Sender<(String, Option<bool>)>,
    ) -> Result<(), StreamError> {
        let (Some(from), Some(to)) = (s.attr("from"), s.attr("to")) else {
            return Err(refused("bad-format", "a db:result without from or to"));
        };
        let domain = from.to_ascii_lowercase();
        let refuse = match self.ctx.policy(&domain) {
            _ if to.to_ascii_lowercase() != self.ctx.domain => Some("item-not-found"),
            None => Some("not-allowed"),
            Some(p) if !p.allow_dialback => Some("not-allowed"),
            Some(p) if p.require_tls && !conn.tls() => Some("policy-violation"),
            Some(_) => None,
        };
        if let Some(cond) = refuse {
            tracing::info!(from = %domain, condition = cond, "dialback refused by policy");
            let mut r = crate::ssp::xml::Element::new("db:result");
            r.attrs.push(("from".into(), self.ctx.domain.clone()));
            r.attrs.push(("to".into(), domain));
            r.attrs.push(("type".into(), "error".into()));
            let mut e = crate::ssp::xml::Element::new("error");
            e.attrs.push(("type".into(), "cancel".into()));
            let e = e.with_child(stanza::ns_el(
                match cond {
                    "item-not-found" => "item-not-found",
                    "policy-violation" => "policy-violation",
                    _ => "not-allowed",
                },
                stanza::NS_STANZAS,
            ));
            conn.write(&stanza::write(&r.with_child(e))).await?;
            return Ok(());
        }
        if self.authed.contains(&domain) || self.verifying.contains(&domain) {
            // Proved already, or being checked: a repeat is not checked again.
            return Ok(());
        }
        if self.verifying.len() >= MAX_VERIFYING {
            return Err(refused(
                "policy-violation",
                "too many dialback checks at once on one stream",
            ));
        }
        self.verifying.insert(domain.clone());
        let (tx, rx) = oneshot::channel();
        let ev = Event::Verify {
            domain: domain.clone(),
            id: self.id.clone(),
            key: s.el.text.clone(),
            reply: tx,
        };
        if self.events.send(ev).await.is_err() {
            return Ok(());
        }
        let verdicts = verdicts.clone();
        tokio::spawn(async move {
            let valid = rx.await.unwrap_or(None);
            let _ = verdicts.send((domain, valid)).await;
        });
        Ok(())
    }

    /// The proved domain a stanza's `from` is in (RFC 6120 §13.7.1.2: a stream may only
    /// carry stanzas from domains it proved), and that it is for us.
    fn proved_sender(&self, s: &Stanza) -> Result<String, StreamError> {
        if self.authed.is_empty() {
            return Err(refused(
                "not-authorized",
                "a stanza before the stream was proved",
            ));
        }
        let from = s
            .attr("from")
            .and_then(stanza::Jid::parse)
            .ok_or_else(|| refused("improper-addressing", "no usable from"))?;
        if !self.authed.contains(&from.domain) {
            return Err(refused(
                "invalid-from",
                format!("{} was not proved on this stream", from.domain),
            ));
        }
        let to = s
            .attr("to")
            .and_then(stanza::Jid::parse)
            .ok_or_else(|| refused("improper-addressing", "no usable to"))?;
        if to.domain != self.ctx.domain {
            return Err(refused(
                "host-unknown",
                format!("a stanza for {}", to.domain),
            ));
        }
        Ok(from.domain)
    }
}
