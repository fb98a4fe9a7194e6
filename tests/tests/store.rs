//! The state store's contract, the same on both engines: SQLite in a file (the embedded
//! default) and PostgreSQL (shared by replicas; a real server started by the test).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use ssp_gateway::store::{Claim, Durability, Location, NewWork, Put, SentPart, Store, now_ms};
use ssp_testbed::federation::TempDir;
use ssp_testbed::pglab::PgLab;

fn work(origin: &str, tid: &str) -> NewWork {
    NewWork {
        origin: origin.into(),
        origin_tid: tid.into(),
        request: format!("<request {tid}/>"),
        deadline: now_ms() + 10_000,
        expires: now_ms() + 60_000,
    }
}

const LEASE: Duration = Duration::from_secs(30);

fn part(key: &str, token: &str, request_id: i64) -> SentPart {
    SentPart {
        key: key.into(),
        token: token.into(),
        instance: 7,
        request_id,
        answer: None,
    }
}

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
            answer: None,
            same: true,
            done: false
        }
    );
    // The same transaction ID with another request (a sender that restarted its count).
    let mut reused = work("opy.example", "t1");
    reused.request = "<another/>".into();
    assert!(matches!(
        s.put_work(reused, "r0", LEASE).await.unwrap(),
        Put::Known { same: false, .. }
    ));
    // Another peer's t1 is another request.
    let Put::New(other) = s
        .put_work(work("opz.example", "t1"), "r0", LEASE)
        .await
        .unwrap()
    else {
        panic!("new")
    };
    // Leased work is nobody else's; released (its owner restarted), anybody's.
    assert!(s.take_over("r1", LEASE, 100).await.unwrap().is_empty());
    assert_eq!(s.release("r0").await.unwrap(), 2);
    let mine = s.take_over("r0", LEASE, 100).await.unwrap();
    assert_eq!(mine.len(), 2);
    assert_eq!(mine[0].request, "<request t1/>");
    assert!(!mine[0].answer_sent && !mine[0].queued);
    assert!(
        s.take_over("r0", LEASE, 100).await.unwrap().is_empty(),
        "work in hand is not taken twice"
    );
    // Expired leases are taken over by anyone.
    s.renew("r0", vec![other.clone()], Duration::ZERO)
        .await
        .unwrap();
    let taken = s.take_over("r1", LEASE, 100).await.unwrap();
    assert_eq!(
        taken.iter().map(|w| &w.id).collect::<Vec<_>>(),
        vec![&other]
    );
    assert!(taken[0].resumed, "taken from a holder whose lease ran out");
    // Fenced: the holder whose lease ran out finds its writes refused and learns it lost
    // the work when it renews.
    assert!(
        !s.answered("r0", &other, "<stale/>".into(), false)
            .await
            .unwrap()
    );
    assert!(!s.delivered("r0", &other, false, None).await.unwrap());
    assert!(!s.done("r0", &other).await.unwrap());
    assert!(
        s.sent_part("r0", &other, part("core|wv:c", "g2.stale", 41))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        s.renew("r0", vec![other.clone(), id.clone()], LEASE)
            .await
            .unwrap(),
        vec![other.clone()]
    );
    // Parts and their tokens: the first token stays (and is what the caller sends with).
    let first = s
        .sent_part("r0", &id, part("peer:opz.example|wv:+1", "g2.abc", 42))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.token, "g2.abc");
    let again = s
        .sent_part("r0", &id, part("peer:opz.example|wv:+1", "g2.other", 43))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.token.as_str(), again.request_id), ("g2.abc", 42));
    s.sent_part("r0", &id, part("core|wv:b", "g2.core", 44))
        .await
        .unwrap()
        .unwrap();
    let parts = s.parts(&id).await.unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[1].token, "g2.abc", "the first token stays");
    // A part's recorded "try again later" is forgotten (only by its holder); its token
    // stays, and a later answer to it is recorded again.
    s.sent_part("r0", &id, part("ssp:opw.example|wv:+2", "g2.refused", 45))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        s.claim(7, 45, "<503/>".into()).await.unwrap(),
        Claim::Recorded(id.clone())
    );
    s.unanswer_part("r1", &id, "ssp:opw.example|wv:+2")
        .await
        .unwrap();
    let answer_of = |parts: Vec<SentPart>| {
        parts
            .into_iter()
            .find(|p| p.key == "ssp:opw.example|wv:+2")
            .and_then(|p| p.answer)
    };
    assert_eq!(
        answer_of(s.parts(&id).await.unwrap()).as_deref(),
        Some("<503/>"),
        "not forgotten by another"
    );
    s.unanswer_part("r0", &id, "ssp:opw.example|wv:+2")
        .await
        .unwrap();
    assert_eq!(answer_of(s.parts(&id).await.unwrap()), None);
    assert_eq!(
        s.claim(7, 45, "<200/>".into()).await.unwrap(),
        Claim::Recorded(id.clone()),
        "the next answer to the same token is recorded"
    );
    assert_eq!(
        answer_of(s.parts(&id).await.unwrap()).as_deref(),
        Some("<200/>")
    );
    let again = s
        .sent_part("r0", &id, part("ssp:opw.example|wv:+2", "g2.other", 46))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.token, "g2.refused", "the token stays");
    // An answer to a part's token nobody waits for is recorded on the part, once.
    assert_eq!(
        s.claim(7, 42, "<part answer/>".into()).await.unwrap(),
        Claim::Recorded(id.clone())
    );
    assert_eq!(
        s.claim(7, 42, "<again/>".into()).await.unwrap(),
        Claim::Duplicate
    );
    assert_eq!(
        s.claim(7, 999, "<x/>".into()).await.unwrap(),
        Claim::Unknown
    );
    s.part_answered(&id, "core|wv:b", "<core answer/>".into())
        .await
        .unwrap();
    let parts = s.parts(&id).await.unwrap();
    assert_eq!(parts[0].answer.as_deref(), Some("<core answer/>"));
    assert_eq!(parts[1].answer.as_deref(), Some("<part answer/>"));
    // Answered, then delivered: done, known with its answer, no longer taken over; a late
    // answer to its part is a duplicate.
    assert!(
        s.answered("r0", &id, "<answer/>".into(), false)
            .await
            .unwrap()
    );
    assert!(s.delivered("r0", &id, false, None).await.unwrap());
    assert_eq!(
        s.put_work(work("opy.example", "t1"), "r0", LEASE)
            .await
            .unwrap(),
        Put::Known {
            id: id.clone(),
            answer: Some("<answer/>".into()),
            same: true,
            done: true
        }
    );
    assert_eq!(
        s.claim(7, 44, "<late/>".into()).await.unwrap(),
        Claim::Duplicate
    );
    let (n, _) = s.depth().await.unwrap();
    assert_eq!(n, 1, "one still open");
    // Queued (the sender was told "accepted"): delivering that answer does not end it.
    assert!(
        s.answered("r1", &other, "<accepted/>".into(), true)
            .await
            .unwrap()
    );
    assert!(s.delivered("r1", &other, true, None).await.unwrap());
    assert_eq!(s.depth().await.unwrap().0, 1);
    // Rescheduled: its lease given up, not taken before it is due, then taken by whoever is
    // free (not "resumed": nobody held it).
    assert!(
        s.reschedule("r1", &other, Duration::from_millis(400), 3)
            .await
            .unwrap()
    );
    assert!(s.take_over("r0", LEASE, 100).await.unwrap().is_empty());
    assert!(
        s.renew("r1", vec![other.clone()], LEASE)
            .await
            .unwrap()
            .is_empty(),
        "work put off is not lost"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let again = loop {
        let w = s.take_over("r0", LEASE, 100).await.unwrap();
        if !w.is_empty() || std::time::Instant::now() > deadline {
            break w;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(again.len(), 1, "taken when due");
    assert_eq!(again[0].attempts, 3);
    assert!(again[0].answer_sent && again[0].queued && !again[0].resumed);
    assert!(!again[0].forwarded);
    assert!(s.forwarded("r0", &other).await.unwrap());
    assert!(
        !s.done("r1", &other).await.unwrap(),
        "r1 no longer holds it"
    );
    assert!(s.done("r0", &other).await.unwrap());
    assert_eq!(s.depth().await.unwrap().0, 0);
    // Tombstones (and their parts) go when purged.
    assert_eq!(s.purge(now_ms() + 1).await.unwrap(), 2);
    assert!(s.parts(&id).await.unwrap().is_empty());
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
    // A translator's table: what it reloads after a restart, expiring entries gone.
    let subs = s.table("sip.subscriptions");
    subs.put(
        "wv:+4915112345678",
        "{\"expires\":3600}",
        Some(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    subs.put("wv:+4915112345679", "{}", Some(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(
        subs.list().await.unwrap(),
        vec![(
            "wv:+4915112345678".to_owned(),
            "{\"expires\":3600}".to_owned()
        )]
    );
    subs.delete("wv:+4915112345678").await.unwrap();
    assert_eq!(subs.get("wv:+4915112345678").await.unwrap(), None);
    // The first value set stays.
    assert_eq!(s.kv_init("gateway", "k", "one").await.unwrap(), "one");
    assert_eq!(s.kv_init("gateway", "k", "two").await.unwrap(), "one");
    // Work that ended (answered, delivered) is taken up again when asked, once: by the
    // replica that asks, with nothing of its answer left; work in hand is not.
    let Put::New(w) = s
        .put_work(work("opy.example", "t-503"), "r0", LEASE)
        .await
        .unwrap()
    else {
        panic!("new")
    };
    assert!(!s.reopen(&w, "r1", LEASE, 1, 2).await.unwrap(), "in hand");
    s.sent_part("r0", &w, part("ssp:opw.example|wv:+3", "g2.kept", 47))
        .await
        .unwrap()
        .unwrap();
    assert!(s.answered("r0", &w, "<503/>".into(), false).await.unwrap());
    assert!(s.delivered("r0", &w, false, None).await.unwrap());
    assert!(s.reopen(&w, "r1", LEASE, 1, 2).await.unwrap(), "ended");
    assert!(!s.reopen(&w, "r1", LEASE, 1, 2).await.unwrap(), "once");
    let kept = s.parts(&w).await.unwrap();
    assert_eq!(
        kept.iter().map(|p| p.token.as_str()).collect::<Vec<_>>(),
        ["g2.kept"],
        "its parts keep their tokens"
    );
    assert_eq!(
        s.put_work(work("opy.example", "t-503"), "r0", LEASE)
            .await
            .unwrap(),
        Put::Known {
            id: w.clone(),
            answer: None,
            same: true,
            done: false
        }
    );
    assert!(
        s.done("r1", &w).await.unwrap(),
        "held by the replica that took it up"
    );
}

#[tokio::test]
async fn store_sqlite_keeps_its_promises_across_a_reopen() {
    let dir = TempDir::new("ssp-store");
    let at = Location::Sqlite(dir.0.join("state/ssp.db"), Durability::Disk);
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
    s.release("r0").await.unwrap();
    let back = s.take_over("r0", LEASE, 100).await.unwrap();
    assert!(back.iter().any(|w| w.id == id));
}

#[tokio::test]
async fn store_sqlite_commits_concurrent_writes_together() {
    let dir = TempDir::new("ssp-store");
    let s = std::sync::Arc::new(
        Store::open(&Location::Sqlite(dir.0.join("ssp.db"), Durability::Disk))
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
        let taken = match s.release("r0").await {
            Ok(_) => s.take_over("r0", LEASE, 100).await,
            Err(e) => Err(e),
        };
        match taken {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_postgres_replicas_taking_over_at_once_share_the_work_without_overlap() {
    let pg = PgLab::start().await.unwrap();
    let at = Location::Postgres(pg.url());
    let a = std::sync::Arc::new(Store::open(&at).await.unwrap());
    let b = std::sync::Arc::new(Store::open(&at).await.unwrap());
    let mut all = std::collections::BTreeSet::new();
    for i in 0..200 {
        let Put::New(id) = a
            .put_work(work("opy.example", &format!("w{i}")), "gone", LEASE)
            .await
            .unwrap()
        else {
            panic!("new")
        };
        all.insert(id);
    }
    a.release("gone").await.unwrap();
    // Both replicas take small batches as fast as they can until nothing is left.
    let grab = |s: std::sync::Arc<Store>, me: &'static str| async move {
        let mut mine = Vec::new();
        for _ in 0..1000 {
            let w = s.take_over(me, LEASE, 7).await.unwrap();
            if w.is_empty() {
                break;
            }
            mine.extend(w.into_iter().map(|w| w.id));
        }
        mine
    };
    let (ta, tb) = tokio::join!(
        tokio::spawn(grab(a.clone(), "a")),
        tokio::spawn(grab(b.clone(), "b"))
    );
    let (ta, tb) = (ta.unwrap(), tb.unwrap());
    let mut seen = std::collections::BTreeSet::new();
    for id in ta.iter().chain(tb.iter()) {
        assert!(seen.insert(id.clone()), "{id} taken twice");
    }
    assert_eq!(seen, all, "every piece taken once");
    eprintln!("replica a took {}, replica b took {}", ta.len(), tb.len());
}
