//! Byte tests many at a time for the SSP codec's hottest loops: the first of a few bytes in
//! a span (every attribute value and text run read, every value written) and the letters of
//! a name (every element and attribute name the plain reader reads). `ids.rs` tests an ID's
//! bytes the same way as [`first_of`]'s blocks.
//!
//! Those spans (IDs, session and transaction IDs, namespaces) are mostly 10 to 50 bytes.
//! There a byte-by-byte test costs five to fifteen instructions per byte, and `memchr` and
//! its two- and three-byte forms cost more to set up than the search. Two ways are used:
//! - 16 bytes at a time, written as branch-free byte tests that the compiler makes vector
//!   compares (`block_hits`), for the searches, the end of a span (shorter than a block)
//!   included;
//! - a 64-bit word at a time with the usual carry tricks (SWAR: SIMD within a register), for
//!   names: [`at_least`] keeps each byte's sum inside the byte, so every flag is exact.

/// One in each byte of a word.
const LO: u64 = 0x0101_0101_0101_0101;
/// The top bit of each byte of a word.
const HI: u64 = 0x8080_8080_8080_8080;

/// The top bit of each byte of `x` that is at least `n` (1 ≤ `n` ≤ 0x80), exact for every
/// byte: the low seven bits plus `0x80 - n` stay inside the byte.
#[inline(always)]
fn at_least(x: u64, n: u8) -> u64 {
    debug_assert!((1..=0x80).contains(&n), "byte bound {n}");
    ((x & !HI).wrapping_add(LO * u64::from(0x80 - n)) | x) & HI
}

/// The top bit of each byte of `x` from `lo` to `hi` (1 ≤ `lo` ≤ `hi` < 0x80), exact for
/// every byte.
#[inline(always)]
fn between(x: u64, lo: u8, hi: u8) -> u64 {
    at_least(x, lo) & !at_least(x, hi + 1)
}

/// The top bit of each byte of `x` that is not an ASCII letter, exact for every byte: a
/// letter with its case bit set is `a` to `z`, and no other byte is.
#[inline(always)]
pub(super) fn not_letter(x: u64) -> u64 {
    !between(x | (LO * 0x20), b'a', b'z') & HI
}

/// Where the first byte of `b` that is one of `eq`, or is below `under` (≤ 0x80; 0 for
/// none), is. Sixteen bytes at a time; what is left after the whole blocks is tested as
/// one more block: the last sixteen bytes of `b` (overlapping bytes already tested, which
/// held no hit), or, for a span shorter than a block, its bytes padded with 0xff, which is
/// never a hit. (Most spans written are IDs shorter than a block, where a word and then
/// byte by byte cost about four times as much.)
#[inline(always)]
pub(super) fn first_of<const N: usize>(b: &[u8], eq: [u8; N], under: u8) -> Option<usize> {
    first_of_but(b, eq, under, [])
}

/// [`first_of`], where the bytes below `under` that are one of `but` are no hit: text's
/// tab and line ends among the control characters, so that a search of text does not
/// stop at every line.
#[inline(always)]
pub(super) fn first_of_but<const N: usize, const M: usize>(
    b: &[u8],
    eq: [u8; N],
    under: u8,
    but: [u8; M],
) -> Option<usize> {
    debug_assert!(under <= 0x80, "byte bound {under}");
    debug_assert!(!eq.contains(&PAD), "the padding byte is a needle");
    let mut i = 0;
    while let Some(block) = b.get(i..i + 16).and_then(|w| <&[u8; 16]>::try_from(w).ok()) {
        let hits = block_hits(block, eq, under, but);
        if hits != 0 {
            return Some(i + (hits.trailing_zeros() / 8) as usize);
        }
        i += 16;
    }
    if i == b.len() {
        return None;
    }
    let (at, hits) = match b.len().checked_sub(16) {
        Some(last) => {
            let block = <&[u8; 16]>::try_from(&b[last..]).ok()?;
            (last, block_hits(block, eq, under, but))
        }
        None => {
            let mut block = [PAD; 16];
            block[..b.len()].copy_from_slice(b);
            (0, block_hits(&block, eq, under, but))
        }
    };
    (hits != 0).then(|| at + (hits.trailing_zeros() / 8) as usize)
}

/// What pads a span shorter than a block: above every bound, and no needle.
const PAD: u8 = 0xff;

/// [`first_of`]'s test of 16 bytes at once: each byte of the result is 0xff where `block`'s
/// byte is a hit, else 0. Written byte by byte with no branch, so that the compiler makes
/// it vector compares (SSE2 on x86-64, which every x86-64 has; NEON on ARM): about one
/// instruction per byte, where a word test with carry tricks takes three for three needles.
/// Every span searched goes this way, its end padded when it is shorter than a block.
#[inline(always)]
fn block_hits<const N: usize, const M: usize>(
    block: &[u8; 16],
    eq: [u8; N],
    under: u8,
    but: [u8; M],
) -> u128 {
    let mut hits = [0u8; 16];
    for (h, &x) in hits.iter_mut().zip(block) {
        let mut hit = x < under;
        for a in but {
            hit &= x != a;
        }
        for e in eq {
            hit |= x == e;
        }
        *h = u8::from(hit).wrapping_neg();
    }
    u128::from_le_bytes(hits)
}

/// Test input for the searches and the word tests: up to 40 bytes (short spans, whole
/// blocks and longer), mostly plain, with the bytes the searches look for and those just
/// either side of them (where a carry could mislead a word test), and high bytes.
#[cfg(test)]
pub(super) fn spiky_bytes() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        proptest::prop_oneof![
            6 => proptest::prelude::Just(b'a'),
            1 => proptest::sample::select(
                b"\"'<&\x00\x01\x1f\x20\x21\t\n\r;=>%\x7f\x80\xa2\xff".to_vec()
            ),
        ],
        0..40,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`first_of`], the slow and obvious way.
    fn naive<const N: usize>(b: &[u8], eq: [u8; N], under: u8) -> Option<usize> {
        b.iter().position(|c| *c < under || eq.contains(c))
    }

    #[test]
    fn every_byte_is_found_at_every_place_of_spans_of_every_length() {
        let eq = [b'"', b'<', b'&'];
        // Spans shorter than a block (padded), of whole blocks, and longer (the last block
        // overlapping the one before).
        for len in 0..50 {
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
                    assert_eq!(
                        flag(between(x, b'A', b'Z')),
                        c.is_ascii_uppercase(),
                        "{c} at {place}"
                    );
                    assert_eq!(
                        flag(not_letter(x)),
                        !c.is_ascii_alphabetic(),
                        "{c} a letter at {place}"
                    );
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn the_first_hit_is_the_byte_by_byte_one(
            b in spiky_bytes(),
            under in proptest::sample::select(vec![0u8, 1, 0x0e, 0x20, 0x21, 0x80]),
        ) {
            // The sets the codec looks for: a value's end (either quote), and what text
            // and attribute values escape.
            for eq in [[b'"', b'<', b'&'], [b'\'', b'<', b'&']] {
                proptest::prop_assert_eq!(first_of(&b, eq, under), naive(&b, eq, under));
            }
            let text = [b'<', b'&', b'>'];
            proptest::prop_assert_eq!(first_of(&b, text, under), naive(&b, text, under));
            let attr = [b'<', b'&', b'"'];
            proptest::prop_assert_eq!(first_of(&b, attr, under), naive(&b, attr, under));
            // Text runs (the plain reader).
            let run = [b'<', b'&'];
            proptest::prop_assert_eq!(first_of(&b, run, under), naive(&b, run, under));
            // Text read by a shape: tab and line ends are no hit.
            let but = [b'\t', b'\n', b'\r'];
            proptest::prop_assert_eq!(
                first_of_but(&b, text, under, but),
                b.iter().position(|c| (*c < under && !but.contains(c)) || text.contains(c))
            );
        }
    }
}
