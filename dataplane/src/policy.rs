//! Target-specific processing at the hub: each service's ordered policy
//! rules, applied to every packet the hub routes in the service's hub
//! table (from a spoke, or in from the uplink), before the lookup.
//!
//! A rule matches a destination prefix, optionally an IP protocol and a
//! destination port range. Rules are tried in order; the first match of
//! a `permit`, `deny` or `police` rule decides, a `count` rule counts and
//! goes on, and a packet no rule decides is permitted. Every rule counts
//! the packets and bytes it matched, on the worker that saw them.
//!
//! The rules are a short list walked linearly: an operator's list of
//! targets per service, not a firewall's. A service without rules costs
//! one predictable branch.
//!
//! `police` is a token bucket of `rate_bps` bits per second and
//! `burst_bytes` bytes, kept as one theoretical arrival time (GCRA, ITU-T
//! I.371) in an atomic that every worker updates with compare-and-swap:
//! the rate holds for the service as a whole, whichever cores its packets
//! arrive on, with no lock.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::lpm::mask;

/// Rule counter and policer slots, in all services together.
pub const MAX_RULES: usize = 1024;
/// The most rules one service has.
pub const MAX_SERVICE_RULES: usize = 256;

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Pass; later rules are not tried.
    Permit,
    /// Drop (`drop_policy_deny`).
    Deny,
    /// Count and go on to the next rule.
    Count,
    /// Pass within the rate and burst, drop beyond
    /// (`drop_policy_police`).
    Police { rate_bps: u64, burst_bytes: u32 },
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Permit => "permit",
            Action::Deny => "deny",
            Action::Count => "count",
            Action::Police { .. } => "police",
        }
    }
}

/// One rule, as the fast path reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Destination network (host bits clear) and prefix length.
    pub net: u32,
    pub len: u8,
    /// IP protocol; `None` matches any.
    pub protocol: Option<u8>,
    /// Destination port range, inclusive; `None` matches any packet,
    /// `Some` only unfragmented ones that carry ports.
    pub ports: Option<(u16, u16)>,
    pub action: Action,
    /// Its counters and policer ([`MAX_RULES`] of them).
    pub slot: u16,
    /// Police: nanoseconds one byte takes at the rate, in 1/65536 ns.
    ns_per_byte_q16: u64,
    /// Police: how far ahead of now the bucket may run (the burst), ns.
    limit_ns: u64,
}

impl Rule {
    pub fn new(
        net: u32,
        len: u8,
        protocol: Option<u8>,
        ports: Option<(u16, u16)>,
        action: Action,
        slot: u16,
    ) -> Rule {
        let (ns_per_byte_q16, limit_ns) = match action {
            Action::Police {
                rate_bps,
                burst_bytes,
            } => {
                let q = (8_000_000_000u128 << 16) / u128::from(rate_bps.max(1));
                let limit = (u128::from(burst_bytes) * q) >> 16;
                (
                    u64::try_from(q).unwrap_or(u64::MAX),
                    u64::try_from(limit).unwrap_or(u64::MAX),
                )
            }
            _ => (0, 0),
        };
        Rule {
            net: net & mask(len.min(32)),
            len,
            protocol,
            ports,
            action,
            slot,
            ns_per_byte_q16,
            limit_ns,
        }
    }

    /// The same rule in another counter slot.
    pub fn with_slot(mut self, slot: u16) -> Rule {
        self.slot = slot;
        self
    }

    /// Whether a packet to `dst` with `protocol` and destination port
    /// `dport` (`None`: no ports, or a fragment) matches.
    #[inline(always)]
    fn matches(&self, dst: u32, protocol: u8, dport: Option<u16>) -> bool {
        if dst & mask(self.len) != self.net {
            return false;
        }
        if self.protocol.is_some_and(|p| p != protocol) {
            return false;
        }
        match (self.ports, dport) {
            (None, _) => true,
            (Some((lo, hi)), Some(p)) => lo <= p && p <= hi,
            (Some(_), None) => false,
        }
    }
}

/// One policer's state on a cache line of its own: the bucket's
/// theoretical arrival time in ns.
#[repr(align(64))]
#[derive(Debug, Default)]
struct Tat(AtomicU64);

/// The policers of every rule slot, shared by both table copies and all
/// workers.
#[derive(Debug)]
pub struct Policers(Box<[Tat]>);

impl Default for Policers {
    fn default() -> Self {
        Policers((0..MAX_RULES).map(|_| Tat::default()).collect())
    }
}

impl Policers {
    /// Empties slot `slot`'s bucket history: a new rule starts with its
    /// full burst. Only for a slot no published rule uses.
    pub fn reset(&self, slot: u16) {
        if let Some(t) = self.0.get(usize::from(slot)) {
            t.0.store(0, Relaxed);
        }
    }

    /// Whether a packet of `bytes` at time `now` (ns) is within `rule`'s
    /// rate and burst; if so it is charged to the bucket.
    #[inline]
    fn admit(&self, rule: &Rule, now: u64, bytes: u16) -> bool {
        let Some(Tat(tat)) = self.0.get(usize::from(rule.slot)) else {
            return false;
        };
        let cost = (u64::from(bytes) * rule.ns_per_byte_q16) >> 16;
        let mut seen = tat.load(Relaxed);
        loop {
            let next = seen.max(now).saturating_add(cost);
            if next - now > rule.limit_ns {
                return false;
            }
            match tat.compare_exchange_weak(seen, next, Relaxed, Relaxed) {
                Ok(_) => return true,
                Err(v) => seen = v,
            }
        }
    }
}

/// What the rules say about a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Deny,
    /// Beyond a `police` rule's rate.
    Exceeded,
}

/// Where rules count what they match, and the policers' clock.
pub trait RuleCounts {
    /// A packet of `bytes` matched the rule in `slot`; `dropped` when the
    /// rule dropped it.
    fn count_rule(&self, slot: u16, bytes: u16, dropped: bool);
    /// A monotonic clock in nanoseconds.
    fn now_ns(&self) -> u64;
}

/// Counts nothing; the clock stands at 0.
impl RuleCounts for () {
    #[inline(always)]
    fn count_rule(&self, _: u16, _: u16, _: bool) {}
    #[inline(always)]
    fn now_ns(&self) -> u64 {
        0
    }
}

/// Runs `rules` over a packet to `dst` with `protocol`, destination port
/// `dport` and IPv4 total length `bytes`.
#[inline]
pub fn evaluate<C: RuleCounts + ?Sized>(
    rules: &[Rule],
    policers: &Policers,
    dst: u32,
    protocol: u8,
    dport: Option<u16>,
    bytes: u16,
    c: &C,
) -> Verdict {
    for r in rules {
        if !r.matches(dst, protocol, dport) {
            continue;
        }
        match r.action {
            Action::Count => c.count_rule(r.slot, bytes, false),
            Action::Permit => {
                c.count_rule(r.slot, bytes, false);
                return Verdict::Pass;
            }
            Action::Deny => {
                c.count_rule(r.slot, bytes, true);
                return Verdict::Deny;
            }
            Action::Police { .. } => {
                let ok = policers.admit(r, c.now_ns(), bytes);
                c.count_rule(r.slot, bytes, !ok);
                return if ok { Verdict::Pass } else { Verdict::Exceeded };
            }
        }
    }
    Verdict::Pass
}

/// One rule's counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleSnapshot {
    pub packets: u64,
    pub bytes: u64,
    /// Packets the rule dropped (deny, or beyond a police rate).
    pub dropped: u64,
}

impl RuleSnapshot {
    pub fn since(&self, base: &RuleSnapshot) -> RuleSnapshot {
        RuleSnapshot {
            packets: self.packets.wrapping_sub(base.packets),
            bytes: self.bytes.wrapping_sub(base.bytes),
            dropped: self.dropped.wrapping_sub(base.dropped),
        }
    }

    pub fn add(&mut self, o: &RuleSnapshot) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.dropped += o.dropped;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};

    /// Counts in a map and tells the time it is told.
    #[derive(Default)]
    struct Probe {
        now: Cell<u64>,
        seen: RefCell<Vec<(u16, u16, bool)>>,
    }

    impl RuleCounts for Probe {
        fn count_rule(&self, slot: u16, bytes: u16, dropped: bool) {
            self.seen.borrow_mut().push((slot, bytes, dropped));
        }
        fn now_ns(&self) -> u64 {
            self.now.get()
        }
    }

    fn ip(s: &str) -> u32 {
        u32::from(s.parse::<std::net::Ipv4Addr>().unwrap())
    }

    #[test]
    fn first_deciding_rule_wins_and_count_rules_go_on() {
        let rules = [
            Rule::new(ip("10.0.0.0"), 8, None, None, Action::Count, 0),
            Rule::new(ip("10.1.0.11"), 32, None, None, Action::Deny, 1),
            Rule::new(
                ip("10.1.0.0"),
                24,
                Some(17),
                Some((53, 53)),
                Action::Deny,
                2,
            ),
            Rule::new(ip("10.1.0.0"), 16, None, None, Action::Permit, 3),
            Rule::new(0, 0, None, None, Action::Deny, 4),
        ];
        let p = Policers::default();
        let c = Probe::default();
        let v = |dst: &str, proto: u8, port: Option<u16>| {
            evaluate(&rules, &p, ip(dst), proto, port, 100, &c)
        };
        assert_eq!(v("10.1.0.11", 1, None), Verdict::Deny);
        assert_eq!(v("10.1.0.12", 17, Some(53)), Verdict::Deny);
        assert_eq!(v("10.1.0.12", 17, Some(54)), Verdict::Pass);
        assert_eq!(v("10.1.0.12", 6, Some(53)), Verdict::Pass);
        // A fragment carries no port: the port rule does not match it.
        assert_eq!(v("10.1.0.12", 17, None), Verdict::Pass);
        assert_eq!(v("192.0.2.1", 6, Some(80)), Verdict::Deny);
        assert_eq!(
            c.seen.take(),
            [
                (0, 100, false),
                (1, 100, true),
                (0, 100, false),
                (2, 100, true),
                (0, 100, false),
                (3, 100, false),
                (0, 100, false),
                (3, 100, false),
                (0, 100, false),
                (3, 100, false),
                (4, 100, true),
            ]
        );
        // No rule: everything passes, nothing counted.
        assert_eq!(
            evaluate(&[], &p, ip("10.1.0.11"), 1, None, 100, &c),
            Verdict::Pass
        );
        assert!(c.seen.take().is_empty());
    }

    #[test]
    fn a_police_rule_passes_its_burst_then_its_rate() {
        // 8 Mbit/s = 1 byte per microsecond; a 3000-byte burst.
        let police = Action::Police {
            rate_bps: 8_000_000,
            burst_bytes: 3000,
        };
        let rules = [Rule::new(0, 0, None, None, police, 7)];
        let p = Policers::default();
        let c = Probe::default();
        c.now.set(1_000_000_000);
        let send = |n: usize| {
            (0..n)
                .filter(|_| evaluate(&rules, &p, 1, 17, Some(9), 1000, &c) == Verdict::Pass)
                .count()
        };
        // At one instant: the burst, three 1000-byte packets.
        assert_eq!(send(10), 3);
        // 1 ms later 1000 bytes' worth has come back: one packet.
        c.now.set(c.now.get() + 1_000_000);
        assert_eq!(send(10), 1);
        // Over 100 ms of 1000 packets/s offered every 0.1 ms (10x the
        // rate), what passes is the rate: 100 packets, give or take the
        // burst.
        let mut passed = 0;
        for _ in 0..1000 {
            c.now.set(c.now.get() + 100_000);
            passed += send(1);
        }
        assert!((100..=103).contains(&passed), "{passed}");
        let seen = c.seen.take();
        assert!(seen
            .iter()
            .all(|&(slot, bytes, _)| slot == 7 && bytes == 1000));
        assert_eq!(seen.iter().filter(|s| !s.2).count(), 3 + 1 + passed);
        // A reset slot starts with its full burst again.
        p.reset(7);
        assert_eq!(send(10), 3);
    }

    #[test]
    fn two_threads_share_one_rate() {
        // 80 Mbit/s = 10 bytes/us, burst 1000 bytes: over a fixed span of
        // time, two threads together pass what one would.
        let police = Action::Police {
            rate_bps: 80_000_000,
            burst_bytes: 1000,
        };
        let rule = Rule::new(0, 0, None, None, police, 0);
        let p = std::sync::Arc::new(Policers::default());
        let passed: u64 = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|t| {
                    let p = p.clone();
                    s.spawn(move || {
                        // Both walk the same 10 ms in 1 us steps, 100-byte
                        // packets: 10x the rate each.
                        (0..10_000u64)
                            .filter(|i| p.admit(&rule, 1_000_000 + i * 1000 + t, 100))
                            .count() as u64
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        // 10 ms at 10 bytes/us = 100,000 bytes = 1,000 packets, plus the
        // 10-packet burst.
        assert!((1000..=1011).contains(&passed), "{passed}");
    }
}
