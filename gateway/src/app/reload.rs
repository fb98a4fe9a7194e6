//! Reload (SIGHUP, `POST /reload`): the configuration file is read again, checked whole as
//! `check` checks it, built whole (peers and their TLS, the core's link, routes, resolver,
//! limits, trust anchors and pins, token keys, the directory, the listeners' TLS and
//! bounds), and only then put in use, each part by one atomic swap. Anything that fails
//! refuses the reload whole: what runs stays, the error is logged and counted
//! (`ssp_reloads_total{result="failed"}`).
//!
//! Requests in flight finish on what they started with; the next ones take the new parts.
//! Nothing that outlives a configuration is rebuilt: requests waiting for answers,
//! associations, kept work, metrics. Token keys rotate with a grace period: a new first key
//! seals new tokens at once, and keys no longer in the file still open answers for as long
//! as an answer is accepted, so answers to requests sent before the rotation still arrive.
//!
//! What cannot change under running sockets keeps running as it is, and is named as in use
//! after a restart: listener addresses, the public domain, `[store]`, `[cluster]`, `[sip]`, `[xmpp]`,
//! other certificate and key files (renewed files at the same paths are taken up live),
//! whether the core listener speaks TLS, and removing `hmac_key_file`.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;

use super::listen::{LiveSettings, Settings};
use super::{StartError, admin_token, listener_settings};
use crate::config::Config;
use crate::directory::Directory;
use crate::links::Live;
use crate::pipeline::Gateway;
use crate::resolve::{Clock, Resolver};
use crate::token::TokenKeys;

/// Which listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    /// Peers (SSP over TLS).
    Peer,
    /// The core.
    Core,
    /// The admin endpoints.
    Admin,
}

/// Where the resolver comes from.
#[derive(Clone)]
pub(crate) enum ResolverSource {
    /// Built from `[resolver]` (again when a reload changes it or the peering table), on
    /// this clock.
    Config(Clock),
    /// Given by the embedder (tests, the demo): kept as it is.
    Given,
}

/// What a reload reaches beyond the request path's state: the listeners' settings and the
/// admin token.
pub struct Control {
    /// The request path's state.
    pub(crate) gw: Arc<Gateway>,
    /// Where the resolver comes from.
    pub(crate) resolver: ResolverSource,
    /// The admin listener's bearer token for mutating endpoints (`[listen]
    /// admin_token_file`).
    pub(crate) admin_token: ArcSwapOption<String>,
    /// The listeners' settings, swapped by a reload.
    pub(crate) listening: Mutex<Vec<(Which, LiveSettings)>>,
    /// Held for the whole of a reload: SIGHUP and `POST /reload` may come at once, and each
    /// builds on what the one before put in use (token keys retire from the keys in use).
    pub(crate) reloading: Mutex<()>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").finish_non_exhaustive()
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Directory entries now in use.
    pub entries: usize,
    /// Retired token keys still opening answers.
    pub retired_keys: usize,
    /// What changed in the configuration and is in use only after a restart.
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

impl From<StartError> for ReloadError {
    fn from(e: StartError) -> ReloadError {
        match e {
            StartError::Directory(d) => ReloadError::Directory(d),
            e => ReloadError::Invalid(e.to_string()),
        }
    }
}

/// Debug forms differ: the checked values differ (comments and layout do not count).
fn differs(a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug) -> bool {
    format!("{a:?}") != format!("{b:?}")
}

/// The configuration to put in use from `new`, with what cannot change under running
/// sockets kept as `old` has it, and the names of what was kept so.
pub(crate) fn in_use(old: &Config, new: &Config) -> (Config, Vec<&'static str>) {
    let mut cfg = new.clone();
    let mut pending = Vec::new();
    let (o, n) = (&old.listen, &new.listen);
    if (o.peer, o.core, o.admin) != (n.peer, n.core, n.admin) {
        pending.push("[listen] addresses");
        (cfg.listen.peer, cfg.listen.core, cfg.listen.admin) = (o.peer, o.core, o.admin);
    }
    if old.operator.public_domain != new.operator.public_domain {
        pending.push("[gateway] public_domain");
        cfg.operator.public_domain = old.operator.public_domain.clone();
    }
    if old.operator.hmac_key_file.is_some() && new.operator.hmac_key_file.is_none() {
        // Back to the key the state store keeps: read at start.
        pending.push("[gateway] hmac_key_file removed");
        cfg.operator.hmac_key_file = old.operator.hmac_key_file.clone();
    }
    if (&old.tls.cert, &old.tls.key) != (&new.tls.cert, &new.tls.key) {
        pending.push("[tls] cert and key (other files)");
        (cfg.tls.cert, cfg.tls.key) = (old.tls.cert.clone(), old.tls.key.clone());
    }
    match (&old.core, &mut cfg.core) {
        (Some(o), Some(n)) if o.tls != n.tls => {
            pending.push("[core] tls");
            n.tls = o.tls;
        }
        (Some(_), None) | (None, Some(_)) => {
            pending.push("[core] (added or removed)");
            cfg.core = old.core.clone();
        }
        _ => {}
    }
    if differs(&old.store, &new.store) {
        pending.push("[store]");
        cfg.store = old.store.clone();
    }
    if differs(&old.cluster, &new.cluster) {
        pending.push("[cluster]");
        cfg.cluster = old.cluster.clone();
    }
    if differs(&old.sip, &new.sip) {
        pending.push("[sip]");
        cfg.sip = old.sip.clone();
    } else if old.sip.is_some()
        && (old.tls.trust != new.tls.trust || old.timeouts.request != new.timeouts.request)
    {
        // Live for SSP; the SIP translator took them when it bound its listeners.
        pending.push("[tls] trust and [timeouts] request, as the SIP translator uses them");
    }
    // The XMPP translator took its policy, TLS and secret when it bound its listener.
    if differs(&old.xmpp, &new.xmpp) {
        pending.push("[xmpp]");
        cfg.xmpp = old.xmpp.clone();
    } else if old.xmpp.is_some() && old.tls.trust != new.tls.trust {
        pending.push("[tls] trust, as the XMPP translator uses it");
    }
    (cfg, pending)
}

/// The token keys of `cfg` in place of `current`: the key file's, with `current`'s keys that
/// are no longer in it retired. Without a key file in `new` (none, or one removed: back to
/// the state store's key at the next start), the keys stay as they are.
fn keys(cfg: &Config, new: &Config, current: &TokenKeys) -> Result<TokenKeys, ReloadError> {
    if new.operator.hmac_key_file.is_none() {
        return Ok(current.clone().with_max_age(crate::token::max_age(cfg)));
    }
    let loaded = TokenKeys::load(cfg, None).map_err(|e| ReloadError::Invalid(e.to_string()))?;
    Ok(loaded.rotated_from(current))
}

/// The resolver for `cfg`: the one in use when neither `[resolver]` nor the peering table
/// changed (its cache cleared: numbers may have moved), else a new one.
fn resolver(ctl: &Control, old: &Live, cfg: &Config) -> Option<Arc<Resolver>> {
    let ResolverSource::Config(clock) = &ctl.resolver else {
        return old.resolver.clone();
    };
    let peering = |c: &Config| -> Vec<(String, bool)> {
        c.peers
            .iter()
            .map(|p| (p.domain.clone(), !p.urls.is_empty()))
            .collect()
    };
    if !differs(&old.cfg.resolver, &cfg.resolver) && peering(&old.cfg) == peering(cfg) {
        return old.resolver.clone();
    }
    let metrics = ctl.gw.metrics().clone();
    cfg.resolver
        .clone()
        .map(|spec| Arc::new(Resolver::new(cfg, spec, metrics, clock.clone())))
}

impl Control {
    /// Reload: see the module header.
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        let result = self.try_reload();
        let gw = &self.gw;
        let m = gw.metrics();
        match &result {
            Ok(r) => {
                m.reloads.with_label_values(&["ok"]).inc();
                tracing::info!(
                    entries = r.entries,
                    retired_keys = r.retired_keys,
                    "reloaded"
                );
                if !r.pending.is_empty() {
                    tracing::warn!(
                        config = %gw.cfg().path.display(),
                        sections = ?r.pending,
                        "changed in the configuration, in use after a restart"
                    );
                }
            }
            Err(e) => {
                m.reloads.with_label_values(&["failed"]).inc();
                tracing::error!(error = %e, "reload refused; what runs stays in use");
            }
        }
        result
    }

    fn try_reload(&self) -> Result<Reloaded, ReloadError> {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let gw = &self.gw;
        let links = gw.links();
        let old = links.live();
        let new = Config::load(&old.cfg.path)?;
        // As `check` would: the next start must not fail on what this one accepts.
        super::check(new.clone())?;
        let (cfg, pending) = in_use(&old.cfg, &new);
        let cfg = Arc::new(cfg);

        // Build everything before anything is put in use.
        let dir = Directory::load(&cfg.directory)?;
        let keys = keys(&cfg, &new, &old.keys)?;
        let resolver = resolver(self, &old, &cfg);
        let fresh_resolver =
            !matches!((&resolver, &old.resolver), (Some(a), Some(b)) if Arc::ptr_eq(a, b));
        let live = Live::build(
            cfg.clone(),
            links.identity.as_ref(),
            keys,
            resolver,
            Some(&old),
        )
        .map_err(|e| ReloadError::Invalid(e.to_string()))?;
        let token = admin_token(&cfg)?;
        let listening = self
            .listening
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut settings: Vec<(&LiveSettings, Settings)> = Vec::new();
        for (which, slot) in listening.iter() {
            settings.push((
                slot,
                listener_settings(links.identity.as_ref(), &live, *which)?,
            ));
        }
        // Our certificate and key, if their files changed (renewed). A pair that does not
        // load yet (half written) leaves the current one in use; the rest still goes.
        let renewed = match links.identity.as_ref().map(|i| i.refresh()) {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "renewed certificate files do not load yet; the current pair stays");
                false
            }
            None => false,
        };

        // Put in use.
        let entries = dir.len();
        let retired_keys = live.keys.retired();
        let (op, np) = (&old.cfg.policy, &cfg.policy);
        if (op.originator_rate, op.originator_burst) != (np.originator_rate, np.originator_burst) {
            gw.originators
                .store(Arc::new(crate::links::peer::keyed_limiter(
                    np.originator_rate,
                    np.originator_burst,
                )));
        }
        if (op.failure_rate, op.failure_burst) != (np.failure_rate, np.failure_burst) {
            gw.forged.store(Arc::new(crate::budget::Budget::new(
                np.failure_rate,
                np.failure_burst,
            )));
        }
        gw.resize_in_flight(cfg.limits.max_in_flight);
        let reused = (!fresh_resolver).then(|| live.resolver.clone()).flatten();
        links.live.store(Arc::new(live));
        links.dir.store(Arc::new(dir));
        gw.metrics().directory_entries.set(entries as i64);
        if let Some(r) = reused {
            // Cached routes may point where a number no longer is.
            r.clear();
        }
        for (slot, s) in settings {
            slot.put(s);
        }
        drop(listening);
        self.admin_token.store(token.map(Arc::new));
        if renewed {
            tracing::info!("certificate and key renewed from their files");
        }
        // Trust anchors may be other files now: their expiry series follow.
        gw.note_certificates();
        for w in &new.warnings {
            tracing::warn!(config = %cfg.path.display(), "{w}");
        }
        Ok(Reloaded {
            entries,
            retired_keys,
            pending,
        })
    }
}

/// The settings slot of a listener, registered for reloads.
pub(crate) fn register(ctl: &Control, which: Which, s: Settings) -> LiveSettings {
    let slot = Arc::new(super::listen::SettingsSlot::new(s));
    ctl.listening
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push((which, slot.clone()));
    slot
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        Config::from_str(
            std::path::Path::new("routes/test.toml"),
            &format!(
                "[gateway]\npublic_domain = \"opx.example\"\ncore_domains = [\"core.opx.example\"]\ncountry_code = \"46\"\n{extra}"
            ),
        )
        .unwrap()
    }

    #[test]
    fn what_cannot_change_under_running_sockets_is_kept_and_named() {
        let old = cfg("[listen]\nadmin = \"127.0.0.1:9000\"\n[limits]\nmax_in_flight = 10\n");
        let new = cfg("[listen]\nadmin = \"127.0.0.1:9001\"\n[limits]\nmax_in_flight = 20\n");
        let (live, pending) = in_use(&old, &new);
        assert_eq!(pending, ["[listen] addresses"]);
        assert_eq!(
            live.listen.admin, old.listen.admin,
            "the bound address stays"
        );
        assert_eq!(live.limits.max_in_flight, 20, "limits are live");
        let (_, pending) = in_use(&old, &old);
        assert!(pending.is_empty());
    }

    #[test]
    fn a_key_file_removed_waits_for_a_restart_and_does_not_block_reloads() {
        let old = cfg("hmac_key_file = \"/nonexistent/hmac.keys\"\n");
        let new = cfg("");
        let (live, pending) = in_use(&old, &new);
        assert_eq!(pending, ["[gateway] hmac_key_file removed"]);
        let current = TokenKeys::random(60);
        // The file is gone too: the keys in use stay, nothing is read.
        let keys = keys(&live, &new, &current).unwrap();
        assert_eq!(keys.instance(), current.instance());
        assert_eq!(keys.retired(), 0);
    }
}
