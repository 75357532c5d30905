//! BGP messages for the MP-BGP VPNv4 speaker (RFC 4271, RFC 4760,
//! RFC 4364, RFC 8277): what hdvrf sends and what it takes from a peer's
//! UPDATE, and RFC 7606 error handling in front of the decoder.
//!
//! The message codec is `netgauze-bgp-pkt` (maintained, typed messages,
//! VPNv4 NLRI, route distinguishers of the three types, extended
//! communities, a tokio codec). Three things it does not do are done
//! here:
//! - RFC 7606: it has no treat-as-withdraw or attribute discard, and its
//!   lenient mode skips the wrong bytes after a bad attribute. So
//!   [`check_update`] walks the raw path attributes first, checks every
//!   one RFC 7606 has rules for, decides, and hands the decoder an UPDATE
//!   rebuilt from what passed; a bad attribute never reaches the decoder,
//!   and the decoder never refuses what it is handed (the BGP fuzz target
//!   checks that).
//! - The MPLS label field is raw bytes in the crate: [`label_field`]
//!   encodes RFC 8277's `label << 4 | S`.
//! - It does not refuse an UPDATE over 4096 bytes: [`vpnv4_reach`] packs
//!   routes into messages that fit.

use std::net::Ipv4Addr;

use netgauze_bgp_pkt::capabilities::{
    BgpCapability, FourOctetAsCapability, MultiProtocolExtensionsCapability,
};
use netgauze_bgp_pkt::community::{
    ExtendedCommunity, TransitiveFourOctetExtendedCommunity, TransitiveIpv4ExtendedCommunity,
    TransitiveTwoOctetExtendedCommunity,
};
use netgauze_bgp_pkt::nlri::{
    Ipv4MplsVpnUnicastAddress, Ipv4Unicast, LabeledIpv4NextHop, LabeledNextHop, MplsLabel,
    RouteDistinguisher,
};
use netgauze_bgp_pkt::open::{BgpOpenMessage, BgpOpenMessageParameter};
use netgauze_bgp_pkt::path_attribute::{
    Aggregator, As2PathSegment, As4Path, As4PathSegment, AsPath, AsPathSegmentType, ClusterId,
    ClusterList, ExtendedCommunities, LocalPreference, MpReach, MpUnreach, MultiExitDiscriminator,
    Origin, Originator, PathAttribute, PathAttributeValue,
};
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
pub use netgauze_bgp_pkt::BgpMessage;
use netgauze_iana::address_family::AddressType;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;
use netgauze_parse_utils::WritablePdu;

use crate::vpn::VpnId;

pub mod fsm;
pub mod session;
pub mod speaker;

/// The largest BGP message without RFC 8654's extended messages.
pub const MAX_MESSAGE: usize = 4096;
/// My Autonomous System in an OPEN when ours needs 4 octets (RFC 6793).
pub const AS_TRANS: u16 = 23456;
/// The label field of a withdrawn VPN route (RFC 8277 section 2.4).
pub const WITHDRAW_LABEL: [u8; 3] = [0x80, 0x00, 0x00];

/// A VPNv4 route as BGP carries it: RD, prefix and the VPN label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VpnRoute {
    pub rd: VpnId,
    pub prefix: Ipv4Addr,
    pub len: u8,
    /// The label the advertiser pops (RFC 4364 section 4.3.2).
    pub label: u32,
}

/// The path attributes of a VPNv4 advertisement that hdvrf uses.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VpnPath {
    pub next_hop: Ipv4Addr,
    pub route_targets: Vec<VpnId>,
    /// iBGP only (RFC 4271 section 5.1.5).
    pub local_pref: Option<u32>,
    pub med: Option<u32>,
    /// Empty within an AS; the speaker prepends its AS toward eBGP peers.
    pub as_path: Vec<u32>,
    /// ORIGINATOR_ID and CLUSTER_LIST, once a route reflector passed it on
    /// (RFC 4456 section 8).
    pub reflection: Option<Reflection>,
}

/// What route reflectors add to a path (RFC 4456 section 8).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reflection {
    /// The router that put the route into the AS.
    pub originator_id: Ipv4Addr,
    /// The clusters it was reflected through, the last first.
    pub cluster_list: Vec<Ipv4Addr>,
}

/// A [`Reflection`] before its attributes are read: a CLUSTER_LIST
/// without ORIGINATOR_ID leaves the originator unspecified.
fn no_reflection() -> Reflection {
    Reflection {
        originator_id: Ipv4Addr::UNSPECIFIED,
        cluster_list: Vec::new(),
    }
}

/// What one UPDATE says about VPNv4 routes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vpnv4Update {
    pub reach: Vec<VpnRoute>,
    /// With `reach`, the attributes they share.
    pub path: Option<VpnPath>,
    pub withdrawn: Vec<VpnRoute>,
    /// An empty MP_UNREACH_NLRI for VPNv4: End-of-RIB (RFC 4724).
    pub end_of_rib: bool,
}

/// RFC 8277's label field for one label at the bottom of the stack.
pub fn label_field(label: u32) -> [u8; 3] {
    let v = (label & 0xf_ffff) << 4 | 1;
    [(v >> 16) as u8, (v >> 8) as u8, v as u8]
}

fn label_of(field: &[u8; 3]) -> u32 {
    u32::from_be_bytes([0, field[0], field[1], field[2]]) >> 4
}

fn rd_of(id: &VpnId) -> RouteDistinguisher {
    match *id {
        VpnId::As2 { asn, number } => RouteDistinguisher::As2Administrator { asn2: asn, number },
        VpnId::Ipv4 { addr, number } => RouteDistinguisher::Ipv4Administrator { ip: addr, number },
        VpnId::As4 { asn, number } => RouteDistinguisher::As4Administrator { asn4: asn, number },
    }
}

fn id_of_rd(rd: &RouteDistinguisher) -> Option<VpnId> {
    Some(match *rd {
        RouteDistinguisher::As2Administrator { asn2, number } => VpnId::As2 { asn: asn2, number },
        RouteDistinguisher::Ipv4Administrator { ip, number } => VpnId::Ipv4 { addr: ip, number },
        RouteDistinguisher::As4Administrator { asn4, number } => VpnId::As4 { asn: asn4, number },
        _ => return None,
    })
}

fn rt_of(id: &VpnId) -> ExtendedCommunity {
    match *id {
        VpnId::As2 { asn, number } => ExtendedCommunity::TransitiveTwoOctet(
            TransitiveTwoOctetExtendedCommunity::RouteTarget {
                global_admin: asn,
                local_admin: number,
            },
        ),
        VpnId::Ipv4 { addr, number } => {
            ExtendedCommunity::TransitiveIpv4(TransitiveIpv4ExtendedCommunity::RouteTarget {
                global_admin: addr,
                local_admin: number,
            })
        }
        VpnId::As4 { asn, number } => ExtendedCommunity::TransitiveFourOctet(
            TransitiveFourOctetExtendedCommunity::RouteTarget {
                global_admin: asn,
                local_admin: number,
            },
        ),
    }
}

fn id_of_rt(c: &ExtendedCommunity) -> Option<VpnId> {
    Some(match c {
        ExtendedCommunity::TransitiveTwoOctet(
            TransitiveTwoOctetExtendedCommunity::RouteTarget {
                global_admin,
                local_admin,
            },
        ) => VpnId::As2 {
            asn: *global_admin,
            number: *local_admin,
        },
        ExtendedCommunity::TransitiveIpv4(TransitiveIpv4ExtendedCommunity::RouteTarget {
            global_admin,
            local_admin,
        }) => VpnId::Ipv4 {
            addr: *global_admin,
            number: *local_admin,
        },
        ExtendedCommunity::TransitiveFourOctet(
            TransitiveFourOctetExtendedCommunity::RouteTarget {
                global_admin,
                local_admin,
            },
        ) => VpnId::As4 {
            asn: *global_admin,
            number: *local_admin,
        },
        _ => return None,
    })
}

/// Our OPEN: VPNv4 multiprotocol, 4-octet AS (AS_TRANS in the 2-octet
/// field when it does not fit) and route refresh.
pub fn open(asn: u32, hold_time: u16, router_id: Ipv4Addr) -> BgpMessage {
    let my_as = u16::try_from(asn).unwrap_or(AS_TRANS);
    BgpMessage::Open(BgpOpenMessage::new(
        my_as,
        hold_time,
        router_id,
        vec![BgpOpenMessageParameter::new_capabilities(vec![
            BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
                AddressType::Ipv4MplsLabeledVpn,
            )),
            BgpCapability::FourOctetAs(FourOctetAsCapability::new(asn)),
            BgpCapability::RouteRefresh,
        ])],
    ))
}

fn attribute(optional: bool, transitive: bool, v: PathAttributeValue) -> PathAttribute {
    // Extended length for the optional ones, whose values can pass 255
    // bytes (the crate writes a 2-byte length only with the flag set).
    PathAttribute::from(optional, transitive, false, optional, v)
        .unwrap_or_else(|(_, e)| panic!("flags fixed per attribute type: {e:?}"))
}

fn vpn_nlri(r: &VpnRoute, label: [u8; 3]) -> Option<Ipv4MplsVpnUnicastAddress> {
    let net = ipnet::Ipv4Net::new(r.prefix, r.len).ok()?;
    let prefix = Ipv4Unicast::from_net(net.trunc()).ok()?;
    Some(Ipv4MplsVpnUnicastAddress::new_no_path_id(
        rd_of(&r.rd),
        vec![MplsLabel::new(label)],
        prefix,
    ))
}

fn nlri_len(r: &VpnRoute) -> usize {
    1 + 3 + 8 + usize::from(r.len).div_ceil(8)
}

/// Advertisements of `routes` with `path`, packed into UPDATEs of at most
/// [`MAX_MESSAGE`] bytes. Routes the codec cannot carry (a multicast or
/// broadcast prefix) are left out.
///
/// `asn4`: the session negotiated 4-octet AS numbers. Toward a peer that
/// did not (RFC 6793 section 4.2.2), AS_PATH carries 2-octet numbers,
/// AS_TRANS in place of each that needs 4, and then AS4_PATH carries the
/// real path; when every number fits in 2 octets AS4_PATH is not sent.
pub fn vpnv4_reach(routes: &[VpnRoute], path: &VpnPath, asn4: bool) -> Vec<BgpMessage> {
    // One AS_SEQUENCE holds at most 255 numbers.
    let seq4: Vec<As4PathSegment> = path
        .as_path
        .chunks(255)
        .map(|c| As4PathSegment::new(AsPathSegmentType::AsSequence, c.to_vec()))
        .collect();
    let as_path = if asn4 {
        AsPath::As4PathSegments(seq4.clone().into())
    } else {
        AsPath::As2PathSegments(
            path.as_path
                .chunks(255)
                .map(|c| {
                    let two: Vec<u16> = c
                        .iter()
                        .map(|a| u16::try_from(*a).unwrap_or(AS_TRANS))
                        .collect();
                    As2PathSegment::new(AsPathSegmentType::AsSequence, two)
                })
                .collect::<Vec<_>>()
                .into(),
        )
    };
    let as4_path = (!asn4 && path.as_path.iter().any(|a| *a > u32::from(u16::MAX)))
        .then(|| As4Path::new(seq4));
    let attrs = |nlri: Vec<Ipv4MplsVpnUnicastAddress>| {
        let mut a = vec![
            attribute(false, true, PathAttributeValue::Origin(Origin::IGP)),
            attribute(false, true, PathAttributeValue::AsPath(as_path.clone())),
        ];
        if let Some(med) = path.med {
            a.push(attribute(
                true,
                false,
                PathAttributeValue::MultiExitDiscriminator(MultiExitDiscriminator::new(med)),
            ));
        }
        if let Some(lp) = path.local_pref {
            a.push(attribute(
                false,
                true,
                PathAttributeValue::LocalPreference(LocalPreference::new(lp)),
            ));
        }
        if let Some(r) = &path.reflection {
            a.push(attribute(
                true,
                false,
                PathAttributeValue::Originator(Originator::new(r.originator_id)),
            ));
            a.push(attribute(
                true,
                false,
                PathAttributeValue::ClusterList(ClusterList::new(
                    r.cluster_list
                        .iter()
                        .map(|c| ClusterId::new(*c))
                        .collect::<Vec<_>>(),
                )),
            ));
        }
        if !path.route_targets.is_empty() {
            a.push(attribute(
                true,
                true,
                PathAttributeValue::ExtendedCommunities(ExtendedCommunities::new(
                    path.route_targets.iter().map(rt_of).collect::<Vec<_>>(),
                )),
            ));
        }
        a.push(attribute(
            true,
            false,
            PathAttributeValue::MpReach(MpReach::Ipv4MplsVpnUnicast {
                next_hop: LabeledNextHop::Ipv4(LabeledIpv4NextHop::new(
                    RouteDistinguisher::As2Administrator { asn2: 0, number: 0 },
                    path.next_hop,
                )),
                nlri: nlri.into(),
            }),
        ));
        if let Some(p) = &as4_path {
            // Optional transitive (RFC 6793 section 3).
            a.push(attribute(
                true,
                true,
                PathAttributeValue::As4Path(p.clone()),
            ));
        }
        BgpMessage::Update(BgpUpdateMessage::new(vec![], a, vec![]))
    };
    let room = MAX_MESSAGE - attrs(vec![]).len();
    pack(routes, room, |r| vpn_nlri(r, label_field(r.label)), attrs)
}

/// Withdrawals of `routes`, packed like [`vpnv4_reach`].
pub fn vpnv4_unreach(routes: &[VpnRoute]) -> Vec<BgpMessage> {
    let msg = |nlri: Vec<Ipv4MplsVpnUnicastAddress>| {
        BgpMessage::Update(BgpUpdateMessage::new(
            vec![],
            vec![attribute(
                true,
                false,
                PathAttributeValue::MpUnreach(MpUnreach::Ipv4MplsVpnUnicast { nlri: nlri.into() }),
            )],
            vec![],
        ))
    };
    let room = MAX_MESSAGE - msg(vec![]).len();
    pack(routes, room, |r| vpn_nlri(r, WITHDRAW_LABEL), msg)
}

/// The End-of-RIB marker for VPNv4 (RFC 4724 section 2).
pub fn vpnv4_end_of_rib() -> BgpMessage {
    BgpMessage::Update(BgpUpdateMessage::new(
        vec![],
        vec![attribute(
            true,
            false,
            PathAttributeValue::MpUnreach(MpUnreach::Ipv4MplsVpnUnicast {
                nlri: vec![].into(),
            }),
        )],
        vec![],
    ))
}

fn pack(
    routes: &[VpnRoute],
    room: usize,
    nlri: impl Fn(&VpnRoute) -> Option<Ipv4MplsVpnUnicastAddress>,
    msg: impl Fn(Vec<Ipv4MplsVpnUnicastAddress>) -> BgpMessage,
) -> Vec<BgpMessage> {
    let mut out = Vec::new();
    let (mut batch, mut used) = (Vec::new(), 0);
    for r in routes {
        let Some(n) = nlri(r) else { continue };
        if used + nlri_len(r) > room {
            out.push(msg(std::mem::take(&mut batch)));
            used = 0;
        }
        used += nlri_len(r);
        batch.push(n);
    }
    if !batch.is_empty() {
        out.push(msg(batch));
    }
    out
}

/// A message's bytes.
pub fn encode(m: &BgpMessage) -> Vec<u8> {
    let mut b = Vec::with_capacity(m.len());
    m.write(&mut b)
        .expect("writing to a Vec fails only on a message the builders never make");
    b
}

/// A NOTIFICATION's bytes (RFC 4271 section 4.5): error code, subcode,
/// data. Built by hand: the codec's typed notifications would need a
/// mapping of every code for what is three fields.
pub fn notification(code: u8, subcode: u8, data: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((21 + data.len()) as u16).to_be_bytes());
    m.extend_from_slice(&[3, code, subcode]);
    m.extend_from_slice(data);
    m
}

/// Decodes one whole message (`asn4`: the session negotiated 4-octet AS
/// numbers). Strict: a malformed message is an error, which
/// [`check_update`] has sorted out first for UPDATEs.
pub fn decode(bytes: &[u8], asn4: bool) -> Result<BgpMessage, String> {
    let mut ctx = BgpParsingContext::default();
    ctx.set_asn4(asn4);
    BgpMessage::parse(&mut SliceReader::new(bytes), &mut ctx).map_err(|e| format!("{e}"))
}

/// An AS path segment: AS_SET or not, and its numbers.
type Segment = (bool, Vec<u32>);

/// RFC 6793 section 4.2.3: the AS path of an UPDATE from a peer without
/// 4-octet AS numbers, from its AS_PATH (2-octet, AS_TRANS standing for
/// each 4-octet number) and the AS4_PATH that some speaker on the way
/// added with the real numbers. An AS_SET counts as one AS. When AS_PATH
/// has fewer ASes than AS4_PATH, AS4_PATH is ignored; otherwise the
/// leading ASes of AS_PATH that AS4_PATH lacks (added by speakers without
/// 4-octet support since) come first, then AS4_PATH.
fn merge_as4_path(as_path: &[Segment], as4_path: &[Segment]) -> Vec<Segment> {
    let count = |p: &[Segment]| -> usize {
        p.iter()
            .map(|(set, n)| if *set { 1 } else { n.len() })
            .sum()
    };
    let (n, m) = (count(as_path), count(as4_path));
    if n < m {
        return as_path.to_vec();
    }
    let mut need = n - m;
    let mut out = Vec::new();
    for (set, asns) in as_path {
        if need == 0 {
            break;
        }
        if *set {
            out.push((true, asns.clone()));
            need -= 1;
        } else {
            let take = need.min(asns.len());
            out.push((false, asns[..take].to_vec()));
            need -= take;
        }
    }
    out.extend(as4_path.iter().cloned());
    out
}

/// What an UPDATE says about VPNv4 routes (other families are ignored).
pub fn vpnv4_of(u: &BgpUpdateMessage) -> Vpnv4Update {
    let mut out = Vpnv4Update::default();
    let mut path = VpnPath {
        next_hop: Ipv4Addr::UNSPECIFIED,
        route_targets: vec![],
        local_pref: None,
        med: None,
        as_path: vec![],
        reflection: None,
    };
    let mut as2_path: Option<Vec<Segment>> = None;
    let mut as4_path: Option<Vec<Segment>> = None;
    let mut aggregator_as2: Option<u16> = None;
    let route = |a: &Ipv4MplsVpnUnicastAddress, reach: bool| {
        let label = match (a.label_stack().first(), reach) {
            (Some(l), true) => label_of(l.value()),
            _ => 0,
        };
        Some(VpnRoute {
            rd: id_of_rd(&a.rd())?,
            prefix: a.network().address().addr(),
            len: a.network().address().prefix_len(),
            label,
        })
    };
    for attr in u.path_attributes() {
        match attr.value() {
            PathAttributeValue::MpReach(MpReach::Ipv4MplsVpnUnicast { next_hop, nlri }) => {
                if let LabeledNextHop::Ipv4(nh) = next_hop {
                    path.next_hop = nh.next_hop();
                }
                out.reach.extend(nlri.iter().filter_map(|a| route(a, true)));
            }
            PathAttributeValue::MpUnreach(MpUnreach::Ipv4MplsVpnUnicast { nlri }) => {
                out.end_of_rib |= nlri.is_empty();
                out.withdrawn
                    .extend(nlri.iter().filter_map(|a| route(a, false)));
            }
            PathAttributeValue::ExtendedCommunities(c) => {
                path.route_targets
                    .extend(c.communities().iter().filter_map(id_of_rt));
            }
            PathAttributeValue::LocalPreference(lp) => path.local_pref = Some(lp.metric()),
            PathAttributeValue::Originator(o) => {
                path.reflection
                    .get_or_insert_with(no_reflection)
                    .originator_id = o.id();
            }
            PathAttributeValue::ClusterList(c) => {
                path.reflection
                    .get_or_insert_with(no_reflection)
                    .cluster_list = c.cluster_list().iter().map(|c| c.id()).collect();
            }
            PathAttributeValue::MultiExitDiscriminator(m) => path.med = Some(m.metric()),
            PathAttributeValue::AsPath(AsPath::As4PathSegments(s)) => {
                path.as_path = s
                    .iter()
                    .flat_map(|s| s.as_numbers().iter().copied())
                    .collect();
            }
            PathAttributeValue::AsPath(AsPath::As2PathSegments(s)) => {
                as2_path = Some(
                    s.iter()
                        .map(|s| {
                            let set = s.segment_type() == AsPathSegmentType::AsSet;
                            (set, s.as_numbers().iter().map(|a| u32::from(*a)).collect())
                        })
                        .collect::<Vec<Segment>>(),
                );
            }
            PathAttributeValue::As4Path(p) => {
                as4_path = Some(
                    p.segments()
                        .iter()
                        .map(|s| {
                            let set = s.segment_type() == AsPathSegmentType::AsSet;
                            (set, s.as_numbers().to_vec())
                        })
                        .collect::<Vec<Segment>>(),
                );
            }
            PathAttributeValue::Aggregator(Aggregator::As2Aggregator(a)) => {
                aggregator_as2 = Some(*a.asn());
            }
            _ => {}
        }
    }
    // AS4_PATH counts only beside a 2-octet AS_PATH (a peer without
    // 4-octet support; from one with it, it is ignored: RFC 6793 section
    // 4.2.1), and not when AGGREGATOR names an AS other than AS_TRANS
    // (section 4.2.3: a speaker without 4-octet support aggregated since).
    if let Some(two) = as2_path {
        let merged = match as4_path {
            Some(four) if aggregator_as2.is_none_or(|a| a == AS_TRANS) => {
                merge_as4_path(&two, &four)
            }
            _ => two,
        };
        path.as_path = merged.into_iter().flat_map(|(_, n)| n).collect();
    }
    if !out.reach.is_empty() {
        out.path = Some(path);
    }
    out
}

/// How RFC 7606 says to handle an UPDATE. Every verdict but `Reset`
/// carries the bytes to decode: an UPDATE rebuilt from what
/// [`check_update`] read and found well formed (attribute flags in their
/// canonical form, no IPv4 unicast fields, VPNv4 routes only), so that the
/// strict decoder always takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Well formed. `transitive`: the optional transitive attributes
    /// hdvrf does not read, whole and with the Partial bit set, as RFC 4271
    /// section 5 passes them on.
    Fine {
        update: Vec<u8>,
        transitive: Vec<u8>,
    },
    /// Attribute discard (RFC 7606 section 2): `update` is the UPDATE
    /// without the attributes of type `discarded`; `why` names them and
    /// the rule.
    Discard {
        update: Vec<u8>,
        transitive: Vec<u8>,
        discarded: Vec<u8>,
        why: String,
    },
    /// Treat-as-withdraw (RFC 7606 section 2): every route the UPDATE
    /// advertises is withdrawn. `update` holds only its MP_REACH_NLRI and
    /// MP_UNREACH_NLRI, to decode for the routes.
    TreatAsWithdraw { update: Vec<u8>, why: String },
    /// Session reset: send this NOTIFICATION (code, subcode, data).
    Reset {
        code: u8,
        subcode: u8,
        data: Vec<u8>,
        why: String,
    },
}

// Path attribute type codes (IANA "BGP Path Attributes").
const ORIGIN: u8 = 1;
const AS_PATH: u8 = 2;
const NEXT_HOP: u8 = 3;
const MED: u8 = 4;
const LOCAL_PREF: u8 = 5;
const ATOMIC_AGGREGATE: u8 = 6;
const AGGREGATOR: u8 = 7;
const COMMUNITIES: u8 = 8;
const ORIGINATOR_ID: u8 = 9;
const CLUSTER_LIST: u8 = 10;
const MP_REACH: u8 = 14;
const MP_UNREACH: u8 = 15;
const EXT_COMMUNITIES: u8 = 16;
const AS4_PATH: u8 = 17;
const AS4_AGGREGATOR: u8 = 18;
const LARGE_COMMUNITY: u8 = 32;
// Attribute flags (RFC 4271 section 4.3).
const OPTIONAL: u8 = 0x80;
const TRANSITIVE: u8 = 0x40;
const PARTIAL: u8 = 0x20;
const EXTENDED: u8 = 0x10;
/// AFI 1, SAFI 128: VPN-IPv4 (RFC 4364 section 4.3.4).
const VPNV4: [u8; 3] = [0, 1, 128];
/// UPDATE Message Error (RFC 4271 section 4.5) and its subcodes.
const UPDATE_ERROR: u8 = 3;
const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
const UNRECOGNIZED_WELL_KNOWN: u8 = 2;
const OPTIONAL_ATTRIBUTE_ERROR: u8 = 9;
const INVALID_NETWORK_FIELD: u8 = 10;

/// The attributes whose values hdvrf checks, with the Optional and
/// Transitive flags each must carry (RFC 4271 section 5; RFC 1997,
/// RFC 4456, RFC 4760, RFC 4360, RFC 6793, RFC 8092). The others are
/// not read: unknown to hdvrf, optional transitive ones are passed on.
fn known(kind: u8) -> Option<(&'static str, u8)> {
    Some(match kind {
        ORIGIN => ("ORIGIN", TRANSITIVE),
        AS_PATH => ("AS_PATH", TRANSITIVE),
        NEXT_HOP => ("NEXT_HOP", TRANSITIVE),
        MED => ("MULTI_EXIT_DISC", OPTIONAL),
        LOCAL_PREF => ("LOCAL_PREF", TRANSITIVE),
        ATOMIC_AGGREGATE => ("ATOMIC_AGGREGATE", TRANSITIVE),
        AGGREGATOR => ("AGGREGATOR", OPTIONAL | TRANSITIVE),
        COMMUNITIES => ("COMMUNITIES", OPTIONAL | TRANSITIVE),
        ORIGINATOR_ID => ("ORIGINATOR_ID", OPTIONAL),
        CLUSTER_LIST => ("CLUSTER_LIST", OPTIONAL),
        MP_REACH => ("MP_REACH_NLRI", OPTIONAL),
        MP_UNREACH => ("MP_UNREACH_NLRI", OPTIONAL),
        EXT_COMMUNITIES => ("EXTENDED_COMMUNITIES", OPTIONAL | TRANSITIVE),
        AS4_PATH => ("AS4_PATH", OPTIONAL | TRANSITIVE),
        AS4_AGGREGATOR => ("AS4_AGGREGATOR", OPTIONAL | TRANSITIVE),
        LARGE_COMMUNITY => ("LARGE_COMMUNITY", OPTIONAL | TRANSITIVE),
        _ => return None,
    })
}

/// An attribute's name for logs: its RFC name, or "attribute".
pub fn attribute_name(kind: u8) -> &'static str {
    known(kind).map_or("attribute", |(name, _)| name)
}

/// What RFC 7606 does about a malformed attribute, least severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Discard,
    Withdraw,
    /// Session reset with this UPDATE Message Error subcode.
    Reset(u8),
}

/// A malformed attribute: what to do, and the log text naming it.
struct Fault {
    action: Action,
    why: String,
    /// The NOTIFICATION's data, for a reset.
    data: Vec<u8>,
}

impl Fault {
    fn new(action: Action, kind: u8, what: impl std::fmt::Display) -> Fault {
        Fault {
            action,
            why: format!("{} (type {kind}): {what}", attribute_name(kind)),
            data: Vec::new(),
        }
    }
}

/// One raw path attribute: flags, type, value, and its whole bytes.
struct RawAttr<'a> {
    flags: u8,
    kind: u8,
    value: &'a [u8],
    whole: &'a [u8],
}

/// The attributes of an attribute section, and, if one's header or value
/// runs past the section's end (RFC 7606 section 4), why.
fn walk(section: &[u8]) -> (Vec<RawAttr<'_>>, Option<String>) {
    let mut attrs = Vec::new();
    let mut at = 0;
    while at < section.len() {
        let h = &section[at..];
        let (flags, kind) = match h {
            [f, k, ..] => (*f, *k),
            _ => return (attrs, Some("an attribute header is cut short".into())),
        };
        let hl = if flags & EXTENDED != 0 { 4 } else { 3 };
        let len = match h.get(2..hl) {
            Some([l]) => usize::from(*l),
            Some([a, b]) => usize::from(u16::from_be_bytes([*a, *b])),
            _ => {
                let why = format!(
                    "{} (type {kind}): its length is cut short",
                    attribute_name(kind)
                );
                return (attrs, Some(why));
            }
        };
        let Some(whole) = h.get(..hl + len) else {
            let why = format!(
                "{} (type {kind}): length {len} runs past the attribute section",
                attribute_name(kind)
            );
            return (attrs, Some(why));
        };
        attrs.push(RawAttr {
            flags,
            kind,
            value: &whole[hl..],
            whole,
        });
        at += hl + len;
    }
    (attrs, None)
}

/// What becomes of an attribute that is not malformed (or whose fault
/// still leaves it usable).
enum Keep {
    /// Decoded: these canonical bytes.
    Decode(Vec<u8>),
    /// Not read by hdvrf, passed on: these bytes, Partial bit set.
    PassOn(Vec<u8>),
    /// Not read by hdvrf and not passed on.
    Drop,
}

/// An attribute as the decoder is given it: the flags its type must
/// carry, Partial and Extended Length only where needed.
fn put_attribute(out: &mut Vec<u8>, flags: u8, kind: u8, v: &[u8]) {
    match u8::try_from(v.len()) {
        Ok(len) => out.extend_from_slice(&[flags & !EXTENDED, kind, len]),
        Err(_) => {
            out.extend_from_slice(&[flags | EXTENDED, kind]);
            out.extend_from_slice(&(v.len() as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(v);
}

/// Applies RFC 7606 to a whole UPDATE message (header included) before it
/// is decoded: the attribute headers are walked, the flags and values of
/// every attribute with rules of its own checked (sections 3, 4, 5 and 7.1
/// to 7.14; RFC 6793 section 6; RFC 8092 section 6), and the message either
/// passes, loses attributes, becomes a withdrawal of what it advertised,
/// or resets the session. `asn4`: the session negotiated 4-octet AS
/// numbers; `ebgp`: the peer is in another AS.
pub fn check_update(msg: &[u8], asn4: bool, ebgp: bool) -> Verdict {
    let reset = |subcode: u8, data: &[u8], why: String| Verdict::Reset {
        code: UPDATE_ERROR,
        subcode,
        data: data.to_vec(),
        why,
    };
    let body = msg.get(19..).unwrap_or_default();
    let Some(wlen) = body
        .get(..2)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    else {
        return reset(
            MALFORMED_ATTRIBUTE_LIST,
            &[],
            "no withdrawn routes length".into(),
        );
    };
    let Some(alen_at) = body.get(2 + wlen..4 + wlen) else {
        return reset(
            MALFORMED_ATTRIBUTE_LIST,
            &[],
            "withdrawn routes length runs past the message".into(),
        );
    };
    let alen = usize::from(u16::from_be_bytes([alen_at[0], alen_at[1]]));
    let start = 4 + wlen;
    let Some(section) = body.get(start..start + alen) else {
        // Section 4: the attribute section's length is inconsistent.
        return reset(
            MALFORMED_ATTRIBUTE_LIST,
            &[],
            "total path attribute length runs past the message".into(),
        );
    };
    let nlri = &body[start + alen..];
    // Section 5.3: a syntax error in the IPv4 unicast fields leaves no
    // route to withdraw. Their routes are not read further: IPv4 unicast
    // is not negotiated, and RFC 4271 section 6.3 ignores what is not
    // unicast.
    for (field, f) in [("withdrawn routes", &body[2..2 + wlen]), ("NLRI", nlri)] {
        if let Err(why) = ipv4_prefixes_ok(f) {
            return reset(
                INVALID_NETWORK_FIELD,
                &[],
                format!("{field} field: {why} (RFC 7606 section 5.3)"),
            );
        }
    }
    let (attrs, overrun) = walk(section);
    let count = |k: u8| attrs.iter().filter(|a| a.kind == k).count();
    // Section 3 (g): MP_REACH_NLRI or MP_UNREACH_NLRI more than once.
    if count(MP_REACH) > 1 || count(MP_UNREACH) > 1 {
        return reset(
            MALFORMED_ATTRIBUTE_LIST,
            &[],
            "MP_REACH_NLRI (type 14) or MP_UNREACH_NLRI (type 15) appears twice (RFC 7606 section 3 (g))".into(),
        );
    }
    let mut worst: Option<Fault> = None;
    let mut discarded: Vec<u8> = Vec::new();
    let mut discard_why: Vec<String> = Vec::new();
    let mut seen = [false; 256];
    // Canonical bytes of the attributes to decode, by type.
    let mut decode: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut transitive = Vec::new();
    for a in &attrs {
        if std::mem::replace(&mut seen[usize::from(a.kind)], true) {
            // Section 3 (g): all but the first discarded.
            discarded.push(a.kind);
            discard_why.push(format!(
                "{} (type {}): repeated (RFC 7606 section 3 (g))",
                attribute_name(a.kind),
                a.kind
            ));
            continue;
        }
        let (fault, keep) = check_attribute(a, asn4, ebgp);
        match keep {
            Keep::Decode(b) => decode.push((a.kind, b)),
            Keep::PassOn(b) => transitive.extend_from_slice(&b),
            Keep::Drop => {}
        }
        match fault {
            Some(f) if f.action == Action::Discard => {
                discarded.push(a.kind);
                discard_why.push(f.why);
            }
            Some(f) if worst.as_ref().is_none_or(|w| f.action > w.action) => worst = Some(f),
            _ => {}
        }
    }
    let only_mp = |decode: &[(u8, Vec<u8>)]| {
        rebuild(
            decode
                .iter()
                .filter(|(k, _)| *k == MP_REACH || *k == MP_UNREACH)
                .map(|(_, b)| b.as_slice()),
        )
    };
    if let Some(Fault {
        action: Action::Reset(subcode),
        why,
        data,
    }) = worst
    {
        return reset(subcode, &data, why);
    }
    if let Some(why) = overrun {
        // Section 4: treat-as-withdraw, if the routes can all be found:
        // MP_REACH_NLRI read before the overrun and no IPv4 NLRI (which
        // the attributes past it might have been about).
        if count(MP_REACH) == 1 && nlri.is_empty() {
            return Verdict::TreatAsWithdraw {
                update: only_mp(&decode),
                why: format!("{why} (RFC 7606 section 4)"),
            };
        }
        return reset(
            MALFORMED_ATTRIBUTE_LIST,
            &[],
            format!("{why} (RFC 7606 section 4)"),
        );
    }
    // Section 3 (d): a well-known mandatory attribute missing from an
    // UPDATE that advertises routes (NEXT_HOP is for IPv4 NLRI only).
    if worst.is_none() && (seen[usize::from(MP_REACH)] || !nlri.is_empty()) {
        for k in [ORIGIN, AS_PATH] {
            if !seen[usize::from(k)] {
                worst = Some(Fault::new(
                    Action::Withdraw,
                    k,
                    "missing (RFC 7606 section 3 (d))",
                ));
                break;
            }
        }
    }
    if let Some(f) = worst {
        return Verdict::TreatAsWithdraw {
            update: only_mp(&decode),
            why: f.why,
        };
    }
    let update = rebuild(decode.iter().map(|(_, b)| b.as_slice()));
    if discarded.is_empty() {
        return Verdict::Fine { update, transitive };
    }
    Verdict::Discard {
        update,
        transitive,
        discarded,
        why: discard_why.join("; "),
    }
}

/// RFC 7606's verdict on one attribute (the first of its type), and what
/// is left of it to decode or pass on.
fn check_attribute(a: &RawAttr, asn4: bool, ebgp: bool) -> (Option<Fault>, Keep) {
    let kind = a.kind;
    let Some((_, flags)) = known(kind) else {
        if a.flags & OPTIONAL == 0 {
            // RFC 4271 section 6.3, which RFC 7606 leaves as it is.
            let mut f = Fault::new(
                Action::Reset(UNRECOGNIZED_WELL_KNOWN),
                kind,
                "an unrecognized well-known attribute (RFC 4271 section 6.3)",
            );
            f.data = a.whole.to_vec();
            return (Some(f), Keep::Drop);
        }
        if a.flags & TRANSITIVE == 0 {
            return (None, Keep::Drop);
        }
        let mut b = a.whole.to_vec();
        b[0] |= PARTIAL;
        return (None, Keep::PassOn(b));
    };
    let (v, n) = (a.value, a.value.len());
    let length = |want: &str, rule: &str| format!("length {n}, want {want} ({rule})");
    let mut value = std::borrow::Cow::Borrowed(v);
    let fault = match kind {
        ORIGIN if n != 1 => Some((Action::Withdraw, length("1", "RFC 7606 section 7.1"))),
        ORIGIN if v[0] > 2 => Some((
            Action::Withdraw,
            format!("undefined value {} (RFC 7606 section 7.1)", v[0]),
        )),
        AS_PATH => as_path_fault(v, if asn4 { 4 } else { 2 })
            .map(|w| format!("{w} (RFC 7606 section 7.2)"))
            .or_else(|| {
                // Confederation segments come only from a member of our
                // confederation, and hdvrf is in none (RFC 5065 section
                // 5.3); the codec has no type for them either.
                confederation_segments(v, if asn4 { 4 } else { 2 }).then(|| {
                    "a confederation segment from outside any confederation \
                     (RFC 5065 section 5.3, RFC 7606 section 7.2)"
                        .to_string()
                })
            })
            .map(|w| (Action::Withdraw, w)),
        NEXT_HOP if n != 4 => Some((Action::Withdraw, length("4", "RFC 7606 section 7.3"))),
        MED if n != 4 => Some((Action::Withdraw, length("4", "RFC 7606 section 7.4"))),
        LOCAL_PREF if ebgp => Some((
            Action::Discard,
            "from an external peer (RFC 7606 section 7.5)".into(),
        )),
        LOCAL_PREF if n != 4 => Some((Action::Withdraw, length("4", "RFC 7606 section 7.5"))),
        ATOMIC_AGGREGATE if n != 0 => Some((Action::Discard, length("0", "RFC 7606 section 7.6"))),
        AGGREGATOR if n != if asn4 { 8 } else { 6 } => Some((
            Action::Discard,
            length(if asn4 { "8" } else { "6" }, "RFC 7606 section 7.7"),
        )),
        COMMUNITIES if n == 0 || n % 4 != 0 => Some((
            Action::Withdraw,
            length("a non-zero multiple of 4", "RFC 7606 section 7.8"),
        )),
        ORIGINATOR_ID if n != 4 => Some((Action::Withdraw, length("4", "RFC 7606 section 7.9"))),
        CLUSTER_LIST if n == 0 || n % 4 != 0 => Some((
            Action::Withdraw,
            length("a non-zero multiple of 4", "RFC 7606 section 7.10"),
        )),
        MP_REACH | MP_UNREACH => match mp_value(kind, v) {
            // RFC 8277 section 2.2: without the Multiple Labels capability
            // (we do not send it) a prefix has one label. The
            // bottom-of-stack bits still delimit what the peer sent, so
            // its routes are known: withdrawn (RFC 7606 section 2) rather
            // than the session reset an unreadable NLRI needs, which the
            // peer would repeat on every reconnection.
            Err(w) => {
                let collapsed = (kind == MP_REACH)
                    .then(|| one_label_each(v))
                    .flatten()
                    .and_then(|c| mp_value(kind, &c[4..]).ok().flatten());
                if let Some(ours) = collapsed {
                    let mut b = Vec::with_capacity(4 + ours.len());
                    put_attribute(&mut b, flags, kind, &ours);
                    let f = Fault::new(
                        Action::Withdraw,
                        kind,
                        "an NLRI carries more than one label, without the Multiple Labels capability (RFC 8277 section 2.2)",
                    );
                    return (Some(f), Keep::Decode(b));
                }
                // Section 7.11: the routes cannot be found; session reset
                // (the other choice, AFI/SAFI disable, would leave a
                // VPNv4-only session with nothing).
                let mut f = Fault::new(
                    Action::Reset(OPTIONAL_ATTRIBUTE_ERROR),
                    kind,
                    format!("{w} (RFC 7606 section 7.11)"),
                );
                f.data = a.whole.to_vec();
                return (Some(f), Keep::Drop);
            }
            // Another family: never negotiated, not read.
            Ok(None) => return (None, Keep::Drop),
            Ok(Some(ours)) => {
                value = std::borrow::Cow::Owned(ours);
                None
            }
        },
        EXT_COMMUNITIES if n == 0 || n % 8 != 0 => Some((
            Action::Withdraw,
            length("a non-zero multiple of 8", "RFC 7606 section 7.14"),
        )),
        AS4_PATH => match (n < 6)
            .then(|| "shorter than one AS number".to_string())
            .or_else(|| as_path_fault(v, 4))
        {
            Some(w) => Some((Action::Discard, format!("{w} (RFC 6793 section 6)"))),
            None => {
                // RFC 6793 section 6: confederation segments in AS4_PATH
                // are dropped, the rest used.
                let rest = without_confederation_segments(v);
                if rest.is_empty() {
                    return (None, Keep::Drop);
                }
                value = std::borrow::Cow::Owned(rest);
                None
            }
        },
        AS4_AGGREGATOR if n != 8 => Some((Action::Discard, length("8", "RFC 6793 section 6"))),
        LARGE_COMMUNITY if n == 0 || n % 12 != 0 => Some((
            Action::Withdraw,
            length("a non-zero multiple of 12", "RFC 8092 section 6"),
        )),
        _ => None,
    };
    if let Some((action, what)) = fault {
        // A bad value: the attribute is not decoded, whatever is done.
        return (Some(Fault::new(action, kind, what)), Keep::Drop);
    }
    let mut b = Vec::with_capacity(4 + value.len());
    put_attribute(&mut b, flags, kind, &value);
    // Section 3 (c): Optional or Transitive flags other than the type's
    // make the attribute malformed: treat-as-withdraw. The value is fine,
    // so an MP_REACH_NLRI's routes are still found.
    let fault = (a.flags & (OPTIONAL | TRANSITIVE) != flags).then(|| {
        Fault::new(
            Action::Withdraw,
            kind,
            format!(
                "flags {:#04x} conflict with its Optional and Transitive bits (RFC 7606 section 3 (c))",
                a.flags
            ),
        )
    });
    (fault, Keep::Decode(b))
}

/// Why an AS_PATH (or AS4_PATH, `w` 4) value of `w`-octet AS numbers is
/// malformed (RFC 7606 section 7.2, RFC 6793 section 6), if it is.
fn as_path_fault(v: &[u8], w: usize) -> Option<String> {
    let mut at = 0;
    while at < v.len() {
        let (Some(&t), Some(&n)) = (v.get(at), v.get(at + 1)) else {
            return Some("a segment header is cut short".into());
        };
        // AS_SET 1, AS_SEQUENCE 2, confederations 3 and 4.
        if !(1..=4).contains(&t) {
            return Some(format!("undefined segment type {t}"));
        }
        if n == 0 {
            return Some("an empty segment".into());
        }
        at += 2 + usize::from(n) * w;
    }
    (at != v.len()).then(|| "a segment runs past the attribute".into())
}

/// Whether a well-formed AS_PATH of `w`-octet AS numbers has
/// AS_CONFED_SEQUENCE (3) or AS_CONFED_SET (4) segments.
fn confederation_segments(v: &[u8], w: usize) -> bool {
    let mut at = 0;
    while let (Some(&t), Some(&n)) = (v.get(at), v.get(at + 1)) {
        if t == 3 || t == 4 {
            return true;
        }
        at += 2 + usize::from(n) * w;
    }
    false
}

/// A well-formed AS4_PATH without its confederation segments.
fn without_confederation_segments(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut at = 0;
    while let (Some(&t), Some(&n)) = (v.get(at), v.get(at + 1)) {
        let end = at + 2 + usize::from(n) * 4;
        if t != 3 && t != 4 {
            out.extend_from_slice(&v[at..end]);
        }
        at = end;
    }
    out
}

/// Why an IPv4 prefix list (withdrawn routes, NLRI) is syntactically
/// wrong, if it is (RFC 7606 section 5.3).
fn ipv4_prefixes_ok(f: &[u8]) -> Result<(), String> {
    let mut at = 0;
    while let Some(&bits) = f.get(at) {
        if bits > 32 {
            return Err(format!("a prefix of {bits} bits"));
        }
        at += 1 + usize::from(bits).div_ceil(8);
    }
    if at > f.len() {
        return Err("a prefix runs past the field".into());
    }
    Ok(())
}

/// The value of an MP_REACH_NLRI or MP_UNREACH_NLRI as hdvrf decodes it:
/// `None` for a family other than VPNv4; VPNv4 routes hdvrf cannot hold
/// left out (RD types other than 0 to 2, prefixes that are not unicast:
/// RFC 4271 section 6.3 ignores them) and the next hop's RD zeroed (RFC
/// 4364 section 4.3.2). An error names what makes the routes impossible to
/// find (RFC 7606 section 7.11).
fn mp_value(kind: u8, v: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let afi_safi = v.get(..3).ok_or("shorter than its AFI and SAFI")?;
    let ours = afi_safi == VPNV4;
    let mut out = afi_safi.to_vec();
    let mut at = 3;
    if kind == MP_REACH {
        let nh = usize::from(*v.get(3).ok_or("no next hop length")?);
        if v.len() < 5 + nh {
            return Err(format!(
                "next hop length {nh} leaves no room for the reserved octet"
            ));
        }
        if ours {
            if nh != 12 && nh != 24 {
                return Err(format!("VPNv4 next hop length {nh}, want 12 or 24"));
            }
            out.push(nh as u8);
            out.extend_from_slice(&[0; 8]);
            out.extend_from_slice(&v[12..4 + nh]);
            out.push(0);
        }
        at = 5 + nh;
    }
    if !ours {
        return Ok(None);
    }
    while at < v.len() {
        let bits = usize::from(v[at]);
        // One label (24 bits) and an RD (64), then at most 32 prefix bits.
        if !(88..=120).contains(&bits) {
            return Err(format!("a VPNv4 NLRI of {bits} bits, want 88 to 120"));
        }
        let end = at + 1 + bits.div_ceil(8);
        let Some(n) = v.get(at..end) else {
            return Err("a VPNv4 NLRI runs past the attribute".into());
        };
        let mut addr = [0; 4];
        addr[..n.len() - 12].copy_from_slice(&n[12..]);
        let unicast = ipnet::Ipv4Net::new(Ipv4Addr::from(addr), (bits - 88) as u8)
            .ok()
            .is_some_and(|net| Ipv4Unicast::from_net(net).is_ok());
        if unicast && n[4] == 0 && n[5] <= 2 {
            out.extend_from_slice(n);
        }
        at = end;
    }
    Ok(Some(out))
}

/// A VPNv4 MP_REACH_NLRI value whose NLRI tile it when each label stack
/// runs to its bottom-of-stack bit (RFC 8277 section 2.3's encoding), one
/// of them at least with more than one label: the whole attribute
/// (extended length) with each NLRI cut down to its last label, which is
/// all the decoder reads without the Multiple Labels capability and
/// enough to name the routes (RD and prefix) to withdraw.
fn one_label_each(v: &[u8]) -> Option<Vec<u8>> {
    if v.get(..3)? != [0, 1, 128] {
        return None;
    }
    let nh = usize::from(*v.get(3)?);
    if nh != 12 && nh != 24 {
        return None;
    }
    let mut at = 4 + nh + 1;
    let mut out = v.get(..at)?.to_vec();
    let mut more = false;
    while at < v.len() {
        let bits = usize::from(v[at]);
        let nlri = v.get(at + 1..at + 1 + bits.div_ceil(8))?;
        let mut labels = 0;
        loop {
            let label = nlri.get(3 * labels..3 * labels + 3)?;
            labels += 1;
            if label[2] & 1 == 1 {
                break;
            }
        }
        // RD (64 bits) and at most 32 prefix bits after the labels.
        let rest = bits.checked_sub(24 * labels)?;
        if !(64..=96).contains(&rest) {
            return None;
        }
        more |= labels > 1;
        out.push((24 + rest) as u8);
        out.extend_from_slice(&nlri[3 * (labels - 1)..]);
        at += 1 + nlri.len();
    }
    if !more {
        return None;
    }
    let mut whole = vec![0x90, MP_REACH];
    whole.extend_from_slice(&u16::try_from(out.len()).ok()?.to_be_bytes());
    whole.extend_from_slice(&out);
    Some(whole)
}

/// An UPDATE with no IPv4 unicast fields and these attributes.
fn rebuild<'a>(attrs: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0]);
    for a in attrs {
        m.extend_from_slice(a);
    }
    let alen = (m.len() - 23) as u16;
    m[21..23].copy_from_slice(&alen.to_be_bytes());
    let len = m.len() as u16;
    m[16..18].copy_from_slice(&len.to_be_bytes());
    m
}

/// The withdrawal of what `update` (as [`check_update`] returned it)
/// advertises: its MP_REACH_NLRI and MP_UNREACH_NLRI only. For when the
/// decoder refuses what RFC 7606's checks passed, which is a gap in them:
/// treat-as-withdraw is still what RFC 7606 wants while the routes can be
/// found.
pub fn withdrawal_of(update: &[u8]) -> Vec<u8> {
    let section = update.get(23..).unwrap_or_default();
    let (attrs, _) = walk(section);
    rebuild(
        attrs
            .iter()
            .filter(|a| a.kind == MP_REACH || a.kind == MP_UNREACH)
            .map(|a| a.whole),
    )
}

#[cfg(test)]
mod tests;
