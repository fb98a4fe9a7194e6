//! Profiling driver (callgrind) for the fast path's reader: [`Spliced::scan`] of the codec
//! benchmark's ~1.3 KB Baraza-style `SendMessageRequest` (`tests/common/mod.rs`) and of a
//! core's `SendMessageResponse` (to a request under one of our tokens), N times each, or
//! only one of them (`request`, `answer`; `both` for both). Each scan after the first reads
//! the body by its shape (`ssp/splice/shape.rs`), as the gateway reads a sender's messages;
//! with `fresh`, each is scanned afresh (and its shape made), as a body of a new shape is;
//! with `varied`, each comes in 16 shapes in turn (its layout after the declaration), more
//! than a thread keeps, so none is read by its shape: what a sender that never writes the
//! same shape twice costs.
//! `cargo build --release --example scan_loop`, then
//! `valgrind --tool=callgrind target/release/examples/scan_loop 10000 [request|answer|both]
//! [fresh|varied]`.
use ssp_gateway::ssp::Codec;
use ssp_gateway::ssp::splice::Spliced;

#[path = "../tests/common/mod.rs"]
mod common;

const ANSWER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<WV-SSP-Message xmlns="http://www.openmobilealliance.org/DTD/WV-SSP1.3">
<Session sessionID="core-1">
<Transaction mode="Response" transactionID="g2.sVb0QmW3xY7nQ2pE5rT8uK1zL4oA6dF9gH2jC5vB8nM1qW4eR7tY0uI3oP6aS9dF2gH5jK8lZ1xC4vB7nM0qW3eR6t">
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
    let only = std::env::args().nth(2).filter(|o| o != "both");
    let mode = std::env::args().nth(3);
    let fresh = mode.as_deref() == Some("fresh");
    let shapes = if mode.as_deref() == Some("varied") {
        16
    } else {
        1
    };
    let bodies: Vec<Vec<u8>> = [
        ("request", request.as_bytes()),
        ("answer", ANSWER.as_bytes()),
    ]
    .into_iter()
    .filter(|(name, _)| only.as_deref().is_none_or(|o| o == *name))
    .flat_map(|(_, body)| {
        (0..shapes).map(move |k| {
            let text = String::from_utf8_lossy(body);
            text.replacen("?>", &format!("?>{}", " ".repeat(k)), 1)
                .into_bytes()
        })
    })
    .collect();
    let mut ids = 0;
    for _ in 0..n / shapes {
        for body in &bodies {
            let body = std::hint::black_box(body.as_slice());
            let scanned = if fresh {
                Spliced::scan_fresh(&codec, body).map(|(s, _)| s)
            } else {
                Spliced::scan(&codec, body)
            };
            if let Ok(Some(s)) = scanned {
                ids += s.ids.len() + 1;
            }
        }
    }
    println!("{ids}");
}
