//! Several rx queues on one port, all polled: net_null generates packets on
//! every rx queue; the worker must drain each queue (none starved) and send
//! everything on to the peer, and the pool must be full after shutdown.

mod common;

use std::time::Duration;

use common::*;
use dataplane::{DataplaneSpec, ForwardMode, IdlePolicy, PortSpec, Running};

#[test]
fn every_rx_queue_is_polled_and_forwarded() {
    let mut eal = eal_base();
    eal.push("--vdev=net_null0".into());
    eal.push("--vdev=net_null1,no-rx=1".into());
    let spec = DataplaneSpec {
        eal_args: eal,
        workers: vec![1],
        ports: vec![
            PortSpec {
                dpdk_name: "net_null0".into(),
                rx_queues: 4,
                mtu: None,
                peer: 1,
                host: None,
            },
            PortSpec {
                dpdk_name: "net_null1".into(),
                rx_queues: 1,
                mtu: None,
                peer: 0,
                host: None,
            },
        ],
        mode: ForwardMode::MacSwap,
        mbufs: None,
        mbuf_cache: 256,
        rx_desc: 256,
        tx_desc: 256,
        idle: IdlePolicy { max_sleep_us: 0 },
        latency_every: None,
        subscribers: 0,
    };
    let running = Running::start(&spec, None).expect("data plane starts");
    let enough = wait_until(Duration::from_secs(30), || {
        let (_, st, _) = &running.port_stats()[0];
        st.q_ipackets[..4].iter().all(|&q| q >= 10_000)
    });
    let stats = running.port_stats();
    let report = running.shutdown();
    assert!(
        enough,
        "some rx queue was not polled: {:?}",
        stats[0].1.q_ipackets
    );
    assert_eq!(report.mbufs_missing, 0);
    let c = report.cores[0].1;
    assert!(c.rx_packets >= 40_000);
    // null tx frees everything it is given: no drop reason may fire.
    assert_eq!(c.tx_packets, c.rx_packets);
    assert_eq!(c.drops(), 0);
}
