//! Golden pcap test of the hub role through real DPDK ports: spoke traffic
//! arriving labelled on the core port goes back to the spoke owning the
//! destination (the return path, both labels pushed) or out of the uplink
//! on its 802.1Q VLAN; uplink traffic goes to the owning spoke. Every
//! output packet is decoded by etherparse (independent of our wire code)
//! plus explicit label checks.

mod common;

use std::time::Duration;

use common::*;
use dataplane::pipeline::Outcome;
use dataplane::tables::{
    LabelAction, LabelTable, NextHop, PortInfo, PortRole, Role, Service, Tables, TtlMode,
    DEFAULT_TABLE_MEMORY,
};
use dataplane::topology::{ethernet, ipv4_udp, lse};
use etherparse::{SlicedPacket, VlanSlice};

const SPOKE_MAC: [u8; 6] = [0x02, 0x53, 0x50, 0x4b, 0, 1];
const UPLINK_MAC: [u8; 6] = [0x02, 0x55, 0x50, 0x4c, 0, 1];
const SPOKE_TRANSPORT: u32 = 100;
const SPOKE_VPN: u32 = 1001;
const UPLINK_VLAN: u16 = 300;
const N: u32 = 200;

fn addr(s: &str) -> u32 {
    u32::from(s.parse::<std::net::Ipv4Addr>().unwrap())
}

/// Port 0 core (toward the spokes), port 1 the uplink (access role,
/// untagged in, VLAN 300 out). Hub table: the spoke's clients
/// 10.0.0.0/24 back to the spoke with its labels, the rest to the uplink.
fn hub_tables() -> Tables {
    let mut svc = Service::new(
        "blue",
        addr("10.0.0.1"),
        TtlMode::Uniform,
        DEFAULT_TABLE_MEMORY,
    )
    .unwrap();
    svc.hub.add(addr("10.0.0.0"), 24, 0).unwrap();
    svc.hub.add(0, 0, 1).unwrap();
    let core = PortInfo::new(PortRole::Core, [0; 6]);
    let mut uplink = PortInfo::new(PortRole::Access, [0; 6]);
    uplink.vlan_service[0] = 0;
    let mut labels = LabelTable::new(1000, 2048);
    labels.set(1000, LabelAction::PopContinue);
    labels.set(2001, LabelAction::PopHub { service: 0 });
    Tables::new(
        Role::Hub,
        vec![core, uplink],
        vec![svc],
        vec![
            NextHop {
                port: 0,
                vlan: 0,
                dst_mac: SPOKE_MAC,
                labels: [SPOKE_TRANSPORT, SPOKE_VPN],
                n_labels: 2,
            },
            NextHop {
                port: 1,
                vlan: UPLINK_VLAN,
                dst_mac: UPLINK_MAC,
                labels: [0; 2],
                n_labels: 0,
            },
        ],
        labels,
    )
}

#[test]
fn hub_return_path_and_uplink_golden() {
    let dir = tmpdir("router-hub");
    let peer = [0x02, 0, 0, 0, 0, 0xfe];
    // From a spoke: client 10.0.1.5 to client 10.0.0.x (back to the
    // spoke) and to 8.8.8.x (out of the uplink); DSCP AF41 (TC 4).
    let core_in: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            let dst = if i % 2 == 0 {
                addr("10.0.0.10") + i % 50
            } else {
                addr("8.8.8.0") + i % 200
            };
            let ip = ipv4_udp(addr("10.0.1.5"), dst, 64, 0x88, 9, &[i as u8; 12]);
            let labels = [&lse(1000, false, 63)[..], &lse(2001, true, 63), &ip].concat();
            ethernet(peer, SPOKE_MAC, 0, 0x8847, &labels)
        })
        .collect();
    // From the uplink: 8.8.4.4 to the spoke's clients.
    let uplink_in: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            let ip = ipv4_udp(
                addr("8.8.4.4"),
                addr("10.0.0.10") + i % 50,
                64,
                0,
                53,
                &[7; 12],
            );
            ethernet(peer, UPLINK_MAC, 0, 0x0800, &ip)
        })
        .collect();
    let mut core_bad = core_in.clone();
    let mut unknown = core_in[0].clone();
    unknown[14..18].copy_from_slice(&lse(1500, false, 63));
    core_bad.push(unknown);
    let mut expired = core_in[0].clone();
    expired[17] = 1; // transport label TTL 1 -> IP TTL would reach 0
    expired[21] = 1;
    core_bad.push(expired);
    write_pcap(&dir.join("core_in.pcap"), &core_bad);
    write_pcap(&dir.join("uplink_in.pcap"), &uplink_in);

    let mut eal = eal_base();
    eal.push(format!(
        "--vdev=net_pcap0,rx_pcap={},tx_pcap={}",
        dir.join("core_in.pcap").display(),
        dir.join("core_out.pcap").display()
    ));
    eal.push(format!(
        "--vdev=net_pcap1,rx_pcap={},tx_pcap={}",
        dir.join("uplink_in.pcap").display(),
        dir.join("uplink_out.pcap").display()
    ));
    let spec = spec(
        eal,
        &[("net_pcap0", 0), ("net_pcap1", 0)],
        dataplane::ForwardMode::Router,
    );
    let running = dataplane::Running::start(&spec, Some(hub_tables())).expect("starts");
    let macs: Vec<[u8; 6]> = running.port_macs().into_iter().map(|(_, m)| m).collect();
    let want = (core_bad.len() + uplink_in.len()) as u64;
    let done = wait_until(Duration::from_secs(30), || {
        total(&running).rx_packets >= want
    });
    let report = running.shutdown();
    assert!(done, "not all packets arrived");
    assert_eq!(report.mbufs_missing, 0);
    let c = report.cores[0].1;
    assert_eq!(c.outcome(Outcome::HubToSpoke), u64::from(N / 2 + N));
    assert_eq!(c.outcome(Outcome::HubToUplink), u64::from(N / 2));
    assert_eq!(c.outcome(Outcome::UnknownLabel), 1);
    assert_eq!(c.outcome(Outcome::TtlExpired), 1);
    assert_eq!(c.tx_packets + c.drops(), c.rx_packets);

    // Back to the spoke: out of the core port with the spoke's transport
    // and VPN labels; uniform TTL.
    let core_out = read_pcap(&dir.join("core_out.pcap"));
    assert_eq!(core_out.len(), (N / 2 + N) as usize);
    let (mut from_spoke, mut from_uplink) = (0, 0);
    for (i, o) in core_out.iter().enumerate() {
        assert_eq!(o[0..6], SPOKE_MAC, "frame {i} dst MAC");
        assert_eq!(o[6..12], macs[0], "frame {i} src MAC");
        assert_eq!(o[12..14], [0x88, 0x47], "frame {i} ethertype");
        let h = ipv4_ok(&o[22..]);
        let dst = u32::from_be_bytes(h.destination());
        assert!((addr("10.0.0.10")..addr("10.0.0.60")).contains(&dst));
        // Spoke traffic: min(label 63, IP 64) - 1 = 62, TC from AF41;
        // uplink traffic: IP 64 - 1 = 63, TC 0.
        let (ttl, tc) = if h.source() == [10, 0, 1, 5] {
            from_spoke += 1;
            (62, 4)
        } else {
            assert_eq!(h.source(), [8, 8, 4, 4]);
            from_uplink += 1;
            (63, 0)
        };
        assert_eq!(h.ttl(), ttl, "frame {i} IPv4 TTL");
        assert_eq!(
            lse_fields(&o[14..18]),
            (SPOKE_TRANSPORT, tc, false, ttl),
            "frame {i}"
        );
        assert_eq!(
            lse_fields(&o[18..22]),
            (SPOKE_VPN, tc, true, ttl),
            "frame {i}"
        );
    }
    assert_eq!((from_spoke, from_uplink), (N / 2, N));

    // Out of the uplink: plain IPv4 on VLAN 300.
    let uplink_out = read_pcap(&dir.join("uplink_out.pcap"));
    assert_eq!(uplink_out.len(), (N / 2) as usize);
    for (k, (o, inp)) in uplink_out
        .iter()
        .zip(core_in.iter().skip(1).step_by(2))
        .enumerate()
    {
        let p = SlicedPacket::from_ethernet(o).expect("parses");
        let Some(etherparse::LinkSlice::Ethernet2(eth)) = p.link else {
            panic!("frame {k}: not Ethernet II");
        };
        assert_eq!(eth.destination(), UPLINK_MAC);
        assert_eq!(eth.source(), macs[1]);
        let Some(VlanSlice::SingleVlan(v)) = p.vlan else {
            panic!("frame {k}: not one 802.1Q tag");
        };
        assert_eq!(v.vlan_identifier().value(), UPLINK_VLAN);
        assert_eq!(v.ether_type(), etherparse::EtherType::IPV4);
        let h = ipv4_ok(&o[18..]);
        assert_eq!(h.ttl(), 62, "frame {k} IPv4 TTL");
        assert_eq!(o[18 + 20..], inp[22 + 20..], "frame {k} payload");
    }
    std::fs::remove_dir_all(&dir).ok();
}
