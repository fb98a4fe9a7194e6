//! The PostgreSQL backend, for replicas that share their state. One connection, reopened
//! when it breaks (a server restart): a call made while the server is away fails, and the
//! gateway refuses what it would have had to promise (nothing is acknowledged that is not
//! committed). Work is leased with `FOR UPDATE SKIP LOCKED`, so two replicas never take the
//! same item.

use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls, Row};

use super::{MIGRATIONS, NewWork, Put, SentPart, StoreError, Work};

/// The backend.
#[derive(Debug)]
pub struct Postgres {
    url: String,
    client: Mutex<Option<Client>>,
}

/// Serialises migrations between replicas starting at once (any constant will do).
const MIGRATION_LOCK: i64 = 0x5350_4757;

async fn connect(url: &str) -> Result<Client, StoreError> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
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
        attempts: r.get(6),
        answer: r.get(7),
    }
}

impl Postgres {
    /// Connect and migrate.
    pub async fn open(url: &str) -> Result<Postgres, StoreError> {
        let mut client = connect(url).await?;
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
            url: url.to_owned(),
            client: Mutex::new(Some(client)),
        })
    }

    /// Run `f` on the connection, reopening it first if it broke; a failure that ends the
    /// connection drops it, so the next call reconnects.
    async fn with<T>(
        &self,
        f: impl AsyncFnOnce(&mut Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StoreError> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = Some(connect(&self.url).await?);
        }
        let Some(client) = guard.as_mut() else {
            return Err(StoreError("no connection".into()));
        };
        match f(client).await {
            Ok(v) => Ok(v),
            Err(e) => {
                if client.is_closed() {
                    *guard = None;
                }
                Err(e.into())
            }
        }
    }

    pub(super) async fn put_work(
        &self,
        id: String,
        w: NewWork,
        owner: String,
        now: i64,
        lease_until: i64,
    ) -> Result<Put, StoreError> {
        self.with(async |c| {
            let inserted = c
                .query_opt(
                    "INSERT INTO work (id, origin, origin_tid, request, accepted_at, deadline,
                         next_at, owner, lease_until)
                     VALUES ($1, $2, $3, $4, $5, $6, $5, $7, $8)
                     ON CONFLICT (origin, origin_tid) DO NOTHING
                     RETURNING id",
                    &[
                        &id,
                        &w.origin,
                        &w.origin_tid,
                        &w.request,
                        &now,
                        &w.deadline,
                        &owner,
                        &lease_until,
                    ],
                )
                .await?;
            if inserted.is_some() {
                return Ok(Put::New(id));
            }
            let r = c
                .query_one(
                    "SELECT id, answer FROM work WHERE origin = $1 AND origin_tid = $2",
                    &[&w.origin, &w.origin_tid],
                )
                .await?;
            Ok(Put::Known {
                id: r.get(0),
                answer: r.get(1),
            })
        })
        .await
    }

    pub(super) async fn take_over(
        &self,
        owner: String,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<Work>, StoreError> {
        self.with(async |c| {
            let rows = c
                .query(
                    "UPDATE work SET owner = $1, lease_until = $2
                     WHERE id IN (SELECT id FROM work
                                  WHERE done_at IS NULL AND (lease_until < $3 OR owner = $1)
                                  ORDER BY next_at LIMIT $4 FOR UPDATE SKIP LOCKED)
                     RETURNING id, origin, origin_tid, request, accepted_at, deadline, attempts,
                               answer",
                    &[&owner, &lease_until, &now, &limit],
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
        until: i64,
    ) -> Result<(), StoreError> {
        self.with(async |c| {
            c.execute(
                "UPDATE work SET lease_until = $1 WHERE id = ANY($2) AND owner = $3",
                &[&until, &ids, &owner],
            )
            .await
            .map(|_| ())
        })
        .await
    }

    pub(super) async fn sent_part(&self, id: String, p: SentPart) -> Result<(), StoreError> {
        self.with(async |c| {
            c.execute(
                "INSERT INTO parts (work_id, part, token, instance, request_id)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (work_id, part) DO NOTHING",
                &[&id, &p.part, &p.token, &p.instance, &p.request_id],
            )
            .await
            .map(|_| ())
        })
        .await
    }

    pub(super) async fn parts(&self, id: String) -> Result<Vec<SentPart>, StoreError> {
        self.with(async |c| {
            let rows = c
                .query(
                    "SELECT part, token, instance, request_id FROM parts WHERE work_id = $1
                     ORDER BY part",
                    &[&id],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| SentPart {
                    part: r.get(0),
                    token: r.get(1),
                    instance: r.get(2),
                    request_id: r.get(3),
                })
                .collect())
        })
        .await
    }

    pub(super) async fn answered(&self, id: String, answer: String) -> Result<(), StoreError> {
        self.with(async |c| {
            c.execute("UPDATE work SET answer = $1 WHERE id = $2", &[&answer, &id])
                .await
                .map(|_| ())
        })
        .await
    }

    pub(super) async fn done(&self, id: String, now: i64) -> Result<(), StoreError> {
        self.with(async |c| {
            let t = c.transaction().await?;
            t.execute("UPDATE work SET done_at = $1 WHERE id = $2", &[&now, &id])
                .await?;
            t.execute("DELETE FROM parts WHERE work_id = $1", &[&id])
                .await?;
            t.commit().await
        })
        .await
    }

    pub(super) async fn reschedule(
        &self,
        id: String,
        next_at: i64,
        attempts: i64,
    ) -> Result<(), StoreError> {
        self.with(async |c| {
            c.execute(
                "UPDATE work SET next_at = $1, attempts = $2 WHERE id = $3",
                &[&next_at, &attempts, &id],
            )
            .await
            .map(|_| ())
        })
        .await
    }

    pub(super) async fn purge(&self, before: i64, now: i64) -> Result<u64, StoreError> {
        self.with(async |c| {
            let n = c
                .execute("DELETE FROM work WHERE done_at < $1", &[&before])
                .await?;
            c.execute("DELETE FROM routed WHERE at < $1", &[&before])
                .await?;
            c.execute("DELETE FROM kv WHERE expires < $1", &[&now])
                .await?;
            Ok(n)
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
