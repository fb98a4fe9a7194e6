//! How many heap allocations the fast path's codec makes for one message: the scan, the
//! rewrite and the splice of a 1.3 KB `SendMessageRequest` with seven ID slots, each way.
//! Counted on this thread by `allocation-counter` (the global allocator of this test
//! binary only). The bounds are what the code makes today: a change that copies each ID
//! again, or grows the output buffer, fails here before it shows in the load ladder
//! (README, Performance: allocations per request).

use std::path::Path;

use ssp_gateway::config::{DirectorySpec, IdStyle};
use ssp_gateway::directory::Directory;
use ssp_gateway::rewrite::{Direction, PeerView, Rewriter};
use ssp_gateway::ssp::splice::Spliced;
use ssp_gateway::ssp::{Codec, NS_WV_SSP_13};

mod common;
use common::message;

/// Scan, rewrite `direction` and splice `body`; the output's length (so nothing is
/// optimised away).
fn relay(codec: &Codec, rw: &Rewriter, dir: &Directory, body: &str, direction: Direction) -> usize {
    let view = PeerView {
        style: IdStyle::Msisdn,
        domain: Some("opy.example"),
    };
    let mut s = Spliced::scan(codec, body.as_bytes())
        .expect("the message reads")
        .expect("the message is in the fast shape");
    rw.rewrite_slots(dir, s.slots(), direction, view);
    let out = s.emit(NS_WV_SSP_13, "gw-17@opx.example", "gw-tid-1");
    // Towards a peer, the check every outbound message gets (towards the core it would
    // find the core's own names, rightly).
    if direction == Direction::Outbound {
        assert!(rw.leaks(&out).is_none(), "no core name left: {out}");
    }
    out.len()
}

#[test]
fn the_fast_codec_allocates_a_bounded_number_of_times_per_message() {
    let body = message();
    let codec = Codec::default();
    let rw = Rewriter::from_parts("opx.example", &["core.opx.example".into()], &[]);
    let mut dir = Directory::load(&DirectorySpec::default()).expect("empty directory");
    dir.load_csv(
        Path::new("alloc.csv"),
        "+46701234567,wv:usera@core.opx.example\n",
    )
    .expect("directory");
    // Warm: whatever is made once per process (lazy statics) is not per message.
    relay(&codec, &rw, &dir, &body, Direction::Outbound);
    relay(&codec, &rw, &dir, &body, Direction::Inbound);
    for (direction, bound) in [
        (Direction::Outbound, OUTBOUND),
        (Direction::Inbound, INBOUND),
    ] {
        let mut len = 0;
        let n = allocation_counter::measure(|| {
            len = relay(&codec, &rw, &dir, &body, direction);
        });
        assert!(len > body.len() / 2);
        println!(
            "{direction:?}: {} allocations, {} bytes",
            n.count_total, n.bytes_total
        );
        assert!(
            n.count_total <= bound,
            "{direction:?}: {} allocations per message, at most {bound} expected",
            n.count_total
        );
        assert_eq!(n.count_current, 0, "nothing kept after the message");
    }
}

/// Outbound (core to peer), 10: the scan's one buffer (the ID list: the reader's element
/// and attribute stacks, the scan's stack and its route-by and originator lists are inline),
/// the output, and the rewrite's: the service ID written with the public domain (a string
/// that grows once), two core names (each looked up under a key and written as a number)
/// and two numbers written again with our rule. IDs are read borrowed, never copied to be
/// read.
const OUTBOUND: u64 = 10;
/// Inbound (peer to core), 4: the ID list, the output, and the two numbers the rewrite
/// writes in the core's form; the rest stay borrowed from the body.
const INBOUND: u64 = 4;

/// A body of a shape not read before is scanned and its shape made (`ssp/splice/shape.rs`):
/// 7 allocations, the scan's ID list, the holes it noted, and the shape's (its fixed bytes,
/// which `Box<str>` fits to their length, its pieces, the check that every ID came from a
/// hole, and its skeleton's ID list). A sender pays this once per shape, not per message.
#[test]
fn a_new_shape_costs_a_bounded_number_of_allocations() {
    let body = message();
    let codec = Codec::default();
    let warm = Spliced::scan_fresh(&codec, body.as_bytes()).expect("the message reads");
    assert!(warm.1.is_some(), "a shape is made of it");
    let n = allocation_counter::measure(|| {
        let (s, shape) = Spliced::scan_fresh(&codec, body.as_bytes()).expect("the message reads");
        assert!(s.is_some() && shape.is_some());
    });
    println!("{} allocations, {} bytes", n.count_total, n.bytes_total);
    assert!(
        n.count_total <= NEW_SHAPE,
        "{} allocations per new shape, at most {NEW_SHAPE} expected",
        n.count_total
    );
}

const NEW_SHAPE: u64 = 7;
