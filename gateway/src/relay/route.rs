//! Route decisions: where a route-by ID goes (profile section 8, design "The two directions").
//!
//! Order: our own subscribers go back to the core (on-net, no DNS); then static number-prefix
//! routes; then the destination's domain in the peering table; then DNS (ENUM and SRV, in
//! `crate::resolve`); else SSP 516.

use std::sync::Arc;

use crate::config::Config;
use crate::directory::Directory;
use crate::relay::merge::status;
use crate::rewrite::Rewriter;
use crate::ssp::ids::{E164, NumberError, WvId};
use crate::ssp::walk::RouteBy;
use crate::ssp::{Status, status as code};

/// How a destination was found (for logs, traces and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `[[route]]` number prefix.
    Prefix,
    /// `[[peer]]` domain.
    Peering,
    /// ENUM NAPTR, then the peering table or SRV.
    Enum,
    /// SRV `_imps-server._tcp`.
    Srv,
    /// The configured gateway of last resort.
    LastResort,
}

/// A remote destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// The destination operator's domain (its identity).
    pub domain: String,
    /// SSP URLs in failover order (empty: use the peer table's).
    pub urls: Vec<String>,
    /// How it was found.
    pub source: Source,
}

/// Where one route-by ID goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// One of our subscribers or our own domain: back to the core.
    Core,
    /// Another operator.
    Remote(Remote),
    /// Nowhere: answer with this status.
    Fail(Status),
}

/// The number a route-by value names, normalised; errors map to SSP statuses.
pub fn route_number(cfg: &Config, rb: &RouteBy) -> Result<Option<E164>, Status> {
    match rb {
        RouteBy::SearchNumber(s) => match cfg.plan.normalise(s) {
            // The seed: "The Service Provider is able to refuse ... partial" number searches.
            Ok(n) if n.digits().len() < cfg.policy.search_min_digits => Err(status(
                code::SEARCH_TOO_BROAD,
                format!(
                    "partial number {s:?}: at least {} digits are required",
                    cfg.policy.search_min_digits
                ),
            )),
            Ok(n) => Ok(Some(n)),
            Err(NumberError::Wildcard(_)) => Err(status(
                code::SEARCH_TOO_BROAD,
                format!("wildcards are not accepted in a number search: {s:?}"),
            )),
            Err(e) => Err(status(code::SEARCH_TOO_BROAD, e.to_string())),
        },
        RouteBy::Id(s) => match WvId::parse(s) {
            Ok(id) => Ok(id.e164()),
            Err(e) => Err(status(code::INVALID_USER_ID, e.to_string())),
        },
    }
}

/// Static part of routing: everything that needs no DNS.
pub fn route_static(cfg: &Config, dir: &Directory, rw: &Rewriter, rb: &RouteBy) -> Option<Dest> {
    let number = match route_number(cfg, rb) {
        Ok(n) => n,
        // Wildcard searches cannot be routed by number; where allowed, our core answers them.
        Err(_) if cfg.policy.search_wildcards_allowed && is_wildcard_search(rb) => {
            return Some(Dest::Core);
        }
        Err(st) => return Some(Dest::Fail(st)),
    };
    if let Some(n) = number {
        if dir.is_subscriber(n) {
            return Some(Dest::Core);
        }
        let digits = n.digits();
        // Longest matching prefix wins.
        let best = cfg
            .routes
            .iter()
            .filter(|r| digits.starts_with(r.prefix.as_str()))
            .max_by_key(|r| r.prefix.len());
        if let Some(r) = best {
            return Some(Dest::Remote(Remote {
                domain: r.peer.clone(),
                urls: Vec::new(),
                source: Source::Prefix,
            }));
        }
        return None;
    }
    let RouteBy::Id(s) = rb else { return None };
    let id = WvId::parse(s).ok()?;
    let domain = id.domain.as_deref();
    if rw.is_own_domain(domain) {
        return Some(Dest::Core);
    }
    let domain = domain?;
    if cfg.peer(domain).is_some() {
        return Some(Dest::Remote(Remote {
            domain: domain.to_owned(),
            urls: Vec::new(),
            source: Source::Peering,
        }));
    }
    None
}

fn is_wildcard_search(rb: &RouteBy) -> bool {
    matches!(rb, RouteBy::SearchNumber(s) if s.contains(['*', '%', '?', '_']))
}

/// What to answer when nothing routes.
pub fn no_route(rb: &RouteBy) -> Dest {
    Dest::Fail(status(
        code::DOMAIN_NOT_SUPPORTED,
        format!("no route to the network of {}", rb.as_str()),
    ))
}

/// Shared handle used by the relay.
pub type SharedConfig = Arc<Config>;
