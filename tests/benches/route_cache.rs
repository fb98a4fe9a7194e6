//! Route decision for `wv:+MSISDN` -> targets: warm (route cache hit) beside cold (NAPTR, SRV
//! and A from a real NSD on loopback: three records, one round trip each), in one run.
//!
//! Run: `cargo bench -p ssp-testbed --bench route_cache` (needs `nsd`; falls back to the
//! in-process hickory-server when it is missing, and says so).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ssp_gateway::config::{EnumSuffix, Fallback, ResolverSpec};
use ssp_gateway::ops::metrics::Metrics;
use ssp_gateway::resolve::{Clock, Resolver, Svc};
use ssp_testbed::dnslab::{InProcDns, Nsd, Zone, naptr};

fn zones() -> Vec<Zone> {
    vec![
        Zone::new(
            "e164.arpa",
            60,
            &[naptr(
                "+4915112345678",
                "e164.arpa",
                100,
                10,
                "E2U+im",
                "im:userb@opy.example",
                300,
            )],
        ),
        Zone::new(
            "example",
            60,
            &[
                "_imps-server._tcp.opy 300 IN SRV 10 0 18443 gw.opy".to_owned(),
                "gw.opy 300 IN A 127.0.0.1".to_owned(),
            ],
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let (addr, _nsd, _inproc, server) = rt.block_on(async {
        if Nsd::available() {
            let n = Nsd::start(&zones())
                .await
                .unwrap_or_else(|e| panic!("nsd: {e}"));
            (n.addr, Some(n), None, "NSD")
        } else {
            let d = InProcDns::start(&zones())
                .await
                .unwrap_or_else(|e| panic!("dns: {e}"));
            (
                d.addr,
                None,
                Some(d),
                "in-process hickory-server (NSD not installed)",
            )
        }
    });
    eprintln!("DNS server: {server} at {addr}");
    let spec = ResolverSpec {
        nameservers: vec![addr],
        timeout: Duration::from_secs(2),
        attempt_timeout: Duration::from_secs(1),
        srv_label: "_imps-server._tcp".into(),
        fallbacks: vec![Fallback::Sip, Fallback::Xmpp],
        last_resort: None,
        negative_min_ttl: Duration::from_secs(5),
        negative_max_ttl: Duration::from_secs(300),
        hold_down: Duration::from_secs(10),
        stale_max: Duration::from_secs(3600),
        cache_entries: 100_000,
        enums: vec![EnumSuffix {
            suffix: "e164.arpa".into(),
            nameservers: vec![addr],
            timeout: Duration::from_secs(1),
        }],
    };
    // A manual clock that never moves: the warm entry never expires during the run.
    let r = Resolver::with_parts(
        spec,
        "opx.example",
        Vec::new(),
        Metrics::new(),
        Clock::manual(),
    );
    let mut g = c.benchmark_group("route_decision_msisdn_to_targets");
    g.bench_function("cold_naptr_srv_a_from_dns", |b| {
        b.iter(|| rt.block_on(r.decide_uncached(black_box("+4915112345678"), Svc::Im, None)))
    });
    rt.block_on(r.decide("+4915112345678", Svc::Im))
        .unwrap_or_else(|e| panic!("{e}"));
    g.bench_function("warm_route_cache_hit", |b| {
        b.iter(|| rt.block_on(r.decide(black_box("+4915112345678"), Svc::Im)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
