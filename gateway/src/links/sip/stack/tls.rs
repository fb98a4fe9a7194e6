//! SIP over TLS (RFC 3261 §26.3.1, RFC 5922) for the stack: the TLS listener and the
//! connections the gateway opens, each handed to rsipstack as a ready stream.
//!
//! The gateway does the handshakes itself rather than through rsipstack's own TLS listener
//! and dialler, for three reasons: the listener must ask for the far side's certificate
//! (that is what proves a SIP operator's domain over TLS) and rsipstack's does not; a
//! connection the gateway opens must check the server's certificate against the SIP
//! *domain* it is sending to, not the address DNS gave; and each handshake needs a deadline
//! and a bound on the connections held, as every other listener of the gateway has.
//!
//! Each TLS flow (accepted or opened) is kept in [`Flows`] by its two addresses with the
//! certificate chain the far side presented, until rsipstack retires the connection (its
//! cancel token fires): a request that arrives on a flow is attributed to that chain. A
//! request the gateway sends goes on a flow it opened to that SIP domain's server (checked
//! for that domain), or on one that server's operator opened with a certificate naming the
//! domain; the connection is handed to the transaction, never looked up by address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rsipstack::platform::CancellationToken;
use rsipstack::transaction::endpoint::EndpointInner;
use rsipstack::transport::tls::TlsConnection;
use rsipstack::transport::{SipAddr, SipConnection};
use rustls_pki_types::{CertificateDer, ServerName};

use super::{StackError, err};

/// How long a TLS handshake may take, either way.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// TLS connections taken at once: a bound on what far sides can make the gateway keep.
const MAX_ACCEPTED: usize = 1024;

/// Of those, from one source address (one host cannot take them all).
const MAX_PER_SOURCE: usize = 32;

/// TLS connections the gateway opens, held at once (a budget of their own, so connections
/// made to the gateway cannot keep it from reaching servers).
const MAX_OPENED: usize = 256;

/// What SIP over TLS is set up with.
#[derive(Clone)]
pub(crate) struct TlsSetup {
    /// Where the TLS listener binds.
    pub(crate) listen: SocketAddr,
    /// The address:port SIP peers reach it at (Via, Contact).
    pub(crate) advertise: SocketAddr,
    /// The listener's configuration: our certificate, and client certificates asked for.
    pub(crate) server: Arc<rustls::ServerConfig>,
    /// Client configurations by SIP domain, for domains whose servers chain to anchors of
    /// their own.
    pub(crate) clients: HashMap<String, Arc<rustls::ClientConfig>>,
    /// The client configuration for every other domain (`None`: no anchors configured, so
    /// no server can be checked and the gateway opens no TLS connection).
    pub(crate) default_client: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSetup")
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .finish_non_exhaustive()
    }
}

/// One live TLS flow.
struct Flow {
    id: u64,
    token: CancellationToken,
    chain: Option<Chain>,
    conn: SipConnection,
    /// Opened by us to a server whose certificate was checked for this (lowercase) domain;
    /// `None`: opened to us.
    verified_for: Option<String>,
}

/// A certificate chain a far side presented, end entity first.
pub(crate) type Chain = Arc<[CertificateDer<'static>]>;

/// The chain of a handshake's far side.
fn chain_of(conn: &rustls::CommonState) -> Option<Chain> {
    conn.peer_certificates()
        .filter(|c| !c.is_empty())
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
}

/// A flow's two ends (local, remote): what tells connections apart.
type Ends = (SocketAddr, SocketAddr);

/// The live TLS flows, by their two ends.
#[derive(Default)]
pub(super) struct Flows {
    map: Mutex<HashMap<Ends, Flow>>,
    next: AtomicU64,
}

impl Flows {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<Ends, Flow>) -> T) -> T {
        let mut m = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut m)
    }

    /// A live flow to `remote` that may carry a request to `domain`'s server.
    fn for_domain(&self, remote: SocketAddr, domain: &str) -> Option<SipConnection> {
        self.with(|m| {
            m.iter()
                .filter(|((_, r), f)| *r == remote && !f.token.is_cancelled())
                .find(|(_, f)| match &f.verified_for {
                    Some(d) => d == domain,
                    None => f
                        .chain
                        .as_ref()
                        .and_then(|c| c.first())
                        .is_some_and(|ee| crate::tls::cert_names_domain(ee, domain)),
                })
                .map(|(_, f)| f.conn.clone())
        })
    }

    /// The certificate chain the far end of the flow between `ends` presented, if any.
    pub(super) fn chain(&self, ends: Ends) -> Option<Chain> {
        self.with(|m| {
            m.get(&ends)
                .filter(|f| !f.token.is_cancelled())
                .and_then(|f| f.chain.clone())
        })
    }

    fn len(&self) -> usize {
        self.with(|m| m.len())
    }

    /// Keep the flow between `ends` until its token fires; `held` (its permits) is let go
    /// then.
    fn keep<H: Send + 'static>(self: &Arc<Self>, ends: Ends, flow: Flow, held: H) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let token = flow.token.clone();
        self.with(|m| m.insert(ends, Flow { id, ..flow }));
        let flows = self.clone();
        tokio::spawn(async move {
            token.cancelled().await;
            // A newer flow between the same ends is not this one's to remove.
            flows.with(|m| {
                if m.get(&ends).is_some_and(|f| f.id == id) {
                    m.remove(&ends);
                }
            });
            drop(held);
        });
    }
}

/// Connections taken from each source address, counted while they live.
type SourceCounts = Arc<Mutex<HashMap<std::net::IpAddr, usize>>>;

/// One connection's place in its source address's count, given back when dropped.
struct PerSource {
    counts: SourceCounts,
    ip: std::net::IpAddr,
}

impl PerSource {
    fn take(counts: &SourceCounts, ip: std::net::IpAddr) -> Option<PerSource> {
        let mut c = counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = c.entry(ip).or_default();
        if *n >= MAX_PER_SOURCE {
            return None;
        }
        *n += 1;
        Some(PerSource {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for PerSource {
    fn drop(&mut self) {
        let mut c = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = c.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.remove(&self.ip);
            }
        }
    }
}

/// SIP over TLS of one stack.
pub(super) struct Tls {
    pub(super) setup: TlsSetup,
    pub(super) flows: Arc<Flows>,
    accepted: Arc<tokio::sync::Semaphore>,
    per_source: SourceCounts,
    opened: Arc<tokio::sync::Semaphore>,
    cancel: CancellationToken,
}

impl Tls {
    /// Bind the listener (a busy port is an error now, not later).
    pub(super) async fn bind(
        setup: TlsSetup,
        cancel: CancellationToken,
    ) -> Result<(Tls, tokio::net::TcpListener), StackError> {
        let listener = tokio::net::TcpListener::bind(setup.listen)
            .await
            .map_err(|e| err(format!("cannot listen on tls {}: {e}", setup.listen)))?;
        Ok((
            Tls {
                setup,
                flows: Arc::new(Flows::default()),
                accepted: Arc::new(tokio::sync::Semaphore::new(MAX_ACCEPTED)),
                per_source: SourceCounts::default(),
                opened: Arc::new(tokio::sync::Semaphore::new(MAX_OPENED)),
                cancel,
            },
            listener,
        ))
    }

    /// Where requests over TLS say they come from (Via).
    pub(super) fn local(&self) -> SipAddr {
        SipAddr::new(rsipstack::sip::Transport::Tls, self.setup.advertise.into())
    }

    /// Accept TLS connections on `listener` until the stack stops, handing each to the
    /// stack's transport layer once its handshake is done.
    pub(super) fn serve(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
        inner: Arc<EndpointInner>,
    ) {
        let tls = self.clone();
        tokio::spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.setup.server.clone());
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    () = tls.cancel.cancelled() => return,
                };
                let (tcp, remote) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors, most likely: do not spin on it.
                        tracing::warn!(error = %e, "SIP TLS accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = tls.accepted.clone().try_acquire_owned() else {
                    tracing::debug!(%remote, flows = tls.flows.len(), "SIP TLS connection refused: too many held");
                    continue;
                };
                let Some(source) = PerSource::take(&tls.per_source, remote.ip()) else {
                    tracing::debug!(%remote, "SIP TLS connection refused: too many from this address");
                    continue;
                };
                let Ok(local) = tcp.local_addr() else {
                    continue;
                };
                let (tls, acceptor, inner) = (tls.clone(), acceptor.clone(), inner.clone());
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%remote, error = %e, "SIP TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%remote, "SIP TLS handshake not done in time");
                            return;
                        }
                    };
                    let chain = chain_of(stream.get_ref().1);
                    let token = tls.cancel.child_token();
                    let far = SipAddr::new(rsipstack::sip::Transport::Tls, remote.into());
                    // The connection's real local address: with the remote one, what tells it
                    // apart from every other flow.
                    let near = SipAddr::new(rsipstack::sip::Transport::Tls, local.into());
                    match TlsConnection::from_server_stream(stream, near, far, Some(token.clone()))
                        .await
                    {
                        Ok(conn) => {
                            let conn = SipConnection::Tls(conn);
                            let flow = Flow {
                                id: 0,
                                token,
                                chain,
                                conn: conn.clone(),
                                verified_for: None,
                            };
                            tls.flows.keep((local, remote), flow, (permit, source));
                            inner.transport_layer.add_connection(conn);
                        }
                        Err(e) => {
                            tracing::debug!(%remote, error = %e, "SIP TLS connection not taken")
                        }
                    }
                });
            }
        });
    }

    /// A TLS flow to `dest` for a request to `domain`'s server: one the gateway opened and
    /// checked for that domain, or one that server's operator opened with a certificate
    /// naming it; else a new one whose server must prove `domain` (RFC 5922 §7.2: the SIP
    /// domain, not the address DNS resolved it to).
    pub(super) async fn ensure(
        &self,
        inner: &EndpointInner,
        dest: SocketAddr,
        domain: &str,
    ) -> Result<SipConnection, StackError> {
        let domain = domain.to_ascii_lowercase();
        if domain.is_empty() {
            return Err(err("no SIP domain to check a TLS server against"));
        }
        if let Some(conn) = self.flows.for_domain(dest, &domain) {
            return Ok(conn);
        }
        let cfg = self
            .setup
            .clients
            .get(&domain)
            .or(self.setup.default_client.as_ref())
            .cloned()
            .ok_or_else(|| {
                err(format!(
                    "no trust anchors to check {domain}'s SIP server with"
                ))
            })?;
        let name = ServerName::try_from(domain.clone()).map_err(|_| {
            err(format!(
                "{domain:?} is no name to check a certificate against"
            ))
        })?;
        let permit = self
            .opened
            .clone()
            .try_acquire_owned()
            .map_err(|_| err("too many SIP TLS connections opened"))?;
        let open = async {
            let tcp = tokio::net::TcpStream::connect(dest)
                .await
                .map_err(|e| err(format!("cannot connect to {dest}: {e}")))?;
            tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
                .map_err(|e| err(format!("TLS with {domain}'s server {dest}: {e}")))
        };
        let stream = tokio::time::timeout(HANDSHAKE, open)
            .await
            .map_err(|_| err(format!("TLS with {dest} not set up in time")))??;
        let chain = chain_of(stream.get_ref().1);
        let local = stream
            .get_ref()
            .0
            .local_addr()
            .map_err(|e| err(format!("TLS with {dest}: {e}")))?;
        let token = self.cancel.child_token();
        let far = SipAddr::new(rsipstack::sip::Transport::Tls, dest.into());
        let conn = SipConnection::Tls(
            TlsConnection::from_client_stream(stream, far, Some(token.clone()))
                .await
                .map_err(err)?,
        );
        let flow = Flow {
            id: 0,
            token,
            chain,
            conn: conn.clone(),
            verified_for: Some(domain),
        };
        self.flows.keep((local, dest), flow, permit);
        inner.transport_layer.add_connection(conn.clone());
        Ok(conn)
    }
}
