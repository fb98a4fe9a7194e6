//! Directory load benchmark: 1,000,000 explicit entries from CSV.
//!
//! Run: `cargo bench -p ssp-gateway --bench directory`. Prints load time, resident memory
//! added by the loaded directory (VmRSS delta, Linux), and lookup cost both ways.
//! Targets (issue: subscriber directory): load < 2 s, RSS < 300 MB.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use ssp_gateway::config::DirectorySpec;
use ssp_gateway::directory::Directory;
use ssp_gateway::ssp::E164;

const N: u64 = 1_000_000;

fn rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn main() {
    // Ignore criterion-style arguments cargo bench passes (e.g. --bench).
    let mut csv = String::with_capacity(N as usize * 48);
    csv.push_str("msisdn,core_id\n");
    for i in 0..N {
        csv.push_str(&format!(
            "+4670{:07},wv:subscriber{:07}@core.opx.example\n",
            i, i
        ));
    }
    let path = std::env::temp_dir().join(format!("ssp-dir-bench-{}.csv", std::process::id()));
    if let Err(e) = std::fs::write(&path, &csv) {
        eprintln!("cannot write {}: {e}", path.display());
        std::process::exit(1);
    }
    drop(csv);
    let spec = DirectorySpec {
        file: Some(path.clone()),
        templates: Vec::new(),
    };
    let before = rss_kib().unwrap_or(0);
    let t = Instant::now();
    let dir = match Directory::load(&spec) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("load failed: {e}");
            std::process::exit(1);
        }
    };
    let load = t.elapsed();
    let after = rss_kib().unwrap_or(0);
    let _ = std::fs::remove_file(Path::new(&path));
    assert_eq!(dir.len() as u64, N);

    let lookups = 2_000_000u64;
    let t = Instant::now();
    let mut hits = 0u64;
    for i in 0..lookups {
        let n = E164::from_value(46_700_000_000 + (i * 7919) % N).expect("valid number");
        hits += u64::from(black_box(dir.core_id(n)).is_some());
    }
    let by_msisdn = t.elapsed();
    let ids: Vec<String> = (0..1000)
        .map(|i| format!("wv:subscriber{:07}@core.opx.example", (i * 7919) % N))
        .collect();
    let t = Instant::now();
    for i in 0..lookups {
        hits += u64::from(black_box(dir.msisdn(&ids[(i % 1000) as usize])).is_some());
    }
    let by_core = t.elapsed();
    assert_eq!(hits, 2 * lookups);

    println!("directory: {N} entries");
    println!(
        "  load:                {:.2} s (target < 2 s)",
        load.as_secs_f64()
    );
    println!(
        "  RSS added:           {:.0} MiB (target < 300 MB); process RSS {:.0} MiB",
        (after.saturating_sub(before)) as f64 / 1024.0,
        after as f64 / 1024.0
    );
    println!(
        "  lookup msisdn->core: {:.0} ns",
        by_msisdn.as_nanos() as f64 / lookups as f64
    );
    println!(
        "  lookup core->msisdn: {:.0} ns",
        by_core.as_nanos() as f64 / lookups as f64
    );
}
