//! A test double for a **running Baraza IMPS server** (`blamba-de/baraza` at `f1b933e` on Kannel
//! 1.4.5) as it behaves on the wire, so end-to-end tests can put the gateway opposite "Baraza"
//! without running the real thing.
//!
//! Ground truth is the exact HTTP bytes of a live Baraza, captured (capture numbers below are
//! those of the capture run; the bodies are in `gateway/tests/fixtures/baraza/` and the unit
//! tests below hold whole messages); what it does is summed up in `gateway/PROTOCOL.md` §9,
//! the association in §3.
//!
//! * **Server** (HTTPS on `127.0.0.1`, TLS 1.2/1.3, self-signed certificate for `imps.<domain>`
//!   and `<domain>`, see [`BarazaPeer::cert_der`]): every SSP POST (Content-Type starting
//!   `application/vnd.wv.ssp+xml`) is acked *first* with Kannel's empty `200` (002: `Server`,
//!   `Date`, `Content-Length: 0`, and the duplicated `Connection: Close` / `Connection:
//!   keep-alive` when the request said `close`); the SSP answer follows later as a separate POST
//!   (strictly async, never in a response body). Unparseable XML or an unknown top element gives
//!   an empty `400` (063). An unknown session (052), a wrong digest (072), a `SetupTransaction`
//!   that matches no association, or a non-SSP Content-Type (074) closes the TCP connection
//!   without any HTTP response. Keep-alive connections serve any number of requests.
//! * **Association, both roles** (the four-step login; responder 001–013 and 090–101, initiator
//!   034–045): `SendSecretToken` carries the peer's own row id as `transactionID` (and in
//!   `x-wv-transactionid`), Baraza's `procotolVersion` typo and a newline-padded 32-hex token;
//!   an initiator's `SendSecretToken` Response is matched by domain, not tid; digests are
//!   `base64(MD5(other side's token))` written with Kannel's `\r\n` layout; session IDs are
//!   `<row>@<domain>`, and each side writes its **own** session ID in `Session@sessionID`.
//! * **Session traffic**: `SendMessageRequest` is delivered to configured local users (local
//!   name or `+MSISDN` local part, Baraza splits IDs at `@`) and answered like 016; an unknown
//!   recipient gets 900/427 `invalid userid` (056); a Sender/Requestor outside the session peer's
//!   domain gets a bare `<Status code="901"/>` (060); `GetPresenceRequest` gets an empty
//!   `GetPresenceResponse` (066).
//! * **Client** (what Baraza originates, 004/034/046): the exact header set and order, no SNI, no
//!   client certificate, no verification of the server certificate (handshake signatures are
//!   still checked), one keep-alive connection reused, `<?xml version='1.0'?>` bodies laid out
//!   byte for byte like the captures (the unit tests compare against them).
//!
//! Not reproduced: the SRV lookup and the HTTPS→HTTP fallback (the peer URL comes from
//! [`BarazaPeer::set_peer`]), the Kannel crash on a half-closed HTTPS probe, the `DateTime`
//! month corruption (the peer writes the correct date), queue retry delays, and the CSP side.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use md5::{Digest as _, Md5};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use ssp_gateway::ssp::{Body, Codec, Mode, Primitive, Session, SetupPrimitive, SetupTransaction};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{debug, info, warn};

/// The namespace Baraza writes.
const NS: &str = "http://www.openmobilealliance.org/DTD/WV-SSP1.3";
/// Kannel routes a POST to the SSP handler only with this Content-Type prefix.
const SSP_CONTENT_TYPE: &str = "application/vnd.wv.ssp+xml";
/// Baraza's `User-Agent`.
const USER_AGENT: &str = "Baraza IMPS -- http://www.baraza.im";
/// Baraza's `timeToLive`.
const TTL: &str = "86400";
/// The bound of every wait: connect, TLS handshake, one HTTP exchange, an association, an answer.
const DEADLINE: Duration = Duration::from_secs(10);
/// How long an idle server-side keep-alive connection is kept.
const IDLE: Duration = Duration::from_secs(60);
/// Largest HTTP head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest HTTP body accepted.
const MAX_BODY: usize = 1024 * 1024;

/// What the peer is: its domain and its local users.
#[derive(Debug, Clone)]
pub struct BarazaPeerConfig {
    /// The domain it serves, e.g. `b.test`.
    pub domain: String,
    /// Local users: (local name, MSISDN like `+4915112345678`). A recipient matches by
    /// `wv:<name>@<domain>` or `wv:<msisdn>@<domain>`.
    pub users: Vec<(String, String)>,
    /// As responder, the time between answering an opening step and having stored its half
    /// of the association: a step of the initiator's that arrives sooner is dropped (the
    /// connection closed without an HTTP answer), as a live Baraza does within about a
    /// millisecond (the live run's 0105-0113). `None`: stored at once.
    pub commit_race: Option<Duration>,
}

impl BarazaPeerConfig {
    /// A peer for `domain` with these users, storing at once.
    pub fn new(domain: &str, users: &[(&str, &str)]) -> BarazaPeerConfig {
        BarazaPeerConfig {
            domain: domain.to_owned(),
            users: users
                .iter()
                .map(|(n, m)| ((*n).to_owned(), (*m).to_owned()))
                .collect(),
            commit_race: None,
        }
    }
}

/// A message delivered to one of the peer's local users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The local user's name (even when addressed by MSISDN).
    pub to_local: String,
    /// The sender's ID as it arrived (`Sender/User@userID`, else the Requestor), e.g.
    /// `wv:alice@a.test`.
    pub from_id: String,
    /// The content, base64-decoded.
    pub text: String,
}

/// Which way a [`WireEntry`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireDirection {
    /// Bytes the peer received (requests to its server, responses to its client).
    In,
    /// Bytes the peer sent (acks from its server, requests from its client).
    Out,
    /// The server closed a connection without any HTTP response; `raw` holds the reason.
    Closed,
}

/// One HTTP message (head and body) seen by the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireEntry {
    /// Direction.
    pub direction: WireDirection,
    /// The exact bytes (lossy UTF-8), or the reason for [`WireDirection::Closed`].
    pub raw: String,
}

impl WireEntry {
    /// The HTTP body (after the blank line), or `""`.
    pub fn body(&self) -> &str {
        self.raw
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or("")
    }
}

/// The Baraza test peer. Dropping it stops its tasks; [`BarazaPeer::shutdown`] also waits.
pub struct BarazaPeer {
    inner: Arc<Inner>,
    accept_task: JoinHandle<()>,
    client_task: JoinHandle<()>,
}

impl BarazaPeer {
    /// Bind `127.0.0.1:0` with TLS and start serving.
    pub async fn start(cfg: BarazaPeerConfig) -> anyhow::Result<BarazaPeer> {
        let domain = cfg.domain.trim().to_ascii_lowercase();
        if domain.is_empty() || domain.contains(['@', '/', ' ']) {
            bail!("invalid domain {:?}", cfg.domain);
        }
        let provider = ssp_gateway::tls::provider();
        let ck = rcgen::generate_simple_self_signed(vec![format!("imps.{domain}"), domain.clone()])
            .context("generating the certificate")?;
        let cert_der = ck.cert.der().to_vec();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
        let server_cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(cert_der.clone())], key)?;
        // Kannel's client: no SNI, no client certificate, any server certificate.
        let mut client_cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
            .with_no_client_auth();
        client_cfg.enable_sni = false;

        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            domain,
            users: cfg.users,
            addr,
            cert_der,
            codec: Codec::default(),
            connector: TlsConnector::from(Arc::new(client_cfg)),
            out_tx,
            state: Mutex::new(State::default()),
            wire: Mutex::new(Vec::new()),
            received: Mutex::new(Vec::new()),
            changed: Notify::new(),
            assoc_lock: tokio::sync::Mutex::new(()),
            msg_seq: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            commit_race: cfg.commit_race,
        });
        let acceptor = TlsAcceptor::from(Arc::new(server_cfg));
        let accept_task = tokio::spawn(accept_loop(inner.clone(), listener, acceptor));
        let client_task = tokio::spawn(client_loop(inner.clone(), out_rx));
        info!(domain = %inner.domain, %addr, "Baraza peer listening");
        Ok(BarazaPeer {
            inner,
            accept_task,
            client_task,
        })
    }

    /// Its SSP URL, `https://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("https://{}/", self.inner.addr)
    }

    /// Its domain.
    pub fn domain(&self) -> &str {
        &self.inner.domain
    }

    /// Its server certificate (DER), valid for `imps.<domain>` and `<domain>`.
    pub fn cert_der(&self) -> Vec<u8> {
        self.inner.cert_der.clone()
    }

    /// The other side: its domain and SSP URL (`https://…` or `http://…`). This stands in for
    /// Baraza's SRV lookup; the last peer set is also used for any domain without its own URL.
    pub fn set_peer(&self, domain: &str, url: &str) {
        let domain = domain.trim().to_ascii_lowercase();
        let mut s = lock(&self.inner.state);
        s.peers.insert(domain.clone(), url.to_owned());
        s.default_peer = Some(domain);
    }

    /// Run the initiator role with the peer set by [`BarazaPeer::set_peer`] now (034–045),
    /// bounded by a deadline. Fails on a wrong digest, a refused POST or a timeout.
    pub async fn associate(&self) -> anyhow::Result<()> {
        let domain = self.peer_domain()?;
        let _guard = timeout(DEADLINE, self.inner.assoc_lock.lock())
            .await
            .map_err(|_| anyhow!("another association did not finish in time"))?;
        self.inner.associate(&domain).await
    }

    /// Whether a complete association (opened by either side) exists with the peer's domain.
    pub fn is_associated(&self) -> bool {
        self.peer_domain()
            .is_ok_and(|d| self.inner.session_for(&d).is_some())
    }

    /// Send an IM from local user `from_local` (name or MSISDN) to `to_user_id` (`wv:` optional)
    /// like 046, associating first if needed, and return the primitive of the async answer
    /// (`SendMessageResponse`, or a bare `Status`).
    pub async fn send_message(
        &self,
        from_local: &str,
        to_user_id: &str,
        text: &str,
    ) -> anyhow::Result<Primitive> {
        self.message(from_local, to_user_id, text, false).await
    }

    /// [`BarazaPeer::send_message`], asking for a delivery report.
    pub async fn send_message_with_report(
        &self,
        from_local: &str,
        to_user_id: &str,
        text: &str,
    ) -> anyhow::Result<Primitive> {
        self.message(from_local, to_user_id, text, true).await
    }

    async fn message(
        &self,
        from_local: &str,
        to_user_id: &str,
        text: &str,
        report: bool,
    ) -> anyhow::Result<Primitive> {
        let inner = &self.inner;
        let from = self.from(from_local)?;
        let to = format!("wv:{}", strip_wv(to_user_id));
        let mid = inner.new_message_id();
        self.request(&to, |sid, tid| {
            body_send_message_request(
                sid,
                tid,
                &inner.domain,
                &from,
                &to,
                &mid,
                text,
                &iso8601(now_secs()),
                report,
            )
        })
        .await
    }

    /// A presence subscription of local user `from_local` to `presentity`, as Baraza writes
    /// it (run2 0040); the answer (Baraza's peers answer with a bare `Status`).
    pub async fn subscribe(&self, from_local: &str, presentity: &str) -> anyhow::Result<Primitive> {
        let from = self.from(from_local)?;
        let to = format!("wv:{}", strip_wv(presentity));
        let domain = self.inner.domain.clone();
        self.request(&to, |sid, tid| {
            body_subscribe(sid, tid, &domain, &from, &to)
        })
        .await
    }

    /// A presence fetch from local user `from_local` for `presentity`, as Baraza writes it
    /// (run2 0053: `VerUserID`, an attribute list of `(null)`); the answer.
    pub async fn get_presence(
        &self,
        from_local: &str,
        presentity: &str,
    ) -> anyhow::Result<Primitive> {
        let from = self.from(from_local)?;
        let to = format!("wv:{}", strip_wv(presentity));
        let domain = self.inner.domain.clone();
        self.request(&to, |sid, tid| {
            body_get_presence(sid, tid, &domain, &from, &to)
        })
        .await
    }

    /// A presence notification of local user `from_local` to `watcher`, as Baraza writes it
    /// (run2 0032: no MetaInfo, the watcher without `wv:`); the answer.
    pub async fn notify(
        &self,
        from_local: &str,
        watcher: &str,
        status_text: &str,
    ) -> anyhow::Result<Primitive> {
        let from = self.from(from_local)?;
        self.request(watcher, |sid, tid| {
            body_notification(sid, tid, &from, watcher, status_text)
        })
        .await
    }

    fn from(&self, local: &str) -> anyhow::Result<String> {
        self.inner
            .local_sender_id(local)
            .ok_or_else(|| anyhow!("{local:?} is not a local user of {}", self.inner.domain))
    }

    /// POST one session request to the domain of `to` (associating first if needed) and
    /// wait for its async answer; `body` is made from our session ID and the transaction ID.
    async fn request(
        &self,
        to: &str,
        body: impl FnOnce(&str, &str) -> String,
    ) -> anyhow::Result<Primitive> {
        let inner = &self.inner;
        let to_domain = id_domain(to).to_ascii_lowercase();
        if to_domain.is_empty() {
            bail!("{to:?} has no domain");
        }
        let (our_sid, _) = {
            let _guard = timeout(DEADLINE, inner.assoc_lock.lock())
                .await
                .map_err(|_| anyhow!("another association did not finish in time"))?;
            match inner.session_for(&to_domain) {
                Some(s) => s,
                None => {
                    inner.associate(&to_domain).await?;
                    inner
                        .session_for(&to_domain)
                        .ok_or_else(|| anyhow!("association with {to_domain} vanished"))?
                }
            }
        };
        let (tid, answer_rx) = {
            let mut s = lock(&inner.state);
            s.next_queue += 1;
            // `%010lld-%lld`: queue id, recipient row.
            let tid = format!("{:010}-0", s.next_queue);
            let (tx, rx) = oneshot::channel();
            s.pending.insert(tid.clone(), tx);
            (tid, rx)
        };
        let body = body(&our_sid, &tid);
        let deadline = Instant::now() + DEADLINE;
        let result = async {
            let (done_tx, done_rx) = oneshot::channel();
            let req = OutReq::new(to_domain.clone(), body)
                .with_tid(tid.clone())
                .with_sid(our_sid.clone())
                .with_done(done_tx);
            inner
                .out_tx
                .send(req)
                .map_err(|_| anyhow!("the peer is shut down"))?;
            timeout_at(deadline, done_rx)
                .await
                .map_err(|_| anyhow!("POST of {tid} timed out"))?
                .map_err(|_| anyhow!("the client task is gone"))??;
            timeout_at(deadline, answer_rx)
                .await
                .map_err(|_| anyhow!("no answer to transaction {tid} within {DEADLINE:?}"))?
                .map_err(|_| anyhow!("answer to {tid} dropped"))
        }
        .await;
        if result.is_err() {
            lock(&inner.state).pending.remove(&tid);
        }
        result
    }

    /// Messages delivered to local users so far.
    pub fn received(&self) -> Vec<ReceivedMessage> {
        lock(&self.inner.received).clone()
    }

    /// Wait (bounded by `within`) until at least `count` messages were delivered; returns them.
    pub async fn wait_received(
        &self,
        count: usize,
        within: Duration,
    ) -> anyhow::Result<Vec<ReceivedMessage>> {
        let inner = &self.inner;
        if inner
            .wait_until(within, || lock(&inner.received).len() >= count)
            .await
        {
            Ok(self.received())
        } else {
            bail!(
                "{} message(s) received within {within:?}, wanted {count}",
                lock(&inner.received).len()
            )
        }
    }

    /// Every HTTP message the peer sent and received, in order.
    pub fn wire_log(&self) -> Vec<WireEntry> {
        lock(&self.inner.wire).clone()
    }

    /// Stop serving and wait for the tasks to end.
    pub async fn shutdown(mut self) {
        self.accept_task.abort();
        self.client_task.abort();
        let _ = (&mut self.accept_task).await;
        let _ = (&mut self.client_task).await;
    }

    fn peer_domain(&self) -> anyhow::Result<String> {
        lock(&self.inner.state)
            .default_peer
            .clone()
            .ok_or_else(|| anyhow!("no peer set (call set_peer first)"))
    }
}

impl Drop for BarazaPeer {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.client_task.abort();
    }
}

/// Accepts any server certificate (Kannel does not verify), but still checks that the
/// handshake is signed by the key of the certificate presented.
#[derive(Debug)]
struct AnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

mod bodies;
mod framing;
mod ids;
mod server;
mod state;
#[cfg(test)]
mod tests;

use bodies::*;
use framing::*;
use ids::*;
use server::*;
use state::*;

use crate::dates::{iso8601, now_secs, rfc1123};
