//! The fast (splicing) path against the typed path on arbitrary bytes: the same refusals, the
//! same decisions, and output that means the same message (`ssp_gateway::fuzzing::splice`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ssp_gateway::fuzzing::splice(data);
});
