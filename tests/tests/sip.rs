//! The SIP/SIMPLE translator against a real SIP operator: Kamailio as its proxy and
//! registrar, sipp as its user Bob (`+4915112345678` at `opb.example`), NSD serving ENUM
//! (`E2U+sip` for Bob's number) and the operator's SIP SRV record. Use case 5.22's
//! alternative flow: an IMPS user and a SIP user exchange messages by phone number, both
//! ways, through the gateway; use case 5.21's: our user watches the SIP user's presence
//! (SUBSCRIBE dialog with Kamailio's presence server, PIDF from the user's PUBLISH); and
//! what a SIP peer may not do is refused with the right SIP error; and the same over SIP over
//! TLS, with an operator trusted by its certificate.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use ssp_gateway::ops::metrics::Metrics;
use ssp_testbed::dnslab::{Nsd, Zone, free_port, naptr};
use ssp_testbed::federation::{DnsKind, Federation, OperatorSpec, federation_zones};
use ssp_testbed::siplab::{self, Kamailio, KamailioTls, SippUas};
use ssp_testbed::sipua;

const A: &str = "+46701234567";
const BOB: &str = "+4915112345678";
const WAIT: Duration = Duration::from_secs(10);

/// Operator X (IMPS, with the translator on `sip_port`, trusting opb.example from loopback)
/// and the DNS that places Bob at the SIP operator whose proxy listens on `proxy`.
async fn operator_x(sip_port: u16, proxy: u16) -> Federation {
    operator_x_with(sip_port, proxy, "").await
}

/// The same, with `peer_extra` added to opb.example's `[[sip.peer]]`.
async fn operator_x_with(sip_port: u16, proxy: u16, peer_extra: &str) -> Federation {
    operator_x_sip(sip_port, proxy, "", peer_extra).await
}

/// The same, with `sip_extra` added to `[sip]` and `peer_extra` to opb.example's
/// `[[sip.peer]]`.
async fn operator_x_sip(
    sip_port: u16,
    proxy: u16,
    sip_extra: &str,
    peer_extra: &str,
) -> Federation {
    assert!(
        siplab::available() && Nsd::available(),
        "kamailio, sipp and nsd are needed (tests/run installs them)"
    );
    let mut x = OperatorSpec::new('x', "46").user("usera", A, "User A");
    x.extra_toml = format!(
        "\n[sip]\nlisten = \"127.0.0.1:{sip_port}\"\nmax_body = 1000\n{sip_extra}\n\
         [[sip.peer]]\ndomain = \"opb.example\"\naddresses = [\"127.0.0.1\"]\n{peer_extra}"
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
    sip_method_count(fed, direction, "MESSAGE", result)
}

fn sip_method_count(fed: &Federation, direction: &str, method: &str, result: &str) -> u64 {
    let g = &fed.ops[0].gateway.as_ref().unwrap().gateway;
    Metrics::counter_value(&g.metrics().sip, &[direction, method, result])
}

/// Bob publishes his presence to his operator's presence server (sipp, PIDF with RPID),
/// replacing the publication `etag` names if any: the new publication's SIP-ETag.
fn publish(
    kamailio: &Kamailio,
    etag: Option<&str>,
    basic: &str,
    activity: &str,
    note: &str,
) -> String {
    let mut keys = vec![
        ("user", BOB),
        ("domain", "opb.example"),
        ("basic", basic),
        ("activity", activity),
        ("note", note),
    ];
    let scenario = match etag {
        Some(e) => {
            keys.push(("etag", e));
            "publish_modify.xml"
        }
        None => "publish.xml",
    };
    let (rc, log) = siplab::uac(scenario, kamailio.port, free_port(), &keys).unwrap();
    assert_eq!(rc, 0, "Bob publishes:\n{log}\n{}", kamailio.log());
    log.lines()
        .find_map(|l| l.trim().strip_prefix("SIP-ETag:"))
        .map(|e| e.trim().to_owned())
        .expect("the presence server names the publication")
}

/// Bob's phone (listening on `phone`) registers with his operator's proxy, from `from`.
fn register_bob(kamailio: &Kamailio, from: u16, phone: u16) {
    let port = phone.to_string();
    let (rc, log) = siplab::uac(
        "register.xml",
        kamailio.port,
        from,
        &[
            ("user", BOB),
            ("domain", "opb.example"),
            ("contact_port", &port),
        ],
    )
    .unwrap();
    assert_eq!(rc, 0, "Bob registers:\n{log}\n{}", kamailio.log());
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
    register_bob(&kamailio, bob_reg, bob_phone);

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
    // The protocol dimension: Bob's MESSAGE came in SIP, both of A's went out SIP.
    let m = fed.ops[0].gateway.as_ref().unwrap().gateway.metrics();
    let requests = |d, p| Metrics::counter_value(&m.requests, &[d, p, "SendMessageRequest"]);
    assert_eq!(
        (requests("inbound", "sip"), requests("inbound", "ssp")),
        (1, 0)
    );
    assert_eq!(requests("outbound", "ssp"), 2, "the core speaks SSP");
    assert_eq!(
        Metrics::counter_value(&m.answers, &["inbound", "sip", "200"]),
        1
    );
    assert_eq!(Metrics::counter_value(&m.deliveries, &["sip", "ok"]), 2);
    assert_eq!(
        Metrics::counter_value(&m.deliveries, &["ssp", "ok"]),
        1,
        "Bob's to the core"
    );
    let text = m.render();
    assert!(
        text.contains(
            "ssp_request_duration_seconds_count{direction=\"inbound\",protocol=\"sip\"} 1"
        ),
        "{text}"
    );
    fed.shutdown().await;
}

/// Operator B's SIP servers offered over TLS only (`_sips._tcp`), at Kamailio's TLS port.
fn tls_zones(gateways: &[(String, u16)], proxy_tls: u16) -> Vec<Zone> {
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
    z[1].add(&format!(
        "_sips._tcp.opb 60 IN SRV 10 0 {proxy_tls} sip.opb"
    ));
    z[1].add("sip.opb 60 IN A 127.0.0.1");
    z
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_22_alt_sip_messages_both_ways_over_tls_trusted_by_certificate() {
    assert!(
        siplab::tls_available() && Nsd::available(),
        "kamailio with its TLS module, sipp and nsd are needed (tests/run installs them)"
    );
    let [
        sip_port,
        sip_tls,
        proxy,
        proxy_tls,
        bob_phone,
        bob_reg,
        bob_out,
    ] = std::array::from_fn(|_| free_port());
    // Operator B is trusted by its certificate alone: no source addresses.
    let mut x = OperatorSpec::new('x', "46").user("usera", A, "User A");
    x.extra_toml = format!(
        "\n[sip]\nlisten = \"127.0.0.1:{sip_port}\"\ntls_listen = \"127.0.0.1:{sip_tls}\"\n\
         [[sip.peer]]\ndomain = \"opb.example\"\ntls = true\n"
    );
    let fed =
        Federation::start_dns(vec![x], DnsKind::Nsd, move |gws| tls_zones(gws, proxy_tls)).await;
    let cx = fed.ops[0].core.clone();
    let issued = fed.ca.issue("opb.example").unwrap();
    let kamailio = Kamailio::start_with(
        "opb.example",
        proxy,
        "opx.example",
        sip_port,
        Some(&KamailioTls {
            port: proxy_tls,
            gateway_port: sip_tls,
            ca_pem: fed.ca.cert_pem(),
            cert_pem: &issued.cert_pem,
            key_pem: &issued.key_pem,
        }),
    )
    .unwrap();
    let mut phone = SippUas::start("uas_message.xml", bob_phone, 1).unwrap();
    register_bob(&kamailio, bob_reg, bob_phone);

    // IMPS → SIP: SRV offers B's proxy over TLS only; the gateway opens TLS to it, checks its
    // certificate names opb.example and presents ours.
    let (_, st) = cx
        .send_message(
            "usera",
            &[&format!("wv:{BOB}")],
            "Hello Bob over TLS",
            false,
        )
        .await
        .unwrap();
    assert_eq!(st.code, 200, "{st:?}\n{}", kamailio.log());
    assert!(
        kamailio.log().contains(&format!(
            "REQ MESSAGE sip:{BOB}@opb.example from sip:{A}@opx.example;user=phone over tls"
        )),
        "the MESSAGE reached Kamailio over TLS:\n{}",
        kamailio.log()
    );
    assert_eq!(phone.wait(WAIT), Some(0), "Bob's phone took it");
    assert!(phone.messages().contains("Hello Bob over TLS"));

    // SIP → IMPS: Kamailio relays Bob's MESSAGE to the gateway's TLS port with B's
    // certificate, which is what makes it trusted.
    let (rc, log) = siplab::uac(
        "uac_message.xml",
        proxy,
        bob_out,
        &[
            ("from", BOB),
            ("from_domain", "opb.example"),
            ("to", A),
            ("to_domain", "opx.example"),
            ("text", "Hi A over TLS"),
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
    assert_eq!(
        (got.text.as_str(), got.from.as_str()),
        ("Hi A over TLS", format!("wv:{BOB}").as_str())
    );

    // Who is not B: the same From over UDP from a loopback address (B is trusted by
    // certificate only), over TLS with another operator's certificate, or with none.
    let ours = format!("sip:{A}@opx.example;user=phone");
    let bob = format!("sip:{BOB}@opb.example;user=phone");
    assert_eq!(
        sipua::request(sip_port, "MESSAGE", &ours, &bob, "text/plain", "by address").await,
        Some(403)
    );
    let over_tls = |identity: Option<&'static str>, text: &'static str| {
        let (ours, bob, ca) = (ours.clone(), bob.clone(), &fed.ca);
        async move {
            sipua::tls_request(
                sip_tls,
                ca,
                identity,
                "opx.example",
                "MESSAGE",
                &ours,
                &bob,
                text,
            )
            .await
        }
    };
    assert_eq!(
        over_tls(Some("opc.example"), "C's certificate").await,
        Some(403)
    );
    assert_eq!(over_tls(None, "no certificate").await, Some(403));
    // B's own certificate, on a connection of its own: taken.
    assert_eq!(
        over_tls(Some("opb.example"), "B directly over TLS").await,
        Some(200)
    );
    let texts: Vec<String> = cx.received("usera").into_iter().map(|m| m.text).collect();
    assert_eq!(
        texts,
        ["Hi A over TLS", "B directly over TLS"],
        "only B's reached the core"
    );
    assert_eq!(sip_count(&fed, "out", "2xx"), 1);
    assert_eq!(sip_count(&fed, "in", "2xx"), 2);
    assert_eq!(sip_count(&fed, "in", "4xx"), 3);
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
    // What the translator does not take.
    assert_eq!(
        sipua::request(sip_port, "INFO", &ours, &bob, text, "").await,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_21_alt_sip_our_user_watches_a_sip_user_by_number() {
    let (sip_port, proxy) = (free_port(), free_port());
    let kamailio = Kamailio::start("opb.example", proxy, "opx.example", sip_port).unwrap();
    let fed = operator_x(sip_port, proxy).await;
    let cx = fed.ops[0].core.clone();
    let bob = format!("wv:{BOB}");
    let latest = |cx: &ssp_testbed::core_sim::CoreSim| cx.presence_seen("usera").last().cloned();
    // Bob is online and in a meeting before A subscribes.
    let etag = publish(&kamailio, None, "open", "busy", "In a meeting");

    // SubscribeRequest -> SUBSCRIBE (ENUM E2U+sip, SRV to the proxy's presence server); its
    // first NOTIFY carries Bob's state to the core as a PresenceNotification.
    let st = cx.subscribe("usera", &bob).await.unwrap();
    assert_eq!(st.code, 200, "{st:?}\n{}", kamailio.log());
    assert!(
        cx.wait_until(WAIT, |c| latest(c)
            .is_some_and(|p| p.availability == "DISCREET"))
            .await,
        "Bob's state reached the core: {:?}\n{}",
        cx.presence_seen("usera"),
        kamailio.log()
    );
    let p = latest(&cx).unwrap();
    assert_eq!(p.presentity, bob, "the presentity by number");
    assert_eq!(p.online, Some(true));
    assert_eq!(p.status_text, "In a meeting");

    // Bob goes away: the next NOTIFY is the next notification.
    publish(&kamailio, Some(&etag), "open", "away", "Back soon");
    assert!(
        cx.wait_until(WAIT, |c| latest(c)
            .is_some_and(|p| p.status_text == "Back soon"))
            .await,
        "{:?}",
        cx.presence_seen("usera")
    );
    assert_eq!(latest(&cx).unwrap().availability, "NOT_AVAILABLE");
    let seen = cx.presence_seen("usera").len();

    // GetPresenceRequest is a fetch: the state of the moment, no new notification.
    let (st, values) = cx.get_presence("usera", &bob).await.unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    assert_eq!(values.len(), 1);
    assert_eq!(values[0].availability, "NOT_AVAILABLE");
    assert_eq!(values[0].status_text, "Back soon");

    // UnsubscribeRequest ends the dialog (SUBSCRIBE Expires: 0); the server's last NOTIFY
    // (terminated) is answered 200 and tells the core nothing.
    let notifies = sip_method_count(&fed, "in", "NOTIFY", "2xx");
    let st = cx.unsubscribe("usera", &bob).await.unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    let g = fed.ops[0].gateway.as_ref().unwrap().gateway.clone();
    let deadline = tokio::time::Instant::now() + WAIT;
    while sip_method_count(&fed, "in", "NOTIFY", "2xx") == notifies
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        sip_method_count(&fed, "in", "NOTIFY", "2xx") > notifies,
        "the terminating NOTIFY was taken\n{}",
        kamailio.log()
    );
    assert_eq!(
        g.metrics().sip_subscriptions.get(),
        0,
        "no subscription left"
    );
    assert_eq!(
        cx.presence_seen("usera").len(),
        seen,
        "nothing after the end"
    );
    assert_eq!(sip_method_count(&fed, "in", "NOTIFY", "4xx"), 0);
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_21_alt_sip_a_sip_user_watches_our_user_by_number() {
    let (sip_port, proxy, bob_port) = (free_port(), free_port(), free_port());
    let kamailio = Kamailio::start("opb.example", proxy, "opx.example", sip_port).unwrap();
    let fed = operator_x(sip_port, proxy).await;
    let cx = fed.ops[0].core.clone();
    let g = fed.ops[0].gateway.as_ref().unwrap().gateway.clone();
    // Bob's phone subscribes to A's number through his proxy and waits, answering each
    // NOTIFY, until A is busy; then it ends the subscription.
    let watch = tokio::task::spawn_blocking(move || {
        siplab::uac(
            "watch.xml",
            proxy,
            bob_port,
            &[
                ("from", BOB),
                ("from_domain", "opb.example"),
                ("to", A),
                ("to_domain", "opx.example"),
            ],
        )
    });
    // The core hears a SubscribeRequest from Bob by number, and grants it.
    assert!(
        cx.wait_until(WAIT, |c| c
            .watchers("usera")
            .iter()
            .any(|w| w.contains(BOB)))
            .await,
        "Bob watches A at the core: {:?}\n{}",
        cx.watchers("usera"),
        kamailio.log()
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while g.metrics().sip_watches.get() == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(g.metrics().sip_watches.get(), 1, "the watch is kept");
    // A's new state goes to Bob as a NOTIFY with PIDF.
    cx.set_presence("usera", "DISCREET", "Busy now")
        .await
        .unwrap();
    let (rc, log) = watch.await.unwrap().unwrap();
    assert_eq!(rc, 0, "Bob's phone saw A busy:\n{log}\n{}", kamailio.log());
    assert!(log.contains("Busy now"), "the note: {log}");
    assert!(
        log.contains(&format!("entity=\"sip:{A}@opx.example;user=phone\"")),
        "A by number: {log}"
    );
    assert!(!log.contains("core.opx.example"), "no core name: {log}");
    assert!(
        log.contains("Subscription-State: terminated"),
        "the last NOTIFY: {log}"
    );
    // Bob's Expires: 0 ended it at the core too.
    assert!(
        cx.wait_until(WAIT, |c| !c
            .watchers("usera")
            .iter()
            .any(|w| w.contains(BOB)))
            .await,
        "{:?}",
        cx.watchers("usera")
    );
    assert_eq!(g.metrics().sip_watches.get(), 0);
    fed.shutdown().await;
}

/// The CSeq of the next request written by hand (one sequence: NOTIFYs in a dialog must
/// come in order).
static CSEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

/// A NOTIFY or SUBSCRIBE written by hand (`{port}` is the sending socket's).
#[allow(clippy::too_many_arguments)]
fn presence_request(
    method: &str,
    ruri: &str,
    from: &str,
    to: &str,
    call_id: &str,
    headers: &str,
    ctype: &str,
    body: &str,
) -> String {
    let branch: u64 = rand::random();
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{{port}};branch=z9hG4bK{branch:x}\r\n\
         Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n\
         CSeq: {} {method}\r\nContact: <sip:ua@127.0.0.1:{{port}}>\r\n{headers}\
         Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}",
        CSEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_21_alt_sip_bad_presence_input_gets_sip_errors_and_loses_nothing_else() {
    // Bob's operator's presence server is an in-process agent that grants every SUBSCRIBE,
    // so the test can write NOTIFYs in the dialog by hand.
    let server = sipua::SipUa::start(0).await.unwrap();
    let sip_port = free_port();
    let fed = operator_x(sip_port, server.port).await;
    let cx = fed.ops[0].core.clone();
    let st = cx.subscribe("usera", &format!("wv:{BOB}")).await.unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    assert!(server.wait_for_subscribes(1, WAIT).await);
    let sub = server.subscribes()[0].clone();
    let our_tag = sub
        .from
        .rsplit_once("tag=")
        .map(|(_, t)| t.split(';').next().unwrap_or(t).to_owned())
        .unwrap();
    // The in-process server answered the SUBSCRIBE with To tag ua200: its half of the dialog.
    let bob = format!("<sip:{BOB}@opb.example>;tag=ua200");
    let a = format!("<sip:{A}@opx.example;user=phone>;tag={our_tag}");
    let pidf = |basic: &str, activity: &str| {
        format!(
            "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\" entity=\"sip:{BOB}@opb.example\"><tuple id=\"t\"><status><basic>{basic}</basic></status></tuple><person xmlns=\"urn:ietf:params:xml:ns:pidf:data-model\"><rpid:activities><rpid:{activity}/></rpid:activities></person></presence>"
        )
    };
    let notify = |call_id: &str, event: &str, ctype: &str, body: String| {
        let raw = presence_request(
            "NOTIFY",
            &format!("sip:{A}@127.0.0.1:{sip_port}"),
            &bob,
            &a,
            call_id,
            &format!("Event: {event}\r\nSubscription-State: active;expires=600\r\n"),
            ctype,
            &body,
        );
        async move { sipua::raw_request(sip_port, &raw).await }
    };
    let xml = "application/pidf+xml";
    let bomb = format!(
        "<?xml version=\"1.0\"?><!DOCTYPE p [<!ENTITY a \"{}\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;\">]><presence xmlns=\"urn:ietf:params:xml:ns:pidf\"><note>&b;&b;&b;</note></presence>",
        "x".repeat(50)
    );
    assert_eq!(
        notify(&sub.call_id, "presence", xml, bomb).await,
        Some(400),
        "an entity bomb"
    );
    assert_eq!(
        notify(&sub.call_id, "presence", xml, "<presence".into()).await,
        Some(400),
        "malformed PIDF"
    );
    assert_eq!(
        notify(&sub.call_id, "dialog", xml, pidf("open", "busy")).await,
        Some(489),
        "another event package"
    );
    assert_eq!(
        notify(&sub.call_id, "presence", "text/plain", "online".into()).await,
        Some(415)
    );
    assert_eq!(
        notify(&sub.call_id, "presence", xml, "y".repeat(1500)).await,
        Some(413)
    );
    assert_eq!(
        notify("not-a-dialog@x", "presence", xml, pidf("open", "busy")).await,
        Some(481),
        "no such subscription"
    );
    // Nothing of that reached the core; a good NOTIFY does.
    assert!(cx.presence_seen("usera").is_empty());
    assert_eq!(
        notify(&sub.call_id, "presence", xml, pidf("open", "away")).await,
        Some(200)
    );
    assert!(
        cx.wait_until(WAIT, |c| c.presence_seen("usera").len() == 1)
            .await
    );
    assert_eq!(cx.presence_seen("usera")[0].availability, "NOT_AVAILABLE");
    // A NOTIFY from another fork of the SUBSCRIBE (another From tag) is not this dialog.
    let fork = presence_request(
        "NOTIFY",
        &format!("sip:{A}@127.0.0.1:{sip_port}"),
        &format!("<sip:{BOB}@opb.example>;tag=other"),
        &a,
        &sub.call_id,
        "Event: presence\r\nSubscription-State: active;expires=600\r\n",
        xml,
        &pidf("open", "busy"),
    );
    assert_eq!(sipua::raw_request(sip_port, &fork).await, Some(481));
    assert_eq!(
        cx.presence_seen("usera").len(),
        1,
        "nothing else reached the core"
    );

    // SUBSCRIBEs to our users that are refused before the core hears of them.
    let ours = format!("sip:{A}@opx.example;user=phone");
    let subscribe = |ruri: String, from: String, event: &str, expires: u32| {
        let raw = presence_request(
            "SUBSCRIBE",
            &ruri,
            &format!("<{from}>;tag=w1"),
            &format!("<{ruri}>"),
            &format!("{}@127.0.0.1", rand::random::<u64>()),
            &format!("Event: {event}\r\nExpires: {expires}\r\n"),
            "application/pidf+xml",
            "",
        );
        async move { sipua::raw_request(sip_port, &raw).await }
    };
    let bob_uri = format!("sip:{BOB}@opb.example;user=phone");
    assert_eq!(
        subscribe(ours.clone(), "sip:eve@evil.example".into(), "presence", 600).await,
        Some(403),
        "an untrusted domain"
    );
    assert_eq!(
        subscribe(ours.clone(), bob_uri.clone(), "message-summary", 600).await,
        Some(489)
    );
    assert_eq!(
        subscribe(ours.clone(), bob_uri.clone(), "presence", 5).await,
        Some(423),
        "too short"
    );
    assert_eq!(
        subscribe(
            "sip:+46700000000@opx.example;user=phone".into(),
            bob_uri.clone(),
            "presence",
            600
        )
        .await,
        Some(404),
        "not our subscriber"
    );
    assert_eq!(
        subscribe(
            ours,
            "sip:+46709999999@opb.example".to_owned(),
            "presence",
            600
        )
        .await,
        Some(403),
        "a number ENUM places elsewhere"
    );
    assert!(cx.watchers("usera").is_empty(), "the core heard of none");
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_21_alt_sip_presence_resumes_after_a_gateway_restart() {
    let (sip_port, proxy) = (free_port(), free_port());
    let kamailio = Kamailio::start("opb.example", proxy, "opx.example", sip_port).unwrap();
    let mut fed = operator_x(sip_port, proxy).await;
    let cx = fed.ops[0].core.clone();
    let latest = |cx: &ssp_testbed::core_sim::CoreSim| cx.presence_seen("usera").last().cloned();
    let etag = publish(&kamailio, None, "open", "busy", "In a meeting");
    let st = cx.subscribe("usera", &format!("wv:{BOB}")).await.unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    assert!(
        cx.wait_until(WAIT, |c| latest(c)
            .is_some_and(|p| p.availability == "DISCREET"))
            .await
    );
    // The gateway stops and starts again on the same ports and state store; the core does
    // not subscribe again. Bob's next change still reaches it: the dialog was kept.
    fed.stop_gateway(0).await;
    fed.restart_gateway(0).await;
    publish(&kamailio, Some(&etag), "open", "away", "After the restart");
    assert!(
        cx.wait_until(WAIT, |c| latest(c)
            .is_some_and(|p| p.status_text == "After the restart"))
            .await,
        "{:?}\n{}",
        cx.presence_seen("usera"),
        kamailio.log()
    );
    let g = fed.ops[0].gateway.as_ref().unwrap().gateway.clone();
    assert_eq!(g.metrics().sip_subscriptions.get(), 1, "taken up at start");
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_22_alt_sip_an_operator_over_its_rate_gets_503() {
    let sip_port = free_port();
    let fed = operator_x_with(sip_port, free_port(), "rate = 1\nburst = 2\n").await;
    let cx = fed.ops[0].core.clone();
    let ours = format!("sip:{A}@opx.example;user=phone");
    let bob = format!("sip:{BOB}@opb.example;user=phone");
    let mut codes = Vec::new();
    for i in 0..5 {
        let text = format!("burst {i}");
        codes.push(
            sipua::request(sip_port, "MESSAGE", &ours, &bob, "text/plain", &text)
                .await
                .unwrap(),
        );
    }
    let taken = codes.iter().filter(|c| **c == 200).count();
    assert!(
        (2..=3).contains(&taken),
        "the burst is taken, the rest refused: {codes:?}"
    );
    assert!(codes.iter().all(|c| *c == 200 || *c == 503), "{codes:?}");
    assert_eq!(
        cx.received("usera").len(),
        taken,
        "nothing refused was delivered"
    );
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_21_alt_sip_subscriptions_are_refreshed_before_they_end() {
    let (sip_port, proxy) = (free_port(), free_port());
    let kamailio = Kamailio::start("opb.example", proxy, "opx.example", sip_port).unwrap();
    // Twenty seconds asked for: refreshed with ten left, well before the end.
    let fed = operator_x_sip(sip_port, proxy, "subscribe_expires = \"20s\"\n", "").await;
    let cx = fed.ops[0].core.clone();
    let latest = |cx: &ssp_testbed::core_sim::CoreSim| cx.presence_seen("usera").last().cloned();
    let etag = publish(&kamailio, None, "open", "busy", "Before the refresh");
    let st = cx.subscribe("usera", &format!("wv:{BOB}")).await.unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    let subscribes = || sip_method_count(&fed, "out", "SUBSCRIBE", "2xx");
    assert_eq!(subscribes(), 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    while subscribes() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        subscribes() >= 2,
        "refreshed in its dialog\n{}",
        kamailio.log()
    );
    // The refreshed dialog still carries Bob's changes.
    publish(&kamailio, Some(&etag), "open", "away", "After the refresh");
    assert!(
        cx.wait_until(WAIT, |c| latest(c)
            .is_some_and(|p| p.status_text == "After the refresh"))
            .await,
        "{:?}",
        cx.presence_seen("usera")
    );
    let g = fed.ops[0].gateway.as_ref().unwrap().gateway.clone();
    assert_eq!(g.metrics().sip_subscriptions.get(), 1);
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_22_alt_sip_delivery_report_from_the_sip_answer() {
    // Bob's phone (in process) answers 200: his user agent took the message.
    let phone = sipua::SipUa::start(0).await.unwrap();
    let fed = operator_x(free_port(), phone.port).await;
    let cx = fed.ops[0].core.clone();
    let (_, st) = cx
        .send_message("usera", &[&format!("wv:{BOB}")], "Report this", true)
        .await
        .unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    assert!(phone.wait_for(1, WAIT).await, "Bob's phone got it");
    assert!(
        cx.wait_until(WAIT, |c| !c.delivery_reports("usera").is_empty())
            .await,
        "the sender got a delivery report"
    );
    let r = cx.delivery_reports("usera")[0].clone();
    assert_eq!(r.code, 200, "{r:?}");
    assert_eq!(
        r.recipient,
        format!("wv:{BOB}"),
        "reported by Bob, by number"
    );
    // Without a report asked for, none comes.
    let (_, st) = cx
        .send_message("usera", &[&format!("wv:{BOB}")], "No report", false)
        .await
        .unwrap();
    assert_eq!(st.code, 200);
    assert!(phone.wait_for(2, WAIT).await);
    assert_eq!(cx.delivery_reports("usera").len(), 1);
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_22_alt_sip_delivery_report_from_an_imdn_notification() {
    let [sip_port, proxy, bob_phone, bob_reg] = std::array::from_fn(|_| free_port());
    let kamailio = Kamailio::start("opb.example", proxy, "opx.example", sip_port).unwrap();
    // opb.example's users' agents speak IMDN.
    let fed = operator_x_with(sip_port, proxy, "imdn = true").await;
    let cx = fed.ops[0].core.clone();
    let mut phone = SippUas::start_with(
        "uas_imdn.xml",
        bob_phone,
        1,
        &[
            ("from", BOB),
            ("from_domain", "opb.example"),
            ("to", A),
            ("to_domain", "opx.example"),
        ],
    )
    .unwrap();
    register_bob(&kamailio, bob_reg, bob_phone);

    // A report asked for: the MESSAGE goes in CPIM asking for notifications; the SIP 200
    // says nothing of delivery yet.
    let (_, st) = cx
        .send_message(
            "usera",
            &[&format!("wv:{BOB}")],
            "Tell me when you have it",
            true,
        )
        .await
        .unwrap();
    assert_eq!(st.code, 200, "{st:?}\n{}", kamailio.log());
    // Bob's phone takes it and notifies "delivered" through its proxy; the sender gets the
    // report from that.
    assert_eq!(
        phone.wait(WAIT),
        Some(0),
        "Bob's phone:\n{}\n{}",
        phone.messages(),
        kamailio.log()
    );
    let seen = phone.messages();
    assert!(seen.contains("Content-Type: message/cpim"), "{seen}");
    assert!(seen.contains("Tell me when you have it"), "{seen}");
    assert!(
        cx.wait_until(WAIT, |c| !c.delivery_reports("usera").is_empty())
            .await,
        "the sender got a delivery report:\n{}",
        kamailio.log()
    );
    let r = cx.delivery_reports("usera")[0].clone();
    assert_eq!(r.code, 200, "{r:?}");
    assert_eq!(
        r.recipient,
        format!("wv:{BOB}"),
        "reported by Bob, by number"
    );
    assert_eq!(
        cx.delivery_reports("usera").len(),
        1,
        "one report, from the notification"
    );
    // The same notification again finds nothing awaiting it (404): no second report.
    let ours = format!("sip:{A}@opx.example;user=phone");
    let bob = format!("sip:{BOB}@opb.example;user=phone");
    let mid = seen
        .lines()
        .find_map(|l| l.trim().strip_prefix("imdn.Message-ID: "))
        .expect("the message's imdn.Message-ID")
        .trim()
        .to_owned();
    let cpim = format!(
        "NS: imdn <urn:ietf:params:imdn>\r\nimdn.Message-ID: again\r\n\r\n\
         Content-Type: message/imdn+xml\r\n\r\n\
         <imdn xmlns=\"urn:ietf:params:xml:ns:imdn\"><message-id>{mid}</message-id>\
         <delivery-notification><status><delivered/></status></delivery-notification></imdn>"
    );
    assert_eq!(
        sipua::request(sip_port, "MESSAGE", &ours, &bob, "message/cpim", &cpim).await,
        Some(404)
    );
    assert_eq!(cx.delivery_reports("usera").len(), 1);
    fed.shutdown().await;
}
