//! The use cases across operators (`gateway/PROTOCOL.md`) (5.20 add a contact by MSISDN, 5.21 presence, 5.22
//! IM) and number portability, end to end: core simulators, gateways from real config files,
//! and ENUM/SRV from a real NSD. Each numbered step of a use case's normal flow is asserted
//! where it can be seen: in the cores' wire logs, on the wire between the gateways, or in the
//! gateways' DNS counters.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use ssp_testbed::core_sim::{CoreSim, WireDir};
use ssp_testbed::dnslab::{Zone, naptr};
use ssp_testbed::federation::{DnsKind, Federation, OperatorSpec, federation_zones};

const A: &str = "+46701234567";
const B: &str = "+4915112345678";
/// In Y's number range and in ENUM at Y, but not (or no longer) a subscriber there.
const UNREGISTERED: &str = "+4915100000001";
const WAIT: Duration = Duration::from_secs(8);
const TTL: u32 = 300;

const X: usize = 0;
const Y: usize = 1;
const Z: usize = 2;

fn wv(n: &str) -> String {
    format!("wv:{n}")
}

/// X (Sweden) with user A, Y (Germany) with user B, optionally Z (Germany) with user C; no
/// static peering and no prefix routes, so every destination comes from DNS.
fn operators(with_z: bool) -> Vec<OperatorSpec> {
    let mut ops = vec![
        OperatorSpec::new('x', "46").user("usera", A, "User A"),
        OperatorSpec::new('y', "49").user("userb", B, "User B"),
    ];
    if with_z {
        ops.push(OperatorSpec::new('z', "49").user("userc", "+4917600000003", "User C"));
    }
    for o in &mut ops {
        o.static_peering = false;
    }
    ops
}

fn numbers(b_at: &str) -> Vec<(String, String)> {
    vec![
        (A.into(), "opx.example".into()),
        (B.into(), b_at.into()),
        (UNREGISTERED.into(), "opy.example".into()),
        ("+4917600000003".into(), "opz.example".into()),
    ]
}

async fn federation(with_z: bool) -> Federation {
    Federation::start_dns(operators(with_z), DnsKind::Nsd, |gws| {
        federation_zones(gws, &numbers("opy.example"), TTL)
    })
    .await
}

/// Bodies a core sent (`WireDir::Sent`) or received containing every needle.
fn core_wire(core: &CoreSim, dir: WireDir, needles: &[&str]) -> Vec<String> {
    core.wire_log()
        .into_iter()
        .filter(|(d, b)| *d == dir && needles.iter().all(|n| b.contains(n)))
        .map(|(_, b)| b)
        .collect()
}

/// NAPTR and SRV queries gateway `i` has made so far.
fn dns_queries(fed: &Federation, i: usize) -> (u64, u64) {
    let naptr = ["ok", "nxdomain", "nodata", "error"]
        .iter()
        .map(|r| fed.dns_count(i, "naptr", r))
        .sum();
    let srv = ["ok", "nxdomain", "nodata", "error"]
        .iter()
        .map(|r| fed.dns_count(i, "srv", r))
        .sum();
    (naptr, srv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_20_add_contact_by_msisdn_of_another_operators_user() {
    let fed = federation(false).await;
    let (cx, cy) = (&fed.ops[X].core, &fed.ops[Y].core);

    // Steps 1-3: A types B's number, in the national form his handset has it in; the client
    // searches by USER_MOBILE_NUMBER.
    let (st, hits) = cx.search_msisdn("usera", "+49 151 12345678").await.unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    let search = core_wire(cx, WireDir::Sent, &["SearchRequest", "USER_MOBILE_NUMBER"]);
    assert_eq!(search.len(), 1, "core X sent one search");

    // Step 4: X found the number is not its own and asked ENUM, then SRV for the im: domain.
    let (naptr, srv) = dns_queries(&fed, X);
    assert!(naptr >= 1 && srv >= 1, "NAPTR {naptr}, SRV {srv}");
    assert_eq!(fed.dns_count(X, "naptr", "ok"), 1, "one ENUM lookup");

    // Step 5: X sent the search to Y, with the number as +E164 and A as wv:+MSISDN.
    let to_y = fed.sent("opx.example", "opy.example", "SearchRequest");
    assert_eq!(to_y.len(), 1);
    assert!(to_y[0].contains(B), "{}", to_y[0]);
    assert!(to_y[0].contains(&wv(A)), "A as wv:+MSISDN: {}", to_y[0]);

    // Step 6: Y's core searched its users.
    assert_eq!(
        core_wire(
            cy,
            WireDir::Received,
            &["SearchRequest", "USER_MOBILE_NUMBER"]
        )
        .len(),
        1
    );
    assert!(
        !core_wire(
            cy,
            WireDir::Sent,
            &["SearchResponse", "wv:userb@core.opy.example"]
        )
        .is_empty()
    );

    // Step 7: Y answered X with B as wv:+MSISDN (the core's ID never left Y).
    let answer = fed.sent("opy.example", "opx.example", "SearchResponse");
    assert_eq!(answer.len(), 1);
    assert!(answer[0].contains(&wv(B)), "{}", answer[0]);
    assert!(!answer[0].contains("core.opy"), "{}", answer[0]);

    // Step 8: A's client got B's user ID as wv:+MSISDN, with his friendly name.
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].0, wv(B));
    assert_eq!(hits[0].1.as_deref(), Some("User B"));

    // Steps 9-11: the client adds the ID it got; with no nickname given, the friendly name.
    let (before_naptr, before_srv) = dns_queries(&fed, X);
    let st = cx
        .add_contact("usera", &hits[0].0, hits[0].1.as_deref())
        .await
        .unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    assert_eq!(
        cx.contact_entries("usera"),
        vec![(wv(B), Some("User B".to_owned()))]
    );

    // Step 12: X located Y again from B's wv:+MSISDN; the im: domain's servers were cached
    // (the subscription asks ENUM for pres, one query, and no SRV query).
    let (after_naptr, after_srv) = dns_queries(&fed, X);
    assert_eq!(after_srv, before_srv, "SRV came from the cache");
    assert!(after_naptr <= before_naptr + 1);

    // Step 13: X told Y that A added B, both as wv:+MSISDN.
    let added = fed.sent("opx.example", "opy.example", "SubscribeRequest");
    assert_eq!(added.len(), 1);
    assert!(
        added[0].contains(&wv(A)) && added[0].contains(&wv(B)),
        "{}",
        added[0]
    );

    // Step 14: Y's core got it for its user B (core ID) from A (wv:+MSISDN) and B was told.
    assert!(
        !core_wire(
            cy,
            WireDir::Received,
            &["SubscribeRequest", "wv:userb@core.opy.example", &wv(A)]
        )
        .is_empty()
    );
    assert_eq!(cy.auth_requests("userb"), vec![wv(A)]);

    // Step 15: B adds A back; A's core sees B (wv:+MSISDN) asking to watch A.
    let st = cy.add_contact("userb", &wv(A), None).await.unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    assert_eq!(cx.auth_requests("usera"), vec![wv(B)]);

    // Post-conditions: each sees the other's presence and can message the other.
    cy.set_presence("userb", "AVAILABLE", "free to chat")
        .await
        .unwrap();
    assert!(
        cx.wait_until(WAIT, |c| c
            .presence_seen("usera")
            .iter()
            .any(|p| p.presentity == wv(B) && p.status_text == "free to chat"))
            .await
    );
    fed.assert_topology_hidden();
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_20_wildcards_and_partial_numbers_are_refused_with_537() {
    let fed = federation(false).await;
    let cx = &fed.ops[X].core;
    for bad in ["+49151*", "+4915112345%", "+4915"] {
        let (st, hits) = cx.search_msisdn("usera", bad).await.unwrap();
        assert_eq!(st.code, 537, "{bad}: {st:?}");
        assert!(hits.is_empty());
    }
    // Refused before any DNS lookup or any traffic to another operator.
    assert_eq!(dns_queries(&fed, X), (0, 0));
    assert!(fed.between_gateways().is_empty());
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_20_wildcards_are_allowed_when_configured() {
    // The policy is per operator: X allows wildcards, so its search is no longer refused.
    let fed = Federation::start_dns_with(
        operators(false),
        DnsKind::Nsd,
        |gws| federation_zones(gws, &numbers("opy.example"), TTL),
        |toml| {
            if toml.contains("opx.example") {
                toml.push_str("\nsearch_wildcards = \"allow\"\n");
            }
        },
    )
    .await;
    let (st, _) = fed.ops[X]
        .core
        .search_msisdn("usera", "+46701*")
        .await
        .unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_20_unregistered_number_still_yields_wv_msisdn() {
    let fed = federation(false).await;
    let cx = &fed.ops[X].core;
    // ENUM places the number at Y, whose directory does not have it: Y answers 531 and X
    // answers the search with the number itself, so A can add it anyway.
    let (st, hits) = cx.search_msisdn("usera", UNREGISTERED).await.unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].0, wv(UNREGISTERED));
    assert_eq!(
        fed.sent("opx.example", "opy.example", "SearchRequest")
            .len(),
        1
    );
    assert!(
        !fed.received_from_peers("opx.example", "code=\"531\"")
            .is_empty(),
        "Y said 531"
    );
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_20_second_lookup_within_ttl_makes_no_dns_query() {
    let fed = federation(false).await;
    let cx = &fed.ops[X].core;
    let (st, _) = cx.search_msisdn("usera", B).await.unwrap();
    assert_eq!(st.code, 200);
    let first = dns_queries(&fed, X);
    assert!(first.0 >= 1 && first.1 >= 1, "{first:?}");
    let (st, hits) = cx.search_msisdn("usera", B).await.unwrap();
    assert_eq!(st.code, 200);
    assert_eq!(hits[0].0, wv(B));
    assert_eq!(
        dns_queries(&fed, X),
        first,
        "the second search used the route cache"
    );
    assert_eq!(
        fed.sent("opx.example", "opy.example", "SearchRequest")
            .len(),
        2
    );
    // Past the TTL the route is looked up again.
    fed.clock.advance(Duration::from_secs(u64::from(TTL) + 1));
    cx.search_msisdn("usera", B).await.unwrap();
    assert!(dns_queries(&fed, X).0 > first.0);
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_21_presence_subscription_notification_and_unsubscribe() {
    let fed = federation(false).await;
    let (cx, cy) = (&fed.ops[X].core, &fed.ops[Y].core);

    // Steps 1-3: A's client subscribes to wv:+B; X resolves E2U+pres, then SRV, and sends the
    // request to Y.
    let st = cx.subscribe("usera", &wv(B)).await.unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    assert!(!core_wire(cx, WireDir::Sent, &["SubscribeRequest", &wv(B)]).is_empty());
    let (naptr, srv) = dns_queries(&fed, X);
    assert!(naptr >= 1 && srv >= 1, "NAPTR {naptr}, SRV {srv}");
    let sub = fed.sent("opx.example", "opy.example", "SubscribeRequest");
    assert_eq!(sub.len(), 1);
    assert!(sub[0].contains(&wv(A)) && sub[0].contains(&wv(B)));

    // Step 4: Y's core identified B by the MSISDN and added A to B's watchers.
    assert!(
        !core_wire(
            cy,
            WireDir::Received,
            &["SubscribeRequest", "wv:userb@core.opy.example"]
        )
        .is_empty()
    );
    assert_eq!(cy.watchers("userb"), vec![wv(A)]);

    // Steps 5-6: the response came back through X (the 200 above) as a Status to A's core.
    assert!(!fed.sent("opy.example", "opx.example", "Status").is_empty());

    // Later notifications reach the watcher at X, rewritten to wv:+MSISDN.
    cy.set_presence("userb", "DISCREET", "in a meeting")
        .await
        .unwrap();
    assert!(
        cx.wait_until(WAIT, |c| c.presence_seen("usera").iter().any(|p| p
            .presentity
            == wv(B)
            && p.availability == "DISCREET"
            && p.status_text == "in a meeting"))
            .await,
        "{:?}",
        cx.presence_seen("usera")
    );
    let notes = fed.sent("opy.example", "opx.example", "<PresenceNotification");
    assert!(!notes.is_empty());
    assert!(notes.iter().all(|n| !n.contains("core.opy")));

    // A one-off fetch works too.
    let (st, values) = cx.get_presence("usera", &wv(B)).await.unwrap();
    assert!(st.is_success(), "{st:?}");
    assert_eq!(values[0].status_text, "in a meeting");

    // Unsubscribe: B's watcher list empties; B's next change notifies nobody.
    let st = cx.unsubscribe("usera", &wv(B)).await.unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    assert!(cy.watchers("userb").is_empty());
    // set_presence waits for every notification it sends to be answered, so once it returns
    // a wrongly sent one would already be on the wire and at A's core.
    let seen = cx.presence_seen("usera").len();
    let notes = |fed: &Federation| {
        fed.sent("opy.example", "opx.example", "<PresenceNotification")
            .len()
    };
    let sent = notes(&fed);
    cy.set_presence("userb", "AVAILABLE", "back").await.unwrap();
    assert!(
        core_wire(cy, WireDir::Sent, &["<PresenceNotification", "back"]).is_empty(),
        "no notification left Y's core"
    );
    assert_eq!(notes(&fed), sent, "nothing went to X");
    assert_eq!(cx.presence_seen("usera").len(), seen);
    fed.assert_topology_hidden();
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_21_subscription_follows_the_pres_service_not_im() {
    // B has only an E2U+pres record: presence reaches Y, a message finds no route.
    let fed = Federation::start_dns(operators(false), DnsKind::Nsd, |gws| {
        let mut zones = federation_zones(gws, &numbers("opy.example"), TTL);
        let pres_only: Vec<String> = vec![
            naptr(
                A,
                "e164.arpa",
                100,
                10,
                "E2U+im",
                "im:46701234567@opx.example",
                TTL,
            ),
            naptr(
                A,
                "e164.arpa",
                100,
                20,
                "E2U+pres",
                "pres:46701234567@opx.example",
                TTL,
            ),
            naptr(
                B,
                "e164.arpa",
                100,
                10,
                "E2U+pres",
                "pres:4915112345678@opy.example",
                TTL,
            ),
        ];
        zones[0] = Zone::new("e164.arpa", 60, &pres_only);
        zones
    })
    .await;
    let cx = &fed.ops[X].core;
    assert_eq!(cx.subscribe("usera", &wv(B)).await.unwrap().code, 200);
    assert_eq!(fed.ops[Y].core.watchers("userb"), vec![wv(A)]);
    let (_, st) = cx
        .send_message("usera", &[&wv(B)], "hi", false)
        .await
        .unwrap();
    assert_eq!(st.code, 516, "no E2U+im record: {st:?}");
    fed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uc_5_22_instant_messages_both_ways_with_delivery_reports() {
    let fed = federation(false).await;
    let (cx, cy) = (&fed.ops[X].core, &fed.ops[Y].core);

    // Steps 1-4: A sends to wv:+B; X resolves E2U+im and SRV, and sends to Y.
    let (mid, st) = cx
        .send_message("usera", &[&wv(B)], "Hello B", true)
        .await
        .unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    assert!(!mid.is_empty());
    let (naptr, srv) = dns_queries(&fed, X);
    assert!(naptr >= 1 && srv >= 1, "NAPTR {naptr}, SRV {srv}");
    let sent = fed.sent("opx.example", "opy.example", "SendMessageRequest");
    assert_eq!(sent.len(), 1);
    assert!(sent[0].contains(&wv(A)) && sent[0].contains(&wv(B)));

    // Step 5: Y's core got it for B's core ID, from A as wv:+MSISDN, and delivered it.
    assert!(
        !core_wire(
            cy,
            WireDir::Received,
            &["SendMessageRequest", "wv:userb@core.opy.example", &wv(A)]
        )
        .is_empty()
    );
    let got = cy
        .message("userb", 0, WAIT)
        .await
        .expect("no message 0 for userb");
    assert_eq!(
        (got.from.as_str(), got.text.as_str()),
        (wv(A).as_str(), "Hello B")
    );

    // The delivery report comes back to A's core (Y found X by ENUM too).
    let report = cx
        .report("usera", 0, WAIT)
        .await
        .expect("no report 0 for usera");
    assert_eq!(
        (report.code, report.recipient.as_str()),
        (200, wv(B).as_str())
    );
    assert_eq!(report.message_id, mid);

    // Step 6: B replies to the ID the message came from; it reaches A with B as wv:+MSISDN.
    let (mid_b, st) = cy
        .send_message("userb", &[&got.from], "Hello A", true)
        .await
        .unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    let back = cx
        .message("usera", 0, WAIT)
        .await
        .expect("no message 0 for usera");
    assert_eq!(
        (back.from.as_str(), back.text.as_str()),
        (wv(B).as_str(), "Hello A")
    );
    assert!(
        cy.report("userb", 0, WAIT).await.is_some(),
        "no report 0 for userb"
    );
    assert_eq!(cy.delivery_reports("userb")[0].message_id, mid_b);
    assert_eq!(cy.delivery_reports("userb")[0].code, 200);
    fed.assert_topology_hidden();
    fed.shutdown().await;
}

/// B ports from Y to Z: Y's directory drops B, Z's gains B, ENUM moves B to Z and NSD
/// reloads. Until the cached route expires Y answers 531 and A's core sees that error; after
/// it, A's next message and subscription reach B at Z, and A's contact list is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mnp_ported_number_stays_reachable() {
    let mut fed = federation(true).await;
    let (cx, cy, cz) = (
        fed.ops[X].core.clone(),
        fed.ops[Y].core.clone(),
        fed.ops[Z].core.clone(),
    );

    // Before: A has B as wv:+MSISDN and talks to B at Y.
    let (_, hits) = cx.search_msisdn("usera", B).await.unwrap();
    assert_eq!(hits[0].0, wv(B));
    assert_eq!(
        cx.add_contact("usera", &wv(B), Some("Bob"))
            .await
            .unwrap()
            .code,
        200
    );
    let (_, st) = cx
        .send_message("usera", &[&wv(B)], "at Y", false)
        .await
        .unwrap();
    assert_eq!(st.code, 200);
    assert!(
        cy.message("userb", 0, WAIT).await.is_some(),
        "no message 0 for userb"
    );
    // The subscription's first notification from Y is sent after its answer: let it arrive
    // before B leaves Y's directory (after that, Y's core can only name its user by its
    // wv:user@host ID, which is not what this test is about).
    assert!(
        cx.wait_until(WAIT, |c| !c.presence_seen("usera").is_empty())
            .await
    );
    let contacts_before = cx.contact_entries("usera");

    // The port: directories, then ENUM.
    let y_dir: String = cy
        .directory_csv()
        .lines()
        .filter(|l| !l.starts_with(B))
        .map(|l| format!("{l}\n"))
        .collect();
    fed.set_directory(Y, &y_dir);
    cz.add_user("userb", Some(B), "User B");
    fed.set_directory(Z, &cz.directory_csv());
    let zones = federation_zones(&fed.gateway_ports(), &numbers("opz.example"), TTL);
    fed.reload_dns(&zones).await.unwrap();

    // In between (X's route to Y still cached): Y refuses B with 531, and A's core gets it.
    let (_, st) = cx
        .send_message("usera", &[&wv(B)], "in between", false)
        .await
        .unwrap();
    assert_eq!(st.code, 531, "{st:?}");
    assert!(
        !fed.sent("opy.example", "opx.example", "code=\"531\"")
            .is_empty()
    );
    assert_eq!(
        cy.received("userb").len(),
        1,
        "nothing more reached Y's old user"
    );
    assert!(cz.received("userb").is_empty());

    // After the TTL: X asks ENUM again and reaches B at Z.
    fed.clock.advance(Duration::from_secs(u64::from(TTL) + 1));
    let (_, st) = cx
        .send_message("usera", &[&wv(B)], "at Z", true)
        .await
        .unwrap();
    assert_eq!(st.code, 200, "{st:?}");
    assert!(
        cz.message("userb", 0, WAIT).await.is_some(),
        "no message 0 for userb"
    );
    assert_eq!(cz.received("userb")[0].from, wv(A));
    assert_eq!(cz.received("userb")[0].text, "at Z");
    assert_eq!(
        fed.sent("opx.example", "opz.example", "SendMessageRequest")
            .len(),
        1
    );
    assert!(
        cx.wait_until(WAIT, |c| c
            .delivery_reports("usera")
            .iter()
            .any(|r| r.code == 200))
            .await
    );

    // The presence subscription follows too (E2U+pres now names Z).
    assert_eq!(cx.subscribe("usera", &wv(B)).await.unwrap().code, 200);
    assert_eq!(cz.watchers("userb"), vec![wv(A)]);
    cz.set_presence("userb", "AVAILABLE", "new operator, same number")
        .await
        .unwrap();
    assert!(
        cx.wait_until(WAIT, |c| c
            .presence_seen("usera")
            .iter()
            .any(
                |p| p.presentity == wv(B) && p.status_text == "new operator, same number"
            ))
        .await
    );

    // A never had to change anything.
    assert_eq!(cx.contact_entries("usera"), contacts_before);
    fed.assert_topology_hidden();
    fed.shutdown().await;
}
