//! What the XMPP translator reads from other servers: a stream's bytes in reads of any size
//! (the first byte chooses it), framed the same whatever the reads, each stanza parsed with
//! the limits, presence mapped and read back the same, JIDs escaped and unescaped unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssp_gateway::fuzzing;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let _ = fuzzing::xmpp_stream(rest, usize::from(chunk));
});
