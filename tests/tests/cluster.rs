//! Two replicas of one operator's gateway behind one name: asynchronous answers that reach the
//! replica which did not send the request are handed to the one that did, so the originator
//! gets exactly one answer (and no 504 later).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::TcpListener;
use std::time::Duration;

use ssp_gateway::certs::DevCa;
use ssp_gateway::config::Config;
use ssp_gateway::ops::metrics::Metrics;
use ssp_gateway::relay::{self, PreBound, Running, StartOptions};
use ssp_testbed::core_sim::{CoreMode, CoreSim, CoreSimConfig};
use ssp_testbed::federation::{OperatorSpec, TempDir, gateway_toml, init_test_logs};

const A: &str = "+46701234567";
const B: &str = "+4915112345678";
const WAIT: Duration = Duration::from_secs(8);

fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

fn port(l: &TcpListener) -> u16 {
    l.local_addr().unwrap().port()
}

async fn start(
    path: &std::path::Path,
    peer: TcpListener,
    core: TcpListener,
    admin: Option<TcpListener>,
) -> Running {
    let cfg = Config::load(path).unwrap();
    relay::start(
        cfg,
        StartOptions {
            listeners: PreBound {
                peer: Some(peer),
                core: Some(core),
                admin,
            },
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_reaching_the_other_replica_are_handed_over() {
    init_test_logs();
    let dir = TempDir::new("ssp-cluster");
    let certs = dir.0.join("certs");
    let ca = DevCa::new("cluster test CA").unwrap();
    ca.write_ca(&certs).unwrap();
    ca.write_operator(&certs, "opx.example").unwrap();
    ca.write_operator(&certs, "opy.example").unwrap();

    let mut x = OperatorSpec::new('x', "46").user("usera", A, "User A");
    let mut y = OperatorSpec::new('y', "49").user("userb", B, "User B");
    x.extra_toml = "[[route]]\nprefix = \"+49\"\npeer = \"opy.example\"\n".into();
    y.extra_toml = "[[route]]\nprefix = \"+46\"\npeer = \"opx.example\"\n".into();
    let cx = CoreSim::start(CoreSimConfig::new(&x.core_domain, CoreMode::Async))
        .await
        .unwrap();
    let cy = CoreSim::start(CoreSimConfig::new(&y.core_domain, CoreMode::Async))
        .await
        .unwrap();
    cx.add_user("usera", Some(A), "User A");
    cy.add_user("userb", Some(B), "User B");

    // X runs two replicas sharing directory, HMAC key and certificate.
    let xdir = dir.0.join("opx.example");
    std::fs::create_dir_all(&xdir).unwrap();
    std::fs::write(xdir.join("directory.csv"), cx.directory_csv()).unwrap();
    std::fs::write(
        xdir.join("hmac.key"),
        format!("{:064x}\n", rand::random::<u128>()),
    )
    .unwrap();
    let ydir = dir.0.join("opy.example");
    std::fs::create_dir_all(&ydir).unwrap();
    std::fs::write(ydir.join("directory.csv"), cy.directory_csv()).unwrap();
    std::fs::write(
        ydir.join("hmac.key"),
        format!("{:064x}\n", rand::random::<u128>()),
    )
    .unwrap();

    let (x0_peer, x0_core, x0_admin) = (bind(), bind(), bind());
    let (x1_peer, x1_core, x1_admin) = (bind(), bind(), bind());
    let (y_peer, y_core) = (bind(), bind());
    let siblings = format!(
        "\n[cluster]\nsiblings = [\"http://127.0.0.1:{}/\", \"http://127.0.0.1:{}/\"]\n",
        port(&x0_admin),
        port(&x1_admin)
    );
    let y_url = format!("https://127.0.0.1:{}/", port(&y_peer));
    for (i, (peer, core, admin)) in [
        (&x0_peer, &x0_core, &x0_admin),
        (&x1_peer, &x1_core, &x1_admin),
    ]
    .into_iter()
    .enumerate()
    {
        let mut text = gateway_toml(
            &x,
            &[("opy.example".into(), y_url.clone(), "async")],
            &certs,
            &cx.url(),
            port(peer),
            port(core),
        );
        text = text.replace(
            &format!("core = \"127.0.0.1:{}\"\n", port(core)),
            &format!(
                "core = \"127.0.0.1:{}\"\nadmin = \"127.0.0.1:{}\"\n",
                port(core),
                port(admin)
            ),
        );
        text.push_str(&siblings);
        text.push_str(&format!("replica = {i}\n"));
        std::fs::write(xdir.join(format!("x{i}.toml")), text).unwrap();
    }
    // Y knows X by replica 1's address only: every answer and request from Y lands there.
    let text = gateway_toml(
        &y,
        &[(
            "opx.example".into(),
            format!("https://127.0.0.1:{}/", port(&x1_peer)),
            "async",
        )],
        &certs,
        &cy.url(),
        port(&y_peer),
        port(&y_core),
    );
    std::fs::write(ydir.join("gateway.toml"), text).unwrap();

    cx.set_gateway_url(&format!("http://127.0.0.1:{}/", port(&x0_core)));
    cy.set_gateway_url(&format!("http://127.0.0.1:{}/", port(&y_core)));
    let x0 = start(&xdir.join("x0.toml"), x0_peer, x0_core, Some(x0_admin)).await;
    let x1 = start(&xdir.join("x1.toml"), x1_peer, x1_core, Some(x1_admin)).await;
    let gy = start(&ydir.join("gateway.toml"), y_peer, y_core, None).await;

    // A's message leaves through replica 0; Y's answer comes back to replica 1, which hands
    // it to replica 0, which answers the core.
    let (_, st) = cx
        .send_message("usera", &[&format!("wv:{B}")], "hi", true)
        .await
        .unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    assert!(
        cy.wait_until(WAIT, |c| c.received("userb").len() == 1)
            .await
    );
    let handoffs = |g: &Running, r: &str| Metrics::counter_value(&g.gateway.metrics.handoffs, &[r]);
    assert!(
        handoffs(&x1, "taken") >= 1,
        "replica 1 handed the answer over"
    );
    assert!(handoffs(&x0, "received") >= 1, "replica 0 took it");
    assert_eq!(
        x0.gateway.pending.len(),
        0,
        "nothing left to time out into a 504"
    );

    // The other way: Y's delivery report enters through replica 1 and goes to X's core; the
    // core answers through replica 0, which hands the answer to replica 1, which answers Y.
    assert!(
        cx.wait_until(WAIT, |c| c.delivery_reports("usera").len() == 1)
            .await
    );
    let deadline = std::time::Instant::now() + WAIT;
    while handoffs(&x0, "taken") == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        handoffs(&x0, "taken") >= 1,
        "replica 0 handed the core's answer over"
    );
    let deadline = std::time::Instant::now() + WAIT;
    while !x1.gateway.pending.is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(x1.gateway.pending.len(), 0);
    // Exactly one answer each way: no late 503/504 from either replica.
    let errors = |g: &Running| {
        ["503", "504"]
            .iter()
            .map(|c| {
                Metrics::counter_value(&g.gateway.metrics.answers, &["outbound", c])
                    + Metrics::counter_value(&g.gateway.metrics.answers, &["inbound", c])
            })
            .sum::<u64>()
    };
    assert_eq!(errors(&x0) + errors(&x1), 0);

    for g in [x0, x1, gy] {
        g.shutdown().await;
    }
    cx.shutdown().await;
    cy.shutdown().await;
}

#[test]
fn cluster_config_errors_name_the_key() {
    let dir = TempDir::new("ssp-cluster-cfg");
    let path = dir.0.join("g.toml");
    let base = "[gateway]\npublic_domain = \"opx.example\"\ncore_domains = [\"core.opx.example\"]\ncountry_code = \"46\"\n";
    for (cluster, expect) in [
        (
            "[cluster]\nreplica = 2\nsiblings = [\"http://10.0.0.1:9090/\", \"http://10.0.0.2:9090/\"]\n",
            "replica 2 has no entry",
        ),
        ("[cluster]\nreplica = 300\n", "not in 0..=255"),
        ("[cluster]\nreplica = \"first\"\n", "from-hostname"),
        (
            "[cluster]\nsiblings = [\"https://10.0.0.1:9090/\"]\n",
            "not an http://",
        ),
    ] {
        std::fs::write(&path, format!("{base}{cluster}")).unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(e.contains(expect), "{e}");
        assert!(
            e.contains("g.toml:") && e.contains("cluster"),
            "names file, line and key: {e}"
        );
    }
}
