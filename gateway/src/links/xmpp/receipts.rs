//! Messages sent with a receipt asked for (XEP-0184), awaiting it: what their delivery report
//! is made of. Kept in memory and, with a state store, in its table `xmpp.receipts`, so that
//! a restart loses no report: a restarted replica takes up its own and still reports them
//! (delivered, bounced, or not confirmed when their time runs out), and a receipt that
//! reaches another replica is matched from the store there.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::{Store, now_ms};

/// The store table.
const TABLE: &str = "xmpp.receipts";

/// A message awaiting its receipt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Awaiting {
    /// The domain it went to (the receipt must come from there).
    pub(crate) domain: String,
    /// Our sender's bare JID (the receipt comes to it).
    pub(crate) sender_jid: String,
    /// Our sender's public ID.
    pub(crate) sender: String,
    /// The recipient as the core named it.
    pub(crate) recipient: String,
    /// The SSP message ID.
    pub(crate) message_id: Option<String>,
    /// When it is reported as not confirmed (Unix milliseconds).
    pub(crate) until_ms: i64,
    /// The replica that sent it (it alone reports it as not confirmed).
    pub(crate) owner: String,
}

/// The messages awaiting receipts.
#[derive(Debug)]
pub(crate) struct Receipts {
    mem: Mutex<HashMap<String, Awaiting>>,
    store: Option<Arc<Store>>,
    owner: String,
    errors: prometheus::IntCounter,
}

impl Receipts {
    /// Those `store` keeps for replica `owner` (none without a store); store failures are
    /// counted in `errors`.
    pub(crate) async fn load(
        store: Option<Arc<Store>>,
        owner: &str,
        errors: prometheus::IntCounter,
    ) -> Receipts {
        let mut mem = HashMap::new();
        if let Some(s) = &store {
            match s.table(TABLE).list().await {
                Ok(rows) => {
                    for (id, v) in rows {
                        match serde_json::from_str::<Awaiting>(&v) {
                            Ok(a) if a.owner == owner => {
                                mem.insert(id, a);
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(id, error = %e, "unreadable awaited receipt dropped")
                            }
                        }
                    }
                }
                Err(e) => {
                    errors.inc();
                    tracing::warn!(error = %e, "awaited receipts not loaded");
                }
            }
        }
        if !mem.is_empty() {
            tracing::info!(messages = mem.len(), "messages awaiting receipts taken up");
        }
        Receipts {
            mem: Mutex::new(mem),
            store,
            owner: owner.to_owned(),
            errors,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Awaiting>> {
        self.mem.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This replica's name (what `Awaiting::owner` is set to).
    pub(crate) fn owner(&self) -> &str {
        &self.owner
    }

    /// Keep `a` under stanza ID `id` (before the message goes: the receipt may come first).
    pub(crate) async fn keep(&self, id: &str, a: Awaiting) {
        let ttl = Duration::from_millis(u64::try_from(a.until_ms - now_ms()).unwrap_or(0))
            + Duration::from_secs(60);
        let v = serde_json::to_string(&a);
        self.lock().insert(id.to_owned(), a);
        if let (Some(s), Ok(v)) = (&self.store, v)
            && let Err(e) = s.table(TABLE).put(id, &v, Some(ttl)).await
        {
            self.errors.inc();
            tracing::warn!(id, error = %e, "awaited receipt not stored; this process still reports it");
        }
    }

    /// Forget `id` (reported, or the message did not go).
    pub(crate) async fn forget(&self, id: &str) {
        self.lock().remove(id);
        if let Some(s) = &self.store
            && let Err(e) = s.table(TABLE).delete(id).await
        {
            self.errors.inc();
            tracing::warn!(id, error = %e, "awaited receipt not removed from the store");
        }
    }

    /// Take out the message of stanza ID `id` if `fits` it (the receipt or bounce comes
    /// from its domain, to its sender): this process's, else one another replica sent.
    pub(crate) async fn take(
        &self,
        id: &str,
        fits: impl Fn(&Awaiting) -> bool,
    ) -> Option<Awaiting> {
        let here = {
            let all = self.lock();
            all.get(id).filter(|a| fits(a)).cloned()
        };
        let a = match here {
            Some(a) => a,
            None => {
                let s = self.store.as_ref()?;
                let v = s.table(TABLE).get(id).await.ok()??;
                let a: Awaiting = serde_json::from_str(&v).ok()?;
                if !fits(&a) {
                    return None;
                }
                a
            }
        };
        self.forget(id).await;
        Some(a)
    }

    /// This replica's messages whose time ran out without a receipt, taken out. One that
    /// another replica reported meanwhile (its row gone from the store) is dropped.
    pub(crate) async fn lapsed(&self) -> Vec<Awaiting> {
        let now = now_ms();
        let due: Vec<(String, Awaiting)> = {
            let mut all = self.lock();
            let ids: Vec<String> = all
                .iter()
                .filter(|(_, a)| a.until_ms <= now)
                .map(|(k, _)| k.clone())
                .collect();
            ids.into_iter()
                .filter_map(|k| all.remove(&k).map(|a| (k, a)))
                .collect()
        };
        let mut out = Vec::new();
        for (id, a) in due {
            if let Some(s) = &self.store {
                match s.table(TABLE).get(&id).await {
                    Ok(None) => continue,
                    Ok(Some(_)) => {}
                    Err(e) => {
                        // Reported all the same: a report twice is better than none.
                        self.errors.inc();
                        tracing::warn!(id, error = %e, "awaited receipt not checked in the store");
                    }
                }
            }
            self.forget(&id).await;
            out.push(a);
        }
        out
    }
}
