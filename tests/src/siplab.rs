//! A SIP/SIMPLE operator on loopback for the translator's tests: Kamailio (Debian's
//! `kamailio`) as its proxy and registrar, and sipp (`sip-tester`) as its users, started by
//! PID on high ports and stopped when dropped.
//!
//! Kamailio serves one domain: REGISTER records a user's contact, a MESSAGE to a registered
//! user is relayed to it (480 when the user is not registered), PUBLISH and SUBSCRIBE for
//! presence are served by its presence server (`presence`, `presence_xml`, on db_text,
//! every watcher authorised), requests for the gateway's domain are forwarded to the
//! gateway's SIP port (what DNS would do for a real operator; Kamailio runs with `dns=no`
//! here), and other requests in a dialog (the gateway's NOTIFYs to a watcher) are relayed to
//! their Request-URI. With TLS (`KamailioTls`, the `tls` module) it also listens for SIP over
//! TLS, asking for and presenting certificates of the test CA, and forwards requests for the
//! gateway's domain to the gateway's TLS port.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::federation::TempDir;

/// Kamailio's modules on Debian.
const MODULES: &str = "/usr/lib/x86_64-linux-gnu/kamailio/modules/";

/// Kamailio's db_text table definitions on Debian.
const DBTEXT: &str = "/usr/share/kamailio/dbtext/kamailio";

/// Whether Kamailio (with its presence modules) and sipp are installed.
pub fn available() -> bool {
    which("kamailio")
        && which("sipp")
        && Path::new(MODULES).join("registrar.so").exists()
        && Path::new(MODULES).join("presence_xml.so").exists()
}

/// A fresh db_text database for the presence server in `dir`: the tables it uses, with the
/// columns Kamailio leaves empty made nullable (else it refuses its own rows on restart).
fn presence_db(dir: &Path) -> anyhow::Result<PathBuf> {
    let db = dir.join("db");
    std::fs::create_dir_all(&db)?;
    for t in [
        "version",
        "presentity",
        "active_watchers",
        "watchers",
        "xcap",
    ] {
        let text = std::fs::read_to_string(Path::new(DBTEXT).join(t))?;
        let text = if t == "presentity" {
            text.replacen("sender(string)", "sender(string,null)", 1)
        } else {
            text
        };
        std::fs::write(db.join(t), text)?;
    }
    Ok(db)
}

fn which(bin: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p)
            .chain([PathBuf::from("/usr/sbin")])
            .any(|d| d.join(bin).exists())
    })
}

/// Whether something is bound to UDP `port` on 127.0.0.1 (a bind there fails).
fn udp_bound(port: u16) -> bool {
    UdpSocket::bind(("127.0.0.1", port)).is_err()
}

/// Poll `cond` every 20 ms until it holds or `within` passes.
fn poll(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// A running Kamailio.
pub struct Kamailio {
    child: Child,
    dir: TempDir,
    /// Its UDP and TCP port on 127.0.0.1.
    pub port: u16,
}

/// Kamailio's SIP over TLS: where it listens, and its certificate (PEM) from the test CA,
/// whose certificate is `ca_pem`. It asks the gateway for a certificate and presents its
/// own when it connects to the gateway.
pub struct KamailioTls<'a> {
    /// Its TLS port on 127.0.0.1.
    pub port: u16,
    /// The gateway's TLS port (requests for the gateway's domain go there, over TLS).
    pub gateway_port: u16,
    /// The anchor both sides' certificates chain to.
    pub ca_pem: &'a str,
    /// Its certificate.
    pub cert_pem: &'a str,
    /// Its private key.
    pub key_pem: &'a str,
}

/// Whether Kamailio's TLS module is installed (Debian `kamailio-tls-modules`).
pub fn tls_available() -> bool {
    available() && Path::new(MODULES).join("tls.so").exists()
}

impl Kamailio {
    /// Start Kamailio for `domain` on `port`, forwarding requests for `gateway_domain` to
    /// the gateway's SIP port.
    pub fn start(
        domain: &str,
        port: u16,
        gateway_domain: &str,
        gateway_port: u16,
    ) -> anyhow::Result<Kamailio> {
        Kamailio::start_with(domain, port, gateway_domain, gateway_port, None)
    }

    /// The same, with SIP over TLS as `tls` says: requests for the gateway go to its TLS
    /// port, over TLS.
    pub fn start_with(
        domain: &str,
        port: u16,
        gateway_domain: &str,
        gateway_port: u16,
        tls: Option<&KamailioTls<'_>>,
    ) -> anyhow::Result<Kamailio> {
        let dir = TempDir::new("ssp-kamailio");
        let db = presence_db(&dir.0)?;
        let db = db.display();
        let (tls_head, to_gateway) = match tls {
            None => (String::new(), format!("sip:127.0.0.1:{gateway_port}")),
            Some(t) => {
                for (name, pem) in [
                    ("ca.pem", t.ca_pem),
                    ("cert.pem", t.cert_pem),
                    ("key.pem", t.key_pem),
                ] {
                    std::fs::write(dir.0.join(name), pem)?;
                }
                let d = dir.0.display();
                let side = |name: &str| {
                    format!(
                        "[{name}:default]\nmethod = TLSv1.2+\nverify_certificate = yes\n\
                         require_certificate = yes\nprivate_key = {d}/key.pem\n\
                         certificate = {d}/cert.pem\nca_list = {d}/ca.pem\n\n"
                    )
                };
                std::fs::write(dir.0.join("tls.cfg"), side("server") + &side("client"))?;
                (
                    format!(
                        "enable_tls=yes\nlisten=tls:127.0.0.1:{}\nloadmodule \"{MODULES}tls.so\"\n\
                         modparam(\"tls\", \"config\", \"{d}/tls.cfg\")\n",
                        t.port
                    ),
                    format!("sip:127.0.0.1:{};transport=tls", t.gateway_port),
                )
            }
        };
        let cfg = format!(
            r#"#!KAMAILIO
debug=2
log_stderror=yes
children=2
tcp_children=2
listen=udp:127.0.0.1:{port}
listen=tcp:127.0.0.1:{port}
{tls_head}alias="{domain}"
dns=no
rev_dns=no
mpath="{MODULES}"
loadmodule "kex.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "db_text.so"
loadmodule "presence.so"
loadmodule "presence_xml.so"
modparam("usrloc", "db_mode", 0)
modparam("presence", "db_url", "text://{db}")
modparam("presence", "server_address", "sip:pres@127.0.0.1:{port}")
modparam("presence_xml", "db_url", "text://{db}")
modparam("presence_xml", "force_active", 1)
request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    xlog("L_INFO", "REQ $rm $ru from $fu over $pr\n");
    if ($rd == "{gateway_domain}" || ($rd == "127.0.0.1" && $rp == {gateway_port})) {{
        $du = "{to_gateway}";
        t_relay();
        exit;
    }}
    if (is_method("PUBLISH|SUBSCRIBE")) {{
        if (!t_newtran()) {{ sl_reply_error(); exit; }}
        if (is_method("PUBLISH")) {{ handle_publish(); }} else {{ handle_subscribe(); }}
        t_release();
        exit;
    }}
    if (has_totag()) {{ t_relay(); exit; }}
    if (is_method("REGISTER")) {{ save("location"); exit; }}
    if (is_method("MESSAGE")) {{
        if (!lookup("location")) {{ sl_send_reply("480", "Temporarily Unavailable"); exit; }}
        t_relay();
        exit;
    }}
    sl_send_reply("405", "Method Not Allowed");
}}
"#
        );
        let cfg_path = dir.0.join("kamailio.cfg");
        std::fs::write(&cfg_path, cfg)?;
        let run = dir.0.join("run");
        std::fs::create_dir_all(&run)?;
        let log = std::fs::File::create(dir.0.join("kamailio.log"))?;
        let child = Command::new("kamailio")
            .args(["-DD", "-E", "-f"])
            .arg(&cfg_path)
            .arg("-P")
            .arg(run.join("kamailio.pid"))
            .arg("-Y")
            .arg(&run)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut k = Kamailio { child, dir, port };
        let tls_port = tls.map(|t| t.port);
        let up = poll(Duration::from_secs(10), || {
            udp_bound(port)
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && tls_port.is_none_or(|p| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok())
        });
        if !up || k.child.try_wait()?.is_some() {
            anyhow::bail!("kamailio did not start:\n{}", k.log());
        }
        Ok(k)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("kamailio.log")).unwrap_or_default()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        // The main process takes its children down on SIGTERM.
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

/// The sipp scenarios of the tests (`tests/fixtures/sip/`).
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/sip")
        .join(name)
}

/// A sipp user agent that waits for requests (UAS): it answers `calls` of them as its
/// scenario says, logging every message it sees.
pub struct SippUas {
    child: Child,
    log: PathBuf,
    _dir: TempDir,
}

impl SippUas {
    /// Start `scenario` on UDP `port`, for `calls` incoming requests.
    pub fn start(scenario_name: &str, port: u16, calls: u32) -> anyhow::Result<SippUas> {
        SippUas::start_with(scenario_name, port, calls, &[])
    }

    /// The same, with `vars` (`-key name value`, used as `[name]`).
    pub fn start_with(
        scenario_name: &str,
        port: u16,
        calls: u32,
        vars: &[(&str, &str)],
    ) -> anyhow::Result<SippUas> {
        let dir = TempDir::new("ssp-sipp");
        let log = dir.0.join("messages.log");
        let mut cmd = Command::new("sipp");
        for (k, v) in vars {
            cmd.args(["-key", k, v]);
        }
        let child = cmd
            .arg("-sf")
            .arg(scenario(scenario_name))
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args([
                "-m",
                &calls.to_string(),
                "-nd",
                "-nostdin",
                "-timeout",
                "60s",
            ])
            .arg("-trace_msg")
            .arg("-message_file")
            .arg(&log)
            .arg("-trace_err")
            .arg("-error_file")
            .arg(dir.0.join("errors.log"))
            .current_dir(&dir.0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut uas = SippUas {
            child,
            log,
            _dir: dir,
        };
        if !poll(Duration::from_secs(10), || udp_bound(port)) || uas.child.try_wait()?.is_some() {
            anyhow::bail!("sipp UAS did not start on {port}");
        }
        Ok(uas)
    }

    /// Every message it sent and received so far.
    pub fn messages(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait (at most `within`) for it to finish its calls: its exit code (0: all passed).
    pub fn wait(&mut self, within: Duration) -> Option<i32> {
        let mut code = None;
        poll(within, || {
            code = self.child.try_wait().ok().flatten().and_then(|s| s.code());
            code.is_some()
        });
        code
    }
}

impl Drop for SippUas {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run a sipp client scenario (UAC) once against `server` from UDP `port`, with `vars`
/// (`-key name value`, used as `[name]`); its exit code (0: passed) and the messages it saw.
pub fn uac(
    scenario_name: &str,
    server: u16,
    port: u16,
    vars: &[(&str, &str)],
) -> anyhow::Result<(i32, String)> {
    let dir = TempDir::new("ssp-sipp");
    let log = dir.0.join("messages.log");
    let mut cmd = Command::new("sipp");
    cmd.arg(format!("127.0.0.1:{server}"))
        .arg("-sf")
        .arg(scenario(scenario_name))
        .args(["-i", "127.0.0.1", "-p", &port.to_string()])
        .args(["-m", "1", "-nd", "-nostdin", "-timeout", "30s"])
        .arg("-trace_msg")
        .arg("-message_file")
        .arg(&log)
        .current_dir(&dir.0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in vars {
        cmd.args(["-key", k, v]);
    }
    let status = cmd.status()?;
    Ok((
        status.code().unwrap_or(-1),
        std::fs::read_to_string(&log).unwrap_or_default(),
    ))
}
