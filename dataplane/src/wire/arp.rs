//! ARP for IPv4 over Ethernet (RFC 826, "Packet format"; opcodes and
//! hardware types from the IANA ARP registry, RFC 5494).
//!
//! The view is fixed to the only combination this router speaks:
//! hardware type 1 (Ethernet, 6-byte addresses) and protocol type 0x0800
//! (IPv4, 4-byte addresses), so every field sits at a fixed offset.

use core::fmt;

use super::ethernet::{EtherType, EthernetAddress};
use super::ipv4::Ipv4Address;
use super::{get_u16, set_u16, Error, Result};

/// ar$op (RFC 826; RFC 5494 section 2).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Request,
    Reply,
    Unknown(u16),
}

impl From<u16> for Operation {
    fn from(v: u16) -> Self {
        match v {
            1 => Operation::Request,
            2 => Operation::Reply,
            v => Operation::Unknown(v),
        }
    }
}

impl From<Operation> for u16 {
    fn from(o: Operation) -> Self {
        match o {
            Operation::Request => 1,
            Operation::Reply => 2,
            Operation::Unknown(v) => v,
        }
    }
}

impl fmt::Debug for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Operation::Request => f.write_str("Request"),
            Operation::Reply => f.write_str("Reply"),
            Operation::Unknown(v) => write!(f, "Unknown({v})"),
        }
    }
}

/// ar$hrd for Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;

mod field {
    use core::ops::Range;

    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    // Ethernet/IPv4 only: hlen 6, plen 4.
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// Length of the fixed part (up to and including ar$op).
pub const FIXED_LEN: usize = field::SHA.start;
/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = field::TPA.end;

/// A read/write view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps a buffer without checks; accessors panic if it is shorter
    /// than [`PACKET_LEN`].
    #[inline]
    pub const fn new_unchecked(buffer: T) -> ArpPacket<T> {
        ArpPacket { buffer }
    }

    /// Wraps a buffer holding an ARP packet with 6-byte hardware and
    /// 4-byte protocol addresses.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<ArpPacket<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// `Truncated` if the fixed part or the addresses its lengths announce
    /// do not fit; `ArpUnsupported` if hlen/plen are not 6/4. Hardware and
    /// protocol types are left to the caller (or [`Repr::parse`]).
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let d = self.buffer.as_ref();
        if d.len() < FIXED_LEN {
            return Err(Error::Truncated);
        }
        let (hlen, plen) = (usize::from(d[field::HLEN]), usize::from(d[field::PLEN]));
        if d.len() < FIXED_LEN + 2 * (hlen + plen) {
            return Err(Error::Truncated);
        }
        if hlen != 6 || plen != 4 {
            return Err(Error::ArpUnsupported);
        }
        Ok(())
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// ar$hrd.
    #[inline]
    pub fn htype(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::HTYPE)
    }

    /// ar$pro.
    #[inline]
    pub fn ptype(&self) -> EtherType {
        EtherType(get_u16(self.buffer.as_ref(), field::PTYPE))
    }

    /// ar$hln.
    #[inline]
    pub fn hlen(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// ar$pln.
    #[inline]
    pub fn plen(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// ar$op.
    #[inline]
    pub fn oper(&self) -> Operation {
        Operation::from(get_u16(self.buffer.as_ref(), field::OPER))
    }

    /// ar$sha.
    #[inline]
    pub fn sha(&self) -> EthernetAddress {
        EthernetAddress::from_bytes(&self.buffer.as_ref()[field::SHA])
    }

    /// ar$spa.
    #[inline]
    pub fn spa(&self) -> Ipv4Address {
        Ipv4Address::from_bytes(&self.buffer.as_ref()[field::SPA])
    }

    /// ar$tha.
    #[inline]
    pub fn tha(&self) -> EthernetAddress {
        EthernetAddress::from_bytes(&self.buffer.as_ref()[field::THA])
    }

    /// ar$tpa.
    #[inline]
    pub fn tpa(&self) -> Ipv4Address {
        Ipv4Address::from_bytes(&self.buffer.as_ref()[field::TPA])
    }

    /// Ethernet hardware, IPv4 protocol: the only kind this router answers.
    #[inline]
    pub fn is_ethernet_ipv4(&self) -> bool {
        self.htype() == HTYPE_ETHERNET && self.ptype() == EtherType::IPV4
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    #[inline]
    pub fn set_htype(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::HTYPE, v)
    }

    #[inline]
    pub fn set_ptype(&mut self, v: EtherType) {
        set_u16(self.buffer.as_mut(), field::PTYPE, v.0)
    }

    #[inline]
    pub fn set_hlen(&mut self, v: u8) {
        self.buffer.as_mut()[field::HLEN] = v
    }

    #[inline]
    pub fn set_plen(&mut self, v: u8) {
        self.buffer.as_mut()[field::PLEN] = v
    }

    #[inline]
    pub fn set_oper(&mut self, v: Operation) {
        set_u16(self.buffer.as_mut(), field::OPER, v.into())
    }

    #[inline]
    pub fn set_sha(&mut self, a: EthernetAddress) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&a.0)
    }

    #[inline]
    pub fn set_spa(&mut self, a: Ipv4Address) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&a.0)
    }

    #[inline]
    pub fn set_tha(&mut self, a: EthernetAddress) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&a.0)
    }

    #[inline]
    pub fn set_tpa(&mut self, a: Ipv4Address) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&a.0)
    }
}

/// An Ethernet/IPv4 ARP request or reply, for the slow path that answers
/// for the router's own addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    pub operation: Operation,
    pub source_hardware_addr: EthernetAddress,
    pub source_protocol_addr: Ipv4Address,
    pub target_hardware_addr: EthernetAddress,
    pub target_protocol_addr: Ipv4Address,
}

impl Repr {
    /// `ArpUnsupported` unless Ethernet/IPv4, `ArpOperation` unless a
    /// request or a reply.
    pub fn parse<T: AsRef<[u8]>>(packet: &ArpPacket<T>) -> Result<Repr> {
        packet.check_len()?;
        if !packet.is_ethernet_ipv4() {
            return Err(Error::ArpUnsupported);
        }
        if let Operation::Unknown(_) = packet.oper() {
            return Err(Error::ArpOperation);
        }
        Ok(Repr {
            operation: packet.oper(),
            source_hardware_addr: packet.sha(),
            source_protocol_addr: packet.spa(),
            target_hardware_addr: packet.tha(),
            target_protocol_addr: packet.tpa(),
        })
    }

    /// The reply to this request from the owner of `our_mac`
    /// (RFC 826, "Packet Reception": swap the sender and target fields).
    pub fn reply(&self, our_mac: EthernetAddress) -> Repr {
        Repr {
            operation: Operation::Reply,
            source_hardware_addr: our_mac,
            source_protocol_addr: self.target_protocol_addr,
            target_hardware_addr: self.source_hardware_addr,
            target_protocol_addr: self.source_protocol_addr,
        }
    }

    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// # Panics
    /// If the buffer is shorter than [`PACKET_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut ArpPacket<T>) {
        packet.set_htype(HTYPE_ETHERNET);
        packet.set_ptype(EtherType::IPV4);
        packet.set_hlen(6);
        packet.set_plen(4);
        packet.set_oper(self.operation);
        packet.set_sha(self.source_hardware_addr);
        packet.set_spa(self.source_protocol_addr);
        packet.set_tha(self.target_hardware_addr);
        packet.set_tpa(self.target_protocol_addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ethernet::EthernetFrame;
    use proptest::prelude::*;

    /// Captured ARP request, who-has 192.168.1.1 tell 192.168.1.10, padded
    /// to the 60-byte Ethernet minimum.
    #[rustfmt::skip]
    const REQUEST_FRAME: [u8; 60] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x1b, 0x21, 0x3a, 0x4f, 0x5c, 0x08, 0x06,
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01,
        0x00, 0x1b, 0x21, 0x3a, 0x4f, 0x5c, 0xc0, 0xa8, 0x01, 0x0a,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0xa8, 0x01, 0x01,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    /// The reply from 192.168.1.1 at 52:54:00:ab:cd:ef.
    #[rustfmt::skip]
    const REPLY: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02,
        0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, 0xc0, 0xa8, 0x01, 0x01,
        0x00, 0x1b, 0x21, 0x3a, 0x4f, 0x5c, 0xc0, 0xa8, 0x01, 0x0a,
    ];

    const OUR_MAC: EthernetAddress = EthernetAddress([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);

    #[test]
    fn golden_request() {
        let eth = EthernetFrame::new_checked(&REQUEST_FRAME[..]).unwrap();
        assert_eq!(eth.ethertype(), EtherType::ARP);
        let p = ArpPacket::new_checked(eth.payload()).unwrap();
        assert_eq!(
            (p.htype(), p.ptype(), p.hlen(), p.plen()),
            (1, EtherType::IPV4, 6, 4)
        );
        assert_eq!(p.oper(), Operation::Request);
        assert_eq!(
            p.sha(),
            EthernetAddress([0x00, 0x1b, 0x21, 0x3a, 0x4f, 0x5c])
        );
        assert_eq!(p.spa(), Ipv4Address::new(192, 168, 1, 10));
        assert_eq!(p.tha(), EthernetAddress::ZERO);
        assert_eq!(p.tpa(), Ipv4Address::new(192, 168, 1, 1));
        assert!(p.is_ethernet_ipv4());
    }

    #[test]
    fn request_to_reply_round_trip() {
        let req = Repr::parse(&ArpPacket::new_checked(&REQUEST_FRAME[14..]).unwrap()).unwrap();
        let mut out = [0u8; PACKET_LEN];
        let mut p = ArpPacket::new_unchecked(&mut out[..]);
        req.emit(&mut p);
        assert_eq!(out, REQUEST_FRAME[14..42]);

        let reply = req.reply(OUR_MAC);
        reply.emit(&mut ArpPacket::new_unchecked(&mut out[..]));
        assert_eq!(out, REPLY);
        assert_eq!(
            Repr::parse(&ArpPacket::new_checked(&REPLY[..]).unwrap()),
            Ok(reply)
        );
    }

    #[test]
    fn refusals() {
        let body = &REQUEST_FRAME[14..];
        assert_eq!(
            ArpPacket::new_checked(&body[..7]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            ArpPacket::new_checked(&body[..27]).unwrap_err(),
            Error::Truncated
        );
        let mut b = REPLY;
        b[4] = 8;
        assert_eq!(
            ArpPacket::new_checked(&b[..]).unwrap_err(),
            Error::Truncated
        );
        b[4] = 6;
        b[5] = 16;
        let mut long = b.to_vec();
        long.resize(64, 0);
        assert_eq!(
            ArpPacket::new_checked(&long[..]).unwrap_err(),
            Error::ArpUnsupported
        );
        let mut b = REPLY;
        b[1] = 6; // IEEE 802 hardware type
        assert_eq!(
            Repr::parse(&ArpPacket::new_checked(&b[..]).unwrap()),
            Err(Error::ArpUnsupported)
        );
        let mut b = REPLY;
        b[7] = 3; // RARP request
        let p = ArpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.oper(), Operation::Unknown(3));
        assert_eq!(Repr::parse(&p), Err(Error::ArpOperation));
    }

    #[test]
    fn setters() {
        let mut b = REPLY;
        let mut p = ArpPacket::new_checked(&mut b[..]).unwrap();
        p.set_oper(Operation::Request);
        p.set_tha(EthernetAddress::BROADCAST);
        p.set_spa(Ipv4Address::new(10, 0, 0, 1));
        assert_eq!(p.oper(), Operation::Request);
        assert_eq!(p.tha(), EthernetAddress::BROADCAST);
        assert_eq!(p.spa(), Ipv4Address::new(10, 0, 0, 1));
        assert_eq!(p.sha(), OUR_MAC);
        assert_eq!(p.tpa(), Ipv4Address::new(192, 168, 1, 10));
        assert_eq!(u16::from(Operation::Unknown(9)), 9);
    }

    proptest! {
        #[test]
        fn checked_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64), steer in any::<bool>()) {
            let mut data = data;
            if steer && data.len() >= 6 {
                data[4] = 6;
                data[5] = 4;
            }
            if let Ok(p) = ArpPacket::new_checked(&data[..]) {
                let _ = (p.htype(), p.ptype(), p.hlen(), p.plen(), p.oper(), p.is_ethernet_ipv4());
                let _ = (p.sha(), p.spa(), p.tha(), p.tpa());
                if let Ok(r) = Repr::parse(&p) {
                    let mut out = data.clone();
                    r.emit(&mut ArpPacket::new_unchecked(&mut out[..]));
                    prop_assert_eq!(out, data);
                }
            }
        }
    }
}
