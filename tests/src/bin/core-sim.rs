//! `core-sim`: run a simulated legacy IMPS core in a terminal, next to a gateway.
//!
//! ```text
//! core-sim --domain core.opx.example --listen 127.0.0.1:7070 --gateway http://127.0.0.1:18080/ \
//!          --user usera:+46701234567:"User A"
//! ```
//! Then type commands on stdin (`help` lists them); messages and presence updates the core
//! receives are printed as they arrive.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use anyhow::{Context, bail};
use ssp_testbed::core_sim::{CoreMode, CoreSim, CoreSimConfig};
use tokio::io::{AsyncBufReadExt, BufReader};

const HELP: &str = "commands:
  send FROM TO TEXT...      instant message (TO e.g. wv:+4915112345678), with delivery report
  subscribe FROM TO         presence subscription
  presence USER AVAIL TEXT  set presence (AVAILABLE|DISCREET|NOT_AVAILABLE) and notify watchers
  get FROM TO               fetch presence
  search FROM NUMBER        search a user by mobile number
  add FROM ID               add a contact (subscribes)
  show USER                 messages, reports, presence seen, contacts, watchers
  quit";

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(domain), Some(gateway)) = (arg(&args, "--domain"), arg(&args, "--gateway")) else {
        bail!(
            "usage: core-sim --domain D --gateway URL [--listen ADDR] [--sync] [--user local:+msisdn:Name]..."
        );
    };
    let mode = if args.iter().any(|a| a == "--sync") {
        CoreMode::Sync
    } else {
        CoreMode::Async
    };
    let mut cfg = CoreSimConfig::new(&domain, mode);
    if let Some(l) = arg(&args, "--listen") {
        cfg.listen = Some(l.parse().context("--listen")?);
    }
    let core = CoreSim::start(cfg).await?;
    core.set_gateway_url(&gateway);
    for (i, a) in args.iter().enumerate() {
        if a == "--user" {
            let spec = args.get(i + 1).context("--user needs local:+msisdn:Name")?;
            let mut parts = spec.splitn(3, ':');
            let local = parts.next().unwrap_or_default();
            let msisdn = parts.next().filter(|m| !m.is_empty());
            let name = parts.next().unwrap_or(local);
            core.add_user(local, msisdn, name);
        }
    }
    println!(
        "core {domain} listening on {} (gateway {gateway})",
        core.url()
    );
    println!("directory lines for the gateway:\n{}", core.directory_csv());
    println!("{HELP}");
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut printed = 0usize;
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                let w: Vec<&str> = line.split_whitespace().collect();
                let r = match w.as_slice() {
                    ["send", from, to, text @ ..] => core
                        .send_message(from, &[to], &text.join(" "), true)
                        .await
                        .map(|(id, st)| format!("message {id}: status {} {}", st.code, st.description.unwrap_or_default())),
                    ["subscribe", from, to] => core.subscribe(from, to).await.map(|st| format!("status {}", st.code)),
                    ["presence", user, avail, text @ ..] => core.set_presence(user, avail, &text.join(" ")).await.map(|_| "ok".into()),
                    ["get", from, to] => core.get_presence(from, to).await.map(|(st, v)| format!("status {}: {v:?}", st.code)),
                    ["search", from, number] => core.search_msisdn(from, number).await.map(|(st, v)| format!("status {}: {v:?}", st.code)),
                    ["add", from, id] => core.add_contact(from, id, None).await.map(|st| format!("status {}", st.code)),
                    ["show", user] => Ok(format!(
                        "received {:?}\nreports {:?}\npresence {:?}\ncontacts {:?}\nwatchers {:?}",
                        core.received(user), core.delivery_reports(user), core.presence_seen(user),
                        core.contacts(user), core.watchers(user)
                    )),
                    ["quit"] => break,
                    [] => continue,
                    _ => Ok(HELP.into()),
                };
                match r {
                    Ok(s) => println!("{s}"),
                    Err(e) => println!("error: {e:#}"),
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(300)) => {
                // Show what arrived in the meantime (a terminal tool, not a test: polling is fine).
                let log = core.wire_log();
                for (dir, body) in log.iter().skip(printed) {
                    if body.contains("SendMessageRequest") && matches!(dir, ssp_testbed::core_sim::WireDir::Received) {
                        println!("<< incoming message: {body}");
                    }
                }
                printed = log.len();
            }
        }
    }
    core.shutdown().await;
    Ok(())
}
