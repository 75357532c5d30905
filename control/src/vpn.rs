//! VPN identifiers as the configuration writes them: route distinguishers
//! (RFC 4364 section 4.2) and route targets (RFC 4364 section 4.3.1, as
//! the extended communities of RFC 4360 section 4 and RFC 5668).
//!
//! Both take the usual text forms, `ADMIN:NUMBER`, whose administrator
//! field picks the type: a 2-byte AS number (type 0, 4-byte number), an
//! IPv4 address (type 1, 2-byte number), or a 4-byte AS number (type 2,
//! 2-byte number; an AS above 65535, or written `N.N` in asdot). The
//! BGP speaker encodes them with its codec; these are the validated
//! values and their wire bytes for tests and `show`.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// The administrator and assigned number of an RD or RT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VpnId {
    /// Type 0: 2-byte AS, 4-byte number.
    As2 { asn: u16, number: u32 },
    /// Type 1: IPv4 address, 2-byte number.
    Ipv4 { addr: Ipv4Addr, number: u16 },
    /// Type 2: 4-byte AS, 2-byte number.
    As4 { asn: u32, number: u16 },
}

impl VpnId {
    /// The type code (RFC 4364 section 4.2; the high-order byte of the
    /// extended community type in RFC 4360).
    pub fn kind(&self) -> u8 {
        match self {
            VpnId::As2 { .. } => 0,
            VpnId::Ipv4 { .. } => 1,
            VpnId::As4 { .. } => 2,
        }
    }

    /// The 6 value bytes after the type.
    fn value(&self) -> [u8; 6] {
        let mut v = [0u8; 6];
        match *self {
            VpnId::As2 { asn, number } => {
                v[..2].copy_from_slice(&asn.to_be_bytes());
                v[2..].copy_from_slice(&number.to_be_bytes());
            }
            VpnId::Ipv4 { addr, number } => {
                v[..4].copy_from_slice(&addr.octets());
                v[4..].copy_from_slice(&number.to_be_bytes());
            }
            VpnId::As4 { asn, number } => {
                v[..4].copy_from_slice(&asn.to_be_bytes());
                v[4..].copy_from_slice(&number.to_be_bytes());
            }
        }
        v
    }

    /// As a route distinguisher: 2-byte type, 6-byte value.
    pub fn rd_bytes(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[1] = self.kind();
        b[2..].copy_from_slice(&self.value());
        b
    }

    /// As a route-target extended community: type (transitive, by
    /// administrator), sub-type 0x02 (route target), 6-byte value.
    pub fn rt_bytes(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.kind();
        b[1] = 0x02;
        b[2..].copy_from_slice(&self.value());
        b
    }
}

impl FromStr for VpnId {
    type Err = String;

    fn from_str(s: &str) -> Result<VpnId, String> {
        let bad =
            || format!("{s:?} is not ADMIN:NUMBER (e.g. 65000:1, 192.0.2.1:7 or 4200000000:7)");
        let (admin, number) = s.rsplit_once(':').ok_or_else(bad)?;
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(number) {
            return Err(bad());
        }
        let number: u64 = number.parse().map_err(|_| bad())?;
        let small = |n: u64| {
            u16::try_from(n).map_err(|_| {
                format!("{s:?}: the number {n} is over 65535, the most this administrator type leaves room for")
            })
        };
        if admin.contains('.') && admin.matches('.').count() == 3 {
            let addr: Ipv4Addr = admin
                .parse()
                .map_err(|_| format!("{s:?}: {admin:?} is not an IPv4 address"))?;
            return Ok(VpnId::Ipv4 {
                addr,
                number: small(number)?,
            });
        }
        // asdot (RFC 5396): HIGH.LOW.
        let asn: u64 = match admin.split_once('.') {
            Some((hi, lo)) if digits(hi) && digits(lo) => {
                let (hi, lo): (u64, u64) = (
                    hi.parse().map_err(|_| bad())?,
                    lo.parse().map_err(|_| bad())?,
                );
                if hi > 65535 || lo > 65535 {
                    return Err(format!("{s:?}: {admin:?} is not an asdot AS number"));
                }
                hi << 16 | lo
            }
            _ if digits(admin) => admin.parse().map_err(|_| bad())?,
            _ => return Err(bad()),
        };
        if asn == 0 {
            return Err(format!("{s:?}: AS 0 is reserved (RFC 7607)"));
        }
        match (u16::try_from(asn), u32::try_from(number)) {
            (Ok(asn), Ok(number)) if !admin.contains('.') => Ok(VpnId::As2 { asn, number }),
            _ => Ok(VpnId::As4 {
                asn: u32::try_from(asn)
                    .map_err(|_| format!("{s:?}: AS {asn} is over 4294967295"))?,
                number: small(number)?,
            }),
        }
    }
}

impl fmt::Display for VpnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VpnId::As2 { asn, number } => write!(f, "{asn}:{number}"),
            VpnId::Ipv4 { addr, number } => write!(f, "{addr}:{number}"),
            VpnId::As4 { asn, number } => write!(f, "{asn}:{number}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_form_picks_its_type_and_encodes_per_rfc_4364() {
        let rd: VpnId = "65000:100".parse().unwrap();
        assert_eq!(
            rd,
            VpnId::As2 {
                asn: 65000,
                number: 100
            }
        );
        assert_eq!(rd.rd_bytes(), [0, 0, 0xfd, 0xe8, 0, 0, 0, 100]);
        assert_eq!(rd.rt_bytes(), [0x00, 0x02, 0xfd, 0xe8, 0, 0, 0, 100]);
        let rd: VpnId = "192.0.2.1:7".parse().unwrap();
        assert_eq!(rd.rd_bytes(), [0, 1, 192, 0, 2, 1, 0, 7]);
        assert_eq!(rd.rt_bytes(), [0x01, 0x02, 192, 0, 2, 1, 0, 7]);
        let rd: VpnId = "4200000000:7".parse().unwrap();
        assert_eq!(
            rd,
            VpnId::As4 {
                asn: 4_200_000_000,
                number: 7
            }
        );
        assert_eq!(rd.rd_bytes(), [0, 2, 0xfa, 0x56, 0xea, 0x00, 0, 7]);
        // asdot is a 4-byte AS even when small.
        assert_eq!(
            "1.10:5".parse::<VpnId>().unwrap(),
            VpnId::As4 {
                asn: 65546,
                number: 5
            }
        );
        // A 2-byte AS with a number over 16 bits stays type 0.
        assert_eq!(
            "65000:4000000000".parse::<VpnId>().unwrap(),
            VpnId::As2 {
                asn: 65000,
                number: 4_000_000_000
            }
        );
        for s in ["65000:100", "192.0.2.1:7", "4200000000:7"] {
            assert_eq!(s.parse::<VpnId>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn bad_forms_say_why() {
        for (s, want) in [
            ("65000", "is not ADMIN:NUMBER"),
            ("65000:", "is not ADMIN:NUMBER"),
            ("x:1", "is not ADMIN:NUMBER"),
            ("0:1", "AS 0 is reserved"),
            ("192.0.2.1:70000", "over 65535"),
            ("4200000000:70000", "over 65535"),
            ("300.0.2.1:1", "is not an IPv4 address"),
            ("99999999999:1", "over 4294967295"),
            ("1.70000:1", "not an asdot AS number"),
        ] {
            let e = s.parse::<VpnId>().unwrap_err();
            assert!(e.contains(want), "{s}: {e}");
        }
    }
}
