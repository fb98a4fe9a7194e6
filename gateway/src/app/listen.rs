//! The listeners: an accept loop per listener (plain or TLS, HTTP/1.1 and HTTP/2 on TLS),
//! bounded in connections, ended by the one [`Drain`].

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::drain::Drain;
use crate::web::{CertMemo, ConnInfo, HttpResponse, Stream};

/// The request handler of a listener.
pub type Handler = Arc<
    dyn Fn(Request<Incoming>, Arc<ConnInfo>) -> Pin<Box<dyn Future<Output = HttpResponse> + Send>>
        + Send
        + Sync,
>;

/// Bounds of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once (beyond: new ones wait in the accept queue).
    pub max_connections: usize,
    /// After the drain stops: how long open connections get to finish.
    pub drain: Duration,
}

/// Serve a listener until the drain stops, then give open connections up to `limits.drain`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<(TlsAcceptor, Duration)>,
    handler: Handler,
    drain: Drain,
    limits: Limits,
    on_tls_error: Arc<dyn Fn(&str) + Send + Sync>,
) {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        // Slow-loris bound: headers must arrive within this time.
        .header_read_timeout(Duration::from_secs(30));
    builder.http2().timer(TokioTimer::new());
    // Plain listeners (the core side) speak HTTP/1.1 only: no h2 preface sniffing.
    if tls.is_none() {
        builder = builder.http1_only();
    }
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = drain.stopped() => break,
        };
        let (tcp, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = drain.stopped() => break,
        };
        let _ = tcp.set_nodelay(true);
        let handler = handler.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let on_tls_error = on_tls_error.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let info_certs;
            let io = match tls {
                Some((acceptor, handshake)) => {
                    match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => {
                            info_certs = s
                                .get_ref()
                                .1
                                .peer_certificates()
                                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect());
                            Stream::ServerTls(Box::new(s))
                        }
                        Ok(Err(e)) => {
                            tracing::info!(%remote, error = %e, "TLS handshake refused");
                            on_tls_error(&e.to_string());
                            return;
                        }
                        Err(_) => {
                            on_tls_error("handshake timeout");
                            return;
                        }
                    }
                }
                None => {
                    info_certs = None;
                    Stream::Plain(tcp)
                }
            };
            let info = Arc::new(ConnInfo {
                remote,
                certs: info_certs,
                memo: CertMemo::default(),
            });
            let svc = hyper::service::service_fn(move |req| {
                let fut = handler(req, info.clone());
                async move { Ok::<_, Infallible>(fut.await) }
            });
            let conn = builder.serve_connection(TokioIo::new(io), svc);
            let conn = watcher.watch(conn.into_owned());
            if let Err(e) = conn.await {
                tracing::debug!(%remote, error = ?e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain deadline passed with connections still open");
    }
}
