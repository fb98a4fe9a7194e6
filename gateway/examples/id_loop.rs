//! Profiling driver (callgrind) for [`WvIdRef::parse`] on the IDs a message names.
use ssp_gateway::ssp::WvIdRef;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let ids = [
        "wv:+447700900123",
        "wv:@opy.example",
        "wv:usera@core.opx.example",
    ];
    let mut k = 0;
    for _ in 0..n {
        for id in ids {
            if let Ok(p) = WvIdRef::parse(std::hint::black_box(id)) {
                k += p.user.len() + usize::from(p.e164().is_some());
            }
        }
    }
    println!("{k}");
}
