//! The validated configuration the gateway runs on: one type per section of the file.

use std::path::PathBuf;

use crate::ssp::ids::NumberPlan;

/// How IDs are written towards a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdStyle {
    /// `wv:+MSISDN` (the canonical form, `PROTOCOL.md` §6).
    #[default]
    Msisdn,
    /// `wv:+MSISDN@domain` (Baraza splits every ID at `@` and needs a host part).
    MsisdnAtDomain,
}

/// How the far side of a link answers requests (`PROTOCOL.md` §1).
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
    /// A file holding the bearer token the admin listener's mutating endpoints (`POST
    /// /reload`) ask for (none: they are open to whoever reaches the listener).
    pub admin_token_file: Option<PathBuf>,
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
    /// Store-and-forward towards the core (`[store] queue` unless set).
    pub queue: Queue,
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
    /// From a connection's start (TLS done) to its first complete request head, and for each
    /// later request head once its first byte arrived.
    pub header: std::time::Duration,
    /// A whole request body.
    pub body: std::time::Duration,
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
            header: Duration::from_secs(10),
            body: Duration::from_secs(10),
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
    /// Open connections per source address and listener (beyond: closed at once).
    pub max_connections_per_source: usize,
    /// Connections per listener that have not yet proven who they are (no request from an
    /// identified sender yet; beyond: closed at once).
    pub max_unauthenticated: usize,
    /// The same, per source address.
    pub max_unauthenticated_per_source: usize,
    /// Slowest accepted request body, bytes per second (after the first second).
    pub min_body_rate: usize,
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
    /// `wv:+MSISDN` anyway (the use case 5.20, `PROTOCOL.md`: "add regardless of whether that user is registered").
    pub search_unregistered_answer: bool,
    /// Anti-spoofing of `wv:+MSISDN` originators (static routes, then ENUM).
    pub originator_check: OriginatorCheck,
    /// Accept our users named by their core-local name on our public domain
    /// (`wv:alice@opx.example`) from peers; by default only `wv:+MSISDN` names them.
    pub accept_local_names: bool,
    /// Association steps per second per source address and per claimed domain.
    pub association_rate: u32,
    /// Burst for the same.
    pub association_burst: u32,
    /// Failures per second per source address (forged answers, failed TLS handshakes)
    /// before that source is refused for a while.
    pub failure_rate: u32,
    /// Burst for the same.
    pub failure_burst: u32,
}

/// What the anti-spoofing check does with `wv:+MSISDN` originators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginatorCheck {
    /// A static route or ENUM must place the number at the sending peer, else 901.
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
    /// How our notifications (`PresenceNotification`, `DeliveryStatusReport`) to it end.
    pub notifications: Notifications,
    /// How its users are named in what we send it.
    pub address_by: AddressBy,
    /// Store-and-forward towards it (`[store] queue` unless set).
    pub queue: Queue,
}

/// What a request that may wait (a message, a delivery report) does when its destination
/// cannot be reached: store-and-forward, and when its sender hears of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// Kept and retried until its validity ends; its sender is answered at once with
    /// "accepted for delivery" (200), and hears of a final failure by a delivery report when
    /// it asked for one.
    Accept,
    /// Kept and retried until its validity ends; its sender's answer waits for the outcome
    /// (the real answer on delivery, the failure when the validity ends).
    Hold,
    /// Not kept: the sender gets the failure (503, 504) at once.
    Off,
}

/// `[sip]`: the SIP/SIMPLE translator's listener and the SIP operators it trusts.
#[derive(Debug, Clone)]
pub struct SipSpec {
    /// Where it listens, UDP and TCP on the same port.
    pub listen: std::net::SocketAddr,
    /// The address:port other SIP servers reach it at (Via, Contact), when not `listen`.
    pub advertise: Option<std::net::SocketAddr>,
    /// Where it listens for SIP over TLS (RFC 5630, RFC 5922: `[tls] cert` names our
    /// domain), if it does.
    pub tls_listen: Option<std::net::SocketAddr>,
    /// The largest SIP body taken or sent (bytes).
    pub max_body: usize,
    /// How long a presence subscription is asked for (seconds); refreshed before it ends.
    pub subscribe_expires: u32,
    /// SIP operators whose requests are taken, each by domain.
    pub peers: Vec<SipPeerSpec>,
}

/// One `[[sip.peer]]`: a SIP operator's domain and where its requests come from.
#[derive(Debug, Clone)]
pub struct SipPeerSpec {
    /// Its domain (what its users' `From` names).
    pub domain: String,
    /// The networks its servers send from (UDP and TCP carry no certificate).
    pub addresses: Vec<ipnet::IpNet>,
    /// Trusted over TLS when its certificate names its domain (RFC 5922).
    pub tls: bool,
    /// The anchors its certificates chain to (else `[tls] trust`); also what its servers'
    /// certificates are checked against when the gateway connects to them.
    pub trust: Vec<std::path::PathBuf>,
    /// Its users' agents answer IMDN (RFC 5438) delivery notifications: a report asked for
    /// is taken from one.
    pub imdn: bool,
    /// Requests per second taken from it (MESSAGE and new SUBSCRIBEs), and the burst.
    pub rate: u32,
    /// The burst above `rate`.
    pub burst: u32,
}

impl SipSpec {
    /// The `[[sip.peer]]` of `domain`.
    pub fn peer(&self, domain: &str) -> Option<&SipPeerSpec> {
        self.peers
            .iter()
            .find(|p| p.domain.eq_ignore_ascii_case(domain))
    }

    /// The trusted SIP operator whose domain is `domain`, if `ip` is one of its addresses.
    pub fn peer_at(&self, domain: &str, ip: std::net::IpAddr) -> Option<&SipPeerSpec> {
        self.peers
            .iter()
            .find(|p| p.domain.eq_ignore_ascii_case(domain))
            .filter(|p| p.addresses.iter().any(|n| n.contains(&ip)))
    }
}

/// `[xmpp]`: the XMPP translator's server-to-server listener, and the policy for the XMPP
/// domains it federates with.
#[derive(Debug, Clone)]
pub struct XmppSpec {
    /// Where other XMPP servers open streams to us (the `_xmpp-server._tcp` target).
    pub listen: std::net::SocketAddr,
    /// The largest stanza taken or sent (bytes).
    pub max_stanza: usize,
    /// An outbound stream unused this long is closed.
    pub idle: std::time::Duration,
    /// How long a stream has to be opened and proved (either way).
    pub auth_timeout: std::time::Duration,
    /// How long a receipt (XEP-0184) asked for is waited for before the delivery is
    /// reported as not confirmed.
    pub receipt_wait: std::time::Duration,
    /// The Server Dialback secret (XEP-0185); `None`: a random one per process (replicas
    /// that share a domain must share the file).
    pub dialback_secret_file: Option<std::path::PathBuf>,
    /// What XMPP servers' certificates must chain to (else `[tls] trust`).
    pub trust: Vec<std::path::PathBuf>,
    /// Whether domains not listed are federated with (with the defaults below).
    pub open: bool,
    /// The policy of domains not listed.
    pub defaults: XmppPolicy,
    /// Listed domains.
    pub peers: Vec<XmppPeerSpec>,
}

/// How a domain's streams must be secured and proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XmppPolicy {
    /// Streams with it must run over TLS.
    pub require_tls: bool,
    /// It may prove its domain by Server Dialback (else only by certificate).
    pub allow_dialback: bool,
    /// Stanzas per second taken from it.
    pub rate: u32,
    /// The burst above `rate`.
    pub burst: u32,
}

/// One `[[xmpp.peer]]`.
#[derive(Debug, Clone)]
pub struct XmppPeerSpec {
    /// Its domain.
    pub domain: String,
    /// Its policy.
    pub policy: XmppPolicy,
}

impl XmppSpec {
    /// The `[[xmpp.peer]]` of `domain`.
    pub fn peer(&self, domain: &str) -> Option<&XmppPeerSpec> {
        self.peers
            .iter()
            .find(|p| p.domain.eq_ignore_ascii_case(domain))
    }

    /// The policy for `domain`: its own, the defaults when open, else `None` (not
    /// federated with).
    pub fn policy(&self, domain: &str) -> Option<XmppPolicy> {
        match self
            .peers
            .iter()
            .find(|p| p.domain.eq_ignore_ascii_case(domain))
        {
            Some(p) => Some(p.policy),
            None if self.open => Some(self.defaults),
            None => None,
        }
    }
}

/// `[store]`: where durable state lives and how long work is kept and retried.
#[derive(Debug, Clone)]
pub struct StoreSpec {
    /// The database.
    pub location: crate::store::Location,
    /// How long a replica holds work before another may take it over.
    pub lease: std::time::Duration,
    /// How long finished work is remembered, so that a resend is recognised.
    pub keep: std::time::Duration,
    /// The longest a message is kept for delivery (a message's own validity, if shorter,
    /// wins).
    pub max_validity: std::time::Duration,
    /// The first wait between delivery attempts (doubling up to `retry_max`).
    pub retry_min: std::time::Duration,
    /// The longest wait between delivery attempts.
    pub retry_max: std::time::Duration,
    /// Store-and-forward for destinations without their own `queue`.
    pub queue: Queue,
}

/// How a peer ends our notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notifications {
    /// With an SSP answer, as any request.
    Answered,
    /// Its HTTP acknowledgement is all there is: delivered then (Baraza never answers them).
    Acknowledged,
}

/// How the users of a peer are named in what we send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressBy {
    /// By number: `wv:+MSISDN` (the canonical form).
    Number,
    /// As the ENUM URI names them (`im:alice@a.test` → `wv:alice@a.test`), for servers that
    /// do not know their users by number; their IDs are mapped back to `wv:+MSISDN` for our
    /// core where the gateway learned the mapping from its own lookups.
    EnumUri,
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
    /// `[store]`.
    pub store: StoreSpec,
    /// `[sip]`: the SIP/SIMPLE translator (none: SIP-only destinations are not reached).
    pub sip: Option<SipSpec>,
    /// `[xmpp]`: the XMPP translator (none: XMPP-only destinations are not reached).
    pub xmpp: Option<XmppSpec>,
    /// Settings that load but probably do not do what was meant (`check` prints them, `run`
    /// logs them).
    pub warnings: Vec<String>,
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
    /// The static route of a number: the longest `[[route]]` prefix that covers it.
    pub fn route_for(&self, n: crate::ssp::E164) -> Option<&Route> {
        let number = n.written();
        let digits = number.digits();
        self.routes
            .iter()
            .filter(|r| digits.starts_with(r.prefix.as_str()))
            .max_by_key(|r| r.prefix.len())
    }

    /// The peer entry for a domain.
    pub fn peer(&self, domain: &str) -> Option<&PeerSpec> {
        self.peers
            .iter()
            .find(|p| p.domain.eq_ignore_ascii_case(domain))
    }
}
