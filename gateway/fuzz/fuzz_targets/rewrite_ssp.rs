//! Outbound rewriting on arbitrary accepted messages: never panics, and no core domain is
//! left in the output (topology hiding holds for any input).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ssp_gateway::directory::Directory;
use ssp_gateway::rewrite::{PeerView, Rewriter};
use ssp_gateway::ssp::{Codec, NS_WV_SSP_13};

fuzz_target!(|data: &[u8]| {
    let Ok(mut msg) = Codec::default().parse(data) else { return };
    let rw = Rewriter::from_parts("opx.example", &["core.opx.example".into()], &["imps01.internal".into()]);
    let mut dir = Directory::default();
    let _ = dir.load_csv(std::path::Path::new("f.csv"), "+46701234567,wv:usera@core.opx.example\n");
    let out = rw.emit_outbound(&dir, &mut msg, PeerView::default(), NS_WV_SSP_13);
    assert!(rw.leaks(&out).is_none(), "core name leaked: {out}");
});
