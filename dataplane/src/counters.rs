//! Per-core counters. Each block is written by one worker only (plain
//! relaxed stores of values the worker keeps in registers, so no atomic
//! read-modify-write on the fast path) and read by the control thread.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// One worker's counters, on a cache line of its own so that workers never
/// share a line.
#[repr(align(64))]
#[derive(Default, Debug)]
pub struct CoreCounters {
    pub rx_packets: AtomicU64,
    pub tx_packets: AtomicU64,
    /// Packets the tx queue would not take (full ring), freed.
    pub tx_full_drops: AtomicU64,
    /// Frames too short for the forwarding mode (macswap: < 12 bytes),
    /// freed.
    pub runt_drops: AtomicU64,
    /// Non-empty rx bursts.
    pub bursts: AtomicU64,
    /// Loop iterations that found no packet on any queue.
    pub empty_polls: AtomicU64,
}

/// A point-in-time copy of [`CoreCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreSnapshot {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub tx_full_drops: u64,
    pub runt_drops: u64,
    pub bursts: u64,
    pub empty_polls: u64,
}

impl CoreSnapshot {
    /// Every packet received is either sent or dropped for a counted reason.
    pub fn drops(&self) -> u64 {
        self.tx_full_drops + self.runt_drops
    }
}

impl CoreCounters {
    pub fn snapshot(&self) -> CoreSnapshot {
        CoreSnapshot {
            rx_packets: self.rx_packets.load(Relaxed),
            tx_packets: self.tx_packets.load(Relaxed),
            tx_full_drops: self.tx_full_drops.load(Relaxed),
            runt_drops: self.runt_drops.load(Relaxed),
            bursts: self.bursts.load(Relaxed),
            empty_polls: self.empty_polls.load(Relaxed),
        }
    }

    /// Publishes the worker's running totals (single writer).
    #[inline(always)]
    pub(crate) fn publish(&self, s: &CoreSnapshot) {
        self.rx_packets.store(s.rx_packets, Relaxed);
        self.tx_packets.store(s.tx_packets, Relaxed);
        self.tx_full_drops.store(s.tx_full_drops, Relaxed);
        self.runt_drops.store(s.runt_drops, Relaxed);
        self.bursts.store(s.bursts, Relaxed);
        self.empty_polls.store(s.empty_polls, Relaxed);
    }
}
