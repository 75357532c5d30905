//! UDP datagrams (RFC 768), as far as the data plane needs them: to
//! recognise DHCP (RFC 2131 section 4.1) for the relay, and for the
//! control thread to build relayed packets.

use super::checksum;
use super::ipv4::{IpProtocol, Ipv4Address};
use super::{get_u16, set_u16, Error, Result};

/// BOOTP/DHCP server port (RFC 2131 section 4.1).
pub const DHCP_SERVER_PORT: u16 = 67;
/// BOOTP/DHCP client port (RFC 2131 section 4.1).
pub const DHCP_CLIENT_PORT: u16 = 68;

mod field {
    use core::ops::Range;

    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
    pub const PAYLOAD: usize = 8;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// A read/write view of a UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps a buffer without checks; accessors panic if it is shorter
    /// than [`HEADER_LEN`].
    #[inline]
    pub const fn new_unchecked(buffer: T) -> UdpPacket<T> {
        UdpPacket { buffer }
    }

    /// Wraps a buffer whose length field is at least 8 and within the
    /// buffer. Pass the IPv4 payload (which stops at the IPv4 total
    /// length), not the rest of the frame.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<UdpPacket<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let l = usize::from(self.len());
        if l < HEADER_LEN {
            return Err(Error::UdpLenTooSmall);
        }
        if l > len {
            return Err(Error::UdpLenTooLong);
        }
        Ok(())
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// The length field: header and data, in bytes.
    #[inline]
    pub fn len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// True when the datagram carries no data.
    #[inline]
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Data up to the length field (clamped to the buffer).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let d = self.buffer.as_ref();
        let end = usize::from(self.len()).min(d.len());
        &d[HEADER_LEN.min(end)..end]
    }

    /// The datagram as the length field bounds it (clamped to the buffer).
    #[inline]
    fn datagram(&self) -> &[u8] {
        let d = self.buffer.as_ref();
        &d[..usize::from(self.len()).min(d.len())]
    }

    /// RFC 768 "Fields": the sum over the pseudo-header and the datagram
    /// is all ones. A zero checksum field means the sender computed none,
    /// which IPv4 allows, and verifies.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv4Address, dst: Ipv4Address) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let ph = checksum::pseudo_header_v4(src.0, dst.0, IpProtocol::UDP.0, self.len());
        checksum::add(ph, checksum::data_sum(self.datagram())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::SRC_PORT, v)
    }

    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::DST_PORT, v)
    }

    #[inline]
    pub fn set_len(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::LENGTH, v)
    }

    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, v)
    }

    /// Data up to the length field, writable (clamped to the buffer).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let l = usize::from(self.len());
        let d = self.buffer.as_mut();
        let end = l.min(d.len());
        &mut d[HEADER_LEN.min(end)..end]
    }

    /// Computes and stores the checksum over the pseudo-header and the
    /// datagram; a computed zero is sent as 0xFFFF (RFC 768 "Fields").
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv4Address, dst: Ipv4Address) {
        self.set_checksum(0);
        let ph = checksum::pseudo_header_v4(src.0, dst.0, IpProtocol::UDP.0, self.len());
        let c = !checksum::add(ph, checksum::data_sum(self.datagram()));
        self.set_checksum(if c == 0 { 0xffff } else { c })
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for UdpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A UDP header, for slow paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload_len: usize,
}

impl Repr {
    /// Parses after the length checks and the checksum
    /// ([`Error::UdpChecksum`]).
    pub fn parse<T: AsRef<[u8]>>(
        packet: &UdpPacket<T>,
        src: Ipv4Address,
        dst: Ipv4Address,
    ) -> Result<Repr> {
        packet.check_len()?;
        if !packet.verify_checksum(src, dst) {
            return Err(Error::UdpChecksum);
        }
        Ok(Repr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: usize::from(packet.len()) - HEADER_LEN,
        })
    }

    /// Header and payload length `emit` writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the header, lets `emit_payload` fill the `payload_len` data
    /// bytes, then fills the checksum.
    ///
    /// # Panics
    /// If the buffer is shorter than [`buffer_len`](Self::buffer_len) or
    /// that exceeds 65535.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut UdpPacket<T>,
        src: Ipv4Address,
        dst: Ipv4Address,
        emit_payload: impl FnOnce(&mut [u8]),
    ) {
        let len = u16::try_from(self.buffer_len()).expect("UDP length above 65535");
        assert!(
            packet.buffer.as_ref().len() >= self.buffer_len(),
            "buffer shorter than the UDP datagram"
        );
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(len);
        emit_payload(packet.payload_mut());
        packet.fill_checksum(src, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::golden::DHCP_DISCOVER;
    use crate::wire::ipv4::Ipv4Packet;
    use proptest::prelude::*;

    #[test]
    fn golden_dhcp_discover() {
        let ip = Ipv4Packet::new_checked(&DHCP_DISCOVER[14..]).unwrap();
        let u = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(
            (u.src_port(), u.dst_port()),
            (DHCP_CLIENT_PORT, DHCP_SERVER_PORT)
        );
        assert_eq!(u.len(), 308);
        assert_eq!(u.checksum(), 0x8e71);
        assert!(u.verify_checksum(ip.src_addr(), ip.dst_addr()));
        assert!(!u.verify_checksum(ip.src_addr(), Ipv4Address::new(10, 0, 0, 1)));
        assert_eq!(u.payload().len(), 300);
        // BOOTREQUEST, Ethernet, hlen 6; the magic cookie at 236.
        assert_eq!(&u.payload()[..3], &[1, 1, 6]);
        assert_eq!(&u.payload()[236..240], &[0x63, 0x82, 0x53, 0x63]);
    }

    #[test]
    fn repr_round_trip() {
        let ip = Ipv4Packet::new_checked(&DHCP_DISCOVER[14..]).unwrap();
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let u = UdpPacket::new_checked(ip.payload()).unwrap();
        let r = Repr::parse(&u, src, dst).unwrap();
        assert_eq!(
            r,
            Repr {
                src_port: 68,
                dst_port: 67,
                payload_len: 300
            }
        );
        let mut out = vec![0u8; r.buffer_len()];
        r.emit(&mut UdpPacket::new_unchecked(&mut out[..]), src, dst, |p| {
            p.copy_from_slice(u.payload())
        });
        assert_eq!(&out[..], ip.payload());
    }

    #[test]
    fn refusals_and_zero_checksum() {
        let mut b = DHCP_DISCOVER[34..].to_vec();
        assert_eq!(
            UdpPacket::new_checked(&b[..7]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            UdpPacket::new_checked(&b[..307]).unwrap_err(),
            Error::UdpLenTooLong
        );
        b[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(
            UdpPacket::new_checked(&b[..]).unwrap_err(),
            Error::UdpLenTooSmall
        );

        let mut b = DHCP_DISCOVER[34..].to_vec();
        b[100] ^= 1;
        let (s, d) = (Ipv4Address::UNSPECIFIED, Ipv4Address::BROADCAST);
        let u = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&u, s, d), Err(Error::UdpChecksum));
        let mut u = UdpPacket::new_checked(&mut b[..]).unwrap();
        u.set_checksum(0);
        assert!(u.verify_checksum(s, d));
        u.fill_checksum(s, d);
        assert!(u.verify_checksum(s, d) && u.checksum() != 0);
    }

    #[test]
    fn computed_zero_is_sent_as_ones() {
        // Choose the source port so the datagram sums to 0xffff: the
        // computed checksum is then 0 and must go out as 0xffff.
        let (s, d) = (Ipv4Address::new(10, 0, 0, 1), Ipv4Address::new(10, 0, 0, 2));
        let mut b = [0u8, 0, 0, 67, 0, 10, 0, 0, 0xab, 0xcd];
        let ph = checksum::pseudo_header_v4(s.0, d.0, 17, 10);
        let port = 0xffff - checksum::add(ph, checksum::data_sum(&b));
        b[..2].copy_from_slice(&port.to_be_bytes());
        let mut u = UdpPacket::new_checked(&mut b[..]).unwrap();
        u.fill_checksum(s, d);
        assert_eq!(u.checksum(), 0xffff);
        assert!(u.verify_checksum(s, d));
    }

    #[test]
    fn setters() {
        let mut b = [0u8; 12];
        let mut u = UdpPacket::new_unchecked(&mut b[..]);
        u.set_src_port(4500);
        u.set_dst_port(DHCP_SERVER_PORT);
        u.set_len(12);
        u.payload_mut().copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!((u.src_port(), u.dst_port(), u.len()), (4500, 67, 12));
        assert_eq!(u.payload(), &[1, 2, 3, 4]);
        assert!(!u.is_empty());
    }

    proptest! {
        #[test]
        fn checked_never_panics(data in proptest::collection::vec(any::<u8>(), 0..40), steer in any::<bool>()) {
            let mut data = data;
            if steer && data.len() >= 8 {
                let l = 8 + usize::from(data[5]) % (data.len() - 7);
                data[4..6].copy_from_slice(&(l as u16).to_be_bytes());
            }
            if let Ok(u) = UdpPacket::new_checked(&data[..]) {
                let _ = (u.src_port(), u.dst_port(), u.len(), u.is_empty(), u.checksum());
                prop_assert_eq!(u.payload().len() + HEADER_LEN, usize::from(u.len()));
                let (s, d) = (Ipv4Address::new(10, 0, 0, 1), Ipv4Address::BROADCAST);
                let _ = u.verify_checksum(s, d);
                let mut m = UdpPacket::new_unchecked(data.clone());
                m.fill_checksum(s, d);
                prop_assert!(m.verify_checksum(s, d));
                prop_assert!(Repr::parse(&m, s, d).is_ok());
            }
        }
    }
}
