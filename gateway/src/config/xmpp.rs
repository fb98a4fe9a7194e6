//! `[xmpp]`: the XMPP translator's server-to-server listener and the domains it federates
//! with (`[[xmpp.peer]]`, each with how its streams must be secured and proved), and the
//! defaults for domains not listed when `open = true`.

use super::locate::Step;
use super::raw::RawXmpp;
use super::schema::{XmppPeerSpec, XmppPolicy, XmppSpec};
use super::{Check, at, domain, k};

/// The largest stanza by default: messages and presence are small; this bounds what a peer
/// can make the gateway hold (RFC 6120 §13.12 asks for at least 10,000 bytes).
const MAX_STANZA: usize = 64 * 1024;

/// Stanzas per second a domain may send by default (as an SSP peer's default).
const PEER_RATE: u32 = 500;

fn duration(
    check: &mut Check<'_>,
    path: &[Step],
    v: Option<&str>,
    default: std::time::Duration,
    range: std::ops::RangeInclusive<u64>,
) -> std::time::Duration {
    match v.map(super::parse_duration) {
        None => default,
        Some(Ok(d)) if range.contains(&d.as_secs()) => d,
        Some(Ok(_)) => {
            check.err(
                path,
                format!("must be within {}s..={}s", range.start(), range.end()),
            );
            default
        }
        Some(Err(e)) => {
            check.err(path, e);
            default
        }
    }
}

/// `[xmpp]`; `base` is the config file's folder (for paths), `identity` whether `[tls] cert`
/// and `key` are set (TLS and SASL EXTERNAL present them), `tls_trust` whether `[tls] trust`
/// names anchors (the default for `trust`).
pub(super) fn validate(
    check: &mut Check<'_>,
    base: &std::path::Path,
    r: RawXmpp,
    identity: bool,
    tls_trust: bool,
) -> XmppSpec {
    let path = |key: &str| vec![k("xmpp"), k(key)];
    let listen = match r.listen.parse::<std::net::SocketAddr>() {
        Ok(a) if a.port() != 0 => a,
        Ok(_) => {
            check.err(
                &path("listen"),
                "give a port: it is what _xmpp-server._tcp names",
            );
            std::net::SocketAddr::from(([127, 0, 0, 1], 5269))
        }
        Err(_) => {
            check.err(
                &path("listen"),
                format!("{:?} is not an address:port", r.listen),
            );
            std::net::SocketAddr::from(([127, 0, 0, 1], 5269))
        }
    };
    let max_stanza = match r.max_stanza {
        None => MAX_STANZA,
        Some(n) if (10_000..=1_048_576).contains(&n) => usize::try_from(n).unwrap_or(MAX_STANZA),
        Some(n) => {
            check.err(
                &path("max_stanza"),
                format!("{n} is not within 10000..=1048576 bytes (RFC 6120 §13.12)"),
            );
            MAX_STANZA
        }
    };
    let idle = duration(
        check,
        &path("idle"),
        r.idle.as_deref(),
        std::time::Duration::from_secs(600),
        1..=86_400,
    );
    let auth_timeout = duration(
        check,
        &path("auth_timeout"),
        r.auth_timeout.as_deref(),
        std::time::Duration::from_secs(10),
        1..=300,
    );
    let receipt_wait = duration(
        check,
        &path("receipt_wait"),
        r.receipt_wait.as_deref(),
        std::time::Duration::from_secs(120),
        1..=86_400,
    );
    let dialback_secret_file = r
        .dialback_secret_file
        .as_deref()
        .map(|f| super::Config::resolve_path(base, f));
    if let Some(f) = &dialback_secret_file {
        match std::fs::read(f) {
            Ok(b) if b.trim_ascii().len() >= 16 => {}
            Ok(_) => check.err(
                &path("dialback_secret_file"),
                format!("{} holds fewer than 16 bytes", f.display()),
            ),
            Err(e) => check.err(
                &path("dialback_secret_file"),
                format!("{}: {e}", f.display()),
            ),
        }
    }
    let trust = r
        .trust
        .iter()
        .map(|t| super::Config::resolve_path(base, t))
        .collect();
    let defaults = XmppPolicy {
        require_tls: r.require_tls.unwrap_or(true),
        allow_dialback: r.allow_dialback.unwrap_or(false),
        rate: PEER_RATE,
        burst: PEER_RATE * 2,
    };
    let mut peers: Vec<XmppPeerSpec> = Vec::new();
    for (i, p) in r.peers.into_iter().enumerate() {
        let base = at(&path("peer"), &[Step::Index(i)]);
        let d = domain(check, &at(&base, &[k("domain")]), &p.domain);
        if peers.iter().any(|q| q.domain == d) {
            check.err(&at(&base, &[k("domain")]), format!("{d} is listed twice"));
        }
        let rate = p.rate.unwrap_or(PEER_RATE);
        if rate == 0 {
            check.err(&at(&base, &[k("rate")]), "must be at least 1 per second");
        }
        peers.push(XmppPeerSpec {
            domain: d,
            policy: XmppPolicy {
                require_tls: p.require_tls.unwrap_or(defaults.require_tls),
                allow_dialback: p.allow_dialback.unwrap_or(defaults.allow_dialback),
                rate,
                burst: p.burst.unwrap_or(rate.saturating_mul(2)),
            },
        });
    }
    // TLS and certificates need ours: without it only dialback over plain TCP is possible.
    if !identity {
        let needs = |p: &XmppPolicy| p.require_tls || !p.allow_dialback;
        for (i, p) in peers.iter().enumerate() {
            if needs(&p.policy) {
                check.err(
                    &at(&path("peer"), &[Step::Index(i), k("domain")]),
                    format!(
                        "{} needs TLS or a certificate proof: set [tls] cert and key, or \
                         require_tls = false and allow_dialback = true",
                        p.domain
                    ),
                );
            }
        }
        if r.open && needs(&defaults) {
            check.err(
                &path("open"),
                "the defaults need TLS or a certificate proof: set [tls] cert and key",
            );
        }
    }
    // A domain proved by certificate alone needs anchors to check certificates against.
    if identity && !tls_trust && r.trust.is_empty() {
        for (i, p) in peers.iter().enumerate() {
            if !p.policy.allow_dialback {
                check.err(
                    &at(&path("peer"), &[Step::Index(i), k("domain")]),
                    format!(
                        "{} is proved by certificate only, and no anchors are set: give \
                         [xmpp] trust or [tls] trust, or allow_dialback = true",
                        p.domain
                    ),
                );
            }
        }
    }
    if peers.is_empty() && !r.open {
        check.err(
            &path("peer"),
            "no XMPP domain is federated with: list [[xmpp.peer]]s, or set open = true",
        );
    }
    XmppSpec {
        listen,
        max_stanza,
        idle,
        auth_timeout,
        receipt_wait,
        dialback_secret_file,
        trust,
        open: r.open,
        defaults,
        peers,
    }
}
