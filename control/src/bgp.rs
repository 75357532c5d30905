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
//!   [`check_update`] walks the raw path attributes first (their headers
//!   only, which is all RFC 7606 needs) and decides; a bad attribute never
//!   reaches the decoder.
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
    As4PathSegment, AsPath, AsPathSegmentType, ClusterId, ClusterList, ExtendedCommunities,
    LocalPreference, MpReach, MpUnreach, MultiExitDiscriminator, Origin, Originator, PathAttribute,
    PathAttributeValue,
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
pub fn vpnv4_reach(routes: &[VpnRoute], path: &VpnPath) -> Vec<BgpMessage> {
    let attrs = |nlri: Vec<Ipv4MplsVpnUnicastAddress>| {
        let mut a = vec![
            attribute(false, true, PathAttributeValue::Origin(Origin::IGP)),
            attribute(
                false,
                true,
                PathAttributeValue::AsPath(AsPath::As4PathSegments(
                    if path.as_path.is_empty() {
                        vec![]
                    } else {
                        vec![As4PathSegment::new(
                            AsPathSegmentType::AsSequence,
                            path.as_path.clone(),
                        )]
                    }
                    .into(),
                )),
            ),
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
                path.as_path = s
                    .iter()
                    .flat_map(|s| s.as_numbers().iter().map(|a| u32::from(*a)))
                    .collect();
            }
            _ => {}
        }
    }
    if !out.reach.is_empty() {
        out.path = Some(path);
    }
    out
}

/// How RFC 7606 says to handle an UPDATE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Well formed: decode it as it is.
    Fine,
    /// Decode these bytes instead: the same UPDATE without attributes
    /// RFC 7606 says to discard (type codes in `discarded`).
    Discard { update: Vec<u8>, discarded: Vec<u8> },
    /// Treat as withdraw (RFC 7606 section 2): every route the UPDATE
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

const ORIGIN: u8 = 1;
const AS_PATH: u8 = 2;
const NEXT_HOP: u8 = 3;
const MED: u8 = 4;
const LOCAL_PREF: u8 = 5;
const ATOMIC_AGGREGATE: u8 = 6;
const AGGREGATOR: u8 = 7;
const MP_REACH: u8 = 14;
const MP_UNREACH: u8 = 15;
const EXT_COMMUNITIES: u8 = 16;
/// UPDATE Message Error (RFC 4271 section 4.5).
const UPDATE_ERROR: u8 = 3;
const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
const OPTIONAL_ATTRIBUTE_ERROR: u8 = 9;

/// One raw path attribute: flags, type, value, and where its header starts.
struct RawAttr<'a> {
    flags: u8,
    kind: u8,
    value: &'a [u8],
    whole: &'a [u8],
}

/// Applies RFC 7606 to a whole UPDATE message (header included) before it
/// is decoded: the attribute headers are walked here, the values of the
/// attributes with fixed rules (sections 7.1 to 7.14 that apply to VPNv4)
/// checked, and the message either passes, loses attributes, becomes a
/// withdrawal of what it advertised, or resets the session.
pub fn check_update(msg: &[u8], asn4: bool) -> Verdict {
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
    let nlri_present = body.len() > start + alen;
    // Walk the attribute headers.
    let mut attrs: Vec<RawAttr> = Vec::new();
    let mut at = 0;
    let mut overrun = None;
    while at < section.len() {
        let h = &section[at..];
        let (flags, kind) = match h {
            [f, k, ..] => (*f, *k),
            _ => {
                overrun = Some("an attribute header is cut short".to_string());
                break;
            }
        };
        let (len, hl) = if flags & 0x10 != 0 {
            match h.get(2..4) {
                Some(l) => (usize::from(u16::from_be_bytes([l[0], l[1]])), 4),
                None => {
                    overrun = Some(format!("attribute {kind}'s length is cut short"));
                    break;
                }
            }
        } else {
            match h.get(2) {
                Some(l) => (usize::from(*l), 3),
                None => {
                    overrun = Some(format!("attribute {kind}'s length is cut short"));
                    break;
                }
            }
        };
        let Some(whole) = h.get(..hl + len) else {
            overrun = Some(format!(
                "attribute {kind}'s length {len} runs past the attribute section"
            ));
            break;
        };
        attrs.push(RawAttr {
            flags,
            kind,
            value: &whole[hl..],
            whole,
        });
        at += hl + len;
    }
    let mp = |k: u8| attrs.iter().filter(|a| a.kind == k).count();
    // Section 3 (g): MP_REACH_NLRI or MP_UNREACH_NLRI more than once.
    if mp(MP_REACH) > 1 || mp(MP_UNREACH) > 1 {
        return reset(
            MALFORMED_ATTRIBUTE_LIST,
            &[],
            "MP_REACH_NLRI or MP_UNREACH_NLRI appears twice".into(),
        );
    }
    let only_mp = |attrs: &[RawAttr]| -> Vec<u8> {
        let keep: Vec<&RawAttr> = attrs
            .iter()
            .filter(|a| a.kind == MP_REACH || a.kind == MP_UNREACH)
            .collect();
        rebuild(&keep)
    };
    if let Some(why) = overrun {
        // Section 4: with the attributes unparseable, treat-as-withdraw
        // only if the NLRI are all found (MP_REACH_NLRI already read and no
        // plain NLRI); otherwise reset.
        if mp(MP_REACH) == 1 && !nlri_present {
            return Verdict::TreatAsWithdraw {
                update: only_mp(&attrs),
                why,
            };
        }
        return reset(MALFORMED_ATTRIBUTE_LIST, &[], why);
    }
    let mut withdraw: Option<String> = None;
    let mut discarded: Vec<u8> = Vec::new();
    let mut seen: Vec<u8> = Vec::new();
    // What is left after the discards.
    let mut kept: Vec<&RawAttr> = Vec::new();
    for a in &attrs {
        if seen.contains(&a.kind) {
            // Section 3 (g): all but the first discarded.
            discarded.push(a.kind);
            continue;
        }
        seen.push(a.kind);
        let well_known_flags = a.flags & 0x80 == 0 && a.flags & 0x40 != 0;
        let bad = match a.kind {
            ORIGIN => (a.value.len() != 1 || a.value[0] > 2 || !well_known_flags)
                .then_some("ORIGIN malformed (section 7.1)"),
            AS_PATH => (!as_path_ok(a.value, asn4) || !well_known_flags)
                .then_some("AS_PATH malformed (section 7.2)"),
            NEXT_HOP => (a.value.len() != 4).then_some("NEXT_HOP length is not 4 (section 7.3)"),
            MED => (a.value.len() != 4).then_some("MULTI_EXIT_DISC length is not 4 (section 7.4)"),
            LOCAL_PREF => {
                (a.value.len() != 4).then_some("LOCAL_PREF length is not 4 (section 7.5)")
            }
            EXT_COMMUNITIES => (a.value.len() % 8 != 0)
                .then_some("EXTENDED_COMMUNITIES length is not a multiple of 8 (section 7.14)"),
            // Sections 7.6 and 7.7: attribute discard.
            ATOMIC_AGGREGATE | AGGREGATOR => {
                let want = match a.kind {
                    ATOMIC_AGGREGATE => 0,
                    _ if asn4 => 8,
                    _ => 6,
                };
                if a.value.len() != want {
                    discarded.push(a.kind);
                    continue;
                }
                None
            }
            MP_REACH | MP_UNREACH => {
                if !mp_ok(a.kind, a.value) {
                    // Section 7.11: session reset (or AFI/SAFI disable).
                    return reset(
                        OPTIONAL_ATTRIBUTE_ERROR,
                        a.whole,
                        format!(
                            "{} malformed (section 7.11)",
                            if a.kind == MP_REACH {
                                "MP_REACH_NLRI"
                            } else {
                                "MP_UNREACH_NLRI"
                            }
                        ),
                    );
                }
                None
            }
            _ => None,
        };
        if let (Some(why), None) = (bad, &withdraw) {
            withdraw = Some(why.to_string());
        }
        kept.push(a);
    }
    // Section 3 (d): a missing well-known mandatory attribute when routes
    // are advertised.
    if withdraw.is_none() && (mp(MP_REACH) == 1 || nlri_present) {
        for (k, name) in [(ORIGIN, "ORIGIN"), (AS_PATH, "AS_PATH")] {
            if mp(k) == 0 {
                withdraw = Some(format!("{name} is missing (section 3 (d))"));
                break;
            }
        }
    }
    if let Some(why) = withdraw {
        // Plain IPv4 NLRI, if any, are not ours and go unread.
        return Verdict::TreatAsWithdraw {
            update: only_mp(&attrs),
            why,
        };
    }
    if !discarded.is_empty() {
        return Verdict::Discard {
            update: rebuild_with(&body[..2 + wlen], &kept, &body[start + alen..]),
            discarded,
        };
    }
    Verdict::Fine
}

fn as_path_ok(v: &[u8], asn4: bool) -> bool {
    let w = if asn4 { 4 } else { 2 };
    let mut at = 0;
    while at < v.len() {
        let (Some(&t), Some(&n)) = (v.get(at), v.get(at + 1)) else {
            return false;
        };
        // AS_SET 1, AS_SEQUENCE 2, confederations 3 and 4; no empty segment.
        if !(1..=4).contains(&t) || n == 0 {
            return false;
        }
        at += 2 + usize::from(n) * w;
    }
    at == v.len()
}

/// An MP_REACH_NLRI or MP_UNREACH_NLRI whose VPNv4 NLRI (if that is the
/// family) tile its value exactly.
fn mp_ok(kind: u8, v: &[u8]) -> bool {
    let Some(afi_safi) = v.get(..3) else {
        return false;
    };
    let mut at = 3;
    if kind == MP_REACH {
        let Some(&nh) = v.get(3) else { return false };
        at = 4 + usize::from(nh) + 1;
        if afi_safi == [0, 1, 128] && nh != 12 && nh != 24 {
            return false;
        }
    }
    if v.len() < at {
        return false;
    }
    if afi_safi != [0, 1, 128] {
        // Not ours: its NLRI are not read.
        return true;
    }
    while at < v.len() {
        let bits = usize::from(v[at]);
        // Label (24) and RD (64) bits, then at most 32 prefix bits.
        if !(88..=120).contains(&bits) {
            return false;
        }
        at += 1 + bits.div_ceil(8);
    }
    at == v.len()
}

fn rebuild(attrs: &[&RawAttr]) -> Vec<u8> {
    rebuild_with(&[0, 0], attrs, &[])
}

/// An UPDATE of `withdrawn` (its length field included), `attrs` and
/// `nlri`.
fn rebuild_with(withdrawn: &[u8], attrs: &[&RawAttr], nlri: &[u8]) -> Vec<u8> {
    let alen: usize = attrs.iter().map(|a| a.whole.len()).sum();
    let len = 19 + withdrawn.len() + 2 + alen + nlri.len();
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&(len as u16).to_be_bytes());
    m.push(2);
    m.extend_from_slice(withdrawn);
    m.extend_from_slice(&(alen as u16).to_be_bytes());
    for a in attrs {
        m.extend_from_slice(a.whole);
    }
    m.extend_from_slice(nlri);
    m
}

#[cfg(test)]
mod tests;
