//! The links to SSP peers: per peer, its HTTP client (TLS profile, pool), its certificate
//! check, its rate limiter and the session ID we label our messages to it with; sending a
//! request part to a peer (association first when it authenticates that way), and posting
//! answers back to it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::{HeaderValue, Uri};
use rustls_pki_types::ServerName;

use tokio::time::Instant;

use super::exchange::{Outgoing, Target, owned_session, request_headers, session_value};
use super::http::{Connector, SspClient};
use super::{Links, Outbound, Part, Remote, Reply};
use crate::config::{Config, PeerAuth, PeerSpec};
use crate::error::{Failure, Kind, Side};
use crate::rewrite::{Direction, PeerView};
use crate::ssp::splice::Spliced;
use crate::ssp::{Message, Primitive, Transaction};
use crate::tls::{self, PeerCertCheck, ServerTrust, TlsError};
use crate::token::Leg;

/// One peer at run time.
pub struct PeerRt {
    /// Its configuration (a default one for peers found only through DNS).
    pub cfg: PeerSpec,
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
    /// The same as a header value, made once.
    session_header: Option<HeaderValue>,
    /// Listed as a `[[peer]]` (else found only through DNS).
    pub listed: bool,
}

impl std::fmt::Debug for PeerRt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerRt")
            .field("domain", &self.cfg.domain)
            .finish_non_exhaustive()
    }
}

/// Our TLS identity: `[tls] cert` and `key`, taken up again when their files change.
pub(crate) type Identity = Arc<tls::CertStore>;

/// `[tls] cert` and `key`, when both are configured.
pub(crate) fn identity(cfg: &Config) -> Result<Option<Identity>, TlsError> {
    match (&cfg.tls.cert, &cfg.tls.key) {
        (Some(c), Some(k)) => tls::CertStore::load(c, k).map(Some),
        _ => Ok(None),
    }
}

impl PeerRt {
    /// Where to send to it: `urls`, in failover order.
    pub fn target<'a>(&'a self, urls: &'a [Uri]) -> Target<'a> {
        Target {
            label: &self.cfg.domain,
            metric: if self.listed {
                &self.cfg.domain
            } else {
                "unlisted"
            },
            side: Side::Peer,
            client: &self.client,
            urls,
        }
    }

    /// How it wants IDs written.
    pub fn view(&self) -> PeerView<'_> {
        PeerView {
            style: self.cfg.id_style,
            domain: Some(&self.cfg.domain),
        }
    }
}

/// Builds and caches [`PeerRt`]s.
pub(crate) struct PeerTable {
    cfg: Arc<Config>,
    identity: Option<Identity>,
    default_roots: Option<Arc<rustls::RootCertStore>>,
    /// The configured peers, built with the table and never changed after: read by every
    /// request without a lock (one for all would be taken by every thread for every request).
    /// Hashed with foldhash, seeded per process: its keys are the configuration's, and a
    /// peer's domain only looks them up (as the directory's maps, `directory.rs`).
    listed: HashMap<String, Arc<PeerRt>, foldhash::fast::RandomState>,
    /// Peers found through DNS, built when first needed.
    peers: Mutex<HashMap<String, Arc<PeerRt>>>,
    public_domain: String,
    /// Our session IDs towards the peers of the table this one replaced (a reload), by
    /// domain: a peer built again, listed or found through DNS, keeps its own.
    inherited: HashMap<String, String>,
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
    /// Build every configured peer now, so TLS mistakes surface at start-up (or refuse a
    /// reload). `previous`: the table in use before a reload; our session ID towards each of
    /// its peers (listed or found) carries over, so a peer correlating by it sees no change.
    /// (Their connection pools and inbound rate limiters start afresh.)
    pub(crate) fn new(
        cfg: Arc<Config>,
        identity: Option<Identity>,
        previous: Option<&PeerTable>,
    ) -> Result<PeerTable, TlsError> {
        let default_roots = if cfg.tls.trust.is_empty() {
            None
        } else {
            Some(Arc::new(tls::load_roots(&cfg.tls.trust)?))
        };
        // What the table before knew (built or inherited itself), bounded like the table.
        let mut inherited: HashMap<String, String> = HashMap::new();
        if let Some(o) = previous {
            inherited.extend(o.inherited.iter().map(|(d, s)| (d.clone(), s.clone())));
            inherited.extend(
                o.listed
                    .iter()
                    .map(|(d, p)| (d.clone(), p.session_id.clone())),
            );
            if let Ok(m) = o.peers.lock() {
                inherited.extend(m.iter().map(|(d, p)| (d.clone(), p.session_id.clone())));
            }
            let cap = cfg.peers.len() + MAX_FOUND_PEERS;
            if inherited.len() > cap {
                let extra: Vec<String> = inherited
                    .keys()
                    .filter(|d| cfg.peer(d).is_none())
                    .take(inherited.len() - cap)
                    .cloned()
                    .collect();
                for d in extra {
                    inherited.remove(&d);
                }
            }
        }
        let mut t = PeerTable {
            listed: HashMap::default(),
            inherited,
            public_domain: cfg.operator.public_domain.clone(),
            cfg: cfg.clone(),
            identity,
            default_roots,
            peers: Mutex::new(HashMap::new()),
        };
        for p in &cfg.peers {
            let rt = Arc::new(t.build(p.clone())?);
            t.listed.insert(p.domain.clone(), rt);
        }
        Ok(t)
    }

    /// The peer for `domain`: configured, or a default profile for a peer found through DNS.
    pub(crate) fn get(&self, domain: &str) -> Option<Arc<PeerRt>> {
        // Looked up as given when already lowercase (as configured domains are): no copy.
        let domain: std::borrow::Cow<'_, str> = if domain.bytes().any(|b| b.is_ascii_uppercase()) {
            domain.to_ascii_lowercase().into()
        } else {
            domain.into()
        };
        if let Some(p) = self.listed.get(domain.as_ref()) {
            return Some(p.clone());
        }
        if let Some(p) = self.peers.lock().ok()?.get(domain.as_ref()) {
            return Some(p.clone());
        }
        let domain = domain.into_owned();
        let cfg = PeerSpec {
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
            notifications: crate::config::Notifications::Answered,
            address_by: crate::config::AddressBy::Number,
            queue: self.cfg.store.queue,
        };
        match self.build(cfg) {
            Ok(rt) => {
                let rt = Arc::new(rt);
                if let Ok(mut m) = self.peers.lock() {
                    // Peers found through DNS (or claimed under a wildcard certificate) are
                    // kept for their connection pools, but not without bound: past the cap
                    // one of them makes room.
                    if m.len() >= MAX_FOUND_PEERS {
                        let victim = m.keys().next().cloned();
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
    pub(crate) fn configured(&self, domain: &str) -> Option<Arc<PeerRt>> {
        self.cfg.peer(domain)?;
        self.get(domain)
    }

    /// All configured peers.
    pub(crate) fn all(&self) -> Vec<Arc<PeerRt>> {
        self.listed.values().cloned().collect()
    }

    /// The union of every trust anchor a peer certificate may chain to (for the listener).
    pub(crate) fn listener_roots(&self) -> Result<rustls::RootCertStore, TlsError> {
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

    fn build(&self, p: PeerSpec) -> Result<PeerRt, TlsError> {
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
                    self.identity.clone()
                } else {
                    None
                };
                let cfg = tls::client_config_from(trust, ident, true)?;
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
        let session_id =
            self.inherited.get(&p.domain).cloned().unwrap_or_else(|| {
                format!("gw-{:08x}@{}", rand::random::<u32>(), self.public_domain)
            });
        Ok(PeerRt {
            urls,
            client,
            cert_check,
            limiter: RateLimiter::direct(quota(p.rate, p.burst)),
            session_header: session_value(&session_id),
            session_id,
            listed: self.cfg.peers.iter().any(|q| q.domain == p.domain),
            cfg: p,
        })
    }
}

/// A keyed limiter (per originator ID).
pub(crate) type KeyedLimiter<K = String> = governor::DefaultKeyedRateLimiter<K>;

/// A keyed limiter with `rate`/`burst`.
pub(crate) fn keyed_limiter<K: std::hash::Hash + Eq + Clone>(
    rate: u32,
    burst: u32,
) -> KeyedLimiter<K> {
    RateLimiter::keyed(quota(rate, burst))
}

impl Links {
    /// Our session ID towards a peer: the association's, else the peer's default.
    fn session_towards<'p>(&self, peer: &'p PeerRt) -> Cow<'p, str> {
        match self.assoc.established(&peer.cfg.domain) {
            Some(e) => Cow::Owned(e.our_session),
            None => Cow::Borrowed(&peer.session_id),
        }
    }

    /// [`Links::session_towards`], and its `x-wv-sessionid` value (the peer's own, made
    /// once, unless an association's session stands in for it).
    fn session_and_header<'p>(&self, peer: &'p PeerRt) -> (Cow<'p, str>, Option<HeaderValue>) {
        match self.session_towards(peer) {
            Cow::Borrowed(own) => (Cow::Borrowed(own), peer.session_header.clone()),
            Cow::Owned(assoc) => owned_session(assoc),
        }
    }

    /// The URLs of a peer: configured ones first, then DNS-found ones.
    pub(crate) async fn peer_urls(&self, peer: &PeerRt) -> Vec<Uri> {
        if !peer.urls.is_empty() {
            return peer.urls.clone();
        }
        match self.live().resolver.clone() {
            Some(r) => r.peer_urls(&peer.cfg.domain).await,
            None => Vec::new(),
        }
    }

    /// Send one request part to a peer and return its answer: typed (IDs still in public
    /// form), or (a spliced request's answer in the fast shape) written back for the
    /// request's origin already ([`Reply`]).
    pub(crate) async fn to_peer(
        &self,
        r: &Remote,
        request: Outbound<'_, '_>,
        part: Part<'_>,
    ) -> Result<Reply, Failure> {
        let peer = self.live.load().peers.get(&r.domain).ok_or_else(|| {
            Failure::local(
                Kind::Unreachable,
                format!("no TLS profile for {}", r.domain),
            )
        })?;
        // The route's URLs; else the configured peer's own, borrowed (no copy per request);
        // else those DNS finds.
        let found: Vec<Uri>;
        let urls: &[Uri] = if !r.urls.is_empty() {
            &r.urls
        } else if !peer.urls.is_empty() {
            &peer.urls
        } else {
            // Boxed (as the association below): a resolution's state would enlarge every
            // request's future, which is moved whole.
            found = Box::pin(self.peer_urls(&peer)).await;
            &found
        };
        let target = peer.target(urls);
        let deadline = Instant::now() + self.cfg().timeouts.request;
        let (session, session_header) = if peer.cfg.auth == PeerAuth::Association {
            owned_session(
                Box::pin(self.associate(&peer.cfg.domain, &target, &peer.cfg.namespace, deadline))
                    .await?
                    .our_session,
            )
        } else {
            self.session_and_header(&peer)
        };
        let acknowledged = peer.cfg.notifications == crate::config::Notifications::Acknowledged
            && request.is_notification();
        let issued = match part.issued {
            Some(i) => i.clone(),
            None => self.issue_for(Leg::ToPeer, part, &peer.cfg.domain),
        };
        let headers = request_headers(session_header, &issued.tid);
        let answer_for = match &request {
            Outbound::Spliced(_, origin) => Some((*origin, part.origin_tid)),
            Outbound::Typed(_) => None,
        };
        let body = self.peer_request_body(&peer, session, &issued.tid, request)?;
        let out = Outgoing {
            headers,
            body,
            issued: &issued,
        };
        self.exchange(&target, out, deadline, acknowledged, answer_for)
            .await
    }

    /// A remote answer, read by the fast path, written for `peer` (see
    /// [`Links::answer_spliced`]): its ID style and namespace, no core names.
    pub(crate) fn peer_answer_spliced(
        &self,
        peer: &PeerRt,
        s: &mut Spliced<'_>,
        tid: &str,
    ) -> Option<String> {
        self.splice_for(peer, s, &self.session_towards(peer), tid)
    }

    /// `s` written for `peer` by splicing: IDs rewritten outbound, its namespace, `session`
    /// and `tid`. `None` if a core name is left in its text (the typed path scrubs it).
    fn splice_for(
        &self,
        peer: &PeerRt,
        s: &mut Spliced<'_>,
        session: &str,
        tid: &str,
    ) -> Option<String> {
        let live = self.live.load();
        let dir = self.dir.load();
        live.rw
            .rewrite_slots(&dir, s.slots(), Direction::Outbound, peer.view());
        let (out, prim) = s.emit_parts(&peer.cfg.namespace, session, tid);
        // What came from elsewhere is checked: the primitive as written (its IDs rewritten)
        // and the session and transaction IDs. The rest is fixed markup and the peer's
        // configured namespace: a hit there is nothing the typed path could take out (it
        // writes the namespace as configured, and scrubbing the markup's names would only
        // break the message), so it would only send the message the typed way. A hidden
        // name is a validated domain name: no match spans two of these pieces (each
        // boundary is a `"`, `<` or `>`), and one in an ID as given is one in its escaped
        // form (escaping changes no byte a domain name holds).
        let rw = &live.rw;
        let prim_clean = out.get(prim).is_some_and(|p| rw.leaks(p).is_none());
        (prim_clean && rw.leaks(session).is_none() && rw.leaks(tid).is_none()).then_some(out)
    }

    /// A request's bytes for `peer`: its ID style and namespace, no core names.
    fn peer_request_body(
        &self,
        peer: &PeerRt,
        session: Cow<'_, str>,
        tid: &str,
        request: Outbound<'_, '_>,
    ) -> Result<String, Failure> {
        let live = self.live.load();
        let dir = self.dir.load();
        let typed = |request: Primitive, session: Cow<'_, str>| {
            let mut msg = Message::session(
                session.into_owned(),
                vec![Transaction::request(tid, request)],
            );
            live.rw
                .emit_outbound(&dir, &mut msg, peer.view(), &peer.cfg.namespace)
        };
        match request {
            Outbound::Typed(p) => Ok(typed(*p, session)),
            Outbound::Spliced(s, _) => {
                if let Some(out) = self.splice_for(peer, s, &session, tid) {
                    return Ok(out);
                }
                // A core name in free text: the typed path scrubs every string.
                match s.typed(&live.codec) {
                    Some(p) => Ok(typed(p, session)),
                    None => Err(Failure::local(Kind::Malformed, "not readable typed")),
                }
            }
        }
    }

    /// Answers serialised for a peer: our session ID, its ID style and namespace, no core
    /// names; and the message.
    pub(crate) fn peer_body(&self, peer: &PeerRt, answers: Vec<Transaction>) -> (Message, String) {
        let mut msg = Message::session(self.session_towards(peer).into_owned(), answers);
        let dir = self.dir.load();
        let body =
            self.live
                .load()
                .rw
                .emit_outbound(&dir, &mut msg, peer.view(), &peer.cfg.namespace);
        (msg, body)
    }

    /// POST answers to an asynchronous peer; false if they could not be delivered.
    pub(crate) async fn answers_to_peer(&self, peer: &PeerRt, answers: Vec<Transaction>) -> bool {
        let (msg, body) = self.peer_body(peer, answers);
        let urls = self.peer_urls(peer).await;
        self.deliver_answers_to(&peer.target(&urls), &msg, body)
            .await
    }
}
