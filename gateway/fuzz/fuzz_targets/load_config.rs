//! The config loader on arbitrary text: a config is accepted or refused with an error that
//! names a line of the file, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssp_gateway::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = Config::from_str(std::path::Path::new("fuzz.toml"), text) {
        if let Some(line) = e.line {
            assert!(line >= 1 && line <= text.lines().count() + 1, "line {line} of {e}");
        }
    }
});
