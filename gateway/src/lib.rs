//! ssp-gateway: a TLS-terminating OMA IMPS SSP edge proxy.
//!
//! It sits in front of an operator's legacy IMPS server ("the core"), rewrites the core's user
//! IDs to `wv:+MSISDN`, finds peer operators through ENUM and DNS SRV, and enforces peer policy.
//! See `README.md` for operation, `routes/example.toml` for configuration and
//! `gateway/PROTOCOL.md` for the SSP profile it speaks.
//!
//! Modules, from the bottom up: `ssp` (the message model and codec), `config`, `directory`,
//! `rewrite`, `token`, `tls`, `error` (the one failure classification), `web` (HTTP pieces),
//! `drain`, `ops` (metrics, admin endpoints), `resolve` (DNS only), `links` (the far sides),
//! `pipeline` (the request path, stage by stage), `app` (the service: listeners, start, stop);
//! and `alloc`, the allocator the binaries declare.

pub mod alloc;
pub mod app;
pub mod budget;
pub mod certs;
pub mod cli;
pub mod config;
pub mod directory;
pub mod drain;
pub mod error;
pub mod links;
pub mod ops;
pub mod pipeline;
pub mod resolve;
pub mod rewrite;
pub mod ssp;
pub mod store;
pub mod tls;
pub mod token;
pub mod web;

/// Entry points for the fuzz targets (`gateway/fuzz`) into parsers that are otherwise
/// reached only from inside the SIP and XMPP translators. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    /// The fast path against the typed path on `body`: the same refusal, or, for what the
    /// fast path takes, the same decisions (route-by IDs, originators, requestor, report,
    /// answer code) and, after rewriting each way, output that parses to the typed path's
    /// message. A body the fast path leaves alone is the typed path's. Whether the fast path
    /// took it.
    pub fn splice(body: &[u8]) -> bool {
        use crate::directory::Directory;
        use crate::rewrite::{Direction, PeerView, Rewriter};
        use crate::ssp::splice::Spliced;
        use crate::ssp::{Body, Codec};
        const NS: &str = "http://www.openmobilealliance.org/DTD/IMPS-SSP1.3";
        plain_xml(body);
        let codec = Codec::default();
        shapes(&codec, body);
        let typed = codec.parse(body);
        let fast = match Spliced::scan(&codec, body) {
            Err(e) => {
                let t = typed.err().map(|t| t.to_string());
                assert_eq!(t, Some(e.to_string()), "refused for another reason");
                return false;
            }
            Ok(None) => return false,
            Ok(Some(s)) => s,
        };
        let Ok(typed) = typed else {
            panic!("the fast path took what the typed path refuses: {typed:?}");
        };
        let Body::Session(session) = &typed.body else {
            panic!("the fast path took an association step");
        };
        let p = &session.transactions[0].primitive;
        assert_eq!(fast.kind.label(), p.label());
        assert_eq!(fast.route_by(), p.route_by());
        assert_eq!(fast.originators().collect::<Vec<_>>(), p.originators());
        assert_eq!(
            fast.requestor_user(),
            p.meta().and_then(|m| m.requestor_user())
        );
        assert_eq!(fast.wants_report(), p.wants_report());
        assert_eq!(
            fast.requestor_service(),
            p.meta().and_then(|m| m.requestor_service())
        );
        let info = match p {
            crate::ssp::Primitive::SendMessageRequest(r) => r.info.as_ref(),
            crate::ssp::Primitive::DeliveryStatusReport(r) => r.info.as_ref(),
            _ => None,
        };
        fn first(party: Option<&crate::ssp::Party>) -> Option<&str> {
            party
                .and_then(|p| p.entities.first())
                .map(|e| e.id.as_str())
        }
        assert_eq!(
            fast.sender_and_recipient(),
            (
                first(info.and_then(|i| i.sender.as_ref())),
                first(info.and_then(|i| i.recipient.as_ref()))
            )
        );
        if let crate::ssp::Primitive::SendMessageRequest(r) = p {
            let mid = r.info.as_ref().and_then(|i| i.message_id.as_deref());
            assert_eq!(fast.message_id(), mid);
        }
        assert_eq!(fast.answer_code(), p.answer_code());
        let rw = Rewriter::from_parts("opx.example", &["core.opx.example".into()], &[]);
        let mut dir = Directory::default();
        let _ = dir.load_csv(
            std::path::Path::new("f.csv"),
            "+46701234567,wv:usera@core.opx.example\n",
        );
        for direction in [Direction::Outbound, Direction::Inbound] {
            let mut f = fast.clone();
            rw.rewrite_slots(&dir, f.slots(), direction, PeerView::default());
            let out = f.emit(NS, "gw-1@opx.example", "gw-tid");
            let mut t = typed.clone();
            if let Body::Session(s) = &mut t.body {
                s.session_id = "gw-1@opx.example".into();
                s.transactions[0].transaction_id = "gw-tid".into();
            }
            rw.rewrite(&dir, &mut t, direction, PeerView::default());
            t.namespace = Some(NS.into());
            let again = codec.parse(out.as_bytes());
            assert_eq!(
                again.as_ref(),
                Ok(&t),
                "the fast path's output means something else"
            );
        }
        true
    }

    /// Reading by shape (`ssp/splice/shape.rs`) against the scan on `body`: the scan with
    /// the shapes this thread keeps (those of earlier inputs) gives what a fresh scan gives;
    /// the shape made of `body` reads it as the scan did; the shapes of the usual messages
    /// (the load ladder's request, the core's answer) read it, if at all, as the scan does;
    /// and so they read those messages with their holes filled from `body` (split at each
    /// `|`), so the fuzzer's bytes reach every check a hole is read with.
    fn shapes(codec: &crate::ssp::Codec, body: &[u8]) {
        use crate::ssp::splice::Spliced;
        use crate::ssp::splice::shape::{Shape, USUAL_ANSWER, USUAL_REQUEST};
        static USUAL: std::sync::OnceLock<Vec<Shape>> = std::sync::OnceLock::new();
        /// What a shape read of `text`, against the fresh scan of it.
        fn as_scanned(codec: &crate::ssp::Codec, read: Option<Spliced<'_>>, text: &str) {
            let Some(read) = read else {
                return;
            };
            match Spliced::scan_fresh(codec, text.as_bytes()) {
                Ok((Some(s), _)) => assert_eq!(read, s, "a shape read it otherwise"),
                other => panic!("a shape took what the scan gives {other:?}: {text:?}"),
            }
        }
        let fresh = Spliced::scan_fresh(codec, body);
        let kept = Spliced::scan(codec, body);
        match (&kept, &fresh) {
            (Ok(k), Ok((f, _))) => assert_eq!(k, f, "a kept shape read it otherwise"),
            (k, f) => assert_eq!(
                k.as_ref().err().map(ToString::to_string),
                f.as_ref().err().map(ToString::to_string),
                "refused otherwise with the shapes kept"
            ),
        }
        if let Ok((fresh, Some(shape))) = &fresh
            && let Ok(text) = std::str::from_utf8(body)
        {
            assert_eq!(shape.read(text).as_ref(), fresh.as_ref(), "its own shape");
        }
        let usual = USUAL.get_or_init(|| {
            [USUAL_REQUEST, USUAL_ANSWER]
                .iter()
                .filter_map(|m| Spliced::scan_fresh(codec, m.as_bytes()).ok()?.1)
                .collect()
        });
        assert_eq!(usual.len(), 2, "the usual messages make shapes");
        let Ok(text) = std::str::from_utf8(body) else {
            return;
        };
        let fills: Vec<&str> = text.split('|').collect();
        for shape in usual {
            as_scanned(codec, shape.read(text), text);
            let filled = shape.refilled(&fills);
            as_scanned(codec, shape.read(&filled), &filled);
        }
    }

    /// The fast path's plain XML reader against the full one on `body`: where the plain
    /// reader takes it, the full reader takes it too, giving a sink exactly the same events
    /// (names, attributes with their values and places, text runs, ends) and the same
    /// namespace. Whether the plain reader took it.
    pub fn plain_xml(body: &[u8]) -> bool {
        plain_xml_within(body, &crate::ssp::xml::Limits::default())
    }

    /// [`plain_xml`] under `limits`: the plain reader makes the limit checks itself, and
    /// must decline wherever the full reader refuses a body for one.
    pub fn plain_xml_within(body: &[u8], limits: &crate::ssp::xml::Limits) -> bool {
        use crate::ssp::xml::{self, Open, Sink, Text, XmlError};
        #[derive(Debug, PartialEq)]
        enum Ev {
            Open(
                String,
                bool,
                Vec<(String, String, Option<std::ops::Range<usize>>)>,
                usize,
            ),
            At(std::ops::Range<usize>, bool),
            Close(usize),
            Text(String, std::ops::Range<usize>, xml::TextKind),
        }
        #[derive(Default)]
        struct Recorder(Vec<Ev>);
        impl<'a> Sink<'a> for Recorder {
            fn open(&mut self, o: Open<'_, 'a>) -> Result<(), XmlError> {
                let attrs = o
                    .attrs
                    .iter()
                    .map(|a| (a.key.to_owned(), a.value.to_string(), a.raw.clone()))
                    .collect();
                self.0
                    .push(Ev::Open(o.name.to_owned(), o.prefixed, attrs, o.depth));
                self.0.push(Ev::At(o.at, o.empty));
                Ok(())
            }
            fn close(&mut self, end: usize) -> Result<(), XmlError> {
                self.0.push(Ev::Close(end));
                Ok(())
            }
            fn text(&mut self, t: Text<'_>) -> Result<(), XmlError> {
                self.0.push(Ev::Text(t.raw.to_owned(), t.at, t.kind));
                Ok(())
            }
        }
        let codec = crate::ssp::Codec::default();
        let is_ssp = |ns: &str| codec.is_ssp_ns(ns);
        let Ok(text) = xml::text_of(body, limits) else {
            return false;
        };
        let mut plain = Recorder::default();
        let namespace = match xml::read_plain(text, limits, &is_ssp, &mut plain) {
            Ok(Some(ns)) => ns,
            Ok(None) => return false,
            Err(e) => panic!("the recorder never stops reading, yet: {e}"),
        };
        let mut full = Recorder::default();
        let read = xml::read(text, limits, &is_ssp, &mut full);
        assert_eq!(
            read,
            Ok(namespace),
            "the plain reader took what the full one does not"
        );
        assert_eq!(plain.0, full.0, "the plain reader gave other events");
        true
    }

    /// A PIDF body as a NOTIFY brings it (at most `max_body` bytes): whether it is taken,
    /// and if so that what it says, written back as PIDF, reads the same.
    pub fn pidf(body: &[u8], max_body: usize) -> bool {
        use crate::links::sip::pidf;
        match pidf::parse(body, max_body) {
            Ok(p) => {
                let again = pidf::emit("sip:fuzz@example.net", &p);
                assert_eq!(pidf::parse(again.as_bytes(), usize::MAX).ok(), Some(p));
                true
            }
            Err(_) => false,
        }
    }

    /// A `message/cpim` body as a MESSAGE brings it: the wrapper, and the IMDN notification
    /// it may carry (whether one was read).
    pub fn cpim(body: &[u8], max_body: usize) -> bool {
        use crate::links::sip::imdn;
        imdn::unwrap(body).is_ok_and(|c| imdn::notification(&c.body, max_body).is_ok())
    }

    /// Bytes of an XMPP stream as a far server sends them, in reads of `chunk` bytes: the
    /// same frames whatever the reads (and no panic); each stanza parsed; presence mapped,
    /// written back and read the same; a JID's localpart escaped and unescaped unchanged.
    /// How many frames there were.
    pub fn xmpp_stream(data: &[u8], chunk: usize) -> usize {
        use crate::links::xmpp::frame::{Frame, Framer};
        use crate::links::xmpp::{presence, stanza};
        let frames = |step: usize| {
            let mut f = Framer::new(16 * 1024, 16);
            let mut out = Vec::new();
            for c in data.chunks(step.max(1)) {
                f.push(c);
                loop {
                    match f.next_frame() {
                        Ok(Some(x)) => out.push(Ok(x)),
                        Ok(None) => break,
                        Err(e) => {
                            out.push(Err(e));
                            return out;
                        }
                    }
                }
            }
            out
        };
        let whole = frames(data.len());
        assert_eq!(whole, frames(chunk), "frames depend on the reads");
        let mut header = stanza::Header::default();
        for f in whole.iter().flatten() {
            match f {
                Frame::Header(h) => {
                    if let Ok(h) = stanza::header(h, 16 * 1024) {
                        header = h;
                    }
                }
                Frame::Stanza(s) => {
                    let Ok(s) = stanza::parse(s, &header, 16 * 1024) else {
                        continue;
                    };
                    if s.local == "presence" {
                        let (p, _) = presence::from_stanza(&s);
                        let back =
                            stanza::write(&presence::to_stanza("a@x.example", "b@y.example", &p));
                        let again = stanza::parse(back.as_bytes(), &header, usize::MAX)
                            .map(|s| presence::from_stanza(&s).0);
                        assert_eq!(
                            again.ok().map(|q| (q.online, q.availability)),
                            Some((p.online, p.availability))
                        );
                    }
                    if let Some(j) = s.attr("from").and_then(stanza::Jid::parse)
                        && let Some(l) = &j.local
                    {
                        let name = stanza::unescape(l);
                        assert_eq!(stanza::unescape(&stanza::escape(&name)), name);
                    }
                }
                Frame::End => {}
            }
        }
        whole.len()
    }

    /// A SIP header value as the translator reads it: an address, a tag, a Contact, a
    /// route list, a subscription state.
    pub fn sip_header(value: &str) {
        use crate::links::sip::map;
        let _ = map::address(value).and_then(|a| a.number());
        let _ = map::tag(value);
        let _ = map::contact_uri(value);
        let _ = map::split_list(value);
        let _ = map::sub_state(value).terminated();
    }
}
