//! macswap through real DPDK ports: a finite pcap in, a pcap out. Every
//! frame comes out once, in order, with its MACs swapped; frames too short
//! to swap are dropped and counted; afterwards every mbuf is back.

mod common;

use std::time::Duration;

use common::*;
use dataplane::{ForwardMode, Running};

#[test]
fn macswap_pcap_to_pcap_conserves_packets_and_mbufs() {
    let dir = tmpdir("macswap");
    let mut input = frames(2000);
    // Runts: too short for two MAC addresses.
    input.insert(7, vec![0xaa; 11]);
    input.insert(500, vec![0xbb; 1]);
    let n = input.len() as u64;
    write_pcap(&dir.join("in.pcap"), &input);
    write_pcap(&dir.join("empty.pcap"), &[]);
    let out = dir.join("out.pcap");

    let mut eal = eal_base();
    eal.push(format!(
        "--vdev=net_pcap0,rx_pcap={}",
        dir.join("in.pcap").display()
    ));
    eal.push(format!(
        "--vdev=net_pcap1,rx_pcap={},tx_pcap={}",
        dir.join("empty.pcap").display(),
        out.display()
    ));
    let spec = spec(
        eal,
        &[("net_pcap0", 1), ("net_pcap1", 0)],
        ForwardMode::MacSwap,
    );
    let running = Running::start(&spec, None).expect("data plane starts");
    let done = wait_until(Duration::from_secs(30), || {
        let t = total(&running);
        t.tx_packets + t.drops() >= n
    });
    let t = total(&running);
    let report = running.shutdown();
    assert!(done, "only {t:?} of {n} packets handled");
    assert_eq!(report.mbufs_missing, 0, "mbufs leaked: {report:?}");
    let c = report.cores[0].1;
    assert_eq!(c.rx_packets, n);
    assert_eq!(c.runt_drops, 2);
    assert_eq!(c.tx_packets, n - 2);
    assert_eq!(c.tx_full_drops, 0);

    let got = read_pcap(&out);
    let want: Vec<Vec<u8>> = input
        .into_iter()
        .filter(|f| f.len() >= 12)
        .map(|mut f| {
            let (a, b) = f.split_at_mut(6);
            a.swap_with_slice(&mut b[..6]);
            f
        })
        .collect();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "frame {i} differs");
    }
    std::fs::remove_dir_all(&dir).ok();
}
