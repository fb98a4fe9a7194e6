//! The ladder's results: one row per measurement, the table printed at the end, and
//! `target/ladder.json`.

use serde::Serialize;

/// One measured rung.
#[derive(Debug, Clone, Serialize)]
pub struct Rung {
    /// E.g. `L3 gateway inbound`.
    pub name: String,
    /// `keep-alive` or `new-tls-per-request` / `new-tcp-per-request`.
    pub shape: String,
    /// `max` (closed loop; `max r2`, `max r3` for the steering rungs' later rounds) or the
    /// open-loop rate as a share of L2's maximum (`25%`).
    pub load: String,
    /// Good answers per second.
    pub rps: f64,
    /// Median latency (µs).
    pub p50_us: u32,
    /// 99th percentile latency (µs).
    pub p99_us: u32,
    /// CPU time of the rung's server process(es) per request (µs).
    pub cpu_us_per_req: f64,
    /// CPU time of the server process(es) per second of the run (1.0 = one CPU busy).
    pub server_cpu_util: f64,
    /// With more than one server process: the first one's CPU time per request (µs), e.g.
    /// gateway X's share of the outbound path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_server_cpu_us_per_req: Option<f64>,
    /// The share of the machine's CPU time the hypervisor gave other guests during the
    /// measurement (`/proc/stat` steal), when the kernel reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_steal: Option<f64>,
    /// Failed requests or error answers.
    pub errors: u64,
    /// Open loop: requests of the schedule that could not be sent (overload).
    pub unsent: u64,
    /// The first error seen, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// A share as a percentage with one decimal, or `-` where nothing was measured.
pub fn percent(share: Option<f64>) -> String {
    share.map_or_else(|| "-".to_owned(), |s| format!("{:.1}%", s * 100.0))
}

/// Print the table.
pub fn print_table(rungs: &[Rung]) {
    println!(
        "\n{:<34} {:<20} {:>6} {:>10} {:>9} {:>9} {:>11} {:>8} {:>6} {:>7} {:>7}",
        "rung",
        "shape",
        "load",
        "req/s",
        "p50 µs",
        "p99 µs",
        "CPU µs/req",
        "srv CPU",
        "steal",
        "errors",
        "unsent"
    );
    for r in rungs {
        println!(
            "{:<34} {:<20} {:>6} {:>10.0} {:>9} {:>9} {:>11.1} {:>7.0}% {:>6} {:>7} {:>7}",
            r.name,
            r.shape,
            r.load,
            r.rps,
            r.p50_us,
            r.p99_us,
            r.cpu_us_per_req,
            r.server_cpu_util * 100.0,
            percent(r.host_steal),
            r.errors,
            r.unsent
        );
    }
}
