//! The SIP/SIMPLE translator against a real SIP operator: Kamailio as its proxy and
//! registrar, sipp as its user Bob (`+4915112345678` at `opb.example`), NSD serving ENUM
//! (`E2U+sip` for Bob's number) and the operator's SIP SRV record. Use case 5.22's
//! alternative flow: an IMPS user and a SIP user exchange messages by phone number, both
//! ways, through the gateway; and what a SIP peer may not do is refused with the right SIP
//! error.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use ssp_gateway::ops::metrics::Metrics;
use ssp_testbed::dnslab::{Nsd, Zone, free_port, naptr};
use ssp_testbed::federation::{DnsKind, Federation, OperatorSpec, federation_zones};
use ssp_testbed::siplab::{self, Kamailio, SippUas};
use ssp_testbed::sipua;

const A: &str = "+46701234567";
const BOB: &str = "+4915112345678";
const WAIT: Duration = Duration::from_secs(10);

/// Operator X (IMPS, with the translator on `sip_port`, trusting opb.example from loopback)
/// and the DNS that places Bob at the SIP operator whose proxy listens on `proxy`.
async fn operator_x(sip_port: u16, proxy: u16) -> Federation {
    assert!(
        siplab::available() && Nsd::available(),
        "kamailio, sipp and nsd are needed (tests/run installs them)"
    );
    let mut x = OperatorSpec::new('x', "46").user("usera", A, "User A");
    x.extra_toml = format!(
        "\n[sip]\nlisten = \"127.0.0.1:{sip_port}\"\nmax_body = 1000\n\n\
         [[sip.peer]]\ndomain = \"opb.example\"\naddresses = [\"127.0.0.1\"]\n"
    );
    Federation::start_dns(vec![x], DnsKind::Nsd, move |gws| zones(gws, proxy)).await
}

fn zones(gateways: &[(String, u16)], proxy: u16) -> Vec<Zone> {
    let mut z = federation_zones(gateways, &[(A.into(), "opx.example".into())], 60);
    z[0].add(&naptr(
        BOB,
        "e164.arpa",
        100,
        10,
        "E2U+sip",
        &format!("sip:{BOB}@opb.example"),
        60,
    ));
    z[1].add(&format!("_sip._udp.opb 60 IN SRV 10 0 {proxy} sip.opb"));
    z[1].add("sip.opb 60 IN A 127.0.0.1");
    z
}

fn sip_count(fed: &Federation, direction: &str, result: &str) -> u64 {
    let g = &fed.ops[0].gateway.as_ref().unwrap().gateway;
    Metrics::counter_value(&g.metrics().sip, &[direction, "MESSAGE", result])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_22_alt_sip_messages_both_ways_by_number_through_kamailio() {
    let (sip_port, proxy, bob_phone, bob_reg, bob_out) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let kamailio = Kamailio::start("opb.example", proxy, "opx.example", sip_port).unwrap();
    let fed = operator_x(sip_port, proxy).await;
    let cx = fed.ops[0].core.clone();
    // Bob's phone answers two messages; it registers with its operator first.
    let mut phone = SippUas::start("uas_message.xml", bob_phone, 2).unwrap();
    let port = bob_phone.to_string();
    let (rc, log) = siplab::uac(
        "register.xml",
        proxy,
        bob_reg,
        &[
            ("user", BOB),
            ("domain", "opb.example"),
            ("contact_port", &port),
        ],
    )
    .unwrap();
    assert_eq!(rc, 0, "Bob registers:\n{log}\n{}", kamailio.log());

    // IMPS → SIP: ENUM gives sip:+49…@opb.example, SRV the proxy; a MESSAGE reaches Bob.
    let (_, st) = cx
        .send_message(
            "usera",
            &[&format!("wv:{BOB}")],
            "Hello Bob over SIP",
            false,
        )
        .await
        .unwrap();
    assert_eq!(st.code, 200, "{st:?}\n{}", kamailio.log());

    // SIP → IMPS: Bob writes to A's number; the core hears it from wv:+MSISDN.
    let (rc, log) = siplab::uac(
        "uac_message.xml",
        proxy,
        bob_out,
        &[
            ("from", BOB),
            ("from_domain", "opb.example"),
            ("to", A),
            ("to_domain", "opx.example"),
            ("text", "Hi A, Bob here"),
        ],
    )
    .unwrap();
    assert_eq!(
        rc,
        0,
        "Bob's MESSAGE is answered 200:\n{log}\n{}",
        kamailio.log()
    );
    let got = cx
        .message("usera", 0, WAIT)
        .await
        .expect("delivered to the core");
    assert_eq!(got.text, "Hi A, Bob here");
    assert_eq!(got.from, format!("wv:{BOB}"), "the sender by number");

    // The reply goes to the ID the core saw, back over SIP.
    let (_, st) = cx
        .send_message("usera", &[&got.from], "Reply over SIP", false)
        .await
        .unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    assert_eq!(phone.wait(WAIT), Some(0), "Bob's phone took both");
    let seen = phone.messages();
    assert!(seen.contains("Hello Bob over SIP"), "{seen}");
    assert!(seen.contains("Reply over SIP"), "{seen}");
    assert!(
        seen.contains(&format!("From: <sip:{A}@opx.example;user=phone>")),
        "our user by number: {seen}"
    );
    assert!(
        !seen.contains("core.opx.example"),
        "no core name over SIP: {seen}"
    );
    assert_eq!(sip_count(&fed, "out", "2xx"), 2);
    assert_eq!(sip_count(&fed, "in", "2xx"), 1);
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_22_alt_sip_bad_input_gets_sip_errors_and_loses_nothing_else() {
    let sip_port = free_port();
    let fed = operator_x(sip_port, free_port()).await;
    let cx = fed.ops[0].core.clone();
    let ours = format!("sip:{A}@opx.example;user=phone");
    let bob = format!("sip:{BOB}@opb.example;user=phone");
    let text = "text/plain;charset=UTF-8";
    let send = |ruri: String, from: String, ctype: &'static str, body: String| async move {
        sipua::request(sip_port, "MESSAGE", &ruri, &from, ctype, &body).await
    };
    assert_eq!(
        send(ours.clone(), bob.clone(), text, "first".into()).await,
        Some(200)
    );
    // Not our subscriber; another domain (no open relay).
    let stranger = "sip:+46700000000@opx.example;user=phone".to_owned();
    assert_eq!(
        send(stranger, bob.clone(), text, "x".into()).await,
        Some(404)
    );
    assert_eq!(
        send(bob.clone(), bob.clone(), text, "x".into()).await,
        Some(404)
    );
    // A spoofed From: ENUM does not place that number at opb.example.
    let spoofed = "sip:+46709999999@opb.example;user=phone".to_owned();
    assert_eq!(
        send(ours.clone(), spoofed, text, "x".into()).await,
        Some(403)
    );
    // A domain nobody trusts.
    let eve = "sip:eve@evil.example".to_owned();
    assert_eq!(send(ours.clone(), eve, text, "x".into()).await, Some(403));
    // Content that is not text, and a body over [sip] max_body.
    assert_eq!(
        send(ours.clone(), bob.clone(), "image/png", "x".into()).await,
        Some(415)
    );
    assert_eq!(
        send(ours.clone(), bob.clone(), text, "y".repeat(1500)).await,
        Some(413)
    );
    // What the translator does not take yet.
    assert_eq!(
        sipua::request(sip_port, "SUBSCRIBE", &ours, &bob, text, "").await,
        Some(405)
    );
    // A malformed request is dropped without an answer; the next one is served.
    assert_eq!(sipua::raw_request(sip_port, "GARBAGE\r\n\r\n").await, None);
    assert_eq!(
        sipua::raw_request(
            sip_port,
            "MESSAGE sip:x SIP/2.0\r\nContent-Length: 99999999\r\n\r\n"
        )
        .await,
        None
    );
    assert_eq!(
        send(ours.clone(), bob.clone(), text, "second".into()).await,
        Some(200)
    );
    let texts: Vec<String> = cx.received("usera").into_iter().map(|m| m.text).collect();
    assert_eq!(
        texts,
        ["first", "second"],
        "only the good ones reached the core"
    );
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_20_alt_sip_contact_added_by_number() {
    let fed = operator_x(free_port(), free_port()).await;
    let cx = fed.ops[0].core.clone();
    // Bob's number is placed at a SIP operator (ENUM E2U+sip): SIP has no search, so the
    // gateway answers with the number's own ID, which the core can add and write to.
    let (st, hits) = cx.search_msisdn("usera", BOB).await.unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    assert_eq!(
        hits.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        [format!("wv:{BOB}")]
    );
    fed.shutdown().await;
}
