//! Destination resolution by DNS: ENUM (RFC 6116) for `wv:+MSISDN`, then server location for
//! the domain (`PROTOCOL.md` §8): the peering table, SRV `_imps-server._tcp` (RFC 2782), the
//! SIP/SIMPLE (RFC 3861, RFC 3263) and XMPP fallbacks, the gateway of last resort.
//!
//! Decisions are cached per (destination, service) until the smallest TTL of every record the
//! decision used; negative answers within configured bounds. Lookups that fail at the name
//! servers (timeout, network, REFUSED; not SERVFAIL for one name) put the ENUM suffix or
//! name-server set on a short hold-down, and an expired
//! decision is served "stale" for a bounded time while DNS fails, so an outage does not cut off
//! destinations already known. NXDOMAIN is a normal answer, not an alarm. Time comes from an
//! explicit [`Clock`] so tests can advance it.

pub mod ddds;
pub mod dns;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Uri;
use serde::Serialize;

use crate::config::{Config, Fallback, ResolverSpec};
use crate::ops::metrics::Metrics;
use crate::ssp::{E164, Primitive};
use ddds::{EnumOutcome, NaptrAnswer, NaptrSource, Service, SourceError, SrvOrder};
use dns::{Answer, Dns, Failure, NsSet};

/// A resolution that could not complete because DNS did not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DNS unavailable: {0}")]
pub struct Transient(pub String);

/// What a route is for: messaging and search (`im`) or presence (`pres`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Svc {
    /// `E2U+im`, `_im._…`.
    Im,
    /// `E2U+pres`, `_pres._…`.
    Pres,
}

impl Svc {
    /// The service a request primitive needs.
    pub fn of(p: &Primitive) -> Svc {
        match p {
            Primitive::SubscribeRequest(_)
            | Primitive::UnsubscribeRequest(_)
            | Primitive::GetPresenceRequest(_)
            | Primitive::PresenceNotification(_) => Svc::Pres,
            _ => Svc::Im,
        }
    }

    /// `im` or `pres`.
    pub fn label(self) -> &'static str {
        match self {
            Svc::Im => "im",
            Svc::Pres => "pres",
        }
    }
}

/// The XMPP server-to-server port where a domain publishes no SRV record (RFC 6120 §3.2.2).
const XMPP_PORT: u16 = 5269;

/// How the destination is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// An IMPS SSP server.
    Imps,
    /// SIP/SIMPLE only.
    Sip,
    /// XMPP only.
    Xmpp,
    /// The configured gateway of last resort.
    LastResort,
    /// Nothing.
    None,
}

impl Protocol {
    /// The name used by `resolve`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Imps => "imps",
            Protocol::Sip => "sip",
            Protocol::Xmpp => "xmpp",
            Protocol::LastResort => "last-resort",
            Protocol::None => "none",
        }
    }
}

/// The NAPTR that decided an ENUM lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnumHit {
    /// The URI it produced.
    pub uri: String,
    /// Its enumservice (`im`, `pres`, `sip`, `xmpp`).
    pub service: String,
    /// ORDER.
    pub order: u16,
    /// PREFERENCE.
    pub preference: u16,
}

/// One server to try.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Server {
    /// Host name (SRV target), or the peer domain for configured peers.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Addresses.
    pub addrs: Vec<IpAddr>,
    /// SRV priority (kept to re-draw the RFC 2782 order on every use).
    #[serde(skip)]
    pub priority: u16,
    /// SRV weight.
    #[serde(skip)]
    pub weight: u16,
    /// The SSP URL of each address (`https://addr:port/`), made once with the server:
    /// requests routed by the decision use them without writing and parsing them again.
    #[serde(skip)]
    pub uris: Vec<Uri>,
}

impl Server {
    /// A server at `addrs`, port `port`.
    pub fn new(host: String, port: u16, addrs: Vec<IpAddr>, priority: u16, weight: u16) -> Self {
        let uris = addrs
            .iter()
            .filter_map(|a| ssp_url(*a, port).parse().ok())
            .collect();
        Server {
            host,
            port,
            addrs,
            priority,
            weight,
            uris,
        }
    }
}

/// `https://addr:port/`.
fn ssp_url(a: IpAddr, port: u16) -> String {
    match a {
        IpAddr::V4(v4) => format!("https://{v4}:{port}/"),
        IpAddr::V6(v6) => format!("https://[{v6}]:{port}/"),
    }
}

/// A route decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// What was resolved (`+E164` or a domain).
    pub target: String,
    /// For which service.
    pub service: Svc,
    /// The ENUM result, if ENUM was used and matched.
    #[serde(rename = "enum")]
    pub enum_hit: Option<EnumHit>,
    /// The destination's domain.
    pub domain: Option<String>,
    /// How to reach it.
    pub protocol: Protocol,
    /// Servers in failover order.
    pub targets: Vec<Server>,
    /// Seconds this decision stays valid (smallest TTL of the chain).
    pub ttl: u32,
    /// Whether the domain is in the static peering table (no DNS for server location).
    #[serde(skip)]
    pub peering: bool,
    /// The SRV name the targets came from (for SIP it says the transport: `_sip._tcp`).
    pub srv: Option<String>,
}

impl Decision {
    /// Nothing decided yet about `target` for `service`.
    pub fn new(target: &str, service: Svc) -> Decision {
        Decision {
            target: target.to_owned(),
            service,
            enum_hit: None,
            domain: None,
            protocol: Protocol::None,
            targets: Vec::new(),
            ttl: u32::MAX,
            peering: false,
            srv: None,
        }
    }

    /// SSP URLs of the targets (`https://addr:port/`), in order.
    pub fn urls(&self) -> Vec<String> {
        self.targets
            .iter()
            .flat_map(|t| t.addrs.iter().map(move |a| ssp_url(*a, t.port)))
            .collect()
    }

    /// [`Decision::urls`], parsed (made with the servers, not per call).
    pub fn uris(&self) -> Vec<Uri> {
        self.targets
            .iter()
            .flat_map(|t| t.uris.iter().cloned())
            .collect()
    }
}

/// Time source of the cache: the system clock, or one that tests move by hand.
#[derive(Debug, Clone)]
pub enum Clock {
    /// Real time.
    System,
    /// A fixed base plus a manually advanced offset.
    Manual(Instant, Arc<Mutex<Duration>>),
}

impl Clock {
    /// A manual clock starting now.
    pub fn manual() -> Clock {
        Clock::Manual(Instant::now(), Arc::new(Mutex::new(Duration::ZERO)))
    }

    /// The current time.
    pub fn now(&self) -> Instant {
        match self {
            Clock::System => Instant::now(),
            Clock::Manual(base, off) => *base + off.lock().map(|d| *d).unwrap_or_default(),
        }
    }

    /// Move a manual clock forward (no effect on the system clock).
    pub fn advance(&self, by: Duration) {
        if let Clock::Manual(_, off) = self
            && let Ok(mut d) = off.lock()
        {
            *d += by;
        }
    }
}

/// A human-readable record of every step (queries, records with TTLs, choices).
#[derive(Debug, Default)]
pub struct Trace(Mutex<Vec<String>>);

impl Trace {
    fn line(&self, s: String) {
        if let Ok(mut v) = self.0.lock() {
            v.push(s);
        }
    }

    /// The lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

fn tr(t: Option<&Trace>, s: impl FnOnce() -> String) {
    if let Some(t) = t {
        t.line(s());
    }
}

#[derive(Debug, Clone)]
struct Cached {
    /// Shared with every request that uses it: a hit copies no decision.
    decision: Arc<Decision>,
    expires: Instant,
    stale_until: Instant,
}

/// The decision cache: one map per service, keyed by target, so a lookup builds no key.
#[derive(Debug, Default)]
struct Decisions {
    im: HashMap<String, Cached>,
    pres: HashMap<String, Cached>,
}

impl Decisions {
    fn of(&self, svc: Svc) -> &HashMap<String, Cached> {
        match svc {
            Svc::Im => &self.im,
            Svc::Pres => &self.pres,
        }
    }

    fn len(&self) -> usize {
        self.im.len() + self.pres.len()
    }

    fn retain(&mut self, mut keep: impl FnMut(&Cached) -> bool) {
        self.im.retain(|_, e| keep(e));
        self.pres.retain(|_, e| keep(e));
    }

    fn clear(&mut self) {
        self.im.clear();
        self.pres.clear();
    }

    /// Make room for one more: as many as [`evict_some`] would take from one map of both
    /// (an eighth, or what is over the cap), taken from each in proportion to its size.
    fn evict_some(&mut self, cap: usize) {
        let total = self.len();
        if total < cap || total == 0 {
            return;
        }
        let need = evictions(total, cap);
        // Rounded down for one map; the other gives the rest, which never exceeds its size.
        let from_im = need * self.im.len() / total;
        remove_some(&mut self.im, from_im);
        remove_some(&mut self.pres, need - from_im);
    }

    fn insert(&mut self, target: &str, svc: Svc, c: Cached) {
        let m = match svc {
            Svc::Im => &mut self.im,
            Svc::Pres => &mut self.pres,
        };
        m.insert(target.to_owned(), c);
    }
}

/// The resolver shared by the whole gateway.
pub struct Resolver {
    spec: ResolverSpec,
    dns: Dns,
    metrics: Metrics,
    clock: Clock,
    public_domain: String,
    /// Configured peers (domain, has URLs): the peering table is consulted before SRV.
    peering: Vec<(String, bool)>,
    cache: Mutex<Decisions>,
    /// Server location per SRV name (many numbers share an operator): result and expiry.
    srv_cache: Mutex<HashMap<String, (Found, Instant)>>,
    holds: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

/// Where a lookup goes, as a NAPTR source for the DDDS algorithm.
struct DnsSource<'a> {
    r: &'a Resolver,
    ns: NsSet,
    trace: Option<&'a Trace>,
}

impl NaptrSource for DnsSource<'_> {
    async fn naptr(&self, name: &str) -> Result<NaptrAnswer, SourceError> {
        tr(self.trace, || format!("query NAPTR {name}"));
        let a = self.r.dns.naptr(&self.ns, name).await;
        self.r
            .count("naptr", a.as_ref().map(naptr_kind).unwrap_or("error"));
        match &a {
            Ok(NaptrAnswer::Records(rs)) => {
                for n in rs {
                    tr(self.trace, || {
                        format!(
                            "  {} NAPTR {} {} {:?} {:?} {:?} {}",
                            n.ttl,
                            n.order,
                            n.preference,
                            n.flags,
                            n.services,
                            n.regexp,
                            n.replacement
                        )
                    });
                }
            }
            Ok(NaptrAnswer::NoData { negative_ttl }) => tr(self.trace, || {
                format!("  NODATA (negative TTL {negative_ttl:?})")
            }),
            Ok(NaptrAnswer::NxDomain { negative_ttl }) => tr(self.trace, || {
                format!("  NXDOMAIN (negative TTL {negative_ttl:?})")
            }),
            Err(e) => tr(self.trace, || format!("  failed: {e}")),
        }
        a.map_err(|e| SourceError {
            message: e.message,
            server: e.server,
        })
    }
}

fn naptr_kind(a: &NaptrAnswer) -> &'static str {
    match a {
        NaptrAnswer::Records(_) => "ok",
        NaptrAnswer::NoData { .. } => "nodata",
        NaptrAnswer::NxDomain { .. } => "nxdomain",
    }
}

fn answer_kind<T>(a: &Answer<T>) -> &'static str {
    match a {
        Answer::Records(..) => "ok",
        Answer::NoData(_) => "nodata",
        Answer::NxDomain(_) => "nxdomain",
    }
}

/// Result of looking for one protocol at a domain.
#[derive(Clone)]
enum Found {
    /// Targets, with the smallest TTL used.
    Targets(Vec<Server>, u32),
    /// The protocol is decidedly not offered (SRV target ".").
    NotOffered(u32),
    /// No records (negative TTL if known).
    Nothing(Option<u32>),
}

impl Resolver {
    /// A resolver with an explicit clock (tests).
    pub fn new(cfg: &Config, spec: ResolverSpec, metrics: Metrics, clock: Clock) -> Resolver {
        let peering = cfg
            .peers
            .iter()
            .map(|p| (p.domain.clone(), !p.urls.is_empty()))
            .collect();
        Resolver::with_parts(spec, &cfg.operator.public_domain, peering, metrics, clock)
    }

    /// A resolver from its parts: `peering` lists (domain, has configured URLs).
    pub fn with_parts(
        spec: ResolverSpec,
        public_domain: &str,
        peering: Vec<(String, bool)>,
        metrics: Metrics,
        clock: Clock,
    ) -> Resolver {
        Resolver {
            spec,
            dns: Dns::new(),
            metrics,
            clock,
            public_domain: public_domain.to_ascii_lowercase(),
            peering,
            cache: Mutex::new(Decisions::default()),
            srv_cache: Mutex::new(HashMap::new()),
            holds: Mutex::new(HashMap::new()),
        }
    }

    /// The clock (tests advance a manual one).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Forget every cached decision (after a directory reload: numbers may have moved).
    pub fn clear(&self) {
        if let Ok(mut c) = self.cache.lock() {
            c.clear();
        }
        if let Ok(mut c) = self.srv_cache.lock() {
            c.clear();
        }
    }

    fn count(&self, rtype: &str, result: &str) {
        self.metrics
            .dns_lookups
            .with_label_values(&[rtype, result])
            .inc();
    }

    fn held(&self, key: &str) -> bool {
        let now = self.clock.now();
        self.holds
            .lock()
            .map(|h| h.get(key).is_some_and(|until| now < *until))
            .unwrap_or(false)
    }

    fn hold(&self, key: &str) {
        let until = self.clock.now() + self.spec.hold_down;
        if let Ok(mut h) = self.holds.lock() {
            h.insert(key.to_owned(), until);
        }
        tracing::warn!(%key, hold_down = ?self.spec.hold_down, "DNS failing: holding down");
    }

    fn main_ns(&self) -> NsSet {
        NsSet {
            servers: self.spec.nameservers.clone(),
            timeout: self.spec.attempt_timeout,
        }
    }

    fn ns_key(ns: &NsSet) -> String {
        let list: Vec<String> = ns.servers.iter().map(|s| s.to_string()).collect();
        format!("ns:{}", list.join(","))
    }

    /// The decision for a number or a domain, from the cache when fresh.
    pub async fn decide(&self, target: &str, svc: Svc) -> Result<Arc<Decision>, Transient> {
        let now = self.clock.now();
        // One look under the lock, sharing the decision out: the fresh one to use, or an
        // expired one kept for serve-stale should DNS fail.
        let (fresh, stale) = match self
            .cache
            .lock()
            .ok()
            .as_deref()
            .and_then(|c| c.of(svc).get(target))
        {
            Some(c) if now < c.expires => (Some(c.decision.clone()), None),
            Some(c) if now < c.stale_until => (None, Some(c.decision.clone())),
            _ => (None, None),
        };
        if let Some(mut d) = fresh {
            let kind = if d.protocol == Protocol::None {
                "negative"
            } else {
                "hit"
            };
            self.metrics.count_route_cache(kind);
            if d.targets.len() > 1 {
                // A fresh weighted draw each time: the order must not be frozen for a TTL.
                let d = Arc::make_mut(&mut d);
                d.targets = reorder(std::mem::take(&mut d.targets));
            }
            return Ok(d);
        }
        self.metrics.count_route_cache("miss");
        // Boxed: a miss is rare, and its resolution's state would otherwise enlarge every
        // request's future (which is moved whole).
        match Box::pin(self.decide_uncached(target, svc, None)).await {
            Ok(d) => {
                let d = Arc::new(d);
                self.store(target, svc, &d);
                Ok(d)
            }
            Err(e) => match stale {
                Some(d) => {
                    // RFC 8767-style serve-stale: known destinations survive a DNS outage.
                    self.metrics.count_route_cache("stale");
                    tracing::warn!(%target, error = %e, "DNS failing: using the expired route");
                    Ok(d)
                }
                None => Err(e),
            },
        }
    }

    fn store(&self, target: &str, svc: Svc, d: &Arc<Decision>) {
        let mut ttl = Duration::from_secs(u64::from(d.ttl));
        // The last resort is where a number goes when nothing was found: held like a negative
        // answer, within the same bounds (no day-long SOA minimum, no uncached zero).
        if matches!(d.protocol, Protocol::None | Protocol::LastResort) {
            ttl = ttl.clamp(self.spec.negative_min_ttl, self.spec.negative_max_ttl);
        }
        let now = self.clock.now();
        let entry = Cached {
            decision: d.clone(),
            expires: now + ttl,
            stale_until: now + ttl + self.spec.stale_max,
        };
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= self.spec.cache_entries {
                // Full: drop what is past its stale window, then the negative answers and the
                // last-resort ones (cheap to learn again, and what a flood of made-up numbers
                // leaves); if that is not
                // enough, an arbitrary eighth. Routes kept for serve-stale go last.
                c.retain(|e| now < e.stale_until);
                if c.len() >= self.spec.cache_entries {
                    c.retain(|e| {
                        !matches!(e.decision.protocol, Protocol::None | Protocol::LastResort)
                    });
                }
                c.evict_some(self.spec.cache_entries);
            }
            c.insert(target, svc, entry);
        }
    }

    /// Resolve without the cache, within the time budget; `trace` records every step.
    pub async fn decide_uncached(
        &self,
        target: &str,
        svc: Svc,
        trace: Option<&Trace>,
    ) -> Result<Decision, Transient> {
        let work = async {
            match target.strip_prefix('+').map(E164::from_digits) {
                Some(Ok(n)) => self.resolve_number(n, svc, trace).await,
                Some(Err(e)) => Err(Transient(e.to_string())),
                None => {
                    let mut d = Decision::new(target, svc);
                    self.locate(&mut d, &target.to_ascii_lowercase(), None, trace)
                        .await?;
                    Ok(d)
                }
            }
        };
        match tokio::time::timeout(self.spec.timeout, work).await {
            // Decisions that used no DNS record (peering table, no ENUM) get an hour.
            Ok(Ok(mut d)) => {
                if d.ttl == u32::MAX {
                    d.ttl = STATIC_TTL;
                }
                Ok(d)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => {
                tr(trace, || {
                    format!("time budget of {:?} exceeded", self.spec.timeout)
                });
                Err(Transient(format!(
                    "lookups took longer than {:?}",
                    self.spec.timeout
                )))
            }
        }
    }

    async fn resolve_number(
        &self,
        n: E164,
        svc: Svc,
        trace: Option<&Trace>,
    ) -> Result<Decision, Transient> {
        let aus = format!("+{n}");
        let mut d = Decision::new(&aus, svc);
        let wanted = match svc {
            Svc::Im => [Service::Im, Service::Sip, Service::Xmpp],
            Svc::Pres => [Service::Pres, Service::Sip, Service::Xmpp],
        };
        let mut transient: Option<String> = None;
        let mut negative: Option<u32> = None;
        let mut hit = None;
        for suffix in &self.spec.enums {
            let hold_key = format!("enum:{}", suffix.suffix);
            if self.held(&hold_key) {
                tr(trace, || {
                    format!("ENUM suffix {} held down after a failure", suffix.suffix)
                });
                transient.get_or_insert_with(|| format!("ENUM tree {} held down", suffix.suffix));
                continue;
            }
            let key = ddds::enum_domain(&n.digits(), &suffix.suffix);
            let source = DnsSource {
                r: self,
                ns: NsSet {
                    servers: suffix.nameservers.clone(),
                    timeout: suffix.timeout,
                },
                trace,
            };
            match ddds::resolve(&source, &aus, &key, &wanted).await {
                Err(e) => {
                    if e.server {
                        self.hold(&hold_key);
                    }
                    transient = Some(e.message);
                }
                Ok(EnumOutcome::NotFound { negative_ttl, .. }) => {
                    tr(trace, || format!("no ENUM match under {}", suffix.suffix));
                    negative = min_opt(negative, negative_ttl);
                }
                Ok(EnumOutcome::Found(r)) => {
                    hit = Some(r);
                    break;
                }
            }
        }
        let Some(r) = hit else {
            if let Some(t) = transient {
                return Err(Transient(t));
            }
            d.ttl = negative.unwrap_or(0);
            self.to_last_resort(&mut d, trace);
            return Ok(d);
        };
        // RFC 3402 and RFC 6116: the chosen NAPTR, then the others of its ORDER in
        // PREFERENCE order. A candidate whose domain has no usable server for its protocol
        // does not end the search; the next one is tried. Nothing usable: the first
        // candidate's outcome (the gateway of last resort, or no route).
        let mut first: Option<Decision> = None;
        let mut ttl = r.min_ttl;
        for c in std::iter::once(&r.candidate).chain(r.others.iter()) {
            tr(trace, || {
                format!(
                    "chosen NAPTR: order {} preference {} service {} -> {}",
                    c.order, c.preference, c.service, c.uri
                )
            });
            let mut d = d.clone();
            d.enum_hit = Some(EnumHit {
                uri: c.uri.clone(),
                service: c.service.to_string(),
                order: c.order,
                preference: c.preference,
            });
            d.ttl = ttl;
            match ddds::uri_domain(&c.uri) {
                None => {
                    tr(trace, || format!("URI {} names no domain", c.uri));
                    self.to_last_resort(&mut d, trace);
                }
                Some(domain) => {
                    // The URI scheme narrows what to look for: im:/pres: any protocol,
                    // sip:/xmpp: that one.
                    let only = match c.service {
                        Service::Sip => Some(Fallback::Sip),
                        Service::Xmpp => Some(Fallback::Xmpp),
                        _ => None,
                    };
                    self.locate(&mut d, &domain, only, trace).await?;
                }
            }
            ttl = ttl.min(d.ttl);
            if matches!(d.protocol, Protocol::Imps | Protocol::Sip | Protocol::Xmpp) {
                d.ttl = ttl;
                return Ok(d);
            }
            tr(trace, || format!("{} leads nowhere: the next NAPTR", c.uri));
            first.get_or_insert(d);
        }
        let mut d = first.unwrap_or(d);
        d.ttl = ttl;
        Ok(d)
    }

    fn to_last_resort(&self, d: &mut Decision, trace: Option<&Trace>) {
        match &self.spec.last_resort {
            Some(lr) => {
                tr(trace, || format!("gateway of last resort: {lr}"));
                d.protocol = Protocol::LastResort;
                d.domain.get_or_insert_with(|| lr.clone());
            }
            None => {
                tr(trace, || "no route".to_owned());
                d.protocol = Protocol::None;
            }
        }
    }

    /// Find servers for `domain`: peering table, SRV for IMPS, fallbacks, last resort.
    async fn locate(
        &self,
        d: &mut Decision,
        domain: &str,
        only: Option<Fallback>,
        trace: Option<&Trace>,
    ) -> Result<(), Transient> {
        d.domain = Some(domain.to_owned());
        if domain == self.public_domain {
            tr(trace, || format!("{domain} is our own domain"));
            d.protocol = Protocol::Imps;
            return Ok(());
        }
        if only.is_none() {
            if let Some((_, has_urls)) = self.peering.iter().find(|(p, _)| p == domain) {
                tr(trace, || format!("{domain} is in the peering table"));
                d.protocol = Protocol::Imps;
                d.peering = true;
                if *has_urls {
                    return Ok(());
                }
            }
            let name = format!("{}.{domain}", self.spec.srv_label);
            match self.srv_targets(&name, trace).await? {
                Found::Targets(t, ttl) => {
                    d.protocol = Protocol::Imps;
                    d.targets = t;
                    d.ttl = d.ttl.min(ttl);
                    return Ok(());
                }
                Found::NotOffered(ttl) => d.ttl = d.ttl.min(ttl),
                Found::Nothing(neg) => d.ttl = d.ttl.min(neg.unwrap_or(0)),
            }
            if d.peering {
                // A configured peer without URLs that SRV does not know: nothing to reach.
                d.protocol = Protocol::None;
            }
        }
        let fallbacks: Vec<Fallback> = match only {
            Some(f) => vec![f],
            None => self.spec.fallbacks.clone(),
        };
        for fb in fallbacks {
            let names: Vec<String> = match fb {
                Fallback::Sip => {
                    // RFC 3861 first, then RFC 3263: the domain's NAPTR records point at SRV
                    // names per transport; without them, the well-known SRV names.
                    let mut v = vec![format!("_{}._sip.{domain}", d.service.label())];
                    v.extend(self.sip_naptr(domain, trace).await?);
                    v.extend([
                        format!("_sips._tcp.{domain}"),
                        format!("_sip._tcp.{domain}"),
                        format!("_sip._udp.{domain}"),
                    ]);
                    v
                }
                Fallback::Xmpp => vec![
                    format!("_{}._xmpp.{domain}", d.service.label()),
                    format!("_xmpp-server._tcp.{domain}"),
                ],
            };
            let mut declined = false;
            for name in names {
                match self.srv_targets(&name, trace).await? {
                    Found::Targets(t, ttl) => {
                        d.protocol = match fb {
                            Fallback::Sip => Protocol::Sip,
                            Fallback::Xmpp => Protocol::Xmpp,
                        };
                        d.srv = Some(name.clone());
                        d.targets = t;
                        d.ttl = d.ttl.min(ttl);
                        return Ok(());
                    }
                    // "." for this protocol: skip to the next protocol, no address fallback.
                    Found::NotOffered(ttl) => {
                        d.ttl = d.ttl.min(ttl);
                        declined = true;
                        break;
                    }
                    Found::Nothing(neg) => d.ttl = d.ttl.min(neg.unwrap_or(0)),
                }
            }
            // RFC 6120 §3.2.2: an XMPP domain without SRV records is reached at its own
            // address, port 5269; only where ENUM said `xmpp:` (a domain's address alone
            // does not say it speaks XMPP).
            if fb == Fallback::Xmpp
                && only == Some(Fallback::Xmpp)
                && !declined
                && let Some((t, ttl)) = self.domain_address(domain, XMPP_PORT, trace).await?
            {
                d.protocol = Protocol::Xmpp;
                d.targets = vec![t];
                d.ttl = d.ttl.min(ttl);
                return Ok(());
            }
        }
        self.to_last_resort(d, trace);
        Ok(())
    }

    /// `domain`'s own addresses as a server on `port` (no SRV), and their TTL; `None` when
    /// it has none.
    async fn domain_address(
        &self,
        domain: &str,
        port: u16,
        trace: Option<&Trace>,
    ) -> Result<Option<(Server, u32)>, Transient> {
        let ns = self.main_ns();
        tr(trace, || {
            format!("query A/AAAA {domain}. (no SRV: port {port})")
        });
        match self.dns.addrs(&ns, domain).await {
            Ok(Answer::Records(list, _)) => {
                self.count("a", "ok");
                let ttl = list.iter().map(|(_, t)| *t).min().unwrap_or(0);
                for (ip, t) in &list {
                    tr(trace, || format!("  {t} {ip}"));
                }
                Ok(Some((
                    Server::new(
                        domain.to_owned(),
                        port,
                        list.into_iter().map(|(ip, _)| ip).collect(),
                        0,
                        0,
                    ),
                    ttl,
                )))
            }
            Ok(other) => {
                self.count("a", answer_kind(&other));
                tr(trace, || "  no address".to_owned());
                Ok(None)
            }
            Err(Failure { message: e, .. }) => {
                self.count("a", "error");
                tr(trace, || format!("  failed: {e}"));
                Err(Transient(e))
            }
        }
    }

    /// RFC 3263 §4.1: SRV names from the domain's `SIPS+D2T`/`SIP+D2T`/`SIP+D2U` NAPTRs.
    async fn sip_naptr(
        &self,
        domain: &str,
        trace: Option<&Trace>,
    ) -> Result<Vec<String>, Transient> {
        let ns = self.main_ns();
        tr(trace, || format!("query NAPTR {domain}."));
        let mut recs = match self.dns.naptr(&ns, domain).await {
            Ok(NaptrAnswer::Records(r)) => r,
            Ok(_) => {
                tr(trace, || "  no records".to_owned());
                return Ok(Vec::new());
            }
            Err(Failure { message: e, .. }) => {
                tr(trace, || format!("  failed: {e}"));
                return Err(Transient(e));
            }
        };
        recs.sort_by_key(|n| (n.order, n.preference));
        Ok(recs
            .into_iter()
            .filter(|n| {
                n.flags.eq_ignore_ascii_case("s")
                    && ["SIPS+D2T", "SIP+D2T", "SIP+D2U"]
                        .iter()
                        .any(|s| n.services.eq_ignore_ascii_case(s))
                    && n.replacement != "."
            })
            .map(|n| {
                tr(trace, || {
                    format!(
                        "  {} NAPTR {} {} \"s\" {:?} -> {}",
                        n.ttl, n.order, n.preference, n.services, n.replacement
                    )
                });
                n.replacement.trim_end_matches('.').to_owned()
            })
            .collect())
    }

    /// [`Resolver::srv_lookup`] through the per-name cache (not when tracing: the `resolve`
    /// command shows real lookups).
    async fn srv_targets(&self, name: &str, trace: Option<&Trace>) -> Result<Found, Transient> {
        let now = self.clock.now();
        if trace.is_none()
            && let Some((found, exp)) = self
                .srv_cache
                .lock()
                .ok()
                .and_then(|c| c.get(name).filter(|(_, exp)| now < *exp).cloned())
        {
            self.metrics.count_route_cache("srv-hit");
            // What is left of the TTL, not all of it: a decision built on this entry must
            // expire with it (the smallest TTL of the chain).
            let left =
                u32::try_from(exp.saturating_duration_since(now).as_secs()).unwrap_or(u32::MAX);
            // A fresh weighted draw each time: the order must not be frozen for a TTL.
            return Ok(match found {
                Found::Targets(t, ttl) => Found::Targets(reorder(t), ttl.min(left)),
                Found::NotOffered(ttl) => Found::NotOffered(ttl.min(left)),
                Found::Nothing(neg) => Found::Nothing(neg.map(|n| n.min(left))),
            });
        }
        let found = self.srv_lookup(name, trace).await?;
        let ttl = match &found {
            Found::Targets(_, t) | Found::NotOffered(t) => Duration::from_secs(u64::from(*t)),
            Found::Nothing(neg) => Duration::from_secs(u64::from(neg.unwrap_or(0)))
                .clamp(self.spec.negative_min_ttl, self.spec.negative_max_ttl),
        };
        if let Ok(mut c) = self.srv_cache.lock() {
            if c.len() >= self.spec.cache_entries {
                c.retain(|_, (_, exp)| now < *exp);
                evict_some(&mut c, self.spec.cache_entries);
            }
            c.insert(name.to_owned(), (found.clone(), now + ttl));
        }
        Ok(found)
    }

    /// SRV lookup and RFC 2782 ordering, with target addresses.
    async fn srv_lookup(&self, name: &str, trace: Option<&Trace>) -> Result<Found, Transient> {
        let ns = self.main_ns();
        let hold_key = Self::ns_key(&ns);
        if self.held(&hold_key) {
            tr(trace, || {
                format!("name servers {hold_key} held down after a failure")
            });
            return Err(Transient(format!("{hold_key} held down")));
        }
        tr(trace, || format!("query SRV {name}."));
        let a = self.dns.srv(&ns, name).await;
        self.count("srv", a.as_ref().map(answer_kind).unwrap_or("error"));
        let (records, extra) = match a {
            Err(Failure { message: e, server }) => {
                tr(trace, || format!("  failed: {e}"));
                if server {
                    self.hold(&hold_key);
                }
                return Err(Transient(e));
            }
            Ok(Answer::NoData(t)) | Ok(Answer::NxDomain(t)) => {
                tr(trace, || format!("  no records (negative TTL {t:?})"));
                return Ok(Found::Nothing(t));
            }
            Ok(Answer::Records(r, x)) => (r, x),
        };
        for s in &records {
            tr(trace, || {
                format!(
                    "  {} SRV {} {} {} {}",
                    s.ttl, s.priority, s.weight, s.port, s.target
                )
            });
        }
        let mut ttl = records.iter().map(|s| s.ttl).min().unwrap_or(0);
        let ordered = match ddds::order_srv(&records, &mut rand::rng()) {
            SrvOrder::NotOffered => {
                tr(trace, || {
                    "  service decidedly not offered (target \".\")".to_owned()
                });
                return Ok(Found::NotOffered(ttl));
            }
            SrvOrder::Targets(t) => t,
        };
        let mut targets = Vec::new();
        let mut address_failure = None;
        for s in ordered {
            // Additional-section addresses when the server sent them (never relied upon).
            let mut addrs: Vec<IpAddr> = extra
                .iter()
                .filter(|(h, _, _)| h.eq_ignore_ascii_case(&s.target))
                .map(|(_, ip, t)| {
                    ttl = ttl.min(*t);
                    *ip
                })
                .collect();
            if addrs.is_empty() {
                tr(trace, || format!("query A/AAAA {}.", s.target));
                match self.dns.addrs(&ns, &s.target).await {
                    Ok(Answer::Records(list, _)) => {
                        self.count("a", "ok");
                        for (ip, t) in list {
                            tr(trace, || format!("  {t} {ip}"));
                            ttl = ttl.min(t);
                            addrs.push(ip);
                        }
                    }
                    Ok(other) => {
                        self.count("a", answer_kind(&other));
                        tr(trace, || "  no address".to_owned());
                    }
                    Err(Failure { message: e, .. }) => {
                        self.count("a", "error");
                        tr(trace, || format!("  failed: {e}"));
                        address_failure = Some(e);
                    }
                }
            }
            if !addrs.is_empty() {
                targets.push(Server::new(
                    s.target.clone(),
                    s.port,
                    addrs,
                    s.priority,
                    s.weight,
                ));
            }
        }
        if targets.is_empty() {
            // No address because a lookup failed is not "no server": a transient error, so
            // a known route is served stale instead of being replaced by a negative one.
            if let Some(e) = address_failure {
                return Err(Transient(e));
            }
            return Ok(Found::Nothing(Some(ttl)));
        }
        tr(trace, || {
            let list: Vec<String> = targets
                .iter()
                .map(|t| format!("{}:{} {:?}", t.host, t.port, t.addrs))
                .collect();
            format!("  ordered targets: {}", list.join(", "))
        });
        Ok(Found::Targets(targets, ttl))
    }

    /// The gateway of last resort, if configured.
    pub fn last_resort(&self) -> Option<&str> {
        self.spec.last_resort.as_deref()
    }

    /// SSP URLs of a domain (SRV), for peers found only through DNS.
    pub async fn peer_urls(&self, domain: &str) -> Vec<Uri> {
        match self.decide(domain, Svc::Im).await {
            Ok(d) if d.protocol == Protocol::Imps => d.uris(),
            _ => Vec::new(),
        }
    }

    /// The XMPP servers of `domain` (RFC 6120 §3.2: `_xmpp-server._tcp`, after RFC 3861's
    /// `_im._xmpp`), in the order to try; empty when DNS names none.
    pub async fn xmpp_servers(&self, domain: &str) -> Result<Vec<std::net::SocketAddr>, Transient> {
        let mut d = Decision::new(domain, Svc::Im);
        self.locate(&mut d, domain, Some(Fallback::Xmpp), None)
            .await?;
        if d.protocol != Protocol::Xmpp {
            return Ok(Vec::new());
        }
        Ok(d.targets
            .iter()
            .flat_map(|t| {
                t.addrs
                    .iter()
                    .map(move |a| std::net::SocketAddr::new(*a, t.port))
            })
            .collect())
    }

    /// Anti-spoofing: whether ENUM places `n` at `peer_domain`. A number ENUM does not
    /// know is placed nowhere; a DNS failure is no verdict (the caller must not take it for
    /// one: anyone able to break its own DNS could otherwise pass any number off as its own).
    pub async fn place(&self, n: E164, peer_domain: &str) -> Result<(), Unplaced> {
        match self.decide(n.written().plus(), Svc::Im).await {
            Ok(d) if d.domain.as_deref() == Some(peer_domain) => Ok(()),
            Ok(_) => Err(Unplaced::Elsewhere),
            Err(e) => Err(Unplaced::Unverifiable(e.0)),
        }
    }
}

/// A DNS host name: dot-separated labels of letters, digits, `-` and `_` (SRV owner names),
/// each 1 to 63 bytes, at most 253 in all.
pub fn is_host_name(d: &str) -> bool {
    let d = d.strip_suffix('.').unwrap_or(d);
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A full cache (`cap` entries or more) loses an eighth of its entries: whichever come first
/// in the map's per-process random order, so no caller can choose what stays.
fn evict_some<K: Clone + Eq + std::hash::Hash, V>(c: &mut HashMap<K, V>, cap: usize) {
    if c.len() < cap {
        return;
    }
    remove_some(c, evictions(c.len(), cap));
}

/// How many of `len` entries a full cache of `cap` gives up: an eighth, or what is over.
fn evictions(len: usize, cap: usize) -> usize {
    (len / 8).max((1 + len).saturating_sub(cap))
}

/// Remove `n` entries (or all there are), whichever come first in the map's order.
fn remove_some<K: Clone + Eq + std::hash::Hash, V>(c: &mut HashMap<K, V>, n: usize) {
    let gone: Vec<K> = c.keys().take(n).cloned().collect();
    for k in gone {
        c.remove(&k);
    }
}

/// Why an originator number is not accepted from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unplaced {
    /// ENUM places it at another operator, or nowhere.
    Elsewhere,
    /// DNS could not say now (the text says why).
    Unverifiable(String),
}

/// The targets in a new RFC 2782 order (priority ascending, weighted random within one).
fn reorder(targets: Vec<Server>) -> Vec<Server> {
    let srv: Vec<ddds::Srv> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| ddds::Srv {
            priority: t.priority,
            weight: t.weight,
            port: t.port,
            target: i.to_string(),
            ttl: 0,
        })
        .collect();
    let order = match ddds::order_srv(&srv, &mut rand::rng()) {
        SrvOrder::Targets(o) => o,
        SrvOrder::NotOffered => return targets,
    };
    let mut slots: Vec<Option<Server>> = targets.into_iter().map(Some).collect();
    order
        .iter()
        .filter_map(|s| {
            s.target
                .parse::<usize>()
                .ok()
                .and_then(|i| slots.get_mut(i)?.take())
        })
        .collect()
}

/// Validity of decisions that involved no DNS record, in seconds.
const STATIC_TTL: u32 = 3600;

fn min_opt(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decisions_parsed_urls_are_its_urls_in_order() {
        let mut d = Decision::new("opy.example", Svc::Im);
        d.targets = vec![
            Server::new(
                "a.opy.example".into(),
                8443,
                vec!["127.0.0.2".parse().unwrap(), "::1".parse().unwrap()],
                0,
                0,
            ),
            Server::new(
                "b.opy.example".into(),
                443,
                vec!["10.0.0.1".parse().unwrap()],
                1,
                0,
            ),
        ];
        let parsed: Vec<Uri> = d.urls().iter().map(|u| u.parse().unwrap()).collect();
        assert_eq!(d.uris(), parsed);
        assert_eq!(d.uris()[1].to_string(), "https://[::1]:8443/");
    }

    #[test]
    fn only_host_names_go_to_dns_as_domains() {
        for ok in ["opy.example", "a-b.c_d.example.", "x"] {
            assert!(is_host_name(ok), "{ok}");
        }
        let long = "a".repeat(64);
        for bad in [
            "",
            "+4470000000",
            "a..b",
            "a b.example",
            long.as_str(),
            "é.example",
        ] {
            assert!(!is_host_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_full_cache_loses_a_part_never_all() {
        let mut c: HashMap<u32, ()> = (0..80).map(|i| (i, ())).collect();
        evict_some(&mut c, 100);
        assert_eq!(c.len(), 80, "not full: untouched");
        evict_some(&mut c, 80);
        assert_eq!(c.len(), 70, "an eighth");
        let mut small: HashMap<u32, ()> = (0..3).map(|i| (i, ())).collect();
        evict_some(&mut small, 2);
        assert_eq!(small.len(), 1, "below the cap, room for one more");
    }

    /// The decision cache (one map per service) gives up what one map would, shared in
    /// proportion: never all, never a lone entry of the smaller map needlessly.
    #[test]
    fn the_decision_cache_loses_a_part_of_both_services_never_all() {
        let entry = |svc| Cached {
            decision: Arc::new(Decision::new("+4670000000", svc)),
            expires: Instant::now(),
            stale_until: Instant::now(),
        };
        let mut c = Decisions::default();
        c.insert("+1", Svc::Im, entry(Svc::Im));
        c.insert("+1", Svc::Pres, entry(Svc::Pres));
        c.evict_some(2);
        assert_eq!(c.len(), 1, "full at 2 of 2: one goes, not both");
        let mut c = Decisions::default();
        for i in 0..70 {
            c.insert(&format!("+{i}"), Svc::Im, entry(Svc::Im));
        }
        for i in 0..10 {
            c.insert(&format!("+{i}"), Svc::Pres, entry(Svc::Pres));
        }
        c.evict_some(100);
        assert_eq!(c.len(), 80, "not full: untouched");
        c.evict_some(80);
        assert_eq!(
            (c.im.len(), c.pres.len()),
            (62, 8),
            "an eighth, in proportion"
        );
        c.evict_some(5);
        assert_eq!(c.len(), 4, "far over the cap: room for one more");
        assert!(!c.im.is_empty(), "the larger map keeps its share");
    }
}
