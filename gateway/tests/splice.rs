//! The fast path against the typed path: for generated messages in canonical form both give
//! the same bytes and the same decisions; what the fast path refuses the typed path refuses;
//! what is not in the fast path's shape is left to the typed path.

use proptest::prelude::*;

use ssp_gateway::config::{DirectorySpec, IdStyle};
use ssp_gateway::directory::Directory;
use ssp_gateway::rewrite::{Direction, PeerView, Rewriter};
use ssp_gateway::ssp::common::{
    ContentData, DetailedResult, Entity, EntityKind, Ext, MessageInfo, MetaInfo, Party,
    PresenceValue, Status,
};
use ssp_gateway::ssp::message::{Body, Codec, Message, Mode, NS_WV_SSP_13, Transaction};
use ssp_gateway::ssp::primitives::{
    DeliveryStatusReport, PresenceNotification, Primitive, SendMessageRequest, SendMessageResponse,
};
use ssp_gateway::ssp::splice::shape::Shape;
use ssp_gateway::ssp::splice::{Read, Spliced};
use ssp_gateway::ssp::walk::Slot;
use ssp_gateway::ssp::xml::Limits;

const NS_PEER: &str = "http://www.openmobilealliance.org/DTD/IMPS-SSP1.3";

fn ids() -> BoxedStrategy<String> {
    prop_oneof![
        Just("wv:usera@core.opx.example".to_owned()),
        Just("wv:userb@opx.example".to_owned()),
        Just("wv:+46701234567".to_owned()),
        Just("wv:+4915112345678".to_owned()),
        Just("wv:+4915112345679@opy.example".to_owned()),
        Just("wv:group1@core.opx.example".to_owned()),
        Just("wv:@core.opx.example".to_owned()),
        Just("wv:a&b\"<c>@opy.example".to_owned()),
        "wv:[a-z]{1,8}@[a-z]{1,6}\\.example",
    ]
    .boxed()
}

fn texts() -> BoxedStrategy<String> {
    prop_oneof![
        Just(String::new()),
        Just("hello".to_owned()),
        Just("a < b & c > d \"q\" 'a'".to_owned()),
        Just("ünïcödé ✓".to_owned()),
        "[a-zA-Z0-9 +/=]{1,40}",
    ]
    .prop_map(|s| s.trim().to_owned())
    .boxed()
}

fn entity() -> BoxedStrategy<Entity> {
    (
        prop_oneof![
            Just(EntityKind::User),
            Just(EntityKind::UserId),
            Just(EntityKind::GroupId),
        ],
        ids(),
        proptest::option::of(texts()),
    )
        .prop_map(|(kind, id, name)| Entity {
            friendly_name: name.filter(|_| kind == EntityKind::User),
            ..Entity::new(kind, id)
        })
        .boxed()
}

fn meta() -> BoxedStrategy<Option<MetaInfo>> {
    proptest::option::of(
        (ids(), proptest::option::of(ids())).prop_map(|(svc, user)| {
            let mut m = MetaInfo::client(&svc, "x");
            if let Some(r) = m.requestor.as_mut() {
                r.user = user.map(Entity::user);
            }
            m
        }),
    )
    .boxed()
}

fn info() -> BoxedStrategy<Option<MessageInfo>> {
    proptest::option::of(
        (
            proptest::collection::vec(entity(), 0..4),
            proptest::option::of(entity()),
            proptest::option::of("[a-f0-9]{8}"),
        )
            .prop_map(|(to, from, mid)| MessageInfo {
                message_id: mid,
                content_type: Some("text/plain".into()),
                recipient: Some(Party {
                    entities: to,
                    ext: Ext::default(),
                }),
                sender: from.map(|e| Party {
                    entities: vec![e],
                    ext: Ext::default(),
                }),
                ..MessageInfo::default()
            }),
    )
    .boxed()
}

fn status() -> BoxedStrategy<Status> {
    (
        prop_oneof![Just(200u16), Just(201), Just(404), Just(531)],
        proptest::option::of(texts()),
        proptest::collection::vec((ids(), "[a-z]{2,6}\\.example"), 0..3),
    )
        .prop_map(|(code, text, details)| Status {
            description: text.filter(|t| !t.is_empty()),
            details: details
                .into_iter()
                .map(|(id, domain)| {
                    let mut d = DetailedResult::for_user(code, "why", &id);
                    d.domains.push(domain);
                    d
                })
                .collect(),
            ..Status::new(code)
        })
        .boxed()
}

fn primitive() -> BoxedStrategy<(Mode, Primitive)> {
    prop_oneof![
        (
            meta(),
            info(),
            texts(),
            proptest::option::of(prop_oneof![Just("Yes"), Just("No")])
        )
            .prop_map(|(meta, info, body, dr)| (
                Mode::Request,
                Primitive::SendMessageRequest(SendMessageRequest {
                    delivery_report: dr.map(str::to_owned),
                    meta,
                    info,
                    content: Some(ContentData {
                        content_type: Some("text/plain".into()),
                        encoding: None,
                        data: body,
                        ext: Ext::default(),
                    }),
                    ext: Ext::default(),
                })
            )),
        (proptest::option::of("[a-f0-9]{8}"), status()).prop_map(|(mid, st)| (
            Mode::Response,
            Primitive::SendMessageResponse(SendMessageResponse {
                message_id: mid,
                status: Some(st),
                ext: Ext::default(),
            })
        )),
        status().prop_map(|st| (Mode::Response, Primitive::Status(st))),
        (meta(), status(), info()).prop_map(|(meta, st, info)| (
            Mode::Request,
            Primitive::DeliveryStatusReport(DeliveryStatusReport {
                meta,
                result: Some(st),
                info,
                delivery_time: Some("2026-12-03T10:00:00Z".into()),
                ..DeliveryStatusReport::default()
            })
        )),
        (
            meta(),
            proptest::collection::vec(ids(), 0..3),
            proptest::collection::vec(ids(), 0..3)
        )
            .prop_map(|(meta, watchers, values)| (
                Mode::Request,
                Primitive::PresenceNotification(PresenceNotification {
                    meta,
                    watchers: watchers.into_iter().map(Entity::user).collect(),
                    values: values
                        .into_iter()
                        .map(|user_id| PresenceValue {
                            user_id,
                            ext: Ext::default(),
                        })
                        .collect(),
                    ext: Ext::default(),
                })
            )),
    ]
    .boxed()
}

fn rewriter() -> (Rewriter, Directory) {
    let rw = Rewriter::from_parts("opx.example", &["core.opx.example".into()], &[]);
    let mut dir = Directory::load(&DirectorySpec::default()).expect("empty directory");
    dir.load_csv(
        std::path::Path::new("t.csv"),
        "+46701234567,wv:usera@core.opx.example\n",
    )
    .expect("directory");
    (rw, dir)
}

/// The typed path: parse, our session and transaction ID, rewrite, emit.
fn typed(body: &[u8], direction: Direction, tid: &str) -> (Message, String) {
    let (rw, dir) = rewriter();
    let mut m = Codec::default().parse(body).expect("typed parse");
    if let Body::Session(s) = &mut m.body {
        s.session_id = "gw-1@opx.example".into();
        s.transactions[0].transaction_id = tid.into();
    }
    let view = PeerView {
        style: IdStyle::Msisdn,
        domain: Some("opy.example"),
    };
    rw.rewrite(&dir, &mut m, direction, view);
    let out = m.emit(NS_PEER);
    (m, out)
}

/// The fast path, the same steps.
fn fast(body: &[u8], direction: Direction, tid: &str) -> Option<String> {
    let (rw, dir) = rewriter();
    let codec = Codec::default();
    let mut s = Spliced::scan(&codec, body).expect("fast scan")?;
    let view = PeerView {
        style: IdStyle::Msisdn,
        domain: Some("opy.example"),
    };
    rw.rewrite_slots(&dir, s.slots(), direction, view);
    Some(s.emit(NS_PEER, "gw-1@opx.example", tid))
}

fn message(mode: Mode, p: Primitive) -> String {
    let t = Transaction {
        mode,
        transaction_id: "t-1".into(),
        primitive: p,
        ext: Ext::default(),
    };
    Message::session("peer-9@opy.example", vec![t]).emit(NS_WV_SSP_13)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Canonical input: the fast path takes it, decides as the typed path, and writes the
    /// same bytes in both directions.
    #[test]
    fn fast_and_typed_paths_agree_on_canonical_messages((mode, p) in primitive()) {
        let body = message(mode, p);
        let codec = Codec::default();
        // The plain reader takes what we write, with the full reader's events.
        prop_assert!(ssp_gateway::fuzzing::plain_xml(body.as_bytes()));
        let s = Spliced::scan(&codec, body.as_bytes()).expect("scan").expect("fast shape");
        let m = codec.parse(body.as_bytes()).expect("typed");
        let prim = &m.as_session().expect("session").transactions[0].primitive;
        prop_assert_eq!(s.kind.label(), prim.label());
        prop_assert_eq!(s.route_by(), prim.route_by());
        prop_assert_eq!(s.originators().collect::<Vec<_>>(), prim.originators());
        prop_assert_eq!(s.requestor_user(), prim.meta().and_then(|m| m.requestor_user()));
        prop_assert_eq!(s.wants_report(), prim.wants_report());
        prop_assert_eq!(s.answer_code(), prim.answer_code());
        for d in [Direction::Outbound, Direction::Inbound] {
            let (_, t) = typed(body.as_bytes(), d, "gw-tid-7");
            let f = fast(body.as_bytes(), d, "gw-tid-7").expect("fast shape");
            prop_assert_eq!(f, t);
        }
    }

    /// Layout the typed emitter would not write (white space, a declaration, single quotes,
    /// comments): the fast path keeps it, and the result is the same message once parsed.
    #[test]
    fn fast_path_keeps_layout_and_means_the_same((mode, p) in primitive(), nl in "[ \n\t]{0,3}") {
        let canonical = message(mode, p);
        let body = canonical
            .replacen("?>", &format!("?>{nl}<!-- c -->{nl}"), 1)
            .replace("><", &format!(">{nl}<"));
        let body = body.replace(&format!("{nl}<!-- c -->{nl}"), "<!-- c -->");
        let f = fast(body.as_bytes(), Direction::Outbound, "x").expect("fast shape");
        let (t, _) = typed(body.as_bytes(), Direction::Outbound, "x");
        let again = Codec::default().parse(f.as_bytes()).expect("fast output parses");
        let mut t = t;
        t.namespace = Some(NS_PEER.into());
        prop_assert_eq!(again, t);
    }

    /// Bytes near the fast path's shape: whatever the fast path refuses, the typed path
    /// refuses with the same reason; whatever it takes, the typed path takes, decides the
    /// same of, and writes as the same message (`fuzzing::splice`, also a fuzz target).
    #[test]
    fn fast_path_refuses_what_the_typed_path_refuses(
        (mode, p) in primitive(),
        cut in 0usize..2000,
        insert in prop_oneof![
            Just("<!DOCTYPE x [<!ENTITY e 'x'>]>"),
            Just("&e;"),
            Just("<x:y/>"),
            Just("\u{1}"),
            Just("<"),
            Just("</Session>"),
            Just("<User/>"),
            Just("<Domain>core.opx.example</Domain>"),
            Just("&#99;"),
            Just("<![CDATA[]]>"),
            Just(" userID=\"wv:z@core.opx.example\""),
        ],
    ) {
        let canonical = message(mode, p);
        let at = cut.min(canonical.len());
        let at = (0..=at).rev().find(|&i| canonical.is_char_boundary(i)).unwrap_or(0);
        let body = format!("{}{}{}", &canonical[..at], insert, &canonical[at..]);
        ssp_gateway::fuzzing::splice(body.as_bytes());
    }
}

#[test]
fn not_in_the_fast_shape_goes_the_typed_way() {
    let codec = Codec::default();
    let smr = |inner: &str| {
        format!(
            "<WV-SSP-Message xmlns=\"{NS_WV_SSP_13}\"><Session sessionID=\"s@opy.example\">\
             <Transaction mode=\"Request\" transactionID=\"t\">{inner}</Transaction>\
             </Session></WV-SSP-Message>"
        )
    };
    for (why, body) in [
        (
            "two transactions",
            smr(
                "<SendMessageRequest/></Transaction><Transaction mode=\"Request\" transactionID=\"u\"><Status code=\"200\"/>",
            ),
        ),
        ("another primitive", smr("<SearchRequest/>")),
        (
            "an entity without its ID",
            smr(
                "<SendMessageRequest><MessageInfo><Recipient><User/></Recipient></MessageInfo></SendMessageRequest>",
            ),
        ),
        (
            "a prefix",
            smr("<SendMessageRequest xmlns:v=\"urn:v\"><v:x/></SendMessageRequest>"),
        ),
        (
            "a character reference",
            smr("<Status code=\"200\"><StatusDescription>&#99;ore</StatusDescription></Status>"),
        ),
        (
            // Read by the plain reader: the scan stops on the declaration itself.
            "another namespace declared in the primitive",
            smr("<Status xmlns=\"urn:x\" code=\"200\"/>"),
        ),
        (
            "the SSP namespace declared in the primitive",
            smr(&format!("<Status xmlns=\"{NS_WV_SSP_13}\" code=\"200\"/>")),
        ),
        (
            "two recipients lists",
            smr(
                "<SendMessageRequest><MessageInfo><Recipient/><Recipient/></MessageInfo></SendMessageRequest>",
            ),
        ),
    ] {
        assert!(
            matches!(Spliced::scan(&codec, body.as_bytes()), Ok(None)),
            "{why}"
        );
        assert!(
            codec.parse(body.as_bytes()).is_ok(),
            "{why}: typed takes it"
        );
    }
}

#[test]
fn refusals_are_the_typed_paths() {
    let codec = Codec::default();
    for body in [
        "<!DOCTYPE x [<!ENTITY e 'x'>]><WV-SSP-Message/>",
        "<WV-SSP-Message><Session sessionID=\"&e;\"/></WV-SSP-Message>",
        "<WV-SSP-Message>\u{1}</WV-SSP-Message>",
        "<WV-SSP-Message><a><b></a></WV-SSP-Message>",
    ] {
        // Refused with the typed path's reason, or left to the typed path, which refuses.
        let t = codec.parse(body.as_bytes()).expect_err(body);
        match Spliced::scan(&codec, body.as_bytes()) {
            Err(f) => assert_eq!(f.to_string(), t.to_string()),
            Ok(f) => assert!(f.is_none(), "{body}"),
        }
    }
    assert!(Spliced::scan(&codec, b"<!DOCTYPE x []><WV-SSP-Message/>").is_err());
    let deep = format!(
        "<WV-SSP-Message>{}{}</WV-SSP-Message>",
        "<a>".repeat(40),
        "</a>".repeat(40)
    );
    assert!(!matches!(
        Spliced::scan(&codec, deep.as_bytes()),
        Ok(Some(_))
    ));
    assert!(Spliced::scan(&codec, &[0xff, 0xfe]).is_err());
}

#[test]
fn domain_text_and_service_ids_are_rewritten_in_place() {
    let body = format!(
        "<WV-SSP-Message xmlns=\"{NS_WV_SSP_13}\"><Session sessionID=\"s@core.opx.example\">\
         <Transaction mode=\"Response\" transactionID=\"t\"><Status code=\"201\">\
         <DetailedResult code=\"531\"><UserID userID=\"wv:usera@core.opx.example\"/>\
         <Domain> core.opx.example </Domain></DetailedResult></Status></Transaction>\
         </Session></WV-SSP-Message>"
    );
    let out = fast(body.as_bytes(), Direction::Outbound, "x").expect("fast shape");
    assert!(out.contains("<Domain> opx.example </Domain>"), "{out}");
    assert!(out.contains("userID=\"wv:+46701234567\""), "{out}");
    assert!(!out.contains("core.opx"), "{out}");
    let s = Spliced::scan(&Codec::default(), body.as_bytes())
        .expect("scan")
        .expect("fast");
    assert_eq!(s.answer_code(), 201);
    assert_eq!(
        s.ids.iter().map(|i| i.slot).collect::<Vec<_>>(),
        [Slot::User, Slot::Domain]
    );
}

/// What a byte search on the spliced output could not see, or what would not be XML once
/// copied, is left to the typed path (which joins, scrubs and rewrites it).
#[test]
fn what_splicing_would_hide_or_break_goes_the_typed_way() {
    let codec = Codec::default();
    let wrap = |inner: &str| {
        format!(
            "<WV-SSP-Message xmlns=\"{NS_WV_SSP_13}\"><Session sessionID=\"s@opy.example\">\
             <Transaction mode=\"Request\" transactionID=\"t\">{inner}</Transaction>\
             </Session></WV-SSP-Message>"
        )
    };
    for inner in [
        "<SendMessageRequest><ContentData>core.opx<!---->.example</ContentData></SendMessageRequest>",
        "<SendMessageRequest><ContentData>core.opx<?x?>.example</ContentData></SendMessageRequest>",
        "<SendMessageRequest><ContentData>core.opx<![CDATA[.example]]></ContentData></SendMessageRequest>",
        "<SendMessageRequest><ContentData>core.opx<b/>.example</ContentData></SendMessageRequest>",
        "<SendMessageRequest foo=\"a<b\"/>",
        "<SendMessageRequest><!-- a -- b --></SendMessageRequest>",
        "<Status xmlns=\"http://www.wireless-village.org/SSP1.1\" code=\"200\"/>",
        "<Status code=\"200\"><StatusDescription userID=\"wv:a@core.opx.example\">x</StatusDescription></Status>",
    ] {
        let body = wrap(inner);
        assert!(
            matches!(Spliced::scan(&codec, body.as_bytes()), Ok(None)),
            "{inner}"
        );
        assert!(codec.parse(body.as_bytes()).is_ok(), "{inner}");
    }
}

/// Two byte-order marks (quick-xml drops the second without counting it): the offsets
/// still point at the right bytes.
#[test]
fn a_second_byte_order_mark_does_not_shift_the_splices() {
    let body = format!(
        "\u{feff}\u{feff}<WV-SSP-Message xmlns=\"{NS_WV_SSP_13}\"><Session sessionID=\"s\">\
         <Transaction mode=\"Response\" transactionID=\"t\"><Status code=\"200\">\
         <DetailedResult code=\"201\"><User userID=\"wv:usera@core.opx.example\"/>\
         <Domain>core.opx.example</Domain></DetailedResult></Status></Transaction>\
         </Session></WV-SSP-Message>"
    );
    assert!(Codec::default().parse(body.as_bytes()).is_ok());
    assert!(ssp_gateway::fuzzing::splice(body.as_bytes()));
}

/// The plain reader (the fast path's first reader) against the full one: what it takes, it
/// reads as the full reader does (`fuzzing::plain_xml` asserts the same events); what it
/// declines goes to the full reader, which accepts or refuses it as before.
#[test]
fn the_plain_reader_takes_plain_xml_and_declines_the_rest() {
    let doc = |decl: &str, inner: &str| {
        format!(
            "{decl}<WV-SSP-Message xmlns=\"{NS_WV_SSP_13}\"><Session sessionID=\"s@opy.example\">\
             <Transaction mode=\"Request\" transactionID=\"t\">{inner}</Transaction>\
             </Session></WV-SSP-Message>"
        )
    };
    let smr = r#"<SendMessageRequest deliveryReport="Yes"><MessageInfo messageID="m&amp;1"><Recipient><User userID="wv:+4915112345678"/></Recipient></MessageInfo><ContentData>a &lt; b &amp;&amp; c &gt; d</ContentData></SendMessageRequest>"#;
    let taken = [
        doc("", smr),
        doc("<?xml version=\"1.0\"?>", smr),
        doc(
            "<?xml version='1.0' encoding='utf-8' standalone='yes'?>\n",
            smr,
        ),
        doc("<?xml version=\"1.0\" encoding=\"US-ASCII\" ?>", smr),
        doc("", &smr.replace("<Recipient>", "\n  <Recipient >\r\n ")),
        doc("", &smr.replace("\"Yes\"", "'Yes' x=\"a>b\" y='\"q\"'")),
        doc(
            "",
            &smr.replace("<ContentData>", "<ContentData/><Other>")
                .replace("</ContentData>", "</Other>"),
        ),
        // Not the fast path's shape, but plain XML all the same.
        doc(
            "",
            "<GetPresenceRequest><User userID=\"wv:a@b\"/></GetPresenceRequest>",
        ),
        // Mixed content: the white space after the child is text of an element that
        // already has some, so it is reported, not dropped as layout.
        doc(
            "",
            &smr.replace(
                "a &lt; b &amp;&amp; c &gt; d</ContentData>",
                "x<b/>\n </ContentData>",
            ),
        ),
        doc("", &format!("{smr}<Extra xmlns=\"urn:vendor\"/>")),
    ];
    for body in &taken {
        assert!(ssp_gateway::fuzzing::plain_xml(body.as_bytes()), "{body}");
        ssp_gateway::fuzzing::splice(body.as_bytes());
    }
    let declined = [
        format!("\u{feff}{}", doc("", smr)),
        // Names that may not start so (the plain reader checks names itself).
        doc(
            "",
            &smr.replace("<MessageInfo", "<1MessageInfo")
                .replace("</MessageInfo>", "</1MessageInfo>"),
        ),
        doc("", &smr.replace(" messageID=", " -messageID=")),
        doc("", &smr.replace(" messageID=", " .messageID=")),
        doc("", &smr.replace(" messageID=", " 1messageID=")),
        // The SSP namespace declared below the root.
        doc(
            "",
            &smr.replace(
                "<MessageInfo",
                &format!("<MessageInfo xmlns=\"{NS_WV_SSP_13}\""),
            ),
        ),
        doc("<?xml version=\"1.1\"?>", smr),
        doc("<?xml encoding=\"UTF-8\" version=\"1.0\"?>", smr),
        doc("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>", smr),
        doc(" <?xml version=\"1.0\"?>", smr),
        doc("<!-- c -->", smr),
        doc("<?pi x?>", smr),
        doc("<!DOCTYPE x>", smr),
        doc(
            "",
            &smr.replace("<ContentData>", "<ContentData><![CDATA[x]]>"),
        ),
        doc("", &smr.replace("a &lt;", "a &#60;")),
        doc("", &smr.replace("a &lt;", "a &e;")),
        doc("", &smr.replace("a &lt;", "a & b")),
        doc("", &smr.replace("messageID=", "messageID =")),
        // Form feed is not XML white space (found by the fuzz target).
        doc("", &smr.replace(" messageID=", "\u{c}messageID=")),
        doc("\u{3c}?xml\u{c}version=\"1.0\"?>", smr),
        doc("", &smr.replace("messageID=", "messageID= ")),
        doc("", &smr.replace("m&amp;1", "m\t1")),
        doc("", &smr.replace("m&amp;1", "m\n1")),
        doc("", &smr.replace("m&amp;1", "m<1")),
        doc("", &smr.replace("m&amp;1", "m&#49;")),
        doc("", &smr.replace("m&amp;1", "m&x;")),
        doc("", &smr.replace("\"Yes\"", "\"Yes\"x=\"1\"")),
        doc("", &smr.replace("\"Yes\"", "\"Yes\" deliveryReport=\"No\"")),
        doc("", &smr.replace("</Recipient>", "</Recipient >")),
        doc("", &smr.replace("</Recipient>", "</Sender>")),
        // An end tag is compared in place with the open element's name.
        doc("", &smr.replace("</Recipient>", "</RecipientX>")),
        doc("", &smr.replace("</Recipient>", "</Recip>")),
        doc("", smr).replace("</WV-SSP-Message>", "</WV-SSP-Message"),
        doc(
            "",
            &smr.replace("<Recipient>", "<p:Recipient xmlns:p=\"urn:x\">")
                .replace("</Recipient>", "</p:Recipient>"),
        ),
        doc(
            "",
            &smr.replace("<Recipient>", "<Récipient>")
                .replace("</Recipient>", "</Récipient>"),
        ),
        doc("", &smr.replace("a &lt;", "a \u{1}")),
        doc("", smr).replace("</WV-SSP-Message>", "</WV-SSP-Message><x/>"),
        doc("", smr).replace("</WV-SSP-Message>", "</WV-SSP-Message>text"),
        doc("", smr).replace("</WV-SSP-Message>", ""),
        doc("", smr).replace("xmlns=", "xmlns=\"urn:a\" xmlns="),
        // A limit passed (33 attributes): the full reader refuses it in its own words.
        doc(
            "",
            &smr.replace(
                "<MessageInfo",
                &format!(
                    "<MessageInfo{}",
                    (0..32)
                        .map(|i| format!(" a{i}=\"{i}\""))
                        .collect::<String>()
                ),
            ),
        ),
        // Nested deeper than the plain reader holds inline (16; the limit is 32).
        doc(
            "",
            &smr.replace(
                "<ContentData>",
                &format!("{}<ContentData>", "<V>".repeat(14)),
            )
            .replace(
                "</ContentData>",
                &format!("</ContentData>{}", "</V>".repeat(14)),
            ),
        ),
    ];
    for body in &declined {
        assert!(!ssp_gateway::fuzzing::plain_xml(body.as_bytes()), "{body}");
        // Declined by the plain reader, read by the full one as before.
        ssp_gateway::fuzzing::splice(body.as_bytes());
    }
}

/// A body nested deeper than the fast path's readers hold inline, and within the limit: the
/// typed path reads it (none of it is lost); one level shallower, the fast path does.
#[test]
fn a_body_nested_past_the_inline_stacks_goes_the_typed_way() {
    let codec = Codec::default();
    let body = |n: usize| {
        format!(
            "<WV-SSP-Message xmlns=\"{NS_WV_SSP_13}\"><Session sessionID=\"s@opy.example\">\
             <Transaction mode=\"Request\" transactionID=\"t\"><SendMessageRequest>\
             <MessageInfo><Recipient><User userID=\"wv:+4915112345678\"/></Recipient>\
             </MessageInfo>{}x{}</SendMessageRequest></Transaction></Session></WV-SSP-Message>",
            "<V>".repeat(n),
            "</V>".repeat(n)
        )
    };
    // Depth 4 (the primitive) + 12 vendor levels = 16, the stacks' capacity: the fast path
    // takes it, and what it writes reads as the typed path's.
    let fits = body(12);
    assert!(matches!(
        Spliced::scan(&codec, fits.as_bytes()),
        Ok(Some(_))
    ));
    assert!(ssp_gateway::fuzzing::plain_xml(fits.as_bytes()));
    assert!(ssp_gateway::fuzzing::splice(fits.as_bytes()));
    // With a byte-order mark the plain reader declines and the full reader reads the body
    // for the scan: the fast path still takes it at 16 levels, so below it is the scan's
    // own stack that refuses the 17th.
    let bom = |n: usize| format!("\u{feff}{}", body(n));
    assert!(!ssp_gateway::fuzzing::plain_xml(bom(12).as_bytes()));
    assert!(matches!(
        Spliced::scan(&codec, bom(12).as_bytes()),
        Ok(Some(_))
    ));
    // Deeper: elements with content; an empty element at the 17th level (which the plain
    // reader takes, pushing nothing for it, and the scan does not); and read by the full
    // reader.
    let deeper = [13, 20, 28]
        .map(body)
        .into_iter()
        .chain([body(12).replace("x</V>", "<V/>x</V>"), bom(13)]);
    for (i, deeper) in deeper.enumerate() {
        assert!(
            matches!(Spliced::scan(&codec, deeper.as_bytes()), Ok(None)),
            "{i}"
        );
        assert!(codec.parse(deeper.as_bytes()).is_ok(), "{i}");
        assert!(!ssp_gateway::fuzzing::splice(deeper.as_bytes()), "{i}");
    }
    for n in [13, 20, 28] {
        assert!(!ssp_gateway::fuzzing::plain_xml(body(n).as_bytes()), "{n}");
    }
    assert!(ssp_gateway::fuzzing::plain_xml(
        body(12).replace("x</V>", "<V/>x</V>").as_bytes()
    ));
}

/// A tag with more attributes than the plain reader holds inline (8) is read by the full
/// reader, and the fast path still takes the body, writing what the typed path writes.
#[test]
fn a_tag_with_more_attributes_than_held_inline_goes_to_the_full_reader() {
    let codec = Codec::default();
    let body = |n: usize| {
        let attrs: String = (0..n).map(|i| format!(" a{i}=\"v\"")).collect();
        format!(
            "<WV-SSP-Message xmlns=\"{NS_WV_SSP_13}\"><Session sessionID=\"s@opy.example\">\
             <Transaction mode=\"Request\" transactionID=\"t\"><SendMessageRequest>\
             <MessageInfo><Recipient><User userID=\"wv:+4915112345678\"/></Recipient>\
             </MessageInfo><V{attrs}/></SendMessageRequest></Transaction></Session>\
             </WV-SSP-Message>"
        )
    };
    for (n, plain) in [(8, true), (9, false), (32, false)] {
        let b = body(n);
        assert_eq!(ssp_gateway::fuzzing::plain_xml(b.as_bytes()), plain, "{n}");
        assert!(
            matches!(Spliced::scan(&codec, b.as_bytes()), Ok(Some(_))),
            "{n}"
        );
        assert!(ssp_gateway::fuzzing::splice(b.as_bytes()), "{n}");
    }
}

/// Every Baraza capture is plain XML: the plain reader takes each, with the full reader's
/// events. Under tight limits it declines each capture the full reader refuses for one,
/// and takes the rest with the same events (`plain_xml_within` asserts both).
#[test]
fn the_plain_reader_takes_every_baraza_capture() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/baraza");
    let mut n = 0;
    let (mut taken, mut declined) = (0, 0);
    for entry in std::fs::read_dir(&dir).expect("fixtures") {
        let body = std::fs::read(entry.expect("entry").path()).expect("fixture");
        assert!(ssp_gateway::fuzzing::plain_xml(&body));
        for limits in tight_limits() {
            if ssp_gateway::fuzzing::plain_xml_within(&body, &limits) {
                taken += 1;
            } else {
                declined += 1;
            }
        }
        n += 1;
    }
    assert!(n >= 10, "only {n} captures");
    // Both sides of the limits were reached.
    assert!(
        taken > 0 && declined > 0,
        "{taken} taken, {declined} declined"
    );
}

/// Limits, each tight in one respect, around the sizes of real bodies.
fn tight_limits() -> Vec<Limits> {
    let base = Limits::default();
    let mut out = Vec::new();
    for n in [
        0usize, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987,
    ] {
        out.extend([
            Limits {
                max_depth: n,
                ..base
            },
            Limits {
                max_elements: n,
                ..base
            },
            Limits {
                max_attrs: n,
                ..base
            },
            Limits {
                max_attr_len: n,
                ..base
            },
            Limits {
                max_text_len: n,
                ..base
            },
            Limits {
                max_transactions: n,
                ..base
            },
            Limits {
                max_body: n * 4,
                ..base
            },
        ]);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// The plain reader makes the full reader's limit checks itself: under each tight
    /// limit it declines what the full reader refuses and takes the rest with the same
    /// events.
    #[test]
    fn the_plain_reader_keeps_every_limit((mode, p) in primitive()) {
        let body = message(mode, p);
        for limits in tight_limits() {
            ssp_gateway::fuzzing::plain_xml_within(body.as_bytes(), &limits);
        }
    }
}

/// What a shape reads of `body` is what the scan reads of it: a body it takes is one the scan
/// takes, with the same result. Whether it took it.
fn shape_reads_as_the_scan(codec: &Codec, shape: &Shape, body: &str) -> bool {
    let Some(read) = shape.read(body) else {
        return false;
    };
    match Spliced::scan_fresh(codec, body.as_bytes()) {
        Ok((Some(scanned), _)) => assert_eq!(read, scanned, "{body}"),
        other => panic!("a shape took what the scan gives {other:?}: {body}"),
    }
    true
}

/// What a hole may be filled with: plain values, and every byte and pattern the checks of a
/// hole look at (quotes, `<`, `&`, references, control characters, line ends, white space,
/// `]]>`, markup, non-ASCII, nothing, and lengths around the limits).
fn fillers() -> BoxedStrategy<String> {
    prop_oneof![
        2 => "[a-zA-Z0-9.@:+-]{1,12}",
        2 => proptest::sample::select(vec![
            "", " ", "\n", "\t", "\r\n", "\r", " x ", "\r\nx", "x\ry", "x\u{1}y", "\u{7f}",
            "a\"b", "a'b", "a<b", "a>b", "a&amp;b", "a&b", "&lt;", "]]>", "x]]>y", "]]",
            "ünï ✓", "wv:usera@core.opx.example", " wv:+46701234567 ", "</Domain>", "<x/>",
            "/>", "\">", "' x='y", "core.opx.example",
        ])
        .prop_map(str::to_owned),
        1 => "[a-f0-9]{40,80}",
    ]
    .boxed()
}

/// A shape made of a generated message (with layout `nl` between tags, and its attributes
/// in single quotes if `single`, as some senders write them), under `codec`: the message,
/// the scan's result and the shape. `None` if no shape is made of it.
fn shaped(
    mode: Mode,
    p: Primitive,
    nl: &str,
    single: bool,
    codec: &Codec,
) -> Option<(String, Spliced<'static>, Shape)> {
    let mut body = message(mode, p).replace("><", &format!(">{nl}<"));
    if single {
        // A value holding a `'` no longer parses: no shape, and nothing to test.
        body = body.replace('"', "'");
    }
    let body: &'static str = Box::leak(body.into_boxed_str());
    let (scanned, shape) = Spliced::scan_fresh(codec, body.as_bytes()).ok()?;
    Some((body.to_owned(), scanned?, shape?))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// A shape reads the body it was made of as the scan did; with its holes filled with
    /// other values, and with bytes added, dropped or changed anywhere, it reads a body
    /// only as the scan reads it (or leaves it to the scan). Plain values in every hole it
    /// always takes: the test would fail if it declined everything.
    #[test]
    fn a_shape_reads_only_what_the_scan_reads_the_same_way(
        (mode, p) in primitive(),
        nl in "( |\n|\r\n){0,2}",
        single in proptest::bool::weighted(0.25),
        tight in proptest::option::of(prop_oneof![
            Just(Limits { max_attr_len: 32, ..Limits::default() }),
            Just(Limits { max_text_len: 40, ..Limits::default() }),
        ]),
        plain in proptest::collection::vec("[a-zA-Z0-9.@:+-]{1,10}", 1..8),
        fills in proptest::collection::vec(fillers(), 1..12),
        edits in proptest::collection::vec(
            (0usize..1500, 0u8..3, proptest::sample::select(
                vec!['"', '\'', '<', '>', '&', '/', ' ', '\n', '=', 'a', 'Z', ';', '\u{1}', 'é']
            )),
            1..4,
        ),
    ) {
        let codec = Codec { limits: tight.unwrap_or_default(), ..Codec::default() };
        // Messages with an entity make no shape (a shape holds none): nothing to test.
        let Some((body, scanned, shape)) = shaped(mode, p, &nl, single, &codec) else {
            return Ok(());
        };
        prop_assert_eq!(shape.read(&body), Some(scanned));
        let other = shape.refilled(&plain);
        prop_assert!(shape_reads_as_the_scan(&codec, &shape, &other), "{}", other);
        let other = shape.refilled(&fills);
        shape_reads_as_the_scan(&codec, &shape, &other);
        let mut edited = other;
        for (at, op, c) in edits {
            let at = at.min(edited.len());
            let at = (0..=at).rev().find(|&i| edited.is_char_boundary(i)).unwrap_or(0);
            match op {
                0 => edited.insert(at, c),
                _ if at == edited.len() => {}
                1 => {
                    edited.remove(at);
                }
                _ => {
                    edited.remove(at);
                    edited.insert(at, c);
                }
            }
            shape_reads_as_the_scan(&codec, &shape, &edited);
        }
    }

    /// A shape made of one message reads another only as the scan reads it (most are of
    /// another shape, and left to the scan; those of the same one are compared).
    #[test]
    fn a_shape_reads_another_message_only_as_the_scan_reads_it(
        (m1, p1) in primitive(),
        (m2, p2) in primitive(),
    ) {
        let codec = Codec::default();
        let Some((_, _, shape)) = shaped(m1, p1, "\n", false, &codec) else {
            return Ok(());
        };
        let other = message(m2, p2).replace("><", ">\n<");
        shape_reads_as_the_scan(&codec, &shape, &other);
    }
}

/// The shape of the load ladder's request (`tests/src/bin/ladder.rs`) reads the next one with
/// other IDs, transaction and text, and not one with another primitive, another fixed value
/// or an entity in a hole; `Spliced::scan` keeps shapes per thread and reads by them.
#[test]
fn a_shape_takes_the_next_message_of_a_sender() {
    let request = |tid: &str, from: &str, text: &str, report: &str| {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\n\
<Session sessionID=\"s-1\">\n<Transaction mode=\"Request\" transactionID=\"{tid}\">\n\
<SendMessageRequest deliveryReport=\"{report}\">\n<MetaInfo clientOriginated=\"Yes\">\n\
<Requestor serviceID=\"wv:@opy.example\">\n<User userID=\"{from}\"/>\n</Requestor></MetaInfo>\n\
<MessageInfo messageID=\"m-{tid}\" contentType=\"text/plain\">\n<Recipient>\n\
<User userID=\"wv:+46701234567\"/>\n</Recipient>\n<Sender>\n<User userID=\"{from}\"/>\n\
</Sender>\n</MessageInfo>\n<ContentData contentType=\"text/plain\">{text}</ContentData>\n\
</SendMessageRequest>\n</Transaction>\n</Session>\n</WV-SSP-Message>\n"
        )
    };
    let codec = Codec::default();
    let first = request("t1", "wv:+4915112345678", "hello", "No");
    let (scanned, shape) = Spliced::scan_fresh(&codec, first.as_bytes()).expect("scan");
    let shape = shape.expect("a shape of the request");
    assert_eq!(shape.read(&first), scanned);
    // The next request: other IDs, transaction, message ID and text.
    let next = request(
        "t-200",
        "wv:+4915112345679",
        "SGVsbG8=\r\nSGVsbG8=\r\n",
        "No",
    );
    assert!(shape_reads_as_the_scan(&codec, &shape, &next));
    let s = shape.read(&next).expect("read");
    assert_eq!(s.transaction_id, "t-200");
    // A request's transaction ID of the longest length allowed (255 bytes), and one with
    // spaces at its ends, trimmed as the scan trims them.
    for tid in ["t".repeat(255), " t-9 ".to_owned()] {
        assert!(shape_reads_as_the_scan(
            &codec,
            &shape,
            &request(&tid, "wv:+1", "x", "No")
        ));
    }
    assert_eq!(s.message_id(), Some("m-t-200"));
    assert_eq!(s.requestor_user(), Some("wv:+4915112345679"));
    // Another fixed value, an entity, a control character, an empty transaction: the scan's.
    for other in [
        request("t2", "wv:+4915112345679", "hello", "Yes"),
        request("t2", "wv:a&amp;b@opy.example", "hello", "No"),
        request("t2", "wv:+4915112345679", "a &amp; b", "No"),
        request("t2", "wv:+4915112345679", "a \u{1} b", "No"),
        request("t2", "wv:+4915112345679", "  \n ", "No"),
        request(" ", "wv:+4915112345679", "hello", "No"),
        request(&"t".repeat(256), "wv:+4915112345679", "hello", "No"),
    ] {
        assert!(shape.read(&other).is_none(), "{other}");
    }
    // Under tighter limits, a value or a text the limit refuses is the scan's.
    let tight = Codec {
        limits: Limits {
            max_attr_len: 50,
            max_text_len: 10,
            ..Limits::default()
        },
        ..Codec::default()
    };
    let (_, shape) = Spliced::scan_fresh(&tight, first.as_bytes()).expect("scan");
    let shape = shape.expect("a shape under tight limits");
    assert!(shape_reads_as_the_scan(
        &tight,
        &shape,
        &request("t3", "wv:+1234", "1234567890", "No")
    ));
    // A `\r\n` counts as one character: 11 bytes are 10 characters here.
    assert!(shape_reads_as_the_scan(
        &tight,
        &shape,
        &request("t3", "wv:+1", "123456789\r\n", "No")
    ));
    for other in [
        request("t3", "wv:+1", "1234567890\r\n", "No"),
        request(
            "t3",
            &format!("wv:{}@opy.example", "a".repeat(40)),
            "hello",
            "No",
        ),
        request("t3", "wv:+1234", "12345678901", "No"),
    ] {
        assert!(shape.read(&other).is_none(), "{other}");
    }
    // `scan_read` says how it read a body: the first of a shape by the scan, the next by
    // the shape (under a codec this thread has kept no shape for yet).
    let other = Codec {
        limits: Limits {
            max_depth: 31,
            ..Limits::default()
        },
        ..Codec::default()
    };
    let how = |body: &str| {
        Spliced::scan_read(&other, body.as_bytes())
            .expect("scan")
            .map(|(_, read)| read)
    };
    assert_eq!(how(&first), Some(Read::Scan));
    assert_eq!(how(&next), Some(Read::Shape));
    assert_eq!(how(&next.replace("\n", "\r\n")), Some(Read::Scan));
    // `Spliced::scan`, which keeps shapes on this thread, gives what a fresh scan gives
    // (that it reads by them: `shape::tests` in the crate).
    for body in [&first, &next] {
        let (fresh, _) = Spliced::scan_fresh(&codec, body.as_bytes()).expect("scan");
        assert_eq!(Spliced::scan(&codec, body.as_bytes()).expect("scan"), fresh);
    }
}

/// A `Domain`'s text is a hole read as the scan reads it: trimmed, and left to the scan when
/// it holds a carriage return or nothing.
#[test]
fn a_shape_reads_a_domain_as_the_scan_does() {
    let answer = |domain: &str| {
        format!(
            "<WV-SSP-Message xmlns=\"http://www.openmobilealliance.org/DTD/WV-SSP1.3\">\
<Session sessionID=\"s\"><Transaction mode=\"Response\" transactionID=\"t\">\
<Status code=\"201\"><DetailedResult code=\"531\"><Domain>{domain}</Domain>\
</DetailedResult></Status></Transaction></Session></WV-SSP-Message>"
        )
    };
    let codec = Codec::default();
    let first = answer("core.opx.example");
    let (_, shape) = Spliced::scan_fresh(&codec, first.as_bytes()).expect("scan");
    let shape = shape.expect("a shape of the answer");
    let other = answer(" opy.example\n");
    assert!(shape_reads_as_the_scan(&codec, &shape, &other));
    let s = shape.read(&other).expect("read");
    assert_eq!(s.ids.len(), 1);
    assert_eq!(s.ids[0].slot, Slot::Domain);
    assert_eq!(s.ids[0].value, "opy.example");
    for other in ["x\ry", "x\r\ny", " ", ""] {
        assert!(shape.read(&answer(other)).is_none(), "{other:?}");
    }
}
