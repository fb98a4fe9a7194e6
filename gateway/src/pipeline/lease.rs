//! Leases: the state store and the work this process holds of it. Work in hand has its
//! lease renewed; work that is not is anybody's once due.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::store::Store;

/// The state store, and the work this process holds.
pub(crate) struct Works {
    store: Option<Arc<Store>>,
    owner: String,
    in_hand: Arc<Mutex<HashSet<String>>>,
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

    /// The work this process holds now.
    pub(crate) fn held(&self) -> Vec<String> {
        self.in_hand
            .lock()
            .map(|h| h.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether work `id` is in hand here.
    pub(crate) fn holds(&self, id: &str) -> bool {
        self.in_hand.lock().map(|h| h.contains(id)).unwrap_or(false)
    }

    /// Hold work `id` until the returned guard is dropped.
    pub(crate) fn hold(&self, id: &str) -> Hand {
        if let Ok(mut h) = self.in_hand.lock() {
            h.insert(id.to_owned());
        }
        Hand {
            in_hand: self.in_hand.clone(),
            id: id.to_owned(),
        }
    }
}

/// Work in this process's hands while it lives.
pub(crate) struct Hand {
    in_hand: Arc<Mutex<HashSet<String>>>,
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
        drop(b);
        assert!(w.held().is_empty());
    }
}
