//! The HD-VRF packet path: what happens to one frame between rx and tx.
//!
//! - spoke, upstream (access port in): classify port/VLAN -> service;
//!   punt ARP, DHCP and packets for the router; IPv4 checks; anti-spoofing
//!   (the source must be a session on this very port, VLAN and MAC, checked
//!   in the downstream table, which is *never* used to route here);
//!   upstream lookup; TTL; push VPN then transport label; Ethernet rewrite.
//! - core in (MPLS): the top label selects the action: pop our transport
//!   label, pop a spoke service's VPN label and route in its downstream
//!   table, pop a hub service's VPN label and route in its hub table (the
//!   return path, after target-specific processing), swap (P), or pop at
//!   the penultimate hop.
//! - hub uplink in (plain IPv4): route in the service's hub table.
//!
//! Each node runs over a whole burst ([`process_burst`]), and each path
//! has two halves: a fast path for the common packet, checked on
//! fixed-size arrays against precomputed adjacency headers, and the
//! general path, which re-examines anything the fast path declines (the
//! fast path changes nothing before it commits). A property test holds
//! the two to the same outcome and bytes.
//!
//! Every packet ends in exactly one [`Outcome`]: forwarded one way, punted
//! for a reason, or dropped for a reason. Nothing here allocates, locks or
//! panics on packet contents: every offset is checked against the frame.

use crate::policy::{self, Verdict};
use crate::tables::{Adjacency, LabelAction, PortInfo, PortRole, Role, Service, Tables, TtlMode};

use crate::wire::ipv4::Ipv4Packet;
use crate::wire::mpls::LabelStackEntry;

// The pipeline's vocabulary lives in leaf modules (so the tables, the
// counters and the DPDK burst can name it without importing the pipeline);
// these paths stay the ones the rest of the workspace uses.
pub use crate::counters::{SubscriberCount, COUNT_DOWN, COUNT_SPOOFED, COUNT_UP, NO_SUBSCRIBER};
pub use crate::frame::{Frame, FrameBurst, VecFrame};
pub use crate::outcome::{Next, Outcome, OutcomeCounters, OutcomeKind, PUNT_PORT};

const ETH_HDR: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_MPLS: u16 = 0x8847;
const UDP: u8 = 17;
const DHCP_SERVER_PORT: u16 = 67;
/// Labels examined per packet before the stack counts as hostile.
const MAX_LABELS: usize = 4;

/// Target-specific processing at the hub: the service's policy rules
/// over the IPv4 packet at `l3` ([`crate::policy`]). `None` lets it pass;
/// a service without rules costs one branch.
#[inline(always)]
fn hub_policy<C: SubscriberCount>(
    t: &Tables,
    svc: &Service,
    d: &[u8],
    l3: usize,
    ip: &Ip4,
    c: &C,
) -> Option<Outcome> {
    if svc.policy.is_empty() {
        return None;
    }
    hub_policy_rules(t, svc, d, l3, ip, c)
}

#[inline(never)]
fn hub_policy_rules<C: SubscriberCount>(
    t: &Tables,
    svc: &Service,
    d: &[u8],
    l3: usize,
    ip: &Ip4,
    c: &C,
) -> Option<Outcome> {
    // Ports for TCP, UDP and SCTP, unfragmented: a fragment matches no
    // rule that names a port.
    let dport = match ip.protocol {
        6 | 17 | 132 if !ip.fragment => be16(d, l3 + usize::from(ip.hl) + 2),
        _ => None,
    };
    match policy::evaluate(
        &svc.policy,
        &t.policers,
        ip.dst,
        ip.protocol,
        dport,
        ip.len,
        c,
    ) {
        Verdict::Pass => None,
        Verdict::Deny => Some(Outcome::PolicyDeny),
        Verdict::Exceeded => Some(Outcome::PolicyPolice),
    }
}

#[inline(always)]
fn be16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*d.get(at)?, *d.get(at + 1)?]))
}

#[inline(always)]
fn be32(d: &[u8; 20], at: usize) -> u32 {
    u32::from_be_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]])
}

/// Ethernet with at most one 802.1Q tag: (VLAN id or 0, ethertype,
/// header length).
#[inline(always)]
fn parse_l2(d: &[u8]) -> Option<(u16, u16, usize)> {
    let h = d.first_chunk::<14>()?;
    let et = u16::from_be_bytes([h[12], h[13]]);
    if et == ETHERTYPE_VLAN {
        let t = d.get(14..18)?;
        Some((
            u16::from_be_bytes([t[0], t[1]]) & 0x0fff,
            u16::from_be_bytes([t[2], t[3]]),
            ETH_HDR + 4,
        ))
    } else {
        Some((0, et, ETH_HDR))
    }
}

/// Processes one frame that arrived on `in_port` (a burst of one).
#[inline]
pub fn process<F: Frame>(t: &Tables, in_port: u16, f: &mut F) -> Next {
    process_counted(t, in_port, f, &())
}

/// [`process`], counting subscribers' packets in `counts`.
#[inline]
pub fn process_counted<F: Frame, C: SubscriberCount>(
    t: &Tables,
    in_port: u16,
    f: &mut F,
    counts: &C,
) -> Next {
    let mut next = [Next::end(Outcome::UnknownService)];
    process_burst(t, in_port, std::slice::from_mut(f), &mut next, counts);
    next[0]
}

/// Processes the first `next.len()` frames of a burst that arrived on
/// `in_port`; packet `i`'s verdict goes to `next[i]`. The node is chosen
/// once per burst (a port's role does not change within one), as VPP
/// hands a frame of packets to one graph node.
#[inline]
pub fn process_burst<B: FrameBurst + ?Sized, C: SubscriberCount>(
    t: &Tables,
    in_port: u16,
    frames: &mut B,
    next: &mut [Next],
    counts: &C,
) {
    let Some(pi) = t.ports.get(in_port as usize) else {
        next.fill(Next::end(Outcome::UnknownService));
        return;
    };
    match (t.role, pi.role) {
        (Role::Spoke, PortRole::Access) => {
            for (i, n) in next.iter_mut().enumerate() {
                *n = spoke_upstream(t, pi, in_port, &mut frames.frame(i), counts);
            }
        }
        (_, PortRole::Core) => {
            for (i, n) in next.iter_mut().enumerate() {
                *n = core_input(t, pi, &mut frames.frame(i), counts);
            }
        }
        (Role::Hub, PortRole::Access) => {
            for (i, n) in next.iter_mut().enumerate() {
                *n = hub_uplink(t, pi, &mut frames.frame(i), counts);
            }
        }
        _ => next.fill(Next::end(Outcome::UnknownService)),
    }
}

/// The IPv4 header fields the paths use, from a checked header.
#[derive(Clone, Copy)]
struct Ip4 {
    src: u32,
    dst: u32,
    ttl: u8,
    tos: u8,
    protocol: u8,
    fragment: bool,
    /// Header length, options included.
    hl: u8,
    /// Total length.
    len: u16,
}

impl Ip4 {
    /// The label traffic class: the DSCP's class selector bits.
    #[inline(always)]
    fn tc(&self) -> u8 {
        self.tos >> 5
    }
}

/// IPv4 checks shared by every path (header sane, checksum right) and
/// the fields the paths need.
///
/// The common header (no options) is checked on a fixed 20-byte array,
/// without bounds checks; options take the general view's checks.
#[inline(always)]
fn parse_ipv4(d: &[u8]) -> Result<Ip4, Outcome> {
    let h = d.first_chunk::<20>().ok_or(Outcome::Ipv4Header)?;
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    let hl = if h[0] == 0x45 {
        if total < 20 || total > d.len() {
            return Err(Outcome::Ipv4Header);
        }
        if !header_sum_ok(h) {
            return Err(Outcome::Ipv4Checksum);
        }
        20
    } else {
        let ip = Ipv4Packet::new_checked(d).map_err(|_| Outcome::Ipv4Header)?;
        if !ip.verify_checksum() {
            return Err(Outcome::Ipv4Checksum);
        }
        ip.header_len()
    };
    Ok(Ip4 {
        src: be32(h, 12),
        dst: be32(h, 16),
        ttl: h[8],
        tos: h[1],
        protocol: h[9],
        fragment: u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0,
        hl: hl as u8,
        len: total as u16,
    })
}

/// Whether a 20-byte IPv4 header's checksum verifies: its one's
/// complement sum is 0xFFFF. The sum does not depend on byte order
/// (RFC 1071 section 2(B)), so the words are summed as the CPU loads them,
/// without byte swaps, in a wide accumulator (2(C)). Folding reduces
/// modulo 0xFFFF (2^16 = 1 mod 0xFFFF) and never yields 0 from a non-zero
/// sum, so the folded sum is 0xFFFF exactly when the wide sum is a
/// non-zero multiple of 0xFFFF: one multiply instead of the folds.
#[inline(always)]
fn header_sum_ok(h: &[u8; 20]) -> bool {
    let w = |at: usize| u64::from(u32::from_ne_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]));
    let sum = w(0) + w(4) + w(8) + w(12) + w(16);
    sum != 0 && sum % 0xffff == 0
}

/// The fast paths' IPv4 check: no options, lengths consistent with the
/// `room` bytes from the header to the frame's end, checksum right.
#[inline(always)]
fn plain_ipv4_ok(ip: &[u8; 20], room: usize) -> bool {
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    ip[0] == 0x45 && total >= 20 && total <= room && header_sum_ok(ip)
}

/// Sets the IPv4 TTL of the header at `at` to `ttl`, fixing the checksum
/// incrementally (RFC 1624 eqn. 3, `HC' = ~(~HC + ~m + m')` over the
/// TTL/protocol word). One's complement arithmetic commutes with byte
/// swapping, so the words stay in the CPU's byte order.
#[inline(always)]
fn set_ip_ttl(d: &mut [u8], at: usize, ttl: u8) {
    if let Some(h) = d.get_mut(at..).and_then(|d| d.first_chunk_mut::<20>()) {
        set_ttl(h, ttl);
    }
}

/// [`set_ip_ttl`] on a header known to be there.
#[inline(always)]
fn set_ttl(h: &mut [u8; 20], ttl: u8) {
    // `~m + m'`: the protocol byte cancels, leaving 0xFFFF plus the TTL
    // change in its byte position.
    let at_ttl = |t: u8| u32::from(u16::from_ne_bytes([t, 0]));
    // 0xFFFF verifies like 0x0000, but eqn. 3 needs the computed form.
    let hc = match u16::from_ne_bytes([h[10], h[11]]) {
        0xffff => 0,
        hc => hc,
    };
    // At most 3 * 0xFFFF: two folds reach 16 bits.
    let mut x = u32::from(!hc) + 0xffff + at_ttl(ttl) - at_ttl(h[8]);
    x = (x & 0xffff) + (x >> 16);
    x = (x & 0xffff) + (x >> 16);
    h[8] = ttl;
    h[10..12].copy_from_slice(&(!(x as u16)).to_ne_bytes());
}

/// Copies `src[..d.len()]` into `d` (14 to 32 bytes) with two fixed-size
/// overlapping copies instead of a variable-length `memcpy` call.
#[inline(always)]
fn copy_header(d: &mut [u8], src: &[u8; 32]) {
    let n = d.len();
    if (16..=32).contains(&n) {
        d[..16].copy_from_slice(&src[..16]);
        d[n - 16..].copy_from_slice(&src[n - 16..n]);
    } else if (8..16).contains(&n) {
        d[..8].copy_from_slice(&src[..8]);
        d[n - 8..].copy_from_slice(&src[n - 8..n]);
    }
}

/// The TTL of pushed labels (RFC 3443): the IP TTL after the decrement in
/// uniform mode, 255 in pipe mode.
#[inline(always)]
fn pushed_label_ttl(mode: TtlMode, new_ttl: u8) -> u8 {
    match mode {
        TtlMode::Uniform => new_ttl,
        TtlMode::Pipe => 255,
    }
}

/// What a rewrite puts in front of the packet's payload.
#[derive(Clone, Copy)]
enum Encap {
    /// The adjacency's Ethernet header and labels (TC, TTL); the
    /// adjacency's ethertype (MPLS) stands.
    Push { tc: u8, ttl: u8 },
    /// The adjacency's Ethernet header only, with this ethertype.
    L2(u16),
    /// The adjacency's Ethernet header with its own ethertype (IPv4,
    /// an adjacency without labels).
    L2Own,
}

/// Replaces the first `old_hdr` bytes of the frame with the adjacency's
/// header as `encap` says (RFC 3032 label stack entries), and when
/// `ip_ttl` is set, sets the TTL of the IPv4 header that follows it.
#[inline(always)]
fn rewrite<F: Frame>(
    f: &mut F,
    old_hdr: usize,
    a: &Adjacency,
    encap: Encap,
    ip_ttl: Option<u8>,
) -> bool {
    let l2 = usize::from(a.l2_len);
    let len = match encap {
        Encap::Push { .. } => a.pushed_len(),
        Encap::L2(_) | Encap::L2Own => l2,
    };
    if !f.shift_front(old_hdr as isize - len as isize) {
        return false;
    }
    let d = f.data_mut();
    if let Some(ttl) = ip_ttl {
        set_ip_ttl(d, len, ttl);
    }
    match d.get_mut(..len) {
        Some(h) => {
            write_header(h, a, encap);
            true
        }
        None => false,
    }
}

/// Writes the adjacency's header into `h` (exactly the header's length,
/// labels included when `encap` pushes them).
#[inline(always)]
fn write_header(h: &mut [u8], a: &Adjacency, encap: Encap) {
    let l2 = usize::from(a.l2_len);
    copy_header(h, &a.header);
    match encap {
        Encap::Push { tc, ttl } => {
            // Template entries have TC and TTL zero: OR the packet's in.
            let pat = u32::from_ne_bytes([0, 0, (tc & 7) << 1, ttl]);
            for e in h[l2..].chunks_exact_mut(4) {
                let v = u32::from_ne_bytes([e[0], e[1], e[2], e[3]]) | pat;
                e.copy_from_slice(&v.to_ne_bytes());
            }
        }
        Encap::L2(et) => h[l2 - 2..l2].copy_from_slice(&et.to_be_bytes()),
        Encap::L2Own => {}
    }
}

/// The start every access-side packet shares: Ethernet (and VLAN) ->
/// service, ARP punted, IPv4 checked, packets for the router punted.
/// Returns the service, the VLAN, the IPv4 header's offset and fields.
#[inline(always)]
fn access_ingress<'t>(
    t: &'t Tables,
    pi: &PortInfo,
    d: &[u8],
) -> Result<(&'t Service, u16, usize, Ip4), Outcome> {
    let (vlan, et, l3) = parse_l2(d).ok_or(Outcome::Runt)?;
    let sid = pi.vlan_service[usize::from(vlan)];
    let svc = t
        .services
        .get(usize::from(sid))
        .ok_or(Outcome::UnknownService)?;
    match et {
        ETHERTYPE_IPV4 => {}
        ETHERTYPE_ARP => return Err(Outcome::PuntArp),
        _ => return Err(Outcome::NotIpv4),
    }
    let ip = parse_ipv4(&d[l3..])?;
    if ip.dst == svc.gateway || (pi.address != 0 && ip.dst == pi.address) {
        return Err(Outcome::PuntLocal);
    }
    Ok((svc, vlan, l3, ip))
}

/// Spoke, access port in: HD-VRF upstream. Claim 1: the route always
/// comes from the upstream table; the downstream table is only consulted
/// to check the source.
#[inline(always)]
fn spoke_upstream<F: Frame, C: SubscriberCount>(
    t: &Tables,
    pi: &PortInfo,
    in_port: u16,
    f: &mut F,
    c: &C,
) -> Next {
    let fast = match f.data().get(12..14) {
        Some([0x08, 0x00]) => upstream_fast::<F, C, ETH_HDR>(t, pi, in_port, f, c),
        Some([0x81, 0x00]) => upstream_fast::<F, C, { ETH_HDR + 4 }>(t, pi, in_port, f, c),
        _ => None,
    };
    match fast {
        Some(n) => n,
        None => upstream_general(t, pi, in_port, f, c),
    }
}

/// The common upstream packet, with its IPv4 header at `L3` (untagged or
/// one 802.1Q tag): plain IPv4 with no options, not for the router, not
/// DHCP, TTL above 1, source a session on this port, VLAN and MAC, and
/// an upstream route with labels. Checked on fixed-size arrays, so without
/// per-field bounds checks. Returns `None`, having changed nothing, for
/// any other packet: [`upstream_general`] then decides, so both paths
/// always agree (a property test holds them to it).
#[inline(always)]
fn upstream_fast<F: Frame, C: SubscriberCount, const L3: usize>(
    t: &Tables,
    pi: &PortInfo,
    in_port: u16,
    f: &mut F,
    c: &C,
) -> Option<Next> {
    let d = f.data();
    // Ethernet, an optional tag, IPv4, the UDP ports: 42 bytes at most.
    let h = d.first_chunk::<42>()?;
    let vlan = if L3 == ETH_HDR {
        0
    } else if h[16..18] == [0x08, 0x00] {
        u16::from_be_bytes([h[14], h[15]]) & 0x0fff
    } else {
        return None;
    };
    let svc = t
        .services
        .get(usize::from(pi.vlan_service[usize::from(vlan)]))?;
    let ip: &[u8; 20] = h[L3..L3 + 20].try_into().ok()?;
    if !plain_ipv4_ok(ip, d.len() - L3) {
        return None;
    }
    let (src, dst, ttl) = (be32(ip, 12), be32(ip, 16), ip[8]);
    if dst == svc.gateway || (pi.address != 0 && dst == pi.address) || ttl <= 1 {
        return None;
    }
    let unfragmented = ip[6] & 0x3f == 0 && ip[7] == 0;
    if ip[9] == UDP && unfragmented && h[L3 + 22..L3 + 24] == DHCP_SERVER_PORT.to_be_bytes() {
        return None;
    }
    let mut subscriber = NO_SUBSCRIBER;
    if svc.anti_spoofing {
        subscriber = svc.downstream.lookup(src);
        let a = t.adjacency(subscriber)?;
        if a.port != in_port || a.vlan != vlan || h[6..12] != a.dst_mac()[..] {
            return None;
        }
    }
    let bytes = u16::from_be_bytes([ip[2], ip[3]]);
    let a = t.route_adjacency(svc.upstream.lookup(dst), src, dst)?;
    if !a.usable || a.n_labels == 0 {
        return None;
    }
    let encap = Encap::Push {
        tc: ip[1] >> 5,
        ttl: pushed_label_ttl(svc.ttl_mode, ttl - 1),
    };
    let len = a.pushed_len();
    if f.headroom() < len.saturating_sub(L3) {
        return None;
    }
    // The TTL in place, then the front grows into the headroom for the
    // next hop's header and labels.
    let d = f.data_mut().first_chunk_mut::<42>()?;
    let ip: &mut [u8; 20] = (&mut d[L3..L3 + 20]).try_into().ok()?;
    set_ttl(ip, ttl - 1);
    // The packet has changed: from here it leaves forwarded or dropped,
    // never back to the general path.
    let h = match f.shift_front(L3 as isize - len as isize) {
        true => f.data_mut().get_mut(..len),
        false => None,
    };
    let Some(h) = h else {
        return Some(Next::end(Outcome::NoHeadroom));
    };
    write_header(h, a, encap);
    c.count(subscriber, COUNT_UP, bytes);
    Some(Next::tx(Outcome::Upstream, a.port))
}

/// Every upstream packet the fast path leaves: the checks one by one,
/// each with its outcome. Never inlined, like [`core_general`].
#[inline(never)]
fn upstream_general<F: Frame, C: SubscriberCount>(
    t: &Tables,
    pi: &PortInfo,
    in_port: u16,
    f: &mut F,
    c: &C,
) -> Next {
    let d = f.data();
    let (svc, vlan, l3, ip) = match access_ingress(t, pi, d) {
        Ok(x) => x,
        Err(o) => return Next::end(o),
    };
    if ip.protocol == UDP
        && !ip.fragment
        && be16(d, l3 + usize::from(ip.hl) + 2) == Some(DHCP_SERVER_PORT)
    {
        return Next::end(Outcome::PuntDhcp);
    }
    if ip.ttl <= 1 {
        return Next::end(Outcome::TtlExpired);
    }
    let mut subscriber = NO_SUBSCRIBER;
    if svc.anti_spoofing {
        subscriber = svc.downstream.lookup(ip.src);
        let mac = d.get(6..12).unwrap_or_default();
        let ok = match t.adjacency(subscriber) {
            Some(a) => a.port == in_port && a.vlan == vlan && mac == a.dst_mac(),
            _ => false,
        };
        if !ok {
            // Counted against the client that sent it, if it has a session.
            let sender = t.client(in_port, vlan, mac).unwrap_or(NO_SUBSCRIBER);
            c.count(sender, COUNT_SPOOFED, ip.len);
            return Next::end(Outcome::Spoofed);
        }
    }
    let Some(a) = t.route_adjacency(svc.upstream.lookup(ip.dst), ip.src, ip.dst) else {
        return Next::end(Outcome::NoRoute);
    };
    // Client traffic never leaves a spoke unlabelled.
    if a.n_labels == 0 {
        return Next::end(Outcome::BadNextHop);
    }
    if !a.usable {
        return Next::end(a.unusable_outcome());
    }
    let new_ttl = ip.ttl - 1;
    let encap = Encap::Push {
        tc: ip.tc(),
        ttl: pushed_label_ttl(svc.ttl_mode, new_ttl),
    };
    if !rewrite(f, l3, a, encap, Some(new_ttl)) {
        return Next::end(Outcome::NoHeadroom);
    }
    c.count(subscriber, COUNT_UP, ip.len);
    Next::tx(Outcome::Upstream, a.port)
}

/// Core port in: MPLS label processing (also ARP and packets for us).
#[inline(always)]
fn core_input<F: Frame, C: SubscriberCount>(t: &Tables, pi: &PortInfo, f: &mut F, c: &C) -> Next {
    match core_fast(t, f, c) {
        Some(n) => n,
        None => core_general(t, pi, f, c),
    }
}

/// The common core packets, untagged: a label swap to an untagged next
/// hop (P), or our transport label over a spoke service's VPN label over
/// plain IPv4 that a host route delivers (downstream). Checked on
/// fixed-size arrays. Returns `None`, having changed nothing, for any
/// other packet, which [`core_general`] decides, so both paths always
/// agree (a property test holds them to it).
#[inline(always)]
fn core_fast<F: Frame, C: SubscriberCount>(t: &Tables, f: &mut F, c: &C) -> Option<Next> {
    let d = f.data();
    let h = d.first_chunk::<22>()?;
    if h[12..14] != ETHERTYPE_MPLS.to_be_bytes() {
        return None;
    }
    let lse0 = u32::from_be_bytes([h[14], h[15], h[16], h[17]]);
    match t.labels.get(lse0 >> 12)? {
        LabelAction::Swap { label, next_hop } => {
            let ttl = lse0 as u8;
            let a = t.adjacency(next_hop)?;
            if ttl <= 1 || !a.usable || a.l2_len != ETH_HDR as u8 {
                return None;
            }
            let out = (label & 0xf_ffff) << 12 | (lse0 & 0xf00) | u32::from(ttl - 1);
            let h = f.data_mut().first_chunk_mut::<18>()?;
            h[14..18].copy_from_slice(&out.to_be_bytes());
            h[..12].copy_from_slice(&a.header[..12]);
            Some(Next::tx(Outcome::LabelSwap, a.port))
        }
        LabelAction::PopContinue if lse0 & 0x100 == 0 => {
            let lse1 = u32::from_be_bytes([h[18], h[19], h[20], h[21]]);
            let LabelAction::PopDownstream { service } = t.labels.get(lse1 >> 12)? else {
                return None;
            };
            let svc = t.services.get(usize::from(service))?;
            let ip = d.get(22..).and_then(|ip| ip.first_chunk::<20>())?;
            if lse1 & 0x100 == 0 || !plain_ipv4_ok(ip, d.len() - 22) {
                return None;
            }
            let label_ttl = (lse0 as u8).min(lse1 as u8);
            let ttl = match svc.ttl_mode {
                TtlMode::Uniform => label_ttl.min(ip[8]),
                TtlMode::Pipe => ip[8],
            };
            let subscriber = svc.downstream.lookup(be32(ip, 16));
            let bytes = u16::from_be_bytes([ip[2], ip[3]]);
            let a = t.adjacency(subscriber)?;
            if ttl <= 1 || !a.to_access || a.n_labels != 0 {
                return None;
            }
            // In place: the TTL, then the client's Ethernet header right
            // before the IPv4 header, then the front moves past the rest.
            let d = f.data_mut().first_chunk_mut::<42>()?;
            set_ttl(d.last_chunk_mut::<20>()?, ttl - 1);
            let l2 = if a.l2_len == 14 {
                d[8..22].copy_from_slice(&a.header[..14]);
                14
            } else {
                d[4..22].copy_from_slice(&a.header[..18]);
                18
            };
            f.shift_front(22 - l2);
            c.count(subscriber, COUNT_DOWN, bytes);
            Some(Next::tx(Outcome::Downstream, a.port))
        }
        _ => None,
    }
}

/// Every core packet the fast path leaves: the label stack walked entry
/// by entry, each error with its outcome. Never inlined: kept out of the
/// fast path's loop, whose registers it would crowd.
#[inline(never)]
fn core_general<F: Frame, C: SubscriberCount>(t: &Tables, pi: &PortInfo, f: &mut F, c: &C) -> Next {
    let d = f.data();
    let Some((_vlan, et, l2)) = parse_l2(d) else {
        return Next::end(Outcome::Runt);
    };
    match et {
        ETHERTYPE_MPLS => {}
        ETHERTYPE_ARP => return Next::end(Outcome::PuntArp),
        ETHERTYPE_IPV4 => {
            // BGP and other control traffic for the router itself.
            return match parse_ipv4(&d[l2..]) {
                Ok(ip) if pi.address != 0 && ip.dst == pi.address => Next::end(Outcome::PuntLocal),
                _ => Next::end(Outcome::NotMpls),
            };
        }
        _ => return Next::end(Outcome::NotMpls),
    }
    let mut off = l2;
    // Uniform mode carries the TTL of popped labels down the stack.
    let mut carried_ttl = u8::MAX;
    for _ in 0..MAX_LABELS {
        let Some(b) = d.get(off..).and_then(|b| b.first_chunk::<4>()) else {
            return Next::end(Outcome::MplsStack);
        };
        let lse = LabelStackEntry::from_bytes(*b);
        let ttl = lse.ttl().min(carried_ttl);
        let Some(action) = t.labels.get(lse.label()) else {
            return Next::end(Outcome::UnknownLabel);
        };
        match action {
            LabelAction::PopContinue => {
                if lse.bos() {
                    return Next::end(Outcome::MplsStack);
                }
                carried_ttl = ttl;
                off += 4;
            }
            LabelAction::PopDownstream { service } => {
                return vpn_pop(t, f, off, lse, ttl, service, Direction::Downstream, c);
            }
            LabelAction::PopHub { service } => {
                return vpn_pop(t, f, off, lse, ttl, service, Direction::Hub, c);
            }
            LabelAction::Swap { label, next_hop } => {
                if ttl <= 1 {
                    return Next::end(Outcome::MplsTtlExpired);
                }
                let a = match t.adjacency(next_hop) {
                    Some(a) if a.usable => a,
                    Some(a) => return Next::end(a.unusable_outcome()),
                    None => return Next::end(Outcome::BadNextHop),
                };
                let out = lse.with_label(label).with_ttl(ttl - 1).to_bytes();
                if let Some(b) = f.data_mut().get_mut(off..off + 4) {
                    b.copy_from_slice(&out);
                }
                if !rewrite(f, off, a, Encap::L2(ETHERTYPE_MPLS), None) {
                    return Next::end(Outcome::NoHeadroom);
                }
                return Next::tx(Outcome::LabelSwap, a.port);
            }
            LabelAction::PopPhp { next_hop } => {
                if ttl <= 1 {
                    return Next::end(Outcome::MplsTtlExpired);
                }
                let a = match t.adjacency(next_hop) {
                    Some(a) if a.usable => a,
                    Some(a) => return Next::end(a.unusable_outcome()),
                    None => return Next::end(Outcome::BadNextHop),
                };
                let below = off + 4;
                let d = f.data_mut();
                let et = if lse.bos() {
                    // The IPv4 packet surfaces: uniform copies the TTL in.
                    let ip = match d.get(below..).map(parse_ipv4) {
                        Some(Ok(ip)) => ip,
                        Some(Err(o)) => return Next::end(o),
                        None => return Next::end(Outcome::MplsStack),
                    };
                    set_ip_ttl(d, below, (ttl - 1).min(ip.ttl));
                    ETHERTYPE_IPV4
                } else {
                    let Some(b) = d.get_mut(below..).and_then(|b| b.first_chunk_mut::<4>()) else {
                        return Next::end(Outcome::MplsStack);
                    };
                    let next = LabelStackEntry::from_bytes(*b);
                    *b = next.with_ttl((ttl - 1).min(next.ttl())).to_bytes();
                    ETHERTYPE_MPLS
                };
                if !rewrite(f, below, a, Encap::L2(et), None) {
                    return Next::end(Outcome::NoHeadroom);
                }
                return Next::tx(Outcome::LabelPop, a.port);
            }
        }
    }
    Next::end(Outcome::MplsStack)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Downstream,
    Hub,
}

/// Pops a VPN label (bottom of stack at `off`) and routes the IPv4 packet
/// beneath in the service's downstream (spoke) or hub table.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn vpn_pop<F: Frame, C: SubscriberCount>(
    t: &Tables,
    f: &mut F,
    off: usize,
    lse: LabelStackEntry,
    lse_ttl: u8,
    service: u16,
    dir: Direction,
    c: &C,
) -> Next {
    if !lse.bos() {
        return Next::end(Outcome::MplsStack);
    }
    let Some(svc) = t.services.get(usize::from(service)) else {
        return Next::end(Outcome::UnknownService);
    };
    let l3 = off + 4;
    let ip = match f.data().get(l3..).map(parse_ipv4) {
        Some(Ok(ip)) => ip,
        Some(Err(o)) => return Next::end(o),
        None => return Next::end(Outcome::MplsStack),
    };
    let ttl_in = match svc.ttl_mode {
        TtlMode::Uniform => lse_ttl.min(ip.ttl),
        TtlMode::Pipe => ip.ttl,
    };
    if ttl_in <= 1 {
        return Next::end(Outcome::TtlExpired);
    }
    let new_ttl = ttl_in - 1;
    match dir {
        Direction::Downstream => {
            let subscriber = svc.downstream.lookup(ip.dst);
            let Some(a) = t.adjacency(subscriber) else {
                return Next::end(Outcome::NoRoute);
            };
            if a.unresolved {
                return Next::end(Outcome::Unresolved);
            }
            if !a.to_access || a.n_labels != 0 {
                return Next::end(Outcome::BadNextHop);
            }
            if !rewrite(f, l3, a, Encap::L2Own, Some(new_ttl)) {
                return Next::end(Outcome::NoHeadroom);
            }
            c.count(subscriber, COUNT_DOWN, ip.len);
            Next::tx(Outcome::Downstream, a.port)
        }
        Direction::Hub => {
            if let Some(o) = hub_policy(t, svc, f.data(), l3, &ip, c) {
                return Next::end(o);
            }
            hub_route(t, svc, f, l3, &ip, new_ttl)
        }
    }
}

/// Hub: route an IPv4 packet (at `l3`, already checked, TTL to become
/// `new_ttl`) in the service's hub table: back to a spoke (labels) or to
/// the uplink (plain).
#[inline(always)]
fn hub_route<F: Frame>(
    t: &Tables,
    svc: &Service,
    f: &mut F,
    l3: usize,
    ip: &Ip4,
    new_ttl: u8,
) -> Next {
    let Some(a) = t.route_adjacency(svc.hub.lookup(ip.dst), ip.src, ip.dst) else {
        return Next::end(Outcome::NoRoute);
    };
    if !a.usable {
        return Next::end(a.unusable_outcome());
    }
    if a.n_labels == 0 {
        if !rewrite(f, l3, a, Encap::L2Own, Some(new_ttl)) {
            return Next::end(Outcome::NoHeadroom);
        }
        return Next::tx(Outcome::HubToUplink, a.port);
    }
    let encap = Encap::Push {
        tc: ip.tc(),
        ttl: pushed_label_ttl(svc.ttl_mode, new_ttl),
    };
    if !rewrite(f, l3, a, encap, Some(new_ttl)) {
        return Next::end(Outcome::NoHeadroom);
    }
    Next::tx(Outcome::HubToSpoke, a.port)
}

/// Hub, uplink (access-role) port in: plain IPv4 toward clients of the
/// service bound to the port/VLAN, routed in its hub table.
#[inline(always)]
fn hub_uplink<F: Frame, C: SubscriberCount>(t: &Tables, pi: &PortInfo, f: &mut F, c: &C) -> Next {
    let (svc, _vlan, l3, ip) = match access_ingress(t, pi, f.data()) {
        Ok(x) => x,
        Err(o) => return Next::end(o),
    };
    if ip.ttl <= 1 {
        return Next::end(Outcome::TtlExpired);
    }
    if let Some(o) = hub_policy(t, svc, f.data(), l3, &ip, c) {
        return Next::end(o);
    }
    hub_route(t, svc, f, l3, &ip, ip.ttl - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RuleCounts;
    use crate::tables::{LabelTable, NextHop, PortInfo, Service, DEFAULT_TABLE_MEMORY, NO_SERVICE};
    use crate::topology::{self, ethernet as eth, lse};
    use crate::wire::checksum;
    use proptest::prelude::*;

    const MAC_ACCESS: [u8; 6] = [0x02, 0xa0, 0, 0, 0, 1];
    const MAC_CORE: [u8; 6] = [0x02, 0xc0, 0, 0, 0, 1];
    const MAC_HUB: [u8; 6] = [0x02, 0x40, 0, 0, 0, 9];
    const MAC_A: [u8; 6] = [0x02, 0xca, 0, 0, 0, 0x0a];
    const MAC_B: [u8; 6] = [0x02, 0xcb, 0, 0, 0, 0x0b];

    fn ip(s: &str) -> u32 {
        u32::from(s.parse::<std::net::Ipv4Addr>().unwrap())
    }

    fn nh(port: u16, vlan: u16, mac: [u8; 6], labels: &[u32]) -> NextHop {
        let mut l = [0; 2];
        l[..labels.len()].copy_from_slice(labels);
        NextHop {
            port,
            vlan,
            dst_mac: mac,
            labels: l,
            n_labels: labels.len() as u8,
        }
    }

    /// A spoke: port 0 access (client A untagged, client B on VLAN 100),
    /// port 1 core toward the hub. Labels: 1000 our transport, 1001 the
    /// service's VPN label. The same tables serve the P and hub tests with
    /// the role changed.
    fn spoke(mode: TtlMode) -> Tables {
        let mut svc = Service::new("blue", ip("10.0.0.1"), mode, DEFAULT_TABLE_MEMORY).unwrap();
        svc.upstream.add(0, 0, 0).unwrap();
        svc.downstream.add(ip("10.0.0.10"), 32, 1).unwrap();
        svc.downstream.add(ip("10.0.0.20"), 32, 2).unwrap();
        svc.hub.add(ip("10.0.0.20"), 32, 3).unwrap();
        svc.hub.add(0, 0, 4).unwrap();
        let mut access = PortInfo::new(PortRole::Access, MAC_ACCESS);
        access.vlan_service[0] = 0;
        access.vlan_service[100] = 0;
        let mut core = PortInfo::new(PortRole::Core, MAC_CORE);
        core.address = ip("192.0.2.1");
        let mut labels = LabelTable::new(1000, 64);
        labels.set(1000, LabelAction::PopContinue);
        labels.set(1001, LabelAction::PopDownstream { service: 0 });
        labels.set(
            1002,
            LabelAction::Swap {
                label: 555,
                next_hop: 0,
            },
        );
        labels.set(1003, LabelAction::PopHub { service: 0 });
        labels.set(1004, LabelAction::PopPhp { next_hop: 0 });
        Tables::new(
            Role::Spoke,
            vec![access, core],
            vec![svc],
            vec![
                nh(1, 0, MAC_HUB, &[100, 2001]),
                nh(0, 0, MAC_A, &[]),
                nh(0, 100, MAC_B, &[]),
                nh(1, 0, MAC_HUB, &[200, 3001]),
                nh(0, 0, [0x02, 0xee, 0, 0, 0, 1], &[]),
            ],
            labels,
        )
    }

    /// IPv4/UDP with DSCP EF (TOS 0xb8) and a valid checksum.
    fn ipv4(src: &str, dst: &str, ttl: u8, dport: u16, payload: &[u8]) -> Vec<u8> {
        topology::ipv4_udp(ip(src), ip(dst), ttl, 0xb8, dport, payload)
    }

    fn mpls(labels: &[[u8; 4]], payload: &[u8]) -> Vec<u8> {
        eth(
            MAC_CORE,
            MAC_HUB,
            0,
            0x8847,
            &[labels.concat(), payload.to_vec()].concat(),
        )
    }

    fn run(t: &Tables, port: u16, bytes: &[u8]) -> (Next, Vec<u8>) {
        let mut f = VecFrame::new(bytes);
        let n = process(t, port, &mut f);
        (n, f.data().to_vec())
    }

    /// Subscriber counts as the pipeline made them.
    #[derive(Default)]
    struct Recorder(std::cell::RefCell<Vec<(u32, u8, u16)>>);

    impl SubscriberCount for Recorder {
        fn count(&self, subscriber: u32, at: u8, bytes: u16) {
            self.0.borrow_mut().push((subscriber, at, bytes));
        }
    }

    impl RuleCounts for Recorder {
        fn count_rule(&self, _: u16, _: u16, _: bool) {}
        fn now_ns(&self) -> u64 {
            0
        }
    }

    /// [`run`], with the subscriber counts it made.
    fn counted(t: &Tables, port: u16, bytes: &[u8]) -> (Next, Vec<(u32, u8, u16)>) {
        let mut f = VecFrame::new(bytes);
        let r = Recorder::default();
        let n = process_counted(t, port, &mut f, &r);
        (n, r.0.into_inner())
    }

    /// Checks an IPv4 header with a decoder independent of ours
    /// (etherparse): checksum and TTL.
    fn assert_ip(h: &[u8], ttl: u8) {
        let ip = etherparse::Ipv4HeaderSlice::from_slice(h).expect("IPv4 header");
        assert_eq!(ip.ttl(), ttl, "IPv4 TTL");
        assert_eq!(
            ip.header_checksum(),
            ip.to_header().calc_header_checksum(),
            "IPv4 checksum"
        );
    }

    #[test]
    fn client_to_client_goes_to_the_hub_with_both_labels() {
        let t = spoke(TtlMode::Uniform);
        let inner = ipv4("10.0.0.10", "10.0.0.20", 64, 9, b"hello");
        let (n, out) = run(&t, 0, &eth(MAC_ACCESS, MAC_A, 0, 0x0800, &inner));
        assert_eq!((n.outcome, n.port), (Outcome::Upstream, 1));
        assert_eq!(out[0..6], MAC_HUB);
        assert_eq!(out[6..12], MAC_CORE);
        assert_eq!(out[12..14], [0x88, 0x47]);
        // Transport outermost, VPN label at the bottom; uniform TTL 63;
        // TC from the DSCP precedence (0xb8 -> EF -> 5).
        assert_eq!(out[14..18], (100u32 << 12 | 5 << 9 | 63).to_be_bytes());
        assert_eq!(
            out[18..22],
            (2001u32 << 12 | 5 << 9 | 1 << 8 | 63).to_be_bytes()
        );
        assert_ip(&out[22..], 63);
        assert_eq!(out[22 + 12..22 + 20], inner[12..20]);
        assert_eq!(&out[22 + 28..], b"hello");
    }

    #[test]
    fn vlan_client_upstream_and_pipe_mode_labels() {
        let t = spoke(TtlMode::Pipe);
        let inner = ipv4("10.0.0.20", "8.8.8.8", 10, 53, b"q");
        let (n, out) = run(&t, 0, &eth(MAC_ACCESS, MAC_B, 100, 0x0800, &inner));
        assert_eq!(n.outcome, Outcome::Upstream);
        assert_eq!(out[14..18], (100u32 << 12 | 5 << 9 | 255).to_be_bytes());
        assert_eq!(
            out[18..22],
            (2001u32 << 12 | 5 << 9 | 1 << 8 | 255).to_be_bytes()
        );
        assert_ip(&out[22..], 9);
    }

    #[test]
    fn unresolved_next_hops_are_counted_until_arp_sets_their_mac() {
        use crate::tables::{TableOp, UNRESOLVED_MAC};
        let mut t = spoke(TtlMode::Uniform);
        // The hub's MAC forgotten (upstream, P swap and PHP), then client
        // A's too (downstream).
        t.apply(&[TableOp::SetNeighbor {
            next_hop: 0,
            mac: UNRESOLVED_MAC,
        }]);
        assert!(t.rejected().is_empty());
        let up = eth(
            MAC_ACCESS,
            MAC_A,
            0,
            0x0800,
            &ipv4("10.0.0.10", "8.8.8.8", 64, 9, b"x"),
        );
        let inner = ipv4("1.1.1.1", "10.0.0.10", 64, 9, b"x");
        let down = mpls(&[lse(1000, false, 64), lse(1001, true, 64)], &inner);
        let swap = mpls(&[lse(1002, true, 64)], &inner);
        let php = mpls(&[lse(1004, true, 64)], &inner);
        let mut p = t.second_copy();
        t.apply(&[TableOp::SetNeighbor {
            next_hop: 1,
            mac: UNRESOLVED_MAC,
        }]);
        for (port, f) in [(0u16, &up), (1, &down)] {
            let (n, out) = run(if port == 0 { &p } else { &t }, port, f);
            assert_eq!(n, Next::end(Outcome::Unresolved), "{f:02x?}");
            assert_eq!(&out, f, "an unresolved packet is not rewritten");
        }
        // With the client's MAC unknown, its own packets cannot be checked
        // against its session: dropped as spoofed, not forwarded.
        assert_eq!(run(&t, 0, &up).0.outcome, Outcome::Spoofed);
        p.role = Role::P;
        for f in [&swap, &php] {
            assert_eq!(run(&p, 1, f).0, Next::end(Outcome::Unresolved), "{f:02x?}");
        }
        // ARP answered: the same packets leave, with the learnt MACs.
        let learnt = [0x02, 0x77, 0, 0, 0, 1];
        let client = MAC_A;
        t.apply(&[
            TableOp::SetNeighbor {
                next_hop: 0,
                mac: learnt,
            },
            TableOp::SetNeighbor {
                next_hop: 1,
                mac: client,
            },
        ]);
        let (n, out) = run(&t, 0, &up);
        assert_eq!(n, Next::tx(Outcome::Upstream, 1));
        assert_eq!(counted(&t, 0, &up).1, [(1, COUNT_UP, 29)]);
        assert_eq!(out[..6], learnt);
        let (n, out) = run(&t, 1, &down);
        assert_eq!(n, Next::tx(Outcome::Downstream, 0));
        assert_eq!(counted(&t, 1, &down).1, [(1, COUNT_DOWN, 29)]);
        assert_eq!(out[..6], client);
        // A next hop that does not exist is still a bad next hop.
        assert_eq!(
            t.apply_checked(TableOp::SetNeighbor {
                next_hop: 99,
                mac: learnt
            }),
            Err("no next hop 99".to_owned())
        );
    }

    #[test]
    fn spoofed_sources_are_dropped() {
        let t = spoke(TtlMode::Uniform);
        // Each drop is counted against the client that sent it (next hop
        // 1 is A's, on port 0 untagged), when it has a session.
        let spoofed = |sender| {
            (
                Next::end(Outcome::Spoofed),
                vec![(sender, COUNT_SPOOFED, 28)],
            )
        };
        // B's address from A's MAC, port and VLAN: A's drop.
        let p = ipv4("10.0.0.20", "1.1.1.1", 64, 9, b"");
        assert_eq!(
            counted(&t, 0, &eth(MAC_ACCESS, MAC_A, 0, 0x0800, &p)),
            spoofed(1)
        );
        // A's address on B's VLAN, where A has no session.
        let p = ipv4("10.0.0.10", "1.1.1.1", 64, 9, b"");
        assert_eq!(
            counted(&t, 0, &eth(MAC_ACCESS, MAC_A, 100, 0x0800, &p)),
            spoofed(NO_SUBSCRIBER)
        );
        // An address with no session, from A.
        let p = ipv4("10.0.0.99", "1.1.1.1", 64, 9, b"");
        assert_eq!(
            counted(&t, 0, &eth(MAC_ACCESS, MAC_A, 0, 0x0800, &p)),
            spoofed(1)
        );
        // A's address from a MAC with no session.
        let p = ipv4("10.0.0.10", "1.1.1.1", 64, 9, b"");
        let stranger = [0x02, 0x99, 0, 0, 0, 1];
        assert_eq!(
            counted(&t, 0, &eth(MAC_ACCESS, stranger, 0, 0x0800, &p)),
            spoofed(NO_SUBSCRIBER)
        );
    }

    #[test]
    fn subscribers_follow_their_next_hops() {
        use crate::tables::{TableOp, UNRESOLVED_MAC};
        let mut t = spoke(TtlMode::Uniform);
        let from_a = eth(
            MAC_ACCESS,
            MAC_A,
            0,
            0x0800,
            &ipv4("10.0.0.99", "1.1.1.1", 64, 9, b""),
        );
        assert_eq!(counted(&t, 0, &from_a).1[0].0, 1);
        // A's next hop moves to B's VLAN: the old key no longer names it.
        t.apply(&[TableOp::SetNextHop {
            id: 1,
            next_hop: nh(0, 100, MAC_A, &[]),
        }]);
        assert!(t.rejected().is_empty());
        assert_eq!(counted(&t, 0, &from_a).1[0].0, NO_SUBSCRIBER);
        assert_eq!(t.client(0, 100, &MAC_A), Some(1));
        // A new next hop for the same client takes the key over; a next
        // hop toward the core is no client.
        t.apply(&[
            TableOp::SetNextHop {
                id: 5,
                next_hop: nh(0, 100, MAC_A, &[]),
            },
            TableOp::SetNextHop {
                id: 6,
                next_hop: nh(1, 0, [0x02, 0x55, 0, 0, 0, 1], &[]),
            },
        ]);
        assert!(t.rejected().is_empty());
        assert_eq!(t.client(0, 100, &MAC_A), Some(5));
        assert_eq!(t.client(1, 0, &[0x02, 0x55, 0, 0, 0, 1]), None);
        // Retiring it drops the key; the older next hop does not get it
        // back (the map keeps one per client, the latest).
        t.apply(&[TableOp::SetNextHop {
            id: 5,
            next_hop: nh(u16::MAX, 0, UNRESOLVED_MAC, &[]),
        }]);
        assert_eq!(t.client(0, 100, &MAC_A), None);
    }

    #[test]
    fn punts_and_drops_on_the_access_side() {
        let t = spoke(TtlMode::Uniform);
        let send = |vlan, et, p: &[u8]| run(&t, 0, &eth(MAC_ACCESS, MAC_A, vlan, et, p)).0.outcome;
        let dhcp = ipv4("0.0.0.0", "255.255.255.255", 64, 67, b"discover");
        assert_eq!(send(0, 0x0800, &dhcp), Outcome::PuntDhcp);
        assert_eq!(send(0, 0x0806, &[0; 28]), Outcome::PuntArp);
        assert_eq!(
            send(0, 0x0800, &ipv4("10.0.0.10", "10.0.0.1", 64, 9, b"")),
            Outcome::PuntLocal
        );
        assert_eq!(
            send(0, 0x0800, &ipv4("10.0.0.10", "1.1.1.1", 1, 9, b"")),
            Outcome::TtlExpired
        );
        assert_eq!(
            send(200, 0x0800, &ipv4("10.0.0.10", "1.1.1.1", 9, 9, b"")),
            Outcome::UnknownService
        );
        assert_eq!(send(0, 0x86dd, &[0; 40]), Outcome::NotIpv4);
        let mut bad = ipv4("10.0.0.10", "1.1.1.1", 64, 9, b"");
        bad[10] ^= 1;
        assert_eq!(send(0, 0x0800, &bad), Outcome::Ipv4Checksum);
        assert_eq!(send(0, 0x0800, &bad[..19]), Outcome::Ipv4Header);
        assert_eq!(run(&t, 0, &[0u8; 13]).0.outcome, Outcome::Runt);
    }

    #[test]
    fn downstream_pops_both_labels_and_tags_the_clients_vlan() {
        let t = spoke(TtlMode::Uniform);
        let inner = ipv4("8.8.8.8", "10.0.0.20", 64, 9, b"reply");
        let (n, out) = run(
            &t,
            1,
            &mpls(&[lse(1000, false, 50), lse(1001, true, 50)], &inner),
        );
        assert_eq!((n.outcome, n.port), (Outcome::Downstream, 0));
        assert_eq!(out[0..6], MAC_B);
        assert_eq!(out[6..12], MAC_ACCESS);
        assert_eq!(out[12..16], [0x81, 0x00, 0, 100]);
        assert_eq!(out[16..18], [0x08, 0x00]);
        assert_ip(&out[18..], 49);
        assert_eq!(&out[18 + 28..], b"reply");
        // Pipe mode ignores the label TTL.
        let t = spoke(TtlMode::Pipe);
        let (_, out) = run(&t, 1, &mpls(&[lse(1001, true, 3)], &inner));
        assert_ip(&out[18..], 63);
    }

    #[test]
    fn mpls_errors_are_counted_by_reason() {
        let t = spoke(TtlMode::Uniform);
        let inner = ipv4("8.8.8.8", "10.0.0.20", 64, 9, b"");
        let o = |f: Vec<u8>| run(&t, 1, &f).0.outcome;
        assert_eq!(o(mpls(&[lse(77, true, 9)], &inner)), Outcome::UnknownLabel);
        assert_eq!(o(mpls(&[lse(1000, false, 9)], &[])), Outcome::MplsStack);
        assert_eq!(o(mpls(&[lse(1000, true, 9)], &inner)), Outcome::MplsStack);
        assert_eq!(
            o(mpls(&[lse(1000, false, 9); 5], &inner)),
            Outcome::MplsStack
        );
        assert_eq!(o(mpls(&[lse(1001, true, 1)], &inner)), Outcome::TtlExpired);
        assert_eq!(
            o(mpls(&[lse(1002, true, 1)], &inner)),
            Outcome::MplsTtlExpired
        );
        assert_eq!(
            o(mpls(
                &[lse(1001, true, 9)],
                &ipv4("8.8.8.8", "10.9.9.9", 64, 9, b"")
            )),
            Outcome::NoRoute
        );
        assert_eq!(
            o(eth(MAC_CORE, MAC_HUB, 0, 0x86dd, &[0; 40])),
            Outcome::NotMpls
        );
        assert_eq!(
            o(eth(
                MAC_CORE,
                MAC_HUB,
                0,
                0x0800,
                &ipv4("1.1.1.1", "192.0.2.1", 9, 179, b"")
            )),
            Outcome::PuntLocal
        );
    }

    #[test]
    fn p_swaps_and_penultimate_hop_pops() {
        let mut t = spoke(TtlMode::Uniform);
        t.role = Role::P;
        let inner = ipv4("8.8.8.8", "10.0.0.20", 64, 9, b"x");
        let (n, out) = run(
            &t,
            1,
            &mpls(&[lse(1002, false, 20), lse(9, true, 20)], &inner),
        );
        assert_eq!((n.outcome, n.port), (Outcome::LabelSwap, 1));
        assert_eq!(out[0..6], MAC_HUB);
        assert_eq!(out[14..18], lse(555, false, 19));
        assert_eq!(out[18..22], lse(9, true, 20));
        let (n, out) = run(
            &t,
            1,
            &mpls(&[lse(1004, false, 20), lse(9, true, 30)], &inner),
        );
        assert_eq!(n.outcome, Outcome::LabelPop);
        assert_eq!(out[12..14], [0x88, 0x47]);
        assert_eq!(out[14..18], lse(9, true, 19));
        let (n, out) = run(&t, 1, &mpls(&[lse(1004, true, 20)], &inner));
        assert_eq!(n.outcome, Outcome::LabelPop);
        assert_eq!(out[12..14], [0x08, 0x00]);
        assert_ip(&out[14..], 19);
    }

    #[test]
    fn hub_returns_to_the_owning_spoke_or_the_uplink() {
        let mut t = spoke(TtlMode::Uniform);
        t.role = Role::Hub;
        let to_b = ipv4("10.0.0.10", "10.0.0.20", 60, 9, b"y");
        let (n, out) = run(&t, 1, &mpls(&[lse(1003, true, 59)], &to_b));
        assert_eq!((n.outcome, n.port), (Outcome::HubToSpoke, 1));
        assert_eq!(out[14..18], (200u32 << 12 | 5 << 9 | 58).to_be_bytes());
        assert_eq!(
            out[18..22],
            (3001u32 << 12 | 5 << 9 | 1 << 8 | 58).to_be_bytes()
        );
        assert_ip(&out[22..], 58);
        let out_bound = ipv4("10.0.0.10", "9.9.9.9", 60, 9, b"y");
        let (n, out) = run(&t, 1, &mpls(&[lse(1003, true, 59)], &out_bound));
        assert_eq!((n.outcome, n.port), (Outcome::HubToUplink, 0));
        assert_eq!(out[12..14], [0x08, 0x00]);
        assert_ip(&out[14..], 58);
        // Uplink in: plain IPv4 toward a client goes back to its spoke.
        let (n, _) = run(
            &t,
            0,
            &eth(
                MAC_ACCESS,
                MAC_A,
                0,
                0x0800,
                &ipv4("9.9.9.9", "10.0.0.20", 64, 9, b""),
            ),
        );
        assert_eq!(n.outcome, Outcome::HubToSpoke);
    }

    #[test]
    fn hub_policy_rules_deny_police_and_count_in_order() {
        use crate::policy::{Action, Rule};
        let mut t = spoke(TtlMode::Uniform);
        t.role = Role::Hub;
        let police = Action::Police {
            rate_bps: 8_000,
            burst_bytes: 100,
        };
        t.services[0].policy = vec![
            Rule::new(ip("10.0.0.0"), 24, None, None, Action::Count, 0),
            Rule::new(
                ip("10.0.0.20"),
                32,
                Some(17),
                Some((53, 53)),
                Action::Deny,
                1,
            ),
            Rule::new(ip("10.0.0.20"), 32, Some(17), Some((5000, 5999)), police, 2),
            Rule::new(ip("9.9.9.0"), 24, None, None, Action::Permit, 3),
            Rule::new(ip("9.9.0.0"), 16, None, None, Action::Deny, 4),
        ];
        let c = crate::counters::CoreCounters::with_subscribers(0, 0);
        let from_spoke_in = |t: &Tables, dst: &str, dport: u16| {
            let mut f = VecFrame::new(&mpls(
                &[lse(1003, true, 59)],
                &ipv4("10.0.0.10", dst, 60, dport, b"y"),
            ));
            process_counted(t, 1, &mut f, &c).outcome
        };
        let from_spoke = |dst: &str, dport: u16| from_spoke_in(&t, dst, dport);
        assert_eq!(from_spoke("10.0.0.20", 53), Outcome::PolicyDeny);
        assert_eq!(from_spoke("10.0.0.20", 54), Outcome::HubToSpoke);
        // 29-byte packets, a 100-byte burst, a clock that stands still:
        // three pass, then the bucket is full.
        let policed: Vec<_> = (0..5).map(|_| from_spoke("10.0.0.20", 5353)).collect();
        assert_eq!(policed[..3], [Outcome::HubToSpoke; 3]);
        assert_eq!(policed[3..], [Outcome::PolicyPolice; 2]);
        assert_eq!(from_spoke("9.9.9.9", 80), Outcome::HubToUplink);
        assert_eq!(from_spoke("9.9.8.8", 80), Outcome::PolicyDeny);
        // In from the uplink, toward a client: the same rules.
        let mut f = VecFrame::new(&eth(
            MAC_ACCESS,
            MAC_A,
            0,
            0x0800,
            &ipv4("9.9.9.9", "10.0.0.20", 64, 53, b""),
        ));
        assert_eq!(
            process_counted(&t, 0, &mut f, &c).outcome,
            Outcome::PolicyDeny
        );
        let got = |slot| c.rules.get(slot).unwrap();
        let pkt = |n: u64, bytes: u64, dropped: u64| crate::policy::RuleSnapshot {
            packets: n,
            bytes: n * bytes,
            dropped,
        };
        // 8 packets of 29 bytes from the spoke to 10.0.0.20, 1 of 28 in
        // from the uplink.
        assert_eq!(
            got(0),
            crate::policy::RuleSnapshot {
                packets: 8,
                bytes: 7 * 29 + 28,
                dropped: 0
            }
        );
        assert_eq!(
            got(1),
            crate::policy::RuleSnapshot {
                packets: 2,
                bytes: 29 + 28,
                dropped: 2
            }
        );
        assert_eq!(got(2), pkt(5, 29, 2));
        assert_eq!(got(3), pkt(1, 29, 0));
        assert_eq!(got(4), pkt(1, 29, 1));
        // No rules: nothing counted.
        t.services[0].policy.clear();
        assert_eq!(from_spoke_in(&t, "10.0.0.20", 53), Outcome::HubToSpoke);
        assert_eq!(got(1).packets, 2);
    }

    #[test]
    fn outcome_names_are_unique() {
        let mut names: Vec<_> = Outcome::ALL.iter().map(|o| o.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Outcome::COUNT);
        assert_eq!(NO_SERVICE, u16::MAX);
    }

    /// Spoke, hub and P tables built once for the property tests.
    fn shared() -> &'static [Tables; 3] {
        static T: std::sync::OnceLock<[Tables; 3]> = std::sync::OnceLock::new();
        T.get_or_init(|| {
            [Role::Spoke, Role::Hub, Role::P].map(|r| {
                let mut t = spoke(TtlMode::Uniform);
                t.role = r;
                t
            })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20_000, failure_persistence: None, .. ProptestConfig::default() })]

        /// Hostile bytes on any port of any role never panic, and a
        /// forwarded packet names a real port.
        #[test]
        fn arbitrary_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200),
                                        port in 0u16..3, role in 0u8..3) {
            let t = &shared()[role as usize];
            let (n, _) = run(t, port, &bytes);
            match n.outcome.kind() {
                OutcomeKind::Forward => prop_assert!((n.port as usize) < t.ports.len()),
                OutcomeKind::Punt => prop_assert_eq!(n.port, PUNT_PORT),
                OutcomeKind::Drop => prop_assert_eq!(n.port, u16::MAX),
            }
        }

        /// Claim 1: a packet that enters on an access port is never
        /// forwarded by the downstream table, even when its destination is
        /// a client of the same service on the same spoke: it goes to the
        /// core (the hub's next hop) or nowhere.
        #[test]
        fn access_traffic_never_uses_the_downstream_table(
            from_b in any::<bool>(), dst in prop_oneof![Just(ip("10.0.0.10")), Just(ip("10.0.0.20")), any::<u32>()],
            ttl in 0u8..=255, dport in any::<u16>(), len in 0usize..64) {
            let t = &shared()[0];
            let (src, mac, vlan) = if from_b { ("10.0.0.20", MAC_B, 100) } else { ("10.0.0.10", MAC_A, 0) };
            let dst = std::net::Ipv4Addr::from(dst).to_string();
            let p = ipv4(src, &dst, ttl, dport, &vec![7u8; len]);
            let (n, out) = run(t, 0, &eth(MAC_ACCESS, mac, vlan, 0x0800, &p));
            prop_assert_ne!(n.outcome, Outcome::Downstream);
            if n.outcome.kind() == OutcomeKind::Forward {
                prop_assert_eq!(n.outcome, Outcome::Upstream);
                prop_assert_eq!(n.port, 1);
                prop_assert_eq!(&out[0..6], &MAC_HUB);
                prop_assert_eq!(&out[12..14], &[0x88, 0x47]);
            }
        }

        /// The fast paths are an optimisation only: on valid frames and on
        /// every one-byte corruption or truncation of them, `process`
        /// (fast path, then the general path for what it leaves) gives the
        /// same outcome and the same bytes as the general path alone.
        #[test]
        fn fast_and_general_paths_agree(which in 0usize..6, at in 0usize..64, byte in any::<u8>(),
                                        cut in 0usize..80, corrupt in any::<bool>(), pipe in any::<bool>()) {
            static T: std::sync::OnceLock<[Tables; 2]> = std::sync::OnceLock::new();
            let t = &T.get_or_init(|| [spoke(TtlMode::Uniform), spoke(TtlMode::Pipe)])[usize::from(pipe)];
            let ip_ab = ipv4("10.0.0.10", "10.0.0.20", 64, 9, &[1; 18]);
            let ip_core = ipv4("198.51.100.1", "10.0.0.20", 64, 9, &[1; 10]);
            let (port, mut bytes) = match which {
                0 => (0, eth(MAC_ACCESS, MAC_A, 0, 0x0800, &ip_ab)),
                1 => (0, eth(MAC_ACCESS, MAC_B, 100, 0x0800, &ipv4("10.0.0.20", "8.8.8.8", 9, 53, &[2; 18]))),
                2 => (0, eth(MAC_ACCESS, MAC_A, 0, 0x0800, &ipv4("10.0.0.10", "10.0.0.1", 64, 67, &[3; 18]))),
                3 => (1, mpls(&[lse(1000, false, 63), lse(1001, true, 40)], &ip_core)),
                4 => (1, mpls(&[lse(1002, false, 63), lse(1001, true, 63)], &ip_core)),
                _ => (1, mpls(&[lse(1000, false, 2), lse(1001, true, 63)], &ip_core)),
            };
            if corrupt && at < bytes.len() {
                bytes[at] = byte;
            }
            bytes.truncate(bytes.len().min(cut.max(1) + 20));
            let (n_all, out_all) = run(t, port, &bytes);
            let (_, counts_all) = counted(t, port, &bytes);
            let mut g = VecFrame::new(&bytes);
            let pi = &t.ports[usize::from(port)];
            let r = Recorder::default();
            let n_gen = if pi.role == PortRole::Access {
                upstream_general(t, pi, port, &mut g, &r)
            } else {
                core_general(t, pi, &mut g, &r)
            };
            prop_assert_eq!(n_all, n_gen);
            prop_assert_eq!(out_all, g.data().to_vec());
            // The same subscriber counted the same way.
            prop_assert_eq!(counts_all, r.0.into_inner());
        }

        /// The checksum shortcuts against the RFC 1071 reference: the
        /// modulo test verifies exactly the headers whose checksum is
        /// right, and the incremental TTL update (RFC 1624) equals a full
        /// recomputation.
        #[test]
        fn ipv4_checksum_shortcuts_match_the_reference(mut h in any::<[u8; 20]>(), ttl in any::<u8>(), fix in any::<bool>()) {
            if fix {
                h[10] = 0;
                h[11] = 0;
                let c = checksum::checksum(&h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
            }
            prop_assert_eq!(header_sum_ok(&h), checksum::checksum(&h) == 0);
            if fix {
                let mut inc = h;
                set_ip_ttl(&mut inc, 0, ttl);
                let mut full = h;
                full[8] = ttl;
                full[10] = 0;
                full[11] = 0;
                let c = checksum::checksum(&full);
                full[10..12].copy_from_slice(&c.to_be_bytes());
                prop_assert_eq!(inc, full);
            }
        }
    }
}
