//! `[sip]`: the SIP/SIMPLE translator's listeners and the SIP operators whose requests it
//! takes (`[[sip.peer]]`, by domain: over UDP and TCP, which carry no certificate, where a
//! request comes from is what proves its domain; over TLS, a certificate naming it).

use super::locate::Step;
use super::raw::RawSip;
use super::schema::{SipPeerSpec, SipSpec};
use super::{Check, at, domain, k};

/// The largest SIP body by default: a MESSAGE is meant for short texts (RFC 3428 says
/// 1300 bytes over UDP); this bounds what a peer can make the gateway hold.
const MAX_BODY: usize = 16 * 1024;

/// Requests per second a SIP operator may send by default (as an SSP peer's default).
const PEER_RATE: u32 = 500;

/// How long a presence subscription is asked for by default (RFC 3856 suggests an hour).
const SUBSCRIBE_EXPIRES: u32 = 3600;

/// `[sip]`; `base` is the config file's folder (for `trust` paths), `identity` whether
/// `[tls] cert` and `key` are set (SIP over TLS presents them).
pub(super) fn validate(
    check: &mut Check<'_>,
    base: &std::path::Path,
    r: RawSip,
    identity: bool,
) -> SipSpec {
    let dir = base;
    let path = |key: &str| vec![k("sip"), k(key)];
    let listen = match r.listen.parse::<std::net::SocketAddr>() {
        Ok(a) if a.port() != 0 => a,
        Ok(_) => {
            check.err(
                &path("listen"),
                "give a port: SIP peers must know where to send",
            );
            std::net::SocketAddr::from(([127, 0, 0, 1], 5060))
        }
        Err(_) => {
            check.err(
                &path("listen"),
                format!("{:?} is not an address:port", r.listen),
            );
            std::net::SocketAddr::from(([127, 0, 0, 1], 5060))
        }
    };
    let advertise = r.advertise.as_deref().and_then(|a| match a.parse() {
        Ok(sa) => Some(sa),
        Err(_) => {
            check.err(&path("advertise"), format!("{a:?} is not an address:port"));
            None
        }
    });
    if listen.ip().is_unspecified() && advertise.is_none() {
        check.err(
            &path("advertise"),
            format!(
                "listen is {listen}, a wildcard: give the address SIP peers reach (Via, Contact)"
            ),
        );
    }
    let tls_listen = r.tls_listen.as_deref().and_then(|a| match a.parse() {
        Ok(sa) if sa == listen => {
            check.err(
                &path("tls_listen"),
                format!("{a} is listen's address too: TLS needs a port of its own"),
            );
            None
        }
        Ok(sa) => Some(sa),
        Err(_) => {
            check.err(&path("tls_listen"), format!("{a:?} is not an address:port"));
            None
        }
    });
    if tls_listen.is_some() && !identity {
        check.err(
            &path("tls_listen"),
            "SIP over TLS presents our certificate: set [tls] cert and key",
        );
    }
    let max_body = match r.max_body {
        None => MAX_BODY,
        Some(n) if (1..=65_000).contains(&n) => usize::try_from(n).unwrap_or(MAX_BODY),
        Some(n) => {
            check.err(
                &path("max_body"),
                format!("{n} is not within 1..=65000 bytes"),
            );
            MAX_BODY
        }
    };
    let subscribe_expires = match r.subscribe_expires.as_deref().map(super::parse_duration) {
        None => SUBSCRIBE_EXPIRES,
        Some(Ok(d)) if (10..=86_400).contains(&d.as_secs()) => {
            u32::try_from(d.as_secs()).unwrap_or(SUBSCRIBE_EXPIRES)
        }
        Some(Ok(_)) => {
            check.err(
                &path("subscribe_expires"),
                "must be within 10s..=24h (refreshed before it ends)",
            );
            SUBSCRIBE_EXPIRES
        }
        Some(Err(e)) => {
            check.err(&path("subscribe_expires"), e);
            SUBSCRIBE_EXPIRES
        }
    };
    let mut peers = Vec::new();
    for (i, p) in r.peers.into_iter().enumerate() {
        let base = at(&path("peer"), &[Step::Index(i)]);
        let d = domain(check, &at(&base, &[k("domain")]), &p.domain);
        let trust = p
            .trust
            .iter()
            .map(|t| super::Config::resolve_path(dir, t))
            .collect();
        if p.addresses.is_empty() && !p.tls {
            check.err(
                &at(&base, &[k("addresses")]),
                "name the networks this operator's SIP servers send from, or set tls = true \
                 to trust it by its certificate",
            );
        }
        if p.tls && tls_listen.is_none() {
            check.err(
                &at(&base, &[k("tls")]),
                "its requests come over TLS: set [sip] tls_listen",
            );
        }
        let mut addresses = Vec::new();
        for (j, a) in p.addresses.iter().enumerate() {
            let net = a
                .parse::<ipnet::IpNet>()
                .or_else(|_| a.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match net {
                Ok(n) => addresses.push(n),
                Err(_) => check.err(
                    &at(&base, &[k("addresses"), Step::Index(j)]),
                    format!("{a:?} is not an IP address or network"),
                ),
            }
        }
        if peers.iter().any(|q: &SipPeerSpec| q.domain == d) {
            check.err(&at(&base, &[k("domain")]), format!("{d} is listed twice"));
        }
        let rate = p.rate.unwrap_or(PEER_RATE);
        if rate == 0 {
            check.err(&at(&base, &[k("rate")]), "must be at least 1 per second");
        }
        peers.push(SipPeerSpec {
            domain: d,
            addresses,
            tls: p.tls,
            trust,
            imdn: p.imdn,
            rate,
            burst: p.burst.unwrap_or(rate.saturating_mul(2)),
        });
    }
    SipSpec {
        listen,
        advertise,
        tls_listen,
        max_body,
        subscribe_expires,
        peers,
    }
}
