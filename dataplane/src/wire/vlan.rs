//! IEEE 802.1Q VLAN tags (802.1Q-2018 section 9.6; S-TAGs of 802.1ad
//! share the format).
//!
//! The view starts *after* the TPID, which is the Ethernet type field the
//! caller has already read ([`EtherType::VLAN`] or [`EtherType::QINQ`]):
//! two bytes of TCI (PCP 3 bits, DEI 1 bit, VID 12 bits) and the
//! encapsulated EtherType, then the payload. For a single-tagged frame it
//! sits at offset 14, over `EthernetFrame::payload()`; for QinQ a second
//! view sits over the first one's payload.

use super::ethernet::EtherType;
use super::{get_u16, set_u16, Error, Result};

mod field {
    use core::ops::Range;

    pub const TCI: Range<usize> = 0..2;
    pub const ETHERTYPE: Range<usize> = 2..4;
    pub const PAYLOAD: usize = 4;
}

/// Length of a tag after its TPID.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// VID 0: the frame carries priority only (802.1Q section 9.6).
pub const VID_PRIORITY_TAGGED: u16 = 0;
/// VID 0xFFF: reserved, must not be configured or transmitted.
pub const VID_RESERVED: u16 = 0xfff;
pub const VID_MASK: u16 = 0x0fff;
const DEI_BIT: u16 = 0x1000;
const PCP_SHIFT: u32 = 13;

/// A read/write view of one VLAN tag (TCI and encapsulated EtherType).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    /// Wraps a buffer without checks; accessors panic if it is shorter
    /// than [`HEADER_LEN`].
    #[inline]
    pub const fn new_unchecked(buffer: T) -> VlanTag<T> {
        VlanTag { buffer }
    }

    /// Wraps a buffer of at least [`HEADER_LEN`] bytes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<VlanTag<T>> {
        let t = Self::new_unchecked(buffer);
        t.check_len()?;
        Ok(t)
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

    /// The whole tag control information.
    #[inline]
    pub fn tci(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::TCI)
    }

    /// Priority code point (802.1Q section 6.9.3), 0..=7.
    #[inline]
    pub fn pcp(&self) -> u8 {
        (self.tci() >> PCP_SHIFT) as u8
    }

    /// Drop eligible indicator.
    #[inline]
    pub fn dei(&self) -> bool {
        self.tci() & DEI_BIT != 0
    }

    /// VLAN identifier, 0..=4095.
    #[inline]
    pub fn vid(&self) -> u16 {
        self.tci() & VID_MASK
    }

    /// The EtherType of what the tag encapsulates.
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        EtherType(get_u16(self.buffer.as_ref(), field::ETHERTYPE))
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    #[inline]
    pub fn set_tci(&mut self, tci: u16) {
        set_u16(self.buffer.as_mut(), field::TCI, tci)
    }

    /// Sets the PCP; only the low three bits of `pcp` are used.
    #[inline]
    pub fn set_pcp(&mut self, pcp: u8) {
        self.set_tci((self.tci() & !(0x7 << PCP_SHIFT)) | (u16::from(pcp & 0x7) << PCP_SHIFT))
    }

    #[inline]
    pub fn set_dei(&mut self, dei: bool) {
        self.set_tci((self.tci() & !DEI_BIT) | if dei { DEI_BIT } else { 0 })
    }

    /// Sets the VID; only the low twelve bits of `vid` are used.
    #[inline]
    pub fn set_vid(&mut self, vid: u16) {
        self.set_tci((self.tci() & !VID_MASK) | (vid & VID_MASK))
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

/// The fields of a VLAN tag, for slow paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    pub pcp: u8,
    pub dei: bool,
    pub vid: u16,
    pub ethertype: EtherType,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(tag: &VlanTag<T>) -> Result<Repr> {
        tag.check_len()?;
        Ok(Repr {
            pcp: tag.pcp(),
            dei: tag.dei(),
            vid: tag.vid(),
            ethertype: tag.ethertype(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Out-of-range `pcp` / `vid` are masked to their field widths.
    ///
    /// # Panics
    /// If the buffer is shorter than [`HEADER_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, tag: &mut VlanTag<T>) {
        let tci = (u16::from(self.pcp & 0x7) << PCP_SHIFT)
            | if self.dei { DEI_BIT } else { 0 }
            | (self.vid & VID_MASK);
        tag.set_tci(tci);
        tag.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ethernet::EthernetFrame;
    use proptest::prelude::*;

    /// QinQ frame: S-TAG pcp 5 vid 300, C-TAG pcp 3 DEI vid 100, then the
    /// first bytes of an IPv4 header.
    #[rustfmt::skip]
    const QINQ_FRAME: [u8; 26] = [
        0x00, 0x1b, 0x21, 0x3a, 0x4f, 0x5c, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56,
        0x88, 0xa8, 0xa1, 0x2c, 0x81, 0x00,
        0x70, 0x64, 0x08, 0x00,
        0x45, 0x00, 0x00, 0x54,
    ];

    #[test]
    fn golden_qinq() {
        let eth = EthernetFrame::new_checked(&QINQ_FRAME[..]).unwrap();
        assert_eq!(eth.ethertype(), EtherType::QINQ);
        let s = VlanTag::new_checked(eth.payload()).unwrap();
        assert_eq!((s.pcp(), s.dei(), s.vid()), (5, false, 300));
        assert_eq!(s.ethertype(), EtherType::VLAN);
        let c = VlanTag::new_checked(s.payload()).unwrap();
        assert_eq!((c.pcp(), c.dei(), c.vid(), c.tci()), (3, true, 100, 0x7064));
        assert_eq!(c.ethertype(), EtherType::IPV4);
        assert_eq!(c.payload(), &[0x45, 0x00, 0x00, 0x54]);
    }

    #[test]
    fn repr_round_trip() {
        let tag = VlanTag::new_checked(&QINQ_FRAME[18..]).unwrap();
        let r = Repr::parse(&tag).unwrap();
        assert_eq!(
            r,
            Repr {
                pcp: 3,
                dei: true,
                vid: 100,
                ethertype: EtherType::IPV4
            }
        );
        let mut buf = [0u8; 4];
        r.emit(&mut VlanTag::new_unchecked(&mut buf[..]));
        assert_eq!(buf, QINQ_FRAME[18..22]);
    }

    #[test]
    fn short() {
        assert_eq!(
            VlanTag::new_checked(&[0u8; 3][..]).unwrap_err(),
            Error::Truncated
        );
    }

    proptest! {
        #[test]
        fn setters_leave_other_fields(tci in any::<u16>(), pcp in 0u8..8, dei in any::<bool>(), vid in 0u16..4096) {
            let mut buf = [0u8, 0, 0x08, 0x00];
            let mut t = VlanTag::new_unchecked(&mut buf[..]);
            t.set_tci(tci);
            t.set_pcp(pcp);
            prop_assert_eq!((t.pcp(), t.dei(), t.vid()), (pcp, tci & DEI_BIT != 0, tci & VID_MASK));
            t.set_dei(dei);
            prop_assert_eq!((t.pcp(), t.dei(), t.vid()), (pcp, dei, tci & VID_MASK));
            t.set_vid(vid);
            prop_assert_eq!((t.pcp(), t.dei(), t.vid()), (pcp, dei, vid));
            prop_assert_eq!(t.ethertype(), EtherType::IPV4);
        }

        #[test]
        fn checked_never_panics(data in proptest::collection::vec(any::<u8>(), 0..12)) {
            if let Ok(t) = VlanTag::new_checked(&data[..]) {
                let _ = (t.tci(), t.pcp(), t.dei(), t.vid(), t.ethertype(), t.payload().len());
                let r = Repr::parse(&t).unwrap();
                let mut out = data.clone();
                r.emit(&mut VlanTag::new_unchecked(&mut out[..]));
                prop_assert_eq!(out, data);
            }
        }
    }
}
