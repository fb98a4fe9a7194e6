//! Outbound streams, one per remote domain, opened on first use and shared by every stanza
//! for that domain; closed when idle, opened again (after a backoff that grows with each
//! failure) when one breaks.
//!
//! A stanza is handed to its domain's stream task and counted as sent once it is written on
//! a proved stream. A stream that cannot be opened or proved fails every stanza waiting for
//! it; the caller's own deadline bounds the wait either way, so a far side that never
//! completes dialback (and so never bounces anything) still gets the requester an answer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::stream::{self, Ctx};

/// The first backoff after a failure; doubled per failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Stanzas that may wait for one stream.
const QUEUE: usize = 1024;

/// A stanza to write, and who waits to hear it was.
struct Out {
    xml: String,
    done: oneshot::Sender<Result<(), String>>,
}

struct Entry {
    generation: u64,
    tx: mpsc::Sender<Out>,
}

/// Why a stanza was not sent.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum SendError {
    /// The domain's stream cannot be opened now (the text says why).
    #[error("{0}")]
    Unreachable(String),
    /// Not sent within the deadline.
    #[error("no stream to {0} was proved in time")]
    Timeout(String),
}

/// The outbound streams.
pub(crate) struct Pool {
    ctx: Arc<Ctx>,
    streams: Mutex<HashMap<String, Entry>>,
    /// Domains whose last stream failed: not tried again before the instant.
    backoff: Mutex<HashMap<String, (Instant, u32, String)>>,
    generation: std::sync::atomic::AtomicU64,
    gauge: prometheus::IntGauge,
    proofs: prometheus::IntCounterVec,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

impl Pool {
    /// Streams opened with `ctx`; `gauge` counts those open.
    pub(crate) fn new(
        ctx: Arc<Ctx>,
        gauge: prometheus::IntGauge,
        proofs: prometheus::IntCounterVec,
    ) -> Arc<Pool> {
        Arc::new(Pool {
            ctx,
            streams: Mutex::new(HashMap::new()),
            backoff: Mutex::new(HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
            gauge,
            proofs,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Send `xml` to `domain` (whose servers are `servers`), waiting until `deadline` at most.
    pub(crate) async fn send(
        self: &Arc<Self>,
        domain: &str,
        servers: &[SocketAddr],
        xml: String,
        deadline: tokio::time::Instant,
    ) -> Result<(), SendError> {
        {
            let b = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((until, _, why)) = b.get(domain)
                && *until > Instant::now()
            {
                return Err(SendError::Unreachable(format!(
                    "{why} (tried again in {:?})",
                    until.saturating_duration_since(Instant::now())
                )));
            }
        }
        let mut out = Out {
            xml,
            done: oneshot::channel().0,
        };
        // Twice at most: a stream that ended as the stanza was handed over is opened anew.
        for _ in 0..2 {
            let tx = self.stream_for(domain, servers);
            let (done, rx) = oneshot::channel();
            out.done = done;
            let queued = match tokio::time::timeout_at(deadline, tx.send(out)).await {
                Ok(q) => q,
                // The stream's queue stayed full until the deadline.
                Err(_) => return Err(SendError::Timeout(domain.to_owned())),
            };
            match queued {
                Ok(()) => {
                    return match tokio::time::timeout_at(deadline, rx).await {
                        Ok(Ok(Ok(()))) => Ok(()),
                        Ok(Ok(Err(e))) => Err(SendError::Unreachable(e)),
                        Ok(Err(_)) => Err(SendError::Unreachable(format!(
                            "the stream to {domain} ended"
                        ))),
                        Err(_) => Err(SendError::Timeout(domain.to_owned())),
                    };
                }
                Err(mpsc::error::SendError(back)) => {
                    out = back;
                    self.forget(domain, None);
                }
            }
        }
        Err(SendError::Unreachable(format!(
            "no stream to {domain} could be opened"
        )))
    }

    /// The sender of `domain`'s stream, started if there is none.
    fn stream_for(self: &Arc<Self>, domain: &str, servers: &[SocketAddr]) -> mpsc::Sender<Out> {
        let mut all = self.lock();
        if let Some(e) = all.get(domain)
            && !e.tx.is_closed()
        {
            return e.tx.clone();
        }
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(QUEUE);
        all.insert(
            domain.to_owned(),
            Entry {
                generation,
                tx: tx.clone(),
            },
        );
        let pool = self.clone();
        let (domain, servers) = (domain.to_owned(), servers.to_vec());
        tokio::spawn(async move { pool.run(domain, servers, generation, rx).await });
        tx
    }

    /// Forget `domain`'s stream (only the one of `generation`, when given).
    fn forget(&self, domain: &str, generation: Option<u64>) {
        let mut all = self.lock();
        if all
            .get(domain)
            .is_some_and(|e| generation.is_none_or(|g| g == e.generation))
        {
            all.remove(domain);
        }
    }

    /// Close every stream (the gateway stops).
    pub(crate) fn close_all(&self) {
        self.lock().clear();
    }

    /// Forget the backoffs of domains that have not failed for a while (kept past their
    /// end so that a domain failing again backs off longer each time).
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        self.backoff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (until, _, _)| *until + MAX_BACKOFF * 2 > now);
    }

    /// One stream's life: opened and proved, then writing what comes until it breaks or
    /// idles out.
    async fn run(
        self: Arc<Self>,
        domain: String,
        servers: Vec<SocketAddr>,
        generation: u64,
        mut rx: mpsc::Receiver<Out>,
    ) {
        let (mut conn, proof) = match stream::connect(&self.ctx, &domain, &servers).await {
            Ok(c) => c,
            Err(e) => {
                let why = e.to_string();
                tracing::warn!(to = %domain, error = %why, "XMPP stream not opened");
                self.proofs.with_label_values(&["out", "failed"]).inc();
                {
                    let mut b = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
                    let n = b.get(&domain).map_or(0, |(_, n, _)| *n).saturating_add(1);
                    let wait = MIN_BACKOFF
                        .saturating_mul(1 << n.min(6).saturating_sub(1))
                        .min(MAX_BACKOFF);
                    b.insert(domain.clone(), (Instant::now() + wait, n, why.clone()));
                }
                self.forget(&domain, Some(generation));
                rx.close();
                while let Ok(o) = rx.try_recv() {
                    let _ = o.done.send(Err(why.clone()));
                }
                return;
            }
        };
        self.backoff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&domain);
        tracing::info!(to = %domain, proof = proof.label(), tls = conn.tls(), "XMPP stream opened");
        self.proofs.with_label_values(&["out", proof.label()]).inc();
        self.gauge.inc();
        let idle = self.ctx_idle();
        let ended = loop {
            tokio::select! {
                o = rx.recv() => {
                    let Some(o) = o else { break "closed here".to_owned() };
                    if o.done.is_closed() {
                        // Its sender's deadline passed while the stream was being opened,
                        // and the requester was answered: it must not go after all.
                        continue;
                    }
                    match conn.write(&o.xml).await {
                        Ok(()) => {
                            let _ = o.done.send(Ok(()));
                        }
                        Err(e) => {
                            let _ = o.done.send(Err(e.to_string()));
                            break e.to_string();
                        }
                    }
                }
                s = conn.stanza() => match s {
                    // Nothing is due on a stream we opened; what comes is dropped.
                    Ok(_) => {}
                    Err(e) => break e.to_string(),
                },
                () = tokio::time::sleep(idle) => break "idle".to_owned(),
            }
        };
        self.forget(&domain, Some(generation));
        rx.close();
        while let Ok(o) = rx.try_recv() {
            let _ = o
                .done
                .send(Err(format!("the stream to {domain} ended: {ended}")));
        }
        conn.close().await;
        self.gauge.dec();
        tracing::info!(to = %domain, why = %ended, "XMPP stream closed");
    }

    fn ctx_idle(&self) -> Duration {
        self.ctx.policies.idle
    }
}
