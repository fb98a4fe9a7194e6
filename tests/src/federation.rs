//! A federation of simulated operators on loopback: for each, a core simulator and a gateway
//! started from a real TOML config file, with certificates from one development CA made at
//! test time. Every SSP body a gateway exchanges is recorded (before encryption) so tests can
//! assert what crossed between operators.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ssp_gateway::app::{self, PreBound, Running, StartOptions};
use ssp_gateway::certs::DevCa;
use ssp_gateway::config::Config;
use ssp_gateway::links::{TapDir, WireTap};

use crate::core_sim::{CoreMode, CoreSim, CoreSimConfig};
use crate::dnslab::{InProcDns, Nsd, Zone, naptr};

/// One operator to set up.
#[derive(Debug, Clone)]
pub struct OperatorSpec {
    /// Public domain, e.g. `opx.example`.
    pub domain: String,
    /// The core's internal domain, e.g. `core.opx.example`.
    pub core_domain: String,
    /// Country code of its numbering plan.
    pub country_code: String,
    /// Users: (local name, MSISDN, friendly name).
    pub users: Vec<(String, String, String)>,
    /// How its core answers.
    pub core_mode: CoreMode,
    /// How its gateway wants peers' answers, and answers them (`async` or `sync`).
    pub peer_mode: &'static str,
    /// Extra TOML appended to its config (routes, resolver, ...).
    pub extra_toml: String,
    /// Whether its gateway gets `[[peer]]` entries for the others (static peering).
    pub static_peering: bool,
    /// Extra TOML lines inside each of its `[[peer]]` entries (e.g. `rate = 1`).
    pub peer_toml: String,
    /// How long its core waits before it answers (asynchronous cores).
    pub answer_delay: std::time::Duration,
}

impl OperatorSpec {
    /// An operator `op<letter>.example` with core `core.op<letter>.example`.
    pub fn new(letter: char, country_code: &str) -> Self {
        OperatorSpec {
            domain: format!("op{letter}.example"),
            core_domain: format!("core.op{letter}.example"),
            country_code: country_code.to_owned(),
            users: Vec::new(),
            core_mode: CoreMode::Async,
            peer_mode: "async",
            extra_toml: String::new(),
            static_peering: true,
            peer_toml: String::new(),
            answer_delay: std::time::Duration::ZERO,
        }
    }

    /// Add a user.
    pub fn user(mut self, local: &str, msisdn: &str, name: &str) -> Self {
        self.users.push((local.into(), msisdn.into(), name.into()));
        self
    }
}

/// One body seen by a gateway's wire tap.
#[derive(Debug, Clone)]
pub struct WireRecord {
    /// The gateway (its public domain).
    pub gateway: String,
    /// Sent or received.
    pub dir: TapDir,
    /// The other party: `core`, a peer domain, or `peer-listener`.
    pub party: String,
    /// The SSP body.
    pub body: String,
}

/// A running operator.
pub struct Operator {
    /// What it was made from.
    pub spec: OperatorSpec,
    /// Its core.
    pub core: CoreSim,
    /// Its gateway (None after [`Federation::stop_gateway`]).
    pub gateway: Option<Running>,
    /// Its config file.
    pub config_path: PathBuf,
    /// Its peer-facing URL.
    pub peer_url: String,
    /// Its directory file.
    pub directory_path: PathBuf,
}

/// A temporary directory removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty directory under the system temp dir.
    pub fn new(prefix: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "{prefix}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Which DNS server the federation's gateways resolve with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsKind {
    /// A real NSD started by the test.
    Nsd,
    /// An in-process hickory-server.
    InProc,
}

/// The DNS of a federation.
pub enum FedDns {
    /// NSD (can be reloaded, frozen, stopped).
    Nsd(Nsd),
    /// In process.
    InProc(InProcDns),
}

impl FedDns {
    /// Its address.
    pub fn addr(&self) -> std::net::SocketAddr {
        match self {
            FedDns::Nsd(n) => n.addr,
            FedDns::InProc(d) => d.addr,
        }
    }
}

/// Zones for a federation: SRV `_imps-server._tcp` for each operator's gateway, and ENUM
/// `E2U+im`/`E2U+pres` NAPTRs placing each number (`+E164`, domain) at an operator, with `ttl`.
pub fn federation_zones(
    gateways: &[(String, u16)],
    numbers: &[(String, String)],
    ttl: u32,
) -> Vec<Zone> {
    let mut enum_records = Vec::new();
    for (number, domain) in numbers {
        let digits: String = number.chars().filter(char::is_ascii_digit).collect();
        enum_records.push(naptr(
            number,
            "e164.arpa",
            100,
            10,
            "E2U+im",
            &format!("im:{digits}@{domain}"),
            ttl,
        ));
        enum_records.push(naptr(
            number,
            "e164.arpa",
            100,
            20,
            "E2U+pres",
            &format!("pres:{digits}@{domain}"),
            ttl,
        ));
    }
    let mut domain_records = Vec::new();
    for (domain, port) in gateways {
        let host = domain.trim_end_matches(".example");
        domain_records.push(format!(
            "_imps-server._tcp.{host} {ttl} IN SRV 10 0 {port} gw.{host}"
        ));
        domain_records.push(format!("gw.{host} {ttl} IN A 127.0.0.1"));
    }
    vec![
        Zone::new("e164.arpa", ttl.min(60), &enum_records),
        Zone::new("example", ttl.min(60), &domain_records),
    ]
}

/// The operators, their CA and the wire log.
pub struct Federation {
    /// Operators in the order given.
    pub ops: Vec<Operator>,
    /// Everything the gateways exchanged.
    pub wire: Arc<Mutex<Vec<WireRecord>>>,
    /// The CA that issued every operator certificate.
    pub ca: DevCa,
    /// Where configs and certificates live.
    pub dir: TempDir,
    /// The DNS the gateways resolve with, if any.
    pub dns: Option<FedDns>,
    /// The clock of every gateway's resolver (manual: tests move it past TTLs).
    pub clock: ssp_gateway::resolve::Clock,
}

fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

fn port(l: &TcpListener) -> u16 {
    l.local_addr().unwrap().port()
}

/// The sections every test gateway config starts with: `[gateway]`, `[directory]`,
/// `[listen]`, `[tls]` (certificates of the test CA in `certs`) and `[core]` (allowlisted on
/// loopback). One template for the federation and the load ladder.
#[derive(Debug, Clone)]
pub struct BaseToml<'a> {
    /// Public domain.
    pub domain: &'a str,
    /// The core's domain.
    pub core_domain: &'a str,
    /// Country code.
    pub country_code: &'a str,
    /// HMAC key file.
    pub key_file: &'a str,
    /// Directory CSV file.
    pub directory: &'a str,
    /// Peer listener port.
    pub peer_port: u16,
    /// Core listener port.
    pub core_port: u16,
    /// Where `ca.pem` and `<domain>/{cert,key}.pem` are.
    pub certs: &'a Path,
    /// The core's URL.
    pub core_url: &'a str,
    /// `async` or `sync`.
    pub core_mode: &'a str,
}

impl BaseToml<'_> {
    /// The sections, with a first comment naming `by`.
    pub fn render(&self, by: &str) -> String {
        format!(
            r#"# Written by {by} for {domain}.
[gateway]
public_domain = "{domain}"
core_domains = ["{core}"]
country_code = "{cc}"
hmac_key_file = "{key}"

[directory]
file = "{directory}"

[listen]
peer = "127.0.0.1:{peer_port}"
core = "127.0.0.1:{core_port}"

[tls]
cert = "{certs}/{domain}/cert.pem"
key = "{certs}/{domain}/key.pem"
trust = ["{certs}/ca.pem"]

[core]
url = "{core_url}"
mode = "{core_mode}"
auth = "allowlist"
allow = ["127.0.0.1/32"]
"#,
            domain = self.domain,
            core = self.core_domain,
            cc = self.country_code,
            key = self.key_file,
            directory = self.directory,
            peer_port = self.peer_port,
            core_port = self.core_port,
            certs = self.certs.display(),
            core_url = self.core_url,
            core_mode = self.core_mode,
        )
    }
}

/// The config of one operator's gateway.
pub fn gateway_toml(
    spec: &OperatorSpec,
    peers: &[(String, String, &str)],
    cert_dir: &Path,
    core_url: &str,
    peer_port: u16,
    core_port: u16,
) -> String {
    let mut t = BaseToml {
        domain: &spec.domain,
        core_domain: &spec.core_domain,
        country_code: &spec.country_code,
        key_file: "hmac.key",
        directory: "directory.csv",
        peer_port,
        core_port,
        certs: cert_dir,
        core_url,
        core_mode: match spec.core_mode {
            CoreMode::Async => "async",
            CoreMode::Sync => "sync",
        },
    }
    .render("the test federation");
    t.push_str("\n[timeouts]\nrequest = \"4s\"\nconnect = \"1s\"\n\n");
    for (domain, url, mode) in peers {
        let _ = writeln!(
            t,
            "[[peer]]\ndomain = \"{domain}\"\nurls = [\"{url}\"]\nmode = \"{mode}\"\n{}",
            spec.peer_toml
        );
    }
    t.push_str(&spec.extra_toml);
    t
}

impl Federation {
    /// Start every operator, peered with each other by static configuration.
    pub async fn start(specs: Vec<OperatorSpec>) -> Federation {
        Federation::start_with(specs, |_| {}).await
    }

    /// Like [`Federation::start`], with a hook to adjust each operator's config text.
    pub async fn start_with(specs: Vec<OperatorSpec>, adjust: impl Fn(&mut String)) -> Federation {
        Federation::start_full(specs, None, |_| Vec::new(), adjust).await
    }

    /// Operators that find each other through DNS: `zones` gets each gateway's (domain, peer
    /// port) and returns the zones to serve; every gateway gets a `[resolver]` for them and
    /// accepts peers it has no static entry for (their certificates come from the same CA).
    pub async fn start_dns(
        specs: Vec<OperatorSpec>,
        kind: DnsKind,
        zones: impl Fn(&[(String, u16)]) -> Vec<Zone>,
    ) -> Federation {
        Federation::start_full(specs, Some(kind), zones, |_| {}).await
    }

    /// Like [`Federation::start_dns`], with a hook to adjust each operator's config text (it
    /// ends in the `[policy]` section).
    pub async fn start_dns_with(
        specs: Vec<OperatorSpec>,
        kind: DnsKind,
        zones: impl Fn(&[(String, u16)]) -> Vec<Zone>,
        adjust: impl Fn(&mut String),
    ) -> Federation {
        Federation::start_full(specs, Some(kind), zones, adjust).await
    }

    async fn start_full(
        specs: Vec<OperatorSpec>,
        dns_kind: Option<DnsKind>,
        zones: impl Fn(&[(String, u16)]) -> Vec<Zone>,
        adjust: impl Fn(&mut String),
    ) -> Federation {
        init_test_logs();
        let dir = TempDir::new("ssp-fed");
        let ca = DevCa::new("federation test CA").unwrap();
        let certs = dir.0.join("certs");
        ca.write_ca(&certs).unwrap();
        for s in &specs {
            ca.write_operator(&certs, &s.domain).unwrap();
        }
        let wire = Arc::new(Mutex::new(Vec::new()));
        // Bind every listener first: each config can then name every other's real port.
        let listeners: Vec<(TcpListener, TcpListener)> =
            specs.iter().map(|_| (bind(), bind())).collect();
        let gateways: Vec<(String, u16)> = specs
            .iter()
            .zip(&listeners)
            .map(|(s, (pl, _))| (s.domain.clone(), port(pl)))
            .collect();
        let dns = match dns_kind {
            Some(DnsKind::Nsd) => Some(FedDns::Nsd(Nsd::start(&zones(&gateways)).await.unwrap())),
            Some(DnsKind::InProc) => Some(FedDns::InProc(
                InProcDns::start(&zones(&gateways)).await.unwrap(),
            )),
            None => None,
        };
        let mut ops = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let core = CoreSim::start(CoreSimConfig {
                answer_delay: spec.answer_delay,
                ..CoreSimConfig::new(&spec.core_domain, spec.core_mode)
            })
            .await
            .unwrap();
            for (local, msisdn, name) in &spec.users {
                core.add_user(local, Some(msisdn), name);
            }
            let op_dir = dir.0.join(&spec.domain);
            std::fs::create_dir_all(&op_dir).unwrap();
            let directory_path = op_dir.join("directory.csv");
            std::fs::write(&directory_path, core.directory_csv()).unwrap();
            std::fs::write(
                op_dir.join("hmac.key"),
                format!(
                    "{:032x}{:032x}\n",
                    rand::random::<u128>(),
                    rand::random::<u128>()
                ),
            )
            .unwrap();
            let peers: Vec<(String, String, &str)> = if spec.static_peering {
                specs
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(j, s)| {
                        (
                            s.domain.clone(),
                            format!("https://127.0.0.1:{}/", port(&listeners[j].0)),
                            s.peer_mode,
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let (pl, cl) = &listeners[i];
            let mut text = gateway_toml(spec, &peers, &certs, &core.url(), port(pl), port(cl));
            if let Some(d) = &dns {
                let _ = write!(
                    text,
                    "\n[resolver]\nnameservers = [\"{}\"]\ntimeout = \"2s\"\n\n[[resolver.enum]]\nsuffix = \"e164.arpa\"\n\n[policy]\naccept_unlisted_peers = true\n",
                    d.addr()
                );
            }
            adjust(&mut text);
            let config_path = op_dir.join("gateway.toml");
            std::fs::write(&config_path, text).unwrap();
            core.set_gateway_url(&format!("http://127.0.0.1:{}/", port(cl)));
            ops.push(Operator {
                spec: spec.clone(),
                core,
                gateway: None,
                peer_url: format!("https://127.0.0.1:{}/", port(pl)),
                config_path,
                directory_path,
            });
        }
        let mut fed = Federation {
            ops,
            wire,
            ca,
            dir,
            dns,
            clock: ssp_gateway::resolve::Clock::manual(),
        };
        for (i, (pl, cl)) in listeners.into_iter().enumerate() {
            fed.start_gateway_on(i, Some(pl), Some(cl)).await;
        }
        fed
    }

    fn tap_for(&self, domain: &str) -> WireTap {
        let wire = self.wire.clone();
        let domain = domain.to_owned();
        Arc::new(move |dir, party: &str, body: &str| {
            if let Ok(mut w) = wire.lock() {
                w.push(WireRecord {
                    gateway: domain.clone(),
                    dir,
                    party: party.to_owned(),
                    body: body.to_owned(),
                });
            }
        })
    }

    async fn start_gateway_on(
        &mut self,
        i: usize,
        peer: Option<TcpListener>,
        core: Option<TcpListener>,
    ) {
        let cfg = Config::load(&self.ops[i].config_path).unwrap();
        let opts = StartOptions {
            tap: Some(self.tap_for(&self.ops[i].spec.domain)),
            resolver: None,
            clock: Some(self.clock.clone()),
            listeners: PreBound {
                peer,
                core,
                admin: None,
            },
        };
        let running = app::start(cfg, opts).await.unwrap();
        self.ops[i].gateway = Some(running);
    }

    /// Replace operator `i`'s directory file and reload its gateway (as SIGHUP would).
    pub fn set_directory(&self, i: usize, csv: &str) {
        std::fs::write(&self.ops[i].directory_path, csv).unwrap();
        self.ops[i].gateway.as_ref().unwrap().reload().unwrap();
    }

    /// Each gateway's (public domain, peer port), as [`federation_zones`] takes them.
    pub fn gateway_ports(&self) -> Vec<(String, u16)> {
        self.ops
            .iter()
            .map(|o| {
                let port = o
                    .peer_url
                    .trim_end_matches('/')
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                (o.spec.domain.clone(), port)
            })
            .collect()
    }

    /// Replace the zones the DNS serves and reload it.
    pub async fn reload_dns(&mut self, zones: &[Zone]) -> anyhow::Result<()> {
        match &mut self.dns {
            Some(FedDns::Nsd(n)) => n.reload(zones).await,
            Some(FedDns::InProc(d)) => d.reload(zones).await,
            None => anyhow::bail!("this federation has no DNS"),
        }
    }

    /// Bodies gateway `from` sent to `to` (a peer domain) containing `needle`.
    pub fn sent(&self, from: &str, to: &str, needle: &str) -> Vec<String> {
        self.wire
            .lock()
            .unwrap()
            .iter()
            .filter(|r| {
                r.gateway == from
                    && r.dir == TapDir::Out
                    && r.party == to
                    && r.body.contains(needle)
            })
            .map(|r| r.body.clone())
            .collect()
    }

    /// Bodies gateway `at` received from peers containing `needle`.
    pub fn received_from_peers(&self, at: &str, needle: &str) -> Vec<String> {
        self.wire
            .lock()
            .unwrap()
            .iter()
            .filter(|r| {
                r.gateway == at
                    && r.dir == TapDir::In
                    && r.party == "peer-listener"
                    && r.body.contains(needle)
            })
            .map(|r| r.body.clone())
            .collect()
    }

    /// A DNS counter of operator `i`'s gateway.
    pub fn dns_count(&self, i: usize, rtype: &str, result: &str) -> u64 {
        let g = &self.ops[i].gateway.as_ref().unwrap().gateway;
        ssp_gateway::ops::metrics::Metrics::counter_value(
            &g.metrics().dns_lookups,
            &[rtype, result],
        )
    }

    /// Stop operator `i`'s gateway (its core keeps running).
    pub async fn stop_gateway(&mut self, i: usize) {
        if let Some(g) = self.ops[i].gateway.take() {
            g.shutdown().await;
        }
    }

    /// Start operator `i`'s gateway again (after [`Federation::stop_gateway`]), on its
    /// configured ports and with its state store as it was left.
    pub async fn restart_gateway(&mut self, i: usize) {
        self.start_gateway_on(i, None, None).await;
    }

    /// The operator with this domain.
    pub fn op(&self, domain: &str) -> &Operator {
        self.ops.iter().find(|o| o.spec.domain == domain).unwrap()
    }

    /// Bodies exchanged between gateways (not with cores).
    pub fn between_gateways(&self) -> Vec<WireRecord> {
        self.wire
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.party != "core")
            .cloned()
            .collect()
    }

    /// Panic if any body exchanged between gateways names a core domain or a core user ID.
    pub fn assert_topology_hidden(&self) {
        let records = self.between_gateways();
        assert!(!records.is_empty(), "nothing crossed between gateways");
        for r in &records {
            let lower = r.body.to_ascii_lowercase();
            for op in &self.ops {
                assert!(
                    !lower.contains(&op.spec.core_domain),
                    "core domain {} crossed between gateways ({} {:?} {}):\n{}",
                    op.spec.core_domain,
                    r.gateway,
                    r.dir,
                    r.party,
                    r.body
                );
                for (local, _, _) in &op.spec.users {
                    let core_id = format!("wv:{local}@");
                    assert!(
                        !lower.contains(&core_id),
                        "core user ID {core_id}… crossed between gateways:\n{}",
                        r.body
                    );
                }
            }
        }
    }

    /// Stop everything: all gateways drain at once (answers in flight between them still
    /// arrive), then the cores stop.
    pub async fn shutdown(mut self) {
        let gateways: Vec<Running> = self
            .ops
            .iter_mut()
            .filter_map(|o| o.gateway.take())
            .collect();
        // All drain together first: answers between gateways still in flight get through.
        let gateways: Vec<Arc<Running>> = gateways.into_iter().map(Arc::new).collect();
        let drains: Vec<_> = gateways
            .iter()
            .map(|g| {
                let g = g.clone();
                tokio::spawn(async move { g.drain().await })
            })
            .collect();
        for d in drains {
            let _ = d.await;
        }
        for g in gateways {
            if let Ok(g) = Arc::try_unwrap(g) {
                g.shutdown().await;
            }
        }
        for op in self.ops.drain(..) {
            op.core.shutdown().await;
        }
    }
}

/// An SSP client as a peer gateway would be: TLS trusting `trust`, presenting a certificate for
/// `identity`'s domain issued by its CA (none: no client certificate), and expecting the
/// server to be `server_name`.
pub fn peer_client(
    trust: &DevCa,
    identity: Option<(&DevCa, &str)>,
    server_name: &str,
) -> ssp_gateway::links::http::SspClient {
    use rustls_pki_types::pem::PemObject;
    use ssp_gateway::links::http::{Connector, SspClient};
    use ssp_gateway::tls::{self, ServerTrust};
    use std::time::Duration;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trust.cert_der()).unwrap();
    let ident = identity.map(|(ca, domain)| {
        let issued = ca.issue(domain).unwrap();
        let key =
            rustls_pki_types::PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
        (vec![issued.der], key)
    });
    let cfg = tls::client_config(ServerTrust::Roots(Arc::new(roots)), ident, false).unwrap();
    let name = rustls_pki_types::ServerName::try_from(server_name.to_owned()).unwrap();
    SspClient::new(
        Connector::new(
            Some((Arc::new(cfg), name)),
            Duration::from_secs(2),
            Duration::from_secs(2),
        ),
        Duration::from_secs(5),
        1 << 20,
    )
}

/// Logs for tests, off unless `RUST_LOG` is set (e.g. `RUST_LOG=ssp_gateway=debug`).
pub fn init_test_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}
