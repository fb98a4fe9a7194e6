//! Word-at-a-time byte tests for the SSP codec's hottest loops: the first of a few bytes in
//! a short span (every attribute value read, every value written), and the marks of a user
//! ID (every ID parsed).
//!
//! Those spans (IDs, session and transaction IDs, namespaces) are mostly 10 to 50 bytes.
//! There a byte-by-byte test costs five to fifteen instructions per byte, and `memchr` (one
//! byte only) costs more to set up than the search. A 64-bit word is tested for all the
//! bytes at once with the usual carry tricks. Two kinds are used: [`below`] may also flag
//! a byte above a true hit, never below one, so its lowest flag is the first hit;
//! [`at_least`] and [`equal`] keep each byte's sum inside the byte, so every flag is exact
//! (they count and combine).

/// One in each byte of a word.
const LO: u64 = 0x0101_0101_0101_0101;
/// The top bit of each byte of a word.
const HI: u64 = 0x8080_8080_8080_8080;

/// The top bit of each byte of `x` below `n` (`n` ≤ 0x80; none for 0), exact for the
/// lowest such byte.
#[inline(always)]
fn below(x: u64, n: u8) -> u64 {
    x.wrapping_sub(LO * u64::from(n)) & !x & HI
}

/// The top bit of each byte of `x` that is at least `n` (1 ≤ `n` ≤ 0x80), exact for every
/// byte: the low seven bits plus `0x80 - n` stay inside the byte.
#[inline(always)]
fn at_least(x: u64, n: u8) -> u64 {
    ((x & !HI).wrapping_add(LO * u64::from(0x80 - n)) | x) & HI
}

/// The top bit of each byte of `x` equal to `c`, exact for every byte.
#[inline(always)]
fn equal(x: u64, c: u8) -> u64 {
    !at_least(x ^ (LO * u64::from(c)), 1) & HI
}

/// What the one pass over a user ID's bytes (`ids::WvIdRef::parse`) finds, when every byte
/// is plain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdMarks {
    /// The first `@`.
    pub at: Option<usize>,
    /// How many `@` there are.
    pub ats: u32,
    /// The first `/`.
    pub slash: Option<usize>,
}

/// The marks of `b`, a word at a time, if every byte is plain: printable ASCII (no space,
/// control or DEL), no capital, no `%`. Such an ID has nothing to refuse by its bytes and
/// nothing to decode. `None`: some byte is not plain; the careful reading decides.
pub(crate) fn plain_id_marks(b: &[u8]) -> Option<IdMarks> {
    let mut m = IdMarks {
        at: None,
        ats: 0,
        slash: None,
    };
    let mut i = 0;
    while i < b.len() {
        let word = match b.get(i..i + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
            Some(w) => w,
            None => {
                // The last bytes, padded with a plain byte that marks nothing.
                let mut w = [b'a'; 8];
                w[..b.len() - i].copy_from_slice(&b[i..]);
                w
            }
        };
        let x = u64::from_le_bytes(word);
        let capital = at_least(x, b'A') & !at_least(x, b'Z' + 1);
        let unusual = !at_least(x, 0x21) | at_least(x, 0x7f) | capital | equal(x, b'%');
        if unusual & HI != 0 {
            return None;
        }
        let ats = equal(x, b'@');
        if ats != 0 {
            m.at = m.at.or(Some(i + (ats.trailing_zeros() / 8) as usize));
            m.ats += ats.count_ones();
        }
        let slashes = equal(x, b'/');
        if slashes != 0 && m.slash.is_none() {
            m.slash = Some(i + (slashes.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    Some(m)
}

/// Where the first byte of `b` that is one of `eq`, or is below `under` (≤ 0x80; 0 for
/// none), is.
#[inline(always)]
pub(super) fn first_of<const N: usize>(b: &[u8], eq: [u8; N], under: u8) -> Option<usize> {
    debug_assert!(under <= 0x80, "byte bound {under}");
    let words = eq.map(|e| LO * u64::from(e));
    let mut i = 0;
    while let Some(word) = b.get(i..i + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
        let x = u64::from_le_bytes(word);
        let hits = words
            .iter()
            .fold(below(x, under), |hits, w| hits | below(x ^ w, 1));
        if hits != 0 {
            return Some(i + (hits.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b[i..]
        .iter()
        .position(|c| *c < under || eq.contains(c))
        .map(|p| i + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`first_of`], the slow and obvious way.
    fn naive<const N: usize>(b: &[u8], eq: [u8; N], under: u8) -> Option<usize> {
        b.iter().position(|c| *c < under || eq.contains(c))
    }

    #[test]
    fn every_byte_is_found_at_every_place_in_and_after_a_word() {
        let eq = [b'"', b'<', b'&'];
        for len in 0..20 {
            for at in 0..len {
                for c in 0..=255u8 {
                    let mut b = vec![b'a'; len];
                    b[at] = c;
                    assert_eq!(first_of(&b, eq, 0x20), naive(&b, eq, 0x20), "{c} at {at}");
                    assert_eq!(first_of(&b, eq, 0), naive(&b, eq, 0), "{c} at {at}");
                }
            }
        }
    }

    #[test]
    fn the_exact_tests_are_exact_for_every_byte_in_every_place() {
        for place in 0..8 {
            for c in 0..=255u8 {
                // The other bytes at both ends of the range, where carries would show.
                for fill in [0u8, 0x20, 0x7f, 0x80, 0xff] {
                    let mut w = [fill; 8];
                    w[place] = c;
                    let x = u64::from_le_bytes(w);
                    let flag = |m: u64| m & (0x80 << (8 * place)) != 0;
                    for n in [1u8, 0x21, b'A', b'Z' + 1, 0x7f, 0x80] {
                        assert_eq!(flag(at_least(x, n)), c >= n, "{c} >= {n} at {place}");
                    }
                    for e in [b'@', b'/', b'%', 0] {
                        assert_eq!(flag(equal(x, e)), c == e, "{c} == {e} at {place}");
                    }
                }
            }
        }
    }

    /// [`plain_id_marks`], byte by byte.
    fn naive_marks(b: &[u8]) -> Option<IdMarks> {
        let plain = |c: u8| (0x21..0x7f).contains(&c) && !c.is_ascii_uppercase() && c != b'%';
        b.iter().all(|c| plain(*c)).then(|| IdMarks {
            at: b.iter().position(|c| *c == b'@'),
            ats: b.iter().filter(|c| **c == b'@').count() as u32,
            slash: b.iter().position(|c| *c == b'/'),
        })
    }

    proptest::proptest! {
        #[test]
        fn an_ids_marks_are_the_byte_by_byte_ones(
            b in proptest::collection::vec(
                proptest::prop_oneof![
                    6 => proptest::sample::select(b"abz09+.-_~".to_vec()),
                    2 => proptest::sample::select(b"@/".to_vec()),
                    1 => proptest::sample::select(
                        b"AZ[`@%\x00\x20\x21\x7e\x7f\x80\xc2\xff".to_vec()
                    ),
                ],
                0..40,
            ),
        ) {
            proptest::prop_assert_eq!(plain_id_marks(&b), naive_marks(&b));
        }

        #[test]
        fn the_first_hit_is_the_byte_by_byte_one(
            // Mostly plain bytes, with the bytes looked for and those just either side of
            // them, where a carry could mislead the word test.
            b in proptest::collection::vec(
                proptest::prop_oneof![
                    6 => proptest::prelude::Just(b'a'),
                    1 => proptest::sample::select(
                        b"\"'<&\x00\x01\x1f\x20\x21\t\n\r;=>%\x7f\x80\xa2\xff".to_vec()
                    ),
                ],
                0..40,
            ),
            under in proptest::sample::select(vec![0u8, 1, 0x0e, 0x20, 0x21, 0x80]),
        ) {
            for eq in [[b'"', b'<', b'&'], [b'\'', b'\'', b'>']] {
                proptest::prop_assert_eq!(first_of(&b, eq, under), naive(&b, eq, under));
            }
            let six = [b'<', b'&', b'\r', b'"', b'\t', b'\n'];
            proptest::prop_assert_eq!(first_of(&b, six, under), naive(&b, six, under));
        }
    }
}
