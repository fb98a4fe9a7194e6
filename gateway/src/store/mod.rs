//! Durable state behind one interface, on database engines: SQLite in a file (the embedded
//! default, no setup) or PostgreSQL (shared by the replicas of one gateway). Both hold the same
//! schema, migrated in numbered steps at start, with the same meaning.
//!
//! What is kept:
//!
//! - **work**: every request the gateway acknowledged to an asynchronous sender, written
//!   (committed) before the acknowledgement, until its answer has been delivered, and then
//!   for a while as a tombstone, so that the same request sent again (a peer resending after
//!   a crash) is recognised and not delivered twice. A replica *leases* the work it handles;
//!   when it dies, another takes over what its lease no longer covers. Store-and-forward
//!   items wait here, with their next attempt, until their validity ends.
//! - **parts**: the transaction ID each part of a request was sent with, so a request resumed
//!   after a crash is sent again with the same one (the receiver recognises it).
//! - **routed**: answers routed by their token alone (a request of a process that is gone):
//!   routed once, across restarts and replicas.
//! - **kv**: state of the translators (dialogs, subscriptions, rosters), by namespace and
//!   key, with an optional expiry.
//!
//! Time is Unix milliseconds throughout; every write that promises durability is committed
//! before the call returns (SQLite batches concurrent writes into one commit).

mod postgres;
mod sqlite;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Why the store could not do something.
#[derive(Debug, Clone, thiserror::Error)]
#[error("state store: {0}")]
pub struct StoreError(pub String);

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(e.to_string())
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError(e.to_string())
    }
}

/// A request to keep.
#[derive(Debug, Clone)]
pub struct NewWork {
    /// Who sent it: "" for our core, else the peer's domain.
    pub origin: String,
    /// The sender's transaction ID; for a peer, what a resend is recognised by.
    pub origin_tid: String,
    /// The request transaction, as SSP XML.
    pub request: String,
    /// Its answer is due by then (Unix ms).
    pub deadline: i64,
}

/// A kept request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Work {
    /// Its key.
    pub id: String,
    /// See [`NewWork::origin`].
    pub origin: String,
    /// See [`NewWork::origin_tid`].
    pub origin_tid: String,
    /// See [`NewWork::request`].
    pub request: String,
    /// When it was accepted (Unix ms).
    pub accepted_at: i64,
    /// Its answer is due by then (Unix ms).
    pub deadline: i64,
    /// Attempts made so far (store-and-forward).
    pub attempts: i64,
    /// Its answer, once known.
    pub answer: Option<String>,
}

/// What keeping a request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Put {
    /// Kept: a new request.
    New(String),
    /// The same request (origin and transaction ID) is known: still in hand, or answered
    /// (with the answer, to send again).
    Known {
        /// Its key.
        id: String,
        /// Its answer, if it has one.
        answer: Option<String>,
    },
}

/// The transaction ID a part of a request was sent with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentPart {
    /// The part's index.
    pub part: i64,
    /// The token.
    pub token: String,
    /// The issuing process's instance.
    pub instance: i64,
    /// The request ID in the token.
    pub request_id: i64,
}

/// The store: one backend.
#[derive(Debug)]
pub enum Store {
    /// SQLite in a file.
    Sqlite(sqlite::Sqlite),
    /// PostgreSQL.
    Postgres(Box<postgres::Postgres>),
}

/// Where the state lives (`[store] url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file.
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL connection string (`postgres://user@host:port/db`).
    Postgres(String),
}

/// The schema, in numbered steps (the number of steps applied is stored in `ssp_schema`).
/// Written in the SQL both engines take.
const MIGRATIONS: &[&str] = &["CREATE TABLE work (
        id TEXT PRIMARY KEY,
        origin TEXT NOT NULL,
        origin_tid TEXT NOT NULL,
        request TEXT NOT NULL,
        accepted_at BIGINT NOT NULL,
        deadline BIGINT NOT NULL,
        next_at BIGINT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        owner TEXT NOT NULL DEFAULT '',
        lease_until BIGINT NOT NULL DEFAULT 0,
        answer TEXT,
        done_at BIGINT
    );
    CREATE UNIQUE INDEX work_origin ON work (origin, origin_tid);
    CREATE INDEX work_open ON work (done_at, lease_until);
    CREATE TABLE parts (
        work_id TEXT NOT NULL,
        part BIGINT NOT NULL,
        token TEXT NOT NULL,
        instance BIGINT NOT NULL,
        request_id BIGINT NOT NULL,
        PRIMARY KEY (work_id, part)
    );
    CREATE INDEX parts_token ON parts (instance, request_id);
    CREATE TABLE routed (
        instance BIGINT NOT NULL,
        request_id BIGINT NOT NULL,
        at BIGINT NOT NULL,
        PRIMARY KEY (instance, request_id)
    );
    CREATE TABLE kv (
        ns TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        expires BIGINT,
        PRIMARY KEY (ns, key)
    );"];

/// A fresh work key: 128 random bits.
fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Sqlite($s) => $e,
            Store::Postgres($s) => $e,
        }
    };
}

impl Store {
    /// Open (creating and migrating as needed).
    pub async fn open(at: &Location) -> Result<Store, StoreError> {
        match at {
            Location::Sqlite(path) => Ok(Store::Sqlite(sqlite::Sqlite::open(path).await?)),
            Location::Postgres(url) => Ok(Store::Postgres(Box::new(
                postgres::Postgres::open(url).await?,
            ))),
        }
    }

    /// Keep a request before it is acknowledged. A request a peer sends again (same origin
    /// and transaction ID) is [`Put::Known`].
    pub async fn put_work(
        &self,
        w: NewWork,
        owner: &str,
        lease: Duration,
    ) -> Result<Put, StoreError> {
        let id = new_id();
        let now = now_ms();
        dispatch!(self, s => s.put_work(id, w, owner.to_owned(), now, now + ms(lease)).await)
    }

    /// Take the work that is not done and that nobody else holds: its lease ran out, or it
    /// was `owner`'s (a restart), at most `limit` items, leased to `owner`.
    pub async fn take_over(
        &self,
        owner: &str,
        lease: Duration,
        limit: i64,
    ) -> Result<Vec<Work>, StoreError> {
        let now = now_ms();
        dispatch!(self, s => s.take_over(owner.to_owned(), now, now + ms(lease), limit).await)
    }

    /// Extend the lease on `ids` (held by `owner`).
    pub async fn renew(
        &self,
        owner: &str,
        ids: Vec<String>,
        lease: Duration,
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let until = now_ms() + ms(lease);
        dispatch!(self, s => s.renew(owner.to_owned(), ids, until).await)
    }

    /// Record the token part `part` of work `id` is sent with (before it is sent).
    pub async fn sent_part(&self, id: &str, p: SentPart) -> Result<(), StoreError> {
        dispatch!(self, s => s.sent_part(id.to_owned(), p).await)
    }

    /// The tokens the parts of work `id` were sent with.
    pub async fn parts(&self, id: &str) -> Result<Vec<SentPart>, StoreError> {
        dispatch!(self, s => s.parts(id.to_owned()).await)
    }

    /// Record the answer of work `id` (before it is delivered).
    pub async fn answered(&self, id: &str, answer: String) -> Result<(), StoreError> {
        dispatch!(self, s => s.answered(id.to_owned(), answer).await)
    }

    /// Work `id` is done: its answer was delivered (kept as a tombstone until purged).
    pub async fn done(&self, id: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.done(id.to_owned(), now_ms()).await)
    }

    /// Work `id` waits: its next attempt at `next_at`, `attempts` made.
    pub async fn reschedule(
        &self,
        id: &str,
        next_at: i64,
        attempts: i64,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.reschedule(id.to_owned(), next_at, attempts).await)
    }

    /// Forget tombstones done before `before`, routed records and expired kv entries.
    pub async fn purge(&self, before: i64) -> Result<u64, StoreError> {
        dispatch!(self, s => s.purge(before, now_ms()).await)
    }

    /// Whether this is the first time the answer to (`instance`, `request_id`) is routed by
    /// its token.
    pub async fn route_once(&self, instance: i64, request_id: i64) -> Result<bool, StoreError> {
        dispatch!(self, s => s.route_once(instance, request_id, now_ms()).await)
    }

    /// Undo [`Store::route_once`] (the delivery failed; a copy may still get through).
    pub async fn unroute(&self, instance: i64, request_id: i64) -> Result<(), StoreError> {
        dispatch!(self, s => s.unroute(instance, request_id).await)
    }

    /// How much work waits, and the age (ms) of the oldest.
    pub async fn depth(&self) -> Result<(i64, i64), StoreError> {
        let now = now_ms();
        dispatch!(self, s => s.depth(now).await)
    }

    /// Set `key` in namespace `ns` (expiring at `expires`, Unix ms, if given).
    pub async fn kv_put(
        &self,
        ns: &str,
        key: &str,
        value: &str,
        expires: Option<i64>,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.kv_put(ns.to_owned(), key.to_owned(), value.to_owned(), expires).await)
    }

    /// The value of `key` in `ns`, unless expired.
    pub async fn kv_get(&self, ns: &str, key: &str) -> Result<Option<String>, StoreError> {
        dispatch!(self, s => s.kv_get(ns.to_owned(), key.to_owned(), now_ms()).await)
    }

    /// Remove `key` from `ns`.
    pub async fn kv_delete(&self, ns: &str, key: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.kv_delete(ns.to_owned(), key.to_owned()).await)
    }

    /// Every live (key, value) of `ns`.
    pub async fn kv_list(&self, ns: &str) -> Result<Vec<(String, String)>, StoreError> {
        dispatch!(self, s => s.kv_list(ns.to_owned(), now_ms()).await)
    }
}
