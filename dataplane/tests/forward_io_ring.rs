//! io forwarding across three real DPDK ports on one worker: a pcap in,
//! through a `net_ring` port (whose tx ring feeds its own rx), out to a
//! pcap. Each frame crosses the worker twice and comes out unchanged, in
//! order; counters add up; every mbuf is back after shutdown.

mod common;

use std::time::Duration;

use common::*;
use dataplane::{ForwardMode, Running};

#[test]
fn io_pcap_ring_pcap_conserves_packets_and_mbufs() {
    let dir = tmpdir("io-ring");
    let input = frames(3000);
    let n = input.len() as u64;
    write_pcap(&dir.join("in.pcap"), &input);
    write_pcap(&dir.join("empty.pcap"), &[]);
    let out = dir.join("out.pcap");

    let mut eal = eal_base();
    eal.push(format!(
        "--vdev=net_pcap0,rx_pcap={}",
        dir.join("in.pcap").display()
    ));
    eal.push("--vdev=net_ring0".into());
    eal.push(format!(
        "--vdev=net_pcap1,rx_pcap={},tx_pcap={}",
        dir.join("empty.pcap").display(),
        out.display()
    ));
    let mut spec = spec(
        eal,
        &[("net_pcap0", 1), ("net_ring0", 2), ("net_pcap1", 0)],
        ForwardMode::Io,
    );
    spec.latency_every = Some(1);
    let running = Running::start(&spec, None).expect("data plane starts");
    let done = wait_until(Duration::from_secs(30), || {
        let t = total(&running);
        t.tx_packets + t.drops() >= 2 * n
    });
    let t = total(&running);
    let report = running.shutdown();
    assert!(done, "only {t:?} of {} packet hops handled", 2 * n);
    assert_eq!(report.mbufs_missing, 0, "mbufs leaked: {report:?}");
    let c = report.cores[0].1;
    assert_eq!(c.rx_packets, 2 * n);
    assert_eq!(c.tx_packets + c.drops(), 2 * n);
    // The ring holds 1024 entries per queue by default; the worker never
    // has more than one burst in flight, so nothing overflows.
    assert_eq!(c.drops(), 0);
    let h = report.latency.expect("latency recorded");
    assert_eq!(h.len(), c.bursts, "one latency sample per non-empty burst");

    let got = read_pcap(&out);
    assert_eq!(got.len(), input.len());
    assert!(got == input, "frames changed or reordered");
    std::fs::remove_dir_all(&dir).ok();
}
