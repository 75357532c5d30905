//! A BGP message from a peer: the RFC 7606 verdict on the raw bytes and
//! the decoder, with and without 4-octet AS numbers, never panic; what
//! decodes re-encodes, and an UPDATE yields its VPNv4 routes.
//!
//! An input starting with the marker is a message as it is; any other
//! describes an UPDATE (structure-aware): a list of path attributes of
//! every type RFC 7606 has rules for and some it has not, each well
//! formed for its type or not, with right or wrong flags and lengths, so
//! that every branch of `check_update` is reached. Whatever the verdict,
//! the bytes it hands on decode (that is its promise to the session),
//! fit in a message, and a treat-as-withdraw keeps only MP attributes.
#![no_main]
use control::bgp::{check_update, decode, encode, vpnv4_of, withdrawal_of, Verdict};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use netgauze_bgp_pkt::BgpMessage;

/// Path attribute types: those with rules in RFC 7606, RFC 6793 and
/// RFC 8092, some the codec knows and hdvrf does not read (AIGP, BGP-LS,
/// OTC, Prefix-SID, IPv6 extended communities), unassigned and reserved.
const KINDS: [u8; 25] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 14, 15, 16, 17, 18, 32, 11, 25, 26, 29, 35, 40, 0, 99, 255,
];
/// The flags RFC 4271 section 5 and each attribute's RFC give a type.
fn flags_of(kind: u8) -> u8 {
    match kind {
        1 | 2 | 3 | 5 | 6 => 0x40,
        4 | 9 | 10 | 14 | 15 | 26 | 29 => 0x80,
        _ => 0xc0,
    }
}

fn segments(u: &mut Unstructured, w: usize) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        let n = u.int_in_range(1..=4u8)?;
        v.extend_from_slice(&[u.int_in_range(1..=4)?, n]);
        v.extend_from_slice(u.bytes(usize::from(n) * w)?);
    }
    Ok(v)
}

/// A VPNv4 NLRI: one label, an RD of type 0 to 3, a prefix.
fn vpn_nlri(u: &mut Unstructured) -> Result<Vec<u8>> {
    let len: u8 = u.int_in_range(0..=32)?;
    let mut v = vec![88 + len];
    v.extend_from_slice(u.bytes(3)?);
    v.extend_from_slice(&[0, u.int_in_range(0..=3)?]);
    v.extend_from_slice(u.bytes(6 + usize::from(len).div_ceil(8))?);
    Ok(v)
}

/// A value well formed for `kind`.
fn good(u: &mut Unstructured, kind: u8, asn4: bool) -> Result<Vec<u8>> {
    let w = if asn4 { 4 } else { 2 };
    let many = |u: &mut Unstructured, size: usize| -> Result<Vec<u8>> {
        let n = u.int_in_range(1..=4usize)?;
        Ok(u.bytes(n * size)?.to_vec())
    };
    Ok(match kind {
        1 => vec![u.int_in_range(0..=2)?],
        2 => segments(u, w)?,
        17 => segments(u, 4)?,
        3 | 4 | 5 | 9 => u.bytes(4)?.to_vec(),
        6 => vec![],
        7 => u.bytes(2 + w)?.to_vec(),
        8 | 10 => many(u, 4)?,
        16 => many(u, 8)?,
        18 => u.bytes(8)?.to_vec(),
        32 => many(u, 12)?,
        14 | 15 => {
            let mut v = if u.ratio(7, 8)? {
                vec![0, 1, 128]
            } else {
                u.bytes(3)?.to_vec()
            };
            if kind == 14 {
                let nh = if u.ratio(7, 8)? { 12 } else { 24 };
                v.push(nh);
                v.extend_from_slice(u.bytes(usize::from(nh))?);
                v.push(0);
            }
            for _ in 0..u.int_in_range(0..=4)? {
                v.extend(vpn_nlri(u)?);
            }
            v
        }
        _ => u.arbitrary::<Vec<u8>>()?,
    })
}

/// One attribute: flags (the type's, or any), type, length, value (well
/// formed or not, sometimes cut or with a byte changed), and sometimes a
/// length that does not match.
fn attribute(u: &mut Unstructured, asn4: bool) -> Result<Vec<u8>> {
    let kind = if u.ratio(15, 16)? {
        *u.choose(&KINDS)?
    } else {
        u.arbitrary()?
    };
    let mut v = if u.ratio(3, 4)? {
        good(u, kind, asn4)?
    } else {
        u.arbitrary::<Vec<u8>>()?
    };
    match u.int_in_range(0..=7)? {
        0 if !v.is_empty() => {
            let i = u.choose_index(v.len())?;
            v[i] = u.arbitrary()?;
        }
        1 if !v.is_empty() => v.truncate(u.choose_index(v.len())?),
        2 => v.push(u.arbitrary()?),
        _ => {}
    }
    let mut flags = if u.ratio(7, 8)? {
        flags_of(kind) | u.choose(&[0, 0x10, 0x20])?
    } else {
        u.arbitrary()?
    };
    if v.len() > 255 {
        flags |= 0x10;
    }
    let mut a = vec![flags, kind];
    let len = if u.ratio(15, 16)? {
        v.len() as u16
    } else {
        u.arbitrary()?
    };
    if flags & 0x10 != 0 {
        a.extend_from_slice(&len.to_be_bytes());
    } else {
        a.push(len as u8);
    }
    a.extend(v);
    Ok(a)
}

/// An IPv4 prefix list (withdrawn routes, NLRI), mostly well formed.
fn prefixes(u: &mut Unstructured) -> Result<Vec<u8>> {
    if u.ratio(1, 8)? {
        return Ok(u.arbitrary::<Vec<u8>>()?);
    }
    let mut v = Vec::new();
    for _ in 0..u.int_in_range(0..=2)? {
        let len: u8 = u.int_in_range(0..=32)?;
        v.push(len);
        v.extend_from_slice(u.bytes(usize::from(len).div_ceil(8))?);
    }
    Ok(v)
}

fn update(u: &mut Unstructured, asn4: bool) -> Result<Vec<u8>> {
    let withdrawn = if u.ratio(1, 8)? { prefixes(u)? } else { vec![] };
    let mut attrs = Vec::new();
    for _ in 0..u.int_in_range(0..=12)? {
        attrs.extend(attribute(u, asn4)?);
    }
    let nlri = if u.ratio(1, 8)? { prefixes(u)? } else { vec![] };
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&[0, 0, 2]);
    m.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
    m.extend(withdrawn);
    m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    m.extend(attrs);
    m.extend(nlri);
    m.truncate(4096);
    let len = m.len() as u16;
    m[16..18].copy_from_slice(&len.to_be_bytes());
    Ok(m)
}

/// Checks what `check_update` promises of its verdict on `m`.
fn verdict(m: &[u8], asn4: bool, ebgp: bool) {
    let (update, withdraw) = match check_update(m, asn4, ebgp) {
        Verdict::Fine { update, transitive } => {
            // Each passed-on attribute has Optional, Transitive, Partial.
            assert!(transitive.is_empty() || transitive[0] & 0xe0 == 0xe0);
            (update, false)
        }
        Verdict::Discard {
            update,
            discarded,
            why,
            ..
        } => {
            assert!(!discarded.is_empty() && why.contains("(type "), "{why}");
            (update, false)
        }
        Verdict::TreatAsWithdraw { update, why } => {
            // Named, unless one octet is all there is of it.
            assert!(
                why.contains("(type ") || why.contains("header is cut short"),
                "{why}"
            );
            (update, true)
        }
        Verdict::Reset { code, .. } => {
            assert_eq!(code, 3);
            return;
        }
    };
    assert!(update.len() <= 4096);
    let u = match decode(&update, asn4) {
        Ok(BgpMessage::Update(u)) => u,
        other => panic!("check_update's bytes do not decode: {other:?}\n{m:02x?}\n{update:02x?}"),
    };
    if withdraw {
        assert!(u.path_attributes().iter().all(|a| matches!(
            a.value(),
            netgauze_bgp_pkt::path_attribute::PathAttributeValue::MpReach(_)
                | netgauze_bgp_pkt::path_attribute::PathAttributeValue::MpUnreach(_)
        )));
    }
    let v = vpnv4_of(&u);
    assert!(matches!(
        decode(&withdrawal_of(&update), asn4),
        Ok(BgpMessage::Update(_))
    ));
    // What was advertised is what a withdrawal would take back.
    if let Ok(BgpMessage::Update(w)) = decode(&withdrawal_of(&update), asn4) {
        assert_eq!(vpnv4_of(&w).reach, v.reach);
    }
    let _ = encode(&BgpMessage::Update(u));
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode == 0xff {
        // A message as it is (the corpus's: they start with the marker).
        for asn4 in [true, false] {
            verdict(data, asn4, !asn4);
            if let Ok(m) = decode(data, asn4) {
                let _ = encode(&m);
                if let BgpMessage::Update(u) = &m {
                    let _ = vpnv4_of(u);
                }
            }
        }
    } else if let Ok(m) = update(&mut Unstructured::new(rest), mode & 1 != 0) {
        verdict(&m, mode & 1 != 0, mode & 2 != 0);
    }
});
