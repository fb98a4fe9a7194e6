//! IDs, tokens, digests and dates as Baraza writes them.

use super::*;

/// `id` without a leading `wv:` (any case).
pub(super) fn strip_wv(id: &str) -> &str {
    let id = id.trim();
    match id.get(..3) {
        Some(p) if p.eq_ignore_ascii_case("wv:") => &id[3..],
        _ => id,
    }
}

/// Baraza splits every ID at `@`: (local part, domain).
pub(super) fn split_id(id: &str) -> (&str, &str) {
    strip_wv(id).split_once('@').unwrap_or((strip_wv(id), ""))
}

pub(super) fn id_domain(id: &str) -> &str {
    split_id(id).1
}

/// The domain of a `serviceID` like `wv:@b.test`.
pub(super) fn service_domain(service_id: &str) -> Option<String> {
    let d = id_domain(service_id).trim();
    (!d.is_empty()).then(|| d.to_ascii_lowercase())
}

/// A received SecretToken: plain text (trimmed), base64-decoded when it had `encoding`.
pub(super) fn decode_token(token: &str, encoded: bool) -> Option<Vec<u8>> {
    let t = token.trim();
    if encoded {
        let compact: String = t.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        B64.decode(compact).ok()
    } else {
        Some(t.as_bytes().to_vec())
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 hex characters, the MD5 of random data (004).
pub(super) fn new_token() -> String {
    hex(&Md5::digest(rand::random::<[u8; 32]>()))
}

/// `base64(MD5(token))`, compact.
pub(super) fn digest_b64(token: &[u8]) -> String {
    B64.encode(Md5::digest(token))
}

/// Kannel's `octstr_binary_to_base64`: lines of 76 characters, each ended by `\r\n`.
pub(super) fn kannel_b64(data: &[u8]) -> String {
    let plain = B64.encode(data);
    let mut out = String::with_capacity(plain.len() + plain.len() / 38 + 2);
    let bytes = plain.as_bytes();
    for chunk in bytes.chunks(76) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push_str("\r\n");
    }
    if bytes.is_empty() {
        out.push_str("\r\n");
    }
    out
}

/// The text of a ContentData.
pub(super) fn content_text(c: &ssp_gateway::ssp::ContentData) -> String {
    if c.encoding
        .as_deref()
        .is_some_and(|e| e.eq_ignore_ascii_case("base64"))
    {
        match B64.decode(c.data.as_bytes()) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(_) => c.data.clone(),
        }
    } else {
        c.data.clone()
    }
}
