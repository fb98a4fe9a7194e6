//! Requests waiting for an asynchronous answer, keyed by the issuing process and request ID
//! inside their token. The process is part of the key because work resumed after a restart,
//! or taken over from a replica that died, is sent again with the token it first went with,
//! and its answer must find the new waiter.
//!
//! An entry lives from the moment a request is sent until its answer arrives or its deadline
//! passes; the waiting task owns the deadline, so an entry whose waiter gave up is removed by
//! that waiter and a late answer finds nothing here (the kept work's store decides what it
//! is, see `pipeline::answer`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::oneshot;

use crate::ssp::Transaction;

/// What an entry is found by: the issuing process's instance and the request ID.
pub(crate) type Key = (u32, u64);

/// How the table hashes: foldhash, seeded per process. Keys are inserted only for work this
/// gateway sends: its own request IDs, or those a replica issued for work resumed from the
/// store. An answer's key comes out of a sealed token and only looks one up. No peer chooses
/// a key, so SipHash's resistance to crafted keys buys nothing (it was about 400
/// instructions of every relayed request, registered and removed).
type Hasher = foldhash::fast::RandomState;

/// The table, in shards by request ID: every relayed request registers and removes an
/// entry, on whichever thread runs it, and one lock for all would be taken by every thread
/// for every request (consecutive request IDs fall in different shards).
#[derive(Debug)]
pub(crate) struct Pending {
    shards: [Shard; SHARDS],
    next: AtomicU64,
}

/// Shards of the table: more than the threads that contend for it.
const SHARDS: usize = 16;

/// One shard, on a cache line of its own (two shards on one line would bounce it between
/// the threads that use them).
#[derive(Debug, Default)]
#[repr(align(64))]
struct Shard(Map);

/// Boxed answers: the channel is allocated for every request that registers, and a
/// `Transaction` inline would make it a large allocation (most are never used).
type Map = Mutex<HashMap<Key, oneshot::Sender<Box<Transaction>>, Hasher>>;

impl Default for Pending {
    fn default() -> Self {
        Pending::new()
    }
}

impl Pending {
    /// An empty table. IDs start at a random point so replicas rarely share them.
    pub(crate) fn new() -> Pending {
        let start = rand::random::<u64>() >> 8;
        Pending {
            shards: Default::default(),
            next: AtomicU64::new(start),
        }
    }

    /// The shard of `id`.
    fn shard(&self, id: Key) -> &Map {
        &self.shards[(id.1 % SHARDS as u64) as usize].0
    }

    /// A fresh request ID.
    pub(crate) fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Register `id`: the receiver gets the answer, and the entry goes when the
    /// registration is dropped, however the wait ends (answered, timed out, or the waiting
    /// handler dropped because its client went away).
    pub(crate) fn register(
        &self,
        id: Key,
    ) -> (Registration<'_>, oneshot::Receiver<Box<Transaction>>) {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut m) = self.shard(id).lock() {
            m.insert(id, tx);
        }
        (Registration { pending: self, id }, rx)
    }

    /// Deliver the answer for `id`; false if nobody waits for it (any more).
    pub(crate) fn complete(&self, id: Key, answer: Transaction) -> bool {
        let tx = self.shard(id).lock().ok().and_then(|mut m| m.remove(&id));
        match tx {
            Some(tx) => tx.send(Box::new(answer)).is_ok(),
            None => false,
        }
    }

    /// Forget `id` (the waiter gave up).
    fn remove(&self, id: Key) {
        if let Ok(mut m) = self.shard(id).lock() {
            m.remove(&id);
        }
    }

    /// Entries waiting now.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.0.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

/// An entry of the table, removed on drop.
#[derive(Debug)]
pub(crate) struct Registration<'a> {
    pending: &'a Pending,
    id: Key,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.pending.remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssp::{Primitive, Status};

    #[tokio::test]
    async fn entries_go_when_their_wait_ends_however_it_ends() {
        let p = Pending::new();
        // Answered.
        let id = (1, p.next_id());
        let (reg, rx) = p.register(id);
        let t = Transaction::response("t", Primitive::Status(Status::with(200, "ok")));
        assert!(p.complete(id, t.clone()));
        assert_eq!(rx.await.ok().map(|t| t.transaction_id), Some("t".into()));
        drop(reg);
        assert_eq!(p.len(), 0);
        // The waiting future dropped mid-wait (its HTTP client went away): no entry left.
        let id = (1, p.next_id());
        let wait = async {
            let (_reg, rx) = p.register(id);
            let _ = rx.await;
        };
        let mut wait = Box::pin(wait);
        std::future::poll_fn(|cx| {
            assert!(wait.as_mut().poll(cx).is_pending(), "waits");
            std::task::Poll::Ready(())
        })
        .await;
        assert_eq!(p.len(), 1);
        drop(wait);
        assert_eq!(p.len(), 0);
        assert!(!p.complete(id, t.clone()), "a late answer finds nothing");
        // Entries in every shard (consecutive IDs, more than the shards) are counted, found
        // and removed.
        let ids: Vec<Key> = (0..3 * SHARDS).map(|_| (1, p.next_id())).collect();
        let regs: Vec<_> = ids.iter().map(|id| p.register(*id)).collect();
        assert_eq!(p.len(), ids.len());
        for (id, (_, rx)) in ids.iter().zip(regs) {
            assert!(p.complete(*id, t.clone()));
            assert!(rx.await.is_ok());
        }
        assert_eq!(p.len(), 0);
    }
}
