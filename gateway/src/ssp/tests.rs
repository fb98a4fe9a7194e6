//! Unit tests of the typed model against messages in Baraza's exact style: the real captures
//! (`tests/fixtures/baraza/0xx_*.xml`, and from a later live run `900`, `910`-`914`) and
//! hand-written ones in the same layout (the other `9xx_*`).

use super::message::{Body, Codec, Message, Mode, NS_WV_SSP_13};
use super::primitives::{Primitive, SetupPrimitive};
use super::walk::RouteBy;
use proptest::prelude::*;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/baraza/",
            $name
        ))
    };
}

fn parse(s: &str) -> Message {
    Codec::default()
        .parse(s.as_bytes())
        .expect("fixture parses")
}

fn only_txn(m: &Message) -> &super::Transaction {
    let s = m.as_session().expect("session");
    assert_eq!(s.transactions.len(), 1);
    &s.transactions[0]
}

fn setup(m: &Message) -> (&super::SetupTransaction, &SetupPrimitive) {
    match &m.body {
        Body::Setup(t) => (t, &t.primitive),
        Body::Session(_) => panic!("expected SetupTransaction"),
    }
}

/// Emitting and re-parsing gives the same typed value, and emitting again the same bytes.
fn assert_round_trip(m: &Message) {
    let out = m.emit(NS_WV_SSP_13);
    let back = Codec::default()
        .parse(out.as_bytes())
        .expect("own output parses");
    let mut expect = m.clone();
    expect.namespace = Some(NS_WV_SSP_13.into());
    assert_eq!(back, expect, "round trip changed the message:\n{out}");
    assert_eq!(back.emit(NS_WV_SSP_13), out, "emission is not canonical");
}

#[test]
fn send_secret_token_both_spellings() {
    let ours = parse(fixture!("001_SetupTransaction-Request-SendSecretToken.xml"));
    let (t, p) = setup(&ours);
    assert_eq!(
        (t.mode, t.transaction_id.as_str()),
        (Mode::Request, "bt-7bf56d57")
    );
    let SetupPrimitive::SendSecretToken(s) = p else {
        panic!()
    };
    assert_eq!(s.protocol_version.as_deref(), Some("1.3"));
    assert_eq!(s.token, "78fdb4c914e91c8610af7b0686742dcc");

    let baraza = parse(fixture!(
        "004_SetupTransaction-Response-SendSecretToken.xml"
    ));
    let (t, p) = setup(&baraza);
    assert_eq!((t.mode, t.transaction_id.as_str()), (Mode::Response, "7"));
    let SetupPrimitive::SendSecretToken(s) = p else {
        panic!()
    };
    // `procotolVersion` (Baraza's spelling) is read as protocolVersion and written canonically.
    assert_eq!(s.protocol_version.as_deref(), Some("1.3"));
    assert!(s.ext.attrs.is_empty());
    assert_eq!(s.service_id.as_deref(), Some("wv:@a.test"));
    assert_eq!(
        s.token, "3d2d0184ddf621eccee0558036087513",
        "newline padding trimmed"
    );
    assert!(
        baraza
            .emit(NS_WV_SSP_13)
            .contains("protocolVersion=\"1.3\"")
    );
    assert_round_trip(&ours);
    assert_round_trip(&baraza);
}

#[test]
fn login_request_digest_whitespace_removed() {
    let m = parse(fixture!("008_SetupTransaction-Response-LoginRequest.xml"));
    let (t, p) = setup(&m);
    assert_eq!(t.mode, Mode::Response);
    let SetupPrimitive::LoginRequest(l) = p else {
        panic!()
    };
    assert_eq!(l.digest, "lwWr9VcRGlZ/JwHRzH473A==");
    assert_eq!(l.digest_encoding.as_deref(), Some("base64"));
    assert_eq!(l.time_to_live.as_deref(), Some("86400"));
    assert_round_trip(&m);
    let m = parse(fixture!("006_SetupTransaction-Request-LoginRequest.xml"));
    assert_round_trip(&m);
    let m = parse(fixture!("040_SetupTransaction-Response-LoginRequest.xml"));
    assert_round_trip(&m);
}

#[test]
fn login_response() {
    for f in [
        fixture!("010_SetupTransaction-Request-LoginResponse.xml"),
        fixture!("012_SetupTransaction-Response-LoginResponse.xml"),
        fixture!("044_SetupTransaction-Response-LoginResponse.xml"),
    ] {
        let m = parse(f);
        let (_, p) = setup(&m);
        let SetupPrimitive::LoginResponse(l) = p else {
            panic!()
        };
        assert!(l.session_id.as_deref().is_some_and(|s| s.contains('@')));
        assert_eq!(l.status.as_ref().map(|s| s.code), Some(200));
        assert_round_trip(&m);
    }
}

#[test]
fn send_message_request_baraza_and_peer_style() {
    let m = parse(fixture!("046_Session-Request-SendMessageRequest.xml"));
    let s = m.as_session().unwrap();
    assert_eq!(s.session_id, "8@a.test");
    let t = only_txn(&m);
    assert_eq!(t.transaction_id, "0000000002-0");
    let Primitive::SendMessageRequest(p) = &t.primitive else {
        panic!()
    };
    assert_eq!(p.delivery_report.as_deref(), Some("No"));
    let info = p.info.as_ref().unwrap();
    assert_eq!(
        info.message_id.as_deref(),
        Some("8aee9981801716c039215f69def4ffad7")
    );
    assert_eq!(
        info.date_time.as_ref().unwrap().value,
        "2026-12-25T12:27:59Z"
    );
    let c = p.content.as_ref().unwrap();
    assert_eq!(
        c.data, "SGkgYm9iLCBhbGljZSBmcm9tIGEudGVzdCBoZXJl",
        "\\r\\n and padding removed"
    );
    assert_eq!(
        t.primitive.route_by(),
        vec![RouteBy::Id("wv:bob@b.test".into())]
    );
    assert_eq!(
        t.primitive.originators(),
        vec!["wv:@a.test", "wv:alice@a.test", "wv:alice@a.test"]
    );
    assert_round_trip(&m);

    let m = parse(fixture!("014_Session-Request-SendMessageRequest.xml"));
    assert_eq!(
        only_txn(&m).primitive.route_by(),
        vec![RouteBy::Id("wv:alice@a.test".into())]
    );
    assert_round_trip(&m);
}

#[test]
fn send_message_response_forms() {
    let m = parse(fixture!("016_Session-Response-SendMessageResponse.xml"));
    let Primitive::SendMessageResponse(r) = &only_txn(&m).primitive else {
        panic!()
    };
    let st = r.status.as_ref().unwrap();
    assert_eq!((st.code, st.description.as_deref()), (200, Some("Success")));
    assert_round_trip(&m);

    // Baraza's unknown recipient: 900 holding a 427 DetailedResult.
    let m = parse(fixture!("056_Session-Response-SendMessageResponse.xml"));
    let Primitive::SendMessageResponse(r) = &only_txn(&m).primitive else {
        panic!()
    };
    assert_eq!(r.message_id.as_deref(), Some(""));
    let st = r.status.as_ref().unwrap();
    assert_eq!(st.code, 900);
    assert_eq!(st.details[0].code, 427);
    assert_eq!(
        st.details[0].description.as_deref(),
        Some("invalid userid: nobody@a.test")
    );
    assert_round_trip(&m);

    let m = parse(fixture!("907_Session-Response-SendMessageResponse-201.xml"));
    let Primitive::SendMessageResponse(r) = &only_txn(&m).primitive else {
        panic!()
    };
    let st = r.status.as_ref().unwrap();
    assert_eq!((st.code, st.try_again), (201, Some(60)));
    assert_eq!(st.details[0].ids[0].id, "wv:+4915100000000@b.test");
    assert_round_trip(&m);

    let m = parse(fixture!("048_Session-Response-SendMessageResponse.xml"));
    assert_round_trip(&m);
}

#[test]
fn bare_status_primitive() {
    let m = parse(fixture!("060_Session-Response-Status.xml"));
    let t = only_txn(&m);
    assert_eq!(t.mode, Mode::Response);
    let Primitive::Status(s) = &t.primitive else {
        panic!()
    };
    assert_eq!(s.code, 901);
    assert_round_trip(&m);
}

#[test]
fn get_presence_request_and_empty_response() {
    let m = parse(fixture!("064_Session-Request-GetPresenceRequest.xml"));
    let t = only_txn(&m);
    assert!(matches!(t.primitive, Primitive::GetPresenceRequest(_)));
    assert_eq!(
        t.primitive.route_by(),
        vec![RouteBy::Id("wv:alice@a.test".into())]
    );
    assert_round_trip(&m);
    let m = parse(fixture!("066_Session-Response-GetPresenceResponse.xml"));
    let Primitive::GetPresenceResponse(r) = &only_txn(&m).primitive else {
        panic!()
    };
    assert!(r.status.is_none() && r.values.is_empty());
    assert_round_trip(&m);
}

/// A live capture: Baraza's report names its own user (who got the message) as Sender and
/// ours, without `wv:`, as Recipient. As parsed, the route-by is the Sender; the request path
/// turns such a report round (`pipeline/normalize.rs`).
#[test]
fn delivery_status_report() {
    let m = parse(fixture!("900_Session-Request-DeliveryStatusReport.xml"));
    let t = only_txn(&m);
    let Primitive::DeliveryStatusReport(r) = &t.primitive else {
        panic!()
    };
    assert_eq!(r.result.as_ref().unwrap().code, 200);
    assert_eq!(r.delivery_time.as_deref(), Some("2026-09-03T03:56:20Z"));
    let info = r.info.as_ref().unwrap();
    assert_eq!(
        info.recipient.as_ref().unwrap().entities[0].id,
        "+4915112345678@b.test"
    );
    assert_eq!(
        t.primitive.route_by(),
        vec![RouteBy::Id("wv:alice@a.test".into())]
    );
    assert_eq!(
        t.primitive.originators(),
        vec!["wv:@a.test", "wv:alice@a.test"]
    );
    assert_round_trip(&m);
}

/// Live captures of what Baraza sends about presence: a notification with no MetaInfo and the
/// watcher without `wv:` (empty, and with values), a subscription with a Requestor
/// `ClientID`, a fetch by `VerUserID` with an attribute list of `(null)`, and the bare
/// `Status` it answers a subscription with.
#[test]
fn presence_as_baraza_writes_it() {
    for (f, watcher) in [
        (
            fixture!("910_Session-Request-PresenceNotification-empty.xml"),
            true,
        ),
        (
            fixture!("911_Session-Request-PresenceNotification-values.xml"),
            true,
        ),
    ] {
        let m = parse(f);
        let t = only_txn(&m);
        let Primitive::PresenceNotification(p) = &t.primitive else {
            panic!()
        };
        assert!(p.meta.is_none());
        assert_eq!(
            t.primitive.route_by(),
            vec![RouteBy::Id("+4915112345678@b.test".into())],
            "{watcher}"
        );
        assert_round_trip(&m);
    }
    let m = parse(fixture!(
        "911_Session-Request-PresenceNotification-values.xml"
    ));
    assert_eq!(
        only_txn(&m).primitive.originators(),
        vec!["wv:alice@a.test"]
    );
    let m = parse(fixture!("912_Session-Request-SubscribeRequest.xml"));
    let t = only_txn(&m);
    assert_eq!(
        t.primitive.route_by(),
        vec![RouteBy::Id("wv:+4915112345678@b.test".into())]
    );
    assert_eq!(
        t.primitive.originators(),
        vec!["wv:@a.test", "wv:alice@a.test"]
    );
    assert_round_trip(&m);
    let m = parse(fixture!("913_Session-Request-GetPresenceRequest.xml"));
    let t = only_txn(&m);
    let Primitive::GetPresenceRequest(p) = &t.primitive else {
        panic!()
    };
    assert_eq!(p.users[0].id, "wv:+4915112345678@b.test");
    assert_eq!(p.attribute_list.as_ref().unwrap().text, "(null)");
    assert_round_trip(&m);
    let m = parse(fixture!("914_Session-Response-Status.xml"));
    let t = only_txn(&m);
    assert_eq!(t.mode, Mode::Response);
    assert_eq!(t.primitive.answer_code(), 200);
}

#[test]
fn subscribe_and_unsubscribe() {
    let m = parse(fixture!("901_Session-Request-SubscribeRequest.xml"));
    let t = only_txn(&m);
    let Primitive::SubscribeRequest(p) = &t.primitive else {
        panic!()
    };
    let al = p.attribute_list.as_ref().unwrap();
    assert_eq!(al.children[0].name, "PresenceSubList");
    assert_eq!(
        al.children[0].attr("xmlns"),
        Some("http://www.openmobilealliance.org/DTD/WV-PA1.3"),
        "the PA namespace is not SSP and stays"
    );
    assert_eq!(
        t.primitive.route_by(),
        vec![RouteBy::Id("wv:bob@b.test".into())]
    );
    assert_round_trip(&m);
    let m = parse(fixture!("902_Session-Request-UnsubscribeRequest.xml"));
    assert!(matches!(
        only_txn(&m).primitive,
        Primitive::UnsubscribeRequest(_)
    ));
    assert_round_trip(&m);
}

#[test]
fn presence_notification_keeps_vendor_content() {
    let m = parse(fixture!("903_Session-Request-PresenceNotification.xml"));
    let t = only_txn(&m);
    let Primitive::PresenceNotification(p) = &t.primitive else {
        panic!()
    };
    assert_eq!(p.watchers[0].id, "wv:bob@b.test");
    assert_eq!(p.values[0].user_id, "wv:alice@a.test");
    assert_eq!(
        t.primitive.route_by(),
        vec![RouteBy::Id("wv:bob@b.test".into())]
    );
    assert!(t.primitive.originators().contains(&"wv:alice@a.test"));
    let out = m.emit(NS_WV_SSP_13);
    assert!(out.contains(
        r#"<ClientTypeDetail xmlns="http://imps.colibria.com/PA-ext-1.2" xsi:type="x">MOBILE</ClientTypeDetail>"#
    ));
    assert_round_trip(&m);
}

#[test]
fn search_request_and_response() {
    let m = parse(fixture!("904_Session-Request-SearchRequest.xml"));
    let t = only_txn(&m);
    let Primitive::SearchRequest(p) = &t.primitive else {
        panic!()
    };
    assert_eq!(p.mobile_number(), Some("+4915112345678"));
    assert_eq!(
        t.primitive.route_by(),
        vec![RouteBy::SearchNumber("+4915112345678".into())]
    );
    assert_round_trip(&m);
    let m = parse(fixture!("905_Session-Response-SearchResponse.xml"));
    let Primitive::SearchResponse(r) = &only_txn(&m).primitive else {
        panic!()
    };
    assert_eq!(r.results[0].id, "wv:+4915112345678@b.test");
    assert_eq!(r.results[0].friendly_name.as_deref(), Some("Bob"));
    assert_eq!(r.findings.as_deref(), Some("1"));
    assert_round_trip(&m);
}

#[test]
fn invite_and_group_primitives() {
    let m = parse(fixture!("906_Session-Request-InviteRequest.xml"));
    let t = only_txn(&m);
    let Primitive::InviteRequest(p) = &t.primitive else {
        panic!()
    };
    assert_eq!(p.invite_id.as_deref(), Some("inv-1"));
    assert_eq!(
        p.ext.attrs,
        vec![
            ("inviteType".into(), "GR".into()),
            ("validity".into(), "600".into())
        ]
    );
    assert_eq!(
        t.primitive.route_by(),
        vec![RouteBy::Id("wv:bob@b.test".into())]
    );
    assert_round_trip(&m);

    let m = parse(fixture!("908_Session-Request-JoinGroupRequest.xml"));
    let t = only_txn(&m);
    assert!(matches!(t.primitive, Primitive::Group(_)));
    assert_eq!(
        t.primitive.route_by(),
        vec![RouteBy::Id("wv:/room@b.test".into())]
    );
    assert_round_trip(&m);
}

#[test]
fn unknown_primitives_and_elements_survive() {
    let xml = r#"<?xml version="1.0"?>
<WV-SSP-Message xmlns="http://www.openmobilealliance.org/DTD/WV-SSP1.3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:acme="urn:acme">
 <Session sessionID="1@x.example" acme:trace="t1">
  <Transaction mode="Request" transactionID="t-1" acme:prio="9">
   <AcmeFrobRequest level="3"><User userID="wv:carol@x.example"/><acme:Blob>data</acme:Blob></AcmeFrobRequest>
  </Transaction>
  <Transaction mode="Request" transactionID="t-2">
   <SendMessageRequest deliveryReport="Yes" acme:flag="1">
    <MessageInfo contentType="text/plain" acme:x="y"><Recipient><User userID="wv:dave@y.example"><ClientID url="u">opaque</ClientID></User></Recipient></MessageInfo>
    <acme:Extra>kept</acme:Extra>
   </SendMessageRequest>
  </Transaction>
 </Session>
</WV-SSP-Message>"#;
    let m = parse(xml);
    let s = m.as_session().unwrap();
    assert!(
        matches!(&s.transactions[0].primitive, Primitive::Other(e) if e.name == "AcmeFrobRequest")
    );
    let out = m.emit(NS_WV_SSP_13);
    for needle in [
        r#"xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance""#,
        r#"acme:trace="t1""#,
        r#"acme:prio="9""#,
        r#"<AcmeFrobRequest level="3"><User userID="wv:carol@x.example"/><acme:Blob>data</acme:Blob></AcmeFrobRequest>"#,
        r#"acme:flag="1""#,
        r#"acme:x="y""#,
        r#"<ClientID url="u">opaque</ClientID>"#,
        r#"<acme:Extra>kept</acme:Extra>"#,
    ] {
        assert!(out.contains(needle), "lost {needle} in {out}");
    }
    assert_round_trip(&m);
}

#[test]
fn liberal_input_forms() {
    // Other accepted namespace, prefixed SSP elements, single-quoted declaration, Baraza's
    // attribute spellings and no `wv:` on IDs.
    let xml = "<?xml version='1.0'?>\n<ssp:WV-SSP-Message xmlns:ssp='http://www.wireless-village.org/SSP1.1'>\n\n<ssp:Session sessionID='9@b.test'>\n<ssp:Transaction mode=' request ' transactionID='9'>\n<ssp:SendMessageRequest>\n<ssp:MessageInfo MessageURI='u' ContentName='n' validlity='600'>\n<ssp:Recipient><ssp:User userID='alice@a.test'/></ssp:Recipient>\n</ssp:MessageInfo>\n</ssp:SendMessageRequest>\n</ssp:Transaction>\n</ssp:Session>\n</ssp:WV-SSP-Message>";
    let m = parse(xml);
    assert_eq!(
        m.namespace.as_deref(),
        Some("http://www.wireless-village.org/SSP1.1")
    );
    let t = only_txn(&m);
    assert_eq!(t.mode, Mode::Request);
    let Primitive::SendMessageRequest(p) = &t.primitive else {
        panic!()
    };
    let i = p.info.as_ref().unwrap();
    assert_eq!(
        (
            i.message_uri.as_deref(),
            i.content_name.as_deref(),
            i.validity.as_deref()
        ),
        (Some("u"), Some("n"), Some("600"))
    );
    assert!(i.ext.attrs.is_empty());
    let out = m.emit(NS_WV_SSP_13);
    assert!(
        out.contains(r#"messageURI="u" contentName="n" validity="600""#),
        "{out}"
    );
}

#[test]
fn envelope_errors_are_400_with_description() {
    let codec = Codec::default();
    let e = codec
        .parse(br#"<WV-SSP-Message xmlns="http://www.openmobilealliance.org/DTD/WV-SSP1.3"><Foo transactionID="x"><Bar/></Foo></WV-SSP-Message>"#)
        .unwrap_err();
    assert_eq!(crate::error::Failure::from(&e).status().code, 400);
    assert!(e.to_string().contains("<Foo>"));
    let e = codec
        .parse(br#"<WV-SSP-Message xmlns="urn:other"><Session/></WV-SSP-Message>"#)
        .unwrap_err();
    assert!(e.to_string().contains("urn:other"));
    let e = codec
        .parse(br#"<WV-CSP-Message><Session/></WV-CSP-Message>"#)
        .unwrap_err();
    assert!(e.to_string().contains("WV-CSP-Message"));
    let e = codec
        .parse(br#"<WV-SSP-Message><SetupTransaction mode="Request"><LoginRequest/></SetupTransaction></WV-SSP-Message>"#)
        .unwrap_err();
    assert!(e.to_string().contains("transactionID"));
}

#[test]
fn bad_transactions_are_rejected_individually() {
    let m = parse(
        r#"<WV-SSP-Message><Session sessionID="s@x"><Transaction mode="Request"><Status code="200"/></Transaction><Transaction mode="Request" transactionID="ok"><Status code="200"/></Transaction><Transaction mode="Sideways" transactionID="bad"><Status code="200"/></Transaction><Transaction mode="Request" transactionID="empty"/></Session></WV-SSP-Message>"#,
    );
    let s = m.as_session().unwrap();
    assert_eq!(s.transactions.len(), 1);
    assert_eq!(s.transactions[0].transaction_id, "ok");
    assert_eq!(s.rejected.len(), 3);
    assert!(s.rejected[0].reason.contains("without transactionID"));
    assert_eq!(s.rejected[1].transaction_id.as_deref(), Some("bad"));
    assert!(s.rejected[2].reason.contains("no primitive"));

    // A request's ID is carried inside ours, with a length byte: at most 255 bytes. Answers
    // (which carry our own, longer IDs) have no such bound.
    let long = "t".repeat(256);
    let m = parse(&format!(
        r#"<WV-SSP-Message><Session sessionID="s@x"><Transaction mode="Request" transactionID="{}"><Status code="200"/></Transaction><Transaction mode="Request" transactionID="{long}"><Status code="200"/></Transaction><Transaction mode="Response" transactionID="{long}"><Status code="200"/></Transaction></Session></WV-SSP-Message>"#,
        &long[..255]
    ));
    let s = m.as_session().unwrap();
    assert_eq!(s.transactions.len(), 2);
    assert_eq!(s.rejected.len(), 1);
    assert!(
        s.rejected[0].reason.contains("longer than 255"),
        "{}",
        s.rejected[0].reason
    );
}

#[test]
fn entity_bomb_refused_quickly_in_bounded_memory() {
    // A classic billion-laughs document, padded to just under the body limit.
    let mut bomb =
        String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n");
    for i in 1..10 {
        bomb.push_str(&format!(
            " <!ENTITY lol{i} \"{}\">\n",
            format!(
                "&lol{};",
                if i == 1 {
                    String::new()
                } else {
                    (i - 1).to_string()
                }
            )
            .repeat(10)
        ));
    }
    bomb.push_str("]>\n<WV-SSP-Message>&lol9;</WV-SSP-Message>");
    let start = std::time::Instant::now();
    let e = Codec::default().parse(bomb.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("DOCTYPE"), "{e}");
    // Refused at the DOCTYPE event, long before any expansion could happen.
    assert!(start.elapsed() < std::time::Duration::from_millis(50));
    // External entity (XXE) form.
    let xxe = br#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><WV-SSP-Message>&e;</WV-SSP-Message>"#;
    assert!(
        Codec::default()
            .parse(xxe)
            .unwrap_err()
            .to_string()
            .contains("DOCTYPE")
    );
}

// ---- properties -------------------------------------------------------------------------

fn arb_id() -> impl Strategy<Value = String> {
    prop_oneof![
        "wv:[a-z]{1,8}@[a-z]{1,6}\\.example",
        "wv:\\+[1-9][0-9]{6,14}",
        "wv:\\+[1-9][0-9]{6,14}@[a-z]{1,6}\\.test",
        "wv:/[a-z]{1,6}@[a-z]{1,6}\\.example",
    ]
}

fn arb_text() -> impl Strategy<Value = String> {
    // Includes markup characters and non-ASCII; no surrounding whitespace (the parser trims).
    "[a-zA-Z0-9<>&\"'é☺ ]{0,20}".prop_map(|s| s.trim().to_owned())
}

fn arb_send_message() -> impl Strategy<Value = Message> {
    (
        prop::collection::vec(arb_id(), 1..4),
        arb_id(),
        arb_text(),
        arb_text(),
        prop::option::of(arb_text()),
        "[A-Za-z0-9-]{1,12}",
    )
        .prop_map(|(rcpts, sender, body, desc, vendor, tid)| {
            use super::common::*;
            use super::primitives::*;
            let mut req = SendMessageRequest {
                delivery_report: Some("Yes".into()),
                meta: Some(MetaInfo::client("wv:@a.example", &sender)),
                info: Some(MessageInfo {
                    message_id: Some(desc.clone()),
                    content_type: Some("text/plain".into()),
                    recipient: Some(Party {
                        entities: rcpts.iter().map(Entity::user).collect(),
                        ext: Ext::default(),
                    }),
                    sender: Some(Party::user(sender.clone())),
                    ..Default::default()
                }),
                content: Some(ContentData {
                    content_type: Some("text/plain".into()),
                    encoding: None,
                    data: body,
                    ext: Ext::default(),
                }),
                ext: Ext::default(),
            };
            if let Some(v) = vendor {
                req.ext.attrs.push(("v:attr".into(), v.clone()));
                req.ext
                    .children
                    .push(super::xml::Element::new("v:Thing").with_text(v));
            }
            let mut resp_status = Status::with(201, desc);
            resp_status
                .details
                .push(DetailedResult::for_user(531, "Unknown user", &rcpts[0]));
            Message::session(
                "1@a.example",
                vec![
                    super::Transaction::request(tid.clone(), Primitive::SendMessageRequest(req)),
                    super::Transaction::response(
                        tid,
                        Primitive::SendMessageResponse(SendMessageResponse {
                            message_id: None,
                            status: Some(resp_status),
                            ext: Ext::default(),
                        }),
                    ),
                ],
            )
        })
}

proptest! {
    #[test]
    fn codec_round_trip(m in arb_send_message()) {
        let out = m.emit(NS_WV_SSP_13);
        let mut back = Codec::default().parse(out.as_bytes()).unwrap();
        back.namespace = None;
        prop_assert_eq!(back, m);
    }

    #[test]
    fn reparse_of_any_accepted_input_is_stable(m in arb_send_message(), pretty in any::<bool>()) {
        // Pretty-printing (Baraza style) must not change the typed value.
        let mut out = m.emit(NS_WV_SSP_13);
        if pretty {
            out = out.replace("><", ">\n\n<");
        }
        let once = Codec::default().parse(out.as_bytes()).unwrap();
        let twice = Codec::default().parse(once.emit(NS_WV_SSP_13).as_bytes()).unwrap();
        prop_assert_eq!(once, twice);
    }

    #[test]
    fn parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Codec::default().parse(&bytes);
    }
}

#[test]
fn metric_labels_are_a_closed_set() {
    let wrap = |inner: &str| {
        format!(
            r#"<WV-SSP-Message xmlns="http://www.openmobilealliance.org/DTD/WV-SSP1.3"><Session sessionID="s@opy.example"><Transaction mode="Request" transactionID="t1">{inner}</Transaction></Session></WV-SSP-Message>"#
        )
    };
    for (inner, name, label) in [
        (
            "<SendMessageRequest/>",
            "SendMessageRequest",
            "SendMessageRequest",
        ),
        (
            "<JoinGroupRequest/>",
            "JoinGroupRequest",
            "JoinGroupRequest",
        ),
        // A peer picks unknown names: carried through, but one label for all of them.
        ("<Xq7RandomRequest/>", "Xq7RandomRequest", "other"),
    ] {
        let m = parse(&wrap(inner));
        let p = &only_txn(&m).primitive;
        assert_eq!((p.name(), p.label()), (name, label), "{inner}");
    }
}
