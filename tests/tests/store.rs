//! The state store's contract, the same on both engines: SQLite in a file (the embedded
//! default) and PostgreSQL (shared by replicas; a real server started by the test).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use ssp_gateway::store::{Location, NewWork, Put, SentPart, Store, now_ms};
use ssp_testbed::federation::TempDir;
use ssp_testbed::pglab::PgLab;

fn work(origin: &str, tid: &str) -> NewWork {
    NewWork {
        origin: origin.into(),
        origin_tid: tid.into(),
        request: format!("<request {tid}/>"),
        deadline: now_ms() + 10_000,
    }
}

const LEASE: Duration = Duration::from_secs(30);

/// Everything the gateway relies on, in order.
async fn contract(s: &Store) {
    // A request is kept once; the same one from the same peer again is known.
    let Put::New(id) = s
        .put_work(work("opy.example", "t1"), "r0", LEASE)
        .await
        .unwrap()
    else {
        panic!("new")
    };
    assert_eq!(
        s.put_work(work("opy.example", "t1"), "r0", LEASE)
            .await
            .unwrap(),
        Put::Known {
            id: id.clone(),
            answer: None
        }
    );
    // Another peer's t1 is another request.
    let Put::New(other) = s
        .put_work(work("opz.example", "t1"), "r0", LEASE)
        .await
        .unwrap()
    else {
        panic!("new")
    };
    // Its owner takes its own work back at once (a restart); another replica does not
    // while the lease runs.
    assert!(s.take_over("r1", LEASE, 100).await.unwrap().is_empty());
    let mine = s.take_over("r0", LEASE, 100).await.unwrap();
    assert_eq!(mine.len(), 2);
    assert_eq!(mine[0].request, "<request t1/>");
    // Expired leases are taken over by anyone.
    s.renew("r0", vec![other.clone()], Duration::ZERO)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let taken = s.take_over("r1", LEASE, 100).await.unwrap();
    assert_eq!(
        taken.iter().map(|w| &w.id).collect::<Vec<_>>(),
        vec![&other]
    );
    // Parts and their tokens.
    let p = SentPart {
        part: 0,
        token: "g2.abc".into(),
        instance: 7,
        request_id: 42,
    };
    s.sent_part(&id, p.clone()).await.unwrap();
    s.sent_part(
        &id,
        SentPart {
            token: "g2.other".into(),
            ..p.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        s.parts(&id).await.unwrap(),
        vec![p],
        "the first token stays"
    );
    // Answered, then done: known with its answer, no longer taken over.
    s.answered(&id, "<answer/>".into()).await.unwrap();
    s.done(&id).await.unwrap();
    assert_eq!(
        s.put_work(work("opy.example", "t1"), "r0", LEASE)
            .await
            .unwrap(),
        Put::Known {
            id: id.clone(),
            answer: Some("<answer/>".into())
        }
    );
    assert!(s.parts(&id).await.unwrap().is_empty());
    let (n, _) = s.depth().await.unwrap();
    assert_eq!(n, 1, "one still open");
    s.reschedule(&other, now_ms() + 60_000, 3).await.unwrap();
    let again = s.take_over("r1", LEASE, 100).await.unwrap();
    assert_eq!(again[0].attempts, 3);
    // Tombstones go when purged.
    assert_eq!(s.purge(now_ms() + 1).await.unwrap(), 1);
    assert!(matches!(
        s.put_work(work("opy.example", "t1"), "r0", LEASE)
            .await
            .unwrap(),
        Put::New(_)
    ));
    // Routed once, across calls; undone, routable again.
    assert!(s.route_once(7, 42).await.unwrap());
    assert!(!s.route_once(7, 42).await.unwrap());
    s.unroute(7, 42).await.unwrap();
    assert!(s.route_once(7, 42).await.unwrap());
    // Key-value state with expiry.
    s.kv_put("sip.dialogs", "a", "1", None).await.unwrap();
    s.kv_put("sip.dialogs", "b", "2", Some(now_ms() - 1))
        .await
        .unwrap();
    s.kv_put("sip.dialogs", "a", "3", None).await.unwrap();
    assert_eq!(
        s.kv_get("sip.dialogs", "a").await.unwrap().as_deref(),
        Some("3")
    );
    assert_eq!(s.kv_get("sip.dialogs", "b").await.unwrap(), None, "expired");
    assert_eq!(
        s.kv_list("sip.dialogs").await.unwrap(),
        vec![("a".to_owned(), "3".to_owned())]
    );
    s.kv_delete("sip.dialogs", "a").await.unwrap();
    assert!(s.kv_list("sip.dialogs").await.unwrap().is_empty());
}

#[tokio::test]
async fn store_sqlite_keeps_its_promises_across_a_reopen() {
    let dir = TempDir::new("ssp-store");
    let at = Location::Sqlite(dir.0.join("state/ssp.db"));
    let s = Store::open(&at).await.unwrap();
    contract(&s).await;
    let Put::New(id) = s
        .put_work(work("opy.example", "kept"), "r0", LEASE)
        .await
        .unwrap()
    else {
        panic!()
    };
    drop(s);
    // Reopened (a restart): what was committed is there, migrations are not run twice.
    let s = Store::open(&at).await.unwrap();
    let back = s.take_over("r0", LEASE, 100).await.unwrap();
    assert!(back.iter().any(|w| w.id == id));
}

#[tokio::test]
async fn store_sqlite_commits_concurrent_writes_together() {
    let dir = TempDir::new("ssp-store");
    let s = std::sync::Arc::new(
        Store::open(&Location::Sqlite(dir.0.join("ssp.db")))
            .await
            .unwrap(),
    );
    let mut set = tokio::task::JoinSet::new();
    for i in 0..500 {
        let s = s.clone();
        set.spawn(async move {
            s.put_work(work("opy.example", &format!("c{i}")), "r0", LEASE)
                .await
        });
    }
    let mut n = 0;
    while let Some(r) = set.join_next().await {
        assert!(matches!(r.unwrap().unwrap(), Put::New(_)));
        n += 1;
    }
    assert_eq!(n, 500);
    assert_eq!(s.depth().await.unwrap().0, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_postgres_keeps_its_promises_across_a_server_restart() {
    let mut pg = PgLab::start().await.unwrap();
    let at = Location::Postgres(pg.url());
    let s = Store::open(&at).await.unwrap();
    contract(&s).await;
    let Put::New(id) = s
        .put_work(work("opy.example", "kept"), "r0", LEASE)
        .await
        .unwrap()
    else {
        panic!()
    };
    // Two replicas on one database: each takes only what nobody else holds.
    let other = Store::open(&at).await.unwrap();
    assert!(
        other
            .take_over("r1", LEASE, 100)
            .await
            .unwrap()
            .iter()
            .all(|w| w.id != id)
    );
    // The server restarts: a call while it is away fails (nothing is promised), and the
    // connection comes back.
    pg.stop().await;
    assert!(
        s.put_work(work("opy.example", "away"), "r0", LEASE)
            .await
            .is_err()
    );
    pg.restart().await.unwrap();
    let mut back = Vec::new();
    for _ in 0..50 {
        match s.take_over("r0", LEASE, 100).await {
            Ok(w) => {
                back = w;
                break;
            }
            Err(e) => {
                eprintln!("take_over: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await
            }
        }
    }
    assert!(
        back.iter().any(|w| w.id == id),
        "committed work survives: {id} not in {back:?}"
    );
}
