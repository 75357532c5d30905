//! Ethernet II frames (IEEE 802.3 clause 3.2.6, type interpretation;
//! RFC 894 for IPv4 over Ethernet).

use core::fmt;

use super::{get_u16, set_u16, Error, Result};

/// A 48-bit MAC address (IEEE 802).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EthernetAddress(pub [u8; 6]);

impl EthernetAddress {
    pub const BROADCAST: EthernetAddress = EthernetAddress([0xff; 6]);
    pub const ZERO: EthernetAddress = EthernetAddress([0; 6]);

    /// Reads an address from the first six bytes of `data`.
    ///
    /// # Panics
    /// If `data` is shorter than six bytes.
    #[inline]
    pub fn from_bytes(data: &[u8]) -> EthernetAddress {
        let mut a = [0; 6];
        a.copy_from_slice(&data[..6]);
        EthernetAddress(a)
    }

    #[inline]
    pub const fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }

    #[inline]
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Group bit: the least significant bit of the first octet. Broadcast
    /// is a multicast address too.
    #[inline]
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    #[inline]
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// Locally administered bit: the second least significant bit of the
    /// first octet.
    #[inline]
    pub const fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl fmt::Display for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<[u8; 6]> for EthernetAddress {
    fn from(a: [u8; 6]) -> Self {
        EthernetAddress(a)
    }
}

/// The EtherType / TPID field. A newtype rather than an enum so unknown
/// values pass through and the fast path compares plain `u16`s.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EtherType(pub u16);

impl EtherType {
    pub const IPV4: EtherType = EtherType(0x0800);
    pub const ARP: EtherType = EtherType(0x0806);
    /// IEEE 802.1Q customer tag (C-TAG) TPID.
    pub const VLAN: EtherType = EtherType(0x8100);
    /// IEEE 802.1ad service tag (S-TAG) TPID, "QinQ".
    pub const QINQ: EtherType = EtherType(0x88a8);
    pub const IPV6: EtherType = EtherType(0x86dd);
    /// RFC 3032 section 5.
    pub const MPLS_UNICAST: EtherType = EtherType(0x8847);
    /// RFC 5332 section 4 (formerly "MPLS multicast").
    pub const MPLS_MULTICAST: EtherType = EtherType(0x8848);

    /// A VLAN tag follows (C-TAG or S-TAG).
    #[inline]
    pub const fn is_vlan(self) -> bool {
        self.0 == Self::VLAN.0 || self.0 == Self::QINQ.0
    }

    #[inline]
    pub const fn is_mpls(self) -> bool {
        self.0 == Self::MPLS_UNICAST.0 || self.0 == Self::MPLS_MULTICAST.0
    }
}

impl From<u16> for EtherType {
    fn from(v: u16) -> Self {
        EtherType(v)
    }
}

impl From<EtherType> for u16 {
    fn from(v: EtherType) -> Self {
        v.0
    }
}

impl fmt::Display for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::IPV4 => f.write_str("IPv4"),
            Self::ARP => f.write_str("ARP"),
            Self::VLAN => f.write_str("802.1Q"),
            Self::QINQ => f.write_str("802.1ad"),
            Self::IPV6 => f.write_str("IPv6"),
            Self::MPLS_UNICAST => f.write_str("MPLS"),
            Self::MPLS_MULTICAST => f.write_str("MPLS-MC"),
            EtherType(v) => write!(f, "0x{v:04x}"),
        }
    }
}

impl fmt::Debug for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

mod field {
    use core::ops::Range;

    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    pub const PAYLOAD: usize = 14;
}

/// Length of the Ethernet II header (no FCS: NICs strip it).
pub const HEADER_LEN: usize = field::PAYLOAD;

/// A read/write view of an Ethernet II frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps a buffer without checks; accessors panic if it is shorter
    /// than [`HEADER_LEN`].
    #[inline]
    pub const fn new_unchecked(buffer: T) -> EthernetFrame<T> {
        EthernetFrame { buffer }
    }

    /// Wraps a buffer of at least [`HEADER_LEN`] bytes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<EthernetFrame<T>> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// `Err(Truncated)` if the buffer cannot hold the header.
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
    pub const fn header_len() -> usize {
        HEADER_LEN
    }

    #[inline]
    pub fn dst_addr(&self) -> EthernetAddress {
        EthernetAddress::from_bytes(&self.buffer.as_ref()[field::DESTINATION])
    }

    #[inline]
    pub fn src_addr(&self) -> EthernetAddress {
        EthernetAddress::from_bytes(&self.buffer.as_ref()[field::SOURCE])
    }

    #[inline]
    pub fn ethertype(&self) -> EtherType {
        EtherType(get_u16(self.buffer.as_ref(), field::ETHERTYPE))
    }

    /// Everything after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    #[inline]
    pub fn set_dst_addr(&mut self, a: EthernetAddress) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&a.0)
    }

    #[inline]
    pub fn set_src_addr(&mut self, a: EthernetAddress) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&a.0)
    }

    #[inline]
    pub fn set_ethertype(&mut self, t: EtherType) {
        set_u16(self.buffer.as_mut(), field::ETHERTYPE, t.0)
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for EthernetFrame<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The header fields of an Ethernet II frame, for slow paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    pub src_addr: EthernetAddress,
    pub dst_addr: EthernetAddress,
    pub ethertype: EtherType,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(frame: &EthernetFrame<T>) -> Result<Repr> {
        frame.check_len()?;
        Ok(Repr {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            ethertype: frame.ethertype(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// # Panics
    /// If the frame is shorter than [`HEADER_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut EthernetFrame<T>) {
        frame.set_src_addr(self.src_addr);
        frame.set_dst_addr(self.dst_addr);
        frame.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Captured ARP request, who-has 192.168.1.1 tell 192.168.1.10,
    /// padded to the 60-byte minimum.
    #[rustfmt::skip]
    const ARP_FRAME: [u8; 60] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x1b, 0x21, 0x3a, 0x4f, 0x5c, 0x08, 0x06,
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01,
        0x00, 0x1b, 0x21, 0x3a, 0x4f, 0x5c, 0xc0, 0xa8, 0x01, 0x0a,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0xa8, 0x01, 0x01,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn golden_arp_frame() {
        let f = EthernetFrame::new_checked(&ARP_FRAME[..]).unwrap();
        assert!(f.dst_addr().is_broadcast());
        assert!(f.dst_addr().is_multicast());
        assert_eq!(
            f.src_addr(),
            EthernetAddress([0x00, 0x1b, 0x21, 0x3a, 0x4f, 0x5c])
        );
        assert!(f.src_addr().is_unicast());
        assert_eq!(f.ethertype(), EtherType::ARP);
        assert_eq!(f.payload().len(), 46);
        assert_eq!(&f.payload()[..4], &[0x00, 0x01, 0x08, 0x00]);
    }

    #[test]
    fn repr_round_trip() {
        let f = EthernetFrame::new_checked(&ARP_FRAME[..]).unwrap();
        let r = Repr::parse(&f).unwrap();
        let mut buf = [0u8; 60];
        buf[14..].copy_from_slice(&ARP_FRAME[14..]);
        let mut out = EthernetFrame::new_unchecked(&mut buf[..]);
        r.emit(&mut out);
        assert_eq!(buf, ARP_FRAME);
        assert_eq!(r.buffer_len(), 14);
    }

    #[test]
    fn setters() {
        let mut buf = ARP_FRAME;
        let mut f = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        let a = EthernetAddress([0x02, 0, 0, 0, 0, 1]);
        f.set_dst_addr(a);
        f.set_src_addr(EthernetAddress::BROADCAST);
        f.set_ethertype(EtherType::MPLS_UNICAST);
        f.payload_mut()[0] = 0xaa;
        assert_eq!(f.dst_addr(), a);
        assert!(a.is_local() && a.is_unicast());
        assert_eq!(f.src_addr(), EthernetAddress::BROADCAST);
        assert!(f.ethertype().is_mpls());
        assert_eq!(&buf[12..15], &[0x88, 0x47, 0xaa]);
    }

    #[test]
    fn short_and_display() {
        assert_eq!(
            EthernetFrame::new_checked(&ARP_FRAME[..13]).unwrap_err(),
            Error::Truncated
        );
        assert!(EthernetFrame::new_checked(&ARP_FRAME[..14])
            .unwrap()
            .payload()
            .is_empty());
        let a = EthernetAddress([0x00, 0x1b, 0x21, 0x3a, 0x4f, 0x5c]);
        assert_eq!(a.to_string(), "00:1b:21:3a:4f:5c");
        assert_eq!(EtherType::QINQ.to_string(), "802.1ad");
        assert_eq!(EtherType(0x1234).to_string(), "0x1234");
        assert!(EtherType::VLAN.is_vlan() && EtherType::QINQ.is_vlan());
    }

    proptest! {
        #[test]
        fn checked_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(f) = EthernetFrame::new_checked(&data[..]) {
                let _ = (f.dst_addr(), f.src_addr(), f.ethertype(), f.payload().len());
                let r = Repr::parse(&f).unwrap();
                let mut out = data.clone();
                r.emit(&mut EthernetFrame::new_unchecked(&mut out[..]));
                prop_assert_eq!(out, data);
            } else {
                prop_assert!(data.len() < HEADER_LEN);
            }
        }
    }
}
