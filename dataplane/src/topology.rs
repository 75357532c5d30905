//! A fixed spoke (and P) topology with its tables and matching traffic,
//! shared by `hdvrf bench` (upstream, downstream, p-swap modes), the
//! golden pcap tests and scripts, so the packets always fit the tables.
//!
//! Ports: 0 faces the packets' source, 1 is where they leave.
//! - upstream: port 0 access (clients 10.0.x.y, untagged, one MAC each),
//!   port 1 core toward the hub (labels 100 transport, 2001 hub VPN).
//! - downstream: port 0 core (labels 1000 our transport, 1001 the
//!   service's VPN label), port 1 access toward the clients.
//! - p-swap: both core; label 1002 is swapped to 555 toward port 1.

use crate::lpm::LpmError;
use crate::tables::{
    LabelAction, LabelTable, NextHop, PortInfo, PortRole, Role, Service, Tables, TtlMode,
    DEFAULT_TABLE_MEMORY,
};

pub const HUB_MAC: [u8; 6] = [0x02, 0x48, 0x55, 0x42, 0x00, 0x01];
pub const PEER_MAC: [u8; 6] = [0x02, 0x50, 0x45, 0x45, 0x52, 0x01];
pub const TRANSPORT_LABEL: u32 = 100;
pub const HUB_VPN_LABEL: u32 = 2001;
pub const LOCAL_TRANSPORT: u32 = 1000;
pub const LOCAL_VPN: u32 = 1001;
pub const LOCAL_SWAP: u32 = 1002;
pub const SWAP_OUT: u32 = 555;
pub const GATEWAY: u32 = 0x0a00_0001; // 10.0.0.1
/// Clients are 10.0.0.2 onward.
pub const FIRST_CLIENT: u32 = 0x0a00_0002;
/// Next hops toward the hub over the core port: next hop 0 (VPN label
/// [`HUB_VPN_LABEL`]) and, after the clients' next hops, `HUB_PATHS - 1`
/// more with VPN labels `HUB_VPN_LABEL + k`, so that route churn in the
/// upstream table has somewhere to point and each packet shows which
/// route it left by.
pub const HUB_PATHS: u32 = 8;

/// The id of hub path `k` (0..[`HUB_PATHS`]) with `clients` subscribers.
pub fn hub_next_hop(k: u32, clients: u32) -> u32 {
    if k == 0 {
        0
    } else {
        clients + k
    }
}

/// The VPN label packets get on hub path `k`.
pub fn hub_vpn_label(k: u32) -> u32 {
    HUB_VPN_LABEL + k
}

/// The MAC of client `i`.
pub fn client_mac(i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x02, 0xc1, b[0], b[1], b[2], b[3]]
}

pub fn client_addr(i: u32) -> u32 {
    FIRST_CLIENT + i
}

/// Which way the traffic goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    Upstream,
    Downstream,
    PSwap,
}

impl std::str::FromStr for Path {
    type Err = String;
    fn from_str(s: &str) -> Result<Path, String> {
        match s {
            "upstream" => Ok(Path::Upstream),
            "downstream" => Ok(Path::Downstream),
            "p-swap" => Ok(Path::PSwap),
            o => Err(format!("unknown path {o:?} (upstream, downstream, p-swap)")),
        }
    }
}

/// Tables for `path` with `clients` subscribers (host routes and
/// anti-spoofing entries).
pub fn tables(path: Path, clients: u32) -> Result<Tables, LpmError> {
    let (access_port, core_port) = match path {
        Path::Upstream => (0u16, 1u16),
        Path::Downstream | Path::PSwap => (1, 0),
    };
    let mut svc = Service::new("bench", GATEWAY, TtlMode::Uniform, DEFAULT_TABLE_MEMORY)?;
    let mut next_hops = vec![NextHop {
        port: if path == Path::Upstream { core_port } else { 1 },
        vlan: 0,
        dst_mac: if path == Path::PSwap {
            PEER_MAC
        } else {
            HUB_MAC
        },
        labels: [TRANSPORT_LABEL, HUB_VPN_LABEL],
        n_labels: if path == Path::PSwap { 0 } else { 2 },
    }];
    svc.upstream.add(0, 0, 0)?;
    for i in 0..clients {
        next_hops.push(NextHop {
            port: access_port,
            vlan: 0,
            dst_mac: client_mac(i),
            labels: [0; 2],
            n_labels: 0,
        });
        svc.downstream.add(client_addr(i), 32, i + 1)?;
    }
    if path == Path::Upstream {
        for k in 1..HUB_PATHS {
            next_hops.push(NextHop {
                port: core_port,
                vlan: 0,
                dst_mac: HUB_MAC,
                labels: [TRANSPORT_LABEL, hub_vpn_label(k)],
                n_labels: 2,
            });
        }
    }
    let mut ports = vec![
        PortInfo::new(PortRole::Core, [0; 6]),
        PortInfo::new(PortRole::Core, [0; 6]),
    ];
    if path != Path::PSwap {
        ports[access_port as usize] = PortInfo::new(PortRole::Access, [0; 6]);
        ports[access_port as usize].vlan_service[0] = 0;
    }
    let mut labels = LabelTable::new(LOCAL_TRANSPORT, 1024);
    labels.set(LOCAL_TRANSPORT, LabelAction::PopContinue);
    labels.set(LOCAL_VPN, LabelAction::PopDownstream { service: 0 });
    labels.set(
        LOCAL_SWAP,
        LabelAction::Swap {
            label: SWAP_OUT,
            next_hop: 0,
        },
    );
    let role = if path == Path::PSwap {
        Role::P
    } else {
        Role::Spoke
    };
    Ok(Tables::new(role, ports, vec![svc], next_hops, labels))
}

/// IPv4/UDP from `src` to `dst` (port 1024 to `dport`) with `tos`, `ttl`
/// and `payload`; the header checksum is filled in.
pub fn ipv4_udp(src: u32, dst: u32, ttl: u8, tos: u8, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = 28 + payload.len();
    let mut p = vec![0u8; 28];
    p[0] = 0x45;
    p[1] = tos;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = ttl;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.to_be_bytes());
    p[16..20].copy_from_slice(&dst.to_be_bytes());
    let c = crate::wire::checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&1024u16.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..26].copy_from_slice(&((len - 20) as u16).to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// An Ethernet frame, 802.1Q-tagged when `vlan` is not 0.
pub fn ethernet(dst: [u8; 6], src: [u8; 6], vlan: u16, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(18 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    if vlan != 0 {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&vlan.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A label stack entry (RFC 3032) with traffic class 0.
pub fn lse(label: u32, bos: bool, ttl: u8) -> [u8; 4] {
    (label << 12 | u32::from(bos) << 8 | u32::from(ttl)).to_be_bytes()
}

/// Frame `i` of the traffic for `path` (60 bytes before labels: the
/// 64-byte frames benchmarks use, FCS excluded).
pub fn frame(path: Path, i: u32, clients: u32) -> Vec<u8> {
    let c = i % clients.max(1);
    const TO_US: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
    match path {
        // Client c to client c+1: client-to-client must still go to the
        // hub (claim 2).
        Path::Upstream => {
            let dst = client_addr((c + 1) % clients.max(1));
            let ip = ipv4_udp(client_addr(c), dst, 64, 0, 9, &[0; 18]);
            ethernet(TO_US, client_mac(c), 0, 0x0800, &ip)
        }
        Path::Downstream | Path::PSwap => {
            let top = if path == Path::Downstream {
                LOCAL_TRANSPORT
            } else {
                LOCAL_SWAP
            };
            let bottom = if path == Path::Downstream {
                LOCAL_VPN
            } else {
                HUB_VPN_LABEL
            };
            let ip = ipv4_udp(0x0808_0808, client_addr(c), 64, 0, 9, &[0; 10]);
            let payload = [&lse(top, false, 63)[..], &lse(bottom, true, 63), &ip].concat();
            ethernet(TO_US, HUB_MAC, 0, 0x8847, &payload)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{process, Outcome, VecFrame};

    #[test]
    fn every_frame_is_forwarded_by_its_tables() {
        for (path, want, port) in [
            (Path::Upstream, Outcome::Upstream, 1),
            (Path::Downstream, Outcome::Downstream, 1),
            (Path::PSwap, Outcome::LabelSwap, 1),
        ] {
            let t = tables(path, 64).unwrap();
            for i in 0..128 {
                let mut f = VecFrame::new(&frame(path, i, 64));
                let n = process(&t, 0, &mut f);
                assert_eq!((n.outcome, n.port), (want, port), "{path:?} frame {i}");
            }
        }
    }
}
