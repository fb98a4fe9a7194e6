//! Parse + rewrite + emit of a ~1 KB outbound `SendMessageRequest`, on the typed path and on
//! the fast (splicing) path, beside quick-xml alone.
//!
//! Run: `cargo bench -p ssp-gateway --bench codec`. Both numbers come from the same run, so
//! their ratio is meaningful on a noisy machine; the absolute MB/s are indicative.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ssp_gateway::config::{DirectorySpec, IdStyle};
use ssp_gateway::directory::Directory;
use ssp_gateway::rewrite::Direction;
use ssp_gateway::rewrite::{PeerView, Rewriter};
use ssp_gateway::ssp::splice::Spliced;
use ssp_gateway::ssp::{Codec, NS_WV_SSP_13};

#[path = "../tests/common/mod.rs"]
mod common;
use common::message;

fn quick_xml_alone(body: &str) -> usize {
    // The anchor: pull-parse every event and unescape every attribute, nothing else.
    let mut r = quick_xml::Reader::from_str(body);
    let mut n = 0;
    loop {
        match r.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(quick_xml::events::Event::Start(s) | quick_xml::events::Event::Empty(s)) => {
                for a in s.attributes().flatten() {
                    n += a
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map(|v| v.len())
                        .unwrap_or(0);
                }
            }
            Ok(_) => n += 1,
            Err(_) => break,
        }
    }
    n
}

fn bench(c: &mut Criterion) {
    let body = message();
    let codec = Codec::default();
    let rw = Rewriter::from_parts("opx.example", &["core.opx.example".into()], &[]);
    let mut dir = Directory::load(&DirectorySpec::default()).expect("empty directory");
    dir.load_csv(
        Path::new("bench.csv"),
        "+46701234567,wv:usera@core.opx.example\n",
    )
    .expect("bench directory");
    let view = PeerView {
        style: IdStyle::Msisdn,
        domain: Some("opy.example"),
    };

    let mut g = c.benchmark_group("ssp_1kb_send_message");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("quick_xml_events_only", |b| {
        b.iter(|| quick_xml_alone(black_box(&body)))
    });
    g.bench_function("parse", |b| {
        b.iter(|| {
            codec
                .parse(black_box(body.as_bytes()))
                .map(|m| m.as_session().is_some())
        })
    });
    // The outbound relay path: parse, label the session with the gateway's own ID (the
    // core's session ID never leaves), rewrite IDs, emit (with the topology-leak check).
    g.bench_function("parse_rewrite_emit", |b| {
        b.iter(|| {
            let mut m = codec
                .parse(black_box(body.as_bytes()))
                .expect("bench message parses");
            if let ssp_gateway::ssp::Body::Session(s) = &mut m.body {
                s.session_id = "gw-17@opx.example".into();
            }
            rw.emit_outbound(&dir, &mut m, view, NS_WV_SSP_13)
        })
    });
    // The same on the fast path: read without a typed tree, IDs rewritten in place, the
    // primitive's bytes spliced (what the gateway does for the primitives that dominate).
    g.bench_function("fast_parse_rewrite_emit", |b| {
        b.iter(|| {
            let mut s = Spliced::scan(&codec, black_box(body.as_bytes()))
                .expect("bench message reads")
                .expect("bench message is in the fast shape");
            rw.rewrite_slots(&dir, s.slots(), Direction::Outbound, view);
            let out = s.emit(NS_WV_SSP_13, "gw-17@opx.example", "gw-tid-1");
            assert!(rw.leaks(&out).is_none());
            out
        })
    });
    // Its two halves: the scan, and the rewrite and splice of what it found. The scan of a
    // body of a shape it has read (every request after a sender's first), and the scan of
    // one it has not (`scan_fresh`, which also makes the shape).
    g.bench_function("fast_scan_only", |b| {
        b.iter(|| Spliced::scan(&codec, black_box(body.as_bytes())).map(|s| s.map(|s| s.ids.len())))
    });
    g.bench_function("fast_scan_fresh", |b| {
        b.iter(|| {
            Spliced::scan_fresh(&codec, black_box(body.as_bytes()))
                .map(|(s, shape)| (s.map(|s| s.ids.len()), shape.is_some()))
        })
    });
    let scanned = Spliced::scan(&codec, body.as_bytes())
        .expect("bench message reads")
        .expect("bench message is in the fast shape");
    g.bench_function("fast_rewrite_emit_only", |b| {
        b.iter(|| {
            let mut s = black_box(&scanned).clone();
            rw.rewrite_slots(&dir, s.slots(), Direction::Outbound, view);
            let out = s.emit(NS_WV_SSP_13, "gw-17@opx.example", "gw-tid-1");
            assert!(rw.leaks(&out).is_none());
            out
        })
    });
    let parsed = codec.parse(body.as_bytes()).expect("bench message parses");
    g.bench_function("emit_only", |b| {
        b.iter(|| black_box(&parsed).emit(NS_WV_SSP_13))
    });
    g.bench_function("clone_rewrite", |b| {
        b.iter(|| {
            let mut m = black_box(&parsed).clone();
            rw.rewrite(
                &dir,
                &mut m,
                ssp_gateway::rewrite::Direction::Outbound,
                view,
            );
            m
        })
    });
    g.bench_function("clone_only", |b| b.iter(|| black_box(&parsed).clone()));
    g.finish();
    // The core's answer to it, as the load ladder's origin writes it: the other scan of
    // every request the fast path carries.
    let answer = concat!(
        r#"<?xml version="1.0" encoding="UTF-8"?><WV-SSP-Message xmlns="http://www.openmobilealliance.org/DTD/WV-SSP1.3">"#,
        r#"<Session sessionID="core-1"><Transaction mode="Response" transactionID="g1.0123456789abcdef">"#,
        r#"<SendMessageResponse><Status code="200"/><MessageID>m1</MessageID></SendMessageResponse>"#,
        r#"</Transaction></Session></WV-SSP-Message>"#,
    );
    let mut g = c.benchmark_group("ssp_answer");
    g.throughput(Throughput::Bytes(answer.len() as u64));
    g.bench_function("fast_scan_answer", |b| {
        b.iter(|| {
            Spliced::scan(&codec, black_box(answer.as_bytes()))
                .expect("bench answer reads")
                .expect("bench answer is in the fast shape")
                .answer_code()
        })
    });
    g.bench_function("fast_scan_answer_fresh", |b| {
        b.iter(|| {
            Spliced::scan_fresh(&codec, black_box(answer.as_bytes()))
                .map(|(s, shape)| (s.map(|s| s.answer_code()), shape.is_some()))
        })
    });
    g.finish();
    eprintln!("message size: {} bytes", body.len());
}

criterion_group!(benches, bench);
criterion_main!(benches);
