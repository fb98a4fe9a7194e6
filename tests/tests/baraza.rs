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
    setup_with(BarazaPeerConfig::new("b.test", &[("bob", BOB)])).await
}

async fn setup_with(cfg: BarazaPeerConfig) -> (Federation, BarazaPeer) {
    let baraza = BarazaPeer::start(cfg).await.unwrap();
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
    let core = BarazaPeer::start(BarazaPeerConfig::new("core.opx.example", &[("usera", A)]))
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

/// run1 0036-0039: Baraza's delivery report has Sender and Recipient the other way round and
/// our user without `wv:`; the gateway routed it by Sender (Baraza's user) and answered 531.
/// It now reaches our core, with the parties as the core expects them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baraza_delivery_report_with_swapped_parties_reaches_our_core() {
    let (fed, baraza) = setup().await;
    let cx = &fed.ops[0].core;
    let (mid, st) = cx
        .send_message("usera", &[&format!("wv:{BOB}")], "report it", true)
        .await
        .unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    let report = cx
        .report("usera", 0, WAIT)
        .await
        .expect("a delivery report");
    assert_eq!(report.code, 200);
    let reports = baraza
        .wire_log()
        .into_iter()
        .filter(|e| e.body().contains("<DeliveryStatusReport>"))
        .count();
    assert_eq!(reports, 1, "Baraza sent its report");
    let answered_531 = baraza
        .wire_log()
        .iter()
        .any(|e| e.body().contains("code=\"531\""));
    assert!(!answered_531, "no 531 for the report");
    let _ = mid;
    baraza.shutdown().await;
    fed.shutdown().await;
}

/// run2 0105-0113: Baraza answers an opening step before it has stored its half and drops a
/// step that arrives in the millisecond before it has. The gateway sends each initiator step
/// again, with backoff, so the core's first message goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baraza_initiator_steps_are_retried_after_the_commit_race() {
    let mut cfg = BarazaPeerConfig::new("b.test", &[("bob", BOB)]);
    cfg.commit_race = Some(Duration::from_millis(60));
    let (fed, baraza) = setup_with(cfg).await;
    let cx = &fed.ops[0].core;
    let (_mid, st) = cx
        .send_message("usera", &[&format!("wv:{BOB}")], "first", false)
        .await
        .unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    assert!(baraza.is_associated());
    assert_eq!(
        baraza.wait_received(1, WAIT).await.unwrap()[0].text,
        "first"
    );
    // The race happened: a step was dropped and sent again.
    let login_requests = baraza
        .wire_log()
        .iter()
        .filter(|e| e.body().contains("<LoginRequest") && e.body().contains("mode=\"Request\""))
        .count();
    assert!(
        login_requests >= 2,
        "the dropped LoginRequest was sent again"
    );
    baraza.shutdown().await;
    fed.shutdown().await;
}

/// run2 0047-0083: Baraza acknowledges notifications and delivery reports with HTTP 200 and
/// never answers them; the core got 504 at the deadline. For a peer that associates (the
/// default of `notifications = "acknowledged"`), the acknowledgement is the delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baraza_notifications_are_delivered_on_acknowledgement() {
    let (fed, baraza) = setup().await;
    let cx = &fed.ops[0].core;
    // Bob watches usera (Baraza's subscription form, answered by a bare Status).
    let answer = baraza
        .subscribe("bob", &format!("wv:{A}@opx.example"))
        .await
        .unwrap();
    assert_eq!(code(&answer), 200, "{answer:?}");
    // A presence change notifies Bob: answered to the core at once, not 504 after 4 s.
    let t = std::time::Instant::now();
    cx.set_presence("usera", "AVAILABLE", "at my desk")
        .await
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // Bob asks for a delivery report: usera's core reports, and the report ends on Baraza's
    // acknowledgement too.
    let answer = baraza
        .send_message_with_report("bob", &format!("wv:{A}@opx.example"), "report please")
        .await
        .unwrap();
    assert_eq!(code(&answer), 200, "{answer:?}");
    let g = fed.ops[0].gateway.as_ref().unwrap().gateway.clone();
    let reported = || {
        baraza
            .wire_log()
            .iter()
            .any(|e| e.body().contains("<DeliveryStatusReport>") && e.body().contains("Request"))
    };
    let deadline = std::time::Instant::now() + WAIT;
    while !reported() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(reported(), "the core's report reached Baraza");
    let answers = |code| {
        ssp_gateway::ops::metrics::Metrics::counter_value(
            &g.metrics().answers,
            &["outbound", "ssp", code],
        )
    };
    let deadline = std::time::Instant::now() + WAIT;
    while answers("200") < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(answers("200") >= 2, "notification and report answered 200");
    assert_eq!(answers("504"), 0, "no false 504");
    baraza.shutdown().await;
    fed.shutdown().await;
}

/// run2 0053-0060 and 0032: Baraza's GetPresenceRequest (`VerUserID`, an attribute list of
/// `(null)`) and its notification (no MetaInfo, the watcher without `wv:`) are taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baraza_presence_forms_are_taken() {
    let (fed, baraza) = setup().await;
    let answer = baraza
        .get_presence("bob", &format!("wv:{A}@opx.example"))
        .await
        .unwrap();
    assert!(
        matches!(answer, Primitive::GetPresenceResponse(_)),
        "{answer:?}"
    );
    let answer = baraza
        .notify("bob", &format!("{A}@opx.example"), "at the beach")
        .await
        .unwrap();
    assert_eq!(code(&answer), 200, "{answer:?}");
    baraza.shutdown().await;
    fed.shutdown().await;
}

/// run2 0158-0162: ENUM gave `im:alice@b.test` for a number, but the gateway sent
/// `wv:+254700000001@b.test`, which Baraza does not know (900/427). With `address_by =
/// "enum-uri"` the gateway names the user as ENUM does, and maps her back to the number for
/// our core, so the contact list keeps the number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baraza_users_named_by_enum_uri_keep_their_number() {
    use ssp_testbed::dnslab::{Zone, naptr};
    use ssp_testbed::federation::DnsKind;
    const ALICE: &str = "+254700000001";
    // Alice is known to Baraza by name only (her number there is another).
    let baraza = BarazaPeer::start(BarazaPeerConfig::new("b.test", &[("alice", "+999")]))
        .await
        .unwrap();
    let pin = ssp_gateway::tls::pin_of(&baraza.cert_der().into());
    let mut x = OperatorSpec::new('x', "46").user("usera", A, "User A");
    x.static_peering = false;
    x.extra_toml = format!(
        "[[peer]]\ndomain = \"b.test\"\nurls = [\"{url}\"]\nauth = \"association\"\nid_style = \"msisdn@domain\"\npins = [\"{pin}\"]\nclient_cert = false\naddress_by = \"enum-uri\"\n",
        url = baraza.url()
    );
    let fed = Federation::start_dns(vec![x], DnsKind::InProc, |_| {
        vec![Zone::new(
            "e164.arpa",
            60,
            &[naptr(
                ALICE,
                "e164.arpa",
                100,
                10,
                "E2U+im",
                "im:alice@b.test",
                300,
            )],
        )]
    })
    .await;
    baraza.set_peer("opx.example", &fed.ops[0].peer_url);
    let cx = &fed.ops[0].core;
    let (_mid, st) = cx
        .send_message("usera", &[&format!("wv:{ALICE}")], "hi alice", false)
        .await
        .unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    let got = baraza.wait_received(1, WAIT).await.unwrap();
    assert_eq!(
        (got[0].to_local.as_str(), got[0].text.as_str()),
        ("alice", "hi alice")
    );
    // Alice answers: our core sees her number, not her name at Baraza.
    let answer = baraza
        .send_message("alice", &format!("wv:{A}@opx.example"), "hi back")
        .await
        .unwrap();
    assert_eq!(code(&answer), 200, "{answer:?}");
    let back = cx.message("usera", 0, WAIT).await.expect("alice's answer");
    assert_eq!(back.from, format!("wv:{ALICE}"));
    assert_eq!(back.text, "hi back");
    baraza.shutdown().await;
    fed.shutdown().await;
}

/// run2: the peer listener closed Baraza's idle keep-alive connections after a fixed 30 s,
/// whatever `[timeouts] idle` said. The idle time is now the configured one: a connection
/// with nothing in flight lives exactly that long, however many requests it carried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baraza_keepalive_connections_last_the_configured_idle() {
    use ssp_testbed::attacker::{closed_within, post, response, tls_client, tls_from};
    use tokio::io::AsyncWriteExt;
    let fed = Federation::start_with(vec![OperatorSpec::new('x', "46")], |t| {
        *t = t.replace("[timeouts]\n", "[timeouts]\nidle = \"3s\"\n");
    })
    .await;
    let to = fed.ops[0].gateway.as_ref().unwrap().peer_addr.unwrap();
    let connector = tls_client(&fed.ca, None);
    let mut s = tls_from([127, 0, 0, 1], to, &connector, "opx.example")
        .await
        .unwrap();
    // Requests keep it; two seconds without one do not end it.
    for _ in 0..2 {
        s.write_all(&post("<not-ssp/>")).await.unwrap();
        assert_eq!(response(&mut s).await.unwrap().0, 400);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    s.write_all(&post("<not-ssp/>")).await.unwrap();
    assert_eq!(
        response(&mut s).await.unwrap().0,
        400,
        "still open after 2 s idle"
    );
    // Three seconds without a request end it.
    let t = std::time::Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(6)).await);
    let idle = t.elapsed();
    assert!(
        idle >= Duration::from_millis(2900) && idle < Duration::from_secs(5),
        "closed after {idle:?}"
    );
    fed.shutdown().await;
}
