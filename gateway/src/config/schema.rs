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
    #[serde(default, rename = "peer")]
    peers: Vec<RawPeer>,
    #[serde(default, rename = "route")]
    routes: Vec<RawRoute>,
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

/// `[gateway]`: identity of this operator.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// The domain peers see (`wv:@public_domain`).
    pub public_domain: String,
    /// The core's internal domains; the first is where inbound IDs are mapped to.
    pub core_domains: Vec<String>,
    /// Core host names that must never leave (topology hiding scrub).
    pub core_hosts: Vec<String>,
    /// Namespaces accepted in addition to the built-in SSP ones.
    pub extra_namespaces: Vec<String>,
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
pub struct Peer {
    /// Its domain (`wv:@domain`, certificate SAN).
    pub domain: String,
    /// SSP URLs, in failover order.
    pub urls: Vec<String>,
    /// How to write IDs towards it.
    pub id_style: IdStyle,
    /// Namespace to emit.
    pub namespace: String,
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
    pub gateway: Gateway,
    /// Numbering plan from `[gateway]`.
    pub plan: NumberPlan,
    /// `[directory]`.
    pub directory: DirectorySpec,
    /// `[[peer]]` entries.
    pub peers: Vec<Peer>,
    /// `[[route]]` entries.
    pub routes: Vec<Route>,
}

impl Config {
    /// The peer entry for a domain.
    pub fn peer(&self, domain: &str) -> Option<&Peer> {
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

    let mut peers: Vec<Peer> = Vec::new();
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
        peers.push(Peer {
            domain: d,
            urls: p.urls,
            id_style,
            namespace: p
                .namespace
                .unwrap_or_else(|| crate::ssp::NS_WV_SSP_13.to_owned()),
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

    Some(Config {
        path: PathBuf::new(),
        gateway: Gateway {
            public_domain,
            core_domains,
            core_hosts,
            extra_namespaces: g.extra_namespaces,
        },
        plan,
        directory,
        peers,
        routes,
    })
}
