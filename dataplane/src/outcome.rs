//! How one packet ends ([`Outcome`]) and the verdict a pipeline node
//! gives it ([`Next`]). A leaf: the tables, the counters, the trace and the
//! DPDK burst name outcomes without depending on the pipeline.

macro_rules! outcomes {
    ($($(#[$m:meta])* $name:ident => $label:literal, $kind:ident;)*) => {
        /// How one packet ended.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Outcome { $($(#[$m])* $name,)* }

        impl Outcome {
            pub const ALL: &'static [Outcome] = &[$(Outcome::$name,)*];
            pub const COUNT: usize = Self::ALL.len();
            /// The counter's name in stats and metrics.
            pub const fn name(self) -> &'static str {
                match self { $(Outcome::$name => $label,)* }
            }
            pub const fn kind(self) -> OutcomeKind {
                match self { $(Outcome::$name => OutcomeKind::$kind,)* }
            }
        }
    };
}

/// Forwarded, handed to the control plane, or dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutcomeKind {
    Forward,
    Punt,
    Drop,
}

outcomes! {
    /// Client packet label-switched toward the hub.
    Upstream => "fwd_upstream", Forward;
    /// Core packet delivered to a client.
    Downstream => "fwd_downstream", Forward;
    /// Hub: sent back to the spoke owning the destination.
    HubToSpoke => "fwd_hub_to_spoke", Forward;
    /// Hub: sent to the uplink unlabelled.
    HubToUplink => "fwd_hub_to_uplink", Forward;
    /// P: top label swapped.
    LabelSwap => "fwd_label_swap", Forward;
    /// Penultimate hop: top label popped.
    LabelPop => "fwd_label_php", Forward;
    PuntArp => "punt_arp", Punt;
    PuntDhcp => "punt_dhcp", Punt;
    /// Addressed to the router itself (gateway or port address).
    PuntLocal => "punt_local", Punt;
    /// Shorter than an Ethernet (and VLAN) header.
    Runt => "drop_runt", Drop;
    /// No service on this port and VLAN (or a port role with no path).
    UnknownService => "drop_unknown_service", Drop;
    /// Neither IPv4 nor ARP on an access or uplink port.
    NotIpv4 => "drop_not_ipv4", Drop;
    /// IPv4 header truncated or inconsistent (version, IHL, lengths).
    Ipv4Header => "drop_ipv4_header", Drop;
    Ipv4Checksum => "drop_ipv4_checksum", Drop;
    /// IPv4 TTL would reach 0.
    TtlExpired => "drop_ttl_expired", Drop;
    /// Source address is not a session on this port, VLAN and MAC.
    Spoofed => "drop_spoofed_source", Drop;
    /// No route in the table the direction uses.
    NoRoute => "drop_no_route", Drop;
    /// A route names a next hop that does not fit the direction.
    BadNextHop => "drop_bad_next_hop", Drop;
    /// Neither MPLS, ARP nor IPv4 for us on a core port.
    NotMpls => "drop_not_mpls", Drop;
    /// Label stack truncated, without bottom of stack, or too deep.
    MplsStack => "drop_mpls_stack", Drop;
    /// Top label is not one of ours.
    UnknownLabel => "drop_unknown_label", Drop;
    /// Label TTL would reach 0.
    MplsTtlExpired => "drop_mpls_ttl_expired", Drop;
    /// No headroom to push headers.
    NoHeadroom => "drop_no_headroom", Drop;
    /// The next hop's MAC address is not known yet: ARP is resolving it.
    Unresolved => "drop_unresolved_next_hop", Drop;
    /// Denied by the hub's target-specific processing.
    PolicyDeny => "drop_policy_deny", Drop;
    /// Beyond the rate of a hub `police` rule.
    PolicyPolice => "drop_policy_police", Drop;
    /// The tx queue was full.
    TxFull => "drop_tx_full", Drop;
}

/// The port a punted packet goes to: the worker hands it to the host
/// path (the control thread) instead of a tx queue.
pub const PUNT_PORT: u16 = u16::MAX - 1;

/// The verdict for one packet: its outcome and, when forwarded, the port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Next {
    pub outcome: Outcome,
    pub port: u16,
}

impl Next {
    /// Forwarded out of `port` (only forwarding outcomes carry a port).
    #[inline(always)]
    pub(crate) fn tx(outcome: Outcome, port: u16) -> Next {
        debug_assert!(outcome.kind() == OutcomeKind::Forward);
        Next { outcome, port }
    }
    /// Punted ([`PUNT_PORT`]) or dropped (no port: `u16::MAX`).
    #[inline(always)]
    pub const fn end(outcome: Outcome) -> Next {
        Next {
            outcome,
            port: match outcome.kind() {
                OutcomeKind::Punt => PUNT_PORT,
                _ => u16::MAX,
            },
        }
    }
}

/// Per-core outcome counters (plain integers: one writer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutcomeCounters(pub [u64; Outcome::COUNT]);

impl Default for OutcomeCounters {
    fn default() -> Self {
        OutcomeCounters([0; Outcome::COUNT])
    }
}

impl OutcomeCounters {
    #[inline(always)]
    pub fn count(&mut self, o: Outcome) {
        self.0[o as usize] += 1;
    }
    pub fn get(&self, o: Outcome) -> u64 {
        self.0[o as usize]
    }
}
