//! Bodies, laid out byte for byte like Baraza's (see the captures named on each).

use super::*;

/// Escape for attribute values and text.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// 004 (Response, responder) and 034 (Request, initiator).
pub(super) fn body_secret_token(mode: Mode, tid: &str, domain: &str, token: &str) -> String {
    format!(
        "<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"{NS}\">\n <SetupTransaction mode=\"{}\" transactionID=\"{}\">\n <SendSecretToken serviceID=\"wv:@{}\" protocol=\"WV-SSP\"\nprocotolVersion=\"1.3\">\n<SecretToken>\n{}\n</SecretToken> \n</SendSecretToken> \n</SetupTransaction> \n</WV-SSP-Message> \n",
        mode.as_str(),
        esc(tid),
        esc(domain),
        esc(token)
    )
}

/// 008 (Response, responder) and 038 (Request, initiator); `digest` is compact base64.
pub(super) fn body_login_request(mode: Mode, tid: &str, domain: &str, digest: &str) -> String {
    let wrapped = match B64.decode(digest) {
        Ok(raw) => kannel_b64(&raw),
        Err(_) => format!("{digest}\r\n"),
    };
    format!(
        "<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"{NS}\">\n<SetupTransaction transactionID=\"{}\" mode=\"{}\">\n<LoginRequest serviceID=\"wv:@{}\" timeToLive=\"{TTL}\">\n<PasswordDigest encoding=\"base64\">\n{wrapped}\n</PasswordDigest>\n</LoginRequest>\n\n</SetupTransaction>\n\n</WV-SSP-Message>\n",
        esc(tid),
        mode.as_str(),
        esc(domain)
    )
}

/// 012 (Response, responder) and 042 (Request, initiator).
pub(super) fn body_login_response(mode: Mode, tid: &str, session_id: &str) -> String {
    format!(
        "<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"{NS}\">\n<SetupTransaction transactionID=\"{}\" mode=\"{}\">\n<LoginResponse sessionID=\"{}\" timeToLive=\"{TTL}\">\n<Status code=\"200\"/>\n </LoginResponse>\n\n</SetupTransaction>\n\n</WV-SSP-Message>\n",
        esc(tid),
        mode.as_str(),
        esc(session_id)
    )
}

/// 016, 056, 060, 066: an answer in a Response transaction under our own session ID.
pub(super) fn body_session_response(our_session: &str, tid: &str, primitive: &str) -> String {
    format!(
        "<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"{NS}\">\n<Session sessionID=\"{}\">\n<Transaction mode=\"Response\" transactionID=\"{}\">\n{primitive}\n</Transaction>\n\n</Session>\n</WV-SSP-Message>\n",
        esc(our_session),
        esc(tid)
    )
}

/// 016.
pub(super) fn prim_send_ok(message_id: &str) -> String {
    format!(
        "<SendMessageResponse messageID=\"{}\">\n<Status code=\"200\">\n<StatusDescription>Success</StatusDescription>\n</Status>\n\n</SendMessageResponse>\n",
        esc(message_id)
    )
}

/// 056, one DetailedResult per unknown recipient.
pub(super) fn prim_send_invalid(message_id: &str, invalid: &[String]) -> String {
    let mut details = String::new();
    for id in invalid {
        details.push_str(&format!(
            "<DetailedResult code=\"427\">\n<StatusDescription>invalid userid: {}</StatusDescription>\n</DetailedResult>\n",
            esc(id)
        ));
    }
    format!(
        "<SendMessageResponse messageID=\"{}\">\n<Status code=\"900\">\n<StatusDescription>Errors</StatusDescription>\n{details}</Status>\n\n</SendMessageResponse>\n",
        esc(message_id)
    )
}

/// 060.
pub(super) fn prim_status(code: u16) -> String {
    format!("<Status code=\"{code}\"/>")
}

/// 066.
pub(super) const GET_PRESENCE_EMPTY: &str = "<GetPresenceResponse>\n</GetPresenceResponse>\n";

/// 046.
#[allow(clippy::too_many_arguments)]
pub(super) fn body_send_message_request(
    our_session: &str,
    tid: &str,
    our_domain: &str,
    from: &str,
    to: &str,
    message_id: &str,
    text: &str,
    date_time: &str,
    report: bool,
) -> String {
    format!(
        "<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"{NS}\">\n<Session sessionID=\"{sid}\">\n<Transaction mode=\"Request\" transactionID=\"{tid}\">\n<SendMessageRequest deliveryReport=\"{report}\">\n<MetaInfo clientOriginated=\"Yes\">\n<Requestor serviceID=\"wv:@{dom}\">\n<User userID=\"{from}\"/>\n</Requestor></MetaInfo>\n\n<MessageInfo messageID=\"{mid}\" contentType=\"text/plain\" contentSize=\"{size}\">\n<Recipient>\n<User userID=\"{to}\"/>\n\n</Recipient>\n<Sender>\n<User userID=\"{from}\"/>\n\n</Sender>\n\n<DateTime format=\"iso8601\">{dt}</DateTime>\n\n</MessageInfo>\n<ContentData contentType=\"text/plain\" encoding=\"base64\">\n{data}\n</ContentData>\n\n</SendMessageRequest>\n\n</Transaction>\n</Session>\n</WV-SSP-Message>\n",
        sid = esc(our_session),
        tid = esc(tid),
        dom = esc(our_domain),
        from = esc(from),
        to = esc(to),
        mid = esc(message_id),
        size = text.len(),
        dt = esc(date_time),
        data = kannel_b64(text.as_bytes()),
        report = if report { "Yes" } else { "No" },
    )
}

/// The live run's run2 0040: a subscription with Baraza's Requestor `ClientID` and an
/// attribute list.
pub(super) fn body_subscribe(
    our_session: &str,
    tid: &str,
    our_domain: &str,
    from: &str,
    presentity: &str,
) -> String {
    format!(
        "<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"{NS}\">\n<Session sessionID=\"{sid}\">\n<Transaction mode=\"Request\" transactionID=\"{tid}\">\n<SubscribeRequest><MetaInfo clientOriginated=\"Yes\">\n<Requestor serviceID=\"wv:@{dom}\">\n<User userID=\"{from}\">\n<ClientID url=\"WV:lab-client\"/>\n</User>\n</Requestor></MetaInfo>\n<UserID userID=\"{to}\"/><AttributeList><PresenceSubList>\n<OnlineStatus/>\n<UserAvailability/>\n<StatusText/>\n\n</PresenceSubList>\n</AttributeList>\n</SubscribeRequest>\n\n</Transaction>\n</Session>\n</WV-SSP-Message>\n",
        sid = esc(our_session),
        tid = esc(tid),
        dom = esc(our_domain),
        from = esc(from),
        to = esc(presentity),
    )
}

/// The live run's 0009: the answer to a Subscribe or Unsubscribe, a bare Status.
pub(super) const STATUS_COMPLETE: &str =
    "<Status code=\"200\">\n<StatusDescription>Complete</StatusDescription>\n</Status>\n";

/// The live run's run1 0036: a delivery report as Baraza writes it, Sender and Recipient the
/// other way round (its user, who got the message, as Sender; the original sender as
/// Recipient, without `wv:`).
#[allow(clippy::too_many_arguments)]
pub(super) fn body_delivery_report(
    our_session: &str,
    tid: &str,
    our_domain: &str,
    local_id: &str,
    original_sender: &str,
    message_id: &str,
    size: usize,
    delivered: &str,
) -> String {
    format!(
        "<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"{NS}\">\n<Session sessionID=\"{sid}\">\n<Transaction mode=\"Request\" transactionID=\"{tid}\">\n<DeliveryStatusReport>\n<MetaInfo clientOriginated=\"Yes\">\n<Requestor serviceID=\"wv:@{dom}\">\n<User userID=\"{local}\"/>\n</Requestor></MetaInfo>\n\n<DeliveryResult><Status code=\"200\">\n<StatusDescription>Fetched</StatusDescription>\n</Status>\n</DeliveryResult>\n<DeliveryTime>{at}</DeliveryTime>\n<MessageInfo messageID=\"{mid}\" contentType=\"text/plain\" contentSize=\"{size}\">\n<Recipient>\n<User userID=\"{orig}\"/>\n\n</Recipient>\n<Sender>\n<User userID=\"{local}\"/>\n\n</Sender>\n\n<DateTime format=\"iso8601\">{at}</DateTime>\n\n</MessageInfo>\n\n</DeliveryStatusReport>\n\n</Transaction>\n</Session>\n</WV-SSP-Message>\n",
        sid = esc(our_session),
        tid = esc(tid),
        dom = esc(our_domain),
        local = esc(local_id),
        orig = esc(strip_wv(original_sender)),
        mid = esc(message_id),
        at = esc(delivered),
    )
}

/// The live run's run2 0053: `VerUserID`, and an attribute list of `(null)`.
pub(super) fn body_get_presence(
    our_session: &str,
    tid: &str,
    our_domain: &str,
    from: &str,
    presentity: &str,
) -> String {
    format!(
        "<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"{NS}\">\n<Session sessionID=\"{sid}\">\n<Transaction mode=\"Request\" transactionID=\"{tid}\">\n<GetPresenceRequest>\n<MetaInfo clientOriginated=\"Yes\">\n<Requestor serviceID=\"wv:@{dom}\">\n<User userID=\"{from}\">\n<ClientID url=\"WV:lab-client\"/>\n</User>\n</Requestor></MetaInfo>\n\n<VerUserID userID=\"{to}\"/>\n<AttributeList>\n(null)\n</AttributeList>\n</GetPresenceRequest>\n\n</Transaction>\n</Session>\n</WV-SSP-Message>\n",
        sid = esc(our_session),
        tid = esc(tid),
        dom = esc(our_domain),
        from = esc(from),
        to = esc(presentity),
    )
}

/// The live run's run2 0032: no MetaInfo, the watcher without `wv:`, the presentity's
/// values laid out one per line.
pub(super) fn body_notification(
    our_session: &str,
    tid: &str,
    from: &str,
    watcher: &str,
    status_text: &str,
) -> String {
    format!(
        "<?xml version='1.0'?>\n<WV-SSP-Message xmlns=\"{NS}\">\n<Session sessionID=\"{sid}\">\n<Transaction mode=\"Request\" transactionID=\"{tid}\">\n<PresenceNotification>\n\n<User userID=\"{watcher}\"/>\n<PresenceValue userID=\"{from}\">\n<PresenceSubList>\n<OnlineStatus>\n<Qualifier>\nT\n</Qualifier>\n<PresenceValue>\nT\n</PresenceValue>\n\n</OnlineStatus>\n<UserAvailability>\n<Qualifier>\nT\n</Qualifier>\n<PresenceValue>\nAVAILABLE\n</PresenceValue>\n\n</UserAvailability>\n<StatusText>\n<Qualifier>\nT\n</Qualifier>\n<PresenceValue>\n{text}\n</PresenceValue>\n\n</StatusText>\n\n</PresenceSubList>\n</PresenceValue>\n</PresenceNotification>\n\n</Transaction>\n</Session>\n</WV-SSP-Message>\n",
        sid = esc(our_session),
        tid = esc(tid),
        watcher = esc(strip_wv(watcher)),
        from = esc(from),
        text = esc(status_text),
    )
}
