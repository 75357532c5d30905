//! Stress test of table publication: one worker forwards client traffic
//! as fast as it can (a pcap replayed forever, everything captured on the
//! core port) while the control side commits hundreds of random batches of
//! route adds, moves and deletes in the upstream table, whose routes cover
//! the traffic's own destinations.
//!
//! Each hub path puts its own VPN label on a packet, so every captured
//! packet tells which route it left by. A model replays the commits and
//! knows, for every generation, each destination's route. The worker reads
//! one table per burst and generations only move forward, so the captured
//! sequence must be explainable by a non-decreasing sequence of
//! generations: every packet left by the route its destination had in the
//! table the worker held, never by a route from a mix of two tables, and
//! never by an older table once a newer one was seen. Packets sent after
//! the last commit returned must all use its routes. None may be lost: the
//! default route stays, so every packet is forwarded and captured.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use dataplane::lpm::mask;
use dataplane::pipeline::Outcome;
use dataplane::tables::{RouteTable, TableOp};
use dataplane::topology::{self, Path};
use dataplane::{ForwardMode, Running};

const CLIENTS: u32 = 64;
const COMMITS: usize = 400;

/// xorshift64*, seeded: the same churn on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The routes the churn plays with: each client's /32, /30s, /28s and
/// /26s over the clients, the /24, /16 and /8 around them, and the default
/// route (moved, never deleted).
fn route_pool() -> Vec<(u32, u8)> {
    let mut pool = vec![
        (0, 0),
        (0x0a00_0000, 8),
        (0x0a00_0000, 16),
        (0x0a00_0000, 24),
    ];
    for i in 0..CLIENTS {
        let a = topology::client_addr(i);
        pool.push((a, 32));
        for len in [30u8, 28, 26] {
            let net = a & mask(len);
            if !pool.contains(&(net, len)) {
                pool.push((net, len));
            }
        }
    }
    pool
}

/// Longest-prefix match over the model's routes.
fn lookup(routes: &BTreeMap<(u32, u8), u32>, addr: u32) -> Option<u32> {
    (0..=32u8)
        .rev()
        .find_map(|len| routes.get(&(addr & mask(len), len)).copied())
}

#[test]
fn every_packet_leaves_by_a_route_of_a_table_the_worker_held() {
    let dir = tmpdir("router-churn");
    let input: Vec<Vec<u8>> = (0..256)
        .map(|i| topology::frame(Path::Upstream, i, CLIENTS))
        .collect();
    write_pcap(&dir.join("in.pcap"), &input);
    let out = dir.join("core_out.pcap");
    let mut eal = eal_base();
    eal.push(format!(
        "--vdev=net_pcap0,rx_pcap={},infinite_rx=1",
        dir.join("in.pcap").display()
    ));
    eal.push(format!("--vdev=net_pcap1,tx_pcap={}", out.display()));
    let spec = spec(
        eal,
        &[("net_pcap0", 1), ("net_pcap1", 0)],
        ForwardMode::Router,
    );
    let tables = topology::tables(Path::Upstream, CLIENTS).unwrap();
    let mut running = Running::start(&spec, Some(tables)).expect("data plane starts");
    let sent = |r: &Running| total(r).tx_packets;

    // Generation 0: only the default route, to hub path 0.
    let dests: Vec<u32> = (0..CLIENTS).map(topology::client_addr).collect();
    let mut model: BTreeMap<(u32, u8), u32> = BTreeMap::new();
    model.insert((0, 0), topology::hub_next_hop(0, CLIENTS));
    let answers = |m: &BTreeMap<(u32, u8), u32>| -> Vec<u32> {
        dests
            .iter()
            .map(|&d| lookup(m, d).expect("the default route stays"))
            .collect()
    };
    let mut by_generation = vec![answers(&model)];

    let pool = route_pool();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    assert!(wait_until(Duration::from_secs(30), || sent(&running) > 1000));
    for g in 1..=COMMITS {
        let mut batch = Vec::new();
        for _ in 0..1 + rng.below(8) {
            let (prefix, len) = pool[rng.below(pool.len() as u64) as usize];
            let present = model.contains_key(&(prefix, len));
            let (service, table) = (0, RouteTable::Upstream);
            if present && len > 0 && rng.below(2) == 0 {
                model.remove(&(prefix, len));
                batch.push(TableOp::DeleteRoute {
                    service,
                    table,
                    prefix,
                    len,
                });
            } else {
                let k = rng.below(u64::from(topology::HUB_PATHS)) as u32;
                let next_hop = topology::hub_next_hop(k, CLIENTS);
                model.insert((prefix, len), next_hop);
                batch.push(TableOp::AddRoute {
                    service,
                    table,
                    prefix,
                    len,
                    next_hop,
                });
            }
        }
        let s = running.commit(&batch).expect("commit");
        assert_eq!(s.generation, g as u64);
        assert!(
            running.tables().unwrap().rejected().is_empty(),
            "{:?}",
            running.tables().unwrap().rejected()
        );
        by_generation.push(answers(&model));
        // Let some traffic through each generation (the worker may have
        // moved on already; what counts is that traffic keeps flowing).
        // Polled without sleeping, so the capture stays small.
        let now = sent(&running);
        let t0 = Instant::now();
        while sent(&running) <= now + 64 {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "traffic stopped after commit {g}"
            );
            std::thread::yield_now();
        }
    }
    let st = running.publication_stats();
    assert_eq!((st.commits, st.failed), (COMMITS as u64, 0));
    assert!(st.ops >= COMMITS as u64 && st.max_visible_after >= st.last_visible_after);
    // Everything sent from here on was read with the last table.
    let after_last = sent(&running);
    assert!(wait_until(Duration::from_secs(30), || sent(&running)
        > after_last + 5000));
    let report = running.shutdown();
    assert_eq!(report.mbufs_missing, 0);
    let c = report.cores[0].1;
    assert_eq!(c.drops(), 0, "{c:?}");
    assert_eq!(c.outcome(Outcome::Upstream), c.rx_packets);
    assert_eq!(c.tx_packets, c.rx_packets, "lost packets");

    let captured = read_pcap(&out);
    assert_eq!(captured.len() as u64, c.tx_packets, "captured = sent");
    let hop_of_label = |label: u32| -> u32 {
        let k = label
            .checked_sub(topology::HUB_VPN_LABEL)
            .filter(|k| *k < topology::HUB_PATHS)
            .unwrap_or_else(|| panic!("VPN label {label} is no hub path's"));
        topology::hub_next_hop(k, CLIENTS)
    };
    let mut generation = 0usize;
    let mut seen_per_generation = vec![0u64; by_generation.len()];
    for (i, f) in captured.iter().enumerate() {
        let (vpn, _, bos, _) = lse_fields(&f[18..22]);
        assert!(bos, "packet {i}: two labels");
        let hop = hop_of_label(vpn);
        let dst = u32::from_be_bytes(f[22 + 16..22 + 20].try_into().unwrap());
        let d = dests
            .iter()
            .position(|&x| x == dst)
            .unwrap_or_else(|| panic!("packet {i}: unknown destination {dst:#x}"));
        // The earliest generation, no older than the last packet's, in
        // which this destination's route was this next hop.
        let g = (generation..by_generation.len())
            .find(|&g| by_generation[g][d] == hop)
            .unwrap_or_else(|| {
                panic!(
                    "packet {i} to {dst:#x} left by next hop {hop}: no table from generation \
                     {generation} on had that route (routes from there: {:?})",
                    (generation..by_generation.len())
                        .map(|g| by_generation[g][d])
                        .collect::<Vec<_>>()
                )
            });
        generation = g;
        seen_per_generation[g] += 1;
        if i as u64 >= c.tx_packets - 1000 {
            assert_eq!(
                by_generation[COMMITS][d], hop,
                "packet {i}, sent after the last commit returned, used an old route"
            );
        }
    }
    // The check has teeth only if routes really changed under traffic.
    let generations_seen = seen_per_generation.iter().filter(|&&n| n > 0).count();
    eprintln!(
        "router_churn: {} packets captured, matched to {generations_seen} of {} generations",
        captured.len(),
        COMMITS + 1
    );
    assert!(
        generations_seen > COMMITS / 4,
        "packets matched only {generations_seen} of {} generations",
        COMMITS + 1
    );
    std::fs::remove_dir_all(&dir).ok();
}
