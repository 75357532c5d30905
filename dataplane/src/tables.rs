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

/// The fast path's view of a next hop (VPP's adjacency): where it goes,
/// for checks, and its outgoing header precomputed, so that a rewrite is
/// a fixed-size copy plus the per-packet TTL and TC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(64))]
pub struct Adjacency {
    /// Destination MAC, source MAC (the out port's), the 802.1Q tag if
    /// any, the ethertype (MPLS when labels are pushed, else IPv4), then
    /// the labels, outermost first, with TC and TTL zero and bottom of
    /// stack on the last.
    pub header: [u8; 32],
    /// Ethernet header length, ethertype included (14 or 18).
    pub l2_len: u8,
    pub n_labels: u8,
    pub port: u16,
    pub vlan: u16,
    /// The out port exists (a next hop naming another one is unusable).
    pub usable: bool,
    /// The out port faces subscribers.
    pub to_access: bool,
}

impl Adjacency {
    fn new(nh: &NextHop, ports: &[PortInfo]) -> Adjacency {
        let out = ports.get(nh.port as usize);
        let mut header = [0u8; 32];
        header[0..6].copy_from_slice(&nh.dst_mac);
        header[6..12].copy_from_slice(&out.map_or([0; 6], |p| p.mac));
        let mut at = 12;
        if nh.vlan != 0 {
            header[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
            header[14..16].copy_from_slice(&(nh.vlan & 0x0fff).to_be_bytes());
            at = 16;
        }
        let labels = nh.labels();
        let ethertype: u16 = if labels.is_empty() { 0x0800 } else { 0x8847 };
        header[at..at + 2].copy_from_slice(&ethertype.to_be_bytes());
        let l2_len = at + 2;
        for (i, &l) in labels.iter().enumerate() {
            let bos = u32::from(i + 1 == labels.len());
            let o = l2_len + 4 * i;
            header[o..o + 4].copy_from_slice(&((l & 0xf_ffff) << 12 | bos << 8).to_be_bytes());
        }
        Adjacency {
            header,
            l2_len: l2_len as u8,
            n_labels: labels.len() as u8,
            port: nh.port,
            vlan: nh.vlan,
            usable: out.is_some(),
            to_access: out.is_some_and(|p| p.role == PortRole::Access),
        }
    }

    /// The next hop's MAC address.
    #[inline(always)]
    pub fn dst_mac(&self) -> &[u8; 6] {
        self.header.first_chunk::<6>().expect("32 >= 6")
    }
}

/// Everything the pipeline reads.
pub struct Tables {
    pub role: Role,
    pub ports: Vec<PortInfo>,
    pub services: Vec<Service>,
    pub labels: LabelTable,
    next_hops: Vec<NextHop>,
    /// `next_hops[i]` as the fast path uses it; rebuilt whenever a next
    /// hop or a port MAC changes.
    adjacencies: Vec<Adjacency>,
}

impl Tables {
    pub fn new(
        role: Role,
        ports: Vec<PortInfo>,
        services: Vec<Service>,
        next_hops: Vec<NextHop>,
        labels: LabelTable,
    ) -> Tables {
        let mut t = Tables {
            role,
            ports,
            services,
            labels,
            next_hops,
            adjacencies: Vec::new(),
        };
        t.rebuild_adjacencies();
        t
    }

    fn rebuild_adjacencies(&mut self) {
        self.adjacencies = self
            .next_hops
            .iter()
            .map(|nh| Adjacency::new(nh, &self.ports))
            .collect();
    }

    pub fn next_hops(&self) -> &[NextHop] {
        &self.next_hops
    }

    /// Sets port `port`'s MAC address (the source of what leaves it).
    pub fn set_port_mac(&mut self, port: usize, mac: [u8; 6]) {
        if let Some(p) = self.ports.get_mut(port) {
            p.mac = mac;
            self.rebuild_adjacencies();
        }
    }

    /// The next hop `id`, if it exists.
    #[inline(always)]
    pub fn next_hop(&self, id: u32) -> Option<&NextHop> {
        self.next_hops.get(id as usize)
    }

    /// The adjacency of next hop `id` ([`NO_ROUTE`] has none).
    #[inline(always)]
    pub fn adjacency(&self, id: u32) -> Option<&Adjacency> {
        // NO_ROUTE (u32::MAX) is beyond any table: one bounds check
        // covers both.
        const _: () = assert!(NO_ROUTE == u32::MAX);
        self.adjacencies.get(id as usize)
    }
}
