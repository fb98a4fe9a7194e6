//! An XMPP operator on loopback for the XMPP translator's tests: Prosody (Debian's
//! `prosody`) serving one domain, started by PID on high ports and stopped when dropped,
//! and its users as real XMPP clients (slixmpp from PyPI, in a venv `tests/run` makes,
//! driven line by line through `tests/xmpp/client.py`).
//!
//! Prosody dials other servers by DNS SRV and a fixed port; a test-only module
//! (`mod_test_s2s_routes`, written here) maps the listed domains to loopback ports instead,
//! so the tests stay hermetic. Two variants, as an operator would run it:
//!
//! - plain: no TLS, servers proved by Server Dialback only;
//! - TLS: STARTTLS required on server-to-server streams, peers proved by their
//!   certificates (SASL EXTERNAL), the test CA trusted, dialback not allowed
//!   (`s2s_secure_auth`).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::dnslab::free_port;
use crate::federation::TempDir;

/// The route module: listed domains to loopback ports, for the `xmpp-server` service.
const ROUTES_MODULE: &str = r#"-- Test-only: static s2s routes so that streams to the listed domains go to loopback
-- ports without DNS. Config: test_s2s_routes = { ["b.test"] = { "127.0.0.1", 25269 } }
local service = require "net.resolvers.service";
local basic = require "net.resolvers.basic";
local routes = module:get_option("test_s2s_routes", {});
if not service._test_orig_new then
	service._test_orig_new = service.new;
	local none = { __index = { next = function (_, cb) cb(nil); end } };
	service.new = function (hostname, svc, conn_type, extra)
		local r = routes[hostname];
		if r and svc == "xmpp-server" then
			return basic.new(r[1], r[2], conn_type, extra);
		elseif r and svc == "xmpps-server" then
			return setmetatable({}, none);
		end
		return service._test_orig_new(hostname, svc, conn_type, extra);
	end
end
"#;

/// Whether Prosody is installed, and the client venv `tests/run` makes exists.
pub fn available() -> bool {
    Path::new("/usr/bin/prosody").exists() && python().exists()
}

/// The venv's Python (made by `tests/run`: `target/xmpp-venv`, slixmpp from PyPI).
pub fn python() -> PathBuf {
    workspace().join("target/xmpp-venv/bin/python")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// TLS for the Prosody of the TLS variant: its certificate for its domain, and the CA that
/// its peers' certificates (the gateway's) chain to.
pub struct ProsodyTls<'a> {
    /// The CA certificate (PEM).
    pub ca_pem: &'a str,
    /// Its certificate (PEM).
    pub cert_pem: &'a str,
    /// Its key (PEM).
    pub key_pem: &'a str,
    /// Whether peers must prove themselves by certificate (`s2s_secure_auth`); else
    /// dialback over TLS is taken too.
    pub secure_auth: bool,
}

/// A running Prosody.
pub struct Prosody {
    child: Child,
    dir: TempDir,
    /// Its domain.
    pub domain: String,
    /// Where its users connect.
    pub c2s_port: u16,
    /// Where other servers (the gateway) open streams to it.
    pub s2s_port: u16,
}

fn lua_str(s: &str) -> String {
    format!("{s:?}")
}

impl Prosody {
    /// Start Prosody for `domain` with `users` (name, password), dialing `routes` (domain,
    /// port on 127.0.0.1) for server-to-server streams; with TLS as `tls` says, else plain.
    /// Its server-to-server port is chosen by the caller: DNS names it before Prosody starts.
    pub fn start_on(
        domain: &str,
        s2s_port: u16,
        users: &[(&str, &str)],
        routes: &[(&str, u16)],
        tls: Option<&ProsodyTls<'_>>,
    ) -> anyhow::Result<Prosody> {
        let dir = TempDir::new("ssp-prosody");
        let d = &dir.0;
        for sub in ["plugins", "data", "certs"] {
            std::fs::create_dir_all(d.join(sub))?;
        }
        std::fs::write(d.join("plugins/mod_test_s2s_routes.lua"), ROUTES_MODULE)?;
        let c2s_port = free_port();
        let mut routes_lua = format!(
            "  [{}] = {{ \"127.0.0.1\", {s2s_port} }};\n",
            lua_str(domain)
        );
        for (dom, port) in routes {
            routes_lua.push_str(&format!(
                "  [{}] = {{ \"127.0.0.1\", {port} }};\n",
                lua_str(dom)
            ));
        }
        let (tls_global, modules, secure) = match tls {
            None => (
                String::new(),
                r#"modules_disabled = { "tls"; "s2s_auth_certs"; "offline"; "c2s_timeout" }"#,
                "s2s_require_encryption = false\ns2s_secure_auth = false",
            ),
            Some(t) => {
                std::fs::write(d.join("ca.pem"), t.ca_pem)?;
                std::fs::write(d.join(format!("certs/{domain}.crt")), t.cert_pem)?;
                std::fs::write(d.join(format!("certs/{domain}.key")), t.key_pem)?;
                (
                    format!(
                        "certificates = {}\nssl = {{ cafile = {} }}\n",
                        lua_str(&d.join("certs").display().to_string()),
                        lua_str(&d.join("ca.pem").display().to_string())
                    ),
                    r#"modules_disabled = { "offline"; "c2s_timeout" }"#,
                    if t.secure_auth {
                        "s2s_require_encryption = true\ns2s_secure_auth = true"
                    } else {
                        "s2s_require_encryption = true\ns2s_secure_auth = false"
                    },
                )
            }
        };
        let path = |p: &str| lua_str(&d.join(p).display().to_string());
        let cfg = format!(
            r#"-- Prosody for the XMPP translator's tests: loopback only.
run_as_root = true
pidfile = {pid}
data_path = {data}
plugin_paths = {{ {plugins} }}
log = {{ {{ levels = {{ min = "debug" }}, to = "file", filename = {log} }} }}
interfaces = {{ "127.0.0.1" }}
local_interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s_port} }}
s2s_ports = {{ {s2s_port} }}
component_ports = {{ }}
c2s_direct_tls_ports = {{ }}
s2s_direct_tls_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
{tls_global}
modules_enabled = {{
  "roster"; "saslauth"; "tls"; "disco"; "ping"; "dialback"; "presence"; "message";
  "posix"; "test_s2s_routes";
}}
{modules}
authentication = "internal_plain"
storage = "internal"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
{secure}
use_ipv6 = false
test_s2s_routes = {{
{routes_lua}}}
VirtualHost {host}
"#,
            pid = path("prosody.pid"),
            data = path("data"),
            plugins = path("plugins"),
            log = path("prosody.log"),
            host = lua_str(domain),
        );
        let cfg_path = d.join("prosody.cfg.lua");
        std::fs::write(&cfg_path, cfg)?;
        for (user, password) in users {
            let out = Command::new("prosodyctl")
                .arg("--config")
                .arg(&cfg_path)
                .args(["register", user, domain, password])
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "prosodyctl register {user}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let child = Command::new("prosody")
            .arg("-F")
            .arg("--config")
            .arg(&cfg_path)
            .stdout(Stdio::from(std::fs::File::create(d.join("console.out"))?))
            .stderr(Stdio::from(std::fs::File::create(d.join("console.err"))?))
            .spawn()?;
        let mut p = Prosody {
            child,
            dir,
            domain: domain.to_owned(),
            c2s_port,
            s2s_port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let up = [c2s_port, s2s_port]
                .iter()
                .all(|port| std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok());
            if up {
                return Ok(p);
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                anyhow::bail!("prosody exited ({status}):\n{}", p.log());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "prosody did not listen within 10 s:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its log and console output (for failure messages).
    pub fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.0.join(f)).unwrap_or_default();
        format!(
            "--- prosody.log\n{}\n--- console\n{}{}",
            read("prosody.log"),
            read("console.out"),
            read("console.err")
        )
    }

    /// Log in as `user` (with `password`): a real client, ready to be driven.
    pub fn client(&self, user: &str, password: &str) -> anyhow::Result<Client> {
        Client::start(
            &format!("{user}@{}", self.domain),
            password,
            self.c2s_port,
            true,
        )
    }

    /// The same, a client that never sends the receipts asked of it.
    pub fn client_without_receipts(&self, user: &str, password: &str) -> anyhow::Result<Client> {
        Client::start(
            &format!("{user}@{}", self.domain),
            password,
            self.c2s_port,
            false,
        )
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A logged-in XMPP user (slixmpp), driven by commands, reporting what it receives.
pub struct Client {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    /// Everything it printed so far (for failure messages).
    pub seen: Vec<String>,
    /// Its JID.
    pub jid: String,
}

impl Client {
    fn start(jid: &str, password: &str, port: u16, ack: bool) -> anyhow::Result<Client> {
        let mut child = Command::new(python())
            .arg(workspace().join("tests/xmpp/client.py"))
            .args([jid, password, "127.0.0.1", &port.to_string()])
            .args((!ack).then_some("noack"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut c = Client {
            child,
            stdin,
            lines,
            seen: Vec::new(),
            jid: jid.to_owned(),
        };
        c.expect(&["ready"], Duration::from_secs(15))?;
        Ok(c)
    }

    /// Send a command (fields tab-separated, as `tests/xmpp/client.py` documents).
    pub fn send(&mut self, fields: &[&str]) {
        let _ = writeln!(self.stdin, "{}", fields.join("\t"));
        let _ = self.stdin.flush();
    }

    /// The next event whose first fields are `prefix`, within `within` (other events are
    /// kept in `seen`); its fields.
    pub fn expect(&mut self, prefix: &[&str], within: Duration) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => anyhow::bail!(
                    "{}: no {prefix:?} within {within:?}; seen:\n{}",
                    self.jid,
                    self.seen.join("\n")
                ),
            };
            self.seen.push(line.clone());
            let fields: Vec<String> = line.split('\t').map(str::to_owned).collect();
            if fields.len() >= prefix.len()
                && prefix
                    .iter()
                    .zip(&fields)
                    .all(|(p, f)| f == p || f.starts_with(&format!("{p}/")))
            {
                return Ok(fields);
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.send(&["quit"]);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A hand-driven server-to-server connection to the gateway, for what a real server would
/// not send: raw bytes in, everything the gateway says collected.
pub struct RawStream {
    io: RawIo,
    /// All the gateway sent so far.
    pub got: String,
}

enum RawIo {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
    /// Taken for the TLS upgrade.
    Gone,
}

/// The stream header a server for `from` sends to open a stream to `to`.
pub fn header(from: &str, to: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
         xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
         from='{from}' to='{to}' version='1.0'>"
    )
}

impl RawStream {
    /// Connect to the gateway's XMPP listener on `port`.
    pub async fn connect(port: u16) -> anyhow::Result<RawStream> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        Ok(RawStream {
            io: RawIo::Plain(tcp),
            got: String::new(),
        })
    }

    /// Send `s`.
    pub async fn send(&mut self, s: &str) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt;
        match &mut self.io {
            RawIo::Plain(t) => t.write_all(s.as_bytes()).await?,
            RawIo::Tls(t) => {
                t.write_all(s.as_bytes()).await?;
                t.flush().await?;
            }
            RawIo::Gone => anyhow::bail!("no connection"),
        }
        Ok(())
    }

    /// Read until what the gateway sent contains `needle` (true), or it closed the
    /// connection or `within` passed (false).
    pub async fn until(&mut self, needle: &str, within: Duration) -> bool {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + within;
        let mut buf = [0u8; 4096];
        while !self.got.contains(needle) {
            let read = match &mut self.io {
                RawIo::Plain(t) => tokio::time::timeout_at(deadline, t.read(&mut buf)).await,
                RawIo::Tls(t) => tokio::time::timeout_at(deadline, t.read(&mut buf)).await,
                RawIo::Gone => return false,
            };
            match read {
                Ok(Ok(n)) if n > 0 => self.got.push_str(&String::from_utf8_lossy(&buf[..n])),
                _ => return self.got.contains(needle),
            }
        }
        true
    }

    /// Whether the gateway closed the connection within `within` (reads to the end).
    pub async fn closed(&mut self, within: Duration) -> bool {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + within;
        let mut buf = [0u8; 4096];
        loop {
            let read = match &mut self.io {
                RawIo::Plain(t) => tokio::time::timeout_at(deadline, t.read(&mut buf)).await,
                RawIo::Tls(t) => tokio::time::timeout_at(deadline, t.read(&mut buf)).await,
                RawIo::Gone => return true,
            };
            match read {
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(n)) => self.got.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(_) => return false,
            }
        }
    }

    /// Open a stream from `from`, upgrade it with STARTTLS presenting `cert_pem`/`key_pem`
    /// (trusting `ca_pem` for the gateway's `to`), and prove `from` by SASL EXTERNAL.
    pub async fn prove_by_certificate(
        &mut self,
        from: &str,
        to: &str,
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> anyhow::Result<()> {
        use rustls_pki_types::pem::PemObject;
        let w = Duration::from_secs(5);
        self.send(&header(from, to)).await?;
        anyhow::ensure!(
            self.until("</stream:features>", w).await,
            "features: {}",
            self.got
        );
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await?;
        anyhow::ensure!(self.until("<proceed", w).await, "proceed: {}", self.got);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls_pki_types::CertificateDer::from_pem_slice(
            ca_pem.as_bytes(),
        )?)?;
        let chain = vec![rustls_pki_types::CertificateDer::from_pem_slice(
            cert_pem.as_bytes(),
        )?];
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
        let cfg = rustls::ClientConfig::builder_with_provider(ssp_gateway::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        let RawIo::Plain(tcp) = std::mem::replace(&mut self.io, RawIo::Gone) else {
            anyhow::bail!("TLS twice");
        };
        let name = rustls_pki_types::ServerName::try_from(to.to_owned())?;
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
            .connect(name, tcp)
            .await?;
        self.io = RawIo::Tls(Box::new(tls));
        self.got.clear();
        self.send(&header(from, to)).await?;
        anyhow::ensure!(self.until("EXTERNAL", w).await, "mechanisms: {}", self.got);
        self.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>")
            .await?;
        anyhow::ensure!(self.until("<success", w).await, "success: {}", self.got);
        self.got.clear();
        self.send(&header(from, to)).await?;
        anyhow::ensure!(self.until("features", w).await, "restart: {}", self.got);
        Ok(())
    }
}
