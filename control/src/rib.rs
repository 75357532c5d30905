//! The RIB manager: the one owner of routes, next-hop ids and ECMP-group
//! ids (the job zebra does for FRR).
//!
//! Every route source hands its routes here: the configuration file,
//! `hdvrf ctl route`, subscriber sessions and BGP. For each (service,
//! table, prefix) the manager keeps every source's route, installs the one
//! the precedence table picks, and computes the table ops that make the
//! forwarding tables agree ([`Rib::take_ops`]). Nothing else writes routes.
//!
//! Precedence, decided here and nowhere else (the first present wins):
//!
//! | source    | why it wins over those below it                               |
//! |-----------|---------------------------------------------------------------|
//! | `session` | the address server gave this address to this client now: its host route is the truth while the lease lives |
//! | `ctl`     | the operator's change at run time, until a reload puts the file back |
//! | `file`    | the configuration's static routes                             |
//! | `bgp`     | learnt from a neighbour: used where nothing local says otherwise |
//!
//! Ids are reference counted: a route holds its next hop or group, a group
//! holds its members, and whoever made a next hop (the file, a session)
//! holds it until it lets go ([`Rib::release_next_hop`]). A next hop or
//! group nobody holds is freed (a next hop is retired in the tables: it
//! leads nowhere) and its id reused, so ids stay as many as what is in
//! use, whatever the churn. BGP's next hops, one per (via next hop,
//! label), are made and freed here as routes need them.
//!
//! What the tables refuse is not installed: the writer feeds the refused
//! ops back ([`Rib::rejected`]); the route is marked with the reason and
//! counted, and [`Rib::installed`] does not report it, so nothing is shown
//! as installed or advertised that the tables do not hold.

use std::collections::HashMap;

use dataplane::tables::{
    is_group, Group, NextHop, RouteTable, TableOp, Tables, DISCARD, GROUP_BIT, MAX_PATHS,
    UNRESOLVED_MAC,
};
use dataplane::wire::mpls::label::IMPLICIT_NULL;

/// Where a route comes from, in order of precedence (see the module
/// documentation): the smallest present wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    Session = 0,
    Ctl = 1,
    File = 2,
    Bgp = 3,
}

/// Every source, in order of precedence.
pub const SOURCES: [Source; 4] = [Source::Session, Source::Ctl, Source::File, Source::Bgp];

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Session => "session",
            Source::Ctl => "ctl",
            Source::File => "file",
            Source::Bgp => "bgp",
        }
    }
}

/// A route's place: (service, table, prefix, length).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteKey {
    pub service: u16,
    pub table: RouteTable,
    pub prefix: u32,
    pub len: u8,
}

/// What a source's route leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A next hop its maker holds (the file's, a session's).
    NextHop(u32),
    /// A null route ([`DISCARD`]).
    Discard,
    /// BGP's paths: each through a `via` next hop with its label pushed
    /// under the via's transport label; several share the route as an
    /// ECMP group (at most [`MAX_PATHS`] are used).
    Labelled(Vec<(u32, u32)>),
}

/// One source's route.
#[derive(Clone, Debug)]
struct Entry {
    target: Target,
    /// The next hop, group or [`DISCARD`] it leads to, held by it. BGP's
    /// paths are made into next hops (and groups) only while they win,
    /// so a shadowed BGP route costs no id.
    id: Option<u32>,
}

/// Every source's route for one key, and what the tables hold.
#[derive(Clone, Debug, Default)]
struct Route {
    /// Per source, by precedence index.
    by: [Option<Entry>; 4],
    /// What the last op sent for this key installed: `None` after a
    /// delete, or when the tables refused the add.
    installed: Option<u32>,
    /// Why the tables refused the last add, while it stays refused.
    rejected: Option<Box<str>>,
}

impl Route {
    /// The source whose route the tables should hold, and what it leads
    /// to: the first with a next hop made (BGP's paths may have none left
    /// to go through), else the first at all.
    fn winner(&self) -> Option<(Source, Option<u32>)> {
        let mut first = None;
        for (&s, e) in SOURCES.iter().zip(&self.by) {
            let Some(e) = e else { continue };
            if e.id.is_some() {
                return Some((s, e.id));
            }
            first = first.or(Some((s, None)));
        }
        first
    }
}

#[derive(Clone, Debug)]
struct Slot {
    next_hop: NextHop,
    refs: u32,
    /// BGP's: made for (via, label).
    derived: Option<(u32, u32)>,
}

#[derive(Clone, Debug, Default)]
struct GroupSlot {
    members: Vec<u32>,
    refs: u32,
}

/// Counters of the RIB manager, for `show` and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RibStats {
    /// Ops the tables refused, ever.
    pub rejected_ops: u64,
    /// Next hops and groups freed, ever.
    pub next_hops_freed: u64,
    pub groups_freed: u64,
}

/// A next hop that leads nowhere: what a freed id holds in the tables.
pub fn retired_next_hop() -> NextHop {
    NextHop {
        port: u16::MAX,
        vlan: 0,
        dst_mac: UNRESOLVED_MAC,
        labels: [0; 2],
        n_labels: 0,
    }
}

/// `base` with `label` pushed under its transport label (its first one).
///
/// A VPN label of 3, Implicit NULL, is a request to push no label at
/// all (RFC 3032 section 2.1: it is signalled, never sent; a peer that
/// sets next-hop-self may advertise it for every route): the packet goes
/// out under the transport label only. A label of 0, IPv4 Explicit NULL,
/// is a real label and is pushed as it is (the peer pops it and routes
/// the packet as IPv4).
pub fn labelled(base: &NextHop, label: u32) -> NextHop {
    let mut nh = *base;
    if label == IMPLICIT_NULL {
        nh.labels = [base.labels[0], 0];
        nh.n_labels = base.n_labels.min(1);
    } else if base.n_labels >= 1 {
        nh.labels = [base.labels[0], label];
        nh.n_labels = 2;
    } else {
        nh.labels = [label, 0];
        nh.n_labels = 1;
    }
    nh
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Rib {
    routes: HashMap<RouteKey, Route>,
    /// Next hops by id; as many as the tables have.
    slots: Vec<Slot>,
    free: Vec<u32>,
    derived: HashMap<(u32, u32), u32>,
    /// Groups by index (id without [`GROUP_BIT`]); as many as the tables
    /// have.
    groups: Vec<GroupSlot>,
    group_free: Vec<u32>,
    group_ids: HashMap<Vec<u32>, u32>,
    ops: Vec<TableOp>,
    /// Keys whose route the tables refused, for `show` without a walk.
    refused: usize,
    pub stats: RibStats,
}

impl Rib {
    /// The manager of tables built from the configuration: their next
    /// hops are the file's (held by it), their routes the file's.
    pub fn from_tables(t: &Tables) -> Rib {
        let mut rib = Rib {
            slots: t
                .next_hops()
                .iter()
                .map(|&next_hop| Slot {
                    next_hop,
                    refs: 1,
                    derived: None,
                })
                .collect(),
            groups: t
                .groups()
                .iter()
                .map(|g| GroupSlot {
                    members: g.members().to_vec(),
                    refs: 1,
                })
                .collect(),
            ..Rib::default()
        };
        for (service, s) in t.services.iter().enumerate() {
            for table in [
                RouteTable::Upstream,
                RouteTable::Downstream,
                RouteTable::Hub,
            ] {
                for (prefix, len, id) in s.table(table).routes() {
                    let key = RouteKey {
                        service: service as u16,
                        table,
                        prefix,
                        len,
                    };
                    rib.hold(id);
                    let r = rib.routes.entry(key).or_default();
                    let target = if id == DISCARD {
                        Target::Discard
                    } else {
                        Target::NextHop(id)
                    };
                    r.by[Source::File as usize] = Some(Entry {
                        target,
                        id: Some(id),
                    });
                    r.installed = Some(id);
                }
            }
        }
        rib
    }

    /// Makes a next hop; the caller holds it until
    /// [`Rib::release_next_hop`].
    pub fn add_next_hop(&mut self, next_hop: NextHop) -> u32 {
        let id = self.new_slot(next_hop, None);
        self.slots[id as usize].refs = 1;
        id
    }

    /// Takes note of next hop `id` that a reload appended itself (its op
    /// is in the reload's batch): the file holds it.
    pub fn claim_next_hop(&mut self, id: u32, next_hop: NextHop) {
        let i = id as usize;
        if i >= self.slots.len() {
            self.slots.resize(
                i + 1,
                Slot {
                    next_hop: retired_next_hop(),
                    refs: 0,
                    derived: None,
                },
            );
        }
        self.free.retain(|&f| f != id);
        self.slots[i] = Slot {
            next_hop,
            refs: self.slots[i].refs.max(1),
            derived: None,
        };
    }

    /// Lets go of a next hop made with [`Rib::add_next_hop`] (or the
    /// file's, when a reload removes it): freed once no route holds it.
    pub fn release_next_hop(&mut self, id: u32) {
        self.drop_ref(id);
    }

    /// Changes next hop `id` (a session's client moved): its op, and BGP's
    /// next hops made from it follow.
    pub fn update_next_hop(&mut self, id: u32, next_hop: NextHop) {
        if (id as usize) < self.slots.len() {
            self.ops.push(TableOp::SetNextHop { id, next_hop });
            self.next_hop_changed(id, next_hop);
        }
    }

    /// Next hop `id` changed (a reload, or ARP through
    /// [`Rib::set_neighbor`]): BGP's next hops made from it follow.
    pub fn next_hop_changed(&mut self, id: u32, next_hop: NextHop) {
        let Some(s) = self.slots.get_mut(id as usize) else {
            return;
        };
        s.next_hop = next_hop;
        self.follow(id);
    }

    /// ARP learnt (or forgot) next hop `id`'s MAC: the op for it, and for
    /// each of BGP's next hops made from it.
    pub fn set_neighbor(&mut self, id: u32, mac: [u8; 6]) {
        let Some(s) = self.slots.get_mut(id as usize) else {
            return;
        };
        s.next_hop.dst_mac = mac;
        self.ops.push(TableOp::SetNeighbor { next_hop: id, mac });
        let follow: Vec<u32> = self
            .derived
            .iter()
            .filter(|((via, _), _)| *via == id)
            .map(|(_, &d)| d)
            .collect();
        for d in follow {
            self.slots[d as usize].next_hop.dst_mac = mac;
            self.ops.push(TableOp::SetNeighbor { next_hop: d, mac });
        }
    }

    /// BGP's next hops made from `via` take its new value.
    fn follow(&mut self, via: u32) {
        let base = self.slots[via as usize].next_hop;
        let mut follow: Vec<(u32, u32)> = self
            .derived
            .iter()
            .filter(|((v, _), _)| *v == via)
            .map(|(&(_, label), &d)| (d, label))
            .collect();
        follow.sort_unstable();
        for (d, label) in follow {
            let next_hop = labelled(&base, label);
            self.slots[d as usize].next_hop = next_hop;
            self.ops.push(TableOp::SetNextHop { id: d, next_hop });
        }
    }

    /// Sets `source`'s route for `key`. Returns false (and changes
    /// nothing) when the target cannot be made: an unknown next hop, or
    /// no path through a known via.
    pub fn set(&mut self, source: Source, key: RouteKey, target: &Target) -> bool {
        let id = match target {
            Target::Discard => Some(DISCARD),
            Target::NextHop(id) => {
                match self.slots.get_mut(*id as usize).filter(|s| s.refs > 0) {
                    Some(s) => s.refs += 1,
                    None => return false,
                }
                Some(*id)
            }
            Target::Labelled(paths) => {
                if !paths.iter().any(|&(via, _)| self.is_via(via)) {
                    return false;
                }
                None
            }
        };
        let r = self.routes.entry(key).or_default();
        let old = r.by[source as usize].replace(Entry {
            target: target.clone(),
            id,
        });
        // The old one goes after the new one is settled: what they share
        // (BGP's next hops) stays.
        self.settle(key);
        if let Some(id) = old.and_then(|e| e.id) {
            self.drop_ref(id);
        }
        true
    }

    /// Takes `source`'s route for `key` away; false if it had none.
    pub fn remove(&mut self, source: Source, key: RouteKey) -> bool {
        let Some(old) = self
            .routes
            .get_mut(&key)
            .and_then(|r| r.by[source as usize].take())
        else {
            return false;
        };
        self.settle(key);
        if let Some(id) = old.id {
            self.drop_ref(id);
        }
        true
    }

    /// Takes away every route of `source` (a reload drops `ctl`'s).
    /// Returns how many went.
    pub fn clear_source(&mut self, source: Source) -> usize {
        let keys: Vec<RouteKey> = self
            .routes
            .iter()
            .filter(|(_, r)| r.by[source as usize].is_some())
            .map(|(k, _)| *k)
            .collect();
        for &k in &keys {
            self.remove(source, k);
        }
        keys.len()
    }

    /// `source`'s route for `key`: the next hop, group or [`DISCARD`] it
    /// leads to.
    pub fn get(&self, source: Source, key: &RouteKey) -> Option<u32> {
        self.routes.get(key)?.by[source as usize].as_ref()?.id
    }

    /// Whether `source` has a route for `key` (made into a next hop or
    /// not).
    pub fn has(&self, source: Source, key: &RouteKey) -> bool {
        self.routes
            .get(key)
            .is_some_and(|r| r.by[source as usize].is_some())
    }

    /// Every route of `source`, with its target.
    pub fn routes_of(&self, source: Source) -> impl Iterator<Item = (RouteKey, &Target)> + '_ {
        self.routes
            .iter()
            .filter_map(move |(k, r)| r.by[source as usize].as_ref().map(|e| (*k, &e.target)))
    }

    /// What the tables hold for `key`, and whose it is.
    pub fn installed(&self, key: &RouteKey) -> Option<(Source, u32)> {
        let r = self.routes.get(key)?;
        let (s, id) = r.winner()?;
        (id.is_some() && r.installed == id).then_some((s, id?))
    }

    /// The source whose route the precedence picks for `key` (installed
    /// or refused).
    pub fn winner(&self, key: &RouteKey) -> Option<Source> {
        self.routes.get(key)?.winner().map(|(s, _)| s)
    }

    /// Why the tables refused `key`'s route, while they do.
    pub fn refused(&self, key: &RouteKey) -> Option<&str> {
        self.routes.get(key)?.rejected.as_deref()
    }

    /// Routes the tables refused and still do not hold.
    pub fn refused_count(&self) -> usize {
        self.refused
    }

    /// The ops that make the tables agree with what changed since the
    /// last call, in order.
    pub fn take_ops(&mut self) -> Vec<TableOp> {
        std::mem::take(&mut self.ops)
    }

    /// Ops a commit did not publish: they go first in the next.
    pub fn requeue(&mut self, mut ops: Vec<TableOp>) {
        ops.append(&mut self.ops);
        self.ops = ops;
    }

    /// How many ops are waiting for [`Rib::take_ops`].
    pub fn pending_ops(&self) -> usize {
        self.ops.len()
    }

    /// Whether ops are waiting for [`Rib::take_ops`].
    pub fn has_ops(&self) -> bool {
        !self.ops.is_empty()
    }

    /// The ops of the last commit that the tables refused, and why: their
    /// routes are not installed.
    pub fn rejected(&mut self, rejected: &[(TableOp, String)]) {
        for (op, why) in rejected {
            self.stats.rejected_ops += 1;
            let key = match *op {
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
                } => RouteKey {
                    service,
                    table,
                    prefix,
                    len,
                },
                _ => continue,
            };
            let Some(r) = self.routes.get_mut(&key) else {
                continue;
            };
            // A refused add changed nothing: the route is not there (the
            // manager only ever names ids it owns, so a refused
            // replacement of a present route does not happen).
            r.installed = None;
            if matches!(op, TableOp::AddRoute { .. }) {
                if r.rejected.is_none() {
                    self.refused += 1;
                }
                r.rejected = Some(why.as_str().into());
            }
        }
    }

    /// Next hops in use (held by a route, a group or their maker).
    pub fn next_hops_in_use(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// ECMP groups in use.
    pub fn groups_in_use(&self) -> usize {
        self.groups.len() - self.group_free.len()
    }

    /// Routes known, from every source (one per key).
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The (via, label) BGP's next hop `id` was made for.
    pub fn derived_of(&self, id: u32) -> Option<(u32, u32)> {
        self.slots.get(id as usize)?.derived
    }

    /// Next hop ids there are (in use or free): the tables have as many.
    pub fn next_hop_count(&self) -> usize {
        self.slots.len()
    }

    /// Whether next hop `id` is in use.
    pub fn holds(&self, id: u32) -> bool {
        self.slots.get(id as usize).is_some_and(|s| s.refs > 0)
    }

    /// Next hop `id` as the manager knows it.
    pub fn next_hop(&self, id: u32) -> Option<&NextHop> {
        self.slots.get(id as usize).map(|s| &s.next_hop)
    }

    /// Whether `via` can carry BGP's paths: a next hop in use that is
    /// not itself one of BGP's.
    fn is_via(&self, via: u32) -> bool {
        self.slots
            .get(via as usize)
            .is_some_and(|s| s.refs > 0 && s.derived.is_none())
    }

    /// BGP's paths as a next hop (or a group of them), held once for the
    /// caller; `None` when no via is known any more.
    fn make(&mut self, paths: &[(u32, u32)]) -> Option<u32> {
        let mut members = Vec::with_capacity(paths.len().min(MAX_PATHS));
        for &(via, label) in paths {
            if members.len() == MAX_PATHS {
                break;
            }
            let Some(id) = self.derive(via, label) else {
                continue;
            };
            if members.contains(&id) {
                self.drop_ref(id);
            } else {
                members.push(id);
            }
        }
        match members[..] {
            [] => None,
            [one] => Some(one),
            _ => Some(self.group(members)),
        }
    }

    /// BGP's next hop for (via, label), held once for the caller.
    fn derive(&mut self, via: u32, label: u32) -> Option<u32> {
        if let Some(&id) = self.derived.get(&(via, label)) {
            self.slots[id as usize].refs += 1;
            return Some(id);
        }
        if !self.is_via(via) {
            return None;
        }
        let next_hop = labelled(&self.slots[via as usize].next_hop, label);
        let id = self.new_slot(next_hop, Some((via, label)));
        self.slots[id as usize].refs = 1;
        self.derived.insert((via, label), id);
        Some(id)
    }

    /// The group of `members` (each held once by the caller, and that
    /// hold passes to the group), held once for the caller.
    fn group(&mut self, mut members: Vec<u32>) -> u32 {
        members.sort_unstable();
        if let Some(&i) = self.group_ids.get(&members) {
            // The group already holds its members.
            for &m in &members {
                self.drop_ref(m);
            }
            self.groups[i as usize].refs += 1;
            return GROUP_BIT | i;
        }
        let group = Group::of(&members).expect("2 to MAX_PATHS members");
        let i = match self.group_free.pop() {
            Some(i) => i,
            None => {
                self.groups.push(GroupSlot::default());
                self.groups.len() as u32 - 1
            }
        };
        self.groups[i as usize] = GroupSlot {
            members: members.clone(),
            refs: 1,
        };
        self.group_ids.insert(members, i);
        self.ops.push(TableOp::SetGroup {
            id: GROUP_BIT | i,
            group,
        });
        GROUP_BIT | i
    }

    fn new_slot(&mut self, next_hop: NextHop, derived: Option<(u32, u32)>) -> u32 {
        let slot = Slot {
            next_hop,
            refs: 0,
            derived,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
                id
            }
            None => {
                self.slots.push(slot);
                self.slots.len() as u32 - 1
            }
        };
        self.ops.push(TableOp::SetNextHop { id, next_hop });
        id
    }

    /// One more hold on a next hop or group (not [`DISCARD`]).
    fn hold(&mut self, id: u32) {
        if id == DISCARD {
            return;
        }
        if is_group(id) {
            if let Some(g) = self.groups.get_mut((id & !GROUP_BIT) as usize) {
                g.refs += 1;
            }
        } else if let Some(s) = self.slots.get_mut(id as usize) {
            s.refs += 1;
        }
    }

    /// One hold less; what nobody holds is freed.
    fn drop_ref(&mut self, id: u32) {
        if id == DISCARD {
            return;
        }
        if is_group(id) {
            let i = id & !GROUP_BIT;
            let Some(g) = self.groups.get_mut(i as usize) else {
                return;
            };
            g.refs = g.refs.saturating_sub(1);
            if g.refs > 0 {
                return;
            }
            let members = std::mem::take(&mut g.members);
            self.group_ids.remove(&members);
            self.group_free.push(i);
            self.stats.groups_freed += 1;
            for m in members {
                self.drop_ref(m);
            }
            return;
        }
        let Some(s) = self.slots.get_mut(id as usize) else {
            return;
        };
        if s.refs == 0 {
            return;
        }
        s.refs -= 1;
        if s.refs > 0 {
            return;
        }
        if let Some(k) = s.derived.take() {
            self.derived.remove(&k);
        }
        s.next_hop = retired_next_hop();
        self.free.push(id);
        self.stats.next_hops_freed += 1;
        self.ops.push(TableOp::SetNextHop {
            id,
            next_hop: retired_next_hop(),
        });
    }

    /// Makes the tables' route for `key` the winner's: BGP's paths are
    /// made into a next hop when they win and let go when they lose.
    fn settle(&mut self, key: RouteKey) {
        let Some(mut r) = self.routes.remove(&key) else {
            return;
        };
        let mut want = None;
        let mut lost = Vec::new();
        for e in r.by.iter_mut().flatten() {
            if want.is_some() {
                // Shadowed: BGP's next hops go (others keep theirs).
                if let (Target::Labelled(_), Some(id)) = (&e.target, e.id) {
                    e.id = None;
                    lost.push(id);
                }
                continue;
            }
            if e.id.is_none() {
                if let Target::Labelled(paths) = &e.target {
                    e.id = self.make(paths);
                }
            }
            want = e.id;
        }
        let RouteKey {
            service,
            table,
            prefix,
            len,
        } = key;
        match want {
            Some(next_hop) if r.installed != Some(next_hop) => {
                self.ops.push(TableOp::AddRoute {
                    service,
                    table,
                    prefix,
                    len,
                    next_hop,
                });
                r.installed = Some(next_hop);
                if r.rejected.take().is_some() {
                    self.refused -= 1;
                }
            }
            Some(_) => {}
            None => {
                if r.installed.take().is_some() {
                    self.ops.push(TableOp::DeleteRoute {
                        service,
                        table,
                        prefix,
                        len,
                    });
                }
                if r.rejected.take().is_some() {
                    self.refused -= 1;
                }
            }
        }
        if r.by.iter().any(Option::is_some) {
            self.routes.insert(key, r);
        }
        for id in lost {
            self.drop_ref(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::tables::{
        LabelTable, PortInfo, PortRole, Role, Service, TtlMode, DEFAULT_TABLE_MEMORY,
    };

    fn nh(port: u16, mac: u8, labels: &[u32]) -> NextHop {
        let mut l = [0; 2];
        l[..labels.len()].copy_from_slice(labels);
        NextHop {
            port,
            vlan: 0,
            dst_mac: [2, 0, 0, 0, 0, mac],
            labels: l,
            n_labels: labels.len() as u8,
        }
    }

    /// A spoke with one service, two ports, and the file's next hops
    /// `hub` (0, transport label 100) and `client` (1), and the file's
    /// default route to the hub.
    fn tables() -> Tables {
        let mut svc =
            Service::new("blue", 0x0a00_0001, TtlMode::Uniform, DEFAULT_TABLE_MEMORY).unwrap();
        svc.upstream.add(0, 0, 0).unwrap();
        Tables::new(
            Role::Spoke,
            vec![
                PortInfo::new(PortRole::Core, [2, 0, 0, 0, 1, 0]),
                PortInfo::new(PortRole::Access, [2, 0, 0, 0, 1, 1]),
            ],
            vec![svc],
            vec![nh(0, 1, &[100]), nh(1, 2, &[])],
            LabelTable::new(1000, 16),
        )
    }

    fn key(table: RouteTable, prefix: u32, len: u8) -> RouteKey {
        RouteKey {
            service: 0,
            table,
            prefix,
            len,
        }
    }

    /// Applies what the manager wants and feeds the refusals back.
    fn commit(rib: &mut Rib, t: &mut Tables) {
        let ops = rib.take_ops();
        t.apply(&ops);
        let rejected = t.rejected().to_vec();
        rib.rejected(&rejected);
    }

    /// What a lookup of `ip` in service 0's `table` finds, by value: the
    /// next hop, or a group's members' next hops, or "discard".
    fn found(t: &Tables, table: RouteTable, ip: u32) -> Vec<NextHop> {
        let id = t.services[0].table(table).lookup(ip);
        if id == dataplane::lpm::NO_ROUTE {
            return Vec::new();
        }
        if id == DISCARD {
            return vec![retired_next_hop()];
        }
        if is_group(id) {
            let g = t.groups()[(id & !GROUP_BIT) as usize];
            let mut v: Vec<NextHop> = g
                .members()
                .iter()
                .map(|&m| *t.next_hop(m).unwrap())
                .collect();
            v.sort_by_key(|n| (n.labels, n.port));
            return v;
        }
        vec![*t.next_hop(id).unwrap()]
    }

    /// A target for each source, all distinct in what they lead to.
    fn target_of(s: Source, session_nh: u32) -> Target {
        match s {
            Source::Session => Target::NextHop(session_nh),
            Source::Ctl => Target::Discard,
            Source::File => Target::NextHop(0),
            Source::Bgp => Target::Labelled(vec![(0, 3001)]),
        }
    }

    #[test]
    fn precedence_holds_for_every_pair_of_sources_in_both_orders() {
        let host = key(RouteTable::Downstream, 0x0a00_0064, 32);
        for (i, &hi) in SOURCES.iter().enumerate() {
            for &lo in &SOURCES[i + 1..] {
                for hi_first in [true, false] {
                    let mut t = tables();
                    let mut rib = Rib::from_tables(&t);
                    let client = rib.add_next_hop(nh(1, 9, &[]));
                    let order = if hi_first { [hi, lo] } else { [lo, hi] };
                    for s in order {
                        assert!(rib.set(s, host, &target_of(s, client)));
                    }
                    commit(&mut rib, &mut t);
                    let want_hi = found_for(&t, hi, client);
                    assert_eq!(
                        rib.installed(&host).map(|(s, _)| s),
                        Some(hi),
                        "{hi:?} over {lo:?}, {hi:?} first: {hi_first}"
                    );
                    assert_eq!(found(&t, RouteTable::Downstream, 0x0a00_0064), want_hi);
                    // The loser going changes nothing in the tables.
                    assert!(rib.remove(lo, host));
                    let ops = rib.take_ops();
                    assert!(
                        !ops.iter().any(|op| matches!(
                            op,
                            TableOp::AddRoute { .. } | TableOp::DeleteRoute { .. }
                        )),
                        "{lo:?} under {hi:?} went: {ops:?}"
                    );
                    t.apply(&ops);
                    assert_eq!(found(&t, RouteTable::Downstream, 0x0a00_0064), want_hi);
                    // Put back, then the winner goes: the other takes over.
                    assert!(rib.set(lo, host, &target_of(lo, client)));
                    assert!(rib.remove(hi, host));
                    commit(&mut rib, &mut t);
                    assert_eq!(rib.installed(&host).map(|(s, _)| s), Some(lo));
                    assert_eq!(
                        found(&t, RouteTable::Downstream, 0x0a00_0064),
                        found_for(&t, lo, client)
                    );
                    // Both gone: no route, and only the file's and the
                    // session's own next hops are left.
                    assert!(rib.remove(lo, host));
                    commit(&mut rib, &mut t);
                    assert!(found(&t, RouteTable::Downstream, 0x0a00_0064).is_empty());
                    assert_eq!((rib.next_hops_in_use(), rib.groups_in_use()), (3, 0));
                    assert!(rib.installed(&host).is_none());
                }
            }
        }
    }

    /// What `s`'s target leads to, by value.
    fn found_for(t: &Tables, s: Source, client: u32) -> Vec<NextHop> {
        match s {
            Source::Session => vec![*t.next_hop(client).unwrap()],
            Source::Ctl => vec![retired_next_hop()],
            Source::File => vec![*t.next_hop(0).unwrap()],
            Source::Bgp => vec![labelled(t.next_hop(0).unwrap(), 3001)],
        }
    }

    #[test]
    fn bgp_next_hops_and_groups_are_shared_freed_and_reused() {
        let mut t = tables();
        let mut rib = Rib::from_tables(&t);
        let before = (rib.next_hops_in_use(), rib.groups_in_use());
        // 1,000 prefixes, each with its own label, then two paths each.
        for round in 0..3u32 {
            for i in 0..1000u32 {
                let k = key(RouteTable::Upstream, 0x0b00_0000 | i << 8, 24);
                let label = 5000 + i + round;
                let paths = if round == 2 {
                    vec![(0, label), (1, label)]
                } else {
                    vec![(0, label)]
                };
                assert!(rib.set(Source::Bgp, k, &Target::Labelled(paths)));
            }
            commit(&mut rib, &mut t);
            assert!(t.rejected().is_empty(), "{:?}", &t.rejected()[..1]);
            let groups = if round == 2 { 1000 } else { 0 };
            let per = if round == 2 { 2 } else { 1 };
            assert_eq!(rib.next_hops_in_use(), before.0 + 1000 * per);
            assert_eq!(rib.groups_in_use(), groups);
        }
        let high = t.next_hops().len();
        for i in 0..1000u32 {
            assert!(rib.remove(
                Source::Bgp,
                key(RouteTable::Upstream, 0x0b00_0000 | i << 8, 24)
            ));
        }
        commit(&mut rib, &mut t);
        assert_eq!((rib.next_hops_in_use(), rib.groups_in_use()), before);
        assert_eq!(t.services[0].upstream.len(), 1, "the default route stays");
        // Reused, not appended.
        for i in 0..10u32 {
            rib.set(
                Source::Bgp,
                key(RouteTable::Upstream, 0x0c00_0000 | i << 8, 24),
                &Target::Labelled(vec![(0, 7000 + i)]),
            );
        }
        commit(&mut rib, &mut t);
        assert_eq!(t.next_hops().len(), high);
        // Two routes with the same paths share one next hop.
        let a = key(RouteTable::Upstream, 0x0d00_0000, 16);
        let b = key(RouteTable::Upstream, 0x0e00_0000, 16);
        let n = rib.next_hops_in_use();
        rib.set(Source::Bgp, a, &Target::Labelled(vec![(0, 42)]));
        rib.set(Source::Bgp, b, &Target::Labelled(vec![(0, 42)]));
        assert_eq!(rib.next_hops_in_use(), n + 1);
        assert_eq!(rib.get(Source::Bgp, &a), rib.get(Source::Bgp, &b));
        // Shadowed by the file's default route, BGP's paths make no next
        // hop; when the file lets go, they do, and take the route.
        let default = key(RouteTable::Upstream, 0, 0);
        let n = rib.next_hops_in_use();
        commit(&mut rib, &mut t);
        assert!(rib.set(Source::Bgp, default, &Target::Labelled(vec![(0, 77)])));
        assert!(rib.take_ops().is_empty());
        assert_eq!(rib.next_hops_in_use(), n);
        assert!(rib.remove(Source::File, default));
        let ops = rib.take_ops();
        assert!(
            matches!(
                ops[..],
                [TableOp::SetNextHop { .. }, TableOp::AddRoute { len: 0, .. }]
            ),
            "{ops:?}"
        );
        assert_eq!(rib.next_hops_in_use(), n + 1);
        assert_eq!(rib.installed(&default).map(|(s, _)| s), Some(Source::Bgp));
        // Back under a file route, it lets its next hop go.
        assert!(rib.set(Source::File, default, &Target::NextHop(0)));
        assert_eq!(rib.next_hops_in_use(), n);
        // An unknown via makes nothing.
        assert!(!rib.set(Source::Bgp, a, &Target::Labelled(vec![(99_999, 1)])));
        // Nor does one of BGP's own next hops as a via.
        let d = rib.get(Source::Bgp, &b).unwrap();
        assert!(!rib.set(Source::Bgp, a, &Target::Labelled(vec![(d, 1)])));
        assert!(!rib.set(Source::Bgp, a, &Target::NextHop(99_999)));
    }

    /// RFC 3032's reserved labels from a peer: Implicit NULL (3) adds no
    /// label under the transport label, Explicit NULL (0) is pushed.
    #[test]
    fn implicit_null_pushes_no_vpn_label_and_explicit_null_is_pushed() {
        let via = nh(1, 5, &[200]);
        assert_eq!(labelled(&via, 3001).labels(), [200, 3001]);
        assert_eq!(labelled(&via, 3).labels(), [200]);
        assert_eq!(labelled(&via, 0).labels(), [200, 0]);
        // A via of two labels keeps its transport label only, as always.
        assert_eq!(labelled(&nh(1, 5, &[200, 300]), 3).labels(), [200]);
        // A via without labels (a directly connected peer): nothing at all.
        assert_eq!(labelled(&nh(1, 5, &[]), 3).labels(), [] as [u32; 0]);
        assert_eq!(labelled(&nh(1, 5, &[]), 0).labels(), [0]);
    }

    #[test]
    fn arp_reaches_bgp_next_hops_made_from_the_via() {
        let mut t = tables();
        let mut rib = Rib::from_tables(&t);
        let k = key(RouteTable::Upstream, 0x0b00_0000, 8);
        rib.set(Source::Bgp, k, &Target::Labelled(vec![(0, 3001)]));
        commit(&mut rib, &mut t);
        let mac = [2, 0, 0, 0, 0, 0x77];
        rib.set_neighbor(0, mac);
        commit(&mut rib, &mut t);
        assert_eq!(
            found(&t, RouteTable::Upstream, 0x0b01_0203)[0].dst_mac,
            mac,
            "the derived next hop follows its via"
        );
        let mut moved = nh(1, 5, &[200]);
        moved.dst_mac = mac;
        rib.next_hop_changed(0, moved);
        commit(&mut rib, &mut t);
        assert_eq!(
            found(&t, RouteTable::Upstream, 0x0b01_0203),
            vec![labelled(&moved, 3001)]
        );
    }

    #[test]
    fn a_refused_route_is_not_installed_counted_and_tried_again() {
        let mut t = tables();
        let mut rib = Rib::from_tables(&t);
        // Service 7 does not exist: the tables refuse the add.
        let k = RouteKey {
            service: 7,
            table: RouteTable::Upstream,
            prefix: 0x0b00_0000,
            len: 8,
        };
        rib.set(Source::File, k, &Target::NextHop(0));
        commit(&mut rib, &mut t);
        assert_eq!(rib.installed(&k), None);
        assert_eq!(rib.winner(&k), Some(Source::File));
        assert!(rib.refused(&k).unwrap().contains("no service 7"));
        assert_eq!((rib.refused_count(), rib.stats.rejected_ops), (1, 1));
        // A later change tries again; removing it sends no delete for a
        // route the tables never had.
        rib.set(Source::Ctl, k, &Target::Discard);
        assert!(matches!(rib.take_ops()[..], [TableOp::AddRoute { .. }]));
        assert_eq!(rib.refused_count(), 0);
        rib.rejected(&[(
            TableOp::AddRoute {
                service: 7,
                table: RouteTable::Upstream,
                prefix: 0x0b00_0000,
                len: 8,
                next_hop: DISCARD,
            },
            "no service 7".into(),
        )]);
        // The file's comes back into play, and is tried again.
        rib.remove(Source::Ctl, k);
        let ops = rib.take_ops();
        assert!(
            matches!(ops[..], [TableOp::AddRoute { next_hop: 0, .. }]),
            "{ops:?}"
        );
        rib.rejected(&[(ops[0], "no service 7".into())]);
        rib.remove(Source::File, k);
        assert!(rib.take_ops().is_empty(), "no delete of what is not there");
        assert_eq!((rib.refused_count(), rib.len()), (0, 1), "the default");
    }

    #[derive(Clone, Debug)]
    enum Step {
        Set(Source, u8, u8),
        Remove(Source, u8),
        SessionUp(u8),
        SessionDown(u8),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        let source = prop_oneof![
            Just(Source::Session),
            Just(Source::Ctl),
            Just(Source::File),
            Just(Source::Bgp)
        ];
        prop_oneof![
            (source.clone(), 0u8..6, 0u8..8).prop_map(|(s, k, t)| Step::Set(s, k, t)),
            (source, 0u8..6).prop_map(|(s, k)| Step::Remove(s, k)),
            (0u8..4).prop_map(Step::SessionUp),
            (0u8..4).prop_map(Step::SessionDown),
        ]
    }

    /// Six keys, nested (so deletes uncover shorter prefixes) in two
    /// tables.
    fn key_of(k: u8) -> RouteKey {
        let (table, prefix, len) = match k {
            0 => (RouteTable::Upstream, 0x0a00_0000, 8),
            1 => (RouteTable::Upstream, 0x0a01_0000, 16),
            2 => (RouteTable::Upstream, 0x0a01_0100, 24),
            3 => (RouteTable::Upstream, 0x0a01_0105, 32),
            4 => (RouteTable::Downstream, 0x0a00_0064, 32),
            _ => (RouteTable::Downstream, 0x0a00_0000, 24),
        };
        key(table, prefix, len)
    }

    /// A target: the file's next hops, a session's, discard, or BGP
    /// paths (one or two, a few labels, through both file next hops).
    fn target_for(t: u8, sessions: &HashMap<u8, u32>) -> Target {
        match t {
            0 => Target::NextHop(0),
            1 => Target::NextHop(1),
            2 => Target::Discard,
            3 => sessions
                .values()
                .next()
                .map_or(Target::NextHop(0), |&id| Target::NextHop(id)),
            4 => Target::Labelled(vec![(0, 3001)]),
            5 => Target::Labelled(vec![(0, 3002)]),
            6 => Target::Labelled(vec![(0, 3001), (1, 3001)]),
            _ => Target::Labelled(vec![(1, 3002), (0, 3001), (0, 3001)]),
        }
    }

    proptest::proptest! {
        /// Random interleavings of every source's adds and removes and
        /// sessions' next hops coming and going: the tables the manager's
        /// ops build equal the tables a fresh manager builds from the
        /// final routes alone, and when everything is gone the ids in use
        /// are back where they started.
        #[test]
        fn any_interleaving_gives_the_tables_of_recomputing_from_scratch(
            steps in proptest::collection::vec(step(), 1..120)
        ) {
            let mut t = tables();
            let mut rib = Rib::from_tables(&t);
            let start = (rib.next_hops_in_use(), rib.groups_in_use());
            let mut sessions: HashMap<u8, u32> = HashMap::new();
            // The final word of each (source, key): its target.
            let mut last: HashMap<(Source, u8), Target> = HashMap::new();
            for s in steps {
                match s {
                    Step::Set(src, k, tg) => {
                        let target = target_for(tg, &sessions);
                        if rib.set(src, key_of(k), &target) {
                            last.insert((src, k), target);
                        }
                    }
                    Step::Remove(src, k) => {
                        let had = rib.remove(src, key_of(k));
                        proptest::prop_assert_eq!(had, last.remove(&(src, k)).is_some());
                    }
                    Step::SessionUp(m) => {
                        if let std::collections::hash_map::Entry::Vacant(e) = sessions.entry(m) {
                            e.insert(rib.add_next_hop(nh(1, 0x10 + m, &[])));
                        }
                    }
                    Step::SessionDown(m) => {
                        if let Some(id) = sessions.remove(&m) {
                            // Routes to it keep it until they go.
                            rib.release_next_hop(id);
                        }
                    }
                }
                if rib.has_ops() {
                    commit(&mut rib, &mut t);
                    proptest::prop_assert!(t.rejected().is_empty(), "{:?}", t.rejected());
                }
            }
            // From scratch: the same next hops held, each source's final
            // routes set once, in one batch.
            let mut fresh_t = tables();
            let mut fresh = Rib::from_tables(&fresh_t);
            let mut ids: HashMap<u32, u32> = HashMap::new();
            let mut ordered: Vec<(u8, u32)> = sessions.iter().map(|(&m, &id)| (m, id)).collect();
            ordered.sort_unstable();
            for &(m, id) in &ordered {
                ids.insert(id, fresh.add_next_hop(nh(1, 0x10 + m, &[])));
            }
            for ((src, k), target) in &last {
                let target = match target {
                    Target::NextHop(id) if *id > 1 => match ids.get(id) {
                        Some(&n) => Target::NextHop(n),
                        // A session that went while a route still led to
                        // its next hop: the route keeps it.
                        None => {
                            let v = *rib.next_hop(*id).unwrap();
                            let n = fresh.add_next_hop(v);
                            ids.insert(*id, n);
                            Target::NextHop(n)
                        }
                    },
                    other => other.clone(),
                };
                proptest::prop_assert!(fresh.set(*src, key_of(*k), &target));
            }
            commit(&mut fresh, &mut fresh_t);
            for k in 0..6u8 {
                let key = key_of(k);
                proptest::prop_assert_eq!(
                    rib.installed(&key).map(|(s, _)| s),
                    fresh.installed(&key).map(|(s, _)| s)
                );
                for probe in [key.prefix, key.prefix | 5, key.prefix | 0xff, 0x0a01_0105, 0x0a00_0064] {
                    proptest::prop_assert_eq!(
                        found(&t, key.table, probe),
                        found(&fresh_t, key.table, probe),
                        "{:?} {:#x}", key, probe
                    );
                }
            }
            // Everything goes: ids back to the start.
            for ((src, k), _) in last {
                rib.remove(src, key_of(k));
            }
            for (_, id) in sessions {
                rib.release_next_hop(id);
            }
            commit(&mut rib, &mut t);
            proptest::prop_assert_eq!((rib.next_hops_in_use(), rib.groups_in_use()), start);
            proptest::prop_assert_eq!(t.services[0].upstream.len(), 1);
        }
    }
}
