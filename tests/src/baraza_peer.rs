//! A test double for a **running Baraza IMPS server** (`blamba-de/baraza` at `f1b933e` on Kannel
//! 1.4.5) as it behaves on the wire, so end-to-end tests can put the gateway opposite "Baraza"
//! without running the real thing.
//!
//! Ground truth is `/work/shared/reference/baraza-observed.md` and the exact HTTP bytes in
//! `/work/shared/reference/baraza-captures/` (capture numbers below refer to its `INDEX.txt`);
//! the association is profile section 3 (`/work/shared/spec/ssp-profile.md`).
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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
        let provider = Arc::new(rustls::crypto::ring::default_provider());
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
        let inner = &self.inner;
        let from = inner
            .local_sender_id(from_local)
            .ok_or_else(|| anyhow!("{from_local:?} is not a local user of {}", inner.domain))?;
        let to = format!("wv:{}", strip_wv(to_user_id));
        let to_domain = id_domain(&to).to_ascii_lowercase();
        if to_domain.is_empty() {
            bail!("{to_user_id:?} has no domain");
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
        let body = body_send_message_request(
            &our_sid,
            &tid,
            &inner.domain,
            &from,
            &to,
            &inner.new_message_id(),
            text,
            &iso8601(now_secs()),
        );
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

// ---------------------------------------------------------------------------------------------
// State

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Inner {
    domain: String,
    users: Vec<(String, String)>,
    addr: SocketAddr,
    cert_der: Vec<u8>,
    codec: Codec,
    connector: TlsConnector,
    out_tx: mpsc::UnboundedSender<OutReq>,
    state: Mutex<State>,
    wire: Mutex<Vec<WireEntry>>,
    received: Mutex<Vec<ReceivedMessage>>,
    /// Notified on every wire entry and delivery.
    changed: Notify,
    /// Serialises "associate if needed".
    assoc_lock: tokio::sync::Mutex<()>,
    msg_seq: AtomicU64,
    accepted: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Domain → SSP URL.
    peers: HashMap<String, String>,
    /// The domain of the last `set_peer`.
    default_peer: Option<String>,
    /// Last `ssp_sessions` row id handed out.
    next_row: u64,
    /// Last message queue id handed out.
    next_queue: u64,
    /// The `ssp_sessions` table.
    assocs: Vec<Assoc>,
    /// Initiator roles waiting for their association, by row.
    waiters: HashMap<u64, oneshot::Sender<Result<(), String>>>,
    /// Our session requests waiting for their answer, by transaction ID.
    pending: HashMap<String, oneshot::Sender<Primitive>>,
}

/// One association (a row of Baraza's `ssp_sessions`).
#[derive(Debug, Clone)]
struct Assoc {
    row: u64,
    /// The other side's domain.
    domain: String,
    /// We initiated.
    outgoing: bool,
    /// The initiator's transaction ID (ours is the row id).
    tid: String,
    our_token: String,
    their_token: Option<Vec<u8>>,
    /// Their digest of our token was checked.
    verified: bool,
    their_session: Option<String>,
    complete: bool,
}

impl Assoc {
    fn our_session(&self, our_domain: &str) -> String {
        format!("{}@{our_domain}", self.row)
    }
}

/// A POST for the client task.
struct OutReq {
    /// The domain whose URL it goes to.
    domain: String,
    tid_header: Option<String>,
    sid_header: Option<String>,
    body: String,
    done: Option<oneshot::Sender<anyhow::Result<()>>>,
}

impl OutReq {
    fn new(domain: impl Into<String>, body: String) -> OutReq {
        OutReq {
            domain: domain.into(),
            tid_header: None,
            sid_header: None,
            body,
            done: None,
        }
    }

    fn with_tid(mut self, tid: impl Into<String>) -> OutReq {
        self.tid_header = Some(tid.into());
        self
    }

    fn with_sid(mut self, sid: impl Into<String>) -> OutReq {
        self.sid_header = Some(sid.into());
        self
    }

    fn with_done(mut self, done: oneshot::Sender<anyhow::Result<()>>) -> OutReq {
        self.done = Some(done);
        self
    }
}

/// What the server does with a request.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// Empty `200 OK`.
    Ok,
    /// Empty `400 Bad Request`.
    BadRequest,
    /// Close the TCP connection without any HTTP response.
    Close(String),
}

/// What happens after the ack has been written.
enum After {
    /// An async answer (or the next association step) to POST.
    Post(OutReq),
    /// An initiator role finished.
    Wake(oneshot::Sender<Result<(), String>>, Result<(), String>),
    /// The answer to one of our session requests.
    Reply(oneshot::Sender<Primitive>, Box<Primitive>),
}

struct Outcome {
    answer: Answer,
    after: Vec<After>,
}

impl Outcome {
    fn ok(after: Vec<After>) -> Outcome {
        Outcome {
            answer: Answer::Ok,
            after,
        }
    }

    fn close(reason: impl Into<String>) -> Outcome {
        Outcome {
            answer: Answer::Close(reason.into()),
            after: Vec::new(),
        }
    }
}

impl Inner {
    fn log(&self, direction: WireDirection, raw: &[u8]) {
        lock(&self.wire).push(WireEntry {
            direction,
            raw: String::from_utf8_lossy(raw).into_owned(),
        });
        self.changed.notify_waiters();
    }

    /// Wait until `cond` holds (re-checked on every wire entry or delivery), at most `within`.
    async fn wait_until(&self, within: Duration, cond: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if cond() {
                return true;
            }
            if timeout_at(deadline, notified).await.is_err() {
                return cond();
            }
        }
    }

    fn url_for(&self, domain: &str) -> Option<String> {
        let s = lock(&self.state);
        s.peers
            .get(&domain.to_ascii_lowercase())
            .or_else(|| s.default_peer.as_ref().and_then(|d| s.peers.get(d)))
            .cloned()
    }

    /// (our session ID, their session ID) of the newest complete association with `domain`,
    /// whoever opened it (Baraza's `ssp_get_session()` ignores the direction).
    fn session_for(&self, domain: &str) -> Option<(String, String)> {
        let s = lock(&self.state);
        s.assocs
            .iter()
            .filter(|a| a.complete && a.domain.eq_ignore_ascii_case(domain))
            .max_by_key(|a| a.row)
            .and_then(|a| Some((a.our_session(&self.domain), a.their_session.clone()?)))
    }

    /// `wv:<local>@<domain>` for a configured user given by name or MSISDN.
    fn local_sender_id(&self, local: &str) -> Option<String> {
        self.users
            .iter()
            .any(|(name, msisdn)| name.eq_ignore_ascii_case(local) || msisdn == local)
            .then(|| format!("wv:{local}@{}", self.domain))
    }

    /// The local user name a recipient ID designates.
    fn local_user(&self, id: &str) -> Option<String> {
        let (local, domain) = split_id(id);
        if !domain.is_empty() && !domain.eq_ignore_ascii_case(&self.domain) {
            return None;
        }
        if local.is_empty() {
            return None;
        }
        self.users
            .iter()
            .find(|(name, msisdn)| name.eq_ignore_ascii_case(local) || msisdn == local)
            .map(|(name, _)| name.clone())
    }

    fn new_message_id(&self) -> String {
        let seq = self.msg_seq.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{}{seq:x}", hex(&rand::random::<[u8; 16]>()))
    }

    /// The initiator role (034–045): post SendSecretToken, then let the server side drive the
    /// remaining steps; wait for the end.
    async fn associate(&self, domain: &str) -> anyhow::Result<()> {
        let domain = domain.to_ascii_lowercase();
        let deadline = Instant::now() + DEADLINE;
        let (row, body, wait_rx) = {
            let mut s = lock(&self.state);
            s.next_row += 1;
            let row = s.next_row;
            let our_token = new_token();
            let body = body_secret_token(Mode::Request, &row.to_string(), &self.domain, &our_token);
            s.assocs.push(Assoc {
                row,
                domain: domain.clone(),
                outgoing: true,
                tid: row.to_string(),
                our_token,
                their_token: None,
                verified: false,
                their_session: None,
                complete: false,
            });
            let (tx, rx) = oneshot::channel();
            s.waiters.insert(row, tx);
            (row, body, rx)
        };
        info!(domain = %domain, row, "initiating association");
        let result = async {
            let (done_tx, done_rx) = oneshot::channel();
            let req = OutReq::new(domain.clone(), body)
                .with_tid(row.to_string())
                .with_done(done_tx);
            self.out_tx
                .send(req)
                .map_err(|_| anyhow!("the peer is shut down"))?;
            timeout_at(deadline, done_rx)
                .await
                .map_err(|_| anyhow!("SendSecretToken to {domain} timed out"))?
                .map_err(|_| anyhow!("the client task is gone"))??;
            match timeout_at(deadline, wait_rx).await {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(e))) => Err(anyhow!("association with {domain} failed: {e}")),
                Ok(Err(_)) => Err(anyhow!("association with {domain} abandoned")),
                Err(_) => Err(anyhow!(
                    "association with {domain} not complete within {DEADLINE:?}"
                )),
            }
        }
        .await;
        if result.is_err() {
            let mut s = lock(&self.state);
            s.waiters.remove(&row);
            s.assocs.retain(|a| a.row != row || a.complete);
        }
        result
    }

    /// Decide what to do with one request (pure apart from state; the caller writes the ack
    /// and then runs the `after` actions).
    fn handle_request(&self, req: &HttpMsg) -> Outcome {
        if !req.start.starts_with("POST ") {
            return Outcome::close(format!("{:?} is not an SSP POST", req.start));
        }
        let ct = req.header("content-type").unwrap_or("").trim();
        if !ct.to_ascii_lowercase().starts_with(SSP_CONTENT_TYPE) {
            return Outcome::close(format!(
                "Content-Type {ct:?} goes to the CSP handler, which drops it"
            ));
        }
        match self.codec.parse(&req.body) {
            Ok(msg) => match msg.body {
                Body::Setup(st) => self.handle_setup(st),
                Body::Session(sess) => self.handle_session(sess),
            },
            Err(e) => {
                debug!(error = %e, "unparseable SSP body: 400");
                Outcome {
                    answer: Answer::BadRequest,
                    after: Vec::new(),
                }
            }
        }
    }

    fn handle_setup(&self, st: SetupTransaction) -> Outcome {
        let tid = st.transaction_id;
        let mut s = lock(&self.state);
        match (st.mode, st.primitive) {
            // Responder, step 1 → 2 (001 → 004).
            (Mode::Request, SetupPrimitive::SendSecretToken(p)) => {
                let Some(domain) = p.service_id.as_deref().and_then(service_domain) else {
                    return Outcome::close("SendSecretToken without a usable serviceID");
                };
                let Some(their) = decode_token(&p.token, p.token_encoding.is_some()) else {
                    return Outcome::close("SecretToken is not valid base64");
                };
                s.next_row += 1;
                let row = s.next_row;
                let our_token = new_token();
                let body =
                    body_secret_token(Mode::Response, &row.to_string(), &self.domain, &our_token);
                info!(%domain, row, %tid, "association requested");
                s.assocs.push(Assoc {
                    row,
                    domain: domain.clone(),
                    outgoing: false,
                    tid,
                    our_token,
                    their_token: Some(their),
                    verified: false,
                    their_session: None,
                    complete: false,
                });
                Outcome::ok(vec![After::Post(
                    OutReq::new(domain, body).with_tid(row.to_string()),
                )])
            }
            // Responder, step 3 → 4 (006 → 008); wrong digest: 072/073.
            (Mode::Request, SetupPrimitive::LoginRequest(p)) => {
                let Some(i) = s
                    .assocs
                    .iter()
                    .rposition(|a| !a.outgoing && a.tid == tid && !a.verified && !a.complete)
                else {
                    return Outcome::close(format!("LoginRequest {tid:?} matches no association"));
                };
                if p.digest != digest_b64(s.assocs[i].our_token.as_bytes()) {
                    let a = s.assocs.remove(i);
                    warn!(domain = %a.domain, row = a.row, "wrong digest: association deleted");
                    return Outcome::close(format!(
                        "wrong digest from {}: association {} deleted",
                        a.domain, a.row
                    ));
                }
                let a = &mut s.assocs[i];
                a.verified = true;
                let digest = digest_b64(a.their_token.as_deref().unwrap_or_default());
                let body = body_login_request(Mode::Response, &tid, &self.domain, &digest);
                Outcome::ok(vec![After::Post(OutReq::new(a.domain.clone(), body))])
            }
            // Responder, step 5 → 6 (010 → 012).
            (Mode::Request, SetupPrimitive::LoginResponse(p)) => {
                let Some(i) = s
                    .assocs
                    .iter()
                    .rposition(|a| !a.outgoing && a.tid == tid && a.verified && !a.complete)
                else {
                    return Outcome::close(format!(
                        "LoginResponse {tid:?} matches no verified association"
                    ));
                };
                let Some(their_session) = p
                    .session_id
                    .map(|x| x.trim().to_owned())
                    .filter(|x| !x.is_empty())
                else {
                    return Outcome::close("LoginResponse without sessionID");
                };
                let a = &mut s.assocs[i];
                a.their_session = Some(their_session);
                a.complete = true;
                let ours = a.our_session(&self.domain);
                info!(domain = %a.domain, ours = %ours, theirs = ?a.their_session, "association complete (responder)");
                let body = body_login_response(Mode::Response, &tid, &ours);
                Outcome::ok(vec![After::Post(OutReq::new(a.domain.clone(), body))])
            }
            // Initiator, step 2 → 3 (036 → 038): matched by domain, the tid is ignored.
            (Mode::Response, SetupPrimitive::SendSecretToken(p)) => {
                let Some(domain) = p.service_id.as_deref().and_then(service_domain) else {
                    return Outcome::close("SendSecretToken without a usable serviceID");
                };
                let Some(i) = s.assocs.iter().rposition(|a| {
                    a.outgoing && a.their_token.is_none() && a.domain.eq_ignore_ascii_case(&domain)
                }) else {
                    return Outcome::close(format!(
                        "SendSecretToken Response from {domain} matches no association"
                    ));
                };
                let Some(their) = decode_token(&p.token, p.token_encoding.is_some()) else {
                    return Outcome::close("SecretToken is not valid base64");
                };
                let a = &mut s.assocs[i];
                let body =
                    body_login_request(Mode::Request, &a.tid, &self.domain, &digest_b64(&their));
                a.their_token = Some(their);
                Outcome::ok(vec![After::Post(OutReq::new(a.domain.clone(), body))])
            }
            // Initiator, step 4 → 5 (040 → 042).
            (Mode::Response, SetupPrimitive::LoginRequest(p)) => {
                let Some(i) = s.assocs.iter().rposition(|a| {
                    a.outgoing && a.tid == tid && a.their_token.is_some() && !a.verified
                }) else {
                    return Outcome::close(format!(
                        "LoginRequest Response {tid:?} matches no association"
                    ));
                };
                if p.digest != digest_b64(s.assocs[i].our_token.as_bytes()) {
                    let a = s.assocs.remove(i);
                    warn!(domain = %a.domain, row = a.row, "wrong digest in LoginRequest Response");
                    let mut out = Outcome::close(format!(
                        "wrong digest from {}: association {} deleted",
                        a.domain, a.row
                    ));
                    if let Some(w) = s.waiters.remove(&a.row) {
                        out.after.push(After::Wake(
                            w,
                            Err(format!("wrong digest from {}", a.domain)),
                        ));
                    }
                    return out;
                }
                let a = &mut s.assocs[i];
                a.verified = true;
                let body = body_login_response(Mode::Request, &a.tid, &a.our_session(&self.domain));
                Outcome::ok(vec![After::Post(OutReq::new(a.domain.clone(), body))])
            }
            // Initiator, step 6 (044): done.
            (Mode::Response, SetupPrimitive::LoginResponse(p)) => {
                let Some(i) = s
                    .assocs
                    .iter()
                    .rposition(|a| a.outgoing && a.tid == tid && a.verified && !a.complete)
                else {
                    return Outcome::close(format!(
                        "LoginResponse Response {tid:?} matches no association"
                    ));
                };
                let Some(their_session) = p
                    .session_id
                    .map(|x| x.trim().to_owned())
                    .filter(|x| !x.is_empty())
                else {
                    return Outcome::close("LoginResponse without sessionID");
                };
                let a = &mut s.assocs[i];
                a.their_session = Some(their_session);
                a.complete = true;
                let row = a.row;
                info!(domain = %a.domain, ours = %a.our_session(&self.domain), theirs = ?a.their_session, "association complete (initiator)");
                let mut after = Vec::new();
                if let Some(w) = s.waiters.remove(&row) {
                    after.push(After::Wake(w, Ok(())));
                }
                Outcome::ok(after)
            }
            (mode, SetupPrimitive::Other(e)) => Outcome::close(format!(
                "SetupTransaction {} holds <{:?}>, which is not handled",
                mode.as_str(),
                e.name
            )),
        }
    }

    fn handle_session(&self, sess: Session) -> Outcome {
        let mut s = lock(&self.state);
        // Only the peer's own session ID is accepted (052: Baraza's own ID is dropped).
        let Some(a) = s
            .assocs
            .iter()
            .filter(|a| a.complete && a.their_session.as_deref() == Some(sess.session_id.as_str()))
            .max_by_key(|a| a.row)
        else {
            return Outcome::close(format!("unknown session {:?}", sess.session_id));
        };
        let peer_domain = a.domain.clone();
        let our_session = a.our_session(&self.domain);
        let mut after = Vec::new();
        for t in sess.transactions {
            match t.mode {
                Mode::Response => match s.pending.remove(&t.transaction_id) {
                    Some(tx) => after.push(After::Reply(tx, Box::new(t.primitive))),
                    None => warn!(tid = %t.transaction_id, "answer to no pending request"),
                },
                Mode::Request => {
                    if let Some(prim) = self.answer(&peer_domain, t.primitive) {
                        let body = body_session_response(&our_session, &t.transaction_id, &prim);
                        after.push(After::Post(
                            OutReq::new(peer_domain.clone(), body)
                                .with_sid(sess.session_id.clone()),
                        ));
                    }
                }
            }
        }
        Outcome::ok(after)
    }

    /// The primitive (as Baraza writes it) answering one session request, if any.
    fn answer(&self, peer_domain: &str, prim: Primitive) -> Option<String> {
        let foreign = |id: &str| !id_domain(id).eq_ignore_ascii_case(peer_domain);
        match prim {
            Primitive::SendMessageRequest(p) => {
                let requestor = p
                    .meta
                    .as_ref()
                    .and_then(|m| m.requestor_user())
                    .map(str::to_owned);
                let info = p.info.unwrap_or_default();
                let sender = info.sender_id().map(str::to_owned);
                if let Some(bad) = [&requestor, &sender]
                    .into_iter()
                    .flatten()
                    .find(|id| foreign(id))
                {
                    warn!(%bad, %peer_domain, "sender outside the session's domain: 901");
                    return Some(prim_status(901));
                }
                let text = p.content.map(|c| content_text(&c)).unwrap_or_default();
                let from_id = sender.or(requestor).unwrap_or_default();
                let recipients: Vec<String> = info
                    .recipient
                    .map(|r| r.entities.into_iter().map(|e| e.id).collect())
                    .unwrap_or_default();
                let mut invalid = Vec::new();
                let mut delivered = 0;
                for r in &recipients {
                    match self.local_user(r) {
                        Some(to_local) => {
                            info!(%to_local, %from_id, "message delivered");
                            lock(&self.received).push(ReceivedMessage {
                                to_local,
                                from_id: from_id.clone(),
                                text: text.clone(),
                            });
                            self.changed.notify_waiters();
                            delivered += 1;
                        }
                        None => invalid.push(strip_wv(r).to_owned()),
                    }
                }
                if recipients.is_empty() {
                    invalid.push(String::new());
                }
                if invalid.is_empty() {
                    Some(prim_send_ok(&self.new_message_id()))
                } else {
                    let mid = if delivered > 0 {
                        self.new_message_id()
                    } else {
                        String::new()
                    };
                    Some(prim_send_invalid(&mid, &invalid))
                }
            }
            Primitive::GetPresenceRequest(p) => {
                if p.meta
                    .as_ref()
                    .and_then(|m| m.requestor_user())
                    .is_some_and(foreign)
                {
                    return Some(prim_status(901));
                }
                Some(GET_PRESENCE_EMPTY.to_owned())
            }
            other => {
                warn!(primitive = other.name(), "request not answered");
                None
            }
        }
    }

    fn run_after(&self, after: Vec<After>) {
        for a in after {
            match a {
                After::Post(req) => {
                    if self.out_tx.send(req).is_err() {
                        warn!("client task gone; answer not sent");
                    }
                }
                After::Wake(tx, r) => {
                    let _ = tx.send(r);
                }
                After::Reply(tx, p) => {
                    let _ = tx.send(*p);
                }
            }
        }
    }

    // -- client side --

    async fn connect(&self, t: &Target) -> anyhow::Result<Box<dyn Io>> {
        let tcp = timeout(DEADLINE, TcpStream::connect((t.host.as_str(), t.port)))
            .await
            .map_err(|_| anyhow!("connect to {}:{} timed out", t.host, t.port))??;
        let _ = tcp.set_nodelay(true);
        if !t.tls {
            return Ok(Box::new(tcp));
        }
        let name = match t.host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(t.host.clone())?,
        };
        let tls = timeout(DEADLINE, self.connector.connect(name, tcp))
            .await
            .map_err(|_| anyhow!("TLS handshake with {}:{} timed out", t.host, t.port))??;
        Ok(Box::new(tls))
    }

    /// POST one request over the (reused) keep-alive connection; `Ok` on a 2xx answer.
    async fn post(&self, conn: &mut Option<ClientConn>, req: &OutReq) -> anyhow::Result<()> {
        let url = self
            .url_for(&req.domain)
            .ok_or_else(|| anyhow!("no SSP URL known for {}", req.domain))?;
        let target = Target::parse(&url)?;
        let bytes = build_request(&target, req);
        if conn.as_ref().is_some_and(|c| c.url != url) {
            *conn = None;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let reused = conn.is_some();
            if conn.is_none() {
                let io = self.connect(&target).await?;
                *conn = Some(ClientConn {
                    url: url.clone(),
                    io,
                    buf: Vec::new(),
                });
            }
            let Some(c) = conn.as_mut() else {
                bail!("no connection");
            };
            match self.exchange(c, &bytes).await {
                Ok(resp) => {
                    if resp.wants_close() || resp.until_eof {
                        *conn = None;
                    }
                    let code = resp.status_code().unwrap_or(0);
                    if (200..300).contains(&code) {
                        return Ok(());
                    }
                    bail!("{url} answered {:?}", resp.start);
                }
                Err(e) => {
                    *conn = None;
                    if reused && attempt == 1 {
                        debug!(error = %e, "stale keep-alive connection; reconnecting");
                        continue;
                    }
                    return Err(e.context(format!("POST to {url}")));
                }
            }
        }
    }

    async fn exchange(&self, c: &mut ClientConn, bytes: &[u8]) -> anyhow::Result<HttpMsg> {
        c.io.write_all(bytes).await?;
        c.io.flush().await?;
        self.log(WireDirection::Out, bytes);
        match read_message(&mut c.io, &mut c.buf, true).await? {
            Some(resp) => {
                self.log(WireDirection::In, &resp.raw);
                Ok(resp)
            }
            None => bail!("connection closed without an HTTP response"),
        }
    }
}

/// The client task: the queued POSTs one at a time, in order, over one keep-alive connection.
async fn client_loop(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<OutReq>) {
    let mut conn: Option<ClientConn> = None;
    while let Some(mut req) = rx.recv().await {
        let done = req.done.take();
        let res = match timeout(DEADLINE, inner.post(&mut conn, &req)).await {
            Ok(r) => r,
            Err(_) => Err(anyhow!("POST to {} timed out", req.domain)),
        };
        if let Err(e) = &res {
            warn!(domain = %req.domain, error = %format!("{e:#}"), "POST failed");
            conn = None;
        }
        if let Some(d) = done {
            let _ = d.send(res);
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct ClientConn {
    url: String,
    io: Box<dyn Io>,
    buf: Vec<u8>,
}

/// A parsed peer URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    tls: bool,
    host: String,
    port: u16,
    path: String,
    /// `Host:` value, always with the port (`imps.b.test:19090`).
    host_header: String,
}

impl Target {
    fn parse(url: &str) -> anyhow::Result<Target> {
        let lower = url.to_ascii_lowercase();
        let (tls, rest) = if lower.starts_with("https://") {
            (true, &url[8..])
        } else if lower.starts_with("http://") {
            (false, &url[7..])
        } else {
            bail!("unsupported URL {url:?}");
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let default_port = if tls { 443 } else { 80 };
        let (host, port, bracketed) = if let Some(r) = authority.strip_prefix('[') {
            let (h, after) = r
                .split_once(']')
                .ok_or_else(|| anyhow!("bad IPv6 authority in {url:?}"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().with_context(|| format!("bad port in {url:?}"))?,
                None => default_port,
            };
            (h.to_owned(), port, true)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_owned(),
                    p.parse().with_context(|| format!("bad port in {url:?}"))?,
                    false,
                ),
                None => (authority.to_owned(), default_port, false),
            }
        };
        if host.is_empty() {
            bail!("no host in {url:?}");
        }
        let host_header = if bracketed {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Target {
            tls,
            host,
            port,
            path: path.to_owned(),
            host_header,
        })
    }
}

/// Header value without control characters (no header injection from peer-supplied IDs).
fn header_value(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

/// A request exactly as Baraza/Kannel writes it (004, 016, 034, 046).
fn build_request(t: &Target, req: &OutReq) -> Vec<u8> {
    let mut head = format!("POST {} HTTP/1.1\r\nConnection: keep-alive\r\n", t.path);
    if let Some(tid) = &req.tid_header {
        head.push_str(&format!("x-wv-transactionid: {}\r\n", header_value(tid)));
    }
    if let Some(sid) = &req.sid_header {
        head.push_str(&format!("x-wv-sessionid: {}\r\n", header_value(sid)));
    }
    head.push_str(&format!(
        "User-Agent: {USER_AGENT}\r\nContent-Type: {SSP_CONTENT_TYPE}\r\nContent-Length: {}\r\nHost: {}\r\n\r\n",
        req.body.len(),
        t.host_header
    ));
    let mut out = head.into_bytes();
    out.extend_from_slice(req.body.as_bytes());
    out
}

/// Kannel's ack (002, 063): `status` like `200 OK`; the duplicated Connection header when the
/// request asked to close.
fn ack_bytes(status: &str, request_said_close: bool, date: &str) -> String {
    let connection = if request_said_close {
        "Connection: Close\r\nConnection: keep-alive\r\n"
    } else {
        "Connection: keep-alive\r\n"
    };
    format!(
        "HTTP/1.1 {status}\r\nServer: Kannel/1.4.5\r\nDate: {date}\r\nContent-Length: 0\r\n{connection}\r\n"
    )
}

// ---------------------------------------------------------------------------------------------
// Server

async fn accept_loop(inner: Arc<Inner>, listener: TcpListener, acceptor: TlsAcceptor) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, from)) => {
                    conns.spawn(serve_conn(inner.clone(), acceptor.clone(), tcp, from));
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    // Back off a little on resource exhaustion rather than spin.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve_conn(inner: Arc<Inner>, acceptor: TlsAcceptor, tcp: TcpStream, from: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let mut io = match timeout(DEADLINE, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(%from, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            debug!(%from, "TLS handshake timed out");
            return;
        }
    };
    inner.accepted.fetch_add(1, Ordering::Relaxed);
    let mut buf = Vec::new();
    loop {
        let req = match timeout(IDLE, read_message(&mut io, &mut buf, false)).await {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                debug!(%from, error = %e, "bad or broken request; closing");
                if !buf.is_empty() {
                    let reason = format!("unreadable request: {e}");
                    inner.log(WireDirection::Closed, reason.as_bytes());
                }
                break;
            }
            Err(_) => break,
        };
        inner.log(WireDirection::In, &req.raw);
        let close = req.wants_close();
        let outcome = inner.handle_request(&req);
        let status = match outcome.answer {
            Answer::Ok => "200 OK",
            Answer::BadRequest => "400 Bad Request",
            Answer::Close(reason) => {
                info!(%from, %reason, "closing without an HTTP response");
                inner.log(WireDirection::Closed, reason.as_bytes());
                inner.run_after(outcome.after);
                let _ = timeout(Duration::from_secs(1), io.shutdown()).await;
                return;
            }
        };
        // The ack first (`send_http_ack()` before `fetch_url()`), then the async answer.
        let ack = ack_bytes(status, close, &rfc1123(now_secs()));
        let written = timeout(DEADLINE, async {
            io.write_all(ack.as_bytes()).await?;
            io.flush().await
        })
        .await;
        let ok = matches!(written, Ok(Ok(())));
        if ok {
            inner.log(WireDirection::Out, ack.as_bytes());
        }
        inner.run_after(outcome.after);
        if !ok {
            break;
        }
        if close {
            let _ = timeout(Duration::from_secs(1), io.shutdown()).await;
            break;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 framing

/// One HTTP message.
#[derive(Debug, Clone)]
struct HttpMsg {
    /// Request line or status line.
    start: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The bytes as they were on the wire.
    raw: Vec<u8>,
    /// Response delimited by the end of the connection.
    until_eof: bool,
}

impl HttpMsg {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn wants_close(&self) -> bool {
        self.headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("connection")
                && v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"))
        })
    }

    fn status_code(&self) -> Option<u16> {
        self.start.split_whitespace().nth(1)?.parse().ok()
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

async fn fill<S: AsyncRead + Unpin + ?Sized>(
    io: &mut S,
    buf: &mut Vec<u8>,
) -> anyhow::Result<usize> {
    let mut tmp = [0u8; 8192];
    let n = match io.read(&mut tmp).await {
        Ok(n) => n,
        // A TLS peer that closes without close_notify: an end of stream like any other.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
        Err(e) => return Err(e.into()),
    };
    buf.extend_from_slice(&tmp[..n]);
    Ok(n)
}

/// Read one message from `io` (leftover bytes live in `buf`). `Ok(None)`: clean end of the
/// connection before any byte of a new message.
async fn read_message<S: AsyncRead + Unpin + ?Sized>(
    io: &mut S,
    buf: &mut Vec<u8>,
    response: bool,
) -> anyhow::Result<Option<HttpMsg>> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n", 0) {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            bail!("HTTP head larger than {MAX_HEAD} bytes");
        }
        if fill(io, buf).await? == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            bail!("connection closed inside the HTTP head");
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end - 4]).into_owned();
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    for line in lines {
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| anyhow!("malformed header line {line:?}"))?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let mut msg = HttpMsg {
        start,
        headers,
        body: Vec::new(),
        raw: Vec::new(),
        until_eof: false,
    };
    let chunked = msg
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = match msg.header("content-length") {
        Some(v) => Some(
            v.parse::<usize>()
                .map_err(|_| anyhow!("bad Content-Length {v:?}"))?,
        ),
        None => None,
    };
    let no_body_status = response
        && msg
            .status_code()
            .is_some_and(|c| c < 200 || c == 204 || c == 304);
    let end = if no_body_status {
        head_end
    } else if chunked {
        let mut p = head_end;
        loop {
            let line_end = loop {
                if let Some(i) = find(buf, b"\r\n", p) {
                    break i;
                }
                if buf.len() - p > MAX_HEAD {
                    bail!("chunk header too long");
                }
                if fill(io, buf).await? == 0 {
                    bail!("connection closed inside a chunk header");
                }
            };
            let size_text = String::from_utf8_lossy(&buf[p..line_end]).into_owned();
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| anyhow!("bad chunk size {size_text:?}"))?;
            p = line_end + 2;
            if size == 0 {
                // Trailers up to the empty line.
                loop {
                    let e = loop {
                        if let Some(i) = find(buf, b"\r\n", p) {
                            break i;
                        }
                        if buf.len() - p > MAX_HEAD {
                            bail!("trailers too long");
                        }
                        if fill(io, buf).await? == 0 {
                            bail!("connection closed inside the trailers");
                        }
                    };
                    let empty = e == p;
                    p = e + 2;
                    if empty {
                        break;
                    }
                }
                break p;
            }
            if size > MAX_BODY.saturating_sub(msg.body.len()) {
                bail!("body larger than {MAX_BODY} bytes");
            }
            while buf.len() < p + size + 2 {
                if fill(io, buf).await? == 0 {
                    bail!("connection closed inside a chunk");
                }
            }
            msg.body.extend_from_slice(&buf[p..p + size]);
            p += size + 2;
        }
    } else if let Some(n) = length {
        if n > MAX_BODY {
            bail!("body of {n} bytes is larger than {MAX_BODY}");
        }
        while buf.len() < head_end + n {
            if fill(io, buf).await? == 0 {
                bail!("connection closed inside the body");
            }
        }
        msg.body = buf[head_end..head_end + n].to_vec();
        head_end + n
    } else if response {
        while fill(io, buf).await? > 0 {
            if buf.len() - head_end > MAX_BODY {
                bail!("body larger than {MAX_BODY} bytes");
            }
        }
        msg.until_eof = true;
        msg.body = buf[head_end..].to_vec();
        buf.len()
    } else {
        head_end
    };
    msg.raw = buf[..end].to_vec();
    buf.drain(..end);
    Ok(Some(msg))
}

// ---------------------------------------------------------------------------------------------
// IDs, tokens, digests, dates

/// `id` without a leading `wv:` (any case).
fn strip_wv(id: &str) -> &str {
    let id = id.trim();
    match id.get(..3) {
        Some(p) if p.eq_ignore_ascii_case("wv:") => &id[3..],
        _ => id,
    }
}

/// Baraza splits every ID at `@`: (local part, domain).
fn split_id(id: &str) -> (&str, &str) {
    strip_wv(id).split_once('@').unwrap_or((strip_wv(id), ""))
}

fn id_domain(id: &str) -> &str {
    split_id(id).1
}

/// The domain of a `serviceID` like `wv:@b.test`.
fn service_domain(service_id: &str) -> Option<String> {
    let d = id_domain(service_id).trim();
    (!d.is_empty()).then(|| d.to_ascii_lowercase())
}

/// A received SecretToken: plain text (trimmed), base64-decoded when it had `encoding`.
fn decode_token(token: &str, encoded: bool) -> Option<Vec<u8>> {
    let t = token.trim();
    if encoded {
        let compact: String = t.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        B64.decode(compact).ok()
    } else {
        Some(t.as_bytes().to_vec())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 hex characters, the MD5 of random data (004).
fn new_token() -> String {
    hex(&Md5::digest(rand::random::<[u8; 32]>()))
}

/// `base64(MD5(token))`, compact.
fn digest_b64(token: &[u8]) -> String {
    B64.encode(Md5::digest(token))
}

/// Kannel's `octstr_binary_to_base64`: lines of 76 characters, each ended by `\r\n`.
fn kannel_b64(data: &[u8]) -> String {
    let plain = B64.encode(data);
    let mut out = String::with_capacity(plain.len() + plain.len() / 38 + 2);
    let bytes = plain.as_bytes();
    for chunk in bytes.chunks(76) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push_str("\r\n");
    }
    if bytes.is_empty() {
        out.push_str("\r\n");
    }
    out
}

/// The text of a ContentData.
fn content_text(c: &ssp_gateway::ssp::ContentData) -> String {
    if c.encoding
        .as_deref()
        .is_some_and(|e| e.eq_ignore_ascii_case("base64"))
    {
        match B64.decode(c.data.as_bytes()) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(_) => c.data.clone(),
        }
    } else {
        c.data.clone()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// (year, month, day, hour, minute, second, days since the epoch).
fn civil(secs: u64) -> (i64, u32, u32, u64, u64, u64, i64) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60, days)
}

/// `Wed, 25 Nov 2026 12:27:54 GMT`.
fn rfc1123(secs: u64) -> String {
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, m, d, hh, mm, ss, days) = civil(secs);
    let wd = WD[days.rem_euclid(7) as usize];
    let mon = MON[(m as usize).saturating_sub(1) % 12];
    format!("{wd}, {d:02} {mon} {y} {hh:02}:{mm:02}:{ss:02} GMT")
}

/// `2026-12-25T12:27:59Z`.
fn iso8601(secs: u64) -> String {
    let (y, m, d, hh, mm, ss, _) = civil(secs);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

// ---------------------------------------------------------------------------------------------
// Bodies, laid out byte for byte like Baraza's (see the captures named on each)

/// Escape for attribute values and text.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// 004 (Response, responder) and 034 (Request, initiator).
fn body_secret_token(mode: Mode, tid: &str, domain: &str, token: &str) -> String {
    format!(
        "<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"{NS}\">\n <SetupTransaction mode=\"{}\" transactionID=\"{}\">\n <SendSecretToken serviceID=\"wv:@{}\" protocol=\"WV-SSP\"\nprocotolVersion=\"1.3\">\n<SecretToken>\n{}\n</SecretToken> \n</SendSecretToken> \n</SetupTransaction> \n</WV-SSP-Message> \n",
        mode.as_str(),
        esc(tid),
        esc(domain),
        esc(token)
    )
}

/// 008 (Response, responder) and 038 (Request, initiator); `digest` is compact base64.
fn body_login_request(mode: Mode, tid: &str, domain: &str, digest: &str) -> String {
    let wrapped = match B64.decode(digest) {
        Ok(raw) => kannel_b64(&raw),
        Err(_) => format!("{digest}\r\n"),
    };
    format!(
        "<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"{NS}\">\n<SetupTransaction transactionID=\"{}\" mode=\"{}\">\n<LoginRequest serviceID=\"wv:@{}\" timeToLive=\"{TTL}\">\n<PasswordDigest encoding=\"base64\">\n{wrapped}\n</PasswordDigest>\n</LoginRequest>\n\n</SetupTransaction>\n\n</WV-SSP-Message>\n",
        esc(tid),
        mode.as_str(),
        esc(domain)
    )
}

/// 012 (Response, responder) and 042 (Request, initiator).
fn body_login_response(mode: Mode, tid: &str, session_id: &str) -> String {
    format!(
        "<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"{NS}\">\n<SetupTransaction transactionID=\"{}\" mode=\"{}\">\n<LoginResponse sessionID=\"{}\" timeToLive=\"{TTL}\">\n<Status code=\"200\"/>\n </LoginResponse>\n\n</SetupTransaction>\n\n</WV-SSP-Message>\n",
        esc(tid),
        mode.as_str(),
        esc(session_id)
    )
}

/// 016, 056, 060, 066: an answer in a Response transaction under our own session ID.
fn body_session_response(our_session: &str, tid: &str, primitive: &str) -> String {
    format!(
        "<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"{NS}\">\n<Session sessionID=\"{}\">\n<Transaction mode=\"Response\" transactionID=\"{}\">\n{primitive}\n</Transaction>\n\n</Session>\n</WV-SSP-Message>\n",
        esc(our_session),
        esc(tid)
    )
}

/// 016.
fn prim_send_ok(message_id: &str) -> String {
    format!(
        "<SendMessageResponse messageID=\"{}\">\n<Status code=\"200\">\n<StatusDescription>Success</StatusDescription>\n</Status>\n\n</SendMessageResponse>\n",
        esc(message_id)
    )
}

/// 056, one DetailedResult per unknown recipient.
fn prim_send_invalid(message_id: &str, invalid: &[String]) -> String {
    let mut details = String::new();
    for id in invalid {
        details.push_str(&format!(
            "<DetailedResult code=\"427\">\n<StatusDescription>invalid userid: {}</StatusDescription>\n</DetailedResult>\n",
            esc(id)
        ));
    }
    format!(
        "<SendMessageResponse messageID=\"{}\">\n<Status code=\"900\">\n<StatusDescription>Errors</StatusDescription>\n{details}</Status>\n\n</SendMessageResponse>\n",
        esc(message_id)
    )
}

/// 060.
fn prim_status(code: u16) -> String {
    format!("<Status code=\"{code}\"/>")
}

/// 066.
const GET_PRESENCE_EMPTY: &str = "<GetPresenceResponse>\n</GetPresenceResponse>\n";

/// 046.
#[allow(clippy::too_many_arguments)]
fn body_send_message_request(
    our_session: &str,
    tid: &str,
    our_domain: &str,
    from: &str,
    to: &str,
    message_id: &str,
    text: &str,
    date_time: &str,
) -> String {
    format!(
        "<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"{NS}\">\n<Session sessionID=\"{sid}\">\n<Transaction mode=\"Request\" transactionID=\"{tid}\">\n<SendMessageRequest deliveryReport=\"No\">\n<MetaInfo clientOriginated=\"Yes\">\n<Requestor serviceID=\"wv:@{dom}\">\n<User userID=\"{from}\"/>\n</Requestor></MetaInfo>\n\n<MessageInfo messageID=\"{mid}\" contentType=\"text/plain\" contentSize=\"{size}\">\n<Recipient>\n<User userID=\"{to}\"/>\n\n</Recipient>\n<Sender>\n<User userID=\"{from}\"/>\n\n</Sender>\n\n<DateTime format=\"iso8601\">{dt}</DateTime>\n\n</MessageInfo>\n<ContentData contentType=\"text/plain\" encoding=\"base64\">\n{data}\n</ContentData>\n\n</SendMessageRequest>\n\n</Transaction>\n</Session>\n</WV-SSP-Message>\n",
        sid = esc(our_session),
        tid = esc(tid),
        dom = esc(our_domain),
        from = esc(from),
        to = esc(to),
        mid = esc(message_id),
        size = text.len(),
        dt = esc(date_time),
        data = kannel_b64(text.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // The captures (exact bytes of baraza-captures/NNN_*.http).
    /// Capture 001_b-init_b.test-to-a.test_req_SetupTransaction-Request-SendSecretToken.http
    const C001: &str = "POST / HTTP/1.1\r\nHost: imps.a.test:18080\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 372\r\nX-WV-TransactionID: bt-7bf56d57\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<SetupTransaction mode=\"Request\" transactionID=\"bt-7bf56d57\">\n<SendSecretToken serviceID=\"wv:@b.test\" protocol=\"WV-SSP\" protocolVersion=\"1.3\">\n<SecretToken>78fdb4c914e91c8610af7b0686742dcc</SecretToken>\n</SendSecretToken>\n</SetupTransaction>\n</WV-SSP-Message>\n";
    /// Capture 002_b-init_a.test-to-b.test_resp_empty.http
    const C002: &str = "HTTP/1.1 200 OK\r\nServer: Kannel/1.4.5\r\nDate: Wed, 25 Nov 2026 12:27:54 GMT\r\nContent-Length: 0\r\nConnection: Close\r\nConnection: keep-alive\r\n\r\n";
    /// Capture 004_b-init_a.test-to-b.test_req_SetupTransaction-Response-SendSecretToken.http
    const C004: &str = "POST / HTTP/1.1\r\nConnection: keep-alive\r\nx-wv-transactionid: 7\r\nUser-Agent: Baraza IMPS -- http://www.baraza.im\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 354\r\nHost: imps.b.test:19090\r\n\r\n<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n <SetupTransaction mode=\"Response\" transactionID=\"7\">\n <SendSecretToken serviceID=\"wv:@a.test\" protocol=\"WV-SSP\"\nprocotolVersion=\"1.3\">\n<SecretToken>\n3d2d0184ddf621eccee0558036087513\n</SecretToken> \n</SendSecretToken> \n</SetupTransaction> \n</WV-SSP-Message> \n";
    /// Capture 006_b-init_b.test-to-a.test_req_SetupTransaction-Request-LoginRequest.http
    const C006: &str = "POST / HTTP/1.1\r\nHost: imps.a.test:18080\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 361\r\nX-WV-TransactionID: bt-7bf56d57\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<SetupTransaction mode=\"Request\" transactionID=\"bt-7bf56d57\">\n<LoginRequest serviceID=\"wv:@b.test\" timeToLive=\"86400\">\n<PasswordDigest encoding=\"base64\">CtN2bVlhWAZMvOdV16FeXA==</PasswordDigest>\n</LoginRequest>\n</SetupTransaction>\n</WV-SSP-Message>\n";
    /// Capture 008_b-init_a.test-to-b.test_req_SetupTransaction-Response-LoginRequest.http
    const C008: &str = "POST / HTTP/1.1\r\nConnection: keep-alive\r\nUser-Agent: Baraza IMPS -- http://www.baraza.im\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 351\r\nHost: imps.b.test:19090\r\n\r\n<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<SetupTransaction transactionID=\"bt-7bf56d57\" mode=\"Response\">\n<LoginRequest serviceID=\"wv:@a.test\" timeToLive=\"86400\">\n<PasswordDigest encoding=\"base64\">\nlwWr9VcRGlZ/JwHRzH473A==\r\n\n</PasswordDigest>\n</LoginRequest>\n\n</SetupTransaction>\n\n</WV-SSP-Message>\n";
    /// Capture 010_b-init_b.test-to-a.test_req_SetupTransaction-Request-LoginResponse.http
    const C010: &str = "POST / HTTP/1.1\r\nHost: imps.a.test:18080\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 317\r\nX-WV-TransactionID: bt-7bf56d57\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<SetupTransaction mode=\"Request\" transactionID=\"bt-7bf56d57\">\n<LoginResponse sessionID=\"bsess-bc5c37@b.test\" timeToLive=\"86400\">\n<Status code=\"200\"/>\n</LoginResponse>\n</SetupTransaction>\n</WV-SSP-Message>\n";
    /// Capture 012_b-init_a.test-to-b.test_req_SetupTransaction-Response-LoginResponse.http
    const C012: &str = "POST / HTTP/1.1\r\nConnection: keep-alive\r\nUser-Agent: Baraza IMPS -- http://www.baraza.im\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 293\r\nHost: imps.b.test:19090\r\n\r\n<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<SetupTransaction transactionID=\"bt-7bf56d57\" mode=\"Response\">\n<LoginResponse sessionID=\"7@a.test\" timeToLive=\"86400\">\n<Status code=\"200\"/>\n </LoginResponse>\n\n</SetupTransaction>\n\n</WV-SSP-Message>\n";
    /// Capture 014_b-init_b.test-to-a.test_req_Session-Request-SendMessageRequest.http
    const C014: &str = "POST / HTTP/1.1\r\nHost: imps.a.test:18080\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 801\r\nX-WV-TransactionID: bt-msg-1\r\nX-WV-SessionID: bsess-bc5c37@b.test\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<Session sessionID=\"bsess-bc5c37@b.test\">\n<Transaction mode=\"Request\" transactionID=\"bt-msg-1\">\n<SendMessageRequest deliveryReport=\"No\">\n<MetaInfo clientOriginated=\"Yes\">\n<Requestor serviceID=\"wv:@b.test\">\n<User userID=\"wv:bob@b.test\"/>\n</Requestor>\n</MetaInfo>\n<MessageInfo contentType=\"text/plain\" contentSize=\"42\">\n<Recipient>\n<User userID=\"wv:alice@a.test\"/>\n</Recipient>\n<Sender>\n<User userID=\"wv:bob@b.test\"/>\n</Sender>\n<DateTime format=\"iso8601\">20261125T122755Z</DateTime>\n</MessageInfo>\n<ContentData contentType=\"text/plain\" encoding=\"base64\">SGVsbG8gYWxpY2UsIHRoaXMgaXMgYm9iIGZyb20gYi50ZXN0IChTU1Ap</ContentData>\n</SendMessageRequest>\n</Transaction>\n</Session>\n</WV-SSP-Message>\n";
    /// Capture 016_b-init_a.test-to-b.test_req_Session-Response-SendMessageResponse.http
    const C016: &str = "POST / HTTP/1.1\r\nConnection: keep-alive\r\nx-wv-sessionid: bsess-bc5c37@b.test\r\nUser-Agent: Baraza IMPS -- http://www.baraza.im\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 396\r\nHost: imps.b.test:19090\r\n\r\n<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<Session sessionID=\"7@a.test\">\n<Transaction mode=\"Response\" transactionID=\"bt-msg-1\">\n<SendMessageResponse messageID=\"76a3650fc4214526f02cc85b2be001cf2\">\n<Status code=\"200\">\n<StatusDescription>Success</StatusDescription>\n</Status>\n\n</SendMessageResponse>\n\n</Transaction>\n\n</Session>\n</WV-SSP-Message>\n";
    /// Capture 034_a-init_a.test-to-b.test_req_SetupTransaction-Request-SendSecretToken.http
    const C034: &str = "POST / HTTP/1.1\r\nConnection: keep-alive\r\nx-wv-transactionid: 8\r\nUser-Agent: Baraza IMPS -- http://www.baraza.im\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 353\r\nHost: imps.b.test:19090\r\n\r\n<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n <SetupTransaction mode=\"Request\" transactionID=\"8\">\n <SendSecretToken serviceID=\"wv:@a.test\" protocol=\"WV-SSP\"\nprocotolVersion=\"1.3\">\n<SecretToken>\n29ca0687ecd71081f4064aae323d1823\n</SecretToken> \n</SendSecretToken> \n</SetupTransaction> \n</WV-SSP-Message> \n";
    /// Capture 036_a-init_b.test-to-a.test_req_SetupTransaction-Response-SendSecretToken.http
    const C036: &str = "POST / HTTP/1.1\r\nHost: imps.a.test:18080\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 363\r\nX-WV-TransactionID: 8\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<SetupTransaction mode=\"Response\" transactionID=\"8\">\n<SendSecretToken serviceID=\"wv:@b.test\" protocol=\"WV-SSP\" protocolVersion=\"1.3\">\n<SecretToken>c0800f0a2cf48cceabda495b2c333839</SecretToken>\n</SendSecretToken>\n</SetupTransaction>\n</WV-SSP-Message>\n";
    /// Capture 038_a-init_a.test-to-b.test_req_SetupTransaction-Request-LoginRequest.http
    const C038: &str = "POST / HTTP/1.1\r\nConnection: keep-alive\r\nUser-Agent: Baraza IMPS -- http://www.baraza.im\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 340\r\nHost: imps.b.test:19090\r\n\r\n<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<SetupTransaction transactionID=\"8\" mode=\"Request\">\n<LoginRequest serviceID=\"wv:@a.test\" timeToLive=\"86400\">\n<PasswordDigest encoding=\"base64\">\nzIfhPaN/XObRfEvrauDByA==\r\n\n</PasswordDigest>\n</LoginRequest>\n\n</SetupTransaction>\n\n</WV-SSP-Message>\n";
    /// Capture 040_a-init_b.test-to-a.test_req_SetupTransaction-Response-LoginRequest.http
    const C040: &str = "POST / HTTP/1.1\r\nHost: imps.a.test:18080\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 352\r\nX-WV-TransactionID: 8\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<SetupTransaction mode=\"Response\" transactionID=\"8\">\n<LoginRequest serviceID=\"wv:@b.test\" timeToLive=\"86400\">\n<PasswordDigest encoding=\"base64\">LgVrlZDLt9MSY0S2ah5/BQ==</PasswordDigest>\n</LoginRequest>\n</SetupTransaction>\n</WV-SSP-Message>\n";
    /// Capture 042_a-init_a.test-to-b.test_req_SetupTransaction-Request-LoginResponse.http
    const C042: &str = "POST / HTTP/1.1\r\nConnection: keep-alive\r\nUser-Agent: Baraza IMPS -- http://www.baraza.im\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 282\r\nHost: imps.b.test:19090\r\n\r\n<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<SetupTransaction transactionID=\"8\" mode=\"Request\">\n<LoginResponse sessionID=\"8@a.test\" timeToLive=\"86400\">\n<Status code=\"200\"/>\n </LoginResponse>\n\n</SetupTransaction>\n\n</WV-SSP-Message>\n";
    /// Capture 044_a-init_b.test-to-a.test_req_SetupTransaction-Response-LoginResponse.http
    const C044: &str = "POST / HTTP/1.1\r\nHost: imps.a.test:18080\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 308\r\nX-WV-TransactionID: 8\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<SetupTransaction mode=\"Response\" transactionID=\"8\">\n<LoginResponse sessionID=\"bsess-f709b4@b.test\" timeToLive=\"86400\">\n<Status code=\"200\"/>\n</LoginResponse>\n</SetupTransaction>\n</WV-SSP-Message>\n";
    /// Capture 046_a-init_a.test-to-b.test_req_Session-Request-SendMessageRequest.http
    const C046: &str = "POST / HTTP/1.1\r\nConnection: keep-alive\r\nx-wv-transactionid: 0000000002-0\r\nx-wv-sessionid: 8@a.test\r\nUser-Agent: Baraza IMPS -- http://www.baraza.im\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 823\r\nHost: imps.b.test:19090\r\n\r\n<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<Session sessionID=\"8@a.test\">\n<Transaction mode=\"Request\" transactionID=\"0000000002-0\">\n<SendMessageRequest deliveryReport=\"No\">\n<MetaInfo clientOriginated=\"Yes\">\n<Requestor serviceID=\"wv:@a.test\">\n<User userID=\"wv:alice@a.test\"/>\n</Requestor></MetaInfo>\n\n<MessageInfo messageID=\"8aee9981801716c039215f69def4ffad7\" contentType=\"text/plain\" contentSize=\"30\">\n<Recipient>\n<User userID=\"wv:bob@b.test\"/>\n\n</Recipient>\n<Sender>\n<User userID=\"wv:alice@a.test\"/>\n\n</Sender>\n\n<DateTime format=\"iso8601\">2026-12-25T12:27:59Z</DateTime>\n\n</MessageInfo>\n<ContentData contentType=\"text/plain\" encoding=\"base64\">\nSGkgYm9iLCBhbGljZSBmcm9tIGEudGVzdCBoZXJl\r\n\n</ContentData>\n\n</SendMessageRequest>\n\n</Transaction>\n</Session>\n</WV-SSP-Message>\n";
    /// Capture 052_probes_b.test-to-a.test_req_Session-Request-SendMessageRequest.http
    const C052: &str = "POST / HTTP/1.1\r\nHost: imps.a.test:18080\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 698\r\nX-WV-TransactionID: probe-1\r\nX-WV-SessionID: 8@a.test\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<Session sessionID=\"8@a.test\">\n<Transaction mode=\"Request\" transactionID=\"probe-1\">\n<SendMessageRequest deliveryReport=\"No\">\n<MetaInfo clientOriginated=\"Yes\">\n<Requestor serviceID=\"wv:@b.test\">\n<User userID=\"wv:bob@b.test\"/>\n</Requestor>\n</MetaInfo>\n<MessageInfo contentType=\"text/plain\" contentSize=\"14\">\n<Recipient>\n<User userID=\"wv:alice@a.test\"/>\n</Recipient>\n<Sender>\n<User userID=\"wv:bob@b.test\"/>\n</Sender>\n</MessageInfo>\n<ContentData contentType=\"text/plain\" encoding=\"base64\">cHJvYmUxIHNpZD1BJ3M=</ContentData>\n</SendMessageRequest>\n</Transaction>\n</Session>\n</WV-SSP-Message>\n";
    /// Capture 054_probes_b.test-to-a.test_req_Session-Request-SendMessageRequest.http
    const C054: &str = "POST / HTTP/1.1\r\nHost: imps.a.test:18080\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 697\r\nX-WV-TransactionID: probe-2\r\nX-WV-SessionID: bsess-f709b4@b.test\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<Session sessionID=\"bsess-f709b4@b.test\">\n<Transaction mode=\"Request\" transactionID=\"probe-2\">\n<SendMessageRequest deliveryReport=\"No\">\n<MetaInfo clientOriginated=\"Yes\">\n<Requestor serviceID=\"wv:@b.test\">\n<User userID=\"wv:bob@b.test\"/>\n</Requestor>\n</MetaInfo>\n<MessageInfo contentType=\"text/plain\" contentSize=\"6\">\n<Recipient>\n<User userID=\"wv:nobody@a.test\"/>\n</Recipient>\n<Sender>\n<User userID=\"wv:bob@b.test\"/>\n</Sender>\n</MessageInfo>\n<ContentData contentType=\"text/plain\" encoding=\"base64\">cHJvYmUy</ContentData>\n</SendMessageRequest>\n</Transaction>\n</Session>\n</WV-SSP-Message>\n";
    /// Capture 056_probes_a.test-to-b.test_req_Session-Response-SendMessageResponse.http
    const C056: &str = "POST / HTTP/1.1\r\nConnection: keep-alive\r\nx-wv-sessionid: bsess-f709b4@b.test\r\nUser-Agent: Baraza IMPS -- http://www.baraza.im\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 476\r\nHost: imps.b.test:19090\r\n\r\n<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<Session sessionID=\"8@a.test\">\n<Transaction mode=\"Response\" transactionID=\"probe-2\">\n<SendMessageResponse messageID=\"\">\n<Status code=\"900\">\n<StatusDescription>Errors</StatusDescription>\n<DetailedResult code=\"427\">\n<StatusDescription>invalid userid: nobody@a.test</StatusDescription>\n</DetailedResult>\n</Status>\n\n</SendMessageResponse>\n\n</Transaction>\n\n</Session>\n</WV-SSP-Message>\n";
    /// Capture 058_probes_b.test-to-a.test_req_Session-Request-SendMessageRequest.http
    const C058: &str = "POST / HTTP/1.1\r\nHost: imps.a.test:18080\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 704\r\nX-WV-TransactionID: probe-3\r\nX-WV-SessionID: bsess-f709b4@b.test\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<Session sessionID=\"bsess-f709b4@b.test\">\n<Transaction mode=\"Request\" transactionID=\"probe-3\">\n<SendMessageRequest deliveryReport=\"No\">\n<MetaInfo clientOriginated=\"Yes\">\n<Requestor serviceID=\"wv:@c.test\">\n<User userID=\"wv:mallory@c.test\"/>\n</Requestor>\n</MetaInfo>\n<MessageInfo contentType=\"text/plain\" contentSize=\"6\">\n<Recipient>\n<User userID=\"wv:alice@a.test\"/>\n</Recipient>\n<Sender>\n<User userID=\"wv:mallory@c.test\"/>\n</Sender>\n</MessageInfo>\n<ContentData contentType=\"text/plain\" encoding=\"base64\">cHJvYmUz</ContentData>\n</SendMessageRequest>\n</Transaction>\n</Session>\n</WV-SSP-Message>\n";
    /// Capture 060_probes_a.test-to-b.test_req_Session-Response-Status.http
    const C060: &str = "POST / HTTP/1.1\r\nConnection: keep-alive\r\nx-wv-sessionid: bsess-f709b4@b.test\r\nUser-Agent: Baraza IMPS -- http://www.baraza.im\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 246\r\nHost: imps.b.test:19090\r\n\r\n<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<Session sessionID=\"8@a.test\">\n<Transaction mode=\"Response\" transactionID=\"probe-3\">\n<Status code=\"901\"/>\n</Transaction>\n\n</Session>\n</WV-SSP-Message>\n";
    /// Capture 062_probes_b.test-to-a.test_req_other.http
    const C062: &str = "POST / HTTP/1.1\r\nHost: imps.a.test:18080\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 166\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<Foo transactionID=\"x\"><Bar/></Foo>\n</WV-SSP-Message>\n";
    /// Capture 064_probes_b.test-to-a.test_req_Session-Request-GetPresenceRequest.http
    const C064: &str = "POST / HTTP/1.1\r\nHost: imps.a.test:18080\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 450\r\nX-WV-TransactionID: probe-5\r\nX-WV-SessionID: bsess-f709b4@b.test\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<Session sessionID=\"bsess-f709b4@b.test\">\n<Transaction mode=\"Request\" transactionID=\"probe-5\">\n<GetPresenceRequest>\n<MetaInfo clientOriginated=\"Yes\"><Requestor serviceID=\"wv:@b.test\"><User userID=\"wv:bob@b.test\"/></Requestor></MetaInfo>\n<UserID userID=\"wv:alice@a.test\"/>\n</GetPresenceRequest>\n</Transaction>\n</Session>\n</WV-SSP-Message>\n";
    /// Capture 066_probes_a.test-to-b.test_req_Session-Response-GetPresenceResponse.http
    const C066: &str = "POST / HTTP/1.1\r\nConnection: keep-alive\r\nx-wv-sessionid: bsess-f709b4@b.test\r\nUser-Agent: Baraza IMPS -- http://www.baraza.im\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 271\r\nHost: imps.b.test:19090\r\n\r\n<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<Session sessionID=\"8@a.test\">\n<Transaction mode=\"Response\" transactionID=\"probe-5\">\n<GetPresenceResponse>\n</GetPresenceResponse>\n\n</Transaction>\n\n</Session>\n</WV-SSP-Message>\n";
    /// Capture 068_probes_b.test-to-a.test_req_SetupTransaction-Request-SendSecretToken.http
    const C068: &str = "POST / HTTP/1.1\r\nHost: imps.a.test:18080\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 374\r\nX-WV-TransactionID: bt-bad-da3455\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<SetupTransaction mode=\"Request\" transactionID=\"bt-bad-da3455\">\n<SendSecretToken serviceID=\"wv:@b.test\" protocol=\"WV-SSP\" protocolVersion=\"1.3\">\n<SecretToken>7d1a0fa4820c669ba5f566ef4af27209</SecretToken>\n</SendSecretToken>\n</SetupTransaction>\n</WV-SSP-Message>\n";
    /// Capture 070_probes_a.test-to-b.test_req_SetupTransaction-Response-SendSecretToken.http
    const C070: &str = "POST / HTTP/1.1\r\nConnection: keep-alive\r\nx-wv-transactionid: 9\r\nUser-Agent: Baraza IMPS -- http://www.baraza.im\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 354\r\nHost: imps.b.test:19090\r\n\r\n<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n <SetupTransaction mode=\"Response\" transactionID=\"9\">\n <SendSecretToken serviceID=\"wv:@a.test\" protocol=\"WV-SSP\"\nprocotolVersion=\"1.3\">\n<SecretToken>\n8b8dc80828ff34ecea2515d29224b4ab\n</SecretToken> \n</SendSecretToken> \n</SetupTransaction> \n</WV-SSP-Message> \n";
    /// Capture 072_probes_b.test-to-a.test_req_SetupTransaction-Request-LoginRequest.http
    const C072: &str = "POST / HTTP/1.1\r\nHost: imps.a.test:18080\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 363\r\nX-WV-TransactionID: bt-bad-da3455\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<SetupTransaction mode=\"Request\" transactionID=\"bt-bad-da3455\">\n<LoginRequest serviceID=\"wv:@b.test\" timeToLive=\"86400\">\n<PasswordDigest encoding=\"base64\">YhYF0FG4ituwYCVswx9TGQ==</PasswordDigest>\n</LoginRequest>\n</SetupTransaction>\n</WV-SSP-Message>\n";
    /// Capture 074_probes_b.test-to-a.test_req_Session-Request-SendMessageRequest.http
    const C074: &str = "POST / HTTP/1.1\r\nHost: imps.a.test:18080\r\nContent-Type: text/xml\r\nContent-Length: 696\r\nConnection: close\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n<Session sessionID=\"bsess-f709b4@b.test\">\n<Transaction mode=\"Request\" transactionID=\"probe-7\">\n<SendMessageRequest deliveryReport=\"No\">\n<MetaInfo clientOriginated=\"Yes\">\n<Requestor serviceID=\"wv:@b.test\">\n<User userID=\"wv:bob@b.test\"/>\n</Requestor>\n</MetaInfo>\n<MessageInfo contentType=\"text/plain\" contentSize=\"6\">\n<Recipient>\n<User userID=\"wv:alice@a.test\"/>\n</Recipient>\n<Sender>\n<User userID=\"wv:bob@b.test\"/>\n</Sender>\n</MessageInfo>\n<ContentData contentType=\"text/plain\" encoding=\"base64\">cHJvYmU3</ContentData>\n</SendMessageRequest>\n</Transaction>\n</Session>\n</WV-SSP-Message>\n";

    fn capture_target() -> Target {
        Target::parse("https://imps.b.test:19090/").unwrap()
    }

    fn render(req: &OutReq) -> String {
        String::from_utf8(build_request(&capture_target(), req)).unwrap()
    }

    fn users(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, m)| (n.to_string(), m.to_string()))
            .collect()
    }

    async fn peer(domain: &str, list: &[(&str, &str)]) -> BarazaPeer {
        BarazaPeer::start(BarazaPeerConfig {
            domain: domain.into(),
            users: users(list),
        })
        .await
        .unwrap()
    }

    /// Feed one captured request to the handler; the answer and the POSTs it would make.
    async fn feed(p: &BarazaPeer, raw: &str) -> (Answer, Vec<String>) {
        let mut r = raw.as_bytes();
        let mut buf = Vec::new();
        let req = read_message(&mut r, &mut buf, false)
            .await
            .unwrap()
            .unwrap();
        assert!(buf.is_empty());
        let out = p.inner.handle_request(&req);
        let posts = out
            .after
            .into_iter()
            .filter_map(|a| match a {
                After::Post(r) => {
                    let url = p.inner.url_for(&r.domain).unwrap();
                    let bytes = build_request(&Target::parse(&url).unwrap(), &r);
                    Some(String::from_utf8(bytes).unwrap())
                }
                _ => None,
            })
            .collect();
        (out.answer, posts)
    }

    fn token_of(p: &BarazaPeer, row: u64) -> String {
        lock(&p.inner.state)
            .assocs
            .iter()
            .find(|a| a.row == row)
            .unwrap()
            .our_token
            .clone()
    }

    #[test]
    fn kannel_ack_dates_and_digests() {
        assert_eq!(ack_bytes("200 OK", true, &rfc1123(1_795_609_674)), C002);
        assert_eq!(
            ack_bytes("400 Bad Request", false, "D"),
            "HTTP/1.1 400 Bad Request\r\nServer: Kannel/1.4.5\r\nDate: D\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
        );
        assert_eq!(rfc1123(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_798_201_679), "2026-12-25T12:27:59Z");
        // 006 and 008: base64(MD5(the other side's token as text)).
        assert_eq!(
            digest_b64(b"3d2d0184ddf621eccee0558036087513"),
            "CtN2bVlhWAZMvOdV16FeXA=="
        );
        assert_eq!(
            digest_b64(b"78fdb4c914e91c8610af7b0686742dcc"),
            "lwWr9VcRGlZ/JwHRzH473A=="
        );
        let t = new_token();
        assert_eq!(t.len(), 32);
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(decode_token("\n abc \n", false).unwrap(), b"abc");
        assert_eq!(decode_token(" YWJj\r\n", true).unwrap(), b"abc");
        assert!(decode_token("!!", true).is_none());
        let long = kannel_b64(&[7u8; 100]);
        assert!(long.ends_with("\r\n"));
        assert!(long.split("\r\n").all(|l| l.len() <= 76));
        assert_eq!(
            split_id("wv:+4915112345678@a.test"),
            ("+4915112345678", "a.test")
        );
        assert_eq!(split_id("bob"), ("bob", ""));
        assert_eq!(service_domain("wv:@B.Test").as_deref(), Some("b.test"));
        assert_eq!(service_domain("wv:"), None);
        let t = Target::parse("https://[::1]:8443").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 8443, "/")
        );
        assert_eq!(t.host_header, "[::1]:8443");
        assert!(Target::parse("ftp://x/").is_err());
        assert!(Target::parse("https://x:notaport/").is_err());
    }

    #[tokio::test]
    async fn http_framing_never_panics() {
        let raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nX-T: 1\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        let mut r = raw.as_bytes();
        let mut buf = Vec::new();
        let m = read_message(&mut r, &mut buf, true).await.unwrap().unwrap();
        assert_eq!(m.body, b"abcde");
        let m = read_message(&mut r, &mut buf, true).await.unwrap().unwrap();
        assert_eq!(m.status_code(), Some(204));
        assert!(
            read_message(&mut r, &mut buf, true)
                .await
                .unwrap()
                .is_none()
        );
        let mut r = "HTTP/1.1 200 OK\r\n\r\nrest".as_bytes();
        let m = read_message(&mut r, &mut Vec::new(), true)
            .await
            .unwrap()
            .unwrap();
        assert!(m.until_eof);
        assert_eq!(m.body, b"rest");
        for bad in [
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc",
            "POST / HTTP/1.1\r\nbad header\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x",
        ] {
            let mut r = bad.as_bytes();
            assert!(
                read_message(&mut r, &mut Vec::new(), false).await.is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn client_requests_match_captures_byte_for_byte() {
        let sst = |mode, tid: &str, token| {
            OutReq::new("b.test", body_secret_token(mode, tid, "a.test", token)).with_tid(tid)
        };
        assert_eq!(
            render(&sst(
                Mode::Response,
                "7",
                "3d2d0184ddf621eccee0558036087513"
            )),
            C004
        );
        assert_eq!(
            render(&sst(Mode::Request, "8", "29ca0687ecd71081f4064aae323d1823")),
            C034
        );
        let login = |mode, tid, token: &[u8]| {
            OutReq::new(
                "b.test",
                body_login_request(mode, tid, "a.test", &digest_b64(token)),
            )
        };
        assert_eq!(
            render(&login(
                Mode::Response,
                "bt-7bf56d57",
                b"78fdb4c914e91c8610af7b0686742dcc"
            )),
            C008
        );
        assert_eq!(
            render(&login(
                Mode::Request,
                "8",
                b"c0800f0a2cf48cceabda495b2c333839"
            )),
            C038
        );
        assert_eq!(
            render(&OutReq::new(
                "b.test",
                body_login_response(Mode::Response, "bt-7bf56d57", "7@a.test")
            )),
            C012
        );
        assert_eq!(
            render(&OutReq::new(
                "b.test",
                body_login_response(Mode::Request, "8", "8@a.test")
            )),
            C042
        );
        let reply = |our: &str, tid: &str, theirs: &str, prim: &str| {
            render(&OutReq::new("b.test", body_session_response(our, tid, prim)).with_sid(theirs))
        };
        assert_eq!(
            reply(
                "7@a.test",
                "bt-msg-1",
                "bsess-bc5c37@b.test",
                &prim_send_ok("76a3650fc4214526f02cc85b2be001cf2")
            ),
            C016
        );
        assert_eq!(
            reply(
                "8@a.test",
                "probe-2",
                "bsess-f709b4@b.test",
                &prim_send_invalid("", &["nobody@a.test".to_owned()])
            ),
            C056
        );
        assert_eq!(
            reply(
                "8@a.test",
                "probe-3",
                "bsess-f709b4@b.test",
                &prim_status(901)
            ),
            C060
        );
        assert_eq!(
            reply(
                "8@a.test",
                "probe-5",
                "bsess-f709b4@b.test",
                GET_PRESENCE_EMPTY
            ),
            C066
        );
        let im = body_send_message_request(
            "8@a.test",
            "0000000002-0",
            "a.test",
            "wv:alice@a.test",
            "wv:bob@b.test",
            "8aee9981801716c039215f69def4ffad7",
            "Hi bob, alice from a.test here",
            "2026-12-25T12:27:59Z",
        );
        assert_eq!(
            render(
                &OutReq::new("b.test", im)
                    .with_tid("0000000002-0")
                    .with_sid("8@a.test")
            ),
            C046
        );
    }

    /// Replays 001–017 (b.test initiates) into an a.test peer: every answer is byte-identical.
    #[tokio::test]
    async fn replays_b_initiated_captures() {
        let a = peer("a.test", &[("alice", "+4915112345678")]).await;
        a.set_peer("b.test", "https://imps.b.test:19090/");
        lock(&a.inner.state).next_row = 6;

        let (answer, posts) = feed(&a, C001).await;
        assert_eq!(answer, Answer::Ok);
        let token = token_of(&a, 7);
        assert_eq!(
            posts,
            [C004.replace("3d2d0184ddf621eccee0558036087513", &token)]
        );
        // Continue with the captured token so that 006's digest matches.
        lock(&a.inner.state).assocs[0].our_token = "3d2d0184ddf621eccee0558036087513".into();
        assert_eq!(feed(&a, C006).await, (Answer::Ok, vec![C008.to_owned()]));
        assert!(!a.is_associated());
        assert_eq!(feed(&a, C010).await, (Answer::Ok, vec![C012.to_owned()]));
        assert!(a.is_associated());
        assert_eq!(
            a.inner.session_for("b.test"),
            Some(("7@a.test".to_owned(), "bsess-bc5c37@b.test".to_owned()))
        );

        let (answer, posts) = feed(&a, C014).await;
        assert_eq!(answer, Answer::Ok);
        assert_eq!(posts.len(), 1);
        let mid = posts[0]
            .split("messageID=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap()
            .to_owned();
        assert_eq!(mid.len(), 33, "{mid}");
        assert_eq!(
            posts[0],
            C016.replace("76a3650fc4214526f02cc85b2be001cf2", &mid)
        );
        assert_eq!(
            a.received(),
            [ReceivedMessage {
                to_local: "alice".into(),
                from_id: "wv:bob@b.test".into(),
                text: "Hello alice, this is bob from b.test (SSP)".into(),
            }]
        );
        a.shutdown().await;
    }

    /// Replays 034–049 (a.test initiates) and the probes 052–074 into an a.test peer.
    #[tokio::test]
    async fn replays_a_initiated_captures_and_probes() {
        let a = peer("a.test", &[("alice", "+4915112345678")]).await;
        a.set_peer("b.test", "https://imps.b.test:19090/");
        {
            let mut s = lock(&a.inner.state);
            s.next_row = 8;
            s.assocs.push(Assoc {
                row: 8,
                domain: "b.test".into(),
                outgoing: true,
                tid: "8".into(),
                our_token: "29ca0687ecd71081f4064aae323d1823".into(),
                their_token: None,
                verified: false,
                their_session: None,
                complete: false,
            });
        }
        assert_eq!(feed(&a, C036).await, (Answer::Ok, vec![C038.to_owned()]));
        assert_eq!(feed(&a, C040).await, (Answer::Ok, vec![C042.to_owned()]));
        assert_eq!(feed(&a, C044).await, (Answer::Ok, vec![]));
        assert_eq!(
            a.inner.session_for("b.test"),
            Some(("8@a.test".to_owned(), "bsess-f709b4@b.test".to_owned()))
        );
        // P1: Baraza's own session ID.
        assert!(matches!(feed(&a, C052).await, (Answer::Close(_), p) if p.is_empty()));
        // P2: unknown recipient.
        assert_eq!(feed(&a, C054).await, (Answer::Ok, vec![C056.to_owned()]));
        // P3: sender outside the session's domain.
        assert_eq!(feed(&a, C058).await, (Answer::Ok, vec![C060.to_owned()]));
        // P4: unknown top element.
        assert_eq!(feed(&a, C062).await, (Answer::BadRequest, vec![]));
        // P5: presence.
        assert_eq!(feed(&a, C064).await, (Answer::Ok, vec![C066.to_owned()]));
        // P6: a second association (row 9), then a wrong digest.
        let (answer, posts) = feed(&a, C068).await;
        assert_eq!(answer, Answer::Ok);
        assert_eq!(
            posts,
            [C070.replace("8b8dc80828ff34ecea2515d29224b4ab", &token_of(&a, 9))]
        );
        assert!(matches!(feed(&a, C072).await, (Answer::Close(_), p) if p.is_empty()));
        assert!(lock(&a.inner.state).assocs.iter().all(|x| x.row != 9));
        // P7: SSP under text/xml.
        assert!(matches!(feed(&a, C074).await, (Answer::Close(_), p) if p.is_empty()));
        assert!(a.received().is_empty());
        // The first association survived all that.
        assert!(a.is_associated());
        a.shutdown().await;
    }

    #[tokio::test]
    async fn two_peers_associate_and_message_both_ways() {
        let a = peer("a.test", &[("alice", "+4915112345678")]).await;
        let b = peer("b.test", &[("bob", "+4930123456")]).await;
        a.set_peer("b.test", &b.url());
        b.set_peer("a.test", &a.url());
        assert!(!a.is_associated());
        a.associate().await.unwrap();
        assert!(a.is_associated());
        assert!(b.is_associated());

        let answer = a
            .send_message("alice", "wv:bob@b.test", "Hello bob")
            .await
            .unwrap();
        let Primitive::SendMessageResponse(r) = answer else {
            panic!("{answer:?}")
        };
        let status = r.status.unwrap();
        assert_eq!(status.code, 200);
        assert_eq!(status.description.as_deref(), Some("Success"));
        assert!(!r.message_id.unwrap().is_empty());
        assert_eq!(
            b.received(),
            [ReceivedMessage {
                to_local: "bob".into(),
                from_id: "wv:alice@a.test".into(),
                text: "Hello bob".into(),
            }]
        );

        // b answers over the association a opened, to alice by MSISDN.
        let answer = b
            .send_message("bob", "+4915112345678@a.test", "Hi alice <3 & more")
            .await
            .unwrap();
        let Primitive::SendMessageResponse(r) = answer else {
            panic!("{answer:?}")
        };
        assert_eq!(r.status.unwrap().code, 200);
        assert_eq!(
            a.wait_received(1, DEADLINE).await.unwrap(),
            [ReceivedMessage {
                to_local: "alice".into(),
                from_id: "wv:bob@b.test".into(),
                text: "Hi alice <3 & more".into(),
            }]
        );

        // Unknown recipient (056).
        let answer = a
            .send_message("alice", "wv:nobody@b.test", "?")
            .await
            .unwrap();
        let Primitive::SendMessageResponse(r) = answer else {
            panic!("{answer:?}")
        };
        assert_eq!(r.message_id.as_deref(), Some(""));
        let status = r.status.unwrap();
        assert_eq!(status.code, 900);
        assert_eq!(status.details.len(), 1);
        assert_eq!(status.details[0].code, 427);
        assert_eq!(
            status.details[0].description.as_deref(),
            Some("invalid userid: nobody@b.test")
        );

        // b opens its own association as well; the newest one is used from then on.
        b.associate().await.unwrap();
        let answer = b
            .send_message("+4930123456", "wv:alice@a.test", "again")
            .await
            .unwrap();
        assert!(matches!(answer, Primitive::SendMessageResponse(_)));
        let got = a.received();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].from_id, "wv:+4930123456@b.test");
        assert!(a.send_message("carol", "wv:bob@b.test", "x").await.is_err());

        let wire = a.wire_log();
        let first = wire
            .iter()
            .find(|e| e.direction == WireDirection::Out && e.raw.starts_with("POST "))
            .unwrap();
        assert!(first.raw.starts_with(
            "POST / HTTP/1.1\r\nConnection: keep-alive\r\nx-wv-transactionid: 1\r\nUser-Agent: Baraza IMPS -- http://www.baraza.im\r\nContent-Type: application/vnd.wv.ssp+xml\r\n"
        ));
        assert!(
            first
                .body()
                .contains(" <SetupTransaction mode=\"Request\" transactionID=\"1\">")
        );
        for w in [&wire, &b.wire_log()] {
            assert!(w.iter().all(|e| e.direction != WireDirection::Closed));
            for e in w.iter().filter(|e| e.raw.starts_with("HTTP/1.1 ")) {
                if e.direction == WireDirection::Out {
                    assert!(
                        e.raw
                            .starts_with("HTTP/1.1 200 OK\r\nServer: Kannel/1.4.5\r\nDate: ")
                    );
                    assert!(
                        e.raw
                            .ends_with("\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n")
                    );
                }
            }
        }
        // One keep-alive connection each way for the whole exchange.
        assert_eq!(a.inner.accepted.load(Ordering::Relaxed), 1);
        assert_eq!(b.inner.accepted.load(Ordering::Relaxed), 1);
        a.shutdown().await;
        b.shutdown().await;
    }

    // -- a raw TLS client playing a Python-like peer (x.test), as in the captures --

    async fn raw_connect(p: &BarazaPeer) -> tokio_rustls::client::TlsStream<TcpStream> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(p.cert_der())).unwrap();
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(format!("imps.{}", p.domain())).unwrap();
        timeout(DEADLINE, async {
            let tcp = TcpStream::connect(p.inner.addr).await.unwrap();
            TlsConnector::from(Arc::new(cfg))
                .connect(name, tcp)
                .await
                .unwrap()
        })
        .await
        .unwrap()
    }

    fn raw_request(content_type: &str, body: &str, close: bool) -> String {
        format!(
            "POST / HTTP/1.1\r\nHost: imps.b.test:18443\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        )
    }

    /// One request with `Connection: close`; everything the server sent before closing.
    async fn raw_post(p: &BarazaPeer, content_type: &str, body: &str) -> String {
        let mut s = raw_connect(p).await;
        timeout(
            DEADLINE,
            s.write_all(raw_request(content_type, body, true).as_bytes()),
        )
        .await
        .unwrap()
        .unwrap();
        let mut out = Vec::new();
        let _ = timeout(DEADLINE, s.read_to_end(&mut out))
            .await
            .expect("the server did not close the connection");
        String::from_utf8(out).unwrap()
    }

    fn py_setup(mode: &str, tid: &str, inner: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"{NS}\">\n<SetupTransaction mode=\"{mode}\" transactionID=\"{tid}\">\n{inner}\n</SetupTransaction>\n</WV-SSP-Message>\n"
        )
    }

    fn py_token(token_element: &str) -> String {
        format!(
            "<SendSecretToken serviceID=\"wv:@x.test\" protocol=\"WV-SSP\" protocolVersion=\"1.3\">\n{token_element}\n</SendSecretToken>"
        )
    }

    fn py_login_request(digest: &str) -> String {
        format!(
            "<LoginRequest serviceID=\"wv:@x.test\" timeToLive=\"86400\">\n<PasswordDigest encoding=\"base64\">{digest}</PasswordDigest>\n</LoginRequest>"
        )
    }

    fn py_im(sid: &str, tid: &str, from: &str, to: &str, text: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<WV-SSP-Message xmlns=\"{NS}\">\n<Session sessionID=\"{sid}\">\n<Transaction mode=\"Request\" transactionID=\"{tid}\">\n<SendMessageRequest deliveryReport=\"No\">\n<MetaInfo clientOriginated=\"Yes\">\n<Requestor serviceID=\"wv:@x.test\">\n<User userID=\"{from}\"/>\n</Requestor>\n</MetaInfo>\n<MessageInfo contentType=\"text/plain\" contentSize=\"{}\">\n<Recipient>\n<User userID=\"{to}\"/>\n</Recipient>\n<Sender>\n<User userID=\"{from}\"/>\n</Sender>\n</MessageInfo>\n<ContentData contentType=\"text/plain\" encoding=\"base64\">{}</ContentData>\n</SendMessageRequest>\n</Transaction>\n</Session>\n</WV-SSP-Message>\n",
            text.len(),
            B64.encode(text)
        )
    }

    /// The first message `p` sent containing all `needles`, waiting for it if needed.
    async fn sent(p: &BarazaPeer, needles: &[&str]) -> WireEntry {
        let hit = |e: &WireEntry| {
            e.direction == WireDirection::Out && needles.iter().all(|n| e.raw.contains(n))
        };
        let found = p
            .inner
            .wait_until(DEADLINE, || lock(&p.inner.wire).iter().any(hit))
            .await;
        assert!(found, "nothing sent with {needles:?}: {:#?}", p.wire_log());
        p.wire_log().into_iter().find(hit).unwrap()
    }

    /// The token `p` sent in its SendSecretToken Response with transaction ID `row`.
    async fn token_sent(p: &BarazaPeer, row: u64) -> String {
        let e = sent(
            p,
            &[
                &format!("x-wv-transactionid: {row}\r\n"),
                &format!(" <SetupTransaction mode=\"Response\" transactionID=\"{row}\">"),
                "procotolVersion=\"1.3\"",
            ],
        )
        .await;
        let t = e
            .body()
            .split("<SecretToken>\n")
            .nth(1)
            .and_then(|r| r.split("\n</SecretToken>").next())
            .unwrap()
            .to_owned();
        assert_eq!(t.len(), 32);
        t
    }

    const OK_CLOSE: &str =
        "\r\nContent-Length: 0\r\nConnection: Close\r\nConnection: keep-alive\r\n\r\n";

    #[tokio::test]
    async fn http_errors_and_responder_role_over_raw_tls() {
        let p = peer("b.test", &[("bob", "+4930123456")]).await;
        // p's async answers go to another peer, which matches none of them and drops them.
        let sink = peer("x.test", &[]).await;
        p.set_peer("x.test", &sink.url());
        let ct = SSP_CONTENT_TYPE;

        // Keep-alive: several requests on one connection; P4 and garbage give an empty 400.
        let foo = format!(
            "<?xml version=\"1.0\"?>\n<WV-SSP-Message xmlns=\"{NS}\">\n<Foo transactionID=\"x\"><Bar/></Foo>\n</WV-SSP-Message>\n"
        );
        let mut s = raw_connect(&p).await;
        let mut buf = Vec::new();
        for body in [foo.as_str(), foo.as_str(), "not xml at all"] {
            timeout(
                DEADLINE,
                s.write_all(raw_request(ct, body, false).as_bytes()),
            )
            .await
            .unwrap()
            .unwrap();
            let resp = timeout(DEADLINE, read_message(&mut s, &mut buf, true))
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let raw = String::from_utf8(resp.raw).unwrap();
            assert!(
                raw.starts_with("HTTP/1.1 400 Bad Request\r\nServer: Kannel/1.4.5\r\nDate: "),
                "{raw}"
            );
            assert!(
                raw.ends_with(" GMT\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"),
                "{raw}"
            );
        }
        drop(s);
        // `Connection: close`: the duplicated Connection header, then the server closes.
        let r = raw_post(&p, ct, &foo).await;
        assert!(r.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{r}");
        assert!(r.ends_with(OK_CLOSE), "{r}");

        // Closed without any HTTP response: P7 (text/xml), an unknown session, an unmatched
        // LoginRequest.
        let im = py_im(
            "xs-1@x.test",
            "m-0",
            "wv:carol@x.test",
            "wv:bob@b.test",
            "x",
        );
        assert_eq!(raw_post(&p, "text/xml", &im).await, "");
        assert_eq!(raw_post(&p, ct, &im).await, "");
        let stray = py_setup("Request", "nope", &py_login_request("AAAA"));
        assert_eq!(raw_post(&p, ct, &stray).await, "");

        // P6: an association with a wrong digest is closed and forgotten.
        let sst = py_setup(
            "Request",
            "xt-1",
            &py_token("<SecretToken>00112233445566778899aabbccddeeff</SecretToken>"),
        );
        let r = raw_post(&p, ct, &sst).await;
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\nServer: Kannel/1.4.5\r\n"),
            "{r}"
        );
        assert!(r.ends_with(OK_CLOSE), "{r}");
        let token1 = token_sent(&p, 1).await;
        let wrong = py_setup("Request", "xt-1", &py_login_request(&digest_b64(b"wrong")));
        assert_eq!(raw_post(&p, ct, &wrong).await, "");
        let right = py_setup(
            "Request",
            "xt-1",
            &py_login_request(&digest_b64(token1.as_bytes())),
        );
        assert_eq!(raw_post(&p, ct, &right).await, "");
        assert!(
            p.wire_log()
                .iter()
                .any(|e| e.direction == WireDirection::Closed && e.raw.contains("wrong digest"))
        );

        // A good association, with a base64-encoded SecretToken this time.
        let sst = py_setup(
            "Request",
            "xt-2",
            &py_token(&format!(
                "<SecretToken encoding=\"base64\">{}</SecretToken>",
                B64.encode("sekrit-x")
            )),
        );
        assert!(raw_post(&p, ct, &sst).await.ends_with(OK_CLOSE));
        let token2 = token_sent(&p, 2).await;
        let login = py_setup(
            "Request",
            "xt-2",
            &py_login_request(&digest_b64(token2.as_bytes())),
        );
        assert!(raw_post(&p, ct, &login).await.ends_with(OK_CLOSE));
        sent(
            &p,
            &[
                "<SetupTransaction transactionID=\"xt-2\" mode=\"Response\">\n<LoginRequest serviceID=\"wv:@b.test\"",
                &format!("\n{}\n</PasswordDigest>", kannel_b64(&Md5::digest(b"sekrit-x"))),
            ],
        )
        .await;
        let login_response = py_setup(
            "Request",
            "xt-2",
            "<LoginResponse sessionID=\"xs-1@x.test\" timeToLive=\"86400\">\n<Status code=\"200\"/>\n</LoginResponse>",
        );
        assert!(raw_post(&p, ct, &login_response).await.ends_with(OK_CLOSE));
        sent(
            &p,
            &["mode=\"Response\">\n<LoginResponse sessionID=\"2@b.test\" timeToLive=\"86400\">"],
        )
        .await;

        // P1: Baraza's own session ID is refused.
        let own = py_im("2@b.test", "m-1", "wv:carol@x.test", "wv:bob@b.test", "x");
        assert_eq!(raw_post(&p, ct, &own).await, "");
        // Delivery by MSISDN; the answer comes async under p's session ID.
        let im = py_im(
            "xs-1@x.test",
            "m-2",
            "wv:carol@x.test",
            "wv:+4930123456@b.test",
            "hello bob",
        );
        assert!(raw_post(&p, ct, &im).await.ends_with(OK_CLOSE));
        assert_eq!(
            p.wait_received(1, DEADLINE).await.unwrap(),
            [ReceivedMessage {
                to_local: "bob".into(),
                from_id: "wv:carol@x.test".into(),
                text: "hello bob".into(),
            }]
        );
        sent(
            &p,
            &[
                "\r\nx-wv-sessionid: xs-1@x.test\r\n",
                "<Session sessionID=\"2@b.test\">\n<Transaction mode=\"Response\" transactionID=\"m-2\">\n<SendMessageResponse messageID=\"",
                "<StatusDescription>Success</StatusDescription>",
            ],
        )
        .await;
        // P3: a sender outside x.test.
        let im = py_im(
            "xs-1@x.test",
            "m-3",
            "wv:mallory@c.test",
            "wv:bob@b.test",
            "x",
        );
        assert!(raw_post(&p, ct, &im).await.ends_with(OK_CLOSE));
        sent(
            &p,
            &["transactionID=\"m-3\">\n<Status code=\"901\"/>\n</Transaction>"],
        )
        .await;
        // P2: an unknown recipient.
        let im = py_im(
            "xs-1@x.test",
            "m-4",
            "wv:carol@x.test",
            "wv:nobody@b.test",
            "x",
        );
        assert!(raw_post(&p, ct, &im).await.ends_with(OK_CLOSE));
        sent(
            &p,
            &["transactionID=\"m-4\">\n<SendMessageResponse messageID=\"\">\n<Status code=\"900\">\n<StatusDescription>Errors</StatusDescription>\n<DetailedResult code=\"427\">\n<StatusDescription>invalid userid: nobody@b.test</StatusDescription>"],
        )
        .await;
        assert_eq!(p.received().len(), 1);
        // The sink dropped p's unsolicited posts without any response.
        assert!(
            sink.wire_log()
                .iter()
                .any(|e| e.direction == WireDirection::Closed)
        );
        p.shutdown().await;
        sink.shutdown().await;
    }
}
