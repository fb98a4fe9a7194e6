//! Prometheus metrics of the gateway, in one explicit registry (no process globals, so tests
//! can run several gateways in one process and read each one's numbers).

use std::sync::Arc;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// All metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// The process's CPU, memory and descriptors (read at each scrape).
    process: Option<std::sync::Arc<super::process::Process>>,
    /// Where those are registered (without the `ssp_` prefix).
    unprefixed: Registry,
    /// SSP requests accepted, by direction (`inbound` from peers, `outbound` from the core),
    /// the protocol they came in (`ssp`, or `sip` through the translator) and primitive.
    pub requests: IntCounterVec,
    /// SSP answers produced, by direction, protocol and status code.
    pub answers: IntCounterVec,
    /// Time from accepting a request to having its answer, by direction and protocol.
    pub latency: HistogramVec,
    /// Parts of requests handed to a destination, by the protocol they went out in (`ssp`
    /// to a peer or the core, `sip` through the translator) and result (`ok`, `failed`).
    pub deliveries: IntCounterVec,
    /// Requests relayed on the fast path (decided without a typed tree and sent to their one
    /// SSP destination; written by splicing unless a core name in free text needed the typed
    /// scrub), and far sides' answers written back to their sender by splicing, by
    /// primitive. The rest of `requests` took the typed path.
    pub fast_path: IntCounterVec,
    /// Bodies the fast path read (requests and the far sides' answers), by how: `shape`, by
    /// the shape of a body read before on the same thread, or `scan`, by the XML scan. A
    /// sender that repeats its messages' shapes is read mostly by `shape`.
    pub fast_reads: IntCounterVec,
    /// Requests being relayed now, by direction.
    pub in_flight: IntGaugeVec,
    /// Failed deliveries to a peer or the core, by destination and reason.
    pub delivery_failures: IntCounterVec,
    /// Requests refused by policy, by reason (`rate`, `spoof`, `relay`, `auth`).
    pub refused: IntCounterVec,
    /// Bodies refused before relaying, by reason (`parse`, `size`, `media`).
    pub bad_messages: IntCounterVec,
    /// TLS handshakes refused on the peer listener.
    pub tls_failures: IntCounterVec,
    /// Established SSP associations.
    pub associations: IntGauge,
    /// Answers that matched no pending request or carried a forged ID, by reason.
    pub orphan_answers: IntCounterVec,
    /// Directory entries loaded.
    pub directory_entries: IntGauge,
    /// DNS lookups, by record type and result.
    pub dns_lookups: IntCounterVec,
    /// Route cache lookups, by result (`hit`, `miss`, `stale`, `negative`).
    pub route_cache: IntCounterVec,
    /// Answers handed between cluster replicas, by result (`taken`, `not-theirs`,
    /// `unreachable` when sending; `received`, `not-ours` when receiving).
    pub handoffs: IntCounterVec,
    /// Cluster misconfigurations found by the last check of the siblings (duplicate replica
    /// index, a sibling that is another index than its place in the list, another HMAC key).
    pub cluster_conflicts: IntGauge,
    /// Connections closed at once, by listener and reason (`per-source`,
    /// `unauthenticated`, `failing-source`).
    pub connections_refused: IntCounterVec,
    /// Connections closed by the gateway, by listener and phase (`header`, `idle`, `body`).
    pub connections_closed: IntCounterVec,
    /// Log lines left out by the sampler, by event kind.
    pub log_suppressed: IntCounterVec,
    /// Kept work not yet done (requests accepted and not yet answered and delivered,
    /// messages waiting for their destination).
    pub queue_depth: IntGauge,
    /// Age of the oldest kept work, in seconds.
    pub queue_oldest: IntGauge,
    /// What became of kept work, by event: `kept` (accepted durably), `resent` (a sender's
    /// copy of work already kept), `resumed` (taken over after a restart or from a dead
    /// replica), `retried` (another delivery attempt scheduled), `accepted` (the sender told
    /// "accepted for delivery"), `expired` (its validity ended undelivered), `done`.
    pub work: IntCounterVec,
    /// State store operations that failed, by operation.
    pub store_errors: IntCounterVec,
    /// SIP requests of the translator, by direction (`out`: sent, `in`: received), method
    /// and result (`request` when one came in, then the answer class `2xx`…`6xx`, or
    /// `error` when none came).
    pub sip: IntCounterVec,
    /// Presence subscriptions the SIP translator keeps for our users (SUBSCRIBE dialogs).
    pub sip_subscriptions: IntGauge,
    /// SIP users' presence subscriptions to our users (the gateway as notifier).
    pub sip_watches: IntGauge,
    /// Stanzas of the XMPP translator, by direction (`out`, `in`), stanza (`message`,
    /// `presence`, `receipt`, `iq`) and result (`sent`, `taken`, `refused`, `error`).
    pub xmpp: IntCounterVec,
    /// Server-to-server streams open, by direction (`in`, `out`).
    pub xmpp_streams: IntGaugeVec,
    /// Server-to-server streams proved, by direction and how (`sasl-external`,
    /// `dialback`), or not (`failed`).
    pub xmpp_proofs: IntCounterVec,
    /// XMPP presence subscriptions: ours to XMPP users (`out`) and theirs to ours (`in`).
    pub xmpp_subscriptions: IntGaugeVec,
    /// When each configured certificate (ours, the trust anchors) stops being valid, Unix
    /// seconds, by file and position in it.
    pub certificates: IntGaugeVec,
    /// Reloads (SIGHUP, `POST /reload`), by result (`ok`, `failed`: refused whole).
    pub reloads: IntCounterVec,
    /// The series of the above that every relayed request touches, looked up once.
    hot: Option<Arc<Hot>>,
}

/// The series every relayed SSP request touches, looked up once when the metrics are made.
/// A labelled lookup hashes its label values, takes the vector's lock and clones the series
/// (tens of nanoseconds, seven or eight times per request); these are read by index. Other
/// label values go through the vectors, which hand out the same series for the same labels,
/// so both ways count into one.
struct Hot {
    /// `requests{protocol="ssp"}`, by direction and the fast path's request primitives.
    requests: [[IntCounter; 3]; 2],
    /// `answers{protocol="ssp",code="200"}`, by direction.
    answers_ok: [IntCounter; 2],
    /// `request_duration_seconds{protocol="ssp"}`, by direction.
    latency: [Histogram; 2],
    /// `in_flight`, by direction.
    in_flight: [IntGauge; 2],
    /// `deliveries{protocol="ssp"}`: ok, failed.
    deliveries: [IntCounter; 2],
    /// `fast_path`, by [`FAST_PRIMITIVES`].
    fast_path: [IntCounter; 5],
    /// `fast_reads`, by [`FAST_READS`].
    fast_reads: [IntCounter; 2],
    /// `route_cache`, by [`ROUTE_CACHE`].
    route_cache: [IntCounter; 4],
}

const DIRECTIONS: [&str; 2] = ["inbound", "outbound"];
const FAST_REQUESTS: [&str; 3] = [
    "SendMessageRequest",
    "PresenceNotification",
    "DeliveryStatusReport",
];
const FAST_PRIMITIVES: [&str; 5] = [
    "SendMessageRequest",
    "PresenceNotification",
    "DeliveryStatusReport",
    "SendMessageResponse",
    "Status",
];
const FAST_READS: [&str; 2] = ["shape", "scan"];
const ROUTE_CACHE: [&str; 4] = ["hit", "miss", "stale", "negative"];

/// Where `label` is in `set`.
fn index(set: &[&str], label: &str) -> Option<usize> {
    set.iter().position(|l| *l == label)
}

impl Hot {
    fn new(m: &Metrics) -> Hot {
        Hot {
            requests: DIRECTIONS
                .map(|d| FAST_REQUESTS.map(|p| m.requests.with_label_values(&[d, "ssp", p]))),
            answers_ok: DIRECTIONS.map(|d| m.answers.with_label_values(&[d, "ssp", "200"])),
            latency: DIRECTIONS.map(|d| m.latency.with_label_values(&[d, "ssp"])),
            in_flight: DIRECTIONS.map(|d| m.in_flight.with_label_values(&[d])),
            deliveries: ["ok", "failed"].map(|r| m.deliveries.with_label_values(&["ssp", r])),
            fast_path: FAST_PRIMITIVES.map(|p| m.fast_path.with_label_values(&[p])),
            fast_reads: FAST_READS.map(|r| m.fast_reads.with_label_values(&[r])),
            route_cache: ROUTE_CACHE.map(|r| m.route_cache.with_label_values(&[r])),
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable_metric(name, e));
    let _ = r.register(Box::new(c.clone()));
    c
}

#[cold]
fn unreachable_metric(name: &str, e: prometheus::Error) -> ! {
    // Metric definitions are compile-time constants; an invalid one is a programming error.
    panic!("invalid metric definition {name}: {e}")
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Metrics {
        let r = Registry::new_custom(Some("ssp".into()), None).unwrap_or_default();
        // The process metrics keep their usual names, outside the `ssp_` prefix.
        let unprefixed = Registry::new();
        let process = super::process::Process::register(&unprefixed).map(std::sync::Arc::new);
        let latency = HistogramVec::new(
            HistogramOpts::new("request_duration_seconds", "Time to answer an SSP request")
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0,
                ]),
            &["direction", "protocol"],
        )
        .unwrap_or_else(|e| unreachable_metric("request_duration_seconds", e));
        let _ = r.register(Box::new(latency.clone()));
        let in_flight = IntGaugeVec::new(
            Opts::new("in_flight", "Requests being relayed"),
            &["direction"],
        )
        .unwrap_or_else(|e| unreachable_metric("in_flight", e));
        let _ = r.register(Box::new(in_flight.clone()));
        let associations = IntGauge::new("associations", "Established SSP associations")
            .unwrap_or_else(|e| unreachable_metric("associations", e));
        let _ = r.register(Box::new(associations.clone()));
        let directory_entries =
            IntGauge::new("directory_entries", "Explicit subscriber directory entries")
                .unwrap_or_else(|e| unreachable_metric("directory_entries", e));
        let _ = r.register(Box::new(directory_entries.clone()));
        let cluster_conflicts = IntGauge::new(
            "cluster_conflicts",
            "Cluster misconfigurations found by the last sibling check",
        )
        .unwrap_or_else(|e| unreachable_metric("cluster_conflicts", e));
        let _ = r.register(Box::new(cluster_conflicts.clone()));
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).unwrap_or_else(|e| unreachable_metric(name, e));
            let _ = r.register(Box::new(g.clone()));
            g
        };
        // Which build answers the scrape (constant 1, the version as a label).
        if let Ok(info) = IntGaugeVec::new(
            Opts::new("build_info", "The gateway's build, as labels"),
            &["version"],
        ) {
            info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
            let _ = r.register(Box::new(info));
        }
        let queue_depth = gauge("queue_depth", "Kept work not yet done");
        let queue_oldest = gauge(
            "queue_oldest_seconds",
            "Age of the oldest kept work not yet done",
        );
        let sip_subscriptions = gauge(
            "sip_subscriptions",
            "Presence subscriptions kept by the SIP translator",
        );
        let sip_watches = gauge(
            "sip_watches",
            "SIP users' presence subscriptions to our users",
        );
        let gauges = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|e| unreachable_metric(name, e));
            let _ = r.register(Box::new(g.clone()));
            for l in ["in", "out"] {
                g.with_label_values(&[l]).set(0);
            }
            g
        };
        let xmpp_streams = gauges(
            "xmpp_streams",
            "XMPP server-to-server streams open",
            &["direction"],
        );
        let xmpp_subscriptions = gauges(
            "xmpp_subscriptions",
            "XMPP presence subscriptions (out: ours to XMPP users, in: theirs to ours)",
            &["direction"],
        );
        let certificates = IntGaugeVec::new(
            Opts::new(
                "certificate_expiry_seconds",
                "When a configured certificate stops being valid (Unix seconds)",
            ),
            &["file", "cert"],
        )
        .unwrap_or_else(|e| unreachable_metric("certificate_expiry_seconds", e));
        let _ = r.register(Box::new(certificates.clone()));
        Metrics {
            certificates,
            queue_depth,
            queue_oldest,
            sip_subscriptions,
            sip_watches,
            xmpp_streams,
            xmpp_subscriptions,
            xmpp_proofs: counter(
                &r,
                "xmpp_stream_proofs_total",
                "XMPP server-to-server streams proved, by direction and how",
                &["direction", "proof"],
            ),
            xmpp: counter(
                &r,
                "xmpp_stanzas_total",
                "Stanzas of the XMPP translator",
                &["direction", "stanza", "result"],
            ),
            work: counter(&r, "work_total", "Kept work, by event", &["event"]),
            reloads: counter(&r, "reloads_total", "Reloads, by result", &["result"]),
            sip: counter(
                &r,
                "sip_requests_total",
                "SIP requests of the SIP/SIMPLE translator",
                &["direction", "method", "result"],
            ),
            store_errors: counter(
                &r,
                "store_errors_total",
                "State store operations that failed",
                &["op"],
            ),
            requests: counter(
                &r,
                "requests_total",
                "SSP requests accepted",
                &["direction", "protocol", "primitive"],
            ),
            answers: counter(
                &r,
                "answers_total",
                "SSP answers produced",
                &["direction", "protocol", "code"],
            ),
            deliveries: counter(
                &r,
                "deliveries_total",
                "Request parts handed to a destination",
                &["protocol", "result"],
            ),
            fast_path: counter(
                &r,
                "fast_path_total",
                "Requests relayed, and their answers written back, on the fast path, by primitive",
                &["primitive"],
            ),
            fast_reads: counter(
                &r,
                "fast_path_reads_total",
                "Bodies the fast path read, by the shape of an earlier one or by the XML scan",
                &["read"],
            ),
            latency,
            in_flight,
            delivery_failures: counter(
                &r,
                "delivery_failures_total",
                "Failed deliveries",
                &["destination", "reason"],
            ),
            refused: counter(
                &r,
                "refused_total",
                "Requests refused by policy",
                &["reason"],
            ),
            bad_messages: counter(
                &r,
                "bad_messages_total",
                "Bodies refused before relaying",
                &["reason"],
            ),
            tls_failures: counter(
                &r,
                "tls_failures_total",
                "TLS handshakes refused",
                &["listener"],
            ),
            associations,
            orphan_answers: counter(
                &r,
                "orphan_answers_total",
                "Answers matching no request",
                &["reason"],
            ),
            directory_entries,
            dns_lookups: counter(&r, "dns_lookups_total", "DNS lookups", &["type", "result"]),
            route_cache: counter(&r, "route_cache_total", "Route cache lookups", &["result"]),
            handoffs: counter(
                &r,
                "cluster_handoffs_total",
                "Answers handed between replicas",
                &["result"],
            ),
            cluster_conflicts,
            connections_refused: counter(
                &r,
                "connections_refused_total",
                "Connections closed at once",
                &["listener", "reason"],
            ),
            connections_closed: counter(
                &r,
                "connections_closed_total",
                "Connections closed by the gateway for a phase deadline",
                &["listener", "phase"],
            ),
            log_suppressed: counter(
                &r,
                "log_suppressed_total",
                "Log lines left out by the sampler",
                &["event"],
            ),
            registry: r,
            process,
            unprefixed,
            hot: None,
        }
        .zero()
    }

    /// Create the series that alerts and the dashboard divide by or compare against, at
    /// zero, so they have data before the first event (an error ratio with no error series
    /// yet is "no data", not 0). The hot series ([`Hot`]) are created here too, so the
    /// fast path's request primitives have their `requests` series from the start.
    fn zero(self) -> Metrics {
        for d in ["inbound", "outbound"] {
            self.in_flight.with_label_values(&[d]);
            for p in ["ssp", "sip"] {
                self.latency.with_label_values(&[d, p]);
                for code in ["200", "503", "504", "531", "901"] {
                    self.answers.with_label_values(&[d, p, code]);
                }
            }
            self.requests
                .with_label_values(&[d, "ssp", "SendMessageRequest"]);
        }
        for p in [
            "SendMessageRequest",
            "PresenceNotification",
            "DeliveryStatusReport",
            "SendMessageResponse",
            "Status",
        ] {
            self.fast_path.with_label_values(&[p]);
        }
        for r in FAST_READS {
            self.fast_reads.with_label_values(&[r]);
        }
        for p in ["ssp", "sip"] {
            for r in ["ok", "failed"] {
                self.deliveries.with_label_values(&[p, r]);
            }
        }
        for r in ["connect", "no-response", "timeout", "http-5xx", "no-answer"] {
            self.delivery_failures.with_label_values(&["core", r]);
        }
        for r in ["rate", "spoof", "relay", "auth"] {
            self.refused.with_label_values(&[r]);
        }
        for r in ["parse", "size", "media"] {
            self.bad_messages.with_label_values(&[r]);
        }
        for l in ["peer", "core"] {
            self.tls_failures.with_label_values(&[l]);
        }
        for t in ["naptr", "srv", "a"] {
            for r in ["ok", "error"] {
                self.dns_lookups.with_label_values(&[t, r]);
            }
        }
        for r in ["hit", "miss", "stale", "negative"] {
            self.route_cache.with_label_values(&[r]);
        }
        for r in ["unknown", "wrong-leg", "undeliverable"] {
            self.orphan_answers.with_label_values(&[r]);
        }
        for r in ["taken", "not-theirs", "unreachable", "received", "not-ours"] {
            self.handoffs.with_label_values(&[r]);
        }
        for e in [
            "kept",
            "resent",
            "reopened",
            "resumed",
            "retried",
            "accepted",
            "expired",
            "undeliverable",
            "done",
        ] {
            self.work.with_label_values(&[e]);
        }
        self.store_errors.with_label_values(&["put"]);
        for r in ["ok", "failed"] {
            self.reloads.with_label_values(&[r]);
        }
        let hot = Some(Arc::new(Hot::new(&self)));
        Metrics { hot, ..self }
    }

    /// The hot series, and the index of `direction` among them.
    fn hot(&self, direction: &str, protocol: &str) -> Option<(&Hot, usize)> {
        if protocol != "ssp" {
            return None;
        }
        Some((self.hot.as_deref()?, index(&DIRECTIONS, direction)?))
    }

    /// Count a request taken in (`requests`).
    pub fn count_request(&self, direction: &str, protocol: &str, primitive: &str) {
        match self
            .hot(direction, protocol)
            .and_then(|(h, d)| Some(&h.requests[d][index(&FAST_REQUESTS, primitive)?]))
        {
            Some(c) => c.inc(),
            None => self
                .requests
                .with_label_values(&[direction, protocol, primitive])
                .inc(),
        }
    }

    /// Count an answer given (`answers`) and the time it took (`request_duration_seconds`).
    pub fn count_answer(&self, direction: &str, protocol: &str, code: u16, secs: f64) {
        let hot = self.hot(direction, protocol);
        match hot {
            Some((h, d)) if code == 200 => h.answers_ok[d].inc(),
            _ => {
                let mut buf = [0u8; 5];
                self.answers
                    .with_label_values(&[direction, protocol, code_label(code, &mut buf)])
                    .inc();
            }
        }
        match hot {
            Some((h, d)) => h.latency[d].observe(secs),
            None => self
                .latency
                .with_label_values(&[direction, protocol])
                .observe(secs),
        }
    }

    /// The `in_flight` gauge of `direction`.
    pub fn in_flight(&self, direction: &str) -> IntGauge {
        match self.hot.as_deref().zip(index(&DIRECTIONS, direction)) {
            Some((h, d)) => h.in_flight[d].clone(),
            None => self.in_flight.with_label_values(&[direction]),
        }
    }

    /// Count a part handed to a destination over `protocol` (`deliveries`).
    pub fn count_delivery(&self, protocol: &str, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        match self.hot.as_deref().filter(|_| protocol == "ssp") {
            Some(h) => h.deliveries[usize::from(!ok)].inc(),
            None => self.deliveries.with_label_values(&[protocol, result]).inc(),
        }
    }

    /// Count a request or answer relayed on the fast path (`fast_path`).
    pub fn count_fast_path(&self, primitive: &str) {
        match self.hot.as_deref().zip(index(&FAST_PRIMITIVES, primitive)) {
            Some((h, i)) => h.fast_path[i].inc(),
            None => self.fast_path.with_label_values(&[primitive]).inc(),
        }
    }

    /// Count a body the fast path read, `read` saying how (`fast_reads`).
    pub fn count_fast_read(&self, read: &str) {
        match self.hot.as_deref().zip(index(&FAST_READS, read)) {
            Some((h, i)) => h.fast_reads[i].inc(),
            None => self.fast_reads.with_label_values(&[read]).inc(),
        }
    }

    /// Count a route cache lookup (`route_cache`).
    pub fn count_route_cache(&self, result: &str) {
        match self.hot.as_deref().zip(index(&ROUTE_CACHE, result)) {
            Some((h, i)) => h.route_cache[i].inc(),
            None => self.route_cache.with_label_values(&[result]).inc(),
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        if let Some(p) = &self.process {
            p.update();
        }
        let mut families = self.registry.gather();
        families.extend(self.unprefixed.gather());
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&families, &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Read one counter value (for tests and the demo).
    pub fn counter_value(c: &IntCounterVec, labels: &[&str]) -> u64 {
        c.get_metric_with_label_values(labels)
            .map(|m| m.get())
            .unwrap_or(0)
    }
}

/// A status code as decimal text in `buf` (a metric label, without allocating). SSP codes
/// have three digits; anything else a far side sends is `other`, so the far side cannot grow
/// the number of series.
/// The class of a SIP or HTTP status code as a label: `2xx` … `6xx`, else `other`.
pub fn class_label(code: u16) -> &'static str {
    match code {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        600..=699 => "6xx",
        _ => "other",
    }
}

pub fn code_label(code: u16, buf: &mut [u8; 5]) -> &str {
    if !(100..=999).contains(&code) {
        return "other";
    }
    let mut n = code;
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    /// What the request path counts by index lands in the same series a labelled lookup
    /// reads, for the hot label values and for the others alike.
    #[test]
    fn hot_series_are_the_labelled_ones() {
        let m = Metrics::new();
        for (direction, protocol, primitive) in [
            ("inbound", "ssp", "SendMessageRequest"),
            ("outbound", "ssp", "DeliveryStatusReport"),
            ("inbound", "ssp", "GetPresenceRequest"),
            ("inbound", "sip", "SendMessageRequest"),
        ] {
            m.count_request(direction, protocol, primitive);
            let c = m
                .requests
                .with_label_values(&[direction, protocol, primitive]);
            assert_eq!(c.get(), 1, "{direction} {protocol} {primitive}");
        }
        for (direction, protocol, code) in [
            ("inbound", "ssp", 200),
            ("outbound", "ssp", 531),
            ("inbound", "xmpp", 200),
        ] {
            m.count_answer(direction, protocol, code, 0.001);
            let c = m
                .answers
                .with_label_values(&[direction, protocol, &code.to_string()]);
            assert_eq!(c.get(), 1, "{direction} {protocol} {code}");
            let h = m.latency.with_label_values(&[direction, protocol]);
            assert_eq!(h.get_sample_count(), 1, "{direction} {protocol}");
        }
        let g = m.in_flight("outbound");
        g.inc();
        assert_eq!(m.in_flight.with_label_values(&["outbound"]).get(), 1);
        for (protocol, ok, result) in [
            ("ssp", true, "ok"),
            ("ssp", false, "failed"),
            ("sip", true, "ok"),
        ] {
            m.count_delivery(protocol, ok);
            assert_eq!(m.deliveries.with_label_values(&[protocol, result]).get(), 1);
        }
        for p in ["Status", "SendMessageRequest", "Other"] {
            m.count_fast_path(p);
            assert_eq!(m.fast_path.with_label_values(&[p]).get(), 1, "{p}");
        }
        for r in super::FAST_READS {
            m.count_fast_read(r);
            assert_eq!(m.fast_reads.with_label_values(&[r]).get(), 1, "{r}");
        }
        for r in ["hit", "negative", "srv-hit"] {
            m.count_route_cache(r);
            assert_eq!(m.route_cache.with_label_values(&[r]).get(), 1, "{r}");
        }
    }

    #[test]
    fn status_codes_as_labels() {
        let mut buf = [0u8; 5];
        for code in [100u16, 200, 531, 999] {
            assert_eq!(super::code_label(code, &mut buf), code.to_string());
        }
        for code in [0u16, 7, 1000, 65535] {
            assert_eq!(super::code_label(code, &mut buf), "other");
        }
    }
}
