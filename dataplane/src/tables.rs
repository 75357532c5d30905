//! The forwarding state a worker reads: services with their per-direction
//! route tables, next hops, the local label table and the (port, VLAN) ->
//! service map. Built by the control side; read-only on the fast path.
//!
//! Half-duplex VRFs: each service owns an `upstream` table (routes every
//! packet a client sends, normally only the hub's default route) and a
//! `downstream` table (one host route per subscriber, for traffic from the
//! core toward clients). The upstream node never routes with the
//! downstream table; it may only *check* a source against it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::lpm::{mask, Dir24Lpm, LpmError, NO_ROUTE};
use crate::policy::{Policers, Rule, MAX_RULES, MAX_SERVICE_RULES};

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
    /// The neighbour's MAC; all zeros until ARP resolves it
    /// ([`UNRESOLVED_MAC`]): packets to it are then counted as
    /// `drop_unresolved_next_hop`, never sent to a made-up address.
    pub dst_mac: [u8; 6],
    /// Labels to push, outermost first (`labels[..n_labels]`).
    pub labels: [u32; 2],
    pub n_labels: u8,
}

/// The MAC of a next hop whose neighbour is not resolved yet. No station
/// uses the all-zero address, and configuration refuses it as a static MAC.
pub const UNRESOLVED_MAC: [u8; 6] = [0; 6];

impl NextHop {
    pub fn labels(&self) -> &[u32] {
        &self.labels[..self.n_labels as usize]
    }

    pub fn is_resolved(&self) -> bool {
        self.dst_mac != UNRESOLVED_MAC
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

    /// Binds or unbinds `label`; false if it is outside the local range.
    pub fn set_slot(&mut self, label: u32, action: Option<LabelAction>) -> bool {
        match label
            .checked_sub(self.base)
            .and_then(|i| self.actions.get_mut(i as usize))
        {
            Some(slot) => {
                *slot = action;
                true
            }
            None => false,
        }
    }

    /// Every bound label with its action, in label order.
    pub fn bound(&self) -> impl Iterator<Item = (u32, LabelAction)> + '_ {
        self.actions
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.map(|a| (self.base + i as u32, a)))
    }

    #[inline(always)]
    pub fn get(&self, label: u32) -> Option<LabelAction> {
        let i = label.wrapping_sub(self.base) as usize;
        self.actions.get(i).copied().flatten()
    }
}

/// A route table that the two copies of the tables share until a batch
/// changes it: the copy being changed then gets its own (copy on write),
/// and the other copy, no longer sharing, changes in place. So the second
/// buffer costs nothing for tables no batch touches (services at rest,
/// unused directions), and each copy's own tables cost memory in
/// proportion to their routes.
///
/// The two copies are only ever changed by the control thread; workers
/// read through the `Arc` and never clone or drop it.
pub struct SharedLpm(Arc<Dir24Lpm>);

impl SharedLpm {
    pub fn new(t: Dir24Lpm) -> SharedLpm {
        SharedLpm(Arc::new(t))
    }

    /// The table to change, copied first if the other copy shares it.
    pub fn make_mut(&mut self) -> Result<&mut Dir24Lpm, LpmError> {
        if Arc::get_mut(&mut self.0).is_none() {
            self.0 = Arc::new(self.0.try_clone()?);
        }
        // Unique now: the copy above is ours alone.
        Arc::get_mut(&mut self.0).ok_or_else(|| LpmError::Memory("table still shared".into()))
    }

    /// Whether the other copy of the tables shares this table.
    pub fn is_shared(&self) -> bool {
        Arc::strong_count(&self.0) > 1
    }

    /// Adds or replaces a route (see [`Dir24Lpm::add`]).
    pub fn add(&mut self, prefix: u32, len: u8, next_hop: u32) -> Result<Option<u32>, LpmError> {
        self.make_mut()?.add(prefix, len, next_hop)
    }

    /// Removes a route (see [`Dir24Lpm::delete`]).
    pub fn delete(&mut self, prefix: u32, len: u8) -> Result<u32, LpmError> {
        self.make_mut()?.delete(prefix, len)
    }

    /// Another handle on the same table.
    fn share(&self) -> SharedLpm {
        SharedLpm(Arc::clone(&self.0))
    }
}

impl std::ops::Deref for SharedLpm {
    type Target = Dir24Lpm;

    #[inline(always)]
    fn deref(&self) -> &Dir24Lpm {
        &self.0
    }
}

/// The memory each route table of a service may take unless configured
/// otherwise (`dataplane.route_table_memory_mb`): 1 GiB, far beyond a full
/// Internet table's first stage, room for about 700,000 /24s that hold
/// longer prefixes.
pub const DEFAULT_TABLE_MEMORY: usize = 1 << 30;

/// One VPN as this router serves it.
pub struct Service {
    pub name: String,
    pub upstream: SharedLpm,
    pub downstream: SharedLpm,
    /// The hub role's table: routes back to spokes and to the uplink.
    pub hub: SharedLpm,
    /// The service's gateway address (host order): packets to it are for
    /// the router itself.
    pub gateway: u32,
    pub ttl_mode: TtlMode,
    /// Drop client packets whose source is not a session on the very
    /// port, VLAN and MAC they came from.
    pub anti_spoofing: bool,
    /// Hub: target-specific processing, in order ([`crate::policy`]).
    pub policy: Vec<Rule>,
}

impl Service {
    /// The second buffer of table publication: a copy that shares every
    /// route table with this one until a batch changes it.
    pub fn second_copy(&self) -> Service {
        Service {
            name: self.name.clone(),
            upstream: self.upstream.share(),
            downstream: self.downstream.share(),
            hub: self.hub.share(),
            gateway: self.gateway,
            ttl_mode: self.ttl_mode,
            anti_spoofing: self.anti_spoofing,
            policy: self.policy.clone(),
        }
    }

    /// One of the service's route tables, to change (copied first if the
    /// other buffer shares it).
    pub fn table_mut(&mut self, which: RouteTable) -> Result<&mut Dir24Lpm, LpmError> {
        match which {
            RouteTable::Upstream => &mut self.upstream,
            RouteTable::Downstream => &mut self.downstream,
            RouteTable::Hub => &mut self.hub,
        }
        .make_mut()
    }

    /// One of the service's route tables.
    pub fn table(&self, which: RouteTable) -> &Dir24Lpm {
        match which {
            RouteTable::Upstream => &self.upstream,
            RouteTable::Downstream => &self.downstream,
            RouteTable::Hub => &self.hub,
        }
    }

    /// A service with empty tables, each of which may take up to
    /// `table_memory` bytes ([`Dir24Lpm::with_limit`];
    /// [`DEFAULT_TABLE_MEMORY`] unless configured).
    pub fn new(
        name: &str,
        gateway: u32,
        ttl_mode: TtlMode,
        table_memory: usize,
    ) -> Result<Service, LpmError> {
        Ok(Service {
            name: name.to_owned(),
            upstream: SharedLpm::new(Dir24Lpm::with_limit(table_memory)?),
            downstream: SharedLpm::new(Dir24Lpm::with_limit(table_memory)?),
            hub: SharedLpm::new(Dir24Lpm::with_limit(table_memory)?),
            gateway,
            ttl_mode,
            anti_spoofing: true,
            policy: Vec::new(),
        })
    }
}

/// Batches at least this large are applied grouped by /8.
const GROUPED_BATCH: usize = 4096;

impl TableOp {
    /// The service, table and network (prefix without host bits) of the
    /// route the op changes; `None` for a neighbour op.
    fn route(&self) -> Option<(u16, RouteTable, u32)> {
        Some(match *self {
            TableOp::AddRoute {
                service,
                table,
                prefix,
                len,
                ..
            }
            | TableOp::DeleteRoute {
                service,
                table,
                prefix,
                len,
            } => {
                // A length over 32 is refused whatever the order.
                let net = if len <= 32 {
                    prefix & mask(len)
                } else {
                    prefix
                };
                (service, table, net)
            }
            TableOp::SetNeighbor { .. }
            | TableOp::SetNextHop { .. }
            | TableOp::SetGroup { .. }
            | TableOp::SetLabel { .. }
            | TableOp::SetService { .. }
            | TableOp::SetAccess { .. }
            | TableOp::SetRule { .. } => return None,
        })
    }
}

/// Which of a service's route tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteTable {
    Upstream,
    Downstream,
    Hub,
}

/// One change to the forwarding tables. Changes travel in batches that
/// the publisher applies to each of the two copies in turn, so they are
/// data, applied the same way twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableOp {
    /// Adds (or replaces) `prefix/len -> next_hop` in a service's table.
    AddRoute {
        service: u16,
        table: RouteTable,
        prefix: u32,
        len: u8,
        next_hop: u32,
    },
    /// Deletes `prefix/len` from a service's table.
    DeleteRoute {
        service: u16,
        table: RouteTable,
        prefix: u32,
        len: u8,
    },
    /// Sets next hop `next_hop`'s neighbour MAC (learnt by ARP;
    /// [`UNRESOLVED_MAC`] forgets it).
    SetNeighbor { next_hop: u32, mac: [u8; 6] },
    /// Replaces next hop `id`, or appends it when `id` is the count
    /// (reload). A next hop is never removed, since routes name it by
    /// index: a removed one is replaced by one with no port, unusable.
    SetNextHop { id: u32, next_hop: NextHop },
    /// Sets (or appends, when its index is the count) the ECMP group `id`
    /// (`GROUP_BIT` | index): routes naming it spread flows over its
    /// members by a hash of source and destination address.
    SetGroup { id: u32, group: Group },
    /// Binds a local label, or unbinds it (`None`).
    SetLabel {
        label: u32,
        action: Option<LabelAction>,
    },
    /// A service's own settings (reload).
    SetService {
        service: u16,
        gateway: u32,
        ttl_mode: TtlMode,
        anti_spoofing: bool,
    },
    /// Binds a port's VLAN (0: untagged) to a service, or unbinds it
    /// ([`NO_SERVICE`]).
    SetAccess { port: u16, vlan: u16, service: u16 },
    /// Sets a service's policy rule `index` (appends it when `index` is
    /// the count), or with `None` cuts the list to `index` rules.
    SetRule {
        service: u16,
        index: u16,
        rule: Option<Rule>,
    },
}

/// No service bound to a (port, VLAN).
pub const NO_SERVICE: u16 = u16::MAX;

/// A port as the pipeline sees it.
#[derive(Clone)]
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
    /// The out port exists and the neighbour's MAC is known: packets can
    /// leave by this next hop.
    pub usable: bool,
    /// Usable, and the out port faces subscribers.
    pub to_access: bool,
    /// The out port exists but the MAC is not resolved yet (ARP pending).
    pub unresolved: bool,
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
        let resolved = nh.is_resolved();
        Adjacency {
            header,
            l2_len: l2_len as u8,
            n_labels: labels.len() as u8,
            port: nh.port,
            vlan: nh.vlan,
            usable: out.is_some() && resolved,
            to_access: resolved && out.is_some_and(|p| p.role == PortRole::Access),
            unresolved: out.is_some() && !resolved,
        }
    }

    /// Why a packet cannot leave by this next hop when it is not usable:
    /// its MAC is still being resolved, or it names no port of ours.
    #[inline]
    pub fn unusable_outcome(&self) -> crate::outcome::Outcome {
        if self.unresolved {
            crate::outcome::Outcome::Unresolved
        } else {
            crate::outcome::Outcome::BadNextHop
        }
    }

    /// The header's length with its labels pushed.
    #[inline(always)]
    pub fn pushed_len(&self) -> usize {
        usize::from(self.l2_len) + 4 * usize::from(self.n_labels)
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
    /// The policers of the hub's police rules, by rule slot: shared by
    /// both copies, since they are state, not configuration.
    pub policers: Arc<Policers>,
    /// ECMP groups, by index (`id & !GROUP_BIT`).
    groups: Vec<Group>,
    pub ports: Vec<PortInfo>,
    pub services: Vec<Service>,
    pub labels: LabelTable,
    next_hops: Vec<NextHop>,
    /// `next_hops[i]` as the fast path uses it; rebuilt whenever a next
    /// hop or a port MAC changes.
    adjacencies: Vec<Adjacency>,
    /// Next hops on access ports by (port, VLAN, MAC): the subscriber a
    /// client's packets are counted against when their source fails
    /// anti-spoofing. Two next hops for the same client: the latest set.
    clients: HashMap<(u16, u16, [u8; 6]), u32>,
    /// Ops of the last batch that could not be applied (unknown service
    /// or next hop, table at its memory limit, no such route), for the
    /// writer to report.
    rejected: Vec<(TableOp, String)>,
}

/// A route's next hop with this bit (and not bit 31) names an ECMP group.
pub const GROUP_BIT: u32 = 1 << 30;
/// A route to this next hop discards what it covers, counted as
/// `drop_no_route` (a null route: a hub's sink for its clients' pool, so
/// that a withdrawn client's traffic is not sent on by a shorter route).
pub const DISCARD: u32 = GROUP_BIT - 1;
/// The most members a group has.
pub const MAX_PATHS: usize = 8;

/// Equal-cost next hops: `members[..n]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Group {
    pub members: [u32; MAX_PATHS],
    pub n: u8,
}

impl Group {
    /// A group of `members` (at most [`MAX_PATHS`]; `None` beyond or
    /// when empty).
    pub fn of(members: &[u32]) -> Option<Group> {
        if members.is_empty() || members.len() > MAX_PATHS {
            return None;
        }
        let mut m = [0; MAX_PATHS];
        m[..members.len()].copy_from_slice(members);
        Some(Group {
            members: m,
            n: members.len() as u8,
        })
    }

    pub fn members(&self) -> &[u32] {
        &self.members[..usize::from(self.n)]
    }
}

/// Whether a route's next hop id names a group.
#[inline]
pub fn is_group(id: u32) -> bool {
    id & (GROUP_BIT | 1 << 31) == GROUP_BIT
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
            policers: Arc::default(),
            groups: Vec::new(),
            role,
            ports,
            services,
            labels,
            next_hops,
            adjacencies: Vec::new(),
            clients: HashMap::new(),
            rejected: Vec::new(),
        };
        t.rebuild_adjacencies();
        for id in 0..t.next_hops.len() {
            t.index_client(id as u32, None);
        }
        t
    }

    /// A next hop's key in [`Tables::clients`], if it leads to a client.
    fn client_key(nh: &NextHop) -> Option<(u16, u16, [u8; 6])> {
        (nh.n_labels == 0 && nh.port != u16::MAX && nh.dst_mac != UNRESOLVED_MAC)
            .then_some((nh.port, nh.vlan, nh.dst_mac))
    }

    /// Keeps [`Tables::clients`] in step with next hop `id`, which was
    /// `old` before.
    fn index_client(&mut self, id: u32, old: Option<NextHop>) {
        if let Some(k) = old.as_ref().and_then(Tables::client_key) {
            if self.clients.get(&k) == Some(&id) {
                self.clients.remove(&k);
            }
        }
        if let Some(k) = self.next_hops.get(id as usize).and_then(Tables::client_key) {
            if self.ports.get(usize::from(k.0)).map(|p| p.role) == Some(PortRole::Access) {
                self.clients.insert(k, id);
            }
        }
    }

    /// The next hop of the client at (port, VLAN, MAC), if there is one.
    pub fn client(&self, port: u16, vlan: u16, mac: &[u8]) -> Option<u32> {
        let mac: [u8; 6] = mac.try_into().ok()?;
        self.clients.get(&(port, vlan, mac)).copied()
    }

    fn rebuild_adjacencies(&mut self) {
        self.adjacencies = self
            .next_hops
            .iter()
            .map(|nh| Adjacency::new(nh, &self.ports))
            .collect();
    }

    /// The second buffer of table publication: the small parts copied,
    /// every route table shared until a batch changes it ([`SharedLpm`]).
    pub fn second_copy(&self) -> Tables {
        Tables {
            policers: self.policers.clone(),
            groups: self.groups.clone(),
            role: self.role,
            ports: self.ports.clone(),
            services: self.services.iter().map(Service::second_copy).collect(),
            labels: self.labels.clone(),
            next_hops: self.next_hops.clone(),
            adjacencies: self.adjacencies.clone(),
            clients: self.clients.clone(),
            rejected: Vec::new(),
        }
    }

    /// Applies a batch of changes. Ops that cannot be applied change
    /// nothing and are listed in [`Tables::rejected`]; applying the same
    /// batch to an equal copy rejects the same ops.
    ///
    /// Ops on the same route keep their order, so the result is that of
    /// applying the batch in order. Large batches are applied grouped by
    /// service, table and /8: a full table load then works on one /8's
    /// chunk (192 KiB, cache-sized) at a time instead of missing the cache
    /// on nearly every route, which takes a third off its time. The one
    /// visible difference is which ops a table at its memory limit
    /// refuses. Either way both copies refuse the same ones: a table's
    /// limit is counted from its own contents
    /// ([`Dir24Lpm::limited_bytes`]), never from memory shared with others.
    pub fn apply(&mut self, ops: &[TableOp]) {
        self.rejected.clear();
        if ops.len() < GROUPED_BATCH {
            for &op in ops {
                self.apply_logged(op);
            }
        } else {
            self.apply_grouped(ops);
        }
    }

    fn apply_grouped(&mut self, ops: &[TableOp]) {
        // The other ops first, in order: they commute with route ops,
        // except a route naming a next hop the batch appends, which the
        // order here keeps valid.
        for &op in ops.iter().filter(|op| op.route().is_none()) {
            self.apply_logged(op);
        }
        let routes: Vec<TableOp> = ops
            .iter()
            .filter(|op| op.route().is_some())
            .copied()
            .collect();
        let ops = &routes[..];
        if ops.is_empty() {
            return;
        }
        // A counting sort on (service, table, /8): stable, so ops on the
        // same route keep their order, and linear. Buckets are numbered in
        // order of first appearance of their (service, table).
        let mut tables: HashMap<(u16, RouteTable), usize> = HashMap::new();
        let bucket: Vec<u32> = ops
            .iter()
            .map(|op| {
                let (service, table, prefix) = op.route().expect("route ops only");
                let n = tables.len();
                let t = *tables.entry((service, table)).or_insert(n);
                (t << 8 | (prefix >> 24) as usize) as u32
            })
            .collect();
        let mut start = vec![0usize; tables.len() << 8 | 1];
        for &b in &bucket {
            start[b as usize + 1] += 1;
        }
        for i in 1..start.len() {
            start[i] += start[i - 1];
        }
        let mut grouped = vec![ops[0]; ops.len()];
        for (op, &b) in ops.iter().zip(&bucket) {
            grouped[start[b as usize]] = *op;
            start[b as usize] += 1;
        }
        for op in grouped {
            self.apply_logged(op);
        }
    }

    fn apply_logged(&mut self, op: TableOp) {
        if let Err(e) = self.apply_one(op) {
            self.rejected.push((op, e));
        }
    }

    fn apply_one(&mut self, op: TableOp) -> Result<(), String> {
        let Some((service, table, _)) = op.route() else {
            return self.apply_setting(op);
        };
        let n_next_hops = self.next_hops.len();
        let n_groups = self.groups.len();
        let svc = self
            .services
            .get_mut(usize::from(service))
            .ok_or_else(|| format!("no service {service}"))?;
        let t = svc.table_mut(table).map_err(|e| e.to_string())?;
        match op {
            TableOp::AddRoute {
                prefix,
                len,
                next_hop,
                ..
            } => {
                if is_group(next_hop) {
                    if (next_hop & !GROUP_BIT) as usize >= n_groups {
                        return Err(format!("no group {}", next_hop & !GROUP_BIT));
                    }
                } else if next_hop != DISCARD && next_hop as usize >= n_next_hops {
                    return Err(format!("no next hop {next_hop}"));
                }
                t.add(prefix, len, next_hop)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            TableOp::DeleteRoute { prefix, len, .. } => {
                t.delete(prefix, len).map(drop).map_err(|e| e.to_string())
            }
            _ => unreachable!("settings are applied above"),
        }
    }

    /// The ops that are not route changes.
    fn apply_setting(&mut self, op: TableOp) -> Result<(), String> {
        match op {
            TableOp::SetNeighbor { next_hop, mac } => {
                let nh = self
                    .next_hops
                    .get_mut(next_hop as usize)
                    .ok_or_else(|| format!("no next hop {next_hop}"))?;
                let old = *nh;
                nh.dst_mac = mac;
                let nh = *nh;
                self.adjacencies[next_hop as usize] = Adjacency::new(&nh, &self.ports);
                self.index_client(next_hop, Some(old));
            }
            TableOp::SetNextHop { id, next_hop } => {
                let adj = Adjacency::new(&next_hop, &self.ports);
                match (id as usize).cmp(&self.next_hops.len()) {
                    std::cmp::Ordering::Less => {
                        let old = std::mem::replace(&mut self.next_hops[id as usize], next_hop);
                        self.adjacencies[id as usize] = adj;
                        self.index_client(id, Some(old));
                    }
                    std::cmp::Ordering::Equal if id < NO_ROUTE => {
                        self.next_hops.push(next_hop);
                        self.adjacencies.push(adj);
                        self.index_client(id, None);
                    }
                    _ => {
                        return Err(format!(
                            "next hop {id} is beyond the {} there are",
                            self.next_hops.len()
                        ))
                    }
                }
            }
            TableOp::SetGroup { id, group } => {
                if !is_group(id) {
                    return Err(format!("{id} is not a group id"));
                }
                if group.n == 0 || usize::from(group.n) > MAX_PATHS {
                    return Err(format!(
                        "a group has 1 to {MAX_PATHS} members, not {}",
                        group.n
                    ));
                }
                if let Some(m) = group
                    .members()
                    .iter()
                    .find(|&&m| m as usize >= self.next_hops.len())
                {
                    return Err(format!("no next hop {m}"));
                }
                let i = (id & !GROUP_BIT) as usize;
                match i.cmp(&self.groups.len()) {
                    std::cmp::Ordering::Less => self.groups[i] = group,
                    std::cmp::Ordering::Equal => self.groups.push(group),
                    std::cmp::Ordering::Greater => {
                        return Err(format!(
                            "group {i} is beyond the {} there are",
                            self.groups.len()
                        ))
                    }
                }
            }
            TableOp::SetLabel { label, action } => {
                if !self.labels.set_slot(label, action) {
                    return Err(format!("label {label} is outside the local range"));
                }
            }
            TableOp::SetService {
                service,
                gateway,
                ttl_mode,
                anti_spoofing,
            } => {
                let svc = self
                    .services
                    .get_mut(usize::from(service))
                    .ok_or_else(|| format!("no service {service}"))?;
                svc.gateway = gateway;
                svc.ttl_mode = ttl_mode;
                svc.anti_spoofing = anti_spoofing;
            }
            TableOp::SetAccess {
                port,
                vlan,
                service,
            } => {
                if service != NO_SERVICE && usize::from(service) >= self.services.len() {
                    return Err(format!("no service {service}"));
                }
                let p = self
                    .ports
                    .get_mut(usize::from(port))
                    .ok_or_else(|| format!("no port {port}"))?;
                let slot = p
                    .vlan_service
                    .get_mut(usize::from(vlan))
                    .ok_or_else(|| format!("VLAN {vlan} is out of range"))?;
                *slot = service;
            }
            TableOp::SetRule {
                service,
                index,
                rule,
            } => {
                let svc = self
                    .services
                    .get_mut(usize::from(service))
                    .ok_or_else(|| format!("no service {service}"))?;
                let i = usize::from(index);
                if i > svc.policy.len() {
                    return Err(format!(
                        "rule {i} is beyond the {} service {service} has",
                        svc.policy.len()
                    ));
                }
                match rule {
                    None => svc.policy.truncate(i),
                    Some(r) if usize::from(r.slot) >= MAX_RULES => {
                        return Err(format!("rule slot {} is beyond {MAX_RULES}", r.slot))
                    }
                    Some(r) if r.len > 32 => {
                        return Err(format!("prefix length {} is over 32", r.len))
                    }
                    Some(r) if i < svc.policy.len() => svc.policy[i] = r,
                    Some(_) if i >= MAX_SERVICE_RULES => {
                        return Err(format!("a service has at most {MAX_SERVICE_RULES} rules"))
                    }
                    Some(r) => svc.policy.push(r),
                }
            }
            TableOp::AddRoute { .. } | TableOp::DeleteRoute { .. } => {
                unreachable!("route ops are applied to their table")
            }
        }
        Ok(())
    }

    /// Applies one op and says why it was refused, if it was.
    pub fn apply_checked(&mut self, op: TableOp) -> Result<(), String> {
        self.rejected.clear();
        self.apply_one(op)
    }

    /// The ops of the last [`Tables::apply`] that were not applied, and why.
    pub fn rejected(&self) -> &[(TableOp, String)] {
        &self.rejected
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

    /// The adjacency a route's next hop leads to for the flow (source,
    /// destination): a group's member is picked by a hash of the two, so a
    /// flow keeps its path while the group stays the same.
    #[inline]
    pub fn route_adjacency(&self, id: u32, src: u32, dst: u32) -> Option<&Adjacency> {
        if is_group(id) {
            let g = self.groups.get((id & !GROUP_BIT) as usize)?;
            let h = (src ^ dst.rotate_left(16)).wrapping_mul(0x9e37_79b1);
            // Multiply-shift: the hash's high bits pick among n.
            let k = ((u64::from(h) * u64::from(g.n)) >> 32) as usize;
            return self.adjacency(*g.members.get(k)?);
        }
        self.adjacency(id)
    }

    /// The ECMP groups, by index.
    pub fn groups(&self) -> &[Group] {
        &self.groups
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tables() -> Tables {
        tables_with(DEFAULT_TABLE_MEMORY)
    }

    fn tables_with(table_memory: usize) -> Tables {
        let mut svc = Service::new("blue", 0x0a00_0001, TtlMode::Uniform, table_memory).unwrap();
        svc.upstream.add(0, 0, 0).unwrap();
        let nh = NextHop {
            port: 0,
            vlan: 0,
            dst_mac: [2, 0, 0, 0, 0, 1],
            labels: [100, 200],
            n_labels: 2,
        };
        Tables::new(
            Role::Spoke,
            vec![PortInfo::new(PortRole::Core, [2, 0, 0, 0, 0, 9])],
            vec![svc],
            vec![nh, NextHop { n_labels: 0, ..nh }],
            LabelTable::new(1000, 16),
        )
    }

    #[test]
    fn a_group_spreads_flows_over_its_members_and_keeps_each_on_one() {
        let mut t = tables();
        let g = GROUP_BIT;
        t.apply(&[
            TableOp::SetGroup {
                id: g,
                group: Group::of(&[0, 1]).unwrap(),
            },
            TableOp::AddRoute {
                service: 0,
                table: RouteTable::Upstream,
                prefix: 0,
                len: 0,
                next_hop: g,
            },
        ]);
        assert!(t.rejected().is_empty(), "{:?}", t.rejected());
        let route = t.services[0].upstream.lookup(0x0808_0808);
        assert_eq!(route, g);
        let mut seen = [0u32; 2];
        for i in 0..1000u32 {
            let src = 0x0a00_0000 | i;
            let a = t.route_adjacency(route, src, 0x0808_0808).unwrap();
            let again = t.route_adjacency(route, src, 0x0808_0808).unwrap();
            assert_eq!(a.n_labels, again.n_labels, "a flow stays on its member");
            seen[usize::from(a.n_labels == 0)] += 1;
        }
        assert!(
            seen[0] > 400 && seen[1] > 400,
            "both members carry flows: {seen:?}"
        );
        // A plain next hop is itself; no route is none.
        assert_eq!(t.route_adjacency(1, 1, 2).unwrap().n_labels, 0);
        assert!(t.route_adjacency(NO_ROUTE, 1, 2).is_none());
        // Refused: an unknown member, a group id out of order, a route to
        // a group that does not exist, an empty group.
        let mut empty = Group::of(&[0]).unwrap();
        empty.n = 0;
        t.apply(&[
            TableOp::SetGroup {
                id: g,
                group: Group::of(&[0, 5]).unwrap(),
            },
            TableOp::SetGroup {
                id: g | 3,
                group: Group::of(&[0]).unwrap(),
            },
            TableOp::AddRoute {
                service: 0,
                table: RouteTable::Upstream,
                prefix: 0x0a00_0000,
                len: 8,
                next_hop: g | 1,
            },
            TableOp::SetGroup {
                id: g,
                group: empty,
            },
        ]);
        assert_eq!(t.rejected().len(), 4, "{:?}", t.rejected());
        assert_eq!(t.groups(), &[Group::of(&[0, 1]).unwrap()]);
    }

    #[test]
    fn batches_apply_in_order_and_report_what_they_reject() {
        let mut t = tables();
        let add = |prefix, len, next_hop| TableOp::AddRoute {
            service: 0,
            table: RouteTable::Downstream,
            prefix,
            len,
            next_hop,
        };
        t.apply(&[
            add(0x0a00_000a, 32, 1),
            add(0x0a00_000b, 32, 7),
            TableOp::DeleteRoute {
                service: 0,
                table: RouteTable::Upstream,
                prefix: 0,
                len: 0,
            },
            TableOp::DeleteRoute {
                service: 3,
                table: RouteTable::Hub,
                prefix: 0,
                len: 0,
            },
        ]);
        let s = &t.services[0];
        assert_eq!(s.downstream.lookup(0x0a00_000a), 1);
        assert_eq!(s.downstream.lookup(0x0a00_000b), NO_ROUTE);
        assert_eq!(s.upstream.lookup(0x0808_0808), NO_ROUTE);
        let why: Vec<&str> = t.rejected().iter().map(|(_, w)| w.as_str()).collect();
        assert_eq!(why, ["no next hop 7", "no service 3"]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]
        /// Grouping a batch by /8 gives the tables and the rejections that
        /// applying it in order gives. Few distinct routes, so the same
        /// route is often added, moved and deleted within one batch.
        #[test]
        fn grouped_batches_end_like_ordered_ones(
            raw in proptest::collection::vec(
                (0u8..4, 0u8..3, 0u32..8, 0u8..36, proptest::bool::ANY, 0u32..3),
                1..300,
            )
        ) {
            let ops: Vec<TableOp> = raw
                .iter()
                .map(|&(svc, tbl, p, len, add, nh)| {
                    // Prefixes across a few /8s, some with host bits set.
                    let prefix = (p % 4) << 24 | (p / 4) << 16 | (p & 1) << 7;
                    let (service, table) = (u16::from(svc % 2), match tbl {
                        0 => RouteTable::Upstream,
                        1 => RouteTable::Downstream,
                        _ => RouteTable::Hub,
                    });
                    if add {
                        TableOp::AddRoute { service, table, prefix, len, next_hop: nh }
                    } else {
                        TableOp::DeleteRoute { service, table, prefix, len }
                    }
                })
                .collect();
            let mut a = tables();
            let mut b = tables();
            for &op in &ops {
                a.apply_logged(op);
            }
            b.apply_grouped(&ops);
            let mut ra: Vec<String> = a.rejected.iter().map(|r| format!("{r:?}")).collect();
            let mut rb: Vec<String> = b.rejected.iter().map(|r| format!("{r:?}")).collect();
            ra.sort();
            rb.sort();
            proptest::prop_assert_eq!(ra, rb);
            for tbl in [RouteTable::Upstream, RouteTable::Downstream, RouteTable::Hub] {
                let (x, y) = (a.services[0].table(tbl), b.services[0].table(tbl));
                proptest::prop_assert_eq!(x.len(), y.len());
                for p in 0..8u32 {
                    let addr = (p % 4) << 24 | (p / 4) << 16 | (p & 1) << 7 | 1;
                    for probe in [addr, addr | 0xff, addr | 0xffff] {
                        proptest::prop_assert_eq!(x.lookup(probe), y.lookup(probe));
                    }
                }
            }
        }
    }

    /// `n` upstream routes /24 to /32, each in a /24 of its own, next hop
    /// 0 or 1.
    fn upstream_routes(n: u32) -> Vec<TableOp> {
        (0..n)
            .map(|i| TableOp::AddRoute {
                service: 0,
                table: RouteTable::Upstream,
                prefix: (1 + i % 200) << 24 | (i / 200) << 8 | (i * 37) & 0xff,
                len: 24 + (i % 9) as u8,
                next_hop: i % 2,
            })
            .collect()
    }

    #[test]
    fn an_upstream_table_takes_far_more_than_1024_groups() {
        // As a BGP peer's 100k VPN routes reach a spoke's upstream table
        // (a fixed 1,024 groups installed 12,136 of them), in both copies.
        let mut t = tables();
        let mut c = t.second_copy();
        let ops = upstream_routes(100_000);
        t.apply(&ops);
        assert!(t.rejected().is_empty(), "{:?}", t.rejected().first());
        c.apply(&ops);
        assert!(c.rejected().is_empty(), "{:?}", c.rejected().first());
        for t in [&t, &c] {
            let up = &t.services[0].upstream;
            assert_eq!(up.len(), 100_001);
            assert_eq!(up.groups_in_use(), 100_000 - 100_000 / 9 - 1);
            for op in &ops {
                if let TableOp::AddRoute {
                    prefix,
                    len,
                    next_hop,
                    ..
                } = *op
                {
                    assert_eq!(up.lookup(prefix & mask(len)), next_hop);
                    assert_eq!(up.lookup(prefix | !mask(len)), next_hop);
                }
            }
        }
    }

    #[test]
    fn both_copies_refuse_the_same_routes_at_the_memory_limit() {
        let mut t = tables_with(4 << 20);
        let mut c = t.second_copy();
        let ops = upstream_routes(20_000);
        t.apply(&ops);
        c.apply(&ops);
        assert!(!t.rejected().is_empty());
        assert_eq!(t.rejected(), c.rejected());
        let (_, why) = &t.rejected()[0];
        assert_eq!(why, "the route table's memory limit of 4 MiB is reached");
        let (a, b) = (&t.services[0].upstream, &c.services[0].upstream);
        assert!(a.limited_bytes() <= 4 << 20);
        assert_eq!(a.len(), b.len());
        assert_eq!(a.limited_bytes(), b.limited_bytes());
        assert!(ops.iter().all(|op| match *op {
            TableOp::AddRoute { prefix, .. } => a.lookup(prefix) == b.lookup(prefix),
            _ => true,
        }));
    }

    #[test]
    fn a_copy_shares_its_tables_until_a_batch_changes_one() {
        let mut t = tables();
        let mut c = t.second_copy();
        assert_eq!(c.services[0].upstream.lookup(1), 0);
        assert_eq!(c.adjacency(0), t.adjacency(0));
        let shared = |t: &Tables| {
            let s = &t.services[0];
            [&s.upstream, &s.downstream, &s.hub].map(|x| x.is_shared())
        };
        assert_eq!(shared(&t), [true; 3]);
        let delete_default = [TableOp::DeleteRoute {
            service: 0,
            table: RouteTable::Upstream,
            prefix: 0,
            len: 0,
        }];
        // The changed copy gets its own upstream table; the other keeps
        // the old one, now alone, and the untouched tables stay shared.
        t.apply(&delete_default);
        assert_eq!(t.services[0].upstream.lookup(1), NO_ROUTE);
        assert_eq!(c.services[0].upstream.lookup(1), 0);
        assert_eq!(shared(&t), [false, true, true]);
        assert_eq!(shared(&c), [false, true, true]);
        // The replay on the other copy changes its table in place.
        let before: *const Dir24Lpm = &*c.services[0].upstream;
        c.apply(&delete_default);
        assert!(c.rejected().is_empty());
        assert_eq!(c.services[0].upstream.lookup(1), NO_ROUTE);
        assert!(std::ptr::eq(before, &*c.services[0].upstream));
    }
}
