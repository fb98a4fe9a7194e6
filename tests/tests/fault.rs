//! The fault-injection suite: messages from core X through gateway X to gateway Y and core Y,
//! counted one by one (`ssp_testbed::faults`), while one fault is injected per test. Every
//! row must show 0 lost and 0 delivered twice. Each test prints its row of the table; with
//! `SSP_FAULT_TABLE=FILE` the rows are also appended to FILE.
//!
//! `SSP_FAULT_LONG=1` runs the long form: the peer is down for two minutes instead of
//! fifteen seconds.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use ssp_testbed::faults::{Rig, Row, XMode, outcomes, record};

/// Messages per row, and the gap between two.
const N: usize = 300;
const GAP: Duration = Duration::from_millis(20);
/// How long a killed part stays down.
const DOWN: Duration = Duration::from_secs(2);
/// Kept work taken up from a holder that is gone (a previous process, a dead replica).
const RESUMED: &str = "ssp_work_total{event=\"resumed\"}";
/// Messages that may be answered twice where gateway X or core X is killed: an answer that
/// reached core X before gateway X recorded its delivery, or that core X received and was
/// killed before acknowledging, is delivered again (README "Reliability"); none otherwise.
const TWICE_WHEN_KILLED: usize = 3;
/// How long every accepted message has to settle after the fault healed.
const SETTLE: Duration = Duration::from_secs(60);

/// Settle, count, record, and require nothing lost, nothing delivered twice, no error
/// answers, and at most `twice` messages answered twice.
async fn finish(rig: Rig, fault: &str, started: Instant, twice: usize) -> Row {
    let settled = rig.settle(SETTLE).await;
    let mut row = rig.count(fault);
    row.seconds = started.elapsed().as_secs_f64();
    record(&row);
    if std::env::var_os("SSP_FAULT_LOGS").is_some() {
        println!("{}", rig.logs());
    }
    if !settled
        || row.lost > 0
        || row.delivered_twice > 0
        || row.answered_error > 0
        || row.answered_twice > twice
    {
        let detail = outcomes(&rig);
        let logs = rig.logs();
        rig.stop().await;
        panic!("{fault}: {row:?}\n{detail:#?}\n{logs}");
    }
    assert!(row.accepted > 0, "{fault}: nothing was accepted");
    rig.stop().await;
    row
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_kill_sending_gateway_mid_traffic() {
    let mut rig = Rig::start(XMode::Single).await.unwrap();
    let started = Instant::now();
    let t = rig.traffic("kill-x", N, GAP);
    t.until_sent(N / 3).await;
    rig.x[0].kill();
    tokio::time::sleep(DOWN).await;
    rig.x[0].start().await.unwrap();
    t.done().await;
    // What was in flight when it died was taken up by its next process.
    let taken = rig.x[0].metric_reaches(RESUMED, 1.0).await;
    assert!(taken >= 1.0, "work taken up after the restart: {taken}");
    let row = finish(rig, "kill -9 gateway X", started, TWICE_WHEN_KILLED).await;
    assert!(row.refused > 0, "some were sent while X was down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_kill_receiving_gateway_mid_traffic() {
    let mut rig = Rig::start(XMode::Single).await.unwrap();
    let started = Instant::now();
    let t = rig.traffic("kill-y", N, GAP);
    t.until_sent(N / 3).await;
    rig.y.kill();
    tokio::time::sleep(DOWN).await;
    rig.y.start().await.unwrap();
    t.done().await;
    let row = finish(rig, "kill -9 gateway Y", started, 0).await;
    assert_eq!(row.refused, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_kill_sending_core_mid_traffic() {
    let mut rig = Rig::start(XMode::Single).await.unwrap();
    let started = Instant::now();
    let t = rig.traffic("kill-core-x", N, GAP);
    t.until_sent(N / 3).await;
    rig.core_x.kill().await;
    tokio::time::sleep(DOWN).await;
    rig.core_x.restart().await.unwrap();
    t.done().await;
    finish(rig, "kill core X", started, TWICE_WHEN_KILLED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_kill_receiving_core_mid_traffic() {
    let mut rig = Rig::start(XMode::Single).await.unwrap();
    let started = Instant::now();
    let t = rig.traffic("kill-core-y", N, GAP);
    t.until_sent(N / 3).await;
    rig.core_y.kill().await;
    tokio::time::sleep(DOWN).await;
    rig.core_y.restart().await.unwrap();
    t.done().await;
    let row = finish(rig, "kill core Y", started, 0).await;
    assert_eq!(row.refused, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_peer_down_longer_than_the_request_deadline() {
    let long = std::env::var_os("SSP_FAULT_LONG").is_some();
    let down = if long {
        Duration::from_secs(120)
    } else {
        Duration::from_secs(15)
    };
    let mut rig = Rig::start(XMode::Single).await.unwrap();
    let started = Instant::now();
    rig.y.kill();
    let t = rig.traffic("peer-down", N, GAP);
    t.done().await;
    // Every message answered "accepted for delivery" at once, none delivered yet.
    let early = rig.count("");
    assert_eq!(early.accepted, N);
    assert_eq!(early.delivered, 0);
    tokio::time::sleep(down.saturating_sub(started.elapsed())).await;
    rig.y.start().await.unwrap();
    let label = format!("peer down {} s (request deadline 3 s)", down.as_secs());
    let row = finish(rig, &label, started, 0).await;
    assert_eq!(row.delivered, N, "all arrive once the peer is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_dns_down_mid_traffic() {
    let rig = Rig::start(XMode::Single).await.unwrap();
    let started = Instant::now();
    let t = rig.traffic("dns-down", N, GAP);
    t.until_sent(N / 4).await;
    rig.nsd.freeze();
    tokio::time::sleep(Duration::from_secs(4)).await;
    rig.nsd.thaw();
    t.done().await;
    finish(rig, "DNS (NSD) frozen 4 s", started, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_reload_mid_traffic() {
    let rig = Rig::start(XMode::Single).await.unwrap();
    let started = Instant::now();
    let t = rig.traffic("reload", N, GAP);
    for k in 1..=4 {
        t.until_sent(k * N / 5).await;
        rig.x[0].hup();
        rig.y.hup();
    }
    t.done().await;
    let row = finish(rig, "reload (SIGHUP) of X and Y, 4 times", started, 0).await;
    assert_eq!(row.refused, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_postgres_restarted_mid_traffic() {
    let mut rig = Rig::start(XMode::Postgres).await.unwrap();
    let started = Instant::now();
    let t = rig.traffic("pg-restart", N, GAP);
    t.until_sent(N / 3).await;
    rig.pg.as_mut().unwrap().restart().await.unwrap();
    t.done().await;
    finish(rig, "PostgreSQL restarted (X on PostgreSQL)", started, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_one_of_two_replicas_killed_mid_traffic() {
    let mut rig = Rig::start(XMode::Replicas).await.unwrap();
    let started = Instant::now();
    let t = rig.traffic("replica", N, GAP);
    t.until_sent(N / 3).await;
    for (i, x) in rig.x.iter().enumerate() {
        let kept = x.metric("ssp_work_total{event=\"kept\"}").await;
        let pending = x.metric("ssp_in_flight").await;
        println!("replica {i}: {kept} kept so far, in flight {pending}");
    }
    // Killed for good: the other replica takes over its work when its leases run out.
    rig.x[1].kill();
    t.done().await;
    // Its work in flight was taken over by the other once the leases ran out.
    let taken = rig.x[0].metric_reaches(RESUMED, 1.0).await;
    assert!(
        taken >= 1.0,
        "work taken over from the dead replica: {taken}"
    );
    let row = finish(
        rig,
        "kill -9 one of two replicas of X",
        started,
        TWICE_WHEN_KILLED,
    )
    .await;
    // The balancer sends new connections to the replica that is up; a request on the
    // killed replica's connection at that instant is refused (reset): its sender was
    // promised nothing and keeps it (the table counts it as not accepted).
    assert!(
        row.refused <= 2,
        "the balancer sends to the replica that is up: {} refused",
        row.refused
    );
}
