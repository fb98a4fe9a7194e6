//! The README's first command: the demo plays every use case and the number port, and exits 0.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::process::Command;

#[test]
fn demo_plays_every_use_case_and_exits_0() {
    let out = Command::new(env!("CARGO_BIN_EXE_demo")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for section in [
        "Use case 5.20",
        "Use case 5.21",
        "Use case 5.22",
        "Number portability",
        "gateway X -> gateway Y  request  SearchRequest",
        "gateway X -> gateway Z  request  SendMessageRequest",
        "E2U+pres",
        "SRV _imps-server._tcp.opz.example.",
        "alternative flows: Alice and Dave, whose operator W speaks SIP/SIMPLE only",
        "alternative flows: Alice and Erin, whose operator V speaks XMPP only",
        "SRV _xmpp-server._tcp.opv.example.",
        "Alice received \"Hi Alice, Erin here\" from wv:+4940123456789",
        "Alice sees Erin: online Some(true), NOT_AVAILABLE, \"On the train\"",
        "All use cases and the number port worked.",
    ] {
        assert!(stdout.contains(section), "missing {section:?}:\n{stdout}");
    }
}
