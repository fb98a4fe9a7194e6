//! CPU time and resident memory of a process, from `/proc` (Linux).

use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`, normally 100).
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// User plus system CPU time the process has used so far.
pub fn cpu_time(pid: u32, ticks: u64) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_micros((utime + stime) * 1_000_000 / ticks))
}

/// The machine's CPU time so far, all CPUs together, in clock ticks: (stolen, total).
/// Stolen time is what the hypervisor gave other guests while this one had work; a round
/// measured while it is high is not comparable with one where it is not.
pub fn host_times() -> Option<(u64, u64)> {
    parse_host_times(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// [`host_times`] from the text of `/proc/stat`: its `cpu` line's fields are user, nice,
/// system, idle, iowait, irq, softirq, steal, then guest times already counted in user.
fn parse_host_times(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    (v.len() == 8).then(|| (v[7], v.iter().sum()))
}

/// Resident set size in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        // Burn a little CPU so the counter is not zero on a coarse clock.
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_time(me, clock_ticks()).is_some());
        assert!(rss_bytes(me).unwrap() > 1 << 20);
        let (steal, total) = host_times().unwrap();
        assert!(steal <= total && total > 0);
    }

    #[test]
    fn steal_is_the_eighth_field_of_the_cpu_line() {
        let stat = "cpu  100 2 30 400 5 0 6 7 9 0\ncpu0 50 1 15 200 2 0 3 4 0 0\n";
        assert_eq!(parse_host_times(stat), Some((7, 550)));
        // Kernels before 2.6.11 had no steal field: nothing to say.
        assert_eq!(parse_host_times("cpu  1 2 3 4 5 6 7\n"), None);
        assert_eq!(parse_host_times("intr 5\n"), None);
    }
}
