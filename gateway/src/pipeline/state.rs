//! The state the request path runs on: the links, the resolver, and what admission and
//! correlation keep (in-flight slots, per-originator rates, answers routed by token).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};

use crate::config::Config;
use crate::directory::Directory;
use crate::drain::Drain;
use crate::links::Links;
use crate::links::peer::KeyedLimiter;
use crate::ops::metrics::Metrics;
use crate::resolve::Resolver;

/// A running gateway's shared state.
pub struct Gateway {
    /// The far sides: core, peers.
    pub(crate) links: Arc<Links>,
    /// Per-originator rate limiter (inbound; replaced when a reload changes its rate).
    pub(crate) originators: ArcSwap<KeyedLimiter>,
    /// Slots for requests in flight (resized by a reload, see [`Gateway::resize_in_flight`]).
    pub(crate) in_flight: Arc<tokio::sync::Semaphore>,
    /// The number of slots `in_flight` was last sized to.
    in_flight_max: Mutex<usize>,
    /// Names of other operators' users that ENUM gave.
    pub(crate) names: super::names::Names,
    /// Answers with forged or foreign transaction IDs, per source address.
    pub(crate) forged: ArcSwap<crate::budget::Budget>,
    /// Predecessors' requests already answered by token: (instance, request ID) -> issued.
    /// A sender retrying an answer must not give the originator a second one. (Without a
    /// state store only; with one, the store remembers, across restarts and replicas.)
    pub(crate) routed_by_token: Mutex<HashMap<(u32, u64), u32>>,
    /// Kept work: the state store and what this process holds of it.
    pub(crate) works: super::lease::Works,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("links", &self.links)
            .finish_non_exhaustive()
    }
}

/// The name this replica leases work under: the same across its restarts, so that a
/// restarted process takes back at once what its predecessor held.
fn owner(cfg: &Config) -> String {
    format!("{}/{}", cfg.operator.public_domain, cfg.cluster.replica)
}

impl Gateway {
    /// The state over `links` (work carried in memory only; see [`Gateway::keeping`]).
    pub fn new(links: Links) -> Gateway {
        let cfg = links.cfg();
        Gateway {
            originators: ArcSwap::from_pointee(crate::links::peer::keyed_limiter(
                cfg.policy.originator_rate,
                cfg.policy.originator_burst,
            )),
            in_flight: Arc::new(tokio::sync::Semaphore::new(cfg.limits.max_in_flight)),
            in_flight_max: Mutex::new(cfg.limits.max_in_flight),
            names: super::names::Names::default(),
            forged: ArcSwap::from_pointee(crate::budget::Budget::new(
                cfg.policy.failure_rate,
                cfg.policy.failure_burst,
            )),
            routed_by_token: Mutex::default(),
            works: super::lease::Works::new(None, owner(&cfg)),
            links: Arc::new(links),
        }
    }

    /// The same, keeping work in `store`.
    pub fn keeping(mut self, store: Arc<crate::store::Store>) -> Gateway {
        self.works = super::lease::Works::new(Some(store), owner(&self.cfg()));
        self
    }

    /// The state store, if work is kept.
    pub fn store(&self) -> Option<&Arc<crate::store::Store>> {
        self.works.store()
    }

    /// The configuration in use.
    pub fn cfg(&self) -> crate::links::CfgRef {
        self.links.cfg()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.links.metrics
    }

    /// The sampler of log lines a far side can cause.
    pub(crate) fn logs(&self) -> &crate::ops::logs::Sampler {
        &self.links.logs
    }

    /// The shutdown handle.
    pub fn drain(&self) -> &Drain {
        &self.links.drain
    }

    /// The subscriber directory in use.
    pub fn directory(&self) -> Guard<Arc<Directory>> {
        self.links.dir.load()
    }

    /// Requests waiting for an asynchronous answer now.
    pub fn pending(&self) -> usize {
        self.links.pending.len()
    }

    /// Established SSP associations.
    pub fn associations(&self) -> usize {
        self.links.assoc.count()
    }

    /// The resolver in use, if DNS resolution is configured.
    pub fn resolver(&self) -> Option<Arc<Resolver>> {
        self.links.live.load().resolver.clone()
    }

    /// The links (tests reach the far sides' state through them).
    pub fn links(&self) -> &Links {
        &self.links
    }

    /// Give `in_flight` `max` slots: more at once; fewer as requests in flight finish (the
    /// slots taken back are waited for, never taken from a request).
    pub(crate) fn resize_in_flight(&self, max: usize) {
        let mut cur = self
            .in_flight_max
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        crate::budget::resize(&self.in_flight, *cur, max);
        *cur = max;
    }

    /// Export when every certificate the configuration names (ours, and each trust anchor)
    /// stops being valid, so an alert can warn weeks ahead. Called at start and whenever our
    /// certificate is renewed; series of certificates no longer there are dropped.
    pub fn note_certificates(&self) {
        let cfg = self.cfg();
        let m = self.metrics();
        let mut files: Vec<&std::path::Path> = Vec::new();
        files.extend(cfg.tls.cert.as_deref());
        files.extend(cfg.tls.trust.iter().map(|p| p.as_path()));
        if let Some(c) = &cfg.core {
            files.extend(c.trust.iter().map(|p| p.as_path()));
        }
        for p in &cfg.peers {
            files.extend(p.trust.iter().map(|p| p.as_path()));
        }
        if let Some(s) = &cfg.sip {
            for p in &s.peers {
                files.extend(p.trust.iter().map(|p| p.as_path()));
            }
        }
        files.sort();
        files.dedup();
        m.certificates.reset();
        for f in files {
            let Ok(certs) = crate::tls::load_certs(f) else {
                continue;
            };
            let file = f.display().to_string();
            for (i, c) in certs.iter().enumerate() {
                if let Some(end) = crate::tls::not_after(c) {
                    m.certificates
                        .with_label_values(&[&file, &i.to_string()])
                        .set(end);
                }
            }
        }
    }
}
