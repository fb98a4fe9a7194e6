//! Interop with a peer that behaves exactly as the real Baraza captures show (no client
//! certificate, no SNI, four-step association with its transaction-ID rules, `wv:+MSISDN@domain`
//! IDs, strictly async, Kannel acks, silent closes): the gateway completes the association in
//! both roles and relays a message each way.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use ssp_gateway::ssp::Primitive;
use ssp_testbed::baraza_peer::{BarazaPeer, BarazaPeerConfig};
use ssp_testbed::federation::{Federation, OperatorSpec};

const A: &str = "+46701234567";
const BOB: &str = "+4915112345678";
const WAIT: Duration = Duration::from_secs(10);

/// Operator X peered with a Baraza-like peer `b.test`.
async fn setup() -> (Federation, BarazaPeer) {
    let baraza = BarazaPeer::start(BarazaPeerConfig {
        domain: "b.test".into(),
        users: vec![("bob".into(), BOB.into())],
    })
    .await
    .unwrap();
    let pin = ssp_gateway::tls::pin_of(&baraza.cert_der().into());
    let mut x = OperatorSpec::new('x', "46").user("usera", A, "User A");
    x.extra_toml = format!(
        r#"# Baraza: association instead of client certificates, IDs with a host part,
# a self-signed server certificate (pinned), strictly asynchronous.
[[peer]]
domain = "b.test"
urls = ["{url}"]
auth = "association"
id_style = "msisdn@domain"
mode = "async"
pins = ["{pin}"]
client_cert = false

[[route]]
prefix = "+49"
peer = "b.test"
"#,
        url = baraza.url()
    );
    let fed = Federation::start(vec![x]).await;
    baraza.set_peer("opx.example", &fed.ops[0].peer_url);
    (fed, baraza)
}

fn code(p: &Primitive) -> u16 {
    match p {
        Primitive::SendMessageResponse(r) => r.status.as_ref().map(|s| s.code).unwrap_or(0),
        Primitive::Status(s) => s.code,
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baraza_initiates_association_then_messages_flow_both_ways() {
    let (fed, baraza) = setup().await;
    // Baraza as initiator, the gateway as responder.
    baraza.associate().await.unwrap();
    assert!(baraza.is_associated());

    // Baraza -> gateway -> core X, with Baraza's own session ID and wv:+MSISDN@domain IDs.
    let answer = baraza
        .send_message(BOB, &format!("wv:{A}@opx.example"), "hello from baraza")
        .await
        .unwrap();
    assert_eq!(code(&answer), 200, "{answer:?}");
    let cx = &fed.ops[0].core;
    assert!(
        cx.wait_until(WAIT, |c| !c.received("usera").is_empty())
            .await
    );
    let got = &cx.received("usera")[0];
    assert_eq!(got.text, "hello from baraza");
    assert_eq!(
        got.from,
        format!("wv:{BOB}"),
        "the core sees the number without Baraza's host part"
    );

    // Core X -> gateway -> Baraza over the association Baraza opened (one session, both ways).
    let (_mid, st) = cx
        .send_message("usera", &[&format!("wv:{BOB}")], "hi bob", false)
        .await
        .unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    let rcvd = baraza.wait_received(1, WAIT).await.unwrap();
    assert_eq!(rcvd[0].to_local, "bob");
    assert_eq!(rcvd[0].text, "hi bob");
    assert_eq!(
        rcvd[0].from_id,
        format!("wv:{A}@opx.example"),
        "Baraza gets wv:+MSISDN@domain"
    );
    fed.assert_topology_hidden();
    baraza.shutdown().await;
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_initiates_association_then_messages_flow_both_ways() {
    let (fed, baraza) = setup().await;
    let cx = &fed.ops[0].core;
    // The first message to b.test makes the gateway associate (initiator role) first.
    let (_mid, st) = cx
        .send_message("usera", &[&format!("wv:{BOB}")], "hi bob", false)
        .await
        .unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    assert!(baraza.is_associated());
    let rcvd = baraza.wait_received(1, WAIT).await.unwrap();
    assert_eq!(rcvd[0].text, "hi bob");

    // Baraza answers over the same association.
    let answer = baraza
        .send_message(BOB, &format!("wv:{A}@opx.example"), "hello back")
        .await
        .unwrap();
    assert_eq!(code(&answer), 200, "{answer:?}");
    assert!(
        cx.wait_until(WAIT, |c| !c.received("usera").is_empty())
            .await
    );

    // Baraza's error form for an unknown user (900 holding 427) reaches the core faithfully.
    let (_mid, st) = cx
        .send_message("usera", &["wv:+4915100000000"], "anyone?", false)
        .await
        .unwrap();
    assert_eq!(st.code, 900, "{st:?}");
    assert_eq!(st.details[0].code, 427);
    fed.assert_topology_hidden();
    baraza.shutdown().await;
    fed.shutdown().await;
}
