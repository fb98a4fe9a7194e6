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
//! - **kv**: state of the translators, by namespace and key, with an optional expiry, through
//!   [`Store::table`]: a translator keeps what it must not forget across a restart, and what
//!   another replica must find, in a table of its own: `sip.dialogs` and `sip.subscriptions`
//!   (a SUBSCRIBE dialog per watched presentity, refreshed before its expiry, so presence
//!   resumes after a restart without a new subscription from the core), `xmpp.subscriptions`
//!   and `xmpp.rosters` (presence subscriptions per JID pair); `gateway` holds the token key.
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
    /// The sender's transaction ID; what a resend is recognised by.
    pub origin_tid: String,
    /// The request transaction, as SSP XML.
    pub request: String,
    /// Its answer is due by then (Unix ms), unless it may wait.
    pub deadline: i64,
    /// It may be tried until then (Unix ms): its validity, for what may wait; else `deadline`.
    pub expires: i64,
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
    /// See [`NewWork::deadline`].
    pub deadline: i64,
    /// See [`NewWork::expires`].
    pub expires: i64,
    /// Attempts made so far.
    pub attempts: i64,
    /// The answer for its sender, once known.
    pub answer: Option<String>,
    /// Whether that answer was delivered.
    pub answer_sent: bool,
    /// Whether the sender was told "accepted for delivery" while the request waits to be
    /// forwarded (store-and-forward): its answer is then not the end of the work.
    pub queued: bool,
    /// Whether queued work has reached its outcome (delivered, or failed for good and
    /// reported): what is left is delivering the sender's answer.
    pub forwarded: bool,
    /// Whether it was taken from a holder that is gone (its lease ran out, or its process
    /// restarted), rather than picked up when due.
    pub resumed: bool,
}

/// What keeping a request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Put {
    /// Kept: a new request.
    New(String),
    /// A request with this origin and transaction ID is known: still in hand, or answered
    /// (with the answer, to send again).
    Known {
        /// Its key.
        id: String,
        /// Its answer, if it has one.
        answer: Option<String>,
        /// Whether it is the same request (a resend), not another one that reuses the
        /// transaction ID (a sender that restarted and counts its IDs from the start again).
        same: bool,
        /// Whether it is done (a tombstone).
        done: bool,
    },
}

/// One part of a request as it was sent: its key (destination and IDs), the transaction ID it
/// went with (so that it goes again with the same one, which the receiver recognises), and
/// its answer once known (so that it is not sent again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentPart {
    /// Destination and route-by IDs of the part.
    pub key: String,
    /// The token.
    pub token: String,
    /// The issuing process's instance.
    pub instance: i64,
    /// The request ID in the token.
    pub request_id: i64,
    /// Its answer, as SSP XML, once known.
    pub answer: Option<String>,
}

/// What became of an answer no request in this process waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// It answers a part of kept work (id): recorded there, for whoever handles that work.
    Recorded(String),
    /// That part was already answered, or its work is done: a second answer.
    Duplicate,
    /// No kept work sent that token.
    Unknown,
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
    /// A SQLite file, and whether commits wait for the disk (`synchronous = FULL`) or only
    /// for the operating system (`NORMAL`: survives a crash of the process, not of the host).
    Sqlite(std::path::PathBuf, Durability),
    /// A PostgreSQL connection string (`postgres://user@host:port/db`).
    Postgres(String),
}

/// How far a SQLite commit goes before it counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// To the disk (fsync on every commit; a commit survives power loss).
    #[default]
    Disk,
    /// To the operating system (survives the process being killed, not the host failing).
    Os,
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
        expires BIGINT NOT NULL,
        next_at BIGINT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        owner TEXT NOT NULL DEFAULT '',
        lease_until BIGINT NOT NULL DEFAULT 0,
        answer TEXT,
        answer_sent BIGINT,
        queued BIGINT NOT NULL DEFAULT 0,
        forwarded_at BIGINT,
        done_at BIGINT
    );
    CREATE UNIQUE INDEX work_origin ON work (origin, origin_tid);
    CREATE INDEX work_due ON work (done_at, next_at);
    CREATE INDEX work_done ON work (done_at);
    CREATE TABLE parts (
        work_id TEXT NOT NULL,
        key TEXT NOT NULL,
        token TEXT NOT NULL,
        instance BIGINT NOT NULL,
        request_id BIGINT NOT NULL,
        answer TEXT,
        PRIMARY KEY (work_id, key)
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

/// The columns of `work` a [`Work`] is read from, in its fields' order (`resumed` comes from
/// the lease it was taken from, see the backends).
const WORK_COLUMNS: &str = "id, origin, origin_tid, request, accepted_at, deadline, expires, \
     attempts, answer, answer_sent IS NOT NULL, queued <> 0, forwarded_at IS NOT NULL";

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
            Location::Sqlite(path, durability) => Ok(Store::Sqlite(
                sqlite::Sqlite::open(path, *durability).await?,
            )),
            Location::Postgres(url) => Ok(Store::Postgres(Box::new(
                postgres::Postgres::open(url).await?,
            ))),
        }
    }

    /// Which engine, for logs and metrics.
    pub fn engine(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgresql",
        }
    }

    /// Keep a request before it is acknowledged, leased to `owner`. A request sent again
    /// (same origin and transaction ID) is [`Put::Known`].
    pub async fn put_work(
        &self,
        w: NewWork,
        owner: &str,
        lease: Duration,
    ) -> Result<Put, StoreError> {
        dispatch!(self, s => s.put_work(new_id(), w, owner.to_owned(), now_ms(), ms(lease)).await)
    }

    /// Give up every lease `owner` holds: at start, what a predecessor of the same name held
    /// (it is gone) becomes free at once instead of when its leases run out.
    pub async fn release(&self, owner: &str) -> Result<u64, StoreError> {
        dispatch!(self, s => s.release(owner.to_owned()).await)
    }

    /// Take work that is due and that nobody holds (never leased, put off, released, or its
    /// lease ran out: its holder died), at most `limit` items, oldest first, leased to
    /// `owner`. Lease times are the database's clock (PostgreSQL: the server's), so replicas
    /// whose clocks differ agree on when a lease has run out.
    pub async fn take_over(
        &self,
        owner: &str,
        lease: Duration,
        limit: i64,
    ) -> Result<Vec<Work>, StoreError> {
        dispatch!(self, s => s.take_over(owner.to_owned(), ms(lease), limit).await)
    }

    /// Extend the lease on `ids` (held by `owner`). Returns those another owner holds now
    /// (taken over after this one's lease ran out): their workers must stop. Work put off
    /// or ended meanwhile is not among them.
    pub async fn renew(
        &self,
        owner: &str,
        ids: Vec<String>,
        lease: Duration,
    ) -> Result<Vec<String>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        dispatch!(self, s => s.renew(owner.to_owned(), ids, ms(lease)).await)
    }

    /// Record the token a part of work `id` is sent with (before it is sent), if `owner`
    /// still holds the work. The part as stored (a part recorded before keeps its first
    /// token); `None` when `owner` lost the work.
    pub async fn sent_part(
        &self,
        owner: &str,
        id: &str,
        p: SentPart,
    ) -> Result<Option<SentPart>, StoreError> {
        dispatch!(self, s => s.sent_part(owner.to_owned(), id.to_owned(), p).await)
    }

    /// The parts of work `id` sent so far.
    pub async fn parts(&self, id: &str) -> Result<Vec<SentPart>, StoreError> {
        dispatch!(self, s => s.parts(id.to_owned()).await)
    }

    /// Record the answer of part `key` of work `id` (the first one stays).
    pub async fn part_answered(
        &self,
        id: &str,
        key: &str,
        answer: String,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.part_answered(id.to_owned(), key.to_owned(), answer).await)
    }

    /// Forget the answer recorded for part `key` of work `id` (a "try again later" from its
    /// destination, which came while nobody waited for it): the part is sent again, with
    /// the token it first went with. Only while `owner` holds the work.
    pub async fn unanswer_part(&self, owner: &str, id: &str, key: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.unanswer_part(owner.to_owned(), id.to_owned(), key.to_owned()).await)
    }

    /// Take up again, for `owner`, work `id` that ended with an answer its sender was told
    /// to try again later on (503) and that the sender sent again: accepted now, due at
    /// `deadline`, tried until `expires`, its parts (their tokens) kept. False: it has not
    /// ended (it is in someone's hands) or is gone.
    pub async fn reopen(
        &self,
        id: &str,
        owner: &str,
        lease: Duration,
        deadline: i64,
        expires: i64,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.reopen(id.to_owned(), owner.to_owned(), now_ms(), ms(lease), deadline, expires).await)
    }

    /// An answer to the token (`instance`, `request_id`) that nobody here waited for:
    /// recorded on the part of kept work that was sent with it, if any.
    pub async fn claim(
        &self,
        instance: i64,
        request_id: i64,
        answer: String,
    ) -> Result<Claim, StoreError> {
        dispatch!(self, s => s.claim(instance, request_id, answer).await)
    }

    /// Record the answer for the sender of work `id` (before it is delivered). `queued`: it
    /// says "accepted for delivery", and the work goes on after it. False: `owner` no longer
    /// holds the work.
    pub async fn answered(
        &self,
        owner: &str,
        id: &str,
        answer: String,
        queued: bool,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.answered(owner.to_owned(), id.to_owned(), answer, queued).await)
    }

    /// The answer of work `id` was delivered (`answer`: recorded now if it was not before);
    /// the work is done unless it is `queued`. False: `owner` no longer holds the work.
    pub async fn delivered(
        &self,
        owner: &str,
        id: &str,
        queued: bool,
        answer: Option<String>,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.delivered(owner.to_owned(), id.to_owned(), queued, answer, now_ms()).await)
    }

    /// Queued work `id` has reached its outcome. False: `owner` no longer holds the work.
    pub async fn forwarded(&self, owner: &str, id: &str) -> Result<bool, StoreError> {
        dispatch!(self, s => s.forwarded(owner.to_owned(), id.to_owned(), now_ms()).await)
    }

    /// Work `id` is done (kept as a tombstone until purged, so a resend is recognised).
    /// False: `owner` no longer holds the work.
    pub async fn done(&self, owner: &str, id: &str) -> Result<bool, StoreError> {
        dispatch!(self, s => s.done(owner.to_owned(), id.to_owned(), now_ms()).await)
    }

    /// Work `id` waits: its next attempt `wait` from now (the database's clock), `attempts`
    /// made; its lease is given up, so whichever replica is free then takes it. False:
    /// `owner` no longer holds the work.
    pub async fn reschedule(
        &self,
        owner: &str,
        id: &str,
        wait: Duration,
        attempts: i64,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.reschedule(owner.to_owned(), id.to_owned(), ms(wait), attempts).await)
    }

    /// Forget work done before `before` (and its parts), routed records older than that, and
    /// expired kv entries. Returns how much work was forgotten.
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

    /// How much work is open, and the age (ms) of the oldest.
    pub async fn depth(&self) -> Result<(i64, i64), StoreError> {
        let now = now_ms();
        dispatch!(self, s => s.depth(now).await)
    }

    /// The key-value table `ns` (see the module's documentation for the names in use).
    pub fn table(&self, ns: &'static str) -> Table<'_> {
        Table { store: self, ns }
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

    /// Set `key` in `ns` unless it is set; the value it holds afterwards (so replicas racing
    /// to create a shared secret all end up with the one that won).
    pub async fn kv_init(&self, ns: &str, key: &str, value: &str) -> Result<String, StoreError> {
        dispatch!(self, s => s.kv_init(ns.to_owned(), key.to_owned(), value.to_owned()).await)
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

/// One namespace of the key-value state: values (the caller's own encoding, JSON or SSP XML)
/// by key, each optionally expiring. Every write is committed when it returns.
#[derive(Debug, Clone, Copy)]
pub struct Table<'a> {
    store: &'a Store,
    ns: &'static str,
}

impl Table<'_> {
    /// Set `key` to `value`, forgotten after `ttl` if given.
    pub async fn put(
        &self,
        key: &str,
        value: &str,
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        let expires = ttl.map(|t| now_ms() + ms(t));
        self.store.kv_put(self.ns, key, value, expires).await
    }

    /// The value of `key`, unless absent or expired.
    pub async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.store.kv_get(self.ns, key).await
    }

    /// Forget `key`.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.store.kv_delete(self.ns, key).await
    }

    /// Every live (key, value), by key (what a translator reloads at start).
    pub async fn list(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.store.kv_list(self.ns).await
    }
}
