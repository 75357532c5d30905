//! The host path: packets for the router itself reach the kernel, and what
//! the kernel sends leaves through the port it stands for.
//!
//! ```text
//!  worker: rx(port) -> pipeline: punt (ARP, DHCP, IPv4 to the router)
//!            -> PuntQueue (lock-free, bounded; full: counted, freed)
//!  control: HostPath::poll
//!            -> inspect (neighbour learning, later the DHCP relay)
//!            -> host tap of that port (a net_tap device: a kernel
//!               interface with the port's MAC and address)
//!  control: host tap rx (ARP replies, ICMP, BGP's TCP from the kernel)
//!            -> InjectQueue -> the first worker sends each on its own tx
//!               queue of the port -> wire
//! ```
//!
//! Workers never touch a tap: a tap's rx and tx are system calls, which the
//! fast path must not make. The control thread polls the taps instead,
//! as DPDK's exception-path examples do with a tap or virtio-user port.
//! What the kernel (or the control thread) sends goes out through a worker
//! rather than a tx queue of the control thread's own: some drivers
//! (net_tap among them) need as many tx queues as rx queues, and the
//! worker pays one check of an empty queue per loop for it.

use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::dpdk::{Burst, Mbuf, Mempool, Port, RxQueue, TxQueue, BURST_SIZE};

/// Punted packets with the port they arrived on, from every worker to the
/// control thread.
pub type PuntQueue = ArrayQueue<(u16, Mbuf)>;

/// Frames to send with the port to send them on, from the control thread
/// to the first worker.
pub type InjectQueue = ArrayQueue<(u16, Mbuf)>;

/// Frames waiting for the worker at most; beyond, counted as `tx_drops`.
pub const INJECT_QUEUE_LEN: usize = 1024;

/// Punted packets in flight at most; beyond, the worker frees and counts
/// (`punt_drops`). Generous for ARP, ICMP and BGP, small next to the pool.
pub const PUNT_QUEUE_LEN: usize = 1024;

/// Punted packets drained per poll, so a flood cannot hold the control
/// thread.
const POLL_BUDGET: usize = 256;

/// A port's kernel side: the tap device.
pub struct HostTap {
    pub iface: String,
    pub(crate) tap: Port,
    rx: RxQueue,
    tx: TxQueue,
    /// Packets on their way into the kernel, flushed every poll.
    to_kernel: Burst,
}

impl HostTap {
    pub(crate) fn new(iface: String, mut tap: Port) -> Option<HostTap> {
        let rx = tap.take_rx_queue(0)?;
        let tx = tap.take_tx_queue(0)?;
        Some(HostTap {
            iface,
            tap,
            rx,
            tx,
            to_kernel: Burst::new(),
        })
    }
}

/// Host path counters of one port, kept by the control thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Punted packets written to the kernel interface.
    pub to_kernel: u64,
    /// Frames the kernel sent, handed to the worker to send on the port.
    pub from_kernel: u64,
    /// Frames the control thread built (ARP requests), handed likewise.
    pub injected: u64,
    /// Punted packets the control thread took (DHCP to relay, ARP for a
    /// service gateway).
    pub consumed: u64,
    /// Punted packets for a port without a host tap, freed.
    pub no_tap_drops: u64,
    /// The tap, the inject queue or the pool would not take a packet.
    pub tx_drops: u64,
}

/// The control thread's end of the host path.
pub struct HostPath {
    punts: Arc<PuntQueue>,
    inject: Arc<InjectQueue>,
    /// By port index; `None` for ports without an address.
    taps: Vec<Option<HostTap>>,
    pool: Arc<Mempool>,
    stats: Vec<HostStats>,
}

impl HostPath {
    pub(crate) fn new(taps: Vec<Option<HostTap>>, pool: Arc<Mempool>) -> HostPath {
        let stats = vec![HostStats::default(); taps.len()];
        HostPath {
            punts: Arc::new(ArrayQueue::new(PUNT_QUEUE_LEN)),
            inject: Arc::new(ArrayQueue::new(INJECT_QUEUE_LEN)),
            taps,
            pool,
            stats,
        }
    }

    /// Moves punted packets into the kernel and the kernel's frames out of
    /// their ports. `inspect` sees each punted frame first, with its port
    /// (neighbour learning, the DHCP relay), and returns true if it took
    /// the packet (which then goes no further). Returns how many packets
    /// moved.
    pub fn poll(&mut self, mut inspect: impl FnMut(u16, &[u8]) -> bool) -> usize {
        let mut moved = 0;
        while moved < POLL_BUDGET {
            let Some((port, m)) = self.punts.pop() else {
                break;
            };
            moved += 1;
            let i = usize::from(port);
            if inspect(port, m.data()) {
                if let Some(s) = self.stats.get_mut(i) {
                    s.consumed += 1;
                }
                continue; // `m` drops back to its pool
            }
            let Some(tap) = self.taps.get_mut(i).and_then(Option::as_mut) else {
                if let Some(s) = self.stats.get_mut(i) {
                    s.no_tap_drops += 1;
                }
                continue; // `m` drops back to its pool
            };
            if let Err(m) = tap.to_kernel.push(m) {
                let (sent, dropped) = flush(&tap.tx, &mut tap.to_kernel);
                self.stats[i].to_kernel += sent;
                self.stats[i].tx_drops += dropped;
                let _ = tap.to_kernel.push(m);
            }
        }
        for (port, (tap, st)) in self.taps.iter_mut().zip(&mut self.stats).enumerate() {
            let Some(tap) = tap else { continue };
            let (sent, dropped) = flush(&tap.tx, &mut tap.to_kernel);
            st.to_kernel += sent;
            st.tx_drops += dropped;
            let mut from = Burst::new();
            loop {
                let n = tap.rx.rx(&mut from);
                if n == 0 {
                    break;
                }
                moved += n;
                from.drain_each(|m| match self.inject.push((port as u16, m)) {
                    Ok(()) => st.from_kernel += 1,
                    Err(_) => st.tx_drops += 1,
                });
                if n < BURST_SIZE {
                    break;
                }
            }
        }
        moved
    }

    /// Sends a frame the control thread built (an ARP request, a DHCP
    /// reply) out of `port`. False if there is no such port, the pool is
    /// empty or the queue is full (counted).
    pub fn inject(&mut self, port: u16, frame: &[u8]) -> bool {
        let i = usize::from(port);
        if i >= self.taps.len() {
            return false;
        }
        let ok = Mbuf::from_bytes(&self.pool, frame)
            .is_some_and(|m| self.inject.push((port, m)).is_ok());
        match ok {
            true => self.stats[i].injected += 1,
            false => self.stats[i].tx_drops += 1,
        }
        ok
    }

    /// The queue workers punt into.
    pub(crate) fn punt_queue(&self) -> Arc<PuntQueue> {
        self.punts.clone()
    }

    /// The queue the first worker sends from.
    pub(crate) fn inject_queue(&self) -> Arc<InjectQueue> {
        self.inject.clone()
    }

    /// Per port, by port index.
    pub fn stats(&self) -> &[HostStats] {
        &self.stats
    }

    /// The kernel interface standing for `port`, if it has one.
    pub fn iface(&self, port: usize) -> Option<&str> {
        self.taps.get(port)?.as_ref().map(|t| t.iface.as_str())
    }

    /// Frees what is still queued (shutdown, after the workers stopped) and
    /// gives back the taps to close.
    pub(crate) fn close(mut self) -> Vec<Port> {
        while self.punts.pop().is_some() {}
        while self.inject.pop().is_some() {}
        self.taps
            .drain(..)
            .flatten()
            .map(|mut t| {
                t.to_kernel.clear();
                t.tap
            })
            .collect()
    }
}

/// Sends `b` on `tx`, freeing what the queue will not take; returns
/// (sent, dropped).
fn flush(tx: &TxQueue, b: &mut Burst) -> (u64, u64) {
    if b.is_empty() {
        return (0, 0);
    }
    let (sent, dropped) = tx.tx_or_drop(b);
    (sent as u64, dropped as u64)
}
