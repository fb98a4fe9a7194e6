//! `ssp-gateway`: command-line entry point. Parses arguments, sets up logging and dispatches.

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

#[derive(Subcommand)]
enum Cmd {
    /// Validate a config file (and the directory it names) and exit.
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

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Check { config } => {
            let cfg = ssp_gateway::config::Config::load(&config)?;
            let dir = ssp_gateway::directory::Directory::load(&cfg.directory)?;
            println!(
                "{}: ok ({} peers, {} routes, {} directory entries)",
                config.display(),
                cfg.peers.len(),
                cfg.routes.len(),
                dir.len()
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
