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
    let got = cx
        .message("usera", 0, WAIT)
        .await
        .expect("no message 0 for usera");
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
        cx.message("usera", 0, WAIT).await.is_some(),
        "no message 0 for usera"
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

/// Our gateway in front of a Baraza-like *core*: the core authenticates by association on the
/// core link, and messages flow both ways to operator Y.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_authenticated_by_association() {
    let core = BarazaPeer::start(BarazaPeerConfig {
        domain: "core.opx.example".into(),
        users: vec![("usera".into(), A.into())],
    })
    .await
    .unwrap();
    // X's listeners first, so Y's config can name X's peer URL.
    let x_peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let x_core = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let x_peer_url = format!("https://127.0.0.1:{}/", x_peer.local_addr().unwrap().port());
    let mut y = OperatorSpec::new('y', "49").user("userb", BOB, "User B");
    y.extra_toml = format!(
        "[[peer]]\ndomain = \"opx.example\"\nurls = [\"{x_peer_url}\"]\n\n[[route]]\nprefix = \"+46\"\npeer = \"opx.example\"\n"
    );
    let fed = Federation::start(vec![y]).await;
    let dir = &fed.dir.0;
    fed.ca
        .write_operator(&dir.join("certs"), "opx.example")
        .unwrap();
    std::fs::write(
        dir.join("x-directory.csv"),
        format!("{A},wv:usera@core.opx.example\n"),
    )
    .unwrap();
    let pin = ssp_gateway::tls::pin_of(&core.cert_der().into());
    let y_url = &fed.ops[0].peer_url;
    let cfg = format!(
        r#"[gateway]
public_domain = "opx.example"
core_domains = ["core.opx.example"]
country_code = "46"
[directory]
file = "x-directory.csv"
[tls]
cert = "certs/opx.example/cert.pem"
key = "certs/opx.example/key.pem"
trust = ["certs/ca.pem"]
[core]
url = "{core_url}"
auth = "association"
id_style = "msisdn@domain"
pins = ["{pin}"]
[timeouts]
request = "4s"
[[peer]]
domain = "opy.example"
urls = ["{y_url}"]
[[route]]
prefix = "+49"
peer = "opy.example"
"#,
        core_url = core.url()
    );
    let path = dir.join("x.toml");
    std::fs::write(&path, cfg).unwrap();
    let x = ssp_gateway::app::start(
        ssp_gateway::config::Config::load(&path).unwrap(),
        ssp_gateway::app::StartOptions {
            listeners: ssp_gateway::app::PreBound {
                peer: Some(x_peer),
                core: Some(x_core),
                admin: None,
            },
            ..Default::default()
        },
    )
    .await
    .unwrap();
    core.set_peer("opx.example", &format!("http://{}/", x.core_addr.unwrap()));

    // The core associates (initiator), then sends to Y's subscriber.
    core.associate().await.unwrap();
    let answer = core
        .send_message(A, &format!("wv:{BOB}@opx.example"), "from a Baraza core")
        .await
        .unwrap();
    assert_eq!(code(&answer), 200, "{answer:?}");
    let cy = &fed.ops[0].core;
    assert!(
        cy.message("userb", 0, WAIT).await.is_some(),
        "no message 0 for userb"
    );
    assert_eq!(cy.received("userb")[0].from, format!("wv:{A}"));

    // Y -> X -> the core, over the association the core opened, remote numbers qualified.
    let (_mid, st) = cy
        .send_message("userb", &[&format!("wv:{A}")], "to the Baraza core", false)
        .await
        .unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    let rcvd = core.wait_received(1, WAIT).await.unwrap();
    assert_eq!(rcvd[0].to_local, "usera");
    assert_eq!(rcvd[0].from_id, format!("wv:{BOB}@opx.example"));
    x.shutdown().await;
    core.shutdown().await;
    fed.shutdown().await;
}
