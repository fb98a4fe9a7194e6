//! The relay: the gateway at run time.
//!
//! Two listeners share one [`Gateway`]: the peer-facing TLS listener (`inbound`: peers to our
//! core) and the core-facing listener (`outbound`: our core to the world). Each accepted
//! request gets exactly one SSP answer before its deadline: the far side's, or the gateway's
//! own error (503 with `TryAgainTimeout`, 504, 516, 531, 901, ...).

pub mod assoc;
pub mod cluster;
pub mod exchange;
pub mod http;
pub mod inbound;
pub mod merge;
pub mod outbound;
pub mod peers;
pub mod pending;
pub mod route;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, ResponseMode};
use crate::directory::Directory;
use crate::ops::metrics::Metrics;
use crate::rewrite::Rewriter;
use crate::ssp::Codec;
use crate::tls::{self, TlsError};
use crate::token::TokenKeys;
use assoc::Associations;
use http::{Connector, SspClient};
use peers::{Identity, KeyedLimiter, PeerTable};
use pending::Pending;

/// Direction of a body seen by the wire tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapDir {
    /// Sent by the gateway.
    Out,
    /// Received by the gateway.
    In,
}

/// Observer of every SSP body exchanged with peers and the core: `(direction, party, body)`.
/// Used by tests to assert what crossed the wire before encryption.
pub type WireTap = Arc<dyn Fn(TapDir, &str, &str) + Send + Sync>;

/// The link to the core.
pub struct CoreLink {
    /// Where to POST.
    pub urls: Vec<::http::Uri>,
    /// The client.
    pub client: SspClient,
    /// How the core answers.
    pub mode: ResponseMode,
}

/// The running gateway's shared state.
pub struct Gateway {
    /// Configuration.
    pub cfg: Arc<Config>,
    /// Subscriber directory (swapped on reload).
    pub dir: ArcSwap<Directory>,
    /// ID rewriter.
    pub rw: Rewriter,
    /// SSP parser.
    pub codec: Codec,
    /// Transaction-ID token keys.
    pub keys: TokenKeys,
    /// Requests waiting for async answers.
    pub pending: Pending,
    /// Peers.
    pub peers: PeerTable,
    /// Associations.
    pub assoc: Associations,
    /// The core.
    pub core: Option<CoreLink>,
    /// Metrics.
    pub metrics: Metrics,
    /// Per-originator rate limiter.
    pub originators: KeyedLimiter,
    /// Destination resolution (ENUM/SRV).
    pub resolver: Option<Arc<crate::resolve::Resolver>>,
    /// Our session ID towards the core.
    pub core_session: String,
    /// Client for the other replicas' admin listeners (`[cluster] siblings`).
    pub(crate) siblings: Option<SspClient>,
    assoc_locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    tap: Option<WireTap>,
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Accepted work not finished yet (including async answer delivery), for draining.
    work: Arc<WorkCount>,
    /// Set at shutdown: new requests are refused (503) while answers are still taken in.
    draining: std::sync::atomic::AtomicBool,
    /// Predecessors' requests already answered by token: (instance, request ID) -> issued.
    /// A sender retrying an answer must not give the originator a second one.
    routed_by_token: std::sync::Mutex<HashMap<(u32, u64), u32>>,
}

/// Accepted work not finished yet. A counter and a wake-up rather than a semaphore: work
/// accepted while shutdown waits (answers still coming in) must be counted too, and a
/// semaphore with a waiter hands out no more permits.
#[derive(Default)]
pub(crate) struct WorkCount {
    n: std::sync::atomic::AtomicUsize,
    idle: tokio::sync::Notify,
}

/// Marks one piece of accepted work; shutdown waits until all are dropped.
pub(crate) struct Work(Arc<WorkCount>);

impl Drop for Work {
    fn drop(&mut self) {
        if self.0.n.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("public_domain", &self.cfg.gateway.public_domain)
            .finish_non_exhaustive()
    }
}

/// Start-up failure.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Directory problem.
    #[error(transparent)]
    Directory(#[from] crate::directory::DirectoryError),
    /// TLS problem.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Binding a listener failed.
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// Key file problem.
    #[error("{0}")]
    Keys(String),
}

/// Options the config file does not carry (tests, the demo).
#[derive(Default)]
pub struct StartOptions {
    /// Observe every SSP body exchanged.
    pub tap: Option<WireTap>,
    /// Use this resolver instead of building one from the config.
    pub resolver: Option<Arc<crate::resolve::Resolver>>,
    /// The clock of the resolver built from the config (tests advance a manual one).
    pub clock: Option<crate::resolve::Clock>,
    /// Already-bound listeners to use instead of binding `[listen]` addresses (so a test can
    /// know every port before writing any config).
    pub listeners: PreBound,
}

/// Pre-bound listeners for [`StartOptions`].
#[derive(Default)]
pub struct PreBound {
    /// Peer listener.
    pub peer: Option<std::net::TcpListener>,
    /// Core listener.
    pub core: Option<std::net::TcpListener>,
    /// Admin listener.
    pub admin: Option<std::net::TcpListener>,
}

fn adopt(l: std::net::TcpListener) -> Result<TcpListener, StartError> {
    let addr = l
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    l.set_nonblocking(true)
        .map_err(|e| StartError::Bind(addr, e))?;
    TcpListener::from_std(l).map_err(|e| StartError::Bind(addr, e))
}

/// A started gateway: its addresses and a handle to stop it.
pub struct Running {
    /// The shared state.
    pub gateway: Arc<Gateway>,
    /// Bound peer listener.
    pub peer_addr: Option<SocketAddr>,
    /// Bound core listener.
    pub core_addr: Option<SocketAddr>,
    /// Bound admin listener.
    pub admin_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("peer_addr", &self.peer_addr)
            .field("core_addr", &self.core_addr)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// Phase one of a graceful stop: refuse new requests with HTTP 503 (senders fail over;
    /// nothing accepted is lost) while answers to requests in flight are still taken in, and
    /// wait until those are finished (at most `[timeouts] drain` plus the request deadline).
    pub async fn drain(&self) {
        self.gateway
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let within = self.gateway.cfg.timeouts.drain + self.gateway.cfg.timeouts.request;
        if !self.gateway.drain(within).await {
            tracing::warn!("shutdown deadline passed with requests still in flight");
        }
    }

    /// Graceful stop: [`Running::drain`], then close the listeners.
    pub async fn shutdown(self) {
        self.drain().await;
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// A status code as decimal text in `buf` (a metric label, without allocating). SSP codes
/// have three digits; anything else a far side sends is `other`, so the far side cannot
/// grow the number of series.
fn code_str(code: u16, buf: &mut [u8; 5]) -> &str {
    if !(100..=999).contains(&code) {
        return "other";
    }
    let mut n = code;
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

fn load_keys(cfg: &Config) -> Result<TokenKeys, StartError> {
    // Answers are accepted for a while after the request deadline; later ones are stale.
    let max_age = (cfg.timeouts.request.as_secs() as u32)
        .saturating_mul(6)
        .max(60);
    let Some(path) = &cfg.gateway.hmac_key_file else {
        if !cfg.cluster.siblings.is_empty() {
            return Err(StartError::Keys(format!(
                "{}: [cluster] siblings need [gateway] hmac_key_file, the same key on every replica",
                cfg.path.display()
            )));
        }
        tracing::warn!(
            "no [gateway] hmac_key_file: using a random key, so answers to requests sent before a \
             restart, or by another replica, will be refused"
        );
        return Ok(TokenKeys::random(max_age));
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| StartError::Keys(format!("{}: {e}", path.display())))?;
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let bytes = (0..l.len())
            .step_by(2)
            .map(|j| l.get(j..j + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect::<Option<Vec<u8>>>()
            .filter(|b| b.len() >= 32)
            .ok_or_else(|| {
                StartError::Keys(format!(
                    "{}:{}: a key is at least 64 hex digits (32 bytes)",
                    path.display(),
                    i + 1
                ))
            })?;
        keys.push(bytes);
    }
    if keys.is_empty() {
        return Err(StartError::Keys(format!("{}: no key", path.display())));
    }
    Ok(TokenKeys::new(&keys, max_age).with_replica(cfg.cluster.replica))
}

impl Gateway {
    /// Build the state (no sockets yet).
    pub fn new(cfg: Config, opts: &StartOptions) -> Result<Gateway, StartError> {
        let cfg = Arc::new(cfg);
        let dir = Directory::load(&cfg.directory)?;
        let identity = match (&cfg.tls.cert, &cfg.tls.key) {
            (Some(c), Some(k)) => {
                let (chain, key) = tls::load_identity(c, k)?;
                Some(Identity {
                    chain,
                    key: Arc::new(key),
                })
            }
            _ => None,
        };
        let peers = PeerTable::new(cfg.clone(), identity.clone())?;
        let core = match &cfg.core {
            Some(c) => {
                let trust = if !c.pins.is_empty() {
                    Some(tls::ServerTrust::Pins(c.pins.clone()))
                } else if !c.trust.is_empty() {
                    Some(tls::ServerTrust::Roots(Arc::new(tls::load_roots(
                        &c.trust,
                    )?)))
                } else {
                    None
                };
                let uri: ::http::Uri = c.url.parse().map_err(|_| {
                    StartError::Tls(TlsError::Verifier(format!("core url {:?}", c.url)))
                })?;
                let tls_cfg = match trust {
                    Some(t) => {
                        let ident = identity
                            .as_ref()
                            .map(|i| (i.chain.clone(), i.key.clone_key()));
                        let name = uri.host().unwrap_or("localhost").to_owned();
                        let name = rustls_pki_types::ServerName::try_from(name)
                            .map_err(|e| TlsError::Verifier(e.to_string()))?;
                        Some((Arc::new(tls::client_config(t, ident, false)?), name))
                    }
                    None => None,
                };
                let t = &cfg.timeouts;
                Some(CoreLink {
                    urls: vec![uri],
                    client: SspClient::new(
                        Connector::new(tls_cfg, t.connect, t.handshake),
                        t.idle,
                        cfg.limits.xml.max_body,
                    ),
                    mode: c.mode,
                })
            }
            None => None,
        };
        let metrics = Metrics::new();
        metrics.directory_entries.set(dir.len() as i64);
        let resolver = match (&opts.resolver, &cfg.resolver) {
            (Some(r), _) => Some(r.clone()),
            (None, Some(spec)) => Some(Arc::new(crate::resolve::Resolver::new(
                &cfg,
                spec.clone(),
                metrics.clone(),
                opts.clock.clone().unwrap_or(crate::resolve::Clock::System),
            ))),
            (None, None) => None,
        };
        Ok(Gateway {
            keys: load_keys(&cfg)?,
            rw: Rewriter::new(&cfg),
            codec: Codec {
                limits: cfg.limits.xml,
                extra_namespaces: cfg.gateway.extra_namespaces.clone(),
            },
            dir: ArcSwap::from_pointee(dir),
            pending: Pending::new(),
            peers,
            assoc: Associations::new(
                &cfg.gateway.public_domain,
                std::time::Duration::from_secs(86_400),
            ),
            core,
            originators: peers::keyed_limiter(
                cfg.policy.originator_rate,
                cfg.policy.originator_burst,
            ),
            core_session: format!("ssp-gateway@{}", cfg.gateway.public_domain),
            siblings: (!cfg.cluster.siblings.is_empty()).then(|| {
                let t = &cfg.timeouts;
                SspClient::new(
                    Connector::new(None, t.connect, t.handshake),
                    t.idle,
                    cfg.limits.xml.max_body,
                )
            }),
            assoc_locks: std::sync::Mutex::new(HashMap::new()),
            tap: opts.tap.clone(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(cfg.limits.max_in_flight)),
            work: Arc::default(),
            routed_by_token: std::sync::Mutex::default(),
            draining: std::sync::atomic::AtomicBool::new(false),
            resolver,
            metrics,
            cfg,
        })
    }

    /// Count, gauge and time the handling of one request (`direction`: `inbound` from peers,
    /// `outbound` from the core) around `answer`.
    pub(crate) async fn metered(
        &self,
        direction: &'static str,
        primitive: &'static str,
        answer: impl std::future::Future<Output = crate::ssp::Primitive>,
    ) -> crate::ssp::Primitive {
        let started = std::time::Instant::now();
        self.metrics
            .requests
            .with_label_values(&[direction, primitive])
            .inc();
        // Decremented on drop: a handler dropped mid-request (its client went away) leaves.
        struct InFlight(prometheus::IntGauge);
        impl Drop for InFlight {
            fn drop(&mut self) {
                self.0.dec();
            }
        }
        let in_flight = InFlight(self.metrics.in_flight.with_label_values(&[direction]));
        in_flight.0.inc();
        let answer = answer.await;
        drop(in_flight);
        let mut buf = [0u8; 5];
        self.metrics
            .answers
            .with_label_values(&[direction, code_str(merge::answer_code(&answer), &mut buf)])
            .inc();
        self.metrics
            .latency
            .with_label_values(&[direction])
            .observe(started.elapsed().as_secs_f64());
        answer
    }

    pub(crate) fn tap(&self, dir: TapDir, party: &str, body: &str) {
        if let Some(t) = &self.tap {
            t(dir, party, body);
        }
    }

    /// Reload the subscriber directory from its file (SIGHUP, `POST /reload`). The old one
    /// stays in use if the new one does not load.
    pub fn reload(&self) -> Result<usize, crate::directory::DirectoryError> {
        let dir = Directory::load(&self.cfg.directory)?;
        let n = dir.len();
        self.dir.store(Arc::new(dir));
        self.metrics.directory_entries.set(n as i64);
        if let Some(r) = &self.resolver {
            // Cached routes may point where a number no longer is.
            r.clear();
        }
        tracing::info!(entries = n, "directory reloaded");
        Ok(n)
    }

    /// The per-domain lock serialising association attempts.
    pub(crate) fn assoc_lock(&self, domain: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = match self.assoc_locks.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        m.entry(domain.to_owned()).or_default().clone()
    }

    /// Whether the gateway is draining for shutdown.
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How the core wants IDs written (for inbound rewriting).
    pub(crate) fn core_view(&self) -> crate::rewrite::PeerView<'_> {
        crate::rewrite::PeerView {
            style: self
                .cfg
                .core
                .as_ref()
                .map(|c| c.id_style)
                .unwrap_or_default(),
            domain: Some(self.rw.public_domain()),
        }
    }

    /// Our session ID towards the core: the association's when the core associates.
    pub(crate) fn core_session_id(&self) -> String {
        match &self.cfg.core {
            Some(c) if c.auth == crate::config::CoreAuth::Association => self
                .assoc
                .established(self.rw.primary_core_domain())
                .map(|e| e.our_session)
                .unwrap_or_else(|| self.core_session.clone()),
            _ => self.core_session.clone(),
        }
    }

    /// Track one piece of accepted work until the returned guard is dropped.
    pub(crate) fn track(&self) -> Work {
        self.work
            .n
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Work(self.work.clone())
    }

    /// Wait until all accepted work is finished, at most `within`.
    pub async fn drain(&self, within: std::time::Duration) -> bool {
        let all_done = async {
            loop {
                // Registered before the check, so a finish in between is not missed.
                let idle = self.work.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if self.work.n.load(std::sync::atomic::Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(within, all_done).await.is_ok()
    }

    /// Whether this is the first answer routed by token for the request `tok` names (within
    /// the request timeout, while at most 65,536 such requests are remembered).
    pub(crate) fn first_routed(&self, tok: &crate::token::Token) -> bool {
        const REMEMBERED: usize = 1 << 16;
        let Ok(mut seen) = self.routed_by_token.lock() else {
            return true;
        };
        if seen.len() >= REMEMBERED {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let keep = self.cfg.timeouts.request.as_secs();
            seen.retain(|_, issued| u64::from(*issued) + keep > now);
            if seen.len() >= REMEMBERED {
                seen.clear();
            }
        }
        seen.insert((tok.instance, tok.request_id), tok.issued)
            .is_none()
    }

    /// Undo [`Gateway::first_routed`] for `tok` (its delivery failed).
    pub(crate) fn forget_routed(&self, tok: &crate::token::Token) {
        if let Ok(mut seen) = self.routed_by_token.lock() {
            seen.remove(&(tok.instance, tok.request_id));
        }
    }

    /// A slot for one request in flight, if the limit allows.
    pub(crate) fn admit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.in_flight.clone().try_acquire_owned().ok()
    }
}

fn unreachable_listener() -> Result<TcpListener, StartError> {
    Err(StartError::Bind(
        SocketAddr::from(([0, 0, 0, 0], 0)),
        std::io::Error::other("no listener"),
    ))
}

type Acceptor = (tokio_rustls::TlsAcceptor, std::time::Duration);

/// TLS for the peer listener: our certificate, and the peers' trust anchors for client
/// certificates (optional there: association-authenticated peers have none).
fn peer_tls(gw: &Gateway) -> Result<Acceptor, StartError> {
    let cfg = &gw.cfg;
    let (Some(cert), Some(key)) = (&cfg.tls.cert, &cfg.tls.key) else {
        return Err(StartError::Tls(TlsError::Verifier(
            "peer listener without [tls] cert/key".into(),
        )));
    };
    let roots = gw.peers.listener_roots()?;
    let sc = tls::server_config(
        tls::load_certs(cert)?,
        tls::load_key(key)?,
        Some(roots),
        false,
    )?;
    Ok((
        tokio_rustls::TlsAcceptor::from(Arc::new(sc)),
        cfg.timeouts.handshake,
    ))
}

/// TLS for the core listener, when `[core] tls` asks for it (client certificates required
/// when the core authenticates by mTLS).
fn core_tls(gw: &Gateway) -> Result<Option<Acceptor>, StartError> {
    let cfg = &gw.cfg;
    let Some(c) = cfg.core.as_ref().filter(|c| c.tls) else {
        return Ok(None);
    };
    let (Some(cert), Some(key)) = (&cfg.tls.cert, &cfg.tls.key) else {
        return Err(StartError::Tls(TlsError::Verifier(
            "core TLS without [tls] cert/key".into(),
        )));
    };
    let roots = if c.trust.is_empty() {
        None
    } else {
        Some(tls::load_roots(&c.trust)?)
    };
    let require = c.auth == crate::config::CoreAuth::Mtls;
    let sc = tls::server_config(tls::load_certs(cert)?, tls::load_key(key)?, roots, require)?;
    Ok(Some((
        tokio_rustls::TlsAcceptor::from(Arc::new(sc)),
        cfg.timeouts.handshake,
    )))
}

/// Everything `start` checks before it binds a port: the directory, the transaction-ID keys,
/// our certificate and key (and that they match), every peer's and the core's trust anchors
/// and pins, and the listeners' TLS. `ssp-gateway check` runs this, so a config that passes
/// it fails to start only for want of its ports.
pub fn check(cfg: Config) -> Result<Gateway, StartError> {
    let gw = Gateway::new(cfg, &StartOptions::default())?;
    if gw.cfg.listen.peer.is_some() {
        peer_tls(&gw)?;
    }
    if gw.cfg.listen.core.is_some() {
        core_tls(&gw)?;
    }
    Ok(gw)
}

/// Bind the listeners named in the config and start serving.
pub async fn start(cfg: Config, mut opts: StartOptions) -> Result<Running, StartError> {
    let gw = Arc::new(Gateway::new(cfg, &opts)?);
    let cfg = gw.cfg.clone();
    let (shutdown, rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|e| StartError::Bind(addr, e))
    };

    let mut peer_addr = None;
    let pre_peer = opts.listeners.peer.take().map(adopt).transpose()?;
    if pre_peer.is_some() || cfg.listen.peer.is_some() {
        let l = match (pre_peer, cfg.listen.peer) {
            (Some(l), _) => l,
            (None, Some(addr)) => bind(addr).await?,
            (None, None) => unreachable_listener()?,
        };
        peer_addr = l.local_addr().ok();
        let acceptor = peer_tls(&gw)?;
        let g = gw.clone();
        let handler: http::Handler = Arc::new(move |req, info| {
            let g = g.clone();
            Box::pin(async move { g.on_peer(req, info).await })
        });
        let m = gw.metrics.clone();
        let on_tls = Arc::new(move |_: &str| m.tls_failures.with_label_values(&["peer"]).inc());
        tasks.push(tokio::spawn(http::serve(
            l,
            Some(acceptor),
            handler,
            rx.clone(),
            cfg.limits.max_connections,
            cfg.timeouts.drain,
            on_tls,
        )));
    }

    let mut core_addr = None;
    let pre_core = opts.listeners.core.take().map(adopt).transpose()?;
    if pre_core.is_some() || cfg.listen.core.is_some() {
        let l = match (pre_core, cfg.listen.core) {
            (Some(l), _) => l,
            (None, Some(addr)) => bind(addr).await?,
            (None, None) => unreachable_listener()?,
        };
        core_addr = l.local_addr().ok();
        let tls = core_tls(&gw)?;
        let g = gw.clone();
        let handler: http::Handler = Arc::new(move |req, info| {
            let g = g.clone();
            Box::pin(async move { g.on_core(req, info).await })
        });
        let m = gw.metrics.clone();
        let on_tls = Arc::new(move |_: &str| m.tls_failures.with_label_values(&["core"]).inc());
        tasks.push(tokio::spawn(http::serve(
            l,
            tls,
            handler,
            rx.clone(),
            cfg.limits.max_connections,
            cfg.timeouts.drain,
            on_tls,
        )));
    }

    let mut admin_addr = None;
    let pre_admin = opts.listeners.admin.take().map(adopt).transpose()?;
    if pre_admin.is_some() || cfg.listen.admin.is_some() {
        let l = match (pre_admin, cfg.listen.admin) {
            (Some(l), _) => l,
            (None, Some(addr)) => bind(addr).await?,
            (None, None) => unreachable_listener()?,
        };
        admin_addr = l.local_addr().ok();
        let g = gw.clone();
        let handler: http::Handler = Arc::new(move |req, _info| {
            let g = g.clone();
            Box::pin(async move { crate::ops::admin::handle(&g, req).await })
        });
        tasks.push(tokio::spawn(http::serve(
            l,
            None,
            handler,
            rx.clone(),
            64,
            cfg.timeouts.drain,
            Arc::new(|_: &str| {}),
        )));
    }

    if gw.siblings.is_some() {
        let g = gw.clone();
        let stop = rx.clone();
        tasks.push(tokio::spawn(async move { g.watch_cluster(stop).await }));
    }
    {
        // The per-originator limiter keeps a state per user ID a peer names; forget those
        // back at a full bucket, or a peer naming new IDs would grow it for ever.
        let g = gw.clone();
        let mut stop = rx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
                    _ = stop.changed() => return,
                }
                g.originators.retain_recent();
                g.originators.shrink_to_fit();
            }
        }));
    }

    tracing::info!(
        public_domain = %cfg.gateway.public_domain,
        peer = ?peer_addr, core = ?core_addr, admin = ?admin_addr,
        "gateway started"
    );
    Ok(Running {
        gateway: gw,
        peer_addr,
        core_addr,
        admin_addr,
        shutdown,
        tasks,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// Work accepted while shutdown already waits (answers still coming in) is waited for too.
    #[tokio::test]
    async fn drain_waits_for_work_accepted_during_the_drain() {
        let cfg = crate::config::Config::from_str(
            std::path::Path::new("routes/test.toml"),
            "[gateway]\npublic_domain = \"opx.example\"\ncore_domains = [\"core.opx.example\"]\ncountry_code = \"46\"\n",
        )
        .unwrap();
        let gw = std::sync::Arc::new(super::Gateway::new(cfg, &Default::default()).unwrap());
        assert!(gw.drain(Duration::ZERO).await, "nothing to wait for");
        let first = gw.track();
        let g = gw.clone();
        let drained = tokio::spawn(async move { g.drain(Duration::from_secs(30)).await });
        tokio::task::yield_now().await;
        let second = gw.track();
        drop(first);
        tokio::task::yield_now().await;
        assert!(!drained.is_finished(), "the second is still running");
        drop(second);
        assert!(drained.await.unwrap());
        let late = gw.track();
        assert!(
            !gw.drain(Duration::from_millis(20)).await,
            "a deadline ends the wait"
        );
        drop(late);
    }

    #[test]
    fn status_codes_as_labels() {
        let mut buf = [0u8; 5];
        for code in [100u16, 200, 531, 999] {
            assert_eq!(super::code_str(code, &mut buf), code.to_string());
        }
        for code in [0u16, 7, 1000, 65535] {
            assert_eq!(super::code_str(code, &mut buf), "other");
        }
    }
}
