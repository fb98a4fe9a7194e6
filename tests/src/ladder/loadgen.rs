//! The ladder's load generator: HTTP/1.1 POSTs over plain TCP or TLS (with a client
//! certificate when the target wants one).
//!
//! - Closed loop: `conns` connections, each sending its next request as soon as the previous
//!   answer is in. This finds the maximum throughput.
//! - Open loop: a fixed total rate spread over the connections, each request with an intended
//!   send time; latency is counted from that time, so a server that stalls is charged for the
//!   requests it delayed (no coordinated omission). This gives latency below saturation.
//!
//! Connections are either kept alive, or opened for one request each (a full TLS handshake:
//! client-side resumption is off, the worst case after a failover).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use ssp_gateway::web::Stream;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

/// Where to send.
#[derive(Clone)]
pub struct Target {
    /// Address.
    pub addr: SocketAddr,
    /// TLS towards it, if any.
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
}

/// Connection reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Many requests per connection.
    KeepAlive,
    /// One request per connection (`Connection: close`).
    NewConnection,
}

/// One measurement.
#[derive(Debug, Clone)]
pub struct Load {
    /// Concurrent connections.
    pub conns: usize,
    /// Time before measuring starts (connections warm up, caches fill).
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
    /// Total requests per second (open loop); `None` for closed loop.
    pub rate: Option<f64>,
    /// Connection reuse.
    pub shape: Shape,
}

/// The request body for request number `n`.
pub type BodyFn = Arc<dyn Fn(u64) -> String + Send + Sync>;

/// What one measurement saw.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Good answers within the measured window.
    pub ok: u64,
    /// Failed requests or bad answers within the window.
    pub errors: u64,
    /// Open loop: requests scheduled inside the window that could not even be sent within
    /// the grace period after it (the server was past its capacity: overload, not a failed
    /// answer; reported beside the errors, never dropped silently).
    pub unsent: u64,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// Length of the measured window.
    pub window: Duration,
    /// Latencies of good answers in µs, sorted.
    pub latencies_us: Vec<u32>,
    /// Every request finished, warm-up and stragglers included (for CPU per request).
    pub done_total: u64,
}

impl Stats {
    /// Good answers per second.
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// The `p`-th percentile latency in µs (0 when nothing was measured).
    pub fn percentile(&self, p: f64) -> u32 {
        if self.latencies_us.is_empty() {
            return 0;
        }
        let rank = ((p / 100.0) * (self.latencies_us.len() - 1) as f64).round() as usize;
        self.latencies_us[rank.min(self.latencies_us.len() - 1)]
    }
}

/// Whether an answer is good: HTTP 200 and an SSP success status in the body.
pub fn good_answer(status: StatusCode, body: &[u8]) -> bool {
    status == StatusCode::OK && memchr::memmem::find(body, br#"<Status code="200""#).is_some()
}

async fn connect(target: &Target) -> Result<SendRequest<Full<Bytes>>, String> {
    let tcp = TcpStream::connect(target.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let stream = match &target.tls {
        None => Stream::Plain(tcp),
        Some((connector, name)) => Stream::ClientTls(Box::new(
            connector
                .connect(name.clone(), tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?,
        )),
    };
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn one(
    sender: &mut SendRequest<Full<Bytes>>,
    body: String,
    close: bool,
) -> Result<(StatusCode, Bytes), String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("connection: {e}"))?;
    let mut req = Request::post("/")
        .header(http::header::HOST, "ladder")
        .header(http::header::CONTENT_TYPE, "application/vnd.wv.ssp+xml");
    if close {
        req = req.header(http::header::CONNECTION, "close");
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((status, body))
}

/// How long an open-loop run waits after its window for requests scheduled inside it.
const GRACE: Duration = Duration::from_secs(2);

/// Run one measurement against `target`: `load.warmup` on the same connections, then the
/// measured window. Open loop: every request scheduled inside the window counts, also when
/// it is sent or answered after the window closes (within [`GRACE`]; ones not sent by then
/// are counted as unsent), so a stall is never cut off the tail.
pub async fn run(target: &Target, load: &Load, body: BodyFn) -> Stats {
    let start = Instant::now();
    let measure_from = start + load.warmup;
    let end = measure_from + load.duration;
    // Open loop: a pacer hands out intended send times on one global schedule; the workers
    // (one per connection) take them in turn. Closed loop: no pacer, workers go flat out.
    let jobs = load.rate.map(|rate| {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        tokio::spawn(pace(tx, rate, start, end));
        Arc::new(tokio::sync::Mutex::new(rx))
    });
    let mut tasks = Vec::new();
    for k in 0..load.conns {
        let target = target.clone();
        let shape = load.shape;
        let body = body.clone();
        let jobs = jobs.clone();
        tasks.push(tokio::spawn(async move {
            let mut st = Stats::default();
            let mut sender: Option<SendRequest<Full<Bytes>>> = None;
            let mut seq: u64 = 0;
            loop {
                let intended = match &jobs {
                    Some(rx) => match rx.lock().await.recv().await {
                        Some(t) => t,
                        None => break,
                    },
                    None => Instant::now(),
                };
                if jobs.is_some() && Instant::now() >= end + GRACE {
                    // Scheduled in the window, never sent: counted, not a missing sample.
                    if intended >= measure_from {
                        st.unsent += 1;
                    }
                    continue;
                }
                if jobs.is_none() && Instant::now() >= end {
                    break;
                }
                let n = seq * 1000 + k as u64;
                seq += 1;
                let result = async {
                    if sender.is_none() || shape == Shape::NewConnection {
                        sender = Some(connect(&target).await?);
                    }
                    match sender.as_mut() {
                        Some(s) => one(s, body(n), shape == Shape::NewConnection).await,
                        None => Err("no connection".to_owned()),
                    }
                }
                .await;
                let done = Instant::now();
                st.done_total += 1;
                let counted = if jobs.is_some() {
                    intended >= measure_from && intended < end
                } else {
                    intended >= measure_from && done <= end
                };
                match result {
                    Ok((status, answer)) if good_answer(status, &answer) => {
                        if counted {
                            st.ok += 1;
                            let us = done.duration_since(intended).as_micros();
                            st.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                        }
                    }
                    Ok((status, answer)) => {
                        if counted {
                            st.errors += 1;
                        }
                        st.first_error.get_or_insert_with(|| {
                            format!(
                                "HTTP {status}: {}",
                                String::from_utf8_lossy(&answer[..answer.len().min(300)])
                            )
                        });
                    }
                    Err(e) => {
                        sender = None;
                        if counted {
                            st.errors += 1;
                        }
                        st.first_error.get_or_insert(e);
                    }
                }
            }
            st
        }));
    }
    let mut total = Stats {
        window: load.duration,
        ..Stats::default()
    };
    for t in tasks {
        match t.await {
            Ok(st) => {
                total.ok += st.ok;
                total.errors += st.errors;
                total.unsent += st.unsent;
                total.latencies_us.extend(st.latencies_us);
                total.done_total += st.done_total;
                if total.first_error.is_none() {
                    total.first_error = st.first_error;
                }
            }
            Err(e) => {
                total.errors += 1;
                total
                    .first_error
                    .get_or_insert(format!("generator task: {e}"));
            }
        }
    }
    total.latencies_us.sort_unstable();
    total
}

/// Hand out send times `start + i/rate` until `end`. The tokio timer has millisecond
/// resolution, so the pacer sleeps only while the next time is more than 2 ms away and
/// yields (spins on the generator's own CPU) for the last stretch: send times stay within
/// microseconds of the schedule, and latency is counted from the schedule, not from when a
/// worker got round to it.
async fn pace(
    tx: tokio::sync::mpsc::UnboundedSender<Instant>,
    rate: f64,
    start: Instant,
    end: Instant,
) {
    let mut i: u64 = 0;
    loop {
        let t = start + Duration::from_secs_f64(i as f64 / rate);
        if t >= end {
            break;
        }
        let now = Instant::now();
        if t > now {
            if t - now > Duration::from_millis(2) {
                tokio::time::sleep_until(t - Duration::from_millis(1)).await;
            } else {
                tokio::task::yield_now().await;
            }
            continue;
        }
        if tx.send(t).is_err() {
            break;
        }
        i += 1;
    }
}

/// Open `n` TLS connections to `target`, send one request on each, and keep them open and
/// idle; returns them (dropping them closes them) and the number that failed.
pub async fn idle_connections(
    target: &Target,
    n: usize,
    body: BodyFn,
) -> (Vec<SendRequest<Full<Bytes>>>, usize) {
    let mut open = Vec::with_capacity(n);
    let mut failed = 0;
    // Fifty handshakes at a time: a burst, not a stampede.
    for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
        let mut set = tokio::task::JoinSet::new();
        for &i in chunk {
            let target = target.clone();
            let body = body.clone();
            set.spawn(async move {
                let mut s = connect(&target).await?;
                let (status, answer) = one(&mut s, body(i as u64), false).await?;
                if good_answer(status, &answer) {
                    Ok(s)
                } else {
                    Err(format!("HTTP {status}"))
                }
            });
        }
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(s)) => open.push(s),
                _ => failed += 1,
            }
        }
    }
    (open, failed)
}
