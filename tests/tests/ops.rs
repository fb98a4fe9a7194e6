//! The admin listener as an operator's load balancer and Prometheus see it.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ssp_gateway::app::{self, PreBound, StartOptions};
use ssp_gateway::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A plain HTTP/1.1 request to `addr`; the status code and the body.
async fn http(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
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
