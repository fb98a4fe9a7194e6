//! Config file schema: the raw serde form and the validated form the gateway runs on.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Check, k};
use crate::config::locate::Step;
use crate::ssp::ids::{E164, NumberPlan, WvId};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    gateway: RawGateway,
    #[serde(default)]
    directory: RawDirectory,
    #[serde(default)]
    listen: RawListen,
    #[serde(default)]
    tls: RawTls,
    #[serde(default)]
    core: Option<RawCore>,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    resolver: Option<RawResolver>,
    #[serde(default, rename = "peer")]
    peers: Vec<RawPeer>,
    #[serde(default, rename = "route")]
    routes: Vec<RawRoute>,
    #[serde(default)]
    cluster: RawCluster,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    #[serde(default)]
    replica: Option<RawReplica>,
    #[serde(default)]
    siblings: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawReplica {
    Index(i64),
    Word(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    public_domain: String,
    core_domains: Vec<String>,
    country_code: String,
    #[serde(default)]
    trunk_prefix: Option<String>,
    #[serde(default)]
    international_prefix: Option<String>,
    #[serde(default)]
    core_hosts: Vec<String>,
    #[serde(default)]
    extra_namespaces: Vec<String>,
    #[serde(default)]
    hmac_key_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    peer: Option<String>,
    core: Option<String>,
    admin: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    #[serde(default)]
    trust: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCore {
    url: String,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    tls: bool,
    #[serde(default)]
    trust: Vec<String>,
    #[serde(default)]
    pins: Vec<String>,
    #[serde(default)]
    id_style: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    connect: Option<String>,
    handshake: Option<String>,
    request: Option<String>,
    idle: Option<String>,
    association: Option<String>,
    drain: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_body: Option<usize>,
    max_depth: Option<usize>,
    max_attrs: Option<usize>,
    max_attr_len: Option<usize>,
    max_text_len: Option<usize>,
    max_elements: Option<usize>,
    max_transactions: Option<usize>,
    max_in_flight: Option<usize>,
    max_connections: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResolver {
    nameservers: Vec<String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    attempt_timeout: Option<String>,
    #[serde(default)]
    srv_label: Option<String>,
    #[serde(default)]
    fallbacks: Option<Vec<String>>,
    #[serde(default)]
    last_resort: Option<String>,
    #[serde(default)]
    negative_min_ttl: Option<String>,
    #[serde(default)]
    negative_max_ttl: Option<String>,
    #[serde(default)]
    hold_down: Option<String>,
    #[serde(default)]
    stale_max: Option<String>,
    #[serde(default)]
    originator_check: Option<String>,
    #[serde(default)]
    cache_entries: Option<usize>,
    #[serde(default, rename = "enum")]
    enums: Vec<RawEnum>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnum {
    suffix: String,
    #[serde(default)]
    nameservers: Vec<String>,
    #[serde(default)]
    timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    originator_rate: Option<u32>,
    originator_burst: Option<u32>,
    #[serde(default)]
    accept_unlisted_peers: bool,
    #[serde(default)]
    search_wildcards: Option<String>,
    #[serde(default)]
    search_min_digits: Option<usize>,
    #[serde(default)]
    search_unregistered: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirectory {
    file: Option<String>,
    #[serde(default, rename = "template")]
    templates: Vec<RawTemplate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    core: String,
    public: String,
    #[serde(default)]
    ranges: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    domain: String,
    #[serde(default)]
    urls: Vec<String>,
    #[serde(default)]
    id_style: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    trust: Vec<String>,
    #[serde(default)]
    pins: Vec<String>,
    #[serde(default)]
    client_cert: Option<bool>,
    #[serde(default)]
    tls_name: Option<String>,
    #[serde(default)]
    rate: Option<u32>,
    #[serde(default)]
    burst: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    prefix: String,
    peer: String,
}

/// How IDs are written towards a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdStyle {
    /// `wv:+MSISDN` (the profile's canonical form).
    #[default]
    Msisdn,
    /// `wv:+MSISDN@domain` (Baraza splits every ID at `@` and needs a host part).
    MsisdnAtDomain,
}

/// How the far side of a link answers requests (profile section 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponseMode {
    /// 200 with an empty body at once; the SSP response comes later as its own POST (Baraza).
    #[default]
    Async,
    /// The SSP response is the HTTP response body.
    Sync,
}

/// How a peer proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PeerAuth {
    /// Client certificate naming the peer's domain (the default).
    #[default]
    Mtls,
    /// SSP association (SetupTransaction), for peers without client certificates (Baraza).
    Association,
    /// Either.
    Any,
}

/// How the core is authenticated on the core-facing listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoreAuth {
    /// Source address in `allow`.
    Allowlist,
    /// Client certificate chaining to `core.trust` (requires `core.tls = true`).
    Mtls,
    /// SSP association, with the core as one of `core_domains` (a Baraza-like core).
    Association,
}

/// `[listen]`.
#[derive(Debug, Clone, Default)]
pub struct Listen {
    /// Peer-facing TLS listener.
    pub peer: Option<std::net::SocketAddr>,
    /// Core-facing listener.
    pub core: Option<std::net::SocketAddr>,
    /// Admin listener (/metrics, /health, /ready, /reload).
    pub admin: Option<std::net::SocketAddr>,
}

/// `[tls]`.
#[derive(Debug, Clone, Default)]
pub struct TlsSpec {
    /// Our certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// Our private key (PEM).
    pub key: Option<PathBuf>,
    /// Default trust anchors for peers.
    pub trust: Vec<PathBuf>,
}

/// `[core]`: the link to the legacy IMPS server.
#[derive(Debug, Clone)]
pub struct CoreSpec {
    /// Where the gateway POSTs to the core.
    pub url: String,
    /// How the core answers.
    pub mode: ResponseMode,
    /// How the core is authenticated when it POSTs to us.
    pub auth: CoreAuth,
    /// Allowed source networks (allowlist auth).
    pub allow: Vec<ipnet::IpNet>,
    /// Serve TLS on the core listener.
    pub tls: bool,
    /// Anchors for the core's certificates (https URL, mtls auth).
    pub trust: Vec<PathBuf>,
    /// Pinned core server certificates (https URL).
    pub pins: Vec<String>,
    /// How other operators' numbers are written towards the core: `wv:+MSISDN`, or with our
    /// public domain as host part for cores that need one (Baraza-like).
    pub id_style: IdStyle,
}

/// `[timeouts]`.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: std::time::Duration,
    /// TLS handshake (both directions).
    pub handshake: std::time::Duration,
    /// Deadline for the far side's SSP answer to one request.
    pub request: std::time::Duration,
    /// Idle keep-alive connections are closed after this.
    pub idle: std::time::Duration,
    /// Deadline for a whole SSP association.
    pub association: std::time::Duration,
    /// How long a shutdown waits for in-flight requests.
    pub drain: std::time::Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        use std::time::Duration;
        Timeouts {
            connect: Duration::from_secs(2),
            handshake: Duration::from_secs(5),
            request: Duration::from_secs(10),
            idle: Duration::from_secs(90),
            association: Duration::from_secs(10),
            drain: Duration::from_secs(15),
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Copy)]
pub struct LimitsSpec {
    /// XML parsing limits.
    pub xml: crate::ssp::xml::Limits,
    /// Requests being relayed at once (beyond: 503).
    pub max_in_flight: usize,
    /// Open connections per listener (beyond: new ones wait).
    pub max_connections: usize,
}

/// `[policy]`.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Requests per second per originating user ID (inbound).
    pub originator_rate: u32,
    /// Burst for the same.
    pub originator_burst: u32,
    /// Accept peers that are not in the peering table when their certificate chains to
    /// `[tls] trust` and names the domain they claim (federation found through DNS).
    pub accept_unlisted_peers: bool,
    /// Number searches with wildcards (`* % ? _`): refused with 537, or answered by our own
    /// core only (they cannot be routed by ENUM).
    pub search_wildcards_allowed: bool,
    /// Number searches with fewer digits are partial: refused with 537.
    pub search_min_digits: usize,
    /// When the operator ENUM names does not know a searched number, answer with the
    /// `wv:+MSISDN` anyway (the seed's "add regardless if that user is registered").
    pub search_unregistered_answer: bool,
}

/// What the anti-spoofing check does with `wv:+MSISDN` originators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginatorCheck {
    /// ENUM must place the number at the sending peer, else 901.
    Enforce,
    /// Check and log mismatches, but let the request through.
    Log,
    /// No check.
    Off,
}

/// A fallback protocol for destinations without an IMPS server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// SIP/SIMPLE (RFC 3861 `_im._sip`/`_pres._sip`, RFC 3263).
    Sip,
    /// XMPP (`_im._xmpp`/`_pres._xmpp`, `_xmpp-server._tcp`).
    Xmpp,
}

/// `[[resolver.enum]]`: one ENUM tree.
#[derive(Debug, Clone)]
pub struct EnumSuffix {
    /// Suffix, e.g. `e164.arpa.` or a carrier tree.
    pub suffix: String,
    /// Name servers for it.
    pub nameservers: Vec<std::net::SocketAddr>,
    /// Timeout of one query attempt.
    pub timeout: std::time::Duration,
}

/// `[resolver]`: DNS-based destination resolution.
#[derive(Debug, Clone)]
pub struct ResolverSpec {
    /// Name servers for SRV and address lookups.
    pub nameservers: Vec<std::net::SocketAddr>,
    /// Budget for one route decision (all its lookups).
    pub timeout: std::time::Duration,
    /// Timeout of one query attempt.
    pub attempt_timeout: std::time::Duration,
    /// SRV label of IMPS servers (default `_imps-server._tcp`).
    pub srv_label: String,
    /// Fallback protocols, in order.
    pub fallbacks: Vec<Fallback>,
    /// `[[peer]]` domain of the gateway of last resort.
    pub last_resort: Option<String>,
    /// Negative answers are cached at least this long.
    pub negative_min_ttl: std::time::Duration,
    /// And at most this long.
    pub negative_max_ttl: std::time::Duration,
    /// A suffix or name-server set that failed is not asked again for this long.
    pub hold_down: std::time::Duration,
    /// An expired route is still used this long after expiry while DNS fails.
    pub stale_max: std::time::Duration,
    /// Anti-spoofing of `wv:+MSISDN` originators.
    pub originator_check: OriginatorCheck,
    /// Route cache capacity (entries).
    pub cache_entries: usize,
    /// ENUM trees, in order.
    pub enums: Vec<EnumSuffix>,
}

/// `[gateway]`: identity of this operator.
#[derive(Debug, Clone)]
pub struct Operator {
    /// The domain peers see (`wv:@public_domain`).
    pub public_domain: String,
    /// The core's internal domains; the first is where inbound IDs are mapped to.
    pub core_domains: Vec<String>,
    /// Core host names that must never leave (topology hiding scrub).
    pub core_hosts: Vec<String>,
    /// Namespaces accepted in addition to the built-in SSP ones.
    pub extra_namespaces: Vec<String>,
    /// File of HMAC keys for transaction-ID tokens (one hex key per line, first signs).
    pub hmac_key_file: Option<PathBuf>,
}

/// `[[directory.template]]`: `wv:{national}@core.opx.example` <-> `+46{national}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSpec {
    /// Core ID pattern with one `{national}`.
    pub core: String,
    /// Public MSISDN pattern with one `{national}`, e.g. `wv:+46{national}` or `+46{national}`.
    pub public: String,
    /// MSISDN prefixes the template covers (`+4670`); empty means all numbers matching.
    pub ranges: Vec<String>,
}

/// `[directory]`.
#[derive(Debug, Clone, Default)]
pub struct DirectorySpec {
    /// The CSV file of explicit entries.
    pub file: Option<PathBuf>,
    /// Templates.
    pub templates: Vec<TemplateSpec>,
}

/// `[[peer]]`: one peer operator.
#[derive(Debug, Clone)]
pub struct PeerSpec {
    /// Its domain (`wv:@domain`, certificate SAN).
    pub domain: String,
    /// SSP URLs, in failover order.
    pub urls: Vec<String>,
    /// How to write IDs towards it.
    pub id_style: IdStyle,
    /// Namespace to emit.
    pub namespace: String,
    /// How it answers our requests (and how it wants our answers).
    pub mode: ResponseMode,
    /// How it authenticates to us.
    pub auth: PeerAuth,
    /// Its own trust anchors (instead of `[tls] trust`).
    pub trust: Vec<PathBuf>,
    /// Pinned certificates (SHA-256 hex of the DER), instead of anchors.
    pub pins: Vec<String>,
    /// Present our certificate when connecting to it.
    pub client_cert: bool,
    /// Name its server certificate must carry (default: its domain).
    pub tls_name: String,
    /// Requests per second accepted from it.
    pub rate: u32,
    /// Burst for the same.
    pub burst: u32,
}

/// `[[route]]`: a static number-prefix route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// E.164 prefix digits (without `+`).
    pub prefix: String,
    /// The peer domain it goes to.
    pub peer: String,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// `[gateway]`.
    pub operator: Operator,
    /// Numbering plan from `[gateway]`.
    pub plan: NumberPlan,
    /// `[directory]`.
    pub directory: DirectorySpec,
    /// `[[peer]]` entries.
    pub peers: Vec<PeerSpec>,
    /// `[[route]]` entries.
    pub routes: Vec<Route>,
    /// `[listen]`.
    pub listen: Listen,
    /// `[tls]`.
    pub tls: TlsSpec,
    /// `[core]`.
    pub core: Option<CoreSpec>,
    /// `[timeouts]`.
    pub timeouts: Timeouts,
    /// `[limits]`.
    pub limits: LimitsSpec,
    /// `[policy]`.
    pub policy: Policy,
    /// `[resolver]`.
    pub resolver: Option<ResolverSpec>,
    /// `[cluster]`.
    pub cluster: Cluster,
}

/// `[cluster]`: replicas of one gateway behind one address, sharing the HMAC key. An
/// asynchronous answer may reach a replica that did not send the request; it is handed to
/// the one that did, on that replica's admin listener.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    /// This replica's index (0..=255), written into every transaction ID it issues.
    pub replica: u8,
    /// Every replica's admin URL, by index (empty: a single gateway).
    pub siblings: Vec<http::Uri>,
}

impl Config {
    /// The peer entry for a domain.
    pub fn peer(&self, domain: &str) -> Option<&PeerSpec> {
        self.peers
            .iter()
            .find(|p| p.domain.eq_ignore_ascii_case(domain))
    }
}

fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn domain(check: &mut Check<'_>, path: &[Step], d: &str) -> String {
    if !valid_domain(d) {
        check.err(path, format!("{d:?} is not a valid domain name"));
    }
    d.to_ascii_lowercase()
}

fn digits(check: &mut Check<'_>, path: &[Step], s: &str, what: &str) -> String {
    let d = s.trim_start_matches('+');
    if d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit()) {
        check.err(path, format!("{what} {s:?} must be digits"));
    }
    d.to_owned()
}

pub(crate) fn validate(raw: RawConfig, base: &Path, check: &mut Check<'_>) -> Option<Config> {
    let g = raw.gateway;
    let public_domain = domain(check, &[k("gateway"), k("public_domain")], &g.public_domain);
    if g.core_domains.is_empty() {
        check.err(
            &[k("gateway"), k("core_domains")],
            "at least one core domain is required",
        );
    }
    let core_domains: Vec<String> = g
        .core_domains
        .iter()
        .enumerate()
        .map(|(i, d)| domain(check, &[k("gateway"), k("core_domains"), Step::Index(i)], d))
        .collect();
    if core_domains.contains(&public_domain) {
        check.err(
            &[k("gateway"), k("core_domains")],
            "the public domain cannot also be a core domain (it would never be hidden)",
        );
    }
    let cc = digits(
        check,
        &[k("gateway"), k("country_code")],
        &g.country_code,
        "country code",
    );
    if cc.len() > 3 || cc.starts_with('0') {
        check.err(
            &[k("gateway"), k("country_code")],
            format!(
                "country code {:?} must be 1-3 digits not starting with 0",
                g.country_code
            ),
        );
    }
    let mut plan = NumberPlan::new(&cc);
    if let Some(t) = &g.trunk_prefix {
        plan.trunk_prefix = digits(check, &[k("gateway"), k("trunk_prefix")], t, "trunk prefix");
    }
    if let Some(t) = &g.international_prefix {
        plan.international_prefix = digits(
            check,
            &[k("gateway"), k("international_prefix")],
            t,
            "international prefix",
        );
    }
    let core_hosts = g
        .core_hosts
        .iter()
        .enumerate()
        .map(|(i, d)| domain(check, &[k("gateway"), k("core_hosts"), Step::Index(i)], d))
        .collect();

    let mut directory = DirectorySpec {
        file: raw
            .directory
            .file
            .as_deref()
            .map(|f| Config::resolve_path(base, f)),
        templates: Vec::new(),
    };
    for (i, t) in raw.directory.templates.into_iter().enumerate() {
        let path = [k("directory"), k("template"), Step::Index(i)];
        if t.core.matches("{national}").count() != 1 {
            check.err(
                &[&path[..], &[k("core")]].concat(),
                "must contain {national} exactly once",
            );
        } else if WvId::parse(&t.core.replace("{national}", "1")).is_err() {
            check.err(
                &[&path[..], &[k("core")]].concat(),
                format!("{:?} is not a wv: ID pattern", t.core),
            );
        }
        let public = t.public.trim_start_matches("wv:").trim_start_matches("WV:");
        match public
            .strip_prefix('+')
            .and_then(|p| p.strip_suffix("{national}"))
        {
            Some(cc) if cc.bytes().all(|b| b.is_ascii_digit()) => {}
            _ => check.err(
                &[&path[..], &[k("public")]].concat(),
                format!("{:?} must look like wv:+<digits>{{national}}", t.public),
            ),
        }
        for (j, r) in t.ranges.iter().enumerate() {
            if E164::parse(r).is_err() {
                check.err(
                    &[&path[..], &[k("ranges"), Step::Index(j)]].concat(),
                    format!("range {r:?} must be '+' followed by digits"),
                );
            }
        }
        directory.templates.push(TemplateSpec {
            core: t.core,
            public: t.public,
            ranges: t.ranges,
        });
    }

    let mut peers: Vec<PeerSpec> = Vec::new();
    for (i, p) in raw.peers.into_iter().enumerate() {
        let path = |key: &str| [k("peer"), Step::Index(i), k(key)];
        let d = domain(check, &path("domain"), &p.domain);
        if peers.iter().any(|q| q.domain == d) {
            check.err(&path("domain"), format!("peer {d} is defined twice"));
        }
        if d == public_domain || core_domains.contains(&d) {
            check.err(
                &path("domain"),
                format!("peer {d} is one of our own domains"),
            );
        }
        for (j, u) in p.urls.iter().enumerate() {
            match u.parse::<http::Uri>() {
                Ok(uri)
                    if matches!(uri.scheme_str(), Some("http" | "https"))
                        && uri.host().is_some() => {}
                _ => check.err(
                    &[k("peer"), Step::Index(i), k("urls"), Step::Index(j)],
                    format!("{u:?} is not an http:// or https:// URL"),
                ),
            }
        }
        let id_style = match p.id_style.as_deref() {
            None | Some("msisdn") => IdStyle::Msisdn,
            Some("msisdn@domain") => IdStyle::MsisdnAtDomain,
            Some(other) => {
                check.err(
                    &path("id_style"),
                    format!("{other:?}: expected \"msisdn\" or \"msisdn@domain\""),
                );
                IdStyle::Msisdn
            }
        };
        let mode = response_mode(check, &path("mode"), p.mode.as_deref());
        let auth = match p.auth.as_deref() {
            None | Some("mtls") => PeerAuth::Mtls,
            Some("association") => PeerAuth::Association,
            Some("any") => PeerAuth::Any,
            Some(other) => {
                check.err(
                    &path("auth"),
                    format!("{other:?}: expected \"mtls\", \"association\" or \"any\""),
                );
                PeerAuth::Mtls
            }
        };
        for (j, pin) in p.pins.iter().enumerate() {
            if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
                check.err(
                    &[k("peer"), Step::Index(i), k("pins"), Step::Index(j)],
                    "a pin is the SHA-256 of the certificate DER as 64 hex digits",
                );
            }
        }
        let tls_name = p.tls_name.clone().unwrap_or_else(|| d.clone());
        peers.push(PeerSpec {
            domain: d,
            urls: p.urls,
            id_style,
            namespace: p
                .namespace
                .unwrap_or_else(|| crate::ssp::NS_WV_SSP_13.to_owned()),
            mode,
            auth,
            trust: p
                .trust
                .iter()
                .map(|t| Config::resolve_path(base, t))
                .collect(),
            pins: p.pins.iter().map(|p| p.to_ascii_lowercase()).collect(),
            client_cert: p.client_cert.unwrap_or(true),
            tls_name,
            rate: p.rate.unwrap_or(500),
            burst: p.burst.unwrap_or(1000),
        });
    }

    let mut routes = Vec::new();
    for (i, r) in raw.routes.into_iter().enumerate() {
        let path = |key: &str| [k("route"), Step::Index(i), k(key)];
        if !r.prefix.starts_with('+') {
            check.err(
                &path("prefix"),
                format!("prefix {:?} must start with '+'", r.prefix),
            );
        }
        let prefix = digits(check, &path("prefix"), &r.prefix, "prefix");
        let peer = r.peer.to_ascii_lowercase();
        if !peers.iter().any(|p| p.domain == peer) {
            check.err(&path("peer"), format!("no [[peer]] with domain {peer:?}"));
        }
        routes.push(Route { prefix, peer });
    }

    let addr = |check: &mut Check<'_>, key: &str, v: &Option<String>| {
        v.as_deref()
            .and_then(|a| match a.parse::<std::net::SocketAddr>() {
                Ok(sa) => Some(sa),
                Err(_) => {
                    check.err(
                        &[k("listen"), k(key)],
                        format!("{a:?} is not an address:port"),
                    );
                    None
                }
            })
    };
    let listen = Listen {
        peer: addr(check, "peer", &raw.listen.peer),
        core: addr(check, "core", &raw.listen.core),
        admin: addr(check, "admin", &raw.listen.admin),
    };
    let tls = TlsSpec {
        cert: raw
            .tls
            .cert
            .as_deref()
            .map(|p| Config::resolve_path(base, p)),
        key: raw
            .tls
            .key
            .as_deref()
            .map(|p| Config::resolve_path(base, p)),
        trust: raw
            .tls
            .trust
            .iter()
            .map(|p| Config::resolve_path(base, p))
            .collect(),
    };
    if listen.peer.is_some() && (tls.cert.is_none() || tls.key.is_none()) {
        check.err(&[k("tls")], "the peer listener needs [tls] cert and key");
    }
    let core = raw.core.map(|c| {
        let path = |key: &str| [k("core"), k(key)];
        match c.url.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
            _ => check.err(
                &path("url"),
                format!("{:?} is not an http:// or https:// URL", c.url),
            ),
        }
        let auth = match c.auth.as_deref() {
            None | Some("allowlist") => CoreAuth::Allowlist,
            Some("mtls") => CoreAuth::Mtls,
            Some("association") => CoreAuth::Association,
            Some(other) => {
                check.err(
                    &path("auth"),
                    format!("{other:?}: expected \"allowlist\", \"mtls\" or \"association\""),
                );
                CoreAuth::Allowlist
            }
        };
        if auth == CoreAuth::Mtls && (!c.tls || c.trust.is_empty()) {
            check.err(
                &path("auth"),
                "mtls needs tls = true and trust anchors for the core",
            );
        }
        let mut allow = Vec::new();
        for (j, a) in c.allow.iter().enumerate() {
            let net = a
                .parse::<ipnet::IpNet>()
                .or_else(|_| a.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match net {
                Ok(n) => allow.push(n),
                Err(_) => check.err(
                    &[k("core"), k("allow"), Step::Index(j)],
                    format!("{a:?} is not an address or CIDR network"),
                ),
            }
        }
        if auth == CoreAuth::Allowlist && allow.is_empty() {
            check.err(
                &path("allow"),
                "allowlist auth needs at least one allowed network",
            );
        }
        let id_style = match c.id_style.as_deref() {
            None | Some("msisdn") => IdStyle::Msisdn,
            Some("msisdn@domain") => IdStyle::MsisdnAtDomain,
            Some(other) => {
                check.err(
                    &path("id_style"),
                    format!("{other:?}: expected \"msisdn\" or \"msisdn@domain\""),
                );
                IdStyle::Msisdn
            }
        };
        CoreSpec {
            id_style,
            url: c.url,
            mode: response_mode(check, &path("mode"), c.mode.as_deref()),
            auth,
            allow,
            tls: c.tls,
            trust: c
                .trust
                .iter()
                .map(|p| Config::resolve_path(base, p))
                .collect(),
            pins: c.pins.iter().map(|p| p.to_ascii_lowercase()).collect(),
        }
    });
    let mut timeouts = Timeouts::default();
    let t = &raw.timeouts;
    for (key, v, slot) in [
        ("connect", &t.connect, &mut timeouts.connect),
        ("handshake", &t.handshake, &mut timeouts.handshake),
        ("request", &t.request, &mut timeouts.request),
        ("idle", &t.idle, &mut timeouts.idle),
        ("association", &t.association, &mut timeouts.association),
        ("drain", &t.drain, &mut timeouts.drain),
    ] {
        if let Some(v) = v {
            match super::parse_duration(v) {
                Ok(d) if !d.is_zero() => *slot = d,
                Ok(_) => check.err(&[k("timeouts"), k(key)], "must be more than zero"),
                Err(e) => check.err(&[k("timeouts"), k(key)], e),
            }
        }
    }
    let mut xml = crate::ssp::xml::Limits::default();
    let l = &raw.limits;
    for (key, v, slot) in [
        ("max_body", l.max_body, &mut xml.max_body),
        ("max_depth", l.max_depth, &mut xml.max_depth),
        ("max_attrs", l.max_attrs, &mut xml.max_attrs),
        ("max_attr_len", l.max_attr_len, &mut xml.max_attr_len),
        ("max_text_len", l.max_text_len, &mut xml.max_text_len),
        ("max_elements", l.max_elements, &mut xml.max_elements),
        (
            "max_transactions",
            l.max_transactions,
            &mut xml.max_transactions,
        ),
    ] {
        if let Some(v) = v {
            if v == 0 {
                check.err(&[k("limits"), k(key)], "must be more than zero");
            }
            *slot = v;
        }
    }
    let limits = LimitsSpec {
        xml,
        max_in_flight: l.max_in_flight.unwrap_or(10_000),
        max_connections: l.max_connections.unwrap_or(20_000),
    };
    let policy = Policy {
        originator_rate: raw.policy.originator_rate.unwrap_or(20),
        originator_burst: raw.policy.originator_burst.unwrap_or(50),
        accept_unlisted_peers: raw.policy.accept_unlisted_peers,
        search_wildcards_allowed: match raw.policy.search_wildcards.as_deref() {
            None | Some("refuse") => false,
            Some("allow") => true,
            Some(other) => {
                check.err(
                    &[k("policy"), k("search_wildcards")],
                    format!("{other:?}: expected \"refuse\" or \"allow\""),
                );
                false
            }
        },
        search_min_digits: raw.policy.search_min_digits.unwrap_or(8),
        search_unregistered_answer: match raw.policy.search_unregistered.as_deref() {
            None | Some("answer") => true,
            Some("error") => false,
            Some(other) => {
                check.err(
                    &[k("policy"), k("search_unregistered")],
                    format!("{other:?}: expected \"answer\" or \"error\""),
                );
                true
            }
        },
    };

    let resolver = raw.resolver.map(|r| {
        let path = |key: &str| [k("resolver"), k(key)];
        let sockets =
            |check: &mut Check<'_>, base: &[Step], list: &[String]| -> Vec<std::net::SocketAddr> {
                list.iter()
                    .enumerate()
                    .filter_map(|(i, s)| {
                        let parsed = s.parse::<std::net::SocketAddr>().or_else(|_| {
                            s.parse::<std::net::IpAddr>()
                                .map(|ip| std::net::SocketAddr::new(ip, 53))
                        });
                        match parsed {
                            Ok(a) => Some(a),
                            Err(_) => {
                                check.err(
                                    &[base, &[Step::Index(i)]].concat(),
                                    format!("{s:?} is not an IP address or address:port"),
                                );
                                None
                            }
                        }
                    })
                    .collect()
            };
        let dur = |check: &mut Check<'_>,
                   key: &str,
                   v: &Option<String>,
                   default: u64|
         -> std::time::Duration {
            match v.as_deref().map(super::parse_duration) {
                None => std::time::Duration::from_millis(default),
                // A lookup given no time at all always fails.
                Some(Ok(d)) if d.is_zero() && key.ends_with("timeout") => {
                    check.err(&path(key), "must be more than zero");
                    std::time::Duration::from_millis(default)
                }
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    check.err(&path(key), e);
                    std::time::Duration::from_millis(default)
                }
            }
        };
        let nameservers = sockets(check, &path("nameservers"), &r.nameservers);
        if nameservers.is_empty() {
            check.err(&path("nameservers"), "at least one name server is required");
        }
        let attempt_timeout = dur(check, "attempt_timeout", &r.attempt_timeout, 700);
        let mut enums = Vec::new();
        for (i, e) in r.enums.iter().enumerate() {
            let base = [k("resolver"), k("enum"), Step::Index(i)];
            let ns = sockets(
                check,
                &[&base[..], &[k("nameservers")]].concat(),
                &e.nameservers,
            );
            let timeout = match e.timeout.as_deref().map(super::parse_duration) {
                None => attempt_timeout,
                Some(Ok(d)) if d.is_zero() => {
                    check.err(
                        &[&base[..], &[k("timeout")]].concat(),
                        "must be more than zero",
                    );
                    attempt_timeout
                }
                Some(Ok(d)) => d,
                Some(Err(msg)) => {
                    check.err(&[&base[..], &[k("timeout")]].concat(), msg);
                    attempt_timeout
                }
            };
            let suffix = e.suffix.trim_end_matches('.').to_ascii_lowercase();
            if !valid_domain(&suffix) {
                check.err(
                    &[&base[..], &[k("suffix")]].concat(),
                    format!("{:?} is not a domain", e.suffix),
                );
            }
            enums.push(EnumSuffix {
                suffix,
                nameservers: if ns.is_empty() {
                    nameservers.clone()
                } else {
                    ns
                },
                timeout,
            });
        }
        let fallbacks = match &r.fallbacks {
            None => vec![Fallback::Sip, Fallback::Xmpp],
            Some(list) => list
                .iter()
                .enumerate()
                .filter_map(|(i, f)| match f.as_str() {
                    "sip" => Some(Fallback::Sip),
                    "xmpp" => Some(Fallback::Xmpp),
                    other => {
                        check.err(
                            &[k("resolver"), k("fallbacks"), Step::Index(i)],
                            format!("{other:?}: expected \"sip\" or \"xmpp\""),
                        );
                        None
                    }
                })
                .collect(),
        };
        let last_resort = r.last_resort.as_deref().map(|d| d.to_ascii_lowercase());
        if let Some(d) = &last_resort
            && !peers.iter().any(|p| &p.domain == d)
        {
            check.err(
                &path("last_resort"),
                format!("no [[peer]] with domain {d:?}"),
            );
        }
        let originator_check = match r.originator_check.as_deref() {
            None | Some("enforce") => OriginatorCheck::Enforce,
            Some("log") => OriginatorCheck::Log,
            Some("off") => OriginatorCheck::Off,
            Some(other) => {
                check.err(
                    &path("originator_check"),
                    format!("{other:?}: expected \"enforce\", \"log\" or \"off\""),
                );
                OriginatorCheck::Enforce
            }
        };
        let negative_min_ttl = dur(check, "negative_min_ttl", &r.negative_min_ttl, 5_000);
        let negative_max_ttl = dur(check, "negative_max_ttl", &r.negative_max_ttl, 300_000);
        if negative_min_ttl > negative_max_ttl {
            check.err(
                &path("negative_max_ttl"),
                format!(
                    "{negative_max_ttl:?} is below negative_min_ttl ({negative_min_ttl:?}; default 5s)"
                ),
            );
        }
        ResolverSpec {
            timeout: dur(check, "timeout", &r.timeout, 1500),
            attempt_timeout,
            srv_label: r
                .srv_label
                .clone()
                .unwrap_or_else(|| "_imps-server._tcp".into()),
            fallbacks,
            last_resort,
            negative_min_ttl,
            negative_max_ttl,
            hold_down: dur(check, "hold_down", &r.hold_down, 10_000),
            stale_max: dur(check, "stale_max", &r.stale_max, 3_600_000),
            originator_check,
            cache_entries: r.cache_entries.unwrap_or(100_000),
            enums,
            nameservers,
        }
    });

    let cluster = cluster(check, raw.cluster);
    if !cluster.siblings.is_empty() && listen.admin.is_none() {
        check.err(
            &[k("cluster"), k("siblings")],
            "replicas hand answers to each other on the admin listener: set [listen] admin",
        );
    }

    Some(Config {
        path: PathBuf::new(),
        operator: Operator {
            public_domain,
            core_domains,
            core_hosts,
            extra_namespaces: g.extra_namespaces,
            hmac_key_file: g
                .hmac_key_file
                .as_deref()
                .map(|p| Config::resolve_path(base, p)),
        },
        plan,
        directory,
        peers,
        routes,
        listen,
        tls,
        core,
        timeouts,
        limits,
        policy,
        resolver,
        cluster,
    })
}

/// The trailing number of this machine's host name (`ssp-gateway-2` → 2), as StatefulSet pods
/// are named.
fn replica_from_hostname() -> Option<i64> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())?;
    let host = host.trim();
    let digits = host.len() - host.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    host[host.len() - digits..].parse().ok()
}

fn cluster(check: &mut Check<'_>, raw: RawCluster) -> Cluster {
    let path = |key: &str| [k("cluster"), k(key)];
    let index = match raw.replica {
        None => 0,
        Some(RawReplica::Index(i)) => i,
        Some(RawReplica::Word(w)) if w == "from-hostname" => match replica_from_hostname() {
            Some(i) => i,
            None => {
                check.err(
                    &path("replica"),
                    "\"from-hostname\": the host name does not end in a number",
                );
                0
            }
        },
        Some(RawReplica::Word(w)) => {
            check.err(
                &path("replica"),
                format!("{w:?}: expected a number or \"from-hostname\""),
            );
            0
        }
    };
    let replica = match u8::try_from(index) {
        Ok(r) => r,
        Err(_) => {
            check.err(&path("replica"), format!("{index} is not in 0..=255"));
            0
        }
    };
    let mut siblings = Vec::new();
    for (j, u) in raw.siblings.iter().enumerate() {
        match u.parse::<http::Uri>() {
            // Admin listeners are plain HTTP on the management network; the endpoint path is
            // fixed, so a URL names only the listener.
            Ok(uri)
                if uri.scheme_str() == Some("http")
                    && uri.host().is_some()
                    && matches!(uri.path(), "" | "/") =>
            {
                siblings.push(uri)
            }
            _ => check.err(
                &[k("cluster"), k("siblings"), Step::Index(j)],
                format!("{u:?} is not http://HOST:PORT/ (a replica's admin listener)"),
            ),
        }
    }
    if !raw.siblings.is_empty() && usize::from(replica) >= raw.siblings.len() {
        check.err(
            &path("replica"),
            format!(
                "replica {replica} has no entry in siblings (it lists {})",
                raw.siblings.len()
            ),
        );
    }
    if raw.siblings.len() > 256 {
        check.err(&path("siblings"), "at most 256 replicas");
    }
    Cluster { replica, siblings }
}

fn response_mode(check: &mut Check<'_>, path: &[Step], v: Option<&str>) -> ResponseMode {
    match v {
        None | Some("async") => ResponseMode::Async,
        Some("sync") => ResponseMode::Sync,
        Some(other) => {
            check.err(path, format!("{other:?}: expected \"async\" or \"sync\""));
            ResponseMode::Async
        }
    }
}
