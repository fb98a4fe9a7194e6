//! The SQLite backend: one connection on a thread of its own. Writes that arrive together
//! share one transaction and one commit (group commit): the cost of durability is paid once
//! per batch, not once per request, and no write is reported done before its commit.
//! WAL journal, `synchronous = FULL`: a commit survives the process and the machine.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tokio::sync::oneshot;

use super::{
    Claim, Durability, MIGRATIONS, NewWork, Put, SentPart, StoreError, WORK_COLUMNS, Work,
};

/// What a job reports once its batch is committed (or not).
type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A piece of work for the connection's thread: run in the batch's transaction (or told
/// that there is none).
type Job = Box<dyn FnOnce(Result<&Transaction<'_>, StoreError>) -> Done + Send>;

/// Writes taken into one transaction at most.
const BATCH: usize = 512;

/// The handle of the connection's thread.
#[derive(Debug)]
pub struct Sqlite {
    jobs: std::sync::mpsc::Sender<Job>,
}

fn migrate(conn: &mut Connection, durability: Durability) -> Result<(), StoreError> {
    let sync = match durability {
        Durability::Disk => "FULL",
        Durability::Os => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA busy_timeout = 5000;
         CREATE TABLE IF NOT EXISTS ssp_schema (version BIGINT NOT NULL);"
    ))?;
    let t = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let applied: i64 = t
        .query_row("SELECT version FROM ssp_schema", [], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    for (i, m) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(applied).unwrap_or(0))
    {
        t.execute_batch(m)?;
        t.execute("DELETE FROM ssp_schema", [])?;
        t.execute(
            "INSERT INTO ssp_schema (version) VALUES (?1)",
            params![i as i64 + 1],
        )?;
    }
    t.commit()?;
    Ok(())
}

fn run(mut conn: Connection, jobs: std::sync::mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        // IMMEDIATE: the write lock is taken at BEGIN, where busy_timeout waits for another
        // process sharing the file (replicas on one host). A deferred transaction that
        // read first and then wants to write fails at once with "database is locked" when
        // the other process committed in between (SQLITE_BUSY_SNAPSHOT: no waiting helps).
        let t = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
            Ok(t) => t,
            Err(e) => {
                // Each job still gets its answer: the error.
                let e = StoreError::from(e);
                for j in batch {
                    j(Err(e.clone()))(Err(e.clone()));
                }
                continue;
            }
        };
        // A job's failure is rolled back to its savepoint; but a failure that ends the whole
        // transaction (a full disk, an I/O error) leaves the connection in autocommit, where
        // later jobs would commit one by one: the rest of the batch fails instead, and so does
        // the batch.
        let mut done: Vec<Done> = Vec::with_capacity(batch.len());
        let mut broken = None;
        for j in batch {
            match &broken {
                Some(e) => done.push(j(Err(StoreError::clone(e)))),
                None => {
                    done.push(j(Ok(&t)));
                    if t.is_autocommit() {
                        broken = Some(StoreError(
                            "the transaction was rolled back by the database".into(),
                        ));
                    }
                }
            }
        }
        let committed = match broken {
            Some(e) => Err(e),
            None => t.commit().map_err(StoreError::from),
        };
        for d in done {
            d(committed.clone());
        }
    }
}

impl Sqlite {
    /// Open `path` (its folder is made), migrate, and start the connection's thread.
    pub async fn open(path: &Path, durability: Durability) -> Result<Sqlite, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError(format!("{}: {e}", dir.display())))?;
        }
        let path = path.to_owned();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("ssp-store".into())
            .spawn(move || {
                let opened = Connection::open(&path)
                    .map_err(|e| StoreError(format!("{}: {e}", path.display())))
                    .and_then(|mut c| migrate(&mut c, durability).map(|()| c));
                match opened {
                    Ok(c) => {
                        let _ = ready_tx.send(Ok(()));
                        run(c, rx);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| StoreError(format!("store thread: {e}")))?;
        ready_rx
            .await
            .map_err(|_| StoreError("store thread ended".into()))??;
        Ok(Sqlite { jobs: tx })
    }

    /// Run `f` in the next batch; its result once the batch is committed.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |t| {
            // Each job in a savepoint of the batch's transaction: a job that fails leaves
            // nothing half done, and the others still commit.
            let r = t.and_then(|t| {
                t.execute_batch("SAVEPOINT job")?;
                let r = f(t);
                let end = if r.is_ok() {
                    "RELEASE job"
                } else {
                    "ROLLBACK TO job; RELEASE job"
                };
                t.execute_batch(end)?;
                r
            });
            Box::new(move |committed| {
                let _ = tx.send(committed.and(r));
            })
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError("store thread ended".into()))?;
        rx.await
            .map_err(|_| StoreError("store thread ended".into()))?
    }

    pub(super) async fn put_work(
        &self,
        id: String,
        w: NewWork,
        owner: String,
        now: i64,
        lease: i64,
    ) -> Result<Put, StoreError> {
        self.call(move |t| {
            let known: Option<(String, Option<String>, String, bool)> = t
                .query_row(
                    "SELECT id, answer, request, done_at IS NOT NULL FROM work
                     WHERE origin = ?1 AND origin_tid = ?2",
                    params![w.origin, w.origin_tid],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            if let Some((id, answer, request, done)) = known {
                let same = request == w.request;
                return Ok(Put::Known {
                    id,
                    answer,
                    same,
                    done,
                });
            }
            t.execute(
                "INSERT INTO work (id, origin, origin_tid, request, accepted_at, deadline, expires,
                     next_at, owner, lease_until)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?5, ?8, ?9)",
                params![
                    id,
                    w.origin,
                    w.origin_tid,
                    w.request,
                    now,
                    w.deadline,
                    w.expires,
                    owner,
                    now + lease
                ],
            )?;
            Ok(Put::New(id))
        })
        .await
    }

    pub(super) async fn release(&self, owner: String) -> Result<u64, StoreError> {
        self.call(move |t| {
            // The owner stays: whoever takes it next knows it was taken from a holder.
            let n = t.execute(
                "UPDATE work SET lease_until = 0 WHERE owner = ?1 AND done_at IS NULL",
                params![owner],
            )?;
            Ok(n as u64)
        })
        .await
    }

    pub(super) async fn take_over(
        &self,
        owner: String,
        lease: i64,
        limit: i64,
    ) -> Result<Vec<Work>, StoreError> {
        self.call(move |t| {
            let now = super::now_ms();
            // One job, so one transaction of one connection: nobody else takes them between.
            let mut q = t.prepare(&format!(
                "SELECT {WORK_COLUMNS}, owner <> '' FROM work
                 WHERE done_at IS NULL AND next_at <= ?1 AND lease_until <= ?1
                 ORDER BY next_at LIMIT ?2"
            ))?;
            let rows = q.query_map(params![now, limit], |r| {
                Ok(Work {
                    id: r.get(0)?,
                    origin: r.get(1)?,
                    origin_tid: r.get(2)?,
                    request: r.get(3)?,
                    accepted_at: r.get(4)?,
                    deadline: r.get(5)?,
                    expires: r.get(6)?,
                    attempts: r.get(7)?,
                    answer: r.get(8)?,
                    answer_sent: r.get(9)?,
                    queued: r.get(10)?,
                    forwarded: r.get(11)?,
                    resumed: r.get(12)?,
                })
            })?;
            let taken = rows.collect::<Result<Vec<_>, _>>()?;
            let mut lease_q =
                t.prepare("UPDATE work SET owner = ?1, lease_until = ?2 WHERE id = ?3")?;
            for w in &taken {
                lease_q.execute(params![owner, now + lease, w.id])?;
            }
            Ok(taken)
        })
        .await
    }

    pub(super) async fn renew(
        &self,
        owner: String,
        ids: Vec<String>,
        lease: i64,
    ) -> Result<Vec<String>, StoreError> {
        self.call(move |t| {
            let until = super::now_ms() + lease;
            let mut q = t.prepare(
                "UPDATE work SET lease_until = ?1 WHERE id = ?2 AND owner = ?3 AND done_at IS NULL",
            )?;
            // Lost: taken by another replica (work put off or ended is not lost).
            let mut other = t.prepare(
                "SELECT EXISTS (SELECT 1 FROM work WHERE id = ?1 AND owner NOT IN (?2, '')
                 AND done_at IS NULL)",
            )?;
            let mut lost = Vec::new();
            for id in ids {
                if q.execute(params![until, id, owner])? == 0
                    && other.query_row(params![id, owner], |r| r.get::<_, bool>(0))?
                {
                    lost.push(id);
                }
            }
            Ok(lost)
        })
        .await
    }

    pub(super) async fn sent_part(
        &self,
        owner: String,
        id: String,
        p: SentPart,
    ) -> Result<Option<SentPart>, StoreError> {
        self.call(move |t| {
            let held: bool = t.query_row(
                "SELECT EXISTS (SELECT 1 FROM work WHERE id = ?1 AND owner = ?2 AND done_at IS NULL)",
                params![id, owner],
                |r| r.get(0),
            )?;
            if !held {
                return Ok(None);
            }
            t.execute(
                "INSERT INTO parts (work_id, key, token, instance, request_id, answer)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (work_id, key) DO NOTHING",
                params![id, p.key, p.token, p.instance, p.request_id, p.answer],
            )?;
            Ok(Some(t.query_row(
                "SELECT key, token, instance, request_id, answer FROM parts
                 WHERE work_id = ?1 AND key = ?2",
                params![id, p.key],
                |r| {
                    Ok(SentPart {
                        key: r.get(0)?,
                        token: r.get(1)?,
                        instance: r.get(2)?,
                        request_id: r.get(3)?,
                        answer: r.get(4)?,
                    })
                },
            )?))
        })
        .await
    }

    pub(super) async fn parts(&self, id: String) -> Result<Vec<SentPart>, StoreError> {
        self.call(move |t| {
            let mut q = t.prepare(
                "SELECT key, token, instance, request_id, answer FROM parts WHERE work_id = ?1
                 ORDER BY key",
            )?;
            let rows = q.query_map(params![id], |r| {
                Ok(SentPart {
                    key: r.get(0)?,
                    token: r.get(1)?,
                    instance: r.get(2)?,
                    request_id: r.get(3)?,
                    answer: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    pub(super) async fn part_answered(
        &self,
        id: String,
        key: String,
        answer: String,
    ) -> Result<(), StoreError> {
        self.call(move |t| {
            t.execute(
                "UPDATE parts SET answer = ?1 WHERE work_id = ?2 AND key = ?3 AND answer IS NULL",
                params![answer, id, key],
            )?;
            Ok(())
        })
        .await
    }

    pub(super) async fn unanswer_part(
        &self,
        owner: String,
        id: String,
        key: String,
    ) -> Result<(), StoreError> {
        self.call(move |t| {
            t.execute(
                "UPDATE parts SET answer = NULL WHERE work_id = ?1 AND key = ?2
                   AND EXISTS (SELECT 1 FROM work
                               WHERE id = ?1 AND owner = ?3 AND done_at IS NULL)",
                params![id, key, owner],
            )?;
            Ok(())
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
        self.call(move |t| {
            let n = t.execute(
                "UPDATE work SET done_at = NULL, answer = NULL, answer_sent = NULL, queued = 0,
                     forwarded_at = NULL, attempts = 0, accepted_at = ?1, deadline = ?2,
                     expires = ?3, next_at = ?1, owner = ?4, lease_until = ?1 + ?5
                 WHERE id = ?6 AND done_at IS NOT NULL",
                params![now, deadline, expires, owner, lease, id],
            )?;
            Ok(n == 1)
        })
        .await
    }

    pub(super) async fn claim(
        &self,
        instance: i64,
        request_id: i64,
        answer: String,
    ) -> Result<Claim, StoreError> {
        self.call(move |t| {
            let found: Option<(String, String, bool, bool)> = t
                .query_row(
                    "SELECT p.work_id, p.key, p.answer IS NOT NULL, w.done_at IS NOT NULL
                     FROM parts p JOIN work w ON w.id = p.work_id
                     WHERE p.instance = ?1 AND p.request_id = ?2",
                    params![instance, request_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let Some((id, key, answered, done)) = found else {
                return Ok(Claim::Unknown);
            };
            if answered || done {
                return Ok(Claim::Duplicate);
            }
            t.execute(
                "UPDATE parts SET answer = ?1 WHERE work_id = ?2 AND key = ?3",
                params![answer, id, key],
            )?;
            Ok(Claim::Recorded(id))
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
        self.call(move |t| {
            let n = t.execute(
                "UPDATE work SET answer = ?1, queued = ?2
                 WHERE id = ?3 AND owner = ?4 AND done_at IS NULL",
                params![answer, i64::from(queued), id, owner],
            )?;
            Ok(n == 1)
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
        self.call(move |t| {
            let n = t.execute(
                "UPDATE work SET answer_sent = ?1, answer = COALESCE(answer, ?2),
                     done_at = CASE WHEN ?3 THEN done_at ELSE ?1 END
                 WHERE id = ?4 AND owner = ?5 AND done_at IS NULL",
                params![now, answer, queued, id, owner],
            )?;
            Ok(n == 1)
        })
        .await
    }

    pub(super) async fn forwarded(
        &self,
        owner: String,
        id: String,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.call(move |t| {
            let n = t.execute(
                "UPDATE work SET forwarded_at = ?1 WHERE id = ?2 AND owner = ?3 AND done_at IS NULL",
                params![now, id, owner],
            )?;
            Ok(n == 1)
        })
        .await
    }

    pub(super) async fn done(
        &self,
        owner: String,
        id: String,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.call(move |t| {
            let n = t.execute(
                "UPDATE work SET done_at = ?1 WHERE id = ?2 AND owner = ?3 AND done_at IS NULL",
                params![now, id, owner],
            )?;
            Ok(n == 1)
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
        self.call(move |t| {
            let n = t.execute(
                "UPDATE work SET next_at = ?1, attempts = ?2, owner = '', lease_until = 0
                 WHERE id = ?3 AND owner = ?4 AND done_at IS NULL",
                params![super::now_ms() + wait, attempts, id, owner],
            )?;
            Ok(n == 1)
        })
        .await
    }

    pub(super) async fn purge(&self, before: i64, now: i64) -> Result<u64, StoreError> {
        self.call(move |t| {
            t.execute(
                "DELETE FROM parts WHERE work_id IN (SELECT id FROM work WHERE done_at < ?1)",
                params![before],
            )?;
            let n = t.execute("DELETE FROM work WHERE done_at < ?1", params![before])?;
            t.execute("DELETE FROM routed WHERE at < ?1", params![before])?;
            t.execute("DELETE FROM kv WHERE expires < ?1", params![now])?;
            Ok(n as u64)
        })
        .await
    }

    pub(super) async fn route_once(
        &self,
        instance: i64,
        request_id: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.call(move |t| {
            let n = t.execute(
                "INSERT INTO routed (instance, request_id, at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (instance, request_id) DO NOTHING",
                params![instance, request_id, now],
            )?;
            Ok(n == 1)
        })
        .await
    }

    pub(super) async fn unroute(&self, instance: i64, request_id: i64) -> Result<(), StoreError> {
        self.call(move |t| {
            t.execute(
                "DELETE FROM routed WHERE instance = ?1 AND request_id = ?2",
                params![instance, request_id],
            )?;
            Ok(())
        })
        .await
    }

    pub(super) async fn depth(&self, now: i64) -> Result<(i64, i64), StoreError> {
        self.call(move |t| {
            let (n, oldest): (i64, Option<i64>) = t.query_row(
                "SELECT COUNT(*), MIN(accepted_at) FROM work WHERE done_at IS NULL",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok((n, oldest.map_or(0, |o| now - o)))
        })
        .await
    }

    pub(super) async fn kv_init(
        &self,
        ns: String,
        key: String,
        value: String,
    ) -> Result<String, StoreError> {
        self.call(move |t| {
            t.execute(
                "INSERT INTO kv (ns, key, value) VALUES (?1, ?2, ?3) ON CONFLICT (ns, key) DO NOTHING",
                params![ns, key, value],
            )?;
            Ok(t.query_row(
                "SELECT value FROM kv WHERE ns = ?1 AND key = ?2",
                params![ns, key],
                |r| r.get(0),
            )?)
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
        self.call(move |t| {
            t.execute(
                "INSERT INTO kv (ns, key, value, expires) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, expires = excluded.expires",
                params![ns, key, value, expires],
            )?;
            Ok(())
        })
        .await
    }

    pub(super) async fn kv_get(
        &self,
        ns: String,
        key: String,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        self.call(move |t| {
            Ok(t.query_row(
                "SELECT value FROM kv WHERE ns = ?1 AND key = ?2 AND (expires IS NULL OR expires > ?3)",
                params![ns, key, now],
                |r| r.get(0),
            )
            .optional()?)
        })
        .await
    }

    pub(super) async fn kv_delete(&self, ns: String, key: String) -> Result<(), StoreError> {
        self.call(move |t| {
            t.execute(
                "DELETE FROM kv WHERE ns = ?1 AND key = ?2",
                params![ns, key],
            )?;
            Ok(())
        })
        .await
    }

    pub(super) async fn kv_list(
        &self,
        ns: String,
        now: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.call(move |t| {
            let mut q = t.prepare(
                "SELECT key, value FROM kv WHERE ns = ?1 AND (expires IS NULL OR expires > ?2)
                 ORDER BY key",
            )?;
            let rows = q.query_map(params![ns, now], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}
