//! The load ladder (see `ssp_testbed::ladder`): every rung measured in one run on loopback,
//! a table on stdout and `target/ladder.json`.
//!
//! `cargo run --release -p ssp-testbed --bin ladder -- [--quick] [--rounds N] [--out FILE] [--hold SECS]`

/// The allocator, and why: `ssp_gateway::alloc`.
#[global_allocator]
static ALLOC: ssp_gateway::alloc::MiMalloc = ssp_gateway::alloc::MiMalloc;

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use ssp_gateway::certs::DevCa;
use ssp_gateway::tls::{self, ServerTrust};
use ssp_testbed::dnslab::{InProcDns, free_port};
use ssp_testbed::federation::federation_zones;
use ssp_testbed::ladder::loadgen::{self, BodyFn, Load, Shape, Stats, Target};
use ssp_testbed::ladder::procstat;
use ssp_testbed::ladder::report::{self, Rung, print_table};
use ssp_testbed::ladder::setup::{self, Child, GatewayPorts};

const USAGE: &str = "usage: ladder [--quick] [--rounds N] [--out FILE] [--hold SECS]

Measures, in one run on loopback, the same SSP POST through:
  L0 nothing (generator -> origin), L1 a tokio TCP relay, L2 a minimal TLS pass-through,
  L2h HAProxy terminating the same mutual TLS (Debian haproxy), L3 the gateway's inbound
  path, and the outbound path (core -> gateway X -> gateway Y);
keep-alive and a new TLS connection per request; maximum throughput (closed loop) and latency
at 25% and 50% of L2's maximum (open loop); the pass-through and the inbound rung again
with the server free to use both CPUs (throughput per busy CPU on one CPU and on two);
gateway RSS with 1,000 idle TLS connections. CPU per request against L2 and HAProxy is the
figure to steer by (ratios in target/ladder.json; without --quick, the median of five
alternating rounds of the keep-alive maximum rungs).
--quick takes under a minute; the default takes about ten. Writes target/ladder.json.
--rounds N measures the rounds' rungs N times (default 5; 1 with --quick; not with --hold).
--hold SECS runs only L2, L3 and the outbound rung (keep-alive, closed loop), each for SECS
seconds after a line naming its server PIDs, for a profiler to attach (perf record -p PID);
it writes no report.";

/// Connections of the closed-loop (maximum throughput) runs: enough that the servers, not
/// the round-trip time, set the pace (16 left L3 latency-bound below its capacity).
const CLOSED_LOOP_CONNS: usize = 64;

/// Rounds of the steering rungs (L2, L2h, L3 and outbound at maximum, keep-alive, and the
/// pass-through and gateway on two CPUs) in a full run. CPU per request moves from minute to
/// minute on a shared VM, by more than the targets' margins (README, "How far one run can be
/// trusted"): each ratio is the median of its rounds', every rung of a round measured within
/// the same minute. Five, not three: single rounds of one run read 1.24 to 1.41 for L3 / L2,
/// and a median of three still moved by more than the target's margin from run to run.
const STEERING_ROUNDS: usize = 5;

/// Subscriber A at X and B at Y.
const A: &str = "+46701234567";
const B: &str = "+4915112345678";

struct Opts {
    quick: bool,
    out: Option<PathBuf>,
    /// Profiling: hold each of the steering rungs this long and stop.
    hold: Option<Duration>,
    /// Rounds of the steering rungs, when not the mode's own.
    rounds: Option<usize>,
}

fn main() -> Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--role") {
        return role_main(&args[1..]).map(|()| ExitCode::SUCCESS);
    }
    let mut opts = Opts {
        quick: false,
        out: None,
        hold: None,
        rounds: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => opts.quick = true,
            "--out" => opts.out = Some(it.next().context("--out needs a file")?.into()),
            "--hold" => {
                let secs: u64 = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .context("--hold needs a number of seconds")?;
                opts.hold = Some(Duration::from_secs(secs));
            }
            "--rounds" => {
                let n: usize = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .filter(|n| (1..=50).contains(n))
                    .context("--rounds needs a number from 1 to 50")?;
                opts.rounds = Some(n);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    if opts.hold.is_some() && opts.rounds.is_some() {
        bail!("--hold measures each rung once: --rounds does not apply\n\n{USAGE}");
    }
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    if std::env::var_os("LADDER_PINNED").is_none() {
        // Start again with enough file descriptors for 1,000 idle connections, and pinned to
        // CPU 1 so the servers (on CPU 0) do not share a core with the generator.
        let pin = if cpus >= 2 && which("taskset") {
            "exec taskset -c 1 \"$@\""
        } else {
            "exec \"$@\""
        };
        let err = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -n 8192 2>/dev/null || true; {pin}"))
            .arg("ladder")
            .arg(std::env::current_exe()?)
            .args(&args)
            .env(
                "LADDER_PINNED",
                if pin.contains("taskset") { "1" } else { "0" },
            )
            .exec();
        eprintln!("could not re-execute pinned ({err}); running unpinned");
    }
    let pinned = std::env::var("LADDER_PINNED").is_ok_and(|v| v == "1");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(ladder(opts, pinned))
}

/// HAProxy's version and the OpenSSL it was built with (its TLS costs are OpenSSL's).
fn haproxy_version() -> String {
    std::process::Command::new("haproxy")
        .arg("-vv")
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.lines()
                .filter(|l| l.starts_with("HAProxy version") || l.contains("OpenSSL version"))
                .map(str::trim)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

fn which(cmd: &str) -> bool {
    std::process::Command::new(cmd)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// A child process: the origin, the relay, the pass-through or a gateway.
fn role_main(args: &[String]) -> Result<()> {
    let role = args.first().context("--role needs a name")?.clone();
    let flag = |name: &str| -> Result<String> {
        let i = args
            .iter()
            .position(|a| a == name)
            .with_context(|| format!("role {role} needs {name}"))?;
        args.get(i + 1)
            .cloned()
            .with_context(|| format!("{name} needs a value"))
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let bind = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await };
        match role.as_str() {
            "origin" => {
                let l = bind().await?;
                println!("ready {}", l.local_addr()?);
                ssp_testbed::ladder::origin::serve(l).await;
            }
            "relay" => {
                let to = flag("--to")?.parse()?;
                let l = bind().await?;
                println!("ready {}", l.local_addr()?);
                ssp_testbed::ladder::relay::serve(l, to).await;
            }
            "passthrough" => {
                let chain = tls::load_certs(Path::new(&flag("--cert")?))?;
                let key = tls::load_key(Path::new(&flag("--key")?))?;
                let roots = tls::load_roots(&[PathBuf::from(flag("--ca")?)])?;
                let cfg = tls::server_config(chain, key, Some(roots), true)?;
                let to = flag("--to")?.parse()?;
                let l = bind().await?;
                println!("ready {}", l.local_addr()?);
                ssp_testbed::ladder::passthrough::serve(l, Arc::new(cfg), to).await;
            }
            "gateway" => {
                // As `ssp-gateway run` does: info logs on stderr, then the relay.
                let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
                tracing_subscriber::fmt()
                    .with_env_filter(filter)
                    .with_writer(std::io::stderr)
                    .init();
                let cfg = ssp_gateway::config::Config::load(Path::new(&flag("--config")?))?;
                let peer = cfg
                    .listen
                    .peer
                    .context("the gateway config has no peer listener")?;
                let running = ssp_gateway::app::start(cfg, Default::default()).await?;
                println!("ready {peer}");
                // Runs until the ladder kills it.
                std::future::pending::<()>().await;
                drop(running);
            }
            other => bail!("unknown role {other:?}"),
        }
        Ok(())
    })
}

fn identity(dir: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain = tls::load_certs(&dir.join("cert.pem"))?;
    let key = PrivateKeyDer::from_pem_file(dir.join("key.pem"))
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    Ok((chain, key))
}

/// An SSP `SendMessageRequest` of about 1 KB, like the codec benchmark's.
fn send_message(tid: &str, session: &str, service: &str, from: &str, to: &str) -> String {
    let mut m = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<WV-SSP-Message xmlns="http://www.openmobilealliance.org/DTD/WV-SSP1.3">
<Session sessionID="{session}">
<Transaction mode="Request" transactionID="{tid}">
<SendMessageRequest deliveryReport="No">
<MetaInfo clientOriginated="Yes">
<Requestor serviceID="{service}">
<User userID="{from}"/>
</Requestor></MetaInfo>
<MessageInfo messageID="8aee9981801716c039215f69def4ffad7" contentType="text/plain" contentSize="300" validity="600">
<Recipient>
<User userID="{to}"/>
</Recipient>
<Sender>
<User userID="{from}" friendlyName="Load"/>
</Sender>
<DateTime format="iso8601">2026-11-25T12:27:59Z</DateTime>
</MessageInfo>
<ContentData contentType="text/plain" encoding="base64">
"#
    );
    for _ in 0..6 {
        m.push_str("SGVsbG8gZnJvbSBvcGVyYXRvciBYLCB0aGlzIGlzIGEgdGVzdCBtZXNzYWdlIQ==\r\n");
    }
    m.push_str(
        "</ContentData>\n</SendMessageRequest>\n</Transaction>\n</Session>\n</WV-SSP-Message>\n",
    );
    m
}

struct Bench {
    quick: bool,
    hold: Option<Duration>,
    ticks: u64,
    rungs: Vec<Rung>,
}

impl Bench {
    fn durations(&self) -> (Duration, Duration) {
        if let Some(hold) = self.hold {
            (Duration::from_millis(300), hold)
        } else if self.quick {
            (Duration::from_millis(300), Duration::from_millis(1500))
        } else {
            (Duration::from_secs(2), Duration::from_secs(8))
        }
    }

    /// [`Bench::measure`] at maximum throughput, keep-alive (closed loop): the shape of the
    /// rungs the CPU targets read.
    async fn at_max(
        &mut self,
        name: &str,
        load_label: &str,
        target: &Target,
        body: &BodyFn,
        servers: &[&Child],
    ) -> Stats {
        self.measure(
            name,
            "keep-alive",
            load_label,
            target,
            Shape::KeepAlive,
            None,
            body,
            servers,
        )
        .await
    }

    /// Warm up, then measure `target` with `shape` at `rate` (None: closed loop), charging the
    /// CPU time of `servers` to the requests.
    #[allow(clippy::too_many_arguments)]
    async fn measure(
        &mut self,
        name: &str,
        shape_label: &str,
        load_label: &str,
        target: &Target,
        shape: Shape,
        rate: Option<f64>,
        body: &BodyFn,
        servers: &[&Child],
    ) -> Stats {
        let (warmup, duration) = self.durations();
        // One run: the warm-up uses the same connections as the measured window, and the
        // server CPU of the whole run is divided by every request it served.
        let load = Load {
            conns: if rate.is_some() {
                16
            } else {
                CLOSED_LOOP_CONNS
            },
            warmup,
            duration,
            rate,
            shape,
        };
        let cpu = |s: &[&Child]| -> Duration {
            s.iter()
                .filter_map(|c| procstat::cpu_time(c.pid, self.ticks))
                .sum()
        };
        let before = cpu(servers);
        let first_before = cpu(&servers[..1]);
        let host_before = procstat::host_times();
        let began = std::time::Instant::now();
        let stats = loadgen::run(target, &load, body.clone()).await;
        let used = cpu(servers).saturating_sub(before);
        let first_used = cpu(&servers[..1]).saturating_sub(first_before);
        let host_steal = procstat::host_times().zip(host_before).and_then(
            |((steal, total), (steal0, total0))| {
                let all = total.checked_sub(total0).filter(|&t| t > 0)?;
                Some(steal.saturating_sub(steal0) as f64 / all as f64)
            },
        );
        let elapsed = began.elapsed();
        let n = stats.done_total.max(1);
        let rung = Rung {
            name: name.to_owned(),
            shape: shape_label.to_owned(),
            load: load_label.to_owned(),
            rps: stats.rps(),
            p50_us: stats.percentile(50.0),
            p99_us: stats.percentile(99.0),
            cpu_us_per_req: used.as_micros() as f64 / n as f64,
            server_cpu_util: used.as_secs_f64() / elapsed.as_secs_f64().max(1e-9),
            first_server_cpu_us_per_req: (servers.len() > 1)
                .then(|| first_used.as_micros() as f64 / n as f64),
            host_steal,
            errors: stats.errors,
            unsent: stats.unsent,
            first_error: stats.first_error.clone(),
        };
        println!(
            "  {:<34} {:<20} {:>6}  {:>8.0} req/s  p50 {:>6} µs  p99 {:>6} µs  {:>6.1} CPU µs/req  server CPU {:>3.0}%  steal {:>5}  {} errors  {} unsent",
            rung.name,
            rung.shape,
            rung.load,
            rung.rps,
            rung.p50_us,
            rung.p99_us,
            rung.cpu_us_per_req,
            rung.server_cpu_util * 100.0,
            report::percent(rung.host_steal),
            rung.errors,
            rung.unsent
        );
        self.rungs.push(rung);
        stats
    }
}

/// The load label of the steering rungs' `round` (the first is the ladder's own maximum).
fn round_load(round: usize) -> String {
    if round == 1 {
        "max".to_owned()
    } else {
        format!("max r{round}")
    }
}

/// The median of the ratios in `v` that were measured (a missing rung's is NaN; NaN if
/// none was).
fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// CPUs of the machine (not of this process: it is pinned to one).
fn cpu_count() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0)
        .max(1)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

async fn ladder(opts: Opts, pinned: bool) -> Result<ExitCode> {
    let exe = std::env::current_exe()?;
    // target/<profile>/ladder → target/
    let target_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("cannot find the target directory")?
        .to_path_buf();
    let work = target_dir.join("ladder");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| target_dir.join("ladder.json"));
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; measure with --release");
    }
    let server_cpu = pinned.then_some("0");
    println!(
        "load ladder ({} mode): generator on CPU {}, servers on CPU {}; {} CPUs, {}",
        if opts.quick { "quick" } else { "full" },
        if pinned { "1" } else { "any" },
        if pinned { "0" } else { "any" },
        cpu_count(),
        cpu_model()
    );

    // Certificates: X and Y from one development CA; the generator is peer Y towards X.
    let certs = work.join("certs");
    let ca = DevCa::new("load ladder CA")?;
    ca.write_ca(&certs)?;
    for d in ["opx.example", "opy.example"] {
        ca.write_operator(&certs, d)?;
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der())?;
    let mut client_tls = tls::client_config(
        ServerTrust::Roots(Arc::new(roots)),
        Some(identity(&certs.join("opy.example"))?),
        false,
    )?;
    // Every new connection is a full handshake: the worst case (a reconnect storm).
    client_tls.resumption = rustls::client::Resumption::disabled();
    let tls_to_x = Some((
        tokio_rustls::TlsConnector::from(Arc::new(client_tls)),
        ServerName::try_from("opx.example")?,
    ));

    // DNS: ENUM and SRV for both gateways (TTL one hour: the route cache stays warm).
    let (x_ports, y_ports) = (
        GatewayPorts {
            peer: free_port(),
            core: free_port(),
        },
        GatewayPorts {
            peer: free_port(),
            core: free_port(),
        },
    );
    let dns = InProcDns::start(&federation_zones(
        &[
            ("opx.example".into(), x_ports.peer),
            ("opy.example".into(), y_ports.peer),
        ],
        &[
            (A.into(), "opx.example".into()),
            (B.into(), "opy.example".into()),
        ],
        3600,
    ))
    .await?;

    let log = |n: &str| work.join(format!("{n}.log"));
    let origin = setup::spawn(&exe, server_cpu, "origin", &[], &log("origin")).await?;
    let relay = setup::spawn(
        &exe,
        server_cpu,
        "relay",
        &["--to".into(), origin.addr.to_string()],
        &log("relay"),
    )
    .await?;
    let x_dir = certs.join("opx.example");
    let passthrough_args = [
        "--cert".into(),
        x_dir.join("cert.pem").display().to_string(),
        "--key".into(),
        x_dir.join("key.pem").display().to_string(),
        "--ca".into(),
        certs.join("ca.pem").display().to_string(),
        "--to".into(),
        format!("http://{}/", origin.addr),
    ];
    let passthrough = setup::spawn(
        &exe,
        server_cpu,
        "passthrough",
        &passthrough_args,
        &log("passthrough"),
    )
    .await?;
    // The peer anchor: HAProxy (Debian haproxy) when installed; without it the rung is
    // skipped and its ratio is null.
    let haproxy = if which("haproxy") {
        Some(
            setup::spawn_haproxy(
                &work,
                server_cpu,
                &x_dir,
                &certs.join("ca.pem"),
                origin.addr,
            )
            .await?,
        )
    } else {
        eprintln!("haproxy is not installed (Debian package haproxy): the L2h rung is skipped");
        None
    };
    let gx = setup::write_gateway(
        &work,
        &certs,
        "opx.example",
        "46",
        (A, "usera"),
        "opy.example",
        &x_ports,
        origin.addr,
        dns.addr,
    )?;
    let gy = setup::write_gateway(
        &work,
        &certs,
        "opy.example",
        "49",
        (B, "userb"),
        "opx.example",
        &y_ports,
        origin.addr,
        dns.addr,
    )?;
    let gateway_x = setup::spawn_gateway(&exe, server_cpu, &gx, &log("gateway-x")).await?;
    let gateway_y = setup::spawn_gateway(&exe, server_cpu, &gy, &log("gateway-y")).await?;

    let plain = |addr| Target { addr, tls: None };
    let t_origin = plain(origin.addr);
    let t_relay = plain(relay.addr);
    let t_pass = Target {
        addr: passthrough.addr,
        tls: tls_to_x.clone(),
    };
    let t_haproxy = haproxy.as_ref().map(|h| Target {
        addr: h.addr,
        tls: tls_to_x.clone(),
    });
    let t_gw_in = Target {
        addr: gateway_x.addr,
        tls: tls_to_x.clone(),
    };
    let t_gw_out = plain(std::net::SocketAddr::from(([127, 0, 0, 1], x_ports.core)));
    // Inbound: peer Y's user B writes to X's subscriber A. Outbound: X's core sends to B.
    let inbound: BodyFn = Arc::new(|n| {
        send_message(
            &format!("t{n}"),
            "s1@opy.example",
            "wv:@opy.example",
            &format!("wv:{B}"),
            &format!("wv:{A}"),
        )
    });
    let outbound: BodyFn = Arc::new(|n| {
        send_message(
            &format!("c{n}"),
            "core-1@core.opx.example",
            "wv:@core.opx.example",
            "wv:usera@core.opx.example",
            &format!("wv:{B}"),
        )
    });

    let mut b = Bench {
        quick: opts.quick,
        hold: opts.hold,
        ticks: procstat::clock_ticks(),
        rungs: Vec::new(),
    };
    let l0 = "L0 direct (origin)";
    let l1 = "L1 tokio TCP relay";
    let l2 = "L2 TLS pass-through";
    let lh = "L2h HAProxy TLS termination";
    let l3 = "L3 gateway inbound";
    let lo = "gateway outbound (X -> Y)";
    let l2_two = "L2 TLS pass-through (2 CPUs)";
    let l3_two = "L3 gateway inbound (2 CPUs)";
    let ka = "keep-alive";
    let mut rungs: Vec<(&str, &Target, &Child)> = vec![
        (l0, &t_origin, &origin),
        (l1, &t_relay, &relay),
        (l2, &t_pass, &passthrough),
    ];
    if let (Some(t), Some(h)) = (&t_haproxy, &haproxy) {
        rungs.push((lh, t, h));
    }
    rungs.push((l3, &t_gw_in, &gateway_x));
    let rungs = rungs;

    if let Some(hold) = opts.hold {
        let steering: [(&str, &Target, Vec<&Child>, &BodyFn); 3] = [
            (l2, &t_pass, vec![&passthrough], &inbound),
            (l3, &t_gw_in, vec![&gateway_x], &inbound),
            (lo, &t_gw_out, vec![&gateway_x, &gateway_y], &outbound),
        ];
        for (name, target, servers, body) in steering {
            let pids: Vec<String> = servers.iter().map(|c| c.pid.to_string()).collect();
            println!(
                "hold: {name} for {} s from now + 0.3 s warm-up; server PIDs {}",
                hold.as_secs(),
                pids.join(" ")
            );
            b.at_max(name, "max", target, body, &servers).await;
            if let Some(first) = b.rungs.last().and_then(|r| r.first_server_cpu_us_per_req) {
                println!("  of which the first server (gateway X): {first:.1} CPU µs/req");
            }
        }
        dns.stop().await;
        return Ok(ExitCode::SUCCESS);
    }

    // Memory before any load: the baseline of the idle-connection figure.
    let rss_fresh = procstat::rss_bytes(gateway_x.pid).unwrap_or(0);

    // How it scales: the pass-through and the gateway again, each free to use both CPUs (the
    // generator shares them), measured in every round beside their one-CPU selves. The
    // pass-through is the control: what it loses per busy CPU on two CPUs is the machine's
    // (the generator's competition, sibling hyperthreads); the gateway's own cost of running
    // on two is what it loses beyond that.
    let scale_dir = work.join("scale");
    std::fs::create_dir_all(&scale_dir)?;
    let x2_ports = GatewayPorts {
        peer: free_port(),
        core: free_port(),
    };
    let gx2 = setup::write_gateway(
        &scale_dir,
        &certs,
        "opx.example",
        "46",
        (A, "usera"),
        "opy.example",
        &x2_ports,
        origin.addr,
        dns.addr,
    )?;
    let both_cpus = (pinned && cpu_count() >= 2).then_some("0,1");
    let gateway_x2 = setup::spawn_gateway(&exe, both_cpus, &gx2, &log("gateway-x-2cpu")).await?;
    let passthrough2 = setup::spawn(
        &exe,
        both_cpus,
        "passthrough",
        &passthrough_args,
        &log("passthrough-2cpu"),
    )
    .await?;
    let t_gw_in2 = Target {
        addr: gateway_x2.addr,
        tls: tls_to_x.clone(),
    };
    let t_pass2 = Target {
        addr: passthrough2.addr,
        tls: tls_to_x.clone(),
    };

    println!("\nmaximum throughput (closed loop, {CLOSED_LOOP_CONNS} connections):");
    let mut l2_max = 0.0;
    let mut l3_max = 0.0;
    for &(name, target, child) in &rungs {
        let s = b.at_max(name, "max", target, &inbound, &[child]).await;
        if name == l2 {
            l2_max = s.rps();
        }
        if name == l3 {
            l3_max = s.rps();
        }
    }
    let out_max = b
        .at_max(lo, "max", &t_gw_out, &outbound, &[&gateway_x, &gateway_y])
        .await
        .rps();
    let scaling_rungs = [
        (l2_two, &t_pass2, &passthrough2),
        (l3_two, &t_gw_in2, &gateway_x2),
    ];
    println!(
        "  (how it scales: the servers free to use CPUs {})",
        both_cpus.unwrap_or("any")
    );
    for (name, target, child) in scaling_rungs {
        b.at_max(name, "max", target, &inbound, &[child]).await;
    }

    // The steering rungs again, alternating, for the median of the rounds' ratios.
    let rounds = opts
        .rounds
        .unwrap_or(if opts.quick { 1 } else { STEERING_ROUNDS });
    if rounds > 1 {
        println!(
            "\nthe steering rungs again ({} more rounds, alternating):",
            rounds - 1
        );
    }
    for round in 2..=rounds {
        let load = round_load(round);
        for &(name, target, child) in rungs.iter().filter(|r| [l2, lh, l3].contains(&r.0)) {
            b.at_max(name, &load, target, &inbound, &[child]).await;
        }
        b.at_max(lo, &load, &t_gw_out, &outbound, &[&gateway_x, &gateway_y])
            .await;
        for (name, target, child) in scaling_rungs {
            b.at_max(name, &load, target, &inbound, &[child]).await;
        }
    }
    drop((gateway_x2, passthrough2));

    println!("\nlatency at fixed shares of L2's maximum ({l2_max:.0} req/s; open loop):");
    let mut p50_at = std::collections::HashMap::new();
    for share in [25u32, 50] {
        let rate = l2_max * f64::from(share) / 100.0;
        for &(name, target, child) in &rungs {
            let s = b
                .measure(
                    name,
                    ka,
                    &format!("{share}%"),
                    target,
                    Shape::KeepAlive,
                    Some(rate),
                    &inbound,
                    &[child],
                )
                .await;
            p50_at.insert((name, share), (s.percentile(50.0), s.unsent));
        }
    }
    b.measure(
        lo,
        ka,
        "25%",
        &t_gw_out,
        Shape::KeepAlive,
        Some(l2_max / 4.0),
        &outbound,
        &[&gateway_x, &gateway_y],
    )
    .await;

    println!("\na new connection per request (closed loop; TLS rungs do a full handshake):");
    for &(name, target, child) in &rungs {
        let shape = if target.tls.is_some() {
            "new-tls-per-request"
        } else {
            "new-tcp-per-request"
        };
        b.measure(
            name,
            shape,
            "max",
            target,
            Shape::NewConnection,
            None,
            &inbound,
            &[child],
        )
        .await;
    }

    println!("\ngateway memory with 1,000 idle peer TLS connections:");
    let rss_before = procstat::rss_bytes(gateway_x.pid).unwrap_or(0);
    println!(
        "  RSS {:.1} MiB when started, {:.1} MiB after the load runs",
        rss_fresh as f64 / (1024.0 * 1024.0),
        rss_before as f64 / (1024.0 * 1024.0)
    );
    let (idle, failed) = loadgen::idle_connections(&t_gw_in, 1000, inbound.clone()).await;
    let rss_idle = procstat::rss_bytes(gateway_x.pid).unwrap_or(0);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "  RSS {:.1} MiB before, {:.1} MiB with {} idle connections ({} failed): {:.1} KiB each",
        mib(rss_before),
        mib(rss_idle),
        idle.len(),
        failed,
        (rss_idle.saturating_sub(rss_before)) as f64 / 1024.0 / idle.len().max(1) as f64
    );
    drop(idle);

    print_table(&b.rungs);
    let errors: u64 = b.rungs.iter().map(|r| r.errors).sum::<u64>() + failed as u64;
    let ratio = l3_max / l2_max.max(1e-9);
    let added = |share: u32| {
        let ((g, gu), (p, pu)) = (p50_at[&(l3, share)], p50_at[&(l2, share)]);
        // A median of what was sent says nothing if part of the schedule never went.
        (i64::from(g) - i64::from(p), gu == 0 && pu == 0)
    };
    let ((added_25, whole_25), (added_50, _)) = (added(25), added(50));
    let rss_mb = mib(rss_idle);
    // CPU per request at maximum (keep-alive), measured side by side in this run: the
    // figures to steer by (throughput ratios move with the generator's share of the CPU).
    let row_in = |name: &str, round: usize| {
        let load = round_load(round);
        b.rungs
            .iter()
            .find(|r| r.name == name && r.shape == ka && r.load == load)
    };
    let cpu_in = |name: &str, round| row_in(name, round).map_or(f64::NAN, |r| r.cpu_us_per_req);
    // Requests per busy CPU-second (from CPU per request, one span for both), each the
    // median of the rounds'.
    // A rung missing (or with no CPU counted: its server gone) gives NaN, which the medians
    // leave out, not a huge figure that would stand in for a measurement.
    let measured = |cpu: f64| if cpu > 0.0 { cpu } else { f64::NAN };
    let per_core_rounds = |name: &str| {
        (1..=rounds)
            .map(|k| 1e6 / measured(cpu_in(name, k)))
            .collect::<Vec<f64>>()
    };
    let per_core = |name: &str| median(&per_core_rounds(name));
    // Each round's ratios (its rungs measured within the same minute), then their medians.
    let per_round = |f: &dyn Fn(usize) -> f64| (1..=rounds).map(f).collect::<Vec<f64>>();
    let gw_vs_pass_rounds = per_round(&|k| cpu_in(l3, k) / cpu_in(l2, k));
    let gw_vs_haproxy_rounds = per_round(&|k| cpu_in(l3, k) / cpu_in(lh, k));
    let out_vs_pass_rounds = per_round(&|k| {
        let x_share = row_in(lo, k)
            .and_then(|r| r.first_server_cpu_us_per_req)
            .unwrap_or(f64::NAN);
        x_share / cpu_in(l2, k)
    });
    let gw_vs_pass = median(&gw_vs_pass_rounds);
    let gw_vs_haproxy = median(&gw_vs_haproxy_rounds);
    let out_vs_pass = median(&out_vs_pass_rounds);
    // What each keeps per busy CPU on two CPUs of its figure on one, round by round, and the
    // gateway's against the pass-through's (1.0: it scales as well as the control).
    let kept_rounds =
        |two: &str, one: &str| per_round(&|k| measured(cpu_in(one, k)) / measured(cpu_in(two, k)));
    let l2_kept_rounds = kept_rounds(l2_two, l2);
    let l3_kept_rounds = kept_rounds(l3_two, l3);
    let l3_vs_l2_kept_rounds: Vec<f64> = l3_kept_rounds
        .iter()
        .zip(&l2_kept_rounds)
        .map(|(g, p)| g / p)
        .collect();
    let (l2_kept, l3_kept, l3_vs_l2_kept) = (
        median(&l2_kept_rounds),
        median(&l3_kept_rounds),
        median(&l3_vs_l2_kept_rounds),
    );
    let targets = json!({
        "l3_cpu_at_most_1_33_of_l2": {"value": gw_vs_pass, "met": gw_vs_pass <= 1.33},
        "l3_cpu_goal_1_11_of_l2": {"value": gw_vs_pass, "met": gw_vs_pass <= 1.11},
        "outbound_x_cpu_at_most_1_5_of_l2": {"value": out_vs_pass, "met": out_vs_pass <= 1.5},
        "l3_added_p50_at_25pct_at_most_50us": {"value": added_25, "met": added_25 <= 50 && whole_25},
        "rss_with_1000_idle_tls_at_most_64mb": {"value": rss_mb, "met": rss_mb <= 64.0 && failed == 0},
        "no_errors": {"value": errors, "met": errors == 0},
    });
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    let listed = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let of_rounds = if rounds > 1 {
        format!("median of {rounds} rounds; ")
    } else {
        String::new()
    };
    println!(
        "\nCPU per request, gateway inbound vs pass-through: {gw_vs_pass:.2} ({of_rounds}rounds {}; target <= 1.33: {}; goal 1.11); vs HAProxy: {gw_vs_haproxy:.2} (rounds {})",
        listed(&gw_vs_pass_rounds),
        met(gw_vs_pass <= 1.33),
        listed(&gw_vs_haproxy_rounds)
    );
    println!(
        "CPU per request, gateway X outbound (its share) vs pass-through: {out_vs_pass:.2} ({of_rounds}rounds {}; target <= 1.5: {})",
        listed(&out_vs_pass_rounds),
        met(out_vs_pass <= 1.5)
    );
    println!("throughput, gateway vs pass-through (keep-alive max): {ratio:.2}");
    println!(
        "added p50 at 25% of L2 max: {added_25} µs (target <= 50 µs: {}); at 50%: {added_50} µs",
        met(added_25 <= 50 && whole_25)
    );
    println!(
        "throughput per busy CPU, one CPU -> two: pass-through {:.0} -> {:.0} req/s (kept {l2_kept:.2}; rounds {}), gateway inbound {:.0} -> {:.0} req/s (kept {l3_kept:.2}; rounds {}); gateway's against the pass-through's: {l3_vs_l2_kept:.2} (rounds {})",
        per_core(l2),
        per_core(l2_two),
        listed(&l2_kept_rounds),
        per_core(l3),
        per_core(l3_two),
        listed(&l3_kept_rounds),
        listed(&l3_vs_l2_kept_rounds)
    );
    println!(
        "gateway RSS with 1,000 idle TLS connections: {rss_mb:.1} MiB (target <= 64 MB: {})",
        met(rss_mb <= 64.0 && failed == 0)
    );
    let unsent: u64 = b.rungs.iter().map(|r| r.unsent).sum();
    println!("errors: {errors}; unsent (open-loop requests past a rung's capacity): {unsent}");
    let report = json!({
        "rungs": b.rungs,
        "ratios": {
            "gateway_cpu_vs_passthrough": gw_vs_pass,
            "gateway_cpu_vs_haproxy": gw_vs_haproxy,
            "outbound_cpu_vs_passthrough": out_vs_pass,
            "gateway_vs_passthrough": ratio,
            "outbound_vs_passthrough": out_max / l2_max.max(1e-9),
            "gateway_added_p50_us_at_25pct": added_25,
            "gateway_added_p50_us_at_50pct": added_50,
            // The CPU ratios above are the medians of these, one per round.
            "rounds": {
                "gateway_cpu_vs_passthrough": gw_vs_pass_rounds,
                "gateway_cpu_vs_haproxy": gw_vs_haproxy_rounds,
                "outbound_cpu_vs_passthrough": out_vs_pass_rounds,
            },
        },
        // Requests per busy CPU-second, medians of the rounds'; "kept" is two CPUs' figure
        // over one's, and the last ratio the gateway's kept over the pass-through's.
        "scaling": {
            "gateway_rps_per_busy_cpu_one_cpu": per_core(l3),
            "gateway_rps_per_busy_cpu_two_cpus": per_core(l3_two),
            "passthrough_rps_per_busy_cpu_one_cpu": per_core(l2),
            "passthrough_rps_per_busy_cpu_two_cpus": per_core(l2_two),
            "passthrough_kept_on_two_cpus": l2_kept,
            "gateway_kept_on_two_cpus": l3_kept,
            "gateway_kept_vs_passthrough_kept": l3_vs_l2_kept,
            "rounds": {
                "passthrough_kept_on_two_cpus": l2_kept_rounds,
                "gateway_kept_on_two_cpus": l3_kept_rounds,
                "gateway_kept_vs_passthrough_kept": l3_vs_l2_kept_rounds,
            },
        },
        "memory": {
            "gateway_rss_bytes_started": rss_fresh,
            "gateway_rss_bytes_before": rss_before,
            "gateway_rss_bytes_1000_idle_tls": rss_idle,
            "idle_connections": 1000 - failed,
        },
        "targets": targets,
        "machine": {
            "cpus": cpu_count(),
            "cpu_model": cpu_model(),
            "pinned": pinned,
            "haproxy": haproxy.as_ref().map(|_| haproxy_version()),
            "mode": if opts.quick { "quick" } else { "full" },
            "rounds": rounds,
        },
    });
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    dns.stop().await;
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_is_the_median_of_its_rounds() {
        assert_eq!(median(&[1.59, 1.36, 1.45]), 1.45);
        assert_eq!(median(&[1.2]), 1.2);
        assert_eq!(median(&[1.0, 2.0]), 1.5);
        assert!(median(&[]).is_nan());
        // A round whose rung is missing (NaN, of either sign) is left out.
        assert_eq!(median(&[f64::NAN, 1.3, 1.4]), 1.35);
        assert_eq!(median(&[-f64::NAN, 1.3, 1.4, 1.5]), 1.4);
        assert!(median(&[f64::NAN]).is_nan());
    }

    #[test]
    fn the_first_round_is_the_ladders_own_maximum() {
        assert_eq!(round_load(1), "max");
        assert_eq!(round_load(3), "max r3");
    }
}
