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
            vpnv4_reach(&[route()], &path(), true).remove(0),
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
        (vpnv4_reach(&routes, &path(), true), true),
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

/// The routes an UPDATE as [`check_update`] returned it advertises.
fn reach_of(update: &[u8]) -> Vec<VpnRoute> {
    let BgpMessage::Update(u) = decode(update, true).expect("check_update's bytes decode") else {
        panic!("not an UPDATE");
    };
    vpnv4_of(&u).reach
}

/// The attribute types of an UPDATE as [`check_update`] returned it.
fn kinds_of(update: &[u8]) -> Vec<u8> {
    walk(&update[23..]).0.iter().map(|a| a.kind).collect()
}

/// What RFC 7606 should do with an UPDATE.
#[derive(Debug, PartialEq)]
enum Want {
    Withdraw,
    Discard(u8),
    Reset(u8),
}

/// Every attribute RFC 7606 (and RFC 6793, RFC 8092) gives rules for,
/// with a malformed length and, where it has rules for one, a malformed
/// value or flags, in an UPDATE that otherwise advertises [`route`].
#[test]
fn rfc7606_verdicts_per_attribute() {
    use Want::*;
    const GOOD: &str = "40 01 01 00 40 02 00";
    let cases: Vec<(&str, &str, Want)> = vec![
        ("ORIGIN length 2 (7.1)", "40 01 02 0000 40 02 00", Withdraw),
        ("ORIGIN value 3 (7.1)", "40 01 01 03 40 02 00", Withdraw),
        ("ORIGIN flagged optional (3 c)", "c0 01 01 00 40 02 00", Withdraw),
        ("ORIGIN missing (3 d)", "40 02 00", Withdraw),
        ("AS_PATH missing (3 d)", "40 01 01 00", Withdraw),
        ("AS_PATH segment overruns (7.2)", "40 01 01 00 40 02 06 02 02 0000fde9", Withdraw),
        ("AS_PATH segment type 5 (7.2)", "40 01 01 00 40 02 06 05 01 0000fde9", Withdraw),
        ("AS_PATH empty segment (7.2)", "40 01 01 00 40 02 02 02 00", Withdraw),
        (
            "AS_PATH confederation segment (RFC 5065 5.3, 7.2)",
            "40 01 01 00 40 02 06 03 01 0000fde9",
            Withdraw,
        ),
        ("NEXT_HOP length 5 (7.3)", "GOOD 40 03 05 c000020100", Withdraw),
        ("NEXT_HOP flagged optional (3 c)", "GOOD c0 03 04 c0000201", Withdraw),
        ("MULTI_EXIT_DISC length 2 (7.4)", "GOOD 80 04 02 0000", Withdraw),
        ("MULTI_EXIT_DISC flagged well-known (3 c)", "GOOD 40 04 04 00000000", Withdraw),
        ("LOCAL_PREF length 3 (7.5)", "GOOD 40 05 03 000064", Withdraw),
        ("ATOMIC_AGGREGATE length 1 (7.6)", "GOOD 40 06 01 00", Discard(6)),
        ("AGGREGATOR length 6 with 4-octet ASNs (7.7)", "GOOD c0 07 06 fde9 c0000201", Discard(7)),
        ("COMMUNITIES length 5 (7.8)", "GOOD c0 08 05 fde80001 00", Withdraw),
        ("COMMUNITIES length 0 (7.8)", "GOOD c0 08 00", Withdraw),
        ("COMMUNITIES flagged non-transitive (3 c)", "GOOD 80 08 04 fde80001", Withdraw),
        ("ORIGINATOR_ID length 3 (7.9)", "GOOD 80 09 03 c00002", Withdraw),
        ("ORIGINATOR_ID flagged transitive (3 c)", "GOOD c0 09 04 c0000201", Withdraw),
        ("CLUSTER_LIST length 6 (7.10)", "GOOD 80 0a 06 c0000201 0000", Withdraw),
        ("CLUSTER_LIST length 0 (7.10)", "GOOD 80 0a 00", Withdraw),
        ("EXTENDED_COMMUNITIES length 12 (7.14)", "GOOD c0 10 0c 0002fde800000001 00000000", Withdraw),
        ("EXTENDED_COMMUNITIES length 0 (7.14)", "GOOD c0 10 00", Withdraw),
        ("AS4_PATH length 5 (RFC 6793 6)", "GOOD c0 11 05 02 01 0000fd", Discard(17)),
        ("AS4_PATH segment type 9 (RFC 6793 6)", "GOOD c0 11 06 09 01 0000fde9", Discard(17)),
        ("AS4_AGGREGATOR length 6 (RFC 6793 6)", "GOOD c0 12 06 fde9 c0000201", Discard(18)),
        ("LARGE_COMMUNITY length 8 (RFC 8092 6)", "GOOD c0 20 08 0000fde8 00000001", Withdraw),
        ("LARGE_COMMUNITY length 0 (RFC 8092 6)", "GOOD c0 20 00", Withdraw),
        ("MP_REACH_NLRI flagged transitive (3 c)", "GOOD", Withdraw),
        ("ORIGIN twice (3 g)", "40 01 01 00 40 01 01 01 40 02 00", Discard(1)),
        ("an attribute overruns the section (4)", "GOOD MP 40 05 09 00000064", Withdraw),
        ("unrecognized well-known attribute (RFC 4271 6.3)", "GOOD 40 63 00", Reset(2)),
        ("MP_REACH_NLRI next hop length 4 (7.11)", "GOOD 90 0e 0019 0001 80 04 c0000201 00 78 03e811 0000fde800000064 0a00000a", Reset(9)),
        ("MP_REACH_NLRI NLRI of 130 bits (7.11)", "GOOD 90 0e 0021 0001 80 0c 0000000000000000 c0000201 00 82 03e811 0000fde800000064 0a00000a", Reset(9)),
        ("MP_REACH_NLRI NLRI of 80 bits (7.11)", "GOOD 90 0e 0021 0001 80 0c 0000000000000000 c0000201 00 50 03e811 0000fde800000064 0a00000a", Reset(9)),
        ("MP_REACH_NLRI NLRI runs past it (7.11)", "GOOD 90 0e 0020 0001 80 0c 0000000000000000 c0000201 00 78 03e811 0000fde800000064 0a0000", Reset(9)),
        ("MP_UNREACH_NLRI NLRI of 130 bits (7.11)", "GOOD MP 90 0f 0013 0001 80 82 800000 0000fde800000064 0a00000a", Reset(9)),
        ("MP_REACH_NLRI twice (3 g)", "GOOD MP MP", Reset(1)),
        ("an overrun with no MP_REACH_NLRI before it (4)", "GOOD 40 05 09 00000064 NOMP", Reset(1)),
    ];
    for (name, attrs, want) in cases {
        let attrs = attrs.replace("GOOD", GOOD);
        // The MP_REACH_NLRI goes last unless the case places it.
        let attrs = if attrs.contains("NOMP") {
            attrs.replace("NOMP", "")
        } else if attrs.contains("MP") || attrs.contains(" 0e ") {
            attrs.replace("MP", MP_REACH_ATTR)
        } else if name.starts_with("MP_REACH_NLRI flagged") {
            format!("{attrs} d0 {}", &MP_REACH_ATTR[3..])
        } else {
            format!("{attrs} {MP_REACH_ATTR}")
        };
        let v = check_update(&reach_with(&attrs), true, false);
        match (&want, &v) {
            (Withdraw, Verdict::TreatAsWithdraw { update, why }) => {
                assert_eq!(
                    reach_of(update),
                    [route()],
                    "{name}: the route advertised is withdrawn ({why})"
                );
                assert!(
                    kinds_of(update)
                        .iter()
                        .all(|k| *k == MP_REACH || *k == MP_UNREACH),
                    "{name}"
                );
            }
            (
                Discard(k),
                Verdict::Discard {
                    update,
                    discarded,
                    why,
                    ..
                },
            ) => {
                assert_eq!(discarded, &[*k], "{name}: {why}");
                assert!(why.contains(&format!("(type {k})")), "{name}: {why}");
                assert_eq!(reach_of(update), [route()], "{name}: the route stays");
                // A repeated one keeps its first (3 g).
                let left = kinds_of(update).iter().filter(|x| *x == k).count();
                assert_eq!(
                    left,
                    usize::from(name.contains("twice")),
                    "{name}: the attribute is gone"
                );
            }
            (
                Reset(sub),
                Verdict::Reset {
                    code: 3, subcode, ..
                },
            ) => assert_eq!(subcode, sub, "{name}: {v:?}"),
            _ => panic!("{name}: want {want:?}, got {v:?}"),
        }
        let why = match &v {
            Verdict::TreatAsWithdraw { why, .. }
            | Verdict::Discard { why, .. }
            | Verdict::Reset { why, .. } => why,
            Verdict::Fine { .. } => unreachable!(),
        };
        assert!(
            why.contains("(type "),
            "{name}: the reason names the attribute: {why}"
        );
    }
}

#[test]
fn rfc7606_well_formed_updates_pass() {
    for (name, m) in [
        ("REACH", REACH),
        ("UNREACH", UNREACH),
        ("End-of-RIB", END_OF_RIB),
    ] {
        let Verdict::Fine { update, transitive } = check_update(&hex(m), true, false) else {
            panic!("{name} is fine");
        };
        assert!(transitive.is_empty());
        let (BgpMessage::Update(a), BgpMessage::Update(b)) = (
            decode(&update, true).unwrap(),
            decode(&hex(m), true).unwrap(),
        ) else {
            panic!("not UPDATEs");
        };
        assert_eq!(vpnv4_of(&a), vpnv4_of(&b), "{name}");
    }
    // Every attribute with rules, well formed (2-octet ASNs this time).
    let all = "40 01 01 02 40 02 04 02 01 fde9 40 03 04 c0000201 80 04 04 00000005
        40 05 04 00000064 40 06 00 c0 07 06 fde9 c0000201 c0 08 04 fde80001
        80 09 04 c0000201 80 0a 04 c0000202 c0 10 08 0002fde800000001
        c0 11 06 02 01 fa56ea01 c0 12 08 fa56ea01 c0000201
        c0 20 0c 0000fde8 00000001 00000002";
    let m = reach_with(&format!(
        "{all} {}",
        MP_REACH_ATTR.replace("90 0e 0021", "80 0e 21")
    ));
    let Verdict::Fine { update, .. } = check_update(&m, false, false) else {
        panic!("all fine: {:?}", check_update(&m, false, false));
    };
    let BgpMessage::Update(u) = decode(&update, false).unwrap() else {
        panic!("not an UPDATE");
    };
    assert_eq!(u.path_attributes().len(), 15);
    assert_eq!(vpnv4_of(&u).reach, [route()]);
    assert_eq!(vpnv4_of(&u).path.unwrap().med, Some(5));
}

#[test]
fn rfc7606_rules_that_depend_on_the_session() {
    let good = "40 01 01 00 40 02 00";
    // LOCAL_PREF from an external peer: attribute discard (7.5).
    let m = reach_with(&format!("{good} 40 05 04 00000064 {MP_REACH_ATTR}"));
    assert!(matches!(
        check_update(&m, true, false),
        Verdict::Fine { .. }
    ));
    let Verdict::Discard {
        update, discarded, ..
    } = check_update(&m, true, true)
    else {
        panic!("LOCAL_PREF from an eBGP peer is discarded");
    };
    assert_eq!(
        (discarded, reach_of(&update)),
        (vec![LOCAL_PREF], vec![route()])
    );
    // AGGREGATOR: 6 octets without 4-octet ASNs, 8 with (7.7).
    let agg8 = reach_with(&format!(
        "{good} c0 07 08 0000fde9 c0000201 {MP_REACH_ATTR}"
    ));
    assert!(matches!(
        check_update(&agg8, true, false),
        Verdict::Fine { .. }
    ));
    assert!(
        matches!(check_update(&agg8, false, false), Verdict::Discard { discarded, .. } if discarded == [AGGREGATOR])
    );
    // AS_PATH of 2-octet ASNs read with 4 (7.2).
    let two = reach_with(&format!("40 01 01 00 40 02 04 02 01 fde9 {MP_REACH_ATTR}"));
    assert!(matches!(
        check_update(&two, false, false),
        Verdict::Fine { .. }
    ));
    assert!(matches!(
        check_update(&two, true, false),
        Verdict::TreatAsWithdraw { .. }
    ));
}

#[test]
fn rfc7606_what_hdvrf_does_not_read() {
    let good = "40 01 01 00 40 02 00";
    // An unknown optional transitive attribute is kept with the Partial
    // bit set (RFC 4271 section 5); an unknown non-transitive one and
    // another family's MP_REACH_NLRI are left out of what is decoded.
    let m = reach_with(&format!(
        "{good} c0 63 02 abcd 80 64 01 00 {MP_REACH_ATTR} 90 0f 0003 0002 01"
    ));
    let Verdict::Fine { update, transitive } = check_update(&m, true, false) else {
        panic!("fine");
    };
    assert_eq!(transitive, hex("e0 63 02 abcd"));
    assert_eq!(kinds_of(&update), [ORIGIN, AS_PATH, MP_REACH]);
    assert_eq!(reach_of(&update), [route()]);
    // AS4_PATH's confederation segments are dropped, the rest kept
    // (RFC 6793 section 6).
    let m = reach_with(&format!(
        "{good} c0 11 0c 03 01 0000fde9 02 01 fa56ea01 {MP_REACH_ATTR}"
    ));
    let Verdict::Fine { update, .. } = check_update(&m, false, false) else {
        panic!("fine");
    };
    assert_eq!(&update[23 + 7..23 + 7 + 9], hex("c0 11 06 02 01 fa56ea01"));
    // A multicast prefix, or an RD of type 5, is ignored (RFC 4271
    // section 6.3); the other routes stay.
    let mcast = MP_REACH_ATTR
        .replace("90 0e 0021", "90 0e 0031")
        .replace("0a00000a", "0a00000a 78 03e821 0000fde800000064 e0000001");
    let m = reach_with(&format!("{good} {mcast}"));
    let Verdict::Fine { update, .. } = check_update(&m, true, false) else {
        panic!("fine");
    };
    assert_eq!(reach_of(&update), [route()]);
    let rd5 = MP_REACH_ATTR.replace("0000fde800000064", "0005fde800000064");
    let Verdict::Fine { update, .. } =
        check_update(&reach_with(&format!("{good} {rd5}")), true, false)
    else {
        panic!("fine");
    };
    assert!(reach_of(&update).is_empty());
    // IPv4 unicast fields are not read, but a syntax error in them leaves
    // nothing to withdraw: session reset (5.3).
    let mut m = reach_with(&format!("{good} {MP_REACH_ATTR}"));
    m.extend_from_slice(&hex("21 0a000001 00"));
    let len = m.len() as u16;
    m[16..18].copy_from_slice(&len.to_be_bytes());
    assert!(matches!(
        check_update(&m, true, false),
        Verdict::Reset {
            code: 3,
            subcode: 10,
            ..
        }
    ));
    // The NOTIFICATION of an MP_REACH_NLRI error carries the attribute.
    let bad_nlri = MP_REACH_ATTR.replace("78 03e811", "82 03e811");
    let Verdict::Reset { data, .. } =
        check_update(&reach_with(&format!("{good} {bad_nlri}")), true, false)
    else {
        panic!("reset");
    };
    assert_eq!(data, hex(&bad_nlri));
    let mut long = hex(REACH);
    long[22] = 0xff;
    assert!(
        matches!(
            check_update(&long, true, false),
            Verdict::Reset {
                code: 3,
                subcode: 1,
                ..
            }
        ),
        "total attribute length past the message"
    );
}

#[test]
fn a_decoder_refusal_is_withdrawn_where_the_routes_are_found() {
    // What check_update would never pass: a multicast prefix in the MP
    // attribute. withdrawal_of keeps only the MP attributes.
    let m = reach_with(&format!(
        "40 01 01 00 40 02 00 c0 08 03 000000 {MP_REACH_ATTR}"
    ));
    assert_eq!(kinds_of(&withdrawal_of(&m)), [MP_REACH]);
    assert_eq!(reach_of(&withdrawal_of(&m)), [route()]);
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
    let bytes = encode(&vpnv4_reach(&[route()], &reflected, true).remove(0));
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
    assert!(matches!(
        check_update(&bytes, true, false),
        Verdict::Fine { .. }
    ));
    let BgpMessage::Update(u) = decode(&bytes, true).unwrap() else {
        panic!("not an UPDATE");
    };
    assert_eq!(vpnv4_of(&u).path, Some(reflected));
}

/// An NLRI with two labels, without the Multiple Labels capability (RFC
/// 8277 section 2.2): the UPDATE is treated as a withdrawal of its routes,
/// found by reading each stack to its bottom-of-stack bit, instead of a
/// session reset that the peer would repeat on every reconnection. A
/// stack that does not tile the attribute still resets.
/// The routes a treat-as-withdraw verdict withdraws.
fn withdrawn_by(v: &Verdict) -> Vec<VpnRoute> {
    match v {
        Verdict::TreatAsWithdraw { update, .. } => reach_of(update),
        _ => Vec::new(),
    }
}

#[test]
fn a_multi_label_nlri_is_treated_as_withdraw() {
    let two_labels = "90 0e 0024 0001 80 0c 0000000000000000 c0000201 00
        90 03e810 03e811 0000fde800000064 0a00000a";
    let v = check_update(
        &reach_with(&format!("40 01 01 00 40 02 00 {two_labels}")),
        true,
        false,
    );
    assert_eq!(withdrawn_by(&v), [route()], "{v:?}");
    let Verdict::TreatAsWithdraw { why, .. } = &v else {
        unreachable!()
    };
    assert!(why.contains("more than one label"), "{why}");
    // With a well-formed NLRI after it, both are withdrawn.
    let and_one = "90 0e 0034 0001 80 0c 0000000000000000 c0000201 00
        90 03e810 03e811 0000fde800000064 0a00000a
        78 03e811 0000fde800000064 0a00000b";
    let v = check_update(
        &reach_with(&format!("40 01 01 00 40 02 00 {and_one}")),
        true,
        false,
    );
    let second = VpnRoute {
        prefix: Ipv4Addr::new(10, 0, 0, 11),
        ..route()
    };
    assert_eq!(withdrawn_by(&v), [route(), second], "{v:?}");
    // No bottom of stack within the NLRI: unreadable, reset.
    let unending = "90 0e 0018 0001 80 0c 0000000000000000 c0000201 00 30 03e810 03e810";
    assert!(matches!(
        check_update(
            &reach_with(&format!("40 01 01 00 40 02 00 {unending}")),
            true,
            false
        ),
        Verdict::Reset {
            code: 3,
            subcode: 9,
            ..
        }
    ));
}

/// The route of REACH with AS_PATH 4200000001 65001 (eBGP, our AS needing
/// 4 octets), toward a peer without 4-octet AS numbers (RFC 6793 section
/// 4.2.2): AS_PATH with AS_TRANS (0x5ba0) in place of 4200000001, then,
/// after MP_REACH_NLRI, AS4_PATH (type 17, optional transitive, extended
/// length) with the real path.
const REACH_AS2: &str = "M 0072 02 0000 005b
    40 01 01 00
    40 02 06 02 02 5ba0 fde9
    40 05 04 00000064
    d0 10 0010 0002fde800000001 0102c0000201 0001
    90 0e 0021 0001 80 0c 0000000000000000 c0000201 00
       78 03e811 0000fde800000064 0a00000a
    d0 11 000a 02 02 fa56ea01 0000fde9";
/// The same toward a 4-octet peer: the real path in AS_PATH, no AS4_PATH.
const REACH_AS4: &str = "M 0068 02 0000 0051
    40 01 01 00
    40 02 0a 02 02 fa56ea01 0000fde9
    40 05 04 00000064
    d0 10 0010 0002fde800000001 0102c0000201 0001
    90 0e 0021 0001 80 0c 0000000000000000 c0000201 00
       78 03e811 0000fde800000064 0a00000a";
/// A path of 2-octet numbers only toward a 2-octet peer: no AS4_PATH.
const REACH_AS2_SHORT: &str = "M 0062 02 0000 004b
    40 01 01 00
    40 02 04 02 01 fde9
    40 05 04 00000064
    d0 10 0010 0002fde800000001 0102c0000201 0001
    90 0e 0021 0001 80 0c 0000000000000000 c0000201 00
       78 03e811 0000fde800000064 0a00000a";

#[test]
fn as_trans_and_as4_path_toward_a_two_octet_peer_and_merged_back() {
    let long = VpnPath {
        as_path: vec![4_200_000_001, 65001],
        ..path()
    };
    let short = VpnPath {
        as_path: vec![65001],
        ..path()
    };
    for (name, bytes, p, asn4) in [
        ("2-octet peer", REACH_AS2, &long, false),
        ("4-octet peer", REACH_AS4, &long, true),
        ("2-octet peer, 2-octet path", REACH_AS2_SHORT, &short, false),
    ] {
        let msg = vpnv4_reach(&[route()], p, asn4).remove(0);
        let bytes = hex(bytes);
        assert_eq!(encode(&msg), bytes, "{name}: message to bytes");
        assert_eq!(
            decode(&bytes, asn4).as_ref(),
            Ok(&msg),
            "{name}: bytes to message"
        );
        assert!(
            matches!(check_update(&bytes, asn4, false), Verdict::Fine { .. }),
            "{name}"
        );
        // Read back as the peer sent it: AS4_PATH merged (section 4.2.3).
        let BgpMessage::Update(u) = msg else {
            unreachable!()
        };
        let v = vpnv4_of(&u);
        assert_eq!(v.path.as_ref(), Some(p), "{name}");
        assert_eq!(v.reach, [route()], "{name}");
    }
    // Many routes toward a 2-octet peer still pack within 4096 bytes, the
    // AS4_PATH in each UPDATE.
    let routes: Vec<VpnRoute> = (0..1000u32)
        .map(|i| VpnRoute {
            prefix: Ipv4Addr::from(0x0a00_0000 + i),
            ..route()
        })
        .collect();
    let msgs = vpnv4_reach(&routes, &long, false);
    assert!(msgs.len() > 1);
    for m in &msgs {
        let b = encode(m);
        assert!(b.len() <= MAX_MESSAGE, "{} bytes", b.len());
        let BgpMessage::Update(u) = decode(&b, false).unwrap() else {
            panic!("not an UPDATE");
        };
        assert_eq!(vpnv4_of(&u).path.unwrap().as_path, long.as_path);
    }
}

#[test]
fn as4_path_is_merged_per_rfc_6793_section_4_2_3() {
    let seq = |n: &[u32]| (false, n.to_vec());
    let set = |n: &[u32]| (true, n.to_vec());
    // Two speakers without 4-octet support prepended 65002 after the
    // AS4_PATH was made: they come first.
    assert_eq!(
        merge_as4_path(
            &[seq(&[65002, 23456, 65001])],
            &[seq(&[4_200_000_001, 65001])]
        ),
        [seq(&[65002]), seq(&[4_200_000_001, 65001])]
    );
    // An AS_SET counts as one.
    assert_eq!(
        merge_as4_path(
            &[seq(&[65003]), set(&[23456, 65005])],
            &[set(&[4_200_000_001, 65005])]
        ),
        [seq(&[65003]), set(&[4_200_000_001, 65005])]
    );
    // AS4_PATH longer than AS_PATH: ignored.
    assert_eq!(
        merge_as4_path(&[seq(&[23456])], &[seq(&[4_200_000_001, 65001])]),
        [seq(&[23456])]
    );
    // Through the decoder: AGGREGATOR with an AS other than AS_TRANS
    // means AS4_PATH is ignored; with AS_TRANS it is used.
    let with = |aggregator: &str| {
        let b = reach_with(&format!(
            "40 01 01 00 40 02 06 02 02 5ba0 fde9 {aggregator} {MP_REACH_ATTR}
             d0 11 000a 02 02 fa56ea01 0000fde9"
        ));
        let BgpMessage::Update(u) = decode(&b, false).unwrap() else {
            panic!("not an UPDATE");
        };
        vpnv4_of(&u).path.unwrap().as_path
    };
    assert_eq!(with(""), [4_200_000_001, 65001]);
    assert_eq!(with("c0 07 06 5ba0 c0000201"), [4_200_000_001, 65001]);
    assert_eq!(with("c0 07 06 fde8 c0000201"), [23456, 65001]);
    // From a 4-octet peer an AS4_PATH is ignored (section 4.2.1).
    let b = reach_with(&format!(
        "40 01 01 00 40 02 0a 02 02 0000fde8 0000fde9 {MP_REACH_ATTR}
         d0 11 000a 02 02 fa56ea01 0000fde9"
    ));
    let BgpMessage::Update(u) = decode(&b, true).unwrap() else {
        panic!("not an UPDATE");
    };
    assert_eq!(vpnv4_of(&u).path.unwrap().as_path, [65000, 65001]);
}
