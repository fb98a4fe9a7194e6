//! Logs that a flood cannot flood: events that anyone on the network can cause (a forged
//! answer, a failed handshake, an association step refused, a peer that is down) are logged
//! once per event kind and interval; the rest are counted and said in the next line that is
//! written (`suppressed = N`), and in `ssp_log_suppressed_total{event}`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::IntCounterVec;

/// How often one kind of event is written at most.
pub const EVERY: Duration = Duration::from_secs(10);

/// Event kinds (a closed set: they label a metric).
const EVENTS: &[&str] = &[
    "answer-forged",
    "association-refused",
    "association-undeliverable",
    "association-unmatched",
    "certificate-unknown",
    "delivery-failed",
    "answer-refused",
    "answer-undeliverable",
    "message-refused",
    "originator-refused",
    "originator-unplaced",
    "tls-refused",
    "connection-refused",
    "connection-closed",
    "late-answer",
];

/// The sampler of one gateway.
#[derive(Debug)]
pub struct Sampler {
    every: Duration,
    seen: Mutex<HashMap<&'static str, (Instant, u64)>>,
    suppressed: IntCounterVec,
}

impl Sampler {
    /// Write each event at most once per `every`; count the rest in `suppressed`.
    pub fn new(every: Duration, suppressed: IntCounterVec) -> Sampler {
        for e in EVENTS {
            suppressed.with_label_values(&[e]);
        }
        Sampler {
            every,
            seen: Mutex::new(HashMap::new()),
            suppressed,
        }
    }

    /// Whether to write `event` now: `Some(n)` with the number of its occurrences left
    /// unwritten since the last line, `None` to count this one and stay silent.
    pub fn admit(&self, event: &'static str) -> Option<u64> {
        self.admit_at(event, Instant::now())
    }

    fn admit_at(&self, event: &'static str, now: Instant) -> Option<u64> {
        let Ok(mut seen) = self.seen.lock() else {
            return Some(0);
        };
        let label = if EVENTS.contains(&event) {
            event
        } else {
            "other"
        };
        match seen.get_mut(label) {
            Some((last, n)) if now.duration_since(*last) < self.every => {
                *n += 1;
                self.suppressed.with_label_values(&[label]).inc();
                None
            }
            Some((last, n)) => {
                *last = now;
                Some(std::mem::take(n))
            }
            None => {
                seen.insert(label, (now, 0));
                Some(0)
            }
        }
    }
}

/// Write a `tracing` event through a [`Sampler`]: `sampled!(sampler, "event-kind",
/// tracing::warn!(...))`. The line carries `suppressed = N`, how many were left out since the
/// previous one.
#[macro_export]
macro_rules! sampled {
    ($sampler:expr, $event:literal, $level:ident!($($arg:tt)*)) => {
        if let Some(suppressed) = $sampler.admit($event) {
            ::tracing::$level!(suppressed, $($arg)*);
        }
    };
    ($sampler:expr, $event:literal, tracing::$level:ident!($($arg:tt)*)) => {
        if let Some(suppressed) = $sampler.admit($event) {
            ::tracing::$level!(suppressed, $($arg)*);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_a_count_of_the_rest() {
        let m = crate::ops::metrics::Metrics::new();
        let s = Sampler::new(Duration::from_secs(10), m.log_suppressed.clone());
        let t0 = Instant::now();
        assert_eq!(s.admit_at("answer-forged", t0), Some(0));
        for i in 0..1000 {
            let t = t0 + Duration::from_millis(i);
            assert_eq!(s.admit_at("answer-forged", t), None);
        }
        // Another kind is not held back by the first.
        assert_eq!(s.admit_at("tls-refused", t0), Some(0));
        let later = t0 + Duration::from_secs(10);
        assert_eq!(s.admit_at("answer-forged", later), Some(1000));
        assert_eq!(s.admit_at("answer-forged", later), None);
        assert_eq!(
            crate::ops::metrics::Metrics::counter_value(&m.log_suppressed, &["answer-forged"]),
            1001
        );
    }
}
