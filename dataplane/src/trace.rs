//! Packet trace: the control thread arms it for the next N packets (of
//! one port, or any); each worker copies the head of those packets as
//! they arrive and as they leave, with the outcome, into a bounded
//! lock-free queue that the control thread drains and explains against
//! the tables. Off, it costs the worker one relaxed load and a
//! predictable branch per burst.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use crossbeam_queue::ArrayQueue;

use crate::outcome::Outcome;

/// Bytes of each packet kept, in and out: Ethernet, a tag, two labels,
/// IPv4 and the ports of UDP or TCP fit.
pub const HEAD: usize = 96;

/// Records held until the control thread collects them.
pub const CAPACITY: usize = 1024;

/// One traced packet.
#[derive(Clone, Copy, Debug)]
pub struct TraceRecord {
    pub lcore: u32,
    pub in_port: u16,
    /// The table generation the worker used.
    pub generation: u64,
    pub input: [u8; HEAD],
    pub in_len: u16,
    pub output: [u8; HEAD],
    pub out_len: u16,
    pub outcome: Outcome,
    /// The port it left by (`PUNT_PORT` when punted, `u16::MAX` when
    /// dropped).
    pub out_port: u16,
}

/// Shared by the control thread and every worker.
pub struct Trace {
    /// Packets still to trace; 0 = off.
    remaining: AtomicU32,
    /// Only this input port, or `u32::MAX` for any.
    port: AtomicU32,
    records: ArrayQueue<TraceRecord>,
}

impl Default for Trace {
    fn default() -> Self {
        Trace {
            remaining: AtomicU32::new(0),
            port: AtomicU32::new(u32::MAX),
            records: ArrayQueue::new(CAPACITY),
        }
    }
}

impl Trace {
    /// Traces the next `n` packets arriving on `port` (any when `None`).
    pub fn arm(&self, n: u32, port: Option<u16>) {
        self.port.store(port.map_or(u32::MAX, u32::from), Relaxed);
        self.remaining.store(n, Relaxed);
    }

    /// Stops tracing; returns how many packets were still to trace.
    pub fn disarm(&self) -> u32 {
        self.remaining.swap(0, Relaxed)
    }

    /// Packets still to trace.
    pub fn remaining(&self) -> u32 {
        self.remaining.load(Relaxed)
    }

    /// The worker's per-burst check: whether to trace on `in_port` now.
    #[inline(always)]
    pub fn wanted(&self, in_port: u16) -> bool {
        if self.remaining.load(Relaxed) == 0 {
            return false;
        }
        let p = self.port.load(Relaxed);
        p == u32::MAX || p == u32::from(in_port)
    }

    /// Claims up to `n` packets of the budget (several workers may race
    /// for the last ones; none overdraws it).
    pub fn claim(&self, n: u32) -> u32 {
        let mut cur = self.remaining.load(Relaxed);
        loop {
            let take = cur.min(n);
            if take == 0 {
                return 0;
            }
            match self
                .remaining
                .compare_exchange_weak(cur, cur - take, Relaxed, Relaxed)
            {
                Ok(_) => return take,
                Err(now) => cur = now,
            }
        }
    }

    /// Hands a record to the control thread; a full queue drops it (the
    /// control thread has not collected for a while).
    pub fn push(&self, r: TraceRecord) {
        let _ = self.records.push(r);
    }

    /// Everything recorded since the last call.
    pub fn drain(&self) -> Vec<TraceRecord> {
        std::iter::from_fn(|| self.records.pop()).collect()
    }
}

/// Copies the head of `data` into a record's buffer; returns the length
/// of the whole packet (saturated).
pub fn copy_head(data: &[u8], out: &mut [u8; HEAD]) -> u16 {
    let n = data.len().min(HEAD);
    out[..n].copy_from_slice(&data[..n]);
    u16::try_from(data.len()).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_never_overdrawn_and_off_means_off() {
        let t = Trace::default();
        assert!(!t.wanted(0));
        t.arm(5, Some(1));
        assert!(!t.wanted(0));
        assert!(t.wanted(1));
        assert_eq!(t.claim(3), 3);
        assert_eq!(t.claim(3), 2);
        assert_eq!(t.claim(3), 0);
        assert!(!t.wanted(1));
        t.arm(2, None);
        assert!(t.wanted(7));
        assert_eq!(t.disarm(), 2);
        assert!(!t.wanted(7));
        let mut head = [0u8; HEAD];
        assert_eq!(copy_head(&[1, 2, 3], &mut head), 3);
        assert_eq!(&head[..4], &[1, 2, 3, 0]);
        assert_eq!(copy_head(&[9u8; 200], &mut head), 200);
        assert_eq!(head[HEAD - 1], 9);
    }
}
