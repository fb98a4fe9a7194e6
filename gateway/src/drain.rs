//! The one shutdown handle: every listener, every spawned task and every background loop of
//! a gateway share it.
//!
//! A graceful stop has two phases. [`Drain::begin`] starts draining: new requests are refused
//! (HTTP 503, so senders fail over) and `/ready` answers 503, while answers to requests in
//! flight are still taken in; [`Drain::idle`] waits until the accepted work is done. Then
//! [`Drain::stop`] closes the listeners and ends the background loops.
//!
//! Accepted work is counted, not held by semaphore permits: work accepted while the drain
//! already waits (an answer still coming in, a delivery it spawns) must be waited for too, and
//! a semaphore with a waiter hands out no more permits.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

#[derive(Debug)]
struct Inner {
    draining: AtomicBool,
    work: AtomicUsize,
    idle: Notify,
    stop: watch::Sender<bool>,
}

/// A shared handle (cheap to clone).
#[derive(Debug, Clone)]
pub struct Drain(Arc<Inner>);

impl Default for Drain {
    fn default() -> Self {
        Drain::new()
    }
}

/// One piece of accepted work; the drain waits until every one is dropped.
#[derive(Debug)]
#[must_use = "the work is done when this is dropped"]
pub struct Work(Arc<Inner>);

impl Drop for Work {
    fn drop(&mut self) {
        if self.0.work.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Drain {
    /// Running, nothing in flight.
    pub fn new() -> Drain {
        Drain(Arc::new(Inner {
            draining: AtomicBool::new(false),
            work: AtomicUsize::new(0),
            idle: Notify::new(),
            stop: watch::Sender::new(false),
        }))
    }

    /// Count one piece of accepted work until the guard is dropped.
    pub fn track(&self) -> Work {
        self.0.work.fetch_add(1, Ordering::AcqRel);
        Work(self.0.clone())
    }

    /// Run `fut` on its own task, counted as accepted work until it ends.
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let work = self.track();
        tokio::spawn(async move {
            fut.await;
            drop(work);
        });
    }

    /// Whether new requests are refused.
    pub fn is_draining(&self) -> bool {
        self.0.draining.load(Ordering::Relaxed)
    }

    /// Phase one: refuse new requests from now on.
    pub fn begin(&self) {
        self.0.draining.store(true, Ordering::Relaxed);
    }

    /// Wait until all accepted work is done, at most `within`; false if the time ran out.
    pub async fn idle(&self, within: Duration) -> bool {
        let all_done = async {
            loop {
                // Registered before the check, so a finish in between is not missed.
                let idle = self.0.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if self.0.work.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(within, all_done).await.is_ok()
    }

    /// Phase two: listeners close and background loops end.
    pub fn stop(&self) {
        self.0.draining.store(true, Ordering::Relaxed);
        self.0.stop.send_replace(true);
    }

    /// Completes once [`Drain::stop`] has been called.
    pub async fn stopped(&self) {
        let mut rx = self.0.stop.subscribe();
        let _ = rx.wait_for(|stopped| *stopped).await;
    }

    /// Run `tick` now and then every `period` until the drain stops.
    pub fn every<F, Fut>(&self, period: Duration, mut tick: F) -> tokio::task::JoinHandle<()>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let d = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tick() => {}
                    _ = d.stopped() => return,
                }
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = d.stopped() => return,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Work accepted while the drain already waits (answers still coming in) is waited for.
    #[tokio::test]
    async fn idle_waits_for_work_accepted_during_the_drain() {
        let d = Drain::new();
        assert!(d.idle(Duration::ZERO).await, "nothing to wait for");
        let first = d.track();
        let d2 = d.clone();
        let drained = tokio::spawn(async move { d2.idle(Duration::from_secs(30)).await });
        tokio::task::yield_now().await;
        let second = d.track();
        drop(first);
        tokio::task::yield_now().await;
        assert!(!drained.is_finished(), "the second is still running");
        drop(second);
        assert!(drained.await.unwrap());
        let late = d.track();
        assert!(
            !d.idle(Duration::from_millis(20)).await,
            "a deadline ends the wait"
        );
        drop(late);
    }

    #[tokio::test]
    async fn stop_ends_loops_and_marks_draining() {
        let d = Drain::new();
        let ticks = Arc::new(AtomicUsize::new(0));
        let t = ticks.clone();
        let h = d.every(Duration::from_secs(3600), move || {
            let t = t.clone();
            async move {
                t.fetch_add(1, Ordering::Relaxed);
            }
        });
        // The first tick runs at once; then the loop sleeps until stopped.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while ticks.load(Ordering::Relaxed) == 0 && tokio::time::Instant::now() < deadline {
            tokio::task::yield_now().await;
        }
        assert!(!d.is_draining());
        d.stop();
        h.await.unwrap();
        assert!(d.is_draining());
        assert_eq!(ticks.load(Ordering::Relaxed), 1);
        d.stopped().await;
        // Stopped before anyone listened: still stopped for who asks later.
        let d = Drain::new();
        d.stop();
        tokio::time::timeout(Duration::from_secs(5), d.stopped())
            .await
            .expect("stopped at once");
    }
}
