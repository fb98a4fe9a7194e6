//! Kept work and store-and-forward, end to end over loopback: a message to a peer that cannot
//! be reached waits for it (its sender told "accepted for delivery" at once, or only of the
//! outcome), arrives when the peer is back, and is reported to its sender when its validity
//! ends undelivered; a request sent again is answered again, never relayed twice.
//! (`fault.rs` kills processes; these tests stop and start gateways in-process.)
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use ssp_gateway::ops::metrics::Metrics;
use ssp_gateway::ssp::primitives::SendMessageRequest;
use ssp_gateway::ssp::{
    ContentData, Message, MessageInfo, NS_WV_SSP_13, Party, Primitive, Transaction,
};
use ssp_testbed::attacker;
use ssp_testbed::core_sim::WireDir;
use ssp_testbed::federation::{Federation, OperatorSpec};

const A: &str = "+46701234567";
const B: &str = "+4915112345678";
const WAIT: Duration = Duration::from_secs(10);

/// Operator X, its store-and-forward as `store` says (retries close together, for tests).
fn x(store: &str) -> OperatorSpec {
    let mut s = OperatorSpec::new('x', "46").user("usera", A, "User A");
    s.extra_toml = format!(
        "[[route]]\nprefix = \"+49\"\npeer = \"opy.example\"\n\
         [store]\nretry_min = \"100ms\"\nretry_max = \"400ms\"\n{store}"
    );
    s
}

fn y() -> OperatorSpec {
    let mut s = OperatorSpec::new('y', "49").user("userb", B, "User B");
    s.extra_toml = "[[route]]\nprefix = \"+46\"\npeer = \"opx.example\"\n".into();
    s
}

fn work_events(fed: &Federation, i: usize, event: &str) -> u64 {
    let g = &fed.ops[i].gateway.as_ref().unwrap().gateway;
    Metrics::counter_value(&g.metrics().work, &[event])
}

/// Poll `cond` until it holds or `within` passes.
async fn eventually(within: Duration, cond: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_message_is_accepted_at_once_and_delivered_when_the_peer_is_back() {
    let mut fed = Federation::start(vec![x("queue = \"accept\"\n"), y()]).await;
    fed.stop_gateway(1).await;
    let (cx, cy) = (fed.ops[0].core.clone(), fed.ops[1].core.clone());
    let (_mid, st) = cx
        .send_message("usera", &[&format!("wv:{B}")], "while you were out", true)
        .await
        .unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    assert_eq!(
        st.description.as_deref(),
        Some("accepted for delivery"),
        "{st:?}"
    );
    // Tried again while Y is down.
    assert!(
        eventually(WAIT, || work_events(&fed, 0, "retried") >= 2).await,
        "retried"
    );
    assert!(cy.received("userb").is_empty());
    fed.restart_gateway(1).await;
    let got = cy.message("userb", 0, WAIT).await.expect("delivered");
    assert_eq!(got.text, "while you were out");
    // Y's core reports the delivery; the report reaches A.
    let report = cx.report("usera", 0, WAIT).await.expect("delivery report");
    assert_eq!(report.code, 200);
    assert!(
        eventually(WAIT, || work_events(&fed, 0, "done") >= 1).await,
        "the kept work is done"
    );
    assert_eq!(cy.received("userb").len(), 1, "delivered once");
    assert_eq!(cx.delivery_reports("usera").len(), 1, "reported once");
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_message_is_answered_only_on_delivery() {
    let mut fed = Federation::start(vec![x("queue = \"hold\"\n"), y()]).await;
    fed.stop_gateway(1).await;
    let (cx, cy) = (fed.ops[0].core.clone(), fed.ops[1].core.clone());
    let send = tokio::spawn(async move {
        cx.send_message("usera", &[&format!("wv:{B}")], "held", false)
            .await
    });
    assert!(
        eventually(WAIT, || work_events(&fed, 0, "retried") >= 2).await,
        "retried while Y is down"
    );
    assert!(!send.is_finished(), "no answer while the message waits");
    fed.restart_gateway(1).await;
    let (_mid, st) = send.await.unwrap().unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    assert_ne!(st.description.as_deref(), Some("accepted for delivery"));
    assert_eq!(cy.received("userb").len(), 1);
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_undelivered_within_its_validity_is_reported_to_its_sender() {
    let mut fed =
        Federation::start(vec![x("queue = \"accept\"\nmax_validity = \"2s\"\n"), y()]).await;
    fed.stop_gateway(1).await;
    let cx = fed.ops[0].core.clone();
    let started = std::time::Instant::now();
    let (_mid, st) = cx
        .send_message("usera", &[&format!("wv:{B}")], "too late", true)
        .await
        .unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    let report = cx.report("usera", 0, WAIT).await.expect("failure report");
    assert_eq!(report.code, 504, "{report:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "reported when the validity ended, not before"
    );
    assert_eq!(work_events(&fed, 0, "expired"), 1);
    fed.shutdown().await;
}

/// A SendMessage from user A of core X to B, written out here so that a test chooses its
/// transaction ID (and sends it again).
fn raw_message(fed: &Federation, tid: &str, text: &str) -> String {
    let cx = &fed.ops[0].core;
    let request = Primitive::SendMessageRequest(SendMessageRequest {
        delivery_report: Some("No".into()),
        info: Some(MessageInfo {
            content_type: Some("text/plain".into()),
            recipient: Some(Party::user(format!("wv:{B}"))),
            sender: Some(Party::user(cx.core_id("usera"))),
            ..Default::default()
        }),
        content: Some(ContentData {
            content_type: Some("text/plain".into()),
            data: text.into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    Message::session(
        "core-1@core.opx.example",
        vec![Transaction::request(tid, request)],
    )
    .emit(NS_WV_SSP_13)
}

/// POST `body` to gateway X's core listener as core X does; the HTTP status.
async fn post_from_core(fed: &Federation, body: &str) -> u16 {
    let core_addr = fed.ops[0].gateway.as_ref().unwrap().core_addr.unwrap();
    let mut c = attacker::tcp_from([127, 0, 0, 1], core_addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut c, &attacker::post(body))
        .await
        .unwrap();
    attacker::response(&mut c).await.unwrap().0
}

/// How many answers with transaction ID `tid` core X has received.
fn answers_to(fed: &Federation, tid: &str) -> usize {
    fed.ops[0]
        .core
        .wire_log()
        .iter()
        .filter(|(d, b)| *d == WireDir::Received && b.contains(&format!("\"{tid}\"")))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_again_is_answered_again_and_relayed_once() {
    let fed = Federation::start(vec![x(""), y()]).await;
    let cy = fed.ops[1].core.clone();
    let body = raw_message(&fed, "resent-1", "once only");
    for n in 1..=2 {
        assert_eq!(post_from_core(&fed, &body).await, 200);
        assert!(
            eventually(WAIT, || answers_to(&fed, "resent-1") == n).await,
            "answer {n} of 2 reached the core"
        );
    }
    assert_eq!(work_events(&fed, 0, "resent"), 1);
    assert_eq!(cy.received("userb").len(), 1, "relayed once");
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_again_while_it_waits_is_left_to_the_work_in_hand() {
    let mut fed = Federation::start(vec![x("queue = \"hold\"\n"), y()]).await;
    fed.stop_gateway(1).await;
    let cy = fed.ops[1].core.clone();
    let body = raw_message(&fed, "waiting-1", "sent twice, wanted once");
    assert_eq!(post_from_core(&fed, &body).await, 200);
    assert!(
        eventually(WAIT, || work_events(&fed, 0, "retried") >= 1).await,
        "waiting for Y"
    );
    // The core's resend (it heard nothing yet) is recognised: no second piece of work.
    assert_eq!(post_from_core(&fed, &body).await, 200);
    assert_eq!(work_events(&fed, 0, "resent"), 1);
    assert_eq!(work_events(&fed, 0, "kept"), 1);
    fed.restart_gateway(1).await;
    assert!(
        eventually(WAIT, || answers_to(&fed, "waiting-1") >= 1).await,
        "answered once delivered"
    );
    assert!(
        eventually(WAIT, || work_events(&fed, 0, "done") >= 1).await,
        "the kept work is done"
    );
    assert_eq!(cy.received("userb").len(), 1, "relayed once");
    assert_eq!(answers_to(&fed, "waiting-1"), 1, "answered once");
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_id_reused_for_another_request_is_another_request() {
    let fed = Federation::start(vec![x(""), y()]).await;
    let cy = fed.ops[1].core.clone();
    // A core that restarted and counts its transaction IDs from the start again.
    for (n, text) in [(1, "before the restart"), (2, "after the restart")] {
        let body = raw_message(&fed, "reused-1", text);
        assert_eq!(post_from_core(&fed, &body).await, 200);
        assert!(
            eventually(WAIT, || answers_to(&fed, "reused-1") == n).await,
            "answer {n} of 2 reached the core"
        );
    }
    assert_eq!(work_events(&fed, 0, "resent"), 0);
    assert!(
        eventually(WAIT, || cy.received("userb").len() == 2).await,
        "both delivered"
    );
    let texts: Vec<String> = cy.received("userb").into_iter().map(|m| m.text).collect();
    assert_eq!(texts, ["before the restart", "after the restart"]);
    fed.shutdown().await;
}

/// A message the peer refuses for now (an SSP 503: here over its per-originator rate; in the
/// field also while its DNS cannot verify the originator) waits and is sent again, like one
/// whose peer cannot be reached, under the same transaction ID: the peer takes the resend of
/// what it answered 503 up again as work. Its sender hears the outcome, never the 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_peer_refuses_for_now_waits_and_arrives() {
    let mut slow = y();
    slow.extra_toml
        .push_str("[policy]\noriginator_rate = 1\noriginator_burst = 1\n");
    let fed = Federation::start(vec![x("queue = \"hold\"\n"), slow]).await;
    let (cx, cy) = (fed.ops[0].core.clone(), fed.ops[1].core.clone());
    let sends: Vec<_> = (0..3)
        .map(|n| {
            let cx = cx.clone();
            tokio::spawn(async move {
                cx.send_message("usera", &[&format!("wv:{B}")], &format!("burst {n}"), false)
                    .await
            })
        })
        .collect();
    for s in sends {
        let (_mid, st) = s.await.unwrap().unwrap();
        assert_eq!(st.code, 200, "{st:?}");
    }
    let yg = &fed.ops[1].gateway.as_ref().unwrap().gateway;
    let refused = Metrics::counter_value(&yg.metrics().refused, &["rate"]);
    assert!(refused >= 1, "Y refused some over its rate: {refused}");
    assert!(work_events(&fed, 0, "retried") >= 1, "X tried again");
    assert!(
        work_events(&fed, 1, "reopened") >= 1,
        "Y took the resends up again"
    );
    assert_eq!(
        work_events(&fed, 0, "kept"),
        3,
        "one piece of work per message at X"
    );
    assert_eq!(
        work_events(&fed, 1, "kept"),
        3,
        "and at Y: a resend is no new work"
    );
    let mut texts: Vec<String> = cy.received("userb").into_iter().map(|m| m.text).collect();
    texts.sort();
    assert_eq!(
        texts,
        ["burst 0", "burst 1", "burst 2"],
        "each delivered once"
    );
    fed.shutdown().await;
}
