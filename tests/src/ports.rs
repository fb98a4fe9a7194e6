//! Free loopback ports for servers that a test starts later (NSD, Prosody, Kamailio, gateway
//! processes), claimed across the test processes that run in parallel.
//!
//! Probing a port and releasing it leaves a window before the server binds it. nextest runs
//! each test in its own process, so two tests could pick the same port in that window, and a
//! gateway that a fault test has killed leaves its port unbound until it is started again.
//! Each port handed out is therefore claimed with an advisory lock (`flock`) on a file named
//! after it, held open for the rest of the process: another process cannot take that lock
//! while the claimant lives, and the kernel drops it when the claimant exits, however it
//! exits, so there are no stale claims to judge or clean up.

use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;

use rustix::fs::{FlockOperation, flock};

/// Ports are drawn below Linux's ephemeral range (32768-60999): a port the kernel hands out as
/// the source of an outgoing connection (Prosody's, a client's) between the probe and the
/// server's bind would otherwise be taken from under the test.
const RANGE: std::ops::Range<u16> = 20_000..32_000;

/// The locked claim files of this process, kept open (closing one would release its lock).
static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

fn claims_dir() -> PathBuf {
    std::env::temp_dir().join("ssp-testbed-ports")
}

/// What became of an attempt to lock a port's claim file.
enum Lock {
    /// Locked by this open file, for as long as it stays open.
    Held(File),
    /// Some process (this one included: a lock taken through another open file conflicts)
    /// holds it.
    Taken,
    /// No claim file could be opened (say, a claims directory of another user): the probe
    /// alone decides, as before claims existed.
    Unavailable,
}

/// Lock `port`'s claim file for this process.
fn lock(port: u16) -> Lock {
    let dir = claims_dir();
    if std::fs::create_dir_all(&dir).is_err() {
        return Lock::Unavailable;
    }
    let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(port.to_string()))
    else {
        return Lock::Unavailable;
    };
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Lock::Held(file),
        Err(_) => Lock::Taken,
    }
}

/// Claim `port` for this process, if no process holds it and it is free. The lock comes
/// first: a probe binds the port for a moment, which must never happen to a port another
/// process holds and is about to start a server on.
fn claim(port: u16) -> bool {
    let mut file = match lock(port) {
        Lock::Held(file) => file,
        Lock::Taken => return false,
        Lock::Unavailable => return probe(port),
    };
    if !probe(port) {
        // Dropping the file releases the lock.
        return false;
    }
    // For whoever looks at the directory: who holds the port.
    let _ = file.set_len(0);
    let _ = write!(file, "{}", std::process::id());
    if let Ok(mut held) = HELD.lock() {
        held.push(file);
    }
    true
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
        if claim(port) {
            return port;
        }
    }
    // Nothing free there: any port the kernel gives (unclaimed: a last resort).
    for _ in 0..1_000 {
        let Ok(tcp) = std::net::TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = tcp.local_addr() else { continue };
        if std::net::UdpSocket::bind(addr).is_ok() {
            return addr.port();
        }
    }
    panic!("no free loopback port for both TCP and UDP");
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
    fn a_port_locked_elsewhere_is_not_claimed_until_released() {
        let port = free_port();
        // Claimed: a second claim (another open file, as another process would make) fails.
        assert!(!claim(port), "claimed twice");
        // A lock held through another open file, as a live process's would be.
        let (other_port, holder) = (0..10_000)
            .map(|_| rand::random_range(RANGE))
            .filter(|p| *p != port)
            .find_map(|p| match lock(p) {
                Lock::Held(f) if probe(p) => Some((p, f)),
                _ => None,
            })
            .expect("a free port no process holds");
        assert!(!claim(other_port), "taken from a live holder");
        // The holder goes (as a process exiting would): the port can be claimed.
        drop(holder);
        assert!(claim(other_port), "claimed once released");
    }
}
