//! Leases: the state store and the work this process holds of it. Work in hand has its
//! lease renewed; work that is not is anybody's once due.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::store::Store;

/// The state store, and the work this process holds.
pub(crate) struct Works {
    store: Option<Arc<Store>>,
    owner: String,
    in_hand: Arc<Mutex<HashMap<String, bool>>>,
}

impl std::fmt::Debug for Works {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Works")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl Works {
    /// Work kept in `store` (none: requests are carried in memory only, as in unit tests),
    /// leased under the name `owner` (one per replica, the same across its restarts).
    pub(crate) fn new(store: Option<Arc<Store>>, owner: String) -> Works {
        Works {
            store,
            owner,
            in_hand: Arc::default(),
        }
    }

    /// The store, if there is one.
    pub(crate) fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// The lease owner's name.
    pub(crate) fn owner(&self) -> &str {
        &self.owner
    }

    /// The work this process holds now (its leases to renew).
    pub(crate) fn held(&self) -> Vec<String> {
        self.in_hand
            .lock()
            .map(|h| {
                h.iter()
                    .filter(|(_, lost)| !**lost)
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether work `id` is in hand here (lost or not: its worker has not ended yet).
    pub(crate) fn holds(&self, id: &str) -> bool {
        self.in_hand
            .lock()
            .map(|h| h.contains_key(id))
            .unwrap_or(false)
    }

    /// The leases of `ids` ran out and others may carry them now: their workers stop at
    /// their next step.
    pub(crate) fn lose(&self, ids: &[String]) {
        if let Ok(mut h) = self.in_hand.lock() {
            for id in ids {
                if let Some(lost) = h.get_mut(id) {
                    *lost = true;
                }
            }
        }
    }

    /// Whether the lease on work `id` was lost.
    pub(crate) fn is_lost(&self, id: &str) -> bool {
        self.in_hand
            .lock()
            .map(|h| h.get(id).copied().unwrap_or(false))
            .unwrap_or(false)
    }

    /// Hold work `id` until the returned guard is dropped.
    pub(crate) fn hold(&self, id: &str) -> Hand {
        if let Ok(mut h) = self.in_hand.lock() {
            h.insert(id.to_owned(), false);
        }
        Hand {
            in_hand: self.in_hand.clone(),
            id: id.to_owned(),
        }
    }
}

/// Work in this process's hands while it lives.
pub(crate) struct Hand {
    in_hand: Arc<Mutex<HashMap<String, bool>>>,
    id: String,
}

impl Drop for Hand {
    fn drop(&mut self) {
        if let Ok(mut h) = self.in_hand.lock() {
            h.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_is_held_while_its_guard_lives() {
        let w = Works::new(None, "opx.example/0".into());
        let a = w.hold("a");
        let b = w.hold("b");
        let mut held = w.held();
        held.sort();
        assert_eq!(held, vec!["a", "b"]);
        drop(a);
        assert_eq!(w.held(), vec!["b"]);
        // A lost lease is not renewed, and its worker sees it.
        w.lose(&["b".to_owned()]);
        assert!(w.held().is_empty() && w.holds("b") && w.is_lost("b"));
        drop(b);
        assert!(!w.holds("b") && !w.is_lost("b"));
    }
}
