//! End-to-end relay tests over loopback: two operators, each a core simulator and a gateway,
//! mutual TLS between the gateways with certificates made at test time, static routes.
//! Every test also asserts on the wire that no core ID or core domain crossed between gateways.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use ssp_gateway::links::http::SspClient;
use ssp_gateway::tls;
use ssp_testbed::core_sim::CoreMode;
use ssp_testbed::federation::{Federation, OperatorSpec};

const A: &str = "+46701234567";
const B: &str = "+4915112345678";
const WAIT: Duration = Duration::from_secs(8);

fn x() -> OperatorSpec {
    let mut s = OperatorSpec::new('x', "46")
        .user("usera", A, "User A")
        .user("userc", "+46701234568", "User C");
    s.extra_toml = "[[route]]\nprefix = \"+49\"\npeer = \"opy.example\"\n".into();
    s
}

fn y() -> OperatorSpec {
    let mut s = OperatorSpec::new('y', "49").user("userb", B, "User B");
    s.extra_toml = "[[route]]\nprefix = \"+46\"\npeer = \"opx.example\"\n".into();
    s
}

fn id(n: &str) -> String {
    format!("wv:{n}")
}

async fn message_both_ways(fed: &Federation) {
    let (cx, cy) = (&fed.ops[0].core, &fed.ops[1].core);
    let (_mid, st) = cx
        .send_message("usera", &[&id(B)], "hi B", true)
        .await
        .unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    let got = cy
        .message("userb", 0, WAIT)
        .await
        .expect("no message 0 for userb");
    assert_eq!(got.text, "hi B");
    assert_eq!(got.from, id(A), "the sender arrives as wv:+MSISDN");
    // The delivery report travels back from Y's core to A.
    assert!(
        cx.report("usera", 0, WAIT).await.is_some(),
        "no delivery report at X"
    );
    assert_eq!(cx.delivery_reports("usera")[0].code, 200);

    let (_mid, st) = cy
        .send_message("userb", &[&id(A)], "hi A", true)
        .await
        .unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    assert!(
        cx.message("usera", 0, WAIT).await.is_some(),
        "no message 0 for usera"
    );
    assert_eq!(cx.received("usera")[0].from, id(B));
    assert!(
        cy.report("userb", 0, WAIT).await.is_some(),
        "no delivery report at Y"
    );
    fed.assert_topology_hidden();
}

/// X with a synchronous core (answers in the HTTP body), and both gateways' peers synchronous.
async fn sync_federation() -> Federation {
    let mut sx = x();
    sx.core_mode = CoreMode::Sync;
    sx.peer_mode = "sync";
    let mut sy = y();
    sy.peer_mode = "sync";
    Federation::start(vec![sx, sy]).await
}

/// Requests of `primitive` gateway `i` relayed on the fast path.
fn fast_path(fed: &Federation, i: usize, primitive: &str) -> u64 {
    let g = fed.ops[i].gateway.as_ref().unwrap().gateway.metrics();
    ssp_gateway::ops::metrics::Metrics::counter_value(&g.fast_path, &[primitive])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_message_with_delivery_report_both_ways_async() {
    let fed = Federation::start(vec![x(), y()]).await;
    message_both_ways(&fed).await;
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_message_with_delivery_report_both_ways_sync_modes() {
    let fed = sync_federation().await;
    message_both_ways(&fed).await;
    // Synchronous senders' messages and reports went on the fast path (spliced, no typed
    // tree), and arrived as the checks above say.
    let fast = |i: usize, p: &str| fast_path(&fed, i, p);
    // X: its core's message out and Y's in, and both reports (Y's in, its core's out); Y:
    // X's message out. A report is counted once its answer is back, which may be after the
    // far core has it: polled.
    let deadline = std::time::Instant::now() + WAIT;
    while fast(0, "DeliveryStatusReport") < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fast(0, "SendMessageRequest"), 2);
    assert_eq!(fast(0, "DeliveryStatusReport"), 2);
    assert_eq!(fast(1, "SendMessageRequest"), 1);
    // Answers written back by splicing: at X, the two answers to its core's requests (from
    // Y) and its core's two answers to Y's. Y's asynchronous core answers by a POST of its
    // own (read typed), so Y splices none.
    assert_eq!(fast(0, "SendMessageResponse"), 2);
    assert_eq!(fast(0, "Status"), 2);
    assert_eq!(fast(1, "SendMessageResponse"), 0);
    // Every body the fast path took was read, by a shape kept from an earlier body or by
    // the scan, and counted so (`ssp_fast_path_reads_total`); the first of each shape on a
    // thread by the scan.
    let reads = |i: usize, how: &str| {
        let g = fed.ops[i].gateway.as_ref().unwrap().gateway.metrics();
        ssp_gateway::ops::metrics::Metrics::counter_value(&g.fast_reads, &[how])
    };
    let taken: u64 = [
        "SendMessageRequest",
        "DeliveryStatusReport",
        "SendMessageResponse",
        "Status",
    ]
    .iter()
    .map(|p| fast(0, p))
    .sum();
    assert!(reads(0, "scan") >= 1);
    assert!(
        reads(0, "scan") + reads(0, "shape") >= taken,
        "{taken} taken"
    );
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_then_presence_notification_then_get_presence() {
    let fed = Federation::start(vec![x(), y()]).await;
    let (cx, cy) = (&fed.ops[0].core, &fed.ops[1].core);
    let st = cx.subscribe("usera", &id(B)).await.unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    assert!(
        cy.watchers("userb").contains(&id(A)),
        "Y has A (as wv:+MSISDN) as watcher: {:?}",
        cy.watchers("userb")
    );
    cy.set_presence("userb", "AVAILABLE", "at work")
        .await
        .unwrap();
    // The first notification (current presence) came with the subscription; wait for the update.
    assert!(
        cx.wait_until(WAIT, |c| c
            .presence_seen("usera")
            .iter()
            .any(|p| p.status_text == "at work"))
            .await,
        "notification did not reach the watcher: {:?}",
        cx.presence_seen("usera")
    );
    let seen = cx.presence_seen("usera");
    let p = seen.iter().find(|p| p.status_text == "at work").unwrap();
    assert_eq!(p.presentity, id(B));
    assert_eq!(p.availability, "AVAILABLE");

    let (st, values) = cx.get_presence("usera", &id(B)).await.unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    assert_eq!(values.len(), 1);
    assert_eq!(values[0].presentity, id(B));
    assert_eq!(values[0].availability, "AVAILABLE");

    let st = cx.unsubscribe("usera", &id(B)).await.unwrap();
    assert_eq!(st.code, 200);
    assert!(cy.watchers("userb").is_empty());
    fed.assert_topology_hidden();
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_recipient_with_unknown_user_is_201_with_531() {
    let fed = Federation::start(vec![x(), y()]).await;
    multi_recipient_with_unknown_user(&fed).await;
    fed.shutdown().await;
}

/// The same between synchronous senders: the fast path reads the request at both gateways,
/// and Y's plan with a failed part goes on to the typed fan-out whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_recipient_with_unknown_user_is_201_with_531_from_a_sync_core() {
    let fed = sync_federation().await;
    multi_recipient_with_unknown_user(&fed).await;
    let fast = |i: usize| fast_path(&fed, i, "SendMessageRequest");
    // X sends it whole to Y (both numbers are Y's): the fast path. Y delivers one and
    // refuses the other: a plan with a failed part, the typed fan-out's.
    assert_eq!(fast(0), 1, "X's single destination is the fast path's");
    // Y's 201 with the 531 detail (an ID inside) came back to X's core spliced, the ID
    // rewritten: the checks above read it.
    assert_eq!(fast_path(&fed, 0, "SendMessageResponse"), 1);
    assert_eq!(
        fast(1),
        0,
        "a plan with a failed part is the typed fan-out's"
    );
    fed.shutdown().await;
}

async fn multi_recipient_with_unknown_user(fed: &Federation) {
    let cx = &fed.ops[0].core;
    let unknown = "+4915199999999";
    let (_mid, st) = cx
        .send_message("usera", &[&id(B), &id(unknown)], "to two", false)
        .await
        .unwrap();
    assert_eq!(st.code, 201, "{st:?}");
    assert_eq!(st.details.len(), 1, "{st:?}");
    assert_eq!(st.details[0].code, 531);
    assert_eq!(st.details[0].ids[0].id, id(unknown));
    assert!(
        fed.ops[1].core.message("userb", 0, WAIT).await.is_some(),
        "no message 0 for userb"
    );
    fed.assert_topology_hidden();
}

/// Every recipient may cost DNS lookups and a part of the fan-out: one request from the core
/// names at most 255, and more is refused before anything is looked up or sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_255_recipients_is_400_and_nothing_sent() {
    let fed = Federation::start(vec![x(), y()]).await;
    let many: Vec<String> = (0..256).map(|i| id(&format!("+49151{i:08}"))).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let (_mid, st) = fed.ops[0]
        .core
        .send_message("usera", &refs, "to all", false)
        .await
        .unwrap();
    assert_eq!(st.code, 400, "{st:?}");
    assert!(
        st.description
            .as_deref()
            .unwrap_or_default()
            .contains("at most 255"),
        "{st:?}"
    );
    assert!(
        fed.sent("opx.example", "opy.example", "SendMessageRequest")
            .is_empty(),
        "nothing sent to Y"
    );
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_to_non_subscriber_is_531_and_not_relayed() {
    let fed = Federation::start(vec![x(), y()]).await;
    let (_mid, st) = fed.ops[0]
        .core
        .send_message("usera", &[&id("+4915100000000")], "x", false)
        .await
        .unwrap();
    assert_eq!(st.code, 531, "{st:?}");
    // Y's core saw nothing: the gateway is no open relay.
    assert!(
        fed.ops[1].core.wire_log().is_empty(),
        "{:?}",
        fed.ops[1].core.wire_log()
    );
    fed.shutdown().await;
}

/// A client as a peer would be: TLS with the given identity (or none), trusting the test CA.
fn peer_client(
    fed: &Federation,
    identity_domain: Option<&str>,
    ca: Option<&ssp_gateway::certs::DevCa>,
) -> SspClient {
    ssp_testbed::federation::peer_client(
        &fed.ca,
        identity_domain.map(|d| (ca.unwrap_or(&fed.ca), d)),
        &fed.ops[1].spec.domain,
    )
}

fn smr(session: &str, tid: &str, service: &str, from: &str, to: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<WV-SSP-Message xmlns="http://www.openmobilealliance.org/DTD/WV-SSP1.3">
<Session sessionID="{session}"><Transaction mode="Request" transactionID="{tid}">
<SendMessageRequest deliveryReport="No"><MetaInfo clientOriginated="Yes"><Requestor serviceID="{service}"><User userID="{from}"/></Requestor></MetaInfo>
<MessageInfo contentType="text/plain" contentSize="2"><Recipient><User userID="{to}"/></Recipient><Sender><User userID="{from}"/></Sender></MessageInfo>
<ContentData contentType="text/plain" encoding="base64">aGk=</ContentData></SendMessageRequest></Transaction></Session></WV-SSP-Message>"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_without_valid_certificate_is_refused() {
    // Y answers X in the HTTP body, so the raw client below sees the answers directly.
    let mut sx = x();
    sx.peer_mode = "sync";
    let fed = Federation::start(vec![sx, y()]).await;
    let url: http::Uri = fed.ops[1].peer_url.parse().unwrap();
    let body = smr("1@opx.example", "t1", "wv:@opx.example", &id(A), &id(B));
    // A certificate from another CA: the TLS handshake is refused.
    let rogue_ca = ssp_gateway::certs::DevCa::new("rogue").unwrap();
    let rogue = peer_client(&fed, Some("opx.example"), Some(&rogue_ca));
    let r = rogue
        .post(&url, body.clone(), &[], Duration::from_secs(3))
        .await;
    assert!(
        r.is_err(),
        "TLS must refuse a certificate from an unknown CA: {r:?}"
    );
    // No certificate and no association: session traffic is refused with 604.
    let anon = peer_client(&fed, None, None);
    let (status, resp) = anon
        .post(&url, body.clone(), &[], Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 400);
    assert!(
        String::from_utf8_lossy(&resp).contains("code=\"604\""),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    // A valid certificate for a domain that is not a configured peer: refused.
    let stranger = peer_client(&fed, Some("opz.example"), None);
    let (status, _) = stranger
        .post(&url, body.clone(), &[], Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 403);
    // Y's core saw none of it.
    assert!(fed.ops[1].core.received("userb").is_empty());
    // And the real peer gets through.
    let good = peer_client(&fed, Some("opx.example"), None);
    let (status, resp) = good
        .post(&url, body, &[], Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 200, "{}", String::from_utf8_lossy(&resp));
    assert!(
        String::from_utf8_lossy(&resp).contains("code=\"200\""),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_originator_is_901() {
    let mut sx = x();
    sx.peer_mode = "sync";
    let fed = Federation::start(vec![sx, y()]).await;
    let url: http::Uri = fed.ops[1].peer_url.parse().unwrap();
    let client = peer_client(&fed, Some("opx.example"), None);
    for (service, from) in [
        ("wv:@opz.example", "wv:mallory@opz.example"),
        ("wv:@opx.example", "wv:mallory@opz.example"),
        // One of Y's own numbers claimed by X.
        ("wv:@opx.example", B),
    ] {
        let body = smr("1@opx.example", "t-spoof", service, from, &id(B));
        let (status, resp) = client
            .post(&url, body, &[], Duration::from_secs(5))
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&resp);
        assert_eq!(status.as_u16(), 200, "{text}");
        assert!(text.contains("code=\"901\""), "{service} {from}: {text}");
    }
    assert!(
        fed.ops[1].core.received("userb").is_empty(),
        "a spoofed message reached the core"
    );
    fed.shutdown().await;
}

/// A peer over its rate gets HTTP 503 at once when nothing of its POST could be taken in
/// (no task posting a refusal back later; it sends the POST again), and what was within the
/// rate goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_over_its_rate_gets_503_at_once() {
    let mut sy = y();
    sy.peer_toml = "rate = 1\nburst = 2\n".into();
    let fed = Federation::start(vec![x(), sy]).await;
    let url: http::Uri = fed.ops[1].peer_url.parse().unwrap();
    let client = peer_client(&fed, Some("opx.example"), None);
    let mut statuses = Vec::new();
    for i in 0..3 {
        let body = smr(
            "1@opx.example",
            &format!("t-rate-{i}"),
            "wv:@opx.example",
            &id(A),
            &id(B),
        );
        let (status, resp) = client.post(&url, body, &[], WAIT).await.unwrap();
        statuses.push((status.as_u16(), String::from_utf8_lossy(&resp).into_owned()));
    }
    assert_eq!(statuses[0].0, 200);
    assert_eq!(statuses[1].0, 200);
    let (code, text) = &statuses[2];
    assert_eq!(*code, 503, "{text}");
    assert!(text.is_empty(), "no SSP answer to give twice: {text}");
    let gy = &fed.ops[1].gateway.as_ref().unwrap().gateway;
    assert_eq!(
        ssp_gateway::ops::metrics::Metrics::counter_value(&gy.metrics().refused, &["rate"]),
        1
    );
    assert!(
        fed.ops[1].core.message("userb", 1, WAIT).await.is_some(),
        "no message 1 for userb"
    );
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_down_without_a_queue_gives_503_and_exactly_one_answer() {
    // Store-and-forward off: the failure at once (`queue.rs` has the queued behaviour).
    let mut sx = x();
    sx.extra_toml.push_str("[store]\nqueue = \"off\"\n");
    let mut fed = Federation::start(vec![sx, y()]).await;
    fed.stop_gateway(1).await;
    let cx = fed.ops[0].core.clone();
    let started = std::time::Instant::now();
    let (_mid, st) = cx
        .send_message("usera", &[&id(B)], "anyone?", false)
        .await
        .unwrap();
    assert_eq!(st.code, 503, "{st:?}");
    assert!(
        st.try_again.is_some(),
        "503 carries TryAgainTimeout: {st:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "answered within the deadline"
    );
    // Exactly one answer reached the core for that request.
    let answers = cx
        .wire_log()
        .iter()
        .filter(|(d, b)| {
            *d == ssp_testbed::core_sim::WireDir::Received && b.contains("SendMessageResponse")
        })
        .count();
    assert_eq!(answers, 1);
    fed.shutdown().await;
}

/// A TLS SSP server for `domain` that acks everything with 200 and never answers. Returns its
/// URL, the pin of its certificate, a stop switch and the bodies it received.
async fn black_hole(
    domain: &str,
) -> (
    String,
    String,
    ssp_gateway::drain::Drain,
    Arc<std::sync::Mutex<Vec<String>>>,
) {
    let ca = ssp_gateway::certs::DevCa::new("black hole CA").unwrap();
    let issued = ca.issue(domain).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
    let pin = tls::pin_of(&issued.der);
    let sc = tls::server_config(vec![issued.der], key, None, false).unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://127.0.0.1:{}/", l.local_addr().unwrap().port());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let handler: ssp_gateway::app::listen::Handler = Arc::new(move |req, _info| {
        let s = s2.clone();
        Box::pin(async move {
            if let Ok(b) = ssp_gateway::web::read_body(
                req.into_body(),
                ssp_gateway::web::BodyLimits::size(1 << 20),
            )
            .await
            {
                s.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&b).into_owned());
            }
            ssp_gateway::web::respond(http::StatusCode::OK, None)
        })
    });
    let drain = ssp_gateway::drain::Drain::new();
    tokio::spawn(ssp_gateway::app::listen::serve(
        l,
        Some((
            tokio_rustls::TlsAcceptor::from(Arc::new(sc)),
            Duration::from_secs(2),
        )),
        handler,
        drain.clone(),
        ssp_gateway::app::listen::Limits::lenient(100),
        Arc::new(|_| {}),
    ));
    (url, pin, drain, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_peer_that_never_answers_gives_504_after_the_deadline() {
    let (url, pin, _stop, seen) = black_hole("opq.example").await;
    let mut sx = x();
    // A pinned (self-signed style) peer reached by a number-prefix route.
    sx.extra_toml.push_str(&format!(
        "[[route]]\nprefix = \"+47\"\npeer = \"opq.example\"\n[[peer]]\ndomain = \"opq.example\"\nurls = [\"{url}\"]\npins = [\"{pin}\"]\nqueue = \"off\"\n"
    ));
    let fed = Federation::start(vec![sx, y()]).await;
    let started = std::time::Instant::now();
    let (_mid, st) = fed.ops[0]
        .core
        .send_message("usera", &["wv:+4790000001"], "hello?", false)
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(st.code, 504, "{st:?}");
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(8),
        "answered at the 4 s deadline, not before: {waited:?}"
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "the request did reach the peer"
    );
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_answer_is_420_and_predecessor_answer_is_routed_by_token() {
    let mut sy = y();
    sy.peer_mode = "sync";
    let fed = Federation::start(vec![x(), sy]).await;
    // Y's answers, posted to X as Y would (Y's certificate).
    let url: http::Uri = fed.ops[0].peer_url.parse().unwrap();
    let client = ssp_testbed::federation::peer_client(
        &fed.ca,
        Some((&fed.ca, "opy.example")),
        "opx.example",
    );
    let answer = |tid: &str| {
        format!(
            r#"<WV-SSP-Message xmlns="http://www.openmobilealliance.org/DTD/WV-SSP1.3"><Session sessionID="9@opy.example"><Transaction mode="Response" transactionID="{tid}"><SendMessageResponse messageID="m9"><Status code="200"/></SendMessageResponse></Transaction></Session></WV-SSP-Message>"#
        )
    };
    // Forged: refused with 420, nothing reaches the core.
    let before = fed.ops[0].core.wire_log().len();
    let (status, body) = client
        .post(&url, answer("g1.AAAA.BBBB"), &[], Duration::from_secs(3))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status.as_u16(), 400, "{text}");
    assert!(text.contains("code=\"420\""), "{text}");
    let (status, body) = client
        .post(&url, answer("0000000002-0"), &[], Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 400);
    assert!(String::from_utf8_lossy(&body).contains("code=\"420\""));
    assert_eq!(fed.ops[0].core.wire_log().len(), before);

    // A token issued by a previous process of X (same key, another instance): X routes the
    // answer to its core by the token alone, with the core's own transaction ID.
    let key_hex =
        std::fs::read_to_string(fed.ops[0].config_path.parent().unwrap().join("hmac.key")).unwrap();
    let key: Vec<u8> = (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&key_hex.trim()[i..i + 2], 16).unwrap())
        .collect();
    let predecessor = ssp_gateway::token::TokenKeys::new(&[key], 60);
    let tid = predecessor.issue(
        ssp_gateway::token::Leg::ToPeer,
        12345,
        0,
        1,
        "core-before-restart",
        "opy.example",
    );
    let (status, _) = client
        .post(&url, answer(&tid), &[], Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 200);
    let core = fed.ops[0].core.clone();
    let arrived = core
        .wait_until(WAIT, |c| {
            c.wire_log()
                .iter()
                .any(|(_, b)| b.contains("transactionID=\"core-before-restart\""))
        })
        .await;
    assert!(
        arrived,
        "the answer was not routed to the core: {:?}",
        core.wire_log()
    );
    // Y sends it again (its acknowledgement got lost, say): the core still gets it once.
    let (status, _) = client
        .post(&url, answer(&tid), &[], Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 200);
    let gx = &fed.ops[0].gateway.as_ref().unwrap().gateway;
    let duplicates = || {
        ssp_gateway::ops::metrics::Metrics::counter_value(
            &gx.metrics().orphan_answers,
            &["duplicate"],
        )
    };
    let deadline = std::time::Instant::now() + WAIT;
    while duplicates() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(duplicates(), 1);
    let copies = core
        .wire_log()
        .iter()
        .filter(|(_, b)| b.contains("transactionID=\"core-before-restart\""))
        .count();
    assert_eq!(copies, 1, "one answer for one request");
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_the_next_url_when_the_first_is_down() {
    // X's entry for Y lists a dead URL first (nothing listens on a freshly closed port).
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("https://127.0.0.1:{}/", l.local_addr().unwrap().port())
    };
    let fed = Federation::start_with(vec![x(), y()], |toml| {
        if toml.contains("public_domain = \"opx.example\"") {
            *toml = toml.replacen(
                "urls = [\"https://",
                &format!("urls = [\"{dead}\", \"https://"),
                1,
            );
        }
    })
    .await;
    assert!(
        std::fs::read_to_string(&fed.ops[0].config_path)
            .unwrap()
            .contains(&dead)
    );
    let (_mid, st) = fed.ops[0]
        .core
        .send_message("usera", &[&id(B)], "via the second URL", false)
        .await
        .unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    assert!(
        fed.ops[1].core.message("userb", 0, WAIT).await.is_some(),
        "no message 0 for userb"
    );
    // The first URL was tried and failed to connect.
    let m = &fed.ops[0].gateway.as_ref().unwrap().gateway.metrics();
    assert!(
        ssp_gateway::ops::metrics::Metrics::counter_value(
            &m.delivery_failures,
            &["opy.example", "connect"]
        ) >= 1
    );
    fed.shutdown().await;
}

/// An RSA certificate made by openssl (ring cannot generate RSA keys).
fn rsa_cert(dir: &std::path::Path, domain: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("rsa-cert.pem"), dir.join("rsa-key.pem"));
    let ok = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        ])
        .arg(format!("/CN={domain}"))
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:{domain}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok, "openssl could not make an RSA certificate");
    (cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_listener_speaks_tls12_and_tls13_with_rsa_and_ecdsa() {
    let dir = ssp_testbed::federation::TempDir::new("rsa");
    let (rsa_c, rsa_k) = rsa_cert(&dir.0, "opx.example");
    let ca = ssp_gateway::certs::DevCa::new("ec").unwrap();
    let ec = ca.write_operator(&dir.0, "opx.example").unwrap();
    let ec_paths = (
        dir.0.join("opx.example/cert.pem"),
        dir.0.join("opx.example/key.pem"),
    );
    for (cert, key, label) in [(&rsa_c, &rsa_k, "RSA"), (&ec_paths.0, &ec_paths.1, "ECDSA")] {
        let chain = tls::load_certs(cert).unwrap();
        let pin = tls::pin_of(&chain[0]);
        let sc = tls::server_config(chain, tls::load_key(key).unwrap(), None, false).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(sc));
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let (c, s) = tokio::io::duplex(64 * 1024);
            let srv = tokio::spawn({
                let a = acceptor.clone();
                async move { a.accept(s).await.map(|t| t.get_ref().1.protocol_version()) }
            });
            let mut cc = rustls::ClientConfig::builder_with_provider(tls::provider())
                .with_protocol_versions(&[version])
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinOnly(pin.clone())))
                .with_no_client_auth();
            cc.alpn_protocols = vec![b"h2".to_vec()];
            let t = tokio_rustls::TlsConnector::from(Arc::new(cc))
                .connect(
                    rustls_pki_types::ServerName::try_from("opx.example").unwrap(),
                    c,
                )
                .await
                .unwrap_or_else(|e| panic!("{label} {version:?}: {e}"));
            assert_eq!(
                t.get_ref().1.protocol_version(),
                Some(version.version),
                "{label}"
            );
            assert_eq!(
                t.get_ref().1.alpn_protocol(),
                Some(&b"h2"[..]),
                "{label}: h2 offered by the listener"
            );
            assert_eq!(srv.await.unwrap().unwrap(), Some(version.version));
        }
    }
    drop(ec);
}

/// Accept exactly one certificate (by SHA-256), as a pinned peer entry does.
#[derive(Debug)]
struct PinOnly(String);

impl rustls::client::danger::ServerCertVerifier for PinOnly {
    fn verify_server_cert(
        &self,
        ee: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if tls::pin_of(ee) == self.0 {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("pin mismatch".into()))
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls_pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            m,
            c,
            d,
            &tls::provider().signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls_pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            m,
            c,
            d,
            &tls::provider().signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_listener_with_tls_and_client_certificates() {
    let fed = Federation::start_with(vec![x(), y()], |toml| {
        if toml.contains("public_domain = \"opx.example\"") {
            let ca = toml
                .lines()
                .find(|l| l.starts_with("trust = "))
                .unwrap()
                .to_owned();
            *toml = toml.replace(
                "auth = \"allowlist\"",
                &format!("auth = \"mtls\"\ntls = true\n{ca}"),
            );
        }
    })
    .await;
    let addr = fed.ops[0].gateway.as_ref().unwrap().core_addr.unwrap();
    let url: http::Uri = format!("https://127.0.0.1:{}/", addr.port())
        .parse()
        .unwrap();
    let body = smr(
        "core-1@core.opx.example",
        "c1",
        "wv:@core.opx.example",
        "wv:usera@core.opx.example",
        &id(B),
    );
    let with_cert = |identity: Option<&str>| {
        ssp_testbed::federation::peer_client(&fed.ca, identity.map(|d| (&fed.ca, d)), "opx.example")
    };
    // Without a client certificate the TLS handshake is refused.
    assert!(
        with_cert(None)
            .post(&url, body.clone(), &[], Duration::from_secs(3))
            .await
            .is_err()
    );
    // With one from the core's CA the request is accepted and relayed to Y.
    let (status, _) = with_cert(Some("core.opx.example"))
        .post(&url, body, &[], Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 200);
    assert!(
        fed.ops[1].core.message("userb", 0, WAIT).await.is_some(),
        "no message 0 for userb"
    );
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_refuses_a_broken_config_whole_and_names_what_waits_for_a_restart() {
    let fed = Federation::start(vec![x(), y()]).await;
    let (cx, cy) = (&fed.ops[0].core, &fed.ops[1].core);
    let rx = fed.ops[0].gateway.as_ref().unwrap();
    let gx = &rx.gateway;
    let reloads =
        |r: &str| ssp_gateway::ops::metrics::Metrics::counter_value(&gx.metrics().reloads, &[r]);
    let cfg = fed.ops[0].config_path.clone();
    let good = std::fs::read_to_string(&cfg).unwrap();

    // A config that does not load: refused whole, counted; X serves as before.
    std::fs::write(&cfg, format!("{good}\n[timeouts]\nrequest = \"soon\"\n")).unwrap();
    let csv = std::fs::read_to_string(&fed.ops[0].directory_path).unwrap();
    std::fs::write(
        &fed.ops[0].directory_path,
        format!("{csv}+46701234599,wv:new@core.opx.example\n"),
    )
    .unwrap();
    let e = rx.reload().unwrap_err();
    assert!(
        e.to_string().contains("gateway.toml:"),
        "names the file: {e}"
    );
    assert_eq!((reloads("ok"), reloads("failed")), (0, 1));
    assert_eq!(
        gx.directory().len(),
        2,
        "the directory was not touched either"
    );
    let (_mid, st) = cx
        .send_message("usera", &[&id(B)], "still served", false)
        .await
        .unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    assert!(cy.message("userb", 0, WAIT).await.is_some());

    // One that parses but names a trust anchor file that is not there: the next start
    // would fail on it, so the reload is refused too.
    std::fs::write(&cfg, good.replacen("ca.pem", "missing-ca.pem", 1)).unwrap();
    let e = rx.reload().unwrap_err();
    assert!(e.to_string().contains("missing-ca.pem"), "{e}");
    assert_eq!((reloads("ok"), reloads("failed")), (0, 2));
    // The file gone: refused, not a silent success.
    std::fs::remove_file(&cfg).unwrap();
    assert!(rx.reload().is_err());
    assert_eq!(reloads("failed"), 3);

    // A good one: the directory is in use, and so is a changed deadline; a changed listener
    // address is named as waiting for a restart, not silently ignored.
    let peer_line = good
        .lines()
        .find(|l| l.starts_with("peer = "))
        .unwrap()
        .to_owned();
    std::fs::write(
        &cfg,
        good.replacen("[timeouts]", "[timeouts]\nhandshake = \"4s\"", 1)
            .replacen(&peer_line, "peer = \"127.0.0.1:1\"", 1),
    )
    .unwrap();
    let r = rx.reload().unwrap();
    assert_eq!(r.entries, 3);
    assert_eq!(r.pending, ["[listen] addresses"], "{r:?}");
    assert_eq!(gx.cfg().timeouts.handshake, Duration::from_secs(4));
    assert_eq!((reloads("ok"), reloads("failed")), (1, 3));
    std::fs::write(&cfg, &good).unwrap();
    assert!(rx.reload().unwrap().pending.is_empty());
    fed.shutdown().await;
}

/// The certificate Y's peer listener presents now (the SHA-256 pin of its end entity).
async fn presented(fed: &Federation, i: usize) -> String {
    let addr = fed.ops[i]
        .peer_url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(fed.ca.cert_der()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(ssp_gateway::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(fed.ops[i].spec.domain.clone()).unwrap();
    let s = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    tls::pin_of(&s.get_ref().1.peer_certificates().unwrap()[0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_certificate_renewed_on_disk_is_taken_up_with_traffic_flowing() {
    let fed = Arc::new(Federation::start(vec![x(), y()]).await);
    let before = presented(&fed, 1).await;
    // Messages from A to B all along.
    const N: usize = 60;
    let traffic = {
        let fed = fed.clone();
        tokio::spawn(async move {
            let mut ok = 0;
            for i in 0..N {
                let (_mid, st) = fed.ops[0]
                    .core
                    .send_message("usera", &[&id(B)], &format!("m{i}"), false)
                    .await
                    .unwrap();
                ok += usize::from(st.code == 200);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            ok
        })
    };
    // Y's certificate is renewed on disk (what an ACME client or cert-manager does).
    let issued = fed
        .ca
        .write_operator(&fed.dir.0.join("certs"), "opy.example")
        .unwrap();
    let renewed = tls::pin_of(&issued.der);
    assert_ne!(renewed, before);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while presented(&fed, 1).await != renewed {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Y still presents the old certificate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        traffic.await.unwrap(),
        N,
        "every message answered 200 through the renewal"
    );
    assert_eq!(fed.ops[1].core.received("userb").len(), N, "and delivered");
    let fed = Arc::try_unwrap(fed).ok().unwrap();
    fed.shutdown().await;
}
