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
    let mut svc = Service::new("bench", GATEWAY, TtlMode::Uniform)?;
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
    Ok(Tables {
        role: if path == Path::PSwap {
            Role::P
        } else {
            Role::Spoke
        },
        ports,
        services: vec![svc],
        next_hops,
        labels,
    })
}

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// IPv4/UDP, `len` bytes in all (>= 28), valid checksum.
pub fn ipv4_udp(src: u32, dst: u32, ttl: u8, len: usize) -> Vec<u8> {
    let len = len.max(28);
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = ttl;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.to_be_bytes());
    p[16..20].copy_from_slice(&dst.to_be_bytes());
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&1024u16.to_be_bytes());
    p[22..24].copy_from_slice(&9u16.to_be_bytes());
    p[24..26].copy_from_slice(&((len - 20) as u16).to_be_bytes());
    p
}

/// Frame `i` of the traffic for `path` (60 bytes before labels: the
/// 64-byte frames benchmarks use, FCS excluded).
pub fn frame(path: Path, i: u32, clients: u32) -> Vec<u8> {
    let c = i % clients.max(1);
    let mut f = Vec::with_capacity(72);
    match path {
        Path::Upstream => {
            // Client c to client c+1: client-to-client must still go to
            // the hub (claim 2).
            let dst = client_addr((c + 1) % clients.max(1));
            f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0xfe]);
            f.extend_from_slice(&client_mac(c));
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            f.extend_from_slice(&ipv4_udp(client_addr(c), dst, 64, 46));
        }
        Path::Downstream => {
            f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0xfe]);
            f.extend_from_slice(&HUB_MAC);
            f.extend_from_slice(&0x8847u16.to_be_bytes());
            f.extend_from_slice(&(LOCAL_TRANSPORT << 12 | 63).to_be_bytes());
            f.extend_from_slice(&(LOCAL_VPN << 12 | 1 << 8 | 63).to_be_bytes());
            f.extend_from_slice(&ipv4_udp(0x0808_0808, client_addr(c), 64, 38));
        }
        Path::PSwap => {
            f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0xfe]);
            f.extend_from_slice(&HUB_MAC);
            f.extend_from_slice(&0x8847u16.to_be_bytes());
            f.extend_from_slice(&(LOCAL_SWAP << 12 | 63).to_be_bytes());
            f.extend_from_slice(&(HUB_VPN_LABEL << 12 | 1 << 8 | 63).to_be_bytes());
            f.extend_from_slice(&ipv4_udp(0x0808_0808, client_addr(c), 64, 38));
        }
    }
    f
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
