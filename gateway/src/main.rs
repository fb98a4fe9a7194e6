//! `ssp-gateway`: command-line entry point. Parses arguments, sets up logging and dispatches.

/// The allocator, and why: `ssp_gateway::alloc`.
#[global_allocator]
static ALLOC: ssp_gateway::alloc::MiMalloc = ssp_gateway::alloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ssp_gateway::rewrite::Direction;

#[derive(Parser)]
#[command(
    name = "ssp-gateway",
    version,
    about = "OMA IMPS SSP edge proxy with wv:+MSISDN routing"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// What `run --help` says beyond the options: the man page of the service.
const RUN_HELP: &str = "\
CONFIGURATION:
    FILE is TOML (routes/example.toml documents every key). Paths in it are relative to the
    file. `ssp-gateway check --config FILE` validates it and everything it names without
    binding a port; errors name the file, line and key.

ENVIRONMENT:
    RUST_LOG        log filter (default: info,rsipstack=warn), e.g. RUST_LOG=debug or
                    RUST_LOG=info,ssp_gateway::links=debug
    NOTIFY_SOCKET   set by systemd (Type=notify): READY=1 once the listeners are bound,
                    RELOADING=1 around a reload, STOPPING=1 when draining begins

SIGNALS:
    SIGTERM, SIGINT  stop taking requests (HTTP 503, /ready 503), answer open ones within
                     [timeouts] drain plus the request deadline, let connections close
                     within drain again (2 x drain + request in all), then exit
    SIGHUP           reload with traffic flowing: the config file is checked and built whole
                     (peers, routes, resolver, limits, trust anchors and pins, token keys
                     with a grace period for the old ones, directory, listeners' TLS) and
                     put in use; refused whole if anything fails (what runs stays); what
                     cannot change under running sockets (listen addresses, public_domain,
                     [store], [cluster], [sip], other cert/key files, whether the core
                     listener speaks TLS, removing hmac_key_file) is named, in use after a
                     restart

EXIT STATUS:
    0  stopped after draining
    1  could not start (configuration, certificates, a busy address, the state store) or
       failed while running; the reason is the last line on stderr

Logs go to stderr: text, coloured only at a terminal, or JSON lines with --json-logs.";

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway (SIGTERM/SIGINT: drain and exit; SIGHUP: reload).
    #[command(after_long_help = RUN_HELP)]
    Run {
        /// The configuration file (TOML; see routes/example.toml).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Log as JSON lines instead of text.
        #[arg(long)]
        json_logs: bool,
    },
    /// Certificate tools.
    Certs {
        #[command(subcommand)]
        cmd: CertsCmd,
    },
    /// Show how a number or domain is routed: ENUM, SRV, fallbacks (exit 0 route, 2 none, 1 error).
    Resolve {
        /// Config file whose [resolver] and peering table to use.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Name server IP:PORT (overrides the config; repeatable).
        #[arg(long, value_name = "IP:PORT", action = clap::ArgAction::Append)]
        nameserver: Vec<std::net::SocketAddr>,
        /// ENUM suffix (overrides the config; repeatable; default e164.arpa).
        #[arg(long, value_name = "SUFFIX", action = clap::ArgAction::Append)]
        suffix: Vec<String>,
        /// im (messaging, search) or pres (presence).
        #[arg(long)]
        service: Option<String>,
        /// Print one JSON object instead of the trace.
        #[arg(long)]
        json: bool,
        /// wv:+E164, +E164 or a domain.
        target: String,
    },
    /// Validate a config file and everything it names (directory, keys, certificates, trust
    /// anchors), as `run` would before binding its ports, and exit.
    Check {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// SSP message tools.
    Ssp {
        #[command(subcommand)]
        cmd: SspCmd,
    },
    /// Ask a running gateway's admin listener whether it serves (GET --path, /health by default):
    /// exit 0 when it answers 200 within 3 s, 1 otherwise. For container health checks,
    /// which have no HTTP client of their own.
    Health {
        /// The admin listener's address.
        #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:9090")]
        admin: std::net::SocketAddr,
        /// The path to ask (`/ready` fails while draining; `/health` only when dead).
        #[arg(long, default_value = "/health")]
        path: String,
    },
}

#[derive(Subcommand)]
enum CertsCmd {
    /// Make a development CA and one certificate per operator domain.
    Dev {
        /// Output directory (ca.pem, ca.key, <domain>/cert.pem, <domain>/key.pem).
        #[arg(long)]
        out: PathBuf,
        /// An operator domain to issue a certificate for (repeatable: --operator opx.example
        /// --operator opy.example).
        #[arg(long = "operator", required = true, value_name = "DOMAIN", action = clap::ArgAction::Append)]
        operators: Vec<String>,
        /// Replace a CA, certificates or keys that already exist in --out (they are not
        /// replaced otherwise: a CA's key is what every certificate issued so far hangs on).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum SspCmd {
    /// Rewrite one SSP message as the gateway would; route-by IDs go to stderr.
    Rewrite {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Which way the message travels.
        #[arg(long, short)]
        direction: Dir,
        /// Write IDs and namespace as this peer wants them (a [[peer]] domain).
        #[arg(long)]
        peer: Option<String>,
        /// The message file, or - for stdin.
        #[arg(default_value = "-")]
        input: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Dir {
    Outbound,
    Inbound,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ssp-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The HTTP status of `GET path` at `admin`, within 3 s.
fn health(admin: std::net::SocketAddr, path: &str) -> anyhow::Result<u16> {
    use std::io::{Read, Write};
    let limit = std::time::Duration::from_secs(3);
    let mut s = std::net::TcpStream::connect_timeout(&admin, limit)?;
    s.set_read_timeout(Some(limit))?;
    s.set_write_timeout(Some(limit))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head)?;
    let line = String::from_utf8_lossy(&head[..n]);
    line.strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("{admin}: not an HTTP answer"))
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // The SIP stack logs every datagram at info: only its warnings by default, so that
        // a SIP peer cannot flood the log.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rsipstack=warn"));
    // Colour only for a person at a terminal: a log file or journald gets plain text.
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

async fn serve(config: PathBuf) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let cfg = ssp_gateway::config::Config::load(&config)?;
    use ssp_gateway::app::notify::notify;
    let running = ssp_gateway::app::start(cfg, Default::default()).await?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    // The listeners are bound and the signals handled: systemd may call us started.
    notify("READY=1\nSTATUS=serving");
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                notify("RELOADING=1");
                // Logged and counted by the gateway; what runs stays if it is refused. This
                // loop runs on the thread of `block_on`, not on a runtime worker: the files
                // read here hold up no request.
                let _ = running.reload();
                notify("READY=1\nSTATUS=serving");
            }
        }
    }
    tracing::info!("shutting down: draining open requests");
    notify("STOPPING=1\nSTATUS=draining");
    running.shutdown().await;
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Run { config, json_logs } => {
            init_logs(json_logs);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Resolve {
            config,
            nameserver,
            suffix,
            service,
            json,
            target,
        } => {
            let opts = ssp_gateway::cli::resolve::Options {
                config: config.as_deref(),
                nameservers: nameserver,
                suffixes: suffix,
                service: service.as_deref(),
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (d, trace) = rt.block_on(ssp_gateway::cli::resolve::run(&opts, &target))?;
            if json {
                println!("{}", serde_json::to_string(&d)?);
            } else {
                for l in trace {
                    println!("{l}");
                }
                println!("protocol: {}", d.protocol.as_str());
                if let Some(dom) = &d.domain {
                    println!("domain: {dom}");
                }
                for t in &d.targets {
                    println!("target: {}:{} {:?}", t.host, t.port, t.addrs);
                }
                println!("ttl: {}", d.ttl);
            }
            Ok(if ssp_gateway::cli::resolve::has_route(&d) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Cmd::Certs {
            cmd:
                CertsCmd::Dev {
                    out,
                    operators,
                    force,
                },
        } => {
            for f in ssp_gateway::certs::write_dev(&out, &operators, force)? {
                println!("wrote {f}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Health { admin, path } => {
            let status = health(admin, &path)?;
            if status == 200 {
                println!("{admin}{path}: {status}");
                Ok(ExitCode::SUCCESS)
            } else {
                anyhow::bail!("{admin}{path}: HTTP {status}")
            }
        }
        Cmd::Check { config } => {
            let cfg = ssp_gateway::config::Config::load(&config)?;
            // The resolver's construction wants a runtime context; nothing is bound or sent.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let gw = rt.block_on(async { ssp_gateway::app::check(cfg) })?;
            for w in &gw.cfg().warnings {
                eprintln!("{}: warning: {w}", config.display());
            }
            println!(
                "{}: ok ({} peers, {} routes, {} directory entries)",
                config.display(),
                gw.cfg().peers.len(),
                gw.cfg().routes.len(),
                gw.directory().len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Ssp {
            cmd:
                SspCmd::Rewrite {
                    config,
                    direction,
                    peer,
                    input,
                },
        } => {
            let direction = match direction {
                Dir::Outbound => Direction::Outbound,
                Dir::Inbound => Direction::Inbound,
            };
            let out = ssp_gateway::cli::rewrite::run(&config, direction, peer.as_deref(), &input)?;
            for r in &out.route_by {
                eprintln!("route-by: {r}");
            }
            println!("{}", out.xml);
            Ok(ExitCode::SUCCESS)
        }
    }
}
