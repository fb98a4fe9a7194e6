//! The process's own metrics, as Prometheus's client libraries name them
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
//! `process_start_time_seconds`), read from `/proc/self` at each scrape (Linux; elsewhere
//! they stay at zero). Written here rather than through the prometheus crate's `process`
//! feature, which would bring in the procfs crate for six numbers.

use std::sync::Mutex;

use prometheus::{Counter, Gauge, Registry};

/// `/proc` reports times in USER_HZ, which Linux fixes at 100 per second for user space.
const USER_HZ: f64 = 100.0;

/// The process metrics and the CPU time already counted.
pub(crate) struct Process {
    cpu: Counter,
    rss: Gauge,
    vsize: Gauge,
    fds: Gauge,
    max_fds: Gauge,
    start: Gauge,
    counted: Mutex<f64>,
}

impl Process {
    /// Registered in `r` (without the `ssp_` prefix, as every exporter names them).
    pub(crate) fn register(r: &Registry) -> Option<Process> {
        let gauge = |name: &str, help: &str| Gauge::new(name, help).ok();
        let p = Process {
            cpu: Counter::new(
                "process_cpu_seconds_total",
                "User and system CPU time spent, in seconds",
            )
            .ok()?,
            rss: gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
            )?,
            vsize: gauge(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
            )?,
            fds: gauge("process_open_fds", "Open file descriptors")?,
            max_fds: gauge("process_max_fds", "The limit of open file descriptors")?,
            start: gauge(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds",
            )?,
            counted: Mutex::new(0.0),
        };
        for m in [&p.rss, &p.vsize, &p.fds, &p.max_fds, &p.start] {
            r.register(Box::new(m.clone())).ok()?;
        }
        r.register(Box::new(p.cpu.clone())).ok()?;
        Some(p)
    }

    /// Read `/proc/self` now (what cannot be read keeps its last value).
    pub(crate) fn update(&self) {
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // The command name may hold spaces and parentheses: fields after its last ')'.
            let fields: Vec<&str> = stat
                .rfind(')')
                .map(|i| stat[i + 1..].split_whitespace().collect())
                .unwrap_or_default();
            // Fields 14, 15 (utime, stime) and 22 (starttime) of the line: 12, 13 and 20
            // after the name (state is the first).
            let num = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
            if let (Some(u), Some(s)) = (num(11), num(12)) {
                let now = (u + s) / USER_HZ;
                let mut counted = self
                    .counted
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if now > *counted {
                    self.cpu.inc_by(now - *counted);
                    *counted = now;
                }
            }
            if let (Some(ticks), Some(boot)) = (num(19), boot_time()) {
                self.start.set(boot + ticks / USER_HZ);
            }
        }
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            let kib = |key: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                    .map(|k| k * 1024.0)
            };
            if let Some(v) = kib("VmRSS:") {
                self.rss.set(v);
            }
            if let Some(v) = kib("VmSize:") {
                self.vsize.set(v);
            }
        }
        if let Ok(d) = std::fs::read_dir("/proc/self/fd") {
            // The directory's own descriptor is among them while it is read.
            self.fds.set(d.count().saturating_sub(1) as f64);
        }
        if let Ok(limits) = std::fs::read_to_string("/proc/self/limits")
            && let Some(soft) = limits
                .lines()
                .find_map(|l| l.strip_prefix("Max open files"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        {
            self.max_fds.set(soft);
        }
    }
}

/// When the machine booted (Unix seconds), from `/proc/stat`.
fn boot_time() -> Option<f64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_process_reads_itself() {
        let r = Registry::new();
        let p = Process::register(&r).unwrap();
        // Spend a little CPU so the counter has something to show.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        p.update();
        assert!(p.rss.get() > 1_000_000.0, "{}", p.rss.get());
        assert!(p.vsize.get() >= p.rss.get());
        assert!(p.fds.get() >= 3.0, "stdin, stdout, stderr at least");
        assert!(p.max_fds.get() >= p.fds.get());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            (now - 86_400.0..=now + 5.0).contains(&p.start.get()),
            "{}",
            p.start.get()
        );
        let cpu = p.cpu.get();
        assert!(cpu > 0.0);
        p.update();
        assert!(p.cpu.get() >= cpu, "a counter never goes down");
    }
}
