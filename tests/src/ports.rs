//! Free loopback ports for servers that a test starts later (NSD, Prosody, Kamailio, gateway
//! processes), claimed across the test processes that run in parallel.
//!
//! Probing a port and releasing it leaves a window before the server binds it. nextest runs
//! each test in its own process, so two tests could pick the same port in that window, and a
//! gateway that a fault test has killed leaves its port unbound until it is started again.
//! Each port handed out is therefore claimed by a file named after it that holds the claiming
//! process's ID; another process skips it while that process lives. Claims are never released
//! early: a test process is short-lived, and a claim whose process has gone is taken over.

use std::io::Write as _;
use std::path::PathBuf;

/// Ports are drawn below Linux's ephemeral range (32768-60999): a port the kernel hands out as
/// the source of an outgoing connection (Prosody's, a client's) between the probe and the
/// server's bind would otherwise be taken from under the test.
const RANGE: std::ops::Range<u16> = 20_000..32_000;

fn claims_dir() -> PathBuf {
    std::env::temp_dir().join("ssp-testbed-ports")
}

/// Whether a claim file names a process that is still running (other than one that cannot be
/// read, which counts as alive: better to skip a port than to share one).
fn claim_is_live(path: &std::path::Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return true;
    };
    match text.trim().parse::<u32>() {
        Ok(pid) => std::path::Path::new(&format!("/proc/{pid}")).exists(),
        // Written but not yet filled in by its claimant: treat as live.
        Err(_) => true,
    }
}

/// Claim `port` for this process. False if another live process (or this one) holds it.
fn claim(port: u16) -> bool {
    let dir = claims_dir();
    if std::fs::create_dir_all(&dir).is_err() {
        // No claim directory: fall back to the probe alone.
        return true;
    }
    let path = dir.join(port.to_string());
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                return write!(f, "{}", std::process::id()).is_ok();
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if claim_is_live(&path) {
                    return false;
                }
                // Its process has gone: remove the stale claim and race for it once more
                // (`create_new` lets exactly one claimant win).
                let _ = std::fs::remove_file(&path);
            }
            Err(_) => return true,
        }
    }
    false
}

/// Whether `port` is free on 127.0.0.1 for both TCP and UDP right now.
fn probe(port: u16) -> bool {
    let Ok(tcp) = std::net::TcpListener::bind(("127.0.0.1", port)) else {
        return false;
    };
    let Ok(addr) = tcp.local_addr() else {
        return false;
    };
    std::net::UdpSocket::bind(addr).is_ok()
}

/// A free port on 127.0.0.1 for both UDP and TCP, claimed for this test process, for a
/// server started later.
pub fn free_port() -> u16 {
    for _ in 0..10_000 {
        let port = rand::random_range(RANGE);
        if probe(port) && claim(port) {
            return port;
        }
    }
    // Nothing free there: any port the kernel gives.
    loop {
        let Ok(tcp) = std::net::TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = tcp.local_addr() else { continue };
        if std::net::UdpSocket::bind(addr).is_ok() {
            return addr.port();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_handed_out_once_per_process() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ports.len(), "a port was handed out twice");
        for p in &ports {
            let text = std::fs::read_to_string(claims_dir().join(p.to_string())).unwrap();
            assert_eq!(text, std::process::id().to_string());
        }
    }

    #[test]
    fn a_claim_of_a_dead_process_is_taken_over() {
        // PIDs above the kernel's maximum (4,194,304) never name a running process.
        let port = (0..10_000)
            .map(|_| rand::random_range(RANGE))
            .find(|p| probe(*p) && !claims_dir().join(p.to_string()).exists())
            .expect("a free, unclaimed port");
        std::fs::create_dir_all(claims_dir()).unwrap();
        std::fs::write(claims_dir().join(port.to_string()), "4194305").unwrap();
        assert!(claim(port), "stale claim taken over");
        assert!(!claim(port), "now held by this process");
    }
}
