//! Neighbour resolution for next hops given by address (ARP, RFC 826).
//!
//! A next hop configured with `address` and no `mac` starts unresolved:
//! its adjacency is not usable, and the workers count its packets as
//! `drop_unresolved_next_hop` instead of sending them anywhere. The control
//! thread sends an ARP request for it on its port (and VLAN) at once and
//! then every [`RETRY`] until it is answered; every ARP packet the workers
//! punt is looked at first ([`Neighbors::learn`]), and one whose sender is
//! a next hop's address on that port and VLAN sets the next hop's MAC (RFC
//! 826's merge: replies and requests alike). The MAC is published like any
//! table change. A resolved neighbour is asked again every [`REFRESH`], so
//! a neighbour that changed NIC is relearnt; its old MAC stays in use
//! until then (no aging to unresolved: a silent neighbour keeps
//! forwarding, as a static entry would).
//!
//! ARP frames are built with the data plane's own `wire` views (etherparse
//! 0.16 has no ARP).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dataplane::tables::{TableOp, UNRESOLVED_MAC};
use dataplane::wire::{
    ArpOperation, ArpPacket, ArpRepr, EtherType, EthernetAddress, EthernetFrame, EthernetRepr,
    Ipv4Address, VlanTag,
};

use crate::config::{parse_interface_address, parse_ipv4, Loaded};

/// An unresolved neighbour is asked this often.
pub const RETRY: Duration = Duration::from_secs(1);
/// A resolved neighbour is asked again this often.
pub const REFRESH: Duration = Duration::from_secs(60);

/// One next hop resolved by ARP.
#[derive(Clone, Debug)]
pub struct Neighbor {
    pub next_hop: u32,
    pub port: u16,
    pub vlan: u16,
    pub address: Ipv4Addr,
    /// What we ask from: the port's address and MAC.
    pub our_address: Ipv4Addr,
    pub our_mac: [u8; 6],
    pub mac: Option<[u8; 6]>,
    pub requests: u64,
    pub last_request: Option<Instant>,
    pub learned_at: Option<Instant>,
}

/// Every next hop the control thread resolves.
#[derive(Debug, Default)]
pub struct Neighbors {
    entries: Vec<Neighbor>,
}

impl Neighbors {
    /// The next hops of a validated configuration that have an address and
    /// no static MAC. `port_macs[i]` is port i's MAC.
    pub fn from_config(loaded: &Loaded, port_macs: &[[u8; 6]]) -> Neighbors {
        let ids: Vec<u32> = (0..loaded.config.next_hops.len() as u32).collect();
        Self::with_ids(loaded, port_macs, &ids)
    }

    /// After a reload: the file's next hops now sit at `ids` (by file
    /// order). What was learnt for a next hop whose port, VLAN and address
    /// stayed is kept; the rest start over.
    pub fn reload(&mut self, loaded: &Loaded, port_macs: &[[u8; 6]], ids: &[u32]) {
        let mut fresh = Self::with_ids(loaded, port_macs, ids);
        for e in &mut fresh.entries {
            if let Some(old) = self.entries.iter().find(|o| {
                (o.next_hop, o.port, o.vlan, o.address) == (e.next_hop, e.port, e.vlan, e.address)
            }) {
                e.mac = old.mac;
                e.requests = old.requests;
                e.last_request = old.last_request;
                e.learned_at = old.learned_at;
            }
        }
        *self = fresh;
    }

    fn with_ids(loaded: &Loaded, port_macs: &[[u8; 6]], ids: &[u32]) -> Neighbors {
        let cfg = &loaded.config;
        let mut entries = Vec::new();
        for (i, nh) in cfg.next_hops.iter().enumerate() {
            if nh.mac.is_some() {
                continue;
            }
            let Some(address) = nh
                .address
                .as_ref()
                .and_then(|a| parse_ipv4(a.get_ref()).ok())
            else {
                continue;
            };
            let Some(port) = cfg
                .ports
                .iter()
                .position(|p| p.name.get_ref() == nh.port.get_ref())
            else {
                continue;
            };
            let Some((ours, _)) = cfg.ports[port]
                .address
                .as_ref()
                .and_then(|a| parse_interface_address(a.get_ref()).ok())
            else {
                continue;
            };
            entries.push(Neighbor {
                next_hop: ids.get(i).copied().unwrap_or(i as u32),
                port: port as u16,
                vlan: nh.vlan.as_ref().map_or(0, |v| *v.get_ref() as u16),
                address: address.into(),
                our_address: ours.into(),
                our_mac: port_macs.get(port).copied().unwrap_or_default(),
                mac: None,
                requests: 0,
                last_request: None,
                learned_at: None,
            });
        }
        Neighbors { entries }
    }

    pub fn entries(&self) -> &[Neighbor] {
        &self.entries
    }

    /// The entry for next hop `id`, if ARP resolves it.
    pub fn get(&self, next_hop: u32) -> Option<&Neighbor> {
        self.entries.iter().find(|e| e.next_hop == next_hop)
    }

    /// Looks at a frame punted from `port`: an ARP packet from one of our
    /// neighbours sets its MAC. Returns the table change if the MAC is new.
    pub fn learn(&mut self, port: u16, frame: &[u8], now: Instant) -> Option<TableOp> {
        let (vlan, arp) = arp_of(frame)?;
        let sender: Ipv4Addr = arp.source_protocol_addr.0.into();
        let mac = arp.source_hardware_addr.0;
        if mac == UNRESOLVED_MAC || mac[0] & 1 != 0 {
            return None;
        }
        let e = self
            .entries
            .iter_mut()
            .find(|e| e.port == port && e.vlan == vlan && e.address == sender)?;
        e.learned_at = Some(now);
        if e.mac == Some(mac) {
            return None;
        }
        e.mac = Some(mac);
        Some(TableOp::SetNeighbor {
            next_hop: e.next_hop,
            mac,
        })
    }

    /// ARP requests due now, as (port, frame): unresolved neighbours every
    /// [`RETRY`], resolved ones every [`REFRESH`].
    pub fn requests_due(&mut self, now: Instant) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        for e in &mut self.entries {
            let every = if e.mac.is_some() { REFRESH } else { RETRY };
            let last = e.last_request.max(e.learned_at);
            if last.is_some_and(|t| now.duration_since(t) < every) {
                continue;
            }
            e.last_request = Some(now);
            e.requests += 1;
            out.push((e.port, request(e)));
        }
        out
    }
}

/// Ethernet header, optional 802.1Q tag, ARP: the VLAN (0 untagged) and
/// the ARP packet, or `None` for anything else.
fn arp_of(frame: &[u8]) -> Option<(u16, ArpRepr)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let (vlan, ethertype, payload) = if eth.ethertype() == EtherType::VLAN {
        let tag = VlanTag::new_checked(eth.payload()).ok()?;
        (tag.vid(), tag.ethertype(), &eth.payload()[4..])
    } else {
        (0, eth.ethertype(), eth.payload())
    };
    if ethertype != EtherType::ARP {
        return None;
    }
    let arp = ArpRepr::parse(&ArpPacket::new_checked(payload).ok()?).ok()?;
    Some((vlan, arp))
}

/// An ARP request in a frame, with its VLAN.
pub fn arp_request_of(frame: &[u8]) -> Option<(u16, ArpRepr)> {
    arp_of(frame).filter(|(_, a)| a.operation == ArpOperation::Request)
}

/// The reply to `req` from `our_mac` (RFC 826): to the asker, on its VLAN.
pub fn arp_reply(req: &ArpRepr, vlan: u16, our_mac: [u8; 6]) -> Vec<u8> {
    arp_frame(
        req.source_hardware_addr,
        our_mac,
        vlan,
        &req.reply(EthernetAddress(our_mac)),
    )
}

/// A broadcast who-has for `e.address`, tell `e.our_address`.
fn request(e: &Neighbor) -> Vec<u8> {
    let arp = ArpRepr {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(e.our_mac),
        source_protocol_addr: Ipv4Address(e.our_address.octets()),
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: Ipv4Address(e.address.octets()),
    };
    arp_frame(EthernetAddress([0xff; 6]), e.our_mac, e.vlan, &arp)
}

/// Ethernet (802.1Q-tagged when `vlan` is not 0) around `arp`, padded to
/// the 60-byte Ethernet minimum.
fn arp_frame(dst: EthernetAddress, src: [u8; 6], vlan: u16, arp: &ArpRepr) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    let l2 = if vlan != 0 { 18 } else { 14 };
    EthernetRepr {
        src_addr: EthernetAddress(src),
        dst_addr: dst,
        ethertype: if vlan != 0 {
            EtherType::VLAN
        } else {
            EtherType::ARP
        },
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut f[..]));
    if vlan != 0 {
        let mut tag = VlanTag::new_unchecked(&mut f[14..18]);
        tag.set_tci(vlan & 0x0fff);
        tag.set_ethertype(EtherType::ARP);
    }
    arp.emit(&mut ArpPacket::new_unchecked(&mut f[l2..]));
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const CONFIG: &str = r#"
[dataplane]
workers = [1]
forward_mode = "router"

[router]
role = "p"
label_base = 1000
label_count = 16

[[port]]
name = "core0"
device = "net_null0"
address = "192.0.2.1/24"

[[port]]
name = "core1"
device = "net_null1"
address = "198.51.100.1/24"

[[next_hop]]
name = "west"
port = "core0"
address = "192.0.2.9"

[[next_hop]]
name = "east"
port = "core1"
address = "198.51.100.7"
vlan = 12

[[next_hop]]
name = "static"
port = "core0"
mac = "02:00:00:00:00:05"
address = "192.0.2.5"

[[label]]
label = 1001
action = "swap"
out_label = 2000
next_hop = "west"
"#;

    const OURS: [[u8; 6]; 2] = [[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 1, 1]];

    fn neighbors() -> Neighbors {
        let loaded = crate::config::parse(Path::new("n.toml"), CONFIG).expect("valid");
        Neighbors::from_config(&loaded, &OURS)
    }

    fn reply(from_mac: [u8; 6], from_ip: [u8; 4], vlan: u16) -> Vec<u8> {
        let e = Neighbor {
            next_hop: 0,
            port: 0,
            vlan,
            address: [192, 0, 2, 1].into(),
            our_address: from_ip.into(),
            our_mac: from_mac,
            mac: None,
            requests: 0,
            last_request: None,
            learned_at: None,
        };
        let mut f = request(&e);
        let l2 = if vlan != 0 { 18 } else { 14 };
        ArpPacket::new_unchecked(&mut f[l2..]).set_oper(ArpOperation::Reply);
        f
    }

    #[test]
    fn only_address_next_hops_without_a_mac_are_resolved() {
        let n = neighbors();
        let ids: Vec<u32> = n.entries().iter().map(|e| e.next_hop).collect();
        assert_eq!(ids, vec![0, 1]);
        assert_eq!(n.entries()[1].vlan, 12);
        assert_eq!(n.entries()[1].our_address, Ipv4Addr::new(198, 51, 100, 1));
    }

    #[test]
    fn requests_are_well_formed_and_paced() {
        let mut n = neighbors();
        let t0 = Instant::now();
        let due = n.requests_due(t0);
        assert_eq!(due.len(), 2);
        let (port, f) = &due[0];
        assert_eq!(*port, 0);
        assert_eq!(f.len(), 60);
        // Broadcast from our MAC, ARP who-has 192.0.2.9 tell 192.0.2.1.
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &OURS[0]);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        let (vlan, arp) = arp_of(f).expect("an ARP frame");
        assert_eq!(vlan, 0);
        assert_eq!(arp.operation, ArpOperation::Request);
        assert_eq!(arp.source_protocol_addr.0, [192, 0, 2, 1]);
        assert_eq!(arp.target_protocol_addr.0, [192, 0, 2, 9]);
        // The VLAN one carries its tag.
        let (port, f) = &due[1];
        assert_eq!(*port, 1);
        assert_eq!(&f[12..16], &[0x81, 0x00, 0x00, 12]);
        assert_eq!(arp_of(f).expect("ARP").0, 12);
        // Not again before RETRY; again after.
        assert!(n.requests_due(t0 + RETRY / 2).is_empty());
        assert_eq!(n.requests_due(t0 + RETRY).len(), 2);
    }

    #[test]
    fn a_reply_from_the_neighbour_resolves_it_once() {
        let mut n = neighbors();
        let now = Instant::now();
        let mac = [2, 0x99, 0, 0, 0, 9];
        // From the right address but another port or VLAN: ignored.
        assert_eq!(n.learn(1, &reply(mac, [192, 0, 2, 9], 0), now), None);
        assert_eq!(n.learn(0, &reply(mac, [192, 0, 2, 9], 7), now), None);
        // From another address: ignored.
        assert_eq!(n.learn(0, &reply(mac, [192, 0, 2, 8], 0), now), None);
        let op = n.learn(0, &reply(mac, [192, 0, 2, 9], 0), now);
        assert_eq!(op, Some(TableOp::SetNeighbor { next_hop: 0, mac }));
        // The same again changes nothing; a new MAC does.
        assert_eq!(n.learn(0, &reply(mac, [192, 0, 2, 9], 0), now), None);
        let moved = [2, 0x99, 0, 0, 0, 10];
        assert_eq!(
            n.learn(0, &reply(moved, [192, 0, 2, 9], 0), now),
            Some(TableOp::SetNeighbor {
                next_hop: 0,
                mac: moved
            })
        );
        // Tagged neighbour on its VLAN.
        assert!(n
            .learn(1, &reply(mac, [198, 51, 100, 7], 12), now)
            .is_some());
        // Resolved entries are refreshed slowly.
        let later = now + RETRY * 2;
        assert!(n.requests_due(later).is_empty());
        assert_eq!(n.requests_due(now + REFRESH).len(), 2);
    }

    #[test]
    fn garbage_and_broadcast_senders_teach_nothing() {
        let mut n = neighbors();
        let now = Instant::now();
        let good = reply([2, 0, 0, 0, 0, 9], [192, 0, 2, 9], 0);
        for len in 0..good.len() {
            if len < 42 {
                assert_eq!(n.learn(0, &good[..len], now), None, "truncated at {len}");
            }
        }
        let bcast = reply([0xff; 6], [192, 0, 2, 9], 0);
        assert_eq!(n.learn(0, &bcast, now), None);
        let zero = reply([0; 6], [192, 0, 2, 9], 0);
        assert_eq!(n.learn(0, &zero, now), None);
        let mut ipv4 = good.clone();
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(n.learn(0, &ipv4, now), None);
    }
}
