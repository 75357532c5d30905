//! Per-core counters. Each block is written by one worker only (plain
//! relaxed stores of values the worker keeps in registers, so no atomic
//! read-modify-write on the fast path) and read by the control thread.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::outcome::{Outcome, OutcomeKind};
use crate::policy::{RuleCounts, RuleSnapshot, MAX_RULES};

/// No subscriber: beyond every counted next hop.
pub const NO_SUBSCRIBER: u32 = u32::MAX;
/// A subscriber's upstream packets (bytes at the next index).
pub const COUNT_UP: u8 = 0;
/// A subscriber's downstream packets.
pub const COUNT_DOWN: u8 = 2;
/// Packets a subscriber sent with a spoofed source.
pub const COUNT_SPOOFED: u8 = 4;

/// Where the pipeline counts packets against subscribers (next hops on
/// access ports: sessions). It counts where it has the subscriber and the
/// length at hand, so nothing more travels with each verdict: the
/// source's next hop for upstream packets (when anti-spoofing looks it
/// up), the sender's for spoofed ones (found by its port, VLAN and MAC),
/// the destination's for downstream ones.
///
/// It is also where hub policy rules count ([`RuleCounts`]).
pub trait SubscriberCount: RuleCounts {
    /// One packet of `bytes` (its IPv4 total length) for `subscriber`, in
    /// the counters at `at` ([`COUNT_UP`], [`COUNT_DOWN`],
    /// [`COUNT_SPOOFED`]).
    fn count(&self, subscriber: u32, at: u8, bytes: u16);
}

/// Counts nothing.
impl SubscriberCount for () {
    #[inline(always)]
    fn count(&self, _: u32, _: u8, _: u16) {}
}

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
    /// Punted packets the host path could not take (its queue full, or
    /// no host path), freed. A subset of the punt outcomes.
    pub punt_drops: AtomicU64,
    /// Frames sent for the host path (the kernel's, ARP requests): not
    /// received by the worker, so outside `rx == tx + drops`.
    pub host_tx: AtomicU64,
    /// Of those, the ones a full tx ring refused (freed).
    pub host_tx_drops: AtomicU64,
    /// Non-empty rx bursts.
    pub bursts: AtomicU64,
    /// Loop iterations that found no packet on any queue.
    pub empty_polls: AtomicU64,
    /// Router mode: how each packet ended, by [`Outcome`].
    pub outcomes: [AtomicU64; Outcome::COUNT],
    /// Router mode: packets and bytes by subscriber.
    pub subscribers: SubscriberCounters,
    /// Router mode (hub): packets, bytes and drops by policy rule slot.
    pub rules: RuleCounters,
    /// The policers' clock: TSC ticks to ns, in 1/2^32 ns (0: no clock,
    /// time stands still).
    ns_per_tick_q32: u64,
}

/// A point-in-time copy of [`CoreCounters`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoreSnapshot {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub tx_full_drops: u64,
    pub runt_drops: u64,
    pub punt_drops: u64,
    pub host_tx: u64,
    pub host_tx_drops: u64,
    pub bursts: u64,
    pub empty_polls: u64,
    pub outcomes: [u64; Outcome::COUNT],
}

impl Default for CoreSnapshot {
    fn default() -> Self {
        CoreSnapshot {
            rx_packets: 0,
            tx_packets: 0,
            tx_full_drops: 0,
            runt_drops: 0,
            punt_drops: 0,
            host_tx: 0,
            host_tx_drops: 0,
            bursts: 0,
            empty_polls: 0,
            outcomes: [0; Outcome::COUNT],
        }
    }
}

impl CoreSnapshot {
    /// What was counted since `base` (an earlier snapshot of the same
    /// core): how `clear stats` works without writing to the workers'
    /// counters.
    pub fn since(&self, base: &CoreSnapshot) -> CoreSnapshot {
        let mut d = *self;
        d.rx_packets = d.rx_packets.saturating_sub(base.rx_packets);
        d.tx_packets = d.tx_packets.saturating_sub(base.tx_packets);
        d.tx_full_drops = d.tx_full_drops.saturating_sub(base.tx_full_drops);
        d.runt_drops = d.runt_drops.saturating_sub(base.runt_drops);
        d.punt_drops = d.punt_drops.saturating_sub(base.punt_drops);
        d.host_tx = d.host_tx.saturating_sub(base.host_tx);
        d.host_tx_drops = d.host_tx_drops.saturating_sub(base.host_tx_drops);
        d.bursts = d.bursts.saturating_sub(base.bursts);
        d.empty_polls = d.empty_polls.saturating_sub(base.empty_polls);
        for (o, b) in d.outcomes.iter_mut().zip(&base.outcomes) {
            *o = o.saturating_sub(*b);
        }
        d
    }

    /// Every packet received is either sent, or not, for a counted reason
    /// (punted to the host path, or dropped): `rx == tx + drops()`.
    pub fn drops(&self) -> u64 {
        self.tx_full_drops + self.runt_drops + self.not_forwarded()
    }

    /// Router mode: packets punted or dropped by the pipeline.
    pub fn not_forwarded(&self) -> u64 {
        Outcome::ALL
            .iter()
            .filter(|o| o.kind() != OutcomeKind::Forward)
            .map(|o| self.outcomes[*o as usize])
            .sum()
    }

    pub fn outcome(&self, o: Outcome) -> u64 {
        self.outcomes[o as usize]
    }

    /// Packets that ended as `o` wherever they were counted: the worker
    /// counts full tx rings and io/macswap runts outside the pipeline's
    /// outcomes, and reports show them under the outcome of that name.
    pub fn reason_count(&self, o: Outcome) -> u64 {
        self.outcome(o)
            + match o {
                Outcome::TxFull => self.tx_full_drops,
                Outcome::Runt => self.runt_drops,
                _ => 0,
            }
    }

    /// Adds another core's counters.
    pub fn add(&mut self, o: &CoreSnapshot) {
        self.rx_packets += o.rx_packets;
        self.tx_packets += o.tx_packets;
        self.tx_full_drops += o.tx_full_drops;
        self.runt_drops += o.runt_drops;
        self.punt_drops += o.punt_drops;
        self.host_tx += o.host_tx;
        self.host_tx_drops += o.host_tx_drops;
        self.bursts += o.bursts;
        self.empty_polls += o.empty_polls;
        for (a, b) in self.outcomes.iter_mut().zip(&o.outcomes) {
            *a += b;
        }
    }
}

/// One worker's counters by subscriber (next hop id), preallocated for a
/// fixed number of next hops; a subscriber beyond them is not counted.
/// Written by the worker only, like [`CoreCounters`].
#[derive(Default, Debug)]
pub struct SubscriberCounters {
    slots: Box<[Slot]>,
}

/// A subscriber's counters on one worker, a cache line: packets and
/// bytes upstream, downstream and dropped as spoofed (at the `COUNT_*`
/// indexes), and two spare. One line per packet.
#[repr(align(64))]
#[derive(Default, Debug)]
struct Slot([[AtomicU64; 2]; 4]);

/// A subscriber's counts, summed over workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubscriberSnapshot {
    pub up_packets: u64,
    pub up_bytes: u64,
    pub down_packets: u64,
    pub down_bytes: u64,
    pub spoofed_drops: u64,
}

impl SubscriberSnapshot {
    /// What was counted since `base`.
    pub fn since(&self, base: &SubscriberSnapshot) -> SubscriberSnapshot {
        SubscriberSnapshot {
            up_packets: self.up_packets.wrapping_sub(base.up_packets),
            up_bytes: self.up_bytes.wrapping_sub(base.up_bytes),
            down_packets: self.down_packets.wrapping_sub(base.down_packets),
            down_bytes: self.down_bytes.wrapping_sub(base.down_bytes),
            spoofed_drops: self.spoofed_drops.wrapping_sub(base.spoofed_drops),
        }
    }

    /// Adds another worker's counts.
    pub fn add(&mut self, o: &SubscriberSnapshot) {
        self.up_packets += o.up_packets;
        self.up_bytes += o.up_bytes;
        self.down_packets += o.down_packets;
        self.down_bytes += o.down_bytes;
        self.spoofed_drops += o.spoofed_drops;
    }
}

/// Adds `v` to a counter only this thread writes: a load and a store, no
/// locked read-modify-write.
#[inline(always)]
fn bump(c: &AtomicU64, v: u64) {
    c.store(c.load(Relaxed).wrapping_add(v), Relaxed);
}

impl SubscriberCounters {
    /// Counters for next hops `0..slots`.
    pub fn new(slots: usize) -> SubscriberCounters {
        SubscriberCounters {
            slots: (0..slots).map(|_| Slot::default()).collect(),
        }
    }

    /// How many subscribers (next hop ids `0..slots`) are counted.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Subscriber `id`'s counts on this worker; `None` beyond the slots.
    pub fn get(&self, id: u32) -> Option<SubscriberSnapshot> {
        let Slot(c) = self.slots.get(id as usize)?;
        let at = |i: u8| c[usize::from(i >> 1)][usize::from(i & 1)].load(Relaxed);
        Some(SubscriberSnapshot {
            up_packets: at(COUNT_UP),
            up_bytes: at(COUNT_UP + 1),
            down_packets: at(COUNT_DOWN),
            down_bytes: at(COUNT_DOWN + 1),
            spoofed_drops: at(COUNT_SPOOFED),
        })
    }
}

impl SubscriberCounters {
    /// One packet of `bytes` for `subscriber` at `at`. A subscriber
    /// beyond the slots ([`NO_SUBSCRIBER`] among them)
    /// is not counted.
    #[inline(always)]
    pub fn count(&self, subscriber: u32, at: u8, bytes: u16) {
        if let Some(Slot(c)) = self.slots.get(subscriber as usize) {
            // Masked to the four pairs: no bounds check.
            let [packets, octets] = &c[usize::from(at >> 1) & 3];
            bump(packets, 1);
            bump(octets, u64::from(bytes));
        }
    }
}

/// One worker's counters by policy rule slot ([`MAX_RULES`] of them):
/// packets, bytes, dropped, and a spare; two slots to a cache line.
#[derive(Debug)]
pub struct RuleCounters {
    slots: Box<[[AtomicU64; 4]]>,
}

impl Default for RuleCounters {
    fn default() -> Self {
        RuleCounters {
            slots: (0..MAX_RULES).map(|_| Default::default()).collect(),
        }
    }
}

impl RuleCounters {
    /// Slot `slot`'s counts on this worker.
    pub fn get(&self, slot: u16) -> Option<RuleSnapshot> {
        let c = self.slots.get(usize::from(slot))?;
        Some(RuleSnapshot {
            packets: c[0].load(Relaxed),
            bytes: c[1].load(Relaxed),
            dropped: c[2].load(Relaxed),
        })
    }

    #[inline(always)]
    fn count(&self, slot: u16, bytes: u16, dropped: bool) {
        if let Some(c) = self.slots.get(usize::from(slot)) {
            bump(&c[0], 1);
            bump(&c[1], u64::from(bytes));
            bump(&c[2], u64::from(dropped));
        }
    }
}

impl SubscriberCount for CoreCounters {
    #[inline(always)]
    fn count(&self, subscriber: u32, at: u8, bytes: u16) {
        self.subscribers.count(subscriber, at, bytes);
    }
}

impl RuleCounts for CoreCounters {
    #[inline(always)]
    fn count_rule(&self, slot: u16, bytes: u16, dropped: bool) {
        self.rules.count(slot, bytes, dropped);
    }

    /// Only police rules ask, once per packet they match.
    #[inline]
    fn now_ns(&self) -> u64 {
        ((u128::from(tsc()) * u128::from(self.ns_per_tick_q32)) >> 32) as u64
    }
}

/// The policers' clock: the TSC, as DPDK reads it (`tsc_hz` scales it).
#[cfg(feature = "dpdk")]
#[inline(always)]
fn tsc() -> u64 {
    crate::dpdk::tsc()
}

/// Without DPDK there is no TSC reading (and no `tsc_hz` to scale one):
/// time stands still, as with a `tsc_hz` of 0.
#[cfg(not(feature = "dpdk"))]
#[inline(always)]
fn tsc() -> u64 {
    0
}

impl CoreCounters {
    /// Counters for a worker that counts `subscribers` next hops, with
    /// the policers' clock from a TSC of `tsc_hz` (0: no clock).
    pub fn with_subscribers(subscribers: usize, tsc_hz: u64) -> CoreCounters {
        CoreCounters {
            subscribers: SubscriberCounters::new(subscribers),
            ns_per_tick_q32: if tsc_hz == 0 {
                0
            } else {
                u64::try_from((1_000_000_000u128 << 32) / u128::from(tsc_hz)).unwrap_or(u64::MAX)
            },
            ..CoreCounters::default()
        }
    }

    pub fn snapshot(&self) -> CoreSnapshot {
        CoreSnapshot {
            rx_packets: self.rx_packets.load(Relaxed),
            tx_packets: self.tx_packets.load(Relaxed),
            tx_full_drops: self.tx_full_drops.load(Relaxed),
            runt_drops: self.runt_drops.load(Relaxed),
            punt_drops: self.punt_drops.load(Relaxed),
            host_tx: self.host_tx.load(Relaxed),
            host_tx_drops: self.host_tx_drops.load(Relaxed),
            bursts: self.bursts.load(Relaxed),
            empty_polls: self.empty_polls.load(Relaxed),
            outcomes: std::array::from_fn(|i| self.outcomes[i].load(Relaxed)),
        }
    }

    /// Publishes the worker's running totals (single writer).
    #[cfg(feature = "dpdk")]
    #[inline(always)]
    pub(crate) fn publish(&self, s: &CoreSnapshot) {
        self.rx_packets.store(s.rx_packets, Relaxed);
        self.tx_packets.store(s.tx_packets, Relaxed);
        self.tx_full_drops.store(s.tx_full_drops, Relaxed);
        self.runt_drops.store(s.runt_drops, Relaxed);
        self.punt_drops.store(s.punt_drops, Relaxed);
        self.host_tx.store(s.host_tx, Relaxed);
        self.host_tx_drops.store(s.host_tx_drops, Relaxed);
        self.bursts.store(s.bursts, Relaxed);
        self.empty_polls.store(s.empty_polls, Relaxed);
        for (a, v) in self.outcomes.iter().zip(&s.outcomes) {
            a.store(*v, Relaxed);
        }
    }
}
