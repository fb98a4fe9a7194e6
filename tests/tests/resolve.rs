//! Destination resolution: ENUM (RFC 6116/3402/3403), SRV (RFC 2782), fallbacks (RFC 3861,
//! RFC 3263, XMPP), against one lab zone set served by an in-process hickory-server and by a
//! real NSD; and the route cache (TTL expiry, negative caching, hold-down, serve-stale) on a
//! manual clock with NSD changed, reloaded and stopped.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::time::Duration;

use ssp_gateway::config::{EnumSuffix, Fallback, ResolverSpec};
use ssp_gateway::ops::metrics::Metrics;
use ssp_gateway::resolve::{Clock, Decision, Protocol, Resolver, Svc, Trace};
use ssp_testbed::dnslab::{InProcDns, Nsd, Zone, enum_owner, naptr};

const E164: &str = "e164.arpa";

/// The lab: one ENUM zone and one zone of operator domains, covering every rule.
fn lab() -> Vec<Zone> {
    let n = |num: &str, o, p, svc: &str, uri: &str| naptr(num, E164, o, p, svc, uri, 300);
    let owner = |num: &str| enum_owner(num, E164);
    let enum_zone = Zone::new(
        E164,
        60,
        &[
            // An IMPS operator: im and pres.
            n(
                "+4915112345678",
                100,
                10,
                "E2U+im",
                "im:userb@opy.lab.example",
            ),
            n(
                "+4915112345678",
                100,
                20,
                "E2U+pres",
                "pres:userb@opy.lab.example",
            ),
            // ORDER/PREFERENCE, backref with escaped +, and an order-200 backup.
            n(
                "+442079460123",
                100,
                20,
                "E2U+pres",
                "pres:alice@opy.lab.example",
            ),
            n(
                "+442079460123",
                100,
                10,
                "E2U+im",
                "im:alice@opy.lab.example",
            ),
            format!(
                "{} 300 IN NAPTR 100 30 \"u\" \"E2U+sip\" \"!^\\\\+(.*)$!sip:\\\\1@sip.lab.example;user=phone!\" .",
                owner("+442079460123")
            ),
            n(
                "+442079460123",
                200,
                10,
                "E2U+im",
                "im:alice@backup.lab.example",
            ),
            // Uppercase flag, compound service, xmpp URI.
            format!(
                "{} 300 IN NAPTR 10 10 \"U\" \"E2U+im+pres\" \"!^.*$!xmpp:bob@xmpponly.lab.example!\" .",
                owner("+442079460124")
            ),
            // CNAME to 0123.
            format!(
                "{} 300 IN CNAME {}",
                owner("+442079460125"),
                owner("+442079460123")
            ),
            // Non-terminal rule to a carrier tree.
            format!(
                "{} 300 IN NAPTR 100 10 \"\" \"\" \"\" carrier.{E164}.",
                owner("+442079460126")
            ),
            "carrier 120 IN NAPTR 100 10 \"u\" \"E2U+im\" \"!^.*$!im:dave@opy.lab.example!\" ."
                .to_owned(),
            // Only SIP.
            n(
                "+442079460127",
                100,
                10,
                "E2U+sip",
                "sip:carol@noimps.lab.example",
            ),
            // Provisioned without NAPTR (NODATA).
            format!("{} 300 IN TXT \"no NAPTR yet\"", owner("+442079460128")),
            // Private enumservice only: discarded.
            n("+442079460129", 100, 10, "E2U+P-im", "im:x@opy.lab.example"),
            // Loop through non-terminal rules.
            format!(
                "{} 300 IN NAPTR 100 10 \"\" \"\" \"\" loop1.{E164}.",
                owner("+442079460130")
            ),
            format!("loop1 300 IN NAPTR 100 10 \"\" \"\" \"\" loop2.{E164}."),
            format!("loop2 300 IN NAPTR 100 10 \"\" \"\" \"\" loop1.{E164}."),
            // Both regexp and replacement: ignored.
            format!(
                "{} 300 IN NAPTR 100 10 \"u\" \"E2U+im\" \"!^.*$!im:x@opy.lab.example!\" opy.lab.example.",
                owner("+442079460131")
            ),
            // Other delimiter, escaped delimiter, backref and the i flag.
            format!(
                "{} 300 IN NAPTR 100 10 \"u\" \"E2U+im\" \"#^\\\\+44(.*)$#im:u\\\\#\\\\1@opy.lab.example#i\" .",
                owner("+442079460132")
            ),
            // Service filter before the ORDER cut-off: order 100 offers only voice.
            n(
                "+442079460133",
                100,
                10,
                "E2U+voice:tel",
                "tel:+442079460133",
            ),
            n(
                "+442079460133",
                200,
                10,
                "E2U+im",
                "im:late@opy.lab.example",
            ),
            // Obsolete RFC 2916 form.
            format!(
                "{} 300 IN NAPTR 100 10 \"u\" \"sip+E2U\" \"!^.*$!sip:old@noimps.lab.example!\" .",
                owner("+442079460134")
            ),
            // The first NAPTR leads nowhere (a domain with nothing), the next of its ORDER to
            // a SIP server: routed by the next one.
            n(
                "+442079460138",
                100,
                10,
                "E2U+im",
                "im:gone@nothing.lab.example",
            ),
            n(
                "+442079460138",
                100,
                20,
                "E2U+sip",
                "sip:+442079460138@noimps.lab.example",
            ),
            // A domain with nothing at all.
            n(
                "+442079460135",
                100,
                10,
                "E2U+im",
                "im:z@nothing.lab.example",
            ),
            // XMPP only through _xmpp-server._tcp.
            n(
                "+442079460136",
                100,
                10,
                "E2U+im",
                "im:z@xmppsrv.lab.example",
            ),
            // xmpp: to a domain with no SRV at all: its own address, port 5269; and the
            // same domain by im: is no XMPP destination (an address says nothing).
            n(
                "+442079460139",
                100,
                10,
                "E2U+xmpp",
                "xmpp:z@xmppbare.lab.example",
            ),
            n(
                "+442079460140",
                100,
                10,
                "E2U+im",
                "im:z@xmppbare.lab.example",
            ),
            // RFC 3263 NAPTR to SRV.
            n(
                "+442079460137",
                100,
                10,
                "E2U+im",
                "im:z@sip3263.lab.example",
            ),
        ],
    );
    let domains = Zone::new(
        "lab.example",
        60,
        &[
            // IMPS with two priorities (failover order), and short TTLs on the way.
            "_imps-server._tcp.opy 300 IN SRV 10 0 18443 gw1.opy".into(),
            "_imps-server._tcp.opy 300 IN SRV 20 0 18443 gw2.opy".into(),
            "gw1.opy 120 IN A 127.0.0.21".into(),
            "gw2.opy 300 IN A 127.0.0.22".into(),
            "_imps-server._tcp.backup 300 IN SRV 10 0 18443 gw1.opy".into(),
            // IMPS decidedly not offered; SIP is.
            "_imps-server._tcp.noimps 300 IN SRV 0 0 0 .".into(),
            "_im._sip.noimps 300 IN SRV 10 0 5060 sip1.noimps".into(),
            "sip1.noimps 300 IN A 127.0.0.31".into(),
            // XMPP only, RFC 3861 label and the s2s label.
            "_im._xmpp.xmpponly 300 IN SRV 10 0 5269 xmpp.xmpponly".into(),
            "_pres._xmpp.xmpponly 300 IN SRV 10 0 5269 xmpp.xmpponly".into(),
            "xmpp.xmpponly 300 IN A 127.0.0.41".into(),
            "_xmpp-server._tcp.xmppsrv 300 IN SRV 5 0 5269 xmpp.xmppsrv".into(),
            "xmpp.xmppsrv 300 IN A 127.0.0.42".into(),
            "xmppbare 300 IN A 127.0.0.43".into(),
            // RFC 3263.
            "sip3263 300 IN NAPTR 10 10 \"s\" \"SIP+D2T\" \"\" _sip._tcp.sip3263".into(),
            "_sip._tcp.sip3263 300 IN SRV 10 0 5060 sip.sip3263".into(),
            "sip.sip3263 300 IN A 127.0.0.51".into(),
            // Weights.
            "_imps-server._tcp.weighted 300 IN SRV 10 60 18443 w1.weighted".into(),
            "_imps-server._tcp.weighted 300 IN SRV 10 40 18443 w2.weighted".into(),
            "w1.weighted 300 IN A 127.0.0.61".into(),
            "w2.weighted 300 IN A 127.0.0.62".into(),
            // A target reached through a short-lived CNAME.
            "_imps-server._tcp.aliased 300 IN SRV 10 0 18443 gw.aliased".into(),
            "gw.aliased 30 IN CNAME gw1.opy".into(),
        ],
    );
    vec![enum_zone, domains]
}

fn spec(ns: SocketAddr) -> ResolverSpec {
    ResolverSpec {
        nameservers: vec![ns],
        timeout: Duration::from_millis(1500),
        attempt_timeout: Duration::from_millis(400),
        srv_label: "_imps-server._tcp".into(),
        fallbacks: vec![Fallback::Sip, Fallback::Xmpp],
        last_resort: None,
        negative_min_ttl: Duration::from_secs(5),
        negative_max_ttl: Duration::from_secs(300),
        hold_down: Duration::from_secs(10),
        stale_max: Duration::from_secs(3600),
        cache_entries: 1000,
        enums: vec![EnumSuffix {
            suffix: E164.into(),
            nameservers: vec![ns],
            timeout: Duration::from_millis(400),
        }],
    }
}

fn resolver(ns: SocketAddr, clock: Clock) -> (Resolver, Metrics) {
    let m = Metrics::new();
    (
        Resolver::with_parts(spec(ns), "opx.lab.example", Vec::new(), m.clone(), clock),
        m,
    )
}

async fn decide(r: &Resolver, target: &str, svc: Svc) -> Decision {
    let t = Trace::default();
    r.decide_uncached(target, svc, Some(&t))
        .await
        .unwrap_or_else(|e| panic!("{target}: {e}\n{}", t.lines().join("\n")))
}

fn hosts(d: &Decision) -> Vec<String> {
    d.targets.iter().map(|t| t.host.clone()).collect()
}

/// Every rule, against whatever server `ns` is.
async fn every_case(ns: SocketAddr) {
    let (r, _) = resolver(ns, Clock::System);
    // IMPS via ENUM im and SRV, failover order by priority, TTL = smallest of the chain.
    let d = decide(&r, "+4915112345678", Svc::Im).await;
    assert_eq!(d.protocol, Protocol::Imps);
    let e = d.enum_hit.as_ref().unwrap();
    assert_eq!(
        (e.uri.as_str(), e.service.as_str(), e.order, e.preference),
        ("im:userb@opy.lab.example", "im", 100, 10)
    );
    assert_eq!(d.domain.as_deref(), Some("opy.lab.example"));
    assert_eq!(hosts(&d), ["gw1.opy.lab.example", "gw2.opy.lab.example"]);
    assert_eq!(
        d.targets[0].addrs,
        ["127.0.0.21".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(d.targets[0].port, 18443);
    assert_eq!(d.ttl, 120, "the A record of gw1 has the smallest TTL");
    assert_eq!(d.urls()[0], "https://127.0.0.21:18443/");
    // Presence uses E2U+pres.
    let d = decide(&r, "+4915112345678", Svc::Pres).await;
    assert_eq!(
        d.enum_hit.as_ref().unwrap().uri,
        "pres:userb@opy.lab.example"
    );
    // ORDER then PREFERENCE, regardless of answer order; the order-200 backup unused.
    let d = decide(&r, "+442079460123", Svc::Im).await;
    assert_eq!(d.enum_hit.as_ref().unwrap().uri, "im:alice@opy.lab.example");
    // CNAME'd number.
    let d = decide(&r, "+442079460125", Svc::Im).await;
    assert_eq!(d.enum_hit.as_ref().unwrap().uri, "im:alice@opy.lab.example");
    // Uppercase U, compound E2U+im+pres, xmpp URI -> XMPP only.
    let d = decide(&r, "+442079460124", Svc::Im).await;
    assert_eq!(
        d.enum_hit.as_ref().unwrap().uri,
        "xmpp:bob@xmpponly.lab.example"
    );
    assert_eq!(d.protocol, Protocol::Xmpp);
    assert_eq!(hosts(&d), ["xmpp.xmpponly.lab.example"]);
    // Non-terminal rule followed.
    let d = decide(&r, "+442079460126", Svc::Im).await;
    assert_eq!(d.enum_hit.as_ref().unwrap().uri, "im:dave@opy.lab.example");
    assert_eq!(d.ttl, 120, "the carrier NAPTR's TTL is part of the chain");
    // SIP only: IMPS SRV "." is skipped without address fallback, then _im._sip.
    let d = decide(&r, "+442079460127", Svc::Im).await;
    assert_eq!(d.protocol, Protocol::Sip);
    assert_eq!(hosts(&d), ["sip1.noimps.lab.example"]);
    // NODATA, private service only, loops, regexp+replacement: no route.
    for none in [
        "+442079460128",
        "+442079460129",
        "+442079460130",
        "+442079460131",
        "+4470000000",
    ] {
        let d = decide(&r, none, Svc::Im).await;
        assert_eq!(d.protocol, Protocol::None, "{none}: {d:?}");
        assert!(d.enum_hit.is_none(), "{none}");
    }
    // Other delimiter with an escaped one inside, backref, i flag.
    let d = decide(&r, "+442079460132", Svc::Im).await;
    assert_eq!(
        d.enum_hit.as_ref().unwrap().uri,
        "im:u#2079460132@opy.lab.example"
    );
    // The service filter applies before the ORDER cut-off.
    let d = decide(&r, "+442079460133", Svc::Im).await;
    assert_eq!(d.enum_hit.as_ref().unwrap().uri, "im:late@opy.lab.example");
    assert_eq!(d.enum_hit.as_ref().unwrap().order, 200);
    // Obsolete sip+E2U.
    let d = decide(&r, "+442079460134", Svc::Im).await;
    assert_eq!(
        d.enum_hit.as_ref().unwrap().uri,
        "sip:old@noimps.lab.example"
    );
    assert_eq!(d.protocol, Protocol::Sip);
    // A domain with nothing: no route (516).
    assert_eq!(
        decide(&r, "+442079460135", Svc::Im).await.protocol,
        Protocol::None
    );
    // A first NAPTR that leads nowhere does not end the search: the next one routes.
    let d = decide(&r, "+442079460138", Svc::Im).await;
    assert_eq!(d.protocol, Protocol::Sip);
    assert_eq!(
        d.enum_hit.as_ref().unwrap().uri,
        "sip:+442079460138@noimps.lab.example"
    );
    // XMPP through _xmpp-server._tcp.
    let d = decide(&r, "+442079460136", Svc::Im).await;
    assert_eq!(
        (d.protocol, hosts(&d)),
        (Protocol::Xmpp, vec!["xmpp.xmppsrv.lab.example".to_owned()])
    );
    // xmpp: without SRV: the domain's address on 5269 (RFC 6120 §3.2.2); by im: it is not.
    let d = decide(&r, "+442079460139", Svc::Im).await;
    assert_eq!(d.protocol, Protocol::Xmpp);
    assert_eq!(
        d.targets
            .iter()
            .map(|t| (t.host.as_str(), t.port, t.addrs.clone()))
            .collect::<Vec<_>>(),
        [(
            "xmppbare.lab.example",
            5269,
            vec!["127.0.0.43".parse::<std::net::IpAddr>().unwrap()]
        )]
    );
    let d = decide(&r, "+442079460140", Svc::Im).await;
    assert_ne!(d.protocol, Protocol::Xmpp);
    // RFC 3263 NAPTR -> SRV.
    let d = decide(&r, "+442079460137", Svc::Im).await;
    assert_eq!(
        (d.protocol, hosts(&d)),
        (Protocol::Sip, vec!["sip.sip3263.lab.example".to_owned()])
    );
    // A domain target directly (no ENUM).
    let d = decide(&r, "opy.lab.example", Svc::Im).await;
    assert!(d.enum_hit.is_none());
    assert_eq!(d.protocol, Protocol::Imps);
}

#[tokio::test]
async fn every_rule_against_an_in_process_zone() {
    let dns = InProcDns::start(&lab()).await.unwrap();
    every_case(dns.addr).await;
    dns.stop().await;
}

#[tokio::test]
async fn every_rule_against_nsd() {
    let nsd = Nsd::start(&lab()).await.unwrap();
    every_case(nsd.addr).await;
}

#[tokio::test]
async fn weighted_srv_spreads_load_by_weight() {
    let dns = InProcDns::start(&lab()).await.unwrap();
    let (r, m) = resolver(dns.addr, Clock::System);
    let mut first_w1 = 0;
    // Through the caches: one DNS lookup, then a fresh weighted draw on every use.
    for _ in 0..400 {
        let d = r.decide("weighted.lab.example", Svc::Im).await.unwrap();
        assert_eq!(d.targets.len(), 2);
        if d.targets[0].host.starts_with("w1.") {
            first_w1 += 1;
        }
    }
    // Weights 60/40: expect 240 of 400 first; allow a wide band for randomness.
    assert!(
        (200..=280).contains(&first_w1),
        "w1 first {first_w1} times of 400"
    );
    assert_eq!(
        Metrics::counter_value(&m.dns_lookups, &["srv", "ok"]),
        1,
        "cached after the first"
    );
    dns.stop().await;
}

/// A decision built on a cached SRV answer expires with that answer: it gets what is left of
/// the TTL, not all of it (the smallest TTL of the whole chain).
#[tokio::test]
async fn srv_cache_hits_pass_on_the_remaining_ttl() {
    let dns = InProcDns::start(&lab()).await.unwrap();
    let clock = Clock::manual();
    let (r, m) = resolver(dns.addr, clock.clone());
    let first = r.decide("+4915112345678", Svc::Im).await.unwrap();
    assert_eq!(first.domain.as_deref(), Some("opy.lab.example"));
    assert_eq!(first.ttl, 120);
    clock.advance(Duration::from_secs(100));
    // Another number at the same operator: its NAPTR is new, the SRV answer is cached.
    let second = r.decide("+442079460123", Svc::Im).await.unwrap();
    assert_eq!(second.domain.as_deref(), Some("opy.lab.example"));
    assert_eq!(Metrics::counter_value(&m.route_cache, &["srv-hit"]), 1);
    assert_eq!(second.ttl, 20, "120 s less the 100 s gone");
    dns.stop().await;
}

/// SERVFAIL for a name (its own broken delegation) is a transient error for that lookup, not
/// a reason to stop asking the tree about every other number: no hold-down.
#[tokio::test]
async fn servfail_for_a_name_holds_nothing_down() {
    let broken = ssp_testbed::dnslab::ServFail::start().await.unwrap();
    let dns = InProcDns::start(&lab()).await.unwrap();
    let mut s = spec(dns.addr);
    s.enums[0].nameservers = vec![broken.addr];
    let m = Metrics::new();
    let r = Resolver::with_parts(s, "opx.lab.example", Vec::new(), m.clone(), Clock::manual());
    for (i, n) in ["+4915112345678", "+442079460123"].into_iter().enumerate() {
        assert!(r.decide(n, Svc::Im).await.is_err(), "{n}: transient");
        assert_eq!(
            counter(&m, "naptr", "error"),
            i as u64 + 1,
            "{n}: asked, not held down"
        );
    }
    dns.stop().await;
}

/// A target reached through a CNAME lasts no longer than the CNAME.
#[tokio::test]
async fn a_cname_on_the_way_bounds_the_ttl() {
    let dns = InProcDns::start(&lab()).await.unwrap();
    let (r, _) = resolver(dns.addr, Clock::manual());
    let d = r.decide("aliased.lab.example", Svc::Im).await.unwrap();
    assert_eq!(d.protocol, Protocol::Imps);
    assert_eq!(d.targets[0].addrs[0].to_string(), "127.0.0.21");
    assert_eq!(d.ttl, 30);
    dns.stop().await;
}

/// A name DNS cannot carry (from a user ID or a NAPTR) is no route, not a DNS failure: it
/// must not put the name servers on hold-down for every other destination.
#[tokio::test]
async fn a_malformed_domain_is_no_route_and_holds_nothing_down() {
    let dns = InProcDns::start(&lab()).await.unwrap();
    let (r, m) = resolver(dns.addr, Clock::manual());
    let long = format!("{}.example", "a".repeat(64));
    for bad in ["a..b.example", long.as_str()] {
        let d = r.decide(bad, Svc::Im).await.unwrap();
        assert_eq!(d.protocol, Protocol::None, "{bad}");
    }
    assert_eq!(counter(&m, "srv", "error"), 0);
    let d = r.decide("opy.lab.example", Svc::Im).await.unwrap();
    assert_eq!(d.protocol, Protocol::Imps, "not held down");
    dns.stop().await;
}

#[tokio::test]
async fn last_resort_when_nothing_routes() {
    let dns = InProcDns::start(&lab()).await.unwrap();
    let mut s = spec(dns.addr);
    s.last_resort = Some("lastresort.example".into());
    let r = Resolver::with_parts(
        s,
        "opx.lab.example",
        Vec::new(),
        Metrics::new(),
        Clock::System,
    );
    let d = decide(&r, "+4470000000", Svc::Im).await;
    assert_eq!(d.protocol, Protocol::LastResort);
    assert_eq!(d.domain.as_deref(), Some("lastresort.example"));
    dns.stop().await;
}

/// The gateway speaks SSP only: a destination DNS shows reachable by SIP alone goes to the
/// gateway of last resort when there is one, and is otherwise refused with 405.
#[tokio::test]
async fn sip_only_destinations_go_to_the_last_resort_or_get_405() {
    use ssp_gateway::links::Dest;
    use ssp_gateway::pipeline::route::destination;
    use ssp_gateway::ssp::{Primitive, RouteBy};
    let dns = InProcDns::start(&lab()).await.unwrap();
    let cfg = ssp_gateway::config::Config::from_str(
        std::path::Path::new("routes/test.toml"),
        "[gateway]\npublic_domain = \"opx.lab.example\"\ncore_domains = [\"core.opx.lab.example\"]\ncountry_code = \"46\"\n",
    )
    .unwrap();
    let rb = RouteBy::Id("wv:+442079460127".into());
    let req = Primitive::SendMessageRequest(Default::default());
    for last_resort in [None, Some("lastresort.example")] {
        let mut s = spec(dns.addr);
        s.last_resort = last_resort.map(str::to_owned);
        let r = Resolver::with_parts(
            s,
            "opx.lab.example",
            Vec::new(),
            Metrics::new(),
            Clock::System,
        );
        let d = r.decide("+442079460127", Svc::of(&req)).await.unwrap();
        let dest = destination(
            &d,
            &cfg.operator.public_domain,
            r.last_resort(),
            rb.as_str(),
        );
        match (dest, last_resort) {
            (Dest::Fail(f), None) => {
                assert_eq!(f.code(), 405, "{f:?}");
                assert!(f.detail.contains("sip"));
            }
            (Dest::LastResort(remote), Some(lr)) => assert_eq!(remote.domain, lr),
            (other, lr) => panic!("last resort {lr:?}: unexpected {other:?}"),
        }
    }
    dns.stop().await;
}

fn zones_with(number_domain: &str, ttl: u32) -> Vec<Zone> {
    let mut z = lab();
    z[0] = Zone::new(
        E164,
        60,
        &[naptr(
            "+4915112345678",
            E164,
            100,
            10,
            "E2U+im",
            &format!("im:userb@{number_domain}"),
            ttl,
        )],
    );
    z
}

fn counter(m: &Metrics, rtype: &str, result: &str) -> u64 {
    Metrics::counter_value(&m.dns_lookups, &[rtype, result])
}

#[tokio::test]
async fn cache_ttl_expiry_follows_zone_changes() {
    let mut nsd = Nsd::start(&zones_with("opy.lab.example", 30))
        .await
        .unwrap();
    let clock = Clock::manual();
    let (r, m) = resolver(nsd.addr, clock.clone());
    let d = r.decide("+4915112345678", Svc::Im).await.unwrap();
    assert_eq!(d.domain.as_deref(), Some("opy.lab.example"));
    assert_eq!(d.ttl, 30);
    let queries = counter(&m, "naptr", "ok");
    // Within the TTL: from the cache, no query at all.
    clock.advance(Duration::from_secs(29));
    assert_eq!(
        r.decide("+4915112345678", Svc::Im)
            .await
            .unwrap()
            .domain
            .as_deref(),
        Some("opy.lab.example")
    );
    assert_eq!(
        counter(&m, "naptr", "ok"),
        queries,
        "a cache hit makes no DNS query"
    );
    // The number ports: the zone changes and NSD reloads.
    nsd.reload(&zones_with("backup.lab.example", 30))
        .await
        .unwrap();
    assert_eq!(
        r.decide("+4915112345678", Svc::Im)
            .await
            .unwrap()
            .domain
            .as_deref(),
        Some("opy.lab.example"),
        "still cached until the TTL runs out"
    );
    clock.advance(Duration::from_secs(2));
    let d = r.decide("+4915112345678", Svc::Im).await.unwrap();
    assert_eq!(
        d.domain.as_deref(),
        Some("backup.lab.example"),
        "re-resolved after the TTL"
    );
    assert_eq!(counter(&m, "naptr", "ok"), queries + 1);
}

#[tokio::test]
async fn negative_answers_are_cached_within_bounds() {
    let mut nsd = Nsd::start(&lab()).await.unwrap();
    let clock = Clock::manual();
    let (r, m) = resolver(nsd.addr, clock.clone());
    // NXDOMAIN, negative TTL 60 from the SOA.
    assert_eq!(
        r.decide("+4670000001", Svc::Im).await.unwrap().protocol,
        Protocol::None
    );
    let nx = counter(&m, "naptr", "nxdomain");
    assert_eq!(nx, 1);
    // Provision it; the negative answer still holds for its TTL.
    let mut z = lab();
    z[0].add(&naptr(
        "+4670000001",
        E164,
        100,
        10,
        "E2U+im",
        "im:new@opy.lab.example",
        300,
    ));
    nsd.reload(&z).await.unwrap();
    clock.advance(Duration::from_secs(59));
    assert_eq!(
        r.decide("+4670000001", Svc::Im).await.unwrap().protocol,
        Protocol::None
    );
    assert_eq!(
        counter(&m, "naptr", "nxdomain"),
        nx,
        "negative cache hit: no query"
    );
    assert!(Metrics::counter_value(&m.route_cache, &["negative"]) >= 1);
    clock.advance(Duration::from_secs(2));
    assert_eq!(
        r.decide("+4670000001", Svc::Im).await.unwrap().protocol,
        Protocol::Imps
    );

    // The configured bounds clamp the SOA's negative TTL (here min 5 s raised to 120 s).
    let mut s = spec(nsd.addr);
    s.negative_min_ttl = Duration::from_secs(120);
    let clock2 = Clock::manual();
    let r2 = Resolver::with_parts(
        s,
        "opx.lab.example",
        Vec::new(),
        Metrics::new(),
        clock2.clone(),
    );
    assert_eq!(
        r2.decide("+4670000002", Svc::Im).await.unwrap().protocol,
        Protocol::None
    );
    let mut z2 = z.clone();
    z2[0].add(&naptr(
        "+4670000002",
        E164,
        100,
        10,
        "E2U+im",
        "im:new2@opy.lab.example",
        300,
    ));
    nsd.reload(&z2).await.unwrap();
    clock2.advance(Duration::from_secs(100));
    assert_eq!(
        r2.decide("+4670000002", Svc::Im).await.unwrap().protocol,
        Protocol::None,
        "held for the 120 s minimum"
    );
    clock2.advance(Duration::from_secs(21));
    assert_eq!(
        r2.decide("+4670000002", Svc::Im).await.unwrap().protocol,
        Protocol::Imps
    );
}

#[tokio::test]
async fn serve_stale_and_hold_down_while_nsd_is_down() {
    let mut nsd = Nsd::start(&zones_with("opy.lab.example", 30))
        .await
        .unwrap();
    let clock = Clock::manual();
    let (r, m) = resolver(nsd.addr, clock.clone());
    let d = r.decide("+4915112345678", Svc::Im).await.unwrap();
    assert_eq!(d.protocol, Protocol::Imps);
    nsd.stop();
    clock.advance(Duration::from_secs(31));
    // Expired, DNS down: the stale route keeps the destination reachable.
    let d = r.decide("+4915112345678", Svc::Im).await.unwrap();
    assert_eq!(d.domain.as_deref(), Some("opy.lab.example"));
    assert_eq!(Metrics::counter_value(&m.route_cache, &["stale"]), 1);
    let errors = counter(&m, "naptr", "error");
    assert!(errors >= 1);
    // The failing ENUM tree is held down: the next decision does not even query it.
    let d = r.decide("+4915112345678", Svc::Im).await.unwrap();
    assert_eq!(d.domain.as_deref(), Some("opy.lab.example"));
    assert_eq!(counter(&m, "naptr", "error"), errors, "held down: no query");
    // An unknown destination cannot be served stale: a transient error (503 upstream).
    assert!(r.decide("+4915100000001", Svc::Im).await.is_err());
    // Beyond the stale limit the route is gone.
    clock.advance(Duration::from_secs(3600));
    assert!(r.decide("+4915112345678", Svc::Im).await.is_err());
}

#[tokio::test]
async fn resolve_command_json_against_nsd() {
    let nsd = Nsd::start(&lab()).await.unwrap();
    // The gateway's own CLI test (gateway/tests/cli.rs) makes cargo build this binary whenever
    // the workspace's tests are built; it sits beside the test executables' `deps/` directory.
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("ssp-gateway");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p ssp-gateway` or run the whole \
         workspace's tests (tests/run)",
        bin.display()
    );
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&bin)
            .arg("resolve")
            .arg("--nameserver")
            .arg(nsd.addr.to_string())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["--json", "wv:+4915112345678"]);
    assert_eq!(code, Some(0), "{out} {err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["target"], "+4915112345678");
    assert_eq!(v["service"], "im");
    assert_eq!(v["enum"]["uri"], "im:userb@opy.lab.example");
    assert_eq!(v["enum"]["service"], "im");
    assert_eq!(v["enum"]["order"], 100);
    assert_eq!(v["enum"]["preference"], 10);
    assert_eq!(v["domain"], "opy.lab.example");
    assert_eq!(v["protocol"], "imps");
    assert_eq!(v["targets"][0]["host"], "gw1.opy.lab.example");
    assert_eq!(v["targets"][0]["port"], 18443);
    assert_eq!(v["targets"][0]["addrs"][0], "127.0.0.21");
    assert_eq!(v["ttl"], 120);
    // Presence, and the trace of every step in text mode.
    let (code, out, _) = run(&["--service", "pres", "+4915112345678"]);
    assert_eq!(code, Some(0));
    for needle in [
        "query NAPTR",
        "NAPTR 100 20",
        "chosen NAPTR",
        "query SRV _imps-server._tcp.opy.lab.example",
        "ordered targets",
        "protocol: imps",
        "ttl: 120",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    // No route: exit 2; a bad target: exit 1.
    let (code, out, _) = run(&["--json", "+4470000000"]);
    assert_eq!(code, Some(2), "{out}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()["protocol"],
        "none"
    );
    let (code, _, err) = run(&["not a target@x"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("not wv:+E164"), "{err}");
    // A domain target, and a custom suffix that knows nothing.
    let (code, out, _) = run(&["--json", "noimps.lab.example"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()["protocol"],
        "sip"
    );
    // A tree this server is not authoritative for: REFUSED is an error, not "no route".
    let (code, _, err) = run(&["--suffix", "e164enum.net", "+4915112345678"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.to_ascii_lowercase().contains("refused"), "{err}");
}
