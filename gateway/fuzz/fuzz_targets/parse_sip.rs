//! What the SIP translator reads from the network besides SIP itself (rsipstack parses that):
//! PIDF bodies (no panic; what is taken reads back the same when written out), CPIM
//! wrappers and the IMDN notifications in them, and the header values it takes apart
//! (addresses, tags, Contact, route lists, subscription state).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssp_gateway::fuzzing;

fuzz_target!(|data: &[u8]| {
    let _ = fuzzing::pidf(data, 16 * 1024);
    let _ = fuzzing::cpim(data, 16 * 1024);
    let text = String::from_utf8_lossy(data);
    fuzzing::sip_header(&text);
});
