//! A DNS lab on loopback: zones written as master files, served either by an in-process
//! hickory-server (unit tests, the demo) or by a real NSD started by PID on a high port
//! (integration tests). NSD can be reloaded (SIGHUP), frozen (SIGSTOP) and stopped, so tests
//! can change zones and simulate outages.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_server::Server;
use hickory_server::proto::rr::{LowerName, Name};
use hickory_server::store::file::{FileConfig, FileZoneHandler};
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};

use crate::federation::TempDir;

/// One zone: its origin and master-file text.
#[derive(Debug, Clone)]
pub struct Zone {
    /// Origin, e.g. `e164.arpa.`.
    pub origin: String,
    /// Master-file text (with `$ORIGIN`/`$TTL` as needed).
    pub text: String,
    /// A number unique to this zone text: `v<version>.zone-version.<origin>` has an A record,
    /// so a reload can be confirmed by asking for it.
    pub version: u64,
}

/// Zone versions: unique within the process (and increasing).
static VERSION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Zone {
    /// A zone with a SOA (negative TTL `neg`) and NS, then `records` (one per line).
    pub fn new(origin: &str, neg: u32, records: &[String]) -> Zone {
        let origin = if origin.ends_with('.') {
            origin.to_owned()
        } else {
            format!("{origin}.")
        };
        let mut text = format!(
            "$ORIGIN {origin}\n$TTL 300\n@ {neg} IN SOA ns1.lab.invalid. hostmaster.lab.invalid. ( {serial} 3600 600 604800 {neg} )\n@ 3600 IN NS ns1.lab.invalid.\n",
            serial = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(1)
                % 4_000_000_000
        );
        for r in records {
            text.push_str(r);
            text.push('\n');
        }
        let version = VERSION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        text.push_str(&marker(version));
        Zone {
            origin,
            text,
            version,
        }
    }

    /// Add a record (one master-file line) as a new version of the zone, so a reload is
    /// confirmed only once the server serves it. (Editing `text` directly keeps the version,
    /// and a reload would then return while the old text is still served.)
    pub fn add(&mut self, record: &str) {
        self.text = self.text.replace(&marker(self.version), "");
        self.text.push_str(record);
        self.text.push('\n');
        self.version = VERSION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.text.push_str(&marker(self.version));
    }
}

fn marker(version: u64) -> String {
    format!("v{version}.zone-version 0 IN A 127.0.0.1\n")
}

/// The ENUM owner name of an E.164 number under `suffix` (`+4915…`, `e164.arpa`).
pub fn enum_owner(number: &str, suffix: &str) -> String {
    let digits: String = number.chars().filter(char::is_ascii_digit).rev().collect();
    let dotted: Vec<String> = digits.chars().map(|c| c.to_string()).collect();
    format!("{}.{}.", dotted.join("."), suffix.trim_end_matches('.'))
}

/// A NAPTR line (`E2U+im` etc.) mapping `number` to `uri`, for a zone whose origin is
/// `suffix`. Backslashes are written as the master file needs them.
pub fn naptr(
    number: &str,
    suffix: &str,
    order: u16,
    pref: u16,
    service: &str,
    uri: &str,
    ttl: u32,
) -> String {
    format!(
        "{} {ttl} IN NAPTR {order} {pref} \"u\" \"{service}\" \"!^.*$!{uri}!\" .",
        enum_owner(number, suffix)
    )
}

pub use crate::ports::free_port;

/// A name server that answers SERVFAIL to every query (UDP on loopback), as a broken
/// delegation looks to a resolver.
pub struct ServFail {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ServFail {
    /// Start it on a free loopback port.
    pub async fn start() -> anyhow::Result<ServFail> {
        use hickory_server::proto::op::{Message, ResponseCode};
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let addr = sock.local_addr()?;
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut r =
                    Message::error_msg(q.metadata.id, q.metadata.op_code, ResponseCode::ServFail);
                r.metadata.recursion_desired = q.metadata.recursion_desired;
                r.queries = q.queries;
                if let Ok(b) = r.to_vec() {
                    let _ = sock.send_to(&b, from).await;
                }
            }
        });
        Ok(ServFail { addr, task })
    }
}

impl Drop for ServFail {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An in-process authoritative server (hickory-server).
pub struct InProcDns {
    /// Address (UDP and TCP).
    pub addr: SocketAddr,
    server: Server<Catalog>,
    _dir: TempDir,
}

impl InProcDns {
    /// Serve `zones` on 127.0.0.1 (UDP and TCP on one free port).
    pub async fn start(zones: &[Zone]) -> anyhow::Result<InProcDns> {
        let (udp, tcp) = loop {
            let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            if let Ok(udp) = tokio::net::UdpSocket::bind(tcp.local_addr()?).await {
                break (udp, tcp);
            }
        };
        Self::serve(zones, udp, tcp)
    }

    /// Serve new zones on the same address, as a reload of an authoritative server would.
    pub async fn reload(&mut self, zones: &[Zone]) -> anyhow::Result<()> {
        self.server.shutdown_gracefully().await?;
        // The sockets are closed; take the same port again (tokio sets SO_REUSEADDR).
        let tcp = tokio::net::TcpListener::bind(self.addr).await?;
        let udp = tokio::net::UdpSocket::bind(self.addr).await?;
        *self = Self::serve(zones, udp, tcp)?;
        Ok(())
    }

    fn serve(
        zones: &[Zone],
        udp: tokio::net::UdpSocket,
        tcp: tokio::net::TcpListener,
    ) -> anyhow::Result<InProcDns> {
        let dir = TempDir::new("ssp-dns");
        let mut catalog = Catalog::new();
        for z in zones {
            let path = dir.0.join(format!("{}zone", z.origin));
            std::fs::write(&path, &z.text)?;
            let origin = Name::from_ascii(&z.origin)?;
            let handler = FileZoneHandler::try_from_config(
                origin.clone(),
                ZoneType::Primary,
                AxfrPolicy::Deny,
                None,
                &FileConfig { zone_path: path },
            )
            .map_err(|e| anyhow::anyhow!("zone {}: {e}", z.origin))?;
            catalog.upsert(LowerName::from(origin), vec![Arc::new(handler)]);
        }
        let mut server = Server::new(catalog);
        let addr = tcp.local_addr()?;
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 4096);
        Ok(InProcDns {
            addr,
            server,
            _dir: dir,
        })
    }

    /// Stop serving.
    pub async fn stop(mut self) {
        let _ = self.server.shutdown_gracefully().await;
    }
}

/// A real NSD started by the test.
pub struct Nsd {
    /// Address (UDP and TCP).
    pub addr: SocketAddr,
    child: Option<Child>,
    dir: TempDir,
    zones: Vec<Zone>,
}

impl Nsd {
    /// Whether NSD is installed (`tests/run` installs it).
    pub fn available() -> bool {
        Command::new("nsd").arg("-v").output().is_ok()
    }

    /// Start NSD serving `zones` on a free loopback port; wait until it answers.
    pub async fn start(zones: &[Zone]) -> anyhow::Result<Nsd> {
        let dir = TempDir::new("ssp-nsd");
        let port = free_port();
        let mut nsd = Nsd {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child: None,
            dir,
            zones: zones.to_vec(),
        };
        nsd.write_zones()?;
        let d = nsd.dir.0.display().to_string();
        let mut conf = format!(
            "server:\n  ip-address: 127.0.0.1@{port}\n  do-ip6: no\n  username: \"\"\n  chroot: \"\"\n  database: \"\"\n  zonesdir: \"{d}/zones\"\n  zonelistfile: \"{d}/zone.list\"\n  xfrdfile: \"{d}/xfrd.state\"\n  xfrdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  logfile: \"{d}/nsd.log\"\n  server-count: 1\n  verbosity: 2\n  hide-version: yes\nremote-control:\n  control-enable: no\n"
        );
        for z in zones {
            conf.push_str(&format!(
                "zone:\n  name: \"{}\"\n  zonefile: \"{}zone\"\n",
                z.origin, z.origin
            ));
        }
        let conf_path = nsd.dir.0.join("nsd.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new("nsd")
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        nsd.child = Some(child);
        nsd.wait_ready(Duration::from_secs(10)).await?;
        Ok(nsd)
    }

    fn write_zones(&self) -> anyhow::Result<()> {
        let zdir = self.dir.0.join("zones");
        std::fs::create_dir_all(&zdir)?;
        for z in &self.zones {
            std::fs::write(zdir.join(format!("{}zone", z.origin)), &z.text)?;
        }
        Ok(())
    }

    /// NSD's log (start-up, reloads, errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("nsd.log")).unwrap_or_default()
    }

    async fn wait_ready(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let probe = self
            .zones
            .first()
            .map(|z| z.origin.clone())
            .unwrap_or_else(|| ".".into());
        while Instant::now() < deadline {
            if soa_answers(self.addr, &probe).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        anyhow::bail!("NSD did not answer within {within:?}; log:\n{}", self.log())
    }

    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.0.join("nsd.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .or_else(|| self.child.as_ref().map(|c| c.id() as i32))
    }

    fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(pid.to_string())
                .status();
        }
    }

    /// Replace the zones and reload (SIGHUP), waiting until NSD has read a changed zone.
    pub async fn reload(&mut self, zones: &[Zone]) -> anyhow::Result<()> {
        self.zones = zones.to_vec();
        self.write_zones()?;
        self.signal("HUP");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            // Done when every zone serves its new version marker (the old data is gone).
            let mut all = true;
            for z in &self.zones {
                all &= serves_version(self.addr, z).await;
            }
            if all {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        anyhow::bail!("NSD did not reload; log:\n{}", self.log())
    }

    /// Freeze NSD (SIGSTOP): queries time out, as in a DNS outage.
    pub fn freeze(&self) {
        for pid in self.all_pids() {
            let _ = Command::new("kill")
                .arg("-STOP")
                .arg(pid.to_string())
                .status();
        }
    }

    /// Resume after [`Nsd::freeze`].
    pub fn thaw(&self) {
        for pid in self.all_pids() {
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(pid.to_string())
                .status();
        }
    }

    /// NSD runs several processes (main, xfrd, server); all are children of the one we started
    /// or of each other. Find them by their parent chain.
    fn all_pids(&self) -> Vec<i32> {
        let Some(root) = self.child.as_ref().map(|c| c.id() as i32) else {
            return Vec::new();
        };
        let mut pids = vec![root];
        let mut i = 0;
        while i < pids.len() {
            let p = pids[i];
            if let Ok(children) = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")) {
                pids.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<i32>().ok()),
                );
            }
            i += 1;
        }
        pids
    }

    /// Stop NSD and wait for it.
    pub fn stop(&mut self) {
        self.thaw();
        self.signal("TERM");
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Where its files are.
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }
}

impl Drop for Nsd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether `addr` answers a SOA query for `origin` (readiness probe).
async fn soa_answers(addr: SocketAddr, origin: &str) -> bool {
    use ssp_gateway::resolve::dns::{Dns, NsSet};
    let dns = Dns::new();
    let ns = NsSet {
        servers: vec![addr],
        timeout: Duration::from_millis(200),
    };
    // Any answer (even NODATA) proves the server is up and authoritative for the zone.
    matches!(
        tokio::time::timeout(Duration::from_millis(500), dns.addrs(&ns, origin)).await,
        Ok(Ok(_))
    )
}

/// Whether `addr` serves this version of `zone` (its version marker resolves).
async fn serves_version(addr: SocketAddr, zone: &Zone) -> bool {
    use ssp_gateway::resolve::dns::{Answer, Dns, NsSet};
    let dns = Dns::new();
    let ns = NsSet {
        servers: vec![addr],
        timeout: Duration::from_millis(200),
    };
    let name = format!("v{}.zone-version.{}", zone.version, zone.origin);
    matches!(
        tokio::time::timeout(Duration::from_millis(500), dns.addrs(&ns, &name)).await,
        Ok(Ok(Answer::Records(..)))
    )
}

/// Files of a directory (debugging aid).
pub fn list(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}
