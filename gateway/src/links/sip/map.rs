//! SSP ↔ SIP mapping, without I/O: addresses (`wv:` IDs and numbers to SIP URIs and back),
//! SIP answer codes to SSP failures, SSP answers to SIP codes, and message content. The
//! tables are written out in `PROTOCOL.md` §11.

use crate::error::{Failure, Kind, Side};
use crate::ssp::E164;

/// A SIP address reduced to what the gateway routes by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SipAddress {
    /// The user part (`+4915112345678`, `bob`), or the number of a `tel:` URI.
    pub(crate) user: String,
    /// The host, lower case, without port (empty for `tel:`).
    pub(crate) host: String,
}

impl SipAddress {
    /// The user's E.164 number, when the user part is one (`+` and digits; visual
    /// separators `-` `.` `(` `)` allowed, as RFC 3966 does).
    pub(crate) fn number(&self) -> Option<E164> {
        let rest = self.user.strip_prefix('+')?;
        let digits: String = rest
            .chars()
            .filter(|c| !matches!(c, '-' | '.' | '(' | ')'))
            .collect();
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        E164::from_digits(&digits).ok()
    }
}

/// The address in a From/To header value (`"Bob" <sip:bob@b.test>;tag=1`) or a bare URI
/// (`sip:bob@b.test;user=phone`, `tel:+4915112345678`). `None`: not a SIP or tel URI.
pub(crate) fn address(value: &str) -> Option<SipAddress> {
    let v = value.trim();
    let uri = match (v.find('<'), v.rfind('>')) {
        (Some(a), Some(b)) if a < b => &v[a + 1..b],
        _ => v.split(';').next().unwrap_or(v),
    };
    let (scheme, rest) = uri.trim().split_once(':')?;
    match scheme.to_ascii_lowercase().as_str() {
        "sip" | "sips" | "im" | "pres" => {
            // user@host[:port][;params][?headers]; the user part ends at '@'.
            let rest = rest.split(['?']).next().unwrap_or(rest);
            let (user, host) = rest.rsplit_once('@')?;
            let user = user.split(';').next().unwrap_or(user);
            let host = host.split(';').next().unwrap_or(host);
            let host = strip_port(host).to_ascii_lowercase();
            if user.is_empty() || host.is_empty() || user.contains(['<', '>', '"', ' ']) {
                return None;
            }
            Some(SipAddress {
                user: user.to_owned(),
                host,
            })
        }
        "tel" => {
            let number = rest.split(';').next().unwrap_or(rest);
            let a = SipAddress {
                user: number.to_owned(),
                host: String::new(),
            };
            a.number().map(|_| a)
        }
        _ => None,
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(v6) = host.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    host.split(':').next().unwrap_or(host)
}

/// Our user, by number, as SIP names them: `sip:+MSISDN@<public domain>;user=phone`.
pub(crate) fn our_user(n: E164, public_domain: &str) -> String {
    format!("sip:+{}@{public_domain};user=phone", n.digits())
}

/// Our user's public ID (`wv:+MSISDN`) as a SIP URI at our domain (a name, when the ID is
/// not a number: `sip:user@domain`).
pub(crate) fn our_number_uri(public: &str, public_domain: &str) -> String {
    match crate::ssp::WvId::parse(public)
        .ok()
        .and_then(|id| id.e164())
    {
        Some(n) => our_user(n, public_domain),
        None => {
            let user = public.strip_prefix("wv:").unwrap_or(public);
            let user = user.split('@').next().unwrap_or(user);
            format!("sip:{user}@{public_domain}")
        }
    }
}

/// The Request-URI for a destination: the SIP URI DNS gave (ENUM `sip:`), the user at the
/// domain an `im:`/`pres:` URI names, the number at the domain, or the `wv:` user there.
pub(crate) fn request_uri(enum_uri: Option<&str>, target: &str, domain: &str) -> String {
    if let Some(u) = enum_uri {
        let lower = u.to_ascii_lowercase();
        if lower.starts_with("sip:") || lower.starts_with("sips:") {
            return u.to_owned();
        }
        if let Some(a) = address(u) {
            return format!("sip:{}@{}", a.user, a.host);
        }
    }
    let user = target.strip_prefix("wv:").unwrap_or(target);
    let user = user.split('@').next().unwrap_or(user);
    if user.starts_with('+') {
        format!("sip:{user}@{domain};user=phone")
    } else {
        format!("sip:{user}@{domain}")
    }
}

/// The SSP failure a SIP final answer means (`None` for 2xx: delivered, or accepted for
/// later delivery with 202). A transaction timeout is a local 408.
pub(crate) fn failure(code: u16, reason: &str) -> Option<Failure> {
    let kind = match code {
        200..=299 => return None,
        404 | 410 | 484 | 604 => Kind::UnknownUser,
        403 | 603 => Kind::Declined,
        408 => Kind::Timeout,
        // Busy, not there now, overloaded, the far side's own failures: try again later
        // (what may wait is kept and retried).
        480 | 486 | 500..=599 | 600 => Kind::Unreachable,
        // What the far side cannot take: method, media, size, and the rest.
        _ => Kind::NotSupported,
    };
    Some(Failure::new(
        kind,
        Side::Peer,
        format!("SIP {code} {}", reason.chars().take(80).collect::<String>()),
    ))
}

/// The SIP final answer for an SSP answer to a request that came over SIP.
pub(crate) fn sip_code(ssp: u16) -> u16 {
    use crate::ssp::status as c;
    match ssp {
        200..=299 => 200,
        c::UNKNOWN_USER | c::INVALID_USER_ID | c::DOMAIN_NOT_SUPPORTED => 404,
        c::BLOCKED | c::ADDRESS_ERROR => 403,
        c::TIMEOUT => 504,
        c::UNAVAILABLE => 503,
        c::BAD_REQUEST => 400,
        c::NOT_SUPPORTED => 488,
        _ => 500,
    }
}

/// Whether a `Content-Type` is one the gateway carries into SSP: plain text (any charset
/// parameter; UTF-8 is checked on the body).
pub(crate) fn is_text(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/plain"))
}

/// The `tag` parameter of a From or To header value (after the URI's closing `>`, or after
/// a bare URI's parameters).
pub(crate) fn tag(value: &str) -> Option<&str> {
    let params = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value,
    };
    params.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("tag")
            .then_some(v.trim())
            .filter(|v| !v.is_empty())
    })
}

/// The URI of a Contact header value (`<sip:x@h:p;transport=udp>;expires=60`, or bare).
pub(crate) fn contact_uri(value: &str) -> Option<String> {
    let v = value.split(',').next()?.trim();
    let uri = match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if a < b => &v[a + 1..b],
        _ => v.split(';').next()?,
    };
    let uri = uri.trim();
    let lower = uri.to_ascii_lowercase();
    (lower.starts_with("sip:") || lower.starts_with("sips:")).then(|| uri.to_owned())
}

/// The comma-separated values of a header that lists them (Route, Record-Route), commas
/// inside `<…>` or quotes kept.
pub(crate) fn split_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0usize);
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth -= 1,
            ',' if !quoted && depth <= 0 => {
                out.push(value[start..i].trim().to_owned());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim().to_owned());
    out.retain(|v| !v.is_empty());
    out
}

/// A `Subscription-State` header (RFC 6665 §8.2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubState {
    /// `active`, `pending` or `terminated` (lower case; others as written).
    pub(crate) state: String,
    /// The `reason` parameter.
    pub(crate) reason: Option<String>,
    /// The `expires` parameter.
    pub(crate) expires: Option<u32>,
}

impl SubState {
    /// Whether the subscription has ended.
    pub(crate) fn terminated(&self) -> bool {
        self.state == "terminated"
    }
}

/// Read a `Subscription-State` value.
pub(crate) fn sub_state(value: &str) -> SubState {
    let mut parts = value.split(';');
    let state = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let (mut reason, mut expires) = (None, None);
    for p in parts {
        if let Some((k, v)) = p.split_once('=') {
            match k.trim().to_ascii_lowercase().as_str() {
                "reason" => reason = Some(v.trim().to_ascii_lowercase()),
                "expires" => expires = v.trim().parse().ok(),
                _ => {}
            }
        }
    }
    SubState {
        state,
        reason,
        expires,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_contacts_and_subscription_states() {
        assert_eq!(tag("<sip:a@b>;tag=abc;x=1"), Some("abc"));
        assert_eq!(tag("sip:a@b;user=phone;tag=9"), Some("9"));
        assert_eq!(tag("<sip:a@b;tag=inside>"), None);
        assert_eq!(tag("<sip:a@b>;tag="), None);
        assert_eq!(
            contact_uri("<sip:pres@127.0.0.1:15070;transport=udp>;expires=60").as_deref(),
            Some("sip:pres@127.0.0.1:15070;transport=udp")
        );
        assert_eq!(
            contact_uri("sip:pres@127.0.0.1").as_deref(),
            Some("sip:pres@127.0.0.1")
        );
        assert_eq!(contact_uri("<mailto:x@y>"), None);
        let s = sub_state("terminated;reason=timeout");
        assert!(s.terminated());
        assert_eq!(s.reason.as_deref(), Some("timeout"));
        assert_eq!(
            split_list("<sip:p1;lr>, <sip:p2;lr;x=\"a,b\">,\"n, m\" <sip:p3>"),
            ["<sip:p1;lr>", "<sip:p2;lr;x=\"a,b\">", "\"n, m\" <sip:p3>"]
        );
        let s = sub_state("Active ; expires=600");
        assert_eq!((s.state.as_str(), s.expires), ("active", Some(600)));
    }

    #[test]
    fn addresses_in_header_values_and_uris() {
        let a = address("\"Bob\" <sip:+49-151-12345678@B.Test:5070;user=phone>;tag=x").unwrap();
        assert_eq!(a.host, "b.test");
        assert_eq!(
            a.number().map(|n| n.digits()).as_deref(),
            Some("4915112345678")
        );
        let b = address("sip:bob@b.test;transport=tcp").unwrap();
        assert_eq!((b.user.as_str(), b.host.as_str()), ("bob", "b.test"));
        assert_eq!(b.number(), None);
        let t = address("<tel:+4915112345678>;tag=1").unwrap();
        assert_eq!(
            t.number().map(|n| n.digits()).as_deref(),
            Some("4915112345678")
        );
        assert!(address("mailto:bob@b.test").is_none());
        assert!(address("sip:b.test").is_none());
        assert!(address("tel:12ab").is_none());
        assert!(address("").is_none());
    }

    #[test]
    fn request_uris() {
        assert_eq!(
            request_uri(
                Some("sip:+4915112345678@b.test"),
                "+4915112345678",
                "b.test"
            ),
            "sip:+4915112345678@b.test"
        );
        assert_eq!(
            request_uri(Some("im:bob@b.test"), "+4915112345678", "b.test"),
            "sip:bob@b.test"
        );
        assert_eq!(
            request_uri(None, "wv:+4915112345678", "b.test"),
            "sip:+4915112345678@b.test;user=phone"
        );
        assert_eq!(
            request_uri(None, "wv:bob@b.test", "b.test"),
            "sip:bob@b.test"
        );
    }

    #[test]
    fn sip_answers_to_ssp() {
        assert!(failure(200, "OK").is_none());
        assert!(failure(202, "Accepted").is_none());
        assert_eq!(failure(404, "Not Found").map(|f| f.code()), Some(531));
        assert_eq!(failure(603, "Decline").map(|f| f.code()), Some(532));
        assert_eq!(failure(408, "Request Timeout").map(|f| f.code()), Some(504));
        assert_eq!(
            failure(480, "Temporarily Unavailable").map(|f| f.code()),
            Some(503)
        );
        assert_eq!(
            failure(415, "Unsupported Media Type").map(|f| f.code()),
            Some(405)
        );
        assert_eq!(sip_code(200), 200);
        assert_eq!(sip_code(531), 404);
        assert_eq!(sip_code(901), 403);
        assert_eq!(sip_code(504), 504);
    }
}
