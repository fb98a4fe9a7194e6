//! The fault-injection rig: operator X (core X behind gateway X, or behind two replicas of it
//! sharing one PostgreSQL) sends messages to operator Y (gateway Y, core Y), the
//! destination found through ENUM in NSD, while a fault is injected; every message is counted
//! end to end.
//!
//! - Gateways are processes of the `ssp-gateway` binary, killed with SIGKILL and started
//!   again on the same state.
//! - Cores are in-process simulators; "killing" one aborts its server and every connection at
//!   once (what the network sees of a kill -9). Each keeps a [`Ledger`], its database, which
//!   its restarted instance takes over: the answers it gave by transaction ID (an idempotent
//!   receiver), the messages it delivered, the answers it received.
//! - Core Y answers after a delay, so that messages are in flight when a fault hits.
//!
//! A row of the table: messages accepted (gateway X said HTTP 200), refused (it did not: the
//! core keeps those), answered (the answer reached core X), delivered (core Y has it),
//! delivered twice, answered twice, lost (accepted and neither delivered nor answered with an
//! error).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ssp_gateway::certs::DevCa;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::core_sim::{CoreMode, CoreSim, CoreSimConfig, Ledger};
use crate::dnslab::{Nsd, free_port};
use crate::federation::{BaseToml, TempDir, federation_zones};
use crate::pglab::PgLab;

/// Core X's sender and core Y's recipient.
const SENDER: (&str, &str) = ("usera", "+46701234567");
const RECIPIENT: (&str, &str) = ("userb", "+4915112345678");

/// Messages sent: each text, and its transaction ID when gateway X accepted it.
type Sent = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// How long core Y takes to answer: messages are in flight when a fault hits.
const CORE_DELAY: Duration = Duration::from_millis(300);

/// The `ssp-gateway` binary next to this test's (`cargo build --bins` puts it there).
fn gateway_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary without a target directory")?
        .join("ssp-gateway");
    if !bin.exists() {
        bail!(
            "{} is missing: run `cargo build --bins` first (tests/run does)",
            bin.display()
        );
    }
    Ok(bin)
}

/// One gateway process.
pub struct GatewayProc {
    config: PathBuf,
    log: PathBuf,
    /// Its admin listener.
    pub admin: SocketAddr,
    /// Its core-facing listener.
    pub core: SocketAddr,
    /// Its peer-facing listener.
    pub peer: SocketAddr,
    child: Option<Child>,
}

impl GatewayProc {
    /// Start it and wait until it is ready.
    pub async fn start(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(gateway_bin()?)
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env(
                "RUST_LOG",
                std::env::var("SSP_GATEWAY_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if admin_get(self.admin, "/ready").await == Some(200) {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                bail!("gateway exited ({st}):\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("gateway not ready within 20 s:\n{}", self.log_text())
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGHUP (reload).
    pub fn hup(&self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-HUP", &c.id().to_string()])
                .status();
        }
    }

    /// Wait until the metric `series` reaches `min` (at most 30 s); its last value.
    pub async fn metric_reaches(&self, series: &str, min: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.metric(series).await;
            if v >= min || Instant::now() >= deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What it logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A metric's value from its admin listener (the sum of the series whose line starts with
    /// `series`).
    pub async fn metric(&self, series: &str) -> f64 {
        let Some(text) = admin_text(self.admin, "/metrics").await else {
            return 0.0;
        };
        text.lines()
            .filter(|l| l.starts_with(series))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for GatewayProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `GET path` on an admin listener: the HTTP status and body.
async fn admin_request(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((code, body))
}

async fn admin_get(addr: SocketAddr, path: &str) -> Option<u16> {
    admin_request(addr, path).await.map(|(c, _)| c)
}

async fn admin_text(addr: SocketAddr, path: &str) -> Option<String> {
    admin_request(addr, path).await.map(|(_, b)| b)
}

/// A core that can be killed and started again on the same port and ledger.
pub struct CoreSlot {
    name: &'static str,
    domain: String,
    addr: SocketAddr,
    gateway_url: String,
    ledger: Arc<Ledger>,
    delay: Duration,
    users: Vec<(String, String)>,
    generation: u32,
    /// A connection per request (spread over replicas by the balancer).
    spread: bool,
    /// The running instance (none while killed).
    sim: Arc<Mutex<Option<CoreSim>>>,
}

impl CoreSlot {
    async fn start(&mut self) -> Result<()> {
        self.generation += 1;
        let mut cfg = CoreSimConfig::new(&self.domain, CoreMode::Async);
        cfg.listen = Some(self.addr);
        cfg.ledger = Some(self.ledger.clone());
        cfg.tid_prefix = format!("{}{}", self.name, self.generation);
        cfg.answer_delay = self.delay;
        cfg.fresh_connections = self.spread;
        let sim = CoreSim::start(cfg).await?;
        for (local, msisdn) in &self.users {
            sim.add_user(local, Some(msisdn), local);
        }
        sim.set_gateway_url(&self.gateway_url);
        if let Ok(mut slot) = self.sim.lock() {
            *slot = Some(sim);
        }
        Ok(())
    }

    /// Start it again (same port, same ledger, transaction IDs of its own).
    pub async fn restart(&mut self) -> Result<()> {
        self.start().await
    }

    /// Abort it at once: server, connections, background sends.
    pub async fn kill(&mut self) {
        let sim = self.sim.lock().ok().and_then(|mut s| s.take());
        if let Some(s) = sim {
            s.shutdown().await;
        }
    }
}

/// Traffic under way.
pub struct Traffic {
    sent: Sent,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    /// Wait until `n` messages of it have been sent (accepted or not).
    pub async fn until_sent(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && self.sent() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn sent(&self) -> usize {
        self.sent.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// Wait until every send has its outcome.
    pub async fn done(self) {
        let _ = self.task.await;
    }
}

/// How operator X runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XMode {
    /// One gateway, SQLite state.
    Single,
    /// One gateway, PostgreSQL state.
    Postgres,
    /// Two replicas on one PostgreSQL, behind a round-robin balancer on the core side.
    Replicas,
}

/// Messages sent, and what became of them.
#[derive(Debug, Default, Clone)]
pub struct Row {
    /// The fault.
    pub fault: String,
    /// Sent by core X.
    pub sent: usize,
    /// Accepted by gateway X (HTTP 200).
    pub accepted: usize,
    /// Not accepted by gateway X (it was down or could not keep them) or never sent (core
    /// X was down): nothing was promised for those, and a core still holds them.
    pub refused: usize,
    /// Accepted and answered (an answer reached core X).
    pub answered: usize,
    /// Accepted and answered with an error.
    pub answered_error: usize,
    /// Those errors, by code.
    pub error_codes: std::collections::BTreeMap<u16, usize>,
    /// Delivered to core Y.
    pub delivered: usize,
    /// Delivered to core Y under two transaction IDs or more.
    pub delivered_twice: usize,
    /// Answered twice or more.
    pub answered_twice: usize,
    /// Accepted, and neither delivered nor answered with an error.
    pub lost: usize,
    /// How long it took, traffic start to the last message settled.
    pub seconds: f64,
}

impl Row {
    /// The row as a Markdown table line.
    pub fn markdown(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} s |",
            self.fault,
            self.accepted,
            self.refused,
            self.answered,
            self.answered_error,
            self.delivered,
            self.delivered_twice,
            self.answered_twice,
            self.lost,
            self.seconds
        )
    }
}

/// The table's header, in [`Row::markdown`]'s order.
pub const HEADER: &str = "| fault | accepted | not accepted | answered | of them errors | delivered | delivered twice | answered twice | lost | took |\n|---|---|---|---|---|---|---|---|---|---|";

/// The rig.
pub struct Rig {
    _dir: TempDir,
    /// ENUM.
    pub nsd: Nsd,
    /// The shared database of X (PostgreSQL modes).
    pub pg: Option<PgLab>,
    /// X's gateways (one, or two replicas).
    pub x: Vec<GatewayProc>,
    /// Y's gateway.
    pub y: GatewayProc,
    /// Core X.
    pub core_x: CoreSlot,
    /// Core Y.
    pub core_y: CoreSlot,
    balancer: Option<Balancer>,
    /// Messages sent: text and transaction ID if accepted.
    sent: Sent,
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| path.display().to_string())
}

fn key_hex() -> String {
    format!(
        "{:032x}{:032x}\n",
        rand::random::<u128>(),
        rand::random::<u128>()
    )
}

impl Rig {
    /// Build and start everything.
    pub async fn start(mode: XMode) -> Result<Rig> {
        let dir = TempDir::new("ssp-fault");
        let ca = DevCa::new("fault rig CA")?;
        let certs = dir.0.join("certs");
        ca.write_ca(&certs)?;
        for d in ["opx.example", "opy.example"] {
            ca.write_operator(&certs, d)?;
        }
        let replicas = if mode == XMode::Replicas { 2 } else { 1 };
        let x_ports: Vec<(u16, u16, u16)> = (0..replicas)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let (y_peer, y_core, y_admin) = (free_port(), free_port(), free_port());
        let zones = federation_zones(
            &[
                ("opx.example".into(), x_ports[0].0),
                ("opy.example".into(), y_peer),
            ],
            &[
                (SENDER.1.into(), "opx.example".into()),
                (RECIPIENT.1.into(), "opy.example".into()),
            ],
            1,
        );
        let nsd = Nsd::start(&zones).await?;
        let pg = match mode {
            XMode::Single => None,
            XMode::Postgres | XMode::Replicas => Some(PgLab::start().await?),
        };
        let core_x_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let core_y_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));

        // X: each replica's config in a folder of its own (SQLite next to it when alone).
        let x_dir = dir.0.join("x");
        std::fs::create_dir_all(&x_dir)?;
        write(&x_dir.join("hmac.key"), &key_hex())?;
        write(
            &x_dir.join("directory.csv"),
            &format!(
                "msisdn,core_id\n{},wv:{}@core.opx.example\n",
                SENDER.1, SENDER.0
            ),
        )?;
        let y_urls: Vec<String> = vec![format!("https://127.0.0.1:{y_peer}/")];
        let siblings: Vec<String> = x_ports
            .iter()
            .map(|(_, _, a)| format!("\"http://127.0.0.1:{a}/\""))
            .collect();
        let mut x = Vec::new();
        for (i, (peer, core, admin)) in x_ports.iter().enumerate() {
            let mut t = BaseToml {
                domain: "opx.example",
                core_domain: "core.opx.example",
                country_code: "46",
                key_file: "hmac.key",
                directory: "directory.csv",
                peer_port: *peer,
                core_port: *core,
                certs: &certs,
                core_url: &format!("http://{core_x_addr}/"),
                core_mode: "async",
            }
            .render("the fault rig");
            t = t.replace(
                "[listen]\n",
                &format!("[listen]\nadmin = \"127.0.0.1:{admin}\"\n"),
            );
            t.push_str(&common_toml(&nsd));
            if let Some(pg) = &pg {
                t.push_str(&format!("url = \"{}\"\n", pg.url()));
            }
            t.push_str(&format!(
                "\n[[peer]]\ndomain = \"opy.example\"\nurls = [{}]\n",
                y_urls
                    .iter()
                    .map(|u| format!("\"{u}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            if replicas > 1 {
                t.push_str(&format!(
                    "\n[cluster]\nreplica = {i}\nsiblings = [{}]\n",
                    siblings.join(", ")
                ));
            }
            let config = x_dir.join(format!("x{i}.toml"));
            write(&config, &t)?;
            x.push(GatewayProc {
                config,
                log: x_dir.join(format!("x{i}.log")),
                admin: SocketAddr::from(([127, 0, 0, 1], *admin)),
                core: SocketAddr::from(([127, 0, 0, 1], *core)),
                peer: SocketAddr::from(([127, 0, 0, 1], *peer)),
                child: None,
            });
        }

        // Y: one gateway, SQLite; X's replicas in failover order.
        let y_dir = dir.0.join("y");
        std::fs::create_dir_all(&y_dir)?;
        write(&y_dir.join("hmac.key"), &key_hex())?;
        write(
            &y_dir.join("directory.csv"),
            &format!(
                "msisdn,core_id\n{},wv:{}@core.opy.example\n",
                RECIPIENT.1, RECIPIENT.0
            ),
        )?;
        let mut t = BaseToml {
            domain: "opy.example",
            core_domain: "core.opy.example",
            country_code: "49",
            key_file: "hmac.key",
            directory: "directory.csv",
            peer_port: y_peer,
            core_port: y_core,
            certs: &certs,
            core_url: &format!("http://{core_y_addr}/"),
            core_mode: "async",
        }
        .render("the fault rig");
        t = t.replace(
            "[listen]\n",
            &format!("[listen]\nadmin = \"127.0.0.1:{y_admin}\"\n"),
        );
        t.push_str(&common_toml(&nsd));
        let x_urls: Vec<String> = x_ports
            .iter()
            .map(|(p, _, _)| format!("\"https://127.0.0.1:{p}/\""))
            .collect();
        t.push_str(&format!(
            "\n[[peer]]\ndomain = \"opx.example\"\nurls = [{}]\n",
            x_urls.join(", ")
        ));
        let y_config = y_dir.join("y.toml");
        write(&y_config, &t)?;
        let mut y = GatewayProc {
            config: y_config,
            log: y_dir.join("y.log"),
            admin: SocketAddr::from(([127, 0, 0, 1], y_admin)),
            core: SocketAddr::from(([127, 0, 0, 1], y_core)),
            peer: SocketAddr::from(([127, 0, 0, 1], y_peer)),
            child: None,
        };

        // Core X posts to its gateway, or to the balancer in front of the replicas.
        let balancer = if replicas > 1 {
            Some(Balancer::start(x.iter().map(|g| g.core).collect()).await?)
        } else {
            None
        };
        let x_entry = balancer.as_ref().map_or(x[0].core, |b| b.addr);
        let mut core_x = CoreSlot {
            name: "x",
            domain: "core.opx.example".into(),
            addr: core_x_addr,
            gateway_url: format!("http://{x_entry}/"),
            ledger: Arc::default(),
            delay: Duration::ZERO,
            users: vec![(SENDER.0.into(), SENDER.1.into())],
            generation: 0,
            spread: replicas > 1,
            sim: Arc::default(),
        };
        let mut core_y = CoreSlot {
            name: "y",
            domain: "core.opy.example".into(),
            addr: core_y_addr,
            gateway_url: format!("http://127.0.0.1:{y_core}/"),
            ledger: Arc::default(),
            delay: CORE_DELAY,
            users: vec![(RECIPIENT.0.into(), RECIPIENT.1.into())],
            generation: 0,
            spread: false,
            sim: Arc::default(),
        };
        core_x.start().await?;
        core_y.start().await?;
        for g in &mut x {
            g.start().await?;
        }
        y.start().await?;
        Ok(Rig {
            _dir: dir,
            nsd,
            pg,
            x,
            y,
            core_x,
            core_y,
            balancer,
            sent: Arc::default(),
        })
    }

    /// Send `n` messages from core X, one every `gap`, each on a task of its own (a message
    /// sent while core X is down is not sent: counted as refused).
    pub fn traffic(&self, label: &str, n: usize, gap: Duration) -> Traffic {
        let (label, slot, sent) = (label.to_owned(), self.core_x.sim.clone(), self.sent.clone());
        let mine: Sent = Arc::default();
        let counted = mine.clone();
        let task = tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..n {
                let text = format!("{label}-{i}");
                let sim = slot.lock().ok().and_then(|s| s.clone());
                let (sent, counted) = (sent.clone(), counted.clone());
                tasks.spawn(async move {
                    let tid = match sim {
                        Some(s) => s
                            .send_accepted(SENDER.0, &format!("wv:{}", RECIPIENT.1), &text)
                            .await
                            .ok(),
                        None => None,
                    };
                    for v in [&sent, &counted] {
                        if let Ok(mut v) = v.lock() {
                            v.push((text.clone(), tid.clone()));
                        }
                    }
                });
                tokio::time::sleep(gap).await;
            }
            while tasks.join_next().await.is_some() {}
        });
        Traffic { sent: mine, task }
    }

    /// Count what became of every message sent so far.
    pub fn count(&self, fault: &str) -> Row {
        let sent = self.sent.lock().map(|v| v.clone()).unwrap_or_default();
        let (lx, ly) = (&self.core_x.ledger, &self.core_y.ledger);
        let mut row = Row {
            fault: fault.to_owned(),
            sent: sent.len(),
            ..Row::default()
        };
        for (text, tid) in &sent {
            let Some(tid) = tid else {
                row.refused += 1;
                continue;
            };
            row.accepted += 1;
            let answers = lx.answers(tid);
            let deliveries = ly.deliveries(text);
            // Final answers: "accepted for delivery" comes first, then nothing more (the
            // outcome comes as a report, when asked for); an error answer is final.
            let error = answers.iter().any(|c| !(200..300).contains(c));
            if !answers.is_empty() {
                row.answered += 1;
            }
            if error {
                row.answered_error += 1;
                if let Some(c) = answers.iter().find(|c| !(200..300).contains(*c)) {
                    *row.error_codes.entry(*c).or_default() += 1;
                }
            }
            if answers.len() > 1 {
                row.answered_twice += 1;
            }
            if !deliveries.is_empty() {
                row.delivered += 1;
            }
            let distinct: std::collections::HashSet<&String> = deliveries.iter().collect();
            if distinct.len() > 1 {
                row.delivered_twice += 1;
            }
            if deliveries.is_empty() && !error {
                row.lost += 1;
            }
        }
        row
    }

    /// Whether every accepted message has settled: answered, and delivered or answered with
    /// an error.
    pub fn settled(&self) -> bool {
        let r = self.count("");
        r.answered == r.accepted && r.lost == 0
    }

    /// Wait until every accepted message has settled, at most `within`.
    pub async fn settle(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.settled() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.settled()
    }

    /// Logs of every gateway, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, g) in self.x.iter().enumerate() {
            out.push_str(&format!("--- gateway x{i}\n{}\n", tail(&g.log_text(), 400)));
        }
        out.push_str(&format!(
            "--- gateway y\n{}\n",
            tail(&self.y.log_text(), 400)
        ));
        out
    }

    /// Stop everything.
    pub async fn stop(mut self) {
        for g in &mut self.x {
            g.kill();
        }
        self.y.kill();
        self.core_x.kill().await;
        self.core_y.kill().await;
        if let Some(b) = self.balancer.take() {
            b.stop();
        }
        self.nsd.stop();
        if let Some(mut pg) = self.pg.take() {
            pg.stop().await;
        }
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Settings both operators share: quick deadlines and retries (so that a row takes seconds),
/// one user allowed the rig's whole rate (it sends every message),
/// ENUM from the rig's NSD with a short TTL and no stale answers (so that a DNS outage is
/// felt), leases short enough that a dead replica's work is taken over within seconds. Ends
/// inside `[store]`, so the caller may add its `url`.
fn common_toml(nsd: &Nsd) -> String {
    format!(
        "\n[timeouts]\nrequest = \"3s\"\nconnect = \"1s\"\n\
         \n[resolver]\nnameservers = [\"{}\"]\ntimeout = \"1s\"\nstale_max = \"0s\"\nhold_down = \"1s\"\n\
         \n[[resolver.enum]]\nsuffix = \"e164.arpa\"\n\
         \n[policy]\noriginator_rate = 1000\noriginator_burst = 1000\n\
         \n[store]\nlease = \"3s\"\nretry_min = \"250ms\"\nretry_max = \"1s\"\nqueue = \"accept\"\n",
        nsd.addr
    )
}

/// A round-robin TCP balancer on the core side of X's replicas (what a load balancer or a
/// Kubernetes Service does): each connection to the next replica that accepts it.
struct Balancer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    async fn start(backends: Vec<SocketAddr>) -> Result<Balancer> {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        let addr = l.local_addr()?;
        let task = tokio::spawn(async move {
            let mut next = 0usize;
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = l.accept().await else {
                    continue;
                };
                let order: Vec<SocketAddr> = (0..backends.len())
                    .map(|k| backends[(next + k) % backends.len()])
                    .collect();
                next = next.wrapping_add(1);
                conns.spawn(async move {
                    for b in order {
                        if let Ok(mut out) = TcpStream::connect(b).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                            return;
                        }
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Ok(Balancer { addr, task })
    }

    fn stop(self) {
        self.task.abort();
    }
}

/// Print a row (and append it to `$SSP_FAULT_TABLE`, when set).
pub fn record(row: &Row) {
    println!(
        "{HEADER}\n{}\nerror codes: {:?}",
        row.markdown(),
        row.error_codes
    );
    if let Ok(path) = std::env::var("SSP_FAULT_TABLE") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{}", row.markdown());
        }
    }
}

/// Texts of the messages sent, by outcome (for a failure message).
pub fn outcomes(rig: &Rig) -> HashMap<&'static str, Vec<String>> {
    let sent = rig.sent.lock().map(|v| v.clone()).unwrap_or_default();
    let mut out: HashMap<&'static str, Vec<String>> = HashMap::new();
    for (text, tid) in sent {
        let Some(tid) = tid else { continue };
        let answers = rig.core_x.ledger.answers(&tid);
        let delivered = rig.core_y.ledger.deliveries(&text);
        let k = match (answers.is_empty(), delivered.is_empty()) {
            (true, true) => "neither answered nor delivered",
            (true, false) => "delivered, not answered",
            (false, true) => "answered, not delivered",
            (false, false) => continue,
        };
        out.entry(k)
            .or_default()
            .push(format!("{text} ({tid}) {answers:?}"));
    }
    out
}
