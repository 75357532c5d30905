//! The forwarding state a worker reads: services with their per-direction
//! route tables, next hops, the local label table and the (port, VLAN) ->
//! service map. Built by the control side; read-only on the fast path.
//!
//! Half-duplex VRFs: each service owns an `upstream` table (routes every
//! packet a client sends, normally only the hub's default route) and a
//! `downstream` table (one host route per subscriber, for traffic from the
//! core toward clients). The upstream node never routes with the
//! downstream table; it may only *check* a source against it.

use crate::lpm::{Dir24Lpm, LpmError, NO_ROUTE};

/// Which job this router does (one binary, three roles).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// HD-VRF PE: access ports with clients, core ports toward the hub.
    Spoke,
    /// PE with the return path and target-specific processing.
    Hub,
    /// Label switch only.
    P,
}

/// RFC 3443 TTL handling between the IP header and the label stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TtlMode {
    /// The LSP is one hop per router: TTL copied into labels on push and
    /// back into IP on pop.
    Uniform,
    /// The LSP is one hop: labels start at 255, IP TTL is decremented once.
    Pipe,
}

/// Where a port faces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortRole {
    /// Subscribers (clients), optionally on 802.1Q VLANs.
    Access,
    /// The MPLS core (or, on a hub, the uplink).
    Core,
}

/// A next hop: everything needed to rewrite and send a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    pub port: u16,
    /// 802.1Q VLAN id to tag with; 0 = untagged.
    pub vlan: u16,
    pub dst_mac: [u8; 6],
    /// Labels to push, outermost first (`labels[..n_labels]`).
    pub labels: [u32; 2],
    pub n_labels: u8,
}

impl NextHop {
    pub fn labels(&self) -> &[u32] {
        &self.labels[..self.n_labels as usize]
    }
}

/// What to do with a packet whose top label is one of ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelAction {
    /// Our transport label: pop it and look at the next one.
    PopContinue,
    /// A spoke service's VPN label: pop, route in its downstream table.
    PopDownstream { service: u16 },
    /// A hub service's VPN label: pop, apply target processing, route in
    /// its hub table (the return path).
    PopHub { service: u16 },
    /// Swap the top label and send to a next hop (P role).
    Swap { label: u32, next_hop: u32 },
    /// Penultimate hop: pop the top label and send the rest on.
    PopPhp { next_hop: u32 },
}

/// Local labels `base .. base + len` map to actions.
#[derive(Clone, Debug)]
pub struct LabelTable {
    base: u32,
    actions: Vec<Option<LabelAction>>,
}

impl LabelTable {
    pub fn new(base: u32, len: u32) -> LabelTable {
        LabelTable {
            base,
            actions: vec![None; len as usize],
        }
    }

    pub fn base(&self) -> u32 {
        self.base
    }

    pub fn len(&self) -> usize {
        self.actions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// Binds `label`; false if it is outside the local range.
    pub fn set(&mut self, label: u32, action: LabelAction) -> bool {
        match label
            .checked_sub(self.base)
            .and_then(|i| self.actions.get_mut(i as usize))
        {
            Some(slot) => {
                *slot = Some(action);
                true
            }
            None => false,
        }
    }

    #[inline(always)]
    pub fn get(&self, label: u32) -> Option<LabelAction> {
        let i = label.wrapping_sub(self.base) as usize;
        self.actions.get(i).copied().flatten()
    }
}

/// One VPN as this router serves it.
pub struct Service {
    pub name: String,
    pub upstream: Dir24Lpm,
    pub downstream: Dir24Lpm,
    /// The hub role's table: routes back to spokes and to the uplink.
    pub hub: Dir24Lpm,
    /// The service's gateway address (host order): packets to it are for
    /// the router itself.
    pub gateway: u32,
    pub ttl_mode: TtlMode,
    /// Drop client packets whose source is not a session on the very
    /// port, VLAN and MAC they came from.
    pub anti_spoofing: bool,
}

impl Service {
    pub fn new(name: &str, gateway: u32, ttl_mode: TtlMode) -> Result<Service, LpmError> {
        Ok(Service {
            name: name.to_owned(),
            upstream: Dir24Lpm::new(1024)?,
            downstream: Dir24Lpm::new(1 << 16)?,
            hub: Dir24Lpm::new(1 << 16)?,
            gateway,
            ttl_mode,
            anti_spoofing: true,
        })
    }
}

/// No service bound to a (port, VLAN).
pub const NO_SERVICE: u16 = u16::MAX;

/// A port as the pipeline sees it.
pub struct PortInfo {
    pub role: PortRole,
    pub mac: [u8; 6],
    /// The router's own address on this port (host order), 0 if none.
    pub address: u32,
    /// Service per VLAN id (index 0: untagged frames), access ports only.
    pub vlan_service: Box<[u16; 4096]>,
}

impl PortInfo {
    pub fn new(role: PortRole, mac: [u8; 6]) -> PortInfo {
        PortInfo {
            role,
            mac,
            address: 0,
            vlan_service: Box::new([NO_SERVICE; 4096]),
        }
    }
}

/// Everything the pipeline reads.
pub struct Tables {
    pub role: Role,
    pub ports: Vec<PortInfo>,
    pub services: Vec<Service>,
    pub next_hops: Vec<NextHop>,
    pub labels: LabelTable,
}

impl Tables {
    /// The next hop `id`, if it exists.
    #[inline(always)]
    pub fn next_hop(&self, id: u32) -> Option<&NextHop> {
        if id == NO_ROUTE {
            return None;
        }
        self.next_hops.get(id as usize)
    }
}
