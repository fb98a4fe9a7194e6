//! `ssp-gateway resolve`: show how the gateway finds the servers of a number or a domain.

use std::net::SocketAddr;
use std::path::Path;

use crate::config::{Config, EnumSuffix, Fallback, ResolverSpec};
use crate::ops::metrics::Metrics;
use crate::resolve::{Clock, Decision, Protocol, Resolver, Svc, Trace};
use crate::ssp::ids::WvId;

/// Options of the command.
#[derive(Debug, Default)]
pub struct Options<'a> {
    /// Config file whose `[resolver]` (and peering table) to use.
    pub config: Option<&'a Path>,
    /// Name servers overriding the config's (for SRV and every ENUM suffix).
    pub nameservers: Vec<SocketAddr>,
    /// ENUM suffixes overriding the config's.
    pub suffixes: Vec<String>,
    /// `im` (default) or `pres`.
    pub service: Option<&'a str>,
}

/// Errors that make the command exit 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad config.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// DNS did not answer.
    #[error(transparent)]
    Dns(#[from] crate::resolve::Transient),
}

/// The normalised target: `+E164` or a lowercase domain.
pub fn parse_target(t: &str) -> Result<String, CliError> {
    let t = t.trim();
    let bare = if t.len() > 3 && t[..3].eq_ignore_ascii_case("wv:") {
        &t[3..]
    } else {
        t
    };
    if bare.starts_with('+') {
        let id = WvId::parse(bare).map_err(|e| CliError::Usage(e.to_string()))?;
        let n = id
            .e164()
            .ok_or_else(|| CliError::Usage(format!("{t:?} is not wv:+E164, +E164 or a domain")))?;
        return Ok(format!("+{n}"));
    }
    if bare.contains('@') || bare.contains('/') || bare.is_empty() {
        return Err(CliError::Usage(format!(
            "{t:?} is not wv:+E164, +E164 or a domain"
        )));
    }
    Ok(bare.trim_end_matches('.').to_ascii_lowercase())
}

fn spec_from(opts: &Options<'_>, cfg: Option<&Config>) -> Result<ResolverSpec, CliError> {
    let mut spec = match cfg.and_then(|c| c.resolver.clone()) {
        Some(s) => s,
        None => ResolverSpec {
            nameservers: Vec::new(),
            timeout: std::time::Duration::from_millis(1500),
            attempt_timeout: std::time::Duration::from_millis(700),
            srv_label: "_imps-server._tcp".into(),
            fallbacks: vec![Fallback::Sip, Fallback::Xmpp],
            last_resort: None,
            negative_min_ttl: std::time::Duration::from_secs(5),
            negative_max_ttl: std::time::Duration::from_secs(300),
            hold_down: std::time::Duration::from_secs(10),
            stale_max: std::time::Duration::from_secs(3600),
            cache_entries: 16,
            enums: Vec::new(),
        },
    };
    if !opts.nameservers.is_empty() {
        spec.nameservers = opts.nameservers.clone();
        for e in &mut spec.enums {
            e.nameservers = opts.nameservers.clone();
        }
    }
    if !opts.suffixes.is_empty() {
        spec.enums = opts
            .suffixes
            .iter()
            .map(|s| EnumSuffix {
                suffix: s.trim_end_matches('.').to_ascii_lowercase(),
                nameservers: spec.nameservers.clone(),
                timeout: spec.attempt_timeout,
            })
            .collect();
    }
    if spec.enums.is_empty() {
        spec.enums.push(EnumSuffix {
            suffix: "e164.arpa".into(),
            nameservers: spec.nameservers.clone(),
            timeout: spec.attempt_timeout,
        });
    }
    if spec.nameservers.is_empty() {
        return Err(CliError::Usage(
            "no name server: give --nameserver IP:PORT or a config with [resolver] nameservers"
                .into(),
        ));
    }
    Ok(spec)
}

/// Resolve `target` and return the decision with the trace of every step.
pub async fn run(opts: &Options<'_>, target: &str) -> Result<(Decision, Vec<String>), CliError> {
    let cfg = match opts.config {
        Some(p) => Some(Config::load(p)?),
        None => None,
    };
    let spec = spec_from(opts, cfg.as_ref())?;
    let svc = match opts.service {
        None | Some("im") => Svc::Im,
        Some("pres") => Svc::Pres,
        Some(other) => {
            return Err(CliError::Usage(format!(
                "--service {other:?}: expected im or pres"
            )));
        }
    };
    let target = parse_target(target)?;
    let resolver = match &cfg {
        Some(c) => Resolver::new(c, spec, Metrics::new(), Clock::System),
        None => Resolver::with_parts(spec, "", Vec::new(), Metrics::new(), Clock::System),
    };
    let trace = Trace::default();
    let d = resolver.decide_uncached(&target, svc, Some(&trace)).await?;
    Ok((d, trace.lines()))
}

/// Whether the decision is a route (exit 0) or none (exit 2).
pub fn has_route(d: &Decision) -> bool {
    d.protocol != Protocol::None
}
