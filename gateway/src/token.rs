//! Transaction-ID tokens: the IDs the gateway puts on the requests it sends.
//!
//! A token carries what is needed to route the answer back (which leg, the originator's own
//! transaction ID, the peer domain, the part of a split request), encrypted and authenticated
//! (AES-256-GCM) under a configured key: a peer sees an opaque string, and none of our
//! internal IDs (`PROTOCOL.md` §6, topology hiding). So an answer can be routed by *any*
//! replica holding the key, and after a restart; a forged, altered or expired ID is refused
//! (SSP 420) instead of being trusted or crashing anything. Key rotation: the first key
//! seals, all keys open.
//!
//! Layout: `g2.` + base64url(nonce ‖ ciphertext ‖ tag). The plaintext is `leg u8 | parts u8 |
//! part u8 | issued u32 | instance u32 | request_id u64 | len u8 | origin_tid | len u8 |
//! peer`. `instance` identifies the issuing process, so a process can tell its own late
//! answers (already answered with 504) from answers to requests a predecessor sent; its top
//! byte is the process's `[cluster] replica` index, so a replica can hand an answer to the one
//! that is waiting for it.
//!
//! The nonce is 12 random bytes, drawn for each token from the thread's CSPRNG (`rand`'s
//! ChaCha generator, seeded and reseeded from the operating system): it tells nothing of the
//! plaintext, nor how many tokens came before it (a counter would tell a peer our traffic).
//! Two tokens under one key share a nonce with probability about n²/2⁹⁷ for n tokens: for
//! 2³² tokens, the limit NIST SP 800-38D sets for random nonces, 2⁻³³. That budget is per
//! key and counts every token sealed under it by every replica sharing it: the README
//! (Operations, "Service", on token keys) says when to rotate; the key the store keeps when
//! there is no key file is never rotated. Releases before this one derived the nonce from an
//! HMAC of the plaintext, which has the same bound and costs two SHA-256 blocks per request;
//! opening never looked at how a nonce was made, so tokens of either kind open in both. The AEAD key is derived from the configured secret with HKDF-SHA256. Tokens of
//! the earlier `g1.` form (HMAC only) are still opened, so that answers to requests sent
//! before an upgrade arrive.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::{aead, hkdf, hmac};

/// The plaintext's fixed part: leg, parts, part, issued, instance, request_id, and the two
/// length bytes.
const FIXED: usize = 3 + 4 + 4 + 8 + 2;
/// The longest sealed token, before base64: nonce, plaintext (two strings of at most 255
/// bytes), tag.
const SEALED_MAX: usize = 12 + FIXED + 2 * 255 + aead::MAX_TAG_LEN;

/// Which way the tokened request went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// Gateway -> peer, on behalf of the core; the answer goes back to the core.
    ToPeer,
    /// Gateway -> core, on behalf of a peer; the answer goes back to that peer.
    ToCore,
}

/// The decoded content of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Direction of the request.
    pub leg: Leg,
    /// Key of the in-process pending entry, when this replica still has it.
    pub request_id: u64,
    /// Index of this part of a split request.
    pub part: u8,
    /// Number of parts.
    pub parts: u8,
    /// Issue time, Unix seconds.
    pub issued: u32,
    /// Random ID of the issuing process.
    pub instance: u32,
    /// The originator's transaction ID (the core's, or the peer's).
    pub origin_tid: String,
    /// The peer domain involved (the originating peer for [`Leg::ToCore`], the destination for
    /// [`Leg::ToPeer`]).
    pub peer: String,
}

impl Token {
    /// The cluster replica that issued it (see [`TokenKeys::with_replica`]).
    pub fn replica(&self) -> u8 {
        (self.instance >> 24) as u8
    }
}

/// Why a transaction ID is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not in our format at all.
    #[error("transaction ID is not one this gateway issued")]
    Foreign,
    /// Format right, MAC wrong (forged or altered, or signed with an unknown key).
    #[error("transaction ID failed authentication")]
    BadMac,
    /// Authentic but too old.
    #[error("transaction ID expired")]
    Expired,
}

/// Signing and verification keys.
#[derive(Clone)]
pub struct TokenKeys {
    keys: Vec<Keys>,
    max_age_secs: u32,
    instance: u32,
}

/// The keys derived from one secret.
#[derive(Clone)]
struct Keys {
    /// Which secret (its SHA-256), to tell a key kept across a rotation from a new one.
    id: [u8; 32],
    /// Retired by a rotation: still opens answers until then (seconds since the epoch);
    /// `None` for a key of the file in use.
    until: Option<u32>,
    /// The secret itself, as an HMAC key: MACs between replicas and `g1.` tokens.
    mac: hmac::Key,
    /// Seals tokens.
    seal: std::sync::Arc<aead::LessSafeKey>,
}

/// The length of the HKDF output the AEAD key is made from.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl Keys {
    fn derive(secret: &[u8]) -> Keys {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"ssp-gateway token v2").extract(secret);
        let mut seal = [0u8; 32];
        // Expanding 32 bytes from HKDF-SHA256 cannot fail (the limit is 255 blocks).
        if prk
            .expand(&[b"seal"], Len(32))
            .and_then(|okm| okm.fill(&mut seal))
            .is_err()
        {
            unreachable_key();
        }
        let seal = aead::UnboundKey::new(&aead::AES_256_GCM, &seal)
            .map(aead::LessSafeKey::new)
            .unwrap_or_else(|_| unreachable_key());
        let mut id = [0u8; 32];
        id.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, secret).as_ref());
        Keys {
            id,
            until: None,
            mac: hmac::Key::new(hmac::HMAC_SHA256, secret),
            seal: std::sync::Arc::new(seal),
        }
    }
}

#[cold]
fn unreachable_key() -> ! {
    // HKDF-SHA256 gives 32 bytes, and AES-256-GCM takes a 32-byte key, always: a programming
    // error, not an input one.
    panic!("deriving a 32-byte AES-256-GCM key failed")
}

/// Associated data: binds the ciphertext to the token version.
const AAD: &[u8] = b"g2";

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("keys", &self.keys.len())
            .field("max_age_secs", &self.max_age_secs)
            .finish()
    }
}

/// A token's nonce: random (see the module's notes on why, and on the bound).
fn fresh_nonce() -> [u8; 12] {
    let mut n = [0u8; 12];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut n);
    n
}

fn now_secs() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

impl TokenKeys {
    /// Keys from raw secrets (first signs). `max_age_secs` bounds how long answers are accepted.
    pub fn new(secrets: &[Vec<u8>], max_age_secs: u32) -> TokenKeys {
        TokenKeys {
            keys: secrets.iter().map(|s| Keys::derive(s)).collect(),
            max_age_secs,
            instance: rand::random(),
        }
    }

    /// A random key (correlation then does not survive a restart; the gateway warns).
    pub fn random(max_age_secs: u32) -> TokenKeys {
        let mut secret = [0u8; 32];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret);
        TokenKeys::new(&[secret.to_vec()], max_age_secs)
    }

    /// The same keys for replica `replica` of a cluster: the top byte of every instance ID
    /// it issues is the replica index, so any replica can tell whose request an answer is.
    pub fn with_replica(mut self, replica: u8) -> TokenKeys {
        self.instance = (u32::from(replica) << 24) | (self.instance & 0x00ff_ffff);
        self
    }

    /// These keys in place of `previous` (a reload): the same process instance, and every
    /// key of `previous` that is not among these retired, still opening answers (and
    /// verifying messages between replicas) for as long as an answer is accepted, so that
    /// answers to requests sent before the rotation still arrive. New tokens are sealed
    /// with the new first key at once.
    pub fn rotated_from(mut self, previous: &TokenKeys) -> TokenKeys {
        let now = now_secs();
        let until = now.saturating_add(self.max_age_secs);
        self.instance = previous.instance;
        for k in &previous.keys {
            if self.keys.iter().any(|n| n.id == k.id) || k.until.is_some_and(|u| u < now) {
                continue;
            }
            let mut old = k.clone();
            old.until = Some(old.until.map_or(until, |u| u.min(until)));
            self.keys.push(old);
        }
        self
    }

    /// The same keys, accepting answers for `secs` seconds (a reload that changed the
    /// request deadline).
    pub fn with_max_age(mut self, secs: u32) -> TokenKeys {
        self.max_age_secs = secs;
        self
    }

    /// Retired keys that still open answers.
    pub fn retired(&self) -> usize {
        let now = now_secs();
        self.keys
            .iter()
            .filter(|k| k.until.is_some_and(|u| u >= now))
            .count()
    }

    /// The keys that open tokens now: those in use, and retired ones within their grace.
    fn opening(&self) -> impl Iterator<Item = &Keys> {
        let now = now_secs();
        self.keys
            .iter()
            .filter(move |k| k.until.is_none_or(|u| u >= now))
    }

    /// HMAC of `data` under the signing key (base64url), for messages between replicas.
    pub fn sign(&self, data: &[u8]) -> String {
        match self.keys.first() {
            Some(k) => B64.encode(hmac::sign(&k.mac, data).as_ref()),
            None => String::new(),
        }
    }

    /// Whether `mac` is [`TokenKeys::sign`] of `data` under any of the keys.
    pub fn verify(&self, data: &[u8], mac: &str) -> bool {
        let Ok(tag) = B64.decode(mac) else {
            return false;
        };
        self.opening()
            .any(|k| hmac::verify(&k.mac, data, &tag).is_ok())
    }

    /// The ID of this process in the tokens it issues.
    pub fn instance(&self) -> u32 {
        self.instance
    }

    /// Encode, encrypt and authenticate.
    pub fn seal(&self, t: &Token) -> String {
        self.seal_fields(
            fresh_nonce(),
            t.leg,
            t.request_id,
            t.part,
            t.parts,
            t.issued,
            t.instance,
            &t.origin_tid,
            &t.peer,
        )
    }

    /// [`TokenKeys::seal`] from borrowed fields, under `nonce`: one buffer becomes the
    /// token, sealed in place (this runs for every request).
    #[allow(clippy::too_many_arguments)]
    fn seal_fields(
        &self,
        nonce: [u8; 12],
        leg: Leg,
        request_id: u64,
        part: u8,
        parts: u8,
        issued: u32,
        instance: u32,
        origin_tid: &str,
        peer: &str,
    ) -> String {
        let tid = truncate(origin_tid);
        let peer = truncate(peer);
        // On the stack (the fields are bounded: two strings of at most 255 bytes), so the
        // token costs one allocation, its text. Room for the nonce first, then the
        // plaintext, sealed in place, then the tag.
        let mut p = [0u8; SEALED_MAX];
        let mut n = 12;
        let mut put = |bytes: &[u8]| {
            p[n..n + bytes.len()].copy_from_slice(bytes);
            n += bytes.len();
        };
        put(&[
            match leg {
                Leg::ToPeer => 1,
                Leg::ToCore => 2,
            },
            parts,
            part,
        ]);
        put(&issued.to_be_bytes());
        put(&instance.to_be_bytes());
        put(&request_id.to_be_bytes());
        put(&[tid.len() as u8]);
        put(tid.as_bytes());
        put(&[peer.len() as u8]);
        put(peer.as_bytes());
        let Some(key) = self.keys.first() else {
            return String::new();
        };
        p[..12].copy_from_slice(&nonce);
        let Ok(tag) = key.seal.seal_in_place_separate_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(AAD),
            &mut p[12..n],
        ) else {
            return String::new();
        };
        let tag = tag.as_ref();
        p[n..n + tag.len()].copy_from_slice(tag);
        n += tag.len();
        // Encoded into the token's own buffer in one call (`encode_string` goes through a
        // chunked encoder and a sink: four times the instructions for a token).
        let mut out = vec![0u8; 3 + n.div_ceil(3) * 4];
        out[..3].copy_from_slice(b"g2.");
        let Ok(len) = B64.encode_slice(&p[..n], &mut out[3..]) else {
            return String::new();
        };
        out.truncate(3 + len);
        // Base64url is ASCII.
        String::from_utf8(out).unwrap_or_default()
    }

    /// A token for a new request, issued now by this process.
    pub fn issue(
        &self,
        leg: Leg,
        request_id: u64,
        part: u8,
        parts: u8,
        origin_tid: &str,
        peer: &str,
    ) -> String {
        self.seal_fields(
            fresh_nonce(),
            leg,
            request_id,
            part,
            parts,
            now_secs(),
            self.instance,
            origin_tid,
            peer,
        )
    }

    /// Authenticate, decrypt and decode.
    pub fn open(&self, s: &str) -> Result<Token, TokenError> {
        // Authentic once opened, so malformed content can only be our own bug; still no
        // panics.
        let t = match (s.strip_prefix("g2."), s.strip_prefix("g1.")) {
            (Some(rest), _) => self.open_sealed(rest)?,
            (None, Some(rest)) => decode(&self.open_signed(rest)?).ok_or(TokenError::Foreign)?,
            _ => return Err(TokenError::Foreign),
        };
        if now_secs().saturating_sub(t.issued) > self.max_age_secs {
            return Err(TokenError::Expired);
        }
        Ok(t)
    }

    /// The content of a `g2.` token, opened on the stack (this runs for every answer): a
    /// token longer than any we seal is not ours.
    fn open_sealed(&self, rest: &str) -> Result<Token, TokenError> {
        // Two bytes of slack, so that a decoder checking its room by an estimate never
        // turns away the longest token we seal; anything longer than that is not ours.
        let mut raw = [0u8; SEALED_MAX + 2];
        let len = B64
            .decode_slice(rest, &mut raw)
            .map_err(|_| TokenError::Foreign)?;
        if len > SEALED_MAX {
            return Err(TokenError::Foreign);
        }
        let (nonce, sealed) = raw[..len]
            .split_at_checked(12)
            .filter(|(_, sealed)| sealed.len() >= aead::MAX_TAG_LEN)
            .ok_or(TokenError::Foreign)?;
        let mut n = [0u8; 12];
        n.copy_from_slice(nonce);
        let mut buf = [0u8; SEALED_MAX];
        let buf = buf.get_mut(..sealed.len()).ok_or(TokenError::Foreign)?;
        for k in self.opening() {
            // A failed attempt leaves the buffer unspecified: each key opens a fresh copy.
            buf.copy_from_slice(sealed);
            if let Ok(plain) = k.seal.open_in_place(
                aead::Nonce::assume_unique_for_key(n),
                aead::Aad::from(AAD),
                buf,
            ) {
                return decode(plain).ok_or(TokenError::Foreign);
            }
        }
        Err(TokenError::BadMac)
    }

    /// The payload of a `g1.` token (issued before tokens were sealed).
    fn open_signed(&self, rest: &str) -> Result<Vec<u8>, TokenError> {
        let (p64, t64) = rest.split_once('.').ok_or(TokenError::Foreign)?;
        let p = B64.decode(p64).map_err(|_| TokenError::Foreign)?;
        let tag = B64.decode(t64).map_err(|_| TokenError::Foreign)?;
        if !self
            .opening()
            .any(|k| hmac::verify(&k.mac, &p, &tag).is_ok())
        {
            return Err(TokenError::BadMac);
        }
        Ok(p)
    }
}

/// Whether `a` and `b` are the same secret, in time that does not depend on where they
/// differ (both are hashed first, so not on their lengths either).
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let key = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new());
    match key {
        Ok(k) => hmac::verify(&k, a, hmac::sign(&k, b).as_ref()).is_ok(),
        Err(_) => false,
    }
}

/// A key file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

impl TokenKeys {
    /// The keys of `[gateway] hmac_key_file` (one hex key of at least 32 bytes per line, the
    /// first signs), for this replica. Without that file: `kept`, the key the state store
    /// keeps for this gateway (so answers to requests sent before a restart still open), else
    /// a random key (and the gateway warns). Answers are accepted for six request deadlines
    /// (at least a minute), and for as long as a kept message may be tried again (its token
    /// goes with every attempt); later ones are stale.
    pub fn load(cfg: &crate::config::Config, kept: Option<Vec<u8>>) -> Result<TokenKeys, KeyError> {
        let max_age = max_age(cfg);
        let Some(path) = &cfg.operator.hmac_key_file else {
            if !cfg.cluster.siblings.is_empty() {
                return Err(KeyError(format!(
                    "{}: [cluster] siblings need [gateway] hmac_key_file, the same key on every replica",
                    cfg.path.display()
                )));
            }
            if let Some(k) = kept {
                return Ok(TokenKeys::new(&[k], max_age).with_replica(cfg.cluster.replica));
            }
            // Only `check` gets here: a running gateway always has the kept key.
            return Ok(TokenKeys::random(max_age));
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| KeyError(format!("{}: {e}", path.display())))?;
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let bytes = (0..l.len())
                .step_by(2)
                .map(|j| l.get(j..j + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
                .collect::<Option<Vec<u8>>>()
                .filter(|b| b.len() >= 32)
                .ok_or_else(|| {
                    KeyError(format!(
                        "{}:{}: a key is at least 64 hex digits (32 bytes)",
                        path.display(),
                        i + 1
                    ))
                })?;
            keys.push(bytes);
        }
        if keys.is_empty() {
            return Err(KeyError(format!("{}: no key", path.display())));
        }
        Ok(TokenKeys::new(&keys, max_age).with_replica(cfg.cluster.replica))
    }
}

/// How long answers are accepted under `cfg`, in seconds: six request deadlines (at least a
/// minute), and as long as a kept message may be tried again (its token goes with every
/// attempt).
pub fn max_age(cfg: &crate::config::Config) -> u32 {
    let request = cfg.timeouts.request.as_secs();
    let max_age = request
        .saturating_mul(6)
        .max(60)
        .max(cfg.store.max_validity.as_secs().saturating_add(request));
    u32::try_from(max_age).unwrap_or(u32::MAX)
}

/// Strings are length-prefixed with one byte; cut at a char boundary under 256 bytes.
fn truncate(s: &str) -> &str {
    if s.len() < 256 {
        return s;
    }
    let mut end = 255;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn decode(p: &[u8]) -> Option<Token> {
    let leg = match *p.first()? {
        1 => Leg::ToPeer,
        2 => Leg::ToCore,
        _ => return None,
    };
    let parts = *p.get(1)?;
    let part = *p.get(2)?;
    let issued = u32::from_be_bytes(p.get(3..7)?.try_into().ok()?);
    let instance = u32::from_be_bytes(p.get(7..11)?.try_into().ok()?);
    let request_id = u64::from_be_bytes(p.get(11..19)?.try_into().ok()?);
    let mut at = 19;
    let mut take = || -> Option<String> {
        let len = *p.get(at)? as usize;
        let s = std::str::from_utf8(p.get(at + 1..at + 1 + len)?)
            .ok()?
            .to_owned();
        at += 1 + len;
        Some(s)
    };
    let origin_tid = take()?;
    let peer = take()?;
    Some(Token {
        leg,
        request_id,
        part,
        parts,
        issued,
        instance,
        origin_tid,
        peer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Sealed by 8cb6378, before the stack buffer (see the test that uses it).
    const KAT_SHORT: &str =
        "g2.4tX1xvzDbV45RSGZIaXwenzLjBo178oN97ehGlANjd9CDHnavbfCpmJ-Cekb6snRhytVhbk69MfIOre4FFxS";
    /// The same, with both strings at their 255-byte limit (300 given, truncated).
    const KAT_LONG: &str = concat!(
        "g2.7lUCvcLlOIfuAmVVhSVZm7CHmWOq3x3cqkDx_-9kZD63KoDkXpZTI1IbFK_vRlS07q-KohFraxENO",
        "dkq1kw0jbd05IUG_C8wNLqaxJhBKCuD3jeFb2xjwdmlQAH7LDRWwodFuwUgsMnq2uP24FbN799b1CdMQ",
        "IRU3uPUIy_H01Lgd45n6O-1RD-WAwDTSAbHE4hykqgGz9nmdGEYPk3VxjYajV1bT-0G14fe42OFi3gsd",
        "22f2IDELeLoVCopzTIovlb527kU_wFVmJ6oXP8ac_nKtAUjq2eX9isD5BpN0X_wPvjBeAoVBTnAFZEOC",
        "VD71ADab3j1CWOqz72oGlN_bXq9Hi5gLVKV3ei7A-CQ_f078hL4yVTSiADEh8Nbf0Y9e6yuAUNOaLpGy",
        "k_A4E5gW43WaTQtKnB8BHdOUA3xB92lugOhj8C2E87B7W--K4k6HJmfU-A98fBXZrlNp9t82HaH72KHS",
        "Di4ovR6gZjlZTRvQ3XVhDpeIGo62obK8Zy_y0M07xZTbbRoAhLAyKq72QiX5FcxLCtkAl1LiZAludcJb",
        "q3zUFFQl1scU_s6vNI2ugEEy6kmSnv4CLjIVX7xyfVGLIMTY4SJa7b3wz800leJD6zyB5-1llNVI1J-M",
        "GMa_0WSQlwWV91frQeHFQrhood1HFDryAw6TV9LxFbgpHPEE4fc-NJvplVzbT6AAe0iwR7SbfyhmHRRJ",
        "jObAw7q4Mf0OYFE2aASxJ-_4u7gXA",
    );

    fn keys() -> TokenKeys {
        TokenKeys::new(&[b"0123456789abcdef0123456789abcdef".to_vec()], 3600)
    }

    /// Fixed tokens, as earlier releases sealed them (known answers): they open to their
    /// fields, and sealing those fields under the same nonce gives the same text. A change
    /// to the layout or the sealing would strand the answers to requests in flight across an
    /// upgrade. (Those releases derived the nonce from the plaintext; it is random now, and
    /// opening never depended on how it was made.)
    #[test]
    fn fixed_tokens_open_and_seal_as_they_always_did() {
        let long = "x".repeat(300);
        let cases = [
            ("bt-msg-1", "b.test", KAT_SHORT),
            (long.as_str(), long.as_str(), KAT_LONG),
        ];
        let k = keys();
        for (tid, peer, want) in cases {
            let rest = want.strip_prefix("g2.").unwrap();
            let t = k.open_sealed(rest).unwrap();
            let (tid, peer) = (&tid[..tid.len().min(255)], &peer[..peer.len().min(255)]);
            assert_eq!(
                (t.leg, t.request_id, t.part, t.parts, t.issued, t.instance),
                (Leg::ToCore, 42, 1, 3, 1_800_000_000, 0x0102_0304)
            );
            assert_eq!((t.origin_tid.as_str(), t.peer.as_str()), (tid, peer));
            let mut nonce = [0u8; 12];
            nonce.copy_from_slice(&B64.decode(rest).unwrap()[..12]);
            let got = k.seal_fields(
                nonce,
                Leg::ToCore,
                42,
                1,
                3,
                1_800_000_000,
                0x0102_0304,
                tid,
                peer,
            );
            assert_eq!(got, want, "sealed {tid:?} / {peer:?}");
        }
    }

    /// Each token has a nonce of its own, even for the same fields issued at once.
    #[test]
    fn the_same_fields_seal_under_fresh_nonces() {
        let k = keys();
        let a = k.issue(Leg::ToCore, 7, 0, 1, "t", "p");
        let b = k.issue(Leg::ToCore, 7, 0, 1, "t", "p");
        let nonce = |s: &str| B64.decode(&s[3..]).unwrap()[..12].to_vec();
        assert_ne!(nonce(&a), nonce(&b));
        assert_eq!(k.open(&a).unwrap(), k.open(&b).unwrap());
    }

    #[test]
    fn round_trip_and_rotation() {
        let k = keys();
        let s = k.issue(Leg::ToCore, 42, 1, 3, "bt-msg-1", "b.test");
        let t = k.open(&s).unwrap();
        assert_eq!(
            (t.leg, t.request_id, t.part, t.parts),
            (Leg::ToCore, 42, 1, 3)
        );
        assert_eq!(
            (t.origin_tid.as_str(), t.peer.as_str()),
            ("bt-msg-1", "b.test")
        );
        // A replica with the new key first and the old one second still accepts it.
        let rotated = TokenKeys::new(
            &[
                b"new-key-new-key-new-key-new-key!".to_vec(),
                b"0123456789abcdef0123456789abcdef".to_vec(),
            ],
            3600,
        );
        assert_eq!(rotated.open(&s).unwrap(), t);
        // A replica without the old key does not.
        let other = TokenKeys::new(&[b"new-key-new-key-new-key-new-key!".to_vec()], 3600);
        assert_eq!(other.open(&s), Err(TokenError::BadMac));
    }

    #[test]
    fn a_reload_rotates_the_signing_key_and_retires_the_old_one_for_a_grace_period() {
        let old = keys().with_replica(3);
        let before = old.issue(Leg::ToPeer, 1, 0, 1, "t-1", "opy.example");
        let new = TokenKeys::new(&[b"new-key-new-key-new-key-new-key!".to_vec()], 3600)
            .rotated_from(&old);
        assert_eq!(new.instance(), old.instance(), "the same process");
        assert_eq!(new.retired(), 1);
        // Answers to requests sent before the rotation still open.
        assert_eq!(new.open(&before).unwrap().request_id, 1);
        assert!(new.verify(b"x", &old.sign(b"x")));
        // New tokens are sealed with the new key: the old keys alone do not open them.
        let after = new.issue(Leg::ToPeer, 2, 0, 1, "t-2", "opy.example");
        assert_eq!(old.open(&after), Err(TokenError::BadMac));
        // The same file again retires nothing; a second rotation keeps the first one's
        // retired key until its own end, and does not retire a key back in use.
        let again = TokenKeys::new(&[b"new-key-new-key-new-key-new-key!".to_vec()], 3600)
            .rotated_from(&new);
        assert_eq!(again.retired(), 1);
        let back = keys().rotated_from(&new);
        assert_eq!(
            back.retired(),
            1,
            "the new key retired, the old one in use again"
        );
        // Past its grace a retired key opens nothing.
        let mut expired = new.clone();
        for k in &mut expired.keys {
            if k.until.is_some() {
                k.until = Some(now_secs() - 1);
            }
        }
        assert_eq!(expired.retired(), 0);
        assert_eq!(expired.open(&before), Err(TokenError::BadMac));
        let third = TokenKeys::new(&[b"third-key-third-key-third-key-3!".to_vec()], 3600)
            .rotated_from(&expired);
        assert_eq!(
            (third.keys.len(), third.retired()),
            (2, 1),
            "the key in use is retired, the expired one is not carried on"
        );
    }

    #[test]
    fn forged_altered_foreign_expired() {
        let k = keys();
        let s = k.issue(Leg::ToPeer, 7, 0, 1, "core-1", "opy.example");
        let mut chars: Vec<char> = s.chars().collect();
        let i = 6;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let altered: String = chars.into_iter().collect();
        assert!(matches!(
            k.open(&altered),
            Err(TokenError::BadMac | TokenError::Foreign)
        ));
        assert_eq!(k.open("0000000002-0"), Err(TokenError::Foreign));
        assert_eq!(k.open("g1.!!!.???"), Err(TokenError::Foreign));
        assert_eq!(k.open("g2.!!!"), Err(TokenError::Foreign));
        assert_eq!(k.open("g2.AAAA"), Err(TokenError::Foreign));
        // Longer than any token we seal (opened on the stack): not ours, whatever it holds.
        for over in [1, 2, 3, 600] {
            let long = format!("g2.{}", B64.encode(vec![7u8; SEALED_MAX + over]));
            assert_eq!(k.open(&long), Err(TokenError::Foreign), "{over}");
        }
        // The longest we seal still opens.
        let (tid, peer) = ("t".repeat(255), "p".repeat(255));
        let longest = k.issue(Leg::ToCore, 3, 0, 1, &tid, &peer);
        let t = k.open(&longest).unwrap();
        assert_eq!((t.origin_tid, t.peer), (tid, peer));
        let old = k.seal(&Token {
            leg: Leg::ToPeer,
            request_id: 1,
            part: 0,
            parts: 1,
            issued: now_secs() - 7200,
            instance: 1,
            origin_tid: "x".into(),
            peer: "p".into(),
        });
        assert_eq!(k.open(&old), Err(TokenError::Expired));
    }

    /// Nothing of what a token carries can be read from it: not the originator's transaction
    /// ID, not the peer's domain, not the request ID.
    #[test]
    fn tokens_are_opaque() {
        let k = keys();
        let s = k.issue(
            Leg::ToPeer,
            0x1122_3344_5566_7788,
            0,
            1,
            "core-tid-4711",
            "opy.example",
        );
        let raw = B64.decode(s.trim_start_matches("g2.")).unwrap();
        let hay = String::from_utf8_lossy(&raw);
        assert!(
            !hay.contains("core-tid-4711") && !hay.contains("opy.example"),
            "{s}"
        );
        assert!(
            !raw.windows(8)
                .any(|w| w == 0x1122_3344_5566_7788u64.to_be_bytes())
        );
        // Two tokens of the same fields but another request differ everywhere that counts.
        let s2 = k.issue(
            Leg::ToPeer,
            0x1122_3344_5566_7789,
            0,
            1,
            "core-tid-4711",
            "opy.example",
        );
        assert_ne!(s[3..19], s2[3..19], "another nonce");
    }

    /// A token of the earlier, signed-only form still opens (answers across an upgrade).
    #[test]
    fn signed_tokens_of_the_earlier_form_still_open() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let k = keys();
        let t = k.open(&k.issue(Leg::ToCore, 9, 0, 1, "t", "p")).unwrap();
        let mut p = Vec::new();
        p.extend_from_slice(&[2, 1, 0]);
        p.extend_from_slice(&t.issued.to_be_bytes());
        p.extend_from_slice(&t.instance.to_be_bytes());
        p.extend_from_slice(&9u64.to_be_bytes());
        p.extend_from_slice(&[1, b't', 1, b'p']);
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), &p);
        let g1 = format!("g1.{}.{}", B64.encode(&p), B64.encode(tag.as_ref()));
        assert_eq!(k.open(&g1).unwrap(), t);
    }

    proptest! {
        #[test]
        fn any_fields_round_trip(tid in ".{0,300}", peer in ".{0,300}", id: u64, part: u8, parts: u8) {
            let k = keys();
            let s = k.issue(Leg::ToPeer, id, part, parts, &tid, &peer);
            let t = k.open(&s).unwrap();
            prop_assert_eq!(t.request_id, id);
            prop_assert_eq!(t.origin_tid, truncate(&tid).to_owned());
            prop_assert_eq!(t.peer, truncate(&peer).to_owned());
        }

        #[test]
        fn garbage_never_panics(s in ".{0,200}") {
            let _ = keys().open(&s);
        }
    }
}
