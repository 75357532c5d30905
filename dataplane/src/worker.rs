//! The per-core poll loop (l3fwd / testpmd style): for each owned
//! (port, rx queue), receive a burst, run the forwarding node over it, send
//! it on this core's tx queue of the destination port. No allocation, no
//! locks, no syscalls while there is traffic; when idle, the loop backs off
//! with short sleeps growing to a cap (as VPP's adaptive polling) so that
//! several instances can share a small machine.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::counters::{CoreCounters, CoreSnapshot};
use crate::dpdk::{tsc, tsc_hz, Burst, RxQueue, TxQueue, BURST_SIZE};
use crate::forward::{macswap, ForwardMode};
use crate::host::{InjectQueue, PuntQueue};
use crate::pipeline::{process_burst, Frame, Next, Outcome};
use crate::publish::Reader;
use crate::spec::IdlePolicy;
use crate::tables::Tables;
use crate::trace::{self, Trace, TraceRecord};

/// One rx queue a worker polls, the port it belongs to, and the port
/// (index into `Worker::tx`) that gets what arrives on it in io/macswap.
pub struct Stream {
    pub rx: RxQueue,
    pub in_port: u16,
    pub out: usize,
}

const EMPTY_POLLS_BEFORE_SLEEP: u32 = 256;
/// On a NIC an empty poll reads a descriptor (tens of ns) and 256 of them
/// pass in a few microseconds. On net_tap or net_pcap each one is a
/// syscall of a microsecond or more, so a count alone kept the worker
/// spinning for half a millisecond after every packet: on a shared core,
/// with a packet every few hundred microseconds (DHCP through the relay),
/// it never slept and took the CPU the address server needed.
const SPIN_BEFORE_SLEEP: Duration = Duration::from_micros(20);

/// Everything one worker lcore owns.
pub struct Worker {
    pub lcore: u32,
    pub streams: Vec<Stream>,
    /// This worker's own tx queue on every port, by port index.
    pub tx: Vec<TxQueue>,
    pub mode: ForwardMode,
    /// Router mode: this worker's reader of the published tables.
    pub tables: Option<Reader<Tables>>,
    pub idle: IdlePolicy,
    pub counters: Arc<CoreCounters>,
    /// Router mode: packet trace, armed by the control thread.
    pub trace: Arc<Trace>,
    /// Router mode: where punted packets go (the host path, drained by
    /// the control thread); `None`: no host path, punts are freed.
    pub punts: Option<Arc<PuntQueue>>,
    /// Frames the host path sends (the kernel's, ARP requests), with their
    /// port: one worker drains them onto its own tx queues.
    pub inject: Option<Arc<InjectQueue>>,
    pub stop: Arc<AtomicBool>,
    /// Per-burst latency (TSC ticks from rx return to tx return), recorded
    /// on one burst in `latency_every` (a power of two); `None` = off.
    pub latency: Option<(Histogram<u64>, u32)>,
}

/// Moves punted packets to the host path's queue (lock-free, no
/// allocation); returns how many it could not take (freed).
#[inline(never)]
fn hand_to_host(punted: &mut Burst, in_port: u16, queue: Option<&PuntQueue>) -> u64 {
    let mut dropped = 0;
    punted.drain_each(|m| match queue {
        Some(q) => dropped += u64::from(q.push((in_port, m)).is_err()),
        None => dropped += 1,
    });
    dropped
}

/// Sends up to a burst of the host path's frames on this worker's tx
/// queues. Returns (sent, dropped); the dropped ones met a full ring (the
/// kernel retransmits, ARP asks again) or named no port, and were freed.
#[inline(never)]
fn send_injected(q: &InjectQueue, tx: &[TxQueue], outs: &mut [Burst]) -> (u64, u64) {
    let (mut sent, mut dropped) = (0, 0);
    for _ in 0..BURST_SIZE {
        let Some((port, m)) = q.pop() else { break };
        match outs.get_mut(usize::from(port)) {
            // A burst's worth at most: always room.
            Some(o) => dropped += u64::from(o.push(m).is_err()),
            None => dropped += 1,
        }
    }
    for (o, t) in outs.iter_mut().zip(tx) {
        if !o.is_empty() {
            let (s, d) = t.tx_or_drop(o);
            sent += s as u64;
            dropped += d as u64;
        }
    }
    (sent, dropped)
}

/// What a worker hands back when it stops.
pub struct WorkerReport {
    pub lcore: u32,
    pub counters: CoreSnapshot,
    pub latency: Option<Histogram<u64>>,
}

impl Worker {
    /// Polls until `stop` is set. Runs on the worker's lcore.
    pub fn run(mut self) -> WorkerReport {
        let mut burst = Burst::new();
        let mut c = CoreSnapshot::default();
        let mut empty_run: u32 = 0;
        // In TSC ticks: the clock behind `Instant` is a costly call on
        // some virtual machines, and this runs on every empty poll.
        let spin_ticks = tsc_hz() * SPIN_BEFORE_SLEEP.as_micros() as u64 / 1_000_000;
        let mut idle_since = tsc();
        let mut sleep_us: u32 = 1;
        let mut sample_tick: u32 = 0;
        let mut latency = self.latency.take();
        let mut tables = self.tables.take();
        // Router mode: one staging burst per output port, flushed after
        // every rx burst (so a staging burst never overflows).
        let mut outs: Vec<Burst> = (0..self.tx.len()).map(|_| Burst::new()).collect();
        let mut punted = Burst::new();
        let mut targets = [u16::MAX; BURST_SIZE];
        let mut next = [Next::end(Outcome::Runt); BURST_SIZE];
        // Packet heads as they arrived, for the packets being traced.
        let mut heads = [([0u8; trace::HEAD], 0u16); BURST_SIZE];
        let mask = latency
            .as_ref()
            .map(|(_, every)| every.saturating_sub(1))
            .unwrap_or(0);

        while !self.stop.load(Ordering::Relaxed) {
            let mut got = 0usize;
            for s in &self.streams {
                let n = s.rx.rx(&mut burst);
                if n == 0 {
                    continue;
                }
                got += n;
                let t0 = match latency {
                    Some(_) => {
                        sample_tick = sample_tick.wrapping_add(1);
                        if sample_tick & mask == 0 {
                            tsc()
                        } else {
                            0
                        }
                    }
                    None => 0,
                };
                c.rx_packets += n as u64;
                c.bursts += 1;
                match (self.mode, tables.as_mut()) {
                    (ForwardMode::Router, Some(reader)) => {
                        // One generation check per burst; the table stays
                        // the same for the whole burst. The static-tables
                        // build (a benchmark reference only: commits wait
                        // for it forever) skips the check, to measure what
                        // publication costs the reader.
                        #[cfg(not(feature = "static-tables"))]
                        let t = reader.current();
                        #[cfg(feature = "static-tables")]
                        let t = reader.held();
                        // Trace off: this one predictable branch.
                        let traced = if self.trace.wanted(s.in_port) {
                            self.trace.claim(n as u32) as usize
                        } else {
                            0
                        };
                        for (i, h) in heads[..traced].iter_mut().enumerate() {
                            h.1 = trace::copy_head(burst.frame(i).data(), &mut h.0);
                        }
                        process_burst(t, s.in_port, &mut burst, &mut next[..n], &*self.counters);
                        for (i, h) in heads[..traced].iter().enumerate() {
                            let mut output = [0u8; trace::HEAD];
                            let out_len = trace::copy_head(burst.frame(i).data(), &mut output);
                            self.trace.push(TraceRecord {
                                lcore: self.lcore,
                                in_port: s.in_port,
                                generation: reader.generation(),
                                input: h.0,
                                in_len: h.1,
                                output,
                                out_len,
                                outcome: next[i].outcome,
                                out_port: next[i].port,
                            });
                        }
                        // Only forwarded packets carry a port (the rest
                        // have u16::MAX). The usual burst goes one way
                        // whole: send it as it is, without sorting.
                        let first = next[0].port;
                        let mut one_way = true;
                        for (nx, target) in next[..n].iter().zip(targets.iter_mut()) {
                            c.outcomes[nx.outcome as usize] += 1;
                            *target = nx.port;
                            one_way &= nx.port == first;
                        }
                        match self.tx.get(usize::from(first)) {
                            Some(tx) if one_way => {
                                let (sent, dropped) = tx.tx_or_drop(&mut burst);
                                c.tx_packets += sent as u64;
                                c.tx_full_drops += dropped as u64;
                            }
                            _ => {
                                c.tx_full_drops +=
                                    burst.distribute(&targets[..n], &mut outs, &mut punted) as u64;
                                for (o, tx) in outs.iter_mut().zip(&self.tx) {
                                    if !o.is_empty() {
                                        let (sent, dropped) = tx.tx_or_drop(o);
                                        c.tx_packets += sent as u64;
                                        c.tx_full_drops += dropped as u64;
                                    }
                                }
                                if !punted.is_empty() {
                                    c.punt_drops +=
                                        hand_to_host(&mut punted, s.in_port, self.punts.as_deref());
                                }
                            }
                        }
                    }
                    (mode, _) => {
                        if mode == ForwardMode::MacSwap {
                            c.runt_drops += macswap(&mut burst);
                        }
                        let (sent, dropped) = match self.tx.get(s.out) {
                            Some(tx) => tx.tx_or_drop(&mut burst),
                            None => (0, {
                                let n = burst.len();
                                burst.clear();
                                n
                            }),
                        };
                        c.tx_packets += sent as u64;
                        c.tx_full_drops += dropped as u64;
                    }
                }
                if t0 != 0 {
                    if let Some((h, _)) = latency.as_mut() {
                        h.saturating_record(tsc().wrapping_sub(t0));
                    }
                }
            }
            if let Some(q) = self.inject.as_deref() {
                if !q.is_empty() {
                    let (sent, dropped) = send_injected(q, &self.tx, &mut outs);
                    c.host_tx += sent;
                    c.host_tx_drops += dropped;
                    self.counters.publish(&c);
                }
            }
            if got == 0 {
                // Idle workers still report, so table updates never wait
                // for traffic.
                #[cfg(not(feature = "static-tables"))]
                if let Some(r) = tables.as_mut() {
                    r.quiesce();
                }
                c.empty_polls += 1;
                if empty_run == 0 {
                    idle_since = tsc();
                }
                empty_run += 1;
                if self.idle.max_sleep_us > 0
                    && (empty_run >= EMPTY_POLLS_BEFORE_SLEEP
                        || tsc().wrapping_sub(idle_since) >= spin_ticks)
                {
                    self.counters.publish(&c);
                    std::thread::sleep(Duration::from_micros(u64::from(sleep_us)));
                    sleep_us = (sleep_us * 2).min(self.idle.max_sleep_us);
                }
            } else {
                empty_run = 0;
                sleep_us = 1;
                self.counters.publish(&c);
            }
        }
        self.counters.publish(&c);
        WorkerReport {
            lcore: self.lcore,
            counters: c,
            latency: latency.map(|(h, _)| h),
        }
    }
}
