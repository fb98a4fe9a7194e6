//! Runtime peer table: per peer, its HTTP client (TLS profile, pool), its certificate check,
//! its rate limiter, and the session ID we label our messages to it with.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::Uri;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::config::{Config, Peer};
use crate::relay::http::{Connector, SspClient};
use crate::tls::{self, PeerCertCheck, ServerTrust, TlsError};

/// One peer at run time.
pub struct PeerRt {
    /// Its configuration (a default one for peers found only through DNS).
    pub cfg: Peer,
    /// Parsed URLs of its configuration.
    pub urls: Vec<Uri>,
    /// Pooled client.
    pub client: SspClient,
    /// Check of its client certificate on our listener.
    pub cert_check: Option<PeerCertCheck>,
    /// Requests per second it may send us.
    pub limiter: DefaultDirectRateLimiter,
    /// Our session ID towards it when no association exists (mutual TLS peers).
    pub session_id: String,
}

impl std::fmt::Debug for PeerRt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerRt")
            .field("domain", &self.cfg.domain)
            .finish_non_exhaustive()
    }
}

/// Our TLS identity, loaded once.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Certificate chain.
    pub chain: Vec<CertificateDer<'static>>,
    /// Key.
    pub key: Arc<PrivateKeyDer<'static>>,
}

/// Builds and caches [`PeerRt`]s.
pub struct PeerTable {
    cfg: Arc<Config>,
    identity: Option<Identity>,
    default_roots: Option<Arc<rustls::RootCertStore>>,
    peers: Mutex<HashMap<String, Arc<PeerRt>>>,
    public_domain: String,
}

impl std::fmt::Debug for PeerTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTable").finish_non_exhaustive()
    }
}

/// Peers without a `[[peer]]` entry kept at once (a federation has hundreds of operators).
const MAX_FOUND_PEERS: usize = 4096;

fn quota(rate: u32, burst: u32) -> Quota {
    let r = NonZeroU32::new(rate.max(1)).unwrap_or(NonZeroU32::MIN);
    let b = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(r).allow_burst(b)
}

impl PeerTable {
    /// Build every configured peer now, so TLS mistakes surface at start-up.
    pub fn new(cfg: Arc<Config>, identity: Option<Identity>) -> Result<PeerTable, TlsError> {
        let default_roots = if cfg.tls.trust.is_empty() {
            None
        } else {
            Some(Arc::new(tls::load_roots(&cfg.tls.trust)?))
        };
        let t = PeerTable {
            public_domain: cfg.gateway.public_domain.clone(),
            cfg: cfg.clone(),
            identity,
            default_roots,
            peers: Mutex::new(HashMap::new()),
        };
        for p in &cfg.peers {
            let rt = Arc::new(t.build(p.clone())?);
            if let Ok(mut m) = t.peers.lock() {
                m.insert(p.domain.clone(), rt);
            }
        }
        Ok(t)
    }

    /// The peer for `domain`: configured, or a default profile for a peer found through DNS.
    pub fn get(&self, domain: &str) -> Option<Arc<PeerRt>> {
        let domain = domain.to_ascii_lowercase();
        if let Some(p) = self.peers.lock().ok()?.get(&domain) {
            return Some(p.clone());
        }
        let cfg = Peer {
            domain: domain.clone(),
            urls: Vec::new(),
            id_style: Default::default(),
            namespace: crate::ssp::NS_WV_SSP_13.to_owned(),
            mode: Default::default(),
            auth: Default::default(),
            trust: Vec::new(),
            pins: Vec::new(),
            client_cert: true,
            tls_name: domain.clone(),
            rate: 500,
            burst: 1000,
        };
        match self.build(cfg) {
            Ok(rt) => {
                let rt = Arc::new(rt);
                if let Ok(mut m) = self.peers.lock() {
                    // Peers found through DNS (or claimed under a wildcard certificate) are
                    // kept for their connection pools, but not without bound: past the cap
                    // one of them (never a configured one) makes room.
                    if m.len() >= self.cfg.peers.len() + MAX_FOUND_PEERS {
                        let victim = m.keys().find(|d| self.cfg.peer(d).is_none()).cloned();
                        if let Some(v) = victim {
                            m.remove(&v);
                        }
                    }
                    m.entry(domain).or_insert_with(|| rt.clone());
                }
                Some(rt)
            }
            Err(e) => {
                tracing::warn!(%domain, error = %e, "cannot set up TLS for peer");
                None
            }
        }
    }

    /// A configured peer only.
    pub fn configured(&self, domain: &str) -> Option<Arc<PeerRt>> {
        self.cfg.peer(domain)?;
        self.get(domain)
    }

    /// All configured peers.
    pub fn all(&self) -> Vec<Arc<PeerRt>> {
        self.peers
            .lock()
            .map(|m| {
                m.values()
                    .filter(|p| self.cfg.peer(&p.cfg.domain).is_some())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The union of every trust anchor a peer certificate may chain to (for the listener).
    pub fn listener_roots(&self) -> Result<rustls::RootCertStore, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(d) = &self.default_roots {
            roots.extend(d.roots.iter().cloned());
        }
        for p in &self.cfg.peers {
            if !p.trust.is_empty() {
                roots.extend(tls::load_roots(&p.trust)?.roots);
            }
        }
        Ok(roots)
    }

    fn build(&self, p: Peer) -> Result<PeerRt, TlsError> {
        let t = &self.cfg.timeouts;
        let roots = if p.trust.is_empty() {
            self.default_roots.clone()
        } else {
            Some(Arc::new(tls::load_roots(&p.trust)?))
        };
        let trust = if !p.pins.is_empty() {
            Some(ServerTrust::Pins(p.pins.clone()))
        } else {
            roots.clone().map(ServerTrust::Roots)
        };
        let client_tls = match trust {
            Some(trust) => {
                let ident = if p.client_cert {
                    self.identity
                        .as_ref()
                        .map(|i| (i.chain.clone(), i.key.clone_key()))
                } else {
                    None
                };
                let cfg = tls::client_config(trust, ident, true)?;
                let name = ServerName::try_from(p.tls_name.clone()).map_err(|e| {
                    TlsError::Verifier(format!("peer {}: tls_name {:?}: {e}", p.domain, p.tls_name))
                })?;
                Some((Arc::new(cfg), name))
            }
            None => None,
        };
        let client = SspClient::new(
            Connector::new(client_tls, t.connect, t.handshake),
            t.idle,
            self.cfg.limits.xml.max_body,
        );
        let cert_check = if !p.pins.is_empty() {
            Some(PeerCertCheck::Pins(p.pins.clone()))
        } else {
            match roots {
                Some(r) => Some(PeerCertCheck::roots((*r).clone())?),
                None => None,
            }
        };
        let urls = p.urls.iter().filter_map(|u| u.parse().ok()).collect();
        Ok(PeerRt {
            urls,
            client,
            cert_check,
            limiter: RateLimiter::direct(quota(p.rate, p.burst)),
            session_id: format!("gw-{:08x}@{}", rand::random::<u32>(), self.public_domain),
            cfg: p,
        })
    }
}

/// A keyed limiter (per originator ID).
pub type KeyedLimiter = governor::DefaultKeyedRateLimiter<String>;

/// A keyed limiter with `rate`/`burst`.
pub fn keyed_limiter(rate: u32, burst: u32) -> KeyedLimiter {
    RateLimiter::keyed(quota(rate, burst))
}
