//! Helpers for the DPDK integration tests: one EAL per test process, so
//! each test file holds exactly one `#[test]`.

#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dataplane::{CoreSnapshot, DataplaneSpec, ForwardMode, IdlePolicy, PortSpec, Running};
use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};

pub fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hdvrf-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `n` distinct Ethernet frames of varying length (60..=1514 bytes).
pub fn frames(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let len = 60 + (i * 97) % (1514 - 60 + 1);
            let mut f = vec![0u8; len];
            f[..6].copy_from_slice(&[0x02, 0, 0, 0, (i >> 8) as u8, i as u8]);
            f[6..12].copy_from_slice(&[0x02, 0xff, 0, 0, (i >> 8) as u8, i as u8]);
            f[12..14].copy_from_slice(&[0x88, 0xb5]); // local experimental
            for (k, b) in f[14..].iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(31).wrapping_add(k as u8);
            }
            f
        })
        .collect()
}

pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut w = PcapWriter::new(File::create(path).unwrap()).unwrap();
    for (i, f) in frames.iter().enumerate() {
        w.write_packet(&PcapPacket::new(
            Duration::from_micros(i as u64),
            f.len() as u32,
            f,
        ))
        .unwrap();
    }
}

pub fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let mut r = PcapReader::new(File::open(path).unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        out.push(p.unwrap().data.into_owned());
    }
    out
}

pub fn total(r: &Running) -> CoreSnapshot {
    let mut t = CoreSnapshot::default();
    for (_, c) in r.cores() {
        t.rx_packets += c.rx_packets;
        t.tx_packets += c.tx_packets;
        t.tx_full_drops += c.tx_full_drops;
        t.runt_drops += c.runt_drops;
    }
    t
}

/// Polls `cond` until it holds or `limit` passes (a hang guard, not a
/// timing assertion).
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

pub fn eal_base() -> Vec<String> {
    [
        "-l",
        "0,1",
        "--main-lcore=0",
        "--no-huge",
        "--no-shconf",
        "-m",
        "256",
        "--no-pci",
        "--log-level=*:error",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// One worker on lcore 1, single-queue ports `(dpdk name, peer)`, small
/// pools and rings, idle back-off on (tests share the machine).
pub fn spec(eal_args: Vec<String>, ports: &[(&str, usize)], mode: ForwardMode) -> DataplaneSpec {
    DataplaneSpec {
        eal_args,
        workers: vec![1],
        ports: ports
            .iter()
            .map(|&(name, peer)| PortSpec {
                dpdk_name: name.into(),
                rx_queues: 1,
                mtu: None,
                peer,
                host: None,
            })
            .collect(),
        mode,
        mbufs: Some(8191),
        mbuf_cache: 128,
        rx_desc: 512,
        tx_desc: 512,
        idle: IdlePolicy { max_sleep_us: 50 },
        latency_every: None,
        subscribers: 1024,
    }
}

/// A label stack entry's fields, decoded by hand (etherparse has no
/// MPLS): (label, TC, bottom of stack, TTL).
pub fn lse_fields(b: &[u8]) -> (u32, u8, bool, u8) {
    let v = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (v >> 12, ((v >> 9) & 7) as u8, v & 0x100 != 0, v as u8)
}

/// The IPv4 header at `b`, decoded by etherparse, whose checksum must
/// match etherparse's recomputation.
pub fn ipv4_ok(b: &[u8]) -> etherparse::Ipv4HeaderSlice<'_> {
    let h = etherparse::Ipv4HeaderSlice::from_slice(b).expect("IPv4 header");
    assert_eq!(
        h.header_checksum(),
        h.to_header().calc_header_checksum(),
        "IPv4 checksum"
    );
    h
}
