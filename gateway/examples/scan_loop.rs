//! Profiling driver (callgrind) for the fast path's reader: [`Spliced::scan`] of the load
//! ladder's ~1 KB `SendMessageRequest` and of a core's `SendMessageResponse`, N times each.
//! `cargo build --release --example scan_loop`, then
//! `valgrind --tool=callgrind target/release/examples/scan_loop 10000`.
use ssp_gateway::ssp::Codec;
use ssp_gateway::ssp::splice::Spliced;

/// The ladder's request (tests/src/bin/ladder.rs, `send_message`), as X's core sends it.
fn request() -> String {
    let mut m = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<WV-SSP-Message xmlns="http://www.openmobilealliance.org/DTD/WV-SSP1.3">
<Session sessionID="gw-1@opx.example">
<Transaction mode="Request" transactionID="t-000000001">
<SendMessageRequest deliveryReport="No">
<MetaInfo clientOriginated="Yes">
<Requestor serviceID="wv:@opx.example">
<User userID="wv:+46701234567@opx.example"/>
</Requestor></MetaInfo>
<MessageInfo messageID="8aee9981801716c039215f69def4ffad7" contentType="text/plain" contentSize="300" validity="600">
<Recipient>
<User userID="wv:+4915112345678"/>
</Recipient>
<Sender>
<User userID="wv:+46701234567@opx.example" friendlyName="Load"/>
</Sender>
<DateTime format="iso8601">2026-11-25T12:27:59Z</DateTime>
</MessageInfo>
<ContentData contentType="text/plain" encoding="base64">
"#,
    );
    for _ in 0..6 {
        m.push_str("SGVsbG8gZnJvbSBvcGVyYXRvciBYLCB0aGlzIGlzIGEgdGVzdCBtZXNzYWdlIQ==\r\n");
    }
    m.push_str(
        "</ContentData>\n</SendMessageRequest>\n</Transaction>\n</Session>\n</WV-SSP-Message>\n",
    );
    m
}

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
    let request = request();
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
