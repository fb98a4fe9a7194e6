//! The gateway as a service: build the state from the configuration, bind the listeners,
//! run the background loops, and stop gracefully through the one [`Drain`].
//!
//! Three listeners: the peer-facing TLS listener and the core-facing one hand every POST to
//! [`pipeline::handle`]; the admin listener serves [`crate::ops::admin`].

mod admin;
pub mod listen;
pub mod notify;
mod reload;
mod sip;
mod xmpp;

pub use reload::{Control, ReloadError, Reloaded};

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::directory::Directory;
use crate::drain::Drain;
use crate::links::peer::Identity;
use crate::links::{LinkParts, Links, Live, WireTap};
use crate::ops::metrics::Metrics;
use crate::pipeline::{self, Gateway, Listener};
use crate::resolve::{Clock, Resolver};
use crate::store::Store;
use crate::tls::{self, TlsError};
use crate::token::TokenKeys;
use reload::Which;

pub use crate::links::TapDir;

/// Start-up failure.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Directory problem.
    #[error(transparent)]
    Directory(#[from] crate::directory::DirectoryError),
    /// TLS problem.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Binding a listener failed: the key that names it, the config file, the address.
    #[error("cannot listen on {addr} ([listen] {key} in {}): {error}", file.display())]
    Bind {
        /// The `[listen]` key.
        key: &'static str,
        /// The config file.
        file: std::path::PathBuf,
        /// The address.
        addr: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// The admin token file cannot be used.
    #[error("{0}")]
    Admin(String),
    /// Key file problem.
    #[error(transparent)]
    Keys(#[from] crate::token::KeyError),
    /// The state store cannot be opened.
    #[error("{0} (check [store] url)")]
    Store(#[from] crate::store::StoreError),
    /// The SIP translator cannot listen.
    #[error("{0} (check [sip] listen and tls_listen)")]
    Sip(String),
    /// The XMPP translator cannot listen, or its TLS or secret cannot be loaded.
    #[error("{0} (check [xmpp])")]
    Xmpp(String),
}

/// Options the config file does not carry (tests, the demo).
#[derive(Default)]
pub struct StartOptions {
    /// Observe every SSP body exchanged.
    pub tap: Option<WireTap>,
    /// Use this resolver instead of building one from the config.
    pub resolver: Option<Arc<Resolver>>,
    /// The clock of the resolver built from the config (tests advance a manual one).
    pub clock: Option<Clock>,
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
    control: Arc<Control>,
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
    /// Reload (SIGHUP, `POST /reload`): see [`Control::reload`].
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        self.control.reload()
    }

    /// Phase one of a graceful stop: refuse new requests with HTTP 503 (senders fail over;
    /// nothing accepted is lost) while answers to requests in flight are still taken in, and
    /// wait until those are finished (at most `[timeouts] drain` plus the request deadline).
    pub async fn drain(&self) {
        let drain = self.gateway.drain();
        drain.begin();
        let within = {
            let t = &self.gateway.cfg().timeouts;
            t.drain + t.request
        };
        if !drain.idle(within).await {
            tracing::warn!("shutdown deadline passed with requests still in flight");
        }
    }

    /// Graceful stop: [`Running::drain`], then close the listeners and end the loops.
    pub async fn shutdown(self) {
        self.drain().await;
        self.gateway.drain().stop();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Build the state (no sockets yet). `kept`: the token key the state store keeps (used when
/// no `hmac_key_file` is configured).
fn gateway(cfg: Config, opts: &StartOptions, kept: Option<Vec<u8>>) -> Result<Gateway, StartError> {
    let cfg = Arc::new(cfg);
    let dir = Directory::load(&cfg.directory)?;
    let metrics = Metrics::new();
    metrics.directory_entries.set(dir.len() as i64);
    let resolver = match (&opts.resolver, &cfg.resolver) {
        (Some(r), _) => Some(r.clone()),
        (None, Some(spec)) => Some(Arc::new(Resolver::new(
            &cfg,
            spec.clone(),
            metrics.clone(),
            opts.clock.clone().unwrap_or(Clock::System),
        ))),
        (None, None) => None,
    };
    let links = Links::new(LinkParts {
        keys: TokenKeys::load(&cfg, kept)?,
        cfg,
        dir,
        metrics,
        resolver,
        tap: opts.tap.clone(),
        drain: Drain::new(),
    })?;
    Ok(Gateway::new(links))
}

/// The state store of `cfg`, opened (created and migrated as needed), and the token key it
/// keeps for this gateway (made on first use; replicas sharing the store share it).
async fn open_store(cfg: &Config) -> Result<(Arc<Store>, Vec<u8>), StartError> {
    let store = Store::open(&cfg.store.location).await?;
    let fresh: String = rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let hex = store.kv_init("gateway", "token-key", &fresh).await?;
    let key = (0..hex.len())
        .step_by(2)
        .filter_map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Vec<u8>>();
    if key.len() < 32 {
        return Err(StartError::Store(crate::store::StoreError(
            "the token key kept in the state store is damaged".into(),
        )));
    }
    Ok((Arc::new(store), key))
}

type Acceptor = (tokio_rustls::TlsAcceptor, std::time::Duration);

/// How often our certificate and key files are looked at for a renewal.
const CERT_TICK: std::time::Duration = std::time::Duration::from_secs(5);

/// TLS for the peer listener: our certificate, and the peers' trust anchors for client
/// certificates (optional there: association-authenticated peers have none).
fn peer_tls(identity: Option<&Identity>, live: &Live) -> Result<Acceptor, StartError> {
    let Some(identity) = identity.cloned() else {
        return Err(StartError::Tls(TlsError::Verifier(
            "peer listener without [tls] cert/key".into(),
        )));
    };
    let roots = live.peers.listener_roots()?;
    let sc = tls::server_config_from(identity, Some(roots), false)?;
    Ok((
        tokio_rustls::TlsAcceptor::from(Arc::new(sc)),
        live.cfg.timeouts.handshake,
    ))
}

/// TLS for the core listener, when `[core] tls` asks for it (client certificates required
/// when the core authenticates by mTLS).
fn core_tls(identity: Option<&Identity>, cfg: &Config) -> Result<Option<Acceptor>, StartError> {
    let Some(c) = cfg.core.as_ref().filter(|c| c.tls) else {
        return Ok(None);
    };
    let Some(identity) = identity.cloned() else {
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
    let sc = tls::server_config_from(identity, roots, require)?;
    Ok(Some((
        tokio_rustls::TlsAcceptor::from(Arc::new(sc)),
        cfg.timeouts.handshake,
    )))
}

/// A listener's settings (TLS and bounds) under `live`.
fn listener_settings(
    identity: Option<&Identity>,
    live: &Live,
    which: Which,
) -> Result<listen::Settings, StartError> {
    let cfg = &live.cfg;
    let (c, t) = (&cfg.limits, &cfg.timeouts);
    let mut limits = listen::Limits {
        max_connections: c.max_connections,
        per_source: c.max_connections_per_source,
        unauthenticated: c.max_unauthenticated,
        unauthenticated_per_source: c.max_unauthenticated_per_source,
        header: t.header,
        idle: t.idle,
        drain: t.drain,
        failures: (cfg.policy.failure_rate, cfg.policy.failure_burst),
    };
    let tls = match which {
        Which::Peer => Some(peer_tls(identity, live)?),
        Which::Core => core_tls(identity, cfg)?,
        Which::Admin => {
            // A management listener: few connections, none of them from peers.
            limits.max_connections = 64;
            limits.unauthenticated = 64;
            None
        }
    };
    Ok(listen::Settings { tls, limits })
}

/// The admin bearer token of `[listen] admin_token_file`, if configured: the file's first
/// line, at least 16 characters.
fn admin_token(cfg: &Config) -> Result<Option<String>, StartError> {
    let Some(path) = &cfg.listen.admin_token_file else {
        return Ok(None);
    };
    let bad = |why: String| {
        StartError::Admin(format!(
            "{} ([listen] admin_token_file in {}): {why}",
            path.display(),
            cfg.path.display()
        ))
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(
            "the first line must be a token of at least 16 printable characters".into(),
        ));
    }
    Ok(Some(token.to_owned()))
}

/// Everything `start` checks before it binds a port: the directory, the transaction-ID keys,
/// our certificate and key (and that they match), every peer's and the core's trust anchors
/// and pins, the listeners' TLS, and the admin token. `ssp-gateway check` runs this, so a
/// config that passes it fails to start only for want of its ports.
pub fn check(cfg: Config) -> Result<Gateway, StartError> {
    let gw = gateway(cfg, &StartOptions::default(), None)?;
    let (cfg, live) = (gw.cfg(), gw.links.live());
    let identity = gw.links.identity.as_ref();
    if cfg.listen.peer.is_some() {
        listener_settings(identity, &live, Which::Peer)?;
    }
    if cfg.listen.core.is_some() {
        listener_settings(identity, &live, Which::Core)?;
    }
    admin_token(&cfg)?;
    Ok(gw)
}

/// A listener's address for the log: the address, or `off`.
fn shown(a: Option<SocketAddr>) -> String {
    a.map_or_else(|| "off".to_owned(), |a| a.to_string())
}

/// A listener: the pre-bound one, else one bound to the configured address (`[listen]
/// key` of the config at `file`), else none.
async fn listener(
    pre: Option<std::net::TcpListener>,
    addr: Option<SocketAddr>,
    key: &'static str,
    file: &std::path::Path,
) -> Result<Option<TcpListener>, StartError> {
    let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
    let bind = |addr: SocketAddr, error: std::io::Error| StartError::Bind {
        key,
        file: file.to_owned(),
        addr,
        error,
    };
    match (pre, addr) {
        (Some(l), _) => {
            let a = l.local_addr().unwrap_or(unknown);
            l.set_nonblocking(true).map_err(|e| bind(a, e))?;
            TcpListener::from_std(l).map(Some).map_err(|e| bind(a, e))
        }
        (None, Some(addr)) => TcpListener::bind(addr)
            .await
            .map(Some)
            .map_err(|e| bind(addr, e)),
        (None, None) => Ok(None),
    }
}

/// The accept loop of one listener: its TLS, its handler, its bounds (settings a reload
/// swaps, registered with `ctl`).
fn serve(
    ctl: &Arc<Control>,
    which: Which,
    l: TcpListener,
) -> Result<impl std::future::Future<Output = ()> + use<>, StartError> {
    let gw = &ctl.gw;
    let g = gw.clone();
    let settings = listener_settings(gw.links.identity.as_ref(), &gw.links.live(), which)?;
    let (handler, label): (listen::Handler, _) = match which {
        Which::Peer | Which::Core => {
            let (listener, label) = match which {
                Which::Peer => (Listener::Peer, "peer"),
                _ => (Listener::Core, "core"),
            };
            let handler: listen::Handler = Arc::new(move |req, info| {
                let g = g.clone();
                Box::pin(async move { pipeline::handle(&g, listener, req, info).await })
            });
            (handler, label)
        }
        Which::Admin => {
            let c = ctl.clone();
            let handler: listen::Handler = Arc::new(move |req, _info| {
                let c = c.clone();
                Box::pin(async move { crate::ops::admin::handle(&admin::Ops(c), req).await })
            });
            (handler, "admin")
        }
    };
    let g = gw.clone();
    let on_event = Arc::new(move |e: listen::Event| {
        let m = g.metrics();
        match e {
            listen::Event::TlsFailed => {
                m.tls_failures.with_label_values(&[label]).inc();
                crate::sampled!(
                    g.logs(),
                    "tls-refused",
                    tracing::info!(listener = label, "TLS handshake refused")
                );
            }
            listen::Event::Refused(why) => {
                m.connections_refused.with_label_values(&[label, why]).inc();
                crate::sampled!(
                    g.logs(),
                    "connection-refused",
                    tracing::info!(listener = label, reason = why, "connection refused")
                );
            }
            listen::Event::Closed(phase) => {
                m.connections_closed
                    .with_label_values(&[label, phase])
                    .inc();
                crate::sampled!(
                    g.logs(),
                    "connection-closed",
                    tracing::debug!(listener = label, phase, "connection closed")
                );
            }
        }
    });
    Ok(listen::serve_live(
        l,
        reload::register(ctl, which, settings),
        handler,
        gw.drain().clone(),
        on_event,
    ))
}

/// Bind the listeners named in the config and start serving.
pub async fn start(cfg: Config, mut opts: StartOptions) -> Result<Running, StartError> {
    let (store, kept) = open_store(&cfg).await?;
    let gw = Arc::new(gateway(cfg, &opts, Some(kept))?.keeping(store));
    let ctl = Arc::new(Control {
        gw: gw.clone(),
        resolver: match opts.resolver {
            Some(_) => reload::ResolverSource::Given,
            None => reload::ResolverSource::Config(opts.clock.clone().unwrap_or(Clock::System)),
        },
        admin_token: arc_swap::ArcSwapOption::from(admin_token(&gw.cfg())?.map(Arc::new)),
        listening: std::sync::Mutex::default(),
        reloading: std::sync::Mutex::default(),
    });
    // What this replica's previous process held is free at once (it is gone); taken up by
    // the take-over loop below.
    let released = pipeline::release(&gw).await?;
    let cfg = gw.links.live().cfg.clone();
    let drain = gw.drain().clone();
    let mut tasks = Vec::new();
    let pre = std::mem::take(&mut opts.listeners);
    let mut addrs = [None; 3];
    for (slot, (which, pre, addr, key)) in [
        (Which::Peer, pre.peer, cfg.listen.peer, "peer"),
        (Which::Core, pre.core, cfg.listen.core, "core"),
        (Which::Admin, pre.admin, cfg.listen.admin, "admin"),
    ]
    .into_iter()
    .enumerate()
    {
        if let Some(l) = listener(pre, addr, key, &cfg.path).await? {
            addrs[slot] = l.local_addr().ok();
            tasks.push(tokio::spawn(serve(&ctl, which, l)?));
        }
    }

    let sip_addr = match sip::start(&gw).await? {
        Some((addr, task)) => {
            tasks.push(task);
            Some(addr)
        }
        None => None,
    };

    let xmpp_addr = match xmpp::start(&gw).await? {
        Some((addr, task)) => {
            tasks.push(task);
            Some(addr)
        }
        None => None,
    };

    if gw.links.siblings.is_some() {
        let g = gw.clone();
        let last = Arc::new(tokio::sync::Mutex::new(Vec::new()));
        tasks.push(drain.every(crate::links::cluster::CHECK_EVERY, move || {
            let (g, last) = (g.clone(), last.clone());
            async move { g.links.recheck_cluster(&mut *last.lock().await).await }
        }));
    }
    {
        // Kept work: due work taken up (retries, a dead replica's, the previous process's),
        // the leases of the work in hand renewed, the queue's gauges and old tombstones.
        let g = gw.clone();
        tasks.push(drain.every(std::time::Duration::from_secs(1), move || {
            let g = g.clone();
            async move { pipeline::take_over(&g).await }
        }));
        let g = gw.clone();
        tasks.push(drain.every(cfg.store.lease / 3, move || {
            let g = g.clone();
            async move { pipeline::renew(&g).await }
        }));
        let g = gw.clone();
        tasks.push(drain.every(std::time::Duration::from_secs(10), move || {
            let g = g.clone();
            async move { pipeline::housekeeping(&g).await }
        }));
    }
    {
        // Keyed limiters keep a state per key a peer chooses (user IDs, addresses, claimed
        // domains); forget those back at a full bucket, or new keys would grow them for ever.
        let g = gw.clone();
        tasks.push(drain.every(std::time::Duration::from_secs(10), move || {
            let originators = g.originators.load();
            originators.retain_recent();
            originators.shrink_to_fit();
            g.links.live.load().assoc_bounds.shrink();
            std::future::ready(())
        }));
    }

    for w in &cfg.warnings {
        tracing::warn!(config = %cfg.path.display(), "{w}");
    }
    gw.note_certificates();
    // Renewed certificate files (an ACME client, cert-manager) are taken up without a
    // reload: every new handshake, on every listener and link, presents the new pair.
    if let Some(identity) = gw.links.identity.clone() {
        let g = gw.clone();
        gw.drain().every(CERT_TICK, move || {
            match identity.refresh() {
                Ok(true) => {
                    tracing::info!("certificate and key renewed from their files");
                    g.note_certificates();
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "renewed certificate files do not load yet; the current pair stays")
                }
            }
            std::future::ready(())
        });
    }
    let [peer_addr, core_addr, admin_addr] = addrs;
    tracing::info!(
        public_domain = %cfg.operator.public_domain,
        peer = %shown(peer_addr), core = %shown(core_addr), admin = %shown(admin_addr),
        sip = %shown(sip_addr),
        xmpp = %shown(xmpp_addr),
        store = gw.store().map_or("none", |s| s.engine()),
        resumed = released,
        "gateway started"
    );
    Ok(Running {
        gateway: gw,
        control: ctl,
        peer_addr,
        core_addr,
        admin_addr,
        tasks,
    })
}
