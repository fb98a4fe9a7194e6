//! Destination resolution by DNS: ENUM (RFC 6116) for `wv:+MSISDN`, SRV for domains.

pub mod ddds;

use http::Uri;

use crate::config::Config;
use crate::ops::metrics::Metrics;
use crate::relay::route::Dest;
use crate::ssp::walk::RouteBy;
use crate::ssp::{E164, Primitive};

/// Resolver errors.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Configuration problem.
    #[error("{0}")]
    Config(String),
}

/// Shared DNS resolution with caching.
#[derive(Debug)]
pub struct Resolver {
    _metrics: Metrics,
}

impl Resolver {
    /// Build from `[resolver]`; `None` when the config has no DNS section.
    pub fn from_config(_cfg: &Config, _metrics: Metrics) -> Result<Option<Resolver>, ResolveError> {
        Ok(None)
    }

    /// Forget cached routes.
    pub fn clear(&self) {}

    /// Route by DNS.
    pub async fn route(&self, _cfg: &Config, rb: &RouteBy, _req: &Primitive) -> Dest {
        crate::relay::route::no_route(rb)
    }

    /// SSP URLs of a domain from SRV.
    pub async fn peer_urls(&self, _domain: &str) -> Vec<Uri> {
        Vec::new()
    }

    /// Whether ENUM places `n` at `domain`.
    pub async fn check_originator(&self, _n: E164, _domain: &str) -> bool {
        true
    }
}
