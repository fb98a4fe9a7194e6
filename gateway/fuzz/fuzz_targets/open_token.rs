//! Transaction-ID tokens: any string a peer sends as a transaction ID is refused or opened
//! without a panic, and a token made of any fields opens to those fields (seal/open round
//! trip, the strings cut at 255 bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssp_gateway::token::{Leg, TokenKeys};

fuzz_target!(|data: &[u8]| {
    let keys = TokenKeys::new(&[b"0123456789abcdef0123456789abcdef".to_vec()], 3600);
    let text = String::from_utf8_lossy(data);
    let _ = keys.open(&text);
    let _ = keys.open(&format!("g2.{text}"));
    let _ = keys.open(&format!("g1.{text}"));
    if data.len() >= 10 {
        let (head, rest) = data.split_at(10);
        let rest = String::from_utf8_lossy(rest);
        // Cut near the middle, on a character boundary (lossy decoding makes 3-byte U+FFFD).
        let mut cut = rest.len() / 2;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (tid, peer) = rest.split_at(cut);
        let id = u64::from_le_bytes(head[..8].try_into().unwrap_or_default());
        let leg = if head[8] & 1 == 0 { Leg::ToPeer } else { Leg::ToCore };
        let s = keys.issue(leg, id, head[9], head[8], tid, peer);
        let t = keys.open(&s).expect("our own token opens");
        assert_eq!((t.leg, t.request_id, t.part, t.parts), (leg, id, head[9], head[8]));
    }
});
