//! The ladder's processes and files: certificates from a development CA, the two gateways'
//! configs, and child processes (origin, relay, pass-through, gateways) started pinned to the
//! server CPU. Each child is this same program in a `--role`; it prints `ready ADDR` on its
//! first line once it listens.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};

/// A running child.
pub struct Child {
    /// Role name, for the report.
    pub name: String,
    /// Its process ID (for `/proc`).
    pub pid: u32,
    /// The address it announced.
    pub addr: SocketAddr,
    _proc: tokio::process::Child,
}

/// Start `exe --role role args…`, pinned to `cpu` with taskset when given, and under the
/// `LADDER_WRAP` command when `LADDER_WRAP_ROLES` names the role; its stderr goes to `log`.
/// Waits (20 s at most, 300 s wrapped) for its `ready ADDR` line.
pub async fn spawn(
    exe: &Path,
    cpu: Option<&str>,
    role: &str,
    args: &[String],
    log: &Path,
) -> Result<Child> {
    // Profiling: `LADDER_WRAP="valgrind --tool=callgrind …"` runs the roles named in
    // `LADDER_WRAP_ROLES` (comma-separated) under that command, e.g. to count instructions
    // per request, which unlike CPU time do not move with the machine's other load. The
    // command is split at white space (no quoting); one variable without the other is a
    // mistake, said on stderr.
    let wrap: Vec<String> = match (
        std::env::var("LADDER_WRAP"),
        std::env::var("LADDER_WRAP_ROLES"),
    ) {
        (Ok(w), Ok(roles)) if roles.split(',').any(|r| r == role) => {
            w.split_whitespace().map(str::to_owned).collect()
        }
        (Ok(_), Err(_)) | (Err(_), Ok(_)) => {
            eprintln!(
                "ladder: LADDER_WRAP and LADDER_WRAP_ROLES go together; ignoring the one set"
            );
            Vec::new()
        }
        _ => Vec::new(),
    };
    let mut argv: Vec<std::ffi::OsString> = Vec::new();
    if let Some(c) = cpu {
        argv.extend(["taskset".into(), "-c".into(), c.into()]);
    }
    argv.extend(wrap.iter().map(Into::into));
    argv.push(exe.into());
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    cmd.arg("--role").arg(role).args(args);
    let ready_within = Duration::from_secs(if wrap.is_empty() { 20 } else { 300 });
    let log_file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let mut proc = cmd
        .spawn()
        .with_context(|| format!("starting role {role}"))?;
    let pid = proc.id().context("child has no PID")?;
    let stdout = proc.stdout.take().context("child stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(ready_within, lines.next_line())
        .await
        .with_context(|| {
            format!(
                "{role} did not get ready within {ready_within:?} (log: {})",
                log.display()
            )
        })?
        .context("reading child stdout")?;
    let Some(line) = line else {
        bail!("{role} exited before it was ready (log: {})", log.display());
    };
    let addr = line
        .strip_prefix("ready ")
        .and_then(|a| a.trim().parse().ok())
        .with_context(|| format!("{role} said {line:?}, not \"ready ADDR\""))?;
    Ok(Child {
        name: role.to_owned(),
        pid,
        addr,
        _proc: proc,
    })
}

/// [`spawn`] the ladder's `gateway` role with the config `files` wrote.
pub async fn spawn_gateway(
    exe: &Path,
    cpu: Option<&str>,
    files: &GatewayFiles,
    log: &Path,
) -> Result<Child> {
    let args = ["--config".into(), files.config.display().to_string()];
    spawn(exe, cpu, "gateway", &args, log).await
}

/// Ports and addresses a gateway config needs.
pub struct GatewayPorts {
    /// Peer-facing listener.
    pub peer: u16,
    /// Core-facing listener.
    pub core: u16,
}

/// Everything written for one gateway.
pub struct GatewayFiles {
    /// The config file.
    pub config: PathBuf,
}

/// Write gateway `domain`'s config, directory and key under `dir`: its core is `origin`
/// (synchronous answers), `peer` is its one peer (synchronous, found by DNS SRV), and every
/// rate limit and per-source bound is far above the load, so the limiters run but never
/// refuse.
#[allow(clippy::too_many_arguments)]
pub fn write_gateway(
    dir: &Path,
    certs: &Path,
    domain: &str,
    country_code: &str,
    subscriber: (&str, &str),
    peer: &str,
    ports: &GatewayPorts,
    origin: SocketAddr,
    dns: SocketAddr,
) -> Result<GatewayFiles> {
    let core_domain = format!("core.{domain}");
    let directory = dir.join(format!("directory-{domain}.csv"));
    std::fs::write(
        &directory,
        format!(
            "msisdn,core_id\n{},wv:{}@{core_domain}\n",
            subscriber.0, subscriber.1
        ),
    )?;
    let key = dir.join(format!("hmac-{domain}.key"));
    std::fs::write(
        &key,
        format!(
            "{:032x}{:032x}\n",
            rand::random::<u128>(),
            rand::random::<u128>()
        ),
    )?;
    let config = dir.join(format!("{domain}.toml"));
    let mut text = crate::federation::BaseToml {
        domain,
        core_domain: &core_domain,
        country_code,
        key_file: &key.display().to_string(),
        directory: &directory.display().to_string(),
        peer_port: ports.peer,
        core_port: ports.core,
        certs,
        core_url: &format!("http://{origin}/"),
        core_mode: "sync",
    }
    .render("the load ladder");
    text.push_str(&format!(
        r#"
[policy]
originator_rate = 10000000
originator_burst = 10000000
# The generator is one source: the per-source bounds against hostile peers are set far
# above the load too (a new TLS connection per request, 1,000 idle connections).
failure_rate = 10000000
failure_burst = 10000000

[limits]
max_connections_per_source = 1000000
max_unauthenticated = 1000000
max_unauthenticated_per_source = 1000000

[resolver]
nameservers = ["{dns}"]

[[resolver.enum]]
suffix = "e164.arpa"

[[peer]]
domain = "{peer}"
mode = "sync"
rate = 10000000
burst = 10000000
"#
    ));
    std::fs::write(&config, text)?;
    Ok(GatewayFiles { config })
}

/// Start HAProxy (Debian `haproxy`) as the peer anchor: it terminates the same mutual TLS as
/// the gateway's peer listener (`cert_dir`'s certificate and key, client certificates from
/// `ca` required) on one thread, and forwards HTTP/1.1 keep-alive to `origin`, pinned to
/// `cpu` when given. Its config and log go under `dir`. Ready once it accepts connections
/// (20 s at most).
pub async fn spawn_haproxy(
    dir: &Path,
    cpu: Option<&str>,
    cert_dir: &Path,
    ca: &Path,
    origin: SocketAddr,
) -> Result<Child> {
    let pem = dir.join("haproxy.pem");
    let mut both = std::fs::read(cert_dir.join("cert.pem"))?;
    both.extend(std::fs::read(cert_dir.join("key.pem"))?);
    std::fs::write(&pem, both)?;
    let port = crate::dnslab::free_port();
    let config = dir.join("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "# Written by the load ladder: HAProxy terminating mutual TLS in front of the origin.
global
    nbthread 1
    maxconn 3000

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend peers
    bind 127.0.0.1:{port} ssl crt {pem} ca-file {ca} verify required alpn http/1.1
    default_backend core

backend core
    server origin {origin} maxconn 1000
",
            pem = pem.display(),
            ca = ca.display(),
        ),
    )?;
    let mut cmd = match cpu {
        Some(c) => {
            let mut cmd = tokio::process::Command::new("taskset");
            cmd.arg("-c").arg(c).arg("haproxy");
            cmd
        }
        None => tokio::process::Command::new("haproxy"),
    };
    cmd.arg("-db").arg("-f").arg(&config);
    let log = dir.join("haproxy.log");
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    cmd.stdout(Stdio::null())
        .stderr(Stdio::from(log_file))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let mut proc = cmd
        .spawn()
        .context("starting haproxy (Debian package haproxy)")?;
    let pid = proc.id().context("haproxy has no PID")?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if let Ok(Some(st)) = proc.try_wait() {
            bail!(
                "haproxy exited ({st}) before it was ready (log: {})",
                log.display()
            );
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "haproxy did not listen within 20 s (log: {})",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // With taskset in front, the PID is taskset's until it execs haproxy: the same process.
    Ok(Child {
        name: "haproxy".into(),
        pid,
        addr,
        _proc: proc,
    })
}
