//! Hostile input against a running gateway: each attack of the security review, its refusal,
//! the bound that holds (connections, open files, memory, time), and a well-behaved peer
//! served during and after it. The attacker connects from 127.0.0.2; the operators' gateways
//! and cores are on 127.0.0.1. Run with `--nocapture` to see the figures of each attack.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ssp_gateway::ops::metrics::Metrics;
use ssp_testbed::attacker::{
    ATTACKER, BlackHole, closed_within, open_files, percentile, post, response, rss_kib,
    tls_client, tls_from, trickle,
};
use ssp_testbed::federation::{Federation, OperatorSpec};
use tokio::io::AsyncWriteExt;

const A: &str = "+46701234567";
const B: &str = "+4915112345678";
const C: &str = "+447700900123";
const WAIT: Duration = Duration::from_secs(10);

fn x() -> OperatorSpec {
    let mut s = OperatorSpec::new('x', "46").user("usera", A, "User A");
    s.extra_toml = "[[route]]\nprefix = \"+49\"\npeer = \"opy.example\"\n".into();
    s
}

fn y() -> OperatorSpec {
    let mut s = OperatorSpec::new('y', "49").user("userb", B, "User B");
    s.extra_toml = "[[route]]\nprefix = \"+46\"\npeer = \"opx.example\"\n".into();
    s
}

/// Tighter phases than the defaults, so the tests take seconds.
fn tight(t: &mut String) {
    *t = t.replace(
        "[timeouts]\nrequest = \"4s\"",
        "[timeouts]\nrequest = \"4s\"\nheader = \"1s\"\nbody = \"2s\"\nassociation = \"2s\"",
    );
}

/// Poll `cond` until it holds or `within` passes.
async fn eventually(within: Duration, cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

fn peer_addr(fed: &Federation, i: usize) -> std::net::SocketAddr {
    fed.ops[i].gateway.as_ref().unwrap().peer_addr.unwrap()
}

fn metrics(fed: &Federation, i: usize) -> Metrics {
    fed.ops[i]
        .gateway
        .as_ref()
        .unwrap()
        .gateway
        .metrics()
        .clone()
}

/// Y's core sends to A every `gap` until `stop`; the latency of each (all must be 200).
fn steady_traffic(
    fed: &Federation,
    stop: Arc<std::sync::atomic::AtomicBool>,
    gap: Duration,
) -> tokio::task::JoinHandle<Vec<Duration>> {
    let cy = fed.ops[1].core.clone();
    tokio::spawn(async move {
        let mut lat = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let (_, st) = cy
                .send_message("userb", &[&format!("wv:{A}")], "steady", false)
                .await
                .unwrap();
            assert_eq!(st.code, 200, "a well-behaved peer is served: {st:?}");
            lat.push(t.elapsed());
            tokio::time::sleep(gap).await;
        }
        lat
    })
}

fn sst(tid: usize, domain: &str) -> String {
    format!(
        r#"<WV-SSP-Message xmlns="http://www.openmobilealliance.org/DTD/WV-SSP1.3"><SetupTransaction mode="Request" transactionID="flood-{tid}"><SendSecretToken serviceID="wv:@{domain}" protocol="WV-SSP" procotolVersion="1.3"><SecretToken>0123456789abcdef0123456789abcdef</SecretToken></SendSecretToken></SetupTransaction></WV-SSP-Message>"#
    )
}

/// Anyone can claim a peer's domain in a `SendSecretToken`, and the gateway answers on that
/// domain's address: a flood of them must not become a flood at the peer, nor open
/// connections or spend memory without bound. The peer here never answers (the worst case).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_association_flood_is_neither_reflected_nor_exhausting() {
    let hole = BlackHole::start("b.test").await;
    let pin = ssp_gateway::tls::pin_of(&hole.cert);
    let mut sx = x();
    sx.extra_toml += &format!(
        "[[peer]]\ndomain = \"b.test\"\nurls = [\"{}\"]\nauth = \"association\"\npins = [\"{pin}\"]\nclient_cert = false\n",
        hole.url()
    );
    let fed = Federation::start_with(vec![sx, y()], tight).await;
    let (files0, rss0) = (open_files(), rss_kib());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let steady = steady_traffic(&fed, stop.clone(), Duration::from_millis(20));
    let connector = tls_client(&fed.ca, None);
    let to = peer_addr(&fed, 0);
    let started = Instant::now();
    let mut attackers = Vec::new();
    for c in 0..6 {
        let connector = connector.clone();
        attackers.push(tokio::spawn(async move {
            let (mut ok, mut refused, mut other) = (0usize, 0usize, 0usize);
            let mut s = tls_from(ATTACKER, to, &connector, "opx.example")
                .await
                .unwrap();
            let mut i = 0;
            while started.elapsed() < Duration::from_secs(3) {
                i += 1;
                if s.write_all(&post(&sst(c * 1_000_000 + i, "b.test")))
                    .await
                    .is_err()
                {
                    break;
                }
                match response(&mut s).await {
                    Some((200, _)) => ok += 1,
                    Some((503, _)) => refused += 1,
                    Some(_) => other += 1,
                    None => break,
                }
            }
            (ok, refused, other)
        }));
    }
    let mut totals = (0, 0, 0);
    for a in attackers {
        let (o, r, x) = a.await.unwrap();
        totals = (totals.0 + o, totals.1 + r, totals.2 + x);
    }
    let during = (open_files(), rss_kib());
    stop.store(true, Ordering::Relaxed);
    let mut lat = steady.await.unwrap();
    let sent = totals.0 + totals.1 + totals.2;
    eprintln!(
        "association flood: {sent} SendSecretToken in 3 s, {} taken, {} refused; peer saw {} POSTs on {} connections (at most {} at once); open files {} -> {}; RSS {} -> {} KiB; steady peer p50 {:?} p99 {:?} over {} requests",
        totals.0,
        totals.1,
        hole.posts.load(Ordering::Relaxed),
        hole.connections.load(Ordering::Relaxed),
        hole.max_open.load(Ordering::Relaxed),
        files0,
        during.0,
        rss0,
        during.1,
        percentile(&mut lat, 50),
        percentile(&mut lat, 99),
        lat.len()
    );
    assert!(sent > 200, "the flood ran: {sent}");
    // Reflected: the per-domain rate and two replies in flight at most.
    assert!(
        hole.max_open.load(Ordering::Relaxed) <= 2,
        "at most two replies to one domain at once"
    );
    assert!(
        hole.posts.load(Ordering::Relaxed) <= 12,
        "the flood is not reflected: {} POSTs reached the peer",
        hole.posts.load(Ordering::Relaxed)
    );
    assert!(totals.1 > sent * 9 / 10, "refused: {totals:?}");
    assert!(during.0 < files0 + 64, "open files bounded");
    assert!(during.1 < rss0 + 64 * 1024, "memory bounded");
    assert!(lat.len() > 20);
    assert!(percentile(&mut lat, 99) < Duration::from_secs(1));
    // And after it: still served.
    let (_, st) = fed.ops[1]
        .core
        .send_message("userb", &[&format!("wv:{A}")], "after", false)
        .await
        .unwrap();
    assert_eq!(st.code, 200);
    fed.shutdown().await;
}

/// TLS connections that send nothing after the handshake, or only the HTTP/2 preface, are
/// closed at the header deadline; beyond a handful per source they are not even taken; and
/// they cannot lock a real peer out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_silent_connections_are_closed_and_cannot_lock_out_a_peer() {
    let fed = Federation::start_with(vec![x(), y()], |t| {
        tight(t);
        t.push_str("\n[limits]\nmax_connections = 40\nmax_unauthenticated_per_source = 8\n");
    })
    .await;
    let connector = tls_client(&fed.ca, None);
    let to = peer_addr(&fed, 0);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let steady = steady_traffic(&fed, stop.clone(), Duration::from_millis(50));
    let opened = Instant::now();
    let mut silent = Vec::new();
    let mut turned_away = 0;
    for i in 0..60 {
        match tls_from(ATTACKER, to, &connector, "opx.example").await {
            Ok(mut s) => {
                if i % 2 == 1 {
                    // Only the HTTP/2 preface.
                    let _ = s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
                }
                silent.push(s);
            }
            Err(_) => turned_away += 1,
        }
    }
    let taken = silent.len();
    let mut lifetimes = Vec::new();
    for s in &mut silent {
        assert!(
            closed_within(s, Duration::from_secs(5)).await,
            "a silent connection is closed"
        );
        lifetimes.push(opened.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    let mut lat = steady.await.unwrap();
    let m = metrics(&fed, 0);
    eprintln!(
        "silent connections: 60 opened, {taken} taken, {turned_away} turned away; the last closed after {:?}; steady peer p99 {:?} over {} requests",
        lifetimes.iter().max().copied().unwrap_or_default(),
        percentile(&mut lat, 99),
        lat.len()
    );
    assert!(
        taken <= 8,
        "at most 8 unauthenticated from one source: {taken}"
    );
    assert!(turned_away >= 52);
    assert!(lifetimes.iter().all(|l| *l < Duration::from_secs(4)));
    assert!(Metrics::counter_value(&m.connections_refused, &["peer", "unauthenticated"]) >= 52);
    assert!(Metrics::counter_value(&m.connections_closed, &["peer", "header"]) >= 1);
    assert!(percentile(&mut lat, 99) < Duration::from_secs(1));
    fed.shutdown().await;
}

/// A body trickled slower than the minimum rate, or not complete by its deadline, is cut off
/// with 408 and the connection closed; its in-flight count and drain work are given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_trickled_body_is_cut_off() {
    let fed = Federation::start_with(vec![x(), y()], tight).await;
    let connector = tls_client(&fed.ca, None);
    let to = peer_addr(&fed, 0);
    let body = "x".repeat(2000);
    // 10 bytes a second: below the 1 KiB/s floor.
    let mut s = tls_from(ATTACKER, to, &connector, "opx.example")
        .await
        .unwrap();
    let head = "POST / HTTP/1.1\r\nHost: gw\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 2000\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    let t = Instant::now();
    let (r, w) = tokio::io::split(s);
    let mut r = r;
    let writer = tokio::spawn(async move {
        let mut w = w;
        trickle(&mut w, body.as_bytes(), Duration::from_millis(100)).await
    });
    let (code, _) = response(&mut r).await.unwrap();
    let slow_after = t.elapsed();
    assert_eq!(code, 408);
    assert!(closed_within(&mut r, Duration::from_secs(3)).await);
    writer.abort();
    // A fast enough body that never ends: cut at the body deadline (2 s).
    let mut s = tls_from(ATTACKER, to, &connector, "opx.example")
        .await
        .unwrap();
    let head = "POST / HTTP/1.1\r\nHost: gw\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 200000\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    let t = Instant::now();
    let (mut r, w) = tokio::io::split(s);
    let writer = tokio::spawn(async move {
        let mut w = w;
        let chunk = vec![b'y'; 300];
        for _ in 0..600 {
            if w.write_all(&chunk).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let (code, _) = response(&mut r).await.unwrap();
    let total_after = t.elapsed();
    writer.abort();
    assert_eq!(code, 408);
    let m = metrics(&fed, 0);
    eprintln!(
        "trickled body: below the rate cut after {slow_after:?}; a body over its deadline cut after {total_after:?}"
    );
    assert!(slow_after < Duration::from_secs(3));
    assert!(total_after >= Duration::from_secs(2) && total_after < Duration::from_secs(4));
    assert!(Metrics::counter_value(&m.bad_messages, &["slow"]) >= 2);
    assert!(
        eventually(WAIT, || m.in_flight.with_label_values(&["inbound"]).get()
            == 0)
        .await
    );
    // The drain is not held by them.
    let running = fed.ops[0].gateway.as_ref().unwrap();
    assert!(running.gateway.drain().idle(Duration::from_secs(2)).await);
    fed.shutdown().await;
}

/// A `Content-Length` over the limit is refused before a byte of the body is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_oversize_content_length_is_refused_up_front() {
    let fed = Federation::start(vec![x(), y()]).await;
    let connector = tls_client(&fed.ca, None);
    let mut s = tls_from(ATTACKER, peer_addr(&fed, 0), &connector, "opx.example")
        .await
        .unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: gw\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: 10000000\r\n\r\n")
        .await
        .unwrap();
    let t = Instant::now();
    let (code, body) = tokio::time::timeout(Duration::from_secs(2), response(&mut s))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, 413, "{body}");
    assert!(t.elapsed() < Duration::from_secs(1));
    fed.shutdown().await;
}

fn message(session: &str, tid: &str, from: &str, to: &str) -> String {
    format!(
        r#"<WV-SSP-Message xmlns="http://www.openmobilealliance.org/DTD/WV-SSP1.3"><Session sessionID="{session}"><Transaction mode="Request" transactionID="{tid}"><SendMessageRequest><MetaInfo clientOriginated="Yes"><Requestor serviceID="wv:@opz.example"><User userID="wv:{from}"/></Requestor></MetaInfo><MessageInfo contentType="text/plain" contentSize="2"><Recipient><User userID="{to}"/></Recipient><Sender><User userID="wv:{from}"/></Sender></MessageInfo><ContentData contentType="text/plain" encoding="base64">aGk=</ContentData></SendMessageRequest></Transaction></Session></WV-SSP-Message>"#
    )
}

/// With no resolver, the static routes still say whose a number is: a peer cannot pass off
/// another operator's number, and a number nothing places is not let through (enforce).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_spoofed_originators_are_refused_without_a_resolver() {
    let mut sx = x();
    sx.extra_toml += "\n[[route]]\nprefix = \"+44\"\npeer = \"opz.example\"\n";
    let z = OperatorSpec::new('z', "44").user("userc", C, "User C");
    let fed = Federation::start(vec![sx, y(), z]).await;
    // Z's certificate, as gateway Z would present it (synchronous answers from X).
    let client = ssp_testbed::federation::peer_client(
        &fed.ca,
        Some((&fed.ca, "opz.example")),
        "opx.example",
    );
    let url: http::Uri = fed.ops[0].peer_url.parse().unwrap();
    let m = metrics(&fed, 0);
    let to = format!("wv:{A}");
    for (from, tid) in [(B, "y-number"), ("+12025550100", "nobodys")] {
        let (status, _) = client
            .post(&url, message("1@opz.example", tid, from, &to), &[], WAIT)
            .await
            .unwrap();
        assert_eq!(status.as_u16(), 200);
    }
    assert!(
        eventually(WAIT, || Metrics::counter_value(
            &m.answers,
            &["inbound", "ssp", "901"]
        ) == 2)
        .await,
        "both refused with 901"
    );
    assert_eq!(Metrics::counter_value(&m.refused, &["spoof"]), 2);
    // Z's own number: taken.
    let (status, _) = client
        .post(&url, message("1@opz.example", "own", C, &to), &[], WAIT)
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 200);
    assert!(fed.ops[0].core.message("usera", 0, WAIT).await.is_some());
    assert_eq!(fed.ops[0].core.received("usera").len(), 1);
    fed.shutdown().await;
}

/// The transaction IDs the gateway sends carry nothing a peer can read: not the core's
/// transaction ID, not a core name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tokens_carry_no_internal_id() {
    use base64::Engine as _;
    let fed = Federation::start(vec![x(), y()]).await;
    let (_, st) = fed.ops[0]
        .core
        .send_message("usera", &[&format!("wv:{B}")], "hi", false)
        .await
        .unwrap();
    assert_eq!(st.code, 200);
    let core_tids: Vec<String> = fed.ops[0]
        .core
        .wire_log()
        .iter()
        .filter(|(d, b)| {
            *d == ssp_testbed::core_sim::WireDir::Sent && b.contains("SendMessageRequest")
        })
        .filter_map(|(_, b)| {
            let i = b.find("transactionID=\"")? + 15;
            Some(b[i..].split('"').next()?.to_owned())
        })
        .collect();
    assert!(!core_tids.is_empty());
    let sent = fed.sent("opx.example", "opy.example", "SendMessageRequest");
    assert!(!sent.is_empty());
    for body in sent {
        let i = body.find("transactionID=\"").unwrap() + 15;
        let tid = body[i..].split('"').next().unwrap();
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(tid.trim_start_matches("g2."))
            .unwrap();
        let text = String::from_utf8_lossy(&raw);
        for core_tid in &core_tids {
            assert!(!tid.contains(core_tid.as_str()) && !text.contains(core_tid.as_str()));
        }
        assert!(!text.contains("core.opx.example") && !text.contains("opx.example"));
    }
    fed.shutdown().await;
}

fn forged_answer(i: usize) -> String {
    format!(
        r#"<WV-SSP-Message xmlns="http://www.openmobilealliance.org/DTD/WV-SSP1.3"><Session sessionID="1@opy.example"><Transaction mode="Response" transactionID="g2.forged{i}"><Status code="200"/></Transaction></Session></WV-SSP-Message>"#
    )
}

/// Answers we never asked for, flooded by one source: past its failure budget the source's
/// answers are refused unread, and the log says it once per interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_forged_answers_are_budgeted_and_logged_once() {
    let fed = Federation::start(vec![x(), y()]).await;
    let connector = tls_client(&fed.ca, Some("opy.example"));
    let mut s = tls_from(ATTACKER, peer_addr(&fed, 0), &connector, "opx.example")
        .await
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let steady = steady_traffic(&fed, stop.clone(), Duration::from_millis(20));
    let (mut answered, mut refused) = (0, 0);
    for i in 0..500 {
        s.write_all(&post(&forged_answer(i))).await.unwrap();
        match response(&mut s).await.unwrap() {
            (503, _) => refused += 1,
            _ => answered += 1,
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut lat = steady.await.unwrap();
    let m = metrics(&fed, 0);
    let logged_out = Metrics::counter_value(&m.log_suppressed, &["answer-forged"]);
    eprintln!(
        "forged answers: 500 sent, {answered} looked at, {refused} refused unread; {logged_out} log lines left out; steady peer p99 {:?}",
        percentile(&mut lat, 99)
    );
    assert!(answered <= 100, "{answered}");
    assert!(refused >= 400);
    assert!(logged_out >= answered as u64 - 1, "one line per interval");
    assert!(percentile(&mut lat, 99) < Duration::from_secs(1));
    fed.shutdown().await;
}

/// A source whose TLS handshakes keep failing is turned away at accept until its budget
/// refills; others are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_failed_handshakes_turn_the_source_away() {
    let fed = Federation::start(vec![x(), y()]).await;
    let to = peer_addr(&fed, 0);
    for _ in 0..120 {
        if let Ok(mut s) = ssp_testbed::attacker::tcp_from(ATTACKER, to).await {
            let _ = s.write_all(b"not a TLS client hello\r\n\r\n").await;
            let _ = closed_within(&mut s, Duration::from_secs(2)).await;
        }
    }
    let m = metrics(&fed, 0);
    let failed = Metrics::counter_value(&m.tls_failures, &["peer"]);
    let turned = Metrics::counter_value(&m.connections_refused, &["peer", "failing-source"]);
    eprintln!(
        "failed handshakes: 120 tries, {failed} handshakes failed, {turned} turned away at accept"
    );
    assert!(failed <= 60, "{failed}");
    assert!(turned >= 60, "{turned}");
    // Another source (Y, on 127.0.0.1) is served.
    let (_, st) = fed.ops[1]
        .core
        .send_message("userb", &[&format!("wv:{A}")], "still here", false)
        .await
        .unwrap();
    assert_eq!(st.code, 200);
    fed.shutdown().await;
}

/// Our users are reached by number between operators: a core-local name on our public domain
/// (`wv:usera@opx.example`) is not one of our public IDs (531) unless policy accepts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_local_names_are_not_public_ids() {
    let fed = Federation::start(vec![x(), y()]).await;
    let (_, st) = fed.ops[1]
        .core
        .send_message("userb", &["wv:usera@opx.example"], "by name", false)
        .await
        .unwrap();
    assert_eq!(st.code, 531, "{st:?}");
    assert!(fed.ops[0].core.received("usera").is_empty());
    fed.shutdown().await;
    let fed = Federation::start_with(vec![x(), y()], |t| {
        t.push_str("\n[policy]\naccept_local_names = true\n");
    })
    .await;
    let (_, st) = fed.ops[1]
        .core
        .send_message("userb", &["wv:usera@opx.example"], "by name", false)
        .await
        .unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    fed.shutdown().await;
}
