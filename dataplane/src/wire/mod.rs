//! Zero-copy typed views over packet headers, in the style of smoltcp's
//! `src/wire/`.
//!
//! Each layer has a view `Xxx<T: AsRef<[u8]>>` over a borrowed (or owned)
//! buffer, with field offsets as named ranges and one-line `#[inline]`
//! accessors that compile to loads at fixed offsets, and a `Repr` with
//! `parse` / `emit` for slow paths (control-plane injection, tests).
//!
//! Constructors come in two kinds:
//!
//! * `new_checked` validates everything the view's accessors rely on. After
//!   it returns `Ok`, no accessor panics, whatever the bytes, and neither
//!   does any accessor after any setter (variable-length slices such as
//!   `payload` clamp to the buffer instead of indexing past it).
//! * `new_unchecked` validates nothing; accessors panic if the buffer is
//!   shorter than the fixed header. Use it only where the length is already
//!   known (a frame this core just built, a header behind one already
//!   checked to be long enough).
//!
//! Errors are one flat, `Copy` enum so a worker can count each kind of
//! malformed packet in a plain array indexed by [`Error::index`].

use core::ops::Range;

pub mod arp;
pub mod checksum;
pub mod ethernet;
#[cfg(test)]
mod golden;
pub mod ipv4;
pub mod mpls;
pub mod udp;
pub mod vlan;

pub use arp::{ArpPacket, Operation as ArpOperation, Repr as ArpRepr};
pub use ethernet::{EtherType, EthernetAddress, EthernetFrame, Repr as EthernetRepr};
pub use ipv4::{IpProtocol, Ipv4Address, Ipv4Packet, Repr as Ipv4Repr};
pub use mpls::{LabelStack, LabelStackEntry, MplsHeader};
pub use udp::{Repr as UdpRepr, UdpPacket};
pub use vlan::{Repr as VlanRepr, VlanTag};

/// Why a buffer was refused. Each IPv4 check of RFC 1812 section 5.2.2 has
/// a variant of its own so the data plane can count them separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[repr(u8)]
pub enum Error {
    #[error("buffer shorter than the fixed header")]
    Truncated,
    #[error("IPv4 version field is not 4")]
    Ipv4Version,
    #[error("IPv4 header length (IHL) below 5 words")]
    Ipv4HeaderLenTooSmall,
    #[error("IPv4 header length (IHL) beyond the buffer")]
    Ipv4HeaderLenTooLong,
    #[error("IPv4 total length smaller than the header length")]
    Ipv4TotalLenTooSmall,
    #[error("IPv4 total length beyond the buffer")]
    Ipv4TotalLenTooLong,
    #[error("IPv4 header checksum mismatch")]
    Ipv4Checksum,
    #[error("IPv4 fragment (not representable here)")]
    Ipv4Fragment,
    #[error("MPLS label stack ends before a bottom-of-stack entry")]
    MplsNoBottomOfStack,
    #[error("ARP packet is not Ethernet/IPv4")]
    ArpUnsupported,
    #[error("ARP operation is neither request nor reply")]
    ArpOperation,
    #[error("UDP length below the 8-byte header")]
    UdpLenTooSmall,
    #[error("UDP length beyond the buffer")]
    UdpLenTooLong,
    #[error("UDP checksum mismatch")]
    UdpChecksum,
}

impl Error {
    /// Every variant, in `index` order.
    pub const ALL: [Error; 14] = [
        Error::Truncated,
        Error::Ipv4Version,
        Error::Ipv4HeaderLenTooSmall,
        Error::Ipv4HeaderLenTooLong,
        Error::Ipv4TotalLenTooSmall,
        Error::Ipv4TotalLenTooLong,
        Error::Ipv4Checksum,
        Error::Ipv4Fragment,
        Error::MplsNoBottomOfStack,
        Error::ArpUnsupported,
        Error::ArpOperation,
        Error::UdpLenTooSmall,
        Error::UdpLenTooLong,
        Error::UdpChecksum,
    ];
    /// Number of variants: the size of a per-error counter array.
    pub const COUNT: usize = Self::ALL.len();

    /// Dense index in `0..COUNT`, for per-core counter arrays.
    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }
}

pub type Result<T> = core::result::Result<T, Error>;

// Big-endian field access by named range. Ranges are constants, so after
// inlining these are loads/stores at fixed offsets. Each takes the field
// as one subslice so a lone accessor costs one bounds check (none once a
// checked constructor has been inlined into the same function); the
// array conversion of a slice of known length cannot fail.

#[inline(always)]
fn get_u16(d: &[u8], r: Range<usize>) -> u16 {
    let f: [u8; 2] = d[r.start..r.start + 2].try_into().unwrap_or_default();
    u16::from_be_bytes(f)
}

#[inline(always)]
fn set_u16(d: &mut [u8], r: Range<usize>, v: u16) {
    d[r.start..r.start + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline(always)]
fn get_u32(d: &[u8], r: Range<usize>) -> u32 {
    let f: [u8; 4] = d[r.start..r.start + 4].try_into().unwrap_or_default();
    u32::from_be_bytes(f)
}

#[inline(always)]
fn set_u32(d: &mut [u8], r: Range<usize>, v: u32) {
    d[r.start..r.start + 4].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_index_is_dense() {
        for (i, e) in Error::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
        }
        assert_eq!(Error::COUNT, 14);
    }

    /// Fails to compile when a variant is added without updating `ALL`'s
    /// neighbour here; the test above then checks the order.
    #[test]
    fn all_lists_every_variant() {
        for e in Error::ALL {
            let i = match e {
                Error::Truncated => 0,
                Error::Ipv4Version => 1,
                Error::Ipv4HeaderLenTooSmall => 2,
                Error::Ipv4HeaderLenTooLong => 3,
                Error::Ipv4TotalLenTooSmall => 4,
                Error::Ipv4TotalLenTooLong => 5,
                Error::Ipv4Checksum => 6,
                Error::Ipv4Fragment => 7,
                Error::MplsNoBottomOfStack => 8,
                Error::ArpUnsupported => 9,
                Error::ArpOperation => 10,
                Error::UdpLenTooSmall => 11,
                Error::UdpLenTooLong => 12,
                Error::UdpChecksum => 13,
            };
            assert_eq!(e.index(), i);
        }
    }
}
