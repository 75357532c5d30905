//! IPv4 headers (RFC 791 section 3.1), with the receive checks of RFC 1812
//! section 5.2.2 and the incremental checksum update of RFC 1624.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version|  IHL  |   DSCP    |ECN|          Total Length         |
//! |         Identification        |Flags|      Fragment Offset    |
//! |  Time to Live |    Protocol   |         Header Checksum       |
//! |                       Source Address                          |
//! |                    Destination Address                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use core::fmt;
use std::net::Ipv4Addr;

use super::{checksum, get_u16, get_u32, set_u16, set_u32, Error, Result};

/// An IPv4 address in network byte order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ipv4Address(pub [u8; 4]);

impl Ipv4Address {
    pub const UNSPECIFIED: Ipv4Address = Ipv4Address([0; 4]);
    pub const BROADCAST: Ipv4Address = Ipv4Address([255; 4]);

    #[inline]
    pub const fn new(a: u8, b: u8, c: u8, d: u8) -> Ipv4Address {
        Ipv4Address([a, b, c, d])
    }

    /// Reads an address from the first four bytes of `data`.
    ///
    /// # Panics
    /// If `data` is shorter than four bytes.
    #[inline]
    pub fn from_bytes(data: &[u8]) -> Ipv4Address {
        Ipv4Address([data[0], data[1], data[2], data[3]])
    }

    /// From a host-order integer (the form the LPM tables use).
    #[inline]
    pub const fn from_u32(v: u32) -> Ipv4Address {
        Ipv4Address(v.to_be_bytes())
    }

    /// As a host-order integer.
    #[inline]
    pub const fn to_u32(self) -> u32 {
        u32::from_be_bytes(self.0)
    }

    #[inline]
    pub const fn as_bytes(&self) -> &[u8; 4] {
        &self.0
    }

    #[inline]
    pub const fn is_unspecified(&self) -> bool {
        self.to_u32() == 0
    }

    /// Limited broadcast, 255.255.255.255 (RFC 919).
    #[inline]
    pub const fn is_broadcast(&self) -> bool {
        self.to_u32() == u32::MAX
    }

    /// 224.0.0.0/4 (RFC 5771).
    #[inline]
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0xf0 == 224
    }

    /// 127.0.0.0/8 (RFC 1122 section 3.2.1.3).
    #[inline]
    pub const fn is_loopback(&self) -> bool {
        self.0[0] == 127
    }

    /// 169.254.0.0/16 (RFC 3927).
    #[inline]
    pub const fn is_link_local(&self) -> bool {
        self.0[0] == 169 && self.0[1] == 254
    }
}

impl fmt::Display for Ipv4Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{}.{}.{}.{}", b[0], b[1], b[2], b[3])
    }
}

impl fmt::Debug for Ipv4Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<Ipv4Addr> for Ipv4Address {
    fn from(a: Ipv4Addr) -> Self {
        Ipv4Address(a.octets())
    }
}

impl From<Ipv4Address> for Ipv4Addr {
    fn from(a: Ipv4Address) -> Self {
        Ipv4Addr::from(a.0)
    }
}

impl From<[u8; 4]> for Ipv4Address {
    fn from(a: [u8; 4]) -> Self {
        Ipv4Address(a)
    }
}

/// The protocol field (IANA "Assigned Internet Protocol Numbers"). A
/// newtype so unknown values pass through.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    pub const ICMP: IpProtocol = IpProtocol(1);
    pub const IGMP: IpProtocol = IpProtocol(2);
    pub const TCP: IpProtocol = IpProtocol(6);
    pub const UDP: IpProtocol = IpProtocol(17);
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ICMP => f.write_str("ICMP"),
            Self::IGMP => f.write_str("IGMP"),
            Self::TCP => f.write_str("TCP"),
            Self::UDP => f.write_str("UDP"),
            IpProtocol(v) => write!(f, "{v}"),
        }
    }
}

impl fmt::Debug for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

mod field {
    use core::ops::Range;

    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC_ADDR: Range<usize> = 12..16;
    pub const DST_ADDR: Range<usize> = 16..20;
    pub const OPTIONS: usize = 20;
}

/// Length of a header without options (IHL 5).
pub const HEADER_LEN: usize = field::OPTIONS;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_MASK: u16 = 0x1fff;

/// `d[start..end]`, shrunk to fit `d` instead of panicking.
#[inline(always)]
fn clamped(d: &[u8], start: usize, end: usize) -> &[u8] {
    let end = end.min(d.len());
    &d[start.min(end)..end]
}

#[inline(always)]
fn clamped_mut(d: &mut [u8], start: usize, end: usize) -> &mut [u8] {
    let end = end.min(d.len());
    &mut d[start.min(end)..end]
}

/// A read/write view of an IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without checks; fixed-header accessors panic if it is
    /// shorter than [`HEADER_LEN`].
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Ipv4Packet<T> {
        Ipv4Packet { buffer }
    }

    /// Wraps a buffer after the checks of [`check_len`](Self::check_len).
    /// The buffer may extend past the total length (Ethernet padding);
    /// [`payload`](Self::payload) stops at the total length.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Ipv4Packet<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// The RFC 1812 section 5.2.2 checks other than the checksum, in order,
    /// each with its own error: buffer >= 20 bytes, version 4, IHL >= 5,
    /// header within the buffer, total length >= header length, total
    /// length within the buffer.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 4 {
            return Err(Error::Ipv4Version);
        }
        let hl = self.header_len();
        if hl < HEADER_LEN {
            return Err(Error::Ipv4HeaderLenTooSmall);
        }
        if hl > len {
            return Err(Error::Ipv4HeaderLenTooLong);
        }
        let total = usize::from(self.total_len());
        if total < hl {
            return Err(Error::Ipv4TotalLenTooSmall);
        }
        if total > len {
            return Err(Error::Ipv4TotalLenTooLong);
        }
        Ok(())
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in 32-bit words.
    #[inline]
    pub fn ihl(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] & 0x0f
    }

    /// Header length in bytes.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.ihl()) * 4
    }

    /// Differentiated services code point (RFC 2474 section 3).
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    /// Explicit congestion notification (RFC 3168 section 5).
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    #[inline]
    pub fn total_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH)
    }

    #[inline]
    pub fn ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::IDENT)
    }

    #[inline]
    pub fn dont_frag(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_DF != 0
    }

    #[inline]
    pub fn more_frags(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_MF != 0
    }

    /// Fragment offset in bytes (the field counts 8-byte units).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (get_u16(self.buffer.as_ref(), field::FLG_OFF) & FRAG_MASK) << 3
    }

    /// MF set or a non-zero offset: some piece of a larger datagram.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLG_OFF) & (FLAG_MF | FRAG_MASK) != 0
    }

    #[inline]
    pub fn has_options(&self) -> bool {
        self.ihl() > 5
    }

    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    #[inline]
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::PROTOCOL])
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv4Address {
        Ipv4Address::from_u32(self.src_addr_u32())
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv4Address {
        Ipv4Address::from_u32(self.dst_addr_u32())
    }

    /// Source address as a host-order integer.
    #[inline]
    pub fn src_addr_u32(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::SRC_ADDR)
    }

    /// Destination address as a host-order integer, the LPM key.
    #[inline]
    pub fn dst_addr_u32(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::DST_ADDR)
    }

    /// The header, options included (clamped to the buffer).
    #[inline]
    pub fn header(&self) -> &[u8] {
        clamped(self.buffer.as_ref(), 0, self.header_len())
    }

    /// Options (RFC 791 section 3.1, "Options"), empty without.
    #[inline]
    pub fn options(&self) -> &[u8] {
        clamped(self.buffer.as_ref(), field::OPTIONS, self.header_len())
    }

    /// From the end of the header to the total length, without link-layer
    /// padding (clamped to the buffer).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        clamped(
            self.buffer.as_ref(),
            self.header_len(),
            usize::from(self.total_len()),
        )
    }

    /// RFC 791 section 3.1, "Header Checksum": the sum over the header,
    /// checksum included, is all ones.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.header()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Only the low four bits of `v` are used.
    #[inline]
    pub fn set_version(&mut self, v: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (v << 4)
    }

    /// Header length in 32-bit words; only the low four bits are used.
    #[inline]
    pub fn set_ihl(&mut self, ihl: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | (ihl & 0x0f)
    }

    /// Only the low six bits of `dscp` are used.
    #[inline]
    pub fn set_dscp(&mut self, dscp: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0x03) | (dscp << 2)
    }

    /// Only the low two bits of `ecn` are used.
    #[inline]
    pub fn set_ecn(&mut self, ecn: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0xfc) | (ecn & 0x03)
    }

    #[inline]
    pub fn set_total_len(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::LENGTH, v)
    }

    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::IDENT, v)
    }

    #[inline]
    pub fn set_dont_frag(&mut self, df: bool) {
        self.set_flag(FLAG_DF, df)
    }

    #[inline]
    pub fn set_more_frags(&mut self, mf: bool) {
        self.set_flag(FLAG_MF, mf)
    }

    #[inline]
    fn set_flag(&mut self, flag: u16, on: bool) {
        let v = get_u16(self.buffer.as_ref(), field::FLG_OFF);
        set_u16(
            self.buffer.as_mut(),
            field::FLG_OFF,
            if on { v | flag } else { v & !flag },
        )
    }

    /// Offset in bytes; the low three bits are dropped (8-byte units).
    #[inline]
    pub fn set_frag_offset(&mut self, bytes: u16) {
        let v = get_u16(self.buffer.as_ref(), field::FLG_OFF);
        set_u16(
            self.buffer.as_mut(),
            field::FLG_OFF,
            (v & !FRAG_MASK) | (bytes >> 3),
        )
    }

    #[inline]
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v
    }

    #[inline]
    pub fn set_protocol(&mut self, v: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = v.0
    }

    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, v)
    }

    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv4Address) {
        set_u32(self.buffer.as_mut(), field::SRC_ADDR, a.to_u32())
    }

    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv4Address) {
        set_u32(self.buffer.as_mut(), field::DST_ADDR, a.to_u32())
    }

    /// Computes the header checksum over the header (options included)
    /// and stores it.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.header());
        self.set_checksum(c)
    }

    /// Fixes the checksum after the caller changed one 16-bit header word
    /// (at an even offset) from `old` to `new`: RFC 1624 section 3, eqn. 3.
    #[inline]
    pub fn incremental_update(&mut self, old: u16, new: u16) {
        // 0xFFFF verifies as well as 0x0000 (both are zero in one's
        // complement) but only 0x0000 is what a sender computes. Eqn. 3
        // needs the computed form: from 0xFFFF, a change of 0xFFFF to
        // 0x0000 would give 0xFFFF where a recomputation gives 0x0000.
        let hc = match self.checksum() {
            0xffff => 0,
            hc => hc,
        };
        self.set_checksum(checksum::incremental_update(hc, old, new))
    }

    /// The forwarding step of RFC 1812 section 5.3.1: TTL minus one and the
    /// checksum fixed in place with RFC 1624 eqn. 3,
    /// `HC' = ~(~HC + ~m + m')`, where `m` is the TTL/protocol word. As
    /// `m' = m - 0x0100`, `~m + m'` is the constant `0xFEFF` and the update
    /// does not need the protocol byte. Matches a full recomputation,
    /// including when the result is `0x0000` (RFC 1624 section 3).
    ///
    /// Returns the new TTL. A TTL of 0 is left alone (returns 0): the
    /// caller drops packets with TTL <= 1 before forwarding them.
    #[inline]
    pub fn decrement_ttl_incremental(&mut self) -> u8 {
        let ttl = self.ttl();
        if ttl == 0 {
            return 0;
        }
        self.set_ttl(ttl - 1);
        // At most 0xffff + 0xfeff: one end-around carry folds it.
        let sum = u32::from(!self.checksum()) + 0xfeff;
        self.set_checksum(!(((sum & 0xffff) + (sum >> 16)) as u16));
        ttl - 1
    }

    /// Options, writable (clamped to the buffer).
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        clamped_mut(self.buffer.as_mut(), field::OPTIONS, hl)
    }

    /// Payload up to the total length, writable (clamped to the buffer).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, total) = (self.header_len(), usize::from(self.total_len()));
        clamped_mut(self.buffer.as_mut(), hl, total)
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Ipv4Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The fields of an unfragmented IPv4 header, for slow paths. Options are
/// not represented: `parse` skips them and `emit` writes IHL 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    pub src_addr: Ipv4Address,
    pub dst_addr: Ipv4Address,
    pub protocol: IpProtocol,
    pub payload_len: usize,
    pub ttl: u8,
    pub dscp: u8,
    pub ecn: u8,
    pub ident: u16,
    pub dont_frag: bool,
}

impl Repr {
    /// Parses a packet after the length checks and the checksum; refuses
    /// fragments ([`Error::Ipv4Fragment`]).
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv4Packet<T>) -> Result<Repr> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(Error::Ipv4Checksum);
        }
        if packet.is_fragment() {
            return Err(Error::Ipv4Fragment);
        }
        Ok(Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: usize::from(packet.total_len()) - packet.header_len(),
            ttl: packet.ttl(),
            dscp: packet.dscp(),
            ecn: packet.ecn(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
        })
    }

    /// Header length `emit` writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes a 20-byte header with its checksum; the payload is the
    /// caller's.
    ///
    /// # Panics
    /// If the buffer is shorter than [`HEADER_LEN`] or `payload_len`
    /// exceeds 65515.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv4Packet<T>) {
        let total =
            u16::try_from(HEADER_LEN + self.payload_len).expect("IPv4 total length above 65535");
        packet.set_version(4);
        packet.set_ihl(5);
        packet.set_dscp(self.dscp);
        packet.set_ecn(self.ecn);
        packet.set_total_len(total);
        packet.set_ident(self.ident);
        set_u16(
            packet.buffer.as_mut(),
            field::FLG_OFF,
            if self.dont_frag { FLAG_DF } else { 0 },
        );
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::golden::DHCP_DISCOVER;
    use proptest::prelude::*;

    fn discover_ip() -> &'static [u8] {
        &DHCP_DISCOVER[14..]
    }

    #[test]
    fn golden_dhcp_discover() {
        let p = Ipv4Packet::new_checked(discover_ip()).unwrap();
        assert_eq!((p.version(), p.ihl(), p.header_len()), (4, 5, 20));
        assert_eq!((p.dscp(), p.ecn()), (4, 0));
        assert_eq!(p.total_len(), 328);
        assert_eq!(p.ident(), 0);
        assert!(!p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 128);
        assert_eq!(p.protocol(), IpProtocol::UDP);
        assert_eq!(p.checksum(), 0x3996);
        assert!(p.verify_checksum());
        assert_eq!(p.src_addr(), Ipv4Address::UNSPECIFIED);
        assert!(p.dst_addr().is_broadcast());
        assert_eq!(p.dst_addr_u32(), 0xffff_ffff);
        assert!(!p.has_options());
        assert!(p.options().is_empty());
        assert_eq!(p.payload().len(), 308);
        assert_eq!(&p.payload()[..4], &[0x00, 0x44, 0x00, 0x43]);
    }

    #[test]
    fn repr_round_trip() {
        let p = Ipv4Packet::new_checked(discover_ip()).unwrap();
        let r = Repr::parse(&p).unwrap();
        assert_eq!(r.payload_len, 308);
        let mut buf = discover_ip().to_vec();
        buf[..20].fill(0);
        r.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, discover_ip());
    }

    #[test]
    fn padding_is_not_payload() {
        // A 46-byte Ethernet minimum payload holding a 28-byte datagram.
        let mut buf = [0u8; 46];
        let r = Repr {
            src_addr: Ipv4Address::new(10, 1, 0, 5),
            dst_addr: Ipv4Address::new(10, 2, 0, 9),
            protocol: IpProtocol::UDP,
            payload_len: 8,
            ttl: 64,
            dscp: 46,
            ecn: 1,
            ident: 0xbeef,
            dont_frag: true,
        };
        r.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]));
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.payload().len(), 8);
        assert_eq!(Repr::parse(&p), Ok(r));
        assert_eq!(p.src_addr().to_string(), "10.1.0.5");
        assert_eq!(Ipv4Addr::from(p.dst_addr()), Ipv4Addr::new(10, 2, 0, 9));
        assert_eq!(Ipv4Address::from_u32(p.src_addr_u32()), r.src_addr);
    }

    #[test]
    fn each_check_has_its_error() {
        let good = discover_ip();
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.to_vec();
            f(&mut b);
            Ipv4Packet::new_checked(b).err()
        };
        assert_eq!(with(&|b| b.truncate(19)), Some(Error::Truncated));
        assert_eq!(with(&|b| b[0] = 0x65), Some(Error::Ipv4Version));
        assert_eq!(with(&|b| b[0] = 0x44), Some(Error::Ipv4HeaderLenTooSmall));
        assert_eq!(
            with(&|b| {
                b[0] = 0x4f;
                b.truncate(59)
            }),
            Some(Error::Ipv4HeaderLenTooLong)
        );
        assert_eq!(
            with(&|b| b[2..4].copy_from_slice(&19u16.to_be_bytes())),
            Some(Error::Ipv4TotalLenTooSmall)
        );
        assert_eq!(with(&|b| b.truncate(327)), Some(Error::Ipv4TotalLenTooLong));
        assert_eq!(with(&|_| ()), None);

        let mut b = good.to_vec();
        b[8] = 1;
        assert_eq!(
            Repr::parse(&Ipv4Packet::new_unchecked(&b[..])),
            Err(Error::Ipv4Checksum)
        );
        let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
        p.set_more_frags(true);
        p.fill_checksum();
        assert_eq!(Repr::parse(&p), Err(Error::Ipv4Fragment));
    }

    #[test]
    fn setters() {
        let mut b = discover_ip().to_vec();
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_dscp(46);
        p.set_ecn(3);
        assert_eq!((p.dscp(), p.ecn()), (46, 3));
        p.set_ecn(0);
        assert_eq!((p.dscp(), p.ecn()), (46, 0));
        p.set_dont_frag(true);
        p.set_frag_offset(1480);
        assert!(p.dont_frag() && !p.more_frags() && p.is_fragment());
        assert_eq!(p.frag_offset(), 1480);
        p.set_more_frags(true);
        p.set_dont_frag(false);
        assert!(!p.dont_frag() && p.more_frags());
        assert_eq!(p.frag_offset(), 1480);
        p.set_ident(0x1234);
        p.set_ttl(7);
        p.set_protocol(IpProtocol::TCP);
        p.set_src_addr(Ipv4Address::new(192, 0, 2, 1));
        p.set_dst_addr(Ipv4Address::new(198, 51, 100, 2));
        assert_eq!(
            (p.ident(), p.ttl(), p.protocol()),
            (0x1234, 7, IpProtocol::TCP)
        );
        assert_eq!(p.src_addr_u32(), 0xc000_0201);
        assert_eq!(p.dst_addr(), Ipv4Address::new(198, 51, 100, 2));
        p.set_ihl(6);
        assert!(p.has_options());
        p.options_mut().copy_from_slice(&[1, 1, 1, 0]);
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert_eq!(p.payload().len(), 328 - 24);
        p.set_version(6);
        assert_eq!((p.version(), p.ihl()), (6, 6));
    }

    #[test]
    fn ttl_decrement_golden() {
        let mut b = discover_ip().to_vec();
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        assert_eq!(p.decrement_ttl_incremental(), 127);
        assert_eq!(p.checksum(), 0x3a96);
        assert!(p.verify_checksum());
        p.set_ttl(0);
        assert_eq!(p.decrement_ttl_incremental(), 0);
        assert_eq!(p.checksum(), 0x3a96);
    }

    #[test]
    fn after_any_setter_slices_do_not_panic() {
        let mut b = discover_ip()[..40].to_vec();
        b[2..4].copy_from_slice(&40u16.to_be_bytes());
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_ihl(15);
        p.set_total_len(0xffff);
        let _ = (
            p.header().len(),
            p.options().len(),
            p.payload().len(),
            p.verify_checksum(),
        );
        p.set_ihl(0);
        p.set_total_len(3);
        let _ = (
            p.header().len(),
            p.options().len(),
            p.payload().len(),
            p.verify_checksum(),
        );
        p.fill_checksum();
        let _ = (p.options_mut().len(), p.payload_mut().len());
    }

    #[test]
    fn incremental_from_negative_zero_checksum() {
        // Header whose other words sum to 0xffff, checksum stored as
        // 0xffff, and a word going from 0xffff to 0x0000.
        let mut fields = [0u8; 60];
        fields[12..14].fill(0xff);
        let mut b = header(&fields, 5, 64, 3);
        assert_eq!(&b[10..14], &[0xff, 0xff, 0xff, 0xff]);
        b[12..14].fill(0);
        let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
        p.incremental_update(0xffff, 0);
        assert!(p.verify_checksum());
        assert_eq!(p.checksum(), 0);
    }

    /// A valid header (20..=60 bytes) with `ttl`, built so that the checksum
    /// hits the RFC 1624 corner cases on demand: `mode` 1 makes the
    /// checksum *after* the decrement 0x0000, mode 2 makes the checksum
    /// before it 0x0000, mode 3 additionally stores that zero as 0xFFFF
    /// (which verifies too).
    fn header(fields: &[u8], ihl: u8, ttl: u8, mode: u8) -> Vec<u8> {
        let hl = usize::from(ihl) * 4;
        let mut b = fields[..hl].to_vec();
        b[0] = 0x40 | ihl;
        b[2..4].copy_from_slice(&(hl as u16).to_be_bytes());
        b[8] = ttl;
        b[10..12].fill(0);
        if mode != 0 {
            // Zero the ident, then pick it so the other words sum to 0xffff.
            b[4..6].fill(0);
            if mode == 1 {
                b[8] = ttl - 1;
            }
            let ident = 0xffff - checksum::data_sum(&b);
            b[4..6].copy_from_slice(&ident.to_be_bytes());
            b[8] = ttl;
        }
        let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
        p.fill_checksum();
        if mode == 3 {
            assert_eq!(p.checksum(), 0);
            p.set_checksum(0xffff);
        }
        assert!(p.verify_checksum());
        b
    }

    proptest! {
        #[test]
        fn checked_never_panics(data in proptest::collection::vec(any::<u8>(), 0..80), valid_prefix in any::<bool>()) {
            let mut data = data;
            if valid_prefix && !data.is_empty() {
                // Steer half the cases past the version check.
                data[0] = 0x40 | (data[0] & 0x0f);
                if data.len() >= 4 {
                    let l = (data[2] as usize * 256 + data[3] as usize) % (data.len() + 1);
                    data[2..4].copy_from_slice(&(l as u16).to_be_bytes());
                }
            }
            match Ipv4Packet::new_checked(&data[..]) {
                Ok(p) => {
                    let _ = (p.version(), p.ihl(), p.header_len(), p.dscp(), p.ecn(), p.total_len());
                    let _ = (p.ident(), p.dont_frag(), p.more_frags(), p.frag_offset(), p.is_fragment());
                    let _ = (p.has_options(), p.ttl(), p.protocol(), p.checksum());
                    let _ = (p.src_addr(), p.dst_addr(), p.src_addr_u32(), p.dst_addr_u32());
                    let _ = (p.header(), p.options(), p.payload(), p.verify_checksum());
                    prop_assert_eq!(p.header().len() + p.payload().len(), p.total_len() as usize);
                    if let Ok(r) = Repr::parse(&p) {
                        prop_assert_eq!(r.payload_len, p.payload().len());
                    }
                    let mut m = Ipv4Packet::new_unchecked(data.clone());
                    m.fill_checksum();
                    m.decrement_ttl_incremental();
                    prop_assert!(m.verify_checksum());
                    let _ = (m.payload_mut().len(), m.options_mut().len());
                }
                Err(e) => prop_assert!(matches!(
                    e,
                    Error::Truncated
                        | Error::Ipv4Version
                        | Error::Ipv4HeaderLenTooSmall
                        | Error::Ipv4HeaderLenTooLong
                        | Error::Ipv4TotalLenTooSmall
                        | Error::Ipv4TotalLenTooLong
                )),
            }
        }

        #[test]
        fn ttl_incremental_equals_recompute(
            fields in proptest::collection::vec(any::<u8>(), 60),
            ihl in 5u8..=15,
            ttl in 1u8..=255,
            mode in 0u8..4,
        ) {
            let mut b = header(&fields, ihl, ttl, mode);
            let mut full = b.clone();
            let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
            prop_assert_eq!(p.decrement_ttl_incremental(), ttl - 1);
            prop_assert!(p.verify_checksum());
            let mut q = Ipv4Packet::new_unchecked(&mut full[..]);
            q.set_ttl(ttl - 1);
            q.fill_checksum();
            prop_assert_eq!(p.checksum(), q.checksum());
            if mode == 1 {
                prop_assert_eq!(p.checksum(), 0);
            }
            // The generic eqn. 3 on the TTL/protocol word agrees.
            let m = u16::from_be_bytes([ttl, b[9]]);
            let hc = u16::from_be_bytes([full[10], full[11]]);
            let before = header(&fields, ihl, ttl, mode);
            let hc0 = u16::from_be_bytes([before[10], before[11]]);
            prop_assert_eq!(checksum::incremental_update(hc0, m, m - 0x100), hc);
        }

        #[test]
        fn generic_update_equals_recompute(
            fields in proptest::collection::vec(any::<u8>(), 60),
            ihl in 5u8..=15,
            ttl in 1u8..=255,
            mode in 0u8..4,
            word in 2usize..30,
            new in any::<u16>(),
        ) {
            let mut b = header(&fields, ihl, ttl, mode);
            // Any header word but version/IHL and the checksum itself.
            let k = word % (usize::from(ihl) * 2 - 2) + 1;
            let at = if k >= 5 { k + 1 } else { k } * 2;
            let old = u16::from_be_bytes([b[at], b[at + 1]]);
            b[at..at + 2].copy_from_slice(&new.to_be_bytes());
            let mut full = b.clone();
            let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
            p.incremental_update(old, new);
            let mut q = Ipv4Packet::new_unchecked(&mut full[..]);
            q.fill_checksum();
            prop_assert_eq!(p.checksum(), q.checksum());
        }
    }
}
