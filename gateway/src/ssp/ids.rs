//! Wireless Village user IDs (`wv:` URIs) and E.164 numbers.
//!
//! Input is liberal (`PROTOCOL.md` §6): the `wv:` scheme is optional and case-insensitive,
//! `%XX` escapes are decoded, user, resource and domain compare case-insensitively, and a
//! `+` is allowed only as the first user character followed by digits only (the rule shared
//! by AOSP's `ImpsAddress` and the MTK client). Output is canonical: `wv:` prefix, lowercase,
//! and `%XX` escapes for the characters that would change the ID's structure.

use std::borrow::Cow;
use std::fmt;

/// A parsed and normalised `wv:` ID.
///
/// Shapes: user `wv:alice@d`, resource `wv:alice/list@d`, group `wv:/room@d`,
/// service `wv:@d`, MSISDN `wv:+4670...` (with or without `@d`), and domain-less `wv:alice`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WvId {
    /// User part, lowercase; empty for groups and service IDs. `+digits` for MSISDN IDs.
    pub user: String,
    /// Resource after `/` (contact list or group name), lowercase.
    pub resource: Option<String>,
    /// Domain after `@`, lowercase.
    pub domain: Option<String>,
}

/// Why a string is not a usable user ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty after removing the scheme.
    #[error("empty user ID")]
    Empty,
    /// More than one `@`.
    #[error("user ID {0:?} has more than one '@'")]
    TwoAts(String),
    /// Bad `%XX` escape or escapes that decode to invalid UTF-8.
    #[error("user ID {0:?} has an invalid %-escape")]
    Escape(String),
    /// `+` followed by something other than 1-15 digits, or `+` not first.
    #[error("user ID {0:?}: '+' must start the user part and be followed by 1 to 15 digits")]
    Plus(String),
    /// Control characters or spaces.
    #[error("user ID {0:?} contains a space or control character")]
    BadChar(String),
    /// Empty domain after `@`.
    #[error("user ID {0:?} has an empty domain")]
    EmptyDomain(String),
}

impl WvId {
    /// Parse and normalise.
    pub fn parse(input: &str) -> Result<WvId, IdError> {
        WvIdRef::parse(input).map(WvIdRef::into_owned)
    }

    /// A service ID `wv:@domain`.
    pub fn service(domain: &str) -> WvId {
        WvId {
            user: String::new(),
            resource: None,
            domain: Some(domain.to_ascii_lowercase()),
        }
    }

    /// An MSISDN ID `wv:+digits`, optionally with a domain.
    pub fn msisdn(n: E164, domain: Option<&str>) -> WvId {
        WvId {
            user: n.plus(),
            resource: None,
            domain: domain.map(str::to_ascii_lowercase),
        }
    }

    /// `wv:@domain`.
    pub fn is_service(&self) -> bool {
        self.user.is_empty() && self.resource.is_none() && self.domain.is_some()
    }

    /// `wv:/room@domain`.
    pub fn is_group(&self) -> bool {
        self.user.is_empty() && self.resource.is_some()
    }

    /// A plain user (no resource), MSISDN users included.
    pub fn is_user(&self) -> bool {
        !self.user.is_empty() && self.resource.is_none()
    }

    /// The E.164 number if the user part is `+digits`.
    pub fn e164(&self) -> Option<E164> {
        self.user
            .strip_prefix('+')
            .and_then(|d| E164::from_digits(d).ok())
    }
}

impl fmt::Display for WvId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_id(
            f,
            &self.user,
            self.resource.as_deref(),
            self.domain.as_deref(),
        )
    }
}

/// A parsed and normalised `wv:` ID that borrows its parts from the input where they are
/// already canonical (no escapes, no capitals): what the per-request checks read (a number,
/// a domain) without copying it. [`WvId::parse`] is this, made owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WvIdRef<'a> {
    /// As [`WvId::user`].
    pub user: Cow<'a, str>,
    /// As [`WvId::resource`].
    pub resource: Option<Cow<'a, str>>,
    /// As [`WvId::domain`].
    pub domain: Option<Cow<'a, str>>,
}

impl<'a> WvIdRef<'a> {
    /// Parse and normalise, with the rules and errors of [`WvId::parse`].
    pub fn parse(input: &'a str) -> Result<WvIdRef<'a>, IdError> {
        match Self::common(input) {
            Some(id) => Ok(id),
            None => Self::parse_any(input),
        }
    }

    /// The two forms nearly every ID of a message takes, read at a glance (an inbound
    /// message's IDs are parsed six times in all, by the policy, the route and the
    /// rewrite): `wv:+digits` (1 to 15) and `wv:@host` (lower-case letters, digits, `.` and
    /// `-`). Each reads as [`WvIdRef::parse_any`] reads it, borrowed (a property test
    /// compares the two); `None` for anything else.
    fn common(input: &'a str) -> Option<WvIdRef<'a>> {
        let b = input.as_bytes();
        if !has_wv_prefix(b) {
            return None;
        }
        let (&[.., mark], rest) = b.split_first_chunk::<4>()?;
        let part = input.get(4..)?;
        match mark {
            b'+' if (1..=15).contains(&rest.len()) && rest.iter().all(u8::is_ascii_digit) => {
                Some(WvIdRef {
                    user: Cow::Borrowed(input.get(3..)?),
                    resource: None,
                    domain: None,
                })
            }
            b'@' if !rest.is_empty()
                && rest
                    .iter()
                    .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-')) =>
            {
                Some(WvIdRef {
                    user: Cow::Borrowed(""),
                    resource: None,
                    domain: Some(Cow::Borrowed(part)),
                })
            }
            _ => None,
        }
    }

    /// [`WvIdRef::parse`] of any input.
    fn parse_any(input: &'a str) -> Result<WvIdRef<'a>, IdError> {
        // White space is trimmed, where an end could be white space at all (an ID of
        // printable ASCII, nearly all, cannot).
        let printable = |c: Option<&u8>| c.is_some_and(|c| (0x21..=0x7e).contains(c));
        let b = input.as_bytes();
        let s = if printable(b.first()) && printable(b.last()) {
            input
        } else {
            input.trim()
        };
        // Byte 2 is `:` when there is a prefix, so byte 3 starts a character.
        let s = if has_wv_prefix(s.as_bytes()) {
            &s[3..]
        } else {
            s
        };
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        // A pass over the bytes (this runs for every ID of every message): raw spaces and
        // control characters are refused (escaped ones, %20, are data), and the raw '@' and
        // '/' are found before decoding, so that an escaped %40 stays data. The same pass
        // notes the first '/' and whether any byte would need decoding (an escape, a capital,
        // non-ASCII): where none does, which is nearly always, every part is borrowed as it
        // is without a second look at its bytes. An ID of printable ASCII (nearly all) is
        // read 16 bytes at a time; any other, byte by byte.
        let b = s.as_bytes();
        let Marks {
            at,
            ats,
            slash,
            canonical,
        } = match ascii_marks(b) {
            Some(m) => m,
            None => careful_marks(b).ok_or_else(|| IdError::BadChar(input.to_owned()))?,
        };
        let (local, domain) = match at {
            Some(i) => {
                if ats > 1 {
                    return Err(IdError::TwoAts(input.to_owned()));
                }
                let d = &s[i + 1..];
                if d.is_empty() {
                    return Err(IdError::EmptyDomain(input.to_owned()));
                }
                (&s[..i], Some(d))
            }
            None => (s, None),
        };
        // The first '/' of the local part: the first of all, if it comes before the '@'.
        let (user, resource) = match slash.filter(|&i| i < local.len()) {
            Some(i) => (&local[..i], Some(&local[i + 1..])),
            None => (local, None),
        };
        let decoded = |part: &'a str| {
            if canonical {
                Ok(Cow::Borrowed(part))
            } else {
                decode(part, input)
            }
        };
        let user = decoded(user)?;
        let resource = resource.map(decoded).transpose()?;
        let domain = domain.map(decoded).transpose()?;
        if let Some(digits) = user.strip_prefix('+') {
            if !valid_e164_digits(digits) {
                return Err(IdError::Plus(input.to_owned()));
            }
        } else if user.bytes().any(|c| c == b'+') {
            return Err(IdError::Plus(input.to_owned()));
        }
        Ok(WvIdRef {
            user,
            resource,
            domain,
        })
    }

    /// The E.164 number if the user part is `+digits`.
    pub fn e164(&self) -> Option<E164> {
        self.user
            .strip_prefix('+')
            .and_then(|d| E164::from_digits(d).ok())
    }

    /// The domain, if any.
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// A plain user (no resource), MSISDN users included.
    pub fn is_user(&self) -> bool {
        !self.user.is_empty() && self.resource.is_none()
    }

    /// This ID with another domain, in canonical form, without copying it.
    pub fn with_domain<'s>(&'s self, domain: &'s str) -> impl fmt::Display + 's {
        DisplayWith { id: self, domain }
    }

    /// [`WvIdRef::with_domain`] appended to `out`.
    pub fn push_with_domain(&self, out: &mut String, domain: &str) {
        // Writing to a String cannot fail.
        let _ = write_id(out, &self.user, self.resource.as_deref(), Some(domain));
    }

    /// The owned ID.
    pub fn into_owned(self) -> WvId {
        WvId {
            user: self.user.into_owned(),
            resource: self.resource.map(Cow::into_owned),
            domain: self.domain.map(Cow::into_owned),
        }
    }
}

struct DisplayWith<'s, 'a> {
    id: &'s WvIdRef<'a>,
    domain: &'s str,
}

impl fmt::Display for DisplayWith<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_id(
            f,
            &self.id.user,
            self.id.resource.as_deref(),
            Some(self.domain),
        )
    }
}

/// The canonical text of an ID's parts, to a formatter or straight into a `String` (which
/// skips the formatter's indirection, for the per-message lookups by ID).
fn write_id<W: fmt::Write + ?Sized>(
    f: &mut W,
    user: &str,
    resource: Option<&str>,
    domain: Option<&str>,
) -> fmt::Result {
    f.write_str("wv:")?;
    encode(f, user, true)?;
    if let Some(r) = resource {
        f.write_str("/")?;
        encode(f, r, false)?;
    }
    if let Some(d) = domain {
        f.write_str("@")?;
        encode(f, d, false)?;
    }
    Ok(())
}

/// Normalise an ID string to canonical form; unparseable input is returned unchanged.
pub fn canonical(input: &str) -> String {
    match WvId::parse(input) {
        Ok(id) => id.to_string(),
        Err(_) => input.to_owned(),
    }
}

fn decode<'a>(part: &'a str, whole: &str) -> Result<Cow<'a, str>, IdError> {
    // Nearly every ID on the wire is already lowercase ASCII without escapes: borrowed as
    // it is, after one look at its bytes.
    if !part
        .bytes()
        .any(|b| b == b'%' || b.is_ascii_uppercase() || !b.is_ascii())
    {
        return Ok(Cow::Borrowed(part));
    }
    if !part.bytes().any(|b| b == b'%') {
        return Ok(Cow::Owned(lower(part)));
    }
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| IdError::Escape(whole.to_owned()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let mut out = String::from_utf8(out).map_err(|_| IdError::Escape(whole.to_owned()))?;
    if out.is_ascii() {
        out.make_ascii_lowercase();
    } else {
        out = out.to_lowercase();
    }
    Ok(Cow::Owned(out))
}

/// Lowercase, with the ASCII fast path IDs nearly always take.
fn lower(s: &str) -> String {
    if s.is_ascii() {
        s.to_ascii_lowercase()
    } else {
        s.to_lowercase()
    }
}

fn encode<W: fmt::Write + ?Sized>(f: &mut W, s: &str, is_user: bool) -> fmt::Result {
    // Fast path: printable ASCII without structural characters is written as is.
    let plain = s.bytes().enumerate().all(|(i, b)| {
        (0x21..0x7f).contains(&b)
            && !matches!(b, b'@' | b'/' | b'%')
            && (b != b'+' || (is_user && i == 0))
    });
    if plain {
        return f.write_str(s);
    }
    let mut last = 0;
    for (i, c) in s.char_indices() {
        let keep = match c {
            '+' => is_user && i == 0,
            '@' | '/' | '%' | ' ' => false,
            c => !c.is_control(),
        };
        if keep {
            continue;
        }
        f.write_str(&s[last..i])?;
        let mut buf = [0u8; 4];
        for b in c.encode_utf8(&mut buf).bytes() {
            write!(f, "%{b:02X}")?;
        }
        last = i + c.len_utf8();
    }
    f.write_str(&s[last..])
}

/// Whether `b` starts with the `wv:` prefix, in any case.
fn has_wv_prefix(b: &[u8]) -> bool {
    matches!(b, [w, v, b':', ..] if w.eq_ignore_ascii_case(&b'w') && v.eq_ignore_ascii_case(&b'v'))
}

/// What [`WvIdRef::parse`]'s pass over an ID's bytes finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Marks {
    /// The first '@'.
    at: Option<usize>,
    /// How many '@' there are.
    ats: u32,
    /// The first '/'.
    slash: Option<usize>,
    /// No byte needs decoding: no '%', no capital, ASCII only.
    canonical: bool,
}

impl Marks {
    /// Before the first byte: nothing found, nothing to decode.
    const START: Marks = Marks {
        at: None,
        ats: 0,
        slash: None,
        canonical: true,
    };
}

/// [`careful_marks`] for an ID of printable ASCII (0x21 to 0x7E: nothing to refuse), 16
/// bytes at a time; `None` for any other, which [`careful_marks`] reads.
fn ascii_marks(b: &[u8]) -> Option<Marks> {
    let mut m = Marks::START;
    for (k, chunk) in b.chunks(16).enumerate() {
        // The last bytes padded with a printable byte that marks nothing.
        let mut block = [b'a'; 16];
        block[..chunk.len()].copy_from_slice(chunk);
        let f = block_marks(&block);
        if f.refused != 0 {
            return None;
        }
        m.canonical &= f.decoded == 0;
        let at = |flags: u128| 16 * k + (flags.trailing_zeros() / 8) as usize;
        if f.at != 0 {
            m.at = m.at.or(Some(at(f.at)));
            m.ats += f.at.count_ones() / 8;
        }
        if f.slash != 0 && m.slash.is_none() {
            m.slash = Some(at(f.slash));
        }
    }
    Some(m)
}

/// Per-byte flags of a 16-byte block (0xff where the byte is one, else 0), each a `u128`.
struct BlockMarks {
    /// Not printable ASCII.
    refused: u128,
    /// A capital or `%`: the part must be decoded.
    decoded: u128,
    at: u128,
    slash: u128,
}

/// [`ascii_marks`]' tests of one block, written byte by byte with no branch so that the
/// compiler makes them vector compares (as `swar.rs`'s `block_hits`): every ID of every
/// message is read this way, and most are one or two blocks.
#[inline(always)]
fn block_marks(block: &[u8; 16]) -> BlockMarks {
    let (mut refused, mut decoded, mut at, mut slash) =
        ([0u8; 16], [0u8; 16], [0u8; 16], [0u8; 16]);
    for (i, &c) in block.iter().enumerate() {
        refused[i] = u8::from(!(0x21..=0x7e).contains(&c)).wrapping_neg();
        decoded[i] = u8::from(c.is_ascii_uppercase() | (c == b'%')).wrapping_neg();
        at[i] = u8::from(c == b'@').wrapping_neg();
        slash[i] = u8::from(c == b'/').wrapping_neg();
    }
    BlockMarks {
        refused: u128::from_le_bytes(refused),
        decoded: u128::from_le_bytes(decoded),
        at: u128::from_le_bytes(at),
        slash: u128::from_le_bytes(slash),
    }
}

/// [`WvIdRef::parse`]'s pass over an ID's bytes, one by one. `None` at a raw space or
/// control character: C0, DEL and C1 (U+0080..U+009F, written 0xC2 0x80..0x9F in UTF-8).
fn careful_marks(b: &[u8]) -> Option<Marks> {
    let mut m = Marks::START;
    for (i, &c) in b.iter().enumerate() {
        if c <= b' ' || c == 0x7f || (c == 0xc2 && matches!(b.get(i + 1), Some(0x80..=0x9f))) {
            return None;
        }
        if c == b'@' {
            m.ats += 1;
            m.at = m.at.or(Some(i));
        }
        if c == b'/' {
            m.slash = m.slash.or(Some(i));
        }
        m.canonical &= c != b'%' && !c.is_ascii_uppercase() && c.is_ascii();
    }
    Some(m)
}

fn valid_e164_digits(d: &str) -> bool {
    (1..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit())
}

/// An E.164 number: 1 to 15 digits, stored as an integer (country codes never start with 0,
/// so no leading zero is lost). Displays as the digits without `+`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164(u64);

/// Why a string is not an E.164 number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    /// Not `+` and 1-15 digits.
    #[error("{0:?} is not an E.164 number ('+' followed by 1 to 15 digits, not starting with 0)")]
    Invalid(String),
    /// Contains search wildcards.
    #[error("{0:?} contains wildcard characters")]
    Wildcard(String),
    /// Too few digits to name one subscriber.
    #[error("{0:?} is a partial number ({1} digits; at least {2} required)")]
    Partial(String, usize, usize),
}

impl E164 {
    /// From bare digits (no `+`).
    pub fn from_digits(d: &str) -> Result<E164, NumberError> {
        // One pass: the checks of `valid_e164_digits` and the value (this runs for every
        // number of every message; 15 digits cannot overflow a u64).
        let b = d.as_bytes();
        if !(1..=15).contains(&b.len()) || b[0] == b'0' {
            return Err(NumberError::Invalid(d.to_owned()));
        }
        let mut v = 0u64;
        for &c in b {
            let digit = c.wrapping_sub(b'0');
            if digit > 9 {
                return Err(NumberError::Invalid(d.to_owned()));
            }
            v = v * 10 + u64::from(digit);
        }
        Ok(E164(v))
    }

    /// From `+digits` exactly (an error names the text as given, `+` included).
    pub fn parse(s: &str) -> Result<E164, NumberError> {
        match s.strip_prefix('+') {
            Some(d) => E164::from_digits(d).map_err(|_| NumberError::Invalid(s.to_owned())),
            None => Err(NumberError::Invalid(s.to_owned())),
        }
    }

    /// The number as an integer.
    pub fn value(self) -> u64 {
        self.0
    }

    /// From an integer (as stored by [`E164::value`]).
    pub fn from_value(v: u64) -> Option<E164> {
        (v > 0 && v < 1_000_000_000_000_000).then_some(E164(v))
    }

    /// The digits as a string, without `+`.
    pub fn digits(self) -> String {
        self.written().digits().to_owned()
    }

    /// `+digits`, in a string allocated once.
    pub fn plus(self) -> String {
        self.written().plus().to_owned()
    }

    /// `+digits` and the digits, written on the stack (lookups by number build no string).
    pub fn written(self) -> Written {
        // "00" to "99": two digits per division (this runs for every number looked up or
        // written, several times per message).
        const PAIRS: [u8; 200] = {
            let mut t = [0u8; 200];
            let mut i = 0;
            while i < 100 {
                t[2 * i] = b'0' + (i / 10) as u8;
                t[2 * i + 1] = b'0' + (i % 10) as u8;
                i += 1;
            }
            t
        };
        let mut buf = [0u8; 16];
        let mut at = buf.len();
        let mut v = self.0;
        // At least one digit; at most 15 (the constructors keep v below 10^15, and the
        // bounds on `at` keep a larger value from running past the buffer).
        while v >= 100 && at > 3 {
            let d = (v % 100) as usize * 2;
            v /= 100;
            at -= 2;
            buf[at..at + 2].copy_from_slice(&PAIRS[d..d + 2]);
        }
        if v >= 10 && at > 2 {
            let d = (v % 100) as usize * 2;
            at -= 2;
            buf[at..at + 2].copy_from_slice(&PAIRS[d..d + 2]);
        } else {
            at -= 1;
            buf[at] = b'0' + (v % 10) as u8;
        }
        at -= 1;
        buf[at] = b'+';
        Written { buf, at: at as u8 }
    }
}

/// An [`E164`] written out: `+digits` in a stack buffer.
#[derive(Clone, Copy)]
pub struct Written {
    buf: [u8; 16],
    /// Where the `+` is.
    at: u8,
}

impl Written {
    /// `+digits`.
    pub fn plus(&self) -> &str {
        // Only ASCII digits and `+` are written (see `E164::written`).
        std::str::from_utf8(&self.buf[usize::from(self.at)..]).unwrap_or_default()
    }

    /// The digits, without `+`.
    pub fn digits(&self) -> &str {
        self.plus().get(1..).unwrap_or_default()
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.written().digits())
    }
}

/// The home numbering plan: converts national and international forms both ways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberPlan {
    /// Country calling code, digits only (e.g. `46`).
    pub country_code: String,
    /// National trunk prefix (usually `0`).
    pub trunk_prefix: String,
    /// International call prefix (usually `00`).
    pub international_prefix: String,
}

impl NumberPlan {
    /// A plan with the usual `0` trunk and `00` international prefixes.
    pub fn new(country_code: &str) -> NumberPlan {
        NumberPlan {
            country_code: country_code.trim_start_matches('+').to_owned(),
            trunk_prefix: "0".into(),
            international_prefix: "00".into(),
        }
    }

    /// Normalise a dialled or stored number to E.164.
    ///
    /// `+…` and `00…` are international; a leading trunk prefix means national; bare digits
    /// are taken as an MSISDN in international format without `+` (the usual operator form).
    /// Visual separators (space, `-`, `.`, `(`, `)`) are ignored.
    pub fn normalise(&self, input: &str) -> Result<E164, NumberError> {
        let raw = input.trim();
        if raw.contains(['*', '%', '?', '_']) {
            return Err(NumberError::Wildcard(raw.to_owned()));
        }
        let cleaned: String = raw
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '\u{a0}'))
            .collect();
        let digits = if let Some(d) = cleaned.strip_prefix('+') {
            d.to_owned()
        } else if !self.international_prefix.is_empty() {
            if let Some(d) = cleaned.strip_prefix(self.international_prefix.as_str()) {
                d.to_owned()
            } else if let Some(nsn) = self.strip_trunk(&cleaned) {
                format!("{}{}", self.country_code, nsn)
            } else {
                cleaned.clone()
            }
        } else {
            cleaned.clone()
        };
        E164::from_digits(&digits).map_err(|_| NumberError::Invalid(raw.to_owned()))
    }

    fn strip_trunk<'a>(&self, s: &'a str) -> Option<&'a str> {
        if self.trunk_prefix.is_empty() {
            return None;
        }
        s.strip_prefix(self.trunk_prefix.as_str())
    }

    /// The national significant number of `n` if it is in this country, else `None`.
    pub fn national(&self, n: E164) -> Option<String> {
        n.digits()
            .strip_prefix(self.country_code.as_str())
            .filter(|nsn| !nsn.is_empty())
            .map(str::to_owned)
    }

    /// National dialling form (trunk prefix + NSN) if `n` is in this country.
    pub fn national_dialled(&self, n: E164) -> Option<String> {
        self.national(n)
            .map(|nsn| format!("{}{nsn}", self.trunk_prefix))
    }

    /// The E.164 number for a national significant number.
    pub fn from_national(&self, nsn: &str) -> Result<E164, NumberError> {
        let nsn = self.strip_trunk(nsn).unwrap_or(nsn);
        E164::from_digits(&format!("{}{nsn}", self.country_code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// White space around an ID, ASCII or not, is not part of it; a prefix is taken in any
    /// case, and only as the first three bytes.
    #[test]
    fn white_space_around_an_id_and_its_prefix() {
        for (text, want) in [
            (" wv:+4915112345678\t", "wv:+4915112345678"),
            ("\u{a0}wv:a@b.example\u{2003}", "wv:a@b.example"),
            ("\nWV:a@b.example", "wv:a@b.example"),
            ("wV:a@b.example\u{3000}", "wv:a@b.example"),
            ("a@b.example", "wv:a@b.example"),
        ] {
            assert_eq!(WvId::parse(text).unwrap().to_string(), want, "{text:?}");
        }
        // Not a prefix: "wv" then a colon elsewhere, or a character past it.
        assert_eq!(WvId::parse("wv\u{e9}:a").unwrap().user, "wv\u{e9}:a");
        assert!(WvId::parse(" \u{a0} ").is_err());
    }

    #[test]
    fn an_id_pushed_with_a_domain_is_its_display() {
        for text in [
            "wv:usera@core.opx.example",
            "wv:+4915112345678",
            "wv:bob/~pep1.0_privatelist@b.example",
            "wv:a%20b%40c@x.example",
            "wv:/room@x.example",
            "wv:J\u{fc}rgen@x.example",
        ] {
            let id = WvIdRef::parse(text).unwrap();
            let mut pushed = String::from("kept:");
            id.push_with_domain(&mut pushed, "opx.example");
            assert_eq!(
                pushed,
                format!("kept:{}", id.with_domain("opx.example")),
                "{text}"
            );
        }
    }

    #[test]
    fn numbers_from_digits_are_checked_as_before() {
        for ok in ["1", "4915112345678", "999999999999999"] {
            assert_eq!(
                E164::from_digits(ok).unwrap().value(),
                ok.parse::<u64>().unwrap()
            );
        }
        for bad in [
            "",
            "0",
            "0491",
            "1234567890123456",
            "12a4",
            "+12",
            " 12",
            "١٢",
        ] {
            assert!(E164::from_digits(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_every_shape() {
        let u = WvId::parse("wv:Alice@Core.OPX.example").unwrap();
        assert_eq!(
            (u.user.as_str(), u.domain.as_deref()),
            ("alice", Some("core.opx.example"))
        );
        assert!(u.is_user());
        let r = WvId::parse("WV:bob/~PEP1.0_privatelist@b.example").unwrap();
        assert_eq!(r.resource.as_deref(), Some("~pep1.0_privatelist"));
        let g = WvId::parse("wv:/room@b.example").unwrap();
        assert!(g.is_group());
        let s = WvId::parse("wv:@b.example").unwrap();
        assert!(s.is_service());
        let m = WvId::parse("wv:+4670123456").unwrap();
        assert_eq!(m.e164(), Some(E164::parse("+4670123456").unwrap()));
        assert_eq!(m.domain, None);
        let md = WvId::parse("+4670123456@b.test").unwrap();
        assert_eq!(md.to_string(), "wv:+4670123456@b.test");
        let bare = WvId::parse("renge").unwrap();
        assert_eq!(bare.to_string(), "wv:renge");
    }

    /// The byte-wise check refuses exactly what `char::is_control` and a space refuse,
    /// wherever in the ID the character sits (every character up to U+3000 and the
    /// largest ones).
    #[test]
    fn raw_controls_are_refused_exactly_as_chars() {
        let chars = (0..=0x3000u32)
            .chain(0x10_fff0..=0x10_ffff)
            .filter_map(char::from_u32);
        for c in chars {
            for id in [format!("wv:a{c}b@x.example"), format!("wv:ab@x.ex{c}ample")] {
                let refused = matches!(WvIdRef::parse(&id), Err(IdError::BadChar(_)));
                assert_eq!(refused, c.is_control() || c == ' ', "U+{:04X}", c as u32);
            }
        }
    }

    #[test]
    fn decodes_and_reencodes_escapes() {
        let id = WvId::parse("wv:John%20Doe%40home@x.example").unwrap();
        assert_eq!(id.user, "john doe@home");
        assert_eq!(id.to_string(), "wv:john%20doe%40home@x.example");
        assert!(WvId::parse("wv:a%2@x").is_err());
        assert!(WvId::parse("wv:a%ff@x").is_err());
    }

    #[test]
    fn plus_rules() {
        assert!(WvId::parse("wv:+").is_err());
        assert!(WvId::parse("wv:+12a").is_err());
        assert!(WvId::parse("wv:a+b@x").is_err());
        assert!(WvId::parse("wv:+1234567890123456").is_err()); // 16 digits
        assert!(WvId::parse("wv:+123456789012345").is_ok());
        assert!(WvId::parse("wv:a@b@c").is_err());
        assert!(WvId::parse("wv:a@").is_err());
        assert!(WvId::parse("wv:").is_err());
    }

    #[test]
    fn number_plan_both_ways() {
        let plan = NumberPlan::new("46");
        let n = plan.normalise("070-123 45 67").unwrap();
        assert_eq!(n.to_string(), "46701234567");
        assert_eq!(plan.national(n).as_deref(), Some("701234567"));
        assert_eq!(plan.national_dialled(n).as_deref(), Some("0701234567"));
        assert_eq!(plan.from_national("701234567").unwrap(), n);
        assert_eq!(plan.from_national("0701234567").unwrap(), n);
        assert_eq!(plan.normalise("+46 70 123 45 67").unwrap(), n);
        assert_eq!(plan.normalise("0046701234567").unwrap(), n);
        assert_eq!(plan.normalise("46701234567").unwrap(), n);
        assert_eq!(plan.national(E164::parse("+4915112345678").unwrap()), None);
        assert!(matches!(
            plan.normalise("+49151*"),
            Err(NumberError::Wildcard(_))
        ));
        assert!(matches!(
            plan.normalise("+4915_"),
            Err(NumberError::Wildcard(_))
        ));
        assert!(plan.normalise("+0123").is_err());
    }

    proptest! {
        #[test]
        fn canonical_is_idempotent(s in "(wv:|WV:)?[a-zA-Z0-9._~%+/-]{0,12}(@[a-zA-Z0-9.-]{1,12})?") {
            if let Ok(id) = WvId::parse(&s) {
                let c = id.to_string();
                let again = WvId::parse(&c).expect("canonical form parses");
                prop_assert_eq!(&again, &id);
                prop_assert_eq!(again.to_string(), c);
            }
        }

        /// The common forms, read at a glance, read as the general parse reads them; and
        /// inputs near them (capitals, other bytes, 16 digits and more, white space) are
        /// read by the general parse.
        #[test]
        fn the_common_forms_read_as_any_other(
            lead in proptest::sample::select(vec!["", " ", "\t"]),
            prefix in proptest::sample::select(vec!["wv:", "WV:", "wV:", "wv", "w:", "wv;", ""]),
            mark in proptest::sample::select(vec!["+", "@", "", "-", "%2B"]),
            rest in proptest::collection::vec(
                prop_oneof![
                    8 => proptest::sample::select(b"0123456789abcxyz.-".to_vec()),
                    1 => proptest::sample::select(b"AZ_%@/+ \x7f".to_vec()),
                ],
                0..20,
            ),
            trail in proptest::sample::select(vec!["", " ", "\n"]),
        ) {
            let s = format!("{lead}{prefix}{mark}{}{trail}", String::from_utf8(rest).unwrap());
            match WvIdRef::common(&s) {
                Some(c) => prop_assert_eq!(Ok(c), WvIdRef::parse_any(&s), "{:?}", s),
                None => prop_assert_eq!(WvIdRef::parse(&s), WvIdRef::parse_any(&s), "{:?}", s),
            }
        }

        #[test]
        fn the_common_forms_are_taken_at_a_glance(
            digits in "[0-9]{1,15}",
            host in "[a-z0-9.-]{1,20}",
        ) {
            for s in [format!("wv:+{digits}"), format!("WV:+{digits}"), format!("wv:@{host}")] {
                prop_assert!(WvIdRef::common(&s).is_some(), "{}", s);
                prop_assert_eq!(WvIdRef::parse(&s), WvIdRef::parse_any(&s));
            }
            // Past 15 digits, or none, or an empty host: not taken, and refused.
            for s in [format!("wv:+{digits}{}", "1".repeat(16 - digits.len())), "wv:+".into(), "wv:@".into()] {
                prop_assert!(WvIdRef::common(&s).is_none(), "{}", s);
                prop_assert!(WvIdRef::parse(&s).is_err(), "{}", s);
            }
        }

        /// The borrowed reading is the owned one, accepted and refused alike, and borrows
        /// only what is already canonical.
        #[test]
        fn the_borrowed_parse_is_the_owned_one(s in "(wv:|WV:)?[a-zA-Z0-9._~%+/-]{0,12}(@[a-zA-Z0-9.%-]{1,12})?") {
            let r = WvIdRef::parse(&s);
            prop_assert_eq!(r.clone().map(WvIdRef::into_owned), WvId::parse(&s));
            if let Ok(r) = r {
                for part in [Some(&r.user), r.resource.as_ref(), r.domain.as_ref()].into_iter().flatten() {
                    if let Cow::Borrowed(b) = part {
                        prop_assert!(!b.contains('%') && !b.bytes().any(|c| c.is_ascii_uppercase()));
                    }
                }
            }
        }

        /// The block pass finds what the byte-by-byte one finds, wherever it reads.
        #[test]
        fn an_ids_marks_are_the_byte_by_byte_ones(
            b in proptest::collection::vec(
                prop_oneof![
                    6 => proptest::sample::select(b"abz09+.-_~".to_vec()),
                    2 => proptest::sample::select(b"@/".to_vec()),
                    1 => proptest::sample::select(
                        b"AZ[`@%\x00\x20\x21\x7e\x7f\x80\x9f\xc2\xff".to_vec()
                    ),
                ],
                0..40,
            ),
        ) {
            if let Some(m) = ascii_marks(&b) {
                prop_assert_eq!(Some(m), careful_marks(&b));
            } else {
                prop_assert!(b.iter().any(|c| !(0x21..0x7f).contains(c)));
            }
        }

        /// The parts are those of a plain reading: split at the first '@', the local part at
        /// its first '/', and each part decoded on its own.
        #[test]
        fn the_parts_are_decoded_as_each_alone(s in "(wv:)?[a-zA-Z0-9._~%+/@ÉéßΣ-]{0,14}") {
            if let Ok(r) = WvIdRef::parse(&s) {
                let body = s.strip_prefix("wv:").unwrap_or(&s);
                let (local, domain) = match body.find('@') {
                    Some(i) => (&body[..i], Some(&body[i + 1..])),
                    None => (body, None),
                };
                let (user, resource) = match local.find('/') {
                    Some(i) => (&local[..i], Some(&local[i + 1..])),
                    None => (local, None),
                };
                prop_assert_eq!(&r.user, &decode(user, &s).unwrap());
                prop_assert_eq!(r.resource, resource.map(|x| decode(x, &s).unwrap()));
                prop_assert_eq!(r.domain, domain.map(|x| decode(x, &s).unwrap()));
            }
        }

        #[test]
        fn any_unicode_user_round_trips(user in "[^+@/]{1,10}", dom in "[a-z0-9.]{1,10}") {
            let id = WvId { user: user.to_lowercase(), resource: None, domain: Some(dom) };
            if let Ok(back) = WvId::parse(&id.to_string()) {
                prop_assert_eq!(back, id);
            }
        }

        #[test]
        fn e164_round_trips(d in "[1-9][0-9]{0,14}") {
            let n = E164::from_digits(&d).unwrap();
            prop_assert_eq!(n.to_string(), d.clone());
            prop_assert_eq!(n.plus(), format!("+{d}"));
            let w = n.written();
            prop_assert_eq!(w.digits(), d.as_str());
            prop_assert_eq!(E164::from_value(n.value()), Some(n));
            let id = WvId::msisdn(n, None);
            prop_assert_eq!(WvId::parse(&id.to_string()).unwrap().e164(), Some(n));
        }

        #[test]
        fn national_international_round_trip(nsn in "[1-9][0-9]{5,11}") {
            let plan = NumberPlan::new("46");
            let n = plan.from_national(&nsn).unwrap();
            prop_assert_eq!(plan.national(n), Some(nsn.clone()));
            prop_assert_eq!(plan.normalise(&format!("0{nsn}")).unwrap(), n);
        }
    }
}
