//! The admin listener as an operator's load balancer and Prometheus see it.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ssp_gateway::app::{self, PreBound, StartOptions};
use ssp_gateway::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A plain HTTP/1.1 request to `addr`; the status code and the body.
async fn http(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    http_as(addr, method, path, None).await
}

/// The same, with `Authorization: Bearer TOKEN` when `bearer` is given.
async fn http_as(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
) -> (u16, String) {
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_ascii_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// A gateway of `cfg` with only an admin listener, on a port of loopback; its address.
async fn with_admin(cfg: Config) -> (app::Running, std::net::SocketAddr) {
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = admin.local_addr().unwrap();
    let running = app::start(
        cfg,
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
    (running, addr)
}

/// `/ready` says 503 as soon as a drain begins, so a load balancer or Kubernetes stops
/// sending new traffic while answers in flight are still taken in; `/health` stays 200.
#[tokio::test]
async fn ready_is_503_while_draining() {
    let dir = ssp_testbed::federation::TempDir::new("ssp-ops");
    let cfg = Config::from_str(
        &dir.0.join("test.toml"),
        "[gateway]\npublic_domain = \"opx.example\"\ncore_domains = [\"core.opx.example\"]\ncountry_code = \"46\"\n",
    )
    .unwrap();
    let (running, addr) = with_admin(cfg).await;
    let (code, body) = http(addr, "GET", "/ready").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("ready:"), "{body}");
    running.drain().await;
    let (code, body) = http(addr, "GET", "/ready").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.starts_with("draining:"), "{body}");
    assert_eq!(http(addr, "GET", "/health").await.0, 200);
    let (code, metrics) = http(addr, "GET", "/metrics").await;
    assert_eq!(code, 200);
    assert!(metrics.contains("ssp_directory_entries"), "{metrics}");
    running.shutdown().await;
}

/// The admin listener can be exposed: `POST /reload` asks for the bearer token of `[listen]
/// admin_token_file` (re-read at every reload), and a known path with the wrong method gets
/// 405 with `Allow`.
#[tokio::test]
async fn admin_reload_needs_the_bearer_token_and_wrong_methods_get_405() {
    let dir = ssp_testbed::federation::TempDir::new("ssp-ops");
    let (token, next) = (
        "first-token-0123456789abcdef",
        "second-token-0123456789abcdef",
    );
    std::fs::write(dir.0.join("admin.token"), format!("{token}\n")).unwrap();
    let path = dir.0.join("test.toml");
    let text = "[gateway]\npublic_domain = \"opx.example\"\ncore_domains = [\"core.opx.example\"]\ncountry_code = \"46\"\n[listen]\nadmin_token_file = \"admin.token\"\n";
    std::fs::write(&path, text).unwrap();
    let cfg = Config::load(&path).unwrap();
    let (running, addr) = with_admin(cfg).await;
    let call = |m: &'static str, p: &'static str, t: Option<&'static str>| http_as(addr, m, p, t);
    let (code, body) = call("POST", "/reload", None).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("bearer token"), "{body}");
    assert_eq!(
        call("POST", "/reload", Some("wrong-token-0123456789"))
            .await
            .0,
        401
    );
    // The right token reloads; a token file rewritten is in use after that reload.
    std::fs::write(dir.0.join("admin.token"), format!("{next}\n")).unwrap();
    let (code, body) = call("POST", "/reload", Some(token)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        call("POST", "/reload", Some(token)).await.0,
        401,
        "the old token is gone"
    );
    assert_eq!(call("POST", "/reload", Some(next)).await.0, 200);
    // Wrong methods: 405, naming the one that is right.
    let (code, body) = call("GET", "/reload", Some(next)).await;
    assert_eq!((code, body.as_str()), (405, "/reload takes POST\n"));
    assert_eq!(call("POST", "/metrics", None).await.0, 405);
    assert_eq!(call("DELETE", "/health", None).await.0, 405);
    assert_eq!(
        call("GET", "/health", None).await.0,
        200,
        "reads need no token"
    );
    assert_eq!(call("GET", "/nothing", None).await.0, 404);
    // A token file that is too short refuses the reload whole.
    std::fs::write(dir.0.join("admin.token"), "short\n").unwrap();
    let (code, body) = call("POST", "/reload", Some(next)).await;
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("admin_token_file"), "{body}");
    assert_eq!(
        call("POST", "/reload", Some(next)).await.0,
        500,
        "the old token still works"
    );
    running.shutdown().await;
}
