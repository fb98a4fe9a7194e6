//! Profiling driver (callgrind) for the fast path's reader: [`Spliced::scan`] of the codec
//! benchmark's ~1.3 KB Baraza-style `SendMessageRequest` (`tests/common/mod.rs`) and of a
//! core's `SendMessageResponse`, N times each.
//! `cargo build --release --example scan_loop`, then
//! `valgrind --tool=callgrind target/release/examples/scan_loop 10000`.
use ssp_gateway::ssp::Codec;
use ssp_gateway::ssp::splice::Spliced;

#[path = "../tests/common/mod.rs"]
mod common;

const ANSWER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<WV-SSP-Message xmlns="http://www.openmobilealliance.org/DTD/WV-SSP1.3">
<Session sessionID="core-1">
<Transaction mode="Response" transactionID="t-000000001">
<SendMessageResponse>
<Status code="200"/>
<MessageID>8aee9981801716c039215f69def4ffad7</MessageID>
</SendMessageResponse>
</Transaction>
</Session>
</WV-SSP-Message>
"#;

fn main() {
    let codec = Codec::default();
    let request = common::message();
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let mut ids = 0;
    for _ in 0..n {
        for body in [request.as_bytes(), ANSWER.as_bytes()] {
            if let Ok(Some(s)) = Spliced::scan(&codec, std::hint::black_box(body)) {
                ids += s.ids.len() + 1;
            }
        }
    }
    println!("{ids}");
}
