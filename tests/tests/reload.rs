//! Reload of each kind of change with traffic flowing (issue: operations, item 1): peers,
//! routes, resolver settings, limits, trust pins, token keys (certificates renewed on disk:
//! `relay.rs`; the admin endpoint: `ops.rs`). Each sends messages from A (operator X) to B (operator Y) all through
//! the reload and counts them: every one answered 200 and delivered (nothing refused,
//! nothing lost); then shows that the change is in use.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use ssp_gateway::app::Reloaded;
use ssp_testbed::federation::{DnsKind, Federation, OperatorSpec, federation_zones};

const A: &str = "+46701234567";
const B: &str = "+4915112345678";
const C: &str = "+447700900123";
const WAIT: Duration = Duration::from_secs(8);
/// Messages sent through each reload, one every [`GAP`].
const N: usize = 40;
const GAP: Duration = Duration::from_millis(25);

fn x() -> OperatorSpec {
    OperatorSpec::new('x', "46").user("usera", A, "User A")
}

fn y() -> OperatorSpec {
    OperatorSpec::new('y', "49").user("userb", B, "User B")
}

fn z() -> OperatorSpec {
    OperatorSpec::new('z', "44").user("userc", C, "User C")
}

/// Static routes between X, Y and Z by country code.
const ROUTES: [(&str, &str); 3] = [
    ("+46", "opx.example"),
    ("+49", "opy.example"),
    ("+44", "opz.example"),
];

/// Routes to every operator of `ops` but `own`.
fn routes(own: &str, ops: &[&str]) -> String {
    ROUTES
        .iter()
        .filter(|(_, d)| *d != own && ops.contains(d))
        .map(|(p, d)| format!("[[route]]\nprefix = \"{p}\"\npeer = \"{d}\"\n"))
        .collect()
}

/// `specs`, each with routes to the others.
fn routed(mut specs: Vec<OperatorSpec>) -> Vec<OperatorSpec> {
    let domains: Vec<String> = specs.iter().map(|s| s.domain.clone()).collect();
    let domains: Vec<&str> = domains.iter().map(String::as_str).collect();
    for s in &mut specs {
        s.extra_toml = routes(&s.domain, &domains);
    }
    specs
}

fn wv(n: &str) -> String {
    format!("wv:{n}")
}

/// Operator `i`'s config file, edited by `f`, then reloaded; what the reload did.
fn edit_and_reload(fed: &Federation, i: usize, f: impl FnOnce(String) -> String) -> Reloaded {
    let path = &fed.ops[i].config_path;
    let text = std::fs::read_to_string(path).unwrap();
    let edited = f(text.clone());
    assert_ne!(edited, text, "the edit changes the config");
    std::fs::write(path, edited).unwrap();
    fed.ops[i].gateway.as_ref().unwrap().reload().unwrap()
}

/// `N` messages from A to B, one every `GAP`, while `change` runs; asserts that every one
/// was answered 200 and delivered exactly once.
async fn through<F: std::future::Future<Output = ()>>(fed: &Arc<Federation>, change: F) {
    let before = fed.ops[1].core.received("userb").len();
    let traffic = {
        let fed = fed.clone();
        tokio::spawn(async move {
            let mut codes = Vec::new();
            for i in 0..N {
                let (_mid, st) = fed.ops[0]
                    .core
                    .send_message("usera", &[&wv(B)], &format!("through {i}"), false)
                    .await
                    .unwrap();
                codes.push(st.code);
                tokio::time::sleep(GAP).await;
            }
            codes
        })
    };
    change.await;
    let codes = traffic.await.unwrap();
    let refused: Vec<_> = codes.iter().filter(|c| **c != 200).collect();
    assert!(refused.is_empty(), "answered other than 200: {refused:?}");
    let cy = &fed.ops[1].core;
    assert!(
        cy.wait_until(WAIT, |c| c.received("userb").len() >= before + N)
            .await,
        "delivered {} of {N}",
        cy.received("userb").len() - before
    );
    let got = cy.received("userb");
    for i in 0..N {
        let text = format!("through {i}");
        assert_eq!(
            got.iter().filter(|m| m.text == text).count(),
            1,
            "message {i} delivered once"
        );
    }
    println!("reload with traffic: {N} sent, {N} answered 200, {N} delivered");
}

/// Wait until about half the traffic has gone.
async fn halfway() {
    tokio::time::sleep(GAP * (N as u32) / 2).await;
}

/// A → C answered with `code`.
async fn a_to_c(fed: &Federation) -> u16 {
    let (_mid, st) = fed.ops[0]
        .core
        .send_message("usera", &[&wv(C)], "to C", false)
        .await
        .unwrap();
    st.code
}

async fn stop(fed: Arc<Federation>) {
    let fed = Arc::try_unwrap(fed).ok().unwrap();
    fed.shutdown().await;
}

/// The `[[peer]]` block of `domain` in a config text, removed.
fn without_peer(text: &str, domain: &str) -> String {
    let mut out = String::new();
    for block in text.split_inclusive("[[peer]]\n") {
        if block.starts_with(&format!("domain = \"{domain}\"")) {
            // Keep what follows the block's own keys (the next section header).
            let rest = block.find("\n[").map(|i| &block[i + 1..]).unwrap_or("");
            out.truncate(out.len() - "[[peer]]\n".len());
            out.push_str(rest);
        } else {
            out.push_str(block);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_peers_a_peer_added_is_reached_with_traffic_flowing() {
    // X starts without Z: no [[peer]] entry, no route to +44.
    let fed = Arc::new(
        Federation::start_with(routed(vec![x(), y(), z()]), |t| {
            if t.contains("public_domain = \"opx.example\"") {
                *t = without_peer(t, "opz.example")
                    .replace("[[route]]\nprefix = \"+44\"\npeer = \"opz.example\"\n", "");
            }
        })
        .await,
    );
    let z_block = {
        let yt = std::fs::read_to_string(&fed.ops[1].config_path).unwrap();
        let at = yt.find("[[peer]]\ndomain = \"opz.example\"").unwrap();
        let end = yt[at + 1..].find("\n[").map_or(yt.len(), |i| at + 2 + i);
        yt[at..end].to_owned()
    };
    assert_ne!(a_to_c(&fed).await, 200, "Z is not X's peer yet");
    let f = fed.clone();
    through(&fed, async move {
        halfway().await;
        let r = edit_and_reload(&f, 0, |t| {
            format!("{t}\n{z_block}\n[[route]]\nprefix = \"+44\"\npeer = \"opz.example\"\n")
        });
        assert!(r.pending.is_empty(), "{r:?}");
    })
    .await;
    assert_eq!(a_to_c(&fed).await, 200, "the peer added is reached");
    assert!(fed.ops[2].core.message("userc", 0, WAIT).await.is_some());
    stop(fed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_routes_a_route_added_is_taken_with_traffic_flowing() {
    // X peers with Z but has no route to +44.
    let fed = Arc::new(
        Federation::start_with(routed(vec![x(), y(), z()]), |t| {
            if t.contains("public_domain = \"opx.example\"") {
                *t = t.replace("[[route]]\nprefix = \"+44\"\npeer = \"opz.example\"\n", "");
            }
        })
        .await,
    );
    assert_ne!(a_to_c(&fed).await, 200, "no route to +44 yet");
    let f = fed.clone();
    through(&fed, async move {
        halfway().await;
        let r = edit_and_reload(&f, 0, |t| {
            format!("{t}\n[[route]]\nprefix = \"+44\"\npeer = \"opz.example\"\n")
        });
        assert!(r.pending.is_empty(), "{r:?}");
    })
    .await;
    assert_eq!(a_to_c(&fed).await, 200, "the route added is taken");
    stop(fed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_resolver_settings_new_nameservers_are_used_with_traffic_flowing() {
    // Y is reached by a static route; C only through ENUM, and X's resolver starts out
    // pointed at a port where no DNS server answers.
    let mut ops = routed(vec![x(), y(), z()]);
    ops[0].extra_toml = "[[route]]\nprefix = \"+49\"\npeer = \"opy.example\"\n".into();
    let numbers = vec![(C.to_owned(), "opz.example".to_owned())];
    let fed = Arc::new(
        Federation::start_dns_with(
            ops,
            DnsKind::InProc,
            move |gws| federation_zones(gws, &numbers, 300),
            |t| {
                if t.contains("public_domain = \"opx.example\"") {
                    let ns = t
                        .lines()
                        .find(|l| l.starts_with("nameservers = "))
                        .unwrap()
                        .to_owned();
                    *t = t.replacen(&ns, &format!("{ns}\n# was: {ns}"), 1).replacen(
                        &ns,
                        "nameservers = [\"127.0.0.1:9\"]\nattempt_timeout = \"200ms\"",
                        1,
                    );
                }
            },
        )
        .await,
    );
    // Accepted and kept (a DNS failure is transient), but not delivered: no answers yet.
    a_to_c(&fed).await;
    let cz = &fed.ops[2].core;
    assert!(
        !cz.wait_until(Duration::from_secs(1), |c| !c.received("userc").is_empty())
            .await,
        "C reached with no DNS server answering"
    );
    let f = fed.clone();
    through(&fed, async move {
        halfway().await;
        let r = edit_and_reload(&f, 0, |t| {
            let was = t
                .lines()
                .find_map(|l| l.strip_prefix("# was: "))
                .unwrap()
                .to_owned();
            t.replacen("nameservers = [\"127.0.0.1:9\"]", &was, 1)
        });
        assert!(r.pending.is_empty(), "{r:?}");
    })
    .await;
    assert_eq!(
        a_to_c(&fed).await,
        200,
        "C found through the new nameserver"
    );
    assert!(
        cz.wait_until(WAIT, |c| c.received("userc").len() == 2)
            .await,
        "both messages to C delivered (the first one kept and tried again): {}",
        cz.received("userc").len()
    );
    stop(fed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_limits_a_lower_body_limit_applies_with_traffic_flowing() {
    let fed = Arc::new(Federation::start(routed(vec![x(), y()])).await);
    let big = |tag: &str| format!("{tag}{}", "b".repeat(6000));
    let gy = fed.ops[1].gateway.as_ref().unwrap().gateway.clone();
    let too_large =
        || ssp_gateway::ops::metrics::Metrics::counter_value(&gy.metrics().bad_messages, &["size"]);
    let (cx, cy) = (&fed.ops[0].core, &fed.ops[1].core);
    cx.send_message("usera", &[&wv(B)], &big("before"), false)
        .await
        .unwrap();
    assert!(
        cy.wait_until(WAIT, |c| c
            .received("userb")
            .iter()
            .any(|m| m.text == big("before")))
            .await,
        "6 KB pass Y's limit"
    );
    assert_eq!(too_large(), 0);
    let f = fed.clone();
    through(&fed, async move {
        halfway().await;
        let r = edit_and_reload(&f, 1, |t| {
            format!("{t}\n[limits]\nmax_body = 4096\nmax_in_flight = 500\n")
        });
        assert!(r.pending.is_empty(), "{r:?}");
    })
    .await;
    // Y now refuses 6 KB bodies (413): X keeps the message and never gets it through.
    let (cx, cy) = (&fed.ops[0].core, &fed.ops[1].core);
    cx.send_message("usera", &[&wv(B)], &big("after"), false)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while too_large() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Y refuses bodies over its new limit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!cy.received("userb").iter().any(|m| m.text == big("after")));
    assert_eq!(
        fed.ops[1]
            .gateway
            .as_ref()
            .unwrap()
            .gateway
            .cfg()
            .limits
            .max_in_flight,
        500
    );
    stop(fed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_trust_pins_of_a_peer_apply_with_traffic_flowing() {
    let fed = Arc::new(Federation::start(routed(vec![x(), y()])).await);
    let pem = std::fs::read(fed.dir.0.join("certs/opx.example/cert.pem")).unwrap();
    let der = rustls_pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
    let pin = ssp_gateway::tls::pin_of(&der);
    let pinned = |pin: String| {
        move |t: String| {
            t.replacen(
                "domain = \"opx.example\"\n",
                &format!("domain = \"opx.example\"\npins = [\"{pin}\"]\n"),
                1,
            )
        }
    };
    // Y pins X's certificate while traffic flows: X still gets through.
    let f = fed.clone();
    let good = pinned(pin.clone());
    let original = std::fs::read_to_string(&fed.ops[1].config_path).unwrap();
    through(&fed, async move {
        halfway().await;
        let r = edit_and_reload(&f, 1, good);
        assert!(r.pending.is_empty(), "{r:?}");
    })
    .await;
    // A pin X's certificate does not match: Y now refuses X.
    std::fs::write(&fed.ops[1].config_path, &original).unwrap();
    edit_and_reload(&fed, 1, pinned("0".repeat(64)));
    // (X keeps the message and tries again; Y refuses each attempt, on the connection X
    // opened before the reload too.)
    let gy = fed.ops[1].gateway.as_ref().unwrap().gateway.clone();
    let forbidden =
        || ssp_gateway::ops::metrics::Metrics::counter_value(&gy.metrics().refused, &["auth"]);
    let before = forbidden();
    fed.ops[0]
        .core
        .send_message("usera", &[&wv(B)], "pinned out", false)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while forbidden() == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new pin is in use"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !fed.ops[1]
            .core
            .received("userb")
            .iter()
            .any(|m| m.text == "pinned out")
    );
    stop(fed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_token_keys_rotated_answers_to_earlier_requests_still_arrive() {
    // Y's core answers after 250 ms, so requests are always waiting for their answers at X
    // when X's token key is rotated.
    let mut ops = routed(vec![x(), y()]);
    ops[1].answer_delay = Duration::from_millis(250);
    let fed = Arc::new(Federation::start(ops).await);
    let key_file = fed.ops[0].config_path.with_file_name("hmac.key");
    let f = fed.clone();
    through(&fed, async move {
        halfway().await;
        // A new key replaces the old one entirely.
        std::fs::write(
            &key_file,
            format!(
                "{:032x}{:032x}\n",
                rand::random::<u128>(),
                rand::random::<u128>()
            ),
        )
        .unwrap();
        let running = f.ops[0].gateway.as_ref().unwrap();
        // Rotate at an instant when a request is waiting for its answer (most of the time:
        // each waits 250 ms of every 275).
        let deadline = tokio::time::Instant::now() + WAIT;
        while running.gateway.pending() == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no request waiting for its answer"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let r = running.reload().unwrap();
        assert_eq!(r.retired_keys, 1, "{r:?}");
    })
    .await;
    stop(fed).await;
}
