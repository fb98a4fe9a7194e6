//! The demo: a federation of three IMPS operators on loopback (core simulators, gateways from
//! real config files, dev certificates made on the fly, an in-process DNS with ENUM and SRV),
//! a fourth that speaks SIP/SIMPLE only (an in-process SIP phone behind ENUM `E2U+sip`) and a
//! fifth that speaks XMPP only (an in-process XMPP server behind ENUM `E2U+xmpp`, federating
//! with gateway X directly by Server Dialback), playing the use cases 5.20, 5.21, 5.22
//! (`gateway/PROTOCOL.md`), 5.22's and 5.21's SIP and XMPP alternative flows and a number port, with a trace of every SSP hop and of the DNS records that decided
//! each route. Exits 0 when every step did what it should.
//!
//! `cargo run -p ssp-testbed --bin demo [-- --keep-running]`

/// The allocator, and why: `ssp_gateway::alloc`.
#[global_allocator]
static ALLOC: ssp_gateway::alloc::MiMalloc = ssp_gateway::alloc::MiMalloc;

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use ssp_gateway::links::TapDir;
use ssp_gateway::resolve::{Svc, Trace};
use ssp_gateway::ssp::{Body, Codec, Message, Mode, Primitive};
use ssp_testbed::core_sim::CoreSim;
use ssp_testbed::dnslab::{Zone, free_port, naptr};
use ssp_testbed::federation::{DnsKind, Federation, OperatorSpec, federation_zones};
use ssp_testbed::sipua::{self, SipUa};
use ssp_testbed::xmpppeer::{Seen, XmppServer};

const A: &str = "+46701234567";
const B: &str = "+4915112345678";
const C: &str = "+4917600000003";
/// Dave, at W: an operator with a SIP/SIMPLE server and no IMPS server.
const D: &str = "+4930123456789";
/// Erin, at V: an operator with an XMPP server and no IMPS server.
const E: &str = "+4940123456789";
const TTL: u32 = 60;
const WAIT: Duration = Duration::from_secs(8);
const X: usize = 0;
const Y: usize = 1;
const Z: usize = 2;

const USAGE: &str = "usage: demo [--keep-running]

Starts three simulated operators (X, Y, Z) on loopback, each an IMPS core simulator behind an
ssp-gateway, a fourth (W) with a SIP phone only, a fifth (V) with an XMPP server only, and an
in-process DNS serving ENUM (e164.arpa) and SRV (example), and plays the use cases of
gateway/PROTOCOL.md (with the SIP and XMPP alternative flows) and a number port. --keep-running leaves everything up afterwards and prints
how to poke at it; stop it with Ctrl-C.";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut keep_running = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--keep-running" => keep_running = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    let mut demo = Demo::start().await?;
    let outcome = demo.play().await;
    if let Err(e) = &outcome {
        println!("\nFAILED: {e:#}");
    } else {
        println!("\nAll use cases and the number port worked.");
    }
    if keep_running && outcome.is_ok() {
        demo.print_poke_help();
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        println!("stopping");
    }
    demo.fed.shutdown().await;
    outcome
}

struct Demo {
    fed: Federation,
    /// Dave's SIP phone at W.
    phone: SipUa,
    /// Gateway X's SIP port.
    x_sip: u16,
    /// V's XMPP server, where Erin is.
    xmpp: XmppServer,
    codec: Codec,
    /// How much of the wire log has been printed.
    shown: usize,
}

fn operators(x_sip: u16, x_xmpp: u16) -> Vec<OperatorSpec> {
    let mut ops = vec![
        OperatorSpec::new('x', "46").user("usera", A, "Alice"),
        OperatorSpec::new('y', "49").user("userb", B, "Bob"),
        OperatorSpec::new('z', "49").user("userc", C, "Carol"),
    ];
    for o in &mut ops {
        // Nobody is configured with anybody: every destination comes from DNS.
        o.static_peering = false;
    }
    // X also speaks SIP, and takes SIP messages from W's proxy (here: Dave's phone).
    // And XMPP: V's server federates with it directly, proving itself by dialback.
    ops[0].extra_toml = format!(
        "\n[sip]\nlisten = \"127.0.0.1:{x_sip}\"\n\n[[sip.peer]]\ndomain = \"opw.example\"\naddresses = [\"127.0.0.1\"]\n\
         \n[xmpp]\nlisten = \"127.0.0.1:{x_xmpp}\"\n\n[[xmpp.peer]]\ndomain = \"opv.example\"\nrequire_tls = false\nallow_dialback = true\n"
    );
    ops
}

/// The DNS: the IMPS operators' ENUM and SRV records, Bob at `b_at`, Dave at W by SIP
/// (ENUM `E2U+sip`, SRV `_sip._udp.opw.example` to his phone) and Erin at V by XMPP (ENUM
/// `E2U+xmpp`, SRV `_xmpp-server._tcp.opv.example` to V's server).
fn zones(gateways: &[(String, u16)], b_at: &str, phone: u16, xmpp: u16) -> Vec<Zone> {
    let mut z = federation_zones(gateways, &numbers(b_at), TTL);
    z[0].add(&naptr(
        D,
        "e164.arpa",
        100,
        10,
        "E2U+sip",
        &format!("sip:{D}@opw.example"),
        TTL,
    ));
    z[1].add(&format!("_sip._udp.opw {TTL} IN SRV 10 0 {phone} sip.opw"));
    z[1].add(&format!("sip.opw {TTL} IN A 127.0.0.1"));
    z[0].add(&naptr(
        E,
        "e164.arpa",
        100,
        10,
        "E2U+xmpp",
        &format!("xmpp:{E}@opv.example"),
        TTL,
    ));
    z[1].add(&format!(
        "_xmpp-server._tcp.opv {TTL} IN SRV 10 0 {xmpp} xmpp.opv"
    ));
    z[1].add(&format!("xmpp.opv {TTL} IN A 127.0.0.1"));
    z
}

fn numbers(b_at: &str) -> Vec<(String, String)> {
    vec![
        (A.into(), "opx.example".into()),
        (B.into(), b_at.into()),
        (C.into(), "opz.example".into()),
    ]
}

fn wv(n: &str) -> String {
    format!("wv:{n}")
}

fn name(domain: &str) -> &'static str {
    match domain {
        "opx.example" => "X",
        "opy.example" => "Y",
        "opz.example" => "Z",
        "opw.example" => "W",
        "opv.example" => "V",
        _ => "?",
    }
}

impl Demo {
    async fn start() -> Result<Demo> {
        println!(
            "Starting operators X (opx.example, +46), Y (opy.example, +49) and Z (opz.example, +49)"
        );
        println!(
            "on loopback: one IMPS core simulator and one ssp-gateway each, an in-process DNS,"
        );
        println!("and certificates from a development CA made just now.\n");
        let phone = SipUa::start(0).await?;
        let (x_sip, x_xmpp) = (free_port(), free_port());
        let port = phone.port;
        let xmpp = XmppServer::start(
            "opv.example",
            "opx.example",
            x_xmpp,
            "<show>away</show><status>On the train</status>",
        )
        .await?;
        let xmpp_port = xmpp.port;
        let fed = Federation::start_dns(operators(x_sip, x_xmpp), DnsKind::InProc, move |gws| {
            zones(gws, "opy.example", port, xmpp_port)
        })
        .await;
        let dns = fed
            .dns
            .as_ref()
            .map(|d| d.addr().to_string())
            .unwrap_or_default();
        for op in &fed.ops {
            let users: Vec<String> = op
                .spec
                .users
                .iter()
                .map(|(local, msisdn, n)| {
                    format!("{n} = wv:{local}@{} = {msisdn}", op.spec.core_domain)
                })
                .collect();
            println!(
                "  {} {:<12} gateway {}  core {}  users: {}",
                name(&op.spec.domain),
                op.spec.domain,
                op.peer_url,
                op.core.url(),
                users.join(", ")
            );
        }
        println!(
            "  DNS {dns}: e164.arpa (ENUM NAPTR per number, TTL {TTL} s) and example (SRV _imps-server._tcp per operator)"
        );
        println!(
            "  W opw.example  SIP/SIMPLE only: Dave = sip:{D}@opw.example, his phone on udp 127.0.0.1:{port}; X speaks SIP on udp/tcp 127.0.0.1:{x_sip}"
        );
        println!(
            "  V opv.example  XMPP only: Erin = xmpp:{E}@opv.example, its server on tcp 127.0.0.1:{xmpp_port}; X's gateway is opx.example's XMPP server on tcp 127.0.0.1:{x_xmpp}"
        );
        println!(
            "  The gateways have no peering entries and no routes: everything below is found in DNS."
        );
        Ok(Demo {
            fed,
            phone,
            x_sip,
            xmpp,
            codec: Codec::default(),
            shown: 0,
        })
    }

    fn core(&self, i: usize) -> CoreSim {
        self.fed.ops[i].core.clone()
    }

    async fn play(&mut self) -> Result<()> {
        self.uc_5_20().await?;
        self.uc_5_21().await?;
        self.uc_5_22().await?;
        self.uc_5_22_sip().await?;
        self.uc_5_22_xmpp().await?;
        self.porting().await?;
        Ok(())
    }

    fn heading(&self, title: &str) {
        println!("\n== {title}");
    }

    fn step(&self, text: &str) {
        println!("\n-- {text}");
    }

    /// Wait until the federation is quiet: follow-ups of a step (presence notifications,
    /// delivery reports, the answers to those) arrive after the step's own answer. Quiet
    /// means no new SSP body for 150 ms; gives up after 3 s (the trace is then just longer).
    async fn settle(&self) {
        let count = || self.fed.wire.lock().map(|w| w.len()).unwrap_or(0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        let mut last = count();
        let mut quiet_since = tokio::time::Instant::now();
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let now = count();
            if now != last {
                last = now;
                quiet_since = tokio::time::Instant::now();
            } else if quiet_since.elapsed() >= Duration::from_millis(150) {
                return;
            }
        }
    }

    /// Print the SSP hops recorded since the last call (after the federation is quiet):
    /// core→gateway, gateway→gateway and gateway→core, each once (a body received from a
    /// peer is the one its gateway sent).
    async fn show_wire(&mut self) {
        self.settle().await;
        let records = match self.fed.wire.lock() {
            Ok(w) => w[self.shown..].to_vec(),
            Err(_) => return,
        };
        self.shown += records.len();
        for r in records {
            let me = format!("gateway {}", name(&r.gateway));
            let (from, to) = match (r.dir, r.party.as_str()) {
                (TapDir::In, "core") => (format!("core {}", name(&r.gateway)), me),
                (TapDir::In, _) => continue,
                (TapDir::Out, "core") => (me, format!("core {}", name(&r.gateway))),
                (TapDir::Out, peer) => (me, format!("gateway {}", name(peer))),
            };
            for line in self.summarise(&r.body) {
                println!("   {from:>9} -> {to:<9}  {line}");
            }
        }
    }

    /// One line per transaction: mode, primitive, status and the user IDs it carries.
    fn summarise(&self, body: &str) -> Vec<String> {
        let msg: Message = match self.codec.parse(body.as_bytes()) {
            Ok(m) => m,
            Err(e) => return vec![format!("(unparsable: {e})")],
        };
        let Body::Session(session) = msg.body else {
            return vec!["association (SetupTransaction)".into()];
        };
        session
            .transactions
            .into_iter()
            .map(|mut t| {
                let mode = match t.mode {
                    Mode::Request => "request ",
                    Mode::Response => "response",
                };
                let mut ids: Vec<String> = Vec::new();
                t.primitive.visit_ids(&mut |_, id: &mut String| {
                    if !ids.contains(id) {
                        ids.push(id.clone());
                    }
                });
                let mut extra = String::new();
                if let Primitive::SearchRequest(s) = &t.primitive {
                    for p in &s.pairs {
                        extra.push_str(&format!(" {}={}", p.element, p.string));
                    }
                }
                if let Some(st) = answer_status(&t.primitive) {
                    extra.push_str(&format!(" status {st}"));
                }
                format!("{mode} {}{extra}  [{}]", t.primitive.name(), ids.join(" "))
            })
            .collect()
    }

    /// What gateway `i` finds in DNS for `target`, step by step (the same lookup its route
    /// cache made, done again without the cache so every record can be shown).
    async fn show_dns(&self, i: usize, target: &str, svc: Svc) -> Result<()> {
        let gw = self.fed.ops[i]
            .gateway
            .as_ref()
            .context("gateway stopped")?;
        let resolver = gw.gateway.resolver().context("gateway has no resolver")?;
        let trace = Trace::default();
        let decision = resolver
            .decide_uncached(target, svc, Some(&trace))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        println!(
            "   DNS records that decided it (gateway {}'s lookup of {target}, service {}, replayed with a trace):",
            name(&self.fed.ops[i].spec.domain),
            svc.label()
        );
        for line in trace.lines() {
            println!("      {line}");
        }
        println!(
            "      => {} by {}, {} (valid {} s)",
            decision.domain.as_deref().unwrap_or("-"),
            decision.protocol.as_str(),
            if matches!(
                decision.protocol,
                ssp_gateway::resolve::Protocol::Sip | ssp_gateway::resolve::Protocol::Xmpp
            ) {
                let scheme = decision.protocol.as_str();
                let servers: Vec<String> = decision
                    .targets
                    .iter()
                    .flat_map(|t| {
                        t.addrs
                            .iter()
                            .map(move |a| format!("{scheme} {a}:{}", t.port))
                    })
                    .collect();
                servers.join(" ")
            } else {
                decision.urls().join(" ")
            },
            decision.ttl
        );
        Ok(())
    }

    fn dns_queries(&self, i: usize) -> u64 {
        ["naptr", "srv", "a"]
            .iter()
            .flat_map(|t| {
                ["ok", "nxdomain", "nodata", "error"]
                    .iter()
                    .map(move |r| self.fed.dns_count(i, t, r))
            })
            .sum()
    }

    async fn uc_5_20(&mut self) -> Result<()> {
        let (cx, cy) = (self.core(X), self.core(Y));
        self.heading("Use case 5.20: Alice (X) adds Bob (Y) by his mobile number");
        self.step("Steps 1-8: Alice enters Bob's number, +49 151 12345678; her client searches by USER_MOBILE_NUMBER");
        let (st, hits) = cx.search_msisdn("usera", "+49 151 12345678").await?;
        self.show_wire().await;
        self.show_dns(X, B, Svc::Im).await?;
        ensure!(st.code == 200, "search answered {}", st.code);
        ensure!(
            hits.first().map(|h| h.0.as_str()) == Some(wv(B).as_str()),
            "search found {hits:?}"
        );
        println!(
            "   Alice's client got {} ({})",
            hits[0].0,
            hits[0].1.as_deref().unwrap_or("")
        );

        self.step("Steps 9-14: the client adds wv:+MSISDN; X tells Y that Alice added Bob");
        let before = self.dns_queries(X);
        let st = cx
            .add_contact("usera", &hits[0].0, hits[0].1.as_deref())
            .await?;
        self.show_wire().await;
        ensure!(st.code == 200, "add contact answered {}", st.code);
        ensure!(
            cy.auth_requests("userb") == vec![wv(A)],
            "Bob was not told: {:?}",
            cy.auth_requests("userb")
        );
        println!(
            "   Alice's contact list: {:?}; Bob was told that {} added him",
            cx.contact_entries("usera"),
            wv(A)
        );
        println!(
            "   DNS queries for this step: {} (the SRV answer for opy.example was cached; E2U+pres was new)",
            self.dns_queries(X) - before
        );

        self.step("Wildcards and partial numbers are refused (537) before any lookup");
        for bad in ["+49151*", "+4915"] {
            let (st, _) = cx.search_msisdn("usera", bad).await?;
            self.show_wire().await;
            ensure!(st.code == 537, "{bad} answered {}", st.code);
            println!(
                "   search {bad:<10} -> {} {}",
                st.code,
                st.description.unwrap_or_default()
            );
        }

        self.step("The same number again, within its TTL: no DNS query at all");
        let before = self.dns_queries(X);
        let (st, hits) = cx.search_msisdn("usera", B).await?;
        self.show_wire().await;
        ensure!(
            st.code == 200 && hits.first().map(|h| h.0.as_str()) == Some(wv(B).as_str()),
            "the second search answered {} {hits:?}",
            st.code
        );
        let n = self.dns_queries(X) - before;
        ensure!(n == 0, "the second search made {n} DNS queries");
        println!("   DNS queries: 0 (route cache)");
        Ok(())
    }

    async fn uc_5_21(&mut self) -> Result<()> {
        let (cx, cy) = (self.core(X), self.core(Y));
        self.heading("Use case 5.21: Alice watches Bob's presence");
        self.step("Steps 1-6: subscription by E2U+pres (the add-contact step subscribed already; Bob's watchers)");
        self.show_dns(X, B, Svc::Pres).await?;
        ensure!(
            cy.watchers("userb") == vec![wv(A)],
            "watchers {:?}",
            cy.watchers("userb")
        );
        println!("   Bob's watchers at Y: {:?}", cy.watchers("userb"));

        self.step("Bob changes his presence; the notification reaches Alice at X");
        cy.set_presence("userb", "DISCREET", "in a meeting").await?;
        let seen = cx
            .wait_until(WAIT, |c| {
                c.presence_seen("usera")
                    .iter()
                    .any(|p| p.presentity == wv(B) && p.status_text == "in a meeting")
            })
            .await;
        self.show_wire().await;
        ensure!(seen, "Alice did not see Bob's presence");
        println!("   Alice sees {} as DISCREET, \"in a meeting\"", wv(B));

        self.step("Alice unsubscribes");
        let st = cx.unsubscribe("usera", &wv(B)).await?;
        self.show_wire().await;
        ensure!(st.code == 200, "unsubscribe answered {}", st.code);
        ensure!(cy.watchers("userb").is_empty(), "still watching");
        println!("   Bob's watchers at Y: none");
        Ok(())
    }

    async fn uc_5_22(&mut self) -> Result<()> {
        let (cx, cy) = (self.core(X), self.core(Y));
        self.heading("Use case 5.22: Alice and Bob exchange instant messages");
        self.step("Steps 1-5: Alice sends to wv:+4915112345678 with a delivery report");
        let (_, st) = cx.send_message("usera", &[&wv(B)], "Hi Bob!", true).await?;
        ensure!(st.code == 200, "send answered {}", st.code);
        ensure!(
            cy.message("userb", 0, WAIT).await.is_some(),
            "Bob got nothing"
        );
        ensure!(
            cx.report("usera", 0, WAIT).await.is_some(),
            "no delivery report for Alice"
        );
        self.show_wire().await;
        let got = cy.received("userb")[0].clone();
        println!("   Bob received {:?} from {}", got.text, got.from);

        self.step("Step 6: Bob replies to the ID the message came from");
        let (_, st) = cy
            .send_message("userb", &[&got.from], "Hi Alice!", true)
            .await?;
        ensure!(st.code == 200, "reply answered {}", st.code);
        ensure!(
            cx.message("usera", 0, WAIT).await.is_some(),
            "Alice got nothing"
        );
        ensure!(
            cy.report("userb", 0, WAIT).await.is_some(),
            "no delivery report for Bob"
        );
        self.show_wire().await;
        let back = cx.received("usera")[0].clone();
        println!("   Alice received {:?} from {}", back.text, back.from);
        Ok(())
    }

    async fn uc_5_22_sip(&mut self) -> Result<()> {
        let cx = self.core(X);
        self.heading("Use cases 5.22 and 5.21, alternative flows: Alice and Dave, whose operator W speaks SIP/SIMPLE only");
        self.show_dns(X, D, Svc::Im).await?;
        self.step(
            "Alice sends to wv:+4930123456789: ENUM says sip:, so X's gateway sends a SIP MESSAGE",
        );
        let (_, st) = cx
            .send_message("usera", &[&wv(D)], "Hi Dave!", false)
            .await?;
        ensure!(st.code == 200, "send answered {}", st.code);
        ensure!(
            self.phone.wait_for(1, WAIT).await,
            "Dave's phone got nothing"
        );
        self.show_wire().await;
        let got = self.phone.received()[0].clone();
        println!(
            "   SIP MESSAGE -> Dave's phone: {:?} from {}",
            got.text, got.from
        );
        ensure!(
            got.from.contains(&format!("sip:{A}@opx.example")),
            "Alice is not named by her number over SIP: {}",
            got.from
        );

        self.step("Dave answers with a SIP MESSAGE to Alice's number at opx.example");
        let code = sipua::request(
            self.x_sip,
            "MESSAGE",
            &format!("sip:{A}@opx.example;user=phone"),
            &format!("sip:{D}@opw.example;user=phone"),
            "text/plain;charset=UTF-8",
            "Hi Alice, Dave here",
        )
        .await;
        ensure!(code == Some(200), "Dave's MESSAGE answered {code:?}");
        let back = cx
            .received("usera")
            .into_iter()
            .find(|m| m.text == "Hi Alice, Dave here")
            .context("Alice got nothing from Dave")?;
        self.show_wire().await;
        println!("   Alice received {:?} from {}", back.text, back.from);
        ensure!(
            back.from == wv(D),
            "Dave is not named by his number: {}",
            back.from
        );

        self.step("Alice watches Dave's presence: a SIP SUBSCRIBE; the NOTIFY's PIDF becomes a PresenceNotification");
        self.phone
            .set_presence(&format!("sip:{D}@opw.example"), "open", "busy", "On a call");
        let st = cx.subscribe("usera", &wv(D)).await?;
        ensure!(st.code == 200, "subscription answered {}", st.code);
        ensure!(
            cx.wait_until(WAIT, |c| c
                .presence_seen("usera")
                .iter()
                .any(|p| p.presentity == wv(D)))
                .await,
            "no presence of Dave reached Alice"
        );
        self.show_wire().await;
        let p = cx
            .presence_seen("usera")
            .into_iter()
            .rfind(|p| p.presentity == wv(D))
            .context("Dave's presence")?;
        println!(
            "   Alice sees Dave: online {:?}, {}, {:?}",
            p.online, p.availability, p.status_text
        );
        ensure!(
            p.availability == "DISCREET" && p.status_text == "On a call",
            "Dave's presence mapped wrong: {p:?}"
        );
        Ok(())
    }

    async fn porting(&mut self) -> Result<()> {
        let (cx, cy, cz) = (self.core(X), self.core(Y), self.core(Z));
        self.heading("Number portability: Bob moves +4915112345678 from Y to Z");
        self.step(
            "Y's directory drops Bob, Z's gains him, ENUM now says opz.example; the DNS reloads",
        );
        let y_dir: String = cy
            .directory_csv()
            .lines()
            .filter(|l| !l.starts_with(B))
            .map(|l| format!("{l}\n"))
            .collect();
        self.fed.set_directory(Y, &y_dir);
        cz.add_user("userb", Some(B), "Bob");
        self.fed.set_directory(Z, &cz.directory_csv());
        let zones = zones(
            &self.fed.gateway_ports(),
            "opz.example",
            self.phone.port,
            self.xmpp.port,
        );
        self.fed.reload_dns(&zones).await?;
        let contacts = cx.contact_entries("usera");

        self.step(
            "Within the TTL X still routes to Y; Y answers 531 and Alice's core gets the error",
        );
        let (_, st) = cx
            .send_message("usera", &[&wv(B)], "still there?", false)
            .await?;
        self.show_wire().await;
        ensure!(st.code == 531, "expected 531 from Y, got {}", st.code);
        println!(
            "   Alice's core got {} {}",
            st.code,
            st.description.unwrap_or_default()
        );

        self.step(&format!("{TTL} s later (the gateways' clock moves on): the route expires and ENUM is asked again"));
        self.fed
            .clock
            .advance(Duration::from_secs(u64::from(TTL) + 1));
        self.show_dns(X, B, Svc::Im).await?;
        let (_, st) = cx
            .send_message("usera", &[&wv(B)], "Hi Bob at Z!", true)
            .await?;
        ensure!(st.code == 200, "send answered {}", st.code);
        ensure!(
            cz.message("userb", 0, WAIT).await.is_some(),
            "Bob at Z got nothing"
        );
        ensure!(
            cx.report("usera", 1, WAIT).await.is_some(),
            "no delivery report from Z"
        );
        self.show_wire().await;
        println!("   Bob received {:?} at Z", cz.received("userb")[0].text);

        self.step("Alice's subscription reaches Bob at Z too");
        let st = cx.subscribe("usera", &wv(B)).await?;
        self.show_wire().await;
        ensure!(st.code == 200, "subscribe answered {}", st.code);
        ensure!(
            cz.watchers("userb") == vec![wv(A)],
            "watchers at Z {:?}",
            cz.watchers("userb")
        );
        ensure!(
            cx.contact_entries("usera") == contacts,
            "Alice's contacts changed"
        );
        println!(
            "   Bob's watchers at Z: {:?}; Alice's contact list unchanged: {:?}",
            cz.watchers("userb"),
            contacts
        );
        self.fed.assert_topology_hidden();
        println!("   No core user ID or core domain crossed between the gateways.");
        Ok(())
    }

    async fn uc_5_22_xmpp(&mut self) -> Result<()> {
        let cx = self.core(X);
        self.heading("Use cases 5.22 and 5.21, alternative flows: Alice and Erin, whose operator V speaks XMPP only");
        self.show_dns(X, E, Svc::Im).await?;
        self.step("Alice sends to wv:+4940123456789: ENUM says xmpp:, so X's gateway opens a server-to-server stream to V (dialback) and sends a <message>");
        let (_, st) = cx
            .send_message("usera", &[&wv(E)], "Hi Erin!", false)
            .await?;
        ensure!(st.code == 200, "send answered {}", st.code);
        let alice = format!("{A}@opx.example");
        ensure!(
            self.xmpp
                .wait_for(WAIT, |s| s.iter().any(
                    |x| matches!(x, Seen::Message(f, b) if *f == alice && b == "Hi Erin!")
                ))
                .await,
            "Erin got nothing from Alice's number: {:?}",
            self.xmpp.seen()
        );
        self.show_wire().await;
        println!("   <message> -> Erin at V: \"Hi Erin!\" from {alice}");

        self.step("Erin answers: V opens its own stream to X's gateway, which checks V's dialback key with V, then takes the <message>");
        self.xmpp
            .send(&format!(
                "<message from='{E}@opv.example/phone' to='{alice}' type='chat' id='e1'><body>Hi Alice, Erin here</body></message>"
            ))
            .await?;
        ensure!(
            cx.wait_until(WAIT, |c| c
                .received("usera")
                .iter()
                .any(|m| m.text == "Hi Alice, Erin here"))
                .await,
            "Alice got nothing from Erin"
        );
        let back = cx
            .received("usera")
            .into_iter()
            .find(|m| m.text == "Hi Alice, Erin here")
            .context("Erin's message")?;
        self.show_wire().await;
        println!("   Alice received {:?} from {}", back.text, back.from);
        ensure!(
            back.from == wv(E),
            "Erin is not named by her number: {}",
            back.from
        );

        self.step("Alice watches Erin's presence: <presence type='subscribe'>; V approves and says Erin is away");
        let st = cx.subscribe("usera", &wv(E)).await?;
        ensure!(st.code == 200, "subscription answered {}", st.code);
        ensure!(
            cx.wait_until(WAIT, |c| c
                .presence_seen("usera")
                .iter()
                .any(|p| p.presentity == wv(E)))
                .await,
            "no presence of Erin reached Alice"
        );
        self.show_wire().await;
        let p = cx
            .presence_seen("usera")
            .into_iter()
            .rfind(|p| p.presentity == wv(E))
            .context("Erin's presence")?;
        println!(
            "   Alice sees Erin: online {:?}, {}, {:?}",
            p.online, p.availability, p.status_text
        );
        ensure!(
            p.availability == "NOT_AVAILABLE" && p.status_text == "On the train",
            "Erin's presence mapped wrong: {p:?}"
        );
        Ok(())
    }

    fn print_poke_help(&self) {
        let dns = self
            .fed
            .dns
            .as_ref()
            .map(|d| d.addr().to_string())
            .unwrap_or_default();
        let x = &self.fed.ops[X];
        println!("\nStill running (Ctrl-C stops it). Try, from the repository root:\n");
        println!("  cargo run -q -p ssp-gateway -- resolve --nameserver {dns} +4915112345678");
        println!(
            "  cargo run -q -p ssp-gateway -- resolve --nameserver {dns} --service pres --json +4915112345678"
        );
        println!("  cargo run -q -p ssp-gateway -- resolve --nameserver {dns} opy.example");
        println!(
            "  cargo run -q -p ssp-gateway -- ssp rewrite --config {} --direction outbound routes/examples/send-message-outbound.xml",
            x.config_path.display()
        );
        println!("\nConfigs:");
        for op in &self.fed.ops {
            println!("  {}  {}", op.spec.domain, op.config_path.display());
        }
        println!("\nThe cores' users were moved by the demo: Bob (+4915112345678) is now at Z.");
    }
}

/// The status a response carries, if it has one.
fn answer_status(p: &Primitive) -> Option<u16> {
    match p {
        Primitive::Status(s) => Some(s.code),
        Primitive::SendMessageResponse(r) => r.status.as_ref().map(|s| s.code),
        Primitive::SearchResponse(r) => r.status.as_ref().map(|s| s.code),
        Primitive::GetPresenceResponse(r) => r.status.as_ref().map(|s| s.code),
        _ => None,
    }
}
