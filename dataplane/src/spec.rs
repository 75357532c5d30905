//! What the data plane is asked to bring up: ports, their host taps,
//! workers, the idle policy. Plain data, built by the control side from
//! the configuration, so it needs no DPDK; `runtime` brings it up.

use crate::forward::ForwardMode;

/// One port as the runtime needs it.
#[derive(Clone, Debug)]
pub struct PortSpec {
    /// DPDK's name for the probed device (`net_tap0`, `0000:01:00.0`).
    pub dpdk_name: String,
    pub rx_queues: u16,
    pub mtu: Option<u16>,
    /// Index of the port that gets what this port receives.
    pub peer: usize,
    /// Router mode: the port's kernel side (host path), if it has one.
    pub host: Option<HostSpec>,
}

/// A port's host tap: a `net_tap` device already in the EAL arguments.
#[derive(Clone, Debug)]
pub struct HostSpec {
    /// DPDK's name for the tap device (`net_tap_hd0`).
    pub dpdk_name: String,
    /// The kernel interface it creates.
    pub iface: String,
}

/// The whole data plane to bring up.
#[derive(Clone, Debug)]
pub struct DataplaneSpec {
    /// Complete EAL arguments (lcores, memory, devices, logging).
    pub eal_args: Vec<String>,
    /// Worker lcores; they must be exactly EAL's worker lcores.
    pub workers: Vec<u32>,
    pub ports: Vec<PortSpec>,
    pub mode: ForwardMode,
    /// Mbufs per pool; `None` sizes the pool from queues and cores.
    pub mbufs: Option<u32>,
    pub mbuf_cache: u32,
    pub rx_desc: u16,
    pub tx_desc: u16,
    pub idle: IdlePolicy,
    /// Record per-burst latency on one burst in this many (power of two).
    pub latency_every: Option<u32>,
    /// Router mode: next hops (ids `0..subscribers`) whose packets and
    /// bytes each worker counts, preallocated.
    pub subscribers: usize,
}

/// Idle back-off: after `EMPTY_POLLS_BEFORE_SLEEP` empty loops, or
/// `SPIN_BEFORE_SLEEP` without a packet if that comes first (both in
/// `worker`), the worker sleeps 1 us, doubling up to `max_sleep_us`. 0
/// disables sleeping (benchmarks, dedicated cores).
#[derive(Clone, Copy, Debug)]
pub struct IdlePolicy {
    pub max_sleep_us: u32,
}
