//! Delivery notifications over SIP: IMDN (RFC 5438) in CPIM (RFC 3862) wrappers.
//!
//! SIP's answer to a `MESSAGE` says the far side took it, not that the user's device got
//! it (a 202 is a store for later). Where a `[[sip.peer]]` says its users' agents speak IMDN
//! (`imdn = true`), a message whose sender asked for a delivery report goes wrapped in CPIM
//! with `imdn.Disposition-Notification: positive-delivery, negative-delivery` and a
//! `imdn.Message-ID` of ours; the far end's notification, a `MESSAGE` back carrying
//! `message/imdn+xml` in CPIM, becomes the `DeliveryStatusReport` to our user:
//!
//! | IMDN `<status>` | SSP `DeliveryStatusReport` |
//! |---|---|
//! | `delivered` | 200 Delivered |
//! | `failed` | 503 Not delivered |
//! | `forbidden` | 532 Refused by the recipient |
//! | `error` | 500 Delivery notification says error |
//!
//! What a notification will be matched against is kept in the state store (`sip.imdn`,
//! until the message's validity ends), so a restart between the message and its
//! notification loses neither.
//!
//! The CPIM reader takes the headers it needs and bounds the rest: at most 64 header lines
//! of at most 1,024 bytes; the notification is read with the SSP codec's XML limits,
//! tighter (no DOCTYPE, 8 levels, 64 elements).

use crate::ssp::xml::{self, Limits};

/// The content type of a CPIM wrapper.
pub(crate) const CPIM: &str = "message/cpim";
/// The content type of a notification.
const IMDN_TYPE: &str = "message/imdn+xml";
/// The IMDN namespace (XML).
const IMDN_NS: &str = "urn:ietf:params:xml:ns:imdn";
/// Header lines a CPIM wrapper may have (its own and the inner content's).
const MAX_HEADERS: usize = 64;
/// The longest CPIM header line.
const MAX_LINE: usize = 1024;

/// Why a CPIM body or an IMDN notification was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ImdnError {
    /// The CPIM wrapper is not one (no blank line, a line that is no header, too many).
    #[error("CPIM: {0}")]
    Cpim(&'static str),
    /// The notification's XML.
    #[error("IMDN: {0}")]
    Xml(#[from] xml::XmlError),
    /// The notification is not one the gateway reads.
    #[error("IMDN: {0}")]
    Notification(&'static str),
}

/// A CPIM message, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cpim {
    /// The `imdn.Message-ID` header, if any.
    pub(crate) message_id: Option<String>,
    /// The inner content's type (`text/plain` when none is said).
    pub(crate) content_type: String,
    /// The inner content.
    pub(crate) body: Vec<u8>,
}

impl Cpim {
    /// Whether the inner content is a disposition notification.
    pub(crate) fn is_notification(&self) -> bool {
        bare(&self.content_type).eq_ignore_ascii_case(IMDN_TYPE)
    }
}

/// A content type without its parameters.
fn bare(ctype: &str) -> &str {
    ctype.split(';').next().unwrap_or("").trim()
}

/// Wrap `body` (of `ctype`) from `from` to `to` (SIP URIs) in CPIM, asking for delivery
/// notifications for `message_id`.
pub(crate) fn wrap(from: &str, to: &str, message_id: &str, ctype: &str, body: &[u8]) -> Vec<u8> {
    let now = time_now();
    let mut out = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nDateTime: {now}\r\nNS: imdn <urn:ietf:params:imdn>\r\n\
         imdn.Message-ID: {message_id}\r\n\
         imdn.Disposition-Notification: positive-delivery, negative-delivery\r\n\r\n\
         Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// The current time as RFC 3339 UTC, what CPIM's `DateTime` carries.
fn time_now() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Read a CPIM message: its headers, a blank line, the inner content's headers, a blank
/// line, the content.
pub(crate) fn unwrap(body: &[u8]) -> Result<Cpim, ImdnError> {
    let mut rest = body;
    let mut message_id = None;
    let mut content_type = None;
    let mut lines = 0;
    // Two header blocks: CPIM's, then the content's.
    for block in 0..2 {
        loop {
            let end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or(ImdnError::Cpim("a header block does not end"))?;
            let line = &rest[..end];
            rest = &rest[end + 2..];
            if line.is_empty() {
                break;
            }
            lines += 1;
            if lines > MAX_HEADERS || line.len() > MAX_LINE {
                return Err(ImdnError::Cpim("too many or too long header lines"));
            }
            let line =
                std::str::from_utf8(line).map_err(|_| ImdnError::Cpim("a header is not UTF-8"))?;
            let (name, value) = line
                .split_once(':')
                .ok_or(ImdnError::Cpim("a line that is no header"))?;
            let (name, value) = (name.trim(), value.trim());
            // A header name is a token (CPIM's `imdn.` prefixes included).
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            {
                return Err(ImdnError::Cpim("a line that is no header"));
            }
            if block == 0 && name.eq_ignore_ascii_case("imdn.Message-ID") {
                message_id = Some(value.to_owned());
            }
            if block == 1 && name.eq_ignore_ascii_case("Content-Type") {
                content_type = Some(value.to_owned());
            }
        }
    }
    Ok(Cpim {
        message_id,
        content_type: content_type.unwrap_or_else(|| "text/plain".into()),
        body: rest.to_vec(),
    })
}

/// What a notification says became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// `delivered`.
    Delivered,
    /// `failed`.
    Failed,
    /// `forbidden`.
    Forbidden,
    /// `error`.
    Error,
}

impl Disposition {
    /// The SSP status of the `DeliveryStatusReport` it becomes (the table above).
    pub(crate) fn status(self) -> (u16, &'static str) {
        match self {
            Disposition::Delivered => (200, super::DELIVERED),
            Disposition::Failed => (503, "Not delivered"),
            Disposition::Forbidden => (532, "Refused by the recipient"),
            Disposition::Error => (500, "Delivery notification says error"),
        }
    }
}

/// A delivery notification, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Notification {
    /// The `imdn.Message-ID` of the message it is about.
    pub(crate) message_id: String,
    /// What became of it.
    pub(crate) disposition: Disposition,
}

/// Read an IMDN document (RFC 5438 §7.1): only delivery notifications are asked for, so a
/// display or processing one is refused.
pub(crate) fn notification(body: &[u8], max_body: usize) -> Result<Notification, ImdnError> {
    let limits = Limits {
        max_body,
        max_depth: 8,
        max_attrs: 8,
        max_attr_len: 512,
        max_text_len: 1024,
        max_elements: 64,
        max_transactions: 0,
    };
    let doc = xml::parse(body, &limits, &|ns| ns == IMDN_NS)?;
    let local = |n: &str| n.rsplit(':').next().unwrap_or(n).to_owned();
    let root = doc.root;
    if local(&root.name) != "imdn" {
        return Err(ImdnError::Notification("the root is not <imdn>"));
    }
    let find = |name: &str| root.children.iter().find(|c| local(&c.name) == name);
    let message_id = find("message-id")
        .map(|m| m.text.trim().to_owned())
        .filter(|m| !m.is_empty())
        .ok_or(ImdnError::Notification("no <message-id>"))?;
    let status = find("delivery-notification")
        .ok_or(ImdnError::Notification("not a delivery notification"))?
        .children
        .iter()
        .find(|c| local(&c.name) == "status")
        .and_then(|s| s.children.first())
        .ok_or(ImdnError::Notification("no <status>"))?;
    let disposition = match local(&status.name).as_str() {
        "delivered" => Disposition::Delivered,
        "failed" => Disposition::Failed,
        "forbidden" => Disposition::Forbidden,
        "error" => Disposition::Error,
        _ => return Err(ImdnError::Notification("an unknown <status>")),
    };
    Ok(Notification {
        message_id,
        disposition,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_wrapped_message_reads_back() {
        let w = wrap(
            "sip:+46701234567@opx.example;user=phone",
            "sip:+4915112345678@opb.example",
            "m1",
            "text/plain;charset=UTF-8",
            "héllo".as_bytes(),
        );
        let text = String::from_utf8(w.clone()).unwrap();
        assert!(
            text.contains(
                "imdn.Disposition-Notification: positive-delivery, negative-delivery\r\n"
            )
        );
        assert!(text.contains("DateTime: 20"), "{text}");
        let c = unwrap(&w).unwrap();
        assert_eq!(c.message_id.as_deref(), Some("m1"));
        assert_eq!(c.content_type, "text/plain;charset=UTF-8");
        assert_eq!(c.body, "héllo".as_bytes());
        assert!(!c.is_notification());
    }

    #[test]
    fn a_delivery_notification_is_read_and_the_rest_refused() {
        let doc = |status: &str| {
            format!(
                "<?xml version=\"1.0\"?><imdn xmlns=\"urn:ietf:params:xml:ns:imdn\">\
                 <message-id>m1</message-id><datetime>2026-12-03T10:00:00Z</datetime>\
                 <delivery-notification><status><{status}/></status></delivery-notification></imdn>"
            )
        };
        for (s, d) in [
            ("delivered", Disposition::Delivered),
            ("failed", Disposition::Failed),
            ("forbidden", Disposition::Forbidden),
            ("error", Disposition::Error),
        ] {
            let n = notification(doc(s).as_bytes(), 4096).unwrap();
            assert_eq!((n.message_id.as_str(), n.disposition), ("m1", d));
        }
        assert!(notification(doc("displayed").as_bytes(), 4096).is_err());
        let display = doc("delivered").replace("delivery-notification", "display-notification");
        assert!(notification(display.as_bytes(), 4096).is_err());
        let bomb = "<?xml version=\"1.0\"?><!DOCTYPE imdn [<!ENTITY a \"aaaa\">]><imdn xmlns=\"urn:ietf:params:xml:ns:imdn\"/>";
        assert!(matches!(
            notification(bomb.as_bytes(), 4096),
            Err(ImdnError::Xml(_))
        ));
        assert!(
            notification(doc("delivered").as_bytes(), 50).is_err(),
            "over the size bound"
        );
    }

    #[test]
    fn a_cpim_wrapper_that_is_not_one_is_refused() {
        assert!(unwrap(b"no headers at all").is_err());
        assert!(unwrap(b"From: <sip:a@b>\r\n\r\nContent-Type: text/plain").is_err());
        assert!(unwrap(b"From <sip:a@b>\r\n\r\n\r\nx").is_err());
        let many = "X: y\r\n".repeat(MAX_HEADERS + 1) + "\r\n\r\nx";
        assert!(unwrap(many.as_bytes()).is_err());
        let n = unwrap(b"NS: imdn <urn:ietf:params:imdn>\r\nimdn.Message-ID: k\r\n\r\nContent-Type: message/imdn+xml\r\n\r\n<imdn/>").unwrap();
        assert!(n.is_notification());
        assert_eq!(n.body, b"<imdn/>");
    }
}
