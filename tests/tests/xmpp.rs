//! The XMPP translator against a real XMPP operator: Prosody serving `opb.example`, whose
//! user Bob (`+4915112345678@opb.example`) is a real XMPP client (slixmpp); NSD serving
//! ENUM (`E2U+xmpp` for Bob's number) and opb.example's `_xmpp-server._tcp` SRV record. The
//! gateway is the XMPP server of `opx.example` itself: Prosody federates with it directly.
//!
//! Each use case runs in both of Prosody's variants: plain streams proved by Server
//! Dialback, and STARTTLS with SASL EXTERNAL by certificates of a test CA.
//!
//! - 5.22's alternative flow: messages both ways by phone number, receipts as delivery
//!   reports, refusals as stanza errors;
//! - 5.21's: presence both ways (our user watching Bob, Bob watching our user);
//! - 5.20's: a contact added by number.
//!
//! And what hostile XMPP input gets: an XML bomb, a stanza over the limit, a `from` outside
//! the proved domain, a stream that never proves itself, each refused with its stream error,
//! closing no other stream; and a far side that never completes dialback leaves no request
//! without an answer.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use ssp_gateway::ops::metrics::Metrics;
use ssp_testbed::dnslab::{Nsd, Zone, free_port, naptr};
use ssp_testbed::federation::{DnsKind, Federation, OperatorSpec, federation_zones};
use ssp_testbed::xmpplab::{self, Prosody, ProsodyTls};

const A: &str = "+46701234567";
const BOB: &str = "+4915112345678";
const WAIT: Duration = Duration::from_secs(15);

/// How Prosody's server-to-server streams are secured and proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// No TLS; Server Dialback.
    Dialback,
    /// STARTTLS required; SASL EXTERNAL with certificates of the test CA.
    Tls,
}

/// Operator X (IMPS, the gateway's XMPP listener on `xmpp_port`, federating with
/// opb.example as `variant` says, with `extra` in `[xmpp]`) and the DNS that places Bob at
/// opb.example, whose XMPP server listens on `prosody_s2s`.
async fn operator_x(variant: Variant, xmpp_port: u16, prosody_s2s: u16, extra: &str) -> Federation {
    assert!(
        xmpplab::available() && Nsd::available(),
        "prosody, the slixmpp venv and nsd are needed (tests/run makes them)"
    );
    let mut x = OperatorSpec::new('x', "46").user("usera", A, "User A");
    let policy = match variant {
        Variant::Dialback => "require_tls = false\nallow_dialback = true",
        Variant::Tls => "require_tls = true\nallow_dialback = false",
    };
    x.extra_toml = format!(
        "\n[xmpp]\nlisten = \"127.0.0.1:{xmpp_port}\"\nauth_timeout = \"5s\"\n{extra}\n\
         [[xmpp.peer]]\ndomain = \"opb.example\"\n{policy}\n"
    );
    Federation::start_dns(vec![x], DnsKind::Nsd, move |gws| zones(gws, prosody_s2s)).await
}

fn zones(gateways: &[(String, u16)], prosody_s2s: u16) -> Vec<Zone> {
    let mut z = federation_zones(gateways, &[(A.into(), "opx.example".into())], 60);
    z[0].add(&naptr(
        BOB,
        "e164.arpa",
        100,
        10,
        "E2U+xmpp",
        &format!("xmpp:{BOB}@opb.example"),
        60,
    ));
    z[1].add(&format!(
        "_xmpp-server._tcp.opb 60 IN SRV 10 0 {prosody_s2s} xmpp.opb"
    ));
    z[1].add("xmpp.opb 60 IN A 127.0.0.1");
    z
}

/// Prosody for opb.example in `variant`, with Bob, dialing the gateway at `xmpp_port`.
fn prosody(fed: &Federation, variant: Variant, xmpp_port: u16, s2s_port: u16) -> Prosody {
    let issued = fed.ca.issue("opb.example").unwrap();
    let tls = ProsodyTls {
        ca_pem: fed.ca.cert_pem(),
        cert_pem: &issued.cert_pem,
        key_pem: &issued.key_pem,
    };
    Prosody::start_on(
        "opb.example",
        s2s_port,
        &[(BOB, "bobpw")],
        &[("opx.example", xmpp_port)],
        (variant == Variant::Tls).then_some(&tls),
    )
    .unwrap()
}

fn stanzas(fed: &Federation, direction: &str, stanza: &str, result: &str) -> u64 {
    let g = &fed.ops[0].gateway.as_ref().unwrap().gateway;
    Metrics::counter_value(&g.metrics().xmpp, &[direction, stanza, result])
}

async fn messages_both_ways(variant: Variant) {
    let (xmpp_port, s2s) = (free_port(), free_port());
    let fed = operator_x(variant, xmpp_port, s2s, "").await;
    let prosody = prosody(&fed, variant, xmpp_port, s2s);
    let cx = fed.ops[0].core.clone();
    let mut bob = prosody.client(BOB, "bobpw").unwrap();
    let ours = format!("{A}@opx.example");

    // IMPS → XMPP: ENUM gives xmpp:+49…@opb.example, SRV Prosody; the gateway opens a
    // stream to it, proves opx.example, and Bob's client gets the message from A's number.
    let (_, st) = cx
        .send_message(
            "usera",
            &[&format!("wv:{BOB}")],
            "Hello Bob over XMPP",
            false,
        )
        .await
        .unwrap();
    assert_eq!(st.code, 200, "{st:?}\n{}", prosody.log());
    let m = bob
        .expect(&["message", &ours], WAIT)
        .unwrap_or_else(|e| panic!("{e}\n{}", prosody.log()));
    assert_eq!(m[2], "Hello Bob over XMPP");

    // XMPP → IMPS: Bob writes to A's number asking for a receipt; Prosody opens a stream to
    // the gateway and proves opb.example; the core hears it from wv:+MSISDN, and the
    // receipt goes back once the core took it.
    bob.send(&["msg", &ours, "Hi A, Bob here", "receipt"]);
    let sent = bob.expect(&["sent"], WAIT).unwrap();
    let got = cx
        .message("usera", 0, WAIT)
        .await
        .unwrap_or_else(|| panic!("delivered to the core\n{}", prosody.log()));
    assert_eq!(got.text, "Hi A, Bob here");
    assert_eq!(got.from, format!("wv:{BOB}"), "the sender by number");
    let r = bob.expect(&["receipt", &ours], WAIT).unwrap();
    assert_eq!(r[2], sent[1], "the receipt names Bob's message");

    // The reply goes back to the ID the core saw, asking for a delivery report: Bob's client
    // acknowledges it (XEP-0184) and the receipt becomes the report.
    let (_, st) = cx
        .send_message("usera", &[&got.from], "Reply over XMPP", true)
        .await
        .unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    let m = bob.expect(&["message", &ours], WAIT).unwrap();
    assert_eq!(m[2], "Reply over XMPP");
    assert!(
        cx.wait_until(WAIT, |c| !c.delivery_reports("usera").is_empty())
            .await,
        "the receipt became a delivery report\n{}",
        prosody.log()
    );
    let report = cx.delivery_reports("usera")[0].clone();
    assert_eq!(report.code, 200, "{report:?}");
    assert_eq!(report.recipient, format!("wv:{BOB}"));

    // The protocol dimension and the stanza counts.
    let m = fed.ops[0].gateway.as_ref().unwrap().gateway.metrics();
    let requests = |d, p| Metrics::counter_value(&m.requests, &[d, p, "SendMessageRequest"]);
    assert_eq!(requests("inbound", "xmpp"), 1);
    assert_eq!(requests("outbound", "ssp"), 2, "the core speaks SSP");
    assert_eq!(Metrics::counter_value(&m.deliveries, &["xmpp", "ok"]), 2);
    assert_eq!(stanzas(&fed, "out", "message", "sent"), 2);
    assert_eq!(stanzas(&fed, "out", "receipt", "sent"), 1);
    assert_eq!(stanzas(&fed, "in", "receipt", "taken"), 1);
    assert_eq!(
        m.xmpp_streams.with_label_values(&["out"]).get(),
        1,
        "one stream out, reused"
    );
    // Each way proved as the variant says.
    let proof = match variant {
        Variant::Dialback => "dialback",
        Variant::Tls => "sasl-external",
    };
    assert_eq!(Metrics::counter_value(&m.xmpp_proofs, &["out", proof]), 1);
    assert_eq!(Metrics::counter_value(&m.xmpp_proofs, &["in", proof]), 1);
    let wire = bob.seen.join("\n");
    assert!(
        !wire.contains("core.opx.example"),
        "no core name over XMPP: {wire}"
    );
    drop(bob);
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_22_alt_xmpp_messages_both_ways_by_number_with_dialback() {
    messages_both_ways(Variant::Dialback).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_22_alt_xmpp_messages_both_ways_by_number_over_tls_with_sasl_external() {
    messages_both_ways(Variant::Tls).await;
}

async fn our_user_watches_bob(variant: Variant) {
    let (xmpp_port, s2s) = (free_port(), free_port());
    let fed = operator_x(variant, xmpp_port, s2s, "").await;
    let prosody = prosody(&fed, variant, xmpp_port, s2s);
    let cx = fed.ops[0].core.clone();
    let g = fed.ops[0].gateway.as_ref().unwrap().gateway.clone();
    let mut bob = prosody.client(BOB, "bobpw").unwrap();
    let bob_id = format!("wv:{BOB}");
    let latest = |cx: &ssp_testbed::core_sim::CoreSim| cx.presence_seen("usera").last().cloned();

    // SubscribeRequest → <presence type='subscribe'> to Bob (ENUM E2U+xmpp, SRV Prosody);
    // Bob's client approves, and his presence reaches the core as a PresenceNotification.
    let st = cx.subscribe("usera", &bob_id).await.unwrap();
    assert_eq!(st.code, 200, "{st:?}\n{}", prosody.log());
    bob.expect(&["subscribe", &format!("{A}@opx.example")], WAIT)
        .unwrap_or_else(|e| panic!("{e}\n{}", prosody.log()));
    assert!(
        cx.wait_until(WAIT, |c| latest(c).is_some_and(|p| p.online == Some(true)))
            .await,
        "Bob's presence reached the core: {:?}\n{}",
        cx.presence_seen("usera"),
        prosody.log()
    );
    let p = latest(&cx).unwrap();
    assert_eq!(p.presentity, bob_id, "the presentity by number");
    assert_eq!(p.availability, "AVAILABLE");
    assert_eq!(
        g.metrics()
            .xmpp_subscriptions
            .with_label_values(&["out"])
            .get(),
        1
    );

    // Bob goes away, then busy: each state once, by the mapping table.
    bob.send(&["pres", "away", "Back soon"]);
    assert!(
        cx.wait_until(WAIT, |c| latest(c)
            .is_some_and(|p| p.status_text == "Back soon"))
            .await,
        "{:?}",
        cx.presence_seen("usera")
    );
    assert_eq!(latest(&cx).unwrap().availability, "NOT_AVAILABLE");
    bob.send(&["pres", "dnd", "In a meeting"]);
    assert!(
        cx.wait_until(WAIT, |c| latest(c)
            .is_some_and(|p| p.availability == "DISCREET"))
            .await,
        "{:?}",
        cx.presence_seen("usera")
    );
    assert_eq!(latest(&cx).unwrap().status_text, "In a meeting");
    // The same state said again (Prosody repeats presence) is not passed on.
    bob.send(&["pres", "dnd", "In a meeting"]);
    bob.send(&["pres", "away", "Lunch"]);
    assert!(
        cx.wait_until(WAIT, |c| latest(c)
            .is_some_and(|p| p.status_text == "Lunch"))
            .await,
        "{:?}",
        cx.presence_seen("usera")
    );
    let seen = cx.presence_seen("usera");
    for pair in seen.windows(2) {
        assert!(
            (&pair[0].availability, &pair[0].status_text, pair[0].online)
                != (&pair[1].availability, &pair[1].status_text, pair[1].online),
            "a repeated state reached the core: {seen:?}"
        );
    }

    // GetPresenceRequest: the state the subscription last said.
    let (st, values) = cx.get_presence("usera", &bob_id).await.unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    assert_eq!(values[0].status_text, "Lunch");

    // UnsubscribeRequest → unsubscribe: nothing more reaches the core.
    let st = cx.unsubscribe("usera", &bob_id).await.unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    assert_eq!(
        g.metrics()
            .xmpp_subscriptions
            .with_label_values(&["out"])
            .get(),
        0
    );
    let before = stanzas(&fed, "in", "presence", "taken");
    let n = cx.presence_seen("usera").len();
    bob.send(&["pres", "", "Back"]);
    // Bob's server no longer sends us his presence; a probe of ours would show it if the
    // subscription were still there. What did come (if anything) was dropped.
    bob.send(&["sub", &format!("{A}@opx.example")]);
    assert!(
        cx.wait_until(WAIT, |c| c
            .watchers("usera")
            .iter()
            .any(|w| w.contains(BOB)))
            .await,
        "a later stanza from Bob got through: the stream is alive"
    );
    assert!(stanzas(&fed, "in", "presence", "taken") > before);
    assert_eq!(cx.presence_seen("usera").len(), n, "nothing after the end");
    drop(bob);
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_21_alt_xmpp_our_user_watches_an_xmpp_user_by_number_with_dialback() {
    our_user_watches_bob(Variant::Dialback).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_21_alt_xmpp_our_user_watches_an_xmpp_user_by_number_over_tls() {
    our_user_watches_bob(Variant::Tls).await;
}

async fn bob_watches_our_user(variant: Variant) {
    let (xmpp_port, s2s) = (free_port(), free_port());
    let fed = operator_x(variant, xmpp_port, s2s, "").await;
    let prosody = prosody(&fed, variant, xmpp_port, s2s);
    let cx = fed.ops[0].core.clone();
    let g = fed.ops[0].gateway.as_ref().unwrap().gateway.clone();
    let mut bob = prosody.client(BOB, "bobpw").unwrap();
    let ours = format!("{A}@opx.example");

    // Bob subscribes to A's number: the core hears a SubscribeRequest from Bob by number,
    // grants it, and Bob's server is told `subscribed`.
    bob.send(&["sub", &ours]);
    assert!(
        cx.wait_until(WAIT, |c| c
            .watchers("usera")
            .iter()
            .any(|w| w.contains(BOB)))
            .await,
        "Bob watches A at the core: {:?}\n{}",
        cx.watchers("usera"),
        prosody.log()
    );
    bob.expect(&["presence", &ours, "subscribed"], WAIT)
        .unwrap_or_else(|e| panic!("{e}\n{}", prosody.log()));
    assert_eq!(
        g.metrics()
            .xmpp_subscriptions
            .with_label_values(&["in"])
            .get(),
        1
    );

    // A's new state goes to Bob as presence (DISCREET → dnd), by number, no core name.
    cx.set_presence("usera", "DISCREET", "Busy now")
        .await
        .unwrap();
    let p = bob
        .expect(&["presence", &ours, "available", "dnd"], WAIT)
        .unwrap_or_else(|e| panic!("{e}\n{}", prosody.log()));
    assert_eq!(p[4], "Busy now");
    // The core says NOT_AVAILABLE with OnlineStatus F: offline is `unavailable`, its text kept.
    cx.set_presence("usera", "NOT_AVAILABLE", "Away")
        .await
        .unwrap();
    let p = bob
        .expect(&["presence", &ours, "unavailable"], WAIT)
        .unwrap();
    assert_eq!(p[4], "Away");
    assert!(!bob.seen.join("\n").contains("core.opx.example"));

    // Bob ends it: the core hears an UnsubscribeRequest.
    bob.send(&["unsub", &ours]);
    assert!(
        cx.wait_until(WAIT, |c| !c
            .watchers("usera")
            .iter()
            .any(|w| w.contains(BOB)))
            .await,
        "{:?}",
        cx.watchers("usera")
    );
    assert_eq!(
        g.metrics()
            .xmpp_subscriptions
            .with_label_values(&["in"])
            .get(),
        0
    );
    drop(bob);
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_21_alt_xmpp_an_xmpp_user_watches_our_user_by_number_with_dialback() {
    bob_watches_our_user(Variant::Dialback).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_21_alt_xmpp_an_xmpp_user_watches_our_user_by_number_over_tls() {
    bob_watches_our_user(Variant::Tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_20_alt_xmpp_contact_added_by_number() {
    let fed = operator_x(Variant::Dialback, free_port(), free_port(), "").await;
    let cx = fed.ops[0].core.clone();
    // Bob's number is placed at an XMPP operator (ENUM E2U+xmpp): XMPP has no search
    // between servers, so the gateway answers with the number's own ID.
    let (st, hits) = cx.search_msisdn("usera", BOB).await.unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    assert_eq!(
        hits.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        [format!("wv:{BOB}")]
    );
    fed.shutdown().await;
}
