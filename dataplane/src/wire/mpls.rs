//! MPLS label stack encoding (RFC 3032 section 2.1).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                Label                  | TC  |S|       TTL     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! TC is the former EXP field (RFC 5462). A stack is a run of entries whose
//! last has S (bottom of stack) set; the network-layer packet follows it.

use core::fmt;

use super::{get_u32, set_u32, Error, Result};

/// Reserved label values (RFC 3032 section 2.1; RFC 7274 for 7, 13, 14,
/// 15; IANA "Special-Purpose MPLS Label Values"). Labels 0..=15 are
/// reserved and never allocated to a FEC.
pub mod label {
    /// RFC 3032: only legal at the bottom; pop and route as IPv4.
    pub const IPV4_EXPLICIT_NULL: u32 = 0;
    /// RFC 3032: deliver to the local control plane; not at the bottom.
    pub const ROUTER_ALERT: u32 = 1;
    /// RFC 3032: only legal at the bottom; pop and route as IPv6.
    pub const IPV6_EXPLICIT_NULL: u32 = 2;
    /// RFC 3032: signalled only, never seen on the wire (penultimate hop
    /// popping).
    pub const IMPLICIT_NULL: u32 = 3;
    /// RFC 6790: entropy label indicator.
    pub const ELI: u32 = 7;
    /// RFC 5586: generic associated channel label.
    pub const GAL: u32 = 13;
    /// RFC 3429: OAM alert.
    pub const OAM_ALERT: u32 = 14;
    /// RFC 7274: extension label.
    pub const EXTENSION: u32 = 15;
    /// Highest reserved label.
    pub const MAX_RESERVED: u32 = 15;
    /// Highest label value (20 bits).
    pub const MAX: u32 = 0xf_ffff;

    /// Labels 0..=15 are special-purpose (RFC 3032 section 2.1).
    #[inline]
    pub const fn is_reserved(label: u32) -> bool {
        label <= MAX_RESERVED
    }
}

const LABEL_SHIFT: u32 = 12;
const TC_SHIFT: u32 = 9;
const TC_MASK: u32 = 0x7 << TC_SHIFT;
const BOS_BIT: u32 = 1 << 8;
const TTL_MASK: u32 = 0xff;
const LABEL_MASK: u32 = label::MAX << LABEL_SHIFT;

/// One label stack entry as a packed host-order `u32`, ready to be written
/// to a packet with [`to_bytes`](Self::to_bytes) or
/// [`MplsHeader::set_entry`]. Next hops keep their label stacks as these.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LabelStackEntry(u32);

impl LabelStackEntry {
    /// Builds an entry; each field is masked to its width.
    #[inline]
    pub const fn new(label: u32, tc: u8, bos: bool, ttl: u8) -> LabelStackEntry {
        LabelStackEntry(
            ((label & label::MAX) << LABEL_SHIFT)
                | (((tc & 0x7) as u32) << TC_SHIFT)
                | if bos { BOS_BIT } else { 0 }
                | ttl as u32,
        )
    }

    /// The entry whose wire form is `bits` (big-endian on the wire).
    #[inline]
    pub const fn from_bits(bits: u32) -> LabelStackEntry {
        LabelStackEntry(bits)
    }

    #[inline]
    pub const fn bits(self) -> u32 {
        self.0
    }

    #[inline]
    pub const fn from_bytes(b: [u8; 4]) -> LabelStackEntry {
        LabelStackEntry(u32::from_be_bytes(b))
    }

    #[inline]
    pub const fn to_bytes(self) -> [u8; 4] {
        self.0.to_be_bytes()
    }

    #[inline]
    pub const fn label(self) -> u32 {
        self.0 >> LABEL_SHIFT
    }

    #[inline]
    pub const fn tc(self) -> u8 {
        ((self.0 & TC_MASK) >> TC_SHIFT) as u8
    }

    #[inline]
    pub const fn bos(self) -> bool {
        self.0 & BOS_BIT != 0
    }

    #[inline]
    pub const fn ttl(self) -> u8 {
        self.0 as u8
    }

    /// Only the low 20 bits of `label` are used.
    #[inline]
    pub const fn with_label(self, label: u32) -> LabelStackEntry {
        LabelStackEntry((self.0 & !LABEL_MASK) | ((label & label::MAX) << LABEL_SHIFT))
    }

    /// Only the low 3 bits of `tc` are used.
    #[inline]
    pub const fn with_tc(self, tc: u8) -> LabelStackEntry {
        LabelStackEntry((self.0 & !TC_MASK) | (((tc & 0x7) as u32) << TC_SHIFT))
    }

    #[inline]
    pub const fn with_bos(self, bos: bool) -> LabelStackEntry {
        LabelStackEntry((self.0 & !BOS_BIT) | if bos { BOS_BIT } else { 0 })
    }

    #[inline]
    pub const fn with_ttl(self, ttl: u8) -> LabelStackEntry {
        LabelStackEntry((self.0 & !TTL_MASK) | ttl as u32)
    }
}

impl fmt::Debug for LabelStackEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "LSE(label {} tc {} {}ttl {})",
            self.label(),
            self.tc(),
            if self.bos() { "S " } else { "" },
            self.ttl()
        )
    }
}

mod field {
    use core::ops::Range;

    pub const ENTRY: Range<usize> = 0..4;
    pub const PAYLOAD: usize = 4;
}

/// Length of one label stack entry.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// A read/write view of one label stack entry and what follows it (the
/// next entry, or the network-layer packet after bottom of stack).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MplsHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> MplsHeader<T> {
    /// Wraps a buffer without checks; accessors panic if it is shorter
    /// than [`HEADER_LEN`].
    #[inline]
    pub const fn new_unchecked(buffer: T) -> MplsHeader<T> {
        MplsHeader { buffer }
    }

    /// Wraps a buffer of at least [`HEADER_LEN`] bytes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<MplsHeader<T>> {
        let h = Self::new_unchecked(buffer);
        h.check_len()?;
        Ok(h)
    }

    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn entry(&self) -> LabelStackEntry {
        LabelStackEntry(get_u32(self.buffer.as_ref(), field::ENTRY))
    }

    #[inline]
    pub fn label(&self) -> u32 {
        self.entry().label()
    }

    #[inline]
    pub fn tc(&self) -> u8 {
        self.entry().tc()
    }

    #[inline]
    pub fn bos(&self) -> bool {
        self.entry().bos()
    }

    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::ENTRY.end - 1]
    }

    /// The bytes after this entry.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> MplsHeader<T> {
    #[inline]
    pub fn set_entry(&mut self, e: LabelStackEntry) {
        set_u32(self.buffer.as_mut(), field::ENTRY, e.0)
    }

    #[inline]
    pub fn set_label(&mut self, label: u32) {
        self.set_entry(self.entry().with_label(label))
    }

    #[inline]
    pub fn set_tc(&mut self, tc: u8) {
        self.set_entry(self.entry().with_tc(tc))
    }

    #[inline]
    pub fn set_bos(&mut self, bos: bool) {
        self.set_entry(self.entry().with_bos(bos))
    }

    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::ENTRY.end - 1] = ttl
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// Iterates over the label stack at the start of `data`, top entry first,
/// through the bottom-of-stack entry (RFC 3032 section 2.1). If `data`
/// ends before an entry with S set, the last item is
/// `Err(MplsNoBottomOfStack)`. After the iteration,
/// [`rest`](LabelStack::rest) is the network-layer packet.
#[inline]
pub fn label_stack(data: &[u8]) -> LabelStack<'_> {
    LabelStack { data, done: false }
}

/// Number of entries in the label stack at the start of `data`, through
/// bottom of stack; the payload starts at `depth * HEADER_LEN`.
#[inline]
pub fn stack_depth(data: &[u8]) -> Result<usize> {
    let mut n = 0;
    for e in label_stack(data) {
        e?;
        n += 1;
    }
    Ok(n)
}

/// Iterator returned by [`label_stack`].
#[derive(Debug, Clone)]
pub struct LabelStack<'a> {
    data: &'a [u8],
    done: bool,
}

impl<'a> LabelStack<'a> {
    /// The bytes not yet consumed: after bottom of stack, the payload.
    #[inline]
    pub fn rest(&self) -> &'a [u8] {
        self.data
    }
}

impl Iterator for LabelStack<'_> {
    type Item = Result<LabelStackEntry>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match *self.data {
            [a, b, c, d, ref rest @ ..] => {
                let e = LabelStackEntry::from_bytes([a, b, c, d]);
                self.data = rest;
                self.done = e.bos();
                Some(Ok(e))
            }
            _ => {
                self.done = true;
                Some(Err(Error::MplsNoBottomOfStack))
            }
        }
    }
}

impl core::iter::FusedIterator for LabelStack<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ethernet::{EtherType, EthernetFrame};
    use crate::wire::ipv4::Ipv4Packet;
    use proptest::prelude::*;

    /// Captured spoke-to-hub frame: transport label 16004 over VPN label
    /// 24001 (TTL 63 each), carrying an ICMP echo request 10.1.0.5 ->
    /// 10.2.0.9.
    #[rustfmt::skip]
    const TWO_LABEL_FRAME: [u8; 106] = [
        0x00, 0x0c, 0x29, 0x8a, 0x11, 0x02, 0x00, 0x0c, 0x29, 0x4e, 0x7a, 0x01, 0x88, 0x47,
        0x03, 0xe8, 0x40, 0x3f,
        0x05, 0xdc, 0x11, 0x3f,
        0x45, 0x00, 0x00, 0x54, 0x1c, 0x46, 0x40, 0x00, 0x3f, 0x01, 0x0b, 0x53,
        0x0a, 0x01, 0x00, 0x05, 0x0a, 0x02, 0x00, 0x09,
        0x08, 0x00, 0x2c, 0xf6, 0x12, 0x34, 0x00, 0x01,
        0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
        0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f,
        0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f,
        0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47,
    ];

    #[test]
    fn golden_two_labels() {
        let eth = EthernetFrame::new_checked(&TWO_LABEL_FRAME[..]).unwrap();
        assert_eq!(eth.ethertype(), EtherType::MPLS_UNICAST);
        let top = MplsHeader::new_checked(eth.payload()).unwrap();
        assert_eq!(
            (top.label(), top.tc(), top.bos(), top.ttl()),
            (16004, 0, false, 63)
        );
        let vpn = MplsHeader::new_checked(top.payload()).unwrap();
        assert_eq!(
            (vpn.label(), vpn.tc(), vpn.bos(), vpn.ttl()),
            (24001, 0, true, 63)
        );

        let mut stack = label_stack(eth.payload());
        assert_eq!(
            stack.next(),
            Some(Ok(LabelStackEntry::new(16004, 0, false, 63)))
        );
        assert_eq!(
            stack.next(),
            Some(Ok(LabelStackEntry::new(24001, 0, true, 63)))
        );
        assert_eq!(stack.next(), None);
        assert_eq!(stack.rest(), vpn.payload());
        assert_eq!(stack_depth(eth.payload()), Ok(2));

        let ip = Ipv4Packet::new_checked(stack.rest()).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.ttl(), 63);
    }

    #[test]
    fn missing_bottom_of_stack() {
        let no_bos = &TWO_LABEL_FRAME[14..18];
        let items: Vec<_> = label_stack(no_bos).collect();
        assert_eq!(
            items,
            [
                Ok(LabelStackEntry::new(16004, 0, false, 63)),
                Err(Error::MplsNoBottomOfStack)
            ]
        );
        assert_eq!(
            stack_depth(&TWO_LABEL_FRAME[14..21]),
            Err(Error::MplsNoBottomOfStack)
        );
        assert_eq!(stack_depth(&[]), Err(Error::MplsNoBottomOfStack));
        assert_eq!(
            MplsHeader::new_checked(&[0u8; 3][..]).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn swap_and_push() {
        // Swap the transport label, then emit a fresh stack in front.
        let mut buf = TWO_LABEL_FRAME;
        let mut top = MplsHeader::new_checked(&mut buf[14..]).unwrap();
        top.set_label(16099);
        top.set_ttl(62);
        assert_eq!(top.entry(), LabelStackEntry::new(16099, 0, false, 62));
        assert_eq!(&buf[18..22], &TWO_LABEL_FRAME[18..22]);
        let e = LabelStackEntry::new(299_776, 5, true, 255);
        assert_eq!(e.to_bytes(), [0x49, 0x30, 0x0b, 0xff]);
        assert_eq!(LabelStackEntry::from_bytes(e.to_bytes()), e);
        assert_eq!(format!("{e:?}"), "LSE(label 299776 tc 5 S ttl 255)");
    }

    #[test]
    fn reserved_labels() {
        assert!(label::is_reserved(label::IMPLICIT_NULL));
        assert!(label::is_reserved(label::EXTENSION));
        assert!(!label::is_reserved(16));
        assert_eq!(LabelStackEntry::new(label::MAX + 1, 8, false, 0).label(), 0);
    }

    #[test]
    fn every_field_value_round_trips() {
        // Exhaustive per field on a background of all ones and all zeros.
        for bg in [
            LabelStackEntry::from_bits(0),
            LabelStackEntry::from_bits(u32::MAX),
        ] {
            for l in 0..=label::MAX {
                let e = bg.with_label(l);
                assert_eq!(
                    (e.label(), e.tc(), e.bos(), e.ttl()),
                    (l, bg.tc(), bg.bos(), bg.ttl())
                );
            }
            for tc in 0..8 {
                let e = bg.with_tc(tc);
                assert_eq!(
                    (e.label(), e.tc(), e.bos(), e.ttl()),
                    (bg.label(), tc, bg.bos(), bg.ttl())
                );
            }
            for ttl in 0..=255 {
                let e = bg.with_ttl(ttl);
                assert_eq!(
                    (e.label(), e.tc(), e.bos(), e.ttl()),
                    (bg.label(), bg.tc(), bg.bos(), ttl)
                );
            }
            for bos in [false, true] {
                let e = bg.with_bos(bos);
                assert_eq!(
                    (e.label(), e.tc(), e.bos(), e.ttl()),
                    (bg.label(), bg.tc(), bos, bg.ttl())
                );
            }
        }
    }

    proptest! {
        #[test]
        fn entry_get_set_round_trip(
            bits in any::<u32>(),
            l in 0..=label::MAX, tc in 0u8..8, bos in any::<bool>(), ttl in any::<u8>(),
        ) {
            let e = LabelStackEntry::new(l, tc, bos, ttl);
            prop_assert_eq!((e.label(), e.tc(), e.bos(), e.ttl()), (l, tc, bos, ttl));

            // Field setters on the view, one at a time, over a random entry.
            let mut buf = [0u8; 8];
            let mut h = MplsHeader::new_checked(&mut buf[..]).unwrap();
            h.set_entry(LabelStackEntry::from_bits(bits));
            let b = LabelStackEntry::from_bits(bits);
            h.set_label(l);
            prop_assert_eq!((h.label(), h.tc(), h.bos(), h.ttl()), (l, b.tc(), b.bos(), b.ttl()));
            h.set_tc(tc);
            prop_assert_eq!((h.label(), h.tc(), h.bos(), h.ttl()), (l, tc, b.bos(), b.ttl()));
            h.set_bos(bos);
            prop_assert_eq!((h.label(), h.tc(), h.bos(), h.ttl()), (l, tc, bos, b.ttl()));
            h.set_ttl(ttl);
            prop_assert_eq!(h.entry(), e);
            prop_assert_eq!(&buf[..4], &e.to_bytes());
            prop_assert_eq!(&buf[4..], &[0u8; 4]);
        }

        #[test]
        fn checked_never_panics(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(h) = MplsHeader::new_checked(&data[..]) {
                let _ = (h.entry(), h.label(), h.tc(), h.bos(), h.ttl(), h.payload().len());
            }
            let mut it = label_stack(&data);
            let mut consumed = 0;
            for item in it.by_ref() {
                match item {
                    Ok(_) => consumed += 4,
                    Err(e) => prop_assert_eq!(e, Error::MplsNoBottomOfStack),
                }
            }
            prop_assert_eq!(it.rest().len(), data.len() - consumed);
        }
    }
}
