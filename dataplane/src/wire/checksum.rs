//! The Internet checksum: RFC 1071, with the incremental update of
//! RFC 1624.
//!
//! Sums here are one's complement sums folded to 16 bits but *not*
//! complemented; the checksum field holds the complement ([`checksum`]).
//! The sum is byte-order independent (RFC 1071 section 2(B)), so the
//! buffer is summed as big-endian 32-bit words in a 64-bit accumulator and
//! folded once at the end (section 2(C), "deferred carries"), which is
//! exact for any buffer shorter than 2^34 bytes.

/// Folds a wide one's complement accumulator to 16 bits (end-around
/// carry). A non-zero input never folds to zero.
#[inline]
pub const fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Unfolded one's complement sum of `data` as 16-bit big-endian words, an
/// odd last byte padded with zero (RFC 1071 section 1). `data` must start
/// at an even offset of the checksummed region.
#[inline]
pub fn sum_wide(data: &[u8]) -> u64 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        acc += (w >> 32) + (w & 0xffff_ffff);
    }
    let mut rest = chunks.remainder();
    if rest.len() >= 4 {
        acc += u64::from(u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]));
        rest = &rest[4..];
    }
    if rest.len() >= 2 {
        acc += u64::from(u16::from_be_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
    }
    if let Some(&b) = rest.first() {
        acc += u64::from(b) << 8;
    }
    acc
}

/// One's complement sum of `data`, folded to 16 bits (not complemented).
#[inline]
pub fn data_sum(data: &[u8]) -> u16 {
    fold(sum_wide(data))
}

/// The Internet checksum of `data`: the complement of its sum. A buffer
/// whose checksum field already holds the right value yields 0.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !data_sum(data)
}

/// One's complement addition of two folded sums.
#[inline]
pub const fn add(a: u16, b: u16) -> u16 {
    fold(a as u64 + b as u64)
}

/// One's complement sum of several folded sums, e.g. a pseudo-header sum
/// and a payload sum computed separately (RFC 1071 section 2(A)/(D)).
#[inline]
pub fn combine(sums: &[u16]) -> u16 {
    fold(sums.iter().map(|&s| u64::from(s)).sum())
}

/// Sum of the IPv4 pseudo-header that UDP and TCP include in their
/// checksum (RFC 768, "Fields"): source, destination, zero, protocol,
/// upper-layer length.
#[inline]
pub fn pseudo_header_v4(src: [u8; 4], dst: [u8; 4], protocol: u8, length: u16) -> u16 {
    let s = u64::from(u32::from_be_bytes(src));
    let d = u64::from(u32::from_be_bytes(dst));
    fold(s + d + u64::from(protocol) + u64::from(length))
}

/// RFC 1624 section 3, eqn. 3: the new checksum after one 16-bit word of
/// the covered data changed from `old` to `new`,
/// `HC' = ~(~HC + ~m + m')`.
///
/// Unlike eqn. 2 of RFC 1141 this never turns a correct `0x0000` into
/// `0xFFFF` (the section 3 corner case): when `hc` is the computed
/// checksum and the data is not all zero after the change, it gives the
/// same value as a full recomputation.
#[inline]
pub const fn incremental_update(hc: u16, old: u16, new: u16) -> u16 {
    !fold(!hc as u64 + !old as u64 + new as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Straight RFC 1071 reference: 16-bit words, fold every step.
    fn reference_sum(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for c in data.chunks(2) {
            let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
            s += u32::from(w);
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn rfc1071_section3_example() {
        // Bytes 00 01 f2 03 f4 f5 f6 f7: sum 0xddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(data_sum(&d), 0xddf2);
        assert_eq!(checksum(&d), 0x220d);
    }

    #[test]
    fn rfc1624_section3_corner_case() {
        // Sum of the other words 0xCD7A; m 0x5555 -> 0x3285; HC 0xDD2F.
        // A full recomputation gives ~(0xCD7A + 0x3285) = 0x0000.
        assert_eq!(!add(0xcd7a, 0x5555), 0xdd2f);
        assert_eq!(!add(0xcd7a, 0x3285), 0x0000);
        assert_eq!(incremental_update(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn odd_and_empty() {
        assert_eq!(data_sum(&[]), 0);
        assert_eq!(data_sum(&[0xab]), 0xab00);
        assert_eq!(data_sum(&[0xff, 0xff, 0xff, 0xff]), 0xffff);
    }

    #[test]
    fn combine_and_pseudo_header() {
        let src = [192, 0, 2, 1];
        let dst = [198, 51, 100, 7];
        let mut ph = Vec::new();
        ph.extend_from_slice(&src);
        ph.extend_from_slice(&dst);
        ph.extend_from_slice(&[0, 17, 0x01, 0x34]);
        assert_eq!(pseudo_header_v4(src, dst, 17, 0x134), reference_sum(&ph));
        assert_eq!(combine(&[0xffff, 0x0001]), 0x0001);
        assert_eq!(combine(&[]), 0);
    }

    proptest! {
        #[test]
        fn fast_sum_matches_reference(data in proptest::collection::vec(any::<u8>(), 0..1600)) {
            let r = reference_sum(&data);
            // Both folds keep a non-zero sum in 1..=0xffff, so they agree
            // exactly, not just modulo 0xffff.
            prop_assert_eq!(data_sum(&data), r);
        }

        #[test]
        fn split_sums_combine(data in proptest::collection::vec(any::<u8>(), 0..512), cut in 0usize..256) {
            let cut = (cut * 2).min(data.len() & !1);
            let whole = data_sum(&data);
            let parts = combine(&[data_sum(&data[..cut]), data_sum(&data[cut..])]);
            // Equal as one's complement values (0x0000 and 0xffff are both zero).
            prop_assert_eq!(whole % 0xffff, parts % 0xffff);
        }

        #[test]
        fn incremental_matches_recompute(
            mut words in proptest::collection::vec(any::<u16>(), 2..40),
            at in any::<prop::sample::Index>(),
            new in any::<u16>(),
        ) {
            // Word 0 is non-zero, as in every real header (version/IHL).
            words[0] |= 0x4500;
            let at = at.index(words.len() - 1) + 1;
            let bytes = |w: &[u16]| w.iter().flat_map(|x| x.to_be_bytes()).collect::<Vec<u8>>();
            let hc = checksum(&bytes(&words));
            let old = words[at];
            words[at] = new;
            prop_assert_eq!(incremental_update(hc, old, new), checksum(&bytes(&words)));
        }
    }
}
