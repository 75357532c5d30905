//! Table publication on a running router: traffic flows without pause
//! (a pcap replayed forever into net_null) while the control side deletes
//! and re-adds every client's host route. After each commit returns, the
//! workers use the new tables only: no packet is delivered while the
//! routes are gone, all are once they are back, and every packet is
//! accounted for.

mod common;

use std::time::Duration;

use common::*;
use dataplane::pipeline::Outcome;
use dataplane::tables::{RouteTable, TableOp};
use dataplane::topology::{self, Path};
use dataplane::{ForwardMode, Running};

const CLIENTS: u32 = 64;

fn routes(add: bool) -> Vec<TableOp> {
    (0..CLIENTS)
        .map(|i| {
            let (service, table, prefix, len) =
                (0, RouteTable::Downstream, topology::client_addr(i), 32);
            if add {
                TableOp::AddRoute {
                    service,
                    table,
                    prefix,
                    len,
                    next_hop: i + 1,
                }
            } else {
                TableOp::DeleteRoute {
                    service,
                    table,
                    prefix,
                    len,
                }
            }
        })
        .collect()
}

#[test]
fn routes_change_under_traffic_and_take_effect_when_commit_returns() {
    let dir = tmpdir("router-publish");
    let input: Vec<Vec<u8>> = (0..256)
        .map(|i| topology::frame(Path::Downstream, i, CLIENTS))
        .collect();
    write_pcap(&dir.join("in.pcap"), &input);
    let mut eal = eal_base();
    eal.push(format!(
        "--vdev=net_pcap0,rx_pcap={},infinite_rx=1",
        dir.join("in.pcap").display()
    ));
    eal.push("--vdev=net_null0,no-rx=1".into());
    let spec = spec(
        eal,
        &[("net_pcap0", 1), ("net_null0", 0)],
        ForwardMode::Router,
    );
    let tables = topology::tables(Path::Downstream, CLIENTS).unwrap();
    let mut running = Running::start(&spec, Some(tables)).expect("data plane starts");
    let count =
        |r: &Running, o: Outcome| -> u64 { r.cores().iter().map(|(_, c)| c.outcome(o)).sum() };
    let delivered = |r: &Running| count(r, Outcome::Downstream);
    let no_route = |r: &Running| count(r, Outcome::NoRoute);
    let up = wait_until(Duration::from_secs(30), || delivered(&running) > 10_000);
    assert!(up, "no delivery: {:?}", total(&running));

    // Every host route gone: from the moment the commit returns, nothing
    // more is delivered and packets count as "no route".
    let s = running.commit(&routes(false)).expect("commit");
    assert_eq!((s.generation, s.ops), (1, CLIENTS as usize));
    assert!(running.tables().unwrap().rejected().is_empty());
    let frozen = delivered(&running);
    let before = no_route(&running);
    assert!(wait_until(Duration::from_secs(30), || no_route(&running)
        > before + 10_000));
    assert_eq!(
        delivered(&running),
        frozen,
        "delivered with the routes deleted"
    );

    // Back again: delivery resumes and "no route" stops growing.
    let s = running.commit(&routes(true)).expect("commit");
    assert_eq!(s.generation, 2);
    let stuck = no_route(&running);
    assert!(wait_until(Duration::from_secs(30), || delivered(&running)
        > frozen + 10_000));
    assert_eq!(no_route(&running), stuck, "no route with the routes back");

    // Deleting a route that is not there is reported, on both copies.
    running.commit(&routes(false)[..1]).expect("commit");
    running.commit(&routes(false)[..1]).expect("commit");
    assert_eq!(running.tables().unwrap().rejected().len(), 1);

    let report = running.shutdown();
    assert_eq!(report.mbufs_missing, 0);
    let c = report.cores[0].1;
    assert_eq!(c.tx_packets + c.drops(), c.rx_packets);
    assert_eq!(
        c.outcome(Outcome::Downstream) + c.outcome(Outcome::NoRoute),
        c.rx_packets
    );
    std::fs::remove_dir_all(&dir).ok();
}
