//! Failure budgets per source address: what a source may get wrong (failed TLS handshakes,
//! forged answers) before it is refused for a while.
//!
//! A token bucket per address: each failure takes a token, tokens come back at `rate` per
//! second up to `burst`, and a source without a token is refused until one has come back.
//! Unlike a rate limiter that is asked on every event, the budget is looked at without being
//! spent ([`Budget::allows`]), so a refused source costs a map lookup, not the work of
//! finding out that it failed again. The map is bounded: past [`MAX_SOURCES`] the sources
//! whose buckets are full again are forgotten first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Sources remembered at most.
pub const MAX_SOURCES: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The budgets of every source.
#[derive(Debug)]
pub struct Budget {
    rate: f64,
    burst: f64,
    sources: Mutex<HashMap<IpAddr, Bucket>>,
}

impl Budget {
    /// `rate` failures per second, `burst` at once.
    pub fn new(rate: u32, burst: u32) -> Budget {
        Budget {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            sources: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let dt = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + dt * self.rate).min(self.burst);
        b.at = now;
    }

    /// Whether `ip` may be served now (it has failures left).
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allows_at(ip, Instant::now())
    }

    fn allows_at(&self, ip: IpAddr, now: Instant) -> bool {
        let Ok(mut m) = self.sources.lock() else {
            return true;
        };
        match m.get_mut(&ip) {
            None => true,
            Some(b) => {
                self.refill(b, now);
                b.tokens >= 1.0
            }
        }
    }

    /// `ip` failed once; whether it still may be served.
    pub fn fail(&self, ip: IpAddr) -> bool {
        self.fail_at(ip, Instant::now())
    }

    fn fail_at(&self, ip: IpAddr, now: Instant) -> bool {
        let Ok(mut m) = self.sources.lock() else {
            return true;
        };
        if m.len() >= MAX_SOURCES && !m.contains_key(&ip) {
            let (rate, burst) = (self.rate, self.burst);
            m.retain(|_, b| {
                let tokens = b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate;
                tokens < burst
            });
        }
        let b = m.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        self.refill(b, now);
        b.tokens = (b.tokens - 1.0).max(0.0);
        b.tokens >= 1.0
    }
}

/// Give `sem`, sized `from` permits, `to` instead: more at once; fewer as holders give
/// theirs back (the surplus is waited for and forgotten, never taken from a holder).
pub(crate) fn resize(sem: &std::sync::Arc<tokio::sync::Semaphore>, from: usize, to: usize) {
    if to > from {
        sem.add_permits(to - from);
    } else if to < from {
        let fewer = u32::try_from(from - to).unwrap_or(u32::MAX);
        let sem = sem.clone();
        tokio::spawn(async move {
            if let Ok(p) = sem.acquire_many_owned(fewer).await {
                p.forget();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_source_that_fails_too_often_waits_for_its_budget() {
        let b = Budget::new(2, 3);
        let (x, y): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let t0 = Instant::now();
        assert!(b.allows_at(x, t0));
        assert!(b.fail_at(x, t0));
        assert!(b.fail_at(x, t0));
        assert!(!b.fail_at(x, t0), "third failure spends the burst");
        assert!(!b.allows_at(x, t0));
        assert!(b.allows_at(y, t0), "others are not held back");
        // Half a second gives one failure back at 2/s.
        assert!(b.allows_at(x, t0 + Duration::from_millis(500)));
        assert!(!b.fail_at(x, t0 + Duration::from_millis(500)));
    }
}
