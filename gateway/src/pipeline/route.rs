//! Route: where each route-by ID of a request goes. Every routing decision is made here.
//!
//! - A peer's request goes to our core, and only for our subscribers (or our own domain):
//!   anything else is 531, the gateway is no open relay.
//! - The core's request: our own subscribers go back to the core (on-net, no DNS); then the
//!   static number-prefix routes; then the destination domain in the peering table; then DNS
//!   ([`crate::resolve`] answers the DNS questions, [`destination`] turns its decision into a
//!   destination); else 516.

use super::state::Gateway;
use crate::config::Config;
use crate::directory::Directory;
use crate::error::{Failure, Kind};
use crate::links::sip::{SipServer, SipTarget};
use crate::links::{Dest, Origin, Remote, Source};
use crate::resolve::{Decision, Protocol, Svc};
use crate::rewrite::Rewriter;
use crate::ssp::Primitive;
use crate::ssp::ids::{E164, NumberError, WvId, WvIdRef};
use crate::ssp::walk::RouteBy;

/// Route-by IDs (recipients, watched users) in one request from the core: each may cost DNS
/// lookups, and the parts of a split request are numbered in a byte of the transaction ID.
const MAX_ROUTE_BY: usize = 255;

/// Where a request's route-by IDs go: destinations with their IDs, in first-seen order, and
/// the IDs that have none.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Each destination with the route-by IDs it gets (as the originator wrote them).
    pub groups: Vec<(Dest, Vec<String>)>,
    /// IDs with no destination, and why.
    pub failed: Vec<(String, Failure)>,
}

impl Plan {
    /// `id` (moved in: the route-by list is not read again) goes to `dest`.
    fn add(&mut self, dest: Dest, id: String) {
        match dest {
            Dest::Fail(f) => self.failed.push((id, f)),
            d => match self.groups.iter_mut().find(|(g, _)| *g == d) {
                Some((_, ids)) => ids.push(id),
                None => self.groups.push((d, vec![id])),
            },
        }
    }
}

/// The plan for `req` from `origin`; a request that cannot be routed at all is refused.
pub(crate) async fn plan(gw: &Gateway, origin: &Origin, req: &Primitive) -> Result<Plan, Failure> {
    plan_by(gw, origin, req.route_by(), req.name(), Svc::of(req)).await
}

/// [`plan`] for a request of primitive `name` and service `svc` routed by `route_by`.
pub(crate) async fn plan_by(
    gw: &Gateway,
    origin: &Origin,
    route_by: Vec<RouteBy>,
    name: &str,
    svc: Svc,
) -> Result<Plan, Failure> {
    let mut plan = Plan::default();
    match origin {
        // Peers, SSP or SIP, reach our core only.
        Origin::Peer(_) | Origin::Sip(_) | Origin::Xmpp(_) => {
            if route_by.is_empty() {
                // Nothing to route by (a vendor primitive): for the core to answer.
                plan.groups.push((Dest::Core, Vec::new()));
                return Ok(plan);
            }
            for rb in route_by {
                plan.add(ours(gw, &rb), rb.into_string());
            }
            if !plan.failed.is_empty() {
                gw.metrics().refused.with_label_values(&["relay"]).inc();
            }
        }
        Origin::Core => {
            if route_by.is_empty() {
                return Err(Failure::local(
                    Kind::NoRoute,
                    format!("a {name} names no destination to route by"),
                ));
            }
            if route_by.len() > MAX_ROUTE_BY {
                return Err(Failure::local(
                    Kind::Malformed,
                    format!(
                        "{} recipients in one request; at most {MAX_ROUTE_BY}",
                        route_by.len()
                    ),
                ));
            }
            for rb in route_by {
                plan.add(outward(gw, &rb, svc).await, rb.into_string());
            }
        }
    }
    Ok(plan)
}

/// A peer's route-by value: our core when it names one of our subscribers (or our domain).
fn ours(gw: &Gateway, rb: &RouteBy) -> Dest {
    let cfg = gw.cfg();
    let not_ours = || {
        Dest::Fail(Failure::local(
            Kind::UnknownUser,
            format!(
                "{} is not a subscriber of {}",
                rb.as_str(),
                cfg.operator.public_domain
            ),
        ))
    };
    match route_number(&cfg, rb) {
        Ok(Some(n)) if gw.directory().is_subscriber(n) => Dest::Core,
        Ok(Some(_)) => not_ours(),
        Ok(None) => {
            let RouteBy::Id(s) = rb else {
                return not_ours();
            };
            match WvIdRef::parse(s) {
                // Our users are named by number between operators; a core-local name on our
                // public domain only where policy accepts it (`PROTOCOL.md` §6). Groups,
                // contact lists and the service keep their names.
                Ok(id)
                    if id.domain() == Some(gw.links.live.load().rw.public_domain())
                        && (!id.is_user() || cfg.policy.accept_local_names) =>
                {
                    Dest::Core
                }
                Ok(_) => not_ours(),
                Err(e) => Dest::Fail(Failure::local(Kind::InvalidUserId, e.to_string())),
            }
        }
        Err(f) => Dest::Fail(f),
    }
}

/// The core's route-by value: static routes, then DNS.
async fn outward(gw: &Gateway, rb: &RouteBy, svc: Svc) -> Dest {
    // The configuration is read in this block: not held across the resolution (`CfgRef`).
    let as_number = {
        let cfg = gw.cfg();
        let dir = gw.directory();
        if let Some(d) = route_static(&cfg, &dir, &gw.links.live.load().rw, rb) {
            return d;
        }
        route_number(&cfg, rb)
    };
    let Some(r) = gw.resolver() else {
        return no_route(rb.as_str());
    };
    // The target as text, built on the stack for a number (the cache is looked up by it).
    let number;
    let target: std::borrow::Cow<'_, str> = match as_number {
        Ok(Some(n)) => {
            number = n.written();
            number.plus().into()
        }
        Ok(None) => match rb {
            // Only a host name goes to DNS: anything else (`wv:bob@+4470…`, stray
            // characters) has no route, and must not be taken for a number.
            RouteBy::Id(s) => match WvIdRef::parse(s)
                .ok()
                .and_then(|id| id.domain)
                .filter(|d| crate::resolve::is_host_name(d))
            {
                Some(d) => d,
                None => return no_route(rb.as_str()),
            },
            RouteBy::SearchNumber(_) => return no_route(rb.as_str()),
        },
        Err(f) => return Dest::Fail(f),
    };
    match r.decide(&target, svc).await {
        Ok(d) => {
            learn_name(gw, &d);
            if d.protocol == Protocol::Sip && gw.links.sip.get().is_some() {
                return sip_destination(&d, rb.as_str());
            }
            if d.protocol == Protocol::Xmpp && gw.links.xmpp.get().is_some() {
                return xmpp_destination(&d, rb.as_str());
            }
            destination(
                &d,
                &gw.cfg().operator.public_domain,
                r.last_resort(),
                rb.as_str(),
            )
        }
        Err(e) => Dest::Fail(Failure::local(
            Kind::Unreachable,
            format!("route to {} unknown: {e}", rb.as_str()),
        )),
    }
}

/// When ENUM names a number's user by name at an IMPS peer addressed that way (`[[peer]]
/// address_by = "enum-uri"`), keep the name both ways.
fn learn_name(gw: &Gateway, d: &Decision) {
    let (Some(hit), Protocol::Imps, Some(domain)) = (&d.enum_hit, d.protocol, &d.domain) else {
        return;
    };
    if !gw
        .cfg()
        .peer(domain)
        .is_some_and(|p| p.address_by == crate::config::AddressBy::EnumUri)
    {
        return;
    }
    let Some(n) = d
        .target
        .strip_prefix('+')
        .and_then(|t| E164::from_digits(t).ok())
    else {
        return;
    };
    let Some((_, user_at)) = hit.uri.split_once(':') else {
        return;
    };
    if let Ok(id) = WvId::parse(user_at)
        && id.e164() != Some(n)
    {
        gw.names.learn(n, &id);
    }
}

/// A destination DNS shows reachable by SIP (and not by IMPS): the translator, to the URI
/// ENUM gave or the user at the domain, over the servers SRV gave (TLS for `_sips._tcp`,
/// TCP when the SRV name says so, else UDP).
fn sip_destination(d: &Decision, what: &str) -> Dest {
    let domain = d.domain.clone().unwrap_or_default();
    let tls = d.srv.as_deref().is_some_and(|s| s.starts_with("_sips."));
    let tcp = tls || d.srv.as_deref().is_some_and(|s| s.contains("._tcp."));
    let servers: Vec<SipServer> = d
        .targets
        .iter()
        .flat_map(|t| {
            t.addrs.iter().map(move |a| SipServer {
                addr: std::net::SocketAddr::new(*a, t.port),
                tcp,
                tls,
            })
        })
        .collect();
    if servers.is_empty() {
        return no_route(what);
    }
    let uri = crate::links::sip::map::request_uri(
        d.enum_hit.as_ref().map(|h| h.uri.as_str()),
        what,
        &domain,
    );
    Dest::Sip(SipTarget {
        domain,
        uri,
        servers,
    })
}

/// A destination DNS shows reachable by XMPP (and not by IMPS): the translator, to the JID
/// ENUM gave (`xmpp:`, or the user of an `im:`/`pres:` URI) or the user at the domain, over
/// the servers SRV gave.
fn xmpp_destination(d: &Decision, what: &str) -> Dest {
    let domain = d.domain.clone().unwrap_or_default();
    let servers: Vec<std::net::SocketAddr> = d
        .targets
        .iter()
        .flat_map(|t| {
            t.addrs
                .iter()
                .map(move |a| std::net::SocketAddr::new(*a, t.port))
        })
        .collect();
    if servers.is_empty() {
        return no_route(what);
    }
    let jid = crate::links::xmpp::stanza::target_jid(
        d.enum_hit.as_ref().map(|h| h.uri.as_str()),
        what,
        &domain,
    );
    match jid {
        Some(jid) => Dest::Xmpp(crate::links::xmpp::XmppTarget {
            domain,
            jid,
            servers,
        }),
        None => Dest::Fail(Failure::local(
            Kind::InvalidUserId,
            format!("{what} cannot be named as an XMPP address at {domain}"),
        )),
    }
}

/// The destination a DNS decision gives for `what` (a route-by value, for the status
/// description). `own` is our public domain; `last_resort` the gateway of last resort.
pub fn destination(d: &Decision, own: &str, last_resort: Option<&str>, what: &str) -> Dest {
    let source = if d.enum_hit.is_some() {
        Source::Enum
    } else if d.peering {
        Source::Peering
    } else {
        Source::Srv
    };
    let last_resort_name = last_resort.filter(|l| !l.is_empty());
    let last_resort = |lr: &str| {
        Dest::LastResort(Remote {
            domain: lr.to_owned(),
            urls: Vec::new(),
            source: Source::LastResort,
        })
    };
    match d.protocol {
        Protocol::Imps if d.domain.as_deref() == Some(own) => Dest::Fail(Failure::local(
            Kind::UnknownUser,
            format!("{what} is not a subscriber here"),
        )),
        Protocol::Imps => Dest::Imps(Remote {
            domain: d.domain.clone().unwrap_or_default(),
            urls: d.uris(),
            source,
        }),
        Protocol::LastResort => match last_resort_name {
            Some(lr) => last_resort(lr),
            None => no_route(what),
        },
        // This gateway speaks SSP only: a SIP/XMPP-only destination goes to the gateway of
        // last resort, which can (the use cases' alternative flows), when there is one.
        Protocol::Sip | Protocol::Xmpp => match last_resort_name {
            Some(lr) => last_resort(lr),
            None => Dest::Fail(Failure::local(
                Kind::NotSupported,
                format!(
                    "{what} is reachable by {} only and no gateway of last resort is configured",
                    d.protocol.as_str()
                ),
            )),
        },
        Protocol::None => no_route(what),
    }
}

/// The number a route-by value names, normalised; a search too broad is refused (537).
pub(crate) fn route_number(cfg: &Config, rb: &RouteBy) -> Result<Option<E164>, Failure> {
    match rb {
        RouteBy::SearchNumber(s) => match cfg.plan.normalise(s) {
            // "The Service Provider is able to refuse ... partial" number searches.
            Ok(n) if n.digits().len() < cfg.policy.search_min_digits => Err(Failure::local(
                Kind::SearchTooBroad,
                format!(
                    "partial number {s:?}: at least {} digits are required",
                    cfg.policy.search_min_digits
                ),
            )),
            Ok(n) => Ok(Some(n)),
            Err(NumberError::Wildcard(_)) => Err(Failure::local(
                Kind::SearchTooBroad,
                format!("wildcards are not accepted in a number search: {s:?}"),
            )),
            Err(e) => Err(Failure::local(Kind::SearchTooBroad, e.to_string())),
        },
        RouteBy::Id(s) => match WvIdRef::parse(s) {
            Ok(id) => Ok(id.e164()),
            Err(e) => Err(Failure::local(Kind::InvalidUserId, e.to_string())),
        },
    }
}

/// Static part of routing: everything that needs no DNS.
fn route_static(cfg: &Config, dir: &Directory, rw: &Rewriter, rb: &RouteBy) -> Option<Dest> {
    let number = match route_number(cfg, rb) {
        Ok(n) => n,
        // Wildcard searches cannot be routed by number; where allowed, our core answers them.
        Err(_) if cfg.policy.search_wildcards_allowed && is_wildcard_search(rb) => {
            return Some(Dest::Core);
        }
        Err(f) => return Some(Dest::Fail(f)),
    };
    if let Some(n) = number {
        if dir.is_subscriber(n) {
            return Some(Dest::Core);
        }
        if let Some(r) = cfg.route_for(n) {
            return Some(Dest::Imps(Remote {
                domain: r.peer.clone(),
                urls: Vec::new(),
                source: Source::Prefix,
            }));
        }
        return None;
    }
    let RouteBy::Id(s) = rb else { return None };
    let id = WvIdRef::parse(s).ok()?;
    let domain = id.domain();
    if rw.is_own_domain(domain) {
        return Some(Dest::Core);
    }
    let domain = domain?;
    if cfg.peer(domain).is_some() {
        return Some(Dest::Imps(Remote {
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
fn no_route(what: &str) -> Dest {
    Dest::Fail(Failure::local(
        Kind::NoRoute,
        format!("no route to the network of {what}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssp::status as code;

    #[test]
    fn last_resort_takes_what_only_sip_or_xmpp_reaches() {
        let mut d = Decision::new("+4470", Svc::Im);
        d.protocol = Protocol::Sip;
        d.domain = Some("sip.example".into());
        match destination(&d, "opx.example", None, "wv:+4470") {
            Dest::Fail(f) => assert_eq!(f.code(), code::NOT_SUPPORTED),
            other => panic!("{other:?}"),
        }
        match destination(&d, "opx.example", Some("lr.example"), "wv:+4470") {
            Dest::LastResort(r) => assert_eq!(r.domain, "lr.example"),
            other => panic!("{other:?}"),
        }
        d.protocol = Protocol::Imps;
        d.domain = Some("opx.example".into());
        match destination(&d, "opx.example", None, "wv:+4470") {
            Dest::Fail(f) => assert_eq!(f.code(), code::UNKNOWN_USER),
            other => panic!("{other:?}"),
        }
    }
}
