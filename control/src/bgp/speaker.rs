//! The BGP speaker: one `crate::bgp::session` task per
//! `[[bgp.neighbor]]`, their Adj-RIBs-In, the Loc-RIB's choice, and one
//! Adj-RIB-Out per neighbour.
//!
//! ```text
//!   control thread                          "hdvrf-bgp" thread
//!   Speaker ---- ToSession, per neighbour ----> session::run, per neighbour
//!      ^                                            |   (TCP, FSM, timers)
//!      +------- FromSession, per neighbour ---------+
//! ```
//!
//! - Export: a session's host route goes to every neighbour once it is
//!   published (service RD, the service's VPN label, its export targets,
//!   next hop `bgp.next_hop`), and is withdrawn before it is removed.
//!   Our routes are kept once ([`Speaker::originated`]); each neighbour's
//!   Adj-RIB-Out ([`Neighbor::rib_out`]) is what they become through its
//!   policy (eBGP or iBGP: AS_PATH, LOCAL_PREF), and a change is sent to
//!   a neighbour only where its Adj-RIB-Out changed. On Established the
//!   speaker sends the neighbour's whole Adj-RIB-Out
//!   ([`ToSession::Table`]), and again on ROUTE-REFRESH; the session task
//!   keeps no copy (see `crate::bgp::session` for the ordering).
//! - Import: a learnt route whose targets meet a service's import targets
//!   is a candidate for that service's upstream table (spoke) or hub table
//!   (hub). Among the candidates for a prefix the best path wins (RFC 4271
//!   section 9.1.2.2: higher LOCAL_PREF, shorter AS_PATH, lower MED, lower
//!   peer router id), and goes out through the neighbour's `via` next hop
//!   with the route's own label under the transport label.
//!
//! What BGP selects goes to the RIB manager (`crate::rib`) as the `bgp`
//! source: it decides whether it is installed (the file's, `ctl`'s and
//! sessions' routes win), makes and frees the next hops and groups, and
//! computes the table ops the control thread commits. What is advertised
//! of the file's and `ctl`'s routes follows what the RIB manager holds
//! ([`Speaker::sync_local`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bgp::fsm::{Damping, Negotiated, State};
use crate::bgp::session::{PeerConfig, Table, ToSession};
use crate::bgp::{Reflection, VpnPath, VpnRoute, Vpnv4Update};
use crate::config::{BgpNeighborCfg, Config};
use crate::rib::{Rib, RouteKey, Source, Target};
use crate::vpn::VpnId;
use dataplane::tables::RouteTable;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// LOCAL_PREF of a path that has none (eBGP), and of what we send iBGP.
const DEFAULT_LOCAL_PREF: u32 = 100;

/// A learnt route: (prefix, length, RD), so that every RD's copy of one
/// prefix sits together.
type RibKey = (Ipv4Addr, u8, VpnId);

/// BGP's choice for one prefix: per service, the paths that won
/// (neighbour, route distinguisher).
type Choices = BTreeMap<u16, Vec<(usize, VpnId)>>;

/// One neighbour as the speaker knows it.
pub struct Neighbor {
    pub address: Ipv4Addr,
    pub port: u16,
    pub remote_asn: u32,
    pub passive: bool,
    /// A route reflector client of ours (RFC 4456).
    pub rr_client: bool,
    /// The next hop (id, name) its routes go out through.
    pub via: Option<(u32, String)>,
    tx: UnboundedSender<ToSession>,
    /// The number of the establishment its session last reported, which
    /// the table sent to it names.
    establishment: u64,
    /// The session's state machine, as it last reported.
    pub state: State,
    /// While Established: what was negotiated and since when.
    pub up: Option<(Negotiated, Instant)>,
    pub last_down: Option<String>,
    /// Adj-RIB-In: label and path of each route a service imports (the
    /// others are counted in `not_imported`, not stored). Routes of one
    /// path share it ([`Neighbor::paths`]).
    pub rib_in: BTreeMap<RibKey, (u32, Arc<VpnPath>)>,
    pub updates_in: u64,
    pub malformed: u64,
    /// Routes dropped as loops: our AS in the path, or our own next hop.
    pub loops_dropped: u64,
    /// Times its path was best but not installed: it has no `via`.
    pub unresolved: u64,
    pub notifications_sent: u64,
    pub notifications_received: u64,
    /// `max_prefixes`, if set.
    pub prefix_limit: Option<PrefixLimit>,
    /// Routes it sent that no service imports: counted, not stored.
    pub not_imported: u64,
    /// Sessions stopped with Cease 6/1 for exceeding `max_prefixes`.
    pub prefix_limit_hits: u64,
    /// The `max_prefixes_warning` was logged in this establishment.
    warned: bool,
    /// Stopped for exceeding `max_prefixes`: what it still sends before
    /// its session reports down is not taken.
    ceased: bool,
    /// The paths `rib_in`'s entries share, and how many were live at the
    /// last sweep.
    paths: HashSet<Arc<VpnPath>>,
    paths_live: usize,
    /// Adj-RIB-Out: each of our routes as this neighbour is sent it, its
    /// label and the path attributes its policy gives (RFC 4271 section
    /// 9.2). Kept while it is down too: what it is sent when it comes up.
    pub rib_out: BTreeMap<RibKey, (u32, Arc<VpnPath>)>,
    /// The path last made for each service's routes toward it, which its
    /// entries share.
    out_paths: HashMap<u16, Arc<VpnPath>>,
    /// TCP-MD5 is on (RFC 2385); the key stays in the session's
    /// configuration.
    pub md5: bool,
    /// GTSM's hops (RFC 5082), if on.
    pub ttl_security: Option<u8>,
    /// Connections from its address refused by GTSM: their SYN came with
    /// too low a TTL.
    pub ttl_refused: u64,
    /// Peer oscillation damping, as the session last reported: failures
    /// in a row and the time it waits in Idle after the last of them.
    pub failures_in_a_row: u32,
    pub idle_hold: Option<Duration>,
}

impl Neighbor {
    fn ebgp(&self, local_asn: u32) -> bool {
        self.remote_asn != local_asn
    }

    /// `path`, shared with its entries that have it already.
    fn share(&mut self, service: u16, path: VpnPath) -> Arc<VpnPath> {
        match self.out_paths.get(&service) {
            Some(p) if **p == path => Arc::clone(p),
            _ => {
                let p = Arc::new(path);
                self.out_paths.insert(service, Arc::clone(&p));
                p
            }
        }
    }

    /// One route over `limit`: Cease 6/1 with RFC 4486's data (AFI, SAFI,
    /// the limit), its routes about to go. The line for the log.
    fn cease_over_limit(&mut self, limit: PrefixLimit) -> String {
        self.ceased = true;
        self.prefix_limit_hits += 1;
        let mut data = vec![0, 1, 128];
        data.extend_from_slice(&u32::try_from(limit.max).unwrap_or(u32::MAX).to_be_bytes());
        let why = format!(
            "more than max_prefixes {} routes: Cease 6/1 sent (RFC 4486), {}",
            limit.max,
            match limit.restart {
                Some(d) => format!("restarting in {} s", d.as_secs()),
                None => "down until hdvrf restarts".into(),
            }
        );
        let _ = self.tx.send(ToSession::Cease {
            subcode: 1,
            data,
            why: why.clone(),
            restart: limit.restart,
        });
        why
    }

    /// `path` as the one copy its routes in `rib_in` share. Copies no
    /// entry holds any more are swept once they are as many as the live
    /// ones were at the last sweep.
    fn intern(&mut self, path: &VpnPath) -> Arc<VpnPath> {
        if let Some(p) = self.paths.get(path) {
            return Arc::clone(p);
        }
        if self.paths.len() >= 2 * self.paths_live.max(512) {
            self.paths.retain(|p| Arc::strong_count(p) > 1);
            self.paths_live = self.paths.len();
        }
        let p = Arc::new(path.clone());
        self.paths.insert(Arc::clone(&p));
        p
    }

    /// An estimate of the Adj-RIB-In's memory: its entries (the B-tree's
    /// nodes are about two thirds full) and the paths they share.
    pub fn rib_in_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(RibKey, (u32, Arc<VpnPath>))>();
        let paths: usize = self
            .paths
            .iter()
            .map(|p| {
                std::mem::size_of::<VpnPath>()
                    + 16
                    + 8
                    + p.route_targets.capacity() * std::mem::size_of::<VpnId>()
                    + p.as_path.capacity() * 4
            })
            .sum();
        self.rib_in.len() * entry * 3 / 2 + paths
    }

    /// Its whole Adj-RIB-Out, routes grouped by path.
    fn table(&self) -> Table {
        let mut at: HashMap<*const VpnPath, usize> = HashMap::new();
        let mut out: Table = Vec::new();
        for (k, (label, path)) in &self.rib_out {
            let i = *at.entry(Arc::as_ptr(path)).or_insert_with(|| {
                out.push((VpnPath::clone(path), Vec::new()));
                out.len() - 1
            });
            out[i].1.push(route_of(k, *label));
        }
        out
    }
}

/// A route as reflected: the neighbour it came from, its label, and the
/// path it goes out with ([`Speaker::reflected`]).
type Reflected = (usize, u32, Arc<VpnPath>);

/// A neighbour's `max_prefixes` (RFC 4486 section 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixLimit {
    pub max: usize,
    /// Stored routes at which the warning is logged.
    pub warn_at: usize,
    /// How long the session stays down after Cease 6/1; `None`: until
    /// hdvrf restarts.
    pub restart: Option<Duration>,
}

/// The route an Adj-RIB entry stands for.
fn route_of(k: &RibKey, label: u32) -> VpnRoute {
    VpnRoute {
        rd: k.2,
        prefix: k.0,
        len: k.1,
        label,
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

pub struct Speaker {
    pub asn: u32,
    /// Our BGP identifier, and our cluster id as a route reflector.
    pub router_id: Ipv4Addr,
    /// Some neighbour is a route reflector client: routes from iBGP
    /// neighbours are kept whether a service imports them or not, and
    /// reflected ([`Speaker::reflected`]).
    reflects: bool,
    pub next_hop: Ipv4Addr,
    pub neighbors: Vec<Neighbor>,
    services: Vec<ServiceBgp>,
    /// The table imported routes go to: upstream (spoke) or hub.
    table: RouteTable,
    /// The file's and `ctl`'s routes toward our side, advertised like
    /// sessions' (a spoke's downstream routes, a hub's hub routes).
    configured: BTreeSet<(u16, Ipv4Addr, u8)>,
    /// `bgp.multipath`: how many equal best paths share a route.
    multipath: usize,
    /// BGP's choice for (prefix, length), per service: the paths that
    /// won (neighbour, route distinguisher; the best first, then its ECMP
    /// peers). Whether it is installed is the RIB manager's to say. By
    /// prefix, so that selection visits only the services that hold a
    /// choice for it, and `show bgp rib in` finds a route's in one look.
    selected: HashMap<(u32, u8), Choices>,
    /// The services importing each route target, in service order: a
    /// route is selected for these only, not for every service.
    importers: HashMap<VpnId, Vec<u16>>,
    /// Our routes (the Loc-RIB's locally originated ones: sessions' host
    /// routes, the file's and `ctl`'s toward our side), with their
    /// service: what every neighbour's Adj-RIB-Out is derived from.
    pub originated: BTreeMap<RibKey, (VpnRoute, u16)>,
}

/// A neighbour's damping: the defaults, or `idle_hold_start_ms` and
/// `idle_hold_max_ms` (validated: 1 <= start <= max).
fn damping_of(n: &BgpNeighborCfg) -> Damping {
    let ms = |v: &Option<toml::Spanned<i64>>| {
        v.as_ref()
            .map(|v| Duration::from_millis(*v.get_ref() as u64))
    };
    let d = Damping::DEFAULT;
    Damping::new(
        ms(&n.idle_hold_start_ms).unwrap_or(d.start),
        ms(&n.idle_hold_max_ms).unwrap_or(d.cap),
    )
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
            let prefix_limit = n.max_prefixes.as_ref().map(|m| {
                let max = *m.get_ref() as usize;
                let pct = n.max_prefixes_warning.as_ref().map_or(75, |w| *w.get_ref()) as usize;
                PrefixLimit {
                    max,
                    warn_at: (max * pct).div_ceil(100),
                    restart: n
                        .max_prefixes_restart
                        .as_ref()
                        .map(|r| Duration::from_secs(*r.get_ref() as u64)),
                }
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
                    send_hold: None,
                    md5_password: n.md5_password.as_ref().map(|p| p.get_ref().clone()),
                    ttl_security: n.ttl_security.as_ref().and_then(|t| t.get_ref().hops()),
                    damping: damping_of(n),
                },
                rx,
            ));
            neighbors.push(Neighbor {
                address,
                port,
                remote_asn,
                passive: n.passive,
                rr_client: n
                    .route_reflector_client
                    .as_ref()
                    .is_some_and(|r| *r.get_ref()),
                via,
                tx,
                establishment: 0,
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
                prefix_limit,
                not_imported: 0,
                prefix_limit_hits: 0,
                warned: false,
                ceased: false,
                paths: HashSet::new(),
                paths_live: 0,
                rib_out: BTreeMap::new(),
                out_paths: HashMap::new(),
                md5: n.md5_password.is_some(),
                ttl_security: n.ttl_security.as_ref().and_then(|t| t.get_ref().hops()),
                ttl_refused: 0,
                failures_in_a_row: 0,
                idle_hold: None,
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
        let services = services_of(c, &ids);
        let sp = Speaker {
            asn,
            router_id,
            reflects: neighbors.iter().any(|n: &Neighbor| n.rr_client),
            next_hop,
            neighbors,
            importers: importers_of(&services),
            services,
            table,
            configured: BTreeSet::new(),
            multipath: b.multipath.as_ref().map_or(1, |m| *m.get_ref() as usize),
            selected: HashMap::new(),
            originated: BTreeMap::new(),
        };
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
            reflection: None,
        }
    }

    /// A session's host route, once published: to every neighbour.
    pub fn advertise(&mut self, service: u16, address: Ipv4Addr) {
        if let Some(k) = self.originate(service, address, 32) {
            self.update_out(&[k]);
        }
    }

    /// Our route for (service, prefix, len) into [`Speaker::originated`],
    /// if the service has an RD and a VPN label: its key.
    fn originate(&mut self, service: u16, prefix: Ipv4Addr, len: u8) -> Option<RibKey> {
        let s = self.services.get(usize::from(service))?;
        let (rd, label) = (s.rd?, s.label?);
        let route = VpnRoute {
            rd,
            prefix,
            len,
            label,
        };
        self.originated.insert((prefix, len, rd), (route, service));
        Some((prefix, len, rd))
    }

    /// A session's host route, before it is removed: from every
    /// neighbour. True if a neighbour is Established (and so the removal
    /// should wait until the withdrawal is on its way).
    /// The file's route for the same /32, if any, stays advertised.
    pub fn withdraw(&mut self, service: u16, address: Ipv4Addr) -> bool {
        if self.configured.contains(&(service, address, 32)) {
            return false;
        }
        match self.unoriginate(service, address, 32) {
            Some(k) => self.update_out(&[k]),
            None => false,
        }
    }

    /// Our route for (service, prefix, len) out of
    /// [`Speaker::originated`]: its key, if it was there.
    fn unoriginate(&mut self, service: u16, prefix: Ipv4Addr, len: u8) -> Option<RibKey> {
        let rd = self.services.get(usize::from(service))?.rd?;
        let k = (prefix, len, rd);
        self.originated.remove(&k)?;
        Some(k)
    }

    /// Brings every neighbour's Adj-RIB-Out entries for `keys` to what
    /// [`Speaker::originated`] gives it through its policy or, for a key
    /// we do not originate, what route reflection gives it
    /// ([`Speaker::reflected`]), and tells the session of each Established
    /// one what changed: the withdrawals, then the advertisements grouped
    /// by path. An entry left as it was sends nothing. True if a
    /// withdrawal went to an Established neighbour.
    fn update_out(&mut self, keys: &[RibKey]) -> bool {
        let reflected = self.reflected(keys);
        let mut withdrew = false;
        for i in 0..self.neighbors.len() {
            let mut gone = Vec::new();
            let mut changed: Vec<(Arc<VpnPath>, Vec<VpnRoute>)> = Vec::new();
            let mut at: HashMap<*const VpnPath, usize> = HashMap::new();
            for (k, best) in keys.iter().zip(&reflected) {
                let want = match self.originated.get(k) {
                    Some(&(route, svc)) => {
                        let path = self.path_for(&self.neighbors[i], svc);
                        Some((route.label, Err((svc, path))))
                    }
                    None => best
                        .as_ref()
                        .filter(|(src, ..)| self.reflects_to(*src, i))
                        .map(|(_, label, path)| (*label, Ok(Arc::clone(path)))),
                };
                let n = &mut self.neighbors[i];
                let Some((label, path)) = want else {
                    if let Some((label, _)) = n.rib_out.remove(k) {
                        gone.push(route_of(k, label));
                    }
                    continue;
                };
                let same = |p: &VpnPath| {
                    n.rib_out
                        .get(k)
                        .is_some_and(|(l, had)| *l == label && **had == *p)
                };
                let path = match path {
                    Ok(p) if same(&p) => continue,
                    Err((_, p)) if same(&p) => continue,
                    Ok(p) => p,
                    Err((svc, p)) => n.share(svc, p),
                };
                n.rib_out.insert(*k, (label, Arc::clone(&path)));
                let j = *at.entry(Arc::as_ptr(&path)).or_insert_with(|| {
                    changed.push((path, Vec::new()));
                    changed.len() - 1
                });
                changed[j].1.push(route_of(k, label));
            }
            let n = &self.neighbors[i];
            if n.up.is_none() {
                continue;
            }
            if !gone.is_empty() {
                let _ = n.tx.send(ToSession::Withdraw(gone));
                withdrew = true;
            }
            for (path, routes) in changed {
                let _ =
                    n.tx.send(ToSession::Advertise(routes, VpnPath::clone(&path)));
            }
        }
        withdrew
    }

    /// Route reflection (RFC 4456), when a neighbour is a client: for each
    /// key we do not originate, the best path iBGP neighbours sent for it
    /// (by [`prefer`]), as reflected: its neighbour, label, and the path
    /// with ORIGINATOR_ID (kept, or the neighbour's router id) and our
    /// cluster id prepended to CLUSTER_LIST. The next hop, label and
    /// other attributes stay as they were (section 10). Routes of one
    /// learnt path share one reflected path.
    fn reflected(&self, keys: &[RibKey]) -> Vec<Option<Reflected>> {
        let mut shared: HashMap<*const VpnPath, Arc<VpnPath>> = HashMap::new();
        keys.iter()
            .map(|k| {
                if !self.reflects || self.originated.contains_key(k) {
                    return None;
                }
                let (src, label, learnt) = self
                    .neighbors
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| !n.ebgp(self.asn))
                    .filter_map(|(i, n)| n.rib_in.get(k).map(|(l, p)| (i, *l, p)))
                    .min_by(|a, b| prefer(a.2, &self.neighbors[a.0], b.2, &self.neighbors[b.0]))?;
                let path = shared.entry(Arc::as_ptr(learnt)).or_insert_with(|| {
                    let n = &self.neighbors[src];
                    let origin = n.up.as_ref().map_or(n.address, |(g, _)| g.peer_id);
                    let (originator_id, mut cluster_list) = match &learnt.reflection {
                        Some(r) if !r.originator_id.is_unspecified() => {
                            (r.originator_id, r.cluster_list.clone())
                        }
                        Some(r) => (origin, r.cluster_list.clone()),
                        None => (origin, Vec::new()),
                    };
                    cluster_list.insert(0, self.router_id);
                    Arc::new(VpnPath {
                        reflection: Some(Reflection {
                            originator_id,
                            cluster_list,
                        }),
                        ..VpnPath::clone(learnt)
                    })
                });
                Some((src, label, Arc::clone(path)))
            })
            .collect()
    }

    /// Whether a route learnt from neighbour `src` is reflected to
    /// neighbour `to` (RFC 4456 section 6): between iBGP neighbours, not
    /// back to its own, and from a client to all, from a non-client to
    /// clients only.
    fn reflects_to(&self, src: usize, to: usize) -> bool {
        let (s, t) = (&self.neighbors[src], &self.neighbors[to]);
        src != to && !s.ebgp(self.asn) && !t.ebgp(self.asn) && (s.rr_client || t.rr_client)
    }

    /// A reloaded configuration (`ids`: the running service id of each of
    /// its services, matched by name). What a reload may change in place
    /// reaches BGP here (the file's routes reach the RIB manager, and
    /// [`Speaker::sync_local`] advertises what it then holds):
    /// - a service's RD, VPN label or export targets: its routes are
    ///   advertised with the new ones, and withdrawn under an RD that
    ///   changed (each neighbour is sent what changed in its
    ///   Adj-RIB-Out);
    /// - its import targets: every learnt prefix is selected anew.
    pub fn reload(&mut self, c: &Config, ids: &[u16], rib: &mut Rib) {
        let services = services_of(c, ids);
        let mut changed = BTreeSet::new();
        let mut reimport = false;
        for (svc, (old, new)) in self.services.iter().zip(&services).enumerate() {
            if (old.rd, old.label, &old.export) != (new.rd, new.label, &new.export) {
                changed.insert(svc as u16);
            }
            reimport |= old.import != new.import;
        }
        let reannounce: Vec<(u16, Ipv4Addr, u8)> = self
            .originated
            .values()
            .filter(|(_, svc)| changed.contains(svc))
            .map(|(r, svc)| (*svc, r.prefix, r.len))
            .collect();
        let mut keys = Vec::new();
        for &(svc, prefix, len) in &reannounce {
            keys.extend(self.unoriginate(svc, prefix, len));
        }
        let before: HashSet<VpnId> = self.importers.keys().copied().collect();
        self.importers = importers_of(&services);
        self.services = services;
        for &(svc, prefix, len) in &reannounce {
            keys.extend(self.originate(svc, prefix, len));
        }
        self.update_out(&keys);
        if reimport {
            let added = self.importers.keys().any(|t| !before.contains(t));
            let mut keys = BTreeSet::new();
            for n in &mut self.neighbors {
                keys.extend(n.rib_in.keys().map(|k| (k.0, k.1)));
                // Routes no service imports any more are not kept.
                let keep_all = self.reflects && n.remote_asn == self.asn;
                n.rib_in
                    .retain(|_, (_, p)| keeps(&self.importers, keep_all, p));
                if added && n.up.is_some() && !keep_all {
                    // The routes carrying the new targets were not kept:
                    // ask for them again, or, from a peer that cannot be
                    // asked, by restarting the session (Cease 6/6, Other
                    // Configuration Change, RFC 4486).
                    let refresh = n.up.as_ref().is_some_and(|(g, _)| g.route_refresh);
                    let _ = n.tx.send(if refresh {
                        ToSession::AskRefresh
                    } else {
                        ToSession::Cease {
                            subcode: 6,
                            data: vec![],
                            why: "import targets changed and the peer cannot refresh (no route refresh capability): restarted".into(),
                            restart: Some(Duration::from_secs(1)),
                        }
                    });
                }
            }
            self.reselect(&keys, rib);
        }
    }

    /// The table our side's routes are in: a spoke's downstream table,
    /// a hub's hub table.
    fn export_table(&self) -> RouteTable {
        if self.table == RouteTable::Hub {
            RouteTable::Hub
        } else {
            RouteTable::Downstream
        }
    }

    /// Advertises the file's and `ctl`'s routes toward our side that the
    /// RIB manager holds and the tables took, and withdraws those it no
    /// longer does (at start, after a reload and after `ctl route`).
    /// `session_holds(service, address)`: a live session's host route,
    /// which stays advertised when a file's route for the same /32 goes.
    pub fn sync_local(&mut self, rib: &Rib, session_holds: impl Fn(u16, Ipv4Addr) -> bool) {
        let export = self.export_table();
        let mut now = BTreeSet::new();
        for source in [Source::Ctl, Source::File] {
            for (k, _) in rib.routes_of(source) {
                if k.table == export && rib.installed(&k).is_some() {
                    now.insert((k.service, Ipv4Addr::from(k.prefix), k.len));
                }
            }
        }
        let before = std::mem::replace(&mut self.configured, now.clone());
        let mut keys = Vec::new();
        for &(svc, prefix, len) in before.difference(&now) {
            if !(len == 32 && session_holds(svc, prefix)) {
                keys.extend(self.unoriginate(svc, prefix, len));
            }
        }
        for &(svc, prefix, len) in now.difference(&before) {
            keys.extend(self.originate(svc, prefix, len));
        }
        self.update_out(&keys);
    }

    /// Stops every session task.
    pub fn stop(&self) {
        for n in &self.neighbors {
            let _ = n.tx.send(ToSession::Stop);
        }
    }

    /// Neighbour `i` reached Established, its session's `establishment`th
    /// time: its whole Adj-RIB-Out goes to it (End-of-RIB after it).
    pub fn established(&mut self, i: usize, n: Negotiated, establishment: u64, now: Instant) {
        let Some(nb) = self.neighbors.get_mut(i) else {
            return;
        };
        nb.up = Some((n, now));
        nb.establishment = establishment;
        nb.warned = false;
        nb.ceased = false;
        let _ = nb.tx.send(ToSession::Table(establishment, nb.table()));
    }

    /// Neighbour `i` sent ROUTE-REFRESH (RFC 2918): its whole
    /// Adj-RIB-Out again.
    pub fn route_refresh(&mut self, i: usize) {
        if let Some(nb) = self.neighbors.get(i).filter(|n| n.up.is_some()) {
            let _ = nb.tx.send(ToSession::Refresh(nb.establishment, nb.table()));
        }
    }

    /// Neighbour `i` left Established: its routes are gone, and where they
    /// were best, the next best takes over (or the route goes). Its
    /// Adj-RIB-Out stays, kept current, for when it comes back.
    pub fn down(&mut self, i: usize, why: String, rib: &mut Rib) {
        let Some(nb) = self.neighbors.get_mut(i) else {
            return;
        };
        nb.up = None;
        nb.last_down = Some(why);
        let gone = std::mem::take(&mut nb.rib_in);
        let keys: BTreeSet<(Ipv4Addr, u8)> = gone.keys().map(|k| (k.0, k.1)).collect();
        nb.paths.clear();
        nb.paths_live = 0;
        self.reselect(&keys, rib);
        if self.reflects {
            self.update_out(&gone.into_keys().collect::<Vec<_>>());
        }
    }

    /// An UPDATE from neighbour `i`: its RIB changes and the prefixes it
    /// touched are selected anew. A route no service imports is counted,
    /// not stored (and replaces what the neighbour sent before for it). A
    /// neighbour whose stored routes would pass its `max_prefixes` is
    /// stopped with Cease 6/1 and its routes go at once. Returns a line
    /// for the log, if this UPDATE calls for one.
    pub fn learned(&mut self, i: usize, u: Vpnv4Update, rib: &mut Rib) -> Option<String> {
        let (asn, router_id) = (self.asn, self.router_id);
        let own_next_hop = self.next_hop;
        let importers = &self.importers;
        let nb = self.neighbors.get_mut(i)?;
        if nb.ceased {
            return None;
        }
        // A route reflector keeps what iBGP neighbours send, to reflect it.
        let keep_all = self.reflects && nb.remote_asn == asn;
        nb.updates_in += 1;
        let mut keys = BTreeSet::new();
        let mut rd_keys = Vec::new();
        for r in &u.withdrawn {
            nb.rib_in.remove(&(r.prefix, r.len, r.rd));
            keys.insert((r.prefix, r.len));
            rd_keys.push((r.prefix, r.len, r.rd));
        }
        let mut log = None;
        if let Some(path) = &u.path {
            // RFC 4271 section 9.1.2: a path with our AS in it is a loop;
            // our own next hop coming back is one too; and so is one with
            // our router id as ORIGINATOR_ID or in CLUSTER_LIST (RFC 4456
            // section 8).
            let looped = path.as_path.contains(&asn)
                || path.next_hop == own_next_hop
                || path.reflection.as_ref().is_some_and(|r| {
                    r.originator_id == router_id || r.cluster_list.contains(&router_id)
                });
            let shared = (keeps(importers, keep_all, path) && !looped).then(|| nb.intern(path));
            for r in &u.reach {
                keys.insert((r.prefix, r.len));
                rd_keys.push((r.prefix, r.len, r.rd));
                let k = (r.prefix, r.len, r.rd);
                let Some(path) = &shared else {
                    if looped {
                        nb.loops_dropped += 1;
                    } else {
                        nb.not_imported += 1;
                    }
                    nb.rib_in.remove(&k);
                    continue;
                };
                let new = nb.rib_in.insert(k, (r.label, Arc::clone(path))).is_none();
                let Some(limit) = nb.prefix_limit.filter(|_| new) else {
                    continue;
                };
                let stored = nb.rib_in.len();
                if stored > limit.max {
                    log = Some(nb.cease_over_limit(limit));
                    let all = std::mem::take(&mut nb.rib_in);
                    keys.extend(all.keys().map(|k| (k.0, k.1)));
                    rd_keys.extend(all.into_keys());
                    break;
                }
                if stored >= limit.warn_at && !nb.warned {
                    nb.warned = true;
                    log = Some(format!(
                        "{stored} routes stored, {} % of max_prefixes {}",
                        stored * 100 / limit.max,
                        limit.max
                    ));
                }
            }
        }
        self.reselect(&keys, rib);
        if self.reflects {
            self.update_out(&rd_keys);
        }
        log
    }

    /// Best path for each service importing each prefix, handed to the
    /// RIB manager. With `bgp.multipath` above 1, the paths equal to the
    /// best up to MED (RFC 4271 section 9.1.2.2 steps a to c), in the
    /// order the tie-break gives, share the route as an ECMP group.
    ///
    /// Per prefix, only the services that import one of its paths'
    /// targets ([`Speaker::importers`]) or that hold a choice for it (which
    /// may have to go) are visited: the cost follows the route's
    /// importers, not the number of services.
    fn reselect(&mut self, keys: &BTreeSet<(Ipv4Addr, u8)>, rib: &mut Rib) {
        let mut visit: BTreeSet<u16> = BTreeSet::new();
        for &(prefix, len) in keys {
            let p = u32::from(prefix);
            let paths = self.paths(prefix, len);
            visit.clear();
            for (_, _, _, path) in &paths {
                for t in &path.route_targets {
                    if let Some(svcs) = self.importers.get(t) {
                        visit.extend(svcs);
                    }
                }
            }
            if let Some(held) = self.selected.get(&(p, len)) {
                visit.extend(held.keys());
            }
            let mut choices = Vec::with_capacity(visit.len());
            for &svc in &visit {
                let import = self
                    .services
                    .get(usize::from(svc))
                    .map_or(&[][..], |s| &s.import[..]);
                let mut cands: Vec<(usize, VpnId, u32, &VpnPath)> = paths
                    .iter()
                    .filter(|(_, _, _, path)| path.route_targets.iter().any(|t| import.contains(t)))
                    .copied()
                    .collect();
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
                choices.push((svc, chosen, no_via));
            }
            for (svc, chosen, no_via) in choices {
                if let Some(i) = no_via {
                    self.neighbors[i].unresolved += 1;
                }
                let route = RouteKey {
                    service: svc,
                    table: self.table,
                    prefix: p,
                    len,
                };
                let paths = Target::Labelled(
                    chosen
                        .iter()
                        .map(|&(_, _, via, label)| (via, label))
                        .collect(),
                );
                if !chosen.is_empty() && rib.set(Source::Bgp, route, &paths) {
                    self.selected
                        .entry((p, len))
                        .or_default()
                        .insert(svc, chosen.iter().map(|&(i, rd, _, _)| (i, rd)).collect());
                } else if let Some(held) = self.selected.get_mut(&(p, len)) {
                    if held.remove(&svc).is_some() {
                        if held.is_empty() {
                            self.selected.remove(&(p, len));
                        }
                        rib.remove(Source::Bgp, route);
                    }
                }
            }
        }
    }

    /// Every learnt path for (prefix, len), whatever its targets:
    /// (neighbour, RD, label, path).
    fn paths(&self, prefix: Ipv4Addr, len: u8) -> Vec<(usize, VpnId, u32, &VpnPath)> {
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
                out.push((i, *rd, *label, &**path));
            }
        }
        out
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
                        "routes_out": n.rib_out.len(),
                        "updates_in": n.updates_in,
                        "malformed_updates": n.malformed,
                        "loops_dropped": n.loops_dropped,
                        "unresolved": n.unresolved,
                        "notifications_sent": n.notifications_sent,
                        "notifications_received": n.notifications_received,
                        "max_prefixes": n.prefix_limit.map(|l| l.max),
                        "not_imported": n.not_imported,
                        "max_prefixes_hits": n.prefix_limit_hits,
                        "rib_in_paths": n.paths.len(),
                        "rib_in_bytes": n.rib_in_bytes(),
                        "md5": n.md5,
                        "ttl_security_hops": n.ttl_security,
                        "ttl_refused": n.ttl_refused,
                        "failures_in_a_row": n.failures_in_a_row,
                        "idle_hold_ms": n.idle_hold.map(|d| d.as_millis() as u64),
                    })
                })
                .collect(),
        )
    }

    /// `show bgp rib in|out` (both when `None`): every route, or with
    /// `page` (offset, limit) one page of `in` or `out`:
    /// `{"routes": [...], "offset", "total", "next_offset"}`, where
    /// `next_offset` is null after the last page. Routes are in a fixed
    /// order (neighbour, then prefix, length and RD), so pages taken one
    /// after the other see every route once while the RIB does not change.
    /// A page costs its own length plus the skip (whole neighbours' RIBs
    /// are skipped by their size), never a pass over the whole RIB.
    ///
    /// `in` is what the neighbours sent (each route with its `neighbor`),
    /// `out` each neighbour's Adj-RIB-Out: every route as that neighbour
    /// is sent it (its AS_PATH, LOCAL_PREF, MED, next hop, label, RD and
    /// targets), with its `neighbor` and `service`. With `neighbor` (an
    /// address as the configuration gives it), that neighbour's only.
    pub fn show_rib(
        &self,
        which: Option<&str>,
        neighbor: Option<&str>,
        page: Option<(usize, usize)>,
        service_names: &[String],
        rib: &Rib,
    ) -> Result<Value, String> {
        let shown: Vec<(usize, &Neighbor)> = match neighbor {
            None => self.neighbors.iter().enumerate().collect(),
            Some(a) => {
                let found = a
                    .parse::<Ipv4Addr>()
                    .ok()
                    .and_then(|a| self.neighbors.iter().position(|n| n.address == a));
                match found {
                    Some(i) => vec![(i, &self.neighbors[i])],
                    None => {
                        let known: Vec<String> = self
                            .neighbors
                            .iter()
                            .map(|n| n.address.to_string())
                            .collect();
                        return Err(format!(
                            "no BGP neighbor {a:?} (neighbors: {})",
                            known.join(", ")
                        ));
                    }
                }
            }
        };
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
        let named = |s: &u16| service_names.get(usize::from(*s)).map(|s| s.as_str());
        // One learnt route as shown: where it is installed (`best_for`)
        // and where the tables refused it (`rejected`), found from the
        // choices for its prefix alone.
        let learnt = |i: usize, n: &Neighbor, k: &RibKey, label: u32, path: &VpnPath| {
            let mut r = route(k, label, path);
            r["neighbor"] = json!(n.address.to_string());
            let mut best: Vec<&str> = Vec::new();
            let mut refused = Vec::new();
            let p = u32::from(k.0);
            for (svc, paths) in self.selected.get(&(p, k.1)).into_iter().flatten() {
                if !paths.contains(&(i, k.2)) {
                    continue;
                }
                let at = RouteKey {
                    service: *svc,
                    table: self.table,
                    prefix: p,
                    len: k.1,
                };
                if rib.installed(&at).is_some_and(|(s, _)| s == Source::Bgp) {
                    best.extend(named(svc));
                } else if rib.winner(&at) == Some(Source::Bgp) {
                    if let Some(why) = rib.refused(&at) {
                        refused.push(json!({"service": named(svc), "why": why}));
                    }
                }
            }
            best.sort_unstable();
            r["best_for"] = json!(best);
            if !refused.is_empty() {
                r["rejected"] = Value::Array(refused);
            }
            r
        };
        let inbound = |offset: usize, limit: usize| {
            let mut v = Vec::new();
            let mut skip = offset;
            for &(i, n) in &shown {
                if v.len() == limit {
                    break;
                }
                if skip >= n.rib_in.len() {
                    skip -= n.rib_in.len();
                    continue;
                }
                for (k, (label, path)) in n.rib_in.iter().skip(skip).take(limit - v.len()) {
                    v.push(learnt(i, n, k, *label, path));
                }
                skip = 0;
            }
            v
        };
        let outbound = |offset: usize, limit: usize| {
            let mut v = Vec::new();
            let mut skip = offset;
            for &(_, n) in &shown {
                if v.len() == limit {
                    break;
                }
                if skip >= n.rib_out.len() {
                    skip -= n.rib_out.len();
                    continue;
                }
                for (k, (label, path)) in n.rib_out.iter().skip(skip).take(limit - v.len()) {
                    let mut r = route(k, *label, path);
                    r["neighbor"] = json!(n.address.to_string());
                    r["service"] = json!(self
                        .originated
                        .get(k)
                        .and_then(|(_, svc)| service_names.get(usize::from(*svc))));
                    v.push(r);
                }
                skip = 0;
            }
            v
        };
        let total_in = || shown.iter().map(|(_, n)| n.rib_in.len()).sum::<usize>();
        let total_out = || shown.iter().map(|(_, n)| n.rib_out.len()).sum::<usize>();
        let paged = |routes: Vec<Value>, offset: usize, total: usize| {
            let end = offset + routes.len();
            json!({
                "routes": routes,
                "offset": offset,
                "total": total,
                "next_offset": (end < total && !routes.is_empty()).then_some(end),
            })
        };
        match (which, page) {
            (Some("in"), None) => Ok(Value::Array(inbound(0, usize::MAX))),
            (Some("out"), None) => Ok(Value::Array(outbound(0, usize::MAX))),
            (None, None) => Ok(json!({
                "in": inbound(0, usize::MAX),
                "out": outbound(0, usize::MAX),
            })),
            (Some("in"), Some((offset, limit))) => {
                Ok(paged(inbound(offset, limit), offset, total_in()))
            }
            (Some("out"), Some((offset, limit))) => {
                Ok(paged(outbound(offset, limit), offset, total_out()))
            }
            (None, Some(_)) => Err("show bgp rib: a page (offset, limit) is of in or out".into()),
            (Some(other), _) => Err(format!("show bgp rib {other:?}: in or out")),
        }
    }
}

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

/// The services importing each route target, each list in service
/// order.
fn importers_of(services: &[ServiceBgp]) -> HashMap<VpnId, Vec<u16>> {
    let mut out: HashMap<VpnId, Vec<u16>> = HashMap::new();
    for (svc, s) in services.iter().enumerate() {
        for t in &s.import {
            let list = out.entry(*t).or_default();
            if list.last() != Some(&(svc as u16)) {
                list.push(svc as u16);
            }
        }
    }
    out
}

/// Equal for ECMP: the same LOCAL_PREF, AS_PATH length and MED.
/// Whether a neighbour's route with `path` is stored: a service imports
/// one of its targets, or (`keep_all`) we reflect what the neighbour
/// sends.
fn keeps(importers: &HashMap<VpnId, Vec<u16>>, keep_all: bool, path: &VpnPath) -> bool {
    keep_all || path.route_targets.iter().any(|t| importers.contains_key(t))
}

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
    use crate::config::parse;
    use crate::mgmt::Names;
    use dataplane::tables::{NextHop, TableOp, Tables, GROUP_BIT};
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
        /// The RIB manager, as the control thread holds it.
        rib: Rib,
        names: Names,
        _pending: Pending,
    }

    fn setup() -> T {
        setup_with(CONFIG)
    }

    fn setup_with(text: &str) -> T {
        let loaded = parse(Path::new("test.toml"), text).expect("config");
        let tables =
            crate::router::build_tables(&loaded, &[[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]])
                .expect("tables");
        let (mut sp, pending) = Speaker::from_config(&loaded.config).expect("[bgp]");
        let rib = Rib::from_tables(&tables);
        sp.sync_local(&rib, |_, _| false);
        T {
            sp,
            tables,
            rib,
            names: Names::from_config(&loaded.config),
            _pending: pending,
        }
    }

    /// An UPDATE from neighbour `i`: the ops the RIB manager then wants.
    fn learned(t: &mut T, i: usize, u: Vpnv4Update) -> Vec<TableOp> {
        t.sp.learned(i, u, &mut t.rib);
        t.rib.take_ops()
    }

    fn path(lp: Option<u32>, as_path: &[u32], med: Option<u32>, rt: &str) -> VpnPath {
        VpnPath {
            next_hop: "198.18.0.9".parse().unwrap(),
            route_targets: vec![rt.parse().unwrap()],
            local_pref: lp,
            med,
            as_path: as_path.to_vec(),
            reflection: None,
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
        t.rib.rejected(&[]);
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
        let ops = learned(t, i, update("0.0.0.0", 0, label, p));
        apply(t, &ops);
        upstream_next_hop(t, "0.0.0.0", 0).map(|nh| nh.labels)
    }

    /// Neighbour `i`'s session reports Established, its `establishment`th
    /// time.
    fn up(t: &mut T, i: usize, establishment: u64) {
        let n = Negotiated {
            hold_time: 90,
            peer_id: Ipv4Addr::new(192, 0, 2, 1 + i as u8),
            peer_asn: t.sp.neighbors[i].remote_asn,
            asn4: true,
            route_refresh: true,
        };
        t.sp.established(i, n, establishment, Instant::now());
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
        up(&mut t, 0, 1);
        // What the control thread does: the file's next hops and routes
        // through the RIB manager, then BGP's part; the whole batch.
        let reload = |t: &mut T, text: &str| {
            let loaded = parse(Path::new("test.toml"), text).expect("config");
            let mut plan = crate::reload::plan(
                &t.tables,
                &t.names,
                &crate::neighbor::Neighbors::default(),
                &loaded,
            )
            .expect("plan");
            crate::reload::apply(&mut plan, &mut t.rib);
            t.names = std::mem::take(&mut plan.names);
            let mut ops = std::mem::take(&mut plan.ops);
            t.sp.reload(&loaded.config, &[0], &mut t.rib);
            ops.extend(t.rib.take_ops());
            t.sp.sync_local(&t.rib, |_, a| a == Ipv4Addr::new(10, 0, 0, 51));
            ops
        };
        let routes = |ops: &[TableOp]| -> Vec<(u32, u8, bool)> {
            ops.iter()
                .filter_map(|op| match *op {
                    TableOp::AddRoute { prefix, len, .. } => Some((prefix, len, true)),
                    TableOp::DeleteRoute { prefix, len, .. } => Some((prefix, len, false)),
                    _ => None,
                })
                .collect()
        };
        let client = "[[next_hop]]\nname = \"client\"\nport = \"access0\"\nmac = \"02:00:5e:00:00:50\"\n[[service]]";
        let static_up = "upstream = [ { prefix = \"192.0.2.0/24\", next_hop = \"hub1\" } ]";
        let own = CONFIG.replacen("[[service]]", client, 1).replace(
            static_up,
            "downstream = [ { prefix = \"10.0.0.50/32\", next_hop = \"client\" } ]",
        );
        assert!(told(&mut t).is_empty());
        // BGP learns the prefix the file sets: nothing installed.
        let ops = learned(
            &mut t,
            0,
            update("192.0.2.0", 24, 3001, path(None, &[], None, "65000:1")),
        );
        assert!(ops.is_empty(), "{ops:?}");

        // The file drops its upstream route and gains a downstream one
        // (and the next hop `client`, the plan's op).
        let ops = reload(&mut t, &own);
        assert!(
            matches!(
                ops[..],
                [
                    TableOp::SetNextHop { id: 2, .. },
                    TableOp::SetNextHop { id: 3, .. },
                    TableOp::AddRoute {
                        prefix: 0xc000_0200,
                        len: 24,
                        next_hop: 3,
                        ..
                    },
                    TableOp::AddRoute {
                        prefix: 0x0a00_0032,
                        len: 32,
                        next_hop: 2,
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
        assert_eq!(t.sp.originated.len(), 1);

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

        // Import targets that no longer match: BGP's route goes, and the
        // next hop it made for it.
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
                [
                    TableOp::DeleteRoute {
                        prefix: 0xc000_0200,
                        len: 24,
                        ..
                    },
                    TableOp::SetNextHop {
                        id: 3,
                        next_hop: NextHop { port: u16::MAX, .. }
                    }
                ]
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

        // Imported again: the route, dropped while no service imported it,
        // is asked for again (ROUTE-REFRESH), and the peer's answer brings
        // it back.
        let ops = reload(&mut t, &own);
        assert!(routes(&ops).is_empty(), "{ops:?}");
        assert_eq!(t.sp.neighbors[0].rib_in.len(), 0);
        assert!(commands(&mut t, 0).contains(&ToSession::AskRefresh));
        let mut ops = ops;
        ops.extend(learned(
            &mut t,
            0,
            update("192.0.2.0", 24, 3001, path(None, &[], None, "65000:1")),
        ));
        assert!(
            matches!(
                ops[..],
                [
                    TableOp::SetNextHop { id: 3, .. },
                    TableOp::AddRoute {
                        prefix: 0xc000_0200,
                        len: 24,
                        next_hop: 3,
                        ..
                    }
                ]
            ),
            "imported again: {ops:?}"
        );
        apply(&mut t, &ops);
        let ops = reload(&mut t, CONFIG);
        assert_eq!(
            routes(&ops),
            [(0x0a00_0032, 32, false), (0xc000_0200, 24, true)],
            "the file's route again, and BGP's next hop and the file's `client` let go: {ops:?}"
        );
        apply(&mut t, &ops);
        assert_eq!(
            t.tables.services[0].upstream.get(0xc000_0200, 24),
            Some(0),
            "the file's hub1"
        );
        assert_eq!(t.rib.next_hops_in_use(), 2, "hub1 and hub2 only");
        assert_eq!(told(&mut t), [('-', "10.0.0.50/32".to_owned(), rd)]);
        assert!(t.sp.originated.is_empty());
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
        assert!(learned(&mut t, 0, gone).is_empty());

        // The file's route for a live session's address: advertised with
        // it, and when the file lets go, the session's stays.
        let held = own.replace("10.0.0.50/32", "10.0.0.51/32");
        let ops = reload(&mut t, &held);
        assert_eq!(
            routes(&ops),
            [(0xc000_0200, 24, false), (0x0a00_0033, 32, true)],
            "{ops:?}"
        );
        apply(&mut t, &ops);
        assert_eq!(
            told(&mut t),
            [('+', "10.0.0.51/32".to_owned(), "65000:100".to_owned())]
        );
        let ops = reload(&mut t, CONFIG);
        assert_eq!(
            routes(&ops),
            [(0x0a00_0033, 32, false), (0xc000_0200, 24, true)],
            "{ops:?}"
        );
        assert!(
            told(&mut t).is_empty(),
            "the session's route is not withdrawn"
        );
        assert_eq!(t.sp.originated.len(), 1);
    }

    /// `ctl route` routes toward our side are advertised and withdrawn
    /// like the file's; one the tables refused is not advertised, and an
    /// upstream one is not ours to advertise.
    #[test]
    fn ctl_routes_toward_our_side_are_advertised_and_withdrawn() {
        let mut t = setup();
        up(&mut t, 0, 1);
        let host = |last: u8| RouteKey {
            service: 0,
            table: RouteTable::Downstream,
            prefix: u32::from(Ipv4Addr::new(10, 0, 0, last)),
            len: 32,
        };
        let rd = "65000:100".to_owned();
        assert!(t.rib.set(Source::Ctl, host(60), &Target::NextHop(0)));
        t.sp.sync_local(&t.rib, |_, _| false);
        assert_eq!(told(&mut t), [('+', "10.0.0.60/32".to_owned(), rd.clone())]);
        // Refused by the tables: not installed, not advertised.
        t.rib.take_ops();
        assert!(t.rib.set(Source::Ctl, host(61), &Target::NextHop(0)));
        let ops = t.rib.take_ops();
        t.rib
            .rejected(&[(ops[0], "the route table's memory limit".into())]);
        let up = RouteKey {
            table: RouteTable::Upstream,
            ..host(62)
        };
        assert!(t.rib.set(Source::Ctl, up, &Target::NextHop(0)));
        t.sp.sync_local(&t.rib, |_, _| false);
        assert!(told(&mut t).is_empty());
        // Deleted: withdrawn.
        assert!(t.rib.remove(Source::Ctl, host(60)));
        t.sp.sync_local(&t.rib, |_, _| false);
        assert_eq!(told(&mut t), [('-', "10.0.0.60/32".to_owned(), rd)]);
        assert!(t.sp.originated.is_empty());
    }

    /// A VPN label of 3 (Implicit NULL) from a peer: the client's packet
    /// leaves under the transport label only (RFC 3032 section 2.1); 0
    /// (IPv4 Explicit NULL) is pushed as it is. Golden bytes end to end:
    /// the UPDATE as the peer sends it, through RFC 7606's check, the
    /// codec, the speaker, the RIB manager and the tables, and a client
    /// frame through the data plane's pipeline.
    #[test]
    fn label_3_forwards_under_the_transport_label_only_and_0_is_pushed() {
        use crate::bgp::{check_update, decode, vpnv4_of, BgpMessage, Verdict};
        use dataplane::pipeline::{process, Frame, Outcome, VecFrame};
        use dataplane::topology::{ethernet, ipv4_udp};
        fn hex(s: &str) -> Vec<u8> {
            let s: String = s.split_whitespace().collect();
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        }
        // 0/0, RD 65000:1, label `LLLLL` (20 bits, then S), target
        // 65000:1, next hop 198.18.0.9, LOCAL_PREF 100.
        const UPDATE: &str = "ffffffffffffffffffffffffffffffff 0050 02 0000 0039
            40 01 01 00  40 02 00  40 05 04 00000064
            c0 10 08 0002fde800000001
            80 0e 1d 0001 80 0c 0000000000000000 c6120009 00
               58 LLLLL1 0000fde800000001";
        let mut t = setup_with(&CONFIG.replace(
            "vpn_label = 1001\n",
            "vpn_label = 1001\nanti_spoofing = false\n",
        ));
        let client = ipv4_udp(0x0a00_000a, 0xc633_6407, 64, 0, 9, b"hello");
        let frame = ethernet(
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0x5e, 0, 0x0a, 0x0a],
            0,
            0x0800,
            &client,
        );
        let forwarded = ipv4_udp(0x0a00_000a, 0xc633_6407, 63, 0, 9, b"hello");
        for (label, lses) in [
            // Transport 100 (hub1's), bottom of stack, TTL 63.
            ("00003", "00064 1 3f"),
            ("00000", "00064 0 3f  00000 1 3f"),
            ("00bb9", "00064 0 3f  00bb9 1 3f"),
        ] {
            let bytes = hex(&UPDATE.replace("LLLLL", label));
            assert!(matches!(
                check_update(&bytes, true, false),
                Verdict::Fine { .. }
            ));
            let Ok(BgpMessage::Update(u)) = decode(&bytes, true) else {
                panic!("not an UPDATE");
            };
            let ops = learned(&mut t, 0, vpnv4_of(&u));
            apply(&mut t, &ops);
            let mut f = VecFrame::new(&frame);
            let next = process(&t.tables, 0, &mut f);
            assert_eq!(next.outcome, Outcome::Upstream, "label {label}");
            let want = [
                hex("02005e000209 020000000002 8847"),
                hex(&lses.replace(' ', "")),
                forwarded.clone(),
            ]
            .concat();
            assert_eq!(f.data(), &want[..], "label {label}");
        }
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
        t.sp.down(1, "test".into(), &mut t.rib);
        let ops = t.rib.take_ops();
        apply(&mut t, &ops);
        assert_eq!(
            upstream_next_hop(&t, "0.0.0.0", 0).unwrap().labels,
            [100, 3001]
        );
        // Neighbour 0 withdraws: the route goes.
        let mut w = update("0.0.0.0", 0, 3001, path(None, &[], None, "65000:1"));
        w.withdrawn = std::mem::take(&mut w.reach);
        w.path = None;
        let ops = learned(&mut t, 0, w);
        assert!(
            matches!(
                ops[..],
                [
                    TableOp::DeleteRoute { len: 0, .. },
                    TableOp::SetNextHop {
                        next_hop: NextHop { port: u16::MAX, .. },
                        ..
                    }
                ]
            ),
            "the route, and the next hop made for it: {ops:?}"
        );
        apply(&mut t, &ops);
        assert!(upstream_next_hop(&t, "0.0.0.0", 0).is_none());
    }

    #[test]
    fn foreign_targets_loops_statics_and_unresolved_neighbours_install_nothing() {
        let mut t = setup();
        // A target blue does not import.
        assert!(learned(
            &mut t,
            0,
            update("0.0.0.0", 0, 3001, path(None, &[], None, "65000:9"))
        )
        .is_empty());
        // Our own AS in the path, or our own next hop: loops.
        assert!(learned(
            &mut t,
            0,
            update("0.0.0.0", 0, 3001, path(None, &[65000], None, "65000:1"))
        )
        .is_empty());
        let mut own = path(None, &[], None, "65000:1");
        own.next_hop = "198.18.0.1".parse().unwrap();
        assert!(learned(&mut t, 0, update("0.0.0.0", 0, 3001, own)).is_empty());
        assert_eq!(t.sp.neighbors[0].loops_dropped, 2);
        // The configuration's own upstream route stays.
        assert!(learned(
            &mut t,
            0,
            update("192.0.2.0", 24, 3001, path(None, &[], None, "65000:1"))
        )
        .is_empty());
        // A neighbour without `via`: kept in its RIB, not installed.
        assert!(learned(
            &mut t,
            2,
            update("0.0.0.0", 0, 3001, path(None, &[], None, "65000:1"))
        )
        .is_empty());
        assert_eq!(
            (t.sp.neighbors[2].rib_in.len(), t.sp.neighbors[2].unresolved),
            (1, 1)
        );
        // One next hop per (via, label), shared by the routes using it,
        // and following the via's MAC.
        let a = learned(
            &mut t,
            0,
            update("10.9.0.0", 16, 3001, path(None, &[], None, "65000:1")),
        );
        apply(&mut t, &a);
        let b = learned(
            &mut t,
            0,
            update("10.8.0.0", 16, 3001, path(None, &[], None, "65000:1")),
        );
        assert!(
            matches!(b[..], [TableOp::AddRoute { .. }]),
            "no new next hop: {b:?}"
        );
        t.rib.set_neighbor(0, [2, 9, 9, 9, 9, 9]);
        let follow: Vec<TableOp> = t
            .rib
            .take_ops()
            .into_iter()
            .filter(|op| !matches!(op, TableOp::SetNeighbor { next_hop: 0, .. }))
            .collect();
        assert_eq!(follow.len(), 1);
    }

    #[test]
    fn equal_paths_share_a_route_as_an_ecmp_group_when_multipath_allows() {
        let mut t = setup_with(&CONFIG.replace("[bgp]\n", "[bgp]\nmultipath = 2\n"));
        let equal = || path(Some(100), &[], None, "65000:1");
        for (i, label) in [(0, 3001), (1, 3002), (2, 3003)] {
            let ops = learned(&mut t, i, update("0.0.0.0", 0, label, equal()));
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
        let ops = learned(
            &mut t,
            1,
            update(
                "0.0.0.0",
                0,
                3002,
                path(Some(100), &[65001], None, "65000:1"),
            ),
        );
        apply(&mut t, &ops);
        let id = t.tables.services[0].upstream.lookup(0x0808_0808);
        assert!(!dataplane::tables::is_group(id));
        assert_eq!(t.tables.next_hops()[id as usize].labels, [100, 3001]);
        // Equal again: the same group comes back (its id, freed when it
        // lost a member, is the one reused), not a new one.
        let ops = learned(&mut t, 1, update("0.0.0.0", 0, 3002, equal()));
        assert!(
            ops.iter()
                .filter(|o| matches!(o, TableOp::SetGroup { .. }))
                .all(|o| matches!(o, TableOp::SetGroup { id, .. } if *id == GROUP_BIT)),
            "{ops:?}"
        );
        apply(&mut t, &ops);
        assert_eq!(t.tables.groups().len(), 1);
        assert_eq!(t.tables.services[0].upstream.lookup(0x0808_0808), GROUP_BIT);
    }

    /// Pages of `show bgp rib in|out` taken one after the other are the
    /// unpaged reply, cut: every route once, in order, across neighbours;
    /// the last page says there is no next.
    #[test]
    fn rib_pages_cover_every_route_once_in_order() {
        let mut t = setup();
        for (i, label) in [(0, 3001), (1, 3002), (2, 3003)] {
            for third in 0..4u8 {
                let ops = learned(
                    &mut t,
                    i,
                    update(
                        &format!("10.{third}.0.0"),
                        16,
                        label,
                        path(None, &[], None, "65000:1"),
                    ),
                );
                apply(&mut t, &ops);
            }
        }
        t.sp.advertise(0, "10.0.0.50".parse().unwrap());
        t.sp.advertise(0, "10.0.0.51".parse().unwrap());
        let names = t.names.services.clone();
        for which in ["in", "out"] {
            // Out: neighbour 0's Adj-RIB-Out (each neighbour's holds both).
            let nb = (which == "out").then_some("198.18.0.2");
            let all =
                t.sp.show_rib(Some(which), nb, None, &names, &t.rib)
                    .unwrap();
            let all = all.as_array().unwrap().clone();
            assert_eq!(all.len(), if which == "in" { 12 } else { 2 });
            for limit in [1, 3, 5, 12, 100] {
                let mut got = Vec::new();
                let mut offset = Some(0);
                while let Some(o) = offset {
                    let page =
                        t.sp.show_rib(Some(which), nb, Some((o as usize, limit)), &names, &t.rib)
                            .unwrap();
                    assert_eq!(page["total"], all.len());
                    assert_eq!(page["offset"], o);
                    let routes = page["routes"].as_array().unwrap();
                    assert!(routes.len() <= limit);
                    got.extend(routes.iter().cloned());
                    offset = page["next_offset"].as_u64();
                }
                assert_eq!(got, all, "{which}, pages of {limit}");
            }
            let past =
                t.sp.show_rib(Some(which), nb, Some((50, 10)), &names, &t.rib)
                    .unwrap();
            assert_eq!(past["routes"], json!([]));
            assert!(past["next_offset"].is_null());
        }
        let all =
            t.sp.show_rib(Some("in"), None, None, &names, &t.rib)
                .unwrap();
        assert_eq!(
            all[0]["best_for"],
            json!(["blue"]),
            "neighbour 0's paths are best: {all}"
        );
        assert_eq!(all[4]["best_for"], json!([]), "neighbour 1's are not");
        assert!(t
            .sp
            .show_rib(None, None, Some((0, 1)), &names, &t.rib)
            .is_err());
        // Every neighbour's Adj-RIB-Out, one after the other, paged alike.
        let all =
            t.sp.show_rib(Some("out"), None, None, &names, &t.rib)
                .unwrap();
        let all = all.as_array().unwrap().clone();
        let by: Vec<&str> = all
            .iter()
            .map(|r| r["neighbor"].as_str().unwrap())
            .collect();
        assert_eq!(
            by,
            [
                "198.18.0.2",
                "198.18.0.2",
                "198.18.0.3",
                "198.18.0.3",
                "198.18.0.4",
                "198.18.0.4"
            ]
        );
        for limit in [1, 4, 5] {
            let mut got = Vec::new();
            let mut offset = Some(0);
            while let Some(o) = offset {
                let page =
                    t.sp.show_rib(Some("out"), None, Some((o as usize, limit)), &names, &t.rib)
                        .unwrap();
                assert_eq!(page["total"], 6);
                got.extend(page["routes"].as_array().unwrap().iter().cloned());
                offset = page["next_offset"].as_u64();
            }
            assert_eq!(got, all, "out, pages of {limit}");
        }
        let in1 =
            t.sp.show_rib(Some("in"), Some("198.18.0.3"), None, &names, &t.rib)
                .unwrap();
        assert_eq!(in1.as_array().unwrap().len(), 4, "neighbour 1's only");
        let e =
            t.sp.show_rib(Some("out"), Some("192.0.2.1"), None, &names, &t.rib);
        assert!(e
            .unwrap_err()
            .contains("198.18.0.2, 198.18.0.3, 198.18.0.4"));
    }

    /// Selection visits the services importing a route's targets, not
    /// every service: 1,000 services of which one imports, N prefixes
    /// (HDVRF_SELECT_PREFIXES, default 100,000) learnt and then withdrawn
    /// (not in CI: `cargo test --release -p control --lib
    /// selection_cost -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn selection_cost_follows_importers_not_services() {
        let n: u32 = std::env::var("HDVRF_SELECT_PREFIXES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000);
        let mut text = CONFIG.replace("label_count = 64", "label_count = 4096");
        for i in 1..1000 {
            text = text.replacen(
                "[bgp]\n",
                &format!(
                    "[[service]]\nname = \"s{i}\"\ngateway = \"10.0.0.1\"\nvpn_label = {}\naccess = [ {{ port = \"access0\", vlan = {i} }} ]\nroute_distinguisher = \"65000:{}\"\nimport_targets = [\"65001:{i}\"]\n[bgp]\n",
                    1001 + i,
                    100 + i
                ),
                1,
            );
        }
        let mut t = setup_with(&text);
        assert_eq!(t.sp.services.len(), 1000);
        let route = |i: u32| VpnRoute {
            rd: "65000:1".parse().unwrap(),
            prefix: Ipv4Addr::from(0x0b00_0000 + (i << 8)),
            len: 24,
            label: 3001,
        };
        let t0 = std::time::Instant::now();
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let u = Vpnv4Update {
                reach: chunk.iter().map(|&i| route(i)).collect(),
                path: Some(path(None, &[], None, "65000:1")),
                withdrawn: Vec::new(),
                end_of_rib: false,
            };
            t.sp.learned(0, u, &mut t.rib);
        }
        let learn = t0.elapsed();
        assert_eq!(t.rib.len(), n as usize + 1, "blue's, and the file's /24");
        let t0 = std::time::Instant::now();
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let u = Vpnv4Update {
                reach: Vec::new(),
                path: None,
                withdrawn: chunk.iter().map(|&i| route(i)).collect(),
                end_of_rib: false,
            };
            t.sp.learned(0, u, &mut t.rib);
        }
        let withdraw = t0.elapsed();
        assert_eq!(t.rib.len(), 1);
        println!(
            "select services=1000 prefixes={n} learn_s={:.3} withdraw_s={:.3}",
            learn.as_secs_f64(),
            withdraw.as_secs_f64()
        );
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

    /// CONFIG with neighbour 1 (198.18.0.3) an eBGP peer in AS 65001.
    fn mixed() -> String {
        CONFIG.replacen(
            "address = \"198.18.0.3\"\nremote_asn = 65000",
            "address = \"198.18.0.3\"\nremote_asn = 65001",
            1,
        )
    }

    /// Everything neighbour `i`'s session task has been told since last
    /// asked.
    fn commands(t: &mut T, i: usize) -> Vec<ToSession> {
        let mut out = Vec::new();
        while let Ok(m) = t._pending[i].1.try_recv() {
            out.push(m);
        }
        out
    }

    /// Neighbour `i`'s Adj-RIB-Out, paths unshared.
    fn out_of(sp: &Speaker, i: usize) -> BTreeMap<RibKey, (u32, VpnPath)> {
        sp.neighbors[i]
            .rib_out
            .iter()
            .map(|(k, (label, p))| (*k, (*label, VpnPath::clone(p))))
            .collect()
    }

    fn host(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, last)
    }

    /// Blue's route for 10.0.0.`last`/32 as BGP carries it.
    fn blue(last: u8) -> VpnRoute {
        VpnRoute {
            rd: "65000:100".parse().unwrap(),
            prefix: host(last),
            len: 32,
            label: 1001,
        }
    }

    /// What blue's routes are sent with: toward an iBGP peer, and toward
    /// an eBGP one.
    fn blue_paths() -> (VpnPath, VpnPath) {
        let ibgp = VpnPath {
            next_hop: "198.18.0.1".parse().unwrap(),
            route_targets: vec!["65000:2".parse().unwrap()],
            local_pref: Some(100),
            med: None,
            as_path: Vec::new(),
            reflection: None,
        };
        let ebgp = VpnPath {
            local_pref: None,
            as_path: vec![65000],
            reflection: None,
            ..ibgp.clone()
        };
        (ibgp, ebgp)
    }

    /// An iBGP and an eBGP neighbour get their own Adj-RIB-Out (AS_PATH,
    /// LOCAL_PREF), are sent it, and are shown it; a withdrawal leaves
    /// both; a neighbour that is down is sent nothing.
    #[test]
    fn ebgp_and_ibgp_neighbours_get_their_own_adj_rib_outs() {
        let mut t = setup_with(&mixed());
        up(&mut t, 0, 1);
        up(&mut t, 1, 1);
        for i in [0, 1] {
            assert_eq!(commands(&mut t, i), [ToSession::Table(1, Vec::new())]);
        }
        t.sp.advertise(0, host(50));
        t.sp.advertise(0, host(51));
        let (ibgp, ebgp) = blue_paths();
        let key = |last: u8| (host(last), 32, blue(last).rd);
        for (i, want) in [(0, &ibgp), (1, &ebgp), (2, &ibgp)] {
            let out = out_of(&t.sp, i);
            assert_eq!(
                out,
                BTreeMap::from([
                    (key(50), (1001, want.clone())),
                    (key(51), (1001, want.clone()))
                ]),
                "neighbour {i}"
            );
        }
        for (i, want) in [(0, &ibgp), (1, &ebgp)] {
            assert_eq!(
                commands(&mut t, i),
                [
                    ToSession::Advertise(vec![blue(50)], want.clone()),
                    ToSession::Advertise(vec![blue(51)], want.clone())
                ]
            );
        }
        assert!(commands(&mut t, 2).is_empty(), "down: sent nothing");
        // Shown as sent.
        let names = t.names.services.clone();
        let shown = |t: &T, n: &str| {
            t.sp.show_rib(Some("out"), Some(n), None, &names, &t.rib)
                .unwrap()
        };
        assert_eq!(
            shown(&t, "198.18.0.3")[0],
            json!({
                "prefix": "10.0.0.50/32", "rd": "65000:100", "label": 1001,
                "next_hop": "198.18.0.1", "route_targets": ["65000:2"],
                "local_pref": null, "med": null, "as_path": [65000],
                "neighbor": "198.18.0.3", "service": "blue",
            })
        );
        let ib = shown(&t, "198.18.0.2");
        assert_eq!(ib.as_array().unwrap().len(), 2);
        assert_eq!(
            (&ib[1]["prefix"], &ib[1]["local_pref"], &ib[1]["as_path"]),
            (&json!("10.0.0.51/32"), &json!(100), &json!([]))
        );
        let n = t.sp.show_neighbors(Instant::now());
        let counts: Vec<&Value> = (0..3).map(|i| &n[i]["routes_out"]).collect();
        assert_eq!(counts, [&json!(2), &json!(2), &json!(2)]);
        // A withdrawal: out of every Adj-RIB-Out, and sent to those up.
        assert!(t.sp.withdraw(0, host(50)), "neighbours are up: it waits");
        for i in 0..3 {
            assert_eq!(out_of(&t.sp, i).into_keys().collect::<Vec<_>>(), [key(51)]);
        }
        for i in [0, 1] {
            assert_eq!(commands(&mut t, i), [ToSession::Withdraw(vec![blue(50)])]);
        }
        assert!(commands(&mut t, 2).is_empty());
        assert!(!t.sp.withdraw(0, host(50)), "already gone");
        assert!(commands(&mut t, 0).is_empty());
    }

    /// A neighbour that goes down and comes back is sent its whole
    /// Adj-RIB-Out once, as it is then (what changed while it was down
    /// included, nothing sent meanwhile); ROUTE-REFRESH sends it again.
    #[test]
    fn a_neighbour_that_comes_back_gets_the_whole_table_once() {
        let mut t = setup();
        up(&mut t, 0, 1);
        t.sp.advertise(0, host(50));
        assert_eq!(commands(&mut t, 0).len(), 2, "the table, then the route");
        t.sp.down(0, "test".into(), &mut t.rib);
        t.sp.advertise(0, host(51));
        t.sp.advertise(0, host(52));
        assert!(
            !t.sp.withdraw(0, host(50)),
            "no neighbour up: the removal need not wait"
        );
        assert!(commands(&mut t, 0).is_empty(), "down: sent nothing");
        assert_eq!(t.sp.neighbors[0].rib_out.len(), 2, "but kept current");
        up(&mut t, 0, 2);
        let (ibgp, _) = blue_paths();
        let table = vec![(ibgp, vec![blue(51), blue(52)])];
        assert_eq!(commands(&mut t, 0), [ToSession::Table(2, table.clone())]);
        t.sp.route_refresh(0);
        assert_eq!(commands(&mut t, 0), [ToSession::Refresh(2, table)]);
        t.sp.route_refresh(1);
        assert!(commands(&mut t, 1).is_empty(), "not while it is down");
    }

    /// Advertising what a neighbour already has sends it nothing: the
    /// same session route again, the file's route for a session's /32, a
    /// reload that changes nothing. New export targets re-advertise,
    /// without a withdrawal.
    #[test]
    fn a_readvertisement_that_changes_nothing_sends_nothing() {
        let mut t = setup();
        up(&mut t, 0, 1);
        commands(&mut t, 0);
        t.sp.advertise(0, host(50));
        assert_eq!(commands(&mut t, 0).len(), 1);
        t.sp.advertise(0, host(50));
        assert!(commands(&mut t, 0).is_empty());
        let k = RouteKey {
            service: 0,
            table: RouteTable::Downstream,
            prefix: u32::from(host(50)),
            len: 32,
        };
        assert!(t.rib.set(Source::File, k, &Target::NextHop(0)));
        t.sp.sync_local(&t.rib, |_, a| a == host(50));
        assert!(commands(&mut t, 0).is_empty());
        let config = |text: &str| parse(Path::new("test.toml"), text).expect("config").config;
        t.sp.reload(&config(CONFIG), &[0], &mut t.rib);
        assert!(commands(&mut t, 0).is_empty());
        let other = CONFIG.replace(
            "export_targets = [\"65000:2\"]",
            "export_targets = [\"65000:3\"]",
        );
        t.sp.reload(&config(&other), &[0], &mut t.rib);
        let (mut ibgp, _) = blue_paths();
        ibgp.route_targets = vec!["65000:3".parse().unwrap()];
        assert_eq!(
            commands(&mut t, 0),
            [ToSession::Advertise(vec![blue(50)], ibgp)]
        );
    }

    /// One step of [`any_interleaving_gives_the_adj_rib_outs_of_recomputing_from_scratch`].
    #[derive(Clone, Debug)]
    enum Step {
        /// The session for 10.0.0.(50 + k) comes up (published, then
        /// advertised) or ends (withdrawn, then removed).
        Session(u8, bool),
        /// `ctl`'s (else the file's) downstream route k set or removed,
        /// then what BGP advertises of them synced.
        Local(bool, u8, bool),
        /// Neighbour i, if the speaker has it up, sends upstream prefix k
        /// with a label, or withdraws it.
        Bgp(usize, u8, Option<u32>),
        /// Neighbour i's session goes up or down; the speaker hears of it
        /// at a later [`Step::Deliver`].
        Flap(usize),
        /// The oldest event neighbour i's session reported reaches the
        /// speaker.
        Deliver(usize),
        /// Neighbour i's peer asks for a route refresh.
        Refresh(usize),
        /// A reload to configuration variant v (RD, export targets).
        Reload(u8),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            (0u8..3, any::<bool>()).prop_map(|(k, on)| Step::Session(k, on)),
            (any::<bool>(), 0u8..4, any::<bool>()).prop_map(|(c, k, on)| Step::Local(c, k, on)),
            (0usize..3, 0u8..3, proptest::option::of(3001u32..3003))
                .prop_map(|(i, k, l)| Step::Bgp(i, k, l)),
            (0usize..3).prop_map(Step::Flap),
            (0usize..3).prop_map(Step::Deliver),
            (0usize..3).prop_map(Step::Deliver),
            (0usize..3).prop_map(Step::Refresh),
            (0u8..3).prop_map(Step::Reload),
        ]
    }

    /// What a session reports, on its way to the speaker.
    #[derive(Clone, Copy, Debug)]
    enum Event {
        Up(u64),
        Down,
        Refresh,
    }

    /// A session task and its peer, as far as routes go: the session's
    /// [`Gate`](crate::bgp::session::Gate), and the routes the peer holds
    /// from it.
    #[derive(Default)]
    struct Peer {
        established: bool,
        gate: crate::bgp::session::Gate,
        events: std::collections::VecDeque<Event>,
        holds: BTreeMap<RibKey, (u32, VpnPath)>,
    }

    impl Peer {
        /// A command from the speaker, passed on as the session would.
        fn take(&mut self, c: ToSession) -> Result<(), proptest::test_runner::TestCaseError> {
            let held = |table: Table| -> BTreeMap<RibKey, (u32, VpnPath)> {
                table
                    .into_iter()
                    .flat_map(|(path, rs)| {
                        rs.into_iter()
                            .map(move |r| (key_of(&r), (r.label, path.clone())))
                    })
                    .collect()
            };
            match c {
                ToSession::Table(n, table) if self.gate.table(self.established, n, false) => {
                    self.holds = held(table);
                }
                ToSession::Refresh(n, table) if self.gate.table(self.established, n, true) => {
                    proptest::prop_assert_eq!(&held(table), &self.holds, "a refresh: the same");
                }
                ToSession::Advertise(routes, path) if self.gate.change(self.established) => {
                    for r in routes {
                        let new = (r.label, path.clone());
                        let old = self.holds.insert(key_of(&r), new.clone());
                        proptest::prop_assert_ne!(old, Some(new), "sent again unchanged");
                    }
                }
                ToSession::Withdraw(routes) if self.gate.change(self.established) => {
                    for r in routes {
                        let had = self.holds.remove(&key_of(&r));
                        proptest::prop_assert!(had.is_some(), "withdrawn, never sent");
                    }
                }
                _ => {}
            }
            Ok(())
        }
    }

    fn key_of(r: &VpnRoute) -> RibKey {
        (r.prefix, r.len, r.rd)
    }

    /// The configuration variants a reload moves between.
    fn variant(v: u8) -> String {
        match v {
            0 => mixed(),
            1 => mixed().replace("65000:100", "65000:101"),
            _ => mixed().replace(
                "export_targets = [\"65000:2\"]",
                "export_targets = [\"65000:3\"]",
            ),
        }
    }

    /// The downstream routes the file and `ctl` set: two of the
    /// sessions' /32s, a /32 of none, and a /24.
    fn local_key(k: u8) -> RouteKey {
        let (prefix, len) = match k {
            0 => (host(50), 32),
            1 => (host(51), 32),
            2 => (host(53), 32),
            _ => (Ipv4Addr::new(10, 0, 1, 0), 24),
        };
        RouteKey {
            service: 0,
            table: RouteTable::Downstream,
            prefix: u32::from(prefix),
            len,
        }
    }

    fn session_key(k: u8) -> RouteKey {
        RouteKey {
            service: 0,
            table: RouteTable::Downstream,
            prefix: u32::from(host(50 + k)),
            len: 32,
        }
    }

    /// Upstream prefixes neighbours send.
    fn bgp_prefix(k: u8) -> (&'static str, u8) {
        [("0.0.0.0", 0), ("10.9.0.0", 16), ("192.0.2.0", 24)][usize::from(k)]
    }

    /// A path from neighbour `i` (1 is eBGP, its AS first).
    fn path_from(i: usize) -> VpnPath {
        path(None, if i == 1 { &[65001] } else { &[] }, None, "65000:1")
    }

    fn commit(t: &mut T) {
        let ops = t.rib.take_ops();
        apply(t, &ops);
    }

    /// What the tables hold for `k`: the source installed, and where it
    /// leads.
    fn installed(t: &T, k: &RouteKey) -> Option<(Source, NextHop)> {
        let (source, id) = t.rib.installed(k)?;
        assert!(!dataplane::tables::is_group(id));
        Some((source, t.tables.next_hops()[id as usize]))
    }

    proptest::proptest! {
        /// Random interleavings of sessions', the file's, `ctl`'s and
        /// BGP's adds and removes, neighbours going down and up (the
        /// speaker hearing of it late), route refreshes and reloads: each
        /// neighbour's Adj-RIB-Out, and the tables, equal those recomputed
        /// from scratch from the final state. And what each peer was sent
        /// (through the sessions' gate) is its Adj-RIB-Out whenever the
        /// speaker has heard all its session said, with no advertisement
        /// of what the peer had already, and no withdrawal of what it had
        /// not.
        #[test]
        fn any_interleaving_gives_the_adj_rib_outs_of_recomputing_from_scratch(
            steps in proptest::collection::vec(step(), 1..80)
        ) {
            let mut t = setup_with(&mixed());
            let mut peers: Vec<Peer> = (0..3).map(|_| Peer::default()).collect();
            let mut live: BTreeSet<u8> = BTreeSet::new();
            let mut local: BTreeMap<(bool, u8), ()> = BTreeMap::new();
            let mut learnt: BTreeMap<(usize, u8), u32> = BTreeMap::new();
            let mut config = 0u8;
            let parsed = |v: u8| parse(Path::new("test.toml"), &variant(v)).expect("config").config;
            for s in steps {
                match s {
                    Step::Session(k, true) if !live.contains(&k) => {
                        live.insert(k);
                        t.rib.set(Source::Session, session_key(k), &Target::NextHop(0));
                        commit(&mut t);
                        t.sp.advertise(0, host(50 + k));
                    }
                    Step::Session(k, false) if live.contains(&k) => {
                        live.remove(&k);
                        t.sp.withdraw(0, host(50 + k));
                        t.rib.remove(Source::Session, session_key(k));
                        commit(&mut t);
                    }
                    Step::Session(..) => {}
                    Step::Local(ctl, k, on) => {
                        let src = if ctl { Source::Ctl } else { Source::File };
                        if on {
                            t.rib.set(src, local_key(k), &Target::NextHop(1));
                            local.insert((ctl, k), ());
                        } else {
                            t.rib.remove(src, local_key(k));
                            local.remove(&(ctl, k));
                        }
                        commit(&mut t);
                        let held = live.clone();
                        t.sp.sync_local(&t.rib, |_, a| {
                            held.iter().any(|&k| host(50 + k) == a)
                        });
                    }
                    Step::Bgp(i, k, label) => {
                        if t.sp.neighbors[i].up.is_none() {
                            continue;
                        }
                        let (prefix, len) = bgp_prefix(k);
                        let mut u = update(prefix, len, label.unwrap_or(3001), path_from(i));
                        match label {
                            Some(l) => {
                                learnt.insert((i, k), l);
                            }
                            None => {
                                learnt.remove(&(i, k));
                                u.withdrawn = std::mem::take(&mut u.reach);
                                u.path = None;
                            }
                        }
                        t.sp.learned(i, u, &mut t.rib);
                        commit(&mut t);
                    }
                    Step::Flap(i) => {
                        let p = &mut peers[i];
                        p.holds.clear();
                        if p.established {
                            p.established = false;
                            p.events.push_back(Event::Down);
                        } else {
                            p.established = true;
                            let k = p.gate.up();
                            p.events.push_back(Event::Up(k));
                        }
                    }
                    Step::Deliver(i) => match peers[i].events.pop_front() {
                        Some(Event::Up(k)) => up(&mut t, i, k),
                        Some(Event::Down) => {
                            t.sp.down(i, "test".into(), &mut t.rib);
                            learnt.retain(|&(j, _), _| j != i);
                            commit(&mut t);
                        }
                        Some(Event::Refresh) => t.sp.route_refresh(i),
                        None => {}
                    },
                    Step::Refresh(i) => {
                        if peers[i].established {
                            peers[i].events.push_back(Event::Refresh);
                        }
                    }
                    Step::Reload(v) => {
                        config = v;
                        t.sp.reload(&parsed(v), &[0], &mut t.rib);
                        commit(&mut t);
                        let held = live.clone();
                        t.sp.sync_local(&t.rib, |_, a| {
                            held.iter().any(|&k| host(50 + k) == a)
                        });
                    }
                }
                // The sessions pass on what their gate lets through.
                for (i, p) in peers.iter_mut().enumerate() {
                    while let Ok(c) = t._pending[i].1.try_recv() {
                        p.take(c)?;
                    }
                    if p.events.is_empty() {
                        let want = if p.established { out_of(&t.sp, i) } else { BTreeMap::new() };
                        proptest::prop_assert_eq!(&p.holds, &want, "neighbour {}'s peer", i);
                    }
                }
            }
            // From scratch: the final configuration, the neighbours the
            // speaker has up, the final routes of each source.
            let mut f = setup_with(&variant(config));
            for i in 0..3 {
                if let Some((n, _)) = t.sp.neighbors[i].up {
                    f.sp.established(i, n, 1, Instant::now());
                }
            }
            for &k in &live {
                f.rib.set(Source::Session, session_key(k), &Target::NextHop(0));
            }
            for &(ctl, k) in local.keys() {
                let src = if ctl { Source::Ctl } else { Source::File };
                f.rib.set(src, local_key(k), &Target::NextHop(1));
            }
            commit(&mut f);
            f.sp.sync_local(&f.rib, |_, a| live.iter().any(|&k| host(50 + k) == a));
            for &k in &live {
                f.sp.advertise(0, host(50 + k));
            }
            for (&(i, k), &label) in &learnt {
                let (prefix, len) = bgp_prefix(k);
                f.sp.learned(i, update(prefix, len, label, path_from(i)), &mut f.rib);
            }
            commit(&mut f);
            proptest::prop_assert_eq!(&t.sp.originated, &f.sp.originated);
            for i in 0..3 {
                proptest::prop_assert_eq!(out_of(&t.sp, i), out_of(&f.sp, i), "{}", i);
            }
            let upstream = |k: u8| {
                let (prefix, len) = bgp_prefix(k);
                RouteKey {
                    service: 0,
                    table: RouteTable::Upstream,
                    prefix: u32::from(prefix.parse::<Ipv4Addr>().unwrap()),
                    len,
                }
            };
            let keys = (0..4).map(local_key).chain((0..3).map(session_key));
            for k in keys.chain((0..3).map(upstream)) {
                proptest::prop_assert_eq!(installed(&t, &k), installed(&f, &k), "{:?}", k);
            }
        }
    }

    fn routes(n: u32, rt: &str) -> Vpnv4Update {
        Vpnv4Update {
            reach: (0..n)
                .map(|k| VpnRoute {
                    rd: "65000:1".parse().unwrap(),
                    prefix: Ipv4Addr::new(10, 9, k as u8, 0),
                    len: 24,
                    label: 3000 + k,
                })
                .collect(),
            path: Some(path(Some(100), &[], None, rt)),
            withdrawn: Vec::new(),
            end_of_rib: false,
        }
    }

    fn installed_upstream(t: &T) -> usize {
        (0..3)
            .filter(|k| upstream_next_hop(t, &format!("10.9.{k}.0"), 24).is_some())
            .count()
    }

    #[test]
    fn routes_no_service_imports_are_counted_and_not_stored() {
        let mut t = setup();
        up(&mut t, 0, 1);
        // 65000:9 is imported by no service.
        let ops = learned(&mut t, 0, routes(2, "65000:9"));
        assert!(ops.is_empty(), "{ops:?}");
        let nb = &t.sp.neighbors[0];
        assert_eq!((nb.rib_in.len(), nb.not_imported), (0, 2));
        // Imported: stored, one path shared by both routes.
        let ops = learned(&mut t, 0, routes(2, "65000:1"));
        apply(&mut t, &ops);
        assert_eq!(installed_upstream(&t), 2);
        let nb = &t.sp.neighbors[0];
        assert_eq!((nb.rib_in.len(), nb.paths.len()), (2, 1));
        assert!(Arc::ptr_eq(
            &nb.rib_in.values().next().unwrap().1,
            &nb.rib_in.values().last().unwrap().1
        ));
        // The same routes now with a target nobody imports replace them.
        let ops = learned(&mut t, 0, routes(2, "65000:9"));
        apply(&mut t, &ops);
        assert_eq!(installed_upstream(&t), 0);
        let nb = &t.sp.neighbors[0];
        assert_eq!((nb.rib_in.len(), nb.not_imported), (0, 4));
        assert!(t.sp.show_neighbors(Instant::now())[0]["rib_in_bytes"]
            .as_u64()
            .is_some());
    }

    #[test]
    fn one_route_over_max_prefixes_stops_the_session_with_cease_6_1_and_its_routes_go() {
        let limited = CONFIG.replacen(
            "address = \"198.18.0.2\"\nremote_asn = 65000\n",
            "address = \"198.18.0.2\"\nremote_asn = 65000\nmax_prefixes = 3\nmax_prefixes_warning = 50\nmax_prefixes_restart = 30\n",
            1,
        );
        assert_ne!(limited, CONFIG);
        let mut t = setup_with(&limited);
        up(&mut t, 0, 1);
        commands(&mut t, 0);
        // 2 of 3: the warning (50 %), once.
        let mut r = routes(3, "65000:1");
        let third = r.reach.pop().unwrap();
        let line = t.sp.learned(0, r.clone(), &mut t.rib);
        assert!(line.unwrap().contains("66 % of max_prefixes 3"));
        assert_eq!(t.sp.learned(0, r.clone(), &mut t.rib), None, "warned once");
        // Unimported routes do not count.
        assert_eq!(t.sp.learned(0, routes(3, "65000:9"), &mut t.rib), None);
        // Re-learnt when the targets come back; the third fills the limit.
        let mut fill = r.clone();
        fill.reach.push(third);
        assert_eq!(t.sp.learned(0, fill, &mut t.rib), None);
        let ops = t.rib.take_ops();
        apply(&mut t, &ops);
        assert_eq!(installed_upstream(&t), 3);
        assert!(commands(&mut t, 0).is_empty());
        // One more: Cease 6/1 with AFI 1, SAFI 128 and the limit.
        let mut over = update("10.9.7.0", 24, 3007, path(Some(100), &[], None, "65000:1"));
        over.reach[0].rd = "65000:1".parse().unwrap();
        let line = t.sp.learned(0, over.clone(), &mut t.rib).unwrap();
        assert!(
            line.contains("Cease 6/1") && line.contains("restarting in 30 s"),
            "{line}"
        );
        assert_eq!(
            commands(&mut t, 0),
            [ToSession::Cease {
                subcode: 1,
                data: vec![0, 1, 128, 0, 0, 0, 3],
                why: line,
                restart: Some(Duration::from_secs(30)),
            }]
        );
        let ops = t.rib.take_ops();
        apply(&mut t, &ops);
        assert_eq!(installed_upstream(&t), 0, "its routes left the tables");
        assert_eq!(t.sp.neighbors[0].rib_in.len(), 0);
        assert_eq!(t.sp.neighbors[0].prefix_limit_hits, 1);
        // What it still sends before its session reports down is not taken.
        assert_eq!(t.sp.learned(0, r.clone(), &mut t.rib), None);
        assert_eq!(t.sp.neighbors[0].rib_in.len(), 0);
        t.sp.down(0, "ceased".into(), &mut t.rib);
        // Up again: taken again, the warning armed again.
        up(&mut t, 0, 2);
        assert!(t.sp.learned(0, r, &mut t.rib).is_some());
        assert_eq!(t.sp.neighbors[0].rib_in.len(), 2);
    }

    #[test]
    fn a_new_import_target_asks_for_the_routes_again_or_restarts_a_peer_that_cannot_refresh() {
        let mut t = setup();
        up(&mut t, 0, 1);
        let n = Negotiated {
            hold_time: 90,
            peer_id: Ipv4Addr::new(192, 0, 2, 9),
            peer_asn: 65000,
            asn4: true,
            route_refresh: false,
        };
        t.sp.established(1, n, 1, Instant::now());
        learned(&mut t, 0, routes(2, "65000:1"));
        commands(&mut t, 0);
        commands(&mut t, 1);
        let config = |text: &str| parse(Path::new("test.toml"), text).expect("config").config;
        // A target added: the peers are asked for their routes again.
        let both = CONFIG.replace(
            "import_targets = [\"65000:1\"]",
            "import_targets = [\"65000:1\", \"65000:8\"]",
        );
        t.sp.reload(&config(&both), &[0], &mut t.rib);
        assert_eq!(t.sp.neighbors[0].rib_in.len(), 2);
        let asked = (commands(&mut t, 0), commands(&mut t, 1));
        assert!(matches!(&asked.0[..], [ToSession::AskRefresh]), "{asked:?}");
        assert!(
            matches!(&asked.1[..], [ToSession::Cease { subcode: 6, .. }]),
            "{asked:?}"
        );
        // A target taken away: its routes are dropped, nobody is asked.
        let none = CONFIG.replace(
            "import_targets = [\"65000:1\"]",
            "import_targets = [\"65000:8\"]",
        );
        t.sp.reload(&config(&none), &[0], &mut t.rib);
        assert_eq!(t.sp.neighbors[0].rib_in.len(), 0);
        assert!(commands(&mut t, 0).is_empty());
        assert!(commands(&mut t, 1).is_empty());
        // Unchanged imports: nothing asked.
        t.sp.reload(&config(&none), &[0], &mut t.rib);
        assert!(commands(&mut t, 0).is_empty());
    }

    /// Neighbours .2 and .3 are route reflector clients, .4 is not.
    fn reflector() -> T {
        let text = CONFIG
            .replacen(
                "via = \"hub1\"\n",
                "via = \"hub1\"\nroute_reflector_client = true\n",
                1,
            )
            .replacen(
                "via = \"hub2\"\n",
                "via = \"hub2\"\nroute_reflector_client = true\n",
                1,
            );
        let mut t = setup_with(&text);
        for i in 0..3 {
            up(&mut t, i, 1);
            commands(&mut t, i);
        }
        t
    }

    fn advertised(c: &[ToSession]) -> Vec<(VpnRoute, VpnPath)> {
        c.iter()
            .flat_map(|m| match m {
                ToSession::Advertise(r, p) => r.iter().map(|r| (*r, p.clone())).collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn a_route_reflector_reflects_client_routes_to_all_and_others_to_clients() {
        let mut t = reflector();
        // From client .2, with a target no service imports: kept, and
        // reflected to .3 and .4 with ORIGINATOR_ID and CLUSTER_LIST.
        let u = routes(2, "65000:9");
        learned(&mut t, 0, u.clone());
        assert_eq!(t.sp.neighbors[0].rib_in.len(), 2);
        let want = VpnPath {
            reflection: Some(Reflection {
                originator_id: Ipv4Addr::new(192, 0, 2, 1),
                cluster_list: vec![Ipv4Addr::new(198, 18, 0, 1)],
            }),
            ..u.path.clone().unwrap()
        };
        let expect: Vec<(VpnRoute, VpnPath)> = u.reach.iter().map(|r| (*r, want.clone())).collect();
        assert!(commands(&mut t, 0).is_empty(), "not back to its own");
        for i in [1, 2] {
            let c = commands(&mut t, i);
            assert_eq!(c.len(), 1, "one UPDATE for both routes: {c:?}");
            assert_eq!(advertised(&c), expect, "to neighbour {i}");
        }
        // From non-client .4: reflected to the clients only, an
        // ORIGINATOR_ID it set kept and our cluster id prepended.
        let mut from_4 = update("10.8.0.0", 16, 4000, path(Some(100), &[], None, "65000:9"));
        from_4.path.as_mut().unwrap().reflection = Some(Reflection {
            originator_id: Ipv4Addr::new(192, 0, 2, 77),
            cluster_list: vec![Ipv4Addr::new(192, 0, 2, 99)],
        });
        learned(&mut t, 2, from_4.clone());
        assert!(commands(&mut t, 2).is_empty());
        for i in [0, 1] {
            let got = advertised(&commands(&mut t, i));
            assert_eq!(got.len(), 1);
            assert_eq!(
                got[0].1.reflection,
                Some(Reflection {
                    originator_id: Ipv4Addr::new(192, 0, 2, 77),
                    cluster_list: vec![Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(192, 0, 2, 99)],
                })
            );
        }
        // Withdrawn by .2: withdrawn from .3 and .4.
        let gone = Vpnv4Update {
            withdrawn: u.reach[..1].to_vec(),
            ..Default::default()
        };
        learned(&mut t, 0, gone);
        for i in [1, 2] {
            let c = commands(&mut t, i);
            assert!(
                matches!(&c[..], [ToSession::Withdraw(w)] if w.len() == 1 && w[0].prefix == u.reach[0].prefix),
                "{c:?}"
            );
        }
        // .2 goes down: the rest of its routes too.
        t.sp.down(0, "test".into(), &mut t.rib);
        for i in [1, 2] {
            let c = commands(&mut t, i);
            assert!(
                matches!(&c[..], [ToSession::Withdraw(w)] if w.len() == 1 && w[0].prefix == u.reach[1].prefix),
                "{c:?}"
            );
        }
        // .4's route stays with the clients; .4's session ending takes it.
        t.sp.down(2, "test".into(), &mut t.rib);
        assert!(matches!(&commands(&mut t, 1)[..], [ToSession::Withdraw(_)]));
    }

    #[test]
    fn a_route_that_passed_us_before_is_a_reflection_loop() {
        let mut t = reflector();
        for (originator, clusters) in [
            (Ipv4Addr::new(198, 18, 0, 1), vec![]),
            (
                Ipv4Addr::new(192, 0, 2, 1),
                vec![Ipv4Addr::new(198, 18, 0, 1)],
            ),
        ] {
            let mut u = routes(1, "65000:1");
            u.path.as_mut().unwrap().reflection = Some(Reflection {
                originator_id: originator,
                cluster_list: clusters,
            });
            assert!(learned(&mut t, 0, u).is_empty());
        }
        assert_eq!(t.sp.neighbors[0].rib_in.len(), 0);
        assert_eq!(t.sp.neighbors[0].loops_dropped, 2);
        assert!(commands(&mut t, 1).is_empty());
    }

    #[test]
    fn without_clients_nothing_learnt_is_advertised() {
        let mut t = setup();
        for i in 0..3 {
            up(&mut t, i, 1);
            commands(&mut t, i);
        }
        learned(&mut t, 0, routes(2, "65000:1"));
        for i in 0..3 {
            assert!(commands(&mut t, i).is_empty());
        }
    }

    #[test]
    fn a_route_reflector_keeps_what_it_reflects_across_an_import_change() {
        let text = CONFIG.replacen(
            "via = \"hub1\"\n",
            "via = \"hub1\"\nroute_reflector_client = true\n",
            1,
        );
        let mut t = setup_with(&text);
        up(&mut t, 0, 1);
        learned(&mut t, 0, routes(2, "65000:9"));
        assert_eq!(t.sp.neighbors[0].rib_in.len(), 2);
        commands(&mut t, 0);
        let changed = text.replace(
            "import_targets = [\"65000:1\"]",
            "import_targets = [\"65000:1\", \"65000:8\"]",
        );
        let config = parse(Path::new("test.toml"), &changed)
            .expect("config")
            .config;
        t.sp.reload(&config, &[0], &mut t.rib);
        assert_eq!(t.sp.neighbors[0].rib_in.len(), 2, "kept for reflection");
        assert!(commands(&mut t, 0).is_empty(), "nothing to ask for again");
    }
}
