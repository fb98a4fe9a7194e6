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
//! Each TLS flow (accepted or opened) is kept in [`Flows`] by its remote address with the
//! certificate the far side presented, until rsipstack retires the connection (its cancel
//! token fires): a request that arrives on a flow is attributed to that certificate.

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

/// TLS connections held at once (accepted and opened together): a bound on what a far side
/// can make the gateway keep.
const MAX_FLOWS: usize = 1024;

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
}

/// A certificate chain a far side presented, end entity first.
pub(crate) type Chain = Arc<[CertificateDer<'static>]>;

/// The chain of a handshake's far side.
fn chain_of(conn: &rustls::CommonState) -> Option<Chain> {
    conn.peer_certificates()
        .filter(|c| !c.is_empty())
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
}

/// The live TLS flows, by remote address.
#[derive(Default)]
pub(super) struct Flows {
    map: Mutex<HashMap<SocketAddr, Flow>>,
    next: AtomicU64,
}

impl Flows {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<SocketAddr, Flow>) -> T) -> T {
        let mut m = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut m)
    }

    /// Whether a flow to `addr` is up.
    fn live(&self, addr: SocketAddr) -> bool {
        self.with(|m| m.get(&addr).is_some_and(|f| !f.token.is_cancelled()))
    }

    /// The certificate chain the far end of the flow from `addr` presented, if any.
    pub(super) fn chain(&self, addr: SocketAddr) -> Option<Chain> {
        self.with(|m| m.get(&addr).and_then(|f| f.chain.clone()))
    }

    fn len(&self) -> usize {
        self.with(|m| m.len())
    }

    /// Keep the flow with `addr` until its token fires.
    fn keep(
        self: &Arc<Self>,
        addr: SocketAddr,
        token: CancellationToken,
        chain: Option<Chain>,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.with(|m| {
            m.insert(
                addr,
                Flow {
                    id,
                    token: token.clone(),
                    chain,
                },
            )
        });
        let flows = self.clone();
        tokio::spawn(async move {
            token.cancelled().await;
            // A newer flow with the same address is not this one's to remove.
            flows.with(|m| {
                if m.get(&addr).is_some_and(|f| f.id == id) {
                    m.remove(&addr);
                }
            });
            drop(permit);
        });
    }
}

/// SIP over TLS of one stack.
pub(super) struct Tls {
    pub(super) setup: TlsSetup,
    pub(super) flows: Arc<Flows>,
    limit: Arc<tokio::sync::Semaphore>,
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
                limit: Arc::new(tokio::sync::Semaphore::new(MAX_FLOWS)),
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
                let Ok(permit) = tls.limit.clone().try_acquire_owned() else {
                    tracing::debug!(%remote, flows = tls.flows.len(), "SIP TLS connection refused: too many held");
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
                    match TlsConnection::from_server_stream(
                        stream,
                        tls.local(),
                        far,
                        Some(token.clone()),
                    )
                    .await
                    {
                        Ok(conn) => {
                            tls.flows.keep(remote, token, chain, Some(permit));
                            inner
                                .transport_layer
                                .add_connection(SipConnection::Tls(conn));
                        }
                        Err(e) => {
                            tracing::debug!(%remote, error = %e, "SIP TLS connection not taken")
                        }
                    }
                });
            }
        });
    }

    /// Make sure a TLS flow to `dest` is up, opening one whose server must prove `domain`
    /// (RFC 5922 §7.2: the SIP domain, not the address DNS resolved it to).
    pub(super) async fn ensure(
        &self,
        inner: &EndpointInner,
        dest: SocketAddr,
        domain: &str,
    ) -> Result<(), StackError> {
        if self.flows.live(dest) {
            return Ok(());
        }
        let domain = domain.to_ascii_lowercase();
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
            .limit
            .clone()
            .try_acquire_owned()
            .map_err(|_| err("too many SIP TLS connections held"))?;
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
        let token = self.cancel.child_token();
        let far = SipAddr::new(rsipstack::sip::Transport::Tls, dest.into());
        let conn = TlsConnection::from_client_stream(stream, far, Some(token.clone()))
            .await
            .map_err(err)?;
        self.flows.keep(dest, token, chain, Some(permit));
        inner
            .transport_layer
            .add_connection(SipConnection::Tls(conn));
        Ok(())
    }
}
