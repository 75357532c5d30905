//! Golden pcap test of the spoke's two directions through real DPDK ports:
//! client frames in on the access port (pcap) come out on the core port
//! labelled for the hub; labelled frames in on the core port come out on
//! the access port to the client. Every output packet is decoded by
//! etherparse (independent of our wire code) plus explicit label checks:
//! MACs, ethertype, each label's value, TC, bottom-of-stack and TTL, IPv4
//! TTL and checksum, addresses and payload.

mod common;

use std::time::Duration;

use common::*;
use dataplane::pipeline::Outcome;
use dataplane::topology::{self, Path};
use dataplane::{ForwardMode, Running, SubscriberSnapshot};
use etherparse::{Ipv4HeaderSlice, SlicedPacket};

const CLIENTS: u32 = 64;
const N: u32 = 500;

#[test]
fn spoke_upstream_and_downstream_golden() {
    let dir = tmpdir("router-spoke");
    let up: Vec<Vec<u8>> = (0..N)
        .map(|i| topology::frame(Path::Upstream, i, CLIENTS))
        .collect();
    let down: Vec<Vec<u8>> = (0..N)
        .map(|i| topology::frame(Path::Downstream, i, CLIENTS))
        .collect();
    // Hostile extras, each with its own counter: a spoofed client, a
    // runt, an unknown label.
    let mut spoofed = up[0].clone();
    spoofed[6..12].copy_from_slice(&topology::client_mac(5));
    let mut up_in = up.clone();
    up_in.push(spoofed);
    up_in.push(vec![0xff; 10]);
    let mut unknown = down[0].clone();
    unknown[14..18].copy_from_slice(&(77u32 << 12 | 63).to_be_bytes());
    let mut down_in = down.clone();
    down_in.push(unknown);
    write_pcap(&dir.join("up.pcap"), &up_in);
    write_pcap(&dir.join("down.pcap"), &down_in);

    let mut eal = eal_base();
    eal.push(format!(
        "--vdev=net_pcap0,rx_pcap={},tx_pcap={}",
        dir.join("up.pcap").display(),
        dir.join("access_out.pcap").display()
    ));
    eal.push(format!(
        "--vdev=net_pcap1,rx_pcap={},tx_pcap={}",
        dir.join("down.pcap").display(),
        dir.join("core_out.pcap").display()
    ));
    let spec = spec(
        eal,
        &[("net_pcap0", 1), ("net_pcap1", 0)],
        ForwardMode::Router,
    );
    let tables = topology::tables(Path::Upstream, CLIENTS).unwrap();
    // Each client's session next hop, as its host route names it.
    let subscriber: Vec<u32> = (0..CLIENTS)
        .map(|c| {
            tables.services[0]
                .downstream
                .lookup(topology::client_addr(c))
        })
        .collect();
    // What each client should be counted: packets and IPv4 bytes (decoded
    // by etherparse) each way, found by the frames' addresses.
    let mut want = vec![SubscriberSnapshot::default(); CLIENTS as usize];
    let client_of = |a: [u8; 4]| (u32::from_be_bytes(a) - topology::client_addr(0)) as usize;
    for f in &up {
        let h = Ipv4HeaderSlice::from_slice(&f[14..]).unwrap();
        let w = &mut want[client_of(h.source())];
        w.up_packets += 1;
        w.up_bytes += u64::from(h.total_len());
    }
    for f in &down {
        let h = Ipv4HeaderSlice::from_slice(&f[22..]).unwrap();
        let w = &mut want[client_of(h.destination())];
        w.down_packets += 1;
        w.down_bytes += u64::from(h.total_len());
    }
    // The spoofed frame came from client 5's MAC.
    want[5].spoofed_drops = 1;
    let running = Running::start(&spec, Some(tables)).expect("data plane starts");
    let macs: Vec<[u8; 6]> = running.port_macs().into_iter().map(|(_, m)| m).collect();
    let total_in = (up_in.len() + down_in.len()) as u64;
    let done = wait_until(Duration::from_secs(30), || {
        total(&running).rx_packets >= total_in
    });
    let counted = |r: &Running| -> Vec<SubscriberSnapshot> {
        subscriber
            .iter()
            .map(|&id| r.subscriber(id).expect("within the counted next hops"))
            .collect()
    };
    // The workers' counter stores are relaxed: wait for them to show.
    wait_until(Duration::from_secs(5), || counted(&running) == want);
    assert_eq!(counted(&running), want, "per-subscriber counters");
    assert_eq!(
        running.subscriber(spec.subscribers as u32),
        None,
        "next hops beyond the preallocated ones are not counted"
    );
    let report = running.shutdown();
    assert!(done, "not all packets arrived");
    assert_eq!(report.mbufs_missing, 0);
    let c = report.cores[0].1;
    assert_eq!(c.rx_packets, total_in);
    assert_eq!(c.outcome(Outcome::Upstream), u64::from(N));
    assert_eq!(c.outcome(Outcome::Downstream), u64::from(N));
    assert_eq!(c.outcome(Outcome::Spoofed), 1);
    assert_eq!(c.outcome(Outcome::Runt), 1);
    assert_eq!(c.outcome(Outcome::UnknownLabel), 1);
    assert_eq!(c.tx_packets + c.drops(), c.rx_packets);

    // Upstream: out of the core port (1), to the hub, two labels.
    let core_out = read_pcap(&dir.join("core_out.pcap"));
    assert_eq!(core_out.len(), N as usize);
    for (i, (o, inp)) in core_out.iter().zip(&up).enumerate() {
        assert_eq!(o[0..6], topology::HUB_MAC, "frame {i} dst MAC");
        assert_eq!(o[6..12], macs[1], "frame {i} src MAC");
        assert_eq!(o[12..14], [0x88, 0x47], "frame {i} ethertype");
        assert_eq!(
            lse_fields(&o[14..18]),
            (topology::TRANSPORT_LABEL, 0, false, 63),
            "frame {i} transport label"
        );
        assert_eq!(
            lse_fields(&o[18..22]),
            (topology::HUB_VPN_LABEL, 0, true, 63),
            "frame {i} VPN label"
        );
        let h = ipv4_ok(&o[22..]);
        let h_in = Ipv4HeaderSlice::from_slice(&inp[14..]).unwrap();
        assert_eq!(h.ttl(), h_in.ttl() - 1);
        assert_eq!(h.source(), h_in.source());
        assert_eq!(h.destination(), h_in.destination());
        assert_eq!(o[22 + 20..], inp[14 + 20..], "frame {i} payload");
    }

    // Downstream: out of the access port (0), to the client's MAC.
    let access_out = read_pcap(&dir.join("access_out.pcap"));
    assert_eq!(access_out.len(), N as usize);
    for (i, (o, inp)) in access_out.iter().zip(&down).enumerate() {
        let p = SlicedPacket::from_ethernet(o).expect("parses");
        let eth = p.link.expect("ethernet");
        let etherparse::LinkSlice::Ethernet2(eth) = eth else {
            panic!("frame {i}: not Ethernet II");
        };
        let client = i as u32 % CLIENTS;
        assert_eq!(
            eth.destination(),
            topology::client_mac(client),
            "frame {i} dst MAC"
        );
        assert_eq!(eth.source(), macs[0], "frame {i} src MAC");
        assert_eq!(eth.ether_type(), etherparse::EtherType::IPV4);
        assert!(p.vlan.is_none());
        let h = ipv4_ok(&o[14..]);
        // Uniform TTL: min(label 63, IP 64) - 1.
        assert_eq!(h.ttl(), 62, "frame {i} TTL");
        assert_eq!(
            u32::from_be_bytes(h.destination()),
            topology::client_addr(client)
        );
        assert_eq!(o[14 + 20..], inp[22 + 20..], "frame {i} payload");
    }
    std::fs::remove_dir_all(&dir).ok();
}
