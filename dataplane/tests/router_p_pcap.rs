//! Golden pcap test of the P role through real DPDK ports: the top label
//! is swapped (value and TTL), the label beneath and the payload are
//! untouched, the Ethernet header is rewritten toward the next hop.

mod common;

use std::time::Duration;

use common::*;
use dataplane::pipeline::Outcome;
use dataplane::topology::{self, Path};
use dataplane::{ForwardMode, Running};

#[test]
fn p_swap_golden() {
    let dir = tmpdir("router-p");
    let n = 300u32;
    let input: Vec<Vec<u8>> = (0..n)
        .map(|i| topology::frame(Path::PSwap, i, 32))
        .collect();
    let mut expired = input[0].clone();
    expired[17] = 1; // top label TTL 1
    let mut with_bad = input.clone();
    with_bad.push(expired);
    write_pcap(&dir.join("in.pcap"), &with_bad);
    write_pcap(&dir.join("empty.pcap"), &[]);
    let mut eal = eal_base();
    eal.push(format!(
        "--vdev=net_pcap0,rx_pcap={}",
        dir.join("in.pcap").display()
    ));
    eal.push(format!(
        "--vdev=net_pcap1,rx_pcap={},tx_pcap={}",
        dir.join("empty.pcap").display(),
        dir.join("out.pcap").display()
    ));
    let spec = spec(
        eal,
        &[("net_pcap0", 1), ("net_pcap1", 0)],
        ForwardMode::Router,
    );
    let running = Running::start(&spec, Some(topology::tables(Path::PSwap, 32).unwrap())).unwrap();
    let mac1 = running.port_macs()[1].1;
    let want = with_bad.len() as u64;
    let done = wait_until(Duration::from_secs(30), || {
        total(&running).rx_packets >= want
    });
    let report = running.shutdown();
    assert!(done);
    assert_eq!(report.mbufs_missing, 0);
    let c = report.cores[0].1;
    assert_eq!(c.outcome(Outcome::LabelSwap), u64::from(n));
    assert_eq!(c.outcome(Outcome::MplsTtlExpired), 1);
    let out = read_pcap(&dir.join("out.pcap"));
    assert_eq!(out.len(), n as usize);
    for (i, (o, inp)) in out.iter().zip(&input).enumerate() {
        assert_eq!(o.len(), inp.len(), "frame {i} length");
        assert_eq!(o[0..6], topology::PEER_MAC);
        assert_eq!(o[6..12], mac1);
        assert_eq!(o[12..14], [0x88, 0x47]);
        let top = u32::from_be_bytes([o[14], o[15], o[16], o[17]]);
        assert_eq!(top >> 12, topology::SWAP_OUT, "frame {i} label");
        assert_eq!(top & 0x100, 0, "frame {i} bottom of stack");
        assert_eq!(top & 0xff, 62, "frame {i} label TTL");
        assert_eq!(o[18..], inp[18..], "frame {i}: below the top label");
    }
    std::fs::remove_dir_all(&dir).ok();
}
