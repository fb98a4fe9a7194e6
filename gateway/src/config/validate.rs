//! From the raw file to the [`Config`] the gateway runs on: one function per section, each
//! checking its values, resolving paths against the file's folder, and reporting every
//! problem with its key path (the caller turns paths into lines).

use std::path::Path;
use std::time::Duration;

use super::locate::Step;
use super::raw::*;
use super::schema::*;
use super::{Check, at, domain, k, parse_duration, valid_domain};
use crate::ssp::ids::{E164, NumberPlan, WvId};
use crate::ssp::message::ACCEPTED_NAMESPACES;
use crate::ssp::primitives::GROUP_PRIMITIVES;
use crate::ssp::xml;

fn digits(check: &mut Check<'_>, path: &[Step], s: &str, what: &str) -> String {
    let d = s.trim_start_matches('+');
    if d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit()) {
        check.err(path, format!("{what} {s:?} must be digits"));
    }
    d.to_owned()
}

/// One of a fixed set of words (the first is the default when the key is absent).
fn choice<T: Copy>(
    check: &mut Check<'_>,
    path: &[Step],
    v: Option<&str>,
    words: &[(&str, T)],
) -> T {
    let default = words[0].1;
    let Some(v) = v else { return default };
    if let Some((_, t)) = words.iter().find(|(w, _)| *w == v) {
        return *t;
    }
    let expected: Vec<String> = words.iter().map(|(w, _)| format!("{w:?}")).collect();
    check.err(path, format!("{v:?}: expected {}", expected.join(" or ")));
    default
}

fn paths(base: &Path, list: &[String]) -> Vec<std::path::PathBuf> {
    list.iter().map(|p| Config::resolve_path(base, p)).collect()
}

fn pins(check: &mut Check<'_>, path: &[Step], list: &[String]) -> Vec<String> {
    for (j, pin) in list.iter().enumerate() {
        if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
            check.err(
                &at(path, &[Step::Index(j)]),
                "a pin is the SHA-256 of the certificate DER as 64 hex digits",
            );
        }
    }
    list.iter().map(|p| p.to_ascii_lowercase()).collect()
}

fn http_url(check: &mut Check<'_>, path: &[Step], u: &str) {
    match u.parse::<http::Uri>() {
        Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {}
        _ => check.err(path, format!("{u:?} is not an http:// or https:// URL")),
    }
}

const ID_STYLES: &[(&str, IdStyle)] = &[
    ("msisdn", IdStyle::Msisdn),
    ("msisdn@domain", IdStyle::MsisdnAtDomain),
];
const MODES: &[(&str, ResponseMode)] =
    &[("async", ResponseMode::Async), ("sync", ResponseMode::Sync)];
const QUEUES: &[(&str, Queue)] = &[
    ("accept", Queue::Accept),
    ("hold", Queue::Hold),
    ("off", Queue::Off),
];

/// A link's `queue`, the store's default when absent.
fn queue(check: &mut Check<'_>, path: &[Step], v: Option<&str>, default: Queue) -> Queue {
    match v {
        None => default,
        v => choice(check, path, v, QUEUES),
    }
}

/// The whole file.
pub(super) fn validate(raw: RawConfig, base: &Path, check: &mut Check<'_>) -> Config {
    let (operator, plan) = operator(check, base, raw.gateway);
    let store = store(check, base, &operator, raw.store);
    let identity = raw.tls.cert.is_some() && raw.tls.key.is_some();
    let sip = raw
        .sip
        .map(|r| super::sip::validate(check, base, r, identity));
    let xmpp = raw
        .xmpp
        .map(|r| super::xmpp::validate(check, base, r, identity, !raw.tls.trust.is_empty()));
    let directory = directory(check, base, raw.directory);
    let peers = peers(check, base, &operator, store.queue, raw.peers);
    core_names_clear_of_markup(check, &operator, &peers);
    let routes = routes(check, &peers, raw.routes);
    let listen = listen(check, base, &raw.listen);
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
        trust: paths(base, &raw.tls.trust),
    };
    if listen.peer.is_some() && (tls.cert.is_none() || tls.key.is_none()) {
        check.err(&[k("tls")], "the peer listener needs [tls] cert and key");
    }
    let core = raw.core.map(|c| core(check, base, store.queue, c));
    let timeouts = timeouts(check, &raw.timeouts);
    let limits = limits(check, &raw.limits);
    let policy = policy(check, &raw.policy);
    let resolver = raw.resolver.map(|r| resolver(check, &peers, r));
    let cluster = cluster(check, raw.cluster);
    if !cluster.siblings.is_empty() && listen.admin.is_none() {
        check.err(
            &[k("cluster"), k("siblings")],
            "replicas hand answers to each other on the admin listener: set [listen] admin",
        );
    }
    let mut warnings = Vec::new();
    if policy.originator_check == OriginatorCheck::Enforce
        && resolver.is_none()
        && routes.is_empty()
        && !peers.is_empty()
    {
        warnings.push(
            "[policy] originator_check = \"enforce\" has neither [[route]] entries nor a \
             [resolver] to place numbers with: every wv:+MSISDN originator from a peer will be \
             refused (901)"
                .to_owned(),
        );
    }
    if cluster.siblings.len() > 1 && matches!(store.location, crate::store::Location::Sqlite(..)) {
        warnings.push(
            "[cluster] siblings with a SQLite [store]: replicas do not share kept work, so a \
             dead replica's messages wait for it to come back; set [store] url to a shared \
             postgres:// database"
                .to_owned(),
        );
    }
    Config {
        warnings,
        path: std::path::PathBuf::new(),
        operator,
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
        store,
        sip,
        xmpp,
    }
}

/// `[gateway]`: who we are, and the numbering plan.
fn operator(check: &mut Check<'_>, base: &Path, g: RawGateway) -> (Operator, NumberPlan) {
    let key = |name: &str| [k("gateway"), k(name)];
    let public_domain = domain(check, &key("public_domain"), &g.public_domain);
    if g.core_domains.is_empty() {
        check.err(&key("core_domains"), "at least one core domain is required");
    }
    let list = |check: &mut Check<'_>, name: &str, v: &[String]| -> Vec<String> {
        v.iter()
            .enumerate()
            .map(|(i, d)| domain(check, &at(&key(name), &[Step::Index(i)]), d))
            .collect()
    };
    let core_domains = list(check, "core_domains", &g.core_domains);
    if core_domains.contains(&public_domain) {
        check.err(
            &key("core_domains"),
            "the public domain cannot also be a core domain (it would never be hidden)",
        );
    }
    let cc = digits(check, &key("country_code"), &g.country_code, "country code");
    if cc.len() > 3 || cc.starts_with('0') {
        check.err(
            &key("country_code"),
            format!(
                "country code {:?} must be 1-3 digits not starting with 0",
                g.country_code
            ),
        );
    }
    let mut plan = NumberPlan::new(&cc);
    if let Some(t) = &g.trunk_prefix {
        plan.trunk_prefix = digits(check, &key("trunk_prefix"), t, "trunk prefix");
    }
    if let Some(t) = &g.international_prefix {
        plan.international_prefix = digits(
            check,
            &key("international_prefix"),
            t,
            "international prefix",
        );
    }
    let core_hosts = list(check, "core_hosts", &g.core_hosts);
    let operator = Operator {
        core_hosts,
        public_domain,
        core_domains,
        extra_namespaces: g.extra_namespaces,
        hmac_key_file: g
            .hmac_key_file
            .as_deref()
            .map(|p| Config::resolve_path(base, p)),
    };
    (operator, plan)
}

/// The rewriter hides every core domain and host wherever it occurs in a message bound for
/// a peer, names and values alike: one that the gateway's own markup holds (the profile's
/// names, the group primitives' among them, its model values, and every namespace it
/// accepts or writes: the built-in ones, `extra_namespaces`, each peer's) would be
/// "hidden" there too, and the message broken.
fn core_names_clear_of_markup(check: &mut Check<'_>, operator: &Operator, peers: &[PeerSpec]) {
    let more: Vec<&str> = ACCEPTED_NAMESPACES
        .iter()
        .chain(GROUP_PRIMITIVES)
        .copied()
        .chain(operator.extra_namespaces.iter().map(String::as_str))
        .chain(peers.iter().map(|p| p.namespace.as_str()))
        .collect();
    for (name, list) in [
        ("core_domains", &operator.core_domains),
        ("core_hosts", &operator.core_hosts),
    ] {
        for (i, d) in list.iter().enumerate() {
            if let Some(word) = xml::markup_holding(d, &more) {
                check.err(
                    &[k("gateway"), k(name), Step::Index(i)],
                    format!(
                        "{d:?} occurs in SSP's own markup ({word}): core names are hidden \
                         wherever they occur in a message bound for a peer, so the gateway's \
                         markup would be rewritten too; use a longer, fully qualified name"
                    ),
                );
            }
        }
    }
}

/// `[directory]`: the file and the templates.
fn directory(check: &mut Check<'_>, base: &Path, d: RawDirectory) -> DirectorySpec {
    let mut directory = DirectorySpec {
        file: d.file.as_deref().map(|f| Config::resolve_path(base, f)),
        templates: Vec::new(),
    };
    for (i, t) in d.templates.into_iter().enumerate() {
        let path = [k("directory"), k("template"), Step::Index(i)];
        if t.core.matches("{national}").count() != 1 {
            check.err(
                &at(&path, &[k("core")]),
                "must contain {national} exactly once",
            );
        } else if WvId::parse(&t.core.replace("{national}", "1")).is_err() {
            check.err(
                &at(&path, &[k("core")]),
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
                &at(&path, &[k("public")]),
                format!("{:?} must look like wv:+<digits>{{national}}", t.public),
            ),
        }
        for (j, r) in t.ranges.iter().enumerate() {
            if E164::parse(r).is_err() {
                check.err(
                    &at(&path, &[k("ranges"), Step::Index(j)]),
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
    directory
}

/// `[[peer]]`: the peering table.
fn peers(
    check: &mut Check<'_>,
    base: &Path,
    operator: &Operator,
    default_queue: Queue,
    raw: Vec<RawPeer>,
) -> Vec<PeerSpec> {
    let mut peers: Vec<PeerSpec> = Vec::new();
    for (i, p) in raw.into_iter().enumerate() {
        let path = |key: &str| [k("peer"), Step::Index(i), k(key)];
        let d = domain(check, &path("domain"), &p.domain);
        if peers.iter().any(|q| q.domain == d) {
            check.err(&path("domain"), format!("peer {d} is defined twice"));
        }
        if d == operator.public_domain || operator.core_domains.contains(&d) {
            check.err(
                &path("domain"),
                format!("peer {d} is one of our own domains"),
            );
        }
        for (j, u) in p.urls.iter().enumerate() {
            http_url(check, &at(&path("urls"), &[Step::Index(j)]), u);
        }
        let auth = choice(
            check,
            &path("auth"),
            p.auth.as_deref(),
            &[
                ("mtls", PeerAuth::Mtls),
                ("association", PeerAuth::Association),
                ("any", PeerAuth::Any),
            ],
        );
        // Peers that associate are Baraza-like: they acknowledge notifications and never
        // answer them.
        let notifications = match p.notifications.as_deref() {
            None if auth == PeerAuth::Association => Notifications::Acknowledged,
            v => choice(
                check,
                &path("notifications"),
                v,
                &[
                    ("answered", Notifications::Answered),
                    ("acknowledged", Notifications::Acknowledged),
                ],
            ),
        };
        peers.push(PeerSpec {
            queue: queue(check, &path("queue"), p.queue.as_deref(), default_queue),
            notifications,
            address_by: choice(
                check,
                &path("address_by"),
                p.address_by.as_deref(),
                &[
                    ("number", AddressBy::Number),
                    ("enum-uri", AddressBy::EnumUri),
                ],
            ),
            id_style: choice(check, &path("id_style"), p.id_style.as_deref(), ID_STYLES),
            mode: choice(check, &path("mode"), p.mode.as_deref(), MODES),
            auth,
            pins: pins(check, &path("pins"), &p.pins),
            tls_name: p.tls_name.clone().unwrap_or_else(|| d.clone()),
            domain: d,
            urls: p.urls,
            namespace: p
                .namespace
                .unwrap_or_else(|| crate::ssp::NS_WV_SSP_13.to_owned()),
            trust: paths(base, &p.trust),
            client_cert: p.client_cert.unwrap_or(true),
            rate: p.rate.unwrap_or(500),
            burst: p.burst.unwrap_or(1000),
        });
    }
    peers
}

/// `[[route]]`: static number-prefix routes, each to a listed peer.
fn routes(check: &mut Check<'_>, peers: &[PeerSpec], raw: Vec<RawRoute>) -> Vec<Route> {
    let mut routes = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
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
    routes
}

/// `[listen]`: the listeners' addresses.
fn listen(check: &mut Check<'_>, base: &Path, l: &RawListen) -> Listen {
    let mut addr = |key: &str, v: &Option<String>| {
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
    Listen {
        peer: addr("peer", &l.peer),
        core: addr("core", &l.core),
        admin: addr("admin", &l.admin),
        admin_token_file: l
            .admin_token_file
            .as_deref()
            .map(|p| Config::resolve_path(base, p)),
    }
}

/// `[core]`: the link to our IMPS server and how it authenticates.
fn core(check: &mut Check<'_>, base: &Path, default_queue: Queue, c: RawCore) -> CoreSpec {
    let path = |key: &str| [k("core"), k(key)];
    http_url(check, &path("url"), &c.url);
    let auth = choice(
        check,
        &path("auth"),
        c.auth.as_deref(),
        &[
            ("allowlist", CoreAuth::Allowlist),
            ("mtls", CoreAuth::Mtls),
            ("association", CoreAuth::Association),
        ],
    );
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
                &at(&path("allow"), &[Step::Index(j)]),
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
    CoreSpec {
        queue: queue(check, &path("queue"), c.queue.as_deref(), default_queue),
        id_style: choice(check, &path("id_style"), c.id_style.as_deref(), ID_STYLES),
        mode: choice(check, &path("mode"), c.mode.as_deref(), MODES),
        url: c.url,
        auth,
        allow,
        tls: c.tls,
        trust: paths(base, &c.trust),
        pins: pins(check, &path("pins"), &c.pins),
    }
}

/// `[store]`: the database (SQLite next to the config file unless a URL says otherwise) and
/// how long work is held, kept and retried.
fn store(check: &mut Check<'_>, base: &Path, operator: &Operator, s: RawStore) -> StoreSpec {
    use crate::store::{Durability, Location};
    let path = |key: &str| [k("store"), k(key)];
    let durability = choice(
        check,
        &path("sync"),
        s.sync.as_deref(),
        &[("disk", Durability::Disk), ("os", Durability::Os)],
    );
    let default_file =
        || Config::resolve_path(base, &format!("state/{}.sqlite", operator.public_domain));
    let location = match s.url.as_deref() {
        None => Location::Sqlite(default_file(), durability),
        Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
            if u.parse::<tokio_postgres::Config>().is_err() {
                check.err(
                    &path("url"),
                    format!("{u:?} is not a PostgreSQL connection URL"),
                );
            }
            if s.sync.is_some() {
                check.err(
                    &path("sync"),
                    "applies to SQLite only (PostgreSQL commits as its server is configured)",
                );
            }
            Location::Postgres(u.to_owned())
        }
        Some(u) => match u.strip_prefix("sqlite:") {
            Some(file) if !file.is_empty() => {
                let file = file.strip_prefix("//").unwrap_or(file);
                Location::Sqlite(Config::resolve_path(base, file), durability)
            }
            _ => {
                check.err(
                    &path("url"),
                    format!("{u:?}: expected sqlite:FILE or postgres://USER@HOST:PORT/DB"),
                );
                Location::Sqlite(default_file(), durability)
            }
        },
    };
    let d = |check: &mut Check<'_>, key: &str, v: &Option<String>, default: u64| {
        let got = duration(
            check,
            &path(key),
            v.as_deref(),
            Duration::from_secs(default),
        );
        if got.is_zero() {
            check.err(&path(key), "must be more than zero");
        }
        got
    };
    let spec = StoreSpec {
        location,
        lease: d(check, "lease", &s.lease, 15),
        keep: d(check, "keep", &s.keep, 600),
        max_validity: d(check, "max_validity", &s.max_validity, 86_400),
        retry_min: d(check, "retry_min", &s.retry_min, 2),
        retry_max: d(check, "retry_max", &s.retry_max, 60),
        queue: choice(check, &path("queue"), s.queue.as_deref(), QUEUES),
    };
    if spec.retry_max < spec.retry_min {
        check.err(&path("retry_max"), "must be at least retry_min");
    }
    if spec.lease < Duration::from_secs(3) {
        // Renewed every third of it; shorter leases would be lost to a busy database.
        check.err(&path("lease"), "must be at least 3s");
    }
    spec
}

/// `[timeouts]`: each more than zero.
fn timeouts(check: &mut Check<'_>, t: &RawTimeouts) -> Timeouts {
    let mut timeouts = Timeouts::default();
    for (key, v, slot) in [
        ("connect", &t.connect, &mut timeouts.connect),
        ("handshake", &t.handshake, &mut timeouts.handshake),
        ("request", &t.request, &mut timeouts.request),
        ("idle", &t.idle, &mut timeouts.idle),
        ("association", &t.association, &mut timeouts.association),
        ("drain", &t.drain, &mut timeouts.drain),
        ("header", &t.header, &mut timeouts.header),
        ("body", &t.body, &mut timeouts.body),
    ] {
        if let Some(v) = v {
            match parse_duration(v) {
                Ok(d) if !d.is_zero() => *slot = d,
                Ok(_) => check.err(&[k("timeouts"), k(key)], "must be more than zero"),
                Err(e) => check.err(&[k("timeouts"), k(key)], e),
            }
        }
    }
    timeouts
}

/// `[limits]`: each more than zero.
fn limits(check: &mut Check<'_>, l: &RawLimits) -> LimitsSpec {
    let mut xml = crate::ssp::xml::Limits::default();
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
    let mut positive = |key: &str, v: Option<usize>, default: usize| match v {
        Some(0) => {
            check.err(&[k("limits"), k(key)], "must be more than zero");
            default
        }
        Some(v) => v,
        None => default,
    };
    LimitsSpec {
        xml,
        max_in_flight: positive("max_in_flight", l.max_in_flight, 10_000),
        max_connections: positive("max_connections", l.max_connections, 20_000),
        max_connections_per_source: positive(
            "max_connections_per_source",
            l.max_connections_per_source,
            256,
        ),
        max_unauthenticated: positive("max_unauthenticated", l.max_unauthenticated, 1024),
        max_unauthenticated_per_source: positive(
            "max_unauthenticated_per_source",
            l.max_unauthenticated_per_source,
            16,
        ),
        min_body_rate: positive("min_body_rate", l.min_body_rate, 1024),
    }
}

/// `[policy]`.
fn policy(check: &mut Check<'_>, p: &RawPolicy) -> Policy {
    let path = |key: &str| [k("policy"), k(key)];
    Policy {
        originator_rate: p.originator_rate.unwrap_or(20),
        originator_burst: p.originator_burst.unwrap_or(50),
        accept_unlisted_peers: p.accept_unlisted_peers,
        search_wildcards_allowed: choice(
            check,
            &path("search_wildcards"),
            p.search_wildcards.as_deref(),
            &[("refuse", false), ("allow", true)],
        ),
        search_min_digits: p.search_min_digits.unwrap_or(8),
        search_unregistered_answer: choice(
            check,
            &path("search_unregistered"),
            p.search_unregistered.as_deref(),
            &[("answer", true), ("error", false)],
        ),
        originator_check: choice(
            check,
            &path("originator_check"),
            p.originator_check.as_deref(),
            &[
                ("enforce", OriginatorCheck::Enforce),
                ("log", OriginatorCheck::Log),
                ("off", OriginatorCheck::Off),
            ],
        ),
        accept_local_names: p.accept_local_names,
        association_rate: p.association_rate.unwrap_or(5).max(1),
        association_burst: p.association_burst.unwrap_or(20).max(1),
        failure_rate: p.failure_rate.unwrap_or(10).max(1),
        failure_burst: p.failure_burst.unwrap_or(50).max(1),
    }
}

/// Name servers: `IP` (port 53) or `IP:port`.
fn sockets(check: &mut Check<'_>, base: &[Step], list: &[String]) -> Vec<std::net::SocketAddr> {
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
                        &at(base, &[Step::Index(i)]),
                        format!("{s:?} is not an IP address or address:port"),
                    );
                    None
                }
            }
        })
        .collect()
}

/// A duration, `default` when absent; a timeout must be more than zero (a lookup given no
/// time at all always fails).
fn duration(check: &mut Check<'_>, path: &[Step], v: Option<&str>, default: Duration) -> Duration {
    let timeout = matches!(path.last(), Some(Step::Key(key)) if key.ends_with("timeout"));
    match v.map(parse_duration) {
        None => default,
        Some(Ok(d)) if d.is_zero() && timeout => {
            check.err(path, "must be more than zero");
            default
        }
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            check.err(path, e);
            default
        }
    }
}

/// `[resolver]` and its `[[resolver.enum]]` trees.
fn resolver(check: &mut Check<'_>, peers: &[PeerSpec], r: RawResolver) -> ResolverSpec {
    let path = |key: &str| [k("resolver"), k(key)];
    let ms = Duration::from_millis;
    let nameservers = sockets(check, &path("nameservers"), &r.nameservers);
    if nameservers.is_empty() {
        check.err(&path("nameservers"), "at least one name server is required");
    }
    let attempt_timeout = duration(
        check,
        &path("attempt_timeout"),
        r.attempt_timeout.as_deref(),
        ms(700),
    );
    let mut enums = Vec::new();
    for (i, e) in r.enums.iter().enumerate() {
        let base = [k("resolver"), k("enum"), Step::Index(i)];
        let ns = sockets(check, &at(&base, &[k("nameservers")]), &e.nameservers);
        let timeout = duration(
            check,
            &at(&base, &[k("timeout")]),
            e.timeout.as_deref(),
            attempt_timeout,
        );
        let suffix = e.suffix.trim_end_matches('.').to_ascii_lowercase();
        if !valid_domain(&suffix) {
            check.err(
                &at(&base, &[k("suffix")]),
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
            .map(|(i, f)| {
                choice(
                    check,
                    &at(&path("fallbacks"), &[Step::Index(i)]),
                    Some(f),
                    &[("sip", Fallback::Sip), ("xmpp", Fallback::Xmpp)],
                )
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
    let negative_min_ttl = duration(
        check,
        &path("negative_min_ttl"),
        r.negative_min_ttl.as_deref(),
        ms(5_000),
    );
    let negative_max_ttl = duration(
        check,
        &path("negative_max_ttl"),
        r.negative_max_ttl.as_deref(),
        ms(300_000),
    );
    if negative_min_ttl > negative_max_ttl {
        check.err(
            &path("negative_max_ttl"),
            format!(
                "{negative_max_ttl:?} is below negative_min_ttl ({negative_min_ttl:?}; default 5s)"
            ),
        );
    }
    ResolverSpec {
        timeout: duration(check, &path("timeout"), r.timeout.as_deref(), ms(1500)),
        attempt_timeout,
        srv_label: r
            .srv_label
            .clone()
            .unwrap_or_else(|| "_imps-server._tcp".into()),
        fallbacks,
        last_resort,
        negative_min_ttl,
        negative_max_ttl,
        hold_down: duration(
            check,
            &path("hold_down"),
            r.hold_down.as_deref(),
            ms(10_000),
        ),
        stale_max: duration(
            check,
            &path("stale_max"),
            r.stale_max.as_deref(),
            ms(3_600_000),
        ),
        cache_entries: r.cache_entries.unwrap_or(100_000),
        enums,
        nameservers,
    }
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
