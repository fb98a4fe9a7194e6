//! The listeners: an accept loop per listener (plain or TLS; HTTP/1.1, and HTTP/2 on TLS),
//! ended by the one [`Drain`], with every connection bounded in number and in time.
//!
//! In number: at most `max_connections` per listener, `per_source` from one address, and of
//! those that have not yet proven who they are (no request from an identified sender),
//! `unauthenticated` in all and `unauthenticated_per_source` from one address. A source
//! whose TLS handshakes keep failing is refused at accept until its failure budget refills.
//! Beyond a bound a new connection is closed at once, and counted.
//!
//! In time, phase by phase: the TLS handshake (`handshake`); the first complete request
//! head, protocol detection included (`header`, from the end of the handshake); each later
//! HTTP/1 request head once its first byte has arrived (`header`); a request body (its
//! deadline and minimum rate are the request path's, see `crate::web::read_body`); and the
//! time between requests (`idle`, for HTTP/1 and HTTP/2 alike: HTTP/2 pings do not count as
//! requests). hyper's own header timer is not used: it runs from the end of one request, so
//! it would also cut idle keep-alive connections short.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::budget::Budget;
use crate::drain::Drain;
use crate::web::{ConnInfo, HttpResponse, Stream};

/// The request handler of a listener.
pub type Handler = Arc<
    dyn Fn(Request<Incoming>, Arc<ConnInfo>) -> Pin<Box<dyn Future<Output = HttpResponse> + Send>>
        + Send
        + Sync,
>;

/// What happened to a connection, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A TLS handshake failed or timed out.
    TlsFailed,
    /// A new connection closed at once (`per-source`, `unauthenticated`, `failing-source`).
    Refused(&'static str),
    /// A connection closed by its phase deadline (`header`, `idle`).
    Closed(&'static str),
}

/// Bounds of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once (beyond: new ones wait in the accept queue).
    pub max_connections: usize,
    /// Connections open at once from one address.
    pub per_source: usize,
    /// Connections not yet authenticated, in all.
    pub unauthenticated: usize,
    /// The same, from one address.
    pub unauthenticated_per_source: usize,
    /// The first request head within this of the handshake; a later head within this of its
    /// first byte.
    pub header: Duration,
    /// At most this long with no request in flight.
    pub idle: Duration,
    /// After the drain stops: how long open connections get to finish.
    pub drain: Duration,
    /// Failed handshakes per second and burst per address before it is refused for a while.
    pub failures: (u32, u32),
}

impl Limits {
    /// Generous bounds of `max_connections` connections (test servers, the load ladder).
    pub fn lenient(max_connections: usize) -> Limits {
        Limits {
            max_connections,
            per_source: max_connections,
            unauthenticated: max_connections,
            unauthenticated_per_source: max_connections,
            header: Duration::from_secs(30),
            idle: Duration::from_secs(90),
            drain: Duration::from_secs(1),
            failures: (1000, 10_000),
        }
    }
}

/// After a graceful close is asked for, how long a connection still gets.
const GRACE: Duration = Duration::from_secs(1);

/// Open connections of one source.
#[derive(Debug, Default)]
struct Source {
    open: usize,
    unauthenticated: usize,
}

/// Connection counts per source address and the unauthenticated total.
#[derive(Debug, Default)]
struct Sources {
    map: Mutex<HashMap<IpAddr, Source>>,
    unauthenticated: AtomicUsize,
}

/// A connection's place in [`Sources`], given back when it closes.
struct Place {
    sources: Arc<Sources>,
    ip: IpAddr,
    authenticated: AtomicBool,
}

impl Sources {
    /// A place for a new connection from `ip`, or the bound it would break.
    fn admit(self: &Arc<Self>, ip: IpAddr, limits: &Limits) -> Result<Arc<Place>, &'static str> {
        let mut m = self.map.lock().map_err(|_| "internal")?;
        let s = m.entry(ip).or_default();
        if s.open >= limits.per_source {
            return Err("per-source");
        }
        if s.unauthenticated >= limits.unauthenticated_per_source
            || self.unauthenticated.load(Ordering::Relaxed) >= limits.unauthenticated
        {
            return Err("unauthenticated");
        }
        s.open += 1;
        s.unauthenticated += 1;
        self.unauthenticated.fetch_add(1, Ordering::Relaxed);
        Ok(Arc::new(Place {
            sources: self.clone(),
            ip,
            authenticated: AtomicBool::new(false),
        }))
    }
}

impl Place {
    /// The connection's sender is identified: it no longer counts as unauthenticated.
    fn authenticate(&self) {
        if self.authenticated.swap(true, Ordering::AcqRel) {
            return;
        }
        self.sources.unauthenticated.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut m) = self.sources.map.lock()
            && let Some(s) = m.get_mut(&self.ip)
        {
            s.unauthenticated = s.unauthenticated.saturating_sub(1);
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let was_authenticated = self.authenticated.load(Ordering::Acquire);
        if !was_authenticated {
            self.sources.unauthenticated.fetch_sub(1, Ordering::Relaxed);
        }
        if let Ok(mut m) = self.sources.map.lock()
            && let Some(s) = m.get_mut(&self.ip)
        {
            s.open = s.open.saturating_sub(1);
            if !was_authenticated {
                s.unauthenticated = s.unauthenticated.saturating_sub(1);
            }
            if s.open == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// What one connection is doing, shared by its stream, its service and its watchdog. Times
/// are milliseconds since the connection began.
#[derive(Debug)]
struct Phase {
    born: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    h2: AtomicBool,
    /// When the last request in flight ended (the connection became idle).
    idle_since: AtomicU64,
    /// One more than when the first byte of a request head arrived while idle (0: none).
    head_since: AtomicU64,
    /// Wakes the watchdog when a request begins or ends or a head starts: its next deadline
    /// is another one.
    changed: tokio::sync::Notify,
}

/// What the watchdog does.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Nothing yet; look again at this time.
    Wait(Instant),
    /// Ask for a graceful close (idle): in-flight work, if any, finishes.
    Close(&'static str),
    /// Drop the connection now (a request head too slow).
    Abort(&'static str),
}

impl Phase {
    fn new() -> Phase {
        Phase {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.born).as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.born + Duration::from_millis(ms)
    }

    /// Bytes arrived: on an idle HTTP/1 connection, that is the head of a next request.
    fn on_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && !self.h2.load(Ordering::Relaxed)
            && self.head_since.load(Ordering::Relaxed) == 0
        {
            let now = self.ms(Instant::now());
            if self
                .head_since
                .compare_exchange(0, now + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.changed.notify_one();
            }
        }
    }

    /// A request (its head complete) is being served until the guard is dropped.
    fn begin(self: &Arc<Self>, version: Version) -> Active {
        if version == Version::HTTP_2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(0, Ordering::Release);
        self.changed.notify_one();
        Active(self.clone())
    }

    fn verdict(&self, now: Instant, limits: &Limits) -> Verdict {
        let t = self.ms(now);
        let header = u64::try_from(limits.header.as_millis()).unwrap_or(u64::MAX);
        let idle = u64::try_from(limits.idle.as_millis()).unwrap_or(u64::MAX);
        if self.requests.load(Ordering::Acquire) == 0 {
            // Protocol detection, preface and the first head: one budget.
            return if t >= header {
                Verdict::Abort("header")
            } else {
                Verdict::Wait(self.at(header))
            };
        }
        if self.in_flight.load(Ordering::Acquire) > 0 {
            // The request has deadlines of its own; look again when it could have ended.
            return Verdict::Wait(now + limits.header.min(limits.idle));
        }
        let head = self.head_since.load(Ordering::Acquire);
        if head > 0 && !self.h2.load(Ordering::Relaxed) {
            let started = head - 1;
            if t >= started.saturating_add(header) {
                return Verdict::Abort("header");
            }
            return Verdict::Wait(self.at(started.saturating_add(header)));
        }
        let since = self.idle_since.load(Ordering::Acquire);
        if t >= since.saturating_add(idle) {
            return Verdict::Close("idle");
        }
        Verdict::Wait(self.at(since.saturating_add(idle)))
    }
}

/// A request in flight on a connection.
struct Active(Arc<Phase>);

impl Drop for Active {
    fn drop(&mut self) {
        let p = &self.0;
        if p.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            p.idle_since.store(p.ms(Instant::now()), Ordering::Release);
            p.changed.notify_one();
        }
    }
}

/// The connection's stream, telling its [`Phase`] when bytes arrive.
struct Watched {
    inner: Stream,
    phase: Arc<Phase>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.phase.on_read();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// What a reload may change of a listener: its TLS (our certificate checks, the trust
/// anchors of client certificates) and its bounds. Read for every new connection; a
/// connection keeps what it was accepted with.
#[derive(Clone)]
pub struct Settings {
    /// TLS: the acceptor and the handshake deadline (none: plain, HTTP/1.1 only).
    pub tls: Option<(TlsAcceptor, Duration)>,
    /// Bounds.
    pub limits: Limits,
}

/// The settings of a listener, swapped by a reload, which wakes the accept loop (a listener
/// full at its old bound takes up a higher one at once).
pub struct SettingsSlot {
    current: arc_swap::ArcSwap<Settings>,
    changed: tokio::sync::Notify,
}

impl SettingsSlot {
    /// A slot holding `s`.
    pub fn new(s: Settings) -> SettingsSlot {
        SettingsSlot {
            current: arc_swap::ArcSwap::from_pointee(s),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Put `s` in use for the next connections.
    pub fn put(&self, s: Settings) {
        self.current.store(Arc::new(s));
        self.changed.notify_one();
    }

    fn load(&self) -> Arc<Settings> {
        self.current.load_full()
    }
}

/// A listener's settings slot.
pub type LiveSettings = Arc<SettingsSlot>;

/// Serve a listener with fixed settings (see [`serve_live`]).
pub async fn serve(
    listener: TcpListener,
    tls: Option<(TlsAcceptor, Duration)>,
    handler: Handler,
    drain: Drain,
    limits: Limits,
    on_event: Arc<dyn Fn(Event) + Send + Sync>,
) {
    let settings = Arc::new(SettingsSlot::new(Settings { tls, limits }));
    serve_live(listener, settings, handler, drain, on_event).await;
}

/// Serve a listener until the drain stops, then give open connections up to `limits.drain`.
/// Whether it speaks TLS is fixed by its first settings; the rest is read again for every
/// connection.
pub async fn serve_live(
    listener: TcpListener,
    settings: LiveSettings,
    handler: Handler,
    drain: Drain,
    on_event: Arc<dyn Fn(Event) + Send + Sync>,
) {
    let first = settings.load();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        // The phases are timed by the watchdog (see the module header).
        .header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(128);
    // Plain listeners (the core side) speak HTTP/1.1 only: no h2 preface sniffing.
    let plain = first.tls.is_none();
    if plain {
        builder = builder.http1_only();
    }
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(first.limits.max_connections));
    let mut sized = first.limits.max_connections;
    let sources = Arc::new(Sources::default());
    let mut failures = first.limits.failures;
    let mut failing = Arc::new(Budget::new(failures.0, failures.1));
    drop(first);
    // Every connection task, for the wait at the end.
    let conns = Drain::new();
    // Bounds a reload changed, applied before the next connection is waited for.
    let apply =
        |s: &Settings, sized: &mut usize, failures: &mut (u32, u32), failing: &mut Arc<Budget>| {
            let limits = s.limits;
            if limits.max_connections != *sized {
                crate::budget::resize(&slots, *sized, limits.max_connections);
                *sized = limits.max_connections;
            }
            if limits.failures != *failures {
                *failures = limits.failures;
                *failing = Arc::new(Budget::new(failures.0, failures.1));
            }
        };
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = settings.changed.notified() => {
                apply(&settings.load(), &mut sized, &mut failures, &mut failing);
                continue;
            }
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
        let s = settings.load();
        apply(&s, &mut sized, &mut failures, &mut failing);
        let limits = s.limits;
        let ip = remote.ip().to_canonical();
        if !failing.allows(ip) {
            on_event(Event::Refused("failing-source"));
            continue;
        }
        let place = match sources.admit(ip, &limits) {
            Ok(p) => p,
            Err(why) => {
                on_event(Event::Refused(why));
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let conn = Conn {
            handler: handler.clone(),
            builder: builder.clone(),
            // A listener that started plain stays plain (its HTTP/1-only builder).
            tls: if plain { None } else { s.tls.clone() },
            on_event: on_event.clone(),
            failing: failing.clone(),
            drain: drain.clone(),
            limits,
            remote,
            place,
        };
        conns.spawn(async move {
            let _permit = permit;
            conn.run(tcp).await;
        });
    }
    drop(listener);
    if !conns.idle(settings.load().limits.drain).await {
        tracing::warn!("drain deadline passed with connections still open");
    }
}

/// One accepted connection and what it needs.
struct Conn {
    handler: Handler,
    builder: Arc<hyper_util::server::conn::auto::Builder<TokioExecutor>>,
    tls: Option<(TlsAcceptor, Duration)>,
    on_event: Arc<dyn Fn(Event) + Send + Sync>,
    failing: Arc<Budget>,
    drain: Drain,
    limits: Limits,
    remote: SocketAddr,
    place: Arc<Place>,
}

impl Conn {
    async fn run(self, tcp: tokio::net::TcpStream) {
        let remote = self.remote;
        let (io, certs) = match &self.tls {
            Some((acceptor, handshake)) => {
                match tokio::time::timeout(*handshake, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => {
                        let certs = s
                            .get_ref()
                            .1
                            .peer_certificates()
                            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect());
                        (Stream::ServerTls(Box::new(s)), certs)
                    }
                    Ok(Err(e)) => {
                        self.failing.fail(remote.ip().to_canonical());
                        tracing::debug!(%remote, error = %e, "TLS handshake refused");
                        (self.on_event)(Event::TlsFailed);
                        return;
                    }
                    Err(_) => {
                        self.failing.fail(remote.ip().to_canonical());
                        (self.on_event)(Event::TlsFailed);
                        return;
                    }
                }
            }
            None => (Stream::Plain(tcp), None),
        };
        let phase = Arc::new(Phase::new());
        let io = Watched {
            inner: io,
            phase: phase.clone(),
        };
        let mut info = ConnInfo::new(remote, certs);
        let place = self.place.clone();
        info.on_authenticated = Some(Box::new(move || place.authenticate()));
        let info = Arc::new(info);
        let handler = self.handler.clone();
        let p = phase.clone();
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let active = p.begin(req.version());
            let fut = handler(req, info.clone());
            async move {
                let r = fut.await;
                drop(active);
                Ok::<_, Infallible>(r)
            }
        });
        let conn = self
            .builder
            .serve_connection(TokioIo::new(io), svc)
            .into_owned();
        tokio::pin!(conn);
        // The drain's stop and the watchdog's timer are made once per connection, not per
        // turn of the loop: every wake of this task (each read, each answer) polls every
        // branch, and a phase change turns the loop up to three times per request. The
        // timer is moved only when the watchdog must look earlier than it would (or it
        // has fired, or a close is under way): looking early is harmless (the verdict is
        // taken again), so on a busy connection it is moved about once per deadline, not
        // per request.
        let stopped = self.drain.stopped();
        tokio::pin!(stopped);
        let timer = tokio::time::sleep_until(Instant::now() + self.limits.header);
        tokio::pin!(timer);
        // Once a close is asked for: the time by which the connection is dropped anyway.
        let mut closing: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let wake = match closing {
                Some(t) => t,
                None => match phase.verdict(now, &self.limits) {
                    Verdict::Wait(t) => t,
                    Verdict::Close(why) => {
                        (self.on_event)(Event::Closed(why));
                        conn.as_mut().graceful_shutdown();
                        let t = now + GRACE;
                        closing = Some(t);
                        t
                    }
                    Verdict::Abort(why) => {
                        (self.on_event)(Event::Closed(why));
                        return;
                    }
                },
            };
            let due = timer.deadline();
            // Closing, the timer's firing ends the connection: then it must be exact.
            if wake < due || due <= now || (closing.is_some() && wake != due) {
                timer.as_mut().reset(wake);
            }
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%remote, error = ?e, "connection ended with an error");
                    }
                    return;
                }
                () = timer.as_mut() => {
                    if closing.is_some() {
                        return;
                    }
                }
                () = phase.changed.notified(), if closing.is_none() => {}
                () = stopped.as_mut(), if closing.is_none() => {
                    conn.as_mut().graceful_shutdown();
                    closing = Some(Instant::now() + self.limits.drain);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header: Duration::from_secs(10),
            idle: Duration::from_secs(90),
            ..Limits::lenient(100)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_phase_has_its_deadline() {
        let l = limits();
        let p = Arc::new(Phase::new());
        let t0 = p.born;
        // Nothing asked within the header deadline: dropped.
        assert_eq!(p.verdict(t0, &l), Verdict::Wait(t0 + l.header));
        assert_eq!(p.verdict(t0 + l.header, &l), Verdict::Abort("header"));
        // A request served: idle from its end.
        let active = p.begin(Version::HTTP_11);
        assert!(matches!(
            p.verdict(t0 + Duration::from_secs(500), &l),
            Verdict::Wait(_)
        ));
        tokio::time::advance(Duration::from_secs(2)).await;
        drop(active);
        let ended = t0 + Duration::from_secs(2);
        assert_eq!(p.verdict(ended, &l), Verdict::Wait(ended + l.idle));
        assert_eq!(p.verdict(ended + l.idle, &l), Verdict::Close("idle"));
        // A next head that starts and does not finish: dropped after the header deadline,
        // however long idle would have been.
        tokio::time::advance(Duration::from_secs(1)).await;
        p.on_read();
        let head = t0 + Duration::from_secs(3);
        assert_eq!(p.verdict(head, &l), Verdict::Wait(head + l.header));
        assert_eq!(p.verdict(head + l.header, &l), Verdict::Abort("header"));
    }

    #[tokio::test(start_paused = true)]
    async fn http2_pings_do_not_keep_a_connection() {
        let l = limits();
        let p = Arc::new(Phase::new());
        drop(p.begin(Version::HTTP_2));
        let t0 = p.born;
        // Bytes (pings) on an idle HTTP/2 connection are no request head.
        p.on_read();
        assert_eq!(p.verdict(t0, &l), Verdict::Wait(t0 + l.idle));
        assert_eq!(p.verdict(t0 + l.idle, &l), Verdict::Close("idle"));
    }

    #[test]
    fn sources_are_bounded_and_unauthenticated_ones_more_so() {
        let s = Arc::new(Sources::default());
        let l = Limits {
            per_source: 3,
            unauthenticated_per_source: 2,
            unauthenticated: 3,
            ..Limits::lenient(100)
        };
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let a1 = s.admit(a, &l).unwrap();
        let a2 = s.admit(a, &l).unwrap();
        assert_eq!(s.admit(a, &l).err(), Some("unauthenticated"));
        a1.authenticate();
        let a3 = s.admit(a, &l).unwrap();
        assert_eq!(s.admit(a, &l).err(), Some("per-source"));
        let _b1 = s.admit(b, &l).unwrap();
        assert_eq!(s.admit(b, &l).err(), Some("unauthenticated"), "3 in all");
        drop((a2, a3));
        let _b2 = s.admit(b, &l).unwrap();
        drop(a1);
        assert!(
            s.map.lock().unwrap().get(&a).is_none(),
            "forgotten when closed"
        );
    }
}
