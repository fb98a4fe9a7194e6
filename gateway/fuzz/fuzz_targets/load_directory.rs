//! The subscriber directory on arbitrary CSV: rows are taken or refused with an error that
//! names their line, never a panic; what is taken maps both ways.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssp_gateway::directory::Directory;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut dir = Directory::default();
    match dir.load_csv(std::path::Path::new("fuzz.csv"), text) {
        Ok(_) => {}
        Err(e) => assert!(e.line >= 1 && e.line <= text.lines().count() + 1, "{e}"),
    }
});
