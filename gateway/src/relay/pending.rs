//! Requests waiting for an asynchronous answer, keyed by the request ID inside their token.
//!
//! An entry lives from the moment a request is sent until its answer arrives or its deadline
//! passes; the waiting task owns the deadline, so an entry whose waiter gave up is removed by
//! that waiter and a late answer finds nothing (and is counted as an orphan).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::oneshot;

use crate::ssp::Transaction;

/// The table.
#[derive(Debug)]
pub struct Pending {
    map: Mutex<HashMap<u64, oneshot::Sender<Transaction>>>,
    next: AtomicU64,
}

impl Default for Pending {
    fn default() -> Self {
        Pending::new()
    }
}

impl Pending {
    /// An empty table. IDs start at a random point so replicas rarely share them.
    pub fn new() -> Pending {
        let start = rand::random::<u64>() >> 8;
        Pending {
            map: Mutex::new(HashMap::new()),
            next: AtomicU64::new(start),
        }
    }

    /// A fresh request ID.
    pub fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Register `id`; the receiver gets the answer.
    pub fn insert(&self, id: u64) -> oneshot::Receiver<Transaction> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut m) = self.map.lock() {
            m.insert(id, tx);
        }
        rx
    }

    /// Deliver the answer for `id`; false if nobody waits for it (any more).
    pub fn complete(&self, id: u64, answer: Transaction) -> bool {
        let tx = self.map.lock().ok().and_then(|mut m| m.remove(&id));
        match tx {
            Some(tx) => tx.send(answer).is_ok(),
            None => false,
        }
    }

    /// Forget `id` (the waiter gave up).
    pub fn remove(&self, id: u64) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(&id);
        }
    }

    /// Entries waiting now.
    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
