//! The BGP speaker inside `hdvrf run`: one `control::bgp::session` task
//! per `[[bgp.neighbor]]`, and what joins them to the tables.
//!
//! - Export: a session's host route goes to every neighbour once it is
//!   published (service RD, the service's VPN label, its export targets,
//!   next hop `bgp.next_hop`), and is withdrawn before it is removed.
//! - Import: a learnt route whose targets meet a service's import targets
//!   is a candidate for that service's upstream table (spoke) or hub table
//!   (hub). Among the candidates for a prefix the best path wins (RFC 4271
//!   section 9.1.2.2: higher LOCAL_PREF, shorter AS_PATH, lower MED, lower
//!   peer router id), and goes out through the neighbour's `via` next hop
//!   with the route's own label under the transport label.
//!
//! This module computes; the control thread (`crate::mgmt`) commits the
//! table ops it returns.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use control::bgp::fsm::{Negotiated, State};
use control::bgp::session::{PeerConfig, ToSession};
use control::bgp::{VpnPath, VpnRoute, Vpnv4Update};
use control::config::Config;
use control::vpn::VpnId;
use dataplane::tables::{Group, NextHop, RouteTable, TableOp, Tables, GROUP_BIT};
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// LOCAL_PREF of a path that has none (eBGP), and of what we send iBGP.
const DEFAULT_LOCAL_PREF: u32 = 100;

/// A learnt route: (prefix, length, RD), so that every RD's copy of one
/// prefix sits together.
type RibKey = (Ipv4Addr, u8, VpnId);

/// One neighbour as the speaker knows it.
pub struct Neighbor {
    pub address: Ipv4Addr,
    pub port: u16,
    pub remote_asn: u32,
    pub passive: bool,
    /// The next hop (id, name) its routes go out through.
    pub via: Option<(u32, String)>,
    tx: UnboundedSender<ToSession>,
    /// The session's state machine, as it last reported.
    pub state: State,
    /// While Established: what was negotiated and since when.
    pub up: Option<(Negotiated, Instant)>,
    pub last_down: Option<String>,
    /// Adj-RIB-In: label and path of each route.
    pub rib_in: BTreeMap<RibKey, (u32, VpnPath)>,
    pub updates_in: u64,
    pub malformed: u64,
    /// Routes dropped as loops: our AS in the path, or our own next hop.
    pub loops_dropped: u64,
    /// Times its path was best but not installed: it has no `via`.
    pub unresolved: u64,
    pub notifications_sent: u64,
    pub notifications_received: u64,
}

impl Neighbor {
    fn ebgp(&self, local_asn: u32) -> bool {
        self.remote_asn != local_asn
    }
}

/// A service as BGP sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ServiceBgp {
    rd: Option<VpnId>,
    label: Option<u32>,
    import: Vec<VpnId>,
    export: Vec<VpnId>,
}

/// What is installed for (service, prefix, length): the paths that won
/// (neighbour, route distinguisher; the best first, then its ECMP peers)
/// and the next hop (or group) they use.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Installed {
    paths: Vec<(usize, VpnId)>,
    next_hop: u32,
}

pub struct Speaker {
    pub asn: u32,
    pub next_hop: Ipv4Addr,
    pub neighbors: Vec<Neighbor>,
    services: Vec<ServiceBgp>,
    /// The table imported routes go to: upstream (spoke) or hub.
    table: RouteTable,
    /// Routes the configuration sets: BGP does not replace them.
    statics: HashSet<(u16, u32, u8)>,
    /// The configuration's routes toward our side, advertised like
    /// sessions' (a spoke's downstream routes, a hub's hub routes).
    configured: BTreeSet<(u16, Ipv4Addr, u8)>,
    /// Next hops made for (via, label), by id.
    derived: HashMap<(u32, u32), u32>,
    /// `bgp.multipath`: how many equal best paths share a route.
    multipath: usize,
    /// ECMP groups made for sets of next hops, by group id.
    groups: HashMap<Vec<u32>, u32>,
    installed: HashMap<(u16, u32, u8), Installed>,
    /// Adj-RIB-Out (the same for every neighbour but for the path
    /// attributes each one gets): route and service.
    pub rib_out: BTreeMap<RibKey, (VpnRoute, u16)>,
}

/// The session tasks to start: each neighbour's configuration and the
/// receiving end of its command channel.
pub type Pending = Vec<(PeerConfig, UnboundedReceiver<ToSession>)>;

impl Speaker {
    /// From a validated configuration; `None` without `[bgp]`.
    pub fn from_config(c: &Config) -> Option<(Speaker, Pending)> {
        let b = c.bgp.as_ref()?.get_ref();
        let asn = *b.asn.get_ref() as u32;
        let router_id: Ipv4Addr = b.router_id.get_ref().parse().ok()?;
        let next_hop = b
            .next_hop
            .as_ref()
            .and_then(|n| n.get_ref().parse().ok())
            .unwrap_or(router_id);
        let mut neighbors = Vec::new();
        let mut pending = Vec::new();
        for n in &b.neighbors {
            let address: Ipv4Addr = n.address.get_ref().parse().ok()?;
            let port = n.port.as_ref().map_or(179, |p| *p.get_ref() as u16);
            let remote_asn = *n.remote_asn.get_ref() as u32;
            let via = n.via.as_ref().and_then(|v| {
                let id = c
                    .next_hops
                    .iter()
                    .position(|h| h.name.get_ref() == v.get_ref())?;
                Some((id as u32, v.get_ref().clone()))
            });
            let (tx, rx) = unbounded_channel();
            pending.push((
                PeerConfig {
                    peer: SocketAddr::from((address, port)),
                    listen: n
                        .passive
                        .then(|| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))),
                    local_asn: asn,
                    router_id,
                    remote_asn,
                    hold_time: n.hold_time.as_ref().map_or(90, |h| *h.get_ref() as u16),
                },
                rx,
            ));
            neighbors.push(Neighbor {
                address,
                port,
                remote_asn,
                passive: n.passive,
                via,
                tx,
                state: State::Idle,
                up: None,
                last_down: None,
                rib_in: BTreeMap::new(),
                updates_in: 0,
                malformed: 0,
                loops_dropped: 0,
                unresolved: 0,
                notifications_sent: 0,
                notifications_received: 0,
            });
        }
        let table = if c
            .router
            .as_ref()
            .is_some_and(|r| r.get_ref().role.get_ref() == "hub")
        {
            RouteTable::Hub
        } else {
            RouteTable::Upstream
        };
        let ids: Vec<u16> = (0..c.services.len() as u16).collect();
        let (statics, configured) = config_routes(c, table, &ids);
        let mut sp = Speaker {
            asn,
            next_hop,
            neighbors,
            services: services_of(c, &ids),
            table,
            statics,
            configured: BTreeSet::new(),
            derived: HashMap::new(),
            multipath: b.multipath.as_ref().map_or(1, |m| *m.get_ref() as usize),
            groups: HashMap::new(),
            installed: HashMap::new(),
            rib_out: BTreeMap::new(),
        };
        for &(svc, prefix, len) in &configured {
            sp.advertise_route(svc, prefix, len);
        }
        sp.configured = configured;
        Some((sp, pending))
    }

    /// The path attributes neighbour `n` gets for our routes: iBGP peers
    /// LOCAL_PREF and an empty AS_PATH, eBGP peers our AS and no
    /// LOCAL_PREF (RFC 4271 sections 5.1.2 and 5.1.5).
    fn path_for(&self, n: &Neighbor, service: u16) -> VpnPath {
        let export = self
            .services
            .get(usize::from(service))
            .map(|s| s.export.clone())
            .unwrap_or_default();
        let ebgp = n.ebgp(self.asn);
        VpnPath {
            next_hop: self.next_hop,
            route_targets: export,
            local_pref: (!ebgp).then_some(DEFAULT_LOCAL_PREF),
            med: None,
            as_path: if ebgp { vec![self.asn] } else { Vec::new() },
        }
    }

    /// A session's host route, once published: to every neighbour.
    pub fn advertise(&mut self, service: u16, address: Ipv4Addr) {
        self.advertise_route(service, address, 32);
    }

    fn advertise_route(&mut self, service: u16, prefix: Ipv4Addr, len: u8) {
        let Some(s) = self.services.get(usize::from(service)) else {
            return;
        };
        let (Some(rd), Some(label)) = (s.rd, s.label) else {
            return;
        };
        let route = VpnRoute {
            rd,
            prefix,
            len,
            label,
        };
        self.rib_out.insert((prefix, len, rd), (route, service));
        for n in &self.neighbors {
            let _ =
                n.tx.send(ToSession::Advertise(vec![route], self.path_for(n, service)));
        }
    }

    /// A session's host route, before it is removed: from every
    /// neighbour. True if a neighbour is Established (and so the removal
    /// should wait until the withdrawal is on its way).
    /// The file's route for the same /32, if any, stays advertised.
    pub fn withdraw(&mut self, service: u16, address: Ipv4Addr) -> bool {
        if self.configured.contains(&(service, address, 32)) {
            return false;
        }
        self.withdraw_route(service, address, 32)
    }

    fn withdraw_route(&mut self, service: u16, prefix: Ipv4Addr, len: u8) -> bool {
        let Some(rd) = self.services.get(usize::from(service)).and_then(|s| s.rd) else {
            return false;
        };
        let Some((route, _)) = self.rib_out.remove(&(prefix, len, rd)) else {
            return false;
        };
        for n in &self.neighbors {
            let _ = n.tx.send(ToSession::Withdraw(vec![route]));
        }
        self.neighbors.iter().any(|n| n.up.is_some())
    }

    /// A reloaded configuration (`ids`: the running service id of each of
    /// its services, matched by name). What a reload may change in place
    /// reaches BGP here, and the table ops it implies are returned, to be
    /// committed after the reload's own:
    /// - a service's RD, VPN label or export targets: its routes are
    ///   withdrawn under the old ones and advertised under the new;
    /// - its import targets: every learnt prefix is selected anew;
    /// - the configuration's own routes toward our side: the new ones are
    ///   advertised, the removed ones withdrawn;
    /// - the routes it sets in the import table: BGP stops tracking a
    ///   prefix the file now sets (the reload replaced the route), and
    ///   selects anew one the file no longer sets (the reload removed it).
    ///
    /// `session_holds(service, address)`: a live session's host route,
    /// which stays advertised when a file's route for the same /32 goes.
    pub fn reload(
        &mut self,
        c: &Config,
        ids: &[u16],
        tables: &Tables,
        session_holds: impl Fn(u16, Ipv4Addr) -> bool,
    ) -> Vec<TableOp> {
        let services = services_of(c, ids);
        let mut reannounce = Vec::new();
        let mut reimport = false;
        for (svc, (old, new)) in self.services.iter().zip(&services).enumerate() {
            let svc = svc as u16;
            if (old.rd, old.label, &old.export) != (new.rd, new.label, &new.export) {
                reannounce.extend(
                    self.rib_out
                        .values()
                        .filter(|(_, s)| *s == svc)
                        .map(|(r, _)| (svc, r.prefix, r.len)),
                );
            }
            reimport |= old.import != new.import;
        }
        for &(svc, prefix, len) in &reannounce {
            self.withdraw_route(svc, prefix, len);
        }
        self.services = services;
        for &(svc, prefix, len) in &reannounce {
            self.advertise_route(svc, prefix, len);
        }

        let (statics, configured) = config_routes(c, self.table, ids);
        let before = std::mem::replace(&mut self.configured, configured.clone());
        for &(svc, prefix, len) in before.difference(&configured) {
            if !(len == 32 && session_holds(svc, prefix)) {
                self.withdraw_route(svc, prefix, len);
            }
        }
        for &(svc, prefix, len) in configured.difference(&before) {
            self.advertise_route(svc, prefix, len);
        }

        let mut keys: BTreeSet<(Ipv4Addr, u8)> = self
            .statics
            .difference(&statics)
            .map(|&(_, p, l)| (Ipv4Addr::from(p), l))
            .collect();
        for k in statics.difference(&self.statics) {
            self.installed.remove(k);
        }
        self.statics = statics;
        if reimport {
            for n in &self.neighbors {
                keys.extend(n.rib_in.keys().map(|k| (k.0, k.1)));
            }
        }
        self.reselect(&keys, tables)
    }

    /// Stops every session task.
    pub fn stop(&self) {
        for n in &self.neighbors {
            let _ = n.tx.send(ToSession::Stop);
        }
    }

    pub fn established(&mut self, i: usize, n: Negotiated, now: Instant) {
        if let Some(nb) = self.neighbors.get_mut(i) {
            nb.up = Some((n, now));
        }
    }

    /// Neighbour `i` left Established: its routes are gone, and where they
    /// were best, the next best takes over (or the route goes).
    pub fn down(&mut self, i: usize, why: String, tables: &Tables) -> Vec<TableOp> {
        let Some(nb) = self.neighbors.get_mut(i) else {
            return Vec::new();
        };
        nb.up = None;
        nb.last_down = Some(why);
        let keys: BTreeSet<(Ipv4Addr, u8)> = std::mem::take(&mut nb.rib_in)
            .keys()
            .map(|k| (k.0, k.1))
            .collect();
        self.reselect(&keys, tables)
    }

    /// An UPDATE from neighbour `i`: its RIB changes and the prefixes it
    /// touched are selected anew.
    pub fn learned(&mut self, i: usize, u: Vpnv4Update, tables: &Tables) -> Vec<TableOp> {
        let asn = self.asn;
        let own_next_hop = self.next_hop;
        let Some(nb) = self.neighbors.get_mut(i) else {
            return Vec::new();
        };
        nb.updates_in += 1;
        let mut keys = BTreeSet::new();
        for r in &u.withdrawn {
            nb.rib_in.remove(&(r.prefix, r.len, r.rd));
            keys.insert((r.prefix, r.len));
        }
        if let Some(path) = &u.path {
            // RFC 4271 section 9.1.2: a path with our AS in it is a loop;
            // our own next hop coming back is one too.
            let looped = path.as_path.contains(&asn) || path.next_hop == own_next_hop;
            for r in &u.reach {
                keys.insert((r.prefix, r.len));
                if looped {
                    nb.loops_dropped += 1;
                    nb.rib_in.remove(&(r.prefix, r.len, r.rd));
                } else {
                    nb.rib_in
                        .insert((r.prefix, r.len, r.rd), (r.label, path.clone()));
                }
            }
        }
        self.reselect(&keys, tables)
    }

    /// Best path for each service importing each prefix, and the ops that
    /// make the tables agree. With `bgp.multipath` above 1, the paths
    /// equal to the best up to MED (RFC 4271 section 9.1.2.2 steps a to
    /// c), in the order the tie-break gives, share the route as an ECMP
    /// group.
    fn reselect(&mut self, keys: &BTreeSet<(Ipv4Addr, u8)>, tables: &Tables) -> Vec<TableOp> {
        let mut ops = Vec::new();
        let mut append = tables.next_hops().len() as u32;
        let mut append_group = tables.groups().len() as u32;
        for &(prefix, len) in keys {
            let p = u32::from(prefix);
            for svc in 0..self.services.len() as u16 {
                if self.statics.contains(&(svc, p, len)) {
                    continue;
                }
                let mut cands = self.candidates(svc, prefix, len);
                cands.sort_by(|a, b| prefer(a.3, &self.neighbors[a.0], b.3, &self.neighbors[b.0]));
                let mut chosen: Vec<(usize, VpnId, u32, u32)> = Vec::new(); // neighbour, RD, via, label
                let mut no_via = None;
                if let Some(&(_, _, _, best)) = cands.first() {
                    for (k, &(i, rd, label, path)) in cands.iter().enumerate() {
                        if chosen.len() == self.multipath.max(1) {
                            break;
                        }
                        if k > 0 && !equal_cost(path, best) {
                            break;
                        }
                        match self.neighbors[i].via.as_ref() {
                            Some((via, _)) => chosen.push((i, rd, *via, label)),
                            None if k == 0 => {
                                no_via = Some(i);
                                break;
                            }
                            None => {}
                        }
                    }
                }
                if let Some(i) = no_via {
                    self.neighbors[i].unresolved += 1;
                }
                let key = (svc, p, len);
                if chosen.is_empty() {
                    if self.installed.remove(&key).is_some() {
                        ops.push(TableOp::DeleteRoute {
                            service: svc,
                            table: self.table,
                            prefix: p,
                            len,
                        });
                    }
                    continue;
                }
                let mut members = Vec::with_capacity(chosen.len());
                for &(_, _, via, label) in &chosen {
                    let id = match self.derived.get(&(via, label)) {
                        Some(&id) => id,
                        None => {
                            let Some(base) = tables.next_hops().get(via as usize) else {
                                continue;
                            };
                            let id = append;
                            append += 1;
                            ops.push(TableOp::SetNextHop {
                                id,
                                next_hop: labelled(base, label),
                            });
                            self.derived.insert((via, label), id);
                            id
                        }
                    };
                    if !members.contains(&id) {
                        members.push(id);
                    }
                }
                let nh = match members[..] {
                    [] => continue,
                    [one] => one,
                    _ => {
                        let mut set = members.clone();
                        set.sort_unstable();
                        match self.groups.get(&set) {
                            Some(&g) => g,
                            None => {
                                let Some(group) = Group::of(&set) else {
                                    continue;
                                };
                                let g = GROUP_BIT | append_group;
                                append_group += 1;
                                ops.push(TableOp::SetGroup { id: g, group });
                                self.groups.insert(set, g);
                                g
                            }
                        }
                    }
                };
                if self.installed.get(&key).map(|x| x.next_hop) != Some(nh) {
                    ops.push(TableOp::AddRoute {
                        service: svc,
                        table: self.table,
                        prefix: p,
                        len,
                        next_hop: nh,
                    });
                }
                self.installed.insert(
                    key,
                    Installed {
                        paths: chosen.iter().map(|&(i, rd, _, _)| (i, rd)).collect(),
                        next_hop: nh,
                    },
                );
            }
        }
        ops
    }

    /// Every learnt path for (prefix, len) whose targets `svc` imports:
    /// (neighbour, label, path).
    fn candidates(
        &self,
        svc: u16,
        prefix: Ipv4Addr,
        len: u8,
    ) -> Vec<(usize, VpnId, u32, &VpnPath)> {
        let Some(s) = self.services.get(usize::from(svc)) else {
            return Vec::new();
        };
        let lo = (prefix, len, VpnId::As2 { asn: 0, number: 0 });
        let hi = (
            prefix,
            len,
            VpnId::As4 {
                asn: u32::MAX,
                number: u16::MAX,
            },
        );
        let mut out = Vec::new();
        for (i, nb) in self.neighbors.iter().enumerate() {
            for ((_, _, rd), (label, path)) in nb.rib_in.range(lo..=hi) {
                if path.route_targets.iter().any(|t| s.import.contains(t)) {
                    out.push((i, *rd, *label, path));
                }
            }
        }
        out
    }

    /// A `via` next hop's MAC changed (ARP): the next hops made from it
    /// follow.
    pub fn follow_neighbor(&self, op: &TableOp) -> Vec<TableOp> {
        let TableOp::SetNeighbor { next_hop, mac } = op else {
            return Vec::new();
        };
        self.derived
            .iter()
            .filter(|((via, _), _)| via == next_hop)
            .map(|(_, &id)| TableOp::SetNeighbor {
                next_hop: id,
                mac: *mac,
            })
            .collect()
    }

    /// Names of the next hops made here, by id.
    pub fn derived_names(&self) -> Vec<(u32, String)> {
        self.derived
            .iter()
            .map(|(&(via, label), &id)| {
                let name = self
                    .neighbors
                    .iter()
                    .find_map(|n| n.via.as_ref().filter(|v| v.0 == via).map(|v| v.1.clone()))
                    .unwrap_or_else(|| format!("#{via}"));
                (id, format!("~bgp/{name}/{label}"))
            })
            .collect()
    }

    /// `show bgp neighbors`.
    pub fn show_neighbors(&self, now: Instant) -> Value {
        Value::Array(
            self.neighbors
                .iter()
                .map(|n| {
                    json!({
                        "address": n.address.to_string(),
                        "port": n.port,
                        "remote_asn": n.remote_asn,
                        "passive": n.passive,
                        "type": if n.ebgp(self.asn) { "ebgp" } else { "ibgp" },
                        "state": format!("{:?}", n.state),
                        "up_for_s": n.up.as_ref().map(|(_, t)| now.duration_since(*t).as_secs()),
                        "peer_router_id": n.up.as_ref().map(|(g, _)| g.peer_id.to_string()),
                        "hold_time": n.up.as_ref().map(|(g, _)| g.hold_time),
                        "four_octet_as": n.up.as_ref().map(|(g, _)| g.asn4),
                        "route_refresh": n.up.as_ref().map(|(g, _)| g.route_refresh),
                        "last_down": n.last_down,
                        "via": n.via.as_ref().map(|v| v.1.clone()),
                        "routes_in": n.rib_in.len(),
                        "routes_out": self.rib_out.len(),
                        "updates_in": n.updates_in,
                        "malformed_updates": n.malformed,
                        "loops_dropped": n.loops_dropped,
                        "unresolved": n.unresolved,
                        "notifications_sent": n.notifications_sent,
                        "notifications_received": n.notifications_received,
                    })
                })
                .collect(),
        )
    }

    /// `show bgp rib in|out` (both when `None`).
    pub fn show_rib(&self, which: Option<&str>, service_names: &[String]) -> Result<Value, String> {
        let route = |k: &RibKey, label: u32, path: &VpnPath| {
            json!({
                "prefix": format!("{}/{}", k.0, k.1),
                "rd": k.2.to_string(),
                "label": label,
                "next_hop": path.next_hop.to_string(),
                "route_targets": path.route_targets.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
                "local_pref": path.local_pref,
                "med": path.med,
                "as_path": path.as_path,
            })
        };
        let inbound = || {
            let mut v = Vec::new();
            for (i, n) in self.neighbors.iter().enumerate() {
                for (k, (label, path)) in &n.rib_in {
                    let mut r = route(k, *label, path);
                    r["neighbor"] = json!(n.address.to_string());
                    let p = u32::from(k.0);
                    let best: Vec<&str> = self
                        .installed
                        .iter()
                        .filter(|((_, q, l), x)| {
                            *q == p && *l == k.1 && x.paths.contains(&(i, k.2))
                        })
                        .filter_map(|((s, _, _), _)| {
                            service_names.get(usize::from(*s)).map(|s| s.as_str())
                        })
                        .collect();
                    r["best_for"] = json!(best);
                    v.push(r);
                }
            }
            Value::Array(v)
        };
        let outbound = || {
            Value::Array(
                self.rib_out
                    .iter()
                    .map(|(k, (r, svc))| {
                        let path = VpnPath {
                            next_hop: self.next_hop,
                            route_targets: self
                                .services
                                .get(usize::from(*svc))
                                .map(|s| s.export.clone())
                                .unwrap_or_default(),
                            local_pref: None,
                            med: None,
                            as_path: Vec::new(),
                        };
                        let mut v = route(k, r.label, &path);
                        v["service"] = json!(service_names.get(usize::from(*svc)));
                        v
                    })
                    .collect(),
            )
        };
        match which {
            Some("in") => Ok(inbound()),
            Some("out") => Ok(outbound()),
            None => Ok(json!({ "in": inbound(), "out": outbound() })),
            Some(other) => Err(format!("show bgp rib {other:?}: in or out")),
        }
    }
}

/// `base` with `label` pushed under its transport label (its first one).
/// Each service's BGP identity, at its running id (`ids[i]` for the
/// configuration's service `i`).
fn services_of(c: &Config, ids: &[u16]) -> Vec<ServiceBgp> {
    let targets = |v: &[toml::Spanned<String>]| -> Vec<VpnId> {
        v.iter().filter_map(|t| t.get_ref().parse().ok()).collect()
    };
    let mut out = vec![
        ServiceBgp {
            rd: None,
            label: None,
            import: Vec::new(),
            export: Vec::new(),
        };
        c.services.len()
    ];
    for (s, &id) in c.services.iter().zip(ids) {
        if let Some(slot) = out.get_mut(usize::from(id)) {
            *slot = ServiceBgp {
                rd: s
                    .route_distinguisher
                    .as_ref()
                    .and_then(|r| r.get_ref().parse().ok()),
                label: s.vpn_label.as_ref().map(|l| *l.get_ref() as u32),
                import: targets(&s.import_targets),
                export: targets(&s.export_targets),
            };
        }
    }
    out
}

/// The configuration's routes, at the services' running ids: those it
/// sets in the table BGP imports into (BGP does not replace them), and
/// those toward our side that we advertise (a spoke's downstream routes,
/// a hub's hub routes: its uplink).
#[allow(clippy::type_complexity)]
fn config_routes(
    c: &Config,
    table: RouteTable,
    ids: &[u16],
) -> (HashSet<(u16, u32, u8)>, BTreeSet<(u16, Ipv4Addr, u8)>) {
    let mut statics = HashSet::new();
    let mut configured = BTreeSet::new();
    let hub = table == RouteTable::Hub;
    for (s, &id) in c.services.iter().zip(ids) {
        let parsed = |routes: &[control::config::RouteCfg]| -> Vec<(u32, u8)> {
            routes
                .iter()
                .filter_map(|r| control::mgmt::parse_route_prefix(r.prefix.get_ref()).ok())
                .collect()
        };
        let imported = if hub { &s.hub } else { &s.upstream };
        statics.extend(parsed(imported).into_iter().map(|(p, l)| (id, p, l)));
        let own = if hub { &s.hub } else { &s.downstream };
        configured.extend(
            parsed(own)
                .into_iter()
                .map(|(p, l)| (id, Ipv4Addr::from(p), l)),
        );
    }
    (statics, configured)
}

fn labelled(base: &NextHop, label: u32) -> NextHop {
    let mut nh = *base;
    if base.n_labels >= 1 {
        nh.labels = [base.labels[0], label];
        nh.n_labels = 2;
    } else {
        nh.labels = [label, 0];
        nh.n_labels = 1;
    }
    nh
}

/// Equal for ECMP: the same LOCAL_PREF, AS_PATH length and MED.
fn equal_cost(a: &VpnPath, b: &VpnPath) -> bool {
    a.local_pref.unwrap_or(DEFAULT_LOCAL_PREF) == b.local_pref.unwrap_or(DEFAULT_LOCAL_PREF)
        && a.as_path.len() == b.as_path.len()
        && a.med.unwrap_or(0) == b.med.unwrap_or(0)
}

/// RFC 4271 section 9.1.2.2, in order: higher LOCAL_PREF, shorter
/// AS_PATH, lower MED, then lower peer router id and address. `Less`:
/// `a` (from `na`) is better than `b` (from `nb`).
fn prefer(a: &VpnPath, na: &Neighbor, b: &VpnPath, nb: &Neighbor) -> std::cmp::Ordering {
    let lp = |p: &VpnPath| p.local_pref.unwrap_or(DEFAULT_LOCAL_PREF);
    let id = |n: &Neighbor| n.up.as_ref().map(|(g, _)| g.peer_id);
    lp(b)
        .cmp(&lp(a))
        .then(a.as_path.len().cmp(&b.as_path.len()))
        .then(a.med.unwrap_or(0).cmp(&b.med.unwrap_or(0)))
        .then(id(na).cmp(&id(nb)))
        .then(na.address.cmp(&nb.address))
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::config::parse;
    use std::path::Path;

    const CONFIG: &str = r#"
[dataplane]
workers = [1]
forward_mode = "router"
[router]
role = "spoke"
label_base = 1000
label_count = 64
[[port]]
name = "access0"
device = "net_null0"
role = "access"
[[port]]
name = "core0"
device = "net_null1"
role = "core"
[[next_hop]]
name = "hub1"
port = "core0"
mac = "02:00:5e:00:02:09"
labels = [100]
[[next_hop]]
name = "hub2"
port = "core0"
mac = "02:00:5e:00:02:0a"
labels = [200]
[[service]]
name = "blue"
gateway = "10.0.0.1"
vpn_label = 1001
access = [ { port = "access0" } ]
route_distinguisher = "65000:100"
import_targets = ["65000:1"]
export_targets = ["65000:2"]
upstream = [ { prefix = "192.0.2.0/24", next_hop = "hub1" } ]
[bgp]
asn = 65000
router_id = "198.18.0.1"
[[bgp.neighbor]]
address = "198.18.0.2"
remote_asn = 65000
via = "hub1"
[[bgp.neighbor]]
address = "198.18.0.3"
remote_asn = 65000
via = "hub2"
[[bgp.neighbor]]
address = "198.18.0.4"
remote_asn = 65000
"#;

    struct T {
        sp: Speaker,
        tables: Tables,
        _pending: Pending,
    }

    fn setup() -> T {
        setup_with(CONFIG)
    }

    fn setup_with(text: &str) -> T {
        let loaded = parse(Path::new("test.toml"), text).expect("config");
        let tables =
            control::router::build_tables(&loaded, &[[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]])
                .expect("tables");
        let (sp, pending) = Speaker::from_config(&loaded.config).expect("[bgp]");
        T {
            sp,
            tables,
            _pending: pending,
        }
    }

    fn path(lp: Option<u32>, as_path: &[u32], med: Option<u32>, rt: &str) -> VpnPath {
        VpnPath {
            next_hop: "198.18.0.9".parse().unwrap(),
            route_targets: vec![rt.parse().unwrap()],
            local_pref: lp,
            med,
            as_path: as_path.to_vec(),
        }
    }

    fn update(prefix: &str, len: u8, label: u32, p: VpnPath) -> Vpnv4Update {
        Vpnv4Update {
            reach: vec![VpnRoute {
                rd: "65000:1".parse().unwrap(),
                prefix: prefix.parse().unwrap(),
                len,
                label,
            }],
            path: Some(p),
            withdrawn: Vec::new(),
            end_of_rib: false,
        }
    }

    /// Applies ops to the tables as the control thread's commit would.
    fn apply(t: &mut T, ops: &[TableOp]) {
        t.tables.apply(ops);
        assert!(t.tables.rejected().is_empty(), "{:?}", t.tables.rejected());
    }

    fn upstream_next_hop(t: &T, prefix: &str, len: u8) -> Option<NextHop> {
        let p = u32::from(prefix.parse::<Ipv4Addr>().unwrap());
        let id = t.tables.services[0]
            .table(RouteTable::Upstream)
            .get(p, len)?;
        Some(t.tables.next_hops()[id as usize])
    }

    /// Neighbour `i` advertises 0/0 with `label` and `p`; the labels of
    /// the next hop blue's upstream 0/0 then has, if any.
    fn learn_default(t: &mut T, i: usize, label: u32, p: VpnPath) -> Option<[u32; 2]> {
        let ops = t.sp.learned(i, update("0.0.0.0", 0, label, p), &t.tables);
        apply(t, &ops);
        upstream_next_hop(t, "0.0.0.0", 0).map(|nh| nh.labels)
    }

    /// What neighbour 0's session task has been told since last asked:
    /// ("+" or "-", prefix/len, RD) per route.
    fn told(t: &mut T) -> Vec<(char, String, String)> {
        let mut out = Vec::new();
        while let Ok(m) = t._pending[0].1.try_recv() {
            let (sign, routes) = match m {
                ToSession::Advertise(r, _) => ('+', r),
                ToSession::Withdraw(r) => ('-', r),
                _ => continue,
            };
            out.extend(
                routes
                    .iter()
                    .map(|r| (sign, format!("{}/{}", r.prefix, r.len), r.rd.to_string())),
            );
        }
        out
    }

    /// A reload reaches BGP: the file's own routes are advertised and
    /// withdrawn, a changed RD re-advertises, changed import targets
    /// select anew, and a route the file stops setting goes to BGP's
    /// best path (while one it starts setting is no longer BGP's).
    #[test]
    fn a_reload_advertises_withdraws_and_reselects() {
        let mut t = setup();
        let reload = |t: &mut T, text: &str| {
            let loaded = parse(Path::new("test.toml"), text).expect("config");
            t.sp.reload(&loaded.config, &[0], &t.tables, |_, a| {
                a == Ipv4Addr::new(10, 0, 0, 51)
            })
        };
        let client = "[[next_hop]]\nname = \"client\"\nport = \"access0\"\nmac = \"02:00:5e:00:00:50\"\n[[service]]";
        let static_up = "upstream = [ { prefix = \"192.0.2.0/24\", next_hop = \"hub1\" } ]";
        let own = CONFIG.replacen("[[service]]", client, 1).replace(
            static_up,
            "downstream = [ { prefix = \"10.0.0.50/32\", next_hop = \"client\" } ]",
        );
        assert!(told(&mut t).is_empty());
        // BGP learns the prefix the file sets: nothing installed.
        let ops = t.sp.learned(
            0,
            update("192.0.2.0", 24, 3001, path(None, &[], None, "65000:1")),
            &t.tables,
        );
        assert!(ops.is_empty(), "{ops:?}");

        // The file drops its upstream route and gains a downstream one.
        let ops = reload(&mut t, &own);
        assert!(
            matches!(
                ops[..],
                [
                    TableOp::SetNextHop { .. },
                    TableOp::AddRoute {
                        prefix: 0xc000_0200,
                        len: 24,
                        ..
                    }
                ]
            ),
            "BGP's path takes the route the file let go: {ops:?}"
        );
        apply(&mut t, &ops);
        assert_eq!(
            upstream_next_hop(&t, "192.0.2.0", 24).unwrap().labels,
            [100, 3001]
        );
        let rd = "65000:100".to_owned();
        assert_eq!(told(&mut t), [('+', "10.0.0.50/32".to_owned(), rd.clone())]);
        assert_eq!(t.sp.rib_out.len(), 1);

        // The same file again: nothing to say, nothing to change.
        assert!(reload(&mut t, &own).is_empty());
        assert!(told(&mut t).is_empty());

        // A new RD: withdrawn under the old, advertised under the new.
        let ops = reload(&mut t, &own.replace("65000:100", "65000:101"));
        assert!(ops.is_empty(), "{ops:?}");
        assert_eq!(
            told(&mut t),
            [
                ('-', "10.0.0.50/32".to_owned(), rd.clone()),
                ('+', "10.0.0.50/32".to_owned(), "65000:101".to_owned())
            ]
        );

        // Import targets that no longer match: BGP's route goes.
        let ops = reload(
            &mut t,
            &own.replace(
                "import_targets = [\"65000:1\"]",
                "import_targets = [\"65000:7\"]",
            ),
        );
        assert!(
            matches!(
                ops[..],
                [TableOp::DeleteRoute {
                    prefix: 0xc000_0200,
                    len: 24,
                    ..
                }]
            ),
            "{ops:?}"
        );
        apply(&mut t, &ops);
        assert!(upstream_next_hop(&t, "192.0.2.0", 24).is_none());
        assert_eq!(
            told(&mut t),
            [
                ('-', "10.0.0.50/32".to_owned(), "65000:101".to_owned()),
                ('+', "10.0.0.50/32".to_owned(), rd.clone())
            ],
            "the RD back to the file's"
        );

        // Back to the first file: the downstream route is withdrawn, and
        // the upstream route is the file's again; BGP no longer tracks it,
        // so its withdrawal removes nothing.
        let ops = reload(&mut t, &own);
        assert!(
            matches!(
                ops[..],
                [TableOp::AddRoute {
                    prefix: 0xc000_0200,
                    len: 24,
                    ..
                }]
            ),
            "imported again: {ops:?}"
        );
        apply(&mut t, &ops);
        assert!(reload(&mut t, CONFIG).is_empty(), "the file's route again");
        assert_eq!(told(&mut t), [('-', "10.0.0.50/32".to_owned(), rd)]);
        assert!(t.sp.rib_out.is_empty());
        let gone = Vpnv4Update {
            reach: Vec::new(),
            path: None,
            withdrawn: vec![VpnRoute {
                rd: "65000:1".parse().unwrap(),
                prefix: "192.0.2.0".parse().unwrap(),
                len: 24,
                label: 3001,
            }],
            end_of_rib: false,
        };
        assert!(t.sp.learned(0, gone, &t.tables).is_empty());

        // The file's route for a live session's address: advertised with
        // it, and when the file lets go, the session's stays.
        let held = own.replace("10.0.0.50/32", "10.0.0.51/32");
        assert!(reload(&mut t, &held).is_empty());
        assert_eq!(
            told(&mut t),
            [('+', "10.0.0.51/32".to_owned(), "65000:100".to_owned())]
        );
        assert!(reload(&mut t, CONFIG).is_empty());
        assert!(
            told(&mut t).is_empty(),
            "the session's route is not withdrawn"
        );
        assert_eq!(t.sp.rib_out.len(), 1);
    }

    #[test]
    fn best_path_by_local_pref_then_as_path_then_med_and_withdrawal_falls_back() {
        let mut t = setup();
        // Neighbour 0 (via hub1, transport 100) with LOCAL_PREF 100.
        let p = path(Some(100), &[], None, "65000:1");
        assert_eq!(learn_default(&mut t, 0, 3001, p), Some([100, 3001]));
        let nh = upstream_next_hop(&t, "0.0.0.0", 0).unwrap();
        assert_eq!((nh.n_labels, nh.dst_mac), (2, [2, 0, 0x5e, 0, 2, 9]));
        // Neighbour 1 (via hub2) with a higher LOCAL_PREF wins, whatever
        // its AS_PATH.
        let p = path(Some(200), &[65001, 65002], None, "65000:1");
        assert_eq!(learn_default(&mut t, 1, 3002, p), Some([200, 3002]));
        // Equal LOCAL_PREF: the shorter AS_PATH wins, then the lower MED.
        let p = path(Some(100), &[65001], None, "65000:1");
        assert_eq!(learn_default(&mut t, 1, 3002, p), Some([100, 3001]));
        let p = path(Some(100), &[65001], Some(50), "65000:1");
        assert_eq!(
            learn_default(&mut t, 0, 3001, p),
            Some([200, 3002]),
            "MED 0 beats MED 50"
        );
        // Neighbour 1 goes down: neighbour 0's path takes over.
        let ops = t.sp.down(1, "test".into(), &t.tables);
        apply(&mut t, &ops);
        assert_eq!(
            upstream_next_hop(&t, "0.0.0.0", 0).unwrap().labels,
            [100, 3001]
        );
        // Neighbour 0 withdraws: the route goes.
        let mut w = update("0.0.0.0", 0, 3001, path(None, &[], None, "65000:1"));
        w.withdrawn = std::mem::take(&mut w.reach);
        w.path = None;
        let ops = t.sp.learned(0, w, &t.tables);
        assert!(
            matches!(ops[..], [TableOp::DeleteRoute { len: 0, .. }]),
            "{ops:?}"
        );
        apply(&mut t, &ops);
        assert!(upstream_next_hop(&t, "0.0.0.0", 0).is_none());
    }

    #[test]
    fn foreign_targets_loops_statics_and_unresolved_neighbours_install_nothing() {
        let mut t = setup();
        // A target blue does not import.
        assert!(t
            .sp
            .learned(
                0,
                update("0.0.0.0", 0, 3001, path(None, &[], None, "65000:9")),
                &t.tables
            )
            .is_empty());
        // Our own AS in the path, or our own next hop: loops.
        assert!(t
            .sp
            .learned(
                0,
                update("0.0.0.0", 0, 3001, path(None, &[65000], None, "65000:1")),
                &t.tables
            )
            .is_empty());
        let mut own = path(None, &[], None, "65000:1");
        own.next_hop = "198.18.0.1".parse().unwrap();
        assert!(t
            .sp
            .learned(0, update("0.0.0.0", 0, 3001, own), &t.tables)
            .is_empty());
        assert_eq!(t.sp.neighbors[0].loops_dropped, 2);
        // The configuration's own upstream route stays.
        assert!(t
            .sp
            .learned(
                0,
                update("192.0.2.0", 24, 3001, path(None, &[], None, "65000:1")),
                &t.tables
            )
            .is_empty());
        // A neighbour without `via`: kept in its RIB, not installed.
        assert!(t
            .sp
            .learned(
                2,
                update("0.0.0.0", 0, 3001, path(None, &[], None, "65000:1")),
                &t.tables
            )
            .is_empty());
        assert_eq!(
            (t.sp.neighbors[2].rib_in.len(), t.sp.neighbors[2].unresolved),
            (1, 1)
        );
        // One next hop per (via, label), shared by the routes using it,
        // and following the via's MAC.
        let a = t.sp.learned(
            0,
            update("10.9.0.0", 16, 3001, path(None, &[], None, "65000:1")),
            &t.tables,
        );
        apply(&mut t, &a);
        let b = t.sp.learned(
            0,
            update("10.8.0.0", 16, 3001, path(None, &[], None, "65000:1")),
            &t.tables,
        );
        assert!(
            matches!(b[..], [TableOp::AddRoute { .. }]),
            "no new next hop: {b:?}"
        );
        let follow = t.sp.follow_neighbor(&TableOp::SetNeighbor {
            next_hop: 0,
            mac: [2, 9, 9, 9, 9, 9],
        });
        assert_eq!(follow.len(), 1);
    }

    #[test]
    fn equal_paths_share_a_route_as_an_ecmp_group_when_multipath_allows() {
        let mut t = setup_with(&CONFIG.replace("[bgp]\n", "[bgp]\nmultipath = 2\n"));
        let equal = || path(Some(100), &[], None, "65000:1");
        for (i, label) in [(0, 3001), (1, 3002), (2, 3003)] {
            let ops =
                t.sp.learned(i, update("0.0.0.0", 0, label, equal()), &t.tables);
            apply(&mut t, &ops);
        }
        // Neighbours 0 and 1 (both with a via) share it; 2 has no via.
        let id = t.tables.services[0].upstream.lookup(0x0808_0808);
        assert!(dataplane::tables::is_group(id), "{id:#x}");
        let g = t.tables.groups()[(id & !GROUP_BIT) as usize];
        let labels: BTreeSet<[u32; 2]> = g
            .members()
            .iter()
            .map(|&m| t.tables.next_hops()[m as usize].labels)
            .collect();
        assert_eq!(labels, BTreeSet::from([[100, 3001], [200, 3002]]));
        // Flows spread over both.
        let used: BTreeSet<u16> = (0..64u32)
            .filter_map(|i| t.tables.route_adjacency(id, 0x0a00_0000 | i, 0x0808_0808))
            .map(|a| a.header[0..6].iter().map(|&b| u16::from(b)).sum())
            .collect();
        assert_eq!(used.len(), 2, "both members carry flows");
        // A worse path (longer AS_PATH) does not join; losing a member
        // leaves the other alone, not a group of one.
        let ops = t.sp.learned(
            1,
            update(
                "0.0.0.0",
                0,
                3002,
                path(Some(100), &[65001], None, "65000:1"),
            ),
            &t.tables,
        );
        apply(&mut t, &ops);
        let id = t.tables.services[0].upstream.lookup(0x0808_0808);
        assert!(!dataplane::tables::is_group(id));
        assert_eq!(t.tables.next_hops()[id as usize].labels, [100, 3001]);
        // Equal again: the same group comes back, not a new one.
        let ops =
            t.sp.learned(1, update("0.0.0.0", 0, 3002, equal()), &t.tables);
        assert!(
            !ops.iter().any(|o| matches!(o, TableOp::SetGroup { .. })),
            "{ops:?}"
        );
        apply(&mut t, &ops);
        assert_eq!(t.tables.groups().len(), 1);
    }

    #[test]
    fn ebgp_and_ibgp_neighbours_get_their_own_attributes() {
        let t = setup();
        let ibgp = t.sp.path_for(&t.sp.neighbors[0], 0);
        assert_eq!((ibgp.local_pref, ibgp.as_path.clone()), (Some(100), vec![]));
        assert_eq!(ibgp.next_hop, "198.18.0.1".parse::<Ipv4Addr>().unwrap());
        assert_eq!(ibgp.route_targets, vec!["65000:2".parse().unwrap()]);
        let mut n = setup();
        n.sp.neighbors[0].remote_asn = 65001;
        let ebgp = n.sp.path_for(&n.sp.neighbors[0], 0);
        assert_eq!((ebgp.local_pref, ebgp.as_path), (None, vec![65000]));
    }
}
