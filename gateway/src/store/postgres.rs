//! The PostgreSQL backend, for replicas that share their state. One pipelined connection,
//! reopened when it breaks (a server restart) or a call takes longer than a few seconds (a
//! host that drops packets): a call made while the server is away fails, and the gateway
//! refuses what it would have had to promise (nothing is acknowledged that is not committed).
//! Work is leased with `FOR UPDATE SKIP LOCKED` on the server's clock, so two replicas never
//! take the same item, whatever their own clocks say.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls, Row};

use super::{Claim, MIGRATIONS, NewWork, Put, SentPart, StoreError, WORK_COLUMNS, Work};

/// The backend.
#[derive(Debug)]
pub struct Postgres {
    config: tokio_postgres::Config,
    /// The connection, shared by concurrent calls (tokio-postgres pipelines them); replaced
    /// when it breaks or a call takes too long.
    client: Mutex<Option<Arc<Client>>>,
}

/// Serialises migrations between replicas starting at once (any constant will do).
const MIGRATION_LOCK: i64 = 0x5350_4757;

/// The longest a connection attempt or a call may take: a database host that drops packets
/// must not hang the requests that wait for it (they are refused with 503 instead).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The server's clock, in Unix milliseconds: lease times are read and written with it, so
/// replicas whose clocks differ agree on when a lease has run out.
const NOW: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

async fn connect(config: &tokio_postgres::Config) -> Result<Client, StoreError> {
    let (client, conn) = tokio::time::timeout(CALL_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| StoreError(format!("no connection within {CALL_TIMEOUT:?}")))??;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!(error = %e, "state store connection ended");
        }
    });
    Ok(client)
}

fn work(r: &Row) -> Work {
    Work {
        id: r.get(0),
        origin: r.get(1),
        origin_tid: r.get(2),
        request: r.get(3),
        accepted_at: r.get(4),
        deadline: r.get(5),
        expires: r.get(6),
        attempts: r.get(7),
        answer: r.get(8),
        answer_sent: r.get(9),
        queued: r.get(10),
        forwarded: r.get(11),
        resumed: r.get(12),
    }
}

fn part(r: &Row) -> SentPart {
    SentPart {
        key: r.get(0),
        token: r.get(1),
        instance: r.get(2),
        request_id: r.get(3),
        answer: r.get(4),
    }
}

impl Postgres {
    /// Connect and migrate.
    pub async fn open(url: &str) -> Result<Postgres, StoreError> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError(format!("{url}: {e}")))?;
        config
            .connect_timeout(CALL_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        let mut client = connect(&config).await?;
        let t = client.transaction().await?;
        t.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        t.batch_execute("CREATE TABLE IF NOT EXISTS ssp_schema (version BIGINT NOT NULL)")
            .await?;
        let applied: i64 = t
            .query_opt("SELECT version FROM ssp_schema", &[])
            .await?
            .map_or(0, |r| r.get(0));
        for (i, m) in MIGRATIONS
            .iter()
            .enumerate()
            .skip(usize::try_from(applied).unwrap_or(0))
        {
            t.batch_execute(m).await?;
            t.execute("DELETE FROM ssp_schema", &[]).await?;
            t.execute(
                "INSERT INTO ssp_schema (version) VALUES ($1)",
                &[&(i as i64 + 1)],
            )
            .await?;
        }
        t.commit().await?;
        Ok(Postgres {
            config,
            client: Mutex::new(Some(Arc::new(client))),
        })
    }

    /// Run `f` on the connection, reopening it first if it broke. A call that fails on a
    /// closed connection, or takes longer than [`CALL_TIMEOUT`], drops it, so the next call
    /// reconnects. Every statement is one implicit transaction, committed when it returns.
    async fn with<T>(
        &self,
        f: impl AsyncFnOnce(&Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StoreError> {
        let client = {
            let mut guard = self.client.lock().await;
            match guard.as_ref().filter(|c| !c.is_closed()) {
                Some(c) => c.clone(),
                None => {
                    *guard = None;
                    let c = Arc::new(connect(&self.config).await?);
                    *guard = Some(c.clone());
                    c
                }
            }
        };
        match tokio::time::timeout(CALL_TIMEOUT, f(&client)).await {
            Ok(r) => r.map_err(StoreError::from),
            Err(_) => {
                let mut guard = self.client.lock().await;
                if guard.as_ref().is_some_and(|c| Arc::ptr_eq(c, &client)) {
                    *guard = None;
                }
                Err(StoreError(format!(
                    "no answer from the database within {CALL_TIMEOUT:?}"
                )))
            }
        }
    }

    pub(super) async fn put_work(
        &self,
        id: String,
        w: NewWork,
        owner: String,
        now: i64,
        lease: i64,
    ) -> Result<Put, StoreError> {
        self.with(async |c| {
            let inserted = c
                .query_opt(
                    &format!(
                        "INSERT INTO work (id, origin, origin_tid, request, accepted_at, deadline,
                             expires, next_at, owner, lease_until)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $5, $8, {NOW} + $9)
                         ON CONFLICT (origin, origin_tid) DO NOTHING
                         RETURNING id"
                    ),
                    &[
                        &id,
                        &w.origin,
                        &w.origin_tid,
                        &w.request,
                        &now,
                        &w.deadline,
                        &w.expires,
                        &owner,
                        &lease,
                    ],
                )
                .await?;
            if inserted.is_some() {
                return Ok(Put::New(id));
            }
            let r = c
                .query_one(
                    "SELECT id, answer, request, done_at IS NOT NULL FROM work
                     WHERE origin = $1 AND origin_tid = $2",
                    &[&w.origin, &w.origin_tid],
                )
                .await?;
            Ok(Put::Known {
                id: r.get(0),
                answer: r.get(1),
                same: r.get::<_, String>(2) == w.request,
                done: r.get(3),
            })
        })
        .await
    }

    pub(super) async fn release(&self, owner: String) -> Result<u64, StoreError> {
        self.with(async |c| {
            // The owner stays: whoever takes it next knows it was taken from a holder.
            c.execute(
                "UPDATE work SET lease_until = 0 WHERE owner = $1 AND done_at IS NULL",
                &[&owner],
            )
            .await
        })
        .await
    }

    pub(super) async fn take_over(
        &self,
        owner: String,
        lease: i64,
        limit: i64,
    ) -> Result<Vec<Work>, StoreError> {
        self.with(async |c| {
            let rows = c
                .query(
                    &format!(
                        "WITH due AS (
                             SELECT id, owner AS was FROM work
                             WHERE done_at IS NULL AND next_at <= {NOW} AND lease_until <= {NOW}
                             ORDER BY next_at LIMIT $3 FOR UPDATE SKIP LOCKED)
                         UPDATE work SET owner = $1, lease_until = {NOW} + $2
                         FROM due WHERE work.id = due.id
                         RETURNING {cols}, due.was <> ''",
                        cols = WORK_COLUMNS
                            .split(", ")
                            .map(|c| format!("work.{c}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    &[&owner, &lease, &limit],
                )
                .await?;
            Ok(rows.iter().map(work).collect())
        })
        .await
    }

    pub(super) async fn renew(
        &self,
        owner: String,
        ids: Vec<String>,
        lease: i64,
    ) -> Result<Vec<String>, StoreError> {
        self.with(async |c| {
            c.execute(
                &format!(
                    "UPDATE work SET lease_until = {NOW} + $1
                     WHERE id = ANY($2) AND owner = $3 AND done_at IS NULL"
                ),
                &[&lease, &ids, &owner],
            )
            .await?;
            // Lost: taken by another replica (work put off or ended is not lost).
            let lost = c
                .query(
                    "SELECT id FROM work WHERE id = ANY($1) AND owner NOT IN ($2, '')
                     AND done_at IS NULL",
                    &[&ids, &owner],
                )
                .await?;
            Ok(lost.iter().map(|r| r.get(0)).collect())
        })
        .await
    }

    pub(super) async fn sent_part(
        &self,
        owner: String,
        id: String,
        p: SentPart,
    ) -> Result<Option<SentPart>, StoreError> {
        self.with(async |c| {
            // Only while the work is held; the part that was there first stays.
            let held = c
                .query_opt(
                    "SELECT 1 FROM work WHERE id = $1 AND owner = $2 AND done_at IS NULL",
                    &[&id, &owner],
                )
                .await?;
            if held.is_none() {
                return Ok(None);
            }
            c.execute(
                "INSERT INTO parts (work_id, key, token, instance, request_id, answer)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (work_id, key) DO NOTHING",
                &[&id, &p.key, &p.token, &p.instance, &p.request_id, &p.answer],
            )
            .await?;
            let r = c
                .query_one(
                    "SELECT key, token, instance, request_id, answer FROM parts
                     WHERE work_id = $1 AND key = $2",
                    &[&id, &p.key],
                )
                .await?;
            Ok(Some(part(&r)))
        })
        .await
    }

    pub(super) async fn parts(&self, id: String) -> Result<Vec<SentPart>, StoreError> {
        self.with(async |c| {
            let rows = c
                .query(
                    "SELECT key, token, instance, request_id, answer FROM parts
                     WHERE work_id = $1 ORDER BY key",
                    &[&id],
                )
                .await?;
            Ok(rows.iter().map(part).collect())
        })
        .await
    }

    pub(super) async fn part_answered(
        &self,
        id: String,
        key: String,
        answer: String,
    ) -> Result<(), StoreError> {
        self.with(async |c| {
            c.execute(
                "UPDATE parts SET answer = $1 WHERE work_id = $2 AND key = $3 AND answer IS NULL",
                &[&answer, &id, &key],
            )
            .await
            .map(|_| ())
        })
        .await
    }

    pub(super) async fn unanswer_part(
        &self,
        owner: String,
        id: String,
        key: String,
    ) -> Result<(), StoreError> {
        self.with(async |c| {
            c.execute(
                "UPDATE parts SET answer = NULL WHERE work_id = $1 AND key = $2
                   AND EXISTS (SELECT 1 FROM work
                               WHERE id = $1 AND owner = $3 AND done_at IS NULL)",
                &[&id, &key, &owner],
            )
            .await
            .map(|_| ())
        })
        .await
    }

    pub(super) async fn reopen(
        &self,
        id: String,
        owner: String,
        now: i64,
        lease: i64,
        deadline: i64,
        expires: i64,
    ) -> Result<bool, StoreError> {
        self.with(async |c| {
            c.execute(
                &format!(
                    "UPDATE work SET done_at = NULL, answer = NULL, answer_sent = NULL,
                         queued = 0, forwarded_at = NULL, attempts = 0, accepted_at = $1,
                         deadline = $2, expires = $3, next_at = $1, owner = $4,
                         lease_until = {NOW} + $5
                     WHERE id = $6 AND done_at IS NOT NULL"
                ),
                &[&now, &deadline, &expires, &owner, &lease, &id],
            )
            .await
            .map(|n| n == 1)
        })
        .await
    }

    pub(super) async fn claim(
        &self,
        instance: i64,
        request_id: i64,
        answer: String,
    ) -> Result<Claim, StoreError> {
        self.with(async |c| {
            // One statement: find the part, record the answer only if it has none and its
            // work is open (the row lock makes a concurrent second answer see the first).
            let row = c
                .query_opt(
                    "WITH p AS (
                         SELECT p.work_id, p.key, w.done_at IS NULL AS open
                         FROM parts p JOIN work w ON w.id = p.work_id
                         WHERE p.instance = $1 AND p.request_id = $2),
                     u AS (
                         UPDATE parts SET answer = $3 FROM p
                         WHERE parts.work_id = p.work_id AND parts.key = p.key AND p.open
                           AND parts.answer IS NULL
                         RETURNING parts.work_id)
                     SELECT p.work_id, (SELECT COUNT(*) FROM u) FROM p",
                    &[&instance, &request_id, &answer],
                )
                .await?;
            Ok(match row {
                None => Claim::Unknown,
                Some(r) if r.get::<_, i64>(1) > 0 => Claim::Recorded(r.get(0)),
                Some(_) => Claim::Duplicate,
            })
        })
        .await
    }

    pub(super) async fn answered(
        &self,
        owner: String,
        id: String,
        answer: String,
        queued: bool,
    ) -> Result<bool, StoreError> {
        self.with(async |c| {
            c.execute(
                "UPDATE work SET answer = $1, queued = $2
                 WHERE id = $3 AND owner = $4 AND done_at IS NULL",
                &[&answer, &i64::from(queued), &id, &owner],
            )
            .await
            .map(|n| n == 1)
        })
        .await
    }

    pub(super) async fn delivered(
        &self,
        owner: String,
        id: String,
        queued: bool,
        answer: Option<String>,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.with(async |c| {
            c.execute(
                "UPDATE work SET answer_sent = $1, answer = COALESCE(answer, $2),
                     done_at = CASE WHEN $3 THEN done_at ELSE $1 END
                 WHERE id = $4 AND owner = $5 AND done_at IS NULL",
                &[&now, &answer, &queued, &id, &owner],
            )
            .await
            .map(|n| n == 1)
        })
        .await
    }

    pub(super) async fn forwarded(
        &self,
        owner: String,
        id: String,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.with(async |c| {
            c.execute(
                "UPDATE work SET forwarded_at = $1 WHERE id = $2 AND owner = $3 AND done_at IS NULL",
                &[&now, &id, &owner],
            )
            .await
            .map(|n| n == 1)
        })
        .await
    }

    pub(super) async fn done(
        &self,
        owner: String,
        id: String,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.with(async |c| {
            c.execute(
                "UPDATE work SET done_at = $1 WHERE id = $2 AND owner = $3 AND done_at IS NULL",
                &[&now, &id, &owner],
            )
            .await
            .map(|n| n == 1)
        })
        .await
    }

    pub(super) async fn reschedule(
        &self,
        owner: String,
        id: String,
        wait: i64,
        attempts: i64,
    ) -> Result<bool, StoreError> {
        self.with(async |c| {
            c.execute(
                &format!(
                    "UPDATE work SET next_at = {NOW} + $1, attempts = $2, owner = '',
                         lease_until = 0
                     WHERE id = $3 AND owner = $4 AND done_at IS NULL"
                ),
                &[&wait, &attempts, &id, &owner],
            )
            .await
            .map(|n| n == 1)
        })
        .await
    }

    pub(super) async fn purge(&self, before: i64, now: i64) -> Result<u64, StoreError> {
        self.with(async |c| {
            let r = c
                .query_one(
                    "WITH w AS (DELETE FROM work WHERE done_at < $1 RETURNING id),
                          p AS (DELETE FROM parts WHERE work_id IN (SELECT id FROM w))
                     SELECT COUNT(*) FROM w",
                    &[&before],
                )
                .await?;
            c.execute("DELETE FROM routed WHERE at < $1", &[&before])
                .await?;
            c.execute("DELETE FROM kv WHERE expires < $1", &[&now])
                .await?;
            Ok(u64::try_from(r.get::<_, i64>(0)).unwrap_or(0))
        })
        .await
    }

    pub(super) async fn route_once(
        &self,
        instance: i64,
        request_id: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.with(async |c| {
            c.execute(
                "INSERT INTO routed (instance, request_id, at) VALUES ($1, $2, $3)
                 ON CONFLICT (instance, request_id) DO NOTHING",
                &[&instance, &request_id, &now],
            )
            .await
            .map(|n| n == 1)
        })
        .await
    }

    pub(super) async fn unroute(&self, instance: i64, request_id: i64) -> Result<(), StoreError> {
        self.with(async |c| {
            c.execute(
                "DELETE FROM routed WHERE instance = $1 AND request_id = $2",
                &[&instance, &request_id],
            )
            .await
            .map(|_| ())
        })
        .await
    }

    pub(super) async fn depth(&self, now: i64) -> Result<(i64, i64), StoreError> {
        self.with(async |c| {
            let r = c
                .query_one(
                    "SELECT COUNT(*), MIN(accepted_at) FROM work WHERE done_at IS NULL",
                    &[],
                )
                .await?;
            let oldest: Option<i64> = r.get(1);
            Ok((r.get(0), oldest.map_or(0, |o| now - o)))
        })
        .await
    }

    pub(super) async fn kv_put(
        &self,
        ns: String,
        key: String,
        value: String,
        expires: Option<i64>,
    ) -> Result<(), StoreError> {
        self.with(async |c| {
            c.execute(
                "INSERT INTO kv (ns, key, value, expires) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value,
                     expires = excluded.expires",
                &[&ns, &key, &value, &expires],
            )
            .await
            .map(|_| ())
        })
        .await
    }

    pub(super) async fn kv_init(
        &self,
        ns: String,
        key: String,
        value: String,
    ) -> Result<String, StoreError> {
        self.with(async |c| {
            c.execute(
                "INSERT INTO kv (ns, key, value) VALUES ($1, $2, $3) ON CONFLICT (ns, key) DO NOTHING",
                &[&ns, &key, &value],
            )
            .await?;
            Ok(c.query_one(
                "SELECT value FROM kv WHERE ns = $1 AND key = $2",
                &[&ns, &key],
            )
            .await?
            .get(0))
        })
        .await
    }

    pub(super) async fn kv_get(
        &self,
        ns: String,
        key: String,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        self.with(async |c| {
            Ok(c.query_opt(
                "SELECT value FROM kv WHERE ns = $1 AND key = $2
                 AND (expires IS NULL OR expires > $3)",
                &[&ns, &key, &now],
            )
            .await?
            .map(|r| r.get(0)))
        })
        .await
    }

    pub(super) async fn kv_delete(&self, ns: String, key: String) -> Result<(), StoreError> {
        self.with(async |c| {
            c.execute("DELETE FROM kv WHERE ns = $1 AND key = $2", &[&ns, &key])
                .await
                .map(|_| ())
        })
        .await
    }

    pub(super) async fn kv_list(
        &self,
        ns: String,
        now: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.with(async |c| {
            Ok(c.query(
                "SELECT key, value FROM kv WHERE ns = $1 AND (expires IS NULL OR expires > $2)
                 ORDER BY key",
                &[&ns, &now],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
        })
        .await
    }
}
