//! The SIP dialogs the translator keeps (subscriptions either way), by Call-ID: in memory for
//! this process, and in a table of the state store so that a restarted process, or another
//! replica the far side reaches, takes them up again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::store::Store;

/// Unix seconds now.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a kept dialog says of itself.
pub(crate) trait Dialog: Clone + Serialize + DeserializeOwned {
    /// Its Call-ID (the key).
    fn call_id(&self) -> &str;
    /// When it runs out (Unix seconds).
    fn expires_at(&self) -> u64;
}

/// Dialogs of one kind, kept in store table `table`.
#[derive(Debug)]
pub(crate) struct Dialogs<T> {
    table: &'static str,
    by_call: Mutex<HashMap<String, T>>,
    store: Option<Arc<Store>>,
}

impl<T: Dialog> Dialogs<T> {
    /// The dialogs `store` keeps in `table` (none without a store).
    pub(crate) async fn load(table: &'static str, store: Option<Arc<Store>>) -> Dialogs<T> {
        let mut by_call = HashMap::new();
        if let Some(s) = &store {
            match s.table(table).list().await {
                Ok(rows) => {
                    for (k, v) in rows {
                        match serde_json::from_str::<T>(&v) {
                            Ok(d) => {
                                by_call.insert(k, d);
                            }
                            Err(e) => {
                                tracing::warn!(table, call_id = %k, error = %e, "unreadable SIP dialog dropped");
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(table, error = %e, "SIP dialogs not loaded"),
            }
        }
        if !by_call.is_empty() {
            tracing::info!(table, dialogs = by_call.len(), "SIP dialogs taken up");
        }
        Dialogs {
            table,
            by_call: Mutex::new(by_call),
            store,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<String, T>> {
        self.by_call.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many there are.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Keep `d` (in memory at once, in the store before returning; a store that fails is
    /// logged: the dialog lives on in this process).
    pub(crate) async fn keep(&self, d: T) {
        let key = d.call_id().to_owned();
        let ttl = Duration::from_secs(d.expires_at().saturating_sub(now()) + 60);
        let value = serde_json::to_string(&d);
        self.lock().insert(key.clone(), d);
        if let Some(s) = &self.store {
            let stored = match value {
                Ok(v) => s
                    .table(self.table)
                    .put(&key, &v, Some(ttl))
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = stored {
                tracing::warn!(table = self.table, call_id = %key, error = %e, "SIP dialog not stored");
            }
        }
    }

    /// Forget the dialog of `call_id`.
    pub(crate) async fn forget(&self, call_id: &str) -> Option<T> {
        let gone = self.lock().remove(call_id);
        if let Some(s) = &self.store
            && let Err(e) = s.table(self.table).delete(call_id).await
        {
            tracing::warn!(table = self.table, call_id, error = %e, "SIP dialog not removed from the store");
        }
        gone
    }

    /// The dialog of `call_id`: this process's, else one the store knows (made before a
    /// restart, or by another replica).
    pub(crate) async fn find(&self, call_id: &str) -> Option<T> {
        if let Some(d) = self.lock().get(call_id) {
            return Some(d.clone());
        }
        let store = self.store.as_ref()?;
        let v = store.table(self.table).get(call_id).await.ok()??;
        let d: T = serde_json::from_str(&v).ok()?;
        self.lock().insert(call_id.to_owned(), d.clone());
        Some(d)
    }

    /// Those that `pick` chooses.
    pub(crate) fn select(&self, pick: impl Fn(&T) -> bool) -> Vec<T> {
        self.lock().values().filter(|d| pick(d)).cloned().collect()
    }
}
