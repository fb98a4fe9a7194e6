//! Two replicas of one operator's gateway behind one name: an asynchronous answer that reaches
//! the replica which did not send the request is handed to the one that did, so the
//! originator gets at most one answer: handed over and answered, routed by its token when the
//! issuing replica has restarted, or dropped at the deadline when that replica is unreachable.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::TcpListener;
use std::time::Duration;

use ssp_gateway::app::{self, PreBound, Running, StartOptions};
use ssp_gateway::certs::DevCa;
use ssp_gateway::config::Config;
use ssp_gateway::ops::metrics::Metrics;
use ssp_gateway::token::{Leg, TokenKeys};
use ssp_testbed::core_sim::{CoreMode, CoreSim, CoreSimConfig, WireDir};
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
    app::start(
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

/// Operator X with replicas 0 and 1 (replica 0 only when `x0` is false: its admin URL then
/// leads nowhere), operator Y peered with X by replica 1's address only.
struct Setup {
    _dir: TempDir,
    ca: DevCa,
    key: Vec<u8>,
    cx: CoreSim,
    cy: CoreSim,
    x0: Option<Running>,
    x1: Running,
    gy: Running,
    x1_peer_url: String,
}

async fn setup(x0: bool, request_timeout: &str) -> Setup {
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

    // X's replicas share directory, HMAC key and certificate.
    let key: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let (xdir, ydir) = (dir.0.join("opx.example"), dir.0.join("opy.example"));
    for (d, core) in [(&xdir, &cx), (&ydir, &cy)] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("directory.csv"), core.directory_csv()).unwrap();
        std::fs::write(d.join("hmac.key"), format!("{hex}\n")).unwrap();
    }

    let (x0_peer, x0_core, x0_admin) = (bind(), bind(), bind());
    let (x1_peer, x1_core, x1_admin) = (bind(), bind(), bind());
    let (y_peer, y_core) = (bind(), bind());
    let siblings = format!(
        "\n[cluster]\nsiblings = [\"http://127.0.0.1:{}/\", \"http://127.0.0.1:{}/\"]\n",
        port(&x0_admin),
        port(&x1_admin)
    );
    let y_url = format!("https://127.0.0.1:{}/", port(&y_peer));
    let listeners = [
        (&x0_peer, &x0_core, &x0_admin),
        (&x1_peer, &x1_core, &x1_admin),
    ];
    for (i, (peer, core, admin)) in listeners.into_iter().enumerate() {
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
        text = text.replace(
            "request = \"4s\"",
            &format!("request = \"{request_timeout}\""),
        );
        text.push_str(&siblings);
        text.push_str(&format!("replica = {i}\n"));
        std::fs::write(xdir.join(format!("x{i}.toml")), text).unwrap();
    }
    // Y knows X by replica 1's address only: every answer and request from Y lands there.
    let x1_peer_url = format!("https://127.0.0.1:{}/", port(&x1_peer));
    let text = gateway_toml(
        &y,
        &[("opx.example".into(), x1_peer_url.clone(), "async")],
        &certs,
        &cy.url(),
        port(&y_peer),
        port(&y_core),
    );
    std::fs::write(ydir.join("gateway.toml"), text).unwrap();

    cx.set_gateway_url(&format!("http://127.0.0.1:{}/", port(&x0_core)));
    cy.set_gateway_url(&format!("http://127.0.0.1:{}/", port(&y_core)));
    let x0 = if x0 {
        Some(start(&xdir.join("x0.toml"), x0_peer, x0_core, Some(x0_admin)).await)
    } else {
        // Replica 0 is gone: nothing listens on its admin address.
        drop((x0_peer, x0_core, x0_admin));
        None
    };
    let x1 = start(&xdir.join("x1.toml"), x1_peer, x1_core, Some(x1_admin)).await;
    let gy = start(&ydir.join("gateway.toml"), y_peer, y_core, None).await;
    Setup {
        _dir: dir,
        ca,
        key,
        cx,
        cy,
        x0,
        x1,
        gy,
        x1_peer_url,
    }
}

impl Setup {
    async fn shutdown(self) {
        if let Some(x0) = self.x0 {
            x0.shutdown().await;
        }
        self.x1.shutdown().await;
        self.gy.shutdown().await;
        self.cx.shutdown().await;
        self.cy.shutdown().await;
    }

    /// POST an answer to replica 1's peer listener as gateway Y would.
    async fn answer_as_y(&self, tid: &str) {
        let client = ssp_testbed::federation::peer_client(
            &self.ca,
            Some((&self.ca, "opy.example")),
            "opx.example",
        );
        let body = format!(
            r#"<WV-SSP-Message xmlns="http://www.openmobilealliance.org/DTD/WV-SSP1.3"><Session sessionID="1@opy.example"><Transaction mode="Response" transactionID="{tid}"><SendMessageResponse><Status code="200"/><MessageID>m-77</MessageID></SendMessageResponse></Transaction></Session></WV-SSP-Message>"#
        );
        let (status, _) = client
            .post(&self.x1_peer_url.parse().unwrap(), body, &[], WAIT)
            .await
            .unwrap();
        assert_eq!(status.as_u16(), 200, "answer accepted for processing");
    }
}

fn handoffs(g: &Running, r: &str) -> u64 {
    Metrics::counter_value(&g.gateway.metrics().handoffs, &[r])
}

async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !cond() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(cond(), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_reaching_the_other_replica_are_handed_over() {
    let s = setup(true, "4s").await;
    let x0 = s.x0.as_ref().unwrap();
    // A's message leaves through replica 0; Y's answer comes back to replica 1, which hands
    // it to replica 0, which answers the core.
    let (_, st) =
        s.cx.send_message("usera", &[&format!("wv:{B}")], "hi", true)
            .await
            .unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    assert!(
        s.cy.message("userb", 0, WAIT).await.is_some(),
        "no message 0 for userb"
    );
    eventually("replica 1 handed the answer over", || {
        handoffs(&s.x1, "taken") >= 1
    })
    .await;
    assert!(handoffs(x0, "received") >= 1, "replica 0 took it");
    assert!(
        x0.gateway.pending() == 0,
        "nothing left to time out into a 504"
    );

    // The other way: Y's delivery report enters through replica 1 and goes to X's core; the
    // core answers through replica 0, which hands the answer to replica 1, which answers Y.
    assert!(
        s.cx.report("usera", 0, WAIT).await.is_some(),
        "no report 0 for usera"
    );
    eventually("replica 0 handed the core's answer over", || {
        handoffs(x0, "taken") >= 1
    })
    .await;
    eventually("replica 1 has nothing pending", || {
        s.x1.gateway.pending() == 0
    })
    .await;
    // Exactly one answer each way: no 503/504 from either replica.
    let errors = |g: &Running| {
        ["503", "504"]
            .iter()
            .map(|c| {
                Metrics::counter_value(&g.gateway.metrics().answers, &["outbound", "ssp", c])
                    + Metrics::counter_value(&g.gateway.metrics().answers, &["inbound", "ssp", c])
            })
            .sum::<u64>()
    };
    assert_eq!(errors(x0) + errors(&s.x1), 0);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_for_a_restarted_replica_is_routed_by_its_token() {
    let s = setup(true, "4s").await;
    // A transaction ID that replica 0 issued before it restarted (same key and index,
    // another process): replica 1 hands it to replica 0, which routes it by its token (so a
    // second copy, arriving at either replica, meets the same "routed once" record).
    let before_restart = TokenKeys::new(std::slice::from_ref(&s.key), 60).with_replica(0);
    let tid = before_restart.issue(Leg::ToPeer, 7, 0, 1, "core-tid-77", "opy.example");
    s.answer_as_y(&tid).await;
    eventually("replica 0 took it", || handoffs(&s.x1, "taken") == 1).await;
    assert_eq!(handoffs(&s.x1, "not-theirs"), 0);
    assert!(
        s.cx.wait_until(WAIT, |c| c
            .wire_log()
            .iter()
            .any(|(d, b)| *d == WireDir::Received && b.contains("core-tid-77")))
            .await,
        "the core got the answer, under its own transaction ID"
    );
    // Sent again, to replica 1: handed to replica 0 again, which has routed it already.
    s.answer_as_y(&tid).await;
    let x0 = s.x0.as_ref().unwrap();
    eventually("the copy was dropped as a duplicate", || {
        Metrics::counter_value(&x0.gateway.metrics().orphan_answers, &["duplicate"]) == 1
    })
    .await;
    let copies =
        s.cx.wire_log()
            .iter()
            .filter(|(d, b)| *d == WireDir::Received && b.contains("core-tid-77"))
            .count();
    assert_eq!(copies, 1, "one answer for one request");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_for_an_unreachable_replica_is_dropped_at_the_deadline() {
    // Tokens carry their issue time in whole seconds, so a 2 s deadline leaves 1 to 2 s:
    // room for more than one attempt however the second falls.
    let s = setup(false, "2s").await;
    let tid = TokenKeys::new(std::slice::from_ref(&s.key), 60)
        .with_replica(0)
        .issue(Leg::ToPeer, 7, 0, 1, "core-tid-78", "opy.example");
    s.answer_as_y(&tid).await;
    // Retried until the request's deadline, then dropped: routing it by token could follow
    // a 504 that replica 0 may have given.
    let dropped = || Metrics::counter_value(&s.x1.gateway.metrics().orphan_answers, &["late"]) == 1;
    eventually("dropped at the deadline", dropped).await;
    assert!(handoffs(&s.x1, "unreachable") >= 2, "retried");
    assert!(
        !s.cx
            .wire_log()
            .iter()
            .any(|(_, b)| b.contains("core-tid-78")),
        "the core got nothing"
    );
    s.shutdown().await;
}

#[test]
fn cluster_config_errors_name_the_key() {
    let dir = TempDir::new("ssp-cluster-cfg");
    let path = dir.0.join("g.toml");
    let base = "[gateway]\npublic_domain = \"opx.example\"\ncore_domains = [\"core.opx.example\"]\ncountry_code = \"46\"\n[listen]\nadmin = \"127.0.0.1:9090\"\n";
    for (cluster, expect) in [
        (
            "[cluster]\nreplica = 2\nsiblings = [\"http://10.0.0.1:9090/\", \"http://10.0.0.2:9090/\"]\n",
            "replica 2 has no entry",
        ),
        ("[cluster]\nreplica = 300\n", "not in 0..=255"),
        ("[cluster]\nreplica = \"first\"\n", "from-hostname"),
        (
            "[cluster]\nsiblings = [\"https://10.0.0.1:9090/\"]\n",
            "not http://HOST:PORT/",
        ),
        (
            "[cluster]\nsiblings = [\"http://10.0.0.1:9090/answers\"]\n",
            "not http://HOST:PORT/",
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
    let no_admin = base.replace("[listen]\nadmin = \"127.0.0.1:9090\"\n", "");
    std::fs::write(
        &path,
        format!("{no_admin}[cluster]\nsiblings = [\"http://10.0.0.1:9090/\"]\n"),
    )
    .unwrap();
    let e = Config::load(&path).unwrap_err().to_string();
    assert!(e.contains("set [listen] admin"), "{e}");
}

/// Replicas with nothing but their admin listeners, one process per `(index, key)`, listed in
/// process order in one siblings list, followed by `dead` entries nothing listens on.
async fn replicas(dir: &TempDir, procs: &[(u8, &[u8])], dead: usize) -> Vec<Running> {
    let admins: Vec<TcpListener> = procs.iter().map(|_| bind()).collect();
    let mut urls: Vec<String> = admins
        .iter()
        .map(|l| format!("\"http://127.0.0.1:{}/\"", port(l)))
        .collect();
    for _ in 0..dead {
        let gone = bind();
        urls.push(format!("\"http://127.0.0.1:{}/\"", port(&gone)));
    }
    let siblings = urls.join(", ");
    let mut out = Vec::new();
    for (n, ((replica, key), admin)) in procs.iter().zip(admins).enumerate() {
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(dir.0.join(format!("k{n}")), format!("{hex}\n")).unwrap();
        let path = dir.0.join(format!("g{n}.toml"));
        std::fs::write(
            &path,
            format!(
                "[gateway]\npublic_domain = \"opx.example\"\ncore_domains = [\"core.opx.example\"]\n\
                 country_code = \"46\"\nhmac_key_file = \"k{n}\"\n[listen]\nadmin = \"127.0.0.1:{}\"\n\
                 [cluster]\nreplica = {replica}\nsiblings = [{siblings}]\n",
                port(&admin)
            ),
        )
        .unwrap();
        let started = app::start(
            Config::load(&path).unwrap(),
            StartOptions {
                listeners: PreBound {
                    admin: Some(admin),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
        out.push(started);
    }
    out
}

fn conflicts(g: &Running) -> i64 {
    g.gateway.metrics().cluster_conflicts.get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_in_index_order_with_one_key_check_clean() {
    let dir = TempDir::new("ssp-cluster-ok");
    let key = [7u8; 32];
    // A third entry nobody answers (a replica down) is not a conflict.
    let gs = replicas(&dir, &[(0, &key), (1, &key)], 1).await;
    for g in &gs {
        let found = g.gateway.links().check_cluster().await;
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(conflicts(g), 0);
    }
    for g in gs {
        g.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_replica_index_is_reported() {
    let dir = TempDir::new("ssp-cluster-dup");
    let key = [7u8; 32];
    // Both processes say replica 0; the list has them at places 0 and 1.
    let gs = replicas(&dir, &[(0, &key), (0, &key)], 0).await;
    // The second process's own start-up check already sees it (the first was serving).
    eventually("the second replica's watcher found both conflicts", || {
        conflicts(&gs[1]) == 2
    })
    .await;
    let first = gs[0].gateway.links().check_cluster().await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].sibling, 1);
    assert!(
        first[0].what.contains("it says it is replica 0"),
        "{}",
        first[0]
    );
    let second = gs[1].gateway.links().check_cluster().await;
    assert_eq!(second.len(), 2, "{second:?}");
    assert!(
        second[0]
            .what
            .contains("our own entry is answered by another process"),
        "{}",
        second[0]
    );
    assert!(second[0].to_string().starts_with("[cluster] siblings[0]: "));
    assert_eq!(conflicts(&gs[0]), 1);
    for g in gs {
        g.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_another_key_is_reported() {
    let dir = TempDir::new("ssp-cluster-key");
    let (k0, k1) = ([7u8; 32], [8u8; 32]);
    let gs = replicas(&dir, &[(0, &k0), (1, &k1)], 0).await;
    for (g, other) in [(&gs[0], 1), (&gs[1], 0)] {
        let found = g.gateway.links().check_cluster().await;
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].sibling, other);
        assert!(found[0].what.contains("hmac_key_file"), "{}", found[0]);
        assert_eq!(conflicts(g), 1);
    }
    for g in gs {
        g.shutdown().await;
    }
}
