//! Profiling driver (callgrind): the outbound path (parse, relabel session, rewrite, emit) of
//! one ~1 KB message, N times. `cargo build --release --example parse_loop`, then
//! `valgrind --tool=callgrind target/release/examples/parse_loop 2000`.
use std::path::Path;

use ssp_gateway::config::DirectorySpec;
use ssp_gateway::directory::Directory;
use ssp_gateway::rewrite::{PeerView, Rewriter};
use ssp_gateway::ssp::{Body, Codec, NS_WV_SSP_13};

fn main() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../routes/examples/send-message-outbound.xml"
    );
    let body = std::fs::read(path).unwrap_or_default();
    let codec = Codec::default();
    let rw = Rewriter::from_parts("opx.example", &["core.opx.example".into()], &[]);
    let mut dir = Directory::load(&DirectorySpec::default()).unwrap_or_default();
    let _ = dir.load_csv(
        Path::new("x.csv"),
        "+46701234567,wv:usera@core.opx.example\n",
    );
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let mut len = 0;
    for _ in 0..n {
        let Ok(mut m) = codec.parse(std::hint::black_box(&body)) else {
            continue;
        };
        if let Body::Session(s) = &mut m.body {
            s.session_id = "gw-17@opx.example".into();
        }
        len += rw
            .emit_outbound(&dir, &mut m, PeerView::default(), NS_WV_SSP_13)
            .len();
    }
    println!("{len}");
}
