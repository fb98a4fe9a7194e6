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
/// Carol at opb.example: ENUM names her by `im:` (any protocol); opb.example's DNS offers
/// XMPP only (`_xmpp-server._tcp`, no IMPS server).
const CAROL: &str = "+4915122222222";
/// A number ENUM places at opb.example, whose user Prosody does not have.
const NOBODY: &str = "+4915100000000";
const WAIT: Duration = Duration::from_secs(15);

/// How Prosody's server-to-server streams are secured and proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// No TLS; Server Dialback.
    Dialback,
    /// STARTTLS required; SASL EXTERNAL with certificates of the test CA.
    Tls,
    /// STARTTLS required, Prosody's certificate from a CA the gateway does not trust:
    /// encryption only, and Server Dialback over TLS.
    TlsDialback,
}

/// Operator X (IMPS, the gateway's XMPP listener on `xmpp_port`, federating with
/// opb.example as `variant` says, with `extra` in `[xmpp]`) and the DNS that places Bob at
/// opb.example, whose XMPP server listens on `prosody_s2s`.
async fn operator_x(variant: Variant, xmpp_port: u16, prosody_s2s: u16, extra: &str) -> Federation {
    operator_x_dns(variant, xmpp_port, prosody_s2s, extra, Vec::new()).await
}

/// The same, with `peer` added to opb.example's `[[xmpp.peer]]`.
async fn operator_x_peer(
    variant: Variant,
    xmpp_port: u16,
    prosody_s2s: u16,
    peer: &str,
) -> Federation {
    operator_x_full(variant, xmpp_port, prosody_s2s, "", peer, Vec::new()).await
}

/// The same, with `records` added to the DNS (zone index, record: 0 is e164.arpa, 1 the
/// operators' zone).
async fn operator_x_dns(
    variant: Variant,
    xmpp_port: u16,
    prosody_s2s: u16,
    extra: &str,
    records: Vec<(usize, String)>,
) -> Federation {
    operator_x_full(variant, xmpp_port, prosody_s2s, extra, "", records).await
}

/// Operator X with `extra` in `[xmpp]`, `peer` in opb.example's `[[xmpp.peer]]` and
/// `records` in the DNS.
async fn operator_x_full(
    variant: Variant,
    xmpp_port: u16,
    prosody_s2s: u16,
    extra: &str,
    peer: &str,
    records: Vec<(usize, String)>,
) -> Federation {
    assert!(
        xmpplab::available() && Nsd::available(),
        "prosody, the slixmpp venv and nsd are needed (tests/run makes them)"
    );
    let mut x = OperatorSpec::new('x', "46").user("usera", A, "User A");
    let policy = match variant {
        Variant::Dialback => "require_tls = false\nallow_dialback = true",
        Variant::Tls => "require_tls = true\nallow_dialback = false",
        Variant::TlsDialback => "require_tls = true\nallow_dialback = true",
    };
    x.extra_toml = format!(
        "\n[xmpp]\nlisten = \"127.0.0.1:{xmpp_port}\"\n{extra}\n\
         [[xmpp.peer]]\ndomain = \"opb.example\"\n{policy}\n{peer}\n"
    );
    Federation::start_dns(vec![x], DnsKind::Nsd, move |gws| {
        let mut z = zones(gws, prosody_s2s);
        for (i, r) in &records {
            z[*i].add(r);
        }
        z
    })
    .await
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
    z[0].add(&naptr(
        CAROL,
        "e164.arpa",
        100,
        10,
        "E2U+im",
        &format!("im:{CAROL}@opb.example"),
        60,
    ));
    z[0].add(&naptr(
        NOBODY,
        "e164.arpa",
        100,
        10,
        "E2U+xmpp",
        &format!("xmpp:{NOBODY}@opb.example"),
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
    // In the TLS-and-dialback variant opb.example's certificate is from a CA of its own,
    // which the gateway does not trust (Prosody trusts ours).
    let own = ssp_gateway::certs::DevCa::new("opb.example's own CA").unwrap();
    let issued = match variant {
        Variant::TlsDialback => own.issue("opb.example").unwrap(),
        _ => fed.ca.issue("opb.example").unwrap(),
    };
    let tls = ProsodyTls {
        ca_pem: fed.ca.cert_pem(),
        cert_pem: &issued.cert_pem,
        key_pem: &issued.key_pem,
        secure_auth: variant == Variant::Tls,
    };
    Prosody::start_on(
        "opb.example",
        s2s_port,
        &[(BOB, "bobpw"), (CAROL, "carolpw")],
        &[("opx.example", xmpp_port)],
        (variant != Variant::Dialback).then_some(&tls),
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

    // Carol's number: ENUM says im: at opb.example, whose DNS offers XMPP and no IMPS
    // server: the XMPP link too.
    let mut carol = prosody.client(CAROL, "carolpw").unwrap();
    let (_, st) = cx
        .send_message("usera", &[&format!("wv:{CAROL}")], "Hello Carol", false)
        .await
        .unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    let m = carol.expect(&["message", &ours], WAIT).unwrap();
    assert_eq!(m[2], "Hello Carol");
    drop(carol);

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
    assert_eq!(requests("outbound", "ssp"), 3, "the core speaks SSP");
    assert_eq!(Metrics::counter_value(&m.deliveries, &["xmpp", "ok"]), 3);
    assert_eq!(stanzas(&fed, "out", "message", "sent"), 3);
    assert_eq!(stanzas(&fed, "out", "receipt", "sent"), 1);
    assert_eq!(stanzas(&fed, "in", "receipt", "taken"), 1);
    assert_eq!(
        m.xmpp_streams.with_label_values(&["out"]).get(),
        1,
        "one stream out, reused"
    );
    // Each way proved as the variant says.
    let (out, inbound) = match variant {
        Variant::Dialback => ("dialback", "dialback"),
        Variant::Tls => ("sasl-external", "sasl-external"),
        // Prosody takes our certificate (SASL EXTERNAL); we do not take its: dialback.
        Variant::TlsDialback => ("sasl-external", "dialback"),
    };
    assert_eq!(Metrics::counter_value(&m.xmpp_proofs, &["out", out]), 1);
    assert_eq!(Metrics::counter_value(&m.xmpp_proofs, &["in", inbound]), 1);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_22_alt_xmpp_messages_both_ways_over_tls_with_dialback_for_an_untrusted_certificate() {
    messages_both_ways(Variant::TlsDialback).await;
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
    // Bob's server sends his presence no more (what came would be dropped): once his
    // subscribe, sent after it on the same lane, reached the core, nothing else had.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_22_alt_xmpp_receipts_bounces_and_silence_become_delivery_reports() {
    let (xmpp_port, s2s) = (free_port(), free_port());
    let fed = operator_x(Variant::Dialback, xmpp_port, s2s, "receipt_wait = \"2s\"").await;
    let prosody = Prosody::start_on(
        "opb.example",
        s2s,
        &[(BOB, "bobpw")],
        &[("opx.example", xmpp_port)],
        None,
    )
    .unwrap();
    let cx = fed.ops[0].core.clone();
    // Bob's phone never confirms anything.
    let mut bob = prosody.client_without_receipts(BOB, "bobpw").unwrap();
    let ours = format!("{A}@opx.example");
    let (_, st) = cx
        .send_message("usera", &[&format!("wv:{BOB}")], "Did you get this?", true)
        .await
        .unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    assert_eq!(
        st.description.as_deref(),
        Some("Sent; its delivery will be reported")
    );
    bob.expect(&["message", &ours, "Did you get this?"], WAIT)
        .unwrap();
    // No receipt within receipt_wait: reported, as not confirmed, never as delivered.
    assert!(
        cx.wait_until(WAIT, |c| !c.delivery_reports("usera").is_empty())
            .await,
        "a report at the deadline"
    );
    let r = cx.delivery_reports("usera")[0].clone();
    assert_ne!(r.code, 200, "{r:?}");
    assert_eq!(r.code, 504, "{r:?}");

    // A user Prosody does not have: it bounces the message (service-unavailable), and the
    // bounce is the report (531, unknown user), not a silence.
    let (_, st) = cx
        .send_message("usera", &[&format!("wv:{NOBODY}")], "Anyone?", true)
        .await
        .unwrap();
    assert_eq!(st.code, 200, "handed over: {st:?}");
    assert!(
        cx.wait_until(WAIT, |c| c.delivery_reports("usera").len() == 2)
            .await,
        "the bounce became a report\n{}",
        prosody.log()
    );
    let r = cx.delivery_reports("usera")[1].clone();
    assert_eq!(r.code, 531, "{r:?}");
    assert_eq!(r.recipient, format!("wv:{NOBODY}"));
    assert_eq!(stanzas(&fed, "in", "message", "error"), 1);
    drop(bob);
    fed.shutdown().await;
}

/// An XMPP server that takes a stream, offers dialback, and then says nothing at all: what
/// Prosody does when it cannot dial back the sending domain (it neither validates nor
/// bounces). How many streams it took.
async fn silent_server() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = taken.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = l.accept().await {
            t.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let mut seen = String::new();
                while !seen.contains("<stream:stream") {
                    match tcp.read(&mut buf).await {
                        Ok(n) if n > 0 => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                        _ => return,
                    }
                }
                let _ = tcp
                    .write_all(
                        format!(
                            "{}<stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>",
                            xmpplab::header("opc.example", "opx.example")
                                .replace("version='1.0'>", "id='silent1' version='1.0'>")
                        )
                        .as_bytes(),
                    )
                    .await;
                // Read and drop everything, answer nothing.
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                }
            });
        }
    });
    (port, taken)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_22_alt_xmpp_a_stream_never_proved_gets_the_requester_an_error_at_its_deadline() {
    const CAROL: &str = "+4930123456789";
    let (silent, taken) = silent_server().await;
    let records = vec![
        (
            0,
            naptr(
                CAROL,
                "e164.arpa",
                100,
                10,
                "E2U+xmpp",
                &format!("xmpp:{CAROL}@opc.example"),
                60,
            ),
        ),
        (
            1,
            format!("_xmpp-server._tcp.opc 60 IN SRV 10 0 {silent} xmpp.opc"),
        ),
        (1, "xmpp.opc 60 IN A 127.0.0.1".to_owned()),
    ];
    let fed = operator_x_dns(
        Variant::Dialback,
        free_port(),
        free_port(),
        // Nothing waits in the queue here: the requester gets the deadline's error itself
        // (with the default `queue = "accept"` the message is kept and tried again).
        "[[xmpp.peer]]\ndomain = \"opc.example\"\nrequire_tls = false\nallow_dialback = true\n\
         [store]\nqueue = \"off\"",
        records,
    )
    .await;
    let cx = fed.ops[0].core.clone();
    let started = std::time::Instant::now();
    let (_, st) = cx
        .send_message("usera", &[&format!("wv:{CAROL}")], "Into the void", false)
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        taken.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the stream was opened"
    );
    assert!(
        matches!(st.code, 503 | 504),
        "an error at the deadline, not a silent success: {st:?}"
    );
    // The request deadline ([timeouts] request = 4 s), not the far side, ended it.
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert_eq!(stanzas(&fed, "out", "message", "sent"), 0);
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_22_alt_xmpp_hostile_input_is_refused_and_closes_no_other_stream() {
    let (xmpp_port, s2s) = (free_port(), free_port());
    let fed = operator_x(
        Variant::Tls,
        xmpp_port,
        s2s,
        "max_stanza = 10000\nauth_timeout = \"2s\"",
    )
    .await;
    let prosody = prosody(&fed, Variant::Tls, xmpp_port, s2s);
    let cx = fed.ops[0].core.clone();
    let g = fed.ops[0].gateway.as_ref().unwrap().gateway.clone();
    let mut bob = prosody.client(BOB, "bobpw").unwrap();
    let ours = format!("{A}@opx.example");
    // Prosody's stream to us is up and proved.
    bob.send(&["msg", &ours, "before"]);
    assert_eq!(cx.message("usera", 0, WAIT).await.unwrap().text, "before");
    let w = Duration::from_secs(5);
    let issued = fed.ca.issue("opb.example").unwrap();

    // An XML bomb: a DTD with entities, refused before anything is expanded.
    let mut s = xmpplab::RawStream::connect(xmpp_port).await.unwrap();
    s.send(
        "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;&lol;'>]>",
    )
    .await
    .unwrap();
    s.send(&xmpplab::header("opb.example", "opx.example"))
        .await
        .unwrap();
    assert!(s.until("restricted-xml", w).await, "{}", s.got);
    assert!(s.closed(w).await);
    // The error follows a header of ours (the stream: prefix bound), as RFC 6120 says.
    let header_at = s.got.find("<stream:stream").unwrap();
    assert!(
        header_at < s.got.find("<stream:error").unwrap(),
        "{}",
        s.got
    );

    // A stanza over the limit, on a proved stream.
    let mut s = xmpplab::RawStream::connect(xmpp_port).await.unwrap();
    s.prove_by_certificate(
        "opb.example",
        "opx.example",
        fed.ca.cert_pem(),
        &issued.cert_pem,
        &issued.key_pem,
    )
    .await
    .unwrap();
    s.send(&format!(
        "<message from='{BOB}@opb.example' to='{ours}'><body>{}</body></message>",
        "x".repeat(20_000)
    ))
    .await
    .unwrap();
    assert!(s.until("policy-violation", w).await, "{}", s.got);
    assert!(s.closed(w).await);

    // A `from` outside the domain the stream proved.
    let mut s = xmpplab::RawStream::connect(xmpp_port).await.unwrap();
    s.prove_by_certificate(
        "opb.example",
        "opx.example",
        fed.ca.cert_pem(),
        &issued.cert_pem,
        &issued.key_pem,
    )
    .await
    .unwrap();
    s.send(&format!(
        "<message from='mallory@evil.example' to='{ours}'><body>spoof</body></message>"
    ))
    .await
    .unwrap();
    assert!(s.until("invalid-from", w).await, "{}", s.got);
    assert!(s.closed(w).await);

    // A certificate for another domain does not prove opb.example.
    let other = fed.ca.issue("opz.example").unwrap();
    let mut s = xmpplab::RawStream::connect(xmpp_port).await.unwrap();
    let proved = s
        .prove_by_certificate(
            "opb.example",
            "opx.example",
            fed.ca.cert_pem(),
            &other.cert_pem,
            &other.key_pem,
        )
        .await;
    assert!(proved.is_err(), "{}", s.got);
    assert!(s.got.contains("not-authorized"), "{}", s.got);

    // A stanza before the stream proved anything.
    let mut s = xmpplab::RawStream::connect(xmpp_port).await.unwrap();
    s.send(&xmpplab::header("opb.example", "opx.example"))
        .await
        .unwrap();
    assert!(s.until("</stream:features>", w).await);
    s.send(&format!(
        "<message from='{BOB}@opb.example' to='{ours}'><body>unproved</body></message>"
    ))
    .await
    .unwrap();
    assert!(s.until("not-authorized", w).await, "{}", s.got);
    assert!(s.closed(w).await);

    // A stream that never proves itself is ended at auth_timeout (2 s here), not before.
    let opened = std::time::Instant::now();
    let mut s = xmpplab::RawStream::connect(xmpp_port).await.unwrap();
    s.send(&xmpplab::header("opb.example", "opx.example"))
        .await
        .unwrap();
    assert!(s.until("not-authorized", w).await, "{}", s.got);
    assert!(
        opened.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        opened.elapsed()
    );
    assert!(s.closed(w).await);

    // A number the sending domain does not hold (ENUM places it nowhere): refused, counted
    // as spoofing, never delivered.
    let mut s = xmpplab::RawStream::connect(xmpp_port).await.unwrap();
    s.prove_by_certificate(
        "opb.example",
        "opx.example",
        fed.ca.cert_pem(),
        &issued.cert_pem,
        &issued.key_pem,
    )
    .await
    .unwrap();
    s.send(&format!(
        "<message from='+4930999999999@opb.example' to='{ours}' id='sp1'><body>spoofed</body></message>"
    ))
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while Metrics::counter_value(&g.metrics().refused, &["spoof"]) == 0
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(Metrics::counter_value(&g.metrics().refused, &["spoof"]), 1);
    // And answered with a stanza error (to opb.example, for its user).
    let deadline = tokio::time::Instant::now() + WAIT;
    while stanzas(&fed, "out", "error", "sent") == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stanzas(&fed, "out", "error", "sent"), 1, "forbidden");
    drop(s);

    // Not an open relay: Bob writing to a number that is not ours gets item-not-found.
    bob.send(&["msg", "+46700000000@opx.example", "anyone?"]);
    bob.expect(
        &["error", "+46700000000@opx.example", "item-not-found"],
        WAIT,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", prosody.log()));

    // None of it closed Prosody's stream: Bob's next message arrives; nothing else did.
    bob.send(&["msg", &ours, "after"]);
    assert_eq!(cx.message("usera", 1, WAIT).await.unwrap().text, "after");
    assert_eq!(cx.received("usera").len(), 2, "only Bob's two messages");
    drop(bob);
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_21_alt_xmpp_presence_resumes_after_a_gateway_restart() {
    let (xmpp_port, s2s) = (free_port(), free_port());
    let mut fed = operator_x(Variant::Dialback, xmpp_port, s2s, "").await;
    let prosody = prosody(&fed, Variant::Dialback, xmpp_port, s2s);
    let cx = fed.ops[0].core.clone();
    let mut bob = prosody.client(BOB, "bobpw").unwrap();
    let bob_id = format!("wv:{BOB}");
    let latest = |cx: &ssp_testbed::core_sim::CoreSim| cx.presence_seen("usera").last().cloned();
    let st = cx.subscribe("usera", &bob_id).await.unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    assert!(
        cx.wait_until(WAIT, |c| latest(c).is_some_and(|p| p.online == Some(true)))
            .await,
        "{:?}\n{}",
        cx.presence_seen("usera"),
        prosody.log()
    );

    // The gateway goes down; Bob changes his state meanwhile.
    fed.stop_gateway(0).await;
    // Prosody saw its stream to us end (else the state could go down it as it closes).
    let deadline = std::time::Instant::now() + WAIT;
    while !prosody
        .log()
        .contains("Outgoing s2s stream opb.example->opx.example closed")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "Prosody's stream to us did not end\n{}",
            prosody.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bob.send(&["pres", "away", "While you were out"]);
    // Prosody tries to tell us, and cannot: the state is not delivered.
    let deadline = std::time::Instant::now() + WAIT;
    while !prosody
        .log()
        .contains("because of failed outgoing connection to opx.example")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "Prosody did not try us while we were down\n{}",
            prosody.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Back up: the subscription comes back from the store (no new subscribe), and a probe
    // learns what changed.
    fed.restart_gateway(0).await;
    let g = fed.ops[0].gateway.as_ref().unwrap().gateway.clone();
    assert_eq!(
        g.metrics()
            .xmpp_subscriptions
            .with_label_values(&["out"])
            .get(),
        1
    );
    assert!(
        cx.wait_until(WAIT, |c| latest(c)
            .is_some_and(|p| p.status_text == "While you were out"))
            .await,
        "the state of the moment after the restart: {:?}\n{}",
        cx.presence_seen("usera"),
        prosody.log()
    );
    assert_eq!(latest(&cx).unwrap().availability, "NOT_AVAILABLE");
    // And later changes flow as before.
    bob.send(&["pres", "dnd", "Busy again"]);
    assert!(
        cx.wait_until(WAIT, |c| latest(c)
            .is_some_and(|p| p.status_text == "Busy again"))
            .await,
        "{:?}",
        cx.presence_seen("usera")
    );
    assert_eq!(
        stanzas(&fed, "out", "presence", "sent"),
        1,
        "after the restart: the probe, no new subscribe"
    );
    drop(bob);
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_22_alt_xmpp_a_domain_over_its_rate_gets_resource_constraint() {
    let (xmpp_port, s2s) = (free_port(), free_port());
    // opb.example may send one stanza a second, with a burst of two.
    let fed = operator_x_peer(Variant::Dialback, xmpp_port, s2s, "rate = 1\nburst = 2").await;
    let prosody = prosody(&fed, Variant::Dialback, xmpp_port, s2s);
    let cx = fed.ops[0].core.clone();
    let mut bob = prosody.client(BOB, "bobpw").unwrap();
    let ours = format!("{A}@opx.example");
    for i in 0..5 {
        bob.send(&["msg", &ours, &format!("burst {i}")]);
    }
    let err = bob
        .expect(&["error", &ours, "resource-constraint"], WAIT)
        .unwrap_or_else(|e| panic!("{e}\n{}", prosody.log()));
    assert_eq!(err[0], "error");
    let g = fed.ops[0].gateway.as_ref().unwrap().gateway.clone();
    assert!(Metrics::counter_value(&g.metrics().refused, &["rate"]) >= 1);
    assert!(
        cx.received("usera").len() < 5,
        "not all of the burst got through"
    );
    drop(bob);
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_22_alt_xmpp_a_stream_that_fails_is_tried_again_after_a_backoff() {
    const DAN: &str = "+4930123456788";
    let (silent, taken) = silent_server().await;
    let records = vec![
        (
            0,
            naptr(
                DAN,
                "e164.arpa",
                100,
                10,
                "E2U+xmpp",
                &format!("xmpp:{DAN}@opc.example"),
                60,
            ),
        ),
        (
            1,
            format!("_xmpp-server._tcp.opc 60 IN SRV 10 0 {silent} xmpp.opc"),
        ),
        (1, "xmpp.opc 60 IN A 127.0.0.1".to_owned()),
    ];
    let fed = operator_x_dns(
        Variant::Dialback,
        free_port(),
        free_port(),
        "auth_timeout = \"1s\"\n\
         [[xmpp.peer]]\ndomain = \"opc.example\"\nrequire_tls = false\nallow_dialback = true\n\
         [store]\nqueue = \"off\"",
        records,
    )
    .await;
    let cx = fed.ops[0].core.clone();
    let dan = format!("wv:{DAN}");
    let to = [dan.as_str()];
    let send = || cx.send_message("usera", &to, "Hello?", false);
    // The stream is not proved within auth_timeout: the domain is backed off (1 s first).
    let (_, st) = send().await.unwrap();
    assert_eq!(st.code, 503, "{st:?}");
    assert_eq!(taken.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Within the backoff: refused at once, no new connection.
    let started = std::time::Instant::now();
    let (_, st) = send().await.unwrap();
    assert_eq!(st.code, 503, "{st:?}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        taken.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "no new connection"
    );
    // After it, tried again.
    let deadline = std::time::Instant::now() + WAIT;
    while taken.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        assert!(std::time::Instant::now() < deadline, "never tried again");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = send().await.unwrap();
    }
    let g = fed.ops[0].gateway.as_ref().unwrap().gateway.clone();
    assert!(Metrics::counter_value(&g.metrics().xmpp_proofs, &["out", "failed"]) >= 2);
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_22_alt_xmpp_an_idle_stream_is_closed_and_opened_again_when_needed() {
    let (xmpp_port, s2s) = (free_port(), free_port());
    let fed = operator_x(Variant::Dialback, xmpp_port, s2s, "idle = \"1s\"").await;
    let prosody = prosody(&fed, Variant::Dialback, xmpp_port, s2s);
    let cx = fed.ops[0].core.clone();
    let g = fed.ops[0].gateway.as_ref().unwrap().gateway.clone();
    let mut bob = prosody.client(BOB, "bobpw").unwrap();
    let ours = format!("{A}@opx.example");
    let out = || g.metrics().xmpp_streams.with_label_values(&["out"]).get();
    let (_, st) = cx
        .send_message("usera", &[&format!("wv:{BOB}")], "one", false)
        .await
        .unwrap();
    assert_eq!(st.code, 200);
    bob.expect(&["message", &ours, "one"], WAIT).unwrap();
    assert_eq!(out(), 1);
    // Unused for `idle`: closed.
    let deadline = std::time::Instant::now() + WAIT;
    while out() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle stream stayed open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The next message opens (and proves) a new one.
    let (_, st) = cx
        .send_message("usera", &[&format!("wv:{BOB}")], "two", false)
        .await
        .unwrap();
    assert_eq!(st.code, 200);
    bob.expect(&["message", &ours, "two"], WAIT).unwrap();
    assert_eq!(
        Metrics::counter_value(&g.metrics().xmpp_proofs, &["out", "dialback"]),
        2
    );
    drop(bob);
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_22_alt_xmpp_a_report_awaited_survives_a_restart() {
    let (xmpp_port, s2s) = (free_port(), free_port());
    let mut fed = operator_x(Variant::Dialback, xmpp_port, s2s, "receipt_wait = \"3s\"").await;
    let prosody = Prosody::start_on(
        "opb.example",
        s2s,
        &[(BOB, "bobpw")],
        &[("opx.example", xmpp_port)],
        None,
    )
    .unwrap();
    let cx = fed.ops[0].core.clone();
    let mut bob = prosody.client_without_receipts(BOB, "bobpw").unwrap();
    let (_, st) = cx
        .send_message("usera", &[&format!("wv:{BOB}")], "Report me", true)
        .await
        .unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    bob.expect(&["message", &format!("{A}@opx.example"), "Report me"], WAIT)
        .unwrap();
    // The gateway goes down while the receipt is awaited, and comes back.
    fed.stop_gateway(0).await;
    fed.restart_gateway(0).await;
    // The restarted process took the awaited message up from the store: its report comes,
    // as not confirmed, when its time runs out.
    assert!(
        cx.wait_until(WAIT, |c| !c.delivery_reports("usera").is_empty())
            .await,
        "no report after the restart"
    );
    let r = cx.delivery_reports("usera")[0].clone();
    assert_eq!(r.code, 504, "{r:?}");
    assert_eq!(r.recipient, format!("wv:{BOB}"));
    drop(bob);
    fed.shutdown().await;
}
