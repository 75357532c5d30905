//! Golden `(bytes, message)` pairs both ways, written out by hand from
//! the RFCs' layouts (RFC 4271 section 4, RFC 4760 section 3, RFC 5492,
//! RFC 6793, RFC 2918, RFC 4364 section 4.3.4, RFC 8277 section 2,
//! RFC 4360), and RFC 7606 verdicts on malformed UPDATEs.

use super::*;
use netgauze_bgp_pkt::notification::{BgpNotificationMessage, OpenMessageError};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s
        .split_whitespace()
        .collect::<String>()
        .replace('M', &"ff".repeat(16));
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn rd() -> VpnId {
    "65000:100".parse().unwrap()
}

fn route() -> VpnRoute {
    VpnRoute {
        rd: rd(),
        prefix: Ipv4Addr::new(10, 0, 0, 10),
        len: 32,
        label: 16001,
    }
}

fn path() -> VpnPath {
    VpnPath {
        next_hop: Ipv4Addr::new(192, 0, 2, 1),
        route_targets: vec!["65000:1".parse().unwrap(), "192.0.2.1:1".parse().unwrap()],
        local_pref: Some(100),
        med: None,
        as_path: vec![],
        reflection: None,
    }
}

/// OPEN: version 4, AS 65001, hold 90, id 192.0.2.1; one capabilities
/// parameter (type 2, 14 bytes): multiprotocol AFI 1 / SAFI 128, 4-octet
/// AS 65001, route refresh.
const OPEN: &str = "M 002d 01 04 fde9 005a c0000201 10 02 0e 01 04 0001 00 80 41 04 0000fde9 02 00";
/// The same with AS 4200000001: AS_TRANS (23456) in the 2-byte field.
const OPEN_AS4: &str =
    "M 002d 01 04 5ba0 005a c0000201 10 02 0e 01 04 0001 00 80 41 04 fa56ea01 02 00";
const KEEPALIVE: &str = "M 0013 04";
/// OPEN Message Error, Bad Peer AS, the AS as data.
const NOTIFICATION_BAD_PEER_AS: &str = "M 0017 03 02 02 fde9";
/// 10.0.0.10/32, RD 65000:100, label 16001, next hop 192.0.2.1 (as a
/// VPN-IPv4 address, RD 0), route targets 65000:1 and 192.0.2.1:1,
/// LOCAL_PREF 100, ORIGIN IGP, empty AS_PATH. Optional attributes carry
/// the extended-length flag.
const REACH: &str = "M 005e 02 0000 0047
    40 01 01 00
    40 02 00
    40 05 04 00000064
    d0 10 0010 0002fde800000001 0102c0000201 0001
    90 0e 0021 0001 80 0c 0000000000000000 c0000201 00
       78 03e811 0000fde800000064 0a00000a";
/// The same route withdrawn: label field 0x800000 (RFC 8277 section 2.4).
const UNREACH: &str = "M 002e 02 0000 0017 90 0f 0013 0001 80 78 800000 0000fde800000064 0a00000a";
/// End-of-RIB for VPNv4: an empty MP_UNREACH_NLRI (RFC 4724 section 2).
const END_OF_RIB: &str = "M 001e 02 0000 0007 90 0f 0003 0001 80";

#[test]
fn golden_messages_both_ways() {
    let bad_peer_as = BgpMessage::Notification(BgpNotificationMessage::OpenMessageError(
        OpenMessageError::BadPeerAs {
            value: vec![0xfd, 0xe9].into(),
        },
    ));
    let cases: Vec<(&str, &str, BgpMessage)> = vec![
        ("OPEN", OPEN, open(65001, 90, Ipv4Addr::new(192, 0, 2, 1))),
        (
            "OPEN AS4",
            OPEN_AS4,
            open(4_200_000_001, 90, Ipv4Addr::new(192, 0, 2, 1)),
        ),
        ("KEEPALIVE", KEEPALIVE, BgpMessage::KeepAlive),
        ("NOTIFICATION", NOTIFICATION_BAD_PEER_AS, bad_peer_as),
        (
            "UPDATE reach",
            REACH,
            vpnv4_reach(&[route()], &path()).remove(0),
        ),
        (
            "UPDATE unreach",
            UNREACH,
            vpnv4_unreach(&[route()]).remove(0),
        ),
        ("End-of-RIB", END_OF_RIB, vpnv4_end_of_rib()),
    ];
    for (name, bytes, msg) in cases {
        let bytes = hex(bytes);
        assert_eq!(encode(&msg), bytes, "{name}: message to bytes");
        assert_eq!(
            decode(&bytes, true).as_ref(),
            Ok(&msg),
            "{name}: bytes to message"
        );
    }
    assert_eq!(
        notification(2, 2, &[0xfd, 0xe9]),
        hex(NOTIFICATION_BAD_PEER_AS)
    );
}

#[test]
fn updates_read_back_as_routes() {
    let BgpMessage::Update(u) = decode(&hex(REACH), true).unwrap() else {
        panic!("not an UPDATE");
    };
    let v = vpnv4_of(&u);
    assert_eq!(v.reach, [route()]);
    assert_eq!(v.path, Some(path()));
    assert!(v.withdrawn.is_empty() && !v.end_of_rib);
    let BgpMessage::Update(u) = decode(&hex(UNREACH), true).unwrap() else {
        panic!("not an UPDATE");
    };
    let v = vpnv4_of(&u);
    assert_eq!(
        v.withdrawn,
        [VpnRoute {
            label: 0,
            ..route()
        }]
    );
    assert!(v.reach.is_empty() && v.path.is_none());
    let BgpMessage::Update(u) = decode(&hex(END_OF_RIB), true).unwrap() else {
        panic!("not an UPDATE");
    };
    assert!(vpnv4_of(&u).end_of_rib);
}

#[test]
fn many_routes_pack_into_messages_within_4096_bytes() {
    let rds: [VpnId; 3] = [
        "65000:100".parse().unwrap(),
        "192.0.2.1:7".parse().unwrap(),
        "4200000001:7".parse().unwrap(),
    ];
    let routes: Vec<VpnRoute> = (0..1000u32)
        .map(|i| VpnRoute {
            rd: rds[i as usize % 3],
            prefix: Ipv4Addr::from(0x0a00_0000 + i * 4),
            len: [32, 30, 24][i as usize % 3],
            label: 16 + i,
        })
        .map(|mut r| {
            r.prefix = Ipv4Addr::from(
                u32::from(r.prefix) & !u32::MAX.checked_shr(u32::from(r.len)).unwrap_or(0),
            );
            r
        })
        .collect();
    for (msgs, reach) in [
        (vpnv4_reach(&routes, &path()), true),
        (vpnv4_unreach(&routes), false),
    ] {
        assert!(msgs.len() > 1, "1000 routes need several UPDATEs");
        let mut back = Vec::new();
        for m in &msgs {
            let b = encode(m);
            assert!(b.len() <= MAX_MESSAGE, "{} bytes", b.len());
            let BgpMessage::Update(u) = decode(&b, true).unwrap() else {
                panic!("not an UPDATE");
            };
            let v = vpnv4_of(&u);
            back.extend(if reach { v.reach } else { v.withdrawn });
        }
        let want: Vec<VpnRoute> = routes
            .iter()
            .map(|r| VpnRoute {
                label: if reach { r.label } else { 0 },
                ..*r
            })
            .collect();
        assert_eq!(back, want);
    }
}

/// REACH with its attribute section replaced by `attrs` (hex).
fn reach_with(attrs: &str) -> Vec<u8> {
    let a = hex(attrs);
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((23 + a.len()) as u16).to_be_bytes());
    m.extend_from_slice(&[2, 0, 0]);
    m.extend_from_slice(&(a.len() as u16).to_be_bytes());
    m.extend_from_slice(&a);
    m
}

const MP_REACH_ATTR: &str = "90 0e 0021 0001 80 0c 0000000000000000 c0000201 00
    78 03e811 0000fde800000064 0a00000a";

/// The routes a treat-as-withdraw verdict withdraws.
fn withdrawn_by(v: &Verdict) -> Vec<VpnRoute> {
    let Verdict::TreatAsWithdraw { update, .. } = v else {
        panic!("not treat-as-withdraw: {v:?}");
    };
    let BgpMessage::Update(u) = decode(update, true).expect("the kept attributes decode") else {
        panic!("not an UPDATE");
    };
    vpnv4_of(&u).reach
}

#[test]
fn rfc7606_verdicts() {
    assert_eq!(check_update(&hex(REACH), true), Verdict::Fine);
    assert_eq!(check_update(&hex(UNREACH), true), Verdict::Fine);
    // Treat-as-withdraw: the route advertised is withdrawn instead.
    for (name, attrs) in [
        (
            "ORIGIN length 2 (7.1)",
            format!("40 01 02 0000 40 02 00 {MP_REACH_ATTR}"),
        ),
        (
            "ORIGIN 3 (7.1)",
            format!("40 01 01 03 40 02 00 {MP_REACH_ATTR}"),
        ),
        (
            "AS_PATH segment overruns (7.2)",
            format!("40 01 01 00 40 02 06 02 02 0000fde9 {MP_REACH_ATTR}"),
        ),
        (
            "LOCAL_PREF length 3 (7.5)",
            format!("40 01 01 00 40 02 00 40 05 03 000064 {MP_REACH_ATTR}"),
        ),
        (
            "MED length 2 (7.4)",
            format!("40 01 01 00 40 02 00 80 04 02 0000 {MP_REACH_ATTR}"),
        ),
        (
            "extended communities length 12 (7.14)",
            format!("40 01 01 00 40 02 00 c0 10 0c 0002fde800000001 00000000 {MP_REACH_ATTR}"),
        ),
        ("ORIGIN missing (3 d)", format!("40 02 00 {MP_REACH_ATTR}")),
        (
            "last attribute overruns the section (4)",
            format!("40 01 01 00 40 02 00 {MP_REACH_ATTR} 40 05 09 00000064"),
        ),
    ] {
        let v = check_update(&reach_with(&attrs), true);
        assert_eq!(withdrawn_by(&v), [route()], "{name}: {v:?}");
    }
    // Attribute discard: the rest is used.
    let bad_atomic = reach_with(&format!("40 01 01 00 40 02 00 40 06 01 00 {MP_REACH_ATTR}"));
    let Verdict::Discard { update, discarded } = check_update(&bad_atomic, true) else {
        panic!("ATOMIC_AGGREGATE of length 1 (7.6) is discarded");
    };
    assert_eq!(discarded, [ATOMIC_AGGREGATE]);
    let BgpMessage::Update(u) = decode(&update, true).unwrap() else {
        panic!("not an UPDATE");
    };
    assert_eq!(vpnv4_of(&u).reach, [route()]);
    assert!(!u
        .path_attributes()
        .iter()
        .any(|a| matches!(a.value(), PathAttributeValue::AtomicAggregate(_))));
    // Duplicates: the first one counts (3 g).
    let dup = reach_with(&format!("40 01 01 00 40 01 01 01 40 02 00 {MP_REACH_ATTR}"));
    assert!(
        matches!(check_update(&dup, true), Verdict::Discard { discarded, .. } if discarded == [ORIGIN])
    );
    // Session reset, with the NOTIFICATION to send.
    let reset = |m: &[u8]| match check_update(m, true) {
        Verdict::Reset { code, subcode, .. } => (code, subcode),
        v => panic!("not a reset: {v:?}"),
    };
    let bad_nlri = MP_REACH_ATTR.replace("78 03e811", "82 03e811");
    assert_eq!(
        reset(&reach_with(&format!("40 01 01 00 40 02 00 {bad_nlri}"))),
        (3, 9),
        "an NLRI of 130 bits in MP_REACH_NLRI (7.11)"
    );
    assert_eq!(
        reset(&reach_with(&format!(
            "40 01 01 00 {MP_REACH_ATTR} {MP_REACH_ATTR}"
        ))),
        (3, 1),
        "MP_REACH_NLRI twice (3 g)"
    );
    assert_eq!(
        reset(&reach_with("40 01 01 00 40 02 00 40 05 09 00000064")),
        (3, 1),
        "an overrun with no MP_REACH_NLRI to withdraw (4)"
    );
    let mut long = hex(REACH);
    long[22] = 0xff;
    assert_eq!(
        reset(&long),
        (3, 1),
        "total attribute length past the message"
    );
    let Verdict::Reset { data, .. } = check_update(
        &reach_with(&format!("40 01 01 00 40 02 00 {bad_nlri}")),
        true,
    ) else {
        unreachable!()
    };
    assert_eq!(
        data,
        hex(&bad_nlri),
        "the NOTIFICATION carries the attribute"
    );
}

/// A reflected path's ORIGINATOR_ID (type 9) and CLUSTER_LIST (type 10)
/// go out optional and non-transitive (RFC 4456 section 8), and read
/// back.
#[test]
fn reflection_attributes_go_out_and_read_back() {
    let reflected = VpnPath {
        reflection: Some(Reflection {
            originator_id: Ipv4Addr::new(198, 18, 0, 1),
            cluster_list: vec![Ipv4Addr::new(198, 18, 0, 9), Ipv4Addr::new(10, 0, 0, 9)],
        }),
        ..path()
    };
    let bytes = encode(&vpnv4_reach(&[route()], &reflected).remove(0));
    let find = |kind: u8| {
        bytes
            .windows(4)
            .find(|w| w[0] == 0x90 && w[1] == kind)
            .map(|w| u16::from_be_bytes([w[2], w[3]]))
    };
    assert_eq!(find(9), Some(4), "ORIGINATOR_ID: flags 0x90, 4 bytes");
    assert_eq!(find(10), Some(8), "CLUSTER_LIST: flags 0x90, 2 ids");
    let at = bytes
        .windows(4)
        .position(|w| w == [0x90, 10, 0, 8])
        .unwrap();
    assert_eq!(&bytes[at + 4..at + 12], &[198, 18, 0, 9, 10, 0, 0, 9]);
    assert_eq!(check_update(&bytes, true), Verdict::Fine);
    let BgpMessage::Update(u) = decode(&bytes, true).unwrap() else {
        panic!("not an UPDATE");
    };
    assert_eq!(vpnv4_of(&u).path, Some(reflected));
}
