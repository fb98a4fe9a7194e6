//! The relay routing `wv:+MSISDN` destinations it has no static route for: ENUM NAPTR and SRV
//! `_imps-server._tcp` from a real NSD, and the ENUM-based anti-spoofing check.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use ssp_gateway::ops::metrics::Metrics;
use ssp_testbed::federation::{DnsKind, Federation, OperatorSpec, federation_zones};

const A: &str = "+46701234567";
const B: &str = "+4915112345678";
const WAIT: Duration = Duration::from_secs(8);

fn ops() -> Vec<OperatorSpec> {
    let mut x = OperatorSpec::new('x', "46").user("usera", A, "User A");
    let mut y = OperatorSpec::new('y', "49").user("userb", B, "User B");
    // No static peering and no prefix routes: everything comes from DNS.
    x.static_peering = false;
    y.static_peering = false;
    vec![x, y]
}

fn numbers() -> Vec<(String, String)> {
    vec![
        (A.into(), "opx.example".into()),
        (B.into(), "opy.example".into()),
        // A number ENUM places at a third operator.
        ("+4930000000".into(), "opz.example".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_routes_by_enum_and_srv_from_nsd() {
    let fed = Federation::start_dns(ops(), DnsKind::Nsd, |gws| {
        federation_zones(gws, &numbers(), 300)
    })
    .await;
    let (cx, cy) = (&fed.ops[0].core, &fed.ops[1].core);
    let (_mid, st) = cx
        .send_message("usera", &["wv:+4915112345678"], "found by ENUM", true)
        .await
        .unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    assert!(
        cy.message("userb", 0, WAIT).await.is_some(),
        "no message 0 for userb"
    );
    assert_eq!(cy.received("userb")[0].from, format!("wv:{A}"));
    // The delivery report finds its way back by ENUM too (Y has no route to X either).
    assert!(
        cx.report("usera", 0, WAIT).await.is_some(),
        "no report 0 for usera"
    );
    // Presence goes by E2U+pres.
    assert_eq!(
        cx.subscribe("usera", "wv:+4915112345678")
            .await
            .unwrap()
            .code,
        200
    );
    let gx = &fed.ops[0].gateway.as_ref().unwrap().gateway;
    assert!(
        Metrics::counter_value(&gx.metrics().dns_lookups, &["naptr", "ok"]) >= 2,
        "ENUM was queried for im and pres"
    );
    assert!(
        Metrics::counter_value(&gx.metrics().dns_lookups, &["srv", "ok"]) >= 1,
        "SRV was queried"
    );
    // A second message within the TTL makes no DNS query.
    let before = Metrics::counter_value(&gx.metrics().dns_lookups, &["naptr", "ok"]);
    cx.send_message("usera", &["wv:+4915112345678"], "again", false)
        .await
        .unwrap();
    assert_eq!(
        Metrics::counter_value(&gx.metrics().dns_lookups, &["naptr", "ok"]),
        before
    );
    // A number ENUM does not know: 516.
    let (_mid, st) = cx
        .send_message("usera", &["wv:+4915199999999"], "nobody", false)
        .await
        .unwrap();
    assert_eq!(st.code, 516, "{st:?}");
    fed.assert_topology_hidden();
    // Y, found only through DNS, goes away: its failures are counted under `unlisted`, so
    // domains that DNS names cannot grow the number of series.
    let mut fed = fed;
    fed.stop_gateway(1).await;
    let _ = fed.ops[0]
        .core
        .send_message("usera", &["wv:+4915112345678"], "while Y is down", false)
        .await;
    let gx = &fed.ops[0].gateway.as_ref().unwrap().gateway;
    let failures = gx.metrics().render();
    assert!(
        failures.contains("ssp_delivery_failures_total{destination=\"unlisted\""),
        "{failures}"
    );
    assert!(
        !failures
            .lines()
            .any(|l| l.starts_with("ssp_delivery_failures_total") && l.contains("opy.example")),
        "{failures}"
    );
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn originator_must_be_placed_at_the_sending_peer_by_enum() {
    let mut fed = Federation::start_dns(ops(), DnsKind::Nsd, |gws| {
        federation_zones(gws, &numbers(), 300)
    })
    .await;
    let url: http::Uri = fed.ops[1].peer_url.parse().unwrap();
    // X's certificate, as gateway X would present it.
    let client = ssp_testbed::federation::peer_client(
        &fed.ca,
        Some((&fed.ca, "opx.example")),
        "opy.example",
    );
    let send = |from: &str| {
        format!(
            r#"<WV-SSP-Message xmlns="http://www.openmobilealliance.org/DTD/WV-SSP1.3"><Session sessionID="1@opx.example"><Transaction mode="Request" transactionID="t-{from}"><SendMessageRequest><MetaInfo clientOriginated="Yes"><Requestor serviceID="wv:@opx.example"><User userID="wv:{from}"/></Requestor></MetaInfo><MessageInfo contentType="text/plain" contentSize="2"><Recipient><User userID="wv:{B}"/></Recipient><Sender><User userID="wv:{from}"/></Sender></MessageInfo><ContentData contentType="text/plain" encoding="base64">aGk=</ContentData></SendMessageRequest></Transaction></Session></WV-SSP-Message>"#
        )
    };
    // Y knows X only through DNS (no peering entry): it answers asynchronously, so watch
    // Y's decisions and its core rather than the HTTP body.
    let gy = fed.ops[1].gateway.as_ref().unwrap().gateway.clone();
    let spoofs = || Metrics::counter_value(&gy.metrics().refused, &["spoof"]);
    // ENUM places +4930000000 at opz.example, not at X: refused with 901.
    let (status, _) = client
        .post(&url, send("+4930000000"), &[], WAIT)
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 200, "accepted for processing");
    let deadline = std::time::Instant::now() + WAIT;
    while spoofs() == 0 && std::time::Instant::now() < deadline {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(spoofs(), 1);
    let answered_901 = Metrics::counter_value(&gy.metrics().answers, &["inbound", "ssp", "901"]);
    assert_eq!(answered_901, 1);
    // A's number is X's: accepted and delivered.
    let (status, _) = client.post(&url, send(A), &[], WAIT).await.unwrap();
    assert_eq!(status.as_u16(), 200);
    assert!(
        fed.ops[1].core.message("userb", 0, WAIT).await.is_some(),
        "no message 0 for userb"
    );
    assert_eq!(spoofs(), 1);

    // DNS down: a number Y has not placed yet cannot be verified. Not let through (a peer
    // that can break DNS could otherwise pass off any number): 503, to be tried again.
    match fed.dns.as_mut() {
        Some(ssp_testbed::federation::FedDns::Nsd(nsd)) => nsd.stop(),
        _ => panic!("this test runs NSD"),
    }
    let unverified = || Metrics::counter_value(&gy.metrics().refused, &["unverified"]);
    let (status, _) = client
        .post(&url, send("+4930000001"), &[], WAIT)
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 200, "accepted for processing");
    let deadline = std::time::Instant::now() + WAIT;
    while unverified() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(unverified(), 1);
    assert_eq!(
        Metrics::counter_value(&gy.metrics().answers, &["inbound", "ssp", "503"]),
        1
    );
    assert_eq!(spoofs(), 1, "not counted as a spoof");
    assert_eq!(
        fed.ops[1].core.received("userb").len(),
        1,
        "nothing more reached the core"
    );
    fed.shutdown().await;
}
