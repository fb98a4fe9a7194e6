//! What the hostile-input tests attack with: connections from another loopback address
//! (127.0.0.2, so the well-behaved peers on 127.0.0.1 are a different source), TLS with or
//! without a client certificate, HTTP/1.1 written byte by byte, and a peer that never answers.
//! Also the process's own gauges: open files and resident memory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls_pki_types::pem::PemObject;
use ssp_gateway::certs::DevCa;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

/// The attacker's source address.
pub const ATTACKER: [u8; 4] = [127, 0, 0, 2];

/// A TCP connection to `to` from the attacker's address.
pub async fn tcp_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::from((from, 0)))?;
    s.connect(to).await
}

/// A TLS client trusting `ca`, presenting a certificate for `identity` (issued by `ca`) if
/// given.
pub fn tls_client(ca: &DevCa, identity: Option<&str>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let _ = roots.add(ca.cert_der());
    let b = rustls::ClientConfig::builder_with_provider(ssp_gateway::tls::provider())
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots));
    let Ok(b) = b else {
        panic!("TLS client configuration");
    };
    let cfg = match identity {
        Some(domain) => {
            let issued = ca.issue(domain).expect("certificate");
            let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).expect("key");
            b.with_client_auth_cert(vec![issued.der], key)
                .expect("client certificate")
        }
        None => b.with_no_client_auth(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// A TLS connection from `from` to `to`, the server named `name`.
pub async fn tls_from(
    from: [u8; 4],
    to: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
    name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = tcp_from(from, to).await?;
    let name = ServerName::try_from(name.to_owned())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    connector.connect(name, tcp).await
}

/// An SSP POST as bytes: head and body.
pub fn post(body: &str) -> Vec<u8> {
    format!(
        "POST / HTTP/1.1\r\nHost: gw\r\nContent-Type: application/vnd.wv.ssp+xml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The next HTTP/1.1 response on `io`: its status and body (`None`: closed first).
pub async fn response<S: AsyncRead + Unpin>(io: &mut S) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = io.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let code = head.split_ascii_whitespace().nth(1)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = io.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let end = buf.len().min(head_end + len);
    Some((
        code,
        String::from_utf8_lossy(&buf[head_end..end]).into_owned(),
    ))
}

/// Whether the far side closed `io` within `within` (reads until EOF or error).
pub async fn closed_within<S: AsyncRead + Unpin>(io: &mut S, within: Duration) -> bool {
    let mut b = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match io.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Write `bytes` one at a time, `gap` apart (a trickle), until done or the far side closes.
pub async fn trickle<S: AsyncWrite + Unpin>(io: &mut S, bytes: &[u8], gap: Duration) -> usize {
    for (i, b) in bytes.iter().enumerate() {
        if io.write_all(&[*b]).await.is_err() || io.flush().await.is_err() {
            return i;
        }
        tokio::time::sleep(gap).await;
    }
    bytes.len()
}

/// A TLS server that completes handshakes, reads what it is sent, and never answers: a peer
/// that is down in the worst way. Counts connections and POSTs.
pub struct BlackHole {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its certificate (pin it).
    pub cert: CertificateDer<'static>,
    /// Connections accepted.
    pub connections: Arc<AtomicUsize>,
    /// Connections open now.
    pub open: Arc<AtomicUsize>,
    /// Most connections open at once.
    pub max_open: Arc<AtomicUsize>,
    /// POST request lines seen.
    pub posts: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl BlackHole {
    /// Start one for `domain`, its certificate issued by a CA of its own.
    pub async fn start(domain: &str) -> BlackHole {
        let ca = DevCa::new("black hole CA").expect("CA");
        let issued = ca.issue(domain).expect("certificate");
        let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).expect("key");
        let mut cfg = ssp_gateway::tls::server_config(vec![issued.der.clone()], key, None, false)
            .expect("server config");
        // HTTP/1.1 only, so requests can be counted in the plaintext.
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let max_open = Arc::new(AtomicUsize::new(0));
        let posts = Arc::new(AtomicUsize::new(0));
        let (c, o, m, p) = (
            connections.clone(),
            open.clone(),
            max_open.clone(),
            posts.clone(),
        );
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                c.fetch_add(1, Ordering::Relaxed);
                let now = o.fetch_add(1, Ordering::Relaxed) + 1;
                m.fetch_max(now, Ordering::Relaxed);
                let (acceptor, o, p) = (acceptor.clone(), o.clone(), p.clone());
                tokio::spawn(async move {
                    if let Ok(mut s) = acceptor.accept(tcp).await {
                        let mut buf = [0u8; 8192];
                        while let Ok(n) = s.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            let posts = buf[..n].windows(5).filter(|w| w == b"POST ").count();
                            p.fetch_add(posts, Ordering::Relaxed);
                        }
                    }
                    o.fetch_sub(1, Ordering::Relaxed);
                });
            }
        });
        BlackHole {
            addr,
            cert: issued.der,
            connections,
            open,
            max_open,
            posts,
            task,
        }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/", self.addr.port())
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Files this process has open now.
pub fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// This process's resident memory, KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_ascii_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// The p-th percentile (0..=100) of `samples`, in place.
pub fn percentile(samples: &mut [Duration], p: usize) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort();
    let i = (samples.len() * p / 100).min(samples.len() - 1);
    samples[i]
}
