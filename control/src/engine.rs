//! The writer side on the control thread ([`Engine`]): what turns ARP
//! results, BGP events, the DHCP relay's exchanges, `ctl route` and a
//! reload into routes for the RIB manager, commits its table ops, and
//! keeps BGP's advertisements in step with what the tables hold:
//!
//! ```text
//!  punted frame (host_tick) -> ARP learnt        -> next hop resolved -> commit
//!                           -> DHCP from client  -> relayed to the address server
//!  server reply             -> ACK: session up   -> route published (one commit
//!                              per tick) -> ACK to the client once every worker
//!                              has it -> advertised to BGP
//!  RELEASE, NAK, expiry     -> withdrawn from BGP -> route removed (next tick
//!                              when a neighbour is Established)
//!  BGP event                -> Loc-RIB choice -> RIB manager -> commit
//!  ctl route, reload        -> RIB manager -> commit -> BGP follows
//! ```
//!
//! It is written against what it needs of the running data plane
//! ([`Dataplane`]): `dataplane::Running` in `hdvrf run` (the binary
//! implements the trait for it), a double over plain tables in the unit
//! tests, so none of this needs EAL. The management socket, the metrics
//! listener and the views that read the workers' counters are the
//! binary's.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use dataplane::policy::RuleSnapshot;
use dataplane::publish::{CommitError, PublishStats};
use dataplane::tables::{PortRole, TableOp, Tables};
use dataplane::SubscriberSnapshot;
use serde_json::{json, Value};

use crate::config::fmt_mac;
use crate::config::{self, LoadError};
use crate::mgmt::{self, Names};
use crate::neighbor::Neighbors;
use crate::rib::{Rib, RouteKey, Source, Target};

/// What the control thread's writer side uses of the running data plane:
/// table publication (a commit that waits for the workers, or a publish
/// that does not and is `settled` later), the tables in use, the host
/// path's punted frames and the frames it sends, and a few counters.
/// The methods are `dataplane::Running`'s, with its meaning.
pub trait Dataplane {
    /// Publishes `ops` and waits for every worker to take them, at most
    /// `timeout` (`None`: no limit). The ops the tables refused are in
    /// [`Dataplane::tables`]`.rejected()` after.
    fn commit_within(
        &mut self,
        ops: &[TableOp],
        timeout: Option<Duration>,
    ) -> Result<PublishStats, CommitError>;

    /// Publishes `ops` without waiting for the workers; returns the
    /// generation published.
    fn publish(&mut self, ops: &[TableOp]) -> Result<u64, CommitError>;

    /// Whether every worker uses the tables last published (finishing
    /// the pending replay if so); never waits.
    fn settled(&mut self) -> bool;

    /// The tables the workers use now (router mode).
    fn tables(&self) -> Option<&Tables>;

    /// One round of the host path: `inspect` sees each punted frame with
    /// its port and returns true to take it (false: the kernel's). Returns
    /// how many packets moved.
    fn host_poll(&mut self, inspect: impl FnMut(u16, &[u8]) -> bool) -> usize;

    /// Sends a frame out of `port`; false if it could not be queued.
    fn host_inject(&mut self, port: u16, frame: &[u8]) -> bool;

    /// Each port's device name and MAC, in port order.
    fn port_macs(&self) -> Vec<(String, [u8; 6])>;

    /// Subscriber (next hop) `id`'s counters summed over the workers.
    fn subscriber(&self, id: u32) -> Option<SubscriberSnapshot>;

    /// Policy rule slot `slot`'s counters summed over the workers.
    fn rule(&self, slot: u16) -> Option<RuleSnapshot>;
}

/// The writer side on the control thread: the running data plane, the RIB
/// manager and every route source that feeds it (the DHCP relay and its
/// sessions, BGP, `ctl route`, reload), and the configuration's names
/// they are spoken of in.
pub struct Engine<D: Dataplane> {
    /// The running data plane.
    pub running: D,
    /// The configuration's names for ports, services and next hops (and
    /// the names of the next hops the RIB manager makes).
    pub names: Names,
    /// The configuration file and what it held when last applied:
    /// `reload` compares against it.
    config_path: PathBuf,
    applied: Applied,
    /// Next hops resolved by ARP.
    pub neighbors: Neighbors,
    /// The DHCP relay and the sessions (router mode).
    pub relay: Option<crate::relay::Relay>,
    /// Per service (by name), what the configuration says of it beyond the
    /// tables: route distinguisher, targets, address server.
    pub vpn: HashMap<String, Value>,
    /// A session's next hop's counters when the session came up: its
    /// counts are what was added since (next hop ids are reused).
    pub session_base: HashMap<u32, SubscriberSnapshot>,
    /// Whether each port is an access port, and its address (0: none), by
    /// port id (ports change only with a restart).
    access_ports: Vec<(bool, u32)>,
    /// The BGP speaker (with `[bgp]`).
    pub bgp: Option<crate::bgp::speaker::Speaker>,
    /// The RIB manager: every route and next hop the tables hold comes
    /// from it ([`Engine::commit_rib`]). Session removals whose BGP
    /// withdrawal must be on its way first wait in it until the next tick
    /// (or the next commit).
    pub rib: Rib,
    /// A session's withdrawal was sent to an Established neighbour since
    /// the last commit: its route's removal waits for the next tick.
    withdrawal_pending: bool,
    /// Replies to clients, in the order the servers sent them, held while
    /// the RIB manager has ops not yet published: an ACK goes to its
    /// client only once its session's route is in the tables the workers
    /// read ([`Engine::publish_and_answer`]).
    awaiting: Vec<ToClient>,
    /// Since when `awaiting` has waited for the workers to leave the
    /// tables published before.
    held_since: Option<std::time::Instant>,
    /// When refused table ops were last logged.
    rejects_logged: Option<std::time::Instant>,
    /// Each policy rule slot's counters when its rule was set or the
    /// stats cleared: what is shown is what was added since.
    pub rule_base: Vec<RuleSnapshot>,
}

/// Whether `frame` is ARP about `address` or IPv4 to it (never when
/// `address` is 0).
fn for_address(frame: &[u8], address: u32) -> bool {
    let be16 = |at: usize| {
        frame
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let (ethertype, l3) = match be16(12) {
        Some(0x8100) => (be16(16), 18),
        e => (e, 14),
    };
    let at = match ethertype {
        Some(0x0806) => l3 + 24,
        Some(0x0800) => l3 + 16,
        _ => return false,
    };
    address != 0 && frame.get(at..at + 4) == Some(&address.to_be_bytes()[..])
}

/// How long a request's commit waits for the workers before it answers
/// with the stall (workers pass a quiescent point every burst or idle
/// poll, so in practice microseconds).
const COMMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A server's reply on its way to the client, once the sessions of the
/// replies taken with it are published.
struct ToClient {
    reply: crate::dhcp::FromServer,
    port: u16,
    vlan: u16,
    gateway: u32,
    mac: [u8; 6],
    /// An ACK's session: service, address and what the ACK did.
    up: Option<(u16, std::net::Ipv4Addr, crate::sessions::Acked)>,
}

/// Refused table ops are logged at most this often (each is counted).
const REJECT_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The configuration as last applied, for `reload` to compare against.
pub enum Applied {
    /// The text hdvrf started from, parsed only when a reload needs it:
    /// a file of 100k next hops takes as long to parse again as to load,
    /// and the start should not wait for that.
    Text(String),
    /// What the last reload applied, as plain TOML.
    Toml(toml::Value),
}

impl<D: Dataplane> Engine<D> {
    pub fn new(running: D, names: Names, config_path: PathBuf, applied: Applied) -> Engine<D> {
        let access_ports = running
            .tables()
            .map(|t| {
                t.ports
                    .iter()
                    .map(|p| (p.role == PortRole::Access, p.address))
                    .collect()
            })
            .unwrap_or_default();
        let rib = running.tables().map(Rib::from_tables).unwrap_or_default();
        Engine {
            rib,
            withdrawal_pending: false,
            awaiting: Vec::new(),
            held_since: None,
            rejects_logged: None,
            access_ports,
            running,
            names,
            config_path,
            applied,
            neighbors: Neighbors::default(),
            relay: None,
            vpn: HashMap::new(),
            session_base: HashMap::new(),
            bgp: None,
            rule_base: vec![RuleSnapshot::default(); dataplane::policy::MAX_RULES],
        }
    }

    /// Takes the services' VPN settings and the file's downstream host
    /// routes from the configuration (at start and on reload; after the
    /// names).
    pub fn set_from_config(&mut self, c: &crate::config::Config) {
        self.vpn = c
            .services
            .iter()
            .map(|s| {
                let list = |v: &[toml::Spanned<String>]| {
                    v.iter().map(|t| t.get_ref().clone()).collect::<Vec<_>>()
                };
                (
                    s.name.get_ref().clone(),
                    json!({
                        "route_distinguisher": s.route_distinguisher.as_ref().map(|r| r.get_ref()),
                        "import_targets": list(&s.import_targets),
                        "export_targets": list(&s.export_targets),
                        "address_server": s.address_server.as_ref().map(|a| a.get_ref()),
                    }),
                )
            })
            .collect();
    }

    /// One round of the host path (control thread): punted packets into
    /// the kernel and the kernel's frames out, neighbours learnt from the
    /// ARP packets among them and published, ARP requests that are due
    /// sent; the DHCP relay and sessions (`crate::relay`). Returns how many
    /// packets moved.
    pub fn host_tick(&mut self, now: std::time::Instant) -> usize {
        let mut learnt = Vec::new();
        let neighbors = &mut self.neighbors;
        // What the relay takes: DHCP and ARP from access ports (the
        // gateway answers ARP even where no address server is set).
        let relay_on = self.relay.is_some();
        let access = &self.access_ports;
        let mut taken: Vec<(u16, Vec<u8>)> = Vec::new();
        let mut moved = self.running.host_poll(|port, frame| {
            if let Some(TableOp::SetNeighbor { next_hop, mac }) = neighbors.learn(port, frame, now)
            {
                learnt.push((next_hop, mac));
            }
            let (is_access, address) = access.get(usize::from(port)).copied().unwrap_or_default();
            // The port's own address (a hub's uplink, say) is the
            // kernel's: its ARP and packets go to the tap.
            if relay_on && is_access && !for_address(frame, address) {
                taken.push((port, frame.to_vec()));
                return true;
            }
            false
        });
        if !learnt.is_empty() {
            // BGP's next hops made from these follow them.
            for &(next_hop, mac) in &learnt {
                self.rib.set_neighbor(next_hop, mac);
            }
            match self.commit_rib(Vec::new()) {
                Ok(_) => {
                    for (next_hop, mac) in &learnt {
                        crate::log::say!(
                            "hdvrf: next hop {} resolved: {}",
                            self.names.next_hop_name(*next_hop),
                            fmt_mac(mac)
                        );
                    }
                }
                Err(e) => eprintln!("hdvrf: error: publishing resolved neighbours: {e}"),
            }
        }
        for (port, frame) in self.neighbors.requests_due(now) {
            self.running.host_inject(port, &frame);
        }
        // The withdrawals of the sessions that ended in the last tick went
        // out while the thread yielded: their removals can go now.
        self.withdrawal_pending = false;
        if relay_on {
            for (port, frame) in taken {
                self.relay_client_frame(port, &frame, now);
            }
            moved += self.relay_server_replies(now);
            self.expire_sessions(now);
        }
        self.publish_and_answer(now);
        if relay_on {
            if let Some(r) = self.relay.as_mut() {
                r.watch_servers(now);
                r.journal_tick(now);
            }
        }
        moved
    }

    /// What a BGP session task reported.
    pub fn bgp_event(
        &mut self,
        i: usize,
        ev: crate::bgp::session::FromSession,
        now: std::time::Instant,
    ) {
        use crate::bgp::session::FromSession;
        let Some(b) = self.bgp.as_mut() else {
            return;
        };
        let peer = b
            .neighbors
            .get(i)
            .map_or_else(|| format!("#{i}"), |n| n.address.to_string());
        match ev {
            FromSession::Established(n, establishment) => {
                crate::log::say!(
                    "hdvrf: bgp: {peer} Established (AS {}, router id {}, hold {} s)",
                    n.peer_asn,
                    n.peer_id,
                    n.hold_time
                );
                b.established(i, n, establishment, now);
                return;
            }
            FromSession::Down(why) => {
                let was_up = b.neighbors.get(i).is_some_and(|n| n.up.is_some());
                if was_up {
                    eprintln!("hdvrf: bgp: {peer} down: {why}");
                }
                b.down(i, why, &mut self.rib);
            }
            FromSession::Learned(u) => {
                if let Some(line) = b.learned(i, u, &mut self.rib) {
                    eprintln!("hdvrf: bgp: {peer}: {line}");
                }
            }
            FromSession::State(st) => {
                if let Some(n) = b.neighbors.get_mut(i) {
                    n.state = st;
                }
                return;
            }
            FromSession::RouteRefresh => {
                b.route_refresh(i);
                return;
            }
            FromSession::TtlRefused(ttl) => {
                if let Some(n) = b.neighbors.get_mut(i) {
                    n.ttl_refused += 1;
                    // The first only: a flood of them is counted, not logged.
                    if n.ttl_refused == 1 {
                        eprintln!(
                            "hdvrf: bgp: {peer}: connection refused by GTSM (RFC 5082): its SYN came with TTL {ttl}; further ones are counted in ttl_refused"
                        );
                    }
                }
                return;
            }
            FromSession::Damping {
                idle_hold,
                failures,
            } => {
                if let Some(n) = b.neighbors.get_mut(i) {
                    n.failures_in_a_row = failures;
                    n.idle_hold = Some(idle_hold);
                }
                return;
            }
            FromSession::Malformed(m) => {
                if let Some(n) = b.neighbors.get_mut(i) {
                    n.malformed += 1;
                }
                eprintln!("hdvrf: bgp: {peer}: malformed UPDATE (RFC 7606): {m}");
                return;
            }
            FromSession::Notification(sent, code, sub) => {
                if let Some(n) = b.neighbors.get_mut(i) {
                    if sent {
                        n.notifications_sent += 1;
                    } else {
                        n.notifications_received += 1;
                    }
                }
                eprintln!(
                    "hdvrf: bgp: {peer}: NOTIFICATION {code}/{sub} {}",
                    if sent { "sent" } else { "received" }
                );
                return;
            }
        }
        if let Err(e) = self.commit_rib(Vec::new()) {
            eprintln!("hdvrf: error: bgp: publishing routes from {peer}: {e}");
        }
    }

    /// Commits what the RIB manager wants, after `first` (a reload's own
    /// ops): the one place route and next-hop ops are published. The ops
    /// the tables refuse go back to the manager (their routes are then
    /// not installed, and counted) and are logged once per interval; the
    /// next hops the batch made or freed are named. `Ok(None)`: nothing
    /// to commit.
    fn commit_rib(&mut self, first: Vec<TableOp>) -> Result<Option<PublishStats>, CommitError> {
        let from_rib = first.len();
        let mut ops = first;
        ops.extend(self.rib.take_ops());
        if ops.is_empty() {
            return Ok(None);
        }
        self.withdrawal_pending = false;
        let st = match self.running.commit_within(&ops, Some(COMMIT_WAIT)) {
            Ok(st) => st,
            Err(e) => {
                if !e.batch_published() {
                    // Nothing changed: the manager's ops wait for the
                    // next commit.
                    self.rib.requeue(ops.split_off(from_rib));
                    return Err(e);
                }
                self.after_commit(&ops[from_rib..]);
                return Err(e);
            }
        };
        self.after_commit(&ops[from_rib..]);
        Ok(Some(st))
    }

    /// The manager's ops are in the tables: it learns what they refused,
    /// and its next hops are named.
    fn after_commit(&mut self, ops: &[TableOp]) {
        let rejected = self
            .running
            .tables()
            .map(|t| t.rejected().to_vec())
            .unwrap_or_default();
        if !rejected.is_empty() {
            self.rib.rejected(&rejected);
            let (op, why) = &rejected[0];
            let msg = format!(
                "the tables refused {} op(s), e.g. {op:?}: {why}",
                rejected.len()
            );
            let now = std::time::Instant::now();
            if self
                .rejects_logged
                .is_none_or(|t| now.duration_since(t) >= REJECT_LOG_INTERVAL)
            {
                self.rejects_logged = Some(now);
                eprintln!("hdvrf: error: {msg} (logged at most every {REJECT_LOG_INTERVAL:?})");
            }
        }
        for op in ops {
            if let TableOp::SetNextHop { id, next_hop } = op {
                let name = if next_hop.port == u16::MAX {
                    String::new()
                } else if let Some((via, label)) = self.rib.derived_of(*id) {
                    format!("~bgp/{}/{label}", self.names.next_hop_name(via))
                } else {
                    // The manager makes no other next hops than BGP's and
                    // sessions'.
                    crate::sessions::next_hop_name(&next_hop.dst_mac)
                };
                let at = *id as usize;
                if self.names.next_hops.len() <= at {
                    self.names.next_hops.resize(at + 1, String::new());
                }
                self.names.next_hops[at] = name;
            }
        }
    }

    fn relay_drop(&mut self, why: &'static str) {
        if let Some(r) = self.relay.as_mut() {
            r.stats.drop(why);
        }
    }

    /// The service bound to (port, VLAN), and its gateway.
    fn service_at(&self, port: u16, vlan: u16) -> Option<(u16, u32)> {
        let t = self.running.tables()?;
        let s = *t
            .ports
            .get(usize::from(port))?
            .vlan_service
            .get(usize::from(vlan))?;
        let svc = t.services.get(usize::from(s))?;
        Some((s, svc.gateway))
    }

    /// A frame a client sent to the router on an access port: ARP for the
    /// gateway is answered, DHCP is relayed; anything else is dropped.
    fn relay_client_frame(&mut self, port: u16, frame: &[u8], now: std::time::Instant) {
        let Some(relay) = self.relay.as_mut() else {
            return;
        };
        if let Some(arp) = crate::neighbor::arp_request_of(frame) {
            let (vlan, req) = arp;
            let Some((_, gw)) = self.service_at(port, vlan) else {
                self.relay_drop("arp_no_service");
                return;
            };
            if u32::from_be_bytes(req.target_protocol_addr.0) != gw {
                self.relay_drop("arp_not_gateway");
                return;
            }
            let mac = self.running.port_macs()[usize::from(port)].1;
            let reply = crate::neighbor::arp_reply(&req, vlan, mac);
            if self.running.host_inject(port, &reply) {
                if let Some(r) = self.relay.as_mut() {
                    r.stats.gateway_arp_replies += 1;
                }
            }
            return;
        }
        let Some(mut c) = crate::dhcp::parse_client_frame(frame) else {
            relay.stats.drop("not_dhcp");
            return;
        };
        let Some((service, gw)) = self.service_at(port, c.vlan) else {
            self.relay_drop("no_service");
            return;
        };
        let port_name = self.names.port_name(port);
        let circuit = crate::dhcp::circuit_id(&port_name, c.vlan);
        let kind = crate::dhcp::message_type(&c.msg);
        if crate::relay::ends_session(kind) {
            // Its removal is published with the tick's other changes.
            self.end_session(service, c.src_mac, "released", now);
        }
        if let Some(r) = self.relay.as_mut() {
            if !r.admits(service, c.src_mac, kind, now) {
                return;
            }
        }
        let payload = match crate::dhcp::to_server(
            &mut c.msg,
            std::net::Ipv4Addr::from(gw),
            &circuit,
            c.src_mac,
        ) {
            Ok(p) => p,
            Err(e) => {
                if let Some(r) = self.relay.as_mut() {
                    r.stats.drop("not_relayable");
                    r.log_error("relay", &format!("DHCP relay: from {port_name}: {e}"), now);
                }
                return;
            }
        };
        if let Some(r) = self.relay.as_mut() {
            r.send_to_server(service, &payload, !crate::relay::ends_session(kind), now);
        }
    }

    /// Replies from the address servers: sessions follow ACK and NAK, and
    /// the replies wait in `awaiting` for the tick's publication
    /// ([`Engine::publish_and_answer`]). The replies waiting on the
    /// sockets are taken together, so their sessions' routes are
    /// published in one commit. Returns how many replies there were.
    fn relay_server_replies(&mut self, now: std::time::Instant) -> usize {
        let Some(relay) = self.relay.as_mut() else {
            return 0;
        };
        let replies = relay.receive();
        let n = replies.len();
        for payload in replies {
            let Some(r) = crate::dhcp::from_server(&payload) else {
                self.relay_drop("not_our_reply");
                continue;
            };
            let Some((port, vlan)) = crate::dhcp::parse_circuit_id(&r.circuit)
                .and_then(|(p, v)| Some((self.names.port(p).ok()?, v)))
            else {
                self.relay_drop("unknown_circuit");
                continue;
            };
            let Some((service, gw)) = self.service_at(port, vlan) else {
                self.relay_drop("no_service");
                continue;
            };
            let mac: [u8; 6] = match r.remote.as_slice().try_into() {
                Ok(m) => m,
                Err(_) => match crate::dhcp::client_mac(&r.msg) {
                    Some(m) => m,
                    None => {
                        self.relay_drop("no_client_mac");
                        continue;
                    }
                },
            };
            let mut up = None;
            match crate::dhcp::message_type(&r.msg) {
                Some(crate::dhcp::Kind::Ack) if !r.msg.yiaddr().is_unspecified() => {
                    let lease = crate::dhcp::lease_secs(&r.msg).unwrap_or(3600);
                    let address = r.msg.yiaddr();
                    match self.session_ack(service, port, vlan, mac, address, lease, now) {
                        Some(what) => up = Some((service, address, what)),
                        // Not taken: the client does not get an address
                        // the router cannot deliver to.
                        None => continue,
                    }
                }
                Some(crate::dhcp::Kind::Nak) => {
                    self.end_session(service, mac, "refused (NAK)", now);
                }
                _ => {}
            }
            self.awaiting.push(ToClient {
                reply: r,
                port,
                vlan,
                gateway: gw,
                mac,
                up,
            });
        }
        n
    }

    /// The end of a tick: what the RIB manager has queued (the tick's
    /// sessions up and down) is published, then the replies held in
    /// `awaiting` go to their clients, an ACK only if its session's route
    /// was installed. Never waits for the workers: while they have not
    /// all left the tables published before (whose copy the publication
    /// writes), the ops and replies wait for a later tick; a wait here
    /// would spin against the workers on every tick, and on a core they
    /// share, keep them from running. Once the tables are published an
    /// ACK may go: a worker reads the tables in use at the start of each
    /// burst, so the client's traffic after the ACK finds its route.
    /// Removals wait one tick while their withdrawals are on the way to
    /// BGP (`withdrawal_pending`), and the workers at most `COMMIT_WAIT`:
    /// then the commit waits for them, and reports them stalled.
    fn publish_and_answer(&mut self, now: std::time::Instant) {
        let mut published = true;
        if self.rib.has_ops() {
            if self.withdrawal_pending {
                return;
            }
            if self.running.settled() {
                published = self.publish_sessions(now);
            } else {
                let since = *self.held_since.get_or_insert(now);
                if now.saturating_duration_since(since) < COMMIT_WAIT {
                    return;
                }
                published = self.commit_sessions(now);
            }
        }
        self.held_since = None;
        self.answer_clients(published, now);
    }

    /// Sends the replies in `awaiting`, after their sessions' routes were
    /// published (or could not be: `published` false, when the ACKs are
    /// dropped and the clients ask again).
    fn answer_clients(&mut self, published: bool, now: std::time::Instant) {
        for ToClient {
            reply: r,
            port,
            vlan,
            gateway: gw,
            mac,
            up,
        } in std::mem::take(&mut self.awaiting)
        {
            if let Some((service, address, what)) = up {
                if !published || !self.session_published(service, mac, address, what, now) {
                    continue;
                }
            }
            let port_mac = self.running.port_macs()[usize::from(port)].1;
            match crate::dhcp::client_frame(&r.msg, port_mac, vlan, gw.into(), mac) {
                Ok(f) => {
                    if self.running.host_inject(port, &f) {
                        if let Some(r) = self.relay.as_mut() {
                            r.stats.to_client += 1;
                        }
                    } else {
                        self.relay_drop("inject_full");
                    }
                }
                Err(_) => {
                    self.relay_drop("encode");
                }
            }
        }
    }

    /// A session's ACK: its next hop and host route go to the RIB manager,
    /// to be published by the next commit. `None`: not taken (the
    /// sessions are full).
    #[allow(clippy::too_many_arguments)]
    fn session_ack(
        &mut self,
        service: u16,
        port: u16,
        vlan: u16,
        mac: [u8; 6],
        address: std::net::Ipv4Addr,
        lease: u32,
        now: std::time::Instant,
    ) -> Option<crate::sessions::Acked> {
        let relay = self.relay.as_mut()?;
        // Requests admitted while there was room can be answered after
        // it filled: the bound holds at the ACK too.
        if relay.sessions.len() >= relay.max_sessions && relay.sessions.get(service, mac).is_none()
        {
            relay.stats.drop("sessions_full");
            return None;
        }
        let what = relay.sessions.ack(
            &mut self.rib,
            service,
            port,
            vlan,
            mac,
            address,
            std::time::Duration::from_secs(u64::from(lease)),
            now,
        );
        if what == crate::sessions::Acked::Up {
            if let Some(id) = relay.sessions.get(service, mac).map(|s| s.next_hop) {
                let base = self.running.subscriber(id).unwrap_or_default();
                self.session_base.insert(id, base);
            }
        }
        if let (Some(b), crate::sessions::Acked::Moved { old }) = (self.bgp.as_mut(), what) {
            b.withdraw(service, old);
        }
        Some(what)
    }

    /// Publishes the sessions' changes of a tick without waiting for the
    /// workers; the caller has seen them settled. False (logged) if they
    /// could not be published.
    fn publish_sessions(&mut self, now: std::time::Instant) -> bool {
        let ops = self.rib.take_ops();
        self.withdrawal_pending = false;
        match self.running.publish(&ops) {
            Ok(_) => {
                self.after_commit(&ops);
                true
            }
            Err(e) => {
                self.rib.requeue(ops);
                if let Some(r) = self.relay.as_mut() {
                    r.log_error("publish", &format!("publishing sessions: {e}"), now);
                }
                false
            }
        }
    }

    /// Commits the sessions' changes; false (logged) if the batch was not
    /// published.
    fn commit_sessions(&mut self, now: std::time::Instant) -> bool {
        match self.commit_rib(Vec::new()) {
            Ok(_) => true,
            Err(e) => {
                if let Some(r) = self.relay.as_mut() {
                    r.log_error("publish", &format!("publishing sessions: {e}"), now);
                }
                e.batch_published()
            }
        }
    }

    /// After the commit of an ACK's session: if the tables hold its route,
    /// it is advertised (new or moved), journalled and logged; true then.
    fn session_published(
        &mut self,
        service: u16,
        mac: [u8; 6],
        address: std::net::Ipv4Addr,
        what: crate::sessions::Acked,
        now: std::time::Instant,
    ) -> bool {
        let key = crate::sessions::host_key(service, address);
        if !matches!(self.rib.installed(&key), Some((Source::Session, _))) {
            let why = self.rib.refused(&key).unwrap_or("not installed").to_owned();
            if let Some(r) = self.relay.as_mut() {
                r.log_error(
                    "reject",
                    &format!("publishing a session: {address}: {why}"),
                    now,
                );
            }
            return false;
        }
        if what != crate::sessions::Acked::Renewed {
            if let Some(b) = self.bgp.as_mut() {
                b.advertise(service, address);
            }
        }
        self.journal_up(service, mac, now);
        if what != crate::sessions::Acked::Renewed {
            let port = self
                .relay
                .as_ref()
                .and_then(|r| r.sessions.get(service, mac))
                .map_or((0, 0), |s| (s.port, s.vlan));
            crate::log::note!(
                "hdvrf: session up: {} {} on {} vlan {} ({what:?})",
                self.names
                    .services
                    .get(usize::from(service))
                    .map_or("?", |s| s.as_str()),
                address,
                self.names.port_name(port.0),
                port.1
            );
        }
        true
    }

    /// Ends a session: its route leaves the RIB manager and its
    /// withdrawal goes to BGP. The caller commits, unless a neighbour is
    /// Established (`withdrawal_pending`): then the removal waits for the
    /// next tick (or commit), so that the withdrawal is on its way before
    /// the route goes.
    fn end_session(&mut self, service: u16, mac: [u8; 6], why: &str, now: std::time::Instant) {
        let Some(relay) = self.relay.as_mut() else {
            return;
        };
        if let Some(s) = relay.sessions.end(&mut self.rib, service, mac) {
            self.session_gone(&s, why, now);
        }
    }

    fn session_gone(&mut self, s: &crate::sessions::Session, why: &str, now: std::time::Instant) {
        self.session_base.remove(&s.next_hop);
        if self
            .bgp
            .as_mut()
            .is_some_and(|b| b.withdraw(s.service, s.address))
        {
            self.withdrawal_pending = true;
        }
        self.journal_down(s, now);
        crate::log::note!("hdvrf: session down: {} {why}", s.address);
    }

    fn expire_sessions(&mut self, now: std::time::Instant) {
        let Some(relay) = self.relay.as_mut() else {
            return;
        };
        let gone = relay.sessions.expire(&mut self.rib, now);
        for s in &gone {
            self.session_gone(s, "lease expired", now);
        }
    }

    fn journal_up(&mut self, service: u16, mac: [u8; 6], now: std::time::Instant) {
        // No journal (or not open yet: sessions restored from it at start
        // are already in it): no entry to build.
        let Some(s) = self
            .relay
            .as_ref()
            .filter(|r| r.journal.is_some())
            .and_then(|r| r.sessions.get(service, mac))
            .cloned()
        else {
            return;
        };
        let left = s.lease_end.saturating_duration_since(now).as_secs();
        let e = crate::journal::Entry::Up(crate::journal::Saved {
            service: self
                .names
                .services
                .get(usize::from(service))
                .cloned()
                .unwrap_or_default(),
            mac: fmt_mac(&s.mac),
            port: self.names.port_name(s.port),
            vlan: s.vlan,
            address: s.address,
            lease_end: crate::journal::unix_now() + left,
        });
        if let Some(r) = self.relay.as_mut() {
            r.journal(&e, now);
        }
    }

    fn journal_down(&mut self, s: &crate::sessions::Session, now: std::time::Instant) {
        let e = crate::journal::Entry::Down {
            service: self
                .names
                .services
                .get(usize::from(s.service))
                .cloned()
                .unwrap_or_default(),
            mac: fmt_mac(&s.mac),
        };
        if let Some(r) = self.relay.as_mut() {
            r.journal(&e, now);
        }
    }

    /// Rebuilds the sessions a journal kept (start after a crash or a
    /// restart): each is published again with what is left of its lease,
    /// all in one commit. Returns how many came back; what no longer fits
    /// the configuration (an unknown service or port) is skipped with a
    /// message.
    pub fn restore_sessions(&mut self, saved: &[crate::journal::Saved]) -> usize {
        let now = std::time::Instant::now();
        let unix = crate::journal::unix_now();
        let mut acked = Vec::with_capacity(saved.len());
        // Names to ids once, not a walk over the names per session (1,000
        // services and 100k sessions: 50 million string compares).
        let by_name = |list: &[String]| -> HashMap<String, usize> {
            list.iter()
                .enumerate()
                .rev()
                .map(|(i, n)| (n.clone(), i))
                .collect()
        };
        let services = by_name(&self.names.services);
        let ports = by_name(&self.names.ports);
        for s in saved {
            let found = (|| {
                let service = u16::try_from(*services.get(&s.service)?).ok()?;
                let port = u16::try_from(*ports.get(&s.port)?).ok()?;
                let mac = crate::config::parse_mac(&s.mac).ok()?;
                Some((service, port, mac))
            })();
            let Some((service, port, mac)) = found else {
                eprintln!(
                    "hdvrf: warning: session journal: {} {} on {} no longer fits the configuration; not restored",
                    s.service, s.address, s.port
                );
                continue;
            };
            let lease = s.lease_end.saturating_sub(unix).min(u64::from(u32::MAX)) as u32;
            if let Some(what) = self.session_ack(service, port, s.vlan, mac, s.address, lease, now)
            {
                acked.push((service, mac, s.address, what));
            }
        }
        if !self.commit_sessions(now) {
            return 0;
        }
        acked
            .into_iter()
            .filter(|&(service, mac, address, what)| {
                self.session_published(service, mac, address, what, now)
            })
            .count()
    }

    /// The route a `ctl route` request names, by service, table and prefix.
    fn route_key(&self, service: &str, table: &str, prefix: &str) -> Result<RouteKey, String> {
        let (prefix, len) = mgmt::parse_route_prefix(prefix)?;
        Ok(RouteKey {
            service: self.names.service(service)?,
            table: mgmt::parse_table(table)?,
            prefix,
            len,
        })
    }

    /// `ctl route add`: the operator's route goes to the RIB manager
    /// (over the file's and BGP's, under a session's) and is committed;
    /// what BGP advertises follows it.
    pub fn route_add(
        &mut self,
        service: String,
        table: String,
        prefix: String,
        next_hop: String,
    ) -> Result<Value, String> {
        let key = self.route_key(&service, &table, &prefix)?;
        let next_hop = self.names.next_hop(&next_hop)?;
        let target = if next_hop == dataplane::tables::DISCARD {
            Target::Discard
        } else {
            Target::NextHop(next_hop)
        };
        if !self.rib.set(Source::Ctl, key, &target) {
            return Err(format!(
                "next hop {} is not in use",
                self.names.next_hop_name(next_hop)
            ));
        }
        self.commit_route(key)
    }

    /// `ctl route del`: the operator's or the file's route leaves the
    /// RIB manager and the change is committed.
    pub fn route_del(
        &mut self,
        service: String,
        table: String,
        prefix: String,
    ) -> Result<Value, String> {
        let key = self.route_key(&service, &table, &prefix)?;
        // The route the tables use goes, if it is the operator's
        // or the file's (until the next reload); a session's goes
        // with its session, BGP's with its withdrawal.
        match self.rib.winner(&key) {
            Some(s @ (Source::Ctl | Source::File)) => {
                self.rib.remove(s, key);
            }
            Some(s) => {
                return Err(format!(
                    "route {}/{} in {service}'s {table} table is {}'s: it cannot be deleted here",
                    std::net::Ipv4Addr::from(key.prefix),
                    key.len,
                    s.name()
                ))
            }
            // Refused here rather than published as a no-op.
            None => {
                return Err(format!(
                    "no route {}/{} in {service}'s {table} table",
                    std::net::Ipv4Addr::from(key.prefix),
                    key.len,
                ))
            }
        }
        self.commit_route(key)
    }

    /// Re-reads the configuration and publishes what changed as one batch
    /// (`crate::reload`): routes (those added or removed at run time with
    /// `route add|del` go back to what the file says), next hops, labels,
    /// services' settings and access bindings; then BGP follows
    /// (`Speaker::reload`: the file's routes are advertised or withdrawn,
    /// changed RDs, labels and targets re-advertised or re-imported).
    /// Anything else that changed needs a restart and is refused, with
    /// nothing applied.
    pub fn reload(&mut self) -> Result<Value, String> {
        let path = self.config_path.clone();
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let loaded = config::parse(&path, &text).map_err(|e| match e {
            LoadError::Invalid(list) => list
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
            other => other.to_string(),
        })?;
        let raw: toml::Value =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let old =
            match &self.applied {
                Applied::Text(t) => std::borrow::Cow::Owned(toml::from_str(t).map_err(|e| {
                    format!("{}: the configuration as started: {e}", path.display())
                })?),
                Applied::Toml(v) => std::borrow::Cow::Borrowed(v),
            };
        let changed = mgmt::restart_needed(&old, &raw);
        drop(old);
        if !changed.is_empty() {
            return Err(format!(
                "{}: changes to {} need a restart; nothing was applied",
                path.display(),
                changed.join(", ")
            ));
        }
        let mut plan = crate::reload::plan(self.tables()?, &self.names, &self.neighbors, &loaded)?;
        // New rules' slots are used by no published rule: their buckets
        // and counts start afresh before the batch makes them live.
        for &slot in &plan.fresh_rule_slots {
            self.tables()?.policers.reset(slot);
            if let Some(b) = self.rule_base.get_mut(usize::from(slot)) {
                *b = self.running.rule(slot).unwrap_or_default();
            }
        }
        // The file's routes into the RIB manager (ctl's changes undone;
        // a live session's host route stays the session's), committed in
        // one batch after the plan's own ops.
        crate::reload::apply(&mut plan, &mut self.rib);
        let first = std::mem::take(&mut plan.ops);
        // The names after the batch, which names the next hops it makes.
        let names = std::mem::replace(&mut self.names, std::mem::take(&mut plan.names));
        let generation = match self.commit_rib(first) {
            Ok(st) => st.map(|st| st.generation),
            Err(e) => {
                if !e.batch_published() {
                    self.names = names;
                }
                return Err(e.to_string());
            }
        };
        if let Some((op, why)) = self.running.tables().and_then(|t| t.rejected().first()) {
            return Err(format!("reload: {op:?}: {why}"));
        }
        let port_macs: Vec<[u8; 6]> = self
            .running
            .port_macs()
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        self.neighbors
            .reload(&loaded, &port_macs, &plan.next_hop_ids);
        // What changed for BGP: RDs, labels and targets re-advertised or
        // re-imported, then the file's routes toward our side advertised
        // or withdrawn as the RIB manager now holds them.
        let mut bgp_ops = 0;
        if let Some(b) = self.bgp.as_mut() {
            let ids = loaded
                .config
                .services
                .iter()
                .map(|s| self.names.service(s.name.get_ref()))
                .collect::<Result<Vec<u16>, String>>()?;
            b.reload(&loaded.config, &ids, &mut self.rib);
            bgp_ops = self.rib.pending_ops();
            self.commit_rib(Vec::new())
                .map_err(|e| format!("reload: BGP's routes: {e}"))?;
        }
        self.sync_bgp();
        self.set_from_config(&loaded.config);
        self.applied = Applied::Toml(raw);
        Ok(json!({
            "added": plan.routes_added,
            "changed": plan.routes_changed,
            "removed": plan.routes_removed,
            "next_hops": {
                "added": plan.next_hops_added,
                "changed": plan.next_hops_changed,
                "removed": plan.next_hops_removed,
            },
            "labels_changed": plan.labels_changed,
            "services_changed": plan.services_changed,
            "access_changed": plan.access_changed,
            "rules": { "set": plan.rules_set, "removed": plan.rules_removed },
            "bgp_table_ops": bgp_ops,
            "kept_for_sessions": plan.kept_for_sessions,
            "generation": generation,
        }))
    }

    /// Commits a `ctl route` change, and what BGP advertises follows it.
    fn commit_route(&mut self, key: RouteKey) -> Result<Value, String> {
        let st = self.commit_rib(Vec::new()).map_err(|e| e.to_string())?;
        if let Some(why) = self.rib.refused(&key).map(str::to_owned) {
            // Refused: the operator's route is not kept to be tried again.
            self.rib.remove(Source::Ctl, key);
            let _ = self.commit_rib(Vec::new());
            return Err(why);
        }
        self.sync_bgp();
        let Some(st) = st else {
            return Ok(json!({ "generation": null }));
        };
        Ok(json!({
            "generation": st.generation,
            "visible_after_us": st.quiesced_after.as_micros() as u64,
            "elapsed_us": st.elapsed.as_micros() as u64,
        }))
    }

    /// BGP advertises the file's and `ctl`'s routes toward our side that
    /// the tables hold, and withdraws the others.
    fn sync_bgp(&mut self) {
        if let Some(b) = self.bgp.as_mut() {
            let relay = self.relay.as_ref();
            b.sync_local(&self.rib, |svc, a| {
                relay.is_some_and(|r| r.sessions.holds(svc, a))
            });
        }
    }

    /// Takes the BGP speaker: the file's routes toward our side are
    /// advertised as the neighbours come up.
    pub fn set_bgp(&mut self, speaker: crate::bgp::speaker::Speaker) {
        self.bgp = Some(speaker);
        self.sync_bgp();
    }

    /// The tables the workers use now, or why there are none.
    pub fn tables(&self) -> Result<&dataplane::tables::Tables, String> {
        self.running
            .tables()
            .ok_or_else(|| "no route tables (forward_mode is not \"router\")".to_owned())
    }
}

#[cfg(test)]
mod tests;
