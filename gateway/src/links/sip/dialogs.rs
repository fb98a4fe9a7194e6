//! The SIP dialogs the translator keeps (subscriptions either way), by Call-ID: in memory for
//! this process, and in a table of the state store so that a restarted process takes up
//! the dialogs it made. The XMPP translator keeps its subscriptions the same way, keyed by
//! the pair of bare JIDs.
//!
//! Each dialog names the replica that made it: a replica takes up only its own at start and
//! alone refreshes and numbers them; a request in a dialog of another replica (the far side
//! reached this one) is still recognised from the store, and answered, without being taken
//! over. Changes are made in place under the lock ([`Dialogs::update`]), so that a change
//! made while another is on its way to the far side is never written over by a stale copy.

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
    /// The replica that made it.
    fn owner(&self) -> &str;
    /// Whether it is only being made (not stored yet).
    fn pending(&self) -> bool {
        false
    }
}

/// Dialogs of one kind, kept in store table `table`.
#[derive(Debug)]
pub(crate) struct Dialogs<T> {
    table: &'static str,
    by_call: Mutex<HashMap<String, T>>,
    store: Option<Arc<Store>>,
}

impl<T: Dialog> Dialogs<T> {
    /// The dialogs `store` keeps in `table` for replica `owner` (none without a store).
    pub(crate) async fn load(
        table: &'static str,
        store: Option<Arc<Store>>,
        owner: &str,
    ) -> Dialogs<T> {
        let mut by_call = HashMap::new();
        if let Some(s) = &store {
            match s.table(table).list().await {
                Ok(rows) => {
                    for (k, v) in rows {
                        match serde_json::from_str::<T>(&v) {
                            Ok(d) if d.owner() == owner => {
                                by_call.insert(k, d);
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(table, call_id = %k, error = %e, "unreadable kept dialog or subscription dropped");
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(table, error = %e, "kept dialogs or subscriptions not loaded")
                }
            }
        }
        if !by_call.is_empty() {
            tracing::info!(
                table,
                dialogs = by_call.len(),
                "kept dialogs or subscriptions taken up"
            );
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

    /// How many there are that `count` counts.
    pub(crate) fn count(&self, count: impl Fn(&T) -> bool) -> usize {
        self.lock().values().filter(|d| count(d)).count()
    }

    /// Hold `d` in memory only (a dialog being made: not stored until it is).
    pub(crate) fn hold(&self, d: T) {
        self.lock().insert(d.call_id().to_owned(), d);
    }

    /// Keep `d` (in memory at once, in the store before returning; a store that fails is
    /// logged: the dialog lives on in this process).
    pub(crate) async fn keep(&self, d: T) {
        self.lock().insert(d.call_id().to_owned(), d.clone());
        self.store(&d).await;
    }

    /// Write `d` to the store only (a dialog of another replica, changed here: the replica
    /// that holds it reads the change back before it acts on its own copy).
    pub(crate) async fn put_stored(&self, d: &T) {
        self.store(d).await;
    }

    /// The store's copy of the dialog of `call_id` (`None`: no store, or not there).
    pub(crate) async fn stored(&self, call_id: &str) -> Option<T> {
        let store = self.store.as_ref()?;
        let v = store.table(self.table).get(call_id).await.ok()??;
        serde_json::from_str(&v).ok()
    }

    /// Whether there is a store (without one, this process's memory is all there is).
    pub(crate) fn stores(&self) -> bool {
        self.store.is_some()
    }

    async fn store(&self, d: &T) {
        let Some(s) = &self.store else { return };
        if d.pending() {
            return;
        }
        let key = d.call_id();
        let ttl = Duration::from_secs(d.expires_at().saturating_sub(now()) + 60);
        let stored = match serde_json::to_string(d) {
            Ok(v) => s
                .table(self.table)
                .put(key, &v, Some(ttl))
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = stored {
            tracing::warn!(table = self.table, call_id = %key, error = %e, "dialog or subscription not stored");
        }
    }

    /// Change the dialog of `call_id` in place with `change` (which says whether to store
    /// the result): the dialog as changed, or `None` if there is none (ended meanwhile).
    pub(crate) async fn update<R>(
        &self,
        call_id: &str,
        change: impl FnOnce(&mut T) -> (bool, R),
    ) -> Option<(T, R)> {
        let (d, store, r) = {
            let mut all = self.lock();
            let d = all.get_mut(call_id)?;
            let (store, r) = change(d);
            (d.clone(), store, r)
        };
        if store {
            self.store(&d).await;
        }
        Some((d, r))
    }

    /// Forget the dialog of `call_id` (memory and store).
    pub(crate) async fn forget(&self, call_id: &str) -> Option<T> {
        let gone = self.lock().remove(call_id);
        if let Some(s) = &self.store
            && let Err(e) = s.table(self.table).delete(call_id).await
        {
            tracing::warn!(table = self.table, call_id, error = %e, "dialog or subscription not removed from the store");
        }
        gone
    }

    /// Forget the dialog of `call_id` in memory now (a dialog never stored; for a guard).
    pub(crate) fn drop_held(&self, call_id: &str) {
        self.lock().remove(call_id);
    }

    /// Whether this process holds the dialog of `call_id`.
    pub(crate) fn holds(&self, call_id: &str) -> bool {
        self.lock().contains_key(call_id)
    }

    /// The dialog of `call_id`: this process's, else one the store knows (another replica's,
    /// or one ended here that the store has not forgotten), read without taking it up.
    pub(crate) async fn find(&self, call_id: &str) -> Option<T> {
        if let Some(d) = self.lock().get(call_id) {
            return Some(d.clone());
        }
        self.stored(call_id).await
    }

    /// Those that `pick` chooses.
    pub(crate) fn select(&self, pick: impl Fn(&T) -> bool) -> Vec<T> {
        self.lock().values().filter(|d| pick(d)).cloned().collect()
    }
}
