//! What the codec benchmark (`benches/codec.rs`) and the allocation bound (`allocations.rs`)
//! both measure: one message, written once.

/// A Baraza-style message of about 1.3 KB: requestor, two recipients by number, a sender.
pub(crate) fn message() -> String {
    let mut m = String::from(
        r#"<?xml version='1.0'?>
<WV-SSP-Message xmlns="http://www.openmobilealliance.org/DTD/WV-SSP1.3">
<Session sessionID="8@core.opx.example">
<Transaction mode="Request" transactionID="0000000002-0">
<SendMessageRequest deliveryReport="Yes">
<MetaInfo clientOriginated="Yes">
<Requestor serviceID="wv:@core.opx.example">
<User userID="wv:usera@core.opx.example"/>
</Requestor></MetaInfo>
<MessageInfo messageID="8aee9981801716c039215f69def4ffad7" contentType="text/plain" contentSize="300" validity="600">
<Recipient>
<User userID="wv:+4915112345678"/>
<User userID="wv:+4915112345679"/>
</Recipient>
<Sender>
<User userID="wv:usera@core.opx.example" friendlyName="User A"/>
</Sender>
<DateTime format="iso8601">2026-11-25T12:27:59Z</DateTime>
</MessageInfo>
<ContentData contentType="text/plain" encoding="base64">
"#,
    );
    // Base64 body with Baraza's CRLF line breaks, padding the message to ~1.3 KB.
    for _ in 0..6 {
        m.push_str("SGVsbG8gZnJvbSBvcGVyYXRvciBYLCB0aGlzIGlzIGEgdGVzdCBtZXNzYWdlIQ==\r\n");
    }
    m.push_str(
        "</ContentData>\n</SendMessageRequest>\n</Transaction>\n</Session>\n</WV-SSP-Message>\n",
    );
    m
}
