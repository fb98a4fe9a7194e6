//! The state the request path runs on: the links, the resolver, and what admission and
//! correlation keep (in-flight slots, per-originator rates, answers routed by token).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::Guard;

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
    /// Destination resolution (ENUM/SRV), if configured.
    pub(crate) resolver: Option<Arc<Resolver>>,
    /// Per-originator rate limiter (inbound).
    pub(crate) originators: KeyedLimiter,
    /// Slots for requests in flight.
    pub(crate) in_flight: Arc<tokio::sync::Semaphore>,
    /// Names of other operators' users that ENUM gave.
    pub(crate) names: super::names::Names,
    /// Answers with forged or foreign transaction IDs, per source address.
    pub(crate) forged: crate::budget::Budget,
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
    pub fn new(links: Links, resolver: Option<Arc<Resolver>>) -> Gateway {
        let cfg = links.cfg.clone();
        Gateway {
            originators: crate::links::peer::keyed_limiter(
                cfg.policy.originator_rate,
                cfg.policy.originator_burst,
            ),
            in_flight: Arc::new(tokio::sync::Semaphore::new(cfg.limits.max_in_flight)),
            names: super::names::Names::default(),
            forged: crate::budget::Budget::new(cfg.policy.failure_rate, cfg.policy.failure_burst),
            routed_by_token: Mutex::default(),
            works: super::lease::Works::new(None, owner(&cfg)),
            links: Arc::new(links),
            resolver,
        }
    }

    /// The same, keeping work in `store`.
    pub fn keeping(mut self, store: Arc<crate::store::Store>) -> Gateway {
        self.works = super::lease::Works::new(Some(store), owner(self.cfg()));
        self
    }

    /// The state store, if work is kept.
    pub fn store(&self) -> Option<&Arc<crate::store::Store>> {
        self.works.store()
    }

    /// The configuration.
    pub fn cfg(&self) -> &Arc<Config> {
        &self.links.cfg
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

    /// The resolver, if DNS resolution is configured.
    pub fn resolver(&self) -> Option<&Arc<Resolver>> {
        self.resolver.as_ref()
    }

    /// The links (tests reach the far sides' state through them).
    pub fn links(&self) -> &Links {
        &self.links
    }

    /// Put a reloaded configuration `new` in use, as far as it can be live (the caller,
    /// `app::reload`, has read it from its file and checked it whole): the subscriber
    /// directory it names, and our certificate and key if their files changed. Anything that
    /// fails here refuses the reload whole: nothing is stored before every step has loaded.
    /// The sections that changed otherwise are returned, in use after a restart.
    pub fn reload_from(&self, new: &Config) -> Result<Reloaded, ReloadError> {
        let running = self.cfg();
        let dir = Directory::load(&new.directory)?;
        // Our certificate and key, if their files changed (renewed). A pair that does not
        // load yet (half written) leaves the current one in use; the directory still goes.
        let renewed = match self.links.identity.as_ref().map(|i| i.refresh()) {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "renewed certificate files do not load yet; the current pair stays");
                false
            }
            None => false,
        };
        let n = dir.len();
        self.links.dir.store(Arc::new(dir));
        self.metrics().directory_entries.set(n as i64);
        if let Some(r) = &self.resolver {
            // Cached routes may point where a number no longer is.
            r.clear();
        }
        if renewed {
            tracing::info!("certificate and key renewed from their files");
            self.note_certificates();
        }
        Ok(Reloaded {
            entries: n,
            pending: changed_sections(running, new),
        })
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

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Directory entries now in use.
    pub entries: usize,
    /// Sections of the configuration that changed and are in use only after a restart.
    pub pending: Vec<&'static str>,
}

/// Why a reload was refused (what runs stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The configuration file does not load.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// It loads, but what it names does not (certificates, trust anchors, keys): the next
    /// start would fail on it.
    #[error("{0}")]
    Invalid(String),
    /// The subscriber directory does not load.
    #[error(transparent)]
    Directory(#[from] crate::directory::DirectoryError),
}

/// The sections of `new` that differ from `old`, other than `[directory]` (which a reload
/// puts in use; so are renewed certificate and key files, `[tls]` naming the same ones). Compared by their checked values, so comments and layout do not count.
fn changed_sections(old: &Config, new: &Config) -> Vec<&'static str> {
    let differs =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let mut v = Vec::new();
    for (name, changed) in [
        (
            "[gateway]",
            differs(&old.operator, &new.operator) || differs(&old.plan, &new.plan),
        ),
        ("[listen] (addresses)", differs(&old.listen, &new.listen)),
        ("[tls]", differs(&old.tls, &new.tls)),
        ("[core]", differs(&old.core, &new.core)),
        ("[[peer]]", differs(&old.peers, &new.peers)),
        ("[[route]]", differs(&old.routes, &new.routes)),
        ("[resolver]", differs(&old.resolver, &new.resolver)),
        ("[timeouts]", differs(&old.timeouts, &new.timeouts)),
        ("[limits]", differs(&old.limits, &new.limits)),
        ("[policy]", differs(&old.policy, &new.policy)),
        ("[store]", differs(&old.store, &new.store)),
        ("[cluster]", differs(&old.cluster, &new.cluster)),
        ("[sip]", differs(&old.sip, &new.sip)),
    ] {
        if changed {
            v.push(name);
        }
    }
    v
}
