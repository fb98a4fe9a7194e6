//! The SSP parser on arbitrary bytes: it must never panic, and whatever it accepts must
//! survive emit -> parse unchanged (the codec's round-trip property). Transactions refused
//! individually (no transactionID, no primitive) are answered with a 400 and never re-emitted,
//! so they are left out of the comparison.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssp_gateway::ssp::{Codec, NS_WV_SSP_13};

fuzz_target!(|data: &[u8]| {
    let codec = Codec::default();
    if let Ok(mut msg) = codec.parse(data) {
        if let ssp_gateway::ssp::Body::Session(s) = &mut msg.body {
            s.rejected.clear();
        }
        let out = msg.emit(NS_WV_SSP_13);
        let mut back = codec
            .parse(out.as_bytes())
            .expect("the gateway's own output must parse");
        back.namespace = msg.namespace.clone();
        assert_eq!(back, msg, "round trip changed the message");
    }
});
